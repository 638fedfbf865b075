//! Arbitrary bytes as a session against the virtio-net data path: guest
//! transmit chains (well formed, split, or raw descriptors), raw receive
//! chains, and a backend that sends frames, garbage, or hangs up. The device
//! must reject or carry out anything without panicking, hand the backend only
//! length-prefixed frames, and never overflow a receive buffer.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    a3s_box::vmm::devices::virtio::net::fuzzing::guest_session(data);
});
