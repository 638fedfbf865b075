//! `a3s-box run`: create a box, start its shim, and (unless `-d`) attach to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use argh::FromArgs;

use crate::net::bridge::{self, Networks};
use crate::net::ports;
use crate::oci::manifest::ImageConfig;
use crate::oci::reference::Reference;
use crate::oci::store::ImageStore;
use crate::runtime::record::now;
use crate::runtime::record::{NetworkConfig, NetworkMode, RestartPolicy};
use crate::runtime::security::{SecurityConfig, SecurityFlags};
use crate::runtime::{lifecycle, BoxConfig, Store};
use crate::vmm::memory::parse_size;
use crate::volume::{self, Volumes};

/// Run a command in a new box.
#[derive(FromArgs)]
#[argh(subcommand, name = "run")]
pub struct RunArgs {
    /// remove the box when it exits
    #[argh(switch)]
    pub rm: bool,
    /// run in the background and print the box ID
    #[argh(switch, short = 'd')]
    pub detach: bool,
    /// keep stdin open and forward it
    #[argh(switch, short = 'i')]
    pub interactive: bool,
    /// give the process a terminal
    #[argh(switch, short = 't')]
    pub tty: bool,
    /// name of the box
    #[argh(option)]
    name: Option<String>,
    /// environment variable KEY=VALUE (repeatable)
    #[argh(option, short = 'e')]
    env: Vec<String>,
    /// file of KEY=VALUE lines
    #[argh(option)]
    env_file: Vec<PathBuf>,
    /// label KEY=VALUE (or KEY) on the box (repeatable)
    #[argh(option, short = 'l')]
    label: Vec<String>,
    /// file of labels, one KEY=VALUE a line
    #[argh(option)]
    label_file: Vec<PathBuf>,
    /// command to check the box's health (run with /bin/sh -c)
    #[argh(option)]
    health_cmd: Option<String>,
    /// time between health checks (e.g. 30s, 1m30s; default 30s)
    #[argh(option)]
    health_interval: Option<String>,
    /// longest a health check may run (default 30s)
    #[argh(option)]
    health_timeout: Option<String>,
    /// failures in a row that make the box unhealthy (default 3)
    #[argh(option)]
    health_retries: Option<u32>,
    /// time after start when failures do not count (default 0s)
    #[argh(option)]
    health_start_period: Option<String>,
    /// run no health check, not even the image's
    #[argh(switch)]
    no_healthcheck: bool,
    /// restart policy: no, on-failure[:N], always, unless-stopped
    #[argh(option, default = "String::from(\"no\")")]
    restart: String,
    /// where the main process's output goes: json-file (default) or none
    #[argh(option, default = "String::from(\"json-file\")")]
    log_driver: String,
    /// log driver option: max-size=10m, max-file=3 (repeatable)
    #[argh(option)]
    log_opt: Vec<String>,
    /// working directory inside the box
    #[argh(option, short = 'w')]
    workdir: Option<String>,
    /// user (name or UID, optionally :group)
    #[argh(option, short = 'u')]
    user: Option<String>,
    /// program to run instead of the image's entrypoint
    #[argh(option)]
    entrypoint: Option<String>,
    /// number of vCPUs (a whole number; 2.0 is read as 2)
    #[argh(option, default = "1", from_str_fn(parse_cpus))]
    cpus: u32,
    /// memory, e.g. 512m
    #[argh(option, short = 'm', default = "String::from(\"512m\")")]
    memory: String,
    /// host name inside the box
    #[argh(option, short = 'h')]
    hostname: Option<String>,
    /// network: passt (default: user-mode networking, no root needed), none,
    /// bridge, or a network made with `network create` (root)
    #[argh(option, default = "String::from(\"passt\")")]
    network: String,
    /// the box's IPv4 address on its user network
    #[argh(option)]
    ip: Option<String>,
    /// another name the box answers to on its user network (repeatable)
    #[argh(option)]
    network_alias: Vec<String>,
    /// the box's MAC address, e.g. 02:42:ac:11:00:02
    #[argh(option)]
    mac_address: Option<String>,
    /// publish a box port on the host: [IP:][HOST:]BOX[/tcp|/udp], ranges too
    #[argh(option, short = 'p')]
    publish: Vec<String>,
    /// publish every port the image EXPOSEs, on ports the host picks
    #[argh(switch, short = 'P')]
    publish_all: bool,
    /// name server for the box (repeatable)
    #[argh(option)]
    dns: Vec<String>,
    /// DNS search domain for the box (repeatable)
    #[argh(option)]
    dns_search: Vec<String>,
    /// extra /etc/hosts entry NAME:IP (IP host-gateway: the host)
    #[argh(option)]
    add_host: Vec<String>,
    /// a volume or host directory in the box: [NAME|/HOST/DIR:]/PATH[:ro|rw]
    #[argh(option, short = 'v')]
    volume: Vec<String>,
    /// a mount: type=volume|bind|tmpfs,source=SRC,target=/PATH[,readonly]
    #[argh(option)]
    mount: Vec<String>,
    /// a tmpfs in the box: /PATH[:size=64m,mode=1777]
    #[argh(option)]
    tmpfs: Vec<String>,
    /// the volumes and binds of another box: BOX[:ro|rw]
    #[argh(option)]
    volumes_from: Vec<String>,
    /// add a capability (CHOWN or CAP_CHOWN; ALL) (repeatable)
    #[argh(option)]
    cap_add: Vec<String>,
    /// drop a capability (or ALL) (repeatable)
    #[argh(option)]
    cap_drop: Vec<String>,
    /// every capability, /sys and /proc/sys writable, /proc unmasked
    #[argh(switch)]
    privileged: bool,
    /// mount the box's root filesystem read-only
    #[argh(switch)]
    read_only: bool,
    /// security option: no-new-privileges[:true|false], seccomp=unconfined,
    /// apparmor=unconfined, label=disable
    #[argh(option)]
    security_opt: Vec<String>,
    /// run a reaper as the box's PID 1 that forwards signals and reaps zombies
    #[argh(switch)]
    init: bool,
    /// an extra group for the box's processes (name or GID) (repeatable)
    #[argh(option)]
    group_add: Vec<String>,
    /// a namespaced kernel parameter KEY=VALUE (net.*, kernel.shm*, kernel.msg*,
    /// kernel.sem, fs.mqueue.*) (repeatable)
    #[argh(option)]
    sysctl: Vec<String>,
    /// a device for the box: only those its own kernel provides (/dev/fuse,
    /// /dev/net/tun), which every box has
    #[argh(option)]
    device: Vec<String>,
    /// directory to use as the box's root filesystem
    #[argh(option)]
    rootfs: Option<PathBuf>,
    /// guest kernel (default: the one scripts/build-kernel made)
    #[argh(option)]
    kernel: Option<PathBuf>,
    /// IMAGE (when no --rootfs) followed by the command and its arguments
    #[argh(positional, greedy)]
    args: Vec<String>,
}

