//! What several controllers share (upstream's pkg/controller/controller_utils.go):
//! controller references, pod states, pods from templates, slow-start batches and the
//! expectations that keep a lagging cache from causing duplicate creations.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::{Owned, Pod};
use futures::future;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{warn, Instrument};

/// Upstream's `ExpectationsTimeout`: expectations not met by then are given up on, so a
/// lost watch event cannot stall an owner for ever.
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// A controller ownerReference to `owner` (`controller: true`, `blockOwnerDeletion:
/// true`, as upstream's `NewControllerRef`).
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// `obj`'s controller ownerReference, whatever its kind.
pub fn controller_of<O: Owned + ?Sized>(obj: &O) -> Option<&OwnerReference> {
    obj.owners().iter().find(|r| r.controller == Some(true))
}

/// `obj`'s controller ownerReference if it points at a `K`.
pub fn controller_of_kind<K: Resource<DynamicType = ()>, O: Owned + ?Sized>(
    obj: &O,
) -> Option<&OwnerReference> {
    controller_of(obj).filter(|r| r.kind == K::kind(&()) && r.api_version == K::api_version(&()))
}

/// Upstream's `ControllerRefManager` adoption: makes `owner` (`reference`) the controller
/// of `obj`. A strategic merge, so ownerReferences merge by uid; `obj`'s uid in the patch
/// is the precondition that it is still the same object. `None`: it is gone.
pub async fn adopt<O>(
    api: &Api<O>,
    reference: &OwnerReference,
    obj: &O,
) -> Result<Option<O>, kube::Error>
where
    O: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({"metadata": {"ownerReferences": [reference], "uid": obj.uid()}});
    match api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
    {
        Ok(adopted) => Ok(Some(adopted)),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Upstream's `ControllerRefManager` release: removes the ownerReference of uid
/// `owner_uid` from `obj`. Gone, or replaced by another object of the name (its uid
/// differs: 422), counts as released.
pub async fn release<O>(api: &Api<O>, owner_uid: &str, obj: &O) -> Result<(), kube::Error>
where
    O: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({"metadata": {
        "ownerReferences": [{"$patch": "delete", "uid": owner_uid}],
        "uid": obj.uid(),
    }});
    match api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() || s.is_invalid() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The owner each pod was last seen controlled by (upstream's pod event handlers in the
/// replicaset and daemonset controllers), so that an owner hears when its pod is taken
/// away or deleted. By pod uid, the owner's name only (it shares the pod's namespace):
/// one small entry per owned pod.
#[derive(Default)]
pub struct PodOwners {
    last: Mutex<HashMap<String, Box<str>>>,
}

impl PodOwners {
    /// The owners of kind `K` a pod change concerns: its controller and the one before,
    /// or for an orphan the owners `matching` names (given the pod's namespace). Records
    /// what the change means for the controller's `expectations`; `pods` is the informer's
    /// store, already updated, so a pod missing from it (or replaced) is gone.
    pub fn owners_of<K: Resource<DynamicType = ()>>(
        &self,
        pod: &Pod,
        pods: &Store<Pod>,
        expectations: &Expectations,
        matching: impl FnOnce(&str) -> Vec<ObjectRef<K>>,
    ) -> Vec<ObjectRef<K>> {
        let Some(uid) = pod.uid() else {
            return Vec::new();
        };
        let ns = pod.namespace().unwrap_or_default();
        let gone = pod.metadata.deletion_timestamp.is_some()
            || pods
                .get(&ObjectRef::from_obj(pod))
                .is_none_or(|cur| cur.uid().as_deref() != Some(uid.as_str()));
        let controller = controller_of_kind::<K, _>(pod);
        let mut out = Vec::new();
        if let Some(c) = controller {
            expectations.observe(&c.uid, &uid, gone);
            out.push(ObjectRef::new(&c.name).within(&ns));
        }
        let previous = {
            let mut last = self.last.lock();
            match controller {
                Some(c) if !gone => last.insert(uid.clone(), c.name.as_str().into()),
                _ => last.remove(&uid),
            }
        };
        if let Some(p) = previous {
            let p = ObjectRef::new(&p).within(&ns);
            if !out.contains(&p) {
                out.push(p);
            }
        }
        if controller.is_none() && !gone {
            out.extend(matching(&ns));
        }
        out
    }
}

/// Publishes an event in the background, as upstream's recorder does: a failure to
/// record it is logged and never fails the sync that made it.
///
/// The references' resourceVersions are dropped: the recorder folds repeats into one
/// Event's series by comparing references whole, and an object's status write between
/// two retries must not turn the repeat into a second Event.
pub fn publish_event(
    recorder: kube::runtime::events::Recorder,
    mut reference: k8s_openapi::api::core::v1::ObjectReference,
    mut event: kube::runtime::events::Event,
) {
    reference.resource_version = None;
    if let Some(related) = event.secondary.as_mut() {
        related.resource_version = None;
    }
    // One publish at a time per object: the recorder remembers an Event only once its
    // create has answered, so a repeat published meanwhile would create a second Event.
    const STRIPES: usize = 64;
    static PUBLISHING: [tokio::sync::Mutex<()>; STRIPES] =
        [const { tokio::sync::Mutex::const_new(()) }; STRIPES];
    let stripe = {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one((
            &reference.uid,
            &reference.name,
            &reference.namespace,
        ));
        (hash % STRIPES as u64) as usize
    };
    tokio::spawn(
        async move {
            let _one_at_a_time = PUBLISHING[stripe].lock().await;
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::debug!(error = %e, "publishing an event");
            }
        }
        .in_current_span(),
    );
}

/// Delete options that delete only the object of this uid, never a successor that took
/// its name since (upstream's `Preconditions{UID}`).
pub fn only_uid(uid: Option<String>) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

/// How long until the next ready pod becomes available, if one is waiting to.
pub fn next_available(
    pods: &[Arc<Pod>],
    min_ready_seconds: i32,
    now: Timestamp,
) -> Option<Duration> {
    if min_ready_seconds <= 0 {
        return None;
    }
    pods.iter()
        .filter(|p| !is_pod_available(p, min_ready_seconds, now))
        .filter_map(|p| ready_since(p).flatten())
        // Available once strictly more than minReadySeconds have passed, in whole seconds.
        .map(|t| (t.as_second() + i64::from(min_ready_seconds) + 1 - now.as_second()).max(1))
        .min()
        .map(|s| Duration::from_secs(s as u64))
}

/// Upstream's `IsPodActive`: not finished and not being deleted.
pub fn is_pod_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && pod.metadata.deletion_timestamp.is_none()
}

