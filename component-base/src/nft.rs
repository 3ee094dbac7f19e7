//! One nftables transaction: a script piped to `nft -f -`, applied atomically or not at
//! all (what upstream's knftables does). The kubelet's pod masquerade table and
//! kube-proxy's tables are written this way.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("running {binary}: {source}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    #[error("nft -f - failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
}

/// Runs `binary -f -` with `script` on its stdin.
pub async fn apply(binary: &Path, script: &str) -> Result<(), Error> {
    let spawn_err = |source| Error::Spawn {
        binary: binary.display().to_string(),
        source,
    };
    let mut child = tokio::process::Command::new(binary)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(spawn_err)?;
    }
    let out = child.wait_with_output().await.map_err(spawn_err)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Failed {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}
