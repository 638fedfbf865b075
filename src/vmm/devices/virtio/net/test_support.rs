//! Driver-side helpers shared by the device's tests: a guest over mock
//! queues, and the backend's peer end of the stream.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::desc::split::{Descriptor as SplitDescriptor, VirtqUsedElem};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::fuzzing::packet_pair;
use super::header::{MAX_TAP_FRAME_LEN, NET_HDR_LEN};
use super::{Net, QUEUE_SIZE};
use crate::vmm::devices::virtio::{GuestMemory, VirtioDevice, VIRTIO_RING_F_EVENT_IDX};

pub const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
pub const VRING_DESC_F_NEXT: u16 = 1;
pub const VRING_DESC_F_WRITE: u16 = 2;
pub const MEM_SIZE: usize = 0x100_0000;
const RX_RING: u64 = 0x0;
const TX_RING: u64 = 0x4000;
pub const RX_DATA: u64 = 0x10_0000;
pub const RX_SLOT: u64 = 0x2000;
pub const TX_DATA: u64 = 0x40_0000;
const TX_SLOT: u64 = 0x1_1000;
/// How long a test waits for the worker before it fails.
const PATIENCE: Duration = Duration::from_secs(5);

pub use crate::vmm::devices::virtio::test_support::CountingInterrupt;

pub fn memory() -> GuestMemory {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

pub fn desc(addr: u64, len: u32, flags: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, 0))
}

/// Polls `done` until it holds or the patience runs out.
pub fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    done()
}

/// Where the used ring of `vq` belongs (virtio 1.2 §2.7). The mock's own
/// `used_addr` lands inside the available ring (rust-vmm/vm-virtio#400), so
/// we use the mock for descriptors and the available ring only.
fn used_ring(vq: &MockSplitQueue<'_, GuestMemory>) -> GuestAddress {
    let avail_end = vq.avail_addr().0 + 6 + 2 * u64::from(QUEUE_SIZE);
    GuestAddress(avail_end.next_multiple_of(4))
}

/// The queue as the transport hands it over, with EVENT_IDX as negotiated.
fn queue(vq: &MockSplitQueue<'_, GuestMemory>, features: u64) -> Queue {
    let mut q: Queue = vq.create_queue().unwrap();
    let used = used_ring(vq).0;
    q.set_used_ring_address(Some((used & 0xffff_ffff) as u32), Some((used >> 32) as u32));
    q.set_event_idx(features & 1 << VIRTIO_RING_F_EVENT_IDX != 0);
    q
}

/// One driver-side queue: descriptors are laid out in slots the test picks.
pub struct GuestQueue<'a> {
    vq: MockSplitQueue<'a, GuestMemory>,
    avail: u16,
    used_seen: u16,
}

