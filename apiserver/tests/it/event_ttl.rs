//! `--event-ttl`: Events are stored on an etcd lease and disappear that long after their
//! last write, through both Event APIs and their watches; other objects stay.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Event, ObjectReference};
use kube::api::{Api, PostParams, WatchEvent, WatchParams};

use crate::common::*;

/// The etcd lease of a stored key (0: none).
async fn lease_of(api: &TestApi, key: &str) -> i64 {
    let mut etcd = etcd_client::Client::connect([api.etcd.endpoint()], None)
        .await
        .unwrap();
    let response = etcd.get(format!("/registry/{key}"), None).await.unwrap();
    response
        .kvs()
        .first()
        .map(|kv| kv.lease())
        .unwrap_or_else(|| panic!("{key} is not stored"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_expire_after_the_event_ttl() {
    let ttl = Duration::from_secs(3);
    let api = TestApi::start_with(|c| c.event_ttl = ttl).await;
    let client = api.client().await;
    let events = Api::<Event>::namespaced(client.clone(), "default");
    let mut watch = events
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let event = Event {
        metadata: kube::api::ObjectMeta {
            name: Some("pod-a.1".into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            kind: Some("Pod".into()),
            name: Some("pod-a".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        reason: Some("Testing".into()),
        message: Some("expires".into()),
        type_: Some("Normal".into()),
        ..Default::default()
    };
    events.create(&PostParams::default(), &event).await.unwrap();
    let configs = Api::<ConfigMap>::namespaced(client.clone(), "default");
    let config = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("stays".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    configs
        .create(&PostParams::default(), &config)
        .await
        .unwrap();
    assert_ne!(lease_of(&api, "events/default/pod-a.1").await, 0);
    assert_eq!(lease_of(&api, "configmaps/default/stays").await, 0);
    // The events.k8s.io view sees the same Event.
    let v1 = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), "default");
    assert!(v1.get_opt("pod-a.1").await.unwrap().is_some());

    // Expiry reaches watchers as a deletion, and the Event is gone from both APIs.
    let deleted = tokio::time::timeout(ttl * 5, async {
        while let Some(e) = watch.try_next().await.unwrap() {
            if let WatchEvent::Deleted(e) = e {
                return e;
            }
        }
        panic!("the watch ended");
    })
    .await
    .expect("the Event expires within its ttl and etcd's lease check");
    assert_eq!(deleted.metadata.name.as_deref(), Some("pod-a.1"));
    assert!(events.get_opt("pod-a.1").await.unwrap().is_none());
    assert!(v1.get_opt("pod-a.1").await.unwrap().is_none());
    assert!(configs.get_opt("stays").await.unwrap().is_some());
}
