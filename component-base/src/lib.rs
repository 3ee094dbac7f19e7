//! Shared by every pikube daemon: logging, shutdown signals, metrics encoding and the
//! exit code for bad configuration.

pub mod logging;
pub mod metrics;
pub mod shutdown;

/// Exit code for invalid configuration (sysexits' EX_USAGE), used before any port is bound.
pub const EXIT_USAGE: i32 = 64;