impl<'a> GuestQueue<'a> {
    fn new(mem: &'a GuestMemory, ring: u64) -> GuestQueue<'a> {
        GuestQueue {
            vq: MockSplitQueue::create(mem, GuestAddress(ring), QUEUE_SIZE),
            avail: 0,
            used_seen: 0,
        }
    }

    /// Publishes `descs` as one chain in descriptor slots `first..`.
    pub fn publish(&mut self, first: u16, descs: &[RawDescriptor]) {
        let count = u16::try_from(descs.len()).unwrap();
        for (i, d) in (0u16..).zip(descs) {
            let mut d = SplitDescriptor::from(*d);
            if i + 1 < count {
                d.set_flags(d.flags() | VRING_DESC_F_NEXT);
                d.set_next(first + i + 1);
            }
            self.vq
                .desc_table()
                .store(first + i, RawDescriptor::from(d))
                .unwrap();
        }
        let slot = usize::from(self.avail % QUEUE_SIZE);
        self.vq.avail().ring().ref_at(slot).unwrap().store(first);
        self.avail = self.avail.wrapping_add(1);
        self.vq.avail().idx().store(self.avail);
    }

    /// The used ring's flags: VRING_USED_F_NO_NOTIFY (1) asks for no kicks.
    pub fn used_flags(&self, mem: &GuestMemory) -> u16 {
        mem.read_obj(used_ring(&self.vq)).unwrap()
    }

    /// The device's avail_event (EVENT_IDX): kick when the index passes it.
    pub fn avail_event(&self, mem: &GuestMemory) -> u16 {
        let at = used_ring(&self.vq).unchecked_add(4 + 8 * u64::from(QUEUE_SIZE));
        mem.read_obj(at).unwrap()
    }

    /// The driver's used_event (EVENT_IDX): interrupt once the used index
    /// passes it.
    pub fn set_used_event(&self, mem: &GuestMemory, idx: u16) {
        let at = self
            .vq
            .avail_addr()
            .unchecked_add(4 + 2 * u64::from(QUEUE_SIZE));
        mem.write_obj(idx, at).unwrap();
    }

    /// Whether a driver honouring the device's suppression would kick after
    /// publishing one more chain, as Linux's virtqueue_kick_prepare decides.
    pub fn would_kick(&self, mem: &GuestMemory, event_idx: bool) -> bool {
        if !event_idx {
            return self.used_flags(mem) & 1 == 0;
        }
        let (new, old) = (self.avail.wrapping_add(1), self.avail);
        new.wrapping_sub(self.avail_event(mem)).wrapping_sub(1) < new.wrapping_sub(old)
    }

    pub fn used_idx(&self, mem: &GuestMemory) -> u16 {
        mem.read_obj(used_ring(&self.vq).unchecked_add(2)).unwrap()
    }

    /// Used elements not seen before, as (head, length).
    pub fn take_used(&mut self, mem: &GuestMemory) -> Vec<(u32, u32)> {
        let used = used_ring(&self.vq);
        let idx = self.used_idx(mem);
        let mut out = Vec::new();
        while self.used_seen != idx {
            let slot = u64::from(self.used_seen % QUEUE_SIZE);
            let elem: VirtqUsedElem = mem.read_obj(used.unchecked_add(4 + 8 * slot)).unwrap();
            out.push((elem.id(), elem.len()));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }
}

/// A guest driver over mock queues, the activated device, and the peer end
/// of its backend stream.
pub struct Guest<'a> {
    pub mem: &'a GuestMemory,
    pub rx: GuestQueue<'a>,
    pub tx: GuestQueue<'a>,
    pub net: Net,
    pub interrupt: Arc<CountingInterrupt>,
    pub peer: UnixStream,
    tx_count: u16,
    rx_slot: u16,
}

impl<'a> Guest<'a> {
    /// A device over the stream with `features` acknowledged (VERSION_1 is
    /// added).
    pub fn new(mem: &'a GuestMemory, features: u64) -> Guest<'a> {
        let (ours, peer) = UnixStream::pair().unwrap();
        Guest::activated(mem, Net::new(ours, MAC), peer, features)
    }

    /// A device over a socket of one frame per message that stands in for
    /// a tap, `peer` being the tap's far end (the host's stack).
    pub fn over_tap(mem: &'a GuestMemory, features: u64) -> Guest<'a> {
        let (ours, peer) = packet_pair().unwrap();
        let net = Net::with_tap_stand_in(File::from(ours), MAC);
        Guest::activated(mem, net, UnixStream::from(peer), features)
    }

    /// Activates `net` with `features` acknowledged (VERSION_1 is added).
    pub fn activated(
        mem: &'a GuestMemory,
        mut net: Net,
        peer: UnixStream,
        features: u64,
    ) -> Guest<'a> {
        peer.set_read_timeout(Some(PATIENCE)).unwrap();
        net.ack_features(features | 1 << 32);
        let rx = GuestQueue::new(mem, RX_RING);
        let tx = GuestQueue::new(mem, TX_RING);
        let interrupt = Arc::new(CountingInterrupt::default());
        net.activate(
            mem.clone(),
            vec![queue(&rx.vq, features), queue(&tx.vq, features)],
            interrupt.clone(),
        )
        .unwrap();
        Guest {
            mem,
            rx,
            tx,
            net,
            interrupt,
            peer,
            tx_count: 0,
            rx_slot: 0,
        }
    }

    /// The address where the next TX chain's bytes go.
    pub fn tx_area(&self) -> u64 {
        TX_DATA + u64::from(self.tx_count % (QUEUE_SIZE / 4)) * TX_SLOT
    }

    /// Puts raw descriptors on the TX queue as one chain and kicks it.
    pub fn send_raw(&mut self, descs: &[RawDescriptor]) {
        let first = (self.tx_count % (QUEUE_SIZE / 4)) * 4;
        self.tx.publish(first, descs);
        self.tx_count = self.tx_count.wrapping_add(1);
        self.net.queue_notify(1);
    }

    /// Sends `hdr` and `frame` as one chain cut into `parts` read-only
    /// buffers of about equal size (the header may span two).
    pub fn send(&mut self, hdr: &[u8; NET_HDR_LEN], frame: &[u8], parts: usize) {
        let mut bytes = hdr.to_vec();
        bytes.extend_from_slice(frame);
        let at = self.tx_area();
        self.mem.write_slice(&bytes, GuestAddress(at)).unwrap();
        let step = bytes.len().div_ceil(parts);
        let descs: Vec<_> = (0..parts)
            .map(|p| {
                let start = (p * step).min(bytes.len());
                let end = ((p + 1) * step).min(bytes.len());
                desc(at + start as u64, u32::try_from(end - start).unwrap(), 0)
            })
            .collect();
        self.send_raw(&descs);
    }

    /// Offers one RX chain of the given buffers (writable unless told
    /// otherwise) without kicking; returns its head.
    pub fn offer_rx_chain(&mut self, descs: &[RawDescriptor]) -> u16 {
        let count = u16::try_from(descs.len()).unwrap();
        if self.rx_slot + count > QUEUE_SIZE {
            self.rx_slot = 0;
        }
        let first = self.rx_slot;
        self.rx.publish(first, descs);
        self.rx_slot += count;
        first
    }

    /// Offers `count` one-buffer RX chains of `len` bytes each and kicks RX;
    /// buffer `i` sits at `rx_buffer(head)`.
    pub fn add_rx_buffers(&mut self, count: u16, len: u32) -> Vec<u16> {
        let heads = (0..count)
            .map(|_| {
                let slot = if self.rx_slot >= QUEUE_SIZE {
                    0
                } else {
                    self.rx_slot
                };
                self.offer_rx_chain(&[desc(rx_buffer(slot), len, VRING_DESC_F_WRITE)])
            })
            .collect();
        self.net.queue_notify(0);
        heads
    }

    /// Waits for `n` used RX elements.
    pub fn rx_used(&mut self, n: usize) -> Vec<(u32, u32)> {
        let mut got = Vec::new();
        wait_until(|| {
            got.extend(self.rx.take_used(self.mem));
            got.len() >= n
        });
        got
    }

    /// Waits for `n` used TX elements.
    pub fn tx_used(&mut self, n: usize) -> Vec<(u32, u32)> {
        let mut got = Vec::new();
        wait_until(|| {
            got.extend(self.tx.take_used(self.mem));
            got.len() >= n
        });
        got
    }

    /// Reads one length-prefixed frame from the backend's side.
    pub fn peer_frame(&mut self) -> Vec<u8> {
        let mut prefix = [0u8; 4];
        self.peer.read_exact(&mut prefix).unwrap();
        let mut frame = vec![0; u32::from_be_bytes(prefix) as usize];
        self.peer.read_exact(&mut frame).unwrap();
        frame
    }

    /// The backend sends `frame`, length-prefixed.
    pub fn peer_send(&mut self, frame: &[u8]) {
        let len = u32::try_from(frame.len()).unwrap();
        self.peer.write_all(&len.to_be_bytes()).unwrap();
        self.peer.write_all(frame).unwrap();
    }

    /// Reads one packet, header and frame, from the tap's far end.
    pub fn tap_packet(&mut self) -> ([u8; NET_HDR_LEN], Vec<u8>) {
        let mut buf = vec![0; NET_HDR_LEN + MAX_TAP_FRAME_LEN + 1];
        let n = self.peer.read(&mut buf).unwrap();
        let hdr = *buf.first_chunk::<NET_HDR_LEN>().unwrap();
        buf.truncate(n);
        buf.drain(..NET_HDR_LEN);
        (hdr, buf)
    }

    /// The tap's far end sends `hdr` and `frame` as one packet.
    pub fn tap_send(&mut self, hdr: &[u8; NET_HDR_LEN], frame: &[u8]) {
        let mut packet = hdr.to_vec();
        packet.extend_from_slice(frame);
        let n = self.peer.write(&packet).unwrap();
        assert_eq!(n, packet.len());
    }
}

/// Where the one-buffer RX chain with head `head` has its buffer.
pub fn rx_buffer(head: u16) -> u64 {
    RX_DATA + u64::from(head) * RX_SLOT
}

pub fn read(mem: &GuestMemory, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
    buf
}

/// A frame of `len` bytes: broadcast Ethernet header, then a byte pattern.
pub fn frame(len: usize) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&MAC);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend((0..len.saturating_sub(14)).map(|i| (i % 251) as u8));
    f.truncate(len);
    f
}

