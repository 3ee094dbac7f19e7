//! The `kube-controller-manager` command: parse the flags, start the controllers and wait
//! for them to stop. The `kube-controller-manager` binary and pikube's multi-call binary
//! both run it.

use std::ffi::OsString;

use component_base::{logging, shutdown, EXIT_USAGE};

use crate::app::{self, Config};
use crate::controllers::root_ca_cert_publisher;
use crate::options::Options;

/// Runs kube-controller-manager with `args` (the program name first, as in `argv`). A bad
/// flag exits 64, `--help`/`--version` exit 0; a failure to start or to keep running
/// exits 1.
pub fn main(args: Vec<OsString>) {
    // The caller's arguments, not the process's: behind pikube they follow its subcommand.
    let options: Options = component_base::options::parse_from_or_exit(args);
    run(options)
}

/// One thread runs every controller: their work is waiting on the apiserver, and on
/// glibc each further runtime thread gets its own malloc arena, which a cache of
/// thousands of pods fragments (~4 MiB more per thread at 10,000 pods, measured).
#[tokio::main(flavor = "current_thread")]
async fn run(options: Options) {
    logging::init(options.verbosity);
    component_base::memory::start_trimmer();
    let mut resolved = match options.resolve() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kube-controller-manager: {e}");
            std::process::exit(EXIT_USAGE);
        }
    };
    let client = match resolved.kubeconfig.config("kube-controller-manager").await {
        Ok(kube_config) => {
            // Without --root-ca-file, the published bundle is the CA this process
            // trusts the apiserver with (upstream does the same).
            if resolved.controllers.root_ca.is_none() {
                resolved.controllers.root_ca = kube_config
                    .root_cert
                    .as_deref()
                    .filter(|certs| !certs.is_empty())
                    .map(root_ca_cert_publisher::pem_bundle);
            }
            component_base::options::http2_failover_client(kube_config, |_| {})
                .map(|(client, _)| client)
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kube-controller-manager: {e}");
            std::process::exit(EXIT_USAGE);
        }
    };
    let config = Config {
        client,
        controllers: resolved.controllers,
        enabled: resolved.enabled,
        leader_election: resolved.leader_election,
        serving: Some(resolved.serving),
        registry: prometheus::Registry::new(),
    };
    let running = match app::start(config, shutdown::from_os_signals()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kube-controller-manager: {e}");
            std::process::exit(1);
        }
    };
    component_base::systemd::ready();
    match running.task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("kube-controller-manager: {e}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("kube-controller-manager: {e}");
            std::process::exit(1);
        }
    }
}
