//! The scheduling queue (upstream `PriorityQueue`): pods waiting to be tried.
//!
//! - **active**: ready now, highest priority first, then oldest;
//! - **backoff**: failed recently, waiting 1 s doubling to 10 s per attempt;
//! - **unschedulable**: failed and waiting for a cluster event that could help (a node
//!   added or changed, a pod deleted), or for the 5-minute flush;
//! - **gated**: pods with `schedulingGates`, not tried until the gates are gone.
//!
//! Entries live in one map; the heaps hold keys with a sequence number, and stale heap
//! entries are skipped when popped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::framework::{ClusterEvent, PodInfo};

/// How long a pod may sit in unschedulable before it is retried anyway (upstream
/// `podMaxInUnschedulablePodsDuration`).
pub const MAX_IN_UNSCHEDULABLE: Duration = Duration::from_secs(5 * 60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    Active,
    Backoff,
    Unschedulable,
    Gated,
}

/// A pod handed to a scheduling cycle.
#[derive(Clone, Debug)]
pub struct QueuedPod {
    pub pod: Arc<PodInfo>,
    /// Scheduling attempts so far, this one included once popped.
    pub attempts: u32,
    /// When the pod entered the queue (orders pods of equal priority).
    pub timestamp: Instant,
    /// When the first attempt started (the e2e scheduling latency).
    pub initial_attempt: Option<Instant>,
    /// Plugins that rejected the pod in its last attempt.
    pub rejected_by: HashSet<&'static str>,
}

struct Entry {
    queued: QueuedPod,
    location: Location,
    seq: u64,
    /// When the pod's backoff ends (set when an attempt fails).
    backoff_until: Instant,
    /// When it moved to unschedulable.
    since: Instant,
}

/// A pod being scheduled right now: changes that arrive meanwhile are remembered so the
/// failed attempt is retried at once with the new spec.
struct InFlight {
    updated: Option<Arc<PodInfo>>,
    deleted: bool,
}

pub struct SchedulingQueue {
    entries: HashMap<String, Entry>,
    active: BinaryHeap<(i32, Reverse<Instant>, Reverse<u64>, String)>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    in_flight: HashMap<String, InFlight>,
    seq: u64,
    /// Cycles started (popped pods).
    pub scheduling_cycle: u64,
    /// The cycle during which the last move event arrived: pods failing in a cycle that
    /// started before it go to backoff, not unschedulable, since the event may help them.
    move_request_cycle: u64,
    initial_backoff: Duration,
    max_backoff: Duration,
    /// Node name → pods nominated to it by preemption (or found with nominatedNodeName).
    nominated: HashMap<String, Vec<Arc<PodInfo>>>,
    nominated_by_uid: HashMap<String, String>,
    /// Entries per location (active, backoff, unschedulable, gated), kept as entries move
    /// so the pending-pods gauges cost nothing.
    counts: [usize; 4],
    /// uids of the unschedulable entries, so an event scans only those.
    unschedulable: HashSet<String>,
}

fn slot(location: Location) -> usize {
    match location {
        Location::Active => 0,
        Location::Backoff => 1,
        Location::Unschedulable => 2,
        Location::Gated => 3,
    }
}

impl SchedulingQueue {
    pub fn new(initial_backoff: Duration, max_backoff: Duration) -> SchedulingQueue {
        SchedulingQueue {
            entries: HashMap::new(),
            active: BinaryHeap::new(),
            backoff: BinaryHeap::new(),
            in_flight: HashMap::new(),
            seq: 0,
            scheduling_cycle: 0,
            move_request_cycle: 0,
            initial_backoff,
            max_backoff,
            nominated: HashMap::new(),
            nominated_by_uid: HashMap::new(),
            counts: [0; 4],
            unschedulable: HashSet::new(),
        }
    }

    /// Removes an entry from wherever it is.
    fn take(&mut self, uid: &str) -> Option<Entry> {
        let entry = self.entries.remove(uid)?;
        self.counts[slot(entry.location)] -= 1;
        if entry.location == Location::Unschedulable {
            self.unschedulable.remove(uid);
        }
        Some(entry)
    }

    fn backoff_duration(&self, attempts: u32) -> Duration {
        let mut d = self.initial_backoff;
        for _ in 1..attempts {
            d = d.saturating_mul(2);
            if d >= self.max_backoff {
                return self.max_backoff;
            }
        }
        d.min(self.max_backoff)
    }

    fn place(&mut self, uid: String, mut entry: Entry, location: Location, now: Instant) {
        self.seq += 1;
        entry.seq = self.seq;
        entry.location = location;
        match location {
            Location::Active => self.active.push((
                entry.queued.pod.priority,
                Reverse(entry.queued.timestamp),
                Reverse(entry.seq),
                uid.clone(),
            )),
            Location::Backoff => {
                self.backoff
                    .push(Reverse((entry.backoff_until, entry.seq, uid.clone())))
            }
            Location::Unschedulable => entry.since = now,
            Location::Gated => {}
        }
        self.counts[slot(location)] += 1;
        if location == Location::Unschedulable {
            self.unschedulable.insert(uid.clone());
        }
        self.entries.insert(uid, entry);
    }

