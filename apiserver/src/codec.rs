//! Content negotiation and request body decoding: JSON, YAML and Kubernetes protobuf in;
//! JSON, YAML, protobuf and server-side Tables out.

use crate::status::{ApiError, ApiResult};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

pub const JSON: &str = "application/json";
pub const YAML: &str = "application/yaml";
pub const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
/// Largest request body upstream accepts (3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// How to answer a request, from its `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Json,
    Yaml,
    Protobuf,
    /// `application/json;as=Table;v=v1;g=meta.k8s.io`
    Table,
    /// `application/json;as=PartialObjectMetadata(List);v=v1;g=meta.k8s.io`
    PartialMetadata,
}

/// Picks the first acceptable media type in the client's order of preference.
pub fn negotiate(accept: Option<&str>) -> ApiResult<Output> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Output::Json);
    };
    for item in accept.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut as_kind = None;
        let mut group = None;
        let mut version = None;
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                match k.trim() {
                    "as" => as_kind = Some(v.trim().to_string()),
                    "g" => group = Some(v.trim().to_string()),
                    "v" => version = Some(v.trim().to_string()),
                    _ => {}
                }
            }
        }
        match (media.as_str(), as_kind.as_deref()) {
            (JSON | "application/*" | "*/*", None) => return Ok(Output::Json),
            (JSON, Some("Table"))
                if group.as_deref() == Some("meta.k8s.io")
                    && matches!(version.as_deref(), Some("v1") | Some("v1beta1")) =>
            {
                return Ok(Output::Table);
            }
            (JSON, Some("PartialObjectMetadata" | "PartialObjectMetadataList"))
                if group.as_deref() == Some("meta.k8s.io")
                    && matches!(version.as_deref(), Some("v1") | Some("v1beta1")) =>
            {
                return Ok(Output::PartialMetadata);
            }
            (YAML, None) => return Ok(Output::Yaml),
            (PROTOBUF, None) => return Ok(Output::Protobuf),
            _ => {}
        }
    }
    Err(ApiError::not_acceptable(accept))
}

/// The media type of a `Content-Type` header, without parameters.
pub fn media_type(content_type: Option<&str>) -> String {
    content_type
        .unwrap_or(JSON)
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A decoded request body, with the duplicate fields strict decoding reports.
pub struct Decoded {
    pub value: Value,
    pub duplicates: Vec<String>,
}

/// Decodes a request body of a write (create, update).
pub fn decode_object(content_type: Option<&str>, body: &[u8]) -> ApiResult<Decoded> {
    match media_type(content_type).as_str() {
        JSON | "" => decode_json(body),
        YAML | "application/x-yaml" | "text/yaml" => decode_yaml(body),
        PROTOBUF => {
            let value = api_types::wire::protobuf::decode(body).map_err(|e| {
                ApiError::bad_request(format!("failed to decode protobuf body: {e}"))
            })?;
            Ok(Decoded {
                value,
                duplicates: Vec::new(),
            })
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

pub fn decode_yaml(body: &[u8]) -> ApiResult<Decoded> {
    let value: Value = serde_yaml::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "error decoding YAML: the body is not an object",
        ));
    }
    Ok(Decoded {
        value,
        duplicates: Vec::new(),
    })
}

/// JSON that must be an object; duplicate keys are collected with their paths.
pub fn decode_json(body: &[u8]) -> ApiResult<Decoded> {
    let mut duplicates = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = TrackDuplicates {
        path: String::new(),
        duplicates: &mut duplicates,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|_| v))
    .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "couldn't get version/kind; json parse error: the body is not a JSON object",
        ));
    }
    Ok(Decoded { value, duplicates })
}

