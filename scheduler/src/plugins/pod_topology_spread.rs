//! PodTopologySpread: `topologySpreadConstraints` keep matching pods evenly spread over
//! topology domains. `DoNotSchedule` constraints filter (the skew a node would create may
//! not exceed `maxSkew`); `ScheduleAnyway` constraints score (domains with fewer matching
//! pods score higher).
//!
//! PreFilter and PreScore count the matching pods per domain once per cycle, so Filter and
//! Score are a label lookup and a hash lookup per constraint. Upstream walks every node and
//! its pods for that count each cycle; here the count is kept per pod shape and brought up
//! to date from the nodes whose generation changed since the last cycle (a pod bound, a
//! node relabelled), which gives the same numbers for a fraction of the work.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use api_types::selector::LabelSelector;
use api_types::validation::field::{self, FieldError, Path};
use api_types::validation::names::is_qualified_name;
use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use serde::Deserialize;

use parking_lot::Mutex;

use crate::framework::types::PodShape;
use crate::framework::{
    ClusterEvent, CycleState, NodeData, NodeInfo, NodeScore, Plugin, PodInfo, Point,
    PreFilterNodes, Snapshot, Status, MAX_NODE_SCORE,
};
use crate::plugins::node_affinity::pod_matches_node;
use crate::plugins::taint_toleration::tolerates;

pub const NAME: &str = "PodTopologySpread";
/// Upstream `ErrReasonConstraintsNotMatch`.
pub const REASON_CONSTRAINTS_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints";
/// Upstream `ErrReasonNodeLabelNotMatch`.
pub const REASON_NODE_LABEL_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

const PRE_FILTER_KEY: &str = "PreFilterPodTopologySpread";
const PRE_SCORE_KEY: &str = "PreScorePodTopologySpread";

/// `kubernetes.io/hostname`: every node is its own domain, so Score counts the node's own
/// pods instead of PreScore aggregating per value (as upstream).
const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
const DO_NOT_SCHEDULE: &str = "DoNotSchedule";
const SCHEDULE_ANYWAY: &str = "ScheduleAnyway";
const SYSTEM_DEFAULTING: &str = "System";
/// Kept counts, for this many (pod shape, whenUnsatisfiable) pairs, least recently used
/// dropped first.
const MAX_KEPT_COUNTS: usize = 8;
const LIST_DEFAULTING: &str = "List";

/// `PodTopologySpreadArgs` of a KubeSchedulerConfiguration.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Args {
    #[serde(default)]
    default_constraints: Vec<TopologySpreadConstraint>,
    /// Upstream v1 defaults an unset type to System.
    defaulting_type: Option<String>,
}

pub struct PodTopologySpread {
    /// Cluster-level constraints for pods that set none (`defaultingType: List`).
    default_constraints: Vec<TopologySpreadConstraint>,
    /// Matching pods per domain kept across cycles, most recently used last.
    kept: Mutex<Vec<KeptCounts>>,
}

impl PodTopologySpread {
    pub fn new(args: Option<&serde_json::Value>) -> Result<PodTopologySpread, String> {
        let args: Args = match args {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| format!("PodTopologySpreadArgs: {e}"))?,
            None => Args::default(),
        };
        let defaulting = args.defaulting_type.as_deref().unwrap_or(SYSTEM_DEFAULTING);
        validate_args(defaulting, &args.default_constraints)?;
        // System defaulting means upstream's built-in constraints (hostname maxSkew 3, zone
        // maxSkew 5, ScheduleAnyway) with a selector built from the Services, ReplicaSets,
        // ReplicationControllers and StatefulSets that select the pod. This scheduler does
        // not watch those objects, so System defaulting adds no constraints here.
        let default_constraints = match defaulting {
            LIST_DEFAULTING => args.default_constraints,
            _ => Vec::new(),
        };
        Ok(PodTopologySpread {
            default_constraints,
            kept: Mutex::new(Vec::new()),
        })
    }

    /// The pod's constraints with this `whenUnsatisfiable` and their matching pods per
    /// domain over the snapshot's eligible nodes, from the kept counts of the pod's shape
    /// brought up to date (or counted afresh). None when the pod has no such constraints.
    fn domain_counts(
        &self,
        pod: &PodInfo,
        action: &'static str,
        snapshot: &Snapshot,
    ) -> Result<Option<ConstraintCounts>, String> {
        let mut kept = self.kept.lock();
        let position = kept.iter().position(|k| k.is_for(pod, action));
        let mut entry = match position {
            Some(i) => kept.remove(i),
            None => {
                let constraints = self.constraints(pod, action)?;
                if constraints.is_empty() {
                    return Ok(None);
                }
                if kept.len() >= MAX_KEPT_COUNTS {
                    kept.remove(0);
                }
                KeptCounts::new(pod, action, constraints)
            }
        };
        entry.refresh(pod, snapshot);
        let out = (entry.constraints.clone(), entry.domains.clone());
        kept.push(entry);
        Ok(Some(out))
    }

    /// The pod's constraints with this `whenUnsatisfiable`, parsed; the List defaults for a
    /// pod that sets none.
    fn constraints(&self, pod: &PodInfo, action: &str) -> Result<Vec<Constraint>, String> {
        if !pod.topology_spread_constraints.is_empty() {
            return pod
                .topology_spread_constraints
                .iter()
                .filter(|c| c.when_unsatisfiable == action)
                .map(|c| Constraint::parse(c, &pod.labels))
                .collect();
        }
        // Upstream builds the default constraints' selector from the Services and workload
        // controllers selecting the pod; lacking those, we count the pods of the same
        // controller (what a ReplicaSet or StatefulSet selector selects in practice). A pod
        // without a controller gets no default constraints, as upstream with an empty
        // selector.
        let Some(owner) = &pod.owner_uid else {
            return Ok(Vec::new());
        };
        Ok(self
            .default_constraints
            .iter()
            .filter(|c| c.when_unsatisfiable == action)
            .map(|c| Constraint {
                max_skew: i64::from(c.max_skew),
                topology_key: c.topology_key.clone(),
                selector: SpreadSelector::Owner(owner.clone()),
                min_domains: 1,
                honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                honor_node_taints: c.node_taints_policy.as_deref() == Some("Honor"),
            })
            .collect())
    }
}

