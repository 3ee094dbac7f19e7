//! Reading CPU and memory usage from cgroups, as cAdvisor does for the kubelet: cgroup v1
//! (`cpuacct.usage`, `memory.usage_in_bytes`, `memory.stat`'s `total_*`), which also
//! covers hybrid hosts (v1 controllers plus an empty cgroup2 at /sys/fs/cgroup/unified),
//! and pure cgroup v2 (`cpu.stat` `usage_usec`, `memory.current`, `memory.stat`). Pod
//! cgroups are found where `cm` puts them for the cgroupfs and systemd drivers, and
//! container cgroups as the child of the pod's cgroup named after the container id
//! (`<id>` with cgroupfs, `cri-containerd-<id>.scope` with systemd).

use std::path::{Path, PathBuf};

use crate::app::CgroupDriver;
use crate::cm::{self, QosClass};

/// Where the hierarchies the stats need are mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// v1 (or hybrid): the cpuacct and memory hierarchies.
    V1 { cpuacct: PathBuf, memory: PathBuf },
    /// The unified hierarchy with the memory controller on.
    V2 { root: PathBuf },
}

/// Memory usage as cAdvisor reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    pub usage: u64,
    /// usage − inactive_file: what the kernel cannot easily reclaim.
    pub working_set: u64,
    pub rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
}

/// One cgroup's usage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Cumulative CPU time, in nanoseconds.
    pub cpu_ns: Option<u64>,
    pub memory: Option<MemoryUsage>,
}

/// The fields of a mountinfo line the layout needs: mount point, fs type, super options.
fn mounts(mountinfo: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    mountinfo.lines().filter_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let point = left.split(' ').nth(4)?;
        let mut r = right.split(' ');
        let fstype = r.next()?;
        let _source = r.next()?;
        let options = r.next().unwrap_or("");
        Some((point, fstype, options))
    })
}

impl Layout {
    /// The layout from `/proc/self/mountinfo`; `v2_controllers` reads a cgroup2 mount's
    /// `cgroup.controllers`. v1 wins when it has both controllers (hybrid hosts).
    pub fn detect(
        mountinfo: &str,
        v2_controllers: impl Fn(&Path) -> Option<String>,
    ) -> Option<Layout> {
        let mut cpuacct = None;
        let mut memory = None;
        let mut unified = None;
        for (point, fstype, options) in mounts(mountinfo) {
            match fstype {
                "cgroup" => {
                    let opts: Vec<&str> = options.split(',').collect();
                    if opts.contains(&"cpuacct") && cpuacct.is_none() {
                        cpuacct = Some(PathBuf::from(point));
                    }
                    if opts.contains(&"memory") && memory.is_none() {
                        memory = Some(PathBuf::from(point));
                    }
                }
                "cgroup2" if unified.is_none() => unified = Some(PathBuf::from(point)),
                _ => {}
            }
        }
        if let (Some(cpuacct), Some(memory)) = (cpuacct, memory) {
            return Some(Layout::V1 { cpuacct, memory });
        }
        let root = unified?;
        let controllers = v2_controllers(&root)?;
        controllers
            .split_whitespace()
            .any(|c| c == "memory")
            .then_some(Layout::V2 { root })
    }

