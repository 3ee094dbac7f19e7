//! Pod volumes (upstream `pkg/kubelet/volumemanager` and the in-tree plugins, simplified):
//! emptyDir (on disk, or tmpfs for `medium: Memory`), hostPath (creating it for the
//! `*OrCreate` types), configMap, secret, downwardAPI and projected volumes (configMap,
//! secret, downwardAPI and serviceAccountToken sources) written by the [`atomic_writer`]
//! under `<root-dir>/pods/<uid>/volumes/<plugin>/<name>`, and persistentVolumeClaims bound
//! to hostPath or local PVs ([`pvc`]); then the CRI mounts of a container's volumeMounts.
//! Every pod sync prepares the volumes again, so changed ConfigMaps and Secrets reach
//! running pods; a pod with such volumes asks to be synced again after
//! `--sync-frequency` (upstream's ~1 minute), reading them through a [`cache`] with the
//! same TTL, and tokens are renewed when due. Removing a pod unmounts and deletes its
//! directory.

mod atomic_writer;
mod cache;
mod projected;
mod pvc;
pub mod token;

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::cri::api;
use crate::kuberuntime::container::PodFields;
use projected::{Owner, Source, DEFAULT_MODE};

/// Where a pod's volumes live.
pub fn pod_dir(root_dir: &Path, uid: &str) -> PathBuf {
    root_dir.join("pods").join(uid)
}

/// Why a pod's volumes could not be set up (the pod waits in ContainerCreating).
pub type Error = String;

/// The volumes of a pod, set up.
#[derive(Clone, Debug, Default)]
pub struct Prepared {
    /// The host path of each volume, by name.
    pub paths: HashMap<String, PathBuf>,
    /// Volumes every mount of which is read-only (a claim with `readOnly`).
    pub read_only: HashSet<String>,
    /// When the pod should be synced again for its volumes' sake (changed ConfigMaps
    /// and Secrets, tokens to renew).
    pub resync_at: Option<Instant>,
}

/// Sets up pods' volumes and keeps the state that outlives a sync (tokens).
pub struct VolumeManager {
    client: kube::Client,
    root_dir: PathBuf,
    node_name: String,
    /// How often volumes whose sources may change are refreshed (`--sync-frequency`).
    resync: Duration,
    tokens: token::TokenManager,
    /// ConfigMaps and Secrets, kept for one resync period.
    objects: cache::ObjectCache,
    /// Pods set up once already (later setups may read through the cache).
    seen: parking_lot::Mutex<HashSet<String>>,
}

impl VolumeManager {
    pub fn new(
        client: kube::Client,
        root_dir: PathBuf,
        node_name: String,
        resync: Duration,
    ) -> VolumeManager {
        VolumeManager {
            tokens: token::TokenManager::new(client.clone()),
            objects: cache::ObjectCache::new(resync),
            seen: parking_lot::Mutex::new(HashSet::new()),
            client,
            root_dir,
            node_name,
            resync,
        }
    }

