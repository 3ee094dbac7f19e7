//! pikubeadm's command line, with kubeadm's flag names where kubeadm has the flag
//! (`--cert-dir`, `--service-cidr`, `--service-dns-domain`, `--apiserver-cert-extra-sans`,
//! `--apiserver-bind-port`, `--kubeconfig-dir`), validated into a [`CertsConfig`] before
//! anything is written.

use clap::{Parser, Subcommand};
use ipnet::IpNet;
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "pikubeadm",
    version = component_base::options::KUBERNETES_VERSION,
    about = "pikubeadm: sets up a pikube cluster's PKI and kubeconfigs (kubeadm's role)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Writes (or renews) the cluster CA, the component certificates, the service-account
    /// key pair, the components' kubeconfigs and etcd's PKI (its CA, serving, peer and
    /// health-check certificates, the apiserver's etcd client certificate). Rerunning
    /// keeps every key and renews only certificates that expire within 90 days or no
    /// longer match the flags.
    Certs(CertsOptions),
    /// Manages bootstrap tokens (kubeadm token).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Prepares this node to join the cluster (kubeadm join's discovery): reads the CA
    /// from the cluster-info ConfigMap, accepts it only if its public-key hash is
    /// --discovery-token-ca-cert-hash, and writes the kubelet's bootstrap kubeconfig.
    Join(JoinOptions),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Creates a bootstrap token (a Secret in kube-system) and prints it, or the join
    /// command with --print-join-command.
    Create(TokenCreateOptions),
}

#[derive(Debug, Clone, clap::Args)]
pub struct TokenCreateOptions {
    /// The token ([a-z0-9]{6}.[a-z0-9]{16}); a random one if not given.
    pub token: Option<String>,
    /// The kubeconfig to talk to the cluster with.
    #[arg(long, default_value = "/etc/kubernetes/admin.conf")]
    pub kubeconfig: PathBuf,
    /// The duration before the token is automatically deleted (e.g. 1s, 2m, 3h). If set
    /// to '0', the token will never expire.
    #[arg(long, default_value = "24h", value_parser = component_base::options::parse_duration)]
    pub ttl: std::time::Duration,
    /// A human friendly description of how this token is used.
    #[arg(long)]
    pub description: Option<String>,
    /// Describes the ways in which this token can be used.
    #[arg(long, value_delimiter = ',', default_value = "signing,authentication")]
    pub usages: Vec<String>,
    /// Extra groups that this token will authenticate as when used for authentication.
    #[arg(long, value_delimiter = ',', default_value = crate::token::DEFAULT_GROUP)]
    pub groups: Vec<String>,
    /// Instead of printing only the token, print the full join command.
    #[arg(long)]
    pub print_join_command: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct JoinOptions {
    /// The apiserver: https://<host>:<port> (or <host>:<port>).
    pub api_server_endpoint: String,
    /// The bootstrap token.
    #[arg(long)]
    pub token: String,
    /// The CA public key hash to pin (sha256:<hex>), as `pikubeadm certs` and
    /// `pikubeadm token create --print-join-command` print it.
    #[arg(long)]
    pub discovery_token_ca_cert_hash: String,
    /// Where to write the kubelet's bootstrap kubeconfig.
    #[arg(long, default_value = "/etc/kubernetes/bootstrap-kubelet.conf")]
    pub bootstrap_kubeconfig: PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CertsOptions {
    /// The path where certificates, keys and kubeconfigs are written.
    #[arg(long, visible_alias = "dir", default_value = "/etc/kubernetes/pki")]
    pub cert_dir: PathBuf,
    /// The path where the kubeconfig files are written (default: --cert-dir).
    #[arg(long)]
    pub kubeconfig_dir: Option<PathBuf>,
    /// The cluster's name in the kubeconfigs (kubeadm's clusterName).
    #[arg(long, default_value = "kubernetes")]
    pub cluster_name: String,
    /// The control-plane hosts (hostnames or IP addresses), comma separated; the first is
    /// the server of every kubeconfig, all are in the apiserver certificate and in etcd's
    /// serving and peer certificates.
    #[arg(long, value_delimiter = ',', required = true)]
    pub control_plane: Vec<String>,
    /// Port the API server listens on, in the kubeconfigs' server URL.
    #[arg(long, default_value_t = 6443)]
    pub apiserver_bind_port: u16,
    /// The Services' IP range (--service-cluster-ip-range of the apiserver); its first
    /// address, the `kubernetes` Service's, is in the apiserver certificate.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cidr: String,
    /// The cluster's DNS domain, for `kubernetes.default.svc.<domain>`.
    #[arg(long, default_value = "cluster.local")]
    pub service_dns_domain: String,
    /// Extra Subject Alternative Names (IP addresses or DNS names) for the apiserver
    /// certificate, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub apiserver_cert_extra_sans: Vec<String>,
    /// A node as <name>=<ip>: a kubelet client certificate and kubeconfig, and a kubelet
    /// serving certificate, are written for it. Repeatable or comma separated.
    #[arg(long = "node", value_delimiter = ',')]
    pub nodes: Vec<String>,
}

/// A name or an address in a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Dns(String),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Dns(name) => f.write_str(name),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub ip: IpAddr,
}

/// The validated `certs` flags.
#[derive(Debug, Clone)]
pub struct CertsConfig {
    pub cert_dir: PathBuf,
    pub kubeconfig_dir: PathBuf,
    pub cluster_name: String,
    pub control_plane: Vec<Host>,
    pub apiserver_bind_port: u16,
    pub service_cidr: IpNet,
    pub service_dns_domain: String,
    pub extra_sans: Vec<Host>,
    pub nodes: Vec<Node>,
}

/// A bad flag value (exit code 64).
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("--control-plane must name at least one host")]
    NoControlPlane,
    #[error("invalid {flag} {value:?}: not an IP address or a DNS name ({reason})")]
    Host {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid --service-cidr {0:?}: {1}")]
    ServiceCidr(String, String),
    #[error("invalid --service-dns-domain {0:?}: {1}")]
    DnsDomain(String, String),
    #[error("invalid --cluster-name {0:?}: must be non-empty, without whitespace")]
    ClusterName(String),
    #[error("invalid --node {0:?}: expected <name>=<ip>")]
    NodeSyntax(String),
    #[error("invalid --node {0:?}: invalid name: {1}")]
    NodeName(String, String),
    #[error("invalid --node {0:?}: {1:?} is not an IP address")]
    NodeIp(String, String),
    #[error("--node {0:?} is given twice")]
    DuplicateNode(String),
    #[error("--apiserver-bind-port must not be 0")]
    Port,
}

