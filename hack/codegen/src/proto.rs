//! Reads protobuf messages out of k8s-pb's prost-generated sources.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use syn::punctuated::Punctuated;
use syn::{Expr, Lit, Meta, Token};

/// One prost message struct.
#[derive(Debug)]
pub struct ProtoMessage {
    /// The module path below k8s-pb's root, dotted: `api.core.v1`.
    pub package: String,
    /// The Rust struct name (prost's UpperCamelCase of the proto name).
    pub name: String,
    /// Doc comment lines.
    pub docs: Vec<String>,
    pub fields: Vec<ProtoField>,
}

/// One field of a prost message.
#[derive(Debug)]
pub struct ProtoField {
    /// The snake_case field name, without `r#`.
    pub name: String,
    pub tag: u32,
    pub label: Label,
    pub kind: Kind,
    /// For message kinds (and maps of messages): the referenced `(package, name)`.
    pub message: Option<(String, String)>,
    pub docs: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    Optional,
    Repeated,
    Map,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    Double,
    Float,
    Message,
    Map(Box<Kind>, Box<Kind>),
}

/// Every `.rs` file below `dir`, sorted.
pub fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// Loads every message of the given top-level modules of k8s-pb's `src`.
pub fn load(src: &Path, roots: &[&str]) -> Result<Vec<ProtoMessage>> {
    let mut out = Vec::new();
    for root in roots {
        let mut files = Vec::new();
        rust_files(&src.join(root), &mut files)?;
        for file in files {
            let module = module_path(src, &file)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let ast =
                syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))?;
            for item in &ast.items {
                if let syn::Item::Struct(s) = item {
                    if derives_message(&s.attrs) {
                        out.push(
                            message(&module, s).with_context(|| {
                                format!("in {}::{}", module.join("::"), s.ident)
                            })?,
                        );
                    } else if !s.fields.is_empty() {
                        // Nested modules or non-message structs are not expected in k8s-pb.
                    }
                } else if let syn::Item::Mod(m) = item {
                    if m.content.is_some() {
                        bail!(
                            "inline module {} in {} is not supported",
                            m.ident,
                            file.display()
                        );
                    }
                }
            }
        }
    }
    Ok(out)
}

/// `src/api/core/v1/mod.rs` → `["api", "core", "v1"]`.
fn module_path(src: &Path, file: &Path) -> Result<Vec<String>> {
    let rel = file
        .strip_prefix(src)
        .context("file outside the source root")?;
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    match parts.pop().as_deref() {
        Some("mod.rs") => {}
        Some(other) => match other.strip_suffix(".rs") {
            Some(stem) => parts.push(stem.to_string()),
            None => bail!("unexpected file {}", file.display()),
        },
        None => bail!("empty path"),
    }
    Ok(parts)
}

fn derives_message(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("derive")
            && a.parse_args_with(Punctuated::<syn::Path, Token![,]>::parse_terminated)
                .is_ok_and(|paths| {
                    paths
                        .iter()
                        .any(|p| p.segments.last().is_some_and(|s| s.ident == "Message"))
                })
    })
}

fn docs(attrs: &[syn::Attribute]) -> Vec<String> {
    let mut out = Vec::new();
    for a in attrs {
        if let Meta::NameValue(nv) = &a.meta {
            if nv.path.is_ident("doc") {
                if let Expr::Lit(syn::ExprLit {
                    lit: Lit::Str(s), ..
                }) = &nv.value
                {
                    out.extend(s.value().lines().map(str::to_string));
                }
            }
        }
    }
    out
}

