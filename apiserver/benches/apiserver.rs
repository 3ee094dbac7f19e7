//! The apiserver benchmark: it prints figures, it is not a timed test.
//!
//! ```sh
//! cargo bench -p apiserver --bench apiserver
//! # a quick run:
//! BENCH_OPS=200 BENCH_PODS=500 BENCH_WATCHERS=50 cargo bench -p apiserver --bench apiserver
//! ```
//!
//! Everything runs against real processes: a real etcd ([`EtcdServer`]) and the real
//! `kube-apiserver` binary as a child process on a free port, with a self-signed CA in a
//! temp `--cert-dir` and a `--token-auth-file`; clients are kube-rs clients built from a
//! kubeconfig, and the etcd baseline uses etcd-client. It measures:
//!
//! 1. the apiserver's idle resident memory (VmRSS) after it reports ready, then its VmRSS
//!    after creating `BENCH_PODS` minimal pods (first, so that figure holds only them);
//! 2. raw etcd puts and gets of values as large as the apiserver's stored ConfigMap, at 1
//!    and `BENCH_CLIENTS` concurrent clients;
//! 3. ConfigMap create, update (replace with resourceVersion), get and delete through the
//!    apiserver, and list of a namespace of `BENCH_LIST_SIZE` ConfigMaps (full, and with
//!    resourceVersion=0), at the same client counts, with the apiserver/etcd ratios;
//! 4. watch fan-out: `BENCH_WATCHERS` pod watches on one namespace, pods created one at
//!    a time, delivery latency from just before each create to each watcher's receipt.
//!
//! It ends with a summary of measured figures against pikube's targets. It exits 0 when
//! a target is missed (it is a report) and non-zero only when something failed: a
//! process did not start, or requests returned errors.
//!
//! Environment (defaults): `BENCH_OPS` (5000) operations per phase and client count,
//! `BENCH_CLIENTS` (64), `BENCH_LIST_SIZE` (1000), `BENCH_LIST_OPS` (128),
//! `BENCH_WATCHERS` (1000), `BENCH_WATCH_CLIENTS` (10), `BENCH_WATCH_PODS` (50),
//! `BENCH_PODS` (10000), `BENCH_AUTHORIZATION_MODE` (AlwaysAllow; with any other mode,
//! e.g. `Node,RBAC`, the bench user is an ordinary user bound to cluster-admin, so every
//! request goes through the authorizers instead of the `system:masters` shortcut),
//! `BENCH_CLIENT_AUTH` (`token`: a bearer token from `--token-auth-file`; `cert`: an x509
//! client certificate signed by a CA in `--client-ca-file`, as `pikubeadm certs` writes
//! them). Issue 7's overhead figure compares `BENCH_CLIENT_AUTH=cert
//! BENCH_AUTHORIZATION_MODE=Node,RBAC` with the defaults; `BENCH_COMPARE_AUTH=1` measures
//! just that: the ConfigMap CRUD at `BENCH_CLIENTS` clients against an apiserver with
//! AlwaysAllow and bearer tokens, then one with Node,RBAC and client certificates, on one
//! etcd, alternating `BENCH_ROUNDS` (5) times so that both see the same machine, and
//! prints the median throughputs and their ratio. Run without `--bench` (as
//! `cargo test --benches` does) the defaults shrink to a smoke run.
//!
//! All processes share the machine: on a 2-core box the bench client, etcd and the
//! apiserver compete for CPU, so the figures are end-to-end on one host.

use std::collections::BTreeMap;
use std::future::Future;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use store::testing::EtcdServer;
use tokio::sync::mpsc;

/// The bearer token of the bench's user.
const TOKEN: &str = "pikube-bench-admin-token";
/// The bearer token of a `system:masters` user that binds the bench user under RBAC.
const PRIVILEGED_TOKEN: &str = "pikube-bench-privileged-token";
/// How long the apiserver may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long all watchers may take to connect.
const WATCH_CONNECT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long every watcher may take to receive one pod before it counts as missed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// The ConfigMap payload size; the stored object is this plus metadata.
const PAYLOAD_BYTES: usize = 1024;
/// The image of the benchmark's pods (never pulled: there is no kubelet).
const POD_IMAGE: &str = "registry.k8s.io/pause:3.10";

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench: some operations failed (see the errors column and above)");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("bench failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the whole benchmark; `Ok(false)` when some requests failed.
fn run() -> Result<bool> {
    // `cargo bench` passes --bench; without it (`cargo test --benches`) do a smoke run.
    let full = std::env::args().any(|arg| arg == "--bench");
    let settings = Settings::from_env(full)?;
    raise_open_files_limit(std::process::id());
    let etcd = EtcdServer::start().context("starting etcd")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    // The apiserver child and its temp dir are dropped (killed, removed) before etcd.
    if settings.compare_auth {
        return runtime.block_on(compare_auth(&settings, &etcd));
    }
    runtime.block_on(bench(&settings, &etcd))
}

/// What to run, from `BENCH_*` environment variables.
#[derive(Debug)]
struct Settings {
    ops: usize,
    clients: usize,
    list_size: usize,
    list_ops: usize,
    watchers: usize,
    watch_clients: usize,
    watch_pods: usize,
    pods: usize,
    authorization_mode: String,
    client_auth: ClientAuth,
    /// `BENCH_COMPARE_AUTH`: only the ConfigMap CRUD, alternating the two auth setups.
    compare_auth: bool,
    /// `BENCH_ROUNDS`: how many times each setup runs when comparing.
    rounds: usize,
}

