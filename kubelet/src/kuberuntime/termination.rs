//! Termination messages (upstream `kuberuntime_container.go`): each container instance
//! gets an empty file of its own under `<root-dir>/pods/<uid>/containers/<name>/`, mounted
//! at its `terminationMessagePath`; once the container exits the kubelet reports what it
//! wrote there (at most 4 KiB) as `state.terminated.message`. With the policy
//! `FallbackToLogsOnError`, a container that failed and wrote nothing reports the end of
//! its log instead (its last 80 lines, at most 2 KiB).

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::cri::api;
use crate::logs::{LogOptions, Renderer};

/// Annotations on the container, so its status can be read without the pod spec (the
/// same keys as upstream).
pub const PATH_ANNOTATION: &str = "io.kubernetes.container.terminationMessagePath";
pub const POLICY_ANNOTATION: &str = "io.kubernetes.container.terminationMessagePolicy";

/// Upstream's bounds: the file is read up to 4 KiB; the log fallback is its last 80
/// lines, at most 2 KiB.
pub const MAX_MESSAGE_BYTES: u64 = 4096;
pub const MAX_LOG_LINES: usize = 80;
pub const MAX_LOG_BYTES: usize = 2048;

/// Creates the host file for instance `attempt` of `container` and returns its mount;
/// None when the container has no path, or a volume is mounted there already.
pub fn prepare(
    root_dir: &Path,
    pod: &Pod,
    container: &Container,
    attempt: u32,
    mounts: &[api::Mount],
) -> std::io::Result<Option<api::Mount>> {
    let Some(path) = container
        .termination_message_path
        .as_deref()
        .filter(|p| !p.is_empty())
    else {
        return Ok(None);
    };
    if mounts.iter().any(|m| m.container_path == path) {
        return Ok(None);
    }
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let dir = crate::volumes::pod_dir(root_dir, uid)
        .join("containers")
        .join(&container.name);
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!("{attempt:08x}"));
    std::fs::write(&file, b"")?;
    // Any user in the container may write its message.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666))?;
    Ok(Some(api::Mount {
        container_path: path.to_owned(),
        host_path: file.to_string_lossy().into_owned(),
        ..Default::default()
    }))
}

/// The annotations that tell [`message`] where to look.
pub fn annotations(container: &Container) -> [(String, String); 2] {
    [
        (
            PATH_ANNOTATION.to_owned(),
            container
                .termination_message_path
                .clone()
                .unwrap_or_default(),
        ),
        (
            POLICY_ANNOTATION.to_owned(),
            container
                .termination_message_policy
                .clone()
                .unwrap_or_else(|| "File".into()),
        ),
    ]
}

/// The termination message of an exited container: what it wrote to its message file,
/// else (policy `FallbackToLogsOnError`, non-zero exit) the end of its log. None when
/// there is nothing to report.
pub fn message(status: &api::ContainerStatus) -> Option<String> {
    let path = status
        .annotations
        .get(PATH_ANNOTATION)
        .filter(|p| !p.is_empty());
    let written = path
        .and_then(|path| status.mounts.iter().find(|m| &m.container_path == path))
        .and_then(|m| read_head(Path::new(&m.host_path)))
        .filter(|m| !m.is_empty());
    if written.is_some() {
        return written;
    }
    let fallback = status
        .annotations
        .get(POLICY_ANNOTATION)
        .map(String::as_str)
        == Some("FallbackToLogsOnError");
    if fallback && status.exit_code != 0 && !status.log_path.is_empty() {
        return log_tail(Path::new(&status.log_path)).filter(|m| !m.is_empty());
    }
    None
}

/// How long after a container's exit its log may still be growing: containerd's CRI
/// plugin reports the exit once the container's pipes are drained, but its log writer
/// may not have written the last lines to the file yet.
pub const LOG_SETTLE: Duration = Duration::from_secs(2);

/// When a message taken from the log of this exited container should be read again,
/// because the container exited less than [`LOG_SETTLE`] ago; None when it is final.
pub fn reread_at(status: &api::ContainerStatus, now_nanos: i64) -> Option<Instant> {
    let from_log = status.state() == api::ContainerState::ContainerExited
        && status.exit_code != 0
        && status
            .annotations
            .get(POLICY_ANNOTATION)
            .is_some_and(|p| p == "FallbackToLogsOnError");
    if !from_log || status.finished_at <= 0 {
        return None;
    }
    let since = u64::try_from(now_nanos.saturating_sub(status.finished_at)).unwrap_or(0);
    let left = LOG_SETTLE.checked_sub(Duration::from_nanos(since))?;
    Some(Instant::now() + left)
}

