//! NodePorts: a pod's `hostPort`s must be free on the node (same protocol and port, on the
//! same host IP or either side on every address).

use crate::framework::{
    ClusterEvent, CycleState, NodeInfo, Plugin, PodInfo, Point, PreFilterNodes, Snapshot, Status,
};

pub const NAME: &str = "NodePorts";
pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

pub struct NodePorts;

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        NAME
    }

    fn points(&self) -> &'static [Point] {
        &[Point::PreFilter, Point::Filter]
    }

    fn events(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::NodeAdd, ClusterEvent::AssignedPodDelete]
    }

    fn pre_filter(
        &self,
        _state: &mut CycleState,
        pod: &PodInfo,
        _snapshot: &Snapshot,
    ) -> (Status, PreFilterNodes) {
        if pod.host_ports.is_empty() {
            (Status::skip(), None)
        } else {
            (Status::success(), None)
        }
    }

    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let taken = pod
            .host_ports
            .iter()
            .any(|want| node.used_ports.iter().any(|used| used.conflicts(want)));
        if taken {
            Status::unschedulable(REASON)
        } else {
            Status::success()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
    use serde_json::json;

    #[test]
    fn a_taken_host_port_rejects_the_node() {
        let mut n = node(json!({"metadata": {"name": "n"}}), &[]);
        let holder = pod(
            json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}),
        );
        n.add_pod(std::sync::Arc::new(holder));
        let same = pod(
            json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}),
        );
        let other = pod(
            json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8081}]}]}),
        );
        let udp = pod(
            json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}]}]}),
        );
        let state = CycleState::default();
        assert_eq!(
            NodePorts.filter(&state, &same, &n),
            Status::unschedulable(REASON)
        );
        assert!(NodePorts.filter(&state, &other, &n).is_success());
        assert!(NodePorts.filter(&state, &udp, &n).is_success());
    }
}
