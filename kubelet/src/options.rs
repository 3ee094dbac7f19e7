//! The kubelet's command line, with upstream's flag names, and the
//! `kubelet.config.k8s.io/v1beta1` KubeletConfiguration file (`--config`) for the fields
//! both carry. As upstream, a flag given on the command line wins over the file, and the
//! file wins over the default. The kubelet port's authentication and authorization
//! defaults differ by source, as upstream's: open with flags only, secure with a file.
//! The result is a validated [`crate::app::Settings`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use component_base::options::{parse_duration, KubeconfigOptions};
use k8s_openapi::api::core::v1::Taint;
use serde::Deserialize;

use crate::app::{CgroupDriver, Settings};
use crate::server::{AuthSettings, AuthorizationMode};

pub const DEFAULT_RUNTIME_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";
pub const DEFAULT_POD_INFRA_IMAGE: &str = "registry.k8s.io/pause:3.10";
pub const DEFAULT_PORT: u16 = 10250;
pub const DEFAULT_HEALTHZ_PORT: u16 = 10248;
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";

#[derive(Parser, Debug, Clone)]
#[command(name = "kubelet", version = component_base::options::KUBERNETES_VERSION,
    about = "The kubelet: the primary node agent. It registers the node and runs the pods bound to it.")]
pub struct Options {
    /// Path to a KubeletConfiguration file (kubelet.config.k8s.io/v1beta1). Flags given on
    /// the command line override its values. With a file, the kubelet port's defaults are
    /// the file's secure ones (no anonymous requests, TokenReview, Webhook authorization);
    /// without one, the flags' (anonymous requests, AlwaysAllow).
    #[arg(long)]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub kubeconfig: KubeconfigOptions,

    /// Path to a kubeconfig file used to get a client certificate for the kubelet (TLS
    /// bootstrap). If --kubeconfig does not exist or its certificate expired, the kubelet
    /// requests one with these credentials, writes it to --cert-dir and writes
    /// --kubeconfig pointing at it.
    #[arg(long)]
    pub bootstrap_kubeconfig: Option<PathBuf>,

    /// The directory where the TLS certificates are located (the bootstrapped client
    /// certificate: kubelet-client-current.pem).
    #[arg(long, default_value = "/var/lib/kubelet/pki")]
    pub cert_dir: PathBuf,