/// How the bench's clients authenticate (`BENCH_CLIENT_AUTH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientAuth {
    /// A bearer token from the apiserver's `--token-auth-file`.
    Token,
    /// An x509 client certificate verified against `--client-ca-file`.
    Cert,
}

impl Settings {
    fn from_env(full: bool) -> Result<Self> {
        let pick = |name: &str, full_default: usize, smoke_default: usize| {
            env_usize(name, if full { full_default } else { smoke_default })
        };
        let settings = Self {
            ops: pick("BENCH_OPS", 5000, 50)?,
            clients: pick("BENCH_CLIENTS", 64, 8)?,
            list_size: pick("BENCH_LIST_SIZE", 1000, 100)?,
            list_ops: pick("BENCH_LIST_OPS", 128, 8)?,
            watchers: pick("BENCH_WATCHERS", 1000, 20)?,
            watch_clients: pick("BENCH_WATCH_CLIENTS", 10, 2)?,
            watch_pods: pick("BENCH_WATCH_PODS", 50, 5)?,
            pods: pick("BENCH_PODS", 10_000, 200)?,
            authorization_mode: std::env::var("BENCH_AUTHORIZATION_MODE")
                .unwrap_or_else(|_| "AlwaysAllow".to_owned()),
            client_auth: match std::env::var("BENCH_CLIENT_AUTH").as_deref() {
                Err(_) | Ok("token") => ClientAuth::Token,
                Ok("cert") => ClientAuth::Cert,
                Ok(other) => bail!("BENCH_CLIENT_AUTH={other:?}: want token or cert"),
            },
            compare_auth: std::env::var("BENCH_COMPARE_AUTH").is_ok_and(|v| v == "1"),
            rounds: pick("BENCH_ROUNDS", 5, 1)?,
        };
        if settings.clients == 0 || settings.watch_clients == 0 {
            bail!("BENCH_CLIENTS and BENCH_WATCH_CLIENTS must be at least 1");
        }
        Ok(settings)
    }

    /// The client counts to measure at: 1 and `clients`.
    fn client_counts(&self) -> Vec<usize> {
        if self.clients == 1 {
            vec![1]
        } else {
            vec![1, self.clients]
        }
    }
}

fn env_usize(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .with_context(|| format!("{name}={value:?} is not a non-negative integer")),
        Err(_) => Ok(default),
    }
}

