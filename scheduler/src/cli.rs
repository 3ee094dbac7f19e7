//! The `kube-scheduler` command: parse the flags, start the scheduler and wait for it to
//! stop. The `kube-scheduler` binary and pikube's multi-call binary both run it.

use std::ffi::OsString;

use component_base::{logging, shutdown, EXIT_USAGE};

use crate::app::{self, Config};
use crate::options::Options;

/// Runs kube-scheduler with `args` (the program name first, as in `argv`). A bad flag
/// exits 64, `--help`/`--version` exit 0; a failure to start or to keep running exits 1.
pub fn main(args: Vec<OsString>) {
    // The caller's arguments, not the process's: behind pikube they follow its subcommand.
    let options: Options = component_base::options::parse_from_or_exit(args);
    run(options)
}

#[tokio::main]
async fn run(options: Options) {
    logging::init(options.verbosity);
    component_base::memory::start_trimmer();
    let resolved = match options.resolve() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kube-scheduler: {e}");
            std::process::exit(EXIT_USAGE);
        }
    };
    let client = match resolved.kubeconfig.client("kube-scheduler").await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kube-scheduler: {e}");
            std::process::exit(EXIT_USAGE);
        }
    };
    let identity = resolved
        .leader_election
        .as_ref()
        .map(|le| le.identity.clone())
        .unwrap_or_else(component_base::leader_election::default_identity);
    let config = Config {
        client,
        configuration: resolved.configuration,
        leader_election: resolved.leader_election,
        serving: Some(resolved.serving),
        registry: prometheus::Registry::new(),
        identity,
    };
    let running = match app::start(config, shutdown::from_os_signals()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kube-scheduler: {e}");
            std::process::exit(1);
        }
    };
    component_base::systemd::ready();
    match running.task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("kube-scheduler: {e}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("kube-scheduler: {e}");
            std::process::exit(1);
        }
    }
}
