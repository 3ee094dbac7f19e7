//! The garbage collector: cascading deletion in the three propagation modes, and
//! dependents left dangling while it was not running. ConfigMaps serve as owners and
//! dependents, so no other controller is involved.

use crate::common::{wait_until, Cluster, TIMEOUT};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

fn config_maps(c: &Cluster) -> Api<ConfigMap> {
    Api::namespaced(c.client.clone(), "default")
}

async fn create(api: &Api<ConfigMap>, name: &str, metadata: Value) -> ConfigMap {
    let mut obj = json!({ "metadata": metadata });
    obj["metadata"]["name"] = json!(name);
    let cm: ConfigMap = serde_json::from_value(obj).unwrap();
    api.create(&PostParams::default(), &cm).await.unwrap()
}

/// An ownerReference to `owner`.
fn owned_by(owner: &ConfigMap, block: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "name": owner.metadata.name, "uid": owner.metadata.uid,
        "blockOwnerDeletion": block,
    })
}

async fn gone(api: &Api<ConfigMap>, name: &str) -> Option<()> {
    matches!(api.get_opt(name).await, Ok(None)).then_some(())
}

// kubectl blocks its thread: the in-process apiserver needs another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_deletion_collects_dependents_after_the_owner() {
    let c = Cluster::start(&["garbagecollector"]).await;
    let api = config_maps(&c);
    let owner = create(&api, "owner", json!({})).await;
    create(
        &api,
        "child",
        json!({"ownerReferences": [owned_by(&owner, false)]}),
    )
    .await;
    let grandchild_owner = api.get("child").await.unwrap();
    create(
        &api,
        "grandchild",
        json!({"ownerReferences": [owned_by(&grandchild_owner, false)]}),
    )
    .await;

    // As kubectl deletes by default.
    c.api
        .kubectl_ok(&["delete", "configmap", "owner", "--cascade=background"]);
    assert!(api.get_opt("owner").await.unwrap().is_none());
    wait_until(TIMEOUT, "dependents collected", || async {
        gone(&api, "child").await?;
        gone(&api, "grandchild").await
    })
    .await;
}

#[tokio::test]
async fn foreground_deletion_keeps_the_owner_until_blocking_dependents_are_gone() {
    let c = Cluster::start(&["garbagecollector"]).await;
    let api = config_maps(&c);
    let owner = create(&api, "owner", json!({})).await;
    let plain = create(
        &api,
        "plain",
        json!({"ownerReferences": [owned_by(&owner, true)]}),
    )
    .await;
    // A dependent of a dependent: its owner is deleted in the foreground in turn.
    create(
        &api,
        "grand",
        json!({"ownerReferences": [owned_by(&plain, true)]}),
    )
    .await;
    // A blocking dependent that takes its time going away.
    create(
        &api,
        "slow",
        json!({"ownerReferences": [owned_by(&owner, true)], "finalizers": ["example.com/hold"]}),
    )
    .await;

    api.delete("owner", &DeleteParams::foreground())
        .await
        .unwrap();
    wait_until(TIMEOUT, "the quick dependents deleted", || async {
        gone(&api, "grand").await?;
        gone(&api, "plain").await
    })
    .await;
    let slow = wait_until(TIMEOUT, "the slow dependent deleting", || async {
        let cm = api.get("slow").await.ok()?;
        cm.metadata.deletion_timestamp.is_some().then_some(cm)
    })
    .await;
    assert!(slow.metadata.deletion_timestamp.is_some());
    // The owner waits for it.
    let waiting = api.get("owner").await.unwrap();
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert_eq!(
        waiting.metadata.finalizers.as_deref(),
        Some(&["foregroundDeletion".to_string()][..])
    );

    api.patch(
        "slow",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    wait_until(TIMEOUT, "the owner deleted last", || async {
        gone(&api, "slow").await?;
        gone(&api, "owner").await
    })
    .await;
}

// kubectl blocks its thread: the in-process apiserver needs another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_deletion_leaves_dependents_without_the_reference() {
    let c = Cluster::start(&["garbagecollector"]).await;
    let api = config_maps(&c);
    let owner = create(&api, "owner", json!({})).await;
    let other = create(&api, "other-owner", json!({})).await;
    create(
        &api,
        "only",
        json!({"ownerReferences": [owned_by(&owner, true)]}),
    )
    .await;
    create(
        &api,
        "shared",
        json!({"ownerReferences": [owned_by(&owner, false), owned_by(&other, false)]}),
    )
    .await;

    c.api
        .kubectl_ok(&["delete", "configmap", "owner", "--cascade=orphan"]);
    wait_until(TIMEOUT, "the owner deleted", || gone(&api, "owner")).await;
    let only = api.get("only").await.unwrap();
    assert!(only
        .metadata
        .owner_references
        .unwrap_or_default()
        .is_empty());
    assert!(only.metadata.deletion_timestamp.is_none());
    let shared = api.get("shared").await.unwrap();
    let refs = shared.metadata.owner_references.unwrap();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].uid, other.metadata.uid.unwrap());
}

#[tokio::test]
async fn dangling_dependents_are_collected() {
    let mut c = Cluster::control_plane().await;
    let api = config_maps(&c);
    // An owner that never existed.
    create(
        &api,
        "orphan-of-nobody",
        json!({"ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap",
            "name": "ghost", "uid": "00000000-0000-0000-0000-000000000000"}]}),
    )
    .await;
    // An owner deleted while no garbage collector ran.
    let owner = create(&api, "owner", json!({})).await;
    let survivor = create(&api, "survivor", json!({})).await;
    create(
        &api,
        "child",
        json!({"ownerReferences": [owned_by(&owner, false)]}),
    )
    .await;
    // Still owned by one that exists: it stays, losing only the dangling reference.
    create(
        &api,
        "half",
        json!({"ownerReferences": [owned_by(&owner, false), owned_by(&survivor, false)]}),
    )
    .await;
    api.delete("owner", &DeleteParams::default()).await.unwrap();
    // Same name, new uid: not the owner the references mean.
    create(&api, "owner", json!({})).await;

    c.start_manager(&["garbagecollector"], Default::default())
        .await;
    wait_until(TIMEOUT, "dangling dependents collected", || async {
        gone(&api, "orphan-of-nobody").await?;
        gone(&api, "child").await
    })
    .await;
    let half = wait_until(TIMEOUT, "the dangling reference removed", || async {
        let cm = api.get("half").await.ok()?;
        (cm.metadata.owner_references.as_ref()?.len() == 1).then_some(cm)
    })
    .await;
    assert_eq!(
        half.metadata.owner_references.unwrap()[0].uid,
        survivor.metadata.uid.unwrap()
    );
    assert!(half.metadata.deletion_timestamp.is_none());
    assert!(api.get_opt("owner").await.unwrap().is_some());
}
