//! kube-proxy's metrics with upstream's names (`pkg/proxy/metrics`), registered in the
//! registry the daemon passes down.

use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, Registry};

#[derive(Clone)]
pub struct Metrics {
    /// `kubeproxy_sync_proxy_rules_duration_seconds`: how long one sync of the rules took.
    pub sync_proxy_rules_duration: Histogram,
    /// `kubeproxy_network_programming_duration_seconds`: from an endpoint change (the
    /// slice's `endpoints.kubernetes.io/last-change-trigger-time`) to its rules being in
    /// place.
    pub network_programming_duration: Histogram,
    /// `kubeproxy_sync_proxy_rules_last_timestamp_seconds`: when the rules were last synced.
    pub sync_proxy_rules_last_timestamp: Gauge,
    /// `kubeproxy_sync_proxy_rules_nftables_sync_failures_total`: failed transactions.
    pub sync_failures: IntCounter,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let sync_proxy_rules_duration = Histogram::with_opts(
            HistogramOpts::new(
                "kubeproxy_sync_proxy_rules_duration_seconds",
                "SyncProxyRules latency in seconds",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 15)?),
        )?;
        // Upstream's buckets: 0.25 s steps to 1 s, 1 s steps to 30 s, then coarser.
        let mut programming: Vec<f64> = (1..=4).map(|i| f64::from(i) * 0.25).collect();
        programming.extend((2..=30).map(f64::from));
        programming.extend([
            35.0, 40.0, 45.0, 50.0, 55.0, 60.0, 90.0, 120.0, 180.0, 240.0, 300.0,
        ]);
        let network_programming_duration = Histogram::with_opts(
            HistogramOpts::new(
                "kubeproxy_network_programming_duration_seconds",
                "In Cluster Network Programming Latency in seconds",
            )
            .buckets(programming),
        )?;
        let sync_proxy_rules_last_timestamp = Gauge::new(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
        )?;
        let sync_failures = IntCounter::new(
            "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
            "Cumulative proxy nftables sync failures",
        )?;
        registry.register(Box::new(sync_proxy_rules_duration.clone()))?;
        registry.register(Box::new(network_programming_duration.clone()))?;
        registry.register(Box::new(sync_proxy_rules_last_timestamp.clone()))?;
        registry.register(Box::new(sync_failures.clone()))?;
        Ok(Metrics {
            sync_proxy_rules_duration,
            network_programming_duration,
            sync_proxy_rules_last_timestamp,
            sync_failures,
        })
    }
}
