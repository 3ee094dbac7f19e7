//! TLS to etcd, as kube-apiserver's `--etcd-cafile`, `--etcd-certfile` and
//! `--etcd-keyfile` set it up: a CA bundle that verifies etcd's serving certificates and a
//! client certificate for etcd's `--client-cert-auth`.
//!
//! The files are read and checked here, with rustls, so that a wrong file is a clear error
//! at startup: tonic skips CA certificates it cannot parse and would report a bad key only
//! as a failed connection on the first request.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use etcd_client::{Certificate, Identity, TlsOptions};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The TLS files for `https://` etcd servers; plain `http://` servers ignore them, as
/// upstream's etcd client does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// PEM CA certificates that verify etcd's serving certificate (`--etcd-cafile`);
    /// without it, the system's trusted roots do.
    pub ca_file: Option<PathBuf>,
    /// A PEM client certificate, with any intermediates after it (`--etcd-certfile`).
    pub cert_file: Option<PathBuf>,
    /// The PEM private key of `cert_file` (`--etcd-keyfile`).
    pub key_file: Option<PathBuf>,
}

/// A TLS file that cannot be used.
#[derive(thiserror::Error, Debug)]
pub enum TlsError {
    /// A client certificate without its key, or a key without its certificate.
    #[error("an etcd client certificate and its key must be given together")]
    IncompletePair,

    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// A file holds no PEM certificate, or one that does not parse.
    #[error("{path}: {reason}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A file holds no PEM private key, or one that does not parse.
    #[error("{path}: {reason}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The client certificate and key are not a pair.
    #[error("{cert} and {key} are not a certificate and its key: {reason}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        reason: String,
    },
}

impl EtcdTls {
    /// Whether no file is given.
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none()
    }

    /// Reads and checks the files: the CA file holds parseable certificates, the
    /// certificate file a certificate chain and the key file a private key of the
    /// chain's first certificate.
    pub fn check(&self) -> Result<(), TlsError> {
        self.load().map(drop)
    }

    /// The etcd client's TLS options for these files.
    pub(crate) fn client_options(&self) -> Result<TlsOptions, TlsError> {
        let files = self.load()?;
        // Go's gRPC client does not insist on ALPN; some etcd builds answer without it.
        let mut options = TlsOptions::new().assume_http2(true);
        options = match files.ca {
            Some(pem) => options.ca_certificate(Certificate::from_pem(pem)),
            None => options.with_native_roots(),
        };
        if let Some((cert, key)) = files.identity {
            options = options.identity(Identity::from_pem(cert, key));
        }
        Ok(options)
    }

    fn load(&self) -> Result<Files, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let ca = match &self.ca_file {
            Some(path) => {
                let pem = read(path)?;
                for der in certificates(path, &pem)? {
                    roots.add(der).map_err(|err| TlsError::BadCertificate {
                        path: path.clone(),
                        reason: format!("not a usable CA certificate: {err}"),
                    })?;
                }
                Some(pem)
            }
            None => None,
        };
        let identity = match (&self.cert_file, &self.key_file) {
            (None, None) => None,
            (Some(cert_path), Some(key_path)) => {
                let cert = read(cert_path)?;
                let key = read(key_path)?;
                let chain = certificates(cert_path, &cert)?;
                let private_key = private_key(key_path, &key)?;
                // rustls checks that the key belongs to the certificate.
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|err| TlsError::Mismatch {
                        cert: cert_path.clone(),
                        key: key_path.clone(),
                        reason: err.to_string(),
                    })?
                    .with_root_certificates(roots)
                    .with_client_auth_cert(chain, private_key)
                    .map_err(|err| TlsError::Mismatch {
                        cert: cert_path.clone(),
                        key: key_path.clone(),
                        reason: err.to_string(),
                    })?;
                Some((cert, key))
            }
            _ => return Err(TlsError::IncompletePair),
        };
        Ok(Files { ca, identity })
    }
}

/// The PEM contents of the files that are given.
struct Files {
    ca: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::BadCertificate {
            path: path.to_owned(),
            reason: format!("not PEM: {err}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::BadCertificate {
            path: path.to_owned(),
            reason: "no PEM CERTIFICATE block".to_owned(),
        });
    }
    Ok(certs)
}

fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    match rustls_pemfile::private_key(&mut &pem[..]) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(TlsError::BadKey {
            path: path.to_owned(),
            reason: "no PEM private key block".to_owned(),
        }),
        Err(err) => Err(TlsError::BadKey {
            path: path.to_owned(),
            reason: format!("not PEM: {err}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, data: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, data).unwrap();
        path
    }

    #[test]
    fn checks_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .signed_by(&key, &rcgen::Issuer::new(ca_params, &ca_key))
            .unwrap();
        let other_key = rcgen::KeyPair::generate().unwrap();

        let ca_file = write(dir.path(), "ca.crt", &ca.pem());
        let cert_file = write(dir.path(), "client.crt", &cert.pem());
        let key_file = write(dir.path(), "client.key", &key.serialize_pem());
        let other_key_file = write(dir.path(), "other.key", &other_key.serialize_pem());
        let garbage = write(dir.path(), "garbage", "not pem at all\n");
        let good = EtcdTls {
            ca_file: Some(ca_file.clone()),
            cert_file: Some(cert_file.clone()),
            key_file: Some(key_file.clone()),
        };
        good.check().unwrap();
        good.client_options().unwrap();
        assert!(EtcdTls::default().is_empty());
        EtcdTls::default().check().unwrap();

        let err = |tls: EtcdTls| tls.check().unwrap_err().to_string();
        assert_eq!(
            err(EtcdTls {
                key_file: None,
                ..good.clone()
            }),
            "an etcd client certificate and its key must be given together"
        );
        let missing = dir.path().join("missing.crt");
        assert_eq!(
            err(EtcdTls {
                ca_file: Some(missing.clone()),
                ..good.clone()
            }),
            format!(
                "reading {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
        assert_eq!(
            err(EtcdTls {
                ca_file: Some(garbage.clone()),
                ..good.clone()
            }),
            format!("{}: no PEM CERTIFICATE block", garbage.display())
        );
        assert_eq!(
            err(EtcdTls {
                key_file: Some(garbage.clone()),
                ..good.clone()
            }),
            format!("{}: no PEM private key block", garbage.display())
        );
        // A key file that holds a certificate is no key either.
        assert_eq!(
            err(EtcdTls {
                key_file: Some(cert_file.clone()),
                ..good.clone()
            }),
            format!("{}: no PEM private key block", cert_file.display())
        );
        let mismatch = err(EtcdTls {
            key_file: Some(other_key_file.clone()),
            ..good.clone()
        });
        assert!(
            mismatch.starts_with(&format!(
                "{} and {} are not a certificate and its key: ",
                cert_file.display(),
                other_key_file.display()
            )),
            "{mismatch}"
        );
    }
}