/// `--cpus` as Docker writes it (`2`, `2.0`), as long as it is a whole number:
/// a box's CPUs are vCPUs, and a fraction of one is not something it can have.
pub(crate) fn parse_cpus(s: &str) -> Result<u32, String> {
    let whole = match s.split_once('.') {
        Some((w, frac)) if frac.bytes().all(|b| b == b'0') => w,
        Some(_) => {
            return Err(format!(
                "a box gets whole vCPUs, and {s} is not a whole number"
            ))
        }
        None => s,
    };
    whole
        .parse()
        .map_err(|_| format!("expected a number of vCPUs, such as 2, not {s:?}"))
}

/// One `-e` or env-file entry: `KEY=VALUE`, or `KEY`, which takes the value
/// from this environment and is left out when unset there (as Docker does).
/// `Err` for an entry with no key.
pub fn env_entry(s: &str) -> Result<Option<(String, String)>, ()> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok(Some((k.to_string(), v.to_string()))),
        Some(_) => Err(()),
        None if s.is_empty() => Err(()),
        None => Ok(std::env::var(s).ok().map(|v| (s.to_string(), v))),
    }
}

/// One `-e` flag, as [`env_entry`] reads it.
pub fn env_flag(e: &str) -> anyhow::Result<Option<(String, String)>> {
    env_entry(e).map_err(|()| anyhow::anyhow!("-e {e}: expected KEY=VALUE"))
}

