//! One watch cache per resource, fed by one etcd watch. Any number of watchers and
//! `resourceVersion=0` lists are served from memory.

use crate::object;
use crate::status::{ApiError, ApiResult};
use api_types::resources::ResourceInfo;
use bytes::Bytes;
use component_base::shutdown::Shutdown;
use futures::StreamExt;
use parking_lot::RwLock;
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{Store, WatchEvent};
use tokio::sync::{broadcast, watch};

/// Events kept for watchers that resume from an older resourceVersion: at most
/// `HISTORY`; beyond `MIN_HISTORY`, only those younger than `EVENT_FRESH` (upstream's
/// watch cache sizes itself the same way: 75 s, at least 100 events). A watcher further
/// behind gets 410 Gone and lists again. Without the age bound a burst of pod updates
/// stayed in memory until 4,096 newer events pushed it out: 20 MiB after 100 pods started.
const HISTORY: usize = 4096;
const MIN_HISTORY: usize = 100;
const EVENT_FRESH: Duration = Duration::from_secs(75);
/// How often old events are dropped when no new event comes.
const PRUNE_PERIOD: Duration = Duration::from_secs(15);
/// Events a watcher may fall behind the live stream before it catches up from `history`.
/// Few: the channel keeps its last `CHANNEL` events alive whoever has read them (4,096
/// pod updates held 20 MiB long after 100 pods had started).
const CHANNEL: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// An object as the cache holds it: its JSON only (a decoded `serde_json::Value` takes
/// five to ten times the memory: 100 pods and their events held 8 MiB that way), with what
/// selectors read taken out at decode, so that lists and watches never decode it again.
/// [`Cached::value`] decodes it for the rarer readers that need the whole object.
#[derive(Debug)]
pub struct Cached {
    json: Bytes,
    resource_version: i64,
    uid: Box<str>,
    /// Whether `metadata.deletionTimestamp` is set.
    deleting: bool,
    /// `metadata.labels`, sorted by key.
    labels: Box<[(Box<str>, Box<str>)]>,
    /// The kind's selectable fields (`None`: not an object, which no field selector
    /// matches), named as in `supported_fields`, sorted by name.
    fields: Option<SelectableFields>,
}

/// Field name (from `supported_fields`) and value, sorted by name.
type SelectableFields = Box<[(&'static str, Box<str>)]>;

impl Cached {
    pub fn new(info: &ResourceInfo, value: &Value) -> Arc<Cached> {
        let mut labels = value
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str().into(), v.as_str()?.into())))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        // serde_json keeps insertion order with `preserve_order`; lookups need key order.
        labels.sort_by(|a: &(Box<str>, Box<str>), b| a.0.cmp(&b.0));
        let supported = api_types::selector::supported_fields(info);
        let fields = api_types::selector::field_set(info, value).ok().map(|set| {
            set.into_iter()
                .filter_map(|(name, v)| {
                    let name = supported.iter().find(|s| **s == name)?;
                    Some((*name, v.into_boxed_str()))
                })
                .collect::<Vec<_>>()
                .into_boxed_slice()
        });
        Arc::new(Cached {
            json: Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
            resource_version: object::resource_version(value)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            uid: value
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            deleting: value.pointer("/metadata/deletionTimestamp").is_some(),
            labels: labels.into_boxed_slice(),
            fields,
        })
    }

    /// The object, decoded from its JSON.
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }

    /// The object's JSON.
    pub fn json(&self) -> Bytes {
        self.json.clone()
    }

    /// `metadata.resourceVersion` (0 when it has none).
    pub fn resource_version(&self) -> i64 {
        self.resource_version
    }

    /// `metadata.uid` ("" when it has none).
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// Whether `metadata.deletionTimestamp` is set.
    pub fn deleting(&self) -> bool {
        self.deleting
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.labels[i].1)
    }

    /// A selectable field's value; `None` for a field the kind does not have.
    pub fn field(&self, name: &str) -> Option<&str> {
        let fields = self.fields.as_deref()?;
        fields
            .binary_search_by(|(n, _)| (*n).cmp(name))
            .ok()
            .map(|i| &*fields[i].1)
    }

    /// Whether the object is a JSON object (field selectors match nothing else).
    pub fn has_fields(&self) -> bool {
        self.fields.is_some()
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.field("metadata.name").unwrap_or_default()
    }
}

