//! Strategic merge patch (`application/strategic-merge-patch+json`), applied the way the
//! upstream apiserver applies it (apimachinery `strategicpatch.StrategicMergeMapPatch`).
//!
//! - Maps merge recursively; a `null` value deletes the key.
//! - Lists whose field has `patchStrategy: merge` merge item by item: lists of objects by the
//!   field's `patchMergeKey`, lists of scalars as sets (`metadata.finalizers`). Every other
//!   list is replaced.
//! - Directives: `$patch: replace | delete` on an object, `$patch: replace | delete` as a list
//!   item of a merging list, `$deleteFromPrimitiveList/<field>`, `$setElementOrder/<field>`
//!   and `$retainKeys`.
//!
//! Field metadata comes from the [`crate::wire`] tables (the `+patchStrategy` and
//! `+patchMergeKey` tags of the upstream Go types). Fields the tables do not know, and objects
//! of unknown definitions, get no metadata: their objects still merge and their lists are
//! replaced, which is JSON merge patch (RFC 7386) plus the directives.
//!
//! One deliberate difference: upstream leaves directive keys that it never interprets (for
//! example a `$setElementOrder/…` inside a newly added object) in the merged map and relies on
//! decoding into a Go struct to drop them. Callers here may store the JSON as is, so such
//! leftovers, and `null`s inside newly added values, are removed from the result.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::wire;

const DIRECTIVE_MARKER: &str = "$patch";
const DELETE_DIRECTIVE: &str = "delete";
const REPLACE_DIRECTIVE: &str = "replace";
const MERGE_DIRECTIVE: &str = "merge";
const RETAIN_KEYS_STRATEGY: &str = "retainKeys";
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST_PREFIX: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER_PREFIX: &str = "$setElementOrder";

/// Go's `reflect.TypeOf` names, which upstream's messages quote.
const GO_MAP: &str = "map[string]interface {}";
const GO_SLICE: &str = "[]interface {}";

/// Result of applying a patch.
pub type Result<T, E = PatchError> = std::result::Result<T, E>;

/// Why a strategic merge patch could not be applied. The messages are upstream's, so clients
/// see the same text; [`PatchError::status_code`] gives the HTTP status upstream answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The original object or the patch is not a JSON object.
    #[error("invalid JSON document")]
    BadJsonDoc,
    /// A list holds lists.
    #[error("lists of lists are not supported")]
    NoListOfLists,
    /// A `$deleteFromPrimitiveList` key without a `/<field>` suffix.
    #[error("invalid patch format of primitive list")]
    BadPatchFormatForPrimitiveList,
    /// `$retainKeys` is not a list, or the patch sets a key the list does not retain.
    #[error("invalid patch format of retainKeys")]
    BadPatchFormatForRetainKeys,
    /// A `$setElementOrder` key without a `/<field>` suffix.
    #[error("invalid patch format of setElementOrder list")]
    BadPatchFormatForSetElementOrderList,
    /// An item of a merging list lacks the list's merge key.
    #[error("map: {map} does not contain declared merge key: {key}")]
    NoMergeKey { map: String, key: String },
    /// A value has the wrong JSON type (named as Go names its types).
    #[error("expected a {expected}, but received a {actual}")]
    BadArgType {
        expected: &'static str,
        actual: &'static str,
    },
    /// `$patch` holds something other than `replace` or `delete` (`merge` for list items).
    #[error("unknown patch type: {directive} in map: {map}")]
    UnknownPatchType { directive: String, map: String },
    /// `$patch: merge` as a list item.
    #[error("merging lists cannot yet be specified in the patch")]
    MergingListsUnsupported,
    /// A merging list of objects whose field declares no merge key.
    #[error("cannot merge lists without merge key for {0}")]
    NoMergeKeyForList(String),
    /// The items of a merging list (original and patch together) differ in JSON type.
    #[error("list element types are not identical: {0}")]
    ElementTypesDiffer(String),
    /// `$setElementOrder` for a list that is empty on both sides.
    #[error("no elements in any of the given slices")]
    NoElements,
    /// An item of a merging list of objects is not an object.
    #[error("value for key {0} is not a map")]
    NotAMap(usize),
    /// The patch list's items are not in the order `$setElementOrder` gives.
    #[error("the order in patch list:\n{patch}\n doesn't match $setElementOrder list:\n{order}")]
    OrderMismatch { patch: String, order: String },
    /// A field declares a patch strategy combination upstream does not know.
    #[error("unexpected patch strategy: {0}")]
    UnexpectedPatchStrategy(String),
}

impl PatchError {
    /// The HTTP status the upstream apiserver answers a PATCH with for this error: 400 for
    /// malformed directives, 422 for lists of lists, and 500 (a plain, non-`Status` error
    /// upstream, reason empty) for everything else.
    pub fn status_code(&self) -> u16 {
        match self {
            PatchError::BadJsonDoc
            | PatchError::BadPatchFormatForPrimitiveList
            | PatchError::BadPatchFormatForRetainKeys
            | PatchError::BadPatchFormatForSetElementOrderList => 400,
            PatchError::NoListOfLists => 422,
            _ => 500,
        }
    }
}

/// Applies a strategic merge `patch` to `original`, an object of the OpenAPI definition
/// `definition` (e.g. `io.k8s.api.apps.v1.Deployment`). Both must be JSON objects.
pub fn apply_strategic_merge_patch(
    original: &Value,
    patch: &Value,
    definition: &str,
) -> Result<Value> {
    apply_with(&WireMeta, original, patch, definition)
}