async fn bench(settings: &Settings, etcd: &EtcdServer) -> Result<bool> {
    println!(
        "pikube apiserver benchmark: {} on {} CPU(s)\nsettings: {settings:?}\n",
        std::env::consts::ARCH,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let apiserver = Apiserver::start(
        &etcd.endpoint(),
        &settings.authorization_mode,
        settings.client_auth,
    )
    .await?;
    let pid = apiserver.pid();
    let processes = Processes {
        apiserver: pid,
        etcd: find_etcd_pid(&etcd.endpoint()),
    };
    let client = apiserver.client().await?;
    let mut report = Report::default();

    progress("sampling idle memory");
    let idle = sample_memory(pid).await?;
    report.idle = Some(idle);
    report.memory.push(("idle after start".to_owned(), idle));

    // 1. Many pods, first, so that the memory figure holds the pods and nothing else.
    ensure_namespace(&client, "bench-pods").await?;
    progress(&format!(
        "creating {} pods with {} clients",
        settings.pods, settings.clients
    ));
    let pods = Api::<Pod>::namespaced(client.clone(), "bench-pods");
    let pod_create = measure(processes, settings.pods, settings.clients, move |i| {
        let pods = pods.clone();
        async move {
            pods.create(&PostParams::default(), &pod(&format!("pod-{i:06}")))
                .await?;
            Ok(())
        }
    })
    .await;
    progress("sampling memory after creating pods");
    let memory = sample_memory(pid).await?;
    report.after_pods = Some(memory);
    report
        .memory
        .push((format!("after creating {} pods", settings.pods), memory));

    // How large the apiserver's stored ConfigMap is, so etcd is fed values of that size.
    let mut etcd_client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .context("connecting to etcd")?;
    ensure_namespace(&client, "bench-probe").await?;
    Api::<ConfigMap>::namespaced(client.clone(), "bench-probe")
        .create(&PostParams::default(), &config_map("probe", 0))
        .await
        .context("creating the probe ConfigMap")?;
    let stored = stored_size(&mut etcd_client, "bench-probe", "probe").await?;
    report.stored_bytes = stored;
    progress(&format!(
        "the apiserver stores a ConfigMap in {stored} bytes"
    ));

    // 2. Raw etcd: 1..clients tasks sharing one etcd-client (one HTTP/2 connection),
    // as the apiserver shares one.
    let value = Arc::new(vec![b'x'; stored]);
    for &clients in &settings.client_counts() {
        let prefix = format!("/bench-raw/c{clients}/");
        progress(&format!("etcd put, {clients} client(s)"));
        let (c, p, v) = (etcd_client.clone(), prefix.clone(), value.clone());
        let put = measure(processes, settings.ops, clients, move |i| {
            let (mut c, key, v) = (c.clone(), format!("{p}{i:08}"), v.to_vec());
            async move {
                c.put(key, v, None).await?;
                Ok(())
            }
        })
        .await;
        report.row("etcd put", clients, put);
        // The write the apiserver itself issues for a create: put only if absent (a txn
        // comparing create_revision to 0), which etcd must check against the key first.
        progress(&format!("etcd create txn, {clients} client(s)"));
        let (c, p, v) = (
            etcd_client.clone(),
            format!("/bench-txn/c{clients}/"),
            value.clone(),
        );
        let txn = measure(processes, settings.ops, clients, move |i| {
            let (mut c, key, v) = (c.clone(), format!("{p}{i:08}"), v.to_vec());
            async move {
                let txn = etcd_client::Txn::new()
                    .when([etcd_client::Compare::create_revision(
                        key.clone(),
                        etcd_client::CompareOp::Equal,
                        0,
                    )])
                    .and_then([etcd_client::TxnOp::put(key, v, None)]);
                if !c.txn(txn).await?.succeeded() {
                    bail!("key already exists");
                }
                Ok(())
            }
        })
        .await;
        report.row("etcd create txn", clients, txn);
        progress(&format!("etcd get, {clients} client(s)"));
        let c = etcd_client.clone();
        let get = measure(processes, settings.ops, clients, move |i| {
            let (mut c, key) = (c.clone(), format!("{prefix}{i:08}"));
            async move {
                let response = c.get(key, None).await?;
                if response.kvs().is_empty() {
                    bail!("key not found");
                }
                Ok(())
            }
        })
        .await;
        report.row("etcd get", clients, get);
    }

    // 3. The apiserver: 1..clients tasks sharing one kube::Client (kube-rs speaks
    // HTTP/1.1, so its pool opens one TLS connection per request in flight).
    for &clients in &settings.client_counts() {
        configmap_crud(settings, processes, &client, clients, &mut report).await?;
    }

    progress("sampling memory");
    let memory = sample_memory(pid).await?;
    report
        .memory
        .push(("after the ConfigMap CRUD".to_owned(), memory));

    // 4. Lists of one namespace of list_size ConfigMaps.
    progress(&format!(
        "filling a namespace with {} ConfigMaps",
        settings.list_size
    ));
    ensure_namespace(&client, "bench-list").await?;
    let api = Api::<ConfigMap>::namespaced(client.clone(), "bench-list");
    let a = api.clone();
    let fill = measure(processes, settings.list_size, settings.clients, move |i| {
        let a = a.clone();
        async move {
            a.create(&PostParams::default(), &config_map(&name(i), 0))
                .await?;
            Ok(())
        }
    })
    .await;
    report.errors += fill.errors;
    if let Some(err) = &fill.first_error {
        eprintln!("bench: filling the list namespace: {err}");
    }
    let expected = settings.list_size - fill.errors;
    for (label, params) in [
        ("apiserver list", ListParams::default()),
        ("apiserver list rv=0", ListParams::default().at("0")),
    ] {
        for &clients in &settings.client_counts() {
            progress(&format!("{label}, {clients} client(s)"));
            let (a, params) = (api.clone(), params.clone());
            let list = measure(processes, settings.list_ops, clients, move |_| {
                let (a, params) = (a.clone(), params.clone());
                async move {
                    let list = a.list(&params).await?;
                    if list.items.len() != expected {
                        bail!("listed {} items, expected {expected}", list.items.len());
                    }
                    Ok(())
                }
            })
            .await;
            report.row(&format!("{label} ({expected})"), clients, list);
        }
    }

    progress("sampling memory");
    let memory = sample_memory(pid).await?;
    report.memory.push(("after the lists".to_owned(), memory));

    // 5. Watch fan-out.
    if settings.watchers > 0 && settings.watch_pods > 0 {
        report.watch = Some(watch_fanout(settings, &apiserver, &client).await?);
    }

    progress("sampling memory at the end");
    let memory = sample_memory(pid).await?;
    report.memory.push(("at the end".to_owned(), memory));

    report.row("apiserver create pod", settings.clients, pod_create);
    report.print(settings);
    Ok(report.errors == 0)
}

fn progress(message: &str) {
    eprintln!("bench: {message}");
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn name(i: usize) -> String {
    format!("cm-{i:06}")
}

/// A ConfigMap with a `PAYLOAD_BYTES` value; `variant` makes different contents.
fn config_map(name: &str, variant: usize) -> ConfigMap {
    let payload: String = "0123456789abcdef"
        .chars()
        .cycle()
        .skip(variant)
        .take(PAYLOAD_BYTES)
        .collect();
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("payload".to_owned(), payload)])),
        ..ConfigMap::default()
    }
}

/// A minimal valid pod.
fn pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".to_owned(),
                image: Some(POD_IMAGE.to_owned()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
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
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(err) => return Err(err).with_context(|| format!("creating namespace {name}")),
    }
    // The ServiceAccount admission plugin admits pods only once the namespace's default
    // ServiceAccount exists; the controller-manager makes it in a cluster, the bench here.
    let account = k8s_openapi::api::core::v1::ServiceAccount {
        metadata: ObjectMeta {
            name: Some("default".to_owned()),
            ..ObjectMeta::default()
        },
        ..Default::default()
    };
    match Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), name)
        .create(&PostParams::default(), &account)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(err) => Err(err).with_context(|| format!("creating {name}'s default ServiceAccount")),
    }
}

/// The size of the value the apiserver stored for a ConfigMap, read from etcd.
async fn stored_size(etcd: &mut etcd_client::Client, namespace: &str, name: &str) -> Result<usize> {
    let key = format!("/registry/configmaps/{namespace}/{name}");
    let response = etcd.get(key.as_str(), None).await.context("reading etcd")?;
    if let Some(kv) = response.kvs().first() {
        return Ok(kv.value().len());
    }
    // Not at upstream's key: find it anywhere under the prefix.
    let suffix = format!("/{namespace}/{name}");
    let options = etcd_client::GetOptions::new().with_prefix();
    let response = etcd
        .get("/registry/", Some(options))
        .await
        .context("reading etcd")?;
    response
        .kvs()
        .iter()
        .find(|kv| kv.key().ends_with(suffix.as_bytes()))
        .map(|kv| kv.value().len())
        .with_context(|| format!("the apiserver's {key} is not in etcd"))
}

