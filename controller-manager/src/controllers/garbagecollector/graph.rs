//! The dependency graph (upstream's `GraphBuilder` and its `uidToNode`): every object of
//! every watched resource, by uid, with just what the collector decides on — owners,
//! the finalizers it acts on, whether it is being deleted — and, per owner uid, the uids
//! of its dependents (an owner need not be known to have dependents).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::ApiResource;

use crate::cache::Shared;

pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
pub const ORPHAN_FINALIZER: &str = "orphan";

/// One ownerReference, as the collector needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: String,
    /// Shared: every dependent of a kind names the same apiVersion and kind.
    pub api_version: Shared,
    pub kind: Shared,
    pub name: String,
    pub block_owner_deletion: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub resource: Arc<ApiResource>,
    pub namespace: Option<Shared>,
    pub name: String,
    pub owners: Vec<Owner>,
    pub being_deleted: bool,
    pub foreground: bool,
    pub orphan: bool,
}

impl Node {
    pub fn from_meta(resource: Arc<ApiResource>, meta: &ObjectMeta) -> Option<(String, Node)> {
        let uid = meta.uid.clone()?;
        let finalizers = meta.finalizers.as_deref().unwrap_or_default();
        let node = Node {
            resource,
            namespace: meta.namespace.as_deref().map(Shared::new),
            name: meta.name.clone().unwrap_or_default(),
            owners: owners(meta),
            being_deleted: meta.deletion_timestamp.is_some(),
            foreground: finalizers.iter().any(|f| f == FOREGROUND_FINALIZER),
            orphan: finalizers.iter().any(|f| f == ORPHAN_FINALIZER),
        };
        Some((uid, node))
    }

    /// Being deleted in the foreground: its dependents go first.
    pub fn deleting_dependents(&self) -> bool {
        self.being_deleted && self.foreground
    }

    /// Being deleted with its dependents orphaned.
    pub fn orphaning_dependents(&self) -> bool {
        self.being_deleted && self.orphan
    }
}

pub fn owners(meta: &ObjectMeta) -> Vec<Owner> {
    // From the slice, whose exact length sizes the Vec: through `Option::iter().flatten()`
    // it would start at four Owners (288 bytes) for the usual one, in every graph node.
    let refs = meta.owner_references.as_deref().unwrap_or_default();
    refs.iter()
        .map(|r| Owner {
            uid: r.uid.clone(),
            api_version: Shared::new(&r.api_version),
            kind: Shared::new(&r.kind),
            name: r.name.clone(),
            block_owner_deletion: r.block_owner_deletion == Some(true),
        })
        .collect()
}

/// What a change to the graph asks the collector to look at.
#[derive(Debug, Default, PartialEq)]
pub struct Work {
    pub attempt_to_delete: Vec<String>,
    pub attempt_to_orphan: Vec<String>,
}

