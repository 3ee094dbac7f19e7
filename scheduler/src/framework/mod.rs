//! The scheduling framework: extension points, plugin statuses, cycle state and the
//! snapshot of the cluster a cycle reads. Plugins live in `crate::plugins`, a file each.

pub mod runtime;
pub mod types;

use std::any::Any;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub use types::{NodeData, NodeInfo, PodInfo, Resource};

/// The highest score a plugin gives a node after normalisation (upstream `MaxNodeScore`).
pub const MAX_NODE_SCORE: i64 = 100;

/// Upstream's status codes, in the order they matter to the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Success,
    /// The node does not fit now; preemption may help.
    Unschedulable,
    /// The node cannot fit whatever is evicted; preemption skips it.
    UnschedulableAndUnresolvable,
    /// The plugin has nothing to say for this pod (PreFilter/PreScore): skip its
    /// Filter/Score.
    Skip,
    Error,
}

/// A status's reasons. One reason, the usual case, is kept inline, and fixed reasons
/// are `&'static str`: a node rejected for a fixed reason costs no allocation (a cycle
/// may reject thousands).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reasons {
    One(Cow<'static, str>),
    Many(Vec<Cow<'static, str>>),
}

impl Default for Reasons {
    fn default() -> Reasons {
        Reasons::Many(Vec::new())
    }
}

impl std::ops::Deref for Reasons {
    type Target = [Cow<'static, str>];

    fn deref(&self) -> &[Cow<'static, str>] {
        match self {
            Reasons::One(reason) => std::slice::from_ref(reason),
            Reasons::Many(reasons) => reasons,
        }
    }
}

impl<R: Into<Cow<'static, str>>> FromIterator<R> for Reasons {
    fn from_iter<I: IntoIterator<Item = R>>(iter: I) -> Reasons {
        let mut reasons: Vec<Cow<'static, str>> = iter.into_iter().map(Into::into).collect();
        if reasons.len() == 1 {
            Reasons::One(reasons.remove(0))
        } else {
            Reasons::Many(reasons)
        }
    }
}

/// The result of a plugin call: a code, the human reasons (aggregated into the
/// FailedScheduling message), and which plugin said it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub reasons: Reasons,
    pub plugin: &'static str,
}

impl Status {
    pub const fn success() -> Status {
        Status {
            code: Code::Success,
            reasons: Reasons::Many(Vec::new()),
            plugin: "",
        }
    }

    pub fn skip() -> Status {
        Status {
            code: Code::Skip,
            reasons: Reasons::default(),
            plugin: "",
        }
    }

    pub fn unschedulable(reason: impl Into<Cow<'static, str>>) -> Status {
        Status {
            code: Code::Unschedulable,
            reasons: Reasons::One(reason.into()),
            plugin: "",
        }
    }

    pub fn unresolvable(reason: impl Into<Cow<'static, str>>) -> Status {
        Status {
            code: Code::UnschedulableAndUnresolvable,
            reasons: Reasons::One(reason.into()),
            plugin: "",
        }
    }

    pub fn error(reason: impl Into<Cow<'static, str>>) -> Status {
        Status {
            code: Code::Error,
            reasons: Reasons::One(reason.into()),
            plugin: "",
        }
    }

    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }

    pub fn is_rejected(&self) -> bool {
        matches!(
            self.code,
            Code::Unschedulable | Code::UnschedulableAndUnresolvable
        )
    }

    pub fn with_plugin(mut self, plugin: &'static str) -> Status {
        self.plugin = plugin;
        self
    }

    pub fn message(&self) -> String {
        self.reasons.join(", ")
    }

    /// Whether the plugin rejected the node for this reason.
    pub fn has_reason(&self, reason: &str) -> bool {
        self.reasons.iter().any(|r| r == reason)
    }
}

