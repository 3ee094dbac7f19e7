//! replicaset: keeps exactly `spec.replicas` active pods matching a ReplicaSet's selector
//! (upstream's pkg/controller/replicaset). The same logic runs the replicationcontroller
//! controller over core/v1 ReplicationControllers, through [`Replicated`].
//!
//! - Expectations: after creating or deleting pods for an owner, nothing more is done for
//!   it until the pod informer has shown those creations and deletions (or 5 minutes
//!   pass), so a cache that lags behind our own writes never causes a second round of
//!   creations.
//! - Creations go in slow-start batches (1, 2, 4, ...), at most 500 per sync.
//! - Orphan pods matching the selector are adopted, owned pods that stop matching are
//!   released; pods being deleted and finished pods do not count.
//! - Scale-down deletes the pods upstream would: unassigned, pending, not ready, doubled
//!   up on a node, ready for less time, restarted more, newer — first.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use api_types::selector::LabelSelector;
use futures::future::{self, BoxFuture};
use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tracing::warn;

use super::controller_utils::{
    adopt as adopt_object, next_available, only_uid, publish_event, release as release_object,
    PodOwners,
};
use super::controller_utils::{
    controller_ref, is_pod_active, is_pod_available, namespace_terminating, pod_from_template,
    ready_since, slow_start_batch, Expectations, EXPECTATIONS_TIMEOUT,
};
use super::Context;
use crate::cache::Pod;
use crate::informers::{key, Kind};

pub const NAME: &str = "replicaset";

/// Upstream's `BurstReplicas`: the most pods created or deleted in one sync.
const BURST_REPLICAS: usize = 500;
/// Upstream's `SlowStartInitialBatchSize`.
const SLOW_START_INITIAL_BATCH: usize = 1;
const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
const REPLICA_FAILURE: &str = "ReplicaFailure";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating pods for {owner}: {source}")]
    CreatePod {
        owner: String,
        #[source]
        source: kube::Error,
    },
    #[error("{owner} has no pod template")]
    NoTemplate { owner: String },
    #[error("unable to create pods for {owner}, no labels")]
    NoLabels { owner: String },
    #[error("deleting pod {pod}: {source}")]
    DeletePod {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("adopting pod {pod}: {source}")]
    Adopt {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("releasing pod {pod}: {source}")]
    Release {
        pod: String,
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
    #[error("updating the status of {owner}: {source}")]
    Status {
        owner: String,
        #[source]
        source: kube::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the controller needs of a ReplicaSet or a ReplicationController.
pub trait Replicated: Kind + Resource<Scope = NamespaceResourceScope> + serde::Serialize {
    /// The name in `--controllers` and in the workqueue metrics.
    const NAME: &'static str;
    /// The events' reporting controller.
    const COMPONENT: &'static str;
    /// The pod selector; an error means the owner can do nothing.
    fn selector(&self) -> Result<LabelSelector, String>;
    fn replicas(&self) -> i32;
    fn min_ready_seconds(&self) -> i32;
    fn template(&self) -> Option<&PodTemplateSpec>;
    fn replica_status(&self) -> ReplicaStatus;
    fn with_replica_status(&self, status: &ReplicaStatus) -> Self;
}

/// The status fields ReplicaSets and ReplicationControllers share.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplicaStatus {
    pub replicas: i32,
    pub fully_labeled_replicas: i32,
    pub ready_replicas: i32,
    pub available_replicas: i32,
    pub observed_generation: i64,
    pub conditions: Vec<ReplicaCondition>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaCondition {
    pub type_: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub last_transition_time: Option<Time>,
}

impl Replicated for ReplicaSet {
    const NAME: &'static str = NAME;
    const COMPONENT: &'static str = "replicaset-controller";

    fn selector(&self) -> Result<LabelSelector, String> {
        let spec = self.spec.as_ref().ok_or("no spec")?;
        LabelSelector::from_meta(&spec.selector).map_err(|e| e.to_string())
    }
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
    }
    fn replica_status(&self) -> ReplicaStatus {
        let Some(s) = &self.status else {
            return ReplicaStatus::default();
        };
        ReplicaStatus {
            replicas: s.replicas,
            fully_labeled_replicas: s.fully_labeled_replicas.unwrap_or(0),
            ready_replicas: s.ready_replicas.unwrap_or(0),
            available_replicas: s.available_replicas.unwrap_or(0),
            observed_generation: s.observed_generation.unwrap_or(0),
            conditions: s
                .conditions
                .iter()
                .flatten()
                .map(|c| ReplicaCondition {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    last_transition_time: c.last_transition_time.clone(),
                })
                .collect(),
        }
    }
    fn with_replica_status(&self, s: &ReplicaStatus) -> Self {
        let mut rs = self.clone();
        let status = rs.status.get_or_insert_with(Default::default);
        status.replicas = s.replicas;
        status.fully_labeled_replicas = Some(s.fully_labeled_replicas);
        status.ready_replicas = Some(s.ready_replicas);
        status.available_replicas = Some(s.available_replicas);
        status.observed_generation = Some(s.observed_generation);
        status.conditions = (!s.conditions.is_empty()).then(|| {
            s.conditions
                .iter()
                .map(|c| ReplicaSetCondition {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    last_transition_time: c.last_transition_time.clone(),
                })
                .collect()
        });
        rs
    }
}

pub fn start(ctx: &Context) -> BoxFuture<'static, ()> {
    run::<ReplicaSet>(ctx, ctx.options.concurrent_replicaset_syncs)
}

