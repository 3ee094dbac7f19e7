//! Command-line option groups shared by the daemons, with upstream's flag names and
//! defaults, so existing systemd units and runbooks carry over.
//!
//! Each group is a `#[derive(clap::Args)]` struct to `#[command(flatten)]` into a
//! daemon's options. Defaults that differ per daemon (the secure port, the lease name)
//! are left unset here and supplied by the daemon.

use crate::failover;
use clap::ArgAction;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The Kubernetes version pikube speaks, as reported in user agents.
pub const KUBERNETES_VERSION: &str = "v1.33.0";

/// Parses a Go duration (`15s`, `1m30s`, `500ms`) as upstream's duration flags accept.
/// Negative durations are rejected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    match api_types::duration::parse_go(text) {
        Some(nanos) if nanos >= 0 => Ok(Duration::from_nanos(nanos as u64)),
        Some(_) => Err(format!("negative duration {text:?}")),
        None => Err(format!(
            "invalid duration {text:?} (expected a Go duration such as 15s, 1m30s or 500ms)"
        )),
    }
}

/// Formats a duration as Go does (`15s`, `1m30s`), for messages about duration flags.
pub fn format_duration(d: Duration) -> String {
    api_types::duration::format_go(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Upstream's user agent for a component: `kube-scheduler/v1.33.0 (linux/arm64) pikube`.
pub fn user_agent(component: &str) -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!(
        "{component}/{KUBERNETES_VERSION} ({}/{arch}) pikube",
        std::env::consts::OS
    )
}

/// Why an API client could not be built from the kubeconfig options.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading kubeconfig {path}: {source}")]
    ReadKubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("loading kubeconfig {path}: {source}")]
    LoadKubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("neither --kubeconfig nor --master was given and no in-cluster or default kubeconfig was found: {0}")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("invalid --master {url:?}: {source}")]
    Master {
        url: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("invalid user agent {agent:?}: {source}")]
    UserAgent {
        agent: String,
        #[source]
        source: http::header::InvalidHeaderValue,
    },
    #[error("building the API client: {0}")]
    Client(#[source] kube::Error),
}

/// How a daemon reaches the apiserver: `--kubeconfig`, `--master` and the client's
/// request limits.
#[derive(clap::Args, Clone, Debug)]
pub struct KubeconfigOptions {
    /// Path to a kubeconfig file with authorization and master location information.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// The address of the Kubernetes API server (overrides any value in kubeconfig).
    #[arg(long)]
    pub master: Option<String>,

    /// QPS to use while talking with kubernetes apiserver.
    ///
    /// Accepted for compatibility: kube-rs has no client-side rate limiter, so requests
    /// are not throttled on our side (the apiserver's in-flight limits still apply).
    #[arg(long, default_value_t = 50.0)]
    pub kube_api_qps: f32,

    /// Burst to use while talking with kubernetes apiserver. Accepted, see --kube-api-qps.
    #[arg(long, default_value_t = 100)]
    pub kube_api_burst: u32,

    /// Content type of requests sent to apiserver. Accepted and ignored: pikube's
    /// clients speak JSON.
    #[arg(long, default_value = "application/vnd.kubernetes.protobuf")]
    pub kube_api_content_type: String,
}

impl Default for KubeconfigOptions {
    fn default() -> Self {
        KubeconfigOptions {
            kubeconfig: None,
            master: None,
            kube_api_qps: 50.0,
            kube_api_burst: 100,
            kube_api_content_type: "application/vnd.kubernetes.protobuf".into(),
        }
    }
}

