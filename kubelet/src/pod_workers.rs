//! The pods bound to this node and one worker per pod (upstream `pod_workers.go`, the
//! pod config source from the apiserver, and the relisting `pleg`): a kube-runtime
//! reflector over pods with `spec.nodeName=<node>` feeds workers keyed by pod uid; each
//! worker syncs its pod through [`KubeRuntime`] and writes its status, stops it when it
//! is deleted and then removes it from the API (the kubelet finalises graceful deletion).
//! A relist of the runtime every second wakes the workers whose containers changed
//! (containerd 1.6 has no container events) and removes what belongs to no pod.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::Instrument;

use component_base::shutdown::Shutdown;

use crate::app::CgroupDriver;
use crate::cri::{api, ImageService, RuntimeService};
use crate::kuberuntime::{labels, pod_key, KubeRuntime, RuntimeSettings, WorkerState};
use crate::metrics::Metrics;
use crate::status;

/// How often the runtime is relisted (upstream's PLEG relist period).
pub const RELIST_PERIOD: Duration = Duration::from_secs(1);
/// Housekeeping runs every this many relists (upstream's is every 2 s; ours is lighter).
const HOUSEKEEPING_ROUNDS: u64 = 10;
/// How often a worker syncs a pod with no news (upstream's `--sync-frequency`).
pub const SYNC_FREQUENCY: Duration = Duration::from_secs(60);

/// What the pod manager needs besides the clients.
#[derive(Clone, Debug)]
pub struct PodManagerSettings {
    pub node_name: String,
    /// `--pod-manifest-path`: static pods.
    pub pod_manifest_path: Option<PathBuf>,
    /// How often the manifests are read (`fileCheckFrequency`).
    pub file_check_frequency: Duration,
    pub root_dir: PathBuf,
    pub node_ip: IpAddr,
    pub pod_infra_container_image: String,
    pub pod_logs_dir: PathBuf,
    pub cgroup_driver: CgroupDriver,
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    pub resolv_conf: Option<PathBuf>,
    /// `--sync-frequency`: how often volumes with changing sources are refreshed.
    pub sync_frequency: Duration,
}

struct Worker {
    notify: Arc<Notify>,
    /// [`sync_inputs`] of the pod when last seen: an update that changes nothing a sync
    /// reads (the status the kubelet itself just wrote, mostly) wakes no one.
    seen: u64,
    /// Woken by those other updates: the worker only checks that the API still has the
    /// status it wrote.
    status_changed: Arc<Notify>,
}

/// The status a worker last wrote: the uid of the object it went to (a static pod's
/// mirror can be replaced) and the resource version the write made.
struct Written {
    uid: String,
    status: PodStatus,
    resource_version: Option<u64>,
}

impl Written {
    /// The API's object is newer than this write and another writer changed what the
    /// kubelet owns in its status (the node lifecycle controller marks a cut-off node's
    /// pods not ready): the status to write again, as upstream's status manager
    /// reconciles. A store lagging behind the write is not newer.
    fn overwritten(&self, target: &Pod) -> Option<PodStatus> {
        let newer = match (resource_version(target), self.resource_version) {
            (Some(api), Some(written)) => api > written,
            _ => true,
        };
        if !newer || target.metadata.uid.as_deref() != Some(self.uid.as_str()) {
            return None;
        }
        let api = target.status.clone().unwrap_or_default();
        let again = status::reconciled(&api, &self.status);
        // Compared as sent: times travel at whole seconds.
        let json = |s: &PodStatus| serde_json::to_value(s).ok();
        (json(&again) != json(&api)).then_some(again)
    }
}

/// An object's resourceVersion as a number, to order the kubelet's writes and the store.
fn resource_version(pod: &Pod) -> Option<u64> {
    pod.metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
}

/// A digest of what a pod's sync reads from the object: its spec, labels and
/// annotations (downward API), deletion, phase, and the conditions of its readiness gates
/// (others' conditions that decide Ready).
fn sync_inputs(pod: &Pod) -> u64 {
    use std::hash::{Hash, Hasher};
    let status = pod.status.as_ref();
    let gates: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.readiness_gates.iter().flatten())
        .map(|g| g.condition_type.as_str())
        .collect();
    let gate_conditions: Vec<_> = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| gates.contains(&c.type_.as_str()))
        .map(|c| (c.type_.as_str(), c.status.as_str()))
        .collect();
    let inputs = (
        &pod.spec,
        &pod.metadata.labels,
        &pod.metadata.annotations,
        &pod.metadata.deletion_timestamp,
        pod.metadata.deletion_grace_period_seconds,
        status.and_then(|s| s.phase.as_deref()),
        gate_conditions,
    );
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(&inputs)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

