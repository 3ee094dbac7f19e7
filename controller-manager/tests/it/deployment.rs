//! The deployment controller (with the replicaset controller making the pods) against a
//! real apiserver + etcd. No kubelet: the tests mark pods Running and Ready through the
//! status subresource, as the kubelet would, and watch the pods to check that a rollout
//! never goes beyond maxSurge nor below maxUnavailable.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use crate::common::{is_active, wait_until, Cluster, TIMEOUT};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::json;

const NS: &str = "default";
const HASH: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";

fn deployment(name: &str, replicas: i32, strategy: serde_json::Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "strategy": strategy,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }))
    .unwrap()
}

async fn create(c: &Cluster, d: Deployment) -> Deployment {
    Api::<Deployment>::namespaced(c.client.clone(), NS)
        .create(&PostParams::default(), &d)
        .await
        .unwrap()
}

/// Changes the container image: a new pod template.
async fn set_image(c: &Cluster, name: &str, image: &str) {
    Api::<Deployment>::namespaced(c.client.clone(), NS)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {
                "containers": [{"name": "c", "image": image}]}}}})),
        )
        .await
        .unwrap();
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Plays the kubelet: every active pod that is not ready yet runs and turns ready.
async fn make_pods_ready(c: &Cluster) {
    let api: Api<Pod> = Api::namespaced(c.client.clone(), NS);
    let Ok(pods) = api.list(&ListParams::default()).await else {
        return;
    };
    for (i, p) in pods.items.iter().enumerate() {
        if !is_active(p) || is_ready(p) {
            continue;
        }
        let now = jiff::Timestamp::now().to_string();
        // The pod may be deleted meanwhile: that is fine.
        let _ = api
            .patch_status(
                &p.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "phase": "Running",
                    "podIP": format!("10.42.0.{}", i + 2),
                    "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
                }})),
            )
            .await;
    }
}

/// Waits until the Deployment's status satisfies `check` for its current generation.
async fn wait_status(
    c: &Cluster,
    name: &str,
    what: &str,
    check: impl Fn(&Deployment) -> bool,
) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(c.client.clone(), NS);
    wait_until(TIMEOUT, what, || async {
        let d = api.get(name).await.ok()?;
        let s = d.status.as_ref()?;
        (s.observed_generation >= d.metadata.generation && check(&d)).then_some(d)
    })
    .await
}

/// Plays the kubelet until the rollout of `replicas` pods is complete.
async fn roll_out(c: &Cluster, name: &str, replicas: i32) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(c.client.clone(), NS);
    wait_until(TIMEOUT, &format!("{name} rolled out"), || async {
        make_pods_ready(c).await;
        let d = api.get(name).await.ok()?;
        let s = d.status.as_ref()?;
        let done = s.observed_generation >= d.metadata.generation
            && s.updated_replicas == Some(replicas)
            && s.replicas == Some(replicas)
            && s.available_replicas == Some(replicas);
        done.then_some(d)
    })
    .await
}

fn cond<'a>(d: &'a Deployment, type_: &str) -> Option<&'a DeploymentCondition> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn reason<'a>(d: &'a Deployment, type_: &str) -> Option<&'a str> {
    cond(d, type_).and_then(|c| c.reason.as_deref())
}

/// The ReplicaSets the Deployment controls, oldest first.
async fn replica_sets(c: &Cluster, d: &Deployment) -> Vec<ReplicaSet> {
    let uid = d.uid().unwrap();
    let mut list: Vec<ReplicaSet> = Api::<ReplicaSet>::namespaced(c.client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|r| r.controller == Some(true) && r.uid == uid)
        })
        .collect();
    list.sort_by_key(|rs| rs.metadata.creation_timestamp.clone().map(|t| t.0));
    list
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn annotation<'a>(rs: &'a ReplicaSet, key: &str) -> Option<&'a str> {
    rs.annotations().get(key).map(String::as_str)
}

