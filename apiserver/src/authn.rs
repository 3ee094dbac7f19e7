//! Authentication: bearer tokens from `--token-auth-file` (upstream's CSV format:
//! `token,user,uid,"group1,group2"`), and anonymous requests when allowed.

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
}
