//! TaintToleration: a node's NoSchedule/NoExecute taints keep out pods that do not
//! tolerate them; untolerated PreferNoSchedule taints lower the node's score.

use k8s_openapi::api::core::v1::{Taint, Toleration};

use crate::framework::{
    default_normalize_score, ClusterEvent, CycleState, NodeInfo, NodeScore, Plugin, PodInfo, Point,
    Status, MAX_NODE_SCORE,
};

pub const NAME: &str = "TaintToleration";

pub struct TaintToleration;

pub use api_types::taints::tolerates;

/// The untolerated-taint reason, in upstream's words.
pub fn untolerated_reason(taint: &Taint) -> String {
    format!(
        "node(s) had untolerated taint {{{}: {}}}",
        taint.key,
        taint.value.as_deref().unwrap_or("")
    )
}

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }

    fn points(&self) -> &'static [Point] {
        &[Point::Filter, Point::Score]
    }

    fn events(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::NodeAdd, ClusterEvent::NodeTaintChange]
    }

    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let untolerated = node.node().taints.iter().find(|taint| {
            (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
                && !pod.tolerations.iter().any(|t| tolerates(t, taint))
        });
        match untolerated {
            Some(taint) => Status::unresolvable(untolerated_reason(taint)),
            None => Status::success(),
        }
    }

    fn score(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let prefer: Vec<&Toleration> = pod
            .tolerations
            .iter()
            .filter(|t| {
                matches!(
                    t.effect.as_deref(),
                    None | Some("") | Some("PreferNoSchedule")
                )
            })
            .collect();
        let count = node
            .node()
            .taints
            .iter()
            .filter(|taint| {
                taint.effect == "PreferNoSchedule" && !prefer.iter().any(|t| tolerates(t, taint))
            })
            .count();
        Ok(count as i64)
    }

    fn normalize_scores(&self, _state: &CycleState, _pod: &PodInfo, scores: &mut [NodeScore]) {
        default_normalize_score(MAX_NODE_SCORE, true, scores);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
    use serde_json::json;

    #[test]
    fn untolerated_hard_taints_reject_with_upstream_reason() {
        let n = node(
            json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
            &[],
        );
        let status = TaintToleration.filter(&CycleState::default(), &pod(json!({})), &n);
        assert_eq!(
            status,
            Status::unresolvable("node(s) had untolerated taint {dedicated: gpu}")
        );
        let tolerant = pod(
            json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu"}]}),
        );
        assert!(TaintToleration
            .filter(&CycleState::default(), &tolerant, &n)
            .is_success());
    }

    #[test]
    fn prefer_no_schedule_taints_lower_the_score() {
        let tainted = node(
            json!({"metadata": {"name": "a"}, "spec": {"taints": [{"key": "slow", "effect": "PreferNoSchedule"}]}}),
            &[],
        );
        let clean = node(json!({"metadata": {"name": "b"}}), &[]);
        let p = pod(json!({}));
        let state = CycleState::default();
        let mut scores = vec![
            NodeScore {
                name: "a".into(),
                score: TaintToleration.score(&state, &p, &tainted).unwrap(),
            },
            NodeScore {
                name: "b".into(),
                score: TaintToleration.score(&state, &p, &clean).unwrap(),
            },
        ];
        TaintToleration.normalize_scores(&state, &p, &mut scores);
        assert_eq!(scores[0].score, 0);
        assert_eq!(scores[1].score, MAX_NODE_SCORE);
    }
}
