//! NodeRestriction on writes by a kubelet, with authorization left to AlwaysAllow so that
//! only admission decides: a node changes only its own Node (not its taints or protected
//! labels), does not update pods, and writes only its own Lease.

use crate::common::{TestApi, TOKEN};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

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

#[tokio::test]
async fn a_kubelet_changes_only_its_own_node_pods_status_and_lease() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(
        &tokens,
        format!(
            "{TOKEN},admin,admin-uid,\"system:masters\"\n{NODE_TOKEN},system:node:n1,n1-uid,\"system:nodes\"\n"
        ),
    )
    .unwrap();
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
