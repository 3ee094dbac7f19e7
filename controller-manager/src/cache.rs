//! The Pod as the controllers cache it: the fields some controller reads, nothing else.
//!
//! Pods outnumber every other kind, and `k8s_openapi`'s Pod is large even when most of it
//! is empty (a Container alone is over 2 KiB inline, a Volume over 3 KiB), so a cluster of
//! 10,000 pods cost the controller-manager ~95 MiB of heap for its pod informer. This
//! projection keeps the same JSON field names and Rust field names as `k8s_openapi`, so
//! code reads `pod.spec.as_ref()?.node_name` either way; it deserialises straight from the
//! watch, dropping what no controller looks at (env, commands, probes, mounts, most
//! volume sources, managed fields...). Controllers write pods through patches, and create
//! them as full `k8s_openapi` Pods from templates.
//!
//! Adding a controller that reads a pod field not here: add the field, with the
//! `k8s_openapi` name and type.
//!
//! Some things are leaner still than their `k8s_openapi` types, because every pod has
//! them: strings that many pods hold the same (phase, node, image, container and
//! condition names, restart policy...) are [`Shared`], one copy for all, read as `&str`;
//! a container's `resources` hold their lists as boxed slices (a BTreeMap allocates a
//! ~0.5 KiB node even for one entry); `status.conditions` keep only the types a
//! controller reads (`Ready`, `DisruptionTarget`, and any type the kubelet does not set
//! itself, e.g. readiness gates), without `message` and `lastProbeTime`; and
//! `metadata.generateName` is dropped; labels and ownerReferences, the same for every pod
//! of a ReplicaSet, are kept once for all the pods that have them (outside the metadata:
//! read them with `pod.labels()` / `pod.owner_references()`, or [`Owned`] in generic code).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;

use k8s_openapi::api::core::v1::{
    Affinity, ContainerPort, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, PersistentVolumeClaimVolumeSource, PodIP, PodReadinessGate, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::{Deserialize, Serialize};

/// The annotation `kubectl apply` keeps a whole copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(from = "WirePod", into = "WirePod")]
pub struct Pod {
    /// The metadata without its labels and ownerReferences: those are shared by the pods
    /// that have the same (read them with [`Pod::labels`] and [`Pod::owner_references`],
    /// which `pod.labels()` and `pod.owner_references()` call ahead of `ResourceExt`'s, or
    /// through [`Owned`] in code generic over kinds).
    pub metadata: ObjectMeta,
    labels: Option<Arc<BTreeMap<String, String>>>,
    owners: Option<Arc<Owners>>,
    pub spec: Option<PodSpec>,
    pub status: Option<PodStatus>,
}

impl Pod {
    /// The pod's labels (shadows `ResourceExt::labels`, which would read the metadata the
    /// labels were moved out of).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        self.labels.as_deref().unwrap_or(&NONE)
    }

    /// The pod's labels to change (shadows `ResourceExt::labels_mut`); copies them first
    /// when other pods share them.
    pub fn labels_mut(&mut self) -> &mut BTreeMap<String, String> {
        Arc::make_mut(self.labels.get_or_insert_default())
    }

    /// The pod's ownerReferences (shadows `ResourceExt::owner_references`).
    pub fn owner_references(&self) -> &[OwnerReference] {
        self.owners.as_deref().map_or(&[], |o| &o.0)
    }
}

/// Objects whose ownerReferences controllers read: every `k8s_openapi` kind through its
/// metadata, and the cached [`Pod`], which keeps them outside its metadata.
pub trait Owned {
    fn owners(&self) -> &[OwnerReference];
}

impl<K: k8s_openapi::Metadata<Ty = ObjectMeta>> Owned for K {
    fn owners(&self) -> &[OwnerReference] {
        self.metadata()
            .owner_references
            .as_deref()
            .unwrap_or_default()
    }
}

impl Owned for Pod {
    fn owners(&self) -> &[OwnerReference] {
        self.owner_references()
    }
}

/// The Pod as it is on the wire, which [`Pod`] is read from and written as.
#[derive(Deserialize, Serialize)]
struct WirePod {
    #[serde(default, deserialize_with = "lean_metadata")]
    metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spec: Option<PodSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<PodStatus>,
}

impl From<WirePod> for Pod {
    fn from(mut wire: WirePod) -> Pod {
        let labels = wire.metadata.labels.take().filter(|l| !l.is_empty());
        let owners = wire
            .metadata
            .owner_references
            .take()
            .filter(|o| !o.is_empty());
        Pod {
            labels: labels.map(|l| LABEL_SETS.lock().intern(l)),
            owners: owners.map(|o| OWNER_SETS.lock().intern(Owners(o))),
            metadata: wire.metadata,
            spec: wire.spec,
            status: wire.status,
        }
    }
}

impl From<Pod> for WirePod {
    fn from(pod: Pod) -> WirePod {
        let mut metadata = pod.metadata;
        metadata.labels = pod.labels.map(Arc::unwrap_or_clone);
        metadata.owner_references = pod.owners.map(|o| Arc::unwrap_or_clone(o).0);
        WirePod {
            metadata,
            spec: pod.spec,
            status: pod.status,
        }
    }
}

