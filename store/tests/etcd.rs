//! The etcd store against a real etcd, started per test by the testing module.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures::StreamExt;
use store::testing::EtcdServer;
use store::{Error, EtcdConfig, EtcdStore, Store, WatchEvent, WatchStream};

const WAIT: Duration = Duration::from_secs(10);

async fn connect(etcd: &EtcdServer) -> anyhow::Result<EtcdStore> {
    Ok(EtcdStore::connect(etcd.config()).await?)
}

/// Starts etcd and connects a store with the default prefix.
async fn start() -> anyhow::Result<(EtcdServer, EtcdStore)> {
    let etcd = EtcdServer::start()?;
    let store = connect(&etcd).await?;
    Ok((etcd, store))
}

/// The next item of a watch that is not a progress notification.
async fn next_change(watch: &mut WatchStream) -> anyhow::Result<store::Result<WatchEvent>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, watch.next()).await {
            Err(_) => bail!("no watch event within {WAIT:?}"),
            Ok(None) => bail!("watch ended"),
            Ok(Some(Ok(WatchEvent::Progress { .. }))) => continue,
            Ok(Some(item)) => return Ok(item),
        }
    }
}

fn value(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[tokio::test]
async fn create_then_get() -> anyhow::Result<()> {
    let (_etcd, store) = start().await?;
    let before = store.current_revision().await?;

    let created = store.create("pods/default/nginx", value("v1")).await?;
    assert_eq!(created.key, "pods/default/nginx");
    assert_eq!(created.value, value("v1"));
    assert_eq!(created.create_revision, before + 1);
    assert_eq!(created.mod_revision, before + 1);
    assert_eq!(store.current_revision().await?, before + 1);

    assert_eq!(store.get("pods/default/nginx").await?, Some(created));
    assert_eq!(store.get("pods/default/missing").await?, None);

    match store.create("pods/default/nginx", value("v2")).await {
        Err(Error::AlreadyExists { key }) => assert_eq!(key, "pods/default/nginx"),
        other => bail!("expected AlreadyExists, got {other:?}"),
    }
    // The failed create left the value alone.
    let current = store
        .get("pods/default/nginx")
        .await?
        .context("key vanished")?;
    assert_eq!(current.value, value("v1"));
    Ok(())
}

#[tokio::test]
async fn update_is_compare_and_swap() -> anyhow::Result<()> {
    let (_etcd, store) = start().await?;
    let created = store.create("pods/default/nginx", value("v1")).await?;

    let updated = store
        .update("pods/default/nginx", value("v2"), created.mod_revision)
        .await?;
    assert_eq!(updated.value, value("v2"));
    assert_eq!(updated.create_revision, created.create_revision);
    assert!(updated.mod_revision > created.mod_revision);
    assert_eq!(
        store.get("pods/default/nginx").await?,
        Some(updated.clone())
    );

    // A stale revision conflicts and reports the current value.
    match store
        .update("pods/default/nginx", value("v3"), created.mod_revision)
        .await
    {
        Err(Error::Conflict { key, current }) => {
            assert_eq!(key, "pods/default/nginx");
            assert_eq!(current, Some(updated.clone()));
        }
        other => bail!("expected Conflict, got {other:?}"),
    }

    // An update never creates, whatever revision it expects.
    for expected in [0, updated.mod_revision] {
        match store
            .update("pods/default/other", value("x"), expected)
            .await
        {
            Err(Error::NotFound { key }) => assert_eq!(key, "pods/default/other"),
            other => bail!("expected NotFound, got {other:?}"),
        }
    }
    assert_eq!(store.get("pods/default/other").await?, None);
    Ok(())
}

#[tokio::test]
async fn delete_with_and_without_precondition() -> anyhow::Result<()> {
    let (_etcd, store) = start().await?;
    let a = store.create("pods/default/a", value("a")).await?;
    let b = store.create("pods/default/b", value("b")).await?;

    // Unconditional.
    let (deleted, revision) = store.delete("pods/default/a", None).await?;
    assert_eq!(deleted, a);
    assert_eq!(revision, store.current_revision().await?);
    assert_eq!(store.get("pods/default/a").await?, None);
    match store.delete("pods/default/a", None).await {
        Err(Error::NotFound { key }) => assert_eq!(key, "pods/default/a"),
        other => bail!("expected NotFound, got {other:?}"),
    }

    // With a stale revision: conflict, nothing deleted.
    let b2 = store
        .update("pods/default/b", value("b2"), b.mod_revision)
        .await?;
    match store.delete("pods/default/b", Some(b.mod_revision)).await {
        Err(Error::Conflict { current, .. }) => assert_eq!(current, Some(b2.clone())),
        other => bail!("expected Conflict, got {other:?}"),
    }
    assert_eq!(store.get("pods/default/b").await?, Some(b2.clone()));

    // With the current revision.
    let (deleted, revision) = store
        .delete("pods/default/b", Some(b2.mod_revision))
        .await?;
    assert_eq!(deleted, b2);
    assert!(revision > b2.mod_revision);
    match store.delete("pods/default/b", Some(b2.mod_revision)).await {
        Err(Error::NotFound { .. }) => {}
        other => bail!("expected NotFound, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn list_pages_in_key_order() -> anyhow::Result<()> {
    let (_etcd, store) = start().await?;
    for name in ["e", "b", "d", "a", "c"] {
        store
            .create(&format!("pods/default/{name}"), value(name))
            .await?;
    }
    // Neighbours that a prefix must not pick up.
    store.create("pods/defaultx/z", value("z")).await?;
    store.create("podtemplates/default/t", value("t")).await?;

    let all = store.list("pods/default/", None, 0, None).await?;
    let keys: Vec<_> = all.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "pods/default/a",
            "pods/default/b",
            "pods/default/c",
            "pods/default/d",
            "pods/default/e"
        ]
    );
    assert!(!all.more);
    assert_eq!(all.remaining, 0);
    assert_eq!(all.revision, store.current_revision().await?);

    // Page through at the first page's revision, continuing after the last key as the
    // apiserver's continue token does; a write in between must not show.
    let first = store.list("pods/default/", None, 2, None).await?;
    assert_eq!(first.items.len(), 2);
    assert!(first.more);
    assert_eq!(first.remaining, 3);
    store.create("pods/default/bb", value("bb")).await?;

    let mut keys: Vec<String> = first.items.iter().map(|kv| kv.key.clone()).collect();
    let mut page = first.clone();
    while page.more {
        let last = page.items.last().context("empty page with more")?;
        let start = format!("{}\0", last.key);
        page = store
            .list("pods/default/", Some(&start), 2, Some(first.revision))
            .await?;
        assert_eq!(page.revision, first.revision);
        keys.extend(page.items.iter().map(|kv| kv.key.clone()));
    }
    assert_eq!(page.remaining, 0);
    assert_eq!(
        keys,
        [
            "pods/default/a",
            "pods/default/b",
            "pods/default/c",
            "pods/default/d",
            "pods/default/e"
        ]
    );

    // `start` is inclusive.
    let from_c = store
        .list("pods/default/", Some("pods/default/c"), 2, None)
        .await?;
    let keys: Vec<_> = from_c.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["pods/default/c", "pods/default/d"]);
    assert!(from_c.more);
    assert_eq!(from_c.remaining, 1);

    // An empty prefix lists everything under the store's prefix.
    assert_eq!(store.list("", None, 0, None).await?.items.len(), 8);
    Ok(())
}

