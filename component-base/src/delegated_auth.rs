//! Delegated authentication and authorization for the daemons' HTTPS endpoints, as
//! upstream's `DelegatingAuthenticationOptions`/`DelegatingAuthorizationOptions`: the
//! daemon asks the apiserver who a caller is (a TokenReview for a bearer token; a client
//! certificate signed by `--client-ca-file` names itself) and whether it may make the
//! request (a SubjectAccessReview). Answers are cached for the configured TTLs, keyed by
//! a SHA-256 of the token and by the full request attributes.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use parking_lot::Mutex;
use std::time::Instant;

use crate::options::{ClientError, DelegatedAuthOptions, KubeconfigOptions};

/// The identity of an anonymous request.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// The group of every anonymous request.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
/// The group every authenticated identity gets, as upstream's authenticated-group adder.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// Who made a request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// `system:anonymous` in `system:unauthenticated`.
    pub fn anonymous() -> UserInfo {
        UserInfo {
            name: ANONYMOUS_USER.into(),
            groups: vec![UNAUTHENTICATED_GROUP.into()],
            ..Default::default()
        }
    }

    /// The identity of a verified x509 client certificate (DER): CommonName is the user,
    /// Organizations are the groups. None when it has no CommonName.
    pub fn from_certificate(der: &[u8]) -> Option<UserInfo> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let name = subject
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_string();
        if name.is_empty() {
            return None;
        }
        let groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(String::from))
            .collect();
        Some(
            UserInfo {
                name,
                groups,
                ..Default::default()
            }
            .with_authenticated_group(),
        )
    }

    fn with_authenticated_group(mut self) -> UserInfo {
        if !self.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            self.groups.push(AUTHENTICATED_GROUP.into());
        }
        self
    }
}

/// What a request does, in SubjectAccessReview terms.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Attributes {
    /// A path that is not an API resource (`/metrics`).
    NonResource { path: String, verb: String },
    /// An API resource (the kubelet's `nodes/<name>/<subresource>`).
    Resource {
        verb: String,
        group: String,
        resource: String,
        subresource: String,
        name: String,
        namespace: String,
    },
}

impl Attributes {
    pub fn verb(&self) -> &str {
        match self {
            Attributes::NonResource { verb, .. } | Attributes::Resource { verb, .. } => verb,
        }
    }
}

/// Upstream's verb for a request to a non-resource path (and the kubelet's): GET and
/// HEAD are `get`, POST `create`, PUT `update`, PATCH `patch`, DELETE `delete`; any other
/// method is itself in lower case.
pub fn verb_for_method(method: &http::Method) -> String {
    match *method {
        http::Method::GET | http::Method::HEAD => "get".into(),
        http::Method::POST => "create".into(),
        http::Method::PUT => "update".into(),
        http::Method::PATCH => "patch".into(),
        http::Method::DELETE => "delete".into(),
        ref other => other.as_str().to_ascii_lowercase(),
    }
}

/// `--authorization-always-allow-paths`: exact paths, or prefixes when an entry ends in
/// `*`; leading slashes do not matter (upstream's path authorizer).
#[derive(Clone, Debug, Default)]
pub struct AlwaysAllowPaths {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl AlwaysAllowPaths {
    pub fn new(paths: &[String]) -> AlwaysAllowPaths {
        let mut allow = AlwaysAllowPaths::default();
        for p in paths.iter().filter(|p| !p.is_empty()) {
            let p = p.strip_prefix('/').unwrap_or(p);
            match p.strip_suffix('*') {
                Some(prefix) => allow.prefixes.push(prefix.to_string()),
                None => allow.exact.push(p.to_string()),
            }
        }
        allow
    }

