//! The HTTPS server: TLS, authentication, in-flight limits, routing to the REST handlers,
//! response encoding, and the health, version, metrics and OpenAPI endpoints.

use crate::authn::Authenticated;
use crate::codec::{self, Output};
use crate::discovery;
use crate::request::{self, ApiPath, Discovery, Query, ResourceRequest};
use crate::rest::{self, Change, DeleteOptions, PatchType, Written};
use crate::status::{ApiError, ApiResult};
use crate::Apiserver;
use api_types::resources::ResourceInfo;
use bytes::Bytes;
use component_base::shutdown::Shutdown;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Response bodies; a proxied body can fail mid-stream (see [`crate::proxy::Body`]).
type Body = crate::proxy::Body;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Accepts TLS connections until shutdown; each connection serves HTTP/1.1 or HTTP/2.
pub async fn serve(
    api: Arc<Apiserver>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    mut shutdown: Shutdown,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.signaled() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let api = api.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                };
                // Verified by the TLS layer against --client-ca-file.
                let client_cert = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|leaf| crate::authn::user_from_certificate(leaf))
                    .map(crate::authn::ClientCertUser);
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(crate::proxy::ClientAddr(peer));
                    if let Some(user) = &client_cert {
                        req.extensions_mut().insert(user.clone());
                    }
                    let api = api.clone();
                    async move { Ok::<_, Infallible>(handle(api, req).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                // Upgrades: exec, attach and port-forward are spliced to the kubelet.
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    }
                    _ = conn_shutdown.signaled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
                    }
                }
            },
            tracing::debug_span!("connection", %peer),
        ));
    }
}

/// A Secret in kube-system from the watch cache, for the bootstrap-token authenticator.
fn bootstrap_secret(api: &Apiserver, name: &str) -> Option<Value> {
    let info = api_types::resources::find("", "v1", "secrets")?;
    let key = crate::object::key(info, Some(crate::authn::BOOTSTRAP_NAMESPACE), name);
    api.cache(info).get(&key).map(|c| c.value())
}

/// Labels of one request for the apiserver_request_* metrics.
struct RequestLabels {
    verb: &'static str,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    scope: &'static str,
    dry_run: bool,
    /// Who asked (after impersonation), for the request log.
    user: String,
}

fn verb_of(method: &Method, r: &ResourceRequest, q: &Query) -> &'static str {
    match *method {
        Method::GET | Method::HEAD => {
            if q.watch {
                "WATCH"
            } else if r.name.is_some() {
                "GET"
            } else {
                "LIST"
            }
        }
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

async fn handle(api: Arc<Apiserver>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(String::from);
    let method = req.method().clone();
    let mut labels: Option<RequestLabels> = None;
    let response = match route(&api, req, &path, query.as_deref(), &mut labels).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    if let Some(l) = &labels {
        // Upstream's httplog line (kube-apiserver -v=3): every API request, its caller and
        // its answer; RUST_LOG=apiserver::server=debug.
        tracing::debug!(
            verb = %method,
            uri = %format_args!("{path}{}{}", if query.is_some() { "?" } else { "" }, query.as_deref().unwrap_or("")),
            user = %l.user,
            code = response.status().as_u16(),
            latency = ?started.elapsed(),
            "HTTP"
        );
    }
    if let Some(l) = labels {
        let code = response.status().as_u16().to_string();
        let dry = if l.dry_run { "All" } else { "" };
        api.metrics
            .requests
            .with_label_values(&[
                l.verb,
                dry,
                &l.group,
                &l.version,
                &l.resource,
                &l.subresource,
                l.scope,
                "apiserver",
                &code,
            ])
            .inc();
        if l.verb != "WATCH" && l.verb != "CONNECT" {
            api.metrics
                .durations
                .with_label_values(&[
                    l.verb,
                    dry,
                    &l.group,
                    &l.version,
                    &l.resource,
                    &l.subresource,
                    l.scope,
                    "apiserver",
                ])
                .observe(started.elapsed().as_secs_f64());
        }
    }
    response
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    let body = serde_json::to_vec(&e.to_status()).unwrap_or_default();
    let mut r = Response::builder()
        .status(StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(http::header::CONTENT_TYPE, codec::JSON);
    if let Some(s) = e.retry_after {
        r = r.header(http::header::RETRY_AFTER, s.to_string());
    }
    r.body(full(body))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

fn plain(code: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(full(body))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    plain(code, codec::JSON, serde_json::to_vec(v).unwrap_or_default())
}

fn header(h: &HeaderMap, name: http::header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn health(api: &Apiserver, check: &str, verbose: bool) -> Response<Body> {
    let mut checks = vec![("ping", true)];
    let etcd_ok = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        api.store.current_revision(),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    if check != "livez" {
        checks.push(("etcd", etcd_ok));
    }
    if check == "readyz" {
        let caches_ready = api.caches.values().all(|c| c.revision() > 0);
        checks.push(("informer-sync", caches_ready));
        checks.push(("poststarthook/bootstrap-controller", api.is_bootstrapped()));
        checks.push(("shutdown", !api.shutdown.is_shutdown()));
    }
    let ok = checks.iter().all(|(_, ok)| *ok);
    let code = if ok { 200 } else { 500 };
    if !verbose && ok {
        return plain(code, "text/plain; charset=utf-8", "ok");
    }
    let mut text = String::new();
    for (name, ok) in &checks {
        if *ok {
            text.push_str(&format!("[+]{name} ok\n"));
        } else {
            text.push_str(&format!("[-]{name} failed: reason withheld\n"));
        }
    }
    if ok {
        text.push_str(&format!("{check} check passed\n"));
    } else {
        text.push_str(&format!("{check} check failed\n"));
    }
    plain(code, "text/plain; charset=utf-8", text)
}

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": concat!("v1.33.0-pikube.", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("linux/{}", match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", "arm" => "arm", other => other }),
    })
}

