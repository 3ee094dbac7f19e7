//! Feeding the zone (upstream: CoreDNS's `kubernetes` plugin's informers): watches of
//! every Service and every EndpointSlice, headless ones included (kube-proxy's own
//! watches leave those out), each event folded into the [`Zone`] at once so a deleted
//! Service stops resolving as soon as its delete event arrives. The objects themselves
//! are not kept.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use parking_lot::RwLock;
use tokio::sync::watch;
use tracing::warn;

use super::records::Zone;

/// How a watched kind changes the zone.
pub trait Indexed:
    Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static
{
    fn apply(&self, z: &mut Zone);
    fn delete(&self, z: &mut Zone);
    fn relist_started(z: &mut Zone);
    fn relist_done(z: &mut Zone);
}

impl Indexed for Service {
    fn apply(&self, z: &mut Zone) {
        z.apply_service(self);
    }
    fn delete(&self, z: &mut Zone) {
        z.delete_service(self);
    }
    fn relist_started(z: &mut Zone) {
        z.relist_services_started();
    }
    fn relist_done(z: &mut Zone) {
        z.relist_services_done();
    }
}

impl Indexed for EndpointSlice {
    fn apply(&self, z: &mut Zone) {
        z.apply_slice(self);
    }
    fn delete(&self, z: &mut Zone) {
        z.delete_slice(self);
    }
    fn relist_started(z: &mut Zone) {
        z.relist_slices_started();
    }
    fn relist_done(z: &mut Zone) {
        z.relist_slices_done();
    }
}

/// Folds watch events of `K` into `zone`, marking `changed` after each.
pub async fn index<K>(api: Api<K>, zone: Arc<RwLock<Zone>>, changed: watch::Sender<()>)
where
    K: Indexed,
    K::DynamicType: Default,
{
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                warn!(error = %e, "watch failed; retrying");
                continue;
            }
        };
        {
            let mut z = zone.write();
            match &event {
                watcher::Event::Init => K::relist_started(&mut z),
                watcher::Event::InitApply(o) | watcher::Event::Apply(o) => o.apply(&mut z),
                watcher::Event::Delete(o) => o.delete(&mut z),
                watcher::Event::InitDone => K::relist_done(&mut z),
            }
        }
        if !matches!(event, watcher::Event::InitApply(_) | watcher::Event::Init) {
            changed.send_replace(());
        }
    }
}
