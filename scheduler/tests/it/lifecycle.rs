//! The scheduler over time: pending pods that become schedulable, preemption, events,
//! other schedulers' pods, health and metrics, and leader election hand-over.

use std::time::Duration;

use crate::common::{configuration, wait_until, Cluster, TIMEOUT};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn a_pod_that_fits_nowhere_waits_then_runs_when_a_node_is_added_or_a_pod_deleted() {
    let c = Cluster::start().await;
    // No nodes at all.
    c.create_pod("early", "", "", json!({})).await;
    assert_eq!(
        c.event_note("early", "FailedScheduling").await,
        "no nodes available to schedule pods"
    );
    c.create_node("n1", "2", "4Gi", json!({})).await;
    assert_eq!(c.bound_node("early").await, "n1");
    assert_eq!(
        c.event_note("early", "Scheduled").await,
        "Successfully assigned default/early to n1"
    );

    // Fill n1, then a pod that needs the room waits with upstream's message.
    c.create_pod("hog", "1500m", "", json!({})).await;
    assert_eq!(c.bound_node("hog").await, "n1");
    c.create_pod("waiting", "1", "", json!({})).await;
    let msg = c.unschedulable_message("waiting").await;
    assert_eq!(
        msg,
        "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
    );
    let note = c.event_note("waiting", "FailedScheduling").await;
    assert_eq!(note, msg);
    assert_eq!(c.node_of("waiting").await, None);

    // Deleting the hog frees the room: the waiting pod is retried and bound.
    c.pods()
        .delete("hog", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert_eq!(c.bound_node("waiting").await, "n1");
}

#[tokio::test]
async fn a_higher_priority_pod_preempts_the_fewest_lowest_priority_victims() {
    let c = Cluster::start().await;
    let classes: Api<PriorityClass> = Api::all(c.client.clone());
    for (name, value) in [("low", 10), ("medium", 100), ("high", 1000)] {
        let pc: PriorityClass =
            serde_json::from_value(json!({"metadata": {"name": name}, "value": value})).unwrap();
        classes.create(&PostParams::default(), &pc).await.unwrap();
    }
    c.create_node("n1", "2", "4Gi", json!({})).await;
    c.create_node("n2", "2", "4Gi", json!({})).await;
    // n1: two low pods of 1 cpu; n2: one medium pod of 2 cpu.
    for (name, node, cpu, class) in [
        ("low-a", "n1", "1", "low"),
        ("low-b", "n1", "1", "low"),
        ("medium", "n2", "2", "medium"),
    ] {
        c.create_pod(name, cpu, "", json!({"spec": {"priorityClassName": class, "nodeSelector": {"kubernetes.io/hostname": node}}})).await;
        assert_eq!(c.bound_node(name).await, node);
    }
    // A 1-cpu high-priority pod: evicting one low pod on n1 is the cheapest.
    c.create_pod(
        "urgent",
        "1",
        "",
        json!({"spec": {"priorityClassName": "high"}}),
    )
    .await;
    let pods: Api<Pod> = c.pods();
    // The victim is deleted gracefully, marked as a disruption target; with no kubelet
    // here, the test finishes the deletion as the node's kubelet would.
    let victim = wait_until(TIMEOUT, "a victim terminating", || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&Default::default()).await.ok()?;
            list.items
                .into_iter()
                .find(|p| p.metadata.deletion_timestamp.is_some())
        }
    })
    .await;
    let name = victim.metadata.name.clone().unwrap();
    assert!(name.starts_with("low-"), "victim {name}");
    let conditions = victim.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(
        conditions.iter().any(|c| c.type_ == "DisruptionTarget"
            && c.reason.as_deref() == Some("PreemptionByScheduler")),
        "{conditions:?}"
    );
    let nominated = pods
        .get("urgent")
        .await
        .unwrap()
        .status
        .and_then(|s| s.nominated_node_name);
    assert_eq!(nominated.as_deref(), Some("n1"));
    pods.delete(&name, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert_eq!(c.bound_node("urgent").await, "n1");
    let remaining: Vec<String> = pods
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    let lows = remaining.iter().filter(|n| n.starts_with("low-")).count();
    assert_eq!(lows, 1, "exactly one victim: {remaining:?}");
    assert!(remaining.contains(&"medium".to_string()));

    // preemptionPolicy: Never waits instead.
    let never: PriorityClass = serde_json::from_value(
        json!({"metadata": {"name": "polite"}, "value": 5000, "preemptionPolicy": "Never"}),
    )
    .unwrap();
    classes
        .create(&PostParams::default(), &never)
        .await
        .unwrap();
    c.create_pod(
        "polite",
        "2",
        "",
        json!({"spec": {"priorityClassName": "polite"}}),
    )
    .await;
    let msg = c.unschedulable_message("polite").await;
    assert!(
        msg.ends_with("preemption: not eligible due to preemptionPolicy=Never."),
        "{msg}"
    );
}

