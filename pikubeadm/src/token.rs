//! Bootstrap tokens and node join (kubeadm's `token create` and `join` discovery):
//! - [`create`] writes a `bootstrap.kubernetes.io/token` Secret `bootstrap-token-<id>` in
//!   kube-system (`<id>.<secret>`, `[a-z0-9]{6}.[a-z0-9]{16}`, with an expiration, usages
//!   and extra groups) and makes sure the `cluster-info` ConfigMap in kube-public holds the
//!   cluster's address and CA, which joining nodes read before they trust anything;
//! - [`discover`] is the joining side: it reads `cluster-info` without credentials over a
//!   connection it does not trust yet, accepts the CA in it only if its public-key hash is
//!   the pinned `sha256:<hex>` (`--discovery-token-ca-cert-hash`), checks that the server
//!   now verifies against that CA, and writes the bootstrap kubeconfig (the address, the
//!   pinned CA, the token) the kubelet's TLS bootstrap starts from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ObjectMeta, PostParams};
use rand::Rng as _;

/// kubeadm's default extra group of node bootstrap tokens.
pub const DEFAULT_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
const TOKEN_CHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid token {0:?}: expected [a-z0-9]{{6}}.[a-z0-9]{{16}}")]
    Token(String),
    #[error("invalid --discovery-token-ca-cert-hash {0:?}: expected sha256:<64 hex digits>")]
    Hash(String),
    #[error("reading kubeconfig {path}: {reason}")]
    Kubeconfig { path: PathBuf, reason: String },
    #[error("talking to the apiserver: {0}")]
    Api(#[source] kube::Error),
    #[error("the cluster-info ConfigMap is unusable: {0}")]
    ClusterInfo(String),
    #[error("the cluster CA's public key hash {actual} is not the pinned {pinned}")]
    HashMismatch { actual: String, pinned: String },
    #[error(transparent)]
    Write(#[from] crate::pki::Error),
}

/// A new random token.
pub fn generate() -> String {
    let mut rng = rand::rng();
    let mut part = |n: usize| -> String {
        (0..n)
            .map(|_| TOKEN_CHARS[rng.random_range(0..TOKEN_CHARS.len())] as char)
            .collect()
    };
    let id = part(6);
    let secret = part(16);
    format!("{id}.{secret}")
}

/// Splits `<id>.<secret>`, checking the format.
pub fn parse(token: &str) -> Result<(&str, &str), Error> {
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| TOKEN_CHARS.contains(&b));
    match token.split_once('.') {
        Some((id, secret)) if ok(id, 6) && ok(secret, 16) => Ok((id, secret)),
        _ => Err(Error::Token(token.to_string())),
    }
}

/// `sha256:<hex>` of the SubjectPublicKeyInfo of the first certificate in `ca_pem`.
pub fn ca_cert_hash(ca_pem: &[u8]) -> Option<String> {
    let der = api_types::validation::certificates::pem_block(ca_pem, "CERTIFICATE").ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("sha256:{hex}"))
}

/// The cluster of a kubeconfig's current context: its server and CA (PEM).
pub fn cluster_of(path: &Path) -> Result<(String, Vec<u8>), Error> {
    let bad = |reason: String| Error::Kubeconfig {
        path: path.to_path_buf(),
        reason,
    };
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
    let context = kc
        .current_context
        .as_deref()
        .and_then(|n| kc.contexts.iter().find(|c| c.name == n))
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| bad("no current context".into()))?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| bad(format!("no cluster {:?}", context.cluster)))?;
    let server = cluster
        .server
        .clone()
        .ok_or_else(|| bad("the cluster has no server".into()))?;
    let ca = if let Some(data) = cluster.certificate_authority_data.as_deref() {
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| bad(format!("certificate-authority-data: {e}")))?
    } else if let Some(file) = cluster.certificate_authority.as_deref() {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::read(dir.join(file)).map_err(|e| bad(format!("{file}: {e}")))?
    } else {
        return Err(bad("the cluster has no certificate authority".into()));
    };
    Ok((server, ca))
}

/// What `token create` writes.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub token: String,
    /// None: never expires (`--ttl 0`).
    pub ttl: Option<Duration>,
    pub description: Option<String>,
    pub usages: Vec<String>,
    pub groups: Vec<String>,
}

