//! A private network per test: a bridge in the root namespace on its own /24, and
//! network namespaces plugged into it with a veth each (a "node", clients, backends).
//! Processes started in a namespace and every namespace, veth and the bridge are
//! removed on drop, also when the test fails.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
}

fn must(args: &[&str]) {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Net {
    /// Short unique id used in every interface and namespace name.
    id: String,
    /// The first three octets of this network's /24.
    prefix: [u8; 3],
    bridge: String,
    namespaces: Vec<String>,
    children: Vec<(String, Child)>,
    pub dir: tempfile::TempDir,
}

impl Net {
    pub fn new() -> Net {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let id = format!("{}x{n}", pid % 10000);
        let third = u8::try_from((pid as usize + n as usize * 37) % 250 + 1).unwrap();
        let net = Net {
            bridge: format!("kb{id}"),
            id,
            prefix: [10, 213, third],
            namespaces: Vec::new(),
            children: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        must(&["ip", "link", "add", &net.bridge, "type", "bridge"]);
        let gw = format!("{}/24", net.ip(1));
        must(&["ip", "addr", "add", &gw, "dev", &net.bridge]);
        must(&["ip", "link", "set", &net.bridge, "up"]);
        net
    }

    /// `fd00:213:<third octet>::host`, this network's IPv6 address for `host` once
    /// [`Net::add_ipv6`] ran.
    pub fn ip6(&self, host: u8) -> std::net::Ipv6Addr {
        std::net::Ipv6Addr::new(
            0xfd00,
            0x213,
            u16::from(self.prefix[2]),
            0,
            0,
            0,
            0,
            u16::from(host),
        )
    }

    /// Adds IPv6 to the bridge and to namespace `ns` (host number `host`), with a
    /// default route via the bridge and forwarding on.
    pub fn add_ipv6(&mut self, ns: &str, host: u8) {
        let gw = self.ip6(1).to_string();
        let gw_cidr = format!("{gw}/64");
        let _ = run(&[
            "ip",
            "-6",
            "addr",
            "add",
            &gw_cidr,
            "dev",
            &self.bridge,
            "nodad",
        ]);
        let addr = format!("{}/64", self.ip6(host));
        for args in [
            vec![
                "ip", "-n", ns, "-6", "addr", "add", &addr, "dev", "eth0", "nodad",
            ],
            vec!["ip", "-n", ns, "-6", "route", "add", "default", "via", &gw],
            vec![
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.forwarding=1",
            ],
        ] {
            must(&args);
        }
    }

    /// `prefix.host` on this network.
    pub fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.prefix[0], self.prefix[1], self.prefix[2], host)
    }

    /// The root namespace's address on the bridge (where the apiserver listens).
    pub fn gateway(&self) -> Ipv4Addr {
        self.ip(1)
    }

    /// A namespace named after `role`, with `eth0` at `.host` and a default route via
    /// the bridge; returns its name.
    pub fn add_namespace(&mut self, role: &str, host: u8) -> String {
        let ns = format!("kp-{}-{role}", self.id);
        must(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        let veth = format!("kv{}h{host}", self.id);
        must(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        must(&["ip", "link", "set", &veth, "master", &self.bridge, "up"]);
        let addr = format!("{}/24", self.ip(host));
        let gw = self.gateway().to_string();
        for args in [
            vec!["ip", "addr", "add", &addr, "dev", "eth0"],
            vec!["ip", "link", "set", "eth0", "up"],
            vec!["ip", "link", "set", "lo", "up"],
            vec!["ip", "route", "add", "default", "via", &gw],
            vec!["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
        ] {
            let mut full = vec!["ip", "netns", "exec", &ns];
            full.extend(args);
            must(&full);
        }
        ns
    }

    /// `args` in namespace `ns`, as `nsenter --net` (host mounts stay as they are).
    pub fn command(&self, ns: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{ns}")).args(args);
        cmd
    }

    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        self.command(ns, args)
            .output()
            .unwrap_or_else(|e| panic!("nsenter {ns} {args:?}: {e}"))
    }

    /// Starts a long-running process in `ns`, its output in `<dir>/<name>.log`; it is
    /// killed on drop.
    pub fn spawn(&mut self, name: &str, ns: &str, args: &[&str]) -> PathBuf {
        self.spawn_with_env(name, ns, args, &[])
    }

    /// Like [`Net::spawn`], with extra environment variables.
    pub fn spawn_with_env(
        &mut self,
        name: &str,
        ns: &str,
        args: &[&str],
        env: &[(&str, String)],
    ) -> PathBuf {
        let log = self.dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = self
            .command(ns, args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.children.push((name.to_string(), child));
        log
    }

    /// The process id of a process started with [`Net::spawn`] (`nsenter` execs it);
    /// the benchmark reads its memory.
    #[allow(dead_code)]
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.children
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.id())
    }

    /// Stops a process started with [`Net::spawn`].
    pub fn kill(&mut self, name: &str) {
        if let Some(i) = self.children.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.children.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A `busybox httpd` in a new namespace at `.host:port` answering `name` at `/` and
    /// the client's address at `/cgi-bin/ip`; returns its namespace once it answers.
    pub fn backend(&mut self, name: &str, host: u8, port: u16) -> String {
        let ns = self.add_namespace(name, host);
        self.serve(name, &ns, self.ip(host), port, None);
        ns
    }

    /// A "pod" of node namespace `node`: a namespace behind its own veth pair, routed by
    /// the node as a CNI plugin would (a /30 per pod: the node side at `.4k+1`, the pod
    /// at `.4k+2` of 10.244.<this network's third octet>.0/24), serving as
    /// [`Net::backend`]. Returns the pod's namespace and address.
    pub fn pod(&mut self, node: &str, name: &str, k: u8, port: u16) -> (String, Ipv4Addr) {
        let ns = format!("kp-{}-{name}", self.id);
        must(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        let gw = Ipv4Addr::new(10, 244, self.prefix[2], 4 * k + 1);
        let ip = Ipv4Addr::new(10, 244, self.prefix[2], 4 * k + 2);
        let veth = format!("pv{}p{k}", self.id);
        let gw_cidr = format!("{gw}/30");
        let ip_cidr = format!("{ip}/30");
        let gw_s = gw.to_string();
        for args in [
            vec![
                "ip", "-n", node, "link", "add", &veth, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ],
            vec!["ip", "-n", node, "addr", "add", &gw_cidr, "dev", &veth],
            vec!["ip", "-n", node, "link", "set", &veth, "up"],
            vec!["ip", "-n", &ns, "addr", "add", &ip_cidr, "dev", "eth0"],
            vec!["ip", "-n", &ns, "link", "set", "eth0", "up"],
            vec!["ip", "-n", &ns, "link", "set", "lo", "up"],
            vec!["ip", "-n", &ns, "route", "add", "default", "via", &gw_s],
        ] {
            must(&args);
        }
        // The node reaches the pod; the check below runs from the node's namespace.
        self.serve(name, &ns, ip, port, Some(node));
        (ns, ip)
    }

    fn serve(&mut self, name: &str, ns: &str, ip: Ipv4Addr, port: u16, check_from: Option<&str>) {
        let root = self.dir.path().join(format!("www-{name}"));
        std::fs::create_dir_all(root.join("cgi-bin")).unwrap();
        std::fs::write(root.join("index.html"), name).unwrap();
        let script = root.join("cgi-bin/ip");
        std::fs::write(
            &script,
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n%s' \"$REMOTE_ADDR\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let listen = port.to_string();
        let root_str = root.to_str().unwrap().to_string();
        self.spawn(
            name,
            ns,
            &["busybox", "httpd", "-f", "-p", &listen, "-h", &root_str],
        );
        let url = format!("http://{ip}:{port}/");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answered = match check_from {
                None => {
                    let out = run(&["curl", "-s", "-m", "2", &url]);
                    out.status.success() && out.stdout == name.as_bytes()
                }
                Some(from) => self.get(from, &url).is_ok_and(|b| b == name),
            };
            if answered {
                return;
            }
            assert!(Instant::now() < deadline, "backend {name} never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One HTTP GET from namespace `ns`: the body, or curl's error.
    pub fn get(&self, ns: &str, url: &str) -> Result<String, String> {
        let out = self.exec(
            ns,
            &["curl", "-gsS", "--connect-timeout", "3", "-m", "5", url],
        );
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Net {
    /// The HTTP status of a GET from namespace `ns` (None: no answer).
    pub fn status(&self, ns: &str, url: &str) -> Option<u16> {
        let out = self.exec(
            ns,
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-m",
                "5",
                url,
            ],
        );
        String::from_utf8_lossy(&out.stdout)
            .parse()
            .ok()
            .filter(|c| *c != 0)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for (name, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                let log = self.dir.path().join(format!("{name}.log"));
                if let Ok(text) = std::fs::read_to_string(&log) {
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    eprintln!("--- last lines of {name}'s log ---");
                    for line in tail.into_iter().rev() {
                        eprintln!("{line}");
                    }
                }
            }
        }
        // Deleting a namespace deletes its veth (and so the bridge port) and its
        // nftables tables.
        for ns in &self.namespaces {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge]);
    }
}
