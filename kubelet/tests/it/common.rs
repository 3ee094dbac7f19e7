//! What the kubelet's integration tests share: a real etcd + in-process kube-apiserver,
//! a private containerd (from `kubelet::testing`) and an in-process kubelet registered as
//! its own node with a pod CIDR and bridge no other test uses.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use component_base::shutdown::{self, Trigger};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::Client;

pub use apiserver::testing::{wait_until, TestApi};
use kubelet::app::{self, Config, Running, Settings};
pub use kubelet::testing::{TestContainerd, BUSYBOX_IMAGE, PAUSE_IMAGE};

pub const TIMEOUT: Duration = Duration::from_secs(90);

pub async fn containerd() -> TestContainerd {
    TestContainerd::start()
        .await
        .unwrap_or_else(|e| panic!("private containerd: {e}"))
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A control plane, a containerd and a kubelet. Dropping it stops the kubelet, then
/// containerd (removing every pod it ran), then removes the node's bridge.
pub struct TestNode {
    pub kubelet: Option<(Trigger, Running)>,
    pub containerd: TestContainerd,
    pub api: TestApi,
    pub client: Client,
    pub name: String,
    pub bridge: String,
    pub pod_cidr: ipnet::Ipv4Net,
    pub registry: prometheus::Registry,
    dirs: tempfile::TempDir,
    /// Applied to the settings of every kubelet this node starts.
    tweak: Box<dyn Fn(&mut Settings) + Send + Sync>,
    /// Last: the bridge goes after containerd removed the pods on it.
    _bridge: BridgeGuard,
}

/// Removes the node's pod bridge.
struct BridgeGuard(String);

impl Drop for BridgeGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .output();
    }
}

impl TestNode {
    pub async fn start() -> TestNode {
        TestNode::start_with(|_| {}).await
    }

    /// A node whose kubelet settings `tweak` adjusts.
    pub async fn start_with(tweak: impl Fn(&mut Settings) + Send + Sync + 'static) -> TestNode {
        let api = TestApi::start().await;
        let client = api.client().await;
        TestNode::start_on(api, client, None, tweak).await
    }

    /// A node on the control plane `api`, whose kubelet talks to it with `client` (its own
    /// credentials), named `name` if given.
    pub async fn start_on(
        api: TestApi,
        client: Client,
        name: Option<String>,
        tweak: impl Fn(&mut Settings) + Send + Sync + 'static,
    ) -> TestNode {
        let containerd = containerd().await;
        // Distinct per test process and test: node name, bridge and pod CIDR.
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let slot = (std::process::id() % 40) * 6 + n;
        let name = name.unwrap_or_else(|| format!("node-{}-{n}", std::process::id()));
        let bridge = format!("pkt{slot}");
        let bridge_name = bridge.clone();
        let pod_cidr: ipnet::Ipv4Net = format!("10.{}.{}.0/24", 200 + slot / 250, slot % 250)
            .parse()
            .unwrap();
        let dirs = tempfile::Builder::new()
            .prefix("pikube-kubelet-")
            .tempdir()
            .unwrap();
        let mut node = TestNode {
            kubelet: None,
            containerd,
            api,
            client,
            name,
            bridge,
            pod_cidr,
            registry: prometheus::Registry::new(),
            dirs,
            _bridge: BridgeGuard(bridge_name),
            tweak: Box::new(tweak),
        };
        node.start_kubelet().await;
        node
    }

    pub fn settings(&self) -> Settings {
        let mut s = Settings::new(&self.name);
        s.node_ip = Some("127.0.0.1".parse().unwrap());
        s.runtime_endpoint = self.containerd.endpoint();
        s.root_dir = self.dirs.path().join("root");
        s.pod_logs_dir = self.dirs.path().join("pods");
        s.cni_conf_dir = self.containerd.cni_conf_dir().to_path_buf();
        s.pod_cidr = Some(ipnet::IpNet::V4(self.pod_cidr));
        s.cni_bridge = self.bridge.clone();
        // Test kubelets share the host's network namespace: none keeps routes or the
        // masquerade table there (multinode.rs runs kubelets in namespaces of their own).
        s.pod_network_rules = false;
        s.serving = Some("127.0.0.1:0".parse().unwrap());
        s.healthz = Some("127.0.0.1:0".parse().unwrap());
        s.node_status_update_frequency = Duration::from_secs(1);
        s.node_lease_duration = Duration::from_secs(4);
        (self.tweak)(&mut s);
        s
    }

