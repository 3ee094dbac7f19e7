//! Workload controllers: Deployments, ReplicaSets, DaemonSets, StatefulSets,
//! ReplicationControllers and ControllerRevisions.

use jiff::Timestamp;
use serde_json::Value;

use super::descriptions as d;
use super::fields::{age, get, int_at, list_at, map_at, name, opt_int_at, str_at};
use super::labels::{format_label_selector, format_labels, selector_string};
use super::{Column, CONTAINERS_DESCRIPTION, IMAGES_DESCRIPTION};

pub(super) const DEPLOYMENT_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Ready", "string", "Number of the pod with ready state"),
    Column::new(
        "Up-to-date",
        "string",
        d::DEPLOYMENT_STATUS_UPDATED_REPLICAS,
    ),
    Column::new(
        "Available",
        "string",
        d::DEPLOYMENT_STATUS_AVAILABLE_REPLICAS,
    ),
    Column::age(),
    Column::wide("Containers", "string", CONTAINERS_DESCRIPTION),
    Column::wide("Images", "string", IMAGES_DESCRIPTION),
    Column::wide("Selector", "string", d::DEPLOYMENT_SPEC_SELECTOR),
];

pub(super) const REPLICA_SET_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Desired", "integer", d::REPLICA_SET_SPEC_REPLICAS),
    Column::new("Current", "integer", d::REPLICA_SET_STATUS_REPLICAS),
    Column::new("Ready", "integer", d::REPLICA_SET_STATUS_READY_REPLICAS),
    Column::age(),
    Column::wide("Containers", "string", CONTAINERS_DESCRIPTION),
    Column::wide("Images", "string", IMAGES_DESCRIPTION),
    Column::wide("Selector", "string", d::REPLICA_SET_SPEC_SELECTOR),
];

pub(super) const REPLICATION_CONTROLLER_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new(
        "Desired",
        "integer",
        d::REPLICATION_CONTROLLER_SPEC_REPLICAS,
    ),
    Column::new(
        "Current",
        "integer",
        d::REPLICATION_CONTROLLER_STATUS_REPLICAS,
    ),
    Column::new(
        "Ready",
        "integer",
        d::REPLICATION_CONTROLLER_STATUS_READY_REPLICAS,
    ),
    Column::age(),
    Column::wide("Containers", "string", CONTAINERS_DESCRIPTION),
    Column::wide("Images", "string", IMAGES_DESCRIPTION),
    Column::wide(
        "Selector",
        "string",
        d::REPLICATION_CONTROLLER_SPEC_SELECTOR,
    ),
];

pub(super) const DAEMON_SET_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new(
        "Desired",
        "integer",
        d::DAEMON_SET_STATUS_DESIRED_NUMBER_SCHEDULED,
    ),
    Column::new(
        "Current",
        "integer",
        d::DAEMON_SET_STATUS_CURRENT_NUMBER_SCHEDULED,
    ),
    Column::new("Ready", "integer", d::DAEMON_SET_STATUS_NUMBER_READY),
    Column::new(
        "Up-to-date",
        "integer",
        d::DAEMON_SET_STATUS_UPDATED_NUMBER_SCHEDULED,
    ),
    Column::new(
        "Available",
        "integer",
        d::DAEMON_SET_STATUS_NUMBER_AVAILABLE,
    ),
    Column::new("Node Selector", "string", d::POD_SPEC_NODE_SELECTOR),
    Column::age(),
    Column::wide("Containers", "string", CONTAINERS_DESCRIPTION),
    Column::wide("Images", "string", IMAGES_DESCRIPTION),
    Column::wide("Selector", "string", d::DAEMON_SET_SPEC_SELECTOR),
];

pub(super) const STATEFUL_SET_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Ready", "string", "Number of the pod with ready state"),
    Column::age(),
    Column::wide("Containers", "string", CONTAINERS_DESCRIPTION),
    Column::wide("Images", "string", IMAGES_DESCRIPTION),
];

pub(super) const CONTROLLER_REVISION_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Controller", "string", "Controller of the object"),
    Column::new("Revision", "string", d::CONTROLLER_REVISION_REVISION),
    Column::age(),
];

/// `spec.replicas`, which the apps/v1 and core/v1 defaults set to 1 when omitted.
fn desired_replicas(obj: &Value) -> i64 {
    opt_int_at(obj, &["spec", "replicas"]).unwrap_or(1)
}

/// Container names and images of a pod template, each joined by ",".
pub(super) fn container_cells(template: Option<&Value>) -> (Value, Value) {
    let containers = template.map_or(&[][..], |t| list_at(t, &["spec", "containers"]));
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, &["image"])).collect();
    (Value::from(names.join(",")), Value::from(images.join(",")))
}

