//! The scheduler benchmark: it prints figures, it is not a timed test.
//!
//! ```sh
//! cargo build --release -p apiserver -p scheduler
//! cargo bench -p scheduler --bench scheduler_perf
//! # one workload, smaller:
//! BENCH_WORKLOADS=large BENCH_NODES=1000 BENCH_PODS=2000 cargo bench -p scheduler --bench scheduler_perf
//! ```
//!
//! Modelled on upstream's scheduler_perf: every workload gets a fresh real etcd
//! ([`EtcdServer`]), the real `kube-apiserver` binary and the real `kube-scheduler`
//! binary as child processes on free ports (the apiserver with a self-signed CA in a temp
//! `--cert-dir` and a `--token-auth-file`, the scheduler with a kubeconfig for it and
//! `--leader-elect=false`), so figures of different workloads do not mix. There is no
//! kubelet: nodes are API objects with capacity, pods are never run. Per workload it:
//!
//! 1. creates N Nodes (4 CPUs, 32Gi, 110 pods; `kubernetes.io/hostname`, and
//!    `topology.kubernetes.io/zone` zone-0..zone-9 round robin; Ready), and waits until
//!    the scheduler's cache holds all of them (its `scheduler_cache_size{type="nodes"}`);
//! 2. starts a pod watch (kube-runtime's watcher) and waits until it has synced;
//! 3. creates M pods (100m CPU, 100Mi each), and measures, as seen through that watch,
//!    pods/s from just before the first create to the last pod seen bound, each pod's
//!    create → bound latency, the create phase's own rate (which bounds the figure: the
//!    scheduler cannot bind pods faster than they are created), and the CPU time each
//!    process (scheduler, apiserver, etcd, this bench) used during that phase, which is
//!    where the time goes;
//! 4. samples resident memory (VmRSS, VmHWM) of each process, and scrapes the
//!    scheduler's `/metrics` (with `curl -sk`: the serving certificate is self-signed)
//!    for `scheduler_schedule_attempts_total` by result.
//!
//! Workloads (`BENCH_WORKLOADS`, comma-separated; all by default):
//! `small` 500 nodes / 1,000 pods; `large` 5,000 nodes / 10,000 pods; `affinity` 5,000
//! nodes / 10,000 pods that also carry a required node affinity (zone In zone-0..zone-7),
//! a zone spread (maxSkew 1, DoNotSchedule) and a hostname spread (maxSkew 1,
//! ScheduleAnyway) over their `app` label. Run without `--bench` (as `cargo test
//! --benches` does) it is a smoke run: `small` and `affinity` at 20 nodes / 50 pods.
//!
//! Environment: `BENCH_WORKLOADS`; `BENCH_NODES`, `BENCH_PODS` (override every selected
//! workload's sizes); `BENCH_NODE_CLIENTS` (32) and `BENCH_POD_CLIENTS` (64) creates in
//! flight; `BENCH_STALL_SECS` (60) how long without a new binding before the bench gives
//! up on the rest; `BENCH_SCHEDULER_CONFIG` a KubeSchedulerConfiguration file for
//! `--config`; `BENCH_APISERVER_BIN` the kube-apiserver binary (default: next to this
//! package's kube-scheduler, else in the release target dir; `cargo bench -p scheduler`
//! does not rebuild it, so build it first).
//!
//! It ends with a summary against the targets (≥ 1,000 pods/s for `large`; scheduler
//! VmRSS ≤ 60 MiB at 5,000 nodes / 10,000 pods). It exits 0 when a target is missed (it
//! is a report) and non-zero only when something failed: a process did not start,
//! requests returned errors, or pods were left unbound.
//!
//! All processes share the machine (etcd runs with `--unsafe-no-fsync`): on a 2-core box
//! the bench client, etcd, the apiserver and the scheduler compete for CPU, so the figures
//! are end-to-end on one host, and CPU seconds per process show who used the cores.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde_json::json;
use store::testing::EtcdServer;
use tokio::sync::mpsc;

