//! The controllers, one module each, and the descriptor table that names them for
//! `--controllers` (upstream's `NewControllerDescriptors`).

pub mod certificates;
pub mod controller_utils;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoint;
pub mod endpointslice;
pub mod endpointslicemirroring;
pub mod garbagecollector;
pub mod history;
pub mod job;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod persistentvolume;
pub mod podgc;
pub mod replicaset;
pub mod replicationcontroller;
pub mod resourcequota;
pub mod root_ca_cert_publisher;
pub mod service_endpoints;
pub mod serviceaccount;
pub mod statefulset;
pub mod taint_eviction;
pub mod ttl_after_finished;
// One `pub mod` line per controller, above this comment.

use std::sync::Arc;

use futures::future::BoxFuture;
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;

use crate::informers::Informers;
use crate::options::ControllerOptions;
use crate::workqueue::WorkqueueMetrics;

/// What every controller gets: the client, the shared informers, the settings and the
/// workqueue metrics.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub informers: Arc<Informers>,
    pub options: Arc<ControllerOptions>,
    pub metrics: WorkqueueMetrics,
}

impl Context {
    /// An event recorder reporting as `component`: upstream names one per controller,
    /// e.g. `deployment-controller`, `replicaset-controller`.
    pub fn recorder(&self, component: &str) -> Recorder {
        Recorder::new(
            self.client.clone(),
            Reporter {
                controller: component.to_string(),
                instance: None,
            },
        )
    }
}

/// Starting a controller: called before the informers start, it subscribes to what it
/// watches and returns the future that runs it.
pub type Start = fn(&Context) -> BoxFuture<'static, ()>;

pub struct Descriptor {
    /// The name in `--controllers` (upstream's).
    pub name: &'static str,
    /// Whether `*` includes it (upstream disables a few by default).
    pub enabled_by_default: bool,
    pub start: Start,
}

/// Every controller pikube has, in upstream's naming.
pub fn descriptors() -> Vec<Descriptor> {
    let descriptor = |name, enabled_by_default, start| Descriptor {
        name,
        enabled_by_default,
        start,
    };
    vec![
        descriptor("serviceaccount", true, serviceaccount::start),
        descriptor("nodeipam", true, nodeipam::start),
        descriptor("nodelifecycle", true, nodelifecycle::start),
        descriptor("taint-eviction-controller", true, taint_eviction::start),
        descriptor("podgc", true, podgc::start),
        descriptor("ttl-after-finished", true, ttl_after_finished::start),
        descriptor("replicaset", true, replicaset::start),
        descriptor("replicationcontroller", true, replicationcontroller::start),
        descriptor("disruption", true, disruption::start),
        descriptor("endpointslice", true, endpointslice::start),
        descriptor("endpoint", true, endpoint::start),
        descriptor(
            "endpointslicemirroring",
            true,
            endpointslicemirroring::start,
        ),
        descriptor("namespace", true, namespace::start),
        descriptor("garbagecollector", true, garbagecollector::start),
        descriptor("deployment", true, deployment::start),
        descriptor("job", true, job::start),
        descriptor("cronjob", true, cronjob::start),
        descriptor("persistentvolume-binder", true, persistentvolume::start),
        descriptor("resourcequota", true, resourcequota::start),
        descriptor("daemonset", true, daemonset::start),
        descriptor("statefulset", true, statefulset::start),
        descriptor("csrsigning", true, certificates::signer::start),
        descriptor("csrapproving", true, certificates::approver::start),
        descriptor("csrcleaner", true, certificates::cleaner::start),
        descriptor(
            "root-ca-certificate-publisher-controller",
            true,
            root_ca_cert_publisher::start,
        ),
        // One descriptor per controller, above this comment.
    ]
}

/// Which controllers `--controllers` selects: `*` = all enabled by default, `name` adds
/// one, `-name` removes one; an unknown name is an error.
pub fn selected(flag: &[String], all: &[Descriptor]) -> Result<Vec<&'static str>, String> {
    for item in flag {
        let name = item.strip_prefix('-').unwrap_or(item);
        if name != "*" && !all.iter().any(|d| d.name == name) {
            return Err(format!(
                "--controllers: {name:?} is not in the list of known controllers: {}",
                all.iter().map(|d| d.name).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let star = flag.iter().any(|i| i == "*");
    Ok(all
        .iter()
        .filter(|d| {
            if flag.iter().any(|i| i.strip_prefix('-') == Some(d.name)) {
                return false;
            }
            flag.iter().any(|i| i == d.name) || (star && d.enabled_by_default)
        })
        .map(|d| d.name)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(flag: &[&str]) -> Result<Vec<&'static str>, String> {
        let flag: Vec<String> = flag.iter().map(|s| s.to_string()).collect();
        selected(&flag, &descriptors())
    }

    #[test]
    fn controllers_flag_follows_upstream_syntax() {
        assert!(names(&["*"]).unwrap().contains(&"serviceaccount"));
        assert!(!names(&["*", "-serviceaccount"])
            .unwrap()
            .contains(&"serviceaccount"));
        assert_eq!(names(&["serviceaccount"]).unwrap(), ["serviceaccount"]);
        assert!(names(&["bogus"])
            .unwrap_err()
            .contains("not in the list of known controllers"));
    }
}