async fn route(
    api: &Arc<Apiserver>,
    req: Request<Incoming>,
    path: &str,
    raw_query: Option<&str>,
    labels: &mut Option<RequestLabels>,
) -> ApiResult<Response<Body>> {
    let verbose = raw_query.is_some_and(|q| {
        q.split('&')
            .any(|p| p == "verbose" || p.starts_with("verbose="))
    });
    match path {
        "/healthz" | "/livez" | "/readyz" => return Ok(health(api, &path[1..], verbose).await),
        p if p.starts_with("/healthz/")
            || p.starts_with("/livez/")
            || p.starts_with("/readyz/") =>
        {
            let (check, name) = p[1..].split_once('/').unwrap_or(("healthz", ""));
            let r = health(api, check, true).await;
            let _ = name;
            return Ok(r);
        }
        "/version" | "/version/" => return Ok(json_response(200, &version_info())),
        _ => {}
    }

    let user = match api.authn.authenticate_request(
        req.extensions().get(),
        header(req.headers(), http::header::AUTHORIZATION),
        |name| bootstrap_secret(api, name),
    ) {
        Authenticated::User(user) => {
            tracing::trace!(user = %user.name, %path, "authenticated");
            user
        }
        Authenticated::Rejected => match crate::serviceaccount_authenticator::authenticate(
            api,
            header(req.headers(), http::header::AUTHORIZATION),
        ) {
            Some(user) => user,
            None => return Err(ApiError::unauthorized()),
        },
    };
    let user = crate::impersonation::impersonate(&api.authz, req.headers(), user)?;
    if !api.authz.allows_everything() {
        let attributes = crate::authz::Attributes::of_request(&user, req.method(), path, raw_query);
        api.authz.check(&attributes)?;
    }

    match path {
        "/metrics" => {
            return Ok(plain(
                200,
                component_base::metrics::TEXT_CONTENT_TYPE,
                component_base::metrics::encode_text(&api.metrics.registry),
            ));
        }
        "/openapi/v2" => {
            return Ok(openapi_response(
                req.headers(),
                api_types::openapi::v2_document(),
                false,
            ))
        }
        "/openapi/v3" | "/openapi/v3/" => {
            return Ok(openapi_response(
                req.headers(),
                api_types::openapi::v3_index_document(),
                false,
            ))
        }
        p if p.starts_with("/openapi/v3/") => {
            let gv = &p["/openapi/v3/".len()..];
            return match api_types::openapi::v3_document(gv) {
                Some(doc) => {
                    let hash = raw_query.and_then(|q| {
                        form_urlencoded::parse(q.as_bytes())
                            .find(|(k, _)| k == "hash")
                            .map(|(_, v)| v.into_owned())
                    });
                    match hash {
                        // A stale hash is redirected to the current document, as upstream.
                        Some(h) if h != doc.hash() => Ok(Response::builder()
                            .status(301)
                            .header(
                                http::header::LOCATION,
                                api_types::openapi::server_relative_url(gv, doc.hash()),
                            )
                            .body(full(Bytes::new()))
                            .unwrap_or_else(|_| Response::new(full(Bytes::new())))),
                        Some(_) => Ok(openapi_response(req.headers(), doc, true)),
                        None => Ok(openapi_response(req.headers(), doc, false)),
                    }
                }
                None => Err(ApiError::path_not_found(p)),
            };
        }
        _ => {}
    }

    let parsed = request::parse_path(path)?;
    let Some(parsed) = parsed else {
        return Err(ApiError::path_not_found(path));
    };
    let r = match parsed {
        ApiPath::Discovery(d) => {
            if req.method() != Method::GET {
                return Err(ApiError::new(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                ));
            }
            let v = match d {
                Discovery::Api => discovery::api_versions(api.advertise),
                Discovery::Apis => discovery::api_group_list(),
                Discovery::Group(g) => discovery::api_group(&g),
                Discovery::GroupVersion(g, v) => discovery::api_resource_list(&g, &v),
            };
            return Ok(json_response(200, &v));
        }
        ApiPath::Resource(r) => r,
    };
    if crate::registry::core::connect::is_connect(r.info, r.subresource.as_deref()) {
        // Connect requests (logs, exec, attach, port-forward, proxy) are long-running and
        // outside the in-flight limits, as upstream; their query belongs to the backend.
        *labels = Some(RequestLabels {
            verb: "CONNECT",
            group: r.info.group.to_string(),
            version: r.info.version.to_string(),
            resource: r.info.plural.to_string(),
            subresource: r.subresource.clone().unwrap_or_default(),
            scope: "resource",
            dry_run: false,
            user: user.name.clone(),
        });
        let proxy_path = request::proxy_path(path, &r);
        return crate::registry::core::connect::serve(api, req, &r, &proxy_path, raw_query).await;
    }
    let q = Query::parse(raw_query)?;
    *labels = Some(RequestLabels {
        verb: verb_of(req.method(), &r, &q),
        group: r.info.group.to_string(),
        version: r.info.version.to_string(),
        resource: r.info.plural.to_string(),
        subresource: r.subresource.clone().unwrap_or_default(),
        scope: if r.name.is_some() {
            "resource"
        } else if r.namespace.is_some() {
            "namespace"
        } else {
            "cluster"
        },
        dry_run: q.dry_run,
        user: user.name.clone(),
    });

    // Long-running watches are outside the in-flight limits, as upstream.
    let mutating = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let long_running = q.watch && req.method() == Method::GET;
    let _permit = if long_running {
        None
    } else {
        let (sem, kind) = if mutating {
            (&api.mutating_inflight, "mutating")
        } else {
            (&api.readonly_inflight, "readOnly")
        };
        match sem.try_acquire() {
            Ok(p) => Some(InflightPermit::new(
                p,
                api.metrics.inflight.with_label_values(&[kind]),
            )),
            Err(_) => {
                return Err(ApiError::too_many_requests(
                    "Too many requests, please try again later.",
                    1,
                ))
            }
        }
    };
    crate::authz::escalation::REQUEST_USER
        .scope(user.clone(), serve_resource(api, req, r, q, &user))
        .await
}

