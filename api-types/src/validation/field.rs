//! Field errors as upstream's `field.Error`: a path, a reason, and the body upstream prints.

use std::fmt;

use serde_json::Value;

/// A field path such as `spec.containers[0].image`, built like upstream's `field.Path`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Path(String);

impl Path {
    /// The empty path (the whole object).
    pub fn root() -> Path {
        Path(String::new())
    }

    /// A path starting at a top-level field.
    pub fn new(name: &str) -> Path {
        Path(name.to_string())
    }

    /// `self.name`
    pub fn child(&self, name: &str) -> Path {
        if self.0.is_empty() {
            Path(name.to_string())
        } else {
            Path(format!("{}.{name}", self.0))
        }
    }

    /// `self[index]`
    pub fn index(&self, index: usize) -> Path {
        Path(format!("{}[{index}]", self.0))
    }

    /// `self[key]`
    pub fn key(&self, key: &str) -> Path {
        Path(format!("{}[{key}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Upstream's `field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldErrorType {
    NotFound,
    Required,
    Duplicate,
    Invalid,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
    Internal,
    TypeInvalid,
}

impl FieldErrorType {
    /// The `StatusCause.reason` string, e.g. `FieldValueRequired`.
    pub fn reason(&self) -> &'static str {
        match self {
            FieldErrorType::NotFound => "FieldValueNotFound",
            FieldErrorType::Required => "FieldValueRequired",
            FieldErrorType::Duplicate => "FieldValueDuplicate",
            FieldErrorType::Invalid => "FieldValueInvalid",
            FieldErrorType::NotSupported => "FieldValueNotSupported",
            FieldErrorType::Forbidden => "FieldValueForbidden",
            FieldErrorType::TooLong => "FieldValueTooLong",
            FieldErrorType::TooMany => "FieldValueTooMany",
            FieldErrorType::Internal => "InternalError",
            FieldErrorType::TypeInvalid => "FieldValueTypeInvalid",
        }
    }

    /// The human words upstream prints, e.g. `Required value`.
    pub fn words(&self) -> &'static str {
        match self {
            FieldErrorType::NotFound => "Not found",
            FieldErrorType::Required => "Required value",
            FieldErrorType::Duplicate => "Duplicate value",
            FieldErrorType::Invalid => "Invalid value",
            FieldErrorType::NotSupported => "Unsupported value",
            FieldErrorType::Forbidden => "Forbidden",
            FieldErrorType::TooLong => "Too long",
            FieldErrorType::TooMany => "Too many",
            FieldErrorType::Internal => "Internal error",
            FieldErrorType::TypeInvalid => "Invalid value",
        }
    }
}

impl fmt::Display for FieldErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.words())
    }
}

/// One validation failure.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// The field path, e.g. `spec.containers[0].image`; empty for the whole object.
    pub field: String,
    pub error_type: FieldErrorType,
    /// The body upstream prints after the path (its `ErrorBody()`), e.g. `Required value` or
    /// `Invalid value: "Foo_bar": a lowercase RFC 1123 subdomain must ...`. This is what a
    /// `StatusCause.message` carries.
    pub message: String,
    pub bad_value: Option<Value>,
}

impl FieldError {
    /// Appends a detail to the body, as upstream code does by setting `Detail` on an
    /// error built without one.
    pub fn with_detail(mut self, detail: &str) -> FieldError {
        self.message = with_detail(self.message, detail);
        self
    }

    /// The `StatusCause.reason` string of this error.
    pub fn reason(&self) -> &'static str {
        self.error_type.reason()
    }
}

