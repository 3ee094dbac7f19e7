//! The daemonset controller against a real apiserver + etcd. No kubelet and no scheduler:
//! "the pod runs on node X" means its required node affinity names X (upstream's daemon
//! pods go through the scheduler); the tests set pod status (Running, Ready) themselves.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::{controlled_pods, is_active, wait_until, Cluster, TIMEOUT};
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

const NS: &str = "default";
const HASH: &str = "controller-revision-hash";

async fn create_node(
    c: &Cluster,
    name: &str,
    labels: serde_json::Value,
    taints: serde_json::Value,
) {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints},
    }))
    .unwrap();
    Api::<Node>::all(c.client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
}

/// A DaemonSet `name` selecting `app: <name>`, with `spec` merged into its pod spec.
fn daemon_set(name: &str, pod_spec: serde_json::Value) -> DaemonSet {
    let mut spec = json!({"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]});
    for (k, v) in pod_spec.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }))
    .unwrap()
}

async fn create_ds(c: &Cluster, ds: DaemonSet) -> DaemonSet {
    Api::<DaemonSet>::namespaced(c.client.clone(), NS)
        .create(&PostParams::default(), &ds)
        .await
        .unwrap()
}

/// The node a daemon pod is pinned to by its required node affinity.
fn pinned_node(p: &Pod) -> Option<String> {
    let terms = &p
        .spec
        .as_ref()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    let [term] = terms.as_slice() else {
        return None;
    };
    let [field] = term.match_fields.as_deref()? else {
        return None;
    };
    (field.key == "metadata.name" && field.operator == "In")
        .then(|| field.values.as_ref()?.first().cloned())
        .flatten()
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The active pods the DaemonSet `uid` controls.
async fn owned_pods(c: &Cluster, uid: &str) -> Vec<Pod> {
    let mut pods = controlled_pods(c, NS, uid).await;
    pods.retain(is_active);
    pods
}

/// Waits until the DaemonSet `uid` has exactly one active pod on each of `nodes` and no
/// other; returns them by node.
async fn wait_on_nodes(c: &Cluster, uid: &str, nodes: &[&str]) -> BTreeMap<String, Pod> {
    let want: BTreeSet<String> = nodes.iter().map(|n| n.to_string()).collect();
    wait_until(
        TIMEOUT,
        &format!("one pod on each of {nodes:?}"),
        || async {
            let pods = owned_pods(c, uid).await;
            let by_node: BTreeMap<String, Pod> = pods
                .iter()
                .filter_map(|p| Some((pinned_node(p)?, p.clone())))
                .collect();
            (pods.len() == want.len() && by_node.keys().cloned().collect::<BTreeSet<_>>() == want)
                .then_some(by_node)
        },
    )
    .await
}

/// Plays the kubelet: the pod runs and is ready (since now).
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

/// Waits until the DaemonSet's status satisfies `check` for its current generation.
async fn wait_status(
    c: &Cluster,
    name: &str,
    what: &str,
    check: impl Fn(&DaemonSetStatus) -> bool,
) -> DaemonSet {
    let api: Api<DaemonSet> = Api::namespaced(c.client.clone(), NS);
    wait_until(TIMEOUT, what, || async {
        let ds = api.get(name).await.ok()?;
        let s = ds.status.as_ref()?;
        (s.observed_generation == ds.metadata.generation && check(s)).then_some(ds)
    })
    .await
}

async fn events_with(c: &Cluster, reason: &str, ds: &str, prefix: &str) -> usize {
    let list = Api::<Event>::namespaced(c.client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap();
    list.items
        .iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.reporting_controller.as_deref() == Some("daemonset-controller")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(ds)
                && e.note.as_deref().is_some_and(|n| n.starts_with(prefix))
        })
        .count()
}

async fn revisions_of(c: &Cluster, uid: &str) -> Vec<ControllerRevision> {
    Api::<ControllerRevision>::namespaced(c.client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|r| r.owner_references().iter().any(|o| o.uid == uid))
        .collect()
}

