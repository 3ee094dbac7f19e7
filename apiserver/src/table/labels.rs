//! Labels and label selectors as strings, as apimachinery's `labels.FormatLabels`,
//! `metav1.FormatLabelSelector` and `Selector.String()` print them.

use serde_json::{Map, Value};

/// A label map as `labels.FormatLabels` prints it: sorted `key=value` pairs joined by ",",
/// or "<none>".
pub(super) fn format_labels(labels: Option<&Map<String, Value>>) -> String {
    let mut pairs: Vec<String> = labels
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    if pairs.is_empty() {
        return "<none>".to_string();
    }
    // Upstream sorts the joined pairs, not the keys.
    pairs.sort();
    pairs.join(",")
}

/// A `metav1.LabelSelector` as `metav1.FormatLabelSelector` prints it: "<none>" for a nil or
/// empty selector, "<error>" for an invalid one.
pub(super) fn format_label_selector(selector: Option<&Value>) -> String {
    match selector_string(selector) {
        Ok(s) if s.is_empty() => "<none>".to_string(),
        Ok(s) => s,
        Err(InvalidSelector) => "<error>".to_string(),
    }
}

/// A label selector that `LabelSelectorAsSelector` rejects.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct InvalidSelector;

/// `LabelSelectorAsSelector(selector).String()`: requirements sorted by key and joined by ",";
/// empty for a nil selector (nothing) and for an empty one (everything).
pub(super) fn selector_string(selector: Option<&Value>) -> Result<String, InvalidSelector> {
    let Some(selector) = selector.filter(|s| !s.is_null()) else {
        return Ok(String::new());
    };
    let mut requirements: Vec<(String, String)> = Vec::new();
    if let Some(match_labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (key, value) in match_labels {
            let value = value.as_str().unwrap_or("");
            requirements.push((key.clone(), format!("{key}={value}")));
        }
    }
    let expressions = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    for expr in expressions {
        let key = expr.get("key").and_then(Value::as_str).unwrap_or("");
        let mut values: Vec<&str> = expr
            .get("values")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .map(|v| v.as_str().unwrap_or(""))
            .collect();
        values.sort_unstable();
        let operator = expr.get("operator").and_then(Value::as_str).unwrap_or("");
        let requirement = match operator {
            "In" | "NotIn" if values.is_empty() => return Err(InvalidSelector),
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" | "DoesNotExist" if !values.is_empty() => return Err(InvalidSelector),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return Err(InvalidSelector),
        };
        if key.is_empty() {
            return Err(InvalidSelector);
        }
        requirements.push((key.to_string(), requirement));
    }
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(requirements
        .into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_maps_sort_their_pairs() {
        let labels = json!({"tier": "web", "app": "nginx", "app.kubernetes.io/name": "x"});
        assert_eq!(
            format_labels(labels.as_object()),
            "app.kubernetes.io/name=x,app=nginx,tier=web"
        );
        assert_eq!(format_labels(None), "<none>");
        assert_eq!(format_labels(json!({}).as_object()), "<none>");
    }

    #[test]
    fn selectors_sort_requirements_by_key() {
        let selector = json!({
            "matchLabels": {"app": "nginx"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["web", "api"]},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "Exists"},
            ],
        });
        assert_eq!(
            format_label_selector(Some(&selector)),
            "app=nginx,!canary,env notin (dev),tier in (api,web),zone"
        );
    }

    #[test]
    fn nil_and_empty_selectors() {
        assert_eq!(format_label_selector(None), "<none>");
        assert_eq!(format_label_selector(Some(&json!({}))), "<none>");
        assert_eq!(selector_string(None), Ok(String::new()));
        assert_eq!(
            selector_string(Some(&json!({"matchLabels": {}}))),
            Ok(String::new())
        );
    }

    #[test]
    fn invalid_selectors() {
        let bad = json!({"matchExpressions": [{"key": "a", "operator": "Near"}]});
        assert_eq!(format_label_selector(Some(&bad)), "<error>");
        let empty_in = json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]});
        assert_eq!(selector_string(Some(&empty_in)), Err(InvalidSelector));
    }
}
