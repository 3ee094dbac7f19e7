//! Server-side printing: the columns and cells of the `meta.k8s.io/v1` `Table` the apiserver
//! answers when a client asks for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`
//! (what `kubectl get` shows).
//!
//! Upstream is the spec: the column definitions and cell rules follow kube-apiserver's
//! printers (`pkg/printers/internalversion`), and a kind without a printer gets the generic
//! convertor of `k8s.io/apiserver` (`Name` and `Created At`). Like upstream's
//! `TableConvertor`, rows are always generated "wide": every column, priority 1 included,
//! has a cell, and the client decides which ones to show.
//!
//! Printers read objects as stored JSON (`serde_json::Value`), so a missing or odd field
//! renders the way upstream renders the zero value instead of failing the request.

mod apps;
mod batch;
mod certificates;
mod cluster;
mod config;
mod descriptions;
mod duration;
mod event;
mod fields;
mod labels;
mod networking;
mod node;
mod pod;
mod quantity;
mod rbac;
mod service;
mod storage;

use api_types::resources::ResourceInfo;
use serde_json::{json, Value};

/// One column of a Table, as upstream's printers declare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Column {
    name: &'static str,
    /// OpenAPI type of the column: `string`, `integer`, `boolean`, `date`.
    ty: &'static str,
    /// `name` for the column that identifies the object, empty otherwise.
    format: &'static str,
    description: &'static str,
    /// 0 for the default view, 1 for `-o wide` only.
    priority: i32,
}

impl Column {
    /// A column of the default view.
    const fn new(name: &'static str, ty: &'static str, description: &'static str) -> Self {
        Column {
            name,
            ty,
            format: "",
            description,
            priority: 0,
        }
    }

    /// A column shown only with `-o wide`.
    const fn wide(name: &'static str, ty: &'static str, description: &'static str) -> Self {
        Column {
            name,
            ty,
            format: "",
            description,
            priority: 1,
        }
    }

    /// The `Name` column every printer starts with.
    const fn name() -> Self {
        Column {
            name: "Name",
            ty: "string",
            format: "name",
            description: descriptions::OBJECT_META_NAME,
            priority: 0,
        }
    }

    /// The `Age` column.
    const fn age() -> Self {
        Column::new(
            "Age",
            "string",
            descriptions::OBJECT_META_CREATION_TIMESTAMP,
        )
    }

