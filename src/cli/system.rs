//! `a3s-box info`, `version`, `system-prune` and `container-update`: the host
//! as Docker's `info` and `version` describe it, and the two commands that
//! change many boxes' records at once.

use std::io::{BufRead, IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context};
use argh::FromArgs;
use serde_json::{json, Value};

use super::attach::each;
use super::image::human_size;
use super::template::{parse_format, Format};
use crate::oci::store::ImageStore;
use crate::runtime::record::RestartPolicy;
use crate::runtime::store::{shim_alive, write_json_atomic, CONFIG_FILE};
use crate::runtime::{lifecycle, RuntimeError, Status, Store};

/// Show how this host runs boxes.
#[derive(FromArgs)]
#[argh(subcommand, name = "info")]
pub struct InfoArgs {
    /// json, or a Go template over the summary's JSON
    #[argh(option, short = 'f')]
    format: Option<String>,
}

/// Show the versions of the CLI and of what runs the boxes.
#[derive(FromArgs)]
#[argh(subcommand, name = "version")]
pub struct VersionArgs {
    /// json, or a Go template (`{{.Client.Version}}`)
    #[argh(option, short = 'f')]
    format: Option<String>,
}

/// Remove stopped boxes and unused images.
#[derive(FromArgs)]
#[argh(subcommand, name = "system-prune")]
pub struct PruneArgs {
    /// remove every image no box uses, not only dangling ones
    #[argh(switch, short = 'a')]
    all: bool,
    /// do not ask for confirmation
    #[argh(switch, short = 'f')]
    force: bool,
    /// also remove anonymous volumes no box uses
    #[argh(switch)]
    volumes: bool,
}

/// Change the resources and restart policy of boxes.
#[derive(FromArgs)]
#[argh(subcommand, name = "container-update")]
pub struct UpdateArgs {
    /// number of vCPUs (a whole number)
    #[argh(option, from_str_fn(super::run::parse_cpus))]
    cpus: Option<u32>,
    /// memory, e.g. 512m
    #[argh(option, short = 'm')]
    memory: Option<String>,
    /// restart policy: no, on-failure[:N], always, unless-stopped
    #[argh(option)]
    restart: Option<String>,
    /// boxes (names or IDs)
    #[argh(positional)]
    boxes: Vec<String>,
}

fn open() -> anyhow::Result<Store> {
    Ok(Store::open(&crate::paths::state_dir())?)
}

/// Prints `v` as `--format` asks: `json`, or a template.
fn print_formatted(v: &Value, format: &str) -> anyhow::Result<()> {
    match parse_format(format)? {
        Format::Json => println!("{v}"),
        Format::Template(t) | Format::Table(t) => println!("{}", t.render(v)?),
    }
    Ok(())
}

/// Go's names for architectures, as Docker prints them.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

// ---- version --------------------------------------------------------------

const VERSION: &str = env!("CARGO_PKG_VERSION");
const RUSTC: &str = env!("A3S_BOX_RUSTC_VERSION");
const TARGET: &str = env!("A3S_BOX_TARGET");

fn version_json() -> Value {
    let os = std::env::consts::OS;
    json!({
        "Client": {
            "Platform": {"Name": "A3S Box"},
            "Version": VERSION,
            // There is no daemon, so no API between the CLI and the boxes.
            "ApiVersion": "",
            "RustVersion": RUSTC,
            "Target": TARGET,
            "Os": os,
            "Arch": go_arch(),
        },
        "Server": {
            "Platform": {"Name": "A3S Box"},
            "Version": VERSION,
            "Components": [
                {"Name": "VMM", "Version": VERSION,
                 "Details": {"Binary": "a3s-box shim, one per box (this binary)"}},
                {"Name": "guest init", "Version": VERSION,
                 "Details": {"Binary": "the guest's /init (this binary)"}},
            ],
            "Os": os,
            "Arch": go_arch(),
        },
    })
}