/// When the pod became ready, if it is (upstream's `podReadyTime`; None inside means
/// ready with no transition time).
pub fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// Upstream's `IsPodAvailable`: ready for at least `min_ready_seconds`.
pub fn is_pod_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(t)) => t.as_second() + i64::from(min_ready_seconds) < now.as_second(),
    }
}

/// Upstream's `GetPodFromTemplate`: a pod of `owner` (controlled by it) from its template,
/// named `<prefix>-<random>` by the apiserver unless the caller sets a name. A whole
/// `k8s_openapi` Pod, to create (the informers cache a projection, [`Pod`]).
pub fn pod_from_template<K: Resource<DynamicType = ()>>(
    owner: &K,
    template: &PodTemplateSpec,
) -> k8s_openapi::api::core::v1::Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    k8s_openapi::api::core::v1::Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", owner.name_any())),
            namespace: owner.namespace(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_ref(owner)]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Upstream's `slowStartBatch`: calls `f` in batches of 1, 2, 4, ... at once, stopping
/// after the first batch with an error. Returns how many calls were made and the first
/// error.
pub async fn slow_start_batch<F, Fut, E>(
    count: usize,
    initial: usize,
    f: F,
) -> (usize, Result<(), E>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    let mut remaining = count;
    let mut batch = initial.min(count);
    let mut attempted = 0;
    while batch > 0 {
        let results = future::join_all((0..batch).map(|_| f())).await;
        attempted += batch;
        if let Some(e) = results.into_iter().find_map(Result::err) {
            return (attempted, Err(e));
        }
        remaining -= batch;
        batch = (2 * batch).min(remaining);
    }
    (attempted, Ok(()))
}

/// Whether a create failed because the namespace is being deleted.
pub fn namespace_terminating(s: &kube::core::Status) -> bool {
    s.details
        .as_ref()
        .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
}

/// What an owner is waiting to see from the pod informer (upstream's
/// `UIDTrackingControllerExpectations`), by owner uid.
#[derive(Default)]
pub struct Expectations {
    by_owner: Mutex<HashMap<String, Expectation>>,
}

struct Expectation {
    /// Creations asked for whose answer has not come back.
    in_flight: usize,
    /// Created pods (uid → name) the informer has not shown yet.
    adds: HashMap<String, String>,
    /// Pods the informer showed while creations were in flight (their answer may come
    /// after the watch event).
    seen: HashSet<String>,
    /// Deleted pods (uid → name) whose deletion the informer has not shown yet.
    deletes: HashMap<String, String>,
    since: Instant,
}

impl Expectation {
    fn new() -> Expectation {
        Expectation {
            in_flight: 0,
            adds: HashMap::new(),
            seen: HashSet::new(),
            deletes: HashMap::new(),
            since: Instant::now(),
        }
    }
}

