//! The daemons' HTTP(S) endpoint: `/healthz`, `/livez`, `/readyz` (with `/<endpoint>/<check>`
//! sub-paths, `?verbose` and `?exclude=`) and `/metrics`, as upstream's
//! `k8s.io/apiserver/pkg/server/healthz` handlers and the components' secure serving.
//!
//! As upstream, [`serve_if_configured`] (kube-scheduler, kube-controller-manager) puts
//! every path behind delegated authentication and authorization
//! ([`crate::delegated_auth`]: a TokenReview or a `--client-ca-file` certificate, then a
//! SubjectAccessReview against the apiserver), except `--authorization-always-allow-paths`
//! (`/healthz`, `/readyz`, `/livez` by default). [`serve`] without auth is for kube-proxy's
//! plain-HTTP ports, which upstream leaves open too.

use crate::delegated_auth::{self, Attributes, Decision, DelegatedAuth, UserInfo};
use crate::options::SecureServingOptions;
use crate::shutdown::Shutdown;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::RwLock;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::Instrument;

/// How long open connections may take to finish their requests after shutdown.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// A client that does not finish the TLS handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type Check = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Named health checks behind `/healthz`, `/livez` and `/readyz`. Cheap to clone; every
/// clone adds to and reads the same set.
///
/// Every endpoint starts with the `ping` check. Checks added with
/// [`HealthChecks::add_healthz`] apply to all three endpoints (upstream's
/// `AddHealthChecks`); [`HealthChecks::add_readyz`] only to `/readyz`, which always ends
/// with the `shutdown` check.
#[derive(Clone, Default)]
pub struct HealthChecks {
    inner: Arc<Checks>,
}

#[derive(Default)]
struct Checks {
    healthz: RwLock<Vec<(String, Check)>>,
    readyz: RwLock<Vec<(String, Check)>>,
    shutting_down: AtomicBool,
}

/// The three health endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Healthz,
    Livez,
    Readyz,
}

impl Endpoint {
    fn from_name(name: &str) -> Option<Endpoint> {
        match name {
            "healthz" => Some(Endpoint::Healthz),
            "livez" => Some(Endpoint::Livez),
            "readyz" => Some(Endpoint::Readyz),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Endpoint::Healthz => "healthz",
            Endpoint::Livez => "livez",
            Endpoint::Readyz => "readyz",
        }
    }
}

impl HealthChecks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a readiness check, reported by `/readyz` only.
    pub fn add_readyz(
        &self,
        name: &str,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.inner
            .readyz
            .write()
            .push((name.to_string(), Arc::new(check)));
    }

    /// Adds a health check, reported by `/healthz`, `/livez` and `/readyz`.
    pub fn add_healthz(
        &self,
        name: &str,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.inner
            .healthz
            .write()
            .push((name.to_string(), Arc::new(check)));
    }

    /// Fails `/readyz` from now on (its `shutdown` check), so load balancers and probes
    /// stop sending work while the process drains.
    pub fn set_shutting_down(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// The checks of `endpoint`, in the order they are reported.
    fn checks(&self, endpoint: Endpoint) -> Vec<(String, Check)> {
        let mut checks: Vec<(String, Check)> = vec![("ping".into(), Arc::new(|| Ok(())))];
        checks.extend(self.inner.healthz.read().iter().cloned());
        if endpoint == Endpoint::Readyz {
            checks.extend(self.inner.readyz.read().iter().cloned());
            let inner = self.inner.clone();
            checks.push((
                "shutdown".into(),
                Arc::new(move || {
                    if inner.shutting_down.load(Ordering::SeqCst) {
                        Err("process is shutting down".into())
                    } else {
                        Ok(())
                    }
                }),
            ));
        }
        checks
    }
}

impl std::fmt::Debug for HealthChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |v: &RwLock<Vec<(String, Check)>>| {
            v.read().iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
        };
        f.debug_struct("HealthChecks")
            .field("healthz", &names(&self.inner.healthz))
            .field("readyz", &names(&self.inner.readyz))
            .field("shutting_down", &self.is_shutting_down())
            .finish()
    }
}

