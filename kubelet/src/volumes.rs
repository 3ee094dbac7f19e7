//! Pod volumes (upstream `pkg/kubelet/volumemanager` and the in-tree plugins, simplified):
//! emptyDir (on disk, or tmpfs for `medium: Memory`), hostPath (creating it for the
//! `*OrCreate` types), configMap, secret and downwardAPI files under
//! `<root-dir>/pods/<uid>/volumes/<plugin>/<name>` (rewritten when their source changes),
//! and the CRI mounts of a container's volumeMounts. Removing a pod unmounts and deletes
//! its directory.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Container, KeyToPath, Pod, Secret};
use kube::api::Api;

use crate::cri::api;
use crate::kuberuntime::container::{field_value, PodFields};

/// Where a pod's volumes live.
pub fn pod_dir(root_dir: &Path, uid: &str) -> PathBuf {
    root_dir.join("pods").join(uid)
}

/// Why a pod's volumes could not be set up (the pod waits in ContainerCreating).
pub type Error = String;

/// Sets up every volume of `pod`; the host path of each by volume name.
pub async fn prepare(
    client: &kube::Client,
    root_dir: &Path,
    pod: &Pod,
    fields: &PodFields,
) -> Result<HashMap<String, PathBuf>, Error> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let base = pod_dir(root_dir, uid).join("volumes");
    let mut paths = HashMap::new();
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    for v in volumes.into_iter().flatten() {
        let dir = |plugin: &str| base.join(plugin).join(&v.name);
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
            let path = PathBuf::from(&h.path);
            match h.type_.as_deref() {
                Some("DirectoryOrCreate") => make_dir(&path, 0o755)?,
                Some("FileOrCreate") if !path.exists() => {
                    if let Some(parent) = path.parent() {
                        make_dir(parent, 0o755)?;
                    }
                    std::fs::write(&path, b"").map_err(|e| format!("{}: {e}", path.display()))?;
                }
                Some("Directory") if !path.is_dir() => {
                    return Err(format!(
                        "hostPath type check failed: {} is not a directory",
                        h.path
                    ))
                }
                Some("File") if !path.is_file() => {
                    return Err(format!(
                        "hostPath type check failed: {} is not a file",
                        h.path
                    ))
                }
                _ => {}
            }
            path
        } else if let Some(c) = &v.config_map {
            let dir = dir("kubernetes.io~configmap");
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
            let found = api
                .get_opt(&c.name)
                .await
                .map_err(|e| format!("reading configmap {:?}: {e}", c.name))?;
            let data = match found {
                Some(cm) => {
                    let mut data: BTreeMap<String, Vec<u8>> = cm
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect();
                    data.extend(
                        cm.binary_data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0)),
                    );
                    data
                }
                None if c.optional.unwrap_or(false) => BTreeMap::new(),
                None => return Err(format!("configmap \"{}\" not found", c.name)),
            };
            write_files(
                &dir,
                &data,
                c.items.as_deref(),
                c.default_mode.unwrap_or(0o644),
            )?;
            dir
        } else if let Some(s) = &v.secret {
            let dir = dir("kubernetes.io~secret");
            let name = s.secret_name.clone().unwrap_or_default();
            let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
            let found = api
                .get_opt(&name)
                .await
                .map_err(|e| format!("reading secret {name:?}: {e}"))?;
            let data = match found {
                Some(secret) => {
                    let mut data: BTreeMap<String, Vec<u8>> = secret
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    data.extend(
                        secret
                            .string_data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.into_bytes())),
                    );
                    data
                }
                None if s.optional.unwrap_or(false) => BTreeMap::new(),
                None => return Err(format!("secret \"{name}\" not found")),
            };
            write_files(
                &dir,
                &data,
                s.items.as_deref(),
                s.default_mode.unwrap_or(0o644),
            )?;
            dir
        } else if let Some(d) = &v.downward_api {
            let dir = dir("kubernetes.io~downward-api");
            let mut data = BTreeMap::new();
            let mut items = Vec::new();
            for item in d.items.iter().flatten() {
                let Some(f) = &item.field_ref else { continue };
                let value = field_value(pod, &f.field_path, fields).unwrap_or_default();
                data.insert(item.path.clone(), value.into_bytes());
                items.push(KeyToPath {
                    key: item.path.clone(),
                    path: item.path.clone(),
                    mode: item.mode,
                });
            }
            write_files(&dir, &data, Some(&items), d.default_mode.unwrap_or(0o644))?;
            dir
        } else {
            // Other volume types are not supported yet: the container gets an empty dir.
            let dir = dir("kubernetes.io~unsupported");
            make_dir(&dir, 0o755)?;
            tracing::warn!(volume = %v.name, "volume type not supported yet, mounting an empty directory");
            dir
        };
        paths.insert(v.name.clone(), path);
    }
    Ok(paths)
}

