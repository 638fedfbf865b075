//! A sequence of guest packets, raw descriptor chains and host-client moves
//! played against one vsock device, to reach the states a single packet
//! cannot (half-closes, credit exhaustion, timeouts).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    a3s_box::vmm::devices::virtio::vsock::fuzzing::guest_session(data);
});
