//! User networks with the bridge driver (root only): their records, the
//! addresses they hand out, and the host's side of them.
//!
//! A network is one record, `<state>/networks/<id>.json`, and one Linux
//! bridge holding the gateway address. Each box on it gets a tap of its own
//! (`a3s<12 hex of the box ID>`, opened by the box's shim and gone when the
//! shim's descriptor closes, so a dead shim leaves no tap behind) on that
//! bridge. The address a box holds is in the box's own record (its
//! `Attachment`): a free address is one no box record holds, so an address
//! is never handed out twice, survives any crash with the record, and is
//! free again when the box is removed. Choosing one holds the networks'
//! lock until the box's record is written.
//!
//! One nftables table, `ip a3s_box`, serves every network: the set of the
//! networks' bridges (nothing is routed from one to another: networks are
//! isolated, as Docker's are), the set of their subnets (masqueraded on the way out; `127.0.0.0/8` towards
//! them too, so `-p` answers on the host's loopback, with `route_localnet`
//! on the bridge as Docker sets it) and two maps of published ports
//! (protocol and port, or host address, protocol and port, to the box's
//! address and port) that DNAT turns into the box's. A box's shim adds its
//! ports as it starts and takes them out as it ends; whoever finds a box
//! whose shim died takes them out too. A published port answers boxes too,
//! on any of the host's addresses (hairpin NAT: what was DNATed from a
//! bridge to a bridge is let through and masqueraded, so the answer comes
//! back through the host).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::dns;
use super::ports::{PortMapping, Reserved};
use crate::runtime::record::{Attachment, NetworkMode};
use crate::runtime::store::write_json_atomic;
use crate::runtime::{BoxConfig, RuntimeError, Store};

/// The network `--network bridge` names, made on first use. As Docker's
/// default network, it has no discovery of boxes by name.
pub const DEFAULT_NETWORK: &str = "bridge";
const DEFAULT_BRIDGE: &str = "a3s0";
const DIR: &str = "networks";
const TABLE: &str = "a3s_box";

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("network {0} not found")]
    NotFound(String),
    #[error("network with name {0} already exists")]
    Exists(String),
    #[error("invalid network name {0:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit")]
    InvalidName(String),
    #[error("invalid subnet {0}: invalid CIDR address")]
    BadSubnet(String),
    #[error("invalid subnet {0}: only IPv4 subnets of /8 to /30 are supported")]
    UnsupportedSubnet(String),
    #[error("invalid gateway address {0}")]
    BadGateway(String),
    #[error("no matching subnet for gateway {0}")]
    GatewayOutside(Ipv4Addr),
    #[error("Pool overlaps with other one on this address space: {0} overlaps {1}")]
    Overlaps(Ipv4Net, String),
    #[error("could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network")]
    NoPool,
    #[error("{0} is a pre-defined network and cannot be removed")]
    Predefined(String),
    #[error("error while removing network: network {name} id {id} has active endpoints ({boxes})")]
    Active {
        name: String,
        id: String,
        boxes: String,
    },
    #[error("{0:?} matches more than one network; give more of the ID")]
    Ambiguous(String),
    #[error("no available IPv4 addresses on network {0}")]
    Exhausted(String),
    #[error("invalid IP address {0}")]
    BadAddress(String),
    #[error("no configured subnet of network {1} contains the IP address {0}")]
    AddressOutside(Ipv4Addr, String),
    #[error("Address already in use: {0} on network {1}")]
    AddressInUse(Ipv4Addr, String),
    #[error("user specified IP address is supported on user defined networks only")]
    AddressOnDefault,
    #[error("bridge networks need root (CAP_NET_ADMIN): run as root, or use the default network (passt)")]
    NeedRoot,
    #[error("cannot {what}: {detail}")]
    Host { what: String, detail: String },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

type Result<T> = std::result::Result<T, BridgeError>;

/// A user network, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// The host's bridge interface.
    pub bridge: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// Boxes on it resolve each other by name and alias.
    pub discovery: bool,
}

