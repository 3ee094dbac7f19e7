//! csrsigning and csrapproving against a real apiserver: a node's client certificate
//! request made with a bootstrap token is auto-approved and signed by the cluster CA;
//! requests for another signer or from an ordinary user wait for an administrator;
//! `kubectl certificate approve` gets them signed, `deny` leaves them without a
//! certificate, and a request the signer does not issue is marked Failed.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;
use x509_parser::prelude::FromDer;

use crate::common::*;
use controller_manager::options::ControllerOptions;

const BOOTSTRAP_TOKEN: &str = "abcdef.0123456789abcdef";

/// A self-signed CA as `ca.crt`/`ca.key` in `dir`.
fn write_ca(dir: &Path) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test-ca");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("ca.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("ca.key"), key.serialize_pem()).unwrap();
    cert.der().to_vec()
}

fn csr_manifest(name: &str, cn: &str, org: &str, signer: &str, usages: &[&str]) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, org);
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": { "name": name },
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
            "signerName": signer,
            "usages": usages,
        }
    })
    .to_string()
}

fn create(c: &Cluster, token: Option<&str>, manifest: &str) {
    let token_flag = token.map(|t| format!("--token={t}"));
    let mut args: Vec<&str> = token_flag.iter().map(String::as_str).collect();
    args.extend(["create", "-f", "-"]);
    let out = c.api.kubectl_stdin(&args, Some(manifest));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn issued(c: &Cluster, name: &str) -> Vec<u8> {
    let csrs: Api<CertificateSigningRequest> = Api::all(c.client.clone());
    let pem = wait_until(TIMEOUT, &format!("{name} is issued"), || {
        let csrs = csrs.clone();
        async move {
            csrs.get(name)
                .await
                .ok()?
                .status?
                .certificate
                .filter(|c| !c.0.is_empty())
        }
    })
    .await;
    api_types::validation::certificates::pem_block(&pem.0, "CERTIFICATE").unwrap()
}

fn conditions(csr: &CertificateSigningRequest) -> Vec<(String, Option<String>)> {
    csr.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .map(|c| (c.type_.clone(), c.reason.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_client_csrs_are_approved_and_signed() {
    let pki = tempfile::tempdir().unwrap();
    let ca_der = write_ca(pki.path());
    let options = ControllerOptions {
        cluster_signing_cert_file: Some(pki.path().join("ca.crt")),
        cluster_signing_key_file: Some(pki.path().join("ca.key")),
        cluster_signing_duration: Duration::from_secs(3600),
        ..ControllerOptions::default()
    };
    let c = Cluster::start_with(&["csrsigning", "csrapproving"], options).await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "bootstrap-token-abcdef" },
        "type": "bootstrap.kubernetes.io/token",
        "stringData": {
            "token-id": "abcdef",
            "token-secret": "0123456789abcdef",
            "usage-bootstrap-authentication": "true",
        },
    }))
    .unwrap();
    Api::<Secret>::namespaced(c.client.clone(), "kube-system")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let csrs: Api<CertificateSigningRequest> = Api::all(c.client.clone());
    let kubelet_signer = "kubernetes.io/kube-apiserver-client-kubelet";
    let client_signer = "kubernetes.io/kube-apiserver-client";

    // An ordinary user's request for another signer, and a bootstrapper's request for a
    // node certificate with the wrong organization: neither is auto-approved.
    create(
        &c,
        None,
        &csr_manifest("alice", "alice", "devs", client_signer, &["client auth"]),
    );
    create(
        &c,
        Some(BOOTSTRAP_TOKEN),
        &csr_manifest(
            "sneaky",
            "system:node:pi-9",
            "system:masters",
            kubelet_signer,
            &["client auth"],
        ),
    );
    // A node joining with the bootstrap token: approved and signed.
    create(
        &c,
        Some(BOOTSTRAP_TOKEN),
        &csr_manifest(
            "node-csr-pi-1",
            "system:node:pi-1",
            "system:nodes",
            kubelet_signer,
            &["digital signature", "key encipherment", "client auth"],
        ),
    );
    let der = issued(&c, "node-csr-pi-1").await;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    cert.verify_signature(Some(ca.public_key())).unwrap();
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "system:node:pi-1"
    );
    assert!(
        cert.extended_key_usage()
            .unwrap()
            .unwrap()
            .value
            .client_auth
    );
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert!(
        lifetime <= 3600 + 300,
        "{lifetime}: --cluster-signing-duration"
    );
    let node_csr = csrs.get("node-csr-pi-1").await.unwrap();
    assert_eq!(
        conditions(&node_csr),
        [("Approved".to_string(), Some("AutoApproved".to_string()))]
    );
    assert_eq!(
        node_csr.spec.username.as_deref(),
        Some("system:bootstrap:abcdef")
    );

    // Both earlier requests were seen before the node's (one informer, in order): still
    // pending.
    for name in ["alice", "sneaky"] {
        let csr = csrs.get(name).await.unwrap();
        assert!(conditions(&csr).is_empty(), "{name}: {:?}", csr.status);
    }

    // Denied: never signed. Approved by the administrator: signed. The sneaky one,
    // approved, is not what the kubelet signer issues: Failed.
    create(
        &c,
        None,
        &csr_manifest("bob", "bob", "devs", client_signer, &["client auth"]),
    );
    c.api.kubectl_ok(&["certificate", "deny", "bob"]);
    c.api.kubectl_ok(&["certificate", "approve", "sneaky"]);
    let csr = wait_until(TIMEOUT, "sneaky fails", || {
        let csrs = csrs.clone();
        async move {
            let csr = csrs.get("sneaky").await.ok()?;
            conditions(&csr)
                .iter()
                .any(|(t, _)| t == "Failed")
                .then_some(csr)
        }
    })
    .await;
    assert!(conditions(&csr).contains(&(
        "Failed".to_string(),
        Some("SignerValidationFailure".to_string())
    )));
    assert!(csr.status.unwrap().certificate.is_none());
    c.api.kubectl_ok(&["certificate", "approve", "alice"]);
    let der = issued(&c, "alice").await;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(
        cert.subject()
            .iter_organization()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "devs"
    );
    let bob = csrs.get("bob").await.unwrap();
    assert_eq!(conditions(&bob)[0].0, "Denied");
    assert!(bob.status.unwrap().certificate.is_none());
    let table = c.api.kubectl_ok(&["get", "csr"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("node-csr-pi-1 ") && l.contains("Approved,Issued")),
        "{table}"
    );
    let _ = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
}
