//! Watches, served from the resource's watch cache: initial state or history replay,
//! then live events, filtered per watcher, with bookmarks and a timeout.

use crate::codec::Output;
use crate::filter::Filter;
use crate::object;
use crate::request::{Query, ResourceRequest};
use crate::status::{ApiError, ApiResult};
use crate::watch_cache::{Cached, Event, EventType};
use crate::Apiserver;
use bytes::Bytes;
use futures::Stream;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How often a watcher that asked for bookmarks gets one.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(10);

/// What one watcher receives.
struct Watcher {
    filter: Filter,
    prefix: String,
    name: Option<String>,
    output: Output,
    bookmarks: bool,
    info: &'static api_types::resources::ResourceInfo,
    table_headers_sent: bool,
}

impl Watcher {
    fn visible(&self, obj: &Cached) -> bool {
        if self.name.as_deref().is_some_and(|n| obj.name() != n) {
            return false;
        }
        self.filter.matches_cached(obj)
    }

    /// The event this watcher sees for a cache event, given selector transitions. An object
    /// leaving the selection is DELETED in its previous state at the change's revision, as
    /// upstream reports it.
    fn translate(&self, ev: &Arc<Event>) -> Option<(EventType, Arc<Event>)> {
        if !ev.key.starts_with(&self.prefix) {
            return None;
        }
        let now = self.visible(&ev.object);
        match ev.event_type {
            EventType::Deleted => now.then(|| (EventType::Deleted, ev.clone())),
            EventType::Added => now.then(|| (EventType::Added, ev.clone())),
            EventType::Modified => {
                let prev = ev.prev.as_ref().filter(|p| self.visible(p));
                match (prev, now) {
                    (Some(_), true) => Some((EventType::Modified, ev.clone())),
                    (None, true) => Some((EventType::Added, ev.clone())),
                    (Some(p), false) => {
                        let mut last = p.value();
                        object::set_resource_version(&mut last, ev.revision);
                        let exit = Event::new(
                            EventType::Deleted,
                            ev.key.clone(),
                            Cached::new(self.info, &last),
                            None,
                            ev.revision,
                        );
                        Some((EventType::Deleted, Arc::new(exit)))
                    }
                    (None, false) => None,
                }
            }
        }
    }

    fn frame(&mut self, event_type: &str, ev: &Event) -> Bytes {
        match self.output {
            Output::Table => {
                let table = crate::server::table_for(
                    self.info,
                    &[ev.object.value()],
                    !self.table_headers_sent,
                    &ev.object.resource_version().to_string(),
                );
                self.table_headers_sent = true;
                json_frame(event_type, &table)
            }
            Output::Protobuf => {
                let obj = ev.object.value();
                match api_types::wire::protobuf::encode_watch_event(event_type, &obj) {
                    Ok(b) => {
                        let mut out = Vec::with_capacity(b.len() + 4);
                        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
                        out.extend_from_slice(&b);
                        Bytes::from(out)
                    }
                    Err(_) => json_frame(event_type, &obj),
                }
            }
            _ => {
                let obj = ev.object_json();
                let mut out = Vec::with_capacity(obj.len() + 40);
                out.extend_from_slice(b"{\"type\":\"");
                out.extend_from_slice(event_type.as_bytes());
                out.extend_from_slice(b"\",\"object\":");
                out.extend_from_slice(&obj);
                out.extend_from_slice(b"}\n");
                Bytes::from(out)
            }
        }
    }

