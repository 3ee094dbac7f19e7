//! Certificates and keys on disk, as kubeadm's `certs` phase keeps them
//! (`cmd/kubeadm/app/phases/certs` and `util/pkiutil` upstream): a self-signed cluster CA,
//! leaf certificates it signs, and the service-account key pair. Every write is idempotent:
//! an existing key is always kept; an existing certificate is kept unless it expires within
//! [`RENEW_BEFORE`], no longer matches what it should say (subject, SANs, usages), was not
//! signed by the CA on disk, or does not belong to its key, in which case it is signed again
//! for the same key.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;

/// Certificates expiring within this window are renewed (kubeadm warns at 30 days; the
/// issue asks for 90).
pub const RENEW_BEFORE: Duration = Duration::from_secs(90 * 24 * 3600);
/// kubeadm's validity of the CA (`CACertificateValidityPeriod`): 10 years.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// kubeadm's validity of every other certificate (`CertificateValidityPeriod`): 1 year.
pub const CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How far back `notBefore` is set, for nodes whose clocks lag a little (kubeadm: none;
/// a Pi without an RTC may boot a few minutes behind until NTP catches up).
const BACKDATE: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    #[error("{path}: not a PEM private key this tool can use (PKCS#8 ECDSA P-256/P-384, Ed25519 or RSA): {source}")]
    BadKey {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("{path}: not a PEM certificate: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{cert} exists but its key {key} does not: an external CA cannot sign new certificates here")]
    CaKeyMissing { cert: PathBuf, key: PathBuf },
    #[error("{path}: {name:?} is not a valid DNS name for a certificate")]
    BadName { path: PathBuf, name: String },
    #[error("generating {path}: {source}")]
    Generate {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created,
    /// Signed again (same key); the reason says why.
    Renewed(String),
    Unchanged,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Created => f.write_str("generated"),
            Outcome::Renewed(why) => write!(f, "renewed ({why})"),
            Outcome::Unchanged => f.write_str("using existing"),
        }
    }
}

/// What a leaf certificate must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// The file stem in the PKI folder: `<name>.crt` and `<name>.key`.
    pub name: String,
    pub common_name: String,
    /// The group (O). One at most: rcgen keeps one value per attribute type in a name.
    pub organization: Option<String>,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub server: bool,
    pub client: bool,
}

impl CertSpec {
    /// A client certificate (`ExtKeyUsageClientAuth`): user CN, group O.
    pub fn client(name: &str, common_name: &str, organization: Option<&str>) -> CertSpec {
        CertSpec {
            name: name.to_string(),
            common_name: common_name.to_string(),
            organization: organization.map(String::from),
            dns_names: vec![],
            ips: vec![],
            server: false,
            client: true,
        }
    }

    /// A serving certificate (`ExtKeyUsageServerAuth`) for these names and addresses.
    pub fn server(name: &str, common_name: &str, dns_names: Vec<String>, ips: Vec<IpAddr>) -> Self {
        CertSpec {
            name: name.to_string(),
            common_name: common_name.to_string(),
            organization: None,
            dns_names,
            ips,
            server: true,
            client: false,
        }
    }
}

/// A certificate and key pair read back from disk.
pub struct Pair {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster CA: signs every other certificate.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's subject (DER), which every certificate it signed names as its issuer.
    subject_der: Vec<u8>,
    /// The CA's SubjectPublicKeyInfo (DER), to verify signatures of existing certificates.
    cert_der: Vec<u8>,
    pub pair: Pair,
}

