//! The etcd v3 implementation of [`Store`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, GetResponse, KvClient,
    LeaseClient, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchClient, WatchOptions,
};

use crate::error::{classify, from_etcd, Kind};
use crate::metrics::Metrics;
use crate::tls::EtcdTls;
use crate::watch::WatchState;
use crate::{Error, KeyValue, ListResult, Result, Store, WatchStream, WriteOptions};

/// The default key prefix, as upstream's `--etcd-prefix`.
pub const DEFAULT_PREFIX: &str = "/registry";

/// The default per-request timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

// Upstream kube-apiserver's etcd client keepalive (storagebackend/factory/etcd3.go):
// ping every 30s and give up 10s later, so a silently dead etcd breaks watches within
// ~40s instead of hanging them until the kernel's TCP timeout.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
// etcd-client limits responses to 4 MiB by default, which a list of a few hundred pods
// exceeds. Upstream's client allows math.MaxInt32 and leaves the limits to etcd.
const MAX_MESSAGE_SIZE: usize = i32::MAX as usize;
// How long to look for the compaction revision when a read fails as compacted.
const COMPACT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
// Writes with a time to live share an etcd lease while it is young (upstream's lease
// manager): a lease outlives its ttl by 5% of it, at most a minute, and serves writes
// for that long. An Event storm then costs one lease a minute, not one per Event.
const LEASE_REUSE_FRACTION: f64 = 0.05;
const LEASE_REUSE_MAX: Duration = Duration::from_secs(60);

/// How to reach etcd.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// etcd client URLs (`--etcd-servers`), e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// The key prefix (`--etcd-prefix`, default `/registry`); keys are stored as
    /// `{prefix}/{key}`. Leading and trailing slashes are normalised as upstream does.
    pub prefix: String,
    /// Timeout for each unary request and for establishing a watch;
    /// [`Duration::ZERO`] disables it.
    pub request_timeout: Duration,
    /// Where to register the `etcd_request_*` metrics; `None` records nothing.
    pub metrics: Option<prometheus::Registry>,
    /// CA and client certificate for `https://` endpoints (`--etcd-cafile`,
    /// `--etcd-certfile`, `--etcd-keyfile`).
    pub tls: EtcdTls,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".to_owned()],
            prefix: DEFAULT_PREFIX.to_owned(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            metrics: None,
            tls: EtcdTls::default(),
        }
    }
}

/// A [`Store`] backed by etcd v3.
///
/// Cheap to clone; clones share the connection and the metrics. Register metrics in a
/// given registry with one store only (and clone it), a second registration fails with
/// [`Error::Metrics`].
#[derive(Clone)]
pub struct EtcdStore {
    kv: KvClient,
    watch: WatchClient,
    lease: LeaseClient,
    /// The lease each time to live reuses, by ttl in seconds.
    leases: Arc<Mutex<HashMap<i64, ReusableLease>>>,
    /// The normalised prefix including its trailing slash, e.g. `/registry/`.
    root: Arc<str>,
    timeout: Duration,
    metrics: Option<Metrics>,
}

/// A granted lease and until when writes may attach to it.
#[derive(Clone, Copy, Debug)]
struct ReusableLease {
    id: i64,
    reuse_until: Instant,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("root", &self.root)
            .field("timeout", &self.timeout)
            .field("metrics", &self.metrics.is_some())
            .finish_non_exhaustive()
    }
}

/// A failed etcd request, before it is given the context of its operation.
enum Failure {
    Etcd(etcd_client::Error),
    Timeout(Duration),
}

impl Failure {
    fn kind(&self) -> Kind {
        match self {
            Failure::Etcd(err) => classify(err),
            Failure::Timeout(_) => Kind::Unavailable,
        }
    }

    fn into_error(self, operation: &'static str) -> Error {
        match self {
            Failure::Etcd(err) => from_etcd(err),
            Failure::Timeout(timeout) => Error::Timeout { operation, timeout },
        }
    }

    /// Maps a failed write of `key`, where etcd may refuse an oversized value.
    fn into_write_error(self, operation: &'static str, key: &str) -> Error {
        match self.kind() {
            Kind::TooLarge => Error::TooLarge {
                key: key.to_owned(),
            },
            _ => self.into_error(operation),
        }
    }
}

