//! Resource metrics from the stats cache (upstream `pkg/kubelet/metrics/collectors`
//! `resource_metrics.go`, served on `/metrics/resource`): `node_`, `pod_` and
//! `container_cpu_usage_seconds_total` and `..._memory_working_set_bytes`,
//! `container_start_time_seconds` and `scrape_error`, with upstream's labels and each
//! sample stamped with the time it was taken. A collector reads the cache at scrape time,
//! so containers that are gone leave no series behind. [`ResourceCollector::containers_only`]
//! gives the two container series for the kubelet's `/metrics`.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

use super::summary::{CpuStats, MemoryStats, Summary};
use super::StatsProvider;

/// Collects resource metrics from a [`StatsProvider`]'s cache.
pub struct ResourceCollector {
    provider: Arc<StatsProvider>,
    containers_only: bool,
    descs: Vec<Desc>,
}

struct Family {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    counter: bool,
}

const FAMILIES: [Family; 8] = [
    Family {
        name: "container_cpu_usage_seconds_total",
        help: "Cumulative cpu time consumed by the container in core-seconds",
        labels: &["container", "pod", "namespace"],
        counter: true,
    },
    Family {
        name: "container_memory_working_set_bytes",
        help: "Current working set of the container in bytes",
        labels: &["container", "pod", "namespace"],
        counter: false,
    },
    Family {
        name: "container_start_time_seconds",
        help: "Start time of the container since unix epoch in seconds",
        labels: &["container", "pod", "namespace"],
        counter: false,
    },
    Family {
        name: "pod_cpu_usage_seconds_total",
        help: "Cumulative cpu time consumed by the pod in core-seconds",
        labels: &["pod", "namespace"],
        counter: true,
    },
    Family {
        name: "pod_memory_working_set_bytes",
        help: "Current working set of the pod in bytes",
        labels: &["pod", "namespace"],
        counter: false,
    },
    Family {
        name: "node_cpu_usage_seconds_total",
        help: "Cumulative cpu time consumed by the node in core-seconds",
        labels: &[],
        counter: true,
    },
    Family {
        name: "node_memory_working_set_bytes",
        help: "Current working set of the node in bytes",
        labels: &[],
        counter: false,
    },
    Family {
        name: "scrape_error",
        help: "1 if there was an error while getting container metrics, 0 otherwise",
        labels: &[],
        counter: false,
    },
];

impl ResourceCollector {
    /// Every resource metric (`/metrics/resource`).
    pub fn new(provider: Arc<StatsProvider>) -> ResourceCollector {
        ResourceCollector::build(provider, false)
    }

    /// Only the container CPU and working set series (the kubelet's `/metrics`).
    pub fn containers_only(provider: Arc<StatsProvider>) -> ResourceCollector {
        ResourceCollector::build(provider, true)
    }

    fn build(provider: Arc<StatsProvider>, containers_only: bool) -> ResourceCollector {
        let descs = FAMILIES
            .iter()
            .take(if containers_only { 2 } else { FAMILIES.len() })
            .filter_map(|f| {
                Desc::new(
                    f.name.into(),
                    f.help.into(),
                    f.labels.iter().map(|l| (*l).to_owned()).collect(),
                    std::collections::HashMap::new(),
                )
                .ok()
            })
            .collect();
        ResourceCollector {
            provider,
            containers_only,
            descs,
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name((*k).to_owned());
            l.set_value((*v).to_owned());
            l
        })
        .collect()
}