    fn update_nominated(&mut self, pod: &Arc<PodInfo>) {
        self.remove_nominated(&pod.uid);
        if let Some(node) = &pod.nominated_node_name {
            self.nominated
                .entry(node.clone())
                .or_default()
                .push(pod.clone());
            self.nominated_by_uid.insert(pod.uid.clone(), node.clone());
        }
    }

    fn remove_nominated(&mut self, uid: &str) {
        if let Some(node) = self.nominated_by_uid.remove(uid) {
            if let Some(list) = self.nominated.get_mut(&node) {
                list.retain(|p| p.uid != uid);
                if list.is_empty() {
                    self.nominated.remove(&node);
                }
            }
        }
    }

    /// Records the node preemption chose for a pod (until it is bound or deleted).
    pub fn nominate(&mut self, pod: &Arc<PodInfo>, node: &str) {
        let mut nominated = (**pod).clone();
        nominated.nominated_node_name = Some(node.to_string());
        self.update_nominated(&Arc::new(nominated));
    }

    /// Drops the nominations of pods below `priority` on `node` (a preemptor took their
    /// place, as upstream's `getLowerPriorityNominatedPods`); returns them.
    pub fn clear_lower_nominations(&mut self, node: &str, priority: i32) -> Vec<Arc<PodInfo>> {
        let lower: Vec<Arc<PodInfo>> = self
            .nominated
            .get(node)
            .map(|pods| {
                pods.iter()
                    .filter(|p| p.priority < priority)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for p in &lower {
            self.remove_nominated(&p.uid);
        }
        lower
    }

    /// Pods nominated to each node, for a cycle (empty almost always).
    pub fn nominated_pods(&self) -> HashMap<String, Vec<Arc<PodInfo>>> {
        self.nominated.clone()
    }

    /// A new pending pod, or a change to one.
    pub fn add_or_update(&mut self, pod: Arc<PodInfo>, now: Instant) {
        let uid = pod.uid.clone();
        self.update_nominated(&pod);
        if let Some(flight) = self.in_flight.get_mut(&uid) {
            flight.updated = Some(pod);
            return;
        }
        let gated = pod.scheduling_gated;
        match self.take(&uid) {
            None => {
                let entry = Entry {
                    queued: QueuedPod {
                        pod,
                        attempts: 0,
                        timestamp: now,
                        initial_attempt: None,
                        rejected_by: HashSet::new(),
                    },
                    location: Location::Active,
                    seq: 0,
                    backoff_until: now,
                    since: now,
                };
                let location = if gated {
                    Location::Gated
                } else {
                    Location::Active
                };
                self.place(uid, entry, location, now);
            }
            Some(mut entry) => {
                let spec_changed = entry.queued.pod.update_key != pod.update_key;
                entry.queued.pod = pod;
                let location = match entry.location {
                    _ if gated => Location::Gated,
                    // An update may make the pod schedulable: retry it (after its backoff).
                    Location::Unschedulable | Location::Gated if spec_changed => {
                        if entry.backoff_until > now {
                            Location::Backoff
                        } else {
                            Location::Active
                        }
                    }
                    other => other,
                };
                self.place(uid, entry, location, now);
            }
        }
    }

    /// The pod was deleted, bound elsewhere, or is no longer ours.
    pub fn delete(&mut self, uid: &str) {
        self.remove_nominated(uid);
        if let Some(flight) = self.in_flight.get_mut(uid) {
            flight.deleted = true;
        }
        self.take(uid);
    }

    /// The next pod to schedule, if one is ready; moves expired backoffs to active first.
    pub fn pop(&mut self, now: Instant) -> Option<QueuedPod> {
        self.flush_backoff(now);
        while let Some((_, _, Reverse(seq), uid)) = self.active.pop() {
            let valid = self
                .entries
                .get(&uid)
                .is_some_and(|e| e.seq == seq && e.location == Location::Active);
            if !valid {
                continue;
            }
            let mut entry = self.take(&uid).expect("checked");
            entry.queued.attempts += 1;
            entry.queued.initial_attempt.get_or_insert(now);
            self.scheduling_cycle += 1;
            self.in_flight.insert(
                uid,
                InFlight {
                    updated: None,
                    deleted: false,
                },
            );
            return Some(entry.queued);
        }
        None
    }

    /// When the earliest backoff ends, for the caller to sleep until.
    pub fn next_backoff_expiry(&self) -> Option<Instant> {
        self.backoff.peek().map(|Reverse((t, _, _))| *t)
    }

    fn flush_backoff(&mut self, now: Instant) {
        while let Some(Reverse((until, seq, uid))) = self.backoff.peek().cloned() {
            if until > now {
                break;
            }
            self.backoff.pop();
            let valid = self
                .entries
                .get(&uid)
                .is_some_and(|e| e.seq == seq && e.location == Location::Backoff);
            if valid {
                let entry = self.take(&uid).expect("checked");
                self.place(uid, entry, Location::Active, now);
            }
        }
    }

    /// The cycle for this pod ended with it placed (assumed): forget it.
    pub fn done(&mut self, uid: &str) {
        self.in_flight.remove(uid);
        self.remove_nominated(uid);
    }

    /// The cycle failed. `unschedulable`: plugins rejected it (wait for an event); else an
    /// error (retry after backoff).
    pub fn requeue_failed(
        &mut self,
        mut queued: QueuedPod,
        cycle: u64,
        unschedulable: bool,
        now: Instant,
    ) {
        let uid = queued.pod.uid.clone();
        let Some(flight) = self.in_flight.remove(&uid) else {
            return;
        };
        if flight.deleted {
            return;
        }
        let changed = flight
            .updated
            .as_ref()
            .is_some_and(|u| u.update_key != queued.pod.update_key);
        if let Some(updated) = flight.updated {
            if updated.node_name.is_some() {
                return; // bound by someone else meanwhile
            }
            queued.pod = updated;
        }
        let backoff_until = now + self.backoff_duration(queued.attempts);
        let entry = Entry {
            queued,
            location: Location::Backoff,
            seq: 0,
            backoff_until,
            since: now,
        };
        let location = if entry.queued.pod.scheduling_gated {
            Location::Gated
        } else if changed || !unschedulable || self.move_request_cycle >= cycle {
            Location::Backoff
        } else {
            Location::Unschedulable
        };
        self.place(uid, entry, location, now);
    }

    /// A binding failed after the cycle ended: retry after backoff, unless the pod has
    /// been queued again (or deleted) meanwhile.
    pub fn requeue_after_bind_failure(&mut self, queued: QueuedPod, now: Instant) {
        let uid = queued.pod.uid.clone();
        if self.entries.contains_key(&uid) || self.in_flight.contains_key(&uid) {
            return;
        }
        let backoff_until = now + self.backoff_duration(queued.attempts);
        let entry = Entry {
            queued,
            location: Location::Backoff,
            seq: 0,
            backoff_until,
            since: now,
        };
        self.place(uid, entry, Location::Backoff, now);
    }

    /// A cluster event: unschedulable pods that `helps` says it may help move to backoff
    /// (if still backing off) or active.
    pub fn move_on_event(
        &mut self,
        event: ClusterEvent,
        now: Instant,
        helps: impl Fn(&QueuedPod, ClusterEvent) -> bool,
    ) {
        self.move_request_cycle = self.scheduling_cycle;
        let moving: Vec<String> = self
            .unschedulable
            .iter()
            .filter(|uid| {
                self.entries
                    .get(*uid)
                    .is_some_and(|e| helps(&e.queued, event))
            })
            .cloned()
            .collect();
        for uid in moving {
            let entry = self.take(&uid).expect("listed");
            let location = if entry.backoff_until > now {
                Location::Backoff
            } else {
                Location::Active
            };
            self.place(uid, entry, location, now);
        }
    }

    /// Retries pods that have waited in unschedulable longer than [`MAX_IN_UNSCHEDULABLE`].
    pub fn flush_unschedulable(&mut self, now: Instant) {
        let stale: Vec<String> = self
            .unschedulable
            .iter()
            .filter(|uid| {
                self.entries
                    .get(*uid)
                    .is_some_and(|e| now.duration_since(e.since) >= MAX_IN_UNSCHEDULABLE)
            })
            .cloned()
            .collect();
        for uid in stale {
            let entry = self.take(&uid).expect("listed");
            let location = if entry.backoff_until > now {
                Location::Backoff
            } else {
                Location::Active
            };
            self.place(uid, entry, location, now);
        }
    }

    /// Pending pods per sub-queue: (active, backoff, unschedulable, gated).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        (
            self.counts[0],
            self.counts[1],
            self.counts[2],
            self.counts[3],
        )
    }