    /// Auto rotate the kubelet client certificate by requesting a new certificate from
    /// the apiserver as the certificate approaches expiration.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true,
        default_missing_value = "true", action = clap::ArgAction::Set)]
    pub rotate_certificates: bool,

    /// If non-empty, use this string as identification instead of the actual hostname.
    #[arg(long)]
    pub hostname_override: Option<String>,

    /// IP address of the node. If unset, the address of the interface of the default route.
    #[arg(long)]
    pub node_ip: Option<IpAddr>,

    /// Labels to add when registering the node (key=val,key2=val2).
    #[arg(long, value_delimiter = ',')]
    pub node_labels: Vec<String>,

    /// Register the node with these taints (key=value:Effect, comma separated).
    #[arg(long, value_delimiter = ',')]
    pub register_with_taints: Vec<String>,

    /// The endpoint of the CRI runtime (unix socket).
    #[arg(long)]
    pub container_runtime_endpoint: Option<String>,

    /// The image whose network/ipc namespaces containers in each pod will use.
    #[arg(long)]
    pub pod_infra_container_image: Option<String>,

    /// Directory path for managing kubelet files.
    #[arg(long, default_value = "/var/lib/kubelet")]
    pub root_dir: PathBuf,

    /// Path to the directory (or file) of static pod manifests.
    #[arg(long)]
    pub pod_manifest_path: Option<PathBuf>,

    /// Driver that the kubelet uses to manipulate cgroups on the host (cgroupfs or systemd).
    #[arg(long)]
    pub cgroup_driver: Option<String>,

    /// Number of Pods that can run on this kubelet.
    #[arg(long)]
    pub max_pods: Option<u32>,

    /// Hard eviction thresholds (e.g. memory.available<100Mi,nodefs.available<10%):
    /// pods are evicted when met; they also reduce allocatable.
    #[arg(long)]
    pub eviction_hard: Option<String>,

    /// How long a pressure condition stays after its eviction threshold was last met.
    #[arg(long)]
    pub eviction_pressure_transition_period: Option<String>,

    /// Minimum amount freed beyond a met threshold before it counts as resolved
    /// (e.g. memory.available=0Mi,nodefs.available=500Mi).
    #[arg(long)]
    pub eviction_minimum_reclaim: Option<String>,

    /// Comma-separated list of DNS server IP addresses for pods with dnsPolicy ClusterFirst.
    #[arg(long, value_delimiter = ',')]
    pub cluster_dns: Vec<IpAddr>,

    /// Domain for this cluster; containers search it in addition to the host's domains.
    #[arg(long)]
    pub cluster_domain: Option<String>,

    /// Resolver configuration file used as the basis for the container DNS resolution
    /// configuration ("" for none).
    #[arg(long)]
    pub resolv_conf: Option<PathBuf>,

    /// The CIDR to use for pod IP addresses when Node.spec.podCIDR is not set.
    #[arg(long)]
    pub pod_cidr: Option<ipnet::IpNet>,

    /// Where the kubelet writes the pod network's CNI configuration (containerd's
    /// cni.conf_dir).
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,

    /// The Linux bridge of the pod network (pikube; nodes sharing a network namespace need
    /// distinct ones).
    #[arg(long, default_value = "cni0")]
    pub cni_bridge_name: String,

    /// Keep one route per other Node's podCIDR via its InternalIP (host-gw) and masquerade
    /// pod traffic leaving the cluster (pikube; false for kubelets sharing a network
    /// namespace with another).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub pod_network_rules: bool,

    /// The IP address for the kubelet to serve on.
    #[arg(long)]
    pub address: Option<IpAddr>,

    /// The port for the kubelet to serve on (0 picks a free port).
    #[arg(long)]
    pub port: Option<u16>,

    /// The port of the localhost healthz endpoint (0 disables it).
    #[arg(long)]
    pub healthz_port: Option<u16>,

    /// The IP address for the healthz server to serve on.
    #[arg(long)]
    pub healthz_bind_address: Option<IpAddr>,

    /// File containing the x509 certificate for HTTPS on --port (CA certificates
    /// concatenated after it). Without it and --tls-private-key-file, a self-signed
    /// certificate is generated in <root-dir>/pki.
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,

    /// File containing the x509 private key matching --tls-cert-file.
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,

    /// Enables anonymous requests to the Kubelet server. Requests that are not rejected
    /// by another authentication method are treated as anonymous requests, with a
    /// username of system:anonymous and a group name of system:unauthenticated.
    /// [default: true; false with --config (authentication.anonymous.enabled)]
    #[arg(
        long,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set,
    )]
    pub anonymous_auth: Option<bool>,

    /// Use the TokenReview API to determine authentication for bearer tokens.
    /// [default: false; true with --config (authentication.webhook.enabled)]
    #[arg(
        long,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set,
    )]
    pub authentication_token_webhook: Option<bool>,

    /// The duration to cache responses from the webhook token authenticator.
    /// [default: 2m0s (authentication.webhook.cacheTTL)]
    #[arg(long, value_parser = parse_duration)]
    pub authentication_token_webhook_cache_ttl: Option<Duration>,

    /// If set, any request presenting a client certificate signed by one of the
    /// authorities in the client-ca-file is authenticated with an identity corresponding
    /// to the CommonName of the client certificate. (authentication.x509.clientCAFile)
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,

    /// Authorization mode for Kubelet server: AlwaysAllow or Webhook. Webhook mode uses
    /// the SubjectAccessReview API to determine authorization.
    /// [default: AlwaysAllow; Webhook with --config (authorization.mode)]
    #[arg(long)]
    pub authorization_mode: Option<String>,

    /// The duration to cache 'authorized' responses from the webhook authorizer.
    /// [default: 5m0s (authorization.webhook.cacheAuthorizedTTL)]
    #[arg(long, value_parser = parse_duration)]
    pub authorization_webhook_cache_authorized_ttl: Option<Duration>,

    /// The duration to cache 'unauthorized' responses from the webhook authorizer.
    /// [default: 30s (authorization.webhook.cacheUnauthorizedTTL)]
    #[arg(long, value_parser = parse_duration)]
    pub authorization_webhook_cache_unauthorized_ttl: Option<Duration>,

    /// Timeout of all runtime requests except long running ones (pull, logs, exec).
    #[arg(long)]
    pub runtime_request_timeout: Option<String>,

    /// How often the kubelet computes node status.
    #[arg(long)]
    pub node_status_update_frequency: Option<String>,

    /// Max period between synchronizing running containers and config (ConfigMap,
    /// Secret and downward API volumes).
    #[arg(long)]
    pub sync_frequency: Option<String>,

    /// Log verbosity (klog's -v).
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    pub verbosity: u8,
}