impl Network {
    /// The address a box on it is given as `attachment` of its record.
    pub fn attachment(&self, ip: Ipv4Addr, aliases: Vec<String>) -> Attachment {
        Attachment {
            network: self.id.clone(),
            name: self.name.clone(),
            ip,
            prefix: self.subnet.prefix_len(),
            gateway: self.gateway,
            aliases,
            discovery: self.discovery,
        }
    }
}

/// What `network create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NetworkSpec {
    pub name: String,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// The network records.
#[derive(Debug, Clone)]
pub struct Networks {
    dir: PathBuf,
}

/// The networks' lock: held while a network or a box's address is chosen.
pub struct NetLock(#[allow(dead_code)] File);

fn io_err(what: &'static str, path: &Path, e: std::io::Error) -> BridgeError {
    RuntimeError::io(what, path, e).into()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Docker's default address pools: 172.17.0.0/16 to 172.31.0.0/16, then
/// 192.168.0.0/20 to 192.168.240.0/20.
fn default_pools() -> impl Iterator<Item = Ipv4Net> {
    let sixteens = (17..=31u8).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16));
    let twenties = (0..16u8).map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20));
    sixteens.chain(twenties).map(|n| n.expect("valid prefix"))
}

/// The IPv4 routes of the host (destination networks), from the kernel's
/// routing table, so a new network does not shadow one the host reaches.
fn host_routes() -> Vec<(Ipv4Net, String)> {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            if mask == 0 {
                return None; // the default route overlaps everything
            }
            // The kernel prints each address as a number in its own byte
            // order: its bytes in that order are the address.
            let dest = Ipv4Addr::from(dest.to_ne_bytes());
            let prefix = mask.count_ones() as u8;
            Some((Ipv4Net::new(dest, prefix).ok()?, f[0].to_string()))
        })
        .collect()
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

impl Networks {
    pub fn open(state: &Path) -> Result<Networks> {
        let dir = state.join(DIR);
        std::fs::create_dir_all(&dir).map_err(|e| io_err("cannot create", &dir, e))?;
        Ok(Networks { dir })
    }