    pub fn location(&self, uid: &str) -> Option<Location> {
        self.entries.get(uid).map(|e| e.location)
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.entries.contains_key(uid) || self.in_flight.contains_key(uid)
    }

    /// uids known to the queue (queued or in flight), for relist reconciliation.
    pub fn uids(&self) -> Vec<String> {
        self.entries
            .keys()
            .chain(self.in_flight.keys())
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::named_pod;
    use serde_json::json;

    fn pod(name: &str, priority: i32) -> Arc<PodInfo> {
        let mut p = named_pod(name, json!({}), json!({"containers": [{"name": "c"}]}));
        p.shape_mut().priority = priority;
        p.update_key = 1;
        Arc::new(p)
    }

    fn queue() -> SchedulingQueue {
        SchedulingQueue::new(Duration::from_secs(1), Duration::from_secs(10))
    }

    #[test]
    fn pops_by_priority_then_age() {
        let mut q = queue();
        let t0 = Instant::now();
        q.add_or_update(pod("old-low", 0), t0);
        q.add_or_update(pod("high", 10), t0 + Duration::from_millis(1));
        q.add_or_update(pod("new-low", 0), t0 + Duration::from_millis(2));
        let order: Vec<String> =
            std::iter::from_fn(|| q.pop(t0).map(|p| p.pod.name.clone())).collect();
        assert_eq!(order, ["high", "old-low", "new-low"]);
    }

    #[test]
    fn backoff_doubles_from_one_to_ten_seconds() {
        let q = queue();
        let secs: Vec<u64> = (1..=6).map(|a| q.backoff_duration(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn unschedulable_pods_wait_for_a_helpful_event_then_back_off() {
        let mut q = queue();
        let t0 = Instant::now();
        q.add_or_update(pod("p", 0), t0);
        let popped = q.pop(t0).unwrap();
        let cycle = q.scheduling_cycle;
        q.requeue_failed(popped, cycle, true, t0);
        assert_eq!(q.location("uid-p"), Some(Location::Unschedulable));
        assert!(q.pop(t0 + Duration::from_secs(60)).is_none());
        // An event that does not help leaves it; one that does moves it.
        q.move_on_event(ClusterEvent::NodeAdd, t0, |_, _| false);
        assert_eq!(q.location("uid-p"), Some(Location::Unschedulable));
        q.move_on_event(ClusterEvent::NodeAdd, t0, |_, _| true);
        assert_eq!(q.location("uid-p"), Some(Location::Backoff));
        assert!(q.pop(t0 + Duration::from_millis(500)).is_none());
        assert_eq!(q.pop(t0 + Duration::from_secs(1)).unwrap().attempts, 2);
    }

    #[test]
    fn an_event_during_the_cycle_sends_the_failed_pod_to_backoff() {
        let mut q = queue();
        let t0 = Instant::now();
        q.add_or_update(pod("p", 0), t0);
        let popped = q.pop(t0).unwrap();
        let cycle = q.scheduling_cycle;
        q.move_on_event(ClusterEvent::NodeAdd, t0, |_, _| true);
        q.requeue_failed(popped, cycle, true, t0);
        assert_eq!(q.location("uid-p"), Some(Location::Backoff));
    }

    #[test]
    fn stale_unschedulable_pods_are_flushed_after_five_minutes() {
        let mut q = queue();
        let t0 = Instant::now();
        q.add_or_update(pod("p", 0), t0);
        let popped = q.pop(t0).unwrap();
        q.requeue_failed(popped, q.scheduling_cycle, true, t0);
        q.flush_unschedulable(t0 + Duration::from_secs(60));
        assert_eq!(q.location("uid-p"), Some(Location::Unschedulable));
        q.flush_unschedulable(t0 + MAX_IN_UNSCHEDULABLE);
        assert_eq!(q.location("uid-p"), Some(Location::Active));
    }

    #[test]
    fn deletes_and_updates_during_a_cycle_are_honoured() {
        let mut q = queue();
        let t0 = Instant::now();
        q.add_or_update(pod("p", 0), t0);
        let popped = q.pop(t0).unwrap();
        q.delete("uid-p");
        q.requeue_failed(popped, q.scheduling_cycle, true, t0);
        assert!(!q.contains("uid-p"));

        q.add_or_update(pod("r", 0), t0);
        let popped = q.pop(t0).unwrap();
        let mut changed = (*pod("r", 0)).clone();
        changed.update_key = 2;
        q.add_or_update(Arc::new(changed), t0);
        q.requeue_failed(popped, q.scheduling_cycle, true, t0);
        assert_eq!(q.location("uid-r"), Some(Location::Backoff));
    }

    #[test]
    fn gated_pods_wait_until_their_gates_are_removed() {
        let mut q = queue();
        let t0 = Instant::now();
        let mut gated = (*pod("g", 0)).clone();
        gated.shape_mut().scheduling_gated = true;
        q.add_or_update(Arc::new(gated.clone()), t0);
        assert!(q.pop(t0).is_none());
        assert_eq!(q.counts(), (0, 0, 0, 1));
        gated.shape_mut().scheduling_gated = false;
        gated.update_key = 2;
        q.add_or_update(Arc::new(gated), t0);
        assert_eq!(q.pop(t0).unwrap().pod.name, "g");
    }
}
