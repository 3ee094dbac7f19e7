//! nodeipam: every node gets a pod CIDR (`spec.podCIDR`/`podCIDRs`) carved from
//! `--cluster-cidr` at `--node-cidr-mask-size`, never overlapping another node's, with
//! `--allocate-node-cidrs` (upstream's range allocator). What the Node objects say is the
//! only record, so restarts reuse it: allocation reads every node's CIDR first.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;
use tracing::info;

use super::Context;

pub const NAME: &str = "nodeipam";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("setting the pod CIDR of node {node}: {source}")]
    Patch {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("no pod CIDR is left in {0}")]
    Exhausted(IpNet),
}

struct State {
    ctx: Context,
    nodes: Store<Node>,
    /// CIDRs this process assigned whose Node update the informer has not shown yet.
    pending: Mutex<HashMap<String, IpNet>>,
}

pub fn start(ctx: &Context) -> BoxFuture<'static, ()> {
    if !ctx.options.allocate_node_cidrs {
        return futures::future::ready(()).boxed();
    }
    let nodes = ctx.informers.subscribe::<Node>();
    let store = ctx.informers.store::<Node>();
    let state = Arc::new(State {
        ctx: ctx.clone(),
        nodes: store.clone(),
        pending: Mutex::new(HashMap::new()),
    });
    // One allocation at a time: two nodes must never pick the same free range.
    let config = kube::runtime::controller::Config::default().concurrency(1);
    Controller::for_shared_stream(nodes, store)
        .with_config(config)
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .boxed()
}

fn node_cidrs(node: &Node) -> Vec<IpNet> {
    let spec = node.spec.as_ref();
    let mut out: Vec<IpNet> = spec
        .and_then(|s| s.pod_cidrs.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.parse().ok())
        .collect();
    if let Some(c) = spec
        .and_then(|s| s.pod_cidr.as_ref())
        .and_then(|c| c.parse().ok())
    {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// The first subnet of `cluster` at `mask` that overlaps none of `used`.
pub fn first_free(cluster: IpNet, mask: u8, used: &HashSet<IpNet>) -> Option<IpNet> {
    let subnets = cluster.subnets(mask).ok()?;
    subnets.into_iter().find(|candidate| {
        !used
            .iter()
            .any(|u| u.contains(candidate) || candidate.contains(u))
    })
}

async fn reconcile(node: Arc<Node>, state: Arc<State>) -> Result<Action, Error> {
    let metrics = state.ctx.metrics.clone();
    metrics.observe(NAME, allocate(node, state)).await
}

async fn allocate(node: Arc<Node>, state: Arc<State>) -> Result<Action, Error> {
    let name = node.name_any();
    // Every node's CIDR must be known before choosing one.
    state.ctx.informers.synced_signal::<Node>().wait().await;
    let current = state
        .nodes
        .get(&kube::runtime::reflector::ObjectRef::new(&name));
    let node = current.unwrap_or(node);
    if !node_cidrs(&node).is_empty() {
        state.pending.lock().remove(&name);
        return Ok(Action::await_change());
    }
    let cluster = state.ctx.options.cluster_cidr;
    let mask = state.ctx.options.node_cidr_mask_size;
    let chosen = {
        let mut pending = state.pending.lock();
        match pending.get(&name) {
            Some(c) => Some(*c),
            None => {
                let mut used: HashSet<IpNet> = state
                    .nodes
                    .state()
                    .iter()
                    .flat_map(|n| node_cidrs(n))
                    .collect();
                used.extend(pending.values().copied());
                let c = first_free(cluster, mask, &used);
                if let Some(c) = c {
                    pending.insert(name.clone(), c);
                }
                c
            }
        }
    };
    let Some(cidr) = chosen else {
        let recorder = state.ctx.recorder("cidrAllocator");
        let _ = recorder
            .publish(
                &Event {
                    type_: EventType::Normal,
                    reason: "CIDRNotAvailable".into(),
                    note: Some(format!("Node {name} status is now: CIDRNotAvailable")),
                    action: "Allocating".into(),
                    secondary: None,
                },
                &node.object_ref(&()),
            )
            .await;
        return Err(Error::Exhausted(cluster));
    };
    let api: Api<Node> = Api::all(state.ctx.client.clone());
    let patch = json!({"spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]}});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => {
            info!(node = %name, %cidr, "allocated the pod CIDR");
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => {
            state.pending.lock().remove(&name);
            Ok(Action::await_change())
        }
        Err(source) => {
            state.pending.lock().remove(&name);
            Err(Error::Patch { node: name, source })
        }
    }
}

fn error_policy(_node: Arc<Node>, _error: &Error, _state: Arc<State>) -> Action {
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_range_overlapping_nothing_is_chosen() {
        let cluster: IpNet = "10.42.0.0/16".parse().unwrap();
        let mut used = HashSet::new();
        assert_eq!(
            first_free(cluster, 24, &used).unwrap().to_string(),
            "10.42.0.0/24"
        );
        used.insert("10.42.0.0/24".parse().unwrap());
        used.insert("10.42.1.0/25".parse().unwrap());
        assert_eq!(
            first_free(cluster, 24, &used).unwrap().to_string(),
            "10.42.2.0/24"
        );
        // A bigger foreign range blocks everything inside it.
        used.insert("10.42.0.0/17".parse().unwrap());
        assert_eq!(
            first_free(cluster, 24, &used).unwrap().to_string(),
            "10.42.128.0/24"
        );
        let tiny: IpNet = "10.0.0.0/24".parse().unwrap();
        let full: HashSet<IpNet> = [tiny].into();
        assert!(first_free(tiny, 24, &full).is_none());
    }
}
