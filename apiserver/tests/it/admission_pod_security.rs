//! The PodSecurity admission plugin: namespace labels pick the level; `enforce` refuses
//! pods, `warn` answers warnings that the real kubectl prints.

use crate::common::TestApi;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::Duration;

const BARE_POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: bare
spec:
  containers:
  - name: c
    image: busybox:1.36
";

const RESTRICTED_VIOLATIONS: &str = "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")";

async fn namespace(api: &TestApi, name: &str, labels: serde_json::Value) {
    let ns: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": name, "labels": labels } })).unwrap();
    Api::<Namespace>::all(api.client().await)
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_refuses_pods_and_warn_tells_kubectl() {
    let api = TestApi::start().await;
    namespace(
        &api,
        "locked",
        json!({ "pod-security.kubernetes.io/enforce": "restricted" }),
    )
    .await;
    namespace(
        &api,
        "watched",
        json!({
            "pod-security.kubernetes.io/enforce": "baseline",
            "pod-security.kubernetes.io/warn": "restricted",
            "pod-security.kubernetes.io/warn-version": "v1.32",
        }),
    )
    .await;

    // enforce=restricted: a pod without the restricted settings is refused, every
    // violation named.
    let pods: Api<Pod> = Api::namespaced(api.client().await, "locked");
    let pod: Pod = serde_yaml::from_str(BARE_POD).unwrap();
    match pods.create(&PostParams::default(), &pod).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403);
            assert_eq!(
                status.message,
                format!("pods \"bare\" is forbidden: violates PodSecurity \"restricted:latest\": {RESTRICTED_VIOLATIONS}")
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The same pod, locked down, is admitted.
    let locked_down: Pod = serde_json::from_value(json!({
        "metadata": { "name": "tight" },
        "spec": {
            "securityContext": { "runAsNonRoot": true, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{ "name": "c", "image": "busybox:1.36", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } } }],
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &locked_down)
        .await
        .unwrap();

    // warn=restricted over enforce=baseline: the pod is created and kubectl warns.
    let out = api.kubectl_stdin(&["apply", "-n", "watched", "-f", "-"], Some(BARE_POD));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!("Warning: would violate PodSecurity \"restricted:v1.32\": {RESTRICTED_VIOLATIONS}")
    );
    api.kubectl_ok(&["get", "pod", "bare", "-n", "watched"]);

    // A privileged pod breaks the enforced baseline.
    let privileged = BARE_POD.replace("name: bare", "name: root").replace(
        "    image: busybox:1.36\n",
        "    image: busybox:1.36\n    securityContext:\n      privileged: true\n",
    );
    let out = api.kubectl_stdin(&["create", "-n", "watched", "-f", "-"], Some(&privileged));
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Error from server (Forbidden): error when creating \"STDIN\": pods \"root\" is forbidden: violates PodSecurity \"baseline:latest\": privileged (container \"c\" must not set securityContext.privileged=true)"
    );

    // A Deployment's pod template is only warned about, even where pods are enforced.
    let out = api.kubectl(&[
        "create",
        "deployment",
        "web",
        "-n",
        "watched",
        "--image=busybox:1.36",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.starts_with("Warning: would violate PodSecurity \"restricted:v1.32\": allowPrivilegeEscalation != false (container \"busybox\" must set"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_stricter_label_holds_for_pod_changes_but_not_for_relabelling() {
    let api = TestApi::start().await;
    namespace(&api, "team", json!({})).await;
    let client = api.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "team");
    let pod: Pod = serde_yaml::from_str(BARE_POD).unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();

    // The namespace becomes restricted; the running pod stays.
    let params = PatchParams::default();
    Api::<Namespace>::all(client)
        .patch(
            "team",
            &params,
            &Patch::Merge(json!({ "metadata": { "labels": { "pod-security.kubernetes.io/enforce": "restricted" } } })),
        )
        .await
        .unwrap();
    // Its labels may change; its spec (a new image) must now meet restricted.
    pods.patch(
        "bare",
        &params,
        &Patch::Merge(json!({ "metadata": { "labels": { "tier": "web" } } })),
    )
    .await
    .unwrap();
    let image = json!({ "spec": { "containers": [{ "name": "c", "image": "busybox:1.37" }] } });
    match pods.patch("bare", &params, &Patch::Strategic(image)).await {
        Err(kube::Error::Api(status)) => assert_eq!(
            (status.code, status.message),
            (403, format!("pods \"bare\" is forbidden: violates PodSecurity \"restricted:latest\": {RESTRICTED_VIOLATIONS}"))
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The `Warning` headers of a merge patch of a namespace, sent with the kube client.
async fn patch_namespace_warnings(
    client: &kube::Client,
    name: &str,
    patch: serde_json::Value,
) -> Vec<String> {
    let request = http::Request::patch(format!("/api/v1/namespaces/{name}"))
        .header("content-type", "application/merge-patch+json")
        .body(kube::client::Body::from(
            serde_json::to_vec(&patch).unwrap(),
        ))
        .unwrap();
    let response = client.send(request).await.unwrap();
    assert_eq!(response.status(), 200);
    response
        .headers()
        .get_all(http::header::WARNING)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_labels_are_validated_and_a_stricter_enforce_warns_of_existing_pods() {
    let api = TestApi::start().await;
    let client = api.client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());

    // A level or version upstream cannot parse is refused, every bad label named.
    let bad: Namespace = serde_json::from_value(json!({ "metadata": { "name": "bad", "labels": {
        "pod-security.kubernetes.io/enforce": "strict",
        "pod-security.kubernetes.io/warn-version": "1.30",
    } } }))
    .unwrap();
    match namespaces.create(&PostParams::default(), &bad).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
            assert_eq!(
                status.message,
                "Namespace \"bad\" is invalid: [metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": must be one of privileged, baseline, restricted, metadata.labels[pod-security.kubernetes.io/warn-version]: Invalid value: \"1.30\": must be \"latest\" or \"v1.x\"]"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    namespace(&api, "team", json!({})).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "team");
    for name in ["web-1", "web-0"] {
        let pod: Pod =
            serde_yaml::from_str(&BARE_POD.replace("name: bare", &format!("name: {name}")))
                .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    let privileged = BARE_POD.replace("name: bare", "name: root").replace(
        "    image: busybox:1.36\n",
        "    image: busybox:1.36\n    securityContext:\n      privileged: true\n",
    );
    pods.create(
        &PostParams::default(),
        &serde_yaml::from_str(&privileged).unwrap(),
    )
    .await
    .unwrap();
    // The check reads the pods from the watch cache (upstream: the pod informer), which a
    // list at resourceVersion=0 shows.
    apiserver::testing::wait_until(
        Duration::from_secs(10),
        "the pods in the watch cache",
        || {
            let pods = pods.clone();
            async move {
                let cached = pods.list(&ListParams::default().match_any()).await.ok()?;
                (cached.items.len() == 3).then_some(())
            }
        },
    )
    .await;

    // kubectl relabels to restricted: allowed, with the pods that would now be refused
    // named, those with the same violations grouped.
    let out = api.kubectl(&[
        "label",
        "ns",
        "team",
        "pod-security.kubernetes.io/enforce=restricted",
        "--overwrite",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "namespace/team labeled"
    );
    let reasons = "allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile";
    assert_eq!(
        stderr.trim(),
        format!(
            "Warning: existing pods in namespace \"team\" violate the new PodSecurity enforce level \"restricted:latest\"\n\
             Warning: root: privileged, {reasons}\n\
             Warning: web-0 (and 1 other pod): {reasons}"
        )
    );
    // A bad label on an existing namespace is refused too.
    let out = api.kubectl(&[
        "label",
        "ns",
        "team",
        "pod-security.kubernetes.io/enforce-version=v1.032",
        "--overwrite",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("metadata.labels[pod-security.kubernetes.io/enforce-version]: Invalid value: \"v1.032\": must be \"latest\" or \"v1.x\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Relaxing (same version, lower level) checks nothing; tightening again warns, as
    // any client sees in the response's Warning headers.
    let enforce = |level: &str| json!({ "metadata": { "labels": { "pod-security.kubernetes.io/enforce": level } } });
    assert!(
        patch_namespace_warnings(&client, "team", enforce("baseline"))
            .await
            .is_empty()
    );
    assert_eq!(
        patch_namespace_warnings(&client, "team", enforce("restricted")).await,
        [
            "299 - \"existing pods in namespace \\\"team\\\" violate the new PodSecurity enforce level \\\"restricted:latest\\\"\"".to_string(),
            format!("299 - \"root: privileged, {reasons}\""),
            format!("299 - \"web-0 (and 1 other pod): {reasons}\""),
        ]
    );
    // A change that keeps the enforce policy (another label) checks nothing either.
    assert!(patch_namespace_warnings(
        &client,
        "team",
        json!({ "metadata": { "labels": { "tier": "web" } } })
    )
    .await
    .is_empty());
}
