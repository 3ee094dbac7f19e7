//! The OpenAPI documents the apiserver serves: Swagger 2.0 at `/openapi/v2`, and at
//! `/openapi/v3` an index of OpenAPI 3.0 documents, one per group/version (`api/v1`,
//! `apis/apps/v1`, …) plus the discovery roots (`api`, `apis`, `apis/<group>`, `version`).
//!
//! Schemas come from k8s-openapi's `JsonSchema` impls (schemars), operations from the
//! resource registry, and the field extensions clients rely on from the wire tables:
//! `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key` (kubectl's three-way strategic
//! merge), `x-kubernetes-list-type` / `x-kubernetes-list-map-keys` and
//! `x-kubernetes-map-type`. Kinds carry `x-kubernetes-group-version-kind` (a list) and resource
//! operations carry `x-kubernetes-group-version-kind` (one object) and `x-kubernetes-action`,
//! which is how kubectl finds a kind's schema (`apply`, `explain`) and checks whether PATCH
//! takes `fieldValidation` and strategic merge patches.
//!
//! Building the documents takes a while and they never change in a running server, so the
//! serialized forms are built once, on first use ([`v2_document`], [`v3_document`],
//! [`v3_index_document`]), each with a content hash for `ETag` and the immutable
//! `?hash=` URLs of the v3 index.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use k8s_openapi::api::{
    apps::v1 as apps, authentication::v1 as authentication, authorization::v1 as authorization,
    autoscaling::v1 as autoscaling, batch::v1 as batch, certificates::v1 as certificates,
    coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery,
    events::v1 as events, networking::v1 as networking, node::v1 as node, policy::v1 as policy,
    rbac::v1 as rbac, scheduling::v1 as scheduling,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::version;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{json, Map, Value};

use crate::resources::{ResourceInfo, RESOURCES};
use crate::wire;

/// The Kubernetes version the documents describe.
pub const KUBERNETES_VERSION: &str = "v1.33.0";

const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const API_RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";
const API_GROUP: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroup";
const API_GROUP_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroupList";
const API_VERSIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIVersions";
const VERSION_INFO: &str = "io.k8s.apimachinery.pkg.version.Info";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";
const EVICTION: &str = "io.k8s.api.policy.v1.Eviction";
const BINDING: &str = "io.k8s.api.core.v1.Binding";

/// The content types PATCH accepts; kubectl only computes a strategic merge patch from the
/// v3 document when `application/strategic-merge-patch+json` is among them.
const PATCH_CONTENT_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];
const OBJECT_CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];
const STREAM_CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/json;stream=watch",
    "application/vnd.kubernetes.protobuf;stream=watch",
];

// ---------------------------------------------------------------------------------------------
// Public API

/// The Swagger 2.0 document served at `/openapi/v2` (JSON), parsed from [`v2_document`].
pub fn openapi_v2() -> Value {
    serde_json::from_slice(&v2_document().json()).unwrap_or(Value::Null)
}

fn build_v2() -> Value {
    let definitions = definitions(Flavor::V2);
    let mut paths = BTreeMap::new();
    for doc_path in v3_paths() {
        paths.extend(paths_of(&doc_path).unwrap_or_default());
    }
    let paths: Map<String, Value> = paths
        .into_iter()
        .map(|(path, item)| (path, item.render(Flavor::V2)))
        .collect();
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "definitions": definitions,
        "securityDefinitions": {
            "BearerToken": {
                "description": "Bearer Token authentication",
                "type": "apiKey",
                "name": "authorization",
                "in": "header",
            },
        },
        "security": [{"BearerToken": []}],
    })
}

/// The `/openapi/v3` index: every document path with its server-relative URL,
/// `/openapi/v3/<path>?hash=<hash_of(path)>`.
pub fn openapi_v3_index(hash_of: impl Fn(&str) -> String) -> Value {
    let paths: Map<String, Value> = v3_paths()
        .into_iter()
        .map(|path| {
            let url = server_relative_url(&path, &hash_of(&path));
            (path, json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({"paths": paths})
}

/// The OpenAPI 3.0 document for one path of the index (`api/v1`, `apis/apps/v1`, `apis/apps`,
/// `api`, `apis` or `version`), or `None` for a path the server does not serve. Parsed from
/// [`v3_document`].
pub fn openapi_v3_group_version(path: &str) -> Option<Value> {
    serde_json::from_slice(&v3_document(path)?.json()).ok()
}

/// Every document path of the `/openapi/v3` index, sorted.
pub fn v3_paths() -> Vec<String> {
    let mut paths = BTreeSet::new();
    paths.insert("api".to_string());
    paths.insert("apis".to_string());
    paths.insert("version".to_string());
    for r in RESOURCES {
        if r.group.is_empty() {
            paths.insert(format!("api/{}", r.version));
        } else {
            paths.insert(format!("apis/{}", r.group));
            paths.insert(format!("apis/{}/{}", r.group, r.version));
        }
    }
    paths.into_iter().collect()
}

/// A serialized document, kept gzipped (the v3 documents are 3.6 MiB of JSON, a tenth of
/// that compressed, and a server keeps them for its lifetime), and its content hash.
#[derive(Debug)]
pub struct Document {
    gzip: Vec<u8>,
    hash: String,
}

impl Document {
    fn new(value: &Value) -> Document {
        use std::io::Write;
        // Serializing a `Value` cannot fail: every key is a string.
        let json = serde_json::to_vec(value).unwrap_or_default();
        let hash = content_hash(&json);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        // Writing to a Vec cannot fail.
        let gzip = gz
            .write_all(&json)
            .and_then(|()| gz.finish())
            .unwrap_or_default();
        Document { gzip, hash }
    }

    /// The compact JSON, gzipped (for `Content-Encoding: gzip`).
    pub fn gzip(&self) -> &[u8] {
        &self.gzip
    }

    /// The compact JSON.
    pub fn json(&self) -> Vec<u8> {
        use std::io::Read;
        let mut json = Vec::new();
        // The data was compressed in this process from a Vec: it decompresses.
        let _ = flate2::read::GzDecoder::new(self.gzip.as_slice()).read_to_end(&mut json);
        json
    }

    /// The content hash: the `?hash=` of the document's URL in the v3 index.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The `ETag` header value (the hash, quoted).
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.hash)
    }
}

/// The `/openapi/v2` document, built once.
pub fn v2_document() -> &'static Document {
    static DOC: OnceLock<Document> = OnceLock::new();
    DOC.get_or_init(|| Document::new(&build_v2()))
}

