//! Static pods (upstream `pkg/kubelet/config/file.go` and `pod/mirror_client.go`): pods
//! read from the manifest files in `--pod-manifest-path` (`staticPodPath`), checked every
//! `fileCheckFrequency`, run by this kubelet whatever the API says, and shown in the API
//! as mirror pods (annotated `kubernetes.io/config.mirror`) that carry their status. A
//! static pod is named `<name>-<node>`; its uid is a hash of its manifest and the node.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";
pub const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";

/// FNV-1a, twice with different offsets: a stable 128-bit digest for the uid (no
/// security property is needed, only stability across restarts and builds).
fn digest(data: &[u8]) -> String {
    let fnv = |offset: u64| {
        data.iter().fold(offset, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}

/// The static pod of one manifest.
pub fn static_pod(text: &str, node: &str) -> Result<Pod, String> {
    let value: serde_json::Value =
        serde_yaml::from_str(text).map_err(|e| format!("invalid manifest: {e}"))?;
    if value.get("kind").and_then(|k| k.as_str()) != Some("Pod") {
        return Err("a static pod manifest holds one Pod".into());
    }
    let mut pod: Pod = serde_json::from_value(value).map_err(|e| format!("invalid Pod: {e}"))?;
    let name = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or("the Pod has no name")?;
    let uid = digest(format!("{node}\n{text}").as_bytes());
    pod.metadata.name = Some(format!("{name}-{node}"));
    pod.metadata
        .namespace
        .get_or_insert_with(|| "default".to_owned());
    pod.metadata.uid = Some(uid.clone());
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(CONFIG_SOURCE.into(), "file".into());
    annotations.insert(CONFIG_HASH.into(), uid);
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node.to_owned());
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        c.termination_message_path
            .get_or_insert_with(|| "/dev/termination-log".into());
    }
    pod.status = None;
    Ok(pod)
}

/// Every static pod in `path` (a directory of manifests, or one file); files that do not
/// parse are logged and skipped, as upstream.
pub fn read_manifests(path: &Path, node: &str) -> Vec<Pod> {
    let files: Vec<std::path::PathBuf> = if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|f| {
            f.is_file()
                && !f
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        });
        files.sort();
        files
    } else if path.is_file() {
        vec![path.to_path_buf()]
    } else {
        Vec::new()
    };
    let mut pods = Vec::new();
    for f in files {
        match std::fs::read_to_string(&f)
            .map_err(|e| e.to_string())
            .and_then(|text| static_pod(&text, node))
        {
            Ok(p) => pods.push(p),
            Err(e) => {
                tracing::warn!(file = %f.display(), error = %e, "skipping static pod manifest")
            }
        }
    }
    pods
}

pub fn is_mirror(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(CONFIG_MIRROR))
}

/// The mirror pod of a static pod, owned by the node.
pub fn mirror_of(pod: &Pod, node_uid: Option<&str>) -> Pod {
    let mut mirror = pod.clone();
    mirror.metadata.uid = None;
    mirror.metadata.resource_version = None;
    let hash = pod.metadata.uid.clone().unwrap_or_default();
    mirror
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(CONFIG_MIRROR.into(), hash);
    if let Some(uid) = node_uid {
        mirror.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            uid: uid.to_owned(),
            controller: Some(true),
            ..Default::default()
        }]);
    }
    mirror
}

/// The static pod hash a mirror pod stands for.
pub fn mirror_hash(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(CONFIG_MIRROR)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: kube-system\nspec:\n  containers:\n  - name: c\n    image: busybox:1.35\n";

    #[test]
    fn static_pods_from_manifests() {
        let pod = static_pod(MANIFEST, "pi-1").unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("web-pi-1"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("kube-system"));
        let uid = pod.metadata.uid.clone().unwrap();
        assert_eq!(uid.len(), 32);
        assert_eq!(pod.metadata.annotations.as_ref().unwrap()[CONFIG_HASH], uid);
        assert_eq!(
            pod.spec.as_ref().unwrap().node_name.as_deref(),
            Some("pi-1")
        );
        // Stable for the same manifest and node, different otherwise.
        assert_eq!(
            static_pod(MANIFEST, "pi-1").unwrap().metadata.uid,
            Some(uid.clone())
        );
        assert_ne!(
            static_pod(MANIFEST, "pi-2").unwrap().metadata.uid,
            Some(uid.clone())
        );
        assert!(static_pod("kind: Service\n", "pi-1").is_err());

        let mirror = mirror_of(&pod, Some("node-uid"));
        assert!(is_mirror(&mirror) && !is_mirror(&pod));
        assert_eq!(mirror_hash(&mirror), Some(uid.as_str()));
        assert!(mirror.metadata.uid.is_none());
        assert_eq!(mirror.metadata.owner_references.unwrap()[0].kind, "Node");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("web.yaml"), MANIFEST).unwrap();
        std::fs::write(dir.path().join("bad.yaml"), "kind: Pod\nmetadata: {}\n").unwrap();
        std::fs::write(dir.path().join(".hidden.yaml"), MANIFEST).unwrap();
        let pods = read_manifests(dir.path(), "pi-1");
        assert_eq!(pods.len(), 1);
    }
}
