//! Bringing a set's pods to its spec (upstream's StatefulSetControl and
//! StatefulPodControl): create, replace, delete and fix pods and their claims, ordered or
//! in parallel, and roll updates out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::FutureExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::ResourceExt;
use serde_json::json;

use super::identity::*;
use super::{
    replica_status, Error, K8sPod, Result, State, POD_INDEX_LABEL, POD_NAME_LABEL, RETAIN,
};
use crate::cache::Pod;
use crate::controllers::controller_utils::only_uid;
use crate::controllers::controller_utils::{namespace_terminating, slow_start_batch};
use crate::informers::key;

/// A slot of the ordinal range: the pod there, or the pod to create.
pub(super) struct Replica {
    pub(super) pod: Arc<Pod>,
    /// The pod to create, when none exists.
    pub(super) create: Option<Box<K8sPod>>,
}

/// One sync of one set (upstream's `updateStatefulSet` and its helpers).
pub(super) struct SetSync<'a> {
    pub(super) state: &'a State,
    pub(super) set: &'a StatefulSet,
    /// The set with the current revision's template.
    pub(super) current_set: StatefulSet,
    /// The set with the update revision's template.
    pub(super) update_set: StatefulSet,
    pub(super) current_revision: String,
    pub(super) update_revision: String,
    /// OrderedReady: one pod at a time, waiting for health.
    pub(super) monotonic: bool,
    pub(super) min_ready_seconds: i32,
    pub(super) now: Timestamp,
}

