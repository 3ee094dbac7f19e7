//! The scheduler's compact views of Pods and Nodes.
//!
//! Informers hand us full `Pod` and `Node` objects; the scheduler keeps only what placement
//! needs (requests, ports, labels, affinity, tolerations, ...), parsed once when the object
//! arrives. That keeps memory small at 10,000 pods and makes every filter a read of
//! pre-parsed fields rather than a walk through JSON-shaped structs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use api_types::quantity::Quantity as ParsedQuantity;
use api_types::selector::LabelSelector;
use k8s_openapi::api::core::v1::{
    Affinity, Container, Node, NodeSelector, Pod, PodAffinityTerm, PreferredSchedulingTerm, Taint,
    Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Requests counted for a container that asks for no CPU, when scoring (upstream
/// `DefaultMilliCPURequest`), so that many zero-request pods do not pile onto one node.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory counted for a container that asks for none, when scoring (200 MiB, upstream).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
pub const PODS: &str = "pods";

/// Amounts of compute resources: CPU in millicores, memory and storage in bytes, the pod
/// count, and every other (extended, hugepages) resource by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resource {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub allowed_pod_number: i64,
    pub scalar: BTreeMap<String, i64>,
}

impl Resource {
    /// Reads a `ResourceList` (requests, limits, capacity or allocatable).
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Resource {
        let mut r = Resource::default();
        for (name, q) in list.into_iter().flatten() {
            r.set(name, q);
        }
        r
    }

    fn set(&mut self, name: &str, q: &Quantity) {
        let Ok(parsed) = ParsedQuantity::parse(&q.0) else {
            return;
        };
        match name {
            CPU => self.milli_cpu = clamp(parsed.milli_value()),
            MEMORY => self.memory = clamp(parsed.value()),
            EPHEMERAL_STORAGE => self.ephemeral_storage = clamp(parsed.value()),
            PODS => self.allowed_pod_number = clamp(parsed.value()),
            _ if is_scalar_resource(name) => {
                self.scalar.insert(name.to_string(), clamp(parsed.value()));
            }
            _ => {}
        }
    }

    pub fn get(&self, name: &str) -> i64 {
        match name {
            CPU => self.milli_cpu,
            MEMORY => self.memory,
            EPHEMERAL_STORAGE => self.ephemeral_storage,
            PODS => self.allowed_pod_number,
            _ => self.scalar.get(name).copied().unwrap_or(0),
        }
    }

    pub fn add(&mut self, other: &Resource) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.allowed_pod_number += other.allowed_pod_number;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    pub fn sub(&mut self, other: &Resource) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.allowed_pod_number -= other.allowed_pod_number;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Each resource becomes the larger of the two (init containers run one at a time).
    fn set_max(&mut self, other: &Resource) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }
}

fn clamp(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// Extended resources (`example.com/gpu`), hugepages and attachable volume counts are the
/// "scalar" resources of upstream's `Resource`: anything but the four native ones whose name
/// is domain-prefixed or `hugepages-*`.
pub fn is_scalar_resource(name: &str) -> bool {
    name.starts_with("hugepages-")
        || name.starts_with("attachable-volumes-")
        || (name.contains('/') && !name.starts_with("kubernetes.io/"))
        || name.starts_with("requests.")
}

/// A host port a pod asks for: (hostIP, protocol, hostPort). An empty IP means 0.0.0.0.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    /// Upstream `HostPortInfo` semantics: the same protocol and port conflict when either
    /// side binds every address (0.0.0.0) or both bind the same address.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || is_any_ip(&self.ip) || is_any_ip(&other.ip))
    }
}

fn is_any_ip(ip: &str) -> bool {
    ip.is_empty() || ip == "0.0.0.0" || ip == "::"
}

/// An inter-pod (anti-)affinity term with its selectors parsed once.
#[derive(Clone, Debug)]
pub struct AffinityTerm {
    pub selector: LabelSelector,
    /// The namespaces the term looks in: listed ones, or the pod's own when the list and
    /// the namespace selector are both empty.
    pub namespaces: HashSet<String>,
    pub namespace_selector: Option<LabelSelector>,
    pub topology_key: String,
}