/// The v3 document for an index path, built once (with all the others).
pub fn v3_document(path: &str) -> Option<&'static Document> {
    v3_documents().get(path)
}

/// The `/openapi/v3` index with the hashes of [`v3_document`]s, built once.
pub fn v3_index_document() -> &'static Document {
    static DOC: OnceLock<Document> = OnceLock::new();
    DOC.get_or_init(|| {
        let docs = v3_documents();
        Document::new(&openapi_v3_index(|path| {
            docs.get(path).map(|d| d.hash.clone()).unwrap_or_default()
        }))
    })
}

/// `/openapi/v3/<path>?hash=<hash>`: where the index points a client for one document.
/// The upstream server answers a request with a stale hash with a 301 to this URL, and one
/// with the current hash with `Cache-Control: public, immutable`.
pub fn server_relative_url(path: &str, hash: &str) -> String {
    format!("/openapi/v3/{path}?hash={hash}")
}

/// A stable content hash (128-bit FNV-1a, upper-case hex) for `ETag`s and `?hash=` URLs.
/// Upstream uses SHA-512; clients treat the value as opaque.
pub fn content_hash(bytes: &[u8]) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let hash = bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u128::from(*b)).wrapping_mul(PRIME));
    format!("{hash:032X}")
}

// ---------------------------------------------------------------------------------------------
// Documents

fn v3_documents() -> &'static BTreeMap<String, Document> {
    static DOCS: OnceLock<BTreeMap<String, Document>> = OnceLock::new();
    DOCS.get_or_init(|| {
        // Only the serialized documents stay in memory; the schema trees are dropped.
        let definitions = definitions(Flavor::V3);
        v3_paths()
            .into_iter()
            .filter_map(|path| {
                let doc = build_v3_document(&path, &definitions)?;
                Some((path, Document::new(&doc)))
            })
            .collect()
    })
}

fn build_v3_document(path: &str, definitions: &Map<String, Value>) -> Option<Value> {
    let items = paths_of(path)?;
    let paths: Map<String, Value> = items
        .into_iter()
        .map(|(path, item)| (path, item.render(Flavor::V3)))
        .collect();
    let paths = Value::Object(paths);
    let schemas = reachable(&paths, definitions);
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "BearerToken": {
                    "description": "Bearer Token authentication",
                    "type": "apiKey",
                    "name": "authorization",
                    "in": "header",
                },
            },
        },
        "security": [{"BearerToken": []}],
    }))
}

/// The definitions `value` refers to, directly or through other definitions.
fn reachable(value: &Value, definitions: &Map<String, Value>) -> Map<String, Value> {
    let prefix = Flavor::V3.prefix();
    let mut seen = BTreeSet::new();
    let mut queue = Vec::new();
    collect_refs(value, prefix, &mut queue);
    while let Some(name) = queue.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(def) = definitions.get(&name) {
            collect_refs(def, prefix, &mut queue);
        }
    }
    seen.into_iter()
        .filter_map(|name| definitions.get(&name).map(|d| (name.clone(), d.clone())))
        .collect()
}

fn collect_refs(value: &Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    if let Some(name) = v.as_str().and_then(|r| r.strip_prefix(prefix)) {
                        out.push(name.to_string());
                    }
                } else {
                    collect_refs(v, prefix, out);
                }
            }
        }
        Value::Array(list) => list.iter().for_each(|v| collect_refs(v, prefix, out)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Definitions

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    /// Swagger 2.0: `#/definitions/`, `$ref` with sibling keywords.
    V2,
    /// OpenAPI 3.0: `#/components/schemas/`, a `$ref` with siblings wrapped in `allOf`.
    V3,
}

impl Flavor {
    fn prefix(self) -> &'static str {
        match self {
            Flavor::V2 => "#/definitions/",
            Flavor::V3 => "#/components/schemas/",
        }
    }

    fn reference(self, definition: &str) -> Value {
        json!({"$ref": format!("{}{definition}", self.prefix())})
    }

    /// A property holding a definition, with its own description.
    fn ref_property(self, definition: &str, description: &str) -> Value {
        match self {
            Flavor::V2 => json!({
                "$ref": format!("{}{definition}", self.prefix()),
                "description": description,
            }),
            Flavor::V3 => json!({
                "allOf": [self.reference(definition)],
                "description": description,
            }),
        }
    }
}

