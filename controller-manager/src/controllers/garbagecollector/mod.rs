//! garbagecollector: deletes objects whose owners are gone (background propagation and
//! dangling references), deletes dependents before an owner deleted in the foreground
//! (those with blockOwnerDeletion hold it until they are gone), and removes references
//! to an owner deleted with orphaning — then lifts the owner's finalizer (upstream's
//! garbage collector).
//!
//! It is the one controller over every kind: the graph is built from metadata-only
//! watches of each resource discovery lists with list, watch and delete, found again
//! every 30 s so new kinds join. Decisions use live reads, never only the graph: an
//! owner is declared absent after a GET says so (upstream's guard against a stale cache).

mod graph;
mod queue;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{self, BoxFuture};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::core::gvk::GroupVersionKind;
use kube::core::{ApiResource, PartialObjectMeta};
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use parking_lot::{Mutex, RwLock};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn, Instrument};

use self::graph::{Graph, Node, Owner, Work, FOREGROUND_FINALIZER, ORPHAN_FINALIZER};
use self::queue::WorkQueue;
use super::Context;

pub const NAME: &str = "garbagecollector";
/// Upstream's queue names, which label its workqueue metrics.
const ATTEMPT_TO_DELETE: &str = "garbage_collector_attempt_to_delete";
const ATTEMPT_TO_ORPHAN: &str = "garbage_collector_attempt_to_orphan";
/// How often discovery is read again for new resources (upstream's GC resync).
const RESYNC_PERIOD: Duration = Duration::from_secs(30);
/// How long the first graph may take before the workers start anyway (they read live,
/// so a partial graph only delays collection).
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Absent owner uids remembered (uids are never reused), as upstream's LRU.
const ABSENT_OWNER_CACHE: usize = 500;
const CONFLICT_RETRIES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {what}: {source}")]
    Get {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting {what}: {source}")]
    Delete {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating {what}: {source}")]
    Patch {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("no resource serves kind {kind} of {api_version} (owner {name} of {dependent})")]
    UnknownOwnerKind {
        api_version: String,
        kind: String,
        name: String,
        dependent: String,
    },
    #[error("updating {what}: still conflicting after {CONFLICT_RETRIES} attempts")]
    Conflicts { what: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

struct Collector {
    ctx: Context,
    client: Client,
    graph: Mutex<Graph>,
    attempt_to_delete: WorkQueue,
    attempt_to_orphan: WorkQueue,
    discovery: RwLock<Option<Arc<Discovery>>>,
    absent_owners: Mutex<HashSet<String>>,
    /// Until the first graph is complete, changes only build it.
    synced: watch::Sender<bool>,
}

pub fn start(ctx: &Context) -> BoxFuture<'static, ()> {
    let (attempt_to_delete, delete_delays) = WorkQueue::new();
    let (attempt_to_orphan, orphan_delays) = WorkQueue::new();
    let gc = Arc::new(Collector {
        ctx: ctx.clone(),
        client: ctx.client.clone(),
        graph: Mutex::new(Graph::default()),
        attempt_to_delete,
        attempt_to_orphan,
        discovery: RwLock::new(None),
        absent_owners: Mutex::new(HashSet::new()),
        synced: watch::channel(false).0,
    });
    let workers = ctx.options.concurrent_gc_syncs.max(1);
    async move {
        let (monitors_tx, monitors_rx) = mpsc::unbounded_channel();
        let delete_workers = future::join_all((0..workers).map(|_| delete_worker(gc.clone())));
        let orphan_workers = future::join_all((0..workers).map(|_| orphan_worker(gc.clone())));
        futures::join!(
            resync(gc.clone(), monitors_tx),
            run_monitors(monitors_rx),
            gc.attempt_to_delete.run_delays(delete_delays),
            gc.attempt_to_orphan.run_delays(orphan_delays),
            delete_workers,
            orphan_workers,
        );
    }
    .boxed()
}

/// Polls every monitor, including those discovery adds later.
async fn run_monitors(mut rx: mpsc::UnboundedReceiver<BoxFuture<'static, ()>>) {
    let mut running = FuturesUnordered::new();
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => running.push(m),
                None => return,
            },
            Some(()) = running.next(), if !running.is_empty() => {}
        }
    }
}