/// A bootstrap-token kubeconfig (what `kubeadm join` writes as bootstrap-kubelet.conf).
pub fn bootstrap_kubeconfig(server: &str, ca_pem: &[u8], token: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "kubernetes", "cluster": { "server": server, "certificate-authority-data": b64 } }],
        "contexts": [{ "name": "tls-bootstrap-token-user@kubernetes", "context": { "cluster": "kubernetes", "user": "tls-bootstrap-token-user" } }],
        "current-context": "tls-bootstrap-token-user@kubernetes",
        "users": [{ "name": "tls-bootstrap-token-user", "user": { "token": token } }],
    })
    .to_string()
}

/// Creates the token's Secret and makes sure `cluster-info` names `server` and `ca_pem`.
pub async fn create(
    client: kube::Client,
    spec: &TokenSpec,
    server: &str,
    ca_pem: &[u8],
) -> Result<(), Error> {
    let (id, secret) = parse(&spec.token)?;
    let mut data = BTreeMap::from([
        ("token-id".to_string(), id.to_string()),
        ("token-secret".to_string(), secret.to_string()),
    ]);
    if let Some(ttl) = spec.ttl {
        let expires = jiff::Timestamp::now()
            + jiff::SignedDuration::from_secs(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2));
        let expires = expires.round(jiff::Unit::Second).unwrap_or(expires);
        data.insert("expiration".into(), expires.to_string());
    }
    if let Some(d) = &spec.description {
        data.insert("description".into(), d.clone());
    }
    for usage in &spec.usages {
        data.insert(format!("usage-bootstrap-{usage}"), "true".into());
    }
    if !spec.groups.is_empty() {
        data.insert("auth-extra-groups".into(), spec.groups.join(","));
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(format!("bootstrap-token-{id}")),
            namespace: Some("kube-system".into()),
            ..ObjectMeta::default()
        },
        type_: Some("bootstrap.kubernetes.io/token".into()),
        string_data: Some(data),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), "kube-system")
        .create(&PostParams::default(), &secret)
        .await
        .map_err(Error::Api)?;

    let info = ConfigMap {
        metadata: ObjectMeta {
            name: Some("cluster-info".into()),
            namespace: Some("kube-public".into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "kubeconfig".to_string(),
            cluster_info_kubeconfig(server, ca_pem),
        )])),
        ..ConfigMap::default()
    };
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-public");
    let written = match maps.create(&PostParams::default(), &info).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let mut current = maps.get("cluster-info").await.map_err(Error::Api)?;
            current.data = info.data;
            maps.replace("cluster-info", &PostParams::default(), &current)
                .await
                .map(|_| ())
                .map_err(Error::Api)
        }
        Err(e) => Err(Error::Api(e)),
    };
    written?;
    ensure_join_rbac(client).await
}

/// The RBAC objects kubeadm creates so that a node can join under `Node,RBAC`: bootstrap
/// tokens may create CSRs (`system:node-bootstrapper`) and have them auto-approved
/// (`…:nodeclient`), nodes may renew their own (`…:selfnodeclient`), and anyone may read
/// `cluster-info` (the joining node trusts nothing yet). Existing objects are kept.
async fn ensure_join_rbac(client: kube::Client) -> Result<(), Error> {
    use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding};
    let binding = |name: &str, role: &str, group: &str| -> ClusterRoleBinding {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}],
        }))
        .expect("a valid ClusterRoleBinding")
    };
    let bindings = [
        binding(
            "kubeadm:kubelet-bootstrap",
            "system:node-bootstrapper",
            "system:bootstrappers",
        ),
        binding(
            "kubeadm:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            "system:bootstrappers",
        ),
        binding(
            "kubeadm:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            "system:nodes",
        ),
    ];
    let api: Api<ClusterRoleBinding> = Api::all(client.clone());
    for b in &bindings {
        create_if_missing(&api, b).await?;
    }
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "kubeadm:bootstrap-signer-clusterinfo", "namespace": "kube-public"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cluster-info"], "verbs": ["get"]}],
    }))
    .expect("a valid Role");
    create_if_missing(
        &Api::<Role>::namespaced(client.clone(), "kube-public"),
        &role,
    )
    .await?;
    let role_binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "kubeadm:bootstrap-signer-clusterinfo", "namespace": "kube-public"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kubeadm:bootstrap-signer-clusterinfo"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:anonymous"}],
    }))
    .expect("a valid RoleBinding");
    create_if_missing(
        &Api::<RoleBinding>::namespaced(client, "kube-public"),
        &role_binding,
    )
    .await
}

