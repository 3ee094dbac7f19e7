//! PersistentVolumes and PersistentVolumeClaims.

use jiff::Timestamp;
use serde_json::Value;

use super::descriptions as d;
use super::fields::{age, annotation, is_deleting, list_at, name, opt_str_at, str_at, str_or};
use super::quantity::quantity_at;
use super::Column;

pub(super) const PERSISTENT_VOLUME_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Capacity", "string", d::PERSISTENT_VOLUME_SPEC_CAPACITY),
    Column::new(
        "Access Modes",
        "string",
        d::PERSISTENT_VOLUME_SPEC_ACCESS_MODES,
    ),
    Column::new(
        "Reclaim Policy",
        "string",
        d::PERSISTENT_VOLUME_SPEC_PERSISTENT_VOLUME_RECLAIM_POLICY,
    ),
    Column::new("Status", "string", d::PERSISTENT_VOLUME_STATUS_PHASE),
    Column::new("Claim", "string", d::PERSISTENT_VOLUME_SPEC_CLAIM_REF),
    Column::new("StorageClass", "string", "StorageClass of the pv"),
    Column::new(
        "VolumeAttributesClass",
        "string",
        "VolumeAttributesClass of the pv",
    ),
    Column::new("Reason", "string", d::PERSISTENT_VOLUME_STATUS_REASON),
    Column::age(),
    Column::wide(
        "VolumeMode",
        "string",
        d::PERSISTENT_VOLUME_SPEC_VOLUME_MODE,
    ),
];

pub(super) const PERSISTENT_VOLUME_CLAIM_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Status", "string", d::PERSISTENT_VOLUME_CLAIM_STATUS_PHASE),
    Column::new(
        "Volume",
        "string",
        d::PERSISTENT_VOLUME_CLAIM_SPEC_VOLUME_NAME,
    ),
    Column::new(
        "Capacity",
        "string",
        d::PERSISTENT_VOLUME_CLAIM_STATUS_CAPACITY,
    ),
    Column::new(
        "Access Modes",
        "string",
        d::PERSISTENT_VOLUME_CLAIM_STATUS_ACCESS_MODES,
    ),
    Column::new("StorageClass", "string", "StorageClass of the pvc"),
    Column::new(
        "VolumeAttributesClass",
        "string",
        "VolumeAttributesClass of the pvc",
    ),
    Column::age(),
    Column::wide(
        "VolumeMode",
        "string",
        d::PERSISTENT_VOLUME_CLAIM_SPEC_VOLUME_MODE,
    ),
];

/// The storage-class annotation that still wins over `storageClassName` upstream.
const BETA_STORAGE_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

/// Access modes abbreviated in a fixed order (RWO, ROX, RWX, RWOP), duplicates dropped.
fn access_modes(modes: &[Value]) -> String {
    let has = |mode: &str| modes.iter().any(|m| m.as_str() == Some(mode));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(mode, _)| has(mode))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The phase (Pending until set), or "Terminating" while the object is being deleted.
fn phase(obj: &Value) -> &str {
    if is_deleting(obj) {
        "Terminating"
    } else {
        str_or(obj, &["status", "phase"], "Pending")
    }
}

/// `spec.volumeMode`, which defaults to Filesystem.
fn volume_mode(obj: &Value) -> &str {
    str_or(obj, &["spec", "volumeMode"], "Filesystem")
}

pub(super) fn persistent_volume_cells(pv: &Value, now: Timestamp) -> Vec<Value> {
    let claim = match pv.get("spec").and_then(|s| s.get("claimRef")) {
        Some(claim) if !claim.is_null() => format!(
            "{}/{}",
            str_at(claim, &["namespace"]),
            str_at(claim, &["name"])
        ),
        _ => String::new(),
    };
    let class = annotation(pv, BETA_STORAGE_CLASS_ANNOTATION)
        .unwrap_or_else(|| str_at(pv, &["spec", "storageClassName"]));
    vec![
        Value::from(name(pv)),
        Value::from(quantity_at(pv, &["spec", "capacity", "storage"])),
        Value::from(access_modes(list_at(pv, &["spec", "accessModes"]))),
        Value::from(str_or(
            pv,
            &["spec", "persistentVolumeReclaimPolicy"],
            "Retain",
        )),
        Value::from(phase(pv)),
        Value::from(claim),
        Value::from(class),
        Value::from(opt_str_at(pv, &["spec", "volumeAttributesClassName"]).unwrap_or("<unset>")),
        Value::from(str_at(pv, &["status", "reason"])),
        Value::from(age(pv, now)),
        Value::from(volume_mode(pv)),
    ]
}

