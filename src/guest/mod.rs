//! Guest init: PID 1 inside every box's VM.
//!
//! The kernel starts this binary as `/init` from the initramfs. In order, it:
//! blocks the signals it handles (so none is lost before it waits for them),
//! makes sure stdin/stdout/stderr are the console, mounts the kernel
//! filesystems and reads the kernel command line. Then one of two things:
//!
//! - **With a root filesystem** (`a3s.root=virtiofs:<tag>`, see
//!   [`crate::proto::decode_root`]): it mounts the virtio-fs share at
//!   `/newroot`, mounts the kernel filesystems inside it, makes the box's
//!   cgroup (`cgroup.rs`), starts the vsock
//!   servers (control 4088, exec 4089, PTY 4090; `session.rs`), prints
//!   [`READY_LINE`](crate::proto::READY_LINE) and waits. The host's `RunMain`
//!   starts the main process in new namespaces inside that root (`spawn.rs`);
//!   an argv after `--` on the command line starts it at once, on the
//!   console.
//! - **Without one**: it prints the ready line and runs the argv after `--`
//!   from the initramfs itself (tiny test guests).
//!
//! Either way it then waits for the main process — reaping every other
//! process that ends and forwarding termination signals to it. When the main
//! process ends it kills what is left, syncs, reports the exit code on the
//! VMM's [`EXIT_STATUS_PORT`](crate::proto::EXIT_STATUS_PORT) and reboots,
//! which ends the VM where no VMM listens on that port.
//!
//! Everything PID 1 does goes through the `Sys` trait (`sys.rs`), and what a
//! new process does on its way into the box through `NsSys`, so the logic is
//! unit-tested with a recording double; the servers work on any byte stream
//! and are tested over Unix socket pairs with real processes.

#[cfg(target_os = "linux")]
mod cgroup;
#[cfg(target_os = "linux")]
mod files;
#[cfg(target_os = "linux")]
mod mounts;
#[cfg(target_os = "linux")]
mod net;
#[cfg(target_os = "linux")]
mod pty;
#[cfg(target_os = "linux")]
pub mod reaper;
#[cfg(target_os = "linux")]
mod security;
#[cfg(target_os = "linux")]
mod session;
#[cfg(target_os = "linux")]
mod spawn;
#[cfg(target_os = "linux")]
mod stats;
#[cfg(target_os = "linux")]
mod supervisor;
#[cfg(target_os = "linux")]
mod sys;
#[cfg(all(test, target_os = "linux"))]
mod testing;
#[cfg(target_os = "linux")]
mod user;
#[cfg(target_os = "linux")]
mod vsock;
#[cfg(target_os = "linux")]
mod workload;

/// `PATH` for init and the workload (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs guest init; the dispatcher calls this when invoked as `init` (or as
/// `a3s-box init`).
///
/// Refuses with 125, touching nothing, unless this process is PID 1. As PID 1
/// it does not return once the VM ends; it returns the workload's exit code
/// only if neither the exit port nor reboot ended the VM (the caller's exit
/// then panics the guest kernel, which also ends the VM under `panic=-1`).
#[cfg(target_os = "linux")]
pub fn main() -> i32 {
    run(&mut sys::LinuxSys)
}

/// Guest init runs only inside a Linux guest.
#[cfg(not(target_os = "linux"))]
pub fn main() -> i32 {
    eprintln!("a3s-box init: the guest init runs only as PID 1 inside a box's Linux VM");
    125
}

#[cfg(target_os = "linux")]
fn run(sys: &mut impl sys::Sys) -> i32 {
    use workload::{EXIT_RUNTIME_FAILED, HANDLED_SIGNALS};

    let pid = sys.getpid();
    if pid != 1 {
        sys.eprint(&format!(
            "a3s-box init: refusing to run as pid {pid}: the guest init must be PID 1 inside a \
             box's VM, where it mounts filesystems and reboots the machine — on a host, use \
             `a3s-box run`"
        ));
        return EXIT_RUNTIME_FAILED;
    }
    if let Err(e) = sys.block_signals(HANDLED_SIGNALS) {
        sys.eprint(&format!(
            "a3s-box init: warning: could not block signals: {e}"
        ));
    }
    // The initramfs has /dev/console; if even that failed, devtmpfs may help.
    let console = ensure_stdio(sys);
    let failures = mounts::mount_all(sys);
    if console.is_err() {
        let _ = ensure_stdio(sys);
    }
    for f in failures {
        sys.eprint(&format!(
            "a3s-box init: warning: could not mount {} on {}: {}",
            f.mount.fstype, f.mount.target, f.error
        ));
    }
    if let Err(e) = sys.loopback_up() {
        sys.eprint(&format!(
            "a3s-box init: warning: could not bring up the loopback interface: {e}"
        ));
    }
    sys.set_env("PATH", DEFAULT_PATH);
    let code = start_and_wait(sys);
    shutdown(sys, code)
}

