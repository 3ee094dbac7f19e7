//! Stale UDP conntrack entries (upstream `pkg/proxy/conntrack`, `CleanStaleEntries`).
//! UDP has no connection to end: a client that keeps sending from the same port keeps
//! its conntrack entry, and with it the DNAT to the endpoint it first got, forever. So
//! after a successful sync:
//! - an endpoint that was serving a UDP Service port and no longer is: entries whose
//!   original destination is one of the port's addresses (ClusterIP, external IPs, load
//!   balancer IPs) and port, or its node port, and that were DNATed to that endpoint,
//!   are deleted, so the client's next datagram is load-balanced afresh;
//! - a UDP Service port that goes from no serving endpoint to some (or appears with
//!   some): every entry to its addresses and node port is deleted, since those recorded
//!   the reject;
//! - a UDP Service port that is deleted: every entry to its addresses and node port.
//!
//! Entries are listed once per cleanup and matched here (as upstream's netlink version
//! does), then deleted one by one by their exact original tuple, with the `conntrack`
//! tool (Debian package `conntrack`) behind the [`Conntrack`] trait; a recording fake
//! serves the unit tests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use async_trait::async_trait;
use parking_lot::Mutex;
use tracing::{debug, info, warn};

use crate::service::{IpFamily, Protocol, ServicePort, ServicePortName};
use crate::tracker::{ports_of, Model, ServiceKey};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("running conntrack {args}: {source}")]
    Spawn {
        args: String,
        #[source]
        source: std::io::Error,
    },
    #[error("conntrack {args} failed: {stderr}")]
    Failed { args: String, stderr: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One UDP conntrack entry: its original tuple and where it was DNATed to (the reply's
/// source).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// The reply's source: the endpoint when the entry was DNATed.
    pub reply_src: IpAddr,
}

impl Entry {
    /// Parses a line of `conntrack -L -p udp`: the first `src=`/`dst=`/`sport=`/`dport=`
    /// are the original direction, the second `src=` the reply's.
    pub fn parse(line: &str) -> Option<Entry> {
        let mut src = Vec::new();
        let mut dst = None;
        let mut sport = None;
        let mut dport = None;
        for word in line.split_whitespace() {
            let Some((k, v)) = word.split_once('=') else {
                continue;
            };
            match k {
                "src" => src.push(v.parse().ok()?),
                "dst" if dst.is_none() => dst = Some(v.parse().ok()?),
                "sport" if sport.is_none() => sport = Some(v.parse().ok()?),
                "dport" if dport.is_none() => dport = Some(v.parse().ok()?),
                _ => {}
            }
        }
        Some(Entry {
            src: *src.first()?,
            dst: dst?,
            sport: sport?,
            dport: dport?,
            reply_src: *src.get(1)?,
        })
    }
}

/// Which entries to delete.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Filter {
    /// The original destination address; None for a node port (any local address).
    pub dst: Option<IpAddr>,
    pub dport: u16,
    /// Only entries DNATed to this endpoint; None: all of them.
    pub dnat_to: Option<IpAddr>,
}

impl Filter {
    pub fn matches(&self, e: &Entry) -> bool {
        self.dst.is_none_or(|d| d == e.dst)
            && self.dport == e.dport
            && self.dnat_to.is_none_or(|ip| ip == e.reply_src)
    }
}

/// The node's UDP conntrack table.
#[async_trait]
pub trait Conntrack: Send + Sync {
    async fn list_udp(&self, family: IpFamily) -> Result<Vec<Entry>>;
    async fn delete_udp(&self, family: IpFamily, entry: &Entry) -> Result<()>;
}

/// The `conntrack` tool.
#[derive(Clone, Debug)]
pub struct ConntrackTool {
    program: String,
}

impl Default for ConntrackTool {
    fn default() -> Self {
        ConntrackTool {
            program: "conntrack".to_string(),
        }
    }
}

fn family_arg(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "ipv4",
        IpFamily::V6 => "ipv6",
    }
}

impl ConntrackTool {
    async fn run(&self, args: &[String]) -> Result<String> {
        let text = args.join(" ");
        let out = tokio::process::Command::new(&self.program)
            .args(args)
            .output()
            .await
            .map_err(|source| Error::Spawn {
                args: text.clone(),
                source,
            })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // `-D` exits 1 when nothing matched (the entry expired meanwhile): not a failure.
        if out.status.success() || stderr.contains(" 0 flow entries") {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::Failed {
                args: text,
                stderr: stderr.trim().to_string(),
            })
        }
    }
}

