//! NodeAffinity: `nodeSelector` and required node affinity decide where a pod may go;
//! preferred node affinity terms add their weights to the nodes they match.

use std::collections::{BTreeMap, HashSet};

use api_types::selector::node::{self, term_matches};

use crate::framework::{
    default_normalize_score, ClusterEvent, CycleState, NodeInfo, NodeScore, Plugin, PodInfo, Point,
    PreFilterNodes, Snapshot, Status, MAX_NODE_SCORE,
};

pub const NAME: &str = "NodeAffinity";
pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

pub struct NodeAffinity;

/// The pod's nodeSelector and required node affinity both hold for this node (also used by
/// PodTopologySpread's nodeAffinityPolicy: Honor).
pub fn pod_matches_node(pod: &PodInfo, name: &str, labels: &BTreeMap<String, String>) -> bool {
    node::pod_matches_node(
        &pod.node_selector,
        pod.required_node_affinity.as_ref(),
        name,
        labels,
    )
}

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn points(&self) -> &'static [Point] {
        &[Point::PreFilter, Point::Filter, Point::Score]
    }

    fn events(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::NodeAdd, ClusterEvent::NodeLabelChange]
    }

    /// When every required term pins `metadata.name In [...]`, only those nodes need
    /// filtering (upstream's PreFilterResult).
    fn pre_filter(
        &self,
        _state: &mut CycleState,
        pod: &PodInfo,
        _snapshot: &Snapshot,
    ) -> (Status, PreFilterNodes) {
        let Some(required) = &pod.required_node_affinity else {
            return (Status::success(), None);
        };
        let mut names = HashSet::new();
        for term in &required.node_selector_terms {
            let pinned = term
                .match_fields
                .iter()
                .flatten()
                .find(|f| f.key == node::NODE_FIELD_NAME && f.operator == "In");
            match pinned {
                Some(f) => names.extend(f.values.iter().flatten().cloned()),
                None => return (Status::success(), None),
            }
        }
        if names.is_empty() {
            return (Status::unresolvable(REASON), None);
        }
        (Status::success(), Some(names))
    }

    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if pod_matches_node(pod, &node.name, &node.node().labels) {
            Status::success()
        } else {
            Status::unresolvable(REASON)
        }
    }

    fn score(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let labels = &node.node().labels;
        Ok(pod
            .preferred_node_affinity
            .iter()
            .filter(|p| p.weight != 0 && term_matches(&p.preference, &node.name, labels))
            .map(|p| p.weight as i64)
            .sum())
    }

    fn normalize_scores(&self, _state: &CycleState, _pod: &PodInfo, scores: &mut [NodeScore]) {
        default_normalize_score(MAX_NODE_SCORE, false, scores);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
    use serde_json::json;

    #[test]
    fn node_selector_and_required_terms_must_both_hold() {
        let p = pod(json!({
            "nodeSelector": {"disk": "ssd"},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]},
                {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["8"]}]}
            ]}}}
        }));
        let fits = |labels: serde_json::Value| {
            let n = node(json!({"metadata": {"name": "n", "labels": labels}}), &[]);
            NodeAffinity
                .filter(&CycleState::default(), &p, &n)
                .is_success()
        };
        assert!(fits(json!({"disk": "ssd", "zone": "a"})));
        assert!(fits(json!({"disk": "ssd", "cores": "16"})));
        assert!(!fits(json!({"disk": "ssd", "cores": "4"})));
        assert!(!fits(json!({"disk": "hdd", "zone": "a"})));
        assert!(!fits(json!({"zone": "a"})));
    }

    #[test]
    fn match_fields_pin_the_nodes_to_filter() {
        let p = pod(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}
            ]}}}}),
        );
        let (status, nodes) =
            NodeAffinity.pre_filter(&mut CycleState::default(), &p, &Snapshot::default());
        assert!(status.is_success());
        assert_eq!(nodes, Some(HashSet::from(["n2".to_string()])));
        let n1 = node(json!({"metadata": {"name": "n1"}}), &[]);
        assert!(!NodeAffinity
            .filter(&CycleState::default(), &p, &n1)
            .is_success());
    }

    #[test]
    fn preferred_terms_add_their_weights() {
        let p = pod(
            json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
                {"weight": 30, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}}
            ]}}}),
        );
        let a = node(
            json!({"metadata": {"name": "a", "labels": {"zone": "a", "disk": "ssd"}}}),
            &[],
        );
        let b = node(
            json!({"metadata": {"name": "b", "labels": {"zone": "a"}}}),
            &[],
        );
        let state = CycleState::default();
        assert_eq!(NodeAffinity.score(&state, &p, &a).unwrap(), 40);
        assert_eq!(NodeAffinity.score(&state, &p, &b).unwrap(), 10);
        let mut scores = vec![
            NodeScore {
                name: "a".into(),
                score: 40,
            },
            NodeScore {
                name: "b".into(),
                score: 10,
            },
        ];
        NodeAffinity.normalize_scores(&state, &p, &mut scores);
        assert_eq!((scores[0].score, scores[1].score), (100, 25));
    }
}
