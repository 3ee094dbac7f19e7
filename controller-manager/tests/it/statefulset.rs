//! The statefulset controller against a real apiserver + etcd. No kubelet: the tests mark
//! pods Running and Ready through the status subresource, by hand where the order
//! matters, or from a watch that plays the kubelet and logs what it saw in order.

use std::sync::Arc;

use crate::common::{wait_until, Cluster, TIMEOUT};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::ResourceExt;
use parking_lot::Mutex;
use serde_json::json;

const NS: &str = "default";
const REVISION_LABEL: &str = "controller-revision-hash";

fn stateful_set(replicas: i32, extra: serde_json::Value) -> StatefulSet {
    let mut v = json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "serviceName": "nginx",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "registry.k8s.io/nginx-slim:0.8"}]},
            },
        },
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

async fn create(c: &Cluster, set: StatefulSet) -> StatefulSet {
    Api::<StatefulSet>::namespaced(c.client.clone(), NS)
        .create(&PostParams::default(), &set)
        .await
        .unwrap()
}

async fn patch_set(c: &Cluster, patch: serde_json::Value) {
    Api::<StatefulSet>::namespaced(c.client.clone(), NS)
        .patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

/// The pods' names, sorted.
async fn pod_names(c: &Cluster) -> Vec<String> {
    let mut names: Vec<String> = Api::<Pod>::namespaced(c.client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect();
    names.sort();
    names
}

async fn wait_pod_names(c: &Cluster, want: &[&str]) {
    wait_until(TIMEOUT, &format!("pods {want:?}"), || async {
        (pod_names(c).await == want).then_some(())
    })
    .await
}

async fn get_pod(c: &Cluster, name: &str) -> Pod {
    Api::<Pod>::namespaced(c.client.clone(), NS)
        .get(name)
        .await
        .unwrap()
}

/// Plays the kubelet for one pod: it runs and is ready (since now).
async fn set_ready(c: &Cluster, name: &str) -> kube::Result<Pod> {
    let now = jiff::Timestamp::now().to_string();
    Api::<Pod>::namespaced(c.client.clone(), NS)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
            ]}})),
        )
        .await
}

/// Waits until the set's status, for its current generation, satisfies `check`.
async fn wait_status(
    c: &Cluster,
    what: &str,
    check: impl Fn(&StatefulSetStatus) -> bool,
) -> StatefulSet {
    let api: Api<StatefulSet> = Api::namespaced(c.client.clone(), NS);
    wait_until(TIMEOUT, what, || async {
        let set = api.get("web").await.ok()?;
        let s = set.status.as_ref()?;
        (s.observed_generation == set.metadata.generation && check(s)).then_some(set)
    })
    .await
}

