//! The kubelet's stats provider (upstream `pkg/kubelet/stats` with cAdvisor underneath):
//! every housekeeping interval it reads the usage of the node (root cgroup or /proc, the
//! filesystem of `--root-dir`, the runtime's image filesystem from CRI `ImageFsInfo`,
//! pid limits), of every ready pod's cgroup and of each running container's cgroup (CPU
//! time and rate, memory usage, working set, rss, page faults), the containers' writable
//! layers from CRI `ListContainerStats`, their log directories and the pods' emptyDir
//! volumes, and caches the result as a `stats/v1alpha1` [`Summary`]. `/stats/summary`,
//! the resource metrics and the eviction manager all read the cache, so a scrape is cheap;
//! the eviction manager's round, every housekeeping interval, refreshes it.

pub mod cgroup;
pub mod metrics;
pub mod summary;

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use parking_lot::{Mutex, RwLock};

use crate::app::CgroupDriver;
use crate::cri::{self, api, ImageService, RuntimeService};
use crate::kuberuntime::{labels, sandbox};
use cgroup::{Layout, Usage};
pub use summary::Summary;
use summary::{
    ContainerStats, CpuStats, FsStats, MemoryStats, NodeStats, PodReference, PodStats, RlimitStats,
    RuntimeStats, VolumeStats,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing from the container runtime: {0}")]
    Runtime(#[from] cri::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the provider reads besides the runtime.
#[derive(Clone, Debug)]
pub struct StatsSettings {
    pub node_name: String,
    pub root_dir: PathBuf,
    pub pod_logs_dir: PathBuf,
    pub cgroup_driver: CgroupDriver,
    /// The node's memory capacity (MemTotal): available = capacity − working set.
    pub memory_capacity: u64,
    /// How often the cache is refreshed (cAdvisor's housekeeping, 10 s).
    pub housekeeping_interval: Duration,
}

/// The cached stats and how to refresh them.
pub struct StatsProvider {
    settings: StatsSettings,
    runtime: Arc<dyn RuntimeService>,
    images: Arc<dyn ImageService>,
    layout: Option<Layout>,
    latest: RwLock<Option<(tokio::time::Instant, Arc<Summary>)>>,
    /// The previous CPU sample per node/pod/container key: (time ns, usage ns).
    cpu_samples: Mutex<HashMap<String, CpuSample>>,
    /// One refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
}

fn time(now: jiff::Timestamp) -> Option<Time> {
    Some(Time(now))
}

fn time_of_nanos(nanos: i64) -> Option<Time> {
    (nanos > 0)
        .then(|| jiff::Timestamp::from_nanosecond(i128::from(nanos)).ok())
        .flatten()
        .map(Time)
}

/// The filesystem holding `path` (or its nearest existing ancestor).
pub fn fs_stats(path: &Path, now: jiff::Timestamp) -> Option<FsStats> {
    let mut dir = path;
    while !dir.exists() {
        dir = dir.parent()?;
    }
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(FsStats {
        time: time(now),
        available_bytes: Some(s.f_bavail.saturating_mul(s.f_frsize)),
        capacity_bytes: Some(s.f_blocks.saturating_mul(s.f_frsize)),
        used_bytes: Some(
            s.f_blocks
                .saturating_sub(s.f_bfree)
                .saturating_mul(s.f_frsize),
        ),
        inodes_free: Some(s.f_ffree),
        inodes: Some(s.f_files),
        inodes_used: Some(s.f_files.saturating_sub(s.f_ffree)),
    })
}

/// Bytes on disk and inodes used under `dir`, as `du` counts them; None when absent.
pub fn disk_usage(dir: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::symlink_metadata(dir).ok()?;
    let mut bytes = meta.blocks().saturating_mul(512);
    let mut inodes = 1u64;
    if meta.is_dir() {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let Ok(m) = e.metadata() else { continue };
                bytes = bytes.saturating_add(m.blocks().saturating_mul(512));
                inodes += 1;
                if m.is_dir() {
                    stack.push(e.path());
                }
            }
        }
    }
    Some((bytes, inodes))
}

/// Capacity and availability of `of`, usage from `du`.
fn usage_on(of: Option<&FsStats>, used: Option<(u64, u64)>, now: jiff::Timestamp) -> FsStats {
    FsStats {
        time: time(now),
        available_bytes: of.and_then(|f| f.available_bytes),
        capacity_bytes: of.and_then(|f| f.capacity_bytes),
        used_bytes: Some(used.map_or(0, |u| u.0)),
        inodes_free: of.and_then(|f| f.inodes_free),
        inodes: of.and_then(|f| f.inodes),
        inodes_used: Some(used.map_or(0, |u| u.1)),
    }
}

