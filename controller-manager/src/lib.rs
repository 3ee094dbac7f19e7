//! kube-controller-manager: the control loops that make desired state real, each a
//! kube-runtime Controller over one set of shared informers (one watch per resource for
//! the whole process), listed in one descriptor table ([`controllers::descriptors`]).

pub mod app;
pub mod cache;
pub mod cli;
pub mod controllers;
pub mod informers;
pub mod options;
pub mod workqueue;

/// Upstream's secure port for /healthz, /readyz and /metrics.
pub const DEFAULT_SECURE_PORT: u16 = 10257;
