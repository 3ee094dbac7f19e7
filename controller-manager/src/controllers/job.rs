//! job: runs a batch/v1 Job's pods to completion (upstream's pkg/controller/job).
//!
//! - Up to `parallelism` active pods from the template, until `completions` pods
//!   succeeded; with no `completions`, until any pod succeeded and none is active (the
//!   work-queue pattern). Indexed Jobs run each index `0..completions` once, in pods
//!   carrying the `batch.kubernetes.io/job-completion-index` annotation and label, the
//!   `JOB_COMPLETION_INDEX` variable and the hostname `<job>-<index>`, and report
//!   `status.completedIndexes` as intervals ("1,3-5,7").
//! - Expectations: after creating or deleting pods, no more are created or deleted until
//!   the pod informer has shown them, so a lagging cache never over-creates.
//! - Pod tracking with finalizers: created pods carry `batch.kubernetes.io/job-tracking`.
//!   A finished pod's uid is first recorded in `status.uncountedTerminatedPods`, then its
//!   finalizer is removed, then it moves into `succeeded`/`failed`; a pod whose finalizer
//!   is gone has been counted, so a finished pod being removed is never counted twice.
//!   Pods the controller deletes itself (suspend, excess, a finishing Job) lose the
//!   finalizer first and do not count as failed.
//! - Failure: more failed pods than `backoffLimit` (with restartPolicy OnFailure, container
//!   restarts count), `activeDeadlineSeconds` from `status.startTime`, or a
//!   `podFailurePolicy` FailJob rule (Ignore rules do not count, Count rules do) set the
//!   `FailureTarget` condition, the active pods are deleted (counted as failed), and once
//!   none is left the `Failed` condition. Success sets `SuccessCriteriaMet`, then `Complete` with the
//!   `completionTime` (the two-step conditions of Kubernetes 1.31+).
//! - After failures, new pods wait 10s·2^(n-1) (at most 6 minutes) since the last one
//!   (upstream's DefaultJobPodFailureBackOff), by requeueing, not sleeping.
//! - `spec.suspend` deletes the active pods and sets `Suspended`; resuming resets
//!   `startTime`.
//! - podReplacementPolicy Failed (the default with a podFailurePolicy): a terminating pod
//!   keeps its place, and counts as failed only once its phase is Failed.
//!
//! Not done (yet): adopting orphan pods that match a Job's selector (the generated
//! selector names the Job's uid, so only `manualSelector` Jobs could have any),
//! `backoffLimitPerIndex`/`failedIndexes`, `successPolicy`. The failure backoff is kept in
//! memory (as upstream's), so a restarted controller-manager does not wait out old failures.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::{self, BoxFuture};
use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{
    Job, JobCondition, JobSpec, JobStatus, PodFailurePolicy, UncountedTerminatedPods,
};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::mpsc;
use tracing::warn;

use super::controller_utils::{
    controller_of_kind, is_pod_active, namespace_terminating, only_uid, pod_from_template,
    publish_event, ready_since, slow_start_batch, Expectations, EXPECTATIONS_TIMEOUT,
};
use super::Context;
use crate::cache::Pod;
use crate::informers::key;

pub const NAME: &str = "job";
const COMPONENT: &str = "job-controller";
/// The finalizer that keeps a Job's finished pod until the Job has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// An Indexed Job's pod's index (annotation and label).
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// `spec.managedBy` of the Jobs this controller runs (unset means the same).
const MANAGED_BY: &str = "kubernetes.io/job-controller";
/// Upstream's `DefaultJobPodFailureBackOff` and `MaxJobPodFailureBackOff`.
const POD_FAILURE_BACKOFF: Duration = Duration::from_secs(10);
const MAX_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(360);
/// Upstream's `MaxPodCreateDeletePerSync`.
const MAX_POD_CREATE_DELETE_PER_SYNC: usize = 500;

