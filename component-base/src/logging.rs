//! Logging setup. `-v`/`--v` follows klog's verbosity: 0–1 info, 2–3 debug, 4+ trace.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Initialises the global tracing subscriber. `RUST_LOG` overrides the verbosity when set.
pub fn init(verbosity: u8) {
    let default = match verbosity {
        0 | 1 => "info",
        2 | 3 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // A second init (tests starting several components in one process) is not an error.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