pub fn version(a: VersionArgs) -> anyhow::Result<i32> {
    let v = version_json();
    if let Some(f) = &a.format {
        print_formatted(&v, f)?;
        return Ok(0);
    }
    // Cheap on purpose: it reads no file, so it measures a bare CLI start.
    let os_arch = format!("{}/{}", std::env::consts::OS, go_arch());
    println!("a3s-box {VERSION}");
    println!();
    println!("Client:");
    println!(" Version:           {VERSION}");
    println!(" API version:       none (no daemon: the CLI drives each box's VMM)");
    println!(" Rust version:      {RUSTC}");
    println!(" Target:            {TARGET}");
    println!(" OS/Arch:           {os_arch}");
    println!();
    println!("Server: A3S Box");
    println!(" VMM:");
    println!("  Version:          {VERSION}");
    println!("  Binary:           a3s-box shim, one per box (this binary)");
    println!(" Guest init:");
    println!("  Version:          {VERSION}");
    println!("  Binary:           the guest's /init (this binary)");
    Ok(0)
}

// ---- info -----------------------------------------------------------------

/// How many boxes are running, paused and stopped, as Docker counts them.
fn count_boxes(store: &Store) -> anyhow::Result<(usize, usize, usize)> {
    let (mut running, mut paused, mut stopped) = (0, 0, 0);
    for id in store.ids()? {
        let Ok(st) = store.live_state(&id) else {
            continue;
        };
        match st.status {
            Status::Paused => paused += 1,
            Status::Exited => stopped += 1,
            Status::Created if st.pid.is_none() => stopped += 1,
            // Starting, running, or waiting out a restart's delay.
            _ => running += 1,
        }
    }
    Ok((running, paused, stopped))
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// `PRETTY_NAME` of `/etc/os-release`.
fn os_name() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| std::env::consts::OS.to_string())
}

fn mem_total() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Binary sizes as Docker's `units.BytesSize`: four significant digits (`15.5GiB`).
pub fn bytes_size(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    let digits = if v >= 1000.0 {
        0
    } else if v >= 100.0 {
        1
    } else if v >= 10.0 {
        2
    } else {
        3
    };
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    format!("{s}{}", UNITS[u])
}

/// The version in a bzImage's setup header (`kernel_version`, offset 0x20e).
fn bzimage_version(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut head = [0u8; 0x210];
    f.read_exact(&mut head).ok()?;
    if &head[0x202..0x206] != b"HdrS" {
        return None;
    }
    let at = u16::from_le_bytes([head[0x20e], head[0x20f]]);
    if at == 0 {
        return None;
    }
    f.seek(SeekFrom::Start(u64::from(at) + 0x200)).ok()?;
    let mut s = [0u8; 128];
    let n = f.read(&mut s).ok()?;
    let text = String::from_utf8_lossy(&s[..n]);
    text.split([' ', '\0']).next().map(str::to_string)
}

/// The release in an ELF vmlinux's `Linux version …` banner.
fn vmlinux_version(path: &Path) -> Option<String> {
    const BANNER: &[u8] = b"Linux version ";
    // Kernels are tens of MB; a file far larger is not one worth reading whole.
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() > 512 << 20 {
        return None;
    }
    let data = std::fs::read(path).ok()?;
    let mut from = 0;
    while let Some(i) = data[from..].iter().position(|&b| b == b'L') {
        let at = from + i;
        let rest = &data[at..];
        // The banner, not a format string: a digit follows.
        if rest.starts_with(BANNER) && rest.get(BANNER.len()).is_some_and(u8::is_ascii_digit) {
            let tail = &rest[BANNER.len()..];
            let end = tail
                .iter()
                .position(|b| !b.is_ascii_graphic())
                .unwrap_or(tail.len());
            return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
        }
        from = at + 1;
    }
    None
}

/// The guest kernel's release: from its bzImage header (a vmlinux that
/// `scripts/build-kernel` made has one beside it), else its banner.
fn guest_kernel_version(path: &Path) -> Option<String> {
    bzimage_version(path)
        .or_else(|| bzimage_version(&path.with_file_name("bzImage")))
        .or_else(|| vmlinux_version(path))
}

