//! csrsigning: signs approved CertificateSigningRequests of the built-in signers
//! (`kubernetes.io/kube-apiserver-client-kubelet`, `kubernetes.io/kube-apiserver-client`,
//! `kubernetes.io/kubelet-serving`) with the cluster CA of `--cluster-signing-cert-file` /
//! `--cluster-signing-key-file`, as upstream's `csrsigning` controller: a request that is
//! not what its signer issues gets a `Failed` condition (`SignerValidationFailure`); the
//! certificate lasts `--cluster-signing-duration`, or the request's `expirationSeconds`
//! if shorter, and never beyond the CA's own expiry; it is backdated five minutes for
//! clock skew.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::ResourceExt;
use rcgen::{
    CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use time::OffsetDateTime;
use tracing::{info, warn};

use super::{
    is_approved, is_denied, is_failed, is_issued, parse_request, validate_apiserver_client,
    validate_kubelet_client, validate_kubelet_serving, Request, KUBELET_SERVING,
    KUBE_APISERVER_CLIENT, KUBE_APISERVER_CLIENT_KUBELET,
};
use crate::controllers::Context;

pub const NAME: &str = "csrsigning";

/// Upstream backdates certificates to tolerate clock skew between nodes.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a PEM CA certificate: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{path} is not a PEM private key: {source}")]
    BadKey {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("signing {csr}: {source}")]
    Sign {
        csr: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("writing the status of {csr}: {source}")]
    Status {
        csr: String,
        #[source]
        source: kube::Error,
    },
}

/// The CA that signs: its key, and its own validity (a leaf never outlives it).
pub struct SigningAuthority {
    issuer: Issuer<'static, KeyPair>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for SigningAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningAuthority")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl SigningAuthority {
    /// Loads the CA certificate and key (PEM; the key PKCS#8 as pikubeadm writes it).
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<SigningAuthority, Error> {
        let cert_pem = read(cert_file)?;
        let key_pem = read(key_file)?;
        let bad = |reason: String| Error::BadCertificate {
            path: cert_file.to_path_buf(),
            reason,
        };
        let der =
            api_types::validation::certificates::pem_block(cert_pem.as_bytes(), "CERTIFICATE")
                .map_err(bad)?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| bad(e.to_string()))?;
        if !cert.is_ca() {
            return Err(bad("not a CA certificate".into()));
        }
        let to_time = |t: x509_parser::time::ASN1Time| {
            OffsetDateTime::from_unix_timestamp(t.timestamp()).unwrap_or(OffsetDateTime::UNIX_EPOCH)
        };
        let not_before = to_time(cert.validity().not_before);
        let not_after = to_time(cert.validity().not_after);
        let key = KeyPair::from_pem(&key_pem).map_err(|source| Error::BadKey {
            path: key_file.to_path_buf(),
            source,
        })?;
        let issuer = Issuer::from_ca_cert_der(&der.as_slice().into(), key)
            .map_err(|e| bad(e.to_string()))?;
        Ok(SigningAuthority {
            issuer,
            not_before,
            not_after,
        })
    }

    /// Issues the certificate `req` asks for with `usages`, valid for `ttl` from now (PEM).
    pub fn sign(
        &self,
        req: &Request,
        usages: &[String],
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<String, rcgen::Error> {
        let csr = CertificateSigningRequestParams::from_pem(&req.pem)?;
        let mut params = csr.params;
        params.is_ca = IsCa::ExplicitNoCa;
        params.not_before = (now - BACKDATE).max(self.not_before);
        params.not_after = (now + ttl).min(self.not_after);
        params.use_authority_key_identifier_extension = true;
        let mut serial = [0u8; 16];
        rand::Rng::fill(&mut rand::rng(), &mut serial[..]);
        serial[0] &= 0x7f;
        params.serial_number = Some(SerialNumber::from(serial.to_vec()));
        params.key_usages = Vec::new();
        params.extended_key_usages = Vec::new();
        for u in usages {
            match key_usage(u) {
                Some(Usage::Key(k)) if !params.key_usages.contains(&k) => params.key_usages.push(k),
                Some(Usage::Extended(e)) if !params.extended_key_usages.contains(&e) => {
                    params.extended_key_usages.push(e);
                }
                _ => {}
            }
        }
        Ok(params.signed_by(&csr.public_key, &self.issuer)?.pem())
    }
}