const COMPLETE: &str = "Complete";
const FAILED: &str = "Failed";
const FAILURE_TARGET: &str = "FailureTarget";
const SUCCESS_CRITERIA_MET: &str = "SuccessCriteriaMet";
const SUSPENDED: &str = "Suspended";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating pods for job {job}: {source}")]
    CreatePod {
        job: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting pod {pod}: {source}")]
    DeletePod {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("removing the tracking finalizer of pod {pod}: {source}")]
    Finalizer {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating the status of job {job}: {source}")]
    Status {
        job: String,
        #[source]
        source: kube::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub fn start(ctx: &Context) -> BoxFuture<'static, ()> {
    let jobs = ctx.informers.store::<Job>();
    let pods = ctx.informers.store::<Pod>();
    let (orphans_tx, orphans_rx) = mpsc::unbounded_channel();
    let state = Arc::new(State {
        ctx: ctx.clone(),
        recorder: ctx.recorder(COMPONENT),
        jobs: jobs.clone(),
        pods,
        expectations: Expectations::default(),
        finalizers_removed: Mutex::new(HashMap::new()),
        backoff: Mutex::new(HashMap::new()),
        orphans: orphans_tx,
    });
    // A deleted Job's bookkeeping goes with it.
    let job_events = {
        let state = state.clone();
        ctx.informers.subscribe::<Job>().inspect(move |j| {
            let uid = j.uid().unwrap_or_default();
            let live = state
                .jobs
                .get(&ObjectRef::from_obj(j.as_ref()))
                .is_some_and(|cur| cur.uid().as_deref() == Some(uid.as_str()));
            if !live {
                state.forget(&uid);
            }
        })
    };
    let pod_events = ctx.informers.subscribe::<Pod>();
    let mapper_state = state.clone();
    let orphan_state = state.clone();
    let controller = Controller::for_shared_stream(job_events, jobs)
        .with_config(controller::Config::default().concurrency(ctx.options.concurrent_job_syncs))
        .watches_shared_stream(pod_events, move |pod: Arc<Pod>| mapper_state.job_of(&pod))
        .run(reconcile, error_policy, state)
        .for_each(|_| async {});
    future::join(controller, release_orphans(orphan_state, orphans_rx))
        .map(|_| ())
        .boxed()
}

#[derive(Clone, Copy)]
struct Backoff {
    /// Failed pods since the last success.
    failures: u32,
    last: Timestamp,
}

struct State {
    ctx: Context,
    recorder: Recorder,
    jobs: Store<Job>,
    pods: Store<Pod>,
    expectations: Expectations,
    /// By Job uid: pods whose tracking finalizer this controller removed while the cache
    /// may still show it (upstream's finalizer expectations).
    finalizers_removed: Mutex<HashMap<String, HashSet<String>>>,
    /// By Job uid: recent pod failures, for the creation backoff.
    backoff: Mutex<HashMap<String, Backoff>>,
    /// Pods holding the tracking finalizer for a Job that is gone.
    orphans: mpsc::UnboundedSender<ObjectRef<Pod>>,
}

impl State {
    fn forget(&self, job_uid: &str) {
        self.expectations.forget(job_uid);
        self.finalizers_removed.lock().remove(job_uid);
        self.backoff.lock().remove(job_uid);
    }

    /// The Job a pod change concerns (its controller), recording what the change means
    /// for the Job's expectations. A tracked pod whose Job is gone goes to the orphan queue.
    fn job_of(&self, pod: &Pod) -> Option<ObjectRef<Job>> {
        let uid = pod.uid()?;
        let ns = pod.namespace().unwrap_or_default();
        let controller = controller_of_kind::<Job, _>(pod)?;
        let gone = pod.metadata.deletion_timestamp.is_some()
            || self
                .pods
                .get(&ObjectRef::from_obj(pod))
                .is_none_or(|cur| cur.uid().as_deref() != Some(uid.as_str()));
        self.expectations.observe(&controller.uid, &uid, gone);
        let job = ObjectRef::new(&controller.name).within(&ns);
        let live = self
            .jobs
            .get(&job)
            .is_some_and(|j| j.uid().as_deref() == Some(controller.uid.as_str()));
        if !live && has_tracking_finalizer(pod) {
            let _ = self.orphans.send(ObjectRef::from_obj(pod));
        }
        Some(job)
    }

    /// Publishes an event in the background; one about a pod names it as `related`.
    fn event(&self, job: &Job, pod: Option<&Pod>, type_: EventType, reason: &str, note: String) {
        let recorder = match pod {
            Some(_) => self.ctx.recorder(COMPONENT),
            None => self.recorder.clone(),
        };
        let reference = job.object_ref(&());
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: pod.map(|p| p.object_ref(&())),
        };
        publish_event(recorder, reference, event);
    }

    /// The pods whose finalizer removal is done or pending, after dropping those the
    /// cache shows without the finalizer (or no longer has).
    fn removed_finalizers(&self, job_uid: &str, pods: &[Arc<Pod>]) -> HashSet<String> {
        let mut all = self.finalizers_removed.lock();
        let Some(set) = all.get_mut(job_uid) else {
            return HashSet::new();
        };
        let tracked: HashSet<String> = pods
            .iter()
            .filter(|p| has_tracking_finalizer(p))
            .filter_map(|p| p.uid())
            .collect();
        set.retain(|uid| tracked.contains(uid));
        let out = set.clone();
        if set.is_empty() {
            all.remove(job_uid);
        }
        out
    }

    /// Removes the tracking finalizer from a pod (a merge patch on its resourceVersion,
    /// retried once on a fresh copy).
    async fn remove_finalizer(&self, job_uid: &str, pod: &Pod) -> Result<()> {
        let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(
            self.ctx.client.clone(),
            &pod.namespace().unwrap_or_default(),
        );
        let name = pod.name_any();
        let uid = pod.uid().unwrap_or_default();
        let mut finalizers = pod.finalizers().to_vec();
        let mut rv = pod.resource_version();
        for attempt in 0..2 {
            if !finalizers.iter().any(|f| f == TRACKING_FINALIZER) {
                break;
            }
            finalizers.retain(|f| f != TRACKING_FINALIZER);
            let body = json!({"metadata": {"finalizers": finalizers, "resourceVersion": rv}});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
                .await
            {
                Ok(_) => break,
                Err(kube::Error::Api(s)) if s.is_not_found() => break,
                Err(kube::Error::Api(s)) if s.is_conflict() && attempt == 0 => {
                    match api.get_metadata_opt(&name).await {
                        Ok(Some(fresh)) if fresh.uid().as_deref() == Some(uid.as_str()) => {
                            finalizers = fresh.finalizers().to_vec();
                            rv = fresh.resource_version();
                        }
                        Ok(_) => break,
                        Err(source) => {
                            return Err(Error::Finalizer {
                                pod: key(pod),
                                source,
                            })
                        }
                    }
                }
                Err(source) => {
                    return Err(Error::Finalizer {
                        pod: key(pod),
                        source,
                    })
                }
            }
        }
        self.finalizers_removed
            .lock()
            .entry(job_uid.to_string())
            .or_default()
            .insert(uid);
        Ok(())
    }

    /// Removes the tracking finalizers of `pods` concurrently; the uids done, and the
    /// first error.
    async fn remove_finalizers(
        &self,
        job_uid: &str,
        pods: &[Arc<Pod>],
    ) -> (HashSet<String>, Option<Error>) {
        let results = future::join_all(pods.iter().map(|p| async move {
            (
                p.uid().unwrap_or_default(),
                self.remove_finalizer(job_uid, p).await,
            )
        }))
        .await;
        let mut done = HashSet::new();
        let mut first = None;
        for (uid, r) in results {
            match r {
                Ok(()) => {
                    done.insert(uid);
                }
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        (done, first)
    }
}

/// Removes the tracking finalizer from pods whose Job is gone (upstream's orphan queue),
/// once the Job informer has listed, checking again that the Job is really gone.
async fn release_orphans(state: Arc<State>, mut rx: mpsc::UnboundedReceiver<ObjectRef<Pod>>) {
    state.ctx.informers.synced_signal::<Job>().wait().await;
    while let Some(pod_ref) = rx.recv().await {
        let Some(pod) = state.pods.get(&pod_ref) else {
            continue;
        };
        let Some(controller) = controller_of_kind::<Job, _>(pod.as_ref()) else {
            continue;
        };
        let job = ObjectRef::new(&controller.name).within(&pod.namespace().unwrap_or_default());
        let live = state
            .jobs
            .get(&job)
            .is_some_and(|j| j.uid().as_deref() == Some(controller.uid.as_str()));
        if live || !has_tracking_finalizer(&pod) {
            continue;
        }
        let job_uid = controller.uid.clone();
        if let Err(error) = state.remove_finalizer(&job_uid, &pod).await {
            warn!(%error, "releasing a pod of a deleted job");
        }
        state.finalizers_removed.lock().remove(&job_uid);
    }
}

async fn reconcile(job: Arc<Job>, state: Arc<State>) -> Result<Action> {
    let metrics = state.ctx.metrics.clone();
    metrics.observe(NAME, sync(job, state)).await
}

fn error_policy(_job: Arc<Job>, error: &Error, _state: Arc<State>) -> Action {
    warn!(%error, "sync failed; retrying");
    let conflict =
        matches!(error, Error::Status { source: kube::Error::Api(s), .. } if s.is_conflict());
    // A conflict means the cache is behind our own write: its event comes soon.
    Action::requeue(Duration::from_secs(if conflict { 1 } else { 5 }))
}

fn has_tracking_finalizer(pod: &Pod) -> bool {
    pod.finalizers().iter().any(|f| f == TRACKING_FINALIZER)
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// Upstream's `onlyReplaceFailedPods`: podReplacementPolicy Failed (the default with a
/// podFailurePolicy) waits for a terminating pod to fail before replacing it.
fn only_replace_failed(spec: &JobSpec) -> bool {
    spec.pod_replacement_policy.as_deref() == Some("Failed") || spec.pod_failure_policy.is_some()
}

/// Upstream's `isPodFailed`: failed or, unless only failed pods are replaced, being
/// deleted before it succeeded (an orphan may never reach the Failed phase).
fn is_pod_failed(pod: &Pod, spec: &JobSpec) -> bool {
    phase(pod) == Some("Failed")
        || (!only_replace_failed(spec)
            && pod.metadata.deletion_timestamp.is_some()
            && phase(pod) != Some("Succeeded"))
}

/// When a finished pod's containers stopped (the latest), if the kubelet said.
fn finished_at(pod: &Pod) -> Option<Timestamp> {
    pod.status
        .as_ref()?
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max()
}

fn condition_true(status: &JobStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Whether the Job has finished (Complete or Failed).
pub fn is_finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .is_some_and(|s| condition_true(s, COMPLETE) || condition_true(s, FAILED))
}

/// Upstream's `ensureJobConditionStatus`: sets a condition, keeping its transition time
/// when the status does not change. Returns whether anything changed.
fn set_condition(
    status: &mut JobStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status == value && c.reason.as_deref() == Some(reason) {
            return false;
        }
        if c.status != value {
            c.last_transition_time = Some(Time(now));
        }
        c.status = value.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_probe_time = Some(Time(now));
        return true;
    }
    conditions.push(JobCondition {
        type_: type_.into(),
        status: value.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
    true
}

fn condition_of<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// A pod's completion index, if it has a valid one below `completions`.
fn pod_index(pod: &Pod, completions: i32) -> Option<i32> {
    let value = pod
        .annotations()
        .get(COMPLETION_INDEX)
        .or_else(|| pod.labels().get(COMPLETION_INDEX))?;
    value.parse().ok().filter(|i| (0..completions).contains(i))
}

/// Upstream's `parseIndexesFromString`: "1,3-5,7" → {1,3,4,5,7}, ignoring what is out of
/// `0..completions` or malformed.
pub fn parse_indexes(s: &str, completions: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<i32>(), b.parse::<i32>()),
            None => (part.parse::<i32>(), part.parse::<i32>()),
        };
        if let (Ok(first), Ok(last)) = (first, last) {
            out.extend((first.max(0)..=last.min(completions - 1)).filter(|i| *i >= 0));
        }
    }
    out
}

/// The compressed interval form of a set of indexes: {1,3,4,5,7} → "1,3-5,7".
pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut run: Option<(i32, i32)> = None;
    let flush = |parts: &mut Vec<String>, (a, b): (i32, i32)| {
        parts.push(if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        });
    };
    for &i in indexes {
        run = match run {
            Some((a, b)) if i == b + 1 => Some((a, i)),
            Some(r) => {
                flush(&mut parts, r);
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    if let Some(r) = run {
        flush(&mut parts, r);
    }
    parts.join(",")
}

/// How long new pods wait after `failures` failures since the last success (upstream's
/// `getRemainingTime`: 10s·2^(n-1), at most 6 minutes).
pub fn backoff_delay(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let exp = (failures - 1).min(16);
    POD_FAILURE_BACKOFF
        .saturating_mul(1 << exp)
        .min(MAX_POD_FAILURE_BACKOFF)
}

/// What a podFailurePolicy says about a failed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureAction {
    /// Fail the whole Job, with this message.
    FailJob(String),
    /// Do not count the failure.
    Ignore,
    /// Count it toward backoffLimit (also: no rule matched).
    Count,
}

/// Upstream's `matchPodFailurePolicy`: the first rule that matches a failed pod.
pub fn match_pod_failure_policy(policy: &PodFailurePolicy, pod: &Pod) -> FailureAction {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let status = pod.status.as_ref();
    for (index, rule) in policy.rules.iter().enumerate() {
        let mut matched: Option<String> = None;
        if let Some(req) = &rule.on_exit_codes {
            let statuses = status
                .into_iter()
                .flat_map(|s| {
                    s.init_container_statuses
                        .iter()
                        .flatten()
                        .chain(s.container_statuses.iter().flatten())
                })
                .filter(|c| req.container_name.as_ref().is_none_or(|n| *n == c.name));
            for c in statuses {
                let Some(t) = c.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
                    continue;
                };
                if t.exit_code == 0 {
                    continue;
                }
                let listed = req.values.contains(&t.exit_code);
                let hit = match req.operator.as_str() {
                    "In" => listed,
                    "NotIn" => !listed,
                    _ => false,
                };
                if hit {
                    matched = Some(format!(
                        "Container {} for pod {ns}/{name} failed with exit code {} matching {} rule at index {index}",
                        c.name, t.exit_code, rule.action
                    ));
                    break;
                }
            }
        }
        for pattern in rule.on_pod_conditions.iter().flatten() {
            if matched.is_some() {
                break;
            }
            let hit = status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == pattern.type_ && c.status == pattern.status);
            if hit {
                matched = Some(format!(
                    "Pod {ns}/{name} has condition {} matching {} rule at index {index}",
                    pattern.type_, rule.action
                ));
            }
        }
        if let Some(message) = matched {
            return match rule.action.as_str() {
                "FailJob" => FailureAction::FailJob(message),
                "Ignore" => FailureAction::Ignore,
                // Count, and FailIndex (without backoffLimitPerIndex it counts).
                _ => FailureAction::Count,
            };
        }
    }
    FailureAction::Count
}

