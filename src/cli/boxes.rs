//! The box lifecycle commands: `create`, `start`, `restart`, `rm`, `rename`,
//! `wait`, `ps` and `inspect`, with Docker's flags, columns and exit codes.
//! They parse and print; `runtime::lifecycle` does the work.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use argh::{EarlyExit, FromArgs, SubCommand};
use serde_json::{json, Value};

use super::attach::each;
use super::image::human_size;
use super::run::RunArgs;
use super::template::{parse_format, parse_format_or, Format};
use crate::oci::store::ImageStore;
use crate::runtime::logs::rfc3339;
use crate::runtime::record::now;
use crate::runtime::{lifecycle, BoxConfig, BoxState, Status, Store};

/// `create`: the flags of `run`, under another name.
pub struct CreateArgs(pub RunArgs);

impl FromArgs for CreateArgs {
    fn from_args(command_name: &[&str], args: &[&str]) -> Result<Self, EarlyExit> {
        RunArgs::from_args(command_name, args).map(CreateArgs)
    }
}

impl SubCommand for CreateArgs {
    const COMMAND: &'static argh::CommandInfo = &argh::CommandInfo {
        name: "create",
        short: &'\0',
        description: "Create a new box without starting it (the flags of run).",
    };
}

/// Start one or more boxes.
#[derive(FromArgs)]
#[argh(subcommand, name = "start")]
pub struct StartArgs {
    /// attach to the box's output (and exit with its code)
    #[argh(switch, short = 'a')]
    attach: bool,
    /// attach the box's stdin
    #[argh(switch, short = 'i')]
    interactive: bool,
    /// boxes (names or IDs)
    #[argh(positional)]
    boxes: Vec<String>,
}

/// Restart one or more boxes.
#[derive(FromArgs)]
#[argh(subcommand, name = "restart")]
pub struct RestartArgs {
    /// seconds to wait for the box to stop before powering it off (default 10)
    #[argh(option, short = 't', default = "10")]
    time: u64,
    /// boxes (names or IDs)
    #[argh(positional)]
    boxes: Vec<String>,
}

/// Remove one or more boxes.
#[derive(FromArgs)]
#[argh(subcommand, name = "rm")]
pub struct RmArgs {
    /// kill a running box first
    #[argh(switch, short = 'f')]
    force: bool,
    /// also remove the box's anonymous volumes
    #[argh(switch, short = 'v')]
    volumes: bool,
    /// boxes (names or IDs)
    #[argh(positional)]
    boxes: Vec<String>,
}

/// Rename a box.
#[derive(FromArgs)]
#[argh(subcommand, name = "rename")]
pub struct RenameArgs {
    /// the box (name or ID)
    #[argh(positional, arg_name = "box")]
    r#box: String,
    /// its new name
    #[argh(positional)]
    name: String,
}

/// List a box's published ports, or where one of its ports is published.
#[derive(FromArgs)]
#[argh(subcommand, name = "port")]
pub struct PortArgs {
    /// the box (name or ID)
    #[argh(positional, arg_name = "box")]
    r#box: String,
    /// a port of the box, PORT[/tcp|/udp]
    #[argh(positional)]
    port: Option<String>,
}

/// Wait until boxes stop, then print their exit codes.
#[derive(FromArgs)]
#[argh(subcommand, name = "wait")]
pub struct WaitArgs {
    /// boxes (names or IDs)
    #[argh(positional)]
    boxes: Vec<String>,
}

/// Keep boxes running by their restart policies: at start, bring up every
/// `always` box and every `unless-stopped` box not stopped by hand (as after a
/// reboot); then, every few seconds, boxes whose VMM died.
#[derive(FromArgs)]
#[argh(subcommand, name = "monitor")]
pub struct MonitorArgs {
    /// make the first pass only, then exit
    #[argh(switch)]
    once: bool,
    /// seconds between passes (default 2)
    #[argh(option, default = "2")]
    interval: u64,
}

