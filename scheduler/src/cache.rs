//! The scheduler cache: every node with the pods counted on it — pods the informer shows
//! bound, and pods this scheduler has *assumed* onto a node while their binding is in
//! flight or not yet echoed by the watch. A cycle reads an immutable [`Snapshot`]; writes
//! copy only what a running cycle still holds (copy-on-write `Arc`s).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::framework::{ClusterEvent, NodeData, NodeInfo, PodInfo, Snapshot};

struct CachedPod {
    pod: Arc<PodInfo>,
    node: String,
    /// Placed by this scheduler and not yet seen bound through the watch.
    assumed: bool,
}

#[derive(Default)]
pub struct Cache {
    nodes: Vec<Arc<NodeInfo>>,
    index: HashMap<String, usize>,
    /// Indices of NodeInfos changed since the scheduling loop's snapshot was last updated.
    dirty: Vec<usize>,
    /// A node was added or removed (indices moved): the next update copies everything.
    structure_changed: bool,
    pods: HashMap<String, CachedPod>,
    image_nodes: Arc<HashMap<String, usize>>,
    namespace_labels: Arc<HashMap<String, BTreeMap<String, String>>>,
    num_nodes: usize,
    pods_with_affinity: usize,
    pods_with_required_anti_affinity: usize,
}

