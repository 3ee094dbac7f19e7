//! The generic REST handlers: get, list, create, update, patch, delete and
//! deletecollection over the store, with each resource's strategy.

use crate::admission;
use crate::filter::Filter;
use crate::object;
use crate::registry::{self, core::services, events, scheduling::priority_classes};
use crate::request::{Query, ResourceRequest};
use crate::status::{success_status, ApiError, ApiResult};
use crate::watch_cache::Cached;
use crate::Apiserver;
use api_types::resources::{self, ResourceInfo};
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;

/// Conflicting writes without a resourceVersion are retried this many times.
const MAX_RETRIES: usize = 8;

/// The outcome of a write: HTTP status, body, warnings.
pub struct Written {
    pub code: u16,
    pub body: Value,
    pub warnings: Vec<String>,
}

pub(crate) fn decode_stored(
    api: &Apiserver,
    info: &ResourceInfo,
    kv: &store::KeyValue,
) -> ApiResult<Value> {
    let data = api
        .transformer(info)
        .from_storage(&kv.value)
        .map_err(|e| transform_failed(api, &kv.key, e))?;
    let mut v: Value = serde_json::from_slice(&data)
        .map_err(|e| ApiError::internal(format!("decoding stored object {}: {e}", kv.key)))?;
    object::set_resource_version(&mut v, kv.mod_revision);
    Ok(from_storage(info, v))
}

/// Upstream's message for a value that cannot be encrypted or decrypted, with its etcd key.
pub(crate) fn transform_failed(
    api: &Apiserver,
    key: &str,
    e: crate::encryption::TransformError,
) -> ApiError {
    let prefix = api.config.etcd_prefix.trim_end_matches('/');
    tracing::error!(key = %format!("{prefix}/{key}"), error = %e, "unable to transform stored object");
    ApiError::internal(format!("unable to transform key \"{prefix}/{key}\": {e}"))
}

/// An object as its API shows it, from its stored form.
pub fn from_storage(info: &ResourceInfo, v: Value) -> Value {
    if events::is_events_v1(info) {
        events::from_core(&v)
    } else {
        v
    }
}

/// Objects are stored without their resourceVersion: etcd's mod revision is the truth.
/// The object is borrowed mutably only to take its resourceVersion out while serialising
/// (no copy on the write path); it is put back.
pub(crate) fn encode_stored(
    api: &Apiserver,
    info: &ResourceInfo,
    obj: &mut Value,
) -> ApiResult<Bytes> {
    if events::is_events_v1(info) {
        let mut core = events::to_core(obj);
        return encode_stored(
            api,
            resources::find("", "v1", "events").unwrap_or(info),
            &mut core,
        );
    }
    let rv = object::meta_mut(obj).shift_remove("resourceVersion");
    let encoded = serde_json::to_vec(&*obj).map_err(|e| ApiError::internal(e.to_string()));
    if let Some(rv) = rv {
        object::meta_mut(obj).insert("resourceVersion".into(), rv);
    }
    let name = object::name(obj).unwrap_or("");
    api.transformer(info)
        .to_storage(encoded?)
        .map(Bytes::from)
        .map_err(|e| {
            ApiError::internal(format!("unable to transform {} {name:?}: {e}", info.plural))
        })
}

/// Maps a failed compare-and-swap write; `None` means "retry on the newer object".
fn cas_failure(
    e: store::Error,
    info: &ResourceInfo,
    name: &str,
    may_retry: bool,
) -> Option<ApiError> {
    match e {
        store::Error::Conflict { .. } if may_retry => None,
        store::Error::Conflict { .. } => Some(ApiError::modified(info, name)),
        store::Error::NotFound { .. } => Some(ApiError::not_found(info, name)),
        other => Some(other.into()),
    }
}

fn require_name(req: &ResourceRequest) -> ApiResult<&str> {
    req.name
        .as_deref()
        .ok_or_else(|| ApiError::method_not_supported(req.info, "this verb"))
}

fn key_of(req: &ResourceRequest, name: &str) -> String {
    object::key(req.info, req.namespace.as_deref(), name)
}

// ---------------------------------------------------------------- get

pub async fn get(api: &Apiserver, req: &ResourceRequest, q: &Query) -> ApiResult<Value> {
    let name = require_name(req)?;
    let key = key_of(req, name);
    if q.resource_version.as_deref() == Some("0") {
        let cache = api.cache(req.info);
        cache.wait_ready().await?;
        return cache
            .get(&key)
            .map(|o| from_storage(req.info, o.value()))
            .ok_or_else(|| ApiError::not_found(req.info, name));
    }
    let kv = api
        .store
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::not_found(req.info, name))?;
    decode_stored(api, req.info, &kv)
}

// ---------------------------------------------------------------- list

/// Upstream's continue token: base64 of `{"v":"meta.k8s.io/v1","rv":N,"start":"<key>\u0000"}`.
fn encode_continue(rv: i64, start: &str) -> String {
    let token = json!({ "v": "meta.k8s.io/v1", "rv": rv, "start": start });
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

fn decode_continue(token: &str) -> ApiResult<(i64, String)> {
    let bad = || {
        ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    };
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if v.get("v").and_then(Value::as_str) != Some("meta.k8s.io/v1") {
        return Err(bad());
    }
    let rv = v
        .get("rv")
        .and_then(Value::as_i64)
        .filter(|r| *r > 0)
        .ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    if start.contains("..") || start.starts_with('/') {
        return Err(bad());
    }
    Ok((rv, start.to_string()))
}

fn parse_rv(s: &str) -> ApiResult<i64> {
    s.parse::<i64>()
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {s:?}")))
}

fn list_value(
    info: &ResourceInfo,
    items: Vec<Value>,
    rv: i64,
    cont: Option<String>,
    remaining: Option<i64>,
) -> Value {
    let mut meta = json!({ "resourceVersion": rv.to_string() });
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    if let Some(r) = remaining.filter(|r| *r > 0) {
        meta["remainingItemCount"] = json!(r);
    }
    json!({
        "kind": info.list_kind(),
        "apiVersion": info.api_version(),
        "metadata": meta,
        "items": items,
    })
}

/// One item of a list answer.
pub enum ListItem {
    /// Held by the watch cache: sent as its once-serialised JSON, never copied.
    Cached(Arc<Cached>),
    Owned(Value),
}

/// A list answer.
pub struct List {
    info: &'static ResourceInfo,
    items: Vec<ListItem>,
    resource_version: i64,
    continue_token: Option<String>,
    remaining: Option<i64>,
}

impl List {
    /// The list as a `<Kind>List` object.
    pub fn into_value(self) -> Value {
        let items = self
            .items
            .into_iter()
            .map(|i| match i {
                ListItem::Cached(c) => c.value(),
                ListItem::Owned(v) => v,
            })
            .collect();
        list_value(
            self.info,
            items,
            self.resource_version,
            self.continue_token,
            self.remaining,
        )
    }

    /// The `<Kind>List` JSON, written from the items' own JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let mut head = list_value(
            self.info,
            Vec::new(),
            self.resource_version,
            self.continue_token.clone(),
            self.remaining,
        );
        if let Some(o) = head.as_object_mut() {
            o.remove("items");
        }
        let mut out = serde_json::to_vec(&head).unwrap_or_default();
        // Reopen the object to append the items array.
        out.pop();
        out.extend_from_slice(b",\"items\":[");
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match item {
                ListItem::Cached(c) => out.extend_from_slice(&c.json()),
                ListItem::Owned(v) => {
                    let _ = serde_json::to_writer(&mut out, v);
                }
            }
        }
        out.extend_from_slice(b"]}");
        out
    }
}