fn info_json() -> anyhow::Result<Value> {
    let state = crate::paths::state_dir();
    let store = Store::open(&state)?;
    let (running, paused, stopped) = count_boxes(&store)?;
    let images = ImageStore::open(&state)?.images()?.len();
    let kernel = crate::paths::kernel(None);
    let guest_version = if kernel.is_file() {
        guest_kernel_version(&kernel)
    } else {
        None
    };
    let hypervisor = crate::vmm::hypervisor::PlatformHypervisor::open();
    Ok(json!({
        "Containers": running + paused + stopped,
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": stopped,
        "Images": images,
        "ServerVersion": VERSION,
        // A box of an image is its tree under an overlay of the box's own layer.
        "Driver": "overlay",
        "LoggingDriver": "json-file",
        // What the guest kernel is built with (kernel-config/).
        "CgroupVersion": "2",
        "KernelVersion": read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
        "GuestKernel": {
            "Path": kernel,
            "Found": kernel.is_file(),
            "Version": guest_version.unwrap_or_default(),
        },
        "OperatingSystem": os_name(),
        "OSType": std::env::consts::OS,
        "Architecture": std::env::consts::ARCH,
        "NCPU": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "MemTotal": mem_total(),
        "Name": read_trimmed("/proc/sys/kernel/hostname").unwrap_or_default(),
        "DockerRootDir": state,
        "Hypervisor": {
            "Name": crate::vmm::hypervisor::NAME,
            "Available": hypervisor.is_ok(),
            "Reason": hypervisor.err().map(|e| e.to_string()).unwrap_or_default(),
        },
    }))
}

pub fn info(a: InfoArgs) -> anyhow::Result<i32> {
    let v = info_json()?;
    if let Some(f) = &a.format {
        print_formatted(&v, f)?;
        return Ok(0);
    }
    let s = |k: &str| match &v[k] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let guest = &v["GuestKernel"];
    let guest_line = match (guest["Found"].as_bool(), guest["Version"].as_str()) {
        (Some(true), Some("")) => {
            format!("{} (version unknown)", guest["Path"].as_str().unwrap_or(""))
        }
        (Some(true), Some(ver)) => format!("{ver} ({})", guest["Path"].as_str().unwrap_or("")),
        _ => format!(
            "none at {} (build one with scripts/build-kernel)",
            guest["Path"].as_str().unwrap_or("")
        ),
    };
    let hv = &v["Hypervisor"];
    let hv_line = if hv["Available"].as_bool() == Some(true) {
        "available".to_string()
    } else {
        format!("not available: {}", hv["Reason"].as_str().unwrap_or(""))
    };
    println!("Client:");
    println!(" Version:    {VERSION}");
    println!();
    println!("Server:");
    println!(" Containers: {}", s("Containers"));
    println!("  Running: {}", s("ContainersRunning"));
    println!("  Paused: {}", s("ContainersPaused"));
    println!("  Stopped: {}", s("ContainersStopped"));
    println!(" Images: {}", s("Images"));
    println!(" Server Version: {}", s("ServerVersion"));
    println!(" Storage Driver: {}", s("Driver"));
    println!(" Logging Driver: {}", s("LoggingDriver"));
    println!(" Cgroup Version: {} (in the guest)", s("CgroupVersion"));
    println!(" Kernel Version: {}", s("KernelVersion"));
    println!(" Guest Kernel: {guest_line}");
    println!(" Operating System: {}", s("OperatingSystem"));
    println!(" OSType: {}", s("OSType"));
    println!(" Architecture: {}", s("Architecture"));
    println!(" CPUs: {}", s("NCPU"));
    println!(
        " Total Memory: {}",
        bytes_size(v["MemTotal"].as_u64().unwrap_or(0))
    );
    println!(" Name: {}", s("Name"));
    println!(" A3S Box Root Dir: {}", s("DockerRootDir"));
    println!(" {}: {hv_line}", hv["Name"].as_str().unwrap_or(""));
    Ok(0)
}

