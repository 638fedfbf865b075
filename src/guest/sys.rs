//! The syscalls PID 1 makes, behind one trait so its logic runs in unit tests.
//!
//! [`LinuxSys`] is the real thing; tests use `testing::RecordingSys`.
//! [`Sys`] is what PID 1 calls; [`NsSys`] is what a new process calls between
//! its clone and its exec, where nothing may allocate.

use std::ffi::CStr;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use super::supervisor::Supervisor;

/// One filesystem to mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mount<'a> {
    /// Source (for virtual filesystems, conventionally the type's name).
    pub source: &'a str,
    /// Absolute mount point.
    pub target: &'a str,
    /// Filesystem type.
    pub fstype: &'a str,
    /// `MS_*` flags.
    pub flags: libc::c_ulong,
    /// Filesystem-specific options; empty for none.
    pub data: &'a str,
}

/// What one non-blocking `waitpid(-1, …)` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaped {
    /// A child ended; `status` is the raw wait status.
    Exited {
        /// The child's pid.
        pid: i32,
        /// Raw wait status (decode with `WIFEXITED` and friends).
        status: i32,
    },
    /// Children exist but none has ended yet.
    NoneReady,
    /// There are no children at all.
    NoChildren,
}

/// The operating-system calls guest init needs. Methods retry `EINTR`.
pub trait Sys {
    /// This process's pid.
    fn getpid(&self) -> i32;
    /// Whether `fd` is an open file descriptor.
    fn fd_is_open(&self, fd: RawFd) -> bool;
    /// Opens `/dev/console` read-write as exactly `fd`.
    fn open_console_as(&mut self, fd: RawFd) -> io::Result<()>;
    /// Creates one directory (not its parents).
    fn mkdir(&mut self, path: &str, mode: u32) -> io::Result<()>;
    /// Creates an empty regular file (none may exist there).
    fn create_file(&mut self, path: &str, mode: u32) -> io::Result<()>;
    /// Mounts a filesystem.
    fn mount(&mut self, mount: &Mount<'_>) -> io::Result<()>;
    /// Creates the symbolic link `link` pointing at `target`.
    fn symlink(&mut self, target: &str, link: &str) -> io::Result<()>;
    /// Reads a whole (small) file.
    fn read_to_string(&mut self, path: &str) -> io::Result<String>;
    /// Sets an environment variable of this process.
    fn set_env(&mut self, key: &str, value: &str);
    /// Blocks `signals` so they queue until [`Sys::wait_signal`] takes them.
    fn block_signals(&mut self, signals: &[i32]) -> io::Result<()>;
    /// Waits for one of `signals` (which must be blocked) and returns its number.
    fn wait_signal(&mut self, signals: &[i32]) -> io::Result<i32>;
    /// Starts `argv` with exactly the environment `env` and this process's
    /// stdio; returns its pid. The child starts with no signals blocked.
    fn spawn(&mut self, argv: &[String], env: &[(&str, &str)]) -> io::Result<i32>;
    /// One `waitpid(-1, WNOHANG)`.
    fn reap(&mut self) -> io::Result<Reaped>;
    /// Sends `signal` to `pid` (`-1`: every process but this one).
    fn kill(&mut self, pid: i32, signal: i32) -> io::Result<()>;
    /// Brings the loopback interface up (the kernel then gives it 127.0.0.1
    /// and ::1), as every container runtime does.
    fn loopback_up(&mut self) -> io::Result<()>;
    /// Flushes every filesystem.
    fn sync(&mut self);
    /// Does a 32-bit `out` of `value` to [`crate::proto::EXIT_STATUS_PORT`];
    /// `ErrorKind::Unsupported` where there are no I/O ports.
    fn write_exit_port(&mut self, value: u32) -> io::Result<()>;
    /// Reboots with `LINUX_REBOOT_CMD_*` `cmd`; returns only on failure.
    fn reboot(&mut self, cmd: i32) -> io::Error;
    /// Writes a line to stdout; errors are ignored (PID 1 must not die of them).
    fn print(&mut self, line: &str);
    /// Writes a line to stderr; errors are ignored.
    fn eprint(&mut self, line: &str);
    /// Something other threads call to interrupt [`Sys::wait_signal`].
    fn waker(&self) -> Box<dyn Fn() + Send + Sync>;
    /// Mounts the cgroup2 hierarchy and makes the box's group, in which
    /// `sup` then starts every process of the box.
    fn setup_cgroup(&mut self, sup: &Arc<Supervisor>) -> io::Result<()>;
    /// Binds the control, exec and PTY vsock ports and serves each on its
    /// own thread.
    fn start_servers(&mut self, sup: &Arc<Supervisor>) -> io::Result<()>;
    /// Starts `argv` as the box's main process with the console as its
    /// stdio; a failure is printed and ends the box through `sup`.
    fn start_main(&mut self, sup: &Arc<Supervisor>, argv: &[String]);
}

/// An `errno` value.
pub type Errno = i32;

/// The calls that move a new process into the box, made in the child of a
/// `clone` of a multi-threaded process. Implementations must not allocate,
/// lock or panic: another thread may have held the allocator's lock at the
/// moment of the clone, and the child has only the cloning thread.
pub trait NsSys {
    /// `mount(2)` with no filesystem-specific data.
    fn mount_raw(
        &mut self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
    ) -> Result<(), Errno>;
    /// `umount2(2)`.
    fn umount(&mut self, target: &CStr, flags: libc::c_int) -> Result<(), Errno>;
    /// `sethostname(2)`.
    fn sethostname(&mut self, name: &CStr) -> Result<(), Errno>;
    /// `chdir(2)`.
    fn chdir(&mut self, path: &CStr) -> Result<(), Errno>;
    /// `chroot(2)`.
    fn chroot(&mut self, path: &CStr) -> Result<(), Errno>;
    /// `setns(2)`: joins the namespace `fd` refers to, of type `nstype`.
    fn setns(&mut self, fd: RawFd, nstype: libc::c_int) -> Result<(), Errno>;
}

/// The calling thread's `errno`. Allocates nothing.
pub fn errno() -> Errno {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn check(rc: libc::c_int) -> Result<(), Errno> {
    if rc == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

fn opt_ptr(s: Option<&CStr>) -> *const libc::c_char {
    s.map_or(std::ptr::null(), CStr::as_ptr)
}

impl NsSys for LinuxSys {
    fn mount_raw(
        &mut self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
    ) -> Result<(), Errno> {
        // SAFETY: every pointer is null or a NUL-terminated string that
        // outlives the call; mount keeps none of them; null data is allowed.
        check(unsafe {
            libc::mount(
                opt_ptr(source),
                target.as_ptr(),
                opt_ptr(fstype),
                flags,
                std::ptr::null(),
            )
        })
    }

    fn umount(&mut self, target: &CStr, flags: libc::c_int) -> Result<(), Errno> {
        // SAFETY: `target` is NUL-terminated and outlives the call.
        check(unsafe { libc::umount2(target.as_ptr(), flags) })
    }

    fn sethostname(&mut self, name: &CStr) -> Result<(), Errno> {
        let bytes = name.to_bytes();
        // SAFETY: the pointer and length describe `name`'s bytes, which
        // outlive the call; sethostname copies them.
        check(unsafe { libc::sethostname(bytes.as_ptr().cast(), bytes.len()) })
    }

    fn chdir(&mut self, path: &CStr) -> Result<(), Errno> {
        // SAFETY: `path` is NUL-terminated and outlives the call.
        check(unsafe { libc::chdir(path.as_ptr()) })
    }

    fn chroot(&mut self, path: &CStr) -> Result<(), Errno> {
        // SAFETY: `path` is NUL-terminated and outlives the call.
        check(unsafe { libc::chroot(path.as_ptr()) })
    }

    fn setns(&mut self, fd: RawFd, nstype: libc::c_int) -> Result<(), Errno> {
        // SAFETY: setns takes plain integers; an invalid descriptor fails
        // with EBADF and changes nothing.
        check(unsafe { libc::setns(fd, nstype) })
    }
}

/// The real syscalls.
#[derive(Debug, Default)]
pub struct LinuxSys;

fn cstring(s: &str) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// A signal set holding exactly `signals`.
pub fn sigset(signals: &[i32]) -> io::Result<libc::sigset_t> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the sigset_t that `set` points to; the
    // pointer is valid and writable for its size.
    unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    // SAFETY: sigemptyset above fully initialised `set`.
    let mut set = unsafe { set.assume_init() };
    for &signal in signals {
        // SAFETY: `set` is an initialised sigset_t owned by this frame.
        if unsafe { libc::sigaddset(&mut set, signal) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(set)
}

/// The command that starts the workload: exactly `env`, this process's stdio,
/// and default signal handling.
///
/// Init blocks the signals it waits for, and a blocked mask survives `exec`.
/// std's `Command` means to reset it but, run as PID 1 in the guest (Rust
/// 1.95, musl), it did not, and the workload never saw the SIGTERM init
/// forwarded. So the child clears its mask itself.
fn workload_command(argv: &[String], env: &[(&str, &str)]) -> io::Result<std::process::Command> {
    use std::os::unix::process::CommandExt;
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let empty = sigset(&[])?;
    let mut command = std::process::Command::new(program);
    command.args(args).env_clear().envs(env.iter().copied());
    let reset = move || {
        // SAFETY: `empty` is an initialised sigset_t owned by the closure; a
        // null old-set pointer is allowed. pthread_sigmask and signal are
        // async-signal-safe and allocate nothing, as pre_exec requires.
        unsafe {
            if libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            // std ignores SIGPIPE in this process; the workload must not inherit that.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
        Ok(())
    };
    // SAFETY: `reset` only makes async-signal-safe calls (see above) and
    // touches no state shared with the parent.
    unsafe { command.pre_exec(reset) };
    Ok(command)
}

impl Sys for LinuxSys {
    fn getpid(&self) -> i32 {
        // SAFETY: getpid has no preconditions and cannot fail.
        unsafe { libc::getpid() }
    }

    fn fd_is_open(&self, fd: RawFd) -> bool {
        // SAFETY: F_GETFD only reads descriptor flags; on a closed or invalid
        // descriptor it fails with EBADF and changes nothing.
        unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
    }

    fn open_console_as(&mut self, fd: RawFd) -> io::Result<()> {
        // No O_CLOEXEC: the workload inherits this descriptor as its stdio.
        // SAFETY: the path is a NUL-terminated literal; open has no other
        // preconditions.
        let got = unsafe { libc::open(c"/dev/console".as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        if got != fd {
            // SAFETY: `got` is the descriptor just opened and owned here; dup2
            // onto `fd` replaces only `fd`, which the caller found closed.
            let rc = unsafe { libc::dup2(got, fd) };
            let err = io::Error::last_os_error();
            // SAFETY: `got` is ours and no longer needed whatever dup2 did.
            unsafe { libc::close(got) };
            if rc < 0 {
                return Err(err);
            }
        }
        Ok(())
    }

    fn mkdir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(mode).create(path)
    }

    fn create_file(&mut self, path: &str, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map(drop)
    }

    fn mount(&mut self, m: &Mount<'_>) -> io::Result<()> {
        let source = cstring(m.source)?;
        let target = cstring(m.target)?;
        let fstype = cstring(m.fstype)?;
        let data = cstring(m.data)?;
        let data_ptr = if m.data.is_empty() {
            std::ptr::null()
        } else {
            data.as_ptr().cast::<libc::c_void>()
        };
        // SAFETY: every string is a NUL-terminated CString that outlives the
        // call; `data_ptr` is null or points at one. mount does not keep them.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                m.flags,
                data_ptr,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn symlink(&mut self, target: &str, link: &str) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn read_to_string(&mut self, path: &str) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn set_env(&mut self, key: &str, value: &str) {
        // PID 1 is single-threaded here, so changing the environment is sound.
        std::env::set_var(key, value);
    }

    fn block_signals(&mut self, signals: &[i32]) -> io::Result<()> {
        let set = sigset(signals)?;
        // SAFETY: `set` is an initialised sigset_t; a null old-set pointer is
        // allowed. This process has one thread, so the mask is the process's.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(())
    }

    fn wait_signal(&mut self, signals: &[i32]) -> io::Result<i32> {
        let set = sigset(signals)?;
        loop {
            // SAFETY: `set` is an initialised sigset_t; a null siginfo pointer
            // is allowed by sigwaitinfo.
            let signal = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
            if signal > 0 {
                return Ok(signal);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    fn spawn(&mut self, argv: &[String], env: &[(&str, &str)]) -> io::Result<i32> {
        let child = workload_command(argv, env)?.spawn()?;
        // The child is reaped by `reap`, never through this handle.
        i32::try_from(child.id()).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
    }

    fn reap(&mut self) -> io::Result<Reaped> {
        loop {
            let mut status = 0;
            // SAFETY: `status` is a valid, writable c_int for waitpid to fill.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            match pid {
                0 => return Ok(Reaped::NoneReady),
                p if p > 0 => return Ok(Reaped::Exited { pid: p, status }),
                _ => {
                    let err = io::Error::last_os_error();
                    match err.raw_os_error() {
                        Some(libc::EINTR) => continue,
                        Some(libc::ECHILD) => return Ok(Reaped::NoChildren),
                        _ => return Err(err),
                    }
                }
            }
        }
    }

    fn kill(&mut self, pid: i32, signal: i32) -> io::Result<()> {
        // SAFETY: kill takes plain integers and has no memory preconditions.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn loopback_up(&mut self) -> io::Result<()> {
        super::net::interface_up("lo")
    }

    fn sync(&mut self) {
        // SAFETY: sync has no preconditions.
        unsafe { libc::sync() };
    }

    #[cfg(target_arch = "x86_64")]
    fn write_exit_port(&mut self, value: u32) -> io::Result<()> {
        use crate::proto::EXIT_STATUS_PORT;
        // SAFETY: ioperm takes plain integers and only changes this process's
        // I/O permission bitmap (4 ports: one 32-bit access).
        if unsafe { libc::ioperm(libc::c_ulong::from(EXIT_STATUS_PORT), 4, 1) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: ioperm above granted access to the four ports `out` touches,
        // so it cannot fault; it reads only the two input registers, touches no
        // memory or stack and leaves the flags alone, as the options declare.
        unsafe {
            core::arch::asm!(
                "out dx, eax",
                in("dx") EXIT_STATUS_PORT,
                in("eax") value,
                options(nomem, nostack, preserves_flags),
            );
        }
        Ok(())
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn write_exit_port(&mut self, _value: u32) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    fn reboot(&mut self, cmd: i32) -> io::Error {
        // SAFETY: reboot takes a plain command number; on success it does not
        // return, on failure it changes nothing.
        unsafe { libc::reboot(cmd) };
        io::Error::last_os_error()
    }

    fn print(&mut self, line: &str) {
        use std::io::Write;
        let _ = writeln!(io::stdout(), "{line}");
    }

    fn eprint(&mut self, line: &str) {
        use std::io::Write;
        let _ = writeln!(io::stderr(), "{line}");
    }

    fn waker(&self) -> Box<dyn Fn() + Send + Sync> {
        Box::new(|| {
            // SAFETY: kill takes plain integers. SIGPWR is blocked and taken
            // by PID 1's sigwaitinfo, so it only wakes that wait.
            unsafe { libc::kill(libc::getpid(), libc::SIGPWR) };
        })
    }

    fn setup_cgroup(&mut self, sup: &Arc<Supervisor>) -> io::Result<()> {
        use super::cgroup::{Cgroup, BOX_GROUP, CGROUP_MOUNT, MOUNT};
        let mounts = self.read_to_string("/proc/self/mounts")?;
        if !mounts
            .lines()
            .any(|l| l.split(' ').nth(1) == Some(CGROUP_MOUNT))
        {
            self.mount(&MOUNT)?;
        }
        sup.set_cgroup(Cgroup::create(
            std::path::Path::new(CGROUP_MOUNT),
            BOX_GROUP,
        )?);
        Ok(())
    }

    fn start_servers(&mut self, sup: &Arc<Supervisor>) -> io::Result<()> {
        super::vsock::start_servers(sup)
    }

    fn start_main(&mut self, sup: &Arc<Supervisor>, argv: &[String]) {
        super::session::start_console_main(sup, argv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_of_current_thread() -> libc::sigset_t {
        let mut old = sigset(&[]).unwrap();
        // SAFETY: a null new set only queries the mask into `old`, a valid sigset_t.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut old) };
        old
    }

    #[test]
    fn the_workload_starts_with_no_signals_blocked() {
        // Only this test thread's mask changes, and the child is waited for by
        // pid, so other tests are unaffected.
        let saved = mask_of_current_thread();
        let blocked = sigset(&[libc::SIGTERM, libc::SIGUSR1, libc::SIGCHLD]).unwrap();
        // SAFETY: `blocked` is an initialised sigset_t; null old set is allowed.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &blocked, std::ptr::null_mut()) };
        let argv = ["/bin/sh", "-c", "grep -E 'SigBlk|SigIgn' /proc/self/status"].map(String::from);
        let out = workload_command(&argv, &[("PATH", "/usr/bin:/bin")])
            .unwrap()
            .stderr(std::process::Stdio::inherit())
            .output();
        // SAFETY: `saved` was filled by pthread_sigmask above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &saved, std::ptr::null_mut()) };
        let out = out.unwrap();
        let status = String::from_utf8(out.stdout).unwrap();
        assert!(
            status.contains("SigBlk:\t0000000000000000"),
            "workload inherited a signal mask:\n{status}"
        );
        // SIGPIPE (bit 12) must not be ignored either.
        let ign = status.lines().find(|l| l.starts_with("SigIgn:")).unwrap();
        let ign = u64::from_str_radix(ign.trim_start_matches("SigIgn:").trim(), 16).unwrap();
        assert_eq!(ign & (1 << (libc::SIGPIPE - 1)), 0, "{status}");
    }

    #[test]
    fn the_workload_gets_exactly_the_given_environment() {
        let argv = ["/usr/bin/env"].map(String::from);
        let out = workload_command(&argv, &[("A", "1"), ("HOME", "/root")])
            .unwrap()
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "A=1\nHOME=/root\n");
    }

    #[test]
    fn an_empty_argv_is_refused() {
        assert!(workload_command(&[], &[]).is_err());
    }
}
