//! Entry points for the `fuzz/` crate, not an API: they drive the device's
//! data path synchronously, the way a guest driver and a backend would, on
//! hand-built split rings, and assert that everything the device hands to
//! either side is well formed.

use std::ffi::c_int;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::backend::{Backend, PREFIX_LEN};
use super::device::{
    negotiate, offered_features, Shared, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM,
    VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_STATUS,
};
use super::event_handler::DataPath;
use super::header::{
    check_tap_tx, Offloads, MAX_FRAME_LEN, MAX_TAP_FRAME_LEN, MIN_FRAME_LEN, NET_HDR_LEN,
    VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM,
};
use crate::vmm::devices::virtio::{
    GuestMemory, Interrupt, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
};

const RING: u16 = 16;
const MEM_SIZE: usize = 0x10_0000;
/// One-buffer RX chains the session offers in descriptor slots 0..RX_BUFFERS.
const RX_BUFFERS: u16 = 8;
const RX_BUF_LEN: u32 = 2048;
const RX_DATA: u64 = 0x1_0000;
const TX_DATA: u64 = 0x2_0000;
const TX_DATA_LEN: usize = NET_HDR_LEN + MAX_TAP_FRAME_LEN + 16;

struct NoInterrupt;

impl Interrupt for NoInterrupt {
    fn signal_used_queue(&self) {}
    fn signal_config_change(&self) {}
}

/// A split ring driven by hand, as a guest driver would.
struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
    used_seen: u16,
}

impl Ring {
    fn at(base: u64) -> Ring {
        Ring {
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
            avail_idx: 0,
            used_seen: 0,
        }
    }

    fn queue(&self, event_idx: bool) -> Queue {
        let mut q = Queue::new(RING).expect("valid size");
        q.set_size(RING);
        q.set_event_idx(event_idx);
        let split = |a: u64| (Some((a & 0xffff_ffff) as u32), Some((a >> 32) as u32));
        let (lo, hi) = split(self.desc);
        q.set_desc_table_address(lo, hi);
        let (lo, hi) = split(self.avail);
        q.set_avail_ring_address(lo, hi);
        let (lo, hi) = split(self.used);
        q.set_used_ring_address(lo, hi);
        q.set_ready(true);
        q
    }

    /// Publishes a chain of (addr, len, flags) at descriptor `first`.
    fn push(&mut self, mem: &GuestMemory, first: u16, descs: &[(u64, u32, u16)]) {
        for (i, &(addr, len, flags)) in (0u16..).zip(descs) {
            let index = first.wrapping_add(i) % RING;
            let last = usize::from(i) + 1 == descs.len();
            let flags = if last { flags & !1 } else { flags | 1 };
            let at = self.desc + u64::from(index) * 16;
            let _ = mem.write_obj(addr, GuestAddress(at));
            let _ = mem.write_obj(len, GuestAddress(at + 8));
            let _ = mem.write_obj(flags, GuestAddress(at + 12));
            let _ = mem.write_obj((index + 1) % RING, GuestAddress(at + 14));
        }
        let slot = u64::from(self.avail_idx % RING);
        let _ = mem.write_obj(first % RING, GuestAddress(self.avail + 4 + slot * 2));
        self.avail_idx = self.avail_idx.wrapping_add(1);
        let _ = mem.write_obj(self.avail_idx, GuestAddress(self.avail + 2));
    }

    /// New used elements as (descriptor id, length).
    fn take_used(&mut self, mem: &GuestMemory) -> Vec<(u32, u32)> {
        let idx: u16 = mem.read_obj(GuestAddress(self.used + 2)).unwrap_or(0);
        let mut out = Vec::new();
        while self.used_seen != idx {
            let at = self.used + 4 + u64::from(self.used_seen % RING) * 8;
            let id: u32 = mem.read_obj(GuestAddress(at)).unwrap_or(0);
            let len: u32 = mem.read_obj(GuestAddress(at + 4)).unwrap_or(0);
            out.push((id, len));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }
}

/// A connected pair of Unix sockets of one message per read, the way a tap
/// hands over one frame per read: the tests' and the fuzzer's tap.
pub(super) fn packet_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as c_int; 2];
    // SAFETY: socketpair writes two file descriptors into the array it is
    // given, which has room for two and lives across the call.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded, so both are open descriptors that
    // nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The features a session's mode byte asks for: bit 0 MRG_RXBUF, bit 1 the
