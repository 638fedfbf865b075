//! A box's network as its shim sets it up.
//!
//! With `--network passt` (the default) the shim starts one `passt` of the
//! box's own and gives the VM a virtio-net device over passt's socket. The
//! addresses are fixed, as slirp's are: the box is 10.0.2.100/24, the gateway
//! 10.0.2.2 stands for the host itself (passt maps it to the host's
//! loopback), and DNS queries to 10.0.2.3 go to the host's resolver. The
//! guest's init configures them statically, told by `RunMain`'s setup, so no
//! DHCP client runs in the box. With `--network none` the box has only `lo`.
//! Either way `/etc/hosts`, `/etc/hostname` and (with a network)
//! `/etc/resolv.conf` are laid over the box's root as Docker writes them.

pub mod bridge;
pub mod dns;
pub mod ports;

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::proto::{BoxSetup, NetSetup};
use crate::runtime::record::{BoxConfig, NetworkMode};

pub const BOX_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
pub const PREFIX: u8 = 24;
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
pub const DNS_FORWARD: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// The MTU between a box and its passt: passt's own default, the largest
/// frame its stream carries. passt segments for the host's real links, so
/// the box moves a 64 KiB segment in one frame (one descriptor chain, one
/// kick) where a 1500-byte MTU would take some 45.
pub const PASST_MTU: u16 = 65520;
/// The box's interface, as the guest kernel names the first virtio-net device.
pub const INTERFACE: &str = "eth0";
/// What passt printed, in the box's directory.
pub const PASST_LOG: &str = "passt.log";
/// How long passt may take to set up. It needs milliseconds of CPU, but ten
/// boxes starting at once on a loaded (or emulated) host took over ten
/// seconds of the clock; a passt that cannot start ends long before this.
const PASST_START: Duration = Duration::from_secs(60);

/// The box's address, when it has a network.
pub fn address(cfg: &BoxConfig) -> Option<Ipv4Addr> {
    match cfg.network.mode {
        NetworkMode::Passt => Some(BOX_ADDRESS),
        NetworkMode::Bridge => cfg.network.attachment.as_ref().map(|a| a.ip),
        NetworkMode::None => None,
    }
}

/// The box's gateway (the host, seen from the box), when it has a network.
pub fn gateway(cfg: &BoxConfig) -> Option<Ipv4Addr> {
    match cfg.network.mode {
        NetworkMode::Passt => Some(GATEWAY),
        NetworkMode::Bridge => cfg.network.attachment.as_ref().map(|a| a.gateway),
        NetworkMode::None => None,
    }
}

/// The prefix length of the box's subnet; 0 without a network.
pub fn prefix(cfg: &BoxConfig) -> u8 {
    match cfg.network.mode {
        NetworkMode::Passt => PREFIX,
        NetworkMode::Bridge => cfg.network.attachment.as_ref().map_or(0, |a| a.prefix),
        NetworkMode::None => 0,
    }
}

/// The name of the network the box is on, as `ps` and `inspect` show it.
pub fn network_name(cfg: &BoxConfig) -> &str {
    match (&cfg.network.mode, &cfg.network.attachment) {
        (NetworkMode::Bridge, Some(a)) => &a.name,
        (mode, _) => mode.name(),
    }
}

/// The box's MAC address: `--mac-address`, or one made from its ID.
pub fn box_mac(cfg: &BoxConfig) -> [u8; 6] {
    cfg.network
        .mac_address
        .as_deref()
        .and_then(parse_mac)
        .unwrap_or_else(|| mac(&cfg.id))
}

/// Six hex byte pairs split by `:` or `-`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = s
        .split([':', '-'])
        .map(|b| (b.len() == 2).then(|| u8::from_str_radix(b, 16).ok())?)
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

/// A locally administered unicast MAC address from the box's ID, so each box
/// keeps its own across restarts.
pub fn mac(id: &str) -> [u8; 6] {
    let mut mac = [0x02, 0, 0, 0, 0, 0];
    for (i, byte) in mac.iter_mut().enumerate().skip(1) {
        *byte = id
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
    }
    mac
}