#[tokio::test]
async fn pods_for_other_schedulers_are_left_alone_and_profiles_pick_theirs() {
    let c = Cluster::start_with(configuration(
        "profiles:\n- schedulerName: default-scheduler\n- schedulerName: second\n",
    ))
    .await;
    c.create_node("n1", "2", "4Gi", json!({})).await;
    c.create_pod("mine", "", "", json!({"spec": {"schedulerName": "second"}}))
        .await;
    assert_eq!(c.bound_node("mine").await, "n1");
    c.create_pod(
        "theirs",
        "",
        "",
        json!({"spec": {"schedulerName": "someone-else"}}),
    )
    .await;
    c.create_pod("marker", "", "", json!({})).await;
    // Once a later pod is bound, the other scheduler's pod has certainly been seen.
    assert_eq!(c.bound_node("marker").await, "n1");
    let theirs = c.pods().get("theirs").await.unwrap();
    assert_eq!(theirs.spec.unwrap().node_name, None);
    assert!(
        theirs
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .is_empty(),
        "no condition written"
    );
}

#[tokio::test]
async fn health_and_metrics_are_served_with_upstream_names() {
    let c = Cluster::start().await;
    c.create_node("n1", "2", "4Gi", json!({})).await;
    c.create_pod("p", "", "", json!({})).await;
    c.bound_node("p").await;
    c.create_pod("too-big", "64", "", json!({})).await;
    c.unschedulable_message("too-big").await;
    let addr = c.scheduler.as_ref().unwrap().1.serving_addr.unwrap();
    // curl runs as a child process, awaited, so the in-process server keeps serving.
    let get = |path: &str| {
        let url = format!("https://{addr}{path}");
        async move {
            let out = tokio::process::Command::new("curl")
                .args(["-sk", "--max-time", "10", &url])
                .output()
                .await
                .expect("curl");
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    assert_eq!(get("/healthz").await, "ok");
    assert_eq!(get("/readyz").await, "ok");
    let metrics = wait_until(TIMEOUT, "metrics show both attempts", || {
        let m = get("/metrics");
        async move {
            let m = m.await;
            (m.contains(r#"scheduler_schedule_attempts_total{profile="default-scheduler",result="scheduled"} 1"#)
                && m.contains(r#"scheduler_schedule_attempts_total{profile="default-scheduler",result="unschedulable"}"#))
            .then_some(m)
        }
    })
    .await;
    assert!(
        metrics.contains(r#"scheduler_pending_pods{queue="unschedulable"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("scheduler_scheduling_attempt_duration_seconds_bucket"));
    assert!(metrics.contains("scheduler_preemption_attempts_total 1"));
}

#[tokio::test]
async fn only_the_leader_binds_and_a_successor_takes_over_when_it_dies() {
    use component_base::leader_election::LeaderElectionConfig;
    use scheduler::app::{self, Config};

    let c = Cluster::start_without_scheduler().await;
    c.create_node("n1", "8", "16Gi", json!({})).await;
    let start = |identity: &'static str| {
        let client = c.client.clone();
        async move {
            let (trigger, shutdown) = component_base::shutdown::channel();
            let config = Config {
                client,
                configuration: configuration(""),
                leader_election: Some(LeaderElectionConfig {
                    lease_name: "kube-scheduler".into(),
                    lease_namespace: "kube-system".into(),
                    identity: identity.into(),
                    lease_duration: Duration::from_secs(3),
                    renew_deadline: Duration::from_secs(2),
                    retry_period: Duration::from_millis(300),
                }),
                serving: None,
                registry: prometheus::Registry::new(),
                identity: identity.into(),
            };
            (trigger, app::start(config, shutdown).await.unwrap())
        }
    };
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-system");
    let holder = || {
        let leases = leases.clone();
        async move {
            leases
                .get("kube-scheduler")
                .await
                .ok()?
                .spec?
                .holder_identity
        }
    };
    let (first_trigger, first) = start("first").await;
    wait_until(TIMEOUT, "first holds the lease", || async {
        (holder().await.as_deref() == Some("first")).then_some(())
    })
    .await;
    let (_second_trigger, second) = start("second").await;

    c.create_pod("p1", "", "", json!({})).await;
    assert_eq!(c.bound_node("p1").await, "n1");
    assert_eq!(holder().await.as_deref(), Some("first"));
    let bound_by = c.event("p1", "Scheduled").await.reporting_instance;
    assert_eq!(bound_by.as_deref(), Some("first"), "only the leader binds");
    assert!(!second.task.is_finished());

    // The leader dies without releasing its lease: the task is aborted, renewals stop.
    first.task.abort();
    drop(first_trigger);
    let died = std::time::Instant::now();
    wait_until(
        Duration::from_secs(15),
        "second takes the lease",
        || async { (holder().await.as_deref() == Some("second")).then_some(()) },
    )
    .await;
    // Within the lease duration after the last renewal (plus a retry period of slack).
    assert!(
        died.elapsed() < Duration::from_secs(3) + Duration::from_secs(2),
        "hand-over took {:?}",
        died.elapsed()
    );
    c.create_pod("p2", "", "", json!({})).await;
    assert_eq!(c.bound_node("p2").await, "n1");
    let bound_by = c.event("p2", "Scheduled").await.reporting_instance;
    assert_eq!(bound_by.as_deref(), Some("second"));
}
