//! A real, throwaway etcd for tests and benches.
//!
//! [`EtcdServer::start`] launches the `etcd` binary (`$PIKUBE_ETCD`, else
//! `/usr/bin/etcd`, else `etcd` on `PATH`) as a single-member cluster in a fresh temp
//! dir on free loopback ports, waits until it is healthy, and kills it and removes its
//! data when dropped. With [`EtcdServerOptions::tls`] it serves clients over TLS only and
//! requires client certificates (`--client-cert-auth`), as kubeadm runs etcd, with an
//! [`EtcdPki`] made in its temp dir.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use store::{testing::EtcdServer, EtcdStore, Store};
//! let etcd = EtcdServer::start()?;
//! let store = EtcdStore::connect(etcd.config()).await?;
//! store.create("pods/default/nginx", "{}".into()).await?;
//! # Ok(()) }
//! ```

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::EtcdConfig;

mod pki;

pub use pki::EtcdPki;

/// Environment variable naming the etcd binary to run.
pub const ETCD_BINARY_ENV: &str = "PIKUBE_ETCD";

/// How long etcd may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How often to ask a starting etcd whether it is healthy.
const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How many times to pick new ports when another process took ours in between.
const PORT_ATTEMPTS: usize = 5;

/// An error starting or restarting the test etcd.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// No etcd binary was found.
    #[error("etcd binary not found (set {ETCD_BINARY_ENV}, or install etcd to /usr/bin or PATH)")]
    BinaryNotFound,

    /// A file or process operation failed.
    #[error("{action}")]
    Io {
        /// What was being done.
        action: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// etcd exited while starting.
    #[error("etcd exited while starting ({status}); its log ends with:\n{log}")]
    Exited {
        /// The exit status.
        status: std::process::ExitStatus,
        /// The end of etcd's log.
        log: String,
    },

    /// The test PKI could not be made.
    #[error("generating the etcd test PKI: {0}")]
    Pki(String),

    /// etcd did not become healthy in time.
    #[error("etcd did not become healthy within {timeout:?}; its log ends with:\n{log}")]
    NotHealthy {
        /// How long was waited.
        timeout: Duration,
        /// The end of etcd's log.
        log: String,
    },
}

/// A result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let action = action.into();
    move |source| Error::Io { action, source }
}

/// Options for [`EtcdServer::start_with`].
#[derive(Clone, Debug)]
pub struct EtcdServerOptions {
    /// How often etcd sends watch progress notifications
    /// (`--experimental-watch-progress-notify-interval`); etcd's own default is 10m,
    /// this defaults to 1s so that tests see [`WatchEvent::Progress`](crate::WatchEvent)
    /// promptly.
    pub watch_progress_notify_interval: Duration,
    /// Extra command-line flags for etcd.
    pub extra_args: Vec<String>,
    /// Serve clients over TLS only (`https://`) and require a client certificate signed
    /// by the test CA (`--client-cert-auth`); see [`EtcdServer::pki`].
    pub tls: bool,
}

impl Default for EtcdServerOptions {
    fn default() -> Self {
        Self {
            watch_progress_notify_interval: Duration::from_secs(1),
            extra_args: Vec::new(),
            tls: false,
        }
    }
}

/// A running etcd, killed and deleted on drop.
#[derive(Debug)]
pub struct EtcdServer {
    binary: PathBuf,
    version: (u32, u32),
    options: EtcdServerOptions,
    /// Holds the data dir and the log; removed on drop.
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    /// Where etcd serves `/health` and `/metrics` over plain http, for the health checks
    /// of a TLS etcd (kubeadm's `--listen-metrics-urls`).
    metrics_port: u16,
    pki: Option<EtcdPki>,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts etcd with the default options and waits until it is healthy.
    pub fn start() -> Result<Self> {
        Self::start_with(EtcdServerOptions::default())
    }