/// tap, bit 2 the guest's offloads, bit 3 the host's (the tap's only), bit 4
/// EVENT_IDX.
fn session_features(mode: u8) -> (bool, u64) {
    let tap = mode & 2 != 0;
    let mut features = 1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_NET_F_STATUS;
    let pick = [
        (1, vec![VIRTIO_NET_F_MRG_RXBUF]),
        (
            4,
            vec![
                VIRTIO_NET_F_GUEST_CSUM,
                VIRTIO_NET_F_GUEST_TSO4,
                VIRTIO_NET_F_GUEST_TSO6,
                VIRTIO_NET_F_GUEST_ECN,
            ],
        ),
        (
            8,
            vec![
                VIRTIO_NET_F_CSUM,
                VIRTIO_NET_F_HOST_TSO4,
                VIRTIO_NET_F_HOST_TSO6,
                VIRTIO_NET_F_HOST_ECN,
            ],
        ),
        (16, vec![VIRTIO_RING_F_EVENT_IDX]),
    ];
    for (mask, bits) in pick {
        if mode & mask != 0 {
            features |= bits.iter().fold(0, |f, &b| f | 1 << b);
        }
    }
    (tap, negotiate(offered_features(tap), features))
}

/// The data path over hand-driven queues, and the backend's end.
struct Session {
    mem: GuestMemory,
    rx: Ring,
    tx: Ring,
    tx_first: u16,
    path: DataPath,
    peer: Option<UnixStream>,
    /// The backend is a tap (a socket of one frame per message).
    tap: bool,
    features: u64,
    /// Bytes the device wrote to the stream, not yet checked.
    from_device: Vec<u8>,
    /// The frame being received: its header, the bytes seen so far, and
    /// the buffers still to come; `None` once a raw chain made it unknown.
    rx_frame: Option<([u8; NET_HDR_LEN], usize, u16)>,
}

