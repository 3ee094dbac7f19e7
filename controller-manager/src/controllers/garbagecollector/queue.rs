//! Upstream's rate-limited workqueue, for the garbage collector's two queues of object
//! uids: an item queued while it is being processed is processed again afterwards, never
//! by two workers at once; failures come back after a per-item exponential delay.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};

/// Upstream's default controller rate limiter: 5 ms doubling to 1000 s.
const BACKOFF_BASE: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1000);

#[derive(Default)]
struct Inner {
    queue: VecDeque<String>,
    /// Queued and not yet handed out (possibly while an earlier add is processing).
    dirty: HashSet<String>,
    processing: HashSet<String>,
    failures: HashMap<String, u32>,
}

pub struct WorkQueue {
    inner: Mutex<Inner>,
    ready: Notify,
    delayed: mpsc::UnboundedSender<(String, Duration)>,
}

impl WorkQueue {
    /// The queue, and the receiver [`WorkQueue::run_delays`] drains.
    pub fn new() -> (WorkQueue, mpsc::UnboundedReceiver<(String, Duration)>) {
        let (delayed, rx) = mpsc::unbounded_channel();
        let queue = WorkQueue {
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            delayed,
        };
        (queue, rx)
    }

    pub fn add(&self, key: &str) {
        let mut inner = self.inner.lock();
        if !inner.dirty.insert(key.to_string()) {
            return;
        }
        if !inner.processing.contains(key) {
            inner.queue.push_back(key.to_string());
            drop(inner);
            self.ready.notify_one();
        }
    }

    /// The next key; call [`WorkQueue::done`] with it when finished.
    pub async fn get(&self) -> String {
        loop {
            {
                let mut inner = self.inner.lock();
                if let Some(key) = inner.queue.pop_front() {
                    inner.dirty.remove(&key);
                    inner.processing.insert(key.clone());
                    let more = !inner.queue.is_empty();
                    drop(inner);
                    if more {
                        // Another worker may be asleep: pass the wake-up on.
                        self.ready.notify_one();
                    }
                    return key;
                }
            }
            self.ready.notified().await;
        }
    }

    pub fn done(&self, key: &str) {
        let mut inner = self.inner.lock();
        inner.processing.remove(key);
        if inner.dirty.contains(key) {
            inner.queue.push_back(key.to_string());
            drop(inner);
            self.ready.notify_one();
        }
    }

    /// The key succeeded: its next failure starts the backoff afresh.
    pub fn forget(&self, key: &str) {
        self.inner.lock().failures.remove(key);
    }

    /// The key failed: add it again after its backoff.
    pub fn add_rate_limited(&self, key: &str) {
        let delay = {
            let mut inner = self.inner.lock();
            let n = inner.failures.entry(key.to_string()).or_default();
            *n = n.saturating_add(1);
            backoff(*n)
        };
        self.add_after(key, delay);
    }

    pub fn add_after(&self, key: &str, delay: Duration) {
        // The receiver lives as long as the controller; after that nothing is queued.
        let _ = self.delayed.send((key.to_string(), delay));
    }

    /// Adds delayed keys when their time comes; runs as long as the controller.
    pub async fn run_delays(&self, mut rx: mpsc::UnboundedReceiver<(String, Duration)>) {
        let mut waiting = FuturesUnordered::new();
        loop {
            tokio::select! {
                request = rx.recv() => match request {
                    Some((key, delay)) => waiting.push(async move {
                        tokio::time::sleep(delay).await;
                        key
                    }),
                    None => return,
                },
                Some(key) = waiting.next(), if !waiting.is_empty() => self.add(&key),
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().queue.len()
    }
}

fn backoff(failures: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_item_is_never_handed_out_twice_at_once() {
        let (q, _rx) = WorkQueue::new();
        q.add("a");
        q.add("a");
        assert_eq!(q.len(), 1);
        let a = q.get().await;
        assert_eq!(a, "a");
        // Added while processing: held back until done, then queued once.
        q.add("a");
        q.add("a");
        assert_eq!(q.len(), 0);
        q.done("a");
        assert_eq!(q.len(), 1);
        assert_eq!(q.get().await, "a");
        q.done("a");
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_millis(5));
        assert_eq!(backoff(2), Duration::from_millis(10));
        assert_eq!(backoff(40), BACKOFF_MAX);
    }

    #[tokio::test]
    async fn failed_items_come_back_after_their_backoff() {
        let (q, rx) = WorkQueue::new();
        let q = std::sync::Arc::new(q);
        let delays = tokio::spawn({
            let q = q.clone();
            async move { q.run_delays(rx).await }
        });
        q.add_rate_limited("x");
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(1), q.get())
                .await
                .unwrap(),
            "x"
        );
        delays.abort();
    }
}
