//! DefaultPreemption, the PostFilter: when a pod fits nowhere, find a node where evicting
//! lower-priority pods would make it fit, choosing the fewest and least important victims,
//! then nominate that node for the pod (upstream `pkg/scheduler/framework/preemption`).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use crate::framework::runtime::Framework;
use crate::framework::{Code, CycleState, NodeInfo, PodInfo, Snapshot, Status};
use crate::schedule_one::{reason_histogram, Diagnosis};

pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// A node where preemption works, and the pods to evict there.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub node: String,
    pub victims: Vec<Arc<PodInfo>>,
}

#[derive(Debug)]
pub enum Outcome {
    /// Evict these and nominate the node.
    Preempt(Candidate),
    /// Preemption cannot help: the message for the FailedScheduling event.
    Failed(String),
}

/// More important = higher priority, then started earlier (upstream `MoreImportantPod`).
fn more_important(a: &PodInfo, b: &PodInfo) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| match (a.start_or_creation(), b.start_or_creation()) {
            (Some(x), Some(y)) => x.0.cmp(&y.0),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
}

/// Whether the pod may preempt at all (upstream `PodEligibleToPreemptOthers`).
fn eligible(pod: &PodInfo, snapshot: &Snapshot) -> Result<(), String> {
    if pod.never_preempts {
        return Err("not eligible due to preemptionPolicy=Never.".into());
    }
    if let Some(node) = pod
        .nominated_node_name
        .as_ref()
        .and_then(|n| snapshot.get(n))
    {
        // Victims of an earlier preemption are still terminating: wait for them.
        if node
            .pods
            .iter()
            .any(|p| p.terminating && p.priority < pod.priority)
        {
            return Err("not eligible due to a terminating pod on the nominated node.".into());
        }
    }
    Ok(())
}

pub fn preempt(
    fwk: &Framework,
    state: &CycleState,
    pod: &PodInfo,
    snapshot: &Snapshot,
    nominated: &HashMap<String, Vec<Arc<PodInfo>>>,
    diagnosis: &Diagnosis,
) -> Outcome {
    if let Err(msg) = eligible(pod, snapshot) {
        return Outcome::Failed(format!("preemption: {msg}"));
    }
    let mut statuses: Vec<Status> = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    let none = Vec::new();
    for node in snapshot.node_infos() {
        let resolvable = diagnosis
            .node_to_status
            .get(&node.name)
            .is_some_and(|s| s.code == Code::Unschedulable);
        if !resolvable {
            statuses.push(Status::unresolvable(NOT_HELPFUL));
            continue;
        }
        match select_victims(
            fwk,
            state,
            pod,
            node,
            nominated.get(&node.name).unwrap_or(&none),
        ) {
            Some(victims) if !victims.is_empty() => candidates.push(Candidate {
                node: node.name.clone(),
                victims,
            }),
            _ => statuses.push(Status::unschedulable(NO_VICTIMS)),
        }
    }
    match pick_one(candidates) {
        Some(c) => Outcome::Preempt(c),
        None => Outcome::Failed(format!(
            "preemption: 0/{} nodes are available: {}.",
            snapshot.num_nodes,
            reason_histogram(statuses.iter()).join(", ")
        )),
    }
}

/// The fewest victims on this node that make the pod fit: remove every lower-priority pod,
/// check the pod fits, then give back as many as possible, most important first
/// (upstream `SelectVictimsOnNode`). None if the pod does not fit even then.
fn select_victims(
    fwk: &Framework,
    state: &CycleState,
    pod: &PodInfo,
    node: &NodeInfo,
    nominated: &[Arc<PodInfo>],
) -> Option<Vec<Arc<PodInfo>>> {
    let mut state = state.clone();
    let mut what_if = node.clone();
    let mut potential: Vec<Arc<PodInfo>> = node
        .pods
        .iter()
        .filter(|p| p.priority < pod.priority)
        .cloned()
        .collect();
    if potential.is_empty() {
        return None;
    }
    for victim in &potential {
        what_if.remove_pod(&victim.uid);
        fwk.run_pre_filter_remove_pod(&mut state, pod, victim, &what_if);
    }
    if !fwk
        .run_filter_with_nominated(&state, pod, &what_if, nominated)
        .is_success()
    {
        return None;
    }
    potential.sort_by(|a, b| more_important(a, b));
    let mut victims = Vec::new();
    for p in potential {
        what_if.add_pod(p.clone());
        fwk.run_pre_filter_add_pod(&mut state, pod, &p, &what_if);
        if !fwk
            .run_filter_with_nominated(&state, pod, &what_if, nominated)
            .is_success()
        {
            what_if.remove_pod(&p.uid);
            fwk.run_pre_filter_remove_pod(&mut state, pod, &p, &what_if);
            victims.push(p);
        }
    }
    Some(victims)
}