// ---- system-prune ---------------------------------------------------------

/// Removes every box that is neither running nor paused nor starting, and
/// returns the IDs removed with the bytes each took. A box that starts
/// meanwhile is left alone; one that cannot be removed is reported.
pub(crate) fn prune_boxes(store: &Store) -> anyhow::Result<Vec<(String, u64)>> {
    let mut removed = Vec::new();
    for id in store.ids()? {
        let Ok(st) = store.live_state(&id) else {
            continue;
        };
        let stopped =
            st.status == Status::Exited || (st.status == Status::Created && !shim_alive(&st));
        if !stopped {
            continue;
        }
        let size = crate::boxfs::dir_size(&store.box_dir(&id));
        match lifecycle::remove(store, &id, false) {
            Ok(()) => removed.push((id, size)),
            Err(RuntimeError::Running(_) | RuntimeError::NoSuchBox(_)) => {}
            Err(e) => eprintln!("a3s-box: cannot remove box {}: {e}", &id[..12]),
        }
    }
    Ok(removed)
}

/// Asks `question` on the terminal; refuses to guess when there is none.
fn confirm(warning: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("system-prune asks before it removes anything, and stdin is not a terminal: use -f");
    }
    println!("{warning}");
    print!("Are you sure you want to continue? [y/N] ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "Yes"))
}

