//! The controller-manager benchmark: it prints figures, it is not a timed test.
//!
//! ```sh
//! cargo build --release -p controller-manager
//! cargo bench -p controller-manager --bench controller_manager
//! BENCH_SCALE=300 BENCH_DEPLOYMENTS=30 BENCH_ROLLOUT=100 cargo bench -p controller-manager --bench controller_manager
//! ```
//!
//! A real etcd and kube-apiserver run in this process (`apiserver::testing`); the real
//! `kube-controller-manager` binary runs as a child with its default controllers, so its
//! memory is its own. There is no kubelet: the bench marks pods Running and Ready itself
//! where a workload needs readiness. Workloads (upstream's issue):
//!
//! 1. one Deployment scaled 0 → `BENCH_SCALE` (3,000) replicas: time until every pod
//!    exists and the ReplicaSet's status counts them;
//! 2. `BENCH_DEPLOYMENTS` (300) Deployments of 10 replicas created at once: time until
//!    all their pods exist;
//! 3. a rolling update of a `BENCH_ROLLOUT` (1,000)-replica Deployment whose pods the
//!    bench marks ready: time until the rollout is complete;
//! 4. the controller-manager's VmRSS with `BENCH_TOTAL_PODS` (10,000) pods in the cluster.
//!
//! Targets: ≥ 500 pods created per second; controller-manager memory ≤ 60 MiB with
//! 10,000 pods. Run without `--bench` (as `cargo test --benches` does) it is a smoke run.

use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use apiserver::testing::TestApi;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

const NAMESPACE: &str = "bench";
const TARGET_PODS_PER_SECOND: f64 = 500.0;
const TARGET_RSS_MIB: f64 = 60.0;
const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(600);

struct Settings {
    scale: usize,
    deployments: usize,
    rollout: usize,
    total_pods: usize,
}

impl Settings {
    fn from_env(full: bool) -> Result<Settings> {
        let get = |name: &str, full_default: usize, smoke: usize| -> Result<usize> {
            match std::env::var(name) {
                Ok(v) => v.parse().with_context(|| format!("{name}={v}")),
                Err(_) => Ok(if full { full_default } else { smoke }),
            }
        };
        Ok(Settings {
            scale: get("BENCH_SCALE", 3000, 30)?,
            deployments: get("BENCH_DEPLOYMENTS", 300, 3)?,
            rollout: get("BENCH_ROLLOUT", 1000, 10)?,
            total_pods: get("BENCH_TOTAL_PODS", 10_000, 100)?,
        })
    }
}

