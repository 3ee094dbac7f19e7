//! The DNS server's metrics, with CoreDNS's names so its dashboards and alerts carry
//! over: `coredns_dns_requests_total`, `coredns_dns_responses_total`,
//! `coredns_dns_request_duration_seconds`, `coredns_cache_hits_total`,
//! `coredns_cache_misses_total`, `coredns_forward_request_duration_seconds`. Label sets
//! are CoreDNS's, minus `server`/`view` (one server here).

use hickory_proto::op::ResponseCode;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct DnsMetrics {
    /// zone, proto (udp/tcp), family (1 = IPv4, 2 = IPv6), type.
    pub requests: IntCounterVec,
    /// zone, rcode, plugin (kubernetes/cache/forward).
    pub responses: IntCounterVec,
    /// zone, type.
    pub request_duration: HistogramVec,
    /// type: success/denial.
    pub cache_hits: IntCounterVec,
    pub cache_misses: IntCounter,
    /// to, rcode.
    pub forward_duration: HistogramVec,
}

/// CoreDNS's request duration buckets (0.25 ms doubling to ~8 s).
fn buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.000_25, 2.0, 16).unwrap_or_default()
}

impl DnsMetrics {
    pub fn new(registry: &Registry) -> Result<DnsMetrics, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "coredns_dns_requests_total",
                "Counter of DNS requests made per zone, protocol and family.",
            ),
            &["zone", "proto", "family", "type"],
        )?;
        let responses = IntCounterVec::new(
            Opts::new(
                "coredns_dns_responses_total",
                "Counter of response status codes.",
            ),
            &["zone", "rcode", "plugin"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "coredns_dns_request_duration_seconds",
                "Histogram of the time (in seconds) each request took per zone.",
            )
            .buckets(buckets()),
            &["zone", "type"],
        )?;
        let cache_hits = IntCounterVec::new(
            Opts::new("coredns_cache_hits_total", "The count of cache hits."),
            &["type"],
        )?;
        let cache_misses =
            IntCounter::new("coredns_cache_misses_total", "The count of cache misses.")?;
        let forward_duration = HistogramVec::new(
            HistogramOpts::new(
                "coredns_forward_request_duration_seconds",
                "Histogram of the time each request took.",
            )
            .buckets(buckets()),
            &["to", "rcode"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(responses.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(cache_hits.clone()))?;
        registry.register(Box::new(cache_misses.clone()))?;
        registry.register(Box::new(forward_duration.clone()))?;
        Ok(DnsMetrics {
            requests,
            responses,
            request_duration,
            cache_hits,
            cache_misses,
            forward_duration,
        })
    }
}

/// A response code as CoreDNS labels it (`NOERROR`, `NXDOMAIN`, ...).
pub fn rcode_label(rcode: ResponseCode) -> &'static str {
    match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        _ => "other",
    }
}
