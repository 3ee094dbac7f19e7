//! InterPodAffinity: required pod affinity and anti-affinity (of the incoming pod, and the
//! required anti-affinity of the pods already placed) decide which topology domains a pod
//! may join; preferred terms, on both sides, score them.
//!
//! PreFilter and PreScore turn the terms into counts per topology pair (key, value) once per
//! cycle, so Filter and Score are a few hash lookups per node.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Deserialize;

use crate::framework::types::AffinityTerm;
use crate::framework::{
    ClusterEvent, CycleState, NodeInfo, NodeScore, Plugin, PodInfo, Point, PreFilterNodes,
    Snapshot, Status, MAX_NODE_SCORE,
};

pub const NAME: &str = "InterPodAffinity";
/// Upstream `ErrReasonExistingAntiAffinityRulesNotMatch`.
pub const REASON_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
/// Upstream `ErrReasonAffinityRulesNotMatch`.
pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
/// Upstream `ErrReasonAntiAffinityRulesNotMatch`.
pub const REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";

const PRE_FILTER_KEY: &str = "PreFilterInterPodAffinity";
const PRE_SCORE_KEY: &str = "PreScoreInterPodAffinity";

type NamespaceLabels = HashMap<String, BTreeMap<String, String>>;

/// `InterPodAffinityArgs` of a KubeSchedulerConfiguration.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Args {
    #[serde(default = "default_hard_pod_affinity_weight")]
    hard_pod_affinity_weight: i32,
    #[serde(default)]
    ignore_preferred_terms_of_existing_pods: bool,
}

fn default_hard_pod_affinity_weight() -> i32 {
    1
}

pub struct InterPodAffinity {
    /// The score weight of an existing pod's required affinity term that the incoming pod
    /// matches.
    hard_pod_affinity_weight: i64,
    /// Skip scoring a pod without preferred terms of its own, rather than scoring the
    /// preferences of the existing pods toward it.
    ignore_preferred_terms_of_existing_pods: bool,
}

impl InterPodAffinity {
    pub fn new(args: Option<&serde_json::Value>) -> Result<InterPodAffinity, String> {
        let args: Args = match args {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| format!("InterPodAffinityArgs: {e}"))?,
            None => Args {
                hard_pod_affinity_weight: default_hard_pod_affinity_weight(),
                ignore_preferred_terms_of_existing_pods: false,
            },
        };
        if !(0..=100).contains(&args.hard_pod_affinity_weight) {
            return Err(format!(
                "hardPodAffinityWeight: Invalid value: {}: not in valid range [0, 100]",
                args.hard_pod_affinity_weight
            ));
        }
        Ok(InterPodAffinity {
            hard_pod_affinity_weight: i64::from(args.hard_pod_affinity_weight),
            ignore_preferred_terms_of_existing_pods: args.ignore_preferred_terms_of_existing_pods,
        })
    }
}

/// Topology key → value → count (or score). Nested so that lookups take the node's label
/// strings as they are, without building a pair.
#[derive(Clone, Debug, Default)]
struct TopologyCounts(HashMap<String, HashMap<String, i64>>);

