//! User impersonation (upstream `k8s.io/apiserver/pkg/endpoints/filters/impersonation.go`):
//! `Impersonate-User`, `Impersonate-Group` and `Impersonate-Uid` headers make a request act
//! as another user, when the requester may `impersonate` that user (`users`, or
//! `serviceaccounts` in the account's namespace), each group (`groups`) and the uid
//! (`uids.authentication.k8s.io`). This is how `kubectl --as` and `kubectl auth can-i --as`
//! work.

use crate::authn::UserInfo;
use crate::authz::{self, Attributes, Decision};
use crate::status::{ApiError, ApiResult};
use http::HeaderMap;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";

const ANONYMOUS: &str = "system:anonymous";
const AUTHENTICATED: &str = "system:authenticated";
const UNAUTHENTICATED: &str = "system:unauthenticated";

fn values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// The user a request acts as: the authenticated user, or the one it may impersonate.
pub fn impersonate(
    authorizer: &authz::Chain,
    headers: &HeaderMap,
    requester: UserInfo,
) -> ApiResult<UserInfo> {
    let user = values(headers, USER).first().map(|s| s.to_string());
    let groups: Vec<String> = values(headers, GROUP)
        .into_iter()
        .map(String::from)
        .collect();
    let uid = values(headers, UID).first().map(|s| s.to_string());
    let has_extra = headers.keys().any(|k| k.as_str().starts_with(EXTRA_PREFIX));
    let Some(user) = user else {
        if !groups.is_empty() || uid.is_some() || has_extra {
            return Err(ApiError::bad_request(
                "requested impersonation of groups, uid or extra without impersonating a user",
            ));
        }
        return Ok(requester);
    };
    if has_extra {
        return Err(ApiError::bad_request(
            "impersonation of user extra fields is not supported",
        ));
    }

    let check = |resource: &str, group: &str, namespace: &str, name: &str| -> ApiResult<()> {
        let mut a = Attributes::for_user(&requester);
        a.verb = "impersonate".into();
        a.resource_request = true;
        a.resource = resource.into();
        a.api_group = group.into();
        a.namespace = namespace.into();
        a.name = name.into();
        match authorizer.authorize(&a) {
            (Decision::Allow, _) => Ok(()),
            (_, reason) => Err(authz::forbidden(&a, &reason)),
        }
    };
    let service_account = user
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'));
    match service_account {
        Some((ns, name)) => check("serviceaccounts", "", ns, name)?,
        None => check("users", "", "", &user)?,
    }
    for g in &groups {
        check("groups", "", "", g)?;
    }
    if let Some(uid) = &uid {
        check("uids", "authentication.k8s.io", "", uid)?;
    }

    let mut acting_groups = groups.clone();
    if let (Some((ns, _)), true) = (service_account, groups.is_empty()) {
        acting_groups = vec![
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{ns}"),
        ];
    }
    let marker = if user == ANONYMOUS {
        UNAUTHENTICATED
    } else {
        AUTHENTICATED
    };
    if !acting_groups.iter().any(|g| g == marker) {
        acting_groups.push(marker.to_string());
    }
    let mut acting = requester.clone();
    acting.name = user;
    acting.uid = uid.unwrap_or_default();
    acting.groups = acting_groups;
    tracing::debug!(requester = %requester.name, acting = %acting.name, "impersonating");
    Ok(acting)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::{rbac::Sources, Chain, Mode};

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn impersonation_needs_the_impersonate_verb() {
        let chain = Chain::new(&[Mode::Rbac], &Sources::empty());
        let mut h = HeaderMap::new();
        assert_eq!(
            impersonate(&chain, &h, user("bob", &[])).unwrap().name,
            "bob"
        );
        h.insert(USER, "system:serviceaccount:ns1:app".parse().unwrap());
        let acting = impersonate(&chain, &h, user("root", &["system:masters"])).unwrap();
        assert_eq!(acting.name, "system:serviceaccount:ns1:app");
        assert_eq!(
            acting.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ns1",
                "system:authenticated"
            ]
        );
        let e = impersonate(&chain, &h, user("bob", &[])).unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "serviceaccounts \"app\" is forbidden: User \"bob\" cannot impersonate resource \"serviceaccounts\" in API group \"\" in the namespace \"ns1\""
        );
        let mut h = HeaderMap::new();
        h.insert(GROUP, "g".parse().unwrap());
        assert_eq!(
            impersonate(&chain, &h, user("root", &["system:masters"]))
                .unwrap_err()
                .code,
            400
        );
    }
}