    pub fn lock(&self) -> Result<NetLock> {
        let path = self.dir.join(".lock");
        let f = File::create(&path).map_err(|e| io_err("cannot open", &path, e))?;
        f.lock().map_err(|e| io_err("cannot lock", &path, e))?;
        Ok(NetLock(f))
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Every network, oldest first.
    pub fn list(&self) -> Result<Vec<Network>> {
        let rd = std::fs::read_dir(&self.dir).map_err(|e| io_err("cannot list", &self.dir, e))?;
        let mut nets: Vec<Network> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        nets.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
        Ok(nets)
    }

    /// A network by name, full ID or unique ID prefix, as Docker finds one.
    pub fn get(&self, key: &str) -> Result<Network> {
        let nets = self.list()?;
        if let Some(n) = nets.iter().find(|n| n.name == key || n.id == key) {
            return Ok(n.clone());
        }
        let mut by_prefix = nets
            .iter()
            .filter(|n| !key.is_empty() && n.id.starts_with(key));
        match (by_prefix.next(), by_prefix.next()) {
            (Some(n), None) => Ok(n.clone()),
            (Some(_), Some(_)) => Err(BridgeError::Ambiguous(key.into())),
            _ => Err(BridgeError::NotFound(key.into())),
        }
    }

    /// The network `key` names, as [`Networks::get`]; the default network's
    /// record is made (without touching the host) on first use.
    pub fn find(&self, lock: &NetLock, key: &str) -> Result<Network> {
        match self.get(key) {
            Err(BridgeError::NotFound(_)) if key == DEFAULT_NETWORK => self.default_network(lock),
            found => found,
        }
    }

    /// The default network's record, made (without touching the host) when
    /// missing.
    pub fn default_network(&self, lock: &NetLock) -> Result<Network> {
        match self.get(DEFAULT_NETWORK) {
            Err(BridgeError::NotFound(_)) => self.create(
                lock,
                &NetworkSpec {
                    name: DEFAULT_NETWORK.into(),
                    ..Default::default()
                },
            ),
            found => found,
        }
    }

    /// Records a new network after checking what `spec` asks; the host's
    /// bridge is made by [`ensure_host`].
    pub fn create(&self, _lock: &NetLock, spec: &NetworkSpec) -> Result<Network> {
        if !crate::runtime::store::valid_name(&spec.name) {
            return Err(BridgeError::InvalidName(spec.name.clone()));
        }
        let existing = self.list()?;
        if existing.iter().any(|n| n.name == spec.name) {
            return Err(BridgeError::Exists(spec.name.clone()));
        }
        let taken: Vec<(Ipv4Net, String)> = existing
            .iter()
            .map(|n| (n.subnet, format!("network {}", n.name)))
            .chain(
                host_routes()
                    .into_iter()
                    .filter(|(_, dev)| !existing.iter().any(|n| &n.bridge == dev))
                    .map(|(net, dev)| (net, format!("the host's route on {dev}"))),
            )
            .collect();
        let subnet = match &spec.subnet {
            Some(s) => {
                let net: Ipv4Net = s.parse().map_err(|_| BridgeError::BadSubnet(s.clone()))?;
                if !(8..=30).contains(&net.prefix_len()) {
                    return Err(BridgeError::UnsupportedSubnet(s.clone()));
                }
                let net = net.trunc();
                if let Some((_, what)) = taken.iter().find(|(t, _)| overlaps(t, &net)) {
                    return Err(BridgeError::Overlaps(net, what.clone()));
                }
                net
            }
            None => default_pools()
                .find(|p| !taken.iter().any(|(t, _)| overlaps(t, p)))
                .ok_or(BridgeError::NoPool)?,
        };
        let gateway = match &spec.gateway {
            Some(g) => {
                let ip: Ipv4Addr = g.parse().map_err(|_| BridgeError::BadGateway(g.clone()))?;
                if !subnet.hosts().any(|h| h == ip) {
                    return Err(BridgeError::GatewayOutside(ip));
                }
                ip
            }
            None => subnet.hosts().next().ok_or(BridgeError::NoPool)?,
        };
        let id = crate::runtime::store::new_id();
        let default = spec.name == DEFAULT_NETWORK;
        let net = Network {
            bridge: if default {
                DEFAULT_BRIDGE.into()
            } else {
                format!("a3sbr-{}", &id[..9])
            },
            id,
            name: spec.name.clone(),
            driver: "bridge".into(),
            subnet,
            gateway,
            labels: spec.labels.clone(),
            created: now(),
            discovery: !default,
        };
        write_json_atomic(&self.path(&net.id), &net)?;
        Ok(net)
    }

    /// Deletes a network's record (the caller checked that no box uses it
    /// and took down its bridge).
    pub fn remove(&self, _lock: &NetLock, net: &Network) -> Result<()> {
        let path = self.path(&net.id);
        std::fs::remove_file(&path).map_err(|e| io_err("cannot remove", &path, e))
    }
}

/// Whether `cfg`'s record holds an address on `net`.
pub fn is_on(cfg: &BoxConfig, net: &Network) -> bool {
    cfg.network
        .attachment
        .as_ref()
        .is_some_and(|a| a.network == net.id)
}

/// A free address of `net` (the lowest), or `want` if it is free. Call
/// with the networks' lock held until the box's record is written.
pub fn allocate(net: &Network, boxes: &[BoxConfig], want: Option<Ipv4Addr>) -> Result<Ipv4Addr> {
    let used: BTreeSet<Ipv4Addr> = boxes
        .iter()
        .filter(|c| is_on(c, net))
        .filter_map(|c| c.network.attachment.as_ref().map(|a| a.ip))
        .chain([net.gateway])
        .collect();
    match want {
        Some(_) if !net.discovery => Err(BridgeError::AddressOnDefault),
        Some(ip) if !net.subnet.hosts().any(|h| h == ip) => {
            Err(BridgeError::AddressOutside(ip, net.name.clone()))
        }
        Some(ip) if used.contains(&ip) => Err(BridgeError::AddressInUse(ip, net.name.clone())),
        Some(ip) => Ok(ip),
        None => net
            .subnet
            .hosts()
            .find(|h| !used.contains(h))
            .ok_or_else(|| BridgeError::Exhausted(net.name.clone())),
    }
}

/// Parses `--ip`.
pub fn parse_ip(s: &str) -> Result<Ipv4Addr> {
    s.parse().map_err(|_| BridgeError::BadAddress(s.into()))
}

/// The tap a box's shim opens for it.
pub fn tap_name(box_id: &str) -> String {
    format!("a3s{}", &box_id[..12.min(box_id.len())])
}

fn need_root() -> Result<()> {
    if rustix::process::geteuid().is_root() {
        Ok(())
    } else {
        Err(BridgeError::NeedRoot)
    }
}

/// Runs a host tool; its stderr's first line is the error.
fn run(what: String, program: &str, args: &[&str], stdin: Option<&str>) -> Result<()> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| BridgeError::Host {
        what: what.clone(),
        detail: format!("{program}: {e} (scripts/install-deps installs it)"),
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| BridgeError::Host {
        what: what.clone(),
        detail: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(BridgeError::Host {
        what,
        detail: err
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("failed")
            .trim()
            .to_string(),
    })
}

fn ip(what: String, args: &[&str]) -> Result<()> {
    run(what, "ip", args, None)
}

fn nft(what: String, script: &str) -> Result<()> {
    run(what, "nft", &["-f", "-"], Some(script))
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| BridgeError::Host {
        what: format!("set {path}"),
        detail: e.to_string(),
    })
}

/// The table every network shares; made once, whole, under the lock.
fn table_script() -> String {
    format!(
        "table ip {TABLE} {{
	set subnets {{
		type ipv4_addr
		flags interval
	}}
	set bridges {{
		type ifname
	}}
	map ports {{
		type inet_proto . inet_service : ipv4_addr . inet_service
	}}
	map host_ports {{
		type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service
	}}
	chain publish {{
		dnat ip to ip daddr . meta l4proto . th dport map @host_ports
		dnat ip to meta l4proto . th dport map @ports
	}}
	chain prerouting {{
		type nat hook prerouting priority dstnat; policy accept;
		fib daddr type local jump publish
	}}
	chain output {{
		type nat hook output priority -100; policy accept;
		fib daddr type local jump publish
	}}
	chain postrouting {{
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr @subnets ip daddr != @subnets masquerade
		ip saddr 127.0.0.0/8 ip daddr @subnets masquerade
		ip saddr @subnets ip daddr @subnets ct status dnat masquerade
	}}
	chain forward {{
		type filter hook forward priority filter; policy accept;
		iifname @bridges oifname @bridges ct status dnat accept
		iifname @bridges oifname @bridges drop
		ip daddr @subnets ct state established,related accept
		ip daddr @subnets ct status dnat accept
		ip saddr @subnets accept
	}}
}}
"
    )
}