/// [`apply_strategic_merge_patch`] with field metadata from `meta`.
pub(crate) fn apply_with(
    meta: &dyn PatchMeta,
    original: &Value,
    patch: &Value,
    definition: &str,
) -> Result<Value> {
    let (Value::Object(original), Value::Object(patch)) = (original, patch) else {
        return Err(PatchError::BadJsonDoc);
    };
    let merger = Merger { meta };
    let merged = merger.merge_map(original.clone(), patch.clone(), Schema::Message(definition))?;
    Ok(Value::Object(merged))
}

/// What one field's values are, for looking up the metadata of their own fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Schema<'a> {
    /// Objects of an OpenAPI definition.
    Message(&'a str),
    /// A `map<string, V>`: every key is a value of `V` (a definition, or a scalar if `None`).
    MapOf(Option<&'a str>),
    /// Unknown or scalar: no metadata below this point.
    #[default]
    Opaque,
}

/// The strategic-merge metadata of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FieldMeta<'a> {
    /// `merge`, `retainKeys`, `merge,retainKeys` or `replace`.
    pub patch_strategy: Option<&'a str>,
    pub patch_merge_key: Option<&'a str>,
    /// The schema of the field's value; for lists, of one item.
    pub value: Schema<'a>,
}

/// Where field metadata comes from: the wire tables, or a fake in tests.
pub(crate) trait PatchMeta {
    /// The field with JSON name `json` of the definition `definition`, if known.
    fn field(&self, definition: &str, json: &str) -> Option<FieldMeta<'static>>;
}

/// Metadata from the generated wire tables.
pub(crate) struct WireMeta;

impl PatchMeta for WireMeta {
    fn field(&self, definition: &str, json: &str) -> Option<FieldMeta<'static>> {
        let field = wire::message(definition)?.field(json)?;
        let value = match field.ty {
            wire::FieldType::Map { value, .. } => Schema::MapOf(match value {
                wire::FieldType::Message(name) => Some(*name),
                _ => None,
            }),
            wire::FieldType::Message(name) => Schema::Message(name),
            _ => Schema::Opaque,
        };
        Some(FieldMeta {
            patch_strategy: field.patch_strategy,
            patch_merge_key: field.patch_merge_key,
            value,
        })
    }
}

/// The JSON type of a list item, as Go's `reflect.TypeOf` tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Map,
    Slice,
    String,
    Int,
    Float,
    Bool,
    Nil,
}

impl Kind {
    fn of(v: &Value) -> Kind {
        match v {
            Value::Object(_) => Kind::Map,
            Value::Array(_) => Kind::Slice,
            Value::String(_) => Kind::String,
            Value::Number(n) if n.is_i64() || n.is_u64() => Kind::Int,
            Value::Number(_) => Kind::Float,
            Value::Bool(_) => Kind::Bool,
            Value::Null => Kind::Nil,
        }
    }

    fn go_name(self) -> &'static str {
        match self {
            Kind::Map => GO_MAP,
            Kind::Slice => GO_SLICE,
            Kind::String => "string",
            Kind::Int => "int64",
            Kind::Float => "float64",
            Kind::Bool => "bool",
            Kind::Nil => "%!s(<nil>)",
        }
    }
}

fn bad_arg(expected: &'static str, actual: &Value) -> PatchError {
    PatchError::BadArgType {
        expected,
        actual: Kind::of(actual).go_name(),
    }
}

fn no_merge_key(map: &Map<String, Value>, key: &str) -> PatchError {
    PatchError::NoMergeKey {
        map: go_fmt_map(map),
        key: key.to_string(),
    }
}

struct Merger<'m> {
    meta: &'m dyn PatchMeta,
}

