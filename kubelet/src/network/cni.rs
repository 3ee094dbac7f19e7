//! The pod network's CNI configuration (upstream leaves this to a network add-on; pikube's
//! kubelet writes it, as kubenet once did): a bridge with the node's podCIDR handed out by
//! host-local IPAM, the bridge as the pods' gateway, hairpin mode for pods reaching
//! themselves through a Service, and portmap for hostPort. containerd watches its
//! `cni.conf_dir` and reports NetworkReady once a configuration is there; it adds the
//! loopback interface itself.

use std::path::{Path, PathBuf};

use ipnet::IpNet;

/// The file the kubelet owns in the CNI configuration directory.
pub const CONFLIST_FILE: &str = "10-pikube.conflist";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the CNI configuration {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the configuration depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniSettings {
    /// The CNI network's name; distinct per node, because the CNI result cache
    /// (/var/lib/cni/results) is keyed by it and shared by every runtime on a host.
    pub network_name: String,
    /// The Linux bridge (at most 15 characters).
    pub bridge: String,
    /// Where host-local keeps its allocations.
    pub ipam_data_dir: PathBuf,
}

/// A CNI network name from a node name: `pikube-<node>`, limited to the characters CNI
/// allows.
pub fn network_name(node: &str) -> String {
    let cleaned: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("pikube-{cleaned}")
}

/// The conflist for `pod_cidr`.
pub fn conflist(settings: &CniSettings, pod_cidr: IpNet) -> String {
    let default_route = match pod_cidr {
        IpNet::V4(_) => "0.0.0.0/0",
        IpNet::V6(_) => "::/0",
    };
    let value = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": settings.network_name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": settings.bridge,
                "isGateway": true,
                // Masquerade for traffic leaving the cluster is the kubelet's own rule,
                // so pod-to-pod traffic across nodes keeps its source address.
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr.trunc().to_string()}]],
                    "routes": [{"dst": default_route}],
                    "dataDir": settings.ipam_data_dir,
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
        ]
    });
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}

/// Writes the conflist into `conf_dir` unless it already holds the same text; true when
/// it wrote. The file is replaced atomically so the runtime never reads half of it.
pub fn write_conflist(conf_dir: &Path, text: &str) -> Result<bool, Error> {
    let path = conf_dir.join(CONFLIST_FILE);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    let err = |source| Error::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(conf_dir).map_err(err)?;
    let tmp = conf_dir.join(format!(".{CONFLIST_FILE}.tmp"));
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_is_a_bridge_over_the_pod_cidr() {
        let settings = CniSettings {
            network_name: network_name("Pi 1"),
            bridge: "cni0".into(),
            ipam_data_dir: PathBuf::from("/var/lib/kubelet/cni/networks"),
        };
        assert_eq!(settings.network_name, "pikube-Pi-1");
        let text = conflist(&settings, "10.244.1.7/24".parse().unwrap());
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["name"], "pikube-Pi-1");
        assert_eq!(v["plugins"][0]["type"], "bridge");
        assert_eq!(v["plugins"][0]["isGateway"], true);
        assert_eq!(v["plugins"][0]["ipMasq"], false);
        assert_eq!(v["plugins"][0]["hairpinMode"], true);
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.1.0/24"
        );
        assert_eq!(v["plugins"][1]["type"], "portmap");

        let dir = tempfile::tempdir().unwrap();
        assert!(write_conflist(dir.path(), &text).unwrap());
        assert!(!write_conflist(dir.path(), &text).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.path().join(CONFLIST_FILE)).unwrap(),
            text
        );
    }
}