enum Usage {
    Key(KeyUsagePurpose),
    Extended(ExtendedKeyUsagePurpose),
}

/// Upstream's `KeyUsage` strings as x509 key usages and extended key usages.
fn key_usage(usage: &str) -> Option<Usage> {
    use ExtendedKeyUsagePurpose as E;
    use KeyUsagePurpose as K;
    Some(match usage {
        "signing" | "digital signature" => Usage::Key(K::DigitalSignature),
        "content commitment" => Usage::Key(K::ContentCommitment),
        "key encipherment" => Usage::Key(K::KeyEncipherment),
        "key agreement" => Usage::Key(K::KeyAgreement),
        "data encipherment" => Usage::Key(K::DataEncipherment),
        "cert sign" => Usage::Key(K::KeyCertSign),
        "crl sign" => Usage::Key(K::CrlSign),
        "encipher only" => Usage::Key(K::EncipherOnly),
        "decipher only" => Usage::Key(K::DecipherOnly),
        "any" => Usage::Extended(E::Any),
        "server auth" => Usage::Extended(E::ServerAuth),
        "client auth" => Usage::Extended(E::ClientAuth),
        "code signing" => Usage::Extended(E::CodeSigning),
        "email protection" | "s/mime" => Usage::Extended(E::EmailProtection),
        "ipsec end system" => Usage::Extended(E::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 5])),
        "ipsec tunnel" => Usage::Extended(E::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 6])),
        "ipsec user" => Usage::Extended(E::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 7])),
        "timestamping" => Usage::Extended(E::TimeStamping),
        "ocsp signing" => Usage::Extended(E::OcspSigning),
        "microsoft sgc" => Usage::Extended(E::Other(vec![1, 3, 6, 1, 4, 1, 311, 10, 3, 3])),
        "netscape sgc" => Usage::Extended(E::Other(vec![2, 16, 840, 1, 113_730, 4, 1])),
        _ => return None,
    })
}

/// The lifetime of a certificate: the signer's, or the request's `expirationSeconds` if
/// shorter (never under the ten minutes validation allows).
pub fn lifetime(csr: &CertificateSigningRequest, signing_duration: Duration) -> Duration {
    match csr.spec.expiration_seconds {
        Some(s) => {
            Duration::from_secs(u64::try_from(s).unwrap_or(0).max(600)).min(signing_duration)
        }
        None => signing_duration,
    }
}

type Validator = fn(&Request, &CertificateSigningRequest) -> Result<(), String>;

fn validator_for(signer: &str) -> Option<Validator> {
    match signer {
        KUBE_APISERVER_CLIENT_KUBELET => Some(validate_kubelet_client),
        KUBE_APISERVER_CLIENT => Some(validate_apiserver_client),
        KUBELET_SERVING => Some(validate_kubelet_serving),
        _ => None,
    }
}

struct State {
    ctx: Context,
    authority: SigningAuthority,
    duration: Duration,
}

pub fn start(ctx: &Context) -> BoxFuture<'static, ()> {
    let (Some(cert), Some(key)) = (
        ctx.options.cluster_signing_cert_file.clone(),
        ctx.options.cluster_signing_key_file.clone(),
    ) else {
        info!("skipping csrsigning: no --cluster-signing-cert-file and --cluster-signing-key-file");
        return futures::future::ready(()).boxed();
    };
    let authority = match SigningAuthority::load(&cert, &key) {
        Ok(a) => a,
        Err(e) => {
            warn!(error = %e, "not starting csrsigning");
            return futures::future::ready(()).boxed();
        }
    };
    let csrs = ctx.informers.subscribe::<CertificateSigningRequest>();
    let store = ctx.informers.store::<CertificateSigningRequest>();
    let state = Arc::new(State {
        ctx: ctx.clone(),
        authority,
        duration: ctx.options.cluster_signing_duration,
    });
    Controller::for_shared_stream(csrs, store)
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .boxed()
}

async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    state: Arc<State>,
) -> Result<Action, Error> {
    let metrics = state.ctx.metrics.clone();
    metrics.observe(NAME, handle(csr, state)).await
}