pub fn format_mac(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// `/etc/hosts` as Docker writes it: loopback names, `--add-host` entries,
/// then the box's own name at its address.
fn hosts(cfg: &BoxConfig) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    for (name, ip) in &cfg.network.extra_hosts {
        let ip = match (ip.as_str(), gateway(cfg)) {
            ("host-gateway", Some(gw)) => gw.to_string(),
            _ => ip.clone(),
        };
        s.push_str(&format!("{ip}\t{name}\n"));
    }
    if let Some(ip) = address(cfg) {
        s.push_str(&format!("{ip}\t{}\n", cfg.hostname));
    }
    s
}

/// `/etc/resolv.conf`: `--dns` servers, or passt's forwarder; `--dns-search`
/// domains, or the host's (as Docker copies them).
fn resolv_conf(cfg: &BoxConfig, host: &str) -> String {
    let mut s = String::new();
    let search: Vec<String> = if cfg.network.dns_search.is_empty() {
        host.lines()
            .filter_map(|l| l.trim().strip_prefix("search"))
            .flat_map(|rest| rest.split_whitespace().map(str::to_string))
            .collect()
    } else {
        cfg.network.dns_search.clone()
    };
    if !search.is_empty() {
        s.push_str(&format!("search {}\n", search.join(" ")));
    }
    let user_network = cfg.network.attachment.as_ref().filter(|a| a.discovery);
    if let Some(a) = user_network {
        // The resolver every box's shim serves on the gateway: the boxes'
        // names, the rest forwarded (to `--dns`, if given, as Docker's).
        s.push_str(&format!("nameserver {}\n", a.gateway));
    } else if cfg.network.dns.is_empty() {
        // passt's forwarder; on the default bridge network the resolver on
        // the gateway, which only forwards.
        let ns = match (cfg.network.mode, gateway(cfg)) {
            (NetworkMode::Bridge, Some(gw)) => gw,
            _ => DNS_FORWARD,
        };
        s.push_str(&format!("nameserver {ns}\n"));
    } else {
        for ns in &cfg.network.dns {
            s.push_str(&format!("nameserver {ns}\n"));
        }
    }
    s
}

/// What the guest sets up before the main process starts.
pub fn box_setup(cfg: &BoxConfig) -> BoxSetup {
    let mut files = vec![
        ("/etc/hostname".to_string(), format!("{}\n", cfg.hostname)),
        ("/etc/hosts".to_string(), hosts(cfg)),
    ];
    let net = address(cfg)
        .zip(gateway(cfg))
        .map(|(address, gateway)| NetSetup {
            interface: INTERFACE.into(),
            address,
            prefix: prefix(cfg),
            gateway,
            // A bridge's taps keep the bridge's 1500.
            mtu: if cfg.network.mode == NetworkMode::Passt {
                PASST_MTU
            } else {
                0
            },
        });
    if net.is_some() {
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        files.push(("/etc/resolv.conf".to_string(), resolv_conf(cfg, &host)));
    }
    BoxSetup {
        net,
        files,
        ..BoxSetup::default()
    }
}

