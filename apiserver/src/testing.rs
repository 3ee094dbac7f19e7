//! A real etcd and an in-process kube-apiserver on free ports, with an admin kubeconfig
//! for kube-rs, kubectl and other daemons, for this and other crates' tests.
//!
//! Compiled with the `testing` feature. Another crate's tests use it through a
//! dev-dependency:
//!
//! ```toml
//! [dev-dependencies]
//! apiserver = { workspace = true, features = ["testing"] }
//! ```
//!
//! ```no_run
//! # async fn example() {
//! use apiserver::testing::TestApi;
//! let api = TestApi::start().await; // etcd + apiserver, built-in objects in place
//! let client = api.client().await; // a kube::Client with admin rights
//! let kubeconfig = api.kubeconfig_path(); // for daemons started with --kubeconfig
//! # }
//! ```
//!
//! etcd must be installed (see `store::testing`); `kubectl` only for [`TestApi::kubectl`].

use crate::{Config, Running, TlsConfig};
use component_base::shutdown::{self, Trigger};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use store::testing::EtcdServer;

/// The bearer token of the admin user (group `system:masters`) in every test apiserver.
pub const TOKEN: &str = "pikube-test-admin-token";

/// The kubectl to test with: `$KUBECTL`, else kubectl 1.32 where the Cloud SDK's
/// version dispatcher keeps one (plain `kubectl` there follows the server's version),
/// else `kubectl` from PATH.
pub fn kubectl_binary() -> String {
    if let Ok(k) = std::env::var("KUBECTL") {
        return k;
    }
    let pinned = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32";
    if Path::new(pinned).exists() {
        return pinned.to_string();
    }
    "kubectl".to_string()
}

/// An etcd and an apiserver that stop when dropped; their files live in `dir`.
pub struct TestApi {
    /// Removed on drop: etcd's and the apiserver's files, the kubeconfig, kubectl's cache.
    pub dir: tempfile::TempDir,
    /// Where the apiserver listens (loopback, a free port that stays across restarts).
    pub addr: SocketAddr,
    /// The admin kubeconfig; see [`TestApi::kubeconfig_path`].
    pub kubeconfig: PathBuf,
    config: Config,
    trigger: Option<Trigger>,
    running: Option<Running>,
    /// Declared last so it is dropped after the apiserver was told to stop.
    pub etcd: EtcdServer,
}

