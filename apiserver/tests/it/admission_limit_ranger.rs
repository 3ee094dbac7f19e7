//! The LimitRanger admission plugin with LimitRanges, through kube-rs against a real etcd.

use crate::common::TestApi;
use k8s_openapi::api::core::v1::{LimitRange, PersistentVolumeClaim, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn pod(name: &str, resources: Value) -> Pod {
    from(json!({ "metadata": { "name": name }, "spec": {
        "containers": [{ "name": "app", "image": "busybox:1.36", "resources": resources }],
    }}))
}

fn claim(name: &str, storage: &str) -> PersistentVolumeClaim {
    from(json!({ "metadata": { "name": name }, "spec": {
        "accessModes": ["ReadWriteOnce"],
        "resources": { "requests": { "storage": storage } },
    }}))
}

fn refused<T: std::fmt::Debug>(result: kube::Result<T>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn limit_ranges_default_and_bound_what_containers_pods_and_claims_ask_for() {
    let api = TestApi::start().await;
    let client = api.client().await;
    let pp = PostParams::default();
    let ranges: Api<LimitRange> = Api::default_namespaced(client.clone());
    ranges
        .create(
            &pp,
            &from(json!({ "metadata": { "name": "limits" }, "spec": { "limits": [
                { "type": "Container",
                  "default": { "cpu": "500m", "memory": "256Mi" },
                  "defaultRequest": { "cpu": "200m", "memory": "128Mi" },
                  "min": { "cpu": "100m" },
                  "max": { "cpu": "1", "memory": "1Gi" },
                  "maxLimitRequestRatio": { "cpu": "4" } },
                { "type": "Pod", "max": { "memory": "1536Mi" } },
                { "type": "PersistentVolumeClaim", "min": { "storage": "1Gi" }, "max": { "storage": "10Gi" } },
            ]}})),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());

    // A container that asks for nothing gets the defaults, and the annotation says so.
    let created =
        serde_json::to_value(pods.create(&pp, &pod("plain", json!({}))).await.unwrap()).unwrap();
    assert_eq!(
        created["spec"]["containers"][0]["resources"],
        json!({ "limits": { "cpu": "500m", "memory": "256Mi" }, "requests": { "cpu": "200m", "memory": "128Mi" } })
    );
    assert_eq!(
        created["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container app; cpu, memory limit for container app"
    );

    // Past the Container max: every violation, in upstream's words.
    let err = refused(
        pods.create(
            &pp,
            &pod(
                "greedy",
                json!({ "limits": { "cpu": "2" }, "requests": { "cpu": "250m" } }),
            ),
        )
        .await,
    );
    assert_eq!(err.code, 403);
    assert_eq!(
        err.message,
        "pods \"greedy\" is forbidden: [maximum cpu usage per Container is 1, but limit is 2, cpu max limit to request ratio per Container is 4, but provided ratio is 8.000000]"
    );
    let err = refused(
        pods.create(
            &pp,
            &pod(
                "tiny",
                json!({ "requests": { "cpu": "50m" }, "limits": { "cpu": "100m" } }),
            ),
        )
        .await,
    );
    assert_eq!(
        err.message,
        "pods \"tiny\" is forbidden: minimum cpu usage per Container is 100m, but request is 50m"
    );

    // The Pod max holds for the containers together.
    let two: Pod = from(
        json!({ "metadata": { "name": "pair" }, "spec": { "containers": [
            { "name": "a", "image": "busybox:1.36", "resources": { "limits": { "memory": "1Gi" } } },
            { "name": "b", "image": "busybox:1.36", "resources": { "limits": { "memory": "1Gi" } } },
        ]}}),
    );
    let err = refused(pods.create(&pp, &two).await);
    assert_eq!(
        err.message,
        "pods \"pair\" is forbidden: maximum memory usage per Pod is 1536Mi, but limit is 2Gi"
    );

    let claims: Api<PersistentVolumeClaim> = Api::default_namespaced(client);
    claims.create(&pp, &claim("ok", "5Gi")).await.unwrap();
    // Growing a (bound) claim past the max is refused too.
    let bound = json!({ "status": { "phase": "Bound" } });
    claims
        .patch_status("ok", &PatchParams::default(), &Patch::Merge(bound))
        .await
        .unwrap();
    let grow = json!({ "spec": { "resources": { "requests": { "storage": "11Gi" } } } });
    let err = refused(
        claims
            .patch("ok", &PatchParams::default(), &Patch::Merge(grow))
            .await,
    );
    assert_eq!(
        err.message,
        "persistentvolumeclaims \"ok\" is forbidden: maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 11Gi"
    );
    let err = refused(claims.create(&pp, &claim("huge", "20Gi")).await);
    assert_eq!(
        (err.code, err.message.as_str()),
        (403, "persistentvolumeclaims \"huge\" is forbidden: maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi")
    );
    let err = refused(claims.create(&pp, &claim("small", "100Mi")).await);
    assert_eq!(
        err.message,
        "persistentvolumeclaims \"small\" is forbidden: minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 100Mi"
    );
}
