//! The `kube-apiserver` command: parse and validate the flags, serve until a signal. The
//! `kube-apiserver` binary and pikube's multi-call binary both run it.

use std::ffi::OsString;

use crate::options::Options;

/// Runs kube-apiserver with `args` (the program name first, as in `argv`). A bad flag or
/// configuration exits 64, `--help`/`--version` exit 0; a failure to serve exits 1.
pub fn main(args: Vec<OsString>) {
    // The caller's arguments, not the process's: behind pikube they follow its subcommand.
    let options: Options = component_base::options::parse_from_or_exit(args);
    component_base::logging::init(options.verbosity);
    component_base::memory::start_trimmer();
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
        crate::run(config, shutdown).await
    });
    if let Err(e) = result {
        eprintln!("kube-apiserver: {e}");
        std::process::exit(1);
    }
}