/// A serde seed that builds a `Value` and notes every key seen twice in one object.
struct TrackDuplicates<'a> {
    path: String,
    duplicates: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for TrackDuplicates<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TrackDuplicates<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v)
            .map(Value::Number)
            .unwrap_or(Value::Null))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        let mut i = 0;
        while let Some(v) = seq.next_element_seed(TrackDuplicates {
            path: format!("{}[{}]", self.path, i),
            duplicates: self.duplicates,
        })? {
            out.push(v);
            i += 1;
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{}", self.path, key)
            };
            let v = map.next_value_seed(TrackDuplicates {
                path: path.clone(),
                duplicates: self.duplicates,
            })?;
            if out.insert(key, v).is_some() {
                self.duplicates.push(path);
            }
        }
        Ok(Value::Object(out))
    }
}

/// Field paths in `value` that the kind's schema does not know, for `fieldValidation`.
pub fn unknown_fields(definition: &str, value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(obj) = value.as_object() {
        for (k, v) in obj {
            if matches!(k.as_str(), "apiVersion" | "kind") {
                continue;
            }
            walk(definition, k, v, k.clone(), &mut out);
        }
    }
    out
}

fn walk(definition: &str, field: &str, value: &Value, path: String, out: &mut Vec<String>) {
    use api_types::wire::{self, FieldType};
    let Some(msg) = wire::message(definition) else {
        return;
    };
    let Some(f) = msg.field(field) else {
        out.push(path);
        return;
    };
    let FieldType::Message(child) = &f.ty else {
        return;
    };
    // Fields held as raw JSON (RawExtension, FieldsV1, ...) have no schema to check.
    let Some(child_msg) = wire::message(child) else {
        return;
    };
    if child_msg.fields.is_empty() {
        return;
    }
    let mut visit = |v: &Value, p: String| {
        if let Some(o) = v.as_object() {
            for (k, v2) in o {
                walk(child, k, v2, format!("{p}.{k}"), out);
            }
        }
    };
    match value {
        Value::Array(items) if f.repeated => {
            for (i, item) in items.iter().enumerate() {
                visit(item, format!("{path}[{i}]"));
            }
        }
        v => visit(v, path),
    }
}

/// Serialises a response body in the negotiated format (objects, lists and Status).
pub fn encode(output: Output, value: &Value, pretty: bool) -> ApiResult<(Vec<u8>, &'static str)> {
    match output {
        Output::Yaml => serde_yaml::to_string(value)
            .map(|s| (s.into_bytes(), YAML))
            .map_err(|e| ApiError::internal(e.to_string())),
        Output::Protobuf => match api_types::wire::protobuf::encode(value) {
            Ok(b) => Ok((b, PROTOBUF)),
            // Kinds the protobuf schema lacks are answered in JSON, as upstream does for
            // types without protobuf support.
            Err(_) => Ok((serde_json::to_vec(value).unwrap_or_default(), JSON)),
        },
        _ => {
            let body = if pretty {
                serde_json::to_vec_pretty(value)
            } else {
                serde_json::to_vec(value)
            };
            body.map(|b| (b, JSON))
                .map_err(|e| ApiError::internal(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_client_order() {
        assert_eq!(negotiate(None).unwrap(), Output::Json);
        assert_eq!(
            negotiate(Some("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json")).unwrap(),
            Output::Table
        );
        assert_eq!(
            negotiate(Some("application/vnd.kubernetes.protobuf, */*")).unwrap(),
            Output::Protobuf
        );
        assert_eq!(
            negotiate(Some(
                "application/json, application/vnd.kubernetes.protobuf"
            ))
            .unwrap(),
            Output::Json
        );
        assert_eq!(
            negotiate(Some("application/json;as=Table;v=v9;g=x, application/yaml")).unwrap(),
            Output::Yaml
        );
        assert!(negotiate(Some("text/html")).is_err());
    }

    #[test]
    fn duplicate_fields_are_found() {
        let d = decode_json(br#"{"a": 1, "b": {"c": 1, "c": 2}, "a": 3}"#).unwrap();
        assert_eq!(d.duplicates, vec!["b.c".to_string(), "a".to_string()]);
        assert_eq!(d.value["a"], 3);
        assert!(decode_json(b"[1]").is_err());
        assert!(decode_json(b"{").is_err());
    }
}
