//! The job controller against a real apiserver + etcd. No kubelet: the tests finish pods
//! by setting their status (phase and container exit codes) as a kubelet would.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{
    controlled_by, controlled_pods, events_by, is_active, wait_until, Cluster, TIMEOUT,
};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::{json, Value};

const NS: &str = "default";
const TRACKING: &str = "batch.kubernetes.io/job-tracking";
const INDEX: &str = "batch.kubernetes.io/job-completion-index";

fn job(name: &str, spec: Value) -> Job {
    let mut spec = spec;
    spec["template"] = json!({"spec": {
        "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
        "restartPolicy": "Never",
    }});
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

async fn create_job(c: &Cluster, j: Job) -> Job {
    Api::<Job>::namespaced(c.client.clone(), NS)
        .create(&PostParams::default(), &j)
        .await
        .unwrap()
}

async fn wait_active(c: &Cluster, uid: &str, n: usize) -> Vec<Pod> {
    wait_until(TIMEOUT, &format!("{n} active pods of {uid}"), || async {
        let pods: Vec<Pod> = controlled_pods(c, NS, uid)
            .await
            .into_iter()
            .filter(is_active)
            .collect();
        (pods.len() == n).then_some(pods)
    })
    .await
}

/// Plays the kubelet: the pod's container exited with `code` (0: Succeeded, else Failed).
async fn finish(c: &Cluster, name: &str, code: i32) {
    let phase = if code == 0 { "Succeeded" } else { "Failed" };
    let reason = if code == 0 { "Completed" } else { "Error" };
    Api::<Pod>::namespaced(c.client.clone(), NS)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": phase, "containerStatuses": [{
                "name": "c", "image": "registry.k8s.io/pause:3.10", "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "reason": reason}},
            }]}})),
        )
        .await
        .unwrap();
}

async fn wait_status(
    c: &Cluster,
    name: &str,
    what: &str,
    timeout: Duration,
    f: impl Fn(&JobStatus) -> bool,
) -> Job {
    let api: Api<Job> = Api::namespaced(c.client.clone(), NS);
    wait_until(timeout, what, || async {
        let j = api.get(name).await.ok()?;
        j.status.as_ref().is_some_and(&f).then_some(j)
    })
    .await
}

fn condition<'a>(
    s: &'a JobStatus,
    type_: &str,
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    s.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == "True")
}

fn has(s: &JobStatus, type_: &str) -> bool {
    condition(s, type_).is_some()
}

