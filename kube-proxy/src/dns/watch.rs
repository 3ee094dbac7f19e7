//! Feeding the zone (upstream: CoreDNS's `kubernetes` plugin's informers): watches of
//! every Service and every EndpointSlice, headless ones included (kube-proxy's own
//! watches leave those out), each event folded into the [`Zone`] at once so a deleted
//! Service stops resolving as soon as its delete event arrives. The objects themselves
//! are not kept.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use kube::{Api, Resource};
use parking_lot::RwLock;
use tokio::sync::watch;

use super::records::Zone;
use crate::feed::Fed;

/// Folds watch events of `K` (every object: no selector) into `zone`, marking `changed`
/// after each.
pub async fn index<K>(api: Api<K>, zone: Arc<RwLock<Zone>>, changed: watch::Sender<()>)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
    Zone: Fed<K>,
{
    crate::feed::watch(api, watcher::Config::default(), |event| {
        if crate::feed::fold(&mut *zone.write(), event) {
            changed.send_replace(());
        }
    })
    .await;
}

impl Fed<Service> for Zone {
    fn apply(&mut self, s: &Service) {
        self.apply_service(s);
    }
    fn delete(&mut self, s: &Service) {
        self.delete_service(s);
    }
    fn relist_started(&mut self) {
        self.relist_services_started();
    }
    fn relist_done(&mut self) {
        self.relist_services_done();
    }
}

impl Fed<EndpointSlice> for Zone {
    fn apply(&mut self, s: &EndpointSlice) {
        self.apply_slice(s);
    }
    fn delete(&mut self, s: &EndpointSlice) {
        self.delete_slice(s);
    }
    fn relist_started(&mut self) {
        self.relist_slices_started();
    }
    fn relist_done(&mut self) {
        self.relist_slices_done();
    }
}