/// Every definition reachable from the served kinds and the API's own types.
fn definitions(flavor: Flavor) -> Map<String, Value> {
    let settings = match flavor {
        Flavor::V2 => SchemaSettings::draft07().with(|s| {
            s.definitions_path = "/definitions".into();
            s.meta_schema = None;
            // Swagger 2.0 keeps a property's description next to its `$ref`, as upstream's does.
            s.transforms.clear();
        }),
        Flavor::V3 => SchemaSettings::openapi3().with(|s| s.meta_schema = None),
    };
    let mut generator = settings.into_generator();
    add_roots(&mut generator);
    let mut defs = generator.take_definitions(true);

    // Reviews are created, never listed: they have no List kind.
    for r in RESOURCES.iter().filter(|r| r.verbs.contains(&"list")) {
        let list = format!("{}List", r.definition);
        if !defs.contains_key(&list) {
            defs.insert(list, list_definition(r, flavor));
        }
    }
    let gvks = definition_gvks();
    for (name, schema) in defs.iter_mut() {
        special_form(name, schema, flavor);
        add_field_extensions(name, schema);
        if flavor == Flavor::V3 {
            wrap_ref_siblings(schema);
        }
        if let (Some(gvks), Value::Object(map)) = (gvks.get(name.as_str()), schema) {
            map.insert("x-kubernetes-group-version-kind".into(), gvk_list(gvks));
        }
    }
    defs.sort_keys();
    defs
}

/// Generates the schemas of every kind the server serves, and everything they refer to.
fn add_roots(generator: &mut SchemaGenerator) {
    macro_rules! roots {
        ($($ty:ty),* $(,)?) => {
            $( let _ = generator.subschema_for::<$ty>(); )*
        };
    }
    roots!(
        core::Binding,
        core::ConfigMap,
        core::Endpoints,
        core::Event,
        core::LimitRange,
        core::Namespace,
        core::Node,
        core::PersistentVolume,
        core::PersistentVolumeClaim,
        core::Pod,
        core::ReplicationController,
        core::ResourceQuota,
        core::Secret,
        core::Service,
        core::ServiceAccount,
        apps::ControllerRevision,
        apps::DaemonSet,
        apps::Deployment,
        apps::ReplicaSet,
        apps::StatefulSet,
        authentication::SelfSubjectReview,
        authentication::TokenReview,
        authorization::LocalSubjectAccessReview,
        authorization::SelfSubjectAccessReview,
        authorization::SelfSubjectRulesReview,
        authorization::SubjectAccessReview,
        autoscaling::Scale,
        batch::CronJob,
        batch::Job,
        certificates::CertificateSigningRequest,
        coordination::Lease,
        discovery::EndpointSlice,
        events::Event,
        networking::Ingress,
        networking::IngressClass,
        networking::NetworkPolicy,
        node::RuntimeClass,
        policy::Eviction,
        policy::PodDisruptionBudget,
        rbac::ClusterRole,
        rbac::ClusterRoleBinding,
        rbac::Role,
        rbac::RoleBinding,
        scheduling::PriorityClass,
        meta::APIGroup,
        meta::APIGroupList,
        meta::APIResourceList,
        meta::APIVersions,
        meta::DeleteOptions,
        meta::ListMeta,
        meta::Patch,
        meta::Status,
        meta::WatchEvent<core::Pod>,
        version::Info,
    );
}

/// `<Kind>List`, which k8s-openapi models generically rather than as a definition.
fn list_definition(r: &ResourceInfo, flavor: Flavor) -> Value {
    json!({
        "description": format!("{}List is a list of {} objects.", r.kind, r.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object.",
                "type": "string",
            },
            "items": {
                "description": format!("List of {}.", r.plural),
                "type": "array",
                "items": flavor.reference(r.definition),
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents.",
                "type": "string",
            },
            "metadata": flavor.ref_property(LIST_META, "Standard list metadata."),
        },
    })
}

/// IntOrString and Quantity as upstream publishes them (k8s-openapi only marks them
/// `x-kubernetes-int-or-string`).
fn special_form(name: &str, schema: &mut Value, flavor: Flavor) {
    let description = schema.get("description").cloned().unwrap_or(Value::Null);
    let replacement = match (name, flavor) {
        (INT_OR_STRING, Flavor::V2) => json!({"type": "string", "format": "int-or-string"}),
        (INT_OR_STRING, Flavor::V3) => json!({
            "format": "int-or-string",
            "oneOf": [{"type": "integer"}, {"type": "string"}],
        }),
        (QUANTITY, Flavor::V2) => json!({"type": "string"}),
        (QUANTITY, Flavor::V3) => json!({"oneOf": [{"type": "string"}, {"type": "number"}]}),
        _ => return,
    };
    let mut replacement = replacement;
    if let (Value::Object(map), false) = (&mut replacement, description.is_null()) {
        map.insert("description".into(), description);
    }
    *schema = replacement;
}