impl SetSync<'_> {
    /// Upstream's `newVersionedStatefulSetPod`: below the partition a pod is made at the
    /// current revision, otherwise at the update revision.
    pub(super) fn versioned_pod(&self, ordinal: i32) -> K8sPod {
        let start = start_ordinal(self.set);
        let below_current = strategy_type(self.set) == "RollingUpdate"
            && match partition(self.set) {
                None => {
                    let current = self
                        .set
                        .status
                        .as_ref()
                        .and_then(|s| s.current_replicas)
                        .unwrap_or(0);
                    i64::from(ordinal) < i64::from(start) + i64::from(current)
                }
                Some(p) => i64::from(ordinal) < i64::from(start) + i64::from(p),
            };
        if below_current {
            new_pod(&self.current_set, ordinal, &self.current_revision)
        } else {
            new_pod(&self.update_set, ordinal, &self.update_revision)
        }
    }

    /// Brings the pods to the spec; returns the status the pods show and whether the
    /// sync waits on something only time or other actors bring (or the error).
    pub(super) async fn update(&self, pods: &[Arc<Pod>]) -> (StatefulSetStatus, Result<bool>) {
        let start = start_ordinal(self.set);
        let count = replicas(self.set) as usize;
        let mut slots: Vec<Option<Arc<Pod>>> = vec![None; count];
        let mut condemned: Vec<Arc<Pod>> = Vec::new();
        for pod in pods {
            match ordinal_of(pod) {
                Some(o) if in_ordinal_range(self.set, o) => {
                    slots[(o - start) as usize] = Some(pod.clone());
                }
                _ => condemned.push(pod.clone()),
            }
        }
        let replicas: Vec<Replica> = slots
            .into_iter()
            .enumerate()
            .map(|(i, slot)| match slot {
                Some(pod) => Replica { pod, create: None },
                None => {
                    let pod = self.versioned_pod(start + i as i32);
                    let cached = serde_json::to_value(&pod)
                        .ok()
                        .and_then(|v| serde_json::from_value(v).ok())
                        .unwrap_or_default();
                    Replica {
                        pod: Arc::new(cached),
                        create: Some(Box::new(pod)),
                    }
                }
            })
            .collect();
        // Highest ordinal first.
        condemned.sort_by_key(|p| std::cmp::Reverse(ordinal_of(p).unwrap_or(-1)));
        let status = replica_status(
            &pods.iter().map(Arc::as_ref).collect::<Vec<_>>(),
            &self.current_revision,
            &self.update_revision,
            self.min_ready_seconds,
            self.now,
        );
        let result = self.manage(&replicas, &condemned).await;
        (status, result)
    }

    pub(super) async fn manage(
        &self,
        replicas: &[Replica],
        condemned: &[Arc<Pod>],
    ) -> Result<bool> {
        let first_unhealthy = replicas
            .iter()
            .map(|r| &r.pod)
            .chain(condemned.iter())
            .find(|p| !is_healthy(p))
            .and_then(|p| p.metadata.name.clone());
        let waiting = AtomicUsize::new(0);
        let waited = || waiting.load(Ordering::Relaxed) > 0;
        // Every pod of the range exists, runs and is ready (one at a time when ordered).
        if self
            .run_for_all(replicas.len(), |i| {
                self.process_replica(&replicas[i], &waiting)
            })
            .await?
        {
            return Ok(waited());
        }
        // Claims of pods about to go follow the retention policy before the pods do.
        if self
            .run_for_all(condemned.len(), |i| async move {
                self.fix_claims(&condemned[i]).await?;
                Ok(false)
            })
            .await?
        {
            return Ok(waited());
        }
        // Scale down from the highest ordinal; ordered: one at a time, once healthy.
        if self
            .run_for_all(condemned.len(), |i| {
                self.process_condemned(&condemned[i], first_unhealthy.as_deref())
            })
            .await?
        {
            return Ok(waited());
        }
        if strategy_type(self.set) == "OnDelete" {
            return Ok(waited());
        }
        // Rolling update: the highest ordinal at or above the partition that is not at
        // the update revision goes, once every pod above it is healthy.
        let min = partition(self.set).unwrap_or(0).max(0) as usize;
        for target in (min..replicas.len()).rev() {
            let pod = &replicas[target].pod;
            if revision_of(pod) != self.update_revision && !is_terminating(pod) {
                self.delete_pod(pod).await?;
                return Ok(waited());
            }
            if !is_healthy(pod) {
                return Ok(waited());
            }
        }
        Ok(waited())
    }

    /// Upstream's `runForAll`: ordered, one after the other until one says to stop;
    /// parallel, all of them in slow-start batches. Whether to stop here.
    pub(super) async fn run_for_all<'f, F, Fut>(&self, n: usize, f: F) -> Result<bool>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = Result<bool>> + 'f,
    {
        if self.monotonic {
            for i in 0..n {
                if f(i).await? {
                    return Ok(true);
                }
            }
            return Ok(false);
        }
        let next = AtomicUsize::new(0);
        let (_, result) = slow_start_batch(n, 1, || {
            let i = next.fetch_add(1, Ordering::Relaxed);
            f(i).map(|r| r.map(|_| ()))
        })
        .await;
        result.map(|_| false)
    }

    /// Upstream's `processReplica`: whether the ordered sync stops at this pod.
    pub(super) async fn process_replica(
        &self,
        replica: &Replica,
        waiting: &AtomicUsize,
    ) -> Result<bool> {
        let pod = &replica.pod;
        if let Some(new) = &replica.create {
            if self.claim_is_stale(new) {
                // The claim of a pod of this name is being collected: wait for it to go.
                waiting.fetch_add(1, Ordering::Relaxed);
                return Ok(true);
            }
            if !self.create_pod(new).await? {
                waiting.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(self.monotonic);
        }
        if is_finished(pod) {
            let (type_, reason, what) = if phase(pod) == "Failed" {
                (EventType::Warning, "RecreatingFailedPod", "failed")
            } else {
                (EventType::Normal, "RecreatingTerminatedPod", "terminated")
            };
            if !is_terminating(pod) {
                self.state.event(
                    self.set,
                    None,
                    type_,
                    reason,
                    format!(
                        "StatefulSet {} is recreating {what} Pod {}",
                        key(self.set),
                        pod.name_any()
                    ),
                );
                self.delete_pod(pod).await?;
            }
            // Its successor is made once it is gone.
            return Ok(true);
        }
        if self.monotonic
            && (is_terminating(pod)
                || !is_running_and_ready(pod)
                || !is_running_and_available(pod, self.min_ready_seconds, self.now))
        {
            return Ok(true);
        }
        if identity_matches(self.set, pod)
            && storage_matches(self.set, pod)
            && self.claims_match_policy(pod)
        {
            return Ok(false);
        }
        self.update_pod(pod).await?;
        Ok(false)
    }

    /// Upstream's `processCondemned`.
    pub(super) async fn process_condemned(
        &self,
        pod: &Arc<Pod>,
        first_unhealthy: Option<&str>,
    ) -> Result<bool> {
        if is_terminating(pod) {
            return Ok(self.monotonic);
        }
        let first = first_unhealthy == pod.metadata.name.as_deref();
        if self.monotonic
            && !first
            && (!is_running_and_ready(pod)
                || !is_running_and_available(pod, self.min_ready_seconds, self.now))
        {
            return Ok(true);
        }
        self.delete_pod(pod).await?;
        Ok(self.monotonic)
    }

    /// Upstream's `PodClaimIsStale`: with claims deleted on scale-down, a claim still
    /// owned by an earlier pod of the same name is waiting for the garbage collector.
    pub(super) fn claim_is_stale(&self, pod: &K8sPod) -> bool {
        if retention_policy(self.set).1 == RETAIN {
            return false;
        }
        let Some((_, ordinal)) = pod.metadata.name.as_deref().and_then(parent_and_ordinal) else {
            return false;
        };
        let ns = self.set.namespace().unwrap_or_default();
        let name = pod.name_any();
        claims_for(self.set, ordinal).iter().any(|(_, claim)| {
            self.state.claim(&ns, &claim.name_any()).is_some_and(|c| {
                c.owner_references().iter().any(|r| {
                    r.kind == "Pod" && r.name == name && Some(&r.uid) != pod.uid().as_ref()
                })
            })
        })
    }

    /// Upstream's `createPersistentVolumeClaims`: the pod's missing claims.
    pub(super) async fn create_claims(&self, pod_name: &str, ordinal: i32) -> Result<()> {
        let ns = self.set.namespace().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.state.ctx.client.clone(), &ns);
        let mut first_error = None;
        for (_, claim) in claims_for(self.set, ordinal) {
            let name = claim.name_any();
            match self.state.claim(&ns, &name) {
                Some(c) if c.metadata.deletion_timestamp.is_some() => {
                    first_error.get_or_insert(Error::ClaimDeleting { claim: name });
                }
                Some(_) => {}
                None => match api.create(&PostParams::default(), &claim).await {
                    Ok(_) => self
                        .state
                        .claim_event(self.set, "create", &name, pod_name, None),
                    // Made already; the cache has not shown it yet.
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(source) => {
                        self.state
                            .claim_event(self.set, "create", &name, pod_name, Some(&source));
                        first_error.get_or_insert(Error::CreateClaim {
                            claim: name,
                            source,
                        });
                    }
                },
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Upstream's `CreateStatefulPod`: the claims, then the pod, then the claims'
    /// ownerReferences. False when a pod of that name exists already (the cache lags).
    pub(super) async fn create_pod(&self, pod: &K8sPod) -> Result<bool> {
        let name = pod.name_any();
        let ordinal = pod
            .metadata
            .name
            .as_deref()
            .and_then(parent_and_ordinal)
            .map_or(0, |(_, o)| o);
        if let Err(e) = self.create_claims(&name, ordinal).await {
            self.state.pod_event(self.set, "create", &name, Some(&e));
            return Err(e);
        }
        let api: Api<K8sPod> = Api::namespaced(
            self.state.ctx.client.clone(),
            &self.set.namespace().unwrap_or_default(),
        );
        match api.create(&PostParams::default(), pod).await {
            Ok(created) => {
                self.state.pod_event(self.set, "create", &name, None);
                let created_uid = created.uid().unwrap_or_default();
                self.update_claim_refs(&name, &created_uid, ordinal).await?;
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            // The namespace is going away: nothing to report.
            Err(kube::Error::Api(s)) if namespace_terminating(&s) => Ok(false),
            Err(source) => {
                let e = Error::CreatePod {
                    set: self.set.name_any(),
                    pod: name.clone(),
                    source,
                };
                self.state.pod_event(self.set, "create", &name, Some(&e));
                Err(e)
            }
        }
    }

    /// Upstream's `DeleteStatefulPod`.
    pub(super) async fn delete_pod(&self, pod: &Pod) -> Result<()> {
        let name = pod.name_any();
        let api: Api<Pod> = Api::namespaced(
            self.state.ctx.client.clone(),
            &self.set.namespace().unwrap_or_default(),
        );
        let params = only_uid(pod.uid());
        match api.delete(&name, &params).await {
            Ok(_) => {
                self.state.pod_event(self.set, "delete", &name, None);
                Ok(())
            }
            // Gone already, or a new pod holds the name.
            Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => Ok(()),
            Err(source) => {
                let e = Error::DeletePod {
                    set: self.set.name_any(),
                    pod: name.clone(),
                    source,
                };
                self.state.pod_event(self.set, "delete", &name, Some(&e));
                Err(e)
            }
        }
    }

    /// Upstream's `ClaimsMatchRetentionPolicy`; a claim not seen yet counts as matching.
    pub(super) fn claims_match_policy(&self, pod: &Pod) -> bool {
        let Some(ordinal) = ordinal_of(pod) else {
            return true;
        };
        let ns = self.set.namespace().unwrap_or_default();
        let uid = pod.uid().unwrap_or_default();
        claims_for(self.set, ordinal).iter().all(|(_, claim)| {
            self.state.claim(&ns, &claim.name_any()).is_none_or(|c| {
                !claim_owner_refs(
                    &mut (*c).clone(),
                    self.set,
                    (&pod.name_any(), &uid),
                    ordinal,
                )
            })
        })
    }

    /// Upstream's `UpdatePodClaimForRetentionPolicy`: rewrites the claims'
    /// ownerReferences where the policy says otherwise.
    pub(super) async fn update_claim_refs(
        &self,
        pod_name: &str,
        pod_uid: &str,
        ordinal: i32,
    ) -> Result<()> {
        let ns = self.set.namespace().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.state.ctx.client.clone(), &ns);
        for (_, template_claim) in claims_for(self.set, ordinal) {
            let name = template_claim.name_any();
            let current = match self.state.claim(&ns, &name) {
                Some(c) => c.as_ref().clone(),
                // Just created: read it.
                None => match api.get_opt(&name).await {
                    Ok(Some(c)) => c,
                    Ok(None) => continue,
                    Err(source) => {
                        return Err(Error::UpdateClaim {
                            claim: name,
                            source,
                        })
                    }
                },
            };
            let mut claim = current;
            if claim_owner_refs(&mut claim, self.set, (pod_name, pod_uid), ordinal) {
                claim.metadata.managed_fields = None;
                api.replace(&name, &PostParams::default(), &claim)
                    .await
                    .map_err(|source| Error::UpdateClaim {
                        claim: name.clone(),
                        source,
                    })?;
            }
        }
        Ok(())
    }

    pub(super) async fn fix_claims(&self, pod: &Pod) -> Result<()> {
        let Some(ordinal) = ordinal_of(pod) else {
            return Ok(());
        };
        if self.claims_match_policy(pod) {
            return Ok(());
        }
        self.update_claim_refs(&pod.name_any(), &pod.uid().unwrap_or_default(), ordinal)
            .await
    }

    /// Upstream's `UpdateStatefulPod`: restores the pod's identity labels, creates its
    /// missing claims and fixes their ownerReferences. (A pod's volumes cannot change
    /// once it exists; storage is fixed through the claims only.)
    pub(super) async fn update_pod(&self, pod: &Pod) -> Result<()> {
        let name = pod.name_any();
        let Some(ordinal) = ordinal_of(pod) else {
            return Ok(());
        };
        let result = async {
            if !storage_matches(self.set, pod) {
                self.create_claims(&name, ordinal).await?;
            }
            self.update_claim_refs(&name, &pod.uid().unwrap_or_default(), ordinal)
                .await?;
            if identity_matches(self.set, pod) {
                return Ok(false);
            }
            let api: Api<Pod> = Api::namespaced(
                self.state.ctx.client.clone(),
                &self.set.namespace().unwrap_or_default(),
            );
            let patch = json!({"metadata": {
                "labels": {POD_NAME_LABEL: name, POD_INDEX_LABEL: ordinal.to_string()},
                "uid": pod.uid(),
            }});
            api.patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
                .map_err(|source| Error::UpdatePod {
                    set: self.set.name_any(),
                    pod: name.clone(),
                    source,
                })?;
            Ok(true)
        }
        .await;
        match &result {
            Ok(true) => self.state.pod_event(self.set, "update", &name, None),
            Ok(false) => {}
            Err(e) => self.state.pod_event(self.set, "update", &name, Some(e)),
        }
        result.map(|_| ())
    }
}
