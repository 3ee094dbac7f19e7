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
    if let Some(bootstrap) = &options.bootstrap_kubeconfig {
        let Some(kubeconfig) = options.kubeconfig.kubeconfig.clone() else {
            eprintln!(
                "kubelet: --bootstrap-kubeconfig needs --kubeconfig (where to write the new one)"
            );
            std::process::exit(EXIT_USAGE);
        };
        let config = kubelet::certificate::bootstrap::Config {
            kubeconfig,
            bootstrap_kubeconfig: bootstrap.clone(),
            cert_dir: options.cert_dir.clone(),
            node_name: settings.node_name.clone(),
            timeout: kubelet::certificate::bootstrap::DEFAULT_TIMEOUT,
        };
        if let Err(e) = kubelet::certificate::bootstrap::load_client_cert(&config).await {
            eprintln!("kubelet: failed to run Kubelet: unable to load bootstrap kubeconfig: {e}");
            std::process::exit(1);
        }
    }
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
