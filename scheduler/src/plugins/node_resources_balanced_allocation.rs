//! NodeResourcesBalancedAllocation: prefers nodes whose cpu and memory would be used in
//! similar fractions after placing the pod (score = (1 - standard deviation) × 100).

use serde::Deserialize;

use super::node_resources_fit::{default_resources, ResourceWeight};
use crate::framework::{
    types::{CPU, MEMORY},
    ClusterEvent, CycleState, NodeInfo, Plugin, PodInfo, Point, Status, MAX_NODE_SCORE,
};

pub const NAME: &str = "NodeResourcesBalancedAllocation";

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Args {
    #[serde(default)]
    resources: Vec<ResourceWeight>,
}

pub struct BalancedAllocation {
    resources: Vec<String>,
}

impl BalancedAllocation {
    pub fn new(args: Option<&serde_json::Value>) -> Result<BalancedAllocation, String> {
        let args: Args = match args {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| format!("NodeResourcesBalancedAllocationArgs: {e}"))?,
            None => Args::default(),
        };
        let resources = if args.resources.is_empty() {
            default_resources()
        } else {
            args.resources
        };
        Ok(BalancedAllocation {
            resources: resources.into_iter().map(|r| r.name).collect(),
        })
    }
}

impl Plugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        NAME
    }

    fn points(&self) -> &'static [Point] {
        &[Point::Score]
    }

    fn events(&self) -> &'static [ClusterEvent] {
        &[
            ClusterEvent::NodeAdd,
            ClusterEvent::NodeAllocatableChange,
            ClusterEvent::AssignedPodDelete,
        ]
    }

    fn score(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let alloc = node.allocatable();
        let mut fractions = Vec::with_capacity(self.resources.len());
        for name in &self.resources {
            let (allocatable, requested) = match name.as_str() {
                CPU => (
                    alloc.milli_cpu,
                    node.requested.milli_cpu + pod.requests.milli_cpu,
                ),
                MEMORY => (alloc.memory, node.requested.memory + pod.requests.memory),
                other => {
                    // Extended resources count only when the pod asks for them.
                    if pod.requests.get(other) == 0 {
                        continue;
                    }
                    (
                        alloc.get(other),
                        node.requested.get(other) + pod.requests.get(other),
                    )
                }
            };
            if allocatable == 0 {
                continue;
            }
            fractions.push((requested as f64 / allocatable as f64).min(1.0));
        }
        if fractions.len() < 2 {
            return Ok(MAX_NODE_SCORE);
        }
        let mean = fractions.iter().sum::<f64>() / fractions.len() as f64;
        let variance =
            fractions.iter().map(|f| (f - mean).powi(2)).sum::<f64>() / fractions.len() as f64;
        Ok(((1.0 - variance.sqrt()) * MAX_NODE_SCORE as f64) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
    use serde_json::json;

    #[test]
    fn balanced_use_scores_higher() {
        let plugin = BalancedAllocation::new(None).unwrap();
        let alloc = json!({"cpu": "4", "memory": "4Gi", "pods": "10"});
        // After the pod: cpu 2/4 = 0.5, memory 2/4 = 0.5 → std 0 → 100.
        let even = node(
            json!({"metadata": {"name": "a"}, "status": {"allocatable": alloc}}),
            &[json!({"cpu": "1", "memory": "1Gi"})],
        );
        // After the pod: cpu 4/4 = 1, memory 1/4 = .25 → std .375 → 62.
        let skewed = node(
            json!({"metadata": {"name": "b"}, "status": {"allocatable": alloc}}),
            &[json!({"cpu": "3"})],
        );
        let p = pod(
            json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}),
        );
        let state = CycleState::default();
        assert_eq!(plugin.score(&state, &p, &even).unwrap(), 100);
        assert_eq!(plugin.score(&state, &p, &skewed).unwrap(), 62);
    }
}
