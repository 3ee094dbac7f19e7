//! root-ca-cert-publisher: every active namespace has the `kube-root-ca.crt` ConfigMap
//! holding the CA bundle that verifies the apiserver (`ca.crt`), as upstream's
//! controller of that name. The ServiceAccount admission plugin's `kube-api-access-*`
//! volumes project it into every pod; the bundle is `--root-ca-file`, or else the CA
//! this controller-manager trusts the apiserver with.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;
use tracing::{debug, warn};

use super::Context;

pub const NAME: &str = "root-ca-cert-publisher";
pub const CONFIG_MAP: &str = "kube-root-ca.crt";
const KEY: &str = "ca.crt";
/// Upstream's description annotation on the ConfigMap.
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("publishing {CONFIG_MAP} in {namespace}: {source}")]
    Publish {
        namespace: String,
        #[source]
        source: kube::Error,
    },
}

struct State {
    ctx: Context,
    bundle: String,
}

pub fn start(ctx: &Context) -> BoxFuture<'static, ()> {
    let namespaces = ctx.informers.subscribe::<Namespace>();
    let namespace_store = ctx.informers.store::<Namespace>();
    let Some(bundle) = ctx.options.root_ca.clone() else {
        warn!(
            "no root CA bundle (--root-ca-file, or the kubeconfig's CA): {NAME} publishes nothing"
        );
        // The namespace subscription must still be drained.
        return namespaces.for_each(|_| async {}).boxed();
    };
    let state = Arc::new(State {
        ctx: ctx.clone(),
        bundle,
    });
    let config_maps: Api<ConfigMap> = Api::all(ctx.client.clone());
    Controller::for_shared_stream(namespaces, namespace_store)
        // Only the ConfigMaps of this name, not every ConfigMap of the cluster.
        .watches(
            config_maps,
            watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP}")),
            |cm: ConfigMap| cm.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns)),
        )
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .boxed()
}

async fn reconcile(ns: Arc<Namespace>, state: Arc<State>) -> Result<Action, Error> {
    let metrics = state.ctx.metrics.clone();
    metrics.observe(NAME, publish(ns, state)).await
}

fn wanted_data(bundle: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(KEY.to_string(), bundle.to_string())])
}

async fn publish(ns: Arc<Namespace>, state: Arc<State>) -> Result<Action, Error> {
    let name = ns.name_any();
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Ok(Action::await_change());
    }
    let api: Api<ConfigMap> = Api::namespaced(state.ctx.client.clone(), &name);
    let error = |source| Error::Publish {
        namespace: name.clone(),
        source,
    };
    let wanted = wanted_data(&state.bundle);
    match api.get_opt(CONFIG_MAP).await.map_err(error)? {
        Some(cm) if cm.data.as_ref() == Some(&wanted) => {}
        Some(mut cm) => {
            // Someone changed it: put the bundle back (optimistic concurrency on its
            // resourceVersion; a conflict retries through the error policy).
            cm.data = Some(wanted);
            cm.binary_data = None;
            api.replace(CONFIG_MAP, &PostParams::default(), &cm)
                .await
                .map_err(error)?;
            debug!(namespace = %name, "updated {CONFIG_MAP}");
        }
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(CONFIG_MAP.into()),
                    annotations: Some(BTreeMap::from([(
                        "kubernetes.io/description".to_string(),
                        DESCRIPTION.to_string(),
                    )])),
                    ..ObjectMeta::default()
                },
                data: Some(wanted),
                ..ConfigMap::default()
            };
            match api.create(&PostParams::default(), &cm).await {
                Ok(_) => debug!(namespace = %name, "created {CONFIG_MAP}"),
                // Already there (a watch event will bring it), or the namespace is going.
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 || s.code == 404 => {}
                Err(source) => return Err(error(source)),
            }
        }
    }
    Ok(Action::await_change())
}

fn error_policy(_ns: Arc<Namespace>, _error: &Error, _state: Arc<State>) -> Action {
    Action::requeue(Duration::from_secs(5))
}

/// PEM text of DER certificates (the kubeconfig's CA as kube's client config holds it).
pub fn pem_bundle(certs: &[Vec<u8>]) -> String {
    use base64::Engine as _;
    let mut out = String::new();
    for der in certs {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_certificates_become_pem_lines_of_64() {
        let pem = pem_bundle(&[vec![0u8; 60], vec![1u8; 3]]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2].len(), 16);
        assert_eq!(lines[3], "-----END CERTIFICATE-----");
        assert_eq!(lines[5], "AQEB");
        assert_eq!(lines.len(), 7);
    }
}