/// Upstream `pickOneNodeForPreemption` without PodDisruptionBudgets: lowest highest-victim
/// priority, then lowest sum of priorities, then fewest victims, then the node whose most
/// important victim started last, then the first.
fn pick_one(candidates: Vec<Candidate>) -> Option<Candidate> {
    let key = |c: &Candidate| {
        let highest = c
            .victims
            .iter()
            .map(|v| v.priority)
            .max()
            .unwrap_or(i32::MIN);
        // Shifted so negative priorities still add up in order, as upstream.
        let sum: i64 = c
            .victims
            .iter()
            .map(|v| v.priority as i64 + i32::MAX as i64 + 1)
            .sum();
        let earliest_of_highest = c
            .victims
            .iter()
            .filter(|v| v.priority == highest)
            .filter_map(|v| v.start_or_creation().map(|t| t.0))
            .min();
        (highest, sum, c.victims.len(), earliest_of_highest)
    };
    candidates.into_iter().min_by(|a, b| {
        let (ha, sa, na, ta) = key(a);
        let (hb, sb, nb, tb) = key(b);
        ha.cmp(&hb)
            .then(sa.cmp(&sb))
            .then(na.cmp(&nb))
            // Later start of the most important victim is better.
            .then(tb.cmp(&ta))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::runtime::EnabledPlugin;
    use crate::framework::NodeData;
    use crate::plugins::{self, testing::named_pod};
    use serde_json::json;

    fn framework() -> Framework {
        let plugins = [
            plugins::node_resources_fit::NAME,
            plugins::taint_toleration::NAME,
        ]
        .iter()
        .flat_map(|name| {
            let plugin = plugins::new_plugin(name, None).unwrap();
            plugin
                .points()
                .iter()
                .map(move |point| EnabledPlugin {
                    point: *point,
                    plugin: plugin.clone(),
                    weight: 1,
                })
                .collect::<Vec<_>>()
        })
        .collect();
        Framework::new("default-scheduler".into(), plugins, true, 0)
    }

    fn pod(name: &str, priority: i32, cpu: &str) -> Arc<PodInfo> {
        let mut p = named_pod(
            name,
            json!({}),
            json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}),
        );
        p.shape_mut().priority = priority;
        Arc::new(p)
    }

    fn snapshot(nodes: Vec<(&str, Vec<Arc<PodInfo>>)>) -> Snapshot {
        let mut infos = Vec::new();
        let mut index = HashMap::new();
        for (i, (name, pods)) in nodes.into_iter().enumerate() {
            let mut info = NodeInfo::new(name.into());
            let mut data = NodeData {
                name: name.into(),
                ..NodeData::default()
            };
            data.allocatable.milli_cpu = 4000;
            data.allocatable.allowed_pod_number = 110;
            info.node = Some(Arc::new(data));
            for p in pods {
                info.add_pod(p);
            }
            index.insert(name.to_string(), i);
            infos.push(Arc::new(info));
        }
        Snapshot {
            num_nodes: infos.len(),
            nodes: Arc::new(infos),
            index: Arc::new(index),
            ..Snapshot::default()
        }
    }

    fn diagnose(fwk: &Framework, pod: &PodInfo, snap: &Snapshot) -> Diagnosis {
        let mut d = Diagnosis::default();
        for n in snap.node_infos() {
            let s = fwk.run_filter(&CycleState::default(), pod, n);
            if !s.is_success() {
                d.node_to_status.insert(n.name.clone(), s);
            }
        }
        d
    }

    #[test]
    fn evicts_the_fewest_lowest_priority_pods() {
        let fwk = framework();
        let snap = snapshot(vec![
            // a: evicting one 100-priority pod (2 cpu) is enough.
            ("a", vec![pod("a1", 100, "2"), pod("a2", 500, "2")]),
            // b: would need both 10-priority pods: more victims but lower priority wins.
            ("b", vec![pod("b1", 10, "2"), pod("b2", 10, "2")]),
            // c: only higher-priority pods.
            ("c", vec![pod("c1", 2000, "4")]),
        ]);
        let preemptor = pod("big", 1000, "2");
        let d = diagnose(&fwk, &preemptor, &snap);
        match preempt(
            &fwk,
            &CycleState::default(),
            &preemptor,
            &snap,
            &HashMap::new(),
            &d,
        ) {
            Outcome::Preempt(c) => {
                assert_eq!(c.node, "b");
                assert_eq!(c.victims.len(), 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fewer_victims_break_a_priority_tie() {
        let fwk = framework();
        let snap = snapshot(vec![
            (
                "a",
                vec![pod("a1", 10, "1"), pod("a2", 10, "1"), pod("a3", 10, "2")],
            ),
            ("b", vec![pod("b1", 10, "4")]),
        ]);
        let preemptor = pod("big", 1000, "3");
        let d = diagnose(&fwk, &preemptor, &snap);
        let Outcome::Preempt(c) = preempt(
            &fwk,
            &CycleState::default(),
            &preemptor,
            &snap,
            &HashMap::new(),
            &d,
        ) else {
            panic!("expected a candidate");
        };
        // a needs a3 plus one more (sum 20); b needs b1 alone (sum 10).
        assert_eq!(c.node, "b");
        assert_eq!(c.victims[0].name, "b1");
    }

    #[test]
    fn reports_why_preemption_cannot_help() {
        let fwk = framework();
        let snap = snapshot(vec![("a", vec![pod("a1", 2000, "4")])]);
        let preemptor = pod("big", 1000, "2");
        let d = diagnose(&fwk, &preemptor, &snap);
        let Outcome::Failed(msg) = preempt(
            &fwk,
            &CycleState::default(),
            &preemptor,
            &snap,
            &HashMap::new(),
            &d,
        ) else {
            panic!("no victims expected");
        };
        assert_eq!(
            msg,
            format!("preemption: 0/1 nodes are available: 1 {NO_VICTIMS}.")
        );
        let mut never = (*preemptor).clone();
        never.shape_mut().never_preempts = true;
        let Outcome::Failed(msg) = preempt(
            &fwk,
            &CycleState::default(),
            &never,
            &snap,
            &HashMap::new(),
            &d,
        ) else {
            panic!("not eligible");
        };
        assert_eq!(
            msg,
            "preemption: not eligible due to preemptionPolicy=Never."
        );
    }
}
