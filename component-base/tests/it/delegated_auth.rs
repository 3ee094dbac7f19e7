//! The daemons' secure endpoint behind delegated authentication and authorization, against
//! a real apiserver with `--authorization-mode=Node,RBAC` and etcd: health endpoints are
//! open, `/metrics` needs an identity the apiserver authenticates and RBAC allows.

use apiserver::testing::curl;
use std::path::{Path, PathBuf};
use std::time::Duration;

use apiserver::authz::Mode;
use apiserver::testing::{wait_until, TestApi};
use component_base::options::{DelegatedAuthOptions, SecureServingOptions};
use component_base::serving::{serve_if_configured, HealthChecks};
use component_base::shutdown;

const TIMEOUT: Duration = Duration::from_secs(30);

fn status_message(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["message"].as_str().unwrap_or_default().to_string()
}

/// A client CA in `dir`, and a function writing certificates it signs.
struct ClientCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    dir: PathBuf,
}

impl ClientCa {
    fn new(dir: &Path) -> ClientCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test-client-ca");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        std::fs::write(dir.join("client-ca.crt"), issuer.pem()).unwrap();
        ClientCa {
            issuer,
            dir: dir.to_path_buf(),
        }
    }

    /// Writes `<name>.crt` and `<name>.key` for user `cn` in `groups`.
    fn client(&self, name: &str, cn: &str, groups: &[&str]) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        for g in groups {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, *g);
        }
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let crt = self.dir.join(format!("{name}.crt"));
        let key_path = self.dir.join(format!("{name}.key"));
        std::fs::write(&crt, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (
            crt.to_string_lossy().into_owned(),
            key_path.to_string_lossy().into_owned(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_an_identity_that_rbac_allows_and_health_is_open() {
    let api = TestApi::start_with(|c| c.authorization_modes = vec![Mode::Node, Mode::Rbac]).await;
    let client = api.client().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = ClientCa::new(dir.path());

    let registry = prometheus::Registry::new();
    let counter = prometheus::IntCounter::new("test_requests_total", "Requests.").unwrap();
    registry.register(Box::new(counter.clone())).unwrap();
    counter.inc_by(3);
    let options = SecureServingOptions {
        bind_address: "127.0.0.1".parse().unwrap(),
        secure_port: Some(0),
        auth: DelegatedAuthOptions {
            client_ca_file: Some(dir.path().join("client-ca.crt")),
            ..Default::default()
        },
        ..Default::default()
    };
    let (_trigger, shutdown) = shutdown::channel();
    let addr = serve_if_configured(
        Some(&options),
        10259,
        &registry,
        &HealthChecks::new(),
        &client,
        "kube-scheduler",
        &shutdown,
    )
    .await
    .unwrap()
    .unwrap();
    let url = |path: &str| format!("https://{addr}{path}");

    // Always-allowed paths need nothing, not even a valid token.
    assert_eq!(curl(&url("/healthz"), &[]).await, (200, "ok".into()));
    assert_eq!(curl(&url("/readyz"), &[]).await, (200, "ok".into()));
    assert_eq!(curl(&url("/livez"), &[]).await, (200, "ok".into()));

    // Anonymous: authenticated as system:anonymous, then denied by RBAC.
    let (code, body) = curl(&url("/metrics"), &[]).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        status_message(&body),
        r#"forbidden: User "system:anonymous" cannot get path "/metrics""#
    );

    // A token the apiserver does not know: 401 as upstream.
    let (code, body) = curl(&url("/metrics"), &["-H", "Authorization: Bearer bogus"]).await;
    assert_eq!(code, 401, "{body}");
    assert_eq!(status_message(&body), "Unauthorized");

    // A ServiceAccount token: denied until bound to system:monitoring.
    api.kubectl_ok(&[
        "create",
        "serviceaccount",
        "prometheus",
        "-n",
        "kube-system",
    ]);
    let token = api.kubectl_ok(&["create", "token", "prometheus", "-n", "kube-system"]);
    let bearer = format!("Authorization: Bearer {}", token.trim());
    let (code, body) = curl(&url("/metrics"), &["-H", &bearer]).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        status_message(&body),
        r#"forbidden: User "system:serviceaccount:kube-system:prometheus" cannot get path "/metrics""#
    );
    api.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "prometheus-monitoring",
        "--clusterrole=system:monitoring",
        "--serviceaccount=kube-system:prometheus",
    ]);
    // The denial above is cached for --authorization-webhook-cache-unauthorized-ttl (10s).
    let metrics = wait_until(TIMEOUT, "the bound ServiceAccount reads /metrics", || {
        let (url, bearer) = (url("/metrics"), bearer.clone());
        async move {
            let (code, body) = curl(&url, &["-H", &bearer]).await;
            (code == 200).then_some(body)
        }
    })
    .await;
    assert!(metrics.contains("test_requests_total 3"), "{metrics}");

    // A client certificate from --client-ca-file: CN is the user, O the groups.
    let (crt, key) = ca.client("monitor", "jane", &["system:monitoring"]);
    let (code, body) = curl(&url("/metrics"), &["--cert", &crt, "--key", &key]).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("test_requests_total 3"), "{body}");
    let (crt, key) = ca.client("bob", "bob", &[]);
    let (code, body) = curl(&url("/metrics"), &["--cert", &crt, "--key", &key]).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        status_message(&body),
        r#"forbidden: User "bob" cannot get path "/metrics""#
    );

    // A certificate from another CA is not an identity: the handshake fails or the
    // request is anonymous, never bob's or jane's rights.
    let other = tempfile::tempdir().unwrap();
    let (crt, key) = ClientCa::new(other.path()).client("mallory", "jane", &["system:monitoring"]);
    let (code, _) = curl(&url("/metrics"), &["--cert", &crt, "--key", &key]).await;
    assert_ne!(code, 200);
}
