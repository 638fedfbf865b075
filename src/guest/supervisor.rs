//! What the guest's threads share: which child's exit status goes to whom,
//! the main process's state, and how processes are isolated.
//!
//! Only one caller of `waitpid(-1)` may exist per process, or exit statuses
//! get stolen. As PID 1 that is the main thread ([`Reaping::Central`]); it
//! hands each status to the thread that started the child through
//! [`Supervisor::reaped`]. Starting a child and registering it happen under
//! one lock that `reaped` also takes, so a child that ends at once is never
//! reaped before anyone waits for it.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::cgroup::Cgroup;
use crate::proto::MainStatus;

/// Who collects exit statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaping {
    /// PID 1: its main thread reaps every child (orphans included) and calls
    /// [`Supervisor::reaped`].
    Central,
    /// A thread per child waits for that pid alone: for tests, which run
    /// beside other children of the same process.
    PerChild,
}

/// How processes are placed in the box.
#[derive(Debug, Clone, PartialEq, Eq)]
// `Off` is the strategy tests switch to; the guest itself always isolates.
#[cfg_attr(not(test), allow(dead_code))]
pub enum Isolation {
    /// As plain children of init, in its namespaces and root; users are
    /// looked up in `<etc_root>/etc`. For tests.
    Off {
        /// Directory whose `etc/passwd` and `etc/group` name users.
        etc_root: PathBuf,
    },
    /// The main process gets new mount, UTS, IPC and PID namespaces with
    /// `root` as its root; every later process joins those namespaces.
    Namespaces {
        /// Where init mounted the box's root filesystem.
        root: String,
    },
}

/// The main process's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Main {
    /// No `RunMain` yet.
    NotStarted,
    /// Being started.
    Starting,
    /// Running with this pid.
    Running(i32),
    /// Ended (`pid` 0 when it never ran) with this exit code.
    Exited {
        /// Its pid, or 0.
        pid: i32,
        /// Shell-style exit code.
        code: i32,
    },
}

/// Exit code reported when the box is shut down while its main process runs.
const KILLED: i32 = 128 + libc::SIGKILL;

struct State {
    waiters: HashMap<i32, Sender<i32>>,
    main: Main,
    shutdown: bool,
    main_reported: bool,
}

/// Requests for a thread that waits for one pid, with whom to tell.
type WaiterRequests = Sender<(i32, Arc<Supervisor>)>;

/// Shared by PID 1's main thread and every server thread.
pub struct Supervisor {
    reaping: Reaping,
    /// With [`Reaping::PerChild`]: where to ask for a waiter thread.
    waiters: Mutex<Option<WaiterRequests>>,
    isolation: Isolation,
    state: Mutex<State>,
    changed: Condvar,
    wake: Box<dyn Fn() + Send + Sync>,
    /// The box's cgroup, which every process of the box is started in.
    cgroup: OnceLock<Cgroup>,
    /// The box's security options, from its `RunMain`.
    security: OnceLock<crate::proto::SecuritySetup>,
}

impl Supervisor {
    /// `wake` interrupts PID 1's wait for signals (so it sees a shutdown
    /// request or a main process that failed to start).
    pub fn new(reaping: Reaping, isolation: Isolation, wake: Box<dyn Fn() + Send + Sync>) -> Self {
        let waiters = (reaping == Reaping::PerChild).then(|| {
            // Waiter threads come from here, not from the thread that started
            // the child: that one may have entered the box's PID namespace,
            // after which the kernel refuses it new threads (EINVAL).
            let (tx, rx) = mpsc::channel::<(i32, Arc<Supervisor>)>();
            std::thread::spawn(move || {
                for (pid, sup) in rx {
                    std::thread::spawn(move || wait_for(pid, &sup));
                }
            });
            tx
        });
        Supervisor {
            reaping,
            waiters: Mutex::new(waiters),
            isolation,
            state: Mutex::new(State {
                waiters: HashMap::new(),
                main: Main::NotStarted,
                shutdown: false,
                main_reported: false,
            }),
            changed: Condvar::new(),
            wake,
            cgroup: OnceLock::new(),
            security: OnceLock::new(),
        }
    }