/// Where the serving certificate comes from.
#[derive(Clone, Debug)]
pub enum TlsSource {
    /// `--tls-cert-file` (the serving certificate, then any intermediates) and
    /// `--tls-private-key-file`.
    Files { cert: PathBuf, key: PathBuf },
    /// A self-signed CA and a serving certificate for `host`, `localhost` and 127.0.0.1,
    /// as upstream's fallback. With `cert_dir` they are kept as `serving.crt` (certificate
    /// then CA) and `serving.key` and reused on the next start; without, in memory only.
    SelfSigned {
        cert_dir: Option<PathBuf>,
        host: String,
    },
    /// Plain HTTP, for ports upstream serves without TLS (kube-proxy's 10249 and 10256).
    Plain,
}

/// Everything [`serve`] needs.
#[derive(Clone, Debug)]
pub struct ServingConfig {
    pub bind: SocketAddr,
    pub tls: TlsSource,
    /// The component's own registry, rendered at `/metrics`.
    pub registry: prometheus::Registry,
    pub checks: HealthChecks,
}

impl SecureServingOptions {
    /// The serving configuration these flags select: `--bind-address` and `--secure-port`
    /// (else `default_port`); the certificate files when both are given, else a
    /// self-signed certificate for `localhost` kept in `--cert-dir` if set.
    pub fn serving_config(
        &self,
        default_port: u16,
        registry: prometheus::Registry,
        checks: HealthChecks,
    ) -> ServingConfig {
        let tls = match (&self.tls_cert_file, &self.tls_private_key_file) {
            (Some(cert), Some(key)) => TlsSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => TlsSource::SelfSigned {
                cert_dir: self.cert_dir.clone(),
                host: "localhost".into(),
            },
        };
        ServingConfig {
            bind: SocketAddr::new(self.bind_address, self.port_or(default_port)),
            tls,
            registry,
            checks,
        }
    }
}

/// Why the endpoint could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("building the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("--client-ca-file: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
    #[error("delegated authentication: {0}")]
    Auth(#[from] delegated_auth::Error),
}

/// A running endpoint.
#[derive(Debug)]
pub struct Serving {
    /// Where it listens (the real port when the configured one was 0).
    pub local_addr: SocketAddr,
    /// Ends after shutdown, once open connections finished (bounded).
    pub task: tokio::task::JoinHandle<()>,
}

/// A daemon's endpoint when its options ask for one (None in tests that need none):
/// the address it listens on.
pub async fn serve_if_configured(
    options: Option<&SecureServingOptions>,
    default_port: u16,
    registry: &prometheus::Registry,
    checks: &HealthChecks,
    client: &kube::Client,
    component: &str,
    shutdown: &Shutdown,
) -> Result<Option<SocketAddr>, ServeError> {
    let Some(options) = options else {
        return Ok(None);
    };
    let config = options.serving_config(default_port, registry.clone(), checks.clone());
    let auth = DelegatedAuth::from_options(&options.auth, client, component).await?;
    Ok(Some(
        serve_with_auth(config, Some(Arc::new(auth)), shutdown.clone())
            .await?
            .local_addr,
    ))
}

/// Binds `config.bind` and serves the health and metrics endpoints to anyone until
/// `shutdown`. Returns once the port is bound, so a bad address or certificate fails
/// startup.
pub async fn serve(config: ServingConfig, shutdown: Shutdown) -> Result<Serving, ServeError> {
    serve_with_auth(config, None, shutdown).await
}

/// The client CAs of `--client-ca-file`, for a TLS server that asks for (but does not
/// require) a client certificate.
pub fn client_ca_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, ServeError> {
    read_certs(path, &read(path)?)
}

