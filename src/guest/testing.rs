//! A recording double of [`Sys`] for unit tests: it keeps every call and
//! plays back scripted results, with just enough state to look like a fresh
//! guest (`/proc/...` readable only once proc is mounted).

use super::supervisor::Supervisor;
use super::sys::{Errno, Mount, NsSys, Reaped, Sys};
use std::collections::VecDeque;
use std::ffi::CStr;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

/// A call made through [`Sys`], in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    OpenConsole(RawFd),
    Mkdir(String, u32),
    CreateFile(String, u32),
    /// Recorded only when the mount succeeds.
    Mount(Mount<'static>),
    Symlink(String, String),
    SetEnv(String, String),
    BlockSignals(Vec<i32>),
    Spawn {
        argv: Vec<String>,
        env: Vec<(String, String)>,
    },
    Kill(i32, i32),
    Sync,
    LoopbackUp,
    ExitPort(u32),
    Reboot(i32),
    Print(String),
    Eprint(String),
    SetupCgroup,
    StartServers,
    StartMain(Vec<String>),
    // What a new process does on its way into the box (`NsSys`).
    MountRaw {
        source: Option<String>,
        target: String,
        fstype: Option<String>,
        flags: libc::c_ulong,
    },
    Umount(String, i32),
    SetHostname(String),
    Chdir(String),
    Chroot(String),
    Setns(RawFd, i32),
}

impl Call {
    /// Whether this is one of the [`NsSys`] calls.
    pub fn is_ns(&self) -> bool {
        matches!(
            self,
            Call::MountRaw { .. }
                | Call::Umount(..)
                | Call::SetHostname(_)
                | Call::Chdir(_)
                | Call::Chroot(_)
                | Call::Setns(..)
        )
    }
}