pub async fn list(api: &Apiserver, req: &ResourceRequest, q: &Query) -> ApiResult<List> {
    let info = req.info;
    let filter = Filter::from_query(info, q)?;
    let prefix = object::list_prefix(info, req.namespace.as_deref());
    let exact = q.resource_version_match.as_deref() == Some("Exact");
    if let Some(m) = q.resource_version_match.as_deref() {
        if !matches!(m, "Exact" | "NotOlderThan") {
            return Err(ApiError::bad_request(format!(
                "unsupported resourceVersionMatch: {m:?}"
            )));
        }
        if q.resource_version.is_none() {
            return Err(ApiError::bad_request(
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
    }
    if q.continue_token.is_some() && q.resource_version.as_deref().is_some_and(|rv| rv != "0") {
        return Err(ApiError::bad_request(
            "specifying resource version is not allowed when using continue",
        ));
    }

    // Served from the watch cache: resourceVersion="0", or "not older than" a version.
    let from_cache = q.continue_token.is_none()
        && !exact
        && q.resource_version
            .as_deref()
            .is_some_and(|rv| rv == "0" || q.limit == 0);
    if from_cache {
        let cache = api.cache(info);
        cache.wait_ready().await?;
        if let Some(rv) = q.resource_version.as_deref().filter(|rv| *rv != "0") {
            let rv = parse_rv(rv)?;
            wait_for_revision(api, cache, rv).await?;
        }
        let (items, rev) = cache.list(&prefix);
        let items = if events::is_events_v1(info) {
            items
                .into_iter()
                .map(|o| from_storage(info, o.value()))
                .filter(|o| filter.matches(o))
                .map(ListItem::Owned)
                .collect()
        } else {
            items
                .into_iter()
                .filter(|o| filter.matches_cached(o))
                .map(ListItem::Cached)
                .collect()
        };
        return Ok(List {
            info,
            items,
            resource_version: rev,
            continue_token: None,
            remaining: None,
        });
    }

    let (mut revision, mut start) = match &q.continue_token {
        Some(token) => {
            let (rv, start) = decode_continue(token)?;
            (Some(rv), Some(format!("{prefix}{start}")))
        }
        None => (
            match q.resource_version.as_deref() {
                Some(rv) if exact => Some(parse_rv(rv)?).filter(|r| *r > 0),
                _ => None,
            },
            None,
        ),
    };
    let limit = q.limit.max(0);
    let mut items: Vec<Value> = Vec::new();
    let mut cont = None;
    let mut remaining = None;
    loop {
        let want = if limit > 0 {
            (limit - items.len() as i64).max(1)
        } else {
            0
        };
        // Fetch a little more than needed when filtering, to fill a page in few round trips.
        let fetch = if limit > 0 && !filter.is_everything() {
            want.max(limit).max(100)
        } else {
            want
        };
        let page = api
            .store
            .list(&prefix, start.as_deref(), fetch, revision)
            .await
            .map_err(|e| match e {
                store::Error::Compacted { .. } if q.continue_token.is_some() => ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ),
                other => other.into(),
            })?;
        revision = Some(page.revision);
        let mut last_key = None;
        let mut stopped_early = false;
        let count = page.items.len();
        for (i, kv) in page.items.iter().enumerate() {
            last_key = Some(kv.key.clone());
            let obj = decode_stored(api, info, kv)?;
            if filter.matches(&obj) {
                items.push(obj);
            }
            if limit > 0 && items.len() as i64 >= limit {
                stopped_early = i + 1 < count || page.more;
                if stopped_early && filter.is_everything() {
                    remaining = Some(page.remaining + (count - i - 1) as i64);
                }
                break;
            }
        }
        let more = page.more || stopped_early;
        if limit > 0 && items.len() as i64 >= limit {
            if more {
                if let Some(k) = &last_key {
                    let rel = k.strip_prefix(&prefix).unwrap_or(k);
                    cont = Some(encode_continue(page.revision, &format!("{rel}\u{0}")));
                }
            }
            break;
        }
        if !page.more {
            break;
        }
        start = last_key.map(|k| format!("{k}\u{0}"));
    }
    Ok(List {
        info,
        items: items.into_iter().map(ListItem::Owned).collect(),
        resource_version: revision.unwrap_or(0),
        continue_token: cont,
        remaining,
    })
}

/// Waits (bounded) until the cache has caught up with `rv`, as upstream's
/// "Too large resource version" wait.
async fn wait_for_revision(
    api: &Apiserver,
    cache: &crate::watch_cache::WatchCache,
    rv: i64,
) -> ApiResult<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    while cache.revision() < rv {
        // The cache only moves on events of its own resource; etcd's revision may be ahead.
        let current = api.store.current_revision().await?;
        if current >= rv && cache.revision() < rv {
            // Nothing of this resource changed up to rv: the cache is as fresh as asked.
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(ApiError::timeout(format!(
                "Too large resource version: {rv}, current: {}",
                cache.revision()
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}

// ---------------------------------------------------------------- create

const NAME_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn generate_name(base: &str) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let base = if base.len() > 58 { &base[..58] } else { base };
    let suffix: String = (0..5)
        .map(|_| NAME_CHARS[rng.random_range(0..NAME_CHARS.len())] as char)
        .collect();
    format!("{base}{suffix}")
}

/// Checks `apiVersion`/`kind` of a body against the URL's resource and fills them in.
pub fn check_type_meta(
    info: &ResourceInfo,
    obj: &mut Value,
    accept_kinds: &[&str],
) -> ApiResult<()> {
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !kind.is_empty() && kind != info.kind && !accept_kinds.contains(&kind.as_str()) {
        return Err(ApiError::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: no kind {:?} is registered for version {:?} in scheme \"k8s.io/apimachinery/pkg/runtime/scheme.go:100\"",
            kind, api_version, info.kind, kind, api_version
        )));
    }
    if !api_version.is_empty() && api_version != info.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({}) does not match the expected API version ({})",
            api_version,
            info.api_version()
        )));
    }
    if let Some(o) = obj.as_object_mut() {
        o.insert("apiVersion".into(), json!(info.api_version()));
        o.insert("kind".into(), json!(info.kind));
    }
    Ok(())
}

