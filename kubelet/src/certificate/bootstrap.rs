//! TLS bootstrap (upstream `pkg/kubelet/certificate/bootstrap.LoadClientCert`): before the
//! kubelet starts, it makes sure `--kubeconfig` holds a usable client identity.
//! 1. `--kubeconfig` exists and its client certificate has not expired (or it uses no
//!    certificate at all): it is used as it is.
//! 2. `<cert-dir>/kubelet-client-current.pem` holds a valid certificate and key: a
//!    kubeconfig pointing at it is written.
//! 3. Otherwise, with `--bootstrap-kubeconfig` (a bootstrap token, usually): a new key, a
//!    CSR for `system:node:<name>` to the kube-apiserver-client-kubelet signer, the wait
//!    for its certificate, `kubelet-client-current.pem` (certificate and key, 0600), and the
//!    kubeconfig — the bootstrap kubeconfig's cluster with the new certificate as user.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use component_base::options::KubeconfigOptions;

use super::{node_request, request_certificate, usable, write_private, Error, CURRENT_PEM};

/// Upstream waits an hour for the bootstrap certificate.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct Config {
    /// `--kubeconfig`: read if usable, (re)written otherwise.
    pub kubeconfig: PathBuf,
    /// `--bootstrap-kubeconfig`.
    pub bootstrap_kubeconfig: PathBuf,
    /// `--cert-dir`.
    pub cert_dir: PathBuf,
    pub node_name: String,
    /// How long to wait for the certificate.
    pub timeout: Duration,
}

/// Which identity the kubelet ends up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `--kubeconfig` was usable.
    Existing,
    /// The certificate already in `--cert-dir`.
    FromCertDir,
    /// A certificate obtained with the bootstrap credentials.
    Bootstrapped,
}

/// Ensures `config.kubeconfig` is usable, bootstrapping a client certificate if needed.
pub async fn load_client_cert(config: &Config) -> Result<Outcome, Error> {
    if kubeconfig_usable(&config.kubeconfig) {
        return Ok(Outcome::Existing);
    }
    let current = config.cert_dir.join(CURRENT_PEM);
    if std::fs::read(&current).is_ok_and(|pem| usable(&pem)) {
        write_kubeconfig(config, &current)?;
        tracing::info!(path = %current.display(), "using the client certificate in the certificate directory");
        return Ok(Outcome::FromCertDir);
    }
    let bootstrap = KubeconfigOptions {
        kubeconfig: Some(config.bootstrap_kubeconfig.clone()),
        ..KubeconfigOptions::default()
    };
    let client = bootstrap
        .client("kubelet")
        .await
        .map_err(|e| Error::Client {
            path: config.bootstrap_kubeconfig.clone(),
            reason: e.to_string(),
        })?;
    let (key, request) = node_request(&config.node_name)?;
    let cert = request_certificate(client, &request, config.timeout).await?;
    let mut pem = cert;
    if !pem.ends_with('\n') {
        pem.push('\n');
    }
    pem.push_str(&key.serialize_pem());
    write_private(&current, pem.as_bytes())?;
    write_kubeconfig(config, &current)?;
    tracing::info!(node = %config.node_name, path = %current.display(), "client certificate issued (TLS bootstrap)");
    Ok(Outcome::Bootstrapped)
}

/// Reads the bytes of a kubeconfig field given as base64 data or as a file path (relative
/// paths are relative to the kubeconfig's directory).
fn data_or_file(dir: &Path, data: Option<&str>, file: Option<&str>) -> Option<Vec<u8>> {
    if let Some(d) = data.filter(|d| !d.is_empty()) {
        return base64::engine::general_purpose::STANDARD
            .decode(d.trim())
            .ok();
    }
    let file = file.filter(|f| !f.is_empty())?;
    std::fs::read(dir.join(file)).ok()
}

/// Upstream's `isClientConfigStillValid`: the file loads, and a client certificate, if it
/// has one, is within its validity.
fn kubeconfig_usable(path: &Path) -> bool {
    let Ok(kc) = kube::config::Kubeconfig::read_from(path) else {
        return false;
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let Some(user) = current_user(&kc) else {
        return false;
    };
    let cert = data_or_file(
        dir,
        user.client_certificate_data.as_deref(),
        user.client_certificate.as_deref(),
    );
    let has_cert_ref = user.client_certificate_data.is_some() || user.client_certificate.is_some();
    match cert {
        Some(pem) => {
            let now = jiff::Timestamp::now().as_second();
            super::validity(&pem).is_some_and(|(nb, na)| nb <= now && now < na)
        }
        None => !has_cert_ref,
    }
}

fn current_context(kc: &kube::config::Kubeconfig) -> Option<&kube::config::Context> {
    let name = kc.current_context.as_deref()?;
    kc.contexts
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.context.as_ref())
}

