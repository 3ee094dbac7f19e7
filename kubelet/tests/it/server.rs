//! The kubelet port (10250) over HTTPS: /healthz, /pods, container logs (tail,
//! timestamps, follow, previous) and exec over WebSocket (v4.channel.k8s.io) spliced to
//! containerd's streaming server.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;

use crate::common::{phase, wait_until, TestNode, TIMEOUT};

/// Accepts the kubelet's self-signed certificate (tests only).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// An HTTP/1.1 connection to the kubelet port.
async fn connect(node: &TestNode) -> Sender {
    let addr = node.kubelet.as_ref().unwrap().1.serving_addr.unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender
}

async fn get(node: &TestNode, path: &str) -> (u16, String) {
    let mut sender = connect(node).await;
    let req = http::Request::get(path)
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Runs `command` through /exec over WebSocket: (stdout, status channel text).
async fn exec_websocket(node: &TestNode, pod: &str, command: &[&str]) -> (String, String) {
    let mut sender = connect(node).await;
    let mut path = format!("/exec/default/{pod}/main?output=1&error=1");
    for c in command {
        path.push_str("&command=");
        path.push_str(c);
    }
    let req = http::Request::get(path)
        .header("host", "localhost")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-protocol", "v4.channel.k8s.io")
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 101, "{:?}", resp.headers());
    assert_eq!(
        resp.headers()["sec-websocket-protocol"],
        "v4.channel.k8s.io"
    );
    let mut io = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    let (mut stdout, mut status) = (String::new(), String::new());
    let read = async {
        loop {
            let mut head = [0u8; 2];
            if io.read_exact(&mut head).await.is_err() {
                break;
            }
            let opcode = head[0] & 0x0f;
            let mut len = u64::from(head[1] & 0x7f);
            if len == 126 {
                let mut ext = [0u8; 2];
                io.read_exact(&mut ext).await.unwrap();
                len = u64::from(u16::from_be_bytes(ext));
            } else if len == 127 {
                let mut ext = [0u8; 8];
                io.read_exact(&mut ext).await.unwrap();
                len = u64::from_be_bytes(ext);
            }
            let mut payload = vec![0u8; usize::try_from(len).unwrap()];
            io.read_exact(&mut payload).await.unwrap();
            if opcode == 0x8 {
                break;
            }
            if let Some((channel, data)) = payload.split_first() {
                let text = String::from_utf8_lossy(data);
                match channel {
                    1 => stdout.push_str(&text),
                    3 => status.push_str(&text),
                    _ => {}
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("exec stream ends");
    (stdout, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_port_serves_logs_pods_and_exec() {
    let node = TestNode::start().await;
    node.create_pod(
        "talker",
        serde_json::json!({"containers": [{"name": "main", "image": "busybox:1.35",
            "command": ["sh", "-c", "echo one; echo two; echo three; exec sleep 3600"]}]}),
    )
    .await;
    node.create_pod(
        "ticker",
        serde_json::json!({"containers": [{"name": "main", "image": "busybox:1.35",
            "command": ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"]}]}),
    )
    .await;
    node.create_pod(
        "crasher",
        serde_json::json!({"containers": [{"name": "main", "image": "busybox:1.35",
            "command": ["sh", "-c", "echo bye; exit 3"]}]}),
    )
    .await;
    node.wait_pod("talker", "pod Running", |p| phase(p) == "Running")
        .await;
    node.wait_pod("ticker", "pod Running", |p| phase(p) == "Running")
        .await;

    assert_eq!(get(&node, "/healthz").await, (200, "ok".to_owned()));
    let (status, pods) = get(&node, "/pods").await;
    assert_eq!(status, 200);
    let pods: serde_json::Value = serde_json::from_str(&pods).unwrap();
    assert_eq!(pods["kind"], "PodList");
    let names: Vec<&str> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    assert!(
        names.contains(&"talker") && names.contains(&"ticker"),
        "{names:?}"
    );

    let logs = wait_until(TIMEOUT, "all three lines logged", || async {
        let (status, body) = get(&node, "/containerLogs/default/talker/main").await;
        (status == 200 && body == "one\ntwo\nthree\n").then_some(body)
    })
    .await;
    assert_eq!(logs, "one\ntwo\nthree\n");
    let (_, tail) = get(&node, "/containerLogs/default/talker/main?tailLines=1").await;
    assert_eq!(tail, "three\n");
    let (_, stamped) = get(&node, "/containerLogs/default/talker/main?timestamps=true").await;
    for line in stamped.lines() {
        let (time, text) = line.split_once(' ').unwrap();
        assert!(time.parse::<jiff::Timestamp>().is_ok(), "{line}");
        assert!(["one", "two", "three"].contains(&text), "{line}");
    }
    let (status, _) = get(&node, "/containerLogs/default/nobody/main").await;
    assert_eq!(status, 404);
    let (status, body) = get(&node, "/containerLogs/default/talker/main?previous=true").await;
    assert_eq!(status, 400, "{body}");

    // Following: new lines arrive on the open response.
    let mut sender = connect(&node).await;
    let req = http::Request::get("/containerLogs/default/ticker/main?follow=true&tailLines=0")
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut body = resp.into_body();
    let mut seen = String::new();
    let follow = async {
        while seen.matches("tick").count() < 3 {
            let frame = body.frame().await.expect("stream open").unwrap();
            if let Ok(data) = frame.into_data() {
                seen.push_str(&String::from_utf8_lossy(&data));
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), follow)
        .await
        .expect("followed lines arrive");
    assert!(seen.starts_with("tick "), "{seen}");

    // The previous instance's logs of a restarted container.
    node.wait_pod("crasher", "a restart", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .is_some_and(|c| c.restart_count > 0)
    })
    .await;
    let (status, previous) = get(&node, "/containerLogs/default/crasher/main?previous=true").await;
    assert_eq!((status, previous.as_str()), (200, "bye\n"));

    // Exec over WebSocket.
    let (stdout, status) = exec_websocket(&node, "talker", &["echo", "hello"]).await;
    assert_eq!(stdout, "hello\n");
    assert!(status.contains("Success"), "{status}");
    let (stdout, status) = exec_websocket(&node, "talker", &["sh", "-c", "exit%207"]).await;
    assert_eq!(stdout, "");
    assert!(
        status.contains("NonZeroExitCode") && status.contains("7"),
        "{status}"
    );
}
