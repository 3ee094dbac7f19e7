//! Authorization, as upstream's `--authorization-mode`: the request's attributes (user,
//! verb, API group, resource, subresource, namespace, name; or path for non-resource
//! requests) go through the configured authorizers in order. The first to allow or deny
//! decides; when none has an opinion the request is forbidden (403 with upstream's
//! message). Members of `system:masters` are always allowed (upstream's privileged-group
//! authorizer, placed first whenever the modes are not just AlwaysAllow).

pub(crate) mod aggregation;
pub mod bootstrap_policy;
pub(crate) mod escalation;
pub mod node;
pub mod rbac;

use crate::authn::UserInfo;
use crate::request::{self, ApiPath};
use crate::status::ApiError;
use http::Method;
use serde_json::json;

/// Upstream's `user.SystemPrivilegedGroup`.
pub const PRIVILEGED_GROUP: &str = "system:masters";

/// One `--authorization-mode` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    AlwaysAllow,
    AlwaysDeny,
    Rbac,
    Node,
}

#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    #[error("authorization mode {0:?} is not supported: supported modes are AlwaysAllow, AlwaysDeny, Node, RBAC")]
    Unsupported(String),
    #[error("authorization mode {0:?} is given more than once")]
    Duplicate(String),
    #[error("at least one authorization mode must be given")]
    Empty,
}

impl Mode {
    /// Parses the comma-separated flag value (`Node,RBAC`).
    pub fn parse_list(s: &str) -> Result<Vec<Mode>, ModeError> {
        let mut modes = Vec::new();
        for name in s.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let mode = match name {
                "AlwaysAllow" => Mode::AlwaysAllow,
                "AlwaysDeny" => Mode::AlwaysDeny,
                "RBAC" => Mode::Rbac,
                "Node" => Mode::Node,
                other => return Err(ModeError::Unsupported(other.to_string())),
            };
            if modes.contains(&mode) {
                return Err(ModeError::Duplicate(name.to_string()));
            }
            modes.push(mode);
        }
        if modes.is_empty() {
            return Err(ModeError::Empty);
        }
        Ok(modes)
    }
}

/// What an authorizer is asked, as upstream's `authorizer.Attributes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub user: String,
    pub groups: Vec<String>,
    pub verb: String,
    pub resource_request: bool,
    pub namespace: String,
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// The URL path of a non-resource request.
    pub path: String,
}

impl Attributes {
    pub fn for_user(user: &UserInfo) -> Attributes {
        Attributes {
            user: user.name.clone(),
            groups: user.groups.clone(),
            ..Default::default()
        }
    }

