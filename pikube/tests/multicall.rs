//! The `pikube` binary run through links named as each daemon, or with the daemon as its
//! first argument, is that daemon: its clap name in `--version` and `--help`, exit 64 on a
//! bad flag, its own messages; a name it does not know exits 64. One daemon (the
//! scheduler) also runs for real through a link, against a real apiserver and etcd.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use apiserver::testing::{wait_until, TestApi};
use component_base::options::KUBERNETES_VERSION;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use serde_json::json;

const PIKUBE: &str = env!("CARGO_BIN_EXE_pikube");

const COMMANDS: [&str; 6] = [
    "kube-apiserver",
    "kube-scheduler",
    "kube-controller-manager",
    "kubelet",
    "kube-proxy",
    "pikubeadm",
];

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A symlink to pikube named `name` in `dir`.
fn link(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::os::unix::fs::symlink(PIKUBE, &path).expect("symlink to pikube");
    path
}

/// `--version`, `--help` and a bad flag answered as `name`, by `program` run with
/// `prefix` (a link named `name` and no prefix, or pikube and `[name]`).
fn assert_answers_as(name: &str, program: &Path, prefix: &[&str]) {
    let with = |arg: &str| {
        let mut args = prefix.to_vec();
        args.push(arg);
        run(program, &args)
    };
    let version = with("--version");
    assert_eq!(version.status.code(), Some(0), "{name} --version");
    let stdout = text(&version.stdout);
    assert!(stdout.starts_with(&format!("{name} ")), "{name}: {stdout}");

    let help = with("--help");
    assert_eq!(help.status.code(), Some(0), "{name} --help");
    let stdout = text(&help.stdout);
    assert!(
        stdout.contains(&format!("Usage: {name} ")),
        "{name} --help: {stdout}"
    );

    let bad = with("--no-such-flag");
    let stderr = text(&bad.stderr);
    assert_eq!(
        bad.status.code(),
        Some(64),
        "{name} --no-such-flag: {stderr}"
    );
    assert!(stderr.contains("--no-such-flag"), "{name}: {stderr}");
    assert!(
        stderr.contains(&format!("Usage: {name} ")),
        "{name}: {stderr}"
    );
}

#[test]
fn a_link_named_as_a_daemon_runs_that_daemon() {
    let dir = tempfile::tempdir().unwrap();
    for name in COMMANDS {
        assert_answers_as(name, &link(dir.path(), name), &[]);
    }
}

#[test]
fn the_first_argument_names_the_daemon() {
    for name in COMMANDS {
        assert_answers_as(name, Path::new(PIKUBE), &[name]);
    }
}

#[test]
fn a_daemon_validates_its_own_configuration() {
    // Past clap, into the daemon's own checks: its messages carry its name.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.kubeconfig");
    let missing = missing.to_str().unwrap();
    for (name, args) in [
        ("kube-scheduler", vec!["--kubeconfig", missing]),
        ("kube-controller-manager", vec!["--kubeconfig", missing]),
        ("kube-proxy", vec!["--kubeconfig", missing]),
        ("kube-apiserver", vec!["--max-requests-inflight=0"]),
    ] {
        let out = run(&link(dir.path(), name), &args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{name}: {stderr}");
        assert!(stderr.contains(&format!("{name}: ")), "{name}: {stderr}");
    }
}

#[test]
fn unknown_commands_exit_64() {
    let out = run(Path::new(PIKUBE), &["nosuch", "--help"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("unknown command \"nosuch\""), "{stderr}");

    // A link with a name pikube does not know falls back to the first argument.
    let dir = tempfile::tempdir().unwrap();
    let odd = link(dir.path(), "kube-nosuch");
    assert_eq!(run(&odd, &["nosuch"]).status.code(), Some(64));
    let version = run(&odd, &["kube-proxy", "--version"]);
    assert_eq!(
        text(&version.stdout),
        format!("kube-proxy {KUBERNETES_VERSION}\n")
    );

    // No command at all: the list, on stderr, and 64.
    let bare = run(Path::new(PIKUBE), &[]);
    assert_eq!(bare.status.code(), Some(64));
    assert!(text(&bare.stderr).contains("kube-apiserver"));
}

#[test]
fn help_lists_every_daemon() {
    let out = run(Path::new(PIKUBE), &["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    for name in COMMANDS {
        assert!(stdout.contains(&format!("  {name} ")), "{name}: {stdout}");
    }
    let version = run(Path::new(PIKUBE), &["--version"]);
    assert_eq!(version.status.code(), Some(0));
    assert!(text(&version.stdout).starts_with("pikube "));
}

/// kube-scheduler through a link to pikube binds a pending pod, and stops cleanly on
/// SIGTERM: its own runtime, client, serving and signal handling work in the multi-call
/// binary.
#[tokio::test]
async fn the_scheduler_through_pikube_binds_a_pod_and_stops_on_sigterm() {
    let api = TestApi::start().await;
    let client = api.client().await;
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    }))
    .unwrap();
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");

    let dir = tempfile::tempdir().unwrap();
    let scheduler = tokio::process::Command::new(link(dir.path(), "kube-scheduler"))
        .args([
            "--kubeconfig",
            api.kubeconfig_path().to_str().unwrap(),
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start kube-scheduler through pikube");

    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p1", "namespace": "default"},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]},
    }))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    let node_name = wait_until(Duration::from_secs(30), "p1 bound", || {
        let pods = pods.clone();
        async move { pods.get("p1").await.ok()?.spec?.node_name }
    })
    .await;
    assert_eq!(node_name, "n1");

    let pid = scheduler.id().expect("scheduler pid").to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    let out = tokio::time::timeout(Duration::from_secs(30), scheduler.wait_with_output())
        .await
        .expect("kube-scheduler stops within 30s of SIGTERM")
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
