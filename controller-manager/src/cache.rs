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
//! Three things are leaner still than their `k8s_openapi` types, because every pod has
//! them: a container's `resources` hold their lists as boxed slices (a BTreeMap allocates
//! a ~0.5 KiB node even for one entry); `status.conditions` keep only the types a
//! controller reads (`Ready`, `DisruptionTarget`, and any type the kubelet does not set
//! itself, e.g. readiness gates), without `message` and `lastProbeTime`; and
//! `metadata.generateName` is dropped.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ContainerPort, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, PersistentVolumeClaimVolumeSource, PodCondition, PodIP,
    PodReadinessGate, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Serialize};

/// The annotation `kubectl apply` keeps a whole copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Pod {
    #[serde(default, deserialize_with = "lean_metadata")]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<PodSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PodStatus>,
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

impl k8s_openapi::Metadata for Pod {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
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
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead: Option<BTreeMap<String, Quantity>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_gates: Option<Vec<PodReadinessGate>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
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
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<ContainerPort>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
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
    pub host_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_container_statuses: Option<Vec<ContainerStatus>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nominated_node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    #[serde(default, rename = "podIPs", skip_serializing_if = "Option::is_none")]
    pub pod_ips: Option<Vec<PodIP>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    pub name: String,
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
        .filter(|c| !UNREAD_CONDITIONS.contains(&c.type_.as_str()))
        .map(|c| PodCondition {
            message: None,
            last_probe_time: None,
            ..c
        })
        .collect();
    Ok(Some(kept))
}

/// A container's `resources` (`requests`, `limits`; `claims` are not read).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct ResourceRequirements {
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub limits: ResourceList,
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub requests: ResourceList,
}

/// Named quantities, read and written as the JSON object upstream uses.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceList(pub Box<[(String, Quantity)]>);

impl ResourceList {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Quantity> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, q)| q)
    }
}

impl Serialize for ResourceList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de> Deserialize<'de> for ResourceList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ResourceList, D::Error> {
        let map = Option::<BTreeMap<String, Quantity>>::deserialize(d)?.unwrap_or_default();
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
        assert_eq!(resources.requests.get("cpu").unwrap().0, "10m");
        assert!(resources.limits.is_empty());
        // What is kept reads back as a k8s_openapi Pod with the same values.
        let conditions = status.conditions.as_ref().unwrap();
        assert_eq!(conditions.len(), 1);
        assert_eq!(
            (
                conditions[0].type_.as_str(),
                conditions[0].message.as_deref()
            ),
            ("Ready", None)
        );
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
