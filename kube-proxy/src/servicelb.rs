//! ServiceLB, the bare-metal load balancer k3s ships (its `svccontroller`), without the
//! DaemonSet: `type: LoadBalancer` Services (with no `loadBalancerClass`) get the nodes'
//! InternalIPs as `status.loadBalancer.ingress` — only the nodes labelled
//! `svccontroller.k3s.cattle.io/enablelb=true` when any node carries that label — and
//! every kube-proxy then serves those addresses on the Service's ports through its
//! LoadBalancer ingress path. It runs inside kube-proxy (`--enable-service-lb`) and only
//! the holder of the Lease `kube-system/pikube-servicelb` writes, so one node does.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use component_base::leader_election::{default_identity, LeaderElectionConfig, LeaderElector};
use component_base::shutdown::Shutdown;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::Api;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::Notify;
use tracing::{info, warn, Instrument};

/// The label that restricts ServiceLB to some nodes (k3s's).
pub const ENABLE_LB_LABEL: &str = "svccontroller.k3s.cattle.io/enablelb";
pub const LEASE_NAME: &str = "pikube-servicelb";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct NodeInfo {
    internal_ips: Vec<String>,
    enabled: bool,
}

#[derive(Default)]
struct State {
    nodes: HashMap<String, NodeInfo>,
    /// LoadBalancer Services of ours → their current ingress IPs.
    services: HashMap<(String, String), Vec<String>>,
}

impl State {
    /// The ingress every LoadBalancer Service should have.
    fn ingress(&self) -> Vec<String> {
        let any_enabled = self.nodes.values().any(|n| n.enabled);
        let ips: BTreeSet<&String> = self
            .nodes
            .values()
            .filter(|n| !any_enabled || n.enabled)
            .flat_map(|n| &n.internal_ips)
            .collect();
        ips.into_iter().cloned().collect()
    }
}

fn node_info(node: &Node) -> NodeInfo {
    let internal_ips = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|a| {
            a.iter()
                .filter(|a| a.type_ == "InternalIP")
                .map(|a| a.address.clone())
                .collect()
        })
        .unwrap_or_default();
    let enabled = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ENABLE_LB_LABEL))
        .is_some_and(|v| v == "true");
    NodeInfo {
        internal_ips,
        enabled,
    }
}

/// Ours: `type: LoadBalancer` without a `loadBalancerClass`.
fn lb_ingress(svc: &Service) -> Option<Vec<String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer") || spec.load_balancer_class.is_some() {
        return None;
    }
    Some(
        svc.status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|i| i.iter().filter_map(|i| i.ip.clone()).collect())
            .unwrap_or_default(),
    )
}

/// Runs the controller until `shutdown`: campaigns for the Lease, and while leading keeps
/// every LoadBalancer Service's ingress at the nodes' addresses.
pub async fn run(client: kube::Client, registry: prometheus::Registry, shutdown: Shutdown) {
    let config = LeaderElectionConfig {
        lease_name: LEASE_NAME.into(),
        lease_namespace: "kube-system".into(),
        identity: default_identity(),
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
    };
    let elector = LeaderElector::new(client.clone(), config, &registry);
    loop {
        let Some(leadership) = elector.acquire(&shutdown).await else {
            return;
        };
        info!("leading ServiceLB");
        let mut stop = shutdown.clone();
        tokio::select! {
            () = lead(client.clone()) => {}
            () = leadership.lost() => warn!("ServiceLB leadership lost"),
            () = stop.signaled() => {
                leadership.release().await;
                return;
            }
        }
    }
}

