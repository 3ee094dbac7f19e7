//! The kube-apiserver binary under a systemd `Type=notify` unit: READY=1 once it is ready
//! (its built-in objects written to etcd), STOPPING=1 on SIGTERM, then a clean exit.
//! `NOTIFY_SOCKET` points at a datagram socket this test reads, as systemd's would be.

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use store::testing::EtcdServer;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next notification, within `deadline`.
fn next_message(socket: &UnixDatagram, deadline: Instant) -> String {
    let left = deadline.saturating_duration_since(Instant::now());
    socket
        .set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn notifies_systemd_when_ready_and_when_stopping() {
    let etcd = EtcdServer::start().expect("etcd starts");
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut apiserver = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_kube-apiserver"))
            .arg(format!("--etcd-servers={}", etcd.endpoint()))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={port}"))
            .arg(format!("--cert-dir={}", dir.path().join("certs").display()))
            .arg("--service-cluster-ip-range=10.96.0.0/24")
            .env("NOTIFY_SOCKET", &socket_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kube-apiserver starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    assert_eq!(next_message(&socket, deadline).trim(), "READY=1");
    // Ready means serving: /readyz answers.
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("the secure port is open");

    let pid = apiserver.0.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    assert_eq!(next_message(&socket, deadline).trim(), "STOPPING=1");
    let status = loop {
        if let Some(status) = apiserver.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "kube-apiserver did not exit");
        // Polling a child's exit has no blocking form with a deadline in std.
        std::thread::park_timeout(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
