//! What the host asks of a box before its main process starts
//! ([`BoxSetup`]): its network interface, configured statically (the host
//! chose the address and told its network backend the same), and the files
//! Docker bind-mounts into every container (`/etc/hosts`, `/etc/resolv.conf`,
//! `/etc/hostname`), laid over the box's root the same way, so they are not
//! written to its layer and `diff`/`commit` do not see them.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use crate::proto::{BoxSetup, NetSetup};

/// Where the laid-over files are kept: the initramfs's own root, which is
/// memory and outside the box's root.
const STAGING: &str = "/a3s-files";

/// Does all of `setup` for the root at `root`; the first failure ends it.
pub fn apply(setup: &BoxSetup, root: &Path) -> Result<(), String> {
    if let Some(net) = &setup.net {
        configure(net).map_err(|e| format!("cannot configure {}: {e}", net.interface))?;
    }
    for (i, (path, content)) in setup.files.iter().enumerate() {
        let staged = Path::new(STAGING).join(i.to_string());
        lay_over(root, path, content, &staged).map_err(|e| format!("cannot set up {path}: {e}"))?;
    }
    Ok(())
}

/// `path` (absolute, in the box) under `root`, refusing `..` and the root itself.
fn in_root(root: &Path, path: &str) -> io::Result<PathBuf> {
    let rel = Path::new(path)
        .strip_prefix("/")
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "not an absolute path"))?;
    if rel.as_os_str().is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a plain path in the box",
        ));
    }
    Ok(root.join(rel))
}

/// Writes `content` to `staged` and bind-mounts it over `path` in `root`.
/// The target must be a regular file for the mount: a missing one is made
/// (empty) and a symbolic link is replaced, so the mount cannot follow a
/// link out of the box's root.
fn lay_over(root: &Path, path: &str, content: &str, staged: &Path) -> io::Result<()> {
    let target = in_root(root, path)?;
    if let Some(parent) = staged.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(staged, content)?;
    // Directories on the way must be the box's own, not links.
    let mut dir = root.to_path_buf();
    if let Some(parent) = Path::new(path).parent() {
        for c in parent.components().skip(1) {
            dir.push(c);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{} is not a directory", dir.display()),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir(&dir)?,
                Err(e) => return Err(e),
            }
        }
    }
    match std::fs::symlink_metadata(&target) {
        Ok(m) if m.is_file() => {}
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::remove_file(&target)?;
            std::fs::write(&target, "")?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file in the box",
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::write(&target, "")?,
        Err(e) => return Err(e),
    }
    bind(staged, &target)
}

fn bind(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in a path"))
    };
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: both are NUL-terminated strings that outlive the call; a bind
    // mount reads no filesystem type or data.
    let rc = unsafe {
        libc::mount(
            from.as_ptr(),
            to.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A `sockaddr` holding an IPv4 address, as the interface ioctls take it.
fn sockaddr(addr: std::net::Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are the same size (16 bytes) and
    // plain old data; the kernel reads the family to tell which it is.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn netmask(prefix: u8) -> std::net::Ipv4Addr {
    match prefix {
        0 => 0.into(),
        p => (u32::MAX << (32 - u32::from(p.min(32)))).into(),
    }
}

/// An AF_INET socket for interface ioctls, and the `ifreq` naming one
/// interface.
struct Interface {
    sock: OwnedFd,
    req: libc::ifreq,
}

impl Interface {
    fn open(name: &str) -> io::Result<Interface> {
        let name = name.as_bytes();
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an interface name",
            ));
        }
        // SAFETY: socket takes plain integers; the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ifreq is plain old data; all zeroes is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(name) {
            *dst = *src as libc::c_char;
        }
        Ok(Interface { sock, req })
    }

    /// `op` on `arg`, an ifreq or rtentry, whichever `op` takes.
    fn ioctl(&self, op: libc::c_ulong, arg: *mut libc::c_void) -> io::Result<()> {
        // (musl declares the request as int, glibc as unsigned long.)
        #[allow(clippy::useless_conversion, clippy::cast_possible_truncation)]
        // SAFETY: `arg` points to a live ifreq or rtentry, the one `op` takes,
        // which the kernel reads (and for a GET writes) within its size.
        let rc = unsafe { libc::ioctl(self.sock.as_raw_fd(), op as _, arg) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn req(&mut self, op: libc::c_ulong) -> io::Result<()> {
        let arg = (&mut self.req as *mut libc::ifreq).cast::<libc::c_void>();
        self.ioctl(op, arg)
    }

    fn up(&mut self) -> io::Result<()> {
        self.req(libc::SIOCGIFFLAGS)?;
        // SAFETY: SIOCGIFFLAGS filled in the flags member of the union.
        let flags = unsafe { self.req.ifr_ifru.ifru_flags };
        self.req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        self.req(libc::SIOCSIFFLAGS)
    }
}

/// Brings interface `name` up (for `lo`, the kernel then gives it 127.0.0.1).
pub fn interface_up(name: &str) -> io::Result<()> {
    Interface::open(name)?.up()
}

/// Address, netmask and up on the interface, then the default route through
/// the gateway.
fn configure(net: &NetSetup) -> io::Result<()> {
    let mut ifc = Interface::open(&net.interface)?;
    ifc.req.ifr_ifru.ifru_addr = sockaddr(net.address);
    ifc.req(libc::SIOCSIFADDR)?;
    ifc.req.ifr_ifru.ifru_netmask = sockaddr(netmask(net.prefix));
    ifc.req(libc::SIOCSIFNETMASK)?;
    if net.mtu != 0 {
        ifc.req.ifr_ifru.ifru_mtu = libc::c_int::from(net.mtu);
        ifc.req(libc::SIOCSIFMTU)?;
    }
    ifc.up()?;
    // SAFETY: rtentry is plain old data; all zeroes is a valid value (no
    // device named: the kernel picks the interface that reaches the gateway).
    let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
    route.rt_dst = sockaddr(0.into());
    route.rt_genmask = sockaddr(0.into());
    route.rt_gateway = sockaddr(net.gateway);
    route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    ifc.ioctl(
        libc::SIOCADDRT,
        (&mut route as *mut libc::rtentry).cast::<libc::c_void>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks_are_the_prefix_bits() {
        assert_eq!(netmask(24), std::net::Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(32), std::net::Ipv4Addr::new(255, 255, 255, 255));
        assert_eq!(netmask(0), std::net::Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(netmask(12), std::net::Ipv4Addr::new(255, 240, 0, 0));
    }

    #[test]
    fn laid_over_paths_stay_in_the_root() {
        let root = Path::new("/r");
        assert_eq!(in_root(root, "/etc/hosts").unwrap(), root.join("etc/hosts"));
        for bad in ["etc/hosts", "/", "/etc/../../x"] {
            assert!(in_root(root, bad).is_err(), "{bad}");
        }
    }
}