    /// This host's layout.
    pub fn host() -> Option<Layout> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        Layout::detect(&mountinfo, |root| {
            std::fs::read_to_string(root.join("cgroup.controllers")).ok()
        })
    }

    /// The directory that tells containers apart (memory on v1, the only one on v2).
    fn listing_root(&self) -> &Path {
        match self {
            Layout::V1 { memory, .. } => memory,
            Layout::V2 { root } => root,
        }
    }

    /// The usage of the cgroup at `rel` (relative to the hierarchy roots; "" is the
    /// root), None when it does not exist.
    pub fn usage(&self, rel: &str) -> Option<Usage> {
        let rel = rel.trim_start_matches('/');
        let read = |base: &Path, file: &str| std::fs::read_to_string(base.join(rel).join(file));
        match self {
            Layout::V1 { cpuacct, memory } => {
                if !memory.join(rel).is_dir() {
                    return None;
                }
                let cpu_ns = read(cpuacct, "cpuacct.usage")
                    .ok()
                    .and_then(|t| t.trim().parse().ok());
                let usage = read(memory, "memory.usage_in_bytes")
                    .ok()
                    .and_then(|t| t.trim().parse().ok());
                let stat = read(memory, "memory.stat").unwrap_or_default();
                Some(Usage {
                    cpu_ns,
                    memory: usage.map(|u| memory_v1(u, &stat)),
                })
            }
            Layout::V2 { root } => {
                if !root.join(rel).is_dir() {
                    return None;
                }
                let cpu_ns = read(root, "cpu.stat")
                    .ok()
                    .and_then(|t| stat_value(&t, "usage_usec"))
                    .map(|us| us.saturating_mul(1000));
                let usage = read(root, "memory.current")
                    .ok()
                    .and_then(|t| t.trim().parse().ok());
                let stat = read(root, "memory.stat").unwrap_or_default();
                Some(Usage {
                    cpu_ns,
                    memory: usage.map(|u| memory_v2(u, &stat)),
                })
            }
        }
    }

    /// The pod's cgroup, relative to the roots: under whichever QoS class holds it.
    pub fn pod_cgroup(&self, driver: CgroupDriver, uid: &str) -> Option<String> {
        [
            QosClass::Guaranteed,
            QosClass::Burstable,
            QosClass::BestEffort,
        ]
        .into_iter()
        .map(|qos| cgroup_dir(driver, &cm::pod_cgroup_parent(driver, qos, uid)))
        .find(|rel| self.listing_root().join(rel).is_dir())
    }

    /// The container's cgroup under its pod's: the child whose name holds the id.
    pub fn container_cgroup(&self, pod_cgroup: &str, id: &str) -> Option<String> {
        let dir = self.listing_root().join(pod_cgroup);
        std::fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|name| name == id || name == &format!("cri-containerd-{id}.scope"))
            .map(|name| format!("{pod_cgroup}/{name}"))
    }
}

/// A cgroup parent as a directory: cgroupfs paths as they are, systemd slices expanded
/// the way systemd nests them (`a-b-c.slice` lives in `a.slice/a-b.slice/`).
pub fn cgroup_dir(driver: CgroupDriver, parent: &str) -> String {
    match driver {
        CgroupDriver::Cgroupfs => parent.trim_start_matches('/').to_owned(),
        CgroupDriver::Systemd => {
            let Some(name) = parent.strip_suffix(".slice") else {
                return parent.to_owned();
            };
            let parts: Vec<&str> = name.split('-').collect();
            (1..=parts.len())
                .map(|n| format!("{}.slice", parts[..n].join("-")))
                .collect::<Vec<_>>()
                .join("/")
        }
    }
}

/// `key value` lines (memory.stat, cpu.stat).
pub fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// v1: the hierarchical `total_*` counters.
pub fn memory_v1(usage: u64, stat: &str) -> MemoryUsage {
    let get = |k: &str| stat_value(stat, k).unwrap_or(0);
    MemoryUsage {
        usage,
        working_set: usage.saturating_sub(get("total_inactive_file")),
        rss: get("total_rss"),
        page_faults: get("total_pgfault"),
        major_page_faults: get("total_pgmajfault"),
    }
}

/// v2: `anon` is cAdvisor's rss.
pub fn memory_v2(usage: u64, stat: &str) -> MemoryUsage {
    let get = |k: &str| stat_value(stat, k).unwrap_or(0);
    MemoryUsage {
        usage,
        working_set: usage.saturating_sub(get("inactive_file")),
        rss: get("anon"),
        page_faults: get("pgfault"),
        major_page_faults: get("pgmajfault"),
    }
}