/// Copies the wire tables' patch and list metadata onto the definition's properties.
fn add_field_extensions(name: &str, schema: &mut Value) {
    let Some(message) = wire::message(name) else {
        return;
    };
    let Some(Value::Object(properties)) = schema.get_mut("properties") else {
        return;
    };
    for (json_name, property) in properties.iter_mut() {
        let (Some(field), Value::Object(property)) = (message.field(json_name), property) else {
            continue;
        };
        if !field.list_map_keys.is_empty() {
            property.insert(
                "x-kubernetes-list-map-keys".into(),
                json!(field.list_map_keys),
            );
        }
        if let Some(list_type) = field.list_type {
            property.insert("x-kubernetes-list-type".into(), json!(list_type));
        }
        if let (Some(map_type), true) = (field.map_type, field.is_map()) {
            property.insert("x-kubernetes-map-type".into(), json!(map_type));
        }
        if let Some(key) = field.patch_merge_key {
            property.insert("x-kubernetes-patch-merge-key".into(), json!(key));
        }
        if let Some(strategy) = field.patch_strategy {
            property.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
        }
    }
}

/// OpenAPI 3.0 ignores keywords next to `$ref`; move the `$ref` into `allOf` wherever
/// something (a description, an extension) sits beside it.
fn wrap_ref_siblings(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for v in map.values_mut() {
                wrap_ref_siblings(v);
            }
            if map.len() > 1 {
                if let Some(reference) = map.shift_remove("$ref") {
                    map.insert("allOf".into(), json!([{"$ref": reference}]));
                }
            }
        }
        Value::Array(list) => list.iter_mut().for_each(wrap_ref_siblings),
        _ => {}
    }
}

/// A group/version/kind, in `x-kubernetes-group-version-kind` form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Gvk {
    group: String,
    version: String,
    kind: String,
}

impl Gvk {
    fn new(group: &str, version: &str, kind: &str) -> Gvk {
        Gvk {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
        }
    }

    fn to_value(&self) -> Value {
        json!({"group": self.group, "kind": self.kind, "version": self.version})
    }
}

fn gvk_list(gvks: &[Gvk]) -> Value {
    Value::Array(gvks.iter().map(Gvk::to_value).collect())
}

