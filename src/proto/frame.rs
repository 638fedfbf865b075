//! The host↔guest wire format on vsock: frames, messages, and the handshake.
//!
//! This is the one description of the format; both ends compile this file.
//!
//! # Ports
//!
//! The guest listens on three vsock ports ([`PORT_CONTROL`], [`PORT_EXEC`],
//! [`PORT_PTY`]); the host connects (through the VMM's hybrid-vsock Unix socket).
//! Every connection starts with a handshake: the host sends `Hello`, the guest
//! answers with its own `Hello`, or with `Error` and a close when the major
//! versions differ. A minor version only adds meaning; a peer must not send a
//! message type the other side's minor version does not know.
//!
//! | port | what it carries |
//! |---|---|
//! | 4088 control | any number of `Status`, `SignalMain`, `Shutdown`, `Stats`, `Top`, `Pause`, `Unpause`; at most one `RunMain` per box, after which the connection also carries the main process's I/O (as on the exec port) |
//! | 4089 exec | one `Exec` (with `tty: false`), then that process's I/O until `Exit`; or one *file request* (`PathStat`, `ArchiveGet`, `ArchivePut`, see below) |
//! | 4090 PTY | one `Exec` (with `tty: true`), the same over a pseudo-terminal |
//!
//! A process session goes: host `Exec` (or `RunMain`) → guest `Started` (or
//! `Error` then `Exit` when it could not be started) → host `Stdin`,
//! `StdinClose`, `Resize`, `Signal` and guest `Stdout`, `Stderr`, in any order →
//! guest `Exit`, the last frame of the session. The host then closes the
//! connection; the guest waits [a short while](LINGER_SECS) for that before
//! closing it itself (for the main process, before powering off), so the host
//! has read every frame before the VM goes away.
//!
//! # Frames
//!
//! | field | size | meaning |
//! |---|---|---|
//! | length | 4 bytes, u32 little-endian | bytes that follow: 1 to [`MAX_FRAME`] |
//! | type | 1 byte | message type, from the table below |
//! | payload | length − 1 bytes | the message's fields, in table order |
//!
//! Field encodings: integers little-endian; `bool` one byte, 0 or 1; `str` a
//! u32 byte count then that many bytes of UTF-8; `list<T>` a u32 item count
//! then the items; `opt<T>` one byte 0 (absent) or 1 followed by a `T`;
//! `rest` every remaining byte of the frame. A payload must be consumed
//! exactly: trailing bytes are an error, as are unknown types, bad UTF-8,
//! a `bool` other than 0/1 and a length above [`MAX_FRAME`] (refused before
//! anything is allocated for it).
//!
//! # Messages
//!
//! | type | message | sent by | payload |
//! |---|---|---|---|
//! | 0x01 | `Hello` | both, first | major u16, minor u16 |
//! | 0x02 | `Error` | guest | message str (for people: print it on stderr) |
//! | 0x03 | `Ok` | guest | — (reply to `SignalMain`, `Shutdown`, `Pause`, `Unpause`) |
//! | 0x10 | `Exec` | host | *exec request*, see below |
//! | 0x11 | `Started` | guest | pid i32 (as the guest's PID 1 sees it) |
//! | 0x12 | `Stdin` | host | data rest |
//! | 0x13 | `StdinClose` | host | — (ignored on a terminal: send ^D as data) |
//! | 0x14 | `Stdout` | guest | data rest (a terminal's output is all `Stdout`) |
//! | 0x15 | `Stderr` | guest | data rest |
//! | 0x16 | `Resize` | host | rows u16, cols u16 (terminal sessions only) |
//! | 0x17 | `Signal` | host | signo i32, to the session's process |
//! | 0x18 | `Exit` | guest | code i32: exit code, 128 + signo when killed, 125 the runtime failed, 126 cannot invoke, 127 not found |
//! | 0x20 | `RunMain` | host, control | hostname str, then *exec request*, then *box setup*: net bool, and when true interface str, address u32, prefix u16, gateway u32 (IPv4, big-endian value), mtu u16 (0: the device's own); then files list\<path str, content str\>; then *security*; then mounts list\<*mount*\> |
//! | 0x21 | `Status` | host, control | — |
//! | 0x22 | `StatusReply` | guest | main_pid i32 (0: not started), running bool, exit_code opt\<i32\> |
//! | 0x23 | `SignalMain` | host, control | signo i32, to the main process |
//! | 0x24 | `Shutdown` | host, control | — (power off now; the main process is killed) |
//! | 0x30 | `Stats` | host, control | — (the box's resource use) |
//! | 0x31 | `StatsReply` | guest | *box stats*, see below |
//! | 0x32 | `Top` | host, control | — (the box's processes) |
//! | 0x33 | `TopReply` | guest | mem_total u64 (bytes), processes list\<*process*\> (by pid; as many as fit in one frame) |
//! | 0x34 | `Pause` | host, control | — (freeze the box's processes; `Ok` once they are frozen) |
//! | 0x35 | `Unpause` | host, control | — (thaw them; `Ok` once they run again) |
//! | 0x40 | `PathStat` | host, exec | path str (in the box's root) |
//! | 0x41 | `PathInfo` | guest | name str, size u64, mode u32 (`st_mode`), mtime i64 (seconds), link_target str (a symbolic link's target resolved in the box; else empty) |
//! | 0x42 | `ArchiveGet` | host, exec | path str: archive it |
//! | 0x43 | `ArchivePut` | host, exec | dir str, owner opt\<uid u32, gid u32\> (absent: the archive's owners): extract into it |
//!
//! *Mount* (what init mounts in the box's root before the main process, in
//! order): target str (absolute, in the box), read_only bool, kind u8, then
//! for kind 0 (a virtio-fs share) tag str; for kind 1 (a tmpfs) data str
//! (`size=…,mode=…`), exec bool, suid bool, dev bool.
//!
//! *Security* (applied by init to the main process; capabilities,
//! no_new_privs and group_add to exec'd processes too): caps u64 (bit n:
//! capability n; the bounding set, and a root process's permitted and
//! effective sets), no_new_privs bool, read_only_root bool, privileged bool
//! (`/sys`, `/proc/sys` writable, `/proc` unmasked), init bool (our reaper
//! as the box's PID 1), group_add list\<str\> (names or gids), sysctls
//! list\<key str, value str\>.
//!
//! *Exec request*: argv list\<str\> (program first), env list\<str, str\>
//! (key, value), cwd str (empty: `/`), user opt\<str\> (`uid`, `uid:gid`,
//! `name`, `name:group`, looked up in the box's `/etc/passwd` and
//! `/etc/group`; absent: root), tty bool, rows u16, cols u16 (initial
//! terminal size; 0 leaves the default), stdin bool (false: `/dev/null`).
//!
//! *Box stats*, read by init from the box's cgroup and its own `/proc`:
//! time_usec u64 (the guest's monotonic clock when sampled: divide CPU time
//! by its differences), cpu_usec u64 (`cpu.stat` usage_usec), memory u64
//! (`memory.current`, bytes), inactive_file u64 (from `memory.stat`, bytes),
//! memory_total u64 (the guest's MemTotal, bytes), pids u64 (`pids.current`),
//! net_rx opt\<u64\>, net_tx opt\<u64\> (bytes over the guest's interfaces
//! but `lo`), block_read opt\<u64\>, block_write opt\<u64\> (bytes, `io.stat`;
//! absent where the kernel has no io controller).
//!
//! *Process*: pid i32, ppid i32 (as the box's PID namespace numbers them;
//! ppid 0: a parent outside the box), uid u32, user str (the uid's name in
//! the box's `/etc/passwd`, or empty), stat str (as ps's STAT: state letter,
//! then `<`, `N`, `s`, `l`, `+`), tty u32 (the terminal's device number; 0:
//! none), cpu_ms u64 (user + system time), age_ms u64 (since it started),
//! vsz u64, rss u64 (bytes), comm str, args list\<str\> (empty for a process
//! without a command line).
//!
//! *File requests*, as Docker's archive API for a container: paths are in
//! the box's root (`..` stops at `/`, symbolic links resolve inside it).
//! `PathStat` → `PathInfo` or `Error`. `ArchiveGet` → `PathInfo`, then the
//! path as a tar stream in `Stdout` frames (entries named from the path's
//! last component), then `Exit` 0; or `Error` then `Exit` 1, at any point.
//! `ArchivePut` → the host sends a tar stream in `Stdin` frames and
//! `StdinClose`; the guest extracts it into the existing directory and
//! answers `Ok`, or `Error` (and closes) as soon as it fails.

