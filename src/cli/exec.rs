//! `a3s-box exec`: run a further process in a running box, over the guest's exec
//! (or PTY) port.

use anyhow::{bail, Context};
use argh::FromArgs;

use super::session;
use crate::proto::{client_handshake, write_message, ExecRequest, Message, PORT_EXEC, PORT_PTY};
use crate::runtime::shim::connect_guest;
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
    let store = Store::open(&crate::paths::state_dir())?;
    let id = store.resolve(name)?;
    if store.live_state(&id)?.status != Status::Running {
        bail!("box {name} is not running");
    }
    let cfg = store.config(&id)?;
    let mut env = cfg.env.clone();
    for e in &a.env {
        let (k, v) = e
            .split_once('=')
            .with_context(|| format!("-e {e}: expected KEY=VALUE"))?;
        env.push((k.to_string(), v.to_string()));
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
    let mut conn = connect_guest(&store.socket_dir(&id), port)
        .with_context(|| format!("cannot reach box {name}"))?;
    let mut r = conn.try_clone()?;
    client_handshake(&mut r, &mut conn)?;
    write_message(&mut conn, &Message::Exec(req))?;
    let _raw = if a.tty && a.interactive {
        session::RawTerminal::enter()
    } else {
        None
    };
    Ok(session::pump(conn, a.interactive, a.tty)?)
}
