//! Container lifecycle hooks on a real containerd: a postStart exec writes a file the
//! container then sees and a postStart httpGet reaches its URL; a failing postStart
//! restarts the container with a FailedPostStartHook event; a preStop exec runs before
//! the container gets SIGTERM, a preStop sleep delays it by its seconds, and a preStop
//! longer than the grace period is cut off at the grace period.

use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{phase, wait_until, TestNode, TIMEOUT};

fn container_id(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .container_id
        .clone()
        .unwrap()
        .trim_start_matches("containerd://")
        .to_owned()
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .map_or(0, |c| c.restart_count)
}

/// Seconds since boot, the clock both the host and the containers read
/// (`/proc/uptime`, no time namespaces here).
fn uptime() -> f64 {
    parse_uptime(&std::fs::read_to_string("/proc/uptime").unwrap())
}

fn parse_uptime(text: &str) -> f64 {
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// A main process that records SIGTERM's arrival (`term <uptime>`) in /data/log, and
/// exits.
const TRAPS_TERM: &str =
    "trap 'echo term $(cut -d\" \" -f1 /proc/uptime) >> /data/log; exit 0' TERM; \
     echo up >> /data/log; while true; do sleep 1 & wait $!; done";

/// The lines of a pod's log file under the test's host directory.
fn log_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// One HTTP request read by a loopback server: its request line and headers.
async fn one_request(listener: &tokio::net::TcpListener) -> String {
    let (mut conn, _) = listener.accept().await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk).await.unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_start_hooks_run_and_a_failing_one_restarts_the_container() {
    let node = TestNode::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    node.create_pod(
        "hooked",
        serde_json::json!({"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": "busybox:1.35", "command": ["sleep", "3600"],
            "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo from-post-start > /tmp/hook"]}}}
        }]}),
    )
    .await;
    node.create_pod(
        "called",
        serde_json::json!({"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": "busybox:1.35", "command": ["sleep", "3600"],
            "lifecycle": {"postStart": {"httpGet": {
                "host": "127.0.0.1", "port": port, "path": "/started",
                "httpHeaders": [{"name": "X-Hook", "value": "post-start"}]}}}
        }]}),
    )
    .await;
    node.create_pod(
        "unlucky",
        serde_json::json!({"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": "busybox:1.35", "command": ["sleep", "3600"],
            "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo nope; exit 3"]}}}
        }]}),
    )
    .await;

    // The httpGet hook reached the loopback server with its path and header.
    let request = tokio::time::timeout(TIMEOUT, one_request(&listener))
        .await
        .expect("the postStart httpGet arrives");
    assert!(
        request.starts_with("GET /started HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(request.contains("x-hook: post-start"), "{request}");
    assert!(
        request
            .to_lowercase()
            .contains("user-agent: kube-lifecycle/"),
        "{request}"
    );
    node.wait_pod("called", "pod Running", |p| phase(p) == "Running")
        .await;

    // What the exec hook wrote is there in the container.
    let pod = node
        .wait_pod("hooked", "pod Running", |p| phase(p) == "Running")
        .await;
    assert_eq!(
        node.exec_in(&container_id(&pod), "cat /tmp/hook").await,
        "from-post-start"
    );
    assert_eq!(restarts(&pod), 0);

    // The failing hook kills its container, which restarts per restartPolicy Always.
    let events = node
        .wait_events("unlucky", &["FailedPostStartHook", "Killing"])
        .await;
    let failed = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("FailedPostStartHook"))
        .unwrap();
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    let message = failed.message.as_deref().unwrap_or_default();
    assert!(
        message.contains("Exec lifecycle hook") && message.contains("exit code 3"),
        "{message}"
    );
    assert!(message.contains("nope"), "{message}");
    assert!(events.iter().any(|e| e.reason.as_deref() == Some("Killing")
        && e.message.as_deref() == Some("FailedPostStartHook")));
    let pod = node
        .wait_pod("unlucky", "a restart after the failed hook", |p| {
            restarts(p) >= 1
        })
        .await;
    let last = pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .last_state
        .clone()
        .unwrap();
    assert!(last.terminated.is_some(), "{last:?}");
    // The healthy pod was left alone.
    let hooked = node
        .wait_pod("hooked", "hooked still Running", |p| phase(p) == "Running")
        .await;
    assert_eq!(restarts(&hooked), 0);
}