    pub fn allows(&self, path: &str) -> bool {
        let path = path.strip_prefix('/').unwrap_or(path);
        self.exact.iter().any(|p| p == path) || self.prefixes.iter().any(|p| path.starts_with(p))
    }
}

/// A map whose entries expire, each after its own TTL.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K, V> Default for TtlCache<K, V> {
    fn default() -> Self {
        TtlCache {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

/// Bounds the cache: past this many entries, expired ones are dropped, then all.
const CACHE_LIMIT: usize = 4096;

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn get(&self, key: &K) -> Option<V> {
        self.get_at(key, Instant::now())
    }

    /// Keeps `value` for `ttl`; a zero TTL keeps nothing.
    pub fn insert(&self, key: K, value: V, ttl: Duration) {
        self.insert_at(key, value, ttl, Instant::now())
    }

    fn get_at(&self, key: &K, now: Instant) -> Option<V> {
        let entries = self.entries.lock();
        match entries.get(key) {
            Some((expires, v)) if *expires > now => Some(v.clone()),
            _ => None,
        }
    }

    fn insert_at(&self, key: K, value: V, ttl: Duration, now: Instant) {
        if ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock();
        if entries.len() >= CACHE_LIMIT {
            entries.retain(|_, (expires, _)| *expires > now);
            if entries.len() >= CACHE_LIMIT {
                entries.clear();
            }
        }
        entries.insert(key, (now + ttl, value));
    }
}

/// Why a request is not authenticated (401).
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    #[error("invalid bearer token{}", .0.as_deref().map(|e| format!(": {e}")).unwrap_or_default())]
    InvalidToken(Option<String>),
    #[error("creating a TokenReview: {0}")]
    Review(#[source] kube::Error),
}

/// The outcome of authorization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// With the authorizer's reason, if any.
    Deny(String),
    /// The apiserver could not be asked (upstream answers 500); not cached.
    Error(String),
}

/// Why the delegated authenticator or authorizer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--authentication-kubeconfig: {0}")]
    AuthenticationClient(#[source] ClientError),
    #[error("--authorization-kubeconfig: {0}")]
    AuthorizationClient(#[source] ClientError),
}

/// The authenticator and authorizer of one endpoint.
pub struct DelegatedAuth {
    authentication: kube::Client,
    authorization: kube::Client,
    /// `--client-ca-file`, read by the TLS server.
    pub client_ca_file: Option<PathBuf>,
    always_allow: AlwaysAllowPaths,
    token_ttl: Duration,
    authorized_ttl: Duration,
    unauthorized_ttl: Duration,
    tokens: TtlCache<[u8; 32], Option<UserInfo>>,
    decisions: TtlCache<(UserInfo, Attributes), Decision>,
}

impl std::fmt::Debug for DelegatedAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegatedAuth")
            .field("client_ca_file", &self.client_ca_file)
            .field("always_allow", &self.always_allow)
            .finish_non_exhaustive()
    }
}

impl DelegatedAuth {
    /// From the flags; `client` (the daemon's own) is used where
    /// `--authentication-kubeconfig` or `--authorization-kubeconfig` is unset.
    pub async fn from_options(
        options: &DelegatedAuthOptions,
        client: &kube::Client,
        component: &str,
    ) -> Result<DelegatedAuth, Error> {
        let client_for = |path: &Option<PathBuf>| {
            let path = path.clone();
            async move {
                match path {
                    None => Ok(client.clone()),
                    Some(path) => {
                        KubeconfigOptions {
                            kubeconfig: Some(path),
                            ..Default::default()
                        }
                        .client(component)
                        .await
                    }
                }
            }
        };
        let authentication = client_for(&options.authentication_kubeconfig)
            .await
            .map_err(Error::AuthenticationClient)?;
        let authorization = client_for(&options.authorization_kubeconfig)
            .await
            .map_err(Error::AuthorizationClient)?;
        Ok(DelegatedAuth::new(authentication, authorization, options))
    }

    /// With the given clients for TokenReviews and SubjectAccessReviews.
    pub fn new(
        authentication: kube::Client,
        authorization: kube::Client,
        options: &DelegatedAuthOptions,
    ) -> DelegatedAuth {
        DelegatedAuth {
            authentication,
            authorization,
            client_ca_file: options.client_ca_file.clone(),
            always_allow: AlwaysAllowPaths::new(&options.authorization_always_allow_paths),
            token_ttl: options.authentication_token_webhook_cache_ttl,
            authorized_ttl: options.authorization_webhook_cache_authorized_ttl,
            unauthorized_ttl: options.authorization_webhook_cache_unauthorized_ttl,
            tokens: TtlCache::default(),
            decisions: TtlCache::default(),
        }
    }

    /// `--authorization-always-allow-paths` covers `path`.
    pub fn always_allowed(&self, path: &str) -> bool {
        self.always_allow.allows(path)
    }

