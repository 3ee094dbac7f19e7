//! The kubelet benchmark: it prints figures, it is not a timed test.
//!
//! ```sh
//! cargo bench -p kubelet --bench kubelet_perf
//! ```
//!
//! Modelled on upstream's node e2e density tests: a real etcd and kube-apiserver (in this
//! process, from `apiserver::testing`), a private containerd with the test images already
//! imported (`kubelet::testing`), and the `kubelet` binary of this build profile as its
//! own process (release under `cargo bench`) with the CNI bridge, host-local IPAM and
//! portmap plugins. Pods are busybox `sleep` pods bound to the node by `spec.nodeName`, so
//! no scheduler is involved; start-up latency is create → `phase: Running` as seen
//! through a pod watch (kube-runtime's watcher), image present.
//!
//! Runs, one after another on the same node, each cleaned up before the next:
//! - `batch N`: N pods created at once (as fast as the API takes them), for 30 and 100;
//! - `paced N`: N pods created at a steady rate (`BENCH_RATE` pods/s, 5 by default), for
//!   30 and 100, as upstream's clusterloader2 node-throughput test (100 pods at 5/s): start-up latency
//!   while the node keeps up;
//! - `sequential N`: one pod at a time, the next created once the previous runs, for 30:
//!   the latency of a single pod start on an otherwise idle node.
//!
//! - `cri N`: the runtime's floor — the same N sandboxes and busybox containers started at
//!   once straight through CRI by this bench (RunPodSandbox, CreateContainer,
//!   StartContainer; same images, CNI plugins and containerd), no kubelet and no API in
//!   the path, so the batch runs show what the kubelet adds;
//!
//! A batch's latencies are bound by the node's throughput (containerd, runc and the CNI
//! plugins do most of the work per pod: the CPU seconds columns show it), so its p99 is
//! about N / (pods/s); the paced and sequential runs measure the kubelet's start-up
//! latency.
//!
//! Memory: the kubelet's VmRSS idle (node Ready, no pods, after the first status
//! updates) and with 100 pods running, and its VmHWM at the end. CPU seconds of the kubelet
//! and of containerd (with its shims) per run show where the time went.
//!
//! It ends with the targets (p99 ≤ 1 s and p50 ≤ 400 ms; kubelet ≤ 20 MiB idle and ≤ 40 MiB
//! with 100 pods). It exits 0 when a target is missed (it is a report), non-zero only when
//! something failed. Run without `--bench` (as `cargo test --benches` does) it is a smoke
//! run of 3 pods per run. `BENCH_SIZES` (e.g. `30,100`) overrides the batch sizes.

use std::collections::HashMap;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use kubelet::cri::{api, RuntimeService};

use apiserver::testing::{wait_until, TestApi};
use kubelet::testing::TestContainerd;

const BRIDGE: &str = "pkbench0";
const POD_CIDR: &str = "10.199.0.0/23";

/// The kubelet child; killed on drop.
struct Kubelet(Child);

impl Drop for Kubelet {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pod bridge; removed on drop (after containerd removed the pods on it).
struct Bridge;

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", BRIDGE]).output();
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// CPU seconds (user + system) a process used, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    // USER_HZ is 100 on every Linux architecture the kubelet targets.
    ticks / 100.0
}

/// CPU seconds of every process whose command line names `needle` (containerd and its
/// shims, with their runc children gone by the time this is read).
fn cpu_seconds_of(needle: &str) -> f64 {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .map(cpu_seconds)
        .sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `kubelet_runtime_operations_duration_seconds` sum and count by operation, scraped
/// from the kubelet's healthz port.
fn runtime_operations(port: u16) -> HashMap<String, (f64, f64)> {
    use std::io::{Read, Write};
    let mut text = String::new();
    if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: kubelet\r\n\r\n");
        let _ = conn.read_to_string(&mut text);
    }
    let mut ops: HashMap<String, (f64, f64)> = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("kubelet_runtime_operations_duration_seconds_") else {
            continue;
        };
        let (series, value) = rest.rsplit_once(' ').unwrap_or_default();
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let Some(op) = series
            .split_once("operation_type=\"")
            .and_then(|(_, r)| r.split_once('"'))
            .map(|(op, _)| op.to_owned())
        else {
            continue;
        };
        let entry = ops.entry(op).or_default();
        if series.starts_with("sum") {
            entry.0 = value;
        } else if series.starts_with("count") {
            entry.1 = value;
        }
    }
    ops
}

struct Run {
    name: String,
    pods: usize,
    latencies: Vec<Duration>,
    wall: Duration,
    kubelet_cpu: f64,
    containerd_cpu: f64,
}

/// How a run creates its pods.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// All at once.
    Batch,
    /// At this many pods per second.
    Paced(f64),
    /// Each once the previous one runs.
    Sequential,
}

