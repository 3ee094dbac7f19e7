//! Upstream kube-apiserver's etcd request metrics.
//!
//! Names, help texts and buckets follow `k8s.io/apiserver/pkg/storage/etcd3/metrics`, so
//! existing dashboards work: `etcd_request_duration_seconds`, `etcd_requests_total` and
//! `etcd_request_errors_total`, each labelled with `operation` and `type`.
//!
//! `operation` is one of `get`, `list`, `count`, `create`, `update`, `delete`, `watch`,
//! `compact` and `current_revision`. `type` is derived from the key by
//! [`resource_type`].

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::error::Error;

// Upstream's buckets for etcd_request_duration_seconds.
const DURATION_BUCKETS: [f64; 23] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

const LABELS: [&str; 2] = ["operation", "type"];

/// The etcd request metrics of one store, registered in a caller-provided registry.
#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    duration: HistogramVec,
    total: IntCounterVec,
    errors: IntCounterVec,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub(crate) fn register(registry: &Registry) -> Result<Self, Error> {
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "etcd_request_duration_seconds",
                "Etcd request latency in seconds for each operation and object type.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &LABELS,
        )
        .map_err(Error::Metrics)?;
        let total = IntCounterVec::new(
            Opts::new(
                "etcd_requests_total",
                "Etcd request counts for each operation and object type.",
            ),
            &LABELS,
        )
        .map_err(Error::Metrics)?;
        let errors = IntCounterVec::new(
            Opts::new(
                "etcd_request_errors_total",
                "Etcd failed request counts for each operation and object type.",
            ),
            &LABELS,
        )
        .map_err(Error::Metrics)?;
        registry
            .register(Box::new(duration.clone()))
            .map_err(Error::Metrics)?;
        registry
            .register(Box::new(total.clone()))
            .map_err(Error::Metrics)?;
        registry
            .register(Box::new(errors.clone()))
            .map_err(Error::Metrics)?;
        Ok(Self {
            duration,
            total,
            errors,
        })
    }

    /// Records one etcd request.
    pub(crate) fn observe(&self, operation: &str, key: &str, elapsed: Duration, failed: bool) {
        let kind = resource_type(key);
        let labels = [operation, kind.as_str()];
        self.duration
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
        self.total.with_label_values(&labels).inc();
        if failed {
            self.errors.with_label_values(&labels).inc();
        }
    }
}

/// The `type` metric label for a relative key or prefix.
///
/// Upstream labels etcd metrics with the group-resource, `plural.group` (`pods`,
/// `customresourcedefinitions.apiextensions.k8s.io`). The store only sees keys, so the
/// label is derived from the key's layout: built-in resources are stored under their
/// plural (`pods/default/nginx` → `pods`), API groups with a dot in their name under
/// `group/plural` (`apiextensions.k8s.io/customresourcedefinitions/foo` →
/// `customresourcedefinitions.apiextensions.k8s.io`, likewise custom resources). Built-in
/// resources of named groups therefore lack their group (`deployments`, where upstream
/// says `deployments.apps`). An empty key gives an empty label.
pub fn resource_type(key: &str) -> String {
    let mut segments = key.split('/').filter(|s| !s.is_empty());
    match (segments.next(), segments.next()) {
        (Some(group), Some(plural)) if group.contains('.') => format!("{plural}.{group}"),
        (Some(first), _) => first.to_owned(),
        (None, _) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_type_from_key() {
        assert_eq!(resource_type("pods/default/nginx"), "pods");
        assert_eq!(resource_type("pods/"), "pods");
        assert_eq!(resource_type("nodes/pi-1"), "nodes");
        assert_eq!(
            resource_type("apiextensions.k8s.io/customresourcedefinitions/widgets.example.com"),
            "customresourcedefinitions.apiextensions.k8s.io"
        );
        assert_eq!(
            resource_type("example.com/widgets/default/w1"),
            "widgets.example.com"
        );
        assert_eq!(resource_type("example.com"), "example.com");
        assert_eq!(resource_type(""), "");
    }

    #[test]
    fn registers_in_the_given_registry() {
        let registry = Registry::new();
        let metrics = Metrics::register(&registry).expect("register");
        metrics.observe("get", "pods/default/nginx", Duration::from_millis(3), false);
        metrics.observe("get", "pods/default/nginx", Duration::from_millis(3), true);
        let families = registry.gather();
        let names: Vec<_> = families.iter().map(|f| f.name().to_owned()).collect();
        assert!(names.contains(&"etcd_request_duration_seconds".to_owned()));
        assert!(names.contains(&"etcd_requests_total".to_owned()));
        assert!(names.contains(&"etcd_request_errors_total".to_owned()));
        // A second store on the same registry is refused rather than double-counted.
        assert!(matches!(
            Metrics::register(&registry),
            Err(Error::Metrics(prometheus::Error::AlreadyReg))
        ));
    }
}
