//! daemonset: runs one pod of each DaemonSet on every node that should run it (upstream's
//! pkg/controller/daemon).
//!
//! - A node should run a daemon pod when the template's `nodeSelector` and required node
//!   affinity match it and every NoSchedule/NoExecute taint is tolerated, counting the
//!   tolerations upstream adds to daemon pods (not-ready, unreachable, disk/memory/pid
//!   pressure, unschedulable, and network-unavailable for hostNetwork pods). A node whose
//!   untolerated taints are only NoSchedule keeps the pod it already has.
//! - Pods go through the default scheduler, as upstream since 1.12: a created pod carries
//!   required node affinity `metadata.name In [<node>]` (upstream's
//!   `ReplaceDaemonSetPodNodeNameNodeAffinity`), never `spec.nodeName`.
//! - Extra pods on a node are deleted (the oldest stays), so are pods on nodes that should
//!   no longer run one, unscheduled pods aimed at nodes that are gone, succeeded pods, and
//!   failed pods (with a per-node exponential backoff, 1 s up to 15 min, so a kubelet that
//!   keeps rejecting the pod is not hot-looped).
//! - Pods and ControllerRevisions are claimed as upstream's ControllerRefManager does:
//!   matching orphans adopted (after a fresh read of the DaemonSet), owned objects that
//!   stop matching released.
//! - Expectations keep a lagging pod cache from causing a second round of creations;
//!   creations go in slow-start batches of 1, 2, 4, ... (at most 250 per sync). A sync
//!   that deletes pods creates none: the creations follow in the next sync, once the
//!   deletions have been seen (the shared `Expectations` tracks one kind of change per
//!   owner at a time).
//! - ControllerRevisions hold the template as upstream's `getPatch` (`spec.template` with
//!   `"$patch": "replace"`); pods carry the current revision's `controller-revision-hash`
//!   label and the deprecated `pod-template-generation` label. Old revisions no pod uses
//!   are pruned beyond `revisionHistoryLimit`; a name collision bumps
//!   `status.collisionCount`. The hash is `history::hash_revision` of the revision data
//!   (upstream hashes the template with Go's object printer, which cannot be
//!   reproduced); the template generation is upstream's
//!   `deprecated.daemonset.template.generation` annotation when set, else
//!   `metadata.generation` (our apiserver does not write the annotation).
//! - RollingUpdate: without surge, old pods are deleted so that at most maxUnavailable
//!   desired nodes lack an available new pod; with maxSurge, a new pod is created next to
//!   the old one and the old one deleted once the new one is available (minReadySeconds
//!   honoured). OnDelete: only pods deleted by someone else are replaced.
//! - Every node change re-syncs every DaemonSet (without the old node at hand we cannot
//!   tell whose eligibility changed); fine at homelab sizes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_types::selector::node::pod_spec_matches_node;
use api_types::selector::LabelSelector;
use api_types::taints::tolerates;
use futures::future::{self, BoxFuture};
use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec,
    PodTemplateSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{debug, warn};

use super::controller_utils::{
    adopt as adopt_object, next_available, only_uid, publish_event, release as release_object,
    PodOwners,
};
use super::controller_utils::{
    controller_of, controller_of_kind, controller_ref, is_pod_available, namespace_terminating,
    pod_from_template, ready_since, slow_start_batch, Expectations, EXPECTATIONS_TIMEOUT,
};
use super::deployment::rollout::scaled_value;
use super::history::{self, CONTROLLER_REVISION_HASH_LABEL};
use super::Context;
use crate::cache::{Owned, Pod};
use crate::informers::key;

pub const NAME: &str = "daemonset";
const COMPONENT: &str = "daemonset-controller";

/// Upstream's `BurstReplicas` for DaemonSets.
const BURST_REPLICAS: usize = 250;
/// Upstream's `SlowStartInitialBatchSize`.
const SLOW_START_INITIAL_BATCH: usize = 1;
/// The deprecated label with the DaemonSet's template generation (upstream's
/// `DaemonSetTemplateGenerationKey`).
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
/// Where upstream's apiserver keeps the template generation; absent here, the DaemonSet's
/// `metadata.generation` stands in for it.
const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";
const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;
const FAILED_POD_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const FAILED_POD_BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);

