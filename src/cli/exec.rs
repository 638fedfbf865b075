//! `a3s-box exec`: run a further process in a running box, over the guest's exec
//! (or PTY) port.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use argh::FromArgs;

use super::session;
use crate::proto::{
    expect_hello, hello_then, ExecRequest, FrameError, Message, PORT_EXEC, PORT_PTY,
};
use crate::runtime::shim::connect_guest_sending;
use crate::runtime::{Status, Store};

/// Run a command in a running box.
#[derive(FromArgs)]
#[argh(subcommand, name = "exec")]
pub struct ExecArgs {
    /// keep stdin open and forward it
    #[argh(switch, short = 'i')]
    interactive: bool,
    /// give the process a terminal
    #[argh(switch, short = 't')]
    tty: bool,
    /// user (name or UID, optionally :group)
    #[argh(option, short = 'u')]
    user: Option<String>,
    /// environment variable KEY=VALUE (repeatable)
    #[argh(option, short = 'e')]
    env: Vec<String>,
    /// working directory inside the box
    #[argh(option, short = 'w')]
    workdir: Option<String>,
    /// the box, then the command and its arguments
    #[argh(positional, greedy)]
    args: Vec<String>,
}

pub fn exec(a: ExecArgs) -> anyhow::Result<i32> {
    let Some((name, argv)) = a.args.split_first() else {
        bail!("exec needs a box and a command");
    };
    if argv.is_empty() {
        bail!("exec needs a command to run in {name}");
    }
    if let Some(w) = &a.workdir {
        super::run::check_workdir(w)?;
    }
    let store = Store::open(&crate::paths::state_dir())?;
    let id = store.resolve(name)?;
    match store.live_state(&id)?.status {
        Status::Running => {}
        Status::Paused => bail!("cannot exec in a paused box: unpause {name} first"),
        _ => bail!("box {name} is not running"),
    }
    let cfg = store.config(&id)?;
    let mut env = cfg.env.clone();
    for e in &a.env {
        // Later entries win in the guest, so these override the box's.
        env.extend(super::run::env_flag(e)?);
    }
    let (rows, cols) = if a.tty {
        session::terminal_size().unwrap_or((24, 80))
    } else {
        (0, 0)
    };
    let req = ExecRequest {
        argv: argv.to_vec(),
        env,
        cwd: a.workdir.clone().unwrap_or_else(|| cfg.workdir.clone()),
        user: a.user.clone().or(cfg.user.clone()),
        tty: a.tty,
        rows,
        cols,
        stdin: a.interactive,
    };
    let port = if a.tty { PORT_PTY } else { PORT_EXEC };
    // The handshake and the request go out with the CONNECT line.
    let first = hello_then(&Message::Exec(req))?;
    let mut conn = connect_guest_sending(&store.socket_dir(&id), port, &first)
        .with_context(|| format!("cannot reach box {name}"))?;
    expect_hello(&mut conn)?;
    let _raw = if a.tty && a.interactive {
        session::RawTerminal::enter()
    } else {
        None
    };
    match session::pump(conn, a.interactive, a.tty) {
        Ok(code) => Ok(code),
        Err(e @ (FrameError::Closed(_) | FrameError::Truncated | FrameError::Io(_))) => {
            // Most often the box itself ended under the process: say that.
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                let st = store.live_state(&id)?;
                if st.status == Status::Exited {
                    let how = st
                        .exit_code
                        .map_or(String::new(), |c| format!(" (exit code {c})"));
                    // Its process went with the box's VM, as by SIGKILL: 137,
                    // what Docker's exec reports for a container killed under it.
                    eprintln!("a3s-box: box {name} stopped while the command ran{how}");
                    return Ok(128 + libc::SIGKILL);
                }
                if Instant::now() >= deadline {
                    return Err(e.into());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Err(e) => Err(e.into()),
    }
}
