//! kube-controller-manager's command line, with upstream's flag names and defaults.

use std::time::Duration;

use clap::{ArgAction, Parser};
use component_base::leader_election::LeaderElectionConfig;
use component_base::options::{
    parse_duration, KubeconfigOptions, LeaderElectionOptions, SecureServingOptions,
};

#[derive(Parser, Debug, Clone)]
#[command(name = "kube-controller-manager", version = component_base::options::KUBERNETES_VERSION,
    about = "The Kubernetes controller manager: the control loops that make desired state real.")]
pub struct Options {
    #[command(flatten)]
    pub kubeconfig: KubeconfigOptions,

    #[command(flatten)]
    pub leader_election: LeaderElectionOptions,

    #[command(flatten)]
    pub serving: SecureServingOptions,

    #[command(flatten)]
    pub controllers: ControllerOptions,

    /// Log verbosity (klog's -v).
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    pub verbosity: u8,
}

/// The settings controllers read.
#[derive(clap::Args, Debug, Clone)]
pub struct ControllerOptions {
    /// A list of controllers to enable. '*' enables all on-by-default controllers, 'foo'
    /// enables the controller named 'foo', '-foo' disables the controller named 'foo'.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,

    /// CIDR range for pods in the cluster.
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: ipnet::IpNet,

    /// Mask size for each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,

    /// Should CIDRs for Pods be allocated and set on the nodes.
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true,
        default_missing_value = "true", action = ArgAction::Set)]
    pub allocate_node_cidrs: bool,

    /// How long a node may go without renewing its Lease before it is marked unhealthy.
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    pub node_monitor_grace_period: Duration,

    /// How often node health is checked.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub node_monitor_period: Duration,

    /// Terminated pods kept before the pod garbage collector deletes the oldest (0 = off).
    #[arg(long, default_value_t = 12500)]
    pub terminated_pod_gc_threshold: i64,

    #[arg(long, default_value_t = 5)]
    pub concurrent_deployment_syncs: u16,
    #[arg(long, default_value_t = 5)]
    pub concurrent_replicaset_syncs: u16,
    #[arg(long, default_value_t = 5)]
    pub concurrent_rc_syncs: u16,
    #[arg(long, default_value_t = 2)]
    pub concurrent_daemonset_syncs: u16,
    #[arg(long, default_value_t = 5)]
    pub concurrent_statefulset_syncs: u16,
    #[arg(long, default_value_t = 5)]
    pub concurrent_job_syncs: u16,
    #[arg(long, default_value_t = 5)]
    pub concurrent_cron_job_syncs: u16,
    #[arg(long, default_value_t = 5)]
    pub concurrent_endpoint_syncs: u16,
    #[arg(long, default_value_t = 5)]
    pub concurrent_service_endpoint_syncs: u16,
    #[arg(long, default_value_t = 5)]
    pub mirroring_concurrent_service_endpoint_syncs: u16,
    /// The most endpoints one EndpointSlice holds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub max_endpoints_per_slice: u16,
    /// The most addresses the mirroring controller puts in one EndpointSlice.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub mirroring_max_endpoints_per_subset: u16,
    /// How long the endpoints controller gathers changes into one sync of a Service.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub endpoint_updates_batch_period: Duration,
    /// How long the endpointslice controller gathers changes into one sync of a Service.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub endpointslice_updates_batch_period: Duration,
    /// How long the mirroring controller gathers changes into one sync of an Endpoints.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub mirroring_endpointslice_updates_batch_period: Duration,
    #[arg(long, default_value_t = 10)]
    pub concurrent_namespace_syncs: u16,
    #[arg(long, default_value_t = 20)]
    pub concurrent_gc_syncs: u16,
    #[arg(long, default_value_t = 5)]
    pub concurrent_resource_quota_syncs: u16,
    /// How often every quota's usage is recomputed in full.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub resource_quota_sync_period: Duration,
    /// How often the persistentvolume binder re-examines every claim and volume.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub pvclaimbinder_sync_period: Duration,
    /// Filename containing a PEM-encoded X509 CA certificate used to issue cluster-scoped
    /// certificates (csrsigning).
    #[arg(long)]
    pub cluster_signing_cert_file: Option<std::path::PathBuf>,
    /// Filename containing a PEM-encoded private key used to sign cluster-scoped
    /// certificates (csrsigning).
    #[arg(long)]
    pub cluster_signing_key_file: Option<std::path::PathBuf>,
    /// The max length of duration signed certificates will be given; a request's
    /// spec.expirationSeconds may ask for less.
    #[arg(long, default_value = "8760h", value_parser = parse_duration)]
    pub cluster_signing_duration: Duration,
    /// If set, this root certificate authority (a PEM-encoded CA bundle) is what the
    /// root-ca-cert-publisher puts in every namespace's kube-root-ca.crt ConfigMap;
    /// otherwise the CA of --kubeconfig.
    #[arg(long)]
    pub root_ca_file: Option<std::path::PathBuf>,
    /// The bundle published: --root-ca-file's text, or the kubeconfig's CA (set by
    /// main once the client configuration is loaded).
    #[arg(skip)]
    pub root_ca: Option<String>,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            c: ControllerOptions,
        }
        Only::parse_from(["kube-controller-manager"]).c
    }
}

