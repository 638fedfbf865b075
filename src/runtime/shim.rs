//! The shim's box mode: one process per running box. It boots the VM, starts the
//! main process over the guest's control port, writes its output to the box log
//! and to attached clients, answers `stop`/`kill`/`attach` on `shim.sock`, and
//! records how the box ended.
//!
//! `shim.sock` protocol (host only): the client sends one line,
//! `ATTACH` / `ATTACH-STDIN` (then proto frames: the shim sends `Stdout`, `Stderr`
//! and a final `Exit`; with stdin the client may send `Stdin`, `StdinClose`,
//! `Resize`), `STOP <seconds>` or `KILL <signal>` (the shim answers `OK` or
//! `ERR <message>`; `STOP` answers once the box has ended).

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::logs::LogWriter;
use super::record::{now, NetworkMode};
use super::{BoxConfig, BoxState, Status, Store};
use crate::net as network;
use crate::proto::{
    self, expect_hello, our_hello, read_message, write_message, ExecRequest, Message, RootSource,
    PORT_CONTROL,
};
use crate::vmm::devices::virtio::fs::{CachePolicy, Fs, FsOptions};
use crate::vmm::devices::virtio::net::Net;
use crate::vmm::devices::virtio::vsock::Vsock;
use crate::vmm::devices::virtio::VirtioDevice;
use crate::vmm::vm::{self, VmConfig, VmExit};

pub const SHIM_SOCKET: &str = "shim.sock";
pub const VSOCK_SOCKET: &str = "vsock.sock";
pub const CONSOLE_LOG: &str = "console.log";
pub const BOX_LOG: &str = crate::runtime::logs::LOG_FILE;
const ROOT_TAG: &str = "rootfs";
/// Tags of an image's tree and of the box's layer over it.
const IMAGE_TAG: &str = "image";
const LAYER_TAG: &str = "layer";
const GUEST_CID: u64 = 3;
/// How much CPU time the VM may spend booting before its guest listens on its
/// control port: a guest that has used this much without coming up is stuck.
/// Counted in the VM's own CPU time, not the clock's, so that a boot slowed by
/// a loaded host (fifty boxes starting at once) is not taken for a hung one.
const BOOT_CPU_LIMIT: Duration = Duration::from_secs(60);
/// The clock's limit on the same, for a guest that is stuck idle.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a foreground box waits for its client to attach before it starts
/// its main process anyway (the client may have died).
const ATTACH_TIMEOUT: Duration = Duration::from_secs(120);
/// Exit code recorded when the box had to be killed (SIGKILL, as Docker reports).
const KILLED: i32 = 137;

/// The write end of the pipe on which the CLI that started this shim waits
/// (`--ready-fd`): one byte once the box started, EOF if it never does.
static READY: Mutex<Option<std::os::fd::OwnedFd>> = Mutex::new(None);

/// Takes the inherited descriptor `fd` as the ready pipe. It is closed on exec,
/// so neither a restart (which execs this binary again) nor a child holds it.
pub fn take_ready_fd(fd: i32) {
    use std::os::fd::FromRawFd;
    // SAFETY: the CLI passes a descriptor it opened for this process alone,
    // and nothing else here owns it.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    if rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC).is_ok() {
        *READY.lock().unwrap() = Some(fd);
    }
}

/// Tells the CLI waiting in `start` that the box is up, once.
fn signal_ready() {
    if let Some(fd) = READY.lock().unwrap().take() {
        let _ = rustix::io::write(&fd, b"1");
    }
}

/// CPU time used by this process, all its threads (the vCPUs') included.
fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Connects to guest `port` through the VMM's hybrid vsock socket.
pub fn connect_guest(socket_dir: &Path, port: u32) -> std::io::Result<UnixStream> {
    connect_guest_sending(socket_dir, port, &[])
}

/// Connects to guest `port` and sends `first` along with the CONNECT line, in
/// one write: the VMM hands those bytes to the guest as soon as the stream
/// is up, which saves a round trip per session.
pub fn connect_guest_sending(
    socket_dir: &Path,
    port: u32,
    first: &[u8],
) -> std::io::Result<UnixStream> {
    let mut s = UnixStream::connect(socket_dir.join(VSOCK_SOCKET))?;
    let mut out = format!("CONNECT {port}\n").into_bytes();
    out.extend_from_slice(first);
    s.write_all(&out)?;
    let line = read_reply_line(&mut s)?;
    if line.starts_with(b"OK ") {
        Ok(s)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!("guest port {port} is not listening"),
        ))
    }
}

