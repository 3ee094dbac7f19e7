//! persistentvolume-binder: binds PersistentVolumeClaims to pre-provisioned
//! PersistentVolumes and follows both through their phases (upstream's
//! pkg/controller/volume/persistentvolume, without dynamic provisioning: pikube serves no
//! StorageClasses, so every claim binds immediately).
//!
//! - A claim without `spec.volumeName` gets the smallest Available volume that satisfies
//!   it: same storage class (unset on both counts as ""), same volumeMode, every access
//!   mode asked for, enough capacity, labels matching the claim's selector. A volume
//!   pre-bound to the claim (`claimRef` naming it) wins. None: a `FailedBinding` event,
//!   and the claim stays Pending.
//! - Binding is upstream's order of writes, each one resumable: the volume's `claimRef`
//!   (with the claim's uid), the volume Bound, the claim's `volumeName` with the
//!   `pv.kubernetes.io/bind-completed` annotation, the claim Bound with the volume's
//!   capacity and access modes. Writes carry the cached resourceVersion, so two claims
//!   racing for one volume cannot both get it.
//! - A claim naming a volume that is gone is Lost (`ClaimLost`); a volume whose claim is
//!   gone is Released, then reclaimed by its policy: Retain keeps it Released, Delete
//!   deletes the PersistentVolume object (pikube has no volume plugins to wipe the
//!   backing storage: the data stays where it was), Recycle (deprecated upstream) fails.
//! - Everything is looked at again every `--pvclaimbinder-sync-period` (15 s).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api_types::quantity::Quantity as Amount;
use api_types::selector::LabelSelector;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tracing::{debug, warn};

use super::controller_utils::only_uid;
use super::controller_utils::publish_event;
use super::Context;
use crate::informers::key;

pub const NAME: &str = "persistentvolume-binder";
const COMPONENT: &str = "persistentvolume-controller";
const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// The annotation older clients set instead of `spec.storageClassName`.
const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing {what}: {source}")]
    Write {
        what: String,
        #[source]
        source: kube::Error,
    },
}

fn write_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Write { what, source }
}

struct State {
    ctx: Context,
    recorder: Recorder,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
}

pub fn start(ctx: &Context) -> BoxFuture<'static, ()> {
    let claims = ctx.informers.store::<PersistentVolumeClaim>();
    let volumes = ctx.informers.store::<PersistentVolume>();
    let state = Arc::new(State {
        ctx: ctx.clone(),
        recorder: ctx.recorder(COMPONENT),
        claims: claims.clone(),
        volumes: volumes.clone(),
    });
    let config = controller::Config::default().concurrency(4);
    // Claims: woken by their volume, and by any volume that turns Available.
    let for_claims = state.clone();
    let claim_loop =
        Controller::for_shared_stream(ctx.informers.subscribe::<PersistentVolumeClaim>(), claims)
            .with_config(config.clone())
            .watches_shared_stream(
                ctx.informers.subscribe::<PersistentVolume>(),
                move |pv: Arc<PersistentVolume>| for_claims.claims_for_volume(&pv),
            )
            .run(reconcile_claim, error_policy, state.clone())
            .for_each(|_| async {});
    // Volumes: woken by the claims they name or that name them.
    let for_volumes = state.clone();
    let volume_loop =
        Controller::for_shared_stream(ctx.informers.subscribe::<PersistentVolume>(), volumes)
            .with_config(config)
            .watches_shared_stream(
                ctx.informers.subscribe::<PersistentVolumeClaim>(),
                move |pvc: Arc<PersistentVolumeClaim>| for_volumes.volumes_for_claim(&pvc),
            )
            .run(reconcile_volume, error_policy, state)
            .for_each(|_| async {});
    async move {
        futures::join!(claim_loop, volume_loop);
    }
    .boxed()
}