impl Expectations {
    /// Whether the owner may act: everything it did has been seen (checked against the
    /// pod cache too: `lookup` gives a pod's uid and whether it is being deleted), or the
    /// expectations timed out.
    pub fn satisfied(&self, owner: &str, lookup: impl Fn(&str) -> Option<(String, bool)>) -> bool {
        let mut by_owner = self.by_owner.lock();
        let Some(e) = by_owner.get_mut(owner) else {
            return true;
        };
        e.adds
            .retain(|uid, name| lookup(name).is_none_or(|(u, _)| u != *uid));
        e.deletes
            .retain(|uid, name| lookup(name).is_some_and(|(u, deleting)| u == *uid && !deleting));
        let done = e.in_flight == 0 && e.adds.is_empty() && e.deletes.is_empty();
        if done || e.since.elapsed() > EXPECTATIONS_TIMEOUT {
            if !done {
                warn!(owner, "expectations timed out");
            }
            by_owner.remove(owner);
            return true;
        }
        false
    }

    pub fn expect_creations(&self, owner: &str, n: usize) {
        let mut e = Expectation::new();
        e.in_flight = n;
        self.by_owner.lock().insert(owner.to_string(), e);
    }

    pub fn creation_done(&self, owner: &str, uid: String, name: String) {
        let mut by_owner = self.by_owner.lock();
        let Some(e) = by_owner.get_mut(owner) else {
            return;
        };
        e.in_flight = e.in_flight.saturating_sub(1);
        if !e.seen.remove(&uid) {
            e.adds.insert(uid, name);
        }
        if e.in_flight == 0 {
            e.seen.clear();
        }
    }

    pub fn creation_failed(&self, owner: &str) {
        if let Some(e) = self.by_owner.lock().get_mut(owner) {
            e.in_flight = e.in_flight.saturating_sub(1);
            if e.in_flight == 0 {
                e.seen.clear();
            }
        }
    }

    pub fn expect_deletions(&self, owner: &str, pods: impl Iterator<Item = (String, String)>) {
        let mut e = Expectation::new();
        e.deletes = pods.collect();
        self.by_owner.lock().insert(owner.to_string(), e);
    }

    pub fn deletion_failed(&self, owner: &str, uid: &str) {
        if let Some(e) = self.by_owner.lock().get_mut(owner) {
            e.deletes.remove(uid);
        }
    }

    /// The informer showed pod `uid` of `owner` (`gone`: deleted or being deleted).
    pub fn observe(&self, owner: &str, uid: &str, gone: bool) {
        let mut by_owner = self.by_owner.lock();
        let Some(e) = by_owner.get_mut(owner) else {
            return;
        };
        if e.adds.remove(uid).is_none() && e.in_flight > 0 {
            e.seen.insert(uid.to_string());
        }
        if gone {
            e.deletes.remove(uid);
        }
    }

    pub fn forget(&self, owner: &str) {
        self.by_owner.lock().remove(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slow_start_doubles_batches_and_stops_at_the_first_failure() {
        let calls = Mutex::new(0usize);
        let (n, r) = slow_start_batch(10, 1, || {
            *calls.lock() += 1;
            async { Ok::<(), &str>(()) }
        })
        .await;
        assert_eq!((n, *calls.lock()), (10, 10));
        assert!(r.is_ok());
        // Batches 1, 2, 4: the 5th call fails, the batch of 4 finishes, then it stops.
        let calls = Mutex::new(0usize);
        let (n, r) = slow_start_batch(20, 1, || {
            let mut c = calls.lock();
            *c += 1;
            let fail = *c == 5;
            async move {
                if fail {
                    Err("failed")
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!(n, 7);
        assert!(r.is_err());
    }

    #[test]
    fn expectations_wait_for_every_creation_and_deletion() {
        let e = Expectations::default();
        let none = |_: &str| None;
        assert!(e.satisfied("rs", none));
        e.expect_creations("rs", 2);
        // One pod's watch event comes before its create answer.
        e.observe("rs", "a", false);
        e.creation_done("rs", "a".into(), "pa".into());
        assert!(!e.satisfied("rs", none));
        e.creation_done("rs", "b".into(), "pb".into());
        assert!(!e.satisfied("rs", none));
        e.observe("rs", "b", false);
        assert!(e.satisfied("rs", none));
        // Deletions: seen once the cache no longer has the pod (or it is terminating).
        e.expect_deletions("rs", [("c".to_string(), "pc".to_string())].into_iter());
        assert!(!e.satisfied("rs", |_| Some(("c".into(), false))));
        assert!(e.satisfied("rs", |_| Some(("c".into(), true))));
    }
}
