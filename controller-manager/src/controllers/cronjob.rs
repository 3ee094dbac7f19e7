//! cronjob: creates a batch/v1 CronJob's Jobs on its schedule (upstream's
//! pkg/controller/cronjob, the v2 controller).
//!
//! - The schedule is the standard five-field cron grammar or an `@` descriptor
//!   (api-types' robfig/cron-compatible parser), in `spec.timeZone`, a `TZ=`/`CRON_TZ=`
//!   prefix's zone, or else the controller-manager's local zone (as upstream). Zones come
//!   from the system tz database through jiff; an unknown zone or a bad schedule is a
//!   warning event and nothing is run until the spec changes.
//! - Each scheduled time gets one Job, named `<cronjob>-<scheduled time in unix
//!   minutes>` (the name is the lock against running a time twice), controlled by the
//!   CronJob, annotated `batch.kubernetes.io/cronjob-scheduled-timestamp`.
//! - Missed times: only the most recent one runs, and only within
//!   `startingDeadlineSeconds`; more than 100 missed is a `TooManyMissedTimes` warning.
//! - concurrencyPolicy Allow / Forbid (skip while a Job runs) / Replace (delete the running
//!   ones first); `suspend` stops new runs.
//! - status.active (Job references), lastScheduleTime, lastSuccessfulTime; finished Jobs
//!   beyond successfulJobsHistoryLimit / failedJobsHistoryLimit are deleted, oldest first.
//! - The CronJob is requeued at its next scheduled time, not polled.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use api_types::validation::cron::{parse_schedule, CronSchedule};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use jiff::civil::Time as CivilTime;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tracing::warn;

use super::controller_utils::{
    controller_of_kind, controller_ref, namespace_terminating, only_uid, publish_event,
};
use super::job::is_finished;
use super::Context;
use crate::informers::key;

