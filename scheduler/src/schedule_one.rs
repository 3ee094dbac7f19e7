//! One scheduling attempt for one pod (upstream `schedulePod`): PreFilter, Filter over
//! enough nodes, Score, pick the best. No I/O: the caller assumes and binds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use rand::Rng;

use crate::framework::runtime::Framework;
use crate::framework::{Code, CycleState, NodeInfo, PodInfo, Snapshot, Status};

/// Upstream: below this many nodes every node is evaluated.
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage never goes below this.
const MIN_FEASIBLE_NODES_PERCENTAGE: i32 = 5;

pub const NO_NODES_AVAILABLE: &str = "no nodes available to schedule pods";

/// Why a pod fits nowhere: each rejected node's status, the plugins that rejected it, and
/// messages from PreFilter and PostFilter (preemption).
#[derive(Clone, Debug, Default)]
pub struct Diagnosis {
    pub node_to_status: HashMap<String, Status>,
    pub rejected_by: HashSet<&'static str>,
    pub pre_filter_msg: Option<String>,
    pub post_filter_msg: Option<String>,
}

#[derive(Clone, Debug)]
pub struct FitError {
    pub num_all_nodes: usize,
    pub diagnosis: Diagnosis,
}

impl FitError {
    /// Upstream's message: `0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had
    /// untolerated taint {k: v}. preemption: ...`.
    pub fn message(&self) -> String {
        if self.num_all_nodes == 0 {
            return NO_NODES_AVAILABLE.to_string();
        }
        let mut msg = format!("0/{} nodes are available:", self.num_all_nodes);
        if let Some(pre) = &self.diagnosis.pre_filter_msg {
            msg.push_str(&format!(" {pre}."));
        } else {
            let histogram = reason_histogram(self.diagnosis.node_to_status.values());
            if !histogram.is_empty() {
                msg.push_str(&format!(" {}.", histogram.join(", ")));
            }
        }
        if let Some(post) = &self.diagnosis.post_filter_msg {
            msg.push_str(&format!(" {post}"));
        }
        msg
    }
}

/// "N reason" strings, sorted as text (upstream `sortReasonsHistogram`).
pub fn reason_histogram<'a>(statuses: impl Iterator<Item = &'a Status>) -> Vec<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for status in statuses {
        for reason in status.reasons.iter() {
            *counts.entry(reason.as_ref()).or_default() += 1;
        }
    }
    let mut out: Vec<String> = counts
        .into_iter()
        .map(|(r, n)| format!("{n} {r}"))
        .collect();
    out.sort();
    out
}

#[derive(Debug)]
pub enum ScheduleError {
    /// No node fits: the pod is unschedulable for now.
    Fit(Box<FitError>),
    /// A plugin failed: retry after backoff.
    Internal(String),
}

#[derive(Debug)]
pub struct ScheduleResult {
    pub node: String,
    pub evaluated: usize,
    pub feasible: usize,
}