fn read_env_file(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read env file {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match env_entry(line) {
            Ok(p) => out.extend(p),
            Err(()) => bail!("{}:{}: expected KEY=VALUE", path.display(), n + 1),
        }
    }
    Ok(out)
}

/// The box's labels from `-l` flags and label files, as Docker reads them:
/// `KEY=VALUE`, or `KEY` for an empty value; a later KEY wins.
fn labels(flags: &[String], files: &[PathBuf]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut add = |entry: &str, origin: &dyn Fn() -> String| -> anyhow::Result<()> {
        let (k, v) = entry.split_once('=').unwrap_or((entry, ""));
        if k.is_empty() || k.chars().any(char::is_whitespace) {
            bail!("invalid label {entry:?} ({}): expected KEY=VALUE", origin());
        }
        out.insert(k.to_string(), v.to_string());
        Ok(())
    };
    for f in files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read label file {}", f.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if !line.is_empty() && !line.starts_with('#') {
                add(line, &|| format!("{}:{}", f.display(), n + 1))?;
            }
        }
    }
    for l in flags {
        add(l, &|| "-l".into())?;
    }
    Ok(out)
}

/// The box's health check: the image's HEALTHCHECK with the `--health-*` flags
/// over it (Docker's rules and defaults), or none.
fn health_check(
    a: &RunArgs,
    image: Option<&crate::oci::manifest::ImageHealthcheck>,
) -> anyhow::Result<Option<crate::runtime::record::HealthCheck>> {
    let flags = a.health_cmd.is_some()
        || a.health_interval.is_some()
        || a.health_timeout.is_some()
        || a.health_retries.is_some()
        || a.health_start_period.is_some();
    if a.no_healthcheck {
        if flags {
            bail!("--no-healthcheck conflicts with --health-* options");
        }
        return Ok(None);
    }
    let argv = match (&a.health_cmd, image.map(|h| h.test.as_slice())) {
        (Some(cmd), _) => vec!["/bin/sh".into(), "-c".into(), cmd.clone()],
        (None, Some([kind, rest @ ..])) if kind == "CMD" && !rest.is_empty() => rest.to_vec(),
        (None, Some([kind, cmd])) if kind == "CMD-SHELL" => {
            vec!["/bin/sh".into(), "-c".into(), cmd.clone()]
        }
        _ => return Ok(None),
    };
    let ms = |flag: &str, v: &Option<String>, from_image: u64, default_ms: u64| match v {
        Some(v) => match crate::runtime::logs::parse_go_duration(v) {
            Some((false, d)) => Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            _ => Err(anyhow::anyhow!(
                "{flag} {v}: expected a duration such as 30s or 1m30s"
            )),
        },
        None if from_image > 0 => Ok(from_image / 1_000_000),
        None => Ok(default_ms),
    };
    let img = image.cloned().unwrap_or_default();
    let check = crate::runtime::record::HealthCheck {
        argv,
        interval_ms: ms(
            "--health-interval",
            &a.health_interval,
            img.interval,
            30_000,
        )?,
        timeout_ms: ms("--health-timeout", &a.health_timeout, img.timeout, 30_000)?,
        start_period_ms: ms(
            "--health-start-period",
            &a.health_start_period,
            img.start_period,
            0,
        )?,
        retries: a
            .health_retries
            .or((img.retries > 0).then_some(img.retries))
            .unwrap_or(3),
    };
    if check.interval_ms < 1 || check.timeout_ms < 1 {
        bail!("--health-interval and --health-timeout must be at least 1ms");
    }
    Ok(Some(check))
}