/// A pod the kubelet itself ends — evicted, or rejected at admission: its containers are
/// killed with `grace` seconds and it is reported Failed with this reason and message
/// (upstream's `killPodFunc` with a status override, and `rejectPod`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEnd {
    pub grace: i64,
    pub reason: String,
    pub message: String,
    /// Add the DisruptionTarget condition (reason TerminationByKubelet), as evictions do.
    pub disruption: bool,
}

/// Decides whether a new pod may run here (upstream's `PodAdmitHandler`); the reason and
/// message of a rejection.
pub trait PodAdmitHandler: Send + Sync {
    fn admit(&self, pod: &Pod) -> Result<(), (String, String)>;
}

/// The node's pods and their workers.
pub struct PodManager {
    /// The node's pods as last seen in the API.
    store: Store<Pod>,
    /// Static pods from the manifest path, by uid.
    static_pods: Mutex<HashMap<String, Arc<Pod>>>,
    pod_manifest_path: Option<PathBuf>,
    file_check_frequency: Duration,
    /// The Node's uid, owner of the mirror pods.
    node_uid: Mutex<Option<String>>,
    /// The manifests were read once (or there are none): orphans can be told apart.
    static_read: AtomicBool,
    writer: Mutex<Option<reflector::store::Writer<Pod>>>,
    client: Client,
    metrics: Metrics,
    runtime: KubeRuntime,
    node_name: String,
    host_ip: IpAddr,
    workers: Mutex<HashMap<String, Worker>>,
    /// Pods being removed that no longer have a worker (orphans).
    cleaning: Mutex<HashSet<String>>,
    /// Pods this kubelet saw in the runtime: the only ones whose cgroups housekeeping
    /// may remove (other kubelets on the host have their own).
    seen: Mutex<HashSet<String>>,
    synced: AtomicBool,
    /// Pods the kubelet ended (evicted, rejected), by uid, until their worker ends.
    ended: Mutex<HashMap<String, PodEnd>>,
    /// Admission checks for new pods.
    admit_handlers: Mutex<Vec<Arc<dyn PodAdmitHandler>>>,
}

impl PodManager {
    pub fn new(
        client: Client,
        events: crate::events::Recorder,
        metrics: Metrics,
        runtime: Arc<dyn RuntimeService>,
        images: Arc<dyn ImageService>,
        settings: PodManagerSettings,
    ) -> Arc<PodManager> {
        let (store, writer) = reflector::store::<Pod>();
        Arc::new(PodManager {
            store,
            static_pods: Mutex::new(HashMap::new()),
            pod_manifest_path: settings.pod_manifest_path.clone(),
            file_check_frequency: settings.file_check_frequency,
            node_uid: Mutex::new(None),
            static_read: AtomicBool::new(settings.pod_manifest_path.is_none()),
            writer: Mutex::new(Some(writer)),
            runtime: KubeRuntime {
                volumes: Arc::new(crate::volumes::VolumeManager::new(
                    client.clone(),
                    settings.root_dir.clone(),
                    settings.node_name.clone(),
                    settings.sync_frequency,
                )),
                client: client.clone(),
                events,
                runtime,
                images,
                settings: Arc::new(RuntimeSettings {
                    node_name: settings.node_name.clone(),
                    root_dir: settings.root_dir,
                    host_ip: settings.node_ip,
                    pod_logs_dir: settings.pod_logs_dir,
                    cgroup_driver: settings.cgroup_driver,
                    cluster_dns: settings.cluster_dns,
                    cluster_domain: settings.cluster_domain,
                    resolv_conf: settings.resolv_conf,
                }),
            },
            client,
            metrics,
            node_name: settings.node_name,
            host_ip: settings.node_ip,
            workers: Mutex::new(HashMap::new()),
            cleaning: Mutex::new(HashSet::new()),
            seen: Mutex::new(HashSet::new()),
            synced: AtomicBool::new(false),
            ended: Mutex::new(HashMap::new()),
            admit_handlers: Mutex::new(Vec::new()),
        })
    }

