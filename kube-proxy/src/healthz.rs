//! The proxier health server (upstream `pkg/proxy/healthcheck/proxy_health.go`), plain
//! HTTP on `--healthz-bind-address` (0.0.0.0:10256): `/healthz` and `/livez` answer 200
//! while the rules keep up with changes and 503 once an update has been waiting longer
//! than the health timeout (twice the sync period) — the rules are stale because syncs
//! stopped or keep failing. `/healthz` also fails while this node is being deleted, so
//! load balancers stop sending traffic here. The body is upstream's JSON.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use component_base::shutdown::Shutdown;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding the health check server on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the health server reports, updated by the sync loop.
#[derive(Debug)]
pub struct ProxierHealth {
    timeout: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Wall-clock time of the last successful sync, for the JSON body.
    last_updated: Option<jiff::Timestamp>,
    /// When the oldest change not yet programmed arrived.
    oldest_pending: Option<Instant>,
    /// A sync is running: it may or may not include changes arriving now.
    syncing: bool,
    /// The oldest change that arrived while the running sync was under way.
    oldest_during_sync: Option<Instant>,
    node_being_deleted: bool,
}

/// One answer of the health server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// The rules are not stale.
    pub healthy: bool,
    /// This node is not being deleted.
    pub node_eligible: bool,
}

impl ProxierHealth {
    /// `timeout`: how long a queued change may wait for a sync (upstream: 2 × sync period).
    pub fn new(timeout: Duration) -> Arc<ProxierHealth> {
        Arc::new(ProxierHealth {
            timeout,
            state: Mutex::new(State::default()),
        })
    }

    /// A change arrived that the rules do not reflect yet.
    pub fn queued_update(&self, now: Instant) {
        let mut s = self.state.lock();
        if s.oldest_pending.is_none() {
            s.oldest_pending = Some(now);
        }
        if s.syncing && s.oldest_during_sync.is_none() {
            s.oldest_during_sync = Some(now);
        }
    }

    /// A sync takes its snapshot of Services and endpoints now.
    pub fn sync_started(&self) {
        let mut s = self.state.lock();
        s.syncing = true;
        s.oldest_during_sync = None;
    }

    /// The sync succeeded: what was queued before it started is programmed; what
    /// arrived while it ran is still pending.
    pub fn updated(&self) {
        let mut s = self.state.lock();
        s.last_updated = Some(jiff::Timestamp::now());
        s.oldest_pending = s.oldest_during_sync.take();
        s.syncing = false;
    }

    /// The sync failed: everything queued stays pending.
    pub fn sync_failed(&self) {
        let mut s = self.state.lock();
        s.syncing = false;
        s.oldest_during_sync = None;
    }

    pub fn set_node_being_deleted(&self, deleting: bool) {
        self.state.lock().node_being_deleted = deleting;
    }

    pub fn status(&self, now: Instant) -> Status {
        let s = self.state.lock();
        let healthy = match s.oldest_pending {
            None => true,
            Some(t) => now.saturating_duration_since(t) < self.timeout,
        };
        Status {
            healthy,
            node_eligible: !s.node_being_deleted,
        }
    }

    fn last_updated(&self) -> Option<jiff::Timestamp> {
        self.state.lock().last_updated
    }
}

/// Serves `/healthz` and `/livez` on `addr` until `shutdown`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<ProxierHealth>,
    mut shutdown: Shutdown,
) -> Result<SocketAddr, Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    tracing::info!("serving healthz on {local}");
    tokio::spawn(
        async move {
            loop {
                let (tcp, _) = tokio::select! {
                    a = listener.accept() => match a {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    _ = shutdown.signaled() => break,
                };
                let health = health.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let response = respond(&health, req.uri().path());
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        }
        .instrument(tracing::info_span!("healthz", addr = %local)),
    );
    Ok(local)
}

fn respond(health: &ProxierHealth, path: &str) -> Response<Full<Bytes>> {
    let status = health.status(Instant::now());
    let last = health
        .last_updated()
        .map(|t| t.to_string())
        .unwrap_or_default();
    let now = jiff::Timestamp::now().to_string();
    let (ok, body) = match path {
        "/healthz" => (
            status.healthy && status.node_eligible,
            serde_json::json!({"lastUpdated": last, "currentTime": now, "nodeEligible": status.node_eligible}),
        ),
        "/livez" => (
            status.healthy,
            serde_json::json!({"lastUpdated": last, "currentTime": now}),
        ),
        _ => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"404 page not found\n")));
            *r.status_mut() = StatusCode::NOT_FOUND;
            return r;
        }
    };
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_when_an_update_waits_longer_than_the_timeout() {
        let h = ProxierHealth::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(h.status(t0).healthy, "healthy before any change");
        h.queued_update(t0);
        assert!(h.status(t0 + Duration::from_secs(59)).healthy);
        assert!(!h.status(t0 + Duration::from_secs(61)).healthy);
        // A later change does not reset the clock of the oldest one.
        h.queued_update(t0 + Duration::from_secs(30));
        assert!(!h.status(t0 + Duration::from_secs(61)).healthy);
        h.sync_started();
        h.sync_failed();
        assert!(
            !h.status(t0 + Duration::from_secs(62)).healthy,
            "a failed sync programs nothing"
        );
        h.sync_started();
        h.updated();
        assert!(h.status(t0 + Duration::from_secs(200)).healthy);
    }

    #[test]
    fn a_sync_that_started_before_the_change_does_not_clear_it() {
        let h = ProxierHealth::new(Duration::from_secs(1));
        let t0 = Instant::now();
        h.queued_update(t0);
        h.sync_started();
        // Arrives while the sync runs: the sync's snapshot may not hold it.
        h.queued_update(t0 + Duration::from_secs(5));
        h.updated();
        assert!(h.status(t0 + Duration::from_millis(5500)).healthy);
        assert!(!h.status(t0 + Duration::from_secs(7)).healthy);
    }

    #[test]
    fn responses_follow_upstream() {
        let h = ProxierHealth::new(Duration::from_secs(1));
        let r = respond(&h, "/healthz");
        assert_eq!(r.status(), StatusCode::OK);
        h.set_node_being_deleted(true);
        assert_eq!(
            respond(&h, "/healthz").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(respond(&h, "/livez").status(), StatusCode::OK);
        h.queued_update(Instant::now() - Duration::from_secs(5));
        assert_eq!(
            respond(&h, "/livez").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(respond(&h, "/other").status(), StatusCode::NOT_FOUND);
    }
}