impl Cache {
    /// A fresh snapshot (copies the node list).
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot {
            nodes: Arc::new(self.nodes.clone()),
            index: Arc::new(self.index.clone()),
            ..Snapshot::default()
        };
        self.fill_cluster_facts(&mut snapshot);
        snapshot
    }

    /// Brings the scheduling loop's snapshot up to date, copying only the NodeInfos that
    /// changed since the last call (upstream's `UpdateSnapshot`): a cycle costs what
    /// changed, not the size of the cluster.
    pub fn update_snapshot(&mut self, snapshot: &mut Snapshot) {
        if self.structure_changed || snapshot.nodes.len() != self.nodes.len() {
            snapshot.nodes = Arc::new(self.nodes.clone());
            snapshot.index = Arc::new(self.index.clone());
            self.structure_changed = false;
        } else if !self.dirty.is_empty() {
            let nodes = Arc::make_mut(&mut snapshot.nodes);
            for &i in &self.dirty {
                nodes[i] = self.nodes[i].clone();
            }
        }
        self.dirty.clear();
        self.fill_cluster_facts(snapshot);
    }

    fn fill_cluster_facts(&self, snapshot: &mut Snapshot) {
        snapshot.num_nodes = self.num_nodes;
        snapshot.image_nodes = self.image_nodes.clone();
        snapshot.namespace_labels = self.namespace_labels.clone();
        snapshot.pods_with_affinity = self.pods_with_affinity;
        snapshot.pods_with_required_anti_affinity = self.pods_with_required_anti_affinity;
    }

    pub fn num_nodes(&self) -> usize {
        self.num_nodes
    }

    pub fn num_pods(&self) -> usize {
        self.pods.len()
    }

    pub fn is_assumed(&self, uid: &str) -> bool {
        self.pods.get(uid).is_some_and(|p| p.assumed)
    }

    /// The NodeInfo for `name`, created as a placeholder if absent, for writing.
    fn node_mut(&mut self, name: &str) -> &mut NodeInfo {
        let i = match self.index.get(name) {
            Some(i) => *i,
            None => {
                self.nodes.push(Arc::new(NodeInfo::new(name.to_string())));
                self.index.insert(name.to_string(), self.nodes.len() - 1);
                self.structure_changed = true;
                self.nodes.len() - 1
            }
        };
        if !self.structure_changed && self.dirty.last() != Some(&i) {
            self.dirty.push(i);
            if self.dirty.len() > self.nodes.len() {
                // No cycle ran for a while: a full copy is cheaper than the list.
                self.structure_changed = true;
                self.dirty.clear();
            }
        }
        let info = Arc::make_mut(&mut self.nodes[i]);
        info.generation = crate::framework::types::next_generation();
        info
    }

    fn drop_node_if_empty(&mut self, name: &str) {
        let Some(&i) = self.index.get(name) else {
            return;
        };
        let info = &self.nodes[i];
        if info.node.is_some() || !info.pods.is_empty() {
            return;
        }
        self.nodes.swap_remove(i);
        self.index.remove(name);
        if let Some(moved) = self.nodes.get(i) {
            self.index.insert(moved.name.clone(), i);
        }
        self.structure_changed = true;
        self.dirty.clear();
    }

    /// Adds or replaces a node; returns the events the change amounts to.
    pub fn set_node(&mut self, data: NodeData) -> Vec<ClusterEvent> {
        let name = data.name.clone();
        let old = self
            .index
            .get(&name)
            .and_then(|i| self.nodes[*i].node.clone());
        let events = match &old {
            None => vec![ClusterEvent::NodeAdd],
            Some(old) => node_change_events(old, &data),
        };
        if old.is_none() {
            self.num_nodes += 1;
        }
        let images = Arc::make_mut(&mut self.image_nodes);
        if let Some(old) = &old {
            for image in old.images.keys() {
                if let Some(n) = images.get_mut(image) {
                    *n -= 1;
                    if *n == 0 {
                        images.remove(image);
                    }
                }
            }
        }
        for image in data.images.keys() {
            *images.entry(image.clone()).or_default() += 1;
        }
        self.node_mut(&name).node = Some(Arc::new(data));
        events
    }

    pub fn remove_node(&mut self, name: &str) {
        let Some(&i) = self.index.get(name) else {
            return;
        };
        let Some(old) = self.nodes[i].node.clone() else {
            return;
        };
        self.num_nodes -= 1;
        let images = Arc::make_mut(&mut self.image_nodes);
        for image in old.images.keys() {
            if let Some(n) = images.get_mut(image) {
                *n -= 1;
                if *n == 0 {
                    images.remove(image);
                }
            }
        }
        self.node_mut(name).node = None;
        self.drop_node_if_empty(name);
    }

    pub fn node_names(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.node.is_some())
            .map(|n| n.name.clone())
            .collect()
    }

    fn add_to_node(&mut self, pod: Arc<PodInfo>, node: &str) {
        if pod.has_affinity() {
            self.pods_with_affinity += 1;
        }
        if !pod.required_anti_affinity_terms.is_empty() {
            self.pods_with_required_anti_affinity += 1;
        }
        self.node_mut(node).add_pod(pod);
    }

    fn remove_from_node(&mut self, cached: &CachedPod) {
        if cached.pod.has_affinity() {
            self.pods_with_affinity -= 1;
        }
        if !cached.pod.required_anti_affinity_terms.is_empty() {
            self.pods_with_required_anti_affinity -= 1;
        }
        if self.index.contains_key(&cached.node) {
            self.node_mut(&cached.node).remove_pod(&cached.pod.uid);
            self.drop_node_if_empty(&cached.node.clone());
        }
    }

    /// Counts a pod this scheduler just placed, before the apiserver confirms the binding.
    pub fn assume(&mut self, pod: Arc<PodInfo>) {
        let node = pod.node_name.clone().unwrap_or_default();
        if let Some(old) = self.pods.remove(&pod.uid) {
            self.remove_from_node(&old);
        }
        self.add_to_node(pod.clone(), &node);
        self.pods.insert(
            pod.uid.clone(),
            CachedPod {
                pod,
                node,
                assumed: true,
            },
        );
    }

    /// Undoes an assumption after a failed binding.
    pub fn forget(&mut self, uid: &str) {
        if self.pods.get(uid).is_some_and(|p| p.assumed) {
            let old = self.pods.remove(uid).expect("checked");
            self.remove_from_node(&old);
        }
    }

    /// A pod the informer shows bound to a node (new, changed, or confirming an assumption).
    /// Returns whether it was already counted (assumed or known).
    pub fn set_pod(&mut self, pod: Arc<PodInfo>) -> bool {
        let Some(node) = pod.node_name.clone() else {
            return false;
        };
        let known = match self.pods.remove(&pod.uid) {
            Some(old) => {
                self.remove_from_node(&old);
                true
            }
            None => false,
        };
        self.add_to_node(pod.clone(), &node);
        self.pods.insert(
            pod.uid.clone(),
            CachedPod {
                pod,
                node,
                assumed: false,
            },
        );
        known
    }

    pub fn remove_pod(&mut self, uid: &str) -> bool {
        match self.pods.remove(uid) {
            Some(old) => {
                self.remove_from_node(&old);
                true
            }
            None => false,
        }
    }

    /// The labels of a cached pod, if known.
    pub fn pod_labels(&self, uid: &str) -> Option<std::collections::BTreeMap<String, String>> {
        self.pods.get(uid).map(|p| p.pod.labels.clone())
    }

    /// uids of the pods the informer has confirmed (not assumed), for relist reconciliation.
    pub fn confirmed_pod_uids(&self) -> Vec<String> {
        self.pods
            .iter()
            .filter(|(_, p)| !p.assumed)
            .map(|(uid, _)| uid.clone())
            .collect()
    }

    pub fn set_namespace(&mut self, name: String, labels: BTreeMap<String, String>) -> bool {
        let map = Arc::make_mut(&mut self.namespace_labels);
        map.insert(name, labels.clone()) != Some(labels)
    }

    pub fn remove_namespace(&mut self, name: &str) {
        Arc::make_mut(&mut self.namespace_labels).remove(name);
    }

    pub fn namespace_names(&self) -> Vec<String> {
        self.namespace_labels.keys().cloned().collect()
    }
}

