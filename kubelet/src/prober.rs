//! Container probes (upstream `pkg/kubelet/prober`): exec, httpGet and tcpSocket checks
//! run on each probe's period once its initial delay passed. A startup probe gates the
//! others; `failureThreshold` liveness (or startup) failures in a row restart the
//! container; readiness turns the container (and so the pod) Ready after
//! `successThreshold` successes and unready after `failureThreshold` failures.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, HTTPHeader, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::cri::RuntimeService;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

/// One probe's running state for one container instance.
#[derive(Debug, Clone)]
struct State {
    successes: i32,
    failures: i32,
    /// The last verdict after thresholds (None: not decided yet).
    healthy: Option<bool>,
    next: Instant,
}

/// Probe results of a pod's containers, keyed by container id.
#[derive(Debug, Default)]
pub struct PodProbes {
    states: HashMap<(String, Kind), State>,
}

/// What the probes say about a running container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The startup probe succeeded (or there is none).
    pub started: bool,
    /// Ready per the readiness probe (or none) once started.
    pub ready: bool,
    /// Liveness or startup failed past its threshold: restart the container.
    pub restart: bool,
}

fn probe_of(c: &Container, kind: Kind) -> Option<&Probe> {
    match kind {
        Kind::Startup => c.startup_probe.as_ref(),
        Kind::Liveness => c.liveness_probe.as_ref(),
        Kind::Readiness => c.readiness_probe.as_ref(),
    }
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(u64::try_from(v.unwrap_or(default).max(0)).unwrap_or(0))
}

impl PodProbes {
    /// Forgets containers that are gone.
    pub fn retain(&mut self, live_ids: &[&str]) {
        self.states
            .retain(|(id, _), _| live_ids.contains(&id.as_str()));
    }

    /// The verdict for a running container without probing.
    pub fn verdict(&self, id: &str, c: &Container) -> Verdict {
        let healthy = |kind| {
            self.states
                .get(&(id.to_owned(), kind))
                .and_then(|s| s.healthy)
        };
        let started = probe_of(c, Kind::Startup).is_none() || healthy(Kind::Startup) == Some(true);
        let ready = started
            && (probe_of(c, Kind::Readiness).is_none() || healthy(Kind::Readiness) == Some(true));
        let restart =
            healthy(Kind::Liveness) == Some(false) || healthy(Kind::Startup) == Some(false);
        Verdict {
            started,
            ready,
            restart,
        }
    }

    /// Runs the probes of a running container that are due; when the next one is due.
    pub async fn run_due(
        &mut self,
        runtime: &dyn RuntimeService,
        id: &str,
        c: &Container,
        started_at: Instant,
        pod_ip: Option<IpAddr>,
    ) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for kind in [Kind::Startup, Kind::Liveness, Kind::Readiness] {
            let Some(probe) = probe_of(c, kind) else {
                continue;
            };
            if kind != Kind::Startup && !self.verdict(id, c).started {
                continue;
            }
            let key = (id.to_owned(), kind);
            let state = self.states.entry(key).or_insert_with(|| State {
                successes: 0,
                failures: 0,
                healthy: None,
                next: started_at + secs(probe.initial_delay_seconds, 0),
            });
            let now = Instant::now();
            if state.next <= now {
                let ok = run_one(runtime, id, c, probe, pod_ip).await;
                let success_threshold = probe.success_threshold.unwrap_or(1).max(1);
                let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
                if ok {
                    state.successes += 1;
                    state.failures = 0;
                    if state.successes >= success_threshold {
                        state.healthy = Some(true);
                    }
                } else {
                    state.failures += 1;
                    state.successes = 0;
                    if state.failures >= failure_threshold {
                        state.healthy = Some(false);
                    }
                }
                state.next =
                    Instant::now() + secs(probe.period_seconds, 10).max(Duration::from_secs(1));
            }
            // A startup probe that succeeded is done.
            if !(kind == Kind::Startup && state.healthy == Some(true)) {
                next = Some(next.map_or(state.next, |n| n.min(state.next)));
            }
        }
        next
    }
}