pub(super) fn deployment_cells(deploy: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = container_cells(get(deploy, &["spec", "template"]));
    // Unlike the other workloads, upstream prints this selector without "<none>".
    let selector = selector_string(get(deploy, &["spec", "selector"]))
        .unwrap_or_else(|_| "<invalid>".to_string());
    vec![
        Value::from(name(deploy)),
        Value::from(format!(
            "{}/{}",
            int_at(deploy, &["status", "readyReplicas"]),
            desired_replicas(deploy)
        )),
        Value::from(int_at(deploy, &["status", "updatedReplicas"])),
        Value::from(int_at(deploy, &["status", "availableReplicas"])),
        Value::from(age(deploy, now)),
        containers,
        images,
        Value::from(selector),
    ]
}

pub(super) fn replica_set_cells(rs: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = container_cells(get(rs, &["spec", "template"]));
    vec![
        Value::from(name(rs)),
        Value::from(desired_replicas(rs)),
        Value::from(int_at(rs, &["status", "replicas"])),
        Value::from(int_at(rs, &["status", "readyReplicas"])),
        Value::from(age(rs, now)),
        containers,
        images,
        Value::from(format_label_selector(get(rs, &["spec", "selector"]))),
    ]
}

pub(super) fn replication_controller_cells(rc: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = container_cells(get(rc, &["spec", "template"]));
    vec![
        Value::from(name(rc)),
        Value::from(desired_replicas(rc)),
        Value::from(int_at(rc, &["status", "replicas"])),
        Value::from(int_at(rc, &["status", "readyReplicas"])),
        Value::from(age(rc, now)),
        containers,
        images,
        Value::from(format_labels(map_at(rc, &["spec", "selector"]))),
    ]
}

pub(super) fn daemon_set_cells(ds: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = container_cells(get(ds, &["spec", "template"]));
    let status = |field: &str| Value::from(int_at(ds, &["status", field]));
    vec![
        Value::from(name(ds)),
        status("desiredNumberScheduled"),
        status("currentNumberScheduled"),
        status("numberReady"),
        status("updatedNumberScheduled"),
        status("numberAvailable"),
        Value::from(format_labels(map_at(
            ds,
            &["spec", "template", "spec", "nodeSelector"],
        ))),
        Value::from(age(ds, now)),
        containers,
        images,
        Value::from(format_label_selector(get(ds, &["spec", "selector"]))),
    ]
}

pub(super) fn stateful_set_cells(sts: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = container_cells(get(sts, &["spec", "template"]));
    vec![
        Value::from(name(sts)),
        Value::from(format!(
            "{}/{}",
            int_at(sts, &["status", "readyReplicas"]),
            desired_replicas(sts)
        )),
        Value::from(age(sts, now)),
        containers,
        images,
    ]
}

pub(super) fn controller_revision_cells(rev: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        Value::from(name(rev)),
        Value::from(controller_name(rev)),
        Value::from(int_at(rev, &["revision"])),
        Value::from(age(rev, now)),
    ]
}

