//! The kube-controller-manager binary refuses a bad command line with exit code 64
//! (systemd's RestartPreventExitStatus), naming the flag; `--help` exits 0.

use std::process::Command;

#[test]
fn bad_flags_exit_64_naming_the_flag() {
    let run = |arg: &str| {
        Command::new(env!("CARGO_BIN_EXE_kube-controller-manager"))
            .arg(arg)
            .output()
            .expect("run kube-controller-manager")
    };
    for (arg, named) in [
        ("--no-such-flag", "--no-such-flag"),
        ("--secure-port=notanumber", "--secure-port"),
        ("--cluster-cidr=10.0.0.0/40", "--cluster-cidr"),
        (
            "--node-monitor-grace-period=soon",
            "--node-monitor-grace-period",
        ),
    ] {
        let out = run(arg);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{arg}: {stderr}");
        assert!(stderr.contains(named), "{arg}: {stderr}");
    }
    let help = run("--help");
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--controllers"));
}
