//! The replicaset and replicationcontroller controllers against a real apiserver + etcd.
//! No kubelet: the tests set pod status (Running, Ready) themselves, and bind pods to
//! nodes through pods/binding.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::common::{controlled_by, controlled_pods, is_active, wait_until, Cluster, TIMEOUT};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

const NS: &str = "default";

fn replica_set(name: &str, replicas: i32, app: &str) -> ReplicaSet {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app, "tier": "web"}},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }))
    .unwrap()
}

async fn create_rs(c: &Cluster, rs: ReplicaSet) -> ReplicaSet {
    Api::<ReplicaSet>::namespaced(c.client.clone(), NS)
        .create(&PostParams::default(), &rs)
        .await
        .unwrap()
}

async fn scale<K>(c: &Cluster, name: &str, replicas: i32)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(c.client.clone(), NS)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap();
}

/// The active pods `uid` controls.
async fn owned_pods(c: &Cluster, uid: &str) -> Vec<Pod> {
    let mut pods = controlled_pods(c, NS, uid).await;
    pods.retain(is_active);
    pods
}

/// Waits until `uid` controls exactly `n` active pods, and returns them.
async fn wait_pods(c: &Cluster, uid: &str, n: usize) -> Vec<Pod> {
    wait_until(TIMEOUT, &format!("{n} pods owned by {uid}"), || async {
        let pods = owned_pods(c, uid).await;
        (pods.len() == n).then_some(pods)
    })
    .await
}

/// Plays the kubelet: the pod runs, ready (since now) or not.
async fn set_running(c: &Cluster, name: &str, ready: bool) {
    try_set_running(c, name, ready).await.unwrap();
}

async fn try_set_running(c: &Cluster, name: &str, ready: bool) -> kube::Result<Pod> {
    let now = jiff::Timestamp::now().to_string();
    let status = if ready { "True" } else { "False" };
    Api::<Pod>::namespaced(c.client.clone(), NS)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": status, "lastTransitionTime": now},
            ]}})),
        )
        .await
}

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

/// Waits until the ReplicaSet's status satisfies `check` for its current generation.
async fn wait_rs_status(
    c: &Cluster,
    name: &str,
    what: &str,
    check: impl Fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> bool,
) -> ReplicaSet {
    let api: Api<ReplicaSet> = Api::namespaced(c.client.clone(), NS);
    wait_until(TIMEOUT, what, || async {
        let rs = api.get(name).await.ok()?;
        let s = rs.status.as_ref()?;
        (s.observed_generation == rs.metadata.generation && check(s)).then_some(rs)
    })
    .await
}