use std::io::{self, Read, Write};

/// vsock port of the control server (box status, main process).
pub const PORT_CONTROL: u32 = 4088;
/// vsock port of the exec server (further processes, pipes).
pub const PORT_EXEC: u32 = 4089;
/// vsock port of the PTY server (further processes on a terminal).
pub const PORT_PTY: u32 = 4090;

/// Major protocol version; peers with different majors refuse each other.
pub const VERSION_MAJOR: u16 = 1;
/// Minor protocol version; see the module documentation.
pub const VERSION_MINOR: u16 = 1;

/// Largest value of a frame's length field (type byte plus payload): 1 MiB.
pub const MAX_FRAME: usize = 1 << 20;

/// Largest chunk of process output or input to put in one frame.
pub const MAX_DATA: usize = 64 * 1024;

/// Seconds the guest waits, after a session's `Exit`, for the host to close.
pub const LINGER_SECS: u64 = 2;

/// Why a frame could not be read, written or understood.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The connection failed.
    #[error("the connection failed")]
    Io(#[source] io::Error),
    /// The peer closed the connection in the middle of a frame.
    #[error("the connection ended in the middle of a frame")]
    Truncated,
    /// The length field exceeds [`MAX_FRAME`].
    #[error("a frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Length the frame claims or would need.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The length field is zero: there is not even a type byte.
    #[error("an empty frame has no message type")]
    Empty,
    /// The type byte names no message.
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    /// The payload ended before a field did.
    #[error("the {message} message is cut short in its {field} field")]
    ShortPayload {
        /// Name of the message.
        message: &'static str,
        /// Name of the field being read.
        field: &'static str,
    },
    /// Bytes are left after the last field.
    #[error("the {message} message has {extra} unexpected bytes after its last field")]
    TrailingBytes {
        /// Name of the message.
        message: &'static str,
        /// How many bytes were left.
        extra: usize,
    },
    /// A number is out of its field's range.
    #[error("the {field} field of the {message} message is out of range: {value}")]
    OutOfRange {
        /// Name of the message.
        message: &'static str,
        /// Name of the field.
        field: &'static str,
        /// The value read.
        value: u64,
    },
    /// A string field is not UTF-8.
    #[error("the {field} field of the {message} message is not valid UTF-8")]
    BadUtf8 {
        /// Name of the message.
        message: &'static str,
        /// Name of the field.
        field: &'static str,
    },
    /// A boolean or option tag is neither 0 nor 1.
    #[error("the {field} field of the {message} message holds {value}, not 0 or 1")]
    BadFlag {
        /// Name of the message.
        message: &'static str,
        /// Name of the field.
        field: &'static str,
        /// The byte found.
        value: u8,
    },
    /// The peer speaks another major version.
    #[error(
        "the peer speaks protocol {theirs_major}.{theirs_minor}, this side {ours_major}.{ours_minor} \
         — use the same a3s-box version on the host and in the guest"
    )]
    VersionMismatch {
        /// Peer's major version.
        theirs_major: u16,
        /// Peer's minor version.
        theirs_minor: u16,
        /// Our major version.
        ours_major: u16,
        /// Our minor version.
        ours_minor: u16,
    },
    /// A message arrived where the protocol does not allow it.
    #[error("expected {expected}, got a {got} message")]
    Unexpected {
        /// What the protocol called for.
        expected: &'static str,
        /// Name of the message that came.
        got: &'static str,
    },
    /// The peer refused with an `Error` message.
    #[error("the peer refused: {0}")]
    Refused(String),
    /// The connection ended where a message was required.
    #[error("the connection closed before {0}")]
    Closed(&'static str),
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(e)
        }
    }
}

/// What the guest sets up in a box before its main process starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoxSetup {
    /// The box's network interface, when it has one.
    pub net: Option<NetSetup>,
    /// Files laid over paths of the box's root while it runs, as Docker
    /// bind-mounts `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`: not
    /// written to the box's layer. (path, content).
    pub files: Vec<(String, String)>,
    /// What the box's processes may do.
    pub security: SecuritySetup,
}

/// Docker's capabilities a box gets unless told otherwise: CHOWN,
/// DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP,
/// NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
pub const DEFAULT_CAPS: u64 = 0xa804_25fb;

/// The security options of a box, as the guest applies them to its main
/// process and (capabilities, no-new-privileges, extra groups) to every
/// process exec'd beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecuritySetup {
    /// Capabilities by number (bit n: capability n): the processes'
    /// bounding set, and a root process's permitted and effective sets.
    pub caps: u64,
    /// `PR_SET_NO_NEW_PRIVS` before `execve`.
    pub no_new_privs: bool,
    /// The root mounted read-only (and init's default `/tmp`, `/run`).
    pub read_only_root: bool,
    /// `/sys` and `/proc/sys` writable, nothing in `/proc` masked.
    pub privileged: bool,
    /// The main process runs under our reaper as the box's PID 1.
    pub init: bool,
    /// Extra groups (names in the box's `/etc/group`, or numbers).
    pub group_add: Vec<String>,
    /// Namespaced sysctls written before the main process starts.
    pub sysctls: Vec<(String, String)>,
}

impl Default for SecuritySetup {
    fn default() -> Self {
        SecuritySetup {
            caps: DEFAULT_CAPS,
            no_new_privs: false,
            read_only_root: false,
            privileged: false,
            init: false,
            group_add: Vec::new(),
            sysctls: Vec::new(),
        }
    }
}

/// A filesystem init mounts in the box's root before the main process
/// starts: a volume or bind (a virtio-fs share of its own), or a tmpfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestMount {
    /// Absolute path in the box.
    pub target: String,
    pub read_only: bool,
    pub kind: GuestMountKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestMountKind {
    /// The virtio-fs device with this tag.
    Share { tag: String },
    /// A tmpfs with this mount data; `exec`, `suid`, `dev` lift Docker's
    /// default `noexec`, `nosuid`, `nodev`.
    Tmpfs {
        data: String,
        exec: bool,
        suid: bool,
        dev: bool,
    },
}

/// An interface's static IPv4 configuration, with the default route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSetup {
    pub interface: String,
    pub address: std::net::Ipv4Addr,
    pub prefix: u8,
    pub gateway: std::net::Ipv4Addr,
    /// The interface's MTU; 0 leaves the device's own (1500 for virtio-net).
    pub mtu: u16,
}

/// What to run, as in Docker's `exec` (see the module table for the encoding).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRequest {
    /// Program and arguments; the program is searched in the env's `PATH`
    /// unless it holds a `/`.
    pub argv: Vec<String>,
    /// Environment, in order; the guest adds `PATH`, `HOME` (and `TERM` on a
    /// terminal) when they are missing.
    pub env: Vec<(String, String)>,
    /// Working directory; empty means `/`.
    pub cwd: String,
    /// `uid`, `uid:gid`, `name` or `name:group`; `None` runs as root.
    pub user: Option<String>,
    /// Whether to run on a pseudo-terminal.
    pub tty: bool,
    /// Initial terminal rows (0: leave the default).
    pub rows: u16,
    /// Initial terminal columns (0: leave the default).
    pub cols: u16,
    /// Whether the host sends stdin; `false` gives the process `/dev/null`.
    pub stdin: bool,
}

