//! Starting, stopping and removing boxes: what `run`, `create`/`start`, `stop`,
//! `kill`, `rm` and `wait` (and later the CRI server) do to a box through its
//! record and its shim.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::shim::SHIM_SOCKET;
use super::store::shim_alive;
use super::{RuntimeError, Status, Store};

type Result<T> = std::result::Result<T, RuntimeError>;

/// How long a box may take from its shim's start to its main process's. The
/// shim gives up on a stuck guest itself, sooner (see `shim::BOOT_CPU_LIMIT`):
/// this only bounds a shim that hangs.
const START_TIMEOUT: Duration = Duration::from_secs(660);
/// How long `rm -f` waits for a killed box's shim to end before killing it.
const KILL_GRACE: Duration = Duration::from_secs(10);

fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

/// Starts the shim of box `id`, which must be created or exited, in its own
/// session, detached from this terminal. Returns once a client can attach
/// (`wait_for_attach`: the main process waits for it) or once the main process
/// has started. A box already running is left alone: `Ok(false)`.
pub fn start(store: &Store, id: &str, wait_for_attach: bool) -> Result<bool> {
    let dir = store.box_dir(id);
    let io = |what, e| RuntimeError::io(what, &dir, e);
    let (mut child, ready) = {
        // Under the lock, so that two starts of one box make one shim: the
        // second sees the first one's pid, which the shim itself keeps.
        let _lock = store.lock()?;
        let mut st = store.settle_locked(id)?;
        if st.pid.is_some() && shim_alive(&st) {
            return Ok(false);
        }
        let log = std::fs::File::create(dir.join("shim.log"))
            .map_err(|e| io("cannot create the shim log in", e))?;
        let exe = std::env::current_exe().map_err(|e| io("cannot find this binary for", e))?;
        // The shim writes a byte to this pipe once the box is up; EOF without
        // one means it ended first. Waiting on it costs nothing, where polling
        // the record would cost every waiting CLI a read each few milliseconds.
        let (ready_r, ready_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| io("cannot make a pipe for", e.into()))?;
        let mut cmd = Command::new(exe);
        cmd.arg("shim").arg("--box").arg(id);
        if wait_for_attach {
            cmd.arg("--wait-attach");
        }
        let ready_fd = ready_w.as_raw_fd();
        cmd.arg("--ready-fd").arg(ready_fd.to_string());
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| io("cannot open", e))?)
            .stderr(log);
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        // The write end is inherited by the shim alone: it is close-on-exec
        // everywhere but in this child, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 || libc::fcntl(ready_fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| io("cannot start the shim of", e))?;
        drop(ready_w);
        // Started by hand: the policy's count and a stop's mark start over.
        st.restart_count = 0;
        st.stopped_by_user = false;
        st.status = Status::Created;
        st.pid = Some(child.id());
        st.pid_start = super::record::process_start(child.id());
        st.exit_code = None;
        st.error = None;
        store.write_state(id, &st)?;
        (child, ready_r)
    };
    let failed = |why: String| {
        let log = std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default();
        RuntimeError::StartFailed(format!("{why}: {}", log.trim()))
    };
    match wait_ready(&ready, START_TIMEOUT) {
        // Up; or ended, but only after its main process had started (a box
        // whose command exits at once, or one the restart policy took over).
        Some(true) => {}
        // (A shim that could not start the box records an error instead.)
        Some(false)
            if store
                .state(id)
                .is_ok_and(|s| s.status != Status::Created && s.error.is_none()) => {}
        Some(false) => {
            let status = child
                .wait()
                .map_err(|e| io("cannot wait for the shim of", e))?;
            // The shim records its own failures; one that died before it could
            // is recorded here.
            let _ = store.live_state(id);
            return Err(failed(status.to_string()));
        }
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let _ = store.live_state(id);
            return Err(failed(format!(
                "it did not start within {} minutes",
                START_TIMEOUT.as_secs() / 60
            )));
        }
    }
    // Reap it later from a thread so it never lingers as a zombie of ours.
    std::thread::spawn(move || child.wait());
    super::events::emit_box(store, "start", id, &[]);
    Ok(true)
}

/// Waits on the read end of a shim's ready pipe: `Some(true)` once the box is
/// up, `Some(false)` if the shim closed it first, `None` after `limit`.
fn wait_ready(ready: &std::os::fd::OwnedFd, limit: Duration) -> Option<bool> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let timeout = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(ready, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(_) => return Some(false),
        }
        let mut byte = [0u8; 1];
        return match rustix::io::read(ready, &mut byte) {
            Ok(1) => Some(true),
            Err(rustix::io::Errno::INTR) => continue,
            _ => Some(false),
        };
    }
}

/// Connects to the shim of running box `id`.
pub fn connect(store: &Store, id: &str) -> Result<UnixStream> {
    let state = store.live_state(id)?;
    if state.status == Status::Exited || state.pid.is_none() {
        return Err(RuntimeError::NotRunning(short(id).into()));
    }
    UnixStream::connect(store.socket_dir(id).join(SHIM_SOCKET))
        .map_err(|_| RuntimeError::NotRunning(short(id).into()))
}

/// Sends one request line to the shim of box `id` and waits for its `OK`.
pub fn request(store: &Store, id: &str, line: &str) -> Result<()> {
    let mut conn = connect(store, id)?;
    let shim_err = |e: std::io::Error| RuntimeError::Shim(e.to_string());
    conn.write_all(line.as_bytes()).map_err(shim_err)?;
    let mut reply = String::new();
    BufReader::new(conn)
        .read_line(&mut reply)
        .map_err(shim_err)?;
    match reply.trim_end() {
        "OK" => Ok(()),
        // The shim went away without a word: fine if the box did end.
        "" if store.live_state(id)?.status == Status::Exited => Ok(()),
        "" => Err(RuntimeError::Shim(
            "it closed the connection without an answer".into(),
        )),
        r => Err(RuntimeError::Shim(
            r.strip_prefix("ERR ").unwrap_or(r).to_string(),
        )),
    }
}