/// The search path Docker gives a process whose image sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The command line as Docker builds it: `--entrypoint` replaces the image's
/// entrypoint and drops its default command; arguments replace the default command.
fn command_line(image: &ImageConfig, entrypoint: Option<&str>, args: &[String]) -> Vec<String> {
    let (ep, default_cmd): (Vec<String>, &[String]) = match entrypoint {
        Some("") => (Vec::new(), &[]),
        Some(e) => (vec![e.to_string()], &[]),
        None => (image.entrypoint.clone(), &image.cmd),
    };
    let cmd = if args.is_empty() { default_cmd } else { args };
    ep.into_iter().chain(cmd.iter().cloned()).collect()
}

/// The image's environment with `overrides` applied (a later KEY replaces an
/// earlier one in place), and PATH defaulted as Docker does.
fn merged_env(image_env: &[String], overrides: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = image_env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }
    for (k, v) in overrides {
        match env.iter_mut().find(|(ek, _)| *ek == k) {
            Some(slot) => slot.1 = v,
            None => env.push((k, v)),
        }
    }
    env
}

/// Refuses a working directory that is not absolute, as Docker does.
pub fn check_workdir(w: &str) -> anyhow::Result<()> {
    if !w.starts_with('/') {
        bail!("the working directory {w:?} is invalid, it needs to be an absolute path");
    }
    Ok(())
}

