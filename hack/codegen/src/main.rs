//! Writes `api-types/src/wire/generated.rs`, the wire schema tables of the built-in API.
//!
//! Sources, both read as Rust source from the local cargo registry (located with
//! `cargo metadata`):
//! - `k8s-pb`: prost types generated from upstream's `generated.proto`. Their
//!   `#[prost(...)]` attributes give the protobuf tags and wire kinds, their doc comments keep
//!   upstream's `+patchStrategy`, `+patchMergeKey`, `+listType`, `+listMapKey` and `+mapType`
//!   tags.
//! - `k8s-openapi` (v1_33): its schemars `JsonSchema` impls give the OpenAPI definition names
//!   and the exact JSON property names of every definition.
//!
//! A prost field (snake_case) is matched to the JSON property of the same definition that is
//! equal to it ignoring case and underscores. Any proto field without exactly one match fails
//! the generation. Proto messages without an OpenAPI definition are skipped with a note,
//! except list kinds (`FooList`), the special apimachinery wrappers and `+protobuf.nullable`
//! list wrappers, which the codecs need.
//!
//! Run with `cargo run -p codegen`.

mod openapi;
mod proto;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use proto::{Kind, Label, ProtoField, ProtoMessage};

/// Proto messages whose JSON form is not an object of their fields, by OpenAPI-style name, with
/// the `Special` variant naming their codec.
const SPECIALS: &[(&str, &str)] = &[
    ("io.k8s.apimachinery.pkg.apis.meta.v1.Time", "Time"),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime",
        "MicroTime",
    ),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.Duration", "Duration"),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1", "FieldsV1"),
    ("io.k8s.apimachinery.pkg.api.resource.Quantity", "Quantity"),
    (
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
        "IntOrString",
    ),
    (
        "io.k8s.apimachinery.pkg.runtime.RawExtension",
        "RawExtension",
    ),
];

/// The k8s-pb module trees that hold the built-in API.
const PROTO_ROOTS: &[&str] = &["api", "apimachinery"];

/// The k8s-openapi version module the tables follow.
const OPENAPI_VERSION: &str = "v1_33";

/// Later k8s-openapi version modules, consulted only to tell fields newer than
/// [`OPENAPI_VERSION`] (left out with a note) from unmatched ones (an error).
const NEWER_VERSIONS: &[&str] = &["v1_34", "v1_35", "v1_36", "v1_37"];

fn main() -> Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .context("locating the workspace root")?;
    let crates = locate_crates(&workspace)?;

    let definitions = openapi::load(&crates.openapi_src.join(OPENAPI_VERSION))?;
    let messages = proto::load(&crates.pb_src, PROTO_ROOTS)?;

    let mut newer = Vec::new();
    for version in NEWER_VERSIONS {
        let dir = crates.openapi_src.join(version);
        if dir.is_dir() {
            newer.push(openapi::load(&dir)?);
        }
    }
    let mut tables = resolve(&messages, &definitions, &newer)?;
    apply_go_fields(&mut tables)?;
    let out = workspace.join("api-types/src/wire/generated.rs");
    let source = render(&tables, &crates);
    std::fs::write(&out, source).with_context(|| format!("writing {}", out.display()))?;
    let status = Command::new("rustfmt")
        .args(["--edition", "2021"])
        .arg(&out)
        .status()
        .context("running rustfmt")?;
    if !status.success() {
        bail!("rustfmt failed on {}", out.display());
    }
    eprintln!(
        "wrote {} messages, {} fields to {}",
        tables.len(),
        tables.iter().map(|t| t.fields.len()).sum::<usize>(),
        out.display()
    );
    Ok(())
}

/// Source directories and versions of the two input crates.
struct Crates {
    pb_src: PathBuf,
    pb_version: String,
    openapi_src: PathBuf,
    openapi_version: String,
}

