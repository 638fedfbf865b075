//! The vsock packet format (virtio 1.2 §5.10.6) and the checks every packet
//! from the guest goes through before the device acts on it.
//!
//! Everything here works on plain byte slices and guest memory, never on
//! sockets, so the fuzzer can drive it with arbitrary input.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory as _};

use crate::vmm::devices::virtio::GuestMemory;

/// Size of `struct virtio_vsock_hdr` on the wire.
pub const HEADER_LEN: usize = 44;
/// The host's CID (VMADDR_CID_HOST).
pub const HOST_CID: u64 = 2;
/// The only socket type we implement.
pub const TYPE_STREAM: u16 = 1;
/// Most payload one packet carries: Linux never sends more (64 KiB), and it
/// bounds what one descriptor chain can make the device copy.
pub const MAX_PAYLOAD: u32 = 64 * 1024;

/// SHUTDOWN flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;
/// Both SHUTDOWN flags: the sender is done with the connection.
pub const SHUTDOWN_BOTH: u32 = SHUTDOWN_RCV | SHUTDOWN_SEND;

/// Operation codes (virtio 1.2 §5.10.6).
pub mod op {
    pub const REQUEST: u16 = 1;
    pub const RESPONSE: u16 = 2;
    pub const RST: u16 = 3;
    pub const SHUTDOWN: u16 = 4;
    pub const RW: u16 = 5;
    pub const CREDIT_UPDATE: u16 = 6;
    pub const CREDIT_REQUEST: u16 = 7;
}

/// `struct virtio_vsock_hdr`, all fields little endian on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Header {
    pub fn from_bytes(b: &[u8; HEADER_LEN]) -> Header {
        let u64_at = |i: usize| {
            let mut v = [0; 8];
            v.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(v)
        };
        let u32_at = |i: usize| {
            let mut v = [0; 4];
            v.copy_from_slice(&b[i..i + 4]);
            u32::from_le_bytes(v)
        };
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0; HEADER_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// What a guest packet asks for, once validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Request,
    Response,
    Rst,
    /// Only the RCV and SEND bits are kept; the others are reserved.
    Shutdown(u32),
    Rw,
    CreditUpdate,
    CreditRequest,
}

/// A packet from the guest that passed every check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestPacket<'a> {
    pub hdr: Header,
    pub op: Op,
    /// Exactly `hdr.len` bytes; empty for every operation but RW.
    pub payload: &'a [u8],
}

/// Why a guest packet was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("the packet has {len} bytes, fewer than the 44-byte header")]
    Short { len: usize },
    #[error("the source CID is {got}, not the guest's {want}")]
    SrcCid { got: u64, want: u64 },
    #[error("the destination CID is {got}, not the host's 2")]
    DstCid { got: u64 },
    #[error("the header claims {claimed} payload bytes, the buffer holds {held}")]
    LenBeyondBuffer { claimed: u32, held: usize },
    #[error("the header claims {claimed} payload bytes, more than the 64 KiB limit")]
    TooLong { claimed: u32 },
    #[error("socket type {0} is not a stream")]
    UnknownType(u16),
    #[error("operation {0} is unknown")]
    UnknownOp(u16),
}

/// What the device does with a refused packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Nothing: the packet cannot be answered (no readable header, or
    /// addresses that are not this guest's and the host's).
    Drop,
    /// Reset the connection the header names: its stream can no longer be
    /// trusted, and the guest must learn that.
    Rst(Header),
}

impl PacketError {
    /// Headers that were readable and correctly addressed are answered with
    /// RST (the spec requires it for an unknown type); never an RST to an RST.
    pub fn refusal(&self, bytes: &[u8]) -> Refusal {
        match self {
            PacketError::Short { .. } | PacketError::SrcCid { .. } | PacketError::DstCid { .. } => {
                Refusal::Drop
            }
            _ => match header_of(bytes) {
                Some(hdr) if hdr.op != op::RST => Refusal::Rst(hdr),
                _ => Refusal::Drop,
            },
        }
    }
}

fn header_of(bytes: &[u8]) -> Option<Header> {
    let head = bytes.get(..HEADER_LEN)?;
    let head: &[u8; HEADER_LEN] = head.try_into().ok()?;
    Some(Header::from_bytes(head))
}