impl EtcdStore {
    /// Creates a store for the etcd cluster at `config.endpoints`.
    ///
    /// Connections are made lazily: this succeeds while etcd is still down, and requests
    /// fail with [`Error::Unavailable`] until it is up. Fails on an empty or malformed
    /// endpoint list, on TLS files that cannot be used, and when the metrics cannot be
    /// registered.
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        if config.endpoints.is_empty() {
            return Err(Error::InvalidConfig("no etcd endpoints given".to_owned()));
        }
        let mut options = ConnectOptions::new()
            .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
            .with_keep_alive_while_idle(true);
        if uses_tls(&config.endpoints, &config.tls)? {
            options = options.with_tls(config.tls.client_options()?);
        } else if !config.tls.is_empty() {
            // Upstream's client drops TLS for http:// servers too; say so, as the files
            // were likely meant to be used.
            tracing::warn!(
                endpoints = ?config.endpoints,
                "etcd TLS files are ignored: no etcd server is https://"
            );
        }
        if !config.request_timeout.is_zero() {
            options = options.with_connect_timeout(config.request_timeout);
        }
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(|err| match err {
                etcd_client::Error::InvalidUri(_) | etcd_client::Error::InvalidArgs(_) => {
                    Error::InvalidConfig(format!("etcd endpoints {:?}: {err}", config.endpoints))
                }
                err => from_etcd(err),
            })?;
        let metrics = config.metrics.as_ref().map(Metrics::register).transpose()?;
        Ok(Self {
            kv: client
                .kv_client()
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
            watch: client
                .watch_client()
                .max_decoding_message_size(MAX_MESSAGE_SIZE),
            lease: client.lease_client(),
            leases: Arc::default(),
            root: normalize_prefix(&config.prefix).into(),
            timeout: config.request_timeout,
            metrics,
        })
    }

    /// The put options of a write with `options`: a lease when it has a time to live.
    async fn put_options(&self, key: &str, options: WriteOptions) -> Result<Option<PutOptions>> {
        let Some(ttl) = options.ttl else {
            return Ok(None);
        };
        // etcd counts whole seconds; a key never lives shorter than asked.
        let seconds = i64::try_from(ttl.as_millis().div_ceil(1000))
            .unwrap_or(i64::MAX)
            .max(1);
        let now = Instant::now();
        let cached = lock(&self.leases)
            .get(&seconds)
            .filter(|lease| now <= lease.reuse_until)
            .map(|lease| lease.id);
        if let Some(id) = cached {
            return Ok(Some(PutOptions::new().with_lease(id)));
        }
        let reuse = Duration::from_secs(seconds as u64)
            .mul_f64(LEASE_REUSE_FRACTION)
            .min(LEASE_REUSE_MAX);
        let mut client = self.lease.clone();
        let granted = self
            .call(
                "grant",
                key,
                client.grant(seconds.saturating_add(reuse.as_secs() as i64), None),
            )
            .await
            .map_err(|failure| failure.into_error("grant"))?;
        lock(&self.leases).insert(
            seconds,
            ReusableLease {
                id: granted.id(),
                reuse_until: now + reuse,
            },
        );
        Ok(Some(PutOptions::new().with_lease(granted.id())))
    }

    /// Forgets the lease `options` attached after a failed write: etcd may have lost it
    /// (revoked, or expired while etcd was down), and the next write asks for a new one.
    fn forget_lease(&self, options: WriteOptions) {
        if options.ttl.is_some() {
            lock(&self.leases).clear();
        }
    }

    /// The normalised key prefix with its trailing slash, e.g. `/registry/`.
    pub fn prefix(&self) -> &str {
        &self.root
    }

    /// The etcd key of a relative key.
    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    /// Runs one etcd request with the request timeout, recording its metrics.
    async fn call<T>(
        &self,
        operation: &'static str,
        key: &str,
        request: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T, Failure> {
        let started = Instant::now();
        let result = if self.timeout.is_zero() {
            request.await.map_err(Failure::Etcd)
        } else {
            match tokio::time::timeout(self.timeout, request).await {
                Ok(result) => result.map_err(Failure::Etcd),
                Err(_) => Err(Failure::Timeout(self.timeout)),
            }
        };
        if let Some(metrics) = &self.metrics {
            metrics.observe(operation, key, started.elapsed(), result.is_err());
        }
        result
    }

    /// Runs an idempotent read like [`call`](Self::call), retrying once at once when
    /// etcd is unavailable.
    ///
    /// The first request after etcd restarted fails on the dead connection before
    /// anything is sent, and the client reconnects only after that; a read can safely
    /// absorb this. Writes are never retried: their outcome is unknown when the
    /// connection breaks.
    async fn read<T, F, Fut>(
        &self,
        operation: &'static str,
        key: &str,
        request: F,
    ) -> Result<T, Failure>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let attempts = async {
            match request().await {
                Err(err) if classify(&err) == Kind::Unavailable => {
                    tracing::debug!(operation, error = %err, "retrying etcd read");
                    request().await
                }
                result => result,
            }
        };
        self.call(operation, key, attempts).await
    }

    /// An etcd range request.
    fn range(
        &self,
        key: &str,
        options: Option<GetOptions>,
    ) -> impl Future<Output = std::result::Result<GetResponse, etcd_client::Error>> + 'static {
        let mut kv = self.kv.clone();
        let key = key.to_owned();
        async move { kv.get(key, options).await }
    }

    /// Converts a key/value from etcd.
    fn key_value(&self, kv: etcd_client::KeyValue) -> Result<KeyValue> {
        let create_revision = kv.create_revision();
        let mod_revision = kv.mod_revision();
        let (key, value) = kv.into_key_value();
        Ok(KeyValue {
            key: relative_key(&self.root, &key)?,
            value: Bytes::from(value),
            create_revision,
            mod_revision,
        })
    }

    /// The first key/value of a range response, if any.
    fn first(&self, mut response: GetResponse) -> Result<Option<KeyValue>> {
        response
            .take_kvs()
            .into_iter()
            .next()
            .map(|kv| self.key_value(kv))
            .transpose()
    }

    /// The revision etcd has compacted up to, found after a read at `revision` failed as
    /// compacted; 0 if it cannot be found out quickly.
    ///
    /// etcd's compaction error carries no revision, but a watch from a compacted revision
    /// is canceled with it, so open one and read its cancel response.
    async fn compacted_revision(&self, revision: i64) -> i64 {
        let mut client = self.watch.clone();
        let root = self.root.to_string();
        let probe = async move {
            let options = WatchOptions::new().with_start_revision(revision.max(1));
            let mut stream = client.watch(root, Some(options)).await.ok()?;
            while let Ok(Some(response)) = stream.message().await {
                if response.compact_revision() > 0 {
                    return Some(response.compact_revision());
                }
                if response.canceled() || !response.events().is_empty() {
                    return None;
                }
            }
            None
        };
        tokio::time::timeout(COMPACT_PROBE_TIMEOUT, probe)
            .await
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Maps a failed read or compaction at `revision`.
    async fn revision_error(
        &self,
        failure: Failure,
        operation: &'static str,
        revision: i64,
    ) -> Error {
        match failure.kind() {
            Kind::Compacted => Error::Compacted {
                requested: revision,
                compact_revision: self.compacted_revision(revision).await,
            },
            Kind::FutureRevision => Error::FutureRevision {
                requested: revision,
                current: self.current_revision().await.unwrap_or(0),
            },
            _ => failure.into_error(operation),
        }
    }
}

