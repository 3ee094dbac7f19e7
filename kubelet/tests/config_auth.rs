//! The kubelet binary configured by a KubeletConfiguration file (`--config`) serves its
//! port with upstream's v1beta1 defaults: anonymous requests refused (401), bearer
//! tokens reviewed by the apiserver (TokenReview), and with `authorization.mode: Webhook`
//! each request a SubjectAccessReview for `nodes/<subresource>`. A flag given on the
//! command line still wins over the file.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use apiserver::authz::Mode;
use apiserver::testing::{curl, wait_until, TestApi, TOKEN};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kubelet::testing::TestContainerd;

const TIMEOUT: Duration = Duration::from_secs(90);

/// Starts the kubelet binary as node `name`, with its files under `dir`, the
/// KubeletConfiguration `config` and the extra `flags`; returns it (killed on drop) and
/// the kubelet port its Node reports.
async fn start_kubelet(
    api: &TestApi,
    containerd: &TestContainerd,
    dir: &Path,
    name: &str,
    config: &Path,
    flags: &[&str],
) -> (tokio::process::Child, u16) {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("kubelet.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubelet"))
        .arg(format!("--config={}", config.display()))
        .arg(format!("--kubeconfig={}", api.kubeconfig_path().display()))
        .arg(format!("--hostname-override={name}"))
        .arg("--node-ip=127.0.0.1")
        .arg(format!(
            "--container-runtime-endpoint={}",
            containerd.endpoint()
        ))
        .arg(format!("--root-dir={}", dir.join("root").display()))
        .arg(format!(
            "--cni-conf-dir={}",
            containerd.cni_conf_dir().display()
        ))
        .arg("--pod-network-rules=false")
        .args(flags)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .expect("start the kubelet binary");
    let nodes: Api<Node> = Api::all(api.client().await);
    let port = wait_until(TIMEOUT, "the kubelet registers its Node", || {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("the kubelet exited ({status}):\n{log}");
        }
        let nodes = nodes.clone();
        async move {
            let node = nodes.get_opt(name).await.ok().flatten()?;
            let port = node.status?.daemon_endpoints?.kubelet_endpoint?.port;
            u16::try_from(port).ok().filter(|p| *p != 0)
        }
    })
    .await;
    (child, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_refuses_anonymous_requests_unless_a_flag_allows_them() {
    let api = TestApi::start_with(|c| c.authorization_modes = vec![Mode::Node, Mode::Rbac]).await;
    let containerd = TestContainerd::start()
        .await
        .unwrap_or_else(|e| panic!("private containerd: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kubelet.yaml");
    // Nothing about authentication: the file's defaults apply.
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             address: 127.0.0.1\nport: 0\nhealthzPort: 0\npodLogsDir: {}\n\
             authorization:\n  mode: Webhook\n",
            dir.path().join("pods").display()
        ),
    )
    .unwrap();
    let id = std::process::id();
    let (_file_only, port) = start_kubelet(
        &api,
        &containerd,
        dir.path(),
        &format!("config-auth-{id}"),
        &config,
        &[],
    )
    .await;
    let pods = format!("https://127.0.0.1:{port}/pods");
    let (code, body) = curl(&pods, &[]).await;
    assert_eq!((code, body.trim()), (401, "Unauthorized"));
    let (code, body) = curl(&pods, &["-H", "Authorization: Bearer bogus"]).await;
    assert_eq!((code, body.trim()), (401, "Unauthorized"));
    // The apiserver reviews the admin's token (system:masters) and allows it.
    let admin = format!("Authorization: Bearer {TOKEN}");
    let (code, body) = curl(&pods, &["-H", &admin]).await;
    assert_eq!(code, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["kind"], "PodList", "{body}");

    // --anonymous-auth on the command line wins over the file: an anonymous request is
    // authenticated, then refused by the apiserver's authorization (the file's Webhook).
    let (_anonymous_flag, port) = start_kubelet(
        &api,
        &containerd,
        dir.path(),
        &format!("config-auth-flag-{id}"),
        &config,
        &["--anonymous-auth"],
    )
    .await;
    let (code, body) = curl(&format!("https://127.0.0.1:{port}/pods"), &[]).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        body.trim(),
        "Forbidden (user=system:anonymous, verb=get, resource=nodes, subresource=proxy)"
    );
}
