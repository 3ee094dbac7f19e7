//! ConfigMap, Secret and ServiceAccount validation.

use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};

use super::field::{forbidden, invalid, required, too_long, FieldError, Path};
use super::meta::{immutable_field, name_errors};
use super::names::is_config_map_key;

/// 1 MiB, upstream's `MaxSecretSize` (also the ConfigMap limit).
pub const MAX_SECRET_SIZE: usize = 1024 * 1024;

const IMMUTABLE_WHEN_SET: &str = "field is immutable when `immutable` is set";

pub(crate) fn config_map(cm: &ConfigMap) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0usize;
    let data_path = Path::new("data");
    let binary_path = Path::new("binaryData");
    for (key, value) in cm.data.iter().flatten() {
        errs.extend(name_errors(
            &data_path.key(key),
            key,
            is_config_map_key(key),
        ));
        if cm.binary_data.as_ref().is_some_and(|b| b.contains_key(key)) {
            errs.push(invalid(
                &data_path.key(key),
                key.as_str(),
                "duplicate of key present in binaryData",
            ));
        }
        total += value.len();
    }
    for (key, value) in cm.binary_data.iter().flatten() {
        errs.extend(name_errors(
            &binary_path.key(key),
            key,
            is_config_map_key(key),
        ));
        total += value.0.len();
    }
    if total > MAX_SECRET_SIZE {
        errs.push(too_long(&Path::root(), MAX_SECRET_SIZE));
    }
    errs
}

pub(crate) fn config_map_update(new: &ConfigMap, old: &ConfigMap) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if old.immutable == Some(true) {
        if new.immutable != Some(true) {
            errs.push(forbidden(&Path::new("immutable"), IMMUTABLE_WHEN_SET));
        }
        if new.data != old.data {
            errs.push(forbidden(&Path::new("data"), IMMUTABLE_WHEN_SET));
        }
        if new.binary_data != old.binary_data {
            errs.push(forbidden(&Path::new("binaryData"), IMMUTABLE_WHEN_SET));
        }
    }
    errs
}

pub(crate) fn secret(s: &Secret) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let data_path = Path::new("data");
    let mut total = 0usize;
    let data = s.data.clone().unwrap_or_default();
    // stringData is folded into data by the defaults; count it here too in case it was not.
    let string_data = s.string_data.clone().unwrap_or_default();
    for (key, value) in &data {
        errs.extend(name_errors(
            &data_path.key(key),
            key,
            is_config_map_key(key),
        ));
        total += value.0.len();
    }
    for (key, value) in &string_data {
        if !data.contains_key(key) {
            errs.extend(name_errors(
                &data_path.key(key),
                key,
                is_config_map_key(key),
            ));
        }
        total += value.len();
    }
    if total > MAX_SECRET_SIZE {
        errs.push(too_long(&data_path, MAX_SECRET_SIZE));
    }
    let has = |k: &str| data.contains_key(k) || string_data.contains_key(k);
    let get = |k: &str| -> Option<Vec<u8>> {
        string_data
            .get(k)
            .map(|v| v.as_bytes().to_vec())
            .or_else(|| data.get(k).map(|v| v.0.clone()))
    };
    match s.type_.as_deref().unwrap_or_default() {
        "kubernetes.io/service-account-token" => {
            let name = s
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .map(String::as_str)
                .unwrap_or_default();
            if name.is_empty() {
                errs.push(required(
                    &Path::new("metadata")
                        .child("annotations")
                        .key("kubernetes.io/service-account.name"),
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson" => {
            let key = if s.type_.as_deref() == Some("kubernetes.io/dockercfg") {
                ".dockercfg"
            } else {
                ".dockerconfigjson"
            };
            match get(key) {
                None => errs.push(required(&data_path.key(key), "")),
                Some(bytes) => {
                    if let Err(e) =
                        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes)
                    {
                        errs.push(invalid(
                            &data_path.key(key),
                            "<secret contents redacted>",
                            &e.to_string(),
                        ));
                    }
                }
            }
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errs.push(required(&data_path.key("username"), ""));
            errs.push(required(&data_path.key("password"), ""));
        }
        "kubernetes.io/ssh-auth" if get("ssh-privatekey").is_none_or(|v| v.is_empty()) => {
            errs.push(required(&data_path.key("ssh-privatekey"), ""));
        }
        "kubernetes.io/tls" => {
            if !has("tls.crt") {
                errs.push(required(&data_path.key("tls.crt"), ""));
            }
            if !has("tls.key") {
                errs.push(required(&data_path.key("tls.key"), ""));
            }
        }
        _ => {}
    }
    errs
}

pub(crate) fn secret_update(new: &Secret, old: &Secret) -> Vec<FieldError> {
    let mut errs = immutable_field(&new.type_, &old.type_, &Path::new("type"));
    if old.immutable == Some(true) {
        if new.immutable != Some(true) {
            errs.push(forbidden(&Path::new("immutable"), IMMUTABLE_WHEN_SET));
        }
        if new.data != old.data {
            errs.push(forbidden(&Path::new("data"), IMMUTABLE_WHEN_SET));
        }
    }
    errs
}

pub(crate) fn service_account(sa: &ServiceAccount) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, s) in sa.image_pull_secrets.iter().flatten().enumerate() {
        if s.name.is_empty() {
            errs.push(required(
                &Path::new("imagePullSecrets").index(i).child("name"),
                "",
            ));
        }
    }
    errs
}