fn read(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `data` to `path` with `mode`, through a temporary file renamed into place, so a
/// key is never readable by others and a crash never leaves half a file. Files whose
/// content is already `data` are not touched. Returns whether the file was written.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<bool> {
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    if std::fs::read(path).is_ok_and(|old| old == data) {
        set_mode(path, mode).map_err(err)?;
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let file_name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    let mut file = options.open(&tmp).map_err(err)?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(err)?;
    drop(file);
    // The umask may have narrowed the mode at creation; set it exactly.
    set_mode(&tmp, mode).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(true)
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

/// Reads the PEM key at `path`, or generates (ECDSA P-256) and writes one, 0600. Returns
/// the key, its PEM as on disk, and whether it was generated.
fn ensure_key(path: &Path) -> Result<(KeyPair, String, bool)> {
    if let Some(pem) = read(path)? {
        let key = KeyPair::from_pem(&pem).map_err(|source| Error::BadKey {
            path: path.to_path_buf(),
            source,
        })?;
        set_mode(path, 0o600).map_err(|source| Error::Write {
            path: path.to_path_buf(),
            source,
        })?;
        return Ok((key, pem, false));
    }
    let key = KeyPair::generate().map_err(|source| Error::Generate {
        path: path.to_path_buf(),
        source,
    })?;
    let pem = key.serialize_pem();
    write_file(path, pem.as_bytes(), 0o600)?;
    Ok((key, pem, true))
}

fn first_pem_cert(path: &Path, pem: &str) -> Result<Vec<u8>> {
    match rustls_pemfile::certs(&mut pem.as_bytes()).next() {
        Some(Ok(der)) => Ok(der.to_vec()),
        Some(Err(e)) => Err(Error::BadCertificate {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
        None => Err(Error::BadCertificate {
            path: path.to_path_buf(),
            reason: "no CERTIFICATE block".into(),
        }),
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = now();
    params.not_before = now - BACKDATE;
    params.not_after = now + lifetime;
}

/// Seconds from now until `not_after` (negative when expired).
fn remaining(cert: &x509_parser::certificate::X509Certificate<'_>) -> i64 {
    cert.validity().not_after.timestamp() - now().unix_timestamp()
}

fn renew_before_secs() -> i64 {
    i64::try_from(RENEW_BEFORE.as_secs()).unwrap_or(i64::MAX)
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    validity(&mut params, CA_VALIDITY);
    params
}

impl CertificateAuthority {
    /// Loads `ca.crt`/`ca.key` from `dir`, creating them (CN `common_name`) if absent, and
    /// renewing the certificate for the same key when it expires within [`RENEW_BEFORE`].
    pub fn ensure(dir: &Path, common_name: &str) -> Result<(CertificateAuthority, Outcome)> {
        let cert_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        let existing = read(&cert_path)?;
        if existing.is_some() && !key_path.exists() {
            return Err(Error::CaKeyMissing {
                cert: cert_path,
                key: key_path,
            });
        }
        let (key, key_pem, _) = ensure_key(&key_path)?;
        let mut outcome = Outcome::Created;
        let mut cert_pem = None;
        if let Some(pem) = existing {
            let der = first_pem_cert(&cert_path, &pem)?;
            let (_, cert) =
                x509_parser::parse_x509_certificate(&der).map_err(|e| Error::BadCertificate {
                    path: cert_path.clone(),
                    reason: e.to_string(),
                })?;
            outcome = if cert.public_key().raw != key.subject_public_key_info().as_slice() {
                Outcome::Renewed("ca.crt does not belong to ca.key".into())
            } else if !cert.is_ca() {
                Outcome::Renewed("not a CA certificate".into())
            } else if remaining(&cert) < renew_before_secs() {
                Outcome::Renewed("expires within 90 days".into())
            } else {
                cert_pem = Some(pem);
                Outcome::Unchanged
            };
        }
        let cert_pem = match cert_pem {
            Some(pem) => pem,
            None => {
                let cert =
                    ca_params(common_name)
                        .self_signed(&key)
                        .map_err(|source| Error::Generate {
                            path: cert_path.clone(),
                            source,
                        })?;
                write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
                cert.pem()
            }
        };
        let cert_der = first_pem_cert(&cert_path, &cert_pem)?;
        let issuer =
            Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key).map_err(|source| {
                Error::Generate {
                    path: cert_path.clone(),
                    source,
                }
            })?;
        let subject_der = {
            let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).map_err(|e| {
                Error::BadCertificate {
                    path: cert_path.clone(),
                    reason: e.to_string(),
                }
            })?;
            cert.subject().as_raw().to_vec()
        };
        Ok((
            CertificateAuthority {
                issuer,
                subject_der,
                cert_der,
                pair: Pair {
                    cert_path,
                    key_path,
                    cert_pem,
                    key_pem,
                },
            },
            outcome,
        ))
    }

    /// kubeadm's `--discovery-token-ca-cert-hash` of this CA: `sha256:` and the hex SHA-256
    /// of its SubjectPublicKeyInfo, which a joining node pins.
    pub fn cert_hash(&self) -> String {
        let spki = x509_parser::parse_x509_certificate(&self.cert_der)
            .map(|(_, c)| c.public_key().raw.to_vec())
            .unwrap_or_default();
        let digest = ring::digest::digest(&ring::digest::SHA256, &spki);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }

    /// Why the certificate `der` must be signed again for `spec` and `key`, if it must.
    fn renewal_reason(&self, spec: &CertSpec, key: &KeyPair, der: &[u8]) -> Option<String> {
        let cert = match x509_parser::parse_x509_certificate(der) {
            Ok((_, cert)) => cert,
            Err(e) => return Some(format!("unreadable: {e}")),
        };
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Some("the certificate does not belong to its key".into());
        }
        if cert.issuer().as_raw() != self.subject_der.as_slice() {
            return Some("issued by another CA".into());
        }
        let ca = match x509_parser::parse_x509_certificate(&self.cert_der) {
            Ok((_, ca)) => ca,
            Err(e) => return Some(format!("CA unreadable: {e}")),
        };
        if cert.verify_signature(Some(ca.public_key())).is_err() {
            return Some("not signed by the CA's key".into());
        }
        if remaining(&cert) < renew_before_secs() {
            return Some("expires within 90 days".into());
        }
        let cn: Vec<&str> = cert
            .subject()
            .iter_common_name()
            .filter_map(|a| a.as_str().ok())
            .collect();
        if cn != [spec.common_name.as_str()] {
            return Some("the common name changed".into());
        }
        let orgs: BTreeSet<&str> = cert
            .subject()
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .collect();
        if orgs != spec.organization.iter().map(String::as_str).collect() {
            return Some("the organizations changed".into());
        }
        let (mut dns, mut ips) = (BTreeSet::new(), BTreeSet::new());
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        dns.insert((*d).to_string());
                    }
                    x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_from_bytes(bytes) {
                            ips.insert(ip);
                        }
                    }
                    _ => {}
                }
            }
        }
        if dns != spec.dns_names.iter().cloned().collect()
            || ips != spec.ips.iter().copied().collect()
        {
            return Some("the subject alternative names changed".into());
        }
        let (server, client) = match cert.extended_key_usage() {
            Ok(Some(eku)) => (eku.value.server_auth, eku.value.client_auth),
            _ => (false, false),
        };
        if server != spec.server || client != spec.client {
            return Some("the key usages changed".into());
        }
        None
    }

    /// Ensures `<dir>/<spec.name>.crt` and `.key` exist and match `spec`.
    pub fn ensure_cert(&self, dir: &Path, spec: &CertSpec) -> Result<(Pair, Outcome)> {
        let cert_path = dir.join(format!("{}.crt", spec.name));
        let key_path = dir.join(format!("{}.key", spec.name));
        let (key, key_pem, key_created) = ensure_key(&key_path)?;
        let existing = read(&cert_path)?;
        let outcome = match &existing {
            None => Outcome::Created,
            Some(_) if key_created => Outcome::Renewed("its key was missing".into()),
            Some(pem) => match first_pem_cert(&cert_path, pem) {
                Err(e) => Outcome::Renewed(e.to_string()),
                Ok(der) => match self.renewal_reason(spec, &key, &der) {
                    None => Outcome::Unchanged,
                    Some(why) => Outcome::Renewed(why),
                },
            },
        };
        let cert_pem = match (existing, &outcome) {
            (Some(pem), Outcome::Unchanged) => pem,
            _ => {
                let pem = self.sign(spec, &key, &cert_path, CERT_VALIDITY)?;
                write_file(&cert_path, pem.as_bytes(), 0o644)?;
                pem
            }
        };
        Ok((
            Pair {
                cert_path,
                key_path,
                cert_pem,
                key_pem,
            },
            outcome,
        ))
    }

    /// Signs a certificate for `spec` and `key`, valid for `lifetime`; returns its PEM.
    pub fn sign(
        &self,
        spec: &CertSpec,
        key: &KeyPair,
        path: &Path,
        lifetime: Duration,
    ) -> Result<String> {
        let now = std::time::SystemTime::now();
        self.sign_between(spec, key, path, now - BACKDATE, now + lifetime)
    }

    /// Signs a certificate for `spec` and `key`, valid from `not_before` to `not_after`
    /// (tests make expired ones with it); returns its PEM.
    pub fn sign_between(
        &self,
        spec: &CertSpec,
        key: &KeyPair,
        path: &Path,
        not_before: std::time::SystemTime,
        not_after: std::time::SystemTime,
    ) -> Result<String> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(org) = &spec.organization {
            params
                .distinguished_name
                .push(DnType::OrganizationName, org.as_str());
        }
        params
            .distinguished_name
            .push(DnType::CommonName, spec.common_name.as_str());
        for name in &spec.dns_names {
            let dns = name.clone().try_into().map_err(|_| Error::BadName {
                path: path.to_path_buf(),
                name: name.clone(),
            })?;
            params.subject_alt_names.push(SanType::DnsName(dns));
        }
        params
            .subject_alt_names
            .extend(spec.ips.iter().copied().map(SanType::IpAddress));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if spec.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let cert = params
            .signed_by(key, &self.issuer)
            .map_err(|source| Error::Generate {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(cert.pem())
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// Ensures the service-account key pair: `sa.key` (PKCS#8 ECDSA P-256, which the
/// apiserver's `--service-account-signing-key-file` signs ES256 tokens with) and `sa.pub`
/// (its PKIX public key, for `--service-account-key-file`). `sa.pub` is rewritten from the
/// key when missing or different.
pub fn ensure_service_account_keys(dir: &Path) -> Result<Outcome> {
    let key_path = dir.join("sa.key");
    let pub_path = dir.join("sa.pub");
    let (key, _, created) = ensure_key(&key_path)?;
    let wrote = write_file(&pub_path, key.public_key_pem().as_bytes(), 0o644)?;
    Ok(match (created, wrote) {
        (true, _) => Outcome::Created,
        (false, true) => Outcome::Renewed("sa.pub did not match sa.key".into()),
        (false, false) => Outcome::Unchanged,
    })
}
