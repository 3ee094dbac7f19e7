//! kube-scheduler: watches pending pods, runs each through its profile's filter and score
//! plugins, and binds it to the best node through `pods/binding`.
//!
//! Layout as upstream: [`queue`] (active/backoff/unschedulable), [`cache`] (nodes and the
//! pods counted on them, with assumed pods), [`framework`] (extension points) and
//! [`plugins`] (a file each), [`schedule_one`] (one attempt), [`preemption`]
//! (DefaultPreemption), [`scheduler`] (informers, loop, binding, events).

pub mod app;
pub mod cache;
pub mod cli;
pub mod config;
pub mod framework;
pub mod metrics;
pub mod options;
pub mod plugins;
pub mod preemption;
pub mod queue;
pub mod schedule_one;
pub mod scheduler;

/// The profile pods get when they name no scheduler.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";
/// Upstream's secure port for /healthz, /readyz and /metrics.
pub const DEFAULT_SECURE_PORT: u16 = 10259;
