//! The kubelet's client certificate (upstream `pkg/kubelet/certificate`): TLS bootstrap
//! with a bootstrap kubeconfig ([`bootstrap`]) and renewal before expiry ([`rotation`]).
//! Both ask for a certificate the same way, through a certificates.k8s.io/v1
//! CertificateSigningRequest for the `kubernetes.io/kube-apiserver-client-kubelet` signer
//! (CN `system:node:<name>`, O `system:nodes`), and wait — with a deadline — until it is
//! issued, denied or failed.

pub mod bootstrap;
pub mod rotation;

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

/// The signer of kubelet client certificates.
pub const SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The file the kubelet's client certificate and key live in, in `--cert-dir`.
pub const CURRENT_PEM: &str = "kubelet-client-current.pem";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("generating the private key or request: {0}")]
    Generate(#[source] rcgen::Error),
    #[error("creating the certificate signing request: {0}")]
    Create(#[source] kube::Error),
    #[error("watching certificate signing request {name}: {source}")]
    Watch {
        name: String,
        #[source]
        source: watcher::Error,
    },
    #[error("certificate signing request {name} was denied: {reason}")]
    Denied { name: String, reason: String },
    #[error("certificate signing request {name} failed: {reason}")]
    Failed { name: String, reason: String },
    #[error(
        "timed out after {timeout:?} waiting for certificate signing request {name} to be issued"
    )]
    Timeout { name: String, timeout: Duration },
    #[error("the watch of certificate signing request {name} ended")]
    WatchEnded { name: String },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("loading kubeconfig {path}: {reason}")]
    Kubeconfig { path: PathBuf, reason: String },
    #[error("building a client from {path}: {reason}")]
    Client { path: PathBuf, reason: String },
}

/// A new key and the PEM certificate request for node `node_name`.
pub fn node_request(node_name: &str) -> Result<(KeyPair, String), Error> {
    let key = KeyPair::generate().map_err(Error::Generate)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "system:nodes");
    params
        .distinguished_name
        .push(DnType::CommonName, format!("system:node:{node_name}"));
    let pem = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(Error::Generate)?;
    Ok((key, pem))
}

/// Usages of a kubelet client certificate with an ECDSA key (upstream drops key
/// encipherment for non-RSA keys).
pub const USAGES: &[&str] = &["digital signature", "client auth"];

/// Creates a CSR for `request_pem` and waits until it is issued (the certificate, PEM),
/// denied or failed, for at most `timeout`.
pub async fn request_certificate(
    client: kube::Client,
    request_pem: &str,
    timeout: Duration,
) -> Result<String, Error> {
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some("node-csr-".into()),
            ..ObjectMeta::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request_pem.as_bytes().to_vec()),
            signer_name: SIGNER.into(),
            usages: Some(USAGES.iter().map(|u| (*u).to_string()).collect()),
            ..CertificateSigningRequestSpec::default()
        },
        status: None,
    };
    let created = api
        .create(&PostParams::default(), &csr)
        .await
        .map_err(Error::Create)?;
    let name = created.metadata.name.clone().unwrap_or_default();
    tracing::info!(csr = %name, "waiting for the client certificate");
    let wait = wait_for_certificate(&api, &name);
    match tokio::time::timeout(timeout, wait).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout { name, timeout }),
    }
}

async fn wait_for_certificate(
    api: &Api<CertificateSigningRequest>,
    name: &str,
) -> Result<String, Error> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api.clone(), config).applied_objects().boxed();
    while let Some(csr) = stream.try_next().await.map_err(|source| Error::Watch {
        name: name.to_string(),
        source,
    })? {
        let status = csr.status.unwrap_or_default();
        for c in status.conditions.iter().flatten() {
            let reason = format!(
                "{}: {}",
                c.reason.as_deref().unwrap_or(""),
                c.message.as_deref().unwrap_or("")
            );
            if c.type_ == "Denied" {
                return Err(Error::Denied {
                    name: name.to_string(),
                    reason,
                });
            }
            if c.type_ == "Failed" {
                return Err(Error::Failed {
                    name: name.to_string(),
                    reason,
                });
            }
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            return Ok(String::from_utf8_lossy(&cert.0).into_owned());
        }
    }
    Err(Error::WatchEnded {
        name: name.to_string(),
    })
}

/// Writes `data` to `path` with mode 0600, atomically (a temporary file renamed over it).
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), Error> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// The validity (not before, not after; Unix seconds) of the first certificate in `pem`.
pub fn validity(pem: &[u8]) -> Option<(i64, i64)> {
    let der = api_types::validation::certificates::pem_block(pem, "CERTIFICATE").ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some((
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    ))
}

/// Whether the certificate in `pem` is valid now (and has a key with it).
pub fn usable(pem: &[u8]) -> bool {
    let now = jiff::Timestamp::now().as_second();
    let has_key = String::from_utf8_lossy(pem).contains("PRIVATE KEY-----");
    has_key && validity(pem).is_some_and(|(nb, na)| nb <= now && now < na)
}
