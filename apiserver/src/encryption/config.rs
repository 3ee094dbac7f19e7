//! Reading and validating an `EncryptionConfiguration` (`apiserver.config.k8s.io/v1`),
//! with upstream's rules and messages where upstream has them.

use super::provider::{AesKey, Keyed};
use base64::Engine;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const API_VERSION: &str = "apiserver.config.k8s.io/v1";
const KIND: &str = "EncryptionConfiguration";

/// A configuration that cannot be used; the apiserver does not start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("error opening encryption provider configuration file {path:?}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: Box<ConfigError>,
    },
    #[error("the encryption provider configuration file is empty")]
    Empty,
    #[error("parsing the EncryptionConfiguration: {0}")]
    Parse(String),
    #[error("unexpected apiVersion/kind {0:?}: expected apiVersion: apiserver.config.k8s.io/v1, kind: EncryptionConfiguration")]
    Kind(String),
    #[error("invalid EncryptionConfiguration: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

impl ConfigError {
    pub(super) fn at(self, path: &Path) -> ConfigError {
        ConfigError::File {
            path: path.to_path_buf(),
            source: Box::new(self),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EncryptionConfiguration {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    resources: Vec<ResourceConfiguration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceConfiguration {
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    providers: Vec<ProviderConfiguration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderConfiguration {
    aescbc: Option<KeysConfiguration>,
    secretbox: Option<KeysConfiguration>,
    identity: Option<serde_yaml::Value>,
    aesgcm: Option<serde_yaml::Value>,
    kms: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysConfiguration {
    #[serde(default)]
    keys: Vec<Key>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Key {
    #[serde(default)]
    name: String,
    #[serde(default)]
    secret: String,
}

/// One validated entry of `resources`.
pub(super) struct Entry {
    /// `(group, resource)`; `*` for wildcards.
    pub resources: Vec<(String, String)>,
    pub keyed: Vec<Keyed>,
    pub write: Option<usize>,
    pub identity: bool,
}

/// `secrets` → `("", "secrets")`, `deployments.apps` → `("apps", "deployments")`, `*.*`
/// → `("*", "*")`, as upstream's ParseGroupResource.
fn parse_group_resource(s: &str) -> (String, String) {
    match s.split_once('.') {
        Some((resource, group)) => (group.to_string(), resource.to_string()),
        None => (String::new(), s.to_string()),
    }
}

pub(super) fn parse(text: &str) -> Result<Vec<Entry>, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError::Empty);
    }
    let config: EncryptionConfiguration =
        serde_yaml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
    if config.api_version != API_VERSION || config.kind != KIND {
        return Err(ConfigError::Kind(format!(
            "{}/{}",
            config.api_version, config.kind
        )));
    }
    let mut errors = Vec::new();
    if config.resources.is_empty() {
        errors.push("resources: Required value: at least one resources is required".to_string());
    }
    let mut entries = Vec::new();
    for (i, conf) in config.resources.iter().enumerate() {
        let r = format!("resources[{i}].resources");
        if conf.resources.is_empty() {
            errors.push(format!("{r}: Required value: at least one {r} is required"));
        }
        validate_resources(&conf.resources, &r, &mut errors);
        let p = format!("resources[{i}].providers");
        if conf.providers.is_empty() {
            errors.push(format!("{p}: Required value: at least one {p} is required"));
        }
        let mut entry = Entry {
            resources: conf
                .resources
                .iter()
                .map(|r| parse_group_resource(r))
                .collect(),
            keyed: Vec::new(),
            write: None,
            identity: false,
        };
        for (j, provider) in conf.providers.iter().enumerate() {
            let path = format!("{p}[{j}]");
            let found = [
                provider.aescbc.is_some(),
                provider.secretbox.is_some(),
                provider.identity.is_some(),
                provider.aesgcm.is_some(),
                provider.kms.is_some(),
            ]
            .iter()
            .filter(|f| **f)
            .count();
            if found == 0 {
                errors.push(format!("{path}: Invalid value: provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity"));
                continue;
            }
            if found > 1 {
                errors.push(format!("{path}: Invalid value: more than one provider specified in a single element, should split into different list elements"));
                continue;
            }
            let first_key = entry.keyed.len();
            if let Some(c) = &provider.aescbc {
                for (k, key) in keys(
                    c,
                    &format!("{path}.aescbc.keys"),
                    &[16, 24, 32],
                    &mut errors,
                ) {
                    if let Some(aes) = AesKey::new(&key) {
                        entry.keyed.push(Keyed::aescbc(&c.keys[k].name, aes));
                    }
                }
            } else if let Some(c) = &provider.secretbox {
                for (k, key) in keys(c, &format!("{path}.secretbox.keys"), &[32], &mut errors) {
                    if let Ok(key) = <[u8; 32]>::try_from(key.as_slice()) {
                        entry.keyed.push(Keyed::secretbox(&c.keys[k].name, &key));
                    }
                }
            } else if provider.identity.is_some() {
                entry.identity = true;
            } else {
                let name = if provider.aesgcm.is_some() {
                    "aesgcm"
                } else {
                    "kms"
                };
                errors.push(format!(
                    "{path}.{name}: Unsupported value: unsupported provider {name:?} (pikube supports aescbc, secretbox and identity)"
                ));
            }
            if j == 0 && !entry.identity && entry.keyed.len() > first_key {
                entry.write = Some(first_key);
            }
        }
        entries.push(entry);
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err(ConfigError::Invalid(errors))
    }
}

/// The decoded secrets of a provider's keys, with their index; errors for the others.
fn keys(
    c: &KeysConfiguration,
    path: &str,
    sizes: &[usize],
    errors: &mut Vec<String>,
) -> Vec<(usize, Vec<u8>)> {
    if c.keys.is_empty() {
        errors.push(format!(
            "{path}: Required value: at least one keys is required"
        ));
    }
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, key) in c.keys.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if key.name.is_empty() {
            errors.push(format!(
                "{at}.name: Required value: name is a mandatory field for a key"
            ));
        } else if !names.insert(key.name.as_str()) {
            errors.push(format!(
                "{at}.name: Duplicate value: {:?}: key names must be unique within a provider",
                key.name
            ));
        }
        if key.secret.is_empty() {
            errors.push(format!(
                "{at}.secret: Required value: secret is a mandatory field for a key"
            ));
            continue;
        }
        let Ok(secret) = base64::engine::general_purpose::STANDARD.decode(key.secret.trim()) else {
            errors.push(format!(
                "{at}.secret: Invalid value: \"REDACTED\": secrets must be base64 encoded"
            ));
            continue;
        };
        if !sizes.contains(&secret.len()) {
            errors.push(format!(
                "{at}.secret: Invalid value: \"REDACTED\": secret is not of the expected length, got {}, expected one of {sizes:?}",
                secret.len()
            ));
            continue;
        }
        out.push((i, secret));
    }
    out
}

fn validate_resources(resources: &[String], path: &str, errors: &mut Vec<String>) {
    let parsed: Vec<(String, String)> = resources.iter().map(|r| parse_group_resource(r)).collect();
    let mut seen = BTreeSet::new();
    if parsed.iter().any(|r| !seen.insert(r)) {
        errors.push(format!(
            "{path}: Invalid value: {resources:?}: the same resource cannot be specified multiple times"
        ));
    }
    let overlap = parsed.len() > 1
        && parsed.iter().enumerate().any(|(i, a)| {
            parsed.iter().enumerate().any(|(j, b)| {
                i != j
                    && a != b
                    && ((a.0 == "*" && a.1 == "*") || (a.0 == b.0 && (a.1 == "*" || b.1 == "*")))
            })
        });
    if overlap {
        errors.push(format!(
            "{path}: Invalid value: {resources:?}: using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked"
        ));
    }
    for (i, (res, (group, resource))) in resources.iter().zip(&parsed).enumerate() {
        let at = format!("{path}[{i}]");
        let problem = if res.to_lowercase() != *res {
            Some("resource name should not contain capital letters".to_string())
        } else if res == "*" {
            Some("use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources".into())
        } else if [
            "apiserveripinfo",
            "serviceipallocations",
            "servicenodeportallocations",
        ]
        .contains(&res.as_str())
        {
            Some("resources which do not have REST API/s cannot be encrypted".into())
        } else if group == "events.k8s.io" {
            Some("'*.events.k8s.io' objects are stored using the 'events' API group in etcd. Use 'events' instead in the config file".into())
        } else if group == "extensions" {
            Some("'extensions' group has been removed and cannot be used for encryption".into())
        } else if group == "*" && resource != "*" {
            Some("encrypting the same resource across groups is not supported".into())
        } else if group == "*" {
            None
        } else if resource == "*" {
            (!api_types::resources::RESOURCES
                .iter()
                .any(|r| r.group == group))
            .then(|| format!("unknown API group {group:?}"))
        } else {
            (!api_types::resources::RESOURCES
                .iter()
                .any(|r| r.group == group && r.plural == resource))
            .then(|| "unknown resource: this apiserver serves no such resource".to_string())
        };
        if let Some(problem) = problem {
            errors.push(format!("{at}: Invalid value: {res:?}: {problem}"));
        }
    }
}
