//! Entry points for the `fuzz/` crate, not an API: they drive the device
//! the way a guest driver would, on hand-built split rings, and assert that
//! everything the device hands back is well formed.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::{Epoll, EventSet};

use super::muxer::{Muxer, Queues, Settings, Timeouts};
use super::packet::{op, Header, HEADER_LEN, HOST_CID, TYPE_STREAM};
use crate::vmm::devices::virtio::{GuestMemory, Interrupt, WarnOnce};

const GUEST_CID: u64 = 3;
const RING: u16 = 16;
const MEM_SIZE: usize = 0x8_0000;
const RX_BUFFERS: u16 = 8;
/// What Linux offers: a 4 KiB payload after the 44-byte header.
const RX_BUF_LEN: u32 = 4096 + 44;
const RX_DATA: u64 = 0x1_0000;
const TX_DATA: u64 = 0x4_0000;
const TX_DATA_LEN: usize = 0x2_0000;
/// The token the first host client gets (the muxer's first socket token).
const CLIENT_TOKEN: u64 = 2;

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

    fn queue(&self) -> Queue {
        let mut q = Queue::new(RING).expect("valid size");
        q.set_size(RING);
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
            let next = (index + 1) % RING;
            let at = self.desc + u64::from(index) * 16;
            let _ = mem.write_obj(addr, GuestAddress(at));
            let _ = mem.write_obj(len, GuestAddress(at + 8));
            let _ = mem.write_obj(flags, GuestAddress(at + 12));
            let _ = mem.write_obj(next, GuestAddress(at + 14));
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

/// One muxer over hand-driven queues, with a host client whose stream
/// to guest port 1234 (local port 1024) the guest has accepted.
struct Session {
    mem: GuestMemory,
    rx: Ring,
    tx: Ring,
    tx_first: u16,
    muxer: Muxer,
    client: Option<UnixStream>,
}

impl Session {
    fn new() -> Option<Session> {
        let mem: GuestMemory =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest memory");
        let rx = Ring::at(0x0);
        let tx = Ring::at(0x3000);
        let ev = Ring::at(0x6000);
        let queues = Queues {
            rx: rx.queue(),
            tx: tx.queue(),
            _event: ev.queue(),
        };
        let settings = Settings {
            guest_cid: GUEST_CID,
            // Nothing listens there: guest connections are refused with RST.
            uds_path: PathBuf::from("/nonexistent-a3s-box-fuzz/vsock.sock"),
            timeouts: Timeouts::default(),
            guest_error: Arc::new(WarnOnce::default()),
            host_error: Arc::new(WarnOnce::default()),
        };
        let epoll = Arc::new(Epoll::new().ok()?);
        let muxer = Muxer::new(settings, mem.clone(), queues, Arc::new(NoInterrupt), epoll);
        let mut s = Session {
            mem,
            rx,
            tx,
            tx_first: 0,
            muxer,
            client: None,
        };
        for i in 0..RX_BUFFERS {
            s.rx.push(&s.mem, i, &[(rx_addr(i), RX_BUF_LEN, 2)]);
        }
        let (ours, mut client) = UnixStream::pair().ok()?;
        client.set_nonblocking(true).ok()?;
        client.write_all(b"CONNECT 1234\n").ok()?;
        s.client = Some(client);
        s.muxer.add_host_client(ours);
        s.muxer.pump_rx();
        s.check_rx();
        let accept = Header {
            src_cid: GUEST_CID,
            dst_cid: HOST_CID,
            src_port: 1234,
            dst_port: 1024,
            type_: TYPE_STREAM,
            op: op::RESPONSE,
            buf_alloc: 64 * 1024,
            ..Header::default()
        };
        s.tx_packet(&accept.to_bytes(), 1);
        Some(s)
    }

    /// Puts `bytes` on the TX queue split over `parts` read-only
    /// descriptors, and kicks it.
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
        self.muxer.process_tx();
        self.check_rx();
    }

    /// Every RX buffer the device used holds a well-formed packet from
    /// the host to this guest; the buffers go back to the queue.
    fn check_rx(&mut self) {
        loop {
            let used = self.rx.take_used(&self.mem);
            if used.is_empty() {
                return;
            }
            for (id, len) in used {
                let Ok(slot) = u16::try_from(id) else {
                    panic!("used id {id} beyond the ring");
                };
                if slot >= RX_BUFFERS {
                    // A raw chain: we do not know its layout.
                    continue;
                }
                check_rx_packet(&self.mem, slot, len);
                self.rx
                    .push(&self.mem, slot, &[(rx_addr(slot), RX_BUF_LEN, 2)]);
            }
            self.muxer.pump_rx();
        }
    }
}

/// Feeds `data` to the device as one guest packet (header and payload)
/// on a stream the guest has open, and checks what comes back.
pub fn guest_packet(data: &[u8]) {
    let Some(mut s) = Session::new() else {
        return;
    };
    s.tx_packet(data, 1);
    // Whatever the packet did, the stream's host side still works.
    if let Some(c) = s.client.as_mut() {
        let _ = c.write(b"after");
    }
    s.muxer.handle_socket_event(CLIENT_TOKEN, EventSet::IN);
    s.muxer.pump_rx();
    s.check_rx();
}

