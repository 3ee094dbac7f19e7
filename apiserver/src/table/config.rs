//! Namespaces and what configures the workloads in them: ConfigMaps, Secrets,
//! ServiceAccounts and ResourceQuotas.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::Value;

use super::descriptions as d;
use super::fields::{age, list_at, map_at, map_len, name, str_or};
use super::quantity::quantity_at;
use super::Column;

pub(super) const NAMESPACE_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Status", "string", "The status of the namespace"),
    Column::age(),
];

pub(super) const CONFIG_MAP_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Data", "string", d::CONFIG_MAP_DATA),
    Column::age(),
];

pub(super) const SECRET_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Type", "string", d::SECRET_TYPE),
    Column::new("Data", "string", d::SECRET_DATA),
    Column::age(),
];

pub(super) const SERVICE_ACCOUNT_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Secrets", "string", d::SERVICE_ACCOUNT_SECRETS),
    Column::age(),
];

pub(super) const RESOURCE_QUOTA_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new(
        "Request",
        "string",
        "Request represents a minimum amount of cpu/memory that a container may consume.",
    ),
    Column::new(
        "Limit",
        "string",
        "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
    ),
    Column::age(),
];

pub(super) fn namespace_cells(ns: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        Value::from(name(ns)),
        Value::from(str_or(ns, &["status", "phase"], "Active")),
        Value::from(age(ns, now)),
    ]
}

pub(super) fn config_map_cells(cm: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        Value::from(name(cm)),
        Value::from(map_len(cm, &["data"]) + map_len(cm, &["binaryData"])),
        Value::from(age(cm, now)),
    ]
}

pub(super) fn secret_cells(secret: &Value, now: Timestamp) -> Vec<Value> {
    // Upstream merges the write-only `stringData` into `data` before anything sees the
    // secret, so a key in both counts once.
    let keys: BTreeSet<&String> = ["data", "stringData"]
        .iter()
        .filter_map(|field| map_at(secret, &[field]))
        .flat_map(|m| m.keys())
        .collect();
    vec![
        Value::from(name(secret)),
        Value::from(str_or(secret, &["type"], "Opaque")),
        Value::from(keys.len()),
        Value::from(age(secret, now)),
    ]
}

pub(super) fn service_account_cells(sa: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        Value::from(name(sa)),
        Value::from(list_at(sa, &["secrets"]).len()),
        Value::from(age(sa, now)),
    ]
}

pub(super) fn resource_quota_cells(quota: &Value, now: Timestamp) -> Vec<Value> {
    let mut requests = Vec::new();
    let mut limits = Vec::new();
    // Upstream lists the resources in name order.
    let mut resources: Vec<&String> = map_at(quota, &["status", "hard"])
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    resources.sort();
    for resource in resources {
        let used = quantity_at(quota, &["status", "used", resource]);
        let hard = quantity_at(quota, &["status", "hard", resource]);
        let entry = format!("{resource}: {used}/{hard}");
        // "limits.cpu" goes to LIMIT; "requests.cpu", "cpu", "pods" ... to REQUEST.
        if resource.starts_with("limits.") {
            limits.push(entry);
        } else {
            requests.push(entry);
        }
    }
    vec![
        Value::from(name(quota)),
        Value::from(requests.join(", ")),
        Value::from(limits.join(", ")),
        Value::from(age(quota, now)),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::tests::{info, now};
    use super::super::{column_definitions, row_cells};
    use serde_json::json;

    #[test]
    fn namespace() {
        let ns = json!({"metadata": {"name": "kube-system", "creationTimestamp": "2024-03-01T12:00:00Z"},
                        "status": {"phase": "Active"}});
        assert_eq!(
            row_cells(info("", "namespaces"), &ns, now()),
            ["kube-system", "Active", "61d"]
        );
        let unset = json!({"metadata": {"name": "new"}});
        assert_eq!(
            row_cells(info("", "namespaces"), &unset, now())[1],
            "Active"
        );
        let deleting = json!({"metadata": {"name": "old"}, "status": {"phase": "Terminating"}});
        assert_eq!(
            row_cells(info("", "namespaces"), &deleting, now())[1],
            "Terminating"
        );
        let names: Vec<_> = column_definitions(info("", "namespaces"))
            .iter()
            .map(|c| c["name"].clone())
            .collect();
        assert_eq!(names, ["Name", "Status", "Age"]);
    }

    #[test]
    fn config_map_counts_data_and_binary_data() {
        let cm = json!({
            "metadata": {"name": "kube-root-ca.crt", "creationTimestamp": "2024-05-01T11:59:59Z"},
            "data": {"ca.crt": "-----BEGIN CERTIFICATE-----"},
            "binaryData": {"logo.png": "iVBORw0KGgo=", "icon.ico": "AAABAA=="},
        });
        assert_eq!(
            row_cells(info("", "configmaps"), &cm, now()),
            [json!("kube-root-ca.crt"), json!(3), json!("1s")]
        );
        let empty = json!({"metadata": {"name": "empty"}});
        assert_eq!(row_cells(info("", "configmaps"), &empty, now())[1], 0);
    }

    #[test]
    fn secret() {
        let names: Vec<_> = column_definitions(info("", "secrets"))
            .iter()
            .map(|c| c["name"].clone())
            .collect();
        assert_eq!(names, ["Name", "Type", "Data", "Age"]);
        let secret = json!({
            "metadata": {"name": "tls", "creationTimestamp": "2024-05-01T10:00:00Z"},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"},
            "stringData": {"tls.key": "key", "ca.crt": "ca"},
        });
        assert_eq!(
            row_cells(info("", "secrets"), &secret, now()),
            [
                json!("tls"),
                json!("kubernetes.io/tls"),
                json!(3),
                json!("120m")
            ]
        );
    }

    #[test]
    fn secret_type_defaults_to_opaque() {
        let secret = json!({"metadata": {"name": "s"}, "stringData": {"password": "hunter2"}});
        assert_eq!(
            row_cells(info("", "secrets"), &secret, now())[1..3],
            [json!("Opaque"), json!(1)]
        );
    }

    #[test]
    fn service_account() {
        let sa =
            json!({"metadata": {"name": "default", "creationTimestamp": "2024-05-01T11:00:00Z"}});
        assert_eq!(
            row_cells(info("", "serviceaccounts"), &sa, now()),
            [json!("default"), json!(0), json!("60m")]
        );
        let with_secret = json!({"metadata": {"name": "ci"}, "secrets": [{"name": "ci-token"}]});
        assert_eq!(
            row_cells(info("", "serviceaccounts"), &with_secret, now())[1],
            1
        );
    }

    #[test]
    fn resource_quota_splits_requests_and_limits() {
        let quota = json!({
            "metadata": {"name": "compute", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "spec": {"hard": {"pods": "10"}},
            "status": {
                "hard": {"requests.cpu": "1", "requests.memory": "1Gi", "limits.cpu": "2",
                         "limits.memory": "2048Mi", "pods": "10"},
                "used": {"requests.cpu": "500m", "requests.memory": "256Mi", "limits.cpu": "1",
                         "pods": "3"},
            },
        });
        assert_eq!(
            row_cells(info("", "resourcequotas"), &quota, now()),
            [
                "compute",
                "pods: 3/10, requests.cpu: 500m/1, requests.memory: 256Mi/1Gi",
                "limits.cpu: 1/2, limits.memory: 0/2Gi",
                "60m"
            ]
        );
        let fresh = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "10"}}});
        assert_eq!(
            row_cells(info("", "resourcequotas"), &fresh, now())[1..3],
            ["", ""]
        );
    }
}