fn make_dir(dir: &Path, mode: u32) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode));
    Ok(())
}

/// Writes `data` as files (all keys, or the listed items at their paths), replacing
/// changed files atomically and removing files no longer listed.
fn write_files(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
) -> Result<(), Error> {
    make_dir(dir, 0o755)?;
    let wanted: Vec<(String, &[u8], i32)> = match items {
        Some(items) => {
            let mut out = Vec::new();
            for i in items {
                let Some(value) = data.get(&i.key) else {
                    return Err(format!("configuration key {:?} not found", i.key));
                };
                out.push((
                    i.path.clone(),
                    value.as_slice(),
                    i.mode.unwrap_or(default_mode),
                ));
            }
            out
        }
        None => data
            .iter()
            .map(|(k, v)| (k.clone(), v.as_slice(), default_mode))
            .collect(),
    };
    for (path, value, mode) in &wanted {
        if path.split('/').any(|p| p == ".." || p.is_empty()) || path.starts_with('/') {
            return Err(format!("invalid volume file path {path:?}"));
        }
        let file = dir.join(path);
        if std::fs::read(&file).is_ok_and(|old| old == *value) {
            continue;
        }
        if let Some(parent) = file.parent() {
            make_dir(parent, 0o755)?;
        }
        let tmp = file.with_extension("pikube-tmp");
        std::fs::write(&tmp, value)
            .and_then(|()| {
                std::fs::set_permissions(
                    &tmp,
                    std::fs::Permissions::from_mode(u32::try_from(*mode).unwrap_or(0o644)),
                )
            })
            .and_then(|()| std::fs::rename(&tmp, &file))
            .map_err(|e| format!("writing {}: {e}", file.display()))?;
    }
    // Keys that went away.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_file() && !wanted.iter().any(|(p, _, _)| *p == name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
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
pub fn mounts(
    container: &Container,
    paths: &HashMap<String, PathBuf>,
) -> Result<Vec<api::Mount>, Error> {
    let mut out = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let Some(host) = paths.get(&m.name) else {
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
            readonly: m.read_only.unwrap_or(false),
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
    fn files_follow_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("v");
        let data = BTreeMap::from([
            ("a".to_owned(), b"1".to_vec()),
            ("b".to_owned(), b"2".to_vec()),
        ]);
        write_files(&vol, &data, None, 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(vol.join("a")).unwrap(), "1");
        let data = BTreeMap::from([("a".to_owned(), b"10".to_vec())]);
        write_files(&vol, &data, None, 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(vol.join("a")).unwrap(), "10");
        assert!(!vol.join("b").exists());
        let items = [KeyToPath {
            key: "a".into(),
            path: "sub/x.conf".into(),
            mode: Some(0o400),
        }];
        write_files(&vol, &data, Some(&items), 0o644).unwrap();
        assert_eq!(
            std::fs::read_to_string(vol.join("sub/x.conf")).unwrap(),
            "10"
        );
        let mode = std::fs::metadata(vol.join("sub/x.conf"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
        let bad = [KeyToPath {
            key: "a".into(),
            path: "../escape".into(),
            mode: None,
        }];
        assert!(write_files(&vol, &data, Some(&bad), 0o644).is_err());
    }

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
        let paths = HashMap::from([("data".to_owned(), dir.path().to_path_buf())]);
        let m = mounts(&c, &paths).unwrap();
        assert_eq!(m[0].container_path, "/data");
        assert!(m[0].readonly);
        assert_eq!(m[1].host_path, dir.path().join("s").to_string_lossy());
        assert!(dir.path().join("s").is_dir());
        assert!(mounts(&c, &HashMap::new()).is_err());
    }
}
