//! Field selectors: upstream's `fields.ParseSelector` grammar (with `\,` `\=` `\\` escapes),
//! each kind's selectable fields (its `AddFieldLabelConversionFunc`) and the values an
//! object offers for them (its registry's `ToSelectableFields`).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use super::{Result, SelectorError};
use crate::resources::ResourceInfo;
use crate::validation::field::go_quote;

/// The selectable fields of one object: field name to value.
pub type Fields = BTreeMap<String, String>;

/// `=`/`==` or `!=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOperator {
    Equals,
    NotEquals,
}

/// One `field=value` or `field!=value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub operator: FieldOperator,
    /// The unescaped value.
    pub value: String,
}

impl FieldRequirement {
    fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        let have = get(&self.field).unwrap_or_default();
        match self.operator {
            FieldOperator::Equals => have == self.value,
            FieldOperator::NotEquals => have != self.value,
        }
    }
}

impl fmt::Display for FieldRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.operator {
            FieldOperator::Equals => "=",
            FieldOperator::NotEquals => "!=",
        };
        write!(f, "{}{op}{}", self.field, escape_value(&self.value))
    }
}

/// A parsed field selector: the AND of its terms (none: matches everything).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// Escapes `\`, `,` and `=` in a value (upstream's `EscapeValue`).
pub fn escape_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace('=', "\\=")
}

/// Splits on commas that are not backslash-escaped, keeping the escapes.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in selector.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// Splits a term at the first operator (`!=`, then `==`, then `=` at each position).
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, operator) in [
            ("!=", FieldOperator::NotEquals),
            ("==", FieldOperator::Equals),
            ("=", FieldOperator::Equals),
        ] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], operator, value));
            }
        }
    }
    None
}

/// Undoes [`escape_value`]; bare `,` or `=` and unknown escapes are errors.
fn unescape_value(s: &str) -> Result<String> {
    if !s.contains(['\\', ',', '=']) {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                other => {
                    return Err(SelectorError::InvalidFieldSelector(format!(
                        "invalid field selector: invalid escape sequence: \\{other}"
                    )))
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            // Upstream formats the rune with %v, which prints its code point.
            ',' | '=' => {
                return Err(SelectorError::InvalidFieldSelector(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                )))
            }
            other => out.push(other),
        }
    }
    if in_slash {
        return Err(SelectorError::InvalidFieldSelector(
            "invalid field selector: invalid escape sequence: \\".to_string(),
        ));
    }
    Ok(out)
}

impl FieldSelector {
    /// The selector that matches everything.
    pub fn everything() -> FieldSelector {
        FieldSelector::default()
    }

