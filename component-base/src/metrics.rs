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