impl Merger<'_> {
    fn lookup<'a>(&self, schema: Schema<'a>, key: &str) -> FieldMeta<'a> {
        match schema {
            Schema::Message(definition) => self.meta.field(definition, key).unwrap_or_default(),
            Schema::MapOf(value) => FieldMeta {
                value: value.map_or(Schema::Opaque, Schema::Message),
                ..FieldMeta::default()
            },
            Schema::Opaque => FieldMeta::default(),
        }
    }

    /// Merges `patch` into `original` (upstream `mergeMap`).
    fn merge_map(
        &self,
        mut original: Map<String, Value>,
        mut patch: Map<String, Value>,
        schema: Schema<'_>,
    ) -> Result<Map<String, Value>> {
        if let Some(directive) = patch.get(DIRECTIVE_MARKER) {
            return match directive.as_str() {
                Some(REPLACE_DIRECTIVE) => {
                    patch.shift_remove(DIRECTIVE_MARKER);
                    Ok(clean_map(patch))
                }
                Some(DELETE_DIRECTIVE) => Ok(Map::new()),
                _ => Err(PatchError::UnknownPatchType {
                    directive: go_fmt_s(directive),
                    map: go_fmt_map(&patch),
                }),
            };
        }

        apply_retain_keys(&mut original, &mut patch)?;
        self.merge_set_element_order(&mut original, &mut patch, schema)?;

        for (key, patch_value) in patch {
            let (key, is_delete_list) = if key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX) {
                (extract_key(&key, DELETE_FROM_PRIMITIVE_LIST_PREFIX)?, true)
            } else {
                (key, false)
            };

            if patch_value.is_null() {
                original.shift_remove(&key);
                continue;
            }

            let Some(slot) = original.get_mut(&key) else {
                if !is_delete_list {
                    if let Some(value) = clean(patch_value) {
                        original.insert(key, value);
                    }
                }
                continue;
            };

            let current = std::mem::take(slot);
            let next = match (current, patch_value) {
                (Value::Object(original_map), Value::Object(patch_map)) => {
                    let field = self.lookup(schema, &key);
                    let (_, strategy) = extract_retain_keys_patch_strategy(field.patch_strategy)?;
                    Some(Value::Object(if strategy == Some(REPLACE_DIRECTIVE) {
                        patch_map
                    } else {
                        self.merge_map(original_map, patch_map, field.value)?
                    }))
                }
                (Value::Array(original_list), Value::Array(patch_list)) => {
                    let field = self.lookup(schema, &key);
                    let (_, strategy) = extract_retain_keys_patch_strategy(field.patch_strategy)?;
                    let merged = self.merge_slice_handler(
                        original_list,
                        patch_list,
                        field,
                        strategy,
                        is_delete_list,
                    )?;
                    Some(Value::Array(merged.list))
                }
                // A deletion list never replaces a value of another type.
                (current, patch_value)
                    if is_delete_list && Kind::of(&current) != Kind::of(&patch_value) =>
                {
                    Some(current)
                }
                // Scalars, or a change of JSON type: the patch value wins.
                (_, patch_value) => clean(patch_value),
            };
            match next {
                Some(value) => *slot = value,
                None => {
                    original.shift_remove(&key);
                }
            }
        }
        Ok(original)
    }

    /// Upstream `mergeSliceHandler`: merging lists and deletion lists merge, others replace.
    ///
    /// Returns the merged list and what upstream's caller still sees through its own handle
    /// on the original list afterwards (see [`Merged::original_view`]).
    fn merge_slice_handler(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
        field: FieldMeta<'_>,
        strategy: Option<&str>,
        is_delete_list: bool,
    ) -> Result<Merged> {
        if strategy == Some(MERGE_DIRECTIVE) || is_delete_list {
            self.merge_slice(
                original,
                patch,
                field.value,
                field.patch_merge_key.unwrap_or(""),
                is_delete_list,
            )
        } else {
            Ok(Merged {
                list: clean_list(patch),
                original_view: original,
            })
        }
    }

    /// Upstream `mergeSlice`.
    fn merge_slice(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
        item_schema: Schema<'_>,
        merge_key: &str,
        is_delete_list: bool,
    ) -> Result<Merged> {
        if original.is_empty() && patch.is_empty() {
            return Ok(Merged {
                list: Vec::new(),
                original_view: original,
            });
        }
        let kind = slice_element_kind(&[&original, &patch])?;

        if kind != Kind::Map {
            if is_delete_list {
                let list = original
                    .iter()
                    .filter(|v| !patch.contains(v))
                    .cloned()
                    .collect();
                return Ok(Merged {
                    list,
                    original_view: original,
                });
            }
            let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
            for v in original.iter().chain(patch.iter()) {
                if !merged.contains(v) {
                    merged.push(v.clone());
                }
            }
            let (patch_items, server_only) = partition_primitives(merged, &patch);
            let list = normalize_element_order(
                patch_items,
                server_only,
                &patch,
                &original,
                merge_key,
                kind,
            )?;
            return Ok(Merged {
                list,
                original_view: original,
            });
        }

        if merge_key.is_empty() {
            // Upstream names the Go kind of the element type it looked the field up in.
            return Err(PatchError::NoMergeKeyForList("struct".to_string()));
        }
        let special = merge_slice_with_special_elements(original, patch, merge_key)?;
        let mut original_view = special.original_view;
        let order_of_original = special.original.clone();
        let (merged, appended) = self.merge_slice_without_special_elements(
            special.original,
            special.patch.clone(),
            merge_key,
            item_schema,
        )?;
        if special.aliased {
            // Upstream appends into the original's backing array while it has room, which
            // its caller's handle on the original list then sees.
            let live = order_of_original.len();
            for (slot, item) in original_view.iter_mut().skip(live).zip(appended) {
                *slot = item;
            }
        }
        let (patch_items, server_only) = partition_maps(merged, &special.patch, merge_key)?;
        let list = normalize_element_order(
            patch_items,
            server_only,
            &special.patch,
            &order_of_original,
            merge_key,
            kind,
        )?;
        Ok(Merged {
            list,
            original_view,
        })
    }

    /// Upstream `mergeSliceWithoutSpecialElements`: merges items that share a merge key value
    /// and appends the rest. Returns the list and the appended items.
    fn merge_slice_without_special_elements(
        &self,
        mut original: Vec<Value>,
        patch: Vec<Value>,
        merge_key: &str,
        item_schema: Schema<'_>,
    ) -> Result<(Vec<Value>, Vec<Value>)> {
        let mut appended = Vec::new();
        for item in patch {
            let Value::Object(item) = item else {
                return Err(bad_arg(GO_MAP, &item));
            };
            let Some(merge_value) = item.get(merge_key) else {
                return Err(no_merge_key(&item, merge_key));
            };
            match find_map_by_key(&original, merge_key, merge_value)? {
                Some(index) => {
                    let Value::Object(existing) = std::mem::take(&mut original[index]) else {
                        return Err(PatchError::NotAMap(index));
                    };
                    original[index] = Value::Object(self.merge_map(existing, item, item_schema)?);
                }
                None => {
                    let item = Value::Object(clean_map(item));
                    appended.push(item.clone());
                    original.push(item);
                }
            }
        }
        Ok((original, appended))
    }

    /// Upstream `mergePatchIntoOriginal`: handles every `$setElementOrder/<field>` of `patch`
    /// together with the patch's `<field>` list, and removes both from `patch`.
    fn merge_set_element_order(
        &self,
        original: &mut Map<String, Value>,
        patch: &mut Map<String, Value>,
        schema: Schema<'_>,
    ) -> Result<()> {
        let keys: Vec<String> = patch
            .keys()
            .filter(|k| k.starts_with(SET_ELEMENT_ORDER_PREFIX))
            .cloned()
            .collect();
        for key in keys {
            let Some(order) = patch.shift_remove(&key) else {
                continue;
            };
            let Value::Array(order) = order else {
                return Err(bad_arg(GO_SLICE, &order));
            };
            let field_name = extract_key(&key, SET_ELEMENT_ORDER_PREFIX)?;

            let original_list = match original.get(&field_name) {
                None => None,
                Some(Value::Array(list)) => Some(list.clone()),
                Some(other) => return Err(bad_arg(GO_SLICE, other)),
            };
            let patch_list = match patch.get(&field_name) {
                None => None,
                Some(Value::Array(list)) => Some(list.clone()),
                Some(other) => return Err(bad_arg(GO_SLICE, other)),
            };

            let field = self.lookup(schema, &field_name);
            let (_, strategy) = extract_retain_keys_patch_strategy(field.patch_strategy)?;
            let merge_key = field.patch_merge_key.unwrap_or("");
            validate_patch_with_set_order_list(
                patch_list.as_deref().unwrap_or_default(),
                &order,
                merge_key,
            )?;

            // Upstream reads the original list through a handle that shares memory with the
            // list it merges into, so it sees that merge's in-place changes.
            let (merged, server_order) = match (original_list, &patch_list) {
                (Some(original_list), None) => (original_list.clone(), original_list),
                (None, Some(patch_list)) => (clean_list(patch_list.clone()), Vec::new()),
                (Some(original_list), Some(patch_list)) => {
                    let merged = self.merge_slice_handler(
                        original_list,
                        patch_list.clone(),
                        field,
                        strategy,
                        false,
                    )?;
                    (merged.list, merged.original_view)
                }
                (None, None) => continue,
            };

            let (patch_items, server_only) = if merge_key.is_empty() {
                partition_primitives(merged, &order)
            } else {
                partition_maps(merged, &order, merge_key)?
            };
            let kind =
                slice_element_kind(&[&server_order, patch_list.as_deref().unwrap_or_default()])?;
            let both = normalize_element_order(
                patch_items,
                server_only,
                &order,
                &server_order,
                merge_key,
                kind,
            )?;
            original.insert(field_name.clone(), Value::Array(both));
            patch.shift_remove(&field_name);
        }
        Ok(())
    }
}