/// The main process's state, as `StatusReply` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MainStatus {
    /// Pid of the main process in the guest, 0 before it was started.
    pub main_pid: i32,
    /// Whether it is running.
    pub running: bool,
    /// Its exit code, once it has ended.
    pub exit_code: Option<i32>,
}

/// A box's resource use, as `StatsReply` reports it (see the module table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BoxStats {
    /// The guest's monotonic clock when the sample was taken, in µs.
    pub time_usec: u64,
    /// CPU time of the box's processes, in µs.
    pub cpu_usec: u64,
    /// Memory charged to the box's processes, in bytes.
    pub memory: u64,
    /// Of which inactive page cache, in bytes.
    pub inactive_file: u64,
    /// The guest's memory, in bytes.
    pub memory_total: u64,
    /// Tasks in the box.
    pub pids: u64,
    /// Bytes received over the guest's network interfaces.
    pub net_rx: Option<u64>,
    /// Bytes sent over them.
    pub net_tx: Option<u64>,
    /// Bytes read from block devices.
    pub block_read: Option<u64>,
    /// Bytes written to them.
    pub block_write: Option<u64>,
}

/// One of the box's processes, as `TopReply` lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Its pid in the box.
    pub pid: i32,
    /// Its parent's pid in the box; 0 when the parent is outside.
    pub ppid: i32,
    /// Real user id.
    pub uid: u32,
    /// The uid's name in the box, or empty.
    pub user: String,
    /// ps's STAT column.
    pub stat: String,
    /// Controlling terminal's device number; 0 for none.
    pub tty: u32,
    /// CPU time used, in ms.
    pub cpu_ms: u64,
    /// Time since it started, in ms.
    pub age_ms: u64,
    /// Virtual memory size, in bytes.
    pub vsz: u64,
    /// Resident set size, in bytes.
    pub rss: u64,
    /// The kernel's name for it.
    pub comm: String,
    /// Its command line.
    pub args: Vec<String>,
}

/// An entry in a box's root, as `PathInfo` reports it (Docker's
/// `ContainerPathStat`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathInfo {
    /// The last component of the path asked for.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// For a symbolic link, its target resolved in the box; else empty.
    pub link_target: String,
}

/// One message: a frame's type and payload, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// First frame on every connection, both ways.
    Hello {
        /// Major version ([`VERSION_MAJOR`]).
        major: u16,
        /// Minor version ([`VERSION_MINOR`]).
        minor: u16,
    },
    /// A request failed; the text is for people.
    Error {
        /// What went wrong and, where possible, what to do.
        message: String,
    },
    /// A control request succeeded.
    Ok,
    /// Run a further process in the box.
    Exec(ExecRequest),
    /// The requested process runs.
    Started {
        /// Its pid.
        pid: i32,
    },
    /// Input for the process.
    Stdin(Vec<u8>),
    /// The process's input ends.
    StdinClose,
    /// Output of the process (all output, on a terminal).
    Stdout(Vec<u8>),
    /// Error output of the process.
    Stderr(Vec<u8>),
    /// The terminal's size changed.
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Send a signal to the session's process.
    Signal(i32),
    /// The process ended; last frame of the session.
    Exit {
        /// Shell-style exit code.
        code: i32,
    },
    /// Start the box's main process.
    RunMain {
        /// Host name of the box (empty: leave the kernel's).
        hostname: String,
        /// What to run.
        exec: ExecRequest,
        /// What the guest sets up before it starts the process.
        setup: BoxSetup,
        /// Volumes, binds and tmpfs mounted in the box's root first.
        mounts: Vec<GuestMount>,
    },
    /// Ask for the main process's state.
    Status,
    /// The main process's state.
    StatusReply(MainStatus),
    /// Send a signal to the main process.
    SignalMain(i32),
    /// Power the box off now.
    Shutdown,
    /// Ask for the box's resource use.
    Stats,
    /// The box's resource use.
    StatsReply(BoxStats),
    /// Ask for the box's processes.
    Top,
    /// The box's processes.
    TopReply {
        /// The guest's memory, in bytes (for `%MEM`).
        mem_total: u64,
        /// The processes, by pid.
        processes: Vec<ProcessInfo>,
    },
    /// Freeze the box's processes.
    Pause,
    /// Thaw them.
    Unpause,
    /// Describe an entry of the box's root.
    PathStat {
        /// Path in the box.
        path: String,
    },
    /// An entry of the box's root.
    PathInfo(PathInfo),
    /// Send a path of the box's root as a tar stream.
    ArchiveGet {
        /// Path in the box.
        path: String,
    },
    /// Extract the tar stream that follows into a directory of the box.
    ArchivePut {
        /// Existing directory in the box.
        dir: String,
        /// Owner to give everything; `None` keeps the archive's.
        owner: Option<(u32, u32)>,
    },
}

mod tag {
    pub const HELLO: u8 = 0x01;
    pub const ERROR: u8 = 0x02;
    pub const OK: u8 = 0x03;
    pub const EXEC: u8 = 0x10;
    pub const STARTED: u8 = 0x11;
    pub const STDIN: u8 = 0x12;
    pub const STDIN_CLOSE: u8 = 0x13;
    pub const STDOUT: u8 = 0x14;
    pub const STDERR: u8 = 0x15;
    pub const RESIZE: u8 = 0x16;
    pub const SIGNAL: u8 = 0x17;
    pub const EXIT: u8 = 0x18;
    pub const RUN_MAIN: u8 = 0x20;
    pub const STATUS: u8 = 0x21;
    pub const STATUS_REPLY: u8 = 0x22;
    pub const SIGNAL_MAIN: u8 = 0x23;
    pub const SHUTDOWN: u8 = 0x24;
    pub const STATS: u8 = 0x30;
    pub const STATS_REPLY: u8 = 0x31;
    pub const TOP: u8 = 0x32;
    pub const TOP_REPLY: u8 = 0x33;
    pub const PAUSE: u8 = 0x34;
    pub const UNPAUSE: u8 = 0x35;
    pub const PATH_STAT: u8 = 0x40;
    pub const PATH_INFO: u8 = 0x41;
    pub const ARCHIVE_GET: u8 = 0x42;
    pub const ARCHIVE_PUT: u8 = 0x43;
}

/// Name of a message type for errors, or `None` for an unknown one.
fn type_name(t: u8) -> Option<&'static str> {
    Some(match t {
        tag::HELLO => "Hello",
        tag::ERROR => "Error",
        tag::OK => "Ok",
        tag::EXEC => "Exec",
        tag::STARTED => "Started",
        tag::STDIN => "Stdin",
        tag::STDIN_CLOSE => "StdinClose",
        tag::STDOUT => "Stdout",
        tag::STDERR => "Stderr",
        tag::RESIZE => "Resize",
        tag::SIGNAL => "Signal",
        tag::EXIT => "Exit",
        tag::RUN_MAIN => "RunMain",
        tag::STATUS => "Status",
        tag::STATUS_REPLY => "StatusReply",
        tag::SIGNAL_MAIN => "SignalMain",
        tag::SHUTDOWN => "Shutdown",
        tag::STATS => "Stats",
        tag::STATS_REPLY => "StatsReply",
        tag::TOP => "Top",
        tag::TOP_REPLY => "TopReply",
        tag::PAUSE => "Pause",
        tag::UNPAUSE => "Unpause",
        tag::PATH_STAT => "PathStat",
        tag::PATH_INFO => "PathInfo",
        tag::ARCHIVE_GET => "ArchiveGet",
        tag::ARCHIVE_PUT => "ArchivePut",
        _ => return None,
    })
}

