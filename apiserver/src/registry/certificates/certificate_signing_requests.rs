//! CertificateSigningRequests (certificates.k8s.io/v1), as upstream's
//! `pkg/registry/certificates/certificates` strategies:
//! - create: the requester (`spec.username`, `uid`, `groups`, `extra`) is the authenticated
//!   user, whatever the client sent; the status starts empty;
//! - update of the main resource: only metadata changes (spec and status stay);
//! - `/status`: the status changes except the Approved/Denied conditions (signers write
//!   `status.certificate` and Failed conditions here);
//! - `/approval`: only `status.conditions` change (approvers add Approved or Denied).
//!
//! Condition timestamps the client left out are filled in, as upstream's
//! `populateConditionTimestamps`.

use crate::authn::UserInfo;
use crate::object;
use crate::registry::Strategy;
use api_types::resources::ResourceInfo;
use serde_json::{json, Value};

/// Is this the CertificateSigningRequest resource?
pub fn is_csr(info: &ResourceInfo) -> bool {
    info.group == "certificates.k8s.io" && info.plural == "certificatesigningrequests"
}

/// Sets the requester of a new CSR from the authenticated user (upstream ignores what the
/// client put in these fields).
pub fn set_requester(obj: &mut Value, user: &UserInfo) {
    let Some(o) = obj.as_object_mut() else {
        return;
    };
    let spec = o.entry("spec").or_insert_with(|| json!({}));
    let Some(spec) = spec.as_object_mut() else {
        return;
    };
    for f in ["username", "uid", "groups", "extra"] {
        spec.remove(f);
    }
    if !user.name.is_empty() {
        spec.insert("username".into(), json!(user.name));
    }
    if !user.uid.is_empty() {
        spec.insert("uid".into(), json!(user.uid));
    }
    if !user.groups.is_empty() {
        spec.insert("groups".into(), json!(user.groups));
    }
}

fn conditions(obj: &Value) -> Vec<Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn is_approval(c: &Value) -> bool {
    matches!(
        c.get("type").and_then(Value::as_str),
        Some("Approved" | "Denied")
    )
}

fn set_conditions(obj: &mut Value, conds: Vec<Value>) {
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    if conds.is_empty() {
        if let Some(s) = obj["status"].as_object_mut() {
            s.remove("conditions");
        }
    } else {
        obj["status"]["conditions"] = Value::Array(conds);
    }
}

/// Fills in `lastUpdateTime` and `lastTransitionTime` of new or changed conditions.
fn populate_condition_timestamps(new: &mut Value, old: &Value) {
    let now = object::now_rfc3339();
    let old_conds = conditions(old);
    let mut conds = conditions(new);
    for c in &mut conds {
        let Some(m) = c.as_object_mut() else { continue };
        if m.get("lastUpdateTime").is_none_or(Value::is_null) {
            m.insert("lastUpdateTime".into(), json!(now));
        }
        if m.get("lastTransitionTime").is_none_or(Value::is_null) {
            let ty = m.get("type").cloned();
            let status = m.get("status").cloned();
            let previous = old_conds
                .iter()
                .find(|o| o.get("type") == ty.as_ref())
                .filter(|o| o.get("status") == status.as_ref())
                .and_then(|o| o.get("lastTransitionTime"))
                .filter(|t| !t.is_null())
                .cloned();
            m.insert(
                "lastTransitionTime".into(),
                previous.unwrap_or_else(|| json!(now)),
            );
        }
    }
    if !conds.is_empty() {
        set_conditions(new, conds);
    }
}

/// The `/approval` subresource: only the conditions of the new object are taken.
pub fn prepare_for_approval_update(new: &mut Value, old: &Value) {
    let conds = conditions(new);
    let mut merged = old.clone();
    set_conditions(&mut merged, conds);
    keep_resource_version(&mut merged, new);
    *new = merged;
    populate_condition_timestamps(new, old);
}

fn keep_resource_version(merged: &mut Value, new: &Value) {
    if let Some(rv) = object::resource_version(new).map(String::from) {
        object::meta_mut(merged).insert("resourceVersion".into(), json!(rv));
    } else {
        object::meta_mut(merged).remove("resourceVersion");
    }
}

pub struct CertificateSigningRequestStrategy;

impl Strategy for CertificateSigningRequestStrategy {
    fn prepare_for_create(&self, _info: &ResourceInfo, obj: &mut Value) {
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
    }

    fn prepare_for_update(&self, _info: &ResourceInfo, new: &mut Value, old: &Value) {
        for part in ["spec", "status"] {
            match old.get(part) {
                Some(v) => new[part] = v.clone(),
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove(part);
                    }
                }
            }
        }
    }

    fn prepare_for_status_update(&self, _info: &ResourceInfo, new: &mut Value, old: &Value) {
        let mut merged = old.clone();
        merged["status"] = new.get("status").cloned().unwrap_or_else(|| json!({}));
        // Approval conditions change only through /approval.
        let mut conds: Vec<Value> = conditions(new)
            .into_iter()
            .filter(|c| !is_approval(c))
            .collect();
        let mut kept: Vec<Value> = conditions(old).into_iter().filter(is_approval).collect();
        kept.append(&mut conds);
        set_conditions(&mut merged, kept);
        keep_resource_version(&mut merged, new);
        *new = merged;
        populate_condition_timestamps(new, old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr() -> Value {
        json!({
            "metadata": { "name": "a", "resourceVersion": "5" },
            "spec": { "request": "eA==", "signerName": "example.com/x", "usages": ["client auth"] },
            "status": {}
        })
    }

    #[test]
    fn requester_comes_from_the_user() {
        let mut obj = csr();
        obj["spec"]["username"] = json!("mallory");
        obj["spec"]["groups"] = json!(["system:masters"]);
        let user = UserInfo {
            name: "system:bootstrap:abcdef".into(),
            uid: String::new(),
            groups: vec!["system:bootstrappers".into()],
        };
        set_requester(&mut obj, &user);
        assert_eq!(obj["spec"]["username"], "system:bootstrap:abcdef");
        assert_eq!(obj["spec"]["groups"], json!(["system:bootstrappers"]));
        assert!(obj["spec"].get("uid").is_none());
    }

    #[test]
    fn approval_changes_only_conditions() {
        let old = csr();
        let mut new = csr();
        new["spec"]["signerName"] = json!("example.com/other");
        new["status"] = json!({
            "certificate": "Zm9v",
            "conditions": [{ "type": "Approved", "status": "True", "reason": "ok" }]
        });
        prepare_for_approval_update(&mut new, &old);
        assert_eq!(new["spec"], old["spec"]);
        assert!(new["status"].get("certificate").is_none());
        assert_eq!(new["status"]["conditions"][0]["type"], "Approved");
        assert!(new["status"]["conditions"][0]["lastUpdateTime"].is_string());
    }

    #[test]
    fn status_keeps_approval_conditions() {
        let mut old = csr();
        old["status"] = json!({ "conditions": [{ "type": "Approved", "status": "True" }] });
        let mut new = old.clone();
        new["status"] = json!({
            "certificate": "Zm9v",
            "conditions": [{ "type": "Denied", "status": "True" }]
        });
        CertificateSigningRequestStrategy.prepare_for_status_update(
            api_types::resources::find("certificates.k8s.io", "v1", "certificatesigningrequests")
                .unwrap(),
            &mut new,
            &old,
        );
        let conds = new["status"]["conditions"].as_array().unwrap();
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0]["type"], "Approved");
        assert_eq!(new["status"]["certificate"], "Zm9v");
    }
}
