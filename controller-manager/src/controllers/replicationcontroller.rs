//! replicationcontroller: the replicaset controller's logic over core/v1
//! ReplicationControllers (upstream runs its ReplicaSet controller over converted RCs).

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{
    PodTemplateSpec, ReplicationController, ReplicationControllerCondition,
};

use super::replicaset::{self, ReplicaCondition, ReplicaStatus, Replicated};
use super::Context;
use api_types::selector::LabelSelector;

pub const NAME: &str = "replicationcontroller";

impl Replicated for ReplicationController {
    const NAME: &'static str = NAME;
    const COMPONENT: &'static str = "replication-controller";

    fn selector(&self) -> Result<LabelSelector, String> {
        // The apiserver defaults an empty selector to the template's labels; an RC that
        // still has none would match every pod, so it matches none.
        let spec = self.spec.as_ref().ok_or("no spec")?;
        let set = spec
            .selector
            .as_ref()
            .filter(|s| !s.is_empty())
            .or_else(|| {
                spec.template
                    .as_ref()
                    .and_then(|t| t.metadata.as_ref())
                    .and_then(|m| m.labels.as_ref())
            })
            .filter(|s| !s.is_empty())
            .ok_or("empty selector")?;
        Ok(LabelSelector::from_set(set))
    }
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
    }
    fn replica_status(&self) -> ReplicaStatus {
        let Some(s) = &self.status else {
            return ReplicaStatus::default();
        };
        ReplicaStatus {
            replicas: s.replicas,
            fully_labeled_replicas: s.fully_labeled_replicas.unwrap_or(0),
            ready_replicas: s.ready_replicas.unwrap_or(0),
            available_replicas: s.available_replicas.unwrap_or(0),
            observed_generation: s.observed_generation.unwrap_or(0),
            conditions: s
                .conditions
                .iter()
                .flatten()
                .map(|c| ReplicaCondition {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    last_transition_time: c.last_transition_time.clone(),
                })
                .collect(),
        }
    }
    fn with_replica_status(&self, s: &ReplicaStatus) -> Self {
        let mut rc = self.clone();
        let status = rc.status.get_or_insert_with(Default::default);
        status.replicas = s.replicas;
        status.fully_labeled_replicas = Some(s.fully_labeled_replicas);
        status.ready_replicas = Some(s.ready_replicas);
        status.available_replicas = Some(s.available_replicas);
        status.observed_generation = Some(s.observed_generation);
        status.conditions = (!s.conditions.is_empty()).then(|| {
            s.conditions
                .iter()
                .map(|c| ReplicationControllerCondition {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    last_transition_time: c.last_transition_time.clone(),
                })
                .collect()
        });
        rc
    }
}

pub fn start(ctx: &Context) -> BoxFuture<'static, ()> {
    replicaset::run::<ReplicationController>(ctx, ctx.options.concurrent_rc_syncs)
}
