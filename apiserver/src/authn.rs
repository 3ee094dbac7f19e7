//! Authentication, in upstream's order: x509 client certificates (`--client-ca-file`: the
//! TLS layer verified the chain, the user is the certificate's CN and its groups are the
//! O values), bearer tokens from `--token-auth-file` (upstream's CSV format:
//! `token,user,uid,"group1,group2"`), bootstrap tokens (upstream's
//! `plugin/pkg/auth/authenticator/token/bootstrap`: `<id>.<secret>` checked against the
//! Secret `bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token` in kube-system;
//! user `system:bootstrap:<id>`, groups `system:bootstrappers` and the Secret's
//! `auth-extra-groups`), and anonymous requests when allowed. Every authenticated user is
//! also in `system:authenticated`.

use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
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

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(header: &str) -> Option<&str> {
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
}

/// The namespace of bootstrap-token Secrets.
pub const BOOTSTRAP_NAMESPACE: &str = "kube-system";
/// Bootstrap-token Secrets are named `bootstrap-token-<token id>`.
pub const BOOTSTRAP_SECRET_PREFIX: &str = "bootstrap-token-";
/// The Secret type of bootstrap tokens.
pub const BOOTSTRAP_SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Every bootstrap token's user is in this group.
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";

/// `<id>.<secret>` with a 6-character and a 16-character `[a-z0-9]` part.
pub fn parse_bootstrap_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// A Secret's value for `key`: `stringData` (merged over `data` at write upstream), else
/// base64 `data`.
fn secret_value(secret: &Value, key: &str) -> Option<String> {
    if let Some(v) = secret
        .get("stringData")
        .and_then(|d| d.get(key))
        .and_then(Value::as_str)
    {
        return Some(v.to_string());
    }
    use base64::Engine;
    let encoded = secret.get("data")?.get(key)?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// Equal without an early exit, so the time taken says nothing about the secret.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An extra group must be `system:bootstrappers:` followed by `[a-z0-9:-]`, ending in
/// `[a-z0-9]`, at most 256 characters after the prefix (upstream's `BootstrapGroupPattern`).
fn valid_bootstrap_group(group: &str) -> bool {
    let Some(rest) = group.strip_prefix("system:bootstrappers:") else {
        return false;
    };
    !rest.is_empty()
        && rest.len() <= 256
        && rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'-')
        && rest
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The user of bootstrap token `token`, given its Secret (`bootstrap-token-<id>` in
/// kube-system) at time `now`: `None` unless the Secret is a live
/// `bootstrap.kubernetes.io/token` Secret with this id and secret, not expired, allowed
/// for authentication (`usage-bootstrap-authentication: "true"`) and with valid extra
/// groups. Groups: `system:bootstrappers` and `auth-extra-groups`, sorted (as upstream's
/// set).
pub fn bootstrap_token_user(
    token: &str,
    secret: Option<&Value>,
    now: jiff::Timestamp,
) -> Option<UserInfo> {
    let (id, token_secret) = parse_bootstrap_token(token)?;
    let secret = secret?;
    if secret
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        return None;
    }
    if secret.get("type").and_then(Value::as_str) != Some(BOOTSTRAP_SECRET_TYPE) {
        return None;
    }
    let stored = secret_value(secret, "token-secret")?;
    if !constant_time_eq(stored.as_bytes(), token_secret.as_bytes()) {
        return None;
    }
    if secret_value(secret, "token-id").as_deref() != Some(id) {
        return None;
    }
    if let Some(expiration) = secret_value(secret, "expiration") {
        // An expiration that does not parse counts as expired, as upstream.
        match expiration.parse::<jiff::Timestamp>() {
            Ok(t) if t > now => {}
            _ => return None,
        }
    }
    if secret_value(secret, "usage-bootstrap-authentication").as_deref() != Some("true") {
        return None;
    }
    let mut groups = BTreeSet::from([BOOTSTRAPPERS_GROUP.to_string()]);
    if let Some(extra) = secret_value(secret, "auth-extra-groups") {
        for group in extra.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            if !valid_bootstrap_group(group) {
                return None;
            }
            groups.insert(group.to_string());
        }
    }
    Some(UserInfo {
        name: format!("system:bootstrap:{id}"),
        uid: String::new(),
        groups: groups.into_iter().collect(),
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
    /// `Authorization` header: the token file, then bootstrap tokens, whose Secret
    /// `bootstrap_secret` finds by name in kube-system.
    pub fn authenticate_request(
        &self,
        client_cert: Option<&ClientCertUser>,
        authorization: Option<&str>,
        bootstrap_secret: impl FnOnce(&str) -> Option<Value>,
    ) -> Authenticated {
        if let Some(ClientCertUser(user)) = client_cert {
            let mut user = user.clone();
            user.groups.push("system:authenticated".into());
            return Authenticated::User(user);
        }
        match self.authenticate(authorization) {
            Authenticated::Rejected => {
                let Some(token) = authorization.and_then(bearer) else {
                    return Authenticated::Rejected;
                };
                let Some((id, _)) = parse_bootstrap_token(token) else {
                    return Authenticated::Rejected;
                };
                let secret = bootstrap_secret(&format!("{BOOTSTRAP_SECRET_PREFIX}{id}"));
                match bootstrap_token_user(token, secret.as_ref(), jiff::Timestamp::now()) {
                    Some(mut user) => {
                        user.groups.push("system:authenticated".into());
                        Authenticated::User(user)
                    }
                    None => Authenticated::Rejected,
                }
            }
            user => user,
        }
    }

    /// Authenticates from the `Authorization` header (the token file; anonymous).
    pub fn authenticate(&self, authorization: Option<&str>) -> Authenticated {
        match authorization.and_then(bearer) {
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
        match a.authenticate_request(Some(&ClientCertUser(u)), Some("Bearer bogus"), no_secret) {
            Authenticated::User(u) => {
                assert_eq!(u.groups, ["system:nodes", "system:authenticated"])
            }
            Authenticated::Rejected => panic!("rejected"),
        }
        assert!(matches!(
            a.authenticate_request(None, Some("Bearer bogus"), no_secret),
            Authenticated::Rejected
        ));
    }

    fn no_secret(_: &str) -> Option<Value> {
        None
    }

    fn bootstrap_secret(extra: serde_json::Value) -> Value {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut data = serde_json::json!({
            "token-id": b64("abcdef"),
            "token-secret": b64("0123456789abcdef"),
            "usage-bootstrap-authentication": b64("true"),
            "auth-extra-groups": b64("system:bootstrappers:kubeadm:default-node-token"),
            "expiration": b64("2030-01-01T00:00:00Z"),
        });
        for (k, v) in extra.as_object().unwrap() {
            match v.as_str() {
                Some(v) => data[k] = b64(v).into(),
                None => {
                    data.as_object_mut().unwrap().remove(k);
                }
            }
        }
        serde_json::json!({
            "metadata": { "name": "bootstrap-token-abcdef", "namespace": "kube-system" },
            "type": BOOTSTRAP_SECRET_TYPE,
            "data": data,
        })
    }

    #[test]
    fn bootstrap_tokens() {
        let now: jiff::Timestamp = "2029-06-01T00:00:00Z".parse().unwrap();
        let token = "abcdef.0123456789abcdef";
        let secret = bootstrap_secret(serde_json::json!({}));
        let u = bootstrap_token_user(token, Some(&secret), now).unwrap();
        assert_eq!(u.name, "system:bootstrap:abcdef");
        assert_eq!(
            u.groups,
            [
                "system:bootstrappers",
                "system:bootstrappers:kubeadm:default-node-token"
            ]
        );
        // Wrong secret, wrong form, no Secret, expired, not for authentication, a bad
        // extra group, another type, being deleted.
        assert!(bootstrap_token_user("abcdef.0123456789abcdee", Some(&secret), now).is_none());
        assert!(bootstrap_token_user("abcdef.0123456789ABCDEF", Some(&secret), now).is_none());
        assert!(bootstrap_token_user(token, None, now).is_none());
        let later: jiff::Timestamp = "2030-01-01T00:00:01Z".parse().unwrap();
        assert!(bootstrap_token_user(token, Some(&secret), later).is_none());
        for change in [
            serde_json::json!({"usage-bootstrap-authentication": null}),
            serde_json::json!({"auth-extra-groups": "system:masters"}),
            serde_json::json!({"expiration": "tomorrow"}),
            serde_json::json!({"token-id": "zzzzzz"}),
        ] {
            let s = bootstrap_secret(change.clone());
            assert!(
                bootstrap_token_user(token, Some(&s), now).is_none(),
                "{change}"
            );
        }
        let no_expiry = bootstrap_secret(serde_json::json!({"expiration": null}));
        assert!(bootstrap_token_user(token, Some(&no_expiry), later).is_some());
        let mut other = secret.clone();
        other["type"] = "Opaque".into();
        assert!(bootstrap_token_user(token, Some(&other), now).is_none());
        let mut deleting = secret.clone();
        deleting["metadata"]["deletionTimestamp"] = "2029-01-01T00:00:00Z".into();
        assert!(bootstrap_token_user(token, Some(&deleting), now).is_none());
        // stringData, as a client may write it.
        let string_data = serde_json::json!({
            "type": BOOTSTRAP_SECRET_TYPE,
            "stringData": {
                "token-id": "abcdef",
                "token-secret": "0123456789abcdef",
                "usage-bootstrap-authentication": "true",
            },
        });
        assert_eq!(
            bootstrap_token_user(token, Some(&string_data), now)
                .unwrap()
                .groups,
            ["system:bootstrappers"]
        );

        // Through the authenticator: the token file first, then the Secret.
        let a = Authenticator::new(None, false).unwrap();
        let asked = std::cell::RefCell::new(None);
        let lookup = |name: &str| {
            *asked.borrow_mut() = Some(name.to_string());
            Some(bootstrap_secret(serde_json::json!({"expiration": null})))
        };
        match a.authenticate_request(None, Some(&format!("Bearer {token}")), lookup) {
            Authenticated::User(u) => {
                assert_eq!(u.name, "system:bootstrap:abcdef");
                assert_eq!(u.groups.last().unwrap(), "system:authenticated");
            }
            Authenticated::Rejected => panic!("rejected"),
        }
        assert_eq!(asked.borrow().as_deref(), Some("bootstrap-token-abcdef"));
    }
}