#[tokio::test]
async fn one_pod_per_selected_node_following_node_changes() {
    let c = Cluster::start(&["daemonset"]).await;
    create_node(&c, "n1", json!({"role": "edge"}), json!([])).await;
    create_node(&c, "n2", json!({"role": "edge"}), json!([])).await;
    create_node(&c, "n3", json!({"role": "core"}), json!([])).await;
    let ds = create_ds(
        &c,
        daemon_set("agent", json!({"nodeSelector": {"role": "edge"}})),
    )
    .await;
    let uid = ds.uid().unwrap();
    let pods = wait_on_nodes(&c, &uid, &["n1", "n2"]).await;
    for p in pods.values() {
        assert!(p.name_any().starts_with("agent-"), "{}", p.name_any());
        let spec = p.spec.as_ref().unwrap();
        // Bound by the scheduler, not by the controller.
        assert!(spec.node_name.is_none());
        assert!(p.labels().contains_key(HASH));
        assert_eq!(
            p.labels()
                .get("pod-template-generation")
                .map(String::as_str),
            Some("1")
        );
        let tolerations = spec.tolerations.as_ref().unwrap();
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
            "node.kubernetes.io/unschedulable",
        ] {
            assert!(
                tolerations.iter().any(|t| t.key.as_deref() == Some(key)),
                "{key}"
            );
        }
        let r = &p.owner_references()[0];
        assert_eq!(
            (r.kind.as_str(), r.name.as_str(), r.controller),
            ("DaemonSet", "agent", Some(true))
        );
    }

    // A new node that matches gets a pod.
    create_node(&c, "n4", json!({"role": "edge"}), json!([])).await;
    let pods = wait_on_nodes(&c, &uid, &["n1", "n2", "n4"]).await;
    let n2_pod = pods["n2"].uid();

    // A node labelled out of the nodeSelector loses its pod; the others keep theirs.
    Api::<Node>::all(c.client.clone())
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"role": "core"}}})),
        )
        .await
        .unwrap();
    let pods = wait_on_nodes(&c, &uid, &["n2", "n4"]).await;
    assert_eq!(pods["n2"].uid(), n2_pod);
    wait_status(&c, "agent", "2 nodes desired and scheduled", |s| {
        s.desired_number_scheduled == 2
            && s.current_number_scheduled == 2
            && s.number_misscheduled == 0
    })
    .await;

    // A node that goes away takes its (never scheduled) pod with it.
    Api::<Node>::all(c.client.clone())
        .delete("n4", &Default::default())
        .await
        .unwrap();
    wait_on_nodes(&c, &uid, &["n2"]).await;

    wait_until(
        TIMEOUT,
        "SuccessfulCreate and SuccessfulDelete events",
        || async {
            (events_with(&c, "SuccessfulCreate", "agent", "Created pod: agent-").await == 3
                && events_with(&c, "SuccessfulDelete", "agent", "Deleted pod: agent-").await == 2)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn no_schedule_taints_keep_out_daemon_sets_that_do_not_tolerate_them() {
    let c = Cluster::start(&["daemonset"]).await;
    create_node(&c, "plain", json!({}), json!([])).await;
    create_node(
        &c,
        "db",
        json!({}),
        json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
    )
    .await;
    // Cordoned: daemon pods tolerate node.kubernetes.io/unschedulable.
    create_node(
        &c,
        "cordoned",
        json!({}),
        json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
    )
    .await;
    let plain = create_ds(&c, daemon_set("plain", json!({}))).await;
    let tolerant = create_ds(
        &c,
        daemon_set(
            "tolerant",
            json!({"tolerations": [{"key": "dedicated", "operator": "Equal",
                "value": "db", "effect": "NoSchedule"}]}),
        ),
    )
    .await;
    wait_on_nodes(&c, &plain.uid().unwrap(), &["cordoned", "plain"]).await;
    wait_on_nodes(&c, &tolerant.uid().unwrap(), &["cordoned", "db", "plain"]).await;
    wait_status(&c, "plain", "2 nodes desired", |s| {
        s.desired_number_scheduled == 2 && s.current_number_scheduled == 2
    })
    .await;

    // A NoSchedule taint added later keeps the pod already there: misscheduled.
    Api::<Node>::all(c.client.clone())
        .patch(
            "plain",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": [
                {"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}})),
        )
        .await
        .unwrap();
    wait_status(&c, "plain", "1 node desired, 1 misscheduled", |s| {
        s.desired_number_scheduled == 1
            && s.current_number_scheduled == 1
            && s.number_misscheduled == 1
    })
    .await;
    wait_on_nodes(&c, &plain.uid().unwrap(), &["cordoned", "plain"]).await;

    // A NoExecute taint the DaemonSet does not tolerate evicts its pod from the node.
    Api::<Node>::all(c.client.clone())
        .patch(
            "plain",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": [
                {"key": "dedicated", "value": "db", "effect": "NoExecute"}]}})),
        )
        .await
        .unwrap();
    wait_on_nodes(&c, &plain.uid().unwrap(), &["cordoned"]).await;
    wait_on_nodes(&c, &tolerant.uid().unwrap(), &["cordoned", "db"]).await;
}

