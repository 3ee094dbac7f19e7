//! The container manager's host checks and cgroup naming (upstream `pkg/kubelet/cm`):
//! whether the memory cgroup controller is on, the pod QoS class, and the cgroup parent
//! of a pod under `kubepods` for the cgroupfs and systemd drivers.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use crate::app::CgroupDriver;

/// The message the kubelet refuses to start with when the memory controller is off
/// (Raspberry Pi OS's default).
pub const MEMORY_CGROUP_FIX: &str = "the memory cgroup controller is not enabled: add \
     `cgroup_memory=1 cgroup_enable=memory` to the kernel command line (on a Raspberry Pi, \
     the single line of /boot/firmware/cmdline.txt) and reboot";

/// Whether the memory controller is usable: listed in the unified hierarchy's
/// `cgroup.controllers` on a pure cgroup v2 host, else enabled in `/proc/cgroups` (v1 or
/// hybrid).
pub fn memory_controller_enabled(proc_cgroups: &str, v2_controllers: Option<&str>) -> bool {
    if let Some(controllers) = v2_controllers {
        return controllers.split_whitespace().any(|c| c == "memory");
    }
    proc_cgroups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .any(|f| f.len() >= 4 && f[0] == "memory" && f[3] == "1")
}

/// Reads this host's cgroup setup; Err with [`MEMORY_CGROUP_FIX`] when memory is off.
pub fn check_memory_controller() -> Result<(), String> {
    let proc_cgroups = std::fs::read_to_string("/proc/cgroups").unwrap_or_default();
    // Pure v2: the unified hierarchy is mounted at /sys/fs/cgroup itself.
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").ok();
    if memory_controller_enabled(&proc_cgroups, v2.as_deref()) {
        Ok(())
    } else {
        Err(MEMORY_CGROUP_FIX.into())
    }
}

