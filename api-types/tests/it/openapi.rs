//! The OpenAPI documents: structure, references and the extensions kubectl relies on. Real
//! kubectl `apply` and `explain` against the real apiserver are in apiserver/tests/kubectl.rs.

use std::collections::BTreeSet;

use api_types::openapi::{self, openapi_v2, openapi_v3_group_version, openapi_v3_index, v3_paths};
use api_types::resources::RESOURCES;
use serde_json::{json, Value};

fn doc_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn gvk_of(schema: &Value) -> Vec<(String, String, String)> {
    schema["x-kubernetes-group-version-kind"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|g| {
                    (
                        g["group"].as_str().unwrap_or_default().to_string(),
                        g["version"].as_str().unwrap_or_default().to_string(),
                        g["kind"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every `$ref` in `value`.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.push(v.as_str().unwrap_or("<not a string>").to_string());
                } else {
                    refs(v, out);
                }
            }
        }
        Value::Array(list) => list.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// Follows `allOf[0]` and `$ref` as kubectl's `PatchMetaFromOpenAPIV3` does.
fn resolve<'a>(schema: &'a Value, schemas: &'a Value) -> &'a Value {
    let schema = schema["allOf"].get(0).unwrap_or(schema);
    match schema["$ref"].as_str() {
        Some(r) => &schemas[r.trim_start_matches("#/components/schemas/")],
        None => schema,
    }
}

#[test]
fn every_kind_has_a_gvk_tagged_definition_in_both_versions() {
    let v2 = openapi_v2();
    for r in RESOURCES {
        let want = (
            r.group.to_string(),
            r.version.to_string(),
            r.kind.to_string(),
        );
        let want_list = (r.group.to_string(), r.version.to_string(), r.list_kind());
        let list_def = format!("{}List", r.definition);
        assert!(
            gvk_of(&v2["definitions"][r.definition]).contains(&want),
            "v2 {}",
            r.definition
        );
        let listable = r.verbs.contains(&"list");
        assert!(
            gvk_of(&v2["definitions"][&list_def]).contains(&want_list) == listable,
            "v2 {list_def}"
        );

        let v3 = openapi_v3_group_version(&doc_path(r.group, r.version)).unwrap();
        let schemas = &v3["components"]["schemas"];
        assert!(
            gvk_of(&schemas[r.definition]).contains(&want),
            "v3 {}",
            r.definition
        );
        assert!(
            gvk_of(&schemas[&list_def]).contains(&want_list) == listable,
            "v3 {list_def}"
        );
    }
    let delete_options =
        gvk_of(&v2["definitions"]["io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"]);
    assert!(delete_options.contains(&("".into(), "v1".into(), "DeleteOptions".into())));
    assert!(delete_options.contains(&("apps".into(), "v1".into(), "DeleteOptions".into())));
    for (def, kind) in [
        ("io.k8s.apimachinery.pkg.apis.meta.v1.Status", "Status"),
        (
            "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
            "WatchEvent",
        ),
        (
            "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList",
            "APIResourceList",
        ),
        ("io.k8s.api.core.v1.Binding", "Binding"),
    ] {
        assert!(
            gvk_of(&v2["definitions"][def]).contains(&("".into(), "v1".into(), kind.into())),
            "{def}"
        );
    }
    assert_eq!(
        gvk_of(&v2["definitions"]["io.k8s.api.autoscaling.v1.Scale"]),
        [("autoscaling".into(), "v1".into(), "Scale".into())]
    );
    assert_eq!(
        gvk_of(&v2["definitions"]["io.k8s.api.policy.v1.Eviction"]),
        [("policy".into(), "v1".into(), "Eviction".into())]
    );
}

#[test]
fn patch_extensions_are_on_the_properties() {
    let v2 = openapi_v2();
    let v3 = openapi_v3_group_version("api/v1").unwrap();
    for defs in [&v2["definitions"], &v3["components"]["schemas"]] {
        let containers = &defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-list-type"], "map");
        assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
        let ports = &defs["io.k8s.api.core.v1.Container"]["properties"]["ports"];
        assert_eq!(ports["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
        let volumes = &defs["io.k8s.api.core.v1.PodSpec"]["properties"]["volumes"];
        assert_eq!(volumes["x-kubernetes-patch-strategy"], "merge,retainKeys");
        let finalizers =
            &defs["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]["finalizers"];
        assert_eq!(finalizers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(finalizers["x-kubernetes-list-type"], "set");
    }
    let apps = openapi_v3_group_version("apis/apps/v1").unwrap();
    let strategy = &apps["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentSpec"]
        ["properties"]["strategy"];
    assert_eq!(strategy["x-kubernetes-patch-strategy"], "retainKeys");
    // An extension next to a reference wraps the reference in allOf (OpenAPI 3.0 ignores
    // siblings of $ref); kubectl follows allOf[0].
    assert!(strategy.get("$ref").is_none());
    assert!(strategy["allOf"][0]["$ref"].is_string());
}

#[test]
fn kubectl_style_patch_metadata_lookup_walks_deployment_to_ports() {
    let doc = openapi_v3_group_version("apis/apps/v1").unwrap();
    let schemas = &doc["components"]["schemas"];
    // kubectl picks the component whose GVK list holds apps/v1 Deployment.
    let (_, deployment) = schemas
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, s)| gvk_of(s).contains(&("apps".into(), "v1".into(), "Deployment".into())))
        .unwrap();
    let spec = resolve(&deployment["properties"]["spec"], schemas);
    let template = resolve(&spec["properties"]["template"], schemas);
    let pod_spec = resolve(&template["properties"]["spec"], schemas);
    let containers = &pod_spec["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    let container = resolve(&containers["items"], schemas);
    assert_eq!(
        container["properties"]["ports"]["x-kubernetes-patch-merge-key"],
        "containerPort"
    );
}

#[test]
fn every_reference_resolves_inside_its_document() {
    let v2 = openapi_v2();
    let mut all = Vec::new();
    refs(&v2, &mut all);
    for r in &all {
        let name = r
            .strip_prefix("#/definitions/")
            .unwrap_or_else(|| panic!("v2 ref {r}"));
        assert!(v2["definitions"].get(name).is_some(), "v2 dangling {r}");
    }
    for path in v3_paths() {
        let doc = openapi_v3_group_version(&path).unwrap();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty(), "{path}");
        for r in &all {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{path} ref {r}"));
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{path} dangling {r}"
            );
        }
    }
}

fn operations(paths: &Value) -> Vec<(&str, &str, &Value)> {
    let mut out = Vec::new();
    for (path, item) in paths.as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method != "parameters" {
                out.push((path.as_str(), method.as_str(), op));
            }
        }
    }
    out
}

#[test]
fn v2_is_well_formed_swagger() {
    let v2 = openapi_v2();
    assert_eq!(v2["swagger"], "2.0");
    assert_eq!(
        v2["info"],
        json!({"title": "Kubernetes", "version": "v1.33.0"})
    );
    let mut ids = BTreeSet::new();
    for (path, method, op) in operations(&v2["paths"]) {
        assert!(path.starts_with('/'), "{path}");
        assert!(
            ["get", "put", "post", "delete", "patch"].contains(&method),
            "{path} {method}"
        );
        assert!(
            ids.insert(op["operationId"].as_str().unwrap().to_string()),
            "duplicate {}",
            op["operationId"]
        );
        assert!(
            op["responses"]["200"]["schema"]["$ref"].is_string(),
            "{path} {method}"
        );
        for p in op["parameters"].as_array().into_iter().flatten() {
            assert!(
                p["name"].is_string() && p["in"].is_string(),
                "{path} {method} {p}"
            );
            if p["in"] == "body" {
                assert!(p["schema"]["$ref"].is_string());
            } else {
                assert!(p["type"].is_string());
            }
        }
        if method == "patch" {
            assert!(op["consumes"]
                .as_array()
                .unwrap()
                .contains(&json!("application/strategic-merge-patch+json")));
        }
    }
    let ios = &v2["definitions"]["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
    assert_eq!(
        (ios["type"].as_str(), ios["format"].as_str()),
        (Some("string"), Some("int-or-string"))
    );
    assert_eq!(
        v2["definitions"]["io.k8s.apimachinery.pkg.api.resource.Quantity"]["type"],
        "string"
    );
}

#[test]
fn v3_documents_are_well_formed_and_carry_what_kubectl_reads() {
    for path in v3_paths() {
        let doc = openapi_v3_group_version(&path).unwrap();
        assert_eq!(doc["openapi"], "3.0.0");
        assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
        for (p, method, op) in operations(&doc["paths"]) {
            assert!(p.starts_with('/'), "{p}");
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.values().all(|r| r["description"].is_string()),
                "{p} {method}"
            );
            for param in op["parameters"].as_array().into_iter().flatten() {
                assert!(param["schema"]["type"].is_string(), "{p} {method} {param}");
            }
            if let Some(gvk) = op.get("x-kubernetes-group-version-kind") {
                assert!(gvk.is_object(), "operations carry one GVK");
                assert!(op["x-kubernetes-action"].is_string());
            }
            if method == "patch" {
                // kubectl apply: strategic merge patch is supported...
                assert!(
                    op["requestBody"]["content"]["application/strategic-merge-patch+json"]
                        .is_object()
                );
                // ...and so is server-side field validation.
                assert!(op["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
            }
        }
        // No $ref with siblings anywhere (OpenAPI 3.0 would ignore them).
        fn check(v: &Value) {
            match v {
                Value::Object(m) => {
                    assert!(!(m.contains_key("$ref") && m.len() > 1), "{v}");
                    m.values().for_each(check);
                }
                Value::Array(l) => l.iter().for_each(check),
                _ => {}
            }
        }
        check(&doc);
    }
    let core = openapi_v3_group_version("api/v1").unwrap();
    let schemas = &core["components"]["schemas"];
    let ios = &schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
    assert_eq!(ios["format"], "int-or-string");
    assert_eq!(
        ios["oneOf"],
        json!([{"type": "integer"}, {"type": "string"}])
    );
    // kubectl explain finds a resource's kind on its list path's operations.
    let list = &core["paths"]["/api/v1/namespaces/{namespace}/pods"]["get"];
    assert_eq!(
        list["x-kubernetes-group-version-kind"],
        json!({"group": "", "kind": "Pod", "version": "v1"})
    );
    assert_eq!(list["x-kubernetes-action"], "list");
    assert!(openapi_v3_group_version("apis/nope/v1").is_none());
    assert!(openapi_v3_group_version("apis/apps").is_some());
}

#[test]
fn index_points_at_hashed_documents() {
    let index = openapi_v3_index(|path| format!("H-{path}"));
    assert_eq!(
        index["paths"]["apis/apps/v1"]["serverRelativeURL"],
        "/openapi/v3/apis/apps/v1?hash=H-apis/apps/v1"
    );
    for key in [
        "api",
        "api/v1",
        "apis",
        "apis/apps",
        "apis/apps/v1",
        "version",
    ] {
        assert!(index["paths"][key].is_object(), "{key}");
    }

    let cached: Value = serde_json::from_slice(&openapi::v3_index_document().json()).unwrap();
    for path in v3_paths() {
        let doc = openapi::v3_document(&path).unwrap();
        let url = cached["paths"][&path]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert_eq!(url, openapi::server_relative_url(&path, doc.hash()));
        assert_eq!(doc.etag(), format!("\"{}\"", doc.hash()));
        assert_eq!(openapi::content_hash(&doc.json()), doc.hash());
        let parsed: Value = serde_json::from_slice(&doc.json()).unwrap();
        assert_eq!(parsed, openapi_v3_group_version(&path).unwrap());
    }
    let v2: Value = serde_json::from_slice(&openapi::v2_document().json()).unwrap();
    assert_eq!(v2["swagger"], "2.0");
}
