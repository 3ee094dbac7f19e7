//! nodeipam: every node gets its own pod CIDR from --cluster-cidr, kept across restarts.

use std::collections::HashSet;

use crate::common::{wait_until, Cluster, TIMEOUT};
use controller_manager::options::ControllerOptions;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use serde_json::json;

async fn create_node(api: &Api<Node>, name: &str, cidr: Option<&str>) {
    let mut node = json!({"metadata": {"name": name}});
    if let Some(c) = cidr {
        node["spec"] = json!({"podCIDR": c, "podCIDRs": [c]});
    }
    api.create(
        &PostParams::default(),
        &serde_json::from_value(node).unwrap(),
    )
    .await
    .unwrap();
}

async fn cidr_of(api: &Api<Node>, name: &str) -> String {
    wait_until(TIMEOUT, &format!("{name} has a pod CIDR"), || {
        let api = api.clone();
        async move { api.get(name).await.ok()?.spec?.pod_cidr }
    })
    .await
}

#[tokio::test]
async fn pod_cidrs_never_overlap_across_restarts() {
    let options = ControllerOptions {
        cluster_cidr: "10.42.0.0/16".parse().unwrap(),
        ..ControllerOptions::default()
    };
    let mut c = Cluster::start_with(&["nodeipam"], options.clone()).await;
    let nodes: Api<Node> = Api::all(c.client.clone());
    let mut seen = HashSet::new();
    for name in ["pi-1", "pi-2", "pi-3"] {
        create_node(&nodes, name, None).await;
    }
    for name in ["pi-1", "pi-2", "pi-3"] {
        let cidr = cidr_of(&nodes, name).await;
        assert!(
            cidr.starts_with("10.42.") && cidr.ends_with("/24"),
            "{cidr}"
        );
        assert!(seen.insert(cidr.clone()), "{cidr} given twice");
        let spec = nodes.get(name).await.unwrap().spec.unwrap();
        assert_eq!(spec.pod_cidrs, Some(vec![cidr]));
    }

    // While the manager is down a node arrives with its own CIDR, and one without.
    c.stop_manager().await;
    create_node(&nodes, "pi-4", Some("10.42.7.0/24")).await;
    create_node(&nodes, "pi-5", None).await;
    c.start_manager(&["nodeipam"], options).await;
    assert_eq!(cidr_of(&nodes, "pi-4").await, "10.42.7.0/24");
    let fifth = cidr_of(&nodes, "pi-5").await;
    assert!(
        seen.insert(fifth.clone()) && fifth != "10.42.7.0/24",
        "{fifth} overlaps"
    );
    for name in ["pi-1", "pi-2", "pi-3"] {
        assert!(
            seen.contains(&cidr_of(&nodes, name).await),
            "kept across the restart"
        );
    }
}
