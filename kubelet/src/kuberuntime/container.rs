//! A container's CRI configuration (upstream `kuberuntime_container.go` and
//! `kuberuntime_container_linux.go`): command and args with `$(VAR)` expansion,
//! environment (plain values and the downward-API fields known to the kubelet), working
//! directory, labels, log path, and resources mapped to cgroup settings.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{Container, Pod};

use super::labels;
use crate::cm::{parse_quantity, QosClass};
use crate::cri::api;

/// The CFS period upstream uses (100 ms).
pub const CPU_PERIOD_US: i64 = 100_000;
const MIN_SHARES: i64 = 2;
const MIN_QUOTA_US: i64 = 1000;

/// Values the environment may refer to through `fieldRef`.
#[derive(Clone, Debug, Default)]
pub struct PodFields {
    pub pod_ip: String,
    pub host_ip: String,
    pub node_name: String,
}

pub fn field_value(pod: &Pod, path: &str, fields: &PodFields) -> Option<String> {
    let m = &pod.metadata;
    Some(match path {
        "metadata.name" => m.name.clone()?,
        "metadata.namespace" => m.namespace.clone()?,
        "metadata.uid" => m.uid.clone()?,
        "spec.nodeName" => fields.node_name.clone(),
        "spec.serviceAccountName" => pod.spec.as_ref()?.service_account_name.clone()?,
        "status.podIP" => fields.pod_ip.clone(),
        "status.podIPs" => fields.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => fields.host_ip.clone(),
        other => {
            if let Some(key) = other
                .strip_prefix("metadata.labels['")
                .and_then(|k| k.strip_suffix("']"))
            {
                m.labels.as_ref()?.get(key)?.clone()
            } else if let Some(key) = other
                .strip_prefix("metadata.annotations['")
                .and_then(|k| k.strip_suffix("']"))
            {
                m.annotations.as_ref()?.get(key)?.clone()
            } else {
                return None;
            }
        }
    })
}

/// Expands `$(VAR)` from `env` as upstream's `expansion.Expand`: `$$` escapes, unknown
/// references stay as written.
pub fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match env.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The ConfigMaps and Secrets a container's environment refers to, as read from the API
/// (None: not found).
#[derive(Clone, Debug, Default)]
pub struct EnvSources {
    pub config_maps: HashMap<String, Option<BTreeMap<String, String>>>,
    pub secrets: HashMap<String, Option<BTreeMap<String, String>>>,
}

impl EnvSources {
    /// The names of the ConfigMaps and Secrets `container` refers to.
    pub fn wanted(container: &Container) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut config_maps = BTreeSet::new();
        let mut secrets = BTreeSet::new();
        for e in container.env_from.iter().flatten() {
            if let Some(r) = &e.config_map_ref {
                config_maps.insert(r.name.clone());
            }
            if let Some(r) = &e.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
        for e in container.env.iter().flatten() {
            let Some(from) = &e.value_from else { continue };
            if let Some(r) = &from.config_map_key_ref {
                config_maps.insert(r.name.clone());
            }
            if let Some(r) = &from.secret_key_ref {
                secrets.insert(r.name.clone());
            }
        }
        (config_maps, secrets)
    }
}

/// Whether `name` may be an environment variable (upstream's relaxed rule: printable
/// ASCII but `=`).
fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_graphic() && c != '=')
}