/// Issue 7's figure: authenticated-request overhead, the ConfigMap CRUD with client
/// certificates and Node,RBAC against AlwaysAllow with bearer tokens. The two setups take
/// turns (ABBA), so that a busy moment of the machine falls on both alike; medians are
/// compared.
async fn compare_auth(settings: &Settings, etcd: &EtcdServer) -> Result<bool> {
    const SETUPS: [(&str, &str, ClientAuth); 2] = [
        ("AlwaysAllow, token", "AlwaysAllow", ClientAuth::Token),
        ("Node,RBAC, client cert", "Node,RBAC", ClientAuth::Cert),
    ];
    println!(
        "pikube apiserver auth overhead: {} on {} CPU(s), {} ops per operation, {} clients, {} rounds\n",
        std::env::consts::ARCH,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        settings.ops,
        settings.clients,
        settings.rounds,
    );
    // ops/s by (operation, setup), one figure per round.
    let mut figures: BTreeMap<(String, usize), Vec<f64>> = BTreeMap::new();
    let mut errors = 0;
    for round in 1..=settings.rounds {
        // ABBA: each setup goes first as often as second, so whatever the first of a
        // pair pays (or the second inherits from it) falls on both.
        let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
        for setup in order {
            let (label, mode, auth) = &SETUPS[setup];
            progress(&format!("round {round} of {}: {label}", settings.rounds));
            let apiserver = Apiserver::start(&etcd.endpoint(), mode, *auth).await?;
            let processes = Processes {
                apiserver: apiserver.pid(),
                etcd: find_etcd_pid(&etcd.endpoint()),
            };
            let client = apiserver.client().await?;
            let mut report = Report::default();
            configmap_crud(settings, processes, &client, settings.clients, &mut report).await?;
            errors += report.errors;
            for (operation, _, sample) in &report.rows {
                figures
                    .entry((operation.clone(), setup))
                    .or_default()
                    .push(sample.throughput());
            }
        }
    }
    println!(
        "{:<20} {:>24} {:>24} {:>8}",
        "operation (ops/s)", SETUPS[0].0, SETUPS[1].0, "ratio"
    );
    let mut worst: Option<f64> = None;
    for operation in [
        "apiserver create",
        "apiserver update",
        "apiserver get",
        "apiserver delete",
    ] {
        let median_of = |setup: usize| {
            let mut v = figures
                .get(&(operation.to_owned(), setup))
                .cloned()
                .unwrap_or_default();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied()
        };
        let (Some(plain), Some(secured)) = (median_of(0), median_of(1)) else {
            continue;
        };
        let ratio = secured / plain;
        worst = Some(worst.map_or(ratio, |w: f64| w.min(ratio)));
        println!(
            "{:<20} {:>24.0} {:>24.0} {:>8.3}",
            operation.trim_start_matches("apiserver "),
            plain,
            secured,
            ratio
        );
    }
    if let Some(worst) = worst {
        let loss = (1.0 - worst) * 100.0;
        println!(
            "\nlargest throughput change with client certs and Node,RBAC: {} (target: at most a 10% loss: {})",
            if loss > 0.0 {
                format!("{loss:.1}% loss")
            } else {
                format!("no loss (the slowest operation {:.1}% faster)", -loss)
            },
            if worst >= 0.9 { "ok" } else { "miss" }
        );
    }
    if errors > 0 {
        eprintln!("bench: {errors} requests failed");
    }
    Ok(errors == 0)
}

/// ConfigMap create, update (replace with resourceVersion), get and delete through the
/// apiserver, `settings.ops` of each, by `clients` tasks sharing one kube::Client (kube-rs
/// speaks HTTP/1.1, so its pool opens one TLS connection per request in flight).
async fn configmap_crud(
    settings: &Settings,
    processes: Processes,
    client: &Client,
    clients: usize,
    report: &mut Report,
) -> Result<()> {
    let namespace = format!("bench-c{clients}");
    ensure_namespace(client, &namespace).await?;
    let api = Api::<ConfigMap>::namespaced(client.clone(), &namespace);
    let created: Arc<Vec<Mutex<Option<ConfigMap>>>> =
        Arc::new((0..settings.ops).map(|_| Mutex::new(None)).collect());

    progress(&format!("apiserver create, {clients} client(s)"));
    let (a, objects) = (api.clone(), created.clone());
    let create = measure(processes, settings.ops, clients, move |i| {
        let (a, objects) = (a.clone(), objects.clone());
        async move {
            let object = a
                .create(&PostParams::default(), &config_map(&name(i), 0))
                .await?;
            *lock(&objects[i]) = Some(object);
            Ok(())
        }
    })
    .await;
    report.row("apiserver create", clients, create);

    progress(&format!("apiserver update, {clients} client(s)"));
    let (a, objects) = (api.clone(), created.clone());
    let update = measure(processes, settings.ops, clients, move |i| {
        let (a, objects) = (a.clone(), objects.clone());
        async move {
            let Some(mut object) = lock(&objects[i]).take() else {
                bail!("{} was not created", name(i));
            };
            // Carries the resourceVersion from create: an optimistic-concurrency update.
            object.data = config_map("", 1).data;
            a.replace(&name(i), &PostParams::default(), &object).await?;
            Ok(())
        }
    })
    .await;
    report.row("apiserver update", clients, update);

    progress(&format!("apiserver get, {clients} client(s)"));
    let a = api.clone();
    let get = measure(processes, settings.ops, clients, move |i| {
        let a = a.clone();
        async move {
            a.get(&name(i)).await?;
            Ok(())
        }
    })
    .await;
    report.row("apiserver get", clients, get);

    // Deleting them also keeps them out of the memory figures of the pods phase.
    progress(&format!("apiserver delete, {clients} client(s)"));
    let a = api.clone();
    let delete = measure(processes, settings.ops, clients, move |i| {
        let a = a.clone();
        async move {
            a.delete(&name(i), &DeleteParams::default()).await?;
            Ok(())
        }
    })
    .await;
    report.row("apiserver delete", clients, delete);
    Ok(())
}