fn main() -> ExitCode {
    let full = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(run(full)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn progress(msg: &str) {
    eprintln!("bench: {msg}");
}

/// The controller-manager child; killed on drop.
struct Manager(Child);

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no VmRSS")?
        .parse()?;
    Ok(kib / 1024.0)
}

async fn run(full: bool) -> Result<()> {
    let settings = Settings::from_env(full)?;
    let api = TestApi::start().await;
    let client = api.client().await;
    let binary = env!("CARGO_BIN_EXE_kube-controller-manager");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(binary)
        .args([
            "--kubeconfig",
            api.kubeconfig_path().to_str().unwrap(),
            "--leader-elect=false",
        ])
        .args([
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {binary}"))?;
    let manager = Manager(child);
    let pid = manager.0.id();
    println!(
        "pikube controller-manager benchmark: {} on {} CPU(s); etcd + kube-apiserver in-process, {binary} as a child",
        std::env::consts::ARCH,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    wait_ready(port).await?;
    println!(
        "controller-manager idle VmRSS: {:.1} MiB",
        max_rss_mib(pid).await?
    );

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let mut rates = Vec::new();

    // 1. scale 0 → N
    progress(&format!(
        "workload scale: one Deployment 0 → {}",
        settings.scale
    ));
    deployments
        .create(&PostParams::default(), &deployment("scale", 0)?)
        .await?;
    let start = Instant::now();
    deployments
        .patch(
            "scale",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": settings.scale}})),
        )
        .await?;
    wait_pods(&pods, "app=scale", settings.scale).await?;
    let pods_exist = start.elapsed();
    wait_rs_replicas(&client, "app=scale", settings.scale).await?;
    let counted = start.elapsed();
    let rate = settings.scale as f64 / pods_exist.as_secs_f64();
    rates.push(("scale 0 → N", rate));
    println!(
        "scale 0 → {}: all pods exist after {:.2?} ({rate:.0} pods/s); ReplicaSet status counts them after {:.2?}",
        settings.scale, pods_exist, counted
    );

    // 2. many deployments at once
    progress(&format!(
        "workload many: {} Deployments of 10",
        settings.deployments
    ));
    let start = Instant::now();
    futures::stream::iter(0..settings.deployments)
        .map(|i| {
            let deployments = deployments.clone();
            async move {
                let mut d = deployment(&format!("many-{i}"), 10)?;
                d.metadata.labels = Some([("group".to_string(), "many".to_string())].into());
                d.spec
                    .as_mut()
                    .unwrap()
                    .template
                    .metadata
                    .as_mut()
                    .unwrap()
                    .labels
                    .as_mut()
                    .unwrap()
                    .insert("group".into(), "many".into());
                deployments.create(&PostParams::default(), &d).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    let created = start.elapsed();
    wait_pods(&pods, "group=many", settings.deployments * 10).await?;
    let all = start.elapsed();
    let rate = (settings.deployments * 10) as f64 / all.as_secs_f64();
    rates.push(("many deployments", rate));
    println!(
        "{} Deployments of 10: created in {:.2?}; all {} pods exist after {:.2?} ({rate:.0} pods/s)",
        settings.deployments,
        created,
        settings.deployments * 10,
        all
    );

    // 3. rolling update with pods marked ready by the bench
    progress(&format!(
        "workload rollout: rolling update of {} replicas",
        settings.rollout
    ));
    let readier = tokio::spawn(mark_ready(client.clone(), "app=rollout"));
    deployments
        .create(
            &PostParams::default(),
            &deployment("rollout", settings.rollout)?,
        )
        .await?;
    wait_available(&deployments, "rollout", settings.rollout, 1).await?;
    let start = Instant::now();
    let bump =
        json!({"spec": {"template": {"metadata": {"annotations": {"bench/revision": "2"}}}}});
    deployments
        .patch("rollout", &PatchParams::default(), &Patch::Merge(bump))
        .await?;
    wait_available(&deployments, "rollout", settings.rollout, 2).await?;
    let rolled = start.elapsed();
    readier.abort();
    let rate = settings.rollout as f64 / rolled.as_secs_f64();
    println!(
        "rolling update of {} replicas (25% surge / 25% unavailable, pods made ready by the bench): complete after {:.2?} ({rate:.0} pods replaced/s)",
        settings.rollout, rolled
    );

    // 4. memory at the total pod count
    let existing = pods.list(&ListParams::default()).await?.items.len();
    if existing < settings.total_pods {
        let extra = settings.total_pods - existing;
        progress(&format!(
            "topping up to {} pods ({extra} more)",
            settings.total_pods
        ));
        deployments
            .create(&PostParams::default(), &deployment("topup", extra)?)
            .await?;
        wait_pods(&pods, "app=topup", extra).await?;
    }
    let total = pods.list(&ListParams::default()).await?.items.len();
    let rss = max_rss_mib(pid).await?;
    println!("controller-manager VmRSS with {total} pods: {rss:.1} MiB");

    println!("\n== summary ==");
    let min_rate = rates.iter().map(|(_, r)| *r).fold(f64::INFINITY, f64::min);
    for (name, r) in &rates {
        println!("pods created per second, {name:<18} {r:>8.0}   target ≥ {TARGET_PODS_PER_SECOND:.0}  {}", verdict(*r >= TARGET_PODS_PER_SECOND));
    }
    println!(
        "controller-manager VmRSS, {total} pods   {rss:>8.1} MiB  target ≤ {TARGET_RSS_MIB:.0}  {}",
        verdict(rss <= TARGET_RSS_MIB)
    );
    if min_rate.is_nan() {
        bail!("no workload ran");
    }
    drop(manager);
    Ok(())
}

/// The largest VmRSS sampled over two seconds (status writes trail the pods).
async fn max_rss_mib(pid: u32) -> Result<f64> {
    let mut max: f64 = 0.0;
    for _ in 0..10 {
        max = max.max(rss_mib(pid)?);
        tokio::time::sleep(Duration::from_millis(200)).await; // sampling interval
    }
    Ok(max)
}

/// Waits until the child's /readyz answers ok (its informers listed once).
async fn wait_ready(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = format!("https://127.0.0.1:{port}/readyz");
    while Instant::now() < deadline {
        let out = tokio::process::Command::new("curl")
            .args(["-sk", "--max-time", "2", &url])
            .output()
            .await?;
        if out.stdout == b"ok" {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await; // polling /readyz
    }
    bail!("kube-controller-manager never reported ready on {url}")
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "miss"
    }
}

fn deployment(name: &str, replicas: usize) -> Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "busybox:1.36",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
            }
        }
    }))?)
}