/// Opens the console as any of fds 0, 1 and 2 that is closed (the kernel
/// leaves them closed when it could not open `/dev/console` itself).
#[cfg(target_os = "linux")]
fn ensure_stdio(sys: &mut impl sys::Sys) -> std::io::Result<()> {
    for fd in 0..=2 {
        if !sys.fd_is_open(fd) {
            sys.open_console_as(fd)?;
        }
    }
    Ok(())
}

/// Runs the workload to its end and returns the exit code to report.
#[cfg(target_os = "linux")]
fn start_and_wait(sys: &mut impl sys::Sys) -> i32 {
    use workload::{exit_code, spawn_failure, supervise, EXIT_RUNTIME_FAILED, WORKLOAD_ENV};

    let cmdline = match sys.read_to_string("/proc/cmdline") {
        Ok(c) => c,
        Err(e) => {
            sys.eprint(&format!(
                "a3s-box init: cannot read the kernel command line from /proc/cmdline: {e}"
            ));
            return EXIT_RUNTIME_FAILED;
        }
    };
    let argv = crate::proto::decode_argv(&cmdline);
    match crate::proto::decode_root(&cmdline) {
        Ok(None) => {}
        Ok(Some(root)) => return run_box(sys, &root, &argv),
        Err(e) => {
            sys.eprint(&format!("a3s-box init: {e}"));
            return EXIT_RUNTIME_FAILED;
        }
    }
    sys.print(crate::proto::READY_LINE);
    if argv.is_empty() {
        sys.print("a3s-box: no command given; nothing to run");
        return 0;
    }
    let child = match sys.spawn(&argv, WORKLOAD_ENV) {
        Ok(pid) => pid,
        Err(e) => {
            let (code, message) = spawn_failure(&argv[0], &e);
            sys.eprint(&format!("a3s-box: {message}"));
            return code;
        }
    };
    match supervise(sys, child) {
        Ok(status) => exit_code(status),
        Err(e) => {
            sys.eprint(&format!("a3s-box init: lost track of the workload: {e}"));
            EXIT_RUNTIME_FAILED
        }
    }
}

/// How long PID 1 waits, once the main process ended, for its output and
/// `Exit` to reach the host before powering off.
#[cfg(target_os = "linux")]
const REPORT_TIMEOUT: std::time::Duration =
    std::time::Duration::from_secs(session::OUTPUT_GRACE.as_secs() + session::LINGER.as_secs() + 1);

/// A box with a root filesystem: mounts it, starts the servers, runs the
/// main process (on request, or `argv` at once) and returns its exit code.
#[cfg(target_os = "linux")]
fn run_box(sys: &mut impl sys::Sys, root: &crate::proto::RootSource, argv: &[String]) -> i32 {
    use std::sync::Arc;
    use supervisor::{Isolation, Reaping, Supervisor};
    use workload::EXIT_RUNTIME_FAILED;

    if let Err(e) = mounts::mount_root(sys, root) {
        sys.eprint(&format!(
            "a3s-box init: cannot mount the box's root filesystem ({root:?}) on {}: {e} — \
             the VMM must offer a virtio-fs device for each tag",
            mounts::NEWROOT
        ));
        return EXIT_RUNTIME_FAILED;
    }
    for f in mounts::prepare_root(sys) {
        sys.eprint(&format!(
            "a3s-box init: warning: could not mount {} on {}: {}",
            f.mount.fstype, f.mount.target, f.error
        ));
    }
    let sup = Arc::new(Supervisor::new(
        Reaping::Central,
        Isolation::Namespaces {
            root: mounts::NEWROOT.into(),
        },
        sys.waker(),
    ));
    if let Err(e) = sys.setup_cgroup(&sup) {
        sys.eprint(&format!(
            "a3s-box init: warning: the box gets no cgroup, so stats, top and pause will not \
             work: {e}"
        ));
    }
    if let Err(e) = sys.start_servers(&sup) {
        sys.eprint(&format!("a3s-box init: {e}"));
        if argv.is_empty() {
            // Nothing to run, and no way for the host to ask for anything.
            return EXIT_RUNTIME_FAILED;
        }
    }
    sys.print(crate::proto::READY_LINE);
    if !argv.is_empty() {
        sys.start_main(&sup, argv);
    }
    wait_for_box(sys, &sup)
}