    fn bookmark(&self, rv: i64, initial_end: bool) -> Bytes {
        let mut meta = json!({ "resourceVersion": rv.to_string() });
        if initial_end {
            meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        let obj = json!({ "kind": self.info.kind, "apiVersion": self.info.api_version(), "metadata": meta });
        json_frame("BOOKMARK", &obj)
    }
}

fn json_frame(event_type: &str, obj: &Value) -> Bytes {
    let mut b =
        serde_json::to_vec(&json!({ "type": event_type, "object": obj })).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

/// An ERROR event carrying a Status, as upstream reports a 410 inside a watch.
pub fn error_frame(err: &ApiError) -> Bytes {
    json_frame("ERROR", &err.to_status())
}

/// Starts a watch; the stream yields encoded frames until timeout, shutdown or lag.
pub async fn watch(
    api: Arc<Apiserver>,
    req: &ResourceRequest,
    q: &Query,
    output: Output,
) -> ApiResult<impl Stream<Item = Bytes> + Send + 'static> {
    let info = req.info;
    let filter = Filter::from_query(info, q)?;
    let cache = api.cache(info).clone();
    cache.wait_ready().await?;
    let prefix = object::list_prefix(info, req.namespace.as_deref());
    let initial_events = q.send_initial_events == Some(true);
    if initial_events && q.resource_version_match.as_deref() != Some("NotOlderThan") {
        return Err(ApiError::unprocessable(
            "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ));
    }
    if initial_events {
        // The initial state is at least as new as asked: resourceVersion unset means as
        // new as etcd now (upstream's consistent read from the cache), "0" any state.
        let target =
            match q.resource_version.as_deref() {
                Some("0") => None,
                None | Some("") => Some(api.store.current_revision().await?),
                Some(rv) => Some(rv.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version: {rv:?}"))
                })?),
            };
        if let Some(target) = target {
            // etcd's progress notifications move the cache on when nothing of this
            // resource changed since; past the wait, it serves what it has.
            if !cache
                .wait_for_revision(target, Duration::from_secs(3))
                .await
            {
                tracing::debug!(
                    target,
                    resource = %info.group_resource(),
                    "watch cache not yet at the requested revision for initial events"
                );
            }
        }
    }
    let after = match q.resource_version.as_deref() {
        None | Some("0") => None,
        Some(_) if initial_events => None,
        Some(rv) => Some(
            rv.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?,
        ),
    };
    let timeout = Duration::from_secs(q.timeout_seconds.unwrap_or_else(|| {
        use rand::Rng;
        // Upstream spreads watch lifetimes over [minRequestTimeout, 2×minRequestTimeout].
        rand::rng().random_range(1800..3600)
    }));
    let mut watcher = Watcher {
        filter,
        prefix: prefix.clone(),
        name: req.name.clone(),
        output,
        bookmarks: q.allow_watch_bookmarks,
        info,
        table_headers_sent: false,
    };
    let gauge = api
        .metrics
        .watchers
        .with_label_values(&[info.group, info.version, info.kind]);
    let mut shutdown = api.shutdown.clone();

    // Subscribing may 410; upstream reports that as an ERROR event in a 200 stream.
    let subscription = cache.subscribe(after, &prefix);
    Ok(async_stream_frames(move |tx| async move {
        let sub = match subscription {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(error_frame(&e)).await;
                return;
            }
        };
        gauge.inc();
        let _guard = GaugeGuard(gauge);
        let mut last = sub.from_revision;
        let mut reported = last;
        for ev in sub.backlog {
            let ev = convert(info, ev);
            if let Some((t, ev)) = watcher.translate(&ev) {
                reported = reported.max(ev.revision);
                if tx.send(watcher.frame(t.as_str(), &ev)).await.is_err() {
                    return;
                }
            }
        }
        if initial_events && tx.send(watcher.bookmark(last, true)).await.is_err() {
            return;
        }
        let mut live = sub.live;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
        ticker.tick().await;
        loop {
            tokio::select! {
                r = live.recv() => {
                    let events = match r {
                        Ok(ev) => vec![ev],
                        // Too slow for the live stream (it keeps few events): catch up from
                        // the history instead. Gone from there too (over 75 s behind), the
                        // watch ends and the client resumes from its last resourceVersion.
                        Err(RecvError::Lagged(_)) => match cache.subscribe(Some(last), &prefix) {
                            Ok(sub) => {
                                live = sub.live;
                                sub.backlog
                            }
                            Err(_) => return,
                        },
                        Err(RecvError::Closed) => return,
                    };
                    for ev in events {
                        if ev.revision <= last {
                            continue;
                        }
                        last = ev.revision;
                        let ev = convert(info, ev);
                        if let Some((t, ev)) = watcher.translate(&ev) {
                            reported = ev.revision;
                            if tx.send(watcher.frame(t.as_str(), &ev)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                _ = ticker.tick(), if watcher.bookmarks => {
                    let rv = cache.revision();
                    // Only when nothing older is queued for this watcher, and only news.
                    if rv > reported && live.is_empty() {
                        reported = rv;
                        if tx.send(watcher.bookmark(rv, false)).await.is_err() {
                            return;
                        }
                    }
                }
                // The client went away: unregister now, not at the next matching event.
                _ = tx.closed() => return,
                _ = &mut deadline => return,
                _ = shutdown.signaled() => return,
            }
        }
    }))
}

/// An event as the watcher's API shows it (events.k8s.io Events are stored as core ones).
fn convert(info: &api_types::resources::ResourceInfo, ev: Arc<Event>) -> Arc<Event> {
    if !crate::registry::events::is_events_v1(info) {
        return ev;
    }
    let to = |o: &Cached| Cached::new(info, &crate::registry::events::from_core(&o.value()));
    Arc::new(Event::new(
        ev.event_type,
        ev.key.clone(),
        to(&ev.object),
        ev.prev.as_deref().map(to),
        ev.revision,
    ))
}

struct GaugeGuard(prometheus::IntGauge);
impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Runs a producer task feeding a channel and exposes the channel as a stream.
fn async_stream_frames<F, Fut>(producer: F) -> impl Stream<Item = Bytes> + Send + 'static
where
    F: FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(tracing::Instrument::instrument(
        producer(tx),
        tracing::debug_span!("watch"),
    ));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