    /// Parses a `?fieldSelector=` string with upstream's grammar and messages.
    pub fn parse(selector: &str) -> Result<FieldSelector> {
        let mut parts = split_terms(selector);
        parts.sort_unstable();
        let mut requirements = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let (lhs, operator, rhs) = split_term(part).ok_or_else(|| {
                SelectorError::InvalidFieldSelector(format!(
                    "invalid selector: '{selector}'; can't understand '{part}'"
                ))
            })?;
            requirements.push(FieldRequirement {
                field: lhs.to_string(),
                operator,
                value: unescape_value(rhs)?,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Exact-match selector for a field set.
    pub fn from_set(set: &Fields) -> FieldSelector {
        FieldSelector {
            requirements: set
                .iter()
                .map(|(k, v)| FieldRequirement {
                    field: k.clone(),
                    operator: FieldOperator::Equals,
                    value: v.clone(),
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// Whether the field set satisfies every term; a missing field reads as `""`.
    pub fn matches(&self, fields: &Fields) -> bool {
        self.matches_lookup(|f| fields.get(f).map(String::as_str))
    }

    /// [`FieldSelector::matches`] on a field set given as a lookup.
    pub fn matches_lookup<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements.iter().all(|r| r.matches(&get))
    }

    /// The value a selector requires for `field` with `=`, if any.
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.operator == FieldOperator::Equals)
            .map(|r| r.value.as_str())
    }

    /// Checks every field against the kind's selectable fields, with upstream's message
    /// for the first unsupported one.
    pub fn validate_for(&self, info: &ResourceInfo) -> Result<()> {
        self.convert_for(info).map(|_| ())
    }

    /// Validates like [`FieldSelector::validate_for`] and rewrites legacy field names to the
    /// ones [`field_set`] produces (`spec.host` on pods becomes `spec.nodeName`).
    pub fn convert_for(&self, info: &ResourceInfo) -> Result<FieldSelector> {
        let supported = supported_fields(info);
        let mut requirements = Vec::with_capacity(self.requirements.len());
        for r in &self.requirements {
            let mut r = r.clone();
            if info.group.is_empty() && info.kind == "Pod" && r.field == "spec.host" {
                r.field = "spec.nodeName".to_string();
            }
            if !supported.contains(&r.field.as_str()) {
                return Err(SelectorError::UnsupportedField {
                    message: unsupported_message(info, &r.field),
                    field: r.field,
                });
            }
            requirements.push(r);
        }
        Ok(FieldSelector { requirements })
    }
}

const META_ONLY: &[&str] = &["metadata.name", "metadata.namespace"];
const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
];
const NODE_FIELDS: &[&str] = &["metadata.name", "spec.unschedulable"];
const REPLICATION_CONTROLLER_FIELDS: &[&str] =
    &["metadata.name", "metadata.namespace", "status.replicas"];
const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
    "metadata.namespace",
    "metadata.name",
];
const EVENTS_V1_FIELDS: &[&str] = &[
    "reason",
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reportingController",
    "type",
    "metadata.namespace",
    "metadata.name",
];
const NAMESPACE_FIELDS: &[&str] = &["status.phase", "metadata.name"];
const SECRET_FIELDS: &[&str] = &["type", "metadata.namespace", "metadata.name"];
const SERVICE_FIELDS: &[&str] = &[
    "metadata.namespace",
    "metadata.name",
    "spec.clusterIP",
    "spec.type",
];
const JOB_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "status.successful"];

/// Which upstream conversion function a kind has, if any.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Conversion {
    /// A kind-specific list rejecting others with `field label not supported: X`.
    Listed(&'static [&'static str]),
    /// batch/v1 Job's list, with its own message.
    Job,
    /// No registered function: `metav1`'s default (name and namespace only).
    Default,
}

fn conversion(info: &ResourceInfo) -> Conversion {
    match (info.group, info.kind) {
        ("", "Pod") => Conversion::Listed(POD_FIELDS),
        ("", "Node") => Conversion::Listed(NODE_FIELDS),
        ("", "ReplicationController") => Conversion::Listed(REPLICATION_CONTROLLER_FIELDS),
        ("", "Event") => Conversion::Listed(EVENT_FIELDS),
        ("", "Namespace") => Conversion::Listed(NAMESPACE_FIELDS),
        ("", "Secret") => Conversion::Listed(SECRET_FIELDS),
        ("", "Service") => Conversion::Listed(SERVICE_FIELDS),
        ("events.k8s.io", "Event") => Conversion::Listed(EVENTS_V1_FIELDS),
        ("batch", "Job") => Conversion::Job,
        _ => Conversion::Default,
    }
}

/// The field names a kind can be selected on, as upstream's field label conversion
/// accepts them. Kinds without their own list accept `metadata.name` and
/// `metadata.namespace` (note: upstream apps/v1 has no list, so ReplicaSets do not accept
/// `status.replicas` even though the documentation says so; kubernetes#135136).
pub fn supported_fields(info: &ResourceInfo) -> &'static [&'static str] {
    match conversion(info) {
        Conversion::Listed(list) => list,
        Conversion::Job => JOB_FIELDS,
        Conversion::Default => META_ONLY,
    }
}

fn unsupported_message(info: &ResourceInfo, label: &str) -> String {
    match conversion(info) {
        Conversion::Listed(_) => format!("field label not supported: {label}"),
        Conversion::Job => format!("field label {} not supported for Job", go_quote(label)),
        Conversion::Default => format!(
            "{} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
            go_quote(label)
        ),
    }
}

fn str_at(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn int_at(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_i64)
        .unwrap_or_default()
        .to_string()
}

fn bool_at(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_bool)
        .unwrap_or_default()
        .to_string()
}

