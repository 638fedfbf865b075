//! The network device's data plane: frames from the transmit queue to the
//! backend, frames from the backend to the receive queue, and the worker
//! thread's epoll loop that drives both.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory as _, GuestMemoryError};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::backend::{Backend, Rx};
use super::device::{Kicks, Shared, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_STATUS};
use super::header::{MIN_FRAME_LEN, NET_HDR_LEN};
use super::VIRTIO_NET_S_LINK_UP;
use crate::vmm::devices::virtio::{GuestMemory, Interrupt};

/// Queue indexes (virtio 1.2 §5.1.2).
pub const RX_QUEUE: u16 = 0;
pub const TX_QUEUE: u16 = 1;

/// epoll tokens of the worker.
pub(super) const TOKEN_RX_KICK: u64 = 0;
pub(super) const TOKEN_TX_KICK: u64 = 1;
pub(super) const TOKEN_STOP: u64 = 2;
const TOKEN_BACKEND: u64 = 3;

/// Frames bound for the backend that we buffer before we stop taking TX
/// chains; one more frame may go past it.
pub(super) const TX_PENDING_LIMIT: usize = 256 * 1024;
/// Frames delivered per `process_rx` call, so TX and kicks are not starved.
const RX_BUDGET: usize = 256;
/// Events handled per epoll wait.
const EVENT_BATCH: usize = 8;

