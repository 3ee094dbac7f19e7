//! The connect subresources of pods, nodes and services, as upstream's
//! `pkg/registry/core/pod/rest/{log,subresources}.go`, the `*Location` functions of the
//! pod, node and service strategies, and their proxy REST: `pods/log` streams the
//! kubelet's `/containerLogs`; `pods/exec`, `pods/attach` and `pods/portforward` are
//! upgrades proxied to the kubelet's `/exec`, `/attach` and `/portForward`;
//! `nodes/proxy` reaches the kubelet (or another port of the node), `pods/proxy` the pod's
//! IP and `services/proxy` one of the service's ready endpoints.

use crate::kubelet_client::{Location, Scheme, Transport};
use crate::proxy::{self, Body};
use crate::request::{Query, ResourceRequest};
use crate::rest;
use crate::status::{ApiError, ApiResult};
use crate::Apiserver;
use api_types::resources::{self, ResourceInfo};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::net::IpAddr;

/// The connect subresources and the methods each accepts, as upstream's
/// `ConnectMethods`.
pub fn methods(subresource: &str) -> &'static [Method] {
    const PROXY: &[Method] = &[
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ];
    match subresource {
        "log" => &[Method::GET],
        "exec" | "attach" | "portforward" => &[Method::GET, Method::POST],
        "proxy" => PROXY,
        _ => &[],
    }
}

/// Whether `subresource` of `info` is served here rather than by the generic REST path.
pub fn is_connect(info: &ResourceInfo, subresource: Option<&str>) -> bool {
    matches!(
        (info.group, info.plural, subresource),
        (
            "",
            "pods",
            Some("log" | "exec" | "attach" | "portforward" | "proxy")
        ) | ("", "nodes" | "services", Some("proxy"))
    )
}

/// Serves one connect request. `proxy_path` is what follows `/proxy` in the URL.
pub async fn serve(
    api: &Apiserver,
    req: Request<Incoming>,
    r: &ResourceRequest,
    proxy_path: &str,
    raw_query: Option<&str>,
) -> ApiResult<Response<Body>> {
    let sub = r.subresource.as_deref().unwrap_or("");
    if !methods(sub).contains(req.method()) {
        return Err(ApiError::method_not_supported(
            r.info,
            &req.method().as_str().to_lowercase(),
        ));
    }
    let name = r
        .name
        .as_deref()
        .ok_or_else(|| ApiError::path_not_found(req.uri().path()))?;
    let params: Vec<(String, String)> = raw_query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let client = &api.kubelet;
    match (r.info.plural, sub) {
        ("pods", "log") => {
            let opts = LogOptions::parse(&params)?;
            opts.validate(name)?;
            let pod = get(api, "pods", r.namespace.as_deref(), name).await?;
            let container = container_of(&pod, name, opts.container.as_deref())?;
            let Some(node_name) = node_name(&pod) else {
                // Not scheduled: no logs yet, an empty stream (upstream's nil location).
                return Ok(text_response(StatusCode::OK, Bytes::new()));
            };
            let (host, port) = kubelet_of(api, &node_name).await?;
            let location = Location {
                scheme: Scheme::Https,
                host,
                port,
                path: format!("/containerLogs/{}/{}/{container}", namespace_of(&pod), name),
                query: opts.kubelet_query(),
            };
            log(client, &location, name).await
        }
        ("pods", "exec" | "attach") => {
            let opts = StreamOptions::parse(&params, sub == "exec")?;
            let pod = get(api, "pods", r.namespace.as_deref(), name).await?;
            let container = container_of(&pod, name, opts.container.as_deref())?;
            let node_name = node_name(&pod).ok_or_else(|| no_host(name))?;
            let (host, port) = kubelet_of(api, &node_name).await?;
            let location = Location {
                scheme: Scheme::Https,
                host,
                port,
                path: format!("/{sub}/{}/{}/{container}", namespace_of(&pod), name),
                query: opts.kubelet_query(),
            };
            proxy::proxy(client, &location, Transport::Kubelet, req, true).await
        }
        ("pods", "portforward") => {
            let ports = port_forward_ports(&params)?;
            let pod = get(api, "pods", r.namespace.as_deref(), name).await?;
            let node_name = node_name(&pod).ok_or_else(|| no_host(name))?;
            let (host, port) = kubelet_of(api, &node_name).await?;
            let query = if ports.is_empty() {
                String::new()
            } else {
                let joined: Vec<String> = ports.iter().map(ToString::to_string).collect();
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("port", &joined.join(","))
                    .finish()
            };
            let location = Location {
                scheme: Scheme::Https,
                host,
                port,
                path: format!("/portForward/{}/{}", namespace_of(&pod), name),
                query,
            };
            proxy::proxy(client, &location, Transport::Kubelet, req, true).await
        }
        ("pods", "proxy") => {
            let (scheme, pod_name, port) = split_scheme_name_port(name)
                .ok_or_else(|| ApiError::bad_request(format!("invalid pod request {name:?}")))?;
            let pod = get(api, "pods", r.namespace.as_deref(), &pod_name).await?;
            let port = match port {
                Some(p) => Some(p),
                None => first_container_port(&pod),
            };
            let ip = pod
                .pointer("/status/podIPs/0/ip")
                .or_else(|| pod.pointer("/status/podIP"))
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<IpAddr>().ok())
                .filter(is_global_unicast)
                .ok_or_else(|| ApiError::bad_request("address not allowed"))?;
            let location = proxy_location(scheme, ip.to_string(), port, proxy_path, raw_query)?;
            proxy::proxy(client, &location, Transport::Proxy, req, false).await
        }
        ("nodes", "proxy") => {
            let (scheme, node_name, port) = split_scheme_name_port(name)
                .ok_or_else(|| ApiError::bad_request(format!("invalid node request {name:?}")))?;
            let (host, kubelet_port) = kubelet_of(api, &node_name).await?;
            proxyable(&host).await?;
            let (location, transport) = match port {
                None => (
                    kubelet_location(&host, kubelet_port, proxy_path, raw_query),
                    Transport::Kubelet,
                ),
                Some(p) if p == kubelet_port.to_string() => (
                    kubelet_location(&host, kubelet_port, proxy_path, raw_query),
                    Transport::Kubelet,
                ),
                Some(p) => (
                    proxy_location(scheme, host, Some(p), proxy_path, raw_query)?,
                    Transport::Proxy,
                ),
            };
            proxy::proxy(client, &location, transport, req, false).await
        }
        ("services", "proxy") => {
            let (scheme, svc_name, port) = split_scheme_name_port(name).ok_or_else(|| {
                ApiError::bad_request(format!("invalid service request {name:?}"))
            })?;
            let namespace = r.namespace.as_deref();
            let (ip, port) =
                service_endpoint(api, namespace, name, &svc_name, port.as_deref()).await?;
            let location = proxy_location(scheme, ip, Some(port), proxy_path, raw_query)?;
            proxy::proxy(client, &location, Transport::Proxy, req, false).await
        }
        _ => Err(ApiError::path_not_found(req.uri().path())),
    }
}

