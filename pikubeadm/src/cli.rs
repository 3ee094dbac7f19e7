//! The `pikubeadm` command: `certs`, `token create` and `join`. The `pikubeadm` binary and
//! pikube's multi-call binary both run it.

use std::ffi::OsString;

use component_base::EXIT_USAGE;

use crate::options::{Cli, Command, JoinOptions, TokenCommand, TokenCreateOptions};
use crate::token;

/// Runs pikubeadm with `args` (the program name first, as in `argv`). A bad argument
/// exits 64, `--help`/`--version` exit 0; a failed command exits 1.
pub fn main(args: Vec<OsString>) {
    // The caller's arguments, not the process's: behind pikube they follow its subcommand.
    let cli: Cli = component_base::options::parse_from_or_exit(args);
    match cli.command {
        Command::Certs(options) => {
            let config = match options.into_config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("pikubeadm certs: {e}");
                    std::process::exit(EXIT_USAGE);
                }
            };
            match crate::certs::run(&config) {
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
        Command::Token(TokenCommand::Create(options)) => run_async(token_create(options)),
        Command::Join(options) => run_async(join(options)),
    }
}

/// Runs an API-talking command; its error exits 1 (64 for a bad argument).
fn run_async(work: impl std::future::Future<Output = Result<(), (i32, String)>>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pikubeadm: {e}");
            std::process::exit(1);
        }
    };
    if let Err((code, message)) = runtime.block_on(work) {
        eprintln!("pikubeadm: {message}");
        std::process::exit(code);
    }
}

async fn token_create(o: TokenCreateOptions) -> Result<(), (i32, String)> {
    let token = o.token.clone().unwrap_or_else(token::generate);
    token::parse(&token).map_err(|e| (EXIT_USAGE, e.to_string()))?;
    let (server, ca) = token::cluster_of(&o.kubeconfig).map_err(|e| (1, e.to_string()))?;
    let client = component_base::options::KubeconfigOptions {
        kubeconfig: Some(o.kubeconfig.clone()),
        ..Default::default()
    }
    .client("pikubeadm")
    .await
    .map_err(|e| (1, e.to_string()))?;
    let spec = token::TokenSpec {
        token: token.clone(),
        ttl: (!o.ttl.is_zero()).then_some(o.ttl),
        description: o.description.clone(),
        usages: o.usages.clone(),
        groups: o.groups.clone(),
    };
    token::create(client, &spec, &server, &ca)
        .await
        .map_err(|e| (1, e.to_string()))?;
    if o.print_join_command {
        let hash =
            token::ca_cert_hash(&ca).ok_or((1, "the cluster CA does not parse".to_string()))?;
        println!("{}", token::join_command(&server, &token, &hash));
    } else {
        println!("{token}");
    }
    Ok(())
}

async fn join(o: JoinOptions) -> Result<(), (i32, String)> {
    let server = if o.api_server_endpoint.contains("://") {
        o.api_server_endpoint.clone()
    } else {
        format!("https://{}", o.api_server_endpoint)
    };
    let kubeconfig = token::discover(&server, &o.token, &o.discovery_token_ca_cert_hash)
        .await
        .map_err(|e| match e {
            token::Error::Token(_) | token::Error::Hash(_) => (EXIT_USAGE, e.to_string()),
            other => (1, other.to_string()),
        })?;
    token::write_bootstrap_kubeconfig(&o.bootstrap_kubeconfig, &kubeconfig)
        .map_err(|e| (1, e.to_string()))?;
    println!(
        "[join] the cluster CA matches the pinned hash; wrote {}\n[join] start the kubelet with --bootstrap-kubeconfig={} --kubeconfig=/etc/kubernetes/kubelet.conf",
        o.bootstrap_kubeconfig.display(),
        o.bootstrap_kubeconfig.display()
    );
    Ok(())
}
