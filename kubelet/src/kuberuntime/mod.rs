//! The kubelet's side of the container runtime (upstream `pkg/kubelet/kuberuntime`): the
//! runtime's view of one pod, and the steps that move it toward the pod's spec — a
//! sandbox, images per pull policy, init containers one at a time, then the regular
//! containers, restarts per restartPolicy with CrashLoopBackOff (10 s doubling to 5 min),
//! and stopping a pod with its grace period.

pub mod container;
pub mod labels;
pub mod sandbox;
pub mod termination;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::Api;

use crate::app::CgroupDriver;
use crate::cm;
use crate::cri::{self, api, ImageService, RuntimeService};
use crate::events::{self, Recorder};
use crate::lifecycle;
use crate::prober::PodProbes;
use crate::status::WaitingReasons;
use crate::volumes;
use container::{EnvSources, Kind, PodFields};
use sandbox::SandboxSettings;

/// Upstream's crash-loop back-off: 10 s, doubling, at most 5 minutes.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// One container instance as the runtime reports it.
#[derive(Clone, Debug)]
pub struct ContainerInfo {
    pub name: String,
    pub kind: Kind,
    pub attempt: u32,
    pub sandbox_id: String,
    pub created_at: i64,
    pub status: api::ContainerStatus,
}

/// The runtime's view of one pod.
#[derive(Clone, Debug, Default)]
pub struct PodRuntimeState {
    /// Restart counts in the pod's status, by container name: where attempts carry on
    /// from when older containers are gone.
    pub restarts_before: HashMap<String, u32>,
    /// Every sandbox of the pod, newest first.
    pub sandboxes: Vec<api::PodSandbox>,
    /// The newest ready sandbox.
    pub sandbox: Option<api::PodSandbox>,
    pub sandbox_status: Option<api::PodSandboxStatus>,
    /// Every container of the pod, newest first.
    pub containers: Vec<ContainerInfo>,
}

impl PodRuntimeState {
    /// When the termination messages taken from logs that may still be growing should
    /// be read again (see [`termination::reread_at`]).
    pub fn messages_settle_at(&self) -> Option<Instant> {
        let now = wall_now_nanos();
        self.containers
            .iter()
            .filter_map(|c| termination::reread_at(&c.status, now))
            .min()
    }

    /// The sandbox the pod's containers belong to now: the ready one, else the newest
    /// (a finished pod's stopped sandbox).
    pub fn current_sandbox(&self) -> Option<&api::PodSandbox> {
        self.sandbox.as_ref().or(self.sandboxes.first())
    }

    /// Instances of `name` in the current sandbox, newest first.
    pub fn instances(&self, name: &str) -> Vec<&ContainerInfo> {
        let Some(sandbox) = self.current_sandbox() else {
            return Vec::new();
        };
        self.containers
            .iter()
            .filter(|c| c.name == name && c.sandbox_id == sandbox.id)
            .collect()
    }

    /// The attempt number of the next instance of `name`.
    pub fn next_attempt(&self, name: &str) -> u32 {
        let from_status = self.restarts_before.get(name).map(|n| n + 1);
        self.containers
            .iter()
            .filter(|c| c.name == name)
            .map(|c| c.attempt + 1)
            .chain(from_status)
            .max()
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.sandboxes.is_empty() && self.containers.is_empty()
    }
}

/// Restart bookkeeping a pod worker keeps between syncs.
#[derive(Debug, Default)]
pub struct WorkerState {
    pub backoff: HashMap<String, Duration>,
    pub reasons: WaitingReasons,
    pub probes: PodProbes,
    /// The last message of each warning event (by reason and container), so a failure
    /// that repeats on every retry is recorded once.
    pub warned: HashMap<(String, String), String>,
}