/// A core/v1 resource of the registry.
fn core_v1(plural: &str) -> ApiResult<&'static ResourceInfo> {
    resources::find("", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} not registered")))
}

async fn get(
    api: &Apiserver,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
) -> ApiResult<Value> {
    let r = ResourceRequest {
        info: core_v1(plural)?,
        namespace: namespace.map(String::from),
        name: Some(name.to_string()),
        subresource: None,
    };
    rest::get(api, &r, &Query::default()).await
}

/// The kubelet's address and port on the named node.
async fn kubelet_of(api: &Apiserver, node_name: &str) -> ApiResult<(String, u16)> {
    let node = get(api, "nodes", None, node_name).await?;
    api.kubelet.connection_info(&node)
}

fn node_name(pod: &Value) -> Option<String> {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(String::from)
}

fn namespace_of(pod: &Value) -> &str {
    pod.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
}

fn no_host(name: &str) -> ApiError {
    ApiError::bad_request(format!("pod {name} does not have a host assigned"))
}

/// The names of a pod's containers in upstream's visiting order: init containers, app
/// containers, ephemeral containers.
fn container_names(pod: &Value) -> (Vec<&str>, Vec<&str>) {
    let names = |field: &str| -> Vec<&str> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default()
    };
    let app = names("containers");
    let mut all = names("initContainers");
    all.extend(app.iter().copied());
    all.extend(names("ephemeralContainers"));
    (app, all)
}

/// The container a request addresses, as upstream's `validateContainer`: the only one when
/// none is named; 400 when several are there and none is named, or the named one is not.
fn container_of(pod: &Value, name: &str, container: Option<&str>) -> ApiResult<String> {
    let (app, all) = container_names(pod);
    match container.filter(|c| !c.is_empty()) {
        Some(c) if all.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None => match app.as_slice() {
            [only] => Ok((*only).to_string()),
            [] => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}"
            ))),
            _ => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                all.join(" ")
            ))),
        },
    }
}