/// The KubeletConfiguration fields the kubelet reads; others are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletConfiguration {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub address: Option<IpAddr>,
    pub port: Option<u16>,
    pub healthz_port: Option<u16>,
    pub healthz_bind_address: Option<IpAddr>,
    #[serde(rename = "clusterDNS")]
    pub cluster_dns: Option<Vec<IpAddr>>,
    pub cluster_domain: Option<String>,
    pub resolv_conf: Option<PathBuf>,
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    pub max_pods: Option<u32>,
    pub cgroup_driver: Option<String>,
    pub static_pod_path: Option<PathBuf>,
    pub container_runtime_endpoint: Option<String>,
    pub runtime_request_timeout: Option<String>,
    pub node_status_update_frequency: Option<String>,
    pub node_status_report_frequency: Option<String>,
    pub node_lease_duration_seconds: Option<i32>,
    pub register_with_taints: Option<Vec<Taint>>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    pub pod_logs_dir: Option<PathBuf>,
    pub file_check_frequency: Option<String>,
    pub sync_frequency: Option<String>,
    pub eviction_hard: Option<BTreeMap<String, String>>,
    pub eviction_pressure_transition_period: Option<String>,
    pub eviction_minimum_reclaim: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub authentication: KubeletAuthentication,
    #[serde(default)]
    pub authorization: KubeletAuthorization,
}

/// Who may use the kubelet port (upstream's `authentication`); unset fields take the
/// file's defaults (see [`Options::resolve`]).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletAuthentication {
    #[serde(default)]
    pub x509: KubeletX509Authentication,
    #[serde(default)]
    pub webhook: KubeletWebhookAuthentication,
    #[serde(default)]
    pub anonymous: KubeletAnonymousAuthentication,
}

#[derive(Debug, Default, Deserialize)]
pub struct KubeletX509Authentication {
    #[serde(rename = "clientCAFile")]
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
pub struct KubeletWebhookAuthentication {
    pub enabled: Option<bool>,
    #[serde(rename = "cacheTTL")]
    pub cache_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct KubeletAnonymousAuthentication {
    pub enabled: Option<bool>,
}

/// How requests to the kubelet port are authorized (upstream's `authorization`).
#[derive(Debug, Default, Deserialize)]
pub struct KubeletAuthorization {
    pub mode: Option<String>,
    #[serde(default)]
    pub webhook: KubeletWebhookAuthorization,
}

#[derive(Debug, Default, Deserialize)]
pub struct KubeletWebhookAuthorization {
    #[serde(rename = "cacheAuthorizedTTL")]
    pub cache_authorized_ttl: Option<String>,
    #[serde(rename = "cacheUnauthorizedTTL")]
    pub cache_unauthorized_ttl: Option<String>,
}

impl KubeletConfiguration {
    pub fn parse(text: &str) -> Result<Self, String> {
        let c: KubeletConfiguration =
            serde_yaml::from_str(text).map_err(|e| format!("KubeletConfiguration: {e}"))?;
        match c.kind.as_deref() {
            Some("KubeletConfiguration") => {}
            other => return Err(format!("kind must be KubeletConfiguration, not {other:?}")),
        }
        match c.api_version.as_deref() {
            Some("kubelet.config.k8s.io/v1beta1" | "kubelet.config.k8s.io/v1") => Ok(c),
            other => Err(format!(
                "apiVersion must be kubelet.config.k8s.io/v1beta1, not {other:?}"
            )),
        }
    }
}

/// Parses `key=value:Effect` (or `key:Effect`) as upstream's `--register-with-taints`.
pub fn parse_taint(text: &str) -> Result<Taint, String> {
    let (kv, effect) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("invalid taint {text:?}: want key=value:Effect"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(format!(
            "invalid taint effect {effect:?} in {text:?}: want NoSchedule, PreferNoSchedule or NoExecute"
        ));
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_owned())),
        None => (kv, None),
    };
    api_types_key(key).map_err(|e| format!("invalid taint key {key:?}: {e}"))?;
    Ok(Taint {
        key: key.to_owned(),
        value,
        effect: effect.to_owned(),
        time_added: None,
    })
}

