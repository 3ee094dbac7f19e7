//! podgc and ttl-after-finished: terminated pods beyond the threshold, pods on vanished
//! nodes, and finished Jobs past their TTL are deleted.

use crate::common::{wait_until, Cluster, TIMEOUT};
use controller_manager::options::ControllerOptions;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn terminated_and_orphaned_pods_are_collected() {
    let mut c = Cluster::control_plane().await;
    let nodes: Api<Node> = Api::all(c.client.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "pi-1"}})).unwrap(),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let make = |name: String, node: &'static str| {
        let pods = pods.clone();
        async move {
            let pod = json!({"metadata": {"name": name}, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}});
            pods.create(
                &PostParams::default(),
                &serde_json::from_value(pod).unwrap(),
            )
            .await
            .unwrap();
        }
    };
    for i in 0..4 {
        let name = format!("done-{i}");
        make(name.clone(), "pi-1").await;
        let status = json!({"status": {"phase": "Succeeded"}});
        pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .unwrap();
    }
    make("running".into(), "pi-1").await;
    make("orphan".into(), "gone-node").await;

    let options = ControllerOptions {
        terminated_pod_gc_threshold: 2,
        ..ControllerOptions::default()
    };
    c.start_manager(&["podgc"], options).await;
    let left = wait_until(
        TIMEOUT,
        "two terminated pods and the orphan collected",
        || {
            let pods = pods.clone();
            async move {
                let names: Vec<String> = pods
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .filter_map(|p| p.metadata.name)
                    .collect();
                (names.len() == 3).then_some(names)
            }
        },
    )
    .await;
    // Creation order is the age order: the two oldest terminated pods went.
    assert!(
        left.contains(&"running".to_string()) && !left.contains(&"orphan".to_string()),
        "{left:?}"
    );
    assert_eq!(
        left.iter().filter(|n| n.starts_with("done-")).count(),
        2,
        "{left:?}"
    );
}

#[tokio::test]
async fn finished_jobs_are_deleted_after_their_ttl() {
    let c = Cluster::start(&["ttl-after-finished"]).await;
    let jobs: Api<Job> = Api::namespaced(c.client.clone(), "default");
    let job = json!({"metadata": {"name": "once"}, "spec": {"ttlSecondsAfterFinished": 1, "template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}});
    jobs.create(
        &PostParams::default(),
        &serde_json::from_value(job).unwrap(),
    )
    .await
    .unwrap();
    let now = Timestamp::now().to_string();
    let status = json!({"status": {"startTime": now, "completionTime": now, "succeeded": 1, "conditions": [
        {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
        {"type": "Complete", "status": "True", "lastTransitionTime": now}]}});
    jobs.patch_status("once", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    wait_until(TIMEOUT, "the finished job deleted", || {
        let jobs = jobs.clone();
        async move {
            match jobs.get_opt("once").await {
                Ok(None) => Some(()),
                Ok(Some(j)) => j.metadata.deletion_timestamp.map(|_| ()),
                Err(_) => None,
            }
        }
    })
    .await;
}
