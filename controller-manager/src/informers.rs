//! One shared informer per resource for the whole process (upstream's
//! `SharedInformerFactory`): controllers ask for a kind's store and for a subscription to
//! its changes; [`Informers::start`] then runs one watch per requested kind, feeding the
//! store and every subscriber.
//!
//! Subscribers see deletions too (the deleted object's last state), which kube-runtime's
//! own shared-store dispatcher leaves out: a ReplicaSet must hear that its pod is gone.
//!
//! Whether a kind has listed is [`Informers::synced_signal`], never kube-runtime's
//! `Store::wait_until_ready`: that future keeps one waker per store (a oneshot receiver
//! behind its `DelayedInit`), so of several tasks waiting on one store only the one that
//! polled last is woken, and a readiness check polling it with a no-op waker (as `/readyz`
//! did) leaves every waiter asleep for good. That kept the real daemon's node lifecycle
//! controller from ever starting (clippy.toml forbids the method).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{warn, Instrument};

/// How many changes a slow subscriber may lag behind before the watch waits for it.
const SUBSCRIBER_BUFFER: usize = 1024;

/// A kind the controllers need: its store, and its writer until the informer starts.
struct Informer<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store: Store<K>,
    writer: Option<Writer<K>>,
    subscribers: Vec<mpsc::Sender<Arc<K>>>,
    started: bool,
    /// True once the store holds the first list.
    synced: watch::Sender<bool>,
}

/// Whether a kind's informer has listed once (its store holds the whole first list).
/// Any number of tasks may wait on it.
#[derive(Clone)]
pub struct Synced(watch::Receiver<bool>);

impl Synced {
    /// Returns once the store holds its first list (at once if it already does, or if the
    /// informer is gone).
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|synced| *synced).await;
    }

    pub fn is_synced(&self) -> bool {
        *self.0.borrow()
    }
}

type Starter = Box<dyn FnOnce(Client, &mut JoinSet<()>) + Send>;

/// The process's informers. Cheap to share (`Arc`).
pub struct Informers {
    client: Client,
    kinds: Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>,
    starters: Mutex<Vec<Starter>>,
    readiness: Mutex<Vec<Box<dyn Fn() -> bool + Send + Sync>>>,
}

/// The bounds every informed kind meets.
pub trait Kind:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}
impl<K> Kind for K where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

impl Informers {
    pub fn new(client: Client) -> Arc<Informers> {
        Arc::new(Informers {
            client,
            kinds: Mutex::new(HashMap::new()),
            starters: Mutex::new(Vec::new()),
            readiness: Mutex::new(Vec::new()),
        })
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    fn with_informer<K: Kind, T>(&self, f: impl FnOnce(&mut Informer<K>) -> T) -> T {
        let mut kinds = self.kinds.lock();
        let entry = kinds.entry(TypeId::of::<K>()).or_insert_with(|| {
            let (store, writer) = reflector::store::<K>();
            let (synced, ready) = watch::channel(false);
            self.readiness
                .lock()
                .push(Box::new(move || *ready.borrow()));
            let informer: Informer<K> = Informer {
                store,
                writer: Some(writer),
                subscribers: Vec::new(),
                started: false,
                synced,
            };
            // The starter takes the writer out when the informers start.
            let slot: Arc<Mutex<Informer<K>>> = Arc::new(Mutex::new(informer));
            let for_start = slot.clone();
            self.starters.lock().push(Box::new(move |client, set| {
                let (writer, subscribers, synced) = {
                    let mut informer = for_start.lock();
                    informer.started = true;
                    let Some(writer) = informer.writer.take() else {
                        return;
                    };
                    (
                        writer,
                        std::mem::take(&mut informer.subscribers),
                        informer.synced.clone(),
                    )
                };
                let api: Api<K> = Api::all(client);
                let kind = K::kind(&()).to_string();
                let stream = reflector::reflector(
                    writer,
                    watcher(api, watcher::Config::default().any_semantic())
                        .default_backoff()
                        // Managed fields are never read by a controller: don't keep them.
                        .modify(|o| o.managed_fields_mut().clear()),
                );
                set.spawn(
                    async move {
                        let mut stream = std::pin::pin!(stream);
                        while let Some(event) = stream.next().await {
                            let obj = match event {
                                Ok(
                                    watcher::Event::Apply(o)
                                    | watcher::Event::InitApply(o)
                                    | watcher::Event::Delete(o),
                                ) => Arc::new(o),
                                Ok(watcher::Event::InitDone) => {
                                    // The reflector applied the list to the store first.
                                    synced.send_replace(true);
                                    continue;
                                }
                                Ok(_) => continue,
                                Err(e) => {
                                    warn!(error = %e, "watch failed; retrying");
                                    continue;
                                }
                            };
                            for s in &subscribers {
                                // A subscriber that is gone (its controller stopped) is skipped.
                                let _ = s.send(obj.clone()).await;
                            }
                        }
                    }
                    .instrument(tracing::info_span!("informer", %kind)),
                );
            }));
            Box::new(slot)
        });
        let slot = entry
            .downcast_ref::<Arc<Mutex<Informer<K>>>>()
            .expect("one informer type per TypeId");
        let mut informer = slot.lock();
        f(&mut informer)
    }

    /// The kind's store (all namespaces), filled once the informers start.
    pub fn store<K: Kind>(&self) -> Store<K> {
        self.with_informer::<K, _>(|i| i.store.clone())
    }

    /// Whether the kind's store holds its first list; wait on it before reading the store
    /// as a whole.
    pub fn synced_signal<K: Kind>(&self) -> Synced {
        self.with_informer::<K, _>(|i| Synced(i.synced.subscribe()))
    }

    /// Every object of the kind that is added, changed or deleted (deleted: its last
    /// state), and every object of each (re)list. Subscribe before [`Informers::start`].
    pub fn subscribe<K: Kind>(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let (tx, mut rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        self.with_informer::<K, _>(|i| {
            assert!(!i.started, "subscribe before the informers start");
            i.subscribers.push(tx);
        });
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    /// Starts one watch per requested kind; they run until the set is dropped.
    pub fn start(&self, set: &mut JoinSet<()>) {
        for start in self.starters.lock().drain(..) {
            start(self.client.clone(), set);
        }
    }

    /// Whether every started informer has listed once.
    pub fn synced(&self) -> bool {
        self.readiness.lock().iter().all(|ready| ready())
    }
}

/// `namespace/name` of an object, for logs.
pub fn key<K: Resource>(obj: &K) -> String {
    match obj.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", obj.name_any()),
        None => obj.name_any(),
    }
}
