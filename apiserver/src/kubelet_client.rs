//! The apiserver's client for kubelets, as upstream's `pkg/kubelet/client`: where a node's
//! kubelet listens (the preferred node address type and
//! `status.daemonEndpoints.kubeletEndpoint.Port`, default 10250) and how to reach it (TLS
//! with `--kubelet-client-certificate`/`--kubelet-client-key`, verified against
//! `--kubelet-certificate-authority`, or not verified at all when no CA is given, as
//! upstream's InsecureSkipVerify), dialled within `--kubelet-timeout`.

use crate::status::{ApiError, ApiResult};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The kubelet port when a node does not report one (upstream's `--kubelet-port`).
pub const DEFAULT_KUBELET_PORT: u16 = 10250;

/// Upstream's default `--kubelet-preferred-address-types`.
pub const DEFAULT_PREFERRED_ADDRESS_TYPES: &[&str] = &[
    "Hostname",
    "InternalDNS",
    "InternalIP",
    "ExternalDNS",
    "ExternalIP",
];

/// The node address types a Node may report.
pub const NODE_ADDRESS_TYPES: &[&str] = &[
    "Hostname",
    "InternalIP",
    "ExternalIP",
    "InternalDNS",
    "ExternalDNS",
];

/// The `--kubelet-*` flags, validated.
#[derive(Debug, Clone)]
pub struct KubeletClientConfig {
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub certificate_authority: Option<PathBuf>,
    pub preferred_address_types: Vec<String>,
    /// Upstream's `--kubelet-timeout`: bounds dialling a kubelet (TCP and TLS), never a
    /// stream.
    pub timeout: Duration,
}

impl Default for KubeletClientConfig {
    fn default() -> Self {
        KubeletClientConfig {
            client_certificate: None,
            client_key: None,
            certificate_authority: None,
            preferred_address_types: DEFAULT_PREFERRED_ADDRESS_TYPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no certificate in {0}")]
    NoCertificate(PathBuf),
    #[error("no private key in {0}")]
    NoKey(PathBuf),
    #[error("kubelet client TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a backend listens, as upstream's `url.URL` scheme and host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// The path, starting with `/`.
    pub path: String,
    /// The encoded query, without `?`; empty for none.
    pub query: String,
}

impl Location {
    /// `host:port`, with an IPv6 host in brackets.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn path_and_query(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(
            f,
            "{scheme}://{}{}",
            self.authority(),
            self.path_and_query()
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Which TLS settings a connection uses: the kubelet's (client certificate, CA) or the
/// plain proxy transport of pods/proxy and services/proxy (no client certificate, the
/// backend's certificate not verified, as upstream's proxy transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Kubelet,
    Proxy,
}

/// An established backend connection, TLS or not.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Why a backend could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("dial tcp {addr}: i/o timeout")]
    Timeout { addr: String },
    #[error("dial tcp {addr}: {}", go_net_error(.source))]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tls: {0}")]
    Handshake(#[source] std::io::Error),
    #[error("invalid server name {0:?}")]
    ServerName(String),
}

/// A connect error worded as Go's net package words it, so messages match upstream's.
fn go_net_error(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "connect: connection refused".into(),
        ErrorKind::TimedOut => "i/o timeout".into(),
        ErrorKind::HostUnreachable => "connect: no route to host".into(),
        ErrorKind::NetworkUnreachable => "connect: network is unreachable".into(),
        _ => e.to_string(),
    }
}

/// Dials kubelets and proxied backends.
pub struct KubeletClient {
    kubelet_tls: Arc<rustls::ClientConfig>,
    proxy_tls: Arc<rustls::ClientConfig>,
    preferred_address_types: Vec<String>,
    timeout: Duration,
}

impl KubeletClient {
    pub fn new(config: &KubeletClientConfig) -> Result<KubeletClient> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match &config.certificate_authority {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certs(ca)? {
                    roots.add(cert)?;
                }
                builder.with_root_certificates(roots)
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider.clone()))),
        };
        let mut kubelet_tls = match (&config.client_certificate, &config.client_key) {
            (Some(cert), Some(key)) => {
                builder.with_client_auth_cert(read_certs(cert)?, read_key(key)?)?
            }
            _ => builder.with_no_client_auth(),
        };
        // Upgrades (exec, attach, port-forward) need HTTP/1.1.
        kubelet_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut proxy_tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth();
        proxy_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(KubeletClient {
            kubelet_tls: Arc::new(kubelet_tls),
            proxy_tls: Arc::new(proxy_tls),
            preferred_address_types: config.preferred_address_types.clone(),
            timeout: config.timeout,
        })
    }

    /// Where the kubelet of `node` (a Node object) listens, as upstream's
    /// `NodeConnectionInfoGetter`.
    pub fn connection_info(&self, node: &Value) -> ApiResult<(String, u16)> {
        let host = preferred_address(node, &self.preferred_address_types)?;
        let port = node
            .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
            .and_then(Value::as_i64)
            .filter(|p| (1..=i64::from(u16::MAX)).contains(p))
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(DEFAULT_KUBELET_PORT);
        Ok((host, port))
    }

    /// Opens a connection to `location` within `--kubelet-timeout`.
    pub async fn dial(
        &self,
        location: &Location,
        transport: Transport,
    ) -> Result<Box<dyn Io>, DialError> {
        let addr = location.authority();
        let tcp = match tokio::time::timeout(
            self.timeout,
            TcpStream::connect((location.host.as_str(), location.port)),
        )
        .await
        {
            Err(_) => return Err(DialError::Timeout { addr }),
            Ok(Err(source)) => return Err(DialError::Connect { addr, source }),
            Ok(Ok(t)) => t,
        };
        let _ = tcp.set_nodelay(true);
        if location.scheme == Scheme::Http {
            return Ok(Box::new(tcp));
        }
        let config = match transport {
            Transport::Kubelet => self.kubelet_tls.clone(),
            Transport::Proxy => self.proxy_tls.clone(),
        };
        let name = ServerName::try_from(location.host.clone())
            .map_err(|_| DialError::ServerName(location.host.clone()))?;
        let connector = tokio_rustls::TlsConnector::from(config);
        match tokio::time::timeout(self.timeout, connector.connect(name, tcp)).await {
            Err(_) => Err(DialError::Timeout { addr }),
            Ok(Err(e)) => Err(DialError::Handshake(e)),
            Ok(Ok(tls)) => Ok(Box::new(tls)),
        }
    }
}