fn parse_host(flag: &'static str, value: &str) -> Result<Host, OptionsError> {
    let value = value.trim();
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    let errs = api_types::validation::names::is_dns1123_subdomain(value);
    if errs.is_empty() {
        Ok(Host::Dns(value.to_string()))
    } else {
        Err(OptionsError::Host {
            flag,
            value: value.to_string(),
            reason: errs.join("; "),
        })
    }
}

impl CertsOptions {
    pub fn into_config(self) -> Result<CertsConfig, OptionsError> {
        let control_plane = self
            .control_plane
            .iter()
            .filter(|h| !h.trim().is_empty())
            .map(|h| parse_host("--control-plane", h))
            .collect::<Result<Vec<_>, _>>()?;
        if control_plane.is_empty() {
            return Err(OptionsError::NoControlPlane);
        }
        let extra_sans = self
            .apiserver_cert_extra_sans
            .iter()
            .filter(|h| !h.trim().is_empty())
            .map(|h| parse_host("--apiserver-cert-extra-sans", h))
            .collect::<Result<Vec<_>, _>>()?;
        let service_cidr: IpNet =
            self.service_cidr
                .parse()
                .map_err(|e: ipnet::AddrParseError| {
                    OptionsError::ServiceCidr(self.service_cidr.clone(), e.to_string())
                })?;
        if service_cidr.prefix_len() + 2 > service_cidr.max_prefix_len() {
            return Err(OptionsError::ServiceCidr(
                self.service_cidr.clone(),
                "the range must hold at least two addresses".into(),
            ));
        }
        let errs = api_types::validation::names::is_dns1123_subdomain(&self.service_dns_domain);
        if !errs.is_empty() {
            return Err(OptionsError::DnsDomain(
                self.service_dns_domain.clone(),
                errs.join("; "),
            ));
        }
        if self.cluster_name.is_empty() || self.cluster_name.chars().any(char::is_whitespace) {
            return Err(OptionsError::ClusterName(self.cluster_name));
        }
        if self.apiserver_bind_port == 0 {
            return Err(OptionsError::Port);
        }
        let mut nodes: Vec<Node> = Vec::new();
        for spec in self.nodes.iter().filter(|n| !n.trim().is_empty()) {
            let (name, ip) = spec
                .split_once('=')
                .ok_or_else(|| OptionsError::NodeSyntax(spec.clone()))?;
            let (name, ip) = (name.trim(), ip.trim());
            let errs = api_types::validation::names::is_dns1123_subdomain(name);
            if !errs.is_empty() {
                return Err(OptionsError::NodeName(spec.clone(), errs.join("; ")));
            }
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| OptionsError::NodeIp(spec.clone(), ip.to_string()))?;
            if nodes.iter().any(|n| n.name == name) {
                return Err(OptionsError::DuplicateNode(name.to_string()));
            }
            nodes.push(Node {
                name: name.to_string(),
                ip,
            });
        }
        Ok(CertsConfig {
            kubeconfig_dir: self.kubeconfig_dir.unwrap_or_else(|| self.cert_dir.clone()),
            cert_dir: self.cert_dir,
            cluster_name: self.cluster_name,
            control_plane,
            apiserver_bind_port: self.apiserver_bind_port,
            service_cidr,
            service_dns_domain: self.service_dns_domain,
            extra_sans,
            nodes,
        })
    }
}

