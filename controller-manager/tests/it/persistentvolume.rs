//! The persistentvolume-binder controller: claims bind to pre-provisioned volumes, and
//! volumes follow their claims through Released and their reclaim policy.

use crate::common::{wait_until, Cluster, TIMEOUT};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

const NS: &str = "default";

fn volume(name: &str, size: &str, policy: &str) -> PersistentVolume {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": policy,
            "hostPath": {"path": format!("/var/lib/pikube-test/{name}")},
        },
    }))
    .unwrap()
}

fn claim(name: &str, size: &str) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}},
        },
    }))
    .unwrap()
}

fn volume_phase(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

async fn wait_volume(
    api: &Api<PersistentVolume>,
    name: &str,
    what: &str,
    check: impl Fn(&PersistentVolume) -> bool,
) -> PersistentVolume {
    wait_until(TIMEOUT, what, || {
        let api = api.clone();
        let name = name.to_string();
        let check = &check;
        async move {
            api.get_opt(&name)
                .await
                .ok()
                .flatten()
                .filter(|pv| check(pv))
        }
    })
    .await
}

async fn wait_bound(api: &Api<PersistentVolumeClaim>, name: &str) -> PersistentVolumeClaim {
    wait_until(TIMEOUT, &format!("claim {name} Bound"), || {
        let api = api.clone();
        let name = name.to_string();
        async move {
            api.get_opt(&name)
                .await
                .ok()
                .flatten()
                .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_bind_to_the_smallest_fitting_volume_and_release_by_policy() {
    let c = Cluster::start(&["persistentvolume-binder"]).await;
    let pvs: Api<PersistentVolume> = Api::all(c.client.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), NS);
    let pp = PostParams::default();
    for (name, size, policy) in [
        ("big", "10Gi", "Retain"),
        ("small", "1Gi", "Retain"),
        ("tiny", "100Mi", "Retain"),
        ("scratch", "2Gi", "Delete"),
    ] {
        pvs.create(&pp, &volume(name, size, policy)).await.unwrap();
    }
    for name in ["big", "small", "tiny", "scratch"] {
        wait_volume(&pvs, name, "volumes Available", |pv| {
            volume_phase(pv) == "Available"
        })
        .await;
    }

    // 500Mi: "small" is the smallest that fits.
    let data = pvcs.create(&pp, &claim("data", "500Mi")).await.unwrap();
    let bound = wait_bound(&pvcs, "data").await;
    assert_eq!(
        bound.spec.as_ref().unwrap().volume_name.as_deref(),
        Some("small")
    );
    let status = bound.status.unwrap();
    assert_eq!(status.capacity.unwrap()["storage"].0, "1Gi");
    assert_eq!(status.access_modes.unwrap(), ["ReadWriteOnce"]);
    assert_eq!(
        bound.metadata.annotations.as_ref().unwrap()["pv.kubernetes.io/bind-completed"],
        "yes"
    );
    let small = wait_volume(&pvs, "small", "small Bound", |pv| {
        volume_phase(pv) == "Bound"
    })
    .await;
    let r = small.spec.unwrap().claim_ref.unwrap();
    assert_eq!(
        (r.namespace.as_deref(), r.name.as_deref(), r.uid),
        (Some(NS), Some("data"), data.uid())
    );
    let table = c.api.kubectl_ok(&["get", "pv", "small"]);
    assert!(
        table.contains("Bound") && table.contains("default/data"),
        "{table}"
    );

    // Nothing fits 50Gi: Pending with an event, until a volume that fits appears.
    pvcs.create(&pp, &claim("huge", "50Gi")).await.unwrap();
    let events: Api<Event> = Api::namespaced(c.client.clone(), NS);
    wait_until(TIMEOUT, "FailedBinding event", || {
        let events = events.clone();
        async move {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("FailedBinding")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("huge")
                })
        }
    })
    .await;
    let huge = pvcs.get("huge").await.unwrap();
    assert_eq!(
        huge.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );
    pvs.create(&pp, &volume("vast", "64Gi", "Retain"))
        .await
        .unwrap();
    let huge = wait_bound(&pvcs, "huge").await;
    assert_eq!(huge.spec.unwrap().volume_name.as_deref(), Some("vast"));

    // A claim may name its volume.
    let mut named = claim("named", "1Mi");
    named.spec.as_mut().unwrap().volume_name = Some("big".into());
    pvcs.create(&pp, &named).await.unwrap();
    wait_bound(&pvcs, "named").await;
    wait_volume(&pvs, "big", "big Bound to named", |pv| {
        volume_phase(pv) == "Bound"
            && pv
                .spec
                .as_ref()
                .unwrap()
                .claim_ref
                .as_ref()
                .unwrap()
                .name
                .as_deref()
                == Some("named")
    })
    .await;

    // Retain: the claim deleted, its volume is Released and keeps its claimRef.
    pvcs.delete("data", &DeleteParams::default()).await.unwrap();
    wait_volume(&pvs, "small", "small Released", |pv| {
        volume_phase(pv) == "Released"
    })
    .await;
    // A new claim does not get a Released volume.
    pvcs.create(&pp, &claim("again", "500Mi")).await.unwrap();
    let again = wait_bound(&pvcs, "again").await;
    assert_eq!(again.spec.unwrap().volume_name.as_deref(), Some("scratch"));

    // Delete: the claim deleted, its volume is deleted.
    pvcs.delete("again", &DeleteParams::default())
        .await
        .unwrap();
    wait_until(TIMEOUT, "scratch deleted", || {
        let pvs = pvs.clone();
        async move {
            match pvs.get_opt("scratch").await {
                Ok(None) => Some(()),
                _ => None,
            }
        }
    })
    .await;
    // "tiny" was never wanted: still Available.
    assert_eq!(volume_phase(&pvs.get("tiny").await.unwrap()), "Available");
}

#[tokio::test]
async fn a_claim_whose_volume_is_deleted_is_lost() {
    let c = Cluster::start(&["persistentvolume-binder"]).await;
    let pvs: Api<PersistentVolume> = Api::all(c.client.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), NS);
    let pp = PostParams::default();
    pvs.create(&pp, &volume("disk", "1Gi", "Retain"))
        .await
        .unwrap();
    pvcs.create(&pp, &claim("data", "1Gi")).await.unwrap();
    wait_bound(&pvcs, "data").await;
    pvs.delete("disk", &DeleteParams::default()).await.unwrap();
    wait_until(TIMEOUT, "claim Lost", || {
        let api = pvcs.clone();
        async move {
            api.get_opt("data")
                .await
                .ok()
                .flatten()
                .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Lost"))
        }
    })
    .await;
}
