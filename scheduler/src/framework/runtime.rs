//! A profile's framework: its plugins in order at each extension point, and how a cycle
//! runs them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::{
    ClusterEvent, CycleState, NodeInfo, NodeScore, PodInfo, Point, PreFilterNodes, Snapshot, Status,
};
use crate::framework::Plugin;

/// The plugins of one profile (one `schedulerName`).
pub struct Framework {
    pub scheduler_name: String,
    pre_filter: Vec<Arc<dyn Plugin>>,
    filter: Vec<Arc<dyn Plugin>>,
    pre_score: Vec<Arc<dyn Plugin>>,
    score: Vec<(Arc<dyn Plugin>, i64)>,
    /// DefaultPreemption is enabled (the only PostFilter plugin).
    pub preemption: bool,
    /// 0 = adaptive (upstream: 50% - nodes/125, at least 5%).
    pub percentage_of_nodes_to_score: i32,
    /// Event → names of the plugins that care, for re-queueing unschedulable pods.
    events: HashMap<ClusterEvent, HashSet<&'static str>>,
    /// Per PreFilter plugin: the bit of its Filter in `CycleState::skipped_filters`.
    pre_filter_skip_bits: Vec<u64>,
}

/// A plugin enabled at a point, with its score weight (score only). A framework's plugins
/// run in the order of these entries at each point.
pub struct EnabledPlugin {
    pub point: Point,
    pub plugin: Arc<dyn Plugin>,
    pub weight: i64,
}

impl Framework {
    pub fn new(
        scheduler_name: String,
        plugins: Vec<EnabledPlugin>,
        preemption: bool,
        percentage_of_nodes_to_score: i32,
    ) -> Framework {
        let mut f = Framework {
            scheduler_name,
            pre_filter: Vec::new(),
            filter: Vec::new(),
            pre_score: Vec::new(),
            score: Vec::new(),
            preemption,
            percentage_of_nodes_to_score,
            events: HashMap::new(),
            pre_filter_skip_bits: Vec::new(),
        };
        for e in plugins {
            match e.point {
                Point::PreFilter => f.pre_filter.push(e.plugin.clone()),
                Point::Filter => f.filter.push(e.plugin.clone()),
                Point::PreScore => f.pre_score.push(e.plugin.clone()),
                Point::Score => f.score.push((e.plugin.clone(), e.weight)),
                Point::PostFilter => {}
            }
            for event in e.plugin.events() {
                f.events.entry(*event).or_default().insert(e.plugin.name());
            }
        }
        f.pre_filter_skip_bits = f
            .pre_filter
            .iter()
            .map(|p| {
                f.filter
                    .iter()
                    .enumerate()
                    .filter(|(_, q)| q.name() == p.name())
                    .fold(0, |bits, (i, _)| {
                        bits | 1u64.checked_shl(i as u32).unwrap_or(0)
                    })
            })
            .collect();
        f
    }

    /// Names of the plugins at each point, for logs and tests.
    pub fn describe(&self) -> String {
        let names =
            |v: &[Arc<dyn Plugin>]| v.iter().map(|p| p.name()).collect::<Vec<_>>().join(",");
        let scores = self
            .score
            .iter()
            .map(|(p, w)| format!("{}={w}", p.name()))
            .collect::<Vec<_>>()
            .join(",");
        format!(
            "preFilter=[{}] filter=[{}] preScore=[{}] score=[{scores}] preemption={}",
            names(&self.pre_filter),
            names(&self.filter),
            names(&self.pre_score),
            self.preemption
        )
    }

    /// Whether `event` may help a pod that these plugins rejected.
    pub fn event_helps(&self, event: ClusterEvent, rejected_by: &HashSet<&'static str>) -> bool {
        if rejected_by.is_empty() {
            return true;
        }
        self.events
            .get(&event)
            .is_some_and(|plugins| plugins.iter().any(|p| rejected_by.contains(p)))
    }

