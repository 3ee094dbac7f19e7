//! kube-scheduler's command line, with upstream's flag names, turned into a validated
//! [`crate::Config`] before any port is bound.

use std::path::PathBuf;

use clap::Parser;
use component_base::leader_election::LeaderElectionConfig;
use component_base::options::{
    parse_duration, KubeconfigOptions, LeaderElectionOptions, SecureServingOptions,
};

use crate::config::Configuration;

#[derive(Parser, Debug, Clone)]
#[command(name = "kube-scheduler", version = component_base::options::KUBERNETES_VERSION,
    about = "The Kubernetes scheduler: watches pending pods and binds each to the best node.")]
pub struct Options {
    /// The path to the KubeSchedulerConfiguration file (kubescheduler.config.k8s.io/v1).
    /// Its clientConnection and leaderElection settings take precedence over the flags.
    #[arg(long)]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub kubeconfig: KubeconfigOptions,

    #[command(flatten)]
    pub leader_election: LeaderElectionOptions,

    #[command(flatten)]
    pub serving: SecureServingOptions,

    /// Log verbosity (klog's -v).
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    pub verbosity: u8,
}

/// Options after reading the configuration file: what `run` needs besides a client.
#[derive(Debug)]
pub struct Resolved {
    pub configuration: Configuration,
    pub kubeconfig: KubeconfigOptions,
    pub leader_election: Option<LeaderElectionConfig>,
    pub serving: SecureServingOptions,
}

impl Options {
    /// Reads and validates everything; an error here exits with code 64.
    pub fn resolve(&self) -> Result<Resolved, String> {
        let configuration = match &self.config {
            Some(path) => Configuration::load(path)?,
            None => Configuration::parse(&format!(
                "apiVersion: {}\nkind: {}\n",
                crate::config::API_VERSION,
                crate::config::KIND
            ))?,
        };
        // Building the frameworks validates plugin names, weights and args.
        configuration.frameworks()?;
        let mut kubeconfig = self.kubeconfig.clone();
        if let Some(path) = configuration
            .client_connection
            .kubeconfig
            .as_deref()
            .filter(|p| !p.is_empty())
        {
            kubeconfig.kubeconfig = Some(PathBuf::from(path));
        }
        let mut le = self.leader_election.clone();
        if let Some(file) = &configuration.leader_election {
            if let Some(v) = file.leader_elect {
                le.leader_elect = v;
            }
            let dur = |field: &str,
                       v: &Option<String>,
                       into: &mut std::time::Duration|
             -> Result<(), String> {
                if let Some(text) = v {
                    *into =
                        parse_duration(text).map_err(|e| format!("leaderElection.{field}: {e}"))?;
                }
                Ok(())
            };
            dur(
                "leaseDuration",
                &file.lease_duration,
                &mut le.lease_duration,
            )?;
            dur(
                "renewDeadline",
                &file.renew_deadline,
                &mut le.renew_deadline,
            )?;
            dur("retryPeriod", &file.retry_period, &mut le.retry_period)?;
            if let Some(v) = &file.resource_lock {
                le.resource_lock = v.clone();
            }
            if let Some(v) = &file.resource_name {
                le.resource_name = Some(v.clone());
            }
            if let Some(v) = &file.resource_namespace {
                le.resource_namespace = v.clone();
            }
        }
        le.validate()?;
        self.serving.validate()?;
        let leader_election = le
            .leader_elect
            .then(|| LeaderElectionConfig::from_options(&le, "kube-scheduler"));
        Ok(Resolved {
            configuration,
            kubeconfig,
            leader_election,
            serving: self.serving.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_flags_parse() {
        let o = Options::try_parse_from([
            "kube-scheduler",
            "--kubeconfig=/etc/k/scheduler.conf",
            "--leader-elect=false",
            "--secure-port=10259",
            "--bind-address=127.0.0.1",
            "-v=2",
        ])
        .unwrap();
        let r = o.resolve().unwrap();
        assert!(r.leader_election.is_none());
        assert_eq!(r.serving.secure_port, Some(10259));
        assert_eq!(o.verbosity, 2);
    }

    #[test]
    fn the_config_file_wins_over_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sched.yaml");
        std::fs::write(
            &path,
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n\
             clientConnection: {kubeconfig: /from/file}\nleaderElection: {leaderElect: true, leaseDuration: 30s, resourceName: my-sched}\n",
        )
        .unwrap();
        let o = Options::try_parse_from([
            "kube-scheduler",
            "--config",
            path.to_str().unwrap(),
            "--kubeconfig=/flag",
            "--leader-elect=false",
        ])
        .unwrap();
        let r = o.resolve().unwrap();
        assert_eq!(r.kubeconfig.kubeconfig, Some(PathBuf::from("/from/file")));
        let le = r.leader_election.unwrap();
        assert_eq!(le.lease_name, "my-sched");
        assert_eq!(le.lease_duration, std::time::Duration::from_secs(30));
    }

    #[test]
    fn bad_configuration_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles: [{plugins: {score: {enabled: [{name: Bogus}]}}}]\n").unwrap();
        let o = Options::try_parse_from(["kube-scheduler", "--config", path.to_str().unwrap()])
            .unwrap();
        assert!(o.resolve().unwrap_err().contains("Bogus"));
        let o = Options::try_parse_from(["kube-scheduler", "--config", "/does/not/exist"]).unwrap();
        assert!(o
            .resolve()
            .unwrap_err()
            .contains("failed to read config file"));
    }
}