/// The bearer token of the bench's admin user (the scheduler uses it too).
const TOKEN: &str = "pikube-bench-admin-token";
/// How long the apiserver and the scheduler may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the scheduler's cache may take to hold every node once they are created.
const NODES_SYNC_TIMEOUT: Duration = Duration::from_secs(300);
/// The namespace of the bench's pods.
const NAMESPACE: &str = "bench";
/// The image of the bench's pods (never pulled: there is no kubelet).
const POD_IMAGE: &str = "busybox:1.36";
/// Nodes are spread round robin over this many zones.
const ZONES: usize = 10;
/// The `affinity` workload's pods require the first this-many zones.
const AFFINITY_ZONES: usize = 8;
/// The zone label.
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// The hostname label.
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// The targets of the issue, for `BASIC_TARGET_SIZE` nodes and pods.
const TARGET_PODS_PER_SECOND: f64 = 1000.0;
const TARGET_SCHEDULER_RSS_MIB: f64 = 60.0;
const TARGET_SIZE: (usize, usize) = (5000, 10_000);

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench: something failed (see the errors above and in the summary)");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("bench failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every selected workload; `Ok(false)` when one failed.
fn run() -> Result<bool> {
    // `cargo bench` passes --bench; without it (`cargo test --benches`) do a smoke run.
    let full = std::env::args().any(|arg| arg == "--bench");
    let settings = Settings::from_env(full)?;
    let binaries = Binaries::locate()?;
    println!(
        "pikube scheduler benchmark: {} on {} CPU(s), clock tick {} Hz\n\
         kube-apiserver: {}\nkube-scheduler: {}\nsettings: {settings:?}\n",
        std::env::consts::ARCH,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        clock_ticks(),
        binaries.apiserver.display(),
        binaries.scheduler.display(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let mut outcomes = Vec::new();
    for workload in &settings.workloads {
        progress(&format!(
            "workload {}: {} nodes, {} pods{}",
            workload.name,
            workload.nodes,
            workload.pods,
            if workload.constrained {
                " with node affinity and spread constraints"
            } else {
                ""
            }
        ));
        let outcome = match EtcdServer::start().context("starting etcd") {
            // The scheduler and apiserver children are dropped (killed) inside, before etcd.
            Ok(etcd) => runtime.block_on(run_workload(&settings, &binaries, workload, &etcd)),
            Err(err) => Err(err),
        };
        match &outcome {
            Ok(figures) => figures.print(),
            Err(err) => eprintln!("bench: workload {} failed: {err:#}", workload.name),
        }
        outcomes.push((workload.clone(), outcome));
    }
    print_summary(&outcomes);
    Ok(outcomes
        .iter()
        .all(|(_, outcome)| outcome.as_ref().is_ok_and(Figures::succeeded)))
}

/// One workload: how many nodes and pods, and whether the pods carry constraints.
#[derive(Debug, Clone)]
struct Workload {
    name: String,
    nodes: usize,
    pods: usize,
    constrained: bool,
}

/// What to run, from `BENCH_*` environment variables.
#[derive(Debug)]
struct Settings {
    workloads: Vec<Workload>,
    node_clients: usize,
    pod_clients: usize,
    stall: Duration,
    scheduler_config: Option<PathBuf>,
}

impl Settings {
    fn from_env(full: bool) -> Result<Self> {
        let names = std::env::var("BENCH_WORKLOADS").unwrap_or_else(|_| {
            if full {
                "small,large,affinity".to_owned()
            } else {
                "small,affinity".to_owned()
            }
        });
        let nodes = env_usize("BENCH_NODES")?;
        let pods = env_usize("BENCH_PODS")?;
        let mut workloads = Vec::new();
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let (full_nodes, full_pods, constrained) = match name {
                "small" => (500, 1000, false),
                "large" => (5000, 10_000, false),
                "affinity" => (5000, 10_000, true),
                other => {
                    bail!("unknown workload {other:?} in BENCH_WORKLOADS (small, large, affinity)")
                }
            };
            let (default_nodes, default_pods) = if full {
                (full_nodes, full_pods)
            } else {
                (20, 50)
            };
            workloads.push(Workload {
                name: name.to_owned(),
                nodes: nodes.unwrap_or(default_nodes),
                pods: pods.unwrap_or(default_pods),
                constrained,
            });
        }
        if workloads.is_empty() {
            bail!("BENCH_WORKLOADS selects no workload");
        }
        if workloads.iter().any(|w| w.nodes < ZONES || w.pods == 0) {
            bail!("every workload needs at least {ZONES} nodes (one per zone) and one pod");
        }
        let settings = Self {
            workloads,
            node_clients: env_usize("BENCH_NODE_CLIENTS")?.unwrap_or(32),
            pod_clients: env_usize("BENCH_POD_CLIENTS")?.unwrap_or(64),
            stall: Duration::from_secs(env_usize("BENCH_STALL_SECS")?.unwrap_or(60) as u64),
            scheduler_config: std::env::var_os("BENCH_SCHEDULER_CONFIG").map(PathBuf::from),
        };
        if settings.node_clients == 0 || settings.pod_clients == 0 {
            bail!("BENCH_NODE_CLIENTS and BENCH_POD_CLIENTS must be at least 1");
        }
        Ok(settings)
    }
}

fn env_usize(name: &str) -> Result<Option<usize>> {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("{name}={value:?} is not a non-negative integer")),
        Err(_) => Ok(None),
    }
}

fn progress(message: &str) {
    eprintln!("bench: {message}");
}

/// The binaries under test.
struct Binaries {
    apiserver: PathBuf,
    scheduler: PathBuf,
}

impl Binaries {
    /// The scheduler is this package's binary; the apiserver is another package's, so it
    /// is looked for next to it (same profile), then in the release dir of the same
    /// target dir (a smoke run under the test profile still finds a release build).
    fn locate() -> Result<Self> {
        let scheduler = PathBuf::from(env!("CARGO_BIN_EXE_kube-scheduler"));
        let apiserver = match std::env::var_os("BENCH_APISERVER_BIN") {
            Some(path) => PathBuf::from(path),
            None => {
                let sibling = scheduler.with_file_name("kube-apiserver");
                let release = scheduler
                    .parent()
                    .and_then(Path::parent)
                    .map(|target| target.join("release").join("kube-apiserver"));
                std::iter::once(sibling)
                    .chain(release)
                    .find(|path| path.is_file())
                    .context(
                        "no kube-apiserver binary next to kube-scheduler or in the release \
                         target dir: build it with `cargo build --release -p apiserver`, or \
                         set BENCH_APISERVER_BIN",
                    )?
            }
        };
        if !apiserver.is_file() {
            bail!(
                "kube-apiserver binary {} does not exist",
                apiserver.display()
            );
        }
        Ok(Self {
            apiserver,
            scheduler,
        })
    }
}

/// Everything one workload measured.
struct Figures {
    workload: Workload,
    node_create: Sample,
    /// From the last node create to the scheduler's cache holding every node.
    node_sync: Duration,
    scheduler_with_nodes: Memory,
    pod_create: Sample,
    /// Pods seen bound, each counted once.
    bound: usize,
    /// Whether the bench gave up waiting (no binding for `BENCH_STALL_SECS`).
    stalled: bool,
    /// From just before the first create to the last pod seen bound.
    first_create_to_last_bound: Duration,
    /// How many pods were bound when the last create returned.
    bound_when_creates_done: usize,
    /// From the last create's return to the last pod seen bound.
    lag_after_creates: Duration,
    /// Per pod, from just before its create to the watch seeing it bound, sorted.
    latencies: Vec<Duration>,
    /// CPU time of the scheduler, apiserver, etcd and this bench during the pod phase,
    /// and that phase's wall time.
    cpu: [Option<Duration>; 4],
    cpu_wall: Duration,
    scheduler_memory: Memory,
    apiserver_memory: Memory,
    etcd_memory: Option<Memory>,
    /// `scheduler_schedule_attempts_total` by result, summed over profiles.
    attempts: BTreeMap<String, f64>,
    /// Mean `scheduler_scheduling_attempt_duration_seconds`, all results.
    attempt_mean: Option<Duration>,
    placement: Placement,
    watch_errors: usize,
    first_watch_error: Option<String>,
    /// WARN and ERROR lines in each daemon's log.
    scheduler_log_problems: usize,
    apiserver_log_problems: usize,
}