/// Upstream `applyRetainKeysDirective`: drops every key of `original` that `$retainKeys` does
/// not list, after checking that the patch only sets listed keys.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<()> {
    let Some(retain) = patch.shift_remove(RETAIN_KEYS_DIRECTIVE) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(PatchError::BadPatchFormatForRetainKeys);
    };
    let retained = |key: &str| retain.iter().any(|v| v.as_str() == Some(key));
    for (key, value) in patch.iter() {
        if value.is_null()
            || key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
            || key.starts_with(SET_ELEMENT_ORDER_PREFIX)
        {
            continue;
        }
        if !retained(key) {
            return Err(PatchError::BadPatchFormatForRetainKeys);
        }
    }
    original.retain(|key, _| retained(key));
    Ok(())
}

/// A merged list, and the original list as upstream's caller sees it afterwards.
struct Merged {
    list: Vec<Value>,
    /// Upstream merges lists in place: deleting an item shifts the rest left within the
    /// original's backing array (leaving the last item twice) and appending fills the freed
    /// tail. A caller holding the original slice header (`mergePatchIntoOriginal`) orders
    /// server-only items by this view, so `$setElementOrder` results depend on it.
    original_view: Vec<Value>,
}

/// What [`merge_slice_with_special_elements`] leaves.
struct Special {
    /// The original list with `$patch: delete` items removed, or the patch's items after
    /// `$patch: replace`.
    original: Vec<Value>,
    /// The patch's items that are not directives (none after `$patch: replace`).
    patch: Vec<Value>,
    /// The original's backing array after the deletions (see [`Merged::original_view`]).
    original_view: Vec<Value>,
    /// Whether `original` still shares the backing array (no `$patch: replace`).
    aliased: bool,
}

/// Upstream `mergeSliceWithSpecialElements`: applies `$patch` list items.
fn merge_slice_with_special_elements(
    original: Vec<Value>,
    patch: Vec<Value>,
    merge_key: &str,
) -> Result<Special> {
    let mut backing = original;
    let mut live = backing.len();
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Value::Object(map) = &item else {
            return Err(bad_arg(GO_MAP, &item));
        };
        let Some(directive) = map.get(DIRECTIVE_MARKER) else {
            plain.push(item);
            continue;
        };
        match directive.as_str() {
            Some(DELETE_DIRECTIVE) => {
                let Some(merge_value) = map.get(merge_key) else {
                    return Err(no_merge_key(map, merge_key));
                };
                while let Some(index) = find_map_by_key(&backing[..live], merge_key, merge_value)? {
                    // Go's `append(s[:i], s[i+1:]...)`: shift left, keep the old last item.
                    for i in index..live - 1 {
                        backing[i] = backing[i + 1].clone();
                    }
                    live -= 1;
                }
            }
            // Keep going: the remaining `$patch` items are pruned either way.
            Some(REPLACE_DIRECTIVE) => replace = true,
            Some(MERGE_DIRECTIVE) => return Err(PatchError::MergingListsUnsupported),
            _ => {
                return Err(PatchError::UnknownPatchType {
                    directive: go_fmt_s(directive),
                    map: go_fmt_map(map),
                })
            }
        }
    }
    if replace {
        Ok(Special {
            original: clean_list(plain),
            patch: Vec::new(),
            original_view: backing,
            aliased: false,
        })
    } else {
        Ok(Special {
            original: backing[..live].to_vec(),
            patch: plain,
            original_view: backing,
            aliased: true,
        })
    }
}