fn config(etcd: &EtcdServer, dir: &Path, port: u16) -> Config {
    Config {
        etcd_servers: vec![etcd.endpoint()],
        etcd_prefix: "/registry".into(),
        etcd_tls: etcd.config().tls,
        bind_address: "127.0.0.1".parse().unwrap(),
        secure_port: port,
        advertise_address: None,
        tls: TlsConfig::SelfSigned {
            cert_dir: dir.join("certs"),
        },
        token_auth_file: Some(dir.join("tokens.csv")),
        client_ca_file: None,
        anonymous_auth: false,
        authorization_modes: vec![crate::authz::Mode::AlwaysAllow],
        service_cluster_ip_range: "10.96.0.0/24".parse().unwrap(),
        service_node_port_range: (30000, 32767),
        max_requests_inflight: 400,
        max_mutating_requests_inflight: 200,
        etcd_compaction_interval: Duration::from_secs(300),
        // Nodes in tests are dialled by their InternalIP: a Hostname address would be
        // looked up in DNS, and no test may send a query off the machine.
        kubelet: crate::kubelet_client::KubeletClientConfig {
            preferred_address_types: ["InternalIP", "ExternalIP", "Hostname"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
        // A fresh ES256 key per apiserver, so tests get ServiceAccount tokens.
        service_account: crate::serviceaccount::ServiceAccountConfig {
            issuers: vec![SERVICE_ACCOUNT_ISSUER.to_string()],
            api_audiences: vec![],
            signing_key_file: Some(dir.join("sa.key")),
            key_files: vec![dir.join("sa.pub")],
            max_token_expiration: None,
        },
        encryption_provider_config: None,
        // No controller-manager makes namespaces' default ServiceAccounts here, and other
        // crates' tests expect pods as written (a NoExecute taint evicts at once); the
        // admission tests turn these two on.
        admission: crate::AdmissionConfig::default().without(&[
            crate::AdmissionPlugin::ServiceAccount,
            crate::AdmissionPlugin::DefaultTolerationSeconds,
        ]),
        endpoint_reconciler_type: crate::endpoint_reconciler::ReconcilerType::Lease,
        event_ttl: Duration::from_secs(3600),
    }
}

/// The `iss` of the tokens a test apiserver signs (upstream's usual issuer).
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Writes a new ServiceAccount signing key (`sa.key`) and its public key (`sa.pub`).
fn write_service_account_keys(dir: &Path) {
    let pair = rcgen::KeyPair::generate().expect("generate service account key");
    std::fs::write(dir.join("sa.key"), pair.serialize_pem()).unwrap();
    std::fs::write(dir.join("sa.pub"), pair.public_key_pem()).unwrap();
}

impl TestApi {
    /// Starts etcd and an apiserver, and waits until the built-in objects exist.
    pub async fn start() -> TestApi {
        Self::start_with(|_| {}).await
    }

    /// Like [`TestApi::start`], with the apiserver's configuration changed by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestApi {
        // Quiet unless asked: RUST_LOG=apiserver=debug shows the server's logs.
        if std::env::var_os("RUST_LOG").is_some() {
            component_base::logging::init(0);
        }
        let etcd = tokio::task::spawn_blocking(EtcdServer::start)
            .await
            .unwrap()
            .expect("start etcd");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tokens.csv"),
            format!("{TOKEN},admin,admin-uid,\"system:masters\"\n"),
        )
        .unwrap();
        write_service_account_keys(dir.path());
        let mut config = config(&etcd, dir.path(), 0);
        tweak(&mut config);
        let (trigger, shutdown) = shutdown::channel();
        let mut running = crate::start(config.clone(), shutdown)
            .await
            .expect("start apiserver");
        wait_ready(&mut running).await;
        let addr = running.local_addr;
        config.secure_port = addr.port();
        let kubeconfig = dir.path().join("admin.kubeconfig");
        // Self-signed mode hands back its CA. With certificate files (a kubeadm-style PKI
        // made by a test), the cluster CA of --client-ca-file signed the serving one too.
        let ca = running
            .ca_pem
            .clone()
            .or_else(|| {
                let path = config.client_ca_file.as_ref()?;
                std::fs::read_to_string(path).ok()
            })
            .expect("the serving CA: self-signed mode, or --client-ca-file with cert files");
        write_kubeconfig(&kubeconfig, addr, &ca);
        TestApi {
            etcd,
            dir,
            addr,
            kubeconfig,
            config,
            trigger: Some(trigger),
            running: Some(running),
        }
    }

    /// An admin kubeconfig for this apiserver (server URL, CA, the [`TOKEN`]), written once
    /// at start and valid across restarts, for daemons started with `--kubeconfig` in
    /// process or as child processes.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The apiserver's configuration (its port the one it listens on), to start another
    /// apiserver like it on the same etcd.
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn base_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Stops the apiserver (etcd keeps running).
    pub async fn stop(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.shutdown();
        }
        if let Some(r) = self.running.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), r.task).await;
        }
    }

    /// Starts the apiserver again on the same port, with the same certificates.
    pub async fn restart(&mut self) {
        self.restart_with(true).await
    }

    /// Like [`TestApi::restart`], without waiting for readiness (etcd may be down).
    pub async fn restart_unready(&mut self) {
        self.restart_with(false).await
    }

    async fn restart_with(&mut self, wait: bool) {
        self.stop().await;
        let (trigger, shutdown) = shutdown::channel();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let running = loop {
            match crate::start(self.config.clone(), shutdown.clone()).await {
                Ok(r) => break r,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::info!(error = %e, "apiserver restart: retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("restart apiserver: {e}"),
            }
        };
        let mut running = running;
        if wait {
            wait_ready(&mut running).await;
        }
        self.trigger = Some(trigger);
        self.running = Some(running);
    }

    /// A kube-rs client with the admin kubeconfig.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig_path()).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// Runs the real kubectl against this apiserver.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    /// Runs the real kubectl with `stdin` as its input.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut cmd = std::process::Command::new(kubectl_binary());
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .env("KUBECACHEDIR", self.dir.path().join("kubecache"))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl is installed");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        } else {
            drop(child.stdin.take());
        }
        child.wait_with_output().unwrap()
    }

    /// kubectl that must succeed; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {:?} failed: {}{}",
            args,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.shutdown();
        }
    }
}

/// Waits (bounded) until the apiserver's built-in objects exist, as clients see at /readyz.
async fn wait_ready(running: &mut Running) {
    tokio::time::timeout(Duration::from_secs(30), running.ready())
        .await
        .expect("the apiserver bootstraps within 30s");
}

fn write_kubeconfig(path: &Path, addr: SocketAddr, ca_pem: &str) {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {TOKEN}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\ncurrent-context: test\n"
    );
    std::fs::write(path, text).unwrap();
}

/// Polls `check` until it returns Some, or panics after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Status code and body of a GET of `url` with curl (`-sk`, 10 s limit, `extra`
/// arguments such as `-H "Authorization: Bearer …"` or a client certificate), awaited as
/// a child process so a server in the test's own process keeps serving.
pub async fn curl(url: &str, extra: &[&str]) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sk", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text
        .rsplit_once('\n')
        .expect("curl printed the status code");
    (code.trim().parse().unwrap_or(0), body.to_string())
}