/// The kube-apiserver child process, killed on drop with its temp dir removed.
struct Apiserver {
    child: Child,
    dir: tempfile::TempDir,
}

impl Apiserver {
    /// Starts kube-apiserver on a free port and waits until /readyz says ok.
    async fn start(etcd: &str, authorization_mode: &str, auth: ClientAuth) -> Result<Self> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            progress("starting kube-apiserver");
            let mut apiserver = Self::spawn(etcd, authorization_mode, auth)?;
            match apiserver.wait_ready().await {
                Ok(()) if authorization_mode == "AlwaysAllow" => return Ok(apiserver),
                Ok(()) => {
                    apiserver.bind_bench_user().await?;
                    return Ok(apiserver);
                }
                // Another process took the port between our probe and its bind.
                Err(_) if attempt < 3 && apiserver.log_tail().contains("in use") => {}
                Err(err) => return Err(err),
            }
        }
    }

    fn spawn(etcd: &str, authorization_mode: &str, auth: ClientAuth) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("pikube-bench-")
            .tempdir()
            .context("creating the apiserver temp dir")?;
        let port = free_port()?;
        let tokens = dir.path().join("tokens.csv");
        // Under AlwaysAllow the bench user is a `system:masters` admin; otherwise an
        // ordinary user that `bind_bench_user` binds to cluster-admin.
        let (user, group) = if authorization_mode == "AlwaysAllow" {
            ("admin", Some("system:masters"))
        } else {
            ("bench", None)
        };
        let mut users =
            format!("{PRIVILEGED_TOKEN},privileged,privileged-uid,\"system:masters\"\n");
        if auth == ClientAuth::Token {
            let groups = group.map(|g| format!(",\"{g}\"")).unwrap_or_default();
            users.push_str(&format!("{TOKEN},{user},{user}-uid{groups}\n"));
        }
        std::fs::write(&tokens, users).context("writing the token file")?;
        let ca = dir.path().join("certs").join("ca.crt");
        let credentials = match auth {
            ClientAuth::Token => format!("    token: {TOKEN}\n"),
            ClientAuth::Cert => {
                let pki = dir.path().join("client-pki");
                std::fs::create_dir_all(&pki).context("creating the client PKI dir")?;
                let (authority, _) = pikubeadm::pki::CertificateAuthority::ensure(&pki, "bench-ca")
                    .context("writing the client CA")?;
                let spec = pikubeadm::pki::CertSpec::client("bench-client", user, group);
                let (pair, _) = authority
                    .ensure_cert(&pki, &spec)
                    .context("writing the bench client certificate")?;
                format!(
                    "    client-certificate: {}\n    client-key: {}\n",
                    pair.cert_path.display(),
                    pair.key_path.display()
                )
            }
        };
        std::fs::write(
            dir.path().join("kubeconfig"),
            kubeconfig(port, &ca, &credentials),
        )
        .context("writing the kubeconfig")?;
        std::fs::write(
            dir.path().join("privileged.kubeconfig"),
            kubeconfig(port, &ca, &format!("    token: {PRIVILEGED_TOKEN}\n")),
        )
        .context("writing the privileged kubeconfig")?;
        let log = std::fs::File::create(dir.path().join("apiserver.log"))
            .context("creating the apiserver log")?;
        let log_err = log.try_clone().context("opening the apiserver log")?;
        let child = Command::new(env!("CARGO_BIN_EXE_kube-apiserver"))
            .arg(format!("--etcd-servers={etcd}"))
            .arg("--etcd-prefix=/registry")
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={port}"))
            .arg(format!("--cert-dir={}", dir.path().join("certs").display()))
            .arg(format!("--token-auth-file={}", tokens.display()))
            .args((auth == ClientAuth::Cert).then(|| {
                format!(
                    "--client-ca-file={}",
                    dir.path().join("client-pki").join("ca.crt").display()
                )
            }))
            .arg("--anonymous-auth=false")
            .arg(format!("--authorization-mode={authorization_mode}"))
            .arg("--service-cluster-ip-range=10.96.0.0/24")
            .arg("--max-requests-inflight=400")
            .arg("--max-mutating-requests-inflight=200")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .context("starting kube-apiserver")?;
        raise_open_files_limit(child.id());
        Ok(Self { child, dir })
    }

    fn pid(&self) -> u32 {
        self.child.id()
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

    /// Binds the (unprivileged) bench user to cluster-admin, as a `system:masters` user.
    async fn bind_bench_user(&self) -> Result<()> {
        let kubeconfig = Kubeconfig::read_from(self.dir.path().join("privileged.kubeconfig"))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        let admin = Client::try_from(config)?;
        let binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding = serde_json::from_value(
            serde_json::json!({
                "metadata": {"name": "bench"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bench"}],
            }),
        )?;
        // A later apiserver on the same etcd (BENCH_COMPARE_AUTH) finds it bound.
        match Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(admin)
            .create(&PostParams::default(), &binding)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(err) => Err(err).context("binding the bench user to cluster-admin"),
        }
    }

    /// A new kube client (with its own connection pool) from the bench's kubeconfig.
    async fn client(&self) -> Result<Client> {
        let kubeconfig = Kubeconfig::read_from(self.dir.path().join("kubeconfig"))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Apiserver {
    fn drop(&mut self) {
        // Nothing to report to from drop; an exited child makes kill fail harmlessly.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Raises a process's soft open-files limit to its hard limit, best effort, with
/// util-linux `prlimit`: every watcher is a connection at both ends, and many systems
/// set the soft limit to 1024.
fn raise_open_files_limit(pid: u32) {
    const FIELD: &str = "Max open files";
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let Some(line) = limits.lines().find_map(|line| line.strip_prefix(FIELD)) else {
        return;
    };
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [soft, hard, ..] = fields[..] else {
        return;
    };
    if soft == hard {
        return;
    }
    let raised = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={hard}:{hard}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !raised {
        progress(&format!(
            "could not raise the open-files limit of pid {pid} from {soft}; many watchers may fail"
        ));
    }
}

/// A kubeconfig for the apiserver on `port`, trusting `ca`, with `credentials` (the
/// indented lines of its user).
fn kubeconfig(port: u16, ca: &std::path::Path, credentials: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: bench\n  cluster:\n    \
         server: https://127.0.0.1:{port}\n    certificate-authority: {}\nusers:\n\
         - name: user\n  user:\n{credentials}contexts:\n- name: bench\n  \
         context:\n    cluster: bench\n    user: user\ncurrent-context: bench\n",
        ca.display()
    )
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// What one phase measured.
#[derive(Debug, Default)]
struct Sample {
    ops: usize,
    wall: Duration,
    /// Latencies of the successful operations, sorted.
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
    /// CPU time (user + system) during the phase of the apiserver, etcd and the bench.
    cpu: [Option<Duration>; 3],
}

impl Sample {
    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64().max(f64::EPSILON)
    }

    fn percentile(&self, p: f64) -> Option<Duration> {
        percentile(&self.latencies, p)
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

/// Runs `op(0..ops)` from `clients` concurrent tasks, each taking the next index when its
/// previous operation is done, and times every operation.
async fn measure<F, Fut>(processes: Processes, ops: usize, clients: usize, op: F) -> Sample
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = processes.cpu_times();
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
        ops,
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
    let cpu_after = processes.cpu_times();
    for (i, cpu) in sample.cpu.iter_mut().enumerate() {
        if let (Some(before), Some(after)) = (cpu_before[i], cpu_after[i]) {
            *cpu = Some(after.saturating_sub(before));
        }
    }
    sample
}

/// Watch fan-out figures.
#[derive(Debug, Default)]
struct WatchFigures {
    watchers: usize,
    connected: usize,
    connect_time: Duration,
    rss_connected_kib: u64,
    pods: usize,
    /// Per watcher and pod, sorted.
    latencies: Vec<Duration>,
    missed: usize,
    failed_watchers: usize,
    first_error: Option<String>,
}

/// What a watcher task tells the coordinator.
enum WatchMessage {
    Connected,
    Received { pod: usize, at: Instant },
    Failed(String),
}

/// `watchers` pod watches over `watch_clients` kube clients (round robin; HTTP/1.1, so
/// every watch is its own TLS connection), then `watch_pods` pods created one at a time,
/// each once every live watcher has received the previous one.
async fn watch_fanout(
    settings: &Settings,
    apiserver: &Apiserver,
    client: &Client,
) -> Result<WatchFigures> {
    let namespace = "bench-watch";
    ensure_namespace(client, namespace).await?;
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let version = pods
        .list(&ListParams::default().limit(1))
        .await
        .context("listing pods before watching")?
        .metadata
        .resource_version
        .unwrap_or_else(|| "0".to_owned());
    let mut clients = Vec::new();
    for _ in 0..settings.watch_clients {
        clients.push(apiserver.client().await?);
    }

    progress(&format!(
        "connecting {} watchers over {} clients",
        settings.watchers, settings.watch_clients
    ));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let tasks: Vec<_> = (0..settings.watchers)
        .map(|w| {
            let api = Api::<Pod>::namespaced(clients[w % clients.len()].clone(), namespace);
            let (tx, version) = (tx.clone(), version.clone());
            tokio::spawn(watcher(api, version, tx))
        })
        .collect();
    drop(tx);
    // Aborts the watchers however this function returns.
    let _abort = AbortOnDrop(tasks);

    let mut figures = WatchFigures {
        watchers: settings.watchers,
        pods: settings.watch_pods,
        ..WatchFigures::default()
    };
    let deadline = tokio::time::Instant::now() + WATCH_CONNECT_TIMEOUT;
    while figures.connected + figures.failed_watchers < settings.watchers {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(WatchMessage::Connected)) => figures.connected += 1,
            Ok(Some(WatchMessage::Failed(err))) => {
                figures.failed_watchers += 1;
                figures.first_error.get_or_insert(err);
            }
            Ok(Some(WatchMessage::Received { .. })) => {}
            Ok(None) => bail!("every watcher task ended"),
            Err(_) => bail!(
                "only {} of {} watchers connected within {WATCH_CONNECT_TIMEOUT:?}",
                figures.connected,
                settings.watchers
            ),
        }
    }
    figures.connect_time = start.elapsed();
    figures.rss_connected_kib = proc_status_kib(apiserver.pid(), "VmRSS")?;
    progress(&format!(
        "{} watchers connected in {:.2?}; creating {} pods one at a time",
        figures.connected, figures.connect_time, settings.watch_pods
    ));

    // Pod 0 is a warm-up that proves every watch is registered; it is not measured.
    let mut live = figures.connected;
    for k in 0..=settings.watch_pods {
        let created = Instant::now();
        pods.create(&PostParams::default(), &pod(&format!("w-{k}")))
            .await
            .with_context(|| format!("creating watched pod w-{k}"))?;
        let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
        let mut received = 0;
        while received < live {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(WatchMessage::Received { pod, at })) if pod == k => {
                    received += 1;
                    if k > 0 {
                        figures
                            .latencies
                            .push(at.saturating_duration_since(created));
                    }
                }
                Ok(Some(WatchMessage::Received { .. } | WatchMessage::Connected)) => {}
                Ok(Some(WatchMessage::Failed(err))) => {
                    live -= 1;
                    figures.failed_watchers += 1;
                    figures.first_error.get_or_insert(err);
                }
                Ok(None) => bail!("every watcher task ended"),
                Err(_) => {
                    if k == 0 {
                        bail!(
                            "only {received} of {live} watchers saw the warm-up pod within \
                             {DELIVERY_TIMEOUT:?}"
                        );
                    }
                    figures.missed += live - received;
                    break;
                }
            }
        }
    }
    figures.latencies.sort();
    Ok(figures)
}

