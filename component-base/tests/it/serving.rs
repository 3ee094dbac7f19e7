//! The health and metrics endpoint as a prober, Prometheus or kubectl sees it: real TCP,
//! real TLS with the served certificate verified, HTTP/1.1 and HTTP/2.

use bytes::Bytes;
use component_base::options::SecureServingOptions;
use component_base::serving::{serve, HealthChecks, ServeError, ServingConfig, TlsSource};
use component_base::shutdown;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

struct Reply {
    status: StatusCode,
    content_type: String,
    body: String,
    version: http::Version,
}

/// One GET on a fresh connection; `tls` is the client configuration for HTTPS.
async fn get(addr: SocketAddr, tls: Option<Arc<rustls::ClientConfig>>, path: &str) -> Reply {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    match tls {
        None => request(TokioIo::new(tcp), false, path).await,
        Some(config) => {
            let h2 = config.alpn_protocols.first().is_some_and(|p| p == b"h2");
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .expect("TLS handshake with a verified certificate");
            request(TokioIo::new(stream), h2, path).await
        }
    }
}

async fn request<I>(io: I, h2: bool, path: &str) -> Reply
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let req = Request::get(path)
        .header(http::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = if h2 {
        let req = {
            // HTTP/2 takes the authority from the URI.
            let (mut parts, body) = req.into_parts();
            parts.uri = format!("https://localhost{path}").parse().unwrap();
            parts.headers.remove(http::header::HOST);
            Request::from_parts(parts, body)
        };
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        sender.send_request(req).await.expect("h2 request")
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("http/1.1 handshake");
        tokio::spawn(conn);
        sender.send_request(req).await.expect("http/1.1 request")
    };
    let status = response.status();
    let version = response.version();
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        content_type,
        body: String::from_utf8(body.to_vec()).unwrap(),
        version,
    }
}

/// A client that trusts only the CA at the end of `serving.crt`.
fn client_config(serving_crt: &std::path::Path, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let pem = std::fs::read(serving_crt).unwrap();
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .map(Result::unwrap)
        .collect();
    assert_eq!(certs.len(), 2, "serving certificate then CA");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs[1].clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

fn registry_with_counter() -> prometheus::Registry {
    let registry = prometheus::Registry::new();
    let counter =
        prometheus::IntCounter::new("scheduler_schedule_attempts_total", "attempts").unwrap();
    counter.inc_by(7);
    registry.register(Box::new(counter)).unwrap();
    registry
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test]
async fn health_endpoints_report_checks_as_upstream() {
    let checks = HealthChecks::new();
    checks.add_healthz("etcd", || Ok(()));
    let synced = Arc::new(AtomicBool::new(false));
    let s = synced.clone();
    checks.add_readyz("informer-sync", move || {
        if s.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("caches not synced".into())
        }
    });
    let (trigger, shutdown) = shutdown::channel();
    let serving = serve(
        ServingConfig {
            // An address of its own: the other tests here listen on 127.0.0.1 and may be
            // given this port once it is free, which the last check would see as ours.
            bind: "127.0.0.3:0".parse().unwrap(),
            tls: TlsSource::Plain,
            registry: prometheus::Registry::new(),
            checks: checks.clone(),
        },
        shutdown,
    )
    .await
    .unwrap();
    let addr = serving.local_addr;
    assert_ne!(addr.port(), 0);

    let r = get(addr, None, "/healthz").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "ok"));
    assert_eq!(r.content_type, "text/plain; charset=utf-8");
    let r = get(addr, None, "/livez?verbose").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "[+]ping ok\n[+]etcd ok\nlivez check passed\n");
    let r = get(addr, None, "/healthz?verbose=1").await;
    assert_eq!(r.body, "[+]ping ok\n[+]etcd ok\nhealthz check passed\n");

    // Failing: always the list, the reason withheld on the public endpoint.
    let r = get(addr, None, "/readyz").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        r.body,
        "[+]ping ok\n[+]etcd ok\n[-]informer-sync failed: reason withheld\n[+]shutdown ok\nreadyz check failed\n"
    );
    // The check's own path gives the reason.
    let r = get(addr, None, "/readyz/informer-sync").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.body, "internal server error: caches not synced\n");
    let r = get(addr, None, "/readyz/etcd").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "ok"));
    let r = get(addr, None, "/healthz/informer-sync").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "a readyz-only check");
    let r = get(addr, None, "/readyz?exclude=informer-sync&exclude=nope").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "ok");
    let r = get(
        addr,
        None,
        "/readyz?verbose&exclude=informer-sync&exclude=nope",
    )
    .await;
    assert_eq!(
        r.body,
        "[+]ping ok\n[+]etcd ok\n[+]informer-sync excluded: ok\n[+]shutdown ok\nwarn: some health checks cannot be excluded: no matches for \"nope\"\nreadyz check passed\n"
    );

    synced.store(true, Ordering::SeqCst);
    let r = get(addr, None, "/readyz").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "ok"));

    // Shutting down fails readiness only; liveness stays.
    checks.set_shutting_down();
    let r = get(addr, None, "/readyz").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        r.body.contains("[-]shutdown failed: reason withheld\n"),
        "{}",
        r.body
    );
    let r = get(addr, None, "/readyz/shutdown").await;
    assert_eq!(r.body, "internal server error: process is shutting down\n");
    let r = get(addr, None, "/livez").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "ok"));

    for path in ["/", "/healthzz", "/readyz/nope", "/api"] {
        let r = get(addr, None, path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.body, "404 page not found\n");
    }

    trigger.shutdown();
    tokio::time::timeout(Duration::from_secs(10), serving.task)
        .await
        .expect("the server stops after shutdown")
        .unwrap();
    // Connecting to a closed ephemeral port on loopback may connect the socket to itself
    // (the kernel picked that very port as its source): that is no listener.
    let conn = TcpStream::connect(addr).await;
    assert!(
        conn.as_ref()
            .map_or(true, |c| c.local_addr().ok() == c.peer_addr().ok()),
        "the port is closed after shutdown"
    );
}