/// Upstream `findMapInSliceBasedOnKeyValue`: the index of the first object whose `key` equals
/// `value`.
fn find_map_by_key(list: &[Value], key: &str, value: &Value) -> Result<Option<usize>> {
    for (index, item) in list.iter().enumerate() {
        let Value::Object(map) = item else {
            return Err(PatchError::NotAMap(index));
        };
        if map.get(key) == Some(value) {
            return Ok(Some(index));
        }
    }
    Ok(None)
}

/// Upstream `sliceElementType`: the common kind of the items of all `lists`.
fn slice_element_kind(lists: &[&[Value]]) -> Result<Kind> {
    let mut kind = None;
    for item in lists.iter().flat_map(|l| l.iter()) {
        let this = Kind::of(item);
        match kind {
            None => {
                if this == Kind::Slice {
                    return Err(PatchError::NoListOfLists);
                }
                kind = Some(this);
            }
            Some(previous) if previous != this => {
                let all: Vec<String> = lists.iter().map(|l| go_fmt_list(l)).collect();
                return Err(PatchError::ElementTypesDiffer(format!(
                    "[{}]",
                    all.join(" ")
                )));
            }
            Some(_) => {}
        }
    }
    kind.ok_or(PatchError::NoElements)
}

/// Upstream `extractKey`: `<prefix>/<field>` → `<field>`.
fn extract_key(key: &str, prefix: &str) -> Result<String> {
    match key.split_once('/') {
        Some((head, field)) if head == prefix => Ok(field.to_string()),
        _ if prefix == DELETE_FROM_PRIMITIVE_LIST_PREFIX => {
            Err(PatchError::BadPatchFormatForPrimitiveList)
        }
        _ => Err(PatchError::BadPatchFormatForSetElementOrderList),
    }
}

/// Upstream `extractRetainKeysPatchStrategy`: whether the strategy includes `retainKeys`, and
/// the other strategy, if any.
fn extract_retain_keys_patch_strategy(strategy: Option<&str>) -> Result<(bool, Option<&str>)> {
    let Some(strategy) = strategy else {
        return Ok((false, None));
    };
    let parts: Vec<&str> = strategy.split(',').collect();
    match parts.as_slice() {
        [RETAIN_KEYS_STRATEGY] => Ok((true, None)),
        [single] => Ok((false, Some(single))),
        [RETAIN_KEYS_STRATEGY, other] | [other, RETAIN_KEYS_STRATEGY] => Ok((true, Some(other))),
        _ => Err(PatchError::UnexpectedPatchStrategy(format!(
            "[{}]",
            parts.join(" ")
        ))),
    }
}

/// Upstream `validatePatchWithSetOrderList`: the patch's items must appear in
/// `$setElementOrder` in the same relative order.
fn validate_patch_with_set_order_list(
    patch: &[Value],
    order: &[Value],
    merge_key: &str,
) -> Result<()> {
    if order.is_empty() || patch.is_empty() {
        return Ok(());
    }
    let non_delete: Vec<&Value> = if merge_key.is_empty() {
        patch.iter().collect()
    } else {
        let mut kept = Vec::with_capacity(patch.len());
        for item in patch {
            let Value::Object(map) = item else {
                return Err(bad_arg(GO_MAP, item));
            };
            if map.get(DIRECTIVE_MARKER).and_then(Value::as_str) != Some(DELETE_DIRECTIVE) {
                kept.push(item);
            }
        }
        kept
    };
    let (mut p, mut o) = (0, 0);
    while p < non_delete.len() && o < order.len() {
        if non_delete[p]
            .as_object()
            .is_some_and(|m| m.contains_key(DIRECTIVE_MARKER))
        {
            p += 1;
            continue;
        }
        if merge_key_value_equal(non_delete[p], &order[o], merge_key)? {
            p += 1;
        }
        o += 1;
    }
    if p < non_delete.len() && o >= order.len() {
        return Err(PatchError::OrderMismatch {
            patch: go_fmt_list(patch),
            order: go_fmt_list(order),
        });
    }
    Ok(())
}

/// Upstream `mergeKeyValueEqual`.
fn merge_key_value_equal(left: &Value, right: &Value, merge_key: &str) -> Result<bool> {
    if merge_key.is_empty() {
        return Ok(left == right);
    }
    let Value::Object(left) = left else {
        return Err(bad_arg(GO_MAP, left));
    };
    let Value::Object(right) = right else {
        return Err(bad_arg(GO_MAP, right));
    };
    let Some(l) = left.get(merge_key) else {
        return Err(no_merge_key(left, merge_key));
    };
    let Some(r) = right.get(merge_key) else {
        return Err(no_merge_key(right, merge_key));
    };
    Ok(l == r)
}

/// Upstream `partitionPrimitivesByPresentInList`: items of `merged` in `by`, and the rest.
fn partition_primitives(merged: Vec<Value>, by: &[Value]) -> (Vec<Value>, Vec<Value>) {
    merged.into_iter().partition(|v| by.contains(v))
}