/// One change to one object, shared by every watcher that receives it.
#[derive(Debug)]
pub struct Event {
    pub event_type: EventType,
    pub key: String,
    /// The object after the change (for deletes: its last state, at the delete's revision).
    pub object: Arc<Cached>,
    /// The object before the change, for selector transitions.
    pub prev: Option<Arc<Cached>>,
    pub revision: i64,
}

impl Event {
    pub fn new(
        event_type: EventType,
        key: String,
        object: Arc<Cached>,
        prev: Option<Arc<Cached>>,
        revision: i64,
    ) -> Self {
        Event {
            event_type,
            key,
            object,
            prev,
            revision,
        }
    }

    /// The JSON of the object, serialised at most once.
    pub fn object_json(&self) -> Bytes {
        self.object.json()
    }
}

struct State {
    objects: BTreeMap<String, Arc<Cached>>,
    /// The newest revision the cache reflects.
    revision: i64,
    history: VecDeque<Arc<Event>>,
    /// When each event of `history` arrived.
    arrived: VecDeque<Instant>,
    /// Every event with a revision above this one is in `history`.
    oldest: i64,
}

impl State {
    fn pop_oldest(&mut self) {
        if let Some(old) = self.history.pop_front() {
            self.oldest = old.revision;
        }
        self.arrived.pop_front();
    }

    /// Drops the events beyond the newest `MIN_HISTORY` that are older than `EVENT_FRESH`.
    fn prune(&mut self, now: Instant) {
        while self.history.len() > MIN_HISTORY
            && self
                .arrived
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) > EVENT_FRESH)
        {
            self.pop_oldest();
        }
    }
}

/// The cache of one resource.
pub struct WatchCache {
    pub info: &'static ResourceInfo,
    state: RwLock<State>,
    live: broadcast::Sender<Arc<Event>>,
    ready: watch::Sender<bool>,
    /// The newest revision applied, for writers waiting to read their own write.
    applied: watch::Sender<i64>,
    /// Counts changes to the objects (events and relists, not progress notifications),
    /// for derived in-memory state such as the RBAC authorizer's index.
    changes: watch::Sender<u64>,
    objects_gauge: prometheus::IntGauge,
    /// Decrypts the stored values (`--encryption-provider-config`).
    transformer: Arc<crate::encryption::Transformer>,
}

/// What a new watcher starts from: events to send first, then the live stream.
pub struct Subscription {
    pub backlog: Vec<Arc<Event>>,
    pub live: broadcast::Receiver<Arc<Event>>,
    /// Revision of the last event already covered by the backlog.
    pub from_revision: i64,
}

/// The object of a stored value; `None` (logged) when it cannot be decrypted or decoded:
/// the cache leaves it out, and reads from etcd report the error.
fn decode(
    transformer: &crate::encryption::Transformer,
    kv: &store::KeyValue,
    revision: i64,
) -> Option<Value> {
    let data = match transformer.from_storage(&kv.value) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(key = %kv.key, error = %e, "unable to transform stored object");
            return None;
        }
    };
    match serde_json::from_slice::<Value>(&data) {
        Ok(mut v) => {
            object::set_resource_version(&mut v, revision);
            Some(v)
        }
        Err(e) => {
            tracing::error!(key = %kv.key, error = %e, "undecodable object in storage");
            None
        }
    }
}

