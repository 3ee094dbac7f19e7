//! kube-proxy's command line and its `KubeProxyConfiguration` file
//! (`kubeproxy.config.k8s.io/v1alpha1`), with upstream's flag names and defaults, turned
//! into a validated [`ProxyConfig`] before anything is bound or programmed.
//!
//! As upstream's `--config`: with a file, the flags that map to its fields are ignored
//! (fields the file leaves out take their defaults), except `--hostname-override`, which
//! still wins, and the flags with no field (`--master`, `--cleanup`, `-v`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use component_base::options::{parse_duration, KubeconfigOptions};
use ipnet::IpNet;
use serde::Deserialize;

/// The configuration file's group/version and kind.
pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
pub const KIND: &str = "KubeProxyConfiguration";

/// Upstream's default ports: metrics on loopback, the health check on every address.
pub const DEFAULT_METRICS_PORT: u16 = 10249;
pub const DEFAULT_HEALTHZ_PORT: u16 = 10256;

#[derive(Parser, Debug, Clone)]
#[command(name = "kube-proxy", version = component_base::options::KUBERNETES_VERSION,
    about = "The Kubernetes network proxy: programs Services and their endpoints into the node's packet filter.")]
pub struct Options {
    /// The path to the KubeProxyConfiguration file (kubeproxy.config.k8s.io/v1alpha1).
    /// With a file, the flags for its fields are ignored, except --hostname-override.
    #[arg(long)]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub kubeconfig: KubeconfigOptions,

    /// If non-empty, will be used as the name of the Node that kube-proxy is running on.
    #[arg(long, default_value = "")]
    pub hostname_override: String,

    /// Which proxy mode to use: 'nftables' or 'userspace'. Empty picks nftables when
    /// `nft` ≥ 1.0 works on this kernel, else userspace.
    #[arg(long, default_value = "")]
    pub proxy_mode: String,

    /// The CIDR range(s) of the pods in the cluster (comma-separated). Traffic to a
    /// ClusterIP from outside these ranges is masqueraded.
    #[arg(long, default_value = "")]
    pub cluster_cidr: String,

    /// Comma-separated CIDRs of the node addresses that accept NodePort connections.
    /// Empty: every local address.
    #[arg(long, value_delimiter = ',')]
    pub nodeport_addresses: Vec<String>,

    /// The IP address and port for the metrics server; empty disables it.
    #[arg(long, default_value = "127.0.0.1:10249")]
    pub metrics_bind_address: String,

    /// The IP address and port for the health check server; empty disables it.
    #[arg(long, default_value = "0.0.0.0:10256")]
    pub healthz_bind_address: String,

    /// How often configuration from the apiserver is refreshed (informer resync).
    /// Accepted for compatibility: kube-runtime's watchers keep their caches current
    /// without a periodic resync.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub config_sync_period: Duration,

    /// The maximum interval between full re-syncs of the proxy rules.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub sync_period: Duration,

    /// The minimum interval between re-syncs of the proxy rules: changes that arrive
    /// within it are batched into one sync.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub min_sync_period: Duration,

    /// Remove the rules kube-proxy created and exit.
    #[arg(long)]
    pub cleanup: bool,

    /// pikube's ServiceLB (as k3s ships): give `type: LoadBalancer` Services the nodes'
    /// InternalIPs (only nodes labelled `svccontroller.k3s.cattle.io/enablelb=true` when
    /// any is) as their ingress. One kube-proxy writes at a time (Lease
    /// kube-system/pikube-servicelb).
    #[arg(long)]
    pub enable_service_lb: bool,

    /// pikube's node-local cluster DNS (NodeLocal DNSCache and CoreDNS's kubernetes
    /// plugin in kube-proxy): serve DNS on the cluster DNS address on this node, UDP and
    /// TCP port 53, answering the cluster domain from the watched Services and
    /// EndpointSlices and forwarding other names to the upstream resolvers.
    #[arg(long)]
    pub enable_cluster_dns: bool,

    /// The cluster DNS address (the kubelet's --cluster-dns). Empty: the ClusterIP of
    /// Service kube-system/kube-dns.
    #[arg(long, default_value = "")]
    pub cluster_dns_ip: String,

    /// The cluster domain (the kubelet's --cluster-domain).
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,

    /// The resolv.conf listing the upstream resolvers for names outside the cluster
    /// domain.
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub dns_upstream_resolv_conf: PathBuf,

    /// Log verbosity (klog's -v).
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    pub verbosity: u8,
}

