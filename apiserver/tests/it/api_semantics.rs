//! Upstream API semantics over raw HTTP: what a client sees (status codes, `metav1.Status`
//! reasons and messages, headers, stored state) for errors, writes, subresources, deletes,
//! namespaces, watches, Tables, field validation, protobuf, health, metrics, discovery and
//! paging. Upstream Kubernetes is the spec.

use crate::common::{wait_until, TestApi, TOKEN};
use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use store::Store;

// ------------------------------------------------------------------ a raw HTTPS client

type ReqBody = BoxBody<Bytes, Infallible>;

const JSON: &str = "application/json";
const YAML: &str = "application/yaml";
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
const JSON_PATCH: &str = "application/json-patch+json";
const MERGE_PATCH: &str = "application/merge-patch+json";
const STRATEGIC_PATCH: &str = "application/strategic-merge-patch+json";
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// How long any single wait in these tests may take.
const DEADLINE: Duration = Duration::from_secs(20);

/// One HTTP/1.1 connection per request, over TLS to the apiserver under test, with a
/// bearer token (or none). Gives full control over headers and request bodies.
#[derive(Clone)]
struct Raw {
    addr: SocketAddr,
    tls: tokio_rustls::TlsConnector,
    token: Option<Arc<str>>,
}

/// A complete response.
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Raw {
    fn new(api: &TestApi) -> Raw {
        let ca =
            std::fs::read(api.dir.path().join("certs").join("ca.crt")).expect("the self-signed CA");
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut ca.as_slice()) {
            roots
                .add(cert.expect("a PEM certificate"))
                .expect("a usable CA");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Raw {
            addr: api.addr,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            token: Some(Arc::from(TOKEN)),
        }
    }

    fn with_token(&self, token: Option<&str>) -> Raw {
        Raw {
            token: token.map(Arc::from),
            ..self.clone()
        }
    }

    /// Sends a request; the response body is left to the caller to stream.
    async fn try_send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: ReqBody,
    ) -> Result<http::Response<Incoming>, String> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::IpAddress(self.addr.ip().into());
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.addr.to_string());
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body).map_err(|e| e.to_string())?;
        sender.send_request(req).await.map_err(|e| e.to_string())
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: ReqBody,
    ) -> http::Response<Incoming> {
        let shown = format!("{method} {path}");
        self.try_send(method, path, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{shown}: {e}"))
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let response = self.send(method, path, headers, full(body)).await;
        collect(response).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, &[], Bytes::new()).await
    }

    async fn post(&self, path: &str, body: &Value) -> Reply {
        self.request(
            Method::POST,
            path,
            &[("content-type", JSON)],
            body.to_string(),
        )
        .await
    }

    async fn put(&self, path: &str, body: &Value) -> Reply {
        self.request(
            Method::PUT,
            path,
            &[("content-type", JSON)],
            body.to_string(),
        )
        .await
    }

    async fn patch(&self, path: &str, content_type: &str, body: &Value) -> Reply {
        self.request(
            Method::PATCH,
            path,
            &[("content-type", content_type)],
            body.to_string(),
        )
        .await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.request(Method::DELETE, path, &[], Bytes::new()).await
    }

    async fn delete_with(&self, path: &str, options: &Value) -> Reply {
        self.request(
            Method::DELETE,
            path,
            &[("content-type", JSON)],
            options.to_string(),
        )
        .await
    }

    /// GETs a JSON object that must exist.
    async fn get_ok(&self, path: &str) -> Value {
        self.get(path).await.ok(200)
    }

    /// The resourceVersion of the list at `path`: where a watch from "now" starts.
    async fn list_resource_version(&self, path: &str) -> String {
        self.get_ok(path).await["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Whether the object at `path` is gone (404).
    async fn absent(&self, path: &str) -> bool {
        self.get(path).await.status == 404
    }

    async fn create_namespace(&self, name: &str) {
        self.post(
            "/api/v1/namespaces",
            &json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name } }),
        )
        .await
        .ok(201);
    }

    /// Opens a watch; the response must be a 200 stream.
    async fn watch(&self, path: &str) -> WatchStream {
        let response = self.send(Method::GET, path, &[], full(Bytes::new())).await;
        assert_eq!(response.status().as_u16(), 200, "watch {path}");
        let ct = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(ct.starts_with(JSON), "watch content type {ct:?}");
        WatchStream {
            body: response.into_body(),
            buf: Vec::new(),
        }
    }

    async fn metrics(&self) -> String {
        let r = self.get("/metrics").await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
    }
}

fn full(body: impl Into<Bytes>) -> ReqBody {
    Full::new(body.into()).boxed()
}

async fn collect(response: http::Response<Incoming>) -> Reply {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("the response body").to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {}", self.status, self.text()))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The JSON body of a response that must have this status code.
    #[track_caller]
    fn ok(&self, code: u16) -> Value {
        assert_eq!(
            self.status,
            code,
            "unexpected status; body: {}",
            self.text()
        );
        self.json()
    }

    /// The `metav1.Status` of a failed request, checked for code and reason.
    #[track_caller]
    fn failure(&self, code: u16, reason: &str) -> Value {
        assert_eq!(
            self.status,
            code,
            "unexpected status; body: {}",
            self.text()
        );
        let ct = self.header("content-type").unwrap_or("");
        assert!(
            ct.starts_with(JSON),
            "a Status is JSON, got content type {ct:?}"
        );
        let s = self.json();
        assert_eq!(s["kind"], "Status", "{s}");
        assert_eq!(s["apiVersion"], "v1", "{s}");
        assert_eq!(s["status"], "Failure", "{s}");
        assert_eq!(s["code"], code, "{s}");
        assert_eq!(s["reason"], reason, "{s}");
        s
    }
}

/// A raw watch response: newline-delimited JSON events.
struct WatchStream {
    body: Incoming,
    buf: Vec<u8>,
}

impl WatchStream {
    /// The next event; `None` when the server ended the stream. Panics after [`DEADLINE`].
    async fn next(&mut self) -> Option<Value> {
        self.next_within(DEADLINE).await
    }

    async fn next_within(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(serde_json::from_slice(&line).unwrap_or_else(|e| {
                    panic!(
                        "watch line is not JSON ({e}): {}",
                        String::from_utf8_lossy(&line)
                    )
                }));
            }
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Err(_) => panic!("no watch event within {timeout:?}"),
                Ok(None) | Ok(Some(Err(_))) => {
                    assert!(
                        self.buf.iter().all(u8::is_ascii_whitespace),
                        "the stream ended inside an event: {}",
                        String::from_utf8_lossy(&self.buf)
                    );
                    return None;
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The next event, which must be of this type for the object of this name.
    #[track_caller]
    fn check(ev: Option<Value>, event_type: &str, name: &str) -> Value {
        let ev = ev.unwrap_or_else(|| panic!("the watch ended; expected {event_type} {name}"));
        assert_eq!(ev["type"], event_type, "{ev}");
        assert_eq!(ev["object"]["metadata"]["name"], name, "{ev}");
        ev["object"].clone()
    }

    async fn expect(&mut self, event_type: &str, name: &str) -> Value {
        let ev = self.next().await;
        Self::check(ev, event_type, name)
    }
}

// ------------------------------------------------------------------ objects

fn cm_path(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/configmaps")
}

fn configmap(name: &str, labels: Value) -> Value {
    json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": name, "labels": labels }, "data": { "k": "v" } })
}

fn pod(name: &str, labels: Value, node: Option<&str>) -> Value {
    let mut p = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": labels },
        "spec": { "containers": [{ "name": "c", "image": "busybox" }] },
    });
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    p
}

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [
                    { "name": "a", "image": "busybox:1" },
                    { "name": "b", "image": "nginx:1" },
                ] },
            },
        },
    })
}

fn rv_of(obj: &Value) -> i64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion in {obj}"))
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|i| {
            i["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// A store on the test's etcd, for compaction.
async fn etcd_store(api: &TestApi) -> store::EtcdStore {
    store::EtcdStore::connect(api.etcd.config())
        .await
        .expect("connect to etcd")
}

/// Compacts etcd at its current revision.
async fn compact_now(api: &TestApi) -> i64 {
    let store = etcd_store(api).await;
    let rev = store.current_revision().await.unwrap();
    store.compact(rev).await.unwrap();
    rev
}

/// The value of one Prometheus series whose labels include `labels`.
fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, r)) => (m, format!(",{}", r.trim_end_matches('}'))),
                None => (series, String::new()),
            };
            if metric != name {
                return None;
            }
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!(",{k}=\"{v}\"")))
                .then(|| value.parse().ok())
                .flatten()
        })
}

