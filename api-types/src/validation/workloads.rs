//! Controller validation: Deployment, ReplicaSet, StatefulSet, DaemonSet,
//! ReplicationController, Job, CronJob and ControllerRevision.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec, ReplicaSet,
    ReplicaSetSpec, StatefulSet, StatefulSetSpec,
};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as MetaSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::cron::parse_schedule;
use super::field::{forbidden, invalid, not_supported, required, FieldError, Path};
use super::meta::{
    immutable_field, invalid_selector, label_selector, labels, nonnegative, to_json,
};
use super::names::is_valid_percent;
use super::pod::pod_template_spec;
use crate::selector::LabelSelector;

const SELECTOR_MISMATCH: &str = "`selector` does not match template `labels`";

fn template_labels(t: &PodTemplateSpec) -> BTreeMap<String, String> {
    t.metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

fn template_spec(t: &PodTemplateSpec) -> PodSpec {
    t.spec.clone().unwrap_or_default()
}

/// Whether the raw object carries a (non-null) value at `pointer`.
fn present(raw: &Value, pointer: &str) -> bool {
    raw.pointer(pointer).is_some_and(|v| !v.is_null())
}

fn is_empty_selector(s: &MetaSelector) -> bool {
    s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

/// Selector checks shared by the apps kinds: required, valid, non-empty. Returns the
/// parsed selector (`Nothing` when absent) or `None` when it does not convert.
fn apps_selector(
    selector: Option<&MetaSelector>,
    kind: &str,
    path: &Path,
    errs: &mut Vec<FieldError>,
) -> Option<LabelSelector> {
    match selector {
        None => errs.push(required(path, "")),
        Some(s) => {
            errs.extend(label_selector(s, path));
            if is_empty_selector(s) {
                errs.push(invalid_selector(
                    path,
                    s,
                    &format!("empty selector is invalid for {kind}"),
                ));
            }
        }
    }
    match LabelSelector::from_meta_opt(selector) {
        Ok(s) => Some(s),
        Err(_) => {
            match selector {
                Some(s) => errs.push(invalid_selector(path, s, "invalid label selector")),
                None => errs.push(invalid(path, Value::Null, "invalid label selector")),
            }
            None
        }
    }
}

fn selector_matches_template(
    selector: &LabelSelector,
    template: &PodTemplateSpec,
    path: &Path,
) -> Vec<FieldError> {
    let labels = template_labels(template);
    if !selector.is_empty() && !selector.matches(&labels) {
        vec![invalid(
            &path.child("metadata").child("labels"),
            to_json(&labels),
            SELECTOR_MISMATCH,
        )]
    } else {
        Vec::new()
    }
}

/// `ValidatePodTemplateSpecForReplicaSet` (also used by Deployments).
fn template_for_replica_set(
    template: &PodTemplateSpec,
    selector: &LabelSelector,
    kind: &str,
    path: &Path,
) -> Vec<FieldError> {
    let mut errs = selector_matches_template(selector, template, path);
    errs.extend(pod_template_spec(template, path));
    let spec = template_spec(template);
    let rp = spec.restart_policy.as_deref().unwrap_or_default();
    if rp != "Always" {
        errs.push(not_supported(
            &path.child("spec").child("restartPolicy"),
            rp,
            &["Always"],
        ));
    }
    if let Some(ads) = spec.active_deadline_seconds {
        errs.push(invalid(
            &path.child("spec").child("activeDeadlineSeconds"),
            ads,
            &format!("activeDeadlineSeconds in {kind} is not Supported"),
        ));
    }
    errs
}

fn int_or_percent_value(v: &IntOrString) -> i64 {
    match v {
        IntOrString::Int(i) => i64::from(*i),
        IntOrString::String(s) => s
            .strip_suffix('%')
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
    }
}

/// `ValidatePositiveIntOrPercent` and `IsNotMoreThan100Percent`.
pub(crate) fn positive_int_or_percent(v: Option<&IntOrString>, path: &Path) -> Vec<FieldError> {
    let Some(v) = v else { return Vec::new() };
    let mut errs = Vec::new();
    match v {
        IntOrString::String(s) => {
            for msg in is_valid_percent(s) {
                errs.push(invalid(path, s.as_str(), &msg));
            }
            if errs.is_empty() && int_or_percent_value(v) > 100 {
                errs.push(invalid(path, s.as_str(), "must not be greater than 100%"));
            }
        }
        IntOrString::Int(i) => errs.extend(nonnegative(i64::from(*i), path)),
    }
    errs
}

fn int_or_string_json(v: Option<&IntOrString>) -> Value {
    v.map(to_json).unwrap_or(Value::Null)
}

fn deployment_spec(spec: &DeploymentSpec, raw: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = nonnegative(
        i64::from(spec.replicas.unwrap_or(1)),
        &path.child("replicas"),
    );
    let selector = present(raw, "/spec/selector").then_some(&spec.selector);
    if let Some(sel) = apps_selector(selector, "deployment", &path.child("selector"), &mut errs) {
        errs.extend(template_for_replica_set(
            &spec.template,
            &sel,
            "ReplicaSet",
            &path.child("template"),
        ));
    }
    let strategy = spec.strategy.clone().unwrap_or_default();
    let sp = path.child("strategy");
    match strategy.type_.as_deref().unwrap_or_default() {
        "Recreate" => {
            if strategy.rolling_update.is_some() {
                errs.push(forbidden(
                    &sp.child("rollingUpdate"),
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => match &strategy.rolling_update {
            None => errs.push(required(
                &sp.child("rollingUpdate"),
                "this should be defaulted and never be nil",
            )),
            Some(ru) => {
                let rp = sp.child("rollingUpdate");
                errs.extend(positive_int_or_percent(
                    ru.max_unavailable.as_ref(),
                    &rp.child("maxUnavailable"),
                ));
                errs.extend(positive_int_or_percent(
                    ru.max_surge.as_ref(),
                    &rp.child("maxSurge"),
                ));
                let unavailable = ru.max_unavailable.as_ref().map_or(0, int_or_percent_value);
                let surge = ru.max_surge.as_ref().map_or(0, int_or_percent_value);
                if unavailable == 0 && surge == 0 {
                    errs.push(invalid(
                        &rp.child("maxUnavailable"),
                        int_or_string_json(ru.max_unavailable.as_ref()),
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
            }
        },
        _ => errs.push(not_supported(
            &sp,
            to_json(&strategy),
            &["Recreate", "RollingUpdate"],
        )),
    }
    let min_ready = spec.min_ready_seconds.unwrap_or_default();
    errs.extend(nonnegative(
        i64::from(min_ready),
        &path.child("minReadySeconds"),
    ));
    if let Some(r) = spec.revision_history_limit {
        errs.extend(nonnegative(
            i64::from(r),
            &path.child("revisionHistoryLimit"),
        ));
    }
    if let Some(pds) = spec.progress_deadline_seconds {
        errs.extend(nonnegative(
            i64::from(pds),
            &path.child("progressDeadlineSeconds"),
        ));
        if pds <= min_ready {
            errs.push(invalid(
                &path.child("progressDeadlineSeconds"),
                pds,
                "must be greater than minReadySeconds",
            ));
        }
    }
    errs
}

pub(crate) fn deployment(d: &Deployment, raw: &Value) -> Vec<FieldError> {
    deployment_spec(&d.spec.clone().unwrap_or_default(), raw, &Path::new("spec"))
}

fn selector_immutable(new: &MetaSelector, old: &MetaSelector) -> Vec<FieldError> {
    if new == old {
        Vec::new()
    } else {
        vec![invalid_selector(
            &Path::new("spec").child("selector"),
            new,
            super::field::FIELD_IMMUTABLE,
        )]
    }
}

pub(crate) fn deployment_update(new: &Deployment, old: &Deployment) -> Vec<FieldError> {
    let (n, o) = (
        new.spec.clone().unwrap_or_default(),
        old.spec.clone().unwrap_or_default(),
    );
    selector_immutable(&n.selector, &o.selector)
}

fn replica_set_spec(spec: &ReplicaSetSpec, raw: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = nonnegative(
        i64::from(spec.replicas.unwrap_or(1)),
        &path.child("replicas"),
    );
    errs.extend(nonnegative(
        i64::from(spec.min_ready_seconds.unwrap_or_default()),
        &path.child("minReadySeconds"),
    ));
    let selector = present(raw, "/spec/selector").then_some(&spec.selector);
    if let Some(sel) = apps_selector(selector, "deployment", &path.child("selector"), &mut errs) {
        let template = spec.template.clone().unwrap_or_default();
        errs.extend(template_for_replica_set(
            &template,
            &sel,
            "ReplicaSet",
            &path.child("template"),
        ));
    }
    errs
}

pub(crate) fn replica_set(rs: &ReplicaSet, raw: &Value) -> Vec<FieldError> {
    replica_set_spec(
        &rs.spec.clone().unwrap_or_default(),
        raw,
        &Path::new("spec"),
    )
}

pub(crate) fn replica_set_update(new: &ReplicaSet, old: &ReplicaSet) -> Vec<FieldError> {
    let (n, o) = (
        new.spec.clone().unwrap_or_default(),
        old.spec.clone().unwrap_or_default(),
    );
    selector_immutable(&n.selector, &o.selector)
}

fn stateful_set_spec(spec: &StatefulSetSpec, raw: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match spec.pod_management_policy.as_deref().unwrap_or_default() {
        "" => errs.push(required(&path.child("podManagementPolicy"), "")),
        "OrderedReady" | "Parallel" => {}
        other => errs.push(invalid(
            &path.child("podManagementPolicy"),
            other,
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let sp = path.child("updateStrategy");
    match strategy.type_.as_deref().unwrap_or_default() {
        "" => errs.push(required(&sp, "")),
        "OnDelete" => {
            if let Some(ru) = &strategy.rolling_update {
                errs.push(invalid(
                    &sp.child("rollingUpdate"),
                    to_json(ru),
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        "RollingUpdate" => {
            if let Some(ru) = &strategy.rolling_update {
                let rp = sp.child("rollingUpdate");
                errs.extend(nonnegative(
                    i64::from(ru.partition.unwrap_or_default()),
                    &rp.child("partition"),
                ));
                if let Some(mu) = &ru.max_unavailable {
                    errs.extend(positive_int_or_percent(
                        Some(mu),
                        &rp.child("maxUnavailable"),
                    ));
                    if int_or_percent_value(mu) == 0 {
                        errs.push(invalid(
                            &rp.child("maxUnavailable"),
                            to_json(mu),
                            "must be greater than 0",
                        ));
                    }
                }
            }
        }
        _ => errs.push(invalid(
            &sp,
            to_json(&strategy),
            "must be 'RollingUpdate' or 'OnDelete'",
        )),
    }
    if let Some(policy) = &spec.persistent_volume_claim_retention_policy {
        let pp = path.child("persistentVolumeClaimRetentionPolicy");
        for (field, v) in [
            ("whenDeleted", &policy.when_deleted),
            ("whenScaled", &policy.when_scaled),
        ] {
            let v = v.as_deref().unwrap_or_default();
            if v != "Retain" && v != "Delete" {
                errs.push(not_supported(&pp.child(field), v, &["Retain", "Delete"]));
            }
        }
    }
    errs.extend(nonnegative(
        i64::from(spec.replicas.unwrap_or(1)),
        &path.child("replicas"),
    ));
    errs.extend(nonnegative(
        i64::from(spec.min_ready_seconds.unwrap_or_default()),
        &path.child("minReadySeconds"),
    ));
    if let Some(start) = spec.ordinals.as_ref().and_then(|o| o.start) {
        errs.extend(nonnegative(
            i64::from(start),
            &path.child("ordinals").child("start"),
        ));
    }
    let selector = present(raw, "/spec/selector").then_some(&spec.selector);
    if let Some(sel) = apps_selector(selector, "statefulset", &path.child("selector"), &mut errs) {
        errs.extend(selector_matches_template(
            &sel,
            &spec.template,
            &path.child("template"),
        ));
        errs.extend(pod_template_spec(&spec.template, &path.child("template")));
    }
    let tspec = template_spec(&spec.template);
    let rp = tspec.restart_policy.as_deref().unwrap_or_default();
    if rp != "Always" {
        errs.push(not_supported(
            &path.child("template").child("spec").child("restartPolicy"),
            rp,
            &["Always"],
        ));
    }
    if tspec.active_deadline_seconds.is_some() {
        errs.push(forbidden(
            &path
                .child("template")
                .child("spec")
                .child("activeDeadlineSeconds"),
            "activeDeadlineSeconds in StatefulSet is not Supported",
        ));
    }
    for (i, claim) in spec.volume_claim_templates.iter().flatten().enumerate() {
        let cp = path.child("volumeClaimTemplates").index(i);
        if claim
            .metadata
            .name
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            errs.push(required(&cp.child("metadata").child("name"), ""));
        }
        errs.extend(labels(
            claim.metadata.labels.as_ref(),
            &cp.child("metadata").child("labels"),
        ));
        errs.extend(super::cluster::claim_spec(
            &claim.spec.clone().unwrap_or_default(),
            &cp.child("spec"),
        ));
    }
    errs
}

pub(crate) fn stateful_set(sts: &StatefulSet, raw: &Value) -> Vec<FieldError> {
    stateful_set_spec(
        &sts.spec.clone().unwrap_or_default(),
        raw,
        &Path::new("spec"),
    )
}

pub(crate) fn stateful_set_update(new: &StatefulSet, old: &StatefulSet) -> Vec<FieldError> {
    let (mut n, o) = (
        new.spec.clone().unwrap_or_default(),
        old.spec.clone().unwrap_or_default(),
    );
    n.replicas = o.replicas;
    n.template = o.template.clone();
    n.update_strategy = o.update_strategy.clone();
    n.min_ready_seconds = o.min_ready_seconds;
    n.ordinals = o.ordinals.clone();
    n.revision_history_limit = o.revision_history_limit;
    n.persistent_volume_claim_retention_policy = o.persistent_volume_claim_retention_policy.clone();
    if to_json(&n) != to_json(&o) {
        vec![forbidden(
            &Path::new("spec"),
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        )]
    } else {
        Vec::new()
    }
}

fn daemon_set_spec(spec: &DaemonSetSpec, raw: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let selector = present(raw, "/spec/selector").then_some(&spec.selector);
    if let Some(sel) = apps_selector(selector, "daemonset", &path.child("selector"), &mut errs) {
        let labels = template_labels(&spec.template);
        if !sel.matches(&labels) {
            errs.push(invalid(
                &path.child("template").child("metadata").child("labels"),
                to_json(&labels),
                SELECTOR_MISMATCH,
            ));
        }
    }
    errs.extend(pod_template_spec(&spec.template, &path.child("template")));
    let tspec = template_spec(&spec.template);
    let rp = tspec.restart_policy.as_deref().unwrap_or_default();
    if rp != "Always" {
        errs.push(not_supported(
            &path.child("template").child("spec").child("restartPolicy"),
            rp,
            &["Always"],
        ));
    }
    if let Some(ads) = tspec.active_deadline_seconds {
        errs.push(invalid(
            &path
                .child("template")
                .child("spec")
                .child("activeDeadlineSeconds"),
            ads,
            "activeDeadlineSeconds in DaemonSet is not Supported",
        ));
    }
    errs.extend(nonnegative(
        i64::from(spec.min_ready_seconds.unwrap_or_default()),
        &path.child("minReadySeconds"),
    ));
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let sp = path.child("updateStrategy");
    match strategy.type_.as_deref().unwrap_or_default() {
        "OnDelete" => {}
        "RollingUpdate" => match &strategy.rolling_update {
            None => errs.push(required(&sp.child("rollingUpdate"), "")),
            Some(ru) => {
                let rp = sp.child("rollingUpdate");
                errs.extend(positive_int_or_percent(
                    ru.max_unavailable.as_ref(),
                    &rp.child("maxUnavailable"),
                ));
                errs.extend(positive_int_or_percent(
                    ru.max_surge.as_ref(),
                    &rp.child("maxSurge"),
                ));
                let unavailable = ru.max_unavailable.as_ref().map_or(0, int_or_percent_value) != 0;
                let surge = ru.max_surge.as_ref().map_or(0, int_or_percent_value) != 0;
                if unavailable && surge {
                    errs.push(invalid(
                        &rp.child("maxSurge"),
                        int_or_string_json(ru.max_surge.as_ref()),
                        "may not be set when maxUnavailable is non-zero",
                    ));
                } else if !unavailable && !surge {
                    errs.push(required(
                        &rp.child("maxUnavailable"),
                        "cannot be 0 when maxSurge is 0",
                    ));
                }
            }
        },
        _ => errs.push(not_supported(
            &sp,
            to_json(&strategy),
            &["RollingUpdate", "OnDelete"],
        )),
    }
    if let Some(r) = spec.revision_history_limit {
        errs.extend(nonnegative(
            i64::from(r),
            &path.child("revisionHistoryLimit"),
        ));
    }
    errs
}

pub(crate) fn daemon_set(ds: &DaemonSet, raw: &Value) -> Vec<FieldError> {
    daemon_set_spec(
        &ds.spec.clone().unwrap_or_default(),
        raw,
        &Path::new("spec"),
    )
}

pub(crate) fn daemon_set_update(new: &DaemonSet, old: &DaemonSet) -> Vec<FieldError> {
    let (n, o) = (
        new.spec.clone().unwrap_or_default(),
        old.spec.clone().unwrap_or_default(),
    );
    selector_immutable(&n.selector, &o.selector)
}

pub(crate) fn replication_controller(rc: &ReplicationController) -> Vec<FieldError> {
    let spec = rc.spec.clone().unwrap_or_default();
    let path = Path::new("spec");
    let mut errs = nonnegative(
        i64::from(spec.min_ready_seconds.unwrap_or_default()),
        &path.child("minReadySeconds"),
    );
    let selector = spec.selector.clone().unwrap_or_default();
    if selector.is_empty() {
        errs.push(required(&path.child("selector"), ""));
    }
    errs.extend(labels(Some(&selector), &path.child("selector")));
    errs.extend(nonnegative(
        i64::from(spec.replicas.unwrap_or(1)),
        &path.child("replicas"),
    ));
    let tp = path.child("template");
    match &spec.template {
        None => errs.push(required(&tp, "")),
        Some(template) => {
            let sel = LabelSelector::from_set(&selector);
            errs.extend(selector_matches_template(&sel, template, &tp));
            errs.extend(pod_template_spec(template, &tp));
            let tspec = template_spec(template);
            let rp = tspec.restart_policy.as_deref().unwrap_or_default();
            if rp != "Always" {
                errs.push(not_supported(
                    &tp.child("spec").child("restartPolicy"),
                    rp,
                    &["Always"],
                ));
            }
            if tspec.active_deadline_seconds.is_some() {
                errs.push(forbidden(
                    &tp.child("spec").child("activeDeadlineSeconds"),
                    "activeDeadlineSeconds in ReplicationController is not Supported",
                ));
            }
        }
    }
    errs
}

/// `validateJobSpec`: the checks shared by Jobs and CronJob job templates.
fn job_spec_common(spec: &JobSpec, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (field, v) in [
        ("parallelism", spec.parallelism.map(i64::from)),
        ("completions", spec.completions.map(i64::from)),
        ("activeDeadlineSeconds", spec.active_deadline_seconds),
        ("backoffLimit", spec.backoff_limit.map(i64::from)),
        (
            "ttlSecondsAfterFinished",
            spec.ttl_seconds_after_finished.map(i64::from),
        ),
        (
            "backoffLimitPerIndex",
            spec.backoff_limit_per_index.map(i64::from),
        ),
        ("maxFailedIndexes", spec.max_failed_indexes.map(i64::from)),
    ] {
        if let Some(v) = v {
            errs.extend(nonnegative(v, &path.child(field)));
        }
    }
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    if let Some(mode) = spec.completion_mode.as_deref() {
        if mode != "NonIndexed" && mode != "Indexed" {
            errs.push(not_supported(
                &path.child("completionMode"),
                mode,
                &["NonIndexed", "Indexed"],
            ));
        }
        if indexed {
            if spec.completions.is_none() {
                errs.push(required(
                    &path.child("completions"),
                    "when completion mode is Indexed",
                ));
            }
            if let Some(p) = spec.parallelism.filter(|p| *p > 100_000) {
                errs.push(invalid(
                    &path.child("parallelism"),
                    p,
                    "must be less than or equal to 100000 when completion mode is Indexed",
                ));
            }
        }
    }
    if spec.backoff_limit_per_index.is_some() && !indexed {
        errs.push(forbidden(
            &path.child("backoffLimitPerIndex"),
            "requires indexed completion mode",
        ));
    }
    if let Some(policy) = spec.pod_replacement_policy.as_deref() {
        if spec.pod_failure_policy.is_some() && policy != "Failed" {
            errs.push(invalid(
                &path.child("podReplacementPolicy"),
                policy,
                "must be \"Failed\" when podFailurePolicy is used",
            ));
        } else if policy != "TerminatingOrFailed" && policy != "Failed" {
            errs.push(not_supported(
                &path.child("podReplacementPolicy"),
                policy,
                &["TerminatingOrFailed", "Failed"],
            ));
        }
    }
    let tp = path.child("template");
    errs.extend(pod_template_spec(&spec.template, &tp));
    let tspec = template_spec(&spec.template);
    let rp_path = tp.child("spec").child("restartPolicy");
    match tspec.restart_policy.as_deref().unwrap_or_default() {
        "" | "Always" => errs.push(required(&rp_path, "valid values: \"OnFailure\", \"Never\"")),
        "OnFailure" if spec.pod_failure_policy.is_some() => errs.push(invalid(
            &rp_path,
            "OnFailure",
            "only \"Never\" is supported when podFailurePolicy is specified",
        )),
        "OnFailure" | "Never" => {}
        other => errs.push(not_supported(&rp_path, other, &["OnFailure", "Never"])),
    }
    errs
}

fn job_spec(spec: &JobSpec, path: &Path) -> Vec<FieldError> {
    let mut errs = job_spec_common(spec, path);
    let sp = path.child("selector");
    match &spec.selector {
        None => errs.push(required(&sp, "")),
        Some(s) => errs.extend(label_selector(s, &sp)),
    }
    if let Ok(sel) = LabelSelector::from_meta_opt(spec.selector.as_ref()) {
        let labels = template_labels(&spec.template);
        if !sel.matches(&labels) {
            errs.push(invalid(
                &path.child("template").child("metadata").child("labels"),
                to_json(&labels),
                SELECTOR_MISMATCH,
            ));
        }
    }
    errs
}

pub(crate) fn job(j: &Job) -> Vec<FieldError> {
    job_spec(&j.spec.clone().unwrap_or_default(), &Path::new("spec"))
}

/// `ValidateJobSpecUpdate`: selector, template (unless a suspended job that never started
/// changes only its scheduling directives), completion mode and policies are immutable;
/// completions only change together with parallelism for indexed jobs.
pub(crate) fn job_update(new: &Job, old: &Job) -> Vec<FieldError> {
    let (n, o) = (
        new.spec.clone().unwrap_or_default(),
        old.spec.clone().unwrap_or_default(),
    );
    let path = Path::new("spec");
    let mut errs = Vec::new();
    let elastic = n.completion_mode.as_deref() == Some("Indexed")
        && n.completions == n.parallelism
        && o.completions == o.parallelism;
    if !elastic {
        errs.extend(immutable_field(
            &n.completions,
            &o.completions,
            &path.child("completions"),
        ));
    }
    if n.selector != o.selector {
        errs.push(match &n.selector {
            Some(s) => invalid_selector(&path.child("selector"), s, super::field::FIELD_IMMUTABLE),
            None => invalid(
                &path.child("selector"),
                Value::Null,
                super::field::FIELD_IMMUTABLE,
            ),
        });
    }
    let mut old_template = o.template.clone();
    let never_started = old.status.as_ref().is_none_or(|s| s.start_time.is_none());
    if o.suspend == Some(true) && never_started {
        let new_meta = n.template.metadata.clone().unwrap_or_default();
        let meta = old_template.metadata.get_or_insert_with(Default::default);
        meta.labels = new_meta.labels;
        meta.annotations = new_meta.annotations;
        let new_spec = n.template.spec.clone().unwrap_or_default();
        let spec = old_template.spec.get_or_insert_with(Default::default);
        spec.node_selector = new_spec.node_selector;
        spec.tolerations = new_spec.tolerations;
        spec.affinity = new_spec.affinity;
        spec.scheduling_gates = new_spec.scheduling_gates;
    }
    errs.extend(immutable_field(
        &n.template,
        &old_template,
        &path.child("template"),
    ));
    errs.extend(immutable_field(
        &n.completion_mode,
        &o.completion_mode,
        &path.child("completionMode"),
    ));
    errs.extend(immutable_field(
        &n.pod_failure_policy,
        &o.pod_failure_policy,
        &path.child("podFailurePolicy"),
    ));
    errs.extend(immutable_field(
        &n.backoff_limit_per_index,
        &o.backoff_limit_per_index,
        &path.child("backoffLimitPerIndex"),
    ));
    errs.extend(immutable_field(
        &n.managed_by,
        &o.managed_by,
        &path.child("managedBy"),
    ));
    errs.extend(immutable_field(
        &n.success_policy,
        &o.success_policy,
        &path.child("successPolicy"),
    ));
    errs
}

fn time_zone(tz: Option<&str>, path: &Path) -> Vec<FieldError> {
    let Some(tz) = tz else { return Vec::new() };
    if tz.is_empty() {
        return vec![invalid(
            path,
            tz,
            "timeZone must be nil or non-empty string",
        )];
    }
    let valid_part = |p: &str| {
        p != "."
            && p != ".."
            && !p.starts_with('-')
            && (1..=14).contains(&p.len())
            && p.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b".-_+".contains(&c))
    };
    if !tz.split('/').all(valid_part) {
        return vec![invalid(path, tz, &format!("unknown time zone {tz}"))];
    }
    if tz.eq_ignore_ascii_case("Local") {
        return vec![invalid(
            path,
            tz,
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
        )];
    }
    Vec::new()
}

fn cron_job_spec(spec: &CronJobSpec, old: Option<&CronJobSpec>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let sp = path.child("schedule");
    if spec.schedule.is_empty() {
        errs.push(required(&sp, ""));
    } else {
        if let Err(e) = parse_schedule(&spec.schedule) {
            errs.push(invalid(&sp, spec.schedule.as_str(), &e.to_string()));
        }
        let allow_tz = old.is_some_and(|o| o.schedule.contains("TZ"));
        if allow_tz && spec.schedule.contains("TZ") && spec.time_zone.is_some() {
            errs.push(invalid(
                &sp,
                spec.schedule.as_str(),
                "cannot use both timeZone field and TZ or CRON_TZ in schedule",
            ));
        } else if !allow_tz && spec.schedule.contains("TZ") {
            errs.push(invalid(
                &sp,
                spec.schedule.as_str(),
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ));
        }
    }
    if let Some(s) = spec.starting_deadline_seconds {
        errs.extend(nonnegative(s, &path.child("startingDeadlineSeconds")));
    }
    if old.is_none_or(|o| o.time_zone != spec.time_zone) {
        errs.extend(time_zone(
            spec.time_zone.as_deref(),
            &path.child("timeZone"),
        ));
    }
    match spec.concurrency_policy.as_deref().unwrap_or_default() {
        "Allow" | "Forbid" | "Replace" => {}
        "" => errs.push(required(&path.child("concurrencyPolicy"), "")),
        other => errs.push(not_supported(
            &path.child("concurrencyPolicy"),
            other,
            &["Allow", "Forbid", "Replace"],
        )),
    }
    let jp = path.child("jobTemplate").child("spec");
    let job = spec.job_template.spec.clone().unwrap_or_default();
    errs.extend(job_spec_common(&job, &jp));
    if let Some(s) = &job.selector {
        errs.push(invalid_selector(
            &jp.child("selector"),
            s,
            "`selector` will be auto-generated",
        ));
    }
    if job.manual_selector == Some(true) {
        errs.push(not_supported(
            &jp.child("manualSelector"),
            true,
            &["nil", "false"],
        ));
    }
    for (field, v) in [
        (
            "successfulJobsHistoryLimit",
            spec.successful_jobs_history_limit,
        ),
        ("failedJobsHistoryLimit", spec.failed_jobs_history_limit),
    ] {
        if let Some(v) = v {
            errs.extend(nonnegative(i64::from(v), &path.child(field)));
        }
    }
    errs
}

/// CronJob names leave room for the 11-character suffix of the Jobs it creates.
pub(crate) fn cron_job(cj: &CronJob) -> Vec<FieldError> {
    let mut errs = cron_job_spec(
        &cj.spec.clone().unwrap_or_default(),
        None,
        &Path::new("spec"),
    );
    let name = cj.metadata.name.as_deref().unwrap_or_default();
    if name.len() > 52 {
        errs.push(invalid(
            &Path::new("metadata").child("name"),
            name,
            "must be no more than 52 characters",
        ));
    }
    errs
}

pub(crate) fn cron_job_update(new: &CronJob, old: &CronJob) -> Vec<FieldError> {
    cron_job_spec(
        &new.spec.clone().unwrap_or_default(),
        Some(&old.spec.clone().unwrap_or_default()),
        &Path::new("spec"),
    )
}

pub(crate) fn controller_revision(cr: &ControllerRevision) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if cr.data.is_none() {
        errs.push(required(&Path::new("data"), "data is mandatory"));
    }
    errs.extend(nonnegative(cr.revision, &Path::new("revision")));
    errs
}

pub(crate) fn controller_revision_update(
    new: &ControllerRevision,
    old: &ControllerRevision,
) -> Vec<FieldError> {
    immutable_field(&new.data, &old.data, &Path::new("data"))
}
