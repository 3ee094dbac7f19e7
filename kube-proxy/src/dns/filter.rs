//! The packet filter side of node-local DNS (upstream: NodeLocal DNSCache's `NOTRACK`
//! rules in the raw table): DNS to and from the cluster DNS address skips connection
//! tracking, so a busy node never fills its conntrack table with one-shot UDP flows and
//! never meets the UDP conntrack insertion races. A small table of its own (`ip
//! pikube-dns`, or `ip6`), replaced atomically, removed by `--cleanup`; kube-proxy's
//! own table is not touched (the proxier never sees the DNS Service at all, see
//! [`super::Exclusion`]).

use std::net::IpAddr;
use std::path::Path;

/// The table's name (in family `ip` or `ip6`).
pub const TABLE: &str = "pikube-dns";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("applying the {TABLE} nftables table: {0}")]
    Apply(#[source] component_base::nft::Error),
}

fn family(ip: IpAddr) -> (&'static str, &'static str) {
    if ip.is_ipv4() {
        ("ip", "ip")
    } else {
        ("ip6", "ip6")
    }
}

/// The transaction that (re)creates the table for `ip`.
pub fn transaction(ip: IpAddr) -> String {
    let (fam, match_kw) = family(ip);
    let tbl = format!("{fam} {TABLE}");
    let mut s = format!(
        "add table {tbl}\ndelete table {tbl}\n\
         add table {tbl} {{ comment \"node-local cluster DNS (kube-proxy)\" ; }}\n\
         add chain {tbl} prerouting {{ type filter hook prerouting priority raw ; }}\n\
         add chain {tbl} output {{ type filter hook output priority raw ; }}\n"
    );
    for chain in ["prerouting", "output"] {
        for proto in ["udp", "tcp"] {
            s.push_str(&format!(
                "add rule {tbl} {chain} {match_kw} daddr {ip} {proto} dport 53 notrack\n\
                 add rule {tbl} {chain} {match_kw} saddr {ip} {proto} sport 53 notrack\n"
            ));
        }
    }
    s
}

/// Deletes the table of family `fam` (`ip` or `ip6`), absent or not.
pub fn cleanup_transaction(fam: &str) -> String {
    format!("add table {fam} {TABLE}\ndelete table {fam} {TABLE}\n")
}

pub async fn apply(nft: &Path, script: &str) -> Result<(), Error> {
    component_base::nft::apply(nft, script)
        .await
        .map_err(Error::Apply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notrack_both_directions_in_both_hooks() {
        let t = transaction("10.96.0.10".parse().unwrap());
        assert!(t.starts_with("add table ip pikube-dns\ndelete table ip pikube-dns\n"));
        assert!(t.contains(
            "add rule ip pikube-dns prerouting ip daddr 10.96.0.10 udp dport 53 notrack"
        ));
        assert!(
            t.contains("add rule ip pikube-dns output ip saddr 10.96.0.10 tcp sport 53 notrack")
        );
        assert_eq!(t.matches("notrack").count(), 8);
        let t6 = transaction("fd00::a".parse().unwrap());
        assert!(t6
            .contains("add rule ip6 pikube-dns prerouting ip6 daddr fd00::a udp dport 53 notrack"));
    }
}
