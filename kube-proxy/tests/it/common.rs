//! A test cluster: a private network (a "node" namespace where the kube-proxy binary
//! runs, a client namespace, backend namespaces), a real etcd and an in-process
//! apiserver listening on the bridge address so the node namespace reaches it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

pub use apiserver::testing::{wait_until, TestApi};

use crate::net::Net;

pub const TIMEOUT: Duration = Duration::from_secs(30);
pub const NODE: &str = "node-a";
/// Host numbers on the test network.
pub const NODE_HOST: u8 = 2;
pub const CLIENT_HOST: u8 = 3;

pub struct Cluster {
    /// Declared first: the kube-proxy and backends stop before the apiserver does.
    pub net: Net,
    pub api: TestApi,
    pub client: Client,
    /// The node's namespace and address.
    pub node: String,
    pub node_ip: Ipv4Addr,
    /// A client namespace off the node, with the service range routed through the node.
    pub outside: String,
    /// The kube-proxy's log, once started.
    pub proxy_log: Option<std::path::PathBuf>,
}

/// A Service as created: its ClusterIP and (for NodePort Services) node port.
pub struct CreatedService {
    pub cluster_ip: Ipv4Addr,
    pub node_port: Option<u16>,
}

/// Runs blocking work (processes) without stalling the runtime's other tasks.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

impl Cluster {
    pub async fn start() -> Cluster {
        let mut net = Net::new();
        let node = net.add_namespace("node", NODE_HOST);
        let outside = net.add_namespace("client", CLIENT_HOST);
        let node_ip = net.ip(NODE_HOST);
        let via = node_ip.to_string();
        let out = net.exec(
            &outside,
            &["ip", "route", "add", "10.96.0.0/24", "via", &via],
        );
        assert!(out.status.success(), "{out:?}");
        let gateway = net.gateway();
        let api = TestApi::start_with(|c| c.bind_address = IpAddr::V4(gateway)).await;
        let client = api.client().await;
        Cluster {
            net,
            api,
            client,
            node,
            node_ip,
            outside,
            proxy_log: None,
        }
    }

    /// Starts the kube-proxy binary in the node namespace.
    pub fn start_proxy(&mut self, extra: &[&str]) {
        self.start_proxy_with_env(extra, &[]);
    }

    /// Like [`Cluster::start_proxy`], with extra environment variables.
    pub fn start_proxy_with_env(&mut self, extra: &[&str], env: &[(&str, String)]) {
        let kubeconfig = self.api.kubeconfig_path().to_str().unwrap().to_string();
        let mut args = vec![
            env!("CARGO_BIN_EXE_kube-proxy"),
            "--kubeconfig",
            &kubeconfig,
            "--hostname-override",
            NODE,
            "--cluster-cidr=10.244.0.0/16",
        ];
        args.extend_from_slice(extra);
        let node = self.node.clone();
        self.proxy_log = Some(self.net.spawn_with_env("kube-proxy", &node, &args, env));
    }

    /// The kube-proxy's log so far.
    pub fn proxy_log(&self) -> String {
        std::fs::read_to_string(self.proxy_log.as_ref().expect("kube-proxy started"))
            .unwrap_or_default()
    }

    /// `nft list table ip kube-proxy` in the node namespace (None: no such table).
    pub fn table(&self) -> Option<String> {
        let out = self
            .net
            .exec(&self.node, &["nft", "list", "table", "ip", "kube-proxy"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `nft list table ip6 kube-proxy` in the node namespace (None: no such table).
    pub fn table6(&self) -> Option<String> {
        let out = self
            .net
            .exec(&self.node, &["nft", "list", "table", "ip6", "kube-proxy"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates Service `name` (type `svc_type`) with port 80 named `http` → 8080.
    pub async fn create_service(&self, name: &str, svc_type: &str) -> CreatedService {
        self.create_service_with(name, json!({"type": svc_type}))
            .await
    }

    /// Like [`Cluster::create_service`], with `spec` merged into the Service's spec.
    pub async fn create_service_with(&self, name: &str, spec: serde_json::Value) -> CreatedService {
        let api: Api<Service> = Api::namespaced(self.client.clone(), "default");
        let mut svc = json!({
            "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        });
        for (k, v) in spec.as_object().unwrap() {
            svc["spec"][k] = v.clone();
        }
        let svc: Service = serde_json::from_value(svc).unwrap();
        let svc = api.create(&PostParams::default(), &svc).await.unwrap();
        let spec = svc.spec.unwrap();
        CreatedService {
            cluster_ip: spec.cluster_ip.unwrap().parse().unwrap(),
            node_port: spec.ports.unwrap()[0]
                .node_port
                .map(|p| u16::try_from(p).unwrap()),
        }
    }

    /// Changes Service `name` with a JSON merge patch.
    pub async fn patch_service(&self, name: &str, patch: serde_json::Value) {
        let api: Api<Service> = Api::namespaced(self.client.clone(), "default");
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }

    /// Makes `hosts` (backends on the test network, ready, on another node) the
    /// endpoints of Service `name`.
    pub async fn set_endpoints(&self, name: &str, hosts: &[u8]) {
        let endpoints: Vec<(Ipv4Addr, &str)> =
            hosts.iter().map(|h| (self.net.ip(*h), "node-b")).collect();
        self.set_endpoints_on(name, &endpoints).await;
    }

    /// Makes `endpoints` (address, node name; ready) the endpoints of Service `name`
    /// with one EndpointSlice, as the EndpointSlice controller would.
    pub async fn set_endpoints_on(&self, name: &str, endpoints: &[(Ipv4Addr, &str)]) {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), "default");
        let endpoints: Vec<_> = endpoints
            .iter()
            .map(|(ip, node)| {
                json!({"addresses": [ip.to_string()], "conditions": {"ready": true},
                       "nodeName": node})
            })
            .collect();
        let mut slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-1"), "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints,
        });
        let slice_name = format!("{name}-1");
        match api.get_opt(&slice_name).await.unwrap() {
            Some(existing) => {
                slice["metadata"]["resourceVersion"] = json!(existing.metadata.resource_version);
                let slice: EndpointSlice = serde_json::from_value(slice).unwrap();
                api.replace(&slice_name, &PostParams::default(), &slice)
                    .await
                    .unwrap();
            }
            None => {
                let slice: EndpointSlice = serde_json::from_value(slice).unwrap();
                api.create(&PostParams::default(), &slice).await.unwrap();
            }
        }
    }

    pub async fn delete_endpoints(&self, name: &str) {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), "default");
        api.delete(&format!("{name}-1"), &DeleteParams::default())
            .await
            .unwrap();
    }

    /// How many times each backend answered `n` GETs of `url` from namespace `ns`.
    pub fn count_backends(&self, ns: &str, url: &str, n: usize) -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            let body = self
                .net
                .get(ns, url)
                .unwrap_or_else(|e| panic!("GET {url} from {ns}: {e}"));
            *seen.entry(body).or_insert(0) += 1;
        }
        seen
    }

    /// Waits until a GET of `url` from `ns` succeeds.
    pub async fn wait_reachable(&self, ns: &str, url: &str) {
        wait_until(TIMEOUT, &format!("{url} reachable from {ns}"), || async {
            blocking(|| self.net.get(ns, url).ok())
        })
        .await;
    }
}