/// The container's environment in order (upstream `makeEnvironmentVariables`): envFrom
/// sources first, then env entries, which may refer to earlier ones with `$(VAR)`.
/// Err: why the container cannot be configured (CreateContainerConfigError).
pub fn environment(
    pod: &Pod,
    container: &Container,
    fields: &PodFields,
    sources: &EnvSources,
) -> Result<Vec<(String, String)>, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(key, _)| *key != k);
        env.push((k, v));
    };
    for e in container.env_from.iter().flatten() {
        let prefix = e.prefix.clone().unwrap_or_default();
        let (data, kind, name, optional) = if let Some(r) = &e.config_map_ref {
            (
                sources.config_maps.get(&r.name),
                "configmap",
                &r.name,
                r.optional,
            )
        } else if let Some(r) = &e.secret_ref {
            (sources.secrets.get(&r.name), "secret", &r.name, r.optional)
        } else {
            continue;
        };
        match data.and_then(Option::as_ref) {
            Some(data) => {
                for (k, v) in data {
                    let key = format!("{prefix}{k}");
                    if valid_env_name(&key) {
                        set(&mut env, key, v.clone());
                    }
                }
            }
            None if optional.unwrap_or(false) => {}
            None => return Err(format!("{kind} \"{name}\" not found")),
        }
    }
    for e in container.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            expand(v, &env)
        } else if let Some(source) = &e.value_from {
            if let Some(f) = &source.field_ref {
                field_value(pod, &f.field_path, fields).unwrap_or_default()
            } else if let Some(r) = &source.resource_field_ref {
                resource_field(container, &r.resource).unwrap_or_default()
            } else if let Some(r) = &source.config_map_key_ref {
                match sources.config_maps.get(&r.name).and_then(Option::as_ref) {
                    Some(data) => match data.get(&r.key) {
                        Some(v) => v.clone(),
                        None if r.optional.unwrap_or(false) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in ConfigMap {namespace}/{}",
                                r.key, r.name
                            ))
                        }
                    },
                    None if r.optional.unwrap_or(false) => continue,
                    None => return Err(format!("configmap \"{}\" not found", r.name)),
                }
            } else if let Some(r) = &source.secret_key_ref {
                match sources.secrets.get(&r.name).and_then(Option::as_ref) {
                    Some(data) => match data.get(&r.key) {
                        Some(v) => v.clone(),
                        None if r.optional.unwrap_or(false) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in Secret {namespace}/{}",
                                r.key, r.name
                            ))
                        }
                    },
                    None if r.optional.unwrap_or(false) => continue,
                    None => return Err(format!("secret \"{}\" not found", r.name)),
                }
            } else {
                continue;
            }
        } else {
            String::new()
        };
        set(&mut env, e.name.clone(), value);
    }
    Ok(env)
}

fn resource_field(container: &Container, resource: &str) -> Option<String> {
    let r = container.resources.as_ref()?;
    let (map, key) = match resource.split_once('.') {
        Some(("limits", k)) => (r.limits.as_ref()?, k),
        Some(("requests", k)) => (r.requests.as_ref()?, k),
        _ => return None,
    };
    let nanos = parse_quantity(&map.get(key)?.0)?;
    // cpu rounds up to whole cores, memory is in bytes, as upstream's default divisor.
    let unit = 1_000_000_000_i128;
    Some(((nanos + unit - 1) / unit).to_string())
}

/// The cgroup settings of a container's resources (upstream
/// `generateLinuxContainerResources`): shares from the cpu request (or limit), quota from
/// the cpu limit, the memory limit, and an OOM score by QoS class.
pub fn linux_resources(container: &Container, qos: QosClass) -> api::LinuxContainerResources {
    let r = container.resources.as_ref();
    let get = |which: &str, key: &str| {
        r.and_then(|r| match which {
            "limits" => r.limits.as_ref(),
            _ => r.requests.as_ref(),
        })
        .and_then(|m| m.get(key))
        .and_then(|q| parse_quantity(&q.0))
    };
    let milli = |nanos: i128| i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX);
    let cpu_limit = get("limits", "cpu").map(milli);
    let cpu_request = get("requests", "cpu").map(milli).or(cpu_limit);
    let mut out = api::LinuxContainerResources {
        cpu_period: CPU_PERIOD_US,
        cpu_shares: cpu_request.map_or(MIN_SHARES, |m| (m * 1024 / 1000).max(MIN_SHARES)),
        oom_score_adj: match qos {
            QosClass::Guaranteed => -997,
            QosClass::BestEffort => 1000,
            QosClass::Burstable => 999,
        },
        ..Default::default()
    };
    if let Some(limit) = cpu_limit {
        out.cpu_quota = (limit * CPU_PERIOD_US / 1000).max(MIN_QUOTA_US);
    }
    if let Some(bytes) = get("limits", "memory") {
        out.memory_limit_in_bytes = i64::try_from(bytes / 1_000_000_000).unwrap_or(i64::MAX);
    }
    out
}

