//! Upstream's workqueue metrics, per controller name, around kube-runtime's controller
//! queue: `workqueue_adds_total`, `workqueue_depth`, `workqueue_work_duration_seconds`,
//! `workqueue_retries_total`.
//!
//! kube-runtime's scheduler de-duplicates requests internally and does not expose its
//! queue, so these count what the controller sees: a reconcile is an add when it is
//! dispatched, depth is the reconciles dispatched and not yet finished, and a retry is an
//! error that requeued the object.

use std::future::Future;
use std::time::Instant;

use prometheus::{
    exponential_buckets, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct WorkqueueMetrics {
    adds: IntCounterVec,
    depth: IntGaugeVec,
    work_duration: HistogramVec,
    retries: IntCounterVec,
}

impl WorkqueueMetrics {
    pub fn new(registry: &Registry) -> Result<WorkqueueMetrics, prometheus::Error> {
        let m = WorkqueueMetrics {
            adds: IntCounterVec::new(
                Opts::new(
                    "workqueue_adds_total",
                    "Total number of adds handled by workqueue",
                ),
                &["name"],
            )?,
            depth: IntGaugeVec::new(
                Opts::new("workqueue_depth", "Current depth of workqueue"),
                &["name"],
            )?,
            work_duration: HistogramVec::new(
                HistogramOpts::new(
                    "workqueue_work_duration_seconds",
                    "How long in seconds processing an item from workqueue takes.",
                )
                .buckets(exponential_buckets(1e-8, 10.0, 10)?),
                &["name"],
            )?,
            retries: IntCounterVec::new(
                Opts::new(
                    "workqueue_retries_total",
                    "Total number of retries handled by workqueue",
                ),
                &["name"],
            )?,
        };
        registry.register(Box::new(m.adds.clone()))?;
        registry.register(Box::new(m.depth.clone()))?;
        registry.register(Box::new(m.work_duration.clone()))?;
        registry.register(Box::new(m.retries.clone()))?;
        Ok(m)
    }

    /// Runs one reconcile, counting it under the controller's name.
    pub async fn observe<T, E>(
        &self,
        name: &str,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        self.adds.with_label_values(&[name]).inc();
        let depth = self.depth.with_label_values(&[name]);
        depth.inc();
        let start = Instant::now();
        let result = work.await;
        self.work_duration
            .with_label_values(&[name])
            .observe(start.elapsed().as_secs_f64());
        depth.dec();
        if result.is_err() {
            self.retries.with_label_values(&[name]).inc();
        }
        result
    }
}
