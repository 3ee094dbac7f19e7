//! The cronjob controller against a real apiserver + etcd. The controller's clock is the
//! real one: tests with a `* * * * *` schedule wait for the next minute (at most ~70s);
//! the schedule arithmetic is unit-tested with fixed times in the module itself.

use std::time::Duration;

use crate::common::{events_by, wait_until, Cluster, TIMEOUT};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};

const NS: &str = "default";
/// Long enough for the next minute to come, and the Job after it.
const NEXT_MINUTE: Duration = Duration::from_secs(80);

fn cron_job(name: &str, schedule: &str, extra: Value) -> CronJob {
    let mut spec = json!({
        "schedule": schedule,
        "jobTemplate": {
            "metadata": {"labels": {"app": name}},
            "spec": {"template": {"spec": {
                "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
                "restartPolicy": "Never",
            }}},
        },
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

async fn create_cj(c: &Cluster, cj: CronJob) -> CronJob {
    Api::<CronJob>::namespaced(c.client.clone(), NS)
        .create(&PostParams::default(), &cj)
        .await
        .unwrap()
}

/// The Jobs a CronJob controls.
async fn jobs_of(c: &Cluster, uid: &str) -> Vec<Job> {
    Api::<Job>::namespaced(c.client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|j| {
            j.owner_references()
                .iter()
                .any(|r| r.controller == Some(true) && r.uid == uid)
        })
        .collect()
}

/// A Job of the CronJob made by the test (suspended: no job controller runs here).
async fn own_job(c: &Cluster, cj: &CronJob, name: &str) -> Job {
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": name, "ownerReferences": [{
            "apiVersion": "batch/v1", "kind": "CronJob", "name": cj.name_any(),
            "uid": cj.uid().unwrap(), "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"suspend": true, "template": {"spec": {
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
            "restartPolicy": "Never"}}},
    }))
    .unwrap();
    Api::<Job>::namespaced(c.client.clone(), NS)
        .create(&PostParams::default(), &job)
        .await
        .unwrap()
}

/// Plays the job controller: the Job finished (Complete or Failed) after starting at
/// `start`.
async fn finish_job(c: &Cluster, name: &str, complete: bool, start: jiff::Timestamp) {
    let now = jiff::Timestamp::now().to_string();
    let start = start.to_string();
    let status = if complete {
        json!({"startTime": start, "completionTime": now, "succeeded": 1, "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
            {"type": "Complete", "status": "True", "lastTransitionTime": now}]})
    } else {
        json!({"startTime": start, "failed": 1, "conditions": [
            {"type": "FailureTarget", "status": "True", "lastTransitionTime": now},
            {"type": "Failed", "status": "True", "lastTransitionTime": now}]})
    };
    Api::<Job>::namespaced(c.client.clone(), NS)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();
}

async fn wait_event(c: &Cluster, cj: &str, reason: &str, note: &str) {
    wait_event_within(c, cj, reason, note, TIMEOUT).await
}

async fn wait_event_within(c: &Cluster, cj: &str, reason: &str, note: &str, timeout: Duration) {
    wait_until(timeout, &format!("{reason} event {note:?}"), || async {
        events_by(c, NS, "cronjob-controller", cj)
            .await
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.note.as_deref().is_some_and(|n| n.starts_with(note))
            })
            .then_some(())
    })
    .await
}

fn active_names(cj: &CronJob) -> Vec<String> {
    cj.status
        .as_ref()
        .and_then(|s| s.active.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|r| r.name.clone())
        .collect()
}