/// Upstream's `GetDeletableResources`: every resource served with list, watch and
/// delete, but events (never owners, and too many).
fn deletable_resources(discovery: &Discovery) -> Vec<ApiResource> {
    discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .filter(|(_, caps)| {
            [verbs::LIST, verbs::WATCH, verbs::DELETE]
                .iter()
                .all(|v| caps.supports_operation(v))
        })
        .filter(|(ar, _)| {
            !(ar.plural == "events" && (ar.group.is_empty() || ar.group == "events.k8s.io"))
        })
        .map(|(ar, _)| ar)
        .collect()
}

/// Finds the resources to monitor now and every [`RESYNC_PERIOD`], starts a monitor for
/// each new one, and starts the workers once the first set has listed.
async fn resync(gc: Arc<Collector>, monitors: mpsc::UnboundedSender<BoxFuture<'static, ()>>) {
    let mut monitored: HashSet<ApiResource> = HashSet::new();
    let mut tick = tokio::time::interval(RESYNC_PERIOD);
    let mut first = true;
    loop {
        tick.tick().await;
        let discovery = match Discovery::new(gc.client.clone()).run().await {
            Ok(d) => Arc::new(d),
            Err(e) => {
                warn!(error = %e, "discovery failed; the graph may miss resources");
                if first {
                    // Retry soon: nothing is monitored yet.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    tick.reset_immediately();
                }
                continue;
            }
        };
        *gc.discovery.write() = Some(discovery.clone());
        let mut listed = Vec::new();
        for ar in deletable_resources(&discovery) {
            if monitored.insert(ar.clone()) {
                let (done_tx, done_rx) = tokio::sync::oneshot::channel();
                listed.push(done_rx);
                let span = tracing::info_span!("monitor", resource = %format!("{}.{}", ar.plural, ar.group));
                let _ = monitors.send(monitor(gc.clone(), ar, done_tx).instrument(span).boxed());
            }
        }
        if first {
            first = false;
            if tokio::time::timeout(SYNC_TIMEOUT, future::join_all(listed))
                .await
                .is_err()
            {
                warn!("not every resource listed in time; collecting anyway");
            }
            let work = gc.graph.lock().initial_work();
            gc.synced.send_replace(true);
            gc.enqueue(work);
            info!(resources = monitored.len(), "dependency graph built");
        }
    }
}

/// One resource's metadata-only watch, feeding the graph.
async fn monitor(gc: Arc<Collector>, ar: ApiResource, listed: tokio::sync::oneshot::Sender<()>) {
    let resource = Arc::new(ar);
    // Metadata only: the graph needs no spec or status.
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(gc.client.clone(), &*resource);
    let stream = watcher(api, watcher::Config::default().any_semantic()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut listed = Some(listed);
    // The uids seen by the list in progress: what it does not return is gone.
    let mut relist: Option<HashSet<String>> = None;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                debug!(error = %e, "watch failed; retrying");
                continue;
            }
        };
        let work = match event {
            watcher::Event::Init => {
                relist = Some(HashSet::new());
                Work::default()
            }
            watcher::Event::InitApply(obj) => {
                let Some((uid, node)) = Node::from_meta(resource.clone(), &obj.metadata) else {
                    continue;
                };
                if let Some(seen) = relist.as_mut() {
                    seen.insert(uid.clone());
                }
                gc.graph.lock().upsert(uid, node)
            }
            watcher::Event::InitDone => {
                let seen = relist.take().unwrap_or_default();
                let mut graph = gc.graph.lock();
                let mut work = Work::default();
                for uid in graph.uids_of(&resource) {
                    if !seen.contains(&uid) {
                        let w = graph.remove(&uid);
                        work.attempt_to_delete.extend(w.attempt_to_delete);
                    }
                }
                drop(graph);
                if let Some(tx) = listed.take() {
                    let _ = tx.send(());
                }
                work
            }
            watcher::Event::Apply(obj) => {
                let Some((uid, node)) = Node::from_meta(resource.clone(), &obj.metadata) else {
                    continue;
                };
                gc.graph.lock().upsert(uid, node)
            }
            watcher::Event::Delete(obj) => match obj.metadata.uid.as_deref() {
                Some(uid) => gc.graph.lock().remove(uid),
                None => continue,
            },
        };
        if *gc.synced.borrow() {
            gc.enqueue(work);
        }
    }
}

impl Collector {
    fn enqueue(&self, work: Work) {
        for uid in work.attempt_to_delete {
            self.attempt_to_delete.add(&uid);
        }
        for uid in work.attempt_to_orphan {
            self.attempt_to_orphan.add(&uid);
        }
    }