impl Figures {
    fn pods_per_second(&self) -> f64 {
        self.bound as f64
            / self
                .first_create_to_last_bound
                .as_secs_f64()
                .max(f64::EPSILON)
    }

    fn created(&self) -> usize {
        self.pod_create.latencies.len()
    }

    fn succeeded(&self) -> bool {
        self.node_create.errors == 0
            && self.pod_create.errors == 0
            && self.bound == self.created()
            && self.placement.violations == 0
    }

    fn print(&self) {
        let w = &self.workload;
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!(
            "\n== workload {}: {} nodes, {} pods{} ==",
            w.name,
            w.nodes,
            w.pods,
            if w.constrained {
                " (node affinity zone-0..zone-7, zone spread DoNotSchedule, hostname spread ScheduleAnyway)"
            } else {
                ""
            }
        );
        println!(
            "nodes: created {} in {:.2?} ({:.0}/s, {} errors); scheduler cache held all {:.2?} later",
            self.node_create.latencies.len(),
            self.node_create.wall,
            self.node_create.throughput(),
            self.node_create.errors,
            self.node_sync,
        );
        println!(
            "pods: created {} in {:.2?} ({:.0}/s with {} in flight, p50 {} ms, p99 {} ms; {} errors), \
             while the scheduler was binding them",
            self.created(),
            self.pod_create.wall,
            self.pod_create.throughput(),
            self.pod_create.clients,
            ms(percentile(&self.pod_create.latencies, 0.5)),
            ms(percentile(&self.pod_create.latencies, 0.99)),
            self.pod_create.errors,
        );
        println!(
            "bound: {} of {} in {:.2?} from the first create to the last bound: {:.0} pods/s{}",
            self.bound,
            self.created(),
            self.first_create_to_last_bound,
            self.pods_per_second(),
            if self.stalled {
                " (gave up: no binding for BENCH_STALL_SECS)"
            } else {
                ""
            },
        );
        println!(
            "bound when the last create returned: {}; the rest took {:.2?} more",
            self.bound_when_creates_done, self.lag_after_creates,
        );
        println!(
            "create → bound per pod: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
            ms(percentile(&self.latencies, 0.5)),
            ms(percentile(&self.latencies, 0.9)),
            ms(percentile(&self.latencies, 0.99)),
            ms(self.latencies.last().copied()),
        );
        let attempts: Vec<String> = self
            .attempts
            .iter()
            .map(|(result, n)| format!("{result} {n:.0}"))
            .collect();
        println!(
            "scheduler_schedule_attempts_total: {}; mean attempt {} ms",
            if attempts.is_empty() {
                "(not found in /metrics)".to_owned()
            } else {
                attempts.join(", ")
            },
            ms(self.attempt_mean),
        );
        let p = &self.placement;
        let zones: Vec<String> = p.per_zone.iter().map(usize::to_string).collect();
        println!(
            "placement: {} nodes used, {}..{} pods per used node; pods per zone [{}]; \
             zone skew {}{}",
            p.nodes_used,
            p.min_per_node,
            p.max_per_node,
            zones.join(" "),
            p.zone_skew,
            if w.constrained {
                format!(" over zone-0..zone-7; {} outside them", p.violations)
            } else {
                String::new()
            },
        );
        if self.watch_errors > 0 {
            println!(
                "watch errors: {} (the watcher retried); first: {}",
                self.watch_errors,
                self.first_watch_error.as_deref().unwrap_or("-")
            );
        }
        println!(
            "log WARN/ERROR lines: scheduler {}, apiserver {}",
            self.scheduler_log_problems, self.apiserver_log_problems
        );

        println!(
            "\nwhere the time goes: CPU (user + system) during the pod phase of {:.2?} \
             (first create to last bound; {} cores = {:.1} CPU-s available)",
            self.cpu_wall,
            cores(),
            self.cpu_wall.as_secs_f64() * cores() as f64,
        );
        let mut table = Table::new(&["process", "CPU s", "% of one core", "CPU ms/pod"]);
        let pods = self.bound.max(1) as f64;
        let mut total = 0.0;
        for (name, cpu) in ["kube-scheduler", "kube-apiserver", "etcd", "bench client"]
            .iter()
            .zip(self.cpu)
        {
            let Some(cpu) = cpu else {
                table.push(vec![(*name).to_owned(), "-".into(), "-".into(), "-".into()]);
                continue;
            };
            let seconds = cpu.as_secs_f64();
            total += seconds;
            table.push(vec![
                (*name).to_owned(),
                format!("{seconds:.2}"),
                format!(
                    "{:.0}%",
                    100.0 * seconds / self.cpu_wall.as_secs_f64().max(f64::EPSILON)
                ),
                format!("{:.3}", seconds * 1e3 / pods),
            ]);
        }
        table.push(vec![
            "total".into(),
            format!("{total:.2}"),
            format!(
                "{:.0}%",
                100.0 * total / self.cpu_wall.as_secs_f64().max(f64::EPSILON)
            ),
            format!("{:.3}", total * 1e3 / pods),
        ]);
        table.print();

        println!("\nmemory (max VmRSS over ~2 s; VmHWM = peak so far):");
        let mut table = Table::new(&["process", "VmRSS MiB", "VmHWM MiB"]);
        let mut row = |name: String, m: Option<Memory>| {
            table.push(match m {
                Some(m) => vec![
                    name,
                    format!("{:.1}", mib(m.rss_kib)),
                    format!("{:.1}", mib(m.hwm_kib)),
                ],
                None => vec![name, "-".into(), "-".into()],
            });
        };
        row(
            format!("kube-scheduler, {} nodes, no pods", w.nodes),
            Some(self.scheduler_with_nodes),
        );
        row(
            format!("kube-scheduler, {} nodes, {} pods", w.nodes, self.bound),
            Some(self.scheduler_memory),
        );
        row("kube-apiserver".into(), Some(self.apiserver_memory));
        row("etcd".into(), self.etcd_memory);
        table.print();
    }
}