#[tokio::test]
async fn every_minute_schedule_creates_a_job_then_sees_it_complete() {
    let c = Cluster::start(&["cronjob"]).await;
    let cj = create_cj(&c, cron_job("tick", "* * * * *", json!({}))).await;
    let uid = cj.uid().unwrap();
    let job = wait_until(NEXT_MINUTE, "the first Job", || async {
        jobs_of(&c, &uid).await.into_iter().next()
    })
    .await;
    let scheduled: jiff::Timestamp = job.annotations()
        ["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .parse()
        .unwrap();
    assert_eq!(scheduled.as_second() % 60, 0);
    assert_eq!(
        job.name_any(),
        format!("tick-{}", scheduled.as_second() / 60)
    );
    assert_eq!(job.labels()["app"], "tick");
    let r = &job.owner_references()[0];
    assert_eq!((r.kind.as_str(), r.controller), ("CronJob", Some(true)));
    let api: Api<CronJob> = Api::namespaced(c.client.clone(), NS);
    let cj = wait_until(TIMEOUT, "status.active and lastScheduleTime", || async {
        let cj = api.get("tick").await.ok()?;
        let last = cj.status.as_ref()?.last_schedule_time.as_ref()?.0;
        (active_names(&cj) == [job.name_any()] && last == scheduled).then_some(cj)
    })
    .await;
    assert!(cj.status.unwrap().last_successful_time.is_none());
    wait_event(
        &c,
        "tick",
        "SuccessfulCreate",
        &format!("Created job {}", job.name_any()),
    )
    .await;

    finish_job(&c, &job.name_any(), true, scheduled).await;
    wait_until(TIMEOUT, "the Job leaves status.active", || async {
        let cj = api.get("tick").await.ok()?;
        let s = cj.status.as_ref()?;
        (active_names(&cj).is_empty() && s.last_successful_time.is_some()).then_some(())
    })
    .await;
    wait_event(
        &c,
        "tick",
        "SawCompletedJob",
        &format!("Saw completed job: {}, condition: Complete", job.name_any()),
    )
    .await;
}

#[tokio::test]
async fn history_limits_delete_the_oldest_finished_jobs() {
    let c = Cluster::start(&["cronjob"]).await;
    // Once a year: the controller only tidies up here.
    let cj = create_cj(
        &c,
        cron_job(
            "tidy",
            "0 0 1 1 *",
            json!({"successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 1}),
        ),
    )
    .await;
    let uid = cj.uid().unwrap();
    let hours_ago = |h: i64| jiff::Timestamp::now() - jiff::SignedDuration::from_hours(h);
    for (name, complete, age) in [
        ("ok-old", true, 3),
        ("ok-mid", true, 2),
        ("ok-new", true, 1),
        ("bad-old", false, 2),
        ("bad-new", false, 1),
    ] {
        own_job(&c, &cj, name).await;
        finish_job(&c, name, complete, hours_ago(age)).await;
    }
    wait_until(TIMEOUT, "only the newest of each kept", || async {
        let mut names: Vec<String> = jobs_of(&c, &uid)
            .await
            .iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .map(|j| j.name_any())
            .collect();
        names.sort();
        (names == ["bad-new", "ok-new"]).then_some(())
    })
    .await;
    for name in ["ok-old", "ok-mid", "bad-old"] {
        wait_event(
            &c,
            "tidy",
            "SuccessfulDelete",
            &format!("Deleted job {name}"),
        )
        .await;
    }
}

/// A CronJob whose status lists a running Job of its own, then unsuspended.
async fn with_running_job(c: &Cluster, name: &str, policy: &str) -> (CronJob, Job) {
    let cj = create_cj(
        c,
        cron_job(
            name,
            "* * * * *",
            json!({"concurrencyPolicy": policy, "suspend": true}),
        ),
    )
    .await;
    let running = own_job(c, &cj, &format!("{name}-running")).await;
    let api: Api<CronJob> = Api::namespaced(c.client.clone(), NS);
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"active": [{
            "apiVersion": "batch/v1", "kind": "Job", "namespace": NS,
            "name": running.name_any(), "uid": running.uid().unwrap()}]}})),
    )
    .await
    .unwrap();
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();
    (cj, running)
}

#[tokio::test]
async fn replace_deletes_the_running_job_for_the_next() {
    let c = Cluster::start(&["cronjob"]).await;
    let (cj, running) = with_running_job(&c, "swap", "Replace").await;
    let uid = cj.uid().unwrap();
    let api: Api<CronJob> = Api::namespaced(c.client.clone(), NS);
    let next = wait_until(NEXT_MINUTE, "the running Job replaced", || async {
        let jobs = jobs_of(&c, &uid).await;
        let alive: Vec<&Job> = jobs
            .iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .collect();
        match alive.as_slice() {
            [j] if j.name_any() != running.name_any() => Some(j.name_any()),
            _ => None,
        }
    })
    .await;
    wait_until(TIMEOUT, "status.active lists the new Job", || async {
        (active_names(&api.get("swap").await.ok()?) == [next.clone()]).then_some(())
    })
    .await;
    wait_event(&c, "swap", "SuccessfulDelete", "Deleted job swap-running").await;
}

#[tokio::test]
async fn forbid_skips_while_a_job_runs() {
    let c = Cluster::start(&["cronjob"]).await;
    let (cj, running) = with_running_job(&c, "solo", "Forbid").await;
    let uid = cj.uid().unwrap();
    // The next minute comes and goes: the controller says it skipped it.
    wait_event_within(
        &c,
        "solo",
        "JobAlreadyActive",
        "Not starting job",
        NEXT_MINUTE,
    )
    .await;
    let jobs = jobs_of(&c, &uid).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].name_any(), running.name_any());
}

#[tokio::test]
async fn unknown_time_zone_is_reported() {
    let c = Cluster::start(&["cronjob"]).await;
    let cj = create_cj(
        &c,
        cron_job("far", "* * * * *", json!({"timeZone": "Mars/Olympus"})),
    )
    .await;
    wait_event(
        &c,
        "far",
        "UnknownTimeZone",
        "invalid timeZone: \"Mars/Olympus\"",
    )
    .await;
    assert!(jobs_of(&c, &cj.uid().unwrap()).await.is_empty());
}