impl AffinityTerm {
    fn from_term(
        term: &PodAffinityTerm,
        pod_namespace: &str,
        pod_labels: &BTreeMap<String, String>,
    ) -> Option<AffinityTerm> {
        let mut selector = LabelSelector::from_meta_opt(term.label_selector.as_ref()).ok()?;
        // matchLabelKeys / mismatchLabelKeys: merged into the selector with the incoming
        // pod's own values, as upstream's PodAffinityTerm semantics (beta, on by default).
        let mut extra = Vec::new();
        for key in term.match_label_keys.iter().flatten() {
            if let Some(v) = pod_labels.get(key) {
                extra.push(format!("{key}={v}"));
            }
        }
        for key in term.mismatch_label_keys.iter().flatten() {
            if let Some(v) = pod_labels.get(key) {
                extra.push(format!("{key}!={v}"));
            }
        }
        if !extra.is_empty() && term.label_selector.is_some() {
            let text = selector_text(&selector, &extra);
            selector = LabelSelector::parse(&text).ok()?;
        }
        let mut namespaces: HashSet<String> = term.namespaces.iter().flatten().cloned().collect();
        let namespace_selector = match &term.namespace_selector {
            Some(sel) => Some(LabelSelector::from_meta(sel).ok()?),
            None => None,
        };
        if namespaces.is_empty() && namespace_selector.is_none() {
            namespaces.insert(pod_namespace.to_string());
        }
        Some(AffinityTerm {
            selector,
            namespaces,
            namespace_selector,
            topology_key: term.topology_key.clone(),
        })
    }

    /// Whether `pod` is selected by this term (namespace, then labels). `namespace_labels`
    /// resolves a namespace's labels for namespaceSelector.
    pub fn matches(
        &self,
        pod: &PodInfo,
        namespace_labels: &HashMap<String, BTreeMap<String, String>>,
    ) -> bool {
        let in_namespace = self.namespaces.contains(&pod.namespace)
            || self.namespace_selector.as_ref().is_some_and(|sel| {
                namespace_labels
                    .get(&pod.namespace)
                    .is_some_and(|labels| sel.matches(labels))
            });
        in_namespace && self.selector.matches(&pod.labels)
    }
}

fn selector_text(selector: &LabelSelector, extra: &[String]) -> String {
    let base = selector.to_string();
    let mut parts: Vec<String> = Vec::new();
    if !base.is_empty() {
        parts.push(base);
    }
    parts.extend(extra.iter().cloned());
    parts.join(",")
}

#[derive(Clone, Debug)]
pub struct WeightedAffinityTerm {
    pub term: AffinityTerm,
    pub weight: i32,
}

/// What the scheduler keeps of a Pod: its identity and state, and its [`PodShape`] — what
/// placement reads from the spec — shared by every pod with the same namespace, labels and
/// spec (the replicas of one template), so 10,000 replicas cost one copy of their
/// affinity, tolerations and spread constraints. Fields of the shape read as fields of
/// the pod (`pod.requests`) through `Deref`.
#[derive(Clone, Debug, Default)]
pub struct PodInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub resource_version: String,
    /// A fingerprint of what scheduling reads (labels, annotations, spec): an update that
    /// leaves it unchanged (a status write, our own condition) does not requeue the pod,
    /// as upstream's `isPodUpdated`.
    pub update_key: u64,
    pub node_name: Option<String>,
    pub nominated_node_name: Option<String>,
    pub terminating: bool,
    pub volumes: Vec<PodVolume>,
    pub creation_timestamp: Option<Time>,
    pub start_time: Option<Time>,
    pub owner_uid: Option<String>,
    pub shape: Arc<PodShape>,
}

impl std::ops::Deref for PodInfo {
    type Target = PodShape;

    fn deref(&self) -> &PodShape {
        &self.shape
    }
}

