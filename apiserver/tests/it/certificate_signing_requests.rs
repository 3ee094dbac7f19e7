//! certificates.k8s.io/v1 CertificateSigningRequests with kubectl and the kube crate:
//! validation of the PEM request, the signer name and usages; the requester set from the
//! authenticated user; `kubectl get csr`, `kubectl certificate approve/deny` through the
//! `/approval` subresource; a certificate written through `/status` only once approved.

use base64::Engine as _;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};

use crate::common::*;

/// A PEM CSR for `cn`/`org`, signed by a new key.
fn csr_pem(cn: &str, org: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, org);
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn manifest(name: &str, request_b64: &str, signer: &str, usages: &[&str]) -> String {
    json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": { "name": name },
        "spec": {
            "request": request_b64,
            "signerName": signer,
            "usages": usages,
            "username": "someone-else",
            "groups": ["system:masters", "forged"],
        }
    })
    .to_string()
}

fn apply_err(api: &TestApi, manifest: &str) -> String {
    let out = api.kubectl_stdin(&["create", "-f", "-"], Some(manifest));
    assert!(!out.status.success(), "{manifest} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_validation_approval_and_status() {
    let api = TestApi::start().await;
    let signer = "kubernetes.io/kube-apiserver-client";
    let good = b64(&csr_pem("alice", "devs"));

    // Validation as upstream.
    let err = apply_err(
        &api,
        &manifest("bad-pem", &b64("not a csr"), signer, &["client auth"]),
    );
    assert!(err.contains("spec.request: Invalid value"), "{err}");
    let mut tampered = csr_pem("alice", "devs").into_bytes();
    // Flip a character inside the base64 body: the signature no longer verifies (or the
    // DER no longer parses).
    let pos = tampered.len() / 2;
    tampered[pos] = if tampered[pos] == b'A' { b'B' } else { b'A' };
    let err = apply_err(
        &api,
        &manifest(
            "tampered",
            &base64::engine::general_purpose::STANDARD.encode(&tampered),
            signer,
            &["client auth"],
        ),
    );
    assert!(err.contains("spec.request: Invalid value"), "{err}");
    let err = apply_err(&api, &manifest("no-signer", &good, "", &["client auth"]));
    assert!(err.contains("spec.signerName: Required value"), "{err}");
    let err = apply_err(
        &api,
        &manifest("bad-signer", &good, "nodomain", &["client auth"]),
    );
    assert!(err.contains("spec.signerName: Invalid value"), "{err}");
    let err = apply_err(
        &api,
        &manifest("bad-usage", &good, signer, &["client auth", "flying"]),
    );
    assert!(
        err.contains("spec.usages[1]: Unsupported value: \"flying\""),
        "{err}"
    );
    let err = apply_err(&api, &manifest("no-usages", &good, signer, &[]));
    assert!(err.contains("spec.usages: Required value"), "{err}");

    // A valid request: the requester is the authenticated user, not what the client sent.
    api.kubectl_stdin(
        &["create", "-f", "-"],
        Some(&manifest(
            "alice",
            &good,
            signer,
            &["digital signature", "client auth"],
        )),
    );
    let csrs: Api<CertificateSigningRequest> = Api::all(api.client().await);
    let csr = csrs.get("alice").await.unwrap();
    assert_eq!(csr.spec.username.as_deref(), Some("admin"));
    assert_eq!(csr.spec.uid.as_deref(), Some("admin-uid"));
    let groups = csr.spec.groups.clone().unwrap_or_default();
    assert!(groups.contains(&"system:masters".to_string()), "{groups:?}");
    assert!(!groups.contains(&"forged".to_string()), "{groups:?}");
    assert!(csr.status.is_none_or(|s| s.conditions.is_none()));

    let table = api.kubectl_ok(&["get", "csr", "alice"]);
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.contains(signer) && row.contains("admin") && row.contains("Pending"),
        "{table}"
    );

    // A certificate cannot be issued before approval.
    let cert_b64 = b64(&ca_like_cert_pem());
    let mut with_cert = serde_json::to_value(csrs.get("alice").await.unwrap()).unwrap();
    with_cert["status"] = json!({ "certificate": cert_b64 });
    let err = csrs
        .replace_status(
            "alice",
            &PostParams::default(),
            &serde_json::from_value(with_cert).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("certificate issuance not allowed unless Approved"),
        "{err}"
    );

    // kubectl certificate approve writes the Approved condition through /approval.
    api.kubectl_ok(&["certificate", "approve", "alice"]);
    let csr = csrs.get("alice").await.unwrap();
    let conds = csr.status.clone().unwrap().conditions.unwrap();
    assert_eq!(conds.len(), 1);
    assert_eq!(conds[0].type_, "Approved");
    assert_eq!(conds[0].status, "True");
    assert!(conds[0].last_update_time.is_some());
    // A status update may not drop the approval (it is kept) and now may issue.
    let mut with_cert = serde_json::to_value(&csr).unwrap();
    with_cert["status"] = json!({ "certificate": cert_b64 });
    let issued = csrs
        .replace_status(
            "alice",
            &PostParams::default(),
            &serde_json::from_value(with_cert).unwrap(),
        )
        .await
        .unwrap();
    let status = issued.status.unwrap();
    assert!(status.certificate.is_some());
    assert_eq!(status.conditions.unwrap()[0].type_, "Approved");
    let table = api.kubectl_ok(&["get", "csr", "alice"]);
    assert!(table.contains("Approved,Issued"), "{table}");
    // The certificate cannot change once issued.
    let mut changed: Value = serde_json::to_value(csrs.get("alice").await.unwrap()).unwrap();
    changed["status"]["certificate"] = json!(b64(&ca_like_cert_pem()));
    let err = csrs
        .replace_status(
            "alice",
            &PostParams::default(),
            &serde_json::from_value(changed).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("may not modify existing certificate"),
        "{err}"
    );
    // The approval cannot be withdrawn, nor turned into a denial.
    let out = api.kubectl(&["certificate", "deny", "alice"]);
    assert!(!out.status.success());
    let mut emptied: Value = serde_json::to_value(csrs.get("alice").await.unwrap()).unwrap();
    emptied["status"]["conditions"] = json!([]);
    let err = csrs
        .replace_subresource("approval", "alice", &PostParams::default(), &emptied)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("may not remove a condition of type \"Approved\""),
        "{err}"
    );

    // A denied request never gets a certificate.
    api.kubectl_stdin(
        &["create", "-f", "-"],
        Some(&manifest(
            "bob",
            &b64(&csr_pem("bob", "devs")),
            signer,
            &["client auth"],
        )),
    );
    api.kubectl_ok(&["certificate", "deny", "bob"]);
    let mut denied = serde_json::to_value(csrs.get("bob").await.unwrap()).unwrap();
    assert_eq!(denied["status"]["conditions"][0]["type"], "Denied");
    denied["status"]["certificate"] = json!(cert_b64);
    let err = csrs
        .replace_status(
            "bob",
            &PostParams::default(),
            &serde_json::from_value(denied).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("certificate issuance not allowed"),
        "{err}"
    );
    let table = api.kubectl_ok(&["get", "csr"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("bob ") && l.contains("Denied")),
        "{table}"
    );

    // Main-resource updates change metadata only.
    let mut relabel = csrs.get("bob").await.unwrap();
    relabel.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
    relabel.spec.signer_name = "example.com/other".into();
    let updated = csrs
        .replace("bob", &PostParams::default(), &relabel)
        .await
        .unwrap();
    assert_eq!(updated.spec.signer_name, signer);
    assert_eq!(updated.metadata.labels.unwrap()["a"], "b");

    // Any name a path segment allows (upstream kubelets use base64url digests).
    api.kubectl_stdin(
        &["create", "-f", "-"],
        Some(&manifest(
            "node-csr-Ab_cD-9",
            &b64(&csr_pem("system:node:x", "system:nodes")),
            "kubernetes.io/kube-apiserver-client-kubelet",
            &["client auth"],
        )),
    );
    csrs.get("node-csr-Ab_cD-9").await.unwrap();

    api.kubectl_ok(&["delete", "csr", "alice", "bob", "node-csr-Ab_cD-9"]);
}

/// Some self-signed certificate (its content does not matter to the apiserver).
fn ca_like_cert_pem() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    rcgen::CertificateParams::new(vec!["x".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .pem()
}