fn millis(t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> i64 {
    t.map_or(0, |t| t.0.as_millisecond())
}

fn sample(pairs: &[(&str, &str)], value: f64, counter: bool, at: i64) -> Metric {
    let mut m = Metric::default();
    m.set_label(labels(pairs));
    if counter {
        let mut c = Counter::default();
        c.set_value(value);
        m.set_counter(c);
    } else {
        let mut g = Gauge::default();
        g.set_value(value);
        m.set_gauge(g);
    }
    if at > 0 {
        m.set_timestamp_ms(at);
    }
    m
}

fn cpu_sample(pairs: &[(&str, &str)], cpu: Option<&CpuStats>) -> Option<Metric> {
    let cpu = cpu?;
    let ns = cpu.usage_core_nano_seconds?;
    Some(sample(
        pairs,
        ns as f64 / 1e9,
        true,
        millis(cpu.time.as_ref()),
    ))
}

fn memory_sample(pairs: &[(&str, &str)], memory: Option<&MemoryStats>) -> Option<Metric> {
    let memory = memory?;
    let ws = memory.working_set_bytes?;
    Some(sample(
        pairs,
        ws as f64,
        false,
        millis(memory.time.as_ref()),
    ))
}

/// The metric families for `summary` (None: the stats could not be read).
fn families(summary: Option<&Summary>, containers_only: bool) -> Vec<MetricFamily> {
    let mut out: Vec<Vec<Metric>> = vec![Vec::new(); FAMILIES.len()];
    if let Some(s) = summary {
        for pod in &s.pods {
            let (name, ns) = (pod.pod_ref.name.as_str(), pod.pod_ref.namespace.as_str());
            for c in &pod.containers {
                let l = [
                    ("container", c.name.as_str()),
                    ("pod", name),
                    ("namespace", ns),
                ];
                out[0].extend(cpu_sample(&l, c.cpu.as_ref()));
                out[1].extend(memory_sample(&l, c.memory.as_ref()));
                if let Some(start) = &c.start_time {
                    out[2].push(sample(&l, start.0.as_second() as f64, false, 0));
                }
            }
            let l = [("pod", name), ("namespace", ns)];
            out[3].extend(cpu_sample(&l, pod.cpu.as_ref()));
            out[4].extend(memory_sample(&l, pod.memory.as_ref()));
        }
        out[5].extend(cpu_sample(&[], s.node.cpu.as_ref()));
        out[6].extend(memory_sample(&[], s.node.memory.as_ref()));
    }
    out[7].push(sample(
        &[],
        if summary.is_some() { 0.0 } else { 1.0 },
        false,
        0,
    ));
    let take = if containers_only { 2 } else { FAMILIES.len() };
    FAMILIES
        .iter()
        .zip(out)
        .take(take)
        .filter(|(_, metrics)| !metrics.is_empty())
        .map(|(f, metrics)| {
            let mut mf = MetricFamily::default();
            mf.set_name(f.name.to_owned());
            mf.set_help(f.help.to_owned());
            mf.set_field_type(if f.counter {
                MetricType::COUNTER
            } else {
                MetricType::GAUGE
            });
            mf.set_metric(metrics);
            mf
        })
        .collect()
}

impl Collector for ResourceCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        families(self.provider.latest().as_deref(), self.containers_only)
    }
}

#[cfg(test)]
mod tests {
    use super::super::summary::*;
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn series_follow_the_summary() {
        let t = Some(Time(jiff::Timestamp::from_second(1_700_000_000).unwrap()));
        let summary = Summary {
            node: NodeStats {
                node_name: "n".into(),
                cpu: Some(CpuStats {
                    time: t.clone(),
                    usage_nano_cores: None,
                    usage_core_nano_seconds: Some(3_000_000_000),
                }),
                ..Default::default()
            },
            pods: vec![PodStats {
                pod_ref: PodReference {
                    name: "p".into(),
                    namespace: "ns".into(),
                    uid: "u".into(),
                },
                containers: vec![ContainerStats {
                    name: "c".into(),
                    start_time: t.clone(),
                    cpu: Some(CpuStats {
                        time: t.clone(),
                        usage_nano_cores: Some(5),
                        usage_core_nano_seconds: Some(1_500_000_000),
                    }),
                    memory: Some(MemoryStats {
                        time: t.clone(),
                        working_set_bytes: Some(4096),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let registry = prometheus::Registry::new();
        let all = families(Some(&summary), false);
        let names: Vec<&str> = all.iter().map(|f| f.name()).collect();
        assert!(names.contains(&"container_cpu_usage_seconds_total"));
        assert!(names.contains(&"node_cpu_usage_seconds_total"));
        assert!(
            !names.contains(&"pod_cpu_usage_seconds_total"),
            "no pod cpu known"
        );
        let mut text = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &all, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains(
                "container_cpu_usage_seconds_total{container=\"c\",pod=\"p\",namespace=\"ns\"} 1.5 1700000000000"
            ),
            "{text}"
        );
        assert!(text.contains(
            "container_memory_working_set_bytes{container=\"c\",pod=\"p\",namespace=\"ns\"} 4096"
        ));
        assert!(text.contains("scrape_error 0"));
        let only = families(Some(&summary), true);
        assert_eq!(only.len(), 2);
        // Without stats: no series but the scrape error.
        let none = families(None, false);
        assert_eq!(none.len(), 1);
        assert_eq!(none[0].name(), "scrape_error");
        drop(registry);
    }
}