struct InflightPermit<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
    gauge: prometheus::IntGauge,
}

impl<'a> InflightPermit<'a> {
    fn new(permit: tokio::sync::SemaphorePermit<'a>, gauge: prometheus::IntGauge) -> Self {
        gauge.inc();
        InflightPermit {
            _permit: permit,
            gauge,
        }
    }
}

impl Drop for InflightPermit<'_> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

fn openapi_response(
    headers: &HeaderMap,
    doc: &'static api_types::openapi::Document,
    immutable: bool,
) -> Response<Body> {
    let quoted = doc.etag();
    if header(headers, http::header::IF_NONE_MATCH)
        .is_some_and(|v| v.trim() == quoted || v.trim() == doc.hash())
    {
        return Response::builder()
            .status(304)
            .header(http::header::ETAG, quoted)
            .body(full(Bytes::new()))
            .unwrap_or_else(|_| Response::new(full(Bytes::new())));
    }
    let response = Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, codec::JSON)
        .header(http::header::ETAG, quoted)
        .header(
            http::header::CACHE_CONTROL,
            if immutable {
                "public, immutable"
            } else {
                "no-cache, private"
            },
        )
        .header(http::header::VARY, "Accept-Encoding");
    // The document is kept gzipped: sent as it is to a client that takes gzip.
    let response = match accepts_gzip(headers) {
        true => response
            .header(http::header::CONTENT_ENCODING, "gzip")
            .body(full(Bytes::from_static(doc.gzip()))),
        false => response.body(full(Bytes::from(doc.json()))),
    };
    response.unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

