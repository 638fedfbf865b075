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

/// A state directory on the VM's own /tmp with the image's archive loaded
/// into it, and the guest kernel: what a suite of Debian boxes runs against.
pub struct Loaded {
    pub home: crate::common_registry::TempDir,
    pub kernel: PathBuf,
}

impl Loaded {
    /// Loads the archive into a new state directory named after `tag`.
    pub fn new(tag: &str) -> Loaded {
        let kernel = crate::common::guest_kernel();
        let archive = debian_image_archive();
        let home = crate::common_registry::TempDir::new(tag);
        let out = crate::common::a3s_in(
            home.path(),
            &kernel,
            &["load", "-i", archive.to_str().unwrap()],
            None,
        );
        assert_eq!(out.status.code(), Some(0), "load failed");
        assert_eq!(
            crate::common_registry::stdout(&out),
            format!("Loaded image: {IMAGE}\n")
        );
        Loaded { home, kernel }
    }

    /// `a3s-box args` against this state directory.
    pub fn a3s(&self, args: &[&str]) -> std::process::Output {
        crate::common::a3s_in(self.home.path(), &self.kernel, args, None)
    }

    /// `a3s-box args`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.a3s(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            crate::common_registry::stderr(&out)
        );
        crate::common_registry::stdout(&out)
    }
}
