//! Cluster plumbing with small tables: Leases, PodDisruptionBudgets, PriorityClasses and
//! RuntimeClasses.

use jiff::Timestamp;
use serde_json::Value;

use super::descriptions as d;
use super::fields::{age, bool_at, get, int_at, int_or_string, name, str_at, str_or};
use super::Column;

pub(super) const LEASE_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Holder", "string", d::LEASE_SPEC_HOLDER_IDENTITY),
    Column::age(),
];

pub(super) const POD_DISRUPTION_BUDGET_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new(
        "Min Available",
        "string",
        "The minimum number of pods that must be available.",
    ),
    Column::new(
        "Max Unavailable",
        "string",
        "The maximum number of pods that may be unavailable.",
    ),
    Column::new(
        "Allowed Disruptions",
        "integer",
        "Calculated number of pods that may be disrupted at this time.",
    ),
    Column::age(),
];

pub(super) const PRIORITY_CLASS_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Value", "integer", d::PRIORITY_CLASS_VALUE),
    Column::new(
        "Global-Default",
        "boolean",
        d::PRIORITY_CLASS_GLOBAL_DEFAULT,
    ),
    Column::age(),
    // Upstream declares this one without priority, though it only fills it in wide output.
    Column::new(
        "PreemptionPolicy",
        "string",
        d::PRIORITY_CLASS_PREEMPTION_POLICY,
    ),
];

pub(super) const RUNTIME_CLASS_COLUMNS: &[Column] = &[
    Column::name(),
    // Upstream looks this description up under a key ObjectMeta does not have.
    Column::new("Handler", "string", ""),
    Column::age(),
];

pub(super) fn lease_cells(lease: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        Value::from(name(lease)),
        Value::from(str_at(lease, &["spec", "holderIdentity"])),
        Value::from(age(lease, now)),
    ]
}

pub(super) fn pod_disruption_budget_cells(pdb: &Value, now: Timestamp) -> Vec<Value> {
    let bound = |field: &str| {
        get(pdb, &["spec", field])
            .filter(|v| !v.is_null())
            .map_or_else(|| "N/A".to_string(), int_or_string)
    };
    vec![
        Value::from(name(pdb)),
        Value::from(bound("minAvailable")),
        Value::from(bound("maxUnavailable")),
        Value::from(int_at(pdb, &["status", "disruptionsAllowed"])),
        Value::from(age(pdb, now)),
    ]
}

pub(super) fn priority_class_cells(class: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        Value::from(name(class)),
        Value::from(int_at(class, &["value"])),
        Value::from(bool_at(class, &["globalDefault"])),
        Value::from(age(class, now)),
        Value::from(str_or(class, &["preemptionPolicy"], "PreemptLowerPriority")),
    ]
}

pub(super) fn runtime_class_cells(class: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        Value::from(name(class)),
        Value::from(str_at(class, &["handler"])),
        Value::from(age(class, now)),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::tests::{info, now};
    use super::super::{column_definitions, row_cells};
    use serde_json::json;

    #[test]
    fn lease() {
        let lease = json!({
            "metadata": {"name": "pi-1", "namespace": "kube-node-lease",
                         "creationTimestamp": "2024-04-10T12:00:00Z"},
            "spec": {"holderIdentity": "pi-1", "leaseDurationSeconds": 40},
        });
        assert_eq!(
            row_cells(info("coordination.k8s.io", "leases"), &lease, now()),
            ["pi-1", "pi-1", "21d"]
        );
        let free = json!({"metadata": {"name": "kube-scheduler"}, "spec": {}});
        assert_eq!(
            row_cells(info("coordination.k8s.io", "leases"), &free, now())[1],
            ""
        );
    }

    #[test]
    fn pod_disruption_budget() {
        let names: Vec<_> = column_definitions(info("policy", "poddisruptionbudgets"))
            .iter()
            .map(|c| c["name"].clone())
            .collect();
        assert_eq!(
            names,
            [
                "Name",
                "Min Available",
                "Max Unavailable",
                "Allowed Disruptions",
                "Age"
            ]
        );
        let pdb = json!({
            "metadata": {"name": "etcd", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "etcd"}}},
            "status": {"disruptionsAllowed": 1, "currentHealthy": 3, "desiredHealthy": 2},
        });
        assert_eq!(
            row_cells(info("policy", "poddisruptionbudgets"), &pdb, now()),
            [
                json!("etcd"),
                json!("2"),
                json!("N/A"),
                json!(1),
                json!("60m")
            ]
        );
        let percent = json!({"metadata": {"name": "web"}, "spec": {"maxUnavailable": "25%"}});
        assert_eq!(
            row_cells(info("policy", "poddisruptionbudgets"), &percent, now())[1..4],
            [json!("N/A"), json!("25%"), json!(0)]
        );
    }

    #[test]
    fn priority_class() {
        let class = json!({
            "metadata": {"name": "system-node-critical", "creationTimestamp": "2024-03-01T12:00:00Z"},
            "value": 2000001000, "globalDefault": false,
            "preemptionPolicy": "PreemptLowerPriority",
        });
        assert_eq!(
            row_cells(info("scheduling.k8s.io", "priorityclasses"), &class, now()),
            [
                json!("system-node-critical"),
                json!(2000001000),
                json!(false),
                json!("61d"),
                json!("PreemptLowerPriority"),
            ]
        );
        let columns = column_definitions(info("scheduling.k8s.io", "priorityclasses"));
        assert_eq!(columns[2]["type"], "boolean");
        assert_eq!(columns[4]["priority"], 0);
    }

    #[test]
    fn runtime_class() {
        let class = json!({"metadata": {"name": "gvisor", "creationTimestamp": "2024-05-01T11:00:00Z"},
                           "handler": "runsc"});
        assert_eq!(
            row_cells(info("node.k8s.io", "runtimeclasses"), &class, now()),
            ["gvisor", "runsc", "60m"]
        );
        let columns = column_definitions(info("node.k8s.io", "runtimeclasses"));
        assert_eq!(columns[1]["description"], "");
    }
}
