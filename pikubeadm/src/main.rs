use clap::Parser;
use component_base::EXIT_USAGE;
use pikubeadm::options::{Cli, Command};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print and succeed; a bad flag is a usage error (64), as
        // every pikube command reports one.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let _ = e.print();
            std::process::exit(EXIT_USAGE);
        }
    };
    match cli.command {
        Command::Certs(options) => {
            let config = match options.into_config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("pikubeadm certs: {e}");
                    std::process::exit(EXIT_USAGE);
                }
            };
            match pikubeadm::certs::run(&config) {
                Ok(report) => {
                    for e in &report.entries {
                        println!("[certs] {}: {} ({})", e.what, e.outcome, e.path.display());
                    }
                    println!("[certs] CA public key hash: {}", report.ca_cert_hash);
                }
                Err(e) => {
                    eprintln!("pikubeadm certs: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
}
