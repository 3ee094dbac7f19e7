//! Discovery documents: /api, /apis, /apis/{group}, and the resource lists of each
//! group/version, generated from the resource registry.

use api_types::resources::{self, ResourceInfo, GROUPS};
use serde_json::{json, Value};
use std::net::SocketAddr;

pub fn api_versions(advertise: SocketAddr) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": advertise.to_string() }],
    })
}

fn group_value(group: &str) -> Value {
    let versions: Vec<Value> = resources::versions_of(group)
        .into_iter()
        .map(|v| json!({ "groupVersion": format!("{group}/{v}"), "version": v }))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({ "name": group, "versions": versions, "preferredVersion": preferred })
}

pub fn api_group_list() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": GROUPS.iter().map(|g| group_value(g)).collect::<Vec<_>>(),
    })
}

pub fn api_group(group: &str) -> Value {
    let mut v = group_value(group);
    v["kind"] = json!("APIGroup");
    v["apiVersion"] = json!("v1");
    v
}

/// A stable short hash of the resource's identity, as discovery's storageVersionHash.
fn storage_version_hash(info: &ResourceInfo) -> String {
    use base64::Engine;
    let mut h: u64 = 0xcbf29ce484222325;
    for b in format!("{}/{}/{}", info.group, info.version, info.kind).bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    base64::engine::general_purpose::STANDARD.encode(h.to_be_bytes())
}

fn subresource_entry(info: &ResourceInfo, sub: &str) -> Value {
    let (group, version, kind, verbs): (&str, &str, &str, &[&str]) = match sub {
        "status" => (
            info.group,
            info.version,
            info.kind,
            &["get", "patch", "update"],
        ),
        "scale" => ("autoscaling", "v1", "Scale", &["get", "patch", "update"]),
        "binding" => ("", "v1", "Binding", &["create"]),
        "eviction" => ("policy", "v1", "Eviction", &["create"]),
        "token" => ("authentication.k8s.io", "v1", "TokenRequest", &["create"]),
        "finalize" => (info.group, info.version, info.kind, &["update"]),
        // Connect subresources: the options kind of each, as upstream.
        "attach" => ("", "v1", "PodAttachOptions", &["create", "get"]),
        "exec" => ("", "v1", "PodExecOptions", &["create", "get"]),
        "portforward" => ("", "v1", "PodPortForwardOptions", &["create", "get"]),
        "proxy" => (
            info.group,
            info.version,
            match info.kind {
                "Node" => "NodeProxyOptions",
                "Service" => "ServiceProxyOptions",
                _ => "PodProxyOptions",
            },
            &["create", "delete", "get", "patch", "update"],
        ),
        _ => (info.group, info.version, info.kind, &["get"]),
    };
    let mut v = json!({
        "name": format!("{}/{}", info.plural, sub),
        "singularName": "",
        "namespaced": info.namespaced,
        "kind": kind,
        "verbs": verbs,
    });
    if (group, version) != (info.group, info.version) {
        v["group"] = json!(group);
        v["version"] = json!(version);
    }
    v
}

pub fn api_resource_list(group: &str, version: &str) -> Value {
    let mut list = Vec::new();
    for info in resources::in_group_version(group, version) {
        let mut r = json!({
            "name": info.plural,
            "singularName": info.singular,
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": info.verbs,
            "storageVersionHash": storage_version_hash(info),
        });
        if !info.short_names.is_empty() {
            r["shortNames"] = json!(info.short_names);
        }
        if !info.categories.is_empty() {
            r["categories"] = json!(info.categories);
        }
        list.push(r);
        for sub in info.subresources {
            list.push(subresource_entry(info, sub));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list })
}