/// What the kuberuntime manager needs besides the runtime.
#[derive(Clone, Debug)]
pub struct RuntimeSettings {
    pub node_name: String,
    /// `--root-dir`: pods' volumes live under it.
    pub root_dir: PathBuf,
    pub host_ip: std::net::IpAddr,
    pub pod_logs_dir: PathBuf,
    pub cgroup_driver: CgroupDriver,
    pub cluster_dns: Vec<std::net::IpAddr>,
    pub cluster_domain: String,
    pub resolv_conf: Option<PathBuf>,
}

/// Drives pods on a CRI runtime.
#[derive(Clone)]
pub struct KubeRuntime {
    /// Reads the ConfigMaps and Secrets containers' environments refer to.
    pub client: kube::Client,
    pub events: Recorder,
    pub runtime: Arc<dyn RuntimeService>,
    pub images: Arc<dyn ImageService>,
    pub settings: Arc<RuntimeSettings>,
    /// Sets up pods' volumes (and keeps their tokens).
    pub volumes: Arc<volumes::VolumeManager>,
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn wall_now_nanos() -> i64 {
    i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX)
}

impl KubeRuntime {
    /// Everything the runtime has for the pod `uid`.
    pub async fn state(&self, uid: &str) -> cri::Result<PodRuntimeState> {
        let selector = HashMap::from([(labels::POD_UID.to_owned(), uid.to_owned())]);
        let mut sandboxes = self
            .runtime
            .list_pod_sandbox(Some(api::PodSandboxFilter {
                label_selector: selector.clone(),
                ..Default::default()
            }))
            .await?;
        sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        let sandbox = sandboxes
            .iter()
            .find(|s| s.state() == api::PodSandboxState::SandboxReady)
            .cloned();
        let sandbox_status = match &sandbox {
            Some(s) => match self.runtime.pod_sandbox_status(&s.id).await {
                Ok(st) => Some(st),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e),
            },
            None => None,
        };
        let listed = self
            .runtime
            .list_containers(Some(api::ContainerFilter {
                label_selector: selector,
                ..Default::default()
            }))
            .await?;
        let mut containers = Vec::with_capacity(listed.len());
        for c in listed {
            let mut status = match self.runtime.container_status(&c.id).await {
                Ok(s) => s,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            if status.state() == api::ContainerState::ContainerExited && status.message.is_empty() {
                status.message = termination::message(&status).unwrap_or_default();
            }
            let meta = c.metadata.clone().unwrap_or_default();
            containers.push(ContainerInfo {
                name: c
                    .labels
                    .get(labels::CONTAINER_NAME)
                    .cloned()
                    .unwrap_or(meta.name),
                kind: if c.labels.get(labels::CONTAINER_TYPE).map(String::as_str) == Some("init") {
                    Kind::Init
                } else {
                    Kind::Regular
                },
                attempt: meta.attempt,
                sandbox_id: c.pod_sandbox_id,
                created_at: c.created_at,
                status,
            });
        }
        containers.sort_by_key(|c| std::cmp::Reverse((c.created_at, c.attempt)));
        Ok(PodRuntimeState {
            restarts_before: HashMap::new(),
            sandboxes,
            sandbox,
            sandbox_status,
            containers,
        })
    }