impl State {
    fn claims_for_volume(&self, pv: &PersistentVolume) -> Vec<ObjectRef<PersistentVolumeClaim>> {
        match pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
            Some(r) => vec![ObjectRef::new(r.name.as_deref().unwrap_or_default())
                .within(r.namespace.as_deref().unwrap_or_default())],
            // Available: every claim still waiting for a volume may want it.
            None => self
                .claims
                .state()
                .iter()
                .filter(|c| volume_name(c).is_none())
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect(),
        }
    }

    fn volumes_for_claim(&self, pvc: &PersistentVolumeClaim) -> Vec<ObjectRef<PersistentVolume>> {
        let mut out: Vec<ObjectRef<PersistentVolume>> = self
            .volumes
            .state()
            .iter()
            .filter(|v| claim_ref(v).is_some_and(|r| names_claim(r, pvc)))
            .map(|v| ObjectRef::from_obj(v.as_ref()))
            .collect();
        if let Some(name) = volume_name(pvc) {
            let r = ObjectRef::new(name);
            if !out.contains(&r) {
                out.push(r);
            }
        }
        out
    }

    fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let recorder = self.recorder.clone();
        let reference = obj.object_ref(&());
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        publish_event(recorder, reference, event);
    }

    fn resync(&self) -> Action {
        Action::requeue(self.ctx.options.pvclaimbinder_sync_period)
    }

    fn claim_api(&self, ns: &str) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.ctx.client.clone(), ns)
    }

    fn volume_api(&self) -> Api<PersistentVolume> {
        Api::all(self.ctx.client.clone())
    }
}