/// Upstream's `pastBackoffLimitOnFailure`: with restartPolicy OnFailure, container
/// restarts of the active pods count toward backoffLimit.
fn past_backoff_limit_on_failure(spec: &JobSpec, active: &[Arc<Pod>]) -> bool {
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    if !on_failure {
        return false;
    }
    let restarts: i64 = active
        .iter()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .map(|c| i64::from(c.restart_count))
        .sum();
    let limit = i64::from(spec.backoff_limit.unwrap_or(6));
    if limit == 0 {
        restarts > 0
    } else {
        restarts >= limit
    }
}

/// Time left before `activeDeadlineSeconds` passes (zero: passed), if the Job has one.
fn deadline_left(spec: &JobSpec, status: &JobStatus, now: Timestamp) -> Option<Duration> {
    let ads = spec.active_deadline_seconds?;
    let start = status.start_time.as_ref()?.0;
    let elapsed = now.duration_since(start).as_secs();
    Some(Duration::from_secs(
        ads.saturating_sub(elapsed).max(0) as u64
    ))
}

/// The order excess pods are deleted in (upstream's `activePodsForRemoval`): unassigned,
/// then not running, then not ready, then newer first.
fn removal_order(a: &Arc<Pod>, b: &Arc<Pod>) -> std::cmp::Ordering {
    let rank = |p: &Pod| {
        let assigned = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
        let running = phase(p) == Some("Running");
        let ready = ready_since(p).is_some();
        (assigned, running, ready)
    };
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    rank(a)
        .cmp(&rank(b))
        .then_with(|| created(b).cmp(&created(a)))
}