/// Data a plugin computes in PreFilter/PreScore and reads in Filter/Score. It must be
/// cloneable because preemption simulates removing pods on a copy of the cycle state.
pub trait StateData: Any + Send + Sync {
    fn clone_data(&self) -> Box<dyn StateData>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any + Clone + Send + Sync> StateData for T {
    fn clone_data(&self) -> Box<dyn StateData> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Per-cycle scratch space, keyed by plugin-chosen names.
#[derive(Default)]
pub struct CycleState {
    data: HashMap<&'static str, Box<dyn StateData>>,
    /// Plugins whose PreFilter said Skip: their Filter is not run this cycle.
    pub skip_filter: Vec<&'static str>,
    /// The same as bits by position in the framework's Filter list (the first 64), set by
    /// `Framework::run_pre_filter`: Filter runs once per node, a name search per plugin
    /// and node showed in profiles.
    pub skipped_filters: u64,
    /// Plugins whose PreScore said Skip.
    pub skip_score: Vec<&'static str>,
}

impl Clone for CycleState {
    fn clone(&self) -> CycleState {
        CycleState {
            data: self
                .data
                .iter()
                .map(|(k, v)| (*k, (**v).clone_data()))
                .collect(),
            skip_filter: self.skip_filter.clone(),
            skipped_filters: self.skipped_filters,
            skip_score: self.skip_score.clone(),
        }
    }
}

impl CycleState {
    pub fn write<T: Any + Clone + Send + Sync>(&mut self, key: &'static str, value: T) {
        self.data.insert(key, Box::new(value));
    }

    pub fn read<T: Any>(&self, key: &'static str) -> Option<&T> {
        (**self.data.get(key)?).as_any().downcast_ref()
    }

    pub fn read_mut<T: Any>(&mut self, key: &'static str) -> Option<&mut T> {
        (**self.data.get_mut(key)?).as_any_mut().downcast_mut()
    }
}

/// What the cluster looked like when the cycle started: every node with the pods counted
/// on it, plus cluster-wide facts some plugins need.
#[derive(Clone, Default)]
pub struct Snapshot {
    /// Every NodeInfo, including placeholders for nodes not yet seen (their `node` is None).
    pub nodes: Arc<Vec<Arc<NodeInfo>>>,
    /// Node name → index in `nodes`.
    pub index: Arc<HashMap<String, usize>>,
    /// Number of real nodes (with a Node object).
    pub num_nodes: usize,
    /// Image name → number of nodes that have it (ImageLocality's spread).
    pub image_nodes: Arc<HashMap<String, usize>>,
    /// Namespace name → labels (namespaceSelector of pod affinity terms).
    pub namespace_labels: Arc<HashMap<String, BTreeMap<String, String>>>,
    /// Whether any pod in the cluster has (anti-)affinity / required anti-affinity, so the
    /// InterPodAffinity plugin can skip its scan when none does.
    pub pods_with_affinity: usize,
    pub pods_with_required_anti_affinity: usize,
}

impl Snapshot {
    pub fn get(&self, node: &str) -> Option<&Arc<NodeInfo>> {
        self.index.get(node).map(|i| &self.nodes[*i])
    }

    /// The real nodes, in cache order.
    pub fn node_infos(&self) -> impl Iterator<Item = &Arc<NodeInfo>> {
        self.nodes.iter().filter(|n| n.node.is_some())
    }
}

/// A node's score from one plugin or in total.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeScore {
    pub name: String,
    pub score: i64,
}

/// What PreFilter may return besides a status: the only nodes worth filtering (NodeName,
/// NodeAffinity on `metadata.name`). None means all.
pub type PreFilterNodes = Option<std::collections::HashSet<String>>;

/// The cluster events that can make a pod which a plugin rejected schedulable again
/// (upstream `ClusterEvent`s, without the finer queueing hints).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClusterEvent {
    NodeAdd,
    NodeAllocatableChange,
    NodeLabelChange,
    NodeTaintChange,
    NodeSpecUnschedulableChange,
    /// A node's image list changed.
    NodeOtherChange,
    AssignedPodAdd,
    AssignedPodUpdate,
    AssignedPodDelete,
    NamespaceChange,
}

/// A scheduling plugin. Each extension point has a default that does nothing; a plugin
/// lists the points it takes part in with [`Plugin::points`].
pub trait Plugin: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    fn points(&self) -> &'static [Point];

    /// Events that can make a pod this plugin rejected schedulable.
    fn events(&self) -> &'static [ClusterEvent] {
        &[]
    }

    fn pre_filter(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _snapshot: &Snapshot,
    ) -> (Status, PreFilterNodes) {
        (Status::success(), None)
    }

    /// PreFilter extensions: keep the PreFilter state right when preemption (or a
    /// nominated pod) adds or removes a pod on `node` in a what-if copy.
    fn pre_filter_add_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _added: &PodInfo,
        _node: &NodeInfo,
    ) {
    }

    fn pre_filter_remove_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _removed: &PodInfo,
        _node: &NodeInfo,
    ) {
    }

    fn filter(&self, _state: &CycleState, _pod: &PodInfo, _node: &NodeInfo) -> Status {
        Status::success()
    }

    fn pre_score(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _nodes: &[Arc<NodeInfo>],
        _snapshot: &Snapshot,
    ) -> Status {
        Status::success()
    }

    fn score(&self, _state: &CycleState, _pod: &PodInfo, _node: &NodeInfo) -> Result<i64, Status> {
        Ok(0)
    }

    /// Scales this plugin's raw scores into 0..=MAX_NODE_SCORE.
    fn normalize_scores(&self, _state: &CycleState, _pod: &PodInfo, _scores: &mut [NodeScore]) {}
}

/// Extension points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Point {
    PreFilter,
    Filter,
    PostFilter,
    PreScore,
    Score,
}

/// Scales scores so the highest becomes MAX_NODE_SCORE (or the lowest, reversed), as
/// upstream's `DefaultNormalizeScore`.
pub fn default_normalize_score(max_priority: i64, reverse: bool, scores: &mut [NodeScore]) {
    let max = scores.iter().map(|s| s.score).max().unwrap_or(0);
    if max == 0 {
        if reverse {
            for s in scores.iter_mut() {
                s.score = max_priority;
            }
        }
        return;
    }
    for s in scores.iter_mut() {
        s.score = max_priority * s.score / max;
        if reverse {
            s.score = max_priority - s.score;
        }
    }
}