/// Query values as upstream's query-parameter conversion reads a bool: anything but
/// `false` and `0` is true, even an empty value.
fn as_bool(v: &str) -> bool {
    !matches!(v.to_ascii_lowercase().as_str(), "false" | "0")
}

fn as_int(v: &str) -> ApiResult<i64> {
    v.parse().map_err(|_| {
        ApiError::bad_request(format!("strconv.ParseInt: parsing {v:?}: invalid syntax"))
    })
}

fn last<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// `PodLogOptions` from the query.
#[derive(Debug, Default, PartialEq)]
struct LogOptions {
    container: Option<String>,
    follow: bool,
    previous: bool,
    timestamps: bool,
    since_seconds: Option<i64>,
    since_time: Option<jiff::Timestamp>,
    tail_lines: Option<i64>,
    limit_bytes: Option<i64>,
}

impl LogOptions {
    fn parse(params: &[(String, String)]) -> ApiResult<LogOptions> {
        let mut o = LogOptions {
            container: last(params, "container").map(String::from),
            follow: last(params, "follow").is_some_and(as_bool),
            previous: last(params, "previous").is_some_and(as_bool),
            timestamps: last(params, "timestamps").is_some_and(as_bool),
            ..Default::default()
        };
        if let Some(v) = last(params, "sinceSeconds") {
            o.since_seconds = Some(as_int(v)?);
        }
        if let Some(v) = last(params, "tailLines") {
            o.tail_lines = Some(as_int(v)?);
        }
        if let Some(v) = last(params, "limitBytes") {
            o.limit_bytes = Some(as_int(v)?);
        }
        if let Some(v) = last(params, "sinceTime") {
            o.since_time = Some(v.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "parsing time {v:?} as \"2006-01-02T15:04:05Z07:00\": cannot parse"
                ))
            })?);
        }
        Ok(o)
    }

    /// Upstream's `ValidatePodLogOptions`: 422 on PodLogOptions.
    fn validate(&self, name: &str) -> ApiResult<()> {
        use api_types::validation::field::{forbidden, invalid, Path};
        let mut errs = Vec::new();
        if let Some(t) = self.tail_lines.filter(|t| *t < 0) {
            errs.push(invalid(
                &Path::new("tailLines"),
                t,
                "must be greater than or equal to 0",
            ));
        }
        if let Some(b) = self.limit_bytes.filter(|b| *b < 1) {
            errs.push(invalid(
                &Path::new("limitBytes"),
                b,
                "must be greater than 0",
            ));
        }
        if self.since_seconds.is_some() && self.since_time.is_some() {
            errs.push(forbidden(
                &Path::root(),
                "at most one of `sinceTime` or `sinceSeconds` may be specified",
            ));
        }
        if let Some(s) = self.since_seconds.filter(|s| *s < 1) {
            errs.push(invalid(
                &Path::new("sinceSeconds"),
                s,
                "must be greater than 0",
            ));
        }
        if errs.is_empty() {
            return Ok(());
        }
        let info = ResourceInfo {
            kind: "PodLogOptions",
            ..*core_v1("pods")?
        };
        Err(ApiError::invalid(&info, name, &errs))
    }

    /// The kubelet's query, as upstream's `LogLocation` writes it.
    fn kubelet_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if self.follow {
            q.append_pair("follow", "true");
        }
        if self.previous {
            q.append_pair("previous", "true");
        }
        if self.timestamps {
            q.append_pair("timestamps", "true");
        }
        if let Some(s) = self.since_seconds {
            q.append_pair("sinceSeconds", &s.to_string());
        }
        if let Some(t) = self.since_time {
            q.append_pair("sinceTime", &t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        }
        if let Some(t) = self.tail_lines {
            q.append_pair("tailLines", &t.to_string());
        }
        if let Some(b) = self.limit_bytes {
            q.append_pair("limitBytes", &b.to_string());
        }
        q.finish()
    }
}

/// `PodExecOptions` and `PodAttachOptions` from the query.
#[derive(Debug, Default, PartialEq)]
struct StreamOptions {
    container: Option<String>,
    command: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

impl StreamOptions {
    fn parse(params: &[(String, String)], exec: bool) -> ApiResult<StreamOptions> {
        let flag = |k: &str| last(params, k).is_some_and(as_bool);
        let o = StreamOptions {
            container: last(params, "container").map(String::from),
            command: if exec {
                params
                    .iter()
                    .filter(|(k, _)| k == "command")
                    .map(|(_, v)| v.clone())
                    .collect()
            } else {
                Vec::new()
            },
            stdin: flag("stdin"),
            stdout: flag("stdout"),
            stderr: flag("stderr"),
            tty: flag("tty"),
        };
        Ok(o)
    }