impl fmt::Display for FieldError {
    /// `field: body`, as upstream's `field.Error.Error()`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

fn with_detail(mut body: String, detail: &str) -> String {
    if !detail.is_empty() {
        body.push_str(": ");
        body.push_str(detail);
    }
    body
}

fn valued(path: &Path, error_type: FieldErrorType, value: Value, detail: &str) -> FieldError {
    let body = format!("{}: {}", error_type.words(), render_value(&value));
    FieldError {
        field: path.to_string(),
        error_type,
        message: with_detail(body, detail),
        bad_value: Some(value),
    }
}

fn unvalued(path: &Path, error_type: FieldErrorType, detail: &str) -> FieldError {
    FieldError {
        field: path.to_string(),
        error_type,
        message: with_detail(error_type.words().to_string(), detail),
        bad_value: None,
    }
}

/// `Required value[: detail]`
pub fn required(path: &Path, detail: &str) -> FieldError {
    unvalued(path, FieldErrorType::Required, detail)
}

/// `Invalid value: <value>: detail`
pub fn invalid(path: &Path, value: impl Into<Value>, detail: &str) -> FieldError {
    valued(path, FieldErrorType::Invalid, value.into(), detail)
}

/// `Invalid value: <display>: detail`, for values whose Go rendering (`%#v` of a struct)
/// cannot be derived from their JSON.
pub fn invalid_displayed(path: &Path, value: Value, display: &str, detail: &str) -> FieldError {
    let body = format!("{}: {display}", FieldErrorType::Invalid.words());
    FieldError {
        field: path.to_string(),
        error_type: FieldErrorType::Invalid,
        message: with_detail(body, detail),
        bad_value: Some(value),
    }
}

/// `Unsupported value: <value>: supported values: "a", "b"`
pub fn not_supported(path: &Path, value: impl Into<Value>, valid: &[&str]) -> FieldError {
    let detail = if valid.is_empty() {
        String::new()
    } else {
        let quoted: Vec<String> = valid.iter().map(|v| go_quote(v)).collect();
        format!("supported values: {}", quoted.join(", "))
    };
    valued(path, FieldErrorType::NotSupported, value.into(), &detail)
}

/// `Duplicate value: <value>`
pub fn duplicate(path: &Path, value: impl Into<Value>) -> FieldError {
    valued(path, FieldErrorType::Duplicate, value.into(), "")
}

/// `Not found: <value>`
pub fn not_found(path: &Path, value: impl Into<Value>) -> FieldError {
    valued(path, FieldErrorType::NotFound, value.into(), "")
}

/// `Forbidden: detail`
pub fn forbidden(path: &Path, detail: &str) -> FieldError {
    unvalued(path, FieldErrorType::Forbidden, detail)
}

/// `Too long: may not be more than N bytes`
pub fn too_long(path: &Path, max: usize) -> FieldError {
    let unit = if max == 1 { "byte" } else { "bytes" };
    unvalued(
        path,
        FieldErrorType::TooLong,
        &format!("may not be more than {max} {unit}"),
    )
}

/// `Too many: <actual>: must have at most N items`
pub fn too_many(path: &Path, actual: usize, max: usize) -> FieldError {
    valued(
        path,
        FieldErrorType::TooMany,
        Value::from(actual),
        &format!("must have at most {max} items"),
    )
}

/// `Internal error: detail`
pub fn internal(path: &Path, detail: &str) -> FieldError {
    unvalued(path, FieldErrorType::Internal, detail)
}

/// Upstream's `ValidateImmutableField` failure.
pub fn immutable(path: &Path, new_value: impl Into<Value>) -> FieldError {
    invalid(path, new_value, FIELD_IMMUTABLE)
}

/// Upstream's `FieldImmutableErrorMsg`.
pub const FIELD_IMMUTABLE: &str = "field is immutable";

/// Quotes a string the way Go's `%q` does.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Renders a bad value the way upstream's error body does: strings quoted, numbers and
/// booleans bare, `null`, string maps as `map[string]string{"k":"v"}`, string lists as
/// `[]string{"a", "b"}`, anything else as compact JSON.
pub fn render_value(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::String(s) => go_quote(s),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Object(map) if map.values().all(Value::is_string) => {
            let mut entries: Vec<(&String, &str)> = map
                .iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or_default()))
                .collect();
            entries.sort();
            let inner: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v)))
                .collect();
            format!("map[string]string{{{}}}", inner.join(", "))
        }
        Value::Array(items) if items.iter().all(Value::is_string) => {
            let inner: Vec<String> = items
                .iter()
                .map(|v| go_quote(v.as_str().unwrap_or_default()))
                .collect();
            format!("[]string{{{}}}", inner.join(", "))
        }
        other => other.to_string(),
    }
}