/// PID 1's loop while the servers run: reaps every child (handing statuses
/// to the threads that started them), forwards signals to the main process,
/// and returns the box's exit code once it is done.
#[cfg(target_os = "linux")]
fn wait_for_box(sys: &mut impl sys::Sys, sup: &supervisor::Supervisor) -> i32 {
    use supervisor::Main;
    use sys::Reaped;
    use workload::{EXIT_RUNTIME_FAILED, FORWARDED_SIGNALS, HANDLED_SIGNALS};

    loop {
        loop {
            match sys.reap() {
                Ok(Reaped::Exited { pid, status }) => sup.reaped(pid, status),
                Ok(Reaped::NoneReady | Reaped::NoChildren) => break,
                Err(e) => {
                    sys.eprint(&format!("a3s-box init: warning: waitpid failed: {e}"));
                    break;
                }
            }
        }
        if let Some(code) = sup.finished() {
            if matches!(sup.main(), Main::Exited { .. }) && !sup.wait_reported(REPORT_TIMEOUT) {
                sys.eprint(
                    "a3s-box init: warning: the host did not collect the main process's exit",
                );
            }
            return code;
        }
        let signal = match sys.wait_signal(HANDLED_SIGNALS) {
            Ok(s) => s,
            Err(e) => {
                sys.eprint(&format!("a3s-box init: cannot wait for signals: {e}"));
                return EXIT_RUNTIME_FAILED;
            }
        };
        if !FORWARDED_SIGNALS.contains(&signal) {
            continue;
        }
        match sup.main() {
            Main::Running(pid) => match sys.kill(pid, signal) {
                Err(e) if e.raw_os_error() != Some(libc::ESRCH) => sys.eprint(&format!(
                    "a3s-box init: could not forward signal {signal} to the main process: {e}"
                )),
                _ => {}
            },
            // Stopped before anything ran: end the box as the signal would have.
            Main::NotStarted if matches!(signal, libc::SIGTERM | libc::SIGINT) => {
                return 128 + signal;
            }
            _ => {}
        }
    }
}