/// Whether `Accept-Encoding` allows gzip (a `q=0` refuses it).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

async fn read_body(body: Incoming) -> ApiResult<Bytes> {
    match Limited::new(body, codec::MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(ApiError::too_large())
            } else {
                Err(ApiError::bad_request(format!(
                    "reading the request body: {e}"
                )))
            }
        }
    }
}

/// A server-side Table of objects, as `kubectl get` asks for.
pub fn table_for(
    info: &'static ResourceInfo,
    objects: &[Value],
    with_columns: bool,
    rv: &str,
) -> Value {
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let meta = o.get("metadata").cloned().unwrap_or_else(|| json!({}));
            let mut row = json!({
                "cells": crate::table::row_cells(info, o, now),
                "object": { "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta },
            });
            let conditions = crate::table::row_conditions(info, o);
            if !conditions.is_empty() {
                row["conditions"] = json!(conditions);
            }
            row
        })
        .collect();
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": { "resourceVersion": rv },
        "columnDefinitions": if with_columns { json!(crate::table::column_definitions(info)) } else { json!([]) },
        "rows": rows,
    });
    if !with_columns {
        t["columnDefinitions"] = Value::Null;
    }
    t
}

fn include_object(rows_table: &mut Value, include: Option<&str>, objects: &[Value]) {
    if let Some(rows) = rows_table.get_mut("rows").and_then(Value::as_array_mut) {
        for (row, obj) in rows.iter_mut().zip(objects) {
            match include {
                Some("None") => row["object"] = Value::Null,
                Some("Object") => row["object"] = obj.clone(),
                _ => {}
            }
        }
    }
}

fn to_partial_metadata(v: &Value, list: bool) -> Value {
    let pm = |o: &Value| json!({ "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({})) });
    if list {
        json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": v.get("metadata").cloned().unwrap_or_else(|| json!({})),
            "items": v.get("items").and_then(Value::as_array).map(|a| a.iter().map(pm).collect::<Vec<_>>()).unwrap_or_default(),
        })
    } else {
        pm(v)
    }
}

/// Encodes an object or list for the client.
fn respond(
    info: &'static ResourceInfo,
    output: Output,
    q: &Query,
    code: u16,
    value: &Value,
    warnings: &[String],
) -> ApiResult<Response<Body>> {
    let is_list = value.get("items").is_some()
        && value
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k.ends_with("List"));
    let is_status = value.get("kind").and_then(Value::as_str) == Some("Status");
    let shaped = match output {
        Output::Table if !is_status => {
            let objects: Vec<Value> = if is_list {
                value["items"].as_array().cloned().unwrap_or_default()
            } else {
                vec![value.clone()]
            };
            let rv = value
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            let mut t = table_for(info, &objects, true, rv);
            if is_list {
                if let Some(c) = value.pointer("/metadata/continue") {
                    t["metadata"]["continue"] = c.clone();
                }
                if let Some(c) = value.pointer("/metadata/remainingItemCount") {
                    t["metadata"]["remainingItemCount"] = c.clone();
                }
            }
            include_object(&mut t, q.include_object.as_deref(), &objects);
            t
        }
        Output::PartialMetadata if !is_status => to_partial_metadata(value, is_list),
        _ => value.clone(),
    };
    let (body, ct) = codec::encode(output, &shaped, q.pretty)?;
    let mut r = Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, ct);
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(h) = HeaderValue::from_str(&text) {
            r = r.header(http::header::WARNING, h);
        }
    }
    Ok(r.body(full(body))
        .unwrap_or_else(|_| Response::new(full(Bytes::new()))))
}

