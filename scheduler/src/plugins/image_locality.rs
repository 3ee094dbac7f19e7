//! ImageLocality: prefers nodes that already have the pod's images, weighing each image by
//! its size and by how many nodes have it (so one node holding a popular image does not
//! attract every pod).

use crate::framework::types::normalized_image_name;
use crate::framework::{
    ClusterEvent, CycleState, NodeInfo, Plugin, PodInfo, Point, Snapshot, Status, MAX_NODE_SCORE,
};

pub const NAME: &str = "ImageLocality";

const MB: i64 = 1024 * 1024;
/// Below this the score is 0 (upstream `minThreshold`, 23 MiB).
const MIN_THRESHOLD: i64 = 23 * MB;
/// Per container, above this the score is the maximum (upstream, 1000 MiB).
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

const STATE_KEY: &str = "PreScoreImageLocality";

/// Per image of the pod: the fraction of nodes that have it.
#[derive(Clone)]
struct Spread(Vec<(String, f64)>);

pub struct ImageLocality;

impl Plugin for ImageLocality {
    fn name(&self) -> &'static str {
        NAME
    }

    fn points(&self) -> &'static [Point] {
        &[Point::PreScore, Point::Score]
    }

    fn events(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::NodeAdd, ClusterEvent::NodeOtherChange]
    }

    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _nodes: &[std::sync::Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Status {
        let total = snapshot.num_nodes.max(1) as f64;
        let spread = pod
            .images
            .iter()
            .map(|image| {
                let name = normalized_image_name(image);
                let have = snapshot.image_nodes.get(&name).copied().unwrap_or(0) as f64;
                (name, have / total)
            })
            .collect();
        state.write(STATE_KEY, Spread(spread));
        Status::success()
    }

    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(Spread(spread)) = state.read::<Spread>(STATE_KEY) else {
            return Err(Status::error("ImageLocality: no PreScore state"));
        };
        let images = &node.node().images;
        let sum: i64 = spread
            .iter()
            .filter_map(|(name, fraction)| {
                images
                    .get(name)
                    .map(|size| (*size as f64 * fraction) as i64)
            })
            .sum();
        let containers = pod.images.len().max(1) as i64;
        let max = MAX_CONTAINER_THRESHOLD * containers;
        let clamped = sum.clamp(MIN_THRESHOLD, max);
        Ok(MAX_NODE_SCORE * (clamped - MIN_THRESHOLD) / (max - MIN_THRESHOLD))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
    use serde_json::json;
    use std::collections::HashMap;
    use std::sync::Arc;

    #[test]
    fn nodes_with_the_big_image_score_higher() {
        let with = node(
            json!({"metadata": {"name": "a"}, "status": {"images": [{"names": ["docker.io/library/app:1"], "sizeBytes": 500 * MB}]}}),
            &[],
        );
        let without = node(json!({"metadata": {"name": "b"}}), &[]);
        let snapshot = Snapshot {
            num_nodes: 2,
            image_nodes: Arc::new(HashMap::from([("docker.io/library/app:1".to_string(), 1)])),
            ..Snapshot::default()
        };
        let p = pod(json!({"containers": [{"name": "c", "image": "docker.io/library/app:1"}]}));
        let mut state = CycleState::default();
        assert!(ImageLocality
            .pre_score(&mut state, &p, &[], &snapshot)
            .is_success());
        // 500 MiB × ½ spread = 250 MiB → (250-23)/(1000-23) × 100 = 23.
        assert_eq!(ImageLocality.score(&state, &p, &with).unwrap(), 23);
        assert_eq!(ImageLocality.score(&state, &p, &without).unwrap(), 0);
    }
}
