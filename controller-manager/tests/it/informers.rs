//! The shared informers' sync signal wakes every waiter, however many wait on one kind and
//! whatever polled the readiness check meanwhile (kube-runtime's
//! `Store::wait_until_ready` woke only the last poller: the real daemon's `/readyz`
//! stranded the node lifecycle controller).

use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use tokio::task::JoinSet;

use crate::common::{Cluster, TIMEOUT};
use controller_manager::informers::Informers;

#[tokio::test]
async fn every_waiter_wakes_when_a_kind_has_listed() {
    let c = Cluster::control_plane().await;
    let nodes: Api<Node> = Api::all(c.client.clone());
    for name in ["pi-1", "pi-2"] {
        let node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
    let informers = Informers::new(c.client.clone());
    let store = informers.store::<Node>();
    let mut waiters = JoinSet::new();
    for _ in 0..4 {
        let synced = informers.synced_signal::<Node>();
        let store = store.clone();
        // Each waiter has polled (and parked) before the informer starts.
        let mut wait = Box::pin(async move {
            synced.wait().await;
            store.state().len()
        });
        assert!(
            (&mut wait).now_or_never().is_none(),
            "synced before starting"
        );
        waiters.spawn(wait);
        tokio::task::yield_now().await;
    }
    // The readiness check, polled as `/readyz` polls it, in between.
    assert!(!informers.synced());
    let mut tasks = JoinSet::new();
    informers.start(&mut tasks);
    let woken = tokio::time::timeout(TIMEOUT, async {
        let mut seen = Vec::new();
        while let Some(listed) = waiters.join_next().await {
            seen.push(listed.expect("a waiter panicked"));
        }
        seen
    })
    .await
    .expect("every waiter wakes once the nodes have listed");
    assert_eq!(woken, [2, 2, 2, 2], "each waiter saw the whole list");
    assert!(informers.synced());
    assert!(store.get(&ObjectRef::new("pi-1")).is_some());
    // A waiter arriving later returns at once.
    tokio::time::timeout(
        Duration::from_secs(1),
        informers.synced_signal::<Node>().wait(),
    )
    .await
    .expect("a late waiter returns at once");
}