/// Records a new box as `a` asks (pulling its image when missing) and makes
/// its layer; the box is "created", not started.
pub fn create_box(a: &RunArgs) -> anyhow::Result<(Store, BoxConfig)> {
    // Mount and security flags are checked before anything is pulled or made.
    let requests = mount_requests(a)?;
    let security = security_config(a)?;
    // A root directory, or an image whose unpacked tree each box gets a copy of.
    let (rootfs, image, defaults, args) = match &a.rootfs {
        Some(dir) => {
            let dir = dir
                .canonicalize()
                .with_context(|| format!("root filesystem {} not found", dir.display()))?;
            if !dir.is_dir() {
                bail!("root filesystem {} is not a directory", dir.display());
            }
            (dir, None, ImageConfig::default(), a.args.clone())
        }
        None => match a.args.split_first() {
            Some((name, rest)) => {
                let reference = Reference::parse(name)?;
                let images = ImageStore::open(&crate::paths::state_dir())?;
                let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
                let prepared = images.ensure_rootfs(&reference, true, progress)?;
                (
                    prepared.rootfs,
                    Some(prepared.id),
                    prepared.config,
                    rest.to_vec(),
                )
            }
            None => bail!("run needs an IMAGE (or --rootfs DIR) and, for a directory, a command"),
        },
    };
    let argv = command_line(&defaults, a.entrypoint.as_deref(), &args);
    if argv.is_empty() {
        bail!("no command given, and the image has no default command");
    }
    let memory = parse_size(&a.memory)
        .with_context(|| format!("--memory {}: expected a size such as 512m or 1g", a.memory))?;
    // Refused here, before a box exists, rather than by its VMM.
    crate::vmm::memory::check_size(memory).with_context(|| format!("--memory {}", a.memory))?;
    crate::vmm::vm::check_cpus(a.cpus).context("--cpus")?;
    if let Some(w) = &a.workdir {
        check_workdir(w)?;
    }
    let mut overrides = Vec::new();
    for f in &a.env_file {
        overrides.extend(read_env_file(f)?);
    }
    for e in &a.env {
        overrides.extend(env_flag(e)?);
    }
    let mut env = merged_env(&defaults.env, overrides);
    if a.tty {
        env.push((
            "TERM".into(),
            std::env::var("TERM").unwrap_or_else(|_| "xterm".into()),
        ));
    }
    let log = crate::runtime::logs::parse_log_opts(&a.log_driver, &a.log_opt)?;
    let restart = RestartPolicy::parse(&a.restart).map_err(anyhow::Error::msg)?;
    if a.rm && restart != RestartPolicy::No {
        bail!("conflicting options: --restart and --rm");
    }
    let kernel = crate::paths::kernel(a.kernel.as_deref());
    crate::vmm::boot::x86_64::check_kernel(&kernel)?;

    let network = network_config(a, &defaults)?;

    let store = Store::open(&crate::paths::state_dir())?;
    let from = volumes_from(&store, &a.volumes_from)?;
    let image_volumes: Vec<String> = defaults.volumes.keys().cloned().collect();
    let planned = volume::spec::plan(requests, from, &image_volumes)?;
    let mut cfg = BoxConfig {
        id: String::new(),
        name: a.name.clone().unwrap_or_default(),
        rootfs: rootfs.to_string_lossy().into_owned(),
        layer: None,
        image_name: image.as_ref().and(a.args.first().cloned()),
        image,
        labels: labels(&a.label, &a.label_file)?,
        restart,
        health: health_check(a, defaults.healthcheck.as_ref())?,
        argv,
        env,
        workdir: a
            .workdir
            .clone()
            .or_else(|| Some(defaults.working_dir.clone()).filter(|w| !w.is_empty()))
            .unwrap_or_else(|| "/".into()),
        user: a
            .user
            .clone()
            .or_else(|| Some(defaults.user.clone()).filter(|u| !u.is_empty())),
        hostname: String::new(),
        tty: a.tty,
        stdin: a.interactive,
        cpus: a.cpus,
        memory,
        kernel: kernel.to_string_lossy().into_owned(),
        auto_remove: a.rm,
        created: now(),
        network,
        mounts: Vec::new(),
        security,
    };
    // The volumes' lock is held until the record names them: until then no
    // `volume rm` or prune may take one away.
    let vols = Volumes::open(store.root())?;
    let vlock = vols.lock()?;
    let prepared = volume::prepare(&vols, &vlock, planned, Some(&rootfs))?;
    cfg.mounts = prepared.mounts;
    let created = if cfg.network.mode == NetworkMode::Bridge {
        create_on_network(a, &store, &mut cfg)
    } else {
        store.create(&mut cfg).map(drop).map_err(Into::into)
    };
    if let Err(e) = created {
        volume::undo(&vols, &vlock, &prepared.made);
        return Err(e);
    }
    drop(vlock);
    if let Err(e) = crate::runtime::logs::save_config(&store.box_dir(&cfg.id), &log) {
        discard(&store, &cfg);
        return Err(e.into());
    }
    if cfg.image.is_some() {
        // The image's tree is shared by all its boxes: this box writes to its own layer.
        match crate::runtime::rootfs::create_layer(&store.box_dir(&cfg.id)) {
            Ok(layer) => cfg.layer = Some(layer.to_string_lossy().into_owned()),
            Err(e) => {
                discard(&store, &cfg);
                bail!("cannot make the box's layer: {e}");
            }
        }
    }
    // Docker's default host name is the short ID; it is known only now.
    cfg.hostname = a
        .hostname
        .clone()
        .unwrap_or_else(|| cfg.id[..12].to_string());
    crate::runtime::store::write_json_atomic(
        &store
            .box_dir(&cfg.id)
            .join(crate::runtime::store::CONFIG_FILE),
        &cfg,
    )?;
    crate::runtime::events::emit(store.root(), "create", &cfg, &[]);
    Ok((store, cfg))
}

/// Removes a box that could not be made whole, with the volumes made for it.
fn discard(store: &Store, cfg: &BoxConfig) {
    let _ = store.remove(&cfg.id);
    let _ = volume::remove_box_volumes(store, cfg);
}