// kubectl blocks its thread: the in-process apiserver needs another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_with_parallelism_run_to_complete() {
    let c = Cluster::start(&["job"]).await;
    let j = create_job(&c, job("pi", json!({"completions": 3, "parallelism": 2}))).await;
    let uid = j.uid().unwrap();
    let pods = wait_active(&c, &uid, 2).await;
    for p in &pods {
        assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-"));
        assert!(p.finalizers().iter().any(|f| f == TRACKING));
        assert_eq!(p.labels()["batch.kubernetes.io/job-name"], "pi");
        assert_eq!(p.labels()["batch.kubernetes.io/controller-uid"], uid);
        let r = &p.owner_references()[0];
        assert_eq!((r.kind.as_str(), r.controller), ("Job", Some(true)));
    }
    wait_status(&c, "pi", "active 2, startTime", TIMEOUT, |s| {
        s.active == Some(2) && s.start_time.is_some() && s.ready == Some(0)
    })
    .await;
    // Finish pods as they come until three succeeded.
    let mut finished = HashSet::new();
    while finished.len() < 3 {
        let pods = wait_until(TIMEOUT, "an unfinished pod", || async {
            let pods: Vec<Pod> = controlled_pods(&c, NS, &uid)
                .await
                .into_iter()
                .filter(|p| is_active(p) && !finished.contains(&p.name_any()))
                .collect();
            (!pods.is_empty()).then_some(pods)
        })
        .await;
        for p in pods.into_iter().take(3 - finished.len()) {
            finish(&c, &p.name_any(), 0).await;
            finished.insert(p.name_any());
        }
    }
    let done = wait_status(&c, "pi", "Complete", TIMEOUT, |s| has(s, "Complete")).await;
    let s = done.status.unwrap();
    assert_eq!(s.succeeded, Some(3));
    assert_eq!(s.failed, None);
    assert_eq!(s.active, None);
    assert!(has(&s, "SuccessCriteriaMet"));
    let complete = condition(&s, "Complete").unwrap();
    assert_eq!(complete.reason.as_deref(), Some("CompletionsReached"));
    assert!(complete.last_transition_time.is_some() && complete.last_probe_time.is_some());
    assert!(s.completion_time.is_some());
    let uncounted = s.uncounted_terminated_pods.unwrap_or_default();
    assert!(uncounted.succeeded.is_none() && uncounted.failed.is_none());
    // Exactly three pods ever, every finalizer released.
    let pods = controlled_pods(&c, NS, &uid).await;
    assert_eq!(pods.len(), 3);
    assert!(pods
        .iter()
        .all(|p| !p.finalizers().iter().any(|f| f == TRACKING)));

    // kubectl shows the Job's completions from the apiserver's table.
    let out = c.api.kubectl_ok(&["get", "jobs", "-n", NS]);
    let line = out.lines().find(|l| l.starts_with("pi ")).unwrap_or("");
    assert!(out.contains("COMPLETIONS"), "{out}");
    assert!(line.contains("3/3"), "{out}");

    wait_until(TIMEOUT, "SuccessfulCreate and Completed events", || async {
        let events = events_by(&c, NS, "job-controller", "pi").await;
        let n = |reason: &str, prefix: &str| {
            events
                .iter()
                .filter(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.note.as_deref().is_some_and(|n| n.starts_with(prefix))
                })
                .count()
        };
        (n("SuccessfulCreate", "Created pod: pi-") == 3 && n("Completed", "Job completed") == 1)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn backoff_limit_fails_the_job_and_stops_creating_pods() {
    let c = Cluster::start(&["job"]).await;
    let j = create_job(&c, job("flaky", json!({"backoffLimit": 1}))).await;
    let uid = j.uid().unwrap();
    let first = wait_active(&c, &uid, 1).await.remove(0);
    finish(&c, &first.name_any(), 1).await;
    // The replacement comes after the 10s pod failure backoff.
    wait_status(&c, "flaky", "failed 1", TIMEOUT, |s| s.failed == Some(1)).await;
    let second = wait_active(&c, &uid, 1).await.remove(0);
    assert_ne!(second.name_any(), first.name_any());
    finish(&c, &second.name_any(), 1).await;
    let failed = wait_status(&c, "flaky", "Failed", TIMEOUT, |s| has(s, "Failed")).await;
    let s = failed.status.unwrap();
    assert_eq!(s.failed, Some(2));
    for type_ in ["FailureTarget", "Failed"] {
        let cond = condition(&s, type_).unwrap();
        assert_eq!(cond.reason.as_deref(), Some("BackoffLimitExceeded"));
        assert_eq!(
            cond.message.as_deref(),
            Some("Job has reached the specified backoff limit")
        );
    }
    assert!(s.completion_time.is_none());
    assert_eq!(
        controlled_pods(&c, NS, &uid).await.len(),
        2,
        "no pod after the failure"
    );
    wait_until(TIMEOUT, "BackoffLimitExceeded event", || async {
        events_by(&c, NS, "job-controller", "flaky")
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("BackoffLimitExceeded"))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn active_deadline_fails_the_job_and_deletes_its_pods() {
    let c = Cluster::start(&["job"]).await;
    let j = create_job(
        &c,
        job(
            "slow",
            json!({"parallelism": 2, "completions": 4, "activeDeadlineSeconds": 3}),
        ),
    )
    .await;
    let uid = j.uid().unwrap();
    wait_active(&c, &uid, 2).await;
    let failed = wait_status(&c, "slow", "Failed", TIMEOUT, |s| has(s, "Failed")).await;
    let s = failed.status.unwrap();
    let cond = condition(&s, "Failed").unwrap();
    assert_eq!(cond.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(
        cond.message.as_deref(),
        Some("Job was active longer than specified deadline")
    );
    assert!(has(&s, "FailureTarget"));
    // The pods still running when the Job failed count as failed.
    assert_eq!(s.failed, Some(2));
    assert_eq!(s.active, None);
    assert!(controlled_pods(&c, NS, &uid)
        .await
        .iter()
        .all(|p| !is_active(p)));
}

#[tokio::test]
async fn indexed_job_runs_each_index_once() {
    let c = Cluster::start(&["job"]).await;
    let j = create_job(
        &c,
        job(
            "idx",
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
        ),
    )
    .await;
    let uid = j.uid().unwrap();
    let pods = wait_active(&c, &uid, 3).await;
    let mut indexes = BTreeSet::new();
    for p in &pods {
        let i = p.annotations()[INDEX].clone();
        assert_eq!(p.labels()[INDEX], i);
        assert!(
            p.name_any().starts_with(&format!("idx-{i}-")),
            "{}",
            p.name_any()
        );
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some(format!("idx-{i}").as_str()));
        let env = spec.containers[0].env.as_ref().unwrap();
        assert!(env.iter().any(|e| e.name == "JOB_COMPLETION_INDEX"));
        indexes.insert(i);
    }
    assert_eq!(indexes, ["0", "1", "2"].map(String::from).into());
    let by_index = |i: &str| {
        pods.iter()
            .find(|p| p.annotations()[INDEX] == i)
            .unwrap()
            .name_any()
    };
    finish(&c, &by_index("1"), 0).await;
    wait_status(&c, "idx", "completedIndexes 1", TIMEOUT, |s| {
        s.completed_indexes.as_deref() == Some("1") && s.succeeded == Some(1)
    })
    .await;
    finish(&c, &by_index("0"), 0).await;
    finish(&c, &by_index("2"), 0).await;
    let done = wait_status(&c, "idx", "Complete", TIMEOUT, |s| has(s, "Complete")).await;
    let s = done.status.unwrap();
    assert_eq!(s.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!(s.succeeded, Some(3));
    assert_eq!(
        controlled_pods(&c, NS, &uid).await.len(),
        3,
        "each index ran once"
    );
}

#[tokio::test]
async fn pod_failure_policy_fails_the_job_on_an_exit_code() {
    let c = Cluster::start(&["job"]).await;
    let j = create_job(
        &c,
        job(
            "policy",
            json!({"backoffLimit": 6, "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": "c", "operator": "In", "values": [42]}},
            ]}}),
        ),
    )
    .await;
    let uid = j.uid().unwrap();
    let pod = wait_active(&c, &uid, 1).await.remove(0);
    finish(&c, &pod.name_any(), 42).await;
    let failed = wait_status(&c, "policy", "Failed", TIMEOUT, |s| has(s, "Failed")).await;
    let s = failed.status.unwrap();
    let cond = condition(&s, "Failed").unwrap();
    assert_eq!(cond.reason.as_deref(), Some("PodFailurePolicy"));
    assert_eq!(
        cond.message.clone().unwrap(),
        format!(
            "Container c for pod {NS}/{} failed with exit code 42 matching FailJob rule at index 0",
            pod.name_any()
        )
    );
    assert_eq!(s.failed, Some(1));
    assert_eq!(
        controlled_pods(&c, NS, &uid).await.len(),
        1,
        "no replacement pod"
    );
}