pub(super) fn persistent_volume_claim_cells(pvc: &Value, now: Timestamp) -> Vec<Value> {
    let volume = str_at(pvc, &["spec", "volumeName"]);
    // Capacity and access modes are those of the bound volume.
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity_at(pvc, &["status", "capacity", "storage"]),
            access_modes(list_at(pvc, &["status", "accessModes"])),
        )
    };
    let class = annotation(pvc, BETA_STORAGE_CLASS_ANNOTATION)
        .unwrap_or_else(|| str_at(pvc, &["spec", "storageClassName"]));
    vec![
        Value::from(name(pvc)),
        Value::from(phase(pvc)),
        Value::from(volume),
        Value::from(capacity),
        Value::from(modes),
        Value::from(class),
        Value::from(opt_str_at(pvc, &["spec", "volumeAttributesClassName"]).unwrap_or("<unset>")),
        Value::from(age(pvc, now)),
        Value::from(volume_mode(pvc)),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::tests::{info, now};
    use super::super::{column_definitions, row_cells};
    use serde_json::json;

    #[test]
    fn persistent_volume() {
        let names: Vec<_> = column_definitions(info("", "persistentvolumes"))
            .iter()
            .map(|c| c["name"].clone())
            .collect();
        assert_eq!(
            names,
            [
                "Name",
                "Capacity",
                "Access Modes",
                "Reclaim Policy",
                "Status",
                "Claim",
                "StorageClass",
                "VolumeAttributesClass",
                "Reason",
                "Age",
                "VolumeMode"
            ]
        );
        let pv = json!({
            "metadata": {"name": "pv-nfs-1", "creationTimestamp": "2024-04-30T12:00:00Z"},
            "spec": {
                "capacity": {"storage": "10240Mi"},
                "accessModes": ["ReadWriteMany", "ReadWriteOnce", "ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "nfs",
                "volumeMode": "Filesystem",
                "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "default", "name": "data"},
                "nfs": {"server": "nas.local", "path": "/export/k8s"},
            },
            "status": {"phase": "Bound"},
        });
        assert_eq!(
            row_cells(info("", "persistentvolumes"), &pv, now()),
            [
                "pv-nfs-1",
                "10Gi",
                "RWO,RWX",
                "Retain",
                "Bound",
                "default/data",
                "nfs",
                "<unset>",
                "",
                "24h",
                "Filesystem"
            ]
        );
    }

    #[test]
    fn released_volume_being_deleted() {
        let pv = json!({
            "metadata": {"name": "old", "deletionTimestamp": "2024-05-01T11:00:00Z",
                         "annotations": {"volume.beta.kubernetes.io/storage-class": "legacy"}},
            "spec": {"storageClassName": "nfs"},
            "status": {"phase": "Failed", "reason": "ReclaimFailed"},
        });
        let cells = row_cells(info("", "persistentvolumes"), &pv, now());
        assert_eq!(
            cells[1..9],
            [
                "0",
                "",
                "Retain",
                "Terminating",
                "",
                "legacy",
                "<unset>",
                "ReclaimFailed"
            ]
        );
    }

    #[test]
    fn persistent_volume_claims() {
        let bound = json!({
            "metadata": {"name": "data", "creationTimestamp": "2024-05-01T11:30:00Z"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "storageClassName": "local-path", "volumeName": "pvc-1234",
                     "volumeMode": "Filesystem", "volumeAttributesClassName": "gold"},
            "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"],
                       "capacity": {"storage": "2Gi"}},
        });
        assert_eq!(
            row_cells(info("", "persistentvolumeclaims"), &bound, now()),
            [
                "data",
                "Bound",
                "pvc-1234",
                "2Gi",
                "RWO",
                "local-path",
                "gold",
                "30m",
                "Filesystem"
            ]
        );
        let pending = json!({
            "metadata": {"name": "scratch"},
            "spec": {"accessModes": ["ReadWriteOncePod"], "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Pending"},
        });
        assert_eq!(
            row_cells(info("", "persistentvolumeclaims"), &pending, now()),
            [
                "scratch",
                "Pending",
                "",
                "",
                "",
                "",
                "<unset>",
                "<unknown>",
                "Filesystem"
            ]
        );
    }
}
