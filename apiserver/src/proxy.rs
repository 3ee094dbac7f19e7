//! The upgrade-aware proxy, as upstream's apimachinery `util/proxy.UpgradeAwareHandler`:
//! a request with `Connection: Upgrade` (exec, attach and port-forward over WebSocket or
//! SPDY) is forwarded to the backend, and when the backend switches protocols both
//! upgraded connections are spliced; any other answer goes back to the client as it came
//! (kubectl falls back from WebSocket to SPDY on it). Plain requests stream both ways, so
//! `kubectl logs -f` and proxied downloads see data as it arrives.

use crate::kubelet_client::{DialError, KubeletClient, Location, Transport};
use crate::status::{ApiError, ApiResult};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A response body that may fail mid-stream (the backend went away): hyper then aborts the
/// client's response instead of ending it as if it were complete.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The address of the client a request came from, for `X-Forwarded-For`.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// Why a request to a backend failed after dialling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("building the backend request: {0}")]
    Request(#[from] http::Error),
}

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1), and
/// so are not forwarded by a proxy.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether the request asks to switch protocols: a `Connection` header with the `upgrade`
/// token, as upstream's `httpstream.IsUpgradeRequest`.
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Opens an HTTP/1.1 connection to `location` and returns its request sender; the
/// connection runs in its own task (with upgrades) until both sides are done with it.
async fn connect(
    client: &KubeletClient,
    location: &Location,
    transport: Transport,
) -> Result<hyper::client::conn::http1::SendRequest<Body>, Error> {
    let io = client.dial(location, transport).await?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await?;
    let span = tracing::debug_span!("backend", %location);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "backend connection ended with an error");
            }
        },
        span,
    ));
    Ok(sender)
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

fn streamed(body: Incoming) -> Body {
    body.map_err(BoxError::from).boxed_unsync()
}

/// A GET without the client's headers, as upstream's `LocationStreamer` (pods/log).
pub async fn get(
    client: &KubeletClient,
    location: &Location,
    transport: Transport,
) -> Result<Response<Incoming>, Error> {
    let mut sender = connect(client, location, transport).await?;
    let req = Request::get(location.path_and_query())
        .header(http::header::HOST, location.authority())
        .body(empty())?;
    Ok(sender.send_request(req).await?)
}