#[tokio::test]
async fn suspended_job_runs_no_pods_until_resumed() {
    let c = Cluster::start(&["job"]).await;
    let j = create_job(
        &c,
        job(
            "later",
            json!({"parallelism": 2, "completions": 2, "suspend": true}),
        ),
    )
    .await;
    let uid = j.uid().unwrap();
    let s = wait_status(&c, "later", "Suspended", TIMEOUT, |s| has(s, "Suspended"))
        .await
        .status
        .unwrap();
    assert_eq!(
        condition(&s, "Suspended").unwrap().reason.as_deref(),
        Some("JobSuspended")
    );
    assert!(s.start_time.is_none());
    assert!(controlled_pods(&c, NS, &uid).await.is_empty());
    Api::<Job>::namespaced(c.client.clone(), NS)
        .patch(
            "later",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": false}})),
        )
        .await
        .unwrap();
    wait_active(&c, &uid, 2).await;
    let s = wait_status(&c, "later", "resumed", TIMEOUT, |s| {
        !has(s, "Suspended") && s.start_time.is_some()
    })
    .await
    .status
    .unwrap();
    let resumed = s
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Suspended")
        .unwrap();
    assert_eq!(
        (resumed.status.as_str(), resumed.reason.as_deref()),
        ("False", Some("JobResumed"))
    );
}

