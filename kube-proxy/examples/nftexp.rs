// scratch: not committed
use kube_proxy::endpoints::Endpoint;
use kube_proxy::nftables::{transaction, RuleBuilder};
use kube_proxy::service::{IpFamily, Protocol, ServicePort, ServicePortName};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

fn main() {
    let n: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let mut services = BTreeMap::new();
    let mut endpoints = BTreeMap::new();
    for i in 0..n {
        let name = ServicePortName {
            namespace: "default".into(),
            name: format!("svc-{i}").into(),
            port: "http".into(),
            protocol: Protocol::Tcp,
        };
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i as u32 + 10);
        services.insert(
            name.clone(),
            ServicePort {
                cluster_ip: Some(IpAddr::V4(ip)),
                port: 80,
                node_port: None,
                external_ips: vec![],
                load_balancer_ips: vec![],
                affinity_timeout_seconds: None,
                external_policy_local: false,
                internal_policy_local: false,
                health_check_node_port: None,
            },
        );
        let base = u32::from(Ipv4Addr::new(10, 100, 0, 0)) + i as u32 * 16;
        endpoints.insert(
            name,
            (0..10)
                .map(|k| Endpoint {
                    ip: IpAddr::V4(Ipv4Addr::from(base + k + 1)),
                    port: 8080,
                    ready: true,
                    serving: true,
                    terminating: false,
                    is_local: false,
                })
                .collect::<Vec<_>>(),
        );
    }
    let b = RuleBuilder::new(IpFamily::V4, &["10.244.0.0/16".parse().unwrap()], &[]);
    let t = Instant::now();
    let rules = b.build(&services, &endpoints);
    let built = t.elapsed();
    let text = transaction(&b, None, &rules);
    eprintln!(
        "build {:?} text {:?} bytes {}",
        built,
        t.elapsed() - built,
        text.len()
    );
    std::fs::write("/tmp/nftexp.nft", text).unwrap();
}
