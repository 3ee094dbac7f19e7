//! pikube: the five daemons and pikubeadm in one executable, as busybox and k3s do. Their
//! tokio, hyper, rustls, kube and k8s-openapi are then linked once instead of five times,
//! which is most of each daemon's size.
//!
//! The command runs is the file name pikube was started as (a symlink or hard link named
//! `kube-apiserver`, `kubelet`, ...), else its first argument: `pikube kubelet --flags`.
//! Either way the daemon sees its own name as `argv[0]`, so its help, version and usage
//! messages are its own.

use std::ffi::OsString;
use std::path::Path;

use component_base::EXIT_USAGE;

/// A command pikube runs: its name (as invoked) and its `main`, which takes the whole
/// `argv` with that name first.
struct Command {
    name: &'static str,
    main: fn(Vec<OsString>),
    about: &'static str,
}

const COMMANDS: &[Command] = &[
    Command {
        name: "kube-apiserver",
        main: apiserver::cli::main,
        about: "the Kubernetes REST API over etcd",
    },
    Command {
        name: "kube-scheduler",
        main: scheduler::cli::main,
        about: "binds pending Pods to Nodes",
    },
    Command {
        name: "kube-controller-manager",
        main: controller_manager::cli::main,
        about: "the control loops that make desired state real",
    },
    Command {
        name: "kubelet",
        main: kubelet::cli::main,
        about: "the node agent: runs the node's Pods on containerd",
    },
    Command {
        name: "kube-proxy",
        main: kube_proxy::cli::main,
        about: "programs Services into the node's nftables",
    },
    Command {
        name: "pikubeadm",
        main: pikubeadm::cli::main,
        about: "the cluster's PKI, kubeconfigs and bootstrap tokens",
    },
];

fn find(name: &str) -> Option<&'static Command> {
    COMMANDS.iter().find(|c| c.name == name)
}

fn help() -> String {
    let mut text = format!(
        "pikube {}: the pikube daemons (Kubernetes {}) in one executable.\n\n\
         Usage: pikube <command> [flags...]\n   or: <command> [flags...]   (a link to pikube named as the command)\n\n\
         Commands:\n",
        env!("CARGO_PKG_VERSION"),
        component_base::options::KUBERNETES_VERSION
    );
    for c in COMMANDS {
        text.push_str(&format!("  {:<25}{}\n", c.name, c.about));
    }
    text.push_str("\n`pikube <command> --help` shows a command's flags.\n");
    text
}

fn main() {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    // Run as a link named after a command: argv is already that command's.
    let invoked = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str());
    if let Some(command) = invoked.and_then(find) {
        return (command.main)(args);
    }
    let Some(first) = args.get(1).map(|a| a.to_string_lossy().into_owned()) else {
        eprint!("{}", help());
        std::process::exit(EXIT_USAGE);
    };
    match first.as_str() {
        "-h" | "--help" | "help" => print!("{}", help()),
        "-V" | "--version" | "version" => println!(
            "pikube {} (Kubernetes {})",
            env!("CARGO_PKG_VERSION"),
            component_base::options::KUBERNETES_VERSION
        ),
        name => match find(name) {
            Some(command) => {
                // The command's argv: its own name, then what followed it.
                args.remove(0);
                (command.main)(args)
            }
            None => {
                let names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
                eprintln!(
                    "pikube: unknown command {name:?} (commands: {}; see pikube --help)",
                    names.join(", ")
                );
                std::process::exit(EXIT_USAGE);
            }
        },
    }
}
