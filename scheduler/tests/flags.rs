//! The kube-scheduler binary refuses a bad command line with exit code 64 (systemd's
//! RestartPreventExitStatus), naming the flag; `--help` and `--version` exit 0.

use std::process::{Command, Output};

fn kube_scheduler(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kube-scheduler"))
        .args(args)
        .output()
        .expect("run kube-scheduler")
}

#[test]
fn bad_flags_exit_64_naming_the_flag() {
    for (arg, named) in [
        ("--bogus", "--bogus"),
        ("--secure-port=notanumber", "--secure-port"),
        (
            "--leader-elect-lease-duration=soon",
            "--leader-elect-lease-duration",
        ),
    ] {
        let out = kube_scheduler(&[arg]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{arg}: {stderr}");
        assert!(stderr.contains(named), "{arg}: {stderr}");
    }
    let help = kube_scheduler(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--secure-port"));
    let version = kube_scheduler(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("kube-scheduler "));
}