#[tokio::test]
async fn never_more_than_parallelism_active_under_a_burst() {
    let c = Cluster::start(&["job"]).await;
    let j = create_job(
        &c,
        job("burst", json!({"completions": 12, "parallelism": 3})),
    )
    .await;
    let uid = j.uid().unwrap();
    // Every state of the pod set as a watch sees it: the most active pods at once.
    let max = Arc::new(AtomicUsize::new(0));
    let watch = {
        let (max, uid) = (max.clone(), uid.clone());
        let api: Api<Pod> = Api::namespaced(c.client.clone(), NS);
        tokio::spawn(async move {
            let mut alive = HashSet::new();
            let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
            while let Some(e) = events.next().await {
                match e {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
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
    // Finish every active pod the moment it shows up, all at once.
    let api: Api<Job> = Api::namespaced(c.client.clone(), NS);
    let cluster = &c;
    wait_until(Duration::from_secs(90), "12 succeeded", || async {
        let pods: Vec<Pod> = controlled_pods(&c, NS, &uid)
            .await
            .into_iter()
            .filter(is_active)
            .collect();
        futures::future::join_all(pods.iter().map(|p| {
            let name = p.name_any();
            async move { finish(cluster, &name, 0).await }
        }))
        .await;
        let s = api.get("burst").await.ok()?.status?;
        has(&s, "Complete").then_some(())
    })
    .await;
    watch.abort();
    assert!(
        max.load(Ordering::SeqCst) <= 3,
        "{} active",
        max.load(Ordering::SeqCst)
    );
    let s = api.get("burst").await.unwrap().status.unwrap();
    assert_eq!(s.succeeded, Some(12));
    assert_eq!(
        controlled_pods(&c, NS, &uid).await.len(),
        12,
        "one pod per completion"
    );
}

#[tokio::test]
async fn finished_job_and_its_pods_go_after_ttl() {
    let c = Cluster::start(&["job", "ttl-after-finished", "garbagecollector"]).await;
    let j = create_job(&c, job("brief", json!({"ttlSecondsAfterFinished": 1}))).await;
    let uid = j.uid().unwrap();
    let pod = wait_active(&c, &uid, 1).await.remove(0);
    finish(&c, &pod.name_any(), 0).await;
    let api: Api<Job> = Api::namespaced(c.client.clone(), NS);
    wait_until(TIMEOUT, "the Job and its pod gone", || async {
        let gone = api.get_opt("brief").await.ok()?.is_none();
        (gone && controlled_pods(&c, NS, &uid).await.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn pods_of_a_deleted_job_are_released_and_collected() {
    let c = Cluster::start(&["job", "garbagecollector"]).await;
    let j = create_job(&c, job("gone", json!({"parallelism": 2, "completions": 4}))).await;
    let uid = j.uid().unwrap();
    let pods = wait_active(&c, &uid, 2).await;
    assert!(pods
        .iter()
        .all(|p| p.finalizers().iter().any(|f| f == TRACKING)));
    // Background deletion: the Job goes first, then the collector deletes its pods,
    // which the job controller lets go of (their tracking finalizer removed).
    Api::<Job>::namespaced(c.client.clone(), NS)
        .delete("gone", &kube::api::DeleteParams::background())
        .await
        .unwrap();
    wait_until(TIMEOUT, "the pods of the deleted Job gone", || async {
        controlled_pods(&c, NS, &uid).await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn finished_pods_count_once_and_deleted_running_pods_count_as_failed() {
    let c = Cluster::start(&["job"]).await;
    let j = create_job(
        &c,
        job("count", json!({"completions": 2, "parallelism": 1})),
    )
    .await;
    let uid = j.uid().unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), NS);
    let a = wait_active(&c, &uid, 1).await.remove(0);
    finish(&c, &a.name_any(), 0).await;
    wait_status(&c, "count", "succeeded 1", TIMEOUT, |s| {
        s.succeeded == Some(1)
    })
    .await;
    // Counted: its finalizer is gone, so deleting it changes nothing.
    let a = pods.get(&a.name_any()).await.unwrap();
    assert!(!a.finalizers().iter().any(|f| f == TRACKING));
    pods.delete(&a.name_any(), &Default::default())
        .await
        .unwrap();
    let b = wait_until(TIMEOUT, "the second pod", || async {
        controlled_pods(&c, NS, &uid)
            .await
            .into_iter()
            .find(|p| p.name_any() != a.name_any() && is_active(p))
    })
    .await;
    // Deleted while running: the tracking finalizer holds it until it is counted failed.
    pods.delete(&b.name_any(), &Default::default())
        .await
        .unwrap();
    let s = wait_status(&c, "count", "failed 1", TIMEOUT, |s| s.failed == Some(1))
        .await
        .status
        .unwrap();
    assert_eq!(s.succeeded, Some(1));
    wait_until(TIMEOUT, "the deleted pod released", || async {
        pods.get_opt(&b.name_any())
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    // The replacement comes after the failure backoff.
    let third = wait_active(&c, &uid, 1).await.remove(0);
    finish(&c, &third.name_any(), 0).await;
    let s = wait_status(&c, "count", "Complete", TIMEOUT, |s| has(s, "Complete"))
        .await
        .status
        .unwrap();
    assert_eq!((s.succeeded, s.failed), (Some(2), Some(1)));
}

#[tokio::test]
async fn ignored_failures_do_not_count_and_restarts_count_with_on_failure() {
    let c = Cluster::start(&["job"]).await;
    // A disrupted pod (DisruptionTarget) is ignored: replaced at once, not counted.
    let j = create_job(
        &c,
        job(
            "tolerant",
            json!({"backoffLimit": 0, "podFailurePolicy": {"rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]}}),
        ),
    )
    .await;
    let uid = j.uid().unwrap();
    let first = wait_active(&c, &uid, 1).await.remove(0);
    Api::<Pod>::namespaced(c.client.clone(), NS)
        .patch_status(
            &first.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed", "conditions": [
                {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"},
            ]}})),
        )
        .await
        .unwrap();
    let second = wait_active(&c, &uid, 1).await.remove(0);
    assert_ne!(second.name_any(), first.name_any());
    finish(&c, &second.name_any(), 0).await;
    let s = wait_status(&c, "tolerant", "Complete", TIMEOUT, |s| has(s, "Complete"))
        .await
        .status
        .unwrap();
    assert_eq!((s.succeeded, s.failed), (Some(1), None));

    // restartPolicy OnFailure: container restarts count toward backoffLimit.
    let mut restarting = job("restarting", json!({"backoffLimit": 2}));
    restarting
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .restart_policy = Some("OnFailure".into());
    let j = create_job(&c, restarting).await;
    let uid = j.uid().unwrap();
    let pod = wait_active(&c, &uid, 1).await.remove(0);
    Api::<Pod>::namespaced(c.client.clone(), NS)
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"phase": "Running", "containerStatuses": [{
                    "name": "c", "image": "registry.k8s.io/pause:3.10", "imageID": "",
                    "ready": false, "restartCount": 2,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                }]}}),
            ),
        )
        .await
        .unwrap();
    let s = wait_status(&c, "restarting", "Failed", TIMEOUT, |s| has(s, "Failed"))
        .await
        .status
        .unwrap();
    assert_eq!(
        condition(&s, "Failed").unwrap().reason.as_deref(),
        Some("BackoffLimitExceeded")
    );
    // The restarting pod, deleted as the Job failed, counts as failed.
    assert_eq!(s.failed, Some(1));
    assert!(controlled_pods(&c, NS, &uid)
        .await
        .iter()
        .all(|p| !is_active(p)));
}

#[tokio::test]
async fn a_restarted_controller_counts_pods_that_finished_meanwhile_once() {
    let mut c = Cluster::start(&["job"]).await;
    let j = create_job(
        &c,
        job("resume", json!({"completions": 3, "parallelism": 3})),
    )
    .await;
    let uid = j.uid().unwrap();
    let pods = wait_active(&c, &uid, 3).await;
    wait_status(&c, "resume", "active 3", TIMEOUT, |s| s.active == Some(3)).await;
    c.stop_manager().await;
    finish(&c, &pods[0].name_any(), 0).await;
    finish(&c, &pods[1].name_any(), 0).await;
    c.start_manager(&["job"], Default::default()).await;
    wait_status(&c, "resume", "succeeded 2", TIMEOUT, |s| {
        s.succeeded == Some(2) && s.active == Some(1)
    })
    .await;
    finish(&c, &pods[2].name_any(), 0).await;
    let s = wait_status(&c, "resume", "Complete", TIMEOUT, |s| has(s, "Complete"))
        .await
        .status
        .unwrap();
    assert_eq!(s.succeeded, Some(3));
    assert_eq!(controlled_pods(&c, NS, &uid).await.len(), 3);
}
