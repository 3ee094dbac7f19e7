//! kubelet: the node agent. It registers its Node and renews the node Lease, watches the
//! pods bound to it and runs them on a CRI runtime (containerd), writes their status
//! back, and writes the pod network's CNI configuration; it serves the node's and pods'
//! resource usage (/stats/summary, /metrics/resource) and evicts pods when the node runs
//! short of memory or disk (upstream `pkg/kubelet`).

pub mod app;
pub mod certificate;
pub mod cli;
pub mod cm;
pub mod cri;
pub mod events;
pub mod eviction;
pub mod kubelet_node_status;
pub mod kuberuntime;
pub mod lifecycle;
pub mod logs;
pub mod metrics;
pub mod network;
pub mod nodelease;
pub mod nodestatus;
pub mod options;
pub mod pod_workers;
pub mod prober;
pub mod server;
pub mod static_pods;
pub mod stats;
pub mod status;
#[cfg(feature = "testing")]
pub mod testing;
pub mod volumes;
