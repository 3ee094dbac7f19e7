//! kube-apiserver against an etcd that serves TLS only and requires client certificates,
//! as kubeadm runs it: `--etcd-cafile`, `--etcd-certfile` and `--etcd-keyfile` with
//! `https://` servers, and bad values of them refused at start with exit code 64.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use store::testing::{EtcdPki, EtcdServer};
use store::{EtcdStore, Store};

use crate::common::kubectl_binary;

const TOKEN: &str = "etcd-tls-admin-token";

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn kube_apiserver(dir: &Path, port: u16, etcd_flags: &[String]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kube-apiserver"));
    command
        .args(etcd_flags)
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--secure-port={port}"))
        .arg(format!("--cert-dir={}", dir.join("certs").display()))
        .arg(format!(
            "--token-auth-file={}",
            dir.join("tokens.csv").display()
        ))
        .arg("--anonymous-auth=false")
        .arg("--service-cluster-ip-range=10.96.0.0/24")
        .stdin(Stdio::null());
    command
}

fn kubectl(dir: &Path, port: u16, args: &[&str]) -> Output {
    Command::new(kubectl_binary())
        .env("HOME", dir)
        .env("KUBECACHEDIR", dir.join("kubecache"))
        .arg(format!("--server=https://127.0.0.1:{port}"))
        .arg(format!("--token={TOKEN}"))
        // The self-signed serving certificate is not what this test is about.
        .arg("--insecure-skip-tls-verify")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("kubectl runs")
}

fn kubectl_ok(dir: &Path, port: u16, args: &[&str]) -> String {
    let out = kubectl(dir, port, args);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn serves_crud_from_an_etcd_that_requires_client_certificates() {
    let etcd = tokio::task::spawn_blocking(EtcdServer::start_tls)
        .await
        .unwrap()
        .expect("etcd serving TLS starts");
    let pki = etcd.pki().expect("a TLS etcd has a PKI").clone();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tokens.csv"),
        format!("{TOKEN},admin,admin-uid,\"system:masters\"\n"),
    )
    .unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("apiserver.log")).unwrap();
    let _apiserver = KillOnDrop(
        kube_apiserver(
            dir.path(),
            port,
            &[
                format!("--etcd-servers={}", etcd.endpoint()),
                format!("--etcd-cafile={}", pki.ca_cert.display()),
                format!("--etcd-certfile={}", pki.client_cert.display()),
                format!("--etcd-keyfile={}", pki.client_key.display()),
            ],
        )
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("kube-apiserver starts"),
    );

    // Ready means the built-in objects were written to etcd, over TLS.
    let deadline = Instant::now() + Duration::from_secs(60);
    let port_dir = dir.path().to_owned();
    tokio::task::spawn_blocking(move || loop {
        let out = kubectl(&port_dir, port, &["get", "--raw=/readyz"]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kube-apiserver did not become ready: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(port_dir.join("apiserver.log")).unwrap_or_default()
        );
        std::thread::park_timeout(Duration::from_millis(200));
    })
    .await
    .unwrap();

    let d = dir.path();
    kubectl_ok(
        d,
        port,
        &["create", "configmap", "tls", "--from-literal=k=v1"],
    );
    let value = kubectl_ok(
        d,
        port,
        &["get", "configmap", "tls", "-o=jsonpath={.data.k}"],
    );
    assert_eq!(value, "v1");
    kubectl_ok(
        d,
        port,
        &[
            "patch",
            "configmap",
            "tls",
            "--type=merge",
            "-p",
            r#"{"data":{"k":"v2"}}"#,
        ],
    );
    let value = kubectl_ok(
        d,
        port,
        &["get", "configmap", "tls", "-o=jsonpath={.data.k}"],
    );
    assert_eq!(value, "v2");

    // The object is in the TLS etcd, where upstream keeps it.
    let store = EtcdStore::connect(etcd.config()).await.unwrap();
    let stored = store
        .get("configmaps/default/tls")
        .await
        .unwrap()
        .expect("the ConfigMap is stored in etcd");
    assert!(
        String::from_utf8_lossy(&stored.value).contains("v2"),
        "{:?}",
        stored.value
    );

    kubectl_ok(d, port, &["delete", "configmap", "tls"]);
    let out = kubectl(d, port, &["get", "configmap", "tls"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(store.get("configmaps/default/tls").await.unwrap(), None);
}

/// Unusable etcd TLS flags stop kube-apiserver at start with exit code 64 and a message
/// naming the problem, before it binds a port or dials etcd.
#[test]
fn bad_etcd_tls_flags_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let pki = EtcdPki::generate(&dir.path().join("pki")).unwrap();
    let missing = dir.path().join("missing.crt");
    let flag = |name: &str, path: &Path| format!("--{name}={}", path.display());
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec![flag("etcd-certfile", &pki.client_cert)],
            "--etcd-certfile and --etcd-keyfile must be given together".into(),
        ),
        (
            vec![flag("etcd-keyfile", &pki.client_key)],
            "--etcd-certfile and --etcd-keyfile must be given together".into(),
        ),
        (
            vec![
                flag("etcd-cafile", &missing),
                flag("etcd-certfile", &pki.client_cert),
                flag("etcd-keyfile", &pki.client_key),
            ],
            format!("reading {}", missing.display()),
        ),
        (
            vec![flag("etcd-cafile", &pki.client_key)],
            format!("{}: no PEM CERTIFICATE block", pki.client_key.display()),
        ),
        (
            vec![
                flag("etcd-certfile", &pki.client_cert),
                flag("etcd-keyfile", &pki.server_key),
            ],
            "are not a certificate and its key".into(),
        ),
    ];
    for (flags, expected) in cases {
        let mut all = vec!["--etcd-servers=https://127.0.0.1:1".to_string()];
        all.extend(flags.iter().cloned());
        let out = kube_apiserver(dir.path(), 0, &all).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{flags:?}: {stderr}");
        assert!(
            stderr.contains(&expected),
            "{flags:?}: {stderr}\nexpected: {expected}"
        );
        assert!(!dir.path().join("certs").exists(), "nothing was started");
    }
}
