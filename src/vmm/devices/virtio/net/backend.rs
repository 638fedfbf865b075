//! The two ends a network device's frames can go to: a length-prefixed
//! stream (passt, QEMU's `-netdev stream`) or a tap device. Each keeps what
//! is in flight on it across resets.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use super::device::Shared;
use super::event_handler::{NetError, TX_PENDING_LIMIT};
use super::header::{
    self, Offloads, MAX_FRAME_LEN, MAX_TAP_FRAME_LEN, NET_HDR_LEN, VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_NONE,
};
use super::tap::TapBackend;

/// The stream's length prefix.
pub(super) const PREFIX_LEN: usize = 4;
/// Room for one whole frame after a partial one, so reading always progresses.
const STREAM_BUF_LEN: usize = 2 * (PREFIX_LEN + MAX_FRAME_LEN);

/// What became of asking the backend for a received frame.
pub(super) enum Rx {
    /// A frame waits in `rx_packet`.
    Ready,
    /// Nothing has arrived (whole).
    Empty,
    /// One packet arrived and was dropped; there may be more.
    Dropped,
}

pub(super) enum Backend {
    Stream(StreamBackend),
    Tap(TapBackend),
}

impl Backend {
    pub(super) fn stream(stream: UnixStream) -> Backend {
        Backend::Stream(StreamBackend::new(stream))
    }

    /// `is_tap` is false for a socket of one frame per message that stands
    /// in for a tap (tests, and a lost tap's placeholder).
    pub(super) fn tap(tap: File, is_tap: bool) -> Backend {
        Backend::Tap(TapBackend::new(tap, is_tap))
    }

    pub(super) fn is_tap(&self) -> bool {
        matches!(self, Backend::Tap(_))
    }

    /// A backend of the same kind that is connected to nothing, for a device
    /// whose backend was lost.
    pub(super) fn placeholder(tap: bool) -> io::Result<Backend> {
        let (ours, _) = UnixStream::pair()?;
        Ok(if tap {
            Backend::tap(File::from(std::os::fd::OwnedFd::from(ours)), false)
        } else {
            Backend::stream(ours)
        })
    }

    pub(super) fn as_raw_fd(&self) -> RawFd {
        match self {
            Backend::Stream(s) => s.stream.as_raw_fd(),
            Backend::Tap(t) => t.file().as_raw_fd(),
        }
    }

    /// Readies the backend for a driver that acked `features`.
    pub(super) fn prepare(&self, features: u64) -> io::Result<()> {
        match self {
            Backend::Stream(s) => s.stream.set_nonblocking(true),
            Backend::Tap(t) => t.prepare(Offloads::guest(features)),
        }
    }

    /// The longest frame a transmit chain may carry.
    pub(super) fn max_frame_len(&self) -> usize {
        match self {
            Backend::Stream(_) => MAX_FRAME_LEN,
            Backend::Tap(_) => MAX_TAP_FRAME_LEN,
        }
    }

    pub(super) fn tx_full(&self) -> bool {
        match self {
            Backend::Stream(s) => s.tx_pending.len() >= TX_PENDING_LIMIT,
            Backend::Tap(t) => t.tx_full(),
        }
    }

    pub(super) fn has_tx_pending(&self) -> bool {
        match self {
            Backend::Stream(s) => !s.tx_pending.is_empty(),
            Backend::Tap(t) => t.has_tx_pending(),
        }
    }

    pub(super) fn clear_tx(&mut self) {
        match self {
            Backend::Stream(s) => s.tx_pending.clear(),
            Backend::Tap(t) => t.clear_tx(),
        }
    }

    /// Checks a transmit chain (header and frame) against what the driver
    /// negotiated (`features`) and makes it what the backend takes: the
    /// stream wants the checksum complete, the tap takes the header.
    pub(super) fn check_tx(
        &self,
        head: u16,
        chain: &mut [u8],
        features: u64,
    ) -> Result<(), NetError> {
        match self {
            Backend::Stream(_) => prepare_stream_frame(head, chain),
            Backend::Tap(_) => header::check_tap_tx(head, chain, Offloads::host(features)),
        }
    }

    /// Queues a chain `check_tx` accepted; `chain` may be left with another
    /// buffer to reuse.
    pub(super) fn queue_tx(&mut self, chain: &mut Vec<u8>) {
        match self {
            Backend::Stream(s) => {
                let frame = &chain[NET_HDR_LEN..];
                // At most MAX_FRAME_LEN, checked by the caller.
                let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
                s.tx_pending.extend_from_slice(&len.to_be_bytes());
                s.tx_pending.extend_from_slice(frame);
            }
            Backend::Tap(t) => t.queue_tx(chain),
        }
    }

    /// Writes what is queued until the backend would block; an error means
    /// the backend is lost.
    pub(super) fn flush(&mut self, shared: &Shared) -> Result<(), NetError> {
        match self {
            Backend::Stream(s) => s.flush(),
            Backend::Tap(t) => t.flush(shared),
        }
    }

    /// Makes the next received frame ready, reading the backend only if
    /// `read`; an error means the backend is lost.
    pub(super) fn poll_rx(
        &mut self,
        read: bool,
        features: u64,
        shared: &Shared,
    ) -> Result<Rx, NetError> {
        match self {
            Backend::Stream(s) => s.poll_rx(read),
            Backend::Tap(t) => t.poll_rx(read, Offloads::guest(features), shared),
        }
    }