struct Bench {
    client: kube::Client,
    node: String,
    kubelet_pid: u32,
    containerd_dir: String,
}

impl Bench {
    /// Creates `n` pods (all at once, or each after the previous runs) and returns each
    /// one's create → Running latency.
    async fn run(&self, name: &str, n: usize, mode: Mode) -> Result<Run, String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
        let selector = format!("bench={name}");
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
        let watch = tokio::spawn({
            let pods = pods.clone();
            async move {
                let mut synced = Some(synced_tx);
                let mut stream =
                    watcher::watcher(pods, watcher::Config::default().labels(&selector)).boxed();
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(watcher::Event::InitDone) => {
                            if let Some(s) = synced.take() {
                                let _ = s.send(());
                            }
                        }
                        Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))
                            if p.status.as_ref().and_then(|s| s.phase.as_deref())
                                == Some("Running") =>
                        {
                            let _ = tx.send((p.metadata.name.unwrap_or_default(), Instant::now()));
                        }
                        _ => {}
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), synced_rx)
            .await
            .map_err(|_| "the pod watch did not sync".to_owned())?
            .map_err(|_| "the pod watch ended".to_owned())?;
        let cpu_before = (
            cpu_seconds(self.kubelet_pid),
            cpu_seconds_of(&self.containerd_dir),
        );
        let started = Instant::now();
        let mut created = HashMap::new();
        let mut latencies = HashMap::new();
        let deadline = started + Duration::from_secs(600);
        let mut pace = match mode {
            Mode::Paced(rate) => Some(tokio::time::interval(Duration::from_secs_f64(1.0 / rate))),
            _ => None,
        };
        for i in 0..n {
            if let Some(pace) = &mut pace {
                pace.tick().await;
            }
            let pod_name = format!("{name}-{i}");
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": pod_name, "labels": {"bench": name}},
                "spec": {"nodeName": self.node, "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "main", "image": "busybox:1.35",
                        "command": ["sleep", "3600"]}]}
            }))
            .map_err(|e| e.to_string())?;
            created.insert(pod_name.clone(), Instant::now());
            pods.create(&PostParams::default(), &pod)
                .await
                .map_err(|e| format!("creating {pod_name}: {e}"))?;
            if matches!(mode, Mode::Sequential) {
                while !latencies.contains_key(&pod_name) {
                    let (running, at) = recv_until(&mut rx, deadline).await?;
                    if let Some(start) = created.get(&running) {
                        latencies.entry(running).or_insert(at - *start);
                    }
                }
            }
        }
        while latencies.len() < n {
            let (running, at) = recv_until(&mut rx, deadline).await?;
            if let Some(start) = created.get(&running) {
                latencies.entry(running).or_insert(at - *start);
            }
        }
        let wall = started.elapsed();
        watch.abort();
        let kubelet_cpu = cpu_seconds(self.kubelet_pid) - cpu_before.0;
        let containerd_cpu = cpu_seconds_of(&self.containerd_dir) - cpu_before.1;
        let mut latencies: Vec<Duration> = latencies.into_values().collect();
        latencies.sort();
        Ok(Run {
            name: name.to_owned(),
            pods: n,
            latencies,
            wall,
            kubelet_cpu,
            containerd_cpu,
        })
    }

    /// Deletes a run's pods and waits until containerd has no sandbox left.
    async fn clean(&self, name: &str, runtime: &kubelet::cri::RemoteRuntime) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        let _ = pods
            .delete_collection(
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..DeleteParams::default()
                },
                &ListParams::default().labels(&format!("bench={name}")),
            )
            .await;
        wait_until(Duration::from_secs(300), "pods removed", || {
            let pods = pods.clone();
            async move {
                let left = pods.list(&ListParams::default()).await.ok()?;
                let sandboxes = runtime.list_pod_sandbox(None).await.ok()?;
                (left.items.is_empty() && sandboxes.is_empty()).then_some(())
            }
        })
        .await;
    }
}