/// Reads the VMM's one-line answer to CONNECT (without its newline), and not
/// a byte more: what follows belongs to the guest's stream. The line is
/// looked at with `MSG_PEEK` first, so it usually takes two system calls.
fn read_reply_line(s: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    const MAX: usize = 64;
    let mut line = Vec::new();
    let mut peeked = [0u8; MAX];
    while line.len() < MAX {
        // SAFETY: `peeked` is valid for writes of its whole length.
        let n = unsafe {
            libc::recv(
                s.as_raw_fd(),
                peeked.as_mut_ptr().cast(),
                MAX - line.len(),
                libc::MSG_PEEK,
            )
        };
        let n = match usize::try_from(n) {
            Ok(0) => break,
            Ok(n) => n,
            Err(_) => {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
        };
        // Take up to and including the newline, or all that is there.
        let end = peeked[..n].iter().position(|&b| b == b'\n');
        let take = end.map_or(n, |i| i + 1);
        let mut taken = vec![0u8; take];
        s.read_exact(&mut taken)?;
        if end.is_some() {
            taken.pop();
            line.extend_from_slice(&taken);
            break;
        }
        line.extend_from_slice(&taken);
    }
    Ok(line)
}

/// Connects to guest `port`, retrying while the guest boots, until `give_up`.
fn connect_guest_retrying(
    socket_dir: &Path,
    port: u32,
    first: &[u8],
    give_up: &dyn Fn() -> Option<String>,
) -> std::io::Result<UnixStream> {
    loop {
        match connect_guest_sending(socket_dir, port, first) {
            Ok(s) => return Ok(s),
            Err(e) => {
                if let Some(why) = give_up() {
                    return Err(std::io::Error::new(e.kind(), format!("{e} ({why})")));
                }
                std::thread::sleep(Duration::from_millis(20))
            }
        }
    }
}

/// Shared between the shim's threads.
struct Shared {
    box_dir: PathBuf,
    socket_dir: PathBuf,
    /// Writer half of the main process's session, for stdin from attached clients.
    main_in: Mutex<Option<UnixStream>>,
    /// Clients receiving the main process's output.
    clients: Mutex<Vec<UnixStream>>,
    /// Set once the first client attached (foreground runs start after that).
    attached: (Mutex<bool>, Condvar),
    /// The main process's exit code, once known, and whether the VM ended.
    end: (Mutex<(Option<i32>, bool)>, Condvar),
    log: Mutex<LogWriter>,
    /// Stop and kill requests still being answered: the shim waits for their
    /// replies to go out before it exits, or their clients would see only EOF.
    requests: (Mutex<usize>, Condvar),
    /// Set by `stop` and `kill`: no restart policy undoes them.
    stopped: (Mutex<bool>, Condvar),
    /// The VM has ended and the restart policy's wait is on: a stop or kill
    /// has nothing to signal, only the restart to call off.
    waiting_to_restart: std::sync::atomic::AtomicBool,
}

/// Counts one request in [`Shared::requests`] while it lives.
struct Answering<'a>(&'a Shared);

impl<'a> Answering<'a> {
    fn new(shared: &'a Shared) -> Self {
        *shared.requests.0.lock().unwrap() += 1;
        Answering(shared)
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        let (m, cv) = &self.0.requests;
        *m.lock().unwrap() -= 1;
        cv.notify_all();
    }
}

impl Shared {
    fn output(&self, stream: &str, data: &[u8]) {
        if let Ok(mut log) = self.log.lock() {
            let _ = log.write(stream, data);
        }
        let msg = if stream == "stdout" {
            Message::Stdout(data.to_vec())
        } else {
            Message::Stderr(data.to_vec())
        };
        let mut clients = self.clients.lock().unwrap();
        clients.retain_mut(|c| write_message(c, &msg).is_ok());
    }

    /// Tells the attached clients that the main process ended with `code`.
    fn exit_clients(&self, code: i32) {
        let mut clients = self.clients.lock().unwrap();
        for c in clients.iter_mut() {
            let _ = write_message(c, &Message::Exit { code });
        }
        clients.clear();
    }

