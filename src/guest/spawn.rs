//! Starting a process in the box.
//!
//! Guest init is multi-threaded (one thread per connection), so a new process
//! is a `clone` of one thread, and until it calls `execve` it may not
//! allocate or take a lock another thread might have held. Everything it
//! needs — C strings, pointer arrays, descriptors, ids — is therefore built
//! before the clone ([`Plan`]); the child only makes system calls, and
//! reports a failure as (stage, errno) on a close-on-exec pipe, as std's
//! `Command` does.
//!
//! Where the process goes ([`Placement`]):
//!
//! - **The main process** is cloned into new mount, UTS, IPC and PID
//!   namespaces; it is PID 1 of its PID namespace, so everything in the box
//!   dies with it. In its mount namespace it mounts a `/proc` of its own (a
//!   proc mount shows the PID namespace of whoever mounts it), detaches
//!   init's own kernel mounts, and switches into the box's root the way
//!   `switch_root` does: `MS_MOVE` of the root onto `/`, then `chroot`.
//!   Not `pivot_root`: the guest's root is the initramfs (rootfs), which has
//!   no parent mount, and `pivot_root(2)` refuses to move it (EINVAL). What
//!   stays beneath the moved root is the initramfs itself, which holds
//!   nothing but this binary; the VM, not the namespace, is the boundary.
//! - **Further processes** (exec, PTY) join the main process's namespaces
//!   with `setns`. A PID namespace applies to the children of the caller, so
//!   a short-lived thread enters it and clones; the new process is then
//!   init's own child (reaped by PID 1) and a member of the box's PID
//!   namespace. The mount, UTS and IPC namespaces are joined in the child;
//!   joining a mount namespace puts the child at the box's root.
//! - **Plain** children stay in init's namespaces (tests).
//!
//! Once the box has a cgroup (`cgroup.rs`), every process of it is cloned
//! straight into that group (`clone3` with `CLONE_INTO_CGROUP`): there is no
//! moment at which it, or anything it starts, runs outside it.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use super::mounts::MOUNTS;
use super::security::{self, BoxFailure, BoxPlan, CapSys, ProcessPlan};
use super::supervisor::Supervisor;
use super::sys::{errno, sigset, Errno, LinuxSys, NsSys};
use super::user::Creds;
use super::workload::{exec_failure_code, spawn_failure, EXIT_CANNOT_INVOKE, EXIT_RUNTIME_FAILED};

/// Where a new process goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// A plain child of init, in its namespaces and root.
    Plain,
    /// The box's main process: new namespaces, `hostname`, root `root`.
    NewBox {
        /// Where init mounted the box's root filesystem.
        root: String,
        /// Host name to set; empty leaves the kernel's.
        hostname: String,
    },
    /// Beside the main process `pid`, in its namespaces.
    Join {
        /// The main process's pid.
        pid: i32,
    },
}

/// The new process's stdin, stdout and stderr.
#[derive(Debug)]
pub enum Stdio {
    /// These descriptors become fds 0, 1 and 2.
    Fds([OwnedFd; 3]),
    /// The terminal `/dev/pts/<n>`, opened from inside the process's root and
    /// made its controlling terminal, as fds 0, 1 and 2.
    Terminal(u32),
}

/// A process to start.
#[derive(Debug)]
pub struct Spec {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// The whole environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: String,
    /// Whether to create the working directory (as root) when it is missing.
    pub create_cwd: bool,
    /// Credentials to switch to; `None` keeps init's.
    pub creds: Option<Creds>,
    /// Its stdio.
    pub stdio: Stdio,
    /// Where it goes.
    pub placement: Placement,
    /// The box's security options; `None` keeps init's privileges.
    pub security: Option<crate::proto::SecuritySetup>,
}

/// Why a process did not start, and the exit code to report for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnFailure {
    /// Docker's code: 125 the runtime failed, 126 cannot invoke, 127 not found.
    pub code: i32,
    /// For people.
    pub message: String,
}