// ------------------------------------------------------------------ 1. error codes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_codes_store_nothing() {
    let api = TestApi::start().await;
    let c = Raw::new(&api);
    c.create_namespace("errs").await;
    let cms = cm_path("errs");
    let json_ct = [("content-type", JSON)];

    // 400: malformed JSON and YAML bodies.
    let r = c
        .request(
            Method::POST,
            &cms,
            &json_ct,
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "#,
        )
        .await;
    r.failure(400, "BadRequest");
    let r = c
        .request(
            Method::POST,
            &cms,
            &[("content-type", YAML)],
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [broken\n",
        )
        .await;
    r.failure(400, "BadRequest");

    // 400: the body's kind or apiVersion does not match the URL.
    let r = c
        .post(
            &cms,
            &json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "wrong-kind" } }),
        )
        .await;
    r.failure(400, "BadRequest");
    let r = c.post(&cms, &json!({ "apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": { "name": "wrong-version" } })).await;
    r.failure(400, "BadRequest");

    // 404: a resource the server does not have, and a missing object.
    c.get("/api/v1/namespaces/errs/widgets")
        .await
        .failure(404, "NotFound");
    c.get("/apis/widgets.example.com/v1/widgets")
        .await
        .failure(404, "NotFound");
    let s = c
        .get(&format!("{cms}/missing"))
        .await
        .failure(404, "NotFound");
    assert_eq!(s["message"], "configmaps \"missing\" not found");
    assert_eq!(s["details"]["name"], "missing");
    assert_eq!(s["details"]["kind"], "configmaps");

    // 405: namespaces have no deletecollection.
    c.delete("/api/v1/namespaces")
        .await
        .failure(405, "MethodNotAllowed");
    c.get_ok("/api/v1/namespaces/errs").await;
    c.get_ok("/api/v1/namespaces/default").await;

    // 409: AlreadyExists, and Conflict on a stale resourceVersion.
    let first = c.post(&cms, &configmap("dup", json!({}))).await.ok(201);
    let s = c
        .post(&cms, &configmap("dup", json!({ "second": "true" })))
        .await
        .failure(409, "AlreadyExists");
    assert_eq!(s["message"], "configmaps \"dup\" already exists");
    assert_eq!(s["details"]["name"], "dup");
    let mut changed = first.clone();
    changed["data"] = json!({ "k": "changed" });
    let second = c.put(&format!("{cms}/dup"), &changed).await.ok(200);
    assert!(rv_of(&second) > rv_of(&first));
    let mut stale = first.clone();
    stale["data"] = json!({ "k": "stale" });
    let s = c
        .put(&format!("{cms}/dup"), &stale)
        .await
        .failure(409, "Conflict");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified"),
        "{s}"
    );

    // 413: a body over 3 MiB.
    let huge = configmap("huge", json!({}));
    let mut huge = huge.clone();
    huge["data"]["big"] = json!("x".repeat(3 * 1024 * 1024 + 1024));
    let r = c.post(&cms, &huge).await;
    let s = r.failure(413, "RequestEntityTooLarge");
    assert_eq!(s["message"], "Request entity too large: limit is 3145728");

    // 415: an unknown Content-Type, and a patch type the server does not support.
    let r = c
        .request(
            Method::POST,
            &cms,
            &[("content-type", "text/plain")],
            configmap("plain", json!({})).to_string(),
        )
        .await;
    r.failure(415, "UnsupportedMediaType");
    let r = c
        .patch(
            &format!("{cms}/dup"),
            JSON,
            &json!({ "data": { "k": "json" } }),
        )
        .await;
    r.failure(415, "UnsupportedMediaType");

    // 406: an Accept the server cannot answer, on a read and on a write.
    let r = c
        .request(
            Method::GET,
            &format!("{cms}/dup"),
            &[("accept", "text/html")],
            Bytes::new(),
        )
        .await;
    r.failure(406, "NotAcceptable");
    let r = c
        .request(
            Method::POST,
            &cms,
            &[("content-type", JSON), ("accept", "text/html")],
            configmap("not-acceptable", json!({})).to_string(),
        )
        .await;
    r.failure(406, "NotAcceptable");

    // Nothing of the above was stored: only "dup", as the successful update left it.
    let list = c.get_ok(&cms).await;
    assert_eq!(names(&list), vec!["dup".to_string()]);
    let dup = c.get_ok(&format!("{cms}/dup")).await;
    assert_eq!(dup["data"], json!({ "k": "changed" }));
    assert_eq!(
        dup["metadata"]["resourceVersion"],
        second["metadata"]["resourceVersion"]
    );
    assert!(dup["metadata"]["labels"].get("second").is_none(), "{dup}");
}

// ------------------------------------------------------------------ 2. in-flight limit

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_requests_over_the_inflight_limit_get_429() {
    let api = TestApi::start_with(|config| config.max_mutating_requests_inflight = 1).await;
    let c = Raw::new(&api);
    c.create_namespace("busy").await;
    let cms = cm_path("busy");

    // Hold the only mutating slot: a POST whose chunked body is never finished, so the
    // handler keeps its permit while it waits for the rest of the body.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    tx.send(Ok(Frame::data(Bytes::from_static(
        br#"{"apiVersion": "v1", "kind": "ConfigMap", "#,
    ))))
    .await
    .unwrap();
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed();
    let held = {
        let c = c.clone();
        let cms = cms.clone();
        tokio::spawn(async move {
            collect(
                c.send(Method::POST, &cms, &[("content-type", JSON)], body)
                    .await,
            )
            .await
        })
    };

    // Once the held request has the slot (the in-flight gauge says so; /metrics is a read),
    // other writes are refused.
    wait_until(
        DEADLINE,
        "the held request to take the mutating slot",
        || {
            let c = c.clone();
            async move {
                let m = c.metrics().await;
                m.lines()
                    .any(|l| {
                        l == "apiserver_current_inflight_requests{request_kind=\"mutating\"} 1"
                    })
                    .then_some(())
            }
        },
    )
    .await;
    let refused = c
        .post(&cms, &json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "generateName": "probe-" } }))
        .await;
    let s = refused.failure(429, "TooManyRequests");
    assert_eq!(
        refused.header("retry-after"),
        Some("1"),
        "Retry-After of a 429"
    );
    assert_eq!(s["details"]["retryAfterSeconds"], 1, "{s}");
    // A delete is a mutating request too; reads are not limited by the mutating limit.
    c.delete(&format!("{cms}/anything"))
        .await
        .failure(429, "TooManyRequests");
    c.get_ok(&cms).await;

    // Finishing the held body completes that request; then writes go through again.
    tx.send(Ok(Frame::data(Bytes::from_static(
        br#""metadata": {"name": "held"}}"#,
    ))))
    .await
    .unwrap();
    drop(tx);
    let held = tokio::time::timeout(DEADLINE, held)
        .await
        .expect("the held request completes")
        .unwrap();
    assert_eq!(held.status, 201, "{}", held.text());
    c.post(&cms, &configmap("after", json!({}))).await.ok(201);
    c.get_ok(&format!("{cms}/held")).await;
}

// ------------------------------------------------------------------ 3. create

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_generate_name_dry_run_and_system_fields() {
    let api = TestApi::start().await;
    let c = Raw::new(&api);
    c.create_namespace("create").await;
    let cms = cm_path("create");

    // generateName: the prefix plus five random characters.
    let generated = c
        .post(&cms, &json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "generateName": "gen-" } }))
        .await
        .ok(201);
    let name = generated["metadata"]["name"].as_str().unwrap().to_string();
    assert!(
        name.starts_with("gen-") && name.len() == "gen-".len() + 5,
        "{name}"
    );
    assert_eq!(generated["metadata"]["generateName"], "gen-");
    c.get_ok(&format!("{cms}/{name}")).await;

    // System fields are set by the server.
    let created = c.post(&cms, &configmap("sys", json!({}))).await.ok(201);
    let meta = &created["metadata"];
    let uid = meta["uid"].as_str().unwrap();
    assert_eq!(uid.len(), 36, "uid {uid}");
    assert!(
        meta["creationTimestamp"].as_str().unwrap().ends_with('Z'),
        "{meta}"
    );
    assert!(rv_of(&created) > 0);
    assert_eq!(meta["namespace"], "create");
    let deploy = c
        .post(
            "/apis/apps/v1/namespaces/create/deployments",
            &deployment("web"),
        )
        .await
        .ok(201);
    assert_eq!(deploy["metadata"]["generation"], 1, "{deploy}");

    // System fields in the body are not taken from the client.
    let mut forged = configmap("forged", json!({}));
    forged["metadata"]["uid"] = json!("00000000-0000-0000-0000-000000000000");
    forged["metadata"]["creationTimestamp"] = json!("2000-01-01T00:00:00Z");
    let forged = c.post(&cms, &forged).await.ok(201);
    assert_ne!(
        forged["metadata"]["uid"],
        "00000000-0000-0000-0000-000000000000"
    );
    assert_ne!(
        forged["metadata"]["creationTimestamp"],
        "2000-01-01T00:00:00Z"
    );

    // dryRun=All: 201 with the object, nothing stored.
    let dry = c
        .post(&format!("{cms}?dryRun=All"), &configmap("dry", json!({})))
        .await
        .ok(201);
    assert_eq!(dry["metadata"]["name"], "dry");
    assert_eq!(dry["data"]["k"], "v");
    assert!(c.absent(&format!("{cms}/dry")).await);
    c.post(&format!("{cms}?dryRun=Bogus"), &configmap("dry", json!({})))
        .await
        .failure(400, "BadRequest");

    // A resourceVersion in a create body is refused (upstream: 500 from the storage layer).
    let mut with_rv = configmap("with-rv", json!({}));
    with_rv["metadata"]["resourceVersion"] = json!("12");
    let s = c.post(&cms, &with_rv).await.failure(500, "InternalError");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("resourceVersion should not be set on objects to be created"),
        "{s}"
    );
    assert!(c.absent(&format!("{cms}/with-rv")).await);

    let mut listed = names(&c.get_ok(&cms).await);
    listed.sort();
    let mut expected = vec![name, "forged".to_string(), "sys".to_string()];
    expected.sort();
    assert_eq!(listed, expected);
}