    fn finish(&self, code: i32) {
        self.exit_clients(code);
        let (m, cv) = &self.end;
        let mut end = m.lock().unwrap();
        end.0.get_or_insert(code);
        end.1 = true;
        cv.notify_all();
    }

    /// The main process never ran: tells the clients why and ends with 125.
    fn fail_start(&self, why: std::fmt::Arguments<'_>) {
        self.output("stderr", format!("a3s-box: {why}\n").as_bytes());
        self.finish(125);
    }

    fn ended(&self) -> bool {
        self.end.0.lock().unwrap().1
    }

    /// Records that the user ended the box, and wakes a restart waiting out
    /// its delay.
    fn stop_requested(&self) {
        let (m, cv) = &self.stopped;
        *m.lock().unwrap() = true;
        cv.notify_all();
    }

    /// While a restart waits: calls it off, waits until the box is recorded
    /// as ended, and says true. Otherwise false.
    fn calling_off_restart(&self) -> bool {
        if !self
            .waiting_to_restart
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return false;
        }
        self.stop_requested();
        self.wait_end(Duration::from_secs(10));
        true
    }

    /// Waits up to `delay`; true if the user stopped the box meanwhile.
    fn stopped_within(&self, delay: Duration) -> bool {
        let (m, cv) = &self.stopped;
        let g = m.lock().unwrap();
        *cv.wait_timeout_while(g, delay, |s| !*s).unwrap().0
    }

    /// Sends a control request on a fresh control connection.
    fn control(&self, msg: &Message) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let first = proto::hello_then(msg).map_err(|e| e.to_string())?;
        let give_up = || (Instant::now() >= deadline).then(|| "for 5 s".to_string());
        let mut s = connect_guest_retrying(&self.socket_dir, PORT_CONTROL, &first, &give_up)
            .map_err(|e| e.to_string())?;
        expect_hello(&mut s).map_err(|e| e.to_string())?;
        match read_message(&mut s) {
            Ok(Some(Message::Ok)) => Ok(()),
            Ok(Some(Message::Error { message })) => Err(message),
            Ok(other) => Err(format!("unexpected reply {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    fn wait_end(&self, timeout: Duration) -> bool {
        let (m, cv) = &self.end;
        let end = m.lock().unwrap();
        let (end, _) = cv.wait_timeout_while(end, timeout, |e| !e.1).unwrap();
        end.1
    }
}

/// Reads the request line byte by byte: what follows it are the client's frames.
fn read_request_line(s: &mut UnixStream) -> Option<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 256 {
        match s.read(&mut b) {
            Ok(1) if b[0] == b'\n' => return String::from_utf8(line).ok(),
            Ok(1) => line.push(b[0]),
            _ => return None,
        }
    }
    None
}

