//! Shared by every pikube daemon: option groups with upstream's flag names, logging,
//! shutdown signals, metrics encoding, the /healthz /livez /readyz /metrics server with
//! delegated authentication and authorization,
//! leader election on a Lease, systemd readiness notification, client-side apiserver
//! failover, a background heap trimmer, and the exit code for bad configuration.

pub mod delegated_auth;
pub mod failover;
pub mod files;
pub mod leader_election;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod nft;
pub mod options;
pub mod serving;
pub mod shutdown;
pub mod systemd;

/// Exit code for invalid configuration (sysexits' EX_USAGE), used before any port is bound.
pub const EXIT_USAGE: i32 = 64;