const NO_SCHEDULE: &str = "NoSchedule";
const NO_EXECUTE: &str = "NoExecute";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating pods for {owner}: {source}")]
    CreatePod {
        owner: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting pod {pod}: {source}")]
    DeletePod {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("adopting {object}: {source}")]
    Adopt {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("releasing {object}: {source}")]
    Release {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading {owner} before adopting pods: {source}")]
    Recheck {
        owner: String,
        #[source]
        source: kube::Error,
    },
    #[error("{owner} is gone or being deleted: not adopting pods")]
    CannotAdopt { owner: String },
    #[error("recording the revision history of {owner}: {source}")]
    History {
        owner: String,
        #[source]
        source: kube::Error,
    },
    #[error("{owner}: invalid rolling update: {message}")]
    Strategy { owner: String, message: String },
    #[error("updating the status of {owner}: {source}")]
    Status {
        owner: String,
        #[source]
        source: kube::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub fn start(ctx: &Context) -> BoxFuture<'static, ()> {
    let daemon_sets = ctx.informers.store::<DaemonSet>();
    let state = Arc::new(State {
        ctx: ctx.clone(),
        recorder: ctx.recorder(COMPONENT),
        daemon_sets: daemon_sets.clone(),
        nodes: ctx.informers.store::<Node>(),
        pods: ctx.informers.store::<Pod>(),
        revisions: ctx.informers.store::<ControllerRevision>(),
        expectations: Expectations::default(),
        pod_owners: PodOwners::default(),
        backoff: FailedPodBackoff::default(),
    });
    // A deleted DaemonSet's expectations go with it.
    let ds_events = {
        let state = state.clone();
        ctx.informers.subscribe::<DaemonSet>().inspect(move |ds| {
            let uid = ds.uid().unwrap_or_default();
            let live = state
                .daemon_sets
                .get(&ObjectRef::from_obj(ds.as_ref()))
                .is_some_and(|cur| cur.uid().as_deref() == Some(uid.as_str()));
            if !live {
                state.expectations.forget(&uid);
            }
        })
    };
    let pod_state = state.clone();
    let node_state = state.clone();
    Controller::for_shared_stream(ds_events, daemon_sets)
        .with_config(
            controller::Config::default().concurrency(ctx.options.concurrent_daemonset_syncs),
        )
        .watches_shared_stream(ctx.informers.subscribe::<Pod>(), move |pod: Arc<Pod>| {
            pod_state.owners_of(&pod)
        })
        .watches_shared_stream(
            ctx.informers.subscribe::<Node>(),
            move |_node: Arc<Node>| {
                node_state
                    .daemon_sets
                    .state()
                    .iter()
                    .map(|ds| ObjectRef::from_obj(ds.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .watches_shared_stream(
            ctx.informers.subscribe::<ControllerRevision>(),
            |rev: Arc<ControllerRevision>| {
                controller_of_kind::<DaemonSet, _>(rev.as_ref())
                    .map(|c| ObjectRef::new(&c.name).within(&rev.namespace().unwrap_or_default()))
            },
        )
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .boxed()
}

struct State {
    ctx: Context,
    recorder: Recorder,
    daemon_sets: Store<DaemonSet>,
    nodes: Store<Node>,
    pods: Store<Pod>,
    revisions: Store<ControllerRevision>,
    expectations: Expectations,
    pod_owners: PodOwners,
    /// Failed-pod backoff per `<daemonset uid>/<node>` (upstream's `failedPodsBackoff`).
    backoff: FailedPodBackoff,
}

/// One entry of upstream's `flowcontrol.Backoff`.
struct Backoff {
    delay: Duration,
    last_update: Instant,
}

/// Upstream's `failedPodsBackoff`: per `<daemonset uid>/<node>`, how long to leave a
/// failed pod before deleting it again.
#[derive(Default)]
struct FailedPodBackoff(Mutex<HashMap<String, Backoff>>);

impl FailedPodBackoff {
    /// Whether the failed pods of `key` are still backing off; if not, starts (or
    /// doubles) the backoff. Returns the delay to wait when backing off.
    fn check(&self, key: &str, now: Instant) -> Option<Duration> {
        let mut all = self.0.lock();
        all.retain(|_, b| now.duration_since(b.last_update) <= 2 * FAILED_POD_BACKOFF_MAX);
        if let Some(b) = all.get(key) {
            if now.duration_since(b.last_update) < b.delay {
                return Some(b.delay);
            }
        }
        let delay = all.get(key).map_or(FAILED_POD_BACKOFF_INITIAL, |b| {
            (2 * b.delay).min(FAILED_POD_BACKOFF_MAX)
        });
        all.insert(
            key.to_string(),
            Backoff {
                delay,
                last_update: now,
            },
        );
        None
    }
}

impl State {
    /// The DaemonSets a pod change concerns: its controller and the one before, or for an
    /// orphan every DaemonSet whose selector matches it. Also records what the change
    /// means for the controller's expectations.
    fn owners_of(&self, pod: &Pod) -> Vec<ObjectRef<DaemonSet>> {
        self.pod_owners
            .owners_of(pod, &self.pods, &self.expectations, |ns| {
                self.daemon_sets
                    .state()
                    .iter()
                    .filter(|ds| ds.namespace().as_deref() == Some(ns))
                    .filter(|ds| selector(ds).is_ok_and(|s| s.matches(pod.labels())))
                    .map(|ds| ObjectRef::from_obj(ds.as_ref()))
                    .collect()
            })
    }

    /// Publishes an event in the background; an event about one pod names it as
    /// `related` and is its own Event object (see replicaset's `State::event`).
    fn event(
        &self,
        ds: &DaemonSet,
        pod: Option<ObjectRefOf>,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let recorder = match pod {
            Some(_) => self.ctx.recorder(COMPONENT),
            None => self.recorder.clone(),
        };
        let reference = ds.object_ref(&());
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: pod,
        };
        publish_event(recorder, reference, event);
    }
}

type ObjectRefOf = k8s_openapi::api::core::v1::ObjectReference;

fn selector(ds: &DaemonSet) -> Result<LabelSelector, String> {
    let spec = ds.spec.as_ref().ok_or("no spec")?;
    LabelSelector::from_meta(&spec.selector).map_err(|e| e.to_string())
}

fn template(ds: &DaemonSet) -> PodTemplateSpec {
    ds.spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default()
}

fn min_ready_seconds(ds: &DaemonSet) -> i32 {
    ds.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

async fn reconcile(ds: Arc<DaemonSet>, state: Arc<State>) -> Result<Action> {
    let metrics = state.ctx.metrics.clone();
    metrics.observe(NAME, sync(ds, state)).await
}

fn error_policy(_ds: Arc<DaemonSet>, error: &Error, _state: Arc<State>) -> Action {
    warn!(%error, "sync failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Upstream's `syncDaemonSet`.
async fn sync(ds: Arc<DaemonSet>, state: Arc<State>) -> Result<Action> {
    if ds.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let sel = match selector(&ds) {
        Ok(s) => s,
        Err(error) => {
            // Validation keeps these out; nothing can be done until the spec changes.
            warn!(daemonset = %key(ds.as_ref()), %error, "invalid selector");
            return Ok(Action::await_change());
        }
    };
    if sel.is_empty() {
        state.event(
            &ds,
            None,
            EventType::Warning,
            "SelectingAll",
            "This daemon set is selecting all pods. A non-empty selector is required.".into(),
        );
        return Ok(Action::await_change());
    }
    let uid = ds.uid().unwrap_or_default();
    let ns = ds.namespace().unwrap_or_default();
    let nodes = state.nodes.state();
    let (cur, old, collision_count) = construct_history(&ds, &sel, &state).await?;
    let hash = cur
        .labels()
        .get(CONTROLLER_REVISION_HASH_LABEL)
        .cloned()
        .unwrap_or_else(|| cur.name_any());
    let satisfied = state.expectations.satisfied(&uid, |name| {
        state.pods.get(&ObjectRef::new(name).within(&ns)).map(|p| {
            (
                p.uid().unwrap_or_default(),
                p.metadata.deletion_timestamp.is_some(),
            )
        })
    });
    let pods = claim_pods(&ds, &sel, &state).await?;
    let daemon = Daemon::new(&ds, hash);
    let now = Timestamp::now();
    let mut again: Option<Duration> = None;
    let mut updated = Ok(());
    if satisfied {
        let by_node = nodes_to_daemon_pods(&pods);
        let plan = manage(
            &daemon,
            &nodes,
            &by_node,
            &state.backoff,
            now,
            Instant::now(),
        );
        again = plan.again;
        for note in plan.failed {
            state.event(&ds, None, EventType::Warning, "FailedDaemonPod", note);
        }
        let rolling = daemon.strategy_type() == "RollingUpdate";
        updated = if !plan.delete.is_empty() || !plan.create.is_empty() {
            sync_nodes(&ds, &daemon, plan.delete, plan.create, &state).await
        } else if rolling {
            match rolling_update(&daemon, &nodes, &by_node, now) {
                Ok(plan) => sync_nodes(&ds, &daemon, plan.delete, plan.create, &state).await,
                Err(e) => Err(e),
            }
        } else {
            Ok(())
        };
        if updated.is_ok() {
            updated = cleanup_history(&ds, &old, &pods, &state).await;
        }
    }
    // The status is written even when updating failed (upstream's syncDaemonSet too).
    let status = calculate_status(&daemon, &nodes, &nodes_to_daemon_pods(&pods), now);
    let stored = update_status(&ds, status, collision_count, satisfied, &state).await;
    updated?;
    stored?;
    // Ready pods turn available with time alone: look again when the next one does
    // (upstream re-syncs after minReadySeconds while numberReady != numberAvailable).
    if let Some(d) = next_available(&pods, min_ready_seconds(&ds), now) {
        again = Some(again.map_or(d, |a| a.min(d)));
    }
    if !satisfied {
        // The informer's events wake us; the timeout is the backstop.
        again = Some(again.map_or(EXPECTATIONS_TIMEOUT, |a| a.min(EXPECTATIONS_TIMEOUT)));
    }
    Ok(again.map_or_else(Action::await_change, Action::requeue))
}

/// What the controller computes from a DaemonSet once per sync: the template, the
/// tolerations daemon pods get, the current hash and template generation.
struct Daemon {
    spec: PodSpec,
    template: PodTemplateSpec,
    tolerations: Vec<Toleration>,
    hash: String,
    generation: Option<i64>,
    min_ready_seconds: i32,
    strategy_type: String,
    max_surge: Option<IntOrString>,
    max_unavailable: Option<IntOrString>,
    owner: String,
    uid: String,
}

impl Daemon {
    fn new(ds: &DaemonSet, hash: String) -> Daemon {
        let template = template(ds);
        let mut spec = template.spec.clone().unwrap_or_default();
        add_daemon_tolerations(&mut spec);
        let strategy = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
        let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
        Daemon {
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            spec,
            template,
            hash,
            generation: template_generation(ds),
            min_ready_seconds: min_ready_seconds(ds),
            strategy_type: strategy
                .and_then(|s| s.type_.clone())
                .unwrap_or_else(|| "RollingUpdate".into()),
            max_surge: rolling.and_then(|r| r.max_surge.clone()),
            max_unavailable: rolling.and_then(|r| r.max_unavailable.clone()),
            owner: key(ds),
            uid: ds.uid().unwrap_or_default(),
        }
    }

    fn strategy_type(&self) -> &str {
        &self.strategy_type
    }

    /// Upstream's `NodeShouldRunDaemonPod`: (should run a new pod, may keep the one it
    /// has).
    fn should_run(&self, node: &Node) -> (bool, bool) {
        let name = node.name_any();
        if self
            .spec
            .node_name
            .as_deref()
            .is_some_and(|n| !n.is_empty() && n != name)
        {
            return (false, false);
        }
        if !pod_spec_matches_node(&self.spec, &name, node.labels()) {
            return (false, false);
        }
        let taints: &[Taint] = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or_default();
        let untolerated = |effect: &str| {
            taints
                .iter()
                .filter(|t| t.effect == effect)
                .any(|t| !self.tolerations.iter().any(|tol| tolerates(tol, t)))
        };
        if untolerated(NO_EXECUTE) {
            return (false, false);
        }
        if untolerated(NO_SCHEDULE) {
            return (false, true);
        }
        (true, true)
    }

    fn allows_surge(&self) -> bool {
        self.strategy_type == "RollingUpdate"
            && self
                .max_surge
                .as_ref()
                .is_some_and(|s| scaled_value(s, 1, true).is_ok_and(|v| v > 0))
    }

    /// Upstream's `IsPodUpdated`: the current hash, or the current template generation.
    fn is_updated(&self, pod: &Pod) -> bool {
        let labels = pod.labels();
        let generation_matches = self.generation.is_some_and(|g| {
            labels.get(TEMPLATE_GENERATION_LABEL).map(String::as_str) == Some(&g.to_string())
        });
        let hash_matches =
            !self.hash.is_empty() && labels.get(CONTROLLER_REVISION_HASH_LABEL) == Some(&self.hash);
        hash_matches || generation_matches
    }

    /// Upstream's `CreatePodTemplate` + `ReplaceDaemonSetPodNodeNameNodeAffinity`: the
    /// pod for `node`.
    fn pod_for(&self, ds: &DaemonSet, node: &str) -> k8s_openapi::api::core::v1::Pod {
        let mut template = self.template.clone();
        let meta = template.metadata.get_or_insert_with(Default::default);
        let labels = meta.labels.get_or_insert_with(BTreeMap::new);
        if let Some(g) = self.generation {
            labels.insert(TEMPLATE_GENERATION_LABEL.into(), g.to_string());
        }
        if !self.hash.is_empty() {
            labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), self.hash.clone());
        }
        let mut spec = self.spec.clone();
        spec.affinity = Some(node_name_affinity(spec.affinity.take(), node));
        template.spec = Some(spec);
        pod_from_template(ds, &template)
    }
}

/// The template generation: upstream's annotation, else `metadata.generation`.
fn template_generation(ds: &DaemonSet) -> Option<i64> {
    ds.annotations()
        .get(TEMPLATE_GENERATION_ANNOTATION)
        .and_then(|g| g.parse().ok())
        .or(ds.meta().generation)
}

/// Upstream's `AddOrUpdateDaemonPodTolerations`.
fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![
        ("node.kubernetes.io/not-ready", NO_EXECUTE),
        ("node.kubernetes.io/unreachable", NO_EXECUTE),
        ("node.kubernetes.io/disk-pressure", NO_SCHEDULE),
        ("node.kubernetes.io/memory-pressure", NO_SCHEDULE),
        ("node.kubernetes.io/pid-pressure", NO_SCHEDULE),
        ("node.kubernetes.io/unschedulable", NO_SCHEDULE),
    ];
    if spec.host_network == Some(true) {
        wanted.push(("node.kubernetes.io/network-unavailable", NO_SCHEDULE));
    }
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, effect) in wanted {
        let t = Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Toleration::default()
        };
        // Upstream's AddOrUpdateTolerationInPodSpec: one with the same key, operator,
        // value and effect is replaced (dropping e.g. its tolerationSeconds).
        match tolerations.iter_mut().find(|o| {
            o.key == t.key
                && o.operator.as_deref().unwrap_or("Equal") == "Exists"
                && o.value.as_deref().unwrap_or("").is_empty()
                && o.effect == t.effect
        }) {
            Some(existing) => *existing = t,
            None => tolerations.push(t),
        }
    }
}

/// Upstream's `ReplaceDaemonSetPodNodeNameNodeAffinity`: the required node affinity
/// becomes the single term `metadata.name In [node]`; the rest of the affinity is kept.
fn node_name_affinity(affinity: Option<Affinity>, node: &str) -> Affinity {
    let selector = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
        }],
    };
    let mut affinity = affinity.unwrap_or_default();
    affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default)
        .required_during_scheduling_ignored_during_execution = Some(selector);
    affinity
}