/// Reads input as records and plays them against one session: guest
/// packets on the TX queue (whole or split over descriptors, or raw
/// descriptors), raw RX chains, and the host client's moves.
pub fn guest_session(data: &[u8]) {
    let Some(mut s) = Session::new() else {
        return;
    };
    let mut input = data;
    while let Some((&kind, rest)) = input.split_first() {
        input = rest;
        match kind % 12 {
            // A packet split over 1-4 read-only descriptors.
            parts @ 0..=3 => {
                let Some(bytes) = take_record(&mut input) else {
                    return;
                };
                s.tx_packet(bytes, usize::from(parts) + 1);
            }
            // Raw descriptors on the TX queue: addresses, lengths, flags.
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
                    s.muxer.pump_rx();
                }
            }
            // The client writes up to 255 bytes.
            6 => {
                let Some((&n, rest)) = input.split_first() else {
                    return;
                };
                input = rest;
                if let Some(c) = s.client.as_mut() {
                    let _ = c.write(&vec![0x5a; usize::from(n)]);
                }
                s.muxer.handle_socket_event(CLIENT_TOKEN, EventSet::IN);
            }
            // The client reads what it can.
            7 => {
                if let Some(c) = s.client.as_mut() {
                    let mut buf = [0u8; 4096];
                    while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
                }
                s.muxer.handle_socket_event(CLIENT_TOKEN, EventSet::OUT);
            }
            // The client half-closes.
            8 => {
                if let Some(c) = s.client.as_ref() {
                    let _ = c.shutdown(std::net::Shutdown::Write);
                }
                s.muxer
                    .handle_socket_event(CLIENT_TOKEN, EventSet::IN | EventSet::READ_HANG_UP);
            }
            // The client goes away.
            9 => {
                s.client = None;
                s.muxer.handle_socket_event(
                    CLIENT_TOKEN,
                    EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP,
                );
            }
            // Time passes: every deadline expires.
            10 => s.muxer.expire(Instant::now() + Duration::from_secs(3600)),
            // The driver kicks RX.
            _ => s.muxer.pump_rx(),
        }
        s.check_rx();
    }
}

fn rx_addr(slot: u16) -> u64 {
    RX_DATA + u64::from(slot) * 0x2000
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

fn check_rx_packet(mem: &GuestMemory, slot: u16, len: u32) {
    if len == 0 {
        return;
    }
    assert!(len as usize >= HEADER_LEN, "packet of {len} bytes");
    assert!(
        len <= RX_BUF_LEN,
        "packet of {len} bytes overflows its buffer"
    );
    let mut raw = [0u8; HEADER_LEN];
    mem.read_slice(&mut raw, GuestAddress(rx_addr(slot)))
        .expect("buffer in memory");
    let hdr = Header::from_bytes(&raw);
    assert_eq!(hdr.len as usize, len as usize - HEADER_LEN);
    assert_eq!((hdr.src_cid, hdr.dst_cid), (HOST_CID, GUEST_CID));
    assert_eq!(hdr.type_, TYPE_STREAM);
    assert!((1..=7).contains(&hdr.op), "op {}", hdr.op);
    if hdr.op == op::RW {
        assert!(hdr.len > 0, "empty RW");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(op: u16, len: u32, payload: &[u8]) -> Vec<u8> {
        let hdr = Header {
            src_cid: GUEST_CID,
            dst_cid: HOST_CID,
            src_port: 1234,
            dst_port: 1024,
            len,
            type_: TYPE_STREAM,
            op,
            buf_alloc: 64 * 1024,
            ..Header::default()
        };
        let mut v = hdr.to_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn fuzz_entry_handles_valid_and_broken_packets() {
        guest_packet(&packet(op::RW, 5, b"hello"));
        guest_packet(&packet(op::RW, 500, b"short"));
        guest_packet(&packet(op::SHUTDOWN, 0, &[]));
        guest_packet(&packet(op::REQUEST, 0, &[]));
        guest_packet(&packet(42, 0, &[]));
        guest_packet(&[]);
        guest_packet(&[0xff; 100]);
    }

    #[test]
    fn fuzz_session_plays_every_record_kind() {
        let mut input = Vec::new();
        let rw = packet(op::RW, 3, b"abc");
        for kind in 0u8..4 {
            input.push(kind);
            input.extend_from_slice(&u16::try_from(rw.len()).unwrap().to_le_bytes());
            input.extend_from_slice(&rw);
        }
        // Raw TX and RX chains: two descriptors each, one outside memory.
        for kind in [4u8, 5] {
            input.extend_from_slice(&[kind, 1]);
            for (addr, len, flags) in [(0x4_0000u64, 44u32, 0u16), (u64::MAX, 16, 2)] {
                input.extend_from_slice(&addr.to_le_bytes());
                input.extend_from_slice(&len.to_le_bytes());
                input.extend_from_slice(&flags.to_le_bytes());
            }
        }
        input.extend_from_slice(&[6, 200, 7, 11, 8, 9, 10, 11]);
        guest_session(&input);
    }
}