impl TopologyCounts {
    fn get(&self, key: &str, value: &str) -> i64 {
        self.0
            .get(key)
            .and_then(|values| values.get(value))
            .copied()
            .unwrap_or(0)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `delta` to the node's value of `key`, if the node has the label. Entries that
    /// reach zero are dropped when `prune`, so emptiness means "no matching pod" (the
    /// first-pod case of affinity relies on it).
    fn add(&mut self, labels: &BTreeMap<String, String>, key: &str, delta: i64, prune: bool) {
        let Some(value) = labels.get(key) else {
            return;
        };
        let values = match self.0.get_mut(key) {
            Some(values) => values,
            None => self.0.entry(key.to_string()).or_default(),
        };
        let n = match values.get_mut(value.as_str()) {
            Some(n) => {
                *n += delta;
                *n
            }
            None => {
                values.insert(value.clone(), delta);
                delta
            }
        };
        if prune && n == 0 {
            values.remove(value.as_str());
            if values.is_empty() {
                self.0.remove(key);
            }
        }
    }

    /// Whether any of the node's labels is a pair with a positive count.
    fn any_positive(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().any(|(key, values)| {
            labels
                .get(key)
                .and_then(|value| values.get(value.as_str()))
                .is_some_and(|n| *n > 0)
        })
    }

    /// The sum of the node's values over every key.
    fn sum(&self, labels: &BTreeMap<String, String>) -> i64 {
        self.0
            .iter()
            .filter_map(|(key, values)| values.get(labels.get(key)?.as_str()))
            .sum()
    }
}

/// Upstream `podMatchesAllAffinityTerms`: false for no terms.
fn matches_all(terms: &[AffinityTerm], pod: &PodInfo, ns: &NamespaceLabels) -> bool {
    !terms.is_empty() && terms.iter().all(|t| t.matches(pod, ns))
}

/// An existing pod matching all the incoming pod's affinity terms counts once per term, in
/// the domain of its node.
fn count_affinity(
    counts: &mut TopologyCounts,
    terms: &[AffinityTerm],
    other: &PodInfo,
    ns: &NamespaceLabels,
    labels: &BTreeMap<String, String>,
    delta: i64,
) {
    if matches_all(terms, other, ns) {
        for t in terms {
            counts.add(labels, &t.topology_key, delta, true);
        }
    }
}

/// Each anti-affinity term `target` matches counts in the domain of the node.
fn count_anti_affinity(
    counts: &mut TopologyCounts,
    terms: &[AffinityTerm],
    target: &PodInfo,
    ns: &NamespaceLabels,
    labels: &BTreeMap<String, String>,
    delta: i64,
) {
    for t in terms {
        if t.matches(target, ns) {
            counts.add(labels, &t.topology_key, delta, true);
        }
    }
}

/// What Filter reads.
#[derive(Clone)]
struct PreFilterState {
    /// Pairs where existing pods' required anti-affinity terms match the incoming pod.
    existing_anti_affinity: TopologyCounts,
    /// Pairs with existing pods matching all the incoming pod's required affinity terms.
    affinity: TopologyCounts,
    /// Pairs with existing pods matching the incoming pod's required anti-affinity terms.
    anti_affinity: TopologyCounts,
    /// The incoming pod matches all its own affinity terms.
    matches_own_affinity: bool,
    /// For namespaceSelectors in the add/remove extensions.
    namespace_labels: Arc<NamespaceLabels>,
}

impl PreFilterState {
    fn update_with_pod(&mut self, pod: &PodInfo, other: &PodInfo, node: &NodeInfo, delta: i64) {
        let labels = &node.node().labels;
        let ns = &*self.namespace_labels;
        count_anti_affinity(
            &mut self.existing_anti_affinity,
            &other.required_anti_affinity_terms,
            pod,
            ns,
            labels,
            delta,
        );
        count_affinity(
            &mut self.affinity,
            &pod.required_affinity_terms,
            other,
            ns,
            labels,
            delta,
        );
        count_anti_affinity(
            &mut self.anti_affinity,
            &pod.required_anti_affinity_terms,
            other,
            ns,
            labels,
            delta,
        );
    }
}

/// Upstream `satisfyPodAffinity`: every term's domain holds a matching pod, or no pod in
/// the cluster matches and the pod matches its own terms (the first of a group that wants
/// to be together may go anywhere with the topology keys).
fn satisfies_affinity(
    s: &PreFilterState,
    pod: &PodInfo,
    labels: &BTreeMap<String, String>,
) -> bool {
    let mut pods_exist = true;
    for t in &pod.required_affinity_terms {
        let Some(value) = labels.get(&t.topology_key) else {
            return false;
        };
        if s.affinity.get(&t.topology_key, value) <= 0 {
            pods_exist = false;
        }
    }
    pods_exist || (s.affinity.is_empty() && s.matches_own_affinity)
}

fn satisfies_anti_affinity(
    s: &PreFilterState,
    pod: &PodInfo,
    labels: &BTreeMap<String, String>,
) -> bool {
    s.anti_affinity.is_empty()
        || !pod.required_anti_affinity_terms.iter().any(|t| {
            labels
                .get(&t.topology_key)
                .is_some_and(|value| s.anti_affinity.get(&t.topology_key, value) > 0)
        })
}

impl InterPodAffinity {
    /// The score contributions between the incoming pod and one existing pod, in the
    /// domains of the existing pod's node (upstream `processExistingPod`).
    fn score_existing_pod(
        &self,
        scores: &mut TopologyCounts,
        pod: &PodInfo,
        existing: &PodInfo,
        labels: &BTreeMap<String, String>,
        ns: &NamespaceLabels,
    ) {
        for w in &pod.preferred_affinity_terms {
            if w.term.matches(existing, ns) {
                scores.add(labels, &w.term.topology_key, i64::from(w.weight), false);
            }
        }
        for w in &pod.preferred_anti_affinity_terms {
            if w.term.matches(existing, ns) {
                scores.add(labels, &w.term.topology_key, -i64::from(w.weight), false);
            }
        }
        if self.hard_pod_affinity_weight > 0 {
            for t in &existing.required_affinity_terms {
                if t.matches(pod, ns) {
                    scores.add(
                        labels,
                        &t.topology_key,
                        self.hard_pod_affinity_weight,
                        false,
                    );
                }
            }
        }
        for w in &existing.preferred_affinity_terms {
            if w.term.matches(pod, ns) {
                scores.add(labels, &w.term.topology_key, i64::from(w.weight), false);
            }
        }
        for w in &existing.preferred_anti_affinity_terms {
            if w.term.matches(pod, ns) {
                scores.add(labels, &w.term.topology_key, -i64::from(w.weight), false);
            }
        }
    }
}

impl Plugin for InterPodAffinity {
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
            ClusterEvent::AssignedPodAdd,
            ClusterEvent::AssignedPodUpdate,
            ClusterEvent::AssignedPodDelete,
            ClusterEvent::NodeAdd,
            ClusterEvent::NodeLabelChange,
            ClusterEvent::NamespaceChange,
        ]
    }

    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> (Status, PreFilterNodes) {
        let ns = &*snapshot.namespace_labels;
        let mut existing_anti_affinity = TopologyCounts::default();
        if snapshot.pods_with_required_anti_affinity > 0 {
            for info in snapshot
                .node_infos()
                .filter(|n| n.pods_with_required_anti_affinity > 0)
            {
                let labels = &info.node().labels;
                for existing in info
                    .pods
                    .iter()
                    .filter(|p| !p.required_anti_affinity_terms.is_empty())
                {
                    count_anti_affinity(
                        &mut existing_anti_affinity,
                        &existing.required_anti_affinity_terms,
                        pod,
                        ns,
                        labels,
                        1,
                    );
                }
            }
        }
        let affinity_terms = &pod.required_affinity_terms;
        let anti_affinity_terms = &pod.required_anti_affinity_terms;
        if existing_anti_affinity.is_empty()
            && affinity_terms.is_empty()
            && anti_affinity_terms.is_empty()
        {
            return (Status::skip(), None);
        }
        let mut affinity = TopologyCounts::default();
        let mut anti_affinity = TopologyCounts::default();
        if !affinity_terms.is_empty() || !anti_affinity_terms.is_empty() {
            for info in snapshot.node_infos() {
                let labels = &info.node().labels;
                // A node with none of the terms' topology keys adds nothing.
                if !affinity_terms
                    .iter()
                    .chain(anti_affinity_terms)
                    .any(|t| labels.contains_key(&t.topology_key))
                {
                    continue;
                }
                for existing in &info.pods {
                    count_affinity(&mut affinity, affinity_terms, existing, ns, labels, 1);
                    count_anti_affinity(
                        &mut anti_affinity,
                        anti_affinity_terms,
                        existing,
                        ns,
                        labels,
                        1,
                    );
                }
            }
        }
        state.write(
            PRE_FILTER_KEY,
            PreFilterState {
                existing_anti_affinity,
                affinity,
                anti_affinity,
                matches_own_affinity: matches_all(affinity_terms, pod, ns),
                namespace_labels: snapshot.namespace_labels.clone(),
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

    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<PreFilterState>(PRE_FILTER_KEY) else {
            return Status::error(format!("{NAME}: no PreFilter state"));
        };
        let labels = &node.node().labels;
        if !satisfies_affinity(s, pod, labels) {
            return Status::unresolvable(REASON_AFFINITY);
        }
        if !satisfies_anti_affinity(s, pod, labels) {
            return Status::unschedulable(REASON_ANTI_AFFINITY);
        }
        if s.existing_anti_affinity.any_positive(labels) {
            return Status::unschedulable(REASON_EXISTING_ANTI_AFFINITY);
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
        if nodes.is_empty() {
            return Status::skip();
        }
        let has_preferred = !pod.preferred_affinity_terms.is_empty()
            || !pod.preferred_anti_affinity_terms.is_empty();
        if !has_preferred
            && (self.ignore_preferred_terms_of_existing_pods || snapshot.pods_with_affinity == 0)
        {
            return Status::skip();
        }
        let ns = &*snapshot.namespace_labels;
        let mut scores = TopologyCounts::default();
        for info in snapshot.node_infos() {
            // Without preferences of its own, only existing pods with (anti-)affinity can
            // score the incoming pod.
            if !has_preferred && info.pods_with_affinity == 0 {
                continue;
            }
            let labels = &info.node().labels;
            if labels.is_empty() {
                continue;
            }
            for existing in info
                .pods
                .iter()
                .filter(|p| has_preferred || p.has_affinity())
            {
                self.score_existing_pod(&mut scores, pod, existing, labels, ns);
            }
        }
        if scores.is_empty() {
            return Status::skip();
        }
        state.write(PRE_SCORE_KEY, Arc::new(scores));
        Status::success()
    }

    /// The summed weights of the node's domains: positive for affinity, negative for
    /// anti-affinity.
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(scores) = state.read::<Arc<TopologyCounts>>(PRE_SCORE_KEY) else {
            return Err(Status::error(format!("{NAME}: no PreScore state")));
        };
        Ok(scores.sum(&node.node().labels))
    }

    /// Upstream: min-max scaling into 0..=MAX_NODE_SCORE; all equal → all 0.
    fn normalize_scores(&self, state: &CycleState, _pod: &PodInfo, scores: &mut [NodeScore]) {
        if state
            .read::<Arc<TopologyCounts>>(PRE_SCORE_KEY)
            .is_none_or(|s| s.is_empty())
        {
            return;
        }
        let min = scores.iter().map(|s| s.score).min().unwrap_or(0);
        let max = scores.iter().map(|s| s.score).max().unwrap_or(0);
        let diff = max - min;
        for s in scores.iter_mut() {
            s.score = if diff > 0 {
                (MAX_NODE_SCORE as f64 * ((s.score - min) as f64 / diff as f64)) as i64
            } else {
                0
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::plugins::testing::named_pod;
    use serde_json::{json, Value};

    const ZONE: &str = "topology.kubernetes.io/zone";

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
        node(
            name,
            json!({ZONE: zone, "kubernetes.io/hostname": name}),
            pods,
        )
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

    fn labelled(name: &str, labels: Value) -> PodInfo {
        named_pod(name, labels, json!({"containers": [{"name": "c"}]}))
    }

    fn with_affinity(name: &str, labels: Value, affinity: Value) -> PodInfo {
        named_pod(
            name,
            labels,
            json!({"containers": [{"name": "c"}], "affinity": affinity}),
        )
    }

    fn term(labels: Value, key: &str) -> Value {
        json!({"labelSelector": {"matchLabels": labels}, "topologyKey": key})
    }

    fn required(kind: &str, terms: Value) -> Value {
        json!({kind: {"requiredDuringSchedulingIgnoredDuringExecution": terms}})
    }

    fn plugin() -> InterPodAffinity {
        InterPodAffinity::new(None).unwrap()
    }

    fn filter_all(
        pl: &InterPodAffinity,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> (CycleState, Vec<Status>) {
        let mut state = CycleState::default();
        let (status, _) = pl.pre_filter(&mut state, pod, snap);
        assert!(status.is_success(), "{status:?}");
        let results = snap
            .node_infos()
            .map(|n| pl.filter(&state, pod, n))
            .collect();
        (state, results)
    }

    fn scores(pl: &InterPodAffinity, pod: &PodInfo, snap: &Snapshot) -> Option<Vec<i64>> {
        let mut state = CycleState::default();
        let nodes: Vec<Arc<NodeInfo>> = snap.node_infos().cloned().collect();
        let status = pl.pre_score(&mut state, pod, &nodes, snap);
        if status.code == Code::Skip {
            return None;
        }
        assert!(status.is_success(), "{status:?}");
        let mut scores: Vec<NodeScore> = nodes
            .iter()
            .map(|n| NodeScore {
                name: n.name.clone(),
                score: pl.score(&state, pod, n).unwrap(),
            })
            .collect();
        pl.normalize_scores(&state, pod, &mut scores);
        Some(scores.into_iter().map(|s| s.score).collect())
    }

    #[test]
    fn required_affinity_needs_a_matching_pod_in_the_same_domain() {
        let snap = snapshot(vec![
            zone_node("a1", "a", vec![labelled("db", json!({"app": "db"}))]),
            zone_node("a2", "a", vec![]),
            zone_node("b1", "b", vec![]),
            node("bare", json!({}), vec![]),
        ]);
        let pod = with_affinity(
            "web",
            json!({"app": "web"}),
            required("podAffinity", json!([term(json!({"app": "db"}), ZONE)])),
        );
        let (_, results) = filter_all(&plugin(), &pod, &snap);
        assert!(results[0].is_success());
        assert!(results[1].is_success(), "same zone as the db pod");
        assert_eq!(results[2], Status::unresolvable(REASON_AFFINITY));
        assert_eq!(results[3], Status::unresolvable(REASON_AFFINITY));
    }

    #[test]
    fn the_first_pod_of_a_self_affine_group_may_go_anywhere_with_the_key() {
        let snap = snapshot(vec![
            zone_node("a1", "a", vec![labelled("other", json!({"app": "other"}))]),
            zone_node("b1", "b", vec![]),
            node("bare", json!({}), vec![]),
        ]);
        let affinity = required("podAffinity", json!([term(json!({"app": "web"}), ZONE)]));
        let pod = with_affinity("web-0", json!({"app": "web"}), affinity.clone());
        let (_, results) = filter_all(&plugin(), &pod, &snap);
        assert!(results[0].is_success());
        assert!(results[1].is_success());
        assert_eq!(
            results[2],
            Status::unresolvable(REASON_AFFINITY),
            "the topology key is still required"
        );
        // A pod that does not match its own terms gets no such pass.
        let stranger = with_affinity("cache", json!({"app": "cache"}), affinity);
        let (_, results) = filter_all(&plugin(), &stranger, &snap);
        assert!(results
            .iter()
            .all(|s| *s == Status::unresolvable(REASON_AFFINITY)));
    }

    #[test]
    fn required_anti_affinity_keeps_the_pod_out_of_domains_with_matching_pods() {
        let snap = snapshot(vec![
            zone_node("a1", "a", vec![labelled("web-0", json!({"app": "web"}))]),
            zone_node("a2", "a", vec![]),
            zone_node("b1", "b", vec![labelled("db", json!({"app": "db"}))]),
        ]);
        let pod = with_affinity(
            "web-1",
            json!({"app": "web"}),
            required(
                "podAntiAffinity",
                json!([term(json!({"app": "web"}), ZONE)]),
            ),
        );
        let (_, results) = filter_all(&plugin(), &pod, &snap);
        assert_eq!(results[0], Status::unschedulable(REASON_ANTI_AFFINITY));
        assert_eq!(results[1], Status::unschedulable(REASON_ANTI_AFFINITY));
        assert_eq!(results[1].code, Code::Unschedulable);
        assert!(results[2].is_success());
    }

    #[test]
    fn existing_pods_anti_affinity_keeps_matching_pods_out() {
        let guard = with_affinity(
            "guard",
            json!({"app": "guard"}),
            required(
                "podAntiAffinity",
                json!([term(json!({"app": "noisy"}), "kubernetes.io/hostname")]),
            ),
        );
        let snap = snapshot(vec![
            zone_node("a1", "a", vec![guard]),
            zone_node("a2", "a", vec![]),
        ]);
        let (_, results) = filter_all(
            &plugin(),
            &labelled("noisy", json!({"app": "noisy"})),
            &snap,
        );
        assert_eq!(
            results[0],
            Status::unschedulable(REASON_EXISTING_ANTI_AFFINITY)
        );
        assert!(results[1].is_success());
        // A pod the guard does not select is not even filtered.
        let mut state = CycleState::default();
        let (status, _) = plugin().pre_filter(
            &mut state,
            &labelled("quiet", json!({"app": "quiet"})),
            &snap,
        );
        assert_eq!(status.code, Code::Skip);
    }

    #[test]
    fn namespace_selectors_resolve_through_the_snapshots_namespace_labels() {
        let mut db = labelled("db", json!({"app": "db"}));
        db.namespace = "data".into();
        let mut snap = snapshot(vec![
            zone_node("a1", "a", vec![db]),
            zone_node("b1", "b", vec![]),
        ]);
        let mut namespaces = HashMap::new();
        namespaces.insert(
            "data".to_string(),
            BTreeMap::from([("team".to_string(), "storage".to_string())]),
        );
        snap.namespace_labels = Arc::new(namespaces);
        let pod = with_affinity(
            "web",
            json!({"app": "web"}),
            required(
                "podAffinity",
                json!([{"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": ZONE,
                        "namespaceSelector": {"matchLabels": {"team": "storage"}}}]),
            ),
        );
        let (_, results) = filter_all(&plugin(), &pod, &snap);
        assert!(results[0].is_success());
        assert!(!results[1].is_success());
        // Without a namespace selector the term looks in the pod's own namespace only.
        let same_ns = with_affinity(
            "web",
            json!({"app": "web"}),
            required("podAffinity", json!([term(json!({"app": "db"}), ZONE)])),
        );
        let (_, results) = filter_all(&plugin(), &same_ns, &snap);
        assert!(results.iter().all(|s| !s.is_success()));
    }

    #[test]
    fn added_and_removed_pods_update_the_counts() {
        let snap = snapshot(vec![
            zone_node("a1", "a", vec![labelled("web-0", json!({"app": "web"}))]),
            zone_node("b1", "b", vec![]),
        ]);
        let pl = plugin();
        let pod = with_affinity(
            "web-1",
            json!({"app": "web"}),
            required(
                "podAntiAffinity",
                json!([term(json!({"app": "web"}), ZONE)]),
            ),
        );
        let (mut state, results) = filter_all(&pl, &pod, &snap);
        assert!(!results[0].is_success());
        let (a1, b1) = (snap.get("a1").unwrap(), snap.get("b1").unwrap());

        // Preempting web-0 frees zone a.
        let mut what_if = state.clone();
        pl.pre_filter_remove_pod(&mut what_if, &pod, &a1.pods[0], a1);
        assert!(pl.filter(&what_if, &pod, a1).is_success());
        assert!(!pl.filter(&state, &pod, a1).is_success());

        // A web pod nominated to zone b closes it.
        pl.pre_filter_add_pod(
            &mut state,
            &pod,
            &labelled("web-2", json!({"app": "web"})),
            b1,
        );
        assert_eq!(
            pl.filter(&state, &pod, b1),
            Status::unschedulable(REASON_ANTI_AFFINITY)
        );

        // An added pod whose anti-affinity selects the incoming pod.
        let guard = with_affinity(
            "guard",
            json!({}),
            required(
                "podAntiAffinity",
                json!([term(json!({"app": "web"}), ZONE)]),
            ),
        );
        let mut what_if = state.clone();
        pl.pre_filter_remove_pod(
            &mut what_if,
            &pod,
            &labelled("web-2", json!({"app": "web"})),
            b1,
        );
        assert!(pl.filter(&what_if, &pod, b1).is_success());
        pl.pre_filter_add_pod(&mut what_if, &pod, &guard, b1);
        assert_eq!(
            pl.filter(&what_if, &pod, b1),
            Status::unschedulable(REASON_EXISTING_ANTI_AFFINITY)
        );
    }

    #[test]
    fn added_pods_count_for_required_affinity() {
        let snap = snapshot(vec![
            zone_node("a1", "a", vec![labelled("db", json!({"app": "db"}))]),
            zone_node("b1", "b", vec![]),
        ]);
        let pl = plugin();
        let pod = with_affinity(
            "web",
            json!({"app": "web"}),
            required("podAffinity", json!([term(json!({"app": "db"}), ZONE)])),
        );
        let (mut state, results) = filter_all(&pl, &pod, &snap);
        assert!(!results[1].is_success());
        let b1 = snap.get("b1").unwrap();
        pl.pre_filter_add_pod(
            &mut state,
            &pod,
            &labelled("db-2", json!({"app": "db"})),
            b1,
        );
        assert!(pl.filter(&state, &pod, b1).is_success());
        // Removing both db pods leaves no match anywhere; web does not match its own term.
        let a1 = snap.get("a1").unwrap();
        pl.pre_filter_remove_pod(
            &mut state,
            &pod,
            &labelled("db-2", json!({"app": "db"})),
            b1,
        );
        pl.pre_filter_remove_pod(&mut state, &pod, &a1.pods[0], a1);
        assert!(!pl.filter(&state, &pod, a1).is_success());
    }

    #[test]
    fn preferred_terms_score_matching_domains_up_or_down() {
        let snap = snapshot(vec![
            zone_node("a1", "a", vec![labelled("db", json!({"app": "db"}))]),
            zone_node("a2", "a", vec![]),
            zone_node("b1", "b", vec![labelled("batch", json!({"app": "batch"}))]),
            zone_node("c1", "c", vec![]),
        ]);
        let pod = with_affinity(
            "web",
            json!({"app": "web"}),
            json!({
                "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 10, "podAffinityTerm": term(json!({"app": "db"}), ZONE)}]},
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 5, "podAffinityTerm": term(json!({"app": "batch"}), ZONE)}]}
            }),
        );
        // Raw: a = 10, b = -5, c = 0 → (x + 5) / 15 * 100.
        assert_eq!(scores(&plugin(), &pod, &snap), Some(vec![100, 100, 0, 33]));
    }

    #[test]
    fn existing_pods_terms_toward_the_incoming_pod_score_too() {
        let fan = with_affinity(
            "fan",
            json!({"app": "fan"}),
            required("podAffinity", json!([term(json!({"app": "web"}), ZONE)])),
        );
        let critic = with_affinity(
            "critic",
            json!({"app": "critic"}),
            json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 3, "podAffinityTerm": term(json!({"app": "web"}), ZONE)}]}}),
        );
        let snap = snapshot(vec![
            zone_node("a1", "a", vec![fan]),
            zone_node("b1", "b", vec![critic]),
            zone_node("c1", "c", vec![]),
        ]);
        let web = labelled("web", json!({"app": "web"}));
        // hardPodAffinityWeight 1: a = 1, b = -3, c = 0.
        assert_eq!(scores(&plugin(), &web, &snap), Some(vec![100, 0, 75]));
        let heavy = InterPodAffinity::new(Some(&json!({"hardPodAffinityWeight": 9}))).unwrap();
        // a = 9, b = -3, c = 0 → (x + 3) / 12.
        assert_eq!(scores(&heavy, &web, &snap), Some(vec![100, 0, 25]));
        let ignoring =
            InterPodAffinity::new(Some(&json!({"ignorePreferredTermsOfExistingPods": true})))
                .unwrap();
        assert_eq!(scores(&ignoring, &web, &snap), None);
    }

    #[test]
    fn pods_without_affinity_anywhere_skip() {
        let snap = snapshot(vec![zone_node(
            "a1",
            "a",
            vec![labelled("db", json!({"app": "db"}))],
        )]);
        let web = labelled("web", json!({"app": "web"}));
        let (status, _) = plugin().pre_filter(&mut CycleState::default(), &web, &snap);
        assert_eq!(status.code, Code::Skip);
        assert_eq!(scores(&plugin(), &web, &snap), None);
    }

    #[test]
    fn args_are_validated_as_upstream() {
        assert_eq!(
            InterPodAffinity::new(Some(&json!({"hardPodAffinityWeight": 101})))
                .err()
                .unwrap(),
            "hardPodAffinityWeight: Invalid value: 101: not in valid range [0, 100]"
        );
        let pl = InterPodAffinity::new(Some(&json!({}))).unwrap();
        assert_eq!(pl.hard_pod_affinity_weight, 1);
        assert!(!pl.ignore_preferred_terms_of_existing_pods);
    }
}