fn check_namespace(req: &ResourceRequest, obj: &mut Value) -> ApiResult<()> {
    if !req.info.namespaced {
        object::meta_mut(obj).remove("namespace");
        return Ok(());
    }
    let Some(ns) = req.namespace.as_deref() else {
        return Err(ApiError::bad_request(
            "the namespace of the object must be set by the request path",
        ));
    };
    match object::namespace(obj) {
        Some(given) if given != ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            object::meta_mut(obj).insert("namespace".into(), json!(ns));
            Ok(())
        }
    }
}

fn field_warnings_or_error(
    api_info: &ResourceInfo,
    q: &Query,
    obj: &Value,
    duplicates: &[String],
) -> ApiResult<Vec<String>> {
    let mode = q.field_validation.as_deref().unwrap_or("Warn");
    if mode == "Ignore" {
        return Ok(Vec::new());
    }
    let mut problems: Vec<String> = duplicates
        .iter()
        .map(|d| format!("duplicate field \"{d}\""))
        .collect();
    problems.extend(
        crate::codec::unknown_fields(api_info.definition, obj)
            .into_iter()
            .map(|f| format!("unknown field \"{f}\"")),
    );
    if problems.is_empty() {
        return Ok(Vec::new());
    }
    if mode == "Strict" {
        return Err(ApiError::bad_request(format!(
            "{kind} in version {version:?} cannot be handled as a {kind}: strict decoding error: {}",
            problems.join(", "),
            kind = api_info.kind,
            version = api_info.version,
        )));
    }
    Ok(problems)
}

fn validate(
    info: &'static ResourceInfo,
    name: &str,
    errors: Vec<api_types::validation::FieldError>,
) -> ApiResult<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(info, name, &errors))
    }
}

fn apply_defaults(info: &ResourceInfo, obj: &mut Value) -> ApiResult<()> {
    api_types::defaults::apply_defaults(info, obj).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// How an object of `info` is stored: Events expire `--event-ttl` after their last write
/// (an etcd lease), as upstream; everything else stays until deleted.
fn write_options(api: &Apiserver, info: &'static ResourceInfo) -> store::WriteOptions {
    let storage = crate::registry::events::storage_of(info);
    let events = storage.group.is_empty() && storage.plural == "events";
    store::WriteOptions {
        ttl: events.then_some(api.config.event_ttl),
    }
}

pub async fn create(
    api: &Apiserver,
    req: &ResourceRequest,
    q: &Query,
    mut obj: Value,
    duplicates: &[String],
) -> ApiResult<Written> {
    let info = req.info;
    check_type_meta(info, &mut obj, &[])?;
    let mut warnings = field_warnings_or_error(info, q, &obj, duplicates)?;
    check_namespace(req, &mut obj)?;
    // System fields are the server's to set.
    let generate = object::meta_str(&obj, "generateName").map(String::from);
    // Admission names the object as the client did, before a name is generated.
    let requested_name = object::name(&obj)
        .filter(|n| !n.is_empty())
        .or(generate.as_deref())
        .unwrap_or_default()
        .to_string();
    {
        let meta = object::meta_mut(&mut obj);
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(object::now_rfc3339()));
        for f in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
            "generation",
        ] {
            meta.remove(f);
        }
        if meta
            .get("name")
            .and_then(Value::as_str)
            .is_none_or(|n| n.is_empty())
        {
            if let Some(base) = generate.as_deref().filter(|g| !g.is_empty()) {
                meta.insert("name".into(), json!(generate_name(base)));
            }
        }
    }
    let name = object::name(&obj).unwrap_or("").to_string();
    if let Some(url_name) = req.name.as_deref() {
        if !name.is_empty() && url_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match the name on the URL ({url_name})"
            )));
        }
    }
    let strategy = registry::strategy_for(info);
    apply_defaults(info, &mut obj)?;
    let attributes = admission::Attributes {
        info,
        namespace: req.namespace.as_deref(),
        name: &requested_name,
        subresource: "",
    };
    admission::admit_create(api, &attributes, &mut obj).await?;
    strategy.prepare_for_create(info, &mut obj);
    validate(
        info,
        &name,
        api_types::validation::validate_create(info, &obj),
    )?;
    warnings.extend(admission::validate_create(api, &attributes, &obj, q.dry_run).await?);
    let pending = if info.group.is_empty() && info.plural == "services" {
        allocators_ready(api)?;
        Some(services::allocate(
            info,
            &mut api.services.lock(),
            &mut obj,
            None,
        )?)
    } else {
        None
    };
    let key = key_of(req, &name);
    if q.dry_run {
        if let Some(p) = pending {
            p.rollback(&mut api.services.lock());
        }
        // A dry run still answers what the real create would: AlreadyExists.
        if api.store.get(&key).await?.is_some() {
            return Err(ApiError::already_exists(info, &name));
        }
        return Ok(Written {
            code: 201,
            body: obj,
            warnings,
        });
    }
    let result = api
        .store
        .create_with(
            &key,
            encode_stored(api, info, &mut obj)?,
            write_options(api, info),
        )
        .await;
    match result {
        Ok(kv) => {
            if let Some(p) = pending {
                p.commit(&mut api.services.lock());
            }
            read_own_write(api, info, kv.mod_revision).await;
            object::set_resource_version(&mut obj, kv.mod_revision);
            Ok(Written {
                code: 201,
                body: obj,
                warnings,
            })
        }
        Err(e) => {
            if let Some(p) = pending {
                p.rollback(&mut api.services.lock());
            }
            Err(match e {
                store::Error::AlreadyExists { .. } => ApiError::already_exists(info, &name),
                other => other.into(),
            })
        }
    }
}

// ---------------------------------------------------------------- update & patch

/// How an update computes the new object from the stored one.
pub enum Change {
    /// A full object (PUT).
    Replace { obj: Value, duplicates: Vec<String> },
    /// A patch applied to the stored object.
    Patch { patch_type: PatchType, patch: Bytes },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        match ct {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            _ => None,
        }
    }
}

