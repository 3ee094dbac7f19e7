//! ttl-after-finished: a finished Job (Complete or Failed) with `ttlSecondsAfterFinished`
//! is deleted, with its pods (foreground), that many seconds after it finished.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::ResourceExt;
use tracing::info;

use super::controller_utils::only_uid;
use super::Context;

pub const NAME: &str = "ttl-after-finished";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("deleting finished job {job}: {source}")]
    Delete {
        job: String,
        #[source]
        source: kube::Error,
    },
}

pub fn start(ctx: &Context) -> BoxFuture<'static, ()> {
    let jobs = ctx.informers.subscribe::<Job>();
    let store = ctx.informers.store::<Job>();
    Controller::for_shared_stream(jobs, store)
        .run(reconcile, error_policy, Arc::new(ctx.clone()))
        .for_each(|_| async {})
        .boxed()
}

/// When the job finished: its Complete/Failed condition's transition time, else
/// completionTime.
pub fn finished_at(job: &Job) -> Option<Timestamp> {
    let status = job.status.as_ref()?;
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0))
        .or_else(|| status.completion_time.as_ref().map(|t| t.0))
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action, Error> {
    let metrics = ctx.metrics.clone();
    metrics.observe(NAME, expire(job, ctx)).await
}

async fn expire(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
        return Ok(Action::await_change());
    };
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(finished) = finished_at(&job) else {
        return Ok(Action::await_change());
    };
    let left = i64::from(ttl) - Timestamp::now().duration_since(finished).as_secs();
    if left > 0 {
        return Ok(Action::requeue(Duration::from_secs(left as u64)));
    }
    let ns = job.namespace().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..only_uid(job.uid())
    };
    match api.delete(&job.name_any(), &params).await {
        Ok(_) => {
            info!(job = %format!("{ns}/{}", job.name_any()), "deleted after ttlSecondsAfterFinished")
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(source) => {
            return Err(Error::Delete {
                job: format!("{ns}/{}", job.name_any()),
                source,
            })
        }
    }
    Ok(Action::await_change())
}

fn error_policy(_job: Arc<Job>, _error: &Error, _ctx: Arc<Context>) -> Action {
    Action::requeue(Duration::from_secs(5))
}