fn is_ready(p: &Pod) -> bool {
    let s = p.status.as_ref();
    s.and_then(|s| s.phase.as_deref()) == Some("Running")
        && s.and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A kubelet for every pod: each pod that shows up is made Running and Ready. Logs, in
/// the order it happened, `ready <pod> <revision>` (before marking it) and
/// `deleted <pod>`.
struct Kubelet {
    log: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Kubelet {
    fn start(c: &Cluster) -> Kubelet {
        let log = Arc::new(Mutex::new(Vec::new()));
        let api: Api<Pod> = Api::namespaced(c.client.clone(), NS);
        let task = {
            let log = log.clone();
            tokio::spawn(async move {
                let mut events = std::pin::pin!(watcher(api.clone(), watcher::Config::default()));
                while let Some(e) = events.next().await {
                    match e {
                        Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                            if p.metadata.deletion_timestamp.is_some() || is_ready(&p) {
                                continue;
                            }
                            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                            if matches!(phase, Some("Failed" | "Succeeded")) {
                                continue;
                            }
                            let revision = p.labels().get(REVISION_LABEL).cloned();
                            log.lock().push(format!(
                                "ready {} {}",
                                p.name_any(),
                                revision.unwrap_or_default()
                            ));
                            let now = jiff::Timestamp::now().to_string();
                            // (Gone already if it was deleted meanwhile.)
                            let _ = api
                                .patch_status(
                                    &p.name_any(),
                                    &PatchParams::default(),
                                    &Patch::Merge(json!({"status": {"phase": "Running",
                                        "conditions": [{"type": "Ready", "status": "True",
                                            "lastTransitionTime": now}]}})),
                                )
                                .await;
                        }
                        Ok(watcher::Event::Delete(p)) => {
                            log.lock().push(format!("deleted {}", p.name_any()));
                        }
                        _ => {}
                    }
                }
            })
        };
        Kubelet { log, task }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().clone()
    }

    fn deletions(&self) -> Vec<String> {
        self.log()
            .iter()
            .filter_map(|l| l.strip_prefix("deleted ").map(str::to_string))
            .collect()
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The notes of the set's events with `reason`, from statefulset-controller.
async fn event_notes(c: &Cluster, reason: &str) -> Vec<String> {
    Api::<Event>::namespaced(c.client.clone(), NS)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.reporting_controller.as_deref() == Some("statefulset-controller")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web")
        })
        .filter_map(|e| e.note)
        .collect()
}

// kubectl blocks a thread while the in-process apiserver answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_ready_creates_one_by_one_and_scales_down_from_the_highest() {
    let c = Cluster::start(&["statefulset"]).await;
    let set = create(&c, stateful_set(3, json!({}))).await;

    // web-0 only, until it is Running and Ready (the controller has seen it: status).
    for (i, name) in ["web-0", "web-1", "web-2"].iter().enumerate() {
        let want = (i + 1) as i32;
        wait_status(&c, &format!("status.replicas {want}"), |s| {
            s.replicas == want && s.ready_replicas == Some(want - 1)
        })
        .await;
        let expected: Vec<String> = (0..=i).map(|o| format!("web-{o}")).collect();
        assert_eq!(pod_names(&c).await, expected);
        set_ready(&c, name).await.unwrap();
    }
    let set_now = wait_status(&c, "3 ready replicas", |s| {
        s.ready_replicas == Some(3) && s.available_replicas == Some(3)
    })
    .await;

    // Stable identity, owned by the set, at the set's revision.
    let status = set_now.status.unwrap();
    let revision = status.update_revision.clone().unwrap();
    assert_eq!(status.current_revision.as_deref(), Some(revision.as_str()));
    assert_eq!(status.current_replicas, Some(3));
    assert_eq!(status.updated_replicas, Some(3));
    assert_eq!(status.collision_count, Some(0));
    let pod = get_pod(&c, "web-1").await;
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("web-1"));
    assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
    let labels = pod.labels();
    assert_eq!(labels["statefulset.kubernetes.io/pod-name"], "web-1");
    assert_eq!(labels["apps.kubernetes.io/pod-index"], "1");
    assert_eq!(labels[REVISION_LABEL], revision);
    assert_eq!(labels["app"], "web");
    let r = &pod.owner_references()[0];
    assert_eq!(
        (r.kind.as_str(), r.uid.as_str(), r.controller),
        ("StatefulSet", set.uid().unwrap().as_str(), Some(true))
    );
    wait_until(TIMEOUT, "SuccessfulCreate events", || async {
        let notes = event_notes(&c, "SuccessfulCreate").await;
        (0..3)
            .all(|o| notes.contains(&format!("create Pod web-{o} in StatefulSet web successful")))
            .then_some(())
    })
    .await;
    let out = c
        .api
        .kubectl_ok(&["rollout", "status", "statefulset/web", "--watch=false"]);
    assert!(
        out.contains("roll out complete") || out.contains("rolling update complete"),
        "{out}"
    );

    // Scale down: the highest ordinal goes first, the next only once it is gone.
    let kubelet = Kubelet::start(&c);
    patch_set(&c, json!({"spec": {"replicas": 1}})).await;
    wait_pod_names(&c, &["web-0"]).await;
    wait_status(&c, "status.replicas 1", |s| s.replicas == 1).await;
    assert_eq!(kubelet.deletions(), ["web-2", "web-1"]);
    wait_until(TIMEOUT, "SuccessfulDelete events", || async {
        let notes = event_notes(&c, "SuccessfulDelete").await;
        (notes.contains(&"delete Pod web-2 in StatefulSet web successful".to_string())
            && notes.contains(&"delete Pod web-1 in StatefulSet web successful".to_string()))
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_unready_pod_stops_ordered_progress() {
    let c = Cluster::start(&["statefulset"]).await;
    create(&c, stateful_set(3, json!({}))).await;
    wait_pod_names(&c, &["web-0"]).await;
    set_ready(&c, "web-0").await.unwrap();
    wait_pod_names(&c, &["web-0", "web-1"]).await;
    // web-0 turns unready: web-1 becoming ready does not bring web-2.
    Api::<Pod>::namespaced(c.client.clone(), NS)
        .patch_status(
            "web-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [
                {"type": "Ready", "status": "False"}]}})),
        )
        .await
        .unwrap();
    wait_status(&c, "web-0 unready", |s| s.ready_replicas == Some(0)).await;
    set_ready(&c, "web-1").await.unwrap();
    wait_status(&c, "web-1 ready, web-0 not", |s| {
        s.ready_replicas == Some(1) && s.replicas == 2
    })
    .await;
    assert_eq!(pod_names(&c).await, ["web-0", "web-1"]);
    set_ready(&c, "web-0").await.unwrap();
    wait_pod_names(&c, &["web-0", "web-1", "web-2"]).await;
}