impl Message {
    /// The message's type byte.
    pub fn type_byte(&self) -> u8 {
        match self {
            Message::Hello { .. } => tag::HELLO,
            Message::Error { .. } => tag::ERROR,
            Message::Ok => tag::OK,
            Message::Exec(_) => tag::EXEC,
            Message::Started { .. } => tag::STARTED,
            Message::Stdin(_) => tag::STDIN,
            Message::StdinClose => tag::STDIN_CLOSE,
            Message::Stdout(_) => tag::STDOUT,
            Message::Stderr(_) => tag::STDERR,
            Message::Resize { .. } => tag::RESIZE,
            Message::Signal(_) => tag::SIGNAL,
            Message::Exit { .. } => tag::EXIT,
            Message::RunMain { .. } => tag::RUN_MAIN,
            Message::Status => tag::STATUS,
            Message::StatusReply(_) => tag::STATUS_REPLY,
            Message::SignalMain(_) => tag::SIGNAL_MAIN,
            Message::Shutdown => tag::SHUTDOWN,
            Message::Stats => tag::STATS,
            Message::StatsReply(_) => tag::STATS_REPLY,
            Message::Top => tag::TOP,
            Message::TopReply { .. } => tag::TOP_REPLY,
            Message::Pause => tag::PAUSE,
            Message::Unpause => tag::UNPAUSE,
            Message::PathStat { .. } => tag::PATH_STAT,
            Message::PathInfo(_) => tag::PATH_INFO,
            Message::ArchiveGet { .. } => tag::ARCHIVE_GET,
            Message::ArchivePut { .. } => tag::ARCHIVE_PUT,
        }
    }

    /// The message's name, as in the module table.
    pub fn name(&self) -> &'static str {
        type_name(self.type_byte()).unwrap_or("?")
    }

    /// The whole frame: length, type and payload.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let mut out = Writer(vec![0, 0, 0, 0, self.type_byte()]);
        match self {
            Message::Hello { major, minor } => {
                out.u16(*major);
                out.u16(*minor);
            }
            Message::Error { message } => out.str(message)?,
            Message::Ok | Message::StdinClose | Message::Status | Message::Shutdown => {}
            Message::Stats | Message::Top | Message::Pause | Message::Unpause => {}
            Message::StatsReply(st) => out.stats(st),
            Message::TopReply {
                mem_total,
                processes,
            } => {
                out.u64(*mem_total);
                out.count(processes.len())?;
                for p in processes {
                    out.process(p)?;
                }
            }
            Message::PathStat { path } | Message::ArchiveGet { path } => out.str(path)?,
            Message::PathInfo(info) => {
                out.str(&info.name)?;
                out.0.extend_from_slice(&info.size.to_le_bytes());
                out.u32(info.mode);
                out.0.extend_from_slice(&info.mtime.to_le_bytes());
                out.str(&info.link_target)?;
            }
            Message::ArchivePut { dir, owner } => {
                out.str(dir)?;
                match owner {
                    None => out.bool(false),
                    Some((uid, gid)) => {
                        out.bool(true);
                        out.u32(*uid);
                        out.u32(*gid);
                    }
                }
            }
            Message::Exec(req) => out.exec(req)?,
            Message::Started { pid } => out.i32(*pid),
            Message::Stdin(d) | Message::Stdout(d) | Message::Stderr(d) => out.0.extend(d),
            Message::Resize { rows, cols } => {
                out.u16(*rows);
                out.u16(*cols);
            }
            Message::Signal(s) | Message::SignalMain(s) => out.i32(*s),
            Message::Exit { code } => out.i32(*code),
            Message::RunMain {
                hostname,
                exec,
                setup,
                mounts,
            } => {
                out.str(hostname)?;
                out.exec(exec)?;
                out.setup(setup)?;
                out.mounts(mounts)?;
            }
            Message::StatusReply(s) => {
                out.i32(s.main_pid);
                out.bool(s.running);
                match s.exit_code {
                    None => out.bool(false),
                    Some(code) => {
                        out.bool(true);
                        out.i32(code);
                    }
                }
            }
        }
        let len = length_field(out.0.len() - 4)?;
        out.0[..4].copy_from_slice(&len);
        Ok(out.0)
    }

    /// Decodes one message from its type byte and payload.
    pub fn decode(type_byte: u8, payload: &[u8]) -> Result<Message, FrameError> {
        let message = type_name(type_byte).ok_or(FrameError::UnknownType(type_byte))?;
        let mut r = Reader {
            message,
            rest: payload,
        };
        let msg = match type_byte {
            tag::HELLO => Message::Hello {
                major: r.u16("major")?,
                minor: r.u16("minor")?,
            },
            tag::ERROR => Message::Error {
                message: r.str("message")?,
            },
            tag::OK => Message::Ok,
            tag::EXEC => Message::Exec(r.exec()?),
            tag::STARTED => Message::Started { pid: r.i32("pid")? },
            tag::STDIN => Message::Stdin(r.rest()),
            tag::STDIN_CLOSE => Message::StdinClose,
            tag::STDOUT => Message::Stdout(r.rest()),
            tag::STDERR => Message::Stderr(r.rest()),
            tag::RESIZE => Message::Resize {
                rows: r.u16("rows")?,
                cols: r.u16("cols")?,
            },
            tag::SIGNAL => Message::Signal(r.i32("signo")?),
            tag::EXIT => Message::Exit {
                code: r.i32("code")?,
            },
            tag::RUN_MAIN => Message::RunMain {
                hostname: r.str("hostname")?,
                exec: r.exec()?,
                setup: r.setup()?,
                mounts: r.mounts()?,
            },
            tag::STATUS => Message::Status,
            tag::STATUS_REPLY => Message::StatusReply(MainStatus {
                main_pid: r.i32("main_pid")?,
                running: r.bool("running")?,
                exit_code: if r.bool("exit_code")? {
                    Some(r.i32("exit_code")?)
                } else {
                    None
                },
            }),
            tag::SIGNAL_MAIN => Message::SignalMain(r.i32("signo")?),
            tag::SHUTDOWN => Message::Shutdown,
            tag::STATS => Message::Stats,
            tag::STATS_REPLY => Message::StatsReply(r.stats()?),
            tag::TOP => Message::Top,
            tag::TOP_REPLY => {
                let mem_total = r.u64("mem_total")?;
                // A process takes at least 64 bytes: its fixed-size fields and
                // the counts of its strings and list.
                let n = r.count("processes", 64)?;
                let mut processes = Vec::new();
                for _ in 0..n {
                    processes.push(r.process()?);
                }
                Message::TopReply {
                    mem_total,
                    processes,
                }
            }
            tag::PAUSE => Message::Pause,
            tag::UNPAUSE => Message::Unpause,
            tag::PATH_STAT => Message::PathStat {
                path: r.str("path")?,
            },
            tag::PATH_INFO => Message::PathInfo(PathInfo {
                name: r.str("name")?,
                size: r.take("size").map(u64::from_le_bytes)?,
                mode: r.u32("mode")?,
                mtime: r.take("mtime").map(i64::from_le_bytes)?,
                link_target: r.str("link_target")?,
            }),
            tag::ARCHIVE_GET => Message::ArchiveGet {
                path: r.str("path")?,
            },
            tag::ARCHIVE_PUT => Message::ArchivePut {
                dir: r.str("dir")?,
                owner: if r.bool("owner")? {
                    Some((r.u32("owner")?, r.u32("owner")?))
                } else {
                    None
                },
            },
            _ => return Err(FrameError::UnknownType(type_byte)),
        };
        if !r.rest.is_empty() {
            return Err(FrameError::TrailingBytes {
                message,
                extra: r.rest.len(),
            });
        }
        Ok(msg)
    }
}

