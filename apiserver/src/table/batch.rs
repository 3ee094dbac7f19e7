//! Jobs and CronJobs.

use jiff::Timestamp;
use serde_json::Value;

use super::descriptions as d;
use super::duration::{age_of, human_duration};
use super::fields::{
    age, condition_is_true, get, int_at, is_deleting, list_at, name, opt_bool_at, opt_int_at,
    opt_str_at, str_at, time_at,
};
use super::labels::format_label_selector;
use super::{apps::container_cells, Column, CONTAINERS_DESCRIPTION, IMAGES_DESCRIPTION};

pub(super) const JOB_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Status", "string", "Status of the job."),
    Column::new("Completions", "string", d::JOB_STATUS_SUCCEEDED),
    Column::new("Duration", "string", "Time required to complete the job."),
    Column::age(),
    Column::wide("Containers", "string", CONTAINERS_DESCRIPTION),
    Column::wide("Images", "string", IMAGES_DESCRIPTION),
    Column::wide("Selector", "string", d::JOB_SPEC_SELECTOR),
];

pub(super) const CRON_JOB_COLUMNS: &[Column] = &[
    Column::name(),
    Column::new("Schedule", "string", d::CRON_JOB_SPEC_SCHEDULE),
    Column::new("Timezone", "string", d::CRON_JOB_SPEC_TIME_ZONE),
    Column::new("Suspend", "boolean", d::CRON_JOB_SPEC_SUSPEND),
    Column::new("Active", "integer", d::CRON_JOB_STATUS_ACTIVE),
    Column::new(
        "Last Schedule",
        "string",
        d::CRON_JOB_STATUS_LAST_SCHEDULE_TIME,
    ),
    Column::age(),
    Column::wide("Containers", "string", CONTAINERS_DESCRIPTION),
    Column::wide("Images", "string", IMAGES_DESCRIPTION),
    Column::wide("Selector", "string", d::JOB_SPEC_SELECTOR),
];

