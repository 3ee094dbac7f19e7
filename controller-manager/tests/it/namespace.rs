//! The namespace controller: deleting a namespace deletes everything in it, reports what
//! is left in the namespace's conditions, then removes the `kubernetes` finalizer so the
//! apiserver deletes the namespace.

use crate::common::{wait_until, Cluster, TIMEOUT};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::discovery::ApiResource;
use kube::Client;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

async fn create<K>(client: &Client, ns: &str, obj: Value) -> K
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let obj: K = serde_json::from_value(obj).unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap()
}

async fn create_namespace(client: &Client, obj: Value) {
    let ns: Namespace = serde_json::from_value(obj).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

/// The namespace's condition of this type, as (status, reason, message).
fn condition(ns: &Namespace, kind: &str) -> Option<(String, String, String)> {
    let c = ns
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)?;
    Some((
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    ))
}

async fn gone<K>(api: &Api<K>, name: &str) -> Option<()>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    matches!(api.get_opt(name).await, Ok(None)).then_some(())
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_content_then_the_namespace() {
    let c = Cluster::start(&["namespace"]).await;
    let client = &c.client;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    create_namespace(client, json!({"metadata": {"name": "doomed"}})).await;

    create::<ConfigMap>(client, "doomed", json!({"metadata": {"name": "plain"}})).await;
    // Held by a finalizer nobody removes until the test does.
    create::<ConfigMap>(
        client,
        "doomed",
        json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}),
    )
    .await;
    create::<Secret>(
        client,
        "doomed",
        json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}}),
    )
    .await;
    create::<Service>(
        client,
        "doomed",
        json!({"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}}),
    )
    .await;
    let container = json!([{"name": "c", "image": "registry.k8s.io/pause:3.10"}]);
    // Never scheduled: the apiserver deletes it at once.
    create::<Pod>(
        client,
        "doomed",
        json!({"metadata": {"name": "pending"}, "spec": {"containers": container}}),
    )
    .await;
    // Bound to a node: it terminates gracefully, until "the kubelet" removes it.
    create::<Pod>(
        client,
        "doomed",
        json!({"metadata": {"name": "running"},
               "spec": {"nodeName": "node-1", "containers": container}}),
    )
    .await;

    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();

    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "doomed");
    let services: Api<Service> = Api::namespaced(client.clone(), "doomed");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "doomed");
    wait_until(TIMEOUT, "the unheld content deleted", || async {
        gone(&config_maps, "plain").await?;
        gone(&secrets, "s").await?;
        gone(&services, "svc").await?;
        gone(&pods, "pending").await
    })
    .await;

    // What remains is reported on the terminating namespace.
    let ns = wait_until(TIMEOUT, "conditions naming what remains", || async {
        let ns = namespaces.get("doomed").await.ok()?;
        let (status, _, _) = condition(&ns, "NamespaceFinalizersRemaining")?;
        (status == "True").then_some(ns)
    })
    .await;
    assert_eq!(
        ns.status.as_ref().unwrap().phase.as_deref(),
        Some("Terminating")
    );
    assert_eq!(
        condition(&ns, "NamespaceContentRemaining").unwrap(),
        (
            "True".to_string(),
            "SomeResourcesRemain".to_string(),
            "Some resources are remaining: configmaps. has 1 resource instances, pods. has 1 resource instances".to_string()
        )
    );
    assert_eq!(
        condition(&ns, "NamespaceFinalizersRemaining").unwrap(),
        (
            "True".to_string(),
            "SomeFinalizerRemain".to_string(),
            "Some finalizers are remaining: example.com/hold in 1 resource instances".to_string()
        )
    );
    assert_eq!(
        condition(&ns, "NamespaceDeletionDiscoveryFailure").unwrap(),
        (
            "False".to_string(),
            "ResourcesDiscovered".to_string(),
            "All resources successfully discovered".to_string()
        )
    );
    assert_eq!(
        condition(&ns, "NamespaceDeletionContentFailure").unwrap().0,
        "False"
    );
    assert!(ns
        .spec
        .as_ref()
        .unwrap()
        .finalizers
        .as_ref()
        .unwrap()
        .contains(&"kubernetes".to_string()));
    let running = pods.get("running").await.unwrap();
    assert!(running.metadata.deletion_timestamp.is_some());

    // The finalizer's owner lets go, and the kubelet confirms the pod stopped.
    config_maps
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    pods.delete("running", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();

    wait_until(TIMEOUT, "namespace doomed deleted", || {
        gone(&namespaces, "doomed")
    })
    .await;
}

#[tokio::test]
async fn only_the_kubernetes_finalizer_is_removed() {
    let c = Cluster::start(&["namespace"]).await;
    let client = &c.client;
    create_namespace(
        client,
        json!({"metadata": {"name": "kept"},
               "spec": {"finalizers": ["kubernetes", "example.com/other"]}}),
    )
    .await;
    // Content of a kind reached only through discovery, deleted like any other.
    let leases = ApiResource {
        group: "coordination.k8s.io".into(),
        version: "v1".into(),
        api_version: "coordination.k8s.io/v1".into(),
        kind: "Lease".into(),
        plural: "leases".into(),
    };
    let lease_api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "kept", &leases);
    let lease: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "l"}, "spec": {"holderIdentity": "x"}
    }))
    .unwrap();
    lease_api
        .create(&PostParams::default(), &lease)
        .await
        .unwrap();

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete("kept", &DeleteParams::default())
        .await
        .unwrap();
    let ns = wait_until(TIMEOUT, "the kubernetes finalizer removed", || async {
        let ns = namespaces.get("kept").await.ok()?;
        let finalizers = ns.spec.as_ref()?.finalizers.clone()?;
        (finalizers == ["example.com/other"]).then_some(ns)
    })
    .await;
    assert!(ns.metadata.deletion_timestamp.is_some());
    assert!(matches!(lease_api.get_opt("l").await, Ok(None)));
    // Every condition the controller owns says all went well.
    for kind in [
        "NamespaceDeletionDiscoveryFailure",
        "NamespaceDeletionGroupVersionParsingFailure",
        "NamespaceDeletionContentFailure",
        "NamespaceContentRemaining",
        "NamespaceFinalizersRemaining",
    ] {
        assert_eq!(condition(&ns, kind).unwrap().0, "False", "{kind}");
    }
}