/// The scheduling-relevant part of a pod's namespace, labels and spec.
#[derive(Clone, Debug, Default)]
pub struct PodShape {
    pub labels: BTreeMap<String, String>,
    pub scheduler_name: String,
    pub priority: i32,
    /// `preemptionPolicy: Never`: this pod waits rather than evicting others.
    pub never_preempts: bool,
    pub scheduling_gated: bool,
    /// Effective requests (containers, init containers, sidecars, overhead).
    pub requests: Resource,
    /// CPU and memory with zero requests counted as the upstream defaults, for scoring.
    pub non_zero_cpu: i64,
    pub non_zero_memory: i64,
    pub host_ports: Vec<HostPort>,
    pub node_selector: BTreeMap<String, String>,
    pub required_node_affinity: Option<NodeSelector>,
    pub preferred_node_affinity: Vec<PreferredSchedulingTerm>,
    pub required_affinity_terms: Vec<AffinityTerm>,
    pub required_anti_affinity_terms: Vec<AffinityTerm>,
    pub preferred_affinity_terms: Vec<WeightedAffinityTerm>,
    pub preferred_anti_affinity_terms: Vec<WeightedAffinityTerm>,
    pub tolerations: Vec<Toleration>,
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    pub images: Vec<String>,
}

/// Shapes in use, by the serialised (namespace, labels, spec without nodeName) they were
/// built from. Entries whose pods are all gone are swept as the table grows.
struct ShapeTable {
    shapes: HashMap<u64, (Vec<u8>, std::sync::Weak<PodShape>)>,
    sweep_at: usize,
}

/// The shape for these key bytes: the one in use if any, else a new one from `build`.
fn shared_shape(key: Vec<u8>, build: impl FnOnce() -> PodShape) -> Arc<PodShape> {
    use std::hash::{Hash, Hasher};
    static TABLE: std::sync::OnceLock<std::sync::Mutex<ShapeTable>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        std::sync::Mutex::new(ShapeTable {
            shapes: HashMap::new(),
            sweep_at: 1024,
        })
    });
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let hash = h.finish();
    let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((bytes, weak)) = t.shapes.get(&hash) {
        if *bytes == key {
            if let Some(shape) = weak.upgrade() {
                return shape;
            }
        }
    }
    let shape = Arc::new(build());
    t.shapes.insert(hash, (key, Arc::downgrade(&shape)));
    if t.shapes.len() >= t.sweep_at {
        t.shapes.retain(|_, (_, w)| w.strong_count() > 0);
        t.sweep_at = (t.shapes.len() * 2).max(1024);
    }
    shape
}

/// The volumes VolumeRestrictions looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodVolume {
    /// A PersistentVolumeClaim by name (in the pod's namespace).
    Claim(String),
    GcePersistentDisk {
        pd_name: String,
        read_only: bool,
    },
    AwsElasticBlockStore {
        volume_id: String,
    },
    Rbd {
        monitors: Vec<String>,
        pool: String,
        image: String,
        read_only: bool,
    },
    Iscsi {
        iqn: String,
        lun: i32,
        target_portal: String,
        read_only: bool,
    },
}