/// [`serve`] with every request not in the always-allowed paths authenticated and
/// authorized by `auth`.
pub async fn serve_with_auth(
    config: ServingConfig,
    auth: Option<Arc<DelegatedAuth>>,
    shutdown: Shutdown,
) -> Result<Serving, ServeError> {
    let client_roots = match auth.as_ref().and_then(|a| a.client_ca_file.as_ref()) {
        Some(path) => Some(client_ca_roots(path)?),
        None => None,
    };
    let tls = match &config.tls {
        TlsSource::Plain => None,
        TlsSource::Files { cert, key } => Some(tls_config(
            read_certs(cert, &read(cert)?)?,
            read_key(key, &read(key)?)?,
            client_roots,
        )?),
        TlsSource::SelfSigned { cert_dir, host } => {
            let (cert_pem, key_pem) = match cert_dir {
                Some(dir) => ensure_self_signed(dir, host)?,
                None => self_signed(host)?,
            };
            let (cert_path, key_path) = match cert_dir {
                Some(dir) => (dir.join("serving.crt"), dir.join("serving.key")),
                None => (PathBuf::from("<memory>"), PathBuf::from("<memory>")),
            };
            Some(tls_config(
                read_certs(&cert_path, cert_pem.as_bytes())?,
                read_key(&key_path, key_pem.as_bytes())?,
                client_roots,
            )?)
        }
    };
    let listener = TcpListener::bind(config.bind)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.bind,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.bind,
        source,
    })?;
    if tls.is_some() {
        tracing::info!("serving securely on {local_addr}");
    } else {
        tracing::info!("serving insecurely on {local_addr}");
    }
    let routes = Arc::new(Routes {
        registry: config.registry,
        checks: config.checks,
        auth,
    });
    let task = tokio::spawn(
        accept(
            listener,
            tls.map(tokio_rustls::TlsAcceptor::from),
            routes,
            shutdown,
        )
        .instrument(tracing::info_span!("serving", addr = %local_addr)),
    );
    Ok(Serving { local_addr, task })
}