/// `-v`, `--mount` and `--tmpfs`, read by Docker's rules (nothing is made).
fn mount_requests(a: &RunArgs) -> anyhow::Result<Vec<volume::spec::Request>> {
    let mut out = Vec::new();
    for v in &a.volume {
        out.push(volume::spec::parse_volume(v)?);
    }
    for m in &a.mount {
        out.push(volume::spec::parse_mount(m)?);
    }
    for t in &a.tmpfs {
        out.push(volume::spec::parse_tmpfs(t)?);
    }
    Ok(out)
}

/// `--cap-add`, `--cap-drop`, `--privileged`, `--read-only`,
/// `--security-opt`, `--init`, `--group-add`, `--sysctl`, `--device`.
fn security_config(a: &RunArgs) -> anyhow::Result<SecurityConfig> {
    Ok(SecurityConfig::from_flags(&SecurityFlags {
        cap_add: &a.cap_add,
        cap_drop: &a.cap_drop,
        privileged: a.privileged,
        read_only: a.read_only,
        security_opt: &a.security_opt,
        init: a.init,
        group_add: &a.group_add,
        sysctl: &a.sysctl,
        device: &a.device,
    })?)
}

/// `--volumes-from`: each box's mounts, and whether they are read-only here.
fn volumes_from(
    store: &Store,
    specs: &[String],
) -> anyhow::Result<Vec<(Vec<volume::Mount>, Option<bool>)>> {
    let mut out = Vec::new();
    for s in specs {
        let (name, read_only) = volume::spec::parse_volumes_from(s)?;
        let id = store.resolve(&name)?;
        out.push((store.config(&id)?.mounts, read_only));
    }
    Ok(out)
}

/// `--network`, `-p`, `-P`, `--dns`, `--dns-search`, `--add-host`, with the
/// host ports chosen and checked free.
fn network_config(a: &RunArgs, image: &ImageConfig) -> anyhow::Result<NetworkConfig> {
    let mode = match a.network.as_str() {
        "passt" | "default" => NetworkMode::Passt,
        "none" => NetworkMode::None,
        "host" => bail!("network host is not supported: use passt, bridge, a user network or none"),
        _ => NetworkMode::Bridge,
    };
    let user_network = mode == NetworkMode::Bridge && a.network != bridge::DEFAULT_NETWORK;
    if a.ip.is_some() && !user_network {
        bail!("user specified IP address is supported on user defined networks only");
    }
    if !a.network_alias.is_empty() && !user_network {
        bail!("network-scoped alias is supported only for boxes in user defined networks");
    }
    let mac_address = a.mac_address.as_deref().map(parse_mac).transpose()?;
    if mac_address.is_some() && mode != NetworkMode::Bridge {
        bail!("--mac-address is supported on bridge networks only");
    }
    let mut ports = Vec::new();
    for spec in &a.publish {
        ports.extend(ports::parse_publish(spec).map_err(anyhow::Error::msg)?);
    }
    if a.publish_all {
        let exposed: Vec<String> = image.exposed_ports.keys().cloned().collect();
        ports.extend(ports::exposed_to_publish(&exposed).map_err(anyhow::Error::msg)?);
    }
    if mode == NetworkMode::None && !ports.is_empty() {
        bail!("conflicting options: port publishing and the container type network mode");
    }
    if mode == NetworkMode::Bridge {
        if let Some(m) = ports
            .iter()
            .find(|m| m.host_ip.is_some_and(|ip| ip.is_ipv6()))
        {
            bail!(
                "cannot publish on {}: bridge networks are IPv4 only",
                ports::host_address(m)
            );
        }
    }
    ports::assign_host_ports(&mut ports).context("cannot pick host ports")?;
    ports::check_free(&ports).map_err(anyhow::Error::msg)?;
    for d in &a.dns {
        d.parse::<std::net::IpAddr>()
            .map_err(|_| anyhow::anyhow!("{d} is not an ip address"))?;
    }
    let mut extra_hosts = Vec::new();
    for h in &a.add_host {
        let Some((name, ip)) = h
            .split_once(':')
            .filter(|(n, i)| !n.is_empty() && !i.is_empty())
        else {
            bail!("bad format for add-host: {h:?}");
        };
        // The host's address depends on the network: filled in as the box starts.
        let ip = if ip == "host-gateway" {
            ip.to_string()
        } else {
            ip.parse::<std::net::IpAddr>()
                .map_err(|_| anyhow::anyhow!("invalid IP address in add-host: {ip:?}"))?
                .to_string()
        };
        extra_hosts.push((name.to_string(), ip));
    }
    Ok(NetworkConfig {
        mode,
        ports,
        dns: a.dns.clone(),
        dns_search: a.dns_search.clone(),
        extra_hosts,
        attachment: None,
        mac_address,
    })
}