/// Which scheduling-relevant parts of a node changed.
fn node_change_events(old: &NodeData, new: &NodeData) -> Vec<ClusterEvent> {
    let mut events = Vec::new();
    if old.allocatable != new.allocatable {
        events.push(ClusterEvent::NodeAllocatableChange);
    }
    if old.labels != new.labels {
        events.push(ClusterEvent::NodeLabelChange);
    }
    if old.taints != new.taints {
        events.push(ClusterEvent::NodeTaintChange);
    }
    if old.unschedulable != new.unschedulable {
        events.push(ClusterEvent::NodeSpecUnschedulableChange);
    }
    if old.images != new.images {
        events.push(ClusterEvent::NodeOtherChange);
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::named_pod;
    use serde_json::json;

    fn node(name: &str) -> NodeData {
        NodeData {
            name: name.into(),
            ..NodeData::default()
        }
    }

    fn pod_on(name: &str, node: &str) -> Arc<PodInfo> {
        let mut p = named_pod(
            name,
            json!({}),
            json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}),
        );
        p.node_name = Some(node.into());
        Arc::new(p)
    }

    #[test]
    fn assumed_pods_count_until_forgotten_and_confirmation_keeps_one_copy() {
        let mut cache = Cache::default();
        cache.set_node(node("a"));
        cache.assume(pod_on("p", "a"));
        assert_eq!(cache.snapshot().get("a").unwrap().requested.milli_cpu, 1000);
        assert!(cache.is_assumed("uid-p"));
        // The watch confirms the binding: still counted once.
        assert!(cache.set_pod(pod_on("p", "a")));
        assert!(!cache.is_assumed("uid-p"));
        assert_eq!(cache.snapshot().get("a").unwrap().pods.len(), 1);
        cache.forget("uid-p"); // no-op once confirmed
        assert_eq!(cache.snapshot().get("a").unwrap().pods.len(), 1);
        cache.assume(pod_on("q", "a"));
        cache.forget("uid-q");
        assert_eq!(cache.snapshot().get("a").unwrap().requested.milli_cpu, 1000);
    }

    #[test]
    fn a_snapshot_does_not_change_under_a_running_cycle() {
        let mut cache = Cache::default();
        cache.set_node(node("a"));
        let before = cache.snapshot();
        cache.assume(pod_on("p", "a"));
        assert_eq!(before.get("a").unwrap().pods.len(), 0);
        assert_eq!(cache.snapshot().get("a").unwrap().pods.len(), 1);
    }

    #[test]
    fn the_loops_snapshot_takes_only_what_changed() {
        let mut cache = Cache::default();
        cache.set_node(node("a"));
        cache.set_node(node("b"));
        let mut snap = Snapshot::default();
        cache.update_snapshot(&mut snap);
        assert_eq!(snap.num_nodes, 2);
        let b_before = snap.get("b").unwrap().clone();
        cache.assume(pod_on("p", "a"));
        cache.update_snapshot(&mut snap);
        assert_eq!(snap.get("a").unwrap().pods.len(), 1);
        // b did not change: the snapshot still holds the very same NodeInfo.
        assert!(Arc::ptr_eq(snap.get("b").unwrap(), &b_before));
        cache.remove_node("b");
        cache.update_snapshot(&mut snap);
        assert_eq!(snap.num_nodes, 1);
        assert!(snap.get("b").is_none());
        assert_eq!(snap.get("a").unwrap().pods.len(), 1);
    }

    #[test]
    fn pods_may_arrive_before_their_node() {
        let mut cache = Cache::default();
        cache.set_pod(pod_on("p", "late"));
        assert_eq!(cache.num_nodes(), 0);
        assert_eq!(cache.snapshot().node_infos().count(), 0);
        assert_eq!(cache.set_node(node("late")), vec![ClusterEvent::NodeAdd]);
        assert_eq!(cache.snapshot().get("late").unwrap().pods.len(), 1);
        cache.remove_node("late");
        cache.remove_pod("uid-p");
        assert!(cache.snapshot().get("late").is_none());
    }

    #[test]
    fn node_changes_name_their_events_and_image_counts_follow() {
        let mut cache = Cache::default();
        let mut a = node("a");
        a.images.insert("img:1".into(), 10);
        cache.set_node(a.clone());
        cache.set_node(NodeData {
            name: "b".into(),
            images: a.images.clone(),
            ..NodeData::default()
        });
        assert_eq!(cache.snapshot().image_nodes["img:1"], 2);
        a.unschedulable = true;
        a.labels.insert("zone".into(), "z".into());
        assert_eq!(
            cache.set_node(a),
            vec![
                ClusterEvent::NodeLabelChange,
                ClusterEvent::NodeSpecUnschedulableChange
            ]
        );
        cache.remove_node("b");
        assert_eq!(cache.snapshot().image_nodes["img:1"], 1);
        assert_eq!(cache.node_names(), vec!["a".to_string()]);
    }
}
