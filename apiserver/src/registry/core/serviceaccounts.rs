//! `serviceaccounts/token` (upstream `pkg/registry/core/serviceaccount/storage/token.go`):
//! a POST of an `authentication.k8s.io/v1` TokenRequest mints a signed, bound token for
//! the ServiceAccount. The request's audiences default to `--api-audiences`, its
//! expirationSeconds to one hour (at least ten minutes, cut to
//! `--service-account-max-token-expiration`); a `boundObjectRef` to a Pod, Secret or
//! Node must name an existing object (with the same uid when one is given), and a Pod
//! must run as this ServiceAccount. The answer is the TokenRequest with `status.token`
//! and `status.expirationTimestamp`; nothing is stored.

use api_types::resources::{self, ResourceInfo};
use api_types::validation::{field, invalid_status_message, FieldError, Path};
use serde_json::{json, Value};

use crate::object;
use crate::request::{Query, ResourceRequest};
use crate::rest::{self, Written};
use crate::serviceaccount::{self, Claims, KubernetesClaims, ObjectRef};
use crate::status::{ApiError, ApiResult};
use crate::Apiserver;

/// Upstream's bounds of `spec.expirationSeconds`.
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
const MIN_EXPIRATION_SECONDS: i64 = 600;
const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;

/// POST `.../serviceaccounts/{name}/token`.
pub async fn create_token(
    api: &Apiserver,
    req: &ResourceRequest,
    mut request: Value,
) -> ApiResult<Written> {
    let name = req.name.clone().unwrap_or_default();
    let namespace = req.namespace.clone().unwrap_or_default();
    let kind = request
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("TokenRequest");
    if kind != "TokenRequest" {
        return Err(ApiError::bad_request(format!(
            "expected a TokenRequest, got {kind}"
        )));
    }
    let Some(tokens) = api.tokens.as_ref() else {
        // Upstream does not register the subresource without a signing key.
        return Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource: serviceaccounts/token needs the apiserver to run with --service-account-signing-key-file and --service-account-issuer",
        ));
    };
    let spec = request.get("spec").cloned().unwrap_or_else(|| json!({}));
    let mut errors = Vec::new();
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(v) => v.as_i64().unwrap_or(-1),
    };
    let path = Path::new("spec").child("expirationSeconds");
    if expiration < MIN_EXPIRATION_SECONDS {
        errors.push(field::invalid(
            &path,
            expiration,
            "may not specify a duration less than 10 minutes",
        ));
    } else if expiration > MAX_EXPIRATION_SECONDS {
        errors.push(field::invalid(
            &path,
            expiration,
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let audiences: Vec<String> = match spec.get("audiences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        Some(other) => {
            errors.push(field::invalid(
                &Path::new("spec").child("audiences"),
                other.clone(),
                "must be a list of strings",
            ));
            Vec::new()
        }
    };
    let bound = spec.get("boundObjectRef").filter(|v| !v.is_null());
    if let Some(r) = bound {
        let path = Path::new("spec").child("boundObjectRef");
        if r.get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            errors.push(field::required(&path.child("name"), ""));
        }
    }
    if !errors.is_empty() {
        return Err(invalid(&name, &errors));
    }

    // The ServiceAccount must exist (404 as a ServiceAccount otherwise).
    let sa = rest::get(
        api,
        &ResourceRequest {
            subresource: None,
            ..req.clone()
        },
        &Query::default(),
    )
    .await?;
    let sa_uid = object::meta_str(&sa, "uid").unwrap_or_default().to_string();

    let mut claims = KubernetesClaims {
        namespace: namespace.clone(),
        node: None,
        pod: None,
        secret: None,
        serviceaccount: ObjectRef {
            name: name.clone(),
            uid: sa_uid,
        },
    };
    if let Some(r) = bound {
        bind(api, &namespace, &name, r, &mut claims).await?;
    }

    let expiration = match tokens.max_expiration {
        Some(max) => expiration.min(i64::try_from(max.as_secs()).unwrap_or(i64::MAX)),
        None => expiration,
    };
    let audiences = if audiences.is_empty() {
        tokens.api_audiences.clone()
    } else {
        audiences
    };
    let now = jiff::Timestamp::now().as_second();
    let exp = now + expiration;
    let token = tokens
        .sign(&Claims {
            aud: audiences.clone(),
            exp,
            iat: now,
            iss: tokens.issuer.clone(),
            jti: uuid::Uuid::new_v4().to_string(),
            kubernetes: claims,
            nbf: now,
            sub: serviceaccount::username(&namespace, &name),
        })
        .map_err(|e| ApiError::internal(e.to_string()))?;

    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["kind"] = json!("TokenRequest");
    let meta = object::meta_mut(&mut request);
    meta.insert("name".into(), json!(name));
    meta.insert("namespace".into(), json!(namespace));
    meta.insert("creationTimestamp".into(), json!(object::now_rfc3339()));
    let mut spec = spec;
    spec["audiences"] = json!(audiences);
    spec["expirationSeconds"] = json!(expiration);
    if spec.get("boundObjectRef").is_some_and(Value::is_null) {
        if let Some(o) = spec.as_object_mut() {
            o.remove("boundObjectRef");
        }
    }
    request["spec"] = spec;
    request["status"] = json!({
        "token": token,
        "expirationTimestamp": rfc3339_at(exp),
    });
    Ok(Written {
        code: 201,
        body: request,
        warnings: vec![],
    })
}