/// One watch; reports each pod `w-<k>` it sees added.
async fn watcher(api: Api<Pod>, version: String, tx: mpsc::UnboundedSender<WatchMessage>) {
    let stream = match api.watch(&WatchParams::default(), &version).await {
        Ok(stream) => stream,
        Err(err) => {
            let _ = tx.send(WatchMessage::Failed(format!("starting a watch: {err}")));
            return;
        }
    };
    let _ = tx.send(WatchMessage::Connected);
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        let at = Instant::now();
        let message = match event {
            Ok(WatchEvent::Added(pod)) => {
                let index = pod
                    .metadata
                    .name
                    .as_deref()
                    .and_then(|name| name.strip_prefix("w-"))
                    .and_then(|k| k.parse().ok());
                match index {
                    Some(pod) => WatchMessage::Received { pod, at },
                    None => continue,
                }
            }
            Ok(WatchEvent::Error(status)) => {
                WatchMessage::Failed(format!("watch error: {status:?}"))
            }
            Ok(_) => continue,
            Err(err) => WatchMessage::Failed(format!("watch stream: {err}")),
        };
        let failed = matches!(message, WatchMessage::Failed(_));
        if tx.send(message).is_err() || failed {
            return;
        }
    }
    let _ = tx.send(WatchMessage::Failed("the watch ended".to_owned()));
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
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