    /// The frame `poll_rx` made ready, with the header the guest gets.
    pub(super) fn rx_packet(&self) -> Option<([u8; NET_HDR_LEN], &[u8])> {
        match self {
            Backend::Stream(s) => {
                let (start, end) = s.peek_frame().ok()??;
                Some(([0; NET_HDR_LEN], &s.rx_buf[start..end]))
            }
            Backend::Tap(t) => t.rx_packet(),
        }
    }

    /// Done with the frame `rx_packet` shows.
    pub(super) fn consume_rx(&mut self) {
        match self {
            Backend::Stream(s) => {
                if let Ok(Some((_, end))) = s.peek_frame() {
                    s.consume_frame(end);
                }
            }
            Backend::Tap(t) => t.consume_rx(),
        }
    }
}

/// The backend stream with what is in flight on it, so a half-sent or
/// half-read frame does not break the framing.
pub(super) struct StreamBackend {
    stream: UnixStream,
    /// Length-prefixed frames not yet written to the stream.
    tx_pending: Vec<u8>,
    /// Bytes read from the stream; frames start at `rx_start`.
    rx_buf: Box<[u8]>,
    rx_start: usize,
    rx_end: usize,
}

impl StreamBackend {
    fn new(stream: UnixStream) -> StreamBackend {
        StreamBackend {
            stream,
            tx_pending: Vec::new(),
            rx_buf: vec![0; STREAM_BUF_LEN].into_boxed_slice(),
            rx_start: 0,
            rx_end: 0,
        }
    }

    /// The next whole frame's range in `rx_buf`, or `None` if it has not all
    /// arrived; a length that is no frame is an error.
    fn peek_frame(&self) -> Result<Option<(usize, usize)>, NetError> {
        let Some(prefix) = self.rx_buf[self.rx_start..self.rx_end].first_chunk::<PREFIX_LEN>()
        else {
            return Ok(None);
        };
        let len = usize::try_from(u32::from_be_bytes(*prefix)).unwrap_or(usize::MAX);
        if len == 0 || len > MAX_FRAME_LEN {
            return Err(NetError::Protocol(len));
        }
        let start = self.rx_start + PREFIX_LEN;
        Ok((self.rx_end - start >= len).then_some((start, start + len)))
    }

    fn consume_frame(&mut self, end: usize) {
        self.rx_start = end;
        if self.rx_start == self.rx_end {
            self.rx_start = 0;
            self.rx_end = 0;
        }
    }

    fn poll_rx(&mut self, read: bool) -> Result<Rx, NetError> {
        loop {
            match self.peek_frame() {
                Ok(Some(_)) => return Ok(Rx::Ready),
                Ok(None) => {
                    if !read || !self.fill()? {
                        return Ok(Rx::Empty);
                    }
                }
                Err(e) => {
                    // The framing is lost: nothing after this can be trusted.
                    self.rx_start = 0;
                    self.rx_end = 0;
                    return Err(e);
                }
            }
        }
    }

    /// Reads what the stream has; `Ok(false)` if it had nothing now.
    fn fill(&mut self) -> Result<bool, NetError> {
        if self.rx_buf.len() - self.rx_end < PREFIX_LEN + MAX_FRAME_LEN {
            self.rx_buf.copy_within(self.rx_start..self.rx_end, 0);
            self.rx_end -= self.rx_start;
            self.rx_start = 0;
        }
        loop {
            match (&self.stream).read(&mut self.rx_buf[self.rx_end..]) {
                Ok(0) => return Err(NetError::BackendEof),
                Ok(n) => {
                    self.rx_end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(NetError::BackendIo(e)),
            }
        }
    }

    /// Writes pending frames until the stream would block.
    fn flush(&mut self) -> Result<(), NetError> {
        while !self.tx_pending.is_empty() {
            // Rust programs ignore SIGPIPE, so a dead peer is an EPIPE error.
            match (&self.stream).write(&self.tx_pending) {
                Ok(0) => return Err(NetError::BackendEof),
                Ok(n) => {
                    self.tx_pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(NetError::BackendIo(e)),
            }
        }
        Ok(())
    }
}

/// Checks the header of a chain bound for the stream, which carries no
/// header: no segmentation, and a partial checksum is completed here.
fn prepare_stream_frame(head: u16, chain: &mut [u8]) -> Result<(), NetError> {
    let (hdr, frame) = chain.split_at_mut(NET_HDR_LEN);
    let gso_type = hdr[1];
    if gso_type != VIRTIO_NET_HDR_GSO_NONE {
        return Err(NetError::Gso { head, gso_type });
    }
    if hdr[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
        let csum_start = u16::from_le_bytes([hdr[6], hdr[7]]);
        let csum_offset = u16::from_le_bytes([hdr[8], hdr[9]]);
        if !header::complete_checksum(frame, usize::from(csum_start), usize::from(csum_offset)) {
            return Err(NetError::BadChecksumRange {
                head,
                csum_start,
                csum_offset,
                len: frame.len(),
            });
        }
    }
    Ok(())
}
