//! Key/revision storage for the apiserver.
//!
//! The [`Store`] trait is everything the apiserver needs from its backing store: reads at
//! a revision, paged lists, create-if-absent, compare-and-swap updates and deletes on a
//! key's `mod_revision`, watches from a revision, and compaction. It deals in keys,
//! opaque values and etcd revisions only; Kubernetes semantics (resource versions,
//! objects, selectors) live in the apiserver.
//!
//! [`EtcdStore`] is the etcd v3 implementation. Keys passed to and returned from the
//! trait are relative to the configured prefix (`--etcd-prefix`, `/registry` by default):
//! the relative key `pods/default/nginx` is stored in etcd as
//! `/registry/pods/default/nginx`, the layout upstream kube-apiserver uses.
//!
//! With the `testing` feature, [`testing::EtcdServer`] starts a throwaway etcd for tests.

mod error;
mod etcd;
mod metrics;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;

pub use error::{Error, Result};
pub use etcd::{EtcdConfig, EtcdStore, DEFAULT_PREFIX, DEFAULT_REQUEST_TIMEOUT};
pub use metrics::resource_type;
pub use tls::{EtcdTls, TlsError};

/// One key with its value and revisions, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key relative to the store's prefix, e.g. `pods/default/nginx`.
    pub key: String,
    /// The stored bytes, uninterpreted.
    pub value: Bytes,
    /// The revision at which the key was created (etcd `create_revision`).
    pub create_revision: i64,
    /// The revision of the last write to the key (etcd `mod_revision`); the apiserver's
    /// `resourceVersion` of the object.
    pub mod_revision: i64,
}

/// One page of a [`Store::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListResult {
    /// The keys of this page, in key order.
    pub items: Vec<KeyValue>,
    /// The etcd revision the list was read at: the requested revision, or the store's
    /// revision at the time of the read when none was requested. Continue a paged list
    /// at this revision to get a consistent snapshot.
    pub revision: i64,
    /// Whether more keys follow this page.
    pub more: bool,
    /// How many keys follow this page (0 when `more` is false).
    pub remaining: i64,
}

/// A change seen by a [`Store::watch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created or updated.
    Put {
        /// The key's new value and revisions; `kv.mod_revision` is the event's revision.
        kv: KeyValue,
        /// The value before this write; `None` when the key was created (or when etcd
        /// has already compacted the previous value).
        prev: Option<KeyValue>,
    },
    /// A key was deleted.
    Delete {
        /// The deleted key, relative to the prefix.
        key: String,
        /// The revision of the delete.
        mod_revision: i64,
        /// The value before the delete (`None` only when etcd had compacted it).
        prev: Option<KeyValue>,
    },
    /// No events for the watched keys up to and including `revision`: every event with
    /// a revision `<= revision` has been delivered. The apiserver turns these into watch
    /// bookmarks. Sent when etcd's watch progress notification fires.
    Progress {
        /// The store revision the watch has caught up to.
        revision: i64,
    },
}

impl WatchEvent {
    /// The revision this event brings the watcher to.
    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Put { kv, .. } => kv.mod_revision,
            WatchEvent::Delete { mod_revision, .. } => *mod_revision,
            WatchEvent::Progress { revision } => *revision,
        }
    }

    /// The key the event is about (`None` for progress notifications).
    pub fn key(&self) -> Option<&str> {
        match self {
            WatchEvent::Put { kv, .. } => Some(&kv.key),
            WatchEvent::Delete { key, .. } => Some(key),
            WatchEvent::Progress { .. } => None,
        }
    }
}

/// The stream returned by [`Store::watch`].
pub type WatchStream = BoxStream<'static, Result<WatchEvent>>;

/// Key/revision storage: everything the apiserver asks of etcd.
///
/// All keys and prefixes are relative to the store's prefix. A `prefix` argument is a
/// plain string prefix of relative keys: pass `pods/` (with the slash) for all pods, so
/// that `podtemplates/...` does not match. Revisions are etcd revisions, shared by all
/// keys of one etcd cluster.
/// How a watch is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchOptions {
    /// Include each event's previous value (`prev` of [`WatchEvent`]); costs etcd a read
    /// of the old revision per event.
    pub prev_values: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions { prev_values: true }
    }
}