/// The kinds each definition is, for `x-kubernetes-group-version-kind` on definitions.
fn definition_gvks() -> BTreeMap<String, Vec<Gvk>> {
    let mut out: BTreeMap<String, Vec<Gvk>> = BTreeMap::new();
    let mut add = |definition: &str, gvk: Gvk| {
        let list = out.entry(definition.to_string()).or_default();
        if !list.contains(&gvk) {
            list.push(gvk);
        }
    };
    for r in RESOURCES {
        add(r.definition, Gvk::new(r.group, r.version, r.kind));
        add(
            &format!("{}List", r.definition),
            Gvk::new(r.group, r.version, &r.list_kind()),
        );
    }
    add(BINDING, Gvk::new("", "v1", "Binding"));
    add(SCALE, Gvk::new("autoscaling", "v1", "Scale"));
    add(EVICTION, Gvk::new("policy", "v1", "Eviction"));
    for (definition, kind) in [
        (STATUS, "Status"),
        (API_RESOURCE_LIST, "APIResourceList"),
        (API_GROUP, "APIGroup"),
        (API_GROUP_LIST, "APIGroupList"),
        (API_VERSIONS, "APIVersions"),
    ] {
        add(definition, Gvk::new("", "v1", kind));
    }
    // Every served group/version registers its own DeleteOptions and WatchEvent.
    let served: BTreeSet<(&str, &str)> = RESOURCES
        .iter()
        .filter(|r| !r.group.is_empty())
        .map(|r| (r.group, r.version))
        .collect();
    for (definition, kind) in [
        (DELETE_OPTIONS, "DeleteOptions"),
        (WATCH_EVENT, "WatchEvent"),
    ] {
        add(definition, Gvk::new("", "v1", kind));
        for (group, version) in &served {
            add(definition, Gvk::new(group, version, kind));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Paths

/// A parameter of a path or an operation.
#[derive(Debug, Clone)]
struct Param {
    name: &'static str,
    location: &'static str,
    ty: &'static str,
    description: String,
}

impl Param {
    fn query(name: &'static str, ty: &'static str, description: &str) -> Param {
        Param {
            name,
            location: "query",
            ty,
            description: description.to_string(),
        }
    }

    fn path(name: &'static str, description: String) -> Param {
        Param {
            name,
            location: "path",
            ty: "string",
            description,
        }
    }

    fn render(&self, flavor: Flavor) -> Value {
        let mut out = Map::new();
        out.insert("description".into(), json!(self.description));
        out.insert("in".into(), json!(self.location));
        out.insert("name".into(), json!(self.name));
        if self.location == "path" {
            out.insert("required".into(), json!(true));
        }
        match flavor {
            Flavor::V2 => {
                out.insert("type".into(), json!(self.ty));
                out.insert("uniqueItems".into(), json!(true));
            }
            Flavor::V3 => {
                out.insert(
                    "schema".into(),
                    json!({"type": self.ty, "uniqueItems": true}),
                );
            }
        }
        Value::Object(out)
    }
}

fn pretty() -> Param {
    Param::query(
        "pretty",
        "string",
        "If 'true', then the output is pretty printed.",
    )
}

fn dry_run() -> Param {
    Param::query(
        "dryRun",
        "string",
        "When present, indicates that modifications should not be persisted. Valid values are: All.",
    )
}

fn field_manager() -> Param {
    Param::query(
        "fieldManager",
        "string",
        "A name associated with the actor or entity making these changes.",
    )
}

fn field_validation() -> Param {
    Param::query(
        "fieldValidation",
        "string",
        "How the server treats unknown or duplicate fields in the request object: Ignore, Warn or Strict.",
    )
}

fn write_params() -> Vec<Param> {
    vec![dry_run(), field_manager(), field_validation()]
}

fn patch_params() -> Vec<Param> {
    vec![
        dry_run(),
        field_manager(),
        field_validation(),
        Param::query(
            "force",
            "boolean",
            "Force apply requests, re-acquiring fields owned by other managers. Must be unset for non-apply patches.",
        ),
    ]
}

fn delete_params() -> Vec<Param> {
    vec![
        dry_run(),
        Param::query(
            "gracePeriodSeconds",
            "integer",
            "The duration in seconds before the object should be deleted; zero deletes immediately.",
        ),
        Param::query(
            "orphanDependents",
            "boolean",
            "Deprecated: use propagationPolicy. Whether dependents are orphaned.",
        ),
        Param::query(
            "propagationPolicy",
            "string",
            "Whether and how garbage collection is performed: Orphan, Background or Foreground.",
        ),
    ]
}

/// The query parameters of list and watch requests (`watch` only where watching is allowed).
fn list_params(with_watch: bool) -> Vec<Param> {
    let mut params = vec![
        Param::query(
            "continue",
            "string",
            "The continue token of a previous paged list response.",
        ),
        Param::query(
            "fieldSelector",
            "string",
            "A selector to restrict the list of returned objects by their fields.",
        ),
        Param::query(
            "labelSelector",
            "string",
            "A selector to restrict the list of returned objects by their labels.",
        ),
        Param::query(
            "limit",
            "integer",
            "The maximum number of items to return; more are available through `continue`.",
        ),
        Param::query(
            "resourceVersion",
            "string",
            "Constrains the resource versions a request may be served from.",
        ),
        Param::query(
            "resourceVersionMatch",
            "string",
            "How resourceVersion is applied to list calls: Exact or NotOlderThan.",
        ),
        Param::query(
            "sendInitialEvents",
            "boolean",
            "Start a watch with synthetic ADDED events for the current state, ended by a bookmark.",
        ),
        Param::query(
            "timeoutSeconds",
            "integer",
            "Timeout for the list/watch call.",
        ),
    ];
    if with_watch {
        params.push(Param::query(
            "allowWatchBookmarks",
            "boolean",
            "Request watch events of type BOOKMARK.",
        ));
        params.push(Param::query(
            "watch",
            "boolean",
            "Watch for changes to the described resources instead of listing them.",
        ));
    }
    params
}

/// What an operation returns, which decides its response content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Produces {
    Object,
    Stream,
    Json,
}

/// What an operation takes as its body.
#[derive(Debug, Clone)]
enum Body {
    /// An object of this definition (`*/*`, i.e. JSON, YAML or protobuf).
    Object(String),
    /// A patch in one of [`PATCH_CONTENT_TYPES`].
    Patch,
}

#[derive(Debug, Clone)]
struct Operation {
    id: String,
    description: String,
    tag: String,
    action: Option<&'static str>,
    gvk: Option<Gvk>,
    params: Vec<Param>,
    body: Option<Body>,
    /// Status codes and the definition each returns.
    responses: Vec<(u16, String)>,
    produces: Produces,
}

impl Operation {
    fn render(&self, flavor: Flavor) -> Value {
        let mut op = Map::new();
        op.insert("description".into(), json!(self.description));
        op.insert("operationId".into(), json!(self.id));
        let content_types = match self.produces {
            Produces::Object => OBJECT_CONTENT_TYPES,
            Produces::Stream => STREAM_CONTENT_TYPES,
            Produces::Json => &["application/json"][..],
        };
        let mut params: Vec<Value> = self.params.iter().map(|p| p.render(flavor)).collect();
        match flavor {
            Flavor::V2 => {
                let consumes: &[&str] = match self.body {
                    Some(Body::Patch) => PATCH_CONTENT_TYPES,
                    _ => &["*/*"],
                };
                op.insert("consumes".into(), json!(consumes));
                op.insert("produces".into(), json!(content_types));
                op.insert("schemes".into(), json!(["https"]));
                if let Some(body) = &self.body {
                    let definition = match body {
                        Body::Object(definition) => definition.as_str(),
                        Body::Patch => PATCH,
                    };
                    params.insert(
                        0,
                        json!({
                            "in": "body",
                            "name": "body",
                            "required": true,
                            "schema": flavor.reference(definition),
                        }),
                    );
                }
            }
            Flavor::V3 => {
                if let Some(body) = &self.body {
                    let (types, definition): (&[&str], &str) = match body {
                        Body::Object(definition) => (&["*/*"], definition.as_str()),
                        Body::Patch => (PATCH_CONTENT_TYPES, PATCH),
                    };
                    let content: Map<String, Value> = types
                        .iter()
                        .map(|t| {
                            (
                                t.to_string(),
                                json!({"schema": flavor.reference(definition)}),
                            )
                        })
                        .collect();
                    op.insert(
                        "requestBody".into(),
                        json!({"content": content, "required": true}),
                    );
                }
            }
        }
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }

        let mut responses = Map::new();
        for (code, definition) in &self.responses {
            let description = match code {
                201 => "Created",
                202 => "Accepted",
                _ => "OK",
            };
            let response = match flavor {
                Flavor::V2 => {
                    json!({"description": description, "schema": flavor.reference(definition)})
                }
                Flavor::V3 => {
                    let content: Map<String, Value> = content_types
                        .iter()
                        .map(|t| {
                            (
                                t.to_string(),
                                json!({"schema": flavor.reference(definition)}),
                            )
                        })
                        .collect();
                    json!({"description": description, "content": content})
                }
            };
            responses.insert(code.to_string(), response);
        }
        responses.insert("401".into(), json!({"description": "Unauthorized"}));
        op.insert("responses".into(), Value::Object(responses));
        op.insert("tags".into(), json!([self.tag]));
        if let Some(action) = self.action {
            op.insert("x-kubernetes-action".into(), json!(action));
        }
        if let Some(gvk) = &self.gvk {
            op.insert("x-kubernetes-group-version-kind".into(), gvk.to_value());
        }
        Value::Object(op)
    }
}

/// One path with its path-level parameters and operations by HTTP method.
#[derive(Debug, Clone, Default)]
struct PathItem {
    params: Vec<Param>,
    operations: BTreeMap<&'static str, Operation>,
}

impl PathItem {
    fn with_params(params: Vec<Param>) -> PathItem {
        PathItem {
            params,
            operations: BTreeMap::new(),
        }
    }

    fn render(&self, flavor: Flavor) -> Value {
        let mut out = Map::new();
        for (method, op) in &self.operations {
            out.insert((*method).to_string(), op.render(flavor));
        }
        if !self.params.is_empty() {
            out.insert(
                "parameters".into(),
                Value::Array(self.params.iter().map(|p| p.render(flavor)).collect()),
            );
        }
        Value::Object(out)
    }
}

/// `networking.k8s.io` → `Networking`, `rbac.authorization.k8s.io` → `RbacAuthorization`,
/// `` → `Core`: the group part of upstream's operation IDs.
fn group_id(group: &str) -> String {
    if group.is_empty() {
        return "Core".to_string();
    }
    group
        .trim_end_matches(".k8s.io")
        .split('.')
        .map(capitalize)
        .collect()
}

/// The group part of upstream's tags: `core`, `networking`, `rbacAuthorization`.
fn group_tag(group: &str) -> String {
    let id = group_id(group);
    let mut chars = id.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => id,
    }
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn api_prefix(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    }
}