/// Upstream `partitionMapsByPresentInList`: objects of `merged` whose merge key value appears
/// in `by`, and the rest.
fn partition_maps(
    merged: Vec<Value>,
    by: &[Value],
    merge_key: &str,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut in_by = Vec::with_capacity(merged.len());
    let mut rest = Vec::with_capacity(merged.len());
    for item in merged {
        let Value::Object(map) = &item else {
            return Err(bad_arg(GO_MAP, &item));
        };
        let Some(value) = map.get(merge_key) else {
            return Err(no_merge_key(map, merge_key));
        };
        if find_map_by_key(by, merge_key, value)?.is_some() {
            in_by.push(item);
        } else {
            rest.push(item);
        }
    }
    Ok((in_by, rest))
}

/// Upstream `index`: where `item` is in `list`, comparing merge key values for objects.
fn index_of(list: &[Value], item: &Value, merge_key: &str, kind: Kind) -> Option<usize> {
    if kind == Kind::Map {
        let wanted = item.as_object().and_then(|m| m.get(merge_key));
        list.iter()
            .position(|v| v.as_object().and_then(|m| m.get(merge_key)) == wanted)
    } else {
        list.iter().position(|v| v == item)
    }
}

/// Upstream `normalizeSliceOrder`: sorts `items` by their place in `order`; `$patch: delete`
/// items go last.
fn normalize_slice_order(
    items: Vec<Value>,
    order: &[Value],
    merge_key: &str,
    kind: Kind,
) -> Result<Vec<Value>> {
    let (mut items, deletes) = if kind == Kind::Map {
        for item in items.iter().chain(order.iter()) {
            let Value::Object(map) = item else {
                return Err(bad_arg(GO_MAP, item));
            };
            if !map.contains_key(merge_key) {
                return Err(no_merge_key(map, merge_key));
            }
        }
        items.into_iter().partition::<Vec<Value>, _>(|item| {
            item.get(DIRECTIVE_MARKER).and_then(Value::as_str) != Some(DELETE_DIRECTIVE)
        })
    } else {
        (items, Vec::new())
    };
    items.sort_by_key(|item| index_of(order, item, merge_key, kind).unwrap_or(usize::MAX));
    items.extend(deletes);
    Ok(items)
}

/// Upstream `normalizeElementOrder`: orders the patch's items as the patch (or
/// `$setElementOrder`) does and the server-only items as the original did, then interleaves
/// them keeping the original's relative order where both are known.
fn normalize_element_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: &str,
    kind: Kind,
) -> Result<Vec<Value>> {
    let right = normalize_slice_order(patch_items, patch_order, merge_key, kind)?;
    let left = normalize_slice_order(server_only, server_order, merge_key, kind)?;

    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => {
                match (
                    index_of(server_order, l, merge_key, kind),
                    index_of(server_order, r, merge_key, kind),
                ) {
                    (Some(li), Some(ri)) => li < ri,
                    _ => false,
                }
            }
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    Ok(out)
}

/// Prepares a patch value that is stored without merging: drops objects carrying `$patch`
/// (upstream `removeDirectives`), `null`s inside objects (upstream
/// `discardNullValuesFromPatch`) and leftover directive keys. `None` when the value itself is
/// a directive.
fn clean(value: Value) -> Option<Value> {
    match value {
        Value::Object(map) => {
            if map.contains_key(DIRECTIVE_MARKER) {
                None
            } else {
                Some(Value::Object(clean_map(map)))
            }
        }
        Value::Array(list) => Some(Value::Array(clean_list(list))),
        other => Some(other),
    }
}

fn clean_map(map: Map<String, Value>) -> Map<String, Value> {
    map.into_iter()
        .filter(|(k, v)| !v.is_null() && !is_directive_key(k))
        .filter_map(|(k, v)| clean(v).map(|v| (k, v)))
        .collect()
}

fn clean_list(list: Vec<Value>) -> Vec<Value> {
    list.into_iter().filter_map(clean).collect()
}

fn is_directive_key(key: &str) -> bool {
    key == RETAIN_KEYS_DIRECTIVE
        || key.starts_with(SET_ELEMENT_ORDER_PREFIX)
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
}

/// Formats a value as Go's `%v` does for the `interface{}` trees upstream builds, so error
/// messages read the same: `map[a:1 b:[x y]]`.
fn go_fmt(value: &Value) -> String {
    let mut out = String::new();
    write_go(&mut out, value);
    out
}

/// Go's `%s` of a value: strings bare, other types flagged as Go does.
fn go_fmt_s(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => format!("%!s({}={})", Kind::of(other).go_name(), go_fmt(other)),
    }
}

fn go_fmt_map(map: &Map<String, Value>) -> String {
    let mut out = String::new();
    write_go_map(&mut out, map);
    out
}

fn go_fmt_list(list: &[Value]) -> String {
    let mut out = String::new();
    write_go_list(&mut out, list);
    out
}

fn write_go(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => out.push_str(s),
        Value::Array(list) => write_go_list(out, list),
        Value::Object(map) => write_go_map(out, map),
    }
}

fn write_go_list(out: &mut String, list: &[Value]) {
    out.push('[');
    for (i, v) in list.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        write_go(out, v);
    }
    out.push(']');
}