fn error_policy<K>(_obj: Arc<K>, error: &Error, _state: Arc<State>) -> Action {
    warn!(%error, "sync failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

fn volume_name(pvc: &PersistentVolumeClaim) -> Option<&str> {
    pvc.spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn claim_ref(pv: &PersistentVolume) -> Option<&ObjectReference> {
    pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref())
}

/// Whether a claimRef names this claim (by namespace and name, and by uid once it has
/// one: a claim deleted and recreated under the same name is another claim).
fn names_claim(r: &ObjectReference, pvc: &PersistentVolumeClaim) -> bool {
    r.namespace == pvc.namespace()
        && r.name.as_deref() == Some(pvc.name_any().as_str())
        && r.uid
            .as_deref()
            .is_none_or(|u| u.is_empty() || Some(u) == pvc.uid().as_deref())
}

fn phase_of_volume(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn phase_of_claim(pvc: &PersistentVolumeClaim) -> &str {
    pvc.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Upstream's `GetPersistentVolumeClaimClass`: the beta annotation, then the field, else "".
fn claim_class(pvc: &PersistentVolumeClaim) -> &str {
    pvc.annotations()
        .get(BETA_STORAGE_CLASS)
        .map(String::as_str)
        .or_else(|| {
            pvc.spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref())
        })
        .unwrap_or("")
}

fn volume_class(pv: &PersistentVolume) -> &str {
    pv.annotations()
        .get(BETA_STORAGE_CLASS)
        .map(String::as_str)
        .or_else(|| {
            pv.spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref())
        })
        .unwrap_or("")
}

fn storage(
    map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> Option<Amount> {
    map.and_then(|m| m.get("storage"))
        .and_then(|q| q.0.parse().ok())
}

fn claim_request(pvc: &PersistentVolumeClaim) -> Amount {
    storage(
        pvc.spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref()),
    )
    .unwrap_or_else(|| Amount::from_units(0, api_types::quantity::Format::BinarySI))
}

fn volume_capacity(pv: &PersistentVolume) -> Option<Amount> {
    storage(pv.spec.as_ref().and_then(|s| s.capacity.as_ref()))
}

/// Why `pv` cannot serve `pvc`, or None when it can (upstream's
/// `checkVolumeSatisfyClaim`, plus the selector `findMatchingVolume` applies).
pub fn mismatch(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> Option<String> {
    let (Some(vs), Some(cs)) = (pv.spec.as_ref(), pvc.spec.as_ref()) else {
        return Some("no spec".into());
    };
    match volume_capacity(pv) {
        Some(cap) if cap >= claim_request(pvc) => {}
        _ => return Some("requested PV is too small".into()),
    }
    if volume_class(pv) != claim_class(pvc) {
        return Some("storageClassName does not match".into());
    }
    let mode = |m: Option<&String>| m.map_or("Filesystem", String::as_str).to_string();
    if mode(vs.volume_mode.as_ref()) != mode(cs.volume_mode.as_ref()) {
        return Some("incompatible volumeMode".into());
    }
    let have = vs.access_modes.as_deref().unwrap_or_default();
    if !cs.access_modes.iter().flatten().all(|m| have.contains(m)) {
        return Some("incompatible accessMode".into());
    }
    if let Some(selector) = &cs.selector {
        match LabelSelector::from_meta(selector) {
            Ok(s) if s.matches(pv.labels()) => {}
            _ => return Some("volume labels do not match the claim's selector".into()),
        }
    }
    None
}

/// Upstream's `findBestMatchForClaim`: a volume pre-bound to the claim, else the
/// smallest available volume that satisfies it.
pub fn best_match(
    volumes: &[Arc<PersistentVolume>],
    pvc: &PersistentVolumeClaim,
) -> Option<Arc<PersistentVolume>> {
    let mut best: Option<(Amount, Arc<PersistentVolume>)> = None;
    for pv in volumes {
        if pv.metadata.deletion_timestamp.is_some() || mismatch(pv, pvc).is_some() {
            continue;
        }
        match claim_ref(pv) {
            Some(r) if names_claim(r, pvc) => return Some(pv.clone()),
            Some(_) => continue,
            None => {}
        }
        if !matches!(phase_of_volume(pv), "Available" | "" | "Pending") {
            continue;
        }
        let cap = volume_capacity(pv)?;
        let better = match &best {
            None => true,
            Some((b, bpv)) => cap < *b || (cap == *b && pv.name_any() < bpv.name_any()),
        };
        if better {
            best = Some((cap, pv.clone()));
        }
    }
    best.map(|(_, pv)| pv)
}

async fn reconcile_claim(
    pvc: Arc<PersistentVolumeClaim>,
    state: Arc<State>,
) -> Result<Action, Error> {
    let metrics = state.ctx.metrics.clone();
    metrics.observe(NAME, sync_claim(pvc, state)).await
}

async fn reconcile_volume(pv: Arc<PersistentVolume>, state: Arc<State>) -> Result<Action, Error> {
    let metrics = state.ctx.metrics.clone();
    metrics.observe(NAME, sync_volume(pv, state)).await
}

/// Upstream's `syncClaim`.
async fn sync_claim(pvc: Arc<PersistentVolumeClaim>, state: Arc<State>) -> Result<Action, Error> {
    if pvc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(name) = volume_name(&pvc) else {
        // Unbound: find it a volume.
        let volumes = state.volumes.state();
        match best_match(&volumes, &pvc) {
            Some(pv) => bind(&pv, &pvc, &state).await?,
            None => {
                set_claim_phase(&pvc, "Pending", &state).await?;
                let note = if claim_class(&pvc).is_empty() {
                    "no persistent volumes available for this claim and no storage class is set"
                        .to_string()
                } else {
                    format!(
                        "no persistent volumes available for this claim with storage class {:?}",
                        claim_class(&pvc)
                    )
                };
                state.event(pvc.as_ref(), EventType::Normal, "FailedBinding", note);
            }
        }
        return Ok(state.resync());
    };
    let pv = match state.volumes.get(&ObjectRef::new(name)) {
        Some(pv) => Some(pv),
        // The cache may lag behind a volume just created: ask the apiserver.
        None => state
            .volume_api()
            .get_opt(name)
            .await
            .map_err(write_error(format!("reading PersistentVolume {name}")))?
            .map(Arc::new),
    };
    let Some(pv) = pv else {
        if phase_of_claim(&pvc) == "Bound" || pvc.annotations().contains_key(BIND_COMPLETED) {
            if phase_of_claim(&pvc) != "Lost" {
                set_claim_phase(&pvc, "Lost", &state).await?;
                state.event(
                    pvc.as_ref(),
                    EventType::Warning,
                    "ClaimLost",
                    "Bound claim has lost its PersistentVolume. Data on the volume is lost!".into(),
                );
            }
        } else {
            set_claim_phase(&pvc, "Pending", &state).await?;
        }
        return Ok(state.resync());
    };
    match claim_ref(&pv) {
        // The claim asks for this volume by name (or the bind is half done): finish it.
        None => match mismatch(&pv, &pvc) {
            None => bind(&pv, &pvc, &state).await?,
            Some(why) => state.event(
                pvc.as_ref(),
                EventType::Warning,
                "VolumeMismatch",
                format!("Cannot bind to requested volume {name:?}: {why}"),
            ),
        },
        Some(r) if names_claim(r, &pvc) => bind(&pv, &pvc, &state).await?,
        Some(_) => {
            if pvc.annotations().contains_key(BIND_COMPLETED) {
                if phase_of_claim(&pvc) != "Lost" {
                    set_claim_phase(&pvc, "Lost", &state).await?;
                    state.event(
                        pvc.as_ref(),
                        EventType::Warning,
                        "ClaimMisbound",
                        "Two claims are bound to the same volume, this one is bound incorrectly"
                            .into(),
                    );
                }
            } else {
                state.event(
                    pvc.as_ref(),
                    EventType::Warning,
                    "FailedBinding",
                    "volume is already bound to a different claim.".into(),
                );
            }
        }
    }
    Ok(state.resync())
}

/// Upstream's `bind`: each step skipped when already done, so a bind interrupted half
/// way finishes on the next sync.
async fn bind(
    pv: &PersistentVolume,
    pvc: &PersistentVolumeClaim,
    state: &State,
) -> Result<(), Error> {
    let pv_name = pv.name_any();
    let ns = pvc.namespace().unwrap_or_default();
    // 1. The volume's claimRef, with the claim's uid.
    let mut pv = pv.clone();
    let wanted = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: pvc.namespace(),
        name: Some(pvc.name_any()),
        uid: pvc.uid(),
        resource_version: pvc.resource_version(),
        field_path: None,
    };
    let current = claim_ref(&pv);
    if current.is_none_or(|r| r.uid != wanted.uid || r.name != wanted.name) {
        if current.is_none() {
            pv.annotations_mut()
                .insert(BOUND_BY_CONTROLLER.into(), "yes".into());
        }
        pv.spec.get_or_insert_with(Default::default).claim_ref = Some(wanted);
        pv = state
            .volume_api()
            .replace(&pv_name, &PostParams::default(), &pv)
            .await
            .map_err(write_error(format!("binding PersistentVolume {pv_name}")))?;
    }
    // 2. The volume Bound.
    set_volume_phase(&pv, "Bound", None, state).await?;
    // 3. The claim's volumeName and annotations.
    let mut pvc = pvc.clone();
    let named = volume_name(&pvc) == Some(pv_name.as_str());
    if !named || !pvc.annotations().contains_key(BIND_COMPLETED) {
        if !named {
            pvc.annotations_mut()
                .insert(BOUND_BY_CONTROLLER.into(), "yes".into());
            pvc.spec.get_or_insert_with(Default::default).volume_name = Some(pv_name.clone());
        }
        pvc.annotations_mut()
            .insert(BIND_COMPLETED.into(), "yes".into());
        pvc = state
            .claim_api(&ns)
            .replace(&pvc.name_any(), &PostParams::default(), &pvc)
            .await
            .map_err(write_error(format!(
                "binding PersistentVolumeClaim {}",
                key(&pvc)
            )))?;
    }
    // 4. The claim Bound, with what the volume offers.
    let spec = pv.spec.clone().unwrap_or_default();
    let status = pvc.status.clone().unwrap_or_default();
    if status.phase.as_deref() != Some("Bound")
        || status.capacity != spec.capacity
        || status.access_modes != spec.access_modes
    {
        let mut updated = pvc.clone();
        let s = updated.status.get_or_insert_with(Default::default);
        s.phase = Some("Bound".into());
        s.capacity = spec.capacity;
        s.access_modes = spec.access_modes;
        state
            .claim_api(&ns)
            .replace_status(&pvc.name_any(), &PostParams::default(), &updated)
            .await
            .map_err(write_error(format!(
                "updating the status of PersistentVolumeClaim {}",
                key(&pvc)
            )))?;
        debug!(claim = %key(&pvc), volume = %pv_name, "bound");
    }
    Ok(())
}

async fn set_claim_phase(
    pvc: &PersistentVolumeClaim,
    phase: &str,
    state: &State,
) -> Result<(), Error> {
    if phase_of_claim(pvc) == phase {
        return Ok(());
    }
    let mut updated = pvc.clone();
    updated.status.get_or_insert_with(Default::default).phase = Some(phase.into());
    if phase == "Lost" {
        // A lost claim keeps its name of the volume; what it had is gone.
        let s = updated.status.get_or_insert_with(Default::default);
        s.capacity = None;
        s.access_modes = None;
    }
    match state
        .claim_api(&pvc.namespace().unwrap_or_default())
        .replace_status(&pvc.name_any(), &PostParams::default(), &updated)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(write_error(format!(
            "updating the status of PersistentVolumeClaim {}",
            key(pvc)
        ))(e)),
    }
}

/// A volume's phase (and message), with `lastPhaseTransitionTime` when the phase changes.
async fn set_volume_phase(
    pv: &PersistentVolume,
    phase: &str,
    message: Option<String>,
    state: &State,
) -> Result<(), Error> {
    let status = pv.status.clone().unwrap_or_default();
    if status.phase.as_deref() == Some(phase) && status.message == message {
        return Ok(());
    }
    let mut updated = pv.clone();
    let s = updated.status.get_or_insert_with(Default::default);
    if s.phase.as_deref() != Some(phase) {
        s.last_phase_transition_time = Some(Time(Timestamp::now()));
    }
    s.phase = Some(phase.into());
    s.message = message;
    s.reason = None;
    match state
        .volume_api()
        .replace_status(&pv.name_any(), &PostParams::default(), &updated)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(write_error(format!(
            "updating the status of PersistentVolume {}",
            pv.name_any()
        ))(e)),
    }
}