#[async_trait]
impl Conntrack for ConntrackTool {
    async fn list_udp(&self, family: IpFamily) -> Result<Vec<Entry>> {
        let args = ["-L", "-f", family_arg(family), "-p", "udp"].map(String::from);
        let out = self.run(&args).await?;
        Ok(out.lines().filter_map(Entry::parse).collect())
    }

    async fn delete_udp(&self, family: IpFamily, e: &Entry) -> Result<()> {
        let args = [
            "-D".to_string(),
            "-f".into(),
            family_arg(family).into(),
            "-p".into(),
            "udp".into(),
            "--orig-src".into(),
            e.src.to_string(),
            "--orig-dst".into(),
            e.dst.to_string(),
            "--orig-port-src".into(),
            e.sport.to_string(),
            "--orig-port-dst".into(),
            e.dport.to_string(),
        ];
        self.run(&args).await.map(drop)
    }
}

/// A conntrack table in memory that records what was deleted, for unit tests.
#[derive(Debug, Default)]
pub struct FakeConntrack {
    pub entries: Mutex<Vec<(IpFamily, Entry)>>,
    pub deleted: Mutex<Vec<Entry>>,
}

#[async_trait]
impl Conntrack for FakeConntrack {
    async fn list_udp(&self, family: IpFamily) -> Result<Vec<Entry>> {
        Ok(self
            .entries
            .lock()
            .iter()
            .filter(|(f, _)| *f == family)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn delete_udp(&self, family: IpFamily, entry: &Entry) -> Result<()> {
        self.entries
            .lock()
            .retain(|(f, e)| !(*f == family && e == entry));
        self.deleted.lock().push(entry.clone());
        Ok(())
    }
}

/// What the cleanup remembers of one UDP Service port from the last sync.
#[derive(Clone, Debug, PartialEq, Eq)]
struct UdpPort {
    /// ClusterIP, external IPs, load balancer IPs.
    addresses: Vec<IpAddr>,
    port: u16,
    node_port: Option<u16>,
    /// Serving endpoints (address, port): the ones traffic may have been sent to.
    serving: BTreeSet<(IpAddr, u16)>,
}

impl UdpPort {
    fn new(port: &ServicePort, endpoints: &[crate::endpoints::Endpoint]) -> UdpPort {
        UdpPort {
            addresses: port
                .cluster_ip
                .iter()
                .chain(&port.external_ips)
                .chain(&port.load_balancer_ips)
                .copied()
                .collect(),
            port: port.port,
            node_port: port.node_port,
            serving: endpoints
                .iter()
                .filter(|e| e.serving())
                .map(|e| (e.ip, e.port))
                .collect(),
        }
    }

    /// Every entry to the port's addresses and node port.
    fn all(&self, dnat_to: Option<IpAddr>) -> impl Iterator<Item = Filter> + '_ {
        self.addresses
            .iter()
            .map(move |a| Filter {
                dst: Some(*a),
                dport: self.port,
                dnat_to,
            })
            .chain(self.node_port.map(|np| Filter {
                dst: None,
                dport: np,
                dnat_to,
            }))
    }
}

/// Follows the UDP Service ports across syncs and cleans up after their changes.
#[derive(Debug, Default)]
pub struct StaleEntries {
    /// Per family (V4, V6): the UDP ports as of the last model update.
    ports: [BTreeMap<ServicePortName, UdpPort>; 2],
    /// Filters waiting for a successful sync, per family.
    pending: [BTreeSet<Filter>; 2],
}

fn index(family: IpFamily) -> usize {
    match family {
        IpFamily::V4 => 0,
        IpFamily::V6 => 1,
    }
}

impl StaleEntries {
    /// Compares the UDP ports of the Services in `dirty` with what `model` of `family`
    /// now holds and queues the filters their changes call for.
    pub fn update<'a>(
        &mut self,
        family: IpFamily,
        model: &Model,
        dirty: impl IntoIterator<Item = &'a ServiceKey>,
    ) {
        let i = index(family);
        for key in dirty {
            let old: BTreeMap<ServicePortName, UdpPort> = ports_of(&self.ports[i], key)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let new: BTreeMap<ServicePortName, UdpPort> = ports_of(&model.services, key)
                .filter(|(name, _)| name.protocol == Protocol::Udp)
                .map(|(name, port)| {
                    let eps = model.endpoints.get(name).map(|e| &**e).unwrap_or(&[]);
                    (name.clone(), UdpPort::new(port, eps))
                })
                .collect();
            for (name, was) in &old {
                let Some(now) = new.get(name) else {
                    // The Service port is gone.
                    self.pending[i].extend(was.all(None));
                    continue;
                };
                for (ip, port) in &was.serving {
                    if !now.serving.contains(&(*ip, *port)) {
                        self.pending[i].extend(was.all(Some(*ip)));
                    }
                }
            }
            for (name, now) in &new {
                let had = old.get(name).is_some_and(|w| !w.serving.is_empty());
                if !had && !now.serving.is_empty() {
                    self.pending[i].extend(now.all(None));
                }
            }
            for name in old.keys() {
                self.ports[i].remove(name);
            }
            self.ports[i].extend(new);
        }
    }