/// Where the pods went.
#[derive(Debug, Default)]
struct Placement {
    nodes_used: usize,
    min_per_node: usize,
    max_per_node: usize,
    per_zone: [usize; ZONES],
    /// Max minus min pods per zone, over the zones the pods may use.
    zone_skew: usize,
    /// Pods of a constrained workload in a zone their affinity excludes.
    violations: usize,
}

impl Placement {
    fn new(workload: &Workload, nodes_of_pods: &[Option<String>]) -> Self {
        let mut per_node: HashMap<&str, usize> = HashMap::new();
        let mut placement = Placement::default();
        for node in nodes_of_pods.iter().flatten() {
            *per_node.entry(node).or_default() += 1;
            if let Some(zone) = zone_of_node(node) {
                placement.per_zone[zone] += 1;
                if workload.constrained && zone >= AFFINITY_ZONES {
                    placement.violations += 1;
                }
            }
        }
        placement.nodes_used = per_node.len();
        placement.min_per_node = per_node.values().copied().min().unwrap_or(0);
        placement.max_per_node = per_node.values().copied().max().unwrap_or(0);
        let allowed = if workload.constrained {
            &placement.per_zone[..AFFINITY_ZONES]
        } else {
            &placement.per_zone[..]
        };
        placement.zone_skew =
            allowed.iter().max().unwrap_or(&0) - allowed.iter().min().unwrap_or(&0);
        placement
    }
}

fn node_name(i: usize) -> String {
    format!("node-{i:05}")
}

/// Nodes are in zones round robin by their index.
fn zone_of_node(name: &str) -> Option<usize> {
    let index: usize = name.strip_prefix("node-")?.parse().ok()?;
    Some(index % ZONES)
}

fn pod_name(i: usize) -> String {
    format!("pod-{i:06}")
}

fn pod_index(name: &str) -> Option<usize> {
    name.strip_prefix("pod-")?.parse().ok()
}

/// A Ready node with capacity, as a kubelet would register it.
fn node(i: usize) -> Result<Node> {
    let name = node_name(i);
    let resources = json!({"cpu": "4", "memory": "32Gi", "pods": "110"});
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {HOSTNAME_LABEL: name, ZONE_LABEL: format!("zone-{}", i % ZONES)},
        },
        "spec": {},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "a scheduler_perf node; nothing runs here",
            }],
        },
    });
    Ok(serde_json::from_value(node)?)
}

/// A pod requesting 100m CPU and 100Mi, with the `affinity` workload's constraints when
/// `constrained`.
fn pod(i: usize, constrained: bool) -> Result<Pod> {
    let mut spec = json!({
        "containers": [{
            "name": "app",
            "image": POD_IMAGE,
            "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}},
        }],
    });
    if constrained {
        let zones: Vec<String> = (0..AFFINITY_ZONES).map(|z| format!("zone-{z}")).collect();
        let selector = json!({"matchLabels": {"app": "bench"}});
        spec["affinity"] = json!({
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{
                        "matchExpressions": [{"key": ZONE_LABEL, "operator": "In", "values": zones}],
                    }],
                },
            },
        });
        spec["topologySpreadConstraints"] = json!([
            {
                "maxSkew": 1,
                "topologyKey": ZONE_LABEL,
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": selector,
            },
            {
                "maxSkew": 1,
                "topologyKey": HOSTNAME_LABEL,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": selector,
            },
        ]);
    }
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name(i), "namespace": NAMESPACE, "labels": {"app": "bench"}},
        "spec": spec,
    });
    Ok(serde_json::from_value(pod)?)
}