impl PodShape {
    fn from_pod(pod: &Pod) -> PodShape {
        let meta = &pod.metadata;
        let default_spec;
        let spec = match &pod.spec {
            Some(spec) => spec,
            None => {
                default_spec = k8s_openapi::api::core::v1::PodSpec::default();
                &default_spec
            }
        };
        let namespace = meta.namespace.clone().unwrap_or_default();
        let labels = meta.labels.clone().unwrap_or_default();
        let (requests, non_zero_cpu, non_zero_memory) = pod_requests(spec);
        let mut host_ports = Vec::new();
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            for p in c.ports.iter().flatten() {
                if let Some(port) = p.host_port.filter(|p| *p > 0) {
                    host_ports.push(HostPort {
                        ip: p.host_ip.clone().unwrap_or_default(),
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        port,
                    });
                }
            }
        }
        let Affinity {
            node_affinity,
            pod_affinity,
            pod_anti_affinity,
        } = spec.affinity.clone().unwrap_or_default();
        let (required_node_affinity, preferred_node_affinity) = match node_affinity {
            Some(na) => (
                na.required_during_scheduling_ignored_during_execution,
                na.preferred_during_scheduling_ignored_during_execution
                    .unwrap_or_default(),
            ),
            None => (None, Vec::new()),
        };
        let terms = |list: Option<Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            list.unwrap_or_default()
                .iter()
                .filter_map(|t| AffinityTerm::from_term(t, &namespace, &labels))
                .collect()
        };
        let weighted = |list: Option<Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
            list.unwrap_or_default()
                .iter()
                .filter_map(|w| {
                    Some(WeightedAffinityTerm {
                        term: AffinityTerm::from_term(&w.pod_affinity_term, &namespace, &labels)?,
                        weight: w.weight,
                    })
                })
                .collect::<Vec<_>>()
        };
        let (required_affinity_terms, preferred_affinity_terms) = match pod_affinity {
            Some(a) => (
                terms(a.required_during_scheduling_ignored_during_execution),
                weighted(a.preferred_during_scheduling_ignored_during_execution),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let (required_anti_affinity_terms, preferred_anti_affinity_terms) = match pod_anti_affinity
        {
            Some(a) => (
                terms(a.required_during_scheduling_ignored_during_execution),
                weighted(a.preferred_during_scheduling_ignored_during_execution),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let images = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .filter_map(|c| c.image.clone())
            .collect();
        PodShape {
            scheduler_name: spec
                .scheduler_name
                .clone()
                .unwrap_or_else(|| crate::DEFAULT_SCHEDULER_NAME.to_string()),
            priority: spec.priority.unwrap_or(0),
            never_preempts: spec.preemption_policy.as_deref() == Some("Never"),
            scheduling_gated: spec
                .scheduling_gates
                .as_ref()
                .is_some_and(|g| !g.is_empty()),
            requests,
            non_zero_cpu,
            non_zero_memory,
            host_ports,
            node_selector: spec.node_selector.clone().unwrap_or_default(),
            required_node_affinity,
            preferred_node_affinity,
            required_affinity_terms,
            required_anti_affinity_terms,
            preferred_affinity_terms,
            preferred_anti_affinity_terms,
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            topology_spread_constraints: spec
                .topology_spread_constraints
                .clone()
                .unwrap_or_default(),
            images,
            labels,
        }
    }
}

impl PodVolume {
    /// The volume if VolumeRestrictions cares about it. Ephemeral volumes are claims named
    /// `<pod>-<volume>`.
    fn of(v: &k8s_openapi::api::core::v1::Volume, pod_name: &str) -> Option<PodVolume> {
        if let Some(pvc) = &v.persistent_volume_claim {
            return Some(PodVolume::Claim(pvc.claim_name.clone()));
        }
        if let Some(ephemeral) = &v.ephemeral {
            let _ = ephemeral;
            return Some(PodVolume::Claim(format!("{pod_name}-{}", v.name)));
        }
        if let Some(gce) = &v.gce_persistent_disk {
            return Some(PodVolume::GcePersistentDisk {
                pd_name: gce.pd_name.clone(),
                read_only: gce.read_only.unwrap_or(false),
            });
        }
        if let Some(ebs) = &v.aws_elastic_block_store {
            return Some(PodVolume::AwsElasticBlockStore {
                volume_id: ebs.volume_id.clone(),
            });
        }
        if let Some(rbd) = &v.rbd {
            return Some(PodVolume::Rbd {
                monitors: rbd.monitors.clone(),
                pool: rbd.pool.clone().unwrap_or_else(|| "rbd".into()),
                image: rbd.image.clone(),
                read_only: rbd.read_only.unwrap_or(false),
            });
        }
        if let Some(iscsi) = &v.iscsi {
            return Some(PodVolume::Iscsi {
                iqn: iscsi.iqn.clone(),
                lun: iscsi.lun,
                target_portal: iscsi.target_portal.clone(),
                read_only: iscsi.read_only.unwrap_or(false),
            });
        }
        None
    }
}

impl PodInfo {
    pub fn from_pod(pod: &Pod) -> PodInfo {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_default();
        // One serialisation serves both keys: the shape's (namespace, labels, spec without
        // nodeName) and the update fingerprint (that, plus annotations and nodeName).
        let shape_key = match pod.spec.as_ref().filter(|s| s.node_name.is_some()) {
            Some(spec) => {
                let mut spec = spec.clone();
                spec.node_name = None;
                serde_json::to_vec(&(&namespace, &meta.labels, &spec))
            }
            None => serde_json::to_vec(&(&namespace, &meta.labels, &pod.spec)),
        }
        .unwrap_or_default();
        let update_key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            shape_key.hash(&mut h);
            meta.annotations.hash(&mut h);
            pod.spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .hash(&mut h);
            h.finish()
        };
        let shape = shared_shape(shape_key, || PodShape::from_pod(pod));
        let status = pod.status.as_ref();
        let pod_name = meta.name.as_deref().unwrap_or_default();
        let volumes = pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter_map(|v| PodVolume::of(v, pod_name))
            .collect();
        PodInfo {
            update_key,
            uid: meta.uid.clone().unwrap_or_default(),
            name: pod_name.to_string(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
            node_name: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            nominated_node_name: status
                .and_then(|s| s.nominated_node_name.clone())
                .filter(|n| !n.is_empty()),
            terminating: meta.deletion_timestamp.is_some(),
            volumes,
            creation_timestamp: meta.creation_timestamp.clone(),
            start_time: status.and_then(|s| s.start_time.clone()),
            owner_uid: meta
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.clone()),
            namespace,
            shape,
        }
    }

    /// The shape, for changing it (tests); copies it if shared.
    pub fn shape_mut(&mut self) -> &mut PodShape {
        Arc::make_mut(&mut self.shape)
    }

    /// `namespace/name`, the key of the queue and of events.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn has_affinity(&self) -> bool {
        !self.required_affinity_terms.is_empty()
            || !self.required_anti_affinity_terms.is_empty()
            || !self.preferred_affinity_terms.is_empty()
            || !self.preferred_anti_affinity_terms.is_empty()
    }

    /// Earliest of start time and creation time: how long the pod has been running, as
    /// upstream's `GetPodStartTime` (used to order preemption victims).
    pub fn start_or_creation(&self) -> Option<&Time> {
        self.start_time
            .as_ref()
            .or(self.creation_timestamp.as_ref())
    }
}

