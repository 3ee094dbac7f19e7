//! The ConfigMaps and Secrets pods' volumes read, cached with a TTL (upstream's
//! cache-based `configmap`/`secret` managers, `configMapAndSecretChangeDetectionStrategy:
//! Cache`): a periodic resync reads them through the cache, so a node with many pods
//! asks the apiserver at most once per TTL for each object, and a change reaches the
//! pods within the TTL plus the resync period. A pod's first setup reads fresh (as
//! upstream invalidates on pod registration), and a missing object is never cached, so a
//! pod waiting for one sees it as soon as it exists.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::projected::{self, Source};
use super::Error;

type Data = Arc<BTreeMap<String, Vec<u8>>>;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    secret: bool,
    namespace: String,
    name: String,
}

/// ConfigMap and Secret data by namespace and name, each kept for `ttl`.
pub struct ObjectCache {
    ttl: Duration,
    entries: Mutex<HashMap<Key, (Instant, Data)>>,
}

impl ObjectCache {
    pub fn new(ttl: Duration) -> ObjectCache {
        ObjectCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The object's data (`None`: it does not exist); `fresh` skips the cache.
    pub async fn get(
        &self,
        client: &kube::Client,
        source: Source,
        namespace: &str,
        name: &str,
        fresh: bool,
    ) -> Result<Option<Data>, Error> {
        let key = Key {
            secret: matches!(source, Source::Secret),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        let now = Instant::now();
        if !fresh {
            if let Some((at, data)) = self.entries.lock().get(&key) {
                if now.duration_since(*at) < self.ttl {
                    return Ok(Some(data.clone()));
                }
            }
        }
        let read = match source {
            Source::ConfigMap => projected::config_map(client, namespace, name).await?,
            Source::Secret => projected::secret(client, namespace, name).await?,
        };
        let mut entries = self.entries.lock();
        // Objects no pod read for a long time go.
        let horizon = self.ttl * 10;
        entries.retain(|_, (at, _)| now.duration_since(*at) < horizon);
        match read {
            Some(data) => {
                let data = Arc::new(data);
                entries.insert(key, (now, data.clone()));
                Ok(Some(data))
            }
            None => {
                entries.remove(&key);
                Ok(None)
            }
        }
    }
}