impl Session {
    fn new(mode: u8) -> Option<Session> {
        let (tap, features) = session_features(mode);
        let mem: GuestMemory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).ok()?;
        let rx = Ring::at(0x0);
        let tx = Ring::at(0x3000);
        let (ours, peer) = if tap {
            let (ours, peer) = packet_pair().ok()?;
            (UnixStream::from(ours), UnixStream::from(peer))
        } else {
            UnixStream::pair().ok()?
        };
        ours.set_nonblocking(true).ok()?;
        peer.set_nonblocking(true).ok()?;
        let backend = if tap {
            Backend::tap(File::from(OwnedFd::from(ours)), false)
        } else {
            Backend::stream(ours)
        };
        let event_idx = features & 1 << VIRTIO_RING_F_EVENT_IDX != 0;
        let path = DataPath::new(
            mem.clone(),
            rx.queue(event_idx),
            tx.queue(event_idx),
            Arc::new(NoInterrupt),
            backend,
            features,
            Arc::new(Shared::new()),
        );
        let mut s = Session {
            mem,
            rx,
            tx,
            tx_first: 0,
            path,
            peer: Some(peer),
            tap,
            features,
            from_device: Vec::new(),
            rx_frame: Some(([0; NET_HDR_LEN], 0, 0)),
        };
        for i in 0..RX_BUFFERS {
            s.rx.push(&s.mem, i, &[(rx_addr(i), RX_BUF_LEN, 2)]);
        }
        Some(s)
    }

    fn mrg_rxbuf(&self) -> bool {
        self.features & 1 << VIRTIO_NET_F_MRG_RXBUF != 0
    }

    /// Puts `bytes` (header and frame) on the TX queue split over `parts`
    /// read-only descriptors, and runs the TX path.
    fn tx_packet(&mut self, bytes: &[u8], parts: usize) {
        let bytes = &bytes[..bytes.len().min(TX_DATA_LEN)];
        let _ = self.mem.write_slice(bytes, GuestAddress(TX_DATA));
        let step = bytes.len().div_ceil(parts).max(1);
        let descs: Vec<(u64, u32, u16)> = (0..parts)
            .map(|p| {
                let start = (p * step).min(bytes.len());
                let end = ((p + 1) * step).min(bytes.len());
                let len = u32::try_from(end - start).unwrap_or(u32::MAX);
                (TX_DATA + start as u64, len, 0)
            })
            .collect();
        self.tx_chain(&descs);
    }

    fn tx_chain(&mut self, descs: &[(u64, u32, u16)]) {
        self.tx.push(&self.mem, self.tx_first, descs);
        self.tx_first = self.tx_first.wrapping_add(4);
        self.path.process_tx();
        for (_, len) in self.tx.take_used(&self.mem) {
            assert_eq!(len, 0, "TX chains are used with length 0");
        }
        self.check_backend();
    }

    /// Everything the device wrote to the backend is frames: length-prefixed
    /// on the stream, one a message with a header it accepts on the tap.
    fn check_backend(&mut self) {
        if self.tap {
            self.check_tap();
            return;
        }
        if let Some(peer) = self.peer.as_mut() {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = peer.read(&mut buf) {
                self.from_device.extend_from_slice(&buf[..n]);
            }
        }
        while let Some(prefix) = self.from_device.first_chunk::<PREFIX_LEN>() {
            let len = u32::from_be_bytes(*prefix) as usize;
            assert!(
                (MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&len),
                "frame of {len} bytes to the backend"
            );
            if self.from_device.len() < PREFIX_LEN + len {
                break;
            }
            self.from_device.drain(..PREFIX_LEN + len);
        }
    }

    fn check_tap(&mut self) {
        let Some(peer) = self.peer.as_mut() else {
            return;
        };
        let mut buf = vec![0u8; NET_HDR_LEN + MAX_TAP_FRAME_LEN + 1];
        while let Ok(n @ 1..) = peer.read(&mut buf) {
            assert!(
                (NET_HDR_LEN + MIN_FRAME_LEN..=NET_HDR_LEN + MAX_TAP_FRAME_LEN).contains(&n),
                "packet of {n} bytes to the tap"
            );
            let mut packet = buf[..n].to_vec();
            let host = Offloads::host(self.features);
            assert!(
                check_tap_tx(0, &mut packet, host).is_ok(),
                "the tap got a header the driver could not send: {:?}",
                &packet[..NET_HDR_LEN]
            );
            assert_eq!(packet, buf[..n], "the header went out unchecked");
        }
    }

    /// Every RX buffer the device used holds at most its length, and each
    /// frame starts with a header the driver negotiated whose num_buffers
    /// matches the buffers that follow; our own buffers go back to the queue.
    fn check_rx(&mut self) {
        let used = self.rx.take_used(&self.mem);
        for (id, len) in used {
            let Ok(slot) = u16::try_from(id) else {
                panic!("used id {id} beyond the ring");
            };
            assert!(slot < RING, "used id {id} beyond the ring");
            if len == 0 {
                continue;
            }
            if slot >= RX_BUFFERS {
                // A raw chain: we do not know its layout, nor where frames start.
                self.rx_frame = None;
                continue;
            }
            assert!(len <= RX_BUF_LEN, "{len} bytes overflow a buffer");
            let len = len as usize;
            match self.rx_frame {
                Some((_, _, 0)) => {
                    assert!(len >= NET_HDR_LEN, "{len} bytes hold no header");
                    let mut hdr = [0u8; NET_HDR_LEN];
                    let _ = self.mem.read_slice(&mut hdr, GuestAddress(rx_addr(slot)));
                    let num_buffers = u16::from_le_bytes([hdr[10], hdr[11]]);
                    assert!(num_buffers >= 1);
                    if !self.mrg_rxbuf() {
                        assert_eq!(num_buffers, 1);
                    }
                    self.rx_frame = Some((hdr, len - NET_HDR_LEN, num_buffers - 1));
                }
                Some((hdr, seen, n)) => self.rx_frame = Some((hdr, seen + len, n - 1)),
                None => {}
            }
            if let Some((hdr, frame_len, 0)) = self.rx_frame {
                self.check_rx_header(&hdr, frame_len);
            }
            self.rx
                .push(&self.mem, slot, &[(rx_addr(slot), RX_BUF_LEN, 2)]);
        }
    }

    /// A whole frame's header names only what the driver takes.
    fn check_rx_header(&self, hdr: &[u8; NET_HDR_LEN], frame_len: usize) {
        if !self.tap {
            assert_eq!(hdr[..10], [0; 10], "flags 0, gso_type NONE");
            return;
        }
        let guest = Offloads::guest(self.features);
        let allowed = if guest.csum {
            VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID
        } else {
            0
        };
        assert_eq!(hdr[0] & !allowed, 0, "flags {:#x} to the guest", hdr[0]);
        assert!(guest.allows(hdr[1]), "gso_type {:#x} to the guest", hdr[1]);
        if hdr[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
            let field = usize::from(u16::from_le_bytes([hdr[6], hdr[7]]))
                + usize::from(u16::from_le_bytes([hdr[8], hdr[9]]));
            assert!(field + 2 <= frame_len, "checksum field past the frame");
        }
    }

    fn backend_write(&mut self, bytes: &[u8]) {
        if let Some(peer) = self.peer.as_mut() {
            let _ = peer.write(bytes);
        }
        self.path.process_rx();
        self.check_rx();
    }
}

