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