/// Upstream's `syncVolume`.
async fn sync_volume(pv: Arc<PersistentVolume>, state: Arc<State>) -> Result<Action, Error> {
    if pv.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(r) = claim_ref(&pv).cloned() else {
        set_volume_phase(&pv, "Available", None, &state).await?;
        return Ok(state.resync());
    };
    if r.uid.as_deref().is_none_or(str::is_empty) {
        // Pre-bound by the user to a claim by name: the claim's sync binds it.
        set_volume_phase(&pv, "Available", None, &state).await?;
        return Ok(state.resync());
    }
    let ns = r.namespace.clone().unwrap_or_default();
    let name = r.name.clone().unwrap_or_default();
    let cached = state.claims.get(&ObjectRef::new(&name).within(&ns));
    let claim = match cached {
        Some(c) if c.uid() == r.uid => Some(c),
        // Not in the cache (or another claim of that name): make sure with the apiserver
        // before releasing, as upstream does.
        _ => state
            .claim_api(&ns)
            .get_opt(&name)
            .await
            .map_err(write_error(format!(
                "reading PersistentVolumeClaim {ns}/{name}"
            )))?
            .filter(|c| c.uid() == r.uid)
            .map(Arc::new),
    };
    let Some(claim) = claim else {
        release(&pv, &state).await?;
        return Ok(state.resync());
    };
    match volume_name(&claim) {
        // The claim's side of the bind is still to come (its sync does it).
        None => {}
        Some(n) if n == pv.name_any() => set_volume_phase(&pv, "Bound", None, &state).await?,
        // The claim went to another volume: give this one back if we bound it.
        Some(_) if pv.annotations().contains_key(BOUND_BY_CONTROLLER) => {
            let mut updated = (*pv).clone();
            updated.annotations_mut().remove(BOUND_BY_CONTROLLER);
            if let Some(s) = updated.spec.as_mut() {
                s.claim_ref = None;
            }
            let updated = state
                .volume_api()
                .replace(&pv.name_any(), &PostParams::default(), &updated)
                .await
                .map_err(write_error(format!(
                    "unbinding PersistentVolume {}",
                    pv.name_any()
                )))?;
            set_volume_phase(&updated, "Available", None, &state).await?;
        }
        Some(_) => {}
    }
    Ok(state.resync())
}