/// List boxes.
#[derive(FromArgs)]
#[argh(subcommand, name = "ps")]
pub struct PsArgs {
    /// show every box (default: running ones)
    #[argh(switch, short = 'a')]
    all: bool,
    /// show only IDs
    #[argh(switch, short = 'q')]
    quiet: bool,
    /// show the N most recently created boxes (any state)
    #[argh(option, short = 'n', default = "-1")]
    last: i64,
    /// show the most recently created box (any state)
    #[argh(switch, short = 'l')]
    latest: bool,
    /// show the size of each box's layer
    #[argh(switch, short = 's')]
    size: bool,
    /// do not truncate IDs and commands
    #[argh(switch)]
    no_trunc: bool,
    /// filter: status=, name=, label=KEY[=VALUE], ancestor=, id=, exited=, health= (repeatable)
    #[argh(option, short = 'f')]
    filter: Vec<String>,
    /// a Go template, json, or table [TEMPLATE]
    #[argh(option)]
    format: Option<String>,
}

/// Show low-level information on boxes or images, as JSON.
#[derive(FromArgs)]
#[argh(subcommand, name = "inspect")]
pub struct InspectArgs {
    /// a Go template to render for each object
    #[argh(option, short = 'f')]
    format: Option<String>,
    /// what to look for: box or image (default: a box, else an image)
    #[argh(option, long = "type")]
    kind: Option<String>,
    /// boxes or images (names or IDs)
    #[argh(positional, greedy)]
    objects: Vec<String>,
}

fn open() -> anyhow::Result<Store> {
    Ok(Store::open(&crate::paths::state_dir())?)
}

pub fn create(a: CreateArgs) -> anyhow::Result<i32> {
    if a.0.detach {
        bail!("create does not take -d: a created box is not started (use start)");
    }
    let (_, cfg) = super::run::create_box(&a.0)?;
    println!("{}", cfg.id);
    Ok(0)
}

pub fn start(a: StartArgs) -> anyhow::Result<i32> {
    if a.attach || a.interactive {
        let [one] = a.boxes.as_slice() else {
            bail!("you cannot start and attach multiple boxes at once");
        };
        let store = open()?;
        let id = store.resolve(one)?;
        let cfg = store.config(&id)?;
        lifecycle::start(&store, &id, true)?;
        let stdin = a.interactive && cfg.stdin;
        return super::attach::attach_to(&store, &id, stdin, cfg.tty);
    }
    each(&a.boxes, |store, id| {
        lifecycle::start(store, id, false)?;
        Ok(())
    })
}

pub fn restart(a: RestartArgs) -> anyhow::Result<i32> {
    each(&a.boxes, |store, id| {
        lifecycle::stop(store, id, a.time)?;
        lifecycle::start(store, id, false)?;
        crate::runtime::events::emit_box(store, "restart", id, &[]);
        Ok(())
    })
}

pub fn rm(a: RmArgs) -> anyhow::Result<i32> {
    each(&a.boxes, |store, id| {
        let cfg = store.config(id).ok();
        lifecycle::remove(store, id, a.force)?;
        match cfg {
            Some(cfg) if a.volumes => Ok(crate::volume::remove_box_volumes(store, &cfg)?),
            _ => Ok(()),
        }
    })
}

pub fn monitor(a: MonitorArgs) -> anyhow::Result<i32> {
    let store = open()?;
    let mut first = true;
    loop {
        for (name, started) in lifecycle::resurrect(&store, first) {
            match started {
                Ok(()) => println!("started {name}"),
                Err(e) => eprintln!("a3s-box: monitor: {name}: {e}"),
            }
        }
        if a.once {
            return Ok(0);
        }
        first = false;
        std::thread::sleep(Duration::from_secs(a.interval.max(1)));
    }
}