/// Label sets and owner lists many pods hold the same (every pod of a ReplicaSet has its
/// template's labels and the same owner): one copy for all of them. A `BTreeMap` costs a
/// ~0.5 KiB node even for two labels and an ownerReference four strings, so per pod these
/// were the largest things cached.
static LABEL_SETS: LazyLock<Mutex<InternTable<BTreeMap<String, String>>>> =
    LazyLock::new(Default::default);
static OWNER_SETS: LazyLock<Mutex<InternTable<Owners>>> = LazyLock::new(Default::default);

/// A table of shared values, dropping those no pod holds any more whenever it has doubled
/// (pods with labels of their own, such as a StatefulSet's, come and go).
struct InternTable<T> {
    values: HashSet<Arc<T>>,
    sweep_at: usize,
}

impl<T> Default for InternTable<T> {
    fn default() -> Self {
        InternTable {
            values: HashSet::new(),
            sweep_at: 1024,
        }
    }
}

impl<T: std::hash::Hash + Eq> InternTable<T> {
    fn intern(&mut self, value: T) -> Arc<T> {
        if let Some(have) = self.values.get(&value) {
            return have.clone();
        }
        if self.values.len() >= self.sweep_at {
            self.values.retain(|v| Arc::strong_count(v) > 1);
            self.sweep_at = (self.values.len() * 2).max(1024);
        }
        let new = Arc::new(value);
        self.values.insert(new.clone());
        new
    }
}

/// A pod's ownerReferences, comparable and hashable so that they can be shared.
#[derive(Clone, Debug, PartialEq)]
struct Owners(Vec<OwnerReference>);

impl Eq for Owners {}

impl std::hash::Hash for Owners {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        for r in &self.0 {
            (&r.api_version, &r.kind, &r.name, &r.uid).hash(h);
            (r.controller, r.block_owner_deletion).hash(h);
        }
    }
}

/// Metadata without managed fields and without kubectl's copy of the whole object.
fn lean_metadata<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let mut meta = ObjectMeta::deserialize(d)?;
    meta.managed_fields = None;
    meta.generate_name = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
    Ok(meta)
}

impl k8s_openapi::Resource for Pod {
    const API_VERSION: &'static str = "v1";
    const GROUP: &'static str = "";
    const KIND: &'static str = "Pod";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "pods";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

/// `kube::Resource` directly rather than through `k8s_openapi::Metadata`, so that
/// [`Owned`] can read a pod's ownerReferences from outside its metadata.
impl kube::Resource for Pod {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind((): &()) -> std::borrow::Cow<'_, str> {
        <Pod as k8s_openapi::Resource>::KIND.into()
    }

    fn group((): &()) -> std::borrow::Cow<'_, str> {
        <Pod as k8s_openapi::Resource>::GROUP.into()
    }

    fn version((): &()) -> std::borrow::Cow<'_, str> {
        <Pod as k8s_openapi::Resource>::VERSION.into()
    }

    fn plural((): &()) -> std::borrow::Cow<'_, str> {
        <Pod as k8s_openapi::Resource>::URL_PATH_SEGMENT.into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Box<Affinity>>,
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_containers: Option<Vec<Container>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<Shared>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead: Option<BTreeMap<String, Quantity>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<Shared>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_gates: Option<Vec<PodReadinessGate>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<Shared>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_name: Option<Shared>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<Shared>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<Volume>>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub name: Shared,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Shared>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<ContainerPort>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<Shared>,
}

/// A volume's name, and its claim when it is a persistentVolumeClaim volume (the only
/// source a controller reads).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PersistentVolumeClaimVolumeSource>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(
        default,
        deserialize_with = "read_conditions",
        skip_serializing_if = "Option::is_none"
    )]
    pub conditions: Option<Vec<PodCondition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_statuses: Option<Vec<ContainerStatus>>,
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Shared>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_container_statuses: Option<Vec<ContainerStatus>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nominated_node_name: Option<Shared>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Shared>,
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    #[serde(default, rename = "podIPs", skip_serializing_if = "Option::is_none")]
    pub pod_ips: Option<Vec<PodIP>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos_class: Option<Shared>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Shared>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    pub name: Shared,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub restart_count: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ContainerState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_state: Option<ContainerState>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<ContainerStateRunning>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminated: Option<Box<ContainerStateTerminated>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<ContainerStateWaiting>,
}

/// The condition types the kubelet sets that no controller reads.
const UNREAD_CONDITIONS: &[&str] = &[
    "PodScheduled",
    "Initialized",
    "ContainersReady",
    "PodReadyToStartContainers",
];

fn read_conditions<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<PodCondition>>, D::Error> {
    let Some(all) = Option::<Vec<PodCondition>>::deserialize(d)? else {
        return Ok(None);
    };
    let kept: Vec<PodCondition> = all
        .into_iter()
        .filter(|c| !UNREAD_CONDITIONS.contains(&&*c.type_))
        .collect();
    Ok(Some(kept))
}