#[derive(Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.nodes.contains_key(uid)
    }

    pub fn dependents(&self, uid: &str) -> Vec<String> {
        self.dependents
            .get(uid)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn has_dependents(&self, uid: &str) -> bool {
        self.dependents.get(uid).is_some_and(|d| !d.is_empty())
    }

    /// The uids of the objects of one resource, for a relist to find what vanished.
    pub fn uids_of(&self, resource: &ApiResource) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| *n.resource == *resource)
            .map(|(uid, _)| uid.clone())
            .collect()
    }

    /// An object was added or changed (upstream's processGraphChanges for add/update).
    pub fn upsert(&mut self, uid: String, node: Node) -> Work {
        let mut work = Work::default();
        let old = self.nodes.get(&uid).cloned();
        let old_owners = old.as_ref().map(|n| n.owners.clone()).unwrap_or_default();
        for o in &old_owners {
            if !node.owners.iter().any(|n| n.uid == o.uid) {
                self.unlink(&o.uid, &uid);
            }
        }
        for o in &node.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        // An owner waiting on this dependent may wait no more: the reference went, or it
        // stopped blocking.
        for o in &old_owners {
            let still_blocking = node
                .owners
                .iter()
                .any(|n| n.uid == o.uid && n.block_owner_deletion);
            if o.block_owner_deletion && !still_blocking && self.deleting_dependents(&o.uid) {
                work.attempt_to_delete.push(o.uid.clone());
            }
        }
        // A dependent whose owner is unknown (perhaps dangling) or deleting in the
        // foreground needs a look.
        if node
            .owners
            .iter()
            .any(|o| !self.contains(&o.uid) || self.deleting_dependents(&o.uid))
        {
            work.attempt_to_delete.push(uid.clone());
        }
        if node.orphaning_dependents() {
            work.attempt_to_orphan.push(uid.clone());
        }
        if node.deleting_dependents() {
            work.attempt_to_delete.extend(self.dependents(&uid));
            work.attempt_to_delete.push(uid.clone());
        }
        self.nodes.insert(uid, node);
        work
    }

    /// An object is gone: its dependents may now be dangling, and an owner deleting in
    /// the foreground may have lost its last blocking dependent.
    pub fn remove(&mut self, uid: &str) -> Work {
        let mut work = Work::default();
        let Some(node) = self.nodes.remove(uid) else {
            return work;
        };
        for o in &node.owners {
            self.unlink(&o.uid, uid);
            if self.deleting_dependents(&o.uid) {
                work.attempt_to_delete.push(o.uid.clone());
            }
        }
        work.attempt_to_delete.extend(self.dependents(uid));
        work
    }

    /// What to look at once the graph is first complete: dependents whose owners are
    /// not in it, and owners left mid-deletion.
    pub fn initial_work(&self) -> Work {
        let mut work = Work::default();
        for (uid, node) in &self.nodes {
            if node
                .owners
                .iter()
                .any(|o| !self.contains(&o.uid) || self.deleting_dependents(&o.uid))
            {
                work.attempt_to_delete.push(uid.clone());
            }
            if node.orphaning_dependents() {
                work.attempt_to_orphan.push(uid.clone());
            }
            if node.deleting_dependents() {
                work.attempt_to_delete.push(uid.clone());
            }
        }
        work
    }

    /// Dependents whose reference to `owner` has blockOwnerDeletion set.
    pub fn blocking_dependents(&self, owner: &str) -> Vec<(String, &Node)> {
        self.dependents
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|d| Some((d.clone(), self.nodes.get(d)?)))
            .filter(|(_, n)| {
                n.owners
                    .iter()
                    .any(|o| o.uid == owner && o.block_owner_deletion)
            })
            .collect()
    }

    fn deleting_dependents(&self, uid: &str) -> bool {
        self.nodes.get(uid).is_some_and(Node::deleting_dependents)
    }

    fn unlink(&mut self, owner: &str, dependent: &str) {
        if let Some(d) = self.dependents.get_mut(owner) {
            d.remove(dependent);
            if d.is_empty() {
                self.dependents.remove(owner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

    fn meta(uid: &str, owners: &[(&str, bool)], finalizers: &[&str], deleting: bool) -> ObjectMeta {
        ObjectMeta {
            uid: Some(uid.into()),
            name: Some(format!("cm-{uid}")),
            namespace: Some("default".into()),
            owner_references: Some(
                owners
                    .iter()
                    .map(|(o, block)| OwnerReference {
                        api_version: "v1".into(),
                        kind: "ConfigMap".into(),
                        name: format!("cm-{o}"),
                        uid: o.to_string(),
                        block_owner_deletion: Some(*block),
                        controller: None,
                    })
                    .collect(),
            ),
            finalizers: Some(finalizers.iter().map(|f| f.to_string()).collect()),
            deletion_timestamp: deleting.then(|| Time(jiff::Timestamp::now())),
            ..ObjectMeta::default()
        }
    }

    fn put(g: &mut Graph, m: ObjectMeta) -> Work {
        let r = Arc::new(ApiResource::erase::<ConfigMap>(&()));
        let (uid, node) = Node::from_meta(r, &m).unwrap();
        g.upsert(uid, node)
    }

    #[test]
    fn dangling_and_deleted_owners_queue_their_dependents() {
        let mut g = Graph::default();
        // An owner not (yet) seen: the dependent gets a look.
        assert_eq!(
            put(&mut g, meta("d", &[("o", false)], &[], false)).attempt_to_delete,
            ["d"]
        );
        assert_eq!(put(&mut g, meta("o", &[], &[], false)), Work::default());
        assert_eq!(g.dependents("o"), ["d"]);
        // The owner goes: its dependent is looked at again.
        assert_eq!(g.remove("o").attempt_to_delete, ["d"]);
        // The dependent drops the reference: the owner has no dependents left.
        put(&mut g, meta("d", &[], &[], false));
        assert!(!g.has_dependents("o"));
    }

    #[test]
    fn foreground_deletion_waits_for_blocking_dependents() {
        let mut g = Graph::default();
        put(&mut g, meta("o", &[], &[], false));
        put(&mut g, meta("a", &[("o", true)], &[], false));
        put(&mut g, meta("b", &[("o", false)], &[], false));
        let mut work = put(&mut g, meta("o", &[], &[FOREGROUND_FINALIZER], true));
        work.attempt_to_delete.sort();
        assert_eq!(work.attempt_to_delete, ["a", "b", "o"]);
        let blocking: Vec<_> = g
            .blocking_dependents("o")
            .into_iter()
            .map(|b| b.0)
            .collect();
        assert_eq!(blocking, ["a"]);
        // The blocking dependent going away brings the owner back.
        assert_eq!(g.remove("a").attempt_to_delete, ["o"]);
        assert!(g.blocking_dependents("o").is_empty());
    }

    #[test]
    fn orphaning_owner_is_queued_for_orphaning() {
        let mut g = Graph::default();
        put(&mut g, meta("o", &[], &[], false));
        let work = put(&mut g, meta("o", &[], &[ORPHAN_FINALIZER], true));
        assert_eq!(work.attempt_to_orphan, ["o"]);
        assert!(g
            .initial_work()
            .attempt_to_orphan
            .contains(&"o".to_string()));
    }
}