    /// The kubelet's query, as upstream's `streamParams`: `input`, `output`, `error`,
    /// `tty` set to `1`, then each `command` word.
    fn kubelet_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (on, key) in [
            (self.stdin, "input"),
            (self.stdout, "output"),
            (self.stderr, "error"),
            (self.tty, "tty"),
        ] {
            if on {
                q.append_pair(key, "1");
            }
        }
        for c in &self.command {
            q.append_pair("command", c);
        }
        q.finish()
    }
}

/// `PodPortForwardOptions.ports`.
fn port_forward_ports(params: &[(String, String)]) -> ApiResult<Vec<u16>> {
    params
        .iter()
        .filter(|(k, _)| k == "ports")
        .flat_map(|(_, v)| v.split(','))
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "invalid port {v:?}: must be between 1 and 65535, inclusive"
                    ))
                })
        })
        .collect()
}

/// `name`, `name:port` or `scheme:name:port`, as upstream's `SplitSchemeNamePort`.
fn split_scheme_name_port(id: &str) -> Option<(Scheme, String, Option<String>)> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] => (*scheme, *name, *port),
        _ => return None,
    };
    let scheme = match scheme {
        "" | "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return None,
    };
    if name.is_empty() {
        return None;
    }
    Some((
        scheme,
        name.to_string(),
        Some(port.to_string()).filter(|p| !p.is_empty()),
    ))
}

fn first_container_port(pod: &Value) -> Option<String> {
    pod.pointer("/spec/containers")?
        .as_array()?
        .iter()
        .find_map(|c| c.pointer("/ports/0/containerPort")?.as_i64())
        .map(|p| p.to_string())
}

/// Upstream's `IsGlobalUnicast`: not unspecified, loopback, multicast, link-local or the
/// broadcast address.
fn is_global_unicast(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_multicast()
                || v4.is_link_local()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unicast_link_local())
        }
    }
}

/// Upstream's `IsProxyableHostname`: every address of the host must be neither loopback
/// nor link-local, so the proxy cannot be turned on the apiserver's own host.
async fn proxyable(host: &str) -> ApiResult<()> {
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| ApiError::bad_request(e.to_string()))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() {
        return Err(ApiError::bad_request("no addresses for hostname"));
    }
    let refused = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unicast_link_local() || v6.is_multicast(),
    };
    if addrs.iter().any(refused) {
        return Err(ApiError::bad_request("address not allowed"));
    }
    Ok(())
}

/// Upstream's `JoinPreservingTrailingSlash` of an empty location path and the proxy path.
fn joined_path(proxy_path: &str) -> String {
    if proxy_path.is_empty() {
        "/".to_string()
    } else if proxy_path.starts_with('/') {
        proxy_path.to_string()
    } else {
        format!("/{proxy_path}")
    }
}

fn kubelet_location(host: &str, port: u16, proxy_path: &str, raw_query: Option<&str>) -> Location {
    Location {
        scheme: Scheme::Https,
        host: host.to_string(),
        port,
        path: joined_path(proxy_path),
        query: raw_query.unwrap_or("").to_string(),
    }
}

fn proxy_location(
    scheme: Scheme,
    host: String,
    port: Option<String>,
    proxy_path: &str,
    raw_query: Option<&str>,
) -> ApiResult<Location> {
    let port = match port {
        None => match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        },
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| ApiError::bad_request(format!("invalid port {p:?}")))?,
    };
    Ok(Location {
        scheme,
        host,
        port,
        path: joined_path(proxy_path),
        query: raw_query.unwrap_or("").to_string(),
    })
}