pub const NAME: &str = "cronjob";
const COMPONENT: &str = "cronjob-controller";
/// The annotation with the scheduled time a Job was created for (RFC 3339).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Upstream's `nextScheduleDelta`: wake up a little after the scheduled time.
const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);
/// More missed times than this is reported (upstream's arbitrary 100).
const TOO_MANY_MISSED: u64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating job for cronjob {cronjob}: {source}")]
    CreateJob {
        cronjob: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading job {job}: {source}")]
    GetJob {
        job: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting job {job}: {source}")]
    DeleteJob {
        job: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading cronjob {cronjob}: {source}")]
    GetCronJob {
        cronjob: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating the status of cronjob {cronjob}: {source}")]
    Status {
        cronjob: String,
        #[source]
        source: kube::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub fn start(ctx: &Context) -> BoxFuture<'static, ()> {
    let cronjobs = ctx.informers.store::<CronJob>();
    let jobs = ctx.informers.store::<Job>();
    let state = Arc::new(State {
        ctx: ctx.clone(),
        recorder: ctx.recorder(COMPONENT),
        jobs,
    });
    let job_events = ctx.informers.subscribe::<Job>();
    Controller::for_shared_stream(ctx.informers.subscribe::<CronJob>(), cronjobs)
        .with_config(
            controller::Config::default().concurrency(ctx.options.concurrent_cron_job_syncs),
        )
        .watches_shared_stream(job_events, |job: Arc<Job>| {
            controller_of_kind::<CronJob, _>(job.as_ref())
                .map(|c| ObjectRef::new(&c.name).within(&job.namespace().unwrap_or_default()))
        })
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .boxed()
}

struct State {
    ctx: Context,
    recorder: Recorder,
    jobs: Store<Job>,
}

impl State {
    /// Publishes an event about the CronJob in the background.
    fn event(&self, cj: &CronJob, type_: EventType, reason: &str, note: String) {
        let recorder = self.recorder.clone();
        let reference = cj.object_ref(&());
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        publish_event(recorder, reference, event);
    }

    /// An event naming one Job: its own Event object (kube's recorder would otherwise
    /// fold every "Created job x" of the CronJob into one series).
    fn job_event(&self, cj: &CronJob, job: &Job, type_: EventType, reason: &str, note: String) {
        let recorder = self.ctx.recorder(COMPONENT);
        let reference = cj.object_ref(&());
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: Some(job.object_ref(&())),
        };
        publish_event(recorder, reference, event);
    }
}

async fn reconcile(cj: Arc<CronJob>, state: Arc<State>) -> Result<Action> {
    let metrics = state.ctx.metrics.clone();
    metrics.observe(NAME, sync(cj, state)).await
}

fn error_policy(_cj: Arc<CronJob>, error: &Error, _state: Arc<State>) -> Action {
    warn!(%error, "sync failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// The schedule's zone: `spec.timeZone`, else a `TZ=`/`CRON_TZ=` prefix, else local.
fn time_zone(schedule: &str, spec_zone: Option<&str>) -> Result<TimeZone, String> {
    let prefixed = schedule
        .strip_prefix("CRON_TZ=")
        .or_else(|| schedule.strip_prefix("TZ="))
        .map(|rest| rest.split_whitespace().next().unwrap_or(""));
    match spec_zone.or(prefixed) {
        Some(name) => TimeZone::get(name).map_err(|e| e.to_string()),
        None => Ok(TimeZone::system()),
    }
}

/// The first time after `t` the schedule fires (robfig/cron's `Schedule.Next`); None if
/// it never does within five years.
pub fn next_after(schedule: &CronSchedule, tz: &TimeZone, t: Timestamp) -> Option<Timestamp> {
    match schedule {
        CronSchedule::Every { millis } => {
            let base = Timestamp::from_second(t.as_second()).ok()?;
            base.checked_add(jiff::SignedDuration::from_millis(*millis as i64))
                .ok()
        }
        CronSchedule::Fields { .. } => next_fields(schedule, tz, t),
    }
}

fn next_fields(schedule: &CronSchedule, tz: &TimeZone, t: Timestamp) -> Option<Timestamp> {
    let local = t.to_zoned(tz.clone()).datetime();
    let mut dt = local
        .with()
        .second(0)
        .subsec_nanosecond(0)
        .build()
        .ok()?
        .checked_add(1.minute())
        .ok()?;
    let limit = dt.year() + 5;
    let midnight = |d: jiff::civil::Date| d.to_datetime(CivilTime::midnight());
    loop {
        if dt.year() > limit {
            return None;
        }
        let (minute, hour, dom, month, dow) = (
            dt.minute() as u32,
            dt.hour() as u32,
            dt.day() as u32,
            dt.month() as u32,
            dt.weekday().to_sunday_zero_offset() as u32,
        );
        if !field_allows(schedule, Field::Month, month) {
            dt = midnight(dt.date().first_of_month().checked_add(1.month()).ok()?);
            continue;
        }
        if !day_allows(schedule, dom, dow) {
            dt = midnight(dt.date().tomorrow().ok()?);
            continue;
        }
        if !field_allows(schedule, Field::Hour, hour) {
            dt = dt
                .with()
                .minute(0)
                .build()
                .ok()?
                .checked_add(1.hour())
                .ok()?;
            continue;
        }
        if !field_allows(schedule, Field::Minute, minute) {
            dt = dt.checked_add(1.minute()).ok()?;
            continue;
        }
        // A wall time skipped by a DST change resolves forward; one repeated runs once.
        let at = tz.to_ambiguous_zoned(dt).compatible().ok()?.timestamp();
        if at > t {
            return Some(at);
        }
        dt = dt.checked_add(1.minute()).ok()?;
    }
}

#[derive(Clone, Copy)]
enum Field {
    Minute,
    Hour,
    Month,
}

fn field_allows(schedule: &CronSchedule, field: Field, v: u32) -> bool {
    let CronSchedule::Fields {
        minute,
        hour,
        month,
        ..
    } = schedule
    else {
        return false;
    };
    let set = match field {
        Field::Minute => minute,
        Field::Hour => hour,
        Field::Month => month,
    };
    v < 64 && set & (1 << v) != 0
}

/// cron's day rule: both day fields must match when either is `*`, else either may.
fn day_allows(schedule: &CronSchedule, dom: u32, dow: u32) -> bool {
    let CronSchedule::Fields {
        day_of_month,
        day_of_week,
        day_of_month_star,
        day_of_week_star,
        ..
    } = schedule
    else {
        return false;
    };
    let bit = |set: u64, v: u32| v < 64 && set & (1 << v) != 0;
    let (a, b) = (bit(*day_of_month, dom), bit(*day_of_week, dow));
    if *day_of_month_star || *day_of_week_star {
        a && b
    } else {
        a || b
    }
}

/// Upstream's `mostRecentScheduleTime`: the latest scheduled time in `(earliest, now]`
/// and how many there were (counted exactly up to a little past 100).
pub fn most_recent(
    schedule: &CronSchedule,
    tz: &TimeZone,
    earliest: Timestamp,
    now: Timestamp,
) -> (Option<Timestamp>, u64) {
    let Some(first) = next_after(schedule, tz, earliest).filter(|t| *t <= now) else {
        return (None, 0);
    };
    let mut latest = first;
    let mut missed = 1u64;
    while missed <= TOO_MANY_MISSED {
        match next_after(schedule, tz, latest) {
            Some(t) if t <= now => {
                latest = t;
                missed += 1;
            }
            _ => return (Some(latest), missed),
        }
    }
    // Far behind: estimate the count from the interval between two times, then find
    // the most recent time from a little before the estimate.
    let Some(second) = next_after(schedule, tz, first) else {
        return (Some(latest), missed);
    };
    let interval = second.as_second() - first.as_second();
    if interval < 1 {
        return (Some(latest), missed);
    }
    let estimated = ((now.as_second() - first.as_second()) / interval + 1) as u64;
    let back = estimated.saturating_sub(2) as i64 * interval;
    let mut t = Timestamp::from_second(first.as_second() + back).unwrap_or(latest);
    if t < latest {
        t = latest;
    }
    while let Some(n) = next_after(schedule, tz, t).filter(|n| *n <= now) {
        t = n;
    }
    (Some(t), estimated.max(missed))
}

/// The Job name for a scheduled time: `<cronjob>-<unix minutes>`.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// What concurrencyPolicy allows when a scheduled time comes.
#[derive(Debug, PartialEq, Eq)]
pub enum Concurrency {
    /// Create the Job.
    Run,
    /// Forbid with a Job running: skip this time.
    Skip,
    /// Replace: delete the running Jobs, then create.
    ReplaceRunning,
}

pub fn concurrency(policy: Option<&str>, active: usize) -> Concurrency {
    match policy {
        Some("Forbid") if active > 0 => Concurrency::Skip,
        Some("Replace") if active > 0 => Concurrency::ReplaceRunning,
        _ => Concurrency::Run,
    }
}

/// The finished Jobs beyond `limit`, oldest first (upstream's `removeOldestJobs`: by
/// status.startTime, Jobs without one last, then by name).
pub fn over_limit(mut jobs: Vec<Arc<Job>>, limit: i32) -> Vec<Arc<Job>> {
    let limit = limit.max(0) as usize;
    if jobs.len() <= limit {
        return Vec::new();
    }
    jobs.sort_by(|a, b| {
        let start = |j: &Job| {
            j.status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0)
        };
        match (start(a), start(b)) {
            (Some(x), Some(y)) if x != y => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            _ => a.name_any().cmp(&b.name_any()),
        }
    });
    let n = jobs.len() - limit;
    jobs.truncate(n);
    jobs
}

fn finished_condition(job: &Job) -> Option<&str> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

fn job_reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

/// Upstream's `getJobFromTemplate2`: the Job for one scheduled time.
fn job_for(cj: &CronJob, scheduled: Timestamp, tz: &TimeZone) -> Job {
    let spec = cj.spec.as_ref().expect("checked by the caller");
    let template = &spec.job_template;
    let meta = template.metadata.clone().unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP.into(),
        scheduled
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
            .replace("+00:00", "Z"),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&cj.name_any(), scheduled)),
            namespace: cj.namespace(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cj)]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Upstream's `syncCronJob` (and `cleanupFinishedJobs`).
async fn sync(cj: Arc<CronJob>, state: Arc<State>) -> Result<Action> {
    let Some(spec) = cj.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let uid = cj.uid().unwrap_or_default();
    let ns = cj.namespace().unwrap_or_default();
    let name = cj.name_any();
    let jobs: Vec<Arc<Job>> = state
        .jobs
        .state()
        .into_iter()
        .filter(|j| j.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|j| controller_of_kind::<CronJob, _>(j.as_ref()).is_some_and(|c| c.uid == uid))
        .collect();
    let old_status = cj.status.clone().unwrap_or_default();
    let mut status = old_status.clone();
    let cj_now: CronJob = cj.as_ref().clone();

    // 1. The active list against the Jobs that exist.
    let in_active = |s: &CronJobStatus, uid: &str| {
        s.active
            .iter()
            .flatten()
            .any(|r| r.uid.as_deref() == Some(uid))
    };
    let mut children = HashSet::new();
    for j in &jobs {
        let juid = j.uid().unwrap_or_default();
        children.insert(juid.clone());
        let finished = is_finished(j);
        let found = in_active(&status, &juid);
        if !found && !finished {
            // Perhaps our cache is behind our own status write: look again.
            let fresh = Api::<CronJob>::namespaced(state.ctx.client.clone(), &ns)
                .get_opt(&name)
                .await
                .map_err(|source| Error::GetCronJob {
                    cronjob: key(cj.as_ref()),
                    source,
                })?;
            let Some(fresh) = fresh.filter(|f| f.uid().as_deref() == Some(uid.as_str())) else {
                return Ok(Action::await_change());
            };
            let fresh_status = fresh.status.clone().unwrap_or_default();
            if in_active(&fresh_status, &juid) {
                // Start over from the fresh copy (our edits so far are redone).
                return Box::pin(sync(Arc::new(fresh), state)).await;
            }
            state.event(
                &cj_now,
                EventType::Warning,
                "UnexpectedJob",
                format!(
                    "Saw a job that the controller did not create or forgot: {}",
                    j.name_any()
                ),
            );
        } else if found && finished {
            status
                .active
                .get_or_insert_with(Vec::new)
                .retain(|r| r.uid.as_deref() != Some(juid.as_str()));
            state.event(
                &cj_now,
                EventType::Normal,
                "SawCompletedJob",
                format!(
                    "Saw completed job: {}, condition: {}",
                    j.name_any(),
                    finished_condition(j).unwrap_or("")
                ),
            );
        }
        if finished_condition(j) == Some("Complete") {
            if let Some(done) = j.status.as_ref().and_then(|s| s.completion_time.clone()) {
                if status
                    .last_successful_time
                    .as_ref()
                    .is_none_or(|t| t.0 < done.0)
                {
                    status.last_successful_time = Some(done);
                }
            }
        }
    }
    // Active Jobs that are gone.
    let missing: Vec<ObjectReference> = status
        .active
        .iter()
        .flatten()
        .filter(|r| !r.uid.as_ref().is_some_and(|u| children.contains(u)))
        .cloned()
        .collect();
    for r in missing {
        let jname = r.name.clone().unwrap_or_default();
        let api: Api<Job> = Api::namespaced(state.ctx.client.clone(), &ns);
        let gone = match api.get_opt(&jname).await {
            Ok(None) => true,
            Ok(Some(j)) => j.uid() != r.uid,
            Err(source) => {
                return Err(Error::GetJob {
                    job: format!("{ns}/{jname}"),
                    source,
                })
            }
        };
        if gone {
            state.event(
                &cj_now,
                EventType::Normal,
                "MissingJob",
                format!("Active job went missing: {jname}"),
            );
            status
                .active
                .get_or_insert_with(Vec::new)
                .retain(|a| a.uid != r.uid);
        }
    }
    if cj.meta().deletion_timestamp.is_some() {
        write_status(&state, &cj_now, &old_status, &status).await?;
        return Ok(Action::await_change());
    }

    // 2. The schedule.
    let tz = match time_zone(&spec.schedule, spec.time_zone.as_deref()) {
        Ok(tz) => tz,
        Err(e) => {
            let zone = spec.time_zone.clone().unwrap_or_default();
            state.event(
                &cj_now,
                EventType::Warning,
                "UnknownTimeZone",
                format!("invalid timeZone: {zone:?}: {e}"),
            );
            write_status(&state, &cj_now, &old_status, &status).await?;
            return Ok(Action::await_change());
        }
    };
    let schedule = match parse_schedule(&spec.schedule) {
        Ok(s) => s,
        Err(e) => {
            state.event(
                &cj_now,
                EventType::Warning,
                "UnparseableSchedule",
                format!("unparseable schedule: {:?} : {e}", spec.schedule),
            );
            write_status(&state, &cj_now, &old_status, &status).await?;
            return Ok(Action::await_change());
        }
    };
    let now = Timestamp::now();
    let finished: Vec<Arc<Job>> = jobs.iter().filter(|j| is_finished(j)).cloned().collect();
    let outcome = schedule_run(&cj_now, &schedule, &tz, now, &mut status, &state).await;
    // Whatever happened, the status so far is written.
    let written = write_status(&state, &cj_now, &old_status, &status).await;
    let requeue = outcome?;
    let cj_now = written?;

    // 3. History limits (upstream's cleanupFinishedJobs).
    let (succeeded, failed): (Vec<Arc<Job>>, Vec<Arc<Job>>) = finished
        .into_iter()
        .partition(|j| finished_condition(j) == Some("Complete"));
    let mut doomed = Vec::new();
    if let Some(limit) = spec.successful_jobs_history_limit {
        doomed.extend(over_limit(succeeded, limit));
    }
    if let Some(limit) = spec.failed_jobs_history_limit {
        doomed.extend(over_limit(failed, limit));
    }
    for j in doomed {
        delete_job(&state, &cj_now, &j).await?;
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// The run part of `syncCronJob`: creates the Job for the most recent scheduled time if
/// it is due, updating `status`; when to look again.
async fn schedule_run(
    cj: &CronJob,
    schedule: &CronSchedule,
    tz: &TimeZone,
    now: Timestamp,
    status: &mut CronJobStatus,
    state: &State,
) -> Result<Option<Duration>> {
    let spec = cj.spec.as_ref().expect("checked by the caller");
    let next_wake = |from: Timestamp| {
        next_after(schedule, tz, from).map(|t| {
            let d = t.as_millisecond() - now.as_millisecond();
            Duration::from_millis(d.max(0) as u64) + NEXT_SCHEDULE_DELTA
        })
    };
    if spec.suspend == Some(true) {
        return Ok(None);
    }
    let created = cj.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let mut earliest = status.last_schedule_time.as_ref().map_or(created, |t| t.0);
    if let Some(sds) = spec.starting_deadline_seconds {
        let deadline = Timestamp::from_second(now.as_second() - sds).unwrap_or(now);
        if earliest < deadline {
            earliest = deadline;
        }
    }
    let (recent, missed) = most_recent(schedule, tz, earliest, now);
    let Some(scheduled) = recent else {
        return Ok(next_wake(now));
    };
    if missed > TOO_MANY_MISSED {
        state.event(
            cj,
            EventType::Warning,
            "TooManyMissedTimes",
            format!("too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"),
        );
    }
    let too_late = spec
        .starting_deadline_seconds
        .is_some_and(|sds| scheduled.as_second() + sds < now.as_second());
    if too_late {
        state.event(
            cj,
            EventType::Warning,
            "MissSchedule",
            format!(
                "Missed scheduled time to start a job: {}",
                scheduled.strftime("%a, %d %b %Y %H:%M:%S %z")
            ),
        );
        return Ok(next_wake(scheduled));
    }
    let name = job_name(&cj.name_any(), scheduled);
    let already = status
        .active
        .iter()
        .flatten()
        .any(|r| r.name.as_deref() == Some(name.as_str()))
        || status.last_schedule_time.as_ref().map(|t| t.0) == Some(scheduled);
    if already {
        return Ok(next_wake(scheduled));
    }
    let active = status.active.as_ref().map_or(0, Vec::len);
    match concurrency(spec.concurrency_policy.as_deref(), active) {
        Concurrency::Skip => {
            state.event(
                cj,
                EventType::Normal,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
            );
            return Ok(next_wake(scheduled));
        }
        Concurrency::ReplaceRunning => {
            let ns = cj.namespace().unwrap_or_default();
            let api: Api<Job> = Api::namespaced(state.ctx.client.clone(), &ns);
            for r in status.active.clone().into_iter().flatten() {
                let jname = r.name.clone().unwrap_or_default();
                match api.get_opt(&jname).await {
                    Ok(Some(j)) if j.uid() == r.uid => delete_job(state, cj, &j).await?,
                    Ok(_) => {}
                    Err(source) => {
                        return Err(Error::GetJob {
                            job: format!("{ns}/{jname}"),
                            source,
                        })
                    }
                }
                status
                    .active
                    .get_or_insert_with(Vec::new)
                    .retain(|a| a.uid != r.uid);
            }
        }
        Concurrency::Run => {}
    }
    let job = job_for(cj, scheduled, tz);
    let api: Api<Job> = Api::namespaced(
        state.ctx.client.clone(),
        &cj.namespace().unwrap_or_default(),
    );
    let created = match api.create(&PostParams::default(), &job).await {
        Ok(j) => {
            state.job_event(
                cj,
                &j,
                EventType::Normal,
                "SuccessfulCreate",
                format!("Created job {}", j.name_any()),
            );
            j
        }
        Err(kube::Error::Api(s)) if namespace_terminating(&s) => return Ok(None),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // Created before (the name is the lock): ours if we control it.
            let existing = api.get_opt(&name).await.map_err(|source| Error::GetJob {
                job: format!("{}/{name}", cj.namespace().unwrap_or_default()),
                source,
            })?;
            match existing {
                Some(j)
                    if controller_of_kind::<CronJob, _>(&j).map(|c| &c.uid)
                        == cj.uid().as_ref() =>
                {
                    if status
                        .active
                        .iter()
                        .flatten()
                        .any(|r| r.uid.as_deref() == j.uid().as_deref())
                    {
                        return Ok(next_wake(scheduled));
                    }
                    j
                }
                _ => return Ok(next_wake(scheduled)),
            }
        }
        Err(source) => {
            state.event(
                cj,
                EventType::Warning,
                "FailedCreate",
                format!("Error creating job: {source}"),
            );
            return Err(Error::CreateJob {
                cronjob: key(cj),
                source,
            });
        }
    };
    if !is_finished(&created) {
        status
            .active
            .get_or_insert_with(Vec::new)
            .push(job_reference(&created));
    }
    status.last_schedule_time = Some(Time(scheduled));
    Ok(next_wake(scheduled.max(now)))
}

/// Deletes a Job with background propagation (upstream's `deleteJob`).
async fn delete_job(state: &State, cj: &CronJob, job: &Job) -> Result<()> {
    let api: Api<Job> = Api::namespaced(
        state.ctx.client.clone(),
        &job.namespace().unwrap_or_default(),
    );
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..only_uid(job.uid())
    };
    match api.delete(&job.name_any(), &params).await {
        Ok(_) => {
            state.job_event(
                cj,
                job,
                EventType::Normal,
                "SuccessfulDelete",
                format!("Deleted job {}", job.name_any()),
            );
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => Ok(()),
        Err(source) => {
            state.event(
                cj,
                EventType::Warning,
                "FailedDelete",
                format!("Deleted job: {source}"),
            );
            Err(Error::DeleteJob {
                job: key(job),
                source,
            })
        }
    }
}

/// Writes the status when it changed; the CronJob as written.
async fn write_status(
    state: &State,
    cj: &CronJob,
    old: &CronJobStatus,
    status: &CronJobStatus,
) -> Result<CronJob> {
    let mut cj = cj.clone();
    let mut status = status.clone();
    if status.active.as_ref().is_some_and(Vec::is_empty) {
        status.active = None;
    }
    let mut old = old.clone();
    if old.active.as_ref().is_some_and(Vec::is_empty) {
        old.active = None;
    }
    if old == status {
        return Ok(cj);
    }
    cj.status = Some(status);
    let api: Api<CronJob> = Api::namespaced(
        state.ctx.client.clone(),
        &cj.namespace().unwrap_or_default(),
    );
    match api
        .replace_status(&cj.name_any(), &PostParams::default(), &cj)
        .await
    {
        Ok(written) => Ok(written),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(cj),
        Err(source) => Err(Error::Status {
            cronjob: key(&cj),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(spec: &str, zone: &str, from: &str) -> String {
        let tz = TimeZone::get(zone).unwrap();
        let s = parse_schedule(spec).unwrap();
        next_after(&s, &tz, ts(from)).unwrap().to_string()
    }

    #[test]
    fn next_times_follow_cron_rules() {
        // (schedule, time zone, after, next)
        #[rustfmt::skip]
        let cases = [
            ("* * * * *", "UTC", "2026-01-01T10:00:30Z", "2026-01-01T10:01:00Z"),
            ("* * * * *", "UTC", "2026-01-01T10:00:00Z", "2026-01-01T10:01:00Z"),
            ("*/15 * * * *", "UTC", "2026-01-01T10:16:00Z", "2026-01-01T10:30:00Z"),
            ("@hourly", "UTC", "2026-01-01T23:59:00Z", "2026-01-02T00:00:00Z"),
            // 2026-01-02 is a Friday: next Monday.
            ("30 6 * * 1-5", "UTC", "2026-01-02T07:00:00Z", "2026-01-05T06:30:00Z"),
            // Both day fields restricted: either matches (the 13th, or a Friday).
            ("0 0 13 * 5", "UTC", "2026-02-01T00:00:00Z", "2026-02-06T00:00:00Z"),
            ("0 0 29 2 *", "UTC", "2026-03-01T00:00:00Z", "2028-02-29T00:00:00Z"),
            ("@every 90s", "UTC", "2026-01-01T00:00:00.5Z", "2026-01-01T00:01:30Z"),
            // In a zone: 09:00 in Paris is 08:00 UTC in winter.
            ("0 9 * * *", "Europe/Paris", "2026-01-01T00:00:00Z", "2026-01-01T08:00:00Z"),
        ];
        for (schedule, zone, after, want) in cases {
            assert_eq!(
                next(schedule, zone, after),
                want,
                "{schedule} in {zone} after {after}"
            );
        }
        let never = parse_schedule("0 0 30 2 *").unwrap();
        assert_eq!(
            next_after(&never, &TimeZone::UTC, ts("2026-01-01T00:00:00Z")),
            None
        );
    }

    #[test]
    fn most_recent_counts_missed_times() {
        let s = parse_schedule("*/10 * * * *").unwrap();
        let tz = TimeZone::UTC;
        let (t, n) = most_recent(
            &s,
            &tz,
            ts("2026-01-01T10:00:00Z"),
            ts("2026-01-01T10:35:00Z"),
        );
        assert_eq!(t, Some(ts("2026-01-01T10:30:00Z")));
        assert_eq!(n, 3);
        // Nothing due yet.
        let (t, n) = most_recent(
            &s,
            &tz,
            ts("2026-01-01T10:00:00Z"),
            ts("2026-01-01T10:09:59Z"),
        );
        assert_eq!((t, n), (None, 0));
        // Far behind: the most recent is still exact, and the count is over 100.
        let every_minute = parse_schedule("* * * * *").unwrap();
        let (t, n) = most_recent(
            &every_minute,
            &tz,
            ts("2026-01-01T00:00:00Z"),
            ts("2026-01-02T00:00:30Z"),
        );
        assert_eq!(t, Some(ts("2026-01-02T00:00:00Z")));
        assert_eq!(n, 24 * 60);
    }

    #[test]
    fn job_names_are_unix_minutes() {
        assert_eq!(
            job_name("hello", ts("2026-01-01T00:01:00Z")),
            format!("hello-{}", ts("2026-01-01T00:01:00Z").as_second() / 60)
        );
        assert_eq!(job_name("hello", ts("1970-01-01T01:00:00Z")), "hello-60");
    }

    #[test]
    fn concurrency_policy_decides_per_active_count() {
        assert_eq!(concurrency(Some("Allow"), 3), Concurrency::Run);
        assert_eq!(concurrency(None, 3), Concurrency::Run);
        assert_eq!(concurrency(Some("Forbid"), 0), Concurrency::Run);
        assert_eq!(concurrency(Some("Forbid"), 1), Concurrency::Skip);
        assert_eq!(concurrency(Some("Replace"), 0), Concurrency::Run);
        assert_eq!(concurrency(Some("Replace"), 2), Concurrency::ReplaceRunning);
    }

    #[test]
    fn history_limits_delete_the_oldest() {
        let job = |name: &str, start: Option<&str>| {
            let mut v = json!({"metadata": {"name": name}});
            if let Some(s) = start {
                v["status"] = json!({"startTime": s});
            }
            Arc::new(serde_json::from_value::<Job>(v).unwrap())
        };
        let jobs = vec![
            job("c", Some("2026-01-01T03:00:00Z")),
            job("none", None),
            job("a", Some("2026-01-01T01:00:00Z")),
            job("b", Some("2026-01-01T02:00:00Z")),
        ];
        let names = |v: Vec<Arc<Job>>| v.iter().map(|j| j.name_any()).collect::<Vec<_>>();
        assert_eq!(names(over_limit(jobs.clone(), 3)), ["a"]);
        assert_eq!(names(over_limit(jobs.clone(), 1)), ["a", "b", "c"]);
        assert_eq!(names(over_limit(jobs.clone(), 0)).len(), 4);
        assert!(over_limit(jobs, 4).is_empty());
    }

    #[test]
    fn zones_come_from_the_spec_or_the_prefix() {
        assert!(time_zone("0 * * * *", Some("Europe/Paris")).is_ok());
        assert!(time_zone("CRON_TZ=Asia/Tokyo 0 * * * *", None).is_ok());
        assert!(time_zone("TZ=Mars/Olympus 0 * * * *", None).is_err());
        assert!(time_zone("0 * * * *", Some("Mars/Olympus")).is_err());
        let cj: CronJob = serde_json::from_value(json!({
            "metadata": {"name": "hello", "namespace": "ns", "uid": "u"},
            "spec": {"schedule": "0 9 * * *", "timeZone": "Europe/Paris",
                "jobTemplate": {"metadata": {"labels": {"a": "b"}},
                    "spec": {"template": {"spec": {"containers": []}}}}},
        }))
        .unwrap();
        let tz = TimeZone::get("Europe/Paris").unwrap();
        let job = job_for(&cj, ts("2026-01-01T08:00:00Z"), &tz);
        assert_eq!(
            job.annotations()[SCHEDULED_TIMESTAMP],
            "2026-01-01T09:00:00+01:00"
        );
        assert_eq!(job.labels()["a"], "b");
        assert_eq!(job.owner_references()[0].kind, "CronJob");
        let utc = job_for(&cj, ts("2026-01-01T08:00:00Z"), &TimeZone::UTC);
        assert_eq!(
            utc.annotations()[SCHEDULED_TIMESTAMP],
            "2026-01-01T08:00:00Z"
        );
    }
}