fn container_requests(c: &Container) -> Resource {
    Resource::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()))
}

fn non_zero(r: &Resource) -> (i64, i64) {
    let cpu = if r.milli_cpu == 0 {
        DEFAULT_MILLI_CPU_REQUEST
    } else {
        r.milli_cpu
    };
    let mem = if r.memory == 0 {
        DEFAULT_MEMORY_REQUEST
    } else {
        r.memory
    };
    (cpu, mem)
}

/// Effective requests as upstream's `resource.PodRequests`: the sum of the app containers
/// and the sidecars (init containers with `restartPolicy: Always`), or the largest
/// one-at-a-time init container (plus the sidecars started before it) if that is bigger,
/// plus the pod overhead. Returns the requests and the non-zero CPU/memory for scoring.
pub fn pod_requests(spec: &k8s_openapi::api::core::v1::PodSpec) -> (Resource, i64, i64) {
    let mut sum = Resource::default();
    let (mut nz_cpu, mut nz_mem) = (0, 0);
    for c in &spec.containers {
        let r = container_requests(c);
        let (cpu, mem) = non_zero(&r);
        nz_cpu += cpu;
        nz_mem += mem;
        sum.add(&r);
    }
    let mut sidecars = Resource::default();
    let mut init_max = Resource::default();
    let (mut init_cpu_max, mut init_mem_max) = (0, 0);
    let (mut sidecar_cpu, mut sidecar_mem) = (0, 0);
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c);
        let (cpu, mem) = non_zero(&r);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            sum.add(&r);
            nz_cpu += cpu;
            nz_mem += mem;
            sidecar_cpu += cpu;
            sidecar_mem += mem;
            let mut with = sidecars.clone();
            with.sub(&r);
            with.add(&r);
            init_max.set_max(&with);
        } else {
            let mut with = sidecars.clone();
            with.add(&r);
            init_max.set_max(&with);
            init_cpu_max = init_cpu_max.max(sidecar_cpu + cpu);
            init_mem_max = init_mem_max.max(sidecar_mem + mem);
        }
    }
    sum.set_max(&init_max);
    nz_cpu = nz_cpu.max(init_cpu_max);
    nz_mem = nz_mem.max(init_mem_max);
    if let Some(overhead) = &spec.overhead {
        let o = Resource::from_list(Some(overhead));
        sum.add(&o);
        nz_cpu += o.milli_cpu;
        nz_mem += o.memory;
    }
    (sum, nz_cpu, nz_mem)
}