async fn accept(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    routes: Arc<Routes>,
    mut shutdown: Shutdown,
) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = shutdown.signaled() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let routes = routes.clone();
        let shutdown = shutdown.clone();
        connections.spawn(
            async move {
                match tls {
                    None => connection(tcp, None, routes, shutdown).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                let user = peer_user(stream.get_ref().1.peer_certificates());
                                connection(stream, user, routes, shutdown).await
                            }
                            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
                }
            }
            .instrument(tracing::debug_span!("connection", %peer)),
        );
    }
    drop(listener);
    // Each connection saw the same signal and is finishing its requests.
    let _ = tokio::time::timeout(DRAIN_GRACE + Duration::from_secs(1), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

/// The identity of a client certificate that rustls verified against the client CAs.
pub fn peer_user(certificates: Option<&[CertificateDer<'static>]>) -> Option<Arc<UserInfo>> {
    let leaf = certificates?.first()?;
    UserInfo::from_certificate(leaf).map(Arc::new)
}

/// Serves HTTP/1.1 or HTTP/2 on one connection until the client leaves or shutdown.
/// `user` is the identity of the connection's verified client certificate.
async fn connection<I>(
    io: I,
    user: Option<Arc<UserInfo>>,
    routes: Arc<Routes>,
    mut shutdown: Shutdown,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let routes = routes.clone();
        let user = user.clone();
        async move { Ok::<_, Infallible>(routes.serve(req, user.as_deref()).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = shutdown.signaled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN_GRACE, conn).await;
        }
    }
}

struct Routes {
    registry: prometheus::Registry,
    checks: HealthChecks,
    auth: Option<Arc<DelegatedAuth>>,
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

impl Routes {
    /// Authenticates and authorizes the request (unless its path is always allowed),
    /// then [`Routes::handle`]s it: 401 for a bad token, 403 when the apiserver denies.
    async fn serve(
        &self,
        req: Request<Incoming>,
        cert_user: Option<&UserInfo>,
    ) -> Response<Full<Bytes>> {
        let (req, _body) = req.into_parts();
        let Some(auth) = &self.auth else {
            return self.handle(&req.uri);
        };
        let path = req.uri.path();
        if auth.always_allowed(path) {
            return self.handle(&req.uri);
        }
        let user = match auth.authenticate(&req.headers, cert_user, true).await {
            Ok(user) => user,
            Err(e) => {
                tracing::debug!(error = %e, "unable to authenticate the request");
                return unauthorized();
            }
        };
        let attributes = Attributes::NonResource {
            path: path.to_string(),
            verb: delegated_auth::verb_for_method(&req.method),
        };
        match auth.authorize(&user, &attributes).await {
            Decision::Allow => self.handle(&req.uri),
            Decision::Deny(reason) => {
                let message = delegated_auth::forbidden_message(&user, &attributes, &reason);
                text(
                    StatusCode::FORBIDDEN,
                    JSON,
                    delegated_auth::status_body(403, "Forbidden", &message),
                )
            }
            Decision::Error(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                JSON,
                delegated_auth::status_body(
                    500,
                    "InternalError",
                    &format!("Internal error occurred: {e}"),
                ),
            ),
        }
    }

    fn handle(&self, uri: &http::Uri) -> Response<Full<Bytes>> {
        let path = uri.path();
        let query = uri.query().unwrap_or("");
        if path == "/metrics" {
            return text(
                StatusCode::OK,
                crate::metrics::TEXT_CONTENT_TYPE,
                crate::metrics::encode_text(&self.registry),
            );
        }
        let trimmed = path.strip_prefix('/').unwrap_or(path);
        let (endpoint, check) = match trimmed.split_once('/') {
            Some((e, c)) => (e, Some(c)),
            None => (trimmed, None),
        };
        match (Endpoint::from_name(endpoint), check) {
            (Some(endpoint), None) => self.endpoint(endpoint, query),
            (Some(endpoint), Some(name)) => self.single_check(endpoint, name),
            (None, _) => not_found(),
        }
    }

    /// `/healthz` and friends: "ok", the `[+]`/`[-]` list with `?verbose`, always the
    /// list (reasons withheld, as upstream, since the endpoint is public) on failure.
    fn endpoint(&self, endpoint: Endpoint, query: &str) -> Response<Full<Bytes>> {
        let mut verbose = false;
        let mut excluded: Vec<String> = Vec::new();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "verbose" => verbose = true,
                "exclude" => excluded.push(value.into_owned()),
                _ => {}
            }
        }
        let mut output = String::new();
        let mut failed = Vec::new();
        for (name, check) in self.checks.checks(endpoint) {
            if let Some(i) = excluded.iter().position(|e| *e == name) {
                excluded.remove(i);
                output.push_str(&format!("[+]{name} excluded: ok\n"));
                continue;
            }
            match check() {
                Ok(()) => output.push_str(&format!("[+]{name} ok\n")),
                Err(reason) => {
                    output.push_str(&format!("[-]{name} failed: reason withheld\n"));
                    tracing::debug!(check = %name, %reason, "{} check failed", endpoint.name());
                    failed.push(name);
                }
            }
        }
        if !excluded.is_empty() {
            let quoted: Vec<String> = excluded.iter().map(|e| format!("{e:?}")).collect();
            output.push_str(&format!(
                "warn: some health checks cannot be excluded: no matches for {}\n",
                quoted.join(",")
            ));
        }
        let name = endpoint.name();
        if !failed.is_empty() {
            output.push_str(&format!("{name} check failed\n"));
            return text(StatusCode::INTERNAL_SERVER_ERROR, TEXT, output);
        }
        if !verbose {
            return text(StatusCode::OK, TEXT, "ok");
        }
        output.push_str(&format!("{name} check passed\n"));
        text(StatusCode::OK, TEXT, output)
    }

    /// `/readyz/<check>`: that one check, with its reason on failure.
    fn single_check(&self, endpoint: Endpoint, name: &str) -> Response<Full<Bytes>> {
        let Some((_, check)) = self
            .checks
            .checks(endpoint)
            .into_iter()
            .find(|(n, _)| n == name)
        else {
            return not_found();
        };
        match check() {
            Ok(()) => text(StatusCode::OK, TEXT, "ok"),
            Err(reason) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                format!("internal server error: {reason}\n"),
            ),
        }
    }
}

