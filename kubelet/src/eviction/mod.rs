//! The eviction manager (upstream `pkg/kubelet/eviction`): every housekeeping interval it
//! observes `memory.available` (memory capacity − the node's working set),
//! `nodefs.available` / `nodefs.inodesFree` (the filesystem of `--root-dir`) and
//! `imagefs.available` / `imagefs.inodesFree` (the runtime's image filesystem) and
//! `pid.available` (pid_max − processes) from the stats cache, compares them with the hard thresholds, and reports MemoryPressure /
//! DiskPressure until `--eviction-pressure-transition-period` passed since a threshold
//! was last met. While a threshold is met it evicts one pod per interval, ranked as
//! upstream ranks them: killed at once, reported Failed with reason `Evicted`, a
//! DisruptionTarget condition and an `Evicted` event, counted in
//! `kubelet_evictions{eviction_signal}`. Static, mirror and system-critical
//! pods are never evicted. As an admission handler it rejects new BestEffort pods under
//! memory pressure and every new pod under disk pressure.

pub mod ranking;
pub mod thresholds;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use component_base::shutdown::Shutdown;

use crate::events::{self, Recorder};
use crate::nodestatus::NodePressure;
use crate::pod_workers::{PodAdmitHandler, PodEnd, PodManager};
use crate::stats::{StatsProvider, Summary};
use ranking::Candidate;
use thresholds::{
    thresholds_met, EvictionHard, Met, MinimumReclaim, Observation, Pressure, Signal,
};

/// Upstream's reason on evicted and rejected pods and their events.
pub const REASON: &str = "Evicted";

/// The eviction manager's configuration.
#[derive(Clone, Debug)]
pub struct EvictionSettings {
    pub minimum_reclaim: MinimumReclaim,
    /// `--eviction-pressure-transition-period` (5 m).
    pub pressure_transition_period: Duration,
    /// How often signals are observed (upstream's 10 s monitoring period).
    pub monitoring_period: Duration,
}

#[derive(Default)]
struct State {
    /// The signals met in the last round (the minimum reclaim applies to them).
    met: Vec<Signal>,
    /// When each pressure's threshold was last met.
    last_observed: HashMap<Pressure, Instant>,
}

/// Observes, reports pressure and evicts.
pub struct EvictionManager {
    pods: Arc<PodManager>,
    stats: Arc<StatsProvider>,
    events: Recorder,
    settings: EvictionSettings,
    /// The hard thresholds in force; tests swap them.
    thresholds: watch::Sender<EvictionHard>,
    pressure: watch::Sender<NodePressure>,
    state: Mutex<State>,
    /// `kubelet_evictions{eviction_signal}`.
    evictions: prometheus::IntCounterVec,
}

/// Formats bytes as a binary-SI quantity the way upstream prints them (`100Mi`,
/// `123456Ki`, `17`).
pub fn quantity(bytes: u64) -> String {
    for (suffix, unit) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    if bytes >= 1024 {
        // Not a whole number of Ki: upstream rounds up to the next Ki.
        return format!("{}Ki", bytes.div_ceil(1024));
    }
    bytes.to_string()
}

/// The signals observed in a summary, with the node's memory capacity (upstream
/// `makeSignalObservations`).
pub fn observe(summary: &Summary, memory_capacity: u64) -> BTreeMap<Signal, Observation> {
    let mut out = BTreeMap::new();
    if let Some(ws) = summary
        .node
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes)
    {
        out.insert(
            Signal::MemoryAvailable,
            Observation {
                available: memory_capacity.saturating_sub(ws),
                capacity: memory_capacity,
            },
        );
    }
    let fs = |f: Option<&crate::stats::summary::FsStats>,
              bytes: Signal,
              inodes: Signal,
              out: &mut BTreeMap<_, _>| {
        let Some(f) = f else { return };
        if let (Some(a), Some(c)) = (f.available_bytes, f.capacity_bytes) {
            out.insert(
                bytes,
                Observation {
                    available: a,
                    capacity: c,
                },
            );
        }
        if let (Some(a), Some(c)) = (f.inodes_free, f.inodes) {
            out.insert(
                inodes,
                Observation {
                    available: a,
                    capacity: c,
                },
            );
        }
    };
    if let Some((max, cur)) = summary.node.rlimit.as_ref().and_then(|r| {
        Some((
            u64::try_from(r.maxpid?).ok()?,
            u64::try_from(r.curproc?).ok()?,
        ))
    }) {
        out.insert(
            Signal::PidAvailable,
            Observation {
                available: max.saturating_sub(cur),
                capacity: max,
            },
        );
    }
    fs(
        summary.node.fs.as_ref(),
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
        &mut out,
    );
    fs(
        summary
            .node
            .runtime
            .as_ref()
            .and_then(|r| r.image_fs.as_ref()),
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
        &mut out,
    );
    out
}