/// A pod condition without `message` and `lastProbeTime`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodCondition {
    #[serde(rename = "type")]
    pub type_: Shared,
    pub status: Shared,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Shared>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// A string many pods hold the same (a phase, a node name, an image, a container name):
/// one copy shared by all of them, from a process-wide table. Reads as a `str`.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shared(Arc<str>);

/// Distinct strings kept at most; past it (a bug sending unique values here), strings
/// are no longer shared.
const SHARED_MAX: usize = 65_536;

static SHARED: LazyLock<Mutex<HashSet<Arc<str>>>> = LazyLock::new(Default::default);

impl Shared {
    pub fn new(s: &str) -> Shared {
        let mut table = SHARED.lock();
        if let Some(have) = table.get(s) {
            return Shared(have.clone());
        }
        let new: Arc<str> = Arc::from(s);
        if table.len() < SHARED_MAX {
            table.insert(new.clone());
        }
        Shared(new)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Shared {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Shared {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Shared {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Shared {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Shared {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Shared {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<Shared> for String {
    fn eq(&self, other: &Shared) -> bool {
        **self == *other.0
    }
}

impl PartialEq<Shared> for str {
    fn eq(&self, other: &Shared) -> bool {
        *self == *other.0
    }
}

impl From<&str> for Shared {
    fn from(s: &str) -> Shared {
        Shared::new(s)
    }
}

impl From<Shared> for String {
    fn from(s: Shared) -> String {
        s.0.to_string()
    }
}

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Shared {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Shared {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Shared, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Shared;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Shared, E> {
                Ok(Shared::new(v))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// A container's `resources` (`requests`, `limits`; `claims` are not read).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct ResourceRequirements {
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub limits: ResourceList,
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub requests: ResourceList,
}

/// Named quantities, read and written as the JSON object upstream uses; names and
/// amounts are [`Shared`] (every replica asks for the same).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceList(pub Box<[(Shared, Shared)]>);

impl ResourceList {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The amount asked for `name`, as written (e.g. `"500m"`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, q)| q.as_str())
    }
}

impl Serialize for ResourceList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de> Deserialize<'de> for ResourceList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ResourceList, D::Error> {
        let map = Option::<BTreeMap<Shared, Shared>>::deserialize(d)?.unwrap_or_default();
        Ok(ResourceList(map.into_iter().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_what_controllers_read_under_upstream_names() {
        let full = json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u",
                "annotations": {LAST_APPLIED: "{}", "keep": "me"},
                "managedFields": [{"manager": "kubectl"}]},
            "spec": {"nodeName": "n1", "hostname": "h", "subdomain": "s",
                "containers": [{"name": "c", "image": "i", "env": [{"name": "A", "value": "1"}],
                    "ports": [{"name": "http", "containerPort": 80}],
                    "resources": {"requests": {"cpu": "10m"}}}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}},
                    {"name": "cfg", "configMap": {"name": "x"}}]},
            "status": {"phase": "Running", "podIP": "10.42.0.5", "podIPs": [{"ip": "10.42.0.5"}],
                "hostIP": "192.168.1.2",
                "conditions": [{"type": "Ready", "status": "True", "message": "m"},
                    {"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [{"name": "c", "ready": true, "restartCount": 2, "image": "i",
                    "imageID": "", "state": {"terminated": {"exitCode": 3}}}]},
        });
        let pod: Pod = serde_json::from_value(full.clone()).unwrap();
        assert!(pod.metadata.managed_fields.is_none());
        assert_eq!(
            pod.metadata.annotations,
            Some([("keep".to_string(), "me".to_string())].into())
        );
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert_eq!(
            spec.containers[0].ports.as_ref().unwrap()[0].container_port,
            80
        );
        let volumes = spec.volumes.as_ref().unwrap();
        assert_eq!(
            volumes[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "data-web-0"
        );
        assert!(volumes[1].persistent_volume_claim.is_none());
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.pod_ip.as_deref(), Some("10.42.0.5"));
        assert_eq!(status.host_ip.as_deref(), Some("192.168.1.2"));
        assert_eq!(status.pod_ips.as_ref().unwrap()[0].ip, "10.42.0.5");
        let c = &status.container_statuses.as_ref().unwrap()[0];
        assert_eq!((c.ready, c.restart_count), (true, 2));
        let terminated = c.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(terminated.exit_code, 3);
        let resources = spec.containers[0].resources.as_ref().unwrap();
        assert_eq!(resources.requests.get("cpu"), Some("10m"));
        assert!(resources.limits.is_empty());
        // What is kept reads back as a k8s_openapi Pod with the same values.
        let conditions = status.conditions.as_ref().unwrap();
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].type_, "Ready");
        let back: k8s_openapi::api::core::v1::Pod =
            serde_json::from_value(serde_json::to_value(&pod).unwrap()).unwrap();
        assert_eq!(back.status.unwrap().pod_ip.as_deref(), Some("10.42.0.5"));
        let requests = back.spec.unwrap().containers[0]
            .resources
            .clone()
            .unwrap()
            .requests;
        assert_eq!(requests.unwrap()["cpu"].0, "10m");
    }
}