/// A header with no flags and no offload.
pub const PLAIN_HDR: [u8; NET_HDR_LEN] = [0; NET_HDR_LEN];

/// A header: flags, gso_type, then hdr_len, gso_size, csum_start and
/// csum_offset.
pub fn net_hdr(flags: u8, gso_type: u8, fields: [u16; 4]) -> [u8; NET_HDR_LEN] {
    let mut h = [0u8; NET_HDR_LEN];
    h[0] = flags;
    h[1] = gso_type;
    for (i, v) in fields.into_iter().enumerate() {
        h[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_le_bytes());
    }
    h
}

impl Guest<'_> {
    /// Resets the device and activates it again on fresh queues with
    /// `features` acknowledged, as a driver reloading would.
    pub fn reactivate(&mut self, features: u64) {
        self.net.reset();
        self.mem
            .write_slice(&[0u8; 0x8000], GuestAddress(RX_RING))
            .unwrap();
        self.rx = GuestQueue::new(self.mem, RX_RING);
        self.tx = GuestQueue::new(self.mem, TX_RING);
        self.tx_count = 0;
        self.rx_slot = 0;
        self.net.ack_features(features | 1 << 32);
        self.net
            .activate(
                self.mem.clone(),
                vec![queue(&self.rx.vq, features), queue(&self.tx.vq, features)],
                self.interrupt.clone(),
            )
            .unwrap();
    }
}