// ------------------------------------------------------------------ 4. update and patch

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_and_patch_semantics() {
    let api = TestApi::start().await;
    let c = Raw::new(&api);
    c.create_namespace("upd").await;
    let path = "/apis/apps/v1/namespaces/upd/deployments/web";
    let created = c
        .post(
            "/apis/apps/v1/namespaces/upd/deployments",
            &deployment("web"),
        )
        .await
        .ok(201);
    assert_eq!(created["metadata"]["generation"], 1);
    let images = |d: &Value| -> Vec<(String, String)> {
        d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["image"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };

    // JSON patch.
    let d = c
        .patch(
            path,
            JSON_PATCH,
            &json!([{ "op": "replace", "path": "/spec/replicas", "value": 3 }]),
        )
        .await
        .ok(200);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(
        d["metadata"]["generation"], 2,
        "a spec change bumps the generation"
    );
    // A failing JSON-patch test operation changes nothing.
    let r = c
        .patch(path, JSON_PATCH, &json!([{ "op": "test", "path": "/spec/replicas", "value": 9 }, { "op": "replace", "path": "/spec/replicas", "value": 9 }]))
        .await;
    assert!(
        matches!(r.status, 409 | 422),
        "a failed test op: {} {}",
        r.status,
        r.text()
    );
    assert_eq!(c.get_ok(path).await["spec"]["replicas"], 3);

    // Merge patch of metadata only: the generation stays.
    let d = c
        .patch(
            path,
            MERGE_PATCH,
            &json!({ "metadata": { "labels": { "tier": "front" } } }),
        )
        .await
        .ok(200);
    assert_eq!(d["metadata"]["labels"]["tier"], "front");
    assert_eq!(
        d["metadata"]["generation"], 2,
        "a metadata change keeps the generation"
    );

    // Strategic merge patch: containers are merged by name.
    let d = c
        .patch(path, STRATEGIC_PATCH, &json!({ "spec": { "template": { "spec": { "containers": [{ "name": "b", "image": "nginx:2" }] } } } }))
        .await
        .ok(200);
    assert_eq!(
        images(&d),
        vec![
            ("a".into(), "busybox:1".into()),
            ("b".into(), "nginx:2".into())
        ]
    );
    assert_eq!(d["metadata"]["generation"], 3);
    // A merge patch replaces the list.
    let d = c
        .patch(path, MERGE_PATCH, &json!({ "spec": { "template": { "spec": { "containers": [{ "name": "b", "image": "nginx:3" }] } } } }))
        .await
        .ok(200);
    assert_eq!(images(&d), vec![("b".into(), "nginx:3".into())]);
    assert_eq!(d["metadata"]["generation"], 4);

    // A patch carrying a stale resourceVersion conflicts.
    let stale = created["metadata"]["resourceVersion"].clone();
    let s = c
        .patch(
            path,
            MERGE_PATCH,
            &json!({ "metadata": { "resourceVersion": stale }, "spec": { "replicas": 7 } }),
        )
        .await
        .failure(409, "Conflict");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified"),
        "{s}"
    );
    let current = c.get_ok(path).await;
    assert_eq!(current["spec"]["replicas"], 3);
    // The current resourceVersion in a patch is fine.
    let d = c
        .patch(path, MERGE_PATCH, &json!({ "metadata": { "resourceVersion": current["metadata"]["resourceVersion"] }, "spec": { "replicas": 2 } }))
        .await
        .ok(200);
    assert_eq!(d["spec"]["replicas"], 2);

    // An update that changes nothing keeps the resourceVersion (nothing is written).
    let before = c.get_ok(path).await;
    let after = c.put(path, &before).await.ok(200);
    assert_eq!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
    let after = c.patch(path, MERGE_PATCH, &json!({})).await.ok(200);
    assert_eq!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
    assert_eq!(
        c.get_ok(path).await["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );

    // PUT: a spec change bumps the generation, an annotation change does not.
    let mut spec_change = before.clone();
    spec_change["spec"]["replicas"] = json!(5);
    let d = c.put(path, &spec_change).await.ok(200);
    assert_eq!(d["metadata"]["generation"], 6);
    let mut meta_change = d.clone();
    meta_change["metadata"]["annotations"] = json!({ "note": "x" });
    let d = c.put(path, &meta_change).await.ok(200);
    assert_eq!(d["metadata"]["generation"], 6);
    assert!(rv_of(&d) > rv_of(&spec_change));
    // PUT of a missing object: 404 for deployments (no create-on-update).
    let mut other = deployment("other");
    other["metadata"]["namespace"] = json!("upd");
    c.put("/apis/apps/v1/namespaces/upd/deployments/other", &other)
        .await
        .failure(404, "NotFound");
}

// ------------------------------------------------------------------ 5. subresources

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_scale_binding_and_eviction_subresources() {
    let api = TestApi::start().await;
    let c = Raw::new(&api);
    c.create_namespace("sub").await;
    let deploys = "/apis/apps/v1/namespaces/sub/deployments";
    let web = format!("{deploys}/web");
    c.post(deploys, &deployment("web")).await.ok(201);

    // PUT /status changes only the status.
    let mut d = c.get_ok(&web).await;
    d["status"] = json!({ "observedGeneration": 1, "replicas": 2 });
    d["spec"]["replicas"] = json!(9);
    let d = c.put(&format!("{web}/status"), &d).await.ok(200);
    assert_eq!(d["status"]["replicas"], 2);
    assert_eq!(
        d["spec"]["replicas"], 1,
        "spec changes through /status are ignored"
    );
    assert_eq!(d["metadata"]["generation"], 1);
    // PATCH /status likewise.
    let d = c
        .patch(
            &format!("{web}/status"),
            MERGE_PATCH,
            &json!({ "status": { "readyReplicas": 1 }, "spec": { "replicas": 8 } }),
        )
        .await
        .ok(200);
    assert_eq!(d["status"]["readyReplicas"], 1);
    assert_eq!(d["spec"]["replicas"], 1);
    let stored = c.get_ok(&web).await;
    assert_eq!(stored["spec"]["replicas"], 1);
    assert_eq!(stored["status"]["replicas"], 2);
    // GET /status answers the whole object.
    let got = c.get_ok(&format!("{web}/status")).await;
    assert_eq!(got["kind"], "Deployment");
    assert_eq!(got["status"]["readyReplicas"], 1);

    // A PUT of the main resource does not change the status.
    let mut d = stored.clone();
    d["status"]["replicas"] = json!(7);
    d["spec"]["replicas"] = json!(2);
    let d = c.put(&web, &d).await.ok(200);
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(
        d["status"]["replicas"], 2,
        "status changes through the main resource are ignored"
    );

    // /scale: an autoscaling/v1 Scale; PUT and PATCH write .spec.replicas.
    let scale = c.get_ok(&format!("{web}/scale")).await;
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["metadata"]["name"], "web");
    assert_eq!(scale["metadata"]["namespace"], "sub");
    assert_eq!(scale["spec"]["replicas"], 2);
    assert_eq!(scale["status"]["replicas"], 2);
    assert_eq!(scale["status"]["selector"], "app=web");
    let put = json!({ "apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": { "name": "web", "namespace": "sub" }, "spec": { "replicas": 4 } });
    let scale = c.put(&format!("{web}/scale"), &put).await.ok(200);
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 4);
    assert_eq!(c.get_ok(&web).await["spec"]["replicas"], 4);
    let scale = c
        .patch(
            &format!("{web}/scale"),
            MERGE_PATCH,
            &json!({ "spec": { "replicas": 1 } }),
        )
        .await
        .ok(200);
    assert_eq!(scale["spec"]["replicas"], 1);
    let d = c.get_ok(&web).await;
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(
        d["status"]["replicas"], 2,
        "scaling does not touch the status"
    );

    // pods/binding sets spec.nodeName once.
    let pods = "/api/v1/namespaces/sub/pods";
    c.post(pods, &pod("p", json!({}), None)).await.ok(201);
    let binding = json!({ "apiVersion": "v1", "kind": "Binding", "metadata": { "name": "p" }, "target": { "apiVersion": "v1", "kind": "Node", "name": "node-1" } });
    let s = c.post(&format!("{pods}/p/binding"), &binding).await.ok(201);
    assert_eq!(s["kind"], "Status");
    assert_eq!(s["status"], "Success");
    let p = c.get_ok(&format!("{pods}/p")).await;
    assert_eq!(p["spec"]["nodeName"], "node-1");
    let scheduled = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .cloned();
    assert_eq!(
        scheduled.map(|c| c["status"].clone()),
        Some(json!("True")),
        "{p}"
    );
    let mut again = binding.clone();
    again["target"]["name"] = json!("node-2");
    let s = c
        .post(&format!("{pods}/p/binding"), &again)
        .await
        .failure(409, "Conflict");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("is already assigned to node \"node-1\""),
        "{s}"
    );
    assert_eq!(
        c.get_ok(&format!("{pods}/p")).await["spec"]["nodeName"],
        "node-1"
    );

    // pods/eviction honours PodDisruptionBudgets.
    let pdbs = "/apis/policy/v1/namespaces/sub/poddisruptionbudgets";
    c.post(pods, &pod("e1", json!({ "app": "evict" }), None))
        .await
        .ok(201);
    c.post(pods, &pod("e2", json!({ "app": "evict" }), Some("node-1")))
        .await
        .ok(201);
    let pdb = c
        .post(
            pdbs,
            &json!({
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": { "name": "budget" },
                "spec": { "minAvailable": 1, "selector": { "matchLabels": { "app": "evict" } } },
            }),
        )
        .await
        .ok(201);
    let generation = pdb["metadata"]["generation"].clone();
    let set_allowed = |allowed: i64| {
        let c = c.clone();
        let generation = generation.clone();
        async move {
            c.patch(
                &format!("{pdbs}/budget/status"),
                MERGE_PATCH,
                &json!({ "status": { "observedGeneration": generation, "disruptionsAllowed": allowed, "currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 2 } }),
            )
            .await
            .ok(200)
        }
    };
    set_allowed(0).await;
    let eviction = |name: &str| json!({ "apiVersion": "policy/v1", "kind": "Eviction", "metadata": { "name": name, "namespace": "sub" } });
    let s = c
        .post(&format!("{pods}/e1/eviction"), &eviction("e1"))
        .await
        .failure(429, "TooManyRequests");
    assert!(
        s["message"].as_str().unwrap().contains("disruption budget"),
        "{s}"
    );
    c.get_ok(&format!("{pods}/e1")).await;

    set_allowed(1).await;
    let s = c
        .post(&format!("{pods}/e1/eviction"), &eviction("e1"))
        .await
        .ok(201);
    assert_eq!(s["kind"], "Status");
    assert_eq!(s["status"], "Success");
    assert!(
        c.absent(&format!("{pods}/e1")).await,
        "an unbound pod is deleted at once"
    );
    let budget = c.get_ok(&format!("{pdbs}/budget")).await;
    assert_eq!(budget["status"]["disruptionsAllowed"], 0, "{budget}");
    assert!(
        budget["status"]["disruptedPods"].get("e1").is_some(),
        "{budget}"
    );

    // A bound pod is evicted gracefully: it is terminating, not gone.
    set_allowed(1).await;
    c.post(&format!("{pods}/e2/eviction"), &eviction("e2"))
        .await
        .ok(201);
    let e2 = c.get_ok(&format!("{pods}/e2")).await;
    assert!(e2["metadata"]["deletionTimestamp"].is_string(), "{e2}");
    assert_eq!(e2["metadata"]["deletionGracePeriodSeconds"], 30, "{e2}");
}

// ------------------------------------------------------------------ 6. delete

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_finalizers_preconditions_propagation_grace_and_collections() {
    let api = TestApi::start().await;
    let c = Raw::new(&api);
    c.create_namespace("del").await;
    let cms = cm_path("del");

    // A finalizer keeps the object, with a deletionTimestamp, until it is removed.
    let mut held = configmap("held", json!({}));
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    c.post(&cms, &held).await.ok(201);
    let r = c.delete(&format!("{cms}/held")).await;
    assert!(matches!(r.status, 200 | 202), "{} {}", r.status, r.text());
    let body = r.json();
    assert_eq!(body["kind"], "ConfigMap", "{body}");
    assert!(body["metadata"]["deletionTimestamp"].is_string(), "{body}");
    let stored = c.get_ok(&format!("{cms}/held")).await;
    assert!(stored["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(
        stored["metadata"]["finalizers"],
        json!(["example.com/hold"])
    );
    // Deleting again keeps it; removing the finalizer finishes the delete.
    let r = c.delete(&format!("{cms}/held")).await;
    assert!(matches!(r.status, 200 | 202), "{} {}", r.status, r.text());
    c.patch(
        &format!("{cms}/held"),
        MERGE_PATCH,
        &json!({ "metadata": { "finalizers": null } }),
    )
    .await
    .ok(200);
    assert!(
        c.absent(&format!("{cms}/held")).await,
        "removing the last finalizer deletes the object"
    );

    // Preconditions: a uid or resourceVersion mismatch conflicts and deletes nothing.
    let pre = c.post(&cms, &configmap("pre", json!({}))).await.ok(201);
    let s = c
        .delete_with(&format!("{cms}/pre"), &json!({ "kind": "DeleteOptions", "apiVersion": "v1", "preconditions": { "uid": "not-the-uid" } }))
        .await
        .failure(409, "Conflict");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("Precondition failed: UID in precondition: not-the-uid"),
        "{s}"
    );
    let s = c
        .delete_with(&format!("{cms}/pre"), &json!({ "kind": "DeleteOptions", "apiVersion": "v1", "preconditions": { "resourceVersion": "1" } }))
        .await
        .failure(409, "Conflict");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("Precondition failed"),
        "{s}"
    );
    c.get_ok(&format!("{cms}/pre")).await;
    let s = c
        .delete_with(
            &format!("{cms}/pre"),
            &json!({ "kind": "DeleteOptions", "apiVersion": "v1", "preconditions": { "uid": pre["metadata"]["uid"], "resourceVersion": pre["metadata"]["resourceVersion"] } }),
        )
        .await
        .ok(200);
    assert_eq!(
        s["status"], "Success",
        "a completed delete of a configmap answers a Status: {s}"
    );
    assert_eq!(s["details"]["name"], "pre");
    assert_eq!(s["details"]["kind"], "configmaps");
    assert_eq!(s["details"]["uid"], pre["metadata"]["uid"]);
    assert!(c.absent(&format!("{cms}/pre")).await);

    // propagationPolicy=Orphan and Foreground add the garbage collector's finalizers.
    c.post(&cms, &configmap("orphan", json!({}))).await.ok(201);
    let r = c
        .delete(&format!("{cms}/orphan?propagationPolicy=Orphan"))
        .await;
    assert!(matches!(r.status, 200 | 202), "{} {}", r.status, r.text());
    let o = c.get_ok(&format!("{cms}/orphan")).await;
    assert_eq!(o["metadata"]["finalizers"], json!(["orphan"]));
    assert!(o["metadata"]["deletionTimestamp"].is_string());
    c.post(&cms, &configmap("fg", json!({}))).await.ok(201);
    let r = c
        .delete_with(&format!("{cms}/fg"), &json!({ "kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground" }))
        .await;
    assert!(matches!(r.status, 200 | 202), "{} {}", r.status, r.text());
    let f = c.get_ok(&format!("{cms}/fg")).await;
    assert_eq!(f["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    assert!(f["metadata"]["deletionTimestamp"].is_string());
    c.delete(&format!("{cms}/fg?propagationPolicy=Sideways"))
        .await
        .failure(422, "Invalid");

    // A bound pod is deleted gracefully; gracePeriodSeconds=0 then removes it.
    let pods = "/api/v1/namespaces/del/pods";
    c.post(pods, &pod("bound", json!({}), Some("node-1")))
        .await
        .ok(201);
    let p = c.delete(&format!("{pods}/bound")).await.ok(200);
    assert_eq!(p["kind"], "Pod");
    assert!(p["metadata"]["deletionTimestamp"].is_string(), "{p}");
    assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 30, "{p}");
    let p = c.get_ok(&format!("{pods}/bound")).await;
    assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 30);
    let r = c
        .delete(&format!("{pods}/bound?gracePeriodSeconds=0"))
        .await
        .ok(200);
    assert_eq!(r["metadata"]["name"], "bound");
    assert!(c.absent(&format!("{pods}/bound")).await);
    // An unbound pod goes at once.
    c.post(pods, &pod("unbound", json!({}), None)).await.ok(201);
    c.delete(&format!("{pods}/unbound")).await.ok(200);
    assert!(c.absent(&format!("{pods}/unbound")).await);

    // deletecollection with a labelSelector deletes exactly the matching objects.
    for (name, sel) in [("c1", "yes"), ("c2", "yes"), ("c3", "no")] {
        c.post(&cms, &configmap(name, json!({ "sweep": sel })))
            .await
            .ok(201);
    }
    let deleted = c
        .delete(&format!("{cms}?labelSelector=sweep%3Dyes"))
        .await
        .ok(200);
    assert_eq!(deleted["kind"], "ConfigMapList", "{deleted}");
    assert_eq!(
        deleted["items"].as_array().map(Vec::len),
        Some(2),
        "{deleted}"
    );
    let mut left = names(&c.get_ok(&cms).await);
    left.sort();
    assert_eq!(
        left,
        vec!["c3".to_string(), "fg".to_string(), "orphan".to_string()]
    );
}

// ------------------------------------------------------------------ 7. namespaces

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_lifecycle_gates_new_content() {
    let api = TestApi::start().await;
    let c = Raw::new(&api);

    let list = c.get_ok("/api/v1/namespaces").await;
    let listed = names(&list);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(listed.iter().any(|n| n == ns), "{ns} in {listed:?}");
        let n = c.get_ok(&format!("/api/v1/namespaces/{ns}")).await;
        assert_eq!(n["status"]["phase"], "Active");
    }

    // Creating into a namespace that does not exist: 404 for the namespace.
    let s = c
        .post(&cm_path("nowhere"), &configmap("x", json!({})))
        .await
        .failure(404, "NotFound");
    assert_eq!(s["message"], "namespaces \"nowhere\" not found");
    assert_eq!(s["details"]["kind"], "namespaces");

    // A deleted namespace stays Terminating while spec.finalizers holds it.
    c.create_namespace("doomed").await;
    let created = c.get_ok("/api/v1/namespaces/doomed").await;
    assert_eq!(created["spec"]["finalizers"], json!(["kubernetes"]));
    let r = c.delete("/api/v1/namespaces/doomed").await;
    assert!(matches!(r.status, 200 | 202), "{} {}", r.status, r.text());
    assert_eq!(r.json()["status"]["phase"], "Terminating");
    let ns = c.get_ok("/api/v1/namespaces/doomed").await;
    assert_eq!(ns["status"]["phase"], "Terminating");
    assert!(ns["metadata"]["deletionTimestamp"].is_string());

    // New content in a terminating namespace is forbidden; nothing is stored. (Admission
    // reads the namespace from the watch cache: wait until the cache, which answers
    // resourceVersion=0 reads, has the deletion. Without the wait, see
    // `creates_right_after_a_namespace_delete_are_forbidden`.)
    wait_until(DEADLINE, "the namespace cache to see the deletion", || {
        let c = c.clone();
        async move {
            let ns = c
                .get_ok("/api/v1/namespaces/doomed?resourceVersion=0")
                .await;
            (ns["status"]["phase"] == "Terminating").then_some(())
        }
    })
    .await;
    let s = c
        .post(&cm_path("doomed"), &configmap("late", json!({})))
        .await
        .failure(403, "Forbidden");
    let msg = s["message"].as_str().unwrap();
    assert!(
        msg.contains(
            "unable to create new content in namespace doomed because it is being terminated"
        ),
        "{msg}"
    );
    assert!(c.absent(&format!("{}/late", cm_path("doomed"))).await);

    // Emptying spec.finalizers through /finalize lets the namespace go.
    let mut ns = ns.clone();
    ns["spec"]["finalizers"] = json!([]);
    c.put("/api/v1/namespaces/doomed/finalize", &ns)
        .await
        .ok(200);
    assert!(c.absent("/api/v1/namespaces/doomed").await);
}

