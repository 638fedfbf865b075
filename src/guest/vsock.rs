//! AF_VSOCK sockets: the guest's side of the host↔guest connections.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use super::session::{self, Connection};
use super::supervisor::Supervisor;
use crate::proto::{PORT_CONTROL, PORT_EXEC, PORT_PTY};

fn addr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain old data; all-zero is a valid value.
    let mut a: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    a.svm_family = libc::sa_family_t::try_from(libc::AF_VSOCK).unwrap_or_default();
    a.svm_cid = cid;
    a.svm_port = port;
    a
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: socket takes plain integers.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn addr_len() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_vm>()).unwrap_or(0)
}

/// A listening vsock socket.
#[derive(Debug)]
pub struct VsockListener(OwnedFd);

impl VsockListener {
    /// Listens on `port` for connections from any CID (the host).
    pub fn bind(port: u32) -> io::Result<Self> {
        let fd = socket()?;
        let a = addr(libc::VMADDR_CID_ANY, port);
        // SAFETY: `a` is a valid sockaddr_vm and the length is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&a).cast::<libc::sockaddr>(),
                addr_len(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: listen takes plain integers on a bound socket.
        if unsafe { libc::listen(fd.as_raw_fd(), 16) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(VsockListener(fd))
    }

    /// Waits for the next connection.
    pub fn accept(&self) -> io::Result<VsockStream> {
        loop {
            // SAFETY: null address pointers are allowed (the peer's address
            // is not needed); SOCK_CLOEXEC is a valid flag.
            let fd = unsafe {
                libc::accept4(
                    self.0.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if fd >= 0 {
                // SAFETY: accept4 just returned this descriptor; it is ours.
                return Ok(VsockStream(unsafe { OwnedFd::from_raw_fd(fd) }));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// A connected vsock stream.
#[derive(Debug)]
pub struct VsockStream(OwnedFd);

#[cfg(test)]
impl VsockStream {
    /// Connects to `port` of `cid` (tests use the loopback CID 1).
    pub fn connect(cid: u32, port: u32) -> io::Result<Self> {
        let fd = socket()?;
        let a = addr(cid, port);
        // SAFETY: `a` is a valid sockaddr_vm and the length is its size.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                std::ptr::from_ref(&a).cast::<libc::sockaddr>(),
                addr_len(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(VsockStream(fd))
    }
}

impl Read for VsockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the pointer and length describe `buf`, writable for the call.
        let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

impl Write for VsockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // MSG_NOSIGNAL: a closed peer is an error, not a SIGPIPE.
        // SAFETY: the pointer and length describe `buf`, readable for the call.
        let n = unsafe {
            libc::send(
                self.0.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Connection for VsockStream {
    fn try_clone(&self) -> io::Result<Self> {
        self.0.try_clone().map(VsockStream)
    }

    fn shutdown(&self) {
        // SAFETY: shutdown takes plain integers; errors change nothing.
        unsafe { libc::shutdown(self.0.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

/// Accepts connections on `listener` forever, each served on its own thread.
pub fn serve(
    listener: VsockListener,
    handler: impl Fn(VsockStream) + Send + Sync + 'static,
) -> io::Result<()> {
    let handler = Arc::new(handler);
    std::thread::Builder::new()
        .name("vsock-accept".into())
        .spawn(move || loop {
            match listener.accept() {
                Ok(conn) => {
                    let h = Arc::clone(&handler);
                    let _ = std::thread::Builder::new().spawn(move || h(conn));
                }
                // Out of descriptors or memory: let the load pass.
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        })?;
    Ok(())
}

/// Binds the control, exec and PTY ports and serves them.
pub fn start_servers(sup: &Arc<Supervisor>) -> io::Result<()> {
    let bind = |port| {
        VsockListener::bind(port).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot listen on vsock port {port}: {e}"))
        })
    };
    let (control, exec, pty) = (bind(PORT_CONTROL)?, bind(PORT_EXEC)?, bind(PORT_PTY)?);
    let s = Arc::clone(sup);
    serve(control, move |c| session::serve_control(&s, c))?;
    let s = Arc::clone(sup);
    serve(exec, move |c| session::serve_exec(&s, c, false))?;
    let s = Arc::clone(sup);
    serve(pty, move |c| session::serve_exec(&s, c, true))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::supervisor::{Isolation, Reaping};
    use crate::proto::{exec_client, ExecRequest, Message};

    /// The loopback CID: this machine talking to itself.
    const VMADDR_CID_LOCAL: u32 = 1;

    #[test]
    fn an_exec_over_loopback_vsock_works_end_to_end() {
        let port = 40_000 + std::process::id() % 20_000;
        let listener = match VsockListener::bind(port) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("skipped: no vsock on this machine ({e})");
                return;
            }
        };
        let sup = Arc::new(Supervisor::new(
            Reaping::PerChild,
            Isolation::Off {
                etc_root: "/".into(),
            },
            Box::new(|| {}),
        ));
        serve(listener, move |c| session::serve_exec(&sup, c, false)).unwrap();
        let host = match VsockStream::connect(VMADDR_CID_LOCAL, port) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skipped: no vsock loopback on this machine ({e})");
                return;
            }
        };
        let mut out: Vec<u8> = Vec::new();
        let outcome = exec_client(
            host.try_clone().unwrap(),
            host.try_clone().unwrap(),
            &Message::Exec(ExecRequest {
                argv: vec!["/bin/echo".into(), "over vsock".into()],
                ..ExecRequest::default()
            }),
            None,
            |_, d| {
                out.extend(d);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(outcome.code, 0);
        assert_eq!(out, b"over vsock\n");
    }
}
