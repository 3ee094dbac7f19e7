//! The Node object the kubelet registers and the status it keeps current (upstream
//! `kubelet_node_status.go` and `pkg/kubelet/nodestatus`): capacity and allocatable from
//! the machine, addresses, the well-known labels, taints, node info with the runtime's
//! version, daemon endpoints, and the Ready / MemoryPressure / DiskPressure / PIDPressure
//! conditions. Status is computed every `nodeStatusUpdateFrequency` and written when it
//! changed or `nodeStatusReportFrequency` passed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::cri::api;

/// What the machine offers, read once at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineInfo {
    pub cpus: u64,
    pub memory_bytes: u64,
    /// Size of the filesystem holding the kubelet's root directory.
    pub ephemeral_storage_bytes: u64,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    pub kernel_version: String,
    pub os_image: String,
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// `MemTotal` of /proc/meminfo, in bytes.
pub fn parse_meminfo_total(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
}

/// PRETTY_NAME of os-release.
pub fn parse_os_release(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| "Linux".into())
}

impl MachineInfo {
    pub fn read(root_dir: &Path) -> MachineInfo {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| parse_meminfo_total(&m))
            .unwrap_or(0);
        // The root dir may not exist yet: measure the nearest existing ancestor.
        let mut dir = root_dir;
        while !dir.exists() {
            dir = dir.parent().unwrap_or(Path::new("/"));
        }
        let ephemeral_storage_bytes = rustix::fs::statvfs(dir)
            .map(|s| s.f_blocks * s.f_frsize)
            .unwrap_or(0);
        let uname = rustix::system::uname();
        MachineInfo {
            cpus,
            memory_bytes,
            ephemeral_storage_bytes,
            machine_id: read_trimmed("/etc/machine-id"),
            system_uuid: read_trimmed("/sys/class/dmi/id/product_uuid"),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            kernel_version: uname.release().to_string_lossy().into_owned(),
            os_image: parse_os_release(
                &std::fs::read_to_string("/etc/os-release").unwrap_or_default(),
            ),
        }
    }
}

/// `kubernetes.io/arch` of this build, with Go's names.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

pub use crate::eviction::thresholds::{EvictionHard, Threshold};

/// Everything the node's object depends on besides the machine.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    pub name: String,
    pub ip: IpAddr,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub max_pods: u32,
    pub kubelet_port: u16,
    pub eviction_hard: EvictionHard,
}

/// The node's labels: upstream's defaults plus `--node-labels`.
pub fn node_labels(settings: &NodeSettings) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_owned(), settings.name.clone()),
        ("kubernetes.io/arch".to_owned(), go_arch().to_owned()),
        ("kubernetes.io/os".to_owned(), "linux".to_owned()),
        ("beta.kubernetes.io/arch".to_owned(), go_arch().to_owned()),
        ("beta.kubernetes.io/os".to_owned(), "linux".to_owned()),
    ]);
    labels.extend(settings.labels.clone());
    labels
}

/// The Node the kubelet creates at registration (upstream `initialNode`).
pub fn initial_node(settings: &NodeSettings, machine: &MachineInfo, runtime_version: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(settings.name.clone()),
            labels: Some(node_labels(settings)),
            annotations: Some(BTreeMap::from([(
                "volumes.kubernetes.io/controller-managed-attach-detach".to_owned(),
                "true".to_owned(),
            )])),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!settings.taints.is_empty()).then(|| settings.taints.clone()),
            ..Default::default()
        }),
        status: Some(static_status(settings, machine, runtime_version)),
    }
}

