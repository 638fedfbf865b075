//! `struct virtio_net_hdr_mrg_rxbuf` (virtio 1.2 §5.1.6): the checks the
//! device makes on the guest's headers and on the tap's, and the Internet
//! checksum it completes where the other side cannot.

use super::device::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
};
use super::event_handler::NetError;

/// `struct virtio_net_hdr` with VERSION_1: num_buffers is always there.
pub(super) const NET_HDR_LEN: usize = 12;
/// Largest frame the stream carries: a 64 KiB IP packet and its Ethernet header.
pub(super) const MAX_FRAME_LEN: usize = 65535 + 14;
/// Largest frame on the tap: a TSO super-frame of 64 KiB plus its Ethernet
/// header; with the header, the 65562 bytes virtio 1.2 §5.1.6.3.1 asks of
/// receive buffers when GUEST_TSO is negotiated without MRG_RXBUF.
pub(super) const MAX_TAP_FRAME_LEN: usize = 65550;
/// An Ethernet header: anything shorter is not a frame.
pub(super) const MIN_FRAME_LEN: usize = 14;

/// virtio_net_hdr.flags: the transport checksum is partial.
pub(super) const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// virtio_net_hdr.flags: the device checked the checksums (receive only).
pub(super) const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;
/// virtio_net_hdr.gso_type values.
pub(super) const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
pub(super) const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
pub(super) const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// Added to a TCP gso_type: the segments carry ECN's CWR as one would.
pub(super) const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

fn le16(hdr: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([hdr[at], hdr[at + 1]])
}

/// What one direction of the link may carry, from the acked features.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Offloads {
    pub(super) csum: bool,
    pub(super) tso4: bool,
    pub(super) tso6: bool,
    pub(super) ecn: bool,
}

impl Offloads {
    /// What the driver may send: CSUM, HOST_TSO4/6, HOST_ECN.
    pub(super) fn host(features: u64) -> Offloads {
        Offloads::from_bits(
            features,
            [
                VIRTIO_NET_F_CSUM,
                VIRTIO_NET_F_HOST_TSO4,
                VIRTIO_NET_F_HOST_TSO6,
                VIRTIO_NET_F_HOST_ECN,
            ],
        )
    }

    /// What the driver takes: GUEST_CSUM, GUEST_TSO4/6, GUEST_ECN.
    pub(super) fn guest(features: u64) -> Offloads {
        Offloads::from_bits(
            features,
            [
                VIRTIO_NET_F_GUEST_CSUM,
                VIRTIO_NET_F_GUEST_TSO4,
                VIRTIO_NET_F_GUEST_TSO6,
                VIRTIO_NET_F_GUEST_ECN,
            ],
        )
    }

    /// Applies the dependencies of virtio 1.2 §5.1.3.1: TSO needs the
    /// checksum offload, ECN needs TSO.
    fn from_bits(features: u64, [csum, tso4, tso6, ecn]: [u32; 4]) -> Offloads {
        let has = |bit: u32| features & (1 << bit) != 0;
        let csum = has(csum);
        let tso4 = csum && has(tso4);
        let tso6 = csum && has(tso6);
        Offloads {
            csum,
            tso4,
            tso6,
            ecn: (tso4 || tso6) && has(ecn),
        }
    }

    /// Whether `gso_type` is one of these offloads (or none).
    pub(super) fn allows(self, gso_type: u8) -> bool {
        let ecn = gso_type & VIRTIO_NET_HDR_GSO_ECN != 0;
        let tcp = match gso_type & !VIRTIO_NET_HDR_GSO_ECN {
            VIRTIO_NET_HDR_GSO_NONE => return !ecn,
            VIRTIO_NET_HDR_GSO_TCPV4 => self.tso4,
            VIRTIO_NET_HDR_GSO_TCPV6 => self.tso6,
            _ => false,
        };
        tcp && (!ecn || self.ecn)
    }
}