    /// Who made the request: the bearer token's user (a TokenReview), else the verified
    /// client certificate's, else `system:anonymous` when `anonymous` is allowed.
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        certificate_user: Option<&UserInfo>,
        anonymous: bool,
    ) -> Result<UserInfo, AuthnError> {
        if let Some(token) = bearer_token(headers) {
            return self.review_token(token).await;
        }
        if let Some(user) = certificate_user {
            return Ok(user.clone());
        }
        if anonymous {
            Ok(UserInfo::anonymous())
        } else {
            Err(AuthnError::InvalidToken(None))
        }
    }

    async fn review_token(&self, token: &str) -> Result<UserInfo, AuthnError> {
        let key: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .expect("a SHA-256 digest is 32 bytes");
        if let Some(cached) = self.tokens.get(&key) {
            return cached.ok_or(AuthnError::InvalidToken(None));
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.authentication.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(AuthnError::Review)?;
        let status = reviewed.status.unwrap_or_default();
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(u)) => Some(
                UserInfo {
                    name: u.username.unwrap_or_default(),
                    uid: u.uid.unwrap_or_default(),
                    groups: u.groups.unwrap_or_default(),
                    extra: u.extra.unwrap_or_default(),
                }
                .with_authenticated_group(),
            ),
            _ => None,
        };
        // Rejections are cached too (upstream's failure TTL is the same flag here).
        self.tokens.insert(key, user.clone(), self.token_ttl);
        user.ok_or(AuthnError::InvalidToken(status.error))
    }

    /// May `user` do `attributes`? A SubjectAccessReview, cached; an error talking to the
    /// apiserver is [`Decision::Error`] (and is not cached).
    pub async fn authorize(&self, user: &UserInfo, attributes: &Attributes) -> Decision {
        let key = (user.clone(), attributes.clone());
        if let Some(decision) = self.decisions.get(&key) {
            return decision;
        }
        let spec = SubjectAccessReviewSpec {
            user: Some(user.name.clone()),
            uid: Some(user.uid.clone()).filter(|u| !u.is_empty()),
            groups: Some(user.groups.clone()),
            extra: Some(user.extra.clone()).filter(|e| !e.is_empty()),
            non_resource_attributes: match attributes {
                Attributes::NonResource { path, verb } => Some(NonResourceAttributes {
                    path: Some(path.clone()),
                    verb: Some(verb.clone()),
                }),
                Attributes::Resource { .. } => None,
            },
            resource_attributes: match attributes {
                Attributes::NonResource { .. } => None,
                Attributes::Resource {
                    verb,
                    group,
                    resource,
                    subresource,
                    name,
                    namespace,
                } => Some(ResourceAttributes {
                    verb: Some(verb.clone()),
                    group: Some(group.clone()),
                    version: Some("v1".into()),
                    resource: Some(resource.clone()),
                    subresource: Some(subresource.clone()),
                    name: Some(name.clone()),
                    namespace: Some(namespace.clone()),
                    ..Default::default()
                }),
            },
        };
        let review = SubjectAccessReview {
            spec,
            ..Default::default()
        };
        let reviewed = match Api::<SubjectAccessReview>::all(self.authorization.clone())
            .create(&PostParams::default(), &review)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "SubjectAccessReview failed");
                return Decision::Error(format!("creating a SubjectAccessReview: {e}"));
            }
        };
        let status = reviewed.status.unwrap_or_default();
        let decision = if status.allowed {
            Decision::Allow
        } else {
            Decision::Deny(status.reason.unwrap_or_default())
        };
        let ttl = match decision {
            Decision::Allow => self.authorized_ttl,
            Decision::Deny(_) | Decision::Error(_) => self.unauthorized_ttl,
        };
        self.decisions.insert(key, decision.clone(), ttl);
        decision
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Upstream's message for a denied request: `forbidden: User "system:anonymous" cannot
/// get path "/metrics"`, with the authorizer's reason after a colon when it gave one.
pub fn forbidden_message(user: &UserInfo, attributes: &Attributes, reason: &str) -> String {
    let what = match attributes {
        Attributes::NonResource { path, verb } => format!("{verb} path {path:?}"),
        Attributes::Resource {
            verb,
            group,
            resource,
            subresource,
            namespace,
            ..
        } => {
            let mut r = resource.clone();
            if !subresource.is_empty() {
                r = format!("{r}/{subresource}");
            }
            let scope = if namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace {namespace:?}")
            };
            format!("{verb} resource {r:?} in API group {group:?} {scope}")
        }
    };
    let mut message = format!("forbidden: User {:?} cannot {what}", user.name);
    if !reason.is_empty() {
        message.push_str(": ");
        message.push_str(reason);
    }
    message
}

