//! The kubelet's HTTPS server on port 10250 (upstream `pkg/kubelet/server`): /healthz,
//! /metrics, /metrics/resource, /stats/summary, /pods,
//! /containerLogs/{ns}/{pod}/{container} (follow, previous, tailLines, sinceSeconds,
//! sinceTime, timestamps, limitBytes), and /exec, /attach and /portForward,
//! which ask the runtime for a streaming URL and splice the client's upgraded connection
//! (SPDY or WebSocket, whatever it asked for) to the runtime's streaming server, as
//! upstream does when it does not redirect. The serving certificate is `--tls-cert-file`
//! or a self-signed one kept as `<root-dir>/pki/kubelet.{crt,key}`, as upstream.
//!
//! Every request is authenticated and authorized as upstream's `pkg/kubelet/server/auth.go`
//! ([`AuthSettings`]): `--anonymous-auth`, bearer tokens through a TokenReview with
//! `--authentication-token-webhook`, client certificates of `--client-ca-file`; then
//! with `--authorization-mode=Webhook` a SubjectAccessReview for `nodes/<subresource>` of
//! this node (see [`node_subresource`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::Instrument;

use component_base::delegated_auth::{bearer_token, Attributes, Decision, DelegatedAuth, UserInfo};
use component_base::shutdown::Shutdown;

use crate::cri::api;
use crate::logs::{complete_lines, LogOptions, Renderer};
use crate::pod_workers::PodManager;

type Body = BoxBody<Bytes, std::io::Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("generating the self-signed serving certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("--client-ca-file: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
}

/// `--authorization-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthorizationMode {
    /// Every authenticated (or allowed anonymous) request is allowed.
    AlwaysAllow,
    /// A SubjectAccessReview per request.
    Webhook,
}

impl std::str::FromStr for AuthorizationMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "AlwaysAllow" => Ok(AuthorizationMode::AlwaysAllow),
            "Webhook" => Ok(AuthorizationMode::Webhook),
            other => Err(format!(
                "invalid --authorization-mode {other:?}: want AlwaysAllow or Webhook"
            )),
        }
    }
}

/// Upstream's kubelet authentication and authorization settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthSettings {
    /// `--anonymous-auth`: requests without an identity are `system:anonymous`.
    pub anonymous: bool,
    /// `--authentication-token-webhook`: bearer tokens are checked with a TokenReview.
    pub token_webhook: bool,
    /// `--authentication-token-webhook-cache-ttl` (2m).
    pub token_webhook_cache_ttl: Duration,
    /// `--client-ca-file`: client certificates it signed authenticate as CN (O groups).
    pub client_ca_file: Option<PathBuf>,
    /// `--authorization-mode`.
    pub authorization_mode: AuthorizationMode,
    /// `--authorization-webhook-cache-authorized-ttl` (5m).
    pub authorized_ttl: Duration,
    /// `--authorization-webhook-cache-unauthorized-ttl` (30s).
    pub unauthorized_ttl: Duration,
}

impl Default for AuthSettings {
    /// Upstream's flag defaults: anonymous allowed, no token webhook, AlwaysAllow.
    fn default() -> Self {
        AuthSettings {
            anonymous: true,
            token_webhook: false,
            token_webhook_cache_ttl: Duration::from_secs(120),
            client_ca_file: None,
            authorization_mode: AuthorizationMode::AlwaysAllow,
            authorized_ttl: Duration::from_secs(300),
            unauthorized_ttl: Duration::from_secs(30),
        }
    }
}

/// The authenticator and authorizer of the kubelet port.
pub struct KubeletAuth {
    pub settings: AuthSettings,
    pub node_name: String,
    delegated: DelegatedAuth,
}

impl KubeletAuth {
    /// TokenReviews and SubjectAccessReviews go through `client` (the kubelet's own).
    pub fn new(settings: AuthSettings, node_name: &str, client: kube::Client) -> KubeletAuth {
        let options = component_base::options::DelegatedAuthOptions {
            client_ca_file: settings.client_ca_file.clone(),
            authorization_always_allow_paths: Vec::new(),
            authentication_token_webhook_cache_ttl: settings.token_webhook_cache_ttl,
            authorization_webhook_cache_authorized_ttl: settings.authorized_ttl,
            authorization_webhook_cache_unauthorized_ttl: settings.unauthorized_ttl,
            ..Default::default()
        };
        KubeletAuth {
            delegated: DelegatedAuth::new(client.clone(), client, &options),
            settings,
            node_name: node_name.to_owned(),
        }
    }