impl SpawnFailure {
    /// A failure of the runtime itself (125).
    pub fn runtime(message: String) -> Self {
        SpawnFailure {
            code: EXIT_RUNTIME_FAILED,
            message,
        }
    }
}

/// Step of the child's setup that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Resetting the signal mask and dispositions.
    Signals = 1,
    /// Joining the main process's namespaces.
    Namespaces,
    /// Mounting `/proc`, setting the host name, switching root.
    Root,
    /// `setsid`.
    Session,
    /// Opening the terminal.
    Terminal,
    /// Installing fds 0-2.
    Stdio,
    /// `setgroups` / `setgid`.
    Groups,
    /// `setuid`.
    User,
    /// `chdir` to the working directory.
    Cwd,
    /// `execve`.
    Exec,
    /// Writing a sysctl.
    Sysctl,
    /// Capabilities, no-new-privileges, the guarded and read-only mounts.
    Security,
}

impl Stage {
    const ALL: [Stage; 12] = [
        Stage::Signals,
        Stage::Namespaces,
        Stage::Root,
        Stage::Session,
        Stage::Terminal,
        Stage::Stdio,
        Stage::Groups,
        Stage::User,
        Stage::Cwd,
        Stage::Exec,
        Stage::Sysctl,
        Stage::Security,
    ];

    fn from_u32(v: u32) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| *s as u32 == v)
    }

    /// The exit code for a failure at this stage. Allocates nothing.
    pub fn exit_code(self, errno: Errno) -> i32 {
        match self {
            Stage::Exec => exec_failure_code(errno),
            Stage::Cwd => EXIT_CANNOT_INVOKE,
            _ => EXIT_RUNTIME_FAILED,
        }
    }
}

/// The main process's way into the box's root, as C strings.
#[derive(Debug)]
pub struct RootPlan {
    /// The box's root, as init sees it.
    pub root: CString,
    /// `<root>/proc`.
    pub proc_dir: CString,
    /// Host name to set, if any.
    pub hostname: Option<CString>,
    /// Init's own mounts, innermost first, to detach from the box's view.
    pub detach: Vec<CString>,
}