/// Starts `n` sandboxes with one busybox container each straight through CRI, all at
/// once; each one's latency from the common start to StartContainer returning. The
/// caller removes them (namespace `bench-cri`).
async fn cri_floor(
    cri: &kubelet::cri::RemoteRuntime,
    name: &str,
    n: usize,
    logs: &std::path::Path,
) -> Result<Run, String> {
    let started = Instant::now();
    let one = |i: usize| {
        let pod = format!("{name}-{i}");
        let sandbox = api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: pod.clone(),
                uid: format!("{pod}-uid"),
                namespace: "bench-cri".into(),
                attempt: 0,
            }),
            hostname: pod.clone(),
            log_directory: logs.join(&pod).to_string_lossy().into_owned(),
            ..Default::default()
        };
        let container = api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: "main".into(),
                attempt: 0,
            }),
            image: Some(api::ImageSpec {
                image: "docker.io/library/busybox:1.35".into(),
                ..Default::default()
            }),
            command: vec!["sleep".into(), "3600".into()],
            log_path: "main.log".into(),
            ..Default::default()
        };
        async move {
            let id = cri
                .run_pod_sandbox(sandbox.clone(), "")
                .await
                .map_err(|e| format!("RunPodSandbox {pod}: {e}"))?;
            let c = cri
                .create_container(&id, container, sandbox)
                .await
                .map_err(|e| format!("CreateContainer {pod}: {e}"))?;
            cri.start_container(&c)
                .await
                .map_err(|e| format!("StartContainer {pod}: {e}"))?;
            Ok::<_, String>(started.elapsed())
        }
    };
    let results = futures::future::join_all((0..n).map(one)).await;
    let wall = started.elapsed();
    let mut latencies = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    latencies.sort();
    Ok(Run {
        name: name.to_owned(),
        pods: n,
        latencies,
        wall,
        kubelet_cpu: 0.0,
        containerd_cpu: 0.0,
    })
}

/// Stops and removes every sandbox this bench started through CRI.
async fn remove_sandboxes(cri: &kubelet::cri::RemoteRuntime, ids: &[String]) {
    for id in ids {
        let _ = cri.stop_pod_sandbox(id).await;
        let _ = cri.remove_pod_sandbox(id).await;
    }
}

async fn recv_until(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    deadline: Instant,
) -> Result<(String, Instant), String> {
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, rx.recv()).await {
        Ok(Some(x)) => Ok(x),
        Ok(None) => Err("the pod watch ended".into()),
        Err(_) => Err("pods did not reach Running within 600 s".into()),
    }
}