    /// Runs every PreFilter plugin. A rejection ends the cycle for the pod; node subsets
    /// from several plugins intersect.
    pub fn run_pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> (Status, PreFilterNodes) {
        let mut nodes: PreFilterNodes = None;
        for (p, bits) in self.pre_filter.iter().zip(&self.pre_filter_skip_bits) {
            let (status, subset) = p.pre_filter(state, pod, snapshot);
            match status.code {
                super::Code::Success => {}
                super::Code::Skip => {
                    state.skip_filter.push(p.name());
                    state.skipped_filters |= bits;
                    continue;
                }
                _ => return (status.with_plugin(p.name()), None),
            }
            if let Some(subset) = subset {
                nodes = Some(match nodes {
                    None => subset,
                    Some(prev) => prev.intersection(&subset).cloned().collect(),
                });
            }
        }
        (Status::success(), nodes)
    }

    pub fn run_filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        for (i, p) in self.filter.iter().enumerate() {
            // Past 64 filters the bitmask has no bit: compare names.
            let skipped = match 1u64.checked_shl(i as u32) {
                Some(bit) => state.skipped_filters & bit != 0,
                None => state.skip_filter.contains(&p.name()),
            };
            if skipped {
                continue;
            }
            let status = p.filter(state, pod, node);
            if !status.is_success() {
                return status.with_plugin(p.name());
            }
        }
        Status::success()
    }

    /// Filter, counting the pods nominated to this node with priority at least the pod's
    /// as if they were already there (upstream `RunFilterPluginsWithNominatedPods`), so a
    /// node freed by preemption stays reserved for the preemptor.
    pub fn run_filter_with_nominated(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        nominated: &[Arc<PodInfo>],
    ) -> Status {
        let relevant: Vec<&Arc<PodInfo>> = nominated
            .iter()
            .filter(|n| n.uid != pod.uid && n.priority >= pod.priority)
            .collect();
        if relevant.is_empty() {
            return self.run_filter(state, pod, node);
        }
        let mut with_state = state.clone();
        let mut with_node = node.clone();
        for n in relevant {
            with_node.add_pod(n.clone());
            self.run_pre_filter_add_pod(&mut with_state, pod, n, &with_node);
        }
        let status = self.run_filter(&with_state, pod, &with_node);
        if !status.is_success() {
            return status;
        }
        self.run_filter(state, pod, node)
    }

    pub fn run_pre_filter_add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        added: &PodInfo,
        node: &NodeInfo,
    ) {
        for p in &self.pre_filter {
            if !state.skip_filter.contains(&p.name()) {
                p.pre_filter_add_pod(state, pod, added, node);
            }
        }
    }

    pub fn run_pre_filter_remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        removed: &PodInfo,
        node: &NodeInfo,
    ) {
        for p in &self.pre_filter {
            if !state.skip_filter.contains(&p.name()) {
                p.pre_filter_remove_pod(state, pod, removed, node);
            }
        }
    }

    /// PreScore then Score, normalisation and weights: each feasible node's total.
    pub fn run_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Result<Vec<NodeScore>, Status> {
        for p in &self.pre_score {
            let status = p.pre_score(state, pod, nodes, snapshot);
            match status.code {
                super::Code::Success => {}
                super::Code::Skip => state.skip_score.push(p.name()),
                _ => return Err(status.with_plugin(p.name())),
            }
        }
        let mut scores: Vec<NodeScore> = nodes
            .iter()
            .map(|n| NodeScore {
                name: n.name.clone(),
                score: 0,
            })
            .collect();
        let mut totals = vec![0; nodes.len()];
        for (p, weight) in &self.score {
            if state.skip_score.contains(&p.name()) {
                continue;
            }
            for (i, n) in nodes.iter().enumerate() {
                scores[i].score = p
                    .score(state, pod, n)
                    .map_err(|s| s.with_plugin(p.name()))?;
            }
            p.normalize_scores(state, pod, &mut scores);
            for (total, s) in totals.iter_mut().zip(&scores) {
                *total += s.score * weight;
            }
        }
        for (s, total) in scores.iter_mut().zip(totals) {
            s.score = total;
        }
        Ok(scores)
    }

    pub fn has_score_plugins(&self) -> bool {
        !self.score.is_empty()
    }
}

impl std::fmt::Debug for Framework {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Framework({}: {})", self.scheduler_name, self.describe())
    }
}