/// Upstream's eviction message: the resource, the threshold and what was available, and
/// each container using more than it requested.
pub fn eviction_message(met: &Met, pod: &Pod, summary: &Summary) -> String {
    let resource = met.signal.resource();
    let mut message = format!("The node was low on resource: {resource}. ");
    let amount = |v: u64| match met.signal {
        Signal::NodeFsInodesFree | Signal::ImageFsInodesFree | Signal::PidAvailable => {
            v.to_string()
        }
        _ => quantity(v),
    };
    message.push_str(&format!(
        "Threshold quantity: {}, available: {}. ",
        amount(met.value),
        amount(met.observed.available)
    ));
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let stats = summary.pods.iter().find(|p| p.pod_ref.uid == uid);
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        let Some(cs) = stats.and_then(|s| s.containers.iter().find(|x| x.name == c.name)) else {
            continue;
        };
        let usage = match met.signal {
            Signal::MemoryAvailable => cs.memory.as_ref().and_then(|m| m.working_set_bytes),
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => Some(
                cs.rootfs.as_ref().and_then(|f| f.used_bytes).unwrap_or(0)
                    + cs.logs.as_ref().and_then(|f| f.used_bytes).unwrap_or(0),
            ),
            _ => None,
        };
        let request_q = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get(resource));
        let request = request_q
            .and_then(|q| crate::cm::parse_quantity(&q.0))
            .and_then(|n| u64::try_from(n / 1_000_000_000).ok())
            .unwrap_or(0);
        if let Some(u) = usage.filter(|u| *u > request) {
            message.push_str(&format!(
                "Container {} was using {}, request is {}, has larger consumption of {resource}. ",
                c.name,
                quantity(u),
                request_q.map_or_else(|| "0".to_owned(), |q| q.0.clone()),
            ));
        }
    }
    message
}