async fn run_workload(
    settings: &Settings,
    binaries: &Binaries,
    workload: &Workload,
    etcd: &EtcdServer,
) -> Result<Figures> {
    let apiserver = Apiserver::start(&binaries.apiserver, &etcd.endpoint()).await?;
    let client = apiserver.client().await?;
    ensure_namespace(&client, NAMESPACE).await?;
    let scheduler = Scheduler::start(
        &binaries.scheduler,
        &apiserver.kubeconfig_path(),
        settings.scheduler_config.as_deref(),
    )
    .await?;
    let etcd_pid = find_etcd_pid(&etcd.endpoint());
    if etcd_pid.is_none() {
        progress("etcd's process was not found: no etcd CPU or memory figures");
    }

    progress(&format!(
        "creating {} nodes with {} in flight",
        workload.nodes, settings.node_clients
    ));
    let nodes = Api::<Node>::all(client.clone());
    let node_create = measure(workload.nodes, settings.node_clients, move |i| {
        let nodes = nodes.clone();
        async move {
            nodes.create(&PostParams::default(), &node(i)?).await?;
            Ok(())
        }
    })
    .await;
    if let Some(err) = &node_create.first_error {
        eprintln!(
            "bench: {} of {} node creates failed; first: {err}",
            node_create.errors, workload.nodes
        );
    }
    let created_nodes = node_create.latencies.len();
    progress(&format!(
        "waiting for the scheduler's cache to hold {created_nodes} nodes"
    ));
    let sync_start = Instant::now();
    scheduler.wait_for_nodes(created_nodes).await?;
    let node_sync = sync_start.elapsed();
    let scheduler_with_nodes = sample_memory(scheduler.pid()).await?;

    // The watch is synced (an empty list) before the first create, so it sees every pod.
    let watch_client = apiserver.client().await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watch_task = tokio::spawn(watch_pods(
        Api::<Pod>::namespaced(watch_client, NAMESPACE),
        tx,
    ));
    let _abort = AbortOnDrop(vec![watch_task]);
    match tokio::time::timeout(READY_TIMEOUT, rx.recv()).await {
        Ok(Some(WatchMessage::Synced)) => {}
        Ok(Some(WatchMessage::Error(err))) => bail!("starting the pod watch: {err}"),
        Ok(_) => bail!("the pod watch ended before it synced"),
        Err(_) => bail!("the pod watch did not sync within {READY_TIMEOUT:?}"),
    }

    progress(&format!(
        "creating {} pods with {} in flight and waiting for them to be bound",
        workload.pods, settings.pod_clients
    ));
    let processes = [
        Some(scheduler.pid()),
        Some(apiserver.pid()),
        etcd_pid,
        Some(std::process::id()),
    ];
    let created_at: Arc<Vec<OnceLock<Instant>>> =
        Arc::new((0..workload.pods).map(|_| OnceLock::new()).collect());
    let cpu_before = processes.map(|pid| pid.and_then(|pid| cpu_time(pid).ok()));
    let start = Instant::now();
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE);
    let (times, constrained) = (created_at.clone(), workload.constrained);
    let mut create = tokio::spawn(measure(workload.pods, settings.pod_clients, move |i| {
        let (pods, times) = (pods.clone(), times.clone());
        async move {
            let object = pod(i, constrained)?;
            let _ = times[i].set(Instant::now());
            pods.create(&PostParams::default(), &object).await?;
            Ok(())
        }
    }));

    let mut bound_at: Vec<Option<Instant>> = vec![None; workload.pods];
    let mut bound_to: Vec<Option<String>> = vec![None; workload.pods];
    let mut bound = 0;
    let mut last_bound = start;
    let mut pod_create: Option<Sample> = None;
    let mut creates_done = start;
    let mut bound_when_creates_done = 0;
    let mut expected = workload.pods;
    let mut stalled = false;
    let (mut watch_errors, mut first_watch_error) = (0, None);
    while pod_create.is_none() || bound < expected {
        tokio::select! {
            joined = &mut create, if pod_create.is_none() => {
                let sample = joined.context("the pod create task")?;
                creates_done = Instant::now();
                bound_when_creates_done = bound;
                expected = sample.latencies.len();
                if let Some(err) = &sample.first_error {
                    eprintln!(
                        "bench: {} of {} pod creates failed; first: {err}",
                        sample.errors, workload.pods
                    );
                }
                pod_create = Some(sample);
            }
            message = tokio::time::timeout(settings.stall, rx.recv()) => match message {
                Ok(Some(WatchMessage::Bound { index, node, at })) => {
                    if index < workload.pods && bound_at[index].is_none() {
                        bound_at[index] = Some(at);
                        bound_to[index] = Some(node);
                        bound += 1;
                        last_bound = last_bound.max(at);
                    }
                }
                Ok(Some(WatchMessage::Error(err))) => {
                    watch_errors += 1;
                    first_watch_error.get_or_insert(err);
                }
                Ok(Some(WatchMessage::Synced)) => {}
                Ok(None) => bail!("the pod watch ended"),
                Err(_) => {
                    progress(&format!(
                        "no pod was bound for {:?}; {bound} of {expected} bound, giving up",
                        settings.stall
                    ));
                    stalled = true;
                    break;
                }
            },
        }
    }
    let cpu_wall = start.elapsed();
    let cpu_after = processes.map(|pid| pid.and_then(|pid| cpu_time(pid).ok()));
    let pod_create = match pod_create {
        Some(sample) => sample,
        None => {
            let sample = create.await.context("the pod create task")?;
            creates_done = Instant::now();
            bound_when_creates_done = bound;
            sample
        }
    };
    let mut cpu = [None; 4];
    for (i, cpu) in cpu.iter_mut().enumerate() {
        if let (Some(before), Some(after)) = (cpu_before[i], cpu_after[i]) {
            *cpu = Some(after.saturating_sub(before));
        }
    }
    let mut latencies: Vec<Duration> = bound_at
        .iter()
        .zip(created_at.iter())
        .filter_map(|(bound, created)| {
            Some(bound.as_ref()?.saturating_duration_since(*created.get()?))
        })
        .collect();
    latencies.sort();
    progress(&format!(
        "{bound} pods bound; scraping metrics and sampling memory"
    ));

    let metrics = scheduler.metrics().await.unwrap_or_else(|err| {
        eprintln!("bench: scraping the scheduler's /metrics: {err:#}");
        Vec::new()
    });
    let mut attempts = BTreeMap::new();
    let (mut attempt_sum, mut attempt_count) = (0.0, 0.0);
    for sample in &metrics {
        match sample.name.as_str() {
            "scheduler_schedule_attempts_total" => {
                let result = sample.labels.get("result").cloned().unwrap_or_default();
                *attempts.entry(result).or_insert(0.0) += sample.value;
            }
            "scheduler_scheduling_attempt_duration_seconds_sum" => attempt_sum += sample.value,
            "scheduler_scheduling_attempt_duration_seconds_count" => attempt_count += sample.value,
            _ => {}
        }
    }
    let attempt_mean =
        (attempt_count > 0.0).then(|| Duration::from_secs_f64(attempt_sum / attempt_count));
    let scheduler_memory = sample_memory(scheduler.pid()).await?;
    let apiserver_memory = sample_memory(apiserver.pid()).await?;
    let etcd_memory = match etcd_pid {
        Some(pid) => sample_memory(pid).await.ok(),
        None => None,
    };
    Ok(Figures {
        workload: workload.clone(),
        node_create,
        node_sync,
        scheduler_with_nodes,
        first_create_to_last_bound: last_bound.saturating_duration_since(start),
        bound_when_creates_done,
        lag_after_creates: last_bound.saturating_duration_since(creates_done),
        pod_create,
        bound,
        stalled,
        latencies,
        cpu,
        cpu_wall,
        scheduler_memory,
        apiserver_memory,
        etcd_memory,
        attempts,
        attempt_mean,
        placement: Placement::new(workload, &bound_to),
        watch_errors,
        first_watch_error,
        scheduler_log_problems: count_problems(&scheduler.log()),
        apiserver_log_problems: count_problems(&apiserver.log()),
    })
}

