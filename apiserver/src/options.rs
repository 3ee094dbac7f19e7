//! kube-apiserver's command line, with upstream's flag names and defaults, validated into
//! a [`Config`] before any port is bound.

use crate::{Config, TlsConfig};
use clap::Parser;
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "kube-apiserver",
    version = component_base::options::KUBERNETES_VERSION,
    about = "The Kubernetes API server (pikube)"
)]
pub struct Options {
    /// List of etcd servers to connect with (scheme://ip:port), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    pub etcd_servers: Vec<String>,
    /// The prefix to prepend to all resource paths in etcd.
    #[arg(long, default_value = "/registry")]
    pub etcd_prefix: String,
    /// SSL Certificate Authority file used to secure etcd communication.
    #[arg(long)]
    pub etcd_cafile: Option<PathBuf>,
    /// SSL certification file used to secure etcd communication.
    #[arg(long)]
    pub etcd_certfile: Option<PathBuf>,
    /// SSL key file used to secure etcd communication.
    #[arg(long)]
    pub etcd_keyfile: Option<PathBuf>,
    /// The IP address on which to listen for the --secure-port port.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// The port on which to serve HTTPS with authentication and authorization.
    #[arg(long, default_value_t = 6443)]
    pub secure_port: u16,
    /// The IP address on which to advertise the apiserver to members of the cluster.
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
    /// File containing the default x509 Certificate for HTTPS.
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// File containing the default x509 private key matching --tls-cert-file.
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,
    /// The directory where the TLS certs are located; a self-signed pair is written here
    /// when --tls-cert-file and --tls-private-key-file are not given.
    #[arg(long, default_value = "/var/run/kubernetes")]
    pub cert_dir: PathBuf,
    /// If set, the file that will be used to secure the secure port of the API server via
    /// token authentication (CSV: token,user,uid,"group1,group2").
    #[arg(long)]
    pub token_auth_file: Option<PathBuf>,
    /// If set, any request presenting a client certificate signed by one of the
    /// authorities in the client-ca-file is authenticated with an identity corresponding
    /// to the CommonName of the client certificate (groups: its Organizations).
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// Enables anonymous requests to the secure port of the API server.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub anonymous_auth: bool,
    /// Ordered list of plug-ins to do authorization on secure port.
    #[arg(long, default_value = "AlwaysAllow")]
    pub authorization_mode: String,
    /// A CIDR notation IP range from which to assign service cluster IPs.
    #[arg(long, default_value = "10.0.0.0/24")]
    pub service_cluster_ip_range: String,
    /// A port range to reserve for services with NodePort visibility (e.g. 30000-32767).
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,
    /// The interval of compaction requests; 0 disables compaction from the apiserver.
    #[arg(long, default_value = "5m0s", value_parser = parse_duration)]
    pub etcd_compaction_interval: std::time::Duration,
    /// Use an endpoint reconciler (lease, none) for the `kubernetes` Service's endpoints.
    #[arg(long, value_enum, default_value = "lease")]
    pub endpoint_reconciler_type: crate::endpoint_reconciler::ReconcilerType,
    /// Amount of time to retain events.
    #[arg(long, default_value = "1h0m0s", value_parser = parse_duration)]
    pub event_ttl: std::time::Duration,
    /// The maximum number of non-mutating requests in flight at a given time.
    #[arg(long, default_value_t = 400)]
    pub max_requests_inflight: usize,
    /// The maximum number of mutating requests in flight at a given time.
    #[arg(long, default_value_t = 200)]
    pub max_mutating_requests_inflight: usize,
    /// Path to a client cert file for TLS (to kubelets).
    #[arg(long)]
    pub kubelet_client_certificate: Option<PathBuf>,
    /// Path to a client key file for TLS (to kubelets).
    #[arg(long)]
    pub kubelet_client_key: Option<PathBuf>,
    /// Path to a cert file for the certificate authority; without it the kubelets'
    /// serving certificates are not verified.
    #[arg(long)]
    pub kubelet_certificate_authority: Option<PathBuf>,
    /// List of the preferred NodeAddressTypes to use for kubelet connections.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "Hostname,InternalDNS,InternalIP,ExternalDNS,ExternalIP"
    )]
    pub kubelet_preferred_address_types: Vec<String>,
    /// Timeout for kubelet operations (dialling; streams are not bounded).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub kubelet_timeout: std::time::Duration,
    /// Identifier of the service account token issuer (the `iss` claim); repeatable, the
    /// first issues tokens.
    #[arg(long)]
    pub service_account_issuer: Vec<String>,
    /// Identifiers of the API; tokens requested without audiences are for these
    /// (default: the issuers).
    #[arg(long, value_delimiter = ',')]
    pub api_audiences: Vec<String>,
    /// Path to the file that contains the current private key of the service account
    /// token issuer (PEM, RSA or EC).
    #[arg(long)]
    pub service_account_signing_key_file: Option<PathBuf>,
    /// File containing PEM-encoded keys used to verify ServiceAccount tokens; repeatable.
    #[arg(long)]
    pub service_account_key_file: Vec<PathBuf>,
    /// The maximum validity duration of a token created by the service account token
    /// issuer; longer requests are issued with this duration.
    #[arg(long, value_parser = parse_duration)]
    pub service_account_max_token_expiration: Option<std::time::Duration>,
    /// The file containing configuration for encryption providers to be used for storing
    /// secrets in etcd (an `apiserver.config.k8s.io/v1` EncryptionConfiguration).
    #[arg(long)]
    pub encryption_provider_config: Option<PathBuf>,
    /// Admission plugins to enable in addition to the default-on ones (comma-separated,
    /// upstream's names).
    #[arg(long, value_delimiter = ',')]
    pub enable_admission_plugins: Vec<String>,
    /// Admission plugins to turn off although they are on by default (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub disable_admission_plugins: Vec<String>,
    /// The tolerationSeconds of the not-ready:NoExecute toleration that
    /// DefaultTolerationSeconds adds to every pod that does not tolerate it already.
    #[arg(long, default_value_t = 300)]
    pub default_not_ready_toleration_seconds: i64,
    /// The tolerationSeconds of the unreachable:NoExecute toleration that
    /// DefaultTolerationSeconds adds to every pod that does not tolerate it already.
    #[arg(long, default_value_t = 300)]
    pub default_unreachable_toleration_seconds: i64,
    /// Log verbosity (klog's -v).
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    pub verbosity: u8,
}

