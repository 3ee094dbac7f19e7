//! Serving certificates: the files given by flags, or a self-signed CA and serving pair
//! written to `--cert-dir` on first start (as upstream's self-signed fallback). With
//! `--client-ca-file` the server requests (does not require) a client certificate and
//! accepts only one that chains to that CA and is within its validity, as upstream's
//! `tls.VerifyClientCertIfGiven`; the x509 authenticator then reads the user from it.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("building the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("--client-ca-file {path}: {reason}")]
    ClientCa { path: PathBuf, reason: String },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    component_base::files::write_with_mode(path, data, mode).map_err(|source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `ca.crt`, `apiserver.crt` (serving cert then CA) and `apiserver.key` into
/// `cert_dir` unless `apiserver.crt` and `apiserver.key` exist. Returns their paths.
pub fn ensure_self_signed(
    cert_dir: &Path,
    ips: &[IpAddr],
    dns: &[String],
) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = cert_dir.join("apiserver.crt");
    let key_path = cert_dir.join("apiserver.key");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("pikube-ca@{}", jiff::Timestamp::now().as_second()),
    );
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_after = rcgen::date_time_ymd(2125, 1, 1);
    let ca_key = rcgen::KeyPair::generate()?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let mut names: Vec<String> = dns.to_vec();
    names.extend(ips.iter().map(|ip| ip.to_string()));
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.not_after = rcgen::date_time_ymd(2125, 1, 1);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;

    write(&cert_dir.join("ca.crt"), ca.pem().as_bytes(), 0o644)?;
    write(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write(
        &cert_path,
        format!("{}{}", cert.pem(), ca.pem()).as_bytes(),
        0o644,
    )?;
    Ok((cert_path, key_path))
}

/// The verifier of client certificates signed by the CAs in `path` (PEM, one or more);
/// clients without a certificate are let through to the other authenticators.
fn client_verifier(
    path: &Path,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let bad = |reason: String| TlsError::ClientCa {
        path: path.to_path_buf(),
        reason,
    };
    let pem = read(path)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| bad(e.to_string()))
}

/// A rustls server configuration from PEM files, offering HTTP/2 and HTTP/1.1, verifying
/// client certificates against `client_ca` when given.
pub fn server_config(
    cert_path: &Path,
    key_path: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_pem = read(cert_path)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    }
    let key_pem = read(key_path)?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| TlsError::NoKey {
            path: key_path.to_path_buf(),
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca, &provider)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