    /// None when the request may go on, else upstream's 401 or 403 (plain text).
    async fn check(
        &self,
        method: &Method,
        path: &str,
        headers: &http::HeaderMap,
        cert_user: Option<&UserInfo>,
    ) -> Option<Response<Body>> {
        let user = if self.settings.token_webhook && bearer_token(headers).is_some() {
            match self.delegated.authenticate(headers, None, false).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "unable to authenticate the request");
                    return Some(text(StatusCode::UNAUTHORIZED, "Unauthorized"));
                }
            }
        } else if let Some(u) = cert_user {
            u.clone()
        } else if self.settings.anonymous {
            UserInfo::anonymous()
        } else {
            return Some(text(StatusCode::UNAUTHORIZED, "Unauthorized"));
        };
        if self.settings.authorization_mode == AuthorizationMode::AlwaysAllow {
            return None;
        }
        let attributes = Attributes::Resource {
            verb: kubelet_verb(method).into(),
            group: String::new(),
            resource: "nodes".into(),
            subresource: node_subresource(path).into(),
            name: self.node_name.clone(),
            namespace: String::new(),
        };
        let what = format!(
            "(user={}, verb={}, resource=nodes, subresource={})",
            user.name,
            attributes.verb(),
            node_subresource(path)
        );
        match self.delegated.authorize(&user, &attributes).await {
            Decision::Allow => None,
            Decision::Deny(reason) => {
                tracing::debug!(%reason, "Forbidden {what}");
                Some(text(StatusCode::FORBIDDEN, format!("Forbidden {what}")))
            }
            Decision::Error(e) => {
                tracing::warn!(error = %e, "Authorization error {what}");
                Some(text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("Authorization error {what}"),
                ))
            }
        }
    }
}

/// The kubelet's verb for a method (upstream's `GetRequestAttributes`): only POST, GET,
/// PUT, PATCH and DELETE have one.
pub fn kubelet_verb(method: &Method) -> &'static str {
    match *method {
        Method::POST => "create",
        Method::GET => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    }
}

/// The `nodes` subresource a kubelet path is authorized as (upstream's
/// `GetRequestAttributes`): `/stats/*` stats, `/metrics*` metrics, `/logs/*` log,
/// `/spec/*` spec, `/checkpoint/*` checkpoint, everything else proxy.
pub fn node_subresource(path: &str) -> &'static str {
    let under = |prefix: &str| {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    if under("/stats") {
        "stats"
    } else if under("/metrics") {
        "metrics"
    } else if under("/logs") {
        "log"
    } else if under("/spec") {
        "spec"
    } else if under("/checkpoint") {
        "checkpoint"
    } else {
        "proxy"
    }
}

