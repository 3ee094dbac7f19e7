//! The running scheduler: informers feed the cache and the queue; one loop pops a pod,
//! runs its profile's framework, assumes the pod onto the chosen node and binds it in the
//! background; failures record why (event, PodScheduled condition) and requeue.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Node, ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::Client;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use crate::cache::Cache;
use crate::framework::runtime::Framework;
use crate::framework::{ClusterEvent, CycleState, NodeData, PodInfo, Snapshot};
use crate::metrics::Metrics;
use crate::preemption::{self, Outcome};
use crate::queue::{QueuedPod, SchedulingQueue};
use crate::schedule_one::{schedule_pod, Cursor, ScheduleError};

/// How many bindings may be in flight at once; more wait (back-pressure on the loop).
const MAX_CONCURRENT_BINDS: usize = 64;
/// Events waiting to be written; beyond this they are dropped, as upstream's broadcaster.
const EVENT_QUEUE: usize = 1000;

pub struct Shared {
    pub cache: Cache,
    pub queue: SchedulingQueue,
    /// Informers that have delivered their first full list.
    pub synced: HashSet<&'static str>,
}

/// Everything the informers, the loop and the binding tasks share.
pub struct Scheduler {
    client: Client,
    profiles: HashMap<String, Arc<Framework>>,
    pub shared: Arc<Mutex<Shared>>,
    wake: Notify,
    metrics: Metrics,
    events: mpsc::Sender<Event>,
    binds: Arc<Semaphore>,
    instance: String,
}

impl Scheduler {
    pub fn new(
        client: Client,
        frameworks: Vec<Framework>,
        metrics: Metrics,
        initial_backoff: Duration,
        max_backoff: Duration,
        instance: String,
    ) -> (Arc<Scheduler>, mpsc::Receiver<Event>) {
        let (events, event_rx) = mpsc::channel(EVENT_QUEUE);
        let scheduler = Scheduler {
            client,
            profiles: frameworks
                .into_iter()
                .map(|f| (f.scheduler_name.clone(), Arc::new(f)))
                .collect(),
            shared: Arc::new(Mutex::new(Shared {
                cache: Cache::default(),
                queue: SchedulingQueue::new(initial_backoff, max_backoff),
                synced: HashSet::new(),
            })),
            wake: Notify::new(),
            metrics,
            events,
            binds: Arc::new(Semaphore::new(MAX_CONCURRENT_BINDS)),
            instance,
        };
        (Arc::new(scheduler), event_rx)
    }

    /// Whether the pod, node and namespace informers have all listed once.
    pub fn synced(&self) -> bool {
        self.shared.lock().synced.len() == 3
    }

    fn responsible_for(&self, pod: &PodInfo) -> bool {
        self.profiles.contains_key(&pod.scheduler_name)
    }

    fn update_gauges(&self, shared: &Shared) {
        let (active, backoff, unschedulable, gated) = shared.queue.counts();
        let g = &self.metrics.pending_pods;
        g.with_label_values(&["active"]).set(active as i64);
        g.with_label_values(&["backoff"]).set(backoff as i64);
        g.with_label_values(&["unschedulable"])
            .set(unschedulable as i64);
        g.with_label_values(&["gated"]).set(gated as i64);
    }

    /// Moves unschedulable pods that `event` may help.
    fn on_cluster_event(&self, shared: &mut Shared, event: ClusterEvent) {
        let profiles = &self.profiles;
        shared
            .queue
            .move_on_event(event, Instant::now(), |queued: &QueuedPod, event| {
                profiles
                    .get(&queued.pod.scheduler_name)
                    .is_some_and(|f| f.event_helps(event, &queued.rejected_by))
            });
    }

    // ----- informers -----

    fn apply_pod(&self, shared: &mut Shared, pod: &Pod) {
        let info = Arc::new(PodInfo::from_pod(pod));
        if info.node_name.is_some() {
            shared.queue.delete(&info.uid);
            let was_assumed = shared.cache.is_assumed(&info.uid);
            let old_labels = shared.cache.pod_labels(&info.uid);
            shared.cache.set_pod(info.clone());
            let event = match old_labels {
                None => Some(ClusterEvent::AssignedPodAdd),
                Some(_) if was_assumed => None,
                Some(labels) if labels != info.labels => Some(ClusterEvent::AssignedPodUpdate),
                Some(_) => None,
            };
            if let Some(event) = event {
                self.on_cluster_event(shared, event);
            }
        } else if self.responsible_for(&info)
            && !info.terminating
            && !shared.cache.is_assumed(&info.uid)
        {
            shared.queue.add_or_update(info, Instant::now());
            self.wake.notify_one();
        } else {
            shared.queue.delete(&info.uid);
        }
    }

