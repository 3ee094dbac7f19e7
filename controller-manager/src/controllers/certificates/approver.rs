//! csrapproving: auto-approves kubelet client certificate requests, as upstream's
//! `sarapprove` controller. Only `kubernetes.io/kube-apiserver-client-kubelet` requests that
//! are node client certificates (O `system:nodes`, CN `system:node:<name>`, client auth)
//! are considered, and only two kinds are approved:
//! - *selfnodeclient*: a node renewing its own certificate (the requester is the CN it asks
//!   for, in `system:nodes`);
//! - *nodeclient*: a new node joining with a bootstrap token (requester in
//!   `system:bootstrappers`).
//!
//! Everything else is left for an administrator (`kubectl certificate approve`).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::ResourceExt;
use tracing::info;

use super::{
    is_approved, is_denied, parse_request, validate_kubelet_client, KUBE_APISERVER_CLIENT_KUBELET,
    NODES_GROUP,
};
use crate::controllers::Context;

pub const NAME: &str = "csrapproving";

/// The group of bootstrap-token users (`system:bootstrap:<token-id>`).
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("approving {csr}: {source}")]
    Approve {
        csr: String,
        #[source]
        source: kube::Error,
    },
    #[error("asking whether {csr} may be approved: {source}")]
    Review {
        csr: String,
        #[source]
        source: kube::Error,
    },
}

/// Why a request is approved: upstream's recognizer names (the subresource of
/// `certificatesigningrequests` the SubjectAccessReview asks about) and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recognized {
    SelfNodeClient,
    NodeClient,
}

impl Recognized {
    pub fn subresource(self) -> &'static str {
        match self {
            Recognized::SelfNodeClient => "selfnodeclient",
            Recognized::NodeClient => "nodeclient",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Recognized::SelfNodeClient => {
                "Auto approving self kubelet client certificate after SubjectAccessReview."
            }
            Recognized::NodeClient => {
                "Auto approving kubelet client certificate after SubjectAccessReview."
            }
        }
    }
}

/// Which recognizer, if any, approves `csr`.
pub fn recognize(csr: &CertificateSigningRequest) -> Option<Recognized> {
    if csr.spec.signer_name != KUBE_APISERVER_CLIENT_KUBELET || is_approved(csr) || is_denied(csr) {
        return None;
    }
    let req = parse_request(csr).ok()?;
    validate_kubelet_client(&req, csr).ok()?;
    let groups = csr.spec.groups.as_deref().unwrap_or_default();
    let in_group = |g: &str| groups.iter().any(|x| x == g);
    let username = csr.spec.username.as_deref().unwrap_or_default();
    // Who may be approved at all (as upstream's recognizers); whether this requester is
    // allowed to is the SubjectAccessReview in `approve`.
    if username == req.common_name && in_group(NODES_GROUP) {
        return Some(Recognized::SelfNodeClient);
    }
    if in_group(BOOTSTRAPPERS_GROUP) {
        return Some(Recognized::NodeClient);
    }
    None
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
    metrics.observe(NAME, approve(csr, ctx)).await
}

async fn approve(csr: Arc<CertificateSigningRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(recognized) = recognize(&csr) else {
        return Ok(Action::await_change());
    };
    if !authorized(&csr, recognized, &ctx.client).await? {
        info!(
            csr = %csr.name_any(),
            kind = recognized.subresource(),
            "not auto-approved: the requester may not create certificatesigningrequests/{}",
            recognized.subresource()
        );
        return Ok(Action::await_change());
    }
    let name = csr.name_any();
    let mut updated = (*csr).clone();
    updated
        .status
        .get_or_insert_with(CertificateSigningRequestStatus::default)
        .conditions
        .get_or_insert_with(Vec::new)
        .push(CertificateSigningRequestCondition {
            type_: "Approved".into(),
            status: "True".into(),
            reason: Some("AutoApproved".into()),
            message: Some(recognized.message().into()),
            last_update_time: Some(Time(jiff::Timestamp::now())),
            ..Default::default()
        });
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    match api
        .replace_subresource("approval", &name, &PostParams::default(), &updated)
        .await
    {
        Ok(_) => {
            info!(csr = %name, kind = recognized.subresource(), "approved");
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Action::await_change()),
        Err(source) => Err(Error::Approve { csr: name, source }),
    }
}

/// Upstream's SubjectAccessReview: may the requester `create`
/// `certificatesigningrequests/<nodeclient|selfnodeclient>` in certificates.k8s.io? Under
/// RBAC the answer comes from the bindings of those ClusterRoles (kubeadm binds them to
/// `system:bootstrappers` and `system:nodes`; `pikubeadm token create` does the same).
async fn authorized(
    csr: &CertificateSigningRequest,
    recognized: Recognized,
    client: &kube::Client,
) -> Result<bool, Error> {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: csr.spec.username.clone(),
            uid: csr.spec.uid.clone(),
            groups: csr.spec.groups.clone(),
            extra: csr.spec.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("certificates.k8s.io".into()),
                resource: Some("certificatesigningrequests".into()),
                subresource: Some(recognized.subresource().into()),
                verb: Some("create".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|source| Error::Review {
            csr: csr.name_any(),
            source,
        })?;
    Ok(answer.status.is_some_and(|s| s.allowed))
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
    use crate::controllers::certificates::tests::csr_for;
    use crate::controllers::certificates::KUBE_APISERVER_CLIENT;

    fn from(
        mut csr: CertificateSigningRequest,
        user: &str,
        groups: &[&str],
    ) -> CertificateSigningRequest {
        csr.spec.username = Some(user.into());
        csr.spec.groups = Some(groups.iter().map(|s| s.to_string()).collect());
        csr
    }

    #[test]
    fn approves_bootstrap_and_self_renewal_only() {
        let node = || {
            csr_for(
                "system:node:pi-1",
                NODES_GROUP,
                &[],
                &["digital signature", "key encipherment", "client auth"],
                KUBE_APISERVER_CLIENT_KUBELET,
            )
        };
        let bootstrap = from(
            node(),
            "system:bootstrap:abcdef",
            &[BOOTSTRAPPERS_GROUP, "system:authenticated"],
        );
        assert_eq!(recognize(&bootstrap), Some(Recognized::NodeClient));
        let renewal = from(
            node(),
            "system:node:pi-1",
            &[NODES_GROUP, "system:authenticated"],
        );
        assert_eq!(recognize(&renewal), Some(Recognized::SelfNodeClient));
        // Another node may not renew pi-1's certificate; an ordinary user may not ask.
        assert_eq!(
            recognize(&from(node(), "system:node:pi-2", &[NODES_GROUP])),
            None
        );
        assert_eq!(
            recognize(&from(node(), "alice", &["system:authenticated"])),
            None
        );
        // Other signers and non-node requests are not auto-approved, even for bootstrappers.
        let other_signer = from(
            csr_for(
                "system:node:pi-1",
                NODES_GROUP,
                &[],
                &["client auth"],
                KUBE_APISERVER_CLIENT,
            ),
            "system:bootstrap:abcdef",
            &[BOOTSTRAPPERS_GROUP],
        );
        assert_eq!(recognize(&other_signer), None);
        let masters = from(
            csr_for(
                "system:node:pi-1",
                "system:masters",
                &[],
                &["client auth"],
                KUBE_APISERVER_CLIENT_KUBELET,
            ),
            "system:bootstrap:abcdef",
            &[BOOTSTRAPPERS_GROUP],
        );
        assert_eq!(recognize(&masters), None);
    }
}