/// The processes whose CPU time each phase records.
#[derive(Debug, Clone, Copy)]
struct Processes {
    apiserver: u32,
    /// None when etcd's process was not found.
    etcd: Option<u32>,
}

impl Processes {
    /// CPU times of the apiserver, etcd and this bench.
    fn cpu_times(&self) -> [Option<Duration>; 3] {
        [Some(self.apiserver), self.etcd, Some(std::process::id())]
            .map(|pid| pid.and_then(|pid| cpu_time(pid).ok()))
    }
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

/// The kernel's clock ticks per second (`getconf CLK_TCK`, 100 on Linux in practice).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
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

/// Everything measured, printed at the end.
#[derive(Default)]
struct Report {
    stored_bytes: usize,
    idle: Option<Memory>,
    /// Every memory sample in order, labelled.
    memory: Vec<(String, Memory)>,
    after_pods: Option<Memory>,
    rows: Vec<(String, usize, Sample)>,
    watch: Option<WatchFigures>,
    errors: usize,
}

impl Report {
    fn row(&mut self, operation: &str, clients: usize, sample: Sample) {
        if let Some(err) = &sample.first_error {
            eprintln!(
                "bench: {operation} ({clients} clients): {} of {} failed; first: {err}",
                sample.errors, sample.ops
            );
        }
        self.errors += sample.errors;
        self.rows.push((operation.to_owned(), clients, sample));
    }

    fn find(&self, operation: &str, clients: usize) -> Option<&Sample> {
        self.rows
            .iter()
            .find(|(op, c, _)| op == operation && *c == clients)
            .map(|(_, _, sample)| sample)
    }

    fn ratio(&self, apiserver: &str, etcd: &str, clients: usize) -> Option<f64> {
        let a = self.find(apiserver, clients)?.throughput();
        let e = self.find(etcd, clients)?.throughput();
        (e > 0.0).then(|| a / e)
    }

