use clap::Parser;
use component_base::{logging, shutdown, EXIT_USAGE};
use kubelet::app::{self, Config};
use kubelet::options::Options;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let options = Options::parse();
    logging::init(options.verbosity);
    let settings = match options.resolve() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kubelet: {e}");
            std::process::exit(EXIT_USAGE);
        }
    };
    let client = match options.kubeconfig.client("kubelet").await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kubelet: {e}");
            std::process::exit(EXIT_USAGE);
        }
    };
    let config = Config {
        client,
        settings,
        registry: prometheus::Registry::new(),
    };
    let running = match app::start(config, shutdown::from_os_signals()).await {
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