/// Checks one packet the guest put on the TX queue: `bytes` is the header
/// followed by whatever the descriptor chain held after it.
///
/// The payload is the first `hdr.len` bytes after the header; a longer chain
/// is fine (its tail is ignored), a shorter one is refused.
pub fn parse_guest_packet(bytes: &[u8], guest_cid: u64) -> Result<GuestPacket<'_>, PacketError> {
    let hdr = header_of(bytes).ok_or(PacketError::Short { len: bytes.len() })?;
    if hdr.src_cid != guest_cid {
        return Err(PacketError::SrcCid {
            got: hdr.src_cid,
            want: guest_cid,
        });
    }
    if hdr.dst_cid != HOST_CID {
        return Err(PacketError::DstCid { got: hdr.dst_cid });
    }
    if hdr.type_ != TYPE_STREAM {
        return Err(PacketError::UnknownType(hdr.type_));
    }
    if hdr.len > MAX_PAYLOAD {
        return Err(PacketError::TooLong { claimed: hdr.len });
    }
    let rest = &bytes[HEADER_LEN..];
    // `hdr.len` is at most MAX_PAYLOAD, so it fits any usize we run on.
    let payload_len = usize::try_from(hdr.len).unwrap_or(usize::MAX);
    let payload = rest
        .get(..payload_len)
        .ok_or(PacketError::LenBeyondBuffer {
            claimed: hdr.len,
            held: rest.len(),
        })?;
    let op = match hdr.op {
        op::REQUEST => Op::Request,
        op::RESPONSE => Op::Response,
        op::RST => Op::Rst,
        op::SHUTDOWN => Op::Shutdown(hdr.flags & SHUTDOWN_BOTH),
        op::RW => Op::Rw,
        op::CREDIT_UPDATE => Op::CreditUpdate,
        op::CREDIT_REQUEST => Op::CreditRequest,
        other => return Err(PacketError::UnknownOp(other)),
    };
    // Only RW carries data; a length on anything else is ignored, not trusted.
    let payload = if op == Op::Rw { payload } else { &[] };
    Ok(GuestPacket { hdr, op, payload })
}

/// Why a descriptor chain could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("descriptor chain {head} on the TX queue has a device-writable buffer")]
    WritableInTx { head: u16 },
    #[error("descriptor chain {head} on the RX queue has a read-only buffer")]
    ReadOnlyInRx { head: u16 },
    #[error("descriptor chain {head} has a buffer outside guest memory")]
    OutsideMemory { head: u16 },
    #[error("descriptor chain {head} on the RX queue holds {capacity} bytes, fewer than a header")]
    RxTooSmall { head: u16, capacity: u32 },
    #[error("could not write to guest memory")]
    GuestMemory(#[source] vm_memory::GuestMemoryError),
}

/// Copies a TX chain into `out`: the header and at most `MAX_PAYLOAD` bytes
/// after it (more than that is never needed to parse the packet).
pub fn read_tx_chain<M>(
    mem: &GuestMemory,
    chain: DescriptorChain<M>,
    out: &mut Vec<u8>,
) -> Result<(), ChainError>
where
    M: Deref,
    M::Target: vm_memory::GuestMemory,
{
    const LIMIT: usize = HEADER_LEN + MAX_PAYLOAD as usize;
    let head = chain.head_index();
    out.clear();
    for desc in chain {
        if desc.is_write_only() {
            return Err(ChainError::WritableInTx { head });
        }
        let room = LIMIT - out.len();
        let len = usize::try_from(desc.len()).map_or(room, |l| l.min(room));
        if len == 0 {
            continue;
        }
        let start = out.len();
        out.resize(start + len, 0);
        mem.read_slice(&mut out[start..], desc.addr())
            .map_err(|_| ChainError::OutsideMemory { head })?;
    }
    Ok(())
}

/// The writable buffers of one RX chain, checked against guest memory.
#[derive(Debug)]
pub struct RxBuffer {
    pub head: u16,
    segments: Vec<(GuestAddress, usize)>,
    /// Total writable bytes, at least `HEADER_LEN`.
    capacity: usize,
}