/// How Services are implemented on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Decided at start: nftables when usable, else userspace.
    Auto,
    Nftables,
    Userspace,
}

impl ProxyMode {
    fn parse(text: &str) -> Result<ProxyMode, String> {
        match text {
            "" => Ok(ProxyMode::Auto),
            "nftables" => Ok(ProxyMode::Nftables),
            "userspace" => Ok(ProxyMode::Userspace),
            other => Err(format!(
                "invalid proxy mode {other:?}: must be \"nftables\", \"userspace\" or empty"
            )),
        }
    }
}

/// Everything `run` needs besides a client, validated.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// This node's name, for local endpoints and its own Node object.
    pub hostname: String,
    pub mode: ProxyMode,
    /// Pod CIDRs, either family. Empty: no off-cluster masquerade for ClusterIPs.
    pub cluster_cidrs: Vec<IpNet>,
    /// NodePorts answer only on local addresses inside these ranges (per family: a
    /// family with none of them answers on all its local addresses).
    pub nodeport_addresses: Vec<IpNet>,
    pub metrics_bind_address: Option<SocketAddr>,
    pub healthz_bind_address: Option<SocketAddr>,
    pub config_sync_period: Duration,
    pub sync_period: Duration,
    pub min_sync_period: Duration,
    /// Run the ServiceLB controller (leader-elected).
    pub service_lb: bool,
    /// Serve node-local cluster DNS (`--enable-cluster-dns`).
    pub dns: Option<crate::dns::DnsConfig>,
}

impl ProxyConfig {
    /// Defaults for tests: this hostname, nftables, no servers, a 1 s minimum sync period.
    pub fn for_node(hostname: &str) -> ProxyConfig {
        ProxyConfig {
            hostname: hostname.to_string(),
            mode: ProxyMode::Nftables,
            cluster_cidrs: Vec::new(),
            nodeport_addresses: Vec::new(),
            metrics_bind_address: None,
            healthz_bind_address: None,
            config_sync_period: Duration::from_secs(15 * 60),
            sync_period: Duration::from_secs(30),
            min_sync_period: Duration::from_secs(1),
            service_lb: false,
            dns: None,
        }
    }
}

/// Options after reading the configuration file.
#[derive(Debug)]
pub struct Resolved {
    pub config: ProxyConfig,
    pub kubeconfig: KubeconfigOptions,
    pub cleanup: bool,
}

