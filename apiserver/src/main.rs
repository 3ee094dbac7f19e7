fn main() {
    let options: apiserver::options::Options = component_base::options::parse_or_exit();
    component_base::logging::init(options.verbosity);
    let config = match options.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kube-apiserver: {e}");
            std::process::exit(component_base::EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kube-apiserver: starting the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async {
        let shutdown = component_base::shutdown::from_os_signals();
        apiserver::run(config, shutdown).await
    });
    if let Err(e) = result {
        eprintln!("kube-apiserver: {e}");
        std::process::exit(1);
    }
}
