//! The kube-apiserver binary refuses a bad command line with exit code 64 (systemd's
//! RestartPreventExitStatus) before it touches etcd, naming the flag; `--help` exits 0.

use std::process::Command;

#[test]
fn bad_flags_exit_64_naming_the_flag() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kube-apiserver"))
            .args(args)
            .output()
            .expect("run kube-apiserver")
    };
    for args in [
        ["--bogus"],
        ["--secure-port=notanumber"],
        ["--etcd-compaction-interval=soon"],
        ["--max-requests-inflight=-1"],
    ] {
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let flag = args[0].split('=').next().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--etcd-servers"));
    // The Kubernetes version it serves, as the other daemons print theirs.
    let version = run(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    assert_eq!(
        version.trim(),
        format!(
            "kube-apiserver {}",
            component_base::options::KUBERNETES_VERSION
        )
    );
}
