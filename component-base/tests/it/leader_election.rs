//! Leader election against a real apiserver and etcd: one leader at a time, a graceful
//! handover on release, and a crashed leader replaced once its lease expires.

use apiserver::testing::TestApi;
use component_base::leader_election::{LeaderElectionConfig, LeaderElector, Leadership};
use component_base::shutdown::{self, Shutdown};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

fn config(lease: &str, identity: &str, lease_secs: u64, renew_ms: u64) -> LeaderElectionConfig {
    LeaderElectionConfig {
        lease_name: lease.into(),
        lease_namespace: "kube-system".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(lease_secs),
        renew_deadline: Duration::from_millis(renew_ms),
        retry_period: Duration::from_millis(300),
    }
}

struct Candidate {
    identity: String,
    registry: prometheus::Registry,
    campaign: JoinHandle<Option<Leadership>>,
}

/// Starts campaigning in the background.
fn campaign(client: &kube::Client, config: LeaderElectionConfig, stop: &Shutdown) -> Candidate {
    let registry = prometheus::Registry::new();
    let identity = config.identity.clone();
    let elector = LeaderElector::new(client.clone(), config, &registry);
    let stop = stop.clone();
    let campaign = tokio::spawn(async move { elector.acquire(&stop).await });
    Candidate {
        identity,
        registry,
        campaign,
    }
}

/// `leader_election_master_status` as Prometheus would scrape it.
fn master_status(registry: &prometheus::Registry) -> String {
    let text = String::from_utf8(component_base::metrics::encode_text(registry)).unwrap();
    text.lines()
        .find(|l| l.starts_with("leader_election_master_status{"))
        .unwrap_or_default()
        .to_string()
}

async fn lease(api: &Api<Lease>, name: &str) -> (String, i32, Option<jiff::Timestamp>) {
    let spec = api.get(name).await.unwrap().spec.unwrap();
    (
        spec.holder_identity.unwrap_or_default(),
        spec.lease_transitions.unwrap_or_default(),
        spec.renew_time.map(|t| t.0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_handed_over_on_release_and_after_a_crash() {
    let api = TestApi::start().await;
    let client = api.client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let (_stop_trigger, stop) = shutdown::channel();

    // --- Two candidates, one leader; the other keeps waiting while the leader renews.
    // (lease 2s, renew deadline 1.5s, retry 0.3s)
    let mut a = campaign(&client, config("crash-test", "a", 2, 1500), &stop);
    let mut b = campaign(&client, config("crash-test", "b", 2, 1500), &stop);
    let (leadership, leader, mut waiting) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::select! {
            r = &mut a.campaign => (r.unwrap().expect("acquired"), true),
            r = &mut b.campaign => (r.unwrap().expect("acquired"), false),
        }
    })
    .await
    .map(|(leadership, a_won)| {
        if a_won {
            (leadership, a, b)
        } else {
            (leadership, b, a)
        }
    })
    .expect("one candidate acquires the lease");
    let (leader_id, leader_registry) = (leader.identity.clone(), leader.registry.clone());
    let (holder, transitions, first_renew) = lease(&leases, "crash-test").await;
    assert_eq!(holder, leader_id);
    assert_eq!(transitions, 0, "created by the first leader");
    assert_eq!(
        master_status(&leader_registry),
        "leader_election_master_status{name=\"crash-test\"} 1"
    );
    assert_eq!(
        master_status(&waiting.registry),
        "leader_election_master_status{name=\"crash-test\"} 0"
    );
    // Longer than the lease duration: only renewals keep the other candidate out.
    assert!(
        tokio::time::timeout(Duration::from_secs(3), &mut waiting.campaign)
            .await
            .is_err(),
        "the other candidate must not acquire a renewed lease"
    );
    assert!(!leadership.is_lost());
    let (_, _, renewed) = lease(&leases, "crash-test").await;
    assert!(renewed > first_renew, "the leader renews");

    // --- The leader crashes (stops renewing without releasing): replaced once the lease
    // expires on the other candidate's clock, which counts from the last renewal it saw.
    drop(leadership);
    let crashed = Instant::now();
    assert_eq!(
        master_status(&leader_registry),
        "leader_election_master_status{name=\"crash-test\"} 0"
    );
    let successor = tokio::time::timeout(Duration::from_secs(10), &mut waiting.campaign)
        .await
        .expect("the crashed leader is replaced")
        .unwrap()
        .expect("acquired");
    let took = crashed.elapsed();
    assert!(
        took <= Duration::from_secs(2)
            + Duration::from_millis(300 * 22 / 10)
            + Duration::from_secs(2),
        "replaced within the lease duration plus a retry period (took {took:?})"
    );
    let (holder, transitions, _) = lease(&leases, "crash-test").await;
    assert_eq!(holder, waiting.identity);
    assert_eq!(transitions, 1, "a new holder is a transition");
    assert_eq!(
        master_status(&waiting.registry),
        "leader_election_master_status{name=\"crash-test\"} 1"
    );
    successor.release().await;

    // --- Graceful release hands over at once. A long lease (10s) shows the successor did
    // not wait for it to expire.
    let mut c = campaign(&client, config("release-test", "c", 10, 8000), &stop);
    let c_leads = tokio::time::timeout(Duration::from_secs(20), &mut c.campaign)
        .await
        .expect("c acquires the free lease")
        .unwrap()
        .expect("acquired");
    let mut d = campaign(&client, config("release-test", "d", 10, 8000), &stop);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut d.campaign)
            .await
            .is_err(),
        "d waits while c leads"
    );
    c_leads.release().await;
    let released = Instant::now();
    assert_eq!(
        master_status(&c.registry),
        "leader_election_master_status{name=\"release-test\"} 0"
    );
    let d_leads = tokio::time::timeout(Duration::from_secs(5), &mut d.campaign)
        .await
        .expect("the released lease is taken well before its 10s duration")
        .unwrap()
        .expect("acquired");
    assert!(released.elapsed() < Duration::from_secs(5));
    let (holder, transitions, _) = lease(&leases, "release-test").await;
    assert_eq!(holder, "d");
    assert_eq!(transitions, 1);

    // --- A campaign ends without leadership at shutdown.
    let (trigger, stop_e) = shutdown::channel();
    let e = campaign(&client, config("release-test", "e", 10, 8000), &stop_e);
    trigger.shutdown();
    let outcome = tokio::time::timeout(Duration::from_secs(5), e.campaign)
        .await
        .expect("acquire returns on shutdown")
        .unwrap();
    assert!(outcome.is_none());
    drop(d_leads);
}