fn write_go_map(out: &mut String, map: &Map<String, Value>) {
    // Go prints map keys sorted.
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    out.push_str("map[");
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(k);
        out.push(':');
        if let Some(v) = map.get(k) {
            write_go(out, v);
        }
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A hand-built metadata table covering the fields the tests touch.
    struct FakeMeta;

    impl PatchMeta for FakeMeta {
        fn field(&self, definition: &str, json: &str) -> Option<FieldMeta<'static>> {
            let m = |value| FieldMeta {
                value,
                ..FieldMeta::default()
            };
            let merge = |key, value| FieldMeta {
                patch_strategy: Some("merge"),
                patch_merge_key: Some(key),
                value,
            };
            Some(match (definition, json) {
                ("Deployment", "metadata") => m(Schema::Message("ObjectMeta")),
                ("Deployment", "spec") => m(Schema::Message("DeploymentSpec")),
                ("DeploymentSpec", "template") => m(Schema::Message("PodTemplateSpec")),
                ("DeploymentSpec", "strategy") => FieldMeta {
                    patch_strategy: Some("retainKeys"),
                    patch_merge_key: None,
                    value: Schema::Message("DeploymentStrategy"),
                },
                ("PodTemplateSpec", "spec") => m(Schema::Message("PodSpec")),
                ("PodTemplateSpec", "metadata") => m(Schema::Message("ObjectMeta")),
                ("ObjectMeta", "labels") => m(Schema::MapOf(None)),
                ("ObjectMeta", "finalizers") => FieldMeta {
                    patch_strategy: Some("merge"),
                    patch_merge_key: None,
                    value: Schema::Opaque,
                },
                ("PodSpec", "containers") => merge("name", Schema::Message("Container")),
                ("PodSpec", "volumes") => FieldMeta {
                    patch_strategy: Some("merge,retainKeys"),
                    patch_merge_key: Some("name"),
                    value: Schema::Message("Volume"),
                },
                ("Container", "ports") => merge("containerPort", Schema::Message("ContainerPort")),
                ("Container", "env") => merge("name", Schema::Message("EnvVar")),
                ("Container", "args") => m(Schema::Opaque),
                _ => return None,
            })
        }
    }

    fn apply(original: Value, patch: Value) -> Result<Value> {
        apply_with(&FakeMeta, &original, &patch, "Deployment")
    }

    fn deployment(containers: Value) -> Value {
        json!({"spec": {"template": {"spec": {"containers": containers}}}})
    }

    #[test]
    fn merges_containers_by_name() {
        let original = deployment(json!([
            {"name": "a", "image": "a:1"},
            {"name": "c", "image": "old", "args": ["x"]},
        ]));
        let patch = deployment(json!([{"name": "c", "image": "new"}]));
        assert_eq!(
            apply(original, patch).unwrap(),
            deployment(json!([
                {"name": "a", "image": "a:1"},
                {"name": "c", "image": "new", "args": ["x"]},
            ]))
        );
    }

    #[test]
    fn appends_new_items_after_patch_order() {
        // Upstream puts an item the original did not have before the remaining
        // server-only items once it is reached in the interleave.
        let original = deployment(json!([{"name": "a"}, {"name": "b"}]));
        let patch = deployment(json!([{"name": "b", "image": "x"}, {"name": "n"}]));
        assert_eq!(
            apply(original, patch).unwrap(),
            deployment(json!([{"name": "a"}, {"name": "b", "image": "x"}, {"name": "n"}]))
        );
    }

    #[test]
    fn merges_ports_and_env_and_replaces_args() {
        let original = deployment(json!([{
            "name": "c",
            "ports": [{"containerPort": 80, "protocol": "TCP"}],
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "args": ["--a", "--b"],
        }]));
        let patch = deployment(json!([{
            "name": "c",
            "ports": [{"containerPort": 443}],
            "env": [{"name": "B", "value": "3"}],
            "args": ["--c"],
        }]));
        assert_eq!(
            apply(original, patch).unwrap(),
            deployment(json!([{
                "name": "c",
                // Upstream's interleave puts a new item ahead of server-only items it cannot
                // place relative to.
                "ports": [{"containerPort": 443}, {"containerPort": 80, "protocol": "TCP"}],
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}],
                "args": ["--c"],
            }]))
        );
    }

    #[test]
    fn deletes_a_container_with_patch_delete() {
        let original = deployment(json!([{"name": "a"}, {"name": "b"}]));
        let patch = deployment(json!([{"name": "a", "$patch": "delete"}]));
        assert_eq!(
            apply(original, patch).unwrap(),
            deployment(json!([{"name": "b"}]))
        );
    }

    #[test]
    fn replaces_a_list_with_patch_replace_item() {
        let original = deployment(json!([{"name": "a"}, {"name": "b"}]));
        let patch = deployment(json!([{"name": "z", "x": null}, {"$patch": "replace"}]));
        assert_eq!(
            apply(original, patch).unwrap(),
            deployment(json!([{"name": "z"}]))
        );
    }

    #[test]
    fn set_element_order_orders_the_merged_list() {
        let original = deployment(json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]));
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "c"}, {"name": "b"}, {"name": "a"}],
            "containers": [{"name": "b", "image": "x"}],
        }}}});
        assert_eq!(
            apply(original, patch).unwrap(),
            deployment(json!([{"name": "c"}, {"name": "b", "image": "x"}, {"name": "a"}]))
        );
    }

    #[test]
    fn set_element_order_mismatch_is_an_error() {
        let original = deployment(json!([{"name": "a"}, {"name": "b"}]));
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "b"}, {"name": "a"}],
        }}}});
        let err = apply(original, patch).unwrap_err();
        assert!(matches!(err, PatchError::OrderMismatch { .. }), "{err}");
        assert_eq!(err.status_code(), 500);
    }

    #[test]
    fn finalizers_merge_as_a_set_and_delete_from_primitive_list() {
        let original = json!({"metadata": {"finalizers": ["a", "b"]}});
        let patch = json!({"metadata": {"finalizers": ["b", "c"]}});
        assert_eq!(
            apply(original.clone(), patch).unwrap(),
            json!({"metadata": {"finalizers": ["a", "b", "c"]}})
        );
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}});
        assert_eq!(
            apply(original, patch).unwrap(),
            json!({"metadata": {"finalizers": ["b"]}})
        );
    }

    #[test]
    fn null_deletes_labels_and_new_values_drop_nulls() {
        let original = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let patch = json!({"metadata": {"labels": {"a": null, "c": "3"}, "annotations": {"x": null, "y": "1"}}});
        assert_eq!(
            apply(original, patch).unwrap(),
            json!({"metadata": {"labels": {"b": "2", "c": "3"}, "annotations": {"y": "1"}}})
        );
    }

    #[test]
    fn retain_keys_clears_other_keys() {
        let original = json!({"spec": {"strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1},
        }}});
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        assert_eq!(
            apply(original.clone(), patch).unwrap(),
            json!({"spec": {"strategy": {"type": "Recreate"}}})
        );
        let bad = json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}});
        let err = apply(original, bad).unwrap_err();
        assert_eq!(err, PatchError::BadPatchFormatForRetainKeys);
        assert_eq!(err.status_code(), 400);
        assert_eq!(err.to_string(), "invalid patch format of retainKeys");
    }

    #[test]
    fn volumes_retain_keys_per_item() {
        let spec = |volumes: Value| json!({"spec": {"template": {"spec": {"volumes": volumes}}}});
        let original = spec(json!([{"name": "v", "emptyDir": {}}]));
        let patch = spec(json!([{
            "$retainKeys": ["configMap", "name"],
            "name": "v",
            "configMap": {"name": "cm"},
        }]));
        assert_eq!(
            apply(original, patch).unwrap(),
            spec(json!([{"name": "v", "configMap": {"name": "cm"}}]))
        );
    }

    #[test]
    fn map_directives() {
        let original = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": 1}});
        let patch = json!({"metadata": {"labels": {"$patch": "replace", "b": "2"}}});
        assert_eq!(
            apply(original.clone(), patch).unwrap(),
            json!({"metadata": {"labels": {"b": "2"}}, "spec": {"x": 1}})
        );
        let patch = json!({"spec": {"$patch": "delete"}});
        assert_eq!(
            apply(original.clone(), patch).unwrap(),
            json!({"metadata": {"labels": {"a": "1"}}, "spec": {}})
        );
        let patch = json!({"spec": {"$patch": "merge"}});
        assert_eq!(
            apply(original, patch).unwrap_err().to_string(),
            "unknown patch type: merge in map: map[$patch:merge]"
        );
    }

    #[test]
    fn list_directive_errors() {
        let original = deployment(json!([{"name": "a"}]));
        let err = apply(original.clone(), deployment(json!([{"$patch": "merge"}]))).unwrap_err();
        assert_eq!(err, PatchError::MergingListsUnsupported);
        let err = apply(original.clone(), deployment(json!([{"$patch": "delete"}]))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "map: map[$patch:delete] does not contain declared merge key: name"
        );
        let err = apply(original.clone(), deployment(json!([{"image": "x"}]))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "map: map[image:x] does not contain declared merge key: name"
        );
        let err = apply(original.clone(), deployment(json!([["x"]]))).unwrap_err();
        assert_eq!(
            err,
            PatchError::ElementTypesDiffer("[[map[name:a]] [[x]]]".into())
        );
        let err = apply(
            json!({"spec": {"template": {"spec": {"containers": [["a"]]}}}}),
            deployment(json!([["x"]])),
        )
        .unwrap_err();
        assert_eq!(err, PatchError::NoListOfLists);
        assert_eq!(err.status_code(), 422);
        let bad_prefix = json!({"metadata": {"$deleteFromPrimitiveListfinalizers": ["a"]}});
        assert_eq!(
            apply(json!({"metadata": {}}), bad_prefix).unwrap_err(),
            PatchError::BadPatchFormatForPrimitiveList
        );
        let bad_prefix = json!({"metadata": {"$setElementOrderfinalizers": ["a"]}});
        assert_eq!(
            apply(json!({"metadata": {}}), bad_prefix).unwrap_err(),
            PatchError::BadPatchFormatForSetElementOrderList
        );
        assert_eq!(
            apply(json!({}), json!([])).unwrap_err(),
            PatchError::BadJsonDoc
        );
    }

    #[test]
    fn unknown_fields_merge_like_json_merge_patch() {
        let original = json!({"spec": {"unknown": {"list": [1, 2], "keep": true}}});
        let patch = json!({"spec": {"unknown": {"list": [3], "new": {"a": null, "b": 1}}}});
        assert_eq!(
            apply(original, patch).unwrap(),
            json!({"spec": {"unknown": {"list": [3], "keep": true, "new": {"b": 1}}}})
        );
    }

    #[test]
    fn new_values_lose_directives() {
        let original = json!({"spec": {}});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "a"}],
            "containers": [{"name": "a"}, {"name": "gone", "$patch": "delete"}],
        }}}});
        assert_eq!(
            apply(original, patch).unwrap(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}})
        );
    }

    #[test]
    fn go_formatting() {
        assert_eq!(
            go_fmt(&json!({"b": [1, "x", null], "a": {"c": true}})),
            "map[a:map[c:true] b:[1 x <nil>]]"
        );
        assert_eq!(go_fmt_s(&json!(1)), "%!s(int64=1)");
    }
}
