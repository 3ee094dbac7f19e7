//! The connect subresources through the real apiserver to a fake kubelet: `kubectl logs`
//! (tail, follow, previous), `kubectl exec` over the WebSocket upgrade, upstream's errors,
//! and raw upgrades through `nodes/proxy`.

use crate::common::{wait_until, TestApi, TOKEN};
use crate::fake_kubelet::{FakeKubelet, LINES, PREVIOUS};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Creates a Node whose kubelet is `addr`, as a kubelet registers itself.
async fn create_node(client: &kube::Client, name: &str, addr: SocketAddr) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": { "name": name },
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let status = json!({ "status": {
        "addresses": [{ "type": "InternalIP", "address": addr.ip().to_string() }],
        "daemonEndpoints": { "kubeletEndpoint": { "Port": addr.port() } },
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// Creates a pod with these containers, bound to `node` (or unscheduled).
async fn create_pod(client: &kube::Client, name: &str, containers: &[&str], node: Option<&str>) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let containers: Vec<Value> = containers
        .iter()
        .map(|c| json!({ "name": c, "image": "busybox" }))
        .collect();
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name },
        "spec": { "containers": containers },
    });
    if let Some(n) = node {
        pod["spec"]["nodeName"] = json!(n);
    }
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).unwrap(),
    )
    .await
    .unwrap();
}

/// Kills a kubectl child process when the test ends, even on failure.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_kubectl(api: &TestApi, args: &[&str]) -> ChildGuard {
    let child = std::process::Command::new(apiserver::testing::kubectl_binary())
        .env("KUBECONFIG", &api.kubeconfig)
        .env("HOME", api.dir.path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is installed");
    ChildGuard(child)
}