/// The claim is gone: Released, then the reclaim policy.
async fn release(pv: &PersistentVolume, state: &State) -> Result<(), Error> {
    let policy = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Retain");
    if phase_of_volume(pv) != "Released" && phase_of_volume(pv) != "Failed" {
        set_volume_phase(pv, "Released", None, state).await?;
    }
    match policy {
        "Delete" => {
            let params = only_uid(pv.uid());
            match state.volume_api().delete(&pv.name_any(), &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => {}
                Err(e) => {
                    state.event(
                        pv,
                        EventType::Warning,
                        "VolumeFailedDelete",
                        format!("Error deleting volume: {e}"),
                    );
                    return Err(write_error(format!(
                        "deleting PersistentVolume {}",
                        pv.name_any()
                    ))(e));
                }
            }
        }
        "Recycle" => {
            let message = "No recycler plugin found for the volume: the Recycle reclaim policy is \
                           not supported, use Retain or Delete"
                .to_string();
            if phase_of_volume(pv) != "Failed" {
                state.event(
                    pv,
                    EventType::Warning,
                    "VolumeFailedRecycle",
                    message.clone(),
                );
            }
            // Re-read: the phase may have just changed to Released.
            let fresh = state
                .volume_api()
                .get_opt(&pv.name_any())
                .await
                .map_err(write_error(format!(
                    "reading PersistentVolume {}",
                    pv.name_any()
                )))?;
            if let Some(fresh) = fresh {
                set_volume_phase(&fresh, "Failed", Some(message), state).await?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pv(
        name: &str,
        size: &str,
        class: &str,
        modes: &[&str],
        labels: serde_json::Value,
    ) -> Arc<PersistentVolume> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels},
                "spec": {"capacity": {"storage": size}, "accessModes": modes,
                    "storageClassName": class, "hostPath": {"path": "/tmp/x"}},
                "status": {"phase": "Available"},
            }))
            .unwrap(),
        )
    }

    fn pvc(
        size: &str,
        class: Option<&str>,
        modes: &[&str],
        selector: Option<serde_json::Value>,
    ) -> PersistentVolumeClaim {
        let mut v = json!({
            "metadata": {"name": "data", "namespace": "default", "uid": "c-1"},
            "spec": {"accessModes": modes, "resources": {"requests": {"storage": size}}},
        });
        if let Some(c) = class {
            v["spec"]["storageClassName"] = json!(c);
        }
        if let Some(s) = selector {
            v["spec"]["selector"] = s;
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_smallest_satisfying_volume_wins() {
        let vols = vec![
            pv("big", "10Gi", "", &["ReadWriteOnce"], json!({})),
            pv("small", "1Gi", "", &["ReadWriteOnce"], json!({})),
            pv("tiny", "100Mi", "", &["ReadWriteOnce"], json!({})),
            pv("rox", "2Gi", "", &["ReadOnlyMany"], json!({})),
            pv("fast", "1Gi", "fast", &["ReadWriteOnce"], json!({})),
        ];
        let claim = pvc("500Mi", None, &["ReadWriteOnce"], None);
        assert_eq!(best_match(&vols, &claim).unwrap().name_any(), "small");
        let claim = pvc("500Mi", Some("fast"), &["ReadWriteOnce"], None);
        assert_eq!(best_match(&vols, &claim).unwrap().name_any(), "fast");
        let claim = pvc("500Mi", None, &["ReadOnlyMany"], None);
        assert_eq!(best_match(&vols, &claim).unwrap().name_any(), "rox");
        let claim = pvc("20Gi", None, &["ReadWriteOnce"], None);
        assert!(best_match(&vols, &claim).is_none());
        let mut vols = vols;
        vols.push(pv(
            "labelled",
            "5Gi",
            "",
            &["ReadWriteOnce"],
            json!({"disk": "ssd"}),
        ));
        let claim = pvc(
            "500Mi",
            None,
            &["ReadWriteOnce"],
            Some(json!({"matchLabels": {"disk": "ssd"}})),
        );
        assert_eq!(best_match(&vols, &claim).unwrap().name_any(), "labelled");
    }

    #[test]
    fn volumes_bound_elsewhere_are_skipped_and_prebound_ones_preferred() {
        let mut taken = (*pv("taken", "1Gi", "", &["ReadWriteOnce"], json!({}))).clone();
        taken.spec.as_mut().unwrap().claim_ref = Some(ObjectReference {
            namespace: Some("default".into()),
            name: Some("other".into()),
            uid: Some("c-2".into()),
            ..Default::default()
        });
        let mut mine = (*pv("mine", "5Gi", "", &["ReadWriteOnce"], json!({}))).clone();
        mine.spec.as_mut().unwrap().claim_ref = Some(ObjectReference {
            namespace: Some("default".into()),
            name: Some("data".into()),
            ..Default::default()
        });
        let claim = pvc("500Mi", None, &["ReadWriteOnce"], None);
        let vols = vec![
            Arc::new(taken),
            pv("free", "1Gi", "", &["ReadWriteOnce"], json!({})),
        ];
        assert_eq!(best_match(&vols, &claim).unwrap().name_any(), "free");
        let mut vols = vols;
        vols.push(Arc::new(mine));
        assert_eq!(best_match(&vols, &claim).unwrap().name_any(), "mine");
    }
}