/// Finds k8s-pb and k8s-openapi in `cargo metadata`'s package list.
fn locate_crates(workspace: &Path) -> Result<Crates> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--format-version", "1"])
        .current_dir(workspace)
        .output()
        .context("running cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("parsing cargo metadata")?;
    let find = |name: &str| -> Result<(PathBuf, String)> {
        let packages = metadata["packages"]
            .as_array()
            .context("cargo metadata has no packages")?;
        let mut found: Vec<(PathBuf, String)> = packages
            .iter()
            .filter(|p| p["name"] == name)
            .filter_map(|p| {
                let manifest = PathBuf::from(p["manifest_path"].as_str()?);
                Some((
                    manifest.parent()?.join("src"),
                    p["version"].as_str()?.to_string(),
                ))
            })
            .collect();
        found.sort();
        match found.pop() {
            Some(f) if found.is_empty() => Ok(f),
            Some(_) => bail!("more than one version of {name} in the dependency graph"),
            None => bail!("{name} is not in the dependency graph"),
        }
    };
    let (pb_src, pb_version) = find("k8s-pb")?;
    let (openapi_src, openapi_version) = find("k8s-openapi")?;
    Ok(Crates {
        pb_src,
        pb_version,
        openapi_src,
        openapi_version,
    })
}

/// One message of the output table.
struct Table {
    name: String,
    special: Option<&'static str>,
    fields: Vec<OutField>,
}

struct OutField {
    json: String,
    /// Go inlines the field's message into the parent JSON object.
    inline: bool,
    /// A Go pointer field.
    nullable: bool,
    /// The Go json tag has `omitempty`.
    omit_empty: bool,
    tag: u32,
    label: Label,
    /// The Rust expression of the `FieldType` (for maps: of the value type).
    ty: String,
    required: bool,
    patch_strategy: Option<String>,
    patch_merge_key: Option<String>,
    list_type: Option<String>,
    list_map_keys: Vec<String>,
    map_type: Option<String>,
}

/// Why a proto message is in the table, and where its JSON names come from.
#[derive(Debug, Clone)]
enum Inclusion {
    /// It has an OpenAPI definition of this name.
    Definition(String),
    /// A list kind `FooList` (k8s-openapi models lists generically): JSON names are the
    /// lowerCamelCase proto names.
    List(String),
    /// A special apimachinery type.
    Special(String, &'static str),
    /// A `+protobuf.nullable=true` list wrapper.
    ListWrapper(String),
    /// A message needed by the codecs that k8s-openapi does not model (see [`EXTRAS`]).
    Extra(String),
    /// A message without its own definition that is only ever inlined (Go `json:",inline"`)
    /// into the definition named second, whose properties name its fields.
    Inline(String, String),
}

impl Inclusion {
    fn name(&self) -> &str {
        match self {
            Inclusion::Definition(n)
            | Inclusion::List(n)
            | Inclusion::Special(n, _)
            | Inclusion::ListWrapper(n)
            | Inclusion::Extra(n)
            | Inclusion::Inline(n, _) => n,
        }
    }