/// The node's memory from /proc/meminfo (the v2 root has no memory.current): usage is
/// MemTotal − MemFree, working set usage − Inactive(file), rss AnonPages.
pub fn memory_meminfo(meminfo: &str) -> Option<MemoryUsage> {
    let kib = |key: &str| {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    let total = kib("MemTotal")? * 1024;
    let free = kib("MemFree")? * 1024;
    let usage = total.saturating_sub(free);
    let vmstat = std::fs::read_to_string("/proc/vmstat").unwrap_or_default();
    Some(MemoryUsage {
        usage,
        working_set: usage.saturating_sub(kib("Inactive(file)").unwrap_or(0) * 1024),
        rss: kib("AnonPages").unwrap_or(0) * 1024,
        page_faults: stat_value(&vmstat, "pgfault").unwrap_or(0),
        major_page_faults: stat_value(&vmstat, "pgmajfault").unwrap_or(0),
    })
}

/// Busy CPU time of /proc/stat's `cpu` line, in nanoseconds (USER_HZ is 100 on Linux's
/// ABIs): user, nice, system, irq, softirq and steal.
pub fn proc_stat_cpu_ns(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|i| f.get(*i)).sum();
    Some(busy.saturating_mul(10_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 24 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
28 25 0:25 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct
29 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
    const PURE_V2: &str = "\
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn detects_v1_hybrid_and_v2() {
        assert_eq!(
            Layout::detect(HYBRID, |_| Some(String::new())),
            Some(Layout::V1 {
                cpuacct: "/sys/fs/cgroup/cpuacct".into(),
                memory: "/sys/fs/cgroup/memory".into(),
            })
        );
        let comounted = "1 0 0:1 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                         2 0 0:2 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert!(matches!(
            Layout::detect(comounted, |_| None),
            Some(Layout::V1 { cpuacct, .. }) if cpuacct == Path::new("/sys/fs/cgroup/cpu,cpuacct")
        ));
        assert_eq!(
            Layout::detect(PURE_V2, |_| Some("cpuset cpu io memory pids".into())),
            Some(Layout::V2 {
                root: "/sys/fs/cgroup".into()
            })
        );
        assert_eq!(Layout::detect(PURE_V2, |_| Some("cpu io".into())), None);
    }

    #[test]
    fn systemd_slices_nest_on_dashes() {
        assert_eq!(
            cgroup_dir(CgroupDriver::Systemd, "kubepods-besteffort-poda_b.slice"),
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-poda_b.slice"
        );
        assert_eq!(
            cgroup_dir(CgroupDriver::Cgroupfs, "/kubepods/burstable/podx"),
            "kubepods/burstable/podx"
        );
    }

    #[test]
    fn memory_as_cadvisor_computes_it() {
        let v1 = memory_v1(
            100_000,
            "cache 5\nrss 9\ntotal_rss 40000\ntotal_inactive_file 30000\ntotal_pgfault 7\ntotal_pgmajfault 2\n",
        );
        assert_eq!(
            v1,
            MemoryUsage {
                usage: 100_000,
                working_set: 70_000,
                rss: 40_000,
                page_faults: 7,
                major_page_faults: 2
            }
        );
        let v2 = memory_v2(
            50_000,
            "anon 20000\nfile 30000\ninactive_file 60000\npgfault 3\npgmajfault 1\n",
        );
        assert_eq!(v2.working_set, 0, "never below zero");
        assert_eq!(v2.rss, 20_000);
        let m = memory_meminfo(
            "MemTotal: 1000 kB\nMemFree: 200 kB\nInactive(file): 300 kB\nAnonPages: 100 kB\n",
        )
        .unwrap();
        assert_eq!(m.usage, 800 * 1024);
        assert_eq!(m.working_set, 500 * 1024);
        assert_eq!(
            proc_stat_cpu_ns("cpu  10 1 5 100 3 1 1 2 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n"),
            Some(20 * 10_000_000)
        );
    }

    #[test]
    fn finds_pod_and_container_cgroups_in_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let pod = root.join("kubepods/burstable/podu1");
        std::fs::create_dir_all(pod.join("c0ffee")).unwrap();
        std::fs::write(
            pod.join("c0ffee/cpu.stat"),
            "usage_usec 1500\nuser_usec 1\n",
        )
        .unwrap();
        std::fs::write(pod.join("c0ffee/memory.current"), "4096\n").unwrap();
        std::fs::write(
            pod.join("c0ffee/memory.stat"),
            "anon 1024\ninactive_file 1000\n",
        )
        .unwrap();
        let layout = Layout::V2 { root };
        let rel = layout.pod_cgroup(CgroupDriver::Cgroupfs, "u1").unwrap();
        assert_eq!(rel, "kubepods/burstable/podu1");
        assert_eq!(layout.pod_cgroup(CgroupDriver::Cgroupfs, "u2"), None);
        let c = layout.container_cgroup(&rel, "c0ffee").unwrap();
        let usage = layout.usage(&c).unwrap();
        assert_eq!(usage.cpu_ns, Some(1_500_000));
        assert_eq!(usage.memory.unwrap().working_set, 3096);
        assert_eq!(layout.container_cgroup(&rel, "other"), None);

        let sd = dir.path().join(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podu_3.slice/cri-containerd-abc.scope",
        );
        std::fs::create_dir_all(&sd).unwrap();
        let rel = layout.pod_cgroup(CgroupDriver::Systemd, "u-3").unwrap();
        assert_eq!(
            layout.container_cgroup(&rel, "abc").unwrap(),
            format!("{rel}/cri-containerd-abc.scope")
        );
    }
}