    /// The filters waiting for the next successful sync.
    pub fn pending(&self, family: IpFamily) -> &BTreeSet<Filter> {
        &self.pending[index(family)]
    }

    /// After a successful sync: deletes the entries the queued filters match. Returns
    /// how many were deleted; failures are logged and not retried (upstream does the
    /// same: the next change brings the next cleanup).
    pub async fn clean(&mut self, ct: &dyn Conntrack) -> usize {
        let mut deleted = 0;
        for family in [IpFamily::V4, IpFamily::V6] {
            let filters = std::mem::take(&mut self.pending[index(family)]);
            if filters.is_empty() {
                continue;
            }
            let entries = match ct.list_udp(family).await {
                Ok(e) => e,
                Err(e) => {
                    warn!(?family, error = %e, "listing conntrack entries failed; stale UDP entries stay");
                    continue;
                }
            };
            // Indexed by port: a cold start queues a filter per UDP Service port, and
            // the table may hold many entries.
            let mut by_port: HashMap<u16, Vec<&Filter>> = HashMap::new();
            for f in &filters {
                by_port.entry(f.dport).or_default().push(f);
            }
            for entry in entries.iter().filter(|e| {
                by_port
                    .get(&e.dport)
                    .is_some_and(|fs| fs.iter().any(|f| f.matches(e)))
            }) {
                match ct.delete_udp(family, entry).await {
                    Ok(()) => {
                        debug!(?entry, "deleted stale UDP conntrack entry");
                        deleted += 1;
                    }
                    Err(e) => warn!(?entry, error = %e, "deleting a conntrack entry failed"),
                }
            }
        }
        if deleted > 0 {
            info!(deleted, "deleted stale UDP conntrack entries");
        }
        deleted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::Tracker;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;

    const DNS: &str = "metadata: {namespace: ns, name: dns}\n\
        spec: {type: NodePort, clusterIP: 10.96.0.10, externalIPs: [192.0.2.10],\n\
          ports: [{name: dns, port: 53, protocol: UDP, nodePort: 30053}, {name: dns-tcp, port: 53}]}";

    fn slice(ips: &[&str]) -> EndpointSlice {
        let eps: Vec<String> = ips
            .iter()
            .map(|ip| format!("{{addresses: [{ip}]}}"))
            .collect();
        serde_yaml::from_str(&format!(
            "metadata: {{namespace: ns, name: dns-1, labels: {{kubernetes.io/service-name: dns}}}}\n\
             addressType: IPv4\nports: [{{name: dns, port: 5353, protocol: UDP}}, {{name: dns-tcp, port: 5353}}]\n\
             endpoints: [{}]",
            eps.join(", ")
        ))
        .unwrap()
    }

    fn entry(src: &str, dst: &str, dport: u16, reply_src: &str) -> Entry {
        Entry {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport: 40000,
            dport,
            reply_src: reply_src.parse().unwrap(),
        }
    }

    struct Fixture {
        tracker: Tracker,
        models: [Model; 2],
        stale: StaleEntries,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                tracker: Tracker::new("node-a"),
                models: Default::default(),
                stale: StaleEntries::default(),
            }
        }