/// A pod's quality of service class (upstream `qos.GetPodQOS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// Guaranteed when every container limits cpu and memory with requests equal to the
/// limits; BestEffort when no container requests or limits anything; else Burstable.
pub fn qos_class(pod: &Pod) -> QosClass {
    let Some(spec) = &pod.spec else {
        return QosClass::BestEffort;
    };
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let r = c.resources.as_ref();
        let requests = r.and_then(|r| r.requests.as_ref());
        let limits = r.and_then(|r| r.limits.as_ref());
        let has = |m: Option<&std::collections::BTreeMap<_, _>>, k: &str| {
            m.is_some_and(|m| m.contains_key(k))
        };
        for res in ["cpu", "memory"] {
            if has(requests, res) || has(limits, res) {
                any = true;
            }
            let limit = limits.and_then(|l| l.get(res));
            let request = requests.and_then(|r| r.get(res)).or(limit);
            match (limit, request) {
                (Some(l), Some(r))
                    if parse_quantity(&l.0).is_some()
                        && parse_quantity(&l.0) == parse_quantity(&r.0) => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        QosClass::BestEffort
    } else if guaranteed {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

/// A quantity's value in nano units, None when it does not parse.
pub fn parse_quantity(text: &str) -> Option<i128> {
    api_types::quantity::Quantity::parse(text)
        .ok()
        .map(|q| q.as_nanos())
}

/// The pod's cgroup parent: `/kubepods[/burstable|/besteffort]/pod<uid>` with cgroupfs,
/// `kubepods[-burstable|-besteffort]-pod<uid>.slice` with systemd (dashes in the uid
/// become underscores, as systemd slice names nest on dashes).
pub fn pod_cgroup_parent(driver: CgroupDriver, qos: QosClass, uid: &str) -> String {
    match driver {
        CgroupDriver::Cgroupfs => match qos {
            QosClass::Guaranteed => format!("/kubepods/pod{uid}"),
            QosClass::Burstable => format!("/kubepods/burstable/pod{uid}"),
            QosClass::BestEffort => format!("/kubepods/besteffort/pod{uid}"),
        },
        CgroupDriver::Systemd => {
            let uid = uid.replace('-', "_");
            match qos {
                QosClass::Guaranteed => format!("kubepods-pod{uid}.slice"),
                QosClass::Burstable => format!("kubepods-burstable-pod{uid}.slice"),
                QosClass::BestEffort => format!("kubepods-besteffort-pod{uid}.slice"),
            }
        }
    }
}

/// Removes a pod's (now empty) cgroupfs directories from every mounted hierarchy, under
/// whichever QoS class it had; runc removes the containers' cgroups but not the parents.
/// Returns whether none is left.
pub fn remove_pod_cgroups(driver: CgroupDriver, uid: &str) -> bool {
    if driver != CgroupDriver::Cgroupfs {
        return true;
    }
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return true;
    };
    let points: Vec<&str> = mounts
        .lines()
        .filter(|line| {
            line.split(" - ")
                .nth(1)
                .is_some_and(|r| r.starts_with("cgroup"))
        })
        .filter_map(|line| line.split(' ').nth(4))
        .collect();
    let mut clean = true;
    for qos in [
        QosClass::Guaranteed,
        QosClass::Burstable,
        QosClass::BestEffort,
    ] {
        let parent = pod_cgroup_parent(driver, qos, uid);
        for point in &points {
            // Removing a cgroup directory is rmdir; it fails while a process or child
            // cgroup is still in it.
            let dir = format!("{point}{parent}");
            if std::fs::remove_dir(&dir).is_err() && Path::new(&dir).exists() {
                clean = false;
            }
        }
    }
    clean
}

/// The uids of the pods with a cgroupfs cgroup under `kubepods` in any hierarchy
/// (housekeeping removes those of pods that are gone).
pub fn pod_cgroup_uids(driver: CgroupDriver) -> std::collections::HashSet<String> {
    let mut uids = std::collections::HashSet::new();
    if driver != CgroupDriver::Cgroupfs {
        return uids;
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mounts.lines() {
        if !line
            .split(" - ")
            .nth(1)
            .is_some_and(|r| r.starts_with("cgroup"))
        {
            continue;
        }
        let Some(point) = line.split(' ').nth(4) else {
            continue;
        };
        let base = Path::new(point).join("kubepods");
        for dir in [
            base.clone(),
            base.join("burstable"),
            base.join("besteffort"),
        ] {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(uid) = name.strip_prefix("pod") {
                    uids.insert(uid.to_owned());
                }
            }
        }
    }
    uids
}

/// [`remove_pod_cgroups`] until none is left or `within` passed: a container's shim may
/// still be leaving its cgroup when the runtime reports it removed.
pub async fn remove_pod_cgroups_within(driver: CgroupDriver, uid: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while !remove_pod_cgroups(driver, uid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_controller_detection() {
        let hybrid_on =
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t2\t1\t1\nmemory\t4\t58\t1\n";
        let pi_off =
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t0\t1\t1\nmemory\t0\t58\t0\n";
        assert!(memory_controller_enabled(hybrid_on, None));
        assert!(!memory_controller_enabled(pi_off, None));
        assert!(memory_controller_enabled(
            pi_off,
            Some("cpuset cpu io memory pids")
        ));
        assert!(!memory_controller_enabled(
            hybrid_on,
            Some("cpuset cpu io pids")
        ));
        assert!(MEMORY_CGROUP_FIX.contains("cgroup_memory=1 cgroup_enable=memory"));
        assert!(MEMORY_CGROUP_FIX.contains("cmdline.txt"));
    }

    fn pod(resources: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": resources}]}
        }))
        .unwrap()
    }

    #[test]
    fn qos_classes_as_upstream() {
        assert_eq!(qos_class(&pod(serde_json::json!({}))), QosClass::BestEffort);
        assert_eq!(
            qos_class(&pod(
                serde_json::json!({"limits": {"cpu": "1", "memory": "64Mi"}})
            )),
            QosClass::Guaranteed
        );
        assert_eq!(
            qos_class(&pod(
                serde_json::json!({"requests": {"cpu": "1000m", "memory": "64Mi"},
                "limits": {"cpu": "1", "memory": "64Mi"}})
            )),
            QosClass::Guaranteed
        );
        assert_eq!(
            qos_class(&pod(serde_json::json!({"requests": {"memory": "32Mi"}}))),
            QosClass::Burstable
        );
        assert_eq!(
            pod_cgroup_parent(CgroupDriver::Cgroupfs, QosClass::Burstable, "a-b"),
            "/kubepods/burstable/poda-b"
        );
        assert_eq!(
            pod_cgroup_parent(CgroupDriver::Systemd, QosClass::BestEffort, "a-b"),
            "kubepods-besteffort-poda_b.slice"
        );
    }
}
