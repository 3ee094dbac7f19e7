//! PriorityClasses: the two system classes exist from the first start and cannot be
//! deleted. Their values and the reserved `system-` prefix are validated in api-types; the
//! single global default is the Priority admission plugin's ([`crate::admission::priority`]).

use crate::status::{ApiError, ApiResult};
use api_types::resources::ResourceInfo;
use serde_json::{json, Value};

/// Upstream's system classes (pkg/apis/scheduling/v1 `systemPriorityClasses`): name, value,
/// description.
pub const SYSTEM_PRIORITY_CLASSES: &[(&str, i32, &str)] = &[
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// The system classes as bootstrap creates them.
pub fn system_priority_classes() -> impl Iterator<Item = Value> {
    SYSTEM_PRIORITY_CLASSES
        .iter()
        .map(|(name, value, description)| {
            json!({
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": { "name": name },
                "value": value,
                "description": description,
            })
        })
}

/// Refuses to delete a system class, as upstream's PriorityClass `REST.Delete`. (Upstream's
/// deletecollection goes around that check, and so does ours.)
pub fn check_delete(info: &ResourceInfo, name: &str) -> ApiResult<()> {
    if SYSTEM_PRIORITY_CLASSES.iter().any(|(n, _, _)| *n == name) {
        return Err(ApiError::forbidden(
            info,
            name,
            "this is a system priority class and cannot be deleted",
        ));
    }
    Ok(())
}