/// Why a chain or a frame was rejected, or the backend given up on.
#[derive(Debug, thiserror::Error)]
pub(super) enum NetError {
    #[error("transmit chain {head} has a buffer the device may only write")]
    WritableTxBuffer { head: u16 },
    #[error("receive chain {head} has a buffer the device may only read")]
    ReadOnlyRxBuffer { head: u16 },
    #[error("chain {head} has a buffer outside guest memory")]
    OutsideMemory { head: u16 },
    #[error("transmit chain {head} holds {len} bytes, more than a header and a frame")]
    TxTooLong { head: u16, len: usize },
    #[error("transmit chain {head} holds {len} bytes, less than a header and a frame")]
    TxTooShort { head: u16, len: usize },
    #[error("transmit chain {head} asks for segmentation offload {gso_type:#x}, not negotiated")]
    Gso { head: u16, gso_type: u8 },
    #[error("transmit chain {head} asks for segmentation {gso_type:#x} of {gso_size}-byte segments without a partial checksum or an MSS")]
    BadGso {
        head: u16,
        gso_type: u8,
        gso_size: u16,
    },
    #[error(
        "transmit chain {head} asks for a checksum at {csum_start}+{csum_offset} \
         in a frame of {len} bytes"
    )]
    BadChecksumRange {
        head: u16,
        csum_start: u16,
        csum_offset: u16,
        len: usize,
    },
    #[error("transmit chain {head} has {hdr_len} bytes of headers in a frame of {len}")]
    BadHeaderLength {
        head: u16,
        hdr_len: usize,
        len: usize,
    },
    #[error("receive chain {head} holds {capacity} bytes, less than the header")]
    RxTooSmall { head: u16, capacity: usize },
    #[error("a frame of {len} bytes does not fit the receive buffers; dropped")]
    FrameTooBig { len: usize },
    #[error("the tap sent a frame with segmentation {gso_type:#x}, which the driver does not take; dropped")]
    RxGso { gso_type: u8 },
    #[error(
        "the tap sent a checksum at {csum_start}+{csum_offset} in a frame of {len} bytes; dropped"
    )]
    RxChecksumRange {
        csum_start: u16,
        csum_offset: u16,
        len: usize,
    },
    #[error("the tap sent a packet of {0} bytes, not a header and a frame; dropped")]
    TapPacketLength(usize),
    #[error("the tap refused a frame (is it up?); dropped")]
    TapRefused(#[source] io::Error),
    #[error("could not write to guest memory")]
    GuestMemory(#[source] GuestMemoryError),
    #[error("could not return chain {head} to the used ring")]
    UsedRing {
        head: u16,
        #[source]
        source: virtio_queue::Error,
    },
    #[error(
        "the backend sent a frame length of {0}, not a frame; the backend is no longer served"
    )]
    Protocol(usize),
    #[error("the backend hung up")]
    BackendEof,
    #[error("the backend failed")]
    BackendIo(#[source] io::Error),
    #[error("the worker's event loop failed")]
    Epoll(#[source] io::Error),
}

/// Moves frames between the queues and the backend. The worker thread owns
/// it; the fuzzer drives it synchronously.
pub(super) struct DataPath {
    mem: GuestMemory,
    rx: Queue,
    tx: Queue,
    interrupt: Arc<dyn Interrupt>,
    backend: Backend,
    /// What the driver acked, dependencies applied.
    features: u64,
    shared: Arc<Shared>,
    /// A frame waits for receive buffers: the backend is not read meanwhile.
    rx_waiting: bool,
    /// The chain being sent, header and frame.
    tx_frame: Vec<u8>,
    /// Writable buffers of the receive chains gathered for one frame.
    rx_segments: Vec<(GuestAddress, usize)>,
    /// Those chains: head index and where their buffers end in `rx_segments`.
    rx_chains: Vec<(u16, usize)>,
}

/// What became of one received frame.
enum Delivery {
    /// In the guest's buffers, or dropped: either way it is done with.
    Done,
    /// Not enough receive buffers yet.
    NoBuffers,
}

impl DataPath {
    /// `features` are those the driver acked, as `Net::ack_features` keeps them.
    pub(super) fn new(
        mem: GuestMemory,
        rx: Queue,
        tx: Queue,
        interrupt: Arc<dyn Interrupt>,
        backend: Backend,
        features: u64,
        shared: Arc<Shared>,
    ) -> DataPath {
        DataPath {
            mem,
            rx,
            tx,
            interrupt,
            backend,
            features,
            shared,
            rx_waiting: false,
            tx_frame: Vec::new(),
            rx_segments: Vec::new(),
            rx_chains: Vec::new(),
        }
    }

    pub(super) fn into_backend(self) -> Backend {
        self.backend
    }

    fn acked(&self, bit: u32) -> bool {
        self.features & (1 << bit) != 0
    }

    fn gone(&self) -> bool {
        self.shared.gone.load(Ordering::SeqCst)
    }

    fn guest_error(&self, e: &NetError) {
        self.shared
            .guest_error
            .warn_error(format_args!("virtio-net"), e);
    }

    /// Stops serving the backend for good and shows the link as down.
    fn lose_backend(&mut self, e: &NetError) {
        self.backend.clear_tx();
        if self.shared.gone.swap(true, Ordering::SeqCst) {
            return;
        }
        self.shared
            .host_error
            .warn_error(format_args!("virtio-net"), e);
        self.shared
            .status
            .fetch_and(!VIRTIO_NET_S_LINK_UP, Ordering::SeqCst);
        // STATUS was negotiated: a lost backend is announced as link down.
        if self.acked(VIRTIO_NET_F_STATUS) {
            self.interrupt.signal_config_change();
        }
    }

    fn flush(&mut self) {
        if self.gone() {
            return;
        }
        if let Err(e) = self.backend.flush(&self.shared) {
            self.lose_backend(&e);
        }
    }

    /// What the worker must wait for on the backend; empty means "take it
    /// out of epoll" (a hung-up socket would report HUP forever).
    pub(super) fn interest(&self) -> EventSet {
        let mut set = EventSet::empty();
        if self.gone() {
            return set;
        }
        if !self.rx_waiting {
            set |= EventSet::IN;
        }
        if self.backend.has_tx_pending() {
            set |= EventSet::OUT;
        }
        set
    }

    /// Sends every chain on the transmit queue to the backend until the
    /// pending buffer is full; then waits for the backend to drain. Once the
    /// backend is gone, frames are dropped as a NIC without link would.
    /// Kicks are asked for again only once the queue is drained: while the
    /// backend is full, its becoming writable wakes the worker instead.
    pub(super) fn process_tx(&mut self) {
        let mut used_any = false;
        // Without EVENT_IDX, sets NO_NOTIFY; with it, the driver kicks no
        // more once past the avail_event we last wrote.
        let _ = self.tx.disable_notification(&self.mem);
        // Set once a re-check found chains: if the next pass takes none, the
        // driver's index is not believed again.
        let mut again = false;
        loop {
            let (popped, full) = self.drain_tx(&mut used_any);
            if full || (again && popped == 0) {
                break;
            }
            // True when chains came after the queue looked empty.
            match self.tx.enable_notification(&self.mem) {
                Ok(true) => {
                    again = true;
                    let _ = self.tx.disable_notification(&self.mem);
                }
                _ => break,
            }
        }
        self.flush();
        if used_any && self.tx.needs_notification(&self.mem).unwrap_or(true) {
            self.interrupt.signal_used_queue();
        }
    }

    /// Takes transmit chains until the queue is empty or the backend's
    /// buffer is full; returns how many it took and whether it is full.
    fn drain_tx(&mut self, used_any: &mut bool) -> (usize, bool) {
        let mut popped = 0;
        loop {
            if self.backend.tx_full() {
                self.flush();
                if !self.gone() && self.backend.tx_full() {
                    return (popped, true);
                }
            }
            let Some(chain) = self.tx.pop_descriptor_chain(&self.mem) else {
                return (popped, false);
            };
            popped += 1;
            let head = chain.head_index();
            let gone = self.gone();
            let max_frame = self.backend.max_frame_len();
            match read_tx_chain(&self.mem, chain, &mut self.tx_frame, max_frame).and_then(|()| {
                self.backend
                    .check_tx(head, &mut self.tx_frame, self.features)
            }) {
                Ok(()) if !gone => self.backend.queue_tx(&mut self.tx_frame),
                Ok(()) => {}
                Err(e) => self.guest_error(&e),
            }
            match self.tx.add_used(&self.mem, head, 0) {
                Ok(()) => *used_any = true,
                Err(source) => self.guest_error(&NetError::UsedRing { head, source }),
            }
        }
    }

    /// Delivers the frames the backend sent into receive buffers until the
    /// buffers run out, the backend has nothing more, or the budget is
    /// spent; true in the last case, when frames may be left in our buffer.
    pub(super) fn process_rx(&mut self) -> bool {
        let mut used_any = false;
        let mut handled = 0;
        // Receive kicks matter only while a frame waits for buffers.
        let _ = self.rx.disable_notification(&self.mem);
        let more = loop {
            if handled == RX_BUDGET {
                break true;
            }
            // Frames read before the backend was lost are still delivered.
            let read = !self.gone();
            match self.backend.poll_rx(read, self.features, &self.shared) {
                Ok(Rx::Ready) => {}
                Ok(Rx::Empty) => break false,
                Ok(Rx::Dropped) => {
                    handled += 1;
                    continue;
                }
                Err(e) => {
                    self.lose_backend(&e);
                    break false;
                }
            }
            match self.deliver(&mut used_any) {
                Delivery::Done => {
                    self.rx_waiting = false;
                    self.backend.consume_rx();
                    handled += 1;
                }
                Delivery::NoBuffers => {
                    self.rx_waiting = true;
                    break false;
                }
            }
        };
        if used_any && self.rx.needs_notification(&self.mem).unwrap_or(true) {
            self.interrupt.signal_used_queue();
        }
        more
    }

    /// Puts the backend's ready frame, after its header, into as many
    /// receive chains as it needs: one without MRG_RXBUF.
    fn deliver(&mut self, used_any: &mut bool) -> Delivery {
        let Some(need) = self
            .backend
            .rx_packet()
            .map(|(_, frame)| NET_HDR_LEN + frame.len())
        else {
            return Delivery::Done;
        };
        let max_chains = if self.acked(VIRTIO_NET_F_MRG_RXBUF) {
            usize::from(self.rx.size())
        } else {
            1
        };
        let mut start = self.rx.next_avail();
        let mut capacity = 0;
        self.rx_chains.clear();
        self.rx_segments.clear();
        // Asked for a kick and found no chain since.
        let mut asked_in_vain = false;
        while capacity < need && self.rx_chains.len() < max_chains {
            let Some(chain) = self.rx.pop_descriptor_chain(&self.mem) else {
                // Ask for a kick at the next buffer, then look once more:
                // buffers that came meanwhile would bring none.
                if !asked_in_vain && matches!(self.rx.enable_notification(&self.mem), Ok(true)) {
                    asked_in_vain = true;
                    continue;
                }
                // Nothing written yet: the chains stay for the next kick.
                self.rx.set_next_avail(start);
                return Delivery::NoBuffers;
            };
            asked_in_vain = false;
            let head = chain.head_index();
            match rx_chain_segments(&self.mem, chain, &mut self.rx_segments) {
                Ok(n) => {
                    capacity += n;
                    self.rx_chains.push((head, self.rx_segments.len()));
                }
                Err(e) => {
                    self.guest_error(&e);
                    // Return the bad chain and those gathered before it empty:
                    // rewinding past a used chain would use it twice.
                    self.rx_chains.push((head, self.rx_segments.len()));
                    self.return_chains_empty(used_any);
                    self.rx_segments.clear();
                    capacity = 0;
                    start = self.rx.next_avail();
                }
            }
        }
        if capacity < need {
            self.guest_error(&NetError::FrameTooBig {
                len: need - NET_HDR_LEN,
            });
            self.rx.set_next_avail(start);
            return Delivery::Done;
        }

        // Bounded by max_chains, which is at most the queue size.
        let num_buffers = u16::try_from(self.rx_chains.len()).unwrap_or(u16::MAX);
        let written = match self.backend.rx_packet() {
            Some((mut hdr, frame)) => {
                hdr[10..12].copy_from_slice(&num_buffers.to_le_bytes());
                write_packet(&self.mem, &hdr, frame, &self.rx_segments, &self.rx_chains)
            }
            None => Ok(Vec::new()),
        };
        let lens = match written {
            Ok(lens) => lens,
            Err(e) => {
                self.guest_error(&NetError::GuestMemory(e));
                self.return_chains_empty(used_any);
                return Delivery::Done;
            }
        };
        for (&(head, _), len) in self.rx_chains.iter().zip(lens) {
            // At most the frame's length.
            let len = u32::try_from(len).unwrap_or(u32::MAX);
            match self.rx.add_used(&self.mem, head, len) {
                Ok(()) => *used_any = true,
                Err(source) => self.guest_error(&NetError::UsedRing { head, source }),
            }
        }
        Delivery::Done
    }

    /// Returns the gathered receive chains with nothing in them.
    fn return_chains_empty(&mut self, used_any: &mut bool) {
        for &(head, _) in &self.rx_chains {
            match self.rx.add_used(&self.mem, head, 0) {
                Ok(()) => *used_any = true,
                Err(source) => self.guest_error(&NetError::UsedRing { head, source }),
            }
        }
        self.rx_chains.clear();
    }
}

/// Writes `hdr` and then `frame` over the buffers of the gathered receive
/// `chains`; returns how many bytes went into each chain.
fn write_packet(
    mem: &GuestMemory,
    hdr: &[u8],
    frame: &[u8],
    segments: &[(GuestAddress, usize)],
    chains: &[(u16, usize)],
) -> Result<Vec<usize>, GuestMemoryError> {
    let need = hdr.len() + frame.len();
    let mut lens = Vec::with_capacity(chains.len());
    let mut offset = 0;
    let mut seg_start = 0;
    for &(_, seg_end) in chains {
        let mut written = 0;
        for &(addr, len) in &segments[seg_start..seg_end] {
            let n = len.min(need - offset);
            if n == 0 {
                break;
            }
            write_span(mem, addr, [hdr, frame], offset, n)?;
            offset += n;
            written += n;
        }
        seg_start = seg_end;
        lens.push(written);
    }
    Ok(lens)
}

/// Writes bytes `offset..offset + len` of `parts`, taken as one, at `addr`.
fn write_span(
    mem: &GuestMemory,
    mut addr: GuestAddress,
    parts: [&[u8]; 2],
    mut offset: usize,
    mut len: usize,
) -> Result<(), GuestMemoryError> {
    for part in parts {
        if len == 0 {
            break;
        }
        let Some(rest) = part.get(offset..) else {
            offset -= part.len();
            continue;
        };
        let n = len.min(rest.len());
        mem.write_slice(&rest[..n], addr)?;
        let step = u64::try_from(n).unwrap_or(u64::MAX);
        addr = addr
            .checked_add(step)
            .ok_or(GuestMemoryError::InvalidGuestAddress(addr))?;
        offset = 0;
        len -= n;
    }
    Ok(())
}

/// Copies a transmit chain's readable buffers, in order, into `out`; it may
/// carry a header and a frame of at most `max_frame` bytes.
fn read_tx_chain<M>(
    mem: &GuestMemory,
    chain: DescriptorChain<M>,
    out: &mut Vec<u8>,
    max_frame: usize,
) -> Result<(), NetError>
where
    M: std::ops::Deref,
    M::Target: vm_memory::GuestMemory,
{
    let head = chain.head_index();
    out.clear();
    for desc in chain {
        if desc.is_write_only() {
            return Err(NetError::WritableTxBuffer { head });
        }
        let len = usize::try_from(desc.len()).unwrap_or(usize::MAX);
        let total = out.len().saturating_add(len);
        if total > NET_HDR_LEN + max_frame {
            return Err(NetError::TxTooLong { head, len: total });
        }
        let start = out.len();
        out.resize(total, 0);
        mem.read_slice(&mut out[start..], desc.addr())
            .map_err(|_| NetError::OutsideMemory { head })?;
    }
    if out.len() < NET_HDR_LEN + MIN_FRAME_LEN {
        return Err(NetError::TxTooShort {
            head,
            len: out.len(),
        });
    }
    Ok(())
}

/// Collects a receive chain's writable buffers into `segments`; returns
/// their total length.
fn rx_chain_segments<M>(
    mem: &GuestMemory,
    chain: DescriptorChain<M>,
    segments: &mut Vec<(GuestAddress, usize)>,
) -> Result<usize, NetError>
where
    M: std::ops::Deref,
    M::Target: vm_memory::GuestMemory,
{
    let head = chain.head_index();
    let first = segments.len();
    let mut capacity: usize = 0;
    for desc in chain {
        if !desc.is_write_only() {
            segments.truncate(first);
            return Err(NetError::ReadOnlyRxBuffer { head });
        }
        let len = usize::try_from(desc.len()).unwrap_or(usize::MAX);
        if !mem.check_range(desc.addr(), len) {
            segments.truncate(first);
            return Err(NetError::OutsideMemory { head });
        }
        if len > 0 {
            segments.push((desc.addr(), len));
            capacity = capacity.saturating_add(len);
        }
    }
    // Each buffer must hold a header (virtio 1.2 §5.1.6.3.1).
    if capacity < NET_HDR_LEN {
        segments.truncate(first);
        return Err(NetError::RxTooSmall { head, capacity });
    }
    Ok(capacity)
}

/// Adds, changes or removes the backend socket in epoll to match `want`.
fn set_interest(
    epoll: &Epoll,
    fd: i32,
    current: &mut Option<EventSet>,
    want: EventSet,
) -> io::Result<()> {
    let want = (!want.is_empty()).then_some(want);
    let op = match (*current, want) {
        (a, b) if a == b => return Ok(()),
        (None, Some(_)) => ControlOperation::Add,
        (Some(_), Some(_)) => ControlOperation::Modify,
        (_, None) => ControlOperation::Delete,
    };
    let events = want.unwrap_or(EventSet::empty());
    epoll.ctl(op, fd, EpollEvent::new(events, TOKEN_BACKEND))?;
    *current = want;
    Ok(())
}

/// The worker: serves both queues and the backend until told to stop, then
/// hands the backend back.
pub(super) fn run_worker(mut path: DataPath, kicks: &Kicks, epoll: &Epoll) -> Backend {
    let fd = path.backend.as_raw_fd();
    let mut registered = None;
    let mut events = [EpollEvent::default(); EVENT_BATCH];
    loop {
        path.shared.wakeups.fetch_add(1, Ordering::Relaxed);
        // Cheap when there is nothing to do, so every wake-up runs both.
        path.process_tx();
        let more_rx = path.process_rx();
        if let Err(e) = set_interest(epoll, fd, &mut registered, path.interest()) {
            path.lose_backend(&NetError::Epoll(e));
            // Delete may fail the same way; give up on the socket regardless.
            registered = None;
        }
        // Frames left in our buffer wake nobody: only look for events then.
        let timeout = if more_rx { 0 } else { -1 };
        let count = match epoll.wait(timeout, &mut events) {
            Ok(count) => count,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => {
                path.lose_backend(&NetError::Epoll(e));
                // Without epoll we cannot be woken; wait for the stop only.
                let _ = wait_for_stop(kicks);
                return path.into_backend();
            }
        };
        for event in &events[..count] {
            match event.data() {
                TOKEN_STOP => return path.into_backend(),
                // Only clears the counter; the loop itself is the response.
                TOKEN_RX_KICK => {
                    let _ = kicks.rx.read();
                }
                TOKEN_TX_KICK => {
                    let _ = kicks.tx.read();
                }
                _ => {}
            }
        }
    }
}

/// Blocks until the stop EventFd is written.
fn wait_for_stop(kicks: &Kicks) -> io::Result<()> {
    let epoll = Epoll::new()?;
    epoll.ctl(
        ControlOperation::Add,
        kicks.stop.as_raw_fd(),
        EpollEvent::new(EventSet::IN, TOKEN_STOP),
    )?;
    let mut events = [EpollEvent::default(); 1];
    loop {
        match epoll.wait(-1, &mut events) {
            Ok(n) if n > 0 => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::Shutdown;
    use std::time::Duration;

    use super::*;
    use crate::vmm::devices::virtio::net::device::offered_features;
    use crate::vmm::devices::virtio::net::header::*;
    use crate::vmm::devices::virtio::net::test_support::*;
    use crate::vmm::devices::virtio::net::{
        VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_STATUS,
    };
    use crate::vmm::devices::virtio::{VirtioDevice, VIRTIO_F_VERSION_1};

    /// Long enough for the worker to have acted on a kick it got.
    const QUIET: Duration = Duration::from_millis(100);

    const MRG: u64 = 1 << VIRTIO_NET_F_MRG_RXBUF;
    const QUEUE_SIZE_FOR_TESTS: u16 = crate::vmm::devices::virtio::net::QUEUE_SIZE;

    /// The one's complement sum, written apart from the device's: 32-bit
    /// accumulator, byte pairs, end-around carry folded at the end.
    fn reference_sum(data: &[u8]) -> u32 {
        let mut sum: u32 = 0;
        let mut i = 0;
        while i < data.len() {
            let hi = u32::from(data[i]) << 8;
            let lo = data.get(i + 1).map_or(0, |&b| u32::from(b));
            sum += hi | lo;
            i += 2;
        }
        sum
    }

    fn folds_to(mut sum: u32) -> u32 {
        while sum >> 16 != 0 {
            sum = (sum >> 16) + (sum & 0xffff);
        }
        sum
    }

    /// An IPv4 frame carrying `proto` with `payload`, its transport checksum
    /// field holding the folded pseudo-header sum as Linux leaves it for
    /// CHECKSUM_PARTIAL; returns the frame, csum_offset and the
    /// pseudo-header sum.
    fn partial_ipv4(proto: u8, payload: &[u8]) -> (Vec<u8>, u16, u32) {
        let (hdr_len, csum_offset) = if proto == 6 { (20, 16) } else { (8, 6) };
        let l4_len = hdr_len + payload.len();
        let mut f = frame(14);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let total = u16::try_from(20 + l4_len).unwrap();
        let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[10, 0, 2, 15, 93, 184, 216, 34]);
        f.extend_from_slice(&ip);
        let mut l4 = vec![0u8; hdr_len];
        l4[0..4].copy_from_slice(&[0xc3, 0x50, 0x00, 0x50]);
        if proto == 17 {
            l4[4..6].copy_from_slice(&u16::try_from(l4_len).unwrap().to_be_bytes());
        } else {
            l4[12] = 0x50;
        }
        l4.extend_from_slice(payload);
        let mut pseudo = vec![10, 0, 2, 15, 93, 184, 216, 34, 0, proto];
        pseudo.extend_from_slice(&u16::try_from(l4_len).unwrap().to_be_bytes());
        let pseudo_sum = reference_sum(&pseudo);
        let partial = u16::try_from(folds_to(pseudo_sum)).unwrap();
        let field = usize::from(csum_offset);
        l4[field..field + 2].copy_from_slice(&partial.to_be_bytes());
        f.extend_from_slice(&l4);
        (f, csum_offset, pseudo_sum)
    }

    fn needs_csum_hdr(csum_start: u16, csum_offset: u16) -> [u8; NET_HDR_LEN] {
        let mut hdr = [0u8; NET_HDR_LEN];
        hdr[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        hdr[6..8].copy_from_slice(&csum_start.to_le_bytes());
        hdr[8..10].copy_from_slice(&csum_offset.to_le_bytes());
        hdr
    }

    /// The header the device wrote at `addr`: flags, gso_type, num_buffers.
    fn rx_header(mem: &GuestMemory, addr: u64) -> (u8, u8, u16) {
        let hdr = read(mem, addr, NET_HDR_LEN);
        (hdr[0], hdr[1], u16::from_le_bytes([hdr[10], hdr[11]]))
    }

    #[test]
    fn frame_in_one_descriptor_reaches_the_backend_with_its_length_prefix() {
        let mem = memory();
        let mut g = Guest::new(&mem, 0);
        g.send(&PLAIN_HDR, &frame(60), 1);

        let mut prefix = [0u8; 4];
        g.peer.read_exact(&mut prefix).unwrap();
        assert_eq!(prefix, [0, 0, 0, 60]);
        let mut body = vec![0; 60];
        g.peer.read_exact(&mut body).unwrap();
        assert_eq!(body, frame(60));
        assert_eq!(g.tx_used(1), vec![(0, 0)]);
    }

    #[test]
    fn frame_over_three_descriptors_with_a_split_header_reaches_the_backend() {
        let mem = memory();
        let mut g = Guest::new(&mem, 0);
        // 1514 + 12 bytes in three parts of 509: the header is in the first.
        g.send(&PLAIN_HDR, &frame(1514), 3);
        // Four parts of 5 bytes: too short for a frame, so dropped.
        g.send(&PLAIN_HDR, &frame(8), 4);
        let at = g.tx_area();
        mem.write_slice(&[0; 5], GuestAddress(at)).unwrap();
        mem.write_slice(&[0; 7], GuestAddress(at + 0x100)).unwrap();
        mem.write_slice(&frame(100), GuestAddress(at + 0x200))
            .unwrap();
        // The header spans two descriptors.
        g.send_raw(&[
            desc(at, 5, 0),
            desc(at + 0x100, 7, 0),
            desc(at + 0x200, 100, 0),
        ]);

        assert_eq!(g.peer_frame(), frame(1514));
        assert_eq!(g.peer_frame(), frame(100));
        assert_eq!(g.tx_used(3), vec![(0, 0), (4, 0), (8, 0)]);
    }

    #[test]
    fn partial_tcp_checksum_is_completed_before_the_frame_is_sent() {
        let mem = memory();
        let mut g = Guest::new(&mem, 1 << VIRTIO_NET_F_CSUM);
        // Odd payload length: the last byte is padded.
        let (f, csum_offset, pseudo) = partial_ipv4(6, b"GET / HTTP/1.1\r\n\r\nx");
        g.send(&needs_csum_hdr(34, csum_offset), &f, 2);

        let sent = g.peer_frame();
        assert_eq!(sent.len(), f.len());
        assert_eq!(sent[..34], f[..34], "Ethernet and IP headers untouched");
        assert_eq!(folds_to(pseudo + reference_sum(&sent[34..])), 0xffff);
        let field = 34 + usize::from(csum_offset);
        assert_ne!(sent[field..field + 2], f[field..field + 2]);
    }

    #[test]
    fn partial_udp_checksum_is_completed_before_the_frame_is_sent() {
        let mem = memory();
        let mut g = Guest::new(&mem, 1 << VIRTIO_NET_F_CSUM);
        let (f, csum_offset, pseudo) = partial_ipv4(17, &[0xab; 40]);
        g.send(&needs_csum_hdr(34, csum_offset), &f, 1);

        let sent = g.peer_frame();
        assert_eq!(folds_to(pseudo + reference_sum(&sent[34..])), 0xffff);
        let field = 34 + usize::from(csum_offset);
        assert_ne!(sent[field..field + 2], [0, 0], "0 would mean no checksum");
    }

    #[test]
    fn bad_checksum_offsets_drop_the_frame_and_the_device_keeps_sending() {
        let mem = memory();
        let mut g = Guest::new(&mem, 1 << VIRTIO_NET_F_CSUM);
        g.send(&needs_csum_hdr(60, 0), &frame(60), 1);
        g.send(&needs_csum_hdr(34, 25), &frame(60), 1);
        g.send(&needs_csum_hdr(0xffff, 0xffff), &frame(60), 1);
        g.send(&PLAIN_HDR, &frame(61), 1);

        assert_eq!(g.peer_frame(), frame(61));
        assert_eq!(g.tx_used(4), vec![(0, 0), (4, 0), (8, 0), (12, 0)]);
    }

    #[test]
    fn malformed_transmit_chains_are_used_empty_and_the_device_keeps_sending() {
        let mem = memory();
        let mut g = Guest::new(&mem, 0);
        let end = u64::try_from(MEM_SIZE).unwrap();
        // Shorter than a header.
        g.send_raw(&[desc(TX_DATA, 10, 0)]);
        // A header and no frame.
        g.send_raw(&[desc(TX_DATA, 12, 0)]);
        // A writable buffer after a readable one.
        g.send_raw(&[
            desc(TX_DATA, 12, 0),
            desc(TX_DATA + 0x100, 60, VRING_DESC_F_WRITE),
        ]);
        // Outside guest memory, and wrapping around the address space.
        g.send_raw(&[desc(end - 20, 80, 0)]);
        g.send_raw(&[desc(u64::MAX - 8, 80, 0)]);
        // Larger than any frame, and absurdly large.
        g.send_raw(&[desc(TX_DATA, 12 + 70_000, 0)]);
        g.send_raw(&[desc(TX_DATA, u32::MAX, 0)]);
        // A segmentation offload we never offered.
        let mut gso = PLAIN_HDR;
        gso[1] = 1;
        g.send(&gso, &frame(60), 1);
        g.send(&PLAIN_HDR, &frame(60), 1);

        assert_eq!(g.peer_frame(), frame(60));
        let used = g.tx_used(9);
        assert_eq!(used.len(), 9);
        assert!(used.iter().all(|&(_, len)| len == 0), "{used:?}");
        assert!(!g.net.backend_gone());
    }

    #[test]
    fn frame_from_the_backend_lands_with_a_header_and_one_buffer() {
        let mem = memory();
        let mut g = Guest::new(&mem, 0);
        let heads = g.add_rx_buffers(2, 2048);
        g.peer_send(&frame(100));

        assert_eq!(g.rx_used(1), vec![(u32::from(heads[0]), 112)]);
        let at = rx_buffer(heads[0]);
        assert_eq!(rx_header(&mem, at), (0, VIRTIO_NET_HDR_GSO_NONE, 1));
        assert_eq!(read(&mem, at + 12, 100), frame(100));
    }

    #[test]
    fn frame_larger_than_one_buffer_spreads_over_several_with_mrg_rxbuf() {
        let mem = memory();
        let mut g = Guest::new(&mem, MRG);
        let heads = g.add_rx_buffers(4, 1024);
        g.peer_send(&frame(3000));

        let used = g.rx_used(3);
        let want: Vec<_> = heads[..3]
            .iter()
            .map(|&h| u32::from(h))
            .zip([1024, 1024, 3012 - 2048])
            .collect();
        assert_eq!(used, want);
        assert_eq!(rx_header(&mem, rx_buffer(heads[0])).2, 3);
        let mut got = read(&mem, rx_buffer(heads[0]) + 12, 1012);
        got.extend(read(&mem, rx_buffer(heads[1]), 1024));
        got.extend(read(&mem, rx_buffer(heads[2]), 964));
        assert_eq!(got, frame(3000));

        // The fourth buffer takes the next frame whole.
        g.peer_send(&frame(200));
        assert_eq!(g.rx_used(1), vec![(u32::from(heads[3]), 212)]);
        assert_eq!(rx_header(&mem, rx_buffer(heads[3])).2, 1);
    }

    #[test]
    fn frame_too_large_for_one_buffer_without_mrg_rxbuf_is_dropped_and_the_buffer_kept() {
        let mem = memory();
        let mut g = Guest::new(&mem, 0);
        let heads = g.add_rx_buffers(1, 1024);
        g.peer_send(&frame(3000));
        g.peer_send(&frame(100));

        assert_eq!(g.rx_used(1), vec![(u32::from(heads[0]), 112)]);
        assert_eq!(read(&mem, rx_buffer(heads[0]) + 12, 100), frame(100));
    }

    #[test]
    fn frame_waits_for_receive_buffers_and_arrives_after_the_kick() {
        let mem = memory();
        let mut g = Guest::new(&mem, MRG);
        g.peer_send(&frame(100));
        g.peer_send(&frame(1500));
        g.peer_send(&frame(60));
        std::thread::sleep(QUIET);
        assert!(g.rx.take_used(&mem).is_empty());

        // One buffer for one frame: the next waits again.
        let first = g.add_rx_buffers(1, 2048);
        assert_eq!(g.rx_used(1), vec![(u32::from(first[0]), 112)]);
        std::thread::sleep(QUIET);
        assert!(g.rx.take_used(&mem).is_empty());

        let more = g.add_rx_buffers(2, 2048);
        let used = g.rx_used(2);
        assert_eq!(
            used,
            vec![(u32::from(more[0]), 1512), (u32::from(more[1]), 72)]
        );
        assert_eq!(read(&mem, rx_buffer(more[0]) + 12, 1500), frame(1500));
        assert_eq!(read(&mem, rx_buffer(more[1]) + 12, 60), frame(60));
    }

    const EVENT_IDX: u64 = 1 << crate::vmm::devices::virtio::VIRTIO_RING_F_EVENT_IDX;

    #[test]
    fn with_event_idx_the_driver_is_asked_to_kick_at_the_chain_after_those_sent() {
        let mem = memory();
        let mut g = Guest::new(&mem, EVENT_IDX);
        for _ in 0..3 {
            g.send(&PLAIN_HDR, &frame(60), 1);
        }
        for _ in 0..3 {
            assert_eq!(g.peer_frame(), frame(60));
        }
        assert_eq!(g.tx_used(3).len(), 3);
        assert!(wait_until(|| g.tx.avail_event(&mem) == 3));
        assert!(g.tx.would_kick(&mem, true));
    }

    #[test]
    fn with_event_idx_interrupts_wait_for_the_drivers_used_event() {
        let mem = memory();
        let mut g = Guest::new(&mem, EVENT_IDX);
        // Interrupt once the second chain is used, not for the first.
        g.tx.set_used_event(&mem, 1);
        g.send(&PLAIN_HDR, &frame(60), 1);
        assert_eq!(g.peer_frame(), frame(60));
        assert_eq!(g.tx_used(1).len(), 1);
        std::thread::sleep(QUIET);
        assert_eq!(g.interrupt.used(), 0);

        g.send(&PLAIN_HDR, &frame(61), 1);
        assert_eq!(g.peer_frame(), frame(61));
        assert_eq!(g.tx_used(1).len(), 1);
        assert!(wait_until(|| g.interrupt.used() == 1));
    }

    /// Receive kicks are asked for only while a frame waits for buffers.
    fn receive_kicks_follow_the_waiting_frame(event_idx: bool) {
        let mem = memory();
        let mut g = Guest::new(&mem, MRG | if event_idx { EVENT_IDX } else { 0 });
        g.add_rx_buffers(2, 2048);
        g.peer_send(&frame(100));
        assert_eq!(g.rx_used(1).len(), 1);
        // Buffers remain: a driver adding one more need not kick.
        std::thread::sleep(QUIET);
        assert!(!g.rx.would_kick(&mem, event_idx));

        g.peer_send(&frame(200));
        g.peer_send(&frame(300));
        assert_eq!(g.rx_used(1).len(), 1);
        // The third frame waits: the next buffer must be kicked.
        assert!(wait_until(|| g.rx.would_kick(&mem, event_idx)));
        let more = g.add_rx_buffers(1, 2048);
        assert_eq!(g.rx_used(1), vec![(u32::from(more[0]), 312)]);
        std::thread::sleep(QUIET);
        assert!(!g.rx.would_kick(&mem, event_idx));
    }

    #[test]
    fn with_event_idx_receive_kicks_are_asked_for_only_while_a_frame_waits() {
        receive_kicks_follow_the_waiting_frame(true);
    }

    #[test]
    fn without_event_idx_receive_kicks_are_asked_for_only_while_a_frame_waits() {
        receive_kicks_follow_the_waiting_frame(false);
    }

    #[test]
    fn frame_waits_when_the_buffers_offered_are_too_few_for_it() {
        let mem = memory();
        let mut g = Guest::new(&mem, MRG);
        g.add_rx_buffers(1, 1024);
        g.peer_send(&frame(3000));
        std::thread::sleep(QUIET);
        assert!(g.rx.take_used(&mem).is_empty());

        g.add_rx_buffers(2, 1024);
        let used = g.rx_used(3);
        assert_eq!(used.iter().map(|&(_, l)| l).sum::<u32>(), 3012);
    }

    #[test]
    fn malformed_receive_chains_are_used_empty_and_the_device_keeps_receiving() {
        let mem = memory();
        let mut g = Guest::new(&mem, 0);
        let end = u64::try_from(MEM_SIZE).unwrap();
        let read_only = g.offer_rx_chain(&[desc(RX_DATA, 2048, 0)]);
        let mixed = g.offer_rx_chain(&[
            desc(RX_DATA, 16, VRING_DESC_F_WRITE),
            desc(RX_DATA + 0x100, 2048, 0),
        ]);
        let outside = g.offer_rx_chain(&[desc(end - 8, 2048, VRING_DESC_F_WRITE)]);
        let wraps = g.offer_rx_chain(&[desc(u64::MAX - 4, 64, VRING_DESC_F_WRITE)]);
        let tiny = g.offer_rx_chain(&[desc(RX_DATA, 8, VRING_DESC_F_WRITE)]);
        let good = g.add_rx_buffers(1, 2048);
        g.peer_send(&frame(100));

        let want: Vec<_> = [read_only, mixed, outside, wraps, tiny]
            .into_iter()
            .map(|h| (u32::from(h), 0))
            .chain([(u32::from(good[0]), 112)])
            .collect();
        assert_eq!(g.rx_used(6), want);
        assert_eq!(read(&mem, RX_DATA, 16), [0; 16], "bad chains untouched");
        assert_eq!(read(&mem, rx_buffer(good[0]) + 12, 100), frame(100));
    }

    #[test]
    fn malformed_chain_among_merged_buffers_does_not_lose_the_frame() {
        let mem = memory();
        let mut g = Guest::new(&mem, MRG);
        let first = g.add_rx_buffers(1, 1024);
        let bad = g.offer_rx_chain(&[desc(RX_DATA + 0x1_0000, 1024, 0)]);
        let rest = g.add_rx_buffers(3, 1024);
        g.peer_send(&frame(2000));

        let used = g.rx_used(4);
        assert_eq!(used.len(), 4);
        assert_eq!(&used[..2], [(u32::from(first[0]), 0), (u32::from(bad), 0)]);
        assert_eq!(
            &used[2..],
            [(u32::from(rest[0]), 1024), (u32::from(rest[1]), 988)]
        );
        assert_eq!(rx_header(&mem, rx_buffer(rest[0])).2, 2);
    }

    #[test]
    fn backend_hang_up_is_noticed_and_shown_as_link_down() {
        let mem = memory();
        let mut g = Guest::new(&mem, 1 << VIRTIO_NET_F_STATUS);
        g.peer.shutdown(Shutdown::Both).unwrap();

        assert!(wait_until(|| g.net.backend_gone()));
        assert!(wait_until(|| g.interrupt.config() == 1));
        let mut status = [0xff; 2];
        g.net.read_config(6, &mut status);
        assert_eq!(status, [0, 0]);
        // Transmit chains still come back, so the guest does not stall.
        g.send(&PLAIN_HDR, &frame(60), 1);
        assert_eq!(g.tx_used(1), vec![(0, 0)]);
    }

    #[test]
    fn frames_read_before_the_hang_up_are_still_delivered() {
        let mem = memory();
        let mut g = Guest::new(&mem, 0);
        g.peer_send(&frame(80));
        g.peer_send(&frame(90));
        g.peer.shutdown(Shutdown::Both).unwrap();
        // The second frame waits for a buffer, so the hang-up is not read yet.
        let first = g.add_rx_buffers(1, 2048);
        assert_eq!(g.rx_used(1), vec![(u32::from(first[0]), 92)]);

        let second = g.add_rx_buffers(1, 2048);
        assert_eq!(g.rx_used(1), vec![(u32::from(second[0]), 102)]);
        assert!(wait_until(|| g.net.backend_gone()));
    }

    #[test]
    fn zero_or_oversized_frame_length_from_the_backend_stops_serving_it() {
        for prefix in [0u32, 65535 + 15, u32::MAX] {
            let mem = memory();
            let mut g = Guest::new(&mem, 0);
            g.add_rx_buffers(1, 2048);
            g.peer.write_all(&prefix.to_be_bytes()).unwrap();
            g.peer.write_all(&frame(60)).unwrap();

            assert!(wait_until(|| g.net.backend_gone()), "prefix {prefix}");
            assert!(g.rx.take_used(&mem).is_empty());
            assert_eq!(g.interrupt.config(), 0, "STATUS was not negotiated");
        }
    }

    #[test]
    fn largest_frame_is_accepted_from_the_backend() {
        let mem = memory();
        let mut g = Guest::new(&mem, MRG);
        let heads = g.add_rx_buffers(9, 0x2000);
        g.peer_send(&frame(MAX_FRAME_LEN));

        let used = g.rx_used(9);
        assert_eq!(
            used.iter().map(|&(_, l)| l as usize).sum::<usize>(),
            12 + MAX_FRAME_LEN
        );
        assert_eq!(rx_header(&mem, rx_buffer(heads[0])).2, 9);
        assert!(!g.net.backend_gone());
    }

    #[test]
    fn slow_backend_holds_back_transmit_chains_without_losing_frames() {
        let mem = memory();
        let mut g = Guest::new(&mem, 0);
        let count = 24;
        let frames: Vec<Vec<u8>> = (0..count)
            .map(|i| {
                let mut f = frame(60_000);
                f[14] = i;
                f
            })
            .collect();
        for f in &frames {
            g.send(&PLAIN_HDR, f, 1);
        }
        // The socket buffer and the pending limit hold well under 1.4 MB.
        assert!(wait_until(|| g.tx.used_idx(&mem) > 0));
        std::thread::sleep(QUIET);
        let held = g.tx.used_idx(&mem);
        assert!(held < u16::from(count), "all {held} chains taken");

        for f in &frames {
            assert_eq!(g.peer_frame()[14], f[14]);
        }
        assert_eq!(g.tx_used(usize::from(count)).len(), usize::from(count));
        assert!(!g.net.backend_gone());
    }

    #[test]
    fn backend_survives_a_reset_in_the_middle_of_a_frame() {
        let mem = memory();
        let mut g = Guest::new(&mem, 0);
        // Half a frame before the reset, the rest after.
        let f = frame(500);
        g.peer.write_all(&500u32.to_be_bytes()).unwrap();
        g.peer.write_all(&f[..200]).unwrap();
        g.add_rx_buffers(1, 2048);
        std::thread::sleep(QUIET);
        g.reactivate(0);
        g.peer.write_all(&f[200..]).unwrap();
        let heads = g.add_rx_buffers(1, 2048);

        assert_eq!(g.rx_used(1), vec![(u32::from(heads[0]), 512)]);
        assert_eq!(read(&mem, rx_buffer(heads[0]) + 12, 500), f);
        assert!(!g.net.backend_gone());
        let mut status = [0; 2];
        g.net.read_config(6, &mut status);
        assert_eq!(u16::from_le_bytes(status), VIRTIO_NET_S_LINK_UP);
    }

    /// Worker loop turns during `QUIET`, once it settled.
    fn wakeups_while_quiet(g: &Guest<'_>) -> u64 {
        std::thread::sleep(QUIET);
        let before = g.net.worker_wakeups();
        std::thread::sleep(QUIET);
        g.net.worker_wakeups() - before
    }

    #[test]
    fn worker_sleeps_while_a_frame_waits_for_buffers_even_after_a_hang_up() {
        let mem = memory();
        let mut g = Guest::new(&mem, 0);
        assert!(wakeups_while_quiet(&g) <= 1);
        g.peer_send(&frame(100));
        assert!(wakeups_while_quiet(&g) <= 1, "spins on a readable socket");
        // A hung-up socket is readable (and HUP) for good.
        g.peer.shutdown(Shutdown::Both).unwrap();
        assert!(wakeups_while_quiet(&g) <= 1, "spins on a hung-up socket");

        let heads = g.add_rx_buffers(1, 2048);
        assert_eq!(g.rx_used(1), vec![(u32::from(heads[0]), 112)]);
        assert!(wait_until(|| g.net.backend_gone()));
        assert!(
            wakeups_while_quiet(&g) <= 1,
            "spins once the backend is gone"
        );
    }

    #[test]
    fn many_small_frames_in_one_write_are_delivered_in_order_as_buffers_come() {
        let mem = memory();
        let mut g = Guest::new(&mem, 0);
        let count: u16 = 300;
        let mut stream = Vec::new();
        for i in 0..count {
            let mut f = frame(20);
            f[14..16].copy_from_slice(&i.to_be_bytes());
            stream.extend_from_slice(&20u32.to_be_bytes());
            stream.extend_from_slice(&f);
        }
        g.peer.write_all(&stream).unwrap();
        // The second batch reuses the first one's buffers: check each first.
        let mut seen = 0u16;
        for batch in [QUEUE_SIZE_FOR_TESTS, count - QUEUE_SIZE_FOR_TESTS] {
            let heads = g.add_rx_buffers(batch, 64);
            let used = g.rx_used(usize::from(batch));
            assert_eq!(used.len(), usize::from(batch));
            for (&(id, len), &head) in used.iter().zip(&heads) {
                assert_eq!((id, len), (u32::from(head), 32));
                let seq = read(&mem, rx_buffer(head) + 12 + 14, 2);
                assert_eq!(seq, seen.to_be_bytes(), "frame {seen}");
                seen += 1;
            }
        }
        assert_eq!(seen, count);
    }

    /// Every offload the tap offers, as a driver that takes them all acks.
    const TAP_OFFLOADS: u64 = offered_features(true) & !(1 << VIRTIO_F_VERSION_1);

    fn tso4_hdr() -> [u8; NET_HDR_LEN] {
        net_hdr(1, VIRTIO_NET_HDR_GSO_TCPV4, [54, 1448, 34, 16])
    }

    #[test]
    fn tso_frame_reaches_the_tap_with_the_guests_header() {
        let mem = memory();
        let mut g = Guest::over_tap(&mem, TAP_OFFLOADS);
        let f = frame(3000);
        g.send(&tso4_hdr(), &f, 3);
        g.send(&PLAIN_HDR, &frame(60), 1);

        assert_eq!(g.tap_packet(), (tso4_hdr(), f), "no checksum completed");
        assert_eq!(g.tap_packet(), (PLAIN_HDR, frame(60)));
        assert_eq!(g.tx_used(2), vec![(0, 0), (4, 0)]);
    }

    #[test]
    fn largest_tso_frame_reaches_the_tap_and_a_larger_one_is_refused() {
        let mem = memory();
        let mut g = Guest::over_tap(&mem, TAP_OFFLOADS);
        g.send(&tso4_hdr(), &frame(MAX_TAP_FRAME_LEN + 1), 1);
        g.send(&tso4_hdr(), &frame(MAX_TAP_FRAME_LEN), 2);

        let (hdr, f) = g.tap_packet();
        assert_eq!((hdr, f.len()), (tso4_hdr(), MAX_TAP_FRAME_LEN));
        assert_eq!(g.tx_used(2).len(), 2);
    }

    #[test]
    fn headers_the_driver_may_not_send_drop_their_frame_and_the_tap_keeps_sending() {
        let mem = memory();
        // CSUM and HOST_TSO6 only: no TSO over IPv4, no ECN.
        let mut g = Guest::over_tap(&mem, 1 << VIRTIO_NET_F_CSUM | 1 << VIRTIO_NET_F_HOST_TSO6);
        for hdr in [
            tso4_hdr(),
            net_hdr(1, VIRTIO_NET_HDR_GSO_TCPV6 | 0x80, [74, 1428, 54, 16]),
            net_hdr(1, 3, [42, 1400, 34, 6]),
            net_hdr(1, 0x42, [42, 1400, 34, 6]),
            net_hdr(1, VIRTIO_NET_HDR_GSO_TCPV6, [3001, 1428, 54, 16]),
            net_hdr(1, VIRTIO_NET_HDR_GSO_TCPV6, [74, 1428, 2999, 0]),
            net_hdr(1, 0, [0, 0, 0xffff, 0xffff]),
        ] {
            g.send(&hdr, &frame(3000), 1);
        }
        let tso6 = net_hdr(1, VIRTIO_NET_HDR_GSO_TCPV6, [74, 1428, 54, 16]);
        g.send(&tso6, &frame(3000), 1);

        assert_eq!(g.tap_packet(), (tso6, frame(3000)));
        let used = g.tx_used(8);
        assert_eq!(used.len(), 8);
        assert!(!g.net.backend_gone());
    }

    #[test]
    fn tso_frame_from_the_tap_reaches_the_guest_with_its_header_and_num_buffers() {
        let mem = memory();
        let mut g = Guest::over_tap(&mem, MRG | TAP_OFFLOADS);
        let heads = g.add_rx_buffers(4, 1024);
        // num_buffers as the tap leaves it is whatever: the device sets it.
        let mut hdr = tso4_hdr();
        hdr[10] = 0x77;
        g.tap_send(&hdr, &frame(3000));

        let used = g.rx_used(3);
        assert_eq!(used.iter().map(|&(_, l)| l).sum::<u32>(), 3012);
        let got = read(&mem, rx_buffer(heads[0]), NET_HDR_LEN);
        assert_eq!(got[..10], tso4_hdr()[..10]);
        assert_eq!(rx_header(&mem, rx_buffer(heads[0])).2, 3);
        let mut body = read(&mem, rx_buffer(heads[0]) + 12, 1012);
        body.extend(read(&mem, rx_buffer(heads[1]), 1024));
        body.extend(read(&mem, rx_buffer(heads[2]), 964));
        assert_eq!(body, frame(3000));
    }

    #[test]
    fn tso_frame_without_mrg_rxbuf_needs_a_buffer_of_65562_bytes() {
        let mem = memory();
        let mut g = Guest::over_tap(
            &mem,
            1 << VIRTIO_NET_F_GUEST_CSUM | 1 << VIRTIO_NET_F_GUEST_TSO4,
        );
        let small = g.add_rx_buffers(1, 2048);
        g.tap_send(&tso4_hdr(), &frame(MAX_TAP_FRAME_LEN));
        g.tap_send(&PLAIN_HDR, &frame(100));
        // Too small: the big frame is dropped, the buffer kept for the next.
        assert_eq!(g.rx_used(1), vec![(u32::from(small[0]), 112)]);

        let big_at = 0x90_0000;
        let big = g.offer_rx_chain(&[
            desc(big_at, 12, VRING_DESC_F_WRITE),
            desc(big_at + 12, 65550, VRING_DESC_F_WRITE),
        ]);
        g.net.queue_notify(0);
        g.tap_send(&tso4_hdr(), &frame(MAX_TAP_FRAME_LEN));
        assert_eq!(g.rx_used(1), vec![(u32::from(big), 65562)]);
        assert_eq!(rx_header(&mem, big_at), (1, VIRTIO_NET_HDR_GSO_TCPV4, 1));
        assert_eq!(
            read(&mem, big_at + 12, MAX_TAP_FRAME_LEN),
            frame(MAX_TAP_FRAME_LEN)
        );
        assert!(!g.net.backend_gone());
    }

    #[test]
    fn partial_checksum_from_the_tap_is_completed_for_a_driver_without_guest_csum() {
        let mem = memory();
        let mut g = Guest::over_tap(&mem, 0);
        let heads = g.add_rx_buffers(1, 2048);
        let (f, csum_offset, pseudo) = partial_ipv4(17, &[0xcd; 33]);
        // DATA_VALID too: a driver without GUEST_CSUM gets flags 0.
        let mut hdr = needs_csum_hdr(34, csum_offset);
        hdr[0] |= VIRTIO_NET_HDR_F_DATA_VALID;
        g.tap_send(&hdr, &f);

        let len = f.len();
        assert_eq!(g.rx_used(1), vec![(u32::from(heads[0]), 12 + len as u32)]);
        assert_eq!(rx_header(&mem, rx_buffer(heads[0])), (0, 0, 1));
        let got = read(&mem, rx_buffer(heads[0]) + 12, len);
        assert_eq!(folds_to(pseudo + reference_sum(&got[34..])), 0xffff);
    }

    #[test]
    fn partial_checksum_from_the_tap_passes_to_a_driver_with_guest_csum() {
        let mem = memory();
        let mut g = Guest::over_tap(&mem, 1 << VIRTIO_NET_F_GUEST_CSUM);
        let heads = g.add_rx_buffers(1, 2048);
        let (f, csum_offset, _) = partial_ipv4(6, b"x");
        g.tap_send(&needs_csum_hdr(34, csum_offset), &f);

        g.rx_used(1);
        let got = read(&mem, rx_buffer(heads[0]), NET_HDR_LEN + f.len());
        assert_eq!(got[..10], needs_csum_hdr(34, csum_offset)[..10]);
        assert_eq!(got[NET_HDR_LEN..], f, "left partial for the guest");
    }

    #[test]
    fn frames_from_the_tap_the_driver_cannot_take_are_dropped_and_the_next_arrives() {
        let mem = memory();
        // GUEST_CSUM only: no segments.
        let mut g = Guest::over_tap(&mem, 1 << VIRTIO_NET_F_GUEST_CSUM);
        let heads = g.add_rx_buffers(1, 0x1000);
        g.tap_send(&tso4_hdr(), &frame(3000));
        g.tap_send(&net_hdr(1, 0, [0, 0, 0xffff, 0xffff]), &frame(100));
        g.tap_send(&PLAIN_HDR, &frame(8));
        g.tap_send(&PLAIN_HDR, &frame(100));

        assert_eq!(g.rx_used(1), vec![(u32::from(heads[0]), 112)]);
        assert_eq!(read(&mem, rx_buffer(heads[0]) + 12, 100), frame(100));
        assert!(!g.net.backend_gone());
    }

    #[test]
    fn slow_tap_holds_back_transmit_chains_without_losing_frames() {
        let mem = memory();
        let mut g = Guest::over_tap(&mem, TAP_OFFLOADS);
        let count = 40;
        for i in 0..count {
            let mut f = frame(60_000);
            f[14] = i;
            g.send(&PLAIN_HDR, &f, 1);
        }
        // The socket's buffer and the pending limit hold well under 2.4 MB.
        assert!(wait_until(|| g.tx.used_idx(&mem) > 0));
        std::thread::sleep(QUIET);
        let held = g.tx.used_idx(&mem);
        assert!(held < u16::from(count), "all {held} chains taken");

        for i in 0..count {
            let (hdr, f) = g.tap_packet();
            assert_eq!((hdr, f.len(), f[14]), (PLAIN_HDR, 60_000, i));
        }
        assert_eq!(g.tx_used(usize::from(count)).len(), usize::from(count));
        assert!(!g.net.backend_gone());
    }

    #[test]
    fn tap_that_goes_away_shows_the_link_down() {
        let mem = memory();
        let mut g = Guest::over_tap(&mem, 1 << VIRTIO_NET_F_STATUS);
        g.peer.shutdown(Shutdown::Both).unwrap();

        assert!(wait_until(|| g.net.backend_gone()));
        assert!(wait_until(|| g.interrupt.config() == 1));
        g.send(&tso4_hdr(), &frame(3000), 1);
        assert_eq!(g.tx_used(1), vec![(0, 0)]);
    }

    #[test]
    fn tap_backend_survives_a_reset_with_a_frame_waiting() {
        let mem = memory();
        let mut g = Guest::over_tap(&mem, 0);
        g.tap_send(&PLAIN_HDR, &frame(500));
        std::thread::sleep(QUIET);
        g.reactivate(0);
        let heads = g.add_rx_buffers(1, 2048);

        assert_eq!(g.rx_used(1), vec![(u32::from(heads[0]), 512)]);
        assert_eq!(read(&mem, rx_buffer(heads[0]) + 12, 500), frame(500));
        assert!(!g.net.backend_gone());
    }
}