impl EvictionManager {
    /// A manager whose metrics go to `registry`.
    pub fn new(
        pods: Arc<PodManager>,
        stats: Arc<StatsProvider>,
        events: Recorder,
        hard: EvictionHard,
        settings: EvictionSettings,
        registry: &prometheus::Registry,
    ) -> Result<Arc<EvictionManager>, prometheus::Error> {
        let evictions = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "kubelet_evictions",
                "Cumulative number of pod evictions by eviction signal",
            ),
            &["eviction_signal"],
        )?;
        registry.register(Box::new(evictions.clone()))?;
        Ok(Arc::new(EvictionManager {
            pods,
            stats,
            events,
            settings,
            thresholds: watch::channel(hard).0,
            pressure: watch::channel(NodePressure::new()).0,
            state: Mutex::new(State::default()),
            evictions,
        }))
    }

    /// The pressure conditions, for node status.
    pub fn pressure(&self) -> watch::Receiver<NodePressure> {
        self.pressure.subscribe()
    }

    /// Replaces the hard thresholds (from the next round on).
    pub fn set_thresholds(&self, hard: EvictionHard) {
        self.thresholds.send_replace(hard);
    }

    /// Observes and acts every monitoring period until shutdown.
    pub async fn run(self: Arc<Self>, mut shutdown: Shutdown) {
        loop {
            self.synchronize().await;
            tokio::select! {
                () = shutdown.signaled() => return,
                () = tokio::time::sleep(self.settings.monitoring_period) => {}
            }
        }
    }

    /// One round (upstream `synchronize`); the uid of the pod evicted, if any.
    pub async fn synchronize(&self) -> Option<String> {
        let summary = match self.stats.refresh().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "eviction manager: unable to get stats");
                return None;
            }
        };
        let hard = *self.thresholds.borrow();
        let observations = observe(&summary, self.stats.memory_capacity());
        let now = Instant::now();
        let met = {
            let mut state = self.state.lock();
            let met = thresholds_met(
                &hard,
                &self.settings.minimum_reclaim,
                &observations,
                &state.met,
            );
            state.met = met.iter().map(|m| m.signal).collect();
            for m in &met {
                state.last_observed.insert(m.signal.pressure(), now);
            }
            let period = self.settings.pressure_transition_period;
            let pressure: NodePressure = state
                .last_observed
                .iter()
                .filter(|(_, at)| now.duration_since(**at) < period)
                .map(|(p, _)| *p)
                .collect();
            self.pressure.send_if_modified(|p| {
                let changed = *p != pressure;
                if changed {
                    tracing::info!(?pressure, "node pressure changed");
                    *p = pressure;
                }
                changed
            });
            met
        };
        let first = met.first()?;
        tracing::info!(
            signal = first.signal.name(),
            available = first.observed.available,
            threshold = first.value,
            "eviction threshold met, attempting to reclaim"
        );
        self.evict_one(first, &summary)
    }

    /// Evicts the first pod in upstream's order for `met`'s resource.
    fn evict_one(&self, met: &Met, summary: &Summary) -> Option<String> {
        let running: HashMap<&str, &crate::stats::summary::PodStats> = summary
            .pods
            .iter()
            .map(|p| (p.pod_ref.uid.as_str(), p))
            .collect();
        let pods: HashMap<String, Arc<Pod>> = self
            .pods
            .pods()
            .into_iter()
            .filter_map(|p| Some((p.metadata.uid.clone()?, p)))
            .collect();
        let mut candidates: Vec<Candidate> = pods
            .iter()
            .filter(|(uid, p)| {
                running.contains_key(uid.as_str())
                    && p.metadata.deletion_timestamp.is_none()
                    && !matches!(
                        p.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Failed" | "Succeeded")
                    )
                    && !self.pods.is_ended(uid)
                    && !ranking::is_critical(p, self.pods.is_static(uid))
            })
            .map(|(uid, p)| {
                let stats = running.get(uid.as_str());
                // Process counts per pod are not collected: under PID pressure pods rank
                // by priority alone.
                let (usage, request) = match met.signal {
                    Signal::MemoryAvailable => (
                        stats
                            .and_then(|s| s.memory.as_ref())
                            .and_then(|m| m.working_set_bytes),
                        ranking::pod_request(p, "memory"),
                    ),
                    Signal::PidAvailable => (Some(0), 0),
                    _ => (
                        stats
                            .and_then(|s| s.ephemeral_storage.as_ref())
                            .and_then(|f| f.used_bytes),
                        ranking::pod_request(p, "ephemeral-storage"),
                    ),
                };
                Candidate {
                    uid: uid.clone(),
                    priority: ranking::priority(p),
                    request,
                    usage,
                }
            })
            .collect();
        ranking::rank(&mut candidates);
        let Some(victim) = candidates.first() else {
            tracing::info!("eviction manager: no pods to evict");
            return None;
        };
        let pod = pods.get(&victim.uid)?;
        let message = eviction_message(met, pod, summary);
        tracing::info!(
            pod = %crate::kuberuntime::pod_key(pod),
            message = %message,
            "evicting pod"
        );
        self.events
            .emit(pod, None, events::WARNING, REASON, message.clone());
        self.evictions.with_label_values(&[met.signal.name()]).inc();
        self.pods.end_pod(
            &victim.uid,
            PodEnd {
                grace: 0,
                reason: REASON.into(),
                message,
                disruption: true,
            },
        );
        Some(victim.uid.clone())
    }
}

/// Whether the pod tolerates `node.kubernetes.io/memory-pressure:NoSchedule`.
fn tolerates_memory_pressure(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.tolerations.iter().flatten())
        .any(|t| {
            let key_ok = match t.key.as_deref() {
                None | Some("") => t.operator.as_deref() == Some("Exists"),
                Some(k) => k == Pressure::Memory.taint(),
            };
            let effect_ok = matches!(t.effect.as_deref(), None | Some("" | "NoSchedule"));
            let value_ok = t.operator.as_deref() == Some("Exists")
                || t.value.as_deref().unwrap_or("").is_empty();
            key_ok && effect_ok && value_ok
        })
}