/// Decodes exactly one whole frame (length, type, payload) from `bytes`.
///
/// This is the entry point for fuzzing: any input gives a message or an
/// error, never a panic, and nothing is allocated beyond `bytes.len()`.
pub fn decode_frame(bytes: &[u8]) -> Result<Message, FrameError> {
    let (head, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or(FrameError::Truncated)?;
    let len = checked_len(*head)?;
    if rest.len() < len {
        return Err(FrameError::Truncated);
    }
    let (&type_byte, payload) = rest.split_first().ok_or(FrameError::Empty)?;
    if rest.len() > len {
        return Err(FrameError::TrailingBytes {
            message: type_name(type_byte).unwrap_or("frame"),
            extra: rest.len() - len,
        });
    }
    Message::decode(type_byte, payload)
}

/// The length field's value, refused when zero or above [`MAX_FRAME`].
fn checked_len(head: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(head);
    match usize::try_from(len) {
        Ok(0) => Err(FrameError::Empty),
        Ok(n) if n <= MAX_FRAME => Ok(n),
        _ => Err(FrameError::TooLarge {
            len: u64::from(len),
            max: MAX_FRAME,
        }),
    }
}

/// Reads one frame and returns its type byte and payload; `None` when the
/// peer closed the connection cleanly between frames.
///
/// A length above [`MAX_FRAME`] is refused before anything is allocated.
pub fn read_frame(r: &mut impl Read) -> Result<Option<(u8, Vec<u8>)>, FrameError> {
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = checked_len(head)?;
    let truncated = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    };
    let mut type_byte = [0u8; 1];
    r.read_exact(&mut type_byte).map_err(truncated)?;
    // The payload goes straight into a buffer of its exact size (at most
    // MAX_FRAME, checked above), read with as few calls as the peer allows.
    let mut payload = vec![0u8; len - 1];
    r.read_exact(&mut payload).map_err(truncated)?;
    Ok(Some((type_byte[0], payload)))
}

/// The length field for a frame of `len` bytes after it, refused above
/// [`MAX_FRAME`].
fn length_field(len: usize) -> Result<[u8; 4], FrameError> {
    match u32::try_from(len) {
        Ok(n) if len <= MAX_FRAME => Ok(n.to_le_bytes()),
        _ => Err(FrameError::TooLarge {
            len: u64::try_from(len).unwrap_or(u64::MAX),
            max: MAX_FRAME,
        }),
    }
}

/// Writes one raw frame.
pub fn write_frame(w: &mut impl Write, type_byte: u8, payload: &[u8]) -> Result<(), FrameError> {
    let len = length_field(payload.len() + 1)?;
    let mut frame = Vec::with_capacity(payload.len() + 5);
    frame.extend_from_slice(&len);
    frame.push(type_byte);
    frame.extend_from_slice(payload);
    w.write_all(&frame)?;
    Ok(())
}

/// Bytes before a data frame's payload: the length and the type.
pub const DATA_HEADER_LEN: usize = 5;

/// Makes `frame` one whole `Stdout` (or, with `stderr`, `Stderr`) frame by
/// writing its header into the first [`DATA_HEADER_LEN`] bytes: the payload is
/// what follows. Output is read straight into such a buffer and sent from it,
/// with no copy; the bytes are those [`Message::encode`] gives.
pub fn seal_output_frame(frame: &mut [u8], stderr: bool) -> Result<(), FrameError> {
    if frame.len() < DATA_HEADER_LEN {
        // No room for the type byte.
        return Err(FrameError::Empty);
    }
    let len = length_field(frame.len() - 4)?;
    frame[..4].copy_from_slice(&len);
    frame[4] = if stderr { tag::STDERR } else { tag::STDOUT };
    Ok(())
}

/// Reads and decodes one message; `None` at a clean end of the connection.
pub fn read_message(r: &mut impl Read) -> Result<Option<Message>, FrameError> {
    Ok(match read_frame(r)? {
        None => None,
        // Data frames are their payload: it becomes the message as it is.
        Some((tag::STDOUT, data)) => Some(Message::Stdout(data)),
        Some((tag::STDERR, data)) => Some(Message::Stderr(data)),
        Some((tag::STDIN, data)) => Some(Message::Stdin(data)),
        Some((t, payload)) => Some(Message::decode(t, &payload)?),
    })
}

/// Encodes and writes one message with a single `write_all`.
pub fn write_message(w: &mut impl Write, msg: &Message) -> Result<(), FrameError> {
    w.write_all(&msg.encode()?)?;
    w.flush()?;
    Ok(())
}

/// The `Hello` this side sends.
pub fn our_hello() -> Message {
    Message::Hello {
        major: VERSION_MAJOR,
        minor: VERSION_MINOR,
    }
}

fn mismatch(major: u16, minor: u16) -> FrameError {
    FrameError::VersionMismatch {
        theirs_major: major,
        theirs_minor: minor,
        ours_major: VERSION_MAJOR,
        ours_minor: VERSION_MINOR,
    }
}

/// Host side of the handshake: sends `Hello`, checks the guest's answer, and
/// returns the guest's (major, minor).
pub fn client_handshake(r: &mut impl Read, w: &mut impl Write) -> Result<(u16, u16), FrameError> {
    write_message(w, &our_hello())?;
    expect_hello(r)
}

/// The host's `Hello` followed by `first`, as bytes to send in one write: the
/// guest answers the `Hello` and then reads `first`, so a session costs one
/// round trip less than [`client_handshake`] then a request. Read the
/// guest's answer with [`expect_hello`].
pub fn hello_then(first: &Message) -> Result<Vec<u8>, FrameError> {
    let mut bytes = our_hello().encode()?;
    bytes.extend(first.encode()?);
    Ok(bytes)
}

/// Host side of the handshake once the `Hello` has gone out: checks the
/// guest's answer and returns its (major, minor).
pub fn expect_hello(r: &mut impl Read) -> Result<(u16, u16), FrameError> {
    match read_message(r)? {
        Some(Message::Hello { major, minor }) if major == VERSION_MAJOR => Ok((major, minor)),
        Some(Message::Hello { major, minor }) => Err(mismatch(major, minor)),
        Some(Message::Error { message }) => Err(FrameError::Refused(message)),
        Some(other) => Err(FrameError::Unexpected {
            expected: "Hello",
            got: other.name(),
        }),
        None => Err(FrameError::Closed("the guest's Hello")),
    }
}

