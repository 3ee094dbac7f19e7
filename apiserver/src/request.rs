//! Request information from the URL: which resource, which object, which verb, and the
//! query parameters of list, watch, write and delete requests.

use crate::status::{ApiError, ApiResult};
use api_types::resources::{self, ResourceInfo};

/// What a resource URL addresses.
#[derive(Debug, Clone)]
pub struct ResourceRequest {
    pub info: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// A parsed API path.
#[derive(Debug, Clone)]
pub enum ApiPath {
    /// `/api`, `/apis`, `/api/v1`, `/apis/{group}`, `/apis/{group}/{version}`.
    Discovery(Discovery),
    Resource(ResourceRequest),
}

#[derive(Debug, Clone)]
pub enum Discovery {
    Api,
    Apis,
    Group(String),
    GroupVersion(String, String),
}

/// Parses `/api/...` and `/apis/...` paths; `Ok(None)` when the path is neither.
pub fn parse_path(path: &str) -> ApiResult<Option<ApiPath>> {
    let trimmed = path.trim_end_matches('/');
    let mut parts = trimmed.trim_start_matches('/').split('/');
    let (group, version) = match parts.next() {
        Some("api") => match parts.next() {
            None => return Ok(Some(ApiPath::Discovery(Discovery::Api))),
            Some(v) => (String::new(), v.to_string()),
        },
        Some("apis") => match parts.next() {
            None => return Ok(Some(ApiPath::Discovery(Discovery::Apis))),
            Some(g) => match parts.next() {
                None => {
                    if resources::versions_of(g).is_empty() {
                        return Err(ApiError::path_not_found(path));
                    }
                    return Ok(Some(ApiPath::Discovery(Discovery::Group(g.to_string()))));
                }
                Some(v) => (g.to_string(), v.to_string()),
            },
        },
        _ => return Ok(None),
    };
    let rest: Vec<&str> = parts.collect();
    if rest.is_empty() {
        if !resources::versions_of(&group).contains(&version.as_str()) {
            return Err(ApiError::path_not_found(path));
        }
        return Ok(Some(ApiPath::Discovery(Discovery::GroupVersion(
            group, version,
        ))));
    }
    let decode = |s: &str| -> String {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    // namespaces/{ns}/{resource}[/{name}[/{sub}]] or {resource}[/{name}[/{sub}]]
    // `/api/v1/namespaces/{name}[/status|/finalize]` addresses the namespace itself.
    let namespace_itself = group.is_empty()
        && rest[0] == "namespaces"
        && (rest.len() <= 2 || (rest.len() == 3 && matches!(rest[2], "status" | "finalize")));
    let (namespace, rest) = if rest[0] == "namespaces" && rest.len() >= 3 && !namespace_itself {
        (Some(decode(rest[1])), &rest[2..])
    } else {
        (None, &rest[..])
    };
    let plural = rest[0];
    let info =
        resources::find(&group, &version, plural).ok_or_else(|| ApiError::path_not_found(path))?;
    // `{name}/proxy/{path...}`: the rest of the URL is the proxied path.
    let proxy_tail = rest.len() > 3 && rest[2] == "proxy" && info.has_subresource("proxy");
    if rest.len() > 3 && !proxy_tail {
        return Err(ApiError::path_not_found(path));
    }
    let name = rest.get(1).map(|s| decode(s));
    let subresource = rest.get(2).map(|s| s.to_string());
    if let Some(sub) = &subresource {
        if !info.has_subresource(sub) {
            return Err(ApiError::path_not_found(path));
        }
    }
    if namespace.is_some() && !info.namespaced {
        return Err(ApiError::path_not_found(path));
    }
    Ok(Some(ApiPath::Resource(ResourceRequest {
        info,
        namespace,
        name,
        subresource,
    })))
}

/// What follows `{name}/proxy` in a proxy subresource's URL, still percent-encoded and
/// with its trailing slash: `""` for none, else a path starting with `/`.
pub fn proxy_path(path: &str, r: &ResourceRequest) -> String {
    let prefix = if r.info.group.is_empty() { 2 } else { 3 };
    let skip = prefix + if r.namespace.is_some() { 2 } else { 0 } + 3;
    let rest: Vec<&str> = path.trim_start_matches('/').split('/').skip(skip).collect();
    if rest.is_empty() {
        String::new()
    } else {
        format!("/{}", rest.join("/"))
    }
}

/// Query parameters the REST handlers use, as upstream names them.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub watch: bool,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: i64,
    pub continue_token: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub allow_watch_bookmarks: bool,
    pub send_initial_events: Option<bool>,
    pub dry_run: bool,
    pub field_validation: Option<String>,
    pub field_manager: Option<String>,
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub orphan_dependents: Option<bool>,
    pub include_object: Option<String>,
    pub pretty: bool,
    pub force: bool,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> ApiResult<Query> {
        let mut q = Query::default();
        let Some(raw) = raw else { return Ok(q) };
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            let v = v.into_owned();
            let as_bool = |v: &str| v == "true" || v == "1";
            match k.as_ref() {
                "watch" => q.watch = as_bool(&v),
                "resourceVersion" => q.resource_version = Some(v).filter(|s| !s.is_empty()),
                "resourceVersionMatch" => {
                    q.resource_version_match = Some(v).filter(|s| !s.is_empty())
                }
                "labelSelector" => q.label_selector = Some(v).filter(|s| !s.is_empty()),
                "fieldSelector" => q.field_selector = Some(v).filter(|s| !s.is_empty()),
                "limit" => {
                    q.limit = v.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid value for limit: {v:?}"))
                    })?
                }
                "continue" => q.continue_token = Some(v).filter(|s| !s.is_empty()),
                "timeoutSeconds" => {
                    q.timeout_seconds = Some(v.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid value for timeoutSeconds: {v:?}"))
                    })?)
                }
                "allowWatchBookmarks" => q.allow_watch_bookmarks = as_bool(&v),
                "sendInitialEvents" => q.send_initial_events = Some(as_bool(&v)),
                "dryRun" => {
                    if v != "All" {
                        return Err(ApiError::bad_request(format!(
                            "Invalid dry run value: {v:?}, supported values: All"
                        )));
                    }
                    q.dry_run = true
                }
                "fieldValidation" => {
                    if !matches!(v.as_str(), "Strict" | "Warn" | "Ignore" | "") {
                        return Err(ApiError::bad_request(format!(
                            "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {v:?}"
                        )));
                    }
                    q.field_validation = Some(v).filter(|s| !s.is_empty())
                }
                "fieldManager" => q.field_manager = Some(v),
                "gracePeriodSeconds" => {
                    q.grace_period_seconds = Some(v.parse().map_err(|_| {
                        ApiError::bad_request(format!(
                            "invalid value for gracePeriodSeconds: {v:?}"
                        ))
                    })?)
                }
                "propagationPolicy" => q.propagation_policy = Some(v),
                "orphanDependents" => q.orphan_dependents = Some(as_bool(&v)),
                "includeObject" => q.include_object = Some(v),
                "pretty" => q.pretty = as_bool(&v),
                "force" => q.force = as_bool(&v),
                _ => {}
            }
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(path: &str) -> ResourceRequest {
        match parse_path(path).unwrap().unwrap() {
            ApiPath::Resource(r) => r,
            ApiPath::Discovery(_) => panic!("{path} is not a resource path"),
        }
    }

    #[test]
    fn proxy_paths_keep_their_tail() {
        let r = resource("/api/v1/nodes/n1/proxy");
        assert_eq!(r.subresource.as_deref(), Some("proxy"));
        assert_eq!(proxy_path("/api/v1/nodes/n1/proxy", &r), "");
        let p = "/api/v1/nodes/n1/proxy/metrics/cadvisor/";
        let r = resource(p);
        assert_eq!(r.name.as_deref(), Some("n1"));
        assert_eq!(proxy_path(p, &r), "/metrics/cadvisor/");
        let p = "/api/v1/namespaces/ns/services/https:web:443/proxy/a%20b";
        let r = resource(p);
        assert_eq!(r.namespace.as_deref(), Some("ns"));
        assert_eq!(r.name.as_deref(), Some("https:web:443"));
        assert_eq!(proxy_path(p, &r), "/a%20b");
        // Only proxy subresources take a tail.
        assert!(parse_path("/api/v1/namespaces/ns/pods/p/log/extra").is_err());
        assert!(parse_path("/api/v1/namespaces/ns/configmaps/c/proxy/x").is_err());
    }
}
