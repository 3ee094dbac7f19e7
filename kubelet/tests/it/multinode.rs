//! Two "Pi" nodes on one link, as in a small cluster: each node is a network namespace
//! with a veth on a bridge in the host namespace, its own containerd and its own kubelet
//! process (the real binary, under `nsenter --net=`), against one apiserver listening on
//! the bridge. A pod on node A reaches a pod on node B by pod IP through the kubelets'
//! host-gw routes and B sees A's pod IP as the source (no NAT); traffic to a host
//! outside the cluster leaves masqueraded as node A; node B's route on node A follows B's
//! address and goes with B's Node object.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kubelet::cri::RuntimeService;

use crate::common::{phase, wait_until, TestApi, TestContainerd, BUSYBOX_IMAGE, TIMEOUT};

/// Runs a command that must succeed; its stdout.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a cleanup command; failures are ignored.
fn run_quietly(program: &str, args: &[&str]) {
    let _ = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The link between the nodes: a bridge in the host namespace with a /24 of its own (one
/// per test process, 172.29.N.0/24), and a network namespace per host, each with a veth
/// on the bridge (hairpin on). Dropping it deletes the namespaces (and so their veths)
/// and the bridge.
struct Lab {
    bridge: String,
    /// N in 172.29.N.0/24.
    subnet: u8,
    namespaces: Vec<String>,
}

impl Lab {
    fn new() -> Lab {
        let pid = std::process::id();
        // Test processes running at once pick their subnets one at a time (the lock goes
        // when this returns, the bridge holding its address).
        let lock =
            std::fs::File::create(std::env::temp_dir().join("pikube-multinode-lab.lock")).unwrap();
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
        let used = run("ip", &["-4", "-o", "addr"]) + &run("ip", &["-4", "route"]);
        let first = pid % 200;
        let subnet = (0..200)
            .map(|i| u8::try_from((first + i) % 200 + 20).unwrap())
            .find(|n| !used.contains(&format!("172.29.{n}.")))
            .expect("a free 172.29.N.0/24");
        let lab = Lab {
            bridge: format!("hgw{pid}"),
            subnet,
            namespaces: Vec::new(),
        };
        run("ip", &["link", "add", &lab.bridge, "type", "bridge"]);
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", lab.ip(1)),
                "dev",
                &lab.bridge,
            ],
        );
        run("ip", &["link", "set", &lab.bridge, "up"]);
        lab
    }

    fn ip(&self, host: u8) -> IpAddr {
        IpAddr::from([172, 29, self.subnet, host])
    }

    /// A namespace `name` whose eth0 has 172.29.N.`host`/24 on the bridge. No default
    /// route: nothing from a node can leave the machine.
    fn add_host(&mut self, name: &str, host: u8) {
        let veth = format!("{}{}", self.bridge, self.namespaces.len());
        run("ip", &["netns", "add", name]);
        self.namespaces.push(name.to_owned());
        run(
            "ip",
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", name,
            ],
        );
        run("ip", &["link", "set", &veth, "master", &self.bridge]);
        run("ip", &["link", "set", &veth, "up"]);
        run("bridge", &["link", "set", "dev", &veth, "hairpin", "on"]);
        let addr = format!("{}/24", self.ip(host));
        run("ip", &["-n", name, "addr", "add", &addr, "dev", "eth0"]);
        run("ip", &["-n", name, "link", "set", "eth0", "up"]);
        run("ip", &["-n", name, "link", "set", "lo", "up"]);
    }
}

fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            run_quietly("ip", &["netns", "del", ns]);
        }
        run_quietly("ip", &["link", "del", &self.bridge]);
    }
}