/// The passt program: `$A3S_BOX_PASST`, else `passt` on `PATH`.
fn passt_program() -> PathBuf {
    std::env::var_os("A3S_BOX_PASST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("passt"))
}

/// passt's arguments for a box: foreground, one client (it ends when the
/// VM's connection closes, also when the shim is killed), quiet, the fixed
/// addresses, and the published ports.
fn passt_args(cfg: &BoxConfig) -> Vec<String> {
    let mut args: Vec<String> = [
        "--foreground",
        "--one-off",
        "--quiet",
        "--fd",
        &PASST_FD.to_string(),
        "--address",
        &BOX_ADDRESS.to_string(),
        "--netmask",
        &PREFIX.to_string(),
        "--gateway",
        &GATEWAY.to_string(),
        "--dns-forward",
        &DNS_FORWARD.to_string(),
        "--mtu",
        &PASST_MTU.to_string(),
    ]
    .map(str::to_string)
    .to_vec();
    args.extend(ports::passt_args(&cfg.network.ports));
    args
}

/// A box's running passt, and the stream the VM's device uses.
pub struct Passt {
    pub child: Child,
    pub stream: UnixStream,
}

/// The descriptor passt is given its end of the frame socket on.
const PASST_FD: i32 = 3;

/// Starts the box's passt on one end of a socket pair (`--fd`): no socket
/// file, so nothing to clean up and no directory that passt, which drops
/// root for `nobody`, would need to write. The error is one line: what passt
/// said, when it ended.
pub fn start_passt(cfg: &BoxConfig, box_dir: &Path) -> Result<Passt, String> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let (ours, theirs) =
        UnixStream::pair().map_err(|e| format!("cannot make passt's socket: {e}"))?;
    let log_path = box_dir.join(PASST_LOG);
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let program = passt_program();
    let mut cmd = Command::new(&program);
    cmd.args(passt_args(cfg))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    let fd = theirs.as_raw_fd();
    // SAFETY: between fork and exec only dup2 runs, which is
    // async-signal-safe; it leaves the copy without close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, PASST_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        format!(
            "cannot start {} for the box's network ({e}); install Debian's passt, or use --network none",
            program.display()
        )
    })?;
    drop(theirs);
    // passt answers ARP once it is set up (ports bound, sandbox made), and
    // one that cannot start ends first. The box's own MAC asks, so passt
    // learns the same address the VM then uses.
    let mut stream = ours;
    let failed = |status: std::process::ExitStatus| {
        format!("passt ended ({status}): {}", last_line(&log_path))
    };
    let mut frame = arp_request(box_mac(cfg));
    let mut msg = (frame.len() as u32).to_be_bytes().to_vec();
    msg.append(&mut frame);
    stream
        .write_all(&msg)
        .map_err(|e| format!("cannot reach passt: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + PASST_START;
    let mut got = Vec::new();
    let mut answered = false;
    loop {
        // (Whole frames only: the device must start at a frame's length.)
        if answered && got.is_empty() {
            stream.set_read_timeout(None).map_err(|e| e.to_string())?;
            return Ok(Passt { child, stream });
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(failed(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "passt did not answer within {} s",
                PASST_START.as_secs()
            ));
        }
        let mut buf = [0u8; 2048];
        match stream.read(&mut buf) {
            Ok(0) => {
                let status = child.wait().map_err(|e| e.to_string())?;
                return Err(failed(status));
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => continue,
        }
        // Frames are length-prefixed; whatever comes before the reply is
        // of no use to a VM that has not booted.
        while got.len() >= 4 {
            let len = u32::from_be_bytes([got[0], got[1], got[2], got[3]]) as usize;
            if got.len() < 4 + len {
                break;
            }
            let frame: Vec<u8> = got.drain(..4 + len).skip(4).collect();
            answered |= is_arp_reply(&frame);
        }
    }
}

/// An ARP request from the box for the gateway, as an Ethernet frame.
fn arp_request(mac: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend(mac);
    f.extend([0x08, 0x06]); // ARP
    f.extend([0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet, IPv4, request
    f.extend(mac);
    f.extend(BOX_ADDRESS.octets());
    f.extend([0; 6]);
    f.extend(GATEWAY.octets());
    f.resize(60, 0); // Ethernet's shortest frame
    f
}

fn is_arp_reply(frame: &[u8]) -> bool {
    frame.len() >= 42 && frame[12..14] == [0x08, 0x06] && frame[20..22] == [0, 2]
}

/// The last non-empty line of a log, for a one-line error.
fn last_line(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    // (passt also says on stderr that it could not reach syslog.)
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.contains("to syslog"))
        .unwrap_or("(it printed nothing)")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::record::NetworkConfig;

    fn cfg(mode: NetworkMode) -> BoxConfig {
        serde_json::from_value(serde_json::json!({
            "id": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "name": "web", "rootfs": "/r", "argv": ["true"], "env": [], "workdir": "/",
            "user": null, "hostname": "web1", "tty": false, "stdin": false, "cpus": 1,
            "memory": 134217728, "kernel": "/vmlinux", "auto_remove": false, "created": 0,
            "network": serde_json::to_value(NetworkConfig { mode, ..Default::default() }).unwrap(),
        }))
        .unwrap()
    }

    /// The content of the file the setup lays over `path`.
    fn staged(setup: &BoxSetup, path: &str) -> Option<String> {
        setup
            .files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, c)| c.clone())
    }

    #[test]
    fn a_box_on_passt_gets_its_address_its_name_and_the_forwarder() {
        let mut c = cfg(NetworkMode::Passt);
        c.network.extra_hosts = vec![("db".into(), "10.0.2.2".into())];
        let setup = box_setup(&c);
        assert_eq!(
            setup.net,
            Some(NetSetup {
                interface: "eth0".into(),
                address: BOX_ADDRESS,
                prefix: 24,
                gateway: GATEWAY,
                mtu: 65520,
            })
        );
        let file = |p: &str| staged(&setup, p);
        assert_eq!(file("/etc/hostname").unwrap(), "web1\n");
        let hosts = file("/etc/hosts").unwrap();
        assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"), "{hosts}");
        assert!(
            hosts.ends_with("10.0.2.2\tdb\n10.0.2.100\tweb1\n"),
            "{hosts}"
        );
        assert!(file("/etc/resolv.conf").is_some());
    }

    #[test]
    fn a_box_without_a_network_has_no_interface_and_no_resolver() {
        let setup = box_setup(&cfg(NetworkMode::None));
        assert_eq!(setup.net, None);
        assert!(setup.files.iter().all(|(p, _)| p != "/etc/resolv.conf"));
        let hosts = &setup
            .files
            .iter()
            .find(|(p, _)| p == "/etc/hosts")
            .unwrap()
            .1;
        assert!(!hosts.contains("web1"), "{hosts}");
    }

    #[test]
    fn resolv_conf_takes_dns_flags_or_the_forwarder_and_the_hosts_search() {
        let mut c = cfg(NetworkMode::Passt);
        let host = "nameserver 127.0.0.53\nsearch lan example.org\n";
        assert_eq!(
            resolv_conf(&c, host),
            "search lan example.org\nnameserver 10.0.2.3\n"
        );
        c.network.dns = vec!["10.0.2.2".into()];
        c.network.dns_search = vec!["corp".into()];
        assert_eq!(resolv_conf(&c, host), "search corp\nnameserver 10.0.2.2\n");
    }

    #[test]
    fn the_readiness_probe_is_an_arp_request_for_the_gateway() {
        let f = arp_request([2, 1, 2, 3, 4, 5]);
        assert_eq!(f.len(), 60);
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &[2, 1, 2, 3, 4, 5]);
        assert_eq!(&f[28..32], &[10, 0, 2, 100]);
        assert_eq!(&f[38..42], &[10, 0, 2, 2]);
        assert!(!is_arp_reply(&f));
        let mut reply = f.clone();
        reply[21] = 2;
        assert!(is_arp_reply(&reply));
    }

    #[test]
    fn a_box_on_a_bridge_gets_its_networks_address_gateway_and_resolver() {
        let mut c = cfg(NetworkMode::Bridge);
        c.network.attachment = Some(crate::runtime::record::Attachment {
            network: "n".into(),
            name: "testnet".into(),
            ip: Ipv4Addr::new(172, 18, 0, 5),
            prefix: 16,
            gateway: Ipv4Addr::new(172, 18, 0, 1),
            aliases: vec![],
            discovery: true,
        });
        // On a user network --dns goes to the resolver, not resolv.conf.
        c.network.dns = vec!["192.0.2.53".into()];
        c.network.extra_hosts = vec![("hostbox".into(), "host-gateway".into())];
        c.network.mac_address = Some("02:42:ac:12:00:05".into());
        let setup = box_setup(&c);
        assert_eq!(
            setup.net,
            Some(NetSetup {
                interface: "eth0".into(),
                address: Ipv4Addr::new(172, 18, 0, 5),
                prefix: 16,
                gateway: Ipv4Addr::new(172, 18, 0, 1),
                mtu: 0,
            })
        );
        let file = |p: &str| staged(&setup, p).unwrap();
        assert!(file("/etc/resolv.conf").ends_with("nameserver 172.18.0.1\n"));
        let hosts = file("/etc/hosts");
        assert!(hosts.contains("172.18.0.1\thostbox\n"), "{hosts}");
        assert!(hosts.ends_with("172.18.0.5\tweb1\n"), "{hosts}");
        assert_eq!(box_mac(&c), [0x02, 0x42, 0xac, 0x12, 0, 5]);
        assert_eq!(network_name(&c), "testnet");
    }

    #[test]
    fn macs_are_local_unicast_and_the_boxs_own() {
        let m = mac("0123456789abcdef");
        assert_eq!(format_mac(m), "02:23:45:67:89:ab");
        assert_eq!(m[0] & 0x03, 0x02);
    }
}
