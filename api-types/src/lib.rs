//! Kubernetes API types for pikube: k8s-openapi re-exports, the resource registry, and the
//! per-kind knowledge (defaults, validation, selectors, wire schemas) that has no I/O.

pub use k8s_openapi;

pub mod defaults;
pub mod duration;
pub mod openapi;
pub mod quantity;
pub mod quota;
pub mod resources;
pub mod selector;
pub mod strategic_merge;
pub mod taints;
pub mod validation;
pub mod wire;