/// One ready endpoint of the service for the requested port, as upstream's service
/// `ResourceLocation`: a port number names the service port with that number; endpoint
/// addresses must belong to a pod with that IP.
async fn service_endpoint(
    api: &Apiserver,
    namespace: Option<&str>,
    id: &str,
    svc_name: &str,
    port: Option<&str>,
) -> ApiResult<(String, String)> {
    let mut port_name = port.unwrap_or("").to_string();
    if let Ok(number) = port_name.parse::<i64>() {
        let svc = get(api, "services", namespace, svc_name).await?;
        let found = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .and_then(|ports| {
                ports
                    .iter()
                    .find(|p| p.get("port").and_then(Value::as_i64) == Some(number))
            })
            .map(|p| {
                p.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            });
        port_name = found.ok_or_else(|| {
            ApiError::service_unavailable(format!(
                "no service port {number} found for service {svc_name:?}"
            ))
        })?;
    }
    let eps = get(api, "endpoints", namespace, svc_name).await?;
    let subsets = eps
        .get("subsets")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if subsets.is_empty() {
        return Err(ApiError::service_unavailable(format!(
            "no endpoints available for service {svc_name:?}"
        )));
    }
    for subset in &subsets {
        let Some(ep_port) = subset
            .get("ports")
            .and_then(Value::as_array)
            .and_then(|ports| {
                ports
                    .iter()
                    .find(|p| p.get("name").and_then(Value::as_str).unwrap_or("") == port_name)
            })
            .and_then(|p| p.get("port").and_then(Value::as_i64))
        else {
            continue;
        };
        let addresses = subset
            .get("addresses")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for addr in &addresses {
            let Some(ip) = addr.get("ip").and_then(Value::as_str) else {
                continue;
            };
            if is_pod_address(api, namespace, addr, ip).await {
                return Ok((ip.to_string(), ep_port.to_string()));
            }
            tracing::debug!(%ip, "endpoint address is not a pod's; skipped");
        }
    }
    Err(ApiError::service_unavailable(format!(
        "no endpoints available for service {id:?}"
    )))
}