#[tokio::test]
async fn parallel_creates_and_deletes_all_at_once() {
    let c = Cluster::start(&["statefulset"]).await;
    create(
        &c,
        stateful_set(3, json!({"spec": {"podManagementPolicy": "Parallel"}})),
    )
    .await;
    // Nobody is ready, and all three exist.
    wait_pod_names(&c, &["web-0", "web-1", "web-2"]).await;
    wait_status(&c, "3 replicas, none ready", |s| {
        s.replicas == 3 && s.ready_replicas == Some(0)
    })
    .await;
    patch_set(&c, json!({"spec": {"replicas": 0}})).await;
    wait_pod_names(&c, &[]).await;
    wait_status(&c, "no replicas", |s| s.replicas == 0).await;
}

#[tokio::test]
async fn volume_claim_templates_give_each_pod_its_claim() {
    let c = Cluster::start(&["statefulset"]).await;
    let set = create(
        &c,
        stateful_set(
            2,
            json!({"spec": {
                "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": {"tier": "db"}},
                    "spec": {"accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}}}}],
                "persistentVolumeClaimRetentionPolicy":
                    {"whenDeleted": "Delete", "whenScaled": "Delete"},
            }}),
        ),
    )
    .await;
    let _kubelet = Kubelet::start(&c);
    wait_pod_names(&c, &["web-0", "web-1"]).await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), NS);
    for o in 0..2 {
        let pod = get_pod(&c, &format!("web-{o}")).await;
        let volume = pod
            .spec
            .as_ref()
            .unwrap()
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "data")
            .expect("a data volume");
        let claim_name = format!("data-web-{o}");
        assert_eq!(
            volume.persistent_volume_claim.as_ref().unwrap().claim_name,
            claim_name
        );
        let claim = claims.get(&claim_name).await.unwrap();
        assert_eq!(claim.labels()["tier"], "db");
        assert_eq!(claim.labels()["app"], "web");
        // whenDeleted: Delete: the set owns its claims.
        let set_uid = set.uid().unwrap();
        wait_until(TIMEOUT, "the claim owned by the set", || async {
            let claim = claims.get(&claim_name).await.ok()?;
            claim
                .owner_references()
                .iter()
                .any(|r| r.kind == "StatefulSet" && r.uid == set_uid)
                .then_some(())
        })
        .await;
    }
    wait_until(TIMEOUT, "claim creation events", || async {
        let notes = event_notes(&c, "SuccessfulCreate").await;
        notes
            .contains(&"create Claim data-web-1 Pod web-1 in StatefulSet web success".to_string())
            .then_some(())
    })
    .await;

    // whenScaled: Delete: a scaled-down pod's claim is handed to the pod (for the garbage
    // collector to delete with it) before the pod goes.
    let web1_uid = get_pod(&c, "web-1").await.uid().unwrap();
    patch_set(&c, json!({"spec": {"replicas": 1}})).await;
    wait_pod_names(&c, &["web-0"]).await;
    let claim = claims.get("data-web-1").await.unwrap();
    let owners: Vec<(&str, &str)> = claim
        .owner_references()
        .iter()
        .map(|r| (r.kind.as_str(), r.uid.as_str()))
        .collect();
    assert_eq!(owners, [("Pod", web1_uid.as_str())]);
    // Scaling up again waits for that claim to go (no garbage collector runs here), then
    // makes web-1 with a new claim.
    patch_set(&c, json!({"spec": {"replicas": 2}})).await;
    wait_status(&c, "scale-up observed", |s| s.replicas == 1).await;
    assert_eq!(pod_names(&c).await, ["web-0"]);
    claims
        .delete("data-web-1", &DeleteParams::default())
        .await
        .unwrap();
    wait_pod_names(&c, &["web-0", "web-1"]).await;
    let claim = claims.get("data-web-1").await.unwrap();
    assert_eq!(claim.owner_references()[0].kind, "StatefulSet");
}

