//! NodeResourcesFit: a pod fits a node when its requests (cpu, memory, ephemeral-storage,
//! extended resources, and one more pod) fit in what the node's allocatable leaves after
//! the pods already counted there. Scores by the configured strategy: LeastAllocated
//! (default, spreads load) or MostAllocated (packs).

use serde::Deserialize;

use crate::framework::{
    types::{CPU, EPHEMERAL_STORAGE, MEMORY},
    ClusterEvent, CycleState, NodeInfo, Plugin, PodInfo, Point, Status, MAX_NODE_SCORE,
};

pub const NAME: &str = "NodeResourcesFit";

/// `NodeResourcesFitArgs` (kubescheduler.config.k8s.io/v1).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Args {
    #[serde(default)]
    pub ignored_resources: Vec<String>,
    #[serde(default)]
    pub ignored_resource_groups: Vec<String>,
    #[serde(default)]
    pub scoring_strategy: Option<ScoringStrategy>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScoringStrategy {
    #[serde(rename = "type", default = "least_allocated")]
    pub type_: String,
    #[serde(default)]
    pub resources: Vec<ResourceWeight>,
    #[serde(default)]
    pub requested_to_capacity_ratio: Option<serde_json::Value>,
}

fn least_allocated() -> String {
    "LeastAllocated".into()
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceWeight {
    pub name: String,
    pub weight: i64,
}

/// cpu and memory, weight 1 each (upstream default).
pub fn default_resources() -> Vec<ResourceWeight> {
    vec![
        ResourceWeight {
            name: CPU.into(),
            weight: 1,
        },
        ResourceWeight {
            name: MEMORY.into(),
            weight: 1,
        },
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Strategy {
    LeastAllocated,
    MostAllocated,
}

pub struct NodeResourcesFit {
    strategy: Strategy,
    resources: Vec<ResourceWeight>,
    ignored_resources: Vec<String>,
    ignored_groups: Vec<String>,
}

impl NodeResourcesFit {
    pub fn new(args: Option<&serde_json::Value>) -> Result<NodeResourcesFit, String> {
        let args: Args = match args {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| format!("NodeResourcesFitArgs: {e}"))?,
            None => Args::default(),
        };
        let scoring = args.scoring_strategy.unwrap_or(ScoringStrategy {
            type_: least_allocated(),
            resources: Vec::new(),
            requested_to_capacity_ratio: None,
        });
        let strategy = match scoring.type_.as_str() {
            "LeastAllocated" => Strategy::LeastAllocated,
            "MostAllocated" => Strategy::MostAllocated,
            "RequestedToCapacityRatio" => {
                return Err("scoringStrategy.type: RequestedToCapacityRatio is not supported by pikube; use LeastAllocated or MostAllocated".into())
            }
            other => return Err(format!("scoringStrategy.type: Unsupported value: {other:?}")),
        };
        let resources = if scoring.resources.is_empty() {
            default_resources()
        } else {
            scoring.resources
        };
        for r in &resources {
            if !(1..=100).contains(&r.weight) {
                return Err(format!(
                    "scoringStrategy.resources[{}].weight: must be in the range [1, 100]",
                    r.name
                ));
            }
        }
        Ok(NodeResourcesFit {
            strategy,
            resources,
            ignored_resources: args.ignored_resources,
            ignored_groups: args.ignored_resource_groups,
        })
    }

    fn ignored(&self, name: &str) -> bool {
        self.ignored_resources.iter().any(|r| r == name)
            || name
                .split_once('/')
                .is_some_and(|(group, _)| self.ignored_groups.iter().any(|g| g == group))
    }
}

/// One shortfall: the reason, and whether the node could never fit the request (the
/// request exceeds its allocatable outright), which makes preemption pointless there.
struct Insufficient {
    reason: std::borrow::Cow<'static, str>,
    unresolvable: bool,
}

/// Upstream `fitsRequest`.
fn fits(pod: &PodInfo, node: &NodeInfo, ignored: impl Fn(&str) -> bool) -> Vec<Insufficient> {
    let alloc = node.allocatable();
    let used = &node.requested;
    let mut out = Vec::new();
    if used.allowed_pod_number + 1 > alloc.allowed_pod_number {
        out.push(Insufficient {
            reason: "Too many pods".into(),
            unresolvable: false,
        });
    }
    let req = &pod.requests;
    let mut check = |name: &str, want: i64, have: i64, used: i64| {
        if want > 0 && want > have - used {
            out.push(Insufficient {
                reason: match name {
                    CPU => "Insufficient cpu".into(),
                    MEMORY => "Insufficient memory".into(),
                    EPHEMERAL_STORAGE => "Insufficient ephemeral-storage".into(),
                    _ => format!("Insufficient {name}").into(),
                },
                unresolvable: want > have,
            });
        }
    };
    check(CPU, req.milli_cpu, alloc.milli_cpu, used.milli_cpu);
    check(MEMORY, req.memory, alloc.memory, used.memory);
    check(
        EPHEMERAL_STORAGE,
        req.ephemeral_storage,
        alloc.ephemeral_storage,
        used.ephemeral_storage,
    );
    for (name, want) in &req.scalar {
        if ignored(name) {
            continue;
        }
        check(name, *want, alloc.get(name), used.get(name));
    }
    out
}

impl Plugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        NAME
    }

    fn points(&self) -> &'static [Point] {
        &[Point::Filter, Point::Score]
    }

    fn events(&self) -> &'static [ClusterEvent] {
        &[
            ClusterEvent::NodeAdd,
            ClusterEvent::NodeAllocatableChange,
            ClusterEvent::AssignedPodDelete,
            ClusterEvent::AssignedPodUpdate,
        ]
    }

    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let short = fits(pod, node, |n| self.ignored(n));
        if short.is_empty() {
            return Status::success();
        }
        let mut status = Status::unschedulable("");
        if short.iter().any(|s| s.unresolvable) {
            status.code = crate::framework::Code::UnschedulableAndUnresolvable;
        }
        status.reasons = short.into_iter().map(|s| s.reason).collect();
        status
    }

    fn score(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let alloc = node.allocatable();
        let mut total = 0;
        let mut weights = 0;
        for r in &self.resources {
            let (allocatable, requested) = match r.name.as_str() {
                CPU => (alloc.milli_cpu, node.non_zero_cpu + pod.non_zero_cpu),
                MEMORY => (alloc.memory, node.non_zero_memory + pod.non_zero_memory),
                name => (
                    alloc.get(name),
                    node.requested.get(name) + pod.requests.get(name),
                ),
            };
            if allocatable == 0 {
                continue;
            }
            let score = match self.strategy {
                Strategy::LeastAllocated if requested > allocatable => 0,
                Strategy::LeastAllocated => {
                    (allocatable - requested) * MAX_NODE_SCORE / allocatable
                }
                Strategy::MostAllocated => {
                    requested.min(allocatable) * MAX_NODE_SCORE / allocatable
                }
            };
            total += score * r.weight;
            weights += r.weight;
        }
        Ok(if weights == 0 { 0 } else { total / weights })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
    use serde_json::json;

    fn small_node(name: &str, existing: &[serde_json::Value]) -> NodeInfo {
        node(
            json!({"metadata": {"name": name}, "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "3", "example.com/gpu": "1"}}}),
            existing,
        )
    }

    fn requesting(requests: serde_json::Value) -> PodInfo {
        pod(json!({"containers": [{"name": "c", "resources": {"requests": requests}}]}))
    }

    #[test]
    fn rejects_with_every_insufficient_resource() {
        let plugin = NodeResourcesFit::new(None).unwrap();
        let n = small_node("n", &[json!({"cpu": "1500m", "memory": "1Gi"})]);
        let status = plugin.filter(
            &CycleState::default(),
            &requesting(json!({"cpu": "1", "memory": "4Gi"})),
            &n,
        );
        assert_eq!(status.code, crate::framework::Code::Unschedulable);
        assert_eq!(
            status.reasons[..],
            ["Insufficient cpu", "Insufficient memory"]
        );
        assert!(plugin
            .filter(
                &CycleState::default(),
                &requesting(json!({"cpu": "500m"})),
                &n
            )
            .is_success());
    }

    #[test]
    fn a_request_larger_than_the_node_is_unresolvable() {
        let plugin = NodeResourcesFit::new(None).unwrap();
        let n = small_node("n", &[]);
        let status = plugin.filter(
            &CycleState::default(),
            &requesting(json!({"example.com/gpu": "2"})),
            &n,
        );
        assert_eq!(
            status.code,
            crate::framework::Code::UnschedulableAndUnresolvable
        );
        assert_eq!(status.reasons[..], ["Insufficient example.com/gpu"]);
    }

    #[test]
    fn counts_pods_against_the_pod_limit() {
        let plugin = NodeResourcesFit::new(None).unwrap();
        let n = small_node("n", &[json!({}), json!({}), json!({})]);
        let status = plugin.filter(&CycleState::default(), &requesting(json!({})), &n);
        assert_eq!(status.reasons[..], ["Too many pods"]);
    }

    #[test]
    fn ignored_resources_are_not_checked() {
        let plugin =
            NodeResourcesFit::new(Some(&json!({"ignoredResourceGroups": ["example.com"]})))
                .unwrap();
        let n = small_node("n", &[]);
        assert!(plugin
            .filter(
                &CycleState::default(),
                &requesting(json!({"example.com/gpu": "5"})),
                &n
            )
            .is_success());
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node_and_most_allocated_the_fuller() {
        let busy = small_node("busy", &[json!({"cpu": "1", "memory": "2Gi"})]);
        let idle = small_node("idle", &[]);
        let p = requesting(json!({"cpu": "500m", "memory": "1Gi"}));
        let least = NodeResourcesFit::new(None).unwrap();
        let state = CycleState::default();
        // idle: cpu (2000-500)/2000 = 75, memory (4-1)/4 = 75 → 75; busy: 25 and 25 → 25.
        assert_eq!(least.score(&state, &p, &idle).unwrap(), 75);
        assert_eq!(least.score(&state, &p, &busy).unwrap(), 25);
        let most =
            NodeResourcesFit::new(Some(&json!({"scoringStrategy": {"type": "MostAllocated"}})))
                .unwrap();
        assert_eq!(most.score(&state, &p, &busy).unwrap(), 75);
        assert_eq!(most.score(&state, &p, &idle).unwrap(), 25);
    }

    #[test]
    fn bad_args_are_rejected() {
        assert!(
            NodeResourcesFit::new(Some(&json!({"scoringStrategy": {"type": "Bogus"}}))).is_err()
        );
        assert!(NodeResourcesFit::new(Some(
            &json!({"scoringStrategy": {"resources": [{"name": "cpu", "weight": 0}]}})
        ))
        .is_err());
        assert!(NodeResourcesFit::new(Some(&json!({"unknown": 1}))).is_err());
    }
}
