//! The Debian test image: built on the host by `scripts/build-test-image` (from
//! Debian's mirrors, which the KVM harness cannot reach) and named to the tests by
//! `A3S_TEST_DEBIAN_IMAGE`, as `scripts/test` does.
#![allow(dead_code)] // each suite uses its own subset

use std::path::PathBuf;

/// The name the archive loads as.
pub const IMAGE: &str = "localhost/a3s-test/debian:bookworm";

/// The image's oci-archive. Fails (never skips) when it is not there. The tests
/// read it where it is: over the harness's 9p share one file of this size takes
/// about half a second (it is trees of many small files that crawl there), less
/// than copying it into the VM first would.
pub fn debian_image_archive() -> PathBuf {
    let var = std::env::var_os("A3S_TEST_DEBIAN_IMAGE").filter(|v| !v.is_empty());
    let Some(path) = var.map(PathBuf::from) else {
        panic!(
            "A3S_TEST_DEBIAN_IMAGE is not set: build the image with scripts/build-test-image \
             and set the variable to the path it prints last (scripts/test does both)"
        );
    };
    assert!(
        path.is_file(),
        "A3S_TEST_DEBIAN_IMAGE is {}, which is not a file: run scripts/build-test-image \
         and set the variable to the path it prints last (inside scripts/kvm-harness, \
         /tmp is the VM's own: the host's is not there)",
        path.display()
    );
    path
}