#[tokio::test]
async fn scales_to_exact_counts_with_owned_templated_pods_and_events() {
    let c = Cluster::start(&["replicaset"]).await;
    let rs = create_rs(&c, replica_set("web", 3, "web")).await;
    let uid = rs.uid().unwrap();
    let pods = wait_pods(&c, &uid, 3).await;
    for p in &pods {
        assert!(p.name_any().starts_with("web-"), "{}", p.name_any());
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(p.labels().get("tier").map(String::as_str), Some("web"));
        let r = &p.owner_references()[0];
        assert_eq!(
            (
                r.kind.as_str(),
                r.name.as_str(),
                r.controller,
                r.block_owner_deletion
            ),
            ("ReplicaSet", "web", Some(true), Some(true))
        );
    }
    wait_rs_status(&c, "web", "status.replicas 3", |s| {
        s.replicas == 3 && s.fully_labeled_replicas == Some(3)
    })
    .await;

    scale::<ReplicaSet>(&c, "web", 5).await;
    wait_pods(&c, &uid, 5).await;
    scale::<ReplicaSet>(&c, "web", 1).await;
    wait_pods(&c, &uid, 1).await;
    wait_rs_status(&c, "web", "status.replicas 1", |s| s.replicas == 1).await;
    assert_eq!(owned_pods(&c, &uid).await.len(), 1);

    // Upstream's events, reported by replicaset-controller.
    let events: Api<Event> = Api::namespaced(c.client.clone(), NS);
    wait_until(
        TIMEOUT,
        "SuccessfulCreate and SuccessfulDelete events",
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            let mine = |reason: &str, prefix: &str| {
                list.items
                    .iter()
                    .filter(|e| {
                        e.reason.as_deref() == Some(reason)
                            && e.reporting_controller.as_deref() == Some("replicaset-controller")
                            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web")
                            && e.note.as_deref().is_some_and(|n| n.starts_with(prefix))
                    })
                    .count()
            };
            (mine("SuccessfulCreate", "Created pod: web-") == 5
                && mine("SuccessfulDelete", "Deleted pod: web-") == 4)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn bursts_of_scale_ups_never_over_create() {
    let c = Cluster::start(&["replicaset"]).await;
    let rs = create_rs(&c, replica_set("burst", 0, "burst")).await;
    let uid = rs.uid().unwrap();

    // Every state of the pod set, as a watch sees it: the most pods alive at once, and
    // every pod ever made (an extra pod, even one deleted again soon, is over-creation).
    let max = Arc::new(AtomicUsize::new(0));
    let made = Arc::new(parking_lot::Mutex::new(HashSet::new()));
    let watch = {
        let (max, made) = (max.clone(), made.clone());
        let uid = uid.clone();
        let api: Api<Pod> = Api::namespaced(c.client.clone(), NS);
        tokio::spawn(async move {
            let mut alive = HashSet::new();
            let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
            while let Some(e) = events.next().await {
                match e {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                        if controlled_by(&p, &uid) {
                            made.lock().insert(p.uid().unwrap());
                        }
                        if controlled_by(&p, &uid) && is_active(&p) {
                            alive.insert(p.uid().unwrap());
                        } else {
                            alive.remove(&p.uid().unwrap());
                        }
                    }
                    Ok(watcher::Event::Delete(p)) => {
                        alive.remove(&p.uid().unwrap());
                    }
                    _ => {}
                }
                max.fetch_max(alive.len(), Ordering::SeqCst);
            }
        })
    };

    // A busy pod watch: other pods change all the time, so the controller's pod cache
    // trails the apiserver while the ReplicaSet's own changes arrive promptly.
    let api: Api<Pod> = Api::namespaced(c.client.clone(), NS);
    for i in 0..20 {
        let noise: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("noise-{i}"), "labels": {"app": "noise"}},
            "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
        }))
        .unwrap();
        api.create(&PostParams::default(), &noise).await.unwrap();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noise = {
        let (api, stop) = (api.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                futures::future::join_all((0..20).map(|i| {
                    let patch = json!({"metadata": {"annotations": {"n": n.to_string()}}});
                    let api = api.clone();
                    async move {
                        let _ = api
                            .patch(
                                &format!("noise-{i}"),
                                &PatchParams::default(),
                                &Patch::Merge(patch),
                            )
                            .await;
                    }
                }))
                .await;
            }
        })
    };
    // Scale changes in quick succession, while earlier creations are still landing and
    // the pods already made turn ready (more pod events for the controller to digest).
    for replicas in 1..=30 {
        scale::<ReplicaSet>(&c, "burst", replicas).await;
        if replicas % 5 == 0 {
            for p in api.list(&ListParams::default()).await.unwrap().items {
                if controlled_by(&p, &uid) && is_active(&p) {
                    // (Gone already only if it was one too many.)
                    let _ = try_set_running(&c, &p.name_any(), true).await;
                }
            }
        }
    }
    wait_pods(&c, &uid, 30).await;
    wait_rs_status(&c, "burst", "status.replicas 30", |s| s.replicas == 30).await;
    assert_eq!(owned_pods(&c, &uid).await.len(), 30);
    wait_until(TIMEOUT, "the watch to see 30 pods", || async {
        (made.lock().len() >= 30).then_some(())
    })
    .await;
    let seen = max.load(Ordering::SeqCst);
    assert!(seen <= 30, "{seen} pods existed at once for 30 replicas");
    assert_eq!(made.lock().len(), 30, "pods made for a scale-up to 30");
    stop.store(true, Ordering::SeqCst);
    noise.await.unwrap();
    watch.abort();
}

