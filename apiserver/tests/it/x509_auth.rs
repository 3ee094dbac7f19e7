//! x509 client-certificate authentication (`--client-ca-file`) against a PKI written by
//! `pikubeadm certs`: the apiserver serves with the PKI's certificate and signs
//! ServiceAccount tokens with its `sa.key`; kubectl with the admin kubeconfig and the
//! kube crate with a kubelet kubeconfig authenticate as the certificates' CN and O; a
//! certificate from another CA and an expired one are refused.

use std::path::{Path, PathBuf};
use std::process::Output;

use apiserver::TlsConfig;
use clap::Parser;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, PostParams};
use pikubeadm::options::{Cli, Command};
use serde_json::Value;

use crate::common::*;

/// Runs `pikubeadm certs` (its command line, in process) into `dir`.
fn pikubeadm_certs(dir: &Path) -> pikubeadm::certs::Report {
    let d = format!("--dir={}", dir.display());
    let cli = Cli::try_parse_from([
        "pikubeadm",
        "certs",
        &d,
        "--cluster-name=test",
        "--control-plane=127.0.0.1",
        "--service-cidr=10.96.0.0/24",
        "--node=pi-1=127.0.0.1",
    ])
    .unwrap();
    let Command::Certs(options) = cli.command else {
        unreachable!("certs was parsed")
    };
    pikubeadm::certs::run(&options.into_config().unwrap()).unwrap()
}

/// Starts etcd and an apiserver serving with the PKI in `pki`.
async fn start(pki: &Path) -> TestApi {
    let pki = pki.to_path_buf();
    TestApi::start_with(move |c| {
        c.tls = TlsConfig::Files {
            cert: pki.join("apiserver.crt"),
            key: pki.join("apiserver.key"),
        };
        c.client_ca_file = Some(pki.join("ca.crt"));
        c.service_account.signing_key_file = Some(pki.join("sa.key"));
        c.service_account.key_files = vec![pki.join("sa.pub")];
    })
    .await
}

/// kubectl with `kubeconfig`, pointed at the test apiserver's port (the kubeconfigs name
/// `https://127.0.0.1:6443`).
fn kubectl(api: &TestApi, kubeconfig: &Path, args: &[&str]) -> Output {
    let server = api.base_url();
    std::process::Command::new(kubectl_binary())
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", api.dir.path())
        .env("KUBECACHEDIR", api.dir.path().join("kubecache-x509"))
        .arg(format!("--server={server}"))
        .args(args)
        .output()
        .expect("kubectl is installed")
}

