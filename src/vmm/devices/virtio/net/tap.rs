//! The tap backend: a Linux tap device opened with a virtio-net header on
//! every frame (IFF_VNET_HDR), so the guest's offloads (partial checksums,
//! TSO) pass through to the host's stack and back.
//!
//! Each read() of the tap is one frame preceded by the 12-byte header, and
//! each write() takes one such frame whole or not at all.

use std::collections::VecDeque;
use std::ffi::c_int;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};

use super::backend::Rx;
use super::device::Shared;
use super::event_handler::{NetError, TX_PENDING_LIMIT};
use super::header::{self, Offloads, MAX_TAP_FRAME_LEN, MIN_FRAME_LEN, NET_HDR_LEN};

/// `IFNAMSIZ`: interface names are at most 15 bytes and a NUL.
const IFNAMSIZ: usize = 16;
/// A VLAN tag the kernel may put back into a frame it hands us.
const VLAN_HLEN: usize = 4;
/// One byte more than the longest packet we take, to tell one too long.
const RX_BUF_LEN: usize = NET_HDR_LEN + MAX_TAP_FRAME_LEN + VLAN_HLEN + 1;

/// `struct ifreq` as TUNSETIFF uses it: the name, then `ifr_flags` at the
/// start of the union; the padding makes it the kernel's 40 bytes.
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: libc::c_short,
    _union_rest: [u8; 22],
}

