//! The Priority admission plugin and PriorityClasses, through kube-rs against a real etcd.

use crate::common::TestApi;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

fn pod(name: &str, spec: Value) -> Pod {
    let mut spec = spec;
    spec["containers"] = json!([{ "name": "c", "image": "busybox:1.36" }]);
    serde_json::from_value(json!({ "metadata": { "name": name }, "spec": spec })).unwrap()
}

fn class(name: &str, value: i32, extra: Value) -> PriorityClass {
    let mut pc = json!({ "metadata": { "name": name }, "value": value });
    if let (Some(pc), Some(extra)) = (pc.as_object_mut(), extra.as_object()) {
        pc.extend(extra.clone());
    }
    serde_json::from_value(pc).unwrap()
}

/// The status a refused request answered.
fn refused<T: std::fmt::Debug>(result: kube::Result<T>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn priority_of(p: &Pod) -> (Option<i32>, Option<&str>, Option<&str>) {
    let spec = p.spec.as_ref().unwrap();
    (
        spec.priority,
        spec.priority_class_name.as_deref(),
        spec.preemption_policy.as_deref(),
    )
}

#[tokio::test]
async fn system_priority_classes_exist_and_are_reserved() {
    let api = TestApi::start().await;
    let classes: Api<PriorityClass> = Api::all(api.client().await);

    let node = classes.get("system-node-critical").await.unwrap();
    assert_eq!(node.value, 2_000_001_000);
    assert_eq!(
        node.description.as_deref(),
        Some("Used for system critical pods that must not be moved from their current node.")
    );
    assert_eq!(
        node.preemption_policy.as_deref(),
        Some("PreemptLowerPriority")
    );
    let cluster = classes.get("system-cluster-critical").await.unwrap();
    assert_eq!(cluster.value, 2_000_000_000);
    assert_eq!(cluster.global_default, None);

    let err = refused(
        classes
            .delete("system-node-critical", &DeleteParams::default())
            .await,
    );
    assert_eq!(err.code, 403);
    assert_eq!(
        err.message,
        "priorityclasses.scheduling.k8s.io \"system-node-critical\" is forbidden: this is a system priority class and cannot be deleted"
    );

    let pp = PostParams::default();
    let err = refused(
        classes
            .create(&pp, &class("system-mine", 10, json!({})))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message.contains(
            "metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only."
        ),
        "{}",
        err.message
    );
    let err = refused(
        classes
            .create(&pp, &class("huge", 1_000_000_001, json!({})))
            .await,
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains(
            "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"
        ),
        "{}",
        err.message
    );

    classes
        .create(&pp, &class("high", 1000, json!({})))
        .await
        .unwrap();
    let err = refused(
        classes
            .patch(
                "high",
                &PatchParams::default(),
                &Patch::Merge(json!({ "value": 2000 })),
            )
            .await,
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message
            .contains("value: Forbidden: may not be changed in an update."),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn pods_take_the_priority_of_their_class() {
    let api = TestApi::start().await;
    let client = api.client().await;
    let classes: Api<PriorityClass> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pp = PostParams::default();

    // No class and no default: priority 0, preempting.
    let plain = pods.create(&pp, &pod("plain", json!({}))).await.unwrap();
    assert_eq!(
        priority_of(&plain),
        (Some(0), None, Some("PreemptLowerPriority"))
    );

    // A class gives its value and policy; a class created a moment ago is seen.
    classes
        .create(
            &pp,
            &class("batch", 100, json!({ "preemptionPolicy": "Never" })),
        )
        .await
        .unwrap();
    let batch = pods
        .create(&pp, &pod("batch", json!({ "priorityClassName": "batch" })))
        .await
        .unwrap();
    assert_eq!(
        priority_of(&batch),
        (Some(100), Some("batch"), Some("Never"))
    );
    let critical = pods
        .create(
            &pp,
            &pod(
                "critical",
                json!({ "priorityClassName": "system-node-critical", "priority": 2_000_001_000 }),
            ),
        )
        .await
        .unwrap();
    assert_eq!(critical.spec.unwrap().priority, Some(2_000_001_000));

    // An update without the priority keeps it; validation refuses changing it.
    let mut replaced = batch.clone();
    let spec = replaced.spec.as_mut().unwrap();
    spec.priority = None;
    spec.preemption_policy = None;
    let replaced = pods.replace("batch", &pp, &replaced).await.unwrap();
    assert_eq!(
        priority_of(&replaced),
        (Some(100), Some("batch"), Some("Never"))
    );
    let err = refused(
        pods.patch(
            "batch",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "priority": 5 } })),
        )
        .await,
    );
    assert_eq!(err.code, 422);

    // Unknown classes and values that disagree with the class are refused.
    let err = refused(
        pods.create(&pp, &pod("lost", json!({ "priorityClassName": "nope" })))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        err.message,
        "pods \"lost\" is forbidden: no PriorityClass with name nope was found"
    );
    let details = err.details.unwrap();
    assert_eq!(
        (details.name.as_str(), details.kind.as_str()),
        ("lost", "pods")
    );
    let err = refused(
        pods.create(
            &pp,
            &pod(
                "greedy",
                json!({ "priorityClassName": "batch", "priority": 1000 }),
            ),
        )
        .await,
    );
    assert_eq!(err.code, 403);
    assert_eq!(
        err.message,
        "pods \"greedy\" is forbidden: the integer value of priority (1000) must not be provided in pod spec; priority admission controller computed 100 from the given PriorityClass name"
    );
    let err = refused(
        pods.create(
            &pp,
            &pod(
                "pushy",
                json!({ "priorityClassName": "batch", "preemptionPolicy": "PreemptLowerPriority" }),
            ),
        )
        .await,
    );
    assert_eq!(err.code, 403);
    assert_eq!(
        err.message,
        "pods \"pushy\" is forbidden: the string value of PreemptionPolicy (PreemptLowerPriority) must not be provided in pod spec; priority admission controller computed Never from the given PriorityClass name"
    );

    // A global default class applies to pods naming none; there is only one.
    classes
        .create(&pp, &class("normal", 10, json!({ "globalDefault": true })))
        .await
        .unwrap();
    let defaulted = pods
        .create(&pp, &pod("defaulted", json!({})))
        .await
        .unwrap();
    assert_eq!(
        priority_of(&defaulted),
        (Some(10), Some("normal"), Some("PreemptLowerPriority"))
    );
    let err = refused(
        classes
            .create(&pp, &class("another", 20, json!({ "globalDefault": true })))
            .await,
    );
    assert_eq!(err.code, 403);
    assert_eq!(
        err.message,
        "priorityclasses.scheduling.k8s.io \"another\" is forbidden: PriorityClass normal is already marked as default. Only one default can exist"
    );
    let err = refused(
        classes
            .patch(
                "batch",
                &PatchParams::default(),
                &Patch::Merge(json!({ "globalDefault": true })),
            )
            .await,
    );
    assert_eq!(err.code, 403);
    // The default itself may be updated.
    classes
        .patch(
            "normal",
            &PatchParams::default(),
            &Patch::Merge(json!({ "description": "the default" })),
        )
        .await
        .unwrap();
}