/// The fields of KubeProxyConfiguration that map to the flags above. Unknown fields
/// (iptables, ipvs, conntrack, ...) are accepted and ignored so upstream files load.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    api_version: Option<String>,
    kind: Option<String>,
    client_connection: Option<ClientConnection>,
    hostname_override: Option<String>,
    mode: Option<String>,
    #[serde(rename = "clusterCIDR")]
    cluster_cidr: Option<String>,
    node_port_addresses: Option<Vec<String>>,
    metrics_bind_address: Option<String>,
    healthz_bind_address: Option<String>,
    config_sync_period: Option<String>,
    sync_period: Option<String>,
    min_sync_period: Option<String>,
    nftables: Option<NftablesSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClientConnection {
    kubeconfig: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NftablesSection {
    sync_period: Option<String>,
    min_sync_period: Option<String>,
}

impl Options {
    /// Reads and validates everything; an error here exits with code 64.
    pub fn resolve(&self) -> Result<Resolved, String> {
        let mut o = self.clone();
        if let Some(path) = &self.config {
            // Start from the defaults, not from the flags.
            let mut defaults = Options::try_parse_from(["kube-proxy"])
                .map_err(|e| format!("default options: {e}"))?;
            defaults.config = self.config.clone();
            defaults.cleanup = self.cleanup;
            defaults.enable_service_lb = self.enable_service_lb;
            // No KubeProxyConfiguration field for these: the flags hold.
            defaults.enable_cluster_dns = self.enable_cluster_dns;
            defaults.cluster_dns_ip = self.cluster_dns_ip.clone();
            defaults.cluster_domain = self.cluster_domain.clone();
            defaults.dns_upstream_resolv_conf = self.dns_upstream_resolv_conf.clone();
            defaults.verbosity = self.verbosity;
            defaults.kubeconfig.master = self.kubeconfig.master.clone();
            o = defaults;
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("failed to read config file {}: {e}", path.display()))?;
            let file: ConfigFile = serde_yaml::from_str(&text)
                .map_err(|e| format!("invalid config file {}: {e}", path.display()))?;
            o.apply_file(file)
                .map_err(|e| format!("config file {}: {e}", path.display()))?;
            if !self.hostname_override.trim().is_empty() {
                o.hostname_override = self.hostname_override.clone();
            }
        }
        let hostname = if o.hostname_override.trim().is_empty() {
            hostname::get()
                .map_err(|e| format!("reading the hostname: {e}"))?
                .to_string_lossy()
                .to_lowercase()
        } else {
            o.hostname_override.trim().to_lowercase()
        };
        if o.min_sync_period > o.sync_period {
            return Err(format!(
                "--min-sync-period ({:?}) must not exceed --sync-period ({:?})",
                o.min_sync_period, o.sync_period
            ));
        }
        if o.sync_period.is_zero() {
            return Err("--sync-period must be greater than 0".into());
        }
        let dns = if o.enable_cluster_dns {
            Some(parse_dns(&o)?)
        } else {
            None
        };
        let config = ProxyConfig {
            dns,
            hostname,
            mode: ProxyMode::parse(&o.proxy_mode)?,
            cluster_cidrs: parse_cidrs("--cluster-cidr", o.cluster_cidr.split(','))?,
            nodeport_addresses: parse_cidrs(
                "--nodeport-addresses",
                o.nodeport_addresses.iter().map(String::as_str),
            )?,
            metrics_bind_address: parse_bind_address(
                "--metrics-bind-address",
                &o.metrics_bind_address,
                DEFAULT_METRICS_PORT,
            )?,
            healthz_bind_address: parse_bind_address(
                "--healthz-bind-address",
                &o.healthz_bind_address,
                DEFAULT_HEALTHZ_PORT,
            )?,
            config_sync_period: o.config_sync_period,
            sync_period: o.sync_period,
            min_sync_period: o.min_sync_period,
            service_lb: o.enable_service_lb,
        };
        Ok(Resolved {
            config,
            kubeconfig: o.kubeconfig,
            cleanup: o.cleanup,
        })
    }

    fn apply_file(&mut self, file: ConfigFile) -> Result<(), String> {
        match file.api_version.as_deref() {
            Some(API_VERSION) => {}
            other => {
                return Err(format!(
                    "apiVersion {other:?} is not supported (expected {API_VERSION:?})"
                ))
            }
        }
        if file.kind.as_deref() != Some(KIND) {
            return Err(format!(
                "kind {:?} is not supported (expected {KIND:?})",
                file.kind
            ));
        }
        if let Some(path) = file
            .client_connection
            .and_then(|c| c.kubeconfig)
            .filter(|p| !p.is_empty())
        {
            self.kubeconfig.kubeconfig = Some(PathBuf::from(path));
        }
        if let Some(v) = file.hostname_override.filter(|v| !v.is_empty()) {
            self.hostname_override = v;
        }
        if let Some(v) = file.mode {
            self.proxy_mode = v;
        }
        if let Some(v) = file.cluster_cidr {
            self.cluster_cidr = v;
        }
        if let Some(v) = file.node_port_addresses {
            self.nodeport_addresses = v;
        }
        if let Some(v) = file.metrics_bind_address {
            self.metrics_bind_address = v;
        }
        if let Some(v) = file.healthz_bind_address {
            self.healthz_bind_address = v;
        }
        let duration = |field: &str, v: Option<String>, into: &mut Duration| {
            if let Some(text) = v {
                *into = parse_duration(&text).map_err(|e| format!("{field}: {e}"))?;
            }
            Ok::<(), String>(())
        };
        duration(
            "configSyncPeriod",
            file.config_sync_period,
            &mut self.config_sync_period,
        )?;
        duration("syncPeriod", file.sync_period, &mut self.sync_period)?;
        duration(
            "minSyncPeriod",
            file.min_sync_period,
            &mut self.min_sync_period,
        )?;
        if let Some(nft) = file.nftables {
            duration(
                "nftables.syncPeriod",
                nft.sync_period,
                &mut self.sync_period,
            )?;
            duration(
                "nftables.minSyncPeriod",
                nft.min_sync_period,
                &mut self.min_sync_period,
            )?;
        }
        Ok(())
    }
}

