//! ObjectMeta, labels, annotations and label selectors (upstream's apimachinery
//! `ValidateObjectMeta`, `ValidateObjectMetaUpdate`, `ValidateLabels`, ...).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::Serialize;
use serde_json::Value;

use super::field::{forbidden, immutable, invalid, required, too_long, FieldError, Path};
use super::names::{is_qualified_name, is_valid_label_value, name_is_dns_label};

/// A name check taking the name and whether it is a `generateName` prefix.
pub type NameFn = fn(&str, bool) -> Vec<String>;

/// 256 KiB, upstream's `TotalAnnotationSizeLimitB`.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// Upstream's `isNegativeErrorMsg`.
pub const IS_NEGATIVE_ERROR_MSG: &str = "must be greater than or equal to 0";

/// JSON for a bad value; `null` if it cannot be encoded.
pub(crate) fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// `ValidateNonnegativeField`
pub(crate) fn nonnegative(value: i64, path: &Path) -> Vec<FieldError> {
    if value < 0 {
        vec![invalid(path, value, IS_NEGATIVE_ERROR_MSG)]
    } else {
        Vec::new()
    }
}

/// `ValidateImmutableField` on anything comparable and serializable.
pub(crate) fn immutable_field<T: PartialEq + Serialize>(
    new: &T,
    old: &T,
    path: &Path,
) -> Vec<FieldError> {
    if new == old {
        Vec::new()
    } else {
        vec![immutable(path, to_json(new))]
    }
}

/// Each message of a name check as an Invalid error on `path`.
pub(crate) fn name_errors(path: &Path, value: &str, msgs: Vec<String>) -> Vec<FieldError> {
    msgs.into_iter().map(|m| invalid(path, value, &m)).collect()
}

/// `ValidateLabelName`: a qualified name.
pub(crate) fn label_name(key: &str, path: &Path) -> Vec<FieldError> {
    name_errors(path, key, is_qualified_name(key))
}

/// `ValidateLabels`: keys are qualified names, values label values; errors sit on the map's
/// own path.
pub fn labels(labels: Option<&BTreeMap<String, String>>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (k, v) in labels.into_iter().flatten() {
        errs.extend(label_name(k, path));
        errs.extend(name_errors(path, v, is_valid_label_value(v)));
    }
    errs
}

