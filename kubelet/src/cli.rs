//! The `kubelet` command: parse the flags, bootstrap the client certificate if asked,
//! start the kubelet and wait for it to stop. The `kubelet` binary and pikube's
//! multi-call binary both run it.

use std::ffi::OsString;

use component_base::{logging, shutdown, EXIT_USAGE};

use crate::app::{self, Config};
use crate::options::Options;

/// Runs the kubelet with `args` (the program name first, as in `argv`). A bad flag exits
/// 64, `--help`/`--version` exit 0; a failure to start or to keep running exits 1.
pub fn main(args: Vec<OsString>) {
    // The caller's arguments, not the process's: behind pikube they follow its subcommand.
    let options: Options = component_base::options::parse_from_or_exit(args);
    run(options)
}

#[tokio::main(flavor = "current_thread")]
async fn run(options: Options) {
    logging::init(options.verbosity);
    component_base::memory::start_trimmer();
    let settings = match options.resolve() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kubelet: {e}");
            std::process::exit(EXIT_USAGE);
        }
    };
    if let Some(bootstrap) = &options.bootstrap_kubeconfig {
        let Some(kubeconfig) = options.kubeconfig.kubeconfig.clone() else {
            eprintln!(
                "kubelet: --bootstrap-kubeconfig needs --kubeconfig (where to write the new one)"
            );
            std::process::exit(EXIT_USAGE);
        };
        let config = crate::certificate::bootstrap::Config {
            kubeconfig,
            bootstrap_kubeconfig: bootstrap.clone(),
            cert_dir: options.cert_dir.clone(),
            node_name: settings.node_name.clone(),
            timeout: crate::certificate::bootstrap::DEFAULT_TIMEOUT,
        };
        if let Err(e) = crate::certificate::bootstrap::load_client_cert(&config).await {
            eprintln!("kubelet: failed to run Kubelet: unable to load bootstrap kubeconfig: {e}");
            std::process::exit(1);
        }
    }
    let shutdown = shutdown::from_os_signals();
    let current_pem = options.cert_dir.join(crate::certificate::CURRENT_PEM);
    let client = match (&options.kubeconfig.kubeconfig, options.rotate_certificates) {
        // The bootstrapped certificate rotates: the client follows the current one.
        (Some(kubeconfig), true) if current_pem.exists() => {
            match crate::certificate::rotation::client(kubeconfig, &current_pem).await {
                Ok((client, current)) => {
                    let rotator = crate::certificate::rotation::Rotator {
                        client: client.clone(),
                        current,
                        node_name: settings.node_name.clone(),
                    };
                    tokio::spawn(rotator.run(shutdown.clone()));
                    client
                }
                Err(e) => {
                    eprintln!("kubelet: {e}");
                    std::process::exit(EXIT_USAGE);
                }
            }
        }
        _ => match options.kubeconfig.client("kubelet").await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("kubelet: {e}");
                std::process::exit(EXIT_USAGE);
            }
        },
    };
    let config = Config {
        client,
        settings,
        registry: prometheus::Registry::new(),
    };
    let running = match app::start(config, shutdown).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kubelet: {e}");
            std::process::exit(1);
        }
    };
    component_base::systemd::ready();
    if let Err(e) = running.task.await {
        eprintln!("kubelet: {e}");
        std::process::exit(1);
    }
}