/// The node-local DNS flags, validated.
fn parse_dns(o: &Options) -> Result<crate::dns::DnsConfig, String> {
    let ip = match o.cluster_dns_ip.trim() {
        "" => None,
        text => Some(
            text.parse::<IpAddr>()
                .map_err(|_| format!("--cluster-dns-ip: invalid IP address {text:?}"))?,
        ),
    };
    crate::dns::records::Zone::new(&o.cluster_domain)
        .map_err(|e| format!("--cluster-domain: {e}"))?;
    Ok(crate::dns::DnsConfig {
        ip,
        domain: o.cluster_domain.trim().trim_end_matches('.').to_string(),
        upstream_resolv_conf: o.dns_upstream_resolv_conf.clone(),
        ..crate::dns::DnsConfig::new()
    })
}

/// Comma-separated CIDRs of either family.
fn parse_cidrs<'a>(flag: &str, items: impl Iterator<Item = &'a str>) -> Result<Vec<IpNet>, String> {
    let mut out = Vec::new();
    for item in items.map(str::trim).filter(|s| !s.is_empty()) {
        match item.parse::<IpNet>() {
            Ok(net) => out.push(net.trunc()),
            Err(_) if item == "primary" => {
                return Err(format!(
                    "{flag}: \"primary\" is not supported yet; give CIDRs"
                ))
            }
            Err(_) => return Err(format!("{flag}: invalid CIDR {item:?}")),
        }
    }
    Ok(out)
}

