//! The kubelet binary refuses a bad command line or a bad KubeletConfiguration with exit
//! code 64 (systemd's RestartPreventExitStatus) before it binds a port, naming what is
//! wrong; `--help` exits 0 and tells which authentication defaults a config file changes.

use std::process::Command;

fn kubelet(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kubelet"))
        .args(args)
        .output()
        .expect("run kubelet")
}

#[test]
fn bad_flags_and_config_values_exit_64_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n{body}\n"
            ),
        )
        .unwrap();
        format!("--config={}", path.display())
    };
    let bad_mode = config("mode.yaml", "authorization: {mode: Foo}");
    let bad_ttl = config("ttl.yaml", "authentication: {webhook: {cacheTTL: soon}}");
    for (arg, named) in [
        ("--bogus", "--bogus"),
        ("--port=notanumber", "--port"),
        ("--anonymous-auth=maybe", "--anonymous-auth"),
        (
            "--authentication-token-webhook-cache-ttl=soon",
            "--authentication-token-webhook-cache-ttl",
        ),
        ("--authorization-mode=Foo", "want AlwaysAllow or Webhook"),
        (&bad_mode, r#"invalid authorization.mode "Foo""#),
        (&bad_ttl, "authentication.webhook.cacheTTL"),
    ] {
        let out = kubelet(&[arg, "--hostname-override=n"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{arg}: {stderr}");
        assert!(stderr.contains(named), "{arg}: {stderr}");
    }
    let help = kubelet(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("[default: AlwaysAllow; Webhook with --config (authorization.mode)]"),
        "{help}"
    );
}
