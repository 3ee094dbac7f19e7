//! ServiceAccount tokens (upstream `pkg/serviceaccount/jwt.go` and `claims.go`): the
//! token generator behind `serviceaccounts/token` signs bound tokens with the key of
//! `--service-account-signing-key-file` (RS256 for RSA keys, ES256/ES384 for P-256/P-384
//! keys), issued by the first `--service-account-issuer`, with upstream's private
//! `kubernetes.io` claim naming the namespace, the service account and the bound object.
//! The keys of `--service-account-key-file` (public keys or private keys, PEM) verify
//! tokens; without that flag the signing key's public half does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{self, KeyPair};
use rustls_pemfile::Item;
use serde::{Deserialize, Serialize};

/// The ServiceAccount token flags, as upstream names them.
#[derive(Debug, Clone, Default)]
pub struct ServiceAccountConfig {
    /// `--service-account-issuer`: the first issues tokens, all are accepted.
    pub issuers: Vec<String>,
    /// `--api-audiences`: the audiences of a TokenRequest that names none (default: the
    /// issuers).
    pub api_audiences: Vec<String>,
    /// `--service-account-signing-key-file`: PEM private key (RSA or EC).
    pub signing_key_file: Option<PathBuf>,
    /// `--service-account-key-file`: PEM keys that verify tokens.
    pub key_files: Vec<PathBuf>,
    /// `--service-account-max-token-expiration`: longer requests are cut to it.
    pub max_token_expiration: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM private or public key found")]
    NoKey { path: PathBuf },
    #[error("{path}: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("--service-account-issuer is required with --service-account-signing-key-file")]
    NoIssuer,
    #[error("signing token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
    #[error("invalid token: {0}")]
    Verify(#[source] jsonwebtoken::errors::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A name and uid, as the `kubernetes.io` claim refers to objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// Upstream's private claim (`kubernetes.io`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    pub serviceaccount: ObjectRef,
}

/// The claims of a bound ServiceAccount token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
    pub nbf: i64,
    pub sub: String,
}

/// `system:serviceaccount:<namespace>:<name>`, the username of a ServiceAccount.
pub fn username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Signs and verifies ServiceAccount tokens.
pub struct TokenGenerator {
    pub issuer: String,
    pub issuers: Vec<String>,
    pub api_audiences: Vec<String>,
    pub max_expiration: Option<Duration>,
    algorithm: Algorithm,
    key: EncodingKey,
    /// `kid`: base64url(sha256(the public key's bytes)), as upstream names its keys.
    key_id: String,
    verifiers: Vec<(Algorithm, DecodingKey)>,
}

impl std::fmt::Debug for TokenGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGenerator")
            .field("issuer", &self.issuer)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// A key read from PEM: what signs (private keys only) and what verifies.
struct LoadedKey {
    signing: Option<(Algorithm, EncodingKey)>,
    verifying: (Algorithm, DecodingKey),
    public_der: Vec<u8>,
}

impl TokenGenerator {
    /// The generator of `config`, or `None` without a signing key (the subresource then
    /// answers that it is not configured).
    pub fn from_config(config: &ServiceAccountConfig) -> Result<Option<TokenGenerator>> {
        let Some(signing_file) = &config.signing_key_file else {
            return Ok(None);
        };
        let issuer = config.issuers.first().cloned().ok_or(Error::NoIssuer)?;
        let signing = load_keys(signing_file)?
            .into_iter()
            .find(|k| k.signing.is_some())
            .ok_or_else(|| Error::BadKey {
                path: signing_file.clone(),
                reason: "no private key found (want PEM \"PRIVATE KEY\" or \"RSA PRIVATE KEY\")"
                    .into(),
            })?;
        let mut verifiers = Vec::new();
        for file in &config.key_files {
            verifiers.extend(load_keys(file)?.into_iter().map(|k| k.verifying));
        }
        if config.key_files.is_empty() {
            verifiers.push(clone_verifier(&signing.verifying));
        }
        let (algorithm, key) = signing.signing.ok_or(Error::NoKey {
            path: signing_file.clone(),
        })?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &signing.public_der);
        let key_id = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
        };
        let api_audiences = if config.api_audiences.is_empty() {
            config.issuers.clone()
        } else {
            config.api_audiences.clone()
        };
        Ok(Some(TokenGenerator {
            issuer,
            issuers: config.issuers.clone(),
            api_audiences,
            max_expiration: config.max_token_expiration,
            algorithm,
            key,
            key_id,
            verifiers,
        }))
    }

    /// A signed JWT of `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String> {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.key_id.clone());
        jsonwebtoken::encode(&header, claims, &self.key).map_err(Error::Sign)
    }

    /// The claims of a token signed by one of the verification keys, issued by one of
    /// the issuers and not expired (audiences are the caller's to check).
    pub fn verify(&self, token: &str) -> Result<Claims> {
        let mut last = None;
        for (alg, key) in &self.verifiers {
            let mut v = Validation::new(*alg);
            v.set_issuer(&self.issuers);
            v.validate_aud = false;
            v.validate_nbf = true;
            v.set_required_spec_claims(&["exp", "iss", "sub"]);
            match jsonwebtoken::decode::<Claims>(token, key, &v) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = Some(e),
            }
        }
        Err(Error::Verify(last.unwrap_or_else(|| {
            jsonwebtoken::errors::ErrorKind::InvalidSignature.into()
        })))
    }
}