    fn sandbox_settings(&self, pod: &Pod) -> SandboxSettings<'_> {
        SandboxSettings {
            cluster_dns: &self.settings.cluster_dns,
            cluster_domain: &self.settings.cluster_domain,
            resolv_conf: self.settings.resolv_conf.as_deref(),
            pod_logs_dir: &self.settings.pod_logs_dir,
            cgroup_parent: cm::pod_cgroup_parent(
                self.settings.cgroup_driver,
                cm::qos_class(pod),
                &uid_of(pod),
            ),
        }
    }

    /// Makes one step toward the pod's spec; returns when the worker should look again
    /// even if nothing changes (a back-off ending), if ever.
    pub async fn sync_pod(&self, pod: &Pod, ws: &mut WorkerState) -> cri::Result<Option<Instant>> {
        let uid = uid_of(pod);
        let spec = pod.spec.clone().unwrap_or_default();
        let restart_policy = spec
            .restart_policy
            .as_deref()
            .unwrap_or("Always")
            .to_owned();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let mut state = self.state(&uid).await?;
        if matches!(phase, Some("Succeeded" | "Failed")) {
            // Terminal pods never run again.
            self.stop(&state, None, 0).await;
            return Ok(None);
        }
        if state.sandbox.is_none() {
            if restart_policy == "Never" && !state.containers.is_empty() {
                // Its containers ran and will not run again.
                return Ok(None);
            }
            self.stop(&state, None, 0).await;
            let attempt = state
                .sandboxes
                .first()
                .and_then(|s| s.metadata.as_ref())
                .map_or(0, |m| m.attempt + 1);
            let config = sandbox::sandbox_config(pod, attempt, &self.sandbox_settings(pod));
            let _ = std::fs::create_dir_all(&config.log_directory);
            if let Err(e) = self.runtime.run_pod_sandbox(config, "").await {
                tracing::warn!(pod = %pod_key(pod), error = %e, "failed to create pod sandbox");
                self.warn_once(
                    pod,
                    None,
                    ws,
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {e}"),
                );
                return Ok(Some(Instant::now() + Duration::from_secs(2)));
            }
            if !state.sandboxes.is_empty() {
                self.events.emit(
                    pod,
                    None,
                    events::NORMAL,
                    "SandboxChanged",
                    "Pod sandbox changed, it will be killed and re-created.".into(),
                );
            }
            // The old sandboxes and their dead containers go (containerd removes a
            // sandbox's containers with it); restart counts carry on from the status.
            for old in &state.sandboxes {
                if let Err(e) = self.runtime.remove_pod_sandbox(&old.id).await {
                    tracing::warn!(sandbox = %old.id, error = %e, "failed to remove old pod sandbox");
                }
            }
            state = self.state(&uid).await?;
        }
        state.restarts_before = previous_restarts(pod);
        let Some(current) = state.sandbox.clone() else {
            return Ok(Some(Instant::now() + Duration::from_secs(1)));
        };
        let attempt = current.metadata.as_ref().map_or(0, |m| m.attempt);
        let sandbox_config = sandbox::sandbox_config(pod, attempt, &self.sandbox_settings(pod));
        let fields = PodFields {
            pod_ip: state
                .sandbox_status
                .as_ref()
                .and_then(|s| s.network.as_ref())
                .map(|n| n.ip.clone())
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| self.settings.host_ip.to_string()),
            host_ip: self.settings.host_ip.to_string(),
            node_name: self.settings.node_name.clone(),
        };
        let volume_paths = match self.volumes.prepare(pod, &fields).await {
            Ok(prepared) => prepared,
            Err(message) => {
                tracing::warn!(pod = %pod_key(pod), error = %message, "unable to set up volumes");
                self.warn_once(pod, None, ws, "FailedMount", message.clone());
                let all = spec
                    .init_containers
                    .iter()
                    .flatten()
                    .chain(&spec.containers);
                for c in all {
                    if state.instances(&c.name).is_empty() {
                        ws.reasons.insert(
                            c.name.clone(),
                            ("ContainerCreating".into(), message.clone()),
                        );
                    }
                }
                return Ok(Some(Instant::now() + Duration::from_secs(2)));
            }
        };
        let etc_hosts = match volumes::write_etc_hosts(
            &self.settings.root_dir,
            pod,
            &fields.pod_ip,
            &self.settings.cluster_domain,
        ) {
            Ok(path) => path,
            Err(message) => {
                self.warn_once(pod, None, ws, "FailedMount", message);
                return Ok(Some(Instant::now() + Duration::from_secs(2)));
            }
        };
        let qos = cm::qos_class(pod);
        let start = StartContext {
            etc_hosts: etc_hosts.as_deref(),
            pod,
            sandbox_id: &current.id,
            sandbox_config: &sandbox_config,
            fields: &fields,
            volume_paths: &volume_paths,
            qos,
        };
        // Volumes whose sources change (ConfigMaps, Secrets, tokens) are refreshed on
        // the next sync.
        let mut wake: Option<Instant> = volume_paths.resync_at;
        for c in spec.init_containers.iter().flatten() {
            let instances = state.instances(&c.name);
            match instances.first() {
                Some(i) if i.status.state() == api::ContainerState::ContainerExited => {
                    if i.status.exit_code == 0 {
                        continue;
                    }
                    if restart_policy == "Never" {
                        return Ok(None);
                    }
                    if let Some(at) = self.restart(&start, c, Kind::Init, &state, ws).await {
                        wake = Some(at);
                    }
                    return Ok(wake);
                }
                Some(_) => return Ok(None),
                None => {
                    let started = self
                        .start(&start, c, Kind::Init, state.next_attempt(&c.name), ws)
                        .await;
                    return Ok((!started).then(|| Instant::now() + Duration::from_secs(2)));
                }
            }
        }
        for c in &spec.containers {
            let instances = state.instances(&c.name);
            match instances.first() {
                None => {
                    if !self
                        .start(&start, c, Kind::Regular, state.next_attempt(&c.name), ws)
                        .await
                    {
                        wake = earliest(wake, Instant::now() + Duration::from_secs(2));
                    }
                }
                Some(i) => match i.status.state() {
                    api::ContainerState::ContainerRunning => {
                        ws.reasons.remove(&c.name);
                        let id = i.status.id.clone();
                        let ran_for = Duration::from_nanos(
                            u64::try_from(wall_now_nanos().saturating_sub(i.status.started_at))
                                .unwrap_or(0),
                        );
                        let started_at = Instant::now()
                            .checked_sub(ran_for)
                            .unwrap_or_else(Instant::now);
                        let pod_ip = fields.pod_ip.parse().ok();
                        if let Some(at) = ws
                            .probes
                            .run_due(&*self.runtime, &id, c, started_at, pod_ip)
                            .await
                        {
                            wake = earliest(wake, at);
                        }
                        if ws.probes.verdict(&id, c).restart {
                            let grace = spec.termination_grace_period_seconds.unwrap_or(30);
                            tracing::info!(pod = %pod_key(pod), container = %c.name, "container failed its probe, will be restarted");
                            let message = format!(
                                "Container {} failed liveness probe, will be restarted",
                                c.name
                            );
                            self.kill_container(pod, c, &id, pod_ip, grace, message)
                                .await;
                            wake = earliest(wake, Instant::now());
                        }
                    }
                    api::ContainerState::ContainerExited => {
                        let restart = match restart_policy.as_str() {
                            "Never" => false,
                            "OnFailure" => i.status.exit_code != 0,
                            _ => true,
                        };
                        if restart {
                            if let Some(at) =
                                self.restart(&start, c, Kind::Regular, &state, ws).await
                            {
                                wake = earliest(wake, at);
                            }
                        } else {
                            ws.reasons.remove(&c.name);
                        }
                    }
                    api::ContainerState::ContainerCreated
                    | api::ContainerState::ContainerUnknown => {
                        // Created but never started (a kubelet restart in between):
                        // replace it.
                        let _ = self.runtime.remove_container(&i.status.id).await;
                        self.start(&start, c, Kind::Regular, state.next_attempt(&c.name), ws)
                            .await;
                    }
                },
            }
        }
        let live: Vec<&str> = state
            .containers
            .iter()
            .filter(|c| c.status.state() == api::ContainerState::ContainerRunning)
            .map(|c| c.status.id.as_str())
            .collect();
        ws.probes.retain(&live);
        Ok(wake)
    }

    /// Restarts an exited container unless it is backing off; when it is, the instant
    /// the back-off ends.
    async fn restart(
        &self,
        start: &StartContext<'_>,
        c: &Container,
        kind: Kind,
        state: &PodRuntimeState,
        ws: &mut WorkerState,
    ) -> Option<Instant> {
        let instances = state.instances(&c.name);
        let latest = instances.first()?;
        let finished = latest.status.finished_at;
        if let Some(delay) = ws.backoff.get(&c.name).copied() {
            let since = Duration::from_nanos(
                u64::try_from(wall_now_nanos().saturating_sub(finished)).unwrap_or(0),
            );
            if since < delay {
                let pod = start.pod;
                self.warn_once(
                    pod,
                    Some(&c.name),
                    ws,
                    "BackOff",
                    format!(
                        "Back-off {} restarting failed container {} in pod {}_{}({})",
                        component_base::options::format_duration(delay),
                        c.name,
                        pod.metadata.name.as_deref().unwrap_or_default(),
                        pod.metadata.namespace.as_deref().unwrap_or_default(),
                        uid_of(pod),
                    ),
                );
                ws.reasons.insert(
                    c.name.clone(),
                    (
                        "CrashLoopBackOff".into(),
                        format!(
                            "back-off {} restarting failed container={} pod={}_{}({})",
                            component_base::options::format_duration(delay),
                            c.name,
                            pod.metadata.name.as_deref().unwrap_or_default(),
                            pod.metadata.namespace.as_deref().unwrap_or_default(),
                            uid_of(pod),
                        ),
                    ),
                );
                return Some(Instant::now() + (delay - since));
            }
            // A container that ran well for twice the longest back-off starts afresh.
            let ran = Duration::from_nanos(
                u64::try_from(finished.saturating_sub(latest.status.started_at)).unwrap_or(0),
            );
            let next = if ran > BACKOFF_MAX * 2 {
                BACKOFF_INITIAL
            } else {
                (delay * 2).min(BACKOFF_MAX)
            };
            ws.backoff.insert(c.name.clone(), next);
        } else {
            ws.backoff.insert(c.name.clone(), BACKOFF_INITIAL);
        }
        if self
            .start(start, c, kind, state.next_attempt(&c.name), ws)
            .await
        {
            // Keep the instance just replaced (lastState); older ones go.
            for old in instances.iter().skip(1) {
                let _ = self.runtime.remove_container(&old.status.id).await;
            }
            None
        } else {
            Some(Instant::now() + Duration::from_secs(2))
        }
    }

    /// A warning event, unless the same one was the last of its kind.
    fn warn_once(
        &self,
        pod: &Pod,
        container: Option<&str>,
        ws: &mut WorkerState,
        reason: &str,
        message: String,
    ) {
        let key = (reason.to_owned(), container.unwrap_or_default().to_owned());
        if ws.warned.get(&key) != Some(&message) {
            self.events
                .emit(pod, container, events::WARNING, reason, message.clone());
            ws.warned.insert(key, message);
        }
    }

    /// Holds the container back for `reason` (its waiting state) and records why.
    fn fail(&self, pod: &Pod, c: &Container, ws: &mut WorkerState, reason: &str, message: String) {
        self.warn_once(
            pod,
            Some(&c.name),
            ws,
            "Failed",
            format!("Error: {reason}: {message}"),
        );
        ws.reasons
            .insert(c.name.clone(), (reason.to_owned(), message));
    }

    /// Pulls the image as the policy says, creates and starts the container; records why
    /// not in `ws.reasons` on failure.
    async fn start(
        &self,
        start: &StartContext<'_>,
        c: &Container,
        kind: Kind,
        attempt: u32,
        ws: &mut WorkerState,
    ) -> bool {
        let image = match self.ensure_image(start.pod, c, start.sandbox_config).await {
            Ok(image) => image,
            Err((reason, message)) => {
                self.fail(start.pod, c, ws, &reason, message);
                return false;
            }
        };
        let sources = match self.env_sources(start.pod, c).await {
            Ok(s) => s,
            Err(message) => {
                self.fail(start.pod, c, ws, "CreateContainerConfigError", message);
                return false;
            }
        };
        let mounts = match volumes::mounts(c, start.volume_paths) {
            Ok(m) => m,
            Err(message) => {
                self.fail(start.pod, c, ws, "CreateContainerConfigError", message);
                return false;
            }
        };
        let mut config = match container::container_config(
            start.pod,
            c,
            kind,
            attempt,
            &container::Inputs {
                image_ref: &image,
                fields: start.fields,
                sources: &sources,
                qos: start.qos,
            },
        ) {
            Ok(config) => config,
            Err(message) => {
                self.fail(start.pod, c, ws, "CreateContainerConfigError", message);
                return false;
            }
        };
        config.mounts = mounts;
        match termination::prepare(
            &self.settings.root_dir,
            start.pod,
            c,
            attempt,
            &config.mounts,
        ) {
            Ok(mount) => config.mounts.extend(mount),
            Err(e) => {
                let message = format!("creating the termination message file: {e}");
                self.fail(start.pod, c, ws, "CreateContainerConfigError", message);
                return false;
            }
        }
        if let Some(hosts) = start.etc_hosts {
            if !config
                .mounts
                .iter()
                .any(|m| m.container_path == "/etc/hosts")
            {
                config.mounts.push(api::Mount {
                    container_path: "/etc/hosts".into(),
                    host_path: hosts.to_string_lossy().into_owned(),
                    ..Default::default()
                });
            }
        }
        let id = match self
            .runtime
            .create_container(start.sandbox_id, config, start.sandbox_config.clone())
            .await
        {
            Ok(id) => {
                self.events.emit(
                    start.pod,
                    Some(&c.name),
                    events::NORMAL,
                    "Created",
                    format!("Created container: {}", c.name),
                );
                id
            }
            Err(e) => {
                self.fail(start.pod, c, ws, "CreateContainerError", e.to_string());
                return false;
            }
        };
        if let Err(e) = self.runtime.start_container(&id).await {
            self.fail(start.pod, c, ws, "RunContainerError", e.to_string());
            let _ = self.runtime.remove_container(&id).await;
            return false;
        }
        self.events.emit(
            start.pod,
            Some(&c.name),
            events::NORMAL,
            "Started",
            format!("Started container {}", c.name),
        );
        ws.reasons.remove(&c.name);
        ws.warned.retain(|(_, name), _| *name != c.name);
        if let Some(hook) = lifecycle::handler(c, lifecycle::Hook::PostStart) {
            let pod_ip = start.fields.pod_ip.parse().ok();
            if let Err(message) = lifecycle::run(
                &*self.runtime,
                &id,
                start.pod,
                c,
                hook,
                pod_ip,
                lifecycle::POST_START_EXEC_TIMEOUT,
            )
            .await
            {
                // Upstream: the container is killed (its preStop hook runs) and restarts
                // per restartPolicy; the instance exists, so the caller goes on as after
                // a start and the next sync sees it exited.
                tracing::warn!(pod = %pod_key(start.pod), container = %c.name, error = %message, "postStart hook failed");
                self.events.emit(
                    start.pod,
                    Some(&c.name),
                    events::WARNING,
                    "FailedPostStartHook",
                    message.clone(),
                );
                self.kill_container(
                    start.pod,
                    c,
                    &id,
                    pod_ip,
                    termination_grace(start.pod),
                    "FailedPostStartHook".into(),
                )
                .await;
                ws.reasons
                    .insert(c.name.clone(), ("PostStartHookError".into(), message));
            }
        }
        true
    }

    /// Stops one running container as upstream's `killContainer`: a Killing event, its
    /// preStop hook (if any, and if there is a grace period) bounded by `grace` seconds,
    /// then StopContainer with what is left of the grace period (at least
    /// [`lifecycle::MIN_GRACE_SECONDS`] after a hook).
    pub async fn kill_container(
        &self,
        pod: &Pod,
        c: &Container,
        id: &str,
        pod_ip: Option<std::net::IpAddr>,
        grace: i64,
        message: String,
    ) {
        self.events
            .emit(pod, Some(&c.name), events::NORMAL, "Killing", message);
        let mut grace = grace.max(0);
        if let Some(hook) = lifecycle::handler(c, lifecycle::Hook::PreStop).filter(|_| grace > 0) {
            let bound = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
            let began = Instant::now();
            let run = lifecycle::run(&*self.runtime, id, pod, c, hook, pod_ip, bound);
            match tokio::time::timeout(bound, run).await {
                Ok(Ok(())) => {}
                Ok(Err(message)) => {
                    tracing::warn!(pod = %pod_key(pod), container = %c.name, error = %message, "preStop hook failed");
                    // Not the handler's message: it may show secrets (upstream's too).
                    self.events.emit(
                        pod,
                        Some(&c.name),
                        events::WARNING,
                        "FailedPreStopHook",
                        "PreStopHook failed".into(),
                    );
                }
                Err(_) => {
                    tracing::info!(pod = %pod_key(pod), container = %c.name, grace, "preStop hook not completed in the grace period");
                }
            }
            grace = lifecycle::grace_after_pre_stop(grace, began.elapsed());
        }
        if let Err(e) = self.runtime.stop_container(id, grace).await {
            if !e.is_not_found() {
                tracing::warn!(container = %id, error = %e, "failed to stop container");
            }
        }
    }

    /// Reads the ConfigMaps and Secrets the container's environment refers to.
    async fn env_sources(&self, pod: &Pod, c: &Container) -> Result<EnvSources, String> {
        let (config_maps, secrets) = EnvSources::wanted(c);
        let mut sources = EnvSources::default();
        if config_maps.is_empty() && secrets.is_empty() {
            return Ok(sources);
        }
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        for name in config_maps {
            let data = cms
                .get_opt(&name)
                .await
                .map_err(|e| format!("reading configmap \"{name}\": {e}"))?
                .map(|cm| cm.data.unwrap_or_default());
            sources.config_maps.insert(name, data);
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        for name in secrets {
            let data = api
                .get_opt(&name)
                .await
                .map_err(|e| format!("reading secret \"{name}\": {e}"))?
                .map(|s| {
                    let mut data: BTreeMap<String, String> = s
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                        .collect();
                    data.extend(s.string_data.unwrap_or_default());
                    data
                });
            sources.secrets.insert(name, data);
        }
        Ok(sources)
    }

    /// The image reference to create the container from, pulling per imagePullPolicy.
    async fn ensure_image(
        &self,
        pod: &Pod,
        c: &Container,
        sandbox_config: &api::PodSandboxConfig,
    ) -> Result<String, (String, String)> {
        let image = c.image.clone().unwrap_or_default();
        if image.is_empty() {
            return Err((
                "InvalidImageName".into(),
                "the container has no image".into(),
            ));
        }
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            let tagged = image
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':') && !last.ends_with(":latest"));
            if tagged || image.contains('@') {
                "IfNotPresent".into()
            } else {
                "Always".into()
            }
        });
        let present = if policy == "Always" {
            None
        } else {
            self.images
                .image_status(&image)
                .await
                .map_err(|e| ("ErrImagePull".to_owned(), e.to_string()))?
        };
        match (present, policy.as_str()) {
            (Some(found), _) => {
                self.events.emit(
                    pod,
                    Some(&c.name),
                    events::NORMAL,
                    "Pulled",
                    format!("Container image \"{image}\" already present on machine"),
                );
                Ok(found.id)
            }
            (None, "Never") => Err((
                "ErrImageNeverPull".into(),
                format!("Container image \"{image}\" is not present with pull policy of Never"),
            )),
            (None, _) => {
                let started = Instant::now();
                let id = self
                    .images
                    .pull_image(&image, Some(sandbox_config.clone()))
                    .await
                    .map_err(|e| ("ErrImagePull".to_owned(), e.to_string()))?;
                self.events.emit(
                    pod,
                    Some(&c.name),
                    events::NORMAL,
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image}\" in {:.3}s",
                        started.elapsed().as_secs_f64()
                    ),
                );
                Ok(id)
            }
        }
    }

    /// Stops every running container and then every sandbox of the pod: with `pod`, as
    /// [`Self::kill_container`] (a Killing event, the preStop hook, then SIGTERM and
    /// SIGKILL after the grace left), else SIGTERM and SIGKILL after `grace` seconds; all
    /// containers at once.
    pub async fn stop(&self, state: &PodRuntimeState, pod: Option<&Pod>, grace: i64) {
        let pod_ip = state
            .sandbox_status
            .as_ref()
            .and_then(|s| s.network.as_ref())
            .and_then(|n| n.ip.parse().ok())
            .or(Some(self.settings.host_ip));
        let running = state
            .containers
            .iter()
            .filter(|c| c.status.state() != api::ContainerState::ContainerExited);
        futures::future::join_all(running.map(|c| async move {
            let spec = pod
                .filter(|_| c.status.state() == api::ContainerState::ContainerRunning)
                .and_then(|p| container_spec(p, &c.name, c.kind).map(|s| (p, s)));
            match spec {
                Some((pod, spec)) => {
                    let message = format!("Stopping container {}", c.name);
                    self.kill_container(pod, spec, &c.status.id, pod_ip, grace, message)
                        .await;
                }
                None => {
                    if let Err(e) = self.runtime.stop_container(&c.status.id, grace).await {
                        if !e.is_not_found() {
                            tracing::warn!(container = %c.status.id, error = %e, "failed to stop container");
                        }
                    }
                }
            }
        }))
        .await;
        for s in &state.sandboxes {
            if s.state() == api::PodSandboxState::SandboxReady {
                if let Err(e) = self.runtime.stop_pod_sandbox(&s.id).await {
                    tracing::warn!(sandbox = %s.id, error = %e, "failed to stop pod sandbox");
                }
            }
        }
    }

    /// Stops the pod and removes its containers, sandboxes, cgroups and logs.
    pub async fn kill_and_remove(
        &self,
        uid: &str,
        pod: Option<&Pod>,
        grace: i64,
    ) -> cri::Result<()> {
        let state = self.state(uid).await?;
        self.stop(&state, pod, grace).await;
        for c in &state.containers {
            match self.runtime.remove_container(&c.status.id).await {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        let mut log_dirs = Vec::new();
        for s in &state.sandboxes {
            if let Some(m) = &s.metadata {
                log_dirs.push(sandbox::log_directory(
                    &self.settings.pod_logs_dir,
                    &m.namespace,
                    &m.name,
                    &m.uid,
                ));
            }
            match self.runtime.remove_pod_sandbox(&s.id).await {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        cm::remove_pod_cgroups_within(self.settings.cgroup_driver, uid, Duration::from_secs(2))
            .await;
        self.volumes.remove(uid);
        for dir in log_dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(())
    }
}

/// The restart counts of the containers that ran, from the pod's status.
fn previous_restarts(pod: &Pod) -> HashMap<String, u32> {
    let Some(status) = &pod.status else {
        return HashMap::new();
    };
    status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .filter(|c| c.container_id.is_some())
        .map(|c| (c.name.clone(), u32::try_from(c.restart_count).unwrap_or(0)))
        .collect()
}

/// The container `name` of `kind` in the pod's spec.
fn container_spec<'a>(pod: &'a Pod, name: &str, kind: Kind) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    match kind {
        Kind::Init => spec
            .init_containers
            .as_ref()?
            .iter()
            .find(|c| c.name == name),
        Kind::Regular => spec.containers.iter().find(|c| c.name == name),
    }
}

/// The pod's grace period for killing one of its containers (upstream
/// `setTerminationGracePeriod`): the deletion's, else the spec's (default 30 s).
fn termination_grace(pod: &Pod) -> i64 {
    pod.metadata
        .deletion_grace_period_seconds
        .or(pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30)
}

fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// `namespace/name`, for logs.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

struct StartContext<'a> {
    pod: &'a Pod,
    sandbox_id: &'a str,
    sandbox_config: &'a api::PodSandboxConfig,
    fields: &'a PodFields,
    volume_paths: &'a volumes::Prepared,
    /// The kubelet-managed /etc/hosts to mount, if any.
    etc_hosts: Option<&'a Path>,
    qos: cm::QosClass,
}