/// A bad flag value, reported before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("invalid --service-cluster-ip-range {0:?}: {1}")]
    ServiceRange(String, String),
    #[error(
        "invalid --service-node-port-range {0:?}: expected BASE-MAX with 1 <= BASE <= MAX <= 65535"
    )]
    NodePortRange(String),
    #[error("--tls-cert-file and --tls-private-key-file must be given together")]
    TlsPair,
    #[error("invalid --authorization-mode: {0}")]
    AuthorizationMode(#[from] crate::authz::ModeError),
    #[error("--etcd-servers must name at least one server")]
    NoEtcd,
    #[error("--etcd-certfile and --etcd-keyfile must be given together")]
    EtcdClientPair,
    #[error("--etcd-cafile, --etcd-certfile, --etcd-keyfile: {0}")]
    EtcdTls(#[from] store::TlsError),
    #[error("--max-requests-inflight and --max-mutating-requests-inflight must be positive")]
    Inflight,
    #[error("--kubelet-client-certificate and --kubelet-client-key must be given together")]
    KubeletClientPair,
    #[error("invalid --kubelet-preferred-address-types {0:?}: supported values: Hostname, InternalIP, ExternalIP, InternalDNS, ExternalDNS")]
    KubeletAddressType(String),
    #[error("--kubelet-timeout must be positive")]
    KubeletTimeout,
    #[error("--service-account-issuer is required with --service-account-signing-key-file")]
    ServiceAccountIssuer,
    #[error("--service-account-max-token-expiration must be at least 1h0m0s")]
    MaxTokenExpiration,
    #[error("--encryption-provider-config: {0}")]
    Encryption(#[from] crate::encryption::ConfigError),
    #[error("{0}")]
    Admission(#[from] crate::admission::config::AdmissionConfigError),
}

impl Options {
    pub fn into_config(self) -> Result<Config, OptionsError> {
        let range: ipnet::IpNet =
            self.service_cluster_ip_range
                .parse()
                .map_err(|e: ipnet::AddrParseError| {
                    OptionsError::ServiceRange(self.service_cluster_ip_range.clone(), e.to_string())
                })?;
        if range.prefix_len() + 2 > range.max_prefix_len() {
            return Err(OptionsError::ServiceRange(
                self.service_cluster_ip_range.clone(),
                "the range must hold at least two addresses".into(),
            ));
        }
        let node_ports = parse_port_range(&self.service_node_port_range)
            .ok_or_else(|| OptionsError::NodePortRange(self.service_node_port_range.clone()))?;
        let tls = match (self.tls_cert_file, self.tls_private_key_file) {
            (Some(cert), Some(key)) => TlsConfig::Files { cert, key },
            (None, None) => TlsConfig::SelfSigned {
                cert_dir: self.cert_dir,
            },
            _ => return Err(OptionsError::TlsPair),
        };
        let authorization_modes = crate::authz::Mode::parse_list(&self.authorization_mode)?;
        let etcd_servers: Vec<String> = self
            .etcd_servers
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        if etcd_servers.is_empty() {
            return Err(OptionsError::NoEtcd);
        }
        if self.etcd_certfile.is_some() != self.etcd_keyfile.is_some() {
            return Err(OptionsError::EtcdClientPair);
        }
        let etcd_tls = store::EtcdTls {
            ca_file: self.etcd_cafile,
            cert_file: self.etcd_certfile,
            key_file: self.etcd_keyfile,
        };
        // Read here to refuse an unreadable or malformed file before anything starts;
        // connecting reads them again.
        etcd_tls.check()?;
        if self.max_requests_inflight == 0 || self.max_mutating_requests_inflight == 0 {
            return Err(OptionsError::Inflight);
        }
        if self.kubelet_client_certificate.is_some() != self.kubelet_client_key.is_some() {
            return Err(OptionsError::KubeletClientPair);
        }
        let preferred: Vec<String> = self
            .kubelet_preferred_address_types
            .into_iter()
            .filter(|t| !t.is_empty())
            .collect();
        if let Some(bad) = preferred
            .iter()
            .find(|t| !crate::kubelet_client::NODE_ADDRESS_TYPES.contains(&t.as_str()))
        {
            return Err(OptionsError::KubeletAddressType(bad.clone()));
        }
        if preferred.is_empty() {
            return Err(OptionsError::KubeletAddressType(String::new()));
        }
        if self.kubelet_timeout.is_zero() {
            return Err(OptionsError::KubeletTimeout);
        }
        let issuers: Vec<String> = self
            .service_account_issuer
            .into_iter()
            .filter(|i| !i.is_empty())
            .collect();
        if self.service_account_signing_key_file.is_some() && issuers.is_empty() {
            return Err(OptionsError::ServiceAccountIssuer);
        }
        let max_expiration = self
            .service_account_max_token_expiration
            .filter(|d| !d.is_zero());
        if max_expiration.is_some_and(|d| d < std::time::Duration::from_secs(3600)) {
            return Err(OptionsError::MaxTokenExpiration);
        }
        // Read here to refuse a bad file before anything starts; `start` reads it again.
        if let Some(path) = &self.encryption_provider_config {
            crate::encryption::Transformers::load(path)?;
        }
        let admission = crate::AdmissionConfig::from_flags(
            &self.enable_admission_plugins,
            &self.disable_admission_plugins,
            self.default_not_ready_toleration_seconds,
            self.default_unreachable_toleration_seconds,
        )?;
        Ok(Config {
            admission,
            encryption_provider_config: self.encryption_provider_config,
            etcd_servers,
            etcd_prefix: self.etcd_prefix,
            etcd_tls,
            bind_address: self.bind_address,
            secure_port: self.secure_port,
            advertise_address: self.advertise_address,
            tls,
            token_auth_file: self.token_auth_file,
            client_ca_file: self.client_ca_file,
            anonymous_auth: self.anonymous_auth,
            authorization_modes,
            service_cluster_ip_range: range,
            service_node_port_range: node_ports,
            max_requests_inflight: self.max_requests_inflight,
            max_mutating_requests_inflight: self.max_mutating_requests_inflight,
            etcd_compaction_interval: self.etcd_compaction_interval,
            endpoint_reconciler_type: self.endpoint_reconciler_type,
            event_ttl: self.event_ttl,
            kubelet: crate::kubelet_client::KubeletClientConfig {
                client_certificate: self.kubelet_client_certificate,
                client_key: self.kubelet_client_key,
                certificate_authority: self.kubelet_certificate_authority,
                preferred_address_types: preferred,
                timeout: self.kubelet_timeout,
            },
            service_account: crate::serviceaccount::ServiceAccountConfig {
                issuers,
                api_audiences: self
                    .api_audiences
                    .into_iter()
                    .filter(|a| !a.is_empty())
                    .collect(),
                signing_key_file: self.service_account_signing_key_file,
                key_files: self.service_account_key_file,
                max_token_expiration: max_expiration,
            },
        })
    }
}

/// A Go duration flag value (`5m0s`, `30s`, `0`).
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    match api_types::duration::parse_go(s) {
        Some(n) if n >= 0 => Ok(std::time::Duration::from_nanos(n as u64)),
        _ => Err(format!("invalid duration {s:?} (examples: 5m0s, 30s, 1h)")),
    }
}

fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            // "BASE+SIZE" is upstream's other form.
            let (a, n) = s.split_once('+')?;
            let a: u16 = a.trim().parse().ok()?;
            let n: u16 = n.trim().parse().ok()?;
            (a, a.checked_add(n.checked_sub(1)?)?)
        }
    };
    (a >= 1 && a <= b).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let c = Options::parse_from(["kube-apiserver"])
            .into_config()
            .unwrap();
        assert_eq!(c.secure_port, 6443);
        assert_eq!(c.service_node_port_range, (30000, 32767));
        assert!(Options::parse_from(["x", "--service-node-port-range=5-1"])
            .into_config()
            .is_err());
        assert!(
            Options::parse_from(["x", "--service-cluster-ip-range=nope"])
                .into_config()
                .is_err()
        );
        assert!(Options::parse_from(["x", "--tls-cert-file=/a"])
            .into_config()
            .is_err());
        assert_eq!(c.authorization_modes, [crate::authz::Mode::AlwaysAllow]);
        assert_eq!(
            Options::parse_from(["x", "--authorization-mode=Node,RBAC"])
                .into_config()
                .unwrap()
                .authorization_modes,
            [crate::authz::Mode::Node, crate::authz::Mode::Rbac]
        );
        assert!(Options::parse_from(["x", "--authorization-mode=ABAC"])
            .into_config()
            .is_err());
        assert_eq!(parse_port_range("30000+10"), Some((30000, 30009)));
        assert_eq!(
            c.etcd_compaction_interval,
            std::time::Duration::from_secs(300)
        );
        assert!(Options::try_parse_from(["x", "--etcd-compaction-interval=soon"]).is_err());
        assert!(c.client_ca_file.is_none());
        let c = Options::parse_from(["x", "--client-ca-file=/etc/kubernetes/pki/ca.crt"])
            .into_config()
            .unwrap();
        assert_eq!(
            c.client_ca_file.as_deref(),
            Some(std::path::Path::new("/etc/kubernetes/pki/ca.crt"))
        );
    }

    #[test]
    fn etcd_tls_flags() {
        let c = Options::parse_from(["x"]).into_config().unwrap();
        assert!(c.etcd_tls.is_empty());
        assert!(matches!(
            Options::parse_from(["x", "--etcd-certfile=/c.crt"]).into_config(),
            Err(OptionsError::EtcdClientPair)
        ));
        assert!(matches!(
            Options::parse_from(["x", "--etcd-keyfile=/c.key"]).into_config(),
            Err(OptionsError::EtcdClientPair)
        ));

        let dir = tempfile::tempdir().unwrap();
        let pki = store::testing::EtcdPki::generate(dir.path()).unwrap();
        let flags = |ca: &std::path::Path, cert: &std::path::Path, key: &std::path::Path| {
            Options::parse_from([
                "x".to_string(),
                "--etcd-servers=https://10.0.0.1:2379,https://10.0.0.2:2379".to_string(),
                format!("--etcd-cafile={}", ca.display()),
                format!("--etcd-certfile={}", cert.display()),
                format!("--etcd-keyfile={}", key.display()),
            ])
            .into_config()
        };
        let c = flags(&pki.ca_cert, &pki.client_cert, &pki.client_key).unwrap();
        assert_eq!(c.etcd_tls, pki.client_tls());
        assert_eq!(c.etcd_servers.len(), 2);

        let missing = dir.path().join("missing.crt");
        let err = flags(&missing, &pki.client_cert, &pki.client_key).unwrap_err();
        assert!(matches!(err, OptionsError::EtcdTls(_)), "{err}");
        assert!(err.to_string().contains("missing.crt"), "{err}");
        // A key in place of the CA, the CA in place of the key: not PEM of the right kind.
        let err = flags(&pki.client_key, &pki.client_cert, &pki.client_key).unwrap_err();
        assert!(
            err.to_string().contains("no PEM CERTIFICATE block"),
            "{err}"
        );
        let err = flags(&pki.ca_cert, &pki.client_cert, &pki.ca_cert).unwrap_err();
        assert!(
            err.to_string().contains("no PEM private key block"),
            "{err}"
        );
    }

    #[test]
    fn service_account_flags() {
        let c = Options::parse_from([
            "x",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-account-issuer=https://old",
            "--service-account-signing-key-file=/sa.key",
            "--service-account-key-file=/a.pub",
            "--service-account-key-file=/b.pub",
            "--api-audiences=api,vault",
            "--service-account-max-token-expiration=48h",
        ])
        .into_config()
        .unwrap();
        let sa = c.service_account;
        assert_eq!(sa.issuers.len(), 2);
        assert_eq!(sa.api_audiences, ["api", "vault"]);
        assert_eq!(sa.key_files.len(), 2);
        assert_eq!(
            sa.max_token_expiration,
            Some(std::time::Duration::from_secs(48 * 3600))
        );
        assert!(matches!(
            Options::parse_from(["x", "--service-account-signing-key-file=/sa.key"]).into_config(),
            Err(OptionsError::ServiceAccountIssuer)
        ));
        assert!(matches!(
            Options::parse_from(["x", "--service-account-max-token-expiration=10m"]).into_config(),
            Err(OptionsError::MaxTokenExpiration)
        ));
    }

    #[test]
    fn encryption_provider_config_is_read_before_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("encryption.yaml");
        let arg = format!("--encryption-provider-config={}", path.display());
        assert!(matches!(
            Options::parse_from(["x", &arg]).into_config(),
            Err(OptionsError::Encryption(_))
        ));
        std::fs::write(
            &path,
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - identity: {}\n",
        )
        .unwrap();
        let c = Options::parse_from(["x", &arg]).into_config().unwrap();
        assert_eq!(
            c.encryption_provider_config.as_deref(),
            Some(path.as_path())
        );
        assert!(Options::parse_from(["x"])
            .into_config()
            .unwrap()
            .encryption_provider_config
            .is_none());
    }

    #[test]
    fn admission_flags() {
        let c = Options::parse_from(["x"]).into_config().unwrap();
        assert_eq!(c.admission, crate::AdmissionConfig::default());
        let c = Options::parse_from([
            "x",
            "--enable-admission-plugins=NodeRestriction,Priority",
            "--disable-admission-plugins=ServiceAccount",
            "--default-not-ready-toleration-seconds=60",
        ])
        .into_config()
        .unwrap();
        assert!(!c
            .admission
            .is_enabled(crate::AdmissionPlugin::ServiceAccount));
        assert_eq!(c.admission.default_not_ready_toleration_seconds, 60);
        assert_eq!(c.admission.default_unreachable_toleration_seconds, 300);
        let err = Options::parse_from(["x", "--enable-admission-plugins=Bogus"])
            .into_config()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "enable-admission-plugins plugin \"Bogus\" is unknown"
        );
    }

    #[test]
    fn kubelet_client_flags() {
        let c = Options::parse_from(["kube-apiserver"])
            .into_config()
            .unwrap();
        assert_eq!(
            c.kubelet.preferred_address_types,
            [
                "Hostname",
                "InternalDNS",
                "InternalIP",
                "ExternalDNS",
                "ExternalIP"
            ]
        );
        assert_eq!(c.kubelet.timeout, std::time::Duration::from_secs(5));
        assert!(c.kubelet.certificate_authority.is_none());
        let c = Options::parse_from([
            "x",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            "--kubelet-timeout=30s",
            "--kubelet-client-certificate=/c.crt",
            "--kubelet-client-key=/c.key",
        ])
        .into_config()
        .unwrap();
        assert_eq!(
            c.kubelet.preferred_address_types,
            ["InternalIP", "Hostname"]
        );
        assert_eq!(c.kubelet.timeout, std::time::Duration::from_secs(30));
        assert!(matches!(
            Options::parse_from(["x", "--kubelet-preferred-address-types=PublicIP"]).into_config(),
            Err(OptionsError::KubeletAddressType(t)) if t == "PublicIP"
        ));
        assert!(matches!(
            Options::parse_from(["x", "--kubelet-client-key=/c.key"]).into_config(),
            Err(OptionsError::KubeletClientPair)
        ));
    }
}