/// Opens a tap device named `name`, an exact name of at most 15 bytes or a
/// template such as `a3s%d`, and returns it with the name the kernel gave.
///
/// The tap carries a 12-byte virtio-net header (`virtio_net_hdr_mrg_rxbuf`)
/// on every frame, no offloads until a driver acks some, and is
/// non-blocking. It is not persistent: it goes away when the file is
/// closed, so a VMM that dies leaves no tap behind. (An existing persistent
/// tap named exactly is attached to, and stays its owner's.) It is down and
/// on no bridge: bringing it up and attaching it is the caller's job.
pub fn open_tap(name: &str) -> io::Result<(File, String)> {
    if name.len() >= IFNAMSIZ || name.as_bytes().contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tap name {name:?} is not an interface name of at most 15 bytes"),
        ));
    }
    let mut req = IfReq {
        name: [0; IFNAMSIZ],
        // The flags fit: 0x5002.
        flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
        _union_rest: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    let tap = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")?;
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq` at its argument;
    // `req` is one (repr(C), as large as the kernel's), lives across the
    // call and is borrowed by nobody else; `tap` is an open tun file.
    let rc = unsafe { libc::ioctl(tap.as_raw_fd(), libc::TUNSETIFF, &raw mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let hdr_len = NET_HDR_LEN as c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int at its argument, which points
    // to `hdr_len`, alive across the call; `tap` is attached to a tap.
    let rc = unsafe { libc::ioctl(tap.as_raw_fd(), libc::TUNSETVNETHDRSZ, &raw const hdr_len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // VERSION_1 headers are little-endian whatever the host is.
    let little: c_int = 1;
    // SAFETY: TUNSETVNETLE reads one int at its argument, which points to
    // `little`, alive across the call.
    let rc = unsafe { libc::ioctl(tap.as_raw_fd(), libc::TUNSETVNETLE, &raw const little) };
    // A little-endian host's tap speaks little-endian anyway.
    if rc < 0 && cfg!(target_endian = "big") {
        return Err(io::Error::last_os_error());
    }
    set_offload(&tap, 0)?;
    let end = req.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
    let name = String::from_utf8(req.name[..end].to_vec())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok((tap, name))
}

/// The TUN_F_* flags that let the kernel hand the guest what it acked of
/// GUEST_CSUM, GUEST_TSO4/6 and GUEST_ECN, and nothing else.
pub(super) fn offload_flags(guest: Offloads) -> libc::c_uint {
    let mut flags = 0;
    for (on, flag) in [
        (guest.csum, libc::TUN_F_CSUM),
        (guest.tso4, libc::TUN_F_TSO4),
        (guest.tso6, libc::TUN_F_TSO6),
        (guest.ecn, libc::TUN_F_TSO_ECN),
    ] {
        if on {
            flags |= flag;
        }
    }
    flags
}

fn set_offload(tap: &File, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value and touches no
    // memory of ours; `tap` is an open file.
    let rc = unsafe {
        libc::ioctl(
            tap.as_raw_fd(),
            libc::TUNSETOFFLOAD,
            libc::c_ulong::from(flags),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Errors of one read or write that cost that frame only: a header the
/// kernel refused, a tap that is down, memory short for a moment.
fn costs_one_frame(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EINVAL | libc::EFAULT | libc::EIO | libc::ENOMEM | libc::ENOBUFS | libc::EMSGSIZE
        )
    )
}

/// The tap and what is in flight on it, kept across resets.
pub(super) struct TapBackend {
    tap: File,
    /// A real tap; false for a socket that stands in for one in tests,
    /// which takes no TUNSETOFFLOAD.
    is_tap: bool,
    /// Frames (header first) the tap would not take yet, oldest first.
    tx_pending: VecDeque<Vec<u8>>,
    tx_pending_bytes: usize,
    /// A written frame's buffer, for the next transmit chain to reuse.
    spare: Vec<u8>,
    /// The packet read last, header first; `rx_len` 0 when none waits.
    rx_buf: Box<[u8]>,
    rx_len: usize,
}

impl TapBackend {
    pub(super) fn new(tap: File, is_tap: bool) -> TapBackend {
        TapBackend {
            tap,
            is_tap,
            tx_pending: VecDeque::new(),
            tx_pending_bytes: 0,
            spare: Vec::new(),
            rx_buf: vec![0; RX_BUF_LEN].into_boxed_slice(),
            rx_len: 0,
        }
    }

    pub(super) fn file(&self) -> &File {
        &self.tap
    }

    /// Makes the tap non-blocking and lets the kernel send the guest the
    /// offloads it acked, and no others.
    pub(super) fn prepare(&self, guest: Offloads) -> io::Result<()> {
        let flags = fcntl_getfl(&self.tap)?;
        fcntl_setfl(&self.tap, flags | OFlags::NONBLOCK)?;
        if !self.is_tap {
            return Ok(());
        }
        if let Err(e) = set_offload(&self.tap, offload_flags(guest)) {
            // An older kernel may lack one; without any, it sends whole frames.
            set_offload(&self.tap, 0).map_err(|_| e)?;
        }
        Ok(())
    }

    pub(super) fn tx_full(&self) -> bool {
        self.tx_pending_bytes >= TX_PENDING_LIMIT
    }

    pub(super) fn has_tx_pending(&self) -> bool {
        !self.tx_pending.is_empty()
    }

    pub(super) fn clear_tx(&mut self) {
        self.tx_pending.clear();
        self.tx_pending_bytes = 0;
    }

    /// Queues `chain` (header and frame, checked) for the tap; `chain` is
    /// left with a buffer to reuse.
    pub(super) fn queue_tx(&mut self, chain: &mut Vec<u8>) {
        let packet = std::mem::replace(chain, std::mem::take(&mut self.spare));
        self.tx_pending_bytes += packet.len();
        self.tx_pending.push_back(packet);
    }

    /// Writes queued frames until the tap would block; an error is the
    /// tap lost.
    pub(super) fn flush(&mut self, shared: &Shared) -> Result<(), NetError> {
        while let Some(packet) = self.tx_pending.front() {
            match (&self.tap).write(packet) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if costs_one_frame(&e) => {
                    shared
                        .dropped
                        .warn_error(format_args!("virtio-net"), &NetError::TapRefused(e));
                }
                Err(e) => return Err(NetError::BackendIo(e)),
            }
            if let Some(mut done) = self.tx_pending.pop_front() {
                self.tx_pending_bytes -= done.len();
                done.clear();
                self.spare = done;
            }
        }
        Ok(())
    }

    /// Reads the next packet unless one waits already, and makes its header
    /// one the guest negotiated.
    pub(super) fn poll_rx(
        &mut self,
        read: bool,
        guest: Offloads,
        shared: &Shared,
    ) -> Result<Rx, NetError> {
        if self.rx_len > 0 {
            return Ok(Rx::Ready);
        }
        if !read {
            return Ok(Rx::Empty);
        }
        let n = loop {
            match (&self.tap).read(&mut self.rx_buf) {
                // A tap never ends; a socket standing in for one hung up.
                Ok(0) => return Err(NetError::BackendEof),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Rx::Empty),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if costs_one_frame(&e) => {
                    shared
                        .dropped
                        .warn_error(format_args!("virtio-net"), &NetError::BackendIo(e));
                    return Ok(Rx::Dropped);
                }
                Err(e) => return Err(NetError::BackendIo(e)),
            }
        };
        let checked = if n < NET_HDR_LEN + MIN_FRAME_LEN || n == RX_BUF_LEN {
            Err(NetError::TapPacketLength(n))
        } else {
            header::fix_tap_rx(&mut self.rx_buf[..n], guest)
        };
        match checked {
            Ok(()) => {
                self.rx_len = n;
                Ok(Rx::Ready)
            }
            Err(e) => {
                shared.dropped.warn_error(format_args!("virtio-net"), &e);
                Ok(Rx::Dropped)
            }
        }
    }

    /// The packet waiting for the guest: its header, then its frame.
    pub(super) fn rx_packet(&self) -> Option<([u8; NET_HDR_LEN], &[u8])> {
        let (hdr, frame) = self.rx_buf[..self.rx_len].split_first_chunk::<NET_HDR_LEN>()?;
        Some((*hdr, frame))
    }

    pub(super) fn consume_rx(&mut self) {
        self.rx_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::net::UdpSocket;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::vmm::devices::virtio::net::test_support::*;
    use crate::vmm::devices::virtio::net::Net;

    #[test]
    fn offloads_the_tap_may_use_follow_what_the_guest_acked() {
        let none = Offloads::default();
        assert_eq!(offload_flags(none), 0);
        let csum = Offloads { csum: true, ..none };
        assert_eq!(offload_flags(csum), libc::TUN_F_CSUM);
        let tso6 = Offloads { tso6: true, ..csum };
        assert_eq!(offload_flags(tso6), libc::TUN_F_CSUM | libc::TUN_F_TSO6);
        let all = Offloads {
            csum: true,
            tso4: true,
            tso6: true,
            ecn: true,
        };
        assert_eq!(
            offload_flags(all),
            libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN
        );
    }

    #[test]
    fn tap_names_longer_than_an_interface_name_are_refused() {
        for name in ["a3s-much-too-long", "a3s\0x", "0123456789abcdef"] {
            let err = open_tap(name).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
    }

    /// Opens a tap, or says why this machine cannot.
    fn tap_or_skip() -> Option<(File, String)> {
        match open_tap("a3stest%d") {
            Ok(tap) => Some(tap),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
                ) || e.raw_os_error() == Some(libc::ENODEV) =>
            {
                eprintln!("skipped: no tap here ({e}); it needs /dev/net/tun and CAP_NET_ADMIN");
                None
            }
            Err(e) => panic!("open_tap: {e}"),
        }
    }

    /// Sets IFF_UP on the interface `name`.
    fn bring_up(name: &str) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut req = IfReq {
            name: [0; IFNAMSIZ],
            flags: 0,
            _union_rest: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: SIOCGIFFLAGS reads and writes one `struct ifreq`, which
        // `req` is, alive and unshared across the call.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &raw mut req) };
        assert!(rc == 0, "SIOCGIFFLAGS: {}", io::Error::last_os_error());
        req.flags |= libc::IFF_UP as libc::c_short;
        // SAFETY: as above, for SIOCSIFFLAGS.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &raw mut req) };
        assert!(rc == 0, "SIOCSIFFLAGS: {}", io::Error::last_os_error());
    }

    /// The interface's index, 0 if there is none of that name.
    fn if_index(name: &str) -> libc::c_uint {
        let cname = CString::new(name).unwrap();
        // SAFETY: `cname` is a NUL-terminated string alive across the call.
        unsafe { libc::if_nametoindex(cname.as_ptr()) }
    }

    /// A non-blocking raw packet socket on the interface `name`: it sees
    /// the frames the device writes to the tap, and what it sends goes out
    /// through the tap to the device.
    fn packet_socket(name: &str) -> File {
        let index = if_index(name);
        assert_ne!(index, 0, "if_nametoindex: {}", io::Error::last_os_error());
        let protocol = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: socket takes no pointers.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                c_int::from(protocol),
            )
        };
        assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
        // SAFETY: socket succeeded; nothing else owns the descriptor.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data, for which all zeroes is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = c_int::try_from(index).unwrap();
        // SAFETY: `addr` is a sockaddr_ll of the length given, alive across
        // the call; `sock` is an open socket.
        let rc = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert!(rc == 0, "bind: {}", io::Error::last_os_error());
        File::from(sock)
    }

    #[test]
    fn frames_cross_a_real_tap_both_ways() {
        let Some((tap, name)) = tap_or_skip() else {
            return;
        };
        assert!(name.starts_with("a3stest"), "{name}");
        bring_up(&name);
        let mut host = packet_socket(&name);
        let mem = memory();
        // Every offload acked: activation sets them on the tap.
        let features = crate::vmm::devices::virtio::net::device::offered_features(true);
        let (unused, _far) = UnixStream::pair().unwrap();
        let mut g = Guest::activated(&mem, Net::with_tap(tap, MAC), unused, features);
        let heads = g.add_rx_buffers(16, 2048);

        // The guest's frame comes out of the tap's interface.
        let mut out = frame(100);
        out[14..22].copy_from_slice(b"a3s->tap");
        g.send(&PLAIN_HDR, &out, 1);
        let mut buf = vec![0; 2048];
        assert!(
            wait_until(|| matches!((&host).read(&mut buf), Ok(n) if buf[..n] == out[..])),
            "the guest's frame did not come out of {name}"
        );

        // A frame sent on the interface reaches the guest, among whatever
        // the host's stack says on a new interface (IPv6 solicitations).
        let mut back = frame(90);
        back[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
        back[14..22].copy_from_slice(b"tap->a3s");
        assert_eq!(host.write(&back).unwrap(), back.len());
        let mut used = Vec::new();
        let found = wait_until(|| {
            used.extend(g.rx.take_used(&mem));
            used.iter().any(|&(id, len)| {
                len == 102
                    && heads.contains(&u16::try_from(id).unwrap())
                    && read(&mem, rx_buffer(u16::try_from(id).unwrap()) + 12, 90) == back
            })
        });
        assert!(found, "the host's frame did not reach the guest: {used:?}");
        assert!(!g.net.backend_gone());

        // Not persistent: the tap goes with the device that holds it.
        drop(g);
        assert!(
            wait_until(|| if_index(&name) == 0),
            "{name} outlived its fd"
        );
    }
}