/// Waits until `want` pods with the label exist (not terminating).
async fn wait_pods(pods: &Api<Pod>, selector: &str, want: usize) -> Result<()> {
    let deadline = Instant::now() + WORKLOAD_TIMEOUT;
    let seen = Arc::new(AtomicUsize::new(0));
    let stream =
        watcher(pods.clone(), watcher::Config::default().labels(selector)).default_backoff();
    let mut store = std::collections::HashSet::new();
    let mut stream = std::pin::pin!(stream);
    while Instant::now() < deadline {
        let next = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
        let Ok(Some(event)) = next else { continue };
        match event? {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                if p.metadata.deletion_timestamp.is_none() {
                    store.insert(p.uid().unwrap_or_default());
                } else {
                    store.remove(&p.uid().unwrap_or_default());
                }
            }
            watcher::Event::Delete(p) => {
                store.remove(&p.uid().unwrap_or_default());
            }
            _ => {}
        }
        seen.store(store.len(), Ordering::Relaxed);
        if store.len() >= want {
            return Ok(());
        }
    }
    bail!(
        "only {} of {want} pods with {selector} appeared",
        seen.load(Ordering::Relaxed)
    )
}

async fn wait_rs_replicas(client: &Client, selector: &str, want: usize) -> Result<()> {
    let rs: Api<ReplicaSet> = Api::namespaced(client.clone(), NAMESPACE);
    let deadline = Instant::now() + WORKLOAD_TIMEOUT;
    while Instant::now() < deadline {
        let list = rs.list(&ListParams::default().labels(selector)).await?;
        let replicas: i32 = list
            .items
            .iter()
            .filter_map(|r| r.status.as_ref().map(|s| s.replicas))
            .sum();
        if replicas as usize >= want {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // polling the status: no event to wait on
    }
    bail!("ReplicaSet status never counted {want} pods")
}

/// Waits until the Deployment has rolled out `generation`: every replica updated and
/// available, none old.
async fn wait_available(
    deployments: &Api<Deployment>,
    name: &str,
    replicas: usize,
    generation: i64,
) -> Result<()> {
    let deadline = Instant::now() + WORKLOAD_TIMEOUT;
    while Instant::now() < deadline {
        let d = deployments.get(name).await?;
        if let Some(s) = &d.status {
            let done = s.observed_generation.unwrap_or(0) >= generation
                && s.updated_replicas.unwrap_or(0) as usize == replicas
                && s.available_replicas.unwrap_or(0) as usize == replicas
                && s.replicas.unwrap_or(0) as usize == replicas;
            if done {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // polling the status: no event to wait on
    }
    bail!("deployment {name} did not roll out generation {generation}")
}

/// Plays the kubelet for pods with this label: each new pod becomes Running and Ready.
async fn mark_ready(client: Client, selector: &'static str) {
    let pods: Api<Pod> = Api::namespaced(client, NAMESPACE);
    let stream = watcher(pods.clone(), watcher::Config::default().labels(selector))
        .default_backoff()
        .applied_objects();
    stream
        .for_each_concurrent(32, |p| {
            let pods = pods.clone();
            async move {
                let Ok(p) = p else { return };
                let ready = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                if ready || p.metadata.deletion_timestamp.is_some() {
                    return;
                }
                let now = jiff::Timestamp::now().to_string();
                let status = json!({"status": {"phase": "Running", "podIP": "10.42.0.10", "startTime": now,
                    "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
                let _ = pods.patch_status(&p.name_any(), &PatchParams::default(), &Patch::Merge(status)).await;
            }
        })
        .await;
}
