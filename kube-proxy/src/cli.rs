//! The `kube-proxy` command: parse the flags, then either clean up (`--cleanup`) or start
//! the proxier and wait for it to stop. The `kube-proxy` binary and pikube's multi-call
//! binary both run it.

use std::ffi::OsString;

use component_base::{logging, shutdown, EXIT_USAGE};

use crate::app::{self, Config};
use crate::nftables::NftCommand;
use crate::options::Options;

/// Runs kube-proxy with `args` (the program name first, as in `argv`). A bad flag exits
/// 64, `--help`/`--version` exit 0; a failure to start or to keep running exits 1.
pub fn main(args: Vec<OsString>) {
    // The caller's arguments, not the process's: behind pikube they follow its subcommand.
    let options: Options = component_base::options::parse_from_or_exit(args);
    run(options)
}

/// One thread: kube-proxy's work is a sequence (watch events, then a sync that runs
/// `nft`), and on a Pi every extra worker thread's malloc arena keeps memory that a
/// cold start at 10,000 Services freed (measured: 69 MiB resident with a worker per
/// core). The userspace proxier's copying shares it too.
#[tokio::main(flavor = "current_thread")]
async fn run(options: Options) {
    logging::init(options.verbosity);
    component_base::memory::start_trimmer();
    let resolved = match options.resolve() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kube-proxy: {e}");
            std::process::exit(EXIT_USAGE);
        }
    };
    let nft = NftCommand::default();
    if resolved.cleanup {
        // Node-local DNS's table and link go too (whether or not it was enabled).
        if let Err(e) = crate::dns::cleanup(&nft.binary).await {
            eprintln!("kube-proxy: cleanup: {e}");
            std::process::exit(1);
        }
        match app::cleanup(&nft).await {
            Ok(()) => {
                tracing::info!("removed the kube-proxy nftables table");
                return;
            }
            Err(e) => {
                eprintln!("kube-proxy: cleanup: {e}");
                std::process::exit(1);
            }
        }
    }
    let client = match resolved.kubeconfig.client("kube-proxy").await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kube-proxy: {e}");
            std::process::exit(EXIT_USAGE);
        }
    };
    let config = Config {
        client,
        proxy: resolved.config,
        registry: prometheus::Registry::new(),
        nft,
    };
    let running = match app::start(config, shutdown::from_os_signals()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kube-proxy: {e}");
            std::process::exit(1);
        }
    };
    component_base::systemd::ready();
    if let Err(e) = running.task.await {
        eprintln!("kube-proxy: {e}");
        std::process::exit(1);
    }
}
