//! Arbitrary bytes as one guest packet (header and payload) on the vsock
//! TX queue, sent on a stream the guest has open: the parser and the
//! device's handling must reject or carry out anything without panicking,
//! and hand the guest only well-formed packets.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    a3s_box::vmm::devices::virtio::vsock::fuzzing::guest_packet(data);
});