    /// Records the Node's uid (mirror pods are owned by the Node).
    pub fn set_node_uid(&self, uid: Option<String>) {
        *self.node_uid.lock() = uid;
    }

    /// The pod a worker runs: the static pod of that uid, else the API's pod if it still
    /// has that uid.
    fn lookup(&self, key: &ObjectRef<Pod>, uid: &str) -> Option<Arc<Pod>> {
        if let Some(p) = self.static_pods.lock().get(uid) {
            return Some(p.clone());
        }
        self.store
            .get(key)
            .filter(|p| p.metadata.uid.as_deref() == Some(uid))
    }

    /// Reads the manifests, then makes the mirror pods match; sends on `changed` when the
    /// set of static pods changed.
    async fn sync_static_pods(&self, changed: &tokio::sync::mpsc::Sender<()>) {
        let Some(path) = &self.pod_manifest_path else {
            return;
        };
        let pods = crate::static_pods::read_manifests(path, &self.node_name);
        let fresh: HashMap<String, Arc<Pod>> = pods
            .into_iter()
            .filter_map(|p| Some((p.metadata.uid.clone()?, Arc::new(p))))
            .collect();
        let differs = {
            let mut current = self.static_pods.lock();
            let differs =
                current.len() != fresh.len() || fresh.keys().any(|k| !current.contains_key(k));
            if differs {
                current.clone_from(&fresh);
            }
            differs
        };
        if differs {
            let _ = changed.try_send(());
        }
        self.static_read.store(true, Ordering::SeqCst);
        // Mirror pods: one per static pod with its hash; none for pods that are gone.
        let node_uid = self.node_uid.lock().clone();
        for (uid, pod) in &fresh {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let existing = self.store.get(&ObjectRef::new(name).within(namespace));
            let stale = existing.as_ref().is_some_and(|m| {
                crate::static_pods::mirror_hash(m) != Some(uid.as_str())
                    || m.metadata.deletion_timestamp.is_some()
            });
            if stale {
                let m = existing.as_ref().and_then(|m| m.metadata.uid.clone());
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: m,
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                let _ = api.delete(name, &params).await;
            } else if existing.is_none() {
                let mirror = crate::static_pods::mirror_of(pod, node_uid.as_deref());
                match api.create(&PostParams::default(), &mirror).await {
                    Ok(_) => tracing::info!(pod = %pod_key(pod), "created mirror pod"),
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => {
                        tracing::warn!(pod = %pod_key(pod), error = %e, "failed to create mirror pod")
                    }
                }
            }
        }
        if self.synced() {
            for m in self.store.state() {
                let Some(hash) = crate::static_pods::mirror_hash(&m) else {
                    continue;
                };
                if !fresh.contains_key(hash) && m.metadata.deletion_timestamp.is_none() {
                    let api: Api<Pod> = Api::namespaced(
                        self.client.clone(),
                        m.metadata.namespace.as_deref().unwrap_or("default"),
                    );
                    let params = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(Preconditions {
                            uid: m.metadata.uid.clone(),
                            resource_version: None,
                        }),
                        ..DeleteParams::default()
                    };
                    let _ = api
                        .delete(m.metadata.name.as_deref().unwrap_or_default(), &params)
                        .await;
                }
            }
        }
    }

    /// The pod `namespace/name` bound to this node.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        self.store.get(&ObjectRef::new(name).within(namespace))
    }

    /// Every pod bound to this node.
    pub fn pods(&self) -> Vec<Arc<Pod>> {
        self.store.state()
    }

    /// Whether `uid` is a static pod from the manifest path.
    pub fn is_static(&self, uid: &str) -> bool {
        self.static_pods.lock().contains_key(uid)
    }

    /// Ends the pod `uid` as `end` says: its worker kills it and reports it Failed.
    pub fn end_pod(&self, uid: &str, end: PodEnd) {
        self.ended.lock().insert(uid.to_owned(), end);
        self.notify(uid);
    }

    /// Whether the kubelet ended the pod `uid` (evicted or rejected it).
    pub fn is_ended(&self, uid: &str) -> bool {
        self.ended.lock().contains_key(uid)
    }

    /// Adds an admission check for new pods.
    pub fn add_admit_handler(&self, handler: Arc<dyn PodAdmitHandler>) {
        self.admit_handlers.lock().push(handler);
    }

    /// Admits a pod that has not run yet; a rejection ends it as upstream's `rejectPod`.
    fn admit(&self, pod: &Pod, uid: &str) {
        let never_ran = pod.status.as_ref().is_none_or(|s| {
            matches!(s.phase.as_deref(), None | Some("Pending"))
                && s.container_statuses
                    .iter()
                    .flatten()
                    .all(|c| c.container_id.is_none())
        });
        if !never_ran {
            return;
        }
        let handlers = self.admit_handlers.lock().clone();
        for h in handlers {
            if let Err((reason, message)) = h.admit(pod) {
                tracing::info!(reason = %reason, message = %message, "pod rejected at admission");
                self.runtime.events.emit(
                    pod,
                    None,
                    crate::events::WARNING,
                    &reason,
                    message.clone(),
                );
                self.ended.lock().insert(
                    uid.to_owned(),
                    PodEnd {
                        grace: 0,
                        reason,
                        message: format!("Pod was rejected: {message}"),
                        disruption: false,
                    },
                );
                return;
            }
        }
    }

    /// The runtime side of the pods.
    pub fn runtime(&self) -> &KubeRuntime {
        &self.runtime
    }

    /// Whether the first list of the node's pods arrived.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    /// Watches the node's pods and runs them until shutdown. Pods keep running when the
    /// kubelet stops, as upstream's.
    pub async fn run(self: Arc<Self>, mut shutdown: Shutdown) {
        let Some(writer) = self.writer.lock().take() else {
            tracing::error!("the pod manager runs once");
            return;
        };
        let reader = self.store.clone();
        let api: Api<Pod> = Api::all(self.client.clone());
        let config =
            watcher::Config::default().fields(&format!("spec.nodeName={}", self.node_name));
        // Managed fields are never read here: not keeping them saves memory per pod.
        let pods = watcher::watcher(api, config).modify(|p| p.metadata.managed_fields = None);
        let mut events = reflector::reflector(writer, pods).boxed();
        let mut tasks = JoinSet::new();
        tasks.spawn(
            self.clone()
                .relist(reader.clone(), shutdown.clone())
                .instrument(tracing::info_span!("pleg")),
        );
        let (static_tx, mut static_rx) = tokio::sync::mpsc::channel::<()>(1);
        if self.pod_manifest_path.is_some() {
            let this = self.clone();
            let mut stop = shutdown.clone();
            tasks.spawn(
                async move {
                    loop {
                        this.sync_static_pods(&static_tx).await;
                        tokio::select! {
                            () = stop.signaled() => return,
                            () = tokio::time::sleep(this.file_check_frequency) => {}
                        }
                    }
                }
                .instrument(tracing::info_span!("static-pods")),
            );
        }
        loop {
            let event = tokio::select! {
                () = shutdown.signaled() => break,
                Some(()) = static_rx.recv() => {
                    let statics: Vec<Arc<Pod>> = self.static_pods.lock().values().cloned().collect();
                    for p in statics {
                        self.ensure_worker(&p, &mut tasks, &shutdown);
                    }
                    // Workers of static pods that went away find out.
                    for w in self.workers.lock().values() {
                        w.notify.notify_one();
                    }
                    continue;
                }
                e = events.next() => e,
            };
            match event {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "pod watch failed, retrying");
                    tokio::select! {
                        () = shutdown.signaled() => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Some(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                    self.ensure_worker(&pod, &mut tasks, &shutdown);
                }
                Some(Ok(watcher::Event::Delete(pod))) => {
                    if let Some(uid) = &pod.metadata.uid {
                        self.notify(uid);
                    }
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    self.synced.store(true, Ordering::SeqCst);
                    // Pods deleted while the watch was down: their workers find out now.
                    for w in self.workers.lock().values() {
                        w.notify.notify_one();
                    }
                }
                Some(Ok(watcher::Event::Init)) => {}
            }
            // Reap finished workers so the set does not grow.
            while tasks.try_join_next().is_some() {}
        }
        tasks.shutdown().await;
    }

    fn notify(&self, uid: &str) {
        if let Some(w) = self.workers.lock().get(uid) {
            w.notify.notify_one();
        }
    }

    fn ensure_worker(self: &Arc<Self>, pod: &Pod, tasks: &mut JoinSet<()>, shutdown: &Shutdown) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        // A mirror pod only shows a static pod: its worker is the static pod's, which
        // writes the (new) mirror's status.
        if let Some(hash) = crate::static_pods::mirror_hash(pod) {
            self.notify(hash);
            return;
        }
        let seen = sync_inputs(pod);
        let mut workers = self.workers.lock();
        if let Some(w) = workers.get_mut(&uid) {
            if w.seen == seen {
                w.status_changed.notify_one();
            } else {
                w.seen = seen;
                w.notify.notify_one();
            }
            return;
        }
        let notify = Arc::new(Notify::new());
        let status_changed = Arc::new(Notify::new());
        workers.insert(
            uid.clone(),
            Worker {
                notify: notify.clone(),
                seen,
                status_changed: status_changed.clone(),
            },
        );
        let key = ObjectRef::from_obj(pod);
        let span = tracing::info_span!("pod-worker", pod = %pod_key(pod));
        tasks.spawn(
            self.clone()
                .work(key, uid, notify, status_changed, shutdown.clone())
                .instrument(span),
        );
    }

    /// One pod's worker: sync on news, on a back-off ending, or every SYNC_FREQUENCY.
    async fn work(
        self: Arc<Self>,
        key: ObjectRef<Pod>,
        uid: String,
        notify: Arc<Notify>,
        status_changed: Arc<Notify>,
        mut shutdown: Shutdown,
    ) {
        let mut ws = WorkerState::default();
        let mut last: Option<Written> = None;
        // Until the pod first runs: when this worker first saw it.
        let mut first_seen = Some(Instant::now());
        let mut admitted = false;
        loop {
            let pod = self.lookup(&key, &uid);
            let mut wake = None;
            if let Some(p) = pod
                .as_deref()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
            {
                if !admitted {
                    admitted = true;
                    self.admit(p, &uid);
                }
            }
            match pod {
                None if self.synced() => {
                    // Gone from the API without us (force deletion): clean up and end.
                    if let Err(e) = self.runtime.kill_and_remove(&uid, None, 2).await {
                        tracing::warn!(error = %e, "failed to remove pod, will retry");
                        wake = Some(Instant::now() + Duration::from_secs(2));
                    } else {
                        self.workers.lock().remove(&uid);
                        self.ended.lock().remove(&uid);
                        return;
                    }
                }
                None => {}
                Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                    wake = Some(self.terminate(&pod, &uid).await);
                }
                Some(pod) if self.is_ended(&uid) => {
                    let end = self.ended.lock().get(&uid).cloned();
                    match self.runtime.state(&uid).await {
                        Ok(state) => {
                            let grace = end.as_ref().map_or(0, |e| e.grace);
                            self.runtime.stop(&state, Some(&*pod), grace).await;
                            wake = self.report(&pod, &ws, &mut last, end.as_ref()).await;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "reading pod state, will retry");
                            wake = Some(Instant::now() + Duration::from_secs(2));
                        }
                    }
                }
                Some(pod) => {
                    wake = match self.runtime.sync_pod(&pod, &mut ws).await {
                        Ok(w) => w,
                        Err(e) => {
                            tracing::warn!(error = %e, "error syncing pod, will retry");
                            Some(Instant::now() + Duration::from_secs(2))
                        }
                    };
                    let settle = self.report(&pod, &ws, &mut last, None).await;
                    wake = wake.into_iter().chain(settle).min();
                    let running = last
                        .as_ref()
                        .is_some_and(|w| w.status.phase.as_deref() == Some("Running"));
                    if running {
                        if let Some(seen) = first_seen.take() {
                            self.metrics
                                .pod_start_duration
                                .observe(seen.elapsed().as_secs_f64());
                        }
                    }
                }
            }
            let deadline = wake.map_or(Instant::now() + SYNC_FREQUENCY, |w| {
                w.min(Instant::now() + SYNC_FREQUENCY)
            });
            loop {
                tokio::select! {
                    () = shutdown.signaled() => return,
                    () = notify.notified() => break,
                    () = tokio::time::sleep_until(deadline.into()) => break,
                    () = status_changed.notified() => self.reconcile(&key, &uid, &mut last).await,
                }
            }
        }
    }

    /// Writes again the status this worker last wrote when another writer changed it.
    async fn reconcile(&self, key: &ObjectRef<Pod>, uid: &str, last: &mut Option<Written>) {
        let Some(pod) = self.lookup(key, uid) else {
            return;
        };
        let Some(target) = self.status_target(&pod) else {
            return;
        };
        if let Some(again) = last.as_ref().and_then(|w| w.overwritten(&target)) {
            tracing::info!("another writer changed the pod's status; writing it again");
            self.write_status(&pod, &target, again, last).await;
        }
    }

    /// The object a pod's status goes to: the pod, or a static pod's mirror once there
    /// is one.
    fn status_target(&self, pod: &Arc<Pod>) -> Option<Arc<Pod>> {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        if !self.static_pods.lock().contains_key(uid) {
            return Some(pod.clone());
        }
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        self.store
            .get(&ObjectRef::new(name).within(namespace))
            .filter(|m| crate::static_pods::mirror_hash(m) == Some(uid))
    }

    /// Patches `target`'s status into `new`, sending only what differs; records the
    /// write in `last`.
    async fn write_status(
        &self,
        pod: &Pod,
        target: &Pod,
        new: PodStatus,
        last: &mut Option<Written>,
    ) {
        let target_uid = target.metadata.uid.clone().unwrap_or_default();
        let Ok(new_value) = serde_json::to_value(&new) else {
            return;
        };
        let old_value =
            serde_json::to_value(target.status.clone().unwrap_or_default()).unwrap_or(Value::Null);
        let Some(diff) = status::merge_diff(&old_value, &new_value) else {
            *last = Some(Written {
                uid: target_uid,
                status: new,
                resource_version: resource_version(target),
            });
            return;
        };
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let patch = serde_json::json!({ "status": diff });
        match api
            .patch_status(
                pod.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(written) => {
                *last = Some(Written {
                    uid: target_uid,
                    status: new,
                    resource_version: resource_version(&written),
                });
            }
            Err(e) => tracing::warn!(error = %e, "failed to update pod status"),
        }
    }

    /// Stops a pod being deleted with its grace period, removes it from the runtime and
    /// then from the API; when to look again if the API still has it.
    async fn terminate(&self, pod: &Pod, uid: &str) -> Instant {
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .or(pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30);
        if let Err(e) = self
            .runtime
            .kill_and_remove(uid, Some(pod), grace.max(0))
            .await
        {
            tracing::warn!(error = %e, "failed to stop pod, will retry");
            return Instant::now() + Duration::from_secs(2);
        }
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api
            .delete(pod.metadata.name.as_deref().unwrap_or_default(), &params)
            .await
        {
            Ok(_) => tracing::info!("pod stopped and removed from the API"),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => tracing::warn!(error = %e, "failed to delete pod, will retry"),
        }
        Instant::now() + Duration::from_secs(5)
    }

    /// Writes the pod's status when it changed; `end` makes it Failed as the kubelet
    /// ended it. Returns when to report again because a termination message read from a
    /// log may still grow.
    async fn report(
        &self,
        pod: &Arc<Pod>,
        ws: &WorkerState,
        last: &mut Option<Written>,
        end: Option<&PodEnd>,
    ) -> Option<Instant> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let target = self.status_target(pod)?;
        let state = match self.runtime.state(&uid).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "reading pod state");
                return None;
            }
        };
        let settle = state.messages_settle_at();
        // What this worker last wrote is newer than a store that has not seen it yet.
        if last
            .as_ref()
            .is_some_and(|w| Some(w.uid.as_str()) != target.metadata.uid.as_deref())
        {
            *last = None;
        }
        let previous = last.as_ref().map(|w| &w.status).or(target.status.as_ref());
        let new = status::generate(
            pod,
            previous,
            &state,
            &ws.reasons,
            &ws.probes,
            self.host_ip,
            Time(jiff::Timestamp::now()),
        );
        let new = match end {
            Some(e) => status::ended(new, &e.reason, &e.message, e.disruption, previous),
            None => new,
        };
        let new = match last.as_ref().filter(|w| w.status == new) {
            Some(w) => match w.overwritten(&target) {
                Some(again) => again,
                None => return settle,
            },
            None => new,
        };
        self.write_status(pod, &target, new, last).await;
        settle
    }

    /// The relisting pod lifecycle event generator.
    async fn relist(self: Arc<Self>, store: Store<Pod>, mut shutdown: Shutdown) {
        let mut previous: HashMap<String, (String, i32)> = HashMap::new();
        let mut round: u64 = 0;
        loop {
            match self.relist_once(&store, &previous).await {
                Ok(current) => previous = current,
                Err(e) => tracing::warn!(error = %e, "relisting the runtime"),
            }
            round += 1;
            if round.is_multiple_of(HOUSEKEEPING_ROUNDS) {
                self.remove_orphaned_cgroups(&store, &previous);
            }
            tokio::select! {
                () = shutdown.signaled() => return,
                () = tokio::time::sleep(RELIST_PERIOD) => {}
            }
        }
    }

    /// Housekeeping: pod cgroups left behind by pods that are gone (their removal can
    /// race the shim leaving them).
    fn remove_orphaned_cgroups(
        &self,
        store: &Store<Pod>,
        in_runtime: &HashMap<String, (String, i32)>,
    ) {
        if !self.synced() || !self.static_read.load(Ordering::SeqCst) {
            return;
        }
        let driver = self.runtime.settings.cgroup_driver;
        let mut known: HashSet<String> = store
            .state()
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        known.extend(self.static_pods.lock().keys().cloned());
        known.extend(in_runtime.values().map(|(uid, _)| uid.clone()));
        let on_host = crate::cm::pod_cgroup_uids(driver);
        let gone: Vec<String> = self
            .seen
            .lock()
            .iter()
            .filter(|uid| !known.contains(*uid) && !self.workers.lock().contains_key(*uid))
            .cloned()
            .collect();
        for uid in gone {
            if !on_host.contains(&uid) || crate::cm::remove_pod_cgroups(driver, &uid) {
                self.seen.lock().remove(&uid);
            }
        }
    }

    async fn relist_once(
        self: &Arc<Self>,
        store: &Store<Pod>,
        previous: &HashMap<String, (String, i32)>,
    ) -> crate::cri::Result<HashMap<String, (String, i32)>> {
        let rt = &self.runtime.runtime;
        let mut current = HashMap::new();
        let mut by_state: HashMap<&'static str, i64> = HashMap::new();
        for c in rt.list_containers(None).await? {
            let state = match c.state() {
                api::ContainerState::ContainerRunning => "running",
                api::ContainerState::ContainerExited => "exited",
                api::ContainerState::ContainerCreated => "created",
                api::ContainerState::ContainerUnknown => "unknown",
            };
            *by_state.entry(state).or_default() += 1;
            if let Some(uid) = c.labels.get(labels::POD_UID) {
                current.insert(c.id, (uid.clone(), c.state));
            }
        }
        for state in ["running", "exited", "created", "unknown"] {
            self.metrics
                .running_containers
                .with_label_values(&[state])
                .set(by_state.get(state).copied().unwrap_or(0));
        }
        let mut ready_sandboxes = 0;
        for s in rt.list_pod_sandbox(None).await? {
            if s.state() == api::PodSandboxState::SandboxReady {
                ready_sandboxes += 1;
            }
            if let Some(uid) = s.labels.get(labels::POD_UID) {
                current.insert(s.id, (uid.clone(), 100 + s.state));
            }
        }
        self.metrics.running_pods.set(ready_sandboxes);
        self.seen
            .lock()
            .extend(current.values().map(|(uid, _)| uid.clone()));
        let mut changed: HashSet<&str> = HashSet::new();
        for (id, (uid, state)) in &current {
            if previous.get(id).is_none_or(|(_, before)| before != state) {
                changed.insert(uid);
            }
        }
        for (id, (uid, _)) in previous {
            if !current.contains_key(id) {
                changed.insert(uid);
            }
        }
        for uid in &changed {
            self.notify(uid);
        }
        if self.synced() && self.static_read.load(Ordering::SeqCst) {
            let mut known: HashSet<String> = store
                .state()
                .iter()
                .filter_map(|p| p.metadata.uid.clone())
                .collect();
            known.extend(self.static_pods.lock().keys().cloned());
            let orphans: HashSet<String> = current
                .values()
                .map(|(uid, _)| uid.clone())
                .filter(|uid| !known.contains(uid) && !self.workers.lock().contains_key(uid))
                .collect();
            for uid in orphans {
                if !self.cleaning.lock().insert(uid.clone()) {
                    continue;
                }
                let this = self.clone();
                tokio::spawn(
                    async move {
                        tracing::info!(uid = %uid, "removing the containers of a pod that is gone");
                        if let Err(e) = this.runtime.kill_and_remove(&uid, None, 2).await {
                            tracing::warn!(uid = %uid, error = %e, "failed to remove orphaned pod");
                        }
                        this.cleaning.lock().remove(&uid);
                    }
                    .instrument(tracing::info_span!("orphan-cleanup")),
                );
            }
        }
        Ok(current)
    }
}
