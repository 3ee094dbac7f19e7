//! A pod's CRI sandbox configuration (upstream `kuberuntime_sandbox.go`): metadata,
//! hostname, DNS, port mappings, log directory, cgroup parent and namespaces.

use std::collections::HashMap;
use std::path::Path;

use k8s_openapi::api::core::v1::Pod;

use super::labels;
use crate::cri::api;

/// What the sandbox configuration needs besides the pod.
#[derive(Clone, Debug)]
pub struct SandboxSettings<'a> {
    pub cluster_dns: &'a [std::net::IpAddr],
    pub cluster_domain: &'a str,
    /// `--resolv-conf`.
    pub resolv_conf: Option<&'a Path>,
    pub pod_logs_dir: &'a Path,
    pub cgroup_parent: String,
}

/// `<namespace>_<name>_<uid>` under the pod logs directory, as upstream.
pub fn log_directory(pod_logs_dir: &Path, namespace: &str, name: &str, uid: &str) -> String {
    pod_logs_dir
        .join(format!("{namespace}_{name}_{uid}"))
        .to_string_lossy()
        .into_owned()
}

pub fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The pod's hostname: spec.hostname or the pod name, at most 63 characters.
fn hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
    name.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(['-', '.'])
        .to_owned()
}

/// Upstream's resolver limits: the first 3 nameservers and 32 search domains are kept.
pub const MAX_DNS_NAMESERVERS: usize = 3;
pub const MAX_DNS_SEARCH_PATHS: usize = 32;
/// Upstream's `MaxDNSSearchListChars`.
pub const MAX_DNS_SEARCH_LIST_CHARS: usize = 2048;

/// The nameservers, search domains and options of a resolv.conf (later `search` lines
/// replace earlier ones, as the resolver reads them).
pub fn parse_resolv_conf(text: &str) -> api::DnsConfig {
    let mut config = api::DnsConfig::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => config.servers.extend(words.next().map(str::to_owned)),
            Some("search") => config.searches = words.map(str::to_owned).collect(),
            Some("options") => config.options.extend(words.map(str::to_owned)),
            _ => {}
        }
    }
    config
}

fn dedup(items: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    items.retain(|x| seen.insert(x.clone()));
}

/// The resolver configuration per dnsPolicy (upstream `dns.GetPodDNS`): the cluster's
/// (ClusterFirst, and ClusterFirstWithHostNet, with `--cluster-dns`), the host's
/// `--resolv-conf` (Default, and ClusterFirst without cluster DNS or on the host
/// network; with `--resolv-conf=""`, 127.0.0.1 and search "."), or nothing (None), then
/// `spec.dnsConfig` merged in and cut to upstream's limits. Every pod gets one, host
/// network included (None only for a pod without a spec).
pub fn dns_config(pod: &Pod, settings: &SandboxSettings<'_>) -> Option<api::DnsConfig> {
    let spec = pod.spec.as_ref()?;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network(pod),
        _ => false,
    };
    let mut config = if policy == "None" {
        api::DnsConfig::default()
    } else if cluster && !settings.cluster_dns.is_empty() {
        let mut config = api::DnsConfig {
            servers: settings
                .cluster_dns
                .iter()
                .map(ToString::to_string)
                .collect(),
            options: vec!["ndots:5".into()],
            ..Default::default()
        };
        if !settings.cluster_domain.is_empty() {
            let d = settings.cluster_domain;
            config.searches = vec![
                format!("{namespace}.svc.{d}"),
                format!("svc.{d}"),
                d.to_owned(),
            ];
        }
        // The host's search domains follow the cluster's.
        let host = settings
            .resolv_conf
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| parse_resolv_conf(&t))
            .unwrap_or_default();
        config.searches.extend(host.searches);
        config
    } else {
        match settings.resolv_conf {
            Some(path) => parse_resolv_conf(&std::fs::read_to_string(path).unwrap_or_default()),
            // `--resolv-conf=""`: upstream points pods at the local machine and searches
            // nothing, which in effect disables lookups (an empty configuration would
            // make the runtime copy the host's /etc/resolv.conf instead).
            None => api::DnsConfig {
                servers: vec!["127.0.0.1".into()],
                searches: vec![".".into()],
                ..Default::default()
            },
        }
    };
    if let Some(extra) = &spec.dns_config {
        config
            .servers
            .extend(extra.nameservers.iter().flatten().cloned());
        config
            .searches
            .extend(extra.searches.iter().flatten().cloned());
        for o in extra.options.iter().flatten() {
            let Some(name) = &o.name else { continue };
            config
                .options
                .retain(|x| x.split(':').next() != Some(name.as_str()));
            config.options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name.clone(),
            });
        }
    }
    dedup(&mut config.servers);
    dedup(&mut config.searches);
    config.servers.truncate(MAX_DNS_NAMESERVERS);
    config.searches.truncate(MAX_DNS_SEARCH_PATHS);
    // Upstream's limit on the search line: whole domains up to 2048 characters.
    let mut chars = 0;
    config.searches.retain(|d| {
        chars += d.len() + 1;
        chars <= MAX_DNS_SEARCH_LIST_CHARS + 1
    });
    Some(config)
}

