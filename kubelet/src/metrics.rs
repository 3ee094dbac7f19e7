//! The kubelet's own metrics with upstream's names (`pkg/kubelet/metrics`):
//! `kubelet_running_pods`, `kubelet_running_containers{container_state}` and
//! `kubelet_pod_start_duration_seconds`. The runtime operation counters live with the
//! CRI client ([`crate::cri::Metrics`]).

use prometheus::{Histogram, HistogramOpts, IntGauge, IntGaugeVec, Opts, Registry};

#[derive(Clone, Debug)]
pub struct Metrics {
    pub running_pods: IntGauge,
    pub running_containers: IntGaugeVec,
    pub pod_start_duration: Histogram,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let running_pods = IntGauge::new(
            "kubelet_running_pods",
            "Number of pods that have a running pod sandbox",
        )?;
        let running_containers = IntGaugeVec::new(
            Opts::new(
                "kubelet_running_containers",
                "Number of containers currently running",
            ),
            &["container_state"],
        )?;
        let pod_start_duration = Histogram::with_opts(
            HistogramOpts::new(
                "kubelet_pod_start_duration_seconds",
                "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
            )
            .buckets(vec![
                0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0,
                180.0, 240.0, 300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
            ]),
        )?;
        registry.register(Box::new(running_pods.clone()))?;
        registry.register(Box::new(running_containers.clone()))?;
        registry.register(Box::new(pod_start_duration.clone()))?;
        Ok(Metrics {
            running_pods,
            running_containers,
            pod_start_duration,
        })
    }
}
