//! NodeRestriction (upstream `plugin/pkg/admission/noderestriction`), the part that
//! complements the Node authorizer: a kubelet (`system:node:<name>` in `system:nodes`)
//! may create only its own Node, and only mirror pods bound to itself. Other users are
//! not affected.

use super::Attributes;
use crate::authz::escalation::REQUEST_USER;
use crate::status::ApiResult;
use serde_json::Value;

/// The annotation of a static pod's mirror pod.
const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";

/// The node name of the request's user, when a node makes it.
fn requesting_node() -> Option<String> {
    REQUEST_USER
        .try_with(|u| {
            let node = u.name.strip_prefix("system:node:")?;
            let in_group = u
                .groups
                .iter()
                .any(|g| g == crate::authz::node::NODES_GROUP);
            (in_group && !node.is_empty()).then(|| node.to_string())
        })
        .ok()
        .flatten()
}

/// Checks a create by a node.
pub fn validate_create(a: &Attributes<'_>, obj: &Value) -> ApiResult<()> {
    let Some(node) = requesting_node() else {
        return Ok(());
    };
    if a.is("", "nodes") {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if name != node {
            return Err(a.forbidden(format!(
                "node {node:?} is not allowed to modify node {name:?}"
            )));
        }
    }
    if a.is("", "pods") {
        let mirror = obj
            .pointer("/metadata/annotations")
            .and_then(|m| m.get(CONFIG_MIRROR))
            .is_some();
        if !mirror {
            return Err(a.forbidden(format!(
                "pod does not have {CONFIG_MIRROR:?} annotation, node {node:?} can only create mirror pods"
            )));
        }
        let bound = obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if bound != node {
            return Err(a.forbidden(format!(
                "node {node:?} can only create pods with spec.nodeName set to itself"
            )));
        }
    }
    Ok(())
}