/// Feeds `data` to the device as one guest transmit chain (header and
/// frame), once in one descriptor and once in three, to the stream and to
/// the tap with every offload negotiated.
pub fn guest_tx(data: &[u8]) {
    for mode in [1, 1 | 2 | 4 | 8] {
        for parts in [1, 3] {
            let Some(mut s) = Session::new(mode) else {
                return;
            };
            s.tx_packet(data, parts);
        }
    }
}

/// Reads input as records and plays them against one session: guest
/// transmit chains (whole, split, or raw descriptors), raw receive chains,
/// and the backend's moves. The first byte picks the backend and the
/// features: bit 0 MRG_RXBUF, bit 1 the tap, bit 2 the guest's offloads
/// (GUEST_CSUM, GUEST_TSO4/6, GUEST_ECN), bit 3 the host's (CSUM,
/// HOST_TSO4/6, HOST_ECN; the stream takes CSUM only).
pub fn guest_session(data: &[u8]) {
    let Some((&mode, mut input)) = data.split_first() else {
        return;
    };
    let Some(mut s) = Session::new(mode) else {
        return;
    };
    while let Some((&kind, rest)) = input.split_first() {
        input = rest;
        match kind % 10 {
            // Header and frame split over 1-4 read-only descriptors.
            parts @ 0..=3 => {
                let Some(bytes) = take_record(&mut input) else {
                    return;
                };
                s.tx_packet(bytes, usize::from(parts) + 1);
            }
            // Raw descriptors on the TX queue.
            4 => {
                let descs = take_descs(&mut input);
                if !descs.is_empty() {
                    s.tx_chain(&descs);
                }
            }
            // Raw descriptors on the RX queue, in the slots above the buffers.
            5 => {
                let descs = take_descs(&mut input);
                if !descs.is_empty() {
                    s.rx.push(&s.mem, RX_BUFFERS, &descs);
                    s.path.process_rx();
                    s.check_rx();
                }
            }
            // The backend sends a frame: length-prefixed on the stream; on
            // the tap, one packet whose header the record holds.
            6 => {
                let Some(bytes) = take_record(&mut input) else {
                    return;
                };
                let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
                let mut framed = if s.tap {
                    Vec::new()
                } else {
                    len.to_be_bytes().to_vec()
                };
                framed.extend_from_slice(bytes);
                s.backend_write(&framed);
            }
            // The backend sends raw bytes; on the tap, a frame after a
            // plain header.
            7 => {
                let Some(bytes) = take_record(&mut input) else {
                    return;
                };
                let mut packet = if s.tap {
                    vec![0; NET_HDR_LEN]
                } else {
                    Vec::new()
                };
                packet.extend_from_slice(bytes);
                s.backend_write(&packet);
            }
            // The backend goes away.
            8 => {
                s.peer = None;
                s.path.process_rx();
                s.path.process_tx();
                s.check_rx();
            }
            // The driver kicks both queues.
            _ => {
                s.path.process_rx();
                s.path.process_tx();
                s.check_rx();
                s.check_backend();
            }
        }
    }
}

fn rx_addr(slot: u16) -> u64 {
    RX_DATA + u64::from(slot) * 0x1000
}

fn take_record<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, rest) = input.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (record, rest) = rest.split_at(len);
    *input = rest;
    Some(record)
}

