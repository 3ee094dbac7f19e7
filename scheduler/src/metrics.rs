//! The scheduler's metrics, under upstream's names, registered on the registry the daemon
//! passes in.

use prometheus::{
    exponential_buckets, CounterVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct Metrics {
    /// `scheduler_schedule_attempts_total{result, profile}`: scheduled, unschedulable, error.
    pub schedule_attempts: CounterVec,
    /// `scheduler_scheduling_attempt_duration_seconds{result, profile}`.
    pub attempt_duration: HistogramVec,
    /// `scheduler_pending_pods{queue}`: active, backoff, unschedulable, gated.
    pub pending_pods: IntGaugeVec,
    /// `scheduler_preemption_attempts_total`.
    pub preemption_attempts: IntCounter,
    /// `scheduler_preemption_victims`.
    pub preemption_victims: Histogram,
    /// `scheduler_pod_scheduling_sli_duration_seconds{attempts}`: from the first attempt to
    /// the binding, per pod.
    pub scheduling_sli: HistogramVec,
    /// `scheduler_cache_size{type}`: nodes, pods, assumed_pods.
    pub cache_size: IntGaugeVec,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let m = Metrics {
            schedule_attempts: CounterVec::new(
                Opts::new(
                    "scheduler_schedule_attempts_total",
                    "Number of attempts to schedule pods, by the result. 'unschedulable' means a pod could not be scheduled, while 'error' means an internal scheduler problem.",
                ),
                &["result", "profile"],
            )?,
            attempt_duration: HistogramVec::new(
                HistogramOpts::new(
                    "scheduler_scheduling_attempt_duration_seconds",
                    "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
                )
                .buckets(exponential_buckets(0.001, 2.0, 15)?),
                &["result", "profile"],
            )?,
            pending_pods: IntGaugeVec::new(
                Opts::new(
                    "scheduler_pending_pods",
                    "Number of pending pods, by the queue type. 'active' means number of pods in activeQ; 'backoff' means number of pods in backoffQ; 'unschedulable' means number of pods in unschedulablePods that the scheduler attempted to schedule and failed; 'gated' is the number of unschedulable pods that the scheduler never attempted to schedule because they are gated.",
                ),
                &["queue"],
            )?,
            preemption_attempts: IntCounter::new("scheduler_preemption_attempts_total", "Total preemption attempts in the cluster till now")?,
            preemption_victims: Histogram::with_opts(
                HistogramOpts::new("scheduler_preemption_victims", "Number of selected preemption victims")
                    .buckets(exponential_buckets(1.0, 2.0, 7)?),
            )?,
            scheduling_sli: HistogramVec::new(
                HistogramOpts::new(
                    "scheduler_pod_scheduling_sli_duration_seconds",
                    "E2e latency for a pod being scheduled, from the time the pod enters the scheduling queue and might involve multiple scheduling attempts.",
                )
                .buckets(exponential_buckets(0.01, 2.0, 20)?),
                &["attempts"],
            )?,
            cache_size: IntGaugeVec::new(
                Opts::new("scheduler_cache_size", "Number of nodes, pods, and assumed (bound) pods in the scheduler cache."),
                &["type"],
            )?,
        };
        registry.register(Box::new(m.schedule_attempts.clone()))?;
        registry.register(Box::new(m.attempt_duration.clone()))?;
        registry.register(Box::new(m.pending_pods.clone()))?;
        registry.register(Box::new(m.preemption_attempts.clone()))?;
        registry.register(Box::new(m.preemption_victims.clone()))?;
        registry.register(Box::new(m.scheduling_sli.clone()))?;
        registry.register(Box::new(m.cache_size.clone()))?;
        for q in ["active", "backoff", "unschedulable", "gated"] {
            m.pending_pods.with_label_values(&[q]).set(0);
        }
        Ok(m)
    }
}