/// How a write is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Delete the key once this long has passed since the write (an etcd lease), as
    /// upstream stores Events (`--event-ttl`) and the apiservers' endpoint leases. A key
    /// may live up to 5% (at most a minute) longer: writes close together share a lease.
    /// `None`: the key stays until it is deleted.
    pub ttl: Option<Duration>,
}

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The key's current value, or `None` if it does not exist.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Keys under `prefix` (relative), in key order, starting at `start` (inclusive;
    /// `None` = from the prefix start), at most `limit` (0 = no limit), read at
    /// `revision` (`None` = latest; `Some(r)` = consistent snapshot at `r`,
    /// [`Error::Compacted`] if `r` is compacted, [`Error::FutureRevision`] if `r` is
    /// newer than the store; `Some(0)` means latest, as in etcd).
    ///
    /// To continue after a page, pass the last key plus `"\0"` as `start` and the page's
    /// [`ListResult::revision`] as `revision`.
    async fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        limit: i64,
        revision: Option<i64>,
    ) -> Result<ListResult>;

    /// Number of keys under `prefix` (for `apiserver_storage_objects`).
    async fn count(&self, prefix: &str) -> Result<i64>;

    /// Creates the key only if it is absent (an etcd transaction on
    /// `create_revision == 0`). Returns the new [`KeyValue`] with its revisions, or
    /// [`Error::AlreadyExists`].
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        self.create_with(key, value, WriteOptions::default()).await
    }

    /// [`Store::create`] with options (a time to live).
    async fn create_with(&self, key: &str, value: Bytes, options: WriteOptions)
        -> Result<KeyValue>;

    /// Compare-and-swap on `mod_revision`. Returns the new [`KeyValue`];
    /// [`Error::NotFound`] if the key is absent, [`Error::Conflict`] with the current
    /// value if its `mod_revision` differs from `expected_mod_revision`.
    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: i64,
    ) -> Result<KeyValue> {
        self.update_with(key, value, expected_mod_revision, WriteOptions::default())
            .await
    }

    /// [`Store::update`] with options: a time to live counts from this write; without
    /// one the key stays (an earlier time to live no longer applies).
    async fn update_with(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: i64,
        options: WriteOptions,
    ) -> Result<KeyValue>;

    /// Deletes the key, if `expected_mod_revision` is given only when its `mod_revision`
    /// matches. Returns the deleted [`KeyValue`] and the revision of the delete;
    /// [`Error::NotFound`] if absent, [`Error::Conflict`] with the current value if the
    /// revision differs.
    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<i64>,
    ) -> Result<(KeyValue, i64)>;

    /// Events for keys under `prefix` with revision `> after_revision` (etcd
    /// `start_revision = after_revision + 1`), previous values included, interleaved with
    /// [`WatchEvent::Progress`] notifications.
    ///
    /// Returns once etcd has accepted the watch. The stream yields
    /// `Err(`[`Error::Compacted`]`)` and ends if `after_revision + 1` has been compacted
    /// (or the watcher falls behind compaction), and yields an error and ends if the
    /// connection breaks; re-establish from the last revision seen. Dropping the stream
    /// cancels the etcd watch.
    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream> {
        self.watch_with(prefix, after_revision, WatchOptions::default())
            .await
    }

    /// [`Store::watch`] with options: a watcher that keeps its own copy of every value
    /// (the apiserver's watch cache) asks etcd not to read and send previous values.
    async fn watch_with(
        &self,
        prefix: &str,
        after_revision: i64,
        options: WatchOptions,
    ) -> Result<WatchStream>;

    /// The store's current revision.
    async fn current_revision(&self) -> Result<i64>;

    /// Compacts history up to `revision`: reads and watches at revisions below it fail
    /// with [`Error::Compacted`] afterwards. Compacting an already compacted revision
    /// yields [`Error::Compacted`], a revision newer than the store
    /// [`Error::FutureRevision`].
    async fn compact(&self, revision: i64) -> Result<()>;
}

#[async_trait::async_trait]
impl<S: Store + ?Sized> Store for Arc<S> {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        (**self).get(key).await
    }

    async fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        limit: i64,
        revision: Option<i64>,
    ) -> Result<ListResult> {
        (**self).list(prefix, start, limit, revision).await
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        (**self).count(prefix).await
    }

    async fn create_with(
        &self,
        key: &str,
        value: Bytes,
        options: WriteOptions,
    ) -> Result<KeyValue> {
        (**self).create_with(key, value, options).await
    }

    async fn update_with(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: i64,
        options: WriteOptions,
    ) -> Result<KeyValue> {
        (**self)
            .update_with(key, value, expected_mod_revision, options)
            .await
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<i64>,
    ) -> Result<(KeyValue, i64)> {
        (**self).delete(key, expected_mod_revision).await
    }

    async fn watch_with(
        &self,
        prefix: &str,
        after_revision: i64,
        options: WatchOptions,
    ) -> Result<WatchStream> {
        (**self).watch_with(prefix, after_revision, options).await
    }

    async fn current_revision(&self) -> Result<i64> {
        (**self).current_revision().await
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        (**self).compact(revision).await
    }
}