impl RootPlan {
    fn new(root: &str, hostname: &str) -> Result<Self, SpawnFailure> {
        Ok(RootPlan {
            root: cstring(root, "the root path")?,
            proc_dir: cstring(
                &format!("{}/proc", root.trim_end_matches('/')),
                "the root path",
            )?,
            hostname: if hostname.is_empty() {
                None
            } else {
                Some(cstring(hostname, "the host name")?)
            },
            detach: MOUNTS
                .iter()
                .rev()
                .map(|m| cstring(m.target, "a mount point"))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Moves the calling process (in a new mount, UTS and PID namespace) into the
/// box's root; see the module documentation for why it is not `pivot_root`.
pub fn enter_new_root(sys: &mut impl NsSys, plan: &RootPlan) -> Result<(), Errno> {
    // Nothing done here may reach init's mount namespace.
    sys.mount_raw(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE)?;
    if let Some(name) = &plan.hostname {
        sys.sethostname(name)?;
    }
    sys.mount_raw(
        Some(c"proc"),
        &plan.proc_dir,
        Some(c"proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
    )?;
    for target in &plan.detach {
        // Best effort: they only hide init's view, which the chroot below
        // already leaves out of reach.
        let _ = sys.umount(target, libc::MNT_DETACH);
    }
    sys.chdir(&plan.root)?;
    sys.mount_raw(Some(&plan.root), c"/", None, libc::MS_MOVE)?;
    sys.chroot(c".")?;
    sys.chdir(c"/")
}

/// Namespace descriptors of the main process, in the order they are joined.
#[derive(Debug)]
pub struct JoinFds {
    /// `/proc/<pid>/ns/ipc`.
    pub ipc: OwnedFd,
    /// `/proc/<pid>/ns/uts`.
    pub uts: OwnedFd,
    /// `/proc/<pid>/ns/mnt`, last: it also moves the caller's root and cwd.
    pub mnt: OwnedFd,
}

/// Joins the main process's IPC, UTS and mount namespaces (the PID namespace
/// was entered by the cloning thread).
pub fn join_namespaces(sys: &mut impl NsSys, fds: &JoinFds) -> Result<(), Errno> {
    sys.setns(fds.ipc.as_raw_fd(), libc::CLONE_NEWIPC)?;
    sys.setns(fds.uts.as_raw_fd(), libc::CLONE_NEWUTS)?;
    sys.setns(fds.mnt.as_raw_fd(), libc::CLONE_NEWNS)?;
    sys.chdir(c"/")
}

fn open_ns(pid: i32, name: &str) -> Result<OwnedFd, SpawnFailure> {
    let path = format!("/proc/{pid}/ns/{name}");
    File::open(&path).map(OwnedFd::from).map_err(|e| {
        SpawnFailure::runtime(format!(
            "cannot join the box's namespaces ({path}): {e} — is the main process still running?"
        ))
    })
}

fn cstring(s: &str, what: &str) -> Result<CString, SpawnFailure> {
    CString::new(s).map_err(|_| SpawnFailure::runtime(format!("{what} contains a NUL byte")))
}

enum Enter {
    Nothing,
    NewRoot(RootPlan),
    Join(JoinFds),
}

enum ChildIo {
    Fds([RawFd; 3]),
    Terminal(CString),
}

/// Everything the child needs, built before the clone.
struct Plan {
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    programs: Vec<CString>,
    cwd: CString,
    cwd_parents: Vec<CString>,
    creds: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    io: ChildIo,
    enter: Enter,
    empty_mask: libc::sigset_t,
    report: RawFd,
    /// Capabilities and no-new-privileges, for a process of a box.
    process_sec: Option<ProcessPlan>,
    /// Sysctls and mounts, for the box's main process.
    box_sec: Option<BoxPlan>,
    /// `--init`: the main process execs our reaper instead.
    reaper: Option<Reaper>,
}

/// This binary, run as `--init`'s reaper with the command after `--`.
struct Reaper {
    /// `/proc/self/exe`, opened `O_PATH` (the box's root does not have it).
    exe: OwnedFd,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
}

impl Reaper {
    fn new(argv: &[String]) -> Result<Reaper, SpawnFailure> {
        use rustix::fs::{Mode, OFlags};
        let exe = rustix::fs::open(
            "/proc/self/exe",
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SpawnFailure::runtime(format!("cannot open init for --init: {e}")))?;
        let argv: Vec<CString> = [super::reaper::REAPER_NAME, "--"]
            .into_iter()
            .chain(argv.iter().map(String::as_str))
            .map(|a| cstring(a, "an argument"))
            .collect::<Result<_, _>>()?;
        Ok(Reaper {
            exe,
            argv_ptrs: pointers(&argv),
            _argv: argv,
        })
    }
}

fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The paths `execvp` would try for `program` with `path` as `PATH`.
fn candidates(program: &str, path: &str) -> Vec<String> {
    if program.contains('/') {
        return vec![program.to_owned()];
    }
    path.split(':')
        .map(|dir| {
            if dir.is_empty() {
                program.to_owned()
            } else {
                format!("{}/{program}", dir.trim_end_matches('/'))
            }
        })
        .collect()
}

/// `/a`, `/a/b`, `/a/b/c` for `/a/b/c`.
fn prefixes(dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut acc = String::new();
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        acc.push('/');
        acc.push_str(part);
        out.push(acc.clone());
    }
    out
}

impl Plan {
    fn new(spec: &Spec, enter: Enter, report: RawFd) -> Result<Plan, SpawnFailure> {
        let argv: Vec<CString> = spec
            .argv
            .iter()
            .map(|a| cstring(a, "an argument"))
            .collect::<Result<_, _>>()?;
        let envp: Vec<CString> = spec
            .env
            .iter()
            .map(|(k, v)| cstring(&format!("{k}={v}"), "an environment variable"))
            .collect::<Result<_, _>>()?;
        let program = spec
            .argv
            .first()
            .ok_or_else(|| SpawnFailure::runtime("no command given".into()))?;
        let path = spec
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map_or(super::DEFAULT_PATH, |(_, v)| v.as_str());
        let programs = candidates(program, path)
            .iter()
            .map(|p| cstring(p, "the program's path"))
            .collect::<Result<_, _>>()?;
        let cwd_parents = if spec.create_cwd {
            prefixes(&spec.cwd)
                .iter()
                .map(|p| cstring(p, "the working directory"))
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let io = match &spec.stdio {
            Stdio::Fds(fds) => {
                ChildIo::Fds([fds[0].as_raw_fd(), fds[1].as_raw_fd(), fds[2].as_raw_fd()])
            }
            Stdio::Terminal(n) => ChildIo::Terminal(cstring(&format!("/dev/pts/{n}"), "")?),
        };
        let empty_mask = sigset(&[])
            .map_err(|e| SpawnFailure::runtime(format!("cannot build a signal set: {e}")))?;
        let new_box = matches!(enter, Enter::NewRoot(_));
        let sec = spec.security.as_ref();
        let process_sec = sec.map(|s| ProcessPlan::new(s, security::last_cap()));
        let box_sec = sec.filter(|_| new_box).map(BoxPlan::new).transpose()?;
        let reaper = sec
            .filter(|s| new_box && s.init)
            .map(|_| Reaper::new(&spec.argv))
            .transpose()?;
        Ok(Plan {
            argv_ptrs: pointers(&argv),
            _argv: argv,
            envp_ptrs: pointers(&envp),
            _envp: envp,
            programs,
            cwd: cstring(&spec.cwd, "the working directory")?,
            cwd_parents,
            creds: spec
                .creds
                .as_ref()
                .map(|c| (c.uid, c.gid, c.groups.clone())),
            io,
            enter,
            empty_mask,
            report,
            process_sec,
            box_sec,
            reaper,
        })
    }
}

/// `clone3`'s flag for starting the child in the cgroup `clone_args.cgroup`
/// names (Linux 5.7; not in the libc crate for musl).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Clones the calling thread into a new process, with `flags` (`CLONE_NEW*`)
/// and SIGCHLD as its exit signal, in the cgroup whose directory `cgroup`
/// is open on (else in the caller's); returns the child's pid, or 0 in the
/// child.
///
/// # Safety
///
/// In the child (return value 0) only the cloning thread exists and locks
/// held by other threads stay held forever: it may make only system calls
/// that allocate nothing, must not return into code that may, and must end
/// with `execve` or `_exit`.
unsafe fn clone_process(flags: libc::c_int, cgroup: Option<RawFd>) -> io::Result<i32> {
    let rc = match cgroup {
        None => {
            let flags = libc::c_long::from(flags | libc::SIGCHLD);
            // SAFETY: with a null stack pointer clone acts as fork: the child
            // gets a copy of this thread's stack; the null tid and tls
            // pointers ask for no writes. What the child may do is the
            // caller's contract.
            unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) }
        }
        Some(fd) => {
            // SAFETY: clone_args is plain old data; all-zero is a valid value
            // (no pidfd, tids, stack, tls or set_tid).
            let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
            args.flags = u64::from(flags.unsigned_abs()) | CLONE_INTO_CGROUP;
            args.exit_signal = u64::from(libc::SIGCHLD.unsigned_abs());
            args.cgroup = u64::from(fd.unsigned_abs());
            // SAFETY: `args` is a valid clone_args of the size passed; with
            // no stack, clone3 acts as fork, as above. `fd` is the open
            // cgroup directory the supervisor keeps for the box's lifetime.
            unsafe {
                libc::syscall(
                    libc::SYS_clone3,
                    std::ptr::from_ref(&args),
                    std::mem::size_of::<libc::clone_args>(),
                )
            }
        }
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    i32::try_from(rc).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// The child: sets itself up from `plan` and execs; reports and exits on
/// failure. Never returns.
///
/// # Safety
///
/// Only in the child of [`clone_process`]; `plan` must be the parent's plan,
/// whose descriptors and pointers the clone copied.
unsafe fn child(plan: &Plan) -> ! {
    // SAFETY: the caller guarantees we are the cloned child.
    let (stage, err) = unsafe { setup_and_exec(plan, &mut LinuxSys) };
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&(stage as u32).to_le_bytes());
    msg[4..].copy_from_slice(&err.to_le_bytes());
    // SAFETY: `msg` is a live 8-byte buffer; `report` is the write end of the
    // report pipe, open in this child. A short or failed write only loses
    // the detail; the exit code still tells the failure.
    unsafe {
        libc::write(plan.report, msg.as_ptr().cast(), msg.len());
        libc::_exit(stage.exit_code(err))
    }
}

/// Returns only on failure: the stage and errno.
///
/// # Safety
///
/// Only in the child of [`clone_process`]: it replaces this process's signal
/// mask, session, fds 0-2, credentials and program.
unsafe fn setup_and_exec(plan: &Plan, sys: &mut (impl NsSys + CapSys)) -> (Stage, Errno) {
    let fail = |stage: Stage| (stage, errno());
    // SAFETY: `empty_mask` is an initialised sigset_t; null old set is
    // allowed. signal() with SIG_DFL installs no handler. Both are plain
    // system calls here.
    unsafe {
        if libc::sigprocmask(libc::SIG_SETMASK, &plan.empty_mask, std::ptr::null_mut()) != 0 {
            return fail(Stage::Signals);
        }
        // Rust ignores SIGPIPE in init; a workload must not inherit that.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match &plan.enter {
        Enter::Nothing => {}
        Enter::NewRoot(root) => {
            if let Err(e) = enter_new_root(sys, root) {
                return (Stage::Root, e);
            }
            if let Some(b) = &plan.box_sec {
                match security::apply_box(sys, b) {
                    Ok(()) => {}
                    Err(BoxFailure::Sysctl(_, e)) => return (Stage::Sysctl, e),
                    Err(BoxFailure::Mount(e)) => return (Stage::Security, e),
                }
            }
        }
        Enter::Join(fds) => {
            if let Err(e) = join_namespaces(sys, fds) {
                return (Stage::Namespaces, e);
            }
        }
    }
    // SAFETY: setsid takes no arguments; this child leads no group yet.
    if unsafe { libc::setsid() } < 0 {
        return fail(Stage::Session);
    }
    let fds = match &plan.io {
        ChildIo::Fds(fds) => *fds,
        ChildIo::Terminal(path) => {
            // No O_NOCTTY: as a session leader without a terminal, opening
            // it makes it ours; TIOCSCTTY says so explicitly as well.
            // SAFETY: `path` is NUL-terminated and lives in the plan.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR) };
            if fd < 0 {
                return fail(Stage::Terminal);
            }
            // SAFETY: `fd` is the terminal just opened; TIOCSCTTY takes an int.
            if unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } != 0 {
                return fail(Stage::Terminal);
            }
            [fd, fd, fd]
        }
    };
    for (target, &fd) in fds.iter().enumerate() {
        let target = RawFd::try_from(target).unwrap_or(0);
        // dup2 onto itself would keep close-on-exec set, so only distinct fds.
        // SAFETY: `fd` is open in this child (copied by the clone or opened
        // above); dup2 replaces only `target`.
        if fd != target && unsafe { libc::dup2(fd, target) } < 0 {
            return fail(Stage::Stdio);
        }
    }
    if let ChildIo::Terminal(_) = plan.io {
        if fds[0] > 2 {
            // SAFETY: the terminal's original fd; 0-2 hold copies of it.
            unsafe { libc::close(fds[0]) };
        }
    }
    for dir in &plan.cwd_parents {
        // SAFETY: `dir` is NUL-terminated; an existing directory fails with
        // EEXIST, and any real failure shows at chdir below.
        unsafe { libc::mkdir(dir.as_ptr(), 0o755) };
    }
    if plan.box_sec.as_ref().is_some_and(BoxPlan::root_read_only) {
        if let Err(e) = security::make_root_read_only(sys) {
            return (Stage::Security, e);
        }
    }
    if let Some(p) = &plan.process_sec {
        if let Err(e) = security::limit_bounding(sys, p) {
            return (Stage::Security, e);
        }
    }
    if let Some((uid, gid, groups)) = &plan.creds {
        // Raw system calls: the C library's wrappers would try to change
        // every thread of a process that, in this child, no longer exists.
        // SAFETY: the pointer and count describe `groups`, which outlives the
        // call; setgid/setuid take plain integers.
        unsafe {
            if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0
                || libc::syscall(libc::SYS_setgid, libc::c_long::from(*gid)) != 0
            {
                return fail(Stage::Groups);
            }
            if libc::syscall(libc::SYS_setuid, libc::c_long::from(*uid)) != 0 {
                return fail(Stage::User);
            }
        }
    }
    if let Some(p) = &plan.process_sec {
        let uid = plan.creds.as_ref().map_or(0, |c| c.0);
        if let Err(e) = security::settle_caps(sys, p, uid) {
            return (Stage::Security, e);
        }
    }
    // SAFETY: `cwd` is NUL-terminated and lives in the plan.
    if unsafe { libc::chdir(plan.cwd.as_ptr()) } != 0 {
        return fail(Stage::Cwd);
    }
    if let Some(r) = &plan.reaper {
        // SAFETY: the fd is open (O_PATH), the empty path and both pointer
        // arrays are NUL-terminated and live in the plan; execveat only
        // returns on failure.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                r.exe.as_raw_fd(),
                c"".as_ptr(),
                r.argv_ptrs.as_ptr(),
                plan.envp_ptrs.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        return fail(Stage::Exec);
    }
    // execvp's search, over the candidates built from the box's PATH.
    let mut last = libc::ENOENT;
    let mut denied = false;
    for program in &plan.programs {
        // SAFETY: `program` is NUL-terminated; both pointer arrays end with a
        // null and point at C strings the plan keeps alive.
        unsafe {
            libc::execve(
                program.as_ptr(),
                plan.argv_ptrs.as_ptr(),
                plan.envp_ptrs.as_ptr(),
            )
        };
        last = errno();
        match last {
            libc::EACCES => denied = true,
            libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
            _ => return (Stage::Exec, last),
        }
    }
    (Stage::Exec, if denied { libc::EACCES } else { last })
}

fn failure_message(stage: Stage, err: Errno, spec: &Spec) -> String {
    let e = io::Error::from_raw_os_error(err);
    let program = spec.argv.first().map_or("", String::as_str);
    match stage {
        Stage::Exec => spawn_failure(program, &e).1,
        Stage::Cwd => format!("chdir to cwd ({:?}) failed: {e}", spec.cwd),
        Stage::Groups | Stage::User => format!("could not switch to the requested user: {e}"),
        Stage::Terminal => format!("could not open the process's terminal: {e}"),
        Stage::Namespaces => format!("could not join the box's namespaces: {e}"),
        Stage::Root => format!("could not switch into the box's root filesystem: {e}"),
        Stage::Sysctl => format!("could not set the box's sysctls: {e}"),
        Stage::Security => format!("could not apply the box's security options: {e}"),
        Stage::Signals | Stage::Session | Stage::Stdio => {
            format!("could not set up the process: {e}")
        }
    }
}

/// Starts `spec` and registers it with `sup` (as the main process if
/// `main`). Returns its pid and the receiver of its raw wait status once
/// `execve` succeeded; a failure before or at `execve` is returned instead
/// (the child's own exit status still goes to `sup`).
pub fn spawn(
    sup: &Arc<Supervisor>,
    spec: Spec,
    main: bool,
) -> Result<(i32, Receiver<i32>), SpawnFailure> {
    match &spec.placement {
        Placement::Plain => spawn_here(sup, &spec, Enter::Nothing, 0, main),
        Placement::NewBox { root, hostname } => {
            let enter = Enter::NewRoot(RootPlan::new(root, hostname)?);
            let flags =
                libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWPID;
            spawn_here(sup, &spec, enter, flags, main)
        }
        Placement::Join { pid } => {
            let pid = *pid;
            let pidns = open_ns(pid, "pid")?;
            let enter = Enter::Join(JoinFds {
                ipc: open_ns(pid, "ipc")?,
                uts: open_ns(pid, "uts")?,
                mnt: open_ns(pid, "mnt")?,
            });
            // setns(CLONE_NEWPID) changes where the caller's *children* go,
            // for this thread only: a thread of its own enters, clones, ends.
            std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        // SAFETY: setns takes plain integers; `pidns` is open.
                        if unsafe { libc::setns(pidns.as_raw_fd(), libc::CLONE_NEWPID) } != 0 {
                            return Err(SpawnFailure::runtime(format!(
                                "could not join the box's PID namespace: {}",
                                io::Error::last_os_error()
                            )));
                        }
                        spawn_here(sup, &spec, enter, 0, main)
                    })
                    .join()
                    .unwrap_or_else(|_| {
                        Err(SpawnFailure::runtime("the spawning thread panicked".into()))
                    })
            })
        }
    }
}