    /// The definition whose properties give this message's JSON names, if any.
    fn properties_of(&self) -> Option<&str> {
        match self {
            Inclusion::Definition(n) | Inclusion::Inline(_, n) => Some(n),
            _ => None,
        }
    }
}

/// Messages without an OpenAPI definition that clients still send or accept as protobuf; their
/// proto names are their JSON names.
const EXTRAS: &[&str] = &[
    "io.k8s.apimachinery.pkg.apis.meta.v1.PartialObjectMetadata",
    "io.k8s.apimachinery.pkg.apis.meta.v1.PartialObjectMetadataList",
    "io.k8s.apimachinery.pkg.apis.meta.v1.GroupVersionKind",
    "io.k8s.api.apidiscovery.v2.APIGroupDiscovery",
    "io.k8s.api.apidiscovery.v2.APIGroupDiscoveryList",
    "io.k8s.api.apidiscovery.v2.APIResourceDiscovery",
    "io.k8s.api.apidiscovery.v2.APISubresourceDiscovery",
    "io.k8s.api.apidiscovery.v2.APIVersionDiscovery",
];

/// The OpenAPI-style definition prefix of a k8s-pb module path: `api.core.v1` →
/// `io.k8s.api.core.v1`.
fn definition_prefix(package: &str) -> String {
    format!("io.k8s.{package}")
}

type Key = (String, String);

fn key_of(m: &ProtoMessage) -> Key {
    (m.package.clone(), m.name.clone())
}

/// Decides which proto messages go in the table and under which name.
fn classify(
    messages: &[ProtoMessage],
    definitions: &BTreeMap<String, openapi::Definition>,
) -> Result<BTreeMap<Key, Inclusion>> {
    // Definitions by lower-cased name: prost renames `PodDNSConfig` to `PodDnsConfig`.
    let mut by_lower: BTreeMap<String, &str> = BTreeMap::new();
    for name in definitions.keys() {
        if let Some(previous) = by_lower.insert(name.to_lowercase(), name) {
            bail!("definitions {previous} and {name} differ only in case");
        }
    }
    let mut out = BTreeMap::new();
    let mut skipped = BTreeMap::new();
    for m in messages {
        let natural = format!("{}.{}", definition_prefix(&m.package), m.name);
        let inclusion = if let Some((name, special)) = SPECIALS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(&natural))
        {
            Inclusion::Special(name.to_string(), special)
        } else if let Some(name) = by_lower.get(&natural.to_lowercase()) {
            Inclusion::Definition(name.to_string())
        } else if let Some(name) = EXTRAS.iter().find(|n| n.eq_ignore_ascii_case(&natural)) {
            Inclusion::Extra(name.to_string())
        } else if m.docs.iter().any(|d| d.trim() == "+protobuf.nullable=true") {
            Inclusion::ListWrapper(natural)
        } else {
            let shape: BTreeSet<&str> = m.fields.iter().map(|f| f.name.as_str()).collect();
            let item = natural
                .strip_suffix("List")
                .and_then(|item| by_lower.get(&item.to_lowercase()));
            match item {
                Some(item) if shape == BTreeSet::from(["metadata", "items"]) => {
                    Inclusion::List(format!("{item}List"))
                }
                _ => {
                    skipped.insert(key_of(m), natural);
                    continue;
                }
            }
        };
        out.insert(key_of(m), inclusion);
    }
    // Messages Go inlines into a parent (`VolumeSource` into `Volume`) have no definition of
    // their own; their fields take the parent's JSON names.
    let by_key: BTreeMap<Key, &ProtoMessage> = messages.iter().map(|m| (key_of(m), m)).collect();
    let mut queue: Vec<Key> = out.keys().cloned().collect();
    while let Some(key) = queue.pop() {
        let Some(parent) = out
            .get(&key)
            .and_then(|i| i.properties_of())
            .map(str::to_string)
        else {
            continue;
        };
        let Some(def) = definitions.get(&parent) else {
            continue;
        };
        let m = by_key[&key];
        for f in &m.fields {
            let Some(target) = &f.message else { continue };
            if f.label != Label::Optional || matches_property(&f.name, def).is_some() {
                continue;
            }
            // Inlined only if its own fields are properties of the parent; otherwise it is a
            // field newer than the definitions (resolve() tells those apart).
            let Some(target_msg) = by_key.get(target) else {
                continue;
            };
            let inlined = target_msg
                .fields
                .iter()
                .any(|tf| matches_property(&tf.name, def).is_some());
            if !inlined {
                continue;
            }
            if let Some(natural) = skipped.remove(target) {
                out.insert(target.clone(), Inclusion::Inline(natural, parent.clone()));
                queue.push(target.clone());
            }
        }
    }
    for natural in skipped.values() {
        eprintln!("note: skipping {natural}: not in k8s-openapi {OPENAPI_VERSION}");
    }
    Ok(out)
}