pub fn prune(a: PruneArgs) -> anyhow::Result<i32> {
    if !a.force {
        let images = if a.all {
            "all images without at least one box associated to them"
        } else {
            "all dangling images"
        };
        let volumes = if a.volumes {
            "  - all anonymous volumes not used by at least one box\n"
        } else {
            ""
        };
        let warning = format!(
            "WARNING! This will remove:\n  - all stopped boxes\n  - all networks not used by at least one box\n{volumes}  - {images}\n"
        );
        if !confirm(&warning)? {
            return Ok(0);
        }
    }
    let store = open()?;
    let boxes = prune_boxes(&store)?;
    let mut freed: u64 = boxes.iter().map(|(_, n)| n).sum();
    if !boxes.is_empty() {
        println!("Deleted Containers:");
        for (id, _) in &boxes {
            println!("{id}");
        }
        println!();
    }
    // After the boxes: a network or an image only they used is unused now.
    // (Networks need root to take down; without it none were made.)
    let networks = if rustix::process::geteuid().is_root() {
        super::network::prune_unused(&store)?
    } else {
        Vec::new()
    };
    if !networks.is_empty() {
        println!("Deleted Networks:");
        for n in &networks {
            println!("{n}");
        }
        println!();
    }
    if a.volumes {
        let none = crate::volume::filter::Filters::default();
        let (volumes, bytes) = super::volume::prune_unused(&store, false, &none)?;
        freed += bytes;
        if !volumes.is_empty() {
            println!("Deleted Volumes:");
            for v in &volumes {
                println!("{v}");
            }
            println!();
        }
    }
    let (images, image_bytes) = ImageStore::open(store.root())?.prune(a.all)?;
    freed += image_bytes;
    if !images.is_empty() {
        println!("Deleted Images:");
        for d in &images {
            println!("deleted: {d}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(freed));
    Ok(0)
}

// ---- container-update -----------------------------------------------------

/// What `container-update` changes; `None`: left as it is.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Update {
    pub cpus: Option<u32>,
    pub memory: Option<u64>,
    pub restart: Option<RestartPolicy>,
}

/// Writes `u` into box `id`'s record, under the store's lock. Returns whether
/// the box runs now with other vCPUs or memory than its record has from here on.
pub(crate) fn update_box(store: &Store, id: &str, u: &Update) -> anyhow::Result<bool> {
    let (cfg, resized_running) = {
        let _lock = store.lock()?;
        let mut cfg = store.config(id)?;
        if let Some(r) = u.restart {
            if r != RestartPolicy::No && cfg.auto_remove {
                bail!("restart policy cannot be updated because AutoRemove is enabled for the box");
            }
            cfg.restart = r;
        }
        let resized =
            u.cpus.is_some_and(|c| c != cfg.cpus) || u.memory.is_some_and(|m| m != cfg.memory);
        cfg.cpus = u.cpus.unwrap_or(cfg.cpus);
        cfg.memory = u.memory.unwrap_or(cfg.memory);
        write_json_atomic(&store.box_dir(id).join(CONFIG_FILE), &cfg)?;
        let st = store.settle_locked(id)?;
        (
            cfg,
            resized && st.status != Status::Exited && shim_alive(&st),
        )
    };
    crate::runtime::events::emit(store.root(), "update", &cfg, &[]);
    Ok(resized_running)
}

pub fn update(a: UpdateArgs) -> anyhow::Result<i32> {
    if a.cpus.is_none() && a.memory.is_none() && a.restart.is_none() {
        bail!("you must provide one or more flags when using this command");
    }
    if a.boxes.is_empty() {
        bail!("container-update needs at least one box");
    }
    if let Some(c) = a.cpus {
        crate::vmm::vm::check_cpus(c).context("--cpus")?;
    }
    let memory = match &a.memory {
        Some(m) => {
            let size = crate::vmm::memory::parse_size(m)
                .with_context(|| format!("--memory {m}: expected a size such as 512m or 1g"))?;
            crate::vmm::memory::check_size(size).with_context(|| format!("--memory {m}"))?;
            Some(size)
        }
        None => None,
    };
    let restart = a
        .restart
        .as_deref()
        .map(RestartPolicy::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let u = Update {
        cpus: a.cpus,
        memory,
        restart,
    };
    each(&a.boxes, |store, id| {
        if update_box(store, id, &u)? {
            let name = store
                .config(id)
                .map_or_else(|_| id[..12].to_string(), |c| c.name);
            eprintln!(
                "a3s-box: warning: box {name} is running, and a running VM keeps its vCPUs and \
                 memory: the new ones apply from its next start"
            );
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::BoxState;

    struct Temp(std::path::PathBuf, Store);

    impl Temp {
        fn new(name: &str) -> Temp {
            let d = std::env::temp_dir().join(format!(
                "a3s-system-{name}-{}-{}",
                std::process::id(),
                &crate::runtime::store::new_id()[..8]
            ));
            let s = Store::open(&d).unwrap();
            Temp(d, s)
        }

        /// A box recorded as `status`; `alive` gives it a live "shim" (this process).
        fn make(&self, name: &str, status: Status, alive: bool) -> String {
            let mut cfg: crate::runtime::BoxConfig = serde_json::from_value(json!({
                "id": "", "name": name, "rootfs": "/r", "argv": ["true"], "env": [],
                "workdir": "/", "user": null, "hostname": "h", "tty": false, "stdin": false,
                "cpus": 1, "memory": 134217728, "kernel": "/vmlinux", "auto_remove": false,
                "created": 0,
            }))
            .unwrap();
            self.1.create(&mut cfg).unwrap();
            let me = std::process::id();
            let st = BoxState {
                status,
                pid: alive.then_some(me),
                pid_start: alive
                    .then(|| crate::runtime::record::process_start(me))
                    .flatten(),
                exit_code: (status == Status::Exited).then_some(0),
                ..BoxState::created()
            };
            self.1.write_state(&cfg.id, &st).unwrap();
            std::fs::write(self.1.box_dir(&cfg.id).join("log.json"), vec![b'x'; 1000]).unwrap();
            cfg.id
        }
    }

    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn prune_removes_created_and_exited_boxes_only() {
        let t = Temp::new("prune");
        let created = t.make("created", Status::Created, false);
        let exited = t.make("exited", Status::Exited, false);
        let running = t.make("running", Status::Running, true);
        let starting = t.make("starting", Status::Created, true);
        let paused = t.make("paused", Status::Paused, true);
        let mut removed = prune_boxes(&t.1).unwrap();
        removed.sort();
        let mut want = vec![created.clone(), exited.clone()];
        want.sort();
        assert_eq!(
            removed.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
            want
        );
        assert!(removed.iter().all(|(_, n)| *n >= 1000), "{removed:?}");
        let mut left = t.1.ids().unwrap();
        left.sort();
        let mut want = vec![running, starting, paused];
        want.sort();
        assert_eq!(left, want);
        // Each removal is a destroy event.
        let destroyed: Vec<String> = crate::runtime::events::read_all(&t.0)
            .unwrap()
            .into_iter()
            .filter(|e| e.action == "destroy")
            .map(|e| e.actor.attributes["name"].clone())
            .collect();
        assert_eq!(destroyed.len(), 2, "{destroyed:?}");
    }

    #[test]
    fn update_changes_the_record_and_says_when_a_running_vm_keeps_its_size() {
        let t = Temp::new("update");
        let stopped = t.make("stopped", Status::Exited, false);
        let running = t.make("running", Status::Running, true);
        let u = Update {
            cpus: Some(2),
            memory: Some(1 << 30),
            restart: Some(RestartPolicy::Always),
        };
        assert!(!update_box(&t.1, &stopped, &u).unwrap());
        assert!(update_box(&t.1, &running, &u).unwrap());
        for id in [&stopped, &running] {
            let cfg = t.1.config(id).unwrap();
            assert_eq!(
                (cfg.cpus, cfg.memory, cfg.restart),
                (2, 1 << 30, RestartPolicy::Always)
            );
        }
        // The same size again changes nothing a running VM would need.
        let restart_only = Update {
            restart: Some(RestartPolicy::OnFailure { max_retries: 2 }),
            ..Update::default()
        };
        assert!(!update_box(&t.1, &running, &restart_only).unwrap());
        assert_eq!(
            t.1.config(&running).unwrap().restart,
            RestartPolicy::OnFailure { max_retries: 2 }
        );
        assert_eq!(t.1.config(&running).unwrap().cpus, 2, "left as it was");
    }

    #[test]
    fn a_box_removed_on_exit_takes_no_restart_policy() {
        let t = Temp::new("autoremove");
        let id = t.make("rm", Status::Exited, false);
        let mut cfg = t.1.config(&id).unwrap();
        cfg.auto_remove = true;
        write_json_atomic(&t.1.box_dir(&id).join(CONFIG_FILE), &cfg).unwrap();
        let u = Update {
            restart: Some(RestartPolicy::Always),
            ..Update::default()
        };
        assert!(update_box(&t.1, &id, &u)
            .unwrap_err()
            .to_string()
            .contains("AutoRemove"));
        assert_eq!(t.1.config(&id).unwrap().restart, RestartPolicy::No);
    }

    #[test]
    fn binary_sizes_read_as_dockers() {
        assert_eq!(bytes_size(0), "0B");
        assert_eq!(bytes_size(1023), "1023B");
        assert_eq!(bytes_size(1536), "1.5KiB");
        assert_eq!(bytes_size(16_700_000_000), "15.55GiB");
        assert_eq!(bytes_size(512 << 20), "512MiB");
    }

    #[test]
    fn the_version_template_reaches_the_client_version() {
        let t = super::super::template::Template::parse("{{.Client.Version}}").unwrap();
        assert_eq!(t.render(&version_json()).unwrap(), VERSION);
    }

    #[test]
    fn a_vmlinux_banner_gives_the_release() {
        let dir = std::env::temp_dir().join(format!("a3s-banner-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let k = dir.join("vmlinux");
        let mut data = b"\x7fELF....Linux version %s (%s)\0".to_vec();
        data.extend_from_slice(b"Linux version 6.1.158 (builder@host) (gcc) #1\n");
        std::fs::write(&k, &data).unwrap();
        assert_eq!(guest_kernel_version(&k).as_deref(), Some("6.1.158"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