#[derive(Debug, Default)]
pub struct RecordingSys {
    pub pid: i32,
    pub calls: Vec<Call>,
    pub closed_fds: Vec<RawFd>,
    pub existing_dirs: Vec<String>,
    /// Mount points; `/proc/self/mounts` lists them once `/proc` is one.
    pub mounted: Vec<String>,
    /// (target, errno) for mounts that fail.
    pub mount_errors: Vec<(&'static str, i32)>,
    /// (pid, errno) for kills that fail.
    pub kill_errors: Vec<(i32, i32)>,
    /// Contents of `/proc/cmdline`.
    pub cmdline: String,
    /// errno that spawning fails with, if any.
    pub spawn_error: Option<i32>,
    pub child_pid: i32,
    /// Results of successive `reap` calls; `NoChildren` once exhausted.
    pub reaps: VecDeque<Reaped>,
    /// Results of successive `wait_signal` calls; an error once exhausted,
    /// so a test with a wrong script fails instead of hanging.
    pub signals: VecDeque<i32>,
    /// errno that starting the servers fails with, if any.
    pub servers_error: Option<i32>,
    /// errno that making the box's cgroup fails with, if any.
    pub cgroup_error: Option<i32>,
    /// (call, errno) for `NsSys` calls that fail; the call is named as
    /// `"mount <target>"`, `"umount <target>"`, `"chdir <path>"`,
    /// `"chroot <path>"`, `"sethostname"` or `"setns"`.
    pub ns_errors: Vec<(&'static str, i32)>,
}

impl RecordingSys {
    /// A fresh guest: PID 1, nothing mounted, a command line without a workload.
    pub fn pid1() -> Self {
        RecordingSys {
            pid: 1,
            child_pid: 42,
            cmdline: "console=ttyS0 reboot=k panic=-1\n".into(),
            ..Default::default()
        }
    }

    pub fn stdout(&self) -> Vec<&str> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Print(l) => Some(l.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn stderr(&self) -> Vec<&str> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Eprint(l) => Some(l.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Index of the first call matching `pred`.
    pub fn position(&self, pred: impl Fn(&Call) -> bool) -> Option<usize> {
        self.calls.iter().position(pred)
    }

    fn proc_mounted(&self) -> bool {
        self.mounted.iter().any(|m| m == "/proc")
    }
}

fn enoent() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

fn leak(s: &str) -> &'static str {
    // Tests only: a few bytes per recorded mount.
    Box::leak(s.to_owned().into_boxed_str())
}

fn text(s: &CStr) -> String {
    s.to_string_lossy().into_owned()
}

impl RecordingSys {
    fn ns(&mut self, name: &str, call: Call) -> Result<(), Errno> {
        if let Some(&(_, errno)) = self.ns_errors.iter().find(|(n, _)| *n == name) {
            return Err(errno);
        }
        self.calls.push(call);
        Ok(())
    }
}

impl NsSys for RecordingSys {
    fn mount_raw(
        &mut self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
    ) -> Result<(), Errno> {
        let call = Call::MountRaw {
            source: source.map(text),
            target: text(target),
            fstype: fstype.map(text),
            flags,
        };
        self.ns(&format!("mount {}", text(target)), call)
    }

    fn umount(&mut self, target: &CStr, flags: libc::c_int) -> Result<(), Errno> {
        self.ns(
            &format!("umount {}", text(target)),
            Call::Umount(text(target), flags),
        )
    }

    fn sethostname(&mut self, name: &CStr) -> Result<(), Errno> {
        self.ns("sethostname", Call::SetHostname(text(name)))
    }

    fn chdir(&mut self, path: &CStr) -> Result<(), Errno> {
        self.ns(&format!("chdir {}", text(path)), Call::Chdir(text(path)))
    }

    fn chroot(&mut self, path: &CStr) -> Result<(), Errno> {
        self.ns(&format!("chroot {}", text(path)), Call::Chroot(text(path)))
    }

    fn setns(&mut self, fd: RawFd, nstype: libc::c_int) -> Result<(), Errno> {
        self.ns("setns", Call::Setns(fd, nstype))
    }
}

impl Sys for RecordingSys {
    fn getpid(&self) -> i32 {
        self.pid
    }

    fn fd_is_open(&self, fd: RawFd) -> bool {
        !self.closed_fds.contains(&fd)
    }

    fn open_console_as(&mut self, fd: RawFd) -> io::Result<()> {
        self.calls.push(Call::OpenConsole(fd));
        self.closed_fds.retain(|&f| f != fd);
        Ok(())
    }

    fn create_file(&mut self, path: &str, mode: u32) -> io::Result<()> {
        self.calls.push(Call::CreateFile(path.into(), mode));
        Ok(())
    }

    fn mkdir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        self.calls.push(Call::Mkdir(path.into(), mode));
        if self.existing_dirs.iter().any(|d| d == path) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        self.existing_dirs.push(path.into());
        Ok(())
    }

    fn mount(&mut self, mount: &Mount<'_>) -> io::Result<()> {
        if let Some(&(_, errno)) = self.mount_errors.iter().find(|(t, _)| *t == mount.target) {
            return Err(io::Error::from_raw_os_error(errno));
        }
        self.calls.push(Call::Mount(Mount {
            source: leak(mount.source),
            target: leak(mount.target),
            fstype: leak(mount.fstype),
            flags: mount.flags,
            data: leak(mount.data),
        }));
        self.mounted.push(mount.target.into());
        Ok(())
    }

    fn symlink(&mut self, target: &str, link: &str) -> io::Result<()> {
        self.calls.push(Call::Symlink(target.into(), link.into()));
        Ok(())
    }

    fn read_to_string(&mut self, path: &str) -> io::Result<String> {
        match path {
            _ if !self.proc_mounted() => Err(enoent()),
            "/proc/self/mounts" => Ok(self
                .mounted
                .iter()
                .map(|m| format!("none {m} fstype rw 0 0\n"))
                .collect()),
            "/proc/cmdline" => Ok(self.cmdline.clone()),
            _ => Err(enoent()),
        }
    }

    fn set_env(&mut self, key: &str, value: &str) {
        self.calls.push(Call::SetEnv(key.into(), value.into()));
    }

    fn block_signals(&mut self, signals: &[i32]) -> io::Result<()> {
        self.calls.push(Call::BlockSignals(signals.to_vec()));
        Ok(())
    }

    fn wait_signal(&mut self, _signals: &[i32]) -> io::Result<i32> {
        self.signals
            .pop_front()
            .ok_or_else(|| io::Error::other("no more scripted signals"))
    }

    fn spawn(&mut self, argv: &[String], env: &[(&str, &str)]) -> io::Result<i32> {
        self.calls.push(Call::Spawn {
            argv: argv.to_vec(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        });
        match self.spawn_error {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(self.child_pid),
        }
    }

    fn reap(&mut self) -> io::Result<Reaped> {
        Ok(self.reaps.pop_front().unwrap_or(Reaped::NoChildren))
    }

    fn kill(&mut self, pid: i32, signal: i32) -> io::Result<()> {
        self.calls.push(Call::Kill(pid, signal));
        match self.kill_errors.iter().find(|(p, _)| *p == pid) {
            Some(&(_, errno)) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(()),
        }
    }

    fn loopback_up(&mut self) -> io::Result<()> {
        self.calls.push(Call::LoopbackUp);
        Ok(())
    }

    fn sync(&mut self) {
        self.calls.push(Call::Sync);
    }

    fn write_exit_port(&mut self, value: u32) -> io::Result<()> {
        self.calls.push(Call::ExitPort(value));
        Ok(())
    }

    fn reboot(&mut self, cmd: i32) -> io::Error {
        self.calls.push(Call::Reboot(cmd));
        io::Error::other("recorded, not rebooted")
    }

    fn print(&mut self, line: &str) {
        self.calls.push(Call::Print(line.into()));
    }

    fn eprint(&mut self, line: &str) {
        self.calls.push(Call::Eprint(line.into()));
    }

    fn waker(&self) -> Box<dyn Fn() + Send + Sync> {
        Box::new(|| {})
    }

    fn setup_cgroup(&mut self, _sup: &Arc<Supervisor>) -> io::Result<()> {
        self.calls.push(Call::SetupCgroup);
        match self.cgroup_error {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(()),
        }
    }

    fn start_servers(&mut self, _sup: &Arc<Supervisor>) -> io::Result<()> {
        self.calls.push(Call::StartServers);
        match self.servers_error {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(()),
        }
    }

    fn start_main(&mut self, _sup: &Arc<Supervisor>, argv: &[String]) {
        self.calls.push(Call::StartMain(argv.to_vec()));
    }
}