impl RxBuffer {
    pub fn from_chain<M>(mem: &GuestMemory, chain: DescriptorChain<M>) -> Result<Self, ChainError>
    where
        M: Deref,
        M::Target: vm_memory::GuestMemory,
    {
        // A header and the largest payload: bigger buffers are used only in part.
        const LIMIT: usize = HEADER_LEN + MAX_PAYLOAD as usize;
        let head = chain.head_index();
        let mut segments = Vec::new();
        let mut capacity = 0usize;
        for desc in chain {
            if !desc.is_write_only() {
                return Err(ChainError::ReadOnlyInRx { head });
            }
            let room = LIMIT - capacity;
            let len = usize::try_from(desc.len()).map_or(room, |l| l.min(room));
            if len == 0 {
                continue;
            }
            if !mem.check_range(desc.addr(), len) {
                return Err(ChainError::OutsideMemory { head });
            }
            segments.push((desc.addr(), len));
            capacity += len;
        }
        if capacity < HEADER_LEN {
            return Err(ChainError::RxTooSmall {
                head,
                capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
            });
        }
        Ok(RxBuffer {
            head,
            segments,
            capacity,
        })
    }

    /// Payload bytes that fit after the header.
    pub fn payload_room(&self) -> usize {
        self.capacity - HEADER_LEN
    }