/// Up to four descriptors of 14 bytes each: addr, len, flags.
fn take_descs(input: &mut &[u8]) -> Vec<(u64, u32, u16)> {
    let Some((&count, rest)) = input.split_first() else {
        return Vec::new();
    };
    *input = rest;
    let mut descs = Vec::new();
    for _ in 0..(count % 4) + 1 {
        let Some((raw, rest)) = input.split_first_chunk::<14>() else {
            break;
        };
        *input = rest;
        let addr = u64::from_le_bytes(raw[0..8].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(raw[8..12].try_into().unwrap_or_default());
        let flags = u16::from_le_bytes([raw[12], raw[13]]);
        // Keep addresses mostly inside guest memory so the walk goes deep.
        descs.push((addr % (MEM_SIZE as u64 + 0x1000), len % 0x2_0000, flags));
    }
    descs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx_bytes(frame_len: usize, hdr: [u8; NET_HDR_LEN]) -> Vec<u8> {
        let mut v = hdr.to_vec();
        v.extend((0..frame_len).map(|i| i as u8));
        v
    }

    #[test]
    fn fuzz_tx_entry_handles_valid_and_broken_chains() {
        guest_tx(&tx_bytes(60, [0; NET_HDR_LEN]));
        // NEEDS_CSUM inside and outside the frame.
        guest_tx(&tx_bytes(60, [1, 0, 0, 0, 0, 0, 34, 0, 16, 0, 0, 0]));
        guest_tx(&tx_bytes(60, [1, 0, 0, 0, 0, 0, 0xff, 0xff, 16, 0, 0, 0]));
        guest_tx(&tx_bytes(60, [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
        guest_tx(&tx_bytes(MAX_FRAME_LEN + 1, [0; NET_HDR_LEN]));
        guest_tx(&[]);
        guest_tx(&[0xff; 20]);
        // Segmentation: valid, unknown type, hdr_len and checksum past the frame.
        guest_tx(&tx_bytes(3000, [1, 1, 54, 0, 0xa8, 5, 34, 0, 16, 0, 0, 0]));
        guest_tx(&tx_bytes(
            3000,
            [1, 0x85, 54, 0, 0xa8, 5, 34, 0, 16, 0, 0, 0],
        ));
        guest_tx(&tx_bytes(
            3000,
            [1, 4, 0xff, 0xff, 0xa8, 5, 54, 0, 16, 0, 0, 0],
        ));
        guest_tx(&tx_bytes(
            3000,
            [1, 4, 74, 0, 0xa8, 5, 0xff, 0xff, 16, 0, 0, 0],
        ));
        guest_tx(&tx_bytes(3000, [0, 1, 54, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
        guest_tx(&tx_bytes(
            MAX_TAP_FRAME_LEN,
            [1, 1, 54, 0, 0xa8, 5, 34, 0, 16, 0, 0, 0],
        ));
    }

    fn record(input: &mut Vec<u8>, kind: u8, bytes: &[u8]) {
        input.push(kind);
        input.extend_from_slice(&u16::try_from(bytes.len()).unwrap().to_le_bytes());
        input.extend_from_slice(bytes);
    }

    #[test]
    fn fuzz_session_plays_the_tap_sending_good_and_bad_headers() {
        // Every mix of MRG_RXBUF and the guest's and host's offloads.
        for mode in (0u8..16).filter(|m| m & 2 != 0) {
            let mut input = vec![mode];
            record(
                &mut input,
                0,
                &tx_bytes(3000, [1, 1, 54, 0, 0xa8, 5, 34, 0, 16, 0, 0, 0]),
            );
            record(
                &mut input,
                1,
                &tx_bytes(60, [1, 0, 0, 0, 0, 0, 0xff, 0xff, 16, 0, 0, 0]),
            );
            for hdr in [
                [1u8, 1, 54, 0, 0xa8, 5, 34, 0, 16, 0, 9, 9],
                [3, 0, 0, 0, 0, 0, 34, 0, 6, 0, 0, 0],
                [1, 0x81, 54, 0, 0xa8, 5, 34, 0, 16, 0, 0, 0],
                [1, 3, 42, 0, 0xa8, 5, 34, 0, 6, 0, 0, 0],
                [1, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0],
                [0, 4, 74, 0, 0xa8, 5, 0, 0, 0, 0, 0, 0],
            ] {
                // 1500 fits a receive buffer, 3000 only merged ones.
                record(&mut input, 6, &tx_bytes(1500, hdr)[..]);
                record(&mut input, 6, &tx_bytes(3000, hdr)[..]);
            }
            record(&mut input, 6, &[0; 20]);
            record(&mut input, 7, &[0xee; 100]);
            input.push(9);
            input.push(8);
            guest_session(&input);
        }
    }

    #[test]
    fn fuzz_session_plays_every_record_kind() {
        for mode in [0u8, 1, 2, 3, 14, 15] {
            let mut input = vec![mode];
            let tx = tx_bytes(60, [0; NET_HDR_LEN]);
            for kind in 0u8..4 {
                input.push(kind);
                input.extend_from_slice(&u16::try_from(tx.len()).unwrap().to_le_bytes());
                input.extend_from_slice(&tx);
            }
            // Raw TX and RX chains: two descriptors each, one outside memory.
            for kind in [4u8, 5] {
                input.extend_from_slice(&[kind, 1]);
                for (addr, len, flags) in [(0x2_0000u64, 80u32, 0u16), (u64::MAX, 16, 2)] {
                    input.extend_from_slice(&addr.to_le_bytes());
                    input.extend_from_slice(&len.to_le_bytes());
                    input.extend_from_slice(&flags.to_le_bytes());
                }
            }
            // A frame bigger than one RX buffer, then a broken length.
            input.push(6);
            input.extend_from_slice(&3000u16.to_le_bytes());
            input.extend(std::iter::repeat_n(0x5a, 3000));
            input.extend_from_slice(&[7, 4, 0, 0, 0, 0, 0, 9, 8]);
            guest_session(&input);
        }
    }
}