async fn lead(client: kube::Client) {
    let state = Arc::new(Mutex::new(State::default()));
    let changed = Arc::new(Notify::new());
    let nodes = {
        let (state, changed) = (state.clone(), changed.clone());
        let mut stream = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .boxed();
        async move {
            let mut relist: Option<HashMap<String, NodeInfo>> = None;
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                let mut s = state.lock();
                match event {
                    watcher::Event::Init => relist = Some(HashMap::new()),
                    watcher::Event::InitApply(n) => {
                        if let Some(r) = relist.as_mut() {
                            r.insert(n.metadata.name.clone().unwrap_or_default(), node_info(&n));
                        }
                    }
                    watcher::Event::InitDone => {
                        if let Some(r) = relist.take() {
                            s.nodes = r;
                        }
                    }
                    watcher::Event::Apply(n) => {
                        s.nodes
                            .insert(n.metadata.name.clone().unwrap_or_default(), node_info(&n));
                    }
                    watcher::Event::Delete(n) => {
                        s.nodes
                            .remove(n.metadata.name.as_deref().unwrap_or_default());
                    }
                }
                drop(s);
                changed.notify_one();
            }
        }
    };
    let services = {
        let (state, changed) = (state.clone(), changed.clone());
        let mut stream = watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .boxed();
        async move {
            let mut relist: Option<HashMap<(String, String), Vec<String>>> = None;
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                let mut s = state.lock();
                let key = |svc: &Service| {
                    (
                        svc.metadata.namespace.clone().unwrap_or_default(),
                        svc.metadata.name.clone().unwrap_or_default(),
                    )
                };
                match event {
                    watcher::Event::Init => relist = Some(HashMap::new()),
                    watcher::Event::InitApply(svc) => {
                        if let (Some(r), Some(ingress)) = (relist.as_mut(), lb_ingress(&svc)) {
                            r.insert(key(&svc), ingress);
                        }
                    }
                    watcher::Event::InitDone => {
                        if let Some(r) = relist.take() {
                            s.services = r;
                        }
                    }
                    watcher::Event::Apply(svc) => match lb_ingress(&svc) {
                        Some(ingress) => {
                            s.services.insert(key(&svc), ingress);
                        }
                        None => {
                            s.services.remove(&key(&svc));
                        }
                    },
                    watcher::Event::Delete(svc) => {
                        s.services.remove(&key(&svc));
                    }
                }
                drop(s);
                changed.notify_one();
            }
        }
    };
    let reconcile = async {
        loop {
            changed.notified().await;
            let (want, stale): (Vec<String>, Vec<(String, String)>) = {
                let s = state.lock();
                let want = s.ingress();
                let stale = s
                    .services
                    .iter()
                    .filter(|(_, have)| **have != want)
                    .map(|(k, _)| k.clone())
                    .collect();
                (want, stale)
            };
            for (ns, name) in stale {
                let api: Api<Service> = Api::namespaced(client.clone(), &ns);
                let ingress: Vec<_> = want
                    .iter()
                    .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
                    .collect();
                let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
                match api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        info!(service = %format!("{ns}/{name}"), ingress = ?want, "set LoadBalancer ingress")
                    }
                    Err(e) => {
                        warn!(service = %format!("{ns}/{name}"), error = %e, "setting LoadBalancer ingress failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        changed.notify_one();
                    }
                }
            }
        }
    };
    tokio::join!(
        nodes.instrument(tracing::info_span!("servicelb-nodes")),
        services.instrument(tracing::info_span!("servicelb-services")),
        reconcile,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(yaml: &str) -> Node {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn labelled_nodes_win_when_any_is_labelled() {
        let mut s = State::default();
        s.nodes.insert(
            "a".into(),
            node_info(&node("metadata: {name: a}\nstatus: {addresses: [{type: InternalIP, address: 192.168.1.10}, {type: Hostname, address: a}]}")),
        );
        s.nodes.insert(
            "b".into(),
            node_info(&node("metadata: {name: b}\nstatus: {addresses: [{type: InternalIP, address: 192.168.1.11}]}")),
        );
        assert_eq!(s.ingress(), ["192.168.1.10", "192.168.1.11"]);
        s.nodes.insert(
            "b".into(),
            node_info(&node(&format!("metadata: {{name: b, labels: {{{ENABLE_LB_LABEL}: 'true'}}}}\nstatus: {{addresses: [{{type: InternalIP, address: 192.168.1.11}}]}}"))),
        );
        assert_eq!(s.ingress(), ["192.168.1.11"]);
    }

    #[test]
    fn only_classless_load_balancers_are_ours() {
        let svc = |yaml: &str| -> Service { serde_yaml::from_str(yaml).unwrap() };
        assert_eq!(
            lb_ingress(&svc("metadata: {name: a}\nspec: {type: LoadBalancer}\nstatus: {loadBalancer: {ingress: [{ip: 192.0.2.1}]}}")),
            Some(vec!["192.0.2.1".to_string()])
        );
        assert_eq!(
            lb_ingress(&svc("metadata: {name: a}\nspec: {type: NodePort}")),
            None
        );
        assert_eq!(
            lb_ingress(&svc("metadata: {name: a}\nspec: {type: LoadBalancer, loadBalancerClass: example.com/lb}")),
            None
        );
    }
}