fn handle_client(shared: Arc<Shared>, mut stream: UnixStream) {
    let Some(line) = read_request_line(&mut stream) else {
        return;
    };
    let Ok(mut input) = stream.try_clone() else {
        return;
    };
    let mut out = stream;
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["ATTACH"] | ["ATTACH-STDIN"] => {
            let with_stdin = words[0] == "ATTACH-STDIN";
            if shared.ended() {
                let code = shared.end.0.lock().unwrap().0.unwrap_or(0);
                let _ = write_message(&mut out, &Message::Exit { code });
                return;
            }
            shared.clients.lock().unwrap().push(out);
            {
                let (m, cv) = &shared.attached;
                *m.lock().unwrap() = true;
                cv.notify_all();
            }
            if with_stdin {
                // Forward the client's input frames to the main process, once it runs.
                while let Ok(Some(msg)) = read_message(&mut input) {
                    let forward = matches!(
                        msg,
                        Message::Stdin(_) | Message::StdinClose | Message::Resize { .. }
                    );
                    if !forward {
                        continue;
                    }
                    loop {
                        let mut guard = shared.main_in.lock().unwrap();
                        if let Some(w) = guard.as_mut() {
                            let _ = write_message(w, &msg);
                            break;
                        }
                        drop(guard);
                        if shared.ended() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
        ["STOP", secs] => {
            let _answering = Answering::new(&shared);
            shared.stop_requested();
            let grace = Duration::from_secs(secs.parse().unwrap_or(10));
            let reply = stop(&shared, grace);
            let _ = writeln!(out, "{reply}");
        }
        ["KILL", sig] => {
            let _answering = Answering::new(&shared);
            let reply = match sig.parse::<i32>() {
                Ok(9) if shared.calling_off_restart() => "OK".to_string(),
                Ok(9) => {
                    shared.stop_requested();
                    let _ = shared.control(&Message::Shutdown);
                    if shared.wait_end(Duration::from_secs(5)) {
                        "OK".to_string()
                    } else {
                        end_now(&shared, KILLED)
                    }
                }
                Ok(n) => match shared.control(&Message::SignalMain(n)) {
                    Ok(()) => "OK".to_string(),
                    Err(e) => format!("ERR {e}"),
                },
                Err(_) => format!("ERR invalid signal {sig}"),
            };
            let _ = writeln!(out, "{reply}");
        }
        _ => {
            let _ = writeln!(out, "ERR unknown request");
        }
    }
}

/// SIGTERM to the main process; after `grace`, power the VM off; if even that does
/// not end it, end the VM by ending this process.
fn stop(shared: &Shared, grace: Duration) -> String {
    if shared.ended() || shared.calling_off_restart() {
        return "OK".into();
    }
    let _ = shared.control(&Message::SignalMain(libc::SIGTERM));
    if shared.wait_end(grace) {
        return "OK".into();
    }
    let _ = shared.control(&Message::Shutdown);
    if shared.wait_end(Duration::from_secs(5)) {
        return "OK".into();
    }
    end_now(shared, KILLED)
}

/// Records the box as ended with `code` and exits, which ends the VM with it.
fn end_now(shared: &Shared, code: i32) -> String {
    shared.finish(code);
    "OK".into()
}

fn exec_request(cfg: &BoxConfig) -> ExecRequest {
    ExecRequest {
        argv: cfg.argv.clone(),
        env: cfg.env.clone(),
        cwd: cfg.workdir.clone(),
        user: cfg.user.clone(),
        tty: cfg.tty,
        rows: 0,
        cols: 0,
        stdin: cfg.stdin,
    }
}

/// Listens on the Unix socket `path` so that the name appears only once
/// connections are accepted: clients wait for the file to exist, and a socket
/// that is bound but not yet listening refuses them. So the socket is bound
/// and made to listen under a temporary name, then renamed into place.
fn listen_at(path: &Path) -> std::io::Result<UnixListener> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

/// The first wait before a restart by policy.
const RESTART_DELAY_MIN: Duration = Duration::from_millis(100);
/// The longest wait between restarts.
const RESTART_DELAY_MAX: Duration = Duration::from_secs(60);
/// A box that ran this long before it ended starts again after the shortest wait.
const RESTART_RESET_AFTER: Duration = Duration::from_secs(10);

/// How long to wait before restarting a box that ran for `ran`, when the wait
/// before this start was `last_ms` (0: this was not a restart). Docker's
/// backoff: 100 ms, doubled each time, at most a minute, back to 100 ms once
/// a box ran for 10 s.
fn restart_delay(ran: Duration, last_ms: u64) -> Duration {
    if ran >= RESTART_RESET_AFTER || last_ms == 0 {
        return RESTART_DELAY_MIN;
    }
    (Duration::from_millis(last_ms) * 2).clamp(RESTART_DELAY_MIN, RESTART_DELAY_MAX)
}

/// Ends the box's passt and waits until it is gone, so that the next VM's
/// passt can bind the same ports.
fn end_passt() {
    use std::sync::atomic::Ordering;
    let pid = PASST_PID.swap(0, Ordering::SeqCst);
    let Ok(pid) = i32::try_from(pid) else { return };
    if pid == 0 {
        return;
    }
    // SAFETY: kill takes plain integers; the pid is our own child's, which
    // its watcher reaps (so the pid is not reused while we wait).
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(5);
    // SAFETY: as above; signal 0 only asks whether the process exists.
    while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts the box again in a fresh VM: this process execs itself, which ends
/// the old VM with every thread and mapping of it, and keeps the pid that the
/// box's record names. Returns only on failure.
fn restart_self(id: &str, delay: Duration) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return e,
    };
    std::process::Command::new(exe)
        .arg("shim")
        .arg("--box")
        .arg(id)
        .arg("--restart-delay-ms")
        .arg(delay.as_millis().to_string())
        .exec()
}

/// The pid of this box's passt while it runs (0: none).
static PASST_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Waits for the box's passt; when it ends while the box runs, the box's
/// state says so (`inspect` shows it as State.Error).
fn watch_passt(store: Store, id: String, shared: Arc<Shared>, mut child: std::process::Child) {
    use std::sync::atomic::Ordering;
    PASST_PID.store(child.id(), Ordering::SeqCst);
    std::thread::spawn(move || {
        let status = child.wait();
        if PASST_PID.swap(0, Ordering::SeqCst) == 0 || shared.ended() {
            return;
        }
        let why = match status {
            Ok(s) => format!("the box's network ended: passt {s}"),
            Err(e) => format!("the box's network ended: passt: {e}"),
        };
        eprintln!("a3s-box-shim: {why}");
        let _lock = store.lock();
        if let Ok(mut st) = store.state(&id) {
            if st.pid == Some(std::process::id()) {
                st.error = Some(why);
                let _ = store.write_state(&id, &st);
            }
        }
    });
}

/// Runs box `id` until it ends; returns the shim's exit code (0: the box ran and its
/// end is recorded; 125: it could not be started).
pub fn serve(store: &Store, id: &str, wait_for_attach: bool, restart_delay_ms: u64) -> i32 {
    let began = Instant::now();
    let dir = store.box_dir(id);
    let fail = |msg: String| {
        eprintln!("a3s-box-shim: {msg}");
        let mut st = store.state(id).unwrap_or_else(|_| BoxState::created());
        st.status = Status::Exited;
        st.finished = Some(now());
        st.exit_code = Some(125);
        st.error = Some(msg);
        st.pid = None;
        let _ = store.write_state(id, &st);
        125
    };
    let cfg = match store.config(id) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    let sockets = store.socket_dir(id);
    if let Err(e) = std::fs::create_dir_all(&sockets) {
        return fail(format!("cannot create {}: {e}", sockets.display()));
    }
    let vsock = match Vsock::new(GUEST_CID, sockets.join(VSOCK_SOCKET)) {
        Ok(v) => v,
        Err(e) => return fail(format!("cannot create the vsock device: {e}")),
    };
    // The root: the user's directory, or an image's tree under the box's layer.
    let always = |overlay_upper| FsOptions {
        read_only: false,
        cache: CachePolicy::Always,
        overlay_upper,
    };
    let (root, shares) = match &cfg.layer {
        None => (
            RootSource::Virtiofs {
                tag: ROOT_TAG.into(),
            },
            vec![(ROOT_TAG, cfg.rootfs.as_str(), always(false))],
        ),
        Some(layer) => (
            RootSource::Overlay {
                lower: IMAGE_TAG.into(),
                upper: LAYER_TAG.into(),
            },
            vec![
                (
                    IMAGE_TAG,
                    cfg.rootfs.as_str(),
                    FsOptions {
                        read_only: true,
                        ..always(false)
                    },
                ),
                (LAYER_TAG, layer.as_str(), always(true)),
            ],
        ),
    };
    let mut devices: Vec<Box<dyn VirtioDevice>> = vec![Box::new(vsock)];
    // passt ends by itself once the VM's end of its socket closes: when this
    // shim ends, however it ends.
    let mut passt = None;
    if cfg.network.mode == NetworkMode::Passt {
        match network::start_passt(&cfg, &dir) {
            Ok(p) => {
                devices.push(Box::new(Net::new(p.stream, network::box_mac(&cfg))));
                passt = Some(p.child);
            }
            Err(e) => return fail(format!("cannot set up the box's network: {e}")),
        }
    }
    // Held to the end: dropping it takes the box's ports off the host.
    let mut on_bridge = None;
    if cfg.network.mode == NetworkMode::Bridge {
        match crate::net::bridge::start_box(store, &cfg) {
            Ok((tap, held)) => {
                devices.push(Box::new(Net::with_tap(tap, network::box_mac(&cfg))));
                on_bridge = Some(held);
            }
            Err(e) => return fail(format!("cannot set up the box's network: {e}")),
        }
    }
    for (tag, dir, opts) in shares {
        match Fs::new(tag, Path::new(dir), opts) {
            Ok(f) => devices.push(Box::new(f)),
            Err(e) => return fail(format!("cannot share the root {dir}: {e}")),
        }
    }
    // Volumes and binds: a share each, which the guest mounts in the root
    // before the main process starts. Close-to-open caching: the host, or
    // another box, may change them while this one runs.
    let (volume_shares, guest_mounts) = match crate::volume::Volumes::open(store.root())
        .and_then(|v| crate::volume::guest_mounts(&v, &cfg.mounts))
    {
        Ok(m) => m,
        Err(e) => return fail(format!("cannot set up the box's volumes: {e}")),
    };
    for s in &volume_shares {
        let opts = FsOptions {
            read_only: s.read_only,
            cache: CachePolicy::Auto,
            overlay_upper: false,
        };
        match Fs::new(&s.tag, &s.dir, opts) {
            Ok(f) => devices.push(Box::new(f)),
            Err(e) => return fail(format!("cannot share {}: {e}", s.dir.display())),
        }
    }
    let initrd = match crate::initramfs::of_this_binary(&[]) {
        Ok(i) => i,
        Err(e) => return fail(format!("cannot build the initramfs: {e}")),
    };
    let console = match std::fs::File::create(dir.join(CONSOLE_LOG)) {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot create the console log: {e}")),
    };
    let log = match crate::runtime::logs::load_config(&dir)
        .map_err(|e| e.to_string())
        .and_then(|c| LogWriter::open(&dir, &c).map_err(|e| e.to_string()))
    {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot create the box log: {e}")),
    };
    let root = root.param().expect("the root tags are valid");
    let running = match vm::start(VmConfig {
        kernel: PathBuf::from(&cfg.kernel),
        initrd: Some(initrd),
        cmdline: format!("{} {root}", vm::BASE_CMDLINE),
        init_args: None,
        cpus: cfg.cpus,
        memory: cfg.memory,
        console: Box::new(console),
        devices,
    }) {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };

    let shared = Arc::new(Shared {
        box_dir: dir.clone(),
        socket_dir: sockets.clone(),
        main_in: Mutex::new(None),
        clients: Mutex::new(Vec::new()),
        attached: (Mutex::new(false), Condvar::new()),
        end: (Mutex::new((None, false)), Condvar::new()),
        log: Mutex::new(log),
        requests: (Mutex::new(0), Condvar::new()),
        stopped: (Mutex::new(false), Condvar::new()),
        waiting_to_restart: std::sync::atomic::AtomicBool::new(false),
    });

    if let Some(child) = passt {
        watch_passt(store.clone(), id.to_string(), shared.clone(), child);
    }

    // The box is "created" with a live shim until its main process has started.
    // Under the store's lock: `start` writes this shim's pid under it first.
    let st = {
        let _lock = store.lock();
        let mut st = store.state(id).unwrap_or_else(|_| BoxState::created());
        st.status = Status::Created;
        st.pid = Some(std::process::id());
        st.pid_start = super::record::process_start(std::process::id());
        st.exit_code = None;
        st.error = None;
        let _ = store.write_state(id, &st);
        st
    };

    let (vm_tx, vm_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = vm_tx.send(running.wait());
    });

    let listener = match listen_at(&sockets.join(SHIM_SOCKET)) {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot listen on {SHIM_SOCKET}: {e}")),
    };
    if wait_for_attach {
        // The main process waits for its client, which may attach from now on.
        signal_ready();
    }
    {
        let shared = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let shared = shared.clone();
                std::thread::spawn(move || handle_client(shared, conn));
            }
        });
    }

    // Start the main process once the guest listens (and, for a foreground run,
    // once its client is attached so no output is missed).
    {
        let shared = shared.clone();
        let req = exec_request(&cfg);
        let mut setup = network::box_setup(&cfg);
        setup.security = cfg.security.guest();
        let hostname = cfg.hostname.clone();
        let mut running_state = st.clone();
        let health = cfg
            .health
            .clone()
            .map(|check| (store.clone(), cfg.clone(), check));
        // A start by hand is recorded by whoever started the box; one by the
        // restart policy only here.
        let restarted = restart_delay_ms > 0;
        let (store_for_events, cfg_for_events) = (store.clone(), cfg.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + BOOT_TIMEOUT;
            let give_up = || {
                if shared.ended() {
                    Some("the VM ended".to_string())
                } else if Instant::now() >= deadline {
                    Some(format!("still booting after {} s", BOOT_TIMEOUT.as_secs()))
                } else if cpu_time() >= BOOT_CPU_LIMIT {
                    Some(format!(
                        "still booting after {} s of CPU time",
                        BOOT_CPU_LIMIT.as_secs()
                    ))
                } else {
                    None
                }
            };
            // The handshake's Hello goes out with the CONNECT line.
            let hello = our_hello().encode().unwrap_or_default();
            let conn =
                match connect_guest_retrying(&shared.socket_dir, PORT_CONTROL, &hello, &give_up) {
                    Ok(c) => c,
                    Err(e) => {
                        // Nothing will ever run in this VM: end the box.
                        shared.fail_start(format_args!("the guest did not start: {e}"));
                        return;
                    }
                };
            if wait_for_attach {
                let (m, cv) = &shared.attached;
                let g = m.lock().unwrap();
                let _g = cv.wait_timeout_while(g, ATTACH_TIMEOUT, |a| !*a).unwrap();
            }
            let start = move || -> Result<(UnixStream, UnixStream), String> {
                let mut r = conn.try_clone().map_err(|e| e.to_string())?;
                let mut w = conn;
                expect_hello(&mut r).map_err(|e| e.to_string())?;
                let run = Message::RunMain {
                    hostname,
                    exec: req,
                    setup,
                    mounts: guest_mounts,
                };
                write_message(&mut w, &run).map_err(|e| e.to_string())?;
                Ok((r, w))
            };
            let started = start();
            let (r, w) = match started {
                Ok(rw) => rw,
                Err(e) => {
                    shared.fail_start(format_args!("cannot start the main process: {e}"));
                    return;
                }
            };
            *shared.main_in.lock().unwrap() = Some(w);
            // Output arrives as many small vsock packets: buffer the frame headers.
            let mut r = std::io::BufReader::with_capacity(proto::MAX_DATA, r);
            loop {
                match read_message(&mut r) {
                    Ok(Some(Message::Started { .. })) => {
                        running_state.status = Status::Running;
                        running_state.started = Some(now());
                        running_state.health = None;
                        if restarted {
                            super::events::emit(
                                store_for_events.root(),
                                "start",
                                &cfg_for_events,
                                &[],
                            );
                        }
                        let _ = super::store::write_json_atomic(
                            &shared.box_dir.join(super::store::STATE_FILE),
                            &running_state,
                        );
                        signal_ready();
                        if let Some((store, cfg, check)) = health.clone() {
                            let shared = shared.clone();
                            std::thread::spawn(move || {
                                super::health::run(
                                    &store,
                                    &cfg,
                                    &check,
                                    &|d| shared.wait_end(d),
                                    &|status| {
                                        let action = format!("health_status: {status}");
                                        super::events::emit(store.root(), &action, &cfg, &[]);
                                    },
                                )
                            });
                        }
                    }
                    Ok(Some(Message::Stdout(d))) => shared.output("stdout", &d),
                    Ok(Some(Message::Stderr(d))) => shared.output("stderr", &d),
                    Ok(Some(Message::Error { message })) => {
                        shared.output("stderr", format!("a3s-box: {message}\n").as_bytes())
                    }
                    Ok(Some(Message::Exit { code })) => {
                        let (m, _) = &shared.end;
                        m.lock().unwrap().0.get_or_insert(code);
                        break;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        });
    }

    // The box ends when the VM does, or when a stop/kill recorded an end.
    let code = loop {
        match vm_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(VmExit::Status(code))) => {
                break shared.end.0.lock().unwrap().0.unwrap_or(i32::from(code))
            }
            Ok(Ok(VmExit::Reset)) => {
                break shared.end.0.lock().unwrap().0.unwrap_or(KILLED);
            }
            Ok(Err(e)) => {
                shared.output(
                    "stderr",
                    format!("a3s-box: the VM failed: {e}\n").as_bytes(),
                );
                break 125;
            }
            Err(mpsc::RecvTimeoutError::Timeout) if shared.ended() => {
                break shared.end.0.lock().unwrap().0.unwrap_or(KILLED);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break 125,
        }
    };
    // Under the lock: health checks and pause write this record too.
    let mut lock = Some(store.lock());
    let mut st = store.state(id).unwrap_or(st);
    if st.status == Status::Created {
        st.error
            .get_or_insert_with(|| "the main process did not start".into());
    }
    if let Ok(mut log) = shared.log.lock() {
        let _ = log.flush();
    }
    // The record is re-read: `container-update` may have changed the policy.
    let policy = store.config(id).map_or(cfg.restart, |c| c.restart);
    let stopped = *shared.stopped.0.lock().unwrap();
    super::events::emit(store.root(), "die", &cfg, &[("exitCode", code.to_string())]);
    if !stopped && !cfg.auto_remove && policy.restarts(code, st.restart_count) {
        st.status = Status::Restarting;
        st.finished = Some(now());
        st.exit_code = Some(code);
        let _ = store.write_state(id, &st);
        lock = None;
        shared.exit_clients(code);
        shared
            .waiting_to_restart
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let delay = restart_delay(began.elapsed(), restart_delay_ms);
        if !shared.stopped_within(delay) {
            st.restart_count += 1;
            let _ = store.write_state(id, &st);
            super::events::emit(store.root(), "restart", &cfg, &[]);
            end_passt();
            // The next shim publishes them again; exec runs no destructors.
            drop(on_bridge.take());
            let err = restart_self(id, delay);
            eprintln!("a3s-box-shim: cannot restart the box: {err}");
        }
    }
    // Off the host before the box reads as exited: its ports are free then.
    drop(on_bridge.take());
    st.stopped_by_user = *shared.stopped.0.lock().unwrap();
    st.status = Status::Exited;
    st.pid = None;
    st.pid_start = None;
    st.finished = Some(now());
    st.exit_code = Some(code);
    let lock = lock.unwrap_or_else(|| store.lock());
    let _ = store.write_state(id, &st);
    drop(lock);
    let _ = std::fs::remove_dir_all(&sockets);
    // Removed before clients hear the end, so `run --rm` returns with no box left.
    if cfg.auto_remove && store.remove(id).is_ok() {
        super::events::emit(store.root(), "destroy", &cfg, &[]);
        // As Docker's --rm: the box's anonymous volumes go with it.
        let _ = crate::volume::remove_box_volumes(store, &cfg);
    }
    shared.finish(code);
    // Let stop and kill requests that ended the box tell their clients so.
    let (m, cv) = &shared.requests;
    let pending = m.lock().unwrap();
    let _ = cv.wait_timeout_while(pending, Duration::from_secs(3), |n| *n > 0);
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connect_reply_line_is_read_without_the_guest_bytes_behind_it() {
        let (mut vmm, mut client) = UnixStream::pair().unwrap();
        vmm.write_all(b"OK 1055\nguest bytes").unwrap();
        assert_eq!(read_reply_line(&mut client).unwrap(), b"OK 1055");
        let mut rest = [0u8; 11];
        client.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"guest bytes");
    }

    #[test]
    fn a_connect_reply_line_in_pieces_is_read_whole() {
        let (mut vmm, mut client) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            vmm.write_all(b"OK 10").unwrap();
            std::thread::sleep(Duration::from_millis(50));
            vmm.write_all(b"55\nx").unwrap();
            vmm
        });
        assert_eq!(read_reply_line(&mut client).unwrap(), b"OK 1055");
        let _vmm = writer.join().unwrap();
        let mut rest = [0u8; 1];
        client.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"x");
    }

    #[test]
    fn a_connect_reply_cut_short_is_what_arrived() {
        let (mut vmm, mut client) = UnixStream::pair().unwrap();
        vmm.write_all(b"ERR no").unwrap();
        drop(vmm);
        assert_eq!(read_reply_line(&mut client).unwrap(), b"ERR no");
    }

    #[test]
    fn restarts_back_off_as_dockers() {
        let quick = Duration::from_secs(1);
        assert_eq!(restart_delay(quick, 0), Duration::from_millis(100));
        assert_eq!(restart_delay(quick, 100), Duration::from_millis(200));
        assert_eq!(restart_delay(quick, 400), Duration::from_millis(800));
        assert_eq!(restart_delay(quick, 50_000), Duration::from_secs(60));
        assert_eq!(
            restart_delay(Duration::from_secs(10), 50_000),
            Duration::from_millis(100),
            "a box that ran 10 s starts over"
        );
    }

    #[test]
    fn listen_at_leaves_only_the_final_name_and_it_accepts() {
        let dir = std::env::temp_dir().join(format!("a3s-shim-listen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(SHIM_SOCKET);
        let listener = listen_at(&path).unwrap();
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [SHIM_SOCKET], "no temporary name is left behind");
        let mut client = UnixStream::connect(&path).unwrap();
        client.write_all(b"x").unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        let mut got = [0u8; 1];
        accepted.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"x");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