pub(super) fn job_cells(job: &Value, now: Timestamp) -> Vec<Value> {
    let succeeded = int_at(job, &["status", "succeeded"]);
    let completions = match opt_int_at(job, &["spec", "completions"]) {
        Some(completions) => format!("{succeeded}/{completions}"),
        None => match opt_int_at(job, &["spec", "parallelism"]).unwrap_or(0) {
            parallelism if parallelism > 1 => format!("{succeeded}/1 of {parallelism}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (
        time_at(job, &["status", "startTime"]),
        time_at(job, &["status", "completionTime"]),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => age_of(Some(start), now),
        (Some(start), Some(end)) => human_duration(end.duration_since(start)),
    };
    let conditions = ["status", "conditions"];
    let status = if condition_is_true(job, &conditions, "Complete") {
        "Complete"
    } else if condition_is_true(job, &conditions, "Failed") {
        "Failed"
    } else if is_deleting(job) {
        "Terminating"
    } else if condition_is_true(job, &conditions, "Suspended") {
        "Suspended"
    } else if condition_is_true(job, &conditions, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (containers, images) = container_cells(get(job, &["spec", "template"]));
    vec![
        Value::from(name(job)),
        Value::from(status),
        Value::from(completions),
        Value::from(duration),
        Value::from(age(job, now)),
        containers,
        images,
        Value::from(format_label_selector(get(job, &["spec", "selector"]))),
    ]
}

pub(super) fn cron_job_cells(cron_job: &Value, now: Timestamp) -> Vec<Value> {
    let last_schedule = match time_at(cron_job, &["status", "lastScheduleTime"]) {
        Some(t) => age_of(Some(t), now),
        None => "<none>".to_string(),
    };
    // Upstream prints "<unset>" for a nil `suspend`, but v1 defaulting never leaves it nil.
    let suspend = match opt_bool_at(cron_job, &["spec", "suspend"]) {
        Some(true) => "True",
        Some(false) | None => "False",
    };
    let job_spec = get(cron_job, &["spec", "jobTemplate", "spec"]);
    let (containers, images) = container_cells(job_spec.and_then(|s| s.get("template")));
    vec![
        Value::from(name(cron_job)),
        Value::from(str_at(cron_job, &["spec", "schedule"])),
        Value::from(opt_str_at(cron_job, &["spec", "timeZone"]).unwrap_or("<none>")),
        Value::from(suspend),
        Value::from(list_at(cron_job, &["status", "active"]).len()),
        Value::from(last_schedule),
        Value::from(age(cron_job, now)),
        containers,
        images,
        Value::from(format_label_selector(
            job_spec.and_then(|s| s.get("selector")),
        )),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::tests::{info, now};
    use super::super::{column_definitions, row_cells};
    use serde_json::{json, Value};

    fn job(spec: Value, status: Value) -> Value {
        json!({
            "metadata": {"name": "pi", "creationTimestamp": "2024-05-01T11:50:00Z"},
            "spec": spec,
            "status": status,
        })
    }

    fn cells(job: &Value) -> Vec<Value> {
        row_cells(info("batch", "jobs"), job, now())
    }

    #[test]
    fn job_columns_are_upstreams() {
        let names: Vec<_> = column_definitions(info("batch", "jobs"))
            .iter()
            .map(|c| c["name"].clone())
            .collect();
        assert_eq!(
            names,
            [
                "Name",
                "Status",
                "Completions",
                "Duration",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
    }

    #[test]
    fn completed_job() {
        let job = job(
            json!({"completions": 1, "parallelism": 1,
                   "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "1234"}},
                   "template": {"spec": {"containers": [{"name": "pi", "image": "perl:5.34"}]}}}),
            json!({"succeeded": 1, "startTime": "2024-05-01T11:50:00Z",
                   "completionTime": "2024-05-01T11:50:42Z",
                   "conditions": [{"type": "SuccessCriteriaMet", "status": "True"},
                                  {"type": "Complete", "status": "True"}]}),
        );
        assert_eq!(
            cells(&job),
            [
                "pi",
                "Complete",
                "1/1",
                "42s",
                "10m",
                "pi",
                "perl:5.34",
                "batch.kubernetes.io/controller-uid=1234"
            ]
        );
    }

    #[test]
    fn running_jobs_and_completion_modes() {
        let running = job(
            json!({"completions": 5, "parallelism": 2}),
            json!({"succeeded": 2, "active": 2, "startTime": "2024-05-01T11:56:30Z"}),
        );
        assert_eq!(cells(&running)[1..4], ["Running", "2/5", "3m30s"]);

        let work_queue = job(json!({"parallelism": 3}), json!({}));
        assert_eq!(cells(&work_queue)[1..4], ["Running", "0/1 of 3", ""]);

        let single = job(json!({}), json!({}));
        assert_eq!(cells(&single)[2], "0/1");
    }

    #[test]
    fn job_status_precedence() {
        let status_of = |conditions: Value, deleting: bool| {
            let mut j = job(json!({"completions": 1}), json!({"conditions": conditions}));
            if deleting {
                j["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:00Z");
            }
            cells(&j)[1].clone()
        };
        let failed = json!([{"type": "FailureTarget", "status": "True"},
                            {"type": "Failed", "status": "True"}]);
        assert_eq!(status_of(failed.clone(), true), "Failed");
        assert_eq!(status_of(json!([]), true), "Terminating");
        assert_eq!(
            status_of(json!([{"type": "Suspended", "status": "True"}]), false),
            "Suspended"
        );
        assert_eq!(
            status_of(json!([{"type": "FailureTarget", "status": "True"}]), false),
            "FailureTarget"
        );
        assert_eq!(
            status_of(json!([{"type": "Complete", "status": "False"}]), false),
            "Running"
        );
    }

    #[test]
    fn cron_job() {
        let names: Vec<_> = column_definitions(info("batch", "cronjobs"))
            .iter()
            .map(|c| c["name"].clone())
            .collect();
        assert_eq!(
            names,
            [
                "Name",
                "Schedule",
                "Timezone",
                "Suspend",
                "Active",
                "Last Schedule",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let cron_job = json!({
            "metadata": {"name": "backup", "creationTimestamp": "2024-04-28T12:00:00Z"},
            "spec": {
                "schedule": "*/5 * * * *", "suspend": false,
                "jobTemplate": {"spec": {"template": {"spec": {"containers": [
                    {"name": "backup", "image": "busybox:1.36"}]}}}},
            },
            "status": {"active": [{"kind": "Job", "name": "backup-28577280"}],
                       "lastScheduleTime": "2024-05-01T11:55:00Z"},
        });
        assert_eq!(
            row_cells(info("batch", "cronjobs"), &cron_job, now()),
            [
                json!("backup"),
                json!("*/5 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(1),
                json!("5m"),
                json!("3d"),
                json!("backup"),
                json!("busybox:1.36"),
                json!("<none>"),
            ]
        );
        let never_ran = json!({"metadata": {"name": "n"},
            "spec": {"schedule": "@daily", "timeZone": "Europe/Paris", "suspend": true}});
        assert_eq!(
            row_cells(info("batch", "cronjobs"), &never_ran, now())[2..6],
            [
                json!("Europe/Paris"),
                json!("True"),
                json!(0),
                json!("<none>")
            ]
        );
    }
}
