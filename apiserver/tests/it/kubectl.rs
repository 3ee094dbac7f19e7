//! kubectl 1.32 as a real client: what a user types, and what they see.

use crate::common::{TestApi, TOKEN};
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_shows_upstream_tables() {
    let api = TestApi::start().await;
    let out = api.kubectl_ok(&["get", "namespaces"]);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "AGE"]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(ns) && l.contains("Active")),
            "{ns} missing in:\n{out}"
        );
    }
    let out = api.kubectl_ok(&["get", "services", "-n", "default"]);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    assert!(
        out.contains("kubernetes") && out.contains("10.96.0.1") && out.contains("443/TCP"),
        "{out}"
    );
    // Wide output and a single object by name.
    let out = api.kubectl_ok(&["get", "svc", "kubernetes", "-o", "wide"]);
    assert!(out.lines().next().unwrap().contains("SELECTOR"), "{out}");
    // Machine-readable output is the object itself.
    let out = api.kubectl_ok(&["get", "ns", "default", "-o", "jsonpath={.status.phase}"]);
    assert_eq!(out, "Active");
    // An unknown object is kubectl's NotFound error.
    let out = api.kubectl(&["get", "configmap", "missing"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("configmaps \"missing\" not found"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_resources_and_explain() {
    let api = TestApi::start().await;
    let out = api.kubectl_ok(&["api-resources"]);
    for (name, short, group) in [
        ("pods", "po", ""),
        ("deployments", "deploy", "apps/v1"),
        ("cronjobs", "cj", "batch/v1"),
        ("leases", "", "coordination.k8s.io/v1"),
        ("endpointslices", "", "discovery.k8s.io/v1"),
        ("ingresses", "ing", "networking.k8s.io/v1"),
        ("poddisruptionbudgets", "pdb", "policy/v1"),
        ("priorityclasses", "pc", "scheduling.k8s.io/v1"),
        ("runtimeclasses", "", "node.k8s.io/v1"),
    ] {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing from api-resources:\n{out}"));
        assert!(line.contains(short) && line.contains(group), "{line}");
    }
    let out = api.kubectl_ok(&["explain", "pods.spec.containers"]);
    assert!(out.contains("KIND:") && out.contains("Pod"), "{out}");
    assert!(out.contains("image"), "{out}");
    let out = api.kubectl_ok(&["explain", "deployment.spec.replicas"]);
    assert!(out.contains("replicas"), "{out}");
}

/// The OpenAPI documents are kept gzipped: a client that accepts gzip (kubectl, curl
/// --compressed) gets them so, any other the plain JSON; both read the same document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_are_sent_gzipped_to_clients_that_take_gzip() {
    let api = TestApi::start().await;
    let auth = format!("Authorization: Bearer {TOKEN}");
    let get = |path: &str, extra: &[&str]| {
        let headers = tempfile::NamedTempFile::new().unwrap();
        let out = std::process::Command::new("curl")
            .args(["-sSk", "--fail", "--max-time", "20", "-H", &auth, "-D"])
            .arg(headers.path())
            .args(extra)
            .arg(format!("{}{path}", api.base_url()))
            .output()
            .expect("curl runs");
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let headers = std::fs::read_to_string(headers.path())
            .unwrap()
            .to_lowercase();
        (headers, out.stdout)
    };
    for path in ["/openapi/v2", "/openapi/v3", "/openapi/v3/api/v1"] {
        let (plain_headers, plain) = get(path, &[]);
        let (gzip_headers, gzipped) = get(path, &["--compressed"]);
        let (raw_headers, raw) = get(path, &["-H", "Accept-Encoding: gzip"]);
        assert!(
            !plain_headers.contains("content-encoding"),
            "{plain_headers}"
        );
        assert!(
            gzip_headers.contains("content-encoding: gzip"),
            "{gzip_headers}"
        );
        assert!(
            raw.len() * 2 < plain.len(),
            "{path}: {} of {} bytes",
            raw.len(),
            plain.len()
        );
        assert!(
            raw_headers.contains("vary: accept-encoding"),
            "{raw_headers}"
        );
        let plain: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        let gzipped: serde_json::Value = serde_json::from_slice(&gzipped).unwrap();
        assert_eq!(plain, gzipped, "{path}");
        assert!(plain.get("paths").is_some_and(|p| p.is_object()), "{path}");
    }
    // kubectl takes them gzipped and reads them (apply's schema, explain).
    let out = api.kubectl_ok(&["explain", "pods.spec.nodeName"]);
    assert!(out.contains("nodeName"), "{out}");
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: busybox:1.36
        ports:
        - containerPort: 80
        env:
        - name: A
          value: "1"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_twice_and_three_way_merge() {
    let api = TestApi::start().await;
    let out = api.kubectl_stdin(&["apply", "-f", "-"], Some(DEPLOYMENT));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "deployment.apps/web created"
    );
    let out = api.kubectl_stdin(&["apply", "-f", "-"], Some(DEPLOYMENT));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "deployment.apps/web unchanged"
    );

    // Someone else changes the object; a changed manifest keeps their change.
    api.kubectl_ok(&["label", "deployment", "web", "owner=ops"]);
    api.kubectl_ok(&["annotate", "deployment", "web", "note=keep"]);
    let changed = DEPLOYMENT
        .replace("image: busybox:1.36", "image: busybox:1.37")
        .replace("value: \"1\"", "value: \"2\"");
    let out = api.kubectl_stdin(&["apply", "-f", "-"], Some(&changed));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "deployment.apps/web configured"
    );
    let got = api.kubectl_ok(&["get", "deployment", "web", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(v["metadata"]["labels"]["owner"], "ops");
    assert_eq!(v["metadata"]["annotations"]["note"], "keep");
    let c = &v["spec"]["template"]["spec"]["containers"];
    assert_eq!(c.as_array().unwrap().len(), 1);
    assert_eq!(c[0]["image"], "busybox:1.37");
    assert_eq!(c[0]["env"][0]["value"], "2");
    assert_eq!(c[0]["ports"][0]["containerPort"], 80);
    assert_eq!(v["metadata"]["generation"], 2);

    // Removing a field from the manifest removes it from the object.
    let without_env = changed.replace(
        "        env:\n        - name: A\n          value: \"2\"\n",
        "",
    );
    let out = api.kubectl_stdin(&["apply", "-f", "-"], Some(&without_env));
    assert!(out.status.success(), "{}", stderr(&out));
    let got = api.kubectl_ok(&["get", "deployment", "web", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert!(
        v["spec"]["template"]["spec"]["containers"][0]
            .get("env")
            .is_none(),
        "{v}"
    );

    // scale through the scale subresource.
    api.kubectl_ok(&["scale", "deployment", "web", "--replicas=5"]);
    let out = api.kubectl_ok(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(out, "5");
    let out = api.kubectl_ok(&["get", "deployments"]);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_commands_send_protobuf() {
    let api = TestApi::start().await;
    assert_eq!(
        api.kubectl_ok(&["create", "namespace", "proto"]).trim(),
        "namespace/proto created"
    );
    assert_eq!(
        api.kubectl_ok(&[
            "create",
            "configmap",
            "cfg",
            "-n",
            "proto",
            "--from-literal=a=b",
            "--from-literal=c=d"
        ])
        .trim(),
        "configmap/cfg created"
    );
    assert_eq!(
        api.kubectl_ok(&[
            "create",
            "secret",
            "generic",
            "s",
            "-n",
            "proto",
            "--from-literal=password=hunter2"
        ])
        .trim(),
        "secret/s created"
    );
    assert_eq!(
        api.kubectl_ok(&[
            "create",
            "deployment",
            "d",
            "-n",
            "proto",
            "--image=busybox:1.36",
            "--replicas=2"
        ])
        .trim(),
        "deployment.apps/d created"
    );
    assert_eq!(
        api.kubectl_ok(&[
            "create",
            "service",
            "clusterip",
            "svc",
            "-n",
            "proto",
            "--tcp=80:8080"
        ])
        .trim(),
        "service/svc created"
    );
    let cm: serde_json::Value =
        serde_json::from_str(&api.kubectl_ok(&["get", "cm", "cfg", "-n", "proto", "-o", "json"]))
            .unwrap();
    assert_eq!(cm["data"]["a"], "b");
    assert_eq!(cm["data"]["c"], "d");
    let s: serde_json::Value =
        serde_json::from_str(&api.kubectl_ok(&["get", "secret", "s", "-n", "proto", "-o", "json"]))
            .unwrap();
    assert_eq!(s["data"]["password"], "aHVudGVyMg==");
    assert_eq!(s["type"], "Opaque");
    let d: serde_json::Value =
        serde_json::from_str(&api.kubectl_ok(&["get", "deploy", "d", "-n", "proto", "-o", "json"]))
            .unwrap();
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1.36"
    );
    let svc: serde_json::Value =
        serde_json::from_str(&api.kubectl_ok(&["get", "svc", "svc", "-n", "proto", "-o", "json"]))
            .unwrap();
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    assert!(svc["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .starts_with("10.96.0."));
    // A second create of the same name is AlreadyExists.
    let out = api.kubectl(&["create", "namespace", "proto"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("AlreadyExists") || stderr(&out).contains("already exists"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_label_annotate_delete() {
    let api = TestApi::start().await;
    api.kubectl_ok(&["create", "configmap", "p", "--from-literal=a=1"]);
    api.kubectl_ok(&[
        "patch",
        "configmap",
        "p",
        "--type=merge",
        "-p",
        r#"{"data":{"b":"2"}}"#,
    ]);
    api.kubectl_ok(&[
        "patch",
        "configmap",
        "p",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/data/a","value":"10"}]"#,
    ]);
    api.kubectl_ok(&["patch", "configmap", "p", "-p", r#"{"data":{"c":"3"}}"#]);
    let v: serde_json::Value =
        serde_json::from_str(&api.kubectl_ok(&["get", "cm", "p", "-o", "json"])).unwrap();
    assert_eq!(
        v["data"],
        serde_json::json!({ "a": "10", "b": "2", "c": "3" })
    );
    // A failing JSON patch changes nothing.
    let out = api.kubectl(&[
        "patch",
        "configmap",
        "p",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/data/a","value":"nope"},{"op":"remove","path":"/data/b"}]"#,
    ]);
    assert!(!out.status.success());
    let v: serde_json::Value =
        serde_json::from_str(&api.kubectl_ok(&["get", "cm", "p", "-o", "json"])).unwrap();
    assert_eq!(v["data"]["b"], "2");

    api.kubectl_ok(&["label", "cm", "p", "tier=web"]);
    api.kubectl_ok(&["annotate", "cm", "p", "owner=me"]);
    let out = api.kubectl_ok(&["get", "cm", "-l", "tier=web", "-o", "name"]);
    assert_eq!(out.trim(), "configmap/p");
    api.kubectl_ok(&["label", "cm", "p", "tier-"]);
    let out = api.kubectl_ok(&["get", "cm", "-l", "tier=web", "-o", "name"]);
    assert_eq!(out.trim(), "");
    let out = api.kubectl(&["label", "cm", "p", "owner=x"]);
    assert!(out.status.success());
    let out = api.kubectl_ok(&["delete", "cm", "p"]);
    assert_eq!(out.trim(), "configmap \"p\" deleted");
    let out = api.kubectl(&["get", "cm", "p"]);
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manifests_leave_nothing_behind() {
    let api = TestApi::start().await;
    // Malformed YAML.
    let out = api.kubectl_stdin(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata: [unclosed\n"),
    );
    assert!(!out.status.success());
    // An invalid object: the server's 422 reaches the user.
    let bad_pod =
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\nspec:\n  containers:\n  - name: c\n";
    let out = api.kubectl_stdin(&["create", "-f", "-"], Some(bad_pod));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is invalid") && stderr(&out).contains("spec.containers[0].image"),
        "{}",
        stderr(&out)
    );
    // Unknown fields with strict validation (kubectl's default).
    let unknown =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: unk\ndata:\n  a: b\nbogus: 1\n";
    let out = api.kubectl_stdin(&["create", "-f", "-"], Some(unknown));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown field"), "{}", stderr(&out));
    // An invalid name.
    let out = api.kubectl(&["create", "configmap", "Bad_Name"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("RFC 1123"), "{}", stderr(&out));
    let out = api.kubectl_ok(&["get", "pods,configmaps", "-o", "name"]);
    assert!(
        !out.contains("bad") && !out.contains("unk") && !out.contains("Bad_Name"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_streams_changes() {
    let api = TestApi::start().await;
    let mut child = std::process::Command::new(crate::common::kubectl_binary())
        .env("KUBECONFIG", &api.kubeconfig)
        .env("HOME", api.dir.path())
        .args(["get", "configmaps", "-w", "--output-watch-events"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |pattern: &dyn Fn(&str) -> bool, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("kubectl get -w never showed {what}"));
            if pattern(&line) {
                return line;
            }
        }
    };
    // The watch is established once the initial listing (the root CA configmap-less
    // default namespace is empty) has printed; create until the event shows.
    api.kubectl_ok(&["create", "configmap", "w1", "--from-literal=a=b"]);
    wait_for(&|l| l.contains("ADDED") && l.contains("w1"), "ADDED w1");
    api.kubectl_ok(&["label", "cm", "w1", "x=y"]);
    wait_for(
        &|l| l.contains("MODIFIED") && l.contains("w1"),
        "MODIFIED w1",
    );
    api.kubectl_ok(&["delete", "cm", "w1"]);
    wait_for(&|l| l.contains("DELETED") && l.contains("w1"), "DELETED w1");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_can_i_and_whoami() {
    let api = TestApi::start().await;
    // kubectl sends these reviews as protobuf; AlwaysAllow answers yes.
    assert_eq!(
        api.kubectl_ok(&["auth", "can-i", "create", "pods"]).trim(),
        "yes"
    );
    assert_eq!(
        api.kubectl_ok(&["auth", "can-i", "delete", "nodes", "--all-namespaces"])
            .trim(),
        "yes"
    );
    let out = api.kubectl_ok(&["auth", "can-i", "--list"]);
    assert!(out.contains("*.*"), "{out}");
    let out = api.kubectl_ok(&["auth", "whoami", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"]["userInfo"]["username"], "admin");
    assert!(v["status"]["userInfo"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g == "system:masters"));
    // Reviews are answered, not stored: there is nothing to list.
    let out = api.kubectl(&["get", "selfsubjectaccessreviews"]);
    assert!(!out.status.success());
}
