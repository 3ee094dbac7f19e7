//! serviceaccount: every active namespace has a `default` ServiceAccount (upstream's
//! serviceaccounts-controller, which recreates it if deleted).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use tracing::debug;

use super::Context;

pub const NAME: &str = "serviceaccount";
const DEFAULT: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating the default ServiceAccount in {namespace}: {source}")]
    Create {
        namespace: String,
        #[source]
        source: kube::Error,
    },
}

struct State {
    ctx: Context,
    accounts: Store<ServiceAccount>,
}

pub fn start(ctx: &Context) -> BoxFuture<'static, ()> {
    let namespaces = ctx.informers.subscribe::<Namespace>();
    let namespace_store = ctx.informers.store::<Namespace>();
    let accounts = ctx.informers.subscribe::<ServiceAccount>();
    let state = Arc::new(State {
        ctx: ctx.clone(),
        accounts: ctx.informers.store::<ServiceAccount>(),
    });
    Controller::for_shared_stream(namespaces, namespace_store)
        .watches_shared_stream(accounts, |sa: Arc<ServiceAccount>| {
            sa.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns))
        })
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .boxed()
}

async fn reconcile(ns: Arc<Namespace>, state: Arc<State>) -> Result<Action, Error> {
    let metrics = state.ctx.metrics.clone();
    metrics.observe(NAME, ensure_default(ns, state)).await
}

async fn ensure_default(ns: Arc<Namespace>, state: Arc<State>) -> Result<Action, Error> {
    let name = ns.name_any();
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Ok(Action::await_change());
    }
    let exists = state
        .accounts
        .get(&ObjectRef::new(DEFAULT).within(&name))
        .is_some();
    if exists {
        return Ok(Action::await_change());
    }
    let api: Api<ServiceAccount> = Api::namespaced(state.ctx.client.clone(), &name);
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(DEFAULT.into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => debug!(namespace = %name, "created the default ServiceAccount"),
        // Already there (our cache lags), or the namespace is going away.
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 || s.code == 404 => {}
        Err(source) => {
            return Err(Error::Create {
                namespace: name,
                source,
            })
        }
    }
    Ok(Action::await_change())
}

fn error_policy(_ns: Arc<Namespace>, _error: &Error, _state: Arc<State>) -> Action {
    Action::requeue(Duration::from_secs(5))
}
