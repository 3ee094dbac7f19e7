//! The pod-mutating admission plugins DefaultTolerationSeconds and ServiceAccount, through
//! kube-rs against a real etcd. No controller-manager runs here, so the tests create the
//! `default` ServiceAccount that its serviceaccount controller would.

use crate::common::TestApi;
use apiserver::AdmissionConfig;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::{json, Value};

fn pod(name: &str, extra_spec: Value, annotations: Value) -> Pod {
    let mut spec = json!({ "containers": [{ "name": "c", "image": "busybox:1.36" }] });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(
        json!({ "metadata": { "name": name, "annotations": annotations }, "spec": spec }),
    )
    .unwrap()
}

fn service_account(name: &str, automount: Option<bool>) -> ServiceAccount {
    serde_json::from_value(
        json!({ "metadata": { "name": name }, "automountServiceAccountToken": automount }),
    )
    .unwrap()
}

/// The status a refused request answered.
fn refused<T: std::fmt::Debug>(result: kube::Result<T>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn as_json(p: &Pod) -> Value {
    serde_json::to_value(p).unwrap()
}

#[tokio::test]
async fn new_pods_tolerate_an_unready_or_unreachable_node_for_a_while() {
    let api = TestApi::start_with(|c| {
        c.admission = AdmissionConfig::from_flags(&[], &["ServiceAccount".into()], 60, 300).unwrap()
    })
    .await;
    let pods: Api<Pod> = Api::default_namespaced(api.client().await);
    let pp = PostParams::default();

    let created = pods
        .create(&pp, &pod("plain", json!({}), json!({})))
        .await
        .unwrap();
    assert_eq!(
        as_json(&created)["spec"]["tolerations"],
        json!([
            { "key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60 },
            { "key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300 },
        ])
    );

    // A pod that tolerates one of the taints keeps its own toleration of it.
    let own = json!({ "key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5 });
    let created = pods
        .create(&pp, &pod("own", json!({ "tolerations": [own] }), json!({})))
        .await
        .unwrap();
    let tolerations = as_json(&created)["spec"]["tolerations"].clone();
    assert_eq!(tolerations.as_array().unwrap().len(), 2);
    assert_eq!(tolerations[0], own);
    assert_eq!(tolerations[1]["key"], "node.kubernetes.io/not-ready");
}

#[tokio::test]
async fn pods_run_as_an_existing_service_account_with_its_token_mounted() {
    let api = TestApi::start_with(|c| c.admission = AdmissionConfig::default()).await;
    let client = api.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let sas: Api<ServiceAccount> = Api::default_namespaced(client);
    let pp = PostParams::default();

    // Without a default ServiceAccount (no controller made one), a pod is refused after
    // upstream's brief wait for it.
    let err = refused(pods.create(&pp, &pod("early", json!({}), json!({}))).await);
    assert_eq!(err.code, 403);
    assert_eq!(
        err.message,
        "pods \"early\" is forbidden: error looking up service account default/default: serviceaccount \"default\" not found"
    );

    sas.create(&pp, &service_account("default", None))
        .await
        .unwrap();
    let created = as_json(
        &pods
            .create(
                &pp,
                &pod(
                    "web",
                    json!({ "initContainers": [{ "name": "init", "image": "busybox:1.36" }] }),
                    json!({}),
                ),
            )
            .await
            .unwrap(),
    );
    let spec = &created["spec"];
    assert_eq!(spec["serviceAccountName"], "default");
    let volume = &spec["volumes"][0];
    let name = volume["name"].as_str().unwrap();
    assert!(
        name.len() == "kube-api-access-".len() + 5 && name.starts_with("kube-api-access-"),
        "{name}"
    );
    assert_eq!(
        volume["projected"],
        json!({
            "defaultMode": 420,
            "sources": [
                { "serviceAccountToken": { "expirationSeconds": 3607, "path": "token" } },
                { "configMap": { "name": "kube-root-ca.crt", "items": [{ "key": "ca.crt", "path": "ca.crt" }] } },
                { "downwardAPI": { "items": [{ "path": "namespace", "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.namespace" } }] } },
            ],
        })
    );
    let mount = json!([{ "name": name, "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount" }]);
    assert_eq!(spec["containers"][0]["volumeMounts"], mount);
    assert_eq!(spec["initContainers"][0]["volumeMounts"], mount);

    // A ServiceAccount that does not exist is refused at once.
    let err = refused(
        pods.create(
            &pp,
            &pod("ghost", json!({ "serviceAccountName": "ghost" }), json!({})),
        )
        .await,
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (403, "pods \"ghost\" is forbidden: error looking up service account default/ghost: serviceaccount \"ghost\" not found")
    );

    // automountServiceAccountToken: false on the ServiceAccount, unless the pod says true.
    sas.create(&pp, &service_account("robot", Some(false)))
        .await
        .unwrap();
    let quiet = as_json(
        &pods
            .create(
                &pp,
                &pod("quiet", json!({ "serviceAccountName": "robot" }), json!({})),
            )
            .await
            .unwrap(),
    );
    assert_eq!(quiet["spec"]["serviceAccountName"], "robot");
    assert!(quiet["spec"].get("volumes").is_none(), "{quiet}");
    assert!(quiet["spec"]["containers"][0].get("volumeMounts").is_none());
    let loud = as_json(
        &pods
            .create(
                &pp,
                &pod(
                    "loud",
                    json!({ "serviceAccountName": "robot", "automountServiceAccountToken": true }),
                    json!({}),
                ),
            )
            .await
            .unwrap(),
    );
    assert_eq!(loud["spec"]["volumes"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn mirror_pods_may_not_reference_a_service_account() {
    let api = TestApi::start_with(|c| c.admission = AdmissionConfig::default()).await;
    let pods: Api<Pod> = Api::default_namespaced(api.client().await);
    let pp = PostParams::default();
    let mirror = json!({ "kubernetes.io/config.mirror": "hash" });

    // A mirror pod needs no ServiceAccount and gets no token.
    let created = as_json(
        &pods
            .create(
                &pp,
                &pod("static-web", json!({ "nodeName": "pi-1" }), mirror.clone()),
            )
            .await
            .unwrap(),
    );
    assert!(
        created["spec"].get("serviceAccountName").is_none(),
        "{created}"
    );
    assert!(created["spec"].get("volumes").is_none(), "{created}");

    let err = refused(
        pods.create(
            &pp,
            &pod(
                "static-sa",
                json!({ "serviceAccountName": "default" }),
                mirror.clone(),
            ),
        )
        .await,
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (
            403,
            "pods \"static-sa\" is forbidden: a mirror pod may not reference service accounts"
        )
    );
    let err = refused(
        pods.create(
            &pp,
            &pod(
                "static-secret",
                json!({ "volumes": [{ "name": "s", "secret": { "secretName": "creds" } }] }),
                mirror,
            ),
        )
        .await,
    );
    assert_eq!(
        err.message,
        "pods \"static-secret\" is forbidden: a mirror pod may not reference secrets"
    );
}

#[tokio::test]
async fn a_pod_created_with_its_namespace_waits_for_the_default_service_account() {
    let api = TestApi::start_with(|c| c.admission = AdmissionConfig::default()).await;
    let client = api.client().await;
    let pp = PostParams::default();
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": "fresh" } })).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&pp, &ns)
        .await
        .unwrap();

    // The pod is sent before the ServiceAccount exists, as `kubectl apply` of a namespace
    // and a pod races the serviceaccount controller.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "fresh");
    let create = tokio::spawn(async move {
        pods.create(&PostParams::default(), &pod("racer", json!({}), json!({})))
            .await
    });
    Api::<ServiceAccount>::namespaced(client, "fresh")
        .create(&pp, &service_account("default", None))
        .await
        .unwrap();
    let created = create
        .await
        .unwrap()
        .expect("the pod is admitted once the ServiceAccount exists");
    assert_eq!(
        created.spec.unwrap().service_account_name.as_deref(),
        Some("default")
    );
}

#[test]
fn an_unknown_admission_plugin_stops_the_apiserver_before_it_starts() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kube-apiserver"))
        .args([
            "--etcd-servers=http://127.0.0.1:1",
            "--enable-admission-plugins=NodeRestriction,PodSecurityPolicy",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "kube-apiserver: enable-admission-plugins plugin \"PodSecurityPolicy\" is unknown"
    );
}