/// Locks a mutex, whose data stays usable even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether the etcd client must speak TLS to `endpoints`: some are `https://`, or some
/// name no scheme and TLS files are given (upstream's client decides the same way). A
/// client speaks TLS to all or none, so `http://` and `https://` cannot be mixed.
fn uses_tls(endpoints: &[String], tls: &EtcdTls) -> Result<bool> {
    let https = endpoints.iter().any(|e| e.starts_with("https://"))
        || (!tls.is_empty() && endpoints.iter().any(|e| !e.contains("://")));
    if https && endpoints.iter().any(|e| e.starts_with("http://")) {
        return Err(Error::InvalidConfig(format!(
            "etcd endpoints {endpoints:?}: http:// and https:// servers cannot be mixed"
        )));
    }
    Ok(https)
}

/// Normalises `--etcd-prefix` as upstream does (`path.Join("/", prefix)` plus a trailing
/// slash): `registry`, `/registry` and `/registry/` all become `/registry/`.
fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        format!("/{trimmed}/")
    }
}

/// The end of the etcd range holding every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Only 0xff bytes: the range extends to the end of the keyspace.
    vec![0]
}

/// The relative key of an etcd key under `root`.
pub(crate) fn relative_key(root: &str, key: &[u8]) -> Result<String> {
    std::str::from_utf8(key)
        .ok()
        .and_then(|key| key.strip_prefix(root))
        .map(str::to_owned)
        .ok_or_else(|| Error::InvalidKey {
            key: String::from_utf8_lossy(key).into_owned(),
        })
}

/// The header revision of a response.
fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<i64> {
    header
        .map(|header| header.revision())
        .ok_or(Error::MalformedResponse("response without header"))
}

