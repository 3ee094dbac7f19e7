//! A test-only HTTPS server standing in for a node's kubelet: `/containerLogs` (lines,
//! `tailLines`, `previous`, and `follow` that streams what the test pushes until the client
//! goes away), `/exec` and `/attach` over WebSocket `v5.channel.k8s.io` (stdout echo, exit
//! status on channel 3; `cat` echoes stdin; an SPDY upgrade or the container `refuse` gets a 400), a raw
//! `pikube-echo` upgrade at `/upgrade-echo` and `/healthz`. It records every request.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{self, protocol::Role, Message};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The log lines of every container.
pub const LINES: &[&str] = &["line 1", "line 2", "line 3", "line 4", "line 5"];
/// What `previous=true` returns.
pub const PREVIOUS: &str = "previous instance";

/// One request the fake saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub query: String,
    pub authorization: bool,
    pub forwarded_for: String,
}

pub struct FakeKubelet {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Lines pushed to every following log stream.
    pub follow: tokio::sync::broadcast::Sender<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeKubelet {
    pub async fn start(ip: IpAddr) -> FakeKubelet {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec![ip.to_string()]).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let follow = tokio::sync::broadcast::channel(64).0;
        let state = (seen.clone(), follow.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let state = state.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(req, state.0, state.1)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        FakeKubelet {
            addr,
            seen,
            follow,
            task,
        }
    }

    /// The requests seen so far whose path starts with `prefix`.
    pub fn seen(&self, prefix: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .iter()
            .filter(|s| s.path.starts_with(prefix))
            .cloned()
            .collect()
    }
}

fn full(status: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(text.into()).boxed_unsync());
    *r.status_mut() = status;
    r
}

fn query_values(query: &str, key: &str) -> Vec<String> {
    form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .collect()
}

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> &'a str {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn handle(
    mut req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    follow: tokio::sync::broadcast::Sender<String>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    seen.lock().push(Seen {
        path: path.clone(),
        query: query.clone(),
        authorization: req.headers().contains_key(http::header::AUTHORIZATION),
        forwarded_for: header(&req, "x-forwarded-for").to_string(),
    });
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["healthz"] => full(StatusCode::OK, "ok"),
        ["containerLogs", _ns, _pod, _container] => {
            if query_values(&query, "previous").first().map(String::as_str) == Some("true") {
                return full(StatusCode::OK, format!("{PREVIOUS}\n"));
            }
            let tail = query_values(&query, "tailLines")
                .first()
                .and_then(|t| t.parse::<usize>().ok())
                .unwrap_or(LINES.len());
            let first = LINES.len().saturating_sub(tail);
            let text: String = LINES[first..].iter().map(|l| format!("{l}\n")).collect();
            if query_values(&query, "follow").first().map(String::as_str) != Some("true") {
                return full(StatusCode::OK, text);
            }
            // Follow: what exists, then each pushed line, until the client goes away (a
            // failed write drops this stream and so its receiver).
            let rx = follow.subscribe();
            let live = futures::stream::unfold(rx, |mut rx| async move {
                loop {
                    match rx.recv().await {
                        Ok(line) => return Some((Bytes::from(format!("{line}\n")), rx)),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => return None,
                    }
                }
            });
            let stream = futures::stream::once(async move { Bytes::from(text) })
                .chain(live)
                .map(|b| Ok::<_, Infallible>(Frame::data(b)));
            Response::new(StreamBody::new(stream).boxed_unsync())
        }
        ["exec" | "attach", _ns, _pod, container] => {
            if header(&req, "upgrade").eq_ignore_ascii_case("websocket") && *container != "refuse" {
                websocket(&mut req, query)
            } else {
                let message = format!(
                    "fake kubelet: no {} upgrade for container {container}",
                    header(&req, "upgrade")
                );
                let status = serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": message, "reason": "BadRequest", "code": 400,
                });
                full(StatusCode::BAD_REQUEST, status.to_string())
            }
        }
        ["upgrade-echo"] if header(&req, "upgrade") == "pikube-echo" => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(up) = on.await else { return };
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(http::header::CONNECTION, "Upgrade")
                .header(http::header::UPGRADE, "pikube-echo")
                .body(Full::new(Bytes::new()).boxed_unsync())
                .unwrap()
        }
        _ => full(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

/// Accepts a `v5.channel.k8s.io` WebSocket and runs the command: `echo` writes its
/// arguments to stdout (channel 1); the status goes to channel 3.
fn websocket(req: &mut Request<Incoming>, query: String) -> Response<Body> {
    let offered = header(req, "sec-websocket-protocol").to_string();
    if !offered.split(',').any(|p| p.trim() == "v5.channel.k8s.io") {
        return full(
            StatusCode::BAD_REQUEST,
            "fake kubelet: v5.channel.k8s.io only",
        );
    }
    let accept =
        tungstenite::handshake::derive_accept_key(header(req, "sec-websocket-key").as_bytes());
    let on = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(up) = on.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(up),
            Role::Server,
            None,
        )
        .await;
        let command = query_values(&query, "command");
        let status = match command.split_first() {
            Some((first, args)) if first == "echo" => {
                let mut out = vec![1u8];
                out.extend(format!("{}\n", args.join(" ")).into_bytes());
                let _ = ws.send(Message::Binary(out.into())).await;
                r#"{"metadata":{},"status":"Success"}"#.to_string()
            }
            // cat: stdin (channel 0) back on stdout until the client closes stdin (v5's
            // close signal on channel 255).
            Some((first, _)) if first == "cat" => {
                while let Some(Ok(m)) = ws.next().await {
                    let Message::Binary(b) = m else { continue };
                    match b.first() {
                        Some(0) => {
                            let mut out = vec![1u8];
                            out.extend_from_slice(&b[1..]);
                            let _ = ws.send(Message::Binary(out.into())).await;
                        }
                        Some(255) if b.get(1) == Some(&0) => break,
                        _ => {}
                    }
                }
                r#"{"metadata":{},"status":"Success"}"#.to_string()
            }
            _ => r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#.to_string(),
        };
        let mut frame = vec![3u8];
        frame.extend(status.into_bytes());
        let _ = ws.send(Message::Binary(frame.into())).await;
        // A normal close (1000) is what the client reads as the end of the streams.
        let _ = ws
            .close(Some(tungstenite::protocol::CloseFrame {
                code: tungstenite::protocol::frame::coding::CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
        // Drain until the client closes too.
        while let Some(Ok(_)) = ws.next().await {}
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "websocket")
        .header("sec-websocket-accept", accept)
        .header("sec-websocket-protocol", "v5.channel.k8s.io")
        .body(Full::new(Bytes::new()).boxed_unsync())
        .unwrap()
}
