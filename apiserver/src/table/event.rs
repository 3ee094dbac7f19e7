//! Events (core/v1 and events.k8s.io/v1): LAST SEEN, TYPE, REASON, OBJECT, MESSAGE, and wide
//! SUBOBJECT, SOURCE, FIRST SEEN, COUNT, NAME.

use jiff::Timestamp;
use serde_json::Value;

use super::descriptions as d;
use super::fields::{get, int_at, is_set, name, opt_int_at, str_at, time_at};
use super::Column;

pub(super) const COLUMNS: &[Column] = &[
    Column::new("Last Seen", "string", d::EVENT_LAST_TIMESTAMP),
    Column::new("Type", "string", d::EVENT_TYPE),
    Column::new("Reason", "string", d::EVENT_REASON),
    Column::new("Object", "string", d::EVENT_INVOLVED_OBJECT),
    Column::wide("Subobject", "string", d::OBJECT_REFERENCE_FIELD_PATH),
    Column::wide("Source", "string", d::EVENT_SOURCE),
    Column::new("Message", "string", d::EVENT_MESSAGE),
    Column::wide("First Seen", "string", d::EVENT_FIRST_TIMESTAMP),
    Column::wide("Count", "string", d::EVENT_COUNT),
    Column {
        name: "Name",
        ty: "string",
        format: "name",
        description: d::OBJECT_META_NAME,
        priority: 1,
    },
];

/// The fields of an event the table shows, named as in upstream's internal Event type.
struct EventFields<'a> {
    name: &'a str,
    ty: &'a str,
    reason: &'a str,
    message: &'a str,
    involved_object: Option<&'a Value>,
    source_component: &'a str,
    source_host: &'a str,
    reporting_controller: &'a str,
    reporting_instance: &'a str,
    first_timestamp: Option<Timestamp>,
    last_timestamp: Option<Timestamp>,
    event_time: Option<Timestamp>,
    count: i64,
    /// `series.count` and `series.lastObservedTime`, for events that repeated.
    series: Option<(i64, Option<Timestamp>)>,
}

/// A core/v1 Event.
pub(super) fn core_cells(event: &Value, now: Timestamp) -> Vec<Value> {
    cells(
        &EventFields {
            name: name(event),
            ty: str_at(event, &["type"]),
            reason: str_at(event, &["reason"]),
            message: str_at(event, &["message"]),
            involved_object: get(event, &["involvedObject"]),
            source_component: str_at(event, &["source", "component"]),
            source_host: str_at(event, &["source", "host"]),
            reporting_controller: str_at(event, &["reportingComponent"]),
            reporting_instance: str_at(event, &["reportingInstance"]),
            first_timestamp: time_at(event, &["firstTimestamp"]),
            last_timestamp: time_at(event, &["lastTimestamp"]),
            event_time: time_at(event, &["eventTime"]),
            count: int_at(event, &["count"]),
            series: series(event),
        },
        now,
    )
}

/// An events.k8s.io/v1 Event: the same table, read from the renamed fields (upstream
/// converts it to the core Event before printing).
pub(super) fn events_v1_cells(event: &Value, now: Timestamp) -> Vec<Value> {
    cells(
        &EventFields {
            name: name(event),
            ty: str_at(event, &["type"]),
            reason: str_at(event, &["reason"]),
            message: str_at(event, &["note"]),
            involved_object: get(event, &["regarding"]),
            source_component: str_at(event, &["deprecatedSource", "component"]),
            source_host: str_at(event, &["deprecatedSource", "host"]),
            reporting_controller: str_at(event, &["reportingController"]),
            reporting_instance: str_at(event, &["reportingInstance"]),
            first_timestamp: time_at(event, &["deprecatedFirstTimestamp"]),
            last_timestamp: time_at(event, &["deprecatedLastTimestamp"]),
            event_time: time_at(event, &["eventTime"]),
            count: int_at(event, &["deprecatedCount"]),
            series: series(event),
        },
        now,
    )
}

fn series(event: &Value) -> Option<(i64, Option<Timestamp>)> {
    is_set(event, &["series"]).then(|| {
        (
            opt_int_at(event, &["series", "count"]).unwrap_or(0),
            time_at(event, &["series", "lastObservedTime"]),
        )
    })
}