/// The values an object offers for selection (upstream's per-kind `ToSelectableFields`):
/// always `metadata.name`, `metadata.namespace` for namespaced kinds, plus the kind's own.
pub fn field_set(info: &ResourceInfo, obj: &Value) -> Result<Fields> {
    if !obj.is_object() {
        return Err(SelectorError::NotAnObject);
    }
    let mut f = Fields::new();
    let mut put = |k: &str, v: String| {
        f.insert(k.to_string(), v);
    };
    put("metadata.name", str_at(obj, "/metadata/name"));
    if info.namespaced {
        put("metadata.namespace", str_at(obj, "/metadata/namespace"));
    }
    match (info.group, info.kind) {
        ("", "Pod") => {
            put("spec.nodeName", str_at(obj, "/spec/nodeName"));
            put("spec.restartPolicy", str_at(obj, "/spec/restartPolicy"));
            put("spec.schedulerName", str_at(obj, "/spec/schedulerName"));
            put(
                "spec.serviceAccountName",
                str_at(obj, "/spec/serviceAccountName"),
            );
            put("spec.hostNetwork", bool_at(obj, "/spec/hostNetwork"));
            put("status.phase", str_at(obj, "/status/phase"));
            let pod_ip = obj
                .pointer("/status/podIPs/0/ip")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| str_at(obj, "/status/podIP"));
            put("status.podIP", pod_ip);
            put(
                "status.nominatedNodeName",
                str_at(obj, "/status/nominatedNodeName"),
            );
        }
        ("", "Node") => put("spec.unschedulable", bool_at(obj, "/spec/unschedulable")),
        ("", "ReplicationController") | ("apps", "ReplicaSet") => {
            put("status.replicas", int_at(obj, "/status/replicas"));
        }
        ("", "Namespace") => put("status.phase", str_at(obj, "/status/phase")),
        ("", "Secret") => put("type", str_at(obj, "/type")),
        ("", "Service") => {
            put("spec.clusterIP", str_at(obj, "/spec/clusterIP"));
            put("spec.type", str_at(obj, "/spec/type"));
        }
        ("batch", "Job") => put("status.successful", int_at(obj, "/status/succeeded")),
        ("", "Event") => {
            for field in [
                "kind",
                "namespace",
                "name",
                "uid",
                "apiVersion",
                "resourceVersion",
                "fieldPath",
            ] {
                put(
                    &format!("involvedObject.{field}"),
                    str_at(obj, &format!("/involvedObject/{field}")),
                );
            }
            put("reason", str_at(obj, "/reason"));
            put("reportingComponent", str_at(obj, "/reportingComponent"));
            let mut source = str_at(obj, "/source/component");
            if source.is_empty() {
                source = str_at(obj, "/reportingComponent");
            }
            put("source", source);
            put("type", str_at(obj, "/type"));
        }
        ("events.k8s.io", "Event") => {
            for field in [
                "kind",
                "namespace",
                "name",
                "uid",
                "apiVersion",
                "resourceVersion",
                "fieldPath",
            ] {
                put(
                    &format!("regarding.{field}"),
                    str_at(obj, &format!("/regarding/{field}")),
                );
            }
            put("reason", str_at(obj, "/reason"));
            put("reportingController", str_at(obj, "/reportingController"));
            put("type", str_at(obj, "/type"));
        }
        _ => {}
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use serde_json::json;

    fn info(group: &str, plural: &str) -> &'static ResourceInfo {
        find(group, "v1", plural).unwrap()
    }

    #[test]
    fn parses_terms_and_escapes() {
        let s = FieldSelector::parse("spec.nodeName=n1,status.phase!=Running").unwrap();
        assert_eq!(s.requirements().len(), 2);
        assert_eq!(s.requires_exact_match("spec.nodeName"), Some("n1"));
        assert_eq!(s.to_string(), "spec.nodeName=n1,status.phase!=Running");
        let s = FieldSelector::parse("a==b").unwrap();
        assert_eq!(s.requirements()[0].value, "b");
        let s = FieldSelector::parse(r"metadata.name=a\,b\=c\\d").unwrap();
        assert_eq!(s.requirements()[0].value, r"a,b=c\d");
        assert_eq!(s.to_string(), r"metadata.name=a\,b\=c\\d");
        assert!(FieldSelector::parse("").unwrap().is_empty());
        assert!(FieldSelector::parse(",,").unwrap().is_empty());
        assert_eq!(
            FieldSelector::parse("a=").unwrap().requirements()[0].value,
            ""
        );
    }

    #[test]
    fn parse_errors_match_upstream() {
        let e = |s: &str| FieldSelector::parse(s).unwrap_err().to_string();
        assert_eq!(e("foo"), "invalid selector: 'foo'; can't understand 'foo'");
        assert_eq!(
            e("a=b,c"),
            "invalid selector: 'a=b,c'; can't understand 'c'"
        );
        assert_eq!(
            e("a=b=c"),
            "invalid field selector: unescaped character in value: 61"
        );
        assert_eq!(
            e(r"a=b\x"),
            r"invalid field selector: invalid escape sequence: \x"
        );
        assert_eq!(
            e(r"a=b\"),
            r"invalid field selector: invalid escape sequence: \"
        );
    }

    #[test]
    fn matches_field_sets() {
        let pod = json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"nodeName": "n1", "restartPolicy": "Always", "schedulerName": "default-scheduler"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}]}
        });
        let pods = info("", "pods");
        let fields = field_set(pods, &pod).unwrap();
        assert_eq!(fields["spec.hostNetwork"], "false");
        assert_eq!(fields["status.podIP"], "10.0.0.5");
        assert_eq!(fields["metadata.namespace"], "ns");
        let m = |s: &str| {
            FieldSelector::parse(s)
                .unwrap()
                .convert_for(pods)
                .unwrap()
                .matches(&fields)
        };
        assert!(m("spec.nodeName=n1"));
        assert!(m("spec.host=n1"));
        assert!(m("status.phase!=Pending,metadata.name=p"));
        assert!(!m("spec.nodeName="));
        assert!(m("status.nominatedNodeName="));
        assert!(m("status.podIPs="));
        assert!(FieldSelector::everything().matches(&fields));
    }

    #[test]
    fn per_kind_support_and_messages() {
        let pods = info("", "pods");
        let err = FieldSelector::parse("foo=bar")
            .unwrap()
            .validate_for(pods)
            .unwrap_err();
        assert_eq!(err.to_string(), "field label not supported: foo");
        let cms = info("", "configmaps");
        let err = FieldSelector::parse("data.x=1")
            .unwrap()
            .validate_for(cms)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"data.x\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
        assert!(FieldSelector::parse("metadata.namespace=a")
            .unwrap()
            .validate_for(cms)
            .is_ok());
        let jobs = info("batch", "jobs");
        assert!(FieldSelector::parse("status.successful=1")
            .unwrap()
            .validate_for(jobs)
            .is_ok());
        assert_eq!(
            FieldSelector::parse("status.active=1")
                .unwrap()
                .validate_for(jobs)
                .unwrap_err()
                .to_string(),
            "field label \"status.active\" not supported for Job"
        );
        let nodes = info("", "nodes");
        assert!(FieldSelector::parse("spec.unschedulable=false")
            .unwrap()
            .validate_for(nodes)
            .is_ok());
        assert!(FieldSelector::parse("metadata.namespace=x")
            .unwrap()
            .validate_for(nodes)
            .is_err());
        assert!(supported_fields(info("", "secrets")).contains(&"type"));
        assert!(supported_fields(info("", "services")).contains(&"spec.clusterIP"));
        assert!(supported_fields(info("", "namespaces")).contains(&"status.phase"));
        assert!(supported_fields(info("", "replicationcontrollers")).contains(&"status.replicas"));
        assert!(!supported_fields(info("apps", "replicasets")).contains(&"status.replicas"));
        assert!(supported_fields(info("", "events")).contains(&"involvedObject.name"));
        assert!(supported_fields(info("events.k8s.io", "events")).contains(&"regarding.name"));
    }

    #[test]
    fn per_kind_values() {
        let ev = json!({
            "metadata": {"name": "e", "namespace": "ns"},
            "involvedObject": {"kind": "Pod", "name": "p"},
            "reason": "Started", "type": "Normal", "reportingComponent": "kubelet"
        });
        let f = field_set(info("", "events"), &ev).unwrap();
        assert_eq!(f["involvedObject.kind"], "Pod");
        assert_eq!(f["source"], "kubelet");
        let secret = json!({"metadata": {"name": "s"}, "type": "Opaque"});
        assert_eq!(
            field_set(info("", "secrets"), &secret).unwrap()["type"],
            "Opaque"
        );
        let ns = json!({"metadata": {"name": "default"}, "status": {"phase": "Active"}});
        let f = field_set(info("", "namespaces"), &ns).unwrap();
        assert_eq!(f["status.phase"], "Active");
        assert!(!f.contains_key("metadata.namespace"));
        let job = json!({"metadata": {"name": "j"}, "status": {"succeeded": 2}});
        assert_eq!(
            field_set(info("batch", "jobs"), &job).unwrap()["status.successful"],
            "2"
        );
        assert!(field_set(info("", "pods"), &json!([])).is_err());
    }
}
