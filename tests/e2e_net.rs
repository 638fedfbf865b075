//! End to end: boxes on the network through passt. Debian's nginx (in the image
//! scripts/build-test-image makes of Debian's packages) answers on a published
//! port; a box reaches a server of the host's through the gateway; UDP is
//! published; `--network none` has only `lo`. Ignored in a plain `cargo test`;
//! `scripts/test` runs it inside `scripts/kvm-harness`.

mod common;
mod common_debian;
mod common_registry;

use std::net::UdpSocket;
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common_debian::{Loaded, IMAGE};
use common_registry::{stderr, stdout};

fn env() -> &'static Loaded {
    static ENV: OnceLock<Loaded> = OnceLock::new();
    ENV.get_or_init(|| Loaded::new("e2e-net-home"))
}

fn a3s(args: &[&str]) -> Output {
    env().a3s(args)
}

fn ok(args: &[&str]) -> String {
    env().ok(args)
}

fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    common_debian::http_get(&format!("127.0.0.1:{port}"), path)
}

fn page_on(port: u16, path: &str) -> String {
    env().page_on(&format!("127.0.0.1:{port}"), path)
}

/// The pids of passt processes serving boxes of this test's state directory:
/// those whose parent, a box's shim, runs with it as `A3S_BOX_HOME`.
fn passts() -> Vec<u32> {
    let home = format!("A3S_BOX_HOME={}", env().home.path().display());
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        let is_passt = field("Name:").is_some_and(|n| n.starts_with("passt"));
        let zombie = field("State:").is_some_and(|s| s.starts_with('Z'));
        let Some(ppid) = field("PPid:") else { continue };
        if !is_passt || zombie {
            continue;
        }
        let parent_env = std::fs::read(format!("/proc/{ppid}/environ")).unwrap_or_default();
        if parent_env
            .split(|b| *b == 0)
            .any(|kv| kv == home.as_bytes())
        {
            pids.push(pid);
        }
    }
    pids
}

