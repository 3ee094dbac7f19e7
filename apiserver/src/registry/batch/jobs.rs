//! Jobs: unless `spec.manualSelector` is true, a created Job selects its own pods by a
//! generated `batch.kubernetes.io/controller-uid` label, and its template carries that and
//! the job-name labels (upstream's `generateSelector`).

use api_types::resources::ResourceInfo;
use serde_json::{json, Map, Value};

use super::super::{object, Strategy};

pub struct JobStrategy;

impl Strategy for JobStrategy {
    fn prepare_for_create(&self, info: &ResourceInfo, obj: &mut Value) {
        super::super::Generic.prepare_for_create(info, obj);
        let manual = obj.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true);
        if !manual {
            generate_selector(obj);
        }
    }
}

fn generate_selector(obj: &mut Value) {
    let name = object::meta_str(obj, "name").unwrap_or("").to_string();
    let uid = object::meta_str(obj, "uid").unwrap_or("").to_string();
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let template = spec.entry("template").or_insert_with(|| json!({}));
    if let Some(template) = template.as_object_mut() {
        let meta = template.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if !labels.is_object() {
                *labels = json!({});
            }
            let labels = labels.as_object_mut().expect("object");
            for key in ["job-name", "batch.kubernetes.io/job-name"] {
                labels.entry(key).or_insert_with(|| json!(name));
            }
            for key in ["controller-uid", "batch.kubernetes.io/controller-uid"] {
                labels.entry(key).or_insert_with(|| json!(uid));
            }
        }
    }
    let selector = spec.entry("selector").or_insert_with(|| json!({}));
    if !selector.is_object() {
        *selector = json!({});
    }
    let selector = selector.as_object_mut().expect("object");
    let match_labels = selector
        .entry("matchLabels")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(m) = match_labels.as_object_mut() {
        m.entry("batch.kubernetes.io/controller-uid")
            .or_insert_with(|| json!(uid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_job_selects_its_pods_by_its_uid() {
        let mut job = json!({"metadata": {"name": "once", "uid": "u-1"},
            "spec": {"template": {"spec": {"containers": []}}}});
        generate_selector(&mut job);
        assert_eq!(
            job["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
        );
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"],
            json!({"job-name": "once", "batch.kubernetes.io/job-name": "once",
                   "controller-uid": "u-1", "batch.kubernetes.io/controller-uid": "u-1"})
        );
    }
}
