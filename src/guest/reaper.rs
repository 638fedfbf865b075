//! `--init`: the box's PID 1 when the user asks for one, as Docker's
//! `docker-init` (tini) is. The main process is this binary, run as
//! [`REAPER_NAME`]`-- COMMAND…`; it starts the command as its child, passes on
//! the signals `stop` and the terminal send, reaps every orphan the box's
//! PID namespace hands it, and exits with the command's code.

use std::process::Command;

use super::sys::{LinuxSys, Sys};
use super::workload::{exit_code, spawn_failure, supervise, EXIT_RUNTIME_FAILED, HANDLED_SIGNALS};

/// `argv[0]` of the reaper; `cli::dispatch` picks this personality by it.
pub const REAPER_NAME: &str = "a3s-box-init";

/// Runs `args` (`-- COMMAND [ARG…]`) under the reaper; returns the exit code.
pub fn main(args: &[&str]) -> i32 {
    let command = match args {
        ["--", program, rest @ ..] => (program, rest),
        [program, rest @ ..] if !program.starts_with('-') => (program, rest),
        _ => {
            eprintln!("{REAPER_NAME}: usage: {REAPER_NAME} -- COMMAND [ARG...]");
            return EXIT_RUNTIME_FAILED;
        }
    };
    let mut sys = LinuxSys;
    // Blocked before the child exists, so no signal meant for it is lost;
    // the child starts with an empty mask (std's spawn resets it).
    if let Err(e) = sys.block_signals(HANDLED_SIGNALS) {
        eprintln!("{REAPER_NAME}: cannot block signals: {e}");
        return EXIT_RUNTIME_FAILED;
    }
    let (program, rest) = command;
    let child = match Command::new(program).args(rest).spawn() {
        Ok(c) => c,
        Err(e) => {
            let (code, message) = spawn_failure(program, &e);
            eprintln!("{REAPER_NAME}: {message}");
            return code;
        }
    };
    let Ok(pid) = i32::try_from(child.id()) else {
        return EXIT_RUNTIME_FAILED;
    };
    match supervise(&mut sys, pid) {
        Ok(status) => exit_code(status),
        Err(e) => {
            eprintln!("{REAPER_NAME}: {e}");
            EXIT_RUNTIME_FAILED
        }
    }
}