/// Waits until no passt of this test's boxes is left.
fn no_passt_left() {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !passts().is_empty() {
        assert!(
            Instant::now() < deadline,
            "passt processes left behind: {:?}",
            passts()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn nginx_answers_on_a_published_port_and_rm_frees_it() {
    let id = ok(&["run", "-d", "--name", "web", "-p", "18080:80", IMAGE]);
    let page = page_on(18080, "/");
    assert!(page.contains("Welcome to nginx"), "{page}");
    assert_eq!(
        ok(&["ps", "--filter", "name=web", "--format", "{{.Ports}}"]),
        "0.0.0.0:18080->80/tcp\n"
    );
    assert_eq!(
        ok(&[
            "inspect",
            "--format",
            "{{.NetworkSettings.IPAddress}} {{.NetworkSettings.Gateway}} {{json .NetworkSettings.Ports}}",
            "web"
        ]),
        "10.0.2.100 10.0.2.2 {\"80/tcp\":[{\"HostIp\":\"0.0.0.0\",\"HostPort\":\"18080\"}]}\n"
    );
    // The box knows itself by its name, as Docker writes /etc/hosts.
    let hosts = ok(&["exec", "web", "cat", "/etc/hosts"]);
    assert!(
        hosts.contains(&format!("10.0.2.100\t{}\n", &id.trim()[..12])),
        "{hosts}"
    );
    assert!(
        !ok(&["diff", "web"]).contains("/etc/hosts"),
        "/etc/hosts is laid over the root, not written to the layer"
    );

    // The port is taken while the box runs: a second box is refused, and
    // nothing of it is left.
    let before = ok(&["ps", "-aq"]);
    let taken = a3s(&["run", "-d", "--name", "web2", "-p", "18080:80", IMAGE]);
    assert_eq!(taken.status.code(), Some(125));
    assert_eq!(
        stderr(&taken),
        "a3s-box: Bind for 0.0.0.0:18080 failed: port is already allocated\n"
    );
    assert_eq!(ok(&["ps", "-aq"]), before);
    assert_eq!(passts().len(), 1, "one passt for the one box");

    ok(&["rm", "-f", "web"]);
    no_passt_left();
    assert!(http_get(18080, "/").is_err(), "the port is still served");
    ok(&["run", "-d", "--name", "web2", "-p", "18080:80", IMAGE]);
    assert!(page_on(18080, "/").contains("Welcome to nginx"));
    ok(&["rm", "-f", "web2"]);
    no_passt_left();
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn a_box_reaches_the_hosts_server_through_the_gateway_by_name() {
    let out = env().curl_host_server(
        "127.0.0.1",
        "hostbox",
        &["--add-host", "hostbox:host-gateway"],
    );
    assert_eq!(stdout(&out), "from-the-host\n", "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(0));
    no_passt_left();
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn a_published_udp_port_carries_datagrams_both_ways() {
    let server = "import socket\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
s.bind(('0.0.0.0', 5300))\n\
while True:\n    d, a = s.recvfrom(100)\n    s.sendto(b'echo:' + d, a)\n";
    ok(&[
        "run",
        "-d",
        "--name",
        "udp",
        "-p",
        "15300:5300/udp",
        IMAGE,
        "python3",
        "-c",
        server,
    ]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut buf = [0u8; 100];
    let reply = loop {
        sock.send_to(b"ping", "127.0.0.1:15300").unwrap();
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            break buf[..n].to_vec();
        }
        assert!(Instant::now() < deadline, "no UDP reply from the box");
    };
    assert_eq!(reply, b"echo:ping");
    assert_eq!(
        ok(&["ps", "--filter", "name=udp", "--format", "{{.Ports}}"]),
        "0.0.0.0:15300->5300/udp\n"
    );
    ok(&["rm", "-f", "udp"]);
    no_passt_left();
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn a_box_without_a_network_has_only_loopback_and_it_is_up() {
    let out = ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "ls /sys/class/net; cat /sys/class/net/lo/flags",
    ]);
    // IFF_UP | IFF_LOOPBACK | IFF_RUNNING.
    assert_eq!(out, "lo\n0x9\n");
    let out = ok(&[
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "ls /sys/class/net; cat /sys/class/net/eth0/operstate /sys/class/net/eth0/mtu; \
         cat /etc/resolv.conf",
    ]);
    // passt's MTU: a 64 KiB segment in one frame.
    assert!(
        out.starts_with("eth0\nlo\nup\n65520\n") && out.contains("nameserver 10.0.2.3\n"),
        "{out}"
    );
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn bad_network_flags_are_refused_and_leave_nothing() {
    let before = ok(&["ps", "-aq"]);
    for (args, err) in [
        (
            vec!["--network", "nosuch"],
            "a3s-box: network nosuch not found\n",
        ),
        (
            vec!["--network", "none", "-p", "18081:80"],
            "a3s-box: conflicting options: port publishing and the container type network mode\n",
        ),
        (vec!["-p", "99999:80"], "a3s-box: invalid hostPort: 99999\n"),
        (
            vec!["--add-host", "nocolon"],
            "a3s-box: bad format for add-host: \"nocolon\"\n",
        ),
    ] {
        let mut full = vec!["run", "-d"];
        full.extend(args.iter().copied());
        full.extend([IMAGE, "true"]);
        let out = a3s(&full);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        assert_eq!(stderr(&out), err, "{args:?}");
    }
    assert_eq!(ok(&["ps", "-aq"]), before);
    assert!(passts().is_empty());
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn passt_failing_or_dying_is_told() {
    // A passt that cannot start: the start fails with its words, as Docker's
    // does when a box's network cannot be set up, and the box can be removed.
    std::env::set_var("A3S_BOX_PASST", "/bin/false");
    let out = a3s(&["run", "-d", "--name", "nopasst", IMAGE, "true"]);
    std::env::remove_var("A3S_BOX_PASST");
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("cannot set up the box's network: passt ended (exit status: 1)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert_eq!(
        ok(&["inspect", "--format", "{{.State.Status}}", "nopasst"]),
        "exited\n"
    );
    ok(&["rm", "nopasst"]);

    // passt ending under a running box is recorded for inspect.
    ok(&["run", "-d", "--name", "lost", IMAGE, "sleep", "600"]);
    let pids = passts();
    assert_eq!(pids.len(), 1, "{pids:?}");
    // SAFETY: kill takes plain integers.
    assert_eq!(unsafe { libc::kill(pids[0] as i32, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let error = ok(&["inspect", "--format", "{{.State.Error}}", "lost"]);
        if error.contains("the box's network ended: passt") {
            break;
        }
        assert!(Instant::now() < deadline, "inspect says {error:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    ok(&["rm", "-f", "lost"]);
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn publish_all_puts_the_exposed_port_where_the_host_picks_and_port_tells_where() {
    // The image EXPOSEs 80/tcp (scripts/build-test-image).
    ok(&["run", "-d", "--name", "pub", "-P", IMAGE]);
    let bound = ok(&["port", "pub", "80"]);
    assert!(bound.starts_with("0.0.0.0:"), "{bound}");
    let port: u16 = bound.trim().rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(ok(&["port", "pub"]), format!("80/tcp -> 0.0.0.0:{port}\n"));
    assert!(page_on(port, "/").contains("Welcome to nginx"));
    let out = a3s(&["port", "pub", "81"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "a3s-box: No public port '81/tcp' published for pub\n"
    );
    ok(&["rm", "-f", "pub"]);
    no_passt_left();
}
