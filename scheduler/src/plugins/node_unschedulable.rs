//! NodeUnschedulable: a cordoned node (`spec.unschedulable`) takes only pods that tolerate
//! the `node.kubernetes.io/unschedulable:NoSchedule` taint.

use k8s_openapi::api::core::v1::Taint;

use super::taint_toleration::tolerates;
use crate::framework::{ClusterEvent, CycleState, NodeInfo, Plugin, PodInfo, Point, Status};

pub const NAME: &str = "NodeUnschedulable";
pub const REASON: &str = "node(s) were unschedulable";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

pub struct NodeUnschedulable;

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        NAME
    }

    fn points(&self) -> &'static [Point] {
        &[Point::Filter]
    }

    fn events(&self) -> &'static [ClusterEvent] {
        &[
            ClusterEvent::NodeAdd,
            ClusterEvent::NodeSpecUnschedulableChange,
            ClusterEvent::NodeTaintChange,
        ]
    }

    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if !node.node().unschedulable {
            return Status::success();
        }
        let taint = Taint {
            key: TAINT_UNSCHEDULABLE.into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        };
        if pod.tolerations.iter().any(|t| tolerates(t, &taint)) {
            Status::success()
        } else {
            Status::unresolvable(REASON)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
    use serde_json::json;

    #[test]
    fn cordoned_nodes_take_only_tolerating_pods() {
        let cordoned = node(
            json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}}),
            &[],
        );
        let plain = pod(json!({}));
        let status = NodeUnschedulable.filter(&CycleState::default(), &plain, &cordoned);
        assert_eq!(status, Status::unresolvable(REASON));
        let tolerant = pod(
            json!({"tolerations": [{"key": TAINT_UNSCHEDULABLE, "operator": "Exists", "effect": "NoSchedule"}]}),
        );
        assert!(NodeUnschedulable
            .filter(&CycleState::default(), &tolerant, &cordoned)
            .is_success());
        let open = node(json!({"metadata": {"name": "n"}}), &[]);
        assert!(NodeUnschedulable
            .filter(&CycleState::default(), &plain, &open)
            .is_success());
    }
}