    /// Starts every later process of the box in `cgroup`; only the first
    /// call counts.
    pub fn set_cgroup(&self, cgroup: Cgroup) {
        let _ = self.cgroup.set(cgroup);
    }

    /// The box's cgroup, once there is one.
    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.get()
    }

    /// Records the box's security options (once; later calls change nothing).
    pub fn set_security(&self, sec: crate::proto::SecuritySetup) {
        let _ = self.security.set(sec);
    }

    /// The box's security options, once its `RunMain` gave them.
    pub fn security(&self) -> Option<&crate::proto::SecuritySetup> {
        self.security.get()
    }

    /// How processes are isolated.
    pub fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking thread cannot leave State inconsistent: every update
        // is a single assignment or map operation.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a child with `start` (which returns its pid) and registers it,
    /// as the main process if `main`; returns the pid and where its raw wait
    /// status will arrive.
    pub fn start_child(
        self: &Arc<Self>,
        main: bool,
        start: impl FnOnce() -> io::Result<i32>,
    ) -> io::Result<(i32, Receiver<i32>)> {
        let (tx, rx) = mpsc::channel();
        let mut state = self.lock();
        let pid = start()?;
        state.waiters.insert(pid, tx);
        if main {
            state.main = Main::Running(pid);
        }
        drop(state);
        if self.reaping == Reaping::PerChild {
            let waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(tx) = waiters.as_ref() {
                let _ = tx.send((pid, Arc::clone(self)));
            }
        }
        Ok((pid, rx))
    }

    /// A child ended with raw wait `status`: tells whoever started it.
    pub fn reaped(&self, pid: i32, status: i32) {
        let mut state = self.lock();
        if let Some(tx) = state.waiters.remove(&pid) {
            let _ = tx.send(status);
        }
        if state.main == Main::Running(pid) {
            state.main = Main::Exited {
                pid,
                code: super::workload::exit_code(status),
            };
            self.changed.notify_all();
        }
    }

    /// Claims the right to start the main process; fails if it was claimed.
    pub fn begin_main(&self) -> Result<(), &'static str> {
        let mut state = self.lock();
        match state.main {
            Main::NotStarted if !state.shutdown => {
                state.main = Main::Starting;
                Ok(())
            }
            Main::NotStarted => Err("the box is shutting down"),
            _ => Err("the box's main process was already started"),
        }
    }

    /// The main process could not be started: the box ends with `code`.
    pub fn main_failed(&self, code: i32) {
        let mut state = self.lock();
        if state.main == Main::Starting {
            state.main = Main::Exited { pid: 0, code };
            self.changed.notify_all();
            drop(state);
            (self.wake)();
        }
    }

    /// Everything the main process printed, and its `Exit`, reached the host
    /// (or never will): PID 1 may power off.
    pub fn main_reported(&self) {
        self.lock().main_reported = true;
        self.changed.notify_all();
    }

    /// Waits until [`Self::main_reported`], at most `timeout`; whether it was.
    pub fn wait_reported(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while !state.main_reported {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Asks PID 1 to power off now.
    pub fn request_shutdown(&self) {
        self.lock().shutdown = true;
        self.changed.notify_all();
        (self.wake)();
    }

    /// The main process's state.
    pub fn main(&self) -> Main {
        self.lock().main
    }

    /// The main process's pid while it runs.
    pub fn main_pid(&self) -> Option<i32> {
        match self.lock().main {
            Main::Running(pid) => Some(pid),
            _ => None,
        }
    }

    /// The main process's state for a `StatusReply`.
    pub fn status(&self) -> MainStatus {
        match self.lock().main {
            Main::NotStarted | Main::Starting => MainStatus::default(),
            Main::Running(pid) => MainStatus {
                main_pid: pid,
                running: true,
                exit_code: None,
            },
            Main::Exited { pid, code } => MainStatus {
                main_pid: pid,
                running: false,
                exit_code: Some(code),
            },
        }
    }

    /// The box's exit code once it is done: the main process ended, or a
    /// shutdown was asked for (137 if the main process still runs then).
    pub fn finished(&self) -> Option<i32> {
        let state = self.lock();
        match state.main {
            Main::Exited { code, .. } => Some(code),
            Main::Running(_) | Main::Starting if state.shutdown => Some(KILLED),
            Main::NotStarted if state.shutdown => Some(0),
            _ => None,
        }
    }
}

/// Waits for `pid` alone and hands its status to `sup`.
fn wait_for(pid: i32, sup: &Supervisor) {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid, writable c_int; waiting for one
        // specific pid cannot take another's status.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            sup.reaped(pid, status);
            return;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn supervisor(reaping: Reaping) -> (Arc<Supervisor>, Arc<AtomicUsize>) {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&wakes);
        let sup = Supervisor::new(
            reaping,
            Isolation::Off {
                etc_root: "/".into(),
            },
            Box::new(move || {
                w.fetch_add(1, Ordering::SeqCst);
            }),
        );
        (Arc::new(sup), wakes)
    }

    #[test]
    fn a_status_goes_to_whoever_started_the_child() {
        let (sup, _) = supervisor(Reaping::Central);
        let (pid, rx) = sup.start_child(false, || Ok(77)).unwrap();
        assert_eq!(pid, 77);
        sup.reaped(78, 0); // an orphan: nobody waits
        sup.reaped(77, 3 << 8);
        assert_eq!(rx.recv().unwrap(), 3 << 8);
        assert_eq!(sup.main(), Main::NotStarted);
    }

    #[test]
    fn the_main_process_runs_then_exits_with_its_code() {
        let (sup, _) = supervisor(Reaping::Central);
        sup.begin_main().unwrap();
        assert!(sup.begin_main().is_err(), "only one main process");
        let (pid, _rx) = sup.start_child(true, || Ok(9)).unwrap();
        assert_eq!(sup.main_pid(), Some(pid));
        assert_eq!(sup.finished(), None);
        sup.reaped(9, libc::SIGTERM);
        assert_eq!(sup.main(), Main::Exited { pid: 9, code: 143 });
        assert_eq!(sup.finished(), Some(143));
        assert_eq!(
            sup.status(),
            MainStatus {
                main_pid: 9,
                running: false,
                exit_code: Some(143)
            }
        );
    }

    #[test]
    fn a_main_process_that_cannot_start_ends_the_box_and_wakes_pid_1() {
        let (sup, wakes) = supervisor(Reaping::Central);
        sup.begin_main().unwrap();
        sup.main_failed(127);
        assert_eq!(sup.finished(), Some(127));
        assert_eq!(wakes.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn shutdown_finishes_the_box_with_137_while_main_runs_and_0_before() {
        let (sup, wakes) = supervisor(Reaping::Central);
        sup.request_shutdown();
        assert_eq!(sup.finished(), Some(0));
        assert_eq!(wakes.load(Ordering::SeqCst), 1);
        assert!(sup.begin_main().is_err());

        let (sup, _) = supervisor(Reaping::Central);
        sup.begin_main().unwrap();
        sup.start_child(true, || Ok(5)).unwrap();
        sup.request_shutdown();
        assert_eq!(sup.finished(), Some(137));
    }

    #[test]
    fn waiting_for_the_report_times_out_or_returns_when_reported() {
        let (sup, _) = supervisor(Reaping::Central);
        assert!(!sup.wait_reported(Duration::from_millis(10)));
        let s = Arc::clone(&sup);
        let t = std::thread::spawn(move || s.main_reported());
        assert!(sup.wait_reported(Duration::from_secs(10)));
        t.join().unwrap();
    }

    #[test]
    fn per_child_reaping_waits_for_that_pid_only() {
        let (sup, _) = supervisor(Reaping::PerChild);
        let (_, rx) = sup
            .start_child(true, || {
                let child = std::process::Command::new("/bin/sh")
                    .args(["-c", "exit 4"])
                    .spawn()?;
                Ok(i32::try_from(child.id()).unwrap())
            })
            .unwrap();
        assert_eq!(super::super::workload::exit_code(rx.recv().unwrap()), 4);
        assert_eq!(sup.finished(), Some(4));
    }
}
