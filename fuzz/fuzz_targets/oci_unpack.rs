//! Arbitrary bytes as an image layer, applied on top of a root that holds symlinks
//! pointing out of it: unpacking must fail or succeed without panicking, and nothing
//! may appear outside the root, whatever the layer says.

#![no_main]

use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

use a3s_box::oci::unpack::{unpack_layer, UnpackOptions};
use libfuzzer_sys::fuzz_target;

/// `<scratch>/root` is unpacked into; `<scratch>/outside` must stay empty.
fn scratch() -> &'static PathBuf {
    static SCRATCH: OnceLock<PathBuf> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("a3s-fuzz-unpack-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("outside")).expect("scratch directory");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let scratch = scratch();
    let root = scratch.join("root");
    let outside = scratch.join("outside");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir(&root).expect("fresh root");
    // A lower layer's symlinks out of the root, for the fuzzed layer to try writing through.
    std::os::unix::fs::symlink(&outside, root.join("out")).expect("symlink");
    std::os::unix::fs::symlink("../outside", root.join("rel")).expect("symlink");
    std::os::unix::fs::symlink("/", root.join("slash")).expect("symlink");

    // Small limits keep each run fast; they are exercised the same way as the defaults.
    let opts = UnpackOptions {
        max_entry_size: 1 << 20,
        max_total: 8 << 20,
        ..UnpackOptions::default()
    };
    let _ = unpack_layer(data, None, &root, &opts);

    let escaped: Vec<_> = fs::read_dir(&outside).expect("outside").collect();
    assert!(
        escaped.is_empty(),
        "layer wrote outside the root: {escaped:?}"
    );
    let mut siblings: Vec<_> = fs::read_dir(scratch)
        .expect("scratch")
        .map(|e| e.expect("entry").file_name())
        .collect();
    siblings.sort();
    assert_eq!(
        siblings,
        ["outside", "root"],
        "layer wrote next to the root"
    );
});
