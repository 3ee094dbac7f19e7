//! Encryption of stored objects at rest: `--encryption-provider-config` in upstream's
//! `apiserver.config.k8s.io/v1` `EncryptionConfiguration` format.
//!
//! Each resource has one [`Transformer`]: the providers of the first configuration entry
//! that names it (an exact `resource.group` before `*.group` before `*.*`, as upstream).
//! Writes use the first provider (its first key); reads pick the provider and key by the
//! value's prefix (`k8s:enc:aescbc:v1:<key>:`, `k8s:enc:secretbox:v1:<key>:`), so data
//! written with any configured key stays readable across a key rotation. Unprefixed data
//! is read only when `identity` is among the providers. Resources no entry names are
//! stored as they are.

mod config;
mod provider;

pub use config::ConfigError;
pub use provider::TransformError;

use prometheus::{IntCounterVec, Opts};
use provider::{Keyed, IDENTITY};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The providers of one resource, in configuration order.
pub struct Transformer {
    /// Where writes go: `None` writes plain data (identity first).
    write: Option<usize>,
    /// Every configured key of every encrypting provider, in configuration order.
    keyed: Vec<Keyed>,
    /// Whether `identity` is among the providers (unprefixed data is then readable).
    identity: bool,
    operations: IntCounterVec,
}

impl Transformer {
    fn identity(operations: IntCounterVec) -> Self {
        Transformer {
            write: None,
            keyed: Vec::new(),
            identity: true,
            operations,
        }
    }

    /// Whether writes are encrypted.
    pub fn encrypts(&self) -> bool {
        self.write.is_some()
    }

    /// Whether a stored value is in another form than a write would give it now (another
    /// key or provider): upstream's "stale" data, rewritten by any update.
    pub fn is_stale(&self, stored: &[u8]) -> bool {
        match self.write {
            Some(i) => !stored.starts_with(&self.keyed[i].prefix),
            None => stored.starts_with(provider::ENCRYPTED_PREFIX),
        }
    }

    /// The stored form of `data`: encrypted with the first provider's first key, or as
    /// it is when that provider is `identity`.
    pub fn to_storage(&self, data: Vec<u8>) -> Result<Vec<u8>, TransformError> {
        let Some(i) = self.write else {
            return Ok(data);
        };
        let keyed = &self.keyed[i];
        let result = keyed.seal(&data);
        self.record("to_storage", keyed.provider_prefix, result.is_ok());
        result
    }

    /// The plain data of a stored value, by its prefix.
    pub fn from_storage<'a>(&self, data: &'a [u8]) -> Result<Cow<'a, [u8]>, TransformError> {
        if let Some(keyed) = self.keyed.iter().find(|k| data.starts_with(&k.prefix)) {
            let result = keyed.open(&data[keyed.prefix.len()..]);
            self.record("from_storage", keyed.provider_prefix, result.is_ok());
            return result.map(Cow::Owned);
        }
        if data.starts_with(provider::ENCRYPTED_PREFIX) {
            // Encrypted by a provider or key this configuration lacks: never handed out
            // as plain data, even with identity among the providers.
            self.record("from_storage", "unknown", false);
            return Err(TransformError::NoMatchingPrefix);
        }
        if self.identity {
            // Plain data of a resource that is not configured is not worth a metric.
            if !self.keyed.is_empty() {
                self.record("from_storage", IDENTITY, true);
            }
            return Ok(Cow::Borrowed(data));
        }
        self.record("from_storage", "unknown", false);
        Err(TransformError::NoMatchingPrefix)
    }

    fn record(&self, transformation_type: &str, prefix: &str, ok: bool) {
        // Upstream's status label is the gRPC code of the error.
        let status = if ok { "OK" } else { "Unknown" };
        self.operations
            .with_label_values(&[transformation_type, prefix, status])
            .inc();
    }
}

/// The transformer of every resource.
pub struct Transformers {
    exact: HashMap<(String, String), Arc<Transformer>>,
    groups: HashMap<String, Arc<Transformer>>,
    any: Option<Arc<Transformer>>,
    plain: Arc<Transformer>,
    operations: IntCounterVec,
}

fn operations_counter() -> IntCounterVec {
    IntCounterVec::new(
        Opts::new(
            "apiserver_storage_transformation_operations_total",
            "Total number of transformations. Successful transformation will have a status 'OK' and a varied status string when the transformation fails. This status and transformation_type fields may be used for alerting on encryption/decryption failure using transformation_type from_storage for decryption and to_storage for encryption",
        ),
        &["transformation_type", "transformer_prefix", "status"],
    )
    .expect("valid metric options")
}

impl Transformers {
    /// No encryption: every resource is stored as it is.
    pub fn identity() -> Self {
        let operations = operations_counter();
        Transformers {
            exact: HashMap::new(),
            groups: HashMap::new(),
            any: None,
            plain: Arc::new(Transformer::identity(operations.clone())),
            operations,
        }
    }

    /// Reads and validates an `EncryptionConfiguration` file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|e| e.at(path))
    }

    /// Parses and validates the text of an `EncryptionConfiguration`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let entries = config::parse(text)?;
        let mut t = Self::identity();
        for entry in entries {
            let transformer = Arc::new(Transformer {
                write: entry.write,
                keyed: entry.keyed,
                identity: entry.identity,
                operations: t.operations.clone(),
            });
            // The first entry that names a resource wins, as upstream.
            for (group, resource) in entry.resources {
                match (group.as_str(), resource.as_str()) {
                    ("*", "*") => {
                        t.any.get_or_insert_with(|| transformer.clone());
                    }
                    (_, "*") => {
                        t.groups.entry(group).or_insert_with(|| transformer.clone());
                    }
                    _ => {
                        t.exact
                            .entry((group, resource))
                            .or_insert_with(|| transformer.clone());
                    }
                }
            }
        }
        Ok(t)
    }

    /// The transformer of a stored resource (by its storage group and plural).
    pub fn for_resource(&self, group: &str, resource: &str) -> &Arc<Transformer> {
        self.exact
            .get(&(group.to_string(), resource.to_string()))
            .or_else(|| self.groups.get(group))
            .or(self.any.as_ref())
            .unwrap_or(&self.plain)
    }

    /// Registers `apiserver_storage_transformation_operations_total`.
    pub fn register(&self, registry: &prometheus::Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.operations.clone()))
    }
}

#[cfg(test)]
mod tests;