    /// Sets up (or refreshes) every volume of `pod`.
    pub async fn prepare(&self, pod: &Pod, fields: &PodFields) -> Result<Prepared, Error> {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let base = pod_dir(&self.root_dir, uid).join("volumes");
        let owner = Owner::of(pod);
        let sources = projected::Sources {
            client: &self.client,
            objects: &self.objects,
            tokens: &self.tokens,
            fresh: !self.seen.lock().contains(uid),
        };
        let mut out = Prepared::default();
        let mut resync = false;
        let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
        for v in volumes.into_iter().flatten() {
            let dir = |plugin: &str| base.join(plugin).join(&v.name);
            let failed =
                |e: Error| format!("MountVolume.SetUp failed for volume {:?} : {e}", v.name);
            let path = if let Some(e) = &v.empty_dir {
                let dir = dir("kubernetes.io~empty-dir");
                make_dir(&dir, 0o777)?;
                if e.medium.as_deref() == Some("Memory") && !is_mount_point(&dir) {
                    let size = e
                        .size_limit
                        .as_ref()
                        .and_then(|q| crate::cm::parse_quantity(&q.0))
                        .map(|n| format!("size={}", n / 1_000_000_000));
                    let data = CString::new(size.unwrap_or_default()).unwrap_or_default();
                    rustix::mount::mount(
                        "tmpfs",
                        &dir,
                        "tmpfs",
                        rustix::mount::MountFlags::empty(),
                        data.as_c_str(),
                    )
                    .map_err(|e| format!("mounting tmpfs for volume {:?}: {e}", v.name))?;
                }
                dir
            } else if let Some(h) = &v.host_path {
                host_path(&h.path, h.type_.as_deref()).map_err(failed)?
            } else if let Some(c) = &v.config_map {
                let dir = dir("kubernetes.io~configmap");
                let data = self
                    .objects
                    .get(
                        &self.client,
                        Source::ConfigMap,
                        namespace,
                        &c.name,
                        sources.fresh,
                    )
                    .await
                    .map_err(failed)?;
                let payload = projected::key_payload(
                    Source::ConfigMap,
                    &c.name,
                    data.as_deref(),
                    c.items.as_deref(),
                    c.default_mode.unwrap_or(DEFAULT_MODE),
                    c.optional.unwrap_or(false),
                    owner,
                )
                .map_err(failed)?;
                atomic_writer::write(&dir, &payload).map_err(failed)?;
                resync = true;
                dir
            } else if let Some(s) = &v.secret {
                let dir = dir("kubernetes.io~secret");
                let name = s.secret_name.clone().unwrap_or_default();
                let data = self
                    .objects
                    .get(
                        &self.client,
                        Source::Secret,
                        namespace,
                        &name,
                        sources.fresh,
                    )
                    .await
                    .map_err(failed)?;
                let payload = projected::key_payload(
                    Source::Secret,
                    &name,
                    data.as_deref(),
                    s.items.as_deref(),
                    s.default_mode.unwrap_or(DEFAULT_MODE),
                    s.optional.unwrap_or(false),
                    owner,
                )
                .map_err(failed)?;
                atomic_writer::write(&dir, &payload).map_err(failed)?;
                resync = true;
                dir
            } else if let Some(d) = &v.downward_api {
                let dir = dir("kubernetes.io~downward-api");
                let payload = projected::downward_payload(
                    pod,
                    fields,
                    d.items.as_deref().unwrap_or_default(),
                    d.default_mode.unwrap_or(DEFAULT_MODE),
                    owner,
                )
                .map_err(failed)?;
                atomic_writer::write(&dir, &payload).map_err(failed)?;
                resync = true;
                dir
            } else if let Some(p) = &v.projected {
                let dir = dir("kubernetes.io~projected");
                let (payload, refresh) = projected::projected_payload(&sources, pod, fields, p)
                    .await
                    .map_err(failed)?;
                atomic_writer::write(&dir, &payload).map_err(failed)?;
                if let Some(at) = refresh.map(token::instant_of) {
                    out.resync_at = Some(out.resync_at.map_or(at, |r| r.min(at)));
                }
                resync = true;
                dir
            } else if let Some(c) = &v.persistent_volume_claim {
                if c.read_only.unwrap_or(false) {
                    out.read_only.insert(v.name.clone());
                }
                pvc::resolve(&self.client, &self.node_name, namespace, &c.claim_name)
                    .await
                    .map_err(|e| {
                        format!(
                            "Unable to attach or mount volumes: unmounted volumes=[{}]: {e}",
                            v.name
                        )
                    })?
            } else {
                // Other volume types are not supported yet: the container gets an empty dir.
                let dir = dir("kubernetes.io~unsupported");
                make_dir(&dir, 0o755)?;
                tracing::warn!(volume = %v.name, "volume type not supported yet, mounting an empty directory");
                dir
            };
            out.paths.insert(v.name.clone(), path);
        }
        if resync {
            let at = Instant::now() + self.resync;
            out.resync_at = Some(out.resync_at.map_or(at, |r| r.min(at)));
        }
        self.seen.lock().insert(uid.to_owned());
        Ok(out)
    }

    /// Unmounts and deletes everything of the pod `uid`, and forgets its tokens.
    pub fn remove(&self, uid: &str) {
        self.tokens.forget_pod(uid);
        self.seen.lock().remove(uid);
        remove(&self.root_dir, uid);
    }
}

/// A hostPath volume's path, checked (or created) as its type says.
pub(crate) fn host_path(path: &str, type_: Option<&str>) -> Result<PathBuf, Error> {
    let p = PathBuf::from(path);
    match type_ {
        Some("DirectoryOrCreate") => make_dir(&p, 0o755)?,
        Some("FileOrCreate") if !p.exists() => {
            if let Some(parent) = p.parent() {
                make_dir(parent, 0o755)?;
            }
            std::fs::write(&p, b"").map_err(|e| format!("{}: {e}", p.display()))?;
        }
        Some("Directory") if !p.is_dir() => {
            return Err(format!(
                "hostPath type check failed: {path} is not a directory"
            ))
        }
        Some("File") if !p.is_file() => {
            return Err(format!("hostPath type check failed: {path} is not a file"))
        }
        _ => {}
    }
    Ok(p)
}

fn make_dir(dir: &Path, mode: u32) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode));
    Ok(())
}

fn is_mount_point(dir: &Path) -> bool {
    let wanted = dir.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        m.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .any(|p| p == wanted)
    })
}