#[tokio::test]
async fn status_counts_ready_pods_and_failed_pods_are_replaced() {
    let c = Cluster::start(&["daemonset"]).await;
    for n in ["a", "b", "c"] {
        create_node(&c, n, json!({}), json!([])).await;
    }
    let ds = create_ds(&c, daemon_set("agent", json!({}))).await;
    let uid = ds.uid().unwrap();
    let pods = wait_on_nodes(&c, &uid, &["a", "b", "c"]).await;
    wait_status(&c, "agent", "3 scheduled, none ready", |s| {
        s.desired_number_scheduled == 3
            && s.current_number_scheduled == 3
            && s.updated_number_scheduled == Some(3)
            && s.number_ready == 0
            && s.number_unavailable == Some(3)
    })
    .await;
    set_ready(&c, &pods["a"].name_any()).await.unwrap();
    set_ready(&c, &pods["b"].name_any()).await.unwrap();
    let ds = wait_status(&c, "agent", "2 ready and available", |s| {
        s.number_ready == 2 && s.number_available == Some(2) && s.number_unavailable == Some(1)
    })
    .await;
    let s = ds.status.unwrap();
    assert_eq!((s.desired_number_scheduled, s.number_misscheduled), (3, 0));

    // A failed daemon pod is deleted and replaced on its node.
    let failed = pods["c"].clone();
    Api::<Pod>::namespaced(c.client.clone(), NS)
        .patch_status(
            &failed.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed"}})),
        )
        .await
        .unwrap();
    let replaced = wait_until(TIMEOUT, "a new pod on c", || async {
        let pods = wait_on_nodes(&c, &uid, &["a", "b", "c"]).await;
        (pods["c"].uid() != failed.uid()).then(|| pods["c"].clone())
    })
    .await;
    assert!(!is_ready(&replaced));
    wait_until(TIMEOUT, "a FailedDaemonPod event", || async {
        (events_with(
            &c,
            "FailedDaemonPod",
            "agent",
            "Found failed daemon pod default/",
        )
        .await
            >= 1)
            .then_some(())
    })
    .await;
    assert!(Api::<Pod>::namespaced(c.client.clone(), NS)
        .get_opt(&failed.name_any())
        .await
        .unwrap()
        .is_none());
}