/// `--mac-address`, written back as `format_mac` writes it.
fn parse_mac(s: &str) -> anyhow::Result<String> {
    match crate::net::parse_mac(s) {
        Some(m) if m[0] & 1 == 1 => {
            bail!("{s} is a multicast MAC address: a box needs a unicast one")
        }
        Some(m) => Ok(crate::net::format_mac(m)),
        None => bail!("{s} is not a valid mac address"),
    }
}

/// Gives the box its address on the bridge network it names, holding the
/// networks' lock until its record is written, so no two boxes get one
/// address.
fn create_on_network(a: &RunArgs, store: &Store, cfg: &mut BoxConfig) -> anyhow::Result<()> {
    let nets = Networks::open(store.root())?;
    let lock = nets.lock()?;
    let net = nets.find(&lock, &a.network)?;
    if !rustix::process::geteuid().is_root() {
        return Err(bridge::BridgeError::NeedRoot.into());
    }
    let want = a.ip.as_deref().map(bridge::parse_ip).transpose()?;
    let boxes: Vec<BoxConfig> = store.list()?.into_iter().map(|(c, _)| c).collect();
    let ip = bridge::allocate(&net, &boxes, want)?;
    cfg.network.attachment = Some(net.attachment(ip, a.network_alias.clone()));
    store.create(cfg)?;
    Ok(())
}

