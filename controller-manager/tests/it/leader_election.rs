//! Two controller-managers: only the lease holder runs controllers; when it dies the
//! other takes over within the lease duration.

use std::time::Duration;

use crate::common::{wait_until, TestApi, TIMEOUT};
use component_base::leader_election::LeaderElectionConfig;
use controller_manager::app::{self, Config};
use controller_manager::options::ControllerOptions;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::json;

fn reconciles(registry: &prometheus::Registry) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "workqueue_adds_total")
        .flat_map(|f| f.get_metric().iter())
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

#[tokio::test]
async fn only_the_leader_acts_and_a_successor_takes_over() {
    let api = TestApi::start().await;
    let client = api.client().await;
    let start = |identity: &'static str| {
        let client = client.clone();
        async move {
            let registry = prometheus::Registry::new();
            let (trigger, shutdown) = component_base::shutdown::channel();
            let config = Config {
                client,
                controllers: ControllerOptions::default(),
                enabled: vec!["serviceaccount"],
                leader_election: Some(LeaderElectionConfig {
                    lease_name: "kube-controller-manager".into(),
                    lease_namespace: "kube-system".into(),
                    identity: identity.into(),
                    lease_duration: Duration::from_secs(3),
                    renew_deadline: Duration::from_secs(2),
                    retry_period: Duration::from_millis(300),
                }),
                serving: None,
                registry: registry.clone(),
            };
            (
                trigger,
                registry,
                app::start(config, shutdown).await.unwrap(),
            )
        }
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let holder = || {
        let leases = leases.clone();
        async move {
            leases
                .get("kube-controller-manager")
                .await
                .ok()?
                .spec?
                .holder_identity
        }
    };
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let create_ns = |name: &'static str| {
        let namespaces = namespaces.clone();
        async move {
            let ns: Namespace =
                serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
            namespaces
                .create(&PostParams::default(), &ns)
                .await
                .unwrap();
        }
    };
    let default_sa = |ns: &'static str| {
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
        async move {
            wait_until(TIMEOUT, &format!("{ns}/default ServiceAccount"), || {
                let api = api.clone();
                async move { api.get_opt("default").await.ok().flatten() }
            })
            .await
        }
    };

    let (first_trigger, first_metrics, first) = start("first").await;
    wait_until(TIMEOUT, "first holds the lease", || async {
        (holder().await.as_deref() == Some("first")).then_some(())
    })
    .await;
    let (_second_trigger, second_metrics, _second) = start("second").await;
    create_ns("one").await;
    default_sa("one").await;
    assert!(reconciles(&first_metrics) > 0, "the leader reconciled");
    assert_eq!(reconciles(&second_metrics), 0, "the other did nothing");

    // The leader dies without releasing the lease.
    first.task.abort();
    drop(first_trigger);
    wait_until(
        Duration::from_secs(15),
        "second takes the lease",
        || async { (holder().await.as_deref() == Some("second")).then_some(()) },
    )
    .await;
    create_ns("two").await;
    default_sa("two").await;
    assert!(reconciles(&second_metrics) > 0, "the successor reconciles");
}