impl WatchCache {
    pub fn new(
        info: &'static ResourceInfo,
        objects_gauge: prometheus::IntGauge,
        transformer: Arc<crate::encryption::Transformer>,
    ) -> Arc<Self> {
        let (live, _) = broadcast::channel(CHANNEL);
        let (ready, _) = watch::channel(false);
        let (applied, _) = watch::channel(0);
        let (changes, _) = watch::channel(0);
        Arc::new(WatchCache {
            info,
            changes,
            state: RwLock::new(State {
                objects: BTreeMap::new(),
                revision: 0,
                history: VecDeque::new(),
                arrived: VecDeque::new(),
                oldest: 0,
            }),
            live,
            ready,
            applied,
            objects_gauge,
            transformer,
        })
    }

    /// Waits until the cache has its first complete list (bounded), as upstream's
    /// "waiting for the watch cache to be initialized".
    pub async fn wait_ready(&self) -> ApiResult<()> {
        let mut rx = self.ready.subscribe();
        let ready = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok());
        match ready {
            true => Ok(()),
            false => Err(ApiError::service_unavailable(format!(
                "the watch cache of {} is not initialized yet",
                self.info.group_resource()
            ))),
        }
    }

    /// Waits (bounded) until the cache reflects `revision`, so a writer's next read through
    /// the cache sees its write. Returns whether it did in time.
    pub async fn wait_for_revision(&self, revision: i64, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub fn revision(&self) -> i64 {
        self.state.read().revision
    }

    /// How many times the objects changed; derived state is current while this stays.
    pub fn changes(&self) -> u64 {
        *self.changes.borrow()
    }

    /// Notified on every change of the objects.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Objects under a key prefix, and the revision they were read at.
    pub fn list(&self, prefix: &str) -> (Vec<Arc<Cached>>, i64) {
        let state = self.state.read();
        let items = state
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        (items, state.revision)
    }

    pub fn get(&self, key: &str) -> Option<Arc<Cached>> {
        self.state.read().objects.get(key).cloned()
    }

    /// Starts a watch. `after`: resume after that revision (410 Gone when it left the
    /// history); `None`: begin with the current state as ADDED events.
    pub fn subscribe(&self, after: Option<i64>, prefix: &str) -> ApiResult<Subscription> {
        let state = self.state.read();
        let live = self.live.subscribe();
        match after {
            Some(rv) => {
                if rv < state.oldest {
                    return Err(ApiError::gone(format!(
                        "too old resource version: {} ({})",
                        rv, state.oldest
                    )));
                }
                let backlog = state
                    .history
                    .iter()
                    .filter(|e| e.revision > rv && e.key.starts_with(prefix))
                    .cloned()
                    .collect();
                Ok(Subscription {
                    backlog,
                    live,
                    from_revision: rv.max(state.revision),
                })
            }
            None => {
                let backlog = state
                    .objects
                    .range(prefix.to_string()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| {
                        let rv = v.resource_version();
                        Arc::new(Event::new(EventType::Added, k.clone(), v.clone(), None, rv))
                    })
                    .collect();
                Ok(Subscription {
                    backlog,
                    live,
                    from_revision: state.revision,
                })
            }
        }
    }

    fn apply(&self, event: WatchEvent) {
        let mut state = self.state.write();
        let ev = match event {
            WatchEvent::Put { kv, prev: _ } => {
                let revision = kv.mod_revision;
                let Some(obj) = decode(&self.transformer, &kv, revision) else {
                    state.revision = state.revision.max(revision);
                    return;
                };
                let obj = Cached::new(self.info, &obj);
                let prev = state.objects.insert(kv.key.clone(), obj.clone());
                let event_type = if prev.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                Event::new(event_type, kv.key, obj, prev, revision)
            }
            WatchEvent::Delete {
                key,
                mod_revision,
                prev,
            } => {
                let cached = state.objects.remove(&key);
                let last = cached.map(|o| o.value()).or_else(|| {
                    prev.as_ref()
                        .and_then(|p| decode(&self.transformer, p, mod_revision))
                });
                let Some(mut last) = last else {
                    state.revision = state.revision.max(mod_revision);
                    return;
                };
                object::set_resource_version(&mut last, mod_revision);
                let last = Cached::new(self.info, &last);
                Event::new(
                    EventType::Deleted,
                    key,
                    last.clone(),
                    Some(last),
                    mod_revision,
                )
            }
            WatchEvent::Progress { revision } => {
                state.revision = state.revision.max(revision);
                self.applied.send_replace(state.revision);
                return;
            }
        };
        state.revision = state.revision.max(ev.revision);
        let ev = Arc::new(ev);
        let now = Instant::now();
        if state.history.len() >= HISTORY {
            state.pop_oldest();
        }
        state.prune(now);
        state.history.push_back(ev.clone());
        state.arrived.push_back(now);
        self.objects_gauge.set(state.objects.len() as i64);
        // No receivers is fine: nobody is watching.
        let _ = self.live.send(ev);
        self.applied.send_replace(state.revision);
        self.changes.send_modify(|c| *c += 1);
    }

    fn replace(&self, items: Vec<store::KeyValue>, revision: i64) {
        let mut state = self.state.write();
        let mut objects = BTreeMap::new();
        for kv in &items {
            if let Some(v) = decode(&self.transformer, kv, kv.mod_revision) {
                objects.insert(kv.key.clone(), Cached::new(self.info, &v));
            }
        }
        state.objects = objects;
        state.revision = revision;
        state.oldest = revision;
        state.history.clear();
        state.arrived.clear();
        self.objects_gauge.set(state.objects.len() as i64);
        self.applied.send_replace(revision);
        self.changes.send_modify(|c| *c += 1);
        self.ready.send_replace(true);
    }

    /// Keeps the cache in step with etcd until shutdown: list, then watch from the
    /// list's revision; relist when the watch falls behind compaction.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, mut shutdown: Shutdown) {
        let prefix = object::resource_prefix(self.info);
        let mut backoff = Duration::from_millis(100);
        let mut prune = tokio::time::interval(PRUNE_PERIOD);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if shutdown.is_shutdown() {
                return;
            }
            let listed = tokio::select! {
                r = list_all(store.as_ref(), &prefix) => r,
                _ = shutdown.signaled() => return,
            };
            let revision = match listed {
                Ok((items, revision)) => {
                    self.replace(items, revision);
                    backoff = Duration::from_millis(100);
                    revision
                }
                Err(e) => {
                    tracing::warn!(resource = %self.info.group_resource(), error = %e, "watch cache list failed");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.signaled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            let mut last = revision;
            // Watch from the last revision until compaction forces a relist.
            loop {
                let stream = tokio::select! {
                    // The cache holds every previous value itself.
                    s = store.watch_with(&prefix, last, store::WatchOptions { prev_values: false }) => s,
                    _ = shutdown.signaled() => return,
                };
                let mut stream = match stream {
                    Ok(s) => s,
                    Err(store::Error::Compacted { .. }) => break,
                    Err(e) => {
                        tracing::warn!(resource = %self.info.group_resource(), error = %e, "watch cache watch failed");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown.signaled() => return,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                };
                backoff = Duration::from_millis(100);
                let compacted = loop {
                    let next = tokio::select! {
                        n = stream.next() => n,
                        _ = prune.tick() => {
                            self.state.write().prune(Instant::now());
                            continue;
                        }
                        _ = shutdown.signaled() => return,
                    };
                    match next {
                        Some(Ok(ev)) => {
                            let rev = match &ev {
                                WatchEvent::Put { kv, .. } => kv.mod_revision,
                                WatchEvent::Delete { mod_revision, .. } => *mod_revision,
                                WatchEvent::Progress { revision } => *revision,
                            };
                            if rev > last || matches!(ev, WatchEvent::Progress { .. }) {
                                last = last.max(rev);
                                self.apply(ev);
                            }
                        }
                        Some(Err(store::Error::Compacted { .. })) => break true,
                        Some(Err(e)) => {
                            tracing::warn!(resource = %self.info.group_resource(), error = %e, "watch cache stream broke; resuming");
                            break false;
                        }
                        None => break false,
                    }
                };
                if compacted {
                    break;
                }
            }
        }
    }
}

async fn list_all(store: &dyn Store, prefix: &str) -> store::Result<(Vec<store::KeyValue>, i64)> {
    let mut items = Vec::new();
    let mut start: Option<String> = None;
    let mut revision = None;
    loop {
        let page = store.list(prefix, start.as_deref(), 5000, revision).await?;
        revision = Some(page.revision);
        let more = page.more;
        if let Some(last) = page.items.last() {
            start = Some(format!("{}\0", last.key));
        }
        items.extend(page.items);
        if !more {
            return Ok((items, revision.unwrap_or(0)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> &'static ResourceInfo {
        api_types::resources::find("", "v1", "pods").unwrap()
    }

    fn state_with(events: i64, arrived: Instant) -> State {
        let mut state = State {
            objects: BTreeMap::new(),
            revision: events,
            history: VecDeque::new(),
            arrived: VecDeque::new(),
            oldest: 0,
        };
        for rev in 1..=events {
            let object = Cached::new(
                pods(),
                &serde_json::json!({"metadata": {"name": format!("p{rev}")}}),
            );
            state.history.push_back(Arc::new(Event::new(
                EventType::Modified,
                format!("/registry/pods/default/p{rev}"),
                object,
                None,
                rev,
            )));
            state.arrived.push_back(arrived);
        }
        state
    }

    #[test]
    fn a_cached_object_keeps_its_json_and_what_selectors_read() {
        let pod = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web-1", "namespace": "prod", "uid": "u-1",
                "resourceVersion": "42", "deletionTimestamp": "2026-01-01T00:00:00Z",
                // Out of key order, and a non-string value (not a label).
                "labels": {"tier": "front", "app": "web", "bad": 1}
            },
            "spec": {"nodeName": "pi-2", "hostNetwork": true, "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.7"}]}
        });
        let c = Cached::new(pods(), &pod);
        assert_eq!(c.value(), pod);
        assert_eq!(serde_json::from_slice::<Value>(&c.json()).unwrap(), pod);
        assert_eq!(c.resource_version(), 42);
        assert_eq!((c.uid(), c.deleting(), c.name()), ("u-1", true, "web-1"));
        assert_eq!(
            (c.label("app"), c.label("tier")),
            (Some("web"), Some("front"))
        );
        assert_eq!((c.label("bad"), c.label("zzz")), (None, None));
        assert_eq!(c.field("spec.nodeName"), Some("pi-2"));
        assert_eq!(c.field("spec.hostNetwork"), Some("true"));
        assert_eq!(c.field("status.podIP"), Some("10.0.0.7"));
        assert_eq!(c.field("metadata.namespace"), Some("prod"));
        assert_eq!(c.field("spec.unschedulable"), None);

        let odd = Cached::new(pods(), &serde_json::json!("not an object"));
        assert!(!odd.has_fields());
        assert_eq!((odd.name(), odd.resource_version(), odd.uid()), ("", 0, ""));
    }

    #[test]
    fn history_keeps_fresh_events_and_the_newest_hundred() {
        let t0 = Instant::now();
        let mut state = state_with(300, t0);
        state.prune(t0 + Duration::from_secs(10));
        assert_eq!(state.history.len(), 300);
        assert_eq!(state.oldest, 0);
        state.prune(t0 + EVENT_FRESH + Duration::from_secs(1));
        assert_eq!(state.history.len(), MIN_HISTORY);
        assert_eq!(state.arrived.len(), MIN_HISTORY);
        // Resuming after revision 200 still works; before it is 410 Gone.
        assert_eq!(state.oldest, 200);
        assert_eq!(state.history.front().unwrap().revision, 201);

        // Events younger than EVENT_FRESH stay, however many.
        let mut state = state_with(300, t0);
        for t in state.arrived.iter_mut().skip(50) {
            *t = t0 + Duration::from_secs(60);
        }
        state.prune(t0 + EVENT_FRESH + Duration::from_secs(1));
        assert_eq!(state.history.len(), 250);
        assert_eq!(state.oldest, 50);
    }
}