/// Upstream's `isValidAddress`: the address points at a pod that has this IP.
async fn is_pod_address(api: &Apiserver, namespace: Option<&str>, addr: &Value, ip: &str) -> bool {
    let Some(target) = addr.get("targetRef") else {
        return false;
    };
    if target.get("kind").and_then(Value::as_str) != Some("Pod") {
        return false;
    }
    let Some(name) = target.get("name").and_then(Value::as_str) else {
        return false;
    };
    let ns = target
        .get("namespace")
        .and_then(Value::as_str)
        .or(namespace);
    let Ok(pod) = get(api, "pods", ns, name).await else {
        return false;
    };
    let ips = pod
        .pointer("/status/podIPs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    ips.iter()
        .any(|p| p.get("ip").and_then(Value::as_str) == Some(ip))
        || pod.pointer("/status/podIP").and_then(Value::as_str) == Some(ip)
}

fn text_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(
        http_body_util::Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}

/// Upstream's `LocationStreamer` with the generic response checker: a kubelet error
/// becomes an API error, a success streams as `text/plain` as it arrives.
async fn log(
    client: &crate::kubelet_client::KubeletClient,
    location: &Location,
    name: &str,
) -> ApiResult<Response<Body>> {
    let resp = proxy::get(client, location, Transport::Kubelet)
        .await
        .map_err(|e| {
            tracing::debug!(%location, error = %e, "kubelet logs request failed");
            ApiError::new(500, "", format!("Get \"{location}\": {e}"))
        })?;
    let status = resp.status();
    if !(200..=206).contains(&status.as_u16()) {
        // Upstream reads at most 10 KiB of the kubelet's explanation.
        let body = http_body_util::Limited::new(resp.into_body(), 10 * 1024)
            .collect()
            .await
            .map(|c| String::from_utf8_lossy(&c.to_bytes()).into_owned())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        return Err(kubelet_error(status, &body, name));
    }
    let body = resp
        .into_body()
        .map_err(proxy::BoxError::from)
        .boxed_unsync();
    let mut r = Response::new(body);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    Ok(r)
}

/// Upstream's `GenericHttpResponseChecker`.
fn kubelet_error(status: StatusCode, body: &str, name: &str) -> ApiError {
    match status.as_u16() {
        500 => ApiError::internal(body),
        400 => ApiError::bad_request(body),
        code => {
            let (reason, message) = match code {
                404 => ("NotFound", "the server could not find the requested resource".to_string()),
                401 => ("Unauthorized", "the server has asked for the client to provide credentials".to_string()),
                403 => ("Forbidden", "the server does not allow access to the requested resource".to_string()),
                503 => ("ServiceUnavailable", "the server is currently unable to handle the request".to_string()),
                _ => ("", format!("the server responded with the status code {code} but did not return more information")),
            };
            ApiError::new(code, reason, format!("{message} ( pods/log {name})")).with_details(
                json!({ "name": name, "kind": "pods/log", "causes": [{ "reason": "UnexpectedServerResponse", "message": body }] }),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(q.as_bytes()).into_owned().collect()
    }

    fn pod(init: &[&str], app: &[&str]) -> Value {
        let c = |names: &[&str]| -> Value { names.iter().map(|n| json!({ "name": n })).collect() };
        json!({ "spec": { "initContainers": c(init), "containers": c(app) } })
    }

    #[test]
    fn containers_default_to_the_only_one() {
        assert_eq!(container_of(&pod(&[], &["a"]), "p", None).unwrap(), "a");
        assert_eq!(
            container_of(&pod(&["i"], &["a", "b"]), "p", Some("i")).unwrap(),
            "i"
        );
        let several = container_of(&pod(&["i"], &["a", "b"]), "p", None).unwrap_err();
        assert_eq!(several.code, 400);
        assert_eq!(
            several.message,
            "a container name must be specified for pod p, choose one of: [i a b]"
        );
        let unknown = container_of(&pod(&[], &["a"]), "p", Some("z")).unwrap_err();
        assert_eq!(unknown.message, "container z is not valid for pod p");
        let none = container_of(&pod(&[], &[]), "p", None).unwrap_err();
        assert_eq!(none.message, "a container name must be specified for pod p");
    }

    #[test]
    fn log_options_become_the_kubelet_query() {
        let o = LogOptions::parse(&params(
            "container=c&follow=true&previous=1&tailLines=10&limitBytes=5&sinceTime=2026-12-01T10:00:00Z",
        ))
        .unwrap();
        assert!(o.follow && o.previous && !o.timestamps);
        assert_eq!(
            o.kubelet_query(),
            "follow=true&previous=true&sinceTime=2026-12-01T10%3A00%3A00Z&tailLines=10&limitBytes=5"
        );
        assert!(!LogOptions::parse(&params("follow=false")).unwrap().follow);
        assert_eq!(
            LogOptions::parse(&params("tailLines=x"))
                .unwrap_err()
                .message,
            "strconv.ParseInt: parsing \"x\": invalid syntax"
        );
        let bad = LogOptions::parse(&params("tailLines=-1&sinceSeconds=0"))
            .unwrap()
            .validate("p")
            .unwrap_err();
        assert_eq!(bad.code, 422);
        assert!(
            bad.message.starts_with("PodLogOptions \"p\" is invalid"),
            "{}",
            bad.message
        );
        assert!(bad.message.contains("tailLines"), "{}", bad.message);
    }

    #[test]
    fn exec_options_become_upstream_stream_params() {
        let o = StreamOptions::parse(
            &params("command=echo&command=hi+there&stdout=true&stderr=true&container=c"),
            true,
        )
        .unwrap();
        assert_eq!(
            o.kubelet_query(),
            "output=1&error=1&command=echo&command=hi+there"
        );
        assert_eq!(o.container.as_deref(), Some("c"));
        assert!(StreamOptions::parse(&params("command=x"), false)
            .unwrap()
            .command
            .is_empty());
        assert_eq!(
            port_forward_ports(&params("ports=80&ports=443,8080")).unwrap(),
            vec![80, 443, 8080]
        );
        assert_eq!(
            port_forward_ports(&params("ports=0")).unwrap_err().code,
            400
        );
    }

    #[test]
    fn proxy_names_split_like_upstream() {
        assert_eq!(
            split_scheme_name_port("n"),
            Some((Scheme::Http, "n".into(), None))
        );
        assert_eq!(
            split_scheme_name_port("n:8080"),
            Some((Scheme::Http, "n".into(), Some("8080".into())))
        );
        assert_eq!(
            split_scheme_name_port("https:n:443"),
            Some((Scheme::Https, "n".into(), Some("443".into())))
        );
        assert_eq!(split_scheme_name_port("ftp:n:1"), None);
        assert_eq!(split_scheme_name_port(":80"), None);
        assert_eq!(split_scheme_name_port("a:b:c:d"), None);
        assert_eq!(joined_path(""), "/");
        assert_eq!(joined_path("/metrics/"), "/metrics/");
    }

    #[test]
    fn loopback_is_not_proxyable() {
        assert!(!is_global_unicast(&"127.0.0.1".parse().unwrap()));
        assert!(!is_global_unicast(&"169.254.1.1".parse().unwrap()));
        assert!(is_global_unicast(&"10.244.1.5".parse().unwrap()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert_eq!(
            rt.block_on(proxyable("127.0.0.1")).unwrap_err().message,
            "address not allowed"
        );
        assert!(rt.block_on(proxyable("10.0.0.7")).is_ok());
    }
}
