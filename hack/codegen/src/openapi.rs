//! Reads OpenAPI definition names and properties out of k8s-openapi's schemars impls.
//!
//! Every definition is an `impl crate::schemars::JsonSchema for T` whose `schema_name` returns
//! the definition name and whose `json_schema` is a `json_schema!({ ... })` literal with
//! `"properties": { "name": ..., }` and `"required": [ ... ]`. Only the keys are read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context, Result};
use proc_macro2::{Delimiter, TokenStream, TokenTree};
use quote::ToTokens;
use syn::visit::Visit;

/// One OpenAPI definition.
#[derive(Debug, Default)]
pub struct Definition {
    pub properties: Vec<String>,
    pub required: BTreeSet<String>,
}

/// Loads every definition under `dir` (k8s-openapi's `src/v1_33`).
pub fn load(dir: &Path) -> Result<BTreeMap<String, Definition>> {
    let mut files = Vec::new();
    crate::proto::rust_files(dir, &mut files)?;
    let mut out = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let ast = syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))?;
        let mut visitor = ImplVisitor::default();
        visitor.visit_file(&ast);
        if let Some(e) = visitor.error {
            return Err(e.context(format!("in {}", file.display())));
        }
        for (name, def) in visitor.found {
            if out.insert(name.clone(), def).is_some() {
                bail!("definition {name} appears twice");
            }
        }
    }
    if out.is_empty() {
        bail!("no JsonSchema impls under {}", dir.display());
    }
    Ok(out)
}

#[derive(Default)]
struct ImplVisitor {
    found: Vec<(String, Definition)>,
    error: Option<anyhow::Error>,
}

impl<'ast> Visit<'ast> for ImplVisitor {
    fn visit_item_impl(&mut self, item: &'ast syn::ItemImpl) {
        let is_schema = item
            .trait_
            .as_ref()
            .and_then(|(_, path, _)| path.segments.last())
            .is_some_and(|s| s.ident == "JsonSchema");
        if !is_schema {
            return;
        }
        match definition_of(item) {
            Ok(found) => self.found.push(found),
            Err(e) => self.error = Some(e),
        }
    }
}

fn definition_of(item: &syn::ItemImpl) -> Result<(String, Definition)> {
    let mut name = None;
    let mut def = None;
    for member in &item.items {
        let syn::ImplItem::Fn(f) = member else {
            continue;
        };
        let tokens = f.block.to_token_stream();
        if f.sig.ident == "schema_name" {
            name = first_string(tokens);
        } else if f.sig.ident == "json_schema" {
            let body = macro_body(tokens).context("json_schema has no json_schema! literal")?;
            def = Some(parse_definition(body)?);
        }
    }
    match (name, def) {
        (Some(n), Some(d)) => Ok((n, d)),
        _ => bail!("JsonSchema impl without a literal schema_name and json_schema"),
    }
}

/// The first string literal in a token stream.
fn first_string(tokens: TokenStream) -> Option<String> {
    for tt in tokens {
        match tt {
            TokenTree::Literal(lit) => {
                if let Ok(s) = syn::parse2::<syn::LitStr>(TokenTree::Literal(lit).into()) {
                    return Some(s.value());
                }
            }
            TokenTree::Group(g) => {
                if let Some(s) = first_string(g.stream()) {
                    return Some(s);
                }
            }
            _ => {}
        }
    }
    None
}

/// The `{ ... }` object inside the `json_schema!( ... )` macro call.
fn macro_body(tokens: TokenStream) -> Option<TokenStream> {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    for (i, tt) in tokens.iter().enumerate() {
        if let TokenTree::Ident(id) = tt {
            if id == "json_schema" {
                if let (Some(TokenTree::Punct(p)), Some(TokenTree::Group(args))) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                {
                    if p.as_char() == '!' {
                        for inner in args.stream() {
                            if let TokenTree::Group(g) = inner {
                                if g.delimiter() == Delimiter::Brace {
                                    return Some(g.stream());
                                }
                            }
                        }
                    }
                }
            }
        }
        if let TokenTree::Group(g) = tt {
            if let Some(found) = macro_body(g.stream()) {
                return Some(found);
            }
        }
    }
    None
}

/// Splits a JSON-like object literal into `(key, value tokens)` entries.
fn entries(body: TokenStream) -> Result<Vec<(String, Vec<TokenTree>)>> {
    let mut out = Vec::new();
    let mut tokens = body.into_iter().peekable();
    while let Some(tt) = tokens.next() {
        let TokenTree::Literal(lit) = tt else {
            bail!("expected a string key, found {tt}");
        };
        let key = syn::parse2::<syn::LitStr>(TokenTree::Literal(lit).into())
            .context("expected a string key")?
            .value();
        match tokens.next() {
            Some(TokenTree::Punct(p)) if p.as_char() == ':' => {}
            other => bail!("expected ':' after {key:?}, found {other:?}"),
        }
        let mut value = Vec::new();
        for tt in tokens.by_ref() {
            if let TokenTree::Punct(p) = &tt {
                if p.as_char() == ',' {
                    break;
                }
            }
            value.push(tt);
        }
        out.push((key, value));
    }
    Ok(out)
}

fn parse_definition(body: TokenStream) -> Result<Definition> {
    let mut def = Definition::default();
    for (key, value) in entries(body)? {
        match (key.as_str(), value.as_slice()) {
            ("properties", [TokenTree::Group(g)]) if g.delimiter() == Delimiter::Brace => {
                def.properties = entries(g.stream())?.into_iter().map(|(k, _)| k).collect();
            }
            ("required", [TokenTree::Group(g)]) if g.delimiter() == Delimiter::Bracket => {
                for tt in g.stream() {
                    if let TokenTree::Literal(lit) = tt {
                        let s = syn::parse2::<syn::LitStr>(TokenTree::Literal(lit).into())
                            .context("required entry is not a string")?;
                        def.required.insert(s.value());
                    }
                }
            }
            ("properties" | "required", _) => bail!("unexpected shape of {key:?}"),
            _ => {}
        }
    }
    Ok(def)
}
