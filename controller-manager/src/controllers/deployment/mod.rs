//! deployment: rolls a Deployment's pod template out through ReplicaSets (upstream's
//! pkg/controller/deployment).
//!
//! - Each template gets one ReplicaSet, `<deployment>-<pod-template-hash>`, whose
//!   selector and template carry the `pod-template-hash` label; matching orphan
//!   ReplicaSets are adopted, owned ones that stop matching are released.
//! - The new ReplicaSet gets revision max+1 (`deployment.kubernetes.io/revision`); one
//!   that becomes new again (a rollback) keeps its old revisions in `revision-history`.
//!   Old ReplicaSets scaled to zero beyond `revisionHistoryLimit` are deleted.
//! - RollingUpdate grows the new ReplicaSet within maxSurge and shrinks old ones within
//!   maxUnavailable, counting available pods as the ReplicaSets' status reports them;
//!   Recreate scales the old ones to zero, waits for their pods to be gone, then creates
//!   the new one. Resizing mid-rollout scales every ReplicaSet proportionally.
//! - Paused Deployments only scale. Status: counts, Available and Progressing
//!   conditions, progressDeadlineSeconds, written through the status subresource only
//!   when something changed.

mod progress;
pub mod rollout;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use api_types::selector::LabelSelector;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;
use tracing::{debug, warn};

use super::controller_utils::{adopt as adopt_object, publish_event, release as release_object};
use super::controller_utils::{controller_of, controller_ref};
use super::Context;
use crate::cache::Pod;
use crate::informers::key;
use progress::{
    condition, new_condition, progress_deadline, set_condition, FAILED_RS_CREATE, FOUND_NEW_RS,
    NEW_RS_CREATED, PAUSED, PROGRESSING, RESUMED, TIMED_OUT,
};

