//! `network create/ls/rm/inspect/connect/disconnect/prune`: user networks
//! with the bridge driver, as Docker's `network` commands.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::bail;
use argh::FromArgs;
use serde_json::{json, Value};

use crate::net::bridge::{self, BridgeError, Network, NetworkSpec, Networks, DEFAULT_NETWORK};
use crate::runtime::record::NetworkMode;
use crate::runtime::{BoxConfig, BoxState, Store};

/// manage networks
#[derive(FromArgs)]
#[argh(subcommand, name = "network")]
pub struct NetworkArgs {
    #[argh(subcommand)]
    command: NetworkCommand,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum NetworkCommand {
    Create(CreateArgs),
    Ls(LsArgs),
    Rm(RmArgs),
    Inspect(InspectArgs),
    Connect(ConnectArgs),
    Disconnect(DisconnectArgs),
    Prune(PruneArgs),
}

/// create a network
#[derive(FromArgs)]
#[argh(subcommand, name = "create")]
struct CreateArgs {
    /// driver: bridge (the only one)
    #[argh(option, short = 'd', default = "String::from(\"bridge\")")]
    driver: String,
    /// subnet in CIDR form, e.g. 10.10.0.0/24 (default: a free pool)
    #[argh(option)]
    subnet: Option<String>,
    /// gateway address (default: the subnet's first)
    #[argh(option)]
    gateway: Option<String>,
    /// a label KEY=VALUE (repeatable)
    #[argh(option)]
    label: Vec<String>,
    /// the network's name
    #[argh(positional)]
    name: String,
}

/// list networks
#[derive(FromArgs)]
#[argh(subcommand, name = "ls")]
struct LsArgs {
    /// only the IDs
    #[argh(switch, short = 'q')]
    quiet: bool,
    /// do not truncate the IDs
    #[argh(switch)]
    no_trunc: bool,
}

/// remove networks
#[derive(FromArgs)]
#[argh(subcommand, name = "rm")]
struct RmArgs {
    /// networks
    #[argh(positional, greedy)]
    networks: Vec<String>,
}

/// show networks in detail
#[derive(FromArgs)]
#[argh(subcommand, name = "inspect")]
struct InspectArgs {
    /// a Go template for each network
    #[argh(option, short = 'f')]
    format: Option<String>,
    /// networks
    #[argh(positional, greedy)]
    networks: Vec<String>,
}

/// connect a stopped box to a network
#[derive(FromArgs)]
#[argh(subcommand, name = "connect")]
struct ConnectArgs {
    /// the box's IPv4 address on the network
    #[argh(option)]
    ip: Option<String>,
    /// another name for the box on the network (repeatable)
    #[argh(option)]
    alias: Vec<String>,
    /// network
    #[argh(positional)]
    network: String,
    /// box
    #[argh(positional)]
    name: String,
}

/// disconnect a box from a network
#[derive(FromArgs)]
#[argh(subcommand, name = "disconnect")]
struct DisconnectArgs {
    /// disconnect even if the network is gone
    #[argh(switch, short = 'f')]
    force: bool,
    /// network
    #[argh(positional)]
    network: String,
    /// box
    #[argh(positional)]
    name: String,
}

/// remove every network no box uses
#[derive(FromArgs)]
#[argh(subcommand, name = "prune")]
struct PruneArgs {
    /// do not ask
    #[argh(switch, short = 'f')]
    force: bool,
}

fn open() -> anyhow::Result<(Store, Networks)> {
    let state = crate::paths::state_dir();
    Ok((Store::open(&state)?, Networks::open(&state)?))
}

/// The networks every host has, which need no record.
const BUILTIN: [(&str, &str); 2] = [("none", "null"), ("passt", "passt")];

pub fn main(a: NetworkArgs) -> anyhow::Result<i32> {
    match a.command {
        NetworkCommand::Create(a) => create(a),
        NetworkCommand::Ls(a) => ls(a),
        NetworkCommand::Rm(a) => rm(a),
        NetworkCommand::Inspect(a) => inspect(a),
        NetworkCommand::Connect(a) => connect(a),
        NetworkCommand::Disconnect(a) => disconnect(a),
        NetworkCommand::Prune(a) => prune(a),
    }
}

fn create(a: CreateArgs) -> anyhow::Result<i32> {
    if a.driver != "bridge" {
        bail!(
            "plugin \"{}\" not found: the only driver is bridge",
            a.driver
        );
    }
    if a.name == DEFAULT_NETWORK || BUILTIN.iter().any(|(n, _)| *n == a.name) {
        bail!("network with name {} already exists", a.name);
    }
    let mut labels = BTreeMap::new();
    for l in &a.label {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        labels.insert(k.to_string(), v.to_string());
    }
    if !rustix::process::geteuid().is_root() {
        return Err(BridgeError::NeedRoot.into());
    }
    let (_, nets) = open()?;
    let lock = nets.lock()?;
    let net = nets.create(
        &lock,
        &NetworkSpec {
            name: a.name,
            subnet: a.subnet,
            gateway: a.gateway,
            labels,
        },
    )?;
    if let Err(e) = bridge::ensure_host(&lock, &net) {
        // Nothing half made is left: neither the record nor the bridge.
        let _ = bridge::remove_host(&lock, &net);
        let _ = nets.remove(&lock, &net);
        return Err(e.into());
    }
    println!("{}", net.id);
    Ok(0)
}

fn ls(a: LsArgs) -> anyhow::Result<i32> {
    let (_, nets) = open()?;
    let mut rows: Vec<(String, String, String)> = Vec::new();
    if let Ok(lock) = nets.lock() {
        // The default network is listed (and recorded) before it is first used.
        let _ = nets.default_network(&lock);
    }
    for n in nets.list()? {
        rows.push((n.id, n.name, n.driver));
    }
    for (name, driver) in BUILTIN {
        rows.push((builtin_id(name), name.into(), driver.into()));
    }
    rows.sort_by(|x, y| x.1.cmp(&y.1));
    let id = |s: &str| {
        if a.no_trunc {
            s.to_string()
        } else {
            s[..12].to_string()
        }
    };
    if a.quiet {
        for (i, _, _) in &rows {
            println!("{}", id(i));
        }
        return Ok(0);
    }
    println!("{:<14}{:<20}{:<10}SCOPE", "NETWORK ID", "NAME", "DRIVER");
    for (i, name, driver) in &rows {
        println!("{:<14}{:<20}{:<10}local", id(i), name, driver);
    }
    Ok(0)
}

/// A fixed ID for a network that has no record.
fn builtin_id(name: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(format!("a3s-box network {name}"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn rm(a: RmArgs) -> anyhow::Result<i32> {
    if a.networks.is_empty() {
        bail!("network rm needs at least one network");
    }
    let (store, nets) = open()?;
    let mut failed = false;
    for key in &a.networks {
        match remove_one(&store, &nets, key) {
            Ok(()) => println!("{key}"),
            Err(e) => {
                eprintln!("a3s-box: {e}");
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

fn remove_one(store: &Store, nets: &Networks, key: &str) -> anyhow::Result<()> {
    if key == DEFAULT_NETWORK || BUILTIN.iter().any(|(n, _)| *n == key) {
        return Err(BridgeError::Predefined(key.into()).into());
    }
    let lock = nets.lock()?;
    let net = nets.get(key)?;
    if net.name == DEFAULT_NETWORK {
        return Err(BridgeError::Predefined(net.name).into());
    }
    let boxes = store.list()?;
    let active: Vec<&str> = boxes
        .iter()
        .filter(|(c, st)| st.status.has_vm() && bridge::is_on(c, &net))
        .map(|(c, _)| c.name.as_str())
        .collect();
    if !active.is_empty() {
        return Err(BridgeError::Active {
            name: net.name.clone(),
            id: net.id.clone(),
            boxes: active.join(", "),
        }
        .into());
    }
    bridge::remove_host(&lock, &net)?;
    nets.remove(&lock, &net)?;
    Ok(())
}

fn rfc3339(secs: u64) -> String {
    crate::runtime::logs::rfc3339(UNIX_EPOCH + Duration::from_secs(secs))
}

fn network_json(net: &Network, boxes: &[(BoxConfig, BoxState)]) -> Value {
    let mut members = serde_json::Map::new();
    for (cfg, _) in boxes
        .iter()
        .filter(|(c, st)| st.status.has_vm() && bridge::is_on(c, net))
    {
        let a = cfg.network.attachment.as_ref().expect("attached");
        members.insert(
            cfg.id.clone(),
            json!({
                "Name": cfg.name,
                "EndpointID": "",
                "MacAddress": crate::net::format_mac(crate::net::box_mac(cfg)),
                "IPv4Address": format!("{}/{}", a.ip, a.prefix),
                "IPv6Address": "",
            }),
        );
    }
    json!({
        "Name": net.name,
        "Id": net.id,
        "Created": rfc3339(net.created),
        "Scope": "local",
        "Driver": net.driver,
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": {},
            "Config": [{ "Subnet": net.subnet.to_string(), "Gateway": net.gateway.to_string() }],
        },
        "Internal": false,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": { "Network": "" },
        "ConfigOnly": false,
        "Containers": members,
        "Options": { "com.docker.network.bridge.name": net.bridge },
        "Labels": net.labels,
    })
}

fn inspect(a: InspectArgs) -> anyhow::Result<i32> {
    if a.networks.is_empty() {
        bail!("network inspect needs at least one network");
    }
    let template = a
        .format
        .as_deref()
        .map(super::template::Template::parse)
        .transpose()?;
    let (store, nets) = open()?;
    let boxes = store.list()?;
    let mut out = Vec::new();
    let mut failed = false;
    for key in &a.networks {
        match nets.lock().and_then(|lock| nets.find(&lock, key)) {
            Ok(net) => out.push(network_json(&net, &boxes)),
            Err(e) => {
                eprintln!("a3s-box: {e}");
                failed = true;
            }
        }
    }
    super::boxes::print_inspected(&out, template.as_ref())?;
    Ok(i32::from(failed))
}

fn write_config(store: &Store, cfg: &BoxConfig) -> anyhow::Result<()> {
    crate::runtime::store::write_json_atomic(
        &store
            .box_dir(&cfg.id)
            .join(crate::runtime::store::CONFIG_FILE),
        cfg,
    )?;
    Ok(())
}

fn connect(a: ConnectArgs) -> anyhow::Result<i32> {
    let (store, nets) = open()?;
    let id = store.resolve(&a.name)?;
    let lock = nets.lock()?;
    let net = nets.find(&lock, &a.network)?;
    if !rustix::process::geteuid().is_root() {
        return Err(BridgeError::NeedRoot.into());
    }
    let mut cfg = store.config(&id)?;
    if bridge::is_on(&cfg, &net) {
        bail!(
            "endpoint with name {} already exists in network {}",
            cfg.name,
            net.name
        );
    }
    if let Some(other) = &cfg.network.attachment {
        bail!(
            "box {} is on network {}: a box is on one network at a time; disconnect it first",
            cfg.name,
            other.name
        );
    }
    if store.live_state(&id)?.status.has_vm() {
        bail!(
            "box {} is running: connect it while it is stopped, and it joins {} when it starts",
            cfg.name,
            net.name
        );
    }
    if !net.discovery && (a.ip.is_some() || !a.alias.is_empty()) {
        bail!("network-scoped alias and user specified IP address are supported on user defined networks only");
    }
    let want = a.ip.as_deref().map(bridge::parse_ip).transpose()?;
    let boxes: Vec<BoxConfig> = store.list()?.into_iter().map(|(c, _)| c).collect();
    let ip = bridge::allocate(&net, &boxes, want)?;
    cfg.network.mode = NetworkMode::Bridge;
    cfg.network.attachment = Some(net.attachment(ip, a.alias));
    write_config(&store, &cfg)?;
    drop(lock);
    Ok(0)
}

fn disconnect(a: DisconnectArgs) -> anyhow::Result<i32> {
    let (store, nets) = open()?;
    let id = store.resolve(&a.name)?;
    let _lock = nets.lock()?;
    let net = match nets.get(&a.network) {
        Ok(n) => Some(n),
        Err(BridgeError::NotFound(_)) if a.force => None,
        Err(e) => return Err(e.into()),
    };
    let mut cfg = store.config(&id)?;
    let attached = match (&net, &cfg.network.attachment) {
        (Some(n), Some(att)) => att.network == n.id,
        (None, Some(att)) => att.name == a.network || att.network.starts_with(&a.network),
        _ => false,
    };
    if !attached {
        bail!("box {} is not connected to network {}", cfg.name, a.network);
    }
    // A running box keeps its device; cut off, its frames go nowhere.
    if store.live_state(&id)?.status.has_vm() {
        bridge::detach_tap(&bridge::tap_name(&cfg.id))?;
        bridge::unpublish(&cfg.network.ports);
    }
    cfg.network.attachment = None;
    cfg.network.mode = NetworkMode::None;
    cfg.network.ports.clear();
    write_config(&store, &cfg)?;
    Ok(0)
}

fn prune(a: PruneArgs) -> anyhow::Result<i32> {
    if !a.force && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprint!("WARNING! This will remove all custom networks not used by at least one box.\nAre you sure you want to continue? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(0);
        }
    }
    let (store, _) = open()?;
    let removed = prune_unused(&store)?;
    if !removed.is_empty() {
        println!("Deleted Networks:");
        for n in &removed {
            println!("{n}");
        }
    }
    Ok(0)
}

/// Removes every user network no box record names; their names.
pub(crate) fn prune_unused(store: &Store) -> anyhow::Result<Vec<String>> {
    let nets = Networks::open(store.root())?;
    let lock = nets.lock()?;
    let boxes = store.list()?;
    let mut removed = Vec::new();
    for net in nets.list()? {
        if net.name == DEFAULT_NETWORK || boxes.iter().any(|(c, _)| bridge::is_on(c, &net)) {
            continue;
        }
        bridge::remove_host(&lock, &net)?;
        nets.remove(&lock, &net)?;
        removed.push(net.name);
    }
    Ok(removed)
}
