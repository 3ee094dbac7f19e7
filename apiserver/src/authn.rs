//! Authentication, in upstream's order: x509 client certificates (`--client-ca-file`: the
//! TLS layer verified the chain, the user is the certificate's CN and its groups are the
//! O values), bearer tokens from `--token-auth-file` (upstream's CSV format:
//! `token,user,uid,"group1,group2"`), and anonymous requests when allowed. Every
//! authenticated user is also in `system:authenticated`.

use std::collections::HashMap;
use std::path::Path;

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("reading token file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {path}, line {line}: {reason}")]
    Parse {
        path: String,
        line: usize,
        reason: String,
    },
}

/// The user of a connection's verified client certificate, put in each request's
/// extensions by the server.
#[derive(Debug, Clone)]
pub struct ClientCertUser(pub UserInfo);

/// The user named by a client certificate that the TLS layer verified: CN is the user name,
/// each O a group (upstream's `CommonNameUserConversion`). `None` for a certificate without
/// a common name (upstream then tries the other authenticators) or one that does not parse.
pub fn user_from_certificate(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(String::from)
        .collect();
    Some(UserInfo {
        name,
        uid: String::new(),
        groups,
    })
}

/// Outcome of authenticating one request.
pub enum Authenticated {
    User(UserInfo),
    /// The request carried credentials that are not valid: 401.
    Rejected,
}

#[derive(Debug, Default)]
pub struct Authenticator {
    tokens: HashMap<String, UserInfo>,
    anonymous: bool,
}

/// Splits one CSV record, honouring double quotes (`"a,b"` is one field, `""` a quote).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    fields.push(cur);
    Ok(fields)
}

impl Authenticator {
    pub fn new(token_file: Option<&Path>, anonymous: bool) -> Result<Self, TokenFileError> {
        let mut tokens = HashMap::new();
        if let Some(path) = token_file {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
                path: shown.clone(),
                source,
            })?;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let parse = |reason: String| TokenFileError::Parse {
                    path: shown.clone(),
                    line: i + 1,
                    reason,
                };
                let fields = csv_fields(line).map_err(parse)?;
                if fields.len() < 3 {
                    return Err(parse(format!(
                        "expected at least 3 fields, got {}",
                        fields.len()
                    )));
                }
                if fields[0].is_empty() {
                    return Err(parse("empty token".into()));
                }
                let groups = fields
                    .get(3)
                    .map(|g| {
                        g.split(',')
                            .map(str::trim)
                            .filter(|g| !g.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default();
                tokens.insert(
                    fields[0].clone(),
                    UserInfo {
                        name: fields[1].clone(),
                        uid: fields[2].clone(),
                        groups,
                    },
                );
            }
        }
        Ok(Authenticator { tokens, anonymous })
    }

    /// Authenticates a request: its connection's verified client certificate first, as
    /// upstream's union authenticator orders x509 before tokens, else the
    /// `Authorization` header.
    pub fn authenticate_request(
        &self,
        client_cert: Option<&ClientCertUser>,
        authorization: Option<&str>,
    ) -> Authenticated {
        match client_cert {
            Some(ClientCertUser(user)) => {
                let mut user = user.clone();
                user.groups.push("system:authenticated".into());
                Authenticated::User(user)
            }
            None => self.authenticate(authorization),
        }
    }

    /// Authenticates from the `Authorization` header.
    pub fn authenticate(&self, authorization: Option<&str>) -> Authenticated {
        match authorization.and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        }) {
            Some(token) => match self.tokens.get(token.trim()) {
                Some(user) => {
                    let mut user = user.clone();
                    user.groups.push("system:authenticated".into());
                    Authenticated::User(user)
                }
                None => Authenticated::Rejected,
            },
            None if authorization.is_some() => Authenticated::Rejected,
            None if self.anonymous => Authenticated::User(UserInfo {
                name: "system:anonymous".into(),
                uid: String::new(),
                groups: vec!["system:unauthenticated".into()],
            }),
            None => Authenticated::Rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.csv");
        std::fs::write(
            &p,
            "abc,admin,1,\"system:masters,dev\"\n# comment\ndef,bob,2\n",
        )
        .unwrap();
        let a = Authenticator::new(Some(&p), false).unwrap();
        match a.authenticate(Some("Bearer abc")) {
            Authenticated::User(u) => {
                assert_eq!(u.name, "admin");
                assert_eq!(
                    u.groups,
                    vec!["system:masters", "dev", "system:authenticated"]
                );
            }
            Authenticated::Rejected => panic!("rejected"),
        }
        assert!(matches!(
            a.authenticate(Some("Bearer nope")),
            Authenticated::Rejected
        ));
        assert!(matches!(a.authenticate(None), Authenticated::Rejected));
        std::fs::write(&p, "onlytoken\n").unwrap();
        assert!(Authenticator::new(Some(&p), false).is_err());
    }

    fn cert(cn: Option<&str>, orgs: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for o in orgs {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, *o);
        }
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn client_certificate_user() {
        let u = user_from_certificate(&cert(Some("system:node:pi-1"), &["system:nodes"])).unwrap();
        assert_eq!(u.name, "system:node:pi-1");
        assert_eq!(u.groups, ["system:nodes"]);
        assert!(user_from_certificate(&cert(None, &["system:masters"])).is_none());
        assert!(user_from_certificate(b"not a certificate").is_none());

        // The certificate wins over a token (valid or not), as upstream orders x509 first.
        let a = Authenticator::new(None, false).unwrap();
        match a.authenticate_request(Some(&ClientCertUser(u)), Some("Bearer bogus")) {
            Authenticated::User(u) => {
                assert_eq!(u.groups, ["system:nodes", "system:authenticated"])
            }
            Authenticated::Rejected => panic!("rejected"),
        }
        assert!(matches!(
            a.authenticate_request(None, Some("Bearer bogus")),
            Authenticated::Rejected
        ));
    }
}
