//! NodeName: a pod that names its node (`spec.nodeName`) fits only that node. Pods the
//! scheduler sees have no node yet, so this matters for preemption's what-if checks and
//! for pods whose nodeName a webhook set at creation.

use crate::framework::{ClusterEvent, CycleState, NodeInfo, Plugin, PodInfo, Point, Status};

pub const NAME: &str = "NodeName";
pub const REASON: &str = "node(s) didn't match the requested node name";

pub struct NodeName;

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        NAME
    }

    fn points(&self) -> &'static [Point] {
        &[Point::Filter]
    }

    fn events(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::NodeAdd]
    }

    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match &pod.node_name {
            Some(name) if *name != node.name => Status::unresolvable(REASON),
            _ => Status::success(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
    use serde_json::json;

    #[test]
    fn only_the_named_node_fits() {
        let mut p = pod(json!({}));
        p.node_name = Some("a".into());
        let a = node(json!({"metadata": {"name": "a"}}), &[]);
        let b = node(json!({"metadata": {"name": "b"}}), &[]);
        assert!(NodeName.filter(&CycleState::default(), &p, &a).is_success());
        assert_eq!(
            NodeName.filter(&CycleState::default(), &p, &b),
            Status::unresolvable(REASON)
        );
    }
}