/// What the scheduler keeps of a Node.
#[derive(Clone, Debug, Default)]
pub struct NodeData {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Resource,
    /// Image names (every name of every image) → size in bytes.
    pub images: HashMap<String, i64>,
}

impl NodeData {
    pub fn from_node(node: &Node) -> NodeData {
        let spec = node.spec.as_ref();
        let status = node.status.as_ref();
        let mut images = HashMap::new();
        for image in status.and_then(|s| s.images.as_ref()).into_iter().flatten() {
            for name in image.names.iter().flatten() {
                images.insert(normalized_image_name(name), image.size_bytes.unwrap_or(0));
            }
        }
        NodeData {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            allocatable: Resource::from_list(status.and_then(|s| s.allocatable.as_ref())),
            images,
        }
    }
}

/// Image names as upstream's ImageLocality compares them: a name without tag or digest
/// means `:latest`.
pub fn normalized_image_name(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || last.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// A node and the pods the scheduler counts on it (bound, assumed, or nominated in a
/// what-if copy).
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    pub name: String,
    /// None while pods name a node the node informer has not delivered yet.
    pub node: Option<Arc<NodeData>>,
    pub pods: Vec<Arc<PodInfo>>,
    /// How many of `pods` have any (anti-)affinity / required anti-affinity.
    pub pods_with_affinity: usize,
    pub pods_with_required_anti_affinity: usize,
    pub requested: Resource,
    pub non_zero_cpu: i64,
    pub non_zero_memory: i64,
    pub used_ports: Vec<HostPort>,
    /// `namespace/claim` → number of pods on this node using it.
    pub pvc_ref_counts: HashMap<String, usize>,
    /// Stamped by the cache with a process-wide unique number each time it changes this
    /// NodeInfo (upstream's `NodeInfo.Generation`), so per-cycle work can be kept across
    /// cycles for the nodes that did not change. 0 means unknown: never trusted.
    pub generation: u64,
}