/// Joins errors the way upstream's aggregate does: one error alone, several as
/// `[a, b]`, duplicates dropped.
pub fn aggregate_message(errors: &[FieldError]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for e in errors {
        let msg = e.to_string();
        if !seen.contains(&msg) {
            seen.push(msg);
        }
    }
    match seen.len() {
        0 => String::new(),
        1 => seen.remove(0),
        _ => format!("[{}]", seen.join(", ")),
    }
}

/// The message of upstream's `NewInvalid` status: `Deployment.apps "web" is invalid: [...]`.
pub fn invalid_status_message(
    group: &str,
    kind: &str,
    name: &str,
    errors: &[FieldError],
) -> String {
    let qualified = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let agg = aggregate_message(errors);
    if agg.is_empty() {
        format!("{qualified} {} is invalid", go_quote(name))
    } else {
        format!("{qualified} {} is invalid: {agg}", go_quote(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_build_like_upstream() {
        let p = Path::new("spec")
            .child("containers")
            .index(0)
            .child("image");
        assert_eq!(p.as_str(), "spec.containers[0].image");
        assert_eq!(Path::new("data").key("a.b").as_str(), "data[a.b]");
        assert_eq!(Path::root().child("x").as_str(), "x");
    }

    #[test]
    fn bodies_and_display_match_upstream() {
        let p = Path::new("spec")
            .child("containers")
            .index(0)
            .child("image");
        let e = required(&p, "");
        assert_eq!(e.to_string(), "spec.containers[0].image: Required value");
        assert_eq!(e.error_type.reason(), "FieldValueRequired");

        let e = invalid(&Path::new("metadata").child("name"), "Foo_bar", "bad name");
        assert_eq!(
            e.to_string(),
            "metadata.name: Invalid value: \"Foo_bar\": bad name"
        );
        assert_eq!(e.bad_value, Some(json!("Foo_bar")));

        let e = invalid(
            &Path::new("spec").child("replicas"),
            -1,
            "must be greater than or equal to 0",
        );
        assert_eq!(
            e.message,
            "Invalid value: -1: must be greater than or equal to 0"
        );

        let e = not_supported(
            &Path::new("spec").child("restartPolicy"),
            "Sometimes",
            &["Always", "OnFailure", "Never"],
        );
        assert_eq!(
            e.message,
            "Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
        );
        assert_eq!(e.error_type.reason(), "FieldValueNotSupported");

        assert_eq!(
            duplicate(&Path::new("x"), "a").message,
            "Duplicate value: \"a\""
        );
        assert_eq!(
            forbidden(&Path::new("x"), "nope").message,
            "Forbidden: nope"
        );
        assert_eq!(
            too_long(&Path::root(), 1048576).to_string(),
            ": Too long: may not be more than 1048576 bytes"
        );
        assert_eq!(
            too_many(&Path::new("x"), 5, 4).message,
            "Too many: 5: must have at most 4 items"
        );
        assert_eq!(
            invalid(&Path::new("l"), json!({"b": "2", "a": "1"}), "d").message,
            "Invalid value: map[string]string{\"a\":\"1\", \"b\":\"2\"}: d"
        );
    }

    #[test]
    fn quoting_matches_go() {
        assert_eq!(go_quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        assert_eq!(go_quote("\u{1}"), "\"\\x01\"");
        assert_eq!(go_quote("héllo"), "\"héllo\"");
    }

    #[test]
    fn aggregates_like_upstream() {
        let a = required(&Path::new("a"), "");
        let b = required(&Path::new("b"), "");
        assert_eq!(
            aggregate_message(std::slice::from_ref(&a)),
            "a: Required value"
        );
        assert_eq!(
            aggregate_message(&[a.clone(), b, a]),
            "[a: Required value, b: Required value]"
        );
        assert_eq!(
            invalid_status_message(
                "apps",
                "Deployment",
                "web",
                &[required(&Path::new("spec.selector"), "")]
            ),
            "Deployment.apps \"web\" is invalid: spec.selector: Required value"
        );
    }
}
