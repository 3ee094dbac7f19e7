//! One shutdown signal per process: SIGTERM or SIGINT, or a programmatic trigger (tests).

use tokio::sync::watch;

/// Sends the shutdown signal. Dropping it does not shut anything down.
#[derive(Clone, Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Observes the shutdown signal; cheap to clone into every task.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and signal.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// A signal that never fires.
    pub fn never() -> Self {
        let (tx, rx) = watch::channel(false);
        // Keep the sender alive forever so `signaled` keeps waiting.
        std::mem::forget(tx);
        Shutdown(rx)
    }

    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once shutdown was requested (or the trigger is gone).
    pub async fn signaled(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }
}

/// A shutdown signal fired by SIGTERM or SIGINT.
pub fn from_os_signals() -> Shutdown {
    let (trigger, shutdown) = channel();
    tokio::spawn(async move {
        wait_for_os_signal().await;
        tracing::info!("received termination signal, shutting down");
        crate::systemd::stopping();
        trigger.shutdown();
    });
    shutdown
}

#[cfg(unix)]
async fn wait_for_os_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_os_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trigger_reaches_every_clone() {
        let (trigger, shutdown) = channel();
        let mut a = shutdown.clone();
        let mut b = shutdown;
        assert!(!a.is_shutdown());
        let waiter = tokio::spawn(async move {
            b.signaled().await;
            b.is_shutdown()
        });
        trigger.shutdown();
        a.signaled().await;
        assert!(a.is_shutdown());
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn never_does_not_fire() {
        let mut never = Shutdown::never();
        let fired =
            tokio::time::timeout(std::time::Duration::from_millis(20), never.signaled()).await;
        assert!(fired.is_err());
        assert!(!never.is_shutdown());
    }
}