/// Upstream's `GetTargetNodeName`: the pod's node, or the node its affinity pins.
fn target_node(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n);
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| match r.values.as_deref() {
            Some([one]) => Some(one.as_str()),
            _ => None,
        })
}

/// Pods by the node they run (or are meant to run) on.
fn nodes_to_daemon_pods(pods: &[Arc<Pod>]) -> BTreeMap<String, Vec<Arc<Pod>>> {
    let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for pod in pods {
        match target_node(pod) {
            Some(n) => by_node.entry(n.to_string()).or_default().push(pod.clone()),
            None => debug!(pod = %key(pod.as_ref()), "daemon pod without a target node"),
        }
    }
    by_node
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), Some("Succeeded" | "Failed"))
}

/// Upstream's `podByCreationTimestampAndPhase`: scheduled pods first, then the oldest,
/// then by name.
fn sort_oldest_first(pods: &mut [Arc<Pod>]) {
    let scheduled = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
    };
    pods.sort_by(|a, b| {
        scheduled(b)
            .cmp(&scheduled(a))
            .then_with(|| {
                let t = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
                t(a).cmp(&t(b))
            })
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
}

/// Pods to delete and nodes to create a pod on, and when to look again.
#[derive(Default)]
struct Plan {
    delete: Vec<Arc<Pod>>,
    create: Vec<String>,
    again: Option<Duration>,
    /// `FailedDaemonPod` event messages.
    failed: Vec<String>,
}

/// Upstream's `manage` (with `podsShouldBeOnNode` and `getUnscheduledPodsWithoutNode`).
fn manage(
    daemon: &Daemon,
    nodes: &[Arc<Node>],
    by_node: &BTreeMap<String, Vec<Arc<Pod>>>,
    backoff: &FailedPodBackoff,
    now: Timestamp,
    instant: Instant,
) -> Plan {
    let mut plan = Plan::default();
    for node in nodes {
        let name = node.name_any();
        let pods = by_node.get(&name).map(Vec::as_slice).unwrap_or_default();
        let (should_run, should_continue) = daemon.should_run(node);
        if should_run && pods.is_empty() {
            plan.create.push(name);
            continue;
        }
        if !should_continue {
            plan.delete.extend(
                pods.iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .cloned(),
            );
            continue;
        }
        let mut running = Vec::new();
        for pod in pods {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            match phase(pod) {
                Some("Failed") => {
                    // The controller often fights a kubelet that rejects the pod: back off.
                    let backoff_key = format!("{}/{name}", daemon.uid);
                    if let Some(delay) = backoff.check(&backoff_key, instant) {
                        plan.again = Some(plan.again.map_or(delay, |a| a.min(delay)));
                        continue;
                    }
                    plan.delete.push(pod.clone());
                    plan.failed.push(format!(
                        "Found failed daemon pod {} on node {name}, will try to kill it",
                        key(pod.as_ref())
                    ));
                }
                Some("Succeeded") => plan.delete.push(pod.clone()),
                _ => running.push(pod.clone()),
            }
        }
        if running.len() <= 1 {
            continue;
        }
        sort_oldest_first(&mut running);
        if !daemon.allows_surge() {
            // More than one pod on the node: all but the oldest go.
            plan.delete.extend(running.into_iter().skip(1));
            continue;
        }
        // With surge, two pods may share a node only while the oldest new one is not
        // available yet and the oldest old one is ready.
        let mut oldest_new = None;
        let mut oldest_old = None;
        for pod in running {
            let slot = if daemon.is_updated(&pod) {
                &mut oldest_new
            } else {
                &mut oldest_old
            };
            if slot.is_none() {
                *slot = Some(pod);
            } else {
                plan.delete.push(pod);
            }
        }
        if let (Some(new), Some(old)) = (oldest_new, oldest_old) {
            if ready_since(&old).is_none() || is_pod_available(&new, daemon.min_ready_seconds, now)
            {
                plan.delete.push(old);
            }
        }
    }
    let known: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
    for (node, pods) in by_node {
        if known.contains(node) {
            continue;
        }
        plan.delete.extend(
            pods.iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && p.spec
                            .as_ref()
                            .and_then(|s| s.node_name.as_deref())
                            .is_none_or(str::is_empty)
                })
                .cloned(),
        );
    }
    plan
}