    fn print(&self, settings: &Settings) {
        let ms = |d: Option<Duration>| {
            d.map_or("-".to_owned(), |d| format!("{:.2}", d.as_secs_f64() * 1e3))
        };
        let mib = |kib: u64| kib as f64 / 1024.0;

        println!("\n== throughput and latency ==");
        println!(
            "value size: {} bytes (the apiserver's stored ConfigMap with a {PAYLOAD_BYTES}-byte payload)",
            self.stored_bytes
        );
        println!(
            "etcd: N tasks share one etcd-client (one HTTP/2 connection), like the apiserver;"
        );
        println!("apiserver: N tasks share one kube::Client (HTTP/1.1 pool: a TLS connection per request in flight)");
        println!("CPU/op: user + system CPU time of each process during the phase, per operation");
        let mut table = Table::new(&[
            "operation",
            "clients",
            "ops",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "apiserver CPU/op",
            "etcd CPU/op",
            "bench CPU/op",
            "errors",
        ]);
        for (operation, clients, sample) in &self.rows {
            let done = sample.latencies.len();
            let cpu = sample.cpu.map(|cpu| match cpu {
                Some(cpu) if done > 0 => format!("{:.0} µs", cpu.as_secs_f64() * 1e6 / done as f64),
                _ => "-".to_owned(),
            });
            table.push(vec![
                operation.clone(),
                clients.to_string(),
                sample.ops.to_string(),
                format!("{:.0}", sample.throughput()),
                ms(sample.percentile(0.50)),
                ms(sample.percentile(0.99)),
                cpu[0].clone(),
                cpu[1].clone(),
                cpu[2].clone(),
                sample.errors.to_string(),
            ]);
        }
        table.print();

        let c = settings.clients;
        let create_ratio = self.ratio("apiserver create", "etcd put", c);
        let get_ratio = self.ratio("apiserver get", "etcd get", c);
        println!("\n== apiserver / etcd throughput at {c} clients ==");
        let ratio_text = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{r:.2}"));
        println!("create / put: {}", ratio_text(create_ratio));
        println!(
            "create / etcd create txn (the write a create issues): {}",
            ratio_text(self.ratio("apiserver create", "etcd create txn", c))
        );
        println!(
            "etcd create txn / etcd put: {}",
            ratio_text(self.ratio("etcd create txn", "etcd put", c))
        );
        println!("get / get:    {}", ratio_text(get_ratio));

        if let Some(w) = &self.watch {
            println!("\n== watch fan-out ==");
            println!(
                "{} of {} watchers connected in {:.2?} over {} kube clients \
                 (one HTTP/1.1 TLS connection per watch); apiserver VmRSS then {:.1} MiB",
                w.connected,
                w.watchers,
                w.connect_time,
                settings.watch_clients,
                mib(w.rss_connected_kib)
            );
            println!(
                "{} pods created one at a time; latency = just before create → watcher receipt \
                 (decoded by kube-rs); {} deliveries",
                w.pods,
                w.latencies.len()
            );
            println!(
                "p50 {} ms, p99 {} ms, max {} ms; missed deliveries {}, failed watchers {}",
                ms(percentile(&w.latencies, 0.50)),
                ms(percentile(&w.latencies, 0.99)),
                ms(w.latencies.last().copied()),
                w.missed,
                w.failed_watchers
            );
            if let Some(err) = &w.first_error {
                println!("first watch error: {err}");
            }
        }

        println!("\n== apiserver memory (max VmRSS over ~2 s; VmHWM = peak so far) ==");
        for (label, m) in &self.memory {
            println!(
                "{label:<28} VmRSS {:>7.1} MiB   VmHWM {:>7.1} MiB",
                mib(m.rss_kib),
                mib(m.hwm_kib)
            );
        }
        println!(
            "(the pods come right after start, so that figure holds them and nothing else; \
             later figures add the list phase's {} ConfigMaps, the watch phase's {} pods and \
             whatever heap the process kept after the list and watch bursts)",
            settings.list_size,
            settings.watch_pods + 1
        );

        println!("\n== summary ==");
        let mut summary = Table::new(&["metric", "measured", "target", "ok/miss"]);
        let verdict = |ok: Option<bool>| match ok {
            Some(true) => "ok",
            Some(false) => "miss",
            None => "-",
        };
        if let Some(m) = self.idle {
            summary.push(vec![
                "apiserver idle VmRSS".into(),
                format!("{:.1} MiB", mib(m.rss_kib)),
                "≤ 30 MiB".into(),
                verdict(Some(mib(m.rss_kib) <= 30.0)).into(),
            ]);
        }
        if let Some(m) = self.after_pods {
            summary.push(vec![
                format!("apiserver VmRSS with {} pods", settings.pods),
                format!("{:.1} MiB", mib(m.rss_kib)),
                "≤ 150 MiB".into(),
                verdict(Some(mib(m.rss_kib) <= 150.0)).into(),
            ]);
        }
        if let Some(s) = self.find("apiserver create pod", c) {
            summary.push(vec![
                format!("pod create throughput ({c} clients)"),
                format!("{:.0} /s", s.throughput()),
                "-".into(),
                "-".into(),
            ]);
        }
        summary.push(vec![
            format!("create / etcd put ({c} clients)"),
            ratio_text(create_ratio),
            "≥ 0.70".into(),
            verdict(create_ratio.map(|r| r >= 0.7)).into(),
        ]);
        summary.push(vec![
            format!("get / etcd get ({c} clients)"),
            ratio_text(get_ratio),
            "-".into(),
            "-".into(),
        ]);
        if let Some(w) = &self.watch {
            let p99 = percentile(&w.latencies, 0.99);
            summary.push(vec![
                format!("watch delivery p99 ({} watchers)", w.watchers),
                format!("{} ms", ms(p99)),
                "≤ 100 ms".into(),
                verdict(p99.map(|p| p <= Duration::from_millis(100))).into(),
            ]);
            summary.push(vec![
                "watch deliveries missed".into(),
                (w.missed + w.failed_watchers * w.pods).to_string(),
                "0".into(),
                verdict(Some(w.missed == 0 && w.failed_watchers == 0)).into(),
            ]);
        }
        summary.push(vec![
            "failed requests".into(),
            self.errors.to_string(),
            "0".into(),
            verdict(Some(self.errors == 0)).into(),
        ]);
        summary.print();
    }
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