/// The paths of one v3 document, or `None` if the path is not served.
fn paths_of(doc_path: &str) -> Option<BTreeMap<String, PathItem>> {
    let mut paths = BTreeMap::new();
    let simple = |id: &str, description: &str, tag: &str, definition: &str, produces| {
        let mut item = PathItem::default();
        item.operations.insert(
            "get",
            Operation {
                id: id.to_string(),
                description: description.to_string(),
                tag: tag.to_string(),
                action: None,
                gvk: None,
                params: Vec::new(),
                body: None,
                responses: vec![(200, definition.to_string())],
                produces,
            },
        );
        item
    };
    match doc_path.split('/').collect::<Vec<_>>().as_slice() {
        ["api"] => {
            paths.insert(
                "/api/".to_string(),
                simple(
                    "getCoreAPIVersions",
                    "get available API versions",
                    "core",
                    API_VERSIONS,
                    Produces::Object,
                ),
            );
        }
        ["apis"] => {
            paths.insert(
                "/apis/".to_string(),
                simple(
                    "getAPIVersions",
                    "get available API versions",
                    "apis",
                    API_GROUP_LIST,
                    Produces::Object,
                ),
            );
        }
        ["version"] => {
            paths.insert(
                "/version/".to_string(),
                simple(
                    "getCodeVersion",
                    "get the version information for this server",
                    "version",
                    VERSION_INFO,
                    Produces::Json,
                ),
            );
        }
        ["apis", group] if !group.is_empty() && RESOURCES.iter().any(|r| r.group == *group) => {
            paths.insert(
                format!("/apis/{group}/"),
                simple(
                    &format!("get{}APIGroup", group_id(group)),
                    "get information of a group",
                    &group_tag(group),
                    API_GROUP,
                    Produces::Object,
                ),
            );
        }
        ["api", version] => group_version_paths("", version, &mut paths),
        ["apis", group, version] => group_version_paths(group, version, &mut paths),
        _ => {}
    }
    (!paths.is_empty()).then_some(paths)
}

fn group_version_paths(group: &str, version: &str, paths: &mut BTreeMap<String, PathItem>) {
    let resources: Vec<&ResourceInfo> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if resources.is_empty() {
        return;
    }
    let prefix = api_prefix(group, version);
    let tag = format!("{}_{version}", group_tag(group));
    let mut root = PathItem::default();
    root.operations.insert(
        "get",
        Operation {
            id: format!("get{}{}APIResources", group_id(group), capitalize(version)),
            description: "get available resources".to_string(),
            tag: tag.clone(),
            action: None,
            gvk: None,
            params: Vec::new(),
            body: None,
            responses: vec![(200, API_RESOURCE_LIST.to_string())],
            produces: Produces::Object,
        },
    );
    paths.insert(format!("{prefix}/"), root);
    for r in resources {
        resource_paths(r, &prefix, &tag, paths);
    }
}

