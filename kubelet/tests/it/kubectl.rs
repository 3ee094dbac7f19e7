//! kubectl through the apiserver to the real kubelet and containerd: `kubectl logs`,
//! `kubectl exec`, `kubectl port-forward` and `kubectl attach`, as a user runs them (kubectl 1.32 tries
//! WebSocket first and falls back to SPDY; the apiserver and the kubelet pass the
//! upgrade through to containerd's streaming server).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};

use crate::common::{kubectl_logs_and_exec_reach, phase, pod_condition, TestNode, TIMEOUT};

/// Kills the `kubectl port-forward` when the test ends, passed or not.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_exec_and_port_forward_reach_the_container() {
    let node = TestNode::start().await;
    node.create_pod(
        "talk",
        serde_json::json!({"containers": [{
            "name": "main", "image": "busybox:1.35",
            "command": ["sh", "-c",
                "mkdir -p /www && echo pong > /www/index.html && echo hello-from-pod && exec httpd -f -p 8080 -h /www"],
            "ports": [{"containerPort": 8080}],
        }]}),
    )
    .await;
    node.wait_pod("talk", "pod Running and Ready", |p| {
        phase(p) == "Running" && pod_condition(p, "Ready")
    })
    .await;

    kubectl_logs_and_exec_reach(&node).await;
    // stdin goes up and comes back.
    let out = node
        .api
        .kubectl_stdin(&["exec", "-i", "talk", "--", "cat"], Some("piped\n"));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "piped\n");
    // A failing command's exit code reaches the user.
    let out = node
        .api
        .kubectl(&["exec", "talk", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");

    let child = Command::new(apiserver::testing::kubectl_binary())
        .arg("--kubeconfig")
        .arg(node.api.kubeconfig_path())
        .args([
            "port-forward",
            "pod/talk",
            ":8080",
            "--address",
            "127.0.0.1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl port-forward starts");
    let mut child = KillOnDrop(child);
    // "Forwarding from 127.0.0.1:PORT -> 8080". The reader is kept: kubectl writes a line
    // per connection, and would die of a closed pipe.
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        stdout.read_line(&mut line).map(|_| (line, stdout))
    });
    let (line, _stdout) = tokio::time::timeout(TIMEOUT, first)
        .await
        .expect("kubectl port-forward prints its port")
        .unwrap()
        .unwrap();
    let port: u16 = line
        .rsplit(" -> ")
        .nth(1)
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected port-forward output {line:?}"));
    let body = tokio::task::spawn_blocking(move || {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port))?;
        conn.set_read_timeout(Some(TIMEOUT))?;
        conn.write_all(b"GET / HTTP/1.0\r\nHost: talk\r\n\r\n")?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer)?;
        std::io::Result::Ok(answer)
    })
    .await
    .unwrap()
    .expect("a request through the forwarded port");
    assert!(
        body.starts_with("HTTP/1.") && body.contains("200"),
        "{body}"
    );
    assert!(body.ends_with("pong\n"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_attach_sends_stdin_and_streams_output() {
    let node = TestNode::start().await;
    node.create_pod(
        "listener",
        serde_json::json!({"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "busybox:1.35", "stdin": true, "stdinOnce": true,
            "command": ["sh", "-c", "read line; echo \"got:$line\""],
        }]}),
    )
    .await;
    node.wait_pod("listener", "pod Running", |p| phase(p) == "Running")
        .await;
    // The container blocks on its stdin until the attached client writes a line; the
    // stream ends when the container exits.
    let out = node
        .api
        .kubectl_stdin(&["attach", "-i", "listener"], Some("hello\n"));
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("got:hello"),
        "{out:?}"
    );
    node.wait_pod("listener", "pod Succeeded", |p| phase(p) == "Succeeded")
        .await;
}