pub const NAME: &str = "deployment";
const COMPONENT: &str = "deployment-controller";

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Annotations a Deployment never passes to its ReplicaSets.
const ANNOTATIONS_TO_SKIP: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];
/// Upstream's limit on the length of `revision-history`.
const MAX_REV_HISTORY_CHARS: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("deployment {deployment}: {message}")]
    Invalid { deployment: String, message: String },
    #[error("adopting replica set {rs}: {source}")]
    Adopt {
        rs: String,
        #[source]
        source: kube::Error,
    },
    #[error("releasing replica set {rs}: {source}")]
    Release {
        rs: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading {deployment} before adopting replica sets: {source}")]
    Recheck {
        deployment: String,
        #[source]
        source: kube::Error,
    },
    #[error("{deployment} is gone or being deleted: not adopting replica sets")]
    CannotAdopt { deployment: String },
    #[error("creating replica set {rs}: {source}")]
    Create {
        rs: String,
        #[source]
        source: kube::Error,
    },
    #[error("replica set {rs} exists with another template: hash collision")]
    HashCollision { rs: String },
    #[error("updating replica set {rs}: {source}")]
    UpdateReplicaSet {
        rs: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting old replica set {rs}: {source}")]
    DeleteReplicaSet {
        rs: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating the status of {deployment}: {source}")]
    Status {
        deployment: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating the revision of {deployment}: {source}")]
    Revision {
        deployment: String,
        #[source]
        source: kube::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A write lost an optimistic-concurrency race with a fresher object: the watch
    /// event that made it stale brings a new sync soon.
    fn is_conflict(&self) -> bool {
        let source = match self {
            Error::UpdateReplicaSet { source, .. }
            | Error::Status { source, .. }
            | Error::Create { source, .. } => source,
            _ => return false,
        };
        matches!(source, kube::Error::Api(s) if s.code == 409)
    }
}

struct State {
    ctx: Context,
    deployments: Store<Deployment>,
    replica_sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    /// The Deployment each ReplicaSet was last seen controlled by, so a Deployment hears
    /// when its ReplicaSet is taken away or deleted.
    rs_owners: Mutex<HashMap<String, ObjectRef<Deployment>>>,
}

pub fn start(ctx: &Context) -> BoxFuture<'static, ()> {
    let deployments = ctx.informers.store::<Deployment>();
    let state = Arc::new(State {
        ctx: ctx.clone(),
        deployments: deployments.clone(),
        replica_sets: ctx.informers.store::<ReplicaSet>(),
        pods: ctx.informers.store::<Pod>(),
        rs_owners: Mutex::new(HashMap::new()),
    });
    let for_rs = state.clone();
    let for_pods = state.clone();
    Controller::for_shared_stream(ctx.informers.subscribe::<Deployment>(), deployments)
        .with_config(
            controller::Config::default().concurrency(ctx.options.concurrent_deployment_syncs),
        )
        .watches_shared_stream(
            ctx.informers.subscribe::<ReplicaSet>(),
            move |rs: Arc<ReplicaSet>| for_rs.deployments_of_replica_set(&rs),
        )
        .watches_shared_stream(ctx.informers.subscribe::<Pod>(), move |pod: Arc<Pod>| {
            for_pods.recreate_deployment_of_pod(&pod)
        })
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .boxed()
}

fn is_deployment_ref(r: &OwnerReference) -> bool {
    r.kind == "Deployment" && r.api_version == "apps/v1"
}

impl State {
    /// The Deployments a ReplicaSet change concerns (upstream's ReplicaSet handlers): its
    /// controller and the one before, or for an orphan every Deployment whose selector
    /// matches it (which may adopt it).
    fn deployments_of_replica_set(&self, rs: &ReplicaSet) -> Vec<ObjectRef<Deployment>> {
        let Some(uid) = rs.uid() else {
            return Vec::new();
        };
        let ns = rs.namespace().unwrap_or_default();
        let gone = self
            .replica_sets
            .get(&ObjectRef::from_obj(rs))
            .is_none_or(|cur| cur.uid().as_deref() != Some(uid.as_str()));
        let controller = controller_of(rs);
        let mut out = Vec::new();
        if let Some(c) = controller.filter(|c| is_deployment_ref(c)) {
            out.push(ObjectRef::new(&c.name).within(&ns));
        }
        {
            let mut owners = self.rs_owners.lock();
            let previous = if gone || out.is_empty() {
                owners.remove(&uid)
            } else {
                owners.insert(uid, out[0].clone())
            };
            if let Some(p) = previous.filter(|p| !out.contains(p)) {
                out.push(p);
            }
        }
        if controller.is_none() && !gone {
            for d in self.deployments.state() {
                if d.namespace().as_deref() == Some(ns.as_str())
                    && selector_of(&d).is_some_and(|s| s.matches(rs.labels()))
                {
                    out.push(ObjectRef::from_obj(d.as_ref()));
                }
            }
        }
        out
    }

    /// A Recreate rollout waits for the old pods to be gone: it hears when one of its
    /// pods is deleted or finishes (upstream's deletePod handler).
    fn recreate_deployment_of_pod(&self, pod: &Pod) -> Option<ObjectRef<Deployment>> {
        let gone = pod.metadata.deletion_timestamp.is_some()
            || is_terminal(pod)
            || self
                .pods
                .get(&ObjectRef::from_obj(pod))
                .is_none_or(|cur| cur.uid() != pod.uid());
        if !gone {
            return None;
        }
        let ns = pod.namespace()?;
        let rs_ref = controller_of(pod).filter(|r| r.kind == "ReplicaSet")?;
        let rs = self
            .replica_sets
            .get(&ObjectRef::new(&rs_ref.name).within(&ns))
            .filter(|rs| rs.uid().as_deref() == Some(rs_ref.uid.as_str()))?;
        let d_ref = controller_of(rs.as_ref()).filter(|r| is_deployment_ref(r))?;
        let d = self
            .deployments
            .get(&ObjectRef::new(&d_ref.name).within(&ns))?;
        (strategy_type(&d) == "Recreate").then(|| ObjectRef::from_obj(d.as_ref()))
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn selector_of(d: &Deployment) -> Option<LabelSelector> {
    let spec = d.spec.as_ref()?;
    let s = LabelSelector::from_meta(&spec.selector).ok()?;
    (!s.is_empty()).then_some(s)
}

fn strategy_type(d: &Deployment) -> &str {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
}

fn desired(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

fn min_ready_seconds(d: &Deployment) -> i32 {
    d.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

fn template(d: &Deployment) -> PodTemplateSpec {
    d.spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default()
}

/// (maxSurge, maxUnavailable) of a RollingUpdate Deployment, (0, 0) for Recreate;
/// maxUnavailable never above the desired count (upstream's `MaxSurge`/`MaxUnavailable`).
fn fenceposts(d: &Deployment) -> Result<(i32, i32)> {
    if strategy_type(d) != "RollingUpdate" {
        return Ok((0, 0));
    }
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let want = desired(d);
    let (surge, unavailable) = rollout::resolve_fenceposts(
        ru.and_then(|r| r.max_surge.as_ref()),
        ru.and_then(|r| r.max_unavailable.as_ref()),
        want,
    )
    .map_err(|message| Error::Invalid {
        deployment: key(d),
        message,
    })?;
    let unavailable = if want == 0 { 0 } else { unavailable.min(want) };
    Ok((surge, unavailable))
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

/// Available pods as the ReplicaSet's status reports them, never more than its size:
/// a status not yet caught up with a scale-down must not count pods about to go.
fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
        .min(replicas(rs))
}

/// Pods a ReplicaSet has or is about to have: its size, or more while pods of a
/// scale-down are still there, so maxSurge bounds pods and not only sizes.
fn pods_of(rs: &ReplicaSet) -> i32 {
    replicas(rs).max(status_replicas(rs))
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn annotation_i32(rs: &ReplicaSet, name: &str) -> Option<i32> {
    rs.annotations().get(name).and_then(|v| v.parse().ok())
}

fn created(rs: &ReplicaSet) -> (Option<Timestamp>, String) {
    (
        rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
        rs.name_any(),
    )
}

/// Upstream's `EqualIgnoreHash`: the templates are the same but for the
/// `pod-template-hash` label. Compared as JSON without empty values, as upstream's
/// semantic equality compares Go structs: a template kubectl wrote back on `rollout
/// undo` carries `resources: {}` and `creationTimestamp: null` where ours has nothing.
fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    fn canonical(t: &PodTemplateSpec) -> serde_json::Value {
        let mut v = serde_json::to_value(t).unwrap_or_default();
        if let Some(labels) = v
            .pointer_mut("/metadata/labels")
            .and_then(|l| l.as_object_mut())
        {
            labels.remove(POD_TEMPLATE_HASH);
        }
        prune(&mut v);
        v
    }
    canonical(a) == canonical(b)
}

/// Drops nulls, empty objects and empty arrays, recursively.
fn prune(v: &mut serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => false,
        serde_json::Value::Object(m) => {
            m.retain(|_, x| prune(x));
            !m.is_empty()
        }
        serde_json::Value::Array(a) => {
            for x in a.iter_mut() {
                prune(x);
            }
            !a.is_empty()
        }
        _ => true,
    }
}

fn rs_template(rs: &ReplicaSet) -> Option<&PodTemplateSpec> {
    rs.spec.as_ref().and_then(|s| s.template.as_ref())
}

async fn reconcile(d: Arc<Deployment>, state: Arc<State>) -> Result<Action> {
    let metrics = state.ctx.metrics.clone();
    metrics.observe(NAME, sync(d, state)).await
}

fn error_policy(_d: Arc<Deployment>, error: &Error, _state: Arc<State>) -> Action {
    if error.is_conflict() {
        debug!(%error, "sync lost a race; retrying");
        return Action::requeue(Duration::from_millis(200));
    }
    warn!(%error, "sync failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// One sync of one Deployment: the working copy whose status is written at the end.
struct Sync<'a> {
    state: &'a State,
    /// As read from the cache.
    original: Arc<Deployment>,
    /// The working copy: its status collects this sync's changes.
    d: Deployment,
    new: Option<ReplicaSet>,
    /// Every other ReplicaSet the Deployment owns.
    old: Vec<ReplicaSet>,
    /// The revision the Deployment's annotation should say, when it should change.
    revision: Option<String>,
    now: Timestamp,
}

/// Upstream's `syncDeployment`.
async fn sync(original: Arc<Deployment>, state: Arc<State>) -> Result<Action> {
    let mut d = (*original).clone();
    d.status.get_or_insert_with(DeploymentStatus::default);
    let Some(selector) = selector_of(&d) else {
        // An empty selector would select every pod; validation keeps these out.
        publish(
            &state,
            &d,
            None,
            EventType::Warning,
            "SelectingAll",
            "This deployment is selecting all pods. A non-empty selector is required.".into(),
        );
        let status = d.status.get_or_insert_with(DeploymentStatus::default);
        if status.observed_generation < d.metadata.generation {
            status.observed_generation = d.metadata.generation;
            write_status(&state, &original, &d).await?;
        }
        return Ok(Action::await_change());
    };
    let owned = claim_replica_sets(&d, &selector, &state).await?;
    let mut s = Sync {
        state: &state,
        original: original.clone(),
        d,
        new: None,
        old: Vec::new(),
        revision: None,
        now: Timestamp::now(),
    };
    s.split(owned);
    let again = s.run().await;
    // Whatever happened, what was learnt is recorded.
    let written = s.finish().await;
    let again = again?;
    written?;
    Ok(again.map_or_else(Action::await_change, Action::requeue))
}

impl Sync<'_> {
    /// Upstream's `FindNewReplicaSet`/`FindOldReplicaSets`: the oldest ReplicaSet with
    /// the Deployment's template is the new one.
    fn split(&mut self, mut owned: Vec<ReplicaSet>) {
        owned.sort_by_key(created);
        let t = template(&self.d);
        let new = owned
            .iter()
            .position(|rs| rs_template(rs).is_some_and(|rt| equal_ignore_hash(rt, &t)));
        self.new = new.map(|i| owned.remove(i));
        self.old = owned;
    }

    async fn run(&mut self) -> Result<Option<Duration>> {
        if self.d.metadata.deletion_timestamp.is_some() {
            self.new_replica_set(false).await?;
            return Ok(self.sync_status(false));
        }
        self.check_paused_conditions();
        if paused(&self.d) {
            return self.sync_scaling().await;
        }
        if self.is_scaling_event().await? {
            return self.sync_scaling().await;
        }
        if strategy_type(&self.d) == "Recreate" {
            self.rollout_recreate().await
        } else {
            self.rollout_rolling().await
        }
    }

    /// Upstream's `checkPausedConditions`.
    fn check_paused_conditions(&mut self) {
        if progress_deadline(&self.d).is_none() {
            return;
        }
        let p = paused(&self.d);
        let status = self.d.status.get_or_insert_with(Default::default);
        let cond = condition(status, PROGRESSING);
        let reason = cond.and_then(|c| c.reason.as_deref());
        if reason == Some(TIMED_OUT) {
            return;
        }
        let paused_cond = reason == Some(PAUSED);

        if p && !paused_cond {
            set_condition(
                status,
                new_condition(
                    PROGRESSING,
                    "Unknown",
                    PAUSED,
                    "Deployment is paused".into(),
                    self.now,
                ),
            );
        } else if !p && paused_cond {
            set_condition(
                status,
                new_condition(
                    PROGRESSING,
                    "Unknown",
                    RESUMED,
                    "Deployment is resumed".into(),
                    self.now,
                ),
            );
        }
    }

    /// Upstream's `isScalingEvent`: an active ReplicaSet was sized for another count.
    async fn is_scaling_event(&mut self) -> Result<bool> {
        self.new_replica_set(false).await?;
        let want = desired(&self.d);
        Ok(self
            .all()
            .into_iter()
            .filter(|rs| replicas(rs) > 0)
            .any(|rs| annotation_i32(rs, DESIRED_REPLICAS).is_some_and(|n| n != want)))
    }

    fn all(&self) -> Vec<&ReplicaSet> {
        self.old.iter().chain(self.new.as_ref()).collect()
    }

    /// Upstream's `sync`: scaling only (paused, or resized), then the status.
    async fn sync_scaling(&mut self) -> Result<Option<Duration>> {
        self.new_replica_set(false).await?;
        self.scale().await?;
        if paused(&self.d) {
            self.cleanup().await?;
        }
        Ok(self.sync_status(false))
    }

    /// Upstream's `getNewReplicaSet`: brings the new ReplicaSet's annotations and
    /// minReadySeconds up to date, or creates it (`create`).
    async fn new_replica_set(&mut self, create: bool) -> Result<()> {
        let max_old = self.old.iter().map(revision).max().unwrap_or(0);
        let new_revision = max_old + 1;
        if let Some(existing) = &self.new {
            let mut copy = existing.clone();
            let annotations_changed =
                set_new_replica_set_annotations(&self.d, &mut copy, new_revision, true);
            let min_ready = min_ready_seconds(&self.d);
            let min_ready_changed = copy
                .spec
                .as_ref()
                .and_then(|s| s.min_ready_seconds)
                .unwrap_or(0)
                != min_ready;
            if annotations_changed || min_ready_changed {
                let patch = json!({
                    "metadata": {
                        "resourceVersion": existing.resource_version(),
                        "annotations": copy.annotations(),
                    },
                    "spec": {"minReadySeconds": min_ready},
                });
                let updated = self.patch_rs(existing, &patch).await?;
                self.new = Some(updated);
                return Ok(());
            }
            if let Some(r) = copy.annotations().get(REVISION) {
                self.set_revision(r.clone());
            }
            let has_deadline = progress_deadline(&self.d).is_some();
            let status = self.d.status.get_or_insert_with(Default::default);
            if has_deadline && condition(status, PROGRESSING).is_none() {
                let msg = format!("Found new replica set {:?}", copy.name_any());
                set_condition(
                    status,
                    new_condition(PROGRESSING, "True", FOUND_NEW_RS, msg, self.now),
                );
            }
            return Ok(());
        }
        if !create {
            return Ok(());
        }
        let rs = self.new_replica_set_object(new_revision)?;
        let name = rs.name_any();
        let ns = self.d.namespace().unwrap_or_default();
        let api: Api<ReplicaSet> = Api::namespaced(self.state.ctx.client.clone(), &ns);
        let count = replicas(&rs);
        match api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                if count > 0 {
                    self.event(
                        Some(&created),
                        EventType::Normal,
                        "ScalingReplicaSet",
                        format!("Scaled up replica set {name} from 0 to {count}"),
                    );
                }
                self.set_revision(new_revision.to_string());
                if progress_deadline(&self.d).is_some() {
                    let msg = format!("Created new replica set {name:?}");
                    let status = self.d.status.get_or_insert_with(Default::default);
                    set_condition(
                        status,
                        new_condition(PROGRESSING, "True", NEW_RS_CREATED, msg, self.now),
                    );
                }
                self.new = Some(created);
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => {
                // Our cache lags behind our own creation, or another template hashes the
                // same: only a ReplicaSet we control with our template is ours.
                let existing = api.get(&name).await.map_err(|source| Error::Create {
                    rs: format!("{ns}/{name}"),
                    source,
                })?;
                let ours = controller_of(&existing)
                    .is_some_and(|c| Some(c.uid.as_str()) == self.d.metadata.uid.as_deref());
                let same = rs_template(&existing)
                    .is_some_and(|t| equal_ignore_hash(t, &template(&self.d)));
                if ours && same {
                    self.set_revision(new_revision.to_string());
                    self.new = Some(existing);
                    return Ok(());
                }
                let status = self.d.status.get_or_insert_with(Default::default);
                let before = status.collision_count.unwrap_or(0);
                status.collision_count = Some(before + 1);
                debug!(deployment = %key(&self.d), before, "hash collision; bumping collisionCount");
                Err(Error::HashCollision {
                    rs: format!("{ns}/{name}"),
                })
            }
            Err(source) => {
                let msg = format!("Failed to create new replica set {name:?}: {source}");
                if progress_deadline(&self.d).is_some() {
                    let status = self.d.status.get_or_insert_with(Default::default);
                    set_condition(
                        status,
                        new_condition(
                            PROGRESSING,
                            "False",
                            FAILED_RS_CREATE,
                            msg.clone(),
                            self.now,
                        ),
                    );
                }
                self.event(None, EventType::Warning, FAILED_RS_CREATE, msg);
                Err(Error::Create {
                    rs: format!("{ns}/{name}"),
                    source,
                })
            }
        }
    }

    /// The ReplicaSet upstream creates for the Deployment's template.
    fn new_replica_set_object(&self, new_revision: i64) -> Result<ReplicaSet> {
        let d = &self.d;
        let mut t = template(d);
        let template_json = serde_json::to_vec(&t).unwrap_or_default();
        let collision_count = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = rollout::pod_template_hash(&template_json, collision_count);
        let labels = {
            let meta = t.metadata.get_or_insert_with(Default::default);
            let labels = meta.labels.get_or_insert_with(BTreeMap::new);
            labels.insert(POD_TEMPLATE_HASH.into(), hash.clone());
            labels.clone()
        };
        let mut selector = d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", d.name_any())),
                namespace: d.namespace(),
                owner_references: Some(vec![controller_ref(d)]),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: Some(min_ready_seconds(d)),
                selector,
                template: Some(t),
            }),
            status: None,
        };
        let count = match strategy_type(d) {
            "Recreate" => desired(d),
            _ => {
                let (surge, _) = fenceposts(d)?;
                let total: i32 = self.old.iter().map(pods_of).sum();
                rollout::rolling_new_replicas(desired(d), surge, total, 0)
            }
        };
        if let Some(spec) = &mut rs.spec {
            spec.replicas = Some(count);
        }
        set_new_replica_set_annotations(d, &mut rs, new_revision, false);
        Ok(rs)
    }

    fn set_revision(&mut self, revision: String) {
        let current = self.d.annotations().get(REVISION);
        if current != Some(&revision) {
            self.d
                .annotations_mut()
                .insert(REVISION.into(), revision.clone());
            self.revision = Some(revision);
        }
    }

    /// Upstream's `scale`: one active ReplicaSet takes the whole count; a saturated new
    /// one means the old go; otherwise every active one is resized proportionally.
    async fn scale(&mut self) -> Result<()> {
        let want = desired(&self.d);
        let active: Vec<usize> = (0..self.old.len())
            .filter(|&i| replicas(&self.old[i]) > 0)
            .collect();
        let new_active = self.new.as_ref().is_some_and(|rs| replicas(rs) > 0);
        // Upstream's `FindActiveOrLatest`: the only active ReplicaSet, or with none
        // active the new one, else the newest old one.
        let only = match (active.len(), new_active) {
            (0, _) if self.new.is_some() => Some(None),
            (0, _) => (0..self.old.len())
                .max_by_key(|&i| created(&self.old[i]))
                .map(Some),
            (1, false) => Some(Some(active[0])),
            _ => None,
        };
        if let Some(which) = only {
            return self.scale_one(which, want, true).await.map(|_| ());
        }
        if self.new.as_ref().is_some_and(|rs| saturated(&self.d, rs)) {
            for i in active {
                self.scale_one(Some(i), 0, true).await?;
            }
            return Ok(());
        }
        if strategy_type(&self.d) != "RollingUpdate" {
            return Ok(());
        }
        // Proportional scaling over the active ReplicaSets (new: index usize::MAX).
        let (surge, _) = fenceposts(&self.d)?;
        let mut sets: Vec<(usize, &ReplicaSet)> =
            active.iter().map(|&i| (i, &self.old[i])).collect();
        if let Some(rs) = self.new.as_ref().filter(|rs| replicas(rs) > 0) {
            sets.push((usize::MAX, rs));
        }
        let sizes: Vec<i32> = sets.iter().map(|(_, rs)| replicas(rs)).collect();
        let grow = rollout::growing(&sizes, want, surge);
        sets.sort_by(|(_, a), (_, b)| {
            replicas(b).cmp(&replicas(a)).then_with(|| match grow {
                Some(true) => created(b).cmp(&created(a)),
                _ => created(a).cmp(&created(b)),
            })
        });
        let sizes: Vec<rollout::ScaleSize> = sets
            .iter()
            .map(|(_, rs)| rollout::ScaleSize {
                replicas: replicas(rs),
                max_replicas: annotation_i32(rs, MAX_REPLICAS),
            })
            .collect();
        let status_replicas = progress::count(self.d.status.as_ref().and_then(|s| s.replicas));
        let targets = rollout::proportional_sizes(&sizes, want, surge, status_replicas);
        let order: Vec<usize> = sets.iter().map(|(i, _)| *i).collect();
        for (i, target) in order.into_iter().zip(targets) {
            let which = (i != usize::MAX).then_some(i);
            self.scale_one(which, target, false).await?;
        }
        Ok(())
    }

    /// Scales the new ReplicaSet (`None`) or old one `i`, keeping the written copy;
    /// `only_if_resized` leaves the annotations alone when the size is right.
    async fn scale_one(
        &mut self,
        which: Option<usize>,
        to: i32,
        only_if_resized: bool,
    ) -> Result<bool> {
        let slot = match which {
            None => match self.new.as_mut() {
                Some(rs) => rs,
                None => return Ok(false),
            },
            Some(i) => &mut self.old[i],
        };
        if only_if_resized && replicas(slot) == to {
            return Ok(false);
        }
        let mut rs = slot.clone();
        let r = self.scale_rs(&mut rs, to).await;
        match which {
            None => self.new = Some(rs),
            Some(i) => self.old[i] = rs,
        }
        r
    }

    /// Upstream's `scaleReplicaSet`: sets the size and the replicas annotations; an event
    /// when the size changed. Returns whether it did.
    async fn scale_rs(&self, rs: &mut ReplicaSet, to: i32) -> Result<bool> {
        let want = desired(&self.d);
        let (surge, _) = fenceposts(&self.d)?;
        let max = want + surge;
        let from = replicas(rs);
        let size_changes = from != to;
        let annotations_change = annotation_i32(rs, DESIRED_REPLICAS) != Some(want)
            || annotation_i32(rs, MAX_REPLICAS) != Some(max);
        if !size_changes && !annotations_change {
            return Ok(false);
        }
        let patch = json!({
            "metadata": {
                "resourceVersion": rs.resource_version(),
                "annotations": {DESIRED_REPLICAS: want.to_string(), MAX_REPLICAS: max.to_string()},
            },
            "spec": {"replicas": to},
        });
        *rs = self.patch_rs(rs, &patch).await?;
        if size_changes {
            let direction = if to > from { "up" } else { "down" };
            self.event(
                Some(rs),
                EventType::Normal,
                "ScalingReplicaSet",
                format!(
                    "Scaled {direction} replica set {} from {from} to {to}",
                    rs.name_any()
                ),
            );
        }
        Ok(size_changes)
    }

    /// A merge patch of a ReplicaSet; its `metadata.resourceVersion` makes the write
    /// fail rather than act on a stale copy.
    async fn patch_rs(&self, rs: &ReplicaSet, patch: &serde_json::Value) -> Result<ReplicaSet> {
        let api: Api<ReplicaSet> = Api::namespaced(
            self.state.ctx.client.clone(),
            &rs.namespace().unwrap_or_default(),
        );
        api.patch(
            &rs.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .map_err(|source| Error::UpdateReplicaSet {
            rs: key(rs),
            source,
        })
    }

    /// Upstream's `rolloutRolling`.
    async fn rollout_rolling(&mut self) -> Result<Option<Duration>> {
        self.new_replica_set(true).await?;
        if self.reconcile_new_replica_set().await? {
            return Ok(self.sync_status(true));
        }
        if self.reconcile_old_replica_sets().await? {
            return Ok(self.sync_status(true));
        }
        if progress::complete(&self.d, &self.d.status.clone().unwrap_or_default()) {
            self.cleanup().await?;
        }
        Ok(self.sync_status(true))
    }

    /// Upstream's `reconcileNewReplicaSet`: grows the new ReplicaSet within maxSurge (or
    /// shrinks it to the desired count).
    async fn reconcile_new_replica_set(&mut self) -> Result<bool> {
        let Some(rs) = &self.new else {
            return Ok(false);
        };
        let want = desired(&self.d);
        let current = replicas(rs);
        if current == want {
            return Ok(false);
        }
        let to = if current > want {
            want
        } else {
            let (surge, _) = fenceposts(&self.d)?;
            let total: i32 = self.old.iter().map(pods_of).sum::<i32>() + pods_of(rs);
            rollout::rolling_new_replicas(want, surge, total, current)
        };
        self.scale_one(None, to, true).await
    }

    /// Upstream's `reconcileOldReplicaSets`: removes unavailable old pods first, then
    /// shrinks old ReplicaSets (oldest first) while enough pods stay available.
    async fn reconcile_old_replica_sets(&mut self) -> Result<bool> {
        let old_pods: i32 = self.old.iter().map(replicas).sum();
        if old_pods == 0 {
            return Ok(false);
        }
        let (_, max_unavailable) = fenceposts(&self.d)?;
        let want = desired(&self.d);
        let new = self.new.as_ref();
        let all_pods = old_pods + new.map_or(0, replicas);
        let max_down = rollout::max_scaled_down(
            all_pods,
            want,
            max_unavailable,
            new.map_or(0, replicas),
            new.map_or(0, available),
        );
        if max_down <= 0 {
            return Ok(false);
        }
        // Active old ReplicaSets, oldest first.
        let mut order: Vec<usize> = (0..self.old.len())
            .filter(|&i| replicas(&self.old[i]) > 0)
            .collect();
        order.sort_by_key(|&i| created(&self.old[i]));
        let olds: Vec<rollout::OldSize> = order
            .iter()
            .map(|&i| rollout::OldSize {
                replicas: replicas(&self.old[i]),
                available: available(&self.old[i]),
            })
            .collect();
        let (sizes, cleaned) = rollout::cleanup_unhealthy(&olds, max_down);
        for (&i, &to) in order.iter().zip(&sizes) {
            self.scale_one(Some(i), to, true).await?;
        }
        let available_now: i32 = order.iter().map(|&i| available(&self.old[i])).sum::<i32>()
            + self.new.as_ref().map_or(0, available);
        let sizes: Vec<i32> = order.iter().map(|&i| replicas(&self.old[i])).collect();
        let targets = rollout::rolling_scale_down(&sizes, available_now, want, max_unavailable);
        let mut scaled = 0;
        for ((&i, &to), from) in order.iter().zip(&targets).zip(&sizes) {
            self.scale_one(Some(i), to, true).await?;
            scaled += from - to;
        }
        Ok(cleaned + scaled > 0)
    }

    /// Upstream's `rolloutRecreate`: old ReplicaSets to zero, wait until their pods are
    /// gone, then the new one at full size.
    async fn rollout_recreate(&mut self) -> Result<Option<Duration>> {
        self.new_replica_set(false).await?;
        let mut scaled_down = false;
        for i in 0..self.old.len() {
            if replicas(&self.old[i]) == 0 {
                continue;
            }
            scaled_down |= self.scale_one(Some(i), 0, true).await?;
        }
        if scaled_down || self.old_pods_running() {
            return Ok(self.sync_status(true));
        }
        if self.new.is_none() {
            self.new_replica_set(true).await?;
        }
        self.scale_one(None, desired(&self.d), true).await?;
        if progress::complete(&self.d, &self.d.status.clone().unwrap_or_default()) {
            self.cleanup().await?;
        }
        Ok(self.sync_status(true))
    }

    /// Upstream's `oldPodsRunning`: an old ReplicaSet still reports pods, or a pod it
    /// controls has not finished.
    fn old_pods_running(&self) -> bool {
        if self.old.iter().map(status_replicas).sum::<i32>() > 0 {
            return true;
        }
        let old_uids: Vec<String> = self.old.iter().filter_map(|rs| rs.uid()).collect();
        let ns = self.d.namespace();
        self.state.pods.state().iter().any(|p| {
            p.namespace() == ns
                && controller_of(p.as_ref()).is_some_and(|c| old_uids.contains(&c.uid))
                && !is_terminal(p)
        })
    }

    /// Upstream's `cleanupDeployment`: old ReplicaSets beyond `revisionHistoryLimit`,
    /// lowest revisions first, once they have no pods.
    async fn cleanup(&mut self) -> Result<()> {
        let Some(limit) = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .filter(|&l| l != i32::MAX)
        else {
            return Ok(());
        };
        let mut cleanable: Vec<&ReplicaSet> = self
            .old
            .iter()
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let diff = cleanable.len() as i64 - i64::from(limit);
        if diff <= 0 {
            return Ok(());
        }
        cleanable.sort_by_key(|rs| (revision(rs), created(rs)));
        let mut deleted = Vec::new();
        for rs in cleanable.into_iter().take(diff as usize) {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if status_replicas(rs) != 0
                || replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            let api: Api<ReplicaSet> = Api::namespaced(
                self.state.ctx.client.clone(),
                &rs.namespace().unwrap_or_default(),
            );
            match api.delete(&rs.name_any(), &DeleteParams::default()).await {
                Ok(_) => deleted.push(rs.uid()),
                Err(kube::Error::Api(s)) if s.is_not_found() => deleted.push(rs.uid()),
                Err(source) => {
                    return Err(Error::DeleteReplicaSet {
                        rs: key(rs),
                        source,
                    })
                }
            }
        }
        self.old.retain(|rs| !deleted.contains(&rs.uid()));
        Ok(())
    }

    /// The status from the ReplicaSets: with progress estimated for a rollout
    /// (upstream's `syncRolloutStatus`) or not (`syncDeploymentStatus`). Returns when
    /// to look again for the progress deadline.
    fn sync_status(&mut self, rollout: bool) -> Option<Duration> {
        let max_unavailable = fenceposts(&self.d).map(|f| f.1).unwrap_or(0);
        let all = self.all();
        let (status, again) = if rollout {
            progress::rollout_status(&self.d, &all, self.new.as_ref(), max_unavailable, self.now)
        } else {
            (
                progress::calculate_status(
                    &self.d,
                    &all,
                    self.new.as_ref(),
                    max_unavailable,
                    self.now,
                ),
                None,
            )
        };
        self.d.status = Some(status);
        again
    }

    /// Writes what changed: the status (through the status subresource) and the
    /// Deployment's revision annotation.
    async fn finish(&self) -> Result<()> {
        write_status(self.state, &self.original, &self.d).await?;
        if let Some(revision) = &self.revision {
            let api: Api<Deployment> = Api::namespaced(
                self.state.ctx.client.clone(),
                &self.d.namespace().unwrap_or_default(),
            );
            let patch = json!({"metadata": {
                "uid": self.d.uid(),
                "annotations": {REVISION: revision},
            }});
            match api
                .patch(
                    &self.d.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(source) => {
                    return Err(Error::Revision {
                        deployment: key(&self.d),
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    fn event(&self, rs: Option<&ReplicaSet>, type_: EventType, reason: &str, note: String) {
        publish(self.state, &self.d, rs, type_, reason, note);
    }
}

/// Upstream's `IsSaturated`: the new ReplicaSet has every pod, all available.
fn saturated(d: &Deployment, rs: &ReplicaSet) -> bool {
    let want = desired(d);
    replicas(rs) == want
        && annotation_i32(rs, DESIRED_REPLICAS) == Some(want)
        && rs
            .status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0)
            == want
}

/// Upstream's `SetNewReplicaSetAnnotations`: the Deployment's annotations copied, the
/// revision raised to `new_revision` (the old one kept in the history), and for a
/// ReplicaSet about to be created (`!exists`) the replicas annotations. Returns whether
/// anything changed.
fn set_new_replica_set_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = false;
    let annotations = rs.annotations_mut();
    for (k, v) in d.annotations() {
        if ANNOTATIONS_TO_SKIP.contains(&k.as_str()) || annotations.get(k) == Some(v) {
            continue;
        }
        annotations.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = annotations.get(REVISION).cloned();
    let old_revision: i64 = match old.as_deref() {
        None | Some("") => 0,
        Some(r) => match r.parse() {
            Ok(n) => n,
            Err(_) => return false,
        },
    };
    if old_revision < new_revision {
        annotations.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = annotations
                .get(REVISION_HISTORY)
                .cloned()
                .unwrap_or_default();
            if let Some(h) = rollout::append_revision_history(&history, &old, MAX_REV_HISTORY_CHARS)
            {
                annotations.insert(REVISION_HISTORY.into(), h);
            }
        }
    }
    if !exists {
        let want = desired(d);
        let surge = fenceposts(d).map(|f| f.0).unwrap_or(0);
        annotations.insert(DESIRED_REPLICAS.into(), want.to_string());
        annotations.insert(MAX_REPLICAS.into(), (want + surge).to_string());
        changed = true;
    }
    changed
}

/// Upstream's `ClaimReplicaSets`: the ReplicaSets the Deployment controls, after
/// adopting matching orphans and releasing owned ones that no longer match.
async fn claim_replica_sets(
    d: &Deployment,
    selector: &LabelSelector,
    state: &State,
) -> Result<Vec<ReplicaSet>> {
    let uid = d.uid().unwrap_or_default();
    let ns = d.namespace().unwrap_or_default();
    let deleting = d.metadata.deletion_timestamp.is_some();
    let mut claimed = Vec::new();
    let mut adopt = Vec::new();
    let mut release = Vec::new();
    for rs in state.replica_sets.state() {
        if rs.namespace().as_deref() != Some(ns.as_str()) {
            continue;
        }
        let matches = selector.matches(rs.labels());
        match controller_of(rs.as_ref()) {
            Some(c) if c.uid != uid => {}
            Some(_) if matches => claimed.push((*rs).clone()),
            Some(_) if !deleting => release.push(rs),
            Some(_) => {}
            None if matches && !deleting && rs.metadata.deletion_timestamp.is_none() => {
                adopt.push(rs)
            }
            None => {}
        }
    }
    let api: Api<ReplicaSet> = Api::namespaced(state.ctx.client.clone(), &ns);
    if !adopt.is_empty() {
        // Upstream's RecheckDeletionTimestamp: adopt only for a Deployment that is still
        // the same object and not being deleted, read fresh from the apiserver.
        let deployments: Api<Deployment> = Api::namespaced(state.ctx.client.clone(), &ns);
        let fresh = deployments
            .get_opt(&d.name_any())
            .await
            .map_err(|source| Error::Recheck {
                deployment: key(d),
                source,
            })?;
        let can_adopt = fresh.is_some_and(|f| {
            f.uid().as_deref() == Some(uid.as_str()) && f.metadata.deletion_timestamp.is_none()
        });
        if !can_adopt {
            return Err(Error::CannotAdopt { deployment: key(d) });
        }
        let reference = controller_ref(d);
        for rs in adopt {
            match adopt_object(&api, &reference, rs.as_ref()).await {
                Ok(Some(adopted)) => claimed.push(adopted),
                Ok(None) => {}
                Err(source) => {
                    return Err(Error::Adopt {
                        rs: key(rs.as_ref()),
                        source,
                    })
                }
            }
        }
    }
    for rs in release {
        if let Err(source) = release_object(&api, &uid, rs.as_ref()).await {
            return Err(Error::Release {
                rs: key(rs.as_ref()),
                source,
            });
        }
    }
    Ok(claimed)
}

/// Writes the working copy's status through the status subresource if it differs from
/// what was read (upstream's `UpdateStatus` with the read resourceVersion).
async fn write_status(state: &State, original: &Deployment, d: &Deployment) -> Result<()> {
    let before = original.status.clone().unwrap_or_default();
    let after = d.status.clone().unwrap_or_default();
    if before == after {
        return Ok(());
    }
    let api: Api<Deployment> = Api::namespaced(
        state.ctx.client.clone(),
        &original.namespace().unwrap_or_default(),
    );
    let mut body = original.clone();
    body.status = Some(after);
    match api
        .replace_status(&original.name_any(), &PostParams::default(), &body)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(source) => Err(Error::Status {
            deployment: key(original),
            source,
        }),
    }
}

/// Publishes an event about the Deployment in the background, naming the ReplicaSet it
/// concerns. Each is its own Event, as upstream's are per message: kube's recorder
/// would fold every ScalingReplicaSet of a Deployment into one series keeping the first
/// message.
fn publish(
    state: &State,
    d: &Deployment,
    rs: Option<&ReplicaSet>,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let recorder = state.ctx.recorder(COMPONENT);
    let reference = d.object_ref(&());
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: rs.map(|rs| rs.object_ref(&())),
    };
    publish_event(recorder, reference, event);
}