    /// Writes the header (with `len` set to the payload's length) and the
    /// payload; returns the bytes written. `payload` must fit `payload_room`.
    pub fn write(
        &self,
        mem: &GuestMemory,
        hdr: &Header,
        payload: &[u8],
    ) -> Result<u32, ChainError> {
        debug_assert!(payload.len() <= self.payload_room());
        let mut hdr = *hdr;
        hdr.len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let head = hdr.to_bytes();
        let mut parts = [&head[..], payload];
        let mut written = 0usize;
        for &(addr, len) in &self.segments {
            let mut done = 0;
            while done < len {
                let Some(part) = parts.iter_mut().find(|p| !p.is_empty()) else {
                    break;
                };
                let n = part.len().min(len - done);
                let at = addr
                    .checked_add(u64::try_from(done).unwrap_or(u64::MAX))
                    .ok_or(ChainError::OutsideMemory { head: self.head })?;
                mem.write_slice(&part[..n], at)
                    .map_err(ChainError::GuestMemory)?;
                *part = &part[n..];
                done += n;
                written += n;
            }
        }
        Ok(u32::try_from(written).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST: u64 = 3;

    fn hdr(op: u16, len: u32) -> Header {
        Header {
            src_cid: GUEST,
            dst_cid: HOST_CID,
            src_port: 1000,
            dst_port: 4088,
            len,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: 4096,
            fwd_cnt: 0,
        }
    }

    fn packet(h: &Header, payload: &[u8]) -> Vec<u8> {
        let mut v = h.to_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn header_round_trips_through_its_wire_form() {
        let h = Header {
            src_cid: 0x0102_0304_0506_0708,
            dst_cid: 0x1112_1314_1516_1718,
            src_port: 0x2122_2324,
            dst_port: 0x3132_3334,
            len: 0x4142_4344,
            type_: 0x5152,
            op: 0x6162,
            flags: 0x7172_7374,
            buf_alloc: 0x8182_8384,
            fwd_cnt: 0x9192_9394,
        };
        let bytes = h.to_bytes();
        assert_eq!(Header::from_bytes(&bytes), h);
        // Little endian, fields in spec order.
        assert_eq!(bytes[0], 0x08);
        assert_eq!(bytes[16], 0x24);
        assert_eq!(bytes[28..32], [0x52, 0x51, 0x62, 0x61]);
        assert_eq!(bytes[40..44], [0x94, 0x93, 0x92, 0x91]);
    }

    #[test]
    fn rw_packet_yields_exactly_len_payload_bytes() {
        let bytes = packet(&hdr(op::RW, 3), b"abcdef");
        let p = parse_guest_packet(&bytes, GUEST).unwrap();
        assert_eq!(p.op, Op::Rw);
        assert_eq!(p.payload, b"abc");
        assert_eq!(p.hdr.dst_port, 4088);
    }

    #[test]
    fn every_known_op_parses() {
        for (code, want) in [
            (op::REQUEST, Op::Request),
            (op::RESPONSE, Op::Response),
            (op::RST, Op::Rst),
            (op::SHUTDOWN, Op::Shutdown(0)),
            (op::RW, Op::Rw),
            (op::CREDIT_UPDATE, Op::CreditUpdate),
            (op::CREDIT_REQUEST, Op::CreditRequest),
        ] {
            let bytes = packet(&hdr(code, 0), &[]);
            assert_eq!(parse_guest_packet(&bytes, GUEST).unwrap().op, want);
        }
    }

    #[test]
    fn shutdown_keeps_only_the_defined_flags() {
        let mut h = hdr(op::SHUTDOWN, 0);
        h.flags = 0xffff_fff2;
        let bytes = packet(&h, &[]);
        assert_eq!(
            parse_guest_packet(&bytes, GUEST).unwrap().op,
            Op::Shutdown(SHUTDOWN_SEND)
        );
    }

    #[test]
    fn payload_on_a_non_rw_packet_is_ignored() {
        let bytes = packet(&hdr(op::REQUEST, 4), b"junk");
        assert_eq!(parse_guest_packet(&bytes, GUEST).unwrap().payload, b"");
    }

    #[test]
    fn packet_shorter_than_a_header_is_dropped() {
        let bytes = packet(&hdr(op::RW, 0), &[]);
        for len in [0, 1, 43] {
            let err = parse_guest_packet(&bytes[..len], GUEST).unwrap_err();
            assert_eq!(err, PacketError::Short { len });
            assert_eq!(err.refusal(&bytes[..len]), Refusal::Drop);
        }
    }

    #[test]
    fn len_field_beyond_the_buffer_is_refused_with_rst() {
        let h = hdr(op::RW, 10);
        let bytes = packet(&h, b"short");
        let err = parse_guest_packet(&bytes, GUEST).unwrap_err();
        assert_eq!(
            err,
            PacketError::LenBeyondBuffer {
                claimed: 10,
                held: 5
            }
        );
        assert_eq!(err.refusal(&bytes), Refusal::Rst(h));
    }

    #[test]
    fn len_field_over_the_limit_is_refused() {
        let bytes = packet(&hdr(op::RW, u32::MAX), &[]);
        assert_eq!(
            parse_guest_packet(&bytes, GUEST).unwrap_err(),
            PacketError::TooLong { claimed: u32::MAX }
        );
    }

    #[test]
    fn wrong_cids_are_dropped_without_reply() {
        let mut h = hdr(op::REQUEST, 0);
        h.src_cid = 4;
        let bytes = packet(&h, &[]);
        let err = parse_guest_packet(&bytes, GUEST).unwrap_err();
        assert_eq!(err, PacketError::SrcCid { got: 4, want: 3 });
        assert_eq!(err.refusal(&bytes), Refusal::Drop);

        let mut h = hdr(op::REQUEST, 0);
        h.dst_cid = 1;
        let bytes = packet(&h, &[]);
        let err = parse_guest_packet(&bytes, GUEST).unwrap_err();
        assert_eq!(err, PacketError::DstCid { got: 1 });
        assert_eq!(err.refusal(&bytes), Refusal::Drop);
    }

    #[test]
    fn unknown_type_and_op_are_refused_with_rst() {
        let mut h = hdr(op::REQUEST, 0);
        h.type_ = 2;
        let bytes = packet(&h, &[]);
        let err = parse_guest_packet(&bytes, GUEST).unwrap_err();
        assert_eq!(err, PacketError::UnknownType(2));
        assert_eq!(err.refusal(&bytes), Refusal::Rst(h));

        let h = hdr(0, 0);
        let bytes = packet(&h, &[]);
        let err = parse_guest_packet(&bytes, GUEST).unwrap_err();
        assert_eq!(err, PacketError::UnknownOp(0));
        assert_eq!(err.refusal(&bytes), Refusal::Rst(h));
    }

    #[test]
    fn malformed_rst_is_never_answered_with_rst() {
        let mut h = hdr(op::RST, 0);
        h.type_ = 9;
        let bytes = packet(&h, &[]);
        let err = parse_guest_packet(&bytes, GUEST).unwrap_err();
        assert_eq!(err.refusal(&bytes), Refusal::Drop);
    }
}