/// The operations of one resource, named as upstream names them
/// (`listCoreV1NamespacedPod`, `patchAppsV1NamespacedDeploymentScale`, …).
fn resource_paths(
    r: &ResourceInfo,
    prefix: &str,
    tag: &str,
    paths: &mut BTreeMap<String, PathItem>,
) {
    let gv = format!("{}{}", group_id(r.group), capitalize(r.version));
    let scope = if r.namespaced { "Namespaced" } else { "" };
    let kind = r.kind;
    let gvk = Gvk::new(r.group, r.version, kind);
    let can = |verb: &str| r.verbs.contains(&verb);
    let op = |verb: &str, suffix: &str, description: String, action: &'static str| Operation {
        id: format!("{verb}{gv}{scope}{kind}{suffix}"),
        description,
        tag: tag.to_string(),
        action: Some(action),
        gvk: Some(gvk.clone()),
        params: Vec::new(),
        body: None,
        responses: Vec::new(),
        produces: Produces::Object,
    };
    let namespace = || {
        Param::path(
            "namespace",
            "object name and auth scope, such as for teams and projects".to_string(),
        )
    };
    let name = || Param::path("name", format!("name of the {kind}"));
    let scope_params = |with_name: bool| {
        let mut params = Vec::new();
        if with_name {
            params.push(name());
        }
        if r.namespaced {
            params.push(namespace());
        }
        params
    };
    let collection = if r.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{prefix}/{}", r.plural)
    };
    let item_path = format!("{collection}/{{name}}");
    let list_def = format!("{}List", r.definition);

    // The collection: list, create, deletecollection.
    let mut item = PathItem::with_params([scope_params(false), vec![pretty()]].concat());
    if can("list") {
        let mut list = op(
            "list",
            "",
            format!("list or watch objects of kind {kind}"),
            "list",
        );
        list.params = list_params(can("watch"));
        list.responses = vec![(200, list_def.clone())];
        list.produces = Produces::Stream;
        item.operations.insert("get", list);
    }
    if can("create") {
        let mut create = op("create", "", format!("create a {kind}"), "post");
        create.params = write_params();
        create.body = Some(Body::Object(r.definition.to_string()));
        create.responses = [200, 201, 202]
            .into_iter()
            .map(|c| (c, r.definition.to_string()))
            .collect();
        item.operations.insert("post", create);
    }
    if can("deletecollection") {
        let mut delete = op(
            "delete",
            "",
            format!("delete collection of {kind}"),
            "deletecollection",
        );
        delete.id = format!("delete{gv}Collection{scope}{kind}");
        delete.params = [delete_params(), list_params(false)].concat();
        delete.body = Some(Body::Object(DELETE_OPTIONS.to_string()));
        delete.responses = vec![(200, STATUS.to_string())];
        item.operations.insert("delete", delete);
    }
    if !item.operations.is_empty() {
        paths.insert(collection.clone(), item);
    }

    // One object: read, replace, patch, delete.
    let mut item = PathItem::with_params([scope_params(true), vec![pretty()]].concat());
    if can("get") {
        let mut read = op("read", "", format!("read the specified {kind}"), "get");
        read.responses = vec![(200, r.definition.to_string())];
        item.operations.insert("get", read);
    }
    if can("update") {
        let mut replace = op(
            "replace",
            "",
            format!("replace the specified {kind}"),
            "put",
        );
        replace.params = write_params();
        replace.body = Some(Body::Object(r.definition.to_string()));
        replace.responses = vec![
            (200, r.definition.to_string()),
            (201, r.definition.to_string()),
        ];
        item.operations.insert("put", replace);
    }
    if can("patch") {
        let mut patch = op(
            "patch",
            "",
            format!("partially update the specified {kind}"),
            "patch",
        );
        patch.params = patch_params();
        patch.body = Some(Body::Patch);
        patch.responses = vec![
            (200, r.definition.to_string()),
            (201, r.definition.to_string()),
        ];
        item.operations.insert("patch", patch);
    }
    if can("delete") {
        let mut delete = op("delete", "", format!("delete a {kind}"), "delete");
        delete.params = delete_params();
        delete.body = Some(Body::Object(DELETE_OPTIONS.to_string()));
        delete.responses = vec![(200, STATUS.to_string()), (202, STATUS.to_string())];
        item.operations.insert("delete", delete);
    }
    if !item.operations.is_empty() {
        paths.insert(item_path.clone(), item);
    }

    // Listing across namespaces.
    if r.namespaced && can("list") {
        let mut item = PathItem::with_params([list_params(can("watch")), vec![pretty()]].concat());
        let mut list = op(
            "list",
            "ForAllNamespaces",
            format!("list or watch objects of kind {kind}"),
            "list",
        );
        list.id = format!("list{gv}{kind}ForAllNamespaces");
        list.responses = vec![(200, list_def.clone())];
        list.produces = Produces::Stream;
        item.operations.insert("get", list);
        paths.insert(format!("{prefix}/{}", r.plural), item);
    }

    // The deprecated watch paths.
    if can("watch") {
        let watch_params =
            |with_name: bool| [scope_params(with_name), list_params(true), vec![pretty()]].concat();
        let watch_collection = if r.namespaced {
            format!("{prefix}/watch/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{prefix}/watch/{}", r.plural)
        };
        let mut watch_list = op(
            "watch",
            "List",
            format!("watch individual changes to a list of {kind}. deprecated: use the 'watch' parameter with a list operation instead."),
            "watchlist",
        );
        watch_list.responses = vec![(200, WATCH_EVENT.to_string())];
        watch_list.produces = Produces::Stream;
        let mut item = PathItem::with_params(watch_params(false));
        item.operations.insert("get", watch_list.clone());
        paths.insert(watch_collection.clone(), item);

        let mut watch_one = op(
            "watch",
            "",
            format!("watch changes to an object of kind {kind}. deprecated: use the 'watch' parameter with a list operation instead, filtered to a single item with the 'fieldSelector' parameter."),
            "watch",
        );
        watch_one.responses = vec![(200, WATCH_EVENT.to_string())];
        watch_one.produces = Produces::Stream;
        let mut item = PathItem::with_params(watch_params(true));
        item.operations.insert("get", watch_one);
        paths.insert(format!("{watch_collection}/{{name}}"), item);

        if r.namespaced {
            let mut all = watch_list;
            all.id = format!("watch{gv}{kind}ListForAllNamespaces");
            let mut item = PathItem::with_params([list_params(true), vec![pretty()]].concat());
            item.operations.insert("get", all);
            paths.insert(format!("{prefix}/watch/{}", r.plural), item);
        }
    }

    for sub in r.subresources {
        subresource_paths(r, sub, &item_path, &op, &scope_params(true), paths);
    }
}