/// The checksum range a NEEDS_CSUM header names, if it lies in `frame_len`.
fn checksum_range(hdr: &[u8], frame_len: usize) -> Result<(usize, usize), (u16, u16)> {
    let (start, offset) = (le16(hdr, 6), le16(hdr, 8));
    let field = usize::from(start) + usize::from(offset);
    if field + 2 > frame_len {
        return Err((start, offset));
    }
    Ok((usize::from(start), usize::from(offset)))
}

/// Checks the header of a transmit chain bound for the tap (`chain` holds
/// header and frame) against what the driver negotiated, and clears flags
/// that mean nothing on transmit. The kernel checks the header again: this
/// is so a bad one is the guest's fault in our log, and never reaches it.
pub(super) fn check_tap_tx(head: u16, chain: &mut [u8], host: Offloads) -> Result<(), NetError> {
    let (hdr, frame) = chain.split_at_mut(NET_HDR_LEN);
    hdr[0] &= VIRTIO_NET_HDR_F_NEEDS_CSUM;
    let len = frame.len();
    let gso_type = hdr[1];
    if !host.allows(gso_type) {
        return Err(NetError::Gso { head, gso_type });
    }
    let needs_csum = hdr[0] != 0;
    if needs_csum {
        checksum_range(hdr, len).map_err(|(csum_start, csum_offset)| {
            NetError::BadChecksumRange {
                head,
                csum_start,
                csum_offset,
                len,
            }
        })?;
    }
    let hdr_len = usize::from(le16(hdr, 2));
    if hdr_len > len {
        return Err(NetError::BadHeaderLength { head, hdr_len, len });
    }
    if gso_type != VIRTIO_NET_HDR_GSO_NONE {
        // virtio 1.2 §5.1.6.2.1: segmentation needs a partial checksum and an MSS.
        let gso_size = le16(hdr, 4);
        if !needs_csum || gso_size == 0 {
            return Err(NetError::BadGso {
                head,
                gso_type,
                gso_size,
            });
        }
    }
    Ok(())
}

/// Makes the header the tap gave a received frame (`packet` holds header
/// and frame) one the driver negotiated: a partial checksum is completed for
/// a driver without GUEST_CSUM, and a segmentation offload it did not ack
/// is an error (the frame is dropped). Frames the tap queued under an
/// earlier negotiation can carry either.
pub(super) fn fix_tap_rx(packet: &mut [u8], guest: Offloads) -> Result<(), NetError> {
    let (hdr, frame) = packet.split_at_mut(NET_HDR_LEN);
    let len = frame.len();
    let mut flags = hdr[0] & (VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID);
    if hdr[1] & !VIRTIO_NET_HDR_GSO_ECN == VIRTIO_NET_HDR_GSO_NONE {
        hdr[1] = VIRTIO_NET_HDR_GSO_NONE;
    }
    let gso_type = hdr[1];
    if !guest.allows(gso_type) {
        return Err(NetError::RxGso { gso_type });
    }
    if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
        let (start, offset) = checksum_range(hdr, len).map_err(|(csum_start, csum_offset)| {
            NetError::RxChecksumRange {
                csum_start,
                csum_offset,
                len,
            }
        })?;
        if !guest.csum {
            complete_checksum(frame, start, offset);
        }
    } else if gso_type != VIRTIO_NET_HDR_GSO_NONE {
        return Err(NetError::RxGso { gso_type });
    }
    if gso_type != VIRTIO_NET_HDR_GSO_NONE && le16(hdr, 4) == 0 {
        return Err(NetError::RxGso { gso_type });
    }
    // Without GUEST_CSUM the flags must be zero (virtio 1.2 §5.1.6.3.1).
    if !guest.csum {
        flags = 0;
    }
    hdr[0] = flags;
    Ok(())
}