/// Guest side of the handshake: takes the host's `Hello` and answers it, or
/// answers `Error` (and fails) when the major versions differ.
pub fn server_handshake(r: &mut impl Read, w: &mut impl Write) -> Result<(u16, u16), FrameError> {
    match read_message(r)? {
        Some(Message::Hello { major, minor }) if major == VERSION_MAJOR => {
            write_message(w, &our_hello())?;
            Ok((major, minor))
        }
        Some(Message::Hello { major, minor }) => {
            let err = mismatch(major, minor);
            let _ = write_message(
                w,
                &Message::Error {
                    message: err.to_string(),
                },
            );
            Err(err)
        }
        Some(other) => {
            let err = FrameError::Unexpected {
                expected: "Hello",
                got: other.name(),
            };
            let _ = write_message(
                w,
                &Message::Error {
                    message: err.to_string(),
                },
            );
            Err(err)
        }
        None => Err(FrameError::Closed("the host's Hello")),
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn opt_u64(&mut self, v: Option<u64>) {
        self.bool(v.is_some());
        if let Some(v) = v {
            self.u64(v);
        }
    }

    fn bool(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }

    fn count(&mut self, n: usize) -> Result<(), FrameError> {
        let n = u32::try_from(n).map_err(|_| FrameError::TooLarge {
            len: u64::try_from(n).unwrap_or(u64::MAX),
            max: MAX_FRAME,
        })?;
        self.u32(n);
        Ok(())
    }

    fn str(&mut self, s: &str) -> Result<(), FrameError> {
        self.count(s.len())?;
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn exec(&mut self, req: &ExecRequest) -> Result<(), FrameError> {
        self.count(req.argv.len())?;
        for a in &req.argv {
            self.str(a)?;
        }
        self.count(req.env.len())?;
        for (k, v) in &req.env {
            self.str(k)?;
            self.str(v)?;
        }
        self.str(&req.cwd)?;
        match &req.user {
            None => self.bool(false),
            Some(u) => {
                self.bool(true);
                self.str(u)?;
            }
        }
        self.bool(req.tty);
        self.u16(req.rows);
        self.u16(req.cols);
        self.bool(req.stdin);
        Ok(())
    }

    fn setup(&mut self, setup: &BoxSetup) -> Result<(), FrameError> {
        match &setup.net {
            None => self.bool(false),
            Some(n) => {
                self.bool(true);
                self.str(&n.interface)?;
                self.u32(u32::from(n.address));
                self.u16(u16::from(n.prefix));
                self.u32(u32::from(n.gateway));
                self.u16(n.mtu);
            }
        }
        self.count(setup.files.len())?;
        for (path, content) in &setup.files {
            self.str(path)?;
            self.str(content)?;
        }
        self.security(&setup.security)
    }

    fn security(&mut self, sec: &SecuritySetup) -> Result<(), FrameError> {
        self.u64(sec.caps);
        self.bool(sec.no_new_privs);
        self.bool(sec.read_only_root);
        self.bool(sec.privileged);
        self.bool(sec.init);
        self.count(sec.group_add.len())?;
        for g in &sec.group_add {
            self.str(g)?;
        }
        self.count(sec.sysctls.len())?;
        for (k, v) in &sec.sysctls {
            self.str(k)?;
            self.str(v)?;
        }
        Ok(())
    }

    fn mounts(&mut self, mounts: &[GuestMount]) -> Result<(), FrameError> {
        self.count(mounts.len())?;
        for m in mounts {
            self.str(&m.target)?;
            self.bool(m.read_only);
            match &m.kind {
                GuestMountKind::Share { tag } => {
                    self.0.push(0);
                    self.str(tag)?;
                }
                GuestMountKind::Tmpfs {
                    data,
                    exec,
                    suid,
                    dev,
                } => {
                    self.0.push(1);
                    self.str(data)?;
                    self.bool(*exec);
                    self.bool(*suid);
                    self.bool(*dev);
                }
            }
        }
        Ok(())
    }

    fn stats(&mut self, st: &BoxStats) {
        for v in [
            st.time_usec,
            st.cpu_usec,
            st.memory,
            st.inactive_file,
            st.memory_total,
            st.pids,
        ] {
            self.u64(v);
        }
        for v in [st.net_rx, st.net_tx, st.block_read, st.block_write] {
            self.opt_u64(v);
        }
    }

    fn process(&mut self, p: &ProcessInfo) -> Result<(), FrameError> {
        self.i32(p.pid);
        self.i32(p.ppid);
        self.u32(p.uid);
        self.str(&p.user)?;
        self.str(&p.stat)?;
        self.u32(p.tty);
        for v in [p.cpu_ms, p.age_ms, p.vsz, p.rss] {
            self.u64(v);
        }
        self.str(&p.comm)?;
        self.count(p.args.len())?;
        for a in &p.args {
            self.str(a)?;
        }
        Ok(())
    }
}

struct Reader<'a> {
    message: &'static str,
    rest: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], FrameError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(FrameError::ShortPayload {
                message: self.message,
                field,
            })?;
        self.rest = rest;
        Ok(*head)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, FrameError> {
        self.take(field).map(u16::from_le_bytes)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, FrameError> {
        self.take(field).map(u32::from_le_bytes)
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, FrameError> {
        self.take(field).map(i32::from_le_bytes)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, FrameError> {
        self.take(field).map(u64::from_le_bytes)
    }

    fn opt_u64(&mut self, field: &'static str) -> Result<Option<u64>, FrameError> {
        Ok(if self.bool(field)? {
            Some(self.u64(field)?)
        } else {
            None
        })
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, FrameError> {
        match self.take::<1>(field)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(FrameError::BadFlag {
                message: self.message,
                field,
                value,
            }),
        }
    }

    /// A list's item count, refused when the remaining bytes could not hold
    /// that many items of at least `min_item` bytes (so no decoder loop runs
    /// longer than the input).
    fn count(&mut self, field: &'static str, min_item: usize) -> Result<usize, FrameError> {
        let n = usize::try_from(self.u32(field)?).unwrap_or(usize::MAX);
        if n > self.rest.len() / min_item {
            return Err(FrameError::ShortPayload {
                message: self.message,
                field,
            });
        }
        Ok(n)
    }

    fn str(&mut self, field: &'static str) -> Result<String, FrameError> {
        let len = self.count(field, 1)?;
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        String::from_utf8(bytes.to_vec()).map_err(|_| FrameError::BadUtf8 {
            message: self.message,
            field,
        })
    }

    fn rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.rest).to_vec()
    }

    fn setup(&mut self) -> Result<BoxSetup, FrameError> {
        let net = if self.bool("net")? {
            let interface = self.str("interface")?;
            let address = std::net::Ipv4Addr::from(self.u32("address")?);
            let raw = self.u16("prefix")?;
            let gateway = std::net::Ipv4Addr::from(self.u32("gateway")?);
            let mtu = self.u16("mtu")?;
            let prefix =
                u8::try_from(raw)
                    .ok()
                    .filter(|p| *p <= 32)
                    .ok_or(FrameError::OutOfRange {
                        message: self.message,
                        field: "prefix",
                        value: u64::from(raw),
                    })?;
            Some(NetSetup {
                interface,
                address,
                prefix,
                gateway,
                mtu,
            })
        } else {
            None
        };
        let n = self.count("files", 8)?;
        let mut files = Vec::new();
        for _ in 0..n {
            files.push((self.str("path")?, self.str("content")?));
        }
        Ok(BoxSetup {
            net,
            files,
            security: self.security()?,
        })
    }

    fn security(&mut self) -> Result<SecuritySetup, FrameError> {
        let caps = self.u64("caps")?;
        let no_new_privs = self.bool("no_new_privs")?;
        let read_only_root = self.bool("read_only_root")?;
        let privileged = self.bool("privileged")?;
        let init = self.bool("init")?;
        let mut group_add = Vec::new();
        for _ in 0..self.count("group_add", 4)? {
            group_add.push(self.str("group")?);
        }
        let mut sysctls = Vec::new();
        for _ in 0..self.count("sysctls", 8)? {
            sysctls.push((self.str("sysctl")?, self.str("value")?));
        }
        Ok(SecuritySetup {
            caps,
            no_new_privs,
            read_only_root,
            privileged,
            init,
            group_add,
            sysctls,
        })
    }

    fn mounts(&mut self) -> Result<Vec<GuestMount>, FrameError> {
        // target (4), read_only (1), kind (1), and at least a str's count (4).
        let n = self.count("mounts", 10)?;
        let mut out = Vec::new();
        for _ in 0..n {
            let target = self.str("target")?;
            let read_only = self.bool("read_only")?;
            let kind = match self.take::<1>("kind")?[0] {
                0 => GuestMountKind::Share {
                    tag: self.str("tag")?,
                },
                1 => GuestMountKind::Tmpfs {
                    data: self.str("data")?,
                    exec: self.bool("exec")?,
                    suid: self.bool("suid")?,
                    dev: self.bool("dev")?,
                },
                value => {
                    return Err(FrameError::OutOfRange {
                        message: self.message,
                        field: "kind",
                        value: u64::from(value),
                    })
                }
            };
            out.push(GuestMount {
                target,
                read_only,
                kind,
            });
        }
        Ok(out)
    }

    fn exec(&mut self) -> Result<ExecRequest, FrameError> {
        let argc = self.count("argv", 4)?;
        let mut argv = Vec::new();
        for _ in 0..argc {
            argv.push(self.str("argv")?);
        }
        let envc = self.count("env", 8)?;
        let mut env = Vec::new();
        for _ in 0..envc {
            env.push((self.str("env")?, self.str("env")?));
        }
        Ok(ExecRequest {
            argv,
            env,
            cwd: self.str("cwd")?,
            user: if self.bool("user")? {
                Some(self.str("user")?)
            } else {
                None
            },
            tty: self.bool("tty")?,
            rows: self.u16("rows")?,
            cols: self.u16("cols")?,
            stdin: self.bool("stdin")?,
        })
    }

    fn stats(&mut self) -> Result<BoxStats, FrameError> {
        Ok(BoxStats {
            time_usec: self.u64("time_usec")?,
            cpu_usec: self.u64("cpu_usec")?,
            memory: self.u64("memory")?,
            inactive_file: self.u64("inactive_file")?,
            memory_total: self.u64("memory_total")?,
            pids: self.u64("pids")?,
            net_rx: self.opt_u64("net_rx")?,
            net_tx: self.opt_u64("net_tx")?,
            block_read: self.opt_u64("block_read")?,
            block_write: self.opt_u64("block_write")?,
        })
    }

    fn process(&mut self) -> Result<ProcessInfo, FrameError> {
        let mut p = ProcessInfo {
            pid: self.i32("pid")?,
            ppid: self.i32("ppid")?,
            uid: self.u32("uid")?,
            user: self.str("user")?,
            stat: self.str("stat")?,
            tty: self.u32("tty")?,
            cpu_ms: self.u64("cpu_ms")?,
            age_ms: self.u64("age_ms")?,
            vsz: self.u64("vsz")?,
            rss: self.u64("rss")?,
            comm: self.str("comm")?,
            args: Vec::new(),
        };
        let n = self.count("args", 4)?;
        for _ in 0..n {
            p.args.push(self.str("args")?);
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_exec() -> ExecRequest {
        ExecRequest {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo héllo".into(),
                String::new(),
            ],
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("EMPTY".into(), String::new()),
            ],
            cwd: "/srv/app".into(),
            user: Some("1000:1000".into()),
            tty: true,
            rows: 24,
            cols: 80,
            stdin: true,
        }
    }

    fn every_message() -> Vec<Message> {
        vec![
            Message::Hello { major: 1, minor: 7 },
            Message::Error {
                message: "exec: \"nosuch\": executable file not found in $PATH".into(),
            },
            Message::Ok,
            Message::Exec(sample_exec()),
            Message::Exec(ExecRequest::default()),
            Message::Started { pid: 4242 },
            Message::Stdin(b"input\n".to_vec()),
            Message::Stdin(Vec::new()),
            Message::StdinClose,
            Message::Stdout(vec![0, 255, 10, 13]),
            Message::Stderr(b"oops".to_vec()),
            Message::Resize {
                rows: 50,
                cols: 132,
            },
            Message::Signal(15),
            Message::Exit { code: 143 },
            Message::Exit { code: -1 },
            Message::RunMain {
                hostname: "web-1".into(),
                exec: sample_exec(),
                setup: BoxSetup::default(),
                mounts: Vec::new(),
            },
            Message::RunMain {
                hostname: "web-2".into(),
                exec: sample_exec(),
                setup: BoxSetup {
                    net: Some(NetSetup {
                        interface: "eth0".into(),
                        address: [10, 0, 2, 100].into(),
                        prefix: 24,
                        gateway: [10, 0, 2, 2].into(),
                        mtu: 65520,
                    }),
                    files: vec![("/etc/hosts".into(), "127.0.0.1\tlocalhost\n".into())],
                    security: SecuritySetup {
                        caps: 1 << 40 | 1,
                        no_new_privs: true,
                        read_only_root: true,
                        privileged: false,
                        init: true,
                        group_add: vec!["audio".into(), "4242".into()],
                        sysctls: vec![("net.ipv4.ip_forward".into(), "1".into())],
                    },
                },
                mounts: vec![
                    GuestMount {
                        target: "/data".into(),
                        read_only: true,
                        kind: GuestMountKind::Share { tag: "vol0".into() },
                    },
                    GuestMount {
                        target: "/scratch".into(),
                        read_only: false,
                        kind: GuestMountKind::Tmpfs {
                            data: "size=1048576,mode=1777".into(),
                            exec: true,
                            suid: false,
                            dev: false,
                        },
                    },
                ],
            },
            Message::Status,
            Message::StatusReply(MainStatus {
                main_pid: 7,
                running: false,
                exit_code: Some(3),
            }),
            Message::StatusReply(MainStatus::default()),
            Message::SignalMain(9),
            Message::Shutdown,
            Message::Stats,
            Message::StatsReply(BoxStats {
                time_usec: 1_000_001,
                cpu_usec: 42,
                memory: 7 << 20,
                inactive_file: 1 << 20,
                memory_total: 240 << 20,
                pids: 3,
                net_rx: Some(0),
                net_tx: Some(u64::MAX),
                block_read: None,
                block_write: None,
            }),
            Message::StatsReply(BoxStats::default()),
            Message::Top,
            Message::TopReply {
                mem_total: 1 << 30,
                processes: vec![
                    ProcessInfo {
                        pid: 1,
                        ppid: 0,
                        uid: 0,
                        user: "root".into(),
                        stat: "Ss".into(),
                        tty: 0,
                        cpu_ms: 10,
                        age_ms: 5_000,
                        vsz: 4 << 20,
                        rss: 1 << 20,
                        comm: "sh".into(),
                        args: vec!["/bin/sh".into(), "-c".into(), "sleep 1000".into()],
                    },
                    ProcessInfo::default(),
                ],
            },
            Message::TopReply {
                mem_total: 0,
                processes: Vec::new(),
            },
            Message::Pause,
            Message::Unpause,
            Message::PathStat {
                path: "/etc/../passwd".into(),
            },
            Message::PathInfo(PathInfo {
                name: "passwd".into(),
                size: 1234,
                mode: 0o100644,
                mtime: -1,
                link_target: "/etc/passwd".into(),
            }),
            Message::ArchiveGet { path: "/".into() },
            Message::ArchivePut {
                dir: "/srv".into(),
                owner: Some((0, 0)),
            },
            Message::ArchivePut {
                dir: "/".into(),
                owner: None,
            },
        ]
    }

    #[test]
    fn every_message_round_trips_through_bytes() {
        for msg in every_message() {
            let bytes = msg.encode().unwrap();
            assert_eq!(decode_frame(&bytes).unwrap(), msg, "{msg:?}");
        }
    }

    #[test]
    fn every_message_round_trips_through_a_stream() {
        let mut wire = Vec::new();
        for msg in every_message() {
            write_message(&mut wire, &msg).unwrap();
        }
        let mut r = wire.as_slice();
        for msg in every_message() {
            assert_eq!(read_message(&mut r).unwrap(), Some(msg));
        }
        assert_eq!(read_message(&mut r).unwrap(), None, "clean end");
    }

    #[test]
    fn the_layout_is_length_type_payload_little_endian() {
        let bytes = Message::Resize { rows: 1, cols: 258 }.encode().unwrap();
        assert_eq!(bytes, [5, 0, 0, 0, 0x16, 1, 0, 2, 1]);
        let bytes = Message::Error {
            message: "no".into(),
        }
        .encode()
        .unwrap();
        assert_eq!(bytes, [7, 0, 0, 0, 0x02, 2, 0, 0, 0, b'n', b'o']);
        let bytes = Message::Stdout(b"hi".to_vec()).encode().unwrap();
        assert_eq!(bytes, [3, 0, 0, 0, 0x14, b'h', b'i']);
    }

    #[test]
    fn every_truncation_of_every_message_is_an_error() {
        for msg in every_message() {
            let bytes = msg.encode().unwrap();
            for cut in 0..bytes.len() {
                assert!(decode_frame(&bytes[..cut]).is_err(), "{msg:?} cut at {cut}");
                let mut r = &bytes[..cut];
                let got = read_message(&mut r);
                if cut == 0 {
                    assert!(matches!(got, Ok(None)));
                } else {
                    assert!(
                        matches!(got, Err(FrameError::Truncated)),
                        "{msg:?} cut at {cut}: {got:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_payload_cut_short_inside_the_frame_names_the_field() {
        // A frame that is whole but whose payload ends inside `cols`.
        let mut bytes = Message::Resize { rows: 1, cols: 2 }.encode().unwrap();
        bytes.truncate(8);
        bytes[0] = 4;
        let err = decode_frame(&bytes).unwrap_err();
        assert!(matches!(
            err,
            FrameError::ShortPayload {
                message: "Resize",
                field: "cols"
            }
        ));
    }

    #[test]
    fn an_oversized_length_is_refused_before_reading_or_allocating() {
        struct Endless;
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                buf.fill(0xff);
                Ok(buf.len())
            }
        }
        let err = read_frame(&mut Endless).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len, .. } if len == u64::from(u32::MAX)));

        let mut head = u32::try_from(MAX_FRAME + 1).unwrap().to_le_bytes().to_vec();
        head.push(tag::STDOUT);
        assert!(matches!(
            decode_frame(&head),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn the_largest_frame_is_accepted_and_one_more_byte_is_not() {
        let fits = Message::Stdout(vec![7; MAX_FRAME - 1]);
        let bytes = fits.encode().unwrap();
        assert_eq!(read_message(&mut bytes.as_slice()).unwrap(), Some(fits));
        assert!(matches!(
            Message::Stdout(vec![7; MAX_FRAME]).encode(),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(write_frame(&mut Vec::new(), tag::STDOUT, &vec![0; MAX_FRAME]).is_err());
    }

    #[test]
    fn a_sealed_output_frame_is_the_encoded_message() {
        for (stderr, msg) in [
            (false, Message::Stdout(b"out".to_vec())),
            (true, Message::Stderr(b"err".to_vec())),
            (false, Message::Stdout(Vec::new())),
        ] {
            let (Message::Stdout(data) | Message::Stderr(data)) = &msg else {
                unreachable!()
            };
            let mut frame = vec![0xee; DATA_HEADER_LEN];
            frame.extend_from_slice(data);
            seal_output_frame(&mut frame, stderr).unwrap();
            assert_eq!(frame, msg.encode().unwrap());
            assert_eq!(read_message(&mut frame.as_slice()).unwrap(), Some(msg));
        }
        assert!(matches!(
            seal_output_frame(&mut [0; 4], false),
            Err(FrameError::Empty)
        ));
        assert!(seal_output_frame(&mut vec![0; MAX_FRAME + 4], false).is_ok());
        assert!(seal_output_frame(&mut vec![0; MAX_FRAME + 5], false).is_err());
    }

    #[test]
    fn a_zero_length_frame_is_an_error() {
        assert!(matches!(
            read_frame(&mut [0u8, 0, 0, 0].as_slice()),
            Err(FrameError::Empty)
        ));
        assert!(matches!(
            decode_frame(&[0, 0, 0, 0]),
            Err(FrameError::Empty)
        ));
    }

    #[test]
    fn unknown_types_are_errors() {
        for t in [0x00, 0x04, 0x19, 0x25, 0xff] {
            let mut w = Vec::new();
            write_frame(&mut w, t, &[]).unwrap();
            assert!(matches!(
                read_message(&mut w.as_slice()),
                Err(FrameError::UnknownType(x)) if x == t
            ));
        }
    }

    #[test]
    fn bad_utf8_is_an_error() {
        let mut payload = 2u32.to_le_bytes().to_vec();
        payload.extend([0xc3, 0x28]);
        assert!(matches!(
            Message::decode(tag::ERROR, &payload),
            Err(FrameError::BadUtf8 {
                message: "Error",
                field: "message"
            })
        ));
    }

    #[test]
    fn trailing_bytes_are_errors() {
        assert!(matches!(
            Message::decode(tag::EXIT, &[0, 0, 0, 0, 9]),
            Err(FrameError::TrailingBytes {
                message: "Exit",
                extra: 1
            })
        ));
        assert!(matches!(
            Message::decode(tag::SHUTDOWN, &[1]),
            Err(FrameError::TrailingBytes { .. })
        ));
        let mut frame = Message::Ok.encode().unwrap();
        frame.push(0);
        assert!(matches!(
            decode_frame(&frame),
            Err(FrameError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn flags_other_than_0_or_1_are_errors() {
        let mut bytes = Message::StatusReply(MainStatus::default())
            .encode()
            .unwrap();
        bytes[9] = 2;
        assert!(matches!(
            decode_frame(&bytes),
            Err(FrameError::BadFlag {
                field: "running",
                value: 2,
                ..
            })
        ));
    }

    #[test]
    fn a_huge_list_count_fails_fast() {
        let payload = u32::MAX.to_le_bytes();
        assert!(matches!(
            Message::decode(tag::EXEC, &payload),
            Err(FrameError::ShortPayload { field: "argv", .. })
        ));
    }

    #[test]
    fn random_and_mutated_input_never_panics() {
        // A deterministic xorshift instead of a fuzzing dependency; the cargo
        // fuzz target calls `decode_frame` the same way.
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds: Vec<Vec<u8>> = every_message()
            .iter()
            .map(|m| m.encode().unwrap())
            .collect();
        for i in 0..20_000 {
            let mut bytes = seeds[i % seeds.len()].clone();
            for _ in 0..(next() % 4 + 1) {
                let pos = usize::try_from(next() % u64::try_from(bytes.len()).unwrap()).unwrap();
                bytes[pos] = next().to_le_bytes()[0];
            }
            if next() % 3 == 0 {
                bytes.truncate(usize::try_from(next() % 64).unwrap());
            }
            let _ = decode_frame(&bytes);
            let _ = read_message(&mut bytes.as_slice());
        }
    }

    #[test]
    fn handshake_agrees_on_the_same_major() {
        let mut to_guest = Vec::new();
        write_message(&mut to_guest, &our_hello()).unwrap();
        let mut to_host = Vec::new();
        let got = server_handshake(&mut to_guest.as_slice(), &mut to_host).unwrap();
        assert_eq!(got, (VERSION_MAJOR, VERSION_MINOR));
        let mut sent = Vec::new();
        let got = client_handshake(&mut to_host.as_slice(), &mut sent).unwrap();
        assert_eq!(got, (VERSION_MAJOR, VERSION_MINOR));
        assert_eq!(sent, to_guest);
    }

    #[test]
    fn the_guest_refuses_another_major_with_an_error_frame() {
        let mut to_guest = Vec::new();
        let theirs = Message::Hello {
            major: VERSION_MAJOR + 1,
            minor: 0,
        };
        write_message(&mut to_guest, &theirs).unwrap();
        let mut to_host = Vec::new();
        let err = server_handshake(&mut to_guest.as_slice(), &mut to_host).unwrap_err();
        assert!(matches!(err, FrameError::VersionMismatch { .. }));
        let Some(Message::Error { message }) = read_message(&mut to_host.as_slice()).unwrap()
        else {
            panic!("no Error frame");
        };
        assert!(message.contains("same a3s-box version"), "{message}");

        // The host side turns that Error into a refusal.
        let err = client_handshake(&mut to_host.as_slice(), &mut Vec::new()).unwrap_err();
        assert!(matches!(err, FrameError::Refused(_)));
    }

    #[test]
    fn the_host_refuses_a_guest_of_another_major() {
        let mut to_host = Vec::new();
        write_message(
            &mut to_host,
            &Message::Hello {
                major: VERSION_MAJOR + 1,
                minor: 3,
            },
        )
        .unwrap();
        let err = client_handshake(&mut to_host.as_slice(), &mut Vec::new()).unwrap_err();
        assert!(matches!(
            err,
            FrameError::VersionMismatch {
                theirs_minor: 3,
                ..
            }
        ));
    }

    #[test]
    fn a_handshake_that_does_not_start_with_hello_fails() {
        let mut to_guest = Vec::new();
        write_message(&mut to_guest, &Message::Status).unwrap();
        let err = server_handshake(&mut to_guest.as_slice(), &mut Vec::new()).unwrap_err();
        assert!(matches!(
            err,
            FrameError::Unexpected {
                expected: "Hello",
                got: "Status"
            }
        ));
        assert!(matches!(
            server_handshake(&mut [].as_slice(), &mut Vec::new()),
            Err(FrameError::Closed(_))
        ));
    }
}