fn memory_stats(
    m: &cgroup::MemoryUsage,
    now: jiff::Timestamp,
    available: Option<u64>,
) -> MemoryStats {
    MemoryStats {
        time: time(now),
        available_bytes: available,
        usage_bytes: Some(m.usage),
        working_set_bytes: Some(m.working_set),
        rss_bytes: Some(m.rss),
        page_faults: Some(m.page_faults),
        major_page_faults: Some(m.major_page_faults),
    }
}

/// Node boot time (`btime` of /proc/stat).
fn boot_time() -> Option<Time> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let secs: i64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    jiff::Timestamp::from_second(secs).ok().map(Time)
}

fn rlimit(now: jiff::Timestamp) -> RlimitStats {
    let maxpid = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|t| t.trim().parse().ok());
    // /proc/loadavg's fourth field is running/total scheduling entities.
    let curproc = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().nth(3)?.split_once('/')?.1.parse().ok());
    RlimitStats {
        time: time(now),
        maxpid,
        curproc,
    }
}

/// The shortest window a CPU rate is computed over.
const MIN_RATE_WINDOW_NS: i128 = 1_000_000_000;

/// The reference point of one cgroup's CPU rate.
#[derive(Clone, Copy)]
struct CpuSample {
    at: i128,
    usage: u64,
    rate: Option<u64>,
}

