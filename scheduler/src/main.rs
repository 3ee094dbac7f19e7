use component_base::options::parse_or_exit;
use component_base::{logging, shutdown, EXIT_USAGE};
use scheduler::app::{self, Config};
use scheduler::options::Options;

#[tokio::main]
async fn main() {
    let options: Options = parse_or_exit();
    logging::init(options.verbosity);
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
