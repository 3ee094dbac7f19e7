//! Per-kind validation with upstream's rules, field paths, reasons and messages.

pub mod field;
pub mod names;

pub use field::{FieldError, FieldErrorType, Path};