#[tokio::test]
async fn adopts_matching_orphans_and_releases_relabelled_pods() {
    let c = Cluster::start(&["replicaset"]).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), NS);
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "orphan", "labels": {"app": "adopt"}},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &orphan).await.unwrap();
    // A pod being deleted or finished is not adopted.
    let done: Pod = serde_json::from_value(json!({
        "metadata": {"name": "finished", "labels": {"app": "adopt"}},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &done).await.unwrap();
    pods.patch_status(
        "finished",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
    )
    .await
    .unwrap();

    let rs = create_rs(&c, replica_set("adopt", 2, "adopt")).await;
    let uid = rs.uid().unwrap();
    let owned = wait_pods(&c, &uid, 2).await;
    assert!(owned.iter().any(|p| p.name_any() == "orphan"));
    let finished = pods.get("finished").await.unwrap();
    assert!(finished.owner_references().is_empty());

    // Relabelled out of the selector: released, and replaced.
    pods.patch(
        "orphan",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "elsewhere"}}})),
    )
    .await
    .unwrap();
    wait_until(TIMEOUT, "orphan released", || async {
        let p = pods.get("orphan").await.ok()?;
        (!controlled_by(&p, &uid)).then_some(())
    })
    .await;
    let owned = wait_pods(&c, &uid, 2).await;
    assert!(owned.iter().all(|p| p.name_any() != "orphan"));
}

#[tokio::test]
async fn scale_down_deletes_unscheduled_then_unready_pods_first() {
    let c = Cluster::start(&["replicaset"]).await;
    let rs = create_rs(&c, replica_set("down", 4, "down")).await;
    let uid = rs.uid().unwrap();
    let mut pods: Vec<String> = wait_pods(&c, &uid, 4)
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    pods.sort();
    let (unscheduled, unready, ready) = (&pods[0], &pods[1], &pods[2..]);
    for (i, p) in pods[1..].iter().enumerate() {
        bind(&c, p, &format!("node-{i}")).await;
    }
    set_running(&c, unready, false).await;
    for p in ready {
        set_running(&c, p, true).await;
    }
    wait_rs_status(&c, "down", "2 ready replicas", |s| {
        s.ready_replicas == Some(2)
    })
    .await;

    scale::<ReplicaSet>(&c, "down", 2).await;
    let left = wait_pods(&c, &uid, 2).await;
    let mut left: Vec<String> = left.iter().map(|p| p.name_any()).collect();
    left.sort();
    assert_eq!(left, ready);
    let api: Api<Pod> = Api::namespaced(c.client.clone(), NS);
    // The unscheduled pod is gone at once; the bound one waits for its (absent) kubelet.
    assert!(api.get_opt(unscheduled).await.unwrap().is_none());
    let terminating = api.get(unready).await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
}

#[tokio::test]
async fn status_follows_readiness_and_deleted_pods_are_replaced() {
    let c = Cluster::start(&["replicaset"]).await;
    let mut rs = replica_set("ready", 2, "ready");
    rs.spec.as_mut().unwrap().min_ready_seconds = Some(3);
    let rs = create_rs(&c, rs).await;
    let uid = rs.uid().unwrap();
    let pods = wait_pods(&c, &uid, 2).await;
    for p in &pods {
        set_running(&c, &p.name_any(), true).await;
    }
    // Ready at once; available only after minReadySeconds (a requeue, no pod event).
    let rs = wait_rs_status(&c, "ready", "2 ready replicas", |s| {
        s.ready_replicas == Some(2)
    })
    .await;
    assert_ne!(rs.status.unwrap().available_replicas, Some(2));
    wait_rs_status(&c, "ready", "2 available replicas", |s| {
        s.available_replicas == Some(2)
    })
    .await;
    set_running(&c, &pods[0].name_any(), false).await;
    wait_rs_status(&c, "ready", "1 ready replica", |s| {
        s.ready_replicas == Some(1) && s.available_replicas == Some(1)
    })
    .await;

    // A deleted pod is replaced by a new one.
    let api: Api<Pod> = Api::namespaced(c.client.clone(), NS);
    api.delete(&pods[1].name_any(), &DeleteParams::default())
        .await
        .unwrap();
    wait_until(TIMEOUT, "a replacement pod", || async {
        let now = owned_pods(&c, &uid).await;
        (now.len() == 2 && now.iter().all(|p| p.name_any() != pods[1].name_any())).then_some(())
    })
    .await;
    wait_rs_status(&c, "ready", "2 replicas, 0 ready", |s| {
        s.replicas == 2 && s.ready_replicas == Some(0)
    })
    .await;
}

