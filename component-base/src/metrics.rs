//! Prometheus text exposition of a component's own registry (never the global one).

use prometheus::{Encoder, Registry, TextEncoder};

/// Content type of the Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric family of `registry` in the Prometheus text format.
pub fn encode_text(registry: &Registry) -> Vec<u8> {
    let mut buf = Vec::new();
    let families = registry.gather();
    // Encoding into a Vec cannot fail for well-formed families; an error leaves what was written.
    let _ = TextEncoder::new().encode(&families, &mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_given_registry_only() {
        let registry = Registry::new();
        let c = prometheus::IntCounter::new("pikube_test_total", "a test counter").unwrap();
        registry.register(Box::new(c.clone())).unwrap();
        c.inc_by(3);
        let text = String::from_utf8(encode_text(&registry)).unwrap();
        assert!(text.contains("# TYPE pikube_test_total counter"), "{text}");
        assert!(text.contains("pikube_test_total 3"), "{text}");
    }
}