/// Runs the controller for `K` with `concurrency` syncs at once.
pub fn run<K: Replicated>(ctx: &Context, concurrency: u16) -> BoxFuture<'static, ()> {
    let owners = ctx.informers.store::<K>();
    let pods = ctx.informers.store::<Pod>();
    let state = Arc::new(State {
        ctx: ctx.clone(),
        recorder: ctx.recorder(K::COMPONENT),
        owners: owners.clone(),
        pods: pods.clone(),
        expectations: Expectations::default(),
        pod_owners: PodOwners::default(),
    });
    // A deleted owner's expectations go with it.
    let owner_events = {
        let state = state.clone();
        ctx.informers.subscribe::<K>().inspect(move |o| {
            let uid = o.uid().unwrap_or_default();
            let live = state
                .owners
                .get(&ObjectRef::from_obj(o.as_ref()))
                .is_some_and(|cur| cur.uid().as_deref() == Some(uid.as_str()));
            if !live {
                state.expectations.forget(&uid);
            }
        })
    };
    let pod_events = ctx.informers.subscribe::<Pod>();
    let mapper_state = state.clone();
    Controller::for_shared_stream(owner_events, owners)
        .with_config(controller::Config::default().concurrency(concurrency))
        .watches_shared_stream(pod_events, move |pod: Arc<Pod>| {
            mapper_state.owners_of(&pod)
        })
        .run(reconcile::<K>, error_policy::<K>, state)
        .for_each(|_| async {})
        .boxed()
}

struct State<K: Replicated> {
    ctx: Context,
    recorder: Recorder,
    owners: Store<K>,
    pods: Store<Pod>,
    expectations: Expectations,
    pod_owners: PodOwners,
}

impl<K: Replicated> State<K> {
    /// The owners a pod change concerns (upstream's pod event handlers): its controller
    /// and the one before, or for an orphan every owner whose selector matches it. Also
    /// records what the change means for the owner's expectations.
    fn owners_of(&self, pod: &Pod) -> Vec<ObjectRef<K>> {
        self.pod_owners
            .owners_of(pod, &self.pods, &self.expectations, |ns| {
                let labels = pod.labels();
                self.owners
                    .state()
                    .iter()
                    .filter(|o| o.namespace().as_deref() == Some(ns))
                    .filter(|o| o.selector().is_ok_and(|s| s.matches(labels)))
                    .map(|o| ObjectRef::from_obj(o.as_ref()))
                    .collect()
            })
    }

