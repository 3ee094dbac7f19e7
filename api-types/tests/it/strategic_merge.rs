//! Strategic merge patches against real definitions, with metadata from the wire tables.

use api_types::strategic_merge::{apply_strategic_merge_patch, PatchError};
use serde_json::{json, Value};

const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";
const POD: &str = "io.k8s.api.core.v1.Pod";

fn deployment(pod_spec: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "front"}},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec},
        },
    })
}

fn pod_spec_of(v: &Value) -> &Value {
    &v["spec"]["template"]["spec"]
}

fn two_containers() -> Value {
    deployment(json!({
        "containers": [
            {
                "name": "c",
                "image": "old",
                "args": ["--a", "--b"],
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            },
            {"name": "sidecar", "image": "sidecar:1"},
        ],
        "volumes": [{"name": "data", "emptyDir": {}}],
    }))
}

#[test]
fn kubectl_set_image_style_patch_merges_containers_by_name() {
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "new"}]}}}});
    let out = apply_strategic_merge_patch(&two_containers(), &patch, DEPLOYMENT).unwrap();
    let containers = pod_spec_of(&out)["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0]["name"], "c");
    assert_eq!(containers[0]["image"], "new");
    assert_eq!(containers[0]["args"], json!(["--a", "--b"]));
    assert_eq!(
        containers[1],
        json!({"name": "sidecar", "image": "sidecar:1"})
    );
    // Everything else is untouched.
    assert_eq!(out["spec"]["replicas"], 1);
    assert_eq!(out["metadata"]["labels"]["tier"], "front");
}

#[test]
fn ports_merge_by_container_port_env_by_name_args_replace() {
    let patch = json!({"spec": {"template": {"spec": {"containers": [{
        "name": "c",
        "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 9090}],
        "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
        "args": ["--only"],
    }]}}}});
    let out = apply_strategic_merge_patch(&two_containers(), &patch, DEPLOYMENT).unwrap();
    let c = &pod_spec_of(&out)["containers"][0];
    assert_eq!(
        c["ports"],
        json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}, {"containerPort": 9090}])
    );
    assert_eq!(
        c["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "20"}, {"name": "C", "value": "3"}])
    );
    assert_eq!(c["args"], json!(["--only"]));
}

#[test]
fn patch_delete_removes_a_container() {
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}});
    let out = apply_strategic_merge_patch(&two_containers(), &patch, DEPLOYMENT).unwrap();
    let names: Vec<&str> = pod_spec_of(&out)["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c"]);
}

#[test]
fn set_element_order_reorders_containers() {
    // What kubectl apply sends when a config swaps two containers and changes one.
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "c"}],
        "containers": [{"name": "sidecar", "image": "sidecar:2"}],
    }}}});
    let out = apply_strategic_merge_patch(&two_containers(), &patch, DEPLOYMENT).unwrap();
    let containers = pod_spec_of(&out)["containers"].as_array().unwrap();
    assert_eq!(
        containers[0],
        json!({"name": "sidecar", "image": "sidecar:2"})
    );
    assert_eq!(containers[1]["name"], "c");
    assert_eq!(containers[1]["image"], "old");
}

#[test]
fn volumes_retain_keys_switches_the_volume_source() {
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/volumes": [{"name": "data"}],
        "volumes": [{"$retainKeys": ["configMap", "name"], "name": "data", "configMap": {"name": "cfg"}}],
    }}}});
    let out = apply_strategic_merge_patch(&two_containers(), &patch, DEPLOYMENT).unwrap();
    assert_eq!(
        pod_spec_of(&out)["volumes"],
        json!([{"name": "data", "configMap": {"name": "cfg"}}])
    );
}

#[test]
fn deployment_strategy_retain_keys() {
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}});
    let out = apply_strategic_merge_patch(&two_containers(), &patch, DEPLOYMENT).unwrap();
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
}

#[test]
fn finalizers_are_a_set_and_delete_from_primitive_list_removes() {
    let pod = json!({"metadata": {"name": "p", "finalizers": ["a/x", "b/y"]}, "spec": {"containers": []}});
    let add = json!({"metadata": {"finalizers": ["b/y", "c/z"]}});
    let out = apply_strategic_merge_patch(&pod, &add, POD).unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["a/x", "b/y", "c/z"]));

    let remove = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a/x"]}});
    let out = apply_strategic_merge_patch(&pod, &remove, POD).unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["b/y"]));
}

#[test]
fn null_deletes_labels() {
    let patch = json!({"metadata": {"labels": {"tier": null, "new": "yes"}}});
    let out = apply_strategic_merge_patch(&two_containers(), &patch, DEPLOYMENT).unwrap();
    assert_eq!(
        out["metadata"]["labels"],
        json!({"app": "web", "new": "yes"})
    );
}

#[test]
fn owner_references_merge_by_uid() {
    let pod =
        json!({"metadata": {"ownerReferences": [{"uid": "1", "kind": "ReplicaSet", "name": "a"}]}});
    let patch =
        json!({"metadata": {"ownerReferences": [{"uid": "2", "kind": "Node", "name": "n"}]}});
    let out = apply_strategic_merge_patch(&pod, &patch, POD).unwrap();
    assert_eq!(
        out["metadata"]["ownerReferences"].as_array().unwrap().len(),
        2
    );
}

#[test]
fn unknown_definitions_fall_back_to_merge_patch() {
    let original = json!({"spec": {"list": [1, 2], "nested": {"a": 1, "b": 2}}});
    let patch = json!({"spec": {"list": [3], "nested": {"a": null, "c": 3}}});
    let out = apply_strategic_merge_patch(&original, &patch, "com.example.v1.Widget").unwrap();
    assert_eq!(
        out,
        json!({"spec": {"list": [3], "nested": {"b": 2, "c": 3}}})
    );
}

#[test]
fn bad_directives_are_errors_with_upstream_messages_and_codes() {
    let cases = [
        (
            json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
            "map: map[image:x] does not contain declared merge key: name",
            500,
        ),
        (
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "$patch": "merge"}]}}}}),
            "merging lists cannot yet be specified in the patch",
            500,
        ),
        (
            json!({"spec": {"$patch": "bogus"}}),
            "unknown patch type: bogus in map: map[$patch:bogus]",
            500,
        ),
        (
            json!({"spec": {"strategy": {"$retainKeys": "type"}}}),
            "invalid patch format of retainKeys",
            400,
        ),
        (
            json!({"metadata": {"$deleteFromPrimitiveList": ["x"]}}),
            "invalid patch format of primitive list",
            400,
        ),
        (
            json!({"spec": {"template": {"spec": {"$setElementOrder": []}}}}),
            "invalid patch format of setElementOrder list",
            400,
        ),
    ];
    for (patch, message, code) in cases {
        let err = apply_strategic_merge_patch(&two_containers(), &patch, DEPLOYMENT).unwrap_err();
        assert_eq!(err.to_string(), message, "patch {patch}");
        assert_eq!(err.status_code(), code, "patch {patch}");
    }
    assert_eq!(
        apply_strategic_merge_patch(
            &two_containers(),
            &json!(["not", "an", "object"]),
            DEPLOYMENT
        ),
        Err(PatchError::BadJsonDoc)
    );
}