impl KubeconfigOptions {
    /// The kube-rs configuration these options select, as client-go's
    /// `BuildConfigFromFlags`: the `--kubeconfig` file with `--master` overriding its
    /// server; `--master` alone is an unauthenticated client of that URL; with neither,
    /// `KUBECONFIG`/`~/.kube/config` or the in-cluster service account.
    pub async fn config(&self, component: &str) -> Result<kube::Config, ClientError> {
        let master = self
            .master
            .as_deref()
            .filter(|m| !m.is_empty())
            .map(|url| {
                url.parse::<http::Uri>()
                    .map_err(|source| ClientError::Master {
                        url: url.to_string(),
                        source,
                    })
            })
            .transpose()?;
        let mut config = match (&self.kubeconfig, master.clone()) {
            (Some(path), _) => {
                let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                    ClientError::ReadKubeconfig {
                        path: path.clone(),
                        source,
                    }
                })?;
                kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .map_err(|source| ClientError::LoadKubeconfig {
                        path: path.clone(),
                        source,
                    })?
            }
            (None, Some(url)) => kube::Config::new(url),
            (None, None) => kube::Config::infer().await.map_err(ClientError::Infer)?,
        };
        if let Some(url) = master {
            config.cluster_url = url;
        }
        let agent = user_agent(component);
        let value =
            http::HeaderValue::from_str(&agent).map_err(|source| ClientError::UserAgent {
                agent: agent.clone(),
                source,
            })?;
        config.headers.push((http::header::USER_AGENT, value));
        Ok(config)
    }

    /// An API client for `component` (`kube-scheduler`), see [`KubeconfigOptions::config`].
    /// Its user agent is upstream's form: `kube-scheduler/v1.33.0 (linux/arm64) pikube`.
    ///
    /// One HTTP/2 connection carries every request and watch (kube's own client speaks
    /// HTTP/1.1 only, so a burst of 500 pod creations opened 500 TLS connections and kept
    /// them, ~10 MiB in the controller-manager); HTTP/1.1 stays the fallback.
    ///
    /// With several apiservers (a highly available control plane), the client fails over
    /// to the others listed as `kubernetes` endpoints when its own stops answering
    /// ([`crate::failover`]).
    pub async fn client(&self, component: &str) -> Result<kube::Client, ClientError> {
        Ok(self.failover_client(component).await?.0)
    }

    /// [`KubeconfigOptions::client`], and the apiservers it may fail over to.
    pub async fn failover_client(
        &self,
        component: &str,
    ) -> Result<(kube::Client, failover::Apiservers), ClientError> {
        let config = self.config(component).await?;
        http2_failover_client(config, |_| {}).map_err(ClientError::Client)
    }
}

/// A daemon's client: [`http2_client_with_tls`] failing over between the apiservers
/// listed as `kubernetes` endpoints, which it follows from now on (needs a runtime).
pub fn http2_failover_client(
    config: kube::Config,
    tweak: impl FnOnce(&mut rustls::ClientConfig),
) -> Result<(kube::Client, failover::Apiservers), kube::Error> {
    let apiservers = failover::Apiservers::default();
    let client = http2_client_with(config, tweak, apiservers.clone())?;
    failover::follow_kubernetes_endpoints(client.clone(), apiservers.clone());
    Ok((client, apiservers))
}

/// How much a watch may have received and its reader not yet taken, per stream and for
/// the whole connection: a slow controller must hold up only its own watch, never the
/// others sharing the connection (their sum stays below the connection's window).
const STREAM_WINDOW: u32 = 4 << 20;
const CONNECTION_WINDOW: u32 = 256 << 20;

/// A kube client over HTTP/2 when the server offers it (ALPN), with kube's own layers:
/// the base URI, authentication and the extra headers of `config`.
pub fn http2_client(config: kube::Config) -> Result<kube::Client, kube::Error> {
    http2_client_with_tls(config, |_| {})
}

/// [`http2_client`] with the TLS client configuration adjusted by `tweak` (the kubelet
/// swaps in a client-certificate resolver that follows certificate rotation).
pub fn http2_client_with_tls(
    config: kube::Config,
    tweak: impl FnOnce(&mut rustls::ClientConfig),
) -> Result<kube::Client, kube::Error> {
    http2_client_with(config, tweak, failover::Apiservers::default())
}