/// Whether a container is an init container or a regular one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Init,
    Regular,
}

/// What a container's configuration needs besides its spec.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The image to run, as the runtime knows it (its id).
    pub image_ref: &'a str,
    pub fields: &'a PodFields,
    pub sources: &'a EnvSources,
    pub qos: QosClass,
}

/// The configuration to create `container` of `pod` at `attempt` (its restart count).
pub fn container_config(
    pod: &Pod,
    container: &Container,
    kind: Kind,
    attempt: u32,
    inputs: &Inputs<'_>,
) -> Result<api::ContainerConfig, String> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let env = environment(pod, container, inputs.fields, inputs.sources)?;
    let expand_all = |v: &Option<Vec<String>>| {
        v.iter()
            .flatten()
            .map(|s| expand(s, &env))
            .collect::<Vec<_>>()
    };
    let mut container_labels = labels::pod_labels(&namespace, &name, &uid);
    container_labels.insert(labels::CONTAINER_NAME.into(), container.name.clone());
    container_labels.insert(
        labels::CONTAINER_TYPE.into(),
        match kind {
            Kind::Init => "init",
            Kind::Regular => "regular",
        }
        .into(),
    );
    let grace = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    let mut annotations = HashMap::from([
        (
            labels::CONTAINER_RESTART_COUNT.to_owned(),
            attempt.to_string(),
        ),
        (
            labels::POD_TERMINATION_GRACE_PERIOD.to_owned(),
            grace.to_string(),
        ),
    ]);
    annotations.extend(super::termination::annotations(container));
    let sc = container.security_context.as_ref();
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    let security = api::LinuxContainerSecurityContext {
        namespace_options: Some(super::sandbox::namespace_options(pod)),
        privileged: sc.and_then(|s| s.privileged).unwrap_or(false),
        readonly_rootfs: sc
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
        run_as_user: sc
            .and_then(|s| s.run_as_user)
            .or(pod_sc.and_then(|s| s.run_as_user))
            .map(|value| api::Int64Value { value }),
        run_as_group: sc
            .and_then(|s| s.run_as_group)
            .or(pod_sc.and_then(|s| s.run_as_group))
            .map(|value| api::Int64Value { value }),
        // The pod's supplementalGroups and its fsGroup, which owns its volumes' files.
        supplemental_groups: pod_sc
            .map(|s| {
                let mut groups = s.supplemental_groups.clone().unwrap_or_default();
                groups.extend(s.fs_group.filter(|g| !groups.contains(g)));
                groups
            })
            .unwrap_or_default(),
        capabilities: caps.map(|c| api::Capability {
            add_capabilities: c.add.clone().unwrap_or_default(),
            drop_capabilities: c.drop.clone().unwrap_or_default(),
            ..Default::default()
        }),
        no_new_privs: sc
            .and_then(|s| s.allow_privilege_escalation)
            .is_some_and(|allow| !allow),
        ..Default::default()
    };
    Ok(api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: container.name.clone(),
            attempt,
        }),
        image: Some(api::ImageSpec {
            image: inputs.image_ref.to_owned(),
            user_specified_image: container.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: expand_all(&container.command),
        args: expand_all(&container.args),
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs: env
            .into_iter()
            .map(|(key, value)| api::KeyValue { key, value })
            .collect(),
        labels: container_labels,
        annotations,
        log_path: format!("{}/{attempt}.log", container.name),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        linux: Some(api::LinuxContainerConfig {
            resources: Some(linux_resources(container, inputs.qos)),
            security_context: Some(security),
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns1", "uid": "u-1", "labels": {"app": "web"}},
            "spec": {"containers": [{
                "name": "c", "image": "busybox:1.35",
                "command": ["sh", "-c"], "args": ["echo $(GREETING) $(MISSING) $$(ESCAPED)"],
                "workingDir": "/tmp",
                "env": [
                    {"name": "NAME", "value": "world"},
                    {"name": "GREETING", "value": "hello $(NAME)"},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}}
                ],
                "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}}
            }]}
        }))
        .unwrap()
    }

    #[test]
    fn env_from_config_maps_and_secrets() {
        let p = pod();
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "envFrom": [{"configMapRef": {"name": "cm"}}, {"prefix": "S_", "secretRef": {"name": "sec"}},
                        {"configMapRef": {"name": "absent", "optional": true}}],
            "env": [
                {"name": "ONE", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "one"}}},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pw"}}},
                {"name": "MAYBE", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x", "optional": true}}},
                {"name": "BOTH", "value": "$(ONE)-$(S_pw)"}
            ]
        }))
        .unwrap();
        let (cms, secrets) = EnvSources::wanted(&c);
        assert_eq!(cms.into_iter().collect::<Vec<_>>(), vec!["absent", "cm"]);
        assert_eq!(secrets.into_iter().collect::<Vec<_>>(), vec!["nope", "sec"]);
        let mut sources = EnvSources::default();
        sources.config_maps.insert(
            "cm".into(),
            Some(BTreeMap::from([
                ("one".into(), "1".into()),
                ("bad=key".into(), "x".into()),
            ])),
        );
        sources.config_maps.insert("absent".into(), None);
        sources.secrets.insert(
            "sec".into(),
            Some(BTreeMap::from([("pw".into(), "hunter2".into())])),
        );
        sources.secrets.insert("nope".into(), None);
        let env: HashMap<String, String> = environment(&p, &c, &PodFields::default(), &sources)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(env["one"], "1");
        assert_eq!(env["S_pw"], "hunter2");
        assert_eq!(env["ONE"], "1");
        assert_eq!(env["PW"], "hunter2");
        assert_eq!(env["BOTH"], "1-hunter2");
        assert!(!env.contains_key("MAYBE"));
        assert!(!env.contains_key("bad=key"));

        sources
            .config_maps
            .insert("cm".into(), Some(BTreeMap::new()));
        let err = environment(&p, &c, &PodFields::default(), &sources).unwrap_err();
        assert_eq!(err, "couldn't find key one in ConfigMap ns1/cm");
        sources.config_maps.insert("cm".into(), None);
        let err = environment(&p, &c, &PodFields::default(), &sources).unwrap_err();
        assert_eq!(err, "configmap \"cm\" not found");
    }

    #[test]
    fn expansion_as_upstream() {
        let env = vec![("A".to_owned(), "1".to_owned())];
        assert_eq!(expand("$(A)-$(B)-$$(A)-$-$(", &env), "1-$(B)-$(A)-$-$(");
    }

    #[test]
    fn container_config_from_spec() {
        let p = pod();
        let c = &p.spec.as_ref().unwrap().containers[0];
        let fields = PodFields {
            pod_ip: "10.244.0.5".into(),
            host_ip: "10.0.0.1".into(),
            node_name: "n1".into(),
        };
        let cfg = container_config(
            &p,
            c,
            Kind::Regular,
            3,
            &Inputs {
                image_ref: "sha256:abc",
                fields: &fields,
                sources: &EnvSources::default(),
                qos: QosClass::Burstable,
            },
        )
        .unwrap();
        assert_eq!(cfg.metadata.as_ref().unwrap().attempt, 3);
        assert_eq!(cfg.command, vec!["sh", "-c"]);
        assert_eq!(cfg.args, vec!["echo hello world $(MISSING) $(ESCAPED)"]);
        assert_eq!(cfg.working_dir, "/tmp");
        assert_eq!(cfg.log_path, "c/3.log");
        assert_eq!(cfg.labels[labels::CONTAINER_NAME], "c");
        assert_eq!(cfg.labels[labels::POD_UID], "u-1");
        let env: HashMap<_, _> = cfg
            .envs
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_str()))
            .collect();
        assert_eq!(env["POD"], "web");
        assert_eq!(env["APP"], "web");
        assert_eq!(env["IP"], "10.244.0.5");
        assert_eq!(env["MEM"], "67108864");
        let r = cfg.linux.unwrap().resources.unwrap();
        assert_eq!(r.cpu_shares, 256);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.cpu_period, 100_000);
        assert_eq!(r.memory_limit_in_bytes, 64 * 1024 * 1024);
    }
}
