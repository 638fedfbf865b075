//! The guest's servers: one process session per exec or PTY connection, and
//! the control connection (main process, status, signals, shutdown).
//!
//! Everything here works on any [`Connection`] (a vsock stream in the VM, a
//! `UnixStream` in tests), so it is tested on the host. Per session: the
//! connection's thread reads frames from the host, one thread per output
//! stream turns the process's output into frames, one thread feeds its
//! stdin, and one waits for its exit. Frames to the host go through one
//! [`Outbox`] so they never interleave.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::spawn::{self, Placement, SpawnFailure, Spec, Stdio};
use super::supervisor::{Isolation, Supervisor};
use super::{pty, user, workload, DEFAULT_PATH};
use crate::proto::{
    read_message, seal_output_frame, server_handshake, BoxSetup, ExecRequest, FrameError,
    GuestMount, Message, OutputStream, DATA_HEADER_LEN, LINGER_SECS, MAX_DATA, PORT_EXEC, PORT_PTY,
};

/// How long output may keep coming after the process ended (from processes
/// it left behind) before `Exit` is sent anyway.
pub const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// How long the guest waits after `Exit` for the host to close.
pub const LINGER: Duration = Duration::from_secs(LINGER_SECS);

/// A byte stream to the host that several threads can use.
pub trait Connection: Read + Write + Send + Sized + 'static {
    /// Another handle to the same connection.
    fn try_clone(&self) -> io::Result<Self>;
    /// Ends the connection both ways, waking any thread blocked on it.
    fn shutdown(&self);
}

impl Connection for UnixStream {
    fn try_clone(&self) -> io::Result<Self> {
        UnixStream::try_clone(self)
    }

    fn shutdown(&self) {
        let _ = UnixStream::shutdown(self, std::net::Shutdown::Both);
    }
}

/// Frames to the host, from any thread, one whole frame at a time. Once the
/// connection fails, frames are dropped (the process keeps running, its
/// output drained).
#[derive(Clone)]
pub struct Outbox(Arc<Mutex<Option<Box<dyn Write + Send>>>>);

impl Outbox {
    /// Frames go to `w`.
    pub fn new(w: impl Write + Send + 'static) -> Self {
        Outbox(Arc::new(Mutex::new(Some(Box::new(w)))))
    }

    /// Sends `msg` unless `muted` is set (checked under the same lock, so
    /// nothing slips in after [`Outbox::send_last`]). Whether it was sent.
    pub fn send_unless(&self, muted: &AtomicBool, msg: &Message) -> bool {
        match msg.encode() {
            Ok(frame) => self.send_frame_unless(muted, &frame),
            Err(_) => false,
        }
    }

    /// Sends one whole encoded `frame`, as [`Outbox::send_unless`] does.
    fn send_frame_unless(&self, muted: &AtomicBool, frame: &[u8]) -> bool {
        let mut w = self.0.lock().unwrap_or_else(|e| e.into_inner());
        !muted.load(Ordering::SeqCst) && write_or_drop(&mut w, frame)
    }

    /// Sends `msg`.
    pub fn send(&self, msg: &Message) -> bool {
        self.send_unless(&AtomicBool::new(false), msg)
    }

    /// Sends `msg` as the last frame for `muted`'s owner and sets `muted`.
    pub fn send_last(&self, muted: &AtomicBool, msg: &Message) -> bool {
        let mut w = self.0.lock().unwrap_or_else(|e| e.into_inner());
        muted.store(true, Ordering::SeqCst);
        msg.encode()
            .is_ok_and(|frame| write_or_drop(&mut w, &frame))
    }

    fn error(&self, message: impl Into<String>) {
        self.send(&Message::Error {
            message: message.into(),
        });
    }
}

/// Writes `frame` to the connection in `w`, which is dropped (and every later
/// frame with it) once a write fails. Whether it was written.
fn write_or_drop(w: &mut Option<Box<dyn Write + Send>>, frame: &[u8]) -> bool {
    let Some(out) = w.as_mut() else {
        return false;
    };
    if out.write_all(frame).and_then(|()| out.flush()).is_err() {
        *w = None;
        return false;
    }
    true
}

/// What the host can do to a running process.
pub struct Input {
    pid: i32,
    stdin: Mutex<Option<SyncSender<Vec<u8>>>>,
    terminal: Option<OwnedFd>,
    ended: AtomicBool,
}

impl Input {
    /// Applies one input frame from the host; `Err` is for an `Error` frame.
    pub fn handle(&self, msg: Message) -> Result<(), String> {
        match msg {
            Message::Stdin(data) => {
                // Cloned out of the lock: a full queue blocks this reader (the
                // backpressure) but never `close_stdin`.
                let tx = self.stdin.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some(tx) = tx {
                    let _ = tx.send(data);
                }
                Ok(())
            }
            // A terminal has no end of input; the client sends ^D as data.
            Message::StdinClose if self.terminal.is_some() => Ok(()),
            Message::StdinClose => {
                self.close_stdin();
                Ok(())
            }
            Message::Resize { rows, cols } => match &self.terminal {
                Some(master) => pty::resize(master, rows, cols)
                    .map_err(|e| format!("could not resize the terminal: {e}")),
                None => Ok(()),
            },
            Message::Signal(signo) => {
                if self.ended.load(Ordering::SeqCst) {
                    return Ok(());
                }
                // SAFETY: kill takes plain integers.
                if unsafe { libc::kill(self.pid, signo) } != 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::ESRCH) {
                        return Err(format!("could not send signal {signo}: {e}"));
                    }
                }
                Ok(())
            }
            other => Err(format!(
                "unexpected {} message in a process session",
                other.name()
            )),
        }
    }

    /// Ends the process's input (for a pipe: it reads end-of-file).
    pub fn close_stdin(&self) {
        self.stdin.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// A started process.
pub struct Process {
    status: Receiver<i32>,
    /// Its input side.
    pub input: Arc<Input>,
    pumps: Receiver<()>,
    pump_count: usize,
    muted: Arc<AtomicBool>,
}

/// What a request is for.
pub enum Kind {
    /// The box's main process.
    Main {
        /// The box's host name.
        hostname: String,
    },
    /// A further process beside it.
    Exec,
}

/// Where the process's stdio goes.
pub enum Io {
    /// Frames on a connection.
    Frames(Outbox),
    /// Init's own console (a main process named on the kernel command line).
    Console,
}

fn validate(req: &ExecRequest) -> Result<(), SpawnFailure> {
    if req.argv.is_empty() {
        return Err(SpawnFailure::runtime("no command given".into()));
    }
    if let Some((k, _)) = req
        .env
        .iter()
        .find(|(k, _)| k.is_empty() || k.contains('='))
    {
        return Err(SpawnFailure::runtime(format!(
            "invalid environment variable name {k:?}"
        )));
    }
    Ok(())
}

/// The environment: the request's, later duplicates winning, plus PATH,
/// HOSTNAME, HOME and (on a terminal) TERM when missing.
fn final_env(req: &ExecRequest, home: &str, hostname: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for (k, v) in &req.env {
        match env.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1.clone_from(v),
            None => env.push((k.clone(), v.clone())),
        }
    }
    let mut add = |k: &str, v: &str| {
        if !v.is_empty() && !env.iter().any(|(key, _)| key == k) {
            env.push((k.to_owned(), v.to_owned()));
        }
    };
    add("PATH", DEFAULT_PATH);
    add("HOSTNAME", hostname);
    add("HOME", home);
    if req.tty {
        add("TERM", "xterm");
    }
    env
}

