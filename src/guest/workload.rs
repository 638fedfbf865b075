//! Starting the workload, waiting for it while reaping every zombie, and
//! turning how it ended into an exit code.

use super::sys::{Reaped, Sys};
use std::io;

/// Signals PID 1 passes on to the workload. Docker's `stop` sends SIGTERM;
/// the kernel sends SIGINT on Ctrl-Alt-Del.
pub const FORWARDED_SIGNALS: &[i32] = &[
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Every signal init blocks and takes with `sigwaitinfo`: the forwarded ones,
/// SIGCHLD, which wakes it to reap, and SIGPWR, with which its own server
/// threads wake it (as for a `Shutdown` request).
pub const HANDLED_SIGNALS: &[i32] = &[
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGCHLD,
    libc::SIGPWR,
];

/// The environment the workload starts with.
pub const WORKLOAD_ENV: &[(&str, &str)] = &[
    ("PATH", super::DEFAULT_PATH),
    ("HOME", "/root"),
    ("TERM", "linux"),
];

/// Docker's code when the box's own machinery failed.
pub const EXIT_RUNTIME_FAILED: i32 = 125;
/// Docker's code when the command exists but cannot be run.
pub const EXIT_CANNOT_INVOKE: i32 = 126;
/// Docker's code when the command does not exist.
pub const EXIT_NOT_FOUND: i32 = 127;

/// A shell's exit code for a raw wait status: the code for a normal exit,
/// 128 + the signal number for death by a signal.
pub fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        // Stopped or continued: never reported, as init does not ask for them.
        EXIT_RUNTIME_FAILED
    }
}

/// Docker's exit code for an `execve` that failed with `errno`. Allocates
/// nothing, so a cloned child may call it.
pub fn exec_failure_code(errno: i32) -> i32 {
    match errno {
        libc::ENOENT | libc::ENOTDIR => EXIT_NOT_FOUND,
        libc::EACCES
        | libc::EPERM
        | libc::ENOEXEC
        | libc::EISDIR
        | libc::ETXTBSY
        | libc::ELOOP
        | libc::ENAMETOOLONG
        | libc::E2BIG => EXIT_CANNOT_INVOKE,
        _ => EXIT_RUNTIME_FAILED,
    }
}

/// The exit code and the message for a workload that could not be started
/// (the code is [`exec_failure_code`]'s).
pub fn spawn_failure(program: &str, err: &io::Error) -> (i32, String) {
    let reason = match err.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR) if !program.contains('/') => {
            return (
                EXIT_NOT_FOUND,
                format!("exec: {program:?}: executable file not found in $PATH"),
            );
        }
        Some(libc::ENOENT | libc::ENOTDIR) => {
            return (
                EXIT_NOT_FOUND,
                format!("exec: {program:?}: no such file or directory"),
            );
        }
        Some(libc::EACCES | libc::EPERM) => "permission denied",
        Some(libc::ENOEXEC) => "exec format error",
        Some(libc::EISDIR) => "is a directory",
        Some(libc::ETXTBSY) => "text file busy",
        Some(libc::ELOOP) => "too many levels of symbolic links",
        Some(libc::ENAMETOOLONG) => "file name too long",
        Some(libc::E2BIG) => "argument list too long",
        _ => {
            return (
                EXIT_RUNTIME_FAILED,
                format!("could not start {program:?}: {err}"),
            );
        }
    };
    (EXIT_CANNOT_INVOKE, format!("exec: {program:?}: {reason}"))
}