/// The parts of status that do not change while the kubelet runs.
fn static_status(
    settings: &NodeSettings,
    machine: &MachineInfo,
    runtime_version: &str,
) -> NodeStatus {
    let mut capacity = BTreeMap::new();
    capacity.insert("cpu".to_owned(), Quantity(machine.cpus.to_string()));
    capacity.insert(
        "memory".to_owned(),
        Quantity(format!("{}Ki", machine.memory_bytes / 1024)),
    );
    capacity.insert(
        "ephemeral-storage".to_owned(),
        Quantity(format!("{}Ki", machine.ephemeral_storage_bytes / 1024)),
    );
    capacity.insert("pods".to_owned(), Quantity(settings.max_pods.to_string()));
    let mut allocatable = capacity.clone();
    allocatable.insert(
        "memory".to_owned(),
        Quantity(format!(
            "{}Ki",
            machine
                .memory_bytes
                .saturating_sub(settings.eviction_hard.memory.of(machine.memory_bytes))
                / 1024
        )),
    );
    let storage = machine.ephemeral_storage_bytes
        - settings
            .eviction_hard
            .nodefs
            .of(machine.ephemeral_storage_bytes);
    allocatable.insert(
        "ephemeral-storage".to_owned(),
        Quantity(storage.to_string()),
    );
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: settings.ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: settings.name.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(settings.kubelet_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            machine_id: machine.machine_id.clone(),
            system_uuid: machine.system_uuid.clone(),
            boot_id: machine.boot_id.clone(),
            kernel_version: machine.kernel_version.clone(),
            os_image: machine.os_image.clone(),
            container_runtime_version: runtime_version.to_owned(),
            kubelet_version: component_base::options::KUBERNETES_VERSION.to_owned(),
            kube_proxy_version: String::new(),
            operating_system: "linux".into(),
            architecture: go_arch().into(),
            swap: None,
        }),
        ..Default::default()
    }
}

/// The runtime's readiness as the Ready condition sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeHealth {
    /// None when ready; else why not (upstream's message).
    pub problem: Option<String>,
}

impl RuntimeHealth {
    /// From a CRI status: ready when RuntimeReady and NetworkReady are true.
    pub fn from_status(status: &api::RuntimeStatus) -> RuntimeHealth {
        let mut problems = Vec::new();
        for wanted in ["RuntimeReady", "NetworkReady"] {
            match status.conditions.iter().find(|c| c.r#type == wanted) {
                Some(c) if c.status => {}
                Some(c) => {
                    let prefix = if wanted == "NetworkReady" {
                        "container runtime network not ready"
                    } else {
                        "container runtime not ready"
                    };
                    problems.push(format!(
                        "{prefix}: {wanted}=false reason:{} message:{}",
                        c.reason, c.message
                    ));
                }
                None => problems.push(format!("container runtime status has no {wanted}")),
            }
        }
        RuntimeHealth {
            problem: (!problems.is_empty()).then(|| problems.join(", ")),
        }
    }

    pub fn unreachable(error: &str) -> RuntimeHealth {
        RuntimeHealth {
            problem: Some(format!("container runtime is down: {error}")),
        }
    }
}

fn condition(type_: &str, status: bool, reason: &str, message: &str) -> NodeCondition {
    NodeCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: None,
        last_transition_time: None,
    }
}

/// The node's pressure conditions as the eviction manager reports them.
pub type NodePressure = std::collections::BTreeSet<crate::eviction::thresholds::Pressure>;

/// The four conditions for this health and pressure, without times.
pub fn conditions(health: &RuntimeHealth, pressure: &NodePressure) -> Vec<NodeCondition> {
    use crate::eviction::thresholds::Pressure;
    vec![
        if pressure.contains(&Pressure::Memory) {
            condition(
                "MemoryPressure",
                true,
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            )
        } else {
            condition(
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            )
        },
        if pressure.contains(&Pressure::Disk) {
            condition(
                "DiskPressure",
                true,
                "KubeletHasDiskPressure",
                "kubelet has disk pressure",
            )
        } else {
            condition(
                "DiskPressure",
                false,
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            )
        },
        if pressure.contains(&Pressure::Pid) {
            condition(
                "PIDPressure",
                true,
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            )
        } else {
            condition(
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            )
        },
        match &health.problem {
            None => condition(
                "Ready",
                true,
                "KubeletReady",
                "kubelet is posting ready status",
            ),
            Some(problem) => condition("Ready", false, "KubeletNotReady", problem),
        },
    ]
}