/// Copies the end-to-end headers of a message.
fn copy_headers(from: &HeaderMap, to: &mut HeaderMap, keep_upgrade: bool) {
    // Headers a `Connection` header names are hop-by-hop too.
    let named: Vec<String> = from
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    for (name, value) in from {
        let n = name.as_str();
        let upgrade_header = n == "connection" || n == "upgrade";
        if upgrade_header && keep_upgrade {
            to.append(name.clone(), value.clone());
            continue;
        }
        if HOP_BY_HOP.contains(&n) || (named.iter().any(|h| h == n) && !keep_upgrade) {
            continue;
        }
        // The apiserver authenticated the client; its credentials stay here, as upstream's
        // authentication filter drops the Authorization header.
        if name == http::header::AUTHORIZATION || name == http::header::HOST {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

/// Appends the client's address to `X-Forwarded-For`, as upstream's proxies do.
fn forwarded_for(req_headers: &HeaderMap, client: Option<&ClientAddr>, to: &mut HeaderMap) {
    let Some(ClientAddr(addr)) = client else {
        return;
    };
    let prior: Vec<&str> = req_headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = if prior.is_empty() {
        addr.ip().to_string()
    } else {
        format!("{}, {}", prior.join(", "), addr.ip())
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        to.insert("x-forwarded-for", v);
    }
}

/// Proxies `req` to `location`. With `upgrade_required` (exec, attach, port-forward) a
/// request that does not ask to upgrade is refused, as upstream.
pub async fn proxy(
    client: &KubeletClient,
    location: &Location,
    transport: Transport,
    req: Request<Incoming>,
    upgrade_required: bool,
) -> ApiResult<Response<Body>> {
    if is_upgrade_request(req.headers()) {
        return proxy_upgrade(client, location, transport, req).await;
    }
    if upgrade_required {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let mut sender = connect(client, location, transport)
        .await
        .map_err(|e| proxy_error(location, &e))?;
    let (parts, body) = req.into_parts();
    let mut out = Request::builder()
        .method(parts.method.clone())
        .uri(location.path_and_query());
    if let Some(h) = out.headers_mut() {
        copy_headers(&parts.headers, h, false);
        forwarded_for(&parts.headers, parts.extensions.get(), h);
        if let Ok(v) = HeaderValue::from_str(&location.authority()) {
            h.insert(http::header::HOST, v);
        }
    }
    let out = out
        .body(streamed(body))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = sender
        .send_request(out)
        .await
        .map_err(|e| proxy_error(location, &Error::Http(e)))?;
    let (parts, body) = resp.into_parts();
    let mut back = Response::builder().status(parts.status);
    if let Some(h) = back.headers_mut() {
        copy_headers(&parts.headers, h, false);
    }
    back.body(streamed(body))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// A backend failure on a plain request, as upstream's reverse proxy reports it through
/// the error responder: a 500 with the transport's error.
fn proxy_error(location: &Location, e: &Error) -> ApiError {
    tracing::debug!(%location, error = %e, "proxying failed");
    ApiError::new(500, "", e.to_string())
}

async fn proxy_upgrade(
    client: &KubeletClient,
    location: &Location,
    transport: Transport,
    mut req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut sender = connect(client, location, transport).await.map_err(|e| {
        tracing::debug!(%location, error = %e, "dialing for upgrade failed");
        ApiError::new(500, "", format!("error dialing backend: {e}"))
    })?;
    let mut out = Request::builder()
        .method(req.method().clone())
        .uri(location.path_and_query());
    if let Some(h) = out.headers_mut() {
        copy_headers(req.headers(), h, true);
        forwarded_for(req.headers(), req.extensions().get(), h);
        if let Ok(v) = HeaderValue::from_str(&location.authority()) {
            h.insert(http::header::HOST, v);
        }
    }
    let out = out
        .body(empty())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut resp = sender.send_request(out).await.map_err(|e| {
        ApiError::new(
            500,
            "",
            format!("error proxying upgrade to {location}: {e}"),
        )
    })?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Echo the backend's refusal as it is, so the client can fall back (kubectl tries
        // WebSocket first and SPDY next).
        tracing::debug!(%location, status = %resp.status(), "backend refused the upgrade");
        let (parts, body) = resp.into_parts();
        let mut back = Response::builder().status(parts.status);
        if let Some(h) = back.headers_mut() {
            copy_headers(&parts.headers, h, false);
        }
        return back
            .body(streamed(body))
            .map_err(|e| ApiError::internal(e.to_string()));
    }
    let backend_upgrade = hyper::upgrade::on(&mut resp);
    let mut back = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    if let Some(h) = back.headers_mut() {
        for (name, value) in resp.headers() {
            h.append(name.clone(), value.clone());
        }
    }
    let span = tracing::debug_span!("upgraded", %location);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let (backend, client) = match tokio::join!(backend_upgrade, client_upgrade) {
                (Ok(b), Ok(c)) => (b, c),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::debug!(error = %e, "upgrade failed");
                    return;
                }
            };
            let mut backend = TokioIo::new(backend);
            let mut client = TokioIo::new(client);
            match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                Ok((up, down)) => tracing::debug!(up, down, "upgraded connection closed"),
                Err(e) => tracing::debug!(error = %e, "upgraded connection ended with an error"),
            }
        },
        span,
    ));
    back.body(empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_requests_are_recognised_by_the_connection_token() {
        let mut h = HeaderMap::new();
        assert!(!is_upgrade_request(&h));
        h.insert(
            http::header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(is_upgrade_request(&h));
        h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        assert!(!is_upgrade_request(&h));
    }

    #[test]
    fn hop_by_hop_and_credentials_are_not_forwarded() {
        let mut from = HeaderMap::new();
        from.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer x"),
        );
        from.insert(
            http::header::CONNECTION,
            HeaderValue::from_static("Upgrade, X-Hop"),
        );
        from.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
        from.insert("x-hop", HeaderValue::from_static("1"));
        from.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("v5.channel.k8s.io"),
        );
        from.insert(
            http::header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let mut plain = HeaderMap::new();
        copy_headers(&from, &mut plain, false);
        assert_eq!(
            plain.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            vec!["sec-websocket-protocol"]
        );
        let mut upgrade = HeaderMap::new();
        copy_headers(&from, &mut upgrade, true);
        assert!(upgrade.contains_key(http::header::UPGRADE));
        assert!(upgrade.contains_key(http::header::CONNECTION));
        assert!(upgrade.contains_key("x-hop"));
        assert!(!upgrade.contains_key(http::header::AUTHORIZATION));
        assert!(!upgrade.contains_key(http::header::TRANSFER_ENCODING));
    }
}