/// Waits for `child` to end and returns its raw wait status. Meanwhile reaps
/// every other process that ends (orphans are re-parented to PID 1) and
/// forwards [`FORWARDED_SIGNALS`] to `child`.
///
/// [`HANDLED_SIGNALS`] must be blocked, so none is lost between a reaping
/// pass and the wait: a signal that arrives in between stays pending.
pub fn supervise(sys: &mut impl Sys, child: i32) -> io::Result<i32> {
    loop {
        loop {
            match sys.reap()? {
                Reaped::Exited { pid, status } if pid == child => return Ok(status),
                Reaped::Exited { .. } => {}
                Reaped::NoneReady => break,
                Reaped::NoChildren => {
                    return Err(io::Error::other(
                        "the workload vanished without an exit status",
                    ))
                }
            }
        }
        let signal = sys.wait_signal(HANDLED_SIGNALS)?;
        // SIGCHLD only means "reap again".
        if !FORWARDED_SIGNALS.contains(&signal) {
            continue;
        }
        match sys.kill(child, signal) {
            // It already ended; its status is waiting to be reaped.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => sys.eprint(&format!(
                "a3s-box init: could not forward signal {signal} to the workload: {e}"
            )),
            Ok(()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::testing::{Call, RecordingSys};

    fn exited(code: i32) -> i32 {
        code << 8
    }

    #[test]
    fn exit_code_of_a_normal_exit_is_the_code() {
        assert_eq!(exit_code(exited(0)), 0);
        assert_eq!(exit_code(exited(3)), 3);
        assert_eq!(exit_code(exited(255)), 255);
    }

    #[test]
    fn exit_code_of_a_signal_death_is_128_plus_signo() {
        assert_eq!(exit_code(libc::SIGKILL), 137);
        assert_eq!(exit_code(libc::SIGTERM), 143);
        // SIGSEGV with the core-dump bit set.
        assert_eq!(exit_code(libc::SIGSEGV | 0x80), 139);
    }

    #[test]
    fn forwarded_signals_are_all_handled() {
        for s in FORWARDED_SIGNALS {
            assert!(HANDLED_SIGNALS.contains(s));
        }
        assert!(HANDLED_SIGNALS.contains(&libc::SIGCHLD));
    }

    #[test]
    fn missing_commands_are_127_like_docker() {
        let enoent = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(
            spawn_failure("nosuch", &enoent),
            (
                127,
                r#"exec: "nosuch": executable file not found in $PATH"#.to_owned()
            )
        );
        assert_eq!(
            spawn_failure("/bin/nosuch", &enoent),
            (
                127,
                r#"exec: "/bin/nosuch": no such file or directory"#.to_owned()
            )
        );
    }

    #[test]
    fn commands_that_cannot_run_are_126() {
        for (errno, reason) in [
            (libc::EACCES, "permission denied"),
            (libc::ENOEXEC, "exec format error"),
            (libc::EISDIR, "is a directory"),
        ] {
            let (code, msg) = spawn_failure("/etc", &io::Error::from_raw_os_error(errno));
            assert_eq!(code, 126);
            assert_eq!(msg, format!("exec: \"/etc\": {reason}"));
        }
    }

    #[test]
    fn other_spawn_failures_are_the_runtimes_125() {
        let (code, _) = spawn_failure("sh", &io::Error::from_raw_os_error(libc::ENOMEM));
        assert_eq!(code, 125);
    }

    #[test]
    fn exec_failure_codes_agree_with_the_messages() {
        for errno in [
            libc::ENOENT,
            libc::ENOTDIR,
            libc::EACCES,
            libc::EPERM,
            libc::ENOEXEC,
            libc::EISDIR,
            libc::ETXTBSY,
            libc::ELOOP,
            libc::ENAMETOOLONG,
            libc::E2BIG,
            libc::ENOMEM,
            libc::EIO,
        ] {
            let (code, _) = spawn_failure("x", &io::Error::from_raw_os_error(errno));
            assert_eq!(exec_failure_code(errno), code, "errno {errno}");
        }
    }

    #[test]
    fn supervise_returns_the_childs_status_not_an_orphans() {
        let mut sys = RecordingSys::pid1();
        sys.reaps = [
            Reaped::Exited {
                pid: 77,
                status: exited(9),
            },
            Reaped::NoneReady,
            Reaped::Exited {
                pid: 78,
                status: libc::SIGKILL,
            },
            Reaped::Exited {
                pid: 42,
                status: exited(3),
            },
        ]
        .into();
        sys.signals = [libc::SIGCHLD].into();
        assert_eq!(supervise(&mut sys, 42).unwrap(), exited(3));
        assert!(sys.reaps.is_empty(), "every zombie reaped");
    }

    #[test]
    fn supervise_forwards_termination_signals_to_the_workload() {
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
        sys.signals = [libc::SIGHUP, libc::SIGTERM, libc::SIGCHLD].into();
        assert_eq!(exit_code(supervise(&mut sys, 42).unwrap()), 143);
        let kills: Vec<&Call> = sys
            .calls
            .iter()
            .filter(|c| matches!(c, Call::Kill(..)))
            .collect();
        assert_eq!(
            kills,
            [
                &Call::Kill(42, libc::SIGHUP),
                &Call::Kill(42, libc::SIGTERM)
            ]
        );
    }

    #[test]
    fn supervise_tolerates_a_signal_racing_the_childs_exit() {
        let mut sys = RecordingSys::pid1();
        sys.kill_errors = vec![(42, libc::ESRCH)];
        sys.reaps = [
            Reaped::NoneReady,
            Reaped::Exited {
                pid: 42,
                status: exited(0),
            },
        ]
        .into();
        sys.signals = [libc::SIGTERM].into();
        assert_eq!(supervise(&mut sys, 42).unwrap(), exited(0));
        assert!(sys.stderr().is_empty(), "{:?}", sys.stderr());
    }

    #[test]
    fn supervise_fails_if_the_child_is_gone_without_a_status() {
        let mut sys = RecordingSys::pid1();
        sys.reaps = [Reaped::NoChildren].into();
        assert!(supervise(&mut sys, 42).is_err());
    }
}