fn kubectl_ok(api: &TestApi, kubeconfig: &Path, args: &[&str]) -> String {
    let out = kubectl(api, kubeconfig, args);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A kubeconfig that trusts the test cluster's CA but presents `cert_pem`/`key_pem`.
fn kubeconfig_with(dir: &Path, name: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> PathBuf {
    let path = dir.join(name);
    let text = pikubeadm::kubeconfig::render(
        "test",
        "https://127.0.0.1:6443",
        ca_pem,
        "someone",
        cert_pem,
        key_pem,
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A kube client from `kubeconfig`, pointed at the test apiserver.
async fn kube_client(api: &TestApi, kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    config.cluster_url = api.base_url().parse().unwrap();
    kube::Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_from_pikubeadm() {
    let pki = tempfile::tempdir().unwrap();
    let report = pikubeadm_certs(pki.path());
    assert!(!report.unchanged());
    let api = start(pki.path()).await;
    let admin = pki.path().join("admin.conf");

    // kubectl with the admin kubeconfig: the server's certificate verifies against the
    // cluster CA (SAN 127.0.0.1) and the admin certificate authenticates.
    let out = kubectl_ok(&api, &admin, &["get", "ns", "-o", "name"]);
    assert!(out.lines().any(|l| l == "namespace/default"), "{out}");
    let whoami: Value =
        serde_json::from_str(&kubectl_ok(&api, &admin, &["auth", "whoami", "-o", "json"])).unwrap();
    let user = &whoami["status"]["userInfo"];
    assert_eq!(user["username"], "kubernetes-admin", "{whoami}");
    assert_eq!(
        user["groups"],
        serde_json::json!(["system:masters", "system:authenticated"]),
        "{whoami}"
    );
    // The ServiceAccount signing key from the PKI issues tokens.
    kubectl_ok(&api, &admin, &["create", "serviceaccount", "robot"]);
    let token = kubectl_ok(&api, &admin, &["create", "token", "robot"]);
    assert_eq!(token.trim().split('.').count(), 3, "{token}");

    // The kube crate with a kubelet's kubeconfig authenticates as that node.
    let kubelet = kube_client(&api, &pki.path().join("nodes/pi-1/kubelet.conf")).await;
    let review: SelfSubjectReview = Api::all(kubelet.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    let user = review.status.unwrap().user_info.unwrap();
    assert_eq!(user.username.as_deref(), Some("system:node:pi-1"));
    assert_eq!(
        user.groups.unwrap(),
        ["system:nodes", "system:authenticated"]
    );
    let namespaces = Api::<Namespace>::all(kubelet)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(namespaces
        .items
        .iter()
        .any(|n| n.metadata.name.as_deref() == Some("default")));

    // Without a client certificate, the token of the test harness still works.
    let client = api.client().await;
    let review: SelfSubjectReview = Api::all(client)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    assert_eq!(
        review
            .status
            .unwrap()
            .user_info
            .unwrap()
            .username
            .as_deref(),
        Some("admin")
    );

    // A certificate from another CA (same CA name, another key) is refused at the
    // handshake, by kubectl and by the kube crate alike.
    let other = tempfile::tempdir().unwrap();
    pikubeadm_certs(other.path());
    let ca_pem = std::fs::read_to_string(pki.path().join("ca.crt")).unwrap();
    let forged = kubeconfig_with(
        api.dir.path(),
        "forged.conf",
        &ca_pem,
        &std::fs::read_to_string(other.path().join("admin.crt")).unwrap(),
        &std::fs::read_to_string(other.path().join("admin.key")).unwrap(),
    );
    let out = kubectl(&api, &forged, &["get", "ns"]);
    assert!(!out.status.success(), "a foreign certificate was accepted");
    assert_handshake_refused(&out);
    let forged_client = kube_client(&api, &forged).await;
    match Api::<Namespace>::all(forged_client)
        .list(&ListParams::default())
        .await
    {
        Ok(_) => panic!("a foreign certificate was accepted by the kube client path"),
        Err(kube::Error::Api(status)) => panic!("expected a TLS failure, got {status:?}"),
        Err(_) => {}
    }

    // An expired certificate from the right CA is refused too.
    let (ca, _) =
        pikubeadm::pki::CertificateAuthority::ensure(pki.path(), pikubeadm::certs::CA_COMMON_NAME)
            .unwrap();
    let key_pem = std::fs::read_to_string(pki.path().join("admin.key")).unwrap();
    let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
    let day = std::time::Duration::from_secs(24 * 3600);
    let now = std::time::SystemTime::now();
    let expired = ca
        .sign_between(
            &pikubeadm::pki::CertSpec::client(
                "expired",
                "kubernetes-admin",
                Some("system:masters"),
            ),
            &key,
            &api.dir.path().join("expired.crt"),
            now - 30 * day,
            now - day,
        )
        .unwrap();
    let expired = kubeconfig_with(api.dir.path(), "expired.conf", &ca_pem, &expired, &key_pem);
    let out = kubectl(&api, &expired, &["get", "ns"]);
    assert!(!out.status.success(), "an expired certificate was accepted");
    assert_handshake_refused(&out);

    // Rerunning pikubeadm leaves every file as it was.
    let before = snapshot(pki.path());
    assert!(pikubeadm_certs(pki.path()).unchanged());
    assert_eq!(snapshot(pki.path()), before);
}

/// kubectl could not connect: the TLS handshake failed (rustls' alert, or the closed
/// connection when kubectl writes before reading it), not a 401 from the server.
fn assert_handshake_refused(out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    // (kubectl prefixes "Unable to connect to the server" except when it reports the
    // error of a retried request: "Get …: remote error: tls: … - error from a previous
    // attempt: …".)
    assert!(
        (stderr.contains("remote error: tls:")
            || stderr.contains("broken pipe")
            || stderr.contains("connection reset"))
            && !stderr.contains("Unauthorized"),
        "{stderr}"
    );
}

fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}