// kubectl blocks a thread while the in-process apiserver answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_with_a_partition_goes_from_the_highest_ordinal_down() {
    let c = Cluster::start(&["statefulset"]).await;
    create(
        &c,
        stateful_set(
            3,
            json!({"metadata": {"annotations": {"kubernetes.io/change-cause": "first"}}}),
        ),
    )
    .await;
    let kubelet = Kubelet::start(&c);
    let before = wait_status(&c, "3 ready replicas", |s| s.ready_replicas == Some(3)).await;
    let old = before.status.unwrap().current_revision.unwrap();

    patch_set(
        &c,
        json!({
            "metadata": {"annotations": {"kubernetes.io/change-cause": "second"}},
            "spec": {
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}},
                "template": {"spec": {"containers": [
                    {"name": "nginx", "image": "registry.k8s.io/nginx-slim:0.9"}]}},
            },
        }),
    )
    .await;
    let after = wait_status(&c, "two pods updated", |s| {
        s.updated_replicas == Some(2) && s.ready_replicas == Some(3)
    })
    .await;
    let status = after.status.unwrap();
    let new = status.update_revision.clone().unwrap();
    assert_ne!(new, old);
    assert_eq!(status.current_revision.as_deref(), Some(old.as_str()));
    assert_eq!(status.current_replicas, Some(1));
    assert_eq!(status.replicas, 3);
    for (name, revision) in [("web-0", &old), ("web-1", &new), ("web-2", &new)] {
        assert_eq!(
            &get_pod(&c, name).await.labels()[REVISION_LABEL],
            revision,
            "{name}"
        );
    }
    let image = |p: &Pod| {
        p.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
            .unwrap()
    };
    assert!(image(&get_pod(&c, "web-2").await).ends_with(":0.9"));
    assert!(image(&get_pod(&c, "web-0").await).ends_with(":0.8"));
    // web-2 first; web-1 only once the new web-2 was ready.
    let log = kubelet.log();
    assert_eq!(kubelet.deletions(), ["web-2", "web-1"], "{log:?}");
    let at = |entry: &str| {
        log.iter()
            .position(|l| l == entry)
            .unwrap_or_else(|| panic!("{entry} in {log:?}"))
    };
    assert!(
        at(&format!("ready web-2 {new}")) < at("deleted web-1"),
        "{log:?}"
    );

    // Revisions: one per template, kubectl's history shows both.
    let revisions = Api::<ControllerRevision>::namespaced(c.client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let mut numbers: Vec<(String, i64)> = revisions
        .iter()
        .map(|r| (r.name_any(), r.revision))
        .collect();
    numbers.sort_by_key(|(_, n)| *n);
    assert_eq!(numbers, [(old.clone(), 1), (new.clone(), 2)]);
    let out = c
        .api
        .kubectl_ok(&["rollout", "status", "statefulset/web", "--watch=false"]);
    assert!(
        out.contains("partitioned roll out complete: 2 new pods"),
        "{out}"
    );
    let history = c.api.kubectl_ok(&["rollout", "history", "statefulset/web"]);
    assert!(history.contains("REVISION"), "{history}");
    assert!(
        history
            .lines()
            .any(|l| l.split_whitespace().eq(["1", "first"])),
        "{history}"
    );
    assert!(
        history
            .lines()
            .any(|l| l.split_whitespace().eq(["2", "second"])),
        "{history}"
    );

    // Below the partition, a deleted pod comes back at the current (old) revision.
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), NS);
    let uid = get_pod(&c, "web-0").await.uid().unwrap();
    pods.delete("web-0", &DeleteParams::default())
        .await
        .unwrap();
    let again = wait_until(TIMEOUT, "web-0 recreated", || async {
        let p = pods.get_opt("web-0").await.ok()??;
        (p.uid().unwrap() != uid).then_some(p)
    })
    .await;
    assert_eq!(&again.labels()[REVISION_LABEL], &old);
    assert!(image(&again).ends_with(":0.8"));
    wait_status(&c, "web-0 ready again", |s| s.ready_replicas == Some(3)).await;

    // Partition 0: web-0 too, then the update revision is the current one.
    patch_set(
        &c,
        json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}}),
    )
    .await;
    wait_status(&c, "rolling update complete", |s| {
        s.current_revision.as_deref() == Some(new.as_str())
            && s.current_replicas == Some(3)
            && s.updated_replicas == Some(3)
            && s.ready_replicas == Some(3)
    })
    .await;
    assert_eq!(&get_pod(&c, "web-0").await.labels()[REVISION_LABEL], &new);
    let out = c
        .api
        .kubectl_ok(&["rollout", "status", "statefulset/web", "--watch=false"]);
    assert!(out.contains("roll out complete"), "{out}");
}