/// Deletes the pod and waits until the kubelet removed it from the API.
async fn delete_and_wait_gone(node: &TestNode, name: &str) {
    let pods: Api<Pod> = Api::namespaced(node.client.clone(), "default");
    pods.delete(name, &DeleteParams::default()).await.unwrap();
    wait_until(TIMEOUT, "the deleted pod gone from the API", || {
        let pods = pods.clone();
        async move { pods.get_opt(name).await.unwrap().is_none().then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_stop_hooks_run_before_sigterm_within_the_grace_period() {
    let node = TestNode::start().await;
    let dirs = tempfile::tempdir().unwrap();
    let dir = |name: &str| dirs.path().join(name);
    let pod = |name: &str, grace: i64, pre_stop: serde_json::Value| {
        serde_json::json!({"terminationGracePeriodSeconds": grace,
        "volumes": [{"name": "data", "hostPath": {
            "path": dir(name).to_string_lossy(), "type": "DirectoryOrCreate"}}],
        "containers": [{
            "name": "main", "image": "busybox:1.35", "command": ["sh", "-c", TRAPS_TERM],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            "lifecycle": {"preStop": pre_stop}
        }]})
    };
    node.create_pod(
        "exec-first",
        pod(
            "exec-first",
            30,
            serde_json::json!({"exec": {"command": ["sh", "-c", "echo pre-stop >> /data/log"]}}),
        ),
    )
    .await;
    node.create_pod(
        "sleepy",
        pod("sleepy", 30, serde_json::json!({"sleep": {"seconds": 3}})),
    )
    .await;
    node.create_pod(
        "overrun",
        pod("overrun", 3, serde_json::json!({"sleep": {"seconds": 60}})),
    )
    .await;
    node.create_pod(
        "failing",
        pod(
            "failing",
            30,
            serde_json::json!({"exec": {"command": ["sh", "-c", "exit 1"]}}),
        ),
    )
    .await;
    for name in ["exec-first", "sleepy", "overrun", "failing"] {
        node.wait_pod(name, "pod Running", |p| phase(p) == "Running")
            .await;
        wait_until(TIMEOUT, "the main process up", || {
            let lines = log_lines(&dir(name));
            async move { lines.contains(&"up".to_owned()).then_some(()) }
        })
        .await;
    }

    // The exec hook wrote its line before SIGTERM arrived.
    delete_and_wait_gone(&node, "exec-first").await;
    let lines = log_lines(&dir("exec-first"));
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[..2], ["up", "pre-stop"], "{lines:?}");
    assert!(lines[2].starts_with("term "), "{lines:?}");

    // A 3 s sleep hook: SIGTERM comes 3 s after the deletion, not at once.
    let deleted_at = uptime();
    delete_and_wait_gone(&node, "sleepy").await;
    let lines = log_lines(&dir("sleepy"));
    let term = lines
        .iter()
        .find_map(|l| l.strip_prefix("term "))
        .unwrap_or_else(|| panic!("no SIGTERM recorded: {lines:?}"));
    let after = parse_uptime(term) - deleted_at;
    assert!(
        (3.0..15.0).contains(&after),
        "SIGTERM {after:.2}s after the delete"
    );

    // A 60 s hook with a 3 s grace period: cut off, SIGTERM after about 3 s, and the pod
    // is gone long before the hook would have ended.
    let deleted_at = uptime();
    delete_and_wait_gone(&node, "overrun").await;
    let gone_after = uptime() - deleted_at;
    let lines = log_lines(&dir("overrun"));
    let term = lines
        .iter()
        .find_map(|l| l.strip_prefix("term "))
        .unwrap_or_else(|| panic!("no SIGTERM recorded: {lines:?}"));
    let after = parse_uptime(term) - deleted_at;
    assert!(
        (3.0..10.0).contains(&after),
        "SIGTERM {after:.2}s after the delete"
    );
    assert!(
        gone_after < 30.0,
        "pod gone {gone_after:.2}s after the delete"
    );

    // A failing hook is recorded, and the stop goes on.
    delete_and_wait_gone(&node, "failing").await;
    let lines = log_lines(&dir("failing"));
    assert!(lines.iter().any(|l| l.starts_with("term ")), "{lines:?}");
    let events = node
        .wait_events("failing", &["Killing", "FailedPreStopHook"])
        .await;
    let failed = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("FailedPreStopHook"))
        .unwrap();
    assert_eq!(failed.type_.as_deref(), Some("Warning"));

    // The other hooks did not fail.
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(node.client.clone(), "default");
    let failed: Vec<_> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("FailedPreStopHook"))
        .filter_map(|e| e.involved_object.name)
        .collect();
    assert_eq!(failed, ["failing"]);
}