/// The notes of the deployment-controller's events about `name` with `reason`.
async fn event_notes(c: &Cluster, name: &str, reason: &str) -> Vec<String> {
    Api::<Event>::namespaced(c.client.clone(), NS)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.reporting_controller.as_deref() == Some("deployment-controller")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .filter_map(|e| e.note)
        .collect()
}

/// What the pods looked like after one watch event.
#[derive(Debug, Clone)]
struct Snapshot {
    active: usize,
    ready: usize,
    /// The pod-template-hash of every active pod.
    hashes: BTreeSet<String>,
}

/// Records a snapshot of the namespace's pods after every watch event, from the first
/// list on (returned once that list is in).
async fn record_pods(c: &Cluster) -> (Arc<Mutex<Vec<Snapshot>>>, tokio::task::JoinHandle<()>) {
    let api: Api<Pod> = Api::namespaced(c.client.clone(), NS);
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let out = log.clone();
    let task = tokio::spawn(async move {
        let mut tx = Some(tx);
        let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
        let mut listing: BTreeMap<String, Pod> = BTreeMap::new();
        let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => {
                    listing.clear();
                    continue;
                }
                Ok(watcher::Event::InitApply(p)) => {
                    listing.insert(p.name_any(), p);
                    continue;
                }
                Ok(watcher::Event::InitDone) => {
                    pods = std::mem::take(&mut listing);
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(watcher::Event::Apply(p)) => {
                    pods.insert(p.name_any(), p);
                }
                Ok(watcher::Event::Delete(p)) => {
                    pods.remove(&p.name_any());
                }
                Err(_) => continue,
            }
            let active: Vec<&Pod> = pods.values().filter(|p| is_active(p)).collect();
            out.lock().unwrap().push(Snapshot {
                active: active.len(),
                ready: active.iter().filter(|p| is_ready(p)).count(),
                hashes: active
                    .iter()
                    .filter_map(|p| p.labels().get(HASH).cloned())
                    .collect(),
            });
        }
    });
    rx.await.expect("the pod watch lists");
    (log, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_a_template_hash_replica_set_and_rolls_it_out() {
    let c = Cluster::start(&["deployment", "replicaset"]).await;
    let d = create(&c, deployment("web", 3, json!({"type": "RollingUpdate"}))).await;

    // One ReplicaSet, named after the template hash, revision 1, sized 3.
    let rs = wait_until(TIMEOUT, "the first ReplicaSet", || async {
        let list = replica_sets(&c, &d).await;
        (list.len() == 1 && spec_replicas(&list[0]) == 3).then(|| list[0].clone())
    })
    .await;
    let name = rs.name_any();
    let hash = name.strip_prefix("web-").expect("named web-<hash>");
    assert!(
        !hash.is_empty()
            && hash.len() <= 10
            && hash
                .bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)),
        "{name}"
    );
    let spec = rs.spec.as_ref().unwrap();
    let selector = spec.selector.match_labels.as_ref().unwrap();
    assert_eq!(selector.get(HASH).map(String::as_str), Some(hash));
    assert_eq!(selector.get("app").map(String::as_str), Some("web"));
    let template_labels = spec.template.as_ref().unwrap().metadata.as_ref().unwrap();
    assert_eq!(
        template_labels
            .labels
            .as_ref()
            .unwrap()
            .get(HASH)
            .map(String::as_str),
        Some(hash)
    );
    assert_eq!(rs.labels().get(HASH).map(String::as_str), Some(hash));
    let owner = &rs.owner_references()[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.name.as_str(),
            owner.controller,
            owner.block_owner_deletion
        ),
        ("Deployment", "web", Some(true), Some(true))
    );
    assert_eq!(annotation(&rs, REVISION), Some("1"));
    assert_eq!(
        annotation(&rs, "deployment.kubernetes.io/desired-replicas"),
        Some("3")
    );
    // 25% of 3 surges by one (rounded up).
    assert_eq!(
        annotation(&rs, "deployment.kubernetes.io/max-replicas"),
        Some("4")
    );

    // The pods turn ready: the Deployment is available and has progressed.
    roll_out(&c, "web", 3).await;
    let d = wait_status(&c, "web", "Progressing NewReplicaSetAvailable", |d| {
        reason(d, "Progressing") == Some("NewReplicaSetAvailable")
    })
    .await;
    let s = d.status.as_ref().unwrap();
    assert_eq!((s.ready_replicas, s.unavailable_replicas), (Some(3), None));
    let available = cond(&d, "Available").unwrap();
    assert_eq!(
        (available.status.as_str(), available.reason.as_deref()),
        ("True", Some("MinimumReplicasAvailable"))
    );
    assert_eq!(
        available.message.as_deref(),
        Some("Deployment has minimum availability.")
    );
    assert_eq!(
        cond(&d, "Progressing").unwrap().message.as_deref(),
        Some(format!("ReplicaSet \"{name}\" has successfully progressed.").as_str())
    );
    assert_eq!(d.annotations().get(REVISION).map(String::as_str), Some("1"));
    let out = c
        .api
        .kubectl_ok(&["rollout", "status", "deployment/web", "--watch=false"]);
    assert!(
        out.contains("deployment \"web\" successfully rolled out"),
        "{out}"
    );

    // Upstream's event.
    let want = format!("Scaled up replica set {name} from 0 to 3");
    wait_until(TIMEOUT, "the ScalingReplicaSet event", || async {
        event_notes(&c, "web", "ScalingReplicaSet")
            .await
            .contains(&want)
            .then_some(())
    })
    .await;

    // Scaling the Deployment scales its only ReplicaSet.
    c.api
        .kubectl_ok(&["scale", "deployment", "web", "--replicas=5"]);
    wait_until(TIMEOUT, "the ReplicaSet scaled to 5", || async {
        let list = replica_sets(&c, &d).await;
        (list.len() == 1
            && spec_replicas(&list[0]) == 5
            && annotation(&list[0], "deployment.kubernetes.io/desired-replicas") == Some("5"))
        .then_some(())
    })
    .await;
    roll_out(&c, "web", 5).await;
}