    /// The `TableColumnDefinition` JSON object; every field is always present, as upstream
    /// serializes them without `omitempty`.
    fn to_json(self) -> Value {
        json!({
            "name": self.name,
            "type": self.ty,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// Description of the workload printers' wide CONTAINERS column.
const CONTAINERS_DESCRIPTION: &str = "Names of each container in the template.";
/// Description of the workload printers' wide IMAGES column.
const IMAGES_DESCRIPTION: &str = "Images referenced by each container in the template.";

/// Renders the cells of one object's row, in column order.
type CellsFn = fn(&Value, jiff::Timestamp) -> Vec<Value>;

/// A kind's printer: its columns and how to fill them.
struct Printer {
    columns: &'static [Column],
    cells: CellsFn,
}

/// The printer upstream registers for a resource, if any.
fn printer_for(info: &ResourceInfo) -> Option<Printer> {
    let printer = |columns, cells| Some(Printer { columns, cells });
    match (info.group, info.kind) {
        ("", "Pod") => printer(pod::COLUMNS, pod::cells),
        ("", "Node") => printer(node::COLUMNS, node::cells),
        ("", "Service") => printer(service::SERVICE_COLUMNS, service::service_cells),
        ("", "Endpoints") => printer(service::ENDPOINTS_COLUMNS, service::endpoints_cells),
        ("", "Event") => printer(event::COLUMNS, event::core_cells),
        // events.k8s.io shares the core Event storage upstream, so it prints the same table.
        ("events.k8s.io", "Event") => printer(event::COLUMNS, event::events_v1_cells),
        ("", "Namespace") => printer(config::NAMESPACE_COLUMNS, config::namespace_cells),
        ("", "ConfigMap") => printer(config::CONFIG_MAP_COLUMNS, config::config_map_cells),
        ("", "Secret") => printer(config::SECRET_COLUMNS, config::secret_cells),
        ("", "ServiceAccount") => printer(
            config::SERVICE_ACCOUNT_COLUMNS,
            config::service_account_cells,
        ),
        ("", "ResourceQuota") => {
            printer(config::RESOURCE_QUOTA_COLUMNS, config::resource_quota_cells)
        }
        ("", "PersistentVolume") => printer(
            storage::PERSISTENT_VOLUME_COLUMNS,
            storage::persistent_volume_cells,
        ),
        ("", "PersistentVolumeClaim") => printer(
            storage::PERSISTENT_VOLUME_CLAIM_COLUMNS,
            storage::persistent_volume_claim_cells,
        ),
        ("", "ReplicationController") => printer(
            apps::REPLICATION_CONTROLLER_COLUMNS,
            apps::replication_controller_cells,
        ),
        ("apps", "Deployment") => printer(apps::DEPLOYMENT_COLUMNS, apps::deployment_cells),
        ("apps", "ReplicaSet") => printer(apps::REPLICA_SET_COLUMNS, apps::replica_set_cells),
        ("apps", "DaemonSet") => printer(apps::DAEMON_SET_COLUMNS, apps::daemon_set_cells),
        ("apps", "StatefulSet") => printer(apps::STATEFUL_SET_COLUMNS, apps::stateful_set_cells),
        ("apps", "ControllerRevision") => printer(
            apps::CONTROLLER_REVISION_COLUMNS,
            apps::controller_revision_cells,
        ),
        ("batch", "Job") => printer(batch::JOB_COLUMNS, batch::job_cells),
        ("batch", "CronJob") => printer(batch::CRON_JOB_COLUMNS, batch::cron_job_cells),
        ("discovery.k8s.io", "EndpointSlice") => printer(
            service::ENDPOINT_SLICE_COLUMNS,
            service::endpoint_slice_cells,
        ),
        ("networking.k8s.io", "Ingress") => {
            printer(networking::INGRESS_COLUMNS, networking::ingress_cells)
        }
        ("networking.k8s.io", "IngressClass") => printer(
            networking::INGRESS_CLASS_COLUMNS,
            networking::ingress_class_cells,
        ),
        ("networking.k8s.io", "NetworkPolicy") => printer(
            networking::NETWORK_POLICY_COLUMNS,
            networking::network_policy_cells,
        ),
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            printer(certificates::CSR_COLUMNS, certificates::csr_cells)
        }
        ("coordination.k8s.io", "Lease") => printer(cluster::LEASE_COLUMNS, cluster::lease_cells),
        ("policy", "PodDisruptionBudget") => printer(
            cluster::POD_DISRUPTION_BUDGET_COLUMNS,
            cluster::pod_disruption_budget_cells,
        ),
        ("scheduling.k8s.io", "PriorityClass") => printer(
            cluster::PRIORITY_CLASS_COLUMNS,
            cluster::priority_class_cells,
        ),
        ("rbac.authorization.k8s.io", "RoleBinding") => {
            printer(rbac::ROLE_BINDING_COLUMNS, rbac::binding_cells)
        }
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            printer(rbac::CLUSTER_ROLE_BINDING_COLUMNS, rbac::binding_cells)
        }
        ("node.k8s.io", "RuntimeClass") => {
            printer(cluster::RUNTIME_CLASS_COLUMNS, cluster::runtime_class_cells)
        }
        // LimitRange (and anything else) has no printer upstream: the default convertor.
        _ => None,
    }
}

/// Columns of upstream's default table convertor (`rest.NewDefaultTableConvertor`), used for
/// kinds without a printer.
const DEFAULT_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new(
        "Created At",
        "date",
        descriptions::OBJECT_META_CREATION_TIMESTAMP,
    ),
];

/// Column definitions (meta.k8s.io/v1 TableColumnDefinition JSON objects: name, type, format,
/// description, priority) for a resource.
pub fn column_definitions(info: &ResourceInfo) -> Vec<Value> {
    let columns = printer_for(info).map_or(DEFAULT_COLUMNS, |p| p.columns);
    columns.iter().map(|c| c.to_json()).collect()
}

/// The cells of one row for an object, in column order (strings, integers as JSON numbers,
/// booleans as JSON booleans, exactly as upstream renders them). Wide (priority 1) columns
/// always have a cell, as upstream's server-side printing is always wide.
pub fn row_cells(info: &ResourceInfo, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    match printer_for(info) {
        Some(printer) => (printer.cells)(obj, now),
        None => vec![
            Value::from(fields::name(obj)),
            Value::from(duration::rfc3339_utc(fields::str_at(
                obj,
                &["metadata", "creationTimestamp"],
            ))),
        ],
    }
}

/// The `conditions` of one row (meta.k8s.io/v1 TableRowCondition JSON objects). Upstream sets
/// one only for pods that have finished, which lets clients tell completed rows apart.
pub fn row_conditions(info: &ResourceInfo, obj: &Value) -> Vec<Value> {
    match (info.group, info.kind) {
        ("", "Pod") => pod::row_conditions(obj),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api_types::resources::{find, RESOURCES};

    pub(super) fn now() -> jiff::Timestamp {
        "2024-05-01T12:00:00Z".parse().expect("valid timestamp")
    }

    pub(super) fn info(group: &str, plural: &str) -> &'static ResourceInfo {
        find(group, "v1", plural).expect("resource is registered")
    }

    #[test]
    fn every_registered_resource_has_as_many_cells_as_columns() {
        let obj = json!({"metadata": {"name": "x", "creationTimestamp": "2024-05-01T11:00:00Z"}});
        for info in RESOURCES {
            let columns = column_definitions(info);
            let cells = row_cells(info, &obj, now());
            assert_eq!(columns.len(), cells.len(), "{}", info.group_resource());
            let name_columns = columns.iter().filter(|c| c["format"] == "name").count();
            assert_eq!(name_columns, 1, "{}", info.group_resource());
        }
    }

    #[test]
    fn limit_ranges_use_the_default_convertor() {
        let info = info("", "limitranges");
        let columns = column_definitions(info);
        assert_eq!(
            columns,
            vec![
                json!({"name": "Name", "type": "string", "format": "name",
                       "description": descriptions::OBJECT_META_NAME, "priority": 0}),
                json!({"name": "Created At", "type": "date", "format": "",
                       "description": descriptions::OBJECT_META_CREATION_TIMESTAMP, "priority": 0}),
            ]
        );
        let obj =
            json!({"metadata": {"name": "limits", "creationTimestamp": "2024-04-30T08:15:00Z"}});
        assert_eq!(
            row_cells(info, &obj, now()),
            vec![json!("limits"), json!("2024-04-30T08:15:00Z")]
        );
        let unset = json!({"metadata": {"name": "limits"}});
        assert_eq!(
            row_cells(info, &unset, now()),
            vec![json!("limits"), json!("0001-01-01T00:00:00Z")]
        );
    }

    #[test]
    fn column_definitions_serialize_in_upstream_field_order() {
        let columns = column_definitions(info("", "configmaps"));
        let keys: Vec<&str> = columns[1]
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["name", "type", "format", "description", "priority"]);
    }

    #[test]
    fn only_finished_pods_have_row_conditions() {
        let info = info("", "pods");
        let done = json!({"metadata": {"name": "p"}, "status": {"phase": "Succeeded"}});
        assert_eq!(
            row_conditions(info, &done),
            vec![
                json!({"type": "Completed", "status": "True", "reason": "Succeeded",
                        "message": "The pod has completed successfully."})
            ]
        );
        let running = json!({"metadata": {"name": "p"}, "status": {"phase": "Running"}});
        assert!(row_conditions(info, &running).is_empty());
        assert!(row_conditions(self::info("", "configmaps"), &done).is_empty());
    }
}