pub fn run(a: RunArgs) -> anyhow::Result<i32> {
    let (store, cfg) = create_box(&a)?;
    if let Err(e) = lifecycle::start(&store, &cfg.id, !a.detach) {
        if cfg.auto_remove {
            let _ = lifecycle::remove(&store, &cfg.id, true);
        }
        return Err(e.into());
    }
    if a.detach {
        println!("{}", cfg.id);
        return Ok(0);
    }
    super::attach::attach_to(&store, &cfg.id, a.interactive, a.tty)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: v(&["/docker-entrypoint.sh"]),
            cmd: v(&["nginx", "-g", "daemon off;"]),
            env: v(&["PATH=/usr/sbin:/usr/bin", "NGINX_VERSION=1.27"]),
            ..ImageConfig::default()
        }
    }

    #[test]
    fn the_image_command_runs_when_no_arguments_are_given() {
        assert_eq!(
            command_line(&image(), None, &[]),
            v(&["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"])
        );
    }

    #[test]
    fn arguments_replace_the_default_command_but_keep_the_entrypoint() {
        assert_eq!(
            command_line(&image(), None, &v(&["sh"])),
            v(&["/docker-entrypoint.sh", "sh"])
        );
    }

    #[test]
    fn an_entrypoint_flag_replaces_the_entrypoint_and_drops_the_default_command() {
        assert_eq!(
            command_line(&image(), Some("/bin/sh"), &[]),
            v(&["/bin/sh"])
        );
        assert_eq!(
            command_line(&image(), Some("/bin/sh"), &v(&["-c", "true"])),
            v(&["/bin/sh", "-c", "true"])
        );
        assert_eq!(command_line(&image(), Some(""), &v(&["ls"])), v(&["ls"]));
    }

    fn args(extra: &[&str]) -> RunArgs {
        let mut all = vec!["--rootfs", "/"];
        all.extend_from_slice(extra);
        all.push("true");
        RunArgs::from_args(&["run"], &all).unwrap()
    }

    #[test]
    fn health_checks_come_from_the_image_and_flags_override_them() {
        use crate::oci::manifest::ImageHealthcheck;
        let image = ImageHealthcheck {
            test: v(&["CMD-SHELL", "curl -f localhost"]),
            interval: 5_000_000_000,
            retries: 4,
            ..ImageHealthcheck::default()
        };
        let h = health_check(&args(&[]), Some(&image)).unwrap().unwrap();
        assert_eq!(h.argv, v(&["/bin/sh", "-c", "curl -f localhost"]));
        assert_eq!((h.interval_ms, h.timeout_ms, h.retries), (5000, 30_000, 4));
        let h = health_check(&args(&["--health-interval", "1m30s"]), Some(&image))
            .unwrap()
            .unwrap();
        assert_eq!(h.interval_ms, 90_000);
        let cmd = ImageHealthcheck {
            test: v(&["CMD", "/bin/check", "-q"]),
            ..ImageHealthcheck::default()
        };
        let h = health_check(&args(&[]), Some(&cmd)).unwrap().unwrap();
        assert_eq!(h.argv, v(&["/bin/check", "-q"]));
        let none = ImageHealthcheck {
            test: v(&["NONE"]),
            ..ImageHealthcheck::default()
        };
        assert_eq!(health_check(&args(&[]), Some(&none)).unwrap(), None);
        assert_eq!(
            health_check(&args(&["--no-healthcheck"]), Some(&image)).unwrap(),
            None
        );
        assert!(health_check(&args(&["--no-healthcheck", "--health-retries", "1"]), None).is_err());
        assert!(health_check(
            &args(&["--health-cmd", "x", "--health-timeout", "-1s"]),
            None
        )
        .is_err());
        assert_eq!(health_check(&args(&[]), None).unwrap(), None);
    }

    #[test]
    fn cpus_are_whole_vcpus() {
        assert_eq!(parse_cpus("2"), Ok(2));
        assert_eq!(parse_cpus("2.0"), Ok(2));
        assert_eq!(parse_cpus("3."), Ok(3));
        assert!(parse_cpus("1.5").unwrap_err().contains("whole vCPUs"));
        assert!(parse_cpus("0.5").unwrap_err().contains("whole vCPUs"));
        assert!(parse_cpus("two").is_err());
        assert!(parse_cpus("").is_err());
        assert!(parse_cpus("-1").is_err());
    }

    #[test]
    fn env_entries_follow_docker() {
        assert_eq!(env_entry("A=b=c"), Ok(Some(("A".into(), "b=c".into()))));
        assert_eq!(env_entry("A="), Ok(Some(("A".into(), String::new()))));
        let path = std::env::var("PATH").unwrap();
        assert_eq!(env_entry("PATH"), Ok(Some(("PATH".into(), path))));
        assert_eq!(env_entry("A3S_NOT_SET_ANYWHERE_9F2C"), Ok(None));
        assert_eq!(env_entry("=x"), Err(()));
        assert_eq!(env_entry(""), Err(()));
    }

    #[test]
    fn flags_override_image_environment_in_place_and_path_is_defaulted() {
        let env = merged_env(
            &image().env,
            vec![
                ("NGINX_VERSION".into(), "2".into()),
                ("EXTRA".into(), "x".into()),
            ],
        );
        assert_eq!(
            env,
            vec![
                ("PATH".to_string(), "/usr/sbin:/usr/bin".to_string()),
                ("NGINX_VERSION".to_string(), "2".to_string()),
                ("EXTRA".to_string(), "x".to_string()),
            ]
        );
        let env = merged_env(&[], vec![]);
        assert_eq!(env, vec![("PATH".to_string(), DEFAULT_PATH.to_string())]);
    }
}