#[tokio::test]
async fn deleted_and_failed_pods_come_back_under_the_same_name() {
    let c = Cluster::start(&["statefulset"]).await;
    create(&c, stateful_set(2, json!({}))).await;
    let _kubelet = Kubelet::start(&c);
    wait_status(&c, "2 ready replicas", |s| s.ready_replicas == Some(2)).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), NS);

    let first = get_pod(&c, "web-0").await.uid().unwrap();
    pods.delete("web-0", &DeleteParams::default())
        .await
        .unwrap();
    wait_until(TIMEOUT, "a new web-0", || async {
        let p = pods.get_opt("web-0").await.ok()??;
        (p.uid().unwrap() != first).then_some(())
    })
    .await;

    let failed = get_pod(&c, "web-1").await.uid().unwrap();
    pods.patch_status(
        "web-1",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Failed"}})),
    )
    .await
    .unwrap();
    wait_until(TIMEOUT, "web-1 recreated", || async {
        let p = pods.get_opt("web-1").await.ok()??;
        (p.uid().unwrap() != failed).then_some(())
    })
    .await;
    wait_status(&c, "2 ready replicas again", |s| {
        s.ready_replicas == Some(2)
    })
    .await;
    wait_until(TIMEOUT, "RecreatingFailedPod event", || async {
        let notes = event_notes(&c, "RecreatingFailedPod").await;
        notes
            .contains(&"StatefulSet default/web is recreating failed Pod web-1".to_string())
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn on_delete_replaces_only_deleted_pods() {
    let c = Cluster::start(&["statefulset"]).await;
    create(
        &c,
        stateful_set(2, json!({"spec": {"updateStrategy": {"type": "OnDelete"}}})),
    )
    .await;
    let _kubelet = Kubelet::start(&c);
    let before = wait_status(&c, "2 ready replicas", |s| s.ready_replicas == Some(2)).await;
    let old = before.status.unwrap().current_revision.unwrap();
    patch_set(
        &c,
        json!({"spec": {"template": {"metadata": {"labels": {"app": "web", "v": "2"}}}}}),
    )
    .await;
    let after = wait_status(&c, "a new update revision", |s| {
        s.update_revision.as_deref() != Some(old.as_str())
    })
    .await;
    let new = after.status.unwrap().update_revision.unwrap();
    // Nothing is replaced until deleted.
    assert_eq!(&get_pod(&c, "web-1").await.labels()[REVISION_LABEL], &old);
    Api::<Pod>::namespaced(c.client.clone(), NS)
        .delete("web-1", &DeleteParams::default())
        .await
        .unwrap();
    wait_until(TIMEOUT, "web-1 at the new revision", || async {
        let p = Api::<Pod>::namespaced(c.client.clone(), NS)
            .get_opt("web-1")
            .await
            .ok()??;
        (p.labels().get(REVISION_LABEL) == Some(&new)).then_some(())
    })
    .await;
    wait_status(&c, "one pod updated", |s| {
        s.updated_replicas == Some(1) && s.ready_replicas == Some(2)
    })
    .await;
    assert_eq!(&get_pod(&c, "web-0").await.labels()[REVISION_LABEL], &old);
}

// kubectl blocks a thread while the in-process apiserver answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_renumbers_the_old_revision_and_history_is_pruned() {
    let c = Cluster::start(&["statefulset"]).await;
    create(
        &c,
        stateful_set(2, json!({"spec": {"podManagementPolicy": "Parallel"}})),
    )
    .await;
    let _kubelet = Kubelet::start(&c);
    let first = wait_status(&c, "2 ready replicas", |s| s.ready_replicas == Some(2))
        .await
        .status
        .unwrap()
        .update_revision
        .unwrap();
    patch_set(
        &c,
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "nginx", "image": "registry.k8s.io/nginx-slim:0.9"}]}}}}),
    )
    .await;
    let complete = |s: &StatefulSetStatus| {
        s.current_revision == s.update_revision
            && s.updated_replicas == Some(2)
            && s.ready_replicas == Some(2)
    };
    let second = wait_status(&c, "the update rolled out", |s| {
        complete(s) && s.update_revision.as_deref() != Some(first.as_str())
    })
    .await
    .status
    .unwrap()
    .update_revision
    .unwrap();

    // Back to the first template: its revision is reused, renumbered as the newest.
    c.api.kubectl_ok(&["rollout", "undo", "statefulset/web"]);
    wait_status(&c, "rolled back", |s| {
        complete(s) && s.update_revision.as_deref() == Some(first.as_str())
    })
    .await;
    let revisions: Api<ControllerRevision> = Api::namespaced(c.client.clone(), NS);
    assert_eq!(revisions.get(&first).await.unwrap().revision, 3);
    assert_eq!(revisions.get(&second).await.unwrap().revision, 2);
    let pod = get_pod(&c, "web-1").await;
    assert_eq!(
        pod.spec.unwrap().containers[0].image.as_deref(),
        Some("registry.k8s.io/nginx-slim:0.8")
    );

    // No history kept: only the revision the pods use is left.
    patch_set(&c, json!({"spec": {"revisionHistoryLimit": 0}})).await;
    wait_until(TIMEOUT, "the old revision pruned", || async {
        let names: Vec<String> = revisions
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .iter()
            .map(|r| r.name_any())
            .collect();
        (names == [first.clone()]).then_some(())
    })
    .await;
}