/// What [`plan`] decides for a Job that is neither finishing nor suspended.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    /// One per pod to create: its completion index in Indexed mode.
    create: Vec<Option<i32>>,
    delete: Vec<Arc<Pod>>,
}

/// Upstream's `manageJob` decisions: how many pods to create (with which indexes) and
/// which active pods to delete. `terminating` pods (deleted, not finished) take a place
/// until they fail when only failed pods are replaced.
fn plan(
    spec: &JobSpec,
    active: &[Arc<Pod>],
    terminating: &[Arc<Pod>],
    succeeded: i32,
    completed: &BTreeSet<i32>,
) -> Plan {
    let parallelism = spec.parallelism.unwrap_or(1).max(0) as usize;
    let terminating: &[Arc<Pod>] = if only_replace_failed(spec) {
        terminating
    } else {
        &[]
    };
    let mut out = Plan::default();
    if spec.completion_mode.as_deref() == Some("Indexed") {
        let completions = spec.completions.unwrap_or(0);
        let mut by_index: HashMap<i32, Arc<Pod>> = HashMap::new();
        let mut sorted = active.to_vec();
        sorted.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        for p in sorted {
            match pod_index(&p, completions) {
                // Duplicates, invalid indexes and indexes already completed go.
                Some(i) if !completed.contains(&i) && !by_index.contains_key(&i) => {
                    by_index.insert(i, p);
                }
                _ => out.delete.push(p),
            }
        }
        let mut kept: Vec<i32> = by_index.keys().copied().collect();
        kept.sort_unstable();
        while kept.len() > parallelism {
            let i = kept.pop().expect("non-empty");
            out.delete.extend(by_index.remove(&i));
        }
        let held: HashSet<i32> = terminating
            .iter()
            .filter_map(|p| pod_index(p, completions))
            .collect();
        let room = parallelism.saturating_sub(kept.len() + terminating.len());
        out.create = (0..completions)
            .filter(|i| !completed.contains(i) && !by_index.contains_key(i) && !held.contains(i))
            .take(room)
            .map(Some)
            .collect();
    } else {
        let want = match spec.completions {
            // Work queue: once a pod succeeded, no new ones; the others finish.
            None if succeeded > 0 => active.len(),
            None => parallelism,
            Some(c) => ((c - succeeded).max(0) as usize).min(parallelism),
        };
        if active.len() > want {
            let mut sorted = active.to_vec();
            sorted.sort_by(removal_order);
            sorted.truncate(active.len() - want);
            out.delete = sorted;
        } else {
            out.create = vec![None; want.saturating_sub(active.len() + terminating.len())];
        }
    }
    out.create.truncate(MAX_POD_CREATE_DELETE_PER_SYNC);
    out.delete.truncate(MAX_POD_CREATE_DELETE_PER_SYNC);
    out
}

/// Whether the success criteria are met.
fn succeeded_enough(
    spec: &JobSpec,
    succeeded: i32,
    completed: &BTreeSet<i32>,
    active: usize,
) -> bool {
    match spec.completions {
        Some(c) if spec.completion_mode.as_deref() == Some("Indexed") => {
            completed.len() as i32 >= c
        }
        Some(c) => succeeded >= c,
        None => succeeded > 0 && active == 0,
    }
}

/// A pod for the Job, with the tracking finalizer, and its index when Indexed
/// (upstream's `addCompletionIndexEnvVariables` and friends).
fn new_pod(job: &Job, spec: &JobSpec, index: Option<i32>) -> k8s_openapi::api::core::v1::Pod {
    let mut pod = pod_from_template(job, &spec.template);
    pod.metadata
        .finalizers
        .get_or_insert_with(Vec::new)
        .push(TRACKING_FINALIZER.into());
    if let Some(i) = index {
        let name = job.name_any();
        pod.metadata.generate_name = Some(format!("{name}-{i}-"));
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(COMPLETION_INDEX.into(), i.to_string());
        pod.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(COMPLETION_INDEX.into(), i.to_string());
        if let Some(ps) = pod.spec.as_mut() {
            if ps.hostname.as_deref().unwrap_or("").is_empty() {
                ps.hostname = Some(format!("{name}-{i}"));
            }
            let env = EnvVar {
                name: COMPLETION_INDEX_ENV.into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: None,
                        field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                    }),
                    ..EnvVarSource::default()
                }),
            };
            let containers = ps
                .containers
                .iter_mut()
                .chain(ps.init_containers.iter_mut().flatten());
            for c in containers {
                let vars = c.env.get_or_insert_with(Vec::new);
                if !vars.iter().any(|v| v.name == COMPLETION_INDEX_ENV) {
                    vars.push(env.clone());
                }
            }
        }
    }
    pod
}

fn some_if_positive(n: usize) -> Option<i32> {
    (n > 0).then_some(n as i32)
}

