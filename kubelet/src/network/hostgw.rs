//! Keeps the node's host-gw routes and masquerade rule in step with the cluster's Nodes
//! (what flannel's host-gw backend does from its node subnet watch): a kube-runtime
//! reflector over all Nodes; whenever it changes, this node's pod CIDR changes, or the
//! resync period passes, one idempotent reconcile computes the routes to the other
//! Nodes' podCIDRs and the masquerade table from the whole cached set and applies the
//! difference. Nothing runs before the first complete list, so a restart never deletes
//! routes for nodes not yet seen. Routes and the table stay when the kubelet stops, as
//! pods keep running without it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use tokio::sync::watch;

use component_base::shutdown::Shutdown;

use super::masquerade::{self, Nftables};
use super::routes::{self, Peer, RouteTable};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Routes(#[from] routes::Error),
    #[error("masquerade: {0}")]
    Masquerade(#[from] masquerade::Error),
}

/// What one reconcile did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub plan: routes::Plan,
    /// Route changes that failed (logged).
    pub failed: usize,
    /// Whether the nftables table was (re)written.
    pub wrote_table: bool,
}

/// The host-gw routes and masquerade rule of one node.
pub struct HostGw {
    pub node_name: String,
    pub routes: Arc<dyn RouteTable>,
    pub nftables: Arc<dyn Nftables>,
    /// The nftables table (`inet`), [`masquerade::TABLE`] unless tests say otherwise.
    pub table: String,
    /// The pod CIDR the node status manager settled on (`--pod-cidr` until the Node has
    /// one), used while this Node's own object has none.
    pub pod_cidr: watch::Receiver<Option<IpNet>>,
    /// How often everything is re-applied even with no change (repairs a route or table
    /// someone removed).
    pub resync_period: Duration,
    /// The last warnings about skipped peers: each is logged once while it lasts.
    warned: BTreeSet<String>,
    /// The table script last applied.
    applied: Option<String>,
}

impl HostGw {
    pub fn new(
        node_name: &str,
        routes: Arc<dyn RouteTable>,
        nftables: Arc<dyn Nftables>,
        pod_cidr: watch::Receiver<Option<IpNet>>,
    ) -> HostGw {
        HostGw {
            node_name: node_name.to_owned(),
            routes,
            nftables,
            table: masquerade::TABLE.to_owned(),
            pod_cidr,
            resync_period: Duration::from_secs(60),
            warned: BTreeSet::new(),
            applied: None,
        }
    }

    /// Brings routes and the masquerade table in line with `nodes` (all Nodes). `force`
    /// re-applies the table even if its script did not change.
    pub async fn reconcile(&mut self, nodes: &[Arc<Node>], force: bool) -> Result<Outcome, Error> {
        let peers: Vec<Peer> = nodes.iter().map(|n| Peer::from_node(n)).collect();
        let own_cidrs: Vec<IpNet> = match peers.iter().find(|p| p.name == self.node_name) {
            Some(own) if !own.pod_cidrs.is_empty() => own.pod_cidrs.clone(),
            _ => (*self.pod_cidr.borrow()).into_iter().collect(),
        };

        let local = self.routes.local_addresses().await?;
        let (desired, skips) = routes::desired_routes(&peers, &self.node_name, &own_cidrs, &local);
        let skips: BTreeSet<String> = skips.iter().map(ToString::to_string).collect();
        for s in skips.difference(&self.warned) {
            tracing::warn!("{s}");
        }
        self.warned = skips;

        let installed = self.routes.owned_routes().await?;
        let plan = routes::plan(&desired, &installed);
        let mut failed = 0;
        for r in &plan.delete {
            match self.routes.delete(r).await {
                Ok(()) => tracing::info!(route = %r, "removed the route to a node's pods"),
                Err(e) => {
                    failed += 1;
                    tracing::warn!(error = %e, "route not removed");
                }
            }
        }
        for r in &plan.replace {
            match self.routes.replace(r).await {
                Ok(()) => tracing::info!(route = %r, "a node's address changed: route replaced"),
                Err(e) => {
                    failed += 1;
                    tracing::warn!(error = %e, "route not replaced");
                }
            }
        }
        for r in &plan.add {
            match self.routes.add(r).await {
                Ok(()) => tracing::info!(route = %r, "added a route to a node's pods"),
                Err(e) => {
                    failed += 1;
                    tracing::warn!(error = %e, "route not added (a route to that destination that is not the kubelet's is left alone)");
                }
            }
        }

        let mut wrote_table = false;
        if !own_cidrs.is_empty() {
            let cluster: Vec<IpNet> = peers.iter().flat_map(|p| p.pod_cidrs.clone()).collect();
            let script = masquerade::ruleset(&self.table, &own_cidrs, &cluster);
            if force || self.applied.as_deref() != Some(script.as_str()) {
                self.applied = None;
                self.nftables.apply(&script).await?;
                tracing::debug!(table = %self.table, "wrote the masquerade table");
                self.applied = Some(script);
                wrote_table = true;
            }
        }
        Ok(Outcome {
            plan,
            failed,
            wrote_table,
        })
    }