async fn run_one(
    runtime: &dyn RuntimeService,
    id: &str,
    c: &Container,
    probe: &Probe,
    pod_ip: Option<IpAddr>,
) -> bool {
    let timeout = secs(probe.timeout_seconds, 1).max(Duration::from_secs(1));
    if let Some(exec) = &probe.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        return run_exec(runtime, id, cmd, timeout).await.is_ok();
    }
    if let Some(tcp) = &probe.tcp_socket {
        let host = tcp.host.as_deref().and_then(|h| h.parse().ok()).or(pod_ip);
        let (Some(host), Some(port)) = (host, resolve_port(c, &tcp.port)) else {
            return false;
        };
        return tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port)))
            .await
            .is_ok_and(|r| r.is_ok());
    }
    if let Some(get) = &probe.http_get {
        let Ok(addr) = http_target(c, get, pod_ip) else {
            return false;
        };
        let path = get.path.clone().unwrap_or_else(|| "/".into());
        let headers = get.http_headers.clone().unwrap_or_default();
        return tokio::time::timeout(timeout, http_get(addr, &path, &headers, PROBE_USER_AGENT))
            .await
            .is_ok_and(|r| r.is_ok());
    }
    false
}

/// The port a probe or hook names: a number, or the name of one of the container's
/// ports (or a number in a string).
pub(crate) fn resolve_port(c: &Container, port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(s) => s.parse().ok().or_else(|| {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(s.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
        }),
    }
}

/// Where an httpGet action goes: its host (else the pod's IP) and port.
pub(crate) fn http_target(
    c: &Container,
    get: &HTTPGetAction,
    pod_ip: Option<IpAddr>,
) -> Result<SocketAddr, String> {
    let host = match get.host.as_deref().filter(|h| !h.is_empty()) {
        Some(h) => h
            .parse()
            .map_err(|_| format!("host {h:?} is not an IP address"))?,
        None => pod_ip.ok_or_else(|| "the pod has no IP address".to_owned())?,
    };
    let port = resolve_port(c, &get.port).ok_or_else(|| match &get.port {
        IntOrString::Int(n) => format!("invalid port {n}"),
        IntOrString::String(s) => format!("couldn't find port {s:?} in the container"),
    })?;
    Ok(SocketAddr::new(host, port))
}

/// Runs `cmd` in the container through CRI's ExecSync, at most `timeout`; Err: why it
/// failed, with what it printed.
pub(crate) async fn run_exec(
    runtime: &dyn RuntimeService,
    id: &str,
    cmd: Vec<String>,
    timeout: Duration,
) -> Result<(), String> {
    let r = runtime
        .exec_sync(id, cmd, timeout)
        .await
        .map_err(|e| e.to_string())?;
    if r.exit_code == 0 {
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&r.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&r.stderr));
    Err(format!(
        "command terminated with exit code {}, message: {output:?}",
        r.exit_code
    ))
}

/// The User-Agent of probes and of lifecycle hooks, as upstream's (major.minor of the
/// Kubernetes version served).
pub(crate) const PROBE_USER_AGENT: &str = "kube-probe/1.33";
pub(crate) const LIFECYCLE_USER_AGENT: &str = "kube-lifecycle/1.33";

/// A plain-HTTP GET; Ok(status) when it is in [200, 400), the success range of probes
/// and hooks, as upstream.
pub(crate) async fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[HTTPHeader],
    user_agent: &str,
) -> Result<u16, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("dial tcp {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let mut req = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::USER_AGENT, user_agent);
    for h in headers {
        req = req.header(h.name.as_str(), h.value.as_str());
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let status = sender
        .send_request(req)
        .await
        .map_err(|e| e.to_string())?
        .status()
        .as_u16();
    if (200..400).contains(&status) {
        Ok(status)
    } else {
        Err(format!("HTTP probe failed with statuscode: {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_probes_present() {
        let plain: Container = serde_json::from_value(serde_json::json!({"name": "c"})).unwrap();
        let probes = PodProbes::default();
        assert_eq!(
            probes.verdict("id", &plain),
            Verdict {
                started: true,
                ready: true,
                restart: false
            }
        );
        let probed: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "readinessProbe": {"exec": {"command": ["true"]}},
            "startupProbe": {"exec": {"command": ["true"]}}
        }))
        .unwrap();
        let v = probes.verdict("id", &probed);
        assert!(!v.started && !v.ready && !v.restart);
    }
}
