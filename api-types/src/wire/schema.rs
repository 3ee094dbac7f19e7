//! The shape of the wire schema tables: one [`Message`] per protobuf message of the built-in
//! API, named by its OpenAPI definition, with the JSON name, protobuf tag, type and
//! strategic-merge-patch metadata of every field.
//!
//! The tables themselves live in `generated.rs`, written by `cargo run -p codegen` from the
//! `k8s-pb` (protobuf tags, wire kinds, `+patchStrategy`-style comment tags) and `k8s-openapi`
//! (definition names, JSON property names, required properties) crates.

/// One protobuf message of the API, e.g. `io.k8s.api.core.v1.PodSpec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// The OpenAPI definition name, e.g. `io.k8s.api.core.v1.PodSpec`.
    pub name: &'static str,
    /// The fields in protobuf tag order. Empty for [`Special`] messages, whose JSON form is
    /// not an object of fields (a time string, a quantity, embedded raw JSON, ...): walk
    /// them as opaque values.
    pub fields: &'static [Field],
    /// Set for messages whose JSON form is not an object of their fields (see [`Special`]).
    pub special: Option<Special>,
}

impl Message {
    /// The field with this JSON name, looking through inlined messages (so `configMap` is a
    /// field of `io.k8s.api.core.v1.Volume`, though on the wire it sits in its `VolumeSource`).
    pub fn field(&self, json: &str) -> Option<&'static Field> {
        self.fields.iter().find_map(|f| {
            if f.inline {
                f.message().and_then(|m| m.field(json))
            } else if f.json == json {
                Some(f)
            } else {
                None
            }
        })
    }

    /// The field with this protobuf tag.
    pub fn field_by_tag(&self, tag: u32) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.tag == tag)
    }
}

/// One field of a [`Message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The JSON property name, e.g. `hostIPC`.
    pub json: &'static str,
    /// The protobuf field number.
    pub tag: u32,
    /// The element type; for a repeated field the type of one item.
    pub ty: FieldType,
    /// A protobuf `repeated` field: a JSON array.
    pub repeated: bool,
    /// A proto2 `optional` field (every non-repeated, non-map field of the API): presence
    /// on the wire is tracked, so an explicitly set zero value is kept.
    pub optional: bool,
    /// `+patchStrategy`: `merge`, `retainKeys`, `merge,retainKeys` or `replace`.
    pub patch_strategy: Option<&'static str>,
    /// `+patchMergeKey`: the key that identifies list items for `merge`.
    pub patch_merge_key: Option<&'static str>,
    /// `+listType`: `atomic`, `set` or `map`.
    pub list_type: Option<&'static str>,
    /// `+listMapKey` (in order) for `list_type == Some("map")`.
    pub list_map_keys: &'static [&'static str],
    /// `+mapType`: `atomic` or `granular`, for map (and struct) fields that declare it.
    pub map_type: Option<&'static str>,
    /// The OpenAPI definition lists the property as required.
    pub required: bool,
    /// Go embeds this message with `json:",inline"`: on the wire it is a nested message, in
    /// JSON its fields sit directly in the parent object. `json` is empty for such fields.
    pub inline: bool,
    /// The Go field is a pointer (`*int32`, `*bool`, `*string`, `*Struct`): absent means nil,
    /// and an explicit zero value is meaningful (`replicas: 0`, `runAsUser: 0`).
    pub nullable: bool,
    /// The Go json tag has `omitempty`, so Go's JSON leaves a non-pointer zero value out.
    /// Fields without it (`Container.name`, `ServicePort.port`) are written even when zero.
    pub omit_empty: bool,
}

impl Field {
    /// The message this field holds (for maps: the value message), if any.
    pub fn message(&self) -> Option<&'static Message> {
        match self.ty.value() {
            FieldType::Message(name) => super::message(name),
            _ => None,
        }
    }

    /// Whether Go's JSON encoding keeps this field when it holds its zero value (`""`, `0`,
    /// `false`): for pointers and fields without `omitempty`.
    pub fn keeps_zero(&self) -> bool {
        self.nullable || !self.omit_empty
    }

    /// A `map<string, V>` field: a JSON object.
    pub fn is_map(&self) -> bool {
        matches!(self.ty, FieldType::Map { .. })
    }
}