/// Stops box `id` (SIGTERM, then power-off after `grace` seconds); a box that
/// is not running is left as it is.
pub fn stop(store: &Store, id: &str, grace: u64) -> Result<()> {
    let st = store.live_state(id)?;
    if st.status == Status::Exited || !shim_alive(&st) {
        return Ok(());
    }
    // Docker's order: the SIGTERM's kill, the shim's die, then stop.
    super::events::emit_box(store, "kill", id, &[("signal", libc::SIGTERM.to_string())]);
    request(store, id, &format!("STOP {grace}\n"))?;
    super::events::emit_box(store, "stop", id, &[]);
    Ok(())
}

/// Sends signal `sig` to the main process of running box `id` (SIGKILL: its
/// shim powers the VM off).
pub fn kill(store: &Store, id: &str, sig: i32) -> Result<()> {
    let st = store.live_state(id)?;
    if st.status == Status::Exited || !shim_alive(&st) {
        return Err(RuntimeError::NotRunning(short(id).into()));
    }
    super::events::emit_box(store, "kill", id, &[("signal", sig.to_string())]);
    request(store, id, &format!("KILL {sig}\n"))
}

/// Ends box `id` at once: its shim powers the VM off, and a shim that does
/// not answer within [`KILL_GRACE`] is killed (the VM is that process).
pub fn kill_now(store: &Store, id: &str) -> Result<()> {
    let st = store.live_state(id)?;
    let Some(pid) = st.pid.filter(|_| shim_alive(&st)) else {
        return Ok(());
    };
    super::events::emit_box(store, "kill", id, &[("signal", libc::SIGKILL.to_string())]);
    let _ = request(store, id, &format!("KILL {}\n", libc::SIGKILL));
    let deadline = Instant::now() + KILL_GRACE;
    while Instant::now() < deadline {
        if !shim_alive(&store.state(id)?) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if shim_alive(&store.state(id)?) {
        // SAFETY: kill takes plain integers; the pid is the shim's, checked
        // just above against the start time recorded with it.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        std::thread::sleep(Duration::from_millis(50));
    }
    store.live_state(id).map(|_| ())
}

/// Removes box `id`: its record, its layer, its logs. A running box is
/// refused unless `force`, which kills it first.
pub fn remove(store: &Store, id: &str, force: bool) -> Result<()> {
    let st = store.live_state(id)?;
    let cfg = store.config(id);
    if st.status != Status::Exited && shim_alive(&st) {
        if !force {
            return Err(RuntimeError::Running(short(id).into()));
        }
        kill_now(store, id)?;
        // A shim that had to be killed could not take its ports off the host.
        if let Ok(cfg) = cfg.as_ref() {
            crate::net::bridge::forget_dead_box(cfg);
        }
    }
    let _lock = store.lock()?;
    let _ = std::fs::remove_dir_all(store.socket_dir(id));
    store.remove(id)?;
    if let Ok(cfg) = cfg {
        super::events::emit(store.root(), "destroy", &cfg, &[]);
    }
    Ok(())
}

/// Waits until box `id` has run and ended, and returns its exit code.
pub fn wait(store: &Store, id: &str) -> Result<i32> {
    loop {
        match store.live_state(id) {
            Ok(st) if st.status == Status::Exited => return Ok(st.exit_code.unwrap_or(0)),
            Ok(_) => {}
            Err(_) if !store.box_dir(id).exists() => {
                return Err(RuntimeError::NoSuchBox(short(id).into()))
            }
            Err(e) => return Err(e),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Renames box `id` to `name`, which must be valid and unused.
pub fn rename(store: &Store, id: &str, name: &str) -> Result<()> {
    let (cfg, old) = store.rename(id, name)?;
    // Docker gives the old name as it names containers, with a slash.
    let old = ("oldName", format!("/{old}"));
    super::events::emit(store.root(), "rename", &cfg, &[old]);
    Ok(())
}

/// What the restart monitor does in one pass over the boxes: starts those
/// that should be running and are not. On its first pass (the host came up,
/// or the monitor was started) that is every `always` box and every
/// `unless-stopped` box the user did not stop; afterwards, boxes whose VMM
/// died (a policy restart lives in the box's shim, which a crash ends), unless
/// the user stopped them. Returns the boxes it started, and failures.
pub fn resurrect(store: &Store, first_pass: bool) -> Vec<(String, Result<()>)> {
    use super::record::RestartPolicy;
    let mut out = Vec::new();
    for id in store.ids().unwrap_or_default() {
        let (Ok(cfg), Ok(st)) = (store.config(&id), store.live_state(&id)) else {
            continue;
        };
        if st.status != Status::Exited || cfg.auto_remove {
            continue;
        }
        let vmm_died = st.exit_code == Some(super::store::EXIT_SHIM_DIED)
            && st.error.as_deref().is_some_and(|e| e.contains("VMM"));
        let wanted = match cfg.restart {
            RestartPolicy::No => false,
            RestartPolicy::Always if first_pass => true,
            RestartPolicy::Always | RestartPolicy::UnlessStopped if first_pass => {
                !st.stopped_by_user
            }
            RestartPolicy::OnFailure { .. }
            | RestartPolicy::Always
            | RestartPolicy::UnlessStopped => vmm_died && !st.stopped_by_user,
        };
        if wanted {
            let started = start(store, &id, false).map(|_| ());
            out.push((cfg.name, started));
        }
    }
    out
}