/// [`http2_client_with_tls`] whose connections fail over between `apiservers` (see
/// [`crate::failover`]; keep the list current with
/// [`failover::follow_kubernetes_endpoints`]).
pub fn http2_client_with(
    config: kube::Config,
    tweak: impl FnOnce(&mut rustls::ClientConfig),
    apiservers: failover::Apiservers,
) -> Result<kube::Client, kube::Error> {
    use kube::client::ConfigExt;
    let mut tls = config.rustls_client_config()?;
    tweak(&mut tls);
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(config.connect_timeout);
    let tcp = failover::FailoverConnector::new(http, apiservers);
    let https = hyper_rustls::HttpsConnector::from((tcp, std::sync::Arc::new(tls)));
    let hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_initial_stream_window_size(STREAM_WINDOW)
        .http2_initial_connection_window_size(CONNECTION_WINDOW)
        .http2_keep_alive_interval(std::time::Duration::from_secs(30))
        .http2_keep_alive_while_idle(true)
        .timer(hyper_util::rt::TokioTimer::new())
        .build(https);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(hyper);
    Ok(kube::Client::new(service, config.default_namespace))
}

/// Leader election on a coordination.k8s.io Lease, as upstream's `--leader-elect*` flags.
#[derive(clap::Args, Clone, Debug)]
pub struct LeaderElectionOptions {
    /// Start a leader election client and gain leadership before executing the main
    /// loop. Enable this when running replicated components for high availability.
    #[arg(
        long,
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = ArgAction::Set,
    )]
    pub leader_elect: bool,

    /// The duration that non-leader candidates will wait after observing a leadership
    /// renewal until attempting to acquire leadership of a led but unrenewed leader slot.
    #[arg(long = "leader-elect-lease-duration", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// The interval between attempts by the acting master to renew a leadership slot
    /// before it stops leading. Must be less than the lease duration.
    #[arg(long = "leader-elect-renew-deadline", default_value = "10s", value_parser = parse_duration)]
    pub renew_deadline: Duration,

    /// The duration the clients should wait between attempting acquisition and renewal
    /// of a leadership.
    #[arg(long = "leader-elect-retry-period", default_value = "2s", value_parser = parse_duration)]
    pub retry_period: Duration,

    /// The type of resource object that is used for locking during leader election.
    /// Only `leases` is supported.
    #[arg(long = "leader-elect-resource-lock", default_value = "leases")]
    pub resource_lock: String,

    /// The name of resource object that is used for locking during leader election
    /// (default: the component's name).
    #[arg(long = "leader-elect-resource-name")]
    pub resource_name: Option<String>,

    /// The namespace of resource object that is used for locking during leader election.
    #[arg(
        long = "leader-elect-resource-namespace",
        default_value = "kube-system"
    )]
    pub resource_namespace: String,
}

/// client-go's `JitterFactor`: the retry period is stretched by up to this factor.
pub const JITTER_FACTOR: f64 = 1.2;

impl Default for LeaderElectionOptions {
    fn default() -> Self {
        LeaderElectionOptions {
            leader_elect: true,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            resource_lock: "leases".into(),
            resource_name: None,
            resource_namespace: "kube-system".into(),
        }
    }
}

impl LeaderElectionOptions {
    /// Upstream's checks: only the `leases` lock, and
    /// leaseDuration > renewDeadline > retryPeriod × JitterFactor.
    pub fn validate(&self) -> Result<(), String> {
        if self.resource_lock != "leases" {
            return Err(format!(
                "--leader-elect-resource-lock={}: only leases is supported",
                self.resource_lock
            ));
        }
        if !self.leader_elect {
            return Ok(());
        }
        if self.resource_namespace.is_empty() {
            return Err("--leader-elect-resource-namespace must not be empty".into());
        }
        if self.resource_name.as_deref() == Some("") {
            return Err("--leader-elect-resource-name must not be empty".into());
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(format!(
                "--leader-elect-lease-duration ({}) must be greater than --leader-elect-renew-deadline ({})",
                format_duration(self.lease_duration),
                format_duration(self.renew_deadline)
            ));
        }
        if self.retry_period.is_zero() {
            return Err("--leader-elect-retry-period must be greater than zero".into());
        }
        if self.renew_deadline.as_secs_f64() <= JITTER_FACTOR * self.retry_period.as_secs_f64() {
            return Err(format!(
                "--leader-elect-renew-deadline ({}) must be greater than --leader-elect-retry-period ({}) × {JITTER_FACTOR}",
                format_duration(self.renew_deadline),
                format_duration(self.retry_period)
            ));
        }
        if self.lease_duration < Duration::from_secs(1) {
            // The Lease stores whole seconds.
            return Err(format!(
                "--leader-elect-lease-duration ({}) must be at least 1s",
                format_duration(self.lease_duration)
            ));
        }
        Ok(())
    }
}