/// The type of a field (of one item, for repeated fields).
///
/// Maps are `Map { key, value }` with both sides a scalar `FieldType` or, for the value, a
/// `Message`; every map of the built-in API has `String` keys. On the wire a map is a repeated
/// entry message with the key at tag 1 and the value at tag 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    /// Raw bytes; base64 in JSON.
    Bytes,
    Bool,
    Int32,
    Int64,
    Double,
    Float,
    /// A nested message, by OpenAPI definition name (look it up with [`super::message`]).
    Message(&'static str),
    Map {
        key: &'static FieldType,
        value: &'static FieldType,
    },
}

impl FieldType {
    /// For maps the value type, otherwise the type itself.
    pub fn value(&self) -> &FieldType {
        match self {
            FieldType::Map { value, .. } => value,
            other => other,
        }
    }
}

/// Messages with a JSON form of their own rather than an object of their fields. The tables
/// list no fields for them; the wire layouts are given here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    /// `meta.v1.Time`: proto `{seconds=1, nanos=2}`; JSON RFC 3339 in UTC with whole
    /// seconds (`2006-01-02T15:04:05Z`), or `null` for the zero time.
    Time,
    /// `meta.v1.MicroTime`: like [`Special::Time`] with six fractional digits
    /// (`2006-01-02T15:04:05.000000Z`).
    MicroTime,
    /// `meta.v1.Duration`: proto `{duration=1}` in nanoseconds; JSON a Go duration string
    /// such as `1h2m3s`.
    Duration,
    /// `api.resource.Quantity`: proto `{string=1}`; JSON the string.
    Quantity,
    /// `util.intstr.IntOrString`: proto `{type=1 (0 int, 1 string), intVal=2, strVal=3}`;
    /// JSON a number or a string.
    IntOrString,
    /// `runtime.RawExtension`: proto `{raw=1}` bytes holding JSON (or a protobuf-encoded
    /// object behind the `k8s\0` magic); JSON the embedded value.
    RawExtension,
    /// `meta.v1.FieldsV1`: proto `{Raw=1}` bytes holding JSON; JSON the embedded value.
    FieldsV1,
    /// A `+protobuf.nullable=true` wrapper such as `meta.v1.Verbs` or `authentication.v1.ExtraValue`:
    /// proto `{items=1}` (repeated string); JSON a plain array of strings.
    ListWrapper,
}

// Builders the generated tables use to stay one line per field.

const fn base(json: &'static str, tag: u32, ty: FieldType) -> Field {
    Field {
        json,
        tag,
        ty,
        repeated: false,
        optional: false,
        patch_strategy: None,
        patch_merge_key: None,
        list_type: None,
        list_map_keys: &[],
        map_type: None,
        required: false,
        inline: false,
        nullable: false,
        omit_empty: true,
    }
}

/// An optional (proto2 `optional`) field.
pub(crate) const fn opt(json: &'static str, tag: u32, ty: FieldType) -> Field {
    let mut f = base(json, tag, ty);
    f.optional = true;
    f
}

/// A repeated field.
pub(crate) const fn rep(json: &'static str, tag: u32, ty: FieldType) -> Field {
    let mut f = base(json, tag, ty);
    f.repeated = true;
    f
}

/// A `map<string, value>` field.
pub(crate) const fn map(json: &'static str, tag: u32, value: &'static FieldType) -> Field {
    base(
        json,
        tag,
        FieldType::Map {
            key: &FieldType::String,
            value,
        },
    )
}

impl Field {
    pub(crate) const fn strategy(mut self, strategy: &'static str) -> Self {
        self.patch_strategy = Some(strategy);
        self
    }

    pub(crate) const fn merge_key(mut self, key: &'static str) -> Self {
        self.patch_merge_key = Some(key);
        self
    }

    pub(crate) const fn list(mut self, list_type: &'static str) -> Self {
        self.list_type = Some(list_type);
        self
    }

    pub(crate) const fn keys(mut self, keys: &'static [&'static str]) -> Self {
        self.list_map_keys = keys;
        self
    }

    pub(crate) const fn map_type(mut self, map_type: &'static str) -> Self {
        self.map_type = Some(map_type);
        self
    }

    pub(crate) const fn inline(mut self) -> Self {
        self.inline = true;
        self
    }

    pub(crate) const fn ptr(mut self) -> Self {
        self.nullable = true;
        self
    }

    pub(crate) const fn always(mut self) -> Self {
        self.omit_empty = false;
        self
    }

    pub(crate) const fn req(mut self) -> Self {
        self.required = true;
        self
    }
}