/// Upstream's `rollingUpdate`: which old pods to delete (no surge) or which nodes get a
/// new pod next to the old one (surge).
fn rolling_update(
    daemon: &Daemon,
    nodes: &[Arc<Node>],
    by_node: &BTreeMap<String, Vec<Arc<Pod>>>,
    now: Timestamp,
) -> Result<Plan> {
    let mut node_pods: BTreeMap<String, Vec<Arc<Pod>>> = by_node.clone();
    let mut desired = 0;
    for node in nodes {
        if daemon.should_run(node).0 {
            desired += 1;
            node_pods.entry(node.name_any()).or_default();
        }
    }
    let scaled = |v: &Option<IntOrString>, default: i32| -> Result<i32> {
        match v {
            None => Ok(default),
            Some(v) => scaled_value(v, desired, true).map_err(|message| Error::Strategy {
                owner: daemon.owner.clone(),
                message,
            }),
        }
    };
    let max_surge = scaled(&daemon.max_surge, 0)?.max(0) as usize;
    let mut max_unavailable = scaled(&daemon.max_unavailable, 1)?.max(0) as usize;
    if desired > 0 && max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    let available = |p: &Pod| is_pod_available(p, daemon.min_ready_seconds, now);
    let mut plan = Plan::default();
    if max_surge == 0 {
        let mut unavailable = 0;
        let mut replacements = Vec::new();
        let mut candidates = Vec::new();
        for pods in node_pods.values() {
            match updated_pods_on_node(daemon, pods) {
                None | Some((None, None)) | Some((Some(_), Some(_))) => unavailable += 1,
                Some((Some(new), None)) => {
                    if !available(&new) {
                        unavailable += 1;
                    }
                }
                Some((None, Some(old))) => {
                    if !available(&old) {
                        replacements.push(old);
                        unavailable += 1;
                    } else if unavailable < max_unavailable {
                        candidates.push(old);
                    }
                }
            }
        }
        let room = max_unavailable
            .saturating_sub(unavailable)
            .min(candidates.len());
        plan.delete = replacements;
        plan.delete.extend(candidates.into_iter().take(room));
        return Ok(plan);
    }
    let mut surging = 0;
    let mut allowed = Vec::new();
    let mut candidates = Vec::new();
    for (node, pods) in &node_pods {
        match updated_pods_on_node(daemon, pods) {
            None => surging += 1,
            Some((_, None)) => {}
            Some((None, Some(old))) => {
                if !available(&old) {
                    allowed.push(node.clone());
                } else if surging < max_surge {
                    candidates.push(node.clone());
                }
            }
            Some((Some(new), Some(old))) => {
                if available(&new) {
                    plan.delete.push(old);
                } else {
                    surging += 1;
                }
            }
        }
    }
    let room = max_surge.saturating_sub(surging).min(candidates.len());
    plan.create = allowed;
    plan.create.extend(candidates.into_iter().take(room));
    Ok(plan)
}

/// Upstream's `findUpdatedPodsOnNode`: the node's new and old pod, or None when there
/// is more than one of either.
#[allow(clippy::type_complexity)]
fn updated_pods_on_node(
    daemon: &Daemon,
    pods: &[Arc<Pod>],
) -> Option<(Option<Arc<Pod>>, Option<Arc<Pod>>)> {
    let mut new = None;
    let mut old = None;
    for pod in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let slot = if daemon.is_updated(pod) {
            &mut new
        } else {
            &mut old
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(pod.clone());
    }
    Some((new, old))
}

