//! End to end: a Debian image made of Debian's own packages (scripts/build-test-image),
//! loaded from its oci-archive, runs Debian's python3 and nginx in boxes. Ignored in
//! a plain `cargo test`; `scripts/test` runs it inside `scripts/kvm-harness`.

mod common;
mod common_debian;
mod common_registry;

use std::path::PathBuf;
use std::process::Output;
use std::sync::OnceLock;

use common_debian::{debian_image_archive, IMAGE};
use common_registry::TempDir;

struct Env {
    home: TempDir,
    kernel: PathBuf,
}

/// A state directory on the VM's own /tmp with the archive loaded into it, once
/// for the whole test binary.
fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let kernel = common::guest_kernel();
        let archive = debian_image_archive();
        let home = TempDir::new("e2e-debian-home");
        let out = common::a3s_in(
            home.path(),
            &kernel,
            &["load", "-i", archive.to_str().unwrap()],
            None,
        );
        assert_eq!(out.status.code(), Some(0), "load failed");
        assert_eq!(stdout(&out), format!("Loaded image: {IMAGE}\n"));
        Env { home, kernel }
    })
}

fn a3s(args: &[&str]) -> Output {
    let e = env();
    common::a3s_in(e.home.path(), &e.kernel, args, None)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn loaded_debian_image_runs_its_python3() {
    let out = a3s(&["run", "--rm", IMAGE, "python3", "-c", "print(6*7)"]);
    assert_eq!(stdout(&out), "42\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn loaded_debian_image_has_its_nginx_on_the_image_path() {
    let out = a3s(&["run", "--rm", IMAGE, "sh", "-c", "nginx -v 2>&1"]);
    assert!(
        stdout(&out).starts_with("nginx version: nginx/"),
        "nginx -v said {:?}",
        stdout(&out)
    );
    assert_eq!(out.status.code(), Some(0));
}