        fn sync(&mut self) {
            let dirty = self.tracker.flush(&mut self.models);
            self.stale.update(
                IpFamily::V4,
                Tracker::model(&self.models, IpFamily::V4),
                &dirty,
            );
        }
    }

    #[test]
    fn parses_conntrack_list_lines() {
        let e = Entry::parse("udp      17 27 src=10.0.0.3 dst=10.96.0.10 sport=40000 dport=53 [UNREPLIED] src=10.244.1.2 dst=10.0.0.3 sport=5353 dport=40000 mark=0 use=1").unwrap();
        assert_eq!(e, entry("10.0.0.3", "10.96.0.10", 53, "10.244.1.2"));
        let e = Entry::parse("udp      17 27 src=fd00::3 dst=fd00:96::a sport=40000 dport=53 src=fd00::9 dst=fd00::3 sport=5353 dport=40000 [ASSURED] mark=0 use=1").unwrap();
        assert_eq!(e.reply_src, "fd00::9".parse::<IpAddr>().unwrap());
        assert_eq!(Entry::parse("conntrack v1.4.7: 3 flow entries"), None);
    }

    #[tokio::test]
    async fn a_removed_endpoint_loses_its_entries_only() {
        let mut f = Fixture::new();
        f.tracker
            .apply_service(&serde_yaml::from_str::<Service>(DNS).unwrap());
        f.tracker.apply_slice(&slice(&["10.244.1.2", "10.244.2.2"]));
        f.sync();
        // The first sync finds the port newly active: everything to it is cleared.
        assert_eq!(f.stale.pending(IpFamily::V4).len(), 3);
        f.stale.clean(&FakeConntrack::default()).await;

        let ct = FakeConntrack::default();
        let stale = [
            entry("10.0.0.3", "10.96.0.10", 53, "10.244.1.2"),
            entry("10.0.0.4", "192.0.2.10", 53, "10.244.1.2"),
            entry("10.0.0.5", "10.213.0.2", 30053, "10.244.1.2"),
        ];
        let keep = [
            // The endpoint that stays.
            entry("10.0.0.6", "10.96.0.10", 53, "10.244.2.2"),
            // Another Service port, and another address, to the removed endpoint.
            entry("10.0.0.3", "10.96.0.10", 54, "10.244.1.2"),
            entry("10.0.0.3", "10.96.0.11", 53, "10.244.1.2"),
            // Not DNATed (the endpoint talking to the ClusterIP's own address).
            entry("10.244.1.2", "10.96.0.10", 53, "10.96.0.10"),
        ];
        ct.entries
            .lock()
            .extend(stale.iter().chain(&keep).map(|e| (IpFamily::V4, e.clone())));
        f.tracker.apply_slice(&slice(&["10.244.2.2"]));
        f.sync();
        assert_eq!(f.stale.clean(&ct).await, 3);
        assert_eq!(*ct.deleted.lock(), stale.to_vec());
        assert!(f.stale.pending(IpFamily::V4).is_empty());
        // Nothing changed: nothing to clean.
        f.tracker.apply_slice(&slice(&["10.244.2.2"]));
        f.sync();
        assert!(f.stale.pending(IpFamily::V4).is_empty());
    }

    #[tokio::test]
    async fn a_port_gaining_its_first_endpoint_clears_the_rejected_entries() {
        let mut f = Fixture::new();
        f.tracker
            .apply_service(&serde_yaml::from_str::<Service>(DNS).unwrap());
        f.sync();
        assert!(f.stale.pending(IpFamily::V4).is_empty());
        let ct = FakeConntrack::default();
        let rejected = [
            entry("10.0.0.3", "10.96.0.10", 53, "10.96.0.10"),
            entry("10.0.0.3", "10.213.0.2", 30053, "10.213.0.2"),
        ];
        let other = entry("10.0.0.3", "10.96.0.99", 53, "10.96.0.99");
        ct.entries.lock().extend(
            rejected
                .iter()
                .chain([&other])
                .map(|e| (IpFamily::V4, e.clone())),
        );
        f.tracker.apply_slice(&slice(&["10.244.1.2"]));
        f.sync();
        assert_eq!(f.stale.clean(&ct).await, 2);
        assert_eq!(*ct.deleted.lock(), rejected.to_vec());

        // The Service goes: its entries go with it.
        ct.entries.lock().push((
            IpFamily::V4,
            entry("10.0.0.7", "10.96.0.10", 53, "10.244.1.2"),
        ));
        f.tracker
            .delete_service(&serde_yaml::from_str::<Service>(DNS).unwrap());
        f.sync();
        assert_eq!(f.stale.clean(&ct).await, 1);
        assert_eq!(ct.entries.lock().len(), 1, "only the other Service's entry");
    }
}