/// `ValidateAnnotations`: keys are (case-insensitively) qualified names, total size capped.
pub fn annotations(annotations: Option<&BTreeMap<String, String>>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0usize;
    for (k, v) in annotations.into_iter().flatten() {
        for msg in is_qualified_name(&k.to_lowercase()) {
            errs.push(invalid(path, k.as_str(), &msg));
        }
        total += k.len() + v.len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

/// Finalizers upstream knows without a domain prefix.
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

fn finalizers(list: &[String], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for f in list {
        errs.extend(name_errors(path, f, is_qualified_name(f)));
    }
    let orphan = list.iter().any(|f| f == "orphan");
    let foreground = list.iter().any(|f| f == "foregroundDeletion");
    if orphan && foreground {
        errs.push(invalid(
            path,
            to_json(&list),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    for (i, f) in list.iter().enumerate() {
        if !f.contains('/') && !STANDARD_FINALIZERS.contains(&f.as_str()) {
            errs.push(invalid(
                &path.index(i),
                f.as_str(),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    errs
}

fn owner_references(meta: &ObjectMeta, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut controllers: Vec<String> = Vec::new();
    for r in meta.owner_references.iter().flatten() {
        let version = r.api_version.rsplit('/').next().unwrap_or_default();
        if version.is_empty() {
            errs.push(invalid(
                &path.child("apiVersion"),
                r.api_version.as_str(),
                "version must not be empty",
            ));
        }
        if r.kind.is_empty() {
            errs.push(invalid(
                &path.child("kind"),
                r.kind.as_str(),
                "kind must not be empty",
            ));
        }
        if r.name.is_empty() {
            errs.push(invalid(
                &path.child("name"),
                r.name.as_str(),
                "name must not be empty",
            ));
        }
        if r.uid.is_empty() {
            errs.push(invalid(
                &path.child("uid"),
                r.uid.as_str(),
                "uid must not be empty",
            ));
        }
        if r.controller == Some(true) {
            controllers.push(format!("{}/{}", r.kind, r.name));
        }
    }
    if controllers.len() > 1 {
        errs.push(invalid(
            path,
            to_json(&meta.owner_references),
            &format!(
                "Only one reference can have Controller set to true. Found \"true\" in references for {}",
                controllers.join(" and ")
            ),
        ));
    }
    errs
}

/// Upstream's `ValidateObjectMeta` on create (name generation already done; a missing
/// name is accepted while `generateName` is set so the apiserver may generate it later).
pub fn object_meta(
    meta: &ObjectMeta,
    requires_namespace: bool,
    name_fn: NameFn,
    path: &Path,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let generate_name = meta.generate_name.as_deref().unwrap_or_default();
    if !generate_name.is_empty() {
        errs.extend(name_errors(
            &path.child("generateName"),
            generate_name,
            name_fn(generate_name, true),
        ));
    }
    let name = meta.name.as_deref().unwrap_or_default();
    if name.is_empty() {
        if generate_name.is_empty() {
            errs.push(required(
                &path.child("name"),
                "name or generateName is required",
            ));
        }
    } else {
        errs.extend(name_errors(&path.child("name"), name, name_fn(name, false)));
    }
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    if requires_namespace {
        if namespace.is_empty() {
            errs.push(required(&path.child("namespace"), ""));
        } else {
            errs.extend(name_errors(
                &path.child("namespace"),
                namespace,
                name_is_dns_label(namespace, false),
            ));
        }
    } else if !namespace.is_empty() {
        errs.push(forbidden(
            &path.child("namespace"),
            "not allowed on this type",
        ));
    }
    errs.extend(nonnegative(
        meta.generation.unwrap_or_default(),
        &path.child("generation"),
    ));
    errs.extend(labels(meta.labels.as_ref(), &path.child("labels")));
    errs.extend(annotations(
        meta.annotations.as_ref(),
        &path.child("annotations"),
    ));
    errs.extend(owner_references(meta, &path.child("ownerReferences")));
    errs.extend(finalizers(
        meta.finalizers.as_deref().unwrap_or_default(),
        &path.child("finalizers"),
    ));
    errs
}

/// Upstream's `ValidateObjectMetaUpdate` (without the resourceVersion check: the apiserver
/// owns resourceVersion semantics and fills it in for unconditional updates).
pub fn object_meta_update(new: &ObjectMeta, old: &ObjectMeta, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if old.deletion_timestamp.is_some() {
        let old_f = old.finalizers.as_deref().unwrap_or_default();
        let added: Vec<&String> = new
            .finalizers
            .iter()
            .flatten()
            .filter(|f| !old_f.contains(f))
            .collect();
        if !added.is_empty() {
            errs.push(forbidden(
                &path.child("finalizers"),
                &format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers {}",
                    super::field::render_value(&to_json(&added))
                ),
            ));
        }
    }
    if new.generation.unwrap_or_default() < old.generation.unwrap_or_default() {
        errs.push(invalid(
            &path.child("generation"),
            new.generation.unwrap_or_default(),
            "must not be decremented",
        ));
    }
    errs.extend(immutable_field(&new.name, &old.name, &path.child("name")));
    errs.extend(immutable_field(
        &new.namespace,
        &old.namespace,
        &path.child("namespace"),
    ));
    errs.extend(immutable_field(&new.uid, &old.uid, &path.child("uid")));
    errs.extend(immutable_field(
        &new.creation_timestamp,
        &old.creation_timestamp,
        &path.child("creationTimestamp"),
    ));
    if old.deletion_timestamp.is_some() {
        errs.extend(immutable_field(
            &new.deletion_timestamp,
            &old.deletion_timestamp,
            &path.child("deletionTimestamp"),
        ));
        errs.extend(immutable_field(
            &new.deletion_grace_period_seconds,
            &old.deletion_grace_period_seconds,
            &path.child("deletionGracePeriodSeconds"),
        ));
    }
    errs.extend(labels(new.labels.as_ref(), &path.child("labels")));
    errs.extend(annotations(
        new.annotations.as_ref(),
        &path.child("annotations"),
    ));
    errs.extend(owner_references(new, &path.child("ownerReferences")));
    errs.extend(finalizers(
        new.finalizers.as_deref().unwrap_or_default(),
        &path.child("finalizers"),
    ));
    errs
}

/// Upstream's `ValidateLabelSelector` (label values in expressions must be valid).
pub fn label_selector(selector: &LabelSelector, path: &Path) -> Vec<FieldError> {
    let mut errs = labels(selector.match_labels.as_ref(), &path.child("matchLabels"));
    for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
        let p = path.child("matchExpressions").index(i);
        let values = expr.values.as_deref().unwrap_or_default();
        match expr.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(required(
                        &p.child("values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(forbidden(
                        &p.child("values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            op => errs.push(invalid(
                &p.child("operator"),
                op,
                "not a valid selector operator",
            )),
        }
        errs.extend(label_name(&expr.key, &p.child("key")));
        for (j, v) in values.iter().enumerate() {
            errs.extend(name_errors(
                &p.child("values").index(j),
                v,
                is_valid_label_value(v),
            ));
        }
    }
    errs
}

/// Renders a label selector the way upstream's errors print one (Go's `%#v`):
/// `v1.LabelSelector{MatchLabels:map[string]string{"app":"web"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}`.
pub(crate) fn go_label_selector(selector: &LabelSelector) -> String {
    use super::field::go_quote;
    let labels = match &selector.match_labels {
        None => "map[string]string(nil)".to_string(),
        Some(m) => {
            let inner: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v)))
                .collect();
            format!("map[string]string{{{}}}", inner.join(", "))
        }
    };
    let exprs = match &selector.match_expressions {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(list) => {
            let inner: Vec<String> = list
                .iter()
                .map(|e| {
                    let values = match &e.values {
                        None => "[]string(nil)".to_string(),
                        Some(v) => format!(
                            "[]string{{{}}}",
                            v.iter().map(|s| go_quote(s)).collect::<Vec<_>>().join(", ")
                        ),
                    };
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{values}}}",
                        go_quote(&e.key),
                        go_quote(&e.operator)
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", inner.join(", "))
        }
    };
    format!("v1.LabelSelector{{MatchLabels:{labels}, MatchExpressions:{exprs}}}")
}

/// An Invalid error whose bad value is a label selector.
pub(crate) fn invalid_selector(path: &Path, selector: &LabelSelector, detail: &str) -> FieldError {
    super::field::invalid_displayed(
        path,
        to_json(selector),
        &go_label_selector(selector),
        detail,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::names::name_is_dns_subdomain;

    fn meta(v: Value) -> ObjectMeta {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn names_and_namespaces() {
        let p = Path::new("metadata");
        let errs = object_meta(
            &meta(serde_json::json!({"name": "ok", "namespace": "default"})),
            true,
            name_is_dns_subdomain,
            &p,
        );
        assert!(errs.is_empty(), "{errs:?}");
        let errs = object_meta(
            &meta(serde_json::json!({"namespace": "default"})),
            true,
            name_is_dns_subdomain,
            &p,
        );
        assert_eq!(
            errs[0].to_string(),
            "metadata.name: Required value: name or generateName is required"
        );
        let errs = object_meta(
            &meta(serde_json::json!({"name": "Foo_bar", "namespace": "default"})),
            true,
            name_is_dns_subdomain,
            &p,
        );
        assert!(errs[0].to_string().starts_with(
            "metadata.name: Invalid value: \"Foo_bar\": a lowercase RFC 1123 subdomain"
        ));
        let errs = object_meta(
            &meta(serde_json::json!({"generateName": "web-", "namespace": "default"})),
            true,
            name_is_dns_subdomain,
            &p,
        );
        assert!(errs.is_empty(), "{errs:?}");
        let errs = object_meta(
            &meta(serde_json::json!({"name": "a"})),
            true,
            name_is_dns_subdomain,
            &p,
        );
        assert_eq!(errs[0].to_string(), "metadata.namespace: Required value");
        let errs = object_meta(
            &meta(serde_json::json!({"name": "a", "namespace": "x"})),
            false,
            name_is_dns_subdomain,
            &p,
        );
        assert_eq!(
            errs[0].to_string(),
            "metadata.namespace: Forbidden: not allowed on this type"
        );
    }

    #[test]
    fn labels_annotations_finalizers() {
        let p = Path::new("metadata");
        let m = meta(serde_json::json!({
            "name": "a",
            "labels": {"bad key!": "v", "ok": "-bad"},
            "annotations": {"x": "a".repeat(TOTAL_ANNOTATION_SIZE_LIMIT)},
            "finalizers": ["custom"]
        }));
        let errs = object_meta(&m, false, name_is_dns_subdomain, &p);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "metadata.labels",
                "metadata.labels",
                "metadata.annotations",
                "metadata.finalizers[0]"
            ]
        );
        assert_eq!(
            errs[2].message,
            "Too long: may not be more than 262144 bytes"
        );
        assert_eq!(errs[3].message, "Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified");
    }

    #[test]
    fn meta_updates() {
        let p = Path::new("metadata");
        let old = meta(serde_json::json!({"name": "a", "namespace": "n", "uid": "1"}));
        let new = meta(serde_json::json!({"name": "b", "namespace": "n", "uid": "1"}));
        let errs = object_meta_update(&new, &old, &p);
        assert_eq!(
            errs[0].to_string(),
            "metadata.name: Invalid value: \"b\": field is immutable"
        );
        let old = meta(
            serde_json::json!({"name": "a", "deletionTimestamp": "2024-01-01T00:00:00Z", "finalizers": ["a.io/x"]}),
        );
        let new = meta(
            serde_json::json!({"name": "a", "deletionTimestamp": "2024-01-01T00:00:00Z", "finalizers": ["a.io/x", "a.io/y"]}),
        );
        let errs = object_meta_update(&new, &old, &p);
        assert_eq!(errs[0].field, "metadata.finalizers");
        assert_eq!(
            errs[0].error_type,
            crate::validation::FieldErrorType::Forbidden
        );
    }

    #[test]
    fn selectors() {
        let p = Path::new("spec").child("selector");
        let s: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchExpressions": [{"key": "a", "operator": "In"}, {"key": "b", "operator": "Exists", "values": ["x"]}, {"key": "c", "operator": "Like"}]
        })).unwrap();
        let errs = label_selector(&s, &p);
        assert_eq!(errs[0].to_string(), "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'");
        assert_eq!(errs[1].to_string(), "spec.selector.matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'");
        assert_eq!(errs[2].to_string(), "spec.selector.matchExpressions[2].operator: Invalid value: \"Like\": not a valid selector operator");
    }
}
