//! Arbitrary bytes as one host<->guest frame: the decoder must refuse or decode
//! anything without panicking, and what it decodes must encode back to a frame
//! that decodes to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = a3s_box::proto::decode_frame(data) {
        let mut again = Vec::new();
        a3s_box::proto::write_message(&mut again, &msg).expect("a decoded message re-encodes");
        let back = a3s_box::proto::decode_frame(&again).expect("a re-encoded frame decodes");
        assert_eq!(back, msg);
    }
});
