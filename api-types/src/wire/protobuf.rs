//! The Kubernetes protobuf encoding (`application/vnd.kubernetes.protobuf`) ⇄ upstream JSON.
//!
//! A body is the 4-byte magic `k8s\0` followed by a `runtime.Unknown` message:
//! `{typeMeta=1 {apiVersion=1, kind=2}, raw=2, contentEncoding=3, contentType=4}`, where `raw`
//! is the object's own protobuf message (without `apiVersion`/`kind`, which live in
//! `typeMeta`). The object messages are decoded and encoded generically from the schema
//! tables ([`super::message`]); special apimachinery types (`Time`, `Quantity`,
//! `IntOrString`, ...) get their JSON forms (see [`Special`]).
//!
//! Decoding reproduces what upstream's apiserver sees: it decodes protobuf into Go structs
//! and those structs' JSON form is the JSON form of the API. gogo-protobuf writes every
//! non-pointer scalar, zero or not, so a zero scalar of a non-pointer `omitempty` field
//! (`terminationMessagePath: ""`, `timeoutSeconds: 0`) decodes to an absent property, as Go's
//! JSON encoder would leave it out; zeros of pointer fields (`replicas: 0`) and of fields
//! without `omitempty` are kept. Nested messages present on the wire are kept, so a
//! non-pointer struct reads `{}` and a zero `Time` reads `null`, as in Go.
//!
//! Watch streams use the raw (envelope-less) encoding of a `meta.v1.WatchEvent` per frame,
//! each frame prefixed by its length as a 4-byte big-endian integer; the event's
//! `object.raw` holds the object's full encoding (magic and envelope included). See
//! [`encode_watch_event`].

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::go;
use super::{message, FieldType, Message, Special};
use crate::resources;

/// The bytes every protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// The media type of the protobuf encoding.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The media type of protobuf watch streams.
pub const WATCH_CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";

/// Nesting deeper than this (only reachable through embedded `RawExtension` objects) is
/// rejected rather than followed.
const MAX_DEPTH: usize = 64;

/// Why a protobuf body could not be decoded or a JSON object could not be encoded. The
/// apiserver answers these with 400 Bad Request.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("provided data does not appear to be a protobuf message, expected prefix {MAGIC:?}")]
    BadMagic,
    #[error("no kind {kind:?} is registered for version {api_version:?}")]
    UnknownKind { api_version: String, kind: String },
    #[error("malformed protobuf at {path}: {reason}")]
    Malformed { path: String, reason: String },
    #[error("unsupported protobuf content encoding {0:?}")]
    ContentEncoding(String),
    #[error("cannot encode {path} as protobuf: {reason}")]
    Unencodable { path: String, reason: String },
}

pub type Result<T, E = ProtobufError> = std::result::Result<T, E>;

/// Decodes a protobuf body (magic + `runtime.Unknown`) into the object's upstream JSON form,
/// with `kind` and `apiVersion` set from the envelope.
pub fn decode(body: &[u8]) -> Result<Value> {
    decode_at(body, &Path::Root, 0)
}

/// Encodes an object in upstream JSON form (with `apiVersion` and `kind`) as a protobuf body:
/// magic + `runtime.Unknown` envelope.
pub fn encode(value: &Value) -> Result<Vec<u8>> {
    encode_at(value, &Path::Root)
}

/// Encodes one watch event as upstream's protobuf watch frame payload: a raw
/// `meta.v1.WatchEvent {type=1, object=2 RawExtension{raw=1}}`, with the object's full
/// protobuf encoding ([`encode`]) in `raw`. The caller writes the 4-byte big-endian length of
/// the payload before it, as upstream's length-delimited framer does.
pub fn encode_watch_event(event_type: &str, object: &Value) -> Result<Vec<u8>> {
    let raw = encode_at(object, &Path::Field(&Path::Root, "object"))?;
    let mut extension = Vec::with_capacity(raw.len() + 8);
    put_bytes(&mut extension, 1, &raw);
    let mut out = Vec::with_capacity(extension.len() + event_type.len() + 8);
    put_bytes(&mut out, 1, event_type.as_bytes());
    put_bytes(&mut out, 2, &extension);
    Ok(out)
}