fn message(module: &[String], s: &syn::ItemStruct) -> Result<ProtoMessage> {
    let mut fields = Vec::new();
    for f in &s.fields {
        let ident = f.ident.as_ref().context("tuple struct")?;
        let name = ident.to_string();
        let name = name.strip_prefix("r#").unwrap_or(&name).to_string();
        let attr = f
            .attrs
            .iter()
            .find(|a| a.path().is_ident("prost"))
            .with_context(|| format!("field {name} has no #[prost] attribute"))?;
        let (kind, label, tag) = prost_attr(attr).with_context(|| format!("field {name}"))?;
        let message = if matches!(kind, Kind::Message)
            || matches!(&kind, Kind::Map(_, v) if **v == Kind::Message)
        {
            Some(resolve_type(module, &f.ty).with_context(|| format!("field {name}"))?)
        } else {
            None
        };
        fields.push(ProtoField {
            name,
            tag,
            label,
            kind,
            message,
            docs: docs(&f.attrs),
        });
    }
    Ok(ProtoMessage {
        package: module.join("."),
        name: s.ident.to_string(),
        docs: docs(&s.attrs),
        fields,
    })
}

fn scalar_kind(name: &str) -> Result<Kind> {
    Ok(match name {
        "string" => Kind::String,
        "bytes" => Kind::Bytes,
        "bool" => Kind::Bool,
        "int32" => Kind::Int32,
        "int64" => Kind::Int64,
        "double" => Kind::Double,
        "float" => Kind::Float,
        "message" => Kind::Message,
        other => bail!("unsupported prost kind {other}"),
    })
}

/// Parses `#[prost(string, optional, tag = "1")]` and friends.
fn prost_attr(attr: &syn::Attribute) -> Result<(Kind, Label, u32)> {
    let metas = attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)?;
    let mut kind = None;
    let mut label = None;
    let mut tag = None;
    for meta in metas {
        let key = meta
            .path()
            .get_ident()
            .map(|i| i.to_string())
            .context("unexpected path in #[prost]")?;
        let value = match &meta {
            Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(syn::ExprLit {
                    lit: Lit::Str(s), ..
                }) => Some(s.value()),
                _ => bail!("non-string value for {key}"),
            },
            Meta::Path(_) => None,
            Meta::List(_) => bail!("unexpected list {key}"),
        };
        match (key.as_str(), value) {
            ("optional", None) => label = Some(Label::Optional),
            ("repeated", None) => label = Some(Label::Repeated),
            ("tag", Some(v)) => tag = Some(v.parse::<u32>().context("bad tag")?),
            ("packed", Some(_)) => {}
            ("btree_map" | "map" | "hash_map", Some(v)) => {
                let (k, val) = v.split_once(',').context("bad map kinds")?;
                kind = Some(Kind::Map(
                    Box::new(scalar_kind(k.trim())?),
                    Box::new(scalar_kind(val.trim())?),
                ));
                label = Some(Label::Map);
            }
            ("bytes", Some(_)) => kind = Some(Kind::Bytes),
            (other, None) => kind = Some(scalar_kind(other)?),
            (other, Some(_)) => bail!("unsupported prost option {other}"),
        }
    }
    match (kind, label, tag) {
        (Some(k), Some(l), Some(t)) => Ok((k, l, t)),
        (Some(_), None, Some(_)) => bail!("proto3 implicit-presence fields are not expected"),
        _ => bail!("incomplete #[prost] attribute"),
    }
}

/// Resolves a field's Rust type (`Option<T>`, `Vec<T>`, `BTreeMap<String, T>`, a relative
/// path with `super::`) to the `(package, name)` of the message it holds.
fn resolve_type(module: &[String], ty: &syn::Type) -> Result<(String, String)> {
    let syn::Type::Path(tp) = ty else {
        bail!("unsupported type");
    };
    let last = tp.path.segments.last().context("empty type path")?;
    if ["Option", "Vec", "BTreeMap", "HashMap", "Box"].contains(&last.ident.to_string().as_str()) {
        let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
            bail!("{} without type arguments", last.ident);
        };
        let inner = args
            .args
            .iter()
            .filter_map(|a| match a {
                syn::GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .last()
            .context("no type argument")?;
        return resolve_type(module, inner);
    }
    let mut path: Vec<String> = module.to_vec();
    let segments: Vec<String> = tp
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    let (name, dirs) = segments.split_last().context("empty type path")?;
    for seg in dirs {
        match seg.as_str() {
            "super" => {
                path.pop().context("super above the crate root")?;
            }
            "crate" => path.clear(),
            "self" => {}
            other => path.push(other.to_string()),
        }
    }
    Ok((path.join("."), name.clone()))
}