fn cells(e: &EventFields<'_>, now: Timestamp) -> Vec<Value> {
    let age = |t| super::duration::age_of(t, now);
    let first_seen = match e.first_timestamp {
        Some(t) => age(Some(t)),
        None => age(e.event_time),
    };
    let mut last_seen = match e.last_timestamp {
        Some(t) => age(Some(t)),
        None => first_seen.clone(),
    };
    let count = match e.series {
        Some((count, last_observed)) => {
            last_seen = age(last_observed);
            count
        }
        // Singleton events of the new API have no count.
        None if e.count == 0 => 1,
        None => e.count,
    };
    let kind = e
        .involved_object
        .map_or("", |o| str_at(o, &["kind"]))
        .to_lowercase();
    let object_name = e.involved_object.map_or("", |o| str_at(o, &["name"]));
    let target = if object_name.is_empty() {
        kind
    } else {
        format!("{kind}/{object_name}")
    };
    vec![
        Value::from(last_seen),
        Value::from(e.ty),
        Value::from(e.reason),
        Value::from(target),
        Value::from(e.involved_object.map_or("", |o| str_at(o, &["fieldPath"]))),
        Value::from(source(e)),
        Value::from(e.message.trim()),
        Value::from(first_seen),
        Value::from(count),
        Value::from(e.name),
    ]
}

/// "component, host", falling back to the reporting controller and instance.
fn source(e: &EventFields<'_>) -> String {
    let component = if e.source_component.is_empty() {
        e.reporting_controller
    } else {
        e.source_component
    };
    let instance = if e.source_host.is_empty() {
        e.reporting_instance
    } else {
        e.source_host
    };
    if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{info, now};
    use super::super::{column_definitions, row_cells};
    use serde_json::json;

    #[test]
    fn columns_are_upstreams() {
        let columns = column_definitions(info("", "events"));
        let names: Vec<_> = columns.iter().map(|c| c["name"].clone()).collect();
        assert_eq!(
            names,
            [
                "Last Seen",
                "Type",
                "Reason",
                "Object",
                "Subobject",
                "Source",
                "Message",
                "First Seen",
                "Count",
                "Name"
            ]
        );
        let priorities: Vec<_> = columns.iter().map(|c| c["priority"].clone()).collect();
        assert_eq!(priorities, [0, 0, 0, 0, 1, 1, 0, 1, 1, 1]);
        assert_eq!(columns[9]["format"], "name");
        assert_eq!(columns, column_definitions(info("events.k8s.io", "events")));
    }

    #[test]
    fn kubelet_event() {
        let event = json!({
            "metadata": {"name": "nginx.17c9a2b3c4d5e6f7", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "nginx", "namespace": "default",
                               "fieldPath": "spec.containers{nginx}"},
            "reason": "Pulled", "type": "Normal",
            "message": "Successfully pulled image \"nginx:1.25\"\n",
            "source": {"component": "kubelet", "host": "pi-1"},
            "firstTimestamp": "2024-05-01T11:50:00Z", "lastTimestamp": "2024-05-01T11:58:00Z",
            "count": 3,
        });
        assert_eq!(
            row_cells(info("", "events"), &event, now()),
            [
                json!("2m"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/nginx"),
                json!("spec.containers{nginx}"),
                json!("kubelet, pi-1"),
                json!("Successfully pulled image \"nginx:1.25\""),
                json!("10m"),
                json!(3),
                json!("nginx.17c9a2b3c4d5e6f7"),
            ]
        );
    }

    #[test]
    fn new_style_event_in_core_v1() {
        let event = json!({
            "metadata": {"name": "web.1"},
            "involvedObject": {"kind": "Deployment", "name": "web"},
            "reason": "ScalingReplicaSet", "type": "Normal", "message": "Scaled up",
            "eventTime": "2024-05-01T11:59:00.000000Z",
            "reportingComponent": "deployment-controller",
        });
        let cells = row_cells(info("", "events"), &event, now());
        assert_eq!(cells[0], "60s");
        assert_eq!(cells[3], "deployment/web");
        assert_eq!(cells[5], "deployment-controller");
        assert_eq!(cells[7], "60s");
        assert_eq!(cells[8], 1);
    }

    #[test]
    fn events_v1_with_series() {
        let event = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "node.1"},
            "regarding": {"kind": "Node", "name": "pi-2"},
            "reason": "NodeNotReady", "type": "Warning", "note": "  Node is not ready ",
            "eventTime": "2024-05-01T10:00:00.000000Z",
            "series": {"count": 7, "lastObservedTime": "2024-05-01T11:59:30.000000Z"},
            "reportingController": "node-controller", "reportingInstance": "cp-1",
        });
        assert_eq!(
            row_cells(info("events.k8s.io", "events"), &event, now()),
            [
                json!("30s"),
                json!("Warning"),
                json!("NodeNotReady"),
                json!("node/pi-2"),
                json!(""),
                json!("node-controller, cp-1"),
                json!("Node is not ready"),
                json!("120m"),
                json!(7),
                json!("node.1"),
            ]
        );
    }

    #[test]
    fn event_without_times_or_name() {
        let event = json!({"metadata": {"name": "x"}, "involvedObject": {"kind": "Namespace"}});
        let cells = row_cells(info("", "events"), &event, now());
        assert_eq!(cells[0], "<unknown>");
        assert_eq!(cells[3], "namespace");
        assert_eq!(cells[7], "<unknown>");
    }
}
