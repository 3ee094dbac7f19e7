//! Reviews: access checks (authorization.k8s.io) and token/self reviews
//! (authentication.k8s.io). They are answered, never stored. Access reviews ask the
//! configured authorizers ([`crate::authz`]) about the user in the review (Subject,
//! LocalSubject) or the requesting user (SelfSubject); a SelfSubjectRulesReview lists the
//! RBAC rules that apply to the requesting user in a namespace.

use crate::authn::{Authenticated, Authenticator, UserInfo};
use crate::authz::{self, Attributes, Decision};
use crate::status::{ApiError, ApiResult};
use crate::Apiserver;
use api_types::resources::ResourceInfo;
use serde_json::{json, Value};

/// Is this a review resource (created and answered, not stored)?
pub fn is_review(info: &ResourceInfo) -> bool {
    matches!(info.group, "authorization.k8s.io" | "authentication.k8s.io")
}

fn user_json(user: &UserInfo) -> Value {
    json!({ "username": user.name, "uid": user.uid, "groups": user.groups })
}

fn invalid(info: &ResourceInfo, field: &str, detail: &str) -> ApiError {
    ApiError::new(
        422,
        "Invalid",
        format!(
            "{}.{} \"\" is invalid: {field}: {detail}",
            info.kind, info.group
        ),
    )
    .with_details(json!({
        "group": info.group,
        "kind": info.kind,
        "causes": [{ "reason": "FieldValueInvalid", "message": detail, "field": field }],
    }))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The attributes an access review asks about (upstream's
/// `ResourceAttributesFrom`/`NonResourceAttributesFrom`).
fn access_review_attributes(kind: &str, spec: &Value, requester: &UserInfo) -> Attributes {
    let mut a = if kind == "SelfSubjectAccessReview" {
        Attributes::for_user(requester)
    } else {
        Attributes {
            user: spec
                .get("user")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            groups: strings(spec.get("groups")),
            ..Default::default()
        }
    };
    let s = |v: &Value, f: &str| v.get(f).and_then(Value::as_str).unwrap_or("").to_string();
    match spec.get("resourceAttributes").filter(|v| !v.is_null()) {
        Some(r) => {
            a.resource_request = true;
            a.namespace = s(r, "namespace");
            a.verb = s(r, "verb");
            a.api_group = s(r, "group");
            a.api_version = s(r, "version");
            a.resource = s(r, "resource");
            a.subresource = s(r, "subresource");
            a.name = s(r, "name");
        }
        None => {
            let n = spec
                .get("nonResourceAttributes")
                .cloned()
                .unwrap_or_default();
            a.path = s(&n, "path");
            a.verb = s(&n, "verb");
        }
    }
    a
}

/// The rules that apply to the user in a namespace (upstream's `RulesFor`, RBAC only).
fn rules_review(authorizer: &authz::Chain, user: &UserInfo, namespace: &str) -> Value {
    let everything = || {
        json!({
            "resourceRules": [{ "verbs": ["*"], "apiGroups": ["*"], "resources": ["*"] }],
            "nonResourceRules": [{ "verbs": ["*"], "nonResourceURLs": ["*"] }],
            "incomplete": false,
        })
    };
    if authorizer.allows_everything() {
        return everything();
    }
    let Some(rbac) = authorizer.rbac() else {
        return json!({ "resourceRules": [], "nonResourceRules": [], "incomplete": true });
    };
    let (rules, errors) = rbac.index().rules_for(&user.name, &user.groups, namespace);
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for r in rules {
        match &r.non_resource_urls {
            Some(urls) if !urls.is_empty() => {
                non_resource_rules.push(json!({ "verbs": r.verbs, "nonResourceURLs": urls }))
            }
            _ => {
                let mut v = json!({
                    "verbs": r.verbs,
                    "apiGroups": r.api_groups.clone().unwrap_or_default(),
                    "resources": r.resources.clone().unwrap_or_default(),
                });
                if let Some(names) = r.resource_names.as_ref().filter(|n| !n.is_empty()) {
                    v["resourceNames"] = json!(names);
                }
                resource_rules.push(v);
            }
        }
    }
    // The Node authorizer cannot list a node's rules, as upstream says with `incomplete`.
    let node = authorizer.has_mode(authz::Mode::Node)
        && user.name.starts_with("system:node:")
        && user.groups.iter().any(|g| g == authz::node::NODES_GROUP);
    let mut status = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": node || !errors.is_empty(),
    });
    if !errors.is_empty() {
        status["evaluationError"] = json!(errors.join(", "));
    }
    status
}

/// Answers a review: the request's object with its `status` filled in.
pub fn answer(
    api: &Apiserver,
    info: &ResourceInfo,
    namespace: Option<&str>,
    mut review: Value,
    user: &UserInfo,
) -> ApiResult<Value> {
    let authn: &Authenticator = &api.authn;
    let authorizer: &authz::Chain = &api.authz;
    let spec = review.get("spec").cloned().unwrap_or_else(|| json!({}));
    match info.kind {
        "SelfSubjectAccessReview" | "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let resource = spec.get("resourceAttributes").filter(|v| !v.is_null());
            let non_resource = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
            if resource.is_some() == non_resource.is_some() {
                return Err(invalid(
                    info,
                    "spec.resourceAttributes",
                    "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
                ));
            }
            if info.kind == "SubjectAccessReview" {
                let has_subject = ["user", "groups", "uid"].iter().any(|f| {
                    spec.get(*f)
                        .is_some_and(|v| !v.is_null() && v != "" && v != &json!([]))
                });
                if !has_subject {
                    return Err(invalid(
                        info,
                        "spec.user",
                        "Invalid value: \"\": at least one of user or group must be specified",
                    ));
                }
            }
            if info.kind == "LocalSubjectAccessReview" {
                let asked = resource
                    .and_then(|r| r.get("namespace"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if namespace != Some(asked) {
                    return Err(invalid(
                        info,
                        "spec.resourceAttributes.namespace",
                        "Invalid value: must match metadata.namespace",
                    ));
                }
            }
            let attrs = access_review_attributes(info.kind, &spec, user);
            let (decision, reason) = authorizer.authorize(&attrs);
            let mut status = json!({ "allowed": decision == Decision::Allow });
            if decision == Decision::Deny {
                status["denied"] = json!(true);
            }
            if !reason.is_empty() {
                status["reason"] = json!(reason);
            }
            review["status"] = status;
        }
        "SelfSubjectRulesReview" => {
            let namespace = spec.get("namespace").and_then(Value::as_str).unwrap_or("");
            review["status"] = rules_review(authorizer, user, namespace);
        }
        "SelfSubjectReview" => {
            review["status"] = json!({ "userInfo": user_json(user) });
        }
        "TokenReview" => {
            let token = spec.get("token").and_then(Value::as_str).unwrap_or("");
            let found = match authn.authenticate(Some(&format!("Bearer {token}"))) {
                Authenticated::User(u) if !token.is_empty() => Some(u),
                _ if !token.is_empty() => {
                    crate::serviceaccount_authenticator::authenticate_token(api, token)
                }
                _ => None,
            };
            review["status"] = match found {
                Some(u) => json!({ "authenticated": true, "user": user_json(&u) }),
                None => json!({ "authenticated": false, "error": "invalid bearer token" }),
            };
        }
        other => return Err(ApiError::internal(format!("{other} is not a review"))),
    }
    review["apiVersion"] = json!(info.api_version());
    review["kind"] = json!(info.kind);
    if review.get("metadata").is_none_or(Value::is_null) {
        review["metadata"] = json!({});
    }
    Ok(review)
}