/// How many feasible nodes to find before scoring (upstream `numFeasibleNodesToFind`).
pub fn num_feasible_nodes_to_find(percentage: i32, num_all_nodes: usize) -> usize {
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND {
        return num_all_nodes;
    }
    let mut pct = percentage;
    if pct == 0 {
        pct = 50 - (num_all_nodes / 125) as i32;
        pct = pct.max(MIN_FEASIBLE_NODES_PERCENTAGE);
    }
    if pct >= 100 {
        return num_all_nodes;
    }
    (num_all_nodes * pct as usize / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Where this cycle starts looking, so successive pods spread their search over all nodes.
#[derive(Default)]
pub struct Cursor {
    pub next_start: usize,
}

pub fn schedule_pod(
    fwk: &Framework,
    state: &mut CycleState,
    pod: &PodInfo,
    snapshot: &Snapshot,
    nominated: &HashMap<String, Vec<Arc<PodInfo>>>,
    cursor: &mut Cursor,
) -> Result<ScheduleResult, ScheduleError> {
    if snapshot.num_nodes == 0 {
        return Err(ScheduleError::Fit(Box::new(FitError {
            num_all_nodes: 0,
            diagnosis: Diagnosis::default(),
        })));
    }
    let (feasible, diagnosis, rejected) =
        find_nodes_that_fit(fwk, state, pod, snapshot, nominated, cursor)?;
    if feasible.is_empty() {
        return Err(ScheduleError::Fit(Box::new(FitError {
            num_all_nodes: snapshot.num_nodes,
            diagnosis,
        })));
    }
    let evaluated = feasible.len() + rejected;
    if feasible.len() == 1 || !fwk.has_score_plugins() {
        return Ok(ScheduleResult {
            node: feasible[0].name.clone(),
            evaluated,
            feasible: feasible.len(),
        });
    }
    let scores = fwk
        .run_score(state, pod, &feasible, snapshot)
        .map_err(|s| ScheduleError::Internal(format!("{}: {}", s.plugin, s.message())))?;
    let node = select_host(&scores);
    Ok(ScheduleResult {
        node,
        evaluated,
        feasible: feasible.len(),
    })
}

/// The highest total, ties broken uniformly at random (reservoir sampling, as upstream).
fn select_host(scores: &[crate::framework::NodeScore]) -> String {
    let mut rng = rand::rng();
    let mut best = &scores[0];
    let mut ties = 1;
    for s in &scores[1..] {
        if s.score > best.score {
            best = s;
            ties = 1;
        } else if s.score == best.score {
            ties += 1;
            if rng.random_range(0..ties) == 0 {
                best = s;
            }
        }
    }
    best.name.clone()
}

/// The feasible nodes, why the others were rejected (filled in only when no node is
/// feasible: a scheduled pod's diagnosis is never read) and how many were rejected.
type Feasible = (Vec<Arc<NodeInfo>>, Diagnosis, usize);

fn find_nodes_that_fit(
    fwk: &Framework,
    state: &mut CycleState,
    pod: &PodInfo,
    snapshot: &Snapshot,
    nominated: &HashMap<String, Vec<Arc<PodInfo>>>,
    cursor: &mut Cursor,
) -> Result<Feasible, ScheduleError> {
    let mut diagnosis = Diagnosis::default();
    let (status, subset) = fwk.run_pre_filter(state, pod, snapshot);
    if !status.is_success() {
        if status.code == Code::Error {
            return Err(ScheduleError::Internal(format!(
                "{}: {}",
                status.plugin,
                status.message()
            )));
        }
        diagnosis.pre_filter_msg = Some(status.message());
        diagnosis.rejected_by.insert(status.plugin);
        for n in snapshot.node_infos() {
            diagnosis
                .node_to_status
                .insert(n.name.clone(), status.clone());
        }
        let rejected = diagnosis.node_to_status.len();
        return Ok((Vec::new(), diagnosis, rejected));
    }
    let no_nominated: Vec<Arc<PodInfo>> = Vec::new();
    let filter = |node: &NodeInfo| -> Status {
        let on_node = if nominated.is_empty() {
            &no_nominated
        } else {
            nominated.get(&node.name).unwrap_or(&no_nominated)
        };
        fwk.run_filter_with_nominated(state, pod, node, on_node)
    };

    // A node nominated by an earlier preemption is tried first, alone.
    if let Some(node) = pod
        .nominated_node_name
        .as_ref()
        .and_then(|n| snapshot.get(n))
    {
        if node.node.is_some() && filter(node).is_success() {
            return Ok((vec![node.clone()], diagnosis, 0));
        }
    }

    let candidates: Vec<&Arc<NodeInfo>> = match &subset {
        Some(names) => names
            .iter()
            .filter_map(|n| snapshot.get(n))
            .filter(|n| n.node.is_some())
            .collect(),
        None => Vec::new(),
    };
    let total = if subset.is_some() {
        candidates.len()
    } else {
        snapshot.nodes.len()
    };
    let want = num_feasible_nodes_to_find(
        fwk.percentage_of_nodes_to_score,
        if subset.is_some() {
            total
        } else {
            snapshot.num_nodes
        },
    );
    let mut feasible = Vec::with_capacity(want.min(total));
    let start = if subset.is_some() || total == 0 {
        0
    } else {
        cursor.next_start % total
    };
    let mut processed = 0;
    let mut rejected: Vec<(&Arc<NodeInfo>, Status)> = Vec::new();
    // A PreFilter subset in its order, else every node starting at the cursor.
    let order: Box<dyn Iterator<Item = &Arc<NodeInfo>>> = if subset.is_some() {
        Box::new(candidates.iter().copied())
    } else {
        Box::new((0..total).map(|i| &snapshot.nodes[(start + i) % total]))
    };
    for node in order {
        if feasible.len() >= want {
            break;
        }
        processed += 1;
        if node.node.is_none() {
            continue;
        }
        let status = filter(node);
        match status.code {
            Code::Success => feasible.push(node.clone()),
            Code::Error => {
                return Err(ScheduleError::Internal(format!(
                    "{}: {}",
                    status.plugin,
                    status.message()
                )));
            }
            _ => rejected.push((node, status)),
        }
    }
    if subset.is_none() && total > 0 {
        cursor.next_start = (start + processed) % total;
    }
    let num_rejected = rejected.len();
    if feasible.is_empty() {
        for (node, status) in rejected {
            diagnosis.rejected_by.insert(status.plugin);
            diagnosis.node_to_status.insert(node.name.clone(), status);
        }
    }
    if let Some(names) = &subset {
        // Nodes the PreFilter result excluded are unresolvable for this pod.
        if feasible.is_empty() {
            let excluded = Status::unresolvable("node(s) didn't satisfy plugin(s) [NodeAffinity]");
            for n in snapshot.node_infos() {
                if !names.contains(&n.name) {
                    diagnosis
                        .node_to_status
                        .insert(n.name.clone(), excluded.clone());
                }
            }
        }
    }
    Ok((feasible, diagnosis, num_rejected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feasible_node_count_follows_upstream() {
        assert_eq!(num_feasible_nodes_to_find(0, 50), 50);
        assert_eq!(num_feasible_nodes_to_find(0, 500), 230); // 50 - 4 = 46%
        assert_eq!(num_feasible_nodes_to_find(0, 5000), 500); // 50 - 40 = 10%
        assert_eq!(num_feasible_nodes_to_find(0, 10000), 500); // floor of 5%
        assert_eq!(num_feasible_nodes_to_find(100, 5000), 5000);
        assert_eq!(num_feasible_nodes_to_find(1, 5000), 100);
    }

    #[test]
    fn message_is_a_sorted_reason_histogram() {
        let mut d = Diagnosis::default();
        d.node_to_status
            .insert("a".into(), Status::unschedulable("Insufficient cpu"));
        d.node_to_status.insert(
            "b".into(),
            Status::unresolvable("node(s) had untolerated taint {k: v}"),
        );
        d.node_to_status.insert(
            "c".into(),
            Status::unresolvable("node(s) had untolerated taint {k: v}"),
        );
        d.post_filter_msg = Some("preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling.".into());
        let err = FitError {
            num_all_nodes: 3,
            diagnosis: d,
        };
        assert_eq!(
            err.message(),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {k: v}. \
             preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling."
        );
        assert_eq!(
            FitError {
                num_all_nodes: 0,
                diagnosis: Diagnosis::default()
            }
            .message(),
            NO_NODES_AVAILABLE
        );
    }
}
