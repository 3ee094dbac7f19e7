//! csrcleaner: deletes CertificateSigningRequests that are done with, as upstream's
//! `csrcleaner` controller: approved (issued) or denied or failed ones an hour after that
//! condition was last updated, pending ones a day after creation, and issued ones whose
//! certificate has expired. Instead of upstream's hourly relist, each request is requeued
//! for the moment it becomes eligible.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::ResourceExt;
use tracing::info;

use crate::controllers::controller_utils::only_uid;
use crate::controllers::Context;

pub const NAME: &str = "csrcleaner";

const APPROVED_EXPIRATION: SignedDuration = SignedDuration::from_hours(1);
const DENIED_EXPIRATION: SignedDuration = SignedDuration::from_hours(1);
const PENDING_EXPIRATION: SignedDuration = SignedDuration::from_hours(24);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("deleting {csr}: {source}")]
    Delete {
        csr: String,
        #[source]
        source: kube::Error,
    },
}

/// When `csr` may be deleted.
pub fn deletion_time(csr: &CertificateSigningRequest) -> Option<Timestamp> {
    let status = csr.status.as_ref();
    let condition = |ty: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == ty && c.status == "True"))
            .map(|c| {
                c.last_update_time
                    .as_ref()
                    .or(c.last_transition_time.as_ref())
                    .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
            })
    };
    let mut candidates = Vec::new();
    if let Some(t) = condition("Denied") {
        candidates.push(t + DENIED_EXPIRATION);
    }
    if let Some(t) = condition("Failed") {
        candidates.push(t + DENIED_EXPIRATION);
    }
    let cert = status
        .and_then(|s| s.certificate.as_ref())
        .filter(|c| !c.0.is_empty());
    if let (Some(t), Some(_)) = (condition("Approved"), cert) {
        candidates.push(t + APPROVED_EXPIRATION);
    }
    if let Some(pem) = cert {
        let not_after = api_types::validation::certificates::pem_block(&pem.0, "CERTIFICATE")
            .ok()
            .and_then(|der| {
                x509_parser::parse_x509_certificate(&der)
                    .ok()
                    .map(|(_, c)| c.validity().not_after.timestamp())
            })
            .and_then(|s| Timestamp::from_second(s).ok());
        candidates.extend(not_after);
    }
    if condition("Approved").is_none()
        && condition("Denied").is_none()
        && condition("Failed").is_none()
    {
        if let Some(created) = csr.metadata.creation_timestamp.as_ref() {
            candidates.push(created.0 + PENDING_EXPIRATION);
        }
    }
    candidates.into_iter().min()
}

pub fn start(ctx: &Context) -> BoxFuture<'static, ()> {
    let csrs = ctx.informers.subscribe::<CertificateSigningRequest>();
    let store = ctx.informers.store::<CertificateSigningRequest>();
    Controller::for_shared_stream(csrs, store)
        .run(reconcile, error_policy, Arc::new(ctx.clone()))
        .for_each(|_| async {})
        .boxed()
}

async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let metrics = ctx.metrics.clone();
    metrics.observe(NAME, clean(csr, ctx)).await
}

async fn clean(csr: Arc<CertificateSigningRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(at) = deletion_time(&csr) else {
        return Ok(Action::await_change());
    };
    let left = at.duration_since(Timestamp::now());
    if left.is_positive() {
        return Ok(Action::requeue(
            Duration::try_from(left).unwrap_or(Duration::from_secs(3600)),
        ));
    }
    let name = csr.name_any();
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    match api.delete(&name, &only_uid(csr.uid())).await {
        Ok(_) => info!(csr = %name, "cleaned up"),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(source) => return Err(Error::Delete { csr: name, source }),
    }
    Ok(Action::await_change())
}

fn error_policy(
    _csr: Arc<CertificateSigningRequest>,
    _error: &Error,
    _ctx: Arc<Context>,
) -> Action {
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestCondition, CertificateSigningRequestStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn with(conditions: &[(&str, i64)]) -> CertificateSigningRequest {
        let mut csr = CertificateSigningRequest::default();
        csr.metadata.creation_timestamp = Some(Time(at(1_000_000)));
        csr.status = Some(CertificateSigningRequestStatus {
            conditions: Some(
                conditions
                    .iter()
                    .map(|(t, s)| CertificateSigningRequestCondition {
                        type_: (*t).into(),
                        status: "True".into(),
                        last_update_time: Some(Time(at(*s))),
                        ..Default::default()
                    })
                    .collect(),
            ),
            certificate: None,
        });
        csr
    }

    #[test]
    fn deadlines_follow_upstream() {
        // Pending: a day after creation.
        assert_eq!(deletion_time(&with(&[])), Some(at(1_000_000 + 86_400)));
        // Denied or failed: an hour after the condition.
        assert_eq!(
            deletion_time(&with(&[("Denied", 2_000_000)])),
            Some(at(2_003_600))
        );
        assert_eq!(
            deletion_time(&with(&[("Failed", 2_000_000)])),
            Some(at(2_003_600))
        );
        // Approved but not issued yet: the signer still has to act.
        assert_eq!(deletion_time(&with(&[("Approved", 2_000_000)])), None);
    }
}
