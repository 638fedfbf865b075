//! The client end of a process session, shared by `run`, `attach` and `exec`:
//! forwards stdin (and terminal size), prints the output, returns the exit code.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::proto::{read_message, write_message, FrameError, Message, MAX_DATA};

/// The terminal in raw mode for as long as this lives (a `-t` session: keys go to
/// the box unprocessed, Ctrl-C included).
pub struct RawTerminal {
    saved: libc::termios,
}

impl RawTerminal {
    pub fn enter() -> Option<RawTerminal> {
        let fd = std::io::stdin().as_raw_fd();
        // SAFETY: termios is plain old data; tcgetattr fills it or fails.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is stdin, `t` a valid termios to fill.
        if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
            return None;
        }
        let saved = t;
        // SAFETY: `t` is a valid termios obtained above.
        unsafe { libc::cfmakeraw(&mut t) };
        // SAFETY: `fd` is stdin and `t` a valid termios.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } != 0 {
            return None;
        }
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the termios read from this same fd in `enter`.
        unsafe { libc::tcsetattr(std::io::stdin().as_raw_fd(), libc::TCSANOW, &self.saved) };
    }
}

/// The size of the terminal on stdout, if it is one.
pub fn terminal_size() -> Option<(u16, u16)> {
    // SAFETY: winsize is plain old data that TIOCGWINSZ fills.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into `ws`, which outlives the call.
    let r = unsafe { libc::ioctl(std::io::stdout().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Pumps one session over `conn` until `Exit`: stdin (when `stdin`) and terminal
/// size changes (when `tty`) go in, output comes out. Returns the exit code.
pub fn pump(conn: UnixStream, stdin: bool, tty: bool) -> Result<i32, FrameError> {
    if stdin {
        let mut w = conn.try_clone().map_err(FrameError::Io)?;
        std::thread::spawn(move || {
            let mut buf = vec![0u8; MAX_DATA.min(32 * 1024)];
            let mut input = std::io::stdin().lock();
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = write_message(&mut w, &Message::StdinClose);
                        return;
                    }
                    Ok(n) => {
                        if write_message(&mut w, &Message::Stdin(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    if tty {
        let mut w = conn.try_clone().map_err(FrameError::Io)?;
        std::thread::spawn(move || {
            let mut last = None;
            loop {
                let now = terminal_size();
                if now.is_some() && now != last {
                    let (rows, cols) = now.unwrap_or_default();
                    if write_message(&mut w, &Message::Resize { rows, cols }).is_err() {
                        return;
                    }
                    last = now;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
    }
    let mut r = conn;
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    loop {
        match read_message(&mut r)? {
            Some(Message::Stdout(d)) => {
                let mut o = stdout.lock();
                let _ = o.write_all(&d);
                let _ = o.flush();
            }
            Some(Message::Stderr(d)) => {
                let mut e = stderr.lock();
                let _ = e.write_all(&d);
                let _ = e.flush();
            }
            Some(Message::Error { message }) => eprintln!("a3s-box: {message}"),
            Some(Message::Exit { code }) => return Ok(code),
            Some(_) => {}
            None => return Err(FrameError::Closed("the process's Exit")),
        }
    }
}