fn written(
    info: &'static ResourceInfo,
    output: Output,
    q: &Query,
    w: Written,
) -> ApiResult<Response<Body>> {
    respond(info, output, q, w.code, &w.body, &w.warnings)
}

async fn decode_write(req: Request<Incoming>) -> ApiResult<(codec::Decoded, String)> {
    let ct = codec::media_type(header(req.headers(), http::header::CONTENT_TYPE));
    let body = read_body(req.into_body()).await?;
    if body.is_empty() {
        return Err(ApiError::bad_request("the body of the request is empty"));
    }
    let decoded = codec::decode_object(Some(&ct), &body)?;
    Ok((decoded, ct))
}

async fn serve_resource(
    api: &Arc<Apiserver>,
    req: Request<Incoming>,
    r: ResourceRequest,
    q: Query,
    user: &crate::authn::UserInfo,
) -> ApiResult<Response<Body>> {
    let info = r.info;
    let output = codec::negotiate(header(req.headers(), http::header::ACCEPT))?;
    let method = req.method().clone();
    let sub = r.subresource.clone();
    let has_name = r.name.is_some();
    let verb_allowed = |verb: &str| info.verbs.contains(&verb);

    match (method, sub.as_deref(), has_name) {
        // ------------------------------------------------ reads
        (Method::GET, None, false) if q.watch => {
            if !verb_allowed("watch") {
                return Err(ApiError::method_not_supported(info, "watch"));
            }
            let stream = crate::watch::watch(api.clone(), &r, &q, output).await?;
            let ct = match output {
                Output::Protobuf => "application/vnd.kubernetes.protobuf;stream=watch",
                _ => codec::JSON,
            };
            let body =
                StreamBody::new(stream.map(|b| Ok::<_, crate::proxy::BoxError>(Frame::data(b))));
            Ok(Response::builder()
                .status(200)
                .header(http::header::CONTENT_TYPE, ct)
                .header(http::header::CACHE_CONTROL, "no-cache, private")
                .body(BodyExt::boxed_unsync(body))
                .unwrap_or_else(|_| Response::new(full(Bytes::new()))))
        }
        (Method::GET, None, true) if q.watch => {
            // A watch on one object: a field selector on its name.
            let mut q2 = q.clone();
            let name = r.name.clone().unwrap_or_default();
            q2.field_selector = Some(match q.field_selector.as_deref() {
                Some(f) => format!("{f},metadata.name={name}"),
                None => format!("metadata.name={name}"),
            });
            let list_req = ResourceRequest {
                name: None,
                ..r.clone()
            };
            let stream = crate::watch::watch(api.clone(), &list_req, &q2, output).await?;
            let body =
                StreamBody::new(stream.map(|b| Ok::<_, crate::proxy::BoxError>(Frame::data(b))));
            Ok(Response::builder()
                .status(200)
                .header(http::header::CONTENT_TYPE, codec::JSON)
                .body(BodyExt::boxed_unsync(body))
                .unwrap_or_else(|_| Response::new(full(Bytes::new()))))
        }
        (Method::GET, None, false) => {
            if !verb_allowed("list") {
                return Err(ApiError::method_not_supported(info, "list"));
            }
            let list = rest::list(api, &r, &q).await?;
            if output == Output::Json && !q.pretty {
                // The common case (controllers, kube-rs): items go out as they are cached.
                return Ok(plain(200, codec::JSON, list.to_json()));
            }
            respond(info, output, &q, 200, &list.into_value(), &[])
        }
        (Method::GET, None | Some("status" | "approval"), true) => {
            let obj = rest::get(api, &r, &q).await?;
            respond(info, output, &q, 200, &obj, &[])
        }
        (Method::GET, Some("scale"), true) => {
            let scale = rest::get_scale(api, &r).await?;
            let (body, ct) = codec::encode(
                if output == Output::Protobuf {
                    Output::Protobuf
                } else {
                    Output::Json
                },
                &scale,
                q.pretty,
            )?;
            Ok(plain(200, ct, body))
        }
        // ------------------------------------------------ create
        (Method::POST, None, false) if crate::registry::reviews::is_review(info) => {
            let (mut decoded, _) = decode_write(req).await?;
            rest::check_type_meta(info, &mut decoded.value, &[])?;
            let answer = crate::registry::reviews::answer(
                api,
                info,
                r.namespace.as_deref(),
                decoded.value,
                user,
            )?;
            respond(info, output, &q, 201, &answer, &[])
        }
        (Method::POST, None, false) => {
            if !verb_allowed("create") {
                return Err(ApiError::method_not_supported(info, "create"));
            }
            let (mut decoded, _) = decode_write(req).await?;
            if crate::registry::certificates::certificate_signing_requests::is_csr(info) {
                crate::registry::certificates::certificate_signing_requests::set_requester(
                    &mut decoded.value,
                    user,
                );
            }
            let w = rest::create(api, &r, &q, decoded.value, &decoded.duplicates).await?;
            written(info, output, &q, w)
        }
        (Method::POST, Some("binding"), true) => {
            let (decoded, _) = decode_write(req).await?;
            let w = rest::bind(api, &r, &q, decoded.value).await?;
            written(info, Output::Json, &q, w)
        }
        (Method::POST, None, true) if info.plural == "pods" => {
            Err(ApiError::method_not_supported(info, "create"))
        }
        (Method::POST, Some("token"), true) if info.plural == "serviceaccounts" => {
            let (decoded, _) = decode_write(req).await?;
            let w = crate::registry::core::serviceaccounts::create_token(api, &r, decoded.value)
                .await?;
            let output = if output == Output::Protobuf {
                Output::Protobuf
            } else {
                Output::Json
            };
            written(info, output, &q, w)
        }
        (Method::POST, Some("eviction"), true) => {
            let (decoded, _) = decode_write(req).await?;
            let w = rest::evict(api, &r, decoded.value).await?;
            written(info, Output::Json, &q, w)
        }
        // ------------------------------------------------ update
        (Method::PUT, None | Some("status" | "finalize" | "approval"), true) => {
            let (decoded, _) = decode_write(req).await?;
            let w = rest::update(
                api,
                &r,
                &q,
                Change::Replace {
                    obj: decoded.value,
                    duplicates: decoded.duplicates,
                },
            )
            .await?;
            written(info, output, &q, w)
        }
        (Method::PUT, Some("scale"), true) => {
            let (decoded, _) = decode_write(req).await?;
            let w = rest::update_scale(
                api,
                &r,
                &q,
                Change::Replace {
                    obj: decoded.value,
                    duplicates: vec![],
                },
            )
            .await?;
            written(info, Output::Json, &q, w)
        }
        (Method::PATCH, None | Some("status" | "scale" | "approval"), true) => {
            let ct = codec::media_type(header(req.headers(), http::header::CONTENT_TYPE));
            let Some(patch_type) = PatchType::from_content_type(&ct) else {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {ct})"),
                ));
            };
            let patch = read_body(req.into_body()).await?;
            let change = Change::Patch { patch_type, patch };
            let w = if sub.as_deref() == Some("scale") {
                rest::update_scale(api, &r, &q, change).await?
            } else {
                rest::update(api, &r, &q, change).await?
            };
            written(info, output, &q, w)
        }
        // ------------------------------------------------ delete
        (Method::DELETE, None, true) => {
            let body = read_body(req.into_body()).await?;
            let options = if body.is_empty() {
                None
            } else {
                Some(
                    codec::decode_object(Some(codec::JSON), &body)
                        .or_else(|_| codec::decode_object(Some(codec::PROTOBUF), &body))?
                        .value,
                )
            };
            let opts = DeleteOptions::new(&q, options.as_ref())?;
            let w = rest::delete(api, &r, &opts).await?;
            written(info, output, &q, w)
        }
        (Method::DELETE, None, false) => {
            if !verb_allowed("deletecollection") {
                return Err(ApiError::method_not_supported(info, "deletecollection"));
            }
            let body = read_body(req.into_body()).await?;
            let options = if body.is_empty() {
                None
            } else {
                Some(codec::decode_object(Some(codec::JSON), &body)?.value)
            };
            let opts = DeleteOptions::new(&q, options.as_ref())?;
            let list = rest::delete_collection(api, &r, &q, &opts).await?;
            respond(info, output, &q, 200, &list, &[])
        }
        (m, _, _) => Err(ApiError::method_not_supported(
            info,
            &m.to_string().to_lowercase(),
        )),
    }
}