impl CertsConfig {
    /// `https://<first control-plane host>:<port>`, the kubeconfigs' server.
    pub fn server_url(&self) -> String {
        format!(
            "https://{}:{}",
            self.control_plane[0], self.apiserver_bind_port
        )
    }

    /// The first address of the service range: the `kubernetes` Service's ClusterIP.
    pub fn first_service_ip(&self) -> IpAddr {
        match self.service_cidr.network() {
            IpAddr::V4(net) => IpAddr::from((u32::from(net) + 1).to_be_bytes()),
            IpAddr::V6(net) => IpAddr::from((u128::from(net) + 1).to_be_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<CertsConfig, OptionsError> {
        let mut all = vec!["pikubeadm", "certs"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).unwrap().command {
            Command::Certs(o) => o.into_config(),
            _ => unreachable!("certs was parsed"),
        }
    }

    #[test]
    fn flags() {
        let c = parse(&[
            "--dir=/tmp/pki",
            "--control-plane=pi-master,192.168.1.10",
            "--service-cidr=10.43.0.0/16",
            "--node=pi-1=192.168.1.11",
            "--node=pi-2=192.168.1.12,pi-3=fd00::3",
            "--apiserver-bind-port=7443",
        ])
        .unwrap();
        assert_eq!(c.cert_dir, PathBuf::from("/tmp/pki"));
        assert_eq!(c.kubeconfig_dir, PathBuf::from("/tmp/pki"));
        assert_eq!(c.cluster_name, "kubernetes");
        assert_eq!(c.server_url(), "https://pi-master:7443");
        assert_eq!(c.first_service_ip().to_string(), "10.43.0.1");
        assert_eq!(c.nodes.len(), 3);
        assert_eq!(c.nodes[2].ip.to_string(), "fd00::3");
        let c = parse(&["--control-plane=fd00::1", "--service-cidr=fd00:10::/108"]).unwrap();
        assert_eq!(c.server_url(), "https://[fd00::1]:6443");
        assert_eq!(c.first_service_ip().to_string(), "fd00:10::1");
    }

    #[test]
    fn bad_flags() {
        assert!(Cli::try_parse_from(["pikubeadm", "certs"]).is_err());
        assert!(matches!(
            parse(&["--control-plane=bad_host!"]),
            Err(OptionsError::Host { .. })
        ));
        assert!(matches!(
            parse(&["--control-plane=a", "--service-cidr=10.43.0.0/33"]),
            Err(OptionsError::ServiceCidr(..))
        ));
        assert!(matches!(
            parse(&["--control-plane=a", "--node=pi-1"]),
            Err(OptionsError::NodeSyntax(_))
        ));
        assert!(matches!(
            parse(&["--control-plane=a", "--node=Pi_1=10.0.0.1"]),
            Err(OptionsError::NodeName(..))
        ));
        assert!(matches!(
            parse(&["--control-plane=a", "--node=pi-1=10.0.0.300"]),
            Err(OptionsError::NodeIp(..))
        ));
        assert!(matches!(
            parse(&["--control-plane=a", "--node=a=10.0.0.1,a=10.0.0.2"]),
            Err(OptionsError::DuplicateNode(_))
        ));
        assert!(matches!(
            parse(&["--control-plane=a", "--cluster-name=my cluster"]),
            Err(OptionsError::ClusterName(_))
        ));
    }
}