fn apply_patch(
    info: &ResourceInfo,
    patch_type: PatchType,
    patch: &[u8],
    current: &Value,
) -> ApiResult<(Value, Vec<String>)> {
    let doc = match patch_type {
        PatchType::Json => {
            let p: json_patch::Patch = serde_json::from_slice(patch)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let mut doc = current.clone();
            json_patch::patch(&mut doc, &p).map_err(|e| {
                ApiError::unprocessable(format!(
                    "the server rejected our request due to an error in our request: {e}"
                ))
            })?;
            return Ok((doc, Vec::new()));
        }
        PatchType::Merge | PatchType::Strategic => {
            let decoded = crate::codec::decode_json(patch).map_err(|e| {
                ApiError::bad_request(format!("error decoding patch: {}", e.message))
            })?;
            (decoded.value, decoded.duplicates)
        }
    };
    let (p, dups) = doc;
    match patch_type {
        PatchType::Merge => {
            let mut out = current.clone();
            json_patch::merge(&mut out, &p);
            Ok((out, dups))
        }
        _ => api_types::strategic_merge::apply_strategic_merge_patch(current, &p, info.definition)
            .map(|v| (v, dups))
            .map_err(|e| match e.status_code() {
                400 => ApiError::bad_request(e.to_string()),
                422 => ApiError::unprocessable(e.to_string()),
                _ => ApiError::internal(e.to_string()),
            }),
    }
}

/// The stored object a write starts from.
struct Stored {
    obj: Value,
    mod_revision: i64,
    /// Taken from the watch cache: maybe stale, so a conflict, a no-op or a failed
    /// precondition is confirmed against etcd before it is answered.
    guessed: bool,
    /// Stored in another form than a write would use now (an older encryption key or
    /// provider): rewritten even by an update that changes nothing, as upstream, so that
    /// `kubectl replace` of every Secret moves them to the current key.
    stale: bool,
}

/// The watch cache's copy as a first guess (saving an etcd read per write, as upstream's
/// GuaranteedUpdate does), else etcd's.
async fn stored_object(
    api: &Apiserver,
    info: &'static ResourceInfo,
    key: &str,
    guess: bool,
) -> ApiResult<Option<Stored>> {
    if guess {
        if let Some(o) = api.cache(info).get(key) {
            let rv = o.resource_version();
            if rv > 0 {
                return Ok(Some(Stored {
                    obj: from_storage(info, o.value()),
                    mod_revision: rv,
                    guessed: true,
                    stale: false,
                }));
            }
        }
    }
    Ok(match api.store.get(key).await? {
        Some(kv) => Some(Stored {
            obj: decode_stored(api, info, &kv)?,
            mod_revision: kv.mod_revision,
            guessed: false,
            stale: api.transformer(info).is_stale(&kv.value),
        }),
        None => None,
    })
}