/// The HTTPS endpoint for /healthz, /livez, /readyz and /metrics: upstream's
/// `--bind-address`, `--secure-port` and serving certificate flags.
#[derive(clap::Args, Clone, Debug)]
pub struct SecureServingOptions {
    /// The IP address on which to listen for the --secure-port port.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,

    /// The port on which to serve HTTPS (default: the component's upstream port).
    /// 0 picks a free port; upstream's "0 disables serving" is left to each daemon.
    #[arg(long)]
    pub secure_port: Option<u16>,

    /// File containing the default x509 certificate for HTTPS (CA cert, if any,
    /// concatenated after server cert). If neither this nor --tls-private-key-file is
    /// given, a self-signed certificate and key are generated.
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,

    /// File containing the default x509 private key matching --tls-cert-file.
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,

    /// The directory where the self-signed TLS certificate is kept
    /// (`serving.crt`, `serving.key`). Without it the certificate lives in memory only.
    #[arg(long)]
    pub cert_dir: Option<PathBuf>,

    // Who may read this endpoint: upstream's delegated authentication and authorization.
    #[command(flatten)]
    pub auth: DelegatedAuthOptions,
}

/// Upstream's `DelegatingAuthenticationOptions` and `DelegatingAuthorizationOptions`:
/// requests to the secure port are authenticated with a TokenReview (bearer tokens) or
/// the `--client-ca-file` (x509 client certificates), and authorized with a
/// SubjectAccessReview, both sent to the apiserver.
#[derive(clap::Args, Clone, Debug)]
pub struct DelegatedAuthOptions {
    /// kubeconfig file pointing at the 'core' kubernetes server with enough rights to
    /// create tokenreviews.authentication.k8s.io. pikube: when unset, the daemon's own
    /// --kubeconfig client is used (upstream would fall back to anonymous only).
    #[arg(long)]
    pub authentication_kubeconfig: Option<PathBuf>,

    /// kubeconfig file pointing at the 'core' kubernetes server with enough rights to
    /// create subjectaccessreviews.authorization.k8s.io. pikube: when unset, the daemon's
    /// own --kubeconfig client is used.
    #[arg(long)]
    pub authorization_kubeconfig: Option<PathBuf>,

    /// If set, any request presenting a client certificate signed by one of the
    /// authorities in the client-ca-file is authenticated with an identity corresponding
    /// to the CommonName of the client certificate (and its Organizations as groups).
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,

    /// A list of HTTP paths to skip during authorization, i.e. these are authorized
    /// without contacting the 'core' kubernetes server. An entry ending in `*` is a prefix.
    #[arg(
        long,
        value_delimiter = ',',
        default_values = ["/healthz", "/readyz", "/livez"],
    )]
    pub authorization_always_allow_paths: Vec<String>,

    /// The duration to cache responses from the webhook token authenticator.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub authentication_token_webhook_cache_ttl: Duration,

    /// The duration to cache 'authorized' responses from the webhook authorizer.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub authorization_webhook_cache_authorized_ttl: Duration,

    /// The duration to cache 'unauthorized' responses from the webhook authorizer.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub authorization_webhook_cache_unauthorized_ttl: Duration,

    /// Accepted and ignored: pikube does not look up the
    /// extension-apiserver-authentication ConfigMap (use --client-ca-file).
    #[arg(
        long,
        default_value_t = false,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = ArgAction::Set,
    )]
    pub authentication_skip_lookup: bool,
}

impl Default for DelegatedAuthOptions {
    fn default() -> Self {
        DelegatedAuthOptions {
            authentication_kubeconfig: None,
            authorization_kubeconfig: None,
            client_ca_file: None,
            authorization_always_allow_paths: ["/healthz", "/readyz", "/livez"]
                .map(String::from)
                .to_vec(),
            authentication_token_webhook_cache_ttl: Duration::from_secs(10),
            authorization_webhook_cache_authorized_ttl: Duration::from_secs(10),
            authorization_webhook_cache_unauthorized_ttl: Duration::from_secs(10),
            authentication_skip_lookup: false,
        }
    }
}

