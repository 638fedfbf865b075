//! `a3s-box run`: create a box, start its shim, and (unless `-d`) attach to it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use argh::FromArgs;

use crate::runtime::record::now;
use crate::runtime::shim::SHIM_SOCKET;
use crate::runtime::{BoxConfig, Status, Store};
use crate::vmm::memory::parse_size;

/// Run a command in a new box.
#[derive(FromArgs)]
#[argh(subcommand, name = "run")]
pub struct RunArgs {
    /// remove the box when it exits
    #[argh(switch)]
    rm: bool,
    /// run in the background and print the box ID
    #[argh(switch, short = 'd')]
    detach: bool,
    /// keep stdin open and forward it
    #[argh(switch, short = 'i')]
    interactive: bool,
    /// give the process a terminal
    #[argh(switch, short = 't')]
    tty: bool,
    /// name of the box
    #[argh(option)]
    name: Option<String>,
    /// environment variable KEY=VALUE (repeatable)
    #[argh(option, short = 'e')]
    env: Vec<String>,
    /// file of KEY=VALUE lines
    #[argh(option)]
    env_file: Vec<PathBuf>,
    /// working directory inside the box
    #[argh(option, short = 'w')]
    workdir: Option<String>,
    /// user (name or UID, optionally :group)
    #[argh(option, short = 'u')]
    user: Option<String>,
    /// program to run instead of the image's entrypoint
    #[argh(option)]
    entrypoint: Option<String>,
    /// number of vCPUs
    #[argh(option, default = "1")]
    cpus: u32,
    /// memory, e.g. 512m
    #[argh(option, short = 'm', default = "String::from(\"512m\")")]
    memory: String,
    /// host name inside the box
    #[argh(option, short = 'h')]
    hostname: Option<String>,
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

/// Parses `KEY=VALUE` (or `KEY`, taking the value from this environment, as Docker).
fn env_pair(s: &str) -> Option<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Some((k.to_string(), v.to_string())),
        Some(_) => None,
        None => std::env::var(s).ok().map(|v| (s.to_string(), v)),
    }
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
        match env_pair(line) {
            Some(p) => out.push(p),
            None => bail!("{}:{}: expected KEY=VALUE", path.display(), n + 1),
        }
    }
    Ok(out)
}

/// Starts the shim for box `id` in its own session, detached from this terminal.
pub fn spawn_shim(store: &Store, id: &str, wait_for_attach: bool) -> anyhow::Result<()> {
    let dir = store.box_dir(id);
    let log = std::fs::File::create(dir.join("shim.log")).context("cannot create shim.log")?;
    let mut cmd = Command::new(std::env::current_exe().context("cannot find this binary")?);
    cmd.arg("shim").arg("--box").arg(id);
    if wait_for_attach {
        cmd.arg("--wait-attach");
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the shim")?;
    // A foreground run attaches as soon as the shim listens (the main process waits
    // for it); a detached one returns once the main process has started (or ended).
    let deadline = Instant::now() + Duration::from_secs(120);
    let ready = || {
        store.socket_dir(id).join(SHIM_SOCKET).exists()
            && (wait_for_attach || store.state(id).is_ok_and(|s| s.status != Status::Created))
    };
    loop {
        if ready() {
            // Reap it later from a thread so it never lingers as a zombie of ours.
            std::thread::spawn(move || child.wait());
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default();
            bail!("the box could not start ({status}): {}", log.trim());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the box did not start within two minutes");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn run(a: RunArgs) -> anyhow::Result<i32> {
    let (rootfs, image, mut argv) = match &a.rootfs {
        Some(dir) => (dir.clone(), None, a.args.clone()),
        None => match a.args.split_first() {
            Some((image, _)) => bail!(
                "cannot run image {image:?}: images are not supported yet in this version — use --rootfs DIR"
            ),
            None => bail!("run needs --rootfs DIR (or an IMAGE) and a command"),
        },
    };
    if let Some(ep) = &a.entrypoint {
        argv.insert(0, ep.clone());
    }
    if argv.is_empty() {
        bail!("no command given: a root directory has no default command");
    }
    let rootfs = rootfs
        .canonicalize()
        .with_context(|| format!("root filesystem {} not found", rootfs.display()))?;
    if !rootfs.is_dir() {
        bail!("root filesystem {} is not a directory", rootfs.display());
    }
    let memory = parse_size(&a.memory)
        .with_context(|| format!("--memory {}: expected a size such as 512m or 1g", a.memory))?;
    let mut env = Vec::new();
    for f in &a.env_file {
        env.extend(read_env_file(f)?);
    }
    for e in &a.env {
        match env_pair(e) {
            Some(p) => env.push(p),
            None => bail!("-e {e}: expected KEY=VALUE"),
        }
    }
    if a.tty {
        env.push((
            "TERM".into(),
            std::env::var("TERM").unwrap_or_else(|_| "xterm".into()),
        ));
    }
    let kernel = crate::paths::kernel(a.kernel.as_deref());
    crate::vmm::boot::x86_64::check_kernel(&kernel)?;

    let store = Store::open(&crate::paths::state_dir())?;
    let mut cfg = BoxConfig {
        id: String::new(),
        name: a.name.clone().unwrap_or_default(),
        rootfs: rootfs.to_string_lossy().into_owned(),
        image,
        argv,
        env,
        workdir: a.workdir.clone().unwrap_or_else(|| "/".into()),
        user: a.user.clone(),
        hostname: String::new(),
        tty: a.tty,
        stdin: a.interactive,
        cpus: a.cpus,
        memory,
        kernel: kernel.to_string_lossy().into_owned(),
        auto_remove: a.rm,
        created: now(),
    };
    store.create(&mut cfg)?;
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

    spawn_shim(&store, &cfg.id, !a.detach)?;
    if a.detach {
        println!("{}", cfg.id);
        return Ok(0);
    }
    super::attach::attach_to(&store, &cfg.id, a.interactive, a.tty)
}
