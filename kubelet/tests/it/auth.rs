//! The kubelet port behind upstream's authentication and authorization: with
//! `--authentication-token-webhook --authorization-mode=Webhook`, a token is reviewed by
//! the apiserver (TokenReview) and each request is a SubjectAccessReview for
//! `nodes/<subresource>` of this node, against an apiserver with Node,RBAC.

use apiserver::authz::Mode;
use apiserver::testing::curl;
use kubelet::server::AuthorizationMode;

use crate::common::{
    kubectl_logs_and_exec_reach, phase, pod_condition, wait_until, TestApi, TestNode, TIMEOUT,
};

/// A CA in `dir` (`kubelet-client-ca.crt`) and the apiserver's kubelet client certificate
/// it signed (`apiserver-kubelet-client.{crt,key}`: CN kube-apiserver-kubelet-client in
/// system:masters, as pikubeadm writes it).
fn kubelet_client_pki(dir: &std::path::Path) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "kubelet-client-ca");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
    let mut client = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    client
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
    client
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:masters");
    client.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = client.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join("kubelet-client-ca.crt"), ca.pem()).unwrap();
    std::fs::write(dir.join("apiserver-kubelet-client.crt"), cert.pem()).unwrap();
    std::fs::write(
        dir.join("apiserver-kubelet-client.key"),
        key.serialize_pem(),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_mode_asks_the_apiserver_who_may_use_the_kubelet_port() {
    let pki = tempfile::tempdir().unwrap();
    kubelet_client_pki(pki.path());
    let dir = pki.path().to_path_buf();
    let api = TestApi::start_with(|c| {
        c.authorization_modes = vec![Mode::Node, Mode::Rbac];
        c.kubelet.client_certificate = Some(dir.join("apiserver-kubelet-client.crt"));
        c.kubelet.client_key = Some(dir.join("apiserver-kubelet-client.key"));
    })
    .await;
    let client = api.client().await;
    let ca = pki.path().join("kubelet-client-ca.crt");
    let node = TestNode::start_on(api, client, None, move |s| {
        s.auth.token_webhook = true;
        s.auth.client_ca_file = Some(ca.clone());
        s.auth.authorization_mode = AuthorizationMode::Webhook;
        // A denial seen before the RoleBinding takes effect must not last 30s.
        s.auth.unauthorized_ttl = std::time::Duration::from_secs(1);
    })
    .await;
    let addr = node.kubelet.as_ref().unwrap().1.serving_addr.unwrap();
    let url = |path: &str| format!("https://{addr}{path}");

    // The healthz port stays open.
    let healthz = format!("http://{}/healthz", node.healthz_addr());
    assert_eq!(curl(&healthz, &[]).await, (200, "ok".into()));

    // Anonymous: allowed to authenticate, not authorized for nodes/proxy.
    let (code, body) = curl(&url("/pods"), &[]).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        body.trim(),
        "Forbidden (user=system:anonymous, verb=get, resource=nodes, subresource=proxy)"
    );
    // A token the apiserver does not know.
    let (code, body) = curl(&url("/pods"), &["-H", "Authorization: Bearer bogus"]).await;
    assert_eq!((code, body.trim()), (401, "Unauthorized"));

    // A ServiceAccount without rights, then one bound to system:kubelet-api-admin.
    let api = &node.api;
    for sa in ["nobody", "scraper"] {
        api.kubectl_ok(&["create", "serviceaccount", sa, "-n", "default"]);
    }
    api.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "scraper-kubelet-api-admin",
        "--clusterrole=system:kubelet-api-admin",
        "--serviceaccount=default:scraper",
    ]);
    let bearer = |sa: &str| {
        let token = api.kubectl_ok(&["create", "token", sa, "-n", "default"]);
        format!("Authorization: Bearer {}", token.trim())
    };
    let nobody = bearer("nobody");
    let scraper = bearer("scraper");
    let (code, body) = curl(&url("/pods"), &["-H", &nobody]).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        body.trim(),
        "Forbidden (user=system:serviceaccount:default:nobody, verb=get, resource=nodes, subresource=proxy)"
    );
    let (code, body) = curl(&url("/metrics"), &["-H", &nobody]).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("subresource=metrics"), "{body}");

    let pods = wait_until(
        TIMEOUT,
        "the bound ServiceAccount lists the node's pods",
        || {
            let (url, scraper) = (url("/pods"), scraper.clone());
            async move {
                let (code, body) = curl(&url, &["-H", &scraper]).await;
                (code == 200).then_some(body)
            }
        },
    )
    .await;
    let list: serde_json::Value = serde_json::from_str(&pods).unwrap();
    assert_eq!(list["kind"], "PodList", "{pods}");
    let (code, body) = curl(&url("/metrics"), &["-H", &scraper]).await;
    assert_eq!(code, 200, "{body}");

    // The apiserver's client certificate (system:masters) still reaches logs and exec.
    node.create_pod(
        "talk",
        serde_json::json!({"containers": [{
            "name": "main", "image": "busybox:1.35",
            "command": ["sh", "-c", "echo hello-from-pod && exec sleep 3600"],
        }]}),
    )
    .await;
    node.wait_pod("talk", "pod Running and Ready", |p| {
        phase(p) == "Running" && pod_condition(p, "Ready")
    })
    .await;
    kubectl_logs_and_exec_reach(&node).await;
    // The same logs straight from the kubelet port need nodes/proxy.
    let (code, _) = curl(&url("/containerLogs/default/talk/main"), &["-H", &nobody]).await;
    assert_eq!(code, 403);
    let (code, body) = curl(&url("/containerLogs/default/talk/main"), &["-H", &scraper]).await;
    assert_eq!((code, body.trim()), (200, "hello-from-pod"));
}