fn table_exists() -> bool {
    Command::new("nft")
        .args(["list", "table", "ip", TABLE])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The host's side of `net`: its bridge with the gateway address, up;
/// forwarding on; its subnet in the NAT table. Safe to call again (a host
/// that rebooted lost them all). Call with the networks' lock held.
pub fn ensure_host(_lock: &NetLock, net: &Network) -> Result<()> {
    need_root()?;
    let br = net.bridge.as_str();
    if !link_exists(br) {
        ip(
            format!("create bridge {br}"),
            &["link", "add", br, "type", "bridge"],
        )?;
    }
    let addr = format!("{}/{}", net.gateway, net.subnet.prefix_len());
    let have = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", br])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {addr} ")))
        .unwrap_or(false);
    if !have {
        ip(
            format!("give {br} the address {addr}"),
            &["addr", "add", &addr, "dev", br],
        )?;
    }
    ip(format!("bring {br} up"), &["link", "set", br, "up"])?;
    write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
    write_sysctl(&format!("/proc/sys/net/ipv4/conf/{br}/route_localnet"), "1")?;
    if !table_exists() {
        nft("create the nftables table".into(), &table_script())?;
    }
    nft(
        format!("add {} to the nftables table", net.subnet),
        &format!(
            "add element ip {TABLE} subnets {{ {} }}\nadd element ip {TABLE} bridges {{ \"{br}\" }}\n",
            net.subnet
        ),
    )
}