/// The serving certificate and key files: given, or self-signed in `<root>/pki` for the
/// node's name and addresses (generated once, reused after).
pub fn certificate_files(root_dir: &Path, hosts: &[String]) -> Result<(PathBuf, PathBuf), Error> {
    let dir = root_dir.join("pki");
    let cert = dir.join("kubelet.crt");
    let key = dir.join("kubelet.key");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let generated = rcgen::generate_simple_self_signed(hosts.to_vec())?;
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::File { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(err(&dir))?;
    std::fs::write(&key, generated.signing_key.serialize_pem()).map_err(err(&key))?;
    std::fs::write(&cert, generated.cert.pem()).map_err(err(&cert))?;
    Ok((cert, key))
}

/// A rustls server configuration for HTTP/1.1 (upgrades) and HTTP/2; with
/// `client_ca_file`, it asks for (but does not require) a client certificate it signed.
pub fn tls_config(
    cert: &Path,
    key: &Path,
    client_ca_file: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| Error::File {
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(Error::Pem {
            path: cert.to_path_buf(),
            what: "certificate",
        });
    }
    let key_pem = read(key)?;
    let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| Error::Pem {
            path: key.to_path_buf(),
            what: "private key",
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let pem = read(path)?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut pem.as_slice()).filter_map(Result::ok) {
                roots.add(cert)?;
            }
            if roots.is_empty() {
                return Err(Error::Pem {
                    path: path.to_path_buf(),
                    what: "certificate",
                });
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .allow_unauthenticated()
                    .build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key_der)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What the handlers need.
pub struct KubeletServer {
    pub registry: prometheus::Registry,
    pub pods: Arc<PodManager>,
    /// `/stats/summary`.
    pub stats: Arc<crate::stats::StatsProvider>,
    /// `/metrics/resource`.
    pub resource_registry: prometheus::Registry,
    /// Who may use the port.
    pub auth: KubeletAuth,
}

/// Binds `addr` and serves until shutdown; the bound address.
pub async fn serve(
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    server: Arc<KubeletServer>,
    shutdown: Shutdown,
) -> Result<SocketAddr, Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    tracing::info!("kubelet serving securely on {local}");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(
        accept(listener, acceptor, server, shutdown)
            .instrument(tracing::info_span!("kubelet-server", addr = %local)),
    );
    Ok(local)
}

async fn accept(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    server: Arc<KubeletServer>,
    mut shutdown: Shutdown,
) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            () = shutdown.signaled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let server = server.clone();
        connections.spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let cert_user = component_base::serving::peer_user(tls.get_ref().1.peer_certificates());
            let service = hyper::service::service_fn(move |req| {
                let server = server.clone();
                let cert_user = cert_user.clone();
                async move { Ok::<_, Infallible>(server.handle(req, cert_user).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", message.into())
}

fn query_flag(pairs: &[(String, String)], names: &[&str]) -> bool {
    pairs
        .iter()
        .any(|(k, v)| names.contains(&k.as_str()) && matches!(v.as_str(), "1" | "true" | "True"))
}

impl KubeletServer {
    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        cert_user: Option<Arc<UserInfo>>,
    ) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        let headers = req.headers().clone();
        if let Some(refused) = self
            .auth
            .check(&method, &path, &headers, cert_user.as_deref())
            .await
        {
            return refused;
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let get = req.method() == Method::GET;
        match segments.as_slice() {
            ["healthz"] if get => text(StatusCode::OK, "ok"),
            ["metrics"] if get => full(
                StatusCode::OK,
                component_base::metrics::TEXT_CONTENT_TYPE,
                component_base::metrics::encode_text(&self.registry),
            ),
            ["metrics", "resource"] if get => full(
                StatusCode::OK,
                component_base::metrics::TEXT_CONTENT_TYPE,
                component_base::metrics::encode_text(&self.resource_registry),
            ),
            ["stats", "summary"] if get => {
                let query = req.uri().query().unwrap_or("").to_owned();
                self.stats_summary(&query).await
            }
            ["pods"] if get => self.pod_list(),
            ["containerLogs", ns, pod, container] if get => {
                let query = req.uri().query().unwrap_or("").to_owned();
                self.container_logs(ns, pod, container, &query).await
            }
            ["exec", ns, pod, container] | ["exec", ns, pod, _, container] => {
                let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
                self.exec(req, &ns, &pod, &container, false).await
            }
            ["attach", ns, pod, container] | ["attach", ns, pod, _, container] => {
                let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
                self.exec(req, &ns, &pod, &container, true).await
            }
            ["portForward", ns, pod] | ["portForward", ns, pod, _] => {
                let (ns, pod) = (ns.to_string(), pod.to_string());
                self.port_forward(req, &ns, &pod).await
            }
            _ => text(StatusCode::NOT_FOUND, "404 page not found"),
        }
    }

    /// `/stats/summary`, whole or (`only_cpu_and_memory=true`) CPU and memory only.
    async fn stats_summary(&self, query: &str) -> Response<Body> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let summary = match self.stats.summary().await {
            Ok(s) => s,
            Err(e) => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("Internal Error: failed to get node info: {e}"),
                )
            }
        };
        let body = if query_flag(&pairs, &["only_cpu_and_memory"]) {
            serde_json::to_string(&summary.only_cpu_and_memory())
        } else {
            serde_json::to_string(&*summary)
        };
        match body {
            Ok(body) => full(StatusCode::OK, "application/json", body),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }

    fn pod_list(&self) -> Response<Body> {
        let pods = self.pods.pods();
        let items: Vec<&k8s_openapi::api::core::v1::Pod> = pods.iter().map(AsRef::as_ref).collect();
        let body = serde_json::json!({
            "kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items,
        });
        full(StatusCode::OK, "application/json", body.to_string())
    }

    /// The container's instances in the runtime (newest first), or an error response.
    async fn container(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
    ) -> Result<Vec<api::ContainerStatus>, Response<Body>> {
        let Some(p) = self.pods.pod(ns, pod) else {
            return Err(text(
                StatusCode::NOT_FOUND,
                format!("pod \"{pod}\" in namespace \"{ns}\" not found"),
            ));
        };
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let state = self
            .pods
            .runtime()
            .state(&uid)
            .await
            .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let instances: Vec<api::ContainerStatus> = state
            .instances(container)
            .into_iter()
            .map(|c| c.status.clone())
            .collect();
        if instances.is_empty() {
            return Err(text(
                StatusCode::NOT_FOUND,
                format!("container \"{container}\" in pod \"{pod}\" is not available"),
            ));
        }
        Ok(instances)
    }

    async fn container_logs(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        query: &str,
    ) -> Response<Body> {
        let options = match LogOptions::parse(query, jiff::Timestamp::now()) {
            Ok(o) => o,
            Err(e) => return text(StatusCode::BAD_REQUEST, e),
        };
        let instances = match self.container(ns, pod, container).await {
            Ok(i) => i,
            Err(r) => return r,
        };
        let status = if options.previous {
            match instances.get(1).or_else(|| {
                // The newest instance waiting to restart is the previous one to a user.
                instances
                    .first()
                    .filter(|s| s.state() == api::ContainerState::ContainerExited)
            }) {
                Some(s) => s.clone(),
                None => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!(
                        "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                    ),
                    )
                }
            }
        } else {
            instances[0].clone()
        };
        let path = PathBuf::from(&status.log_path);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) => {
                return text(
                    StatusCode::NOT_FOUND,
                    format!("failed to open log file {}: {e}", path.display()),
                )
            }
        };
        let mut data = Vec::new();
        if let Err(e) = file.read_to_end(&mut data).await {
            return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        }
        let (done, _) = complete_lines(&data);
        let offset = done.len() as u64;
        let follow = options.follow && !options.previous;
        let mut renderer = Renderer::new(options);
        let first = renderer.render(done, true);
        if !follow || renderer.exhausted() {
            return full(StatusCode::OK, "text/plain", first);
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
        let _ = tx.send(Ok(Frame::data(Bytes::from(first)))).await;
        let runtime = self.pods.runtime().runtime.clone();
        let id = status.id.clone();
        tokio::spawn(
            async move {
                let mut offset = offset;
                let mut idle = 0u32;
                loop {
                    if tx.is_closed() {
                        return;
                    }
                    let mut more = Vec::new();
                    if file.seek(std::io::SeekFrom::Start(offset)).await.is_err()
                        || file.read_to_end(&mut more).await.is_err()
                    {
                        return;
                    }
                    let (done, _) = complete_lines(&more);
                    if done.is_empty() {
                        idle += 1;
                        // Every second of quiet: stop once the container has exited.
                        if idle.is_multiple_of(5) {
                            let running = runtime
                                .container_status(&id)
                                .await
                                .is_ok_and(|s| s.state() == api::ContainerState::ContainerRunning);
                            if !running {
                                return;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    idle = 0;
                    offset += done.len() as u64;
                    let out = renderer.render(done, false);
                    if !out.is_empty() && tx.send(Ok(Frame::data(Bytes::from(out)))).await.is_err()
                    {
                        return;
                    }
                    if renderer.exhausted() {
                        return;
                    }
                }
            }
            .instrument(tracing::debug_span!("follow-logs")),
        );
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut r = Response::new(BodyExt::boxed(body));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain"),
        );
        r
    }

    async fn exec(
        &self,
        req: Request<Incoming>,
        ns: &str,
        pod: &str,
        container: &str,
        attach: bool,
    ) -> Response<Body> {
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let instances = match self.container(ns, pod, container).await {
            Ok(i) => i,
            Err(r) => return r,
        };
        let latest = &instances[0];
        if latest.state() != api::ContainerState::ContainerRunning {
            return text(
                StatusCode::BAD_REQUEST,
                format!("container {container} is not running"),
            );
        }
        let stdin = query_flag(&pairs, &["input", "stdin"]);
        let stdout = query_flag(&pairs, &["output", "stdout"]);
        let stderr = query_flag(&pairs, &["error", "stderr"]);
        let tty = query_flag(&pairs, &["tty"]);
        let runtime = &self.pods.runtime().runtime;
        let url = if attach {
            runtime
                .attach(api::AttachRequest {
                    container_id: latest.id.clone(),
                    stdin,
                    tty,
                    stdout,
                    stderr,
                })
                .await
        } else {
            let cmd: Vec<String> = pairs
                .iter()
                .filter(|(k, _)| k == "command")
                .map(|(_, v)| v.clone())
                .collect();
            if cmd.is_empty() {
                return text(
                    StatusCode::BAD_REQUEST,
                    "you must specify at least 1 command",
                );
            }
            runtime
                .exec(api::ExecRequest {
                    container_id: latest.id.clone(),
                    cmd,
                    tty,
                    stdin,
                    stdout,
                    stderr,
                })
                .await
        };
        match url {
            Ok(url) => proxy(req, &url).await,
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }

    async fn port_forward(&self, req: Request<Incoming>, ns: &str, pod: &str) -> Response<Body> {
        let Some(p) = self.pods.pod(ns, pod) else {
            return text(
                StatusCode::NOT_FOUND,
                format!("pod \"{pod}\" in namespace \"{ns}\" not found"),
            );
        };
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let state = match self.pods.runtime().state(&uid).await {
            Ok(s) => s,
            Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        let Some(sandbox) = state.sandbox else {
            return text(StatusCode::BAD_REQUEST, format!("pod {pod} is not running"));
        };
        let ports: Vec<i32> = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .filter(|(k, _)| k == "port")
            .filter_map(|(_, v)| v.parse().ok())
            .collect();
        match self
            .pods
            .runtime()
            .runtime
            .port_forward(api::PortForwardRequest {
                pod_sandbox_id: sandbox.id,
                port: ports,
            })
            .await
        {
            Ok(url) => proxy(req, &url).await,
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

/// Forwards the request to the runtime's streaming `url`; on 101 both upgraded
/// connections are spliced.
async fn proxy(mut req: Request<Incoming>, url: &str) -> Response<Body> {
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("bad streaming url: {e}"),
            )
        }
    };
    let Some(authority) = uri.authority().map(|a| a.as_str().to_owned()) else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "streaming url has no host",
        );
    };
    let stream = match tokio::net::TcpStream::connect(&authority).await {
        Ok(s) => s,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("error dialing the runtime's streaming server: {e}"),
            )
        }
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut builder = Request::builder()
        .method(req.method().clone())
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()));
    for (k, v) in req.headers() {
        if k != header::HOST && k != header::AUTHORIZATION {
            builder = builder.header(k, v);
        }
    }
    builder = builder.header(header::HOST, authority.as_str());
    let Ok(upstream) = builder.body(Empty::<Bytes>::new()) else {
        return text(StatusCode::BAD_REQUEST, "invalid request headers");
    };
    let mut resp = match sender.send_request(upstream).await {
        Ok(r) => r,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let client_side = hyper::upgrade::on(&mut req);
        let runtime_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(
            async move {
                let (Ok(a), Ok(b)) = tokio::join!(client_side, runtime_side) else {
                    return;
                };
                let mut a = TokioIo::new(a);
                let mut b = TokioIo::new(b);
                let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
            }
            .instrument(tracing::debug_span!("stream")),
        );
        let mut out = Response::new(
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed(),
        );
        *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *out.headers_mut() = resp.headers().clone();
        return out;
    }
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, body.map_err(std::io::Error::other).boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_upstreams_node_subresources() {
        assert_eq!(node_subresource("/stats/summary"), "stats");
        assert_eq!(node_subresource("/stats"), "stats");
        assert_eq!(node_subresource("/metrics"), "metrics");
        assert_eq!(node_subresource("/metrics/resource"), "metrics");
        assert_eq!(node_subresource("/logs/messages"), "log");
        assert_eq!(node_subresource("/spec/"), "spec");
        assert_eq!(node_subresource("/checkpoint/ns/pod/c"), "checkpoint");
        for path in [
            "/pods",
            "/healthz",
            "/run/ns/pod/c",
            "/exec/ns/pod/c",
            "/attach/ns/pod/c",
            "/portForward/ns/pod",
            "/containerLogs/ns/pod/c",
            "/statsx",
        ] {
            assert_eq!(node_subresource(path), "proxy", "{path}");
        }
    }

    #[test]
    fn verbs_are_upstreams() {
        assert_eq!(kubelet_verb(&Method::GET), "get");
        assert_eq!(kubelet_verb(&Method::POST), "create");
        assert_eq!(kubelet_verb(&Method::PUT), "update");
        assert_eq!(kubelet_verb(&Method::PATCH), "patch");
        assert_eq!(kubelet_verb(&Method::DELETE), "delete");
        assert_eq!(kubelet_verb(&Method::HEAD), "");
    }

    #[test]
    fn authorization_modes() {
        assert_eq!(
            "Webhook".parse::<AuthorizationMode>(),
            Ok(AuthorizationMode::Webhook)
        );
        assert_eq!(
            "AlwaysAllow".parse::<AuthorizationMode>(),
            Ok(AuthorizationMode::AlwaysAllow)
        );
        assert!("RBAC"
            .parse::<AuthorizationMode>()
            .unwrap_err()
            .contains("want AlwaysAllow or Webhook"));
    }
}