/// A child process, stopped on drop (SIGTERM, SIGKILL after 10 s); its output goes to
/// `log`, printed if the test fails.
struct Process {
    what: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(what: &str, netns: &str, program: &str, args: &[&str], log: PathBuf) -> Process {
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns_path(netns).display()))
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        Process {
            what: what.to_owned(),
            child,
            log,
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(i32::try_from(self.child.id()).unwrap()) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- last lines of {}:", self.what);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// One node: name, namespace, address, pod CIDR, containerd; the kubelet process apart so
/// a test can stop it.
struct PiNode {
    name: String,
    ip: IpAddr,
    pod_cidr: String,
    containerd: TestContainerd,
}

impl PiNode {
    async fn start(lab: &mut Lab, name: &str, host: u8, pod_cidr: &str) -> PiNode {
        lab.add_host(name, host);
        let containerd = TestContainerd::start_in_netns(&netns_path(name))
            .await
            .unwrap_or_else(|e| panic!("containerd of {name}: {e}"));
        PiNode {
            name: name.to_owned(),
            ip: lab.ip(host),
            pod_cidr: pod_cidr.to_owned(),
            containerd,
        }
    }

    /// The kubelet binary in the node's namespace, with its files under `dir`.
    fn start_kubelet(&self, api: &TestApi, dir: &Path) -> Process {
        let dir = dir.join(&self.name);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("kubelet.yaml");
        std::fs::write(
            &config,
            format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
                 podLogsDir: {}\nnodeLeaseDurationSeconds: 10\n",
                dir.join("pods").display()
            ),
        )
        .unwrap();
        let args = [
            "--kubeconfig".to_owned(),
            api.kubeconfig_path().display().to_string(),
            "--config".to_owned(),
            config.display().to_string(),
            "--hostname-override".to_owned(),
            self.name.clone(),
            "--node-ip".to_owned(),
            self.ip.to_string(),
            "--container-runtime-endpoint".to_owned(),
            self.containerd.endpoint(),
            "--root-dir".to_owned(),
            dir.join("root").display().to_string(),
            "--cni-conf-dir".to_owned(),
            self.containerd.cni_conf_dir().display().to_string(),
            "--node-status-update-frequency".to_owned(),
            "1s".to_owned(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Process::spawn(
            &format!("kubelet {}", self.name),
            &self.name,
            env!("CARGO_BIN_EXE_kubelet"),
            &args,
            dir.join("kubelet.log"),
        )
    }

    /// `ip route` lines of the kubelet's routes in this node's namespace.
    fn kubelet_routes(&self) -> String {
        let proto = kubelet::network::routes::ROUTE_PROTOCOL.to_string();
        run(
            "ip",
            &["-n", &self.name, "-4", "route", "show", "proto", &proto],
        )
    }

    /// The kubelet's nftables table in this node's namespace.
    fn masquerade_table(&self) -> String {
        run(
            "nsenter",
            &[
                &format!("--net={}", netns_path(&self.name).display()),
                "nft",
                "list",
                "table",
                "inet",
                kubelet::network::masquerade::TABLE,
            ],
        )
    }

    /// Runs `sh -c script` in container `id`: exit code and stdout.
    async fn exec(&self, id: &str, script: &str) -> (i32, String) {
        let out = self
            .containerd
            .runtime()
            .exec_sync(
                id,
                vec!["sh".into(), "-c".into(), script.into()],
                Duration::from_secs(15),
            )
            .await
            .unwrap();
        (
            out.exit_code,
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Creates a busybox pod on `node` running `command`; waits until it runs and returns its
/// pod IP and container ID.
async fn run_pod(
    client: &kube::Client,
    name: &str,
    node: &str,
    command: &[&str],
) -> (String, String) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": BUSYBOX_IMAGE, "command": command}]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_until(TIMEOUT, &format!("pod {name} running"), || {
        let pods = pods.clone();
        async move {
            let pod = pods.get_opt(name).await.ok().flatten()?;
            if phase(&pod) != "Running" {
                return None;
            }
            let status = pod.status.as_ref()?;
            let ip = status.pod_ip.clone()?;
            let id = status
                .container_statuses
                .as_ref()?
                .first()?
                .container_id
                .clone()?;
            Some((ip, id.trim_start_matches("containerd://").to_owned()))
        }
    })
    .await
}

/// Waits until `check` holds (it runs synchronous commands such as `ip route`).
async fn wait_for(what: &str, check: impl Fn() -> bool) {
    wait_until(TIMEOUT, what, || {
        let ok = check();
        async move { ok.then_some(()) }
    })
    .await;
}

/// The `netstat -tn` line of a connection to `local` (ip:port), from nc's output. Its
/// state is ESTABLISHED or, once the client's FIN (stdin is empty) has arrived before
/// netstat ran, CLOSE_WAIT: `-tn` lists no listening sockets, so any line will do.
fn connection_to<'a>(netstat: &'a str, local: &str) -> Option<&'a str> {
    netstat
        .lines()
        .find(|l| l.starts_with("tcp") && l.contains(local))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_two_nodes_talk_by_pod_ip_over_host_gw_routes() {
    let pid = std::process::id();
    // Declared in this order so they drop in reverse: processes, then containerds (which
    // remove their pods), then the apiserver, then namespaces and bridge.
    let mut lab = Lab::new();
    let gateway = lab.ip(1);
    let api = TestApi::start_with(|c| c.bind_address = gateway).await;
    let client = api.client().await;
    let dir = tempfile::Builder::new()
        .prefix("pikube-multinode-")
        .tempdir()
        .unwrap();
    let a = PiNode::start(&mut lab, &format!("hgw-{pid}-a"), 2, "10.77.1.0/24").await;
    let b = PiNode::start(&mut lab, &format!("hgw-{pid}-b"), 3, "10.77.2.0/24").await;
    // Left from before on node A: a route of a kubelet that ran there earlier, which is
    // stale, and a user's route, which is not the kubelet's to touch.
    let proto = kubelet::network::routes::ROUTE_PROTOCOL.to_string();
    let stale_via = lab.ip(6).to_string();
    let user_via = lab.ip(7).to_string();
    run(
        "ip",
        &[
            "-n",
            &a.name,
            "route",
            "add",
            "10.77.9.0/24",
            "via",
            &stale_via,
            "proto",
            &proto,
        ],
    );
    run(
        "ip",
        &[
            "-n",
            &a.name,
            "route",
            "add",
            "10.88.0.0/24",
            "via",
            &user_via,
        ],
    );
    // A host outside the cluster on the same link.
    let outside = format!("hgw-{pid}-x");
    lab.add_host(&outside, 9);
    let outside_ip = lab.ip(9);
    let _outside_server = Process::spawn(
        "outside server",
        &outside,
        "busybox",
        &["nc", "-ll", "-p", "9000", "-e", "busybox", "netstat", "-tn"],
        dir.path().join("outside.log"),
    );
    let _kubelet_a = a.start_kubelet(&api, dir.path());
    let kubelet_b = b.start_kubelet(&api, dir.path());

    // The node IPAM controller's part: each Node gets its podCIDR once registered.
    let nodes: Api<Node> = Api::all(client.clone());
    for node in [&a, &b] {
        let name = node.name.clone();
        wait_until(TIMEOUT, &format!("node {name} registered"), || {
            let nodes = nodes.clone();
            let name = name.clone();
            async move { nodes.get_opt(&name).await.ok().flatten() }
        })
        .await;
        let patch =
            serde_json::json!({"spec": {"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr]}});
        nodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
    for node in [&a, &b] {
        let name = node.name.clone();
        wait_until(TIMEOUT, &format!("node {name} Ready"), || {
            let nodes = nodes.clone();
            let name = name.clone();
            async move { nodes.get_opt(&name).await.ok().flatten().filter(node_ready) }
        })
        .await;
    }

    // Each node routes the other's pod CIDR via the other's node IP.
    let route_to_b = format!("10.77.2.0/24 via {} dev eth0", b.ip);
    wait_for("node A's route to node B's pods", || {
        a.kubelet_routes().contains(&route_to_b)
    })
    .await;
    let route_to_a = format!("10.77.1.0/24 via {} dev eth0", a.ip);
    wait_for("node B's route to node A's pods", || {
        b.kubelet_routes().contains(&route_to_a)
    })
    .await;
    // Only the peer's CIDR: no route to a node's own pods, the stale route gone.
    assert_eq!(
        a.kubelet_routes().lines().count(),
        1,
        "{}",
        a.kubelet_routes()
    );
    let table = a.masquerade_table();
    assert!(
        table.contains("ip saddr 10.77.1.0/24 ip daddr != @cluster-pod-cidrs-v4 masquerade"),
        "{table}"
    );
    assert!(table.contains("10.77.2.0/24"), "{table}");

    // Pod A → pod B by pod IP; B's netstat (run by nc for the connection) shows A's pod IP.
    let (ip_b, _) = run_pod(
        &client,
        "server",
        &b.name,
        &["nc", "-ll", "-p", "8080", "-e", "netstat", "-tn"],
    )
    .await;
    let (ip_a, id_a) = run_pod(&client, "client", &a.name, &["sleep", "3600"]).await;
    assert!(ip_a.starts_with("10.77.1."), "{ip_a}");
    assert!(ip_b.starts_with("10.77.2."), "{ip_b}");
    let seen_by_b = wait_until(TIMEOUT, "pod A's connection to pod B", || {
        let a = &a;
        let ip_b = ip_b.clone();
        let id_a = id_a.clone();
        async move {
            let (code, out) = a
                .exec(&id_a, &format!("nc -w 3 {ip_b} 8080 </dev/null"))
                .await;
            if code != 0 {
                return None;
            }
            connection_to(&out, &format!("{ip_b}:8080")).map(str::to_owned)
        }
    })
    .await;
    assert!(
        seen_by_b.contains(&format!("{ip_a}:")),
        "pod B should see pod A's IP {ip_a} as the source: {seen_by_b}"
    );

    // Pod A → a host outside the cluster: masqueraded as node A.
    let seen_outside = wait_until(TIMEOUT, "pod A's connection to the outside host", || {
        let a = &a;
        let id_a = id_a.clone();
        async move {
            let (code, out) = a
                .exec(&id_a, &format!("nc -w 3 {outside_ip} 9000 </dev/null"))
                .await;
            if code != 0 {
                return None;
            }
            connection_to(&out, &format!("{outside_ip}:9000")).map(str::to_owned)
        }
    })
    .await;
    assert!(
        seen_outside.contains(&format!("{}:", a.ip)) && !seen_outside.contains(&ip_a),
        "the outside host should see node A's IP {}, not the pod's: {seen_outside}",
        a.ip
    );

    // Node B's address changes (its kubelet stopped first, so it does not write it back):
    // node A's route follows; an address off the link gets no route.
    drop(kubelet_b);
    let set_ip = |ip: String| {
        let nodes = nodes.clone();
        let name = b.name.clone();
        async move {
            let patch = serde_json::json!({"status": {"addresses": [
                {"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}
            ]}});
            nodes
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    };
    set_ip(lab.ip(4).to_string()).await;
    let moved = format!("10.77.2.0/24 via {} dev eth0", lab.ip(4));
    wait_for("node A's route replaced", || {
        a.kubelet_routes().contains(&moved)
    })
    .await;
    set_ip("10.99.0.4".into()).await;
    wait_for("no route via an address off the link", || {
        a.kubelet_routes().trim().is_empty()
    })
    .await;
    set_ip(b.ip.to_string()).await;
    wait_for("node A's route back", || {
        a.kubelet_routes().contains(&route_to_b)
    })
    .await;

    // Node B's Node object is deleted: the route and B's CIDR in the table go.
    nodes
        .delete(&b.name, &DeleteParams::default())
        .await
        .unwrap();
    wait_for("node A's route to node B removed", || {
        a.kubelet_routes().trim().is_empty()
    })
    .await;
    wait_for("node B's CIDR out of node A's masquerade set", || {
        !a.masquerade_table().contains("10.77.2.0/24")
    })
    .await;
    // The user's route was never touched.
    let user_route = run("ip", &["-n", &a.name, "route", "show", "10.88.0.0/24"]);
    assert!(
        user_route.contains(&format!("via {user_via}")),
        "{user_route}"
    );
    // A node alone: no route, its masquerade rule stays.
    assert!(
        a.masquerade_table().contains("ip saddr 10.77.1.0/24"),
        "{}",
        a.masquerade_table()
    );
}