/// PUT and PATCH of an object or its status/scale-less subresources.
pub async fn update(
    api: &Apiserver,
    req: &ResourceRequest,
    q: &Query,
    change: Change,
) -> ApiResult<Written> {
    let info = req.info;
    let name = require_name(req)?.to_string();
    let key = key_of(req, &name);
    let strategy = registry::strategy_for(info);
    // `/approval` (CertificateSigningRequests) is a status-like subresource of its own.
    let approval = req.subresource.as_deref() == Some("approval");
    let status_only = req.subresource.as_deref() == Some("status") || approval;
    let finalize = req.subresource.as_deref() == Some("finalize");
    let mut attempt = 0;
    let mut guess = true;
    loop {
        attempt += 1;
        let current = stored_object(api, info, &key, guess).await?;
        guess = false;
        let (mut new, duplicates) = match &change {
            Change::Replace { obj, duplicates } => (obj.clone(), duplicates.clone()),
            Change::Patch { patch_type, patch } => {
                let Some(stored) = &current else {
                    return Err(ApiError::not_found(info, &name));
                };
                let (mut patched, dups) = apply_patch(info, *patch_type, patch, &stored.obj)?;
                // A patch names the object it applies to: name and namespace cannot move.
                if object::name(&patched) != Some(name.as_str()) {
                    object::meta_mut(&mut patched).insert("name".into(), json!(name));
                }
                (patched, dups)
            }
        };
        check_type_meta(info, &mut new, &[])?;
        let mut warnings = field_warnings_or_error(info, q, &new, &duplicates)?;
        if let Some(n) = object::name(&new) {
            if n != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        } else {
            object::meta_mut(&mut new).insert("name".into(), json!(name));
        }
        check_namespace(req, &mut new)?;

        let Some(Stored {
            obj: old,
            mod_revision,
            guessed,
            stale,
        }) = current
        else {
            if strategy.allow_create_on_update()
                && !status_only
                && matches!(change, Change::Replace { .. })
            {
                object::meta_mut(&mut new).remove("resourceVersion");
                return create(api, req, q, new, &duplicates).await;
            }
            return Err(ApiError::not_found(info, &name));
        };
        // A resourceVersion in a PUT body, or one a patch changed, is a precondition;
        // without one, conflicting writes are retried on the newer object.
        let given_rv =
            object::resource_version(&new)
                .map(String::from)
                .filter(|rv| match &change {
                    Change::Replace { .. } => true,
                    Change::Patch { .. } => object::resource_version(&old) != Some(rv.as_str()),
                });
        if let Some(rv) = &given_rv {
            if *rv != mod_revision.to_string() {
                if guessed {
                    continue;
                }
                return Err(ApiError::modified(info, &name));
            }
        }
        // Metadata the server owns stays as stored.
        {
            let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
            let meta = object::meta_mut(&mut new);
            // A uid the client sent is kept for validation to refuse if it differs (it
            // is immutable: a patch naming the uid it expects fails on a replaced object);
            // none sent means the stored one, as upstream's BeforeUpdate.
            if meta
                .get("uid")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                match old_meta.get("uid") {
                    Some(v) => {
                        meta.insert("uid".into(), v.clone());
                    }
                    None => {
                        meta.remove("uid");
                    }
                }
            }
            for f in [
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old_meta.get(f) {
                    Some(v) => {
                        meta.insert(f.into(), v.clone());
                    }
                    None => {
                        meta.remove(f);
                    }
                }
            }
            meta.remove("managedFields");
            meta.remove("selfLink");
            meta.insert("resourceVersion".into(), json!(mod_revision.to_string()));
        }
        if status_only {
            if approval {
                registry::certificates::certificate_signing_requests::prepare_for_approval_update(
                    &mut new, &old,
                );
            } else {
                strategy.prepare_for_status_update(info, &mut new, &old);
            }
            let attributes = admission::Attributes {
                info,
                namespace: req.namespace.as_deref(),
                name: &name,
                subresource: req.subresource.as_deref().unwrap_or_default(),
            };
            // Checked against the cache's copy, a refusal may come from its lag (upstream's
            // GuaranteedUpdate re-reads from etcd before it answers an error then).
            if let Err(e) = validate(
                info,
                &name,
                api_types::validation::validate_status_update(info, &new, &old),
            )
            .and_then(|()| admission::validate_status_update(api, &attributes, &new, &old))
            {
                if guessed {
                    continue;
                }
                return Err(e);
            }
        } else if finalize {
            // /finalize changes only spec.finalizers of a namespace.
            let finalizers = new.pointer("/spec/finalizers").cloned();
            let mut merged = old.clone();
            match finalizers {
                Some(f) => merged["spec"]["finalizers"] = f,
                None => {
                    if let Some(spec) = merged.get_mut("spec").and_then(Value::as_object_mut) {
                        spec.remove("finalizers");
                    }
                }
            }
            new = merged;
        } else {
            if info.group.is_empty() && info.plural == "services" {
                services::keep_allocated_values(&mut new, &old);
            }
            apply_defaults(info, &mut new)?;
            let attributes = admission::Attributes {
                info,
                namespace: req.namespace.as_deref(),
                name: &name,
                subresource: "",
            };
            admission::admit_update(&attributes, &mut new, &old);
            strategy.prepare_for_update(info, &mut new, &old);
            let checked = match validate(
                info,
                &name,
                api_types::validation::validate_update(info, &new, &old),
            ) {
                Ok(()) => admission::validate_update(api, &attributes, &new, &old).await,
                Err(e) => Err(e),
            };
            // As above: a refusal of a change to the cache's copy is confirmed on etcd's.
            match checked {
                Ok(admitted) => warnings.extend(admitted),
                Err(e) => {
                    if guessed {
                        continue;
                    }
                    return Err(e);
                }
            }
        }

        let pending = if info.group.is_empty() && info.plural == "services" && !status_only {
            allocators_ready(api)?;
            Some(services::allocate(
                info,
                &mut api.services.lock(),
                &mut new,
                Some(&old),
            )?)
        } else {
            None
        };
        let rollback = |p: Option<services::Pending>| {
            if let Some(p) = p {
                p.rollback(&mut api.services.lock());
            }
        };

        // Removing the last finalizer of an object being deleted deletes it.
        let deleting = object::deletion_timestamp(&new).is_some();
        let finalized = deleting
            && object::finalizers(&new).is_empty()
            && !has_namespace_finalizers(info, &new);
        if finalized && !q.dry_run {
            rollback(pending);
            return match api.store.delete(&key, Some(mod_revision)).await {
                Ok((_, rev)) => {
                    read_own_write(api, info, rev).await;
                    if info.group.is_empty() && info.plural == "services" {
                        services::release(&mut api.services.lock(), &old);
                    }
                    object::set_resource_version(&mut new, rev);
                    Ok(Written {
                        code: 200,
                        body: new,
                        warnings,
                    })
                }
                Err(e) => {
                    match cas_failure(e, info, &name, given_rv.is_none() && attempt < MAX_RETRIES) {
                        None => continue,
                        Some(err) => Err(err),
                    }
                }
            };
        }
        if q.dry_run {
            rollback(pending);
            return Ok(Written {
                code: 200,
                body: new,
                warnings,
            });
        }
        // An update that changes nothing is not written, as upstream (once etcd confirms
        // the cache's copy was current), unless the stored form is stale.
        if new == old && !stale {
            rollback(pending);
            if guessed {
                continue;
            }
            return Ok(Written {
                code: 200,
                body: old,
                warnings,
            });
        }
        let encoded = encode_stored(api, info, &mut new)?;
        let options = write_options(api, info);
        match api
            .store
            .update_with(&key, encoded, mod_revision, options)
            .await
        {
            Ok(kv) => {
                if let Some(p) = pending {
                    p.commit(&mut api.services.lock());
                }
                read_own_write(api, info, kv.mod_revision).await;
                object::set_resource_version(&mut new, kv.mod_revision);
                return Ok(Written {
                    code: 200,
                    body: new,
                    warnings,
                });
            }
            Err(e) => {
                rollback(pending);
                match cas_failure(e, info, &name, given_rv.is_none() && attempt < MAX_RETRIES) {
                    None => continue,
                    Some(err) => return Err(err),
                }
            }
        }
    }
}

fn has_namespace_finalizers(info: &ResourceInfo, obj: &Value) -> bool {
    info.group.is_empty()
        && info.plural == "namespaces"
        && obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
}

// ---------------------------------------------------------------- delete

/// Options of a delete, from the query and the DeleteOptions body.
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
    /// `orphanDependents=false` given explicitly: upstream then answers 202 while the
    /// object waits on finalizers.
    pub explicit_no_orphan: bool,
}

