//! The label and field selectors of a list or watch, applied to stored objects.

use crate::request::Query;
use crate::status::{ApiError, ApiResult};
use crate::watch_cache::Cached;
use api_types::resources::ResourceInfo;
use api_types::selector::{FieldSelector, LabelSelector};
use serde_json::Value;

/// Which objects a list or watch returns.
pub struct Filter {
    info: &'static ResourceInfo,
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
}

impl Filter {
    pub fn from_query(info: &'static ResourceInfo, q: &Query) -> ApiResult<Filter> {
        let labels = q
            .label_selector
            .as_deref()
            .map(LabelSelector::parse)
            .transpose()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = q
            .field_selector
            .as_deref()
            .map(|s| FieldSelector::parse(s)?.convert_for(info))
            .transpose()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(Filter {
            info,
            labels,
            fields,
        })
    }

    /// True when the filter passes everything.
    pub fn is_everything(&self) -> bool {
        self.labels.as_ref().is_none_or(LabelSelector::is_empty)
            && self.fields.as_ref().is_none_or(FieldSelector::is_empty)
    }

    /// [`Filter::matches`] on a cached object, from the labels and fields it keeps.
    pub fn matches_cached(&self, obj: &Cached) -> bool {
        if let Some(ls) = &self.labels {
            if !ls.matches_lookup(|k| obj.label(k)) {
                return false;
            }
        }
        if let Some(fs) = &self.fields {
            if !obj.has_fields() || !fs.matches_lookup(|f| obj.field(f)) {
                return false;
            }
        }
        true
    }

    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(ls) = &self.labels {
            if !ls.matches_object(obj) {
                return false;
            }
        }
        if let Some(fs) = &self.fields {
            match api_types::selector::field_set(self.info, obj) {
                Ok(set) => {
                    if !fs.matches(&set) {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cached_objects_are_selected_as_decoded_ones() {
        let info = api_types::resources::find("", "v1", "pods").unwrap();
        let pods = [
            json!({"metadata": {"name": "a", "namespace": "d", "labels": {"app": "web", "v": "2"}},
                   "spec": {"nodeName": "pi-1"}, "status": {"phase": "Running"}}),
            json!({"metadata": {"name": "b", "namespace": "d", "labels": {"app": "db"}},
                   "spec": {"nodeName": "pi-2"}, "status": {"phase": "Pending"}}),
            json!({"metadata": {"name": "c", "namespace": "e"}, "spec": {}}),
            json!(["not", "an", "object"]),
        ];
        let selectors = [
            (None, None),
            (Some("app=web"), None),
            (Some("app!=web"), None),
            (Some("app in (web,db),!v"), None),
            (Some("v>1"), None),
            (None, Some("spec.nodeName=pi-2")),
            (None, Some("spec.host=pi-1")),
            (None, Some("spec.nodeName=,metadata.namespace=e")),
            (None, Some("status.phase!=Running")),
            (Some("app"), Some("metadata.name=a")),
        ];
        for (labels, fields) in selectors {
            let q = Query {
                label_selector: labels.map(String::from),
                field_selector: fields.map(String::from),
                ..Query::default()
            };
            let filter = Filter::from_query(info, &q).unwrap();
            let picked = |cached: bool| -> Vec<usize> {
                (0..pods.len())
                    .filter(|i| match cached {
                        true => filter.matches_cached(&Cached::new(info, &pods[*i])),
                        false => filter.matches(&pods[*i]),
                    })
                    .collect()
            };
            assert_eq!(picked(true), picked(false), "{labels:?} {fields:?}");
        }
        // And they do select: a spot check of each kind.
        let pick = |l: Option<&str>, f: Option<&str>| {
            let q = Query {
                label_selector: l.map(String::from),
                field_selector: f.map(String::from),
                ..Query::default()
            };
            let filter = Filter::from_query(info, &q).unwrap();
            pods.iter()
                .filter(|p| filter.matches_cached(&Cached::new(info, p)))
                .filter_map(|p| p.pointer("/metadata/name").and_then(Value::as_str))
                .collect::<Vec<_>>()
        };
        assert_eq!(pick(Some("app=web"), None), ["a"]);
        assert_eq!(pick(None, Some("spec.host=pi-1")), ["a"]);
        assert_eq!(pick(None, Some("status.phase!=Running")), ["b", "c"]);
    }
}