    async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    fn api_for(&self, resource: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, resource),
            None => Api::all_with(self.client.clone(), resource),
        }
    }
}

async fn delete_worker(gc: Arc<Collector>) {
    gc.wait_synced().await;
    loop {
        let uid = gc.attempt_to_delete.get().await;
        let result = gc
            .ctx
            .metrics
            .observe(ATTEMPT_TO_DELETE, attempt_to_delete(&gc, &uid))
            .await;
        match result {
            Ok(()) => gc.attempt_to_delete.forget(&uid),
            Err(error) => {
                warn!(%error, uid, "garbage collection failed; retrying");
                gc.attempt_to_delete.add_rate_limited(&uid);
            }
        }
        gc.attempt_to_delete.done(&uid);
    }
}

async fn orphan_worker(gc: Arc<Collector>) {
    gc.wait_synced().await;
    loop {
        let uid = gc.attempt_to_orphan.get().await;
        let result = gc
            .ctx
            .metrics
            .observe(ATTEMPT_TO_ORPHAN, attempt_to_orphan(&gc, &uid))
            .await;
        match result {
            Ok(()) => gc.attempt_to_orphan.forget(&uid),
            Err(error) => {
                warn!(%error, uid, "orphaning dependents failed; retrying");
                gc.attempt_to_orphan.add_rate_limited(&uid);
            }
        }
        gc.attempt_to_orphan.done(&uid);
    }
}

/// `kind namespace/name` of a node, for messages.
fn describe(node: &Node) -> String {
    match &node.namespace {
        Some(ns) => format!("{} {ns}/{}", node.resource.kind, node.name),
        None => format!("{} {}", node.resource.kind, node.name),
    }
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

fn has_finalizer(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == finalizer)
}

/// The live object of a node: None if it is gone or was replaced (a new uid).
async fn latest(
    gc: &Collector,
    uid: &str,
    node: &Node,
) -> Result<Option<PartialObjectMeta<DynamicObject>>> {
    let api = gc.api_for(&node.resource, node.namespace.as_deref());
    match api.get_metadata_opt(&node.name).await {
        Ok(Some(obj)) if obj.metadata.uid.as_deref() == Some(uid) => Ok(Some(obj)),
        Ok(_) => Ok(None),
        Err(source) => Err(Error::Get {
            what: describe(node),
            source,
        }),
    }
}

/// How a dependent stands with one owner.
enum OwnerState {
    /// Gone, replaced by another uid, or unreachable from the dependent's scope.
    Dangling,
    /// Being deleted in the foreground, waiting for its dependents.
    WaitingForDependents,
    Solid,
}

