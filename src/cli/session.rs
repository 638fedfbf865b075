//! The client end of a process session, shared by `run`, `attach` and `exec`:
//! forwards stdin (and terminal size), prints the output, returns the exit code.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

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

/// The write end of the pipe `on_winch` signals through, or -1.
static WINCH_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_winch(_: libc::c_int) {
    let fd = WINCH_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: errno is thread-local; the handler saves and restores it
        // around write(2), which is async-signal-safe. A full pipe (the reader
        // already has a wakeup pending) fails with EAGAIN, which is fine.
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, [0u8].as_ptr().cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// Wakeups for terminal size changes: a byte arrives on the returned pipe on
/// every SIGWINCH. Set up once per process.
fn winch_events() -> std::io::Result<std::fs::File> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills `fds` with two new descriptors or fails.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fds[0] is a descriptor just created and owned by nobody else.
    let read_end = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    // The read end blocks; only the handler's end must never.
    // SAFETY: fcntl on a descriptor we own.
    unsafe { libc::fcntl(fds[0], libc::F_SETFL, 0) };
    WINCH_PIPE.store(fds[1], Ordering::Relaxed);
    // SAFETY: a zeroed sigaction with a handler that only does async-signal-safe
    // work; SA_RESTART keeps the other threads' blocking calls going.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_winch as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGWINCH, &sa, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(read_end)
}

/// Pumps one session over `conn` until `Exit`: stdin (when `stdin`) and terminal
/// size changes (when `tty`) go in, output comes out. Returns the exit code.
pub fn pump(conn: UnixStream, stdin: bool, tty: bool) -> Result<i32, FrameError> {
    // Stdin and resizes come from two threads; each frame is written whole
    // under the lock, so frames never interleave.
    let writer = Arc::new(Mutex::new(conn.try_clone().map_err(FrameError::Io)?));
    let send = move |w: &Mutex<UnixStream>, m: &Message| write_message(&mut *w.lock().unwrap(), m);
    if stdin {
        let w = writer.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; MAX_DATA.min(32 * 1024)];
            let mut input = std::io::stdin().lock();
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = send(&w, &Message::StdinClose);
                        return;
                    }
                    Ok(n) => {
                        if send(&w, &Message::Stdin(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    if tty {
        let w = writer;
        let mut winch = winch_events().map_err(FrameError::Io)?;
        std::thread::spawn(move || {
            let mut last = None;
            loop {
                let now = terminal_size();
                if now.is_some() && now != last {
                    let (rows, cols) = now.unwrap_or_default();
                    if send(&w, &Message::Resize { rows, cols }).is_err() {
                        return;
                    }
                    last = now;
                }
                // Several signals may have queued up bytes: one size read covers them.
                let mut buf = [0u8; 64];
                if winch.read(&mut buf).is_err() {
                    return;
                }
            }
        });
    }
    // Frame headers come from the buffer; payloads larger than it are read
    // straight into their own buffers.
    let mut r = std::io::BufReader::with_capacity(MAX_DATA, conn);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_resize_signal_wakes_the_resize_thread() {
        let mut events = winch_events().unwrap();
        // SAFETY: raise(3) sends SIGWINCH to this thread; the handler is installed.
        assert_eq!(unsafe { libc::raise(libc::SIGWINCH) }, 0);
        let mut b = [0u8; 1];
        assert_eq!(events.read(&mut b).unwrap(), 1);
    }
}
