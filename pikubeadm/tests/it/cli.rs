//! The pikubeadm binary as a user runs it: files written, a rerun changes nothing, bad
//! flags exit 64.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn pikubeadm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pikubeadm"))
        .args(args)
        .output()
        .expect("run pikubeadm")
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn certs_twice_is_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = format!("--dir={}", tmp.path().display());
    let args = [
        "certs",
        &dir,
        "--cluster-name=pi",
        "--control-plane=127.0.0.1",
        "--service-cidr=10.43.0.0/16",
        "--node=pi-1=127.0.0.1",
        "--node=pi-2=127.0.0.2",
    ];
    let out = pikubeadm(&args);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("[certs] ca: generated"), "{stdout}");
    let first = snapshot(tmp.path());
    for f in [
        "ca.crt",
        "ca.key",
        "apiserver.crt",
        "apiserver-kubelet-client.key",
        "sa.key",
        "sa.pub",
        "admin.conf",
        "scheduler.conf",
        "controller-manager.conf",
        "kube-proxy.conf",
        "nodes/pi-1/kubelet.conf",
        "nodes/pi-2/kubelet.crt",
    ] {
        assert!(first.contains_key(&tmp.path().join(f)), "{f} missing");
    }
    let out = pikubeadm(&args);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("generated") && !stdout.contains("renewed"),
        "{stdout}"
    );
    assert_eq!(snapshot(tmp.path()), first);
}

#[test]
fn bad_flags_exit_64() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = format!("--dir={}", tmp.path().display());
    for args in [
        vec!["certs", dir.as_str()],
        vec![
            "certs",
            dir.as_str(),
            "--control-plane=10.0.0.1",
            "--node=pi-1",
        ],
        vec![
            "certs",
            dir.as_str(),
            "--control-plane=10.0.0.1",
            "--service-cidr=x",
        ],
        vec!["certs", dir.as_str(), "--control-plane=10.0.0.1", "--bogus"],
    ] {
        let out = pikubeadm(&args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty());
    }
    assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none());
    assert!(pikubeadm(&["--help"]).status.success());
}