#[tokio::test]
async fn replication_controller_keeps_its_count() {
    let c = Cluster::start(&["replicationcontroller"]).await;
    let rc: ReplicationController = serde_json::from_value(json!({
        "metadata": {"name": "legacy"},
        "spec": {
            "replicas": 3,
            "selector": {"app": "legacy"},
            "template": {
                "metadata": {"labels": {"app": "legacy"}},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }))
    .unwrap();
    let api: Api<ReplicationController> = Api::namespaced(c.client.clone(), NS);
    let rc = api.create(&PostParams::default(), &rc).await.unwrap();
    let uid = rc.uid().unwrap();
    let pods = wait_pods(&c, &uid, 3).await;
    let r = &pods[0].owner_references()[0];
    assert_eq!(
        (r.kind.as_str(), r.api_version.as_str()),
        ("ReplicationController", "v1")
    );
    set_running(&c, &pods[0].name_any(), true).await;
    scale::<ReplicationController>(&c, "legacy", 1).await;
    let left = wait_pods(&c, &uid, 1).await;
    // The ready pod is the one kept.
    assert_eq!(left[0].name_any(), pods[0].name_any());
    wait_until(TIMEOUT, "rc status", || async {
        let rc = api.get("legacy").await.ok()?;
        let s = rc.status?;
        (s.observed_generation == rc.metadata.generation
            && s.replicas == 1
            && s.ready_replicas == Some(1)
            && s.available_replicas == Some(1))
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn create_failures_set_replica_failure_until_creation_succeeds() {
    let c = Cluster::start(&["replicaset"]).await;
    // Valid as a ReplicaSet, refused as a pod by the Priority admission plugin.
    let mut rs = replica_set("failing", 2, "failing");
    let template = rs.spec.as_mut().unwrap().template.as_mut().unwrap();
    template.spec.as_mut().unwrap().priority_class_name = Some("not-yet".into());
    let rs = create_rs(&c, rs).await;
    let failed = wait_rs_status(&c, "failing", "a ReplicaFailure condition", |s| {
        s.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "ReplicaFailure" && c.status == "True")
    })
    .await;
    let cond = &failed.status.unwrap().conditions.unwrap()[0];
    assert_eq!(cond.reason.as_deref(), Some("FailedCreate"));
    assert!(cond.message.as_deref().unwrap().contains("not-yet"));
    let events: Api<Event> = Api::namespaced(c.client.clone(), NS);
    wait_until(TIMEOUT, "a FailedCreate event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("FailedCreate")
                    && e.type_.as_deref() == Some("Warning")
                    && e.note
                        .as_deref()
                        .is_some_and(|n| n.starts_with("Error creating: "))
            })
            .then_some(())
    })
    .await;

    // Once pods can be created, the condition goes.
    let pc: k8s_openapi::api::scheduling::v1::PriorityClass =
        serde_json::from_value(json!({"metadata": {"name": "not-yet"}, "value": 1000})).unwrap();
    Api::<k8s_openapi::api::scheduling::v1::PriorityClass>::all(c.client.clone())
        .create(&PostParams::default(), &pc)
        .await
        .unwrap();
    wait_pods(&c, &rs.uid().unwrap(), 2).await;
    wait_rs_status(&c, "failing", "no ReplicaFailure condition", |s| {
        s.replicas == 2 && s.conditions.iter().flatten().next().is_none()
    })
    .await;
}
