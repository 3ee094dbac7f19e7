//! The label and field selectors of a list or watch, applied to stored objects.

use crate::request::Query;
use crate::status::{ApiError, ApiResult};
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
            .map(FieldSelector::parse)
            .transpose()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if let Some(f) = &fields {
            f.validate_for(info)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
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