fn spawn_here(
    sup: &Arc<Supervisor>,
    spec: &Spec,
    enter: Enter,
    flags: libc::c_int,
    main: bool,
) -> Result<(i32, Receiver<i32>), SpawnFailure> {
    let (report_r, report_w) =
        pipe().map_err(|e| SpawnFailure::runtime(format!("cannot create a pipe: {e}")))?;
    let plan = Plan::new(spec, enter, report_w.as_raw_fd())?;
    let cgroup = sup.cgroup().map(super::cgroup::Cgroup::fd);
    let (pid, status) = sup
        .start_child(main, || {
            // SAFETY: the child branch below only runs `child`, which keeps
            // to system calls on the prepared plan and never returns.
            match unsafe { clone_process(flags, cgroup) }? {
                // SAFETY: we are the freshly cloned child and `plan` is the
                // plan the parent built.
                0 => unsafe { child(&plan) },
                pid => Ok(pid),
            }
        })
        .map_err(|e| SpawnFailure::runtime(format!("cannot start a process: {e}")))?;
    // Our copy of the write end must go, or the read below never ends.
    drop(report_w);
    let mut msg = Vec::new();
    let _ = File::from(report_r).read_to_end(&mut msg);
    match msg.as_slice() {
        [] => Ok((pid, status)),
        bytes => {
            let (stage, err) = decode_report(bytes);
            Err(SpawnFailure {
                code: stage.exit_code(err),
                message: failure_message(stage, err, spec),
            })
        }
    }
}

