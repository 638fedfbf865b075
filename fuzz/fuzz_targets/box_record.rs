//! Arbitrary bytes as a box's record files (`config.json`, `state.json`):
//! reading must refuse or accept without panicking, and an accepted record
//! must write out to JSON that reads back as the same record. The same bytes
//! as a `--restart` value must parse or be refused, never panic.

#![no_main]

use a3s_box::runtime::record::RestartPolicy;
use a3s_box::runtime::{BoxConfig, BoxState};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cfg) = serde_json::from_slice::<BoxConfig>(data) {
        let written = serde_json::to_vec(&cfg).expect("a record serialises");
        let again: BoxConfig = serde_json::from_slice(&written).expect("a written record reads");
        assert_eq!(again, cfg);
    }
    if let Ok(st) = serde_json::from_slice::<BoxState>(data) {
        let written = serde_json::to_vec(&st).expect("a state serialises");
        let again: BoxState = serde_json::from_slice(&written).expect("a written state reads");
        assert_eq!(again, st);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(policy) = RestartPolicy::parse(s) {
            let _ = (policy.name(), policy.max_retries(), policy.restarts(1, 1));
        }
    }
});
