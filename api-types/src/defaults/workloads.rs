//! Defaults for controllers: apps/v1, batch/v1 and core/v1 ReplicationController.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetUpdateStrategy, Deployment, DeploymentStrategy, ReplicaSet,
    RollingUpdateDaemonSet, RollingUpdateDeployment, RollingUpdateStatefulSetStrategy, StatefulSet,
    StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ReplicationController;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::core::persistent_volume_claim;
use super::default_str;
use super::pod::pod_template;

type Res = std::result::Result<(), String>;

/// `SetDefaults_ReplicationController`: selector and labels from the template labels,
/// one replica.
pub(crate) fn replication_controller(rc: &mut ReplicationController) -> Res {
    let spec = rc.spec.get_or_insert_with(Default::default);
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone());
    if let Some(labels) = template_labels {
        if spec.selector.as_ref().is_none_or(BTreeMap::is_empty) {
            spec.selector = Some(labels.clone());
        }
        if rc.metadata.labels.as_ref().is_none_or(BTreeMap::is_empty) {
            rc.metadata.labels = Some(labels);
        }
    }
    spec.replicas.get_or_insert(1);
    if let Some(t) = &mut spec.template {
        pod_template(t)?;
    }
    Ok(())
}

pub(crate) fn deployment(d: &mut Deployment) -> Res {
    let spec = d.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    let strategy = spec
        .strategy
        .get_or_insert_with(DeploymentStrategy::default);
    default_str(&mut strategy.type_, "RollingUpdate");
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let ru = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDeployment::default);
        ru.max_unavailable
            .get_or_insert_with(|| IntOrString::String("25%".to_string()));
        ru.max_surge
            .get_or_insert_with(|| IntOrString::String("25%".to_string()));
    }
    spec.revision_history_limit.get_or_insert(10);
    spec.progress_deadline_seconds.get_or_insert(600);
    pod_template(&mut spec.template)
}

pub(crate) fn replica_set(rs: &mut ReplicaSet) -> Res {
    let spec = rs.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    pod_template(spec.template.get_or_insert_with(Default::default))
}

pub(crate) fn stateful_set(sts: &mut StatefulSet) -> Res {
    let spec = sts.spec.get_or_insert_with(Default::default);
    default_str(&mut spec.pod_management_policy, "OrderedReady");
    let strategy = spec
        .update_strategy
        .get_or_insert_with(StatefulSetUpdateStrategy::default);
    if strategy.type_.as_deref().unwrap_or_default().is_empty() {
        strategy.type_ = Some("RollingUpdate".to_string());
        strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateStatefulSetStrategy::default);
    }
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        if let Some(ru) = &mut strategy.rolling_update {
            ru.partition.get_or_insert(0);
        }
    }
    spec.replicas.get_or_insert(1);
    spec.revision_history_limit.get_or_insert(10);
    let policy = spec
        .persistent_volume_claim_retention_policy
        .get_or_insert_with(StatefulSetPersistentVolumeClaimRetentionPolicy::default);
    default_str(&mut policy.when_deleted, "Retain");
    default_str(&mut policy.when_scaled, "Retain");
    for claim in spec.volume_claim_templates.iter_mut().flatten() {
        persistent_volume_claim(claim)?;
    }
    pod_template(&mut spec.template)
}

pub(crate) fn daemon_set(ds: &mut DaemonSet) -> Res {
    let spec = ds.spec.get_or_insert_with(Default::default);
    let strategy = spec
        .update_strategy
        .get_or_insert_with(DaemonSetUpdateStrategy::default);
    default_str(&mut strategy.type_, "RollingUpdate");
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let ru = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDaemonSet::default);
        ru.max_unavailable.get_or_insert(IntOrString::Int(1));
        ru.max_surge.get_or_insert(IntOrString::Int(0));
    }
    spec.revision_history_limit.get_or_insert(10);
    pod_template(&mut spec.template)
}

/// `SetDefaults_Job` (the pod template's restart policy is defaulted like any template's
/// and then validated: a Job must say OnFailure or Never).
pub(crate) fn job(job: &mut Job) -> Res {
    let spec = job.spec.get_or_insert_with(Default::default);
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
        spec.parallelism = Some(1);
    }
    spec.parallelism.get_or_insert(1);
    if spec.backoff_limit.is_none() {
        spec.backoff_limit = Some(if spec.backoff_limit_per_index.is_some() {
            i32::MAX
        } else {
            6
        });
    }
    let template_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone());
    if let Some(labels) = template_labels {
        if job.metadata.labels.as_ref().is_none_or(BTreeMap::is_empty) {
            job.metadata.labels = Some(labels);
        }
    }
    default_str(&mut spec.completion_mode, "NonIndexed");
    spec.suspend.get_or_insert(false);
    if let Some(policy) = &mut spec.pod_failure_policy {
        for rule in &mut policy.rules {
            for pattern in rule.on_pod_conditions.iter_mut().flatten() {
                if pattern.status.is_empty() {
                    pattern.status = "True".to_string();
                }
            }
        }
    }
    if spec.pod_replacement_policy.is_none() {
        let policy = if spec.pod_failure_policy.is_some() {
            "Failed"
        } else {
            "TerminatingOrFailed"
        };
        spec.pod_replacement_policy = Some(policy.to_string());
    }
    spec.manual_selector.get_or_insert(false);
    pod_template(&mut spec.template)
}

pub(crate) fn cron_job(cj: &mut CronJob) -> Res {
    let spec = cj.spec.get_or_insert_with(Default::default);
    default_str(&mut spec.concurrency_policy, "Allow");
    spec.suspend.get_or_insert(false);
    spec.successful_jobs_history_limit.get_or_insert(3);
    spec.failed_jobs_history_limit.get_or_insert(1);
    let job_spec = spec.job_template.spec.get_or_insert_with(Default::default);
    pod_template(&mut job_spec.template)
}
