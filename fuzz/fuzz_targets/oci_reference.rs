//! Arbitrary strings as image references: parsing must refuse or accept without
//! panicking, and an accepted reference must print to a form that parses back to
//! itself, with a familiar name that names the same repository.

#![no_main]

use a3s_box::oci::reference::Reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(reference) = Reference::parse(input) else {
        return;
    };
    let printed = reference.to_string();
    let again = Reference::parse(&printed).expect("a normalized reference parses");
    assert_eq!(again, reference, "{printed} is a fixed point");
    let familiar = Reference::parse(&reference.familiar()).expect("a familiar name parses");
    assert_eq!(familiar.name(), reference.name());
    if let Some(tag) = &reference.tag {
        assert_eq!(reference.with_tag(tag).as_ref(), Ok(&reference));
    }
    let _ = (reference.api_host(), reference.is_loopback_registry());
});
