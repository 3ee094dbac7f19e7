//! Client-side apiserver failover (component_base::failover): a daemon's client whose
//! kubeconfig names one apiserver learns the others from the `kubernetes` endpoints and
//! carries on through them when its own stops, as every pikube daemon does in a highly
//! available control plane.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use component_base::options::KubeconfigOptions;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, PostParams};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_carries_on_through_another_apiserver_when_its_own_stops() {
    let first: IpAddr = "127.0.0.1".parse().unwrap();
    let mut api = TestApi::start_with(|c| c.advertise_address = Some(first)).await;
    let port = api.addr.port();

    // A second apiserver on the same etcd, on the same port of another loopback address
    // (the `kubernetes` endpoints carry one port for all apiservers, as upstream's), with
    // the same serving certificate.
    let mut config = api.config().clone();
    config.bind_address = "127.0.0.2".parse().unwrap();
    config.secure_port = port;
    config.advertise_address = Some("127.0.0.2".parse().unwrap());
    let (_second_trigger, shutdown) = component_base::shutdown::channel();
    let mut second = apiserver::start(config, shutdown).await.unwrap();
    second.ready().await;
    assert_eq!(second.local_addr, SocketAddr::from(([127, 0, 0, 2], port)));

    // A daemon's client, its kubeconfig naming the first apiserver only.
    let options = KubeconfigOptions {
        kubeconfig: Some(api.kubeconfig_path().to_path_buf()),
        ..KubeconfigOptions::default()
    };
    let (client, apiservers) = options.failover_client("kube-scheduler").await.unwrap();
    let both = vec![format!("127.0.0.1:{port}"), format!("127.0.0.2:{port}")];
    wait_until(
        component_base::failover::REFRESH_PERIOD * 3,
        "the client knows both apiservers",
        || async { (apiservers.listed() == both).then_some(()) },
    )
    .await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.list(&ListParams::default()).await.unwrap();

    // The first apiserver stops; etcd and the second keep running.
    api.stop().await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = wait_until(
        Duration::from_secs(30),
        "a write through the second apiserver",
        || async {
            let cm: ConfigMap = serde_json::from_value(
                serde_json::json!({"metadata": {"name": "after-failover"}, "data": {"k": "v"}}),
            )
            .unwrap();
            configmaps.create(&PostParams::default(), &cm).await.ok()
        },
    )
    .await;
    assert_eq!(created.data.unwrap()["k"], "v");
    assert!(
        namespaces
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some("default")),
        "reads go on too"
    );
    // The stopped apiserver left the endpoints, and the client's list follows.
    wait_until(
        component_base::failover::REFRESH_PERIOD * 3,
        "the client's list drops the stopped apiserver",
        || async { (apiservers.listed() == [format!("127.0.0.2:{port}")]).then_some(()) },
    )
    .await;
}