    /// Starts etcd serving TLS with client-certificate authentication and waits until it
    /// is healthy.
    pub fn start_tls() -> Result<Self> {
        Self::start_with(EtcdServerOptions {
            tls: true,
            ..EtcdServerOptions::default()
        })
    }

    /// Starts etcd with `options` and waits until it is healthy.
    pub fn start_with(options: EtcdServerOptions) -> Result<Self> {
        let binary = find_binary()?;
        let version = binary_version(&binary)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let dir = tempfile::Builder::new()
                .prefix("pikube-etcd-")
                .tempdir()
                .map_err(io("creating the etcd temp dir"))?;
            let [client_port, peer_port, metrics_port] = free_ports()?;
            let pki = if options.tls {
                Some(EtcdPki::generate(&dir.path().join("pki"))?)
            } else {
                None
            };
            let mut server = Self {
                binary: binary.clone(),
                version,
                options: options.clone(),
                dir,
                client_port,
                peer_port,
                metrics_port,
                pki,
                child: None,
            };
            match server.launch() {
                Ok(()) => return Ok(server),
                // Another process may have taken a port between our probe and etcd's
                // bind: try again on new ports (and in a new dir).
                Err(Error::Exited { log, .. })
                    if attempt < PORT_ATTEMPTS && log.contains("address already in use") => {}
                Err(err) => return Err(err),
            }
        }
    }

    /// The client URL, e.g. `http://127.0.0.1:41234` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// A store configuration for this etcd with the default prefix (`/registry`); with
    /// TLS, it trusts the test CA and presents the client certificate.
    pub fn config(&self) -> EtcdConfig {
        EtcdConfig {
            endpoints: vec![self.endpoint()],
            tls: self
                .pki
                .as_ref()
                .map(EtcdPki::client_tls)
                .unwrap_or_default(),
            ..EtcdConfig::default()
        }
    }

    /// The certificates of a TLS etcd ([`EtcdServerOptions::tls`]).
    pub fn pki(&self) -> Option<&EtcdPki> {
        self.pki.as_ref()
    }

    /// The etcd data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Whether etcd is running (it was not [`stop`](Self::stop)ped and has not exited).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills etcd, keeping its data, e.g. to test how clients cope with an outage.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            // An already exited child makes kill fail; wait tells the truth either way.
            let _ = child.kill();
            child.wait().map_err(io("waiting for etcd to exit"))?;
        }
        Ok(())
    }

    /// Stops etcd if it is running and starts it again on the same ports and data, and
    /// waits until it is healthy.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        // The ports were just released by the killed etcd; if something else grabbed
        // one meanwhile there is nothing to fall back to, as clients know the address.
        self.launch()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Spawns etcd and waits until it is healthy or has exited.
    fn launch(&mut self) -> Result<()> {
        let log_path = self.log_path();
        let log = File::create(&log_path).map_err(io("creating the etcd log"))?;
        let log_err = log.try_clone().map_err(io("opening the etcd log"))?;
        let client_url = self.endpoint();
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let progress_flag = if self.version >= (3, 6) {
            "--watch-progress-notify-interval"
        } else {
            "--experimental-watch-progress-notify-interval"
        };
        let mut command = Command::new(&self.binary);
        command
            .arg("--name=default")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=default={peer_url}"))
            .arg("--initial-cluster-state=new")
            .arg("--logger=zap")
            .arg("--log-level=error")
            .arg(format!(
                "{progress_flag}={}ms",
                self.options.watch_progress_notify_interval.as_millis()
            ))
            .arg(format!(
                "--listen-metrics-urls=http://127.0.0.1:{}",
                self.metrics_port
            ));
        if let Some(pki) = &self.pki {
            command
                .arg(format!("--cert-file={}", pki.server_cert.display()))
                .arg(format!("--key-file={}", pki.server_key.display()))
                .arg(format!("--trusted-ca-file={}", pki.ca_cert.display()))
                .arg("--client-cert-auth");
        }
        if self.version >= (3, 5) {
            // Test data need not survive a power cut; fsync dominates on SD cards.
            command.arg("--unsafe-no-fsync");
        }
        // etcd before 3.5 refuses to run on arm64 and arm unless told it is fine; later
        // versions ignore the variable on supported platforms.
        if std::env::var_os("ETCD_UNSUPPORTED_ARCH").is_none() {
            if let Some(arch) = etcd_arch_name() {
                command.env("ETCD_UNSUPPORTED_ARCH", arch);
            }
        }
        command
            .args(&self.options.extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = command
            .spawn()
            .map_err(io(format!("starting {}", self.binary.display())))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child {
                if let Some(status) = child.try_wait().map_err(io("checking on etcd"))? {
                    self.child = None;
                    return Err(Error::Exited {
                        status,
                        log: log_tail(&log_path),
                    });
                }
            }
            if is_healthy(self.metrics_port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop()?;
                return Err(Error::NotHealthy {
                    timeout: START_TIMEOUT,
                    log: log_tail(&log_path),
                });
            }
            std::thread::sleep(HEALTH_POLL_INTERVAL);
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        // Nothing to report to from drop; the temp dir is removed after this either way.
        let _ = self.stop();
    }
}