impl StatsProvider {
    pub fn new(
        settings: StatsSettings,
        runtime: Arc<dyn RuntimeService>,
        images: Arc<dyn ImageService>,
    ) -> Arc<StatsProvider> {
        let layout = Layout::host();
        if layout.is_none() {
            tracing::warn!("no cgroup cpuacct/memory hierarchy found: container stats come from the runtime only");
        }
        Arc::new(StatsProvider {
            settings,
            runtime,
            images,
            layout,
            latest: RwLock::new(None),
            cpu_samples: Mutex::new(HashMap::new()),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    /// The node's memory capacity.
    pub fn memory_capacity(&self) -> u64 {
        self.settings.memory_capacity
    }

    /// The last summary, if any was taken.
    pub fn latest(&self) -> Option<Arc<Summary>> {
        self.latest.read().as_ref().map(|(_, s)| s.clone())
    }

    /// The cached summary if it is younger than the housekeeping interval, else a new one.
    pub async fn summary(&self) -> Result<Arc<Summary>> {
        if let Some((at, s)) = self.latest.read().as_ref() {
            if at.elapsed() < self.settings.housekeeping_interval {
                return Ok(s.clone());
            }
        }
        self.refresh().await
    }

    /// `usageNanoCores` from the previous sample of `key`; records this one.
    ///
    /// A rate over a window shorter than [`MIN_RATE_WINDOW_NS`] is noise (a CFS
    /// quota lets a capped container run a whole core for a few milliseconds), so
    /// such a sample keeps the last rate and the older reference point.
    fn cpu(
        &self,
        key: String,
        now: jiff::Timestamp,
        usage_ns: u64,
        seen: &mut HashSet<String>,
    ) -> CpuStats {
        let t = now.as_nanosecond();
        let mut samples = self.cpu_samples.lock();
        let previous = samples.get(&key).copied();
        let rate = match previous {
            Some(p) if t - p.at < MIN_RATE_WINDOW_NS => p.rate,
            Some(p) => (usage_ns >= p.usage).then(|| {
                u64::try_from(i128::from(usage_ns - p.usage) * 1_000_000_000 / (t - p.at))
                    .unwrap_or(u64::MAX)
            }),
            None => None,
        };
        if previous.is_none_or(|p| t - p.at >= MIN_RATE_WINDOW_NS) {
            samples.insert(
                key.clone(),
                CpuSample {
                    at: t,
                    usage: usage_ns,
                    rate,
                },
            );
        }
        seen.insert(key);
        CpuStats {
            time: time(now),
            usage_nano_cores: rate,
            usage_core_nano_seconds: Some(usage_ns),
        }
    }

    /// Takes a new summary and caches it.
    pub async fn refresh(&self) -> Result<Arc<Summary>> {
        let _one = self.refreshing.lock().await;
        let sandboxes = self.runtime.list_pod_sandbox(None).await?;
        let containers = self.runtime.list_containers(None).await?;
        let writable: HashMap<String, api::FilesystemUsage> =
            match self.runtime.list_container_stats(None).await {
                Ok(stats) => stats
                    .into_iter()
                    .filter_map(|s| Some((s.attributes?.id, s.writable_layer?)))
                    .collect(),
                Err(e) => {
                    tracing::debug!(error = %e, "container stats from the runtime");
                    HashMap::new()
                }
            };
        let image_fs = match self.images.image_fs_info().await {
            Ok(fs) => fs.into_iter().next(),
            Err(e) => {
                tracing::debug!(error = %e, "image filesystem info from the runtime");
                None
            }
        };
        let settings = self.settings.clone();
        let layout = self.layout.clone();
        let now = jiff::Timestamp::now();
        // The filesystem walks and cgroup reads block: off the async workers.
        let (summary, cpu_inputs) = tokio::task::spawn_blocking(move || {
            collect(
                &settings,
                layout.as_ref(),
                &sandboxes,
                &containers,
                &writable,
                image_fs.as_ref(),
                now,
            )
        })
        .await
        .unwrap_or_default();
        let mut summary = summary;
        let mut seen = HashSet::new();
        if let Some(ns) = cpu_inputs.node {
            summary.node.cpu = Some(self.cpu("node".into(), now, ns, &mut seen));
        }
        if let (Some(ns), Some(pods)) = (
            cpu_inputs.pods_cgroup,
            summary.node.system_containers.first_mut(),
        ) {
            pods.cpu = Some(self.cpu("system/pods".into(), now, ns, &mut seen));
        }
        for pod in &mut summary.pods {
            let uid = pod.pod_ref.uid.clone();
            if let Some(ns) = cpu_inputs.pods.get(&uid) {
                pod.cpu = Some(self.cpu(format!("pod/{uid}"), now, *ns, &mut seen));
            }
            for c in &mut pod.containers {
                let key = format!("{uid}/{}", c.name);
                if let Some(ns) = cpu_inputs.containers.get(&key) {
                    c.cpu = Some(self.cpu(format!("container/{key}"), now, *ns, &mut seen));
                }
            }
        }
        self.cpu_samples.lock().retain(|k, _| seen.contains(k));
        let summary = Arc::new(summary);
        *self.latest.write() = Some((tokio::time::Instant::now(), summary.clone()));
        Ok(summary)
    }
}

/// Cumulative CPU times read during collection, by node / pod uid / `uid/container`.
#[derive(Default)]
struct CpuInputs {
    node: Option<u64>,
    /// The `pods` system container.
    pods_cgroup: Option<u64>,
    pods: HashMap<String, u64>,
    containers: HashMap<String, u64>,
}

fn collect(
    settings: &StatsSettings,
    layout: Option<&Layout>,
    sandboxes: &[api::PodSandbox],
    containers: &[api::Container],
    writable: &HashMap<String, api::FilesystemUsage>,
    image_fs: Option<&api::FilesystemUsage>,
    now: jiff::Timestamp,
) -> (Summary, CpuInputs) {
    let mut cpu = CpuInputs::default();
    let nodefs = fs_stats(&settings.root_dir, now);
    let logsfs = fs_stats(&settings.pod_logs_dir, now);
    let imagefs = image_fs.map(|u| {
        let mount = u.fs_id.as_ref().map(|f| PathBuf::from(&f.mountpoint));
        let of = mount.as_deref().and_then(|m| fs_stats(m, now));
        FsStats {
            time: time(now),
            available_bytes: of.as_ref().and_then(|f| f.available_bytes),
            capacity_bytes: of.as_ref().and_then(|f| f.capacity_bytes),
            used_bytes: u.used_bytes.as_ref().map(|v| v.value),
            inodes_free: of.as_ref().and_then(|f| f.inodes_free),
            inodes: of.as_ref().and_then(|f| f.inodes),
            inodes_used: u.inodes_used.as_ref().map(|v| v.value),
        }
    });
    // The node: the root cgroup on v1; /proc on v2 (no memory.current at the root).
    let root = layout.and_then(|l| l.usage(""));
    cpu.node = root.and_then(|u| u.cpu_ns).or_else(|| {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| cgroup::proc_stat_cpu_ns(&s))
    });
    let node_memory = match layout {
        Some(Layout::V1 { .. }) => root.and_then(|u| u.memory),
        _ => std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| cgroup::memory_meminfo(&m)),
    };
    let kubepods = match settings.cgroup_driver {
        CgroupDriver::Cgroupfs => "kubepods",
        CgroupDriver::Systemd => "kubepods.slice",
    };
    let pods_usage = layout.and_then(|l| l.usage(kubepods));
    cpu.pods_cgroup = pods_usage.and_then(|u| u.cpu_ns);
    let start_time = boot_time();
    let node = NodeStats {
        node_name: settings.node_name.clone(),
        system_containers: pods_usage
            .map(|u| ContainerStats {
                name: "pods".into(),
                start_time: start_time.clone(),
                cpu: None,
                memory: u.memory.map(|m| memory_stats(&m, now, None)),
                rootfs: None,
                logs: None,
            })
            .into_iter()
            .collect(),
        start_time,
        cpu: None,
        memory: node_memory.map(|m| {
            memory_stats(
                &m,
                now,
                Some(settings.memory_capacity.saturating_sub(m.working_set)),
            )
        }),
        fs: nodefs.clone(),
        runtime: Some(RuntimeStats {
            image_fs: imagefs.clone(),
            container_fs: imagefs.clone(),
        }),
        rlimit: Some(rlimit(now)),
    };
    let mut pods = Vec::new();
    for s in sandboxes
        .iter()
        .filter(|s| s.state() == api::PodSandboxState::SandboxReady)
    {
        let Some(meta) = &s.metadata else { continue };
        let uid = s
            .labels
            .get(labels::POD_UID)
            .cloned()
            .unwrap_or_else(|| meta.uid.clone());
        let pod_cgroup =
            layout.and_then(|l| Some((l, l.pod_cgroup(settings.cgroup_driver, &uid)?)));
        let pod_usage: Option<Usage> = pod_cgroup.as_ref().and_then(|(l, rel)| l.usage(rel));
        if let Some(ns) = pod_usage.and_then(|u| u.cpu_ns) {
            cpu.pods.insert(uid.clone(), ns);
        }
        let log_dir = PathBuf::from(sandbox::log_directory(
            &settings.pod_logs_dir,
            &meta.namespace,
            &meta.name,
            &uid,
        ));
        let mut stats = Vec::new();
        let mut ephemeral_used = 0u64;
        let mut ephemeral_inodes = 0u64;
        for c in containers.iter().filter(|c| {
            c.pod_sandbox_id == s.id && c.state() == api::ContainerState::ContainerRunning
        }) {
            let name = c
                .labels
                .get(labels::CONTAINER_NAME)
                .cloned()
                .unwrap_or_else(|| c.metadata.clone().unwrap_or_default().name);
            let usage = pod_cgroup
                .as_ref()
                .and_then(|(l, rel)| l.usage(&l.container_cgroup(rel, &c.id)?));
            if let Some(ns) = usage.and_then(|u| u.cpu_ns) {
                cpu.containers.insert(format!("{uid}/{name}"), ns);
            }
            let rootfs = writable.get(&c.id).map(|w| {
                let used = w.used_bytes.as_ref().map_or(0, |v| v.value);
                let inodes = w.inodes_used.as_ref().map_or(0, |v| v.value);
                let mut fs = usage_on(imagefs.as_ref(), Some((used, inodes)), now);
                fs.used_bytes = w.used_bytes.as_ref().map(|v| v.value);
                fs
            });
            let logs = usage_on(logsfs.as_ref(), disk_usage(&log_dir.join(&name)), now);
            for fs in rootfs.iter().chain(std::iter::once(&logs)) {
                ephemeral_used += fs.used_bytes.unwrap_or(0);
                ephemeral_inodes += fs.inodes_used.unwrap_or(0);
            }
            stats.push(ContainerStats {
                name,
                start_time: time_of_nanos(c.created_at),
                cpu: None,
                memory: usage
                    .and_then(|u| u.memory)
                    .map(|m| memory_stats(&m, now, None)),
                rootfs,
                logs: Some(logs),
            });
        }
        stats.sort_by(|a, b| a.name.cmp(&b.name));
        let empty_dirs = crate::volumes::pod_dir(&settings.root_dir, &uid)
            .join("volumes")
            .join("kubernetes.io~empty-dir");
        let mut volume = Vec::new();
        for e in std::fs::read_dir(&empty_dirs)
            .into_iter()
            .flatten()
            .flatten()
        {
            let used = disk_usage(&e.path());
            let fs = usage_on(nodefs.as_ref(), used, now);
            ephemeral_used += fs.used_bytes.unwrap_or(0);
            ephemeral_inodes += fs.inodes_used.unwrap_or(0);
            volume.push(VolumeStats {
                fs,
                name: e.file_name().to_string_lossy().into_owned(),
            });
        }
        volume.sort_by(|a, b| a.name.cmp(&b.name));
        let mut ephemeral = usage_on(
            nodefs.as_ref(),
            Some((ephemeral_used, ephemeral_inodes)),
            now,
        );
        ephemeral.time = time(now);
        pods.push(PodStats {
            pod_ref: PodReference {
                name: meta.name.clone(),
                namespace: meta.namespace.clone(),
                uid,
            },
            start_time: time_of_nanos(s.created_at),
            containers: stats,
            cpu: None,
            memory: pod_usage
                .and_then(|u| u.memory)
                .map(|m| memory_stats(&m, now, None)),
            volume,
            ephemeral_storage: Some(ephemeral),
        });
    }
    pods.sort_by(|a, b| {
        (&a.pod_ref.namespace, &a.pod_ref.name).cmp(&(&b.pod_ref.namespace, &b.pod_ref.name))
    });
    (Summary { node, pods }, cpu)
}