/// What the pod watch tells the workload.
enum WatchMessage {
    /// The initial (empty) list is done: from here on every pod is seen.
    Synced,
    /// A pod was seen with spec.nodeName set (possibly again).
    Bound {
        index: usize,
        node: String,
        at: Instant,
    },
    /// The watch failed; kube-runtime's watcher retries with backoff (and relists).
    Error(String),
}

/// Watches the bench's pods with kube-runtime's watcher and reports each bound pod.
async fn watch_pods(api: Api<Pod>, tx: mpsc::UnboundedSender<WatchMessage>) {
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut synced = false;
    while let Some(event) = stream.next().await {
        let at = Instant::now();
        let message = match event {
            Ok(watcher::Event::InitDone) if !synced => {
                synced = true;
                WatchMessage::Synced
            }
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                let index = pod.metadata.name.as_deref().and_then(pod_index);
                let node = pod
                    .spec
                    .and_then(|spec| spec.node_name)
                    .filter(|node| !node.is_empty());
                match (index, node) {
                    (Some(index), Some(node)) => WatchMessage::Bound { index, node, at },
                    _ => continue,
                }
            }
            Ok(_) => continue,
            Err(err) => WatchMessage::Error(err.to_string()),
        };
        if tx.send(message).is_err() {
            return;
        }
    }
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

async fn ensure_namespace(client: &Client, name: &str) -> Result<()> {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(err) => Err(err).with_context(|| format!("creating namespace {name}")),
    }
}

/// The kube-apiserver child process, killed on drop with its temp dir removed.
struct Apiserver {
    child: Child,
    dir: tempfile::TempDir,
}

impl Apiserver {
    /// Starts kube-apiserver on a free port and waits until /readyz says ok.
    async fn start(binary: &Path, etcd: &str) -> Result<Self> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            progress("starting kube-apiserver");
            let mut apiserver = Self::spawn(binary, etcd)?;
            match apiserver.wait_ready().await {
                Ok(()) => return Ok(apiserver),
                // Another process took the port between our probe and its bind.
                Err(_) if attempt < 3 && apiserver.log_tail().contains("in use") => {}
                Err(err) => return Err(err),
            }
        }
    }

    fn spawn(binary: &Path, etcd: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("pikube-sched-bench-")
            .tempdir()
            .context("creating the apiserver temp dir")?;
        let port = free_port()?;
        let tokens = dir.path().join("tokens.csv");
        std::fs::write(
            &tokens,
            format!("{TOKEN},admin,admin-uid,\"system:masters\"\n"),
        )
        .context("writing the token file")?;
        let ca = dir.path().join("certs").join("ca.crt");
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: bench\n  cluster:\n    \
             server: https://127.0.0.1:{port}\n    certificate-authority: {}\nusers:\n\
             - name: admin\n  user:\n    token: {TOKEN}\ncontexts:\n- name: bench\n  \
             context:\n    cluster: bench\n    user: admin\ncurrent-context: bench\n",
            ca.display()
        );
        std::fs::write(dir.path().join("kubeconfig"), kubeconfig)
            .context("writing the kubeconfig")?;
        let log = std::fs::File::create(dir.path().join("apiserver.log"))
            .context("creating the apiserver log")?;
        let log_err = log.try_clone().context("opening the apiserver log")?;
        let child = Command::new(binary)
            .arg(format!("--etcd-servers={etcd}"))
            .arg("--etcd-prefix=/registry")
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={port}"))
            .arg(format!("--cert-dir={}", dir.path().join("certs").display()))
            .arg(format!("--token-auth-file={}", tokens.display()))
            .arg("--anonymous-auth=false")
            .arg("--service-cluster-ip-range=10.96.0.0/24")
            .arg("--max-requests-inflight=400")
            .arg("--max-mutating-requests-inflight=200")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self { child, dir })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let ca = self.dir.path().join("certs").join("ca.crt");
        let mut client = None;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .context("checking on kube-apiserver")?
            {
                bail!(
                    "kube-apiserver exited ({status}); its log ends with:\n{}",
                    self.log_tail()
                );
            }
            // The CA appears before the port serves; wait until it is completely written.
            let ca_written = std::fs::read_to_string(&ca)
                .is_ok_and(|pem| pem.trim_end().ends_with("-----END CERTIFICATE-----"));
            if client.is_none() && ca_written {
                client = Some(self.client().await?);
            }
            if let Some(client) = &client {
                let request = http::Request::get("/readyz").body(Vec::new())?;
                let ready =
                    tokio::time::timeout(Duration::from_secs(2), client.request_text(request))
                        .await;
                if matches!(ready, Ok(Ok(body)) if body.trim() == "ok") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "kube-apiserver was not ready within {READY_TIMEOUT:?}; its log ends with:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A new kube client (with its own connection pool) from the bench's kubeconfig.
    async fn client(&self) -> Result<Client> {
        let kubeconfig = Kubeconfig::read_from(self.kubeconfig_path())?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        tail(&self.log())
    }
}