fn port_mappings(pod: &Pod) -> Vec<api::PortMapping> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| api::PortMapping {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => api::Protocol::Udp,
                Some("SCTP") => api::Protocol::Sctp,
                _ => api::Protocol::Tcp,
            }
            .into(),
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect()
}

/// The namespaces of the pod's containers.
pub fn namespace_options(pod: &Pod) -> api::NamespaceOption {
    let spec = pod.spec.as_ref();
    let mode = |host: Option<bool>, shared: api::NamespaceMode| {
        if host.unwrap_or(false) {
            api::NamespaceMode::Node
        } else {
            shared
        }
    };
    let pid_shared = if spec
        .and_then(|s| s.share_process_namespace)
        .unwrap_or(false)
    {
        api::NamespaceMode::Pod
    } else {
        api::NamespaceMode::Container
    };
    api::NamespaceOption {
        network: mode(spec.and_then(|s| s.host_network), api::NamespaceMode::Pod).into(),
        pid: mode(spec.and_then(|s| s.host_pid), pid_shared).into(),
        ipc: mode(spec.and_then(|s| s.host_ipc), api::NamespaceMode::Pod).into(),
        ..Default::default()
    }
}

/// The sandbox configuration for `pod` at `attempt`.
pub fn sandbox_config(
    pod: &Pod,
    attempt: u32,
    settings: &SandboxSettings<'_>,
) -> api::PodSandboxConfig {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut sandbox_labels: HashMap<String, String> = pod
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    sandbox_labels.extend(labels::pod_labels(&namespace, &name, &uid));
    let annotations = pod
        .metadata
        .annotations
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let spec = pod.spec.as_ref();
    let security = spec.and_then(|s| s.security_context.as_ref());
    let privileged = spec.is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| {
                c.security_context
                    .as_ref()
                    .and_then(|sc| sc.privileged)
                    .unwrap_or(false)
            })
    });
    let sysctls = security
        .and_then(|s| s.sysctls.as_ref())
        .map(|s| {
            s.iter()
                .map(|x| (x.name.clone(), x.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    let host_net = host_network(pod);
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.clone(),
            uid: uid.clone(),
            namespace: namespace.clone(),
            attempt,
        }),
        // A host-network sandbox keeps the node's hostname.
        hostname: if host_net {
            String::new()
        } else {
            hostname(pod)
        },
        log_directory: log_directory(settings.pod_logs_dir, &namespace, &name, &uid),
        dns_config: dns_config(pod, settings),
        port_mappings: port_mappings(pod),
        labels: sandbox_labels,
        annotations,
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: settings.cgroup_parent.clone(),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(pod)),
                privileged,
                run_as_user: security
                    .and_then(|s| s.run_as_user)
                    .map(|value| api::Int64Value { value }),
                run_as_group: security
                    .and_then(|s| s.run_as_group)
                    .map(|value| api::Int64Value { value }),
                supplemental_groups: security
                    .and_then(|s| s.supplemental_groups.clone())
                    .unwrap_or_default(),
                ..Default::default()
            }),
            sysctls,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns1", "uid": "u-1", "labels": {"app": "web"}},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn sandbox_config_as_upstream() {
        let dns = ["10.96.0.10".parse().unwrap()];
        let settings = SandboxSettings {
            cluster_dns: &dns,
            cluster_domain: "cluster.local",
            resolv_conf: None,
            pod_logs_dir: Path::new("/var/log/pods"),
            cgroup_parent: "/kubepods/besteffort/podu-1".into(),
        };
        let p = pod(
            serde_json::json!({"containers": [{"name": "c", "image": "i",
            "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81}]}]}),
        );
        let c = sandbox_config(&p, 2, &settings);
        let meta = c.metadata.unwrap();
        assert_eq!(
            (meta.name.as_str(), meta.namespace.as_str(), meta.attempt),
            ("web", "ns1", 2)
        );
        assert_eq!(c.hostname, "web");
        assert_eq!(c.log_directory, "/var/log/pods/ns1_web_u-1");
        assert_eq!(c.labels[labels::POD_UID], "u-1");
        assert_eq!(c.labels["app"], "web");
        let dns = c.dns_config.unwrap();
        assert_eq!(dns.servers, vec!["10.96.0.10"]);
        assert_eq!(
            dns.searches,
            vec![
                "ns1.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        assert_eq!(dns.options, vec!["ndots:5"]);
        assert_eq!(c.port_mappings.len(), 1);
        assert_eq!(c.port_mappings[0].host_port, 8080);
        assert_eq!(
            c.linux.unwrap().cgroup_parent,
            "/kubepods/besteffort/podu-1"
        );

        let host = pod(
            serde_json::json!({"hostNetwork": true, "containers": [{"name": "c", "image": "i"}]}),
        );
        let c = sandbox_config(&host, 0, &settings);
        assert_eq!(c.hostname, "");
        // ClusterFirst on the host network is Default; with `--resolv-conf=""` that
        // points at the local machine, as upstream (never the runtime's own copy).
        let dns = c.dns_config.unwrap();
        assert_eq!(dns.servers, vec!["127.0.0.1"]);
        assert_eq!(dns.searches, vec!["."]);
        let ns = c
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(ns.network(), api::NamespaceMode::Node);
    }

    #[test]
    fn dns_default_policy_starts_from_resolv_conf_and_merges_dns_config() {
        let dir = tempfile::tempdir().unwrap();
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(
            &resolv,
            "# host\nnameserver 192.0.2.1\nnameserver 192.0.2.2 # second\nsearch old.example\n\
             search lan home.arpa\noptions ndots:1 edns0\n",
        )
        .unwrap();
        let dns = ["10.96.0.10".parse().unwrap()];
        let settings = SandboxSettings {
            cluster_dns: &dns,
            cluster_domain: "cluster.local",
            resolv_conf: Some(&resolv),
            pod_logs_dir: Path::new("/var/log/pods"),
            cgroup_parent: String::new(),
        };
        let p = pod(serde_json::json!({"dnsPolicy": "Default",
            "dnsConfig": {"nameservers": ["192.0.2.1", "192.0.2.9"], "searches": ["extra.example"],
                "options": [{"name": "ndots", "value": "3"}, {"name": "rotate"}]},
            "containers": [{"name": "c", "image": "i"}]}));
        let c = dns_config(&p, &settings).unwrap();
        assert_eq!(c.servers, vec!["192.0.2.1", "192.0.2.2", "192.0.2.9"]);
        assert_eq!(c.searches, vec!["lan", "home.arpa", "extra.example"]);
        assert_eq!(c.options, vec!["edns0", "ndots:3", "rotate"]);

        // ClusterFirst: the cluster's servers, its searches then the host's.
        let p = pod(serde_json::json!({"containers": [{"name": "c", "image": "i"}]}));
        let c = dns_config(&p, &settings).unwrap();
        assert_eq!(c.servers, vec!["10.96.0.10"]);
        assert_eq!(
            c.searches,
            vec![
                "ns1.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "lan",
                "home.arpa"
            ]
        );

        // Without cluster DNS, ClusterFirst falls back to the host's configuration.
        let none: [std::net::IpAddr; 0] = [];
        let host = SandboxSettings {
            cluster_dns: &none,
            ..settings.clone()
        };
        let c = dns_config(&p, &host).unwrap();
        assert_eq!(c.servers, vec!["192.0.2.1", "192.0.2.2"]);

        // None: only what dnsConfig says.
        let p = pod(serde_json::json!({"dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["192.0.2.53"]},
            "containers": [{"name": "c", "image": "i"}]}));
        let c = dns_config(&p, &settings).unwrap();
        assert_eq!(c.servers, vec!["192.0.2.53"]);
        assert!(c.searches.is_empty());

        // Host network: ClusterFirst and Default read --resolv-conf (not whatever the
        // runtime would copy); ClusterFirstWithHostNet gets the cluster's servers.
        for policy in ["ClusterFirst", "Default"] {
            let p = pod(serde_json::json!({"dnsPolicy": policy, "hostNetwork": true,
                "containers": [{"name": "c", "image": "i"}]}));
            let c = dns_config(&p, &settings).unwrap();
            assert_eq!(c.servers, vec!["192.0.2.1", "192.0.2.2"], "{policy}");
            assert_eq!(c.searches, vec!["lan", "home.arpa"], "{policy}");
        }
        let p = pod(
            serde_json::json!({"dnsPolicy": "ClusterFirstWithHostNet", "hostNetwork": true,
            "containers": [{"name": "c", "image": "i"}]}),
        );
        let c = dns_config(&p, &settings).unwrap();
        assert_eq!(c.servers, vec!["10.96.0.10"]);
        assert_eq!(c.options, vec!["ndots:5"]);

        // --resolv-conf="": lookups go nowhere (upstream's 127.0.0.1, search ".").
        let no_resolv = SandboxSettings {
            resolv_conf: None,
            ..settings.clone()
        };
        let p = pod(
            serde_json::json!({"dnsPolicy": "Default", "containers": [{"name": "c", "image": "i"}]}),
        );
        let c = dns_config(&p, &no_resolv).unwrap();
        assert_eq!(c.servers, vec!["127.0.0.1"]);
        assert_eq!(c.searches, vec!["."]);

        // The search line is capped at 2048 characters, whole domains.
        let long: Vec<String> = (0..40)
            .map(|i| format!("{i:02}{}", "x".repeat(98)))
            .collect();
        let p = pod(serde_json::json!({"dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["192.0.2.53"], "searches": long},
            "containers": [{"name": "c", "image": "i"}]}));
        let c = dns_config(&p, &settings).unwrap();
        assert_eq!(c.searches.len(), 20);
    }
}
