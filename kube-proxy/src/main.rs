use component_base::options::parse_or_exit;
use component_base::{logging, shutdown, EXIT_USAGE};
use kube_proxy::app::{self, Config};
use kube_proxy::nftables::NftCommand;
use kube_proxy::options::Options;

/// One thread: kube-proxy's work is a sequence (watch events, then a sync that runs
/// `nft`), and on a Pi every extra worker thread's malloc arena keeps memory that a
/// cold start at 10,000 Services freed (measured: 69 MiB resident with a worker per
/// core). The userspace proxier's copying shares it too.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let options: Options = parse_or_exit();
    logging::init(options.verbosity);
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
        if let Err(e) = kube_proxy::dns::cleanup(&nft.binary).await {
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