/// Completes an Internet checksum (RFC 1071) the sender left partial: the
/// 16-bit field at `start + offset` holds the pseudo-header sum, and the
/// checksum covers `frame[start..]`. False if the field is out of bounds.
pub(super) fn complete_checksum(frame: &mut [u8], start: usize, offset: usize) -> bool {
    let field = start + offset;
    if field + 2 > frame.len() {
        return false;
    }
    let mut sum = !fold(ones_sum(&frame[start..]));
    // A zero UDP checksum means "none"; 0xffff is the same value in one's
    // complement, and what Linux sends for TCP and UDP alike.
    if sum == 0 {
        sum = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    true
}

/// The one's complement sum of `data` as big-endian 16-bit words, unfolded.
fn ones_sum(data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    let mut sum: u64 = words
        .by_ref()
        .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 bits.
    u16::try_from(sum).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::devices::virtio::net::test_support::net_hdr as hdr;

    const ALL: Offloads = Offloads {
        csum: true,
        tso4: true,
        tso6: true,
        ecn: true,
    };

    fn packet(h: [u8; NET_HDR_LEN], frame_len: usize) -> Vec<u8> {
        let mut p = h.to_vec();
        p.resize(NET_HDR_LEN + frame_len, 0);
        p
    }

    #[test]
    fn checksum_completion_matches_the_rfc_1071_example() {
        // RFC 1071 §3: these words sum to 0xddf2, so the checksum is 0x220d.
        let mut data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7, 0, 0];
        assert!(complete_checksum(&mut data, 0, 8));
        assert_eq!(data[8..], [0x22, 0x0d]);
    }

    #[test]
    fn checksum_field_outside_the_frame_is_refused() {
        let mut data = [0u8; 20];
        assert!(!complete_checksum(&mut data, 19, 0));
        assert!(!complete_checksum(&mut data, 0, 19));
        assert!(!complete_checksum(&mut data, 21, 0));
        assert!(!complete_checksum(&mut data, 0xffff, 0xffff));
        assert_eq!(data, [0; 20]);
        assert!(complete_checksum(&mut data, 10, 8));
    }

    #[test]
    fn offload_dependencies_of_the_spec_are_enforced() {
        let bits = |list: &[u32]| list.iter().fold(0u64, |f, &b| f | 1 << b);
        // TSO without the checksum offload, ECN without TSO: neither counts.
        let guest = Offloads::guest(bits(&[
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_GUEST_ECN,
        ]));
        assert_eq!(guest, Offloads::default());
        let host = Offloads::host(bits(&[VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_ECN]));
        assert_eq!(
            host,
            Offloads {
                csum: true,
                ..Offloads::default()
            }
        );
        let host = Offloads::host(bits(&[VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO6]));
        assert!(host.tso6 && !host.tso4 && !host.ecn);
    }

    #[test]
    fn tap_tx_accepts_what_was_negotiated() {
        let tso = hdr(1, VIRTIO_NET_HDR_GSO_TCPV4, [54, 1448, 34, 16]);
        check_tap_tx(0, &mut packet(tso, 3000), ALL).unwrap();
        let tso6_ecn = hdr(1, VIRTIO_NET_HDR_GSO_TCPV6 | 0x80, [74, 1428, 54, 16]);
        check_tap_tx(0, &mut packet(tso6_ecn, 3000), ALL).unwrap();
        check_tap_tx(0, &mut packet(hdr(0, 0, [0; 4]), 60), Offloads::default()).unwrap();
        // DATA_VALID means nothing on transmit and is not passed on.
        let mut p = packet(hdr(3, 0, [0, 0, 34, 6]), 60);
        check_tap_tx(0, &mut p, ALL).unwrap();
        assert_eq!(p[0], 1);
    }

    #[test]
    fn tap_tx_refuses_headers_outside_the_negotiation_or_the_frame() {
        let no_ecn = Offloads { ecn: false, ..ALL };
        let cases = [
            (
                hdr(1, VIRTIO_NET_HDR_GSO_TCPV4, [54, 1448, 34, 16]),
                3000,
                Offloads::default(),
            ),
            (
                hdr(1, VIRTIO_NET_HDR_GSO_TCPV4 | 0x80, [54, 1448, 34, 16]),
                3000,
                no_ecn,
            ),
            (hdr(0, VIRTIO_NET_HDR_GSO_ECN, [0; 4]), 60, ALL),
            // UDP (3), UDP_L4 (5) and unknown types were never offered.
            (hdr(1, 3, [42, 1400, 34, 6]), 3000, ALL),
            (hdr(1, 5, [42, 1400, 34, 6]), 3000, ALL),
            (hdr(1, 0x7f, [42, 1400, 34, 6]), 3000, ALL),
            // GSO without NEEDS_CSUM, or without an MSS.
            (
                hdr(0, VIRTIO_NET_HDR_GSO_TCPV4, [54, 1448, 0, 0]),
                3000,
                ALL,
            ),
            (hdr(1, VIRTIO_NET_HDR_GSO_TCPV4, [54, 0, 34, 16]), 3000, ALL),
            // hdr_len or the checksum field past the frame.
            (
                hdr(1, VIRTIO_NET_HDR_GSO_TCPV4, [3001, 1448, 34, 16]),
                3000,
                ALL,
            ),
            (hdr(0, 0, [0xffff, 0, 0, 0]), 60, ALL),
            (hdr(1, 0, [0, 0, 50, 9]), 60, ALL),
            (hdr(1, 0, [0, 0, 0xffff, 0xffff]), 60, ALL),
        ];
        for (i, (h, len, host)) in cases.into_iter().enumerate() {
            assert!(
                check_tap_tx(0, &mut packet(h, len), host).is_err(),
                "case {i}"
            );
        }
    }

    #[test]
    fn tap_rx_header_passes_to_a_driver_that_takes_the_offloads() {
        let tso = hdr(1, VIRTIO_NET_HDR_GSO_TCPV4, [54, 1448, 34, 16]);
        let mut p = packet(tso, 3000);
        fix_tap_rx(&mut p, ALL).unwrap();
        assert_eq!(p[..NET_HDR_LEN], tso);
        let mut valid = packet(hdr(2, 0, [0; 4]), 60);
        fix_tap_rx(&mut valid, ALL).unwrap();
        assert_eq!(valid[0], VIRTIO_NET_HDR_F_DATA_VALID);
    }

    #[test]
    fn tap_rx_completes_checksums_and_drops_segments_a_driver_cannot_take() {
        // NEEDS_CSUM for a driver without GUEST_CSUM: completed, flags cleared.
        let mut p = packet(hdr(3, 0, [0, 0, 0, 8]), 20);
        p[NET_HDR_LEN..NET_HDR_LEN + 8]
            .copy_from_slice(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
        fix_tap_rx(&mut p, Offloads::default()).unwrap();
        assert_eq!(p[0], 0);
        assert_ne!(p[NET_HDR_LEN + 8..NET_HDR_LEN + 10], [0, 0]);

        let tso = hdr(1, VIRTIO_NET_HDR_GSO_TCPV6, [74, 1428, 54, 16]);
        let csum_only = Offloads {
            csum: true,
            ..Offloads::default()
        };
        for (h, guest) in [
            (tso, csum_only),
            (
                hdr(1, VIRTIO_NET_HDR_GSO_TCPV4 | 0x80, [54, 1448, 34, 16]),
                Offloads { ecn: false, ..ALL },
            ),
            (hdr(1, 3, [42, 1400, 34, 6]), ALL),
            (hdr(0, VIRTIO_NET_HDR_GSO_TCPV4, [54, 1448, 0, 0]), ALL),
            (hdr(1, VIRTIO_NET_HDR_GSO_TCPV4, [54, 0, 34, 16]), ALL),
            (hdr(1, 0, [0, 0, 0xffff, 0xffff]), ALL),
        ] {
            assert!(fix_tap_rx(&mut packet(h, 3000), guest).is_err(), "{h:?}");
        }
    }
}