/// Ends the box: kills what is left, syncs, reports `code`, reboots.
#[cfg(target_os = "linux")]
fn shutdown(sys: &mut impl sys::Sys, code: i32) -> i32 {
    use sys::Reaped;

    // The box ends with its main process, as a container does; nothing else
    // may keep writing. (kill(-1) spares PID 1 itself.)
    let _ = sys.kill(-1, libc::SIGKILL);
    while let Ok(Reaped::Exited { .. }) = sys.reap() {}
    sys.sync();
    let value = u32::try_from(code)
        .ok()
        .filter(|&v| v <= 255)
        .unwrap_or(125);
    match sys.write_exit_port(value) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {}
        Err(e) => sys.eprint(&format!(
            "a3s-box init: warning: could not report the exit status to the VMM: {e}"
        )),
    }
    let err = sys.reboot(libc::LINUX_REBOOT_CMD_RESTART);
    sys.eprint(&format!(
        "a3s-box init: could not reboot to end the VM: {err}"
    ));
    code
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::sys::Reaped;
    use super::testing::{Call, RecordingSys};
    use super::*;
    use crate::proto::READY_LINE;

    fn with_workload(argv: &str) -> RecordingSys {
        let mut sys = RecordingSys::pid1();
        sys.cmdline = format!("console=ttyS0 reboot=k panic=-1 -- {argv}\n");
        sys
    }

    fn exit_port(sys: &RecordingSys) -> Vec<u32> {
        sys.calls
            .iter()
            .filter_map(|c| match c {
                Call::ExitPort(v) => Some(*v),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn refuses_to_run_unless_pid_1_and_touches_nothing() {
        let mut sys = RecordingSys::pid1();
        sys.pid = 4242;
        assert_eq!(run(&mut sys), 125);
        assert_eq!(sys.calls.len(), 1, "{:?}", sys.calls);
        assert!(sys.stderr()[0].contains("PID 1"), "{:?}", sys.stderr());
    }

    #[test]
    fn with_no_command_reports_ready_then_exits_0() {
        let mut sys = RecordingSys::pid1();
        assert_eq!(run(&mut sys), 0);
        assert_eq!(
            sys.stdout(),
            [READY_LINE, "a3s-box: no command given; nothing to run"]
        );
        assert_eq!(exit_port(&sys), [0]);
        assert!(sys.position(|c| matches!(c, Call::Spawn { .. })).is_none());
    }

    #[test]
    fn signals_are_blocked_before_anything_else() {
        let mut sys = with_workload("true");
        sys.reaps = [Reaped::Exited { pid: 42, status: 0 }].into();
        run(&mut sys);
        assert_eq!(
            sys.calls[0],
            Call::BlockSignals(workload::HANDLED_SIGNALS.to_vec())
        );
    }

    #[test]
    fn loopback_is_up_before_the_workload_starts() {
        let mut sys = with_workload("true");
        run(&mut sys);
        let lo = sys
            .position(|c| *c == Call::LoopbackUp)
            .expect("lo brought up");
        let spawn = sys
            .position(|c| matches!(c, Call::Spawn { .. }))
            .expect("workload spawned");
        assert!(lo < spawn);
    }

    #[test]
    fn mounts_come_before_the_ready_line_and_the_workload() {
        let mut sys = with_workload("true");
        sys.reaps = [Reaped::Exited { pid: 42, status: 0 }].into();
        run(&mut sys);
        let last_mount = sys
            .calls
            .iter()
            .rposition(|c| matches!(c, Call::Mount(_)))
            .unwrap();
        let ready = sys
            .position(|c| *c == Call::Print(READY_LINE.into()))
            .unwrap();
        let spawn = sys.position(|c| matches!(c, Call::Spawn { .. })).unwrap();
        assert!(last_mount < ready && ready < spawn);
        assert!(
            sys.position(|c| *c == Call::SetEnv("PATH".into(), DEFAULT_PATH.into()))
                .unwrap()
                < spawn
        );
    }

    #[test]
    fn runs_the_workload_from_the_command_line_with_a_clean_env() {
        let mut sys = with_workload(r#"sh -c "exit 3""#);
        sys.reaps = [Reaped::Exited {
            pid: 42,
            status: 3 << 8,
        }]
        .into();
        assert_eq!(run(&mut sys), 3);
        let spawn = sys
            .calls
            .iter()
            .find(|c| matches!(c, Call::Spawn { .. }))
            .unwrap();
        let env = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            spawn,
            &Call::Spawn {
                argv: vec!["sh".into(), "-c".into(), "exit 3".into()],
                env: vec![
                    env("PATH", DEFAULT_PATH),
                    env("HOME", "/root"),
                    env("TERM", "linux")
                ],
            }
        );
        assert_eq!(exit_port(&sys), [3]);
    }

    #[test]
    fn a_workload_killed_by_sigkill_reports_137() {
        let mut sys = with_workload("sleep 100");
        sys.reaps = [Reaped::Exited {
            pid: 42,
            status: libc::SIGKILL,
        }]
        .into();
        assert_eq!(run(&mut sys), 137);
        assert_eq!(exit_port(&sys), [137]);
    }

    #[test]
    fn sigterm_to_pid_1_reaches_the_workload() {
        let mut sys = with_workload("server");
        sys.reaps = [
            Reaped::NoneReady,
            Reaped::Exited {
                pid: 42,
                status: libc::SIGTERM,
            },
        ]
        .into();
        sys.signals = [libc::SIGTERM].into();
        assert_eq!(run(&mut sys), 143);
        assert!(sys.calls.contains(&Call::Kill(42, libc::SIGTERM)));
    }

    #[test]
    fn a_missing_command_reports_127_with_dockers_message() {
        let mut sys = with_workload("nosuchcmd arg");
        sys.spawn_error = Some(libc::ENOENT);
        assert_eq!(run(&mut sys), 127);
        assert_eq!(
            sys.stderr()[0],
            r#"a3s-box: exec: "nosuchcmd": executable file not found in $PATH"#
        );
        assert_eq!(exit_port(&sys), [127]);
    }

    #[test]
    fn a_command_that_is_not_executable_reports_126() {
        let mut sys = with_workload("/etc/hostname");
        sys.spawn_error = Some(libc::EACCES);
        assert_eq!(run(&mut sys), 126);
        assert_eq!(exit_port(&sys), [126]);
    }

    #[test]
    fn shutdown_kills_leftovers_then_syncs_reports_and_reboots_in_that_order() {
        let mut sys = with_workload("true");
        sys.reaps = [Reaped::Exited { pid: 42, status: 0 }].into();
        run(&mut sys);
        let tail: Vec<&Call> = sys
            .calls
            .iter()
            .filter(|c| {
                matches!(
                    c,
                    Call::Kill(..) | Call::Sync | Call::ExitPort(_) | Call::Reboot(_)
                )
            })
            .collect();
        assert_eq!(
            tail,
            [
                &Call::Kill(-1, libc::SIGKILL),
                &Call::Sync,
                &Call::ExitPort(0),
                &Call::Reboot(libc::LINUX_REBOOT_CMD_RESTART)
            ]
        );
    }

    #[test]
    fn closed_stdio_is_reopened_on_the_console_before_mounting() {
        let mut sys = with_workload("true");
        sys.closed_fds = vec![0, 1, 2];
        sys.reaps = [Reaped::Exited { pid: 42, status: 0 }].into();
        run(&mut sys);
        assert_eq!(
            &sys.calls[1..4],
            [
                Call::OpenConsole(0),
                Call::OpenConsole(1),
                Call::OpenConsole(2)
            ]
        );
    }

    #[test]
    fn open_stdio_is_left_alone() {
        let mut sys = RecordingSys::pid1();
        run(&mut sys);
        assert!(sys
            .position(|c| matches!(c, Call::OpenConsole(_)))
            .is_none());
    }

    #[test]
    fn mount_failures_are_warned_about_and_the_workload_still_runs() {
        let mut sys = with_workload("true");
        sys.mount_errors = vec![("/dev/shm", libc::ENOMEM)];
        sys.reaps = [Reaped::Exited { pid: 42, status: 0 }].into();
        assert_eq!(run(&mut sys), 0);
        assert!(
            sys.stderr()[0].contains("could not mount tmpfs on /dev/shm"),
            "{:?}",
            sys.stderr()
        );
    }

    fn with_root(argv: &str) -> RecordingSys {
        let mut sys = RecordingSys::pid1();
        let tail = if argv.is_empty() {
            String::new()
        } else {
            format!(" -- {argv}")
        };
        sys.cmdline = format!("console=ttyS0 a3s.root=virtiofs:rootfs{tail}\n");
        sys
    }

    #[test]
    fn with_a_root_it_mounts_it_prepares_it_then_serves_and_reports_ready() {
        let mut sys = with_root("");
        sys.signals = [libc::SIGTERM].into();
        assert_eq!(run(&mut sys), 143, "SIGTERM before any main process");
        let root = sys
            .position(|c| matches!(c, Call::Mount(m) if m.target == "/newroot"))
            .expect("root mounted");
        let Call::Mount(m) = &sys.calls[root] else {
            unreachable!()
        };
        assert_eq!((m.source, m.fstype), ("rootfs", "virtiofs"));
        let dev = sys
            .position(|c| matches!(c, Call::Mount(m) if m.target == "/newroot/dev"))
            .unwrap();
        let cgroup = sys.position(|c| *c == Call::SetupCgroup).unwrap();
        let servers = sys.position(|c| *c == Call::StartServers).unwrap();
        let ready = sys
            .position(|c| *c == Call::Print(READY_LINE.into()))
            .unwrap();
        assert!(root < dev && dev < cgroup && cgroup < servers && servers < ready);
        assert!(sys.position(|c| matches!(c, Call::StartMain(_))).is_none());
        assert!(sys.position(|c| matches!(c, Call::Spawn { .. })).is_none());
        assert_eq!(exit_port(&sys), [143]);
    }

    #[test]
    fn with_a_root_an_argv_on_the_command_line_starts_the_main_process_at_once() {
        let mut sys = with_root("sh -c \"exit 3\"");
        run(&mut sys);
        let ready = sys
            .position(|c| *c == Call::Print(READY_LINE.into()))
            .unwrap();
        let main = sys
            .position(|c| *c == Call::StartMain(vec!["sh".into(), "-c".into(), "exit 3".into()]))
            .expect("main started");
        assert!(ready < main);
    }

    #[test]
    fn a_missing_root_share_fails_the_box_with_125_and_a_hint() {
        let mut sys = with_root("");
        sys.mount_errors = vec![("/newroot", libc::ENOENT)];
        assert_eq!(run(&mut sys), 125);
        assert!(
            sys.stderr().iter().any(|l| l.contains("virtio-fs device")),
            "{:?}",
            sys.stderr()
        );
        assert!(sys.position(|c| *c == Call::StartServers).is_none());
        assert_eq!(exit_port(&sys), [125]);
    }

    #[test]
    fn a_box_without_a_cgroup_still_serves_with_a_warning() {
        let mut sys = with_root("");
        sys.cgroup_error = Some(libc::ENODEV);
        sys.signals = [libc::SIGTERM].into();
        run(&mut sys);
        assert!(
            sys.stderr().iter().any(|l| l.contains("no cgroup")),
            "{:?}",
            sys.stderr()
        );
        assert!(sys.position(|c| *c == Call::StartServers).is_some());
    }

    #[test]
    fn without_servers_and_without_a_command_the_box_fails_with_125() {
        let mut sys = with_root("");
        sys.servers_error = Some(libc::EAFNOSUPPORT);
        assert_eq!(run(&mut sys), 125);
        assert_eq!(exit_port(&sys), [125]);
    }

    #[test]
    fn a_bad_root_parameter_fails_the_box_with_125() {
        let mut sys = RecordingSys::pid1();
        sys.cmdline = "console=ttyS0 a3s.root=nfs:x\n".into();
        assert_eq!(run(&mut sys), 125);
        assert!(
            sys.stderr()[0].contains("virtiofs:<tag>"),
            "{:?}",
            sys.stderr()
        );
    }

    fn box_supervisor() -> std::sync::Arc<supervisor::Supervisor> {
        use supervisor::{Isolation, Reaping, Supervisor};
        std::sync::Arc::new(Supervisor::new(
            Reaping::Central,
            Isolation::Namespaces {
                root: "/newroot".into(),
            },
            Box::new(|| {}),
        ))
    }

    #[test]
    fn the_box_loop_reaps_everything_and_ends_with_the_main_process() {
        let sup = box_supervisor();
        sup.begin_main().unwrap();
        let (_, rx) = sup.start_child(true, || Ok(42)).unwrap();
        sup.main_reported();
        let mut sys = RecordingSys::pid1();
        sys.reaps = [
            Reaped::Exited { pid: 77, status: 0 },
            Reaped::NoneReady,
            Reaped::Exited {
                pid: 42,
                status: 3 << 8,
            },
        ]
        .into();
        sys.signals = [libc::SIGCHLD].into();
        assert_eq!(wait_for_box(&mut sys, &sup), 3);
        assert_eq!(rx.recv().unwrap(), 3 << 8, "the starter got the status");
        assert!(sys.reaps.is_empty());
    }

    #[test]
    fn the_box_loop_forwards_signals_to_the_main_process() {
        let sup = box_supervisor();
        sup.begin_main().unwrap();
        sup.start_child(true, || Ok(42)).unwrap();
        sup.main_reported();
        let mut sys = RecordingSys::pid1();
        sys.reaps = [
            Reaped::NoneReady,
            Reaped::NoneReady,
            Reaped::NoneReady,
            Reaped::Exited {
                pid: 42,
                status: libc::SIGTERM,
            },
        ]
        .into();
        sys.signals = [libc::SIGTERM, libc::SIGPWR, libc::SIGCHLD].into();
        assert_eq!(wait_for_box(&mut sys, &sup), 143);
        let kills: Vec<&Call> = sys
            .calls
            .iter()
            .filter(|c| matches!(c, Call::Kill(..)))
            .collect();
        assert_eq!(
            kills,
            [&Call::Kill(42, libc::SIGTERM)],
            "SIGPWR is not forwarded"
        );
    }

    #[test]
    fn the_box_loop_ends_on_a_shutdown_request() {
        let sup = box_supervisor();
        sup.request_shutdown();
        let mut sys = RecordingSys::pid1();
        assert_eq!(wait_for_box(&mut sys, &sup), 0);
    }

    #[test]
    fn without_proc_the_box_fails_with_125_and_still_shuts_down() {
        let mut sys = with_workload("true");
        sys.mount_errors = vec![("/proc", libc::ENODEV)];
        assert_eq!(run(&mut sys), 125);
        assert!(sys
            .stderr()
            .iter()
            .any(|l| l.contains("cannot read the kernel command line")));
        assert_eq!(exit_port(&sys), [125]);
        assert!(sys.position(|c| matches!(c, Call::Reboot(_))).is_some());
    }
}