/// The next NodeInfo generation: unique in the process, never 0.
pub fn next_generation() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl NodeInfo {
    pub fn new(name: String) -> NodeInfo {
        NodeInfo {
            name,
            ..NodeInfo::default()
        }
    }

    pub fn node(&self) -> &NodeData {
        static EMPTY: std::sync::OnceLock<NodeData> = std::sync::OnceLock::new();
        self.node
            .as_deref()
            .unwrap_or_else(|| EMPTY.get_or_init(NodeData::default))
    }

    pub fn allocatable(&self) -> &Resource {
        &self.node().allocatable
    }

    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.requested.allowed_pod_number += 1;
        self.non_zero_cpu += pod.non_zero_cpu;
        self.non_zero_memory += pod.non_zero_memory;
        self.used_ports.extend(pod.host_ports.iter().cloned());
        if pod.has_affinity() {
            self.pods_with_affinity += 1;
        }
        if !pod.required_anti_affinity_terms.is_empty() {
            self.pods_with_required_anti_affinity += 1;
        }
        for v in &pod.volumes {
            if let PodVolume::Claim(claim) = v {
                *self
                    .pvc_ref_counts
                    .entry(format!("{}/{claim}", pod.namespace))
                    .or_default() += 1;
            }
        }
        self.pods.push(pod);
    }

    /// Removes the pod with this uid; false if it was not here.
    pub fn remove_pod(&mut self, uid: &str) -> bool {
        let Some(i) = self.pods.iter().position(|p| p.uid == uid) else {
            return false;
        };
        let pod = self.pods.swap_remove(i);
        self.requested.sub(&pod.requests);
        self.requested.allowed_pod_number -= 1;
        self.non_zero_cpu -= pod.non_zero_cpu;
        self.non_zero_memory -= pod.non_zero_memory;
        for port in &pod.host_ports {
            if let Some(j) = self.used_ports.iter().position(|p| p == port) {
                self.used_ports.swap_remove(j);
            }
        }
        if pod.has_affinity() {
            self.pods_with_affinity -= 1;
        }
        if !pod.required_anti_affinity_terms.is_empty() {
            self.pods_with_required_anti_affinity -= 1;
        }
        for v in &pod.volumes {
            if let PodVolume::Claim(claim) = v {
                let key = format!("{}/{claim}", pod.namespace);
                if let Some(n) = self.pvc_ref_counts.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        self.pvc_ref_counts.remove(&key);
                    }
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": spec}))
            .unwrap()
    }

    #[test]
    fn requests_sum_containers_and_take_the_largest_init_container() {
        let p = pod(json!({
            "initContainers": [
                {"name": "i1", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}},
            ],
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "256Mi", "example.com/gpu": "1"}}},
                {"name": "b", "resources": {"requests": {"cpu": "250m"}}},
            ],
            "overhead": {"cpu": "10m"}
        }));
        let info = PodInfo::from_pod(&p);
        assert_eq!(info.requests.milli_cpu, 2010);
        assert_eq!(info.requests.memory, 1 << 30);
        assert_eq!(info.requests.scalar["example.com/gpu"], 1);
        // For scoring the init container still dominates memory; without it, b's missing
        // memory request counts as the 200 MiB default.
        assert_eq!(info.non_zero_memory, 1 << 30);
        let no_init = pod(json!({"containers": [
            {"name": "a", "resources": {"requests": {"memory": "256Mi"}}},
            {"name": "b", "resources": {"requests": {"cpu": "250m"}}},
        ]}));
        let info = PodInfo::from_pod(&no_init);
        assert_eq!(
            info.non_zero_memory,
            256 * 1024 * 1024 + DEFAULT_MEMORY_REQUEST
        );
        assert_eq!(info.non_zero_cpu, DEFAULT_MILLI_CPU_REQUEST + 250);
    }

    #[test]
    fn sidecars_add_to_the_sum_and_to_later_init_containers() {
        let p = pod(json!({
            "initContainers": [
                {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "1"}}},
                {"name": "init", "resources": {"requests": {"cpu": "2"}}},
            ],
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]
        }));
        let info = PodInfo::from_pod(&p);
        // max(app 1 + sidecar 1, sidecar 1 + init 2) = 3
        assert_eq!(info.requests.milli_cpu, 3000);
    }

    #[test]
    fn host_ports_conflict_on_wildcard_or_same_ip() {
        let any = HostPort {
            ip: String::new(),
            protocol: "TCP".into(),
            port: 80,
        };
        let one = HostPort {
            ip: "10.0.0.1".into(),
            protocol: "TCP".into(),
            port: 80,
        };
        let two = HostPort {
            ip: "10.0.0.2".into(),
            protocol: "TCP".into(),
            port: 80,
        };
        let udp = HostPort {
            ip: String::new(),
            protocol: "UDP".into(),
            port: 80,
        };
        assert!(any.conflicts(&one));
        assert!(!one.conflicts(&two));
        assert!(!any.conflicts(&udp));
    }

    #[test]
    fn node_info_accounts_pods_in_and_out() {
        let mut n = NodeInfo::new("n".into());
        let mut p = PodInfo::from_pod(&pod(
            json!({"containers": [{"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}],
            "resources": {"requests": {"cpu": "1"}}}]}),
        ));
        p.uid = "u1".into();
        n.add_pod(Arc::new(p));
        assert_eq!(n.requested.milli_cpu, 1000);
        assert_eq!(n.requested.allowed_pod_number, 1);
        assert_eq!(n.used_ports.len(), 1);
        assert!(n.remove_pod("u1"));
        assert_eq!(n.requested, Resource::default());
        assert!(n.used_ports.is_empty());
        assert!(!n.remove_pod("u1"));
    }

    #[test]
    fn image_names_without_tag_mean_latest() {
        assert_eq!(normalized_image_name("busybox"), "busybox:latest");
        assert_eq!(
            normalized_image_name("registry:5000/busybox"),
            "registry:5000/busybox:latest"
        );
        assert_eq!(normalized_image_name("busybox:1.36"), "busybox:1.36");
        assert_eq!(
            normalized_image_name("busybox@sha256:abc"),
            "busybox@sha256:abc"
        );
    }
}
