//! Container lifecycle hooks (upstream `pkg/kubelet/lifecycle/handlers.go` and the hook
//! calls in `kuberuntime_container.go`): a `postStart` handler runs right after its
//! container started, a `preStop` handler before the container is stopped, within the
//! termination grace period. Handlers exec a command in the container (CRI ExecSync),
//! GET a URL over HTTP, or sleep; they share the probes' exec and httpGet code.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};

use crate::cri::RuntimeService;
use crate::prober;

/// The shortest grace a container gets to stop after its preStop hook (upstream's
/// `minimumGracePeriodInSeconds`), so a hook that used the whole grace period does not
/// turn the stop into an immediate SIGKILL.
pub const MIN_GRACE_SECONDS: i64 = 2;

/// How long a postStart exec may run: upstream sets no bound of its own, the CRI call
/// ends at the runtime request timeout (`--runtime-request-timeout`, 2 minutes).
pub const POST_START_EXEC_TIMEOUT: Duration = Duration::from_secs(120);

/// The two hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    PostStart,
    PreStop,
}

/// The handler of `hook` of a container, if it has one.
pub fn handler(c: &Container, hook: Hook) -> Option<&LifecycleHandler> {
    let lifecycle = c.lifecycle.as_ref()?;
    match hook {
        Hook::PostStart => lifecycle.post_start.as_ref(),
        Hook::PreStop => lifecycle.pre_stop.as_ref(),
    }
}

/// The grace period StopContainer gets after a preStop hook that took `hook_took` of
/// `grace` seconds (upstream `killContainer`: the whole seconds the hook took come off,
/// but never below [`MIN_GRACE_SECONDS`]).
pub fn grace_after_pre_stop(grace: i64, hook_took: Duration) -> i64 {
    let took = i64::try_from(hook_took.as_secs()).unwrap_or(i64::MAX);
    grace.saturating_sub(took).max(MIN_GRACE_SECONDS)
}

/// `name_namespace(uid)`, as upstream's `format.Pod` in hook messages.
fn pod_desc(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// Runs `handler` for container `c` (runtime id `id`) of `pod`; an exec runs at most
/// `exec_timeout`. Err: the message upstream's handler runner gives (the
/// FailedPostStartHook event carries it).
pub async fn run(
    runtime: &dyn RuntimeService,
    id: &str,
    pod: &Pod,
    c: &Container,
    handler: &LifecycleHandler,
    pod_ip: Option<IpAddr>,
    exec_timeout: Duration,
) -> Result<(), String> {
    if handler.tcp_socket.is_some() {
        // Deprecated in hooks: kept in the API for compatibility, never run. Alone it
        // leaves no handler to run, and fails below as upstream's.
        tracing::warn!(container = %c.name, pod = %pod_desc(pod), "tcpSocket is not supported as a lifecycle handler, ignoring it");
    }
    if let Some(exec) = &handler.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        return prober::run_exec(runtime, id, cmd.clone(), exec_timeout)
            .await
            .map_err(|e| {
                format!(
                    "Exec lifecycle hook ({cmd:?}) for Container {:?} in Pod {:?} failed - error: {e}",
                    c.name,
                    pod_desc(pod)
                )
            });
    }
    if let Some(get) = &handler.http_get {
        let path = get.path.clone().unwrap_or_default();
        let fail = |e: String| {
            format!(
                "HTTP lifecycle hook ({path}) for Container {:?} in Pod {:?} failed - error: {e}",
                c.name,
                pod_desc(pod)
            )
        };
        if get.scheme.as_deref().is_some_and(|s| s != "HTTP") {
            return Err(fail(format!(
                "scheme {:?} is not supported by this kubelet",
                get.scheme.as_deref().unwrap_or_default()
            )));
        }
        let addr = prober::http_target(c, get, pod_ip).map_err(fail)?;
        let headers = get.http_headers.clone().unwrap_or_default();
        return prober::http_get(addr, &path, &headers, prober::LIFECYCLE_USER_AGENT)
            .await
            .map(|_| ())
            .map_err(fail);
    }
    if let Some(sleep) = &handler.sleep {
        let seconds = u64::try_from(sleep.seconds).unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        return Ok(());
    }
    Err("Cannot run handler: invalid handler: no exec, httpGet or sleep action".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_time_comes_off_the_grace_period_down_to_two_seconds() {
        // A quick hook leaves the grace as it was (whole seconds count, as upstream).
        assert_eq!(grace_after_pre_stop(30, Duration::from_millis(300)), 30);
        assert_eq!(grace_after_pre_stop(30, Duration::from_millis(5900)), 25);
        // A hook that took (nearly) all of it leaves the minimum.
        assert_eq!(grace_after_pre_stop(10, Duration::from_secs(9)), 2);
        assert_eq!(grace_after_pre_stop(10, Duration::from_secs(10)), 2);
        // Cut off after the grace period, or worse, still the minimum.
        assert_eq!(grace_after_pre_stop(10, Duration::from_secs(400)), 2);
        assert_eq!(grace_after_pre_stop(1, Duration::ZERO), 2);
        assert_eq!(grace_after_pre_stop(i64::MAX, Duration::MAX), 2);
    }

    #[test]
    fn handlers_by_hook() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "lifecycle": {"preStop": {"sleep": {"seconds": 3}}}
        }))
        .unwrap();
        assert!(handler(&c, Hook::PostStart).is_none());
        assert_eq!(
            handler(&c, Hook::PreStop)
                .and_then(|h| h.sleep.as_ref())
                .map(|s| s.seconds),
            Some(3)
        );
        let plain: Container = serde_json::from_value(serde_json::json!({"name": "c"})).unwrap();
        assert!(handler(&plain, Hook::PreStop).is_none());
    }
}