/// The node's taints with the pressure taints (`node.kubernetes.io/memory-pressure` and
/// the like, NoSchedule) made to follow `pressure`; None when they already do. Upstream's
/// node lifecycle controller adds these from the conditions; ours does not, so the kubelet
/// keeps them itself.
pub fn pressure_taints(current: &[Taint], pressure: &NodePressure) -> Option<Vec<Taint>> {
    use crate::eviction::thresholds::Pressure;
    let all = [Pressure::Memory, Pressure::Disk, Pressure::Pid];
    let is_pressure = |t: &Taint| all.iter().any(|p| p.taint() == t.key);
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !is_pressure(t) || pressure.iter().any(|p| p.taint() == t.key))
        .cloned()
        .collect();
    for p in pressure {
        if !out.iter().any(|t| t.key == p.taint()) {
            out.push(Taint {
                key: p.taint().to_owned(),
                value: None,
                effect: "NoSchedule".into(),
                time_added: None,
            });
        }
    }
    (out != current).then_some(out)
}

/// The status to write: the static part plus conditions whose heartbeat is `now` and
/// whose transition time is kept from `previous` while their status did not change.
pub fn desired_status(
    settings: &NodeSettings,
    machine: &MachineInfo,
    runtime_version: &str,
    health: &RuntimeHealth,
    pressure: &NodePressure,
    previous: Option<&NodeStatus>,
    now: Time,
) -> NodeStatus {
    let mut status = static_status(settings, machine, runtime_version);
    let old = previous.and_then(|p| p.conditions.as_ref());
    let conditions = conditions(health, pressure)
        .into_iter()
        .map(|mut c| {
            let before = old.and_then(|o| o.iter().find(|x| x.type_ == c.type_));
            c.last_transition_time = match before {
                Some(b) if b.status == c.status => {
                    b.last_transition_time.clone().or(Some(now.clone()))
                }
                _ => Some(now.clone()),
            };
            c.last_heartbeat_time = Some(now.clone());
            c
        })
        .collect();
    status.conditions = Some(conditions);
    status
}

