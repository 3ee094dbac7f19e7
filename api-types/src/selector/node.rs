//! Node selectors: upstream `component-helpers/scheduling/corev1/nodeaffinity`. Whether a
//! node (its name and labels) satisfies a `NodeSelector`, a `NodeSelectorTerm` or one
//! `NodeSelectorRequirement`, and whether a pod's `nodeSelector` plus its required node
//! affinity admit the node. Shared by the scheduler (NodeAffinity, PodTopologySpread) and
//! the DaemonSet controller (which nodes should run a daemon pod).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec,
};

/// The only field a `matchFields` requirement may name.
pub const NODE_FIELD_NAME: &str = "metadata.name";

/// Whether `value` (a label's value, or `None` when the node lacks the label) satisfies one
/// requirement. `Gt`/`Lt` compare integers and need exactly one value; an unknown operator
/// matches nothing.
pub fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => !value.is_some_and(|v| values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value, values) else {
                return false;
            };
            match (v.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(v), Ok(b)) if req.operator == "Gt" => v > b,
                (Ok(v), Ok(b)) => v < b,
                _ => false,
            }
        }
        _ => false,
    }
}

/// A term matches when all its expressions (on labels) and all its fields (only
/// `metadata.name`) do; an empty term matches nothing, as upstream.
pub fn term_matches(
    term: &NodeSelectorTerm,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == NODE_FIELD_NAME && requirement_matches(r, Some(name)))
}

/// The terms of a `NodeSelector` are ORed; no terms match nothing.
pub fn selector_matches(
    selector: &NodeSelector,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector
        .node_selector_terms
        .iter()
        .any(|t| term_matches(t, name, labels))
}

/// A pod's `nodeSelector` (every pair must be a label of the node) and its required node
/// affinity (when present) both hold for the node: upstream `RequiredNodeAffinity.Match`.
pub fn pod_matches_node(
    node_selector: &BTreeMap<String, String>,
    required_node_affinity: Option<&NodeSelector>,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    node_selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        && required_node_affinity.is_none_or(|sel| selector_matches(sel, name, labels))
}

/// The required (during scheduling, ignored during execution) node affinity of a pod spec.
pub fn required_node_affinity(spec: &PodSpec) -> Option<&NodeSelector> {
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()
}

/// [`pod_matches_node`] for a whole pod spec.
pub fn pod_spec_matches_node(
    spec: &PodSpec,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let empty = BTreeMap::new();
    pod_matches_node(
        spec.node_selector.as_ref().unwrap_or(&empty),
        required_node_affinity(spec),
        name,
        labels,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: serde_json::Value) -> BTreeMap<String, String> {
        serde_json::from_value(v).unwrap()
    }

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn operators_follow_upstream() {
        assert!(requirement_matches(&req("k", "In", &["a", "b"]), Some("b")));
        assert!(!requirement_matches(&req("k", "In", &["a"]), None));
        assert!(requirement_matches(&req("k", "NotIn", &["a"]), None));
        assert!(!requirement_matches(&req("k", "NotIn", &["a"]), Some("a")));
        assert!(requirement_matches(&req("k", "Exists", &[]), Some("")));
        assert!(!requirement_matches(&req("k", "Exists", &[]), None));
        assert!(requirement_matches(&req("k", "DoesNotExist", &[]), None));
        assert!(requirement_matches(&req("k", "Gt", &["8"]), Some("16")));
        assert!(!requirement_matches(&req("k", "Gt", &["8"]), Some("8")));
        assert!(requirement_matches(&req("k", "Lt", &["8"]), Some("-1")));
        assert!(!requirement_matches(&req("k", "Lt", &["8"]), Some("x")));
        assert!(!requirement_matches(
            &req("k", "Gt", &["1", "2"]),
            Some("5")
        ));
        assert!(!requirement_matches(&req("k", "Bogus", &["a"]), Some("a")));
    }

    #[test]
    fn terms_and_their_requirements() {
        let l = labels(json!({"zone": "a", "disk": "ssd"}));
        let term = |exprs: Vec<NodeSelectorRequirement>, fields: Vec<NodeSelectorRequirement>| {
            NodeSelectorTerm {
                match_expressions: Some(exprs),
                match_fields: Some(fields),
            }
        };
        assert!(!term_matches(&term(vec![], vec![]), "n1", &l));
        assert!(term_matches(
            &term(
                vec![req("zone", "In", &["a"]), req("disk", "Exists", &[])],
                vec![req("metadata.name", "In", &["n1"])]
            ),
            "n1",
            &l
        ));
        assert!(!term_matches(
            &term(vec![], vec![req("metadata.name", "In", &["n1"])]),
            "n2",
            &l
        ));
        // Only metadata.name is a node field.
        assert!(!term_matches(
            &term(vec![], vec![req("metadata.uid", "In", &["n1"])]),
            "n1",
            &l
        ));
        let sel = NodeSelector {
            node_selector_terms: vec![
                term(vec![req("zone", "In", &["b"])], vec![]),
                term(vec![req("disk", "In", &["ssd"])], vec![]),
            ],
        };
        assert!(selector_matches(&sel, "n1", &l));
        assert!(!selector_matches(
            &NodeSelector {
                node_selector_terms: vec![]
            },
            "n1",
            &l
        ));
    }

    #[test]
    fn node_selector_and_required_affinity_must_both_hold() {
        let spec: PodSpec = serde_json::from_value(json!({
            "containers": [],
            "nodeSelector": {"disk": "ssd"},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]},
                {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["8"]}]}
            ]}}}
        }))
        .unwrap();
        let fits = |l: serde_json::Value| pod_spec_matches_node(&spec, "n", &labels(l));
        assert!(fits(json!({"disk": "ssd", "zone": "a"})));
        assert!(fits(json!({"disk": "ssd", "cores": "16"})));
        assert!(!fits(json!({"disk": "ssd", "cores": "4"})));
        assert!(!fits(json!({"disk": "hdd", "zone": "a"})));
        assert!(!fits(json!({"zone": "a"})));
        let plain = PodSpec::default();
        assert!(pod_spec_matches_node(&plain, "n", &BTreeMap::new()));
    }
}