#[tokio::test]
async fn ordinals_start_where_the_spec_says() {
    let c = Cluster::start(&["statefulset"]).await;
    create(
        &c,
        stateful_set(
            2,
            json!({"spec": {"podManagementPolicy": "Parallel", "ordinals": {"start": 3}}}),
        ),
    )
    .await;
    wait_pod_names(&c, &["web-3", "web-4"]).await;
    let pod = get_pod(&c, "web-4").await;
    assert_eq!(pod.labels()["apps.kubernetes.io/pod-index"], "4");
    assert_eq!(
        pod.spec.as_ref().unwrap().hostname.as_deref(),
        Some("web-4")
    );
    // Moving the start replaces the pods outside the new range.
    patch_set(&c, json!({"spec": {"ordinals": {"start": 0}}})).await;
    wait_pod_names(&c, &["web-0", "web-1"]).await;
}

#[tokio::test]
async fn ordered_ready_waits_min_ready_seconds_before_the_next_pod() {
    let c = Cluster::start(&["statefulset"]).await;
    create(&c, stateful_set(2, json!({"spec": {"minReadySeconds": 1}}))).await;
    wait_pod_names(&c, &["web-0"]).await;
    let ready = set_ready(&c, "web-0").await.unwrap();
    let ready_at = ready.status.unwrap().conditions.unwrap()[0]
        .last_transition_time
        .clone()
        .unwrap()
        .0;
    // Ready but not yet available: web-0 is not counted available, web-1 waits.
    wait_pod_names(&c, &["web-0", "web-1"]).await;
    let created = get_pod(&c, "web-1")
        .await
        .metadata
        .creation_timestamp
        .unwrap()
        .0;
    assert!(
        created.as_second() > ready_at.as_second() + 1,
        "web-1 created at {created}, web-0 ready at {ready_at}"
    );
    wait_status(&c, "web-0 available", |s| s.available_replicas == Some(1)).await;
}