/// Whether `new` differs from `old` in anything but heartbeat times.
pub fn status_changed(old: Option<&NodeStatus>, new: &NodeStatus) -> bool {
    let Some(old) = old else {
        return true;
    };
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        // Images, volumes and the like are not reported (yet): ignore what others set.
        s.images = None;
        s.volumes_attached = None;
        s.volumes_in_use = None;
        s.config = None;
        s.features = None;
        s.runtime_handlers = None;
        s.phase = None;
        s
    };
    strip(old) != strip(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> NodeSettings {
        NodeSettings {
            name: "pi-1".into(),
            ip: "10.0.0.5".parse().unwrap(),
            labels: BTreeMap::from([("role".into(), "worker".into())]),
            taints: vec![],
            max_pods: 110,
            kubelet_port: 10250,
            eviction_hard: EvictionHard::default(),
        }
    }

    fn machine() -> MachineInfo {
        MachineInfo {
            cpus: 4,
            memory_bytes: 4 * 1024 * 1024 * 1024,
            ephemeral_storage_bytes: 100 * 1024 * 1024 * 1024,
            machine_id: "m".into(),
            system_uuid: "u".into(),
            boot_id: "b".into(),
            kernel_version: "6.6.0".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
        }
    }

    #[test]
    fn parses_machine_files() {
        assert_eq!(
            parse_meminfo_total("MemTotal:        8039420 kB\nMemFree: 1 kB\n"),
            Some(8_039_420 * 1024)
        );
        assert_eq!(
            parse_os_release("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
    }

    #[test]
    fn initial_node_as_upstream() {
        let node = initial_node(&settings(), &machine(), "containerd://1.6.20");
        let labels = node.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "pi-1");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["kubernetes.io/arch"], go_arch());
        assert_eq!(labels["role"], "worker");
        let status = node.status.unwrap();
        let cap = status.capacity.unwrap();
        assert_eq!(cap["cpu"].0, "4");
        assert_eq!(cap["memory"].0, "4194304Ki");
        assert_eq!(cap["pods"].0, "110");
        let alloc = status.allocatable.unwrap();
        assert_eq!(
            alloc["memory"].0,
            format!("{}Ki", 4 * 1024 * 1024 - 100 * 1024)
        );
        let info = status.node_info.unwrap();
        assert_eq!(info.container_runtime_version, "containerd://1.6.20");
        assert_eq!(
            status
                .daemon_endpoints
                .unwrap()
                .kubelet_endpoint
                .unwrap()
                .port,
            10250
        );
        let addresses = status.addresses.unwrap();
        assert_eq!(addresses[0].type_, "InternalIP");
        assert_eq!(addresses[0].address, "10.0.0.5");
    }

    #[test]
    fn ready_follows_the_runtime_and_keeps_transition_times() {
        let cond = |t: &str, s: bool| api::RuntimeCondition {
            r#type: t.into(),
            status: s,
            reason: if s {
                String::new()
            } else {
                "NetworkPluginNotReady".into()
            },
            message: if s {
                String::new()
            } else {
                "cni config uninitialized".into()
            },
        };
        let not_ready = RuntimeHealth::from_status(&api::RuntimeStatus {
            conditions: vec![cond("RuntimeReady", true), cond("NetworkReady", false)],
        });
        let ready = RuntimeHealth::from_status(&api::RuntimeStatus {
            conditions: vec![cond("RuntimeReady", true), cond("NetworkReady", true)],
        });
        assert!(not_ready
            .problem
            .as_ref()
            .unwrap()
            .contains("NetworkReady=false"));
        assert!(ready.problem.is_none());
        let t0 = Time(jiff::Timestamp::from_second(1000).unwrap());
        let t1 = Time(jiff::Timestamp::from_second(1010).unwrap());
        let s = settings();
        let m = machine();
        let calm = NodePressure::new();
        let first = desired_status(
            &s,
            &m,
            "containerd://1",
            &not_ready,
            &calm,
            None,
            t0.clone(),
        );
        let same = desired_status(
            &s,
            &m,
            "containerd://1",
            &not_ready,
            &calm,
            Some(&first),
            t1.clone(),
        );
        assert!(!status_changed(Some(&first), &same));
        let readyc = |st: &NodeStatus| {
            st.conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == "Ready")
                .unwrap()
                .clone()
        };
        assert_eq!(readyc(&same).last_transition_time, Some(t0.clone()));
        assert_eq!(readyc(&same).last_heartbeat_time, Some(t1.clone()));
        let now_ready = desired_status(
            &s,
            &m,
            "containerd://1",
            &ready,
            &calm,
            Some(&same),
            t1.clone(),
        );
        assert!(status_changed(Some(&same), &now_ready));
        assert_eq!(readyc(&now_ready).status, "True");
        assert_eq!(readyc(&now_ready).reason.as_deref(), Some("KubeletReady"));
        assert_eq!(readyc(&now_ready).last_transition_time, Some(t1));
    }

    #[test]
    fn pressure_sets_conditions_and_taints_as_upstream() {
        use crate::eviction::thresholds::Pressure;
        let health = RuntimeHealth::default();
        let memory = NodePressure::from([Pressure::Memory]);
        let cs = conditions(&health, &memory);
        let mem = cs.iter().find(|c| c.type_ == "MemoryPressure").unwrap();
        assert_eq!(mem.status, "True");
        assert_eq!(mem.reason.as_deref(), Some("KubeletHasInsufficientMemory"));
        let disk = cs.iter().find(|c| c.type_ == "DiskPressure").unwrap();
        assert_eq!(disk.status, "False");
        let cs = conditions(&health, &NodePressure::from([Pressure::Disk]));
        let disk = cs.iter().find(|c| c.type_ == "DiskPressure").unwrap();
        assert_eq!(
            (disk.status.as_str(), disk.reason.as_deref()),
            ("True", Some("KubeletHasDiskPressure"))
        );

        let other = Taint {
            key: "dedicated".into(),
            value: Some("edge".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        let with = pressure_taints(std::slice::from_ref(&other), &memory).unwrap();
        assert_eq!(with.len(), 2);
        assert_eq!(with[1].key, "node.kubernetes.io/memory-pressure");
        assert_eq!(with[1].effect, "NoSchedule");
        assert_eq!(pressure_taints(&with, &memory), None);
        let without = pressure_taints(&with, &NodePressure::new()).unwrap();
        assert_eq!(without, vec![other]);
    }
}