#[tokio::test]
async fn rolling_update_stays_within_max_surge_and_max_unavailable() {
    let c = Cluster::start(&["deployment", "replicaset"]).await;
    let strategy = json!({"type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}});
    let d = create(&c, deployment("web", 4, strategy)).await;
    roll_out(&c, "web", 4).await;
    let first = replica_sets(&c, &d).await.remove(0);

    let (log, recorder) = record_pods(&c).await;
    set_image(&c, "web", "registry.k8s.io/pause:3.9").await;
    let d = roll_out(&c, "web", 4).await;
    recorder.abort();

    // Never more than 4 + 1 pods, never fewer than 4 - 1 ready ones.
    let log = log.lock().unwrap().clone();
    assert!(log.len() > 4, "{log:?}");
    let most = log.iter().map(|s| s.active).max().unwrap();
    let fewest_ready = log.iter().map(|s| s.ready).min().unwrap();
    assert!(most <= 5, "{most} pods at once: {log:?}");
    assert!(fewest_ready >= 3, "{fewest_ready} ready pods: {log:?}");
    // It went step by step: both templates ran side by side at some point.
    assert!(log.iter().any(|s| s.hashes.len() == 2), "{log:?}");

    let list = replica_sets(&c, &d).await;
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].uid(), first.uid());
    assert_eq!((spec_replicas(&list[0]), spec_replicas(&list[1])), (0, 4));
    assert_eq!(
        (
            annotation(&list[0], REVISION),
            annotation(&list[1], REVISION)
        ),
        (Some("1"), Some("2"))
    );
    let d = wait_status(&c, "web", "revision 2 and NewReplicaSetAvailable", |d| {
        d.annotations().get(REVISION).map(String::as_str) == Some("2")
            && reason(d, "Progressing") == Some("NewReplicaSetAvailable")
    })
    .await;
    assert_eq!(reason(&d, "Available"), Some("MinimumReplicasAvailable"));
    let old = list[0].name_any();
    let new = list[1].name_any();
    wait_until(TIMEOUT, "scaling events of the rollout", || async {
        let notes = event_notes(&c, "web", "ScalingReplicaSet").await;
        (notes.contains(&format!("Scaled up replica set {new} from 0 to 1"))
            && notes.contains(&format!("Scaled down replica set {old} from 4 to 3")))
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn recreate_removes_the_old_pods_before_creating_new_ones() {
    let c = Cluster::start(&["deployment", "replicaset"]).await;
    let d = create(&c, deployment("web", 2, json!({"type": "Recreate"}))).await;
    roll_out(&c, "web", 2).await;

    let (log, recorder) = record_pods(&c).await;
    set_image(&c, "web", "registry.k8s.io/pause:3.9").await;
    roll_out(&c, "web", 2).await;
    recorder.abort();

    let log = log.lock().unwrap().clone();
    assert!(
        log.iter().all(|s| s.hashes.len() <= 1),
        "old and new pods at once: {log:?}"
    );
    // Down to nothing in between.
    assert!(log.iter().any(|s| s.active == 0), "{log:?}");
    let list = replica_sets(&c, &d).await;
    assert_eq!(list.iter().map(spec_replicas).collect::<Vec<_>>(), [0, 2]);
    assert_eq!(annotation(&list[1], REVISION), Some("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_undo_and_history() {
    let c = Cluster::start(&["deployment", "replicaset"]).await;
    let d = create(&c, deployment("web", 2, json!({"type": "RollingUpdate"}))).await;
    roll_out(&c, "web", 2).await;
    // A new template with its change-cause, as `kubectl apply` with an annotation would.
    Api::<Deployment>::namespaced(c.client.clone(), NS)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"annotations": {"kubernetes.io/change-cause": "pause 3.9"}},
                "spec": {"template": {"spec": {"containers": [
                    {"name": "c", "image": "registry.k8s.io/pause:3.9"}]}}},
            })),
        )
        .await
        .unwrap();
    roll_out(&c, "web", 2).await;
    let list = replica_sets(&c, &d).await;
    assert_eq!(list.len(), 2);
    let (first, second) = (list[0].clone(), list[1].clone());
    assert_eq!(
        annotation(&second, "kubernetes.io/change-cause"),
        Some("pause 3.9")
    );

    let history = c.api.kubectl_ok(&["rollout", "history", "deployment/web"]);
    let rows: Vec<Vec<&str>> = history
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .filter(|r: &Vec<&str>| !r.is_empty())
        .collect();
    assert_eq!(
        rows,
        vec![vec!["1", "<none>"], vec!["2", "pause", "3.9"]],
        "{history}"
    );

    let out = c.api.kubectl_ok(&["rollout", "undo", "deployment/web"]);
    assert!(out.contains("rolled back"), "{out}");
    // The first ReplicaSet is the new one again, at revision 3, remembering 1.
    wait_until(TIMEOUT, "the first ReplicaSet at revision 3", || async {
        let list = replica_sets(&c, &d).await;
        let rs = list.iter().find(|rs| rs.uid() == first.uid())?;
        (annotation(rs, REVISION) == Some("3")
            && annotation(rs, "deployment.kubernetes.io/revision-history") == Some("1"))
        .then_some(())
    })
    .await;
    let d = roll_out(&c, "web", 2).await;
    let image = d
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some("registry.k8s.io/pause:3.10"));
    let list = replica_sets(&c, &d).await;
    assert_eq!(list.len(), 2, "no third ReplicaSet for an old template");
    let by_uid = |uid| list.iter().find(|rs| rs.uid() == uid).unwrap();
    assert_eq!(spec_replicas(by_uid(first.uid())), 2);
    assert_eq!(spec_replicas(by_uid(second.uid())), 0);
    wait_status(&c, "web", "the Deployment at revision 3", |d| {
        d.annotations().get(REVISION).map(String::as_str) == Some("3")
    })
    .await;

    let history = c.api.kubectl_ok(&["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> = history
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["2", "3"], "{history}");
    let detail = c
        .api
        .kubectl_ok(&["rollout", "history", "deployment/web", "--revision=3"]);
    assert!(detail.contains("registry.k8s.io/pause:3.10"), "{detail}");
    let out = c
        .api
        .kubectl_ok(&["rollout", "status", "deployment/web", "--watch=false"]);
    assert!(out.contains("successfully rolled out"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_deployments_scale_but_do_not_roll_out() {
    let c = Cluster::start(&["deployment", "replicaset"]).await;
    let d = create(&c, deployment("web", 2, json!({"type": "RollingUpdate"}))).await;
    roll_out(&c, "web", 2).await;

    c.api.kubectl_ok(&["rollout", "pause", "deployment/web"]);
    let paused = wait_status(&c, "web", "Progressing DeploymentPaused", |d| {
        reason(d, "Progressing") == Some("DeploymentPaused")
    })
    .await;
    let p = cond(&paused, "Progressing").unwrap();
    assert_eq!(
        (p.status.as_str(), p.message.as_deref()),
        ("Unknown", Some("Deployment is paused"))
    );

    // A new template is not rolled out while paused...
    set_image(&c, "web", "registry.k8s.io/pause:3.9").await;
    wait_status(&c, "web", "the new template observed", |_| true).await;
    // ...but a new size is.
    c.api
        .kubectl_ok(&["scale", "deployment", "web", "--replicas=3"]);
    wait_until(TIMEOUT, "the paused ReplicaSet scaled to 3", || async {
        let list = replica_sets(&c, &d).await;
        (list.len() == 1 && spec_replicas(&list[0]) == 3).then_some(())
    })
    .await;
    wait_status(&c, "web", "3 pods, still paused", |d| {
        let s = d.status.as_ref().unwrap();
        s.replicas == Some(3)
            && s.updated_replicas.is_none()
            && reason(d, "Progressing") == Some("DeploymentPaused")
    })
    .await;
    assert_eq!(replica_sets(&c, &d).await.len(), 1);

    c.api.kubectl_ok(&["rollout", "resume", "deployment/web"]);
    let d = roll_out(&c, "web", 3).await;
    let list = replica_sets(&c, &d).await;
    assert_eq!(list.iter().map(spec_replicas).collect::<Vec<_>>(), [0, 3]);
    let d = wait_status(&c, "web", "Progressing NewReplicaSetAvailable", |d| {
        reason(d, "Progressing") == Some("NewReplicaSetAvailable")
    })
    .await;
    assert_eq!(cond(&d, "Progressing").unwrap().status, "True");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_rollout_exceeds_its_progress_deadline() {
    let c = Cluster::start(&["deployment", "replicaset"]).await;
    let mut d = deployment("web", 2, json!({"type": "RollingUpdate"}));
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(2);
    let d = create(&c, d).await;
    // No pod ever turns ready.
    let stalled = wait_status(&c, "web", "ProgressDeadlineExceeded", |d| {
        reason(d, "Progressing") == Some("ProgressDeadlineExceeded")
    })
    .await;
    let rs = replica_sets(&c, &d).await.remove(0);
    let p = cond(&stalled, "Progressing").unwrap();
    assert_eq!(p.status, "False");
    assert_eq!(
        p.message.as_deref(),
        Some(
            format!(
                "ReplicaSet \"{}\" has timed out progressing.",
                rs.name_any()
            )
            .as_str()
        )
    );
    assert_eq!(
        reason(&stalled, "Available"),
        Some("MinimumReplicasUnavailable")
    );
    let out = c
        .api
        .kubectl(&["rollout", "status", "deployment/web", "--watch=false"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exceeded its progress deadline"), "{err}");

    // Pods turning ready complete the rollout after all.
    roll_out(&c, "web", 2).await;
    wait_status(&c, "web", "Progressing NewReplicaSetAvailable", |d| {
        reason(d, "Progressing") == Some("NewReplicaSetAvailable")
            && cond(d, "Progressing").unwrap().status == "True"
    })
    .await;
}

#[tokio::test]
async fn resizing_mid_rollout_scales_every_replica_set_proportionally() {
    let c = Cluster::start(&["deployment", "replicaset"]).await;
    let strategy = json!({"type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}});
    let d = create(&c, deployment("web", 10, strategy)).await;
    roll_out(&c, "web", 10).await;
    // The new pods never turn ready: the rollout stops at 8 old + 5 new (13 = 10 + 3).
    set_image(&c, "web", "registry.k8s.io/pause:3.9").await;
    wait_until(TIMEOUT, "the rollout stuck at 8 + 5", || async {
        let list = replica_sets(&c, &d).await;
        (list.iter().map(spec_replicas).collect::<Vec<_>>() == [8, 5]).then_some(())
    })
    .await;
    // Upstream's example: to 15 (at most 18), each keeps its share: 11 + 7.
    Api::<Deployment>::namespaced(c.client.clone(), NS)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 15}})),
        )
        .await
        .unwrap();
    let list = wait_until(TIMEOUT, "11 + 7", || async {
        let list = replica_sets(&c, &d).await;
        (list.iter().map(spec_replicas).collect::<Vec<_>>() == [11, 7]).then_some(list)
    })
    .await;
    for rs in &list {
        assert_eq!(
            annotation(rs, "deployment.kubernetes.io/max-replicas"),
            Some("18")
        );
        assert_eq!(
            annotation(rs, "deployment.kubernetes.io/desired-replicas"),
            Some("15")
        );
    }
}

#[tokio::test]
async fn adopts_a_matching_orphan_and_keeps_the_revision_history_limit() {
    let c = Cluster::start(&["deployment", "replicaset"]).await;
    let d = deployment("web", 2, json!({"type": "RollingUpdate"}));
    // An orphan ReplicaSet with the Deployment's labels and template.
    let orphan: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web-orphan", "labels": {"app": "web"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": d.spec.as_ref().unwrap().template,
        },
    }))
    .unwrap();
    let orphan = Api::<ReplicaSet>::namespaced(c.client.clone(), NS)
        .create(&PostParams::default(), &orphan)
        .await
        .unwrap();
    let mut d = d;
    d.spec.as_mut().unwrap().revision_history_limit = Some(1);
    let d = create(&c, d).await;
    // Adopted, and being the same template, it is the Deployment's ReplicaSet.
    roll_out(&c, "web", 2).await;
    let list = replica_sets(&c, &d).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].uid(), orphan.uid());
    assert_eq!(annotation(&list[0], REVISION), Some("1"));
    assert_eq!(spec_replicas(&list[0]), 2);

    // Two more templates: only one old ReplicaSet is kept.
    set_image(&c, "web", "registry.k8s.io/pause:3.9").await;
    roll_out(&c, "web", 2).await;
    set_image(&c, "web", "registry.k8s.io/pause:3.8").await;
    roll_out(&c, "web", 2).await;
    let list = wait_until(TIMEOUT, "one old ReplicaSet left", || async {
        let list = replica_sets(&c, &d).await;
        (list.len() == 2).then_some(list)
    })
    .await;
    let mut revisions: Vec<_> = list.iter().map(|rs| annotation(rs, REVISION)).collect();
    revisions.sort();
    assert_eq!(revisions, [Some("2"), Some("3")]);
    assert!(list.iter().all(|rs| rs.uid() != orphan.uid()));
}