/// The controlling owner as "kind.group/name" (lower-case kind and group), or "<none>".
fn controller_name(obj: &Value) -> String {
    let Some(owner) = list_at(obj, &["metadata", "ownerReferences"])
        .iter()
        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
    else {
        return "<none>".to_string();
    };
    let api_version = str_at(owner, &["apiVersion"]);
    let group = api_version
        .split_once('/')
        .map_or("", |(group, _version)| group);
    let kind = str_at(owner, &["kind"]);
    let owner_name = str_at(owner, &["name"]);
    let group_kind = match (group, kind) {
        ("", "") => return owner_name.to_string(),
        ("", kind) => kind.to_string(),
        (group, kind) => format!("{kind}.{group}"),
    };
    format!("{}/{owner_name}", group_kind.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{info, now};
    use super::super::{column_definitions, row_cells};
    use serde_json::{json, Value};

    fn template() -> Value {
        json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [
                {"name": "web", "image": "nginx:1.25"},
                {"name": "exporter", "image": "nginx/nginx-prometheus-exporter:1.1"},
            ]},
        })
    }

    fn names(group: &str, plural: &str) -> Vec<Value> {
        column_definitions(info(group, plural))
            .iter()
            .map(|c| c["name"].clone())
            .collect()
    }

    #[test]
    fn deployment() {
        assert_eq!(
            names("apps", "deployments"),
            [
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let deploy = json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "spec": {"replicas": 3, "template": template(),
                     "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 2,
                       "availableReplicas": 2},
        });
        assert_eq!(
            row_cells(info("apps", "deployments"), &deploy, now()),
            [
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("60m"),
                json!("web,exporter"),
                json!("nginx:1.25,nginx/nginx-prometheus-exporter:1.1"),
                json!("app=web"),
            ]
        );
    }

    #[test]
    fn new_deployment_without_status() {
        let deploy = json!({"metadata": {"name": "web"}, "spec": {"template": {}}});
        assert_eq!(
            row_cells(info("apps", "deployments"), &deploy, now()),
            [
                json!("web"),
                json!("0/1"),
                json!(0),
                json!(0),
                json!("<unknown>"),
                json!(""),
                json!(""),
                json!(""),
            ]
        );
    }

    #[test]
    fn replica_set() {
        assert_eq!(
            names("apps", "replicasets"),
            [
                "Name",
                "Desired",
                "Current",
                "Ready",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let rs = json!({
            "metadata": {"name": "web-7c5ddbdf54", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "spec": {"replicas": 3, "template": template(), "selector": {"matchLabels":
                {"app": "web", "pod-template-hash": "7c5ddbdf54"}}},
            "status": {"replicas": 3, "readyReplicas": 1},
        });
        assert_eq!(
            row_cells(info("apps", "replicasets"), &rs, now()),
            [
                json!("web-7c5ddbdf54"),
                json!(3),
                json!(3),
                json!(1),
                json!("60m"),
                json!("web,exporter"),
                json!("nginx:1.25,nginx/nginx-prometheus-exporter:1.1"),
                json!("app=web,pod-template-hash=7c5ddbdf54"),
            ]
        );
        let scaled_down = json!({"metadata": {"name": "old"}, "spec": {"replicas": 0}});
        assert_eq!(
            row_cells(info("apps", "replicasets"), &scaled_down, now())[1..4],
            [0, 0, 0]
        );
    }

    #[test]
    fn daemon_set() {
        assert_eq!(
            names("apps", "daemonsets"),
            [
                "Name",
                "Desired",
                "Current",
                "Ready",
                "Up-to-date",
                "Available",
                "Node Selector",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let ds = json!({
            "metadata": {"name": "kube-proxy", "creationTimestamp": "2024-04-01T12:00:00Z"},
            "spec": {
                "selector": {"matchLabels": {"k8s-app": "kube-proxy"}},
                "template": {"spec": {
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [{"name": "kube-proxy", "image": "pikube/kube-proxy:v0.1"}],
                }},
            },
            "status": {"desiredNumberScheduled": 4, "currentNumberScheduled": 4,
                       "numberReady": 3, "updatedNumberScheduled": 4, "numberAvailable": 3},
        });
        assert_eq!(
            row_cells(info("apps", "daemonsets"), &ds, now()),
            [
                json!("kube-proxy"),
                json!(4),
                json!(4),
                json!(3),
                json!(4),
                json!(3),
                json!("kubernetes.io/os=linux"),
                json!("30d"),
                json!("kube-proxy"),
                json!("pikube/kube-proxy:v0.1"),
                json!("k8s-app=kube-proxy"),
            ]
        );
        let bare = json!({"metadata": {"name": "x"}});
        let cells = row_cells(info("apps", "daemonsets"), &bare, now());
        assert_eq!(cells[6], "<none>");
        assert_eq!(cells[10], "<none>");
    }

    #[test]
    fn stateful_set() {
        assert_eq!(
            names("apps", "statefulsets"),
            ["Name", "Ready", "Age", "Containers", "Images"]
        );
        let sts = json!({
            "metadata": {"name": "etcd", "creationTimestamp": "2024-05-01T08:30:00Z"},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "etcd", "image": "quay.io/coreos/etcd:v3.5.13"}]}}},
            "status": {"replicas": 3, "readyReplicas": 3},
        });
        assert_eq!(
            row_cells(info("apps", "statefulsets"), &sts, now()),
            [
                "etcd",
                "3/3",
                "3h30m",
                "etcd",
                "quay.io/coreos/etcd:v3.5.13"
            ]
        );
    }

    #[test]
    fn replication_controller() {
        let rc = json!({
            "metadata": {"name": "legacy", "creationTimestamp": "2024-05-01T11:59:00Z"},
            "spec": {"replicas": 2, "selector": {"app": "legacy"}},
            "status": {"replicas": 2, "readyReplicas": 2},
        });
        assert_eq!(
            row_cells(info("", "replicationcontrollers"), &rc, now()),
            [
                json!("legacy"),
                json!(2),
                json!(2),
                json!(2),
                json!("60s"),
                json!(""),
                json!(""),
                json!("app=legacy"),
            ]
        );
    }

    #[test]
    fn controller_revision() {
        assert_eq!(
            names("apps", "controllerrevisions"),
            ["Name", "Controller", "Revision", "Age"]
        );
        let rev = json!({
            "metadata": {"name": "etcd-5d8f7c9b6", "creationTimestamp": "2024-05-01T11:00:00Z",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Pod", "name": "other"},
                    {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "etcd",
                     "controller": true},
                ]},
            "revision": 2,
        });
        assert_eq!(
            row_cells(info("apps", "controllerrevisions"), &rev, now()),
            [
                json!("etcd-5d8f7c9b6"),
                json!("statefulset.apps/etcd"),
                json!(2),
                json!("60m")
            ]
        );
        let orphan = json!({"metadata": {"name": "x"}, "revision": 1});
        assert_eq!(
            row_cells(info("apps", "controllerrevisions"), &orphan, now())[1],
            "<none>"
        );
    }
}