/// Upstream's 401: a Status with the message "Unauthorized".
fn unauthorized() -> Response<Full<Bytes>> {
    text(
        StatusCode::UNAUTHORIZED,
        JSON,
        delegated_auth::status_body(401, "Unauthorized", "Unauthorized"),
    )
}

fn not_found() -> Response<Full<Bytes>> {
    text(StatusCode::NOT_FOUND, TEXT, "404 page not found\n")
}

fn text(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn read(path: &Path) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|source| ServeError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), ServeError> {
    crate::files::write_with_mode(path, data, mode).map_err(|source| ServeError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn read_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ServeError> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &pem[..])
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(ServeError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, ServeError> {
    rustls_pemfile::private_key(&mut &pem[..])
        .ok()
        .flatten()
        .ok_or_else(|| ServeError::NoKey {
            path: path.to_path_buf(),
        })
}

/// A rustls server configuration offering HTTP/2 and HTTP/1.1; with `client_roots`, it
/// asks for a client certificate signed by one of them (and accepts clients without).
fn tls_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Option<Vec<CertificateDer<'static>>>,
) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let mut store = rustls::RootCertStore::empty();
            for root in roots {
                store.add(root)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(store),
                provider,
            )
            .allow_unauthenticated()
            .build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The PEM certificate chain and key in `cert_dir`, generated and written on first use.
fn ensure_self_signed(cert_dir: &Path, host: &str) -> Result<(String, String), ServeError> {
    let cert_path = cert_dir.join("serving.crt");
    let key_path = cert_dir.join("serving.key");
    if cert_path.exists() && key_path.exists() {
        let cert = String::from_utf8_lossy(&read(&cert_path)?).into_owned();
        let key = String::from_utf8_lossy(&read(&key_path)?).into_owned();
        return Ok((cert, key));
    }
    let (cert, key) = self_signed(host)?;
    write(&key_path, key.as_bytes(), 0o600)?;
    write(&cert_path, cert.as_bytes(), 0o644)?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed serving certificate");
    Ok((cert, key))
}

/// As upstream's `GenerateSelfSignedCertKey`: a CA `<host>-ca@<unix time>` and a serving
/// certificate `<host>@<unix time>` for `host`, `localhost` and 127.0.0.1 signed by it.
/// Returns the PEM chain (serving certificate, then CA) and the PEM key.
fn self_signed(host: &str) -> Result<(String, String), ServeError> {
    let now = jiff::Timestamp::now().as_second();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{host}-ca@{now}"));
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_after = rcgen::date_time_ymd(2125, 1, 1);
    let ca_key = rcgen::KeyPair::generate()?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let mut names = vec![host.to_string()];
    for extra in ["localhost", "127.0.0.1"] {
        if !names.iter().any(|n| n == extra) {
            names.push(extra.to_string());
        }
    }
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{host}@{now}"));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.not_after = rcgen::date_time_ymd(2125, 1, 1);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    Ok((format!("{}{}", cert.pem(), ca.pem()), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_per_endpoint() {
        let checks = HealthChecks::new();
        checks.add_healthz("etcd", || Ok(()));
        checks.add_readyz("informer-sync", || Err("not synced".into()));
        let names = |e| {
            checks
                .checks(e)
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Endpoint::Healthz), ["ping", "etcd"]);
        assert_eq!(names(Endpoint::Livez), ["ping", "etcd"]);
        assert_eq!(
            names(Endpoint::Readyz),
            ["ping", "etcd", "informer-sync", "shutdown"]
        );
    }

    #[test]
    fn self_signed_pair_is_reused_from_cert_dir() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ensure_self_signed(dir.path(), "localhost").unwrap();
        assert_eq!(
            read_certs(Path::new("x"), cert.as_bytes()).unwrap().len(),
            2
        );
        read_key(Path::new("x"), key.as_bytes()).unwrap();
        let again = ensure_self_signed(dir.path(), "localhost").unwrap();
        assert_eq!(again, (cert, key));
    }
}
