//! Driver-side helpers shared by the device's tests: mock queues, a guest
//! that sends and receives packets, and host clients.

use std::collections::VecDeque;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::desc::split::{Descriptor as SplitDescriptor, VirtqUsedElem};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::muxer::Timeouts;
use super::packet::{op, Header, HEADER_LEN, HOST_CID, TYPE_STREAM};
use super::{Vsock, QUEUE_SIZE};
use crate::vmm::devices::virtio::{GuestMemory, Interrupt, VirtioDevice};

pub const GUEST_CID: u64 = 3;
pub const VRING_DESC_F_NEXT: u16 = 1;
pub const VRING_DESC_F_WRITE: u16 = 2;
pub const MEM_SIZE: usize = 0x200_0000;
const RX_RING: u64 = 0x0;
const TX_RING: u64 = 0x4000;
const EVENT_RING: u64 = 0x8000;
const RX_DATA: u64 = 0x10_0000;
const RX_SLOT: u64 = 0x2000;
const TX_DATA: u64 = 0x40_0000;
const TX_SLOT: u64 = 0x1_1000;
/// What Linux offers: a 4 KiB payload after the header.
pub const RX_BUF_LEN: u32 = 4096 + HEADER_LEN as u32;

/// Counts the device's interrupts.
#[derive(Default)]
pub struct CountingInterrupt {
    used: AtomicUsize,
}

impl Interrupt for CountingInterrupt {
    fn signal_used_queue(&self) {
        self.used.fetch_add(1, Ordering::SeqCst);
    }

    fn signal_config_change(&self) {}
}

impl CountingInterrupt {
    pub fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }
}

pub fn memory() -> GuestMemory {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

pub fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
}

/// Where the used ring of `vq` belongs (virtio 1.2 §2.7): after the
/// available ring and its used_event field, 4-byte aligned.
///
/// The mock puts it at `avail().end()`, which counts ring entries as bytes
/// and so lands inside the available ring (rust-vmm/vm-virtio#400): entries
/// past half the ring would overwrite used elements. We use the mock for
/// descriptors and the available ring only.
pub fn used_ring(vq: &MockSplitQueue<'_, GuestMemory>) -> GuestAddress {
    let avail_end = vq.avail_addr().0 + 6 + 2 * u64::from(QUEUE_SIZE);
    GuestAddress(avail_end.next_multiple_of(4))
}