/// Upstream's `attemptToDeleteItem`.
async fn attempt_to_delete(gc: &Collector, uid: &str) -> Result<()> {
    let Some(node) = gc.graph.lock().get(uid).cloned() else {
        return Ok(());
    };
    if node.being_deleted && !node.deleting_dependents() {
        return Ok(());
    }
    let Some(latest) = latest(gc, uid, &node).await? else {
        // Gone or replaced: the watch will say so.
        return Ok(());
    };
    let meta = &latest.metadata;
    if meta.deletion_timestamp.is_some() {
        if has_finalizer(meta, FOREGROUND_FINALIZER) {
            return process_deleting_dependents(gc, uid, &node).await;
        }
        return Ok(());
    }
    let owners = graph::owners(meta);
    if owners.is_empty() {
        return Ok(());
    }
    let mut solid = Vec::new();
    let mut dangling = Vec::new();
    let mut waiting = Vec::new();
    for owner in owners {
        match owner_state(gc, &node, &owner).await? {
            OwnerState::Solid => solid.push(owner),
            OwnerState::Dangling => dangling.push(owner),
            OwnerState::WaitingForDependents => waiting.push(owner),
        }
    }
    let what = describe(&node);
    if !solid.is_empty() {
        if dangling.is_empty() && waiting.is_empty() {
            return Ok(());
        }
        // Still owned: drop only the references to owners that are gone, or waiting for
        // their dependents (which would otherwise wait for this one forever).
        let drop_uids: HashSet<&str> = dangling
            .iter()
            .chain(&waiting)
            .map(|o| o.uid.as_str())
            .collect();
        info!(object = %what, "removing references to absent or deleting owners");
        return update_metadata(gc, &node, |meta| {
            let refs = meta.owner_references.get_or_insert_with(Vec::new);
            let before = refs.len();
            refs.retain(|r| !drop_uids.contains(r.uid.as_str()));
            (refs.len() != before).then(|| json!({ "ownerReferences": nullable(refs) }))
        })
        .await;
    }
    let has_dependents = gc.graph.lock().has_dependents(uid);
    if !waiting.is_empty() && has_dependents {
        // Its owner waits for it, and it has dependents of its own: delete it in the
        // foreground too. A dependent already deleting its own dependents could make a
        // cycle of waits: stop blocking owners first.
        let cycle = {
            let graph = gc.graph.lock();
            graph
                .dependents(uid)
                .iter()
                .any(|d| graph.get(d).is_some_and(Node::deleting_dependents))
        };
        if cycle {
            update_metadata(gc, &node, |meta| {
                let refs = meta.owner_references.get_or_insert_with(Vec::new);
                let mut changed = false;
                for r in refs.iter_mut() {
                    if r.block_owner_deletion == Some(true) {
                        r.block_owner_deletion = Some(false);
                        changed = true;
                    }
                }
                changed.then(|| json!({ "ownerReferences": refs }))
            })
            .await?;
        }
        info!(object = %what, "owner deleting in the foreground; deleting in the foreground");
        return delete(gc, uid, &node, DeleteParams::foreground()).await;
    }
    // No owner left: collect it, propagating as its own finalizers ask.
    let dp = if has_finalizer(meta, ORPHAN_FINALIZER) {
        DeleteParams::orphan()
    } else if has_finalizer(meta, FOREGROUND_FINALIZER) {
        DeleteParams::foreground()
    } else {
        DeleteParams::background()
    };
    info!(object = %what, "all owners gone; deleting");
    delete(gc, uid, &node, dp).await
}

/// Upstream's `isDangling`, with the owner read live.
async fn owner_state(gc: &Collector, dependent: &Node, owner: &Owner) -> Result<OwnerState> {
    if gc.absent_owners.lock().contains(&owner.uid) {
        return Ok(OwnerState::Dangling);
    }
    let (resource, namespaced) = {
        let discovery = gc.discovery.read().clone();
        let gvk = owner_gvk(owner);
        match discovery.as_ref().and_then(|d| d.resolve_gvk(&gvk)) {
            Some((ar, caps)) => (ar, caps.scope == Scope::Namespaced),
            None => {
                return Err(Error::UnknownOwnerKind {
                    api_version: owner.api_version.to_string(),
                    kind: owner.kind.to_string(),
                    name: owner.name.clone(),
                    dependent: describe(dependent),
                })
            }
        }
    };
    let namespace = match (namespaced, dependent.namespace.as_deref()) {
        (false, _) => None,
        (true, Some(ns)) => Some(ns),
        // A cluster-scoped object cannot be owned by a namespaced one.
        (true, None) => return Ok(OwnerState::Dangling),
    };
    let api = gc.api_for(&resource, namespace);
    let live = api
        .get_metadata_opt(&owner.name)
        .await
        .map_err(|source| Error::Get {
            what: format!("owner {} {}", owner.kind, owner.name),
            source,
        })?;
    match live {
        Some(o) if o.metadata.uid.as_deref() == Some(owner.uid.as_str()) => {
            let deleting = o.metadata.deletion_timestamp.is_some()
                && has_finalizer(&o.metadata, FOREGROUND_FINALIZER);
            Ok(if deleting {
                OwnerState::WaitingForDependents
            } else {
                OwnerState::Solid
            })
        }
        _ => {
            let mut absent = gc.absent_owners.lock();
            if absent.len() >= ABSENT_OWNER_CACHE {
                absent.clear();
            }
            absent.insert(owner.uid.clone());
            Ok(OwnerState::Dangling)
        }
    }
}

fn owner_gvk(owner: &Owner) -> GroupVersionKind {
    let (group, version) = match owner.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", owner.api_version.as_str()),
    };
    GroupVersionKind::gvk(group, version, &owner.kind)
}