fn decode_report(bytes: &[u8]) -> (Stage, Errno) {
    let word = |i: usize| {
        bytes
            .get(i..i + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .unwrap_or_default()
    };
    let stage = Stage::from_u32(u32::from_le_bytes(word(0))).unwrap_or(Stage::Stdio);
    (stage, i32::from_le_bytes(word(4)))
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a writable array of two c_ints, as pipe2 requires.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    use std::os::fd::FromRawFd;
    // SAFETY: pipe2 just returned these two descriptors; nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::testing::{Call, RecordingSys};

    fn root_plan() -> RootPlan {
        RootPlan::new("/newroot", "web-1").unwrap()
    }

    #[test]
    fn entering_the_root_mounts_proc_then_moves_the_root_onto_slash_and_chroots() {
        let mut sys = RecordingSys::pid1();
        enter_new_root(&mut sys, &root_plan()).unwrap();
        let ns: Vec<&Call> = sys.calls.iter().filter(|c| c.is_ns()).collect();
        let detach: Vec<Call> = MOUNTS
            .iter()
            .rev()
            .map(|m| Call::Umount(m.target.into(), libc::MNT_DETACH))
            .collect();
        let mut want = vec![
            Call::MountRaw {
                source: None,
                target: "/".into(),
                fstype: None,
                flags: libc::MS_REC | libc::MS_PRIVATE,
            },
            Call::SetHostname("web-1".into()),
            Call::MountRaw {
                source: Some("proc".into()),
                target: "/newroot/proc".into(),
                fstype: Some("proc".into()),
                flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            },
        ];
        want.extend(detach);
        want.extend([
            Call::Chdir("/newroot".into()),
            Call::MountRaw {
                source: Some("/newroot".into()),
                target: "/".into(),
                fstype: None,
                flags: libc::MS_MOVE,
            },
            Call::Chroot(".".into()),
            Call::Chdir("/".into()),
        ]);
        assert_eq!(ns, want.iter().collect::<Vec<_>>());
    }

    #[test]
    fn no_hostname_means_no_sethostname() {
        let mut sys = RecordingSys::pid1();
        enter_new_root(&mut sys, &RootPlan::new("/newroot", "").unwrap()).unwrap();
        assert!(sys
            .position(|c| matches!(c, Call::SetHostname(_)))
            .is_none());
    }

    #[test]
    fn a_failed_step_stops_the_sequence_before_the_root_moves() {
        let mut sys = RecordingSys::pid1();
        sys.ns_errors = vec![("mount /newroot/proc", libc::ENODEV)];
        assert_eq!(enter_new_root(&mut sys, &root_plan()), Err(libc::ENODEV));
        assert!(sys.position(|c| matches!(c, Call::Chroot(_))).is_none());
    }

    #[test]
    fn init_mounts_that_cannot_be_detached_do_not_stop_the_switch() {
        let mut sys = RecordingSys::pid1();
        sys.ns_errors = vec![("umount /dev/pts", libc::EINVAL)];
        enter_new_root(&mut sys, &root_plan()).unwrap();
        assert!(sys.calls.contains(&Call::Chroot(".".into())));
    }

    #[test]
    fn joining_enters_ipc_uts_then_mnt_and_goes_to_the_root() {
        let fds = JoinFds {
            ipc: File::open("/dev/null").unwrap().into(),
            uts: File::open("/dev/null").unwrap().into(),
            mnt: File::open("/dev/null").unwrap().into(),
        };
        let mut sys = RecordingSys::pid1();
        join_namespaces(&mut sys, &fds).unwrap();
        let ns: Vec<&Call> = sys.calls.iter().filter(|c| c.is_ns()).collect();
        assert_eq!(
            ns,
            [
                &Call::Setns(fds.ipc.as_raw_fd(), libc::CLONE_NEWIPC),
                &Call::Setns(fds.uts.as_raw_fd(), libc::CLONE_NEWUTS),
                &Call::Setns(fds.mnt.as_raw_fd(), libc::CLONE_NEWNS),
                &Call::Chdir("/".into()),
            ]
        );
    }

    #[test]
    fn path_candidates_follow_execvp() {
        assert_eq!(candidates("/bin/sh", "/x"), ["/bin/sh"]);
        assert_eq!(candidates("./run", "/x"), ["./run"]);
        assert_eq!(
            candidates("sh", "/usr/bin:/bin/::/opt"),
            ["/usr/bin/sh", "/bin/sh", "sh", "/opt/sh"]
        );
    }

    #[test]
    fn cwd_prefixes_are_created_outermost_first() {
        assert_eq!(prefixes("/a//b/c/"), ["/a", "/a/b", "/a/b/c"]);
        assert!(prefixes("/").is_empty());
    }

    #[test]
    fn stage_codes_follow_docker() {
        assert_eq!(Stage::Exec.exit_code(libc::ENOENT), 127);
        assert_eq!(Stage::Exec.exit_code(libc::EACCES), 126);
        assert_eq!(Stage::Cwd.exit_code(libc::ENOENT), 126);
        assert_eq!(Stage::Root.exit_code(libc::EINVAL), 125);
        for s in Stage::ALL {
            assert_eq!(Stage::from_u32(s as u32), Some(s));
        }
        assert_eq!(Stage::from_u32(0), None);
    }

    #[test]
    fn reports_decode_even_when_garbled() {
        let mut bytes = (Stage::Cwd as u32).to_le_bytes().to_vec();
        bytes.extend(libc::ENOENT.to_le_bytes());
        assert_eq!(decode_report(&bytes), (Stage::Cwd, libc::ENOENT));
        assert_eq!(decode_report(&[9]), (Stage::Stdio, 0));
    }
}