/// Checks the bound object and names it in the claims, as upstream's token REST does.
async fn bind(
    api: &Apiserver,
    namespace: &str,
    sa_name: &str,
    r: &Value,
    claims: &mut KubernetesClaims,
) -> ApiResult<()> {
    let kind = r.get("kind").and_then(Value::as_str).unwrap_or_default();
    let api_version = r
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
    let wanted_uid = r
        .get("uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty());
    let (plural, namespaced) = match (api_version, kind) {
        ("v1", "Pod") => ("pods", true),
        ("v1", "Secret") => ("secrets", true),
        ("v1", "Node") => ("nodes", false),
        _ => {
            let gvk = if api_version.is_empty() {
                format!(", Kind={kind}")
            } else {
                format!("{api_version}, Kind={kind}")
            };
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {gvk}"
            )));
        }
    };
    let info = core_info(plural)?;
    let obj = get_object(api, info, namespaced.then_some(namespace), name).await?;
    let uid = object::meta_str(&obj, "uid")
        .unwrap_or_default()
        .to_string();
    if let Some(wanted) = wanted_uid {
        if wanted != uid {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {kind} \"{name}\": the UID in the bound object reference ({wanted}) does not match the UID in record. The object might have been deleted and then recreated"
                ),
            )
            .with_details(json!({ "name": name, "kind": kind })));
        }
    }
    let reference = ObjectRef {
        name: name.to_string(),
        uid,
    };
    match kind {
        "Pod" => {
            let pod_sa = obj
                .pointer("/spec/serviceAccountName")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or("default");
            if pod_sa != sa_name {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {sa_name:?} to pod running with different serviceaccount name."
                )));
            }
            // The pod's node, when it has one (upstream's ServiceAccountTokenPodNodeInfo).
            if let Some(node) = obj
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                if let Ok(n) = get_object(api, core_info("nodes")?, None, node).await {
                    claims.node = Some(ObjectRef {
                        name: node.to_string(),
                        uid: object::meta_str(&n, "uid").unwrap_or_default().to_string(),
                    });
                }
            }
            claims.pod = Some(reference);
        }
        "Secret" => claims.secret = Some(reference),
        _ => claims.node = Some(reference),
    }
    Ok(())
}

fn core_info(plural: &str) -> ApiResult<&'static ResourceInfo> {
    resources::find("", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} not registered")))
}

async fn get_object(
    api: &Apiserver,
    info: &'static ResourceInfo,
    namespace: Option<&str>,
    name: &str,
) -> ApiResult<Value> {
    rest::get(
        api,
        &ResourceRequest {
            info,
            namespace: namespace.map(String::from),
            name: Some(name.to_string()),
            subresource: None,
        },
        &Query::default(),
    )
    .await
}

/// 422 naming the TokenRequest, as upstream's validation answers.
fn invalid(name: &str, errors: &[FieldError]) -> ApiError {
    let causes: Vec<Value> = errors
        .iter()
        .map(|e| json!({ "reason": e.error_type.reason(), "message": e.message, "field": e.field }))
        .collect();
    ApiError::new(
        422,
        "Invalid",
        invalid_status_message("authentication.k8s.io", "TokenRequest", name, errors),
    )
    .with_details(json!({
        "name": name,
        "group": "authentication.k8s.io",
        "kind": "TokenRequest",
        "causes": causes,
    }))
}

fn rfc3339_at(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}