/// Upstream's eviction admission: under memory pressure only, pods that are not
/// BestEffort (or tolerate the memory-pressure taint) are admitted; under disk pressure
/// none is; critical pods always are.
pub fn admit(pressure: &NodePressure, pod: &Pod, is_static: bool) -> Result<(), (String, String)> {
    if pressure.is_empty() || ranking::is_critical(pod, is_static) {
        return Ok(());
    }
    if pressure.len() == 1 && pressure.contains(&Pressure::Memory) {
        let best_effort = crate::cm::qos_class(pod) == crate::cm::QosClass::BestEffort;
        if !best_effort || tolerates_memory_pressure(pod) {
            return Ok(());
        }
    }
    let names: Vec<&str> = pressure.iter().map(|p| p.condition()).collect();
    Err((
        REASON.to_owned(),
        format!("The node had condition: [{}]. ", names.join(" ")),
    ))
}

impl PodAdmitHandler for EvictionManager {
    fn admit(&self, pod: &Pod) -> Result<(), (String, String)> {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        admit(&self.pressure.borrow(), pod, self.pods.is_static(uid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::summary::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn quantities_as_upstream_prints_them() {
        assert_eq!(quantity(100 * 1024 * 1024), "100Mi");
        assert_eq!(quantity(3 * 1024 * 1024 * 1024), "3Gi");
        assert_eq!(quantity(1536), "2Ki");
        assert_eq!(quantity(17), "17");
    }

    #[test]
    fn observes_signals_and_words_the_message_as_upstream() {
        let summary = Summary {
            node: NodeStats {
                memory: Some(MemoryStats {
                    working_set_bytes: Some(900 * 1024 * 1024),
                    ..Default::default()
                }),
                rlimit: Some(RlimitStats {
                    maxpid: Some(32768),
                    curproc: Some(768),
                    ..Default::default()
                }),
                fs: Some(FsStats {
                    available_bytes: Some(10),
                    capacity_bytes: Some(100),
                    inodes_free: Some(5),
                    inodes: Some(50),
                    ..Default::default()
                }),
                ..Default::default()
            },
            pods: vec![PodStats {
                pod_ref: PodReference {
                    name: "p".into(),
                    namespace: "default".into(),
                    uid: "u1".into(),
                },
                containers: vec![ContainerStats {
                    name: "c".into(),
                    memory: Some(MemoryStats {
                        working_set_bytes: Some(20 * 1024 * 1024),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let obs = observe(&summary, 1024 * 1024 * 1024);
        assert_eq!(obs[&Signal::MemoryAvailable].available, 124 * 1024 * 1024);
        assert_eq!(obs[&Signal::NodeFsAvailable].capacity, 100);
        assert_eq!(obs[&Signal::NodeFsInodesFree].available, 5);
        assert!(!obs.contains_key(&Signal::ImageFsAvailable));
        assert_eq!(
            obs[&Signal::PidAvailable],
            Observation {
                available: 32000,
                capacity: 32768
            }
        );
        let hard = EvictionHard::parse("memory.available<200Mi").unwrap();
        let met = thresholds_met(&hard, &MinimumReclaim::default(), &obs, &[]);
        assert_eq!(met[0].signal, Signal::MemoryAvailable);
        let p = pod(
            serde_json::json!({"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"memory": "10Mi"}}}]}),
        );
        assert_eq!(
            eviction_message(&met[0], &p, &summary),
            "The node was low on resource: memory. Threshold quantity: 200Mi, available: 124Mi. \
             Container c was using 20Mi, request is 10Mi, has larger consumption of memory. "
        );
    }

    #[test]
    fn admission_under_pressure_as_upstream() {
        let best_effort = pod(serde_json::json!({"containers": [{"name": "c", "image": "i"}]}));
        let burstable = pod(
            serde_json::json!({"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"memory": "10Mi"}}}]}),
        );
        let tolerating = pod(
            serde_json::json!({"containers": [{"name": "c", "image": "i"}],
            "tolerations": [{"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"}]}),
        );
        let none = NodePressure::new();
        let memory = NodePressure::from([Pressure::Memory]);
        let disk = NodePressure::from([Pressure::Disk]);
        assert!(admit(&none, &best_effort, false).is_ok());
        let (reason, message) = admit(&memory, &best_effort, false).unwrap_err();
        assert_eq!(reason, "Evicted");
        assert_eq!(message, "The node had condition: [MemoryPressure]. ");
        assert!(admit(&memory, &burstable, false).is_ok());
        assert!(admit(&memory, &tolerating, false).is_ok());
        assert!(
            admit(&memory, &best_effort, true).is_ok(),
            "static pods are critical"
        );
        assert_eq!(
            admit(&disk, &burstable, false).unwrap_err().1,
            "The node had condition: [DiskPressure]. "
        );
    }
}