impl Default for SecureServingOptions {
    fn default() -> Self {
        SecureServingOptions {
            bind_address: IpAddr::from([0, 0, 0, 0]),
            secure_port: None,
            tls_cert_file: None,
            tls_private_key_file: None,
            cert_dir: None,
            auth: DelegatedAuthOptions::default(),
        }
    }
}

impl SecureServingOptions {
    /// `--secure-port`, or the component's upstream default (10259 for kube-scheduler).
    pub fn port_or(&self, default: u16) -> u16 {
        self.secure_port.unwrap_or(default)
    }

    /// Only both or neither of the certificate and key files; a readable
    /// `--client-ca-file` holding a certificate.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.tls_cert_file, &self.tls_private_key_file) {
            (Some(_), None) => return Err("--tls-cert-file requires --tls-private-key-file".into()),
            (None, Some(_)) => return Err("--tls-private-key-file requires --tls-cert-file".into()),
            _ => {}
        }
        if let Some(path) = &self.auth.client_ca_file {
            validate_client_ca_file(path)?;
        }
        Ok(())
    }
}

/// Parses this process's command line, or ends the process as every pikube command
/// does: `--help` and `--version` print to stdout and exit 0; any other refusal (an
/// unknown flag, a value that does not parse, a missing argument) prints clap's message
/// to stderr and exits [`crate::EXIT_USAGE`]. clap alone exits 2, which systemd's
/// `RestartPreventExitStatus=64` would restart in a loop.
pub fn parse_or_exit<T: clap::Parser>() -> T {
    parse_from_or_exit(std::env::args_os())
}

/// [`parse_or_exit`] for a given command line, the program name first as in `argv`
/// (behind a multi-call binary, the arguments that follow its subcommand).
pub fn parse_from_or_exit<T, I, A>(args: I) -> T
where
    T: clap::Parser,
    I: IntoIterator<Item = A>,
    A: Into<std::ffi::OsString> + Clone,
{
    T::try_parse_from(args).unwrap_or_else(|e| {
        let code = exit_code(&e);
        // `print` writes help and version to stdout, errors to stderr.
        let _ = e.print();
        std::process::exit(code)
    })
}

/// The exit code for a command line clap refused: 0 when it asked for help or the
/// version, [`crate::EXIT_USAGE`] otherwise.
pub fn exit_code(e: &clap::Error) -> i32 {
    if e.use_stderr() {
        crate::EXIT_USAGE
    } else {
        0
    }
}

