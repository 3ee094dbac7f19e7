//! disruption: a PodDisruptionBudget's status follows its pods' readiness, and the
//! apiserver's eviction subresource honours it.

use crate::common::{wait_until, Cluster, TIMEOUT};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, EvictParams, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn budgets_count_healthy_pods_and_limit_evictions() {
    let mut c = Cluster::start(&["disruption"]).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    for i in 0..3 {
        let name = format!("web-{i}");
        let pod = json!({"metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"nodeName": "pi-1", "containers": [{"name": "c", "image": "busybox"}]}});
        pods.create(
            &PostParams::default(),
            &serde_json::from_value(pod).unwrap(),
        )
        .await
        .unwrap();
        let now = Timestamp::now().to_string();
        let status = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
        pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .unwrap();
    }
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(c.client.clone(), "default");
    let pdb = json!({"metadata": {"name": "web"}, "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}});
    pdbs.create(
        &PostParams::default(),
        &serde_json::from_value(pdb).unwrap(),
    )
    .await
    .unwrap();
    let allowed = |n: i32, healthy: i32| {
        let pdbs = pdbs.clone();
        async move {
            wait_until(
                TIMEOUT,
                &format!("disruptionsAllowed {n}, currentHealthy {healthy}"),
                || {
                    let pdbs = pdbs.clone();
                    async move {
                        let s = pdbs.get("web").await.ok()?.status?;
                        (s.disruptions_allowed == n && s.current_healthy == healthy).then_some(s)
                    }
                },
            )
            .await
        }
    };
    let status = allowed(1, 3).await;
    assert_eq!((status.desired_healthy, status.expected_pods), (2, 3));
    let condition = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "DisruptionAllowed")
        .unwrap();
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("True", "SufficientPods")
    );

    // One eviction fits the budget; the apiserver takes it out of disruptionsAllowed.
    pods.evict("web-0", &EvictParams::default()).await.unwrap();
    // A pod that stops being ready leaves no room: evictions are refused with 429.
    let now = Timestamp::now().to_string();
    let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}]}});
    pods.patch_status("web-1", &PatchParams::default(), &Patch::Merge(not_ready))
        .await
        .unwrap();
    allowed(0, 1).await;
    // kube's default client retries 429s for minutes; ask once, as kubectl does.
    let kubeconfig = kube::config::Kubeconfig::read_from(c.api.kubeconfig_path()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    config.default_retry = false;
    let once: Api<Pod> = Api::namespaced(kube::Client::try_from(config).unwrap(), "default");
    let err = once
        .evict("web-2", &EvictParams::default())
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => assert_eq!(s.code, 429, "{s:?}"),
        other => panic!("{other}"),
    }
    c.stop_manager().await;
}
