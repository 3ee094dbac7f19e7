//! The `certs` command: kubeadm's `init phase certs all` and `init phase kubeconfig all`
//! in one idempotent step, plus what kubeadm leaves to each node (the kubelets' client
//! kubeconfigs and serving certificates) and to add-ons (kube-proxy's credentials).
//!
//! Layout of `--cert-dir` (kubeadm's names where kubeadm has the file):
//! `ca.{crt,key}`, `apiserver.{crt,key}`, `apiserver-kubelet-client.{crt,key}`,
//! `sa.{key,pub}`, and per client `<name>.{crt,key}` beside its kubeconfig: `admin.conf`,
//! `scheduler.conf`, `controller-manager.conf`, `kube-proxy.conf` (in `--kubeconfig-dir`),
//! and `nodes/<node>/{kubelet.conf, kubelet-client.{crt,key}, kubelet.{crt,key}}`.
//!
//! etcd's PKI as kubeadm's `certs etcd-*` phases write it, under its own CA:
//! `etcd/ca.{crt,key}`, `etcd/server.{crt,key}` (etcd's `--cert-file`), `etcd/peer.{crt,key}`
//! (`--peer-cert-file`), `etcd/healthcheck-client.{crt,key}` (etcdctl's health checks) and
//! `apiserver-etcd-client.{crt,key}` (the apiserver's `--etcd-certfile`). The PKI is made
//! once for the whole cluster, so etcd's serving and peer certificates name every
//! control-plane host, where kubeadm writes one per member for that member's names.

use crate::kubeconfig;
use crate::options::{CertsConfig, Host};
use crate::pki::{self, CertSpec, CertificateAuthority, Outcome};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The CA's common name, as kubeadm names it.
pub const CA_COMMON_NAME: &str = "kubernetes";
/// The group with every right (RBAC's `cluster-admin` binding).
pub const MASTERS_GROUP: &str = "system:masters";
/// The kubelets' group.
pub const NODES_GROUP: &str = "system:nodes";
/// The etcd CA's common name, as kubeadm names it.
pub const ETCD_CA_COMMON_NAME: &str = "etcd-ca";
/// The folder of etcd's PKI in `--cert-dir`, as kubeadm names it.
pub const ETCD_DIR: &str = "etcd";
/// The common names of etcd's serving and peer certificates. kubeadm uses the member's
/// node name; one certificate for every member has kubeadm 1.10's names instead.
pub const ETCD_SERVER_COMMON_NAME: &str = "kube-etcd";
pub const ETCD_PEER_COMMON_NAME: &str = "kube-etcd-peer";
/// kubeadm's common name of etcd's health-check client.
pub const ETCD_HEALTHCHECK_CLIENT_COMMON_NAME: &str = "kube-etcd-healthcheck-client";
/// kubeadm's common name of the apiserver's etcd client certificate.
pub const APISERVER_ETCD_CLIENT_COMMON_NAME: &str = "kube-apiserver-etcd-client";

/// One file (or certificate/key pair) and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub what: String,
    pub path: PathBuf,
    pub outcome: Outcome,
}

/// What `certs` did, in order.
#[derive(Debug, Default)]
pub struct Report {
    pub entries: Vec<Entry>,
    /// The CA's `sha256:<hex>` public-key hash, as kubeadm prints it for joining nodes.
    pub ca_cert_hash: String,
}

impl Report {
    fn push(&mut self, what: impl Into<String>, path: &Path, outcome: Outcome) {
        self.entries.push(Entry {
            what: what.into(),
            path: path.to_path_buf(),
            outcome,
        });
    }

    /// Whether nothing was created or renewed.
    pub fn unchanged(&self) -> bool {
        self.entries.iter().all(|e| e.outcome == Outcome::Unchanged)
    }
}

/// The apiserver serving certificate's names: the `kubernetes` Service's names and IP, the
/// control-plane hosts, localhost, and the extra SANs.
pub fn apiserver_spec(config: &CertsConfig) -> CertSpec {
    let domain = &config.service_dns_domain;
    let mut dns: Vec<String> = vec![
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        format!("kubernetes.default.svc.{domain}"),
        "localhost".into(),
    ];
    let mut ips: Vec<IpAddr> = vec![config.first_service_ip(), IpAddr::from([127, 0, 0, 1])];
    for host in config.control_plane.iter().chain(&config.extra_sans) {
        match host {
            Host::Ip(ip) => ips.push(*ip),
            Host::Dns(name) => dns.push(name.clone()),
        }
    }
    dedup(&mut dns);
    dedup(&mut ips);
    CertSpec::server("apiserver", "kube-apiserver", dns, ips)
}