/// A label or taint key: an optional DNS prefix and a name of at most 63 characters.
fn api_types_key(key: &str) -> Result<(), String> {
    let name = key.rsplit_once('/').map_or(key, |(_, n)| n);
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > 63 || !name.chars().all(ok_char) {
        return Err("must be an optional prefix and a name of up to 63 alphanumeric, '-', '_' or '.' characters".into());
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err("must start and end with an alphanumeric character".into());
    }
    Ok(())
}

fn parse_labels(items: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for item in items.iter().filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("invalid --node-labels entry {item:?}: want key=value"))?;
        api_types_key(k).map_err(|e| format!("invalid node label key {k:?}: {e}"))?;
        labels.insert(k.to_owned(), v.to_owned());
    }
    Ok(labels)
}

/// The node name: `--hostname-override` or the machine's hostname, lower-cased as upstream.
pub fn node_name(hostname_override: Option<&str>) -> Result<String, String> {
    let name = match hostname_override.filter(|h| !h.trim().is_empty()) {
        Some(h) => h.trim().to_owned(),
        None => hostname::get()
            .map_err(|e| format!("reading the hostname: {e}"))?
            .to_string_lossy()
            .into_owned(),
    };
    let name = name.to_lowercase();
    if name.is_empty() {
        return Err("the node name is empty: set --hostname-override".into());
    }
    Ok(name)
}