/// Takes down what [`ensure_host`] set up for `net`. What is already gone
/// is no error.
pub fn remove_host(_lock: &NetLock, net: &Network) -> Result<()> {
    need_root()?;
    if link_exists(&net.bridge) {
        ip(
            format!("delete bridge {}", net.bridge),
            &["link", "del", &net.bridge],
        )?;
    }
    if table_exists() {
        let _ = nft(
            String::new(),
            &format!("delete element ip {TABLE} subnets {{ {} }}\n", net.subnet),
        );
        let _ = nft(
            String::new(),
            &format!(
                "delete element ip {TABLE} bridges {{ \"{}\" }}\n",
                net.bridge
            ),
        );
    }
    Ok(())
}

/// Puts a box's tap on its network's bridge and brings it up.
pub fn attach_tap(tap: &str, net: &Network) -> Result<()> {
    ip(
        format!("put {tap} on bridge {}", net.bridge),
        &["link", "set", tap, "master", &net.bridge, "up"],
    )
}

/// Takes a running box's tap off its bridge: its frames go nowhere.
pub fn detach_tap(tap: &str) -> Result<()> {
    if !link_exists(tap) {
        return Ok(());
    }
    ip(
        format!("take {tap} off its bridge"),
        &["link", "set", tap, "nomaster", "down"],
    )
}

/// The map key of a published port: (map, key).
fn port_key(m: &PortMapping) -> Option<(&'static str, String)> {
    let (proto, port) = (m.proto.name(), m.host_port);
    match m.host_ip {
        None => Some(("ports", format!("{proto} . {port}"))),
        Some(IpAddr::V4(a)) if a.is_unspecified() => Some(("ports", format!("{proto} . {port}"))),
        Some(IpAddr::V4(a)) => Some(("host_ports", format!("{a} . {proto} . {port}"))),
        // The table is IPv4 only; an IPv6 host address is refused at `run`.
        Some(IpAddr::V6(_)) => None,
    }
}

/// DNATs `ports` of the host to the box at `ip`, over what a box whose
/// shim died may have left for the same ports.
pub fn publish(ip: Ipv4Addr, ports: &[PortMapping]) -> Result<()> {
    unpublish(ports);
    let mut script = String::new();
    for m in ports {
        if let Some((map, key)) = port_key(m) {
            script.push_str(&format!(
                "add element ip {TABLE} {map} {{ {key} : {ip} . {} }}\n",
                m.box_port
            ));
        }
    }
    if script.is_empty() {
        return Ok(());
    }
    nft("publish the box's ports".into(), &script)
}

/// Takes `ports` out of the NAT table; those already out are no error.
pub fn unpublish(ports: &[PortMapping]) {
    if !table_exists() {
        return;
    }
    for m in ports {
        if let Some((map, key)) = port_key(m) {
            let _ = nft(
                String::new(),
                &format!("delete element ip {TABLE} {map} {{ {key} }}\n"),
            );
        }
    }
}

/// Takes out of the NAT table those of `ports` that still lead to `ip`:
/// what the shim of a box at `ip` left when it died. A port another box has
/// published since is left to it.
pub fn unpublish_stale(ip: Ipv4Addr, ports: &[PortMapping]) {
    if ports.is_empty() || !table_exists() {
        return;
    }
    for m in ports {
        let Some((map, key)) = port_key(m) else {
            continue;
        };
        let element = format!("{{ {key} }}");
        let Ok(out) = Command::new("nft")
            .args(["get", "element", "ip", TABLE, map, &element])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        else {
            continue;
        };
        let listed = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && leads_to(&listed, ip, m.box_port) {
            let _ = nft(
                String::new(),
                &format!("delete element ip {TABLE} {map} {element}\n"),
            );
        }
    }
}

/// Whether nft's listing of one map element maps it to `ip . port`.
fn leads_to(listing: &str, ip: Ipv4Addr, port: u16) -> bool {
    let value = format!(": {ip} . {port}");
    listing.split([',', '}']).any(|e| {
        let e = e.trim_end();
        e.ends_with(&value)
    })
}

