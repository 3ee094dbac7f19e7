//! Client certificate rotation (`--rotate-certificates`, upstream's certificate manager in
//! `k8s.io/client-go/util/certificate`): the kubelet's client presents whatever certificate
//! is current (a rustls client-certificate resolver, so new connections pick up a renewed
//! certificate without a restart); at a jittered 70–90% of the certificate's lifetime a
//! new key and CSR are sent with the kubelet's own identity (auto-approved as
//! *selfnodeclient*), and the issued certificate replaces `kubelet-client-current.pem`.
//! Failures are retried with a capped exponential backoff while the old certificate lasts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use component_base::shutdown::Shutdown;
use parking_lot::RwLock;
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use super::{node_request, request_certificate, write_private, Error};

/// How long a renewal waits for its certificate.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The longest pause between failed renewals.
const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("{path} holds no certificate and private key: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error(transparent)]
    Request(#[from] Error),
    #[error("loading kubeconfig {path}: {reason}")]
    Kubeconfig { path: PathBuf, reason: String },
}

/// The client certificate the kubelet presents, replaced on rotation.
#[derive(Debug)]
pub struct CurrentCert {
    path: PathBuf,
    key: RwLock<Arc<CertifiedKey>>,
}

fn certified_key(path: &Path, pem: &[u8]) -> Result<CertifiedKey, RotationError> {
    let bad = |reason: String| RotationError::Pem {
        path: path.to_path_buf(),
        reason,
    };
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block".into()));
    }
    let key = rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| bad(e.to_string()))?
        .ok_or_else(|| bad("no PRIVATE KEY block".into()))?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| bad(e.to_string()))?;
    Ok(CertifiedKey::new(certs, signing))
}

impl CurrentCert {
    /// Loads the certificate and key from `path` (`kubelet-client-current.pem`).
    pub fn load(path: &Path) -> Result<CurrentCert, RotationError> {
        let pem = std::fs::read(path).map_err(|e| RotationError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(CurrentCert {
            path: path.to_path_buf(),
            key: RwLock::new(Arc::new(certified_key(path, &pem)?)),
        })
    }

    /// Replaces the certificate with `pem` after writing it to the file.
    fn replace(&self, pem: &[u8]) -> Result<(), RotationError> {
        let key = certified_key(&self.path, pem)?;
        write_private(&self.path, pem)?;
        *self.key.write() = Arc::new(key);
        Ok(())
    }

    /// The DER of the certificate now presented.
    pub fn certificate_der(&self) -> Vec<u8> {
        self.key
            .read()
            .cert
            .first()
            .map(|c| c.to_vec())
            .unwrap_or_default()
    }
}

impl ResolvesClientCert for CurrentCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.key.read().clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A kube client from `kubeconfig` that presents the rotating certificate in `pem_path`.
pub async fn client(
    kubeconfig: &Path,
    pem_path: &Path,
) -> Result<(kube::Client, Arc<CurrentCert>), RotationError> {
    let bad = |reason: String| RotationError::Kubeconfig {
        path: kubeconfig.to_path_buf(),
        reason,
    };
    let current = Arc::new(CurrentCert::load(pem_path)?);
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| bad(e.to_string()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| bad(e.to_string()))?;
    let resolver = current.clone();
    let (client, _) = component_base::options::http2_failover_client(config, move |tls| {
        tls.client_auth_cert_resolver = resolver;
    })
    .map_err(|e| bad(e.to_string()))?;
    Ok((client, current))
}

/// When to renew a certificate valid from `not_before` to `not_after` (Unix seconds):
/// `not_before` + (70% + `jitter` × 20%) of its lifetime, `jitter` in [0, 1).
pub fn rotation_deadline(not_before: i64, not_after: i64, jitter: f64) -> i64 {
    let lifetime = (not_after - not_before).max(0) as f64;
    not_before + (lifetime * (0.7 + 0.2 * jitter.clamp(0.0, 1.0))).round() as i64
}

/// Renews the kubelet's client certificate before it expires.
pub struct Rotator {
    pub client: kube::Client,
    pub current: Arc<CurrentCert>,
    pub node_name: String,
}

impl Rotator {
    /// Requests a new certificate now and makes it current.
    pub async fn rotate_once(&self) -> Result<(), RotationError> {
        let (key, request) = node_request(&self.node_name)?;
        let mut pem = request_certificate(self.client.clone(), &request, REQUEST_TIMEOUT).await?;
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
        pem.push_str(&key.serialize_pem());
        self.current.replace(pem.as_bytes())?;
        tracing::info!(node = %self.node_name, "rotated the client certificate");
        Ok(())
    }

    /// Rotates at each deadline until shutdown.
    pub async fn run(self, mut shutdown: Shutdown) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let der = self.current.certificate_der();
            let wait = match x509_parser::parse_x509_certificate(&der) {
                Ok((_, cert)) => {
                    let jitter: f64 = rand::random();
                    let deadline = rotation_deadline(
                        cert.validity().not_before.timestamp(),
                        cert.validity().not_after.timestamp(),
                        jitter,
                    );
                    let now = jiff::Timestamp::now().as_second();
                    Duration::from_secs(u64::try_from(deadline - now).unwrap_or(0))
                }
                Err(_) => Duration::ZERO,
            };
            tracing::info!(
                in_seconds = wait.as_secs(),
                "next client certificate rotation"
            );
            tokio::select! {
                () = shutdown.signaled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            match self.rotate_once().await {
                Ok(()) => backoff = Duration::from_secs(1),
                Err(e) => {
                    tracing::warn!(error = %e, "rotating the client certificate failed");
                    tokio::select! {
                        () = shutdown.signaled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_is_between_70_and_90_percent_of_the_lifetime() {
        assert_eq!(rotation_deadline(1000, 2000, 0.0), 1700);
        assert_eq!(rotation_deadline(1000, 2000, 0.5), 1800);
        assert_eq!(rotation_deadline(1000, 2000, 1.0), 1900);
        assert_eq!(rotation_deadline(1000, 2000, 7.0), 1900);
        assert_eq!(rotation_deadline(2000, 1000, 0.5), 2000);
    }
}