/// Binds a pod to a node, as the scheduler would: its deletion is then graceful.
async fn bind(c: &Cluster, name: &str, node: &str) {
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    Api::<Pod>::namespaced(c.client.clone(), NS)
        .create_subresource::<_, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn ordered_scale_down_waits_for_each_pod_to_terminate() {
    let c = Cluster::start(&["statefulset"]).await;
    create(&c, stateful_set(3, json!({}))).await;
    for name in ["web-0", "web-1", "web-2"] {
        wait_until(TIMEOUT, name, || async {
            Api::<Pod>::namespaced(c.client.clone(), NS)
                .get_opt(name)
                .await
                .ok()?
        })
        .await;
        bind(&c, name, "node-a").await;
        set_ready(&c, name).await.unwrap();
    }
    wait_status(&c, "3 ready", |s| s.ready_replicas == Some(3)).await;
    patch_set(&c, json!({"spec": {"replicas": 1}})).await;
    // web-2 terminates (a bound pod waits for its kubelet); the controller has seen
    // that (web-2 no longer counts as current) and leaves web-1 alone meanwhile.
    wait_status(&c, "web-2 terminating", |s| {
        s.replicas == 3 && s.current_replicas == Some(2)
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), NS);
    assert!(pods
        .get("web-2")
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_some());
    assert!(pods
        .get("web-1")
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_none());
    // The kubelet finishes web-2: then web-1 goes.
    pods.delete("web-2", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    wait_until(TIMEOUT, "web-1 terminating", || async {
        let p = pods.get_opt("web-1").await.ok()??;
        p.metadata.deletion_timestamp.is_some().then_some(())
    })
    .await;
    assert!(pods
        .get("web-0")
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_none());
}

#[tokio::test]
async fn adopts_orphans_named_as_members_only() {
    let c = Cluster::start(&["statefulset"]).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), NS);
    for name in ["web-0", "other-0"] {
        let orphan: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "nginx", "image": "registry.k8s.io/nginx-slim:0.8"}]},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &orphan).await.unwrap();
    }
    let orphan_uid = get_pod(&c, "web-0").await.uid().unwrap();
    let set = create(
        &c,
        stateful_set(1, json!({"spec": {"podManagementPolicy": "Parallel"}})),
    )
    .await;
    let set_uid = set.uid().unwrap();
    // Adopted, given its identity labels, then replaced by a pod of the set's revision.
    wait_until(TIMEOUT, "web-0 adopted and labelled", || async {
        let notes = event_notes(&c, "SuccessfulUpdate").await;
        notes
            .contains(&"update Pod web-0 in StatefulSet web successful".to_string())
            .then_some(())
    })
    .await;
    let status = wait_status(&c, "web-0 at the set's revision", |s| {
        s.updated_replicas == Some(1) && s.replicas == 1
    })
    .await
    .status
    .unwrap();
    let pod = get_pod(&c, "web-0").await;
    assert_ne!(pod.uid().unwrap(), orphan_uid);
    assert_eq!(
        pod.labels().get(REVISION_LABEL),
        status.update_revision.as_ref()
    );
    assert_eq!(pod.owner_references()[0].uid, set_uid);
    // A matching pod that is not named as a member stays an orphan.
    assert!(get_pod(&c, "other-0").await.owner_references().is_empty());
}

