//! A private containerd for tests (behind the `testing` feature), as `apiserver::testing`
//! is for the control plane: its own root, state, sockets, runc root, CNI config dir and
//! CRI settings that work on this kind of host (see ENVIRONMENT.md), with the test images
//! from `hack/images.sh` imported. Dropping it removes every sandbox and container it ran,
//! stops containerd and its shims, unmounts what it mounted and deletes its directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cri::{self, RemoteRuntime, RuntimeService};

/// The pause image `hack/images.sh` imports (upstream's default sandbox image).
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";
/// The busybox image `hack/images.sh` imports.
pub const BUSYBOX_IMAGE: &str = "docker.io/library/busybox:1.35";

/// Every registry host's configuration: only a closed loopback port.
const HOSTS_TOML: &str = "server = \"http://127.0.0.1:1\"\n\n[host.\"http://127.0.0.1:1\"]\n  capabilities = [\"pull\", \"resolve\"]\n";

/// How long containerd may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating the containerd directory: {0}")]
    TempDir(#[source] std::io::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting containerd: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("containerd exited during startup ({status}); its log:\n{log}")]
    Exited { status: String, log: String },
    #[error("containerd's CRI service did not answer within {timeout:?}: {last}")]
    NotReady { timeout: Duration, last: String },
    #[error("hack/images.sh failed ({status}):\n{output}")]
    Images { status: String, output: String },
    #[error("{0}")]
    Cri(#[from] cri::Error),
}

/// A running private containerd.
#[derive(Debug)]
pub struct TestContainerd {
    dir: Option<tempfile::TempDir>,
    child: Option<Child>,
    socket: PathBuf,
    runc_root: PathBuf,
    cni_conf_dir: PathBuf,
}

impl TestContainerd {
    /// Starts containerd, waits for its CRI service and imports the test images.
    pub async fn start() -> Result<TestContainerd, Error> {
        TestContainerd::start_in(None).await
    }

    /// Like [`TestContainerd::start`], with containerd (and so its pods' host side: the
    /// CNI bridge and the pods' veths) in the network namespace `netns`
    /// (`/run/netns/NAME`), as on a node of its own. It runs under `nsenter --net=`,
    /// which keeps the host's mounts (`ip netns exec` remounts /sys and pods then find
    /// no cgroup mount).
    pub async fn start_in_netns(netns: &Path) -> Result<TestContainerd, Error> {
        TestContainerd::start_in(Some(netns)).await
    }

    async fn start_in(netns: Option<&Path>) -> Result<TestContainerd, Error> {
        let dir = tempfile::Builder::new()
            .prefix("pikube-containerd-")
            .tempdir()
            .map_err(Error::TempDir)?;
        let base = dir.path().to_path_buf();
        let socket = base.join("containerd.sock");
        let runc_root = base.join("runc");
        let cni_conf_dir = base.join("net.d");
        let hosts_dir = base.join("certs.d");
        for d in [&cni_conf_dir, &runc_root] {
            std::fs::create_dir_all(d).map_err(|source| Error::Write {
                path: d.clone(),
                source,
            })?;
        }
        // Every registry resolves to a closed loopback port, so a stray pull fails at
        // once instead of leaving the machine.
        for host in [
            "_default",
            "docker.io",
            "registry.k8s.io",
            "quay.io",
            "gcr.io",
        ] {
            let d = hosts_dir.join(host);
            let path = d.join("hosts.toml");
            std::fs::create_dir_all(&d)
                .and_then(|()| std::fs::write(&path, HOSTS_TOML))
                .map_err(|source| Error::Write { path, source })?;
        }
        let config = config_toml(&base, &socket, &runc_root, &cni_conf_dir, &hosts_dir);
        let config_path = base.join("config.toml");
        std::fs::write(&config_path, config).map_err(|source| Error::Write {
            path: config_path.clone(),
            source,
        })?;
        let log_path = base.join("containerd.log");
        let log = std::fs::File::create(&log_path).map_err(|source| Error::Write {
            path: log_path.clone(),
            source,
        })?;
        let log_err = log.try_clone().map_err(Error::Spawn)?;
        // nsenter execs containerd (no fork for a network namespace): the child is
        // containerd itself.
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg("containerd");
                c
            }
            None => Command::new("containerd"),
        };
        let child = command
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(Error::Spawn)?;
        let mut this = TestContainerd {
            dir: Some(dir),
            child: Some(child),
            socket,
            runc_root,
            cni_conf_dir,
        };
        this.wait_ready(&log_path).await?;
        this.import_images().await?;
        Ok(this)
    }

    /// `unix://<socket>`, for `--container-runtime-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// containerd's `cni.conf_dir`, where the kubelet writes its network config.
    pub fn cni_conf_dir(&self) -> &Path {
        &self.cni_conf_dir
    }

    /// The directory holding everything of this instance.
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }

    /// A CRI client of this containerd with its own metrics registry.
    pub fn runtime(&self) -> RemoteRuntime {
        let metrics = cri::Metrics::new(&prometheus::Registry::new())
            .unwrap_or_else(|e| panic!("registering CRI metrics in a fresh registry: {e}"));
        RemoteRuntime::new(
            &self.endpoint(),
            cri::remote::DEFAULT_REQUEST_TIMEOUT,
            metrics,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn wait_ready(&mut self, log_path: &Path) -> Result<(), Error> {
        let deadline = Instant::now() + START_TIMEOUT;
        let runtime = self.runtime();
        let mut last = String::from("socket not created");
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(Error::Exited {
                        status: status.to_string(),
                        log: std::fs::read_to_string(log_path).unwrap_or_default(),
                    });
                }
            }
            if self.socket.exists() {
                match runtime.version().await {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e.to_string(),
                }
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    timeout: START_TIMEOUT,
                    last,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn import_images(&self) -> Result<(), Error> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/images.sh");
        let output = tokio::process::Command::new("bash")
            .arg(&script)
            .arg("--address")
            .arg(&self.socket)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(Error::Spawn)?;
        if output.status.success() {
            Ok(())
        } else {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            Err(Error::Images {
                status: output.status.to_string(),
                output: text,
            })
        }
    }

    /// Stops and removes every sandbox (and so every container) through CRI.
    async fn remove_all(&self) {
        let runtime = self.runtime();
        if let Ok(containers) = runtime.list_containers(None).await {
            for c in containers {
                let _ = runtime.stop_container(&c.id, 0).await;
                let _ = runtime.remove_container(&c.id).await;
            }
        }
        if let Ok(sandboxes) = runtime.list_pod_sandbox(None).await {
            for s in sandboxes {
                let _ = runtime.stop_pod_sandbox(&s.id).await;
                let _ = runtime.remove_pod_sandbox(&s.id).await;
                // runc leaves the pod-level cgroups the kubelet asked for.
                if let Some(uid) = s.metadata.as_ref().map(|m| m.uid.as_str()) {
                    crate::cm::remove_pod_cgroups_within(
                        crate::app::CgroupDriver::Cgroupfs,
                        uid,
                        Duration::from_secs(3),
                    )
                    .await;
                }
            }
        }
    }

    fn cleanup(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // CRI cleanup on a thread of its own: Drop may run inside a runtime.
        std::thread::scope(|s| {
            s.spawn(|| {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(async {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(60), self.remove_all()).await;
                    });
                }
            });
        });
        // Whatever CRI could not remove: runc kills and deletes it.
        let ns_root = self.runc_root.join("k8s.io");
        if let Ok(out) = Command::new("runc")
            .arg("--root")
            .arg(&ns_root)
            .args(["list", "-q"])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&ns_root)
                    .args(["delete", "--force", id])
                    .output();
            }
        }
        terminate(&mut child);
        // Shims outlive containerd; ours name our socket on their command line.
        for pid in processes_mentioning(&self.socket) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        unmount_under(self.dir());
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

impl Drop for TestContainerd {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn config_toml(
    base: &Path,
    socket: &Path,
    runc_root: &Path,
    cni_conf_dir: &Path,
    hosts_dir: &Path,
) -> String {
    let mut s = String::new();
    let b = base.display();
    let _ = write!(
        s,
        r#"version = 2
root = "{b}/root"
state = "{b}/state"

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{b}/containerd-ttrpc.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{b}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{runc}"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{cni}"

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "{hosts}"
"#,
        socket = socket.display(),
        pause = PAUSE_IMAGE,
        runc = runc_root.display(),
        cni = cni_conf_dir.display(),
        hosts = hosts_dir.display(),
    );
    s
}

/// SIGTERM, then SIGKILL if it has not exited within 10 s.
fn terminate(child: &mut Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0)) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Processes whose command line contains `needle`.
fn processes_mentioning(needle: &Path) -> Vec<i32> {
    let needle = needle.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle.as_str()))
                .unwrap_or(false)
        })
        .collect()
}

/// Detaches every mount at or below `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| p.starts_with(prefix.as_str()))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = rustix::mount::unmount(p.as_str(), rustix::mount::UnmountFlags::DETACH);
    }
}