    /// Watches Nodes and reconciles until shutdown.
    pub async fn run(mut self, client: Client, mut shutdown: Shutdown) {
        let (store, writer) = reflector::store::<Node>();
        let nodes = watcher::watcher(Api::<Node>::all(client), watcher::Config::default())
            .default_backoff()
            // Only podCIDRs and addresses are read: the rest of a Node (images, managed
            // fields) would cost a Pi's memory once per node.
            .modify(|n| {
                n.metadata.managed_fields = None;
                if let Some(status) = n.status.as_mut() {
                    status.images = None;
                }
            });
        let mut events = reflector::reflector(writer, nodes).boxed();
        let mut resync = tokio::time::interval(self.resync_period);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pod_cidr = self.pod_cidr.clone();
        let mut synced = false;
        loop {
            let mut force = false;
            tokio::select! {
                () = shutdown.signaled() => return,
                event = events.next() => match event {
                    // The store holds the whole list only once the list is done.
                    Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => continue,
                    Some(Ok(watcher::Event::InitDone)) => synced = true,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "watching nodes");
                        continue;
                    }
                    None => return,
                },
                changed = pod_cidr.changed() => {
                    if changed.is_err() {
                        // The status manager is gone: shutting down.
                        return;
                    }
                }
                _ = resync.tick() => force = true,
            }
            if !synced {
                continue;
            }
            // Events that are already here are folded into this one reconcile.
            while let Some(Some(event)) = events.next().now_or_never() {
                if let Err(e) = event {
                    tracing::warn!(error = %e, "watching nodes");
                }
            }
            self.reconcile_logged(&store, force).await;
        }
    }

    async fn reconcile_logged(&mut self, store: &Store<Node>, force: bool) {
        match self.reconcile(&store.state(), force).await {
            Ok(outcome) if outcome.failed > 0 => {
                tracing::warn!(
                    failed = outcome.failed,
                    "some routes are not as wanted; retrying at the next resync"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "syncing the pod network routes and masquerade"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use routes::Route;

    /// A routing table in memory that records every change.
    #[derive(Default)]
    struct FakeRoutes {
        local: Vec<IpNet>,
        routes: Mutex<Vec<Route>>,
        calls: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl RouteTable for FakeRoutes {
        async fn local_addresses(&self) -> routes::Result<Vec<IpNet>> {
            Ok(self.local.clone())
        }
        async fn owned_routes(&self) -> routes::Result<Vec<Route>> {
            Ok(self.routes.lock().clone())
        }
        async fn add(&self, route: &Route) -> routes::Result<()> {
            self.calls.lock().push(format!("add {route}"));
            self.routes.lock().push(route.clone());
            Ok(())
        }
        async fn replace(&self, route: &Route) -> routes::Result<()> {
            self.calls.lock().push(format!("replace {route}"));
            let mut routes = self.routes.lock();
            routes.retain(|r| r.dst != route.dst);
            routes.push(route.clone());
            Ok(())
        }
        async fn delete(&self, route: &Route) -> routes::Result<()> {
            self.calls.lock().push(format!("delete {route}"));
            self.routes.lock().retain(|r| r != route);
            Ok(())
        }
    }

    #[derive(Default)]
    struct FakeNft {
        scripts: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl Nftables for FakeNft {
        async fn apply(&self, script: &str) -> Result<(), masquerade::Error> {
            self.scripts.lock().push(script.to_owned());
            Ok(())
        }
    }

    fn node(name: &str, cidr: Option<&str>, ip: &str) -> Arc<Node> {
        let mut spec = serde_json::json!({});
        if let Some(c) = cidr {
            spec = serde_json::json!({"podCIDR": c, "podCIDRs": [c]});
        }
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "spec": spec,
                "status": {"addresses": [{"type": "InternalIP", "address": ip}]}
            }))
            .unwrap(),
        )
    }

    #[tokio::test]
    async fn routes_follow_the_nodes() {
        let fake = Arc::new(FakeRoutes {
            local: vec!["192.168.1.11/24".parse().unwrap()],
            // A stale route of ours from before a restart.
            routes: Mutex::new(vec![Route {
                dst: "10.244.9.0/24".parse().unwrap(),
                gateway: "192.168.1.19".parse().unwrap(),
            }]),
            ..Default::default()
        });
        let nft = Arc::new(FakeNft::default());
        let (_tx, rx) = watch::channel(None);
        let mut gw = HostGw::new("pi-1", fake.clone(), nft.clone(), rx);

        let mut nodes = vec![
            node("pi-1", Some("10.244.1.0/24"), "192.168.1.11"),
            node("pi-2", Some("10.244.2.0/24"), "192.168.1.12"),
            node("pi-3", None, "192.168.1.13"),
        ];
        let out = gw.reconcile(&nodes, false).await.unwrap();
        assert!(out.wrote_table);
        assert_eq!(
            *fake.calls.lock(),
            [
                "delete 10.244.9.0/24 via 192.168.1.19",
                "add 10.244.2.0/24 via 192.168.1.12"
            ]
        );
        let script = nft.scripts.lock()[0].clone();
        assert!(
            script.contains("ip saddr 10.244.1.0/24 ip daddr != @cluster-pod-cidrs-v4 masquerade")
        );
        assert!(
            script.contains("elements = { 10.244.1.0/24, 10.244.2.0/24 }"),
            "{script}"
        );

        // Nothing changed: no route call, no table write.
        fake.calls.lock().clear();
        let out = gw.reconcile(&nodes, false).await.unwrap();
        assert!(out.plan.is_empty() && !out.wrote_table);
        assert!(fake.calls.lock().is_empty());

        // pi-3 gets a CIDR, pi-2 a new address.
        nodes[1] = node("pi-2", Some("10.244.2.0/24"), "192.168.1.22");
        nodes[2] = node("pi-3", Some("10.244.3.0/24"), "192.168.1.13");
        let out = gw.reconcile(&nodes, false).await.unwrap();
        assert!(out.wrote_table);
        assert_eq!(
            *fake.calls.lock(),
            [
                "replace 10.244.2.0/24 via 192.168.1.22",
                "add 10.244.3.0/24 via 192.168.1.13"
            ]
        );

        // pi-2 is deleted; a resync re-applies the table.
        fake.calls.lock().clear();
        nodes.remove(1);
        let out = gw.reconcile(&nodes, true).await.unwrap();
        assert!(out.wrote_table);
        assert_eq!(
            *fake.calls.lock(),
            ["delete 10.244.2.0/24 via 192.168.1.22"]
        );
        assert_eq!(nft.scripts.lock().len(), 3);
    }

    #[tokio::test]
    async fn the_flag_cidr_counts_until_the_node_has_one() {
        let fake = Arc::new(FakeRoutes {
            local: vec!["192.168.1.11/24".parse().unwrap()],
            ..Default::default()
        });
        let nft = Arc::new(FakeNft::default());
        let (tx, rx) = watch::channel(None);
        let mut gw = HostGw::new("pi-1", fake.clone(), nft.clone(), rx);
        let nodes = vec![node("pi-1", None, "192.168.1.11")];
        // No pod CIDR at all: no masquerade rule to write yet.
        let out = gw.reconcile(&nodes, false).await.unwrap();
        assert!(!out.wrote_table);
        tx.send(Some("10.244.7.0/24".parse().unwrap())).unwrap();
        let out = gw.reconcile(&nodes, false).await.unwrap();
        assert!(out.wrote_table);
        assert!(nft.scripts.lock()[0].contains("ip saddr 10.244.7.0/24"));
    }
}