#[tokio::test]
async fn when_deleted_delete_lets_the_garbage_collector_take_the_claims() {
    let c = Cluster::start(&["statefulset", "garbagecollector"]).await;
    create(
        &c,
        stateful_set(
            2,
            json!({"spec": {
                "podManagementPolicy": "Parallel",
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}}}}],
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete"},
            }}),
        ),
    )
    .await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), NS);
    wait_until(TIMEOUT, "both claims owned by the set", || async {
        let list = claims.list(&ListParams::default()).await.ok()?.items;
        (list.len() == 2
            && list.iter().all(|c| {
                c.owner_references()
                    .iter()
                    .any(|r| r.kind == "StatefulSet" && r.name == "web")
            }))
        .then_some(())
    })
    .await;
    Api::<StatefulSet>::namespaced(c.client.clone(), NS)
        .delete("web", &DeleteParams::background())
        .await
        .unwrap();
    wait_until(TIMEOUT, "claims, pods and revisions collected", || async {
        let claims_left = claims.list(&ListParams::default()).await.ok()?.items.len();
        let revisions_left = Api::<ControllerRevision>::namespaced(c.client.clone(), NS)
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .len();
        (claims_left == 0 && revisions_left == 0 && pod_names(&c).await.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_rejected_pod_is_a_failed_create_event() {
    let c = Cluster::start(&["statefulset"]).await;
    // Admission rejects pods of an unknown priority class.
    create(
        &c,
        stateful_set(
            1,
            json!({"spec": {"template": {"spec": {"priorityClassName": "no-such-class"}}}}),
        ),
    )
    .await;
    let notes = wait_until(TIMEOUT, "a FailedCreate event", || async {
        let notes = event_notes(&c, "FailedCreate").await;
        (!notes.is_empty()).then_some(notes)
    })
    .await;
    assert!(
        notes[0].starts_with("create Pod web-0 in StatefulSet web failed error: ")
            && notes[0].contains("no-such-class"),
        "{notes:?}"
    );
    assert!(pod_names(&c).await.is_empty());
    // Every retry fails the same way: one Event, counted as a series.
    let events: Api<Event> = Api::namespaced(c.client.clone(), NS);
    wait_until(TIMEOUT, "the FailedCreate event repeated", || async {
        let failed: Vec<Event> = events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("FailedCreate"))
            .collect();
        (failed.len() == 1 && failed[0].series.as_ref().is_some_and(|s| s.count >= 2)).then_some(())
    })
    .await;
}
