//! The ServiceAccount token authenticator (upstream `pkg/serviceaccount/jwt.go` with the
//! bound-token validator of `claims.go`): a bearer JWT signed by one of
//! `--service-account-key-file`'s keys, issued by one of `--service-account-issuer`, for
//! one of `--api-audiences`, not expired, whose ServiceAccount (and bound Pod or Secret)
//! still exists with the same UID (upstream's `--service-account-lookup`, read from the
//! watch caches), authenticates as `system:serviceaccount:<namespace>:<name>` in the
//! groups `system:serviceaccounts`, `system:serviceaccounts:<namespace>` and
//! `system:authenticated`.

use crate::authn::UserInfo;
use crate::object;
use crate::serviceaccount::ObjectRef;
use crate::Apiserver;

/// Whether an object of the cache still exists with this UID.
fn exists(api: &Apiserver, plural: &str, namespace: &str, r: &ObjectRef) -> bool {
    let Some(info) = api_types::resources::find("", "v1", plural) else {
        return false;
    };
    api.cache(info)
        .get(&object::key(info, Some(namespace), &r.name))
        .is_some_and(|o| o.uid() == r.uid && !o.deleting())
}

/// The user of a ServiceAccount token in an `Authorization: Bearer` header, if it is one.
pub fn authenticate(api: &Apiserver, authorization: Option<&str>) -> Option<UserInfo> {
    let token = authorization?
        .strip_prefix("Bearer ")
        .or_else(|| authorization?.strip_prefix("bearer "))?
        .trim();
    authenticate_token(api, token)
}

/// The user of a ServiceAccount token, if it is a valid one.
pub fn authenticate_token(api: &Apiserver, token: &str) -> Option<UserInfo> {
    let tokens = api.tokens.as_ref()?;
    let claims = match tokens.verify(token) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "not a valid service account token");
            return None;
        }
    };
    if !claims.aud.iter().any(|a| tokens.api_audiences.contains(a)) {
        tracing::debug!(aud = ?claims.aud, "service account token for another audience");
        return None;
    }
    let k = &claims.kubernetes;
    let ns = k.namespace.as_str();
    if claims.sub != crate::serviceaccount::username(ns, &k.serviceaccount.name) {
        return None;
    }
    if !exists(api, "serviceaccounts", ns, &k.serviceaccount) {
        tracing::debug!(serviceaccount = %k.serviceaccount.name, "token of a deleted service account");
        return None;
    }
    if let Some(pod) = &k.pod {
        if !exists(api, "pods", ns, pod) {
            tracing::debug!(pod = %pod.name, "token bound to a pod that no longer exists");
            return None;
        }
    }
    if let Some(secret) = &k.secret {
        if !exists(api, "secrets", ns, secret) {
            return None;
        }
    }
    Some(UserInfo {
        name: claims.sub.clone(),
        uid: k.serviceaccount.uid.clone(),
        groups: vec![
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".to_string(),
        ],
    })
}