async fn create_if_missing<K>(api: &Api<K>, obj: &K) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(Error::Api(e)),
    }
}

/// kubeadm's cluster-info kubeconfig: one cluster, no users.
fn cluster_info_kubeconfig(server: &str, ca_pem: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "", "cluster": { "server": server, "certificate-authority-data": b64 } }],
        "contexts": [],
        "users": [],
    })
    .to_string()
}

/// The line a new node runs to join.
pub fn join_command(server: &str, token: &str, ca_hash: &str) -> String {
    format!("pikubeadm join {server} --token {token} --discovery-token-ca-cert-hash {ca_hash}")
}

/// The joining side: finds the CA through `cluster-info`, pins it by `ca_hash`, checks the
/// server against it and returns the bootstrap kubeconfig to write.
pub async fn discover(server: &str, token: &str, ca_hash: &str) -> Result<String, Error> {
    parse(token)?;
    let pinned = ca_hash.to_ascii_lowercase();
    let hex = pinned.strip_prefix("sha256:").unwrap_or("");
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Hash(ca_hash.to_string()));
    }
    let url: http::Uri = server
        .parse()
        .map_err(|e: http::uri::InvalidUri| Error::ClusterInfo(e.to_string()))?;
    // Not trusted yet: nothing secret goes over this connection (no token), and what it
    // returns is believed only if the CA matches the pin.
    let mut insecure = kube::Config::new(url.clone());
    insecure.accept_invalid_certs = true;
    let client = kube::Client::try_from(insecure).map_err(Error::Api)?;
    let info = Api::<ConfigMap>::namespaced(client, "kube-public")
        .get("cluster-info")
        .await
        .map_err(Error::Api)?;
    let text = info
        .data
        .as_ref()
        .and_then(|d| d.get("kubeconfig"))
        .ok_or_else(|| Error::ClusterInfo("no kubeconfig key".into()))?;
    let kc: kube::config::Kubeconfig =
        serde_yaml::from_str(text).map_err(|e| Error::ClusterInfo(e.to_string()))?;
    let ca_b64 = kc
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority_data.clone())
        .ok_or_else(|| Error::ClusterInfo("no certificate-authority-data".into()))?;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(ca_b64.trim())
        .map_err(|e| Error::ClusterInfo(e.to_string()))?;
    let actual =
        ca_cert_hash(&ca).ok_or_else(|| Error::ClusterInfo("the CA does not parse".into()))?;
    if actual != pinned {
        return Err(Error::HashMismatch { actual, pinned });
    }
    // The pinned CA must verify the server we talk to from now on.
    let kubeconfig = bootstrap_kubeconfig(server, &ca, token);
    let kc: kube::config::Kubeconfig =
        serde_yaml::from_str(&kubeconfig).map_err(|e| Error::ClusterInfo(e.to_string()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| Error::ClusterInfo(e.to_string()))?;
    let client = kube::Client::try_from(config).map_err(Error::Api)?;
    client.apiserver_version().await.map_err(Error::Api)?;
    Ok(kubeconfig)
}

/// Writes the bootstrap kubeconfig (0600).
pub fn write_bootstrap_kubeconfig(path: &Path, text: &str) -> Result<(), Error> {
    crate::pki::write_file(path, text.as_bytes(), 0o600)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_hashes() {
        let t = generate();
        let (id, secret) = parse(&t).unwrap();
        assert_eq!((id.len(), secret.len()), (6, 16));
        assert!(parse("ABCDEF.0123456789abcdef").is_err());
        assert!(parse("abcdef0123456789abcdef").is_err());
        assert!(parse("abcde.0123456789abcdef").is_err());
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(vec![])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let hash = ca_cert_hash(ca.pem().as_bytes()).unwrap();
        assert!(hash.starts_with("sha256:") && hash.len() == 71, "{hash}");
        let line = join_command("https://10.0.0.1:6443", &t, &hash);
        assert!(line.contains(&format!("--token {t}")) && line.ends_with(&hash));
    }
}