impl Options {
    /// Reads the config file and validates everything; an error here exits with code 64.
    pub fn resolve(&self) -> Result<Settings, String> {
        let file = match &self.config {
            Some(path) => KubeletConfiguration::parse(
                &std::fs::read_to_string(path)
                    .map_err(|e| format!("reading {}: {e}", path.display()))?,
            )?,
            None => KubeletConfiguration::default(),
        };
        let duration =
            |flag: &Option<String>, file: &Option<String>, default: Duration, name| match flag
                .as_ref()
                .or(file.as_ref())
            {
                Some(text) => parse_duration(text).map_err(|e| format!("{name}: {e}")),
                None => Ok(default),
            };
        let cgroup_driver = match self
            .cgroup_driver
            .as_deref()
            .or(file.cgroup_driver.as_deref())
            .unwrap_or("cgroupfs")
        {
            "cgroupfs" => CgroupDriver::Cgroupfs,
            "systemd" => CgroupDriver::Systemd,
            other => {
                return Err(format!(
                    "invalid --cgroup-driver {other:?}: want cgroupfs or systemd"
                ))
            }
        };
        let pod_cidr = match (&self.pod_cidr, &file.pod_cidr) {
            (Some(c), _) => Some(*c),
            (None, Some(text)) if !text.is_empty() => Some(
                text.parse()
                    .map_err(|e| format!("invalid podCIDR {text:?}: {e}"))?,
            ),
            _ => None,
        };
        let mut taints = file.register_with_taints.clone().unwrap_or_default();
        for t in self.register_with_taints.iter().filter(|t| !t.is_empty()) {
            taints.push(parse_taint(t)?);
        }
        let max_pods = self.max_pods.or(file.max_pods).unwrap_or(110);
        if max_pods == 0 {
            return Err("--max-pods must be positive".into());
        }
        let address = self
            .address
            .or(file.address)
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let port = self.port.or(file.port).unwrap_or(DEFAULT_PORT);
        let healthz_port = self
            .healthz_port
            .or(file.healthz_port)
            .unwrap_or(DEFAULT_HEALTHZ_PORT);
        let healthz_bind = self
            .healthz_bind_address
            .or(file.healthz_bind_address)
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let endpoint = self
            .container_runtime_endpoint
            .clone()
            .or(file.container_runtime_endpoint.clone())
            .unwrap_or_else(|| DEFAULT_RUNTIME_ENDPOINT.into());
        crate::cri::remote::socket_path(&endpoint).map_err(|e| e.to_string())?;
        let cluster_domain = self
            .cluster_domain
            .clone()
            .or(file.cluster_domain.clone())
            .unwrap_or_default();
        let resolv_conf = self
            .resolv_conf
            .clone()
            .or(file.resolv_conf.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RESOLV_CONF));
        let resolv_conf = (!resolv_conf.as_os_str().is_empty()).then_some(resolv_conf);
        let cluster_dns = if self.cluster_dns.is_empty() {
            file.cluster_dns.clone().unwrap_or_default()
        } else {
            self.cluster_dns.clone()
        };
        if self.cni_bridge_name.is_empty() || self.cni_bridge_name.len() > 15 {
            return Err(format!(
                "invalid --cni-bridge-name {:?}: 1 to 15 characters",
                self.cni_bridge_name
            ));
        }
        let tls_cert_file = self.tls_cert_file.clone().or(file.tls_cert_file.clone());
        let tls_private_key_file = self
            .tls_private_key_file
            .clone()
            .or(file.tls_private_key_file.clone());
        if tls_cert_file.is_some() != tls_private_key_file.is_some() {
            return Err("--tls-cert-file and --tls-private-key-file go together".into());
        }
        let auth = self.auth_settings(&file)?;
        let lease_seconds = file.node_lease_duration_seconds.unwrap_or(40);
        if lease_seconds <= 0 {
            return Err("nodeLeaseDurationSeconds must be positive".into());
        }
        Ok(Settings {
            node_name: node_name(self.hostname_override.as_deref())?,
            node_ip: self.node_ip,
            node_labels: parse_labels(&self.node_labels)?,
            register_with_taints: taints,
            runtime_endpoint: endpoint,
            runtime_request_timeout: duration(
                &self.runtime_request_timeout,
                &file.runtime_request_timeout,
                Duration::from_secs(120),
                "--runtime-request-timeout",
            )?,
            pod_infra_container_image: self
                .pod_infra_container_image
                .clone()
                .unwrap_or_else(|| DEFAULT_POD_INFRA_IMAGE.into()),
            root_dir: self.root_dir.clone(),
            pod_logs_dir: file
                .pod_logs_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("/var/log/pods")),
            pod_manifest_path: self
                .pod_manifest_path
                .clone()
                .or(file.static_pod_path.clone()),
            file_check_frequency: duration(
                &None,
                &file.file_check_frequency,
                Duration::from_secs(20),
                "fileCheckFrequency",
            )?,
            cgroup_driver,
            max_pods,
            eviction_hard: match (&self.eviction_hard, &file.eviction_hard) {
                (Some(text), _) => crate::nodestatus::EvictionHard::parse(text)
                    .map_err(|e| format!("--eviction-hard: {e}"))?,
                (None, Some(map)) => crate::nodestatus::EvictionHard::from_map(map)
                    .map_err(|e| format!("evictionHard: {e}"))?,
                (None, None) => crate::nodestatus::EvictionHard::default(),
            },
            eviction_pressure_transition_period: duration(
                &self.eviction_pressure_transition_period,
                &file.eviction_pressure_transition_period,
                Duration::from_secs(300),
                "--eviction-pressure-transition-period",
            )?,
            eviction_minimum_reclaim: match (
                &self.eviction_minimum_reclaim,
                &file.eviction_minimum_reclaim,
            ) {
                (Some(text), _) => crate::eviction::thresholds::MinimumReclaim::parse(text)
                    .map_err(|e| format!("--eviction-minimum-reclaim: {e}"))?,
                (None, Some(map)) => crate::eviction::thresholds::MinimumReclaim::from_map(map)
                    .map_err(|e| format!("evictionMinimumReclaim: {e}"))?,
                (None, None) => crate::eviction::thresholds::MinimumReclaim::default(),
            },
            housekeeping_interval: Duration::from_secs(10),
            cluster_dns,
            cluster_domain,
            resolv_conf,
            pod_cidr,
            cni_conf_dir: self.cni_conf_dir.clone(),
            cni_bridge: self.cni_bridge_name.clone(),
            pod_network_rules: self.pod_network_rules,
            serving: Some(SocketAddr::new(address, port)),
            healthz: (healthz_port != 0).then(|| SocketAddr::new(healthz_bind, healthz_port)),
            tls_cert_file,
            tls_private_key_file,
            auth,
            node_status_update_frequency: duration(
                &self.node_status_update_frequency,
                &file.node_status_update_frequency,
                Duration::from_secs(10),
                "--node-status-update-frequency",
            )?,
            node_status_report_frequency: duration(
                &None,
                &file.node_status_report_frequency,
                Duration::from_secs(300),
                "nodeStatusReportFrequency",
            )?,
            node_lease_duration: Duration::from_secs(u64::from(lease_seconds.unsigned_abs())),
            sync_frequency: duration(
                &self.sync_frequency,
                &file.sync_frequency,
                crate::pod_workers::SYNC_FREQUENCY,
                "--sync-frequency",
            )?,
        })
    }

    /// The kubelet port's authentication and authorization. A flag given on the command
    /// line wins over the file. The defaults depend on where the configuration comes
    /// from, as upstream's: the flags' keep an unconfigured kubelet open (anonymous
    /// requests, AlwaysAllow), a KubeletConfiguration file's are the secure ones
    /// (no anonymous requests, TokenReview, Webhook).
    fn auth_settings(&self, file: &KubeletConfiguration) -> Result<AuthSettings, String> {
        let defaults = if self.config.is_some() {
            AuthSettings {
                anonymous: false,
                token_webhook: true,
                authorization_mode: AuthorizationMode::Webhook,
                ..AuthSettings::default()
            }
        } else {
            AuthSettings::default()
        };
        let authn = &file.authentication;
        let authz = &file.authorization;
        // A zero or empty value in the file means "unset", as upstream's defaulting.
        let ttl = |flag: Option<Duration>, text: &Option<String>, field, default| match (
            flag,
            text.as_deref().filter(|t| !t.is_empty()),
        ) {
            (Some(d), _) => Ok(d),
            (None, Some(text)) => parse_duration(text)
                .map(|d| if d.is_zero() { default } else { d })
                .map_err(|e| format!("{field}: {e}")),
            (None, None) => Ok(default),
        };
        let client_ca_file = self
            .client_ca_file
            .clone()
            .or(authn.x509.client_ca_file.clone())
            .filter(|p| !p.as_os_str().is_empty());
        if let Some(path) = &client_ca_file {
            component_base::options::validate_client_ca_file(path)?;
        }
        let authorization_mode = match (
            &self.authorization_mode,
            authz.mode.as_deref().filter(|m| !m.is_empty()),
        ) {
            (Some(flag), _) => flag.parse()?,
            (None, Some(mode)) => mode.parse().map_err(|_| {
                format!("invalid authorization.mode {mode:?}: want AlwaysAllow or Webhook")
            })?,
            (None, None) => defaults.authorization_mode,
        };
        Ok(AuthSettings {
            anonymous: self
                .anonymous_auth
                .or(authn.anonymous.enabled)
                .unwrap_or(defaults.anonymous),
            token_webhook: self
                .authentication_token_webhook
                .or(authn.webhook.enabled)
                .unwrap_or(defaults.token_webhook),
            token_webhook_cache_ttl: ttl(
                self.authentication_token_webhook_cache_ttl,
                &authn.webhook.cache_ttl,
                "authentication.webhook.cacheTTL",
                defaults.token_webhook_cache_ttl,
            )?,
            client_ca_file,
            authorization_mode,
            authorized_ttl: ttl(
                self.authorization_webhook_cache_authorized_ttl,
                &authz.webhook.cache_authorized_ttl,
                "authorization.webhook.cacheAuthorizedTTL",
                defaults.authorized_ttl,
            )?,
            unauthorized_ttl: ttl(
                self.authorization_webhook_cache_unauthorized_ttl,
                &authz.webhook.cache_unauthorized_ttl,
                "authorization.webhook.cacheUnauthorizedTTL",
                defaults.unauthorized_ttl,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        Options::try_parse_from(std::iter::once("kubelet").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?
            .resolve()
    }

    #[test]
    fn authentication_and_authorization_flags() {
        use crate::server::{AuthSettings, AuthorizationMode};
        let s = parse(&[]).unwrap();
        assert_eq!(s.auth, AuthSettings::default());
        assert!(s.auth.anonymous);
        assert!(!s.auth.token_webhook);
        assert_eq!(s.auth.authorization_mode, AuthorizationMode::AlwaysAllow);
        assert_eq!(s.auth.token_webhook_cache_ttl, Duration::from_secs(120));
        assert_eq!(s.auth.authorized_ttl, Duration::from_secs(300));
        assert_eq!(s.auth.unauthorized_ttl, Duration::from_secs(30));
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        let cert = rcgen::generate_simple_self_signed(vec!["ca".to_string()]).unwrap();
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let ca_flag = format!("--client-ca-file={}", ca.display());
        let s = parse(&[
            "--anonymous-auth=false",
            "--authentication-token-webhook",
            "--authorization-mode=Webhook",
            &ca_flag,
        ])
        .unwrap();
        assert!(!s.auth.anonymous);
        assert!(s.auth.token_webhook);
        assert_eq!(s.auth.authorization_mode, AuthorizationMode::Webhook);
        assert_eq!(s.auth.client_ca_file, Some(ca));
        let err = parse(&["--client-ca-file=/nonexistent/ca.crt"]).unwrap_err();
        assert!(
            err.starts_with("--client-ca-file /nonexistent/ca.crt: "),
            "{err}"
        );
        let err = parse(&["--authorization-mode=RBAC"]).unwrap_err();
        assert!(err.contains("want AlwaysAllow or Webhook"), "{err}");
    }

    #[test]
    fn upstream_flags_and_defaults() {
        let s = parse(&[
            "--kubeconfig=/etc/kubernetes/kubelet.conf",
            "--hostname-override=Pi-1",
            "--node-ip=10.0.0.5",
            "--node-labels=role=worker,zone=a",
            "--register-with-taints=dedicated=edge:NoSchedule,gpu:NoExecute",
            "--cluster-dns=10.96.0.10",
            "--cluster-domain=cluster.local",
            "--pod-cidr=10.244.1.0/24",
            "--eviction-hard=memory.available<200Mi,nodefs.available<5%",
        ])
        .unwrap();
        assert_eq!(
            s.eviction_hard.memory,
            crate::nodestatus::Threshold::Bytes(200 * 1024 * 1024)
        );
        assert_eq!(s.node_name, "pi-1");
        assert_eq!(s.node_ip, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(s.node_labels["role"], "worker");
        assert_eq!(s.register_with_taints.len(), 2);
        assert_eq!(s.register_with_taints[1].key, "gpu");
        assert_eq!(s.register_with_taints[1].value, None);
        assert_eq!(s.runtime_endpoint, DEFAULT_RUNTIME_ENDPOINT);
        assert_eq!(s.pod_infra_container_image, DEFAULT_POD_INFRA_IMAGE);
        assert_eq!(s.max_pods, 110);
        assert_eq!(s.cgroup_driver, CgroupDriver::Cgroupfs);
        assert_eq!(s.serving.unwrap().port(), 10250);
        assert_eq!(s.healthz.unwrap(), "127.0.0.1:10248".parse().unwrap());
        assert_eq!(s.root_dir, PathBuf::from("/var/lib/kubelet"));
        assert_eq!(s.node_lease_duration, Duration::from_secs(40));
        assert!(s.pod_network_rules);
        assert!(
            !parse(&["--pod-network-rules=false"])
                .unwrap()
                .pod_network_rules
        );
        assert_eq!(s.sync_frequency, Duration::from_secs(60));
        let s = parse(&["--sync-frequency=10s"]).unwrap();
        assert_eq!(s.sync_frequency, Duration::from_secs(10));
        assert!(parse(&["--sync-frequency=often"]).is_err());
        assert_eq!(
            s.eviction_pressure_transition_period,
            Duration::from_secs(300)
        );
        let e = parse(&[
            "--eviction-pressure-transition-period=30s",
            "--eviction-minimum-reclaim=memory.available=50Mi",
        ])
        .unwrap();
        assert_eq!(
            e.eviction_pressure_transition_period,
            Duration::from_secs(30)
        );
        assert_eq!(e.eviction_minimum_reclaim.0.len(), 1);
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(parse(&["--cgroup-driver=cgroupv3"])
            .unwrap_err()
            .contains("cgroupfs or systemd"));
        assert!(parse(&["--register-with-taints=a=b:Sometimes"])
            .unwrap_err()
            .contains("effect"));
        assert!(parse(&["--node-labels=novalue"])
            .unwrap_err()
            .contains("key=value"));
        assert!(parse(&["--eviction-hard=memory.available=1"])
            .unwrap_err()
            .contains("--eviction-hard"));
        assert!(parse(&["--container-runtime-endpoint=tcp://1.2.3.4:5"])
            .unwrap_err()
            .contains("unix://"));
    }

    #[test]
    fn flags_win_over_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubelet.yaml");
        std::fs::write(
            &path,
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             clusterDNS: [10.96.0.10]\nclusterDomain: cluster.local\nmaxPods: 50\n\
             cgroupDriver: systemd\nport: 10251\npodCIDR: 10.244.3.0/24\n\
             registerWithTaints: [{key: a, effect: NoSchedule}]\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let s = parse(&["--config", p, "--max-pods=20", "--hostname-override=n"]).unwrap();
        assert_eq!(s.max_pods, 20);
        assert_eq!(s.cgroup_driver, CgroupDriver::Systemd);
        assert_eq!(s.cluster_dns, vec!["10.96.0.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(s.cluster_domain, "cluster.local");
        assert_eq!(s.serving.unwrap().port(), 10251);
        assert_eq!(s.pod_cidr.unwrap().to_string(), "10.244.3.0/24");
        assert_eq!(s.register_with_taints[0].key, "a");

        std::fs::write(&path, "kind: Nope\n").unwrap();
        assert!(parse(&["--config", p]).unwrap_err().contains("kind"));
    }

    #[test]
    fn a_config_file_secures_the_kubelet_port_unless_flags_say_otherwise() {
        use crate::server::{AuthSettings, AuthorizationMode};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubelet.yaml");
        let p = path.to_str().unwrap();
        let header = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";
        let write = |body: &str| std::fs::write(&path, format!("{header}{body}")).unwrap();

        // Nothing about auth in the file: upstream's v1beta1 defaults.
        write("");
        let s = parse(&["--config", p, "--hostname-override=n"]).unwrap();
        assert_eq!(
            s.auth,
            AuthSettings {
                anonymous: false,
                token_webhook: true,
                authorization_mode: AuthorizationMode::Webhook,
                ..AuthSettings::default()
            }
        );

        // The file's values, with upstream's field names; zero durations mean "default".
        let ca = dir.path().join("ca.crt");
        let cert = rcgen::generate_simple_self_signed(vec!["ca".to_string()]).unwrap();
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        write(&format!(
            "authentication:\n  x509: {{clientCAFile: {}}}\n  \
             webhook: {{enabled: false, cacheTTL: 0s}}\n  anonymous: {{enabled: true}}\n\
             authorization:\n  mode: AlwaysAllow\n  \
             webhook: {{cacheAuthorizedTTL: 1m, cacheUnauthorizedTTL: 5s}}\n",
            ca.display()
        ));
        let s = parse(&["--config", p]).unwrap();
        assert!(s.auth.anonymous);
        assert!(!s.auth.token_webhook);
        assert_eq!(s.auth.token_webhook_cache_ttl, Duration::from_secs(120));
        assert_eq!(s.auth.client_ca_file.as_ref(), Some(&ca));
        assert_eq!(s.auth.authorization_mode, AuthorizationMode::AlwaysAllow);
        assert_eq!(s.auth.authorized_ttl, Duration::from_secs(60));
        assert_eq!(s.auth.unauthorized_ttl, Duration::from_secs(5));

        // Flags given explicitly win over the file, and over its defaults.
        let s = parse(&[
            "--config",
            p,
            "--anonymous-auth=false",
            "--authentication-token-webhook",
            "--authentication-token-webhook-cache-ttl=0s",
            "--authorization-mode=Webhook",
            "--authorization-webhook-cache-unauthorized-ttl=1s",
        ])
        .unwrap();
        assert!(!s.auth.anonymous);
        assert!(s.auth.token_webhook);
        assert_eq!(s.auth.token_webhook_cache_ttl, Duration::ZERO);
        assert_eq!(s.auth.authorization_mode, AuthorizationMode::Webhook);
        assert_eq!(s.auth.authorized_ttl, Duration::from_secs(60));
        assert_eq!(s.auth.unauthorized_ttl, Duration::from_secs(1));
        write("");
        let s = parse(&[
            "--config",
            p,
            "--anonymous-auth",
            "--authorization-mode=AlwaysAllow",
        ])
        .unwrap();
        assert!(s.auth.anonymous);
        assert!(s.auth.token_webhook);
        assert_eq!(s.auth.authorization_mode, AuthorizationMode::AlwaysAllow);
    }

    #[test]
    fn bad_auth_values_in_the_config_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubelet.yaml");
        let p = path.to_str().unwrap();
        for (body, message) in [
            (
                "authorization: {mode: Foo}",
                r#"invalid authorization.mode "Foo": want AlwaysAllow or Webhook"#,
            ),
            (
                "authentication: {webhook: {cacheTTL: soon}}",
                "authentication.webhook.cacheTTL: invalid duration",
            ),
            (
                "authorization: {webhook: {cacheAuthorizedTTL: -1s}}",
                "authorization.webhook.cacheAuthorizedTTL: negative duration",
            ),
            (
                "authorization: {webhook: {cacheUnauthorizedTTL: 1y}}",
                "authorization.webhook.cacheUnauthorizedTTL: invalid duration",
            ),
            (
                "authentication: {x509: {clientCAFile: /nonexistent/ca.crt}}",
                "--client-ca-file /nonexistent/ca.crt: ",
            ),
            ("authentication: {anonymous: {enabled: maybe}}", "anonymous"),
        ] {
            std::fs::write(
                &path,
                format!("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n{body}\n"),
            )
            .unwrap();
            let err = parse(&["--config", p, "--hostname-override=n"]).unwrap_err();
            assert!(err.contains(message), "{body}: {err}");
        }
    }
}