// kubectl blocks its thread: the in-process apiserver needs another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_replaces_pods_node_by_node_with_revisions_and_kubectl() {
    let c = Cluster::start(&["daemonset"]).await;
    let nodes = ["a", "b", "c"];
    for n in nodes {
        create_node(&c, n, json!({}), json!([])).await;
    }
    let ds = create_ds(&c, daemon_set("agent", json!({}))).await;
    let uid = ds.uid().unwrap();
    let pods = wait_on_nodes(&c, &uid, &nodes).await;
    for p in pods.values() {
        set_ready(&c, &p.name_any()).await.unwrap();
    }
    wait_status(&c, "agent", "3 available", |s| {
        s.number_available == Some(3) && s.updated_number_scheduled == Some(3)
    })
    .await;
    let out = c
        .api
        .kubectl_ok(&["rollout", "status", "daemonset/agent", "--watch=false"]);
    assert!(
        out.contains("daemon set \"agent\" successfully rolled out"),
        "{out}"
    );

    // The first revision: named by its hash, labelled with it, as are the pods.
    let revs = revisions_of(&c, &uid).await;
    assert_eq!(revs.len(), 1);
    let first_hash = revs[0].labels()[HASH].clone();
    assert_eq!(revs[0].name_any(), format!("agent-{first_hash}"));
    assert_eq!(revs[0].revision, 1);
    assert_eq!(
        revs[0].data.as_ref().unwrap().0["spec"]["template"]["$patch"],
        "replace"
    );
    assert!(pods.values().all(|p| p.labels()[HASH] == first_hash));

    // A new template rolls out one node at a time (maxUnavailable 1): the test marks new
    // pods ready as they appear and checks that at most one node ever lacks a ready pod.
    Api::<DaemonSet>::namespaced(c.client.clone(), NS)
        .patch(
            "agent",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "c", "image": "registry.k8s.io/pause:3.9"}]}}}})),
        )
        .await
        .unwrap();
    wait_until(TIMEOUT, "every node runs a ready new pod", || async {
        let pods = owned_pods(&c, &uid).await;
        let ready_nodes: BTreeSet<String> = pods
            .iter()
            .filter(|p| is_ready(p))
            .filter_map(pinned_node)
            .collect();
        assert!(
            ready_nodes.len() >= nodes.len() - 1,
            "more than one node without a ready pod: ready on {ready_nodes:?}"
        );
        let mut done = pods.len() == nodes.len() && ready_nodes.len() == nodes.len();
        for p in &pods {
            if p.labels()[HASH] == first_hash {
                done = false;
            } else if !is_ready(p) {
                done = false;
                // Gone already is fine: the next round sees its replacement.
                let _ = set_ready(&c, &p.name_any()).await;
            }
        }
        done.then_some(())
    })
    .await;
    let ds = wait_status(&c, "agent", "3 updated and available", |s| {
        s.updated_number_scheduled == Some(3) && s.number_available == Some(3)
    })
    .await;
    assert!(ds.status.unwrap().collision_count.unwrap_or(0) == 0);

    let mut revs = revisions_of(&c, &uid).await;
    revs.sort_by_key(|r| r.revision);
    assert_eq!(revs.iter().map(|r| r.revision).collect::<Vec<_>>(), [1, 2]);
    let new_hash = revs[1].labels()[HASH].clone();
    assert_ne!(new_hash, first_hash);
    for p in owned_pods(&c, &uid).await {
        assert_eq!(p.labels()[HASH], new_hash);
        assert_eq!(
            p.labels()
                .get("pod-template-generation")
                .map(String::as_str),
            Some("2")
        );
    }

    let out = c
        .api
        .kubectl_ok(&["rollout", "status", "daemonset/agent", "--watch=false"]);
    assert!(
        out.contains("daemon set \"agent\" successfully rolled out"),
        "{out}"
    );
    let history = c.api.kubectl_ok(&["rollout", "history", "daemonset/agent"]);
    let rows: Vec<&str> = history
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(rows, ["1", "2"], "{history}");

    // Undo: the first template is back, its revision renumbered 3, and the pods roll
    // back to its hash.
    let out = c.api.kubectl_ok(&["rollout", "undo", "daemonset/agent"]);
    assert!(out.contains("rolled back"), "{out}");
    wait_until(
        TIMEOUT,
        "every node runs a ready pod of the first revision",
        || async {
            let pods = owned_pods(&c, &uid).await;
            let mut done = pods.len() == nodes.len();
            for p in &pods {
                if p.labels()[HASH] != first_hash {
                    done = false;
                } else if !is_ready(p) {
                    done = false;
                    let _ = set_ready(&c, &p.name_any()).await;
                }
            }
            done.then_some(())
        },
    )
    .await;
    wait_until(TIMEOUT, "the first revision renumbered 3", || async {
        let revs = revisions_of(&c, &uid).await;
        revs.iter()
            .any(|r| r.labels()[HASH] == first_hash && r.revision == 3)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn surge_rolls_out_without_ever_leaving_a_node_unavailable() {
    let c = Cluster::start(&["daemonset"]).await;
    let nodes = ["a", "b"];
    for n in nodes {
        create_node(&c, n, json!({}), json!([])).await;
    }
    let mut ds = daemon_set("agent", json!({}));
    ds.spec.as_mut().unwrap().update_strategy = Some(
        serde_json::from_value(json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}))
        .unwrap(),
    );
    let ds = create_ds(&c, ds).await;
    let uid = ds.uid().unwrap();
    for p in wait_on_nodes(&c, &uid, &nodes).await.values() {
        set_ready(&c, &p.name_any()).await.unwrap();
    }
    wait_status(&c, "agent", "2 available", |s| {
        s.number_available == Some(2)
    })
    .await;
    let first_hash = owned_pods(&c, &uid).await[0].labels()[HASH].clone();
    Api::<DaemonSet>::namespaced(c.client.clone(), NS)
        .patch(
            "agent",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {"v": "2"}}}}})),
        )
        .await
        .unwrap();
    let max_pods = std::sync::atomic::AtomicUsize::new(0);
    wait_until(TIMEOUT, "both nodes run only a ready new pod", || async {
        let pods = owned_pods(&c, &uid).await;
        max_pods.fetch_max(pods.len(), std::sync::atomic::Ordering::Relaxed);
        let ready_nodes: BTreeSet<String> = pods
            .iter()
            .filter(|p| is_ready(p))
            .filter_map(pinned_node)
            .collect();
        assert_eq!(ready_nodes.len(), nodes.len(), "a node without a ready pod");
        // At most maxSurge (1) extra pod at a time.
        assert!(pods.len() <= nodes.len() + 1, "{} pods", pods.len());
        let mut done = pods.len() == nodes.len();
        for p in &pods {
            if p.labels()[HASH] == first_hash {
                done = false;
            } else if !is_ready(p) {
                done = false;
                let _ = set_ready(&c, &p.name_any()).await;
            }
        }
        done.then_some(())
    })
    .await;
    // The new pods came up next to the old ones.
    assert_eq!(max_pods.into_inner(), nodes.len() + 1);
}