fn subresource_paths(
    r: &ResourceInfo,
    sub: &str,
    item_path: &str,
    op: &dyn Fn(&str, &str, String, &'static str) -> Operation,
    scope_params: &[Param],
    paths: &mut BTreeMap<String, PathItem>,
) {
    let kind = r.kind;
    let suffix = capitalize(sub);
    let mut item = PathItem::with_params([scope_params.to_vec(), vec![pretty()]].concat());
    // get/put/patch of the object itself (status) or of another kind (scale).
    let mut read_write = |definition: &str, gvk: Gvk, what: &str| {
        let mut read = op(
            "read",
            &suffix,
            format!("read {what} of the specified {kind}"),
            "get",
        );
        read.gvk = Some(gvk.clone());
        read.responses = vec![(200, definition.to_string())];
        let mut replace = op(
            "replace",
            &suffix,
            format!("replace {what} of the specified {kind}"),
            "put",
        );
        replace.gvk = Some(gvk.clone());
        replace.params = write_params();
        replace.body = Some(Body::Object(definition.to_string()));
        replace.responses = vec![(200, definition.to_string()), (201, definition.to_string())];
        let mut patch = op(
            "patch",
            &suffix,
            format!("partially update {what} of the specified {kind}"),
            "patch",
        );
        patch.gvk = Some(gvk);
        patch.params = patch_params();
        patch.body = Some(Body::Patch);
        patch.responses = vec![(200, definition.to_string()), (201, definition.to_string())];
        item.operations.insert("get", read);
        item.operations.insert("put", replace);
        item.operations.insert("patch", patch);
    };
    match sub {
        "status" => read_write(r.definition, Gvk::new(r.group, r.version, kind), "status"),
        "scale" => read_write(SCALE, Gvk::new("autoscaling", "v1", "Scale"), "scale"),
        "binding" | "eviction" => {
            let (definition, gvk) = if sub == "binding" {
                (BINDING, Gvk::new("", "v1", "Binding"))
            } else {
                (EVICTION, Gvk::new("policy", "v1", "Eviction"))
            };
            let mut create = op(
                "create",
                &suffix,
                format!("create {sub} of a {kind}"),
                "post",
            );
            create.gvk = Some(gvk);
            create.params = write_params();
            create.body = Some(Body::Object(definition.to_string()));
            create.responses = [200, 201, 202]
                .into_iter()
                .map(|c| (c, definition.to_string()))
                .collect();
            item.operations.insert("post", create);
        }
        "finalize" => {
            let mut replace = op(
                "replace",
                &suffix,
                format!("replace finalize of the specified {kind}"),
                "put",
            );
            replace.params = write_params();
            replace.body = Some(Body::Object(r.definition.to_string()));
            replace.responses = vec![
                (200, r.definition.to_string()),
                (201, r.definition.to_string()),
            ];
            item.operations.insert("put", replace);
        }
        _ => return,
    }
    paths.insert(format!("{item_path}/{sub}"), item);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_follow_upstream() {
        assert_eq!(group_id(""), "Core");
        assert_eq!(group_id("networking.k8s.io"), "Networking");
        assert_eq!(group_id("rbac.authorization.k8s.io"), "RbacAuthorization");
        assert_eq!(group_tag("rbac.authorization.k8s.io"), "rbacAuthorization");
        assert_eq!(group_tag(""), "core");
        let paths = paths_of("apis/apps/v1").unwrap();
        let scale = &paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert_eq!(
            scale.operations["patch"].id,
            "patchAppsV1NamespacedDeploymentScale"
        );
        let pods = paths_of("api/v1").unwrap();
        assert_eq!(
            pods["/api/v1/pods"].operations["get"].id,
            "listCoreV1PodForAllNamespaces"
        );
        assert_eq!(
            pods["/api/v1/watch/namespaces/{namespace}/pods"].operations["get"].id,
            "watchCoreV1NamespacedPodList"
        );
        assert_eq!(
            pods["/api/v1/namespaces/{namespace}/pods/{name}/eviction"].operations["post"].id,
            "createCoreV1NamespacedPodEviction"
        );
        assert_eq!(
            pods["/api/v1/namespaces/{name}/finalize"].operations["put"].id,
            "replaceCoreV1NamespaceFinalize"
        );
        assert_eq!(
            pods["/api/v1/namespaces"]
                .operations
                .get("delete")
                .map(|o| o.id.as_str()),
            None,
            "namespaces cannot be deleted as a collection"
        );
    }

    #[test]
    fn content_hash_is_stable() {
        assert_eq!(content_hash(b""), "6C62272E07BB014262B821756295C58D");
        assert_ne!(content_hash(b"a"), content_hash(b"b"));
    }
}