impl Drop for Apiserver {
    fn drop(&mut self) {
        // Nothing to report to from drop; an exited child makes kill fail harmlessly.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The kube-scheduler child process, killed on drop with its temp dir (its log) removed.
struct Scheduler {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Scheduler {
    /// Starts kube-scheduler on a free port and waits until its /readyz says ok (its
    /// informers have synced).
    async fn start(binary: &Path, kubeconfig: &Path, config: Option<&Path>) -> Result<Self> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            progress("starting kube-scheduler");
            let mut scheduler = Self::spawn(binary, kubeconfig, config)?;
            match scheduler.wait_ready().await {
                Ok(()) => return Ok(scheduler),
                // Another process took the port between our probe and its bind.
                Err(_) if attempt < 3 && scheduler.log_tail().contains("in use") => {}
                Err(err) => return Err(err),
            }
        }
    }

    fn spawn(binary: &Path, kubeconfig: &Path, config: Option<&Path>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("pikube-sched-bench-scheduler-")
            .tempdir()
            .context("creating the scheduler temp dir")?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.path().join("scheduler.log"))
            .context("creating the scheduler log")?;
        let log_err = log.try_clone().context("opening the scheduler log")?;
        let mut command = Command::new(binary);
        command
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg("--leader-elect=false")
            .arg(format!("--secure-port={port}"))
            .arg("--bind-address=127.0.0.1");
        if let Some(config) = config {
            command.arg(format!("--config={}", config.display()));
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self { child, dir, port })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// GETs a path of the scheduler's HTTPS server with curl (its certificate is
    /// self-signed, hence -k); None when the request failed.
    async fn get(&self, path: &str) -> Result<Option<String>> {
        let output = tokio::process::Command::new("curl")
            .args(["-sk", "--max-time", "10"])
            .arg(format!("https://127.0.0.1:{}{path}", self.port))
            .stdin(Stdio::null())
            .output()
            .await
            .context("running curl (is it installed?)")?;
        Ok(output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned()))
    }

    fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self
            .child
            .try_wait()
            .context("checking on kube-scheduler")?
        {
            bail!(
                "kube-scheduler exited ({status}); its log ends with:\n{}",
                self.log_tail()
            );
        }
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_running()?;
            if self
                .get("/readyz")
                .await?
                .is_some_and(|body| body.trim() == "ok")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "kube-scheduler was not ready within {READY_TIMEOUT:?}; its log ends with:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Scrapes /metrics.
    async fn metrics(&self) -> Result<Vec<MetricSample>> {
        let text = self.get("/metrics").await?.context("GET /metrics failed")?;
        Ok(parse_metrics(&text))
    }

    /// Waits until `scheduler_cache_size{type="nodes"}` reaches `nodes`.
    async fn wait_for_nodes(&self, nodes: usize) -> Result<()> {
        let deadline = Instant::now() + NODES_SYNC_TIMEOUT;
        let mut cached = None;
        loop {
            if let Some(text) = self.get("/metrics").await? {
                cached = parse_metrics(&text)
                    .into_iter()
                    .find(|s| {
                        s.name == "scheduler_cache_size"
                            && s.labels.get("type").map(String::as_str) == Some("nodes")
                    })
                    .map(|s| s.value as usize);
                if cached.is_none() {
                    progress("the scheduler has no scheduler_cache_size{type=\"nodes\"}; not waiting for its cache");
                    return Ok(());
                }
                if cached >= Some(nodes) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the scheduler's cache held {cached:?} of {nodes} nodes after {NODES_SYNC_TIMEOUT:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("scheduler.log")).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        tail(&self.log())
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // Nothing to report to from drop; an exited child makes kill fail harmlessly.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Lines of a daemon's log at WARN or ERROR level.
fn count_problems(log: &str) -> usize {
    log.lines()
        .filter(|line| line.contains("WARN") || line.contains("ERROR"))
        .count()
}

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct MetricSample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of a Prometheus text exposition (label values without escaped quotes or
/// commas, which is all the scheduler's metrics have).
fn parse_metrics(text: &str) -> Vec<MetricSample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.trim().rsplit_once(' ')?;
            let value = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    Some((
                        key.trim().to_owned(),
                        value.trim().trim_matches('"').to_owned(),
                    ))
                })
                .collect();
            Some(MetricSample {
                name: name.to_owned(),
                labels,
                value,
            })
        })
        .collect()
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The etcd serving `endpoint`, found by its `--listen-client-urls` flag.
fn find_etcd_pid(endpoint: &str) -> Option<u32> {
    let flag = format!("--listen-client-urls={endpoint}");
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                cmdline
                    .split(|&byte| byte == 0)
                    .any(|arg| arg == flag.as_bytes())
            })
        })
}

/// User plus system CPU time of a process, from /proc/<pid>/stat.
fn cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields after the parenthesised command name start with field 3 (state); utime
    // and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
        bail!("cannot parse {path}");
    };
    Ok(Duration::from_secs_f64(
        (user + system) as f64 / clock_ticks() as f64,
    ))
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 if that fails, which is
/// what Linux uses in practice). Shelling out keeps the workspace free of unsafe code.
fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Resident memory, sampled a few times over about two seconds.
#[derive(Debug, Clone, Copy)]
struct Memory {
    /// The largest VmRSS sample.
    rss_kib: u64,
    /// The peak resident memory so far (VmHWM).
    hwm_kib: u64,
}

async fn sample_memory(pid: u32) -> Result<Memory> {
    let mut rss_kib = 0;
    for i in 0..5 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        rss_kib = rss_kib.max(proc_status_kib(pid, "VmRSS")?);
    }
    Ok(Memory {
        rss_kib,
        hwm_kib: proc_status_kib(pid, "VmHWM")?,
    })
}

/// A `kB` field of /proc/<pid>/status.
fn proc_status_kib(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in {path}"))
}

/// What one create phase measured.
#[derive(Debug, Default)]
struct Sample {
    clients: usize,
    wall: Duration,
    /// Latencies of the successful operations, sorted.
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
}