async fn handle(csr: Arc<CertificateSigningRequest>, state: Arc<State>) -> Result<Action, Error> {
    if !is_approved(&csr) || is_denied(&csr) || is_failed(&csr) || is_issued(&csr) {
        return Ok(Action::await_change());
    }
    let Some(validate) = validator_for(&csr.spec.signer_name) else {
        return Ok(Action::await_change());
    };
    let name = csr.name_any();
    let checked = parse_request(&csr)
        .map_err(|e| e.to_string())
        .and_then(|req| validate(&req, &csr).map(|()| req));
    let mut updated = (*csr).clone();
    let status = updated
        .status
        .get_or_insert_with(CertificateSigningRequestStatus::default);
    match checked {
        Err(message) => {
            info!(csr = %name, %message, "refusing to sign");
            status.conditions.get_or_insert_with(Vec::new).push(
                CertificateSigningRequestCondition {
                    type_: "Failed".into(),
                    status: "True".into(),
                    reason: Some("SignerValidationFailure".into()),
                    message: Some(message),
                    last_update_time: Some(Time(jiff::Timestamp::now())),
                    ..Default::default()
                },
            );
        }
        Ok(req) => {
            let ttl = lifetime(&csr, state.duration);
            let usages = csr.spec.usages.clone().unwrap_or_default();
            let pem = state
                .authority
                .sign(&req, &usages, ttl, OffsetDateTime::now_utc())
                .map_err(|source| Error::Sign {
                    csr: name.clone(),
                    source,
                })?;
            status.certificate = Some(ByteString(pem.into_bytes()));
            info!(csr = %name, subject = %req.common_name, "signed certificate");
        }
    }
    let api: Api<CertificateSigningRequest> = Api::all(state.ctx.client.clone());
    match api
        .replace_status(&name, &PostParams::default(), &updated)
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        // A newer version (or a deletion) arrives through the informer.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Action::await_change()),
        Err(source) => Err(Error::Status { csr: name, source }),
    }
}

fn error_policy(
    _csr: Arc<CertificateSigningRequest>,
    _error: &Error,
    _state: Arc<State>,
) -> Action {
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::certificates::tests::csr_for;
    use crate::controllers::certificates::NODES_GROUP;

    fn authority(dir: &Path) -> SigningAuthority {
        let key = KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.not_before = OffsetDateTime::now_utc() - Duration::from_secs(3600);
        params.not_after = OffsetDateTime::now_utc() + Duration::from_secs(86400 * 30);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("ca.key"), key.serialize_pem()).unwrap();
        SigningAuthority::load(&dir.join("ca.crt"), &dir.join("ca.key")).unwrap()
    }

    #[test]
    fn signs_a_kubelet_client_certificate_within_the_ca_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let ca = authority(dir.path());
        let csr = csr_for(
            "system:node:pi-1",
            NODES_GROUP,
            &[],
            &["digital signature", "key encipherment", "client auth"],
            KUBE_APISERVER_CLIENT_KUBELET,
        );
        let req = parse_request(&csr).unwrap();
        let now = OffsetDateTime::now_utc();
        // A year asked, the CA lasts 30 days: capped.
        let pem = ca
            .sign(
                &req,
                csr.spec.usages.as_ref().unwrap(),
                lifetime(&csr, Duration::from_secs(8760 * 3600)),
                now,
            )
            .unwrap();
        let der =
            api_types::validation::certificates::pem_block(pem.as_bytes(), "CERTIFICATE").unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "system:node:pi-1"
        );
        assert_eq!(
            cert.subject()
                .iter_organization()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            NODES_GROUP
        );
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
        assert!(!cert.is_ca());
        let lifetime_secs = cert.validity().not_after.timestamp() - now.unix_timestamp();
        assert!(
            lifetime_secs <= 86400 * 30 && lifetime_secs > 86400 * 29,
            "{lifetime_secs}"
        );
        assert!(cert.validity().not_before.timestamp() <= now.unix_timestamp() - 299);
    }

    #[test]
    fn expiration_seconds_shortens_but_never_lengthens() {
        let mut csr = csr_for(
            "system:node:a",
            NODES_GROUP,
            &[],
            &["client auth"],
            KUBE_APISERVER_CLIENT_KUBELET,
        );
        let year = Duration::from_secs(8760 * 3600);
        assert_eq!(lifetime(&csr, year), year);
        csr.spec.expiration_seconds = Some(3600);
        assert_eq!(lifetime(&csr, year), Duration::from_secs(3600));
        csr.spec.expiration_seconds = Some(i32::MAX);
        assert_eq!(lifetime(&csr, year), year);
    }
}