    /// The attributes of an HTTP request, as upstream's `RequestInfoFactory` derives them.
    pub fn of_request(user: &UserInfo, method: &Method, path: &str, query: Option<&str>) -> Self {
        let mut a = Attributes::for_user(user);
        a.path = path.to_string();
        let parsed = match request::parse_path(path) {
            Ok(Some(ApiPath::Resource(r))) => r,
            _ => {
                a.verb = method.as_str().to_lowercase();
                return a;
            }
        };
        a.resource_request = true;
        a.api_group = parsed.info.group.to_string();
        a.api_version = parsed.info.version.to_string();
        a.resource = parsed.info.plural.to_string();
        a.subresource = parsed.subresource.clone().unwrap_or_default();
        a.name = parsed.name.clone().unwrap_or_default();
        a.namespace = parsed.namespace.clone().unwrap_or_default();
        // `/api/v1/namespaces/{name}`: the namespace of a namespace is itself.
        if a.resource == "namespaces" && a.namespace.is_empty() {
            a.namespace = a.name.clone();
        }
        a.verb = match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
        .to_string();
        if a.verb.is_empty() {
            a.verb = method.as_str().to_lowercase();
        }
        if a.name.is_empty() && a.verb == "get" {
            let mut watch = false;
            for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
                match k.as_ref() {
                    "watch" => watch = v == "true" || v == "1",
                    // A list of one object by name is authorized as that object.
                    "fieldSelector" => {
                        if let Ok(sel) = api_types::selector::FieldSelector::parse(&v) {
                            if let Some(name) = sel.requires_exact_match("metadata.name") {
                                if api_types::validation::names::is_valid_path_segment_name(
                                    name, false,
                                )
                                .is_empty()
                                {
                                    a.name = name.to_string();
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            a.verb = if watch { "watch" } else { "list" }.to_string();
        }
        if a.name.is_empty() && a.verb == "delete" {
            a.verb = "deletecollection".to_string();
        }
        a
    }
}

/// An authorizer's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    NoOpinion,
}

/// One authorization mode.
pub trait Authorizer: Send + Sync {
    /// The decision and a reason (empty when there is nothing to say).
    fn authorize(&self, a: &Attributes) -> (Decision, String);
}

struct AlwaysAllow;
impl Authorizer for AlwaysAllow {
    fn authorize(&self, _: &Attributes) -> (Decision, String) {
        (Decision::Allow, String::new())
    }
}

struct AlwaysDeny;
impl Authorizer for AlwaysDeny {
    fn authorize(&self, _: &Attributes) -> (Decision, String) {
        (Decision::Deny, "Everything is forbidden.".to_string())
    }
}

/// The configured authorizers, in `--authorization-mode` order.
pub struct Chain {
    modes: Vec<Mode>,
    authorizers: Vec<Box<dyn Authorizer>>,
    rbac: Option<std::sync::Arc<rbac::RbacAuthorizer>>,
}

struct Shared(std::sync::Arc<rbac::RbacAuthorizer>);
impl Authorizer for Shared {
    fn authorize(&self, a: &Attributes) -> (Decision, String) {
        self.0.authorize(a)
    }
}

impl Chain {
    pub fn new(modes: &[Mode], sources: &rbac::Sources) -> Chain {
        let mut authorizers: Vec<Box<dyn Authorizer>> = Vec::new();
        let mut rbac = None;
        for mode in modes {
            match mode {
                Mode::AlwaysAllow => authorizers.push(Box::new(AlwaysAllow)),
                Mode::AlwaysDeny => authorizers.push(Box::new(AlwaysDeny)),
                Mode::Node => authorizers.push(Box::new(node::NodeAuthorizer::new(sources))),
                Mode::Rbac => {
                    let r = std::sync::Arc::new(rbac::RbacAuthorizer::new(sources.clone()));
                    rbac = Some(r.clone());
                    authorizers.push(Box::new(Shared(r)));
                }
            }
        }
        Chain {
            modes: modes.to_vec(),
            authorizers,
            rbac,
        }
    }

    /// AlwaysAllow alone: requests need no attributes at all.
    pub fn allows_everything(&self) -> bool {
        self.modes == [Mode::AlwaysAllow]
    }

    pub fn has_mode(&self, mode: Mode) -> bool {
        self.modes.contains(&mode)
    }

    /// The RBAC authorizer, when RBAC is a mode (for rules reviews).
    pub fn rbac(&self) -> Option<&rbac::RbacAuthorizer> {
        self.rbac.as_deref()
    }

    /// Upstream's union authorizer with the privileged group first.
    pub fn authorize(&self, a: &Attributes) -> (Decision, String) {
        if self.allows_everything() {
            return (Decision::Allow, String::new());
        }
        if a.groups.iter().any(|g| g == PRIVILEGED_GROUP) {
            return (Decision::Allow, String::new());
        }
        let mut reasons = Vec::new();
        for authorizer in &self.authorizers {
            let (decision, reason) = authorizer.authorize(a);
            match decision {
                Decision::Allow | Decision::Deny => return (decision, reason),
                Decision::NoOpinion => {
                    if !reason.is_empty() {
                        reasons.push(reason);
                    }
                }
            }
        }
        (Decision::NoOpinion, reasons.join("\n"))
    }

    /// Allows the request or answers it with upstream's 403.
    pub fn check(&self, a: &Attributes) -> Result<(), ApiError> {
        match self.authorize(a) {
            (Decision::Allow, _) => Ok(()),
            (_, reason) => Err(forbidden(a, &reason)),
        }
    }
}

/// Upstream's `forbiddenMessage`.
pub fn forbidden_message(a: &Attributes) -> String {
    if !a.resource_request {
        return format!("User {:?} cannot {} path {:?}", a.user, a.verb, a.path);
    }
    let mut resource = a.resource.clone();
    if !a.subresource.is_empty() {
        resource = format!("{resource}/{}", a.subresource);
    }
    if a.namespace.is_empty() {
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
            a.user, a.verb, resource, a.api_group
        )
    } else {
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
            a.user, a.verb, resource, a.api_group, a.namespace
        )
    }
}

/// Upstream's `ForbiddenStatusError`: `<resource>[.group] ["name"] is forbidden: <message>`.
pub fn forbidden(a: &Attributes, reason: &str) -> ApiError {
    let mut msg = forbidden_message(a);
    if !reason.is_empty() {
        msg = format!("{msg}: {reason}");
    }
    let qualified = if a.api_group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.api_group)
    };
    let message = if qualified.is_empty() {
        format!("forbidden: {msg}")
    } else if a.name.is_empty() {
        format!("{qualified} is forbidden: {msg}")
    } else {
        format!("{qualified} {:?} is forbidden: {msg}", a.name)
    };
    let mut details = json!({ "name": a.name, "kind": a.resource });
    if !a.api_group.is_empty() {
        details["group"] = json!(a.api_group);
    }
    ApiError::new(403, "Forbidden", message).with_details(details)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn request_attributes_follow_upstream() {
        let u = user("alice", &[]);
        let a = Attributes::of_request(&u, &Method::GET, "/api/v1/namespaces/ns/pods", None);
        assert_eq!(
            (a.verb.as_str(), a.namespace.as_str(), a.resource.as_str()),
            ("list", "ns", "pods")
        );
        let a = Attributes::of_request(
            &u,
            &Method::GET,
            "/api/v1/namespaces/ns/pods",
            Some("watch=true&fieldSelector=metadata.name%3Dp1"),
        );
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("watch", "p1"));
        let a = Attributes::of_request(&u, &Method::DELETE, "/apis/apps/v1/deployments", None);
        assert_eq!(a.verb, "deletecollection");
        assert_eq!(a.api_group, "apps");
        let a = Attributes::of_request(
            &u,
            &Method::POST,
            "/api/v1/namespaces/ns/pods/p/binding",
            None,
        );
        assert_eq!(
            (a.verb.as_str(), a.subresource.as_str(), a.name.as_str()),
            ("create", "binding", "p")
        );
        let a = Attributes::of_request(&u, &Method::GET, "/api/v1/namespaces/kube-system", None);
        assert_eq!(
            (a.verb.as_str(), a.namespace.as_str()),
            ("get", "kube-system")
        );
        let a = Attributes::of_request(&u, &Method::GET, "/metrics", None);
        assert!(!a.resource_request);
        assert_eq!((a.verb.as_str(), a.path.as_str()), ("get", "/metrics"));
    }

    #[test]
    fn forbidden_messages_are_upstreams() {
        let u = user("x", &[]);
        let a = Attributes::of_request(&u, &Method::GET, "/api/v1/namespaces/default/pods", None);
        let e = forbidden(&a, "");
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "pods is forbidden: User \"x\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let a = Attributes::of_request(&u, &Method::GET, "/apis/apps/v1/deployments", None);
        assert_eq!(
            forbidden(&a, "").message,
            "deployments.apps is forbidden: User \"x\" cannot list resource \"deployments\" in API group \"apps\" at the cluster scope"
        );
        let a = Attributes::of_request(&u, &Method::GET, "/metrics", None);
        assert_eq!(
            forbidden(&a, "").message,
            "forbidden: User \"x\" cannot get path \"/metrics\""
        );
    }

    #[test]
    fn modes_parse() {
        assert_eq!(
            Mode::parse_list("Node,RBAC").unwrap(),
            vec![Mode::Node, Mode::Rbac]
        );
        assert!(Mode::parse_list("ABAC").is_err());
        assert!(Mode::parse_list("RBAC,RBAC").is_err());
        assert!(Mode::parse_list("").is_err());
    }

    #[test]
    fn privileged_group_and_always_deny() {
        let chain = Chain::new(&[Mode::AlwaysDeny], &rbac::Sources::empty());
        let mut a = Attributes::for_user(&user("root", &["system:masters"]));
        a.verb = "get".into();
        assert_eq!(chain.authorize(&a).0, Decision::Allow);
        let a = Attributes::for_user(&user("bob", &[]));
        assert_eq!(chain.authorize(&a).0, Decision::Deny);
        assert!(chain.check(&a).is_err());
    }
}