/// The names of etcd's serving and peer certificates, as kubeadm's (`localhost`,
/// `127.0.0.1`, `::1`, the member's name and address) for every control-plane host.
pub fn etcd_sans(config: &CertsConfig) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns: Vec<String> = vec!["localhost".into()];
    let mut ips: Vec<IpAddr> = vec![
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ];
    for host in &config.control_plane {
        match host {
            Host::Ip(ip) => ips.push(*ip),
            Host::Dns(name) => dns.push(name.clone()),
        }
    }
    dedup(&mut dns);
    dedup(&mut ips);
    (dns, ips)
}

/// Writes etcd's CA and the certificates it signs; see the module documentation.
fn run_etcd(config: &CertsConfig, report: &mut Report) -> Result<(), pki::Error> {
    let dir = config.cert_dir.join(ETCD_DIR);
    let (ca, outcome) = CertificateAuthority::ensure(&dir, ETCD_CA_COMMON_NAME)?;
    report.push("etcd/ca", &ca.pair.cert_path, outcome);
    let (dns, ips) = etcd_sans(config);
    for (name, common_name) in [
        ("server", ETCD_SERVER_COMMON_NAME),
        ("peer", ETCD_PEER_COMMON_NAME),
    ] {
        // Both serve and dial: a member is a client of its peers (kubeadm's usages).
        let mut spec = CertSpec::server(name, common_name, dns.clone(), ips.clone());
        spec.client = true;
        let (pair, outcome) = ca.ensure_cert(&dir, &spec)?;
        report.push(format!("etcd/{name}"), &pair.cert_path, outcome);
    }
    let spec = CertSpec::client(
        "healthcheck-client",
        ETCD_HEALTHCHECK_CLIENT_COMMON_NAME,
        None,
    );
    let (pair, outcome) = ca.ensure_cert(&dir, &spec)?;
    report.push("etcd/healthcheck-client", &pair.cert_path, outcome);
    let spec = CertSpec::client(
        "apiserver-etcd-client",
        APISERVER_ETCD_CLIENT_COMMON_NAME,
        None,
    );
    let (pair, outcome) = ca.ensure_cert(&config.cert_dir, &spec)?;
    report.push("apiserver-etcd-client", &pair.cert_path, outcome);
    Ok(())
}

fn dedup<T: PartialEq>(v: &mut Vec<T>) {
    let mut seen: Vec<T> = Vec::with_capacity(v.len());
    for x in v.drain(..) {
        if !seen.contains(&x) {
            seen.push(x);
        }
    }
    *v = seen;
}

/// The client identities with a kubeconfig in `--kubeconfig-dir`: (file stem, kubeconfig
/// file, user name = CN, group = O).
pub const CLIENTS: [(&str, &str, &str, Option<&str>); 4] = [
    (
        "admin",
        "admin.conf",
        "kubernetes-admin",
        Some(MASTERS_GROUP),
    ),
    ("scheduler", "scheduler.conf", "system:kube-scheduler", None),
    (
        "controller-manager",
        "controller-manager.conf",
        "system:kube-controller-manager",
        None,
    ),
    ("kube-proxy", "kube-proxy.conf", "system:kube-proxy", None),
];

/// A node's folder: `<cert-dir>/nodes/<name>`.
pub fn node_dir(config: &CertsConfig, node: &str) -> PathBuf {
    config.cert_dir.join("nodes").join(node)
}