// ------------------------------------------------------------------ 8. watch

/// A watcher that reads nothing while hundreds of large objects are written falls behind
/// the live stream (it keeps few events): it catches up from the history, every event in
/// order, and the watch goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_behind_the_live_stream_catches_up_from_history() {
    let api = TestApi::start().await;
    let c = Raw::new(&api);
    c.create_namespace("lag").await;
    let cms = cm_path("lag");
    let rv0 = c.list_resource_version(&cms).await;
    let mut w = c
        .watch(&format!("{cms}?watch=true&resourceVersion={rv0}"))
        .await;
    // 400 × 32 KiB: more than the connection's buffers hold, so the watch's sender
    // waits and the live stream runs far ahead of it.
    let big = "x".repeat(32 * 1024);
    let count = 400;
    for i in 0..count {
        let mut cm = configmap(&format!("c{i:03}"), json!({}));
        cm["data"]["big"] = json!(big);
        c.post(&cms, &cm).await.ok(201);
    }
    let mut last_rv = 0;
    for i in 0..count {
        let ev = w.expect("ADDED", &format!("c{i:03}")).await;
        assert!(rv_of(&ev) > last_rv);
        last_rv = rv_of(&ev);
    }
    c.post(&cms, &configmap("after", json!({}))).await.ok(201);
    w.expect("ADDED", "after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_events_and_resumes_after_a_resource_version() {
    let api = TestApi::start().await;
    let c = Raw::new(&api);
    c.create_namespace("w").await;
    let cms = cm_path("w");

    let rv0 = c.list_resource_version(&cms).await;
    let mut w = c
        .watch(&format!("{cms}?watch=true&resourceVersion={rv0}"))
        .await;

    c.post(&cms, &configmap("a", json!({}))).await.ok(201);
    c.patch(
        &format!("{cms}/a"),
        MERGE_PATCH,
        &json!({ "data": { "k": "2" } }),
    )
    .await
    .ok(200);
    c.delete(&format!("{cms}/a")).await.ok(200);

    let added = w.expect("ADDED", "a").await;
    assert_eq!(added["kind"], "ConfigMap");
    assert_eq!(added["apiVersion"], "v1");
    let modified = w.expect("MODIFIED", "a").await;
    assert_eq!(modified["data"]["k"], "2");
    let deleted = w.expect("DELETED", "a").await;
    assert!(rv_of(&added) < rv_of(&modified) && rv_of(&modified) < rv_of(&deleted));
    assert_eq!(deleted["data"]["k"], "2", "DELETED carries the last state");

    // Resuming from a resourceVersion replays exactly what came after it.
    let mut resumed = c
        .watch(&format!(
            "{cms}?watch=true&resourceVersion={}",
            rv_of(&added)
        ))
        .await;
    let m = resumed.expect("MODIFIED", "a").await;
    assert_eq!(rv_of(&m), rv_of(&modified));
    resumed.expect("DELETED", "a").await;
    c.post(&cms, &configmap("b", json!({}))).await.ok(201);
    resumed.expect("ADDED", "b").await;
    w.expect("ADDED", "b").await;

    // Without a resourceVersion a watch starts with the current state as ADDED events.
    let mut fresh = c.watch(&format!("{cms}?watch=true")).await;
    fresh.expect("ADDED", "b").await;

    // A watch on one object (by URL name) sees only that object.
    let mut one = c
        .watch(&format!(
            "{cms}?watch=true&fieldSelector=metadata.name%3Dc&resourceVersion={}",
            rv_of(&deleted)
        ))
        .await;
    c.post(&cms, &configmap("d", json!({}))).await.ok(201);
    c.post(&cms, &configmap("c", json!({}))).await.ok(201);
    one.expect("ADDED", "c").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_compacted_resource_version_is_expired() {
    let mut api = TestApi::start().await;
    let c = Raw::new(&api);
    c.create_namespace("old").await;
    let cms = cm_path("old");
    let rv0 = c.list_resource_version(&cms).await;
    c.post(&cms, &configmap("a", json!({}))).await.ok(201);
    c.patch(
        &format!("{cms}/a"),
        MERGE_PATCH,
        &json!({ "data": { "k": "2" } }),
    )
    .await
    .ok(200);
    compact_now(&api).await;
    // A restarted apiserver's watch cache begins after the compaction, so rv0 is outside
    // both etcd's history and the cache's window.
    api.restart().await;

    let mut w = c
        .watch(&format!("{cms}?watch=true&resourceVersion={rv0}"))
        .await;
    let ev = w.next().await.expect("an ERROR event");
    assert_eq!(ev["type"], "ERROR", "{ev}");
    let s = &ev["object"];
    assert_eq!(s["kind"], "Status", "{s}");
    assert_eq!(s["status"], "Failure");
    assert_eq!(s["code"], 410);
    assert_eq!(s["reason"], "Expired");
    assert!(w.next().await.is_none(), "the stream ends after the error");

    // An exact list at a compacted revision is 410 as well.
    let r = c
        .get(&format!(
            "{cms}?resourceVersion={rv0}&resourceVersionMatch=Exact"
        ))
        .await;
    r.failure(410, "Expired");
    // A current watch still works.
    let mut w = c.watch(&format!("{cms}?watch=true")).await;
    w.expect("ADDED", "a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_bookmarks_report_progress() {
    let api = TestApi::start().await;
    let c = Raw::new(&api);
    c.create_namespace("quiet").await;
    c.create_namespace("busy").await;
    let rv0 = rv_of(&c.get_ok(&cm_path("quiet")).await);
    let mut w = c
        .watch(&format!(
            "{}?watch=true&allowWatchBookmarks=true&resourceVersion={rv0}",
            cm_path("quiet")
        ))
        .await;
    // A change this watcher does not see moves the resource's revision on; the server
    // reports it with a bookmark (every ~10s).
    let other = c
        .post(&cm_path("busy"), &configmap("elsewhere", json!({})))
        .await
        .ok(201);
    let ev = w
        .next_within(Duration::from_secs(30))
        .await
        .expect("a bookmark");
    assert_eq!(ev["type"], "BOOKMARK", "{ev}");
    assert_eq!(ev["object"]["kind"], "ConfigMap");
    assert_eq!(ev["object"]["apiVersion"], "v1");
    assert!(rv_of(&ev["object"]) >= rv_of(&other), "{ev}");
    // Events still flow after a bookmark.
    c.post(&cm_path("quiet"), &configmap("here", json!({})))
        .await
        .ok(201);
    w.expect("ADDED", "here").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_timeout_selectors_and_initial_events() {
    let api = TestApi::start().await;
    let c = Raw::new(&api);
    c.create_namespace("sel").await;
    let cms = cm_path("sel");

    // timeoutSeconds ends the stream.
    let mut timed = c.watch(&format!("{cms}?watch=true&timeoutSeconds=1")).await;
    assert!(
        timed.next_within(Duration::from_secs(15)).await.is_none(),
        "the watch ends after its timeout"
    );

    // A label selector: objects entering the selection are ADDED, leaving it DELETED.
    let rv0 = rv_of(&c.get_ok(&cms).await);
    let mut w = c
        .watch(&format!(
            "{cms}?watch=true&labelSelector=app%3Dx&resourceVersion={rv0}"
        ))
        .await;
    c.post(&cms, &configmap("plain", json!({}))).await.ok(201);
    c.post(&cms, &configmap("labeled", json!({ "app": "x" })))
        .await
        .ok(201);
    w.expect("ADDED", "labeled").await;
    c.patch(
        &format!("{cms}/plain"),
        MERGE_PATCH,
        &json!({ "metadata": { "labels": { "app": "x" } } }),
    )
    .await
    .ok(200);
    w.expect("ADDED", "plain").await;
    c.patch(
        &format!("{cms}/plain"),
        MERGE_PATCH,
        &json!({ "data": { "k": "2" } }),
    )
    .await
    .ok(200);
    w.expect("MODIFIED", "plain").await;
    let left = c
        .patch(
            &format!("{cms}/plain"),
            MERGE_PATCH,
            &json!({ "metadata": { "labels": { "app": "y" } } }),
        )
        .await
        .ok(200);
    let gone = w.expect("DELETED", "plain").await;
    assert_eq!(
        rv_of(&gone),
        rv_of(&left),
        "DELETED has the resourceVersion of the change"
    );
    c.delete(&format!("{cms}/labeled")).await.ok(200);
    w.expect("DELETED", "labeled").await;

    // A field selector on pods.
    let pods = "/api/v1/namespaces/sel/pods";
    let rv0 = rv_of(&c.get_ok(pods).await);
    let mut w = c
        .watch(&format!(
            "{pods}?watch=true&fieldSelector=status.phase%3DRunning&resourceVersion={rv0}"
        ))
        .await;
    c.post(pods, &pod("r", json!({}), Some("node-1")))
        .await
        .ok(201);
    c.post(pods, &pod("marker", json!({}), Some("node-1")))
        .await
        .ok(201);
    set_phase(&c, pods, "marker", "Running").await;
    w.expect("ADDED", "marker").await;
    set_phase(&c, pods, "r", "Running").await;
    w.expect("ADDED", "r").await;
    set_phase(&c, pods, "r", "Succeeded").await;
    // Leaving the selection is DELETED with the last matching state.
    let gone = w.expect("DELETED", "r").await;
    assert_eq!(gone["status"]["phase"], "Running", "{gone}");

    // sendInitialEvents: the current state as ADDED, then a bookmark marking its end.
    let ie = cm_path("ie");
    c.create_namespace("ie").await;
    c.post(&ie, &configmap("one", json!({}))).await.ok(201);
    let two = c.post(&ie, &configmap("two", json!({}))).await.ok(201);
    let mut w = c
        .watch(&format!("{ie}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"))
        .await;
    w.expect("ADDED", "one").await;
    w.expect("ADDED", "two").await;
    let ev = w.next().await.expect("the initial-events-end bookmark");
    assert_eq!(ev["type"], "BOOKMARK", "{ev}");
    assert_eq!(
        ev["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true",
        "{ev}"
    );
    assert!(rv_of(&ev["object"]) >= rv_of(&two));
    c.post(&ie, &configmap("three", json!({}))).await.ok(201);
    w.expect("ADDED", "three").await;
}

// ------------------------------------------------------------------ 9. server-side Table

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_tables_of_pods() {
    let api = TestApi::start().await;
    let c = Raw::new(&api);
    c.create_namespace("tbl").await;
    let pods = "/api/v1/namespaces/tbl/pods";
    c.post(pods, &pod("p1", json!({}), None)).await.ok(201);
    c.post(pods, &pod("p2", json!({}), Some("node-1")))
        .await
        .ok(201);

    let r = c
        .request(Method::GET, pods, &[("accept", TABLE)], Bytes::new())
        .await;
    let t = r.ok(200);
    assert!(r.header("content-type").unwrap_or("").starts_with(JSON));
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    assert!(rv_of(&t) > 0);
    let columns: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Name",
            "Ready",
            "Status",
            "Restarts",
            "Age",
            "IP",
            "Node",
            "Nominated Node",
            "Readiness Gates"
        ]
    );
    let priorities: Vec<i64> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["priority"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(priorities, [0, 0, 0, 0, 0, 1, 1, 1, 1]);
    assert_eq!(t["columnDefinitions"][0]["format"], "name");
    let rows = t["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let cells = rows[0]["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 9);
    assert_eq!(cells[0], "p1");
    assert_eq!(cells[1], "0/1");
    assert_eq!(cells[2], "Pending");
    assert_eq!(cells[3], "0");
    assert_eq!(cells[5], "<none>");
    assert_eq!(cells[6], "<none>");
    assert_eq!(rows[1]["cells"][6], "node-1");
    let object = &rows[0]["object"];
    assert_eq!(object["kind"], "PartialObjectMetadata");
    assert_eq!(object["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(object["metadata"]["name"], "p1");
    assert!(object.get("spec").is_none());

    // includeObject=Object embeds the full objects; None leaves them out.
    let t = c
        .request(
            Method::GET,
            &format!("{pods}?includeObject=Object"),
            &[("accept", TABLE)],
            Bytes::new(),
        )
        .await
        .ok(200);
    let object = &t["rows"][1]["object"];
    assert_eq!(object["kind"], "Pod");
    assert_eq!(object["apiVersion"], "v1");
    assert_eq!(object["spec"]["nodeName"], "node-1");
    let t = c
        .request(
            Method::GET,
            &format!("{pods}?includeObject=None"),
            &[("accept", TABLE)],
            Bytes::new(),
        )
        .await
        .ok(200);
    assert!(t["rows"][0]["object"].is_null(), "{t}");

    // A single object as a Table.
    let t = c
        .request(
            Method::GET,
            &format!("{pods}/p2"),
            &[("accept", TABLE)],
            Bytes::new(),
        )
        .await
        .ok(200);
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["rows"].as_array().unwrap().len(), 1);
    assert_eq!(t["rows"][0]["cells"][0], "p2");
}

// ------------------------------------------------------------------ 10. fieldValidation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_validation_strict_warn_ignore() {
    let api = TestApi::start().await;
    let c = Raw::new(&api);
    c.create_namespace("fv").await;
    let cms = cm_path("fv");
    let with_unknown = |name: &str| {
        let mut cm = configmap(name, json!({}));
        cm["metadata"]["bogus"] = json!("x");
        cm
    };

    // Strict: an unknown field is a 400 and nothing is stored.
    let s = c
        .post(
            &format!("{cms}?fieldValidation=Strict"),
            &with_unknown("strict"),
        )
        .await
        .failure(400, "BadRequest");
    let msg = s["message"].as_str().unwrap();
    assert!(
        msg.contains(r#"strict decoding error: unknown field "metadata.bogus""#),
        "{msg}"
    );
    assert!(c.absent(&format!("{cms}/strict")).await);

    // Strict: a duplicate field is a 400 too.
    let dup = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dup","name":"dup"},"data":{"k":"v"}}"#;
    let r = c
        .request(
            Method::POST,
            &format!("{cms}?fieldValidation=Strict"),
            &[("content-type", JSON)],
            dup,
        )
        .await;
    let s = r.failure(400, "BadRequest");
    let msg = s["message"].as_str().unwrap();
    assert!(
        msg.contains(r#"strict decoding error: duplicate field "metadata.name""#),
        "{msg}"
    );
    assert!(c.absent(&format!("{cms}/dup")).await);

    // Warn (also the default): created, with a warning header per problem.
    for (query, name) in [("?fieldValidation=Warn", "warn"), ("", "default")] {
        let r = c.post(&format!("{cms}{query}"), &with_unknown(name)).await;
        assert_eq!(r.status, 201, "{}", r.text());
        let warnings: Vec<&str> = r
            .headers
            .get_all("warning")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(
            warnings,
            [r#"299 - "unknown field \"metadata.bogus\"""#],
            "{query}"
        );
    }
    let r = c
        .request(
            Method::POST,
            &format!("{cms}?fieldValidation=Warn"),
            &[("content-type", JSON)],
            dup.replace("\"dup\"", "\"dup-warn\""),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let warnings: Vec<&str> = r
        .headers
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(warnings, [r#"299 - "duplicate field \"metadata.name\"""#]);

    // Ignore: created, no warning.
    let r = c
        .post(
            &format!("{cms}?fieldValidation=Ignore"),
            &with_unknown("ignore"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(r.header("warning").is_none(), "{:?}", r.headers);

    // A bad directive is a 400.
    c.post(
        &format!("{cms}?fieldValidation=Loose"),
        &with_unknown("loose"),
    )
    .await
    .failure(400, "BadRequest");

    // Warn applies to updates as well.
    let mut updated = c.get_ok(&format!("{cms}/warn")).await;
    updated["metadata"]["bogus"] = json!("y");
    let r = c
        .put(&format!("{cms}/warn?fieldValidation=Warn"), &updated)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("warning"),
        Some(r#"299 - "unknown field \"metadata.bogus\"""#)
    );
    let s = c
        .put(&format!("{cms}/warn?fieldValidation=Strict"), &updated)
        .await
        .failure(400, "BadRequest");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains(r#"unknown field "metadata.bogus""#),
        "{s}"
    );
}

// ------------------------------------------------------------------ 11. protobuf

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_responses_and_request_bodies() {
    let api = TestApi::start().await;
    let c = Raw::new(&api);
    c.create_namespace("pb").await;
    let cms = cm_path("pb");
    c.post(&cms, &configmap("j", json!({ "app": "pb" })))
        .await
        .ok(201);

    let as_json = c.get_ok(&format!("{cms}/j")).await;
    let r = c
        .request(
            Method::GET,
            &format!("{cms}/j"),
            &[("accept", PROTOBUF)],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some(PROTOBUF));
    assert!(r.body.starts_with(b"k8s\0"), "the protobuf magic prefix");
    let decoded = api_types::wire::protobuf::decode(&r.body).expect("a decodable protobuf body");
    assert_eq!(decoded, as_json);

    // A list, too.
    let r = c
        .request(Method::GET, &cms, &[("accept", PROTOBUF)], Bytes::new())
        .await;
    assert_eq!(r.status, 200);
    let list = api_types::wire::protobuf::decode(&r.body).expect("a decodable list");
    assert_eq!(list["kind"], "ConfigMapList");
    assert_eq!(names(&list), vec!["j".to_string()]);

    // A protobuf request body creates an object.
    let body = api_types::wire::protobuf::encode(&json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": "p", "labels": { "wire": "protobuf" } },
        "data": { "greeting": "hello" },
    }))
    .expect("encodable");
    let r = c
        .request(Method::POST, &cms, &[("content-type", PROTOBUF)], body)
        .await;
    let created = r.ok(201);
    assert_eq!(created["data"]["greeting"], "hello");
    let stored = c.get_ok(&format!("{cms}/p")).await;
    assert_eq!(stored["metadata"]["labels"]["wire"], "protobuf");
    assert_eq!(stored["data"]["greeting"], "hello");

    // Garbage with the protobuf content type is a 400.
    let r = c
        .request(
            Method::POST,
            &cms,
            &[("content-type", PROTOBUF)],
            Bytes::from_static(b"not protobuf"),
        )
        .await;
    r.failure(400, "BadRequest");
}

// ------------------------------------------------------------------ 12. health, version, metrics, discovery, authn

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_version_metrics_discovery_and_authentication() {
    let api = TestApi::start().await;
    let c = Raw::new(&api);

    for path in ["/healthz", "/livez", "/readyz"] {
        let r = c.get(path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.text(), "ok", "{path}");
    }
    let r = c.get("/readyz?verbose").await;
    assert_eq!(r.status, 200);
    let text = r.text();
    for line in ["[+]ping ok", "[+]etcd ok", "readyz check passed"] {
        assert!(text.contains(line), "{line} in {text}");
    }
    let text = c.get("/livez?verbose").await.text();
    assert!(
        text.contains("[+]ping ok") && text.contains("livez check passed"),
        "{text}"
    );

    let v = c.get_ok("/version").await;
    assert_eq!(v["major"], "1");
    assert!(
        v["minor"]
            .as_str()
            .is_some_and(|m| m.parse::<u32>().is_ok()),
        "{v}"
    );
    assert!(v["gitVersion"].as_str().unwrap().starts_with("v1."), "{v}");
    assert!(v["platform"].as_str().unwrap().starts_with("linux/"), "{v}");

    // Metrics, with upstream's names and labels.
    c.create_namespace("m").await;
    c.post(&cm_path("m"), &configmap("one", json!({})))
        .await
        .ok(201);
    c.get_ok(&format!("{}/one", cm_path("m"))).await;
    let mut watch = c.watch(&format!("{}?watch=true", cm_path("m"))).await;
    watch.expect("ADDED", "one").await;
    // The gauges follow the watch caches, which apply etcd's events asynchronously.
    let text = wait_until(
        DEADLINE,
        "a registered watcher and 5 stored namespaces",
        || {
            let c = c.clone();
            async move {
                let text = c.metrics().await;
                let watching = metric_value(
                    &text,
                    "apiserver_registered_watchers",
                    &[("group", ""), ("version", "v1"), ("kind", "ConfigMap")],
                )
                .is_some_and(|v| v >= 1.0);
                let namespaces = metric_value(
                    &text,
                    "apiserver_storage_objects",
                    &[("resource", "namespaces")],
                )
                .is_some_and(|v| v >= 5.0);
                (watching && namespaces).then_some(text)
            }
        },
    )
    .await;
    let created = metric_value(
        &text,
        "apiserver_request_total",
        &[
            ("verb", "POST"),
            ("resource", "configmaps"),
            ("code", "201"),
            ("version", "v1"),
            ("scope", "namespace"),
        ],
    );
    assert!(
        created.is_some_and(|v| v >= 1.0),
        "apiserver_request_total for the create"
    );
    let got = metric_value(
        &text,
        "apiserver_request_total",
        &[
            ("verb", "GET"),
            ("resource", "configmaps"),
            ("code", "200"),
            ("scope", "resource"),
        ],
    );
    assert!(
        got.is_some_and(|v| v >= 1.0),
        "apiserver_request_total for the get"
    );
    assert!(metric_value(
        &text,
        "apiserver_request_duration_seconds_count",
        &[("verb", "POST"), ("resource", "configmaps")]
    )
    .is_some_and(|v| v >= 1.0));
    assert!(
        text.contains("apiserver_request_duration_seconds_bucket{"),
        "duration histogram"
    );
    let stored = metric_value(
        &text,
        "apiserver_storage_objects",
        &[("resource", "configmaps")],
    );
    assert!(
        stored.is_some_and(|v| v >= 1.0),
        "apiserver_storage_objects for configmaps: {stored:?}"
    );
    assert!(
        text.contains("etcd_request_duration_seconds"),
        "etcd_request_duration_seconds"
    );
    drop(watch);

    // Discovery.
    let core = c.get_ok("/api").await;
    assert_eq!(core["kind"], "APIVersions");
    assert_eq!(core["versions"], json!(["v1"]));
    let groups = c.get_ok("/apis").await;
    assert_eq!(groups["kind"], "APIGroupList");
    let apps = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "apps")
        .cloned()
        .expect("apps in /apis");
    assert_eq!(apps["preferredVersion"]["groupVersion"], "apps/v1");
    let group = c.get_ok("/apis/apps").await;
    assert_eq!(group["kind"], "APIGroup");
    assert_eq!(group["name"], "apps");
    assert_eq!(group["versions"][0]["groupVersion"], "apps/v1");
    let list = c.get_ok("/apis/apps/v1").await;
    assert_eq!(list["kind"], "APIResourceList");
    assert_eq!(list["groupVersion"], "apps/v1");
    let resources = list["resources"].as_array().unwrap();
    let find = |name: &str| {
        resources
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in discovery"))
    };
    let deployments = find("deployments");
    assert_eq!(deployments["kind"], "Deployment");
    assert_eq!(deployments["namespaced"], true);
    assert_eq!(deployments["shortNames"], json!(["deploy"]));
    for verb in [
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ] {
        assert!(
            deployments["verbs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == verb),
            "{verb}"
        );
    }
    let scale = find("deployments/scale");
    assert_eq!(scale["group"], "autoscaling");
    assert_eq!(scale["version"], "v1");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(find("deployments/status")["kind"], "Deployment");
    let core_v1 = c.get_ok("/api/v1").await;
    assert_eq!(core_v1["groupVersion"], "v1");
    let core_resources = core_v1["resources"].as_array().unwrap();
    let eviction = core_resources
        .iter()
        .find(|r| r["name"] == "pods/eviction")
        .cloned()
        .expect("pods/eviction");
    assert_eq!(eviction["group"], "policy");
    assert_eq!(eviction["kind"], "Eviction");
    let namespaces = core_resources
        .iter()
        .find(|r| r["name"] == "namespaces")
        .cloned()
        .expect("namespaces");
    assert!(!namespaces["verbs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v == "deletecollection"));
    c.get("/apis/widgets.example.com")
        .await
        .failure(404, "NotFound");

    // Authentication: a wrong token and no token are 401.
    for raw in [c.with_token(Some("not-a-token")), c.with_token(None)] {
        let r = raw.get("/api/v1/namespaces").await;
        let s = r.failure(401, "Unauthorized");
        assert_eq!(s["message"], "Unauthorized");
    }
}

// ------------------------------------------------------------------ 13. paging

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_with_limit_and_continue() {
    let api = TestApi::start().await;
    let c = Raw::new(&api);
    c.create_namespace("page").await;
    let cms = cm_path("page");
    for i in 0..30 {
        c.post(&cms, &configmap(&format!("cm-{i:02}"), json!({})))
            .await
            .ok(201);
    }

    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    let mut snapshot = None;
    loop {
        let path = match &token {
            Some(t) => format!("{cms}?limit=10&continue={t}"),
            None => format!("{cms}?limit=10"),
        };
        let page = c.get_ok(&path).await;
        pages += 1;
        assert_eq!(page["kind"], "ConfigMapList");
        let rv = rv_of(&page);
        assert_eq!(
            *snapshot.get_or_insert(rv),
            rv,
            "every page is read at the first page's revision"
        );
        let items = names(&page);
        assert_eq!(items.len(), 10);
        seen.extend(items);
        let remaining = page["metadata"]
            .get("remainingItemCount")
            .and_then(Value::as_i64);
        match page["metadata"]["continue"]
            .as_str()
            .filter(|t| !t.is_empty())
        {
            Some(t) => {
                assert_eq!(
                    remaining,
                    Some(30 - 10 * pages),
                    "remainingItemCount on page {pages}"
                );
                token = Some(t.to_string());
                // Changes between pages do not show in the continued list.
                if pages == 1 {
                    c.post(&cms, &configmap("cm-99", json!({}))).await.ok(201);
                }
            }
            None => {
                assert_eq!(remaining, None, "no remainingItemCount on the last page");
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..30).map(|i| format!("cm-{i:02}")).collect();
    assert_eq!(seen, expected);

    // A continue token with a resourceVersion is a 400; a garbled token too.
    let first = c.get_ok(&format!("{cms}?limit=5")).await;
    let t = first["metadata"]["continue"].as_str().unwrap().to_string();
    c.get(&format!("{cms}?limit=5&continue={t}&resourceVersion=5"))
        .await
        .failure(400, "BadRequest");
    c.get(&format!("{cms}?limit=5&continue=garbage"))
        .await
        .failure(400, "BadRequest");

    // A continue token from a compacted revision is 410 Expired.
    c.post(&cms, &configmap("cm-100", json!({}))).await.ok(201);
    compact_now(&api).await;
    let s = c
        .get(&format!("{cms}?limit=5&continue={t}"))
        .await
        .failure(410, "Expired");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("continue parameter is too old"),
        "{s}"
    );
}

// ------------------------------------------------------------------ known server bugs
//
// Each test below asserts upstream behaviour the server does not have yet; they are
// ignored until it does (run them with `--ignored`).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_create_of_an_existing_name_conflicts() {
    let api = TestApi::start().await;
    let c = Raw::new(&api);
    let cms = cm_path("default");
    c.post(&cms, &configmap("taken", json!({}))).await.ok(201);
    let s = c
        .post(&format!("{cms}?dryRun=All"), &configmap("taken", json!({})))
        .await
        .failure(409, "AlreadyExists");
    assert_eq!(s["message"], "configmaps \"taken\" already exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletecollection_answers_the_deleted_objects() {
    let api = TestApi::start().await;
    let c = Raw::new(&api);
    let cms = cm_path("default");
    for name in ["a", "b"] {
        c.post(&cms, &configmap(name, json!({ "sweep": "yes" })))
            .await
            .ok(201);
    }
    let deleted = c
        .delete(&format!("{cms}?labelSelector=sweep%3Dyes"))
        .await
        .ok(200);
    assert_eq!(deleted["kind"], "ConfigMapList");
    for item in deleted["items"].as_array().unwrap() {
        assert_eq!(item["kind"], "ConfigMap", "{item}");
    }
    let mut gone = names(&deleted);
    gone.sort();
    assert_eq!(gone, vec!["a".to_string(), "b".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_waiting_on_finalizers_answer_200() {
    let api = TestApi::start().await;
    let c = Raw::new(&api);
    let cms = cm_path("default");
    let mut held = configmap("held", json!({}));
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    c.post(&cms, &held).await.ok(201);
    assert_eq!(
        c.delete(&format!("{cms}/held")).await.status,
        200,
        "finalizers"
    );
    c.post(&cms, &configmap("fg", json!({}))).await.ok(201);
    assert_eq!(
        c.delete(&format!("{cms}/fg?propagationPolicy=Foreground"))
            .await
            .status,
        200,
        "Foreground"
    );
    c.post(&cms, &configmap("orphan", json!({}))).await.ok(201);
    assert_eq!(
        c.delete(&format!("{cms}/orphan?propagationPolicy=Orphan"))
            .await
            .status,
        200,
        "Orphan"
    );
    c.create_namespace("going").await;
    assert_eq!(
        c.delete("/api/v1/namespaces/going").await.status,
        200,
        "namespace"
    );
    // Only an explicit orphanDependents=false is answered 202.
    c.post(&cms, &configmap("cascade", json!({}))).await.ok(201);
    let r = c
        .delete_with(&format!("{cms}/cascade"), &json!({ "kind": "DeleteOptions", "apiVersion": "v1", "orphanDependents": false, "propagationPolicy": "Foreground" }))
        .await;
    assert_eq!(r.status, 202, "orphanDependents=false: {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_only_on_kinds_that_track_it() {
    let api = TestApi::start().await;
    let c = Raw::new(&api);
    let cms = cm_path("default");
    let cm = c.post(&cms, &configmap("plain", json!({}))).await.ok(201);
    assert!(cm["metadata"].get("generation").is_none(), "{cm}");
    let cm = c
        .patch(
            &format!("{cms}/plain"),
            MERGE_PATCH,
            &json!({ "data": { "k": "2" } }),
        )
        .await
        .ok(200);
    assert!(cm["metadata"].get("generation").is_none(), "{cm}");
    let svc = c
        .get_ok("/api/v1/namespaces/default/services/kubernetes")
        .await;
    assert!(svc["metadata"].get("generation").is_none(), "{svc}");
    let d = c
        .post(
            "/apis/apps/v1/namespaces/default/deployments",
            &deployment("web"),
        )
        .await
        .ok(201);
    assert_eq!(d["metadata"]["generation"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_selector_exit_carries_the_previous_object() {
    let api = TestApi::start().await;
    let c = Raw::new(&api);
    let cms = cm_path("default");
    let rv0 = rv_of(&c.get_ok(&cms).await);
    let mut w = c
        .watch(&format!(
            "{cms}?watch=true&labelSelector=app%3Dx&resourceVersion={rv0}"
        ))
        .await;
    c.post(&cms, &configmap("m", json!({ "app": "x" })))
        .await
        .ok(201);
    w.expect("ADDED", "m").await;
    let left = c
        .patch(
            &format!("{cms}/m"),
            MERGE_PATCH,
            &json!({ "metadata": { "labels": { "app": "y" } } }),
        )
        .await
        .ok(200);
    let gone = w.expect("DELETED", "m").await;
    assert_eq!(gone["metadata"]["labels"]["app"], "x", "{gone}");
    assert_eq!(
        rv_of(&gone),
        rv_of(&left),
        "with the resourceVersion of the change"
    );

    // Field selectors behave the same: see watch_timeout_selectors_and_initial_events.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_watches_are_unregistered() {
    let api = TestApi::start().await;
    let c = Raw::new(&api);
    let cms = cm_path("default");
    c.post(&cms, &configmap("one", json!({}))).await.ok(201);
    let watchers = |text: &str| {
        metric_value(
            text,
            "apiserver_registered_watchers",
            &[("group", ""), ("version", "v1"), ("kind", "ConfigMap")],
        )
    };
    let mut w = c.watch(&format!("{cms}?watch=true")).await;
    w.expect("ADDED", "one").await;
    wait_until(DEADLINE, "a registered watcher", || {
        let c = c.clone();
        async move {
            watchers(&c.metrics().await)
                .is_some_and(|v| v == 1.0)
                .then_some(())
        }
    })
    .await;
    drop(w);
    wait_until(DEADLINE, "the closed watch to be unregistered", || {
        let c = c.clone();
        async move {
            watchers(&c.metrics().await)
                .is_some_and(|v| v == 0.0)
                .then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_messages_match_upstream() {
    let api = TestApi::start().await;
    let c = Raw::new(&api);
    let mut wrong = Vec::new();
    let mut expect = |what: &str, s: Value, message: &str| {
        if s["message"] != message {
            wrong.push(format!(
                "{what}: expected {message:?}, got {}",
                s["message"]
            ));
        }
    };

    let s = c
        .get("/api/v1/namespaces/default/widgets")
        .await
        .failure(404, "NotFound");
    expect(
        "unknown resource",
        s,
        "the server could not find the requested resource",
    );
    let s = c
        .delete("/api/v1/namespaces")
        .await
        .failure(405, "MethodNotAllowed");
    expect(
        "unsupported verb",
        s,
        "the server does not allow this method on the requested resource",
    );
    let mut cm = configmap("strict", json!({}));
    cm["metadata"]["bogus"] = json!("x");
    let s = c
        .post(
            &format!("{}?fieldValidation=Strict", cm_path("default")),
            &cm,
        )
        .await
        .failure(400, "BadRequest");
    expect(
        "strict decoding",
        s,
        r#"ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: unknown field "metadata.bogus""#,
    );
    let pods = "/api/v1/namespaces/default/pods";
    c.post(pods, &pod("p", json!({}), Some("node-1")))
        .await
        .ok(201);
    let binding = json!({ "apiVersion": "v1", "kind": "Binding", "metadata": { "name": "p" }, "target": { "name": "node-2" } });
    let s = c
        .post(&format!("{pods}/p/binding"), &binding)
        .await
        .failure(409, "Conflict");
    expect(
        "second binding",
        s,
        r#"Operation cannot be fulfilled on pods/binding "p": pod p is already assigned to node "node-1""#,
    );

    assert!(
        wrong.is_empty(),
        "messages differ from upstream:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_right_after_a_namespace_delete_are_forbidden() {
    let api = TestApi::start().await;
    let c = Raw::new(&api);
    let mut admitted = Vec::new();
    for i in 0..50 {
        let ns = format!("short-lived-{i}");
        c.create_namespace(&ns).await;
        c.delete(&format!("/api/v1/namespaces/{ns}")).await;
        let r = c.post(&cm_path(&ns), &configmap("late", json!({}))).await;
        if r.status != 403 {
            admitted.push(format!("{ns}: {} {}", r.status, r.text()));
        }
    }
    assert!(
        admitted.is_empty(),
        "created in terminating namespaces:\n{}",
        admitted.join("\n")
    );
}

/// Sets a pod's status.phase through the status subresource.
async fn set_phase(c: &Raw, pods: &str, name: &str, phase: &str) {
    c.patch(
        &format!("{pods}/{name}/status"),
        MERGE_PATCH,
        &json!({ "status": { "phase": phase } }),
    )
    .await
    .ok(200);
}
