//! When to sync the rules (upstream `pkg/util/async.BoundedFrequencyRunner`): on a
//! change, but never sooner than `min_interval` after the previous sync started, so a
//! burst of Service and EndpointSlice events becomes one transaction; and at least
//! every `max_interval` even without changes; and soon again after a failed sync.

use std::time::Duration;

use component_base::shutdown::Shutdown;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Why a sync runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The first sync after start.
    Initial,
    /// Something changed.
    Change,
    /// `max_interval` passed.
    Periodic,
    /// The previous sync failed.
    Retry,
}

#[derive(Debug)]
pub struct SyncRunner {
    min_interval: Duration,
    max_interval: Duration,
    last: Option<Instant>,
    retry: bool,
}

impl SyncRunner {
    pub fn new(min_interval: Duration, max_interval: Duration) -> SyncRunner {
        SyncRunner {
            min_interval,
            max_interval,
            last: None,
            retry: false,
        }
    }

    /// Waits until the next sync is due; None on shutdown. Changes signalled on
    /// `changed` while a sync ran are not lost: `Notify` keeps one permit.
    pub async fn next(&mut self, changed: &Notify, shutdown: &mut Shutdown) -> Option<Trigger> {
        let Some(last) = self.last else {
            return Some(Trigger::Initial);
        };
        let trigger = tokio::select! {
            () = changed.notified() => Trigger::Change,
            () = tokio::time::sleep_until(last + self.max_interval) => Trigger::Periodic,
            () = std::future::ready(()), if self.retry => Trigger::Retry,
            () = shutdown.signaled() => return None,
        };
        // Whatever else arrives until the minimum interval passed joins this sync.
        tokio::select! {
            () = tokio::time::sleep_until(last + self.min_interval) => {}
            () = shutdown.signaled() => return None,
        }
        // The permit of a change that arrived while we waited is used by this sync.
        let _ = tokio::time::timeout(Duration::ZERO, changed.notified()).await;
        Some(trigger)
    }

    /// Records that a sync started at `started` and whether it succeeded.
    pub fn ran(&mut self, started: Instant, ok: bool) {
        self.last = Some(started);
        self.retry = !ok;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use component_base::shutdown;

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_changes_becomes_one_sync_after_the_minimum_interval() {
        let changed = Notify::new();
        let (_trigger, mut stop) = shutdown::channel();
        let mut r = SyncRunner::new(Duration::from_secs(1), Duration::from_secs(30));
        let t0 = Instant::now();
        assert_eq!(r.next(&changed, &mut stop).await, Some(Trigger::Initial));
        r.ran(Instant::now(), true);
        for _ in 0..5 {
            changed.notify_one();
        }
        assert_eq!(r.next(&changed, &mut stop).await, Some(Trigger::Change));
        assert_eq!(Instant::now() - t0, Duration::from_secs(1));
        r.ran(Instant::now(), true);
        // No change since: the next sync is the periodic one.
        assert_eq!(r.next(&changed, &mut stop).await, Some(Trigger::Periodic));
        assert_eq!(Instant::now() - t0, Duration::from_secs(31));
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_long_after_the_last_sync_runs_at_once() {
        let changed = Notify::new();
        let (_trigger, mut stop) = shutdown::channel();
        let mut r = SyncRunner::new(Duration::from_secs(1), Duration::from_secs(30));
        r.ran(Instant::now(), true);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let before = Instant::now();
        changed.notify_one();
        assert_eq!(r.next(&changed, &mut stop).await, Some(Trigger::Change));
        assert_eq!(Instant::now(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_retry_after_the_minimum_interval_and_shutdown_ends() {
        let changed = Notify::new();
        let (trigger, mut stop) = shutdown::channel();
        let mut r = SyncRunner::new(Duration::from_secs(2), Duration::from_secs(30));
        let t0 = Instant::now();
        r.ran(t0, false);
        assert_eq!(r.next(&changed, &mut stop).await, Some(Trigger::Retry));
        assert_eq!(Instant::now() - t0, Duration::from_secs(2));
        r.ran(Instant::now(), true);
        trigger.shutdown();
        assert_eq!(r.next(&changed, &mut stop).await, None);
    }
}
