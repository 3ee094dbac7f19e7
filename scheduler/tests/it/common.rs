//! A real etcd + kube-apiserver (in-process) and an in-process kube-scheduler, with
//! builders for the Node and Pod objects the tests create. No kubelet: nodes are API
//! objects with capacity, as upstream's scheduler integration tests use.
#![allow(dead_code)]

use std::time::Duration;

use component_base::shutdown::{self, Trigger};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

pub use apiserver::testing::{wait_until, TestApi};
use scheduler::app::{self, Config, Running};
pub use scheduler::config::Configuration;

pub const TIMEOUT: Duration = Duration::from_secs(30);

pub struct Cluster {
    pub api: TestApi,
    pub client: Client,
    pub scheduler: Option<(Trigger, Running)>,
}

/// A KubeSchedulerConfiguration from the lines after apiVersion/kind.
pub fn configuration(yaml: &str) -> Configuration {
    Configuration::parse(&format!(
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n{yaml}"
    ))
    .expect("test configuration")
}

impl Cluster {
    pub async fn start() -> Cluster {
        Cluster::start_with(configuration("")).await
    }

    pub async fn start_with(configuration: Configuration) -> Cluster {
        let api = TestApi::start().await;
        let client = api.client().await;
        let mut cluster = Cluster {
            api,
            client,
            scheduler: None,
        };
        cluster.start_scheduler(configuration).await;
        cluster
    }

    /// Starts the control plane without a scheduler.
    pub async fn start_without_scheduler() -> Cluster {
        let api = TestApi::start().await;
        let client = api.client().await;
        Cluster {
            api,
            client,
            scheduler: None,
        }
    }

    pub async fn start_scheduler(&mut self, configuration: Configuration) {
        let (trigger, shutdown) = shutdown::channel();
        let config = Config {
            client: self.client.clone(),
            configuration,
            leader_election: None,
            serving: Some(component_base::options::SecureServingOptions {
                bind_address: "127.0.0.1".parse().unwrap(),
                secure_port: Some(0),
                ..Default::default()
            }),
            registry: prometheus::Registry::new(),
            identity: "test-scheduler".into(),
        };
        let running = app::start(config, shutdown)
            .await
            .expect("scheduler starts");
        let s = running.scheduler.clone();
        wait_until(TIMEOUT, "scheduler informers synced", || {
            let s = s.clone();
            async move { s.synced().then_some(()) }
        })
        .await;
        self.scheduler = Some((trigger, running));
    }

    pub async fn create_node(&self, name: &str, cpu: &str, memory: &str, extra: Value) -> Node {
        let mut node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {
                "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
                "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test node"}],
            },
        });
        merge(&mut node, extra);
        let node: Node = serde_json::from_value(node).expect("node json");
        Api::<Node>::all(self.client.clone())
            .create(&PostParams::default(), &node)
            .await
            .expect("create node")
    }

    /// Creates a pod in `default` with one container requesting `cpu`/`memory` (empty =
    /// no request), merged with `extra` (metadata/spec fields).
    pub async fn create_pod(&self, name: &str, cpu: &str, memory: &str, extra: Value) -> Pod {
        let mut requests = serde_json::Map::new();
        if !cpu.is_empty() {
            requests.insert("cpu".into(), json!(cpu));
        }
        if !memory.is_empty() {
            requests.insert("memory".into(), json!(memory));
        }
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "resources": {"requests": requests}}]},
        });
        merge(&mut pod, extra);
        let pod: Pod = serde_json::from_value(pod).expect("pod json");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod")
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Waits until the pod is bound; returns its node.
    pub async fn bound_node(&self, name: &str) -> String {
        let pods = self.pods();
        wait_until(TIMEOUT, &format!("pod {name} bound"), || {
            let pods = pods.clone();
            async move {
                let pod = pods.get(name).await.ok()?;
                pod.spec?.node_name.filter(|n| !n.is_empty())
            }
        })
        .await
    }

    /// Waits for an event about the pod with this reason; returns the latest.
    pub async fn event(&self, pod: &str, reason: &str) -> Event {
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        wait_until(TIMEOUT, &format!("{reason} event for {pod}"), || {
            let events = events.clone();
            async move {
                let list = events.list(&ListParams::default()).await.ok()?;
                list.items.into_iter().rfind(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod)
                })
            }
        })
        .await
    }

    /// The note of the latest event about the pod with this reason.
    pub async fn event_note(&self, pod: &str, reason: &str) -> String {
        self.event(pod, reason).await.note.unwrap_or_default()
    }

    /// The pod's node right now (None if pending).
    pub async fn node_of(&self, name: &str) -> Option<String> {
        self.pods()
            .get(name)
            .await
            .ok()?
            .spec?
            .node_name
            .filter(|n| !n.is_empty())
    }

    /// Waits until the scheduler has tried the pod and left it pending (its
    /// PodScheduled=False condition is set); returns the condition's message.
    pub async fn unschedulable_message(&self, name: &str) -> String {
        let pods = self.pods();
        wait_until(TIMEOUT, &format!("pod {name} marked unschedulable"), || {
            let pods = pods.clone();
            async move {
                let pod = pods.get(name).await.ok()?;
                let status = pod.status?;
                status
                    .conditions?
                    .into_iter()
                    .find(|c| {
                        c.type_ == "PodScheduled"
                            && c.status == "False"
                            && c.reason.as_deref() == Some("Unschedulable")
                    })
                    .and_then(|c| c.message)
            }
        })
        .await
    }

    pub async fn stop_scheduler(&mut self) {
        if let Some((trigger, running)) = self.scheduler.take() {
            trigger.shutdown();
            let _ = running.task.await;
        }
    }
}

/// JSON merge (objects merge recursively, anything else replaces).
pub fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}