/// The first address of the first preferred type the node reports, as upstream's
/// `GetPreferredNodeAddress`.
pub fn preferred_address(node: &Value, preferred: &[String]) -> ApiResult<String> {
    let addresses: Vec<(&str, &str)> = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| Some((x.get("type")?.as_str()?, x.get("address")?.as_str()?)))
                .collect()
        })
        .unwrap_or_default();
    for want in preferred {
        if let Some((_, address)) = addresses.iter().find(|(t, _)| t == want) {
            return Ok((*address).to_string());
        }
    }
    let known: Vec<String> = addresses
        .iter()
        .map(|(t, a)| format!("{{{t} {a}}}"))
        .collect();
    // Upstream's NoMatchError is no API status: a 500 with its text.
    Err(ApiError::new(
        500,
        "",
        format!(
            "no preferred addresses found; known addresses: [{}]",
            known.join(" ")
        ),
    ))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(Error::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<rustls::pki_types::PrivateKeyDer<'static>> {
    let pem = read(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| Error::NoKey(path.to_path_buf()))
}

/// Accepts any server certificate (signatures are still checked), as upstream's
/// InsecureSkipVerify when `--kubelet-certificate-authority` is not given.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(addresses: Value, port: Option<i64>) -> Value {
        let mut n = json!({ "status": { "addresses": addresses } });
        if let Some(p) = port {
            n["status"]["daemonEndpoints"] = json!({ "kubeletEndpoint": { "Port": p } });
        }
        n
    }

    #[test]
    fn preferred_address_follows_the_flag_order() {
        let n = node(
            json!([
                { "type": "InternalIP", "address": "10.0.0.5" },
                { "type": "Hostname", "address": "pi-1" },
            ]),
            None,
        );
        let defaults: Vec<String> = DEFAULT_PREFERRED_ADDRESS_TYPES
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(preferred_address(&n, &defaults).unwrap(), "pi-1");
        let ip_first = vec!["InternalIP".to_string(), "Hostname".to_string()];
        assert_eq!(preferred_address(&n, &ip_first).unwrap(), "10.0.0.5");
        let none = preferred_address(&n, &["ExternalIP".to_string()]).unwrap_err();
        assert_eq!(none.code, 500);
        assert!(
            none.message
                .contains("no preferred addresses found; known addresses: [{InternalIP 10.0.0.5} {Hostname pi-1}]"),
            "{}",
            none.message
        );
    }

    #[test]
    fn kubelet_port_defaults_to_10250() {
        let client = KubeletClient::new(&KubeletClientConfig::default()).unwrap();
        let addrs = json!([{ "type": "InternalIP", "address": "10.0.0.5" }]);
        assert_eq!(
            client.connection_info(&node(addrs.clone(), None)).unwrap(),
            ("10.0.0.5".to_string(), 10250)
        );
        assert_eq!(
            client
                .connection_info(&node(addrs.clone(), Some(0)))
                .unwrap(),
            ("10.0.0.5".to_string(), 10250)
        );
        assert_eq!(
            client.connection_info(&node(addrs, Some(12345))).unwrap(),
            ("10.0.0.5".to_string(), 12345)
        );
    }

    #[test]
    fn locations_print_as_urls() {
        let l = Location {
            scheme: Scheme::Https,
            host: "fd00::1".into(),
            port: 10250,
            path: "/containerLogs/default/p/c".into(),
            query: "follow=true".into(),
        };
        assert_eq!(
            l.to_string(),
            "https://[fd00::1]:10250/containerLogs/default/p/c?follow=true"
        );
    }

    /// A CA, and a certificate it signed for `name` with this extended key usage.
    fn signed(
        ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
        name: &str,
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn new_ca() -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
    }

    /// With `--kubelet-certificate-authority` the kubelet's serving certificate is verified,
    /// and the client certificate is presented to a kubelet that asks for one.
    #[tokio::test]
    async fn kubelet_tls_verifies_the_server_and_presents_the_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca();
        let (server_cert, server_key) =
            signed(&ca, "127.0.0.1", rcgen::ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) = signed(
            &ca,
            "system:kube-apiserver",
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        );
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let ca_path = write("ca.crt", &ca.pem());
        let config = KubeletClientConfig {
            client_certificate: Some(write("client.crt", &client_cert)),
            client_key: Some(write("client.key", &client_key)),
            certificate_authority: Some(ca_path.clone()),
            ..Default::default()
        };

        // A kubelet that requires a client certificate signed by the CA.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(read_certs(&ca_path).unwrap().remove(0)).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                read_certs(&write("server.crt", &server_cert)).unwrap(),
                read_key(&write("server.key", &server_key)).unwrap(),
            )
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let kubelet = tokio::spawn(async move {
            let mut presented_certs = Vec::new();
            for _ in 0..2 {
                let (tcp, _) = listener.accept().await.unwrap();
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let presented = tls.get_ref().1.peer_certificates().map(<[_]>::len);
                    presented_certs.push(presented);
                }
            }
            presented_certs
        });
        let location = Location {
            scheme: Scheme::Https,
            host: "127.0.0.1".into(),
            port,
            path: "/healthz".into(),
            query: String::new(),
        };
        let client = KubeletClient::new(&config).unwrap();
        assert!(client.dial(&location, Transport::Kubelet).await.is_ok());
        // Another CA does not trust this kubelet's certificate.
        let other = KubeletClientConfig {
            certificate_authority: Some(write("other-ca.crt", &new_ca().pem())),
            ..Default::default()
        };
        let err = KubeletClient::new(&other)
            .unwrap()
            .dial(&location, Transport::Kubelet)
            .await
            .err()
            .expect("an untrusted kubelet certificate is refused");
        assert!(matches!(err, DialError::Handshake(_)), "{err}");
        assert_eq!(kubelet.await.unwrap(), vec![Some(1)]);
    }

    #[tokio::test]
    async fn dial_errors_read_like_go() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let client = KubeletClient::new(&KubeletClientConfig::default()).unwrap();
        let location = Location {
            scheme: Scheme::Https,
            host: "127.0.0.1".into(),
            port,
            path: "/".into(),
            query: String::new(),
        };
        let err = client
            .dial(&location, Transport::Kubelet)
            .await
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            format!("dial tcp 127.0.0.1:{port}: connect: connection refused")
        );
    }

    #[test]
    fn missing_files_are_clear_errors() {
        let config = KubeletClientConfig {
            certificate_authority: Some("/nonexistent/ca.crt".into()),
            ..Default::default()
        };
        let err = KubeletClient::new(&config).err().unwrap();
        assert!(err.to_string().starts_with("reading /nonexistent/ca.crt"));
    }
}