/// A raw HTTP/1.1 request to the apiserver (admin token), for upgrades kubectl does not
/// make; returns the response, whose upgrade can be awaited.
async fn raw_request(
    api: &TestApi,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> http::Response<hyper::body::Incoming> {
    let ca = std::fs::read(api.dir.path().join("certs/ca.crt")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(api.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, api.addr.to_string())
        .header(http::header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap()
}

async fn body_text(resp: http::Response<hyper::body::Incoming>) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The first global (non-loopback) IPv4 address of this host: upstream refuses to proxy
/// nodes/proxy to loopback addresses.
fn host_address() -> IpAddr {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("iproute2 is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .and_then(|ip| ip.parse().ok())
        .expect("this host has a global IPv4 address")
}

/// The next line kubectl printed, within a deadline.
async fn next(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(20), lines.recv())
        .await
        .expect("a log line within 20s")
        .expect("kubectl logs -f still running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_through_the_kubelet() {
    let api = TestApi::start().await;
    let client = api.client().await;
    let kubelet = FakeKubelet::start("127.0.0.1".parse().unwrap()).await;
    create_node(&client, "node-a", kubelet.addr).await;
    create_pod(&client, "web", &["app"], Some("node-a")).await;

    let out = api.kubectl_ok(&["logs", "web"]);
    assert_eq!(out.lines().collect::<Vec<_>>(), LINES);
    let seen = kubelet.seen("/containerLogs/");
    assert_eq!(seen[0].path, "/containerLogs/default/web/app");
    assert!(
        !seen[0].authorization,
        "the user's token must not reach the kubelet"
    );

    let out = api.kubectl_ok(&["logs", "web", "--tail=2"]);
    assert_eq!(out.lines().collect::<Vec<_>>(), &LINES[3..]);
    assert!(kubelet
        .seen("/containerLogs/")
        .last()
        .unwrap()
        .query
        .contains("tailLines=2"));

    let out = api.kubectl_ok(&["logs", "web", "-c", "app", "--previous"]);
    assert_eq!(out.trim_end(), PREVIOUS);
    assert!(kubelet
        .seen("/containerLogs/")
        .last()
        .unwrap()
        .query
        .contains("previous=true"));

    // -f: lines arrive while kubectl runs, one at a time.
    let mut follow = spawn_kubectl(&api, &["logs", "-f", "web"]);
    let stdout = follow.0.stdout.take().unwrap();
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    for expected in LINES {
        assert_eq!(next(&mut lines).await, *expected);
    }
    wait_until(Duration::from_secs(10), "the follow stream", || {
        let n = kubelet.follow.receiver_count();
        async move { (n > 0).then_some(()) }
    })
    .await;
    for i in 1..=3 {
        kubelet.follow.send(format!("live {i}")).unwrap();
        assert_eq!(next(&mut lines).await, format!("live {i}"));
    }
    assert!(kubelet
        .seen("/containerLogs/")
        .last()
        .unwrap()
        .query
        .contains("follow=true"));
    // When kubectl goes away, so does the stream to the kubelet.
    drop(follow);
    let follow_tx = kubelet.follow.clone();
    wait_until(
        Duration::from_secs(20),
        "the kubelet's stream to end",
        || {
            // A write is what tells a server its client is gone.
            let _ = follow_tx.send("after".to_string());
            let n = follow_tx.receiver_count();
            async move { (n == 0).then_some(()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_exec_errors_are_upstreams() {
    let api = TestApi::start().await;
    let client = api.client().await;
    let kubelet = FakeKubelet::start("127.0.0.1".parse().unwrap()).await;
    create_node(&client, "node-a", kubelet.addr).await;
    create_pod(&client, "web", &["app"], Some("node-a")).await;
    create_pod(&client, "two", &["a", "b"], Some("node-a")).await;
    create_pod(&client, "pending", &["app"], None).await;

    // Unknown pod, unknown container.
    let out = api.kubectl(&["logs", "missing"]);
    assert!(
        stderr(&out).contains("pods \"missing\" not found"),
        "{}",
        stderr(&out)
    );
    let out = api.kubectl(&["logs", "web", "-c", "nope"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("container nope is not valid for pod web"),
        "{}",
        stderr(&out)
    );
    // Several containers and none named: the apiserver refuses (kubectl itself defaults
    // to the first container, so ask as a raw client does).
    let out = api.kubectl(&["get", "--raw", "/api/v1/namespaces/default/pods/two/log"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains("a container name must be specified for pod two, choose one of: [a b]"),
        "{}",
        stderr(&out)
    );
    let out = api.kubectl_ok(&["logs", "two"]);
    assert_eq!(out.lines().count(), LINES.len());
    assert_eq!(
        kubelet.seen("/containerLogs/").last().unwrap().path,
        "/containerLogs/default/two/a"
    );
    // Unscheduled: logs are empty (upstream's nil location), exec is refused.
    let out = api.kubectl_ok(&["logs", "pending"]);
    assert_eq!(out, "");
    let out = api.kubectl(&["exec", "pending", "--", "echo", "hi"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("pod pending does not have a host assigned"),
        "{}",
        stderr(&out)
    );
    // Bad log options are PodLogOptions validation errors.
    let out = api.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/web/log?tailLines=-1",
    ]);
    assert!(
        stderr(&out).contains("PodLogOptions \"web\" is invalid"),
        "{}",
        stderr(&out)
    );
    // exec without an upgrade is a 400.
    let resp = raw_request(
        &api,
        "POST",
        "/api/v1/namespaces/default/pods/web/exec?command=true&stdout=true",
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(body_text(resp).await.contains("Upgrade request required"));

    // An unreachable kubelet: upstream's 500s.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    create_node(&client, "node-dead", dead_addr).await;
    create_pod(&client, "orphan", &["app"], Some("node-dead")).await;
    let out = api.kubectl(&["logs", "orphan"]);
    assert!(!out.status.success());
    let expected = format!(
        "Get \"https://{dead_addr}/containerLogs/default/orphan/app\": dial tcp {dead_addr}"
    );
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
    let resp = raw_request(
        &api,
        "GET",
        "/api/v1/namespaces/default/pods/orphan/exec?command=true&stdout=true",
        WEBSOCKET,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let status: Value = serde_json::from_str(&body_text(resp).await).unwrap();
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("error dialing backend: dial tcp"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_over_websocket() {
    let api = TestApi::start().await;
    let client = api.client().await;
    let kubelet = FakeKubelet::start("127.0.0.1".parse().unwrap()).await;
    create_node(&client, "node-a", kubelet.addr).await;
    create_pod(&client, "web", &["app", "refuse"], Some("node-a")).await;

    let out = api.kubectl_ok(&["exec", "web", "-c", "app", "--", "echo", "hi"]);
    assert_eq!(out, "hi\n");
    let seen = kubelet.seen("/exec/");
    assert_eq!(
        seen.len(),
        1,
        "kubectl upgraded with its first (WebSocket) try: {seen:?}"
    );
    assert_eq!(seen[0].path, "/exec/default/web/app");
    assert_eq!(seen[0].query, "output=1&error=1&command=echo&command=hi");
    assert!(!seen[0].authorization);
    assert_eq!(seen[0].forwarded_for, "127.0.0.1");

    // stdin travels up the spliced connection and back.
    let out = api.kubectl_stdin(
        &["exec", "-i", "web", "-c", "app", "--", "cat"],
        Some("hello\nthrough the apiserver\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello\nthrough the apiserver\n"
    );
    assert!(kubelet
        .seen("/exec/")
        .last()
        .unwrap()
        .query
        .starts_with("input=1&output=1&error=1"));

    // A failing command's exit status travels back on channel 3.
    let out = api.kubectl(&["exec", "web", "-c", "app", "--", "false"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    // The kubelet's 400 on an upgrade reaches the client as a 400 (kubectl falls back to
    // SPDY, which the fake refuses too).
    let resp = raw_request(
        &api,
        "GET",
        "/api/v1/namespaces/default/pods/web/exec?container=refuse&command=true&stdout=true",
        WEBSOCKET,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let status: Value = serde_json::from_str(&body_text(resp).await).unwrap();
    assert_eq!(
        status["message"],
        "fake kubelet: no websocket upgrade for container refuse"
    );
    let out = api.kubectl(&["exec", "web", "-c", "refuse", "--", "echo", "hi"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("fake kubelet: no SPDY/3.1 upgrade for container refuse"),
        "{}",
        stderr(&out)
    );
    let attempts: Vec<_> = kubelet
        .seen("/exec/default/web/refuse")
        .into_iter()
        .collect();
    assert!(attempts.len() >= 3, "WebSocket then SPDY: {attempts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_proxy_passes_requests_and_upgrades() {
    let api = TestApi::start().await;
    let client = api.client().await;
    let kubelet = FakeKubelet::start(host_address()).await;
    create_node(&client, "node-b", kubelet.addr).await;

    let out = api.kubectl_ok(&["get", "--raw", "/api/v1/nodes/node-b/proxy/healthz"]);
    assert_eq!(out, "ok");
    let out = api.kubectl(&["get", "--raw", "/api/v1/nodes/node-b/proxy/nothing-here"]);
    assert!(!out.status.success());

    // A raw upgrade is spliced both ways.
    let resp = raw_request(
        &api,
        "GET",
        "/api/v1/nodes/node-b/proxy/upgrade-echo",
        &[("connection", "Upgrade"), ("upgrade", "pikube-echo")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(resp.headers()["upgrade"], "pikube-echo");
    let upgraded = hyper::upgrade::on(resp).await.unwrap();
    let mut io = TokioIo::new(upgraded);
    for word in ["ping", "pong and more"] {
        io.write_all(word.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; word.len()];
        tokio::time::timeout(Duration::from_secs(10), io.read_exact(&mut buf))
            .await
            .expect("the echo within 10s")
            .unwrap();
        assert_eq!(buf, word.as_bytes());
    }
    let seen = kubelet.seen("/upgrade-echo");
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].authorization);

    // A loopback kubelet is not proxied to, as upstream.
    create_node(&client, "node-lo", "127.0.0.1:10250".parse().unwrap()).await;
    let out = api.kubectl(&["get", "--raw", "/api/v1/nodes/node-lo/proxy/healthz"]);
    assert!(
        stderr(&out).contains("address not allowed"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_lists_the_connect_subresources() {
    let api = TestApi::start().await;
    let out = api.kubectl_ok(&["get", "--raw", "/api/v1"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    let find = |name: &str| {
        list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .clone()
    };
    assert_eq!(find("pods/log")["verbs"], json!(["get"]));
    assert_eq!(find("pods/exec")["verbs"], json!(["create", "get"]));
    assert_eq!(find("pods/exec")["kind"], "PodExecOptions");
    assert_eq!(find("pods/attach")["verbs"], json!(["create", "get"]));
    assert_eq!(find("pods/portforward")["kind"], "PodPortForwardOptions");
    let proxy_verbs = json!(["create", "delete", "get", "patch", "update"]);
    assert_eq!(find("pods/proxy")["verbs"], proxy_verbs);
    assert_eq!(find("nodes/proxy")["kind"], "NodeProxyOptions");
    assert_eq!(find("services/proxy")["kind"], "ServiceProxyOptions");
}

/// A WebSocket upgrade request's headers for exec/attach (`v5.channel.k8s.io`).
const WEBSOCKET: &[(&str, &str)] = &[
    ("connection", "Upgrade"),
    ("upgrade", "websocket"),
    ("sec-websocket-version", "13"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("sec-websocket-protocol", "v5.channel.k8s.io"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_and_port_forward_reach_the_kubelet() {
    use tokio_tungstenite::tungstenite::{protocol::Role, Message};
    let api = TestApi::start().await;
    let client = api.client().await;
    let kubelet = FakeKubelet::start("127.0.0.1".parse().unwrap()).await;
    create_node(&client, "node-a", kubelet.addr).await;
    create_pod(&client, "web", &["app"], Some("node-a")).await;

    // attach: a WebSocket spliced to the kubelet's /attach; the fake has no command to
    // run, so its status on channel 3 is a failure.
    let resp = raw_request(
        &api,
        "GET",
        "/api/v1/namespaces/default/pods/web/attach?stdout=true&stderr=true",
        WEBSOCKET,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        resp.headers()["sec-websocket-protocol"],
        "v5.channel.k8s.io"
    );
    let upgraded = hyper::upgrade::on(resp).await.unwrap();
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Client,
        None,
    )
    .await;
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        use futures::StreamExt;
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Binary(b) = m {
                if b.first() == Some(&3) {
                    return String::from_utf8_lossy(&b[1..]).into_owned();
                }
            }
        }
        panic!("no status on channel 3");
    })
    .await
    .expect("a status within 10s");
    assert!(status.contains("\"status\":\"Failure\""), "{status}");
    let seen = kubelet.seen("/attach/");
    assert_eq!(seen[0].path, "/attach/default/web/app");
    assert_eq!(seen[0].query, "output=1&error=1");

    // port-forward: the ports become the kubelet's `port` parameter; the fake has no
    // port-forward endpoint, and its 404 reaches the client as it is.
    let resp = raw_request(
        &api,
        "POST",
        "/api/v1/namespaces/default/pods/web/portforward?ports=8080&ports=9090",
        &[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-protocol", "SPDY/3.1+portforward.k8s.io"),
        ],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(body_text(resp).await, "404 page not found");
    let seen = kubelet.seen("/portForward/");
    assert_eq!(seen[0].path, "/portForward/default/web");
    assert_eq!(seen[0].query, "port=8080%2C9090");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_and_service_proxy_reach_the_pod() {
    let api = TestApi::start().await;
    let client = api.client().await;
    let ip = host_address();
    // The fake kubelet's HTTPS server stands in for a pod serving on its IP.
    let backend = FakeKubelet::start(ip).await;
    let port = backend.addr.port();
    create_pod(&client, "web", &["app"], Some("node-x")).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let status =
        json!({ "status": { "podIP": ip.to_string(), "podIPs": [{ "ip": ip.to_string() }] } });
    pods.patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();

    let path = format!("/api/v1/namespaces/default/pods/https:web:{port}/proxy/healthz");
    assert_eq!(api.kubectl_ok(&["get", "--raw", &path]), "ok");
    let seen = backend.seen("/healthz");
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].authorization);
    assert_eq!(seen[0].forwarded_for, "127.0.0.1");

    // A pod on a loopback address is not proxied to.
    create_pod(&client, "lo", &["app"], Some("node-x")).await;
    let status = json!({ "status": { "podIP": "127.0.0.1", "podIPs": [{ "ip": "127.0.0.1" }] } });
    pods.patch_status("lo", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let out = api.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/https:lo:443/proxy/healthz",
    ]);
    assert!(
        stderr(&out).contains("address not allowed"),
        "{}",
        stderr(&out)
    );

    // services/proxy: a ready endpoint that is the pod's IP.
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(client.clone(), "default");
    let svc = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": { "name": "websvc" },
        "spec": { "ports": [{ "name": "https", "port": 443 }] },
    });
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(svc).unwrap(),
        )
        .await
        .unwrap();
    let endpoints: Api<k8s_openapi::api::core::v1::Endpoints> =
        Api::namespaced(client.clone(), "default");
    let eps = json!({
        "apiVersion": "v1", "kind": "Endpoints", "metadata": { "name": "websvc" },
        "subsets": [{
            "addresses": [{ "ip": ip.to_string(), "targetRef": { "kind": "Pod", "name": "web", "namespace": "default" } }],
            "ports": [{ "name": "https", "port": port }],
        }],
    });
    endpoints
        .create(
            &PostParams::default(),
            &serde_json::from_value(eps).unwrap(),
        )
        .await
        .unwrap();
    let out = api.kubectl_ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/services/https:websvc:443/proxy/healthz",
    ]);
    assert_eq!(out, "ok");
    assert_eq!(backend.seen("/healthz").len(), 2);
    // A port the service does not have, and a service without endpoints: 503s.
    let out = api.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/services/https:websvc:8443/proxy/",
    ]);
    assert!(
        stderr(&out).contains("no service port 8443 found for service \"websvc\""),
        "{}",
        stderr(&out)
    );
}