/// The etcd binary to run.
fn find_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(ETCD_BINARY_ENV) {
        return Ok(PathBuf::from(path));
    }
    let usr_bin = Path::new("/usr/bin/etcd");
    if usr_bin.is_file() {
        return Ok(usr_bin.to_owned());
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("etcd"))
        .find(|path| path.is_file())
        .ok_or(Error::BinaryNotFound)
}

/// The (major, minor) version of an etcd binary, which decides some flag names.
fn binary_version(binary: &Path) -> Result<(u32, u32)> {
    let output = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(io(format!("running {} --version", binary.display())))?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(parse_version(&text).unwrap_or((3, 5)))
}

/// Parses `etcd Version: 3.4.23` out of `etcd --version`.
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("etcd Version:"))?;
    let mut parts = line.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// This platform's name in `ETCD_UNSUPPORTED_ARCH` (Go's `GOARCH`), where it differs
/// from amd64.
fn etcd_arch_name() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => None,
        "aarch64" => Some("arm64"),
        "arm" => Some("arm"),
        "x86" => Some("386"),
        "powerpc64" => Some("ppc64le"),
        "riscv64" => Some("riscv64"),
        "s390x" => Some("s390x"),
        other => Some(other),
    }
}

/// Distinct free loopback ports: etcd's client, peer and metrics ports. The listeners are
/// held together so the OS cannot hand out the same port twice, then released for etcd to
/// bind.
fn free_ports() -> Result<[u16; 3]> {
    let bind = || {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| Ok((listener.local_addr()?.port(), listener)))
            .map_err(io("finding a free port"))
    };
    let listeners = [bind()?, bind()?, bind()?];
    Ok(listeners.map(|(port, _listener)| port))
}

/// Whether etcd's `/health` endpoint on its plain-http metrics port reports healthy (it
/// has a leader and serves).
fn is_healthy(port: u16) -> bool {
    let timeout = Duration::from_millis(500);
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, timeout) else {
        return false;
    };
    let request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let mut response = String::new();
    stream.set_read_timeout(Some(timeout)).is_ok()
        && stream.set_write_timeout(Some(timeout)).is_ok()
        && stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut response).is_ok()
        && response.starts_with("HTTP/1.1 200")
        && response.contains(r#""health":"true""#)
}

/// The last lines of etcd's log, for error messages.
fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_etcd_versions() {
        let text = "etcd Version: 3.4.23\nGit SHA: Not provided\nGo Version: go1.19.8\n";
        assert_eq!(parse_version(text), Some((3, 4)));
        assert_eq!(parse_version("etcd Version: 3.6.0-rc.1\n"), Some((3, 6)));
        assert_eq!(parse_version("something else"), None);
    }

    #[test]
    fn free_ports_are_distinct() {
        let [a, b, c] = free_ports().expect("free ports");
        assert!(a != b && b != c && a != c);
    }
}