/// Upstream's `syncNodes`: deletes, or (when there is nothing to delete) creates in
/// slow-start batches, each under expectations.
async fn sync_nodes(
    ds: &Arc<DaemonSet>,
    daemon: &Daemon,
    mut delete: Vec<Arc<Pod>>,
    mut create: Vec<String>,
    state: &Arc<State>,
) -> Result<()> {
    let uid = ds.uid().unwrap_or_default();
    let mut seen = HashSet::new();
    delete.retain(|p| seen.insert(p.uid().unwrap_or_default()));
    delete.truncate(BURST_REPLICAS);
    create.truncate(BURST_REPLICAS);
    if !delete.is_empty() {
        state.expectations.expect_deletions(
            &uid,
            delete
                .iter()
                .map(|p| (p.uid().unwrap_or_default(), p.name_any())),
        );
        let results = future::join_all(delete.iter().map(|p| delete_pod(ds, p, state))).await;
        return results
            .into_iter()
            .find_map(Result::err)
            .map_or(Ok(()), Err);
    }
    if create.is_empty() {
        return Ok(());
    }
    let n = create.len();
    state.expectations.expect_creations(&uid, n);
    let queue = Mutex::new(create.into_iter());
    let (attempted, result) = slow_start_batch(n, SLOW_START_INITIAL_BATCH, || {
        let node = queue.lock().next().unwrap_or_default();
        create_pod(ds, daemon, node, state)
    })
    .await;
    // Pods never tried will never be seen.
    for _ in attempted..n {
        state.expectations.creation_failed(&uid);
    }
    result
}

async fn create_pod(
    ds: &Arc<DaemonSet>,
    daemon: &Daemon,
    node: String,
    state: &Arc<State>,
) -> Result<()> {
    let uid = ds.uid().unwrap_or_default();
    let pod = daemon.pod_for(ds, &node);
    let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(
        state.ctx.client.clone(),
        &ds.namespace().unwrap_or_default(),
    );
    match api.create(&PostParams::default(), &pod).await {
        Ok(pod) => {
            state
                .expectations
                .creation_done(&uid, pod.uid().unwrap_or_default(), pod.name_any());
            state.event(
                ds,
                Some(pod.object_ref(&())),
                EventType::Normal,
                "SuccessfulCreate",
                format!("Created pod: {}", pod.name_any()),
            );
            Ok(())
        }
        Err(e) => {
            state.expectations.creation_failed(&uid);
            match e {
                // The namespace is going away: nothing to report (upstream ignores it too).
                kube::Error::Api(s) if namespace_terminating(&s) => Ok(()),
                source => {
                    state.event(
                        ds,
                        None,
                        EventType::Warning,
                        "FailedCreate",
                        format!("Error creating: {source}"),
                    );
                    Err(Error::CreatePod {
                        owner: key(ds.as_ref()),
                        source,
                    })
                }
            }
        }
    }
}

async fn delete_pod(ds: &Arc<DaemonSet>, pod: &Arc<Pod>, state: &Arc<State>) -> Result<()> {
    let uid = ds.uid().unwrap_or_default();
    let pod_uid = pod.uid().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(
        state.ctx.client.clone(),
        &ds.namespace().unwrap_or_default(),
    );
    let params = only_uid(Some(pod_uid.clone()));
    match api.delete(&pod.name_any(), &params).await {
        Ok(_) => {
            state.event(
                ds,
                Some(pod.object_ref(&())),
                EventType::Normal,
                "SuccessfulDelete",
                format!("Deleted pod: {}", pod.name_any()),
            );
            Ok(())
        }
        Err(e) => {
            // A failed delete is never seen by the informer.
            state.expectations.deletion_failed(&uid, &pod_uid);
            match e {
                kube::Error::Api(s) if s.is_not_found() || s.is_conflict() => Ok(()),
                source => {
                    state.event(
                        ds,
                        None,
                        EventType::Warning,
                        "FailedDelete",
                        format!("Error deleting: {source}"),
                    );
                    Err(Error::DeletePod {
                        pod: key(pod.as_ref()),
                        source,
                    })
                }
            }
        }
    }
}

/// Upstream's `getDaemonPods`: the pods the DaemonSet controls (claimed); pods both
/// deleted and finished are left out.
async fn claim_pods(
    ds: &Arc<DaemonSet>,
    sel: &LabelSelector,
    state: &Arc<State>,
) -> Result<Vec<Arc<Pod>>> {
    let ns = ds.namespace();
    let pods = state
        .pods
        .state()
        .into_iter()
        .filter(|p| {
            p.namespace() == ns && !(p.metadata.deletion_timestamp.is_some() && is_terminal(p))
        })
        .collect();
    claim(ds, sel, pods, Pod::labels, state).await
}

/// Upstream's `ControllerRefManager` claims: of `objects` (in the DaemonSet's namespace),
/// those the DaemonSet controls, after adopting matching orphans and releasing owned
/// ones that no longer match. `labels` reads an object's labels (the pod cache keeps
/// them outside the metadata).
async fn claim<K>(
    ds: &Arc<DaemonSet>,
    sel: &LabelSelector,
    objects: Vec<Arc<K>>,
    labels: fn(&K) -> &BTreeMap<String, String>,
    state: &State,
) -> Result<Vec<Arc<K>>>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Owned
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let uid = ds.uid().unwrap_or_default();
    let ns = ds.namespace().unwrap_or_default();
    let mut claimed = Vec::new();
    let mut adopt = Vec::new();
    let mut release = Vec::new();
    for obj in objects {
        let matches = sel.matches(labels(&obj));
        match controller_of(obj.as_ref()) {
            Some(c) if c.uid != uid => {}
            Some(_) if matches => claimed.push(obj),
            Some(_) => release.push(obj),
            None if matches && obj.meta().deletion_timestamp.is_none() => adopt.push(obj),
            None => {}
        }
    }
    let api: Api<K> = Api::namespaced(state.ctx.client.clone(), &ns);
    if !adopt.is_empty() {
        // Upstream's RecheckDeletionTimestamp: adopt only for a DaemonSet that is still
        // the same object and not being deleted, read fresh.
        let fresh = Api::<DaemonSet>::namespaced(state.ctx.client.clone(), &ns)
            .get_opt(&ds.name_any())
            .await
            .map_err(|source| Error::Recheck {
                owner: key(ds.as_ref()),
                source,
            })?;
        if !fresh.is_some_and(|f| {
            f.uid().as_deref() == Some(uid.as_str()) && f.meta().deletion_timestamp.is_none()
        }) {
            return Err(Error::CannotAdopt {
                owner: key(ds.as_ref()),
            });
        }
        let reference = controller_ref(ds.as_ref());
        for obj in adopt {
            match adopt_object(&api, &reference, obj.as_ref()).await {
                Ok(Some(_)) => claimed.push(obj),
                Ok(None) => {}
                Err(source) => {
                    return Err(Error::Adopt {
                        object: key(obj.as_ref()),
                        source,
                    })
                }
            }
        }
    }
    for obj in release {
        if let Err(source) = release_object(&api, &uid, obj.as_ref()).await {
            return Err(Error::Release {
                object: key(obj.as_ref()),
                source,
            });
        }
    }
    Ok(claimed)
}