impl Sample {
    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64().max(f64::EPSILON)
    }
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".to_owned(), |d| format!("{:.1}", d.as_secs_f64() * 1e3))
}

/// Runs `op(0..ops)` from `clients` concurrent tasks, each taking the next index when its
/// previous operation is done, and times every operation.
async fn measure<F, Fut>(ops: usize, clients: usize, op: F) -> Sample
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (op, next) = (op.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                let mut first_error = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= ops {
                        break;
                    }
                    let begin = Instant::now();
                    match op(i).await {
                        Ok(()) => latencies.push(begin.elapsed()),
                        Err(err) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| format!("{err:#}"));
                        }
                    }
                }
                (latencies, errors, first_error)
            })
        })
        .collect();
    let mut sample = Sample {
        clients,
        ..Sample::default()
    };
    for task in futures::future::join_all(tasks).await {
        match task {
            Ok((latencies, errors, first_error)) => {
                sample.latencies.extend(latencies);
                sample.errors += errors;
                if sample.first_error.is_none() {
                    sample.first_error = first_error;
                }
            }
            Err(err) => {
                sample.errors += 1;
                sample.first_error.get_or_insert_with(|| err.to_string());
            }
        }
    }
    sample.wall = start.elapsed();
    sample.latencies.sort();
    sample
}

/// The summary of every workload against the targets.
fn print_summary(outcomes: &[(Workload, Result<Figures>)]) {
    println!("\n== summary ==");
    let mut table = Table::new(&[
        "workload",
        "nodes/pods",
        "pods/s",
        "create/s",
        "p50 ms",
        "p99 ms",
        "unbound",
        "sched RSS MiB",
        "sched HWM MiB",
        "CPU s sched/api/etcd/bench",
    ]);
    for (workload, outcome) in outcomes {
        let sizes = format!("{}/{}", workload.nodes, workload.pods);
        let Ok(f) = outcome else {
            table.push(vec![workload.name.clone(), sizes, "failed".into()]);
            continue;
        };
        let cpu: Vec<String> = f
            .cpu
            .iter()
            .map(|c| c.map_or("-".to_owned(), |c| format!("{:.2}", c.as_secs_f64())))
            .collect();
        table.push(vec![
            workload.name.clone(),
            sizes,
            format!("{:.0}", f.pods_per_second()),
            format!("{:.0}", f.pod_create.throughput()),
            ms(percentile(&f.latencies, 0.5)),
            ms(percentile(&f.latencies, 0.99)),
            (workload.pods - f.bound).to_string(),
            format!("{:.1}", f.scheduler_memory.rss_kib as f64 / 1024.0),
            format!("{:.1}", f.scheduler_memory.hwm_kib as f64 / 1024.0),
            cpu.join(" / "),
        ]);
    }
    table.print();
    println!(
        "(pods/s: pods bound / time from the first create to the last bound, seen through a \
         watch; create/s: the create phase alone, while the scheduler was binding; a run \
         cannot bind faster than it creates)"
    );

    println!();
    let mut targets = Table::new(&["figure", "measured", "target", "ok/miss"]);
    let at_target_size = |w: &Workload| (w.nodes, w.pods) == TARGET_SIZE;
    let verdict = |ok: bool| if ok { "ok" } else { "miss" };
    for (workload, outcome) in outcomes {
        let Ok(f) = outcome else { continue };
        let sizes = format!("{}/{}", workload.nodes, workload.pods);
        if workload.name == "large" {
            let rate = f.pods_per_second();
            targets.push(vec![
                format!("throughput, large {sizes}"),
                format!("{rate:.0} pods/s"),
                format!("≥ {TARGET_PODS_PER_SECOND:.0} pods/s at 5000/10000"),
                if at_target_size(workload) {
                    verdict(rate >= TARGET_PODS_PER_SECOND && f.succeeded())
                } else {
                    "- (other size)"
                }
                .into(),
            ]);
        }
        let rss = f.scheduler_memory.rss_kib as f64 / 1024.0;
        targets.push(vec![
            format!("scheduler VmRSS, {} {sizes}", workload.name),
            format!("{rss:.1} MiB"),
            format!("≤ {TARGET_SCHEDULER_RSS_MIB:.0} MiB at 5000/10000"),
            if at_target_size(workload) {
                verdict(rss <= TARGET_SCHEDULER_RSS_MIB)
            } else {
                "-"
            }
            .into(),
        ]);
        let failed = f.node_create.errors + f.pod_create.errors;
        targets.push(vec![
            format!(
                "failed creates, unbound pods, misplaced pods, {}",
                workload.name
            ),
            format!(
                "{failed}, {}, {}",
                f.created() - f.bound,
                f.placement.violations
            ),
            "0, 0, 0".into(),
            verdict(f.succeeded()).into(),
        ]);
    }
    for (workload, outcome) in outcomes {
        if let Err(err) = outcome {
            targets.push(vec![
                format!("workload {} ran", workload.name),
                format!("failed: {err:#}")
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned(),
                "ran".into(),
                "miss".into(),
            ]);
        }
    }
    targets.print();
}

/// A plain text table with columns sized to their widest cell.
struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    fn print(&self) {
        let columns = self.rows[0].len();
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .map(|row| row.get(c).map_or(0, |cell| cell.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for (i, row) in self.rows.iter().enumerate() {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (cell, &width))| {
                    let pad = width.saturating_sub(cell.chars().count());
                    // The first column is text; the others are figures, right-aligned.
                    if c == 0 {
                        format!("{cell}{}", " ".repeat(pad))
                    } else {
                        format!("{}{cell}", " ".repeat(pad))
                    }
                })
                .collect();
            println!("{}", line.join("  ").trim_end());
            if i == 0 {
                let total = widths.iter().sum::<usize>() + 2 * (columns - 1);
                println!("{}", "-".repeat(total));
            }
        }
    }
}