/// Writes everything; see the module documentation.
pub fn run(config: &CertsConfig) -> Result<Report, pki::Error> {
    let dir = &config.cert_dir;
    let mut report = Report::default();
    let (ca, outcome) = CertificateAuthority::ensure(dir, CA_COMMON_NAME)?;
    report.push("ca", &ca.pair.cert_path, outcome);
    report.ca_cert_hash = ca.cert_hash();

    let (pair, outcome) = ca.ensure_cert(dir, &apiserver_spec(config))?;
    report.push("apiserver", &pair.cert_path, outcome);
    let spec = CertSpec::client(
        "apiserver-kubelet-client",
        "kube-apiserver-kubelet-client",
        Some(MASTERS_GROUP),
    );
    let (pair, outcome) = ca.ensure_cert(dir, &spec)?;
    report.push("apiserver-kubelet-client", &pair.cert_path, outcome);
    let outcome = pki::ensure_service_account_keys(dir)?;
    report.push("sa", &dir.join("sa.key"), outcome);
    run_etcd(config, &mut report)?;

    let server = config.server_url();
    let write_kubeconfig = |report: &mut Report,
                            what: String,
                            path: PathBuf,
                            user: &str,
                            pair: &pki::Pair|
     -> Result<(), pki::Error> {
        let text = kubeconfig::render(
            &config.cluster_name,
            &server,
            &ca.pair.cert_pem,
            user,
            &pair.cert_pem,
            &pair.key_pem,
        );
        let existed = path.exists();
        let outcome = match (pki::write_file(&path, text.as_bytes(), 0o600)?, existed) {
            (false, _) => Outcome::Unchanged,
            (true, false) => Outcome::Created,
            (true, true) => Outcome::Renewed("its credentials or server changed".into()),
        };
        report.push(what, &path, outcome);
        Ok(())
    };
    for (stem, file, user, groups) in CLIENTS {
        let (pair, outcome) = ca.ensure_cert(dir, &CertSpec::client(stem, user, groups))?;
        report.push(stem, &pair.cert_path, outcome);
        let path = config.kubeconfig_dir.join(file);
        write_kubeconfig(&mut report, file.to_string(), path, user, &pair)?;
    }
    for node in &config.nodes {
        let ndir = node_dir(config, &node.name);
        let user = format!("system:node:{}", node.name);
        let spec = CertSpec::client("kubelet-client", &user, Some(NODES_GROUP));
        let (pair, outcome) = ca.ensure_cert(&ndir, &spec)?;
        report.push(
            format!("{} kubelet-client", node.name),
            &pair.cert_path,
            outcome,
        );
        let what = format!("{} kubelet.conf", node.name);
        write_kubeconfig(&mut report, what, ndir.join("kubelet.conf"), &user, &pair)?;
        let mut spec = CertSpec::server("kubelet", &user, vec![node.name.clone()], vec![node.ip]);
        spec.organization = Some(NODES_GROUP.into());
        let (pair, outcome) = ca.ensure_cert(&ndir, &spec)?;
        report.push(format!("{} kubelet", node.name), &pair.cert_path, outcome);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{Cli, Command};
    use clap::Parser;
    use std::collections::BTreeMap;
    use x509_parser::certificate::X509Certificate;
    use x509_parser::extensions::GeneralName;

    fn config(dir: &Path, extra: &[&str]) -> CertsConfig {
        let d = format!("--dir={}", dir.display());
        let mut args = vec![
            "pikubeadm",
            "certs",
            &d,
            "--cluster-name=pi",
            "--control-plane=pi-master,192.168.1.10",
            "--service-cidr=10.43.0.0/16",
            "--node=pi-1=192.168.1.11",
        ];
        args.extend_from_slice(extra);
        match Cli::try_parse_from(args).unwrap().command {
            Command::Certs(o) => o.into_config().unwrap(),
            _ => unreachable!("certs was parsed"),
        }
    }

    fn der(path: &Path) -> Vec<u8> {
        let pem = std::fs::read(path).unwrap();
        let der = rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .unwrap()
            .unwrap();
        der.to_vec()
    }

    fn with_cert<T>(path: &Path, f: impl FnOnce(&X509Certificate<'_>) -> T) -> T {
        let der = der(path);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        f(&cert)
    }

    fn cn(c: &X509Certificate<'_>) -> String {
        c.subject()
            .iter_common_name()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    }

    fn orgs(c: &X509Certificate<'_>) -> Vec<String> {
        c.subject()
            .iter_organization()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    }

    fn sans(c: &X509Certificate<'_>) -> Vec<String> {
        let mut out = Vec::new();
        for n in &c
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
        {
            match n {
                GeneralName::DNSName(d) => out.push((*d).to_string()),
                GeneralName::IPAddress(b) => out.push(pki_ip(b)),
                _ => {}
            }
        }
        out
    }

    fn pki_ip(b: &[u8]) -> String {
        match b.len() {
            4 => IpAddr::from(<[u8; 4]>::try_from(b).unwrap()).to_string(),
            _ => IpAddr::from(<[u8; 16]>::try_from(b).unwrap()).to_string(),
        }
    }

    /// (client_auth, server_auth), and that the CA signed it.
    fn usage_and_signed(ca: &Path, c: &X509Certificate<'_>) -> (bool, bool) {
        let ca_der = der(ca);
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        c.verify_signature(Some(ca.public_key())).unwrap();
        assert_eq!(c.issuer().as_raw(), ca.subject().as_raw());
        let eku = c.extended_key_usage().unwrap().unwrap().value;
        (eku.client_auth, eku.server_auth)
    }

    fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
        use std::os::unix::fs::PermissionsExt;
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
                    out.insert(p.clone(), (std::fs::read(&p).unwrap(), mode));
                }
            }
        }
        out
    }

    #[test]
    fn certificate_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let report = run(&config(dir, &[])).unwrap();
        assert!(
            report.entries.iter().all(|e| e.outcome == Outcome::Created),
            "{report:?}"
        );
        let ca = dir.join("ca.crt");
        with_cert(&ca, |c| {
            assert!(c.is_ca());
            assert_eq!(cn(c), "kubernetes");
            let years = (c.validity().not_after.timestamp() - c.validity().not_before.timestamp())
                / (365 * 24 * 3600);
            assert_eq!(years, 10);
        });
        with_cert(&dir.join("apiserver.crt"), |c| {
            assert_eq!(cn(c), "kube-apiserver");
            assert_eq!(usage_and_signed(&ca, c), (false, true));
            let mut s = sans(c);
            s.sort();
            let mut want = vec![
                "10.43.0.1",
                "127.0.0.1",
                "192.168.1.10",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "localhost",
                "pi-master",
            ];
            want.sort_unstable();
            assert_eq!(s, want);
        });
        with_cert(&dir.join("apiserver-kubelet-client.crt"), |c| {
            assert_eq!(cn(c), "kube-apiserver-kubelet-client");
            assert_eq!(orgs(c), ["system:masters"]);
            assert_eq!(usage_and_signed(&ca, c), (true, false));
        });
        for (stem, _, user, groups) in CLIENTS {
            with_cert(&dir.join(format!("{stem}.crt")), |c| {
                assert_eq!(cn(c), user);
                assert_eq!(orgs(c), Vec::from_iter(groups.map(String::from)));
                assert_eq!(usage_and_signed(&ca, c), (true, false));
            });
        }
        let node = dir.join("nodes/pi-1");
        with_cert(&node.join("kubelet-client.crt"), |c| {
            assert_eq!(cn(c), "system:node:pi-1");
            assert_eq!(orgs(c), ["system:nodes"]);
            assert_eq!(usage_and_signed(&ca, c), (true, false));
        });
        with_cert(&node.join("kubelet.crt"), |c| {
            assert_eq!(sans(c), ["pi-1", "192.168.1.11"]);
            assert_eq!(usage_and_signed(&ca, c), (false, true));
        });

        // etcd's PKI: its own CA, kubeadm's names and usages.
        let etcd_ca = dir.join("etcd/ca.crt");
        with_cert(&etcd_ca, |c| {
            assert!(c.is_ca());
            assert_eq!(cn(c), "etcd-ca");
        });
        for (file, name) in [("server", "kube-etcd"), ("peer", "kube-etcd-peer")] {
            with_cert(&dir.join(format!("etcd/{file}.crt")), |c| {
                assert_eq!(cn(c), name);
                assert_eq!(usage_and_signed(&etcd_ca, c), (true, true), "{file}");
                let mut s = sans(c);
                s.sort();
                assert_eq!(
                    s,
                    ["127.0.0.1", "192.168.1.10", "::1", "localhost", "pi-master"],
                    "{file}"
                );
            });
        }
        for (path, name) in [
            (
                "etcd/healthcheck-client.crt",
                "kube-etcd-healthcheck-client",
            ),
            ("apiserver-etcd-client.crt", "kube-apiserver-etcd-client"),
        ] {
            with_cert(&dir.join(path), |c| {
                assert_eq!(cn(c), name);
                assert!(orgs(c).is_empty(), "{path}");
                assert_eq!(usage_and_signed(&etcd_ca, c), (true, false), "{path}");
            });
        }
        // The cluster CA signed none of etcd's certificates.
        let cluster_ca_der = der(&ca);
        let (_, cluster_ca) = x509_parser::parse_x509_certificate(&cluster_ca_der).unwrap();
        with_cert(&dir.join("apiserver-etcd-client.crt"), |c| {
            assert!(c.verify_signature(Some(cluster_ca.public_key())).is_err());
        });

        // The CA hash: SHA-256 over the SubjectPublicKeyInfo.
        let spki = with_cert(&ca, |c| c.public_key().raw.to_vec());
        let want: String = ring::digest::digest(&ring::digest::SHA256, &spki)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(report.ca_cert_hash, format!("sha256:{want}"));
        assert_eq!(report.ca_cert_hash.len(), 7 + 64);

        // Kubeconfigs: the first control-plane host, the CA, the client's own pair.
        let kc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join("admin.conf")).unwrap())
                .unwrap();
        assert_eq!(
            kc["clusters"][0]["cluster"]["server"],
            "https://pi-master:6443"
        );
        assert_eq!(kc["clusters"][0]["name"], "pi");
        use base64::Engine;
        let b64 = |v: &serde_yaml::Value| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap()
        };
        assert_eq!(
            b64(&kc["clusters"][0]["cluster"]["certificate-authority-data"]),
            std::fs::read(&ca).unwrap()
        );
        assert_eq!(
            b64(&kc["users"][0]["user"]["client-certificate-data"]),
            std::fs::read(dir.join("admin.crt")).unwrap()
        );
        assert_eq!(
            b64(&kc["users"][0]["user"]["client-key-data"]),
            std::fs::read(dir.join("admin.key")).unwrap()
        );
        let kc = std::fs::read_to_string(node.join("kubelet.conf")).unwrap();
        assert!(kc.contains("system:node:pi-1@pi"), "{kc}");

        // Service-account keys: a PKCS#8 private key and its PKIX public key.
        let sa = std::fs::read(dir.join("sa.key")).unwrap();
        assert!(matches!(
            rustls_pemfile::read_one(&mut sa.as_slice()).unwrap(),
            Some(rustls_pemfile::Item::Pkcs8Key(_))
        ));
        let public = std::fs::read_to_string(dir.join("sa.pub")).unwrap();
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(
            rcgen::KeyPair::from_pem(std::str::from_utf8(&sa).unwrap())
                .unwrap()
                .public_key_pem(),
            public
        );

        // Keys and kubeconfigs are private; certificates are not.
        for (path, (_, mode)) in snapshot(dir) {
            let name = path.to_string_lossy();
            if name.ends_with(".key") || name.ends_with(".conf") {
                assert_eq!(mode, 0o600, "{name}");
            } else {
                assert_eq!(mode, 0o644, "{name}");
            }
        }
    }

    #[test]
    fn rerun_is_idempotent_and_renews_what_changed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        run(&config(dir, &[])).unwrap();
        let first = snapshot(dir);
        let report = run(&config(dir, &[])).unwrap();
        assert!(report.unchanged(), "{report:?}");
        assert_eq!(snapshot(dir), first);

        // A new control-plane address: the apiserver certificate is signed again for the
        // same key; nothing else changes (the kubeconfigs name the first host).
        let report = run(&config(
            dir,
            &["--apiserver-cert-extra-sans=pi.example.com"],
        ))
        .unwrap();
        let changed: Vec<&str> = report
            .entries
            .iter()
            .filter(|e| e.outcome != Outcome::Unchanged)
            .map(|e| e.what.as_str())
            .collect();
        assert_eq!(changed, ["apiserver"]);
        let second = snapshot(dir);
        assert_eq!(
            second[&dir.join("apiserver.key")],
            first[&dir.join("apiserver.key")]
        );
        assert_ne!(
            second[&dir.join("apiserver.crt")],
            first[&dir.join("apiserver.crt")]
        );
        with_cert(&dir.join("apiserver.crt"), |c| {
            assert!(sans(c).contains(&"pi.example.com".to_string()));
        });

        // A certificate that expires within 90 days is renewed with the same key, and its
        // kubeconfig follows.
        let (ca, _) = CertificateAuthority::ensure(dir, CA_COMMON_NAME).unwrap();
        let key_pem = std::fs::read_to_string(dir.join("admin.key")).unwrap();
        let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
        let spec = CertSpec::client("admin", "kubernetes-admin", Some(MASTERS_GROUP));
        let short = ca
            .sign(
                &spec,
                &key,
                &dir.join("admin.crt"),
                std::time::Duration::from_secs(30 * 24 * 3600),
            )
            .unwrap();
        std::fs::write(dir.join("admin.crt"), &short).unwrap();
        let report = run(&config(
            dir,
            &["--apiserver-cert-extra-sans=pi.example.com"],
        ))
        .unwrap();
        let changed: Vec<(&str, &Outcome)> = report
            .entries
            .iter()
            .filter(|e| e.outcome != Outcome::Unchanged)
            .map(|e| (e.what.as_str(), &e.outcome))
            .collect();
        assert_eq!(changed.len(), 2, "{changed:?}");
        assert_eq!(
            changed[0],
            ("admin", &Outcome::Renewed("expires within 90 days".into()))
        );
        assert_eq!(changed[1].0, "admin.conf");
        assert_eq!(
            std::fs::read_to_string(dir.join("admin.key")).unwrap(),
            key_pem
        );
        with_cert(&dir.join("admin.crt"), |c| {
            assert!(
                c.validity().not_after.timestamp()
                    - time::OffsetDateTime::now_utc().unix_timestamp()
                    > 300 * 24 * 3600
            );
        });

        // A certificate from another CA (of the same name: only its key differs) is replaced.
        let other = tempfile::tempdir().unwrap();
        run(&config(other.path(), &[])).unwrap();
        std::fs::copy(
            other.path().join("scheduler.crt"),
            dir.join("scheduler.crt"),
        )
        .unwrap();
        std::fs::copy(
            other.path().join("scheduler.key"),
            dir.join("scheduler.key"),
        )
        .unwrap();
        let report = run(&config(
            dir,
            &["--apiserver-cert-extra-sans=pi.example.com"],
        ))
        .unwrap();
        let e = report
            .entries
            .iter()
            .find(|e| e.what == "scheduler")
            .unwrap();
        assert_eq!(
            e.outcome,
            Outcome::Renewed("not signed by the CA's key".into())
        );
    }

    #[test]
    fn a_new_control_plane_renews_etcds_serving_and_peer_certificates() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        run(&config(dir, &[])).unwrap();
        let first = snapshot(dir);
        let report = run(&config(dir, &["--control-plane=pi-master-2,192.168.1.20"])).unwrap();
        let changed: Vec<&str> = report
            .entries
            .iter()
            .filter(|e| e.outcome != Outcome::Unchanged)
            .map(|e| e.what.as_str())
            .collect();
        assert_eq!(changed, ["apiserver", "etcd/server", "etcd/peer"]);
        let second = snapshot(dir);
        for name in ["server", "peer"] {
            let key = dir.join(format!("etcd/{name}.key"));
            assert_eq!(second[&key], first[&key], "{name}: the key is kept");
            with_cert(&dir.join(format!("etcd/{name}.crt")), |c| {
                let s = sans(c);
                assert!(s.contains(&"pi-master-2".to_string()), "{s:?}");
                assert!(s.contains(&"192.168.1.20".to_string()), "{s:?}");
            });
        }
        // A lost etcd CA key cannot sign again, as for the cluster CA.
        std::fs::remove_file(dir.join("etcd/ca.key")).unwrap();
        let err = run(&config(dir, &[])).unwrap_err();
        assert!(matches!(err, pki::Error::CaKeyMissing { .. }), "{err}");
    }

    #[test]
    fn external_ca_without_key_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        run(&config(tmp.path(), &[])).unwrap();
        std::fs::remove_file(tmp.path().join("ca.key")).unwrap();
        let err = run(&config(tmp.path(), &[])).unwrap_err();
        assert!(matches!(err, pki::Error::CaKeyMissing { .. }), "{err}");
    }
}