    pub async fn start_kubelet(&mut self) {
        let (trigger, shutdown) = shutdown::channel();
        // Each kubelet registers its metrics afresh.
        self.registry = prometheus::Registry::new();
        let config = Config {
            client: self.client.clone(),
            settings: self.settings(),
            registry: self.registry.clone(),
        };
        let running = app::start(config, shutdown).await.expect("kubelet starts");
        self.kubelet = Some((trigger, running));
    }

    pub async fn stop_kubelet(&mut self) {
        if let Some((trigger, running)) = self.kubelet.take() {
            trigger.shutdown();
            let _ = running.task.await;
        }
    }

    pub fn healthz_addr(&self) -> std::net::SocketAddr {
        self.kubelet
            .as_ref()
            .and_then(|(_, r)| r.healthz_addr)
            .expect("healthz served")
    }

    /// Creates a pod bound to this node from a JSON spec (name, spec fields).
    pub async fn create_pod(&self, name: &str, spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["nodeName"] = self.name.clone().into();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }))
        .unwrap();
        Api::<Pod>::namespaced(self.client.clone(), "default")
            .create(&PostParams::default(), &pod)
            .await
            .unwrap()
    }

    /// Waits until the pod satisfies `check`, returning it.
    pub async fn wait_pod(&self, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Pod {
        let api = Api::<Pod>::namespaced(self.client.clone(), "default");
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        let mut last = None;
        loop {
            if let Some(pod) = api.get_opt(name).await.ok().flatten() {
                if check(&pod) {
                    return pod;
                }
                last = pod.status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; the pod's last status: {last:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some((trigger, running)) = self.kubelet.take() {
            trigger.shutdown();
            running.task.abort();
        }
        // Memory-backed emptyDirs under the kubelet's root: detach them so the directory
        // can go. The fields drop next: containerd removes the pods, then the bridge.
        let root = self.dirs.path().to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for point in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
            if point.starts_with(root.as_str()) {
                let _ = std::process::Command::new("umount")
                    .args(["-l", point])
                    .output();
            }
        }
    }
}

impl TestNode {
    /// Runs `sh -c script` in container `id` through CRI's ExecSync; its stdout, trimmed.
    /// Fails the test on a non-zero exit.
    pub async fn exec_in(&self, id: &str, script: &str) -> String {
        use kubelet::cri::RuntimeService;
        let out = self
            .containerd
            .runtime()
            .exec_sync(
                id,
                vec!["sh".into(), "-c".into(), script.into()],
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The kubelet's metrics in the text format.
    pub fn metrics_text(&self) -> String {
        String::from_utf8(component_base::metrics::encode_text(&self.registry)).unwrap()
    }
}

impl TestNode {
    /// Waits until the kubelet recorded events with all these reasons for the pod.
    pub async fn wait_events(
        &self,
        pod: &str,
        reasons: &[&str],
    ) -> Vec<k8s_openapi::api::core::v1::Event> {
        let api: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(self.client.clone(), "default");
        wait_until(TIMEOUT, "kubelet events", || {
            let api = api.clone();
            async move {
                let events: Vec<_> = api
                    .list(&Default::default())
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .filter(|e| e.involved_object.name.as_deref() == Some(pod))
                    .collect();
                reasons
                    .iter()
                    .all(|r| events.iter().any(|e| e.reason.as_deref() == Some(*r)))
                    .then_some(events)
            }
        })
        .await
    }
}

/// The condition `type_` of a pod is True.
pub fn pod_condition(pod: &Pod, type_: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// `kubectl logs` and `kubectl exec` of pod `talk` (whose container prints
/// `hello-from-pod` and keeps running) work through the apiserver and the kubelet port.
pub async fn kubectl_logs_and_exec_reach(node: &TestNode) {
    let logs = wait_until(
        TIMEOUT,
        "the container's first line in kubectl logs",
        || {
            let out = node.api.kubectl(&["logs", "talk"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            async move { text.contains("hello-from-pod").then_some(text) }
        },
    )
    .await;
    assert_eq!(logs.trim(), "hello-from-pod");
    let out = node
        .api
        .kubectl_ok(&["exec", "talk", "--", "echo", "hi from exec"]);
    assert_eq!(out.trim(), "hi from exec");
}