    fn pods_in(&self, ns: &str) -> Vec<Arc<Pod>> {
        self.pods
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
            .collect()
    }

    /// Publishes an event in the background (upstream's recorder is asynchronous too).
    /// An event about one pod names it as `related`, and is its own Event object, as
    /// upstream's "Created pod: <name>" events are; kube's recorder would otherwise fold
    /// every SuccessfulCreate of an owner into one series keeping the first pod's name.
    fn event<P: Resource<DynamicType = ()>>(
        &self,
        owner: &K,
        pod: Option<&P>,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let recorder = match pod {
            Some(_) => self.ctx.recorder(K::COMPONENT),
            None => self.recorder.clone(),
        };
        let reference = owner.object_ref(&());
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: pod.map(|p| p.object_ref(&())),
        };
        publish_event(recorder, reference, event);
    }
}

async fn reconcile<K: Replicated>(owner: Arc<K>, state: Arc<State<K>>) -> Result<Action> {
    let metrics = state.ctx.metrics.clone();
    metrics.observe(K::NAME, sync(owner, state)).await
}

fn error_policy<K: Replicated>(_owner: Arc<K>, error: &Error, _state: Arc<State<K>>) -> Action {
    warn!(%error, "sync failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Upstream's `syncReplicaSet`.
async fn sync<K: Replicated>(owner: Arc<K>, state: Arc<State<K>>) -> Result<Action> {
    let owner_uid = owner.uid().unwrap_or_default();
    let ns = owner.namespace().unwrap_or_default();
    let needs_sync = state.expectations.satisfied(&owner_uid, |name| {
        state.pods.get(&ObjectRef::new(name).within(&ns)).map(|p| {
            (
                p.uid().unwrap_or_default(),
                p.metadata.deletion_timestamp.is_some(),
            )
        })
    });
    let selector = match owner.selector() {
        Ok(s) => s,
        Err(error) => {
            // Validation keeps these out; nothing can be done until the spec changes.
            warn!(owner = %key(owner.as_ref()), %error, "invalid selector");
            return Ok(Action::await_change());
        }
    };
    let active: Vec<Arc<Pod>> = state
        .pods_in(&ns)
        .into_iter()
        .filter(|p| is_pod_active(p))
        .collect();
    let owned = claim_pods(&owner, &selector, active, &state).await?;
    let managed = if needs_sync && owner.meta().deletion_timestamp.is_none() {
        manage_replicas(&owner, &owned, &state).await
    } else {
        Ok(())
    };
    let now = Timestamp::now();
    let status = calculate_status(owner.as_ref(), &owned, managed.as_ref().err(), now);
    update_status(&owner, status, &state).await?;
    managed?;
    // Ready pods turn available with time alone: look again when the next one does
    // (upstream enqueues after minReadySeconds when a pod turns ready).
    let mut again = next_available(&owned, owner.min_ready_seconds(), now);
    if !needs_sync {
        // The informer's events wake us; the timeout is the backstop.
        again = again
            .min(Some(EXPECTATIONS_TIMEOUT))
            .or(Some(EXPECTATIONS_TIMEOUT));
    }
    Ok(again.map_or_else(Action::await_change, Action::requeue))
}

/// Upstream's `ClaimPods`: the active pods the owner controls, after adopting matching
/// orphans and releasing owned pods that no longer match.
async fn claim_pods<K: Replicated>(
    owner: &Arc<K>,
    selector: &LabelSelector,
    pods: Vec<Arc<Pod>>,
    state: &Arc<State<K>>,
) -> Result<Vec<Arc<Pod>>> {
    let owner_uid = owner.uid().unwrap_or_default();
    let deleting = owner.meta().deletion_timestamp.is_some();
    let mut claimed = Vec::new();
    let mut adopt = Vec::new();
    let mut release = Vec::new();
    for pod in pods {
        let matches = selector.matches(pod.labels());
        let controller = pod
            .owner_references()
            .iter()
            .find(|r| r.controller == Some(true));
        match controller {
            Some(c) if c.uid != owner_uid => {}
            Some(_) if matches => claimed.push(pod),
            Some(_) if !deleting => release.push(pod),
            Some(_) => {}
            None if matches && !deleting && pod.metadata.deletion_timestamp.is_none() => {
                adopt.push(pod)
            }
            None => {}
        }
    }
    let api: Api<Pod> = Api::namespaced(
        state.ctx.client.clone(),
        &owner.namespace().unwrap_or_default(),
    );
    let mut first_error = None;
    if !adopt.is_empty() {
        // Upstream's RecheckDeletionTimestamp: adopt only for an owner that is still the
        // same object and not being deleted, read fresh from the apiserver.
        let owners: Api<K> = Api::namespaced(
            state.ctx.client.clone(),
            &owner.namespace().unwrap_or_default(),
        );
        let fresh = owners
            .get_opt(&owner.name_any())
            .await
            .map_err(|source| Error::Recheck {
                owner: key(owner.as_ref()),
                source,
            })?;
        let can_adopt = fresh.is_some_and(|f| {
            f.uid().as_deref() == Some(owner_uid.as_str()) && f.meta().deletion_timestamp.is_none()
        });
        if !can_adopt {
            return Err(Error::CannotAdopt {
                owner: key(owner.as_ref()),
            });
        }
        let reference = controller_ref(owner.as_ref());
        let results = futures::stream::iter(adopt)
            .map(|pod| {
                let api = api.clone();
                let reference = reference.clone();
                async move {
                    let r = adopt_object(&api, &reference, pod.as_ref()).await;
                    (pod, r)
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        for (pod, r) in results {
            match r {
                Ok(Some(_)) => claimed.push(pod),
                Ok(None) => {}
                Err(source) => {
                    first_error.get_or_insert(Error::Adopt {
                        pod: key(pod.as_ref()),
                        source,
                    });
                }
            }
        }
    }
    let results = futures::stream::iter(release)
        .map(|pod| {
            let api = api.clone();
            let owner_uid = owner_uid.clone();
            async move {
                let r = release_object(&api, &owner_uid, pod.as_ref()).await;
                (pod, r)
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    for (pod, r) in results {
        if let Err(source) = r {
            first_error.get_or_insert(Error::Release {
                pod: key(pod.as_ref()),
                source,
            });
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(claimed),
    }
}

/// Upstream's `manageReplicas`: create or delete pods to reach `spec.replicas`.
async fn manage_replicas<K: Replicated>(
    owner: &Arc<K>,
    pods: &[Arc<Pod>],
    state: &Arc<State<K>>,
) -> Result<()> {
    let want = owner.replicas().max(0) as usize;
    let owner_uid = owner.uid().unwrap_or_default();
    match pods.len().cmp(&want) {
        Ordering::Equal => Ok(()),
        Ordering::Less => {
            let diff = (want - pods.len()).min(BURST_REPLICAS);
            state.expectations.expect_creations(&owner_uid, diff);
            let (attempted, result) = slow_start_batch(diff, SLOW_START_INITIAL_BATCH, || {
                create_pod(owner.clone(), state.clone())
            })
            .await;
            // Pods never tried will never be seen.
            for _ in attempted..diff {
                state.expectations.creation_failed(&owner_uid);
            }
            result
        }
        Ordering::Greater => {
            let diff = (pods.len() - want).min(BURST_REPLICAS);
            let related = related_pods(owner.as_ref(), state);
            let victims = pods_to_delete(pods, &related, diff, Timestamp::now());
            state.expectations.expect_deletions(
                &owner_uid,
                victims
                    .iter()
                    .map(|p| (p.uid().unwrap_or_default(), p.name_any())),
            );
            let results = future::join_all(
                victims
                    .iter()
                    .map(|pod| delete_pod(owner.clone(), pod.clone(), state.clone())),
            )
            .await;
            results
                .into_iter()
                .find_map(Result::err)
                .map_or(Ok(()), Err)
        }
    }
}

async fn create_pod<K: Replicated>(owner: Arc<K>, state: Arc<State<K>>) -> Result<()> {
    let owner_uid = owner.uid().unwrap_or_default();
    let result = try_create_pod(owner.as_ref(), &state).await;
    match &result {
        Ok(Some(pod)) => state.expectations.creation_done(
            &owner_uid,
            pod.uid().unwrap_or_default(),
            pod.name_any(),
        ),
        Ok(None) | Err(_) => state.expectations.creation_failed(&owner_uid),
    }
    result.map(|_| ())
}

async fn try_create_pod<K: Replicated>(
    owner: &K,
    state: &State<K>,
) -> Result<Option<k8s_openapi::api::core::v1::Pod>> {
    let Some(template) = owner.template() else {
        return Err(Error::NoTemplate { owner: key(owner) });
    };
    let pod = pod_from_template(owner, template);
    if pod.labels().is_empty() {
        return Err(Error::NoLabels { owner: key(owner) });
    }
    let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(
        state.ctx.client.clone(),
        &owner.namespace().unwrap_or_default(),
    );
    match api.create(&PostParams::default(), &pod).await {
        Ok(pod) => {
            state.event(
                owner,
                Some(&pod),
                EventType::Normal,
                "SuccessfulCreate",
                format!("Created pod: {}", pod.name_any()),
            );
            Ok(Some(pod))
        }
        // The namespace is going away: nothing to report (upstream ignores it too).
        Err(kube::Error::Api(s)) if namespace_terminating(&s) => Ok(None),
        Err(source) => {
            state.event(
                owner,
                None::<&Pod>,
                EventType::Warning,
                "FailedCreate",
                format!("Error creating: {source}"),
            );
            Err(Error::CreatePod {
                owner: key(owner),
                source,
            })
        }
    }
}

async fn delete_pod<K: Replicated>(
    owner: Arc<K>,
    pod: Arc<Pod>,
    state: Arc<State<K>>,
) -> Result<()> {
    let owner_uid = owner.uid().unwrap_or_default();
    let pod_uid = pod.uid().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(
        state.ctx.client.clone(),
        &owner.namespace().unwrap_or_default(),
    );
    let params = only_uid(Some(pod_uid.clone()));
    match api.delete(&pod.name_any(), &params).await {
        Ok(_) => {
            state.event(
                owner.as_ref(),
                Some(pod.as_ref()),
                EventType::Normal,
                "SuccessfulDelete",
                format!("Deleted pod: {}", pod.name_any()),
            );
            Ok(())
        }
        Err(e) => {
            // A failed delete is never seen by the informer.
            state.expectations.deletion_failed(&owner_uid, &pod_uid);
            match e {
                // Already gone (or replaced by another pod of the same name).
                kube::Error::Api(s) if s.is_not_found() || s.is_conflict() => Ok(()),
                source => {
                    state.event(
                        owner.as_ref(),
                        None::<&Pod>,
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

/// Upstream's `getIndirectlyRelatedPods`: the pods of every owner controlled by the same
/// object (a Deployment's ReplicaSets), to spread deletions across nodes.
fn related_pods<K: Replicated>(owner: &K, state: &State<K>) -> Vec<Arc<Pod>> {
    let ns = owner.namespace().unwrap_or_default();
    let controller_uid = owner
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.clone());
    let mut siblings: HashSet<String> = HashSet::new();
    siblings.insert(owner.uid().unwrap_or_default());
    if let Some(cuid) = controller_uid {
        for o in state.owners.state() {
            if o.namespace().as_deref() == Some(ns.as_str())
                && o.owner_references()
                    .iter()
                    .any(|r| r.controller == Some(true) && r.uid == cuid)
            {
                siblings.insert(o.uid().unwrap_or_default());
            }
        }
    }
    state
        .pods_in(&ns)
        .into_iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|r| r.controller == Some(true) && siblings.contains(&r.uid))
        })
        .collect()
}

/// Upstream's `getPodsToDelete`: the `diff` pods to delete first.
fn pods_to_delete(
    pods: &[Arc<Pod>],
    related: &[Arc<Pod>],
    diff: usize,
    now: Timestamp,
) -> Vec<Arc<Pod>> {
    let mut pods = pods.to_vec();
    if diff < pods.len() {
        let mut on_node: HashMap<&str, usize> = HashMap::new();
        for p in related.iter().filter(|p| is_pod_active(p)) {
            *on_node.entry(node_name(p)).or_default() += 1;
        }
        pods.sort_by_cached_key(|p| {
            deletion_key(p, on_node.get(node_name(p)).copied().unwrap_or(0), now)
        });
    }
    pods.truncate(diff);
    pods
}

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// [`deletion_key`]'s fields, in the order they rank.
type DeletionKey = (
    bool,
    u8,
    bool,
    i32,
    Reverse<usize>,
    i64,
    Reverse<(i32, i32)>,
    i64,
    String,
);

/// Upstream's `ActivePodsWithRanks.Less` as a sort key: smaller keys are deleted first.
/// `rank` is how many related pods share the pod's node. A key, not a comparator:
/// upstream's comparison is not transitive (two ready times in one logarithmic bucket
/// decide by uid, equal ones by restarts), which Rust's sort rejects with a panic. Here
/// pods in one bucket go on to restarts and creation time, then the uid.
fn deletion_key(pod: &Pod, rank: usize, now: Timestamp) -> DeletionKey {
    let phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    };
    let ready = ready_since(pod);
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (
        // 1. Unassigned before assigned.
        !node_name(pod).is_empty(),
        // 2. Pending before Unknown before Running.
        phase,
        // 3. Not ready before ready.
        ready.is_some(),
        // 4. Lower pod-deletion-cost first.
        deletion_cost(pod),
        // 5. More related pods on the same node first.
        Reverse(rank),
        // 6. Ready for less time first, in logarithmic buckets as upstream's
        // LogarithmicScaleDown (all not-ready pods tie here).
        ready.map_or(0, |since| age_bucket(since, now)),
        // 7. More container restarts first (regular containers, then sidecars).
        Reverse(max_restarts(pod)),
        // 8. Newer first.
        age_bucket(created, now),
        pod.uid().unwrap_or_default(),
    )
}

/// Upstream's `logarithmicRankDiff` as a rank: a missing time first, then younger before
/// older, ages within a power of two alike.
fn age_bucket(t: Option<Timestamp>, now: Timestamp) -> i64 {
    let Some(t) = t else {
        return i64::MIN;
    };
    let age = now.as_nanosecond() - t.as_nanosecond();
    if age > 0 {
        (age as f64).log2() as i64
    } else {
        -1
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.annotations()
        .get(POD_DELETION_COST)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The most restarts of any regular container, then of any sidecar (an init container
/// that restarts always).
fn max_restarts(pod: &Pod) -> (i32, i32) {
    let Some(status) = &pod.status else {
        return (0, 0);
    };
    let regular = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0);
    let sidecars: HashSet<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| c.name.as_str())
        .collect();
    let sidecar = status
        .init_container_statuses
        .iter()
        .flatten()
        .filter(|c| sidecars.contains(c.name.as_str()))
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0);
    (regular, sidecar)
}

/// Upstream's `calculateStatus` (observedGeneration is set when the status is written).
fn calculate_status<K: Replicated>(
    owner: &K,
    pods: &[Arc<Pod>],
    manage_error: Option<&Error>,
    now: Timestamp,
) -> ReplicaStatus {
    let mut status = owner.replica_status();
    let template_labels: BTreeMap<String, String> = owner
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let template_selector = LabelSelector::from_set(&template_labels);
    let min_ready = owner.min_ready_seconds();
    status.fully_labeled_replicas = pods
        .iter()
        .filter(|p| template_selector.matches(p.labels()))
        .count() as i32;
    status.ready_replicas = pods.iter().filter(|p| ready_since(p).is_some()).count() as i32;
    status.available_replicas = pods
        .iter()
        .filter(|p| is_pod_available(p, min_ready, now))
        .count() as i32;
    status.replicas = pods.len() as i32;
    let has_failure = status.conditions.iter().any(|c| c.type_ == REPLICA_FAILURE);
    match manage_error {
        Some(e) if !has_failure => {
            let reason = match pods.len().cmp(&(owner.replicas().max(0) as usize)) {
                Ordering::Less => "FailedCreate",
                Ordering::Greater => "FailedDelete",
                Ordering::Equal => "",
            };
            status.conditions.push(ReplicaCondition {
                type_: REPLICA_FAILURE.into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(e.to_string()),
                last_transition_time: Some(Time(now)),
            });
        }
        None if has_failure => status.conditions.retain(|c| c.type_ != REPLICA_FAILURE),
        _ => {}
    }
    status
}

/// Upstream's `updateReplicaSetStatus`: writes through the status subresource when
/// anything changed, retrying once on a fresh copy.
async fn update_status<K: Replicated>(
    owner: &Arc<K>,
    mut status: ReplicaStatus,
    state: &State<K>,
) -> Result<ReplicaStatus> {
    status.observed_generation = owner.meta().generation.unwrap_or(0);
    if owner.replica_status() == status {
        return Ok(status);
    }
    let api: Api<K> = Api::namespaced(
        state.ctx.client.clone(),
        &owner.namespace().unwrap_or_default(),
    );
    let name = owner.name_any();
    let mut current: K = owner.as_ref().clone();
    for attempt in 0..2 {
        match api
            .replace_status(
                &name,
                &PostParams::default(),
                &current.with_replica_status(&status),
            )
            .await
        {
            Ok(_) => return Ok(status),
            Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(status),
            Err(source) if attempt == 1 => {
                return Err(Error::Status {
                    owner: key(owner.as_ref()),
                    source,
                })
            }
            Err(_) => {}
        }
        match api.get_opt(&name).await {
            Ok(Some(fresh)) => current = fresh,
            Ok(None) => return Ok(status),
            Err(source) => {
                return Err(Error::Status {
                    owner: key(owner.as_ref()),
                    source,
                })
            }
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str, phase: &str, ready_at: Option<i64>, created: i64) -> Arc<Pod> {
        let mut v = json!({
            "metadata": {"name": name, "uid": format!("uid-{name}"),
                "creationTimestamp": Timestamp::from_second(created).unwrap().to_string()},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": phase},
        });
        if !node.is_empty() {
            v["spec"]["nodeName"] = json!(node);
        }
        if let Some(t) = ready_at {
            v["status"]["conditions"] = json!([{"type": "Ready", "status": "True",
                "lastTransitionTime": Timestamp::from_second(t).unwrap().to_string()}]);
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter().map(|p| p.name_any()).collect()
    }

    #[test]
    fn deletion_prefers_unassigned_pending_unready_doubled_up_then_newer() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let t = |ago: i64| 1_000_000 - ago;
        let pods = vec![
            pod("old-ready", "n1", "Running", Some(t(5000)), t(6000)),
            pod("new-ready", "n2", "Running", Some(t(10)), t(20)),
            pod("running-unready", "n1", "Running", None, t(6000)),
            pod("pending", "n1", "Pending", None, t(6000)),
            pod("unassigned", "", "Pending", None, t(6000)),
            pod("unknown", "n1", "Unknown", None, t(6000)),
        ];
        // Every pod: no ranking needed.
        assert_eq!(pods_to_delete(&pods, &pods, 6, now).len(), 6);
        // (No related pods: nobody is doubled up.)
        let order = pods_to_delete(&pods, &[], 5, now);
        assert_eq!(
            names(&order),
            [
                "unassigned",
                "pending",
                "unknown",
                "running-unready",
                "new-ready"
            ]
        );
        // Doubled-up pods go before lonely ones, all else equal.
        let pods = vec![
            pod("alone", "n1", "Running", Some(t(5000)), t(6000)),
            pod("crowded-a", "n2", "Running", Some(t(5000)), t(6000)),
            pod("crowded-b", "n2", "Running", Some(t(5000)), t(6000)),
        ];
        let order = pods_to_delete(&pods, &pods, 1, now);
        assert_ne!(names(&order), ["alone"]);
        // Newer first when nothing else differs; more restarts before fewer.
        let pods = vec![
            pod("older", "n1", "Pending", None, t(100_000)),
            pod("newer", "n2", "Pending", None, t(10)),
        ];
        assert_eq!(names(&pods_to_delete(&pods, &[], 1, now)), ["newer"]);
        let mut restarted = (*pods[0]).clone();
        restarted.status.as_mut().unwrap().container_statuses = Some(vec![serde_json::from_value(
            json!({"name": "c", "image": "i", "imageID": "",
                "ready": false, "restartCount": 3}),
        )
        .unwrap()]);
        let pods = vec![Arc::new(restarted), pods[1].clone()];
        assert_eq!(names(&pods_to_delete(&pods, &[], 1, now)), ["older"]);
    }

    /// Ready times alike within a power of two and equal ones, with restarts: upstream's
    /// comparison is not transitive there and Rust's sort panicked (a scale-down of 100
    /// pods took the controller-manager down).
    #[test]
    fn ranking_many_pods_alike_is_a_total_order() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let pods: Vec<Arc<Pod>> = (0..300)
            .map(|i: i64| {
                let ready = 1_000_000 - 60 - (i * 37) % 50;
                let mut p = (*pod(
                    &format!("p{:03}", (i * 131) % 300),
                    &format!("n{}", i % 3),
                    "Running",
                    Some(ready),
                    ready - 5,
                ))
                .clone();
                p.status.as_mut().unwrap().container_statuses = Some(vec![serde_json::from_value(
                    json!({"name": "c", "image": "i", "imageID": "",
                        "ready": true, "restartCount": (i * 7) % 4}),
                )
                .unwrap()]);
                Arc::new(p)
            })
            .collect();
        let victims = pods_to_delete(&pods, &pods, 100, now);
        assert_eq!(victims.len(), 100);
        let key = |p: &Pod| deletion_key(p, 100, now);
        let worst_victim = victims.iter().map(|p| key(p)).max().unwrap();
        let kept: Vec<_> = pods
            .iter()
            .filter(|p| !victims.iter().any(|v| v.uid() == p.uid()))
            .collect();
        assert_eq!(kept.len(), 200);
        assert!(kept.iter().all(|p| key(p) > worst_victim));
    }

    #[test]
    fn availability_waits_min_ready_seconds() {
        let now = Timestamp::from_second(1000).unwrap();
        let p = pod("p", "n", "Running", Some(995), 900);
        assert!(is_pod_available(&p, 0, now));
        assert!(!is_pod_available(&p, 10, now));
        assert!(is_pod_available(&p, 4, now));
        assert!(!is_pod_available(
            &pod("q", "n", "Running", None, 900),
            0,
            now
        ));
    }
}