#[tokio::test]
async fn list_at_an_old_revision() -> anyhow::Result<()> {
    let (_etcd, store) = start().await?;
    let a = store.create("pods/default/a", value("a1")).await?;
    let old = store.current_revision().await?;
    store
        .update("pods/default/a", value("a2"), a.mod_revision)
        .await?;
    store.create("pods/default/b", value("b")).await?;

    let then = store.list("pods/", None, 0, Some(old)).await?;
    assert_eq!(then.revision, old);
    assert_eq!(then.items, vec![a]);

    let now = store.list("pods/", None, 0, None).await?;
    assert_eq!(now.items.len(), 2);
    assert_eq!(now.items[0].value, value("a2"));
    Ok(())
}

#[tokio::test]
async fn compacted_and_future_revisions() -> anyhow::Result<()> {
    let (_etcd, store) = start().await?;
    let a = store.create("pods/default/a", value("a1")).await?;
    let old = a.mod_revision;
    store
        .update("pods/default/a", value("a2"), a.mod_revision)
        .await?;
    let compact_at = store.current_revision().await?;
    store.create("pods/default/b", value("b")).await?;
    store.compact(compact_at).await?;

    match store.list("pods/", None, 0, Some(old)).await {
        Err(Error::Compacted {
            requested,
            compact_revision,
        }) => {
            assert_eq!(requested, old);
            assert_eq!(compact_revision, compact_at);
        }
        other => bail!("expected Compacted, got {other:?}"),
    }
    // The compaction revision itself is still readable.
    let at = store.list("pods/", None, 0, Some(compact_at)).await?;
    assert_eq!(at.items.len(), 1);
    assert_eq!(at.items[0].value, value("a2"));

    let current = store.current_revision().await?;
    match store.list("pods/", None, 0, Some(current + 10)).await {
        Err(Error::FutureRevision {
            requested,
            current: reported,
        }) => {
            assert_eq!(requested, current + 10);
            assert_eq!(reported, current);
        }
        other => bail!("expected FutureRevision, got {other:?}"),
    }

    match store.compact(old).await {
        Err(Error::Compacted {
            compact_revision, ..
        }) => assert_eq!(compact_revision, compact_at),
        other => bail!("expected Compacted, got {other:?}"),
    }
    match store.compact(current + 10).await {
        Err(Error::FutureRevision { .. }) => {}
        other => bail!("expected FutureRevision, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn count_keys_under_a_prefix() -> anyhow::Result<()> {
    let (_etcd, store) = start().await?;
    // Through the trait object the apiserver holds.
    let store: Arc<dyn Store> = Arc::new(store);
    assert_eq!(store.count("pods/").await?, 0);
    for name in ["a", "b", "c"] {
        store
            .create(&format!("pods/ns1/{name}"), value(name))
            .await?;
    }
    store.create("pods/ns2/a", value("a")).await?;
    store.create("services/specs/ns1/a", value("a")).await?;
    assert_eq!(store.count("pods/").await?, 4);
    assert_eq!(store.count("pods/ns1/").await?, 3);
    assert_eq!(store.count("services/").await?, 1);
    assert_eq!(store.count("").await?, 5);
    Ok(())
}

#[tokio::test]
async fn watch_from_a_revision_sees_puts_and_deletes() -> anyhow::Result<()> {
    let (_etcd, store) = start().await?;
    let start = store.current_revision().await?;
    let created = store.create("pods/default/a", value("a1")).await?;
    let updated = store
        .update("pods/default/a", value("a2"), created.mod_revision)
        .await?;
    store.create("services/default/a", value("s")).await?;
    let (_, deleted_at) = store.delete("pods/default/a", None).await?;

    // Everything after `start`, replayed from history.
    let mut watch = store.watch("pods/", start).await?;
    assert_eq!(
        next_change(&mut watch).await??,
        WatchEvent::Put {
            kv: created.clone(),
            prev: None
        }
    );
    assert_eq!(
        next_change(&mut watch).await??,
        WatchEvent::Put {
            kv: updated.clone(),
            prev: Some(created.clone())
        }
    );
    assert_eq!(
        next_change(&mut watch).await??,
        WatchEvent::Delete {
            key: "pods/default/a".to_owned(),
            mod_revision: deleted_at,
            prev: Some(updated.clone())
        }
    );

    // Then live events; from `created`, the create itself is excluded.
    let mut from_created = store.watch("pods/", created.mod_revision).await?;
    let b = store.create("pods/other/b", value("b")).await?;
    let first = next_change(&mut from_created).await??;
    assert_eq!(first.revision(), updated.mod_revision);
    assert_eq!(first.key(), Some("pods/default/a"));
    assert!(matches!(
        next_change(&mut from_created).await??,
        WatchEvent::Delete { .. }
    ));
    assert_eq!(
        next_change(&mut from_created).await??,
        WatchEvent::Put {
            kv: b.clone(),
            prev: None
        }
    );
    assert_eq!(
        next_change(&mut watch).await??,
        WatchEvent::Put { kv: b, prev: None }
    );
    Ok(())
}

#[tokio::test]
async fn watch_reports_progress() -> anyhow::Result<()> {
    // The testing etcd sends progress notifications every second.
    let (_etcd, store) = start().await?;
    store.create("services/default/a", value("a")).await?;
    let current = store.current_revision().await?;
    let mut watch = store.watch("pods/", current).await?;
    let item = tokio::time::timeout(WAIT, watch.next())
        .await
        .context("no progress notification")?
        .context("watch ended")??;
    match item {
        WatchEvent::Progress { revision } => assert!(revision >= current),
        other => bail!("expected Progress, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn watch_from_a_compacted_revision_fails() -> anyhow::Result<()> {
    let (_etcd, store) = start().await?;
    let start = store.current_revision().await?;
    let a = store.create("pods/default/a", value("a1")).await?;
    store
        .update("pods/default/a", value("a2"), a.mod_revision)
        .await?;
    let compact_at = store.current_revision().await?;
    store.compact(compact_at).await?;

    let mut watch = store.watch("pods/", start).await?;
    match next_change(&mut watch).await? {
        Err(Error::Compacted {
            requested,
            compact_revision,
        }) => {
            assert_eq!(requested, start);
            assert_eq!(compact_revision, compact_at);
        }
        other => bail!("expected Compacted, got {other:?}"),
    }
    let rest = tokio::time::timeout(WAIT, watch.next()).await?;
    assert!(rest.is_none(), "the stream ends after the error: {rest:?}");

    // Just after the compaction revision is still watchable.
    let mut watch = store.watch("pods/", compact_at).await?;
    let b = store.create("pods/default/b", value("b")).await?;
    assert_eq!(
        next_change(&mut watch).await??,
        WatchEvent::Put { kv: b, prev: None }
    );
    Ok(())
}

#[tokio::test]
async fn prefixes_isolate_stores() -> anyhow::Result<()> {
    let etcd = EtcdServer::start()?;
    let registry = connect(&etcd).await?;
    let other = EtcdStore::connect(EtcdConfig {
        prefix: "/other".to_owned(),
        ..etcd.config()
    })
    .await?;
    assert_eq!(registry.prefix(), "/registry/");
    assert_eq!(other.prefix(), "/other/");

    let start = registry.current_revision().await?;
    let mut other_watch = other.watch("", start).await?;
    let mine = registry.create("pods/default/a", value("registry")).await?;
    let theirs = other.create("pods/default/a", value("other")).await?;
    other.create("pods/default/b", value("other")).await?;

    assert_eq!(registry.get("pods/default/a").await?, Some(mine.clone()));
    assert_eq!(other.get("pods/default/a").await?, Some(theirs.clone()));
    assert_eq!(registry.count("").await?, 1);
    assert_eq!(other.count("").await?, 2);
    assert_eq!(registry.list("", None, 0, None).await?.items, vec![mine]);
    match registry.get("pods/default/b").await? {
        None => {}
        some => bail!("saw the other prefix's key: {some:?}"),
    }
    // The other store's watch only sees its own writes.
    assert_eq!(
        next_change(&mut other_watch).await??,
        WatchEvent::Put {
            kv: theirs,
            prev: None
        }
    );
    Ok(())
}

#[tokio::test]
async fn metrics_are_recorded() -> anyhow::Result<()> {
    let etcd = EtcdServer::start()?;
    let registry = prometheus::Registry::new();
    let store = EtcdStore::connect(EtcdConfig {
        metrics: Some(registry.clone()),
        ..etcd.config()
    })
    .await?;
    let created = store.create("pods/default/a", value("a")).await?;
    store.get("pods/default/a").await?;
    store
        .update("pods/default/a", value("b"), created.mod_revision)
        .await?;
    store.list("pods/", None, 0, None).await?;
    store.count("pods/").await?;
    store
        .create(
            "apiextensions.k8s.io/customresourcedefinitions/w",
            value("c"),
        )
        .await?;
    let watch = store.watch("pods/", 0).await?;
    drop(watch);
    store.delete("pods/default/a", None).await?;
    store.compact(store.current_revision().await?).await?;

    let families = registry.gather();
    let family = |name: &str| {
        families
            .iter()
            .find(|family| family.name() == name)
            .with_context(|| format!("metric {name} missing"))
    };
    let labels = |metric: &prometheus::proto::Metric| {
        let mut operation = String::new();
        let mut kind = String::new();
        for pair in metric.get_label() {
            match pair.name() {
                "operation" => operation = pair.value().to_owned(),
                "type" => kind = pair.value().to_owned(),
                _ => {}
            }
        }
        (operation, kind)
    };

    let durations = family("etcd_request_duration_seconds")?;
    let mut seen = Vec::new();
    for metric in durations.get_metric() {
        assert!(metric.get_histogram().get_sample_count() >= 1);
        seen.push(labels(metric));
    }
    for (operation, kind) in [
        ("create", "pods"),
        ("get", "pods"),
        ("update", "pods"),
        ("list", "pods"),
        ("count", "pods"),
        ("watch", "pods"),
        ("delete", "pods"),
        ("compact", ""),
        ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ] {
        assert!(
            seen.contains(&(operation.to_owned(), kind.to_owned())),
            "no {operation}/{kind} in {seen:?}"
        );
    }

    let totals = family("etcd_requests_total")?;
    let creates: u64 = totals
        .get_metric()
        .iter()
        .filter(|metric| labels(metric).0 == "create")
        .map(|metric| metric.get_counter().get_value() as u64)
        .sum();
    assert_eq!(creates, 2);

    // A second store cannot register the same metrics in the same registry.
    match EtcdStore::connect(EtcdConfig {
        metrics: Some(registry.clone()),
        ..etcd.config()
    })
    .await
    {
        Err(Error::Metrics(_)) => {}
        other => bail!("expected a metrics error, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn outage_fails_requests_and_watches_then_recovers() -> anyhow::Result<()> {
    let mut etcd = EtcdServer::start()?;
    let store = EtcdStore::connect(EtcdConfig {
        request_timeout: Duration::from_secs(2),
        ..etcd.config()
    })
    .await?;
    let idle = connect(&etcd).await?;
    let a = store.create("pods/default/a", value("a")).await?;
    let mut watch = store.watch("pods/", a.mod_revision).await?;
    assert_eq!(idle.get("pods/default/a").await?, Some(a.clone()));

    etcd.stop()?;
    assert!(!etcd.is_running());
    match store.get("pods/default/a").await {
        Err(Error::Unavailable(_) | Error::Timeout { .. }) => {}
        other => bail!("expected Unavailable, got {other:?}"),
    }
    // The broken connection ends the watch with an error.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, watch.next()).await {
            Err(_) => bail!("watch did not notice the outage"),
            Ok(Some(Ok(WatchEvent::Progress { .. }))) => continue,
            Ok(Some(Err(Error::Unavailable(_) | Error::WatchClosed))) => break,
            Ok(other) => bail!("expected a watch error, got {other:?}"),
        }
    }
    assert!(tokio::time::timeout(WAIT, watch.next()).await?.is_none());

    // After a restart the same store works again, data intact.
    etcd.restart()?;
    // A store that sat idle through the outage finds its connection dead on the first
    // request; reads absorb that.
    assert_eq!(idle.get("pods/default/a").await?, Some(a.clone()));
    let deadline = Instant::now() + WAIT;
    let current = loop {
        match store.get("pods/default/a").await {
            Ok(current) => break current,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => return Err(err.into()),
        }
    };
    assert_eq!(current, Some(a.clone()));
    let mut watch = store.watch("pods/", a.mod_revision).await?;
    let b = store.create("pods/default/b", value("b")).await?;
    assert_eq!(
        next_change(&mut watch).await??,
        WatchEvent::Put { kv: b, prev: None }
    );
    Ok(())
}

#[tokio::test]
async fn servers_are_independent_and_cleaned_up() -> anyhow::Result<()> {
    let one = EtcdServer::start()?;
    let two = EtcdServer::start()?;
    assert_ne!(one.endpoint(), two.endpoint());
    let data = one.data_dir();
    assert!(data.exists());
    let store_one = connect(&one).await?;
    let store_two = connect(&two).await?;
    store_one.create("k", value("1")).await?;
    assert_eq!(store_two.get("k").await?, None);
    drop(one);
    assert!(!data.exists(), "data dir left behind");
    Ok(())
}

/// The etcd lease a key is attached to (0: none), read with etcd's own client.
async fn lease_of(etcd: &EtcdServer, key: &str) -> anyhow::Result<i64> {
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await?;
    let response = client.get(format!("/registry/{key}"), None).await?;
    let kv = response.kvs().first().context("key not found")?;
    Ok(kv.lease())
}

#[tokio::test]
async fn keys_with_a_ttl_expire_and_share_leases() -> anyhow::Result<()> {
    let (etcd, store) = start().await?;
    // etcd's shortest lease is a few seconds (1.5 election timeouts).
    let ttl = store::WriteOptions {
        ttl: Some(Duration::from_secs(3)),
    };
    let mut watch = store
        .watch("events/", store.current_revision().await?)
        .await?;
    let first = store
        .create_with("events/default/a", value("a"), ttl)
        .await?;
    let second = store
        .create_with("events/default/b", value("b"), ttl)
        .await?;
    let kept = store.create("events/default/kept", value("kept")).await?;
    // Both keys ride on one lease; a key without a ttl has none.
    let lease = lease_of(&etcd, "events/default/a").await?;
    assert_ne!(lease, 0);
    assert_eq!(lease_of(&etcd, "events/default/b").await?, lease);
    assert_eq!(lease_of(&etcd, "events/default/kept").await?, 0);
    // An update without a ttl detaches the key from its lease: it stays.
    let b = store
        .update("events/default/b", value("b2"), second.mod_revision)
        .await?;
    assert_eq!(lease_of(&etcd, "events/default/b").await?, 0);

    // The watch sees the three creates and the update, then the expiry of `a` only.
    let mut deleted = Vec::new();
    let started = Instant::now();
    while deleted.is_empty() {
        match next_change(&mut watch).await?? {
            WatchEvent::Delete { key, prev, .. } => {
                assert_eq!(prev.map(|p| p.value), Some(value("a")));
                deleted.push(key);
            }
            WatchEvent::Put { .. } => {}
            WatchEvent::Progress { .. } => unreachable!("next_change skips progress"),
        }
    }
    assert_eq!(deleted, ["events/default/a"]);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "expired after {:?}, before its ttl",
        started.elapsed()
    );
    assert_eq!(store.get("events/default/a").await?, None);
    assert_eq!(
        store
            .get("events/default/b")
            .await?
            .map(|kv| kv.mod_revision),
        Some(b.mod_revision)
    );
    assert_eq!(store.get("events/default/kept").await?, Some(kept));
    assert!(first.mod_revision > 0);

    // A key created after its lease expired gets a new lease (the old one is gone).
    let c = store
        .create_with("events/default/c", value("c"), ttl)
        .await?;
    let new_lease = lease_of(&etcd, "events/default/c").await?;
    assert!(
        new_lease != 0 && new_lease != lease,
        "lease {new_lease} after {lease}"
    );
    // And an update with a ttl attaches an existing key to a lease.
    store
        .update_with(
            "events/default/kept",
            value("k2"),
            store
                .get("events/default/kept")
                .await?
                .context("kept")?
                .mod_revision,
            ttl,
        )
        .await?;
    assert_ne!(lease_of(&etcd, "events/default/kept").await?, 0);
    assert!(c.mod_revision > 0);
    Ok(())
}
