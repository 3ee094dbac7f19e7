//! Masquerade for pod traffic leaving the cluster (kubenet's and ip-masq-agent's rule;
//! the CNI bridge's own `ipMasq` is off so pod-to-pod traffic across nodes keeps its
//! source address): a packet from this node's podCIDR to an address outside every
//! Node's podCIDR leaves with the node's address. The rule lives in an nftables table of
//! the kubelet's own, `inet pikube-kubelet`, replaced whole in one transaction (`nft -f
//! -`, as upstream's knftables does), so kube-proxy's and portmap's tables are never
//! touched and a restarted kubelet converges on the same table.

use std::fmt::Write as _;
use std::path::PathBuf;

use ipnet::IpNet;

/// The kubelet's nftables table (family `inet`).
pub const TABLE: &str = "pikube-kubelet";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("running {binary}: {source}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    #[error("nft -f - failed ({status}): {stderr}")]
    Nft { status: String, stderr: String },
}

/// The whole table as an `nft -f` script: deleting and recreating it in one transaction
/// replaces it atomically (the leading `add` makes the delete valid on a first run).
/// `own` are this node's pod CIDRs (no rule without them); `cluster` every Node's, this
/// node's included.
pub fn ruleset(table: &str, own: &[IpNet], cluster: &[IpNet]) -> String {
    let mut all: Vec<IpNet> = cluster.iter().chain(own).map(IpNet::trunc).collect();
    // Overlapping elements of an interval set are refused; merge them first.
    all = IpNet::aggregate(&all);
    let (v4, v6): (Vec<IpNet>, Vec<IpNet>) = all.into_iter().partition(|n| n.addr().is_ipv4());
    let mut own: Vec<IpNet> = own.iter().map(IpNet::trunc).collect();
    own.sort();
    own.dedup();

    let mut s = String::new();
    let _ = writeln!(s, "add table inet {table}");
    let _ = writeln!(s, "delete table inet {table}");
    let _ = writeln!(s, "table inet {table} {{");
    for (name, kind, elements) in [
        ("cluster-pod-cidrs-v4", "ipv4_addr", &v4),
        ("cluster-pod-cidrs-v6", "ipv6_addr", &v6),
    ] {
        let _ = writeln!(s, "\tset {name} {{");
        let _ = writeln!(s, "\t\ttype {kind}");
        let _ = writeln!(s, "\t\tflags interval");
        if !elements.is_empty() {
            let list: Vec<String> = elements.iter().map(ToString::to_string).collect();
            let _ = writeln!(s, "\t\telements = {{ {} }}", list.join(", "));
        }
        let _ = writeln!(s, "\t}}");
    }
    let _ = writeln!(s, "\tchain postrouting {{");
    let _ = writeln!(
        s,
        "\t\ttype nat hook postrouting priority srcnat; policy accept;"
    );
    for cidr in &own {
        let (ip, set) = if cidr.addr().is_ipv4() {
            ("ip", "cluster-pod-cidrs-v4")
        } else {
            ("ip6", "cluster-pod-cidrs-v6")
        };
        let _ = writeln!(
            s,
            "\t\t{ip} saddr {cidr} {ip} daddr != @{set} masquerade comment \"pod traffic leaving the cluster\""
        );
    }
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(s, "}}");
    s
}

/// The script that removes the table (and nothing else).
pub fn delete_script(table: &str) -> String {
    format!("add table inet {table}\ndelete table inet {table}\n")
}

/// Applies nftables scripts (a recording implementation in tests).
#[async_trait::async_trait]
pub trait Nftables: Send + Sync {
    async fn apply(&self, script: &str) -> Result<(), Error>;
}

/// The `nft` command, fed the script on stdin (`nft -f -`).
pub struct NftCommand {
    pub binary: PathBuf,
}

impl Default for NftCommand {
    fn default() -> Self {
        NftCommand {
            binary: PathBuf::from("nft"),
        }
    }
}

#[async_trait::async_trait]
impl Nftables for NftCommand {
    async fn apply(&self, script: &str) -> Result<(), Error> {
        component_base::nft::apply(&self.binary, script)
            .await
            .map_err(|e| match e {
                component_base::nft::Error::Spawn { binary, source } => {
                    Error::Spawn { binary, source }
                }
                component_base::nft::Error::Failed { status, stderr } => {
                    Error::Nft { status, stderr }
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn masquerade_leaves_pod_to_pod_traffic_alone() {
        let own = nets(&["10.244.1.0/24"]);
        let cluster = nets(&["10.244.2.0/24", "10.244.1.0/24", "10.244.3.0/24"]);
        let s = ruleset(TABLE, &own, &cluster);
        let lines: Vec<&str> = s.lines().map(str::trim).collect();
        assert_eq!(lines[0], "add table inet pikube-kubelet");
        assert_eq!(lines[1], "delete table inet pikube-kubelet");
        assert_eq!(lines[2], "table inet pikube-kubelet {");
        // Adjacent CIDRs merge into one interval.
        assert!(
            lines.contains(&"elements = { 10.244.1.0/24, 10.244.2.0/23 }"),
            "{s}"
        );
        assert!(lines.contains(&"type nat hook postrouting priority srcnat; policy accept;"));
        let rules: Vec<&&str> = lines.iter().filter(|l| l.contains("masquerade")).collect();
        assert_eq!(rules.len(), 1, "{s}");
        assert!(rules[0]
            .starts_with("ip saddr 10.244.1.0/24 ip daddr != @cluster-pod-cidrs-v4 masquerade"));
        // Same input, same script: the kubelet applies it only when it changes.
        assert_eq!(s, ruleset(TABLE, &own, &cluster));
    }

    #[test]
    fn dual_stack_and_no_cidr_yet() {
        let own = nets(&["10.244.1.0/24", "fd10:1::/64"]);
        let s = ruleset(TABLE, &own, &nets(&["fd10:2::/64"]));
        assert!(s.contains("elements = { fd10:1::/64, fd10:2::/64 }"), "{s}");
        assert!(s.contains("elements = { 10.244.1.0/24 }"), "{s}");
        assert!(s.contains("ip6 saddr fd10:1::/64 ip6 daddr != @cluster-pod-cidrs-v6 masquerade"));

        // Before the node has a pod CIDR: the table and sets, no rule, no empty element list.
        let s = ruleset(TABLE, &[], &[]);
        assert!(!s.contains("masquerade"), "{s}");
        assert!(!s.contains("elements"), "{s}");
        assert_eq!(
            delete_script(TABLE),
            "add table inet pikube-kubelet\ndelete table inet pikube-kubelet\n"
        );
    }
}