/// The JSON property of `def` a proto field name stands for, if exactly one.
fn matches_property<'a>(proto: &str, def: &'a openapi::Definition) -> Option<&'a String> {
    let wanted = normalize(proto);
    let mut matches = def.properties.iter().filter(|p| normalize(p) == wanted);
    match (matches.next(), matches.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

/// Builds the output tables, matching every proto field to its JSON name.
///
/// `newer` holds the definitions of later Kubernetes versions: a proto field (k8s-pb may
/// follow a newer release) that only they know is left out, as a v1_33 apiserver ignores it.
fn resolve(
    messages: &[ProtoMessage],
    definitions: &BTreeMap<String, openapi::Definition>,
    newer: &[BTreeMap<String, openapi::Definition>],
) -> Result<Vec<Table>> {
    // Whether a later version's definition of `name` has a property for proto field `field`.
    let is_newer = |name: Option<&str>, field: &str| {
        name.is_some_and(|name| {
            newer
                .iter()
                .filter_map(|defs| defs.get(name))
                .any(|def| matches_property(field, def).is_some())
        })
    };
    let included = classify(messages, definitions)?;
    let by_key: BTreeMap<Key, &ProtoMessage> = messages.iter().map(|m| (key_of(m), m)).collect();
    let mut problems = Vec::new();
    let mut tables = Vec::new();
    for m in messages {
        let Some(inclusion) = included.get(&key_of(m)) else {
            continue;
        };
        let definition = inclusion.properties_of().and_then(|n| definitions.get(n));
        let mut fields = Vec::new();
        for f in &m.fields {
            let ty = match field_type(f, &included) {
                Ok(ty) => ty,
                Err(e) => {
                    if is_newer(inclusion.properties_of(), &f.name) {
                        eprintln!(
                            "note: {}: leaving out {}, newer than {OPENAPI_VERSION}",
                            inclusion.name(),
                            f.name
                        );
                        continue;
                    }
                    problems.push(format!("{}: field {}: {e}", inclusion.name(), f.name));
                    continue;
                }
            };
            let Some(def) = definition else {
                let json = lower_camel(&f.name);
                fields.push(out_field(f, json, ty, false, false));
                continue;
            };
            if let Some(json) = matches_property(&f.name, def) {
                let required = def.required.contains(json);
                fields.push(out_field(f, json.clone(), ty, required, false));
                continue;
            }
            // An inlined message: every JSON name of its fields must be a property here.
            let inlined = f
                .message
                .as_ref()
                .and_then(|t| Some((included.get(t)?, by_key.get(t)?)));
            if let (Label::Optional, Some((target, target_msg))) = (f.label, inlined) {
                let own = target.properties_of().and_then(|n| definitions.get(n));
                let all_here = own.is_some_and(|own| {
                    target_msg.fields.iter().all(|tf| {
                        matches_property(&tf.name, own)
                            .is_none_or(|json| def.properties.contains(json))
                    })
                });
                if all_here {
                    fields.push(out_field(f, String::new(), ty, false, true));
                    continue;
                }
            }
            if is_newer(inclusion.properties_of(), &f.name) {
                eprintln!(
                    "note: {}: leaving out {}, newer than {OPENAPI_VERSION}",
                    inclusion.name(),
                    f.name
                );
                continue;
            }
            problems.push(format!(
                "{}: proto field {} has no JSON property",
                inclusion.name(),
                f.name
            ));
        }
        let mut seen = BTreeSet::new();
        for f in fields.iter().filter(|f| !f.inline) {
            if !seen.insert(&f.json) {
                problems.push(format!(
                    "{}: two proto fields map to JSON {}",
                    inclusion.name(),
                    f.json
                ));
            }
        }
        fields.sort_by_key(|f| f.tag);
        let special = match inclusion {
            Inclusion::Special(_, s) => Some(*s),
            Inclusion::ListWrapper(_) => Some("ListWrapper"),
            _ => None,
        };
        if special.is_some() {
            // Their JSON is not an object of fields; the codecs know their wire layout, and
            // schema walkers can treat an empty field list as opaque.
            fields.clear();
        }
        tables.push(Table {
            name: inclusion.name().to_string(),
            special,
            fields,
        });
    }
    if !problems.is_empty() {
        bail!("unmatched fields:\n  {}", problems.join("\n  "));
    }
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    for pair in tables.windows(2) {
        if pair[0].name == pair[1].name {
            bail!("two proto messages map to {}", pair[0].name);
        }
    }
    Ok(tables)
}

/// Marks fields from `go_fields.txt`: Go pointers (`nullable`) and fields without `omitempty`.
fn apply_go_fields(tables: &mut [Table]) -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("go_fields.txt");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut problems = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(definition), Some(json)) = (words.next(), words.next()) else {
            bail!("bad line in go_fields.txt: {line}");
        };
        let Ok(i) = tables.binary_search_by(|t| t.name.as_str().cmp(definition)) else {
            continue; // a message the tables skip
        };
        let Some(field) = tables[i].fields.iter_mut().find(|f| f.json == json) else {
            // k8s-pb may follow a newer release that dropped an alpha field.
            let alpha = definition.contains("alpha");
            if alpha {
                eprintln!("note: go_fields.txt: {definition}.{json} is gone from k8s-pb");
            } else {
                problems.push(format!("{definition}.{json}"));
            }
            continue;
        };
        for flag in words {
            match flag {
                "pointer" => field.nullable = true,
                "always" => field.omit_empty = false,
                other => bail!("unknown flag {other} in go_fields.txt"),
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "go_fields.txt names fields the tables lack:\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(())
}

/// Compares names ignoring case and underscores: `host_ipc` ~ `hostIPC`.
fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// `int_val` → `intVal`, for messages without OpenAPI properties.
fn lower_camel(name: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The Rust expression of a field's (item or map value) `FieldType`.
fn field_type(f: &ProtoField, included: &BTreeMap<(String, String), Inclusion>) -> Result<String> {
    let scalar = |kind: &Kind| -> Result<String> {
        Ok(match kind {
            Kind::String => "FieldType::String".into(),
            Kind::Bytes => "FieldType::Bytes".into(),
            Kind::Bool => "FieldType::Bool".into(),
            Kind::Int32 => "FieldType::Int32".into(),
            Kind::Int64 => "FieldType::Int64".into(),
            Kind::Double => "FieldType::Double".into(),
            Kind::Float => "FieldType::Float".into(),
            Kind::Message => {
                let (package, name) = f
                    .message
                    .as_ref()
                    .context("message field without a resolvable type")?;
                let target = included
                    .get(&(package.clone(), name.clone()))
                    .with_context(|| format!("refers to {package}.{name}, which is skipped"))?;
                format!("FieldType::Message({:?})", target.name())
            }
            Kind::Map(_, _) => bail!("nested map"),
        })
    };
    match &f.kind {
        Kind::Map(key, value) => {
            if !matches!(**key, Kind::String) {
                bail!("map key is not a string");
            }
            scalar(value)
        }
        other => scalar(other),
    }
}

fn out_field(f: &ProtoField, json: String, ty: String, required: bool, inline: bool) -> OutField {
    let mut out = OutField {
        json,
        inline,
        nullable: false,
        omit_empty: true,
        tag: f.tag,
        label: f.label,
        ty,
        required,
        patch_strategy: None,
        patch_merge_key: None,
        list_type: None,
        list_map_keys: Vec::new(),
        map_type: None,
    };
    for line in &f.docs {
        let Some(tag) = line.trim().strip_prefix('+') else {
            continue;
        };
        let Some((key, value)) = tag.split_once('=') else {
            continue;
        };
        let value = value.trim().to_string();
        match key.trim() {
            "patchStrategy" => out.patch_strategy = Some(value),
            "patchMergeKey" => out.patch_merge_key = Some(value),
            "listType" => out.list_type = Some(value),
            "listMapKey" => out.list_map_keys.push(value),
            "mapType" => out.map_type = Some(value),
            _ => {}
        }
    }
    out
}

fn render(tables: &[Table], crates: &Crates) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "// @generated by `cargo run -p codegen` (hack/codegen) from k8s-pb {}, k8s-openapi {} \
         ({OPENAPI_VERSION}) and hack/codegen/go_fields.txt.\n// Do not edit by hand: change the \
         generator or its inputs and run `cargo run -p codegen` again.\n",
        crates.pb_version, crates.openapi_version
    );
    s.push_str("use super::schema::{map, opt, rep, FieldType, Message, Special};\n\n");
    s.push_str("/// Every message of the built-in API, sorted by name.\n");
    s.push_str("pub(super) static MESSAGES: &[Message] = &[\n");
    for t in tables {
        let special = match t.special {
            Some(s) => format!("Some(Special::{s})"),
            None => "None".into(),
        };
        let _ = writeln!(
            s,
            "Message {{ name: {:?}, special: {special}, fields: &[",
            t.name
        );
        for f in &t.fields {
            let mut line = match (f.label, f.ty.as_str()) {
                (Label::Map, ty) => format!("map({:?}, {}, &{ty})", f.json, f.tag),
                (Label::Repeated, ty) => format!("rep({:?}, {}, {ty})", f.json, f.tag),
                (Label::Optional, ty) => format!("opt({:?}, {}, {ty})", f.json, f.tag),
            };
            if let Some(v) = &f.patch_strategy {
                let _ = write!(line, ".strategy({v:?})");
            }
            if let Some(v) = &f.patch_merge_key {
                let _ = write!(line, ".merge_key({v:?})");
            }
            if let Some(v) = &f.list_type {
                let _ = write!(line, ".list({v:?})");
            }
            if !f.list_map_keys.is_empty() {
                let _ = write!(line, ".keys(&{:?})", f.list_map_keys);
            }
            if let Some(v) = &f.map_type {
                let _ = write!(line, ".map_type({v:?})");
            }
            if f.inline {
                line.push_str(".inline()");
            }
            if f.nullable {
                line.push_str(".ptr()");
            }
            if !f.omit_empty {
                line.push_str(".always()");
            }
            if f.required {
                line.push_str(".req()");
            }
            let _ = writeln!(s, "{line},");
        }
        s.push_str("]},\n");
    }
    s.push_str("];\n");
    s
}