impl DeleteOptions {
    pub fn new(q: &Query, body: Option<&Value>) -> ApiResult<DeleteOptions> {
        let mut o = DeleteOptions {
            grace_period_seconds: q.grace_period_seconds,
            propagation_policy: q.propagation_policy.clone(),
            dry_run: q.dry_run,
            explicit_no_orphan: q.orphan_dependents == Some(false),
            ..Default::default()
        };
        if q.orphan_dependents == Some(true) && o.propagation_policy.is_none() {
            o.propagation_policy = Some("Orphan".into());
        }
        if let Some(b) = body {
            if let Some(k) = b.get("kind").and_then(Value::as_str) {
                if k != "DeleteOptions" {
                    return Err(ApiError::bad_request(format!(
                        "expected DeleteOptions, got {k}"
                    )));
                }
            }
            if let Some(g) = b.get("gracePeriodSeconds").and_then(Value::as_i64) {
                o.grace_period_seconds = Some(g);
            }
            if let Some(p) = b.get("propagationPolicy").and_then(Value::as_str) {
                o.propagation_policy = Some(p.to_string());
            }
            match b.get("orphanDependents").and_then(Value::as_bool) {
                Some(true) if o.propagation_policy.is_none() => {
                    o.propagation_policy = Some("Orphan".into())
                }
                Some(false) => o.explicit_no_orphan = true,
                _ => {}
            }
            if let Some(p) = b.get("preconditions") {
                o.precondition_uid = p.get("uid").and_then(Value::as_str).map(String::from);
                o.precondition_rv = p
                    .get("resourceVersion")
                    .and_then(Value::as_str)
                    .map(String::from);
            }
            if let Some(d) = b.get("dryRun").and_then(Value::as_array) {
                if d.iter().any(|x| x.as_str() == Some("All")) {
                    o.dry_run = true;
                }
            }
        }
        if let Some(p) = &o.propagation_policy {
            if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
                return Err(ApiError::unprocessable(format!(
                    "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: {p:?}: supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                )));
            }
        }
        if o.grace_period_seconds.is_some_and(|g| g < 0) {
            o.grace_period_seconds = Some(0);
        }
        Ok(o)
    }
}

/// DELETE of one object.
pub async fn delete(
    api: &Apiserver,
    req: &ResourceRequest,
    opts: &DeleteOptions,
) -> ApiResult<Written> {
    if req.info.group == "scheduling.k8s.io" && req.info.plural == "priorityclasses" {
        priority_classes::check_delete(req.info, require_name(req)?)?;
    }
    delete_object(api, req, opts, Admit::Yes).await
}

/// Whether a delete runs the validating admission plugins: an eviction was admitted as
/// the create of `pods/eviction`, and deletes the pod without admission, as upstream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Admit {
    Yes,
    No,
}

/// Deletes one object, gracefully or once its finalizers are gone.
async fn delete_object(
    api: &Apiserver,
    req: &ResourceRequest,
    opts: &DeleteOptions,
    admit: Admit,
) -> ApiResult<Written> {
    let info = req.info;
    let name = require_name(req)?.to_string();
    let key = key_of(req, &name);
    let strategy = registry::strategy_for(info);
    let mut attempt = 0;
    let mut guess = true;
    loop {
        attempt += 1;
        let stored = stored_object(api, info, &key, guess).await?;
        guess = false;
        // A conflict is retried on the newer object unless the client named a version.
        let may_retry = attempt < MAX_RETRIES && opts.precondition_rv.is_none();
        let Some(Stored {
            obj: current,
            mod_revision,
            guessed,
            ..
        }) = stored
        else {
            return Err(ApiError::not_found(info, &name));
        };
        if let Some(uid) = &opts.precondition_uid {
            let actual = object::meta_str(&current, "uid").unwrap_or("");
            if uid != actual {
                if guessed {
                    continue;
                }
                return Err(ApiError::conflict(
                    info,
                    &name,
                    &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"),
                ));
            }
        }
        if let Some(rv) = &opts.precondition_rv {
            if *rv != mod_revision.to_string() {
                if guessed {
                    continue;
                }
                return Err(ApiError::conflict(
                    info,
                    &name,
                    &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in meta: {mod_revision}"),
                ));
            }
        }
        if admit == Admit::Yes {
            let attributes = admission::Attributes {
                info,
                namespace: req.namespace.as_deref(),
                name: &name,
                subresource: "",
            };
            // As in update: a refusal judged on the cache's copy is confirmed on etcd's.
            if let Err(e) = admission::validate_delete(api, &attributes, &current) {
                if guessed {
                    continue;
                }
                return Err(e);
            }
        }

        let mut updated = current.clone();
        let mut finalizers = object::finalizers(&updated);
        let first_delete = object::deletion_timestamp(&updated).is_none();
        if first_delete {
            let add = match opts.propagation_policy.as_deref() {
                Some("Orphan") => Some("orphan"),
                Some("Foreground") => Some("foregroundDeletion"),
                _ => None,
            };
            if let Some(f) = add {
                if !finalizers.iter().any(|x| x == f) {
                    finalizers.push(f.to_string());
                    object::meta_mut(&mut updated).insert("finalizers".into(), json!(finalizers));
                }
            }
        }
        let grace = strategy.graceful_delete_period(&current, opts.grace_period_seconds);
        let namespace_pending = info.group.is_empty()
            && info.plural == "namespaces"
            && has_namespace_finalizers(info, &current);

        let mut mark_only = false;
        if let Some(g) = grace.filter(|g| *g > 0) {
            let existing = updated
                .get("metadata")
                .and_then(|m| m.get("deletionGracePeriodSeconds"))
                .and_then(Value::as_i64);
            if first_delete || existing.is_some_and(|e| g < e) {
                let meta = object::meta_mut(&mut updated);
                meta.insert("deletionTimestamp".into(), json!(object::rfc3339_after(g)));
                meta.insert("deletionGracePeriodSeconds".into(), json!(g));
            }
            mark_only = true;
        } else if !finalizers.is_empty() || namespace_pending {
            if first_delete {
                let meta = object::meta_mut(&mut updated);
                meta.insert("deletionTimestamp".into(), json!(object::now_rfc3339()));
                meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            }
            if namespace_pending {
                updated["status"]["phase"] = json!("Terminating");
            }
            mark_only = true;
        }

        if mark_only {
            if opts.dry_run {
                return Ok(Written {
                    code: 200,
                    body: updated,
                    warnings: vec![],
                });
            }
            if updated == current {
                if guessed {
                    continue;
                }
                return Ok(Written {
                    code: 200,
                    body: current,
                    warnings: vec![],
                });
            }
            let encoded = encode_stored(api, info, &mut updated)?;
            let options = write_options(api, info);
            match api
                .store
                .update_with(&key, encoded, mod_revision, options)
                .await
            {
                Ok(kv) => {
                    read_own_write(api, info, kv.mod_revision).await;
                    object::set_resource_version(&mut updated, kv.mod_revision);
                    // Upstream answers 200 with the object while deletion waits, and 202
                    // only when orphanDependents=false was asked for.
                    let code = if opts.explicit_no_orphan { 202 } else { 200 };
                    return Ok(Written {
                        code,
                        body: updated,
                        warnings: vec![],
                    });
                }
                Err(e) => match cas_failure(e, info, &name, may_retry) {
                    None => continue,
                    Some(err) => return Err(err),
                },
            }
        }

        if opts.dry_run {
            return Ok(Written {
                code: 200,
                body: deleted_body(info, &current),
                warnings: vec![],
            });
        }
        match api.store.delete(&key, Some(mod_revision)).await {
            Ok((_, rev)) => {
                read_own_write(api, info, rev).await;
                if info.group.is_empty() && info.plural == "services" {
                    services::release(&mut api.services.lock(), &current);
                }
                let mut body = current;
                object::set_resource_version(&mut body, rev);
                return Ok(Written {
                    code: 200,
                    body: deleted_body(info, &body),
                    warnings: vec![],
                });
            }
            Err(e) => match cas_failure(e, info, &name, may_retry) {
                None => continue,
                Some(err) => return Err(err),
            },
        }
    }
}

/// Service allocations are rebuilt from storage during bootstrap; until then an allocation
/// could hand out an address already taken.
fn allocators_ready(api: &Apiserver) -> ApiResult<()> {
    if api
        .allocators_rebuilt
        .load(std::sync::atomic::Ordering::Acquire)
    {
        return Ok(());
    }
    Err(ApiError::service_unavailable(
        "the Service IP and port allocators are not ready: waiting for etcd",
    ))
}

/// Admission reads some caches (namespaces, PriorityClasses): a write of those answers once
/// the cache shows it, so what a client does next is admitted against it (upstream forces a
/// live lookup for recently deleted namespaces for the same reason).
async fn read_own_write(api: &Apiserver, info: &'static ResourceInfo, revision: i64) {
    if admission::reads_cache_of(info) {
        let cache = api.cache(info);
        if !cache
            .wait_for_revision(revision, std::time::Duration::from_secs(5))
            .await
        {
            tracing::warn!(
                revision,
                resource = %info.group_resource(),
                "watch cache lagging behind a write admission reads"
            );
        }
    }
}

/// What a completed delete answers: the object for most kinds (upstream's
/// ReturnDeletedObject), a Status with details otherwise.
fn deleted_body(info: &ResourceInfo, obj: &Value) -> Value {
    if info.group.is_empty() && matches!(info.plural, "pods" | "services" | "namespaces" | "nodes")
        || !info.group.is_empty()
    {
        return obj.clone();
    }
    success_status(Some(json!({
        "name": object::name(obj).unwrap_or(""),
        "group": info.group,
        "kind": info.plural,
        "uid": object::meta_str(obj, "uid").unwrap_or(""),
    })))
}

pub async fn delete_collection(
    api: &Apiserver,
    req: &ResourceRequest,
    q: &Query,
    opts: &DeleteOptions,
) -> ApiResult<Value> {
    let listed = list(api, req, q).await?.into_value();
    let items = listed["items"].as_array().cloned().unwrap_or_default();
    let mut deleted = Vec::new();
    for item in items {
        let Some(name) = object::name(&item).map(String::from) else {
            continue;
        };
        let one = ResourceRequest {
            info: req.info,
            namespace: object::namespace(&item)
                .map(String::from)
                .or(req.namespace.clone()),
            name: Some(name),
            subresource: None,
        };
        match delete_object(api, &one, opts, Admit::Yes).await {
            // Kinds answering a Status for one delete list the objects they removed.
            Ok(w) if w.body.get("kind").and_then(Value::as_str) == Some("Status") => {
                deleted.push(item)
            }
            Ok(w) => deleted.push(w.body),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(list_value(
        req.info,
        deleted,
        api.store.current_revision().await?,
        None,
        None,
    ))
}

// ---------------------------------------------------------------- subresources

/// pods/binding: sets spec.nodeName once.
pub async fn bind(
    api: &Apiserver,
    req: &ResourceRequest,
    q: &Query,
    mut binding: Value,
) -> ApiResult<Written> {
    let info = req.info;
    let name = require_name(req)?.to_string();
    let kind = binding
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("Binding");
    if kind != "Binding" {
        return Err(ApiError::bad_request(format!(
            "expected a Binding, got {kind}"
        )));
    }
    if let Some(n) = object::name(&binding) {
        if n != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
    }
    object::meta_mut(&mut binding).insert("name".into(), json!(name));
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .ok_or_else(|| {
            ApiError::unprocessable(format!(
                "Binding.meta.k8s.io \"{name}\" is invalid: target.name: Required value"
            ))
        })?;
    let key = key_of(req, &name);
    loop {
        let kv = api
            .store
            .get(&key)
            .await?
            .ok_or_else(|| ApiError::not_found(info, &name))?;
        let mut pod = decode_stored(api, info, &kv)?;
        admission::validate_pod_subresource_create(
            api,
            &admission::Attributes {
                info,
                namespace: req.namespace.as_deref(),
                name: &name,
                subresource: "binding",
            },
            &pod,
        )?;
        if let Some(uid) = binding.pointer("/metadata/uid").and_then(Value::as_str) {
            if object::meta_str(&pod, "uid") != Some(uid) {
                return Err(ApiError::conflict(
                    info,
                    &name,
                    "Precondition failed: UID in precondition does not match",
                ));
            }
        }
        if object::deletion_timestamp(&pod).is_some() {
            return Err(ApiError::conflict(
                info,
                &name,
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        if let Some(existing) = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::conflict_on(
                "pods/binding",
                info,
                &name,
                &format!("pod {name} is already assigned to node {existing:?}"),
            ));
        }
        pod["spec"]["nodeName"] = json!(node);
        let conditions = pod["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut conditions: Vec<Value> = conditions
            .into_iter()
            .filter(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"))
            .collect();
        conditions.push(json!({ "type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": object::now_rfc3339() }));
        pod["status"]["conditions"] = json!(conditions);
        if q.dry_run {
            return Ok(Written {
                code: 201,
                body: success_status(None),
                warnings: vec![],
            });
        }
        match api
            .store
            .update(&key, encode_stored(api, info, &mut pod)?, kv.mod_revision)
            .await
        {
            Ok(_) => {
                return Ok(Written {
                    code: 201,
                    body: success_status(None),
                    warnings: vec![],
                })
            }
            Err(store::Error::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// pods/eviction: a delete that respects PodDisruptionBudgets.
pub async fn evict(api: &Apiserver, req: &ResourceRequest, eviction: Value) -> ApiResult<Written> {
    let info = req.info;
    let name = require_name(req)?.to_string();
    let kind = eviction
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("Eviction");
    if kind != "Eviction" {
        return Err(ApiError::bad_request(format!(
            "expected an Eviction, got {kind}"
        )));
    }
    let ns = req.namespace.clone().unwrap_or_default();
    let key = key_of(req, &name);
    let kv = api
        .store
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::not_found(info, &name))?;
    let pod = decode_stored(api, info, &kv)?;
    admission::validate_pod_subresource_create(
        api,
        &admission::Attributes {
            info,
            namespace: req.namespace.as_deref(),
            name: &name,
            subresource: "eviction",
        },
        &pod,
    )?;
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let opts = DeleteOptions::new(&Query::default(), eviction.get("deleteOptions"))?;
    if !terminal && object::deletion_timestamp(&pod).is_none() {
        let pdb_info = resources::find("policy", "v1", "poddisruptionbudgets")
            .ok_or_else(|| ApiError::internal("pdbs not registered"))?;
        // A consistent read, as upstream: a budget created just before must count.
        let pdb_req = ResourceRequest {
            info: pdb_info,
            namespace: Some(ns.clone()),
            name: None,
            subresource: None,
        };
        let listed = list(api, &pdb_req, &Query::default()).await?.into_value();
        let pdbs: Vec<Arc<Value>> = listed["items"]
            .as_array()
            .map(|a| a.iter().cloned().map(Arc::new).collect())
            .unwrap_or_default();
        let labels: std::collections::BTreeMap<String, String> = object::labels(&pod)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let matching: Vec<Arc<Value>> = pdbs
            .into_iter()
            .filter(|pdb| {
                pdb.pointer("/spec/selector")
                    .and_then(|s| serde_json::from_value(s.clone()).ok())
                    .and_then(|s| api_types::selector::LabelSelector::from_meta(&s).ok())
                    .is_some_and(|s| s.matches(&labels))
            })
            .collect();
        if matching.len() > 1 {
            return Err(ApiError::internal("This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."));
        }
        if let Some(pdb) = matching.first() {
            let allowed = pdb
                .pointer("/status/disruptionsAllowed")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let pdb_name = object::name(pdb).unwrap_or("").to_string();
            if allowed <= 0 {
                return Err(ApiError::too_many_requests(
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    0,
                )
                .with_details(json!({ "causes": [{ "reason": "DisruptionBudget", "message": format!("The disruption budget {pdb_name} needs {} healthy pods and has {} currently", pdb.pointer("/status/desiredHealthy").and_then(Value::as_i64).unwrap_or(0), pdb.pointer("/status/currentHealthy").and_then(Value::as_i64).unwrap_or(0)) }] })));
            }
            let pdb_key = object::key(pdb_info, Some(&ns), &pdb_name);
            let pdb_kv = api
                .store
                .get(&pdb_key)
                .await?
                .ok_or_else(|| ApiError::not_found(pdb_info, &pdb_name))?;
            let mut stored = decode_stored(api, pdb_info, &pdb_kv)?;
            let now_allowed = stored
                .pointer("/status/disruptionsAllowed")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if now_allowed <= 0 {
                return Err(ApiError::too_many_requests(
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    0,
                ));
            }
            stored["status"]["disruptionsAllowed"] = json!(now_allowed - 1);
            let mut disrupted = stored["status"]["disruptedPods"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            disrupted.insert(name.clone(), json!(object::now_rfc3339()));
            stored["status"]["disruptedPods"] = Value::Object(disrupted);
            if !opts.dry_run {
                api.store
                    .update(
                        &pdb_key,
                        encode_stored(api, pdb_info, &mut stored)?,
                        pdb_kv.mod_revision,
                    )
                    .await
                    .map_err(|e| match e {
                        store::Error::Conflict { .. } => ApiError::modified(pdb_info, &pdb_name),
                        other => other.into(),
                    })?;
            }
        }
    }
    delete_object(api, req, &opts, Admit::No).await?;
    Ok(Written {
        code: 201,
        body: success_status(None),
        warnings: vec![],
    })
}

/// The autoscaling/v1 Scale of a workload.
fn scale_of(info: &ResourceInfo, obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector")
        .and_then(|s| {
            if info.plural == "replicationcontrollers" {
                s.as_object().map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
            } else {
                serde_json::from_value::<
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
                >(s.clone())
                .ok()
                .map(|s| selector_string(&s))
            }
        })
        .unwrap_or_default();
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": { "replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1) },
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

fn selector_string(s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector) -> String {
    let mut parts: Vec<String> = s
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in s.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

pub async fn get_scale(api: &Apiserver, req: &ResourceRequest) -> ApiResult<Value> {
    let obj = get(api, req, &Query::default()).await?;
    Ok(scale_of(req.info, &obj))
}

/// PUT or PATCH of `/scale`: writes `.spec.replicas` of the workload.
pub async fn update_scale(
    api: &Apiserver,
    req: &ResourceRequest,
    q: &Query,
    change: Change,
) -> ApiResult<Written> {
    let info = req.info;
    let name = require_name(req)?.to_string();
    for _ in 0..MAX_RETRIES {
        let current = get(api, req, &Query::default()).await?;
        let scale = scale_of(info, &current);
        let new_scale = match &change {
            Change::Replace { obj, .. } => obj.clone(),
            Change::Patch { patch_type, patch } => {
                let (patched, _) = match patch_type {
                    PatchType::Strategic | PatchType::Merge => {
                        let p: Value = serde_json::from_slice(patch).map_err(|e| {
                            ApiError::bad_request(format!("error decoding patch: {e}"))
                        })?;
                        let mut out = scale.clone();
                        json_patch::merge(&mut out, &p);
                        (out, ())
                    }
                    PatchType::Json => {
                        let p: json_patch::Patch = serde_json::from_slice(patch).map_err(|e| {
                            ApiError::bad_request(format!("error decoding patch: {e}"))
                        })?;
                        let mut out = scale.clone();
                        json_patch::patch(&mut out, &p)
                            .map_err(|e| ApiError::unprocessable(e.to_string()))?;
                        (out, ())
                    }
                };
                patched
            }
        };
        let replicas = new_scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if replicas < 0 {
            return Err(ApiError::unprocessable(format!(
                "Scale.autoscaling \"{name}\" is invalid: spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
            )));
        }
        let rv = object::resource_version(&new_scale).map(String::from);
        let mut obj = current.clone();
        obj["spec"]["replicas"] = json!(replicas);
        match rv {
            Some(rv) => object::meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv)),
            None => object::meta_mut(&mut obj).remove("resourceVersion"),
        };
        let main = ResourceRequest {
            subresource: None,
            ..req.clone()
        };
        match update(
            api,
            &main,
            q,
            Change::Replace {
                obj,
                duplicates: vec![],
            },
        )
        .await
        {
            Ok(w) => {
                return Ok(Written {
                    code: 200,
                    body: scale_of(info, &w.body),
                    warnings: w.warnings,
                })
            }
            Err(e) if e.code == 409 && object::resource_version(&new_scale).is_none() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::modified(info, &name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_json_is_the_list_object() {
        let info = resources::find("", "v1", "configmaps").unwrap();
        let a = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "a", "resourceVersion": "5" }, "data": { "k": "v\"q" } });
        let b = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "b" } });
        let list = List {
            info,
            items: vec![ListItem::Cached(Cached::new(info, &a)), ListItem::Owned(b)],
            resource_version: 9,
            continue_token: Some("tok".into()),
            remaining: Some(3),
        };
        let from_json: Value = serde_json::from_slice(&list.to_json()).unwrap();
        assert_eq!(from_json, list.into_value());
        let empty = List {
            info,
            items: vec![],
            resource_version: 1,
            continue_token: None,
            remaining: None,
        };
        let v: Value = serde_json::from_slice(&empty.to_json()).unwrap();
        assert_eq!(v["items"], json!([]));
        assert_eq!(v["kind"], "ConfigMapList");
    }
}