/// The CRI mounts of a container's volumeMounts.
pub fn mounts(container: &Container, volumes: &Prepared) -> Result<Vec<api::Mount>, Error> {
    let mut out = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let Some(host) = volumes.paths.get(&m.name) else {
            return Err(format!(
                "unable to find volume {:?} for container {:?}",
                m.name, container.name
            ));
        };
        let mut host_path = host.clone();
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if sub.split('/').any(|p| p == "..") || sub.starts_with('/') {
                return Err(format!("invalid subPath {sub:?}"));
            }
            host_path = host_path.join(sub);
            if !host_path.exists() {
                make_dir(&host_path, 0o755)?;
            }
        }
        out.push(api::Mount {
            container_path: m.mount_path.clone(),
            host_path: host_path.to_string_lossy().into_owned(),
            readonly: m.read_only.unwrap_or(false) || volumes.read_only.contains(&m.name),
            propagation: match m.mount_propagation.as_deref() {
                Some("HostToContainer") => api::MountPropagation::PropagationHostToContainer,
                Some("Bidirectional") => api::MountPropagation::PropagationBidirectional,
                _ => api::MountPropagation::PropagationPrivate,
            }
            .into(),
            ..Default::default()
        });
    }
    Ok(out)
}

/// The kubelet-managed /etc/hosts of a pod (upstream `managedHostsFileContent`): the
/// usual localhost lines, the pod's address with its hostname (and FQDN with a
/// subdomain), then the pod's hostAliases.
pub fn etc_hosts(pod: &Pod, pod_ip: &str, cluster_domain: &str) -> String {
    let spec = pod.spec.as_ref();
    let hostname = spec
        .and_then(|s| s.hostname.clone())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let hostname: String = hostname.chars().take(63).collect();
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    if !pod_ip.is_empty() {
        match spec
            .and_then(|s| s.subdomain.as_deref())
            .filter(|s| !s.is_empty())
        {
            Some(sub) if !cluster_domain.is_empty() => {
                let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                out.push_str(&format!(
                    "{pod_ip}\t{hostname}.{sub}.{ns}.svc.{cluster_domain}\t{hostname}\n"
                ));
            }
            _ => out.push_str(&format!("{pod_ip}\t{hostname}\n")),
        }
    }
    let aliases = spec.and_then(|s| s.host_aliases.as_ref());
    if aliases.is_some_and(|a| !a.is_empty()) {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases.into_iter().flatten() {
            let names = a.hostnames.clone().unwrap_or_default().join("\t");
            out.push_str(&format!("{}\t{names}\n", a.ip));
        }
    }
    out
}

/// Writes the pod's /etc/hosts under its directory; the file to mount, or None for a
/// host-network pod without hostAliases (the runtime gives it the node's).
pub fn write_etc_hosts(
    root_dir: &Path,
    pod: &Pod,
    pod_ip: &str,
    cluster_domain: &str,
) -> Result<Option<PathBuf>, Error> {
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.host_network).unwrap_or(false) {
        return Ok(None);
    }
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let dir = pod_dir(root_dir, uid);
    make_dir(&dir, 0o755)?;
    let path = dir.join("etc-hosts");
    let text = etc_hosts(pod, pod_ip, cluster_domain);
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(Some(path))
}

/// Unmounts and deletes everything of the pod `uid` under the root directory.
pub fn remove(root_dir: &Path, uid: &str) {
    let dir = pod_dir(root_dir, uid);
    if !dir.exists() {
        return;
    }
    let prefix = dir.to_string_lossy().into_owned();
    if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
        let mut points: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(prefix.as_str()))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = rustix::mount::unmount(p, rustix::mount::UnmountFlags::DETACH);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_etc_hosts() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop"},
            "spec": {"hostname": "web-0", "subdomain": "web", "containers": [],
                     "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["foo", "bar"]}]}
        }))
        .unwrap();
        let text = etc_hosts(&pod, "10.244.0.7", "cluster.local");
        assert!(text.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(
            text.contains("10.244.0.7\tweb-0.web.shop.svc.cluster.local\tweb-0\n"),
            "{text}"
        );
        assert!(
            text.ends_with("# Entries added by HostAliases.\n10.1.2.3\tfoo\tbar\n"),
            "{text}"
        );
    }

    #[test]
    fn mounts_from_volume_mounts() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true},
                             {"name": "data", "mountPath": "/sub", "subPath": "s"}]
        }))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut volumes = Prepared {
            paths: HashMap::from([("data".to_owned(), dir.path().to_path_buf())]),
            ..Default::default()
        };
        let m = mounts(&c, &volumes).unwrap();
        assert_eq!(m[0].container_path, "/data");
        assert!(m[0].readonly);
        assert_eq!(m[1].host_path, dir.path().join("s").to_string_lossy());
        assert!(dir.path().join("s").is_dir());
        // A read-only claim makes every mount of it read-only.
        volumes.read_only.insert("data".into());
        assert!(mounts(&c, &volumes).unwrap().iter().all(|m| m.readonly));
        assert!(mounts(&c, &Prepared::default()).is_err());
    }
}