fn current_user(kc: &kube::config::Kubeconfig) -> Option<&kube::config::AuthInfo> {
    let user = current_context(kc)?.user.as_deref()?;
    kc.auth_infos
        .iter()
        .find(|a| a.name == user)
        .and_then(|a| a.auth_info.as_ref())
}

/// The kubeconfig the kubelet runs with: the bootstrap kubeconfig's cluster, the client
/// certificate and key in `pem_path` (upstream's `writeKubeconfigFromBootstrapping`).
fn write_kubeconfig(config: &Config, pem_path: &Path) -> Result<(), Error> {
    let bad = |reason: String| Error::Kubeconfig {
        path: config.bootstrap_kubeconfig.clone(),
        reason,
    };
    let kc = kube::config::Kubeconfig::read_from(&config.bootstrap_kubeconfig)
        .map_err(|e| bad(e.to_string()))?;
    let cluster_name = current_context(&kc)
        .map(|c| c.cluster.clone())
        .ok_or_else(|| bad("no current context".into()))?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| bad(format!("no cluster {cluster_name:?}")))?;
    let server = cluster
        .server
        .clone()
        .ok_or_else(|| bad("the cluster has no server".into()))?;
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let mut text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: default-cluster\n  cluster:\n    server: {}\n",
        q(&server)
    );
    let bootstrap_dir = config
        .bootstrap_kubeconfig
        .parent()
        .unwrap_or(Path::new("."));
    if let Some(ca) = cluster.certificate_authority_data.as_deref() {
        text.push_str(&format!("    certificate-authority-data: {}\n", q(ca)));
    } else if let Some(ca) = cluster.certificate_authority.as_deref() {
        let ca = bootstrap_dir.join(ca);
        text.push_str(&format!(
            "    certificate-authority: {}\n",
            q(&ca.to_string_lossy())
        ));
    }
    if let Some(name) = cluster.tls_server_name.as_deref() {
        text.push_str(&format!("    tls-server-name: {}\n", q(name)));
    }
    let pem = q(&pem_path.to_string_lossy());
    text.push_str(&format!(
        "contexts:\n- name: default-context\n  context:\n    cluster: default-cluster\n    namespace: default\n    user: default-auth\ncurrent-context: default-context\nusers:\n- name: default-auth\n  user:\n    client-certificate: {pem}\n    client-key: {pem}\n"
    ));
    write_private(&config.kubeconfig, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(dir: &Path, days: i64) -> PathBuf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x".into()]).unwrap();
        let now = rcgen::date_time_ymd(2020, 1, 1);
        params.not_before = if days > 0 {
            time_now() - std::time::Duration::from_secs(60)
        } else {
            now
        };
        params.not_after = if days > 0 {
            time_now() + std::time::Duration::from_secs(days as u64 * 86400)
        } else {
            rcgen::date_time_ymd(2021, 1, 1)
        };
        let cert = params.self_signed(&key).unwrap();
        let path = dir.join(format!("cert{days}.pem"));
        std::fs::write(&path, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
        path
    }

    fn time_now() -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
    }

    #[test]
    fn kubeconfig_from_the_bootstrap_cluster_and_validity() {
        let dir = tempfile::tempdir().unwrap();
        let bootstrap = dir.path().join("bootstrap.conf");
        std::fs::write(
            &bootstrap,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://10.0.0.1:6443\n    certificate-authority-data: Zm9v\ncontexts:\n- name: b\n  context:\n    cluster: c\n    user: tok\ncurrent-context: b\nusers:\n- name: tok\n  user:\n    token: abcdef.0123456789abcdef\n",
        )
        .unwrap();
        let config = Config {
            kubeconfig: dir.path().join("kubelet.conf"),
            bootstrap_kubeconfig: bootstrap.clone(),
            cert_dir: dir.path().join("pki"),
            node_name: "pi-1".into(),
            timeout: Duration::from_secs(1),
        };
        assert!(!kubeconfig_usable(&config.kubeconfig), "missing");
        // A token kubeconfig is usable as it is.
        assert!(kubeconfig_usable(&bootstrap));
        let good = self_signed(dir.path(), 30);
        write_kubeconfig(&config, &good).unwrap();
        assert!(kubeconfig_usable(&config.kubeconfig));
        let kc = kube::config::Kubeconfig::read_from(&config.kubeconfig).unwrap();
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.0.0.1:6443"));
        assert_eq!(cluster.certificate_authority_data.as_deref(), Some("Zm9v"));
        let user = current_user(&kc).unwrap();
        assert_eq!(
            user.client_certificate.as_deref(),
            Some(good.to_str().unwrap())
        );
        assert_eq!(user.client_key.as_deref(), Some(good.to_str().unwrap()));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&config.kubeconfig)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Expired: not usable.
        let expired = self_signed(dir.path(), 0);
        write_kubeconfig(&config, &expired).unwrap();
        assert!(!kubeconfig_usable(&config.kubeconfig));
        assert!(usable(&std::fs::read(&good).unwrap()));
        assert!(!usable(&std::fs::read(&expired).unwrap()));
    }
}
