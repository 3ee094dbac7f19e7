//! NodeRestriction on writes by a kubelet, first with authorization left to AlwaysAllow so
//! that only admission decides: a node changes only its own Node (not its taints or
//! protected labels), does not update pods, and writes only its own Lease; then with
//! Node,RBAC: it writes the status of, deletes and evicts only pods bound to it.

use crate::common::{wait_until, TestApi, TOKEN};
use apiserver::authz::Mode;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::Duration;

const NODE_TOKEN: &str = "n1-token";

async fn client_as(api: &TestApi, token: &str) -> kube::Client {
    let text = std::fs::read_to_string(api.kubeconfig_path())
        .unwrap()
        .replace(&format!("token: {TOKEN}"), &format!("token: {token}"));
    let kc: kube::config::Kubeconfig = serde_yaml::from_str(&text).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn refused<T: std::fmt::Debug>(result: kube::Result<T>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn node(name: &str) -> Node {
    serde_json::from_value(
        json!({ "metadata": { "name": name, "labels": { "kubernetes.io/hostname": name } } }),
    )
    .unwrap()
}

/// A token file in `dir` with the admin and the kubelet of node n1 (`NODE_TOKEN`).
fn admin_and_node_tokens(dir: &std::path::Path) -> std::path::PathBuf {
    let tokens = dir.join("tokens.csv");
    std::fs::write(
        &tokens,
        format!(
            "{TOKEN},admin,admin-uid,\"system:masters\"\n{NODE_TOKEN},system:node:n1,n1-uid,\"system:nodes\"\n"
        ),
    )
    .unwrap();
    tokens
}

#[tokio::test]
async fn a_kubelet_changes_only_its_own_node_pods_status_and_lease() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = admin_and_node_tokens(dir.path());
    let api = TestApi::start_with(move |c| c.token_auth_file = Some(tokens)).await;
    let admin = api.client().await;
    let kubelet = client_as(&api, NODE_TOKEN).await;
    let pp = PostParams::default();
    let merge = |v: serde_json::Value| Patch::Merge(v);
    let params = PatchParams::default();

    let nodes: Api<Node> = Api::all(kubelet.clone());
    // Registration: its own name, kubelet labels only.
    let mut labelled = node("n1");
    labelled.metadata.labels.as_mut().unwrap().insert(
        "node-role.kubernetes.io/control-plane".into(),
        String::new(),
    );
    assert_eq!(
        refused(nodes.create(&pp, &labelled).await),
        (403, "nodes \"n1\" is forbidden: node \"n1\" is not allowed to set the following labels: node-role.kubernetes.io/control-plane".into())
    );
    nodes.create(&pp, &node("n1")).await.unwrap();
    Api::<Node>::all(admin.clone())
        .create(&pp, &node("n2"))
        .await
        .unwrap();

    // Another node is not its to change.
    assert_eq!(
        refused(
            nodes
                .patch(
                    "n2",
                    &params,
                    &merge(json!({ "metadata": { "labels": { "rack": "a" } } }))
                )
                .await
        ),
        (
            403,
            "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\"".into()
        )
    );
    // Its own: free labels yes, protected labels and taints no; pressure taints are its own.
    nodes
        .patch(
            "n1",
            &params,
            &merge(json!({ "metadata": { "labels": { "example.com/rack": "a" } } })),
        )
        .await
        .unwrap();
    assert_eq!(
        refused(nodes.patch("n1", &params, &merge(json!({ "metadata": { "labels": { "node-restriction.kubernetes.io/trusted": "yes" } } }))).await),
        (403, "nodes \"n1\" is forbidden: is not allowed to modify labels: node-restriction.kubernetes.io/trusted".into())
    );
    assert_eq!(
        refused(nodes.patch("n1", &params, &merge(json!({ "spec": { "taints": [{ "key": "dedicated", "value": "me", "effect": "NoSchedule" }] } }))).await),
        (403, "nodes \"n1\" is forbidden: node \"n1\" is not allowed to modify taints".into())
    );
    nodes
        .patch("n1", &params, &merge(json!({ "spec": { "taints": [{ "key": "node.kubernetes.io/memory-pressure", "effect": "NoSchedule" }] } })))
        .await
        .unwrap();
    // An admin may taint it; the kubelet may then not lift that taint.
    Api::<Node>::all(admin.clone())
        .patch("n1", &params, &merge(json!({ "spec": { "taints": [{ "key": "dedicated", "value": "ops", "effect": "NoSchedule" }] } })))
        .await
        .unwrap();
    assert_eq!(
        refused(
            nodes
                .patch("n1", &params, &merge(json!({ "spec": { "taints": null } })))
                .await
        )
        .0,
        403
    );

    // Pods: a node creates mirror pods without references, and does not update pods.
    let pods: Api<Pod> = Api::default_namespaced(kubelet.clone());
    let mirror = |name: &str, extra: serde_json::Value| -> Pod {
        let mut spec =
            json!({ "nodeName": "n1", "containers": [{ "name": "c", "image": "busybox:1.36" }] });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        serde_json::from_value(json!({ "metadata": { "name": name, "annotations": { "kubernetes.io/config.mirror": "h" } }, "spec": spec })).unwrap()
    };
    assert_eq!(
        refused(
            pods.create(
                &pp,
                &mirror(
                    "cm",
                    json!({ "volumes": [{ "name": "v", "configMap": { "name": "settings" } }] })
                )
            )
            .await
        ),
        (
            403,
            "pods \"cm\" is forbidden: node \"n1\" can not create pods that reference configmaps"
                .into()
        )
    );
    pods.create(&pp, &mirror("static-web", json!({})))
        .await
        .unwrap();
    assert_eq!(
        refused(pods.patch("static-web", &params, &merge(json!({ "metadata": { "labels": { "a": "b" } } }))).await),
        (403, "pods \"static-web\" is forbidden: unexpected operation \"UPDATE\", node \"n1\" can only create and delete mirror pods".into())
    );

    // Leases: only its own, only in kube-node-lease.
    let lease = |name: &str| -> Lease {
        serde_json::from_value(
            json!({ "metadata": { "name": name }, "spec": { "holderIdentity": name } }),
        )
        .unwrap()
    };
    let node_leases: Api<Lease> = Api::namespaced(kubelet.clone(), "kube-node-lease");
    node_leases.create(&pp, &lease("n1")).await.unwrap();
    assert_eq!(
        refused(node_leases.create(&pp, &lease("n2")).await),
        (403, "leases.coordination.k8s.io \"n2\" is forbidden: can only access node lease with the same name as the requesting node".into())
    );
    assert_eq!(
        refused(Api::<Lease>::default_namespaced(kubelet).create(&pp, &lease("n1")).await),
        (403, "leases.coordination.k8s.io \"n1\" is forbidden: can only access leases in the \"kube-node-lease\" system namespace".into())
    );
    node_leases
        .patch(
            "n1",
            &params,
            &merge(json!({ "spec": { "holderIdentity": "n1" } })),
        )
        .await
        .unwrap();
}

fn bound_pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": { "nodeName": node, "containers": [{ "name": "c", "image": "busybox:1.36" }] },
    }))
    .unwrap()
}

