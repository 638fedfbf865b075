//! End to end: bridge networks (root). Two boxes on a user network find each
//! other by name and alias, and lose each other on `disconnect`; the default
//! `bridge` network has no names; a port published on a bridge network
//! answers on the host and is taken off it with the box; addresses are
//! handed out once and reused when freed; nothing (bridge, tap, nftables
//! element) is left behind. Ignored in a plain `cargo test`; `scripts/test`
//! runs it inside `scripts/kvm-harness`, whose VM is root and has its own
//! network stack to change.

mod common;
mod common_debian;
mod common_registry;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common_debian::{Loaded, IMAGE};
use common_registry::{stderr, stdout};

fn env() -> &'static Loaded {
    static ENV: OnceLock<Loaded> = OnceLock::new();
    ENV.get_or_init(|| Loaded::new("e2e-bridge-home"))
}

fn a3s(args: &[&str]) -> Output {
    env().a3s(args)
}

fn ok(args: &[&str]) -> String {
    env().ok(args)
}

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(args)).unwrap()
}

/// The host's interfaces whose names start with `prefix`.
fn links(prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}

/// Waits until no box's tap is left (a box's VMM may take a moment to end
/// after `rm -f` returns; its tap goes with it).
fn no_tap_left() {
    let taps = || -> Vec<String> {
        links("a3s")
            .into_iter()
            .filter(|l| l != "a3s0" && !l.starts_with("a3sbr-"))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !taps().is_empty() {
        assert!(Instant::now() < deadline, "taps left behind: {:?}", taps());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The elements of the published-port maps, as nft lists them.
fn nft_ports() -> String {
    let out = Command::new("nft")
        .args(["list", "table", "ip", "a3s_box"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .filter(|l| l.contains(" : "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The box's address on `network`, from `inspect`.
fn ip_of(name: &str, network: &str) -> Ipv4Addr {
    let v = json(&["inspect", name]);
    v[0]["NetworkSettings"]["Networks"][network]["IPAMConfig"]["IPv4Address"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no address on {network}: {v}"))
        .parse()
        .unwrap()
}

fn http_get(addr: &str) -> std::io::Result<String> {
    common_debian::http_get(addr, "/")
}

fn page_on(addr: &str) -> String {
    env().page_on(addr, "/")
}

/// `curl` of `url` from a new box on `network`: (exit code, output).
fn curl_from(network: &str, url: &str) -> (Option<i32>, String) {
    let out = a3s(&[
        "run",
        "--rm",
        "--network",
        network,
        IMAGE,
        "curl",
        "-sS",
        "--max-time",
        "15",
        url,
    ]);
    (
        out.status.code(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

/// Waits until the box's nginx answers inside it (boxes start in parallel
/// with their server).
fn nginx_up(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while a3s(&[
        "exec",
        name,
        "curl",
        "-sf",
        "-o",
        "/dev/null",
        "http://127.0.0.1/",
    ])
    .status
    .code()
        != Some(0)
    {
        assert!(Instant::now() < deadline, "nginx in {name} never came up");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
#[ignore = "boots real boxes as root: run inside scripts/kvm-harness (scripts/test does)"]
fn boxes_on_a_user_network_find_each_other_by_name_and_alias_until_disconnected() {
    let id = ok(&["network", "create", "testnet"]);
    assert_eq!(id.trim().len(), 64, "{id}");
    let inspected = json(&["network", "inspect", "testnet"]);
    let bridge = inspected[0]["Options"]["com.docker.network.bridge.name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(links(&bridge), vec![bridge.clone()], "the bridge is there");
    let ls = ok(&["network", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&id[..12]) && l.contains("testnet") && l.contains("bridge")),
        "{ls}"
    );

    ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "testnet",
        "--network-alias",
        "site",
        IMAGE,
    ]);
    nginx_up("web");
    let ip = ip_of("web", "testnet");
    let subnet = inspected[0]["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .unwrap();
    assert!(subnet.starts_with(&ip.to_string()[..4]), "{ip} in {subnet}");
    assert_eq!(
        ok(&[
            "inspect",
            "--format",
            "{{.NetworkSettings.IPAddress}}",
            "web"
        ]),
        format!("{ip}\n")
    );
    let members = json(&["network", "inspect", "testnet"]);
    assert_eq!(
        members[0]["Containers"].as_object().unwrap().len(),
        1,
        "{members}"
    );

    for url in ["http://web/", "http://site/"] {
        let (code, out) = curl_from("testnet", url);
        assert_eq!(code, Some(0), "{url}: {out}");
        assert!(out.contains("Welcome to nginx"), "{url}: {out}");
    }
    // The default network has no names, as Docker's.
    let (code, out) = curl_from("bridge", "http://web/");
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("resolve"), "{out}");

    // Networks are isolated from each other: the host routes nothing
    // from one bridge to another.
    let (code, out) = curl_from("bridge", &format!("http://{ip}/"));
    assert_ne!(code, Some(0), "reached across networks: {out}");

    // A network with a running box on it stays.
    let out = a3s(&["network", "rm", "testnet"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("has active endpoints (web)"),
        "{}",
        stderr(&out)
    );

    ok(&["network", "disconnect", "testnet", "web"]);
    let (code, out) = curl_from("testnet", &format!("http://{ip}/"));
    assert_ne!(code, Some(0), "a disconnected box still answers: {out}");
    let (code, out) = curl_from("testnet", "http://web/");
    assert_ne!(
        code,
        Some(0),
        "a disconnected box still has its name: {out}"
    );
    let out = a3s(&["network", "disconnect", "testnet", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "a3s-box: box web is not connected to network testnet\n"
    );

    ok(&["rm", "-f", "web"]);
    no_tap_left();
    assert_eq!(ok(&["network", "rm", "testnet"]), "testnet\n");
    assert!(links(&bridge).is_empty(), "the bridge is left");
    let out = a3s(&["network", "inspect", "testnet"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "a3s-box: network testnet not found\n");
}

#[test]
#[ignore = "boots real boxes as root: run inside scripts/kvm-harness (scripts/test does)"]
fn a_port_published_on_the_bridge_answers_on_the_host_and_goes_with_the_box() {
    ok(&[
        "run",
        "-d",
        "--name",
        "pubweb",
        "--network",
        "bridge",
        "-p",
        "18090:80",
        IMAGE,
    ]);
    assert!(page_on("127.0.0.1:18090").contains("Welcome to nginx"));
    // Also on the host's other address (DNAT in prerouting and output alike).
    assert!(page_on("192.0.2.10:18090").contains("Welcome to nginx"));
    assert!(nft_ports().contains("18090"), "{}", nft_ports());
    assert_eq!(
        ok(&[
            "ps",
            "--filter",
            "name=pubweb",
            "--format",
            "{{.Ports}} {{.Networks}}"
        ]),
        "0.0.0.0:18090->80/tcp bridge\n"
    );
    // Held while the box runs.
    let out = a3s(&[
        "run",
        "-d",
        "--network",
        "bridge",
        "-p",
        "18090:80",
        IMAGE,
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        stderr(&out),
        "a3s-box: Bind for 0.0.0.0:18090 failed: port is already allocated\n"
    );

    // Boxes reach the published port through the host's address too: the
    // box itself, and another box on the network (hairpin NAT).
    let out = a3s(&[
        "exec",
        "pubweb",
        "curl",
        "-sS",
        "--max-time",
        "15",
        "http://192.0.2.10:18090/",
    ]);
    assert!(
        stdout(&out).contains("Welcome to nginx"),
        "{}",
        stderr(&out)
    );
    let (code, page) = curl_from("bridge", "http://192.0.2.10:18090/");
    assert_eq!(code, Some(0), "{page}");
    assert!(page.contains("Welcome to nginx"), "{page}");

    // The box reaches a server of the host's on its gateway.
    let out = env().curl_host_server(
        "0.0.0.0",
        "hostbox",
        &["--network", "bridge", "--add-host", "hostbox:host-gateway"],
    );
    assert_eq!(stdout(&out), "from-the-host\n", "{}", stderr(&out));

    // A box whose VMM is killed outright: the next look at it takes its
    // port off the host, and leaves the other box's alone.
    ok(&[
        "run",
        "-d",
        "--name",
        "pubgone",
        "--network",
        "bridge",
        "-p",
        "18091:80",
        IMAGE,
    ]);
    assert!(page_on("127.0.0.1:18091").contains("Welcome to nginx"));
    let pid: i32 = ok(&["inspect", "--format", "{{.State.Pid}}", "pubgone"])
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill takes plain integers.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let row = ok(&[
        "ps",
        "-a",
        "--filter",
        "name=pubgone",
        "--format",
        "{{.Status}}",
    ]);
    // The harness's PID 1 reaps late: the VMM may still be a zombie here.
    assert!(row.starts_with("Exited (255)"), "{row}");
    assert!(!nft_ports().contains("18091"), "{}", nft_ports());
    assert!(nft_ports().contains("18090"), "{}", nft_ports());
    assert!(
        TcpListener::bind("0.0.0.0:18091").is_ok(),
        "the port is still held"
    );
    ok(&["rm", "pubgone"]);

    ok(&["rm", "-f", "pubweb"]);
    no_tap_left();
    assert!(!nft_ports().contains("18090"), "{}", nft_ports());
    assert!(
        TcpListener::bind("0.0.0.0:18090").is_ok(),
        "the port is still held"
    );
    assert!(http_get("127.0.0.1:18090").is_err());
}

#[test]
#[ignore = "boots real boxes as root: run inside scripts/kvm-harness (scripts/test does)"]
fn addresses_are_handed_out_once_and_freed_ones_come_back() {
    ok(&["network", "create", "--subnet", "10.123.0.0/24", "ipam"]);
    let mut names = Vec::new();
    let mut ips = BTreeSet::new();
    for i in 0..20 {
        let name = format!("ipam{i}");
        ok(&[
            "create",
            "--name",
            &name,
            "--network",
            "ipam",
            IMAGE,
            "true",
        ]);
        ips.insert(ip_of(&name, "ipam"));
        names.push(name);
    }
    assert_eq!(ips.len(), 20, "{ips:?}");
    assert!(
        !ips.contains(&Ipv4Addr::new(10, 123, 0, 1)),
        "the gateway was handed out"
    );
    let freed = ip_of("ipam7", "ipam");
    ok(&["rm", "ipam7"]);
    ok(&[
        "create",
        "--name",
        "again",
        "--network",
        "ipam",
        IMAGE,
        "true",
    ]);
    assert_eq!(ip_of("again", "ipam"), freed);
    // Asked for: a taken one is refused, a free one given.
    let out = a3s(&[
        "create",
        "--network",
        "ipam",
        "--ip",
        &freed.to_string(),
        IMAGE,
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        stderr(&out),
        format!("a3s-box: Address already in use: {freed} on network ipam\n")
    );
    ok(&[
        "create",
        "--name",
        "chosen",
        "--network",
        "ipam",
        "--ip",
        "10.123.0.200",
        IMAGE,
        "true",
    ]);
    assert_eq!(ip_of("chosen", "ipam"), Ipv4Addr::new(10, 123, 0, 200));
    // connect: twice is refused; a stopped box joins.
    let out = a3s(&["network", "connect", "ipam", "chosen"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "a3s-box: endpoint with name chosen already exists in network ipam\n"
    );
    ok(&[
        "create",
        "--name",
        "loner",
        "--network",
        "none",
        IMAGE,
        "true",
    ]);
    ok(&[
        "network",
        "connect",
        "--ip",
        "10.123.0.201",
        "ipam",
        "loner",
    ]);
    assert_eq!(ip_of("loner", "ipam"), Ipv4Addr::new(10, 123, 0, 201));

    for n in names.iter().filter(|n| *n != "ipam7") {
        ok(&["rm", n]);
    }
    for n in ["again", "chosen", "loner"] {
        ok(&["rm", n]);
    }
    assert_eq!(ok(&["network", "prune", "-f"]), "Deleted Networks:\nipam\n");
}

#[test]
#[ignore = "boots real boxes as root: run inside scripts/kvm-harness (scripts/test does)"]
fn bad_network_input_is_refused_with_dockers_words_and_leaves_nothing() {
    ok(&["network", "create", "--subnet", "10.124.0.0/16", "taken"]);
    let bridges = links("a3s");
    for (args, err) in [
        (
            vec!["network", "create", "--subnet", "10.124.5.0/24", "over"],
            "a3s-box: Pool overlaps with other one on this address space: 10.124.5.0/24 overlaps network taken\n",
        ),
        (
            vec!["network", "create", "--subnet", "10.0.0.0/33", "bad"],
            "a3s-box: invalid subnet 10.0.0.0/33: invalid CIDR address\n",
        ),
        (
            vec!["network", "create", "taken"],
            "a3s-box: network with name taken already exists\n",
        ),
        (
            vec!["network", "rm", "bridge"],
            "a3s-box: bridge is a pre-defined network and cannot be removed\n",
        ),
        (vec!["network", "rm", "nosuch"], "a3s-box: network nosuch not found\n"),
    ] {
        let out = a3s(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr(&out), err, "{args:?}");
    }
    assert_eq!(links("a3s"), bridges, "a refused network left an interface");
    let before = ok(&["ps", "-aq"]);
    for (args, err) in [
        (
            vec!["--network", "taken", "--ip", "10.125.0.5"],
            "a3s-box: no configured subnet of network taken contains the IP address 10.125.0.5\n",
        ),
        (
            vec!["--network", "bridge", "--ip", "172.17.0.9"],
            "a3s-box: user specified IP address is supported on user defined networks only\n",
        ),
        (
            vec!["--network", "taken", "--mac-address", "zz"],
            "a3s-box: zz is not a valid mac address\n",
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
    ok(&["network", "rm", "taken"]);
}

#[test]
#[ignore = "boots real boxes as root: run inside scripts/kvm-harness (scripts/test does)"]
fn a_box_on_a_bridge_has_its_address_route_and_resolver() {
    ok(&["network", "create", "--subnet", "10.126.0.0/24", "plain"]);
    let out = ok(&[
        "run", "--rm", "--network", "plain", "--ip", "10.126.0.9", "--mac-address",
        "02:42:0a:7e:00:09", IMAGE, "sh", "-c",
        "cat /sys/class/net/eth0/address; cat /proc/net/route | tail -n +2 | cut -f1-3; cat /etc/resolv.conf; cat /sys/class/net/lo/flags",
    ]);
    assert!(out.starts_with("02:42:0a:7e:00:09\n"), "{out}");
    // The default route via 10.126.0.1 (its bytes in the kernel's order).
    assert!(out.contains("eth0\t00000000\t01007E0A\n"), "{out}");
    assert!(out.contains("nameserver 10.126.0.1\n"), "{out}");
    assert!(out.ends_with("0x9\n"), "{out}");
    no_tap_left();
    ok(&["network", "rm", "plain"]);
}

/// Stands for the outside world's resolver: `outside.test` is 192.0.2.10,
/// the harness's own address (on its dummy interface).
struct Outside;

impl a3s_box::net::dns::Names for Outside {
    fn lookup(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        (name == "outside.test").then(|| vec![Ipv4Addr::new(192, 0, 2, 10)])
    }
}

#[test]
#[ignore = "boots real boxes as root: run inside scripts/kvm-harness (scripts/test does)"]
fn a_box_resolves_outside_names_through_its_networks_resolver_and_reaches_them() {
    use a3s_box::net::dns;
    // A resolver outside the box's network, on the host's other address.
    let (udp, tcp) = dns::bind("192.0.2.10:53".parse().unwrap()).unwrap();
    let outside = dns::serve(
        udp,
        tcp,
        std::sync::Arc::new(Outside),
        vec![],
        dns::FORWARD_TIMEOUT,
    )
    .unwrap();
    ok(&["network", "create", "--subnet", "10.127.0.0/24", "outnet"]);
    ok(&[
        "run",
        "-d",
        "--name",
        "peer",
        "--network",
        "outnet",
        IMAGE,
        "sleep",
        "600",
    ]);
    // With --dns, the network's resolver forwards this box's other names
    // there (Docker's embedded resolver does so), and still answers the
    // boxes' names itself.
    let out = env().curl_host_server(
        "0.0.0.0",
        "outside.test",
        &["--network", "outnet", "--dns", "192.0.2.10"],
    );
    assert_eq!(stdout(&out), "from-the-host\n", "{}", stderr(&out));
    let out = ok(&[
        "run",
        "--rm",
        "--network",
        "outnet",
        "--dns",
        "192.0.2.10",
        IMAGE,
        "sh",
        "-c",
        "cat /etc/resolv.conf; getent hosts peer",
    ]);
    assert!(out.contains("nameserver 10.127.0.1\n"), "{out}");
    assert!(
        !out.contains("192.0.2.10"),
        "--dns is the resolver's, not the box's: {out}"
    );
    assert!(out.contains("10.127.0.2"), "{out}");
    ok(&["rm", "-f", "peer"]);
    no_tap_left();
    ok(&["network", "rm", "outnet"]);
    outside.stop().unwrap();
}
