//! Pseudo-terminals for processes that run on one.
//!
//! The master is opened through a `ptmx` node; since Linux 4.7 that node
//! allocates from the devpts instance mounted at `pts` beside it, so
//! `<box root>/dev/ptmx` gives a terminal of the box's own `/dev/pts`. The
//! child opens the slave by its path from inside the box (`/dev/pts/<n>`),
//! so `tty` and `ttyname` name it as the box sees it.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// A terminal's master side and the number of its slave.
#[derive(Debug)]
pub struct Pty {
    /// The master: what the process writes comes out here; what is written
    /// here is the process's input.
    pub master: OwnedFd,
    /// `n` of the slave `/dev/pts/<n>`.
    pub number: u32,
}

/// Allocates a terminal from the `ptmx` node at `ptmx`.
pub fn open(ptmx: &Path) -> io::Result<Pty> {
    let master: OwnedFd = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(ptmx)?
        .into();
    let unlock: libc::c_int = 0;
    // SAFETY: `master` is an open ptmx; TIOCSPTLCK reads one c_int, which
    // `unlock` is, alive for the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut number: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one c_uint into `number`, valid and writable.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut number) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Pty { master, number })
}

/// Sets the terminal's size (the process gets SIGWINCH).
pub fn resize(master: &OwnedFd, rows: u16, cols: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize, which `size` is, alive for the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_is_allocated_unlocked_and_resizable() {
        let pty = open(Path::new("/dev/ptmx")).unwrap();
        let slave = format!("/dev/pts/{}", pty.number);
        assert!(Path::new(&slave).exists(), "{slave}");
        resize(&pty.master, 33, 101).unwrap();
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into `size`, valid and writable.
        let rc = unsafe { libc::ioctl(pty.master.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
        assert_eq!(rc, 0);
        assert_eq!((size.ws_row, size.ws_col), (33, 101));
        // Unlocked: the slave opens.
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&slave)
            .unwrap();
    }
}