/// Duplicates `fd` (close-on-exec, above 2).
fn dup(fd: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes a plain int; an invalid fd fails with EBADF.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    use std::os::fd::FromRawFd;
    // SAFETY: fcntl just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Starts `req` and, for [`Io::Frames`], sends `Started` and starts the
/// threads that carry its I/O.
pub fn start(
    sup: &Arc<Supervisor>,
    req: &ExecRequest,
    kind: Kind,
    io: &Io,
) -> Result<Process, SpawnFailure> {
    validate(req)?;
    let (placement, fs_root, ptmx) = match (sup.isolation(), &kind) {
        (Isolation::Off { etc_root }, _) => (
            Placement::Plain,
            etc_root.clone(),
            PathBuf::from("/dev/ptmx"),
        ),
        (Isolation::Namespaces { root }, Kind::Main { hostname }) => (
            Placement::NewBox {
                root: root.clone(),
                hostname: hostname.clone(),
            },
            PathBuf::from(root),
            PathBuf::from(root).join("dev/ptmx"),
        ),
        (_, Kind::Exec) if sup.cgroup().is_some_and(|c| c.paused()) => {
            return Err(SpawnFailure::runtime(
                "cannot exec in a paused box — unpause it first".into(),
            ));
        }
        (Isolation::Namespaces { .. }, Kind::Exec) => {
            let pid = sup.main_pid().ok_or_else(|| {
                SpawnFailure::runtime(
                    "the box's main process is not running — start the box first".into(),
                )
            })?;
            let root = PathBuf::from(format!("/proc/{pid}/root"));
            (Placement::Join { pid }, root.clone(), root.join("dev/ptmx"))
        }
    };
    let user_spec = req.user.as_deref().filter(|u| !u.is_empty());
    let mut creds = match (user_spec, &placement) {
        (Some(spec), _) => Some(spec),
        // Plain children keep init's credentials (tests run unprivileged).
        (None, Placement::Plain) => None,
        (None, _) => Some("0"),
    }
    .map(|spec| user::resolve_in(spec, &fs_root))
    .transpose()
    .map_err(|e| SpawnFailure::runtime(e.to_string()))?;
    // The box's options reach every process of it, never a plain child.
    let security = match placement {
        Placement::Plain => None,
        _ => sup.security().cloned(),
    };
    if let (Some(sec), Some(c)) = (&security, creds.as_mut()) {
        user::add_groups_in(c, &sec.group_add, &fs_root)
            .map_err(|e| SpawnFailure::runtime(e.to_string()))?;
    }
    let hostname = match &kind {
        Kind::Main { hostname } => hostname.as_str(),
        Kind::Exec => "",
    };
    let home = creds.as_ref().map_or("/root", |c| c.home.as_str());
    let env = final_env(req, home, hostname);
    let cwd = if req.cwd.is_empty() {
        "/".to_owned()
    } else {
        req.cwd.clone()
    };
    let io_err = |what: &str, e: io::Error| SpawnFailure::runtime(format!("{what}: {e}"));

    // Our ends of the process's stdio: (stdin writer, output readers).
    let mut stdin_w: Option<File> = None;
    let mut outputs: Vec<(File, OutputStream)> = Vec::new();
    let mut terminal = None;
    let stdio = match io {
        Io::Console => Stdio::Fds([
            dup(0).map_err(|e| io_err("no console", e))?,
            dup(1).map_err(|e| io_err("no console", e))?,
            dup(2).map_err(|e| io_err("no console", e))?,
        ]),
        Io::Frames(_) if req.tty => {
            let t = pty::open(&ptmx).map_err(|e| io_err("cannot allocate a terminal", e))?;
            if req.rows > 0 && req.cols > 0 {
                pty::resize(&t.master, req.rows, req.cols)
                    .map_err(|e| io_err("cannot size the terminal", e))?;
            }
            stdin_w = Some(File::from(
                t.master.try_clone().map_err(|e| io_err("cannot dup", e))?,
            ));
            outputs.push((
                File::from(t.master.try_clone().map_err(|e| io_err("cannot dup", e))?),
                OutputStream::Stdout,
            ));
            terminal = Some(t.master);
            Stdio::Terminal(t.number)
        }
        Io::Frames(_) => {
            let stdin = if req.stdin {
                let (r, w) = spawn::pipe().map_err(|e| io_err("cannot create a pipe", e))?;
                stdin_w = Some(File::from(w));
                r
            } else {
                File::open("/dev/null")
                    .map_err(|e| io_err("cannot open /dev/null", e))?
                    .into()
            };
            let (out_r, out_w) = spawn::pipe().map_err(|e| io_err("cannot create a pipe", e))?;
            let (err_r, err_w) = spawn::pipe().map_err(|e| io_err("cannot create a pipe", e))?;
            outputs.push((File::from(out_r), OutputStream::Stdout));
            outputs.push((File::from(err_r), OutputStream::Stderr));
            Stdio::Fds([stdin, out_w, err_w])
        }
    };
    let spec = Spec {
        argv: req.argv.clone(),
        env,
        cwd,
        create_cwd: matches!(kind, Kind::Main { .. }),
        creds,
        stdio,
        placement,
        security,
    };
    let main = matches!(kind, Kind::Main { .. });
    // `spec` (with the child's ends of the pipes) is gone once this returns.
    let (pid, status) = spawn::spawn(sup, spec, main)?;

    let muted = Arc::new(AtomicBool::new(false));
    let (stdin_tx, pumps_rx, pump_count) = match io {
        Io::Console => (None, mpsc::channel().1, 0),
        Io::Frames(outbox) => {
            outbox.send(&Message::Started { pid });
            let (done_tx, done_rx) = mpsc::channel();
            // One thread for all of the process's output: starting a thread
            // costs milliseconds on a slow vCPU, on every exec.
            let count = usize::from(!outputs.is_empty());
            if count > 0 {
                let outbox = outbox.clone();
                let muted = Arc::clone(&muted);
                std::thread::spawn(move || {
                    pump(outputs, &outbox, &muted);
                    let _ = done_tx.send(());
                });
            }
            let tx = stdin_w.map(|w| {
                let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(16);
                std::thread::spawn(move || feed(w, rx));
                tx
            });
            (tx, done_rx, count)
        }
    };
    Ok(Process {
        status,
        input: Arc::new(Input {
            pid,
            stdin: Mutex::new(stdin_tx),
            terminal,
            ended: AtomicBool::new(false),
        }),
        pumps: pumps_rx,
        pump_count,
        muted,
    })
}

/// Copies the process's output streams into frames until each has ended. A
/// terminal's master reports EIO once the last holder of the slave is gone:
/// that is its end. Output is read into the frame buffer behind the header
/// and sent from there.
fn pump(mut sources: Vec<(File, OutputStream)>, outbox: &Outbox, muted: &AtomicBool) {
    let mut frame = vec![0u8; DATA_HEADER_LEN + MAX_DATA];
    while !sources.is_empty() {
        let mut fds: Vec<libc::pollfd> = sources
            .iter()
            .map(|(f, _)| libc::pollfd {
                fd: f.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        // Walked backwards so an ended source can be removed in place.
        for (i, pfd) in fds.iter().enumerate().rev() {
            if pfd.revents == 0 {
                continue;
            }
            let (src, stream) = &mut sources[i];
            match src.read(&mut frame[DATA_HEADER_LEN..]) {
                Ok(0) => {
                    sources.remove(i);
                }
                Ok(n) => {
                    let frame = &mut frame[..DATA_HEADER_LEN + n];
                    if seal_output_frame(frame, *stream == OutputStream::Stderr).is_ok() {
                        outbox.send_frame_unless(muted, frame);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    sources.remove(i);
                }
            }
        }
    }
}

/// Writes what the host sends to the process's stdin; closing ends it.
fn feed(mut dst: File, rx: Receiver<Vec<u8>>) {
    for data in rx {
        if dst.write_all(&data).is_err() {
            // The process stopped reading; drop the rest.
            return;
        }
    }
}

/// Waits for `process` to end and its output to drain (at most
/// [`OUTPUT_GRACE`] after the end), then sends `Exit`; returns the code.
pub fn finish(process: Process, outbox: &Outbox) -> i32 {
    let code = match process.status.recv() {
        Ok(status) => workload::exit_code(status),
        Err(_) => workload::EXIT_RUNTIME_FAILED,
    };
    process.input.ended.store(true, Ordering::SeqCst);
    process.input.close_stdin();
    let deadline = Instant::now() + OUTPUT_GRACE;
    for _ in 0..process.pump_count {
        let left = deadline.saturating_duration_since(Instant::now());
        if process.pumps.recv_timeout(left).is_err() {
            break;
        }
    }
    outbox.send_last(&process.muted, &Message::Exit { code });
    code
}

/// Reads the host's frames for a session until the connection ends, giving
/// input frames to `input` (or refusing them when there is no process).
fn read_input(mut reader: impl Read, input: Option<&Input>, outbox: &Outbox) {
    loop {
        let msg = match read_message(&mut reader) {
            Ok(Some(m)) => m,
            Ok(None) | Err(FrameError::Io(_) | FrameError::Truncated) => break,
            Err(e) => {
                outbox.error(format!("bad frame from the host: {e}"));
                break;
            }
        };
        let result = match input {
            Some(i) => i.handle(msg),
            None => Ok(()),
        };
        if let Err(m) = result {
            outbox.error(m);
        }
    }
    if let Some(i) = input {
        i.close_stdin();
    }
}

/// Serves one exec (`tty` false) or PTY (`tty` true) connection: one process.
pub fn serve_exec<C: Connection>(sup: &Arc<Supervisor>, conn: C, tty: bool) {
    let (Ok(mut reader), Ok(mut writer)) = (conn.try_clone(), conn.try_clone()) else {
        return;
    };
    if server_handshake(&mut reader, &mut writer).is_err() {
        conn.shutdown();
        return;
    }
    let outbox = Outbox::new(writer);
    let started = match read_message(&mut reader) {
        Ok(Some(Message::Exec(req))) if req.tty == tty => {
            start(sup, &req, Kind::Exec, &Io::Frames(outbox.clone()))
        }
        Ok(Some(m)) if !tty && super::files::is_request(&m) => {
            super::files::serve(m, &conn, reader, &outbox);
            return;
        }
        Ok(Some(Message::Exec(_))) => Err(SpawnFailure::runtime(if tty {
            format!("port {PORT_PTY} runs processes on a terminal: send tty true, or use port {PORT_EXEC}")
        } else {
            format!("port {PORT_EXEC} runs processes without a terminal: send tty false, or use port {PORT_PTY}")
        })),
        Ok(Some(other)) => Err(SpawnFailure::runtime(format!(
            "expected an Exec request, got {}",
            other.name()
        ))),
        Ok(None) | Err(_) => {
            conn.shutdown();
            return;
        }
    };
    let (done_tx, done_rx) = mpsc::channel::<()>();
    match started {
        Ok(process) => {
            let input = Arc::clone(&process.input);
            let out = outbox.clone();
            let reader_thread = std::thread::spawn(move || {
                read_input(reader, Some(&input), &out);
                drop(done_tx);
            });
            finish(process, &outbox);
            let _ = done_rx.recv_timeout(LINGER);
            conn.shutdown();
            let _ = reader_thread.join();
        }
        Err(f) => {
            outbox.error(f.message);
            outbox.send(&Message::Exit { code: f.code });
            let out = outbox.clone();
            let reader_thread = std::thread::spawn(move || {
                read_input(reader, None, &out);
                drop(done_tx);
            });
            let _ = done_rx.recv_timeout(LINGER);
            conn.shutdown();
            let _ = reader_thread.join();
        }
    }
}

/// Serves one control connection: `Status`, `SignalMain`, `Shutdown`, and a
/// `RunMain`, whose process's I/O then shares this connection.
pub fn serve_control<C: Connection>(sup: &Arc<Supervisor>, conn: C) {
    let (Ok(mut reader), Ok(mut writer)) = (conn.try_clone(), conn.try_clone()) else {
        return;
    };
    if server_handshake(&mut reader, &mut writer).is_err() {
        conn.shutdown();
        return;
    }
    let outbox = Outbox::new(writer);
    let mut main: Option<Arc<Input>> = None;
    // Dropped when the host closes this connection: the main process's
    // reporter waits for that after `Exit`.
    let (closed_tx, closed_rx) = mpsc::channel::<()>();
    let mut closed_rx = Some(closed_rx);
    loop {
        let msg = match read_message(&mut reader) {
            Ok(Some(m)) => m,
            Ok(None) | Err(FrameError::Io(_) | FrameError::Truncated) => break,
            Err(e) => {
                outbox.error(format!("bad frame from the host: {e}"));
                break;
            }
        };
        match msg {
            Message::RunMain {
                hostname,
                exec,
                setup,
                mounts,
            } => {
                if let Err(why) = sup.begin_main() {
                    outbox.error(why);
                    continue;
                }
                let closed = closed_rx.take().unwrap_or_else(|| mpsc::channel().1);
                let setup = (setup, mounts);
                run_main(sup, &outbox, &exec, hostname, &setup, closed, &mut main);
            }
            Message::Status => {
                outbox.send(&Message::StatusReply(sup.status()));
            }
            Message::SignalMain(signo) => match sup.main_pid() {
                // SAFETY: kill takes plain integers.
                Some(pid) if unsafe { libc::kill(pid, signo) } == 0 => {
                    outbox.send(&Message::Ok);
                }
                Some(_) => outbox.error(format!(
                    "could not send signal {signo} to the main process: {}",
                    io::Error::last_os_error()
                )),
                None => outbox.error("the box's main process is not running"),
            },
            Message::Shutdown => {
                outbox.send(&Message::Ok);
                sup.request_shutdown();
            }
            m @ (Message::Stats | Message::Top | Message::Pause | Message::Unpause) => {
                outbox.send(&super::stats::answer(sup, &m));
            }
            m @ (Message::Stdin(_)
            | Message::StdinClose
            | Message::Resize { .. }
            | Message::Signal(_)) => match &main {
                Some(input) => {
                    if let Err(e) = input.handle(m) {
                        outbox.error(e);
                    }
                }
                None => outbox.error(format!(
                    "{} needs a main process started on this connection",
                    m.name()
                )),
            },
            other => outbox.error(format!(
                "unexpected {} message on the control port",
                other.name()
            )),
        }
    }
    if let Some(input) = main {
        input.close_stdin();
    }
    drop(closed_tx);
    conn.shutdown();
}

fn run_main(
    sup: &Arc<Supervisor>,
    outbox: &Outbox,
    exec: &ExecRequest,
    hostname: String,
    (setup, mounts): &(BoxSetup, Vec<GuestMount>),
    closed: Receiver<()>,
    main: &mut Option<Arc<Input>>,
) {
    let kind = Kind::Main { hostname };
    let prepared = match sup.isolation() {
        // The volumes first: files laid over the root may lie inside one.
        Isolation::Namespaces { root } => {
            sup.set_security(setup.security.clone());
            let targets: Vec<&str> = mounts.iter().map(|m| m.target.as_str()).collect();
            let sys = &mut super::sys::LinuxSys;
            super::security::prepare_root(sys, root, &setup.security, &targets)
                .and_then(|()| super::mounts::mount_volumes(sys, Path::new(root), mounts))
                .and_then(|()| super::net::apply(setup, Path::new(root)))
        }
        Isolation::Off { .. } if *setup == BoxSetup::default() && mounts.is_empty() => Ok(()),
        Isolation::Off { .. } => Err("this guest has no box root to set up".into()),
    };
    let started = prepared
        .map_err(SpawnFailure::runtime)
        .and_then(|()| start(sup, exec, kind, &Io::Frames(outbox.clone())));
    match started {
        Ok(process) => {
            *main = Some(Arc::clone(&process.input));
            let outbox = outbox.clone();
            let sup = Arc::clone(sup);
            std::thread::spawn(move || {
                finish(process, &outbox);
                let _ = closed.recv_timeout(LINGER);
                sup.main_reported();
            });
        }
        Err(f) => {
            outbox.error(f.message);
            outbox.send(&Message::Exit { code: f.code });
            sup.main_failed(f.code);
            let sup = Arc::clone(sup);
            std::thread::spawn(move || {
                let _ = closed.recv_timeout(LINGER);
                sup.main_reported();
            });
        }
    }
}

/// Starts the main process named on the kernel command line, on the console.
pub fn start_console_main(sup: &Arc<Supervisor>, argv: &[String]) {
    if let Err(why) = sup.begin_main() {
        eprintln!("a3s-box: {why}");
        return;
    }
    let req = ExecRequest {
        argv: argv.to_vec(),
        stdin: true,
        ..ExecRequest::default()
    };
    let kind = Kind::Main {
        hostname: String::new(),
    };
    if let Err(f) = start(sup, &req, kind, &Io::Console) {
        eprintln!("a3s-box: {}", f.message);
        sup.main_failed(f.code);
    }
    // Console output needs no flushing to the host.
    sup.main_reported();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::supervisor::{Main, Reaping};
    use crate::proto::{
        client_handshake, exec_client, write_message, MainStatus, OutputStream, VERSION_MAJOR,
    };
    use std::sync::atomic::AtomicUsize;

    fn supervisor() -> (Arc<Supervisor>, Arc<AtomicUsize>) {
        supervisor_in("/".into())
    }

    fn supervisor_in(etc_root: PathBuf) -> (Arc<Supervisor>, Arc<AtomicUsize>) {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&wakes);
        let sup = Supervisor::new(
            Reaping::PerChild,
            Isolation::Off { etc_root },
            Box::new(move || {
                w.fetch_add(1, Ordering::SeqCst);
            }),
        );
        (Arc::new(sup), wakes)
    }

    fn exec(argv: &[&str]) -> ExecRequest {
        ExecRequest {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            ..ExecRequest::default()
        }
    }

    /// The guest side of a connection, served on a thread.
    fn serve(sup: &Arc<Supervisor>, tty: bool) -> (UnixStream, std::thread::JoinHandle<()>) {
        let (host, guest) = UnixStream::pair().unwrap();
        let sup = Arc::clone(sup);
        let t = std::thread::spawn(move || serve_exec(&sup, guest, tty));
        (host, t)
    }

    #[derive(Debug, Default)]
    struct Output {
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    }

    fn run(
        sup: &Arc<Supervisor>,
        req: ExecRequest,
        stdin: Option<&[u8]>,
    ) -> (crate::proto::ExecOutcome, Output) {
        let tty = req.tty;
        let (host, t) = serve(sup, tty);
        let mut out = Output::default();
        let outcome = exec_client(
            host.try_clone().unwrap(),
            host.try_clone().unwrap(),
            &Message::Exec(req),
            stdin,
            |s, d| {
                match s {
                    OutputStream::Stdout => out.stdout.extend(d),
                    OutputStream::Stderr => out.stderr.extend(d),
                }
                Ok(())
            },
        )
        .unwrap();
        drop(host);
        t.join().unwrap();
        (outcome, out)
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    /// Reads frames until `Exit`, collecting them.
    fn frames_until_exit(r: &mut impl Read) -> Vec<Message> {
        let mut got = Vec::new();
        loop {
            let m = read_message(r)
                .unwrap()
                .expect("connection ended before Exit");
            let end = matches!(m, Message::Exit { .. });
            got.push(m);
            if end {
                return got;
            }
        }
    }

    #[test]
    fn exec_streams_stdout_and_stderr_apart_and_reports_the_exit_code() {
        let (sup, _) = supervisor();
        let (outcome, out) = run(
            &sup,
            exec(&["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]),
            None,
        );
        assert_eq!(outcome.code, 3);
        assert!(outcome.pid.is_some());
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
        assert_eq!(text(&out.stdout), "out\n");
        assert_eq!(text(&out.stderr), "err\n");
    }

    #[test]
    fn started_comes_first_and_exit_last() {
        let (sup, _) = supervisor();
        let (mut host, t) = serve(&sup, false);
        client_handshake(&mut host.try_clone().unwrap(), &mut host).unwrap();
        write_message(&mut host, &Message::Exec(exec(&["/bin/echo", "hi"]))).unwrap();
        let frames = frames_until_exit(&mut host);
        assert!(matches!(frames[0], Message::Started { .. }), "{frames:?}");
        assert_eq!(frames[1], Message::Stdout(b"hi\n".to_vec()));
        assert_eq!(frames.last(), Some(&Message::Exit { code: 0 }));
        drop(host);
        t.join().unwrap();
    }

    #[test]
    fn stdin_frames_reach_the_process_and_close_ends_them() {
        let (sup, _) = supervisor();
        let mut req = exec(&["cat"]);
        req.stdin = true;
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (outcome, out) = run(&sup, req, Some(&data));
        assert_eq!(outcome.code, 0);
        assert_eq!(out.stdout, data);
    }

    #[test]
    fn without_stdin_the_process_reads_dev_null() {
        let (sup, _) = supervisor();
        let (outcome, out) = run(&sup, exec(&["cat"]), None);
        assert_eq!(outcome.code, 0);
        assert!(out.stdout.is_empty());
    }

    #[test]
    fn a_missing_command_is_127_with_an_error_message() {
        let (sup, _) = supervisor();
        let (outcome, _) = run(&sup, exec(&["no-such-command-a3s", "x"]), None);
        assert_eq!(outcome.code, 127);
        assert_eq!(outcome.pid, None, "never started");
        assert_eq!(
            outcome.errors,
            [r#"exec: "no-such-command-a3s": executable file not found in $PATH"#]
        );
        let (outcome, _) = run(&sup, exec(&["/no/such/file"]), None);
        assert_eq!(outcome.code, 127);
        assert!(outcome.errors[0].contains("no such file or directory"));
    }

    #[test]
    fn a_file_that_is_not_executable_is_126() {
        let (sup, _) = supervisor();
        let dir = tempdir("noexec");
        let file = dir.join("script");
        std::fs::write(&file, "#!/bin/sh\necho hi\n").unwrap();
        let (outcome, _) = run(&sup, exec(&[file.to_str().unwrap()]), None);
        assert_eq!(outcome.code, 126);
        assert!(
            outcome.errors[0].contains("permission denied"),
            "{:?}",
            outcome.errors
        );
    }

    #[test]
    fn a_missing_working_directory_is_126() {
        let (sup, _) = supervisor();
        let mut req = exec(&["true"]);
        req.cwd = "/no/such/dir".into();
        let (outcome, _) = run(&sup, req, None);
        assert_eq!(outcome.code, 126);
        assert!(
            outcome.errors[0].contains("chdir to cwd"),
            "{:?}",
            outcome.errors
        );
    }

    #[test]
    fn env_and_cwd_are_applied_with_defaults() {
        let (sup, _) = supervisor();
        let mut req = exec(&["/bin/sh", "-c", "pwd; echo $A,$HOME,$PATH"]);
        req.env = vec![("A".into(), "1".into()), ("A".into(), "2".into())];
        req.cwd = "/tmp".into();
        let (outcome, out) = run(&sup, req, None);
        assert_eq!(outcome.code, 0);
        assert_eq!(text(&out.stdout), format!("/tmp\n2,/root,{DEFAULT_PATH}\n"));
    }

    #[test]
    fn signal_frames_reach_the_process() {
        let (sup, _) = supervisor();
        let (mut host, t) = serve(&sup, false);
        client_handshake(&mut host.try_clone().unwrap(), &mut host).unwrap();
        write_message(&mut host, &Message::Exec(exec(&["sleep", "100"]))).unwrap();
        let Some(Message::Started { .. }) = read_message(&mut host).unwrap() else {
            panic!("not started");
        };
        write_message(&mut host, &Message::Signal(libc::SIGTERM)).unwrap();
        let frames = frames_until_exit(&mut host);
        assert_eq!(frames.last(), Some(&Message::Exit { code: 143 }));
        drop(host);
        t.join().unwrap();
    }

    #[test]
    fn a_terminal_session_has_a_tty_that_resizes() {
        let (sup, _) = supervisor();
        let (mut host, t) = serve(&sup, true);
        client_handshake(&mut host.try_clone().unwrap(), &mut host).unwrap();
        let mut req = exec(&["/bin/sh", "-c", "tty; read x; stty size"]);
        req.tty = true;
        req.rows = 24;
        req.cols = 80;
        write_message(&mut host, &Message::Exec(req)).unwrap();
        let Some(Message::Started { .. }) = read_message(&mut host).unwrap() else {
            panic!("not started");
        };
        write_message(
            &mut host,
            &Message::Resize {
                rows: 40,
                cols: 100,
            },
        )
        .unwrap();
        write_message(&mut host, &Message::Stdin(b"go\n".to_vec())).unwrap();
        let frames = frames_until_exit(&mut host);
        let mut out = Vec::new();
        for f in &frames {
            match f {
                Message::Stdout(d) => out.extend(d),
                Message::Stderr(_) => panic!("a terminal has one output stream"),
                _ => {}
            }
        }
        let out = text(&out);
        assert!(out.contains("/dev/pts/"), "{out:?}");
        assert!(out.contains("40 100"), "{out:?}");
        assert_eq!(frames.last(), Some(&Message::Exit { code: 0 }));
        drop(host);
        t.join().unwrap();
    }

    #[test]
    fn a_terminal_session_starts_with_the_requested_size_and_term() {
        let (sup, _) = supervisor();
        let mut req = exec(&["/bin/sh", "-c", "stty size; echo $TERM"]);
        req.tty = true;
        req.rows = 31;
        req.cols = 97;
        let (outcome, out) = run(&sup, req, None);
        assert_eq!(outcome.code, 0);
        let out = text(&out.stdout);
        assert!(out.contains("31 97"), "{out:?}");
        assert!(out.contains("xterm"), "{out:?}");
    }

    #[test]
    fn ctrl_c_on_a_terminal_interrupts_the_foreground_process() {
        let (sup, _) = supervisor();
        let (mut host, t) = serve(&sup, true);
        client_handshake(&mut host.try_clone().unwrap(), &mut host).unwrap();
        let mut req = exec(&["/bin/sh", "-c", "echo ready; exec sleep 100"]);
        req.tty = true;
        write_message(&mut host, &Message::Exec(req)).unwrap();
        // Wait until the shell runs, then type ^C.
        let mut seen = Vec::new();
        while !text(&seen).contains("ready") {
            match read_message(&mut host).unwrap().unwrap() {
                Message::Stdout(d) => seen.extend(d),
                Message::Started { .. } => {}
                m => panic!("{m:?}"),
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        write_message(&mut host, &Message::Stdin(vec![0x03])).unwrap();
        let frames = frames_until_exit(&mut host);
        assert_eq!(frames.last(), Some(&Message::Exit { code: 130 }));
        drop(host);
        t.join().unwrap();
    }

    #[test]
    fn the_exec_port_refuses_a_terminal_request_and_the_pty_port_a_plain_one() {
        let (sup, _) = supervisor();
        let (host, t) = serve(&sup, false);
        let mut req = exec(&["true"]);
        req.tty = true;
        let outcome = exec_client(
            host.try_clone().unwrap(),
            host.try_clone().unwrap(),
            &Message::Exec(req),
            None,
            |_, _| Ok(()),
        )
        .unwrap();
        assert_eq!(outcome.code, 125);
        assert!(outcome.errors[0].contains("4090"), "{:?}", outcome.errors);
        drop(host);
        t.join().unwrap();
    }

    #[test]
    fn a_guest_of_another_major_version_is_refused_with_an_error() {
        let (sup, _) = supervisor();
        let (mut host, t) = serve(&sup, false);
        write_message(
            &mut host,
            &Message::Hello {
                major: VERSION_MAJOR + 1,
                minor: 0,
            },
        )
        .unwrap();
        let Some(Message::Error { message }) = read_message(&mut host).unwrap() else {
            panic!("no Error");
        };
        assert!(message.contains("protocol"), "{message}");
        assert!(read_message(&mut host).unwrap().is_none(), "then closed");
        t.join().unwrap();
    }

    #[test]
    fn garbage_from_the_host_ends_the_connection_without_harm() {
        let (sup, _) = supervisor();
        let (mut host, t) = serve(&sup, false);
        host.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).unwrap();
        t.join().unwrap();
        let mut rest = Vec::new();
        let _ = host.read_to_end(&mut rest);
    }

    #[test]
    fn a_user_is_looked_up_in_the_boxs_passwd_and_applied() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: switching users needs root");
            return;
        }
        let dir = tempdir("passwd");
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.join("etc/group"), "app:x:1001:\nextra:x:2000:app\n").unwrap();
        let (sup, _) = supervisor_in(dir);
        let mut req = exec(&["/bin/sh", "-c", "id -u; id -g; id -G; echo $HOME"]);
        req.user = Some("app".into());
        let (outcome, out) = run(&sup, req, None);
        assert_eq!(outcome.code, 0, "{:?}", outcome.errors);
        assert_eq!(text(&out.stdout), "1000\n1001\n1001 2000\n/home/app\n");

        let mut req = exec(&["/bin/sh", "-c", "id -u; id -g; id -G"]);
        req.user = Some("4242:4243".into());
        let (outcome, out) = run(&sup, req, None);
        assert_eq!(outcome.code, 0);
        assert_eq!(text(&out.stdout), "4242\n4243\n4243\n");
    }

    #[test]
    fn an_unknown_user_is_refused_before_anything_runs() {
        let (sup, _) = supervisor();
        let mut req = exec(&["true"]);
        req.user = Some("no-such-user-a3s".into());
        let (outcome, _) = run(&sup, req, None);
        assert_eq!(outcome.code, 125);
        assert!(
            outcome.errors[0].contains("unable to find user"),
            "{:?}",
            outcome.errors
        );
    }

    /// Whether `cond` holds within a few seconds.
    fn eventually(cond: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    fn tempdir(tag: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "a3s-guest-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    // --- control port ---------------------------------------------------

    fn control(sup: &Arc<Supervisor>) -> (UnixStream, std::thread::JoinHandle<()>) {
        let (mut host, guest) = UnixStream::pair().unwrap();
        let s = Arc::clone(sup);
        let t = std::thread::spawn(move || serve_control(&s, guest));
        client_handshake(&mut host.try_clone().unwrap(), &mut host).unwrap();
        (host, t)
    }

    fn ask(host: &mut UnixStream, msg: Message) -> Message {
        write_message(host, &msg).unwrap();
        read_message(host).unwrap().unwrap()
    }

    #[test]
    fn run_main_streams_the_main_process_on_the_control_connection() {
        let (sup, _) = supervisor();
        let (mut host, t) = control(&sup);
        assert_eq!(
            ask(&mut host, Message::Status),
            Message::StatusReply(MainStatus::default())
        );
        let mut req = exec(&["/bin/sh", "-c", "read x; echo got $x; echo e >&2; exit 5"]);
        req.stdin = true;
        write_message(
            &mut host,
            &Message::RunMain {
                hostname: "box".into(),
                exec: req,
                setup: BoxSetup::default(),
                mounts: Vec::new(),
            },
        )
        .unwrap();
        let Some(Message::Started { pid }) = read_message(&mut host).unwrap() else {
            panic!("not started");
        };
        let Message::StatusReply(st) = ask(&mut host, Message::Status) else {
            panic!("no status");
        };
        assert_eq!((st.main_pid, st.running), (pid, true));
        write_message(&mut host, &Message::Stdin(b"hello\n".to_vec())).unwrap();
        let frames = frames_until_exit(&mut host);
        assert!(
            frames.contains(&Message::Stdout(b"got hello\n".to_vec())),
            "{frames:?}"
        );
        assert!(
            frames.contains(&Message::Stderr(b"e\n".to_vec())),
            "{frames:?}"
        );
        assert_eq!(frames.last(), Some(&Message::Exit { code: 5 }));
        assert_eq!(sup.finished(), Some(5));
        assert!(
            sup.status()
                == MainStatus {
                    main_pid: pid,
                    running: false,
                    exit_code: Some(5)
                }
        );
        // The host closes: the box may power off.
        drop(host);
        assert!(sup.wait_reported(Duration::from_secs(5)));
        t.join().unwrap();
    }

    #[test]
    fn a_second_run_main_is_refused() {
        let (sup, _) = supervisor();
        let (mut host, t) = control(&sup);
        let run = Message::RunMain {
            hostname: String::new(),
            exec: exec(&["sleep", "100"]),
            setup: BoxSetup::default(),
            mounts: Vec::new(),
        };
        write_message(&mut host, &run).unwrap();
        assert!(matches!(
            read_message(&mut host).unwrap(),
            Some(Message::Started { .. })
        ));
        let Message::Error { message } = ask(&mut host, run) else {
            panic!("accepted twice");
        };
        assert!(message.contains("already started"), "{message}");
        assert_eq!(
            ask(&mut host, Message::SignalMain(libc::SIGKILL)),
            Message::Ok
        );
        let frames = frames_until_exit(&mut host);
        assert_eq!(frames.last(), Some(&Message::Exit { code: 137 }));
        drop(host);
        t.join().unwrap();
    }

    #[test]
    fn a_main_process_that_cannot_start_ends_the_box_with_its_code() {
        let (sup, _) = supervisor();
        let (mut host, t) = control(&sup);
        write_message(
            &mut host,
            &Message::RunMain {
                hostname: String::new(),
                exec: exec(&["no-such-command-a3s"]),
                setup: BoxSetup::default(),
                mounts: Vec::new(),
            },
        )
        .unwrap();
        let Some(Message::Error { message }) = read_message(&mut host).unwrap() else {
            panic!("no error");
        };
        assert!(message.contains("not found"), "{message}");
        assert_eq!(
            read_message(&mut host).unwrap(),
            Some(Message::Exit { code: 127 })
        );
        // The failed child's own exit (127) ends the box, as PID 1 reaps it.
        assert!(eventually(|| sup.finished() == Some(127)));
        drop(host);
        assert!(sup.wait_reported(Duration::from_secs(5)));
        t.join().unwrap();
    }

    #[test]
    fn signals_and_shutdown_without_a_main_process() {
        let (sup, wakes) = supervisor();
        let (mut host, t) = control(&sup);
        let Message::Error { message } = ask(&mut host, Message::SignalMain(15)) else {
            panic!("signal accepted");
        };
        assert!(message.contains("not running"));
        let Message::Error { .. } = ask(&mut host, Message::Stdin(b"x".to_vec())) else {
            panic!("stdin accepted");
        };
        assert_eq!(ask(&mut host, Message::Shutdown), Message::Ok);
        assert!(eventually(|| wakes.load(Ordering::SeqCst) == 1));
        assert_eq!(sup.finished(), Some(0));
        drop(host);
        t.join().unwrap();
    }

    #[test]
    fn an_exec_beside_a_plain_main_needs_no_namespaces() {
        // With isolation off, exec sessions do not need a main process.
        let (sup, _) = supervisor();
        assert_eq!(sup.main(), Main::NotStarted);
        let (outcome, out) = run(&sup, exec(&["/bin/echo", "ok"]), None);
        assert_eq!((outcome.code, text(&out.stdout)), (0, "ok\n".into()));
    }

    // --- real namespaces (root only; mounts, so run it in its own mount
    // namespace: `unshare -m --propagation private cargo test --lib --
    // --ignored namespaces`) -------------------------------------------

    fn mount(src: &str, target: &std::path::Path, fstype: &str, flags: libc::c_ulong, data: &str) {
        use std::ffi::CString;
        let c = |s: &str| CString::new(s).unwrap();
        let (src, target, fstype, data) = (c(src), c(target.to_str().unwrap()), c(fstype), c(data));
        // SAFETY: all four are NUL-terminated and outlive the call.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                flags,
                data.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount {target:?}: {}", io::Error::last_os_error());
    }

    #[test]
    #[ignore = "needs root and mounts: run under `unshare -m --propagation private`"]
    fn namespaces_main_gets_its_own_box_and_execs_join_it() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/bin/busybox").exists() {
            eprintln!("skipped: needs root and /bin/busybox");
            return;
        }
        let root = tempdir("nsroot");
        for d in ["bin", "etc", "proc", "dev", "tmp", "home/app"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        for c in [
            "sh", "hostname", "id", "cat", "ls", "tty", "stty", "sleep", "readlink",
        ] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(c)).unwrap();
        }
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/group"), "app:x:1000:\nextra:x:77:app\n").unwrap();
        // What init does in the VM: the root is a mount, with a devpts of its own.
        mount(root.to_str().unwrap(), &root, "", libc::MS_BIND, "");
        mount("tmpfs", &root.join("dev"), "tmpfs", 0, "mode=0755");
        std::fs::create_dir_all(root.join("dev/pts")).unwrap();
        mount(
            "devpts",
            &root.join("dev/pts"),
            "devpts",
            0,
            "newinstance,ptmxmode=0666,mode=0620",
        );
        std::os::unix::fs::symlink("pts/ptmx", root.join("dev/ptmx")).unwrap();

        let sup = Arc::new(Supervisor::new(
            Reaping::PerChild,
            Isolation::Namespaces {
                root: root.to_str().unwrap().into(),
            },
            Box::new(|| {}),
        ));
        let (mut host, t) = control(&sup);
        let mut req = exec(&[
            "/bin/sh",
            "-c",
            "echo pid=$$; hostname; ls /; read x; echo bye",
        ]);
        req.stdin = true;
        req.cwd = "/srv/app".into();
        write_message(
            &mut host,
            &Message::RunMain {
                hostname: "box1".into(),
                exec: req,
                setup: BoxSetup::default(),
                mounts: Vec::new(),
            },
        )
        .unwrap();
        let Some(Message::Started { .. }) = read_message(&mut host).unwrap() else {
            panic!("main not started");
        };
        let mut out = Vec::new();
        while !text(&out).contains("tmp") {
            match read_message(&mut host).unwrap().unwrap() {
                Message::Stdout(d) => out.extend(d),
                m => panic!("{m:?}"),
            }
        }
        let main_out = text(&out);
        assert!(main_out.starts_with("pid=1\nbox1\n"), "{main_out:?}");
        assert!(main_out.contains("srv"), "cwd was created: {main_out:?}");

        // An exec joins the main process's namespaces and root, as a user.
        let mut req = exec(&[
            "/bin/sh",
            "-c",
            "echo pid=$$; hostname; id -u; id -G; pwd; cat /proc/1/cmdline; echo",
        ]);
        req.user = Some("app".into());
        req.cwd = "/home/app".into();
        let (outcome, out) = run(&sup, req, None);
        assert_eq!(
            outcome.code,
            0,
            "{:?} {}",
            outcome.errors,
            text(&out.stderr)
        );
        let lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
        assert_ne!(lines[0], "pid=1");
        assert_eq!(&lines[1..5], ["box1", "1000", "1000 77", "/home/app"]);
        assert!(lines[5].starts_with("/bin/sh"), "{lines:?}");

        // A terminal from the box's own devpts.
        let mut req = exec(&["/bin/sh", "-c", "tty; readlink /proc/self/fd/0"]);
        req.tty = true;
        let (outcome, out) = run(&sup, req, None);
        assert_eq!(outcome.code, 0, "{:?}", outcome.errors);
        let tty = text(&out.stdout);
        assert!(tty.starts_with("/dev/pts/0"), "{tty:?}");

        write_message(&mut host, &Message::Stdin(b"go\n".to_vec())).unwrap();
        let frames = frames_until_exit(&mut host);
        assert!(
            frames.contains(&Message::Stdout(b"bye\n".to_vec())),
            "{frames:?}"
        );
        assert_eq!(frames.last(), Some(&Message::Exit { code: 0 }));
        drop(host);
        t.join().unwrap();

        // With the main process gone, an exec has nothing to join.
        let (outcome, _) = run(&sup, exec(&["true"]), None);
        assert_eq!(outcome.code, 125);
        assert!(
            outcome.errors[0].contains("not running"),
            "{:?}",
            outcome.errors
        );
        let c = std::ffi::CString::new(root.to_str().unwrap()).unwrap();
        // SAFETY: `c` is NUL-terminated; detaching our own test mount.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }

    #[test]
    fn env_defaults_do_not_override_the_request() {
        let mut req = exec(&["x"]);
        req.env = vec![
            ("HOME".into(), "/h".into()),
            ("TERM".into(), "vt100".into()),
        ];
        req.tty = true;
        let env = final_env(&req, "/root", "web");
        assert_eq!(
            env,
            [
                ("HOME".into(), "/h".into()),
                ("TERM".into(), "vt100".into()),
                ("PATH".into(), DEFAULT_PATH.into()),
                ("HOSTNAME".into(), "web".into()),
            ]
        );
    }

    #[test]
    fn invalid_requests_are_refused() {
        assert!(validate(&ExecRequest::default()).is_err());
        let mut req = exec(&["x"]);
        req.env = vec![("A=B".into(), "1".into())];
        assert!(validate(&req).is_err());
        req.env = vec![(String::new(), "1".into())];
        assert!(validate(&req).is_err());
    }
}
