//! The kubelet's events about pods (upstream's event recorder with `source.component:
//! kubelet`): Pulled, Created, Started, Killing, BackOff, Failed, FailedMount,
//! FailedCreatePodSandBox, as `kubectl describe pod` shows them. Recording never blocks a
//! pod worker: events go through a bounded queue to one writer, and are dropped when it
//! is full.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, PostParams};
use tokio::sync::mpsc;

use component_base::shutdown::Shutdown;

pub const NORMAL: &str = "Normal";
pub const WARNING: &str = "Warning";

/// Queues events for the writer.
#[derive(Clone, Debug)]
pub struct Recorder {
    tx: mpsc::Sender<Event>,
    node: String,
}

/// Writes queued events until shutdown.
pub struct Writer {
    rx: mpsc::Receiver<Event>,
    client: kube::Client,
}

/// A recorder and its writer.
pub fn recorder(client: kube::Client, node: &str) -> (Recorder, Writer) {
    let (tx, rx) = mpsc::channel(256);
    (
        Recorder {
            tx,
            node: node.to_owned(),
        },
        Writer { rx, client },
    )
}

impl Recorder {
    /// Records an event about `pod` (and one of its containers).
    pub fn emit(
        &self,
        pod: &Pod,
        container: Option<&str>,
        type_: &str,
        reason: &str,
        message: String,
    ) {
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let now = jiff::Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(name),
                namespace: Some(namespace),
                uid: pod.metadata.uid.clone(),
                resource_version: pod.metadata.resource_version.clone(),
                field_path: container.map(|c| format!("spec.containers{{{c}}}")),
            },
            reason: Some(reason.to_owned()),
            message: Some(message),
            type_: Some(type_.to_owned()),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some(self.node.clone()),
            }),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: None::<MicroTime>,
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(self.node.clone()),
            ..Default::default()
        };
        // A full queue drops the event: pods matter more than their history.
        let _ = self.tx.try_send(event);
    }
}

impl Writer {
    pub async fn run(mut self, mut shutdown: Shutdown) {
        loop {
            let event = tokio::select! {
                () = shutdown.signaled() => return,
                e = self.rx.recv() => match e {
                    Some(e) => e,
                    None => return,
                },
            };
            let namespace = event.metadata.namespace.clone().unwrap_or_default();
            let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::debug!(error = %e, "failed to write event");
            }
        }
    }
}
