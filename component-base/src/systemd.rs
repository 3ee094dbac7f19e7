//! systemd's service notification protocol for `Type=notify` units (`sd_notify(3)`): a
//! daemon says READY=1 once it serves, so units ordered after it start when it can answer,
//! and STOPPING=1 when it begins shutting down. Outside systemd (no `NOTIFY_SOCKET`) both
//! do nothing.

use sd_notify::NotifyState;

fn notify(state: NotifyState<'_>, what: &str) {
    if let Err(e) = sd_notify::notify(false, &[state]) {
        tracing::warn!(error = %e, "telling systemd the daemon is {what}");
    }
}

/// READY=1: the daemon serves.
pub fn ready() {
    notify(NotifyState::Ready, "ready");
}

/// STOPPING=1: the daemon is shutting down.
pub fn stopping() {
    notify(NotifyState::Stopping, "stopping");
}