#[derive(Debug)]
pub struct Resolved {
    pub kubeconfig: KubeconfigOptions,
    pub leader_election: Option<LeaderElectionConfig>,
    pub serving: SecureServingOptions,
    pub controllers: ControllerOptions,
    pub enabled: Vec<&'static str>,
}

impl Options {
    /// Validates everything before any port is bound; an error exits with code 64.
    pub fn resolve(&self) -> Result<Resolved, String> {
        self.leader_election.validate()?;
        self.serving.validate()?;
        let c = &self.controllers;
        let max = if c.cluster_cidr.addr().is_ipv4() {
            32
        } else {
            128
        };
        if c.node_cidr_mask_size < c.cluster_cidr.prefix_len() || c.node_cidr_mask_size > max {
            return Err(format!(
                "--node-cidr-mask-size {} must be between the cluster CIDR's prefix length {} and {max}",
                c.node_cidr_mask_size,
                c.cluster_cidr.prefix_len()
            ));
        }
        let enabled =
            crate::controllers::selected(&c.controllers, &crate::controllers::descriptors())?;
        match (&c.cluster_signing_cert_file, &c.cluster_signing_key_file) {
            (Some(cert), Some(key)) => {
                crate::controllers::certificates::signer::SigningAuthority::load(cert, key)
                    .map_err(|e| {
                        format!("--cluster-signing-cert-file/--cluster-signing-key-file: {e}")
                    })?;
            }
            (None, None) => {}
            _ => return Err(
                "--cluster-signing-cert-file and --cluster-signing-key-file must be set together"
                    .into(),
            ),
        }
        let mut controllers = c.clone();
        if let Some(path) = &c.root_ca_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--root-ca-file {}: {e}", path.display()))?;
            if !text.contains("-----BEGIN CERTIFICATE-----") {
                return Err(format!(
                    "--root-ca-file {}: no PEM certificate in it",
                    path.display()
                ));
            }
            controllers.root_ca = Some(text);
        }
        let leader_election = self.leader_election.leader_elect.then(|| {
            LeaderElectionConfig::from_options(&self.leader_election, "kube-controller-manager")
        });
        Ok(Resolved {
            kubeconfig: self.kubeconfig.clone(),
            leader_election,
            serving: self.serving.clone(),
            controllers,
            enabled,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_flags_parse_and_validate() {
        let o = Options::try_parse_from([
            "kube-controller-manager",
            "--kubeconfig=/etc/k/cm.conf",
            "--controllers=*,-serviceaccount",
            "--cluster-cidr=10.244.0.0/16",
            "--node-cidr-mask-size=24",
            "--node-monitor-grace-period=40s",
            "--leader-elect=false",
            "--concurrent-deployment-syncs=10",
        ])
        .unwrap();
        let r = o.resolve().unwrap();
        assert!(!r.enabled.contains(&"serviceaccount"));
        assert!(r.enabled.contains(&"nodeipam"));
        assert!(r.leader_election.is_none());
        assert_eq!(r.controllers.concurrent_deployment_syncs, 10);
        let bad = Options::try_parse_from([
            "kube-controller-manager",
            "--cluster-cidr=10.0.0.0/16",
            "--node-cidr-mask-size=8",
        ])
        .unwrap();
        assert!(bad.resolve().unwrap_err().contains("--node-cidr-mask-size"));
        assert_eq!(
            ControllerOptions::default().cluster_cidr.to_string(),
            "10.42.0.0/16"
        );
    }
}