/// Upstream's `syncJob`.
async fn sync(job: Arc<Job>, state: Arc<State>) -> Result<Action> {
    let Some(spec) = job.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    if spec.managed_by.as_deref().is_some_and(|m| m != MANAGED_BY) {
        // Another controller runs this Job.
        return Ok(Action::await_change());
    }
    let job_uid = job.uid().unwrap_or_default();
    let ns = job.namespace().unwrap_or_default();
    let pods: Vec<Arc<Pod>> = state
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|p| controller_of_kind::<Job, _>(p.as_ref()).is_some_and(|c| c.uid == job_uid))
        .collect();
    let removed = state.removed_finalizers(&job_uid, &pods);
    let tracked = |p: &Arc<Pod>| {
        has_tracking_finalizer(p) && !removed.contains(p.uid().unwrap_or_default().as_str())
    };
    if job.meta().deletion_timestamp.is_some() || is_finished(&job) {
        // A finished or deleted Job no longer tracks its pods.
        let leftover: Vec<Arc<Pod>> = pods.iter().filter(|p| tracked(p)).cloned().collect();
        let (_, err) = state.remove_finalizers(&job_uid, &leftover).await;
        return err.map_or(Ok(Action::await_change()), Err);
    }
    let needs_sync = state.expectations.satisfied(&job_uid, |name| {
        state.pods.get(&ObjectRef::new(name).within(&ns)).map(|p| {
            (
                p.uid().unwrap_or_default(),
                p.metadata.deletion_timestamp.is_some(),
            )
        })
    });
    let now = Timestamp::now();
    let old_status = job.status.clone().unwrap_or_default();
    let mut status = old_status.clone();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions.unwrap_or(0);
    let uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut uncounted_succeeded: BTreeSet<String> =
        uncounted.succeeded.into_iter().flatten().collect();
    let mut uncounted_failed: BTreeSet<String> = uncounted.failed.into_iter().flatten().collect();
    let mut completed = status
        .completed_indexes
        .as_deref()
        .map(|s| parse_indexes(s, completions))
        .unwrap_or_default();

    // 1. Newly finished pods: recorded as uncounted, or ignored by the failure policy.
    let mut ignored: Vec<Arc<Pod>> = Vec::new();
    let mut fail_job: Option<String> = None;
    let (mut new_failures, mut new_success) = (0u32, false);
    let mut last_failure: Option<Timestamp> = None;
    for p in pods.iter().filter(|p| tracked(p)) {
        let uid = p.uid().unwrap_or_default();
        if uncounted_succeeded.contains(&uid) || uncounted_failed.contains(&uid) {
            continue;
        }
        if phase(p) == Some("Succeeded") {
            if indexed {
                match pod_index(p, completions) {
                    Some(i) => {
                        completed.insert(i);
                    }
                    None => {
                        // Not a valid index: it counts for nothing.
                        ignored.push(p.clone());
                        continue;
                    }
                }
            }
            uncounted_succeeded.insert(uid);
            new_success = true;
        } else if is_pod_failed(p, spec) {
            let action = match &spec.pod_failure_policy {
                Some(policy) if phase(p) == Some("Failed") => match_pod_failure_policy(policy, p),
                _ => FailureAction::Count,
            };
            match action {
                FailureAction::Ignore => {
                    ignored.push(p.clone());
                    continue;
                }
                FailureAction::FailJob(message) => {
                    fail_job.get_or_insert(message);
                }
                FailureAction::Count => {}
            }
            uncounted_failed.insert(uid);
            new_failures += 1;
            let at = finished_at(p).unwrap_or(now).min(now);
            last_failure = Some(last_failure.map_or(at, |l| l.max(at)));
        }
    }
    let backoff = {
        let mut all = state.backoff.lock();
        if new_success {
            all.remove(&job_uid);
        }
        if new_failures > 0 {
            let at = last_failure.unwrap_or(now);
            let b = all.entry(job_uid.clone()).or_insert(Backoff {
                failures: 0,
                last: at,
            });
            b.failures += new_failures;
            b.last = b.last.max(at);
        }
        all.get(&job_uid).copied()
    };
    let succeeded = status.succeeded.unwrap_or(0) + uncounted_succeeded.len() as i32;
    let failed = status.failed.unwrap_or(0) + uncounted_failed.len() as i32;
    let active: Vec<Arc<Pod>> = pods
        .iter()
        .filter(|p| is_pod_active(p) && !removed.contains(p.uid().unwrap_or_default().as_str()))
        .cloned()
        .collect();
    let terminating_pods: Vec<Arc<Pod>> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some() && is_pod_active_phase(p))
        .cloned()
        .collect();
    let terminating = terminating_pods.len();

    // 2. Has the Job reached its end?
    let mut events: Vec<(EventType, &str, String)> = Vec::new();
    let suspended = spec.suspend == Some(true);
    if !condition_true(&status, FAILURE_TARGET) && !condition_true(&status, SUCCESS_CRITERIA_MET) {
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        let failure = if let Some(message) = fail_job {
            Some(("PodFailurePolicy", message))
        } else if failed > backoff_limit || past_backoff_limit_on_failure(spec, &active) {
            Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit".to_string(),
            ))
        } else if !suspended && deadline_left(spec, &status, now) == Some(Duration::ZERO) {
            Some((
                "DeadlineExceeded",
                "Job was active longer than specified deadline".to_string(),
            ))
        } else {
            None
        };
        if let Some((reason, message)) = failure {
            set_condition(&mut status, FAILURE_TARGET, "True", reason, &message, now);
        } else if succeeded_enough(spec, succeeded, &completed, active.len()) {
            set_condition(
                &mut status,
                SUCCESS_CRITERIA_MET,
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                now,
            );
        }
    }
    let finishing =
        condition_true(&status, FAILURE_TARGET) || condition_true(&status, SUCCESS_CRITERIA_MET);

    // 3. What to do with the pods.
    let mut plan = Plan::default();
    let mut requeue: Option<Duration> = None;
    if finishing {
        plan.delete = active.clone();
        if condition_true(&status, FAILURE_TARGET) {
            // A failed Job's unfinished pods count as failed (upstream's
            // trackJobStatusAndRemoveFinalizers).
            for p in active.iter().filter(|p| tracked(p)) {
                uncounted_failed.insert(p.uid().unwrap_or_default());
            }
        }
    } else if suspended {
        if needs_sync {
            plan.delete = active.clone();
        }
        if !condition_true(&status, SUSPENDED) {
            set_condition(
                &mut status,
                SUSPENDED,
                "True",
                "JobSuspended",
                "Job suspended",
                now,
            );
            events.push((EventType::Normal, "Suspended", "Job suspended".into()));
        }
    } else {
        if condition_true(&status, SUSPENDED) {
            set_condition(
                &mut status,
                SUSPENDED,
                "False",
                "JobResumed",
                "Job resumed",
                now,
            );
            // The activeDeadlineSeconds timer starts anew.
            status.start_time = Some(Time(now));
            events.push((EventType::Normal, "Resumed", "Job resumed".into()));
        }
        if status.start_time.is_none() {
            status.start_time = Some(Time(now));
        }
        requeue = deadline_left(spec, &status, now).map(|d| d.max(Duration::from_secs(1)));
        if needs_sync {
            plan = self::plan(spec, &active, &terminating_pods, succeeded, &completed);
            if !plan.create.is_empty() {
                if let Some(b) = backoff {
                    let ready_at = b.last.as_second() + backoff_delay(b.failures).as_secs() as i64;
                    let left = ready_at - now.as_second();
                    if left > 0 {
                        plan.create.clear();
                        let d = Duration::from_secs(left as u64);
                        requeue = Some(requeue.map_or(d, |r| r.min(d)));
                    }
                }
            }
        }
    }

    // 4. Record newly finished pods before their finalizers go.
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
        succeeded: (!uncounted_succeeded.is_empty())
            .then(|| uncounted_succeeded.iter().cloned().collect()),
        failed: (!uncounted_failed.is_empty()).then(|| uncounted_failed.iter().cloned().collect()),
    });
    if indexed {
        status.completed_indexes = Some(format_indexes(&completed));
    }
    status.ready = Some(active.iter().filter(|p| ready_since(p).is_some()).count() as i32);
    status.terminating = Some(terminating as i32);
    status.active = some_if_positive(active.len());
    let mut current = write_status(&state, job.as_ref().clone(), &old_status, &status).await?;

    // 5. Finalizers off the pods that were counted, ignored or are about to be deleted.
    let release: Vec<Arc<Pod>> = pods
        .iter()
        .filter(|p| tracked(p))
        .filter(|p| {
            let uid = p.uid().unwrap_or_default();
            uncounted_succeeded.contains(&uid) || uncounted_failed.contains(&uid)
        })
        .chain(ignored.iter())
        .chain(plan.delete.iter().filter(|p| tracked(p)))
        .filter({
            let mut seen = HashSet::new();
            move |p| seen.insert(p.uid().unwrap_or_default())
        })
        .cloned()
        .collect();
    let (released, mut first_error) = state.remove_finalizers(&job_uid, &release).await;

    // 6. Deletions and creations.
    let deletable: Vec<Arc<Pod>> = plan
        .delete
        .iter()
        .filter(|p| !tracked(p) || released.contains(&p.uid().unwrap_or_default()))
        .cloned()
        .collect();
    let deleted = delete_pods(&job, &deletable, &state).await;
    let (created, create_error) = create_pods(&job, spec, plan.create, &state).await;
    if let Err(e) = deleted.1 {
        first_error.get_or_insert(e);
    }
    if let Err(e) = create_error {
        first_error.get_or_insert(e);
    }
    let deleted = deleted.0;

    // 7. Move the uncounted pods whose finalizer is gone into the counters.
    let still_tracked: HashSet<String> = pods
        .iter()
        .filter(|p| tracked(p) && !released.contains(&p.uid().unwrap_or_default()))
        .filter_map(|p| p.uid())
        .collect();
    let mut status = current.status.clone().unwrap_or_default();
    let before = status.clone();
    let done_s: Vec<String> = uncounted_succeeded
        .iter()
        .filter(|u| !still_tracked.contains(*u))
        .cloned()
        .collect();
    let done_f: Vec<String> = uncounted_failed
        .iter()
        .filter(|u| !still_tracked.contains(*u))
        .cloned()
        .collect();
    for u in &done_s {
        uncounted_succeeded.remove(u);
    }
    for u in &done_f {
        uncounted_failed.remove(u);
    }
    let counted_succeeded = if indexed {
        completed.len() as i32
    } else {
        status.succeeded.unwrap_or(0) + done_s.len() as i32
    };
    status.succeeded = (counted_succeeded > 0).then_some(counted_succeeded);
    let counted_failed = status.failed.unwrap_or(0) + done_f.len() as i32;
    status.failed = (counted_failed > 0).then_some(counted_failed);
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
        succeeded: (!uncounted_succeeded.is_empty())
            .then(|| uncounted_succeeded.iter().cloned().collect()),
        failed: (!uncounted_failed.is_empty()).then(|| uncounted_failed.iter().cloned().collect()),
    });
    let active_now = active.len() + created - deleted.len();
    status.active = some_if_positive(active_now);
    // Pods deleted on a node terminate there before the Job may finish.
    let still_terminating = terminating
        + deleted
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count();
    status.terminating = Some(still_terminating as i32);
    let mut finished_event = None;
    if finishing
        && uncounted_succeeded.is_empty()
        && uncounted_failed.is_empty()
        && active_now == 0
        && still_terminating == 0
        && needs_sync
        && first_error.is_none()
    {
        if let Some(target) = condition_of(&status, FAILURE_TARGET).cloned() {
            let reason = target.reason.clone().unwrap_or_default();
            let message = target.message.clone().unwrap_or_default();
            set_condition(&mut status, FAILED, "True", &reason, &message, now);
            finished_event = Some((EventType::Warning, reason, message));
        } else {
            let message = "Reached expected number of succeeded pods";
            set_condition(
                &mut status,
                COMPLETE,
                "True",
                "CompletionsReached",
                message,
                now,
            );
            status.completion_time = Some(Time(now));
            finished_event = Some((
                EventType::Normal,
                "Completed".into(),
                "Job completed".into(),
            ));
        }
    }
    current = write_status(&state, current, &before, &status).await?;
    for (type_, reason, note) in events {
        state.event(&current, None, type_, reason, note);
    }
    if let Some((type_, reason, note)) = finished_event {
        state.event(&current, None, type_, &reason, note);
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    if is_finished(&current) {
        return Ok(Action::await_change());
    }
    if !needs_sync {
        // The informer's events wake us; the timeout is the backstop.
        requeue = Some(requeue.map_or(EXPECTATIONS_TIMEOUT, |r| r.min(EXPECTATIONS_TIMEOUT)));
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Not finished, whatever its deletion state.
fn is_pod_active_phase(pod: &Pod) -> bool {
    !matches!(phase(pod), Some("Succeeded" | "Failed"))
}

/// Writes `status` through the status subresource when it differs from `old`; the Job
/// as written.
async fn write_status(
    state: &State,
    mut job: Job,
    old: &JobStatus,
    status: &JobStatus,
) -> Result<Job> {
    if old == status {
        return Ok(job);
    }
    let api: Api<Job> = Api::namespaced(
        state.ctx.client.clone(),
        &job.namespace().unwrap_or_default(),
    );
    job.status = Some(status.clone());
    match api
        .replace_status(&job.name_any(), &PostParams::default(), &job)
        .await
    {
        Ok(written) => Ok(written),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(job),
        Err(source) => Err(Error::Status {
            job: key(&job),
            source,
        }),
    }
}

/// Deletes pods (their finalizer already removed); the pods deleted and the first error.
async fn delete_pods(
    job: &Arc<Job>,
    pods: &[Arc<Pod>],
    state: &Arc<State>,
) -> (Vec<Arc<Pod>>, Result<()>) {
    if pods.is_empty() {
        return (Vec::new(), Ok(()));
    }
    let job_uid = job.uid().unwrap_or_default();
    state.expectations.expect_deletions(
        &job_uid,
        pods.iter()
            .map(|p| (p.uid().unwrap_or_default(), p.name_any())),
    );
    let api: Api<Pod> = Api::namespaced(
        state.ctx.client.clone(),
        &job.namespace().unwrap_or_default(),
    );
    let results = future::join_all(pods.iter().map(|pod| {
        let api = api.clone();
        async move {
            let params = only_uid(pod.uid());
            (pod, api.delete(&pod.name_any(), &params).await)
        }
    }))
    .await;
    let mut deleted = Vec::new();
    let mut first = Ok(());
    for (pod, r) in results {
        match r {
            Ok(_) => {
                state.event(
                    job,
                    Some(pod),
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", pod.name_any()),
                );
                deleted.push(pod.clone());
            }
            Err(e) => {
                state
                    .expectations
                    .deletion_failed(&job_uid, &pod.uid().unwrap_or_default());
                match e {
                    kube::Error::Api(s) if s.is_not_found() || s.is_conflict() => {
                        deleted.push(pod.clone())
                    }
                    source => {
                        state.event(
                            job,
                            None,
                            EventType::Warning,
                            "FailedDelete",
                            format!("Error deleting: {source}"),
                        );
                        if first.is_ok() {
                            first = Err(Error::DeletePod {
                                pod: key(pod.as_ref()),
                                source,
                            });
                        }
                    }
                }
            }
        }
    }
    (deleted, first)
}

/// Creates pods in slow-start batches; how many were created and the first error.
async fn create_pods(
    job: &Arc<Job>,
    spec: &JobSpec,
    indexes: Vec<Option<i32>>,
    state: &Arc<State>,
) -> (usize, Result<()>) {
    if indexes.is_empty() {
        return (0, Ok(()));
    }
    let job_uid = job.uid().unwrap_or_default();
    let count = indexes.len();
    state.expectations.expect_creations(&job_uid, count);
    let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(
        state.ctx.client.clone(),
        &job.namespace().unwrap_or_default(),
    );
    let queue = Mutex::new(indexes.into_iter());
    let created = std::sync::atomic::AtomicUsize::new(0);
    let (attempted, result) = slow_start_batch(count, 1, || {
        let index = queue.lock().next().flatten();
        let pod = new_pod(job, spec, index);
        let api = api.clone();
        let job_uid = job_uid.clone();
        let created = &created;
        async move {
            match api.create(&PostParams::default(), &pod).await {
                Ok(p) => {
                    let uid = p.uid().unwrap_or_default();
                    state
                        .expectations
                        .creation_done(&job_uid, uid, p.name_any());
                    created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let cached: Option<Pod> = serde_json::to_value(&p)
                        .ok()
                        .and_then(|v| serde_json::from_value(v).ok());
                    state.event(
                        job,
                        cached.as_ref(),
                        EventType::Normal,
                        "SuccessfulCreate",
                        format!("Created pod: {}", p.name_any()),
                    );
                    Ok(())
                }
                Err(kube::Error::Api(s)) if namespace_terminating(&s) => {
                    // The namespace is going away: nothing to create, nothing to report.
                    state.expectations.creation_failed(&job_uid);
                    Ok(())
                }
                Err(source) => {
                    state.expectations.creation_failed(&job_uid);
                    state.event(
                        job,
                        None,
                        EventType::Warning,
                        "FailedCreate",
                        format!("Error creating: {source}"),
                    );
                    Err(Error::CreatePod {
                        job: key(job.as_ref()),
                        source,
                    })
                }
            }
        }
    })
    .await;
    // Creations never attempted are not expected any more.
    for _ in attempted..count {
        state.expectations.creation_failed(&job_uid);
    }
    (created.into_inner(), result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Arc<Pod> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn spec(v: serde_json::Value) -> JobSpec {
        let mut v = v;
        v["template"] = json!({"spec": {"containers": [{"name": "c", "image": "i"}],
            "restartPolicy": "Never"}});
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn completed_indexes_compress_to_intervals_and_back() {
        let set: BTreeSet<i32> = [1, 3, 4, 5, 7].into();
        assert_eq!(format_indexes(&set), "1,3-5,7");
        assert_eq!(parse_indexes("1,3-5,7", 10), set);
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert_eq!(format_indexes(&[0].into()), "0");
        // Out of range and malformed parts are dropped.
        assert_eq!(parse_indexes("0-2,9,x,4-", 3), [0, 1, 2].into());
    }

    #[test]
    fn pod_failure_backoff_doubles_up_to_six_minutes() {
        assert_eq!(backoff_delay(0), Duration::ZERO);
        assert_eq!(backoff_delay(1), Duration::from_secs(10));
        assert_eq!(backoff_delay(2), Duration::from_secs(20));
        assert_eq!(backoff_delay(4), Duration::from_secs(80));
        assert_eq!(backoff_delay(6), Duration::from_secs(320));
        assert_eq!(backoff_delay(7), Duration::from_secs(360));
        assert_eq!(backoff_delay(1000), Duration::from_secs(360));
    }

    fn failed_pod(exit_code: i32, container: &str, conditions: serde_json::Value) -> Arc<Pod> {
        pod(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "status": {"phase": "Failed", "conditions": conditions,
                "containerStatuses": [
                    {"name": "ok", "ready": false, "restartCount": 0,
                     "state": {"terminated": {"exitCode": 0}}},
                    {"name": container, "ready": false, "restartCount": 0,
                     "state": {"terminated": {"exitCode": exit_code}}}]},
        }))
    }

    #[test]
    fn pod_failure_policy_takes_the_first_matching_rule() {
        let policy: PodFailurePolicy = serde_json::from_value(json!({"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1, 2]}},
            {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [1]}},
        ]}))
        .unwrap();
        assert_eq!(
            match_pod_failure_policy(&policy, &failed_pod(42, "main", json!([]))),
            FailureAction::FailJob(
                "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1"
                    .into()
            )
        );
        // Another container's 42 is not the rule's.
        assert_eq!(
            match_pod_failure_policy(&policy, &failed_pod(42, "side", json!([]))),
            FailureAction::Count
        );
        assert_eq!(
            match_pod_failure_policy(&policy, &failed_pod(1, "main", json!([]))),
            FailureAction::Ignore
        );
        let disrupted = json!([{"type": "DisruptionTarget", "status": "True"}]);
        assert_eq!(
            match_pod_failure_policy(&policy, &failed_pod(42, "main", disrupted)),
            FailureAction::Ignore
        );
    }

    fn active_pod(name: &str, index: Option<i32>, created: i64) -> Arc<Pod> {
        let mut v = json!({"metadata": {"name": name, "uid": name,
            "creationTimestamp": Timestamp::from_second(created).unwrap().to_string()},
            "status": {"phase": "Pending"}});
        if let Some(i) = index {
            v["metadata"]["annotations"] = json!({COMPLETION_INDEX: i.to_string()});
        }
        pod(v)
    }

    #[test]
    fn non_indexed_jobs_keep_at_most_parallelism_and_no_more_than_remaining() {
        let s = spec(json!({"completions": 5, "parallelism": 2}));
        let none = BTreeSet::new();
        assert_eq!(plan(&s, &[], &[], 0, &none).create.len(), 2);
        // 4 succeeded: one to go.
        let one = [active_pod("a", None, 1)];
        assert_eq!(plan(&s, &one, &[], 4, &none), Plan::default());
        let two = [active_pod("a", None, 1), active_pod("b", None, 2)];
        let p = plan(&s, &two, &[], 4, &none);
        assert_eq!(p.delete.len(), 1);
        assert_eq!(p.delete[0].name_any(), "b", "the newer goes");
        // Work queue: after a success no new pods.
        let s = spec(json!({"parallelism": 3}));
        assert_eq!(plan(&s, &[], &[], 0, &none).create.len(), 3);
        assert_eq!(plan(&s, &one, &[], 1, &none), Plan::default());
        assert!(succeeded_enough(&s, 1, &none, 0));
        assert!(!succeeded_enough(&s, 1, &none, 1));
    }

    #[test]
    fn with_replacement_policy_failed_terminating_pods_hold_their_place() {
        let terminating = [pod(json!({"metadata": {"name": "t", "uid": "t",
            "deletionTimestamp": "2026-01-01T00:00:00Z",
            "annotations": {COMPLETION_INDEX: "0"}},
            "status": {"phase": "Running"}}))];
        let none = BTreeSet::new();
        let s = spec(json!({"completions": 3, "parallelism": 2}));
        assert_eq!(plan(&s, &[], &terminating, 0, &none).create.len(), 2);
        let s = spec(json!({"completions": 3, "parallelism": 2,
            "podReplacementPolicy": "Failed"}));
        assert_eq!(plan(&s, &[], &terminating, 0, &none).create.len(), 1);
        let s = spec(json!({"completions": 3, "parallelism": 3,
            "completionMode": "Indexed", "podReplacementPolicy": "Failed"}));
        assert_eq!(
            plan(&s, &[], &terminating, 0, &none).create,
            [Some(1), Some(2)]
        );
        // Only a Failed phase makes it a failure then.
        assert!(!is_pod_failed(&terminating[0], &s));
        assert!(is_pod_failed(
            &terminating[0],
            &spec(json!({"completions": 1}))
        ));
    }

    #[test]
    fn indexed_jobs_run_each_pending_index_once() {
        let s = spec(json!({"completions": 5, "parallelism": 3, "completionMode": "Indexed"}));
        let completed: BTreeSet<i32> = [0].into();
        let active = [
            active_pod("one", Some(1), 1),
            active_pod("dup", Some(1), 2),
            active_pod("done", Some(0), 1),
            active_pod("bad", Some(9), 1),
        ];
        let p = plan(&s, &active, &[], 1, &completed);
        let mut deleted: Vec<String> = p.delete.iter().map(|p| p.name_any()).collect();
        deleted.sort();
        assert_eq!(deleted, ["bad", "done", "dup"]);
        assert_eq!(p.create, [Some(2), Some(3)]);
        assert!(succeeded_enough(&s, 5, &[0, 1, 2, 3, 4].into(), 0));
        assert!(!succeeded_enough(&s, 5, &[0, 1, 2, 3].into(), 0));
    }

    #[test]
    fn indexed_pods_carry_their_index() {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "idx", "namespace": "ns", "uid": "u"},
            "spec": {"completions": 3, "completionMode": "Indexed",
                "template": {"spec": {"containers": [{"name": "c", "image": "i"}],
                    "restartPolicy": "Never"}}},
        }))
        .unwrap();
        let pod = new_pod(&job, job.spec.as_ref().unwrap(), Some(2));
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("idx-2-"));
        assert_eq!(pod.annotations()[COMPLETION_INDEX], "2");
        assert_eq!(pod.labels()[COMPLETION_INDEX], "2");
        assert_eq!(pod.finalizers(), [TRACKING_FINALIZER]);
        let ps = pod.spec.unwrap();
        assert_eq!(ps.hostname.as_deref(), Some("idx-2"));
        let env = &ps.containers[0].env.as_ref().unwrap()[0];
        assert_eq!(env.name, "JOB_COMPLETION_INDEX");
    }

    #[test]
    fn on_failure_restarts_count_toward_the_backoff_limit() {
        let mut s = spec(json!({"backoffLimit": 2}));
        s.template.spec.as_mut().unwrap().restart_policy = Some("OnFailure".into());
        let restarted = |n: i32| {
            pod(
                json!({"metadata": {"name": "p"}, "status": {"phase": "Running",
                "containerStatuses": [{"name": "c", "ready": false, "restartCount": n}]}}),
            )
        };
        assert!(!past_backoff_limit_on_failure(&s, &[restarted(1)]));
        assert!(past_backoff_limit_on_failure(
            &s,
            &[restarted(1), restarted(1)]
        ));
        s.backoff_limit = Some(0);
        assert!(past_backoff_limit_on_failure(&s, &[restarted(1)]));
        s.template.spec.as_mut().unwrap().restart_policy = Some("Never".into());
        assert!(!past_backoff_limit_on_failure(&s, &[restarted(5)]));
    }
}