pub fn rename(a: RenameArgs) -> anyhow::Result<i32> {
    let store = open()?;
    let id = store.resolve(&a.r#box)?;
    lifecycle::rename(&store, &id, &a.name)?;
    Ok(0)
}

pub fn port(a: PortArgs) -> anyhow::Result<i32> {
    use crate::net::ports::Proto;
    let store = open()?;
    let id = store.resolve(&a.r#box)?;
    let cfg = store.config(&id)?;
    let st = store.live_state(&id)?;
    // As in Docker, a box that is not running publishes nothing.
    let running = matches!(st.status, Status::Running | Status::Paused);
    let maps: Vec<_> = cfg.network.ports.iter().filter(|_| running).collect();
    let host = crate::net::ports::host_address;
    let Some(want) = &a.port else {
        for m in maps {
            println!("{}/{} -> {}", m.box_port, m.proto.name(), host(m));
        }
        return Ok(0);
    };
    let (num, proto) = match want.split_once('/') {
        Some((n, "tcp")) => (n, Proto::Tcp),
        Some((n, "udp")) => (n, Proto::Udp),
        None => (want.as_str(), Proto::Tcp),
        Some(_) => bail!("invalid port: {want}"),
    };
    let num: u16 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid port: {want}"))?;
    let found: Vec<_> = maps
        .into_iter()
        .filter(|m| m.box_port == num && m.proto == proto)
        .collect();
    if found.is_empty() {
        bail!(
            "No public port '{num}/{}' published for {}",
            proto.name(),
            a.r#box
        );
    }
    for m in found {
        println!("{}", host(m));
    }
    Ok(0)
}

pub fn wait(a: WaitArgs) -> anyhow::Result<i32> {
    let store = open()?;
    let mut failed = false;
    for b in &a.boxes {
        match store.resolve(b).and_then(|id| lifecycle::wait(&store, &id)) {
            Ok(code) => println!("{code}"),
            Err(e) => {
                eprintln!("a3s-box: {b}: {e}");
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

/// Docker's `HumanDuration`: `Less than a second`, `5 seconds`, `About a minute` …
pub fn human_duration(secs: u64) -> String {
    let hours = (secs + 1800) / 3600;
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{secs} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", secs / 60),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", secs / 3600 / 24 / 365),
    }
}

fn time_of(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A time as Docker's API gives it; Go's zero time when there is none.
fn api_time(secs: Option<u64>) -> String {
    secs.map_or_else(|| "0001-01-01T00:00:00Z".into(), |s| rfc3339(time_of(s)))
}

/// The state word Docker uses (`created`, `running`, `exited`).
fn state_word(st: &BoxState) -> &'static str {
    match st.status {
        Status::Created if st.pid.is_some() => "running",
        Status::Created => "created",
        Status::Running => "running",
        Status::Paused => "paused",
        Status::Restarting => "restarting",
        Status::Exited => "exited",
    }
}

/// `ps`'s STATUS: `Created`, `Up 5 minutes`, `Exited (0) 3 seconds ago`.
fn status_text(st: &BoxState, now: u64) -> String {
    match state_word(st) {
        "created" => "Created".into(),
        "running" => format!(
            "Up {}{}",
            human_duration(now.saturating_sub(st.started.unwrap_or(now))),
            match st.health.as_ref().map(|h| h.status.as_str()) {
                Some("starting") => " (health: starting)",
                Some("healthy") => " (healthy)",
                Some("unhealthy") => " (unhealthy)",
                _ => "",
            }
        ),
        "restarting" => format!(
            "Restarting ({}) {} ago",
            st.exit_code.unwrap_or(0),
            human_duration(now.saturating_sub(st.finished.unwrap_or(now)))
        ),
        "paused" => format!(
            "Up {} (Paused)",
            human_duration(now.saturating_sub(st.started.unwrap_or(now)))
        ),
        _ => format!(
            "Exited ({}) {} ago",
            st.exit_code.unwrap_or(0),
            human_duration(now.saturating_sub(st.finished.unwrap_or(now)))
        ),
    }
}

/// Docker's shell-ish rendering of a command: words joined by spaces.
fn command_text(argv: &[String], trunc: bool) -> String {
    let cmd = argv.join(" ");
    let cmd = if trunc && cmd.chars().count() > 20 {
        format!("{}…", cmd.chars().take(19).collect::<String>())
    } else {
        cmd
    };
    serde_json::to_string(&cmd).expect("strings serialise")
}

/// Bytes of the files a box wrote (its layer's upper directory).
fn layer_size(cfg: &BoxConfig) -> u64 {
    fn walk(p: &Path) -> u64 {
        let Ok(rd) = std::fs::read_dir(p) else {
            return 0;
        };
        rd.flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => walk(&e.path()),
                Ok(_) => e.metadata().map_or(0, |m| m.len()),
                Err(_) => 0,
            })
            .sum()
    }
    cfg.layer
        .as_ref()
        .map_or(0, |l| walk(&Path::new(l).join("upper")))
}

/// One box as `ps` templates see it (Docker's field names).
fn ps_item(cfg: &BoxConfig, st: &BoxState, trunc: bool, size: Option<String>) -> Value {
    let now = now();
    let id = if trunc { &cfg.id[..12] } else { &cfg.id[..] };
    let labels: Vec<String> = cfg.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    json!({
        "ID": id,
        "Image": image_text(cfg),
        "Command": command_text(&cfg.argv, trunc),
        "CreatedAt": created_at(cfg.created),
        "RunningFor": format!("{} ago", human_duration(now.saturating_sub(cfg.created))),
        // Docker lists published ports only while the box runs.
        "Ports": if st.status == Status::Running {
            crate::net::ports::ps_ports(&cfg.network.ports)
        } else {
            String::new()
        },
        "State": state_word(st),
        "Status": status_text(st, now),
        "Size": size.unwrap_or_default(),
        "Names": cfg.name,
        "Labels": labels.join(","),
        "Mounts": cfg.mounts.iter().filter(|m| m.is_share()).map(|m| m.source.as_str())
            .collect::<Vec<_>>().join(","),
        "Networks": crate::net::network_name(cfg),
    })
}

fn image_text(cfg: &BoxConfig) -> String {
    match (&cfg.image_name, &cfg.image) {
        (Some(n), _) => n.clone(),
        (None, Some(id)) => id.trim_start_matches("sha256:")[..12].to_string(),
        (None, None) => cfg.rootfs.clone(),
    }
}

/// `2026-12-07 10:00:00 +0000 UTC`, as `ps`'s CreatedAt.
fn created_at(secs: u64) -> String {
    let t = rfc3339(time_of(secs));
    format!("{} {} +0000 UTC", &t[..10], &t[11..19])
}

/// One `--filter KEY=VALUE` of `ps`.
enum Filter {
    Status(String),
    Name(String),
    Label(String, Option<String>),
    Ancestor(String),
    Id(String),
    Exited(i32),
    Health(String),
}

fn parse_filter(f: &str) -> anyhow::Result<Filter> {
    let Some((k, v)) = f.split_once('=') else {
        bail!("bad format of filter (expected name=value): {f}");
    };
    Ok(match k {
        "status" => {
            const KNOWN: [&str; 7] = [
                "created",
                "restarting",
                "running",
                "removing",
                "paused",
                "exited",
                "dead",
            ];
            if !KNOWN.contains(&v) {
                bail!(
                    "invalid filter 'status={v}': expected one of {}",
                    KNOWN.join(", ")
                );
            }
            Filter::Status(v.into())
        }
        "name" => Filter::Name(v.into()),
        "label" => match v.split_once('=') {
            Some((lk, lv)) => Filter::Label(lk.into(), Some(lv.into())),
            None => Filter::Label(v.into(), None),
        },
        "ancestor" => Filter::Ancestor(v.into()),
        "id" => Filter::Id(v.into()),
        "health" => match v {
            "starting" | "healthy" | "unhealthy" | "none" => Filter::Health(v.into()),
            _ => {
                bail!("invalid filter 'health={v}': expected starting, healthy, unhealthy or none")
            }
        },
        "exited" => match v.parse() {
            Ok(n) => Filter::Exited(n),
            Err(_) => bail!("invalid filter 'exited={v}': expected an exit code"),
        },
        _ => bail!("invalid filter '{k}'"),
    })
}

/// Docker's name filter is a regular expression; this takes its common
/// forms: a substring, anchored with `^` and `$`.
fn name_matches(pattern: &str, name: &str) -> bool {
    let (start, p) = match pattern.strip_prefix('^') {
        Some(p) => (true, p),
        None => (false, pattern),
    };
    let (end, p) = match p.strip_suffix('$') {
        Some(p) => (true, p),
        None => (false, p),
    };
    match (start, end) {
        (true, true) => name == p,
        (true, false) => name.starts_with(p),
        (false, true) => name.ends_with(p),
        (false, false) => name.contains(p),
    }
}

/// Whether a box passes every filter; filters with the same key are
/// alternatives, as in Docker.
fn passes(filters: &[Filter], cfg: &BoxConfig, st: &BoxState, images: &ImageStore) -> bool {
    let ancestor = |want: &str| {
        cfg.image_name.as_deref() == Some(want)
            || images.resolve(want).is_ok_and(|rec| {
                cfg.image.as_deref() == Some(rec.id.as_str())
                    || cfg.image.as_deref() == Some(&rec.id.to_string())
            })
    };
    let kinds = |f: &Filter| std::mem::discriminant(f);
    let mut seen: Vec<std::mem::Discriminant<Filter>> = filters.iter().map(kinds).collect();
    seen.dedup();
    seen.iter().all(|kind| {
        filters
            .iter()
            .filter(|f| kinds(f) == *kind)
            .any(|f| match f {
                Filter::Status(s) => state_word(st) == s,
                Filter::Name(n) => name_matches(n, &cfg.name),
                Filter::Label(k, v) => cfg
                    .labels
                    .get(k)
                    .is_some_and(|have| v.as_ref().is_none_or(|v| v == have)),
                Filter::Ancestor(a) => ancestor(a),
                Filter::Id(p) => cfg.id.starts_with(p.as_str()),
                Filter::Exited(c) => st.status == Status::Exited && st.exit_code == Some(*c),
                Filter::Health(h) => st.health.as_ref().map_or("none", |x| x.status.as_str()) == h,
            })
    })
}

const PS_ROW: &str =
    "{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";
const PS_HEADERS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("RunningFor", "CREATED"),
    ("Status", "STATUS"),
    ("Ports", "PORTS"),
    ("Names", "NAMES"),
    ("Size", "SIZE"),
    ("CreatedAt", "CREATED AT"),
];

pub fn ps(a: PsArgs) -> anyhow::Result<i32> {
    let filters = a
        .filter
        .iter()
        .map(|f| parse_filter(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let row = if a.size {
        format!("{PS_ROW}\t{{{{.Size}}}}")
    } else {
        PS_ROW.to_string()
    };
    let format = match &a.format {
        _ if a.quiet => None,
        Some(f) => Some(parse_format_or(f, &row)?),
        None => Some(parse_format_or("", &row)?),
    };
    let store = open()?;
    let images = ImageStore::open(&crate::paths::state_dir())?;
    let mut boxes = store.list()?;
    // Newest first, as Docker lists them.
    boxes.sort_by(|x, y| y.0.created.cmp(&x.0.created).then(y.0.id.cmp(&x.0.id)));
    let limit = if a.latest {
        Some(1)
    } else {
        usize::try_from(a.last).ok().filter(|&n| n > 0)
    };
    let all = a.all || limit.is_some() || !filters.is_empty();
    let mut items = Vec::new();
    let mut ids = Vec::new();
    for (cfg, st) in boxes.iter().take(limit.unwrap_or(usize::MAX)) {
        if !all && !matches!(state_word(st), "running" | "paused") {
            continue;
        }
        if !passes(&filters, cfg, st, &images) {
            continue;
        }
        let size = a.size.then(|| {
            let own = layer_size(cfg);
            let image = cfg
                .image
                .as_deref()
                .and_then(|i| images.resolve(i).ok())
                .map_or(0, |r| r.size());
            format!("{} (virtual {})", human_size(own), human_size(own + image))
        });
        ids.push(if a.no_trunc {
            cfg.id.clone()
        } else {
            cfg.id[..12].to_string()
        });
        items.push(ps_item(cfg, st, !a.no_trunc, size));
    }
    match format {
        None => {
            for id in ids {
                println!("{id}");
            }
        }
        Some(f) => print!("{}", f.render(&items, PS_HEADERS)?),
    }
    Ok(0)
}

/// One box as `inspect` shows it: Docker's field names and shapes.
fn inspect_box(store: &Store, id: &str) -> anyhow::Result<Value> {
    let cfg = store.config(id)?;
    let st = store.live_state(id)?;
    let dir = store.box_dir(id);
    let running = matches!(state_word(&st), "running" | "paused");
    let (path, args) = cfg
        .argv
        .split_first()
        .map_or(("", &[][..]), |(p, a)| (p, a));
    let log = crate::runtime::logs::load_config(&dir).unwrap_or_default();
    let graph = cfg.layer.as_ref().map(|l| {
        json!({
            "Name": "overlay",
            "Data": {
                "LowerDir": cfg.rootfs,
                "UpperDir": Path::new(l).join("upper"),
                "WorkDir": Path::new(l).join("work"),
            }
        })
    });
    let vols = crate::volume::Volumes::open(store.root())?;
    let mounts: Vec<Value> = cfg
        .mounts
        .iter()
        .map(|m| crate::volume::inspect_mount(&vols, m))
        .collect();
    let mut out = json!({
        "Id": cfg.id,
        "Created": api_time(Some(cfg.created)),
        "Path": path,
        "Args": args,
        "State": {
            "Status": state_word(&st),
            "Running": running,
            "Paused": st.status == Status::Paused,
            "Restarting": st.status == Status::Restarting,
            "OOMKilled": false,
            "Dead": false,
            // The box's VMM: the host process that is the box.
            "Pid": if running { st.pid.unwrap_or(0) } else { 0 },
            "ExitCode": st.exit_code.unwrap_or(0),
            "Error": st.error.clone().unwrap_or_default(),
            "StartedAt": api_time(st.started),
            "FinishedAt": api_time(st.finished),
            "Health": st.health.as_ref().map(|h| json!({
                "Status": h.status,
                "FailingStreak": h.failing_streak,
                "Log": h.log.iter().map(|r| json!({
                    "Start": rfc3339(UNIX_EPOCH + Duration::from_millis(r.start_ms)),
                    "End": rfc3339(UNIX_EPOCH + Duration::from_millis(r.end_ms)),
                    "ExitCode": r.exit_code,
                    "Output": r.output,
                })).collect::<Vec<_>>(),
            })),
        },
        "Image": cfg.image.clone().unwrap_or_default(),
        "ResolvConfPath": "",
        "HostnamePath": "",
        "LogPath": dir.join(crate::runtime::shim::BOX_LOG),
        "Name": format!("/{}", cfg.name),
        "RestartCount": st.restart_count,
        "Driver": if cfg.layer.is_some() { "overlay" } else { "bind" },
        "Platform": "linux",
        "HostConfig": {
            "AutoRemove": cfg.auto_remove,
            "Memory": cfg.memory,
            "NanoCpus": u64::from(cfg.cpus) * 1_000_000_000,
            "LogConfig": {
                "Type": match log.driver {
                    crate::runtime::logs::LogDriver::JsonFile => "json-file",
                    crate::runtime::logs::LogDriver::None => "none",
                },
                "Config": {},
            },
            "RestartPolicy": {
                "Name": cfg.restart.name(),
                "MaximumRetryCount": cfg.restart.max_retries(),
            },
            "NetworkMode": crate::net::network_name(&cfg),
            "PortBindings": crate::net::ports::inspect_port_bindings(&cfg.network.ports),
            "Dns": cfg.network.dns,
            "DnsSearch": cfg.network.dns_search,
            "ExtraHosts": cfg.network.extra_hosts.iter().map(|(n, ip)| format!("{n}:{ip}")).collect::<Vec<_>>(),
        },
        "GraphDriver": graph,
        "Mounts": mounts,
        "Config": {
            "Hostname": cfg.hostname,
            "User": cfg.user.clone().unwrap_or_default(),
            "Tty": cfg.tty,
            "OpenStdin": cfg.stdin,
            "Env": cfg.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "Cmd": cfg.argv,
            "Image": image_text(&cfg),
            "WorkingDir": cfg.workdir,
            "Entrypoint": Value::Null,
            "Labels": cfg.labels,
            "Healthcheck": cfg.health.as_ref().map(|h| json!({
                "Test": h.argv,
                "Interval": h.interval_ms * 1_000_000,
                "Timeout": h.timeout_ms * 1_000_000,
                "StartPeriod": h.start_period_ms * 1_000_000,
                "Retries": h.retries,
            })),
        },
        "NetworkSettings": network_settings(&cfg, &st),
    });
    if let (Some(host), Value::Object(sec)) =
        (out["HostConfig"].as_object_mut(), cfg.security.inspect())
    {
        host.extend(sec);
    }
    Ok(out)
}

/// Docker's NetworkSettings: the address and ports only while the box runs.
fn network_settings(cfg: &BoxConfig, st: &BoxState) -> Value {
    use crate::net as network;
    let running = st.status == Status::Running || st.status == Status::Paused;
    let addr = network::address(cfg).filter(|_| running);
    let text = |v: Option<String>| v.unwrap_or_default();
    let ip = text(addr.map(|a| a.to_string()));
    let gateway = text(addr.and(network::gateway(cfg)).map(|g| g.to_string()));
    let prefix = if addr.is_some() {
        network::prefix(cfg)
    } else {
        0
    };
    let mac = text(addr.map(|_| network::format_mac(network::box_mac(cfg))));
    let mut networks = serde_json::Map::new();
    let mut entry = json!({
        "IPAddress": ip, "IPPrefixLen": prefix, "Gateway": gateway, "MacAddress": mac,
    });
    if let Some(a) = &cfg.network.attachment {
        entry["NetworkID"] = json!(a.network);
        entry["Aliases"] = json!(a.aliases);
        let mut names = vec![cfg.name.clone(), cfg.id[..12].to_string()];
        names.extend(a.aliases.iter().cloned());
        entry["DNSNames"] = json!(names);
        entry["IPAMConfig"] = json!({ "IPv4Address": a.ip.to_string() });
    }
    networks.insert(network::network_name(cfg).to_string(), entry);
    json!({
        "IPAddress": ip,
        "IPPrefixLen": prefix,
        "Gateway": gateway,
        "MacAddress": mac,
        "Ports": if running {
            crate::net::ports::inspect_ports(&cfg.network.ports)
        } else {
            json!({})
        },
        "Networks": networks,
    })
}

pub fn inspect(a: InspectArgs) -> anyhow::Result<i32> {
    if a.objects.is_empty() {
        bail!("inspect needs at least one box or image");
    }
    let (boxes, images) = match a.kind.as_deref() {
        None => (true, true),
        Some("box" | "container") => (true, false),
        Some("image") => (false, true),
        Some(k) => bail!("{k:?} is not a type inspect knows: use box or image"),
    };
    let template = match &a.format {
        Some(f) => Some(match parse_format(f)? {
            Format::Json => super::template::Template::parse("{{json .}}")?,
            Format::Table(t) | Format::Template(t) => t,
        }),
        None => None,
    };
    let store = open()?;
    let mut out = Vec::new();
    let mut failed = false;
    for name in &a.objects {
        let found = if boxes {
            store.resolve(name).ok()
        } else {
            None
        };
        let value = match found {
            Some(id) => inspect_box(&store, &id),
            None if images => super::image::image_json(name),
            None => Err(anyhow::anyhow!("No such box: {name}")),
        };
        match value {
            Ok(v) => out.push(v),
            Err(_) => {
                eprintln!("a3s-box: No such object: {name}");
                failed = true;
            }
        }
    }
    print_inspected(&out, template.as_ref())?;
    Ok(i32::from(failed))
}

/// What `inspect` commands print: each object through the template, or
/// all of them as one indented JSON array.
pub(crate) fn print_inspected(
    out: &[Value],
    template: Option<&super::template::Template>,
) -> anyhow::Result<()> {
    match template {
        Some(t) => {
            for v in out {
                println!("{}", t.render(v)?);
            }
        }
        None => println!(
            "{}",
            serde_json::to_string_pretty(out).expect("JSON values serialise")
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_dockers() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(42), "42 seconds");
        assert_eq!(human_duration(61), "About a minute");
        assert_eq!(human_duration(300), "5 minutes");
        assert_eq!(human_duration(3700), "About an hour");
        assert_eq!(human_duration(5 * 3600), "5 hours");
        assert_eq!(human_duration(3 * 86_400), "3 days");
        assert_eq!(human_duration(20 * 86_400), "2 weeks");
        assert_eq!(human_duration(90 * 86_400), "3 months");
        assert_eq!(human_duration(800 * 86_400), "2 years");
    }

    fn state(status: Status, code: Option<i32>, started: u64, finished: u64) -> BoxState {
        BoxState {
            status,
            exit_code: code,
            started: Some(started),
            finished: Some(finished),
            ..BoxState::created()
        }
    }

    #[test]
    fn status_column_says_up_exited_or_created() {
        assert_eq!(
            status_text(&BoxState::created(), 1000),
            "Created".to_string()
        );
        assert_eq!(
            status_text(&state(Status::Running, None, 700, 0), 1000),
            "Up 5 minutes"
        );
        assert_eq!(
            status_text(&state(Status::Exited, Some(3), 0, 990), 1000),
            "Exited (3) 10 seconds ago"
        );
    }

    #[test]
    fn commands_are_quoted_and_truncated_like_dockers() {
        let argv: Vec<String> = ["sh", "-c", "echo hello; sleep 1000"]
            .map(String::from)
            .into();
        assert_eq!(command_text(&argv, true), "\"sh -c echo hello; s…\"");
        assert_eq!(
            command_text(&argv, false),
            "\"sh -c echo hello; sleep 1000\""
        );
    }

    #[test]
    fn filters_parse_or_are_refused_with_the_key() {
        assert!(matches!(
            parse_filter("status=exited"),
            Ok(Filter::Status(_))
        ));
        assert!(matches!(
            parse_filter("label=a=b"),
            Ok(Filter::Label(k, Some(v))) if k == "a" && v == "b"
        ));
        assert!(matches!(parse_filter("exited=0"), Ok(Filter::Exited(0))));
        let e = parse_filter("colour=red").err().unwrap().to_string();
        assert_eq!(e, "invalid filter 'colour'");
        assert!(parse_filter("status=sleeping").is_err());
        assert!(parse_filter("exited=x").is_err());
        assert!(parse_filter("nokey").is_err());
    }

    #[test]
    fn name_filters_take_substrings_and_anchors() {
        assert!(name_matches("web", "my-web-1"));
        assert!(name_matches("^my", "my-web-1"));
        assert!(!name_matches("^web", "my-web-1"));
        assert!(name_matches("-1$", "my-web-1"));
        assert!(name_matches("^my-web-1$", "my-web-1"));
        assert!(!name_matches("^my-web$", "my-web-1"));
    }
}