/// A metav1.Status body (JSON) for a 401 or 403, as upstream's apiserver filters write.
pub fn status_body(code: u16, reason: &str, message: &str) -> String {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_allow_paths_match_exactly_or_by_prefix() {
        let allow = AlwaysAllowPaths::new(
            &["/healthz", "/readyz", "livez", "/debug/*", ""].map(String::from),
        );
        assert!(allow.allows("/healthz"));
        assert!(allow.allows("/livez"));
        assert!(allow.allows("/debug/pprof/heap"));
        assert!(!allow.allows("/healthz/ping"));
        assert!(!allow.allows("/metrics"));
        assert!(!allow.allows("/"));
        let root = AlwaysAllowPaths::new(&["/".to_string()]);
        assert!(root.allows("/"));
        assert!(!root.allows("/metrics"));
        let all = AlwaysAllowPaths::new(&["/*".to_string()]);
        assert!(all.allows("/metrics"));
    }

    #[test]
    fn verbs_follow_the_method() {
        use http::Method;
        assert_eq!(verb_for_method(&Method::GET), "get");
        assert_eq!(verb_for_method(&Method::HEAD), "get");
        assert_eq!(verb_for_method(&Method::POST), "create");
        assert_eq!(verb_for_method(&Method::PUT), "update");
        assert_eq!(verb_for_method(&Method::PATCH), "patch");
        assert_eq!(verb_for_method(&Method::DELETE), "delete");
        assert_eq!(verb_for_method(&Method::OPTIONS), "options");
    }

    #[test]
    fn bearer_tokens() {
        let mut h = http::HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert(http::header::AUTHORIZATION, "bearer  xyz ".parse().unwrap());
        assert_eq!(bearer_token(&h), Some("xyz"));
        h.insert(http::header::AUTHORIZATION, "Basic dTpw".parse().unwrap());
        assert_eq!(bearer_token(&h), None);
    }

    #[test]
    fn forbidden_messages_are_upstreams() {
        let path = Attributes::NonResource {
            path: "/metrics".into(),
            verb: "get".into(),
        };
        assert_eq!(
            forbidden_message(&UserInfo::anonymous(), &path, ""),
            r#"forbidden: User "system:anonymous" cannot get path "/metrics""#
        );
        let node = Attributes::Resource {
            verb: "get".into(),
            group: "".into(),
            resource: "nodes".into(),
            subresource: "proxy".into(),
            name: "pi1".into(),
            namespace: "".into(),
        };
        let user = UserInfo {
            name: "bob".into(),
            ..Default::default()
        };
        assert_eq!(
            forbidden_message(&user, &node, "no RBAC policy matched"),
            r#"forbidden: User "bob" cannot get resource "nodes/proxy" in API group "" at the cluster scope: no RBAC policy matched"#
        );
        let body: serde_json::Value =
            serde_json::from_str(&status_body(403, "Forbidden", "nope")).unwrap();
        assert_eq!(body["code"], 403);
        assert_eq!(body["reason"], "Forbidden");
        assert_eq!(body["kind"], "Status");
    }

    #[test]
    fn cache_entries_expire_after_their_ttl() {
        let cache: TtlCache<&str, u32> = TtlCache::default();
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        cache.insert_at("a", 1, Duration::from_secs(10), t0);
        cache.insert_at("b", 2, Duration::from_secs(1), t0);
        cache.insert_at("zero", 3, Duration::ZERO, t0);
        assert_eq!(cache.get_at(&"a", t0), Some(1));
        assert_eq!(cache.get_at(&"b", t0), Some(2));
        assert_eq!(cache.get_at(&"zero", t0), None);
        assert_eq!(cache.get_at(&"a", at(2)), Some(1));
        assert_eq!(cache.get_at(&"b", at(2)), None);
        assert_eq!(cache.get_at(&"a", at(11)), None);
        // A fresh answer replaces an expired one.
        cache.insert_at("b", 4, Duration::from_secs(1), at(2));
        assert_eq!(cache.get_at(&"b", at(2)), Some(4));
    }

    #[test]
    fn certificate_identity_is_cn_and_organizations() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "jane");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "ops");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let user = UserInfo::from_certificate(cert.der()).unwrap();
        assert_eq!(user.name, "jane");
        assert_eq!(user.groups, ["ops", AUTHENTICATED_GROUP]);
    }
}