/// What a box's shim holds while its box is on a bridge network. Dropping
/// it takes the box's ports out of the NAT table; the tap goes when its
/// descriptor (given to the network device) closes.
pub struct OnBridge {
    ports: Vec<PortMapping>,
    _reserved: Reserved,
    _dns: dns::Server,
}

impl Drop for OnBridge {
    fn drop(&mut self) {
        unpublish(&self.ports);
    }
}

/// Names of boxes on one network, from the box records as they are at the
/// moment of each query: running boxes answer to their name, their short
/// ID and their aliases, as Docker's.
struct BoxNames {
    store: Store,
    network: String,
}

impl BoxNames {
    /// The running boxes on the network, with their attachment.
    fn members(&self) -> Option<Vec<(BoxConfig, Attachment)>> {
        let boxes = self.store.list().ok()?;
        Some(
            boxes
                .into_iter()
                .filter(|(_, st)| st.status.has_vm())
                .filter_map(|(cfg, _)| {
                    let a = cfg.network.attachment.clone()?;
                    (a.network == self.network).then_some((cfg, a))
                })
                .collect(),
        )
    }
}

impl dns::Names for BoxNames {
    fn lookup(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        let ips: Vec<Ipv4Addr> = self
            .members()?
            .into_iter()
            .filter(|(cfg, a)| {
                cfg.name.eq_ignore_ascii_case(name)
                    || (name.len() == 12 && cfg.id.starts_with(name))
                    || a.aliases.iter().any(|x| x.eq_ignore_ascii_case(name))
            })
            .map(|(_, a)| a.ip)
            .collect();
        (!ips.is_empty()).then_some(ips)
    }

    fn upstreams_for(&self, client: IpAddr) -> Option<Vec<std::net::SocketAddr>> {
        let (cfg, _) = self
            .members()?
            .into_iter()
            .find(|(_, a)| IpAddr::V4(a.ip) == client)?;
        let own: Vec<std::net::SocketAddr> = cfg
            .network
            .dns
            .iter()
            .filter_map(|d| d.parse::<IpAddr>().ok())
            .map(|ip| (ip, 53).into())
            .collect();
        (!own.is_empty()).then_some(own)
    }
}