/// `host:port`, or a bare IP with the default port; empty disables the server.
fn parse_bind_address(
    flag: &str,
    text: &str,
    default_port: u16,
) -> Result<Option<SocketAddr>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Some(addr));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(Some(SocketAddr::new(ip, default_port)));
    }
    Err(format!(
        "{flag}: invalid address {text:?} (expected IP:port, e.g. 0.0.0.0:{default_port})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Resolved, String> {
        let mut all = vec!["kube-proxy", "--hostname-override=Node-A"];
        all.extend_from_slice(args);
        Options::try_parse_from(all).unwrap().resolve()
    }

    #[test]
    fn upstream_defaults() {
        let r = parse(&[]).unwrap();
        assert_eq!(r.config.hostname, "node-a");
        assert_eq!(r.config.mode, ProxyMode::Auto);
        assert_eq!(
            r.config.metrics_bind_address,
            Some("127.0.0.1:10249".parse().unwrap())
        );
        assert_eq!(
            r.config.healthz_bind_address,
            Some("0.0.0.0:10256".parse().unwrap())
        );
        assert_eq!(r.config.min_sync_period, Duration::from_secs(1));
        assert_eq!(r.config.sync_period, Duration::from_secs(30));
        assert!(!r.cleanup);
    }

    #[test]
    fn flags_parse() {
        let r = parse(&[
            "--proxy-mode=nftables",
            "--cluster-cidr=10.244.0.0/16,fd00::/48",
            "--nodeport-addresses=192.168.1.0/24,10.0.0.5/32",
            "--metrics-bind-address=0.0.0.0",
            "--healthz-bind-address=",
            "--min-sync-period=250ms",
            "--kubeconfig=/etc/kp.conf",
            "--cleanup",
        ])
        .unwrap();
        assert_eq!(r.config.mode, ProxyMode::Nftables);
        assert_eq!(
            r.config.cluster_cidrs,
            vec![
                "10.244.0.0/16".parse::<IpNet>().unwrap(),
                "fd00::/48".parse().unwrap()
            ]
        );
        assert_eq!(r.config.nodeport_addresses.len(), 2);
        assert_eq!(
            r.config.metrics_bind_address,
            Some("0.0.0.0:10249".parse().unwrap())
        );
        assert_eq!(r.config.healthz_bind_address, None);
        assert_eq!(r.config.min_sync_period, Duration::from_millis(250));
        assert_eq!(r.kubeconfig.kubeconfig, Some(PathBuf::from("/etc/kp.conf")));
        assert!(r.cleanup);
    }

    #[test]
    fn bad_values_are_reported() {
        assert!(parse(&["--proxy-mode=ipvs"])
            .unwrap_err()
            .contains("invalid proxy mode"));
        assert!(parse(&["--cluster-cidr=10.0.0.0/33"])
            .unwrap_err()
            .contains("--cluster-cidr"));
        assert!(parse(&["--metrics-bind-address=nowhere"])
            .unwrap_err()
            .contains("--metrics-bind-address"));
        assert!(parse(&["--min-sync-period=1m"])
            .unwrap_err()
            .contains("must not exceed"));
        assert!(Options::try_parse_from(["kube-proxy", "--sync-period=often"]).is_err());
    }

    #[test]
    fn cluster_dns_flags() {
        assert_eq!(parse(&[]).unwrap().config.dns, None);
        let r = parse(&[
            "--enable-cluster-dns",
            "--cluster-dns-ip=10.43.0.10",
            "--cluster-domain=example.internal.",
            "--dns-upstream-resolv-conf=/run/resolv.conf",
        ])
        .unwrap();
        let dns = r.config.dns.unwrap();
        assert_eq!(dns.ip, Some("10.43.0.10".parse().unwrap()));
        assert_eq!(dns.domain, "example.internal");
        assert_eq!(dns.upstream_resolv_conf, PathBuf::from("/run/resolv.conf"));
        let dns = parse(&["--enable-cluster-dns"])
            .unwrap()
            .config
            .dns
            .unwrap();
        assert_eq!(dns.ip, None);
        assert_eq!(dns.domain, "cluster.local");
        assert!(parse(&["--enable-cluster-dns", "--cluster-dns-ip=ten"])
            .unwrap_err()
            .contains("--cluster-dns-ip"));
        assert!(parse(&["--enable-cluster-dns", "--cluster-domain=."])
            .unwrap_err()
            .contains("--cluster-domain"));
    }

    #[test]
    fn cluster_dns_flags_hold_with_a_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kp.yaml");
        std::fs::write(
            &path,
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n",
        )
        .unwrap();
        let r = parse(&[
            "--config",
            path.to_str().unwrap(),
            "--enable-cluster-dns",
            "--cluster-dns-ip=fd00::a",
            "--cluster-domain=k8s.example",
        ])
        .unwrap();
        let dns = r.config.dns.unwrap();
        assert_eq!(dns.ip, Some("fd00::a".parse().unwrap()));
        assert_eq!(dns.domain, "k8s.example");
    }

    #[test]
    fn with_a_config_file_flags_are_ignored_but_hostname_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kp.yaml");
        std::fs::write(
            &path,
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nhostnameOverride: file-node\n",
        )
        .unwrap();
        let r = Options::try_parse_from([
            "kube-proxy",
            "--config",
            path.to_str().unwrap(),
            "--cluster-cidr=10.0.0.0/8",
            "--min-sync-period=5s",
            "--hostname-override=Flag-Node",
            "--cleanup",
        ])
        .unwrap()
        .resolve()
        .unwrap();
        assert_eq!(r.config.hostname, "flag-node");
        assert!(r.config.cluster_cidrs.is_empty());
        assert_eq!(r.config.min_sync_period, Duration::from_secs(1));
        assert!(r.cleanup);
    }

    #[test]
    fn the_config_file_wins_over_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kp.yaml");
        std::fs::write(
            &path,
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
             clientConnection: {kubeconfig: /from/file}\nhostnameOverride: file-node\nmode: nftables\n\
             clusterCIDR: 10.42.0.0/16\nnodePortAddresses: [172.16.0.0/12]\n\
             metricsBindAddress: 127.0.0.1:20249\nhealthzBindAddress: ''\n\
             nftables: {syncPeriod: 10s, minSyncPeriod: 2s}\niptables: {masqueradeAll: false}\n",
        )
        .unwrap();
        let r = Options::try_parse_from([
            "kube-proxy",
            "--config",
            path.to_str().unwrap(),
            "--kubeconfig=/flag",
            "--proxy-mode=userspace",
        ])
        .unwrap()
        .resolve()
        .unwrap();
        assert_eq!(r.kubeconfig.kubeconfig, Some(PathBuf::from("/from/file")));
        assert_eq!(r.config.hostname, "file-node");
        assert_eq!(r.config.mode, ProxyMode::Nftables);
        assert_eq!(r.config.cluster_cidrs[0].to_string(), "10.42.0.0/16");
        assert_eq!(r.config.nodeport_addresses[0].to_string(), "172.16.0.0/12");
        assert_eq!(
            r.config.metrics_bind_address,
            Some("127.0.0.1:20249".parse().unwrap())
        );
        assert_eq!(r.config.healthz_bind_address, None);
        assert_eq!(r.config.sync_period, Duration::from_secs(10));
        assert_eq!(r.config.min_sync_period, Duration::from_secs(2));
    }

    #[test]
    fn a_foreign_config_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kp.yaml");
        std::fs::write(
            &path,
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n",
        )
        .unwrap();
        let err = parse(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(err.contains("apiVersion"), "{err}");
        let err = parse(&["--config", "/does/not/exist"]).unwrap_err();
        assert!(err.contains("failed to read config file"), "{err}");
    }
}