#[tokio::test]
async fn on_delete_replaces_only_deleted_pods() {
    let c = Cluster::start(&["daemonset"]).await;
    for n in ["a", "b"] {
        create_node(&c, n, json!({}), json!([])).await;
    }
    let mut ds = daemon_set("agent", json!({}));
    ds.spec.as_mut().unwrap().update_strategy =
        Some(serde_json::from_value(json!({"type": "OnDelete"})).unwrap());
    let ds = create_ds(&c, ds).await;
    let uid = ds.uid().unwrap();
    let pods = wait_on_nodes(&c, &uid, &["a", "b"]).await;
    let old_hash = pods["a"].labels()[HASH].clone();
    Api::<DaemonSet>::namespaced(c.client.clone(), NS)
        .patch(
            "agent",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {"v": "2"}}}}})),
        )
        .await
        .unwrap();
    wait_status(
        &c,
        "agent",
        "the new template observed, nothing updated",
        |s| s.updated_number_scheduled == Some(0),
    )
    .await;
    Api::<Pod>::namespaced(c.client.clone(), NS)
        .delete(&pods["a"].name_any(), &Default::default())
        .await
        .unwrap();
    let now = wait_until(TIMEOUT, "a new pod on a", || async {
        let pods = wait_on_nodes(&c, &uid, &["a", "b"]).await;
        (pods["a"].labels()[HASH] != old_hash).then_some(pods)
    })
    .await;
    assert_eq!(now["b"].uid(), pods["b"].uid());
    assert_eq!(now["b"].labels()[HASH], old_hash);
}

#[tokio::test]
async fn adopts_matching_orphans_and_releases_pods_that_stop_matching() {
    let c = Cluster::start(&["daemonset"]).await;
    for n in ["a", "b"] {
        create_node(&c, n, json!({}), json!([])).await;
    }
    // An orphan already pinned to node a, matching the selector.
    let stray: Pod = serde_json::from_value(json!({
        "metadata": {"name": "stray", "labels": {"app": "agent"}},
        "spec": {
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": ["a"]}]}]}}},
        },
    }))
    .unwrap();
    let pods_api = Api::<Pod>::namespaced(c.client.clone(), NS);
    pods_api
        .create(&PostParams::default(), &stray)
        .await
        .unwrap();
    // OnDelete, so the adopted pod (not of the current revision) is not replaced.
    let mut ds = daemon_set("agent", json!({}));
    ds.spec.as_mut().unwrap().update_strategy =
        Some(serde_json::from_value(json!({"type": "OnDelete"})).unwrap());
    let uid = create_ds(&c, ds).await.uid().unwrap();
    let pods = wait_on_nodes(&c, &uid, &["a", "b"]).await;
    assert_eq!(pods["a"].name_any(), "stray");

    // The pod on b stops matching: released (no longer controlled), and replaced.
    let b_pod = pods["b"].name_any();
    pods_api
        .patch(
            &b_pod,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
        )
        .await
        .unwrap();
    let pods = wait_until(TIMEOUT, "a new pod on b", || async {
        let pods = wait_on_nodes(&c, &uid, &["a", "b"]).await;
        (pods["b"].name_any() != b_pod).then_some(pods)
    })
    .await;
    assert_eq!(pods["a"].name_any(), "stray");
    let released = pods_api.get(&b_pod).await.unwrap();
    assert!(released.owner_references().is_empty());
}

#[tokio::test]
async fn ready_pods_turn_available_after_min_ready_seconds() {
    let c = Cluster::start(&["daemonset"]).await;
    create_node(&c, "a", json!({}), json!([])).await;
    let mut ds = daemon_set("agent", json!({}));
    ds.spec.as_mut().unwrap().min_ready_seconds = Some(3);
    let uid = create_ds(&c, ds).await.uid().unwrap();
    let pods = wait_on_nodes(&c, &uid, &["a"]).await;
    let ready_at = std::time::Instant::now();
    set_ready(&c, &pods["a"].name_any()).await.unwrap();
    wait_status(&c, "agent", "1 ready", |s| s.number_ready == 1).await;
    // Nothing else changes: only the controller's own re-sync after minReadySeconds
    // makes the pod count as available.
    wait_status(&c, "agent", "1 available", |s| {
        s.number_available == Some(1) && s.number_unavailable == Some(0)
    })
    .await;
    assert!(ready_at.elapsed() >= std::time::Duration::from_secs(3));
}