fn clone_verifier((alg, key): &(Algorithm, DecodingKey)) -> (Algorithm, DecodingKey) {
    (*alg, key.clone())
}

/// Every key in a PEM file. Private keys verify with their public half, as upstream's
/// `--service-account-key-file` accepts either.
fn load_keys(path: &Path) -> Result<Vec<LoadedKey>> {
    let pem = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| Error::BadKey {
        path: path.to_path_buf(),
        reason,
    };
    let mut out = Vec::new();
    let mut reader = std::io::Cursor::new(&pem);
    for item in rustls_pemfile::read_all(&mut reader) {
        let item = item.map_err(|e| bad(format!("reading PEM: {e}")))?;
        match item {
            Item::Pkcs1Key(der) => {
                let der = der.secret_pkcs1_der();
                let pair = signature::RsaKeyPair::from_der(der)
                    .map_err(|e| bad(format!("invalid RSA private key: {e}")))?;
                out.push(rsa_key(EncodingKey::from_rsa_der(der), &pair));
            }
            Item::Pkcs8Key(der) => {
                let der = der.secret_pkcs8_der();
                if let Ok(pair) = signature::RsaKeyPair::from_pkcs8(der) {
                    // jsonwebtoken signs RSA from PKCS#1 DER: re-read the PEM through it.
                    let key = EncodingKey::from_rsa_pem(&pem)
                        .map_err(|e| bad(format!("invalid RSA private key: {e}")))?;
                    out.push(rsa_key(key, &pair));
                    continue;
                }
                let rng = ring::rand::SystemRandom::new();
                let curves = [
                    (&signature::ECDSA_P256_SHA256_FIXED_SIGNING, Algorithm::ES256),
                    (&signature::ECDSA_P384_SHA384_FIXED_SIGNING, Algorithm::ES384),
                ];
                let found = curves.into_iter().find_map(|(curve, alg)| {
                    signature::EcdsaKeyPair::from_pkcs8(curve, der, &rng)
                        .ok()
                        .map(|p| (p, alg))
                });
                let Some((pair, alg)) = found else {
                    return Err(bad(
                        "unsupported private key (want RSA, or EC on P-256 or P-384)".into(),
                    ));
                };
                let point = pair.public_key().as_ref().to_vec();
                out.push(LoadedKey {
                    signing: Some((alg, EncodingKey::from_ec_der(der))),
                    verifying: (alg, DecodingKey::from_ec_der(&point)),
                    public_der: point,
                });
            }
            Item::Sec1Key(_) => {
                return Err(bad(
                    "EC PRIVATE KEY (SEC1) is not supported: convert it with `openssl pkcs8 -topk8 -nocrypt`".into(),
                ))
            }
            Item::SubjectPublicKeyInfo(spki) => {
                let der = spki.as_ref();
                let key = if let Ok(k) = DecodingKey::from_ec_pem(&pem_of("PUBLIC KEY", der)) {
                    let alg = if der.len() > 100 {
                        Algorithm::ES384
                    } else {
                        Algorithm::ES256
                    };
                    (alg, k)
                } else {
                    let k = DecodingKey::from_rsa_pem(&pem_of("PUBLIC KEY", der))
                        .map_err(|e| bad(format!("invalid public key: {e}")))?;
                    (Algorithm::RS256, k)
                };
                out.push(LoadedKey {
                    signing: None,
                    verifying: key,
                    public_der: der.to_vec(),
                });
            }
            _ => {}
        }
    }
    if out.is_empty() {
        return Err(Error::NoKey {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

fn rsa_key(key: EncodingKey, pair: &signature::RsaKeyPair) -> LoadedKey {
    let public = pair.public_key().as_ref().to_vec();
    LoadedKey {
        signing: Some((Algorithm::RS256, key)),
        verifying: (Algorithm::RS256, DecodingKey::from_rsa_der(&public)),
        public_der: public,
    }
}

/// One PEM block.
fn pem_of(label: &str, der: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(issuer: &str, exp: i64) -> Claims {
        Claims {
            aud: vec!["api".into()],
            exp,
            iat: 0,
            iss: issuer.into(),
            jti: "j".into(),
            kubernetes: KubernetesClaims {
                namespace: "ns".into(),
                node: None,
                pod: Some(ObjectRef {
                    name: "p".into(),
                    uid: "pu".into(),
                }),
                secret: None,
                serviceaccount: ObjectRef {
                    name: "default".into(),
                    uid: "su".into(),
                },
            },
            nbf: 0,
            sub: username("ns", "default"),
        }
    }

    fn config(dir: &Path, key_pem: &str, public_pem: Option<&str>) -> ServiceAccountConfig {
        std::fs::write(dir.join("sa.key"), key_pem).unwrap();
        let mut key_files = Vec::new();
        if let Some(p) = public_pem {
            std::fs::write(dir.join("sa.pub"), p).unwrap();
            key_files.push(dir.join("sa.pub"));
        }
        ServiceAccountConfig {
            issuers: vec!["https://issuer".into()],
            api_audiences: vec![],
            signing_key_file: Some(dir.join("sa.key")),
            key_files,
            max_token_expiration: None,
        }
    }

    #[test]
    fn ec_keys_sign_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let pair = rcgen::KeyPair::generate().unwrap();
        let far = jiff::Timestamp::now().as_second() + 3600;
        for public in [None, Some(pair.public_key_pem())] {
            let g = TokenGenerator::from_config(&config(
                dir.path(),
                &pair.serialize_pem(),
                public.as_deref(),
            ))
            .unwrap()
            .unwrap();
            assert_eq!(g.api_audiences, ["https://issuer"]);
            let token = g.sign(&claims("https://issuer", far)).unwrap();
            assert_eq!(g.verify(&token).unwrap(), claims("https://issuer", far));
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.alg, Algorithm::ES256);
            assert!(header.kid.is_some_and(|k| !k.is_empty()));
            // Expired, and foreign issuers, do not verify.
            let old = g.sign(&claims("https://issuer", 1000)).unwrap();
            assert!(g.verify(&old).is_err());
            let foreign = g.sign(&claims("https://other", far)).unwrap();
            assert!(g.verify(&foreign).is_err());
        }
    }

    #[test]
    fn rsa_keys_sign_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        // ring cannot generate RSA keys: openssl makes one in both PEM forms.
        let pkcs8 = dir.path().join("rsa8.pem");
        let out = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&pkcs8)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "{out:?}");
        let pkcs1 = dir.path().join("rsa1.pem");
        let out = std::process::Command::new("openssl")
            .args(["rsa", "-traditional", "-in"])
            .arg(&pkcs8)
            .arg("-out")
            .arg(&pkcs1)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "{out:?}");
        for file in [pkcs8, pkcs1] {
            let pem = std::fs::read_to_string(&file).unwrap();
            let g = TokenGenerator::from_config(&config(dir.path(), &pem, None))
                .unwrap()
                .unwrap();
            let far = jiff::Timestamp::now().as_second() + 3600;
            let token = g.sign(&claims("https://issuer", far)).unwrap();
            assert_eq!(
                jsonwebtoken::decode_header(&token).unwrap().alg,
                Algorithm::RS256
            );
            assert_eq!(
                g.verify(&token).unwrap().sub,
                "system:serviceaccount:ns:default"
            );
        }
    }

    #[test]
    fn bad_key_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path(), "not a key", None);
        assert!(matches!(
            TokenGenerator::from_config(&c),
            Err(Error::NoKey { .. })
        ));
        c.signing_key_file = None;
        assert!(TokenGenerator::from_config(&c).unwrap().is_none());
        let pair = rcgen::KeyPair::generate().unwrap();
        let mut c = config(dir.path(), &pair.serialize_pem(), None);
        c.issuers.clear();
        assert!(matches!(
            TokenGenerator::from_config(&c),
            Err(Error::NoIssuer)
        ));
    }
}