fn read_head(path: &Path) -> Option<String> {
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_MESSAGE_BYTES)
        .read_to_end(&mut buf)
        .ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// The last [`MAX_LOG_LINES`] lines of a CRI log file, at most [`MAX_LOG_BYTES`] (the
/// end is kept).
fn log_tail(path: &Path) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    // 80 lines of at most 2 KiB of content are within the file's last 64 KiB unless the
    // lines are long, in which case only their ends matter anyway.
    let start = len.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut data = Vec::new();
    file.read_to_end(&mut data).ok()?;
    if start > 0 {
        // Drop the first, probably cut, line.
        let cut = data
            .iter()
            .position(|b| *b == b'\n')
            .map_or(data.len(), |i| i + 1);
        data.drain(..cut);
    }
    let mut renderer = Renderer::new(LogOptions {
        tail_lines: Some(MAX_LOG_LINES),
        ..LogOptions::default()
    });
    let out = renderer.render(&data, true);
    let keep = out.len().saturating_sub(MAX_LOG_BYTES);
    Some(String::from_utf8_lossy(&out[keep..]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn status(dir: &Path, policy: &str, exit_code: i32) -> api::ContainerStatus {
        api::ContainerStatus {
            exit_code,
            annotations: HashMap::from([
                (
                    PATH_ANNOTATION.to_owned(),
                    "/dev/termination-log".to_owned(),
                ),
                (POLICY_ANNOTATION.to_owned(), policy.to_owned()),
            ]),
            mounts: vec![api::Mount {
                container_path: "/dev/termination-log".into(),
                host_path: dir.join("msg").to_string_lossy().into_owned(),
                ..Default::default()
            }],
            log_path: dir.join("0.log").to_string_lossy().into_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn message_from_file_then_logs_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = String::new();
        for i in 0..100 {
            log.push_str(&format!(
                "2026-12-02T00:00:00.000000000Z stdout F line {i}\n"
            ));
        }
        std::fs::write(dir.path().join("0.log"), &log).unwrap();
        std::fs::write(dir.path().join("msg"), "").unwrap();

        // Nothing written: File reports nothing, the fallback the log's last 80 lines.
        assert_eq!(message(&status(dir.path(), "File", 1)), None);
        let tail = message(&status(dir.path(), "FallbackToLogsOnError", 1)).unwrap();
        assert!(tail.starts_with("line 20\n"), "{tail}");
        assert!(tail.ends_with("line 99\n"), "{tail}");
        // A clean exit never falls back.
        assert_eq!(
            message(&status(dir.path(), "FallbackToLogsOnError", 0)),
            None
        );

        // What the container wrote wins, cut at 4 KiB.
        std::fs::write(dir.path().join("msg"), "x".repeat(5000)).unwrap();
        let written = message(&status(dir.path(), "FallbackToLogsOnError", 1)).unwrap();
        assert_eq!(written.len(), 4096);
    }

    #[test]
    fn a_log_message_is_read_again_until_the_log_settles() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_000_000_000_000i64;
        let exited = |policy: &str, code: i32, finished_at: i64| {
            let mut s = status(dir.path(), policy, code);
            s.state = api::ContainerState::ContainerExited as i32;
            s.finished_at = finished_at;
            s
        };
        let before = Instant::now();
        let at = reread_at(&exited("FallbackToLogsOnError", 2, now - 500_000_000), now).unwrap();
        assert!(
            at >= before + Duration::from_millis(1400),
            "{:?}",
            at - before
        );
        assert!(at <= Instant::now() + Duration::from_millis(1500));
        // Settled, a clean exit, or the policy File: final.
        assert_eq!(
            reread_at(
                &exited("FallbackToLogsOnError", 2, now - 3_000_000_000),
                now
            ),
            None
        );
        assert_eq!(
            reread_at(&exited("FallbackToLogsOnError", 0, now), now),
            None
        );
        assert_eq!(reread_at(&exited("File", 2, now), now), None);
    }

    #[test]
    fn log_fallback_keeps_the_last_two_kib() {
        let dir = tempfile::tempdir().unwrap();
        let long = "y".repeat(1000);
        let mut log = String::new();
        for i in 0..5 {
            log.push_str(&format!("2026-12-02T00:00:00Z stderr F {i}{long}\n"));
        }
        std::fs::write(dir.path().join("0.log"), &log).unwrap();
        let tail = message(&status(dir.path(), "FallbackToLogsOnError", 2)).unwrap();
        assert_eq!(tail.len(), MAX_LOG_BYTES);
        assert!(tail.ends_with(&format!("4{long}\n")));
    }
}