/// `--client-ca-file` must be readable and hold at least one PEM certificate.
pub fn validate_client_ca_file(path: &std::path::Path) -> Result<(), String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("--client-ca-file {}: {e}", path.display()))?;
    if rustls_pemfile::certs(&mut pem.as_slice()).any(|c| c.is_ok()) {
        Ok(())
    } else {
        Err(format!(
            "--client-ca-file {}: holds no PEM certificate",
            path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        kube: KubeconfigOptions,
        #[command(flatten)]
        le: LeaderElectionOptions,
        #[command(flatten)]
        serving: SecureServingOptions,
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("daemon").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_upstreams() {
        let cli = parse(&[]).unwrap();
        assert_eq!(cli.kube.kubeconfig, None);
        assert_eq!(cli.kube.kube_api_qps, 50.0);
        assert_eq!(cli.kube.kube_api_burst, 100);
        assert_eq!(
            cli.kube.kube_api_content_type,
            "application/vnd.kubernetes.protobuf"
        );
        assert!(cli.le.leader_elect);
        assert_eq!(cli.le.lease_duration, Duration::from_secs(15));
        assert_eq!(cli.le.renew_deadline, Duration::from_secs(10));
        assert_eq!(cli.le.retry_period, Duration::from_secs(2));
        assert_eq!(cli.le.resource_lock, "leases");
        assert_eq!(cli.le.resource_name, None);
        assert_eq!(cli.le.resource_namespace, "kube-system");
        cli.le.validate().unwrap();
        assert_eq!(cli.serving.bind_address, IpAddr::from([0, 0, 0, 0]));
        assert_eq!(cli.serving.port_or(10259), 10259);
        let d = LeaderElectionOptions::default();
        assert_eq!(
            (
                d.leader_elect,
                d.lease_duration,
                d.renew_deadline,
                d.retry_period
            ),
            (
                cli.le.leader_elect,
                cli.le.lease_duration,
                cli.le.renew_deadline,
                cli.le.retry_period
            )
        );
    }

    #[test]
    fn leader_elect_takes_go_style_booleans() {
        assert!(parse(&["--leader-elect"]).unwrap().le.leader_elect);
        assert!(parse(&["--leader-elect=true"]).unwrap().le.leader_elect);
        assert!(!parse(&["--leader-elect=false"]).unwrap().le.leader_elect);
        // As Go's flag package: a bool flag never takes the next argument as its value.
        assert!(parse(&["--leader-elect", "false"]).is_err());
        let cli = parse(&["--leader-elect", "--leader-elect-retry-period=1s"]).unwrap();
        assert!(cli.le.leader_elect);
        assert_eq!(cli.le.retry_period, Duration::from_secs(1));
    }

    #[test]
    fn durations_are_go_durations() {
        let cli = parse(&[
            "--leader-elect-lease-duration=1m30s",
            "--leader-elect-renew-deadline",
            "20s",
            "--leader-elect-retry-period=500ms",
        ])
        .unwrap();
        assert_eq!(cli.le.lease_duration, Duration::from_secs(90));
        assert_eq!(cli.le.renew_deadline, Duration::from_secs(20));
        assert_eq!(cli.le.retry_period, Duration::from_millis(500));
        cli.le.validate().unwrap();
        let err = parse(&["--leader-elect-lease-duration=15"]).unwrap_err();
        assert!(err.to_string().contains("invalid duration"), "{err}");
        assert!(parse(&["--leader-elect-retry-period=-1s"]).is_err());
    }

    #[test]
    fn validation_follows_upstream() {
        let ok = LeaderElectionOptions::default();
        ok.validate().unwrap();

        let lock = LeaderElectionOptions {
            resource_lock: "endpointsleases".into(),
            ..ok.clone()
        };
        assert!(lock
            .validate()
            .unwrap_err()
            .contains("only leases is supported"));

        let renew_too_long = LeaderElectionOptions {
            renew_deadline: Duration::from_secs(15),
            ..ok.clone()
        };
        assert!(renew_too_long
            .validate()
            .unwrap_err()
            .contains("--leader-elect-lease-duration (15s) must be greater"));

        // 10s is not more than 9s × 1.2.
        let retry_too_long = LeaderElectionOptions {
            retry_period: Duration::from_secs(9),
            ..ok.clone()
        };
        assert!(retry_too_long
            .validate()
            .unwrap_err()
            .contains("--leader-elect-retry-period (9s)"));

        // Timing is not checked when leader election is off, the lock type always is.
        let off = LeaderElectionOptions {
            leader_elect: false,
            retry_period: Duration::from_secs(60),
            ..ok.clone()
        };
        off.validate().unwrap();
    }

    #[test]
    fn serving_flags() {
        let cli = parse(&[
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--cert-dir=/var/lib/kube-scheduler",
        ])
        .unwrap();
        assert_eq!(cli.serving.bind_address, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(cli.serving.port_or(10259), 0);
        cli.serving.validate().unwrap();
        let half = parse(&["--tls-cert-file=/tmp/a.crt"]).unwrap();
        assert!(half.serving.validate().is_err());
    }

    #[test]
    fn delegated_auth_flags() {
        let cli = parse(&[]).unwrap();
        let d = DelegatedAuthOptions::default();
        assert_eq!(
            cli.serving.auth.authorization_always_allow_paths,
            ["/healthz", "/readyz", "/livez"]
        );
        assert_eq!(
            d.authorization_always_allow_paths,
            cli.serving.auth.authorization_always_allow_paths
        );
        assert_eq!(
            cli.serving.auth.authentication_token_webhook_cache_ttl,
            Duration::from_secs(10)
        );
        let cli = parse(&[
            "--authorization-always-allow-paths=/healthz,/metrics/*",
            "--client-ca-file=/etc/kubernetes/pki/ca.crt",
            "--authentication-kubeconfig=/etc/kubernetes/scheduler.conf",
            "--authorization-webhook-cache-unauthorized-ttl=30s",
            "--authentication-skip-lookup",
        ])
        .unwrap();
        let a = &cli.serving.auth;
        assert_eq!(
            a.authorization_always_allow_paths,
            ["/healthz", "/metrics/*"]
        );
        assert_eq!(
            a.client_ca_file.as_deref(),
            Some(std::path::Path::new("/etc/kubernetes/pki/ca.crt"))
        );
        assert_eq!(
            a.authorization_webhook_cache_unauthorized_ttl,
            Duration::from_secs(30)
        );
        assert!(a.authentication_skip_lookup);
        let err = cli.serving.validate().unwrap_err();
        assert!(
            err.starts_with("--client-ca-file /etc/kubernetes/pki/ca.crt: "),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.crt");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let mut serving = cli.serving.clone();
        serving.auth.client_ca_file = Some(empty);
        assert!(serving
            .validate()
            .unwrap_err()
            .ends_with("holds no PEM certificate"));
    }

    #[test]
    fn user_agent_is_upstreams_form() {
        let agent = user_agent("kube-scheduler");
        assert!(
            agent.starts_with("kube-scheduler/v1.33.0 (linux/"),
            "{agent}"
        );
        assert!(agent.ends_with(") pikube"), "{agent}");
    }

    #[tokio::test]
    async fn master_overrides_the_server() {
        let opts = KubeconfigOptions {
            master: Some("https://10.0.0.1:6443".into()),
            ..Default::default()
        };
        let config = opts.config("kube-scheduler").await.unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://10.0.0.1:6443/");
        assert!(config
            .headers
            .iter()
            .any(|(k, v)| k == http::header::USER_AGENT
                && v.to_str().unwrap().starts_with("kube-scheduler/")));
        let bad = KubeconfigOptions {
            master: Some("not a url".into()),
            ..Default::default()
        };
        assert!(matches!(
            bad.config("x").await,
            Err(ClientError::Master { .. })
        ));
    }

    #[tokio::test]
    async fn kubeconfig_file_with_master_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://192.168.1.10:6443\nusers:\n- name: u\n  user:\n    token: abc\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n",
        )
        .unwrap();
        let from_file = KubeconfigOptions {
            kubeconfig: Some(path.clone()),
            ..Default::default()
        };
        let config = from_file.config("kube-scheduler").await.unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://192.168.1.10:6443/");
        let overridden = KubeconfigOptions {
            kubeconfig: Some(path),
            master: Some("https://192.168.1.11:6443".into()),
            ..Default::default()
        };
        let config = overridden.config("kube-scheduler").await.unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://192.168.1.11:6443/");
        let missing = KubeconfigOptions {
            kubeconfig: Some(dir.path().join("absent")),
            ..Default::default()
        };
        assert!(matches!(
            missing.config("x").await,
            Err(ClientError::ReadKubeconfig { .. })
        ));
    }

    #[test]
    fn refused_command_lines_exit_64_help_and_version_0() {
        #[derive(Parser, Debug)]
        #[command(name = "daemon", version = KUBERNETES_VERSION)]
        struct Versioned {
            #[command(flatten)]
            serving: SecureServingOptions,
        }
        let versioned = |arg: &str| Versioned::try_parse_from(["daemon", arg]).unwrap_err();
        assert_eq!(exit_code(&versioned("--help")), 0);
        assert_eq!(exit_code(&versioned("--version")), 0);
        let bogus = parse(&["--bogus"]).unwrap_err();
        assert_eq!(exit_code(&bogus), crate::EXIT_USAGE);
        assert!(bogus.to_string().contains("--bogus"), "{bogus}");
        let bad_value = parse(&["--secure-port=notanumber"]).unwrap_err();
        assert_eq!(exit_code(&bad_value), crate::EXIT_USAGE);
        assert!(
            bad_value.to_string().contains("--secure-port"),
            "{bad_value}"
        );
        let missing_value = parse(&["--kubeconfig"]).unwrap_err();
        assert_eq!(exit_code(&missing_value), crate::EXIT_USAGE);
    }
}
