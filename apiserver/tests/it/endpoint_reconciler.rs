//! The lease endpoint reconciler: two apiservers on one etcd both appear in the
//! `kubernetes` Service's Endpoints and EndpointSlice; one that stops cleanly leaves them at
//! once; one that stops renewing (a crashed apiserver, played by a lease written straight
//! into etcd) leaves them once its lease expires.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;

use crate::common::*;

/// The addresses of the `kubernetes` Endpoints and EndpointSlice, which must agree.
async fn listed(client: &kube::Client) -> Vec<String> {
    let endpoints = Api::<Endpoints>::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await
        .unwrap();
    let from_endpoints: Vec<String> = endpoints
        .subsets
        .unwrap_or_default()
        .iter()
        .flat_map(|s| s.addresses.iter().flatten().map(|a| a.ip.clone()))
        .collect();
    let slice = Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await
        .unwrap();
    let from_slice: Vec<String> = slice
        .endpoints
        .iter()
        .flat_map(|e| e.addresses.iter().cloned())
        .collect();
    assert_eq!(
        from_endpoints, from_slice,
        "Endpoints and EndpointSlice differ"
    );
    from_endpoints
}

async fn wait_listed(client: &kube::Client, want: &[&str], within: Duration) {
    wait_until(
        within,
        &format!("kubernetes endpoints {want:?}"),
        || async { (listed(client).await == want).then_some(()) },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_live_apiserver_is_a_kubernetes_endpoint() {
    let first: IpAddr = "10.255.0.1".parse().unwrap();
    let api = TestApi::start_with(|c| c.advertise_address = Some(first)).await;
    let client = api.client().await;
    assert_eq!(listed(&client).await, ["10.255.0.1"]);

    // A second apiserver on the same etcd, advertising another address.
    let mut config = api.config().clone();
    config.secure_port = 0;
    config.advertise_address = Some("10.255.0.2".parse().unwrap());
    let (trigger, shutdown) = component_base::shutdown::channel();
    let mut second = apiserver::start(config, shutdown).await.unwrap();
    second.ready().await;
    // It lists both as soon as it has bootstrapped; the first sees the same objects.
    assert_eq!(listed(&client).await, ["10.255.0.1", "10.255.0.2"]);

    // A clean stop removes it before the server's task ends.
    trigger.shutdown();
    tokio::time::timeout(Duration::from_secs(20), second.task)
        .await
        .expect("the second apiserver stops")
        .unwrap();
    assert_eq!(listed(&client).await, ["10.255.0.1"]);

    // An apiserver that dies keeps its lease until it expires: write one that is never
    // renewed, as a crashed apiserver leaves it, living a little longer than one round of
    // the reconciler so that a round sees it.
    let mut etcd = etcd_client::Client::connect([api.etcd.endpoint()], None)
        .await
        .unwrap();
    let lease = etcd.lease_grant(12, None).await.unwrap().id();
    etcd.put(
        "/registry/masterleases/10.255.0.3",
        r#"{"kind":"Endpoints","apiVersion":"v1","metadata":{"name":"10.255.0.3"},"subsets":[{"addresses":[{"ip":"10.255.0.3"}]}]}"#,
        Some(etcd_client::PutOptions::new().with_lease(lease)),
    )
    .await
    .unwrap();
    // The first apiserver's next round (every 10 s) lists it, and a later one drops it.
    let interval = apiserver::endpoint_reconciler::INTERVAL;
    wait_listed(&client, &["10.255.0.1", "10.255.0.3"], interval * 2).await;
    wait_listed(
        &client,
        &["10.255.0.1"],
        Duration::from_secs(12) + interval * 2,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_reconciler_the_endpoints_are_left_alone() {
    let api = TestApi::start_with(|c| {
        c.endpoint_reconciler_type = apiserver::endpoint_reconciler::ReconcilerType::None
    })
    .await;
    let client = api.client().await;
    // The Service exists (its cluster IP is the first of the range), with no endpoints.
    let svc = Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await
        .unwrap();
    assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("10.96.0.1"));
    let err = Api::<Endpoints>::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err:?}"
    );
}