/// The range response of the first operation of a transaction branch.
fn txn_get(response: &TxnResponse) -> Result<GetResponse> {
    match response.op_responses().into_iter().next() {
        Some(TxnOpResponse::Get(get)) => Ok(get),
        _ => Err(Error::MalformedResponse(
            "transaction without its range response",
        )),
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let full_key = self.full_key(key);
        let response = self
            .read("get", key, || self.range(&full_key, None))
            .await
            .map_err(|failure| failure.into_error("get"))?;
        self.first(response)
    }

    async fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        limit: i64,
        revision: Option<i64>,
    ) -> Result<ListResult> {
        let full_prefix = self.full_key(prefix);
        let end = prefix_end(full_prefix.as_bytes());
        let from = match start {
            Some(start) if start > prefix => self.full_key(start),
            _ => full_prefix,
        };
        let mut options = GetOptions::new().with_range(end);
        if limit > 0 {
            options = options.with_limit(limit);
        }
        let revision = revision.filter(|revision| *revision > 0);
        if let Some(revision) = revision {
            options = options.with_revision(revision);
        }
        let read = self.read("list", prefix, || self.range(&from, Some(options.clone())));
        let mut response = match read.await {
            Ok(response) => response,
            Err(failure) => {
                return Err(match revision {
                    Some(revision) => self.revision_error(failure, "list", revision).await,
                    None => failure.into_error("list"),
                })
            }
        };
        // The header carries the store's current revision even for reads in the past.
        let read_at = match revision {
            Some(revision) => revision,
            None => header_revision(response.header())?,
        };
        let more = response.more();
        // `count` is the number of keys in the whole requested range, ignoring the limit.
        let count = response.count();
        let items = response
            .take_kvs()
            .into_iter()
            .map(|kv| self.key_value(kv))
            .collect::<Result<Vec<_>>>()?;
        let remaining = if more {
            (count - items.len() as i64).max(0)
        } else {
            0
        };
        Ok(ListResult {
            items,
            revision: read_at,
            more,
            remaining,
        })
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        let full_prefix = self.full_key(prefix);
        let options = GetOptions::new()
            .with_range(prefix_end(full_prefix.as_bytes()))
            .with_count_only();
        let response = self
            .read("count", prefix, || {
                self.range(&full_prefix, Some(options.clone()))
            })
            .await
            .map_err(|failure| failure.into_error("count"))?;
        Ok(response.count())
    }

    async fn create_with(
        &self,
        key: &str,
        value: Bytes,
        options: WriteOptions,
    ) -> Result<KeyValue> {
        let full_key = self.full_key(key);
        let put = self.put_options(key, options).await?;
        let txn = Txn::new()
            .when([Compare::create_revision(
                full_key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(full_key, value.to_vec(), put)]);
        let mut kv = self.kv.clone();
        let response = self
            .call("create", key, kv.txn(txn))
            .await
            .map_err(|failure| {
                self.forget_lease(options);
                failure.into_write_error("create", key)
            })?;
        if !response.succeeded() {
            return Err(Error::AlreadyExists {
                key: key.to_owned(),
            });
        }
        let revision = header_revision(response.header())?;
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision: revision,
            mod_revision: revision,
        })
    }

    async fn update_with(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: i64,
        options: WriteOptions,
    ) -> Result<KeyValue> {
        let full_key = self.full_key(key);
        let put = self.put_options(key, options).await?;
        // An absent key has mod_revision 0, so also require existence: an update must
        // never create.
        let txn = Txn::new()
            .when([
                Compare::mod_revision(full_key.clone(), CompareOp::Equal, expected_mod_revision),
                Compare::version(full_key.clone(), CompareOp::Greater, 0),
            ])
            .and_then([
                // Keys only: the create revision is all that is needed from it.
                TxnOp::get(full_key.clone(), Some(GetOptions::new().with_keys_only())),
                TxnOp::put(full_key.clone(), value.to_vec(), put),
            ])
            .or_else([TxnOp::get(full_key, None)]);
        let mut kv = self.kv.clone();
        let response = self
            .call("update", key, kv.txn(txn))
            .await
            .map_err(|failure| {
                self.forget_lease(options);
                failure.into_write_error("update", key)
            })?;
        let current = self.first(txn_get(&response)?)?;
        if !response.succeeded() {
            return Err(match current {
                None => Error::NotFound {
                    key: key.to_owned(),
                },
                Some(current) => Error::Conflict {
                    key: key.to_owned(),
                    current: Some(current),
                },
            });
        }
        let revision = header_revision(response.header())?;
        let create_revision = current
            .map(|previous| previous.create_revision)
            .ok_or(Error::MalformedResponse("update without the previous key"))?;
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision,
            mod_revision: revision,
        })
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<i64>,
    ) -> Result<(KeyValue, i64)> {
        let full_key = self.full_key(key);
        let mut compares = vec![Compare::version(full_key.clone(), CompareOp::Greater, 0)];
        if let Some(expected) = expected_mod_revision {
            compares.push(Compare::mod_revision(
                full_key.clone(),
                CompareOp::Equal,
                expected,
            ));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then([TxnOp::delete(
                full_key.clone(),
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(full_key, None)]);
        let mut kv = self.kv.clone();
        let response = self
            .call("delete", key, kv.txn(txn))
            .await
            .map_err(|failure| failure.into_error("delete"))?;
        let not_found = || Error::NotFound {
            key: key.to_owned(),
        };
        if !response.succeeded() {
            return Err(match self.first(txn_get(&response)?)? {
                None => not_found(),
                Some(current) => Error::Conflict {
                    key: key.to_owned(),
                    current: Some(current),
                },
            });
        }
        let revision = header_revision(response.header())?;
        let deleted = match response.op_responses().into_iter().next() {
            Some(TxnOpResponse::Delete(mut deleted)) => deleted.take_prev_kvs(),
            _ => {
                return Err(Error::MalformedResponse(
                    "transaction without its delete response",
                ))
            }
        };
        let previous = deleted.into_iter().next().ok_or_else(not_found)?;
        Ok((self.key_value(previous)?, revision))
    }

    async fn watch_with(
        &self,
        prefix: &str,
        after_revision: i64,
        watch_options: crate::WatchOptions,
    ) -> Result<WatchStream> {
        let full_prefix = self.full_key(prefix);
        let mut options = WatchOptions::new()
            .with_range(prefix_end(full_prefix.as_bytes()))
            .with_start_revision(after_revision.saturating_add(1))
            .with_progress_notify();
        if watch_options.prev_values {
            options = options.with_prev_key();
        }
        // Wait for etcd to accept the watch, so connection problems surface here.
        let establish = || {
            let mut client = self.watch.clone();
            let full_prefix = full_prefix.clone();
            let options = options.clone();
            async move {
                let mut stream = client.watch(full_prefix, Some(options)).await?;
                let first = stream.message().await?;
                Ok((stream, first))
            }
        };
        let (stream, first) = self
            .read("watch", prefix, establish)
            .await
            .map_err(|failure| failure.into_error("watch"))?;
        let state = WatchState::new(stream, self.root.clone(), after_revision);
        Ok(state.into_stream(first))
    }

    async fn current_revision(&self) -> Result<i64> {
        let options = GetOptions::new().with_count_only();
        let response = self
            .read("current_revision", "", || {
                self.range(&self.root, Some(options.clone()))
            })
            .await
            .map_err(|failure| failure.into_error("current_revision"))?;
        header_revision(response.header())
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        let mut kv = self.kv.clone();
        match self.call("compact", "", kv.compact(revision, None)).await {
            Ok(_) => Ok(()),
            Err(failure) => Err(self.revision_error(failure, "compact", revision).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_normalised() {
        assert_eq!(normalize_prefix("/registry"), "/registry/");
        assert_eq!(normalize_prefix("registry/"), "/registry/");
        assert_eq!(normalize_prefix("/a/b/"), "/a/b/");
        assert_eq!(normalize_prefix(""), "/");
        assert_eq!(normalize_prefix("/"), "/");
    }

    #[test]
    fn tls_follows_the_endpoints_schemes() {
        let files = EtcdTls {
            ca_file: Some("/etc/kubernetes/pki/etcd/ca.crt".into()),
            ..EtcdTls::default()
        };
        let none = EtcdTls::default();
        let urls = |u: &[&str]| u.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(!uses_tls(&urls(&["http://127.0.0.1:2379"]), &files).unwrap());
        assert!(uses_tls(
            &urls(&["https://10.0.0.1:2379", "https://10.0.0.2:2379"]),
            &none
        )
        .unwrap());
        assert!(uses_tls(&urls(&["10.0.0.1:2379"]), &files).unwrap());
        assert!(!uses_tls(&urls(&["10.0.0.1:2379"]), &none).unwrap());
        let err = uses_tls(
            &urls(&["https://10.0.0.1:2379", "http://10.0.0.2:2379"]),
            &none,
        )
        .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
        assert!(err.to_string().contains("cannot be mixed"), "{err}");
    }

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn keys_are_made_relative() {
        assert_eq!(
            relative_key("/registry/", b"/registry/pods/default/nginx").ok(),
            Some("pods/default/nginx".to_owned())
        );
        assert!(matches!(
            relative_key("/registry/", b"/other/pods/x"),
            Err(Error::InvalidKey { .. })
        ));
        assert!(matches!(
            relative_key("/registry/", b"/registry/\xff"),
            Err(Error::InvalidKey { .. })
        ));
    }
}
