//! The node's heartbeat (upstream `pkg/kubelet/nodelease` and the lease controller of
//! `component-helpers`): a `coordination.k8s.io/v1` Lease named after the node in
//! `kube-node-lease`, held by the node, owned by its Node object, renewed every quarter of
//! its duration (10 s of 40 s by default).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};
use kube::Client;

use component_base::shutdown::Shutdown;

pub const NAMESPACE: &str = "kube-node-lease";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("renewing lease {NAMESPACE}/{name}: {source}")]
    Renew {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Renews the node's lease until shutdown.
pub struct LeaseController {
    pub client: Client,
    pub node_name: String,
    /// The Node's uid, for the owner reference (the lease goes when the node goes).
    pub node_uid: Option<String>,
    pub duration: Duration,
}

impl LeaseController {
    /// Upstream's renew interval: a quarter of the lease duration.
    pub fn renew_interval(&self) -> Duration {
        self.duration / 4
    }

    fn desired(&self, existing: Option<Lease>) -> Lease {
        let mut lease = existing.unwrap_or_default();
        lease.metadata.name = Some(self.node_name.clone());
        lease.metadata.namespace = Some(NAMESPACE.into());
        if let Some(uid) = &self.node_uid {
            lease.metadata.owner_references = Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: self.node_name.clone(),
                uid: uid.clone(),
                ..Default::default()
            }]);
        }
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = Some(self.node_name.clone());
        spec.lease_duration_seconds =
            Some(i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX));
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        lease
    }

    /// Creates or renews the lease once.
    pub async fn renew(&self) -> Result<(), Error> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), NAMESPACE);
        let err = |source| Error::Renew {
            name: self.node_name.clone(),
            source,
        };
        match api.get_opt(&self.node_name).await.map_err(err)? {
            Some(existing) => {
                let lease = self.desired(Some(existing));
                api.replace(&self.node_name, &PostParams::default(), &lease)
                    .await
                    .map_err(err)?;
            }
            None => {
                let lease = self.desired(None);
                let fresh = Lease {
                    metadata: ObjectMeta {
                        resource_version: None,
                        ..lease.metadata
                    },
                    spec: lease.spec,
                };
                api.create(&PostParams::default(), &fresh)
                    .await
                    .map_err(err)?;
            }
        }
        Ok(())
    }

    /// Renews every [`Self::renew_interval`] until shutdown; failures are retried sooner.
    pub async fn run(self, mut shutdown: Shutdown) {
        loop {
            let wait = match self.renew().await {
                Ok(()) => self.renew_interval(),
                Err(e) => {
                    tracing::warn!(error = %e, "failed to renew the node lease, will retry");
                    (self.renew_interval() / 5).max(Duration::from_millis(200))
                }
            };
            tokio::select! {
                () = shutdown.signaled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}
