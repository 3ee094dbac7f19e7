//! One watch loop for the caches kube-proxy keeps instead of the API objects (upstream
//! keeps informers' stores; the change tracker and the DNS zone keep only what they
//! need): every event of a kube-runtime watcher of `K` is folded into a cache that
//! implements [`Fed<K>`], and the caller is told after each event that is not part of a
//! re-list still in progress.

use futures::StreamExt;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use tracing::warn;

/// A cache fed by a watch of `K`.
pub trait Fed<K> {
    fn apply(&mut self, object: &K);
    fn delete(&mut self, object: &K);
    /// A (re-)list begins: what it does not list again is gone at [`Fed::relist_done`].
    fn relist_started(&mut self);
    fn relist_done(&mut self);
}

/// Folds one event into `cache`; whether the cache may have changed in a way readers
/// should see (false while a re-list is still arriving).
pub fn fold<K, C: Fed<K> + ?Sized>(cache: &mut C, event: &watcher::Event<K>) -> bool {
    match event {
        watcher::Event::Init => {
            cache.relist_started();
            false
        }
        watcher::Event::InitApply(o) => {
            cache.apply(o);
            false
        }
        watcher::Event::Apply(o) => {
            cache.apply(o);
            true
        }
        watcher::Event::Delete(o) => {
            cache.delete(o);
            true
        }
        watcher::Event::InitDone => {
            cache.relist_done();
            true
        }
    }
}

/// Watches `K` with `config` (retrying with backoff) and hands every event to `on_event`,
/// which folds it (see [`fold`]) under whatever lock guards its cache.
pub async fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    mut on_event: impl FnMut(&watcher::Event<K>),
) where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    let mut stream = watcher(api, config).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => on_event(&event),
            Err(e) => warn!(error = %e, "watch failed; retrying"),
        }
    }
}