#[tokio::test]
async fn metrics_render_the_components_registry() {
    let (_trigger, shutdown) = shutdown::channel();
    let serving = serve(
        ServingConfig {
            bind: localhost(),
            tls: TlsSource::Plain,
            registry: registry_with_counter(),
            checks: HealthChecks::new(),
        },
        shutdown,
    )
    .await
    .unwrap();
    let r = get(serving.local_addr, None, "/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type, component_base::metrics::TEXT_CONTENT_TYPE);
    assert!(
        r.body.contains("scheduler_schedule_attempts_total 7"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn https_with_a_self_signed_certificate_over_http1_and_http2() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SecureServingOptions {
        bind_address: "127.0.0.1".parse().unwrap(),
        secure_port: Some(0),
        cert_dir: Some(dir.path().join("certs")),
        ..Default::default()
    };
    let config = opts.serving_config(10259, registry_with_counter(), HealthChecks::new());
    assert!(matches!(config.tls, TlsSource::SelfSigned { .. }));
    let (trigger, shutdown) = shutdown::channel();
    let serving = serve(config, shutdown).await.unwrap();
    let crt = dir.path().join("certs/serving.crt");
    assert!(dir.path().join("certs/serving.key").exists());

    let r = get(
        serving.local_addr,
        Some(client_config(&crt, b"http/1.1")),
        "/healthz",
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "ok"));
    assert_eq!(r.version, http::Version::HTTP_11);
    let r = get(
        serving.local_addr,
        Some(client_config(&crt, b"h2")),
        "/metrics",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.version, http::Version::HTTP_2);
    assert!(r.body.contains("scheduler_schedule_attempts_total 7"));
    trigger.shutdown();
    serving.task.await.unwrap();

    // The same pair given as --tls-cert-file/--tls-private-key-file.
    let opts = SecureServingOptions {
        bind_address: "127.0.0.1".parse().unwrap(),
        secure_port: Some(0),
        tls_cert_file: Some(crt.clone()),
        tls_private_key_file: Some(dir.path().join("certs/serving.key")),
        ..Default::default()
    };
    let config = opts.serving_config(10259, prometheus::Registry::new(), HealthChecks::new());
    assert!(matches!(config.tls, TlsSource::Files { .. }));
    let (_trigger, shutdown) = shutdown::channel();
    let serving = serve(config, shutdown).await.unwrap();
    let r = get(
        serving.local_addr,
        Some(client_config(&crt, b"http/1.1")),
        "/readyz?verbose",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "[+]ping ok\n[+]shutdown ok\nreadyz check passed\n");
}

#[tokio::test]
async fn startup_fails_on_a_taken_port_or_missing_certificate() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = ServingConfig {
        bind: taken.local_addr().unwrap(),
        tls: TlsSource::SelfSigned {
            cert_dir: None,
            host: "localhost".into(),
        },
        registry: prometheus::Registry::new(),
        checks: HealthChecks::new(),
    };
    let err = serve(config, shutdown::Shutdown::never())
        .await
        .unwrap_err();
    assert!(matches!(err, ServeError::Bind { .. }), "{err}");

    let config = ServingConfig {
        bind: localhost(),
        tls: TlsSource::Files {
            cert: "/nonexistent/tls.crt".into(),
            key: "/nonexistent/tls.key".into(),
        },
        registry: prometheus::Registry::new(),
        checks: HealthChecks::new(),
    };
    let err = serve(config, shutdown::Shutdown::never())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/tls.crt"), "{err}");
}