/// Upstream `ValidatePodTopologySpreadArgs`, with its messages.
fn validate_args(defaulting: &str, constraints: &[TopologySpreadConstraint]) -> Result<(), String> {
    let mut errs: Vec<FieldError> = Vec::new();
    let type_path = Path::new("defaultingType");
    if defaulting != SYSTEM_DEFAULTING && defaulting != LIST_DEFAULTING {
        errs.push(field::not_supported(
            &type_path,
            defaulting,
            &[SYSTEM_DEFAULTING, LIST_DEFAULTING],
        ));
    } else if defaulting == SYSTEM_DEFAULTING && !constraints.is_empty() {
        errs.push(field::invalid(
            &type_path,
            defaulting,
            "when .defaultConstraints are not empty",
        ));
    }
    let list = Path::new("defaultConstraints");
    for (i, c) in constraints.iter().enumerate() {
        let p = list.index(i);
        if c.max_skew <= 0 {
            errs.push(field::invalid(
                &p.child("maxSkew"),
                c.max_skew,
                "not in valid range (0, inf)",
            ));
        }
        if c.topology_key.is_empty() {
            errs.push(field::required(&p.child("topologyKey"), "can not be empty"));
        } else {
            for msg in is_qualified_name(&c.topology_key) {
                errs.push(field::invalid(
                    &p.child("topologyKey"),
                    c.topology_key.as_str(),
                    &msg,
                ));
            }
        }
        let when = c.when_unsatisfiable.as_str();
        if when.is_empty() {
            errs.push(field::required(
                &p.child("whenUnsatisfiable"),
                "can not be empty",
            ));
        } else if when != DO_NOT_SCHEDULE && when != SCHEDULE_ANYWAY {
            errs.push(field::not_supported(
                &p.child("whenUnsatisfiable"),
                when,
                &[DO_NOT_SCHEDULE, SCHEDULE_ANYWAY],
            ));
        }
        if c.label_selector.is_some() {
            errs.push(field::forbidden(
                &p.child("labelSelector"),
                "constraint must not define a selector, as they deduced for each pod",
            ));
        }
        let repeated = constraints[..i].iter().any(|o| {
            o.topology_key == c.topology_key && o.when_unsatisfiable == c.when_unsatisfiable
        });
        if repeated {
            errs.push(field::duplicate(
                &p,
                format!("{{{}, {}}}", c.topology_key, c.when_unsatisfiable),
            ));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(field::aggregate_message(&errs))
    }
}

/// Which pods a constraint counts.
#[derive(Clone, Debug)]
enum SpreadSelector {
    /// The constraint's labelSelector, with the incoming pod's values of `matchLabelKeys`
    /// as extra equality requirements.
    Labels {
        selector: LabelSelector,
        match_labels: Vec<(String, String)>,
    },
    /// Default constraints: the pods of this controller.
    Owner(String),
}

impl SpreadSelector {
    fn matches(&self, pod: &PodInfo) -> bool {
        match self {
            SpreadSelector::Labels {
                selector,
                match_labels,
            } => {
                // A missing labelSelector selects nothing, but merging matchLabelKeys into it
                // yields a selector of those labels alone (upstream's
                // mergeLabelSetWithSelector over labels.Nothing()).
                match_labels
                    .iter()
                    .all(|(k, v)| pod.labels.get(k) == Some(v))
                    && (selector.matches(&pod.labels)
                        || (selector.matches_nothing() && !match_labels.is_empty()))
            }
            SpreadSelector::Owner(uid) => pod.owner_uid.as_deref() == Some(uid.as_str()),
        }
    }
}

/// A constraint with its selector parsed and its defaults applied.
#[derive(Clone, Debug)]
struct Constraint {
    max_skew: i64,
    topology_key: String,
    selector: SpreadSelector,
    /// Fewer eligible domains than this make the global minimum 0.
    min_domains: i64,
    /// nodeAffinityPolicy (default Honor): only nodes matching the pod's nodeSelector and
    /// required node affinity count as domains.
    honor_node_affinity: bool,
    /// nodeTaintsPolicy (default Ignore): with Honor, nodes with NoSchedule/NoExecute
    /// taints the pod does not tolerate do not count.
    honor_node_taints: bool,
}

impl Constraint {
    fn parse(
        c: &TopologySpreadConstraint,
        pod_labels: &BTreeMap<String, String>,
    ) -> Result<Constraint, String> {
        let selector = LabelSelector::from_meta_opt(c.label_selector.as_ref()).map_err(|e| {
            format!(
                "{NAME}: topologySpreadConstraints[{}].labelSelector: {e}",
                c.topology_key
            )
        })?;
        let match_labels = c
            .match_label_keys
            .iter()
            .flatten()
            .filter_map(|k| pod_labels.get(k).map(|v| (k.clone(), v.clone())))
            .collect();
        Ok(Constraint {
            max_skew: i64::from(c.max_skew),
            topology_key: c.topology_key.clone(),
            selector: SpreadSelector::Labels {
                selector,
                match_labels,
            },
            min_domains: i64::from(c.min_domains.unwrap_or(1)),
            honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_node_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        })
    }
}

/// Whether a node counts as a domain for each policy: computed once per node and shared by
/// the constraints.
struct Inclusion {
    affinity: bool,
    taints: bool,
}

impl Inclusion {
    fn of(constraints: &[Constraint], pod: &PodInfo, node: &NodeData) -> Inclusion {
        let affinity = !constraints.iter().any(|c| c.honor_node_affinity)
            || pod_matches_node(pod, &node.name, &node.labels);
        let taints = !constraints.iter().any(|c| c.honor_node_taints)
            || !node.taints.iter().any(|taint| {
                (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
                    && !pod.tolerations.iter().any(|t| tolerates(t, taint))
            });
        Inclusion { affinity, taints }
    }

    fn includes(&self, c: &Constraint) -> bool {
        (!c.honor_node_affinity || self.affinity) && (!c.honor_node_taints || self.taints)
    }
}

fn has_all_keys(labels: &BTreeMap<String, String>, constraints: &[Constraint]) -> bool {
    constraints
        .iter()
        .all(|c| labels.contains_key(&c.topology_key))
}

/// Pods in `namespace`, not terminating (upstream #87621), that the selector selects.
fn count_matching(pods: &[Arc<PodInfo>], selector: &SpreadSelector, namespace: &str) -> i64 {
    pods.iter()
        .filter(|p| !p.terminating && p.namespace == namespace && selector.matches(p))
        .count() as i64
}

/// A pod's constraints of one kind, with the matching pods per domain of each.
type ConstraintCounts = (Arc<[Constraint]>, Arc<Vec<Domains>>);

/// One constraint's topology domains over the eligible nodes (those with every
/// constraint's key that its node affinity and taint policies include): how many such nodes
/// each domain has (none: the domain does not exist) and their matching pods.
#[derive(Clone, Debug, Default)]
struct Domains {
    ids: HashMap<String, usize>,
    nodes: Vec<i64>,
    matched: Vec<i64>,
    /// Domains with at least one eligible node.
    present: usize,
}

impl Domains {
    fn id(&mut self, value: &str) -> usize {
        if let Some(id) = self.ids.get(value) {
            return *id;
        }
        let id = self.nodes.len();
        self.ids.insert(value.to_string(), id);
        self.nodes.push(0);
        self.matched.push(0);
        id
    }

    /// Matching pods in the domain of this value, if the domain exists.
    fn get(&self, value: &str) -> Option<i64> {
        let id = *self.ids.get(value)?;
        (self.nodes[id] > 0).then_some(self.matched[id])
    }

    /// The number of domains.
    fn len(&self) -> usize {
        self.present
    }

    /// Adds (sign 1) or takes away (sign -1) an eligible node with `matched` pods.
    fn add_node(&mut self, id: usize, matched: i64, sign: i64) {
        let before = self.nodes[id];
        self.nodes[id] += sign;
        match (before, self.nodes[id]) {
            (0, 1) => self.present += 1,
            (1, 0) => self.present -= 1,
            _ => {}
        }
        self.matched[id] += sign * matched;
    }

    /// Adds `delta` matching pods to the domain of this value, creating the domain if
    /// needed (the what-if updates of preemption and nominated pods); the new count.
    fn add_pods(&mut self, value: &str, delta: i64) -> i64 {
        let id = self.id(value);
        if self.nodes[id] == 0 {
            self.nodes[id] = 1;
            self.present += 1;
        }
        self.matched[id] += delta;
        self.matched[id]
    }

    /// Every existing domain's value and matching pods.
    fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        self.ids
            .iter()
            .filter(|(_, id)| self.nodes[**id] > 0)
            .map(|(value, id)| (value.as_str(), self.matched[*id]))
    }
}

/// The matching pods per domain of one pod shape's constraints of one kind, as of the
/// node generations it last saw. Same shape, namespace and controller mean the same
/// constraints, selectors and node inclusion, so the counts carry over between the pods of
/// one template; only nodes whose generation moved are counted again.
struct KeptCounts {
    shape: Arc<PodShape>,
    namespace: String,
    owner: Option<String>,
    action: &'static str,
    constraints: Arc<[Constraint]>,
    /// Per snapshot index: the generation of the NodeInfo last counted there.
    generations: Vec<u64>,
    /// Per snapshot index and constraint: the domain and matching pods the node added.
    added: Vec<Option<(usize, i64)>>,
    domains: Arc<Vec<Domains>>,
}

impl KeptCounts {
    fn new(pod: &PodInfo, action: &'static str, constraints: Vec<Constraint>) -> KeptCounts {
        let domains = vec![Domains::default(); constraints.len()];
        KeptCounts {
            shape: pod.shape.clone(),
            namespace: pod.namespace.clone(),
            owner: pod.owner_uid.clone(),
            action,
            constraints: constraints.into(),
            generations: Vec::new(),
            added: Vec::new(),
            domains: Arc::new(domains),
        }
    }

    fn is_for(&self, pod: &PodInfo, action: &str) -> bool {
        Arc::ptr_eq(&self.shape, &pod.shape)
            && self.action == action
            && self.namespace == pod.namespace
            && self.owner == pod.owner_uid
    }

    /// Counts again the nodes that changed since the last call (all of them the first time).
    fn refresh(&mut self, pod: &PodInfo, snapshot: &Snapshot) {
        let k = self.constraints.len();
        let n = snapshot.nodes.len();
        let domains = Arc::make_mut(&mut self.domains);
        // Nodes gone from the end of the snapshot take their counts with them.
        if self.generations.len() > n {
            for (slot, added) in self.added.drain(n * k..).enumerate() {
                if let Some((id, matched)) = added {
                    domains[slot % k].add_node(id, matched, -1);
                }
            }
            self.generations.truncate(n);
        }
        self.generations.resize(n, 0);
        self.added.resize(n * k, None);
        for (i, info) in snapshot.nodes.iter().enumerate() {
            if info.generation != 0 && self.generations[i] == info.generation {
                continue;
            }
            self.generations[i] = info.generation;
            let slots = &mut self.added[i * k..(i + 1) * k];
            for (j, slot) in slots.iter_mut().enumerate() {
                if let Some((id, matched)) = slot.take() {
                    domains[j].add_node(id, matched, -1);
                }
            }
            let Some(data) = info.node.as_deref() else {
                continue;
            };
            if !has_all_keys(&data.labels, &self.constraints) {
                continue;
            }
            let inclusion = Inclusion::of(&self.constraints, pod, data);
            for (j, c) in self.constraints.iter().enumerate() {
                if inclusion.includes(c) {
                    let matched = count_matching(&info.pods, &c.selector, &pod.namespace);
                    let id = domains[j].id(&data.labels[&c.topology_key]);
                    domains[j].add_node(id, matched, 1);
                    slots[j] = Some((id, matched));
                }
            }
        }
    }
}

/// The two domains with the fewest matching pods (upstream's `criticalPaths`): the first
/// always holds the global minimum; the second is only a bound. Two suffice because
/// preemption simulates one node at a time on its own copy of the state.
#[derive(Clone, Debug)]
struct CriticalPaths([(Option<String>, i64); 2]);

impl CriticalPaths {
    fn new() -> CriticalPaths {
        CriticalPaths([(None, i64::from(i32::MAX)), (None, i64::from(i32::MAX))])
    }

    fn update(&mut self, value: &str, num: i64) {
        let paths = &mut self.0;
        match paths.iter().position(|(v, _)| v.as_deref() == Some(value)) {
            Some(i) => {
                paths[i].1 = num;
                if paths[0].1 > paths[1].1 {
                    paths.swap(0, 1);
                }
            }
            None if num < paths[0].1 => {
                paths[1] = std::mem::replace(&mut paths[0], (Some(value.to_string()), num));
            }
            None if num < paths[1].1 => paths[1] = (Some(value.to_string()), num),
            None => {}
        }
    }

    fn min(&self) -> i64 {
        self.0[0].1
    }
}

/// What Filter reads: per hard constraint, the matching pods per domain.
#[derive(Clone)]
struct PreFilterState {
    constraints: Arc<[Constraint]>,
    /// 1 where the incoming pod matches the constraint's own selector (it would add itself
    /// to the domain).
    self_match: Arc<[i64]>,
    /// Per constraint: the matching pods per domain, over the eligible nodes. Shared with
    /// the kept counts; a what-if update copies it.
    domains: Arc<Vec<Domains>>,
    paths: Vec<CriticalPaths>,
}

impl PreFilterState {
    /// The global minimum for the skew, 0 while there are fewer domains than minDomains.
    fn min_match(&self, i: usize) -> i64 {
        if (self.domains[i].len() as i64) < self.constraints[i].min_domains {
            0
        } else {
            self.paths[i].min()
        }
    }

    fn update_with_pod(&mut self, pod: &PodInfo, other: &PodInfo, node: &NodeInfo, delta: i64) {
        let Some(data) = node.node.as_deref() else {
            return;
        };
        if other.namespace != pod.namespace
            || other.terminating
            || !has_all_keys(&data.labels, &self.constraints)
        {
            return;
        }
        let inclusion = Inclusion::of(&self.constraints, pod, data);
        for (i, c) in self.constraints.iter().enumerate() {
            if !inclusion.includes(c) || !c.selector.matches(other) {
                continue;
            }
            let value = &data.labels[&c.topology_key];
            let n = Arc::make_mut(&mut self.domains)[i].add_pods(value, delta);
            self.paths[i].update(value, n);
        }
    }
}

/// What Score reads: per soft constraint, the matching pods per domain of the feasible nodes,
/// and each constraint's weight.
struct PreScoreState {
    constraints: Arc<[Constraint]>,
    /// Feasible nodes lacking some constraint's topology key: they score 0.
    ignored: HashSet<String>,
    counts: Vec<HashMap<String, i64>>,
    weights: Vec<f64>,
}

/// Upstream `topologyNormalizingWeight`: log(size + 2), so counts in topologies with many
/// domains weigh more than in ones with few.
fn normalizing_weight(size: usize) -> f64 {
    ((size + 2) as f64).ln()
}

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }

    fn points(&self) -> &'static [Point] {
        &[
            Point::PreFilter,
            Point::Filter,
            Point::PreScore,
            Point::Score,
        ]
    }

    fn events(&self) -> &'static [ClusterEvent] {
        &[
            ClusterEvent::NodeAdd,
            ClusterEvent::NodeLabelChange,
            ClusterEvent::NodeTaintChange,
            ClusterEvent::AssignedPodAdd,
            ClusterEvent::AssignedPodUpdate,
            ClusterEvent::AssignedPodDelete,
        ]
    }

    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> (Status, PreFilterNodes) {
        let (constraints, domains) = match self.domain_counts(pod, DO_NOT_SCHEDULE, snapshot) {
            Ok(Some(counts)) => counts,
            Ok(None) => return (Status::skip(), None),
            Err(e) => return (Status::error(e), None),
        };
        let paths = domains
            .iter()
            .map(|domains| {
                let mut p = CriticalPaths::new();
                for (value, n) in domains.iter() {
                    p.update(value, n);
                }
                p
            })
            .collect();
        let self_match = constraints
            .iter()
            .map(|c| i64::from(c.selector.matches(pod)))
            .collect();
        state.write(
            PRE_FILTER_KEY,
            PreFilterState {
                constraints,
                self_match,
                domains,
                paths,
            },
        );
        (Status::success(), None)
    }

    fn pre_filter_add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        added: &PodInfo,
        node: &NodeInfo,
    ) {
        if let Some(s) = state.read_mut::<PreFilterState>(PRE_FILTER_KEY) {
            s.update_with_pod(pod, added, node, 1);
        }
    }

    fn pre_filter_remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        removed: &PodInfo,
        node: &NodeInfo,
    ) {
        if let Some(s) = state.read_mut::<PreFilterState>(PRE_FILTER_KEY) {
            s.update_with_pod(pod, removed, node, -1);
        }
    }

    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<PreFilterState>(PRE_FILTER_KEY) else {
            return Status::error(format!("{NAME}: no PreFilter state"));
        };
        let labels = &node.node().labels;
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(value) = labels.get(&c.topology_key) else {
                return Status::unresolvable(REASON_NODE_LABEL_NOT_MATCH);
            };
            // existing matching pods + the pod itself if it matches - global minimum
            let matched = s.domains[i].get(value).unwrap_or(0);
            if matched + s.self_match[i] - s.min_match(i) > c.max_skew {
                return Status::unschedulable(REASON_CONSTRAINTS_NOT_MATCH);
            }
        }
        Status::success()
    }

    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Status {
        if snapshot.num_nodes == 0 {
            return Status::skip();
        }
        let constraints = match self.constraints(pod, SCHEDULE_ANYWAY) {
            Ok(c) => c,
            Err(e) => return Status::error(e),
        };
        if constraints.is_empty() {
            return Status::skip();
        }
        // The domains of the feasible nodes, with the matching pods of every eligible node
        // of the cluster in them (kept across cycles: see `domain_counts`). Hostname
        // domains are counted per node in Score.
        let (constraints, kept): (Arc<[Constraint]>, _) =
            if constraints.iter().any(|c| c.topology_key != LABEL_HOSTNAME) {
                match self.domain_counts(pod, SCHEDULE_ANYWAY, snapshot) {
                    Ok(Some((constraints, domains))) => (constraints, Some(domains)),
                    Ok(None) => return Status::skip(),
                    Err(e) => return Status::error(e),
                }
            } else {
                (constraints.into(), None)
            };
        let mut ignored = HashSet::new();
        let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::new(); constraints.len()];
        for info in nodes {
            let labels = &info.node().labels;
            if !has_all_keys(labels, &constraints) {
                ignored.insert(info.name.clone());
                continue;
            }
            let Some(kept) = &kept else {
                continue;
            };
            for (i, c) in constraints.iter().enumerate() {
                let value = &labels[&c.topology_key];
                if c.topology_key != LABEL_HOSTNAME && !counts[i].contains_key(value.as_str()) {
                    counts[i].insert(value.clone(), kept[i].get(value).unwrap_or(0));
                }
            }
        }
        let weights = constraints
            .iter()
            .zip(&counts)
            .map(|(c, domains)| {
                let size = if c.topology_key == LABEL_HOSTNAME {
                    nodes.len() - ignored.len()
                } else {
                    domains.len()
                };
                normalizing_weight(size)
            })
            .collect();
        state.write(
            PRE_SCORE_KEY,
            Arc::new(PreScoreState {
                constraints,
                ignored,
                counts,
                weights,
            }),
        );
        Status::success()
    }

    /// The matching pods in the node's domains, weighted: normalisation turns fewer into
    /// more.
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<Arc<PreScoreState>>(PRE_SCORE_KEY) else {
            return Err(Status::error(format!("{NAME}: no PreScore state")));
        };
        if !s.ignored.is_empty() && s.ignored.contains(&node.name) {
            return Ok(0);
        }
        let labels = &node.node().labels;
        let mut score = 0.0;
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(value) = labels.get(&c.topology_key) else {
                continue;
            };
            let count = if c.topology_key == LABEL_HOSTNAME {
                count_matching(&node.pods, &c.selector, &pod.namespace)
            } else {
                s.counts[i].get(value.as_str()).copied().unwrap_or(0)
            };
            // maxSkew - 1 waters down small differences, more so for a larger maxSkew.
            score += count as f64 * s.weights[i] + (c.max_skew - 1) as f64;
        }
        Ok(score.round() as i64)
    }

    /// Upstream: MAX * (max + min - score) / max, so the fewest matching pods score highest;
    /// ignored nodes score 0.
    fn normalize_scores(&self, state: &CycleState, _pod: &PodInfo, scores: &mut [NodeScore]) {
        let Some(s) = state.read::<Arc<PreScoreState>>(PRE_SCORE_KEY) else {
            return;
        };
        let is_ignored = |name: &String| !s.ignored.is_empty() && s.ignored.contains(name);
        let counted = || {
            scores
                .iter()
                .filter(|n| !is_ignored(&n.name))
                .map(|n| n.score)
        };
        let min = counted().min().unwrap_or(0);
        let max = counted().max().unwrap_or(0).max(0);
        for n in scores.iter_mut() {
            n.score = if is_ignored(&n.name) {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - n.score) / max
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::named_pod;
    use serde_json::{json, Value};

    fn node(name: &str, labels: Value, pods: Vec<PodInfo>) -> NodeInfo {
        let mut info = crate::plugins::testing::node(
            json!({"metadata": {"name": name, "labels": labels}}),
            &[],
        );
        for mut p in pods {
            p.node_name = Some(name.to_string());
            info.add_pod(Arc::new(p));
        }
        info
    }

    fn zone_node(name: &str, zone: &str, pods: Vec<PodInfo>) -> NodeInfo {
        node(name, json!({"zone": zone, LABEL_HOSTNAME: name}), pods)
    }

    fn app(name: &str) -> PodInfo {
        named_pod(
            name,
            json!({"app": "web"}),
            json!({"containers": [{"name": "c"}]}),
        )
    }

    fn apps(prefix: &str, n: usize) -> Vec<PodInfo> {
        (0..n).map(|i| app(&format!("{prefix}-{i}"))).collect()
    }

    fn snapshot(nodes: Vec<NodeInfo>) -> Snapshot {
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        Snapshot {
            num_nodes: nodes.iter().filter(|n| n.node.is_some()).count(),
            pods_with_affinity: nodes.iter().map(|n| n.pods_with_affinity).sum(),
            pods_with_required_anti_affinity: nodes
                .iter()
                .map(|n| n.pods_with_required_anti_affinity)
                .sum(),
            nodes: Arc::new(nodes.into_iter().map(Arc::new).collect()),
            index: Arc::new(index),
            ..Snapshot::default()
        }
    }

    fn spread_pod(constraints: Value) -> PodInfo {
        named_pod(
            "incoming",
            json!({"app": "web", "version": "v2"}),
            json!({"containers": [{"name": "c"}], "topologySpreadConstraints": constraints}),
        )
    }

    fn hard(key: &str, max_skew: i32) -> Value {
        json!([{"maxSkew": max_skew, "topologyKey": key, "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": "web"}}}])
    }

    fn soft(key: &str, max_skew: i32) -> Value {
        json!([{"maxSkew": max_skew, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app": "web"}}}])
    }

    fn plugin() -> PodTopologySpread {
        PodTopologySpread::new(None).unwrap()
    }

    /// PreFilter, then Filter on every node: node name → status.
    fn filter_all(
        pl: &PodTopologySpread,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> (CycleState, Vec<(String, Status)>) {
        let mut state = CycleState::default();
        let (status, _) = pl.pre_filter(&mut state, pod, snap);
        assert!(status.is_success(), "{status:?}");
        let results = snap
            .node_infos()
            .map(|n| (n.name.clone(), pl.filter(&state, pod, n)))
            .collect();
        (state, results)
    }

    fn scores(pl: &PodTopologySpread, pod: &PodInfo, snap: &Snapshot) -> Vec<NodeScore> {
        let mut state = CycleState::default();
        let nodes: Vec<Arc<NodeInfo>> = snap.node_infos().cloned().collect();
        assert!(pl.pre_score(&mut state, pod, &nodes, snap).is_success());
        let mut scores: Vec<NodeScore> = nodes
            .iter()
            .map(|n| NodeScore {
                name: n.name.clone(),
                score: pl.score(&state, pod, n).unwrap(),
            })
            .collect();
        pl.normalize_scores(&state, pod, &mut scores);
        scores
    }

    #[test]
    fn skew_above_max_skew_rejects_and_within_accepts() {
        let snap = snapshot(vec![
            zone_node("a1", "a", apps("a", 2)),
            zone_node("b1", "b", apps("b", 1)),
            zone_node("c1", "c", vec![]),
        ]);
        let (_, results) = filter_all(&plugin(), &spread_pod(hard("zone", 1)), &snap);
        // min 0 (zone c): a → 2+1 > 1, b → 1+1 > 1, c → 0+1 <= 1.
        assert_eq!(
            results[0].1,
            Status::unschedulable(REASON_CONSTRAINTS_NOT_MATCH)
        );
        assert_eq!(
            results[1].1,
            Status::unschedulable(REASON_CONSTRAINTS_NOT_MATCH)
        );
        assert!(results[2].1.is_success());

        let (_, results) = filter_all(&plugin(), &spread_pod(hard("zone", 2)), &snap);
        assert!(!results[0].1.is_success());
        assert!(results[1].1.is_success());
        assert!(results[2].1.is_success());
    }

    #[test]
    fn pods_outside_the_selector_namespace_or_terminating_do_not_count() {
        let mut other_ns = app("other-ns");
        other_ns.namespace = "kube-system".into();
        let mut terminating = app("terminating");
        terminating.terminating = true;
        let unrelated = named_pod(
            "db",
            json!({"app": "db"}),
            json!({"containers": [{"name": "c"}]}),
        );
        let snap = snapshot(vec![
            zone_node("a1", "a", vec![other_ns, terminating, unrelated]),
            zone_node("b1", "b", vec![]),
        ]);
        let (_, results) = filter_all(&plugin(), &spread_pod(hard("zone", 1)), &snap);
        assert!(results.iter().all(|(_, s)| s.is_success()), "{results:?}");
    }

    #[test]
    fn node_without_the_topology_label_is_unresolvable() {
        let snap = snapshot(vec![
            zone_node("a1", "a", vec![]),
            node("bare", json!({}), vec![]),
        ]);
        let (_, results) = filter_all(&plugin(), &spread_pod(hard("zone", 1)), &snap);
        assert!(results[0].1.is_success());
        assert_eq!(
            results[1].1,
            Status::unresolvable(REASON_NODE_LABEL_NOT_MATCH)
        );
        assert_eq!(
            results[1].1.code,
            crate::framework::Code::UnschedulableAndUnresolvable
        );
    }

    #[test]
    fn min_domains_makes_the_global_minimum_zero_while_domains_are_few() {
        let snap = snapshot(vec![
            zone_node("a1", "a", apps("a", 1)),
            zone_node("b1", "b", apps("b", 1)),
        ]);
        // Without minDomains the minimum is 1: 1 + 1 - 1 <= 1 everywhere.
        let (_, results) = filter_all(&plugin(), &spread_pod(hard("zone", 1)), &snap);
        assert!(results.iter().all(|(_, s)| s.is_success()));
        // Two domains < minDomains 3: the minimum is 0 and 1 + 1 - 0 > 1.
        let mut constraints = hard("zone", 1);
        constraints[0]["minDomains"] = json!(3);
        let (_, results) = filter_all(&plugin(), &spread_pod(constraints), &snap);
        assert!(results
            .iter()
            .all(|(_, s)| *s == Status::unschedulable(REASON_CONSTRAINTS_NOT_MATCH)));
    }

    #[test]
    fn nodes_outside_the_pods_node_affinity_are_no_domain() {
        // Zone c has no pods but the pod may not go there: with the default Honor policy it
        // is not a domain, so the minimum is zone b's 1.
        let snap = snapshot(vec![
            node("a1", json!({"zone": "a", "pool": "x"}), apps("a", 2)),
            node("b1", json!({"zone": "b", "pool": "x"}), apps("b", 1)),
            node("c1", json!({"zone": "c", "pool": "y"}), vec![]),
        ]);
        let mut pod = spread_pod(hard("zone", 1));
        pod.shape_mut()
            .node_selector
            .insert("pool".into(), "x".into());
        let (_, results) = filter_all(&plugin(), &pod, &snap);
        assert!(!results[0].1.is_success());
        assert!(results[1].1.is_success());
        // With nodeAffinityPolicy Ignore zone c counts and the minimum is 0.
        let mut constraints = hard("zone", 1);
        constraints[0]["nodeAffinityPolicy"] = json!("Ignore");
        let mut pod = spread_pod(constraints);
        pod.shape_mut()
            .node_selector
            .insert("pool".into(), "x".into());
        let (_, results) = filter_all(&plugin(), &pod, &snap);
        assert!(!results[1].1.is_success());
    }

    #[test]
    fn match_label_keys_narrow_the_selector_to_the_pods_values() {
        let v1 = |name: &str| {
            named_pod(
                name,
                json!({"app": "web", "version": "v1"}),
                json!({"containers": [{"name": "c"}]}),
            )
        };
        let snap = snapshot(vec![
            zone_node("a1", "a", vec![v1("old-0"), v1("old-1")]),
            zone_node("b1", "b", vec![]),
        ]);
        let mut constraints = hard("zone", 1);
        constraints[0]["matchLabelKeys"] = json!(["version"]);
        // The incoming pod is version v2: the v1 pods in zone a do not count.
        let (_, results) = filter_all(&plugin(), &spread_pod(constraints), &snap);
        assert!(results.iter().all(|(_, s)| s.is_success()), "{results:?}");
    }

    #[test]
    fn pre_filter_skips_pods_without_hard_constraints() {
        let snap = snapshot(vec![zone_node("a1", "a", vec![])]);
        let mut state = CycleState::default();
        let (status, _) = plugin().pre_filter(&mut state, &spread_pod(soft("zone", 1)), &snap);
        assert_eq!(status.code, crate::framework::Code::Skip);
        let (status, _) = plugin().pre_filter(&mut state, &app("plain"), &snap);
        assert_eq!(status.code, crate::framework::Code::Skip);
    }

    #[test]
    fn added_and_removed_pods_update_the_counts() {
        let snap = snapshot(vec![
            zone_node("a1", "a", apps("a", 1)),
            zone_node("b1", "b", vec![]),
        ]);
        let pl = plugin();
        let pod = spread_pod(hard("zone", 1));
        let (mut state, results) = filter_all(&pl, &pod, &snap);
        assert!(!results[0].1.is_success());
        assert!(results[1].1.is_success());

        // Preemption removes zone a's pod: both zones are empty.
        let a1 = snap.get("a1").unwrap();
        let victim = a1.pods[0].clone();
        let mut what_if = state.clone();
        pl.pre_filter_remove_pod(&mut what_if, &pod, &victim, a1);
        assert!(pl.filter(&what_if, &pod, a1).is_success());
        // The original state is untouched.
        assert!(!pl.filter(&state, &pod, a1).is_success());

        // A pod nominated to zone b: zone b has 1, zone a 1; both fit again.
        let b1 = snap.get("b1").unwrap();
        pl.pre_filter_add_pod(&mut state, &pod, &app("nominated"), b1);
        assert!(pl.filter(&state, &pod, a1).is_success());
        assert!(pl.filter(&state, &pod, b1).is_success());
        // Another in zone b makes b the crowded one.
        pl.pre_filter_add_pod(&mut state, &pod, &app("nominated-2"), b1);
        assert!(pl.filter(&state, &pod, a1).is_success());
        assert!(!pl.filter(&state, &pod, b1).is_success());
        // A pod in another namespace changes nothing.
        let mut foreign = app("foreign");
        foreign.namespace = "other".into();
        pl.pre_filter_add_pod(&mut state, &pod, &foreign, a1);
        assert!(pl.filter(&state, &pod, a1).is_success());
    }

    #[test]
    fn fewer_matching_pods_in_the_zone_score_higher() {
        let snap = snapshot(vec![
            zone_node("a1", "a", apps("a", 3)),
            zone_node("b1", "b", apps("b", 1)),
            zone_node("c1", "c", vec![]),
            node("bare", json!({}), vec![]),
        ]);
        let s = scores(&plugin(), &spread_pod(soft("zone", 1)), &snap);
        let by_name: HashMap<&str, i64> = s.iter().map(|n| (n.name.as_str(), n.score)).collect();
        assert!(by_name["c1"] > by_name["b1"], "{s:?}");
        assert!(by_name["b1"] > by_name["a1"], "{s:?}");
        assert_eq!(by_name["c1"], MAX_NODE_SCORE);
        assert_eq!(by_name["bare"], 0);
        // 3 domains: weight ln(5); raw a = round(3 ln 5) = 5, b = 2, c = 0; normalised
        // 100 * (5 + 0 - raw) / 5.
        assert_eq!(by_name["a1"], 0);
        assert_eq!(by_name["b1"], 60);
    }

    #[test]
    fn hostname_spreading_counts_the_nodes_own_pods() {
        let snap = snapshot(vec![
            zone_node("n1", "a", apps("n1", 2)),
            zone_node("n2", "a", apps("n2", 1)),
            zone_node("n3", "a", vec![]),
        ]);
        let s = scores(&plugin(), &spread_pod(soft(LABEL_HOSTNAME, 1)), &snap);
        assert!(s[2].score > s[1].score && s[1].score > s[0].score, "{s:?}");
    }

    #[test]
    fn score_skips_pods_without_soft_constraints() {
        let snap = snapshot(vec![zone_node("a1", "a", vec![])]);
        let nodes: Vec<Arc<NodeInfo>> = snap.node_infos().cloned().collect();
        let status = plugin().pre_score(
            &mut CycleState::default(),
            &spread_pod(hard("zone", 1)),
            &nodes,
            &snap,
        );
        assert_eq!(status.code, crate::framework::Code::Skip);
    }

    #[test]
    fn list_default_constraints_spread_pods_of_the_same_controller() {
        let pl = PodTopologySpread::new(Some(&json!({
            "defaultingType": "List",
            "defaultConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}]
        })))
        .unwrap();
        let owned = |name: &str| {
            let mut p = app(name);
            p.owner_uid = Some("rs-1".into());
            p
        };
        let snap = snapshot(vec![
            zone_node("a1", "a", vec![owned("r-0"), owned("r-1")]),
            zone_node("b1", "b", apps("other", 3)),
        ]);
        let (_, results) = filter_all(&pl, &owned("incoming"), &snap);
        assert!(!results[0].1.is_success());
        assert!(results[1].1.is_success());
        // A pod without a controller is not defaulted, nor one with constraints of its own.
        let (status, _) = pl.pre_filter(&mut CycleState::default(), &app("loose"), &snap);
        assert_eq!(status.code, crate::framework::Code::Skip);
        let mut own = spread_pod(soft("zone", 1));
        own.owner_uid = Some("rs-1".into());
        let (status, _) = pl.pre_filter(&mut CycleState::default(), &own, &snap);
        assert_eq!(status.code, crate::framework::Code::Skip);
        // System defaulting adds nothing here (see `new`).
        let system = PodTopologySpread::new(Some(&json!({"defaultingType": "System"}))).unwrap();
        let (status, _) = system.pre_filter(&mut CycleState::default(), &owned("incoming"), &snap);
        assert_eq!(status.code, crate::framework::Code::Skip);
    }

    #[test]
    fn args_are_validated_as_upstream() {
        let err = |args: Value| PodTopologySpread::new(Some(&args)).err().unwrap();
        assert_eq!(
            err(
                json!({"defaultConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}]})
            ),
            "defaultingType: Invalid value: \"System\": when .defaultConstraints are not empty"
        );
        assert_eq!(
            err(json!({"defaultingType": "Sometimes"})),
            "defaultingType: Unsupported value: \"Sometimes\": supported values: \"System\", \"List\""
        );
        let e = err(json!({"defaultingType": "List", "defaultConstraints": [
            {"maxSkew": 0, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
            {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
             "labelSelector": {"matchLabels": {"a": "b"}}}
        ]}));
        assert!(
            e.contains(
                "defaultConstraints[0].maxSkew: Invalid value: 0: not in valid range (0, inf)"
            ),
            "{e}"
        );
        assert!(
            e.contains("defaultConstraints[1].labelSelector: Forbidden"),
            "{e}"
        );
        assert!(
            e.contains("defaultConstraints[1]: Duplicate value: \"{zone, DoNotSchedule}\""),
            "{e}"
        );
        assert!(PodTopologySpread::new(Some(&json!({"defaultingType": "List"}))).is_ok());
    }

    /// The kept counts of one plugin follow the cache from cycle to cycle: pods bound,
    /// nodes relabelled, added and removed (indices moving) give what a fresh count gives.
    #[test]
    fn kept_counts_follow_the_cache_across_cycles() {
        use crate::cache::Cache;
        let zone = |name: &str, z: &str| NodeData {
            name: name.into(),
            labels: [("zone".to_string(), z.to_string())].into(),
            ..NodeData::default()
        };
        let bound = |name: &str, node: &str| {
            let mut p = app(name);
            p.node_name = Some(node.into());
            Arc::new(p)
        };
        let pl = plugin();
        let pod = spread_pod(hard("zone", 1));
        let mut cache = Cache::default();
        let mut snap = Snapshot::default();
        // Filter results by node name, from the kept plugin and from a fresh one.
        let check = |snap: &Snapshot| {
            let (_, kept) = filter_all(&pl, &pod, snap);
            let (_, fresh) = filter_all(&plugin(), &pod, snap);
            assert_eq!(kept, fresh);
            kept.into_iter()
                .filter(|(_, s)| s.is_success())
                .map(|(n, _)| n)
                .collect::<HashSet<String>>()
        };
        for (n, z) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c")] {
            cache.set_node(zone(n, z));
        }
        cache.update_snapshot(&mut snap);
        assert_eq!(check(&snap).len(), 4);
        // One pod in zone a: a is full until b and c catch up.
        cache.set_pod(bound("p1", "a1"));
        cache.update_snapshot(&mut snap);
        assert_eq!(check(&snap), HashSet::from(["b1".into(), "c1".into()]));
        cache.set_pod(bound("p2", "b1"));
        cache.update_snapshot(&mut snap);
        assert_eq!(check(&snap), HashSet::from(["c1".into()]));
        // c1 moves to zone a: zone c is gone, a has 1 and b 1, so every node fits.
        cache.set_node(zone("c1", "a"));
        cache.update_snapshot(&mut snap);
        assert_eq!(check(&snap).len(), 4);
        // Removing a1 moves another node into its index; its pod goes with it.
        cache.remove_pod("uid-p1");
        cache.remove_node("a1");
        cache.update_snapshot(&mut snap);
        assert_eq!(check(&snap), HashSet::from(["a2".into(), "c1".into()]));
        cache.set_node(zone("d1", "d"));
        cache.update_snapshot(&mut snap);
        assert_eq!(
            check(&snap),
            HashSet::from(["a2".into(), "c1".into(), "d1".into()])
        );
    }

    #[test]
    fn critical_paths_keep_the_minimum() {
        let mut p = CriticalPaths::new();
        for (v, n) in [("a", 3), ("b", 1), ("c", 2)] {
            p.update(v, n);
        }
        assert_eq!(p.min(), 1);
        p.update("b", 4);
        assert_eq!(p.min(), 2);
        p.update("a", 0);
        assert_eq!(p.min(), 0);
    }
}