/// Decodes a watch frame payload ([`encode_watch_event`]'s output, without the length
/// prefix) into the event type and the object's JSON.
pub fn decode_watch_event(payload: &[u8]) -> Result<(String, Value)> {
    let mut event_type = String::new();
    let mut object = Value::Null;
    for item in Fields::new(payload) {
        let (tag, value) = item.map_err(|r| malformed(&Path::Root, r))?;
        match (tag, value) {
            (1, WireValue::Bytes(b)) => event_type = String::from_utf8_lossy(b).into_owned(),
            (2, WireValue::Bytes(ext)) => {
                let path = Path::Field(&Path::Root, "object");
                for item in Fields::new(ext) {
                    if let (1, WireValue::Bytes(raw)) = item.map_err(|r| malformed(&path, r))? {
                        object = decode_at(raw, &path, 1)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok((event_type, object))
}

/// The OpenAPI definition of the message a `apiVersion`/`kind` pair is encoded with, e.g.
/// (`apps/v1`, `Deployment`) → `io.k8s.api.apps.v1.Deployment`.
///
/// Knows the served resources and their lists (from [`resources`]), the kinds posted to
/// subresources and review endpoints (`Binding`, `Eviction`, `Scale`, `TokenRequest`,
/// `TokenReview`, `SubjectAccessReview`, ...), and the meta kinds every group version carries
/// (`DeleteOptions`, `Status`, `WatchEvent`, ...). Any other kind of a built-in group whose
/// message is in the tables is found by its group's package name.
pub fn definition_for(api_version: &str, kind: &str) -> Option<&'static str> {
    let (group, version) = resources::split_api_version(api_version);
    if let Some(r) = resources::find_by_kind(group, version, kind) {
        return Some(r.definition);
    }
    if let Some(item) = kind.strip_suffix("List") {
        if let Some(r) = resources::find_by_kind(group, version, item) {
            let list = format!("{}List", r.definition);
            return message(&list).map(|m| m.name);
        }
    }
    // Meta kinds registered in every group version (upstream's AddToGroupVersion).
    const META: &[&str] = &[
        "DeleteOptions",
        "Status",
        "WatchEvent",
        "APIVersions",
        "APIGroupList",
        "APIGroup",
        "APIResourceList",
    ];
    if META.contains(&kind) && !version.is_empty() {
        return message(&format!("io.k8s.apimachinery.pkg.apis.meta.v1.{kind}")).map(|m| m.name);
    }
    if group == "meta.k8s.io" && (version == "v1" || version == "v1beta1") {
        return message(&format!("io.k8s.apimachinery.pkg.apis.meta.v1.{kind}")).map(|m| m.name);
    }
    let package = group_package(group)?;
    let name = format!("io.k8s.api.{package}.{version}.{kind}");
    let found = message(&name)?;
    // Only top-level kinds (with object or list metadata), not nested messages such as PodSpec.
    found.field("metadata").map(|_| found.name)
}

/// The Go package (and proto package segment) of a built-in API group.
fn group_package(group: &str) -> Option<&str> {
    Some(match group {
        "" => "core",
        "rbac.authorization.k8s.io" => "rbac",
        "flowcontrol.apiserver.k8s.io" => "flowcontrol",
        "internal.apiserver.k8s.io" => "apiserverinternal",
        "storagemigration.k8s.io" => "storagemigration",
        g => match g.strip_suffix(".k8s.io") {
            Some(short) if !short.contains('.') => short,
            Some(_) => return None,
            None if !g.contains('.') => g,
            None => return None,
        },
    })
}

// ----------------------------------------------------------------------------------------
// Decoding

fn decode_at(body: &[u8], path: &Path<'_>, depth: usize) -> Result<Value> {
    if depth > MAX_DEPTH {
        return Err(malformed(path, "objects nested too deeply"));
    }
    let data = body.strip_prefix(MAGIC).ok_or(ProtobufError::BadMagic)?;
    if data.is_empty() {
        return Err(malformed(path, "empty body"));
    }
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    let mut content_encoding = String::new();
    let envelope = Path::Field(path, "(envelope)");
    for item in Fields::new(data) {
        let (tag, value) = item.map_err(|r| malformed(&envelope, r))?;
        match (tag, value) {
            (1, WireValue::Bytes(type_meta)) => {
                for item in Fields::new(type_meta) {
                    match item.map_err(|r| malformed(&envelope, r))? {
                        (1, WireValue::Bytes(b)) => api_version = lossy(b),
                        (2, WireValue::Bytes(b)) => kind = lossy(b),
                        _ => {}
                    }
                }
            }
            (2, WireValue::Bytes(b)) => raw = b,
            (3, WireValue::Bytes(b)) => content_encoding = lossy(b),
            _ => {}
        }
    }
    if !content_encoding.is_empty() {
        return Err(ProtobufError::ContentEncoding(content_encoding));
    }
    let definition = definition_for(&api_version, &kind)
        .and_then(message)
        .ok_or_else(|| ProtobufError::UnknownKind {
            api_version: api_version.clone(),
            kind: kind.clone(),
        })?;
    let mut object = Map::new();
    object.insert("kind".into(), Value::String(kind));
    object.insert("apiVersion".into(), Value::String(api_version));
    decode_fields(definition, raw, &mut object, path, depth)?;
    Ok(Value::Object(object))
}

/// Decodes a message's wire bytes into its JSON value.
fn decode_message(
    msg: &'static Message,
    data: &[u8],
    path: &Path<'_>,
    depth: usize,
) -> Result<Value> {
    match msg.special {
        None => {
            let mut object = Map::new();
            decode_fields(msg, data, &mut object, path, depth)?;
            Ok(Value::Object(object))
        }
        Some(special) => decode_special(special, data, path, depth),
    }
}

/// Decodes a message's fields into `object` (shared with the parent for inlined messages).
fn decode_fields(
    msg: &'static Message,
    data: &[u8],
    object: &mut Map<String, Value>,
    path: &Path<'_>,
    depth: usize,
) -> Result<()> {
    for item in Fields::new(data) {
        let (tag, wire) = item.map_err(|r| malformed(path, r))?;
        // Unknown fields are skipped, as upstream's generated unmarshalers do.
        let Some(field) = msg.field_by_tag(tag) else {
            continue;
        };
        let here = Path::Field(path, field.json);
        if field.inline {
            let WireValue::Bytes(sub) = wire else {
                return Err(malformed(&here, "inlined message is not length-delimited"));
            };
            let Some(inner) = field.message() else {
                return Err(malformed(&here, "inlined field without a message"));
            };
            decode_fields(inner, sub, object, path, depth)?;
            continue;
        }
        match field.ty {
            FieldType::Map { key, value } => {
                let WireValue::Bytes(entry) = wire else {
                    return Err(malformed(&here, "map entry is not length-delimited"));
                };
                let (k, v) = decode_map_entry(key, value, entry, &here, depth)?;
                let map = object
                    .entry(field.json)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = map {
                    map.insert(k, v);
                }
            }
            ty if field.repeated => {
                let items = decode_repeated(&ty, wire, &here, depth)?;
                let list = object
                    .entry(field.json)
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(list) = list {
                    list.extend(items);
                }
            }
            ty => {
                let value = decode_single(&ty, wire, &here, depth)?;
                let scalar = !matches!(ty, FieldType::Message(_));
                if scalar && !field.keeps_zero() && is_zero(&value) {
                    object.remove(field.json);
                } else {
                    object.insert(field.json.to_string(), value);
                }
            }
        }
    }
    Ok(())
}

fn decode_map_entry(
    key_ty: &FieldType,
    value_ty: &FieldType,
    entry: &[u8],
    path: &Path<'_>,
    depth: usize,
) -> Result<(String, Value)> {
    let mut key = None;
    let mut value = None;
    for item in Fields::new(entry) {
        let (tag, wire) = item.map_err(|r| malformed(path, r))?;
        match tag {
            1 => key = Some(decode_single(key_ty, wire, path, depth)?),
            2 => value = Some(decode_single(value_ty, wire, path, depth)?),
            _ => {}
        }
    }
    let key = match key {
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let here = Path::Key(path, &key);
    let value = match value {
        Some(v) => v,
        None => zero_value(value_ty, &here, depth)?,
    };
    Ok((key, value))
}

/// The JSON of a field's type when the wire holds no value for it (a map entry without one).
fn zero_value(ty: &FieldType, path: &Path<'_>, depth: usize) -> Result<Value> {
    Ok(match ty {
        FieldType::String | FieldType::Bytes => Value::String(String::new()),
        FieldType::Bool => Value::Bool(false),
        FieldType::Int32 | FieldType::Int64 => Value::from(0),
        FieldType::Double | FieldType::Float => Value::from(0.0),
        FieldType::Message(name) => decode_message(lookup(name, path)?, &[], path, depth)?,
        FieldType::Map { .. } => Value::Object(Map::new()),
    })
}

fn decode_repeated(
    ty: &FieldType,
    wire: WireValue<'_>,
    path: &Path<'_>,
    depth: usize,
) -> Result<Vec<Value>> {
    // Packed scalars arrive as one length-delimited run of values.
    if let (WireValue::Bytes(run), FieldType::Int32 | FieldType::Int64 | FieldType::Bool) =
        (&wire, ty)
    {
        let mut out = Vec::new();
        let mut rest = *run;
        while !rest.is_empty() {
            let (v, n) = read_varint(rest).ok_or_else(|| malformed(path, "bad packed varint"))?;
            rest = &rest[n..];
            out.push(varint_json(ty, v));
        }
        return Ok(out);
    }
    if let (WireValue::Bytes(run), FieldType::Double | FieldType::Float) = (&wire, ty) {
        let width = if matches!(ty, FieldType::Double) {
            8
        } else {
            4
        };
        if run.len() % width != 0 {
            return Err(malformed(
                path,
                "packed run is not a whole number of values",
            ));
        }
        return Ok(run
            .chunks_exact(width)
            .map(|c| {
                if width == 8 {
                    float_json(f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                } else {
                    float_json(f64::from(f32::from_le_bytes(
                        c.try_into().unwrap_or([0; 4]),
                    )))
                }
            })
            .collect());
    }
    Ok(vec![decode_single(ty, wire, path, depth)?])
}

fn decode_single(
    ty: &FieldType,
    wire: WireValue<'_>,
    path: &Path<'_>,
    depth: usize,
) -> Result<Value> {
    let mismatch = || malformed(path, format!("wire type does not fit a {ty:?} field"));
    Ok(match (ty, wire) {
        (FieldType::String, WireValue::Bytes(b)) => Value::String(lossy(b)),
        (FieldType::Bytes, WireValue::Bytes(b)) => Value::String(BASE64.encode(b)),
        (FieldType::Bool | FieldType::Int32 | FieldType::Int64, WireValue::Varint(v)) => {
            varint_json(ty, v)
        }
        (FieldType::Double, WireValue::Fixed64(v)) => float_json(f64::from_bits(v)),
        (FieldType::Float, WireValue::Fixed32(v)) => float_json(f64::from(f32::from_bits(v))),
        (FieldType::Message(name), WireValue::Bytes(b)) => {
            decode_message(lookup(name, path)?, b, path, depth)?
        }
        _ => return Err(mismatch()),
    })
}

fn decode_special(special: Special, data: &[u8], path: &Path<'_>, depth: usize) -> Result<Value> {
    let mut ints = [0u64; 4];
    let mut strings: [Option<&[u8]>; 4] = [None; 4];
    let mut items = Vec::new();
    for item in Fields::new(data) {
        let (tag, wire) = item.map_err(|r| malformed(path, r))?;
        let slot = usize::try_from(tag).unwrap_or(0);
        match wire {
            WireValue::Varint(v) if slot < 4 => ints[slot] = v,
            WireValue::Bytes(b) if special == Special::ListWrapper && tag == 1 => items.push(b),
            WireValue::Bytes(b) if slot < 4 => strings[slot] = Some(b),
            _ => {}
        }
    }
    Ok(match special {
        Special::Time | Special::MicroTime => {
            // Upstream's Time unmarshals an empty message to the zero time, which is `null`.
            if data.is_empty() {
                return Ok(Value::Null);
            }
            let seconds = ints[1] as i64;
            let nanos = ints[2] as i64 as i32;
            let text = if special == Special::Time {
                go::format_time(seconds, nanos)
            } else {
                go::format_micro_time(seconds, nanos)
            };
            Value::String(text.ok_or_else(|| malformed(path, "time out of range"))?)
        }
        Special::Duration => Value::String(go::format_duration(ints[1] as i64)),
        Special::Quantity => match strings[1] {
            Some(s) if !s.is_empty() => Value::String(lossy(s)),
            _ => Value::String("0".into()),
        },
        Special::IntOrString => {
            if ints[1] == 1 {
                Value::String(strings[3].map(lossy).unwrap_or_default())
            } else {
                Value::from(ints[2] as i64 as i32)
            }
        }
        Special::RawExtension | Special::FieldsV1 => match strings[1] {
            None | Some([]) => Value::Null,
            Some(raw) if raw.starts_with(MAGIC) => decode_at(raw, path, depth + 1)?,
            Some(raw) => serde_json::from_slice(raw)
                .map_err(|e| malformed(path, format!("embedded JSON: {e}")))?,
        },
        Special::ListWrapper => {
            Value::Array(items.into_iter().map(|b| Value::String(lossy(b))).collect())
        }
    })
}

fn varint_json(ty: &FieldType, v: u64) -> Value {
    match ty {
        FieldType::Bool => Value::Bool(v != 0),
        // Negative int32s are sign-extended to ten bytes on the wire.
        FieldType::Int32 => Value::from(v as i64 as i32),
        _ => Value::from(v as i64),
    }
}

fn float_json(v: f64) -> Value {
    Number::from_f64(v).map_or(Value::Null, Value::Number)
}

fn is_zero(value: &Value) -> bool {
    match value {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Null => true,
        _ => false,
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn lookup(name: &str, path: &Path<'_>) -> Result<&'static Message> {
    message(name).ok_or_else(|| malformed(path, format!("no schema for {name}")))
}

// ----------------------------------------------------------------------------------------
// Encoding

fn encode_at(value: &Value, path: &Path<'_>) -> Result<Vec<u8>> {
    let object = value
        .as_object()
        .ok_or_else(|| unencodable(path, "not an object"))?;
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let definition = definition_for(api_version, kind)
        .and_then(message)
        .ok_or_else(|| ProtobufError::UnknownKind {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        })?;
    let mut raw = Vec::new();
    encode_fields(definition, object, &mut raw, path)?;

    let mut type_meta = Vec::with_capacity(api_version.len() + kind.len() + 4);
    put_bytes(&mut type_meta, 1, api_version.as_bytes());
    put_bytes(&mut type_meta, 2, kind.as_bytes());
    let mut out = Vec::with_capacity(raw.len() + type_meta.len() + 16);
    out.extend_from_slice(MAGIC);
    put_bytes(&mut out, 1, &type_meta);
    put_bytes(&mut out, 2, &raw);
    // Like upstream, the empty contentEncoding and contentType are written too.
    put_bytes(&mut out, 3, b"");
    put_bytes(&mut out, 4, b"");
    Ok(out)
}

/// Encodes the message's fields found in `object`, in tag order. Properties the message does
/// not know are dropped, as Go's JSON decoding drops them.
fn encode_fields(
    msg: &'static Message,
    object: &Map<String, Value>,
    out: &mut Vec<u8>,
    path: &Path<'_>,
) -> Result<()> {
    for field in msg.fields {
        if field.inline {
            let inner = field
                .message()
                .ok_or_else(|| unencodable(path, "inlined field without a message"))?;
            let mut sub = Vec::new();
            encode_fields(inner, object, &mut sub, path)?;
            put_bytes(out, field.tag, &sub);
            continue;
        }
        let Some(value) = object.get(field.json) else {
            continue;
        };
        let here = Path::Field(path, field.json);
        if value.is_null() {
            // A null non-pointer struct is Go's zero struct, which gogo-protobuf writes as an
            // empty message (a zero `Time` decodes back to null).
            if let (FieldType::Message(_), false, false) =
                (field.ty, field.nullable, field.repeated)
            {
                put_bytes(out, field.tag, &[]);
            }
            continue;
        }
        match field.ty {
            FieldType::Map {
                key,
                value: value_ty,
            } => {
                let map = value
                    .as_object()
                    .ok_or_else(|| unencodable(&here, "expected an object"))?;
                // gogo-protobuf writes map entries sorted by key.
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                for k in keys {
                    let item_path = Path::Key(&here, k);
                    let mut entry = Vec::new();
                    encode_single(key, &Value::String(k.clone()), 1, &mut entry, &item_path)?;
                    let v = &map[k.as_str()];
                    if !v.is_null() {
                        encode_single(value_ty, v, 2, &mut entry, &item_path)?;
                    }
                    put_bytes(out, field.tag, &entry);
                }
            }
            ty if field.repeated => {
                let items = value
                    .as_array()
                    .ok_or_else(|| unencodable(&here, "expected an array"))?;
                for (i, item) in items.iter().enumerate() {
                    let item_path = Path::Index(&here, i);
                    if item.is_null() {
                        return Err(unencodable(&item_path, "null list item"));
                    }
                    encode_single(&ty, item, field.tag, out, &item_path)?;
                }
            }
            ty => encode_single(&ty, value, field.tag, out, &here)?,
        }
    }
    Ok(())
}

fn encode_single(
    ty: &FieldType,
    value: &Value,
    tag: u32,
    out: &mut Vec<u8>,
    path: &Path<'_>,
) -> Result<()> {
    match ty {
        FieldType::String => {
            let s = value
                .as_str()
                .ok_or_else(|| unencodable(path, "expected a string"))?;
            put_bytes(out, tag, s.as_bytes());
        }
        FieldType::Bytes => {
            let s = value
                .as_str()
                .ok_or_else(|| unencodable(path, "expected a base64 string"))?;
            let bytes = BASE64
                .decode(s)
                .map_err(|e| unencodable(path, format!("invalid base64: {e}")))?;
            put_bytes(out, tag, &bytes);
        }
        FieldType::Bool => {
            let b = value
                .as_bool()
                .ok_or_else(|| unencodable(path, "expected a boolean"))?;
            put_varint_field(out, tag, u64::from(b));
        }
        FieldType::Int32 => {
            let n = integer(value, path)?;
            let n = i32::try_from(n).map_err(|_| unencodable(path, "out of int32 range"))?;
            put_varint_field(out, tag, i64::from(n) as u64);
        }
        FieldType::Int64 => put_varint_field(out, tag, integer(value, path)? as u64),
        FieldType::Double => {
            let f = value
                .as_f64()
                .ok_or_else(|| unencodable(path, "expected a number"))?;
            put_key(out, tag, WIRE_FIXED64);
            out.extend_from_slice(&f.to_le_bytes());
        }
        FieldType::Float => {
            let f = value
                .as_f64()
                .ok_or_else(|| unencodable(path, "expected a number"))?;
            put_key(out, tag, WIRE_FIXED32);
            out.extend_from_slice(&(f as f32).to_le_bytes());
        }
        FieldType::Message(name) => {
            let msg =
                message(name).ok_or_else(|| unencodable(path, format!("no schema for {name}")))?;
            let mut sub = Vec::new();
            match msg.special {
                None => {
                    let object = value
                        .as_object()
                        .ok_or_else(|| unencodable(path, "expected an object"))?;
                    encode_fields(msg, object, &mut sub, path)?;
                }
                Some(special) => encode_special(special, value, &mut sub, path)?,
            }
            put_bytes(out, tag, &sub);
        }
        FieldType::Map { .. } => return Err(unencodable(path, "nested map")),
    }
    Ok(())
}

fn encode_special(
    special: Special,
    value: &Value,
    out: &mut Vec<u8>,
    path: &Path<'_>,
) -> Result<()> {
    match special {
        Special::Time | Special::MicroTime => {
            let text = value
                .as_str()
                .ok_or_else(|| unencodable(path, "expected an RFC 3339 time string"))?;
            let (seconds, nanos) = go::parse_time(text)
                .ok_or_else(|| unencodable(path, format!("invalid RFC 3339 time {text:?}")))?;
            put_varint_field(out, 1, seconds as u64);
            put_varint_field(out, 2, i64::from(nanos) as u64);
        }
        Special::Duration => {
            let text = value
                .as_str()
                .ok_or_else(|| unencodable(path, "expected a duration string"))?;
            let nanos = go::parse_duration(text)
                .ok_or_else(|| unencodable(path, format!("invalid duration {text:?}")))?;
            put_varint_field(out, 1, nanos as u64);
        }
        Special::Quantity => {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(unencodable(path, "expected a quantity string or number")),
            };
            put_bytes(out, 1, text.as_bytes());
        }
        Special::IntOrString => match value {
            Value::String(s) => {
                put_varint_field(out, 1, 1);
                put_varint_field(out, 2, 0);
                put_bytes(out, 3, s.as_bytes());
            }
            Value::Number(_) => {
                let n = integer(value, path)?;
                let n = i32::try_from(n).map_err(|_| unencodable(path, "out of int32 range"))?;
                put_varint_field(out, 1, 0);
                put_varint_field(out, 2, i64::from(n) as u64);
                put_bytes(out, 3, b"");
            }
            _ => return Err(unencodable(path, "expected an integer or a string")),
        },
        Special::RawExtension | Special::FieldsV1 => {
            let raw = serde_json::to_vec(value).map_err(|e| unencodable(path, e.to_string()))?;
            put_bytes(out, 1, &raw);
        }
        Special::ListWrapper => {
            let items = value
                .as_array()
                .ok_or_else(|| unencodable(path, "expected an array of strings"))?;
            for (i, item) in items.iter().enumerate() {
                let s = item
                    .as_str()
                    .ok_or_else(|| unencodable(&Path::Index(path, i), "expected a string"))?;
                put_bytes(out, 1, s.as_bytes());
            }
        }
    }
    Ok(())
}

fn integer(value: &Value, path: &Path<'_>) -> Result<i64> {
    if let Some(n) = value.as_i64() {
        return Ok(n);
    }
    match value.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(f as i64),
        _ => Err(unencodable(path, "expected an integer")),
    }
}

// ----------------------------------------------------------------------------------------
// Wire format

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_BYTES: u8 = 2;
const WIRE_FIXED32: u8 = 5;

/// One field value as it appears on the wire.
#[derive(Debug, Clone, Copy)]
enum WireValue<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Iterates over the `(tag, value)` pairs of a message's bytes.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(data: &'a [u8]) -> Self {
        Fields { rest: data }
    }

    fn next_field(&mut self) -> Result<(u32, WireValue<'a>), String> {
        let (key, n) = read_varint(self.rest).ok_or("truncated field key")?;
        self.rest = &self.rest[n..];
        let tag = u32::try_from(key >> 3).map_err(|_| "field number out of range")?;
        if tag == 0 {
            return Err("field number 0".into());
        }
        let value = match (key & 7) as u8 {
            WIRE_VARINT => {
                let (v, n) = read_varint(self.rest).ok_or("truncated varint")?;
                self.rest = &self.rest[n..];
                WireValue::Varint(v)
            }
            WIRE_FIXED64 => {
                let (bytes, rest) = self
                    .rest
                    .split_first_chunk::<8>()
                    .ok_or("truncated fixed64")?;
                self.rest = rest;
                WireValue::Fixed64(u64::from_le_bytes(*bytes))
            }
            WIRE_BYTES => {
                let (len, n) = read_varint(self.rest).ok_or("truncated length")?;
                let rest = &self.rest[n..];
                let len = usize::try_from(len).map_err(|_| "length out of range")?;
                if len > rest.len() {
                    return Err(format!(
                        "field {tag} claims {len} bytes, only {} remain",
                        rest.len()
                    ));
                }
                let (bytes, rest) = rest.split_at(len);
                self.rest = rest;
                WireValue::Bytes(bytes)
            }
            WIRE_FIXED32 => {
                let (bytes, rest) = self
                    .rest
                    .split_first_chunk::<4>()
                    .ok_or("truncated fixed32")?;
                self.rest = rest;
                WireValue::Fixed32(u32::from_le_bytes(*bytes))
            }
            other => return Err(format!("unsupported wire type {other} for field {tag}")),
        };
        Ok((tag, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, WireValue<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = self.next_field();
        if item.is_err() {
            self.rest = &[];
        }
        Some(item)
    }
}

/// Reads a base-128 varint; returns the value and the number of bytes it took.
fn read_varint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in data.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, tag: u32, wire: u8) {
    put_varint(out, (u64::from(tag) << 3) | u64::from(wire));
}

fn put_varint_field(out: &mut Vec<u8>, tag: u32, v: u64) {
    put_key(out, tag, WIRE_VARINT);
    put_varint(out, v);
}

fn put_bytes(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    put_key(out, tag, WIRE_BYTES);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

// ----------------------------------------------------------------------------------------
// Field paths for error messages

/// Where in the object an error is, printed as `spec.containers[0].ports`.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Field(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
    Key(&'a Path<'a>, &'a str),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => f.write_str("<root>"),
            Path::Field(Path::Root, name) => f.write_str(name),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
            Path::Key(parent, key) => write!(f, "{parent}[{key:?}]"),
        }
    }
}

fn malformed(path: &Path<'_>, reason: impl Into<String>) -> ProtobufError {
    ProtobufError::Malformed {
        path: path.to_string(),
        reason: reason.into(),
    }
}

fn unencodable(path: &Path<'_>, reason: impl Into<String>) -> ProtobufError {
    ProtobufError::Unencodable {
        path: path.to_string(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::messages;

    /// A JSON value for every field of `msg` (nested up to `depth`), non-zero throughout.
    fn sample(msg: &'static Message, depth: usize) -> Value {
        if let Some(special) = msg.special {
            return match special {
                Special::Time => json_str("2023-11-14T22:13:20Z"),
                Special::MicroTime => json_str("2023-11-14T22:13:20.123456Z"),
                Special::Duration => json_str("1m30s"),
                Special::Quantity => json_str("1Gi"),
                Special::IntOrString => Value::from(5),
                Special::RawExtension => serde_json::json!({"apiVersion": "v1", "n": [1, "a"]}),
                Special::FieldsV1 => serde_json::json!({"f:metadata": {"f:name": {}}}),
                Special::ListWrapper => serde_json::json!(["x", "y"]),
            };
        }
        let mut object = Map::new();
        fill(msg, depth, &mut object);
        Value::Object(object)
    }

    fn fill(msg: &'static Message, depth: usize, object: &mut Map<String, Value>) {
        for field in msg.fields {
            if field.inline {
                if let Some(inner) = field.message() {
                    fill(inner, depth, object);
                }
                continue;
            }
            let Some(value) = sample_type(field.ty.value(), depth) else {
                continue;
            };
            let value = if field.is_map() {
                serde_json::json!({ "k1": value.clone(), "k2": value })
            } else if field.repeated {
                Value::Array(vec![value.clone(), value])
            } else {
                value
            };
            object.insert(field.json.to_string(), value);
        }
    }

    fn sample_type(ty: &FieldType, depth: usize) -> Option<Value> {
        Some(match ty {
            FieldType::String => json_str("text"),
            FieldType::Bytes => json_str("AAEC/w=="),
            FieldType::Bool => Value::Bool(true),
            FieldType::Int32 => Value::from(-7),
            FieldType::Int64 => Value::from(1_i64 << 40),
            FieldType::Double => Value::from(1.5),
            FieldType::Float => Value::from(0.5),
            FieldType::Message(name) => {
                if depth == 0 {
                    return None;
                }
                sample(message(name)?, depth - 1)
            }
            FieldType::Map { .. } => return None,
        })
    }

    fn json_str(s: &str) -> Value {
        Value::String(s.into())
    }

    #[test]
    fn every_message_round_trips_with_every_field_set() {
        for msg in messages() {
            let value = sample(msg, 4);
            let mut wire = Vec::new();
            match &value {
                Value::Object(object) if msg.special.is_none() => {
                    encode_fields(msg, object, &mut wire, &Path::Root)
                        .unwrap_or_else(|e| panic!("{}: {e}", msg.name));
                }
                _ => {
                    let ty = FieldType::Message(msg.name);
                    encode_single(&ty, &value, 1, &mut wire, &Path::Root)
                        .unwrap_or_else(|e| panic!("{}: {e}", msg.name));
                    let (_, WireValue::Bytes(inner)) = Fields::new(&wire)
                        .next()
                        .and_then(Result::ok)
                        .unwrap_or_else(|| panic!("{}: no field", msg.name))
                    else {
                        panic!("{}: not length-delimited", msg.name);
                    };
                    wire = inner.to_vec();
                }
            }
            let decoded = decode_message(msg, &wire, &Path::Root, 0)
                .unwrap_or_else(|e| panic!("{}: {e}", msg.name));
            assert_eq!(decoded, value, "{}", msg.name);
        }
    }

    #[test]
    fn definitions_for_kinds() {
        for (api_version, kind, definition) in [
            ("v1", "Pod", "io.k8s.api.core.v1.Pod"),
            ("v1", "PodList", "io.k8s.api.core.v1.PodList"),
            ("apps/v1", "Deployment", "io.k8s.api.apps.v1.Deployment"),
            ("v1", "Binding", "io.k8s.api.core.v1.Binding"),
            ("policy/v1", "Eviction", "io.k8s.api.policy.v1.Eviction"),
            ("autoscaling/v1", "Scale", "io.k8s.api.autoscaling.v1.Scale"),
            (
                "authentication.k8s.io/v1",
                "TokenRequest",
                "io.k8s.api.authentication.v1.TokenRequest",
            ),
            (
                "authentication.k8s.io/v1",
                "TokenReview",
                "io.k8s.api.authentication.v1.TokenReview",
            ),
            (
                "authorization.k8s.io/v1",
                "SubjectAccessReview",
                "io.k8s.api.authorization.v1.SubjectAccessReview",
            ),
            (
                "authorization.k8s.io/v1",
                "SelfSubjectRulesReview",
                "io.k8s.api.authorization.v1.SelfSubjectRulesReview",
            ),
            (
                "rbac.authorization.k8s.io/v1",
                "ClusterRole",
                "io.k8s.api.rbac.v1.ClusterRole",
            ),
            (
                "v1",
                "DeleteOptions",
                "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
            ),
            (
                "meta.k8s.io/v1",
                "DeleteOptions",
                "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
            ),
            (
                "v1",
                "Status",
                "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
            ),
            (
                "apps/v1",
                "WatchEvent",
                "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
            ),
            (
                "meta.k8s.io/v1",
                "PartialObjectMetadataList",
                "io.k8s.apimachinery.pkg.apis.meta.v1.PartialObjectMetadataList",
            ),
        ] {
            assert_eq!(
                definition_for(api_version, kind),
                Some(definition),
                "{api_version} {kind}"
            );
        }
        assert_eq!(definition_for("v1", "PodSpec"), None);
        assert_eq!(definition_for("v1", "Deployment"), None);
        assert_eq!(definition_for("example.com/v1", "Widget"), None);
    }
}
