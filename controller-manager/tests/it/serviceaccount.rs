//! The serviceaccount controller: every namespace gets (and keeps) a `default`
//! ServiceAccount.

use crate::common::{wait_until, Cluster, TIMEOUT};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn every_namespace_has_a_default_service_account() {
    let c = Cluster::start(&["serviceaccount"]).await;
    // Namespaces made at bootstrap get one.
    let in_default: Api<ServiceAccount> = Api::namespaced(c.client.clone(), "default");
    wait_until(TIMEOUT, "default/default ServiceAccount", || {
        let api = in_default.clone();
        async move { api.get_opt("default").await.ok().flatten() }
    })
    .await;
    // A new namespace gets one.
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team-a"}})).unwrap();
    Api::<Namespace>::all(c.client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let team: Api<ServiceAccount> = Api::namespaced(c.client.clone(), "team-a");
    let first = wait_until(TIMEOUT, "team-a/default ServiceAccount", || {
        let api = team.clone();
        async move { api.get_opt("default").await.ok().flatten() }
    })
    .await;
    // Deleted, it comes back (a new object).
    team.delete("default", &DeleteParams::default())
        .await
        .unwrap();
    wait_until(TIMEOUT, "team-a/default recreated", || {
        let api = team.clone();
        let old = first.metadata.uid.clone();
        async move {
            api.get_opt("default")
                .await
                .ok()
                .flatten()
                .filter(|sa| sa.metadata.uid != old)
        }
    })
    .await;
}

/// The root-ca-cert-publisher: every namespace gets (and keeps) `kube-root-ca.crt` with
/// the CA bundle, which the ServiceAccount admission plugin's token volumes project.
#[tokio::test]
async fn every_namespace_has_the_root_ca_bundle() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let bundle = "-----BEGIN CERTIFICATE-----\nAQEB\n-----END CERTIFICATE-----\n";
    let options = controller_manager::options::ControllerOptions {
        root_ca: Some(bundle.into()),
        ..Default::default()
    };
    let c = Cluster::start_with(&["root-ca-certificate-publisher-controller"], options).await;
    let has_bundle = |api: Api<ConfigMap>| async move {
        api.get_opt("kube-root-ca.crt")
            .await
            .ok()
            .flatten()
            .filter(|cm| {
                cm.data
                    .as_ref()
                    .and_then(|d| d.get("ca.crt"))
                    .map(String::as_str)
                    == Some(bundle)
            })
    };
    let in_default: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    let cm = wait_until(TIMEOUT, "default/kube-root-ca.crt", || {
        has_bundle(in_default.clone())
    })
    .await;
    assert!(cm
        .metadata
        .annotations
        .unwrap_or_default()
        .contains_key("kubernetes.io/description"));
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team-b"}})).unwrap();
    Api::<Namespace>::all(c.client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let team: Api<ConfigMap> = Api::namespaced(c.client.clone(), "team-b");
    let mut cm = wait_until(TIMEOUT, "team-b/kube-root-ca.crt", || {
        has_bundle(team.clone())
    })
    .await;
    // Changed by hand, the bundle is put back; deleted, the ConfigMap comes back.
    cm.data = Some([("ca.crt".to_string(), "tampered".to_string())].into());
    team.replace("kube-root-ca.crt", &PostParams::default(), &cm)
        .await
        .unwrap();
    wait_until(TIMEOUT, "team-b bundle restored", || {
        has_bundle(team.clone())
    })
    .await;
    team.delete("kube-root-ca.crt", &DeleteParams::default())
        .await
        .unwrap();
    wait_until(TIMEOUT, "team-b/kube-root-ca.crt recreated", || {
        has_bundle(team.clone())
    })
    .await;
}
