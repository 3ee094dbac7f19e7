//! Probes against real containers: an httpGet readiness probe holds Ready back until the
//! server answers (a passing tcpSocket liveness probe changes nothing), and a failing
//! exec liveness probe restarts its container.

use k8s_openapi::api::core::v1::Pod;

use crate::common::{phase, pod_condition, TestNode};

fn first_status(p: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    p.status.as_ref()?.container_statuses.as_ref()?.first()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_gates_ready_and_liveness_restarts() {
    let node = TestNode::start().await;
    node.create_pod(
        "web",
        serde_json::json!({"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": "busybox:1.35",
            "command": ["sh", "-c", "mkdir -p /www; echo ok > /www/index.html; sleep 3; exec httpd -f -p 8080 -h /www"],
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"}, "periodSeconds": 1},
            "livenessProbe": {"tcpSocket": {"port": 8080}, "initialDelaySeconds": 5, "periodSeconds": 1}
        }]}),
    )
    .await;
    node.create_pod(
        "sickly",
        serde_json::json!({"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": "busybox:1.35",
            "command": ["sh", "-c", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; exec sleep 3600"],
            "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]},
                "periodSeconds": 1, "failureThreshold": 1}
        }]}),
    )
    .await;

    // Running, but not Ready until the server answers.
    let pod = node
        .wait_pod("web", "pod Running", |p| phase(p) == "Running")
        .await;
    assert!(!pod_condition(&pod, "Ready"), "{:?}", pod.status);
    assert!(!first_status(&pod).unwrap().ready);
    let pod = node
        .wait_pod("web", "pod Ready", |p| pod_condition(p, "Ready"))
        .await;
    let cs = first_status(&pod).unwrap();
    assert!(cs.ready);
    assert_eq!(cs.restart_count, 0);

    let pod = node
        .wait_pod("sickly", "a liveness restart", |p| {
            first_status(p).is_some_and(|c| c.restart_count >= 1)
        })
        .await;
    let cs = first_status(&pod).unwrap();
    assert!(
        cs.last_state.as_ref().unwrap().terminated.is_some(),
        "{cs:?}"
    );

    // The healthy pod was left alone meanwhile.
    let web = node
        .wait_pod("web", "web still Ready", |p| pod_condition(p, "Ready"))
        .await;
    assert_eq!(first_status(&web).unwrap().restart_count, 0);
}
