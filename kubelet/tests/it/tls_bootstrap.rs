//! Node join by TLS bootstrap, end to end: an apiserver with a pikubeadm PKI
//! (`--client-ca-file`), kube-controller-manager's csrsigning and csrapproving with the
//! PKI's CA, and a kubelet given only the apiserver address, the CA and a bootstrap
//! token. Its client certificate is requested, auto-approved and signed; it then
//! authenticates as `system:node:<name>` (SelfSubjectReview, `kubectl auth whoami`) and
//! registers its Node with that identity.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use clap::Parser as _;
use component_base::options::KubeconfigOptions;
use component_base::shutdown;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, ListParams, PostParams};
use kubelet::certificate::bootstrap::{self, Outcome};
use serde_json::json;

use crate::common::{wait_until, TestApi, TestNode, TIMEOUT};

const TOKEN: &str = "07401b.f395accd246ae52d";

fn pikubeadm_certs(dir: &Path) {
    let d = format!("--dir={}", dir.display());
    let cli = pikubeadm::options::Cli::try_parse_from([
        "pikubeadm",
        "certs",
        &d,
        "--cluster-name=test",
        "--control-plane=127.0.0.1",
        "--service-cidr=10.96.0.0/24",
        "--node=pi-1=127.0.0.1",
    ])
    .unwrap();
    let pikubeadm::options::Command::Certs(options) = cli.command else {
        unreachable!("certs was parsed")
    };
    pikubeadm::certs::run(&options.into_config().unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_joins_with_a_bootstrap_token() {
    let pki = tempfile::tempdir().unwrap();
    pikubeadm_certs(pki.path());
    let pki_path = pki.path().to_path_buf();
    let api = TestApi::start_with(move |c| {
        c.tls = apiserver::TlsConfig::Files {
            cert: pki_path.join("apiserver.crt"),
            key: pki_path.join("apiserver.key"),
        };
        c.client_ca_file = Some(pki_path.join("ca.crt"));
    })
    .await;
    let admin = api.client().await;

    // kube-controller-manager with the cluster CA as its signing CA.
    let (cm_trigger, cm_shutdown) = shutdown::channel();
    let options = controller_manager::options::ControllerOptions {
        cluster_signing_cert_file: Some(pki.path().join("ca.crt")),
        cluster_signing_key_file: Some(pki.path().join("ca.key")),
        ..Default::default()
    };
    let manager = controller_manager::app::start(
        controller_manager::app::Config {
            client: admin.clone(),
            controllers: options,
            enabled: vec!["csrsigning", "csrapproving"],
            leader_election: None,
            serving: None,
            registry: prometheus::Registry::new(),
        },
        cm_shutdown,
    )
    .await
    .unwrap();

    // The join token (what `kubeadm token create` makes).
    let (id, secret) = TOKEN.split_once('.').unwrap();
    let token: Secret = serde_json::from_value(json!({
        "metadata": { "name": format!("bootstrap-token-{id}") },
        "type": "bootstrap.kubernetes.io/token",
        "stringData": {
            "token-id": id,
            "token-secret": secret,
            "usage-bootstrap-authentication": "true",
        },
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), "kube-system")
        .create(&PostParams::default(), &token)
        .await
        .unwrap();

    // The node knows the apiserver address, the CA and the token: nothing else.
    let node_dir = tempfile::tempdir().unwrap();
    let ca = std::fs::read(pki.path().join("ca.crt")).unwrap();
    let bootstrap_kubeconfig = node_dir.path().join("bootstrap-kubelet.conf");
    std::fs::write(
        &bootstrap_kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority-data: {}\ncontexts:\n- name: tls-bootstrap\n  context:\n    cluster: test\n    user: tls-bootstrap-token-user\ncurrent-context: tls-bootstrap\nusers:\n- name: tls-bootstrap-token-user\n  user:\n    token: {TOKEN}\n",
            api.base_url(),
            base64::engine::general_purpose::STANDARD.encode(&ca),
        ),
    )
    .unwrap();
    let name = format!("joined-{}", std::process::id());
    let config = bootstrap::Config {
        kubeconfig: node_dir.path().join("kubelet.conf"),
        bootstrap_kubeconfig,
        cert_dir: node_dir.path().join("pki"),
        node_name: name.clone(),
        timeout: Duration::from_secs(60),
    };
    let outcome = bootstrap::load_client_cert(&config).await.unwrap();
    assert_eq!(outcome, Outcome::Bootstrapped);
    let current = config.cert_dir.join("kubelet-client-current.pem");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&current).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Run again: the kubeconfig is usable as it is; without it, the cert dir's certificate.
    assert_eq!(
        bootstrap::load_client_cert(&config).await.unwrap(),
        Outcome::Existing
    );
    std::fs::remove_file(&config.kubeconfig).unwrap();
    assert_eq!(
        bootstrap::load_client_cert(&config).await.unwrap(),
        Outcome::FromCertDir
    );

    // The CSR was made by the bootstrap token's user and auto-approved.
    let csrs = Api::<CertificateSigningRequest>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(csrs.items.len(), 1);
    let csr = &csrs.items[0];
    assert_eq!(
        csr.spec.username.as_deref(),
        Some(&*format!("system:bootstrap:{id}"))
    );
    let conditions = csr.status.as_ref().unwrap().conditions.clone().unwrap();
    assert_eq!(conditions[0].type_, "Approved");
    assert_eq!(conditions[0].reason.as_deref(), Some("AutoApproved"));

    // The kubelet's identity is now its node's.
    let kubelet_client = KubeconfigOptions {
        kubeconfig: Some(config.kubeconfig.clone()),
        ..KubeconfigOptions::default()
    }
    .client("kubelet")
    .await
    .unwrap();
    let review: SelfSubjectReview = Api::all(kubelet_client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    let user = review.status.unwrap().user_info.unwrap();
    assert_eq!(user.username, Some(format!("system:node:{name}")));
    assert!(user.groups.unwrap().contains(&"system:nodes".to_string()));
    let out = std::process::Command::new(apiserver::testing::kubectl_binary())
        .env("KUBECONFIG", &config.kubeconfig)
        .env("HOME", node_dir.path())
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("system:node:{name}")
    );

    // --rotate-certificates: a renewal, requested with the node's own identity, is
    // auto-approved (selfnodeclient) and replaces the current certificate.
    let (rotating_client, current) =
        kubelet::certificate::rotation::client(&config.kubeconfig, &current)
            .await
            .unwrap();
    let before = current.certificate_der();
    let rotator = kubelet::certificate::rotation::Rotator {
        client: rotating_client.clone(),
        current: current.clone(),
        node_name: name.clone(),
    };
    rotator.rotate_once().await.unwrap();
    let after = current.certificate_der();
    assert_ne!(before, after);
    let on_disk = std::fs::read(config.cert_dir.join("kubelet-client-current.pem")).unwrap();
    let (_, on_disk_der) = x509_parser::pem::parse_x509_pem(&on_disk).unwrap();
    assert_eq!(on_disk_der.contents, after);
    let csrs = Api::<CertificateSigningRequest>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    let renewal = csrs
        .items
        .iter()
        .find(|c| c.spec.username.as_deref() == Some(&*format!("system:node:{name}")))
        .expect("the renewal CSR");
    let approved = &renewal
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()[0];
    assert_eq!(approved.type_, "Approved");
    assert!(approved
        .message
        .as_deref()
        .unwrap()
        .contains("self kubelet client"));
    // A client reading the files again authenticates with the renewed certificate.
    let renewed = KubeconfigOptions {
        kubeconfig: Some(config.kubeconfig.clone()),
        ..KubeconfigOptions::default()
    }
    .client("kubelet")
    .await
    .unwrap();
    let review: SelfSubjectReview = Api::all(renewed)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    assert_eq!(
        review.status.unwrap().user_info.unwrap().username,
        Some(format!("system:node:{name}"))
    );
    drop(kubelet_client);

    // The kubelet runs with that identity (the rotating client) and registers its Node.
    let node = TestNode::start_on(api, rotating_client, Some(name.clone()), |_| {}).await;
    let nodes: Api<Node> = Api::all(admin.clone());
    wait_until(TIMEOUT, "the joined node registers", || {
        let nodes = nodes.clone();
        let name = name.clone();
        async move { nodes.get_opt(&name).await.ok().flatten() }
    })
    .await;
    drop(node);
    cm_trigger.shutdown();
    let _ = manager.task.await;
}

/// A control plane with a pikubeadm PKI, `Node,RBAC` authorization, anonymous requests
/// allowed (joining nodes read kube-public/cluster-info before they have credentials),
/// and csrsigning/csrapproving.
async fn join_control_plane() -> (
    tempfile::TempDir,
    TestApi,
    kube::Client,
    shutdown::Trigger,
    controller_manager::app::Running,
) {
    let pki = tempfile::tempdir().unwrap();
    pikubeadm_certs(pki.path());
    let pki_path = pki.path().to_path_buf();
    let api = TestApi::start_with(move |c| {
        c.tls = apiserver::TlsConfig::Files {
            cert: pki_path.join("apiserver.crt"),
            key: pki_path.join("apiserver.key"),
        };
        c.client_ca_file = Some(pki_path.join("ca.crt"));
        c.anonymous_auth = true;
        // As a real cluster: the token's CSR, its approval and the node's first
        // requests all pass RBAC through the bindings `pikubeadm token create` makes.
        c.authorization_modes = vec![apiserver::authz::Mode::Node, apiserver::authz::Mode::Rbac];
    })
    .await;
    let admin = api.client().await;
    let (trigger, cm_shutdown) = shutdown::channel();
    let manager = controller_manager::app::start(
        controller_manager::app::Config {
            client: admin.clone(),
            controllers: controller_manager::options::ControllerOptions {
                cluster_signing_cert_file: Some(pki.path().join("ca.crt")),
                cluster_signing_key_file: Some(pki.path().join("ca.key")),
                ..Default::default()
            },
            enabled: vec!["csrsigning", "csrapproving"],
            leader_election: None,
            serving: None,
            registry: prometheus::Registry::new(),
        },
        cm_shutdown,
    )
    .await
    .unwrap();
    (pki, api, admin, trigger, manager)
}

/// The k3s-style one-liner: `pikubeadm token create --print-join-command` on the control
/// plane; on the node, only the address, the CA hash and the token — the CA is found
/// through cluster-info and pinned by its hash, a wrong hash is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_with_address_ca_hash_and_token() {
    let (pki, api, admin, cm_trigger, manager) = join_control_plane().await;
    let ca = std::fs::read(pki.path().join("ca.crt")).unwrap();
    let server = api.base_url();
    let token = pikubeadm::token::generate();
    let spec = pikubeadm::token::TokenSpec {
        token: token.clone(),
        ttl: Some(Duration::from_secs(3600)),
        description: Some("join test".into()),
        usages: vec!["signing".into(), "authentication".into()],
        groups: vec![pikubeadm::token::DEFAULT_GROUP.into()],
    };
    pikubeadm::token::create(admin.clone(), &spec, &server, &ca)
        .await
        .unwrap();
    let hash = pikubeadm::token::ca_cert_hash(&ca).unwrap();
    let line = pikubeadm::token::join_command(&server, &token, &hash);
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[..3], ["pikubeadm", "join", server.as_str()]);

    // A wrong pin: refused before anything is written or any secret is sent.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let err = pikubeadm::token::discover(&server, &token, &wrong)
        .await
        .unwrap_err();
    assert!(
        matches!(err, pikubeadm::token::Error::HashMismatch { .. }),
        "{err}"
    );

    // The node: address, hash and token from the join line.
    let bootstrap_text = pikubeadm::token::discover(words[2], words[4], words[6])
        .await
        .unwrap();
    let node_dir = tempfile::tempdir().unwrap();
    let bootstrap_kubeconfig = node_dir.path().join("bootstrap-kubelet.conf");
    pikubeadm::token::write_bootstrap_kubeconfig(&bootstrap_kubeconfig, &bootstrap_text).unwrap();
    let name = format!("onelined-{}", std::process::id());
    let config = bootstrap::Config {
        kubeconfig: node_dir.path().join("kubelet.conf"),
        bootstrap_kubeconfig,
        cert_dir: node_dir.path().join("pki"),
        node_name: name.clone(),
        timeout: Duration::from_secs(60),
    };
    assert_eq!(
        bootstrap::load_client_cert(&config).await.unwrap(),
        Outcome::Bootstrapped
    );
    let client = KubeconfigOptions {
        kubeconfig: Some(config.kubeconfig.clone()),
        ..KubeconfigOptions::default()
    }
    .client("kubelet")
    .await
    .unwrap();
    let review: SelfSubjectReview = Api::all(client)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    assert_eq!(
        review.status.unwrap().user_info.unwrap().username,
        Some(format!("system:node:{name}"))
    );

    // The kubelet binary does the same before it starts: flags only.
    let bin_name = format!("binary-{}", std::process::id());
    let bin_kubeconfig = node_dir.path().join("bin-kubelet.conf");
    let bin_cert_dir = node_dir.path().join("bin-pki");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_kubelet"))
        .arg(format!(
            "--bootstrap-kubeconfig={}",
            config.bootstrap_kubeconfig.display()
        ))
        .arg(format!("--kubeconfig={}", bin_kubeconfig.display()))
        .arg(format!("--cert-dir={}", bin_cert_dir.display()))
        .arg(format!("--hostname-override={bin_name}"))
        .arg(format!(
            "--root-dir={}",
            node_dir.path().join("bin-root").display()
        ))
        .arg("--container-runtime-endpoint=unix:///nonexistent/containerd.sock")
        .arg("--healthz-port=0")
        .arg("--port=0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _child = KillOnDrop(child);
    let pem = bin_cert_dir.join("kubelet-client-current.pem");
    wait_until(
        TIMEOUT,
        "the kubelet binary bootstraps its certificate",
        || {
            let ready = pem.exists() && bin_kubeconfig.exists();
            async move { ready.then_some(()) }
        },
    )
    .await;
    let (_, der) = x509_parser::pem::parse_x509_pem(&std::fs::read(&pem).unwrap()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der.contents).unwrap();
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        format!("system:node:{bin_name}")
    );
    cm_trigger.shutdown();
    let _ = manager.task.await;
}

/// Kills (and reaps) a child process however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