/// An owner deleting in the foreground: lift the finalizer once no dependent blocks it,
/// else make sure its blocking dependents are being deleted.
async fn process_deleting_dependents(gc: &Collector, uid: &str, node: &Node) -> Result<()> {
    let blocking: Vec<(String, bool)> = gc
        .graph
        .lock()
        .blocking_dependents(uid)
        .into_iter()
        .map(|(d, n)| (d, n.deleting_dependents()))
        .collect();
    if blocking.is_empty() {
        info!(object = %describe(node), "no dependent blocks it any more; removing {FOREGROUND_FINALIZER}");
        return remove_finalizer(gc, node, FOREGROUND_FINALIZER).await;
    }
    for (dependent, deleting_dependents) in blocking {
        if !deleting_dependents {
            gc.attempt_to_delete.add(&dependent);
        }
    }
    Ok(())
}

/// Upstream's `attemptToOrphanWorker`: every dependent loses its reference to the owner,
/// then the owner its `orphan` finalizer.
async fn attempt_to_orphan(gc: &Collector, uid: &str) -> Result<()> {
    let Some(owner) = gc.graph.lock().get(uid).cloned() else {
        return Ok(());
    };
    if !owner.orphaning_dependents() {
        return Ok(());
    }
    let dependents: Vec<Node> = {
        let graph = gc.graph.lock();
        graph
            .dependents(uid)
            .iter()
            .filter_map(|d| graph.get(d).cloned())
            .collect()
    };
    for dependent in &dependents {
        update_metadata(gc, dependent, |meta| {
            let refs = meta.owner_references.get_or_insert_with(Vec::new);
            let before = refs.len();
            refs.retain(|r| r.uid != uid);
            (refs.len() != before).then(|| json!({ "ownerReferences": nullable(refs) }))
        })
        .await?;
    }
    info!(object = %describe(&owner), orphaned = dependents.len(), "dependents orphaned; removing {ORPHAN_FINALIZER}");
    remove_finalizer(gc, &owner, ORPHAN_FINALIZER).await
}

async fn remove_finalizer(gc: &Collector, node: &Node, finalizer: &str) -> Result<()> {
    update_metadata(gc, node, |meta| {
        let finalizers = meta.finalizers.get_or_insert_with(Vec::new);
        let before = finalizers.len();
        finalizers.retain(|f| f != finalizer);
        (finalizers.len() != before).then(|| json!({ "finalizers": nullable(finalizers) }))
    })
    .await
}

/// An empty list is sent as null, which a merge patch reads as "remove the field".
fn nullable<T: serde::Serialize>(list: &[T]) -> serde_json::Value {
    if list.is_empty() {
        serde_json::Value::Null
    } else {
        json!(list)
    }
}

/// Reads the object and merge-patches the metadata `change` returns (None: nothing to
/// change), with its resourceVersion as a precondition; retried on conflicts.
async fn update_metadata(
    gc: &Collector,
    node: &Node,
    mut change: impl FnMut(&mut ObjectMeta) -> Option<serde_json::Value>,
) -> Result<()> {
    let api = gc.api_for(&node.resource, node.namespace.as_deref());
    let what = describe(node);
    for _ in 0..CONFLICT_RETRIES {
        let current = match api.get_metadata_opt(&node.name).await {
            Ok(Some(o)) => o,
            Ok(None) => return Ok(()),
            Err(source) => return Err(Error::Get { what, source }),
        };
        let mut meta = current.metadata;
        let rv = meta.resource_version.clone();
        let Some(mut patch) = change(&mut meta) else {
            return Ok(());
        };
        patch["resourceVersion"] = json!(rv);
        let body = json!({ "metadata": patch });
        match api
            .patch(&node.name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if status_code(&e) == Some(404) => return Ok(()),
            Err(e) if status_code(&e) == Some(409) => continue,
            Err(source) => return Err(Error::Patch { what, source }),
        }
    }
    Err(Error::Conflicts { what })
}

/// Deletes the object it was decided on, and no other: the uid is a precondition.
async fn delete(gc: &Collector, uid: &str, node: &Node, mut dp: DeleteParams) -> Result<()> {
    dp.preconditions = Some(Preconditions {
        uid: Some(uid.to_string()),
        resource_version: None,
    });
    let api = gc.api_for(&node.resource, node.namespace.as_deref());
    match api.delete(&node.name, &dp).await {
        Ok(_) => Ok(()),
        // Gone already, or replaced by a new object of the same name.
        Err(e) if matches!(status_code(&e), Some(404 | 409)) => Ok(()),
        Err(source) => Err(Error::Delete {
            what: describe(node),
            source,
        }),
    }
}
