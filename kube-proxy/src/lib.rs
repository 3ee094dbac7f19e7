//! kube-proxy: watches Services and EndpointSlices and programs them into the node's
//! packet filter (upstream `cmd/kube-proxy` and `pkg/proxy`).
//!
//! Data flows one way: watches (Services, EndpointSlices, this Node) → the change
//! trackers ([`tracker`]) → the Service port model ([`service`], [`endpoints`]) → the proxier ([`nftables`]) that turns it
//! into one atomic transaction per sync, rewriting only what changed. With
//! `--enable-cluster-dns` it also serves cluster DNS on the node ([`dns`]).

pub mod app;
pub mod cli;
pub mod conntrack;
pub mod dns;
pub mod endpoints;
pub mod feed;
pub mod healthcheck;
pub mod healthz;
pub mod metrics;
pub mod nftables;
pub mod options;
pub mod runner;
pub mod service;
pub mod servicelb;
pub mod tracker;
pub mod userspace;
