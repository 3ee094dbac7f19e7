//! Reviews: access checks (authorization.k8s.io) and token/self reviews
//! (authentication.k8s.io). They are answered, never stored. Authorization is AlwaysAllow
//! here, so every access review is allowed; RBAC will decide these later.

use crate::authn::{Authenticated, Authenticator, UserInfo};
use crate::status::{ApiError, ApiResult};
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

/// Answers a review: the request's object with its `status` filled in.
pub fn answer(
    info: &ResourceInfo,
    namespace: Option<&str>,
    mut review: Value,
    user: &UserInfo,
    authn: &Authenticator,
) -> ApiResult<Value> {
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
            review["status"] = json!({ "allowed": true, "reason": "AlwaysAllow authorizer" });
        }
        "SelfSubjectRulesReview" => {
            review["status"] = json!({
                "resourceRules": [{ "verbs": ["*"], "apiGroups": ["*"], "resources": ["*"] }],
                "nonResourceRules": [{ "verbs": ["*"], "nonResourceURLs": ["*"] }],
                "incomplete": false,
            });
        }
        "SelfSubjectReview" => {
            review["status"] = json!({ "userInfo": user_json(user) });
        }
        "TokenReview" => {
            let token = spec.get("token").and_then(Value::as_str).unwrap_or("");
            review["status"] = match authn.authenticate(Some(&format!("Bearer {token}"))) {
                Authenticated::User(u) if !token.is_empty() => {
                    json!({ "authenticated": true, "user": user_json(&u) })
                }
                _ => json!({ "authenticated": false, "error": "invalid bearer token" }),
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
