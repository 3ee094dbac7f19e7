//! persistentVolumeClaim volumes (upstream's volume manager resolving a claim to its
//! PersistentVolume, with the `hostPath` and `local` plugins): the claim must be Bound,
//! its PV must be bound to it, and the PV's path becomes the volume's directory. A
//! `local` PV must be on this node (its required nodeAffinity matches the Node) and its
//! path must exist; a `hostPath` PV follows the hostPath type rules.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use kube::api::Api;

use super::Error;

/// The directory of a claim's volume.
pub async fn resolve(
    client: &kube::Client,
    node_name: &str,
    namespace: &str,
    claim_name: &str,
) -> Result<PathBuf, Error> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let claim = claims
        .get_opt(claim_name)
        .await
        .map_err(|e| format!("error processing PVC {namespace}/{claim_name}: {e}"))?
        .ok_or_else(|| {
            format!(
                "error processing PVC {namespace}/{claim_name}: persistentvolumeclaim \"{claim_name}\" not found"
            )
        })?;
    let phase = claim
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|v| !v.is_empty());
    let (Some(volume_name), "Bound") = (volume_name, phase) else {
        return Err(format!(
            "error processing PVC {namespace}/{claim_name}: PVC is not bound"
        ));
    };
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get_opt(volume_name)
        .await
        .map_err(|e| format!("error processing PVC {namespace}/{claim_name}: {e}"))?
        .ok_or_else(|| {
            format!(
                "error processing PVC {namespace}/{claim_name}: persistentvolume \"{volume_name}\" not found"
            )
        })?;
    let spec = pv.spec.clone().unwrap_or_default();
    if let Some(r) = &spec.claim_ref {
        let same = r.name.as_deref() == Some(claim_name)
            && r.namespace.as_deref().unwrap_or(namespace) == namespace
            && r.uid
                .as_deref()
                .is_none_or(|u| claim.metadata.uid.as_deref() == Some(u));
        if !same {
            return Err(format!(
                "error processing PVC {namespace}/{claim_name}: persistentvolume \"{volume_name}\" is bound to another claim"
            ));
        }
    }
    if let Some(affinity) = spec
        .node_affinity
        .as_ref()
        .and_then(|a| a.required.as_ref())
    {
        let node = Api::<Node>::all(client.clone())
            .get(node_name)
            .await
            .map_err(|e| format!("reading node {node_name:?}: {e}"))?;
        let labels = node.metadata.labels.unwrap_or_default();
        if !api_types::selector::node::selector_matches(affinity, node_name, &labels) {
            return Err(format!(
                "persistentvolume \"{volume_name}\" has a node affinity that does not match node \"{node_name}\""
            ));
        }
    }
    if let Some(h) = &spec.host_path {
        return super::host_path(&h.path, h.type_.as_deref());
    }
    if let Some(l) = &spec.local {
        if spec.node_affinity.is_none() {
            return Err(format!(
                "persistentvolume \"{volume_name}\": a local volume needs a nodeAffinity"
            ));
        }
        let path = PathBuf::from(&l.path);
        if !path.exists() {
            return Err(format!(
                "persistentvolume \"{volume_name}\": local path {:?} does not exist",
                l.path
            ));
        }
        return Ok(path);
    }
    Err(format!(
        "persistentvolume \"{volume_name}\": only hostPath and local volumes are supported"
    ))
}