/// With `--authorization-mode=Node,RBAC`, as a cluster runs: the Node authorizer refuses a
/// kubelet the status, delete and eviction of another node's pods, and when RBAC grants
/// more, NodeRestriction still does; its own pods' status, eviction and delete work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubelet_writes_status_deletes_and_evicts_only_its_own_pods() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = admin_and_node_tokens(dir.path());
    let api = TestApi::start_with(move |c| {
        c.authorization_modes = vec![Mode::Node, Mode::Rbac];
        c.token_auth_file = Some(tokens);
    })
    .await;
    let admin = api.client().await;
    let kubelet = client_as(&api, NODE_TOKEN).await;
    let pp = PostParams::default();
    let params = PatchParams::default();
    let running = || Patch::Merge(json!({ "status": { "phase": "Running" } }));

    let admin_pods: Api<Pod> = Api::default_namespaced(admin.clone());
    for (name, node) in [("mine", "n1"), ("mine-2", "n1"), ("theirs", "n2")] {
        admin_pods
            .create(&pp, &bound_pod(name, node))
            .await
            .unwrap();
    }
    for name in ["n1", "n2"] {
        Api::<Node>::all(admin.clone())
            .create(&pp, &node(name))
            .await
            .unwrap();
    }
    // The Node authorizer knows a pod's node from the watch cache (a list at
    // resourceVersion=0 shows it).
    wait_until(
        Duration::from_secs(10),
        "the pods in the watch cache",
        || {
            let pods = admin_pods.clone();
            async move {
                let cached = pods.list(&ListParams::default().match_any()).await.ok()?;
                (cached.items.len() == 3).then_some(())
            }
        },
    )
    .await;

    let pods: Api<Pod> = Api::default_namespaced(kubelet.clone());
    let nodes: Api<Node> = Api::all(kubelet.clone());
    let authorizer_refusal = |what: &str, verb: &str, resource: &str| {
        (
            403,
            format!("{what} is forbidden: User \"system:node:n1\" cannot {verb} resource \"{resource}\" in API group \"\""),
        )
    };
    let (code, m) = refused(pods.patch_status("theirs", &params, &running()).await);
    let (want_code, want) = authorizer_refusal("pods \"theirs\"", "patch", "pods/status");
    assert_eq!(code, want_code);
    assert!(m.starts_with(&want), "{m}");
    let (code, m) = refused(pods.delete("theirs", &Default::default()).await);
    assert!(code == 403 && m.contains("system:node:n1"), "{m}");
    let (code, m) = refused(pods.evict("theirs", &Default::default()).await);
    assert!(code == 403 && m.contains("system:node:n1"), "{m}");
    let (code, m) = refused(
        nodes
            .patch_status("n2", &params, &Patch::Merge(json!({ "status": {} })))
            .await,
    );
    assert!(code == 403 && m.contains("system:node:n1"), "{m}");

    // RBAC grants the node every pod write; NodeRestriction holds the line.
    let grant: k8s_openapi::api::rbac::v1::ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": "pod-writer" },
        "rules": [
            { "apiGroups": [""], "resources": ["pods", "pods/status", "pods/eviction", "nodes", "nodes/status"],
              "verbs": ["get", "update", "patch", "delete", "create"] }
        ]
    }))
    .unwrap();
    Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(admin.clone())
        .create(&pp, &grant)
        .await
        .unwrap();
    let binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "pod-writer" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "pod-writer" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:node:n1" }]
    }))
    .unwrap();
    Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(admin.clone())
        .create(&pp, &binding)
        .await
        .unwrap();
    assert_eq!(
        refused(pods.patch_status("theirs", &params, &running()).await),
        (403, "pods \"theirs\" is forbidden: node \"n1\" can only update pod status for pods with spec.nodeName set to itself".into())
    );
    assert_eq!(
        refused(pods.delete("theirs", &Default::default()).await),
        (403, "pods \"theirs\" is forbidden: node \"n1\" can only delete pods with spec.nodeName set to itself".into())
    );
    assert_eq!(
        refused(pods.evict("theirs", &Default::default()).await),
        (403, "pods \"theirs\" is forbidden: node n1 can only evict pods with spec.nodeName set to itself".into())
    );
    assert_eq!(
        refused(
            nodes
                .patch_status(
                    "n2",
                    &params,
                    &Patch::Merge(json!({ "status": { "phase": "Running" } }))
                )
                .await
        ),
        (
            403,
            "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\"".into()
        )
    );
    assert_eq!(
        refused(nodes.delete("n2", &Default::default()).await),
        (
            403,
            "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\"".into()
        )
    );
    assert_eq!(
        refused(pods.patch("theirs", &params, &Patch::Merge(json!({ "metadata": { "labels": { "a": "b" } } }))).await),
        (403, "pods \"theirs\" is forbidden: unexpected operation \"UPDATE\", node \"n1\" can only create and delete mirror pods".into())
    );
    // The other node's pod is untouched.
    let theirs = admin_pods.get("theirs").await.unwrap();
    assert!(theirs.metadata.deletion_timestamp.is_none());
    assert_eq!(theirs.status.and_then(|s| s.phase), Some("Pending".into()));

    // Its own pods and Node: status, eviction and delete go through.
    let updated = pods
        .patch_status("mine", &params, &running())
        .await
        .unwrap();
    assert_eq!(updated.status.and_then(|s| s.phase), Some("Running".into()));
    nodes
        .patch_status(
            "n1",
            &params,
            &Patch::Merge(json!({ "status": { "phase": "Running" } })),
        )
        .await
        .unwrap();
    pods.evict("mine", &Default::default()).await.unwrap();
    assert!(admin_pods
        .get("mine")
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_some());
    pods.delete("mine-2", &Default::default()).await.unwrap();
    assert!(admin_pods
        .get("mine-2")
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_some());
}