fn main() -> ExitCode {
    // `cargo bench` passes --bench; without it (`cargo test --benches`) do a smoke run.
    let full = std::env::args().any(|arg| arg == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(bench(full)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubelet_perf: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_idle_rss(pid: u32) -> u64 {
    // The idle figure once the first node status and lease updates are behind it: sample
    // for a few status periods and keep the highest.
    let mut highest = 0;
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    for _ in 0..10 {
        ticker.tick().await;
        highest = highest.max(status_kib(pid, "VmRSS:"));
    }
    highest
}

#[allow(clippy::too_many_lines)]
async fn bench(full: bool) -> Result<(), String> {
    let sizes: Vec<usize> = match std::env::var("BENCH_SIZES") {
        Ok(v) => v
            .split(',')
            .map(|s| s.trim().parse().map_err(|e| format!("BENCH_SIZES: {e}")))
            .collect::<Result<_, _>>()?,
        Err(_) if full => vec![30, 100],
        Err(_) => vec![3],
    };
    let sequential = if full { 30 } else { 3 };
    let rate: f64 = match std::env::var("BENCH_RATE") {
        Ok(v) => v.parse().map_err(|e| format!("BENCH_RATE: {e}"))?,
        Err(_) => 5.0,
    };
    if rate.is_nan() || rate <= 0.0 {
        return Err("BENCH_RATE must be above 0".into());
    }
    let api = TestApi::start().await;
    let client = api.client().await;
    let containerd = TestContainerd::start()
        .await
        .map_err(|e| format!("containerd: {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let node = format!("bench-{}", std::process::id());
    let config = dir.path().join("kubelet.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\npodLogsDir: {}\n",
            dir.path().join("pods").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let _bridge = Bridge;
    let healthz_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let log_path = dir.path().join("kubelet.log");
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let mut kubelet = Kubelet(
        Command::new(env!("CARGO_BIN_EXE_kubelet"))
            .arg(format!("--kubeconfig={}", api.kubeconfig_path().display()))
            .arg(format!("--hostname-override={node}"))
            .arg("--node-ip=127.0.0.1")
            .arg(format!(
                "--container-runtime-endpoint={}",
                containerd.endpoint()
            ))
            .arg(format!("--root-dir={}", dir.path().join("root").display()))
            .arg(format!(
                "--cni-conf-dir={}",
                containerd.cni_conf_dir().display()
            ))
            .arg(format!("--cni-bridge-name={BRIDGE}"))
            .arg(format!("--pod-cidr={POD_CIDR}"))
            .arg("--max-pods=250")
            .arg("--port=0")
            .arg(format!("--healthz-port={healthz_port}"))
            .arg(format!("--config={}", config.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting the kubelet: {e}"))?,
    );
    let pid = kubelet.0.id();
    let nodes: Api<Node> = Api::all(client.clone());
    wait_until(Duration::from_secs(60), "node Ready", || {
        let nodes = nodes.clone();
        let node = node.clone();
        async move {
            let n = nodes.get_opt(&node).await.ok().flatten()?;
            n.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        }
    })
    .await;
    let idle = wait_idle_rss(pid).await;
    let bench = Bench {
        client: client.clone(),
        node: node.clone(),
        kubelet_pid: pid,
        containerd_dir: containerd.dir().display().to_string(),
    };
    let cri = containerd.runtime();
    let mut runs = Vec::new();
    let mut with_100 = None;
    let plan = sizes
        .iter()
        .map(|&n| (format!("batch{n}"), n, Mode::Batch))
        .chain(
            sizes
                .iter()
                .map(|&n| (format!("paced{n}"), n, Mode::Paced(rate))),
        )
        .chain([(format!("seq{sequential}"), sequential, Mode::Sequential)]);
    let mut per_pod_ops = Vec::new();
    for &n in &sizes {
        let cpu_before = cpu_seconds_of(&bench.containerd_dir);
        let floor = cri_floor(&cri, &format!("cri{n}"), n, &dir.path().join("cri-logs")).await;
        let containerd_cpu = cpu_seconds_of(&bench.containerd_dir) - cpu_before;
        // Whatever was started goes, even when a start failed.
        let all: Vec<String> = cri
            .list_pod_sandbox(None)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|s| {
                s.metadata
                    .as_ref()
                    .is_some_and(|m| m.namespace == "bench-cri")
            })
            .map(|s| s.id)
            .collect();
        remove_sandboxes(&cri, &all).await;
        let mut run = floor?;
        run.containerd_cpu = containerd_cpu;
        runs.push(run);
    }
    for (name, n, mode) in plan {
        let before = runtime_operations(healthz_port);
        let run = bench.run(&name, n, mode).await?;
        if matches!(mode, Mode::Sequential) {
            let after = runtime_operations(healthz_port);
            let mut ops: Vec<(String, f64, f64)> = after
                .into_iter()
                .map(|(op, (sum, count))| {
                    let (sum0, count0) = before.get(&op).copied().unwrap_or_default();
                    (op, sum - sum0, count - count0)
                })
                .filter(|(_, _, count)| *count > 0.0)
                .collect();
            ops.sort_by(|a, b| b.1.total_cmp(&a.1));
            per_pod_ops = ops
                .into_iter()
                .map(|(op, sum, count)| {
                    format!(
                        "  {op:<24} {:>6.1} calls/pod {:>8.1} ms each {:>8.1} ms/pod",
                        count / n as f64,
                        sum * 1000.0 / count,
                        sum * 1000.0 / n as f64
                    )
                })
                .collect();
        }
        if n >= 100 && with_100.is_none() {
            with_100 = Some((n, wait_idle_rss(pid).await));
        }
        bench.clean(&name, &cri).await;
        runs.push(run);
    }
    let hwm = status_kib(pid, "VmHWM:");
    if let Ok(Some(status)) = kubelet.0.try_wait() {
        return Err(format!(
            "the kubelet exited ({status}); log: {}",
            log_path.display()
        ));
    }

    println!(
        "\n--- kubelet_perf ({} build, {} cores) ---",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    println!(
        "{:<12} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>11} {:>14}",
        "run", "pods", "p50 ms", "p90 ms", "p99 ms", "max ms", "wall s", "pods/s", "CPU s kl/ctrd"
    );
    for r in &runs {
        println!(
            "{:<12} {:>5} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.2} {:>11.1} {:>8.2} / {:.2}",
            r.name,
            r.pods,
            ms(percentile(&r.latencies, 50.0)),
            ms(percentile(&r.latencies, 90.0)),
            ms(percentile(&r.latencies, 99.0)),
            ms(*r.latencies.last().unwrap_or(&Duration::ZERO)),
            r.wall.as_secs_f64(),
            r.pods as f64 / r.wall.as_secs_f64(),
            r.kubelet_cpu,
            r.containerd_cpu,
        );
    }
    println!("CRI calls of the sequential run (kubelet_runtime_operations_duration_seconds):");
    for line in &per_pod_ops {
        println!("{line}");
    }
    println!("kubelet VmRSS idle: {:.1} MiB", mib(idle));
    if let Some((n, rss)) = with_100 {
        println!("kubelet VmRSS with {n} pods running: {:.1} MiB", mib(rss));
    }
    println!("kubelet VmHWM (peak): {:.1} MiB", mib(hwm));
    println!("paced runs: {rate} pods/s");
    println!("targets: p99 ≤ 1000 ms, p50 ≤ 400 ms; VmRSS ≤ 20 MiB idle, ≤ 40 MiB with 100 pods");
    drop(kubelet);
    Ok(())
}