/// Upstream's `getPatch`: the revision data, the template to replace the DaemonSet's
/// with.
pub fn revision_data(ds: &DaemonSet) -> serde_json::Value {
    let mut template = serde_json::to_value(template(ds)).unwrap_or_else(|_| json!({}));
    if let Some(obj) = template.as_object_mut() {
        obj.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// Upstream's `constructHistory`: the current revision (created, or renumbered to be the
/// newest), the old ones, and the collision count the current one was named with.
async fn construct_history(
    ds: &Arc<DaemonSet>,
    sel: &LabelSelector,
    state: &State,
) -> Result<(
    k8s_openapi::api::apps::v1::ControllerRevision,
    Vec<Arc<ControllerRevision>>,
    Option<i32>,
)> {
    let data = revision_data(ds);
    // Upstream's controlledHistories: the revisions claimed like pods.
    let ns = ds.namespace();
    let in_namespace = state
        .revisions
        .state()
        .into_iter()
        .filter(|r| r.namespace() == ns)
        .collect();
    let mut revisions = claim(ds, sel, in_namespace, ResourceExt::labels, state).await?;
    history::sort_revisions(&mut revisions);
    let (mut current, old): (Vec<_>, Vec<_>) = revisions
        .into_iter()
        .partition(|r| r.data.as_ref().map(|d| &d.0) == Some(&data));
    let next = history::next_revision(&old);
    let mut collision_count = ds.status.as_ref().and_then(|s| s.collision_count);
    let err = |source| Error::History {
        owner: key(ds.as_ref()),
        source,
    };
    let cur = match current.pop() {
        None => {
            let labels = template(ds)
                .metadata
                .and_then(|m| m.labels)
                .unwrap_or_default();
            let mut count = collision_count.unwrap_or(0);
            let created = history::create_revision(
                &state.ctx.client,
                ds.as_ref(),
                &labels,
                data,
                next,
                &mut count,
            )
            .await
            .map_err(err)?;
            if count != collision_count.unwrap_or(0) {
                collision_count = Some(count);
            }
            // Upstream's snapshot copies the DaemonSet's annotations (kubectl's
            // change-cause shows in `rollout history`).
            if created.annotations().is_empty() && !ds.annotations().is_empty() {
                Api::<ControllerRevision>::namespaced(
                    state.ctx.client.clone(),
                    &ds.namespace().unwrap_or_default(),
                )
                .patch(
                    &created.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": ds.annotations()}})),
                )
                .await
                .map_err(err)?
            } else {
                created
            }
        }
        Some(cur) => {
            dedup_current(ds, &cur, &current, state).await?;
            if cur.revision < next {
                history::renumber_revision(&state.ctx.client, ds.as_ref(), &cur, next)
                    .await
                    .map_err(err)?
            } else {
                (*cur).clone()
            }
        }
    };
    Ok((cur, old, collision_count))
}

/// Upstream's `dedupCurHistories`: revisions with the same data as `keep` (the newest)
/// are deleted, after their pods are relabelled with `keep`'s hash. (Upstream relabels
/// every pod not on `keep`'s hash, old ones too; only the duplicates' pods are meant.)
async fn dedup_current(
    ds: &Arc<DaemonSet>,
    keep: &ControllerRevision,
    duplicates: &[Arc<ControllerRevision>],
    state: &State,
) -> Result<()> {
    let Some(keep_hash) = keep.labels().get(CONTROLLER_REVISION_HASH_LABEL) else {
        return Ok(());
    };
    let ns = ds.namespace().unwrap_or_default();
    let uid = ds.uid().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(state.ctx.client.clone(), &ns);
    let err = |source| Error::History {
        owner: key(ds.as_ref()),
        source,
    };
    for dup in duplicates {
        let Some(dup_hash) = dup.labels().get(CONTROLLER_REVISION_HASH_LABEL) else {
            continue;
        };
        for pod in state.pods.state() {
            if pod.namespace().as_deref() != Some(ns.as_str())
                || controller_of(pod.as_ref()).is_none_or(|c| c.uid != uid)
                || pod.labels().get(CONTROLLER_REVISION_HASH_LABEL) != Some(dup_hash)
            {
                continue;
            }
            let patch =
                json!({"metadata": {"labels": {CONTROLLER_REVISION_HASH_LABEL: keep_hash}}});
            match pods
                .patch(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(source) => return Err(err(source)),
            }
        }
        history::delete_revision(&state.ctx.client, ds.as_ref(), dup)
            .await
            .map_err(err)?;
    }
    Ok(())
}

/// Upstream's `cleanupHistory`: old revisions beyond `revisionHistoryLimit` that no pod
/// uses are deleted, oldest first.
async fn cleanup_history(
    ds: &Arc<DaemonSet>,
    old: &[Arc<ControllerRevision>],
    pods: &[Arc<Pod>],
    state: &State,
) -> Result<()> {
    let limit = ds
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT)
        .max(0) as usize;
    let live: HashSet<&str> = pods
        .iter()
        .filter_map(|p| p.labels().get(CONTROLLER_REVISION_HASH_LABEL))
        .map(String::as_str)
        .collect();
    let keep = move |r: &ControllerRevision| {
        r.labels()
            .get(CONTROLLER_REVISION_HASH_LABEL)
            .is_some_and(|h| live.contains(h.as_str()))
    };
    for rev in history::prunable(old, keep, limit) {
        history::delete_revision(&state.ctx.client, ds.as_ref(), &rev)
            .await
            .map_err(|source| Error::History {
                owner: key(ds.as_ref()),
                source,
            })?;
    }
    Ok(())
}

/// The status fields the controller computes (upstream's `updateDaemonSetStatus`).
#[derive(Debug, Clone, Default, PartialEq)]
struct Counts {
    desired_number_scheduled: i32,
    current_number_scheduled: i32,
    number_misscheduled: i32,
    number_ready: i32,
    number_available: i32,
    updated_number_scheduled: i32,
}

fn calculate_status(
    daemon: &Daemon,
    nodes: &[Arc<Node>],
    by_node: &BTreeMap<String, Vec<Arc<Pod>>>,
    now: Timestamp,
) -> Counts {
    let mut c = Counts::default();
    for node in nodes {
        let (should_run, _) = daemon.should_run(node);
        let mut pods = by_node.get(&node.name_any()).cloned().unwrap_or_default();
        if !should_run {
            if !pods.is_empty() {
                c.number_misscheduled += 1;
            }
            continue;
        }
        c.desired_number_scheduled += 1;
        if pods.is_empty() {
            continue;
        }
        c.current_number_scheduled += 1;
        sort_oldest_first(&mut pods);
        let pod = &pods[0];
        if ready_since(pod).is_some() {
            c.number_ready += 1;
            if is_pod_available(pod, daemon.min_ready_seconds, now) {
                c.number_available += 1;
            }
        }
        if daemon.is_updated(pod) {
            c.updated_number_scheduled += 1;
        }
    }
    c
}

/// The status with `counts`, the collision count and (when the expectations were met)
/// the observed generation.
fn status_with(
    ds: &DaemonSet,
    c: &Counts,
    collision_count: Option<i32>,
    observe: bool,
) -> DaemonSetStatus {
    let mut status = ds.status.clone().unwrap_or_default();
    status.desired_number_scheduled = c.desired_number_scheduled;
    status.current_number_scheduled = c.current_number_scheduled;
    status.number_misscheduled = c.number_misscheduled;
    status.number_ready = c.number_ready;
    status.number_available = Some(c.number_available);
    status.number_unavailable = Some(c.desired_number_scheduled - c.number_available);
    status.updated_number_scheduled = Some(c.updated_number_scheduled);
    if collision_count.is_some() {
        status.collision_count = collision_count;
    }
    if observe {
        status.observed_generation = ds.meta().generation;
    }
    status
}

/// Upstream's `storeDaemonSetStatus`: writes through the status subresource when
/// anything changed, retrying once on a fresh copy.
async fn update_status(
    ds: &Arc<DaemonSet>,
    counts: Counts,
    collision_count: Option<i32>,
    observe: bool,
    state: &State,
) -> Result<()> {
    let status = status_with(ds, &counts, collision_count, observe);
    if ds.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<DaemonSet> = Api::namespaced(
        state.ctx.client.clone(),
        &ds.namespace().unwrap_or_default(),
    );
    let name = ds.name_any();
    let mut current = ds.as_ref().clone();
    let err = |source| Error::Status {
        owner: key(ds.as_ref()),
        source,
    };
    for attempt in 0..2 {
        let mut next = current.clone();
        next.status = Some(status_with(&current, &counts, collision_count, observe));
        match api
            .replace_status(&name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(()),
            Err(source) if attempt == 1 => return Err(err(source)),
            Err(_) => {}
        }
        match api.get_opt(&name).await {
            Ok(Some(fresh)) => current = fresh,
            Ok(None) => return Ok(()),
            Err(source) => return Err(err(source)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon_set(v: serde_json::Value) -> DaemonSet {
        let mut ds = json!({
            "metadata": {"name": "agent", "namespace": "default", "uid": "ds-uid", "generation": 2},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}},
                "updateStrategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
            },
        });
        merge(&mut ds, v);
        serde_json::from_value(ds).unwrap()
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

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels},
                "spec": {"taints": taints},
            }))
            .unwrap(),
        )
    }

    fn pod(name: &str, node: &str, hash: &str, ready: bool, created: i64) -> Arc<Pod> {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                "labels": {"app": "agent", "controller-revision-hash": hash},
                "creationTimestamp": Timestamp::from_second(created).unwrap().to_string(),
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                    "name": "agent", "uid": "ds-uid", "controller": true}]},
            "spec": {"containers": [{"name": "c"}], "affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
                ]}}}},
            "status": {"phase": "Running"},
        });
        if ready {
            v["status"]["conditions"] = json!([{"type": "Ready", "status": "True",
                "lastTransitionTime": Timestamp::from_second(created + 1).unwrap().to_string()}]);
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn eligibility_follows_selectors_and_taints() {
        let ds = daemon_set(json!({"spec": {"template": {"spec": {
            "nodeSelector": {"role": "edge"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        }}}}));
        let d = Daemon::new(&ds, "h".into());
        let edge = json!({"role": "edge"});
        assert_eq!(
            d.should_run(&node("a", edge.clone(), json!([]))),
            (true, true)
        );
        assert_eq!(
            d.should_run(&node("b", json!({"role": "core"}), json!([]))),
            (false, false)
        );
        // Tolerated taint; the default daemon tolerations cover unschedulable/not-ready.
        let tolerated = json!([{"key": "gpu", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]);
        assert_eq!(
            d.should_run(&node("c", edge.clone(), tolerated)),
            (true, true)
        );
        // Untolerated NoSchedule: no new pod, but an existing one stays.
        let no_schedule = json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]);
        assert_eq!(
            d.should_run(&node("d", edge.clone(), no_schedule)),
            (false, true)
        );
        let no_execute = json!([{"key": "dedicated", "value": "db", "effect": "NoExecute"}]);
        assert_eq!(d.should_run(&node("e", edge, no_execute)), (false, false));
    }

    #[test]
    fn daemon_pods_pin_their_node_and_carry_tolerations_and_labels() {
        let ds = daemon_set(json!({"spec": {"template": {"spec": {"hostNetwork": true,
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                "effect": "NoExecute", "tolerationSeconds": 300}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": ["other"]}]}]}}},
        }}}}));
        let d = Daemon::new(&ds, "abc".into());
        let pod = d.pod_for(&ds, "n1");
        let labels = pod.labels();
        assert_eq!(labels[CONTROLLER_REVISION_HASH_LABEL], "abc");
        assert_eq!(labels[TEMPLATE_GENERATION_LABEL], "2");
        let spec = pod.spec.clone().unwrap();
        assert!(spec.node_name.is_none());
        let terms = spec
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms;
        assert_eq!(terms.len(), 1);
        assert_eq!(
            terms[0].match_fields.as_ref().unwrap()[0].values,
            Some(vec!["n1".to_string()])
        );
        let tolerations = spec.tolerations.unwrap();
        assert_eq!(tolerations.len(), 7);
        let not_ready: Vec<_> = tolerations
            .iter()
            .filter(|t| t.key.as_deref() == Some("node.kubernetes.io/not-ready"))
            .collect();
        assert_eq!(not_ready.len(), 1);
        assert_eq!(not_ready[0].toleration_seconds, None);
        assert!(tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/network-unavailable")));
        assert_eq!(pod.owner_references()[0].uid, "ds-uid");
        assert_eq!(
            target_node(
                &serde_json::from_value(serde_json::to_value(d.pod_for(&ds, "n2")).unwrap())
                    .unwrap()
            ),
            Some("n2")
        );
    }

    #[test]
    fn revision_data_replaces_the_template() {
        let ds = daemon_set(json!({}));
        let data = revision_data(&ds);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        assert_eq!(
            data["spec"]["template"]["metadata"]["labels"]["app"],
            "agent"
        );
        assert_eq!(data.as_object().unwrap().len(), 1);
        assert_eq!(data["spec"].as_object().unwrap().len(), 1);
    }

    #[test]
    fn rolling_update_deletes_old_pods_within_max_unavailable() {
        let now = Timestamp::from_second(10_000).unwrap();
        let ds = daemon_set(json!({}));
        let d = Daemon::new(&ds, "new".into());
        let nodes: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|n| node(n, json!({}), json!([])))
            .collect();
        let pods = vec![
            pod("pa", "a", "old", true, 100),
            pod("pb", "b", "old", true, 100),
            pod("pc", "c", "old", true, 100),
        ];
        let plan = rolling_update(&d, &nodes, &nodes_to_daemon_pods(&pods), now).unwrap();
        assert_eq!(plan.delete.len(), 1);
        assert!(plan.create.is_empty());
        // A new pod not yet available uses up maxUnavailable.
        let pods = vec![
            pod("pa", "a", "new", false, 100),
            pod("pb", "b", "old", true, 100),
            pod("pc", "c", "old", true, 100),
        ];
        let plan = rolling_update(&d, &nodes, &nodes_to_daemon_pods(&pods), now).unwrap();
        assert!(plan.delete.is_empty());
        // An unavailable old pod is replaced regardless.
        let pods = vec![
            pod("pa", "a", "new", false, 100),
            pod("pb", "b", "old", false, 100),
            pod("pc", "c", "old", true, 100),
        ];
        let plan = rolling_update(&d, &nodes, &nodes_to_daemon_pods(&pods), now).unwrap();
        assert_eq!(
            plan.delete.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
            ["pb"]
        );
        // Percentages scale over the desired nodes, rounding up: 50% of 3 is 2.
        let ds = daemon_set(json!({"spec": {"updateStrategy": {"rollingUpdate":
            {"maxUnavailable": "50%"}}}}));
        let d = Daemon::new(&ds, "new".into());
        let pods = vec![
            pod("pa", "a", "old", true, 100),
            pod("pb", "b", "old", true, 100),
            pod("pc", "c", "old", true, 100),
        ];
        let plan = rolling_update(&d, &nodes, &nodes_to_daemon_pods(&pods), now).unwrap();
        assert_eq!(plan.delete.len(), 2);
    }

    #[test]
    fn surge_creates_first_and_deletes_the_old_pod_once_the_new_one_is_available() {
        let now = Timestamp::from_second(10_000).unwrap();
        let ds = daemon_set(json!({"spec": {"updateStrategy": {"rollingUpdate":
            {"maxUnavailable": 0, "maxSurge": 1}}}}));
        let d = Daemon::new(&ds, "new".into());
        assert!(d.allows_surge());
        let nodes: Vec<_> = ["a", "b"]
            .iter()
            .map(|n| node(n, json!({}), json!([])))
            .collect();
        let pods = vec![
            pod("pa", "a", "old", true, 100),
            pod("pb", "b", "old", true, 100),
        ];
        let plan = rolling_update(&d, &nodes, &nodes_to_daemon_pods(&pods), now).unwrap();
        assert_eq!(plan.create, ["a"]);
        assert!(plan.delete.is_empty());
        let pods = vec![
            pod("pa", "a", "old", true, 100),
            pod("pa2", "a", "new", false, 200),
            pod("pb", "b", "old", true, 100),
        ];
        let plan = rolling_update(&d, &nodes, &nodes_to_daemon_pods(&pods), now).unwrap();
        assert!(plan.create.is_empty() && plan.delete.is_empty());
        let pods = vec![
            pod("pa", "a", "old", true, 100),
            pod("pa2", "a", "new", true, 200),
            pod("pb", "b", "old", true, 100),
        ];
        let plan = rolling_update(&d, &nodes, &nodes_to_daemon_pods(&pods), now).unwrap();
        assert_eq!(
            plan.delete.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
            ["pa"]
        );
        assert_eq!(plan.create, ["b"]);
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        let mut v: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
        v.sort();
        v
    }

    #[test]
    fn manage_creates_missing_pods_and_deletes_extra_misplaced_and_failed_ones() {
        let now = Timestamp::from_second(10_000).unwrap();
        let ds =
            daemon_set(json!({"spec": {"template": {"spec": {"nodeSelector": {"run": "yes"}}}}}));
        let d = Daemon::new(&ds, "h".into());
        let yes = json!({"run": "yes"});
        let nodes = vec![
            node("empty", yes.clone(), json!([])),
            node("doubled", yes.clone(), json!([])),
            node("unlabelled", json!({}), json!([])),
            node("failed", yes.clone(), json!([])),
            node(
                "tainted",
                yes.clone(),
                json!([{"key": "k", "effect": "NoSchedule"}]),
            ),
            node(
                "tainted-empty",
                yes,
                json!([{"key": "k", "effect": "NoSchedule"}]),
            ),
        ];
        let mut failed = (*pod("p-failed", "failed", "h", false, 100)).clone();
        failed.status.as_mut().unwrap().phase = Some("Failed".into());
        let pods = vec![
            pod("p-old", "doubled", "h", true, 100),
            pod("p-new", "doubled", "h", true, 200),
            pod("p-unlabelled", "unlabelled", "h", true, 100),
            Arc::new(failed),
            pod("p-tainted", "tainted", "h", true, 100),
            pod("p-gone", "gone", "h", false, 100),
        ];
        let by_node = nodes_to_daemon_pods(&pods);
        let backoff = FailedPodBackoff::default();
        let t0 = Instant::now();
        let plan = manage(&d, &nodes, &by_node, &backoff, now, t0);
        assert_eq!(plan.create, ["empty"]);
        assert_eq!(
            names(&plan.delete),
            ["p-failed", "p-gone", "p-new", "p-unlabelled"]
        );
        assert_eq!(plan.failed.len(), 1);
        assert!(plan.failed[0].contains("default/p-failed on node failed"));
        // The same failed pod right after: backing off, not deleted again.
        let plan = manage(&d, &nodes, &by_node, &backoff, now, t0);
        assert!(!names(&plan.delete).contains(&"p-failed".to_string()));
        assert_eq!(plan.again, Some(FAILED_POD_BACKOFF_INITIAL));
        // After the backoff the delay doubles.
        let later = t0 + Duration::from_secs(2);
        assert_eq!(backoff.check("ds-uid/failed", later), None);
        assert_eq!(
            backoff.check("ds-uid/failed", later),
            Some(2 * FAILED_POD_BACKOFF_INITIAL)
        );
    }

    #[test]
    fn status_counts_the_oldest_pod_per_node() {
        let now = Timestamp::from_second(10_000).unwrap();
        let ds =
            daemon_set(json!({"spec": {"template": {"spec": {"nodeSelector": {"run": "yes"}}}}}));
        let d = Daemon::new(&ds, "new".into());
        let nodes = vec![
            node("a", json!({"run": "yes"}), json!([])),
            node("b", json!({"run": "yes"}), json!([])),
            node("c", json!({"run": "yes"}), json!([])),
            node("x", json!({}), json!([])),
        ];
        let pods = vec![
            pod("pa", "a", "new", true, 100),
            pod("pb", "b", "old", true, 100),
            pod("px", "x", "new", false, 100),
        ];
        let c = calculate_status(&d, &nodes, &nodes_to_daemon_pods(&pods), now);
        assert_eq!(
            c,
            Counts {
                desired_number_scheduled: 3,
                current_number_scheduled: 2,
                number_misscheduled: 1,
                number_ready: 2,
                number_available: 2,
                updated_number_scheduled: 1,
            }
        );
    }
}