    fn delete_pod(&self, shared: &mut Shared, uid: &str) {
        shared.queue.delete(uid);
        if shared.cache.remove_pod(uid) {
            self.on_cluster_event(shared, ClusterEvent::AssignedPodDelete);
            self.wake.notify_one();
        }
    }

    fn apply_node(&self, shared: &mut Shared, node: &Node) {
        let events = shared.cache.set_node(NodeData::from_node(node));
        for event in events {
            self.on_cluster_event(shared, event);
        }
        self.wake.notify_one();
    }

    fn apply_namespace(&self, shared: &mut Shared, ns: &Namespace) {
        let name = ns.metadata.name.clone().unwrap_or_default();
        if shared
            .cache
            .set_namespace(name, ns.metadata.labels.clone().unwrap_or_default())
        {
            self.on_cluster_event(shared, ClusterEvent::NamespaceChange);
        }
    }

    /// Runs the pod informer until the stream ends (never, barring shutdown).
    pub async fn watch_pods(self: Arc<Self>) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let config =
            watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed");
        let mut seen: Option<HashSet<String>> = None;
        let mut stream = watcher(api, config).default_backoff().boxed();
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    warn!(error = %e, "pod watch failed; retrying");
                    continue;
                }
            };
            let mut shared = self.shared.lock();
            match event {
                watcher::Event::Init => seen = Some(HashSet::new()),
                watcher::Event::InitApply(pod) => {
                    if let (Some(seen), Some(uid)) = (seen.as_mut(), pod.metadata.uid.clone()) {
                        seen.insert(uid);
                    }
                    self.apply_pod(&mut shared, &pod);
                }
                watcher::Event::InitDone => {
                    // Whatever the relist did not return is gone.
                    if let Some(seen) = seen.take() {
                        let stale: Vec<String> = shared
                            .cache
                            .confirmed_pod_uids()
                            .into_iter()
                            .chain(shared.queue.uids())
                            .filter(|uid| !seen.contains(uid))
                            .collect();
                        for uid in stale {
                            self.delete_pod(&mut shared, &uid);
                        }
                    }
                    shared.synced.insert("pods");
                }
                watcher::Event::Apply(pod) => self.apply_pod(&mut shared, &pod),
                watcher::Event::Delete(pod) => {
                    if let Some(uid) = &pod.metadata.uid {
                        self.delete_pod(&mut shared, uid);
                    }
                }
            }
            self.update_gauges(&shared);
            self.metrics
                .cache_size
                .with_label_values(&["pods"])
                .set(shared.cache.num_pods() as i64);
        }
    }

    pub async fn watch_nodes(self: Arc<Self>) {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut seen: Option<HashSet<String>> = None;
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    warn!(error = %e, "node watch failed; retrying");
                    continue;
                }
            };
            let mut shared = self.shared.lock();
            match event {
                watcher::Event::Init => seen = Some(HashSet::new()),
                watcher::Event::InitApply(node) => {
                    if let Some(seen) = seen.as_mut() {
                        seen.insert(node.metadata.name.clone().unwrap_or_default());
                    }
                    self.apply_node(&mut shared, &node);
                }
                watcher::Event::InitDone => {
                    if let Some(seen) = seen.take() {
                        for name in shared.cache.node_names() {
                            if !seen.contains(&name) {
                                shared.cache.remove_node(&name);
                            }
                        }
                    }
                    shared.synced.insert("nodes");
                }
                watcher::Event::Apply(node) => self.apply_node(&mut shared, &node),
                watcher::Event::Delete(node) => shared
                    .cache
                    .remove_node(node.metadata.name.as_deref().unwrap_or("")),
            }
            self.metrics
                .cache_size
                .with_label_values(&["nodes"])
                .set(shared.cache.num_nodes() as i64);
        }
    }

    pub async fn watch_namespaces(self: Arc<Self>) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let mut seen: Option<HashSet<String>> = None;
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = stream.next().await {
            let Ok(event) = event else {
                continue;
            };
            let mut shared = self.shared.lock();
            match event {
                watcher::Event::Init => seen = Some(HashSet::new()),
                watcher::Event::InitApply(ns) => {
                    if let Some(seen) = seen.as_mut() {
                        seen.insert(ns.metadata.name.clone().unwrap_or_default());
                    }
                    self.apply_namespace(&mut shared, &ns);
                }
                watcher::Event::InitDone => {
                    if let Some(seen) = seen.take() {
                        for name in shared.cache.namespace_names() {
                            if !seen.contains(&name) {
                                shared.cache.remove_namespace(&name);
                            }
                        }
                    }
                    shared.synced.insert("namespaces");
                }
                watcher::Event::Apply(ns) => self.apply_namespace(&mut shared, &ns),
                watcher::Event::Delete(ns) => shared
                    .cache
                    .remove_namespace(ns.metadata.name.as_deref().unwrap_or("")),
            }
        }
    }

    /// Retries long-unschedulable pods (upstream flushes every 30 s).
    pub async fn flush_unschedulable_periodically(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            let mut shared = self.shared.lock();
            shared.queue.flush_unschedulable(Instant::now());
            self.update_gauges(&shared);
            drop(shared);
            self.wake.notify_one();
        }
    }

    // ----- the scheduling loop -----

    async fn next_pod(&self) -> QueuedPod {
        loop {
            let notified = self.wake.notified();
            let next_backoff = {
                let mut shared = self.shared.lock();
                if let Some(q) = shared.queue.pop(Instant::now()) {
                    self.update_gauges(&shared);
                    return q;
                }
                shared.queue.next_backoff_expiry()
            };
            match next_backoff {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Schedules pods until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let mut cursor = Cursor::default();
        let mut snapshot = Snapshot::default();
        loop {
            let queued = self.next_pod().await;
            let span = tracing::debug_span!("schedule", pod = %queued.pod.key());
            self.schedule_one(queued, &mut cursor, &mut snapshot)
                .instrument(span)
                .await;
        }
    }

    async fn schedule_one(
        self: &Arc<Self>,
        mut queued: QueuedPod,
        cursor: &mut Cursor,
        snapshot: &mut Snapshot,
    ) {
        let pod = queued.pod.clone();
        let Some(fwk) = self.profiles.get(&pod.scheduler_name).cloned() else {
            self.shared.lock().queue.done(&pod.uid);
            return;
        };
        let start = Instant::now();
        let (nominated, cycle) = {
            let mut shared = self.shared.lock();
            if pod.terminating || shared.cache.is_assumed(&pod.uid) {
                shared.queue.done(&pod.uid);
                return;
            }
            shared.cache.update_snapshot(snapshot);
            (shared.queue.nominated_pods(), shared.queue.scheduling_cycle)
        };
        let snapshot: &Snapshot = snapshot;
        let mut state = CycleState::default();
        let profile = fwk.scheduler_name.as_str();
        match schedule_pod(&fwk, &mut state, &pod, snapshot, &nominated, cursor) {
            Ok(result) => {
                let mut assumed = (*pod).clone();
                assumed.node_name = Some(result.node.clone());
                assumed.nominated_node_name = None;
                let assumed = Arc::new(assumed);
                {
                    let mut shared = self.shared.lock();
                    shared.cache.assume(assumed.clone());
                    shared.queue.done(&pod.uid);
                    self.update_gauges(&shared);
                }
                debug!(node = %result.node, evaluated = result.evaluated, feasible = result.feasible, "assumed");
                self.metrics
                    .schedule_attempts
                    .with_label_values(&["scheduled", profile])
                    .inc();
                self.metrics
                    .attempt_duration
                    .with_label_values(&["scheduled", profile])
                    .observe(start.elapsed().as_secs_f64());
                let permit = self
                    .binds
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("never closed");
                let this = self.clone();
                let span = tracing::debug_span!("bind", pod = %pod.key(), node = %result.node);
                tokio::spawn(
                    async move {
                        this.bind(assumed, queued).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            Err(ScheduleError::Fit(mut fit)) => {
                let mut nominated_node = None;
                if fwk.preemption && fit.num_all_nodes > 0 {
                    self.metrics.preemption_attempts.inc();
                    match preemption::preempt(
                        &fwk,
                        &state,
                        &pod,
                        snapshot,
                        &nominated,
                        &fit.diagnosis,
                    ) {
                        Outcome::Preempt(candidate) => {
                            self.metrics
                                .preemption_victims
                                .observe(candidate.victims.len() as f64);
                            nominated_node = Some(candidate.node.clone());
                            let this = self.clone();
                            let preemptor = pod.clone();
                            tokio::spawn(
                                async move { this.evict_victims(&preemptor, candidate).await },
                            );
                        }
                        Outcome::Failed(msg) => fit.diagnosis.post_filter_msg = Some(msg),
                    }
                }
                let message = fit.message();
                debug!(%message, "unschedulable");
                queued.rejected_by = std::mem::take(&mut fit.diagnosis.rejected_by);
                {
                    let mut shared = self.shared.lock();
                    let displaced = match &nominated_node {
                        Some(node) => {
                            let lower = shared.queue.clear_lower_nominations(node, pod.priority);
                            shared.queue.nominate(&pod, node);
                            lower
                        }
                        None => Vec::new(),
                    };
                    shared
                        .queue
                        .requeue_failed(queued, cycle, true, Instant::now());
                    self.update_gauges(&shared);
                    drop(shared);
                    for other in displaced {
                        self.clear_nomination(other);
                    }
                }
                self.metrics
                    .schedule_attempts
                    .with_label_values(&["unschedulable", profile])
                    .inc();
                self.metrics
                    .attempt_duration
                    .with_label_values(&["unschedulable", profile])
                    .observe(start.elapsed().as_secs_f64());
                self.record_failure(&pod, "Unschedulable", message, nominated_node);
            }
            Err(ScheduleError::Internal(message)) => {
                warn!(pod = %pod.key(), %message, "scheduling failed");
                {
                    let mut shared = self.shared.lock();
                    shared
                        .queue
                        .requeue_failed(queued, cycle, false, Instant::now());
                    self.update_gauges(&shared);
                }
                self.metrics
                    .schedule_attempts
                    .with_label_values(&["error", profile])
                    .inc();
                self.metrics
                    .attempt_duration
                    .with_label_values(&["error", profile])
                    .observe(start.elapsed().as_secs_f64());
                self.record_failure(&pod, "SchedulerError", message, None);
            }
        }
    }

    /// POST pods/binding; on failure forget the assumption and retry the pod after backoff.
    async fn bind(self: &Arc<Self>, pod: Arc<PodInfo>, queued: QueuedPod) {
        let node = pod.node_name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        let result = api
            .create_subresource::<_, serde_json::Value>(
                "binding",
                &pod.name,
                &PostParams::default(),
                &binding,
            )
            .await;
        match result {
            Ok(_) => {
                if let Some(first) = queued.initial_attempt {
                    self.metrics
                        .scheduling_sli
                        .with_label_values(&[&queued.attempts.min(15).to_string()])
                        .observe(first.elapsed().as_secs_f64());
                }
                self.emit(
                    &pod,
                    "Normal",
                    "Scheduled",
                    "Binding",
                    format!(
                        "Successfully assigned {}/{} to {node}",
                        pod.namespace, pod.name
                    ),
                );
            }
            Err(err) => {
                let code = match &err {
                    kube::Error::Api(status) => Some(status.code),
                    _ => None,
                };
                warn!(pod = %pod.key(), %node, error = %err, "binding failed");
                let mut shared = self.shared.lock();
                shared.cache.forget(&pod.uid);
                // Gone (404) or bound already (409): the informer brings the truth.
                if !matches!(code, Some(404) | Some(409)) {
                    let mut retry = queued;
                    retry.pod = Arc::new(PodInfo {
                        node_name: None,
                        ..(*pod).clone()
                    });
                    shared
                        .queue
                        .requeue_after_bind_failure(retry, Instant::now());
                }
                self.on_cluster_event(&mut shared, ClusterEvent::AssignedPodDelete);
                self.update_gauges(&shared);
                drop(shared);
                self.wake.notify_one();
                self.emit(
                    &pod,
                    "Warning",
                    "FailedScheduling",
                    "Scheduling",
                    format!("Binding rejected: {err}"),
                );
            }
        }
    }

    /// Deletes preemption victims, marking them with the DisruptionTarget condition first,
    /// as upstream.
    async fn evict_victims(
        self: &Arc<Self>,
        preemptor: &PodInfo,
        candidate: preemption::Candidate,
    ) {
        for victim in &candidate.victims {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &victim.namespace);
            let condition = json!({"status": {"conditions": [{
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "PreemptionByScheduler",
                "message": format!("{}: preempting to accommodate a higher priority pod", self.profile_of(preemptor)),
                "lastTransitionTime": Timestamp::now().to_string(),
            }]}});
            if let Err(e) = api
                .patch_status(
                    &victim.name,
                    &PatchParams::default(),
                    &Patch::Strategic(condition),
                )
                .await
            {
                debug!(victim = %victim.key(), error = %e, "could not mark the preemption victim");
            }
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(victim.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&victim.name, &params).await {
                Ok(_) => {
                    self.emit(
                        victim,
                        "Normal",
                        "Preempted",
                        "Preempting",
                        format!(
                            "Preempted by pod {} on node {}",
                            preemptor.uid, candidate.node
                        ),
                    );
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    warn!(victim = %victim.key(), error = %e, "deleting a preemption victim failed")
                }
            }
        }
        info!(preemptor = %preemptor.key(), node = %candidate.node, victims = candidate.victims.len(), "preempted");
    }

    /// Clears a pod's `status.nominatedNodeName` (a higher-priority preemptor took the
    /// node it was waiting for).
    fn clear_nomination(self: &Arc<Self>, pod: Arc<PodInfo>) {
        let this = self.clone();
        tokio::spawn(async move {
            let api: Api<Pod> = Api::namespaced(this.client.clone(), &pod.namespace);
            let patch = json!({"status": {"nominatedNodeName": null}});
            if let Err(e) = api
                .patch_status(&pod.name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                debug!(pod = %pod.key(), error = %e, "clearing the nominated node failed");
            }
        });
    }

    fn profile_of(&self, pod: &PodInfo) -> String {
        pod.scheduler_name.clone()
    }

    /// FailedScheduling event and the PodScheduled=False condition (with the nominated node).
    fn record_failure(
        self: &Arc<Self>,
        pod: &Arc<PodInfo>,
        reason: &str,
        message: String,
        nominated: Option<String>,
    ) {
        self.emit(
            pod,
            "Warning",
            "FailedScheduling",
            "Scheduling",
            message.clone(),
        );
        let this = self.clone();
        let pod = pod.clone();
        let reason = reason.to_string();
        tokio::spawn(async move {
            let api: Api<Pod> = Api::namespaced(this.client.clone(), &pod.namespace);
            let mut status = json!({"conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": reason,
                "message": message,
                "lastProbeTime": null,
                "lastTransitionTime": Timestamp::now().to_string(),
            }]});
            if let Some(node) = nominated {
                status["nominatedNodeName"] = json!(node);
            }
            let patch = json!({"status": status});
            if let Err(e) = api
                .patch_status(&pod.name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
            {
                debug!(pod = %pod.key(), error = %e, "updating the PodScheduled condition failed");
            }
        });
    }

    /// Queues an events.k8s.io/v1 Event about a pod; dropped if the writer is backed up.
    fn emit(&self, pod: &PodInfo, type_: &str, reason: &str, action: &str, note: String) {
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", pod.name, now.as_nanosecond())),
                namespace: Some(pod.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(action.into()),
            reason: Some(reason.into()),
            note: Some(note.chars().take(1024).collect()),
            type_: Some(type_.into()),
            reporting_controller: Some(crate::DEFAULT_SCHEDULER_NAME.into()),
            reporting_instance: Some(self.instance.clone()),
            regarding: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name.clone()),
                namespace: Some(pod.namespace.clone()),
                uid: Some(pod.uid.clone()),
                resource_version: Some(pod.resource_version.clone()),
                ..ObjectReference::default()
            }),
            ..Event::default()
        };
        if self.events.try_send(event).is_err() {
            debug!(pod = %pod.key(), %reason, "event queue full; event dropped");
        }
    }
}

/// Writes queued events, a few at a time.
pub async fn write_events(client: Client, rx: mpsc::Receiver<Event>) {
    tokio_stream_from(rx)
        .map(|event| {
            let client = client.clone();
            async move {
                let ns = event
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                let api: Api<Event> = Api::namespaced(client, &ns);
                if let Err(e) = api.create(&PostParams::default(), &event).await {
                    debug!(error = %e, "writing an event failed");
                }
            }
        })
        .buffer_unordered(8)
        .for_each(|_| async {})
        .await;
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