/// Sets up the host's side of `cfg`'s box on its bridge network, as its
/// shim starts it: the network's bridge (made again if the host lost it),
/// the box's tap on it, its host ports held and DNATed to it, and the
/// network's resolver on the gateway.
pub fn start_box(store: &Store, cfg: &BoxConfig) -> Result<(File, OnBridge)> {
    let att = cfg
        .network
        .attachment
        .as_ref()
        .ok_or_else(|| BridgeError::NotFound(DEFAULT_NETWORK.into()))?;
    let nets = Networks::open(store.root())?;
    let net = {
        let lock = nets.lock()?;
        let net = nets
            .get(&att.network)
            .map_err(|_| BridgeError::NotFound(att.name.clone()))?;
        ensure_host(&lock, &net)?;
        net
    };
    let (tap, tap_name) =
        crate::vmm::devices::virtio::net::open_tap(&tap_name(&cfg.id)).map_err(|e| {
            BridgeError::Host {
                what: "open a tap (/dev/net/tun)".into(),
                detail: e.to_string(),
            }
        })?;
    attach_tap(&tap_name, &net)?;
    let reserved = super::ports::hold(&cfg.network.ports).map_err(|e| BridgeError::Host {
        what: "publish the box's ports".into(),
        detail: e.to_string(),
    })?;
    let names: std::sync::Arc<dyn dns::Names> = if net.discovery {
        std::sync::Arc::new(BoxNames {
            store: store.clone(),
            network: net.id.clone(),
        })
    } else {
        std::sync::Arc::new(NoNames)
    };
    let upstream = dns::upstreams(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    let addr = std::net::SocketAddr::new(net.gateway.into(), 53);
    let dns_error = |e: std::io::Error| BridgeError::Host {
        what: format!("serve the network's DNS on {addr}"),
        detail: e.to_string(),
    };
    let (udp, tcp) = dns::bind(addr).map_err(dns_error)?;
    let server = dns::serve(udp, tcp, names, upstream, dns::FORWARD_TIMEOUT).map_err(dns_error)?;
    // Made before the ports are published, so a failure takes them out.
    let on = OnBridge {
        ports: cfg.network.ports.clone(),
        _reserved: reserved,
        _dns: server,
    };
    publish(att.ip, &cfg.network.ports)?;
    Ok((tap, on))
}

/// The default network's resolver only forwards, as Docker's default
/// network has no discovery by name.
struct NoNames;

impl dns::Names for NoNames {
    fn lookup(&self, _: &str) -> Option<Vec<Ipv4Addr>> {
        None
    }
}

/// Takes the ports of `cfg`, a box whose shim is gone without taking them
/// off the host (killed, or dead), out of the NAT table.
pub fn forget_dead_box(cfg: &BoxConfig) {
    if let (NetworkMode::Bridge, Some(att)) = (&cfg.network.mode, &cfg.network.attachment) {
        unpublish_stale(att.ip, &cfg.network.ports);
    }
}

/// Whether `cfg` is a box on a bridge network.
pub fn on_bridge(cfg: &BoxConfig) -> bool {
    cfg.network.mode == NetworkMode::Bridge && cfg.network.attachment.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::ports::Proto;
    use crate::runtime::store::new_id;

    #[test]
    fn a_stale_port_is_recognised_only_when_it_still_leads_to_the_dead_box() {
        let listing = "table ip a3s_box {\n\tmap ports {\n\t\ttype inet_proto . inet_service : ipv4_addr . inet_service\n\t\telements = { tcp . 18100 : 172.17.0.2 . 80 }\n\t}\n}\n";
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert!(leads_to(listing, ip("172.17.0.2"), 80));
        // Taken over since by another box, or another port of it.
        assert!(!leads_to(listing, ip("172.17.0.20"), 80));
        assert!(!leads_to(listing, ip("72.17.0.2"), 80));
        assert!(!leads_to(listing, ip("172.17.0.2"), 8080));
        assert!(!leads_to(listing, ip("172.17.0.2"), 0));
        let many = "elements = { tcp . 1 : 10.0.0.3 . 81, udp . 1 : 10.0.0.2 . 80 }";
        assert!(leads_to(many, ip("10.0.0.2"), 80));
        assert!(!leads_to(many, ip("10.0.0.3"), 80));
    }

    fn temp_networks() -> (Networks, PathBuf) {
        let dir = std::env::temp_dir().join(format!("a3s-nets-{}", new_id()));
        (Networks::open(&dir).unwrap(), dir)
    }

    fn spec(name: &str, subnet: Option<&str>) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            subnet: subnet.map(str::to_string),
            ..Default::default()
        }
    }

    fn box_on(net: &Network, ip: Ipv4Addr) -> BoxConfig {
        let mut cfg: BoxConfig = serde_json::from_value(serde_json::json!({
            "id": new_id(), "name": "b", "rootfs": "/", "argv": ["true"], "env": [],
            "workdir": "/", "user": null, "hostname": "b", "tty": false, "stdin": false,
            "cpus": 1, "memory": 1, "kernel": "k", "auto_remove": false, "created": 0
        }))
        .unwrap();
        cfg.network.mode = NetworkMode::Bridge;
        cfg.network.attachment = Some(net.attachment(ip, vec![]));
        cfg
    }

    #[test]
    fn networks_get_distinct_default_pools_and_the_first_host_as_gateway() {
        let (nets, dir) = temp_networks();
        let lock = nets.lock().unwrap();
        let a = nets.create(&lock, &spec("a", None)).unwrap();
        let b = nets.create(&lock, &spec("b", None)).unwrap();
        assert!(!overlaps(&a.subnet, &b.subnet), "{} {}", a.subnet, b.subnet);
        assert_eq!(a.gateway, a.subnet.hosts().next().unwrap());
        assert!(a.discovery);
        assert_eq!(nets.get("b").unwrap(), b);
        assert_eq!(nets.get(&b.id[..10]).unwrap(), b);
        let d = nets.default_network(&lock).unwrap();
        assert!(!d.discovery);
        assert_eq!(d.bridge, DEFAULT_BRIDGE);
        assert_eq!(nets.default_network(&lock).unwrap(), d);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_and_overlapping_subnets_and_names_are_refused_with_nothing_recorded() {
        let (nets, dir) = temp_networks();
        let lock = nets.lock().unwrap();
        nets.create(&lock, &spec("a", Some("10.77.0.0/16")))
            .unwrap();
        let err = |s: NetworkSpec| nets.create(&lock, &s).unwrap_err().to_string();
        assert_eq!(
            err(spec("b", Some("10.77.3.0/24"))),
            "Pool overlaps with other one on this address space: 10.77.3.0/24 overlaps network a"
        );
        assert_eq!(
            err(spec("b", Some("10.0.0.0/33"))),
            "invalid subnet 10.0.0.0/33: invalid CIDR address"
        );
        assert_eq!(
            err(spec("b", Some("banana"))),
            "invalid subnet banana: invalid CIDR address"
        );
        assert_eq!(err(spec("a", None)), "network with name a already exists");
        assert!(err(spec("-x", None)).starts_with("invalid network name"));
        let mut s = spec("b", Some("10.78.0.0/24"));
        s.gateway = Some("10.79.0.1".into());
        assert_eq!(err(s), "no matching subnet for gateway 10.79.0.1");
        assert_eq!(nets.list().unwrap().len(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn addresses_are_never_handed_out_twice_and_freed_ones_come_back() {
        let (nets, dir) = temp_networks();
        let lock = nets.lock().unwrap();
        let net = nets
            .create(&lock, &spec("n", Some("10.80.0.0/24")))
            .unwrap();
        let mut boxes = Vec::new();
        for _ in 0..20 {
            let ip = allocate(&net, &boxes, None).unwrap();
            boxes.push(box_on(&net, ip));
        }
        let ips: BTreeSet<Ipv4Addr> = boxes
            .iter()
            .map(|b| b.network.attachment.as_ref().unwrap().ip)
            .collect();
        assert_eq!(ips.len(), 20);
        assert!(!ips.contains(&net.gateway));
        let freed = boxes.remove(7).network.attachment.unwrap().ip;
        assert_eq!(allocate(&net, &boxes, None).unwrap(), freed);
        let taken = boxes[0].network.attachment.as_ref().unwrap().ip;
        assert!(matches!(
            allocate(&net, &boxes, Some(taken)),
            Err(BridgeError::AddressInUse(..))
        ));
        assert!(matches!(
            allocate(&net, &boxes, Some(Ipv4Addr::new(10, 81, 0, 5))),
            Err(BridgeError::AddressOutside(..))
        ));
        let want = Ipv4Addr::new(10, 80, 0, 200);
        assert_eq!(allocate(&net, &boxes, Some(want)).unwrap(), want);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_full_network_says_so() {
        let (nets, dir) = temp_networks();
        let lock = nets.lock().unwrap();
        let net = nets
            .create(&lock, &spec("n", Some("10.82.0.0/30")))
            .unwrap();
        // A /30 has two hosts: the gateway and one box.
        let ip = allocate(&net, &[], None).unwrap();
        let boxes = vec![box_on(&net, ip)];
        assert_eq!(
            allocate(&net, &boxes, None).unwrap_err().to_string(),
            "no available IPv4 addresses on network n"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn published_ports_key_on_the_host_address_only_when_one_is_given() {
        let m = |host_ip: Option<IpAddr>| PortMapping {
            host_ip,
            host_port: 8080,
            box_port: 80,
            proto: Proto::Tcp,
        };
        assert_eq!(port_key(&m(None)), Some(("ports", "tcp . 8080".into())));
        assert_eq!(
            port_key(&m(Some("0.0.0.0".parse().unwrap()))),
            Some(("ports", "tcp . 8080".into()))
        );
        assert_eq!(
            port_key(&m(Some("127.0.0.1".parse().unwrap()))),
            Some(("host_ports", "127.0.0.1 . tcp . 8080".into()))
        );
    }
}
