//! `a3s-box attach`, `stop` and `kill`: requests to a box's shim.

use std::io::Write;

use anyhow::Context;
use argh::FromArgs;

use super::session;
use crate::runtime::{lifecycle, Store};

/// Attach to a running box's main process.
#[derive(FromArgs)]
#[argh(subcommand, name = "attach")]
pub struct AttachArgs {
    /// do not forward stdin
    #[argh(switch)]
    no_stdin: bool,
    /// the box (name or ID)
    #[argh(positional)]
    r#box: String,
}

/// Stop running boxes: SIGTERM, then, after a grace period, power off.
#[derive(FromArgs)]
#[argh(subcommand, name = "stop")]
pub struct StopArgs {
    /// seconds to wait before powering the box off (default 10)
    #[argh(option, short = 't', default = "10")]
    time: u64,
    /// boxes (names or IDs)
    #[argh(positional)]
    boxes: Vec<String>,
}

/// Kill running boxes (SIGKILL, or the signal given).
#[derive(FromArgs)]
#[argh(subcommand, name = "kill")]
pub struct KillArgs {
    /// signal to send (name or number, default KILL)
    #[argh(option, short = 's', default = "String::from(\"KILL\")")]
    signal: String,
    /// boxes (names or IDs)
    #[argh(positional)]
    boxes: Vec<String>,
}

pub fn attach_to(store: &Store, id: &str, stdin: bool, tty: bool) -> anyhow::Result<i32> {
    let mut conn = lifecycle::connect(store, id)?;
    conn.write_all(if stdin {
        b"ATTACH-STDIN\n"
    } else {
        b"ATTACH\n"
    })?;
    let _raw = if tty && stdin {
        session::RawTerminal::enter()
    } else {
        None
    };
    Ok(session::pump(conn, stdin, tty)?)
}

pub fn attach(a: AttachArgs) -> anyhow::Result<i32> {
    let store = Store::open(&crate::paths::state_dir())?;
    let id = store.resolve(&a.r#box)?;
    let tty = store.config(&id)?.tty;
    attach_to(&store, &id, !a.no_stdin, tty)
}

/// Signal numbers by name, as `kill -l` and Docker accept them.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.trim_start_matches("SIG").to_ascii_uppercase();
    Some(match name.as_str() {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        _ => return None,
    })
}

/// Runs `f` on every named box, printing each name as Docker does; fails if any did.
pub fn each(
    boxes: &[String],
    f: impl Fn(&Store, &str) -> anyhow::Result<()>,
) -> anyhow::Result<i32> {
    let store = Store::open(&crate::paths::state_dir())?;
    let mut failed = false;
    for b in boxes {
        match store
            .resolve(b)
            .map_err(anyhow::Error::from)
            .and_then(|id| f(&store, &id))
        {
            Ok(()) => println!("{b}"),
            Err(e) => {
                eprintln!("a3s-box: {b}: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

pub fn stop(a: StopArgs) -> anyhow::Result<i32> {
    each(&a.boxes, |store, id| {
        Ok(lifecycle::stop(store, id, a.time)?)
    })
}

pub fn kill(a: KillArgs) -> anyhow::Result<i32> {
    let sig = parse_signal(&a.signal).with_context(|| format!("invalid signal {:?}", a.signal))?;
    each(&a.boxes, |store, id| Ok(lifecycle::kill(store, id, sig)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("KILL"), Some(9));
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("term"), Some(15));
        assert_eq!(parse_signal("10"), Some(10));
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("NOPE"), None);
    }
}