/// The device's view of `vq`, with the used ring where it belongs.
fn queue(vq: &MockSplitQueue<'_, GuestMemory>) -> Queue {
    let mut q: Queue = vq.create_queue().unwrap();
    let used = used_ring(vq).0;
    q.set_used_ring_address(Some((used & 0xffff_ffff) as u32), Some((used >> 32) as u32));
    q
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("a3s-vsock-{}-{n}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Short timeouts, so tests of them run quickly.
pub fn quick_timeouts() -> Timeouts {
    Timeouts {
        connect_line: Duration::from_millis(300),
        connect: Duration::from_millis(300),
        linger: Duration::from_millis(300),
    }
}

/// A guest driver over mock queues, and the activated device.
pub struct Guest<'a> {
    pub mem: &'a GuestMemory,
    rx: MockSplitQueue<'a, GuestMemory>,
    tx: MockSplitQueue<'a, GuestMemory>,
    pub vsock: Vsock,
    pub interrupt: Arc<CountingInterrupt>,
    pub dir: TempDir,
    rx_used_seen: u16,
    rx_avail: u16,
    /// Length of the buffer in each RX descriptor slot.
    rx_lens: Vec<u32>,
    tx_count: u16,
    /// Packets received but not yet asked for.
    backlog: VecDeque<(Header, Vec<u8>)>,
    /// The credit the guest advertises in every packet.
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl<'a> Guest<'a> {
    pub fn new(mem: &'a GuestMemory, name: &str) -> Guest<'a> {
        Self::with_timeouts(mem, name, Timeouts::default())
    }

    pub fn with_timeouts(mem: &'a GuestMemory, name: &str, timeouts: Timeouts) -> Guest<'a> {
        let dir = TempDir::new(name);
        let vsock =
            Vsock::with_timeouts(GUEST_CID, dir.path().join("vsock.sock"), timeouts).unwrap();
        let rx = MockSplitQueue::create(mem, GuestAddress(RX_RING), QUEUE_SIZE);
        let tx = MockSplitQueue::create(mem, GuestAddress(TX_RING), QUEUE_SIZE);
        let ev = MockSplitQueue::create(mem, GuestAddress(EVENT_RING), QUEUE_SIZE);
        let mut guest = Guest {
            mem,
            rx,
            tx,
            vsock,
            interrupt: Arc::new(CountingInterrupt::default()),
            dir,
            rx_used_seen: 0,
            rx_avail: 0,
            rx_lens: vec![0; usize::from(QUEUE_SIZE)],
            tx_count: 0,
            backlog: VecDeque::new(),
            buf_alloc: 64 * 1024,
            fwd_cnt: 0,
        };
        let queues = vec![queue(&guest.rx), queue(&guest.tx), queue(&ev)];
        guest
            .vsock
            .activate(mem.clone(), queues, guest.interrupt.clone())
            .unwrap();
        guest
    }

    pub fn uds(&self) -> PathBuf {
        self.dir.path().join("vsock.sock")
    }

    /// Offers `count` RX buffers of `len` bytes and kicks the RX queue.
    pub fn add_rx_buffers(&mut self, count: u16, len: u32) {
        for _ in 0..count {
            let slot = self.rx_avail % QUEUE_SIZE;
            self.rx_lens[usize::from(slot)] = len;
            let addr = RX_DATA + u64::from(slot) * RX_SLOT;
            self.rx
                .desc_table()
                .store(slot, desc(addr, len, VRING_DESC_F_WRITE, 0))
                .unwrap();
            self.publish_rx(slot);
        }
        self.vsock.queue_notify(0);
    }

    fn publish_rx(&mut self, head: u16) {
        let ring_slot = usize::from(self.rx_avail % QUEUE_SIZE);
        self.rx
            .avail()
            .ring()
            .ref_at(ring_slot)
            .unwrap()
            .store(head);
        self.rx_avail = self.rx_avail.wrapping_add(1);
        self.rx.avail().idx().store(self.rx_avail);
    }

    /// A raw RX chain at descriptor slots `first..`, published and kicked.
    pub fn add_rx_chain(&mut self, first: u16, descs: &[RawDescriptor]) {
        for (i, d) in descs.iter().enumerate() {
            let slot = first + u16::try_from(i).unwrap();
            self.rx.desc_table().store(slot, *d).unwrap();
        }
        self.publish_rx(first);
        self.vsock.queue_notify(0);
    }

    /// A header from the guest with the current credit.
    pub fn header(&self, op: u16, guest_port: u32, host_port: u32) -> Header {
        Header {
            src_cid: GUEST_CID,
            dst_cid: HOST_CID,
            src_port: guest_port,
            dst_port: host_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: self.buf_alloc,
            fwd_cnt: self.fwd_cnt,
        }
    }

    /// Puts raw bytes on the TX queue as one chain and kicks it.
    pub fn send_raw(&mut self, descs: &[RawDescriptor]) {
        let first = (self.tx_count % (QUEUE_SIZE / 4)) * 4;
        for (i, d) in descs.iter().enumerate() {
            let mut d = SplitDescriptor::from(*d);
            let i = u16::try_from(i).unwrap();
            if i + 1 < u16::try_from(descs.len()).unwrap() {
                d.set_flags(d.flags() | VRING_DESC_F_NEXT);
                d.set_next(first + i + 1);
            }
            self.tx
                .desc_table()
                .store(first + i, RawDescriptor::from(d))
                .unwrap();
        }
        let avail = self.tx.avail().idx().load();
        let ring_slot = usize::from(avail % QUEUE_SIZE);
        self.tx
            .avail()
            .ring()
            .ref_at(ring_slot)
            .unwrap()
            .store(first);
        self.tx.avail().idx().store(avail.wrapping_add(1));
        self.tx_count = self.tx_count.wrapping_add(1);
        self.vsock.queue_notify(1);
    }

    /// The address where the next TX chain's bytes go.
    pub fn tx_area(&self) -> u64 {
        TX_DATA + u64::from(self.tx_count % (QUEUE_SIZE / 4)) * TX_SLOT
    }

    /// Sends a packet the way Linux 6.1 does: header and payload in
    /// separate descriptors.
    pub fn send(&mut self, hdr: &Header, payload: &[u8]) {
        let mut hdr = *hdr;
        hdr.len = u32::try_from(payload.len()).unwrap();
        let at = self.tx_area();
        self.mem
            .write_slice(&hdr.to_bytes(), GuestAddress(at))
            .unwrap();
        let mut descs = vec![desc(at, HEADER_LEN as u32, 0, 0)];
        if !payload.is_empty() {
            let data = at + 0x100;
            self.mem.write_slice(payload, GuestAddress(data)).unwrap();
            descs.push(desc(data, hdr.len, 0, 0));
        }
        self.send_raw(&descs);
    }

    /// Packets the device has put in RX buffers since the last call.
    pub fn recv(&mut self) -> Vec<(Header, Vec<u8>)> {
        let mut out = Vec::new();
        let used = used_ring(&self.rx);
        let used_idx: u16 = self.mem.read_obj(used.unchecked_add(2)).unwrap();
        while self.rx_used_seen != used_idx {
            let slot = usize::from(self.rx_used_seen % QUEUE_SIZE);
            let at = used.unchecked_add(4 + 8 * slot as u64);
            let elem: VirtqUsedElem = self.mem.read_obj(at).unwrap();
            self.rx_used_seen = self.rx_used_seen.wrapping_add(1);
            let id = u16::try_from(elem.id()).unwrap();
            let len = elem.len() as usize;
            if len == 0 {
                out.push((Header::default(), Vec::new()));
                continue;
            }
            assert!(len >= HEADER_LEN, "short packet of {len} bytes");
            assert!(len as u32 <= self.rx_lens[usize::from(id)], "overflow");
            let addr = RX_DATA + u64::from(id) * RX_SLOT;
            let mut raw = [0u8; HEADER_LEN];
            self.mem.read_slice(&mut raw, GuestAddress(addr)).unwrap();
            let hdr = Header::from_bytes(&raw);
            assert_eq!(hdr.len as usize, len - HEADER_LEN);
            let mut payload = vec![0; len - HEADER_LEN];
            self.mem
                .read_slice(&mut payload, GuestAddress(addr + HEADER_LEN as u64))
                .unwrap();
            out.push((hdr, payload));
        }
        out
    }

    /// Receives until `want` packets came or five seconds passed,
    /// returning RX buffers as they are consumed.
    pub fn recv_n(&mut self, want: usize) -> Vec<(Header, Vec<u8>)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let take = want.min(self.backlog.len());
        let mut got: Vec<_> = self.backlog.drain(..take).collect();
        while got.len() < want && Instant::now() < deadline {
            let new = self.recv();
            if new.is_empty() {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let n = u16::try_from(new.len()).unwrap();
            got.extend(new);
            self.add_rx_buffers(n, RX_BUF_LEN);
        }
        if got.len() > want {
            self.backlog.extend(got.drain(want..));
        }
        got
    }

    /// Keeps a packet for a later `recv_n`.
    pub fn push_back(&mut self, packet: (Header, Vec<u8>)) {
        self.backlog.push_back(packet);
    }

    /// Receives the next packet, failing the test after five seconds.
    pub fn recv_one(&mut self) -> (Header, Vec<u8>) {
        let mut got = self.recv_n(1);
        assert_eq!(got.len(), 1, "no packet from the device");
        got.remove(0)
    }

    /// Chains the device has returned on the TX queue.
    pub fn tx_used(&self) -> u16 {
        self.mem
            .read_obj(used_ring(&self.tx).unchecked_add(2))
            .unwrap()
    }

    /// Buffers the device has filled on the RX queue.
    pub fn rx_used(&self) -> u16 {
        self.mem
            .read_obj(used_ring(&self.rx).unchecked_add(2))
            .unwrap()
    }

    /// Nothing arrives for a while.
    pub fn assert_quiet(&mut self, wait: Duration) {
        std::thread::sleep(wait);
        let mut got: Vec<_> = self.backlog.drain(..).collect();
        got.extend(self.recv());
        assert!(got.is_empty(), "unexpected packets: {got:?}");
    }
}

/// A host client: connects to the device's socket and asks for `port`.
pub fn host_connect(uds: &Path, port: u32) -> UnixStream {
    let mut s = UnixStream::connect(uds).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::io::Write::write_all(&mut s, format!("CONNECT {port}\n").as_bytes()).unwrap();
    s
}

/// Reads one line (up to and including `\n`) byte by byte.
pub fn read_line(s: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(_) => {
                line.push(b[0]);
                if b[0] == b'\n' {
                    break;
                }
            }
            Err(e) => panic!("reading a line: {e}"),
        }
    }
    String::from_utf8(line).unwrap()
}

/// Asserts the packet is a host-to-guest `op` on the given ports.
pub fn assert_packet(hdr: &Header, op: u16, host_port: u32, guest_port: u32) {
    assert_eq!(
        (hdr.op, hdr.src_cid, hdr.dst_cid, hdr.src_port, hdr.dst_port),
        (op, HOST_CID, GUEST_CID, host_port, guest_port),
        "{hdr:?}"
    );
}

pub use op::*;
