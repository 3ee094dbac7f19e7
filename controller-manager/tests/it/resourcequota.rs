//! ResourceQuota end to end: the apiserver's admission refuses creates beyond a quota and
//! charges it; the resourcequota controller keeps `status.used` true to what exists.

use std::collections::BTreeMap;

use crate::common::{wait_until, Cluster, TIMEOUT};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ResourceQuota};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

const NS: &str = "default";

fn pod(name: &str, cpu: Option<&str>) -> Pod {
    let mut c = json!({"name": "c", "image": "registry.k8s.io/pause:3.10"});
    if let Some(cpu) = cpu {
        c["resources"] = json!({"requests": {"cpu": cpu}});
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"containers": [c]}}))
        .unwrap()
}

fn used(q: &ResourceQuota) -> BTreeMap<String, String> {
    q.status
        .as_ref()
        .and_then(|s| s.used.as_ref())
        .map(|u| u.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
        .unwrap_or_default()
}

async fn wait_used(api: &Api<ResourceQuota>, what: &str, want: &[(&str, &str)]) -> ResourceQuota {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    wait_until(TIMEOUT, what, || {
        let api = api.clone();
        let want = want.clone();
        async move {
            let q = api.get("compute").await.ok()?;
            let u = used(&q);
            want.iter().all(|(k, v)| u.get(k) == Some(v)).then_some(q)
        }
    })
    .await
}

fn forbidden_message(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => s.message,
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_limits_creates_and_tracks_usage() {
    let c = Cluster::start(&["resourcequota"]).await;
    let quotas: Api<ResourceQuota> = Api::namespaced(c.client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), NS);
    let maps: Api<ConfigMap> = Api::namespaced(c.client.clone(), NS);
    let pp = PostParams::default();
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "compute"},
        "spec": {"hard": {"pods": "2", "requests.cpu": "1", "configmaps": "2",
            "count/deployments.apps": "1"}},
    }))
    .unwrap();
    quotas.create(&pp, &quota).await.unwrap();
    let q = wait_used(
        &quotas,
        "usage computed",
        &[("pods", "0"), ("requests.cpu", "0"), ("configmaps", "0")],
    )
    .await;
    assert_eq!(
        q.status.unwrap().hard.unwrap()["pods"].0,
        "2",
        "status.hard mirrors spec.hard"
    );

    // Two pods fit; the admission charges them (and the controller's recount, which may
    // briefly lag behind its pod cache, settles on the same).
    pods.create(&pp, &pod("a", Some("400m"))).await.unwrap();
    pods.create(&pp, &pod("b", Some("400m"))).await.unwrap();
    wait_used(
        &quotas,
        "both pods charged",
        &[("pods", "2"), ("requests.cpu", "800m")],
    )
    .await;
    // A third exceeds `pods` (one slipping through an undercount is removed and tried again).
    let msg = wait_until(TIMEOUT, "a third pod refused", || {
        let pods = pods.clone();
        let pp = pp.clone();
        async move {
            match pods.create(&pp, &pod("c", Some("100m"))).await {
                Err(e) => Some(forbidden_message(e)),
                Ok(_) => {
                    pods.delete("c", &DeleteParams::default().grace_period(0))
                        .await
                        .ok()?;
                    None
                }
            }
        }
    })
    .await;
    assert_eq!(
        msg,
        "pods \"c\" is forbidden: exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2"
    );
    // A pod that does not state its cpu request cannot be charged.
    let msg = forbidden_message(pods.create(&pp, &pod("d", None)).await.unwrap_err());
    assert!(
        msg.ends_with("failed quota: compute: must specify requests.cpu for: c"),
        "{msg}"
    );

    // A finished pod gives its share back (the controller recomputes).
    pods.patch_status(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
    )
    .await
    .unwrap();
    wait_used(
        &quotas,
        "a's share released",
        &[("pods", "1"), ("requests.cpu", "400m")],
    )
    .await;
    pods.create(&pp, &pod("c", Some("600m"))).await.unwrap();
    wait_used(
        &quotas,
        "c charged",
        &[("pods", "2"), ("requests.cpu", "1")],
    )
    .await;
    // Now requests.cpu would go past 1. As upstream, the controller recounts from its
    // pod cache, which may not hold c yet and so briefly undercount what admission
    // charged: a pod slipping through that window is removed and the create tried again.
    let msg = wait_until(TIMEOUT, "a create past the quota refused", || {
        let pods = pods.clone();
        let pp = pp.clone();
        async move {
            match pods.create(&pp, &pod("e", Some("1m"))).await {
                Err(e) => Some(forbidden_message(e)),
                Ok(_) => {
                    pods.delete("e", &DeleteParams::default().grace_period(0))
                        .await
                        .ok()?;
                    None
                }
            }
        }
    })
    .await;
    assert!(msg.contains("exceeded quota: compute"), "{msg}");
    // Deleted pods give theirs back too.
    pods.delete("b", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    wait_used(
        &quotas,
        "b's share released",
        &[("pods", "1"), ("requests.cpu", "600m")],
    )
    .await;

    // Object counts, by legacy name and count/<resource>.<group>.
    for name in ["one", "two"] {
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        maps.create(&pp, &cm).await.unwrap();
    }
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "three"}})).unwrap();
    let msg = forbidden_message(maps.create(&pp, &cm).await.unwrap_err());
    assert!(msg.contains("limited: configmaps=2"), "{msg}");
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    c.api
        .kubectl_stdin(&["apply", "-f", "-"], Some(&deployment.to_string()));
    wait_used(
        &quotas,
        "deployment counted",
        &[("count/deployments.apps", "1")],
    )
    .await;
    let mut second = deployment.clone();
    second["metadata"]["name"] = json!("api");
    let out = c
        .api
        .kubectl_stdin(&["apply", "-f", "-"], Some(&second.to_string()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second deployment created");
    assert!(
        stderr.contains("exceeded quota: compute") && stderr.contains("count/deployments.apps=1"),
        "{stderr}"
    );
    // kubectl shows the usage.
    let table = c.api.kubectl_ok(&["get", "quota", "compute"]);
    assert!(table.contains("pods: 1/2"), "{table}");
}
