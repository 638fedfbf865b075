//! End to end: the shim boots our kernel with our initramfs on a real KVM.
//!
//! These boot real guests, so they need a KVM that can run Linux. They are ignored in
//! a plain `cargo test` and run inside `scripts/kvm-harness` by `scripts/test`.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use a3s_box::proto::READY_LINE;

/// An initramfs with our binary as /init and busybox, built once per test run.
fn busybox_initrd() -> &'static PathBuf {
    static INITRD: OnceLock<PathBuf> = OnceLock::new();
    INITRD.get_or_init(|| {
        let out = std::env::temp_dir().join(format!("a3s-e2e-initrd-{}.cpio", std::process::id()));
        let st = Command::new(common::bin())
            .args(["initramfs", "-o"])
            .arg(&out)
            .args(["--add", "/bin/busybox:/bin/busybox"])
            .status()
            .unwrap();
        assert!(st.success(), "a3s-box initramfs failed");
        out
    })
}

fn shim(args: &[&str]) -> Output {
    shim_with(&common::guest_kernel(), args)
}

fn shim_with(kernel: &std::path::Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(common::bin());
    cmd.arg("shim").arg("--kernel").arg(kernel).args(args);
    let out = common::output_within(&mut cmd, None, common::COMMAND_LIMIT, String::new);
    eprintln!(
        "shim {args:?} exited {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
#[ignore = "boots a real guest: run inside scripts/kvm-harness (scripts/test does)"]
fn boots_our_kernel_and_init_to_the_readiness_line() {
    let out = shim(&["--memory", "128m"]);
    assert!(
        stdout(&out).contains(READY_LINE),
        "no readiness line on the console"
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
#[ignore = "boots a real guest: run inside scripts/kvm-harness (scripts/test does)"]
fn workload_output_reaches_the_console() {
    let initrd = busybox_initrd().to_str().unwrap().to_owned();
    let out = shim(&[
        "--initrd",
        &initrd,
        "--",
        "/bin/busybox",
        "echo",
        "hello from the guest",
    ]);
    assert!(stdout(&out).contains("hello from the guest"));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
#[ignore = "boots a real guest: run inside scripts/kvm-harness (scripts/test does)"]
fn two_vcpus_are_two_cpus_in_the_guest() {
    let initrd = busybox_initrd().to_str().unwrap().to_owned();
    let script = "echo cpus=$(grep -c ^processor /proc/cpuinfo) online=$(cat /sys/devices/system/cpu/online)";
    let out = shim(&[
        "--cpus",
        "2",
        "--initrd",
        &initrd,
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        script,
    ]);
    let text = stdout(&out);
    assert!(
        text.contains("cpus=2 online=0-1"),
        "guest did not see 2 CPUs"
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
#[ignore = "boots a real guest: run inside scripts/kvm-harness (scripts/test does)"]
fn guest_exit_status_becomes_the_shim_exit_code() {
    let initrd = busybox_initrd().to_str().unwrap().to_owned();
    let out = shim(&[
        "--initrd",
        &initrd,
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
}

#[test]
#[ignore = "boots a real guest: run inside scripts/kvm-harness (scripts/test does)"]
fn missing_workload_command_exits_127() {
    let out = shim(&["--", "/no/such/program"]);
    assert_eq!(out.status.code(), Some(127));
}

#[test]
#[ignore = "boots a real guest: run inside scripts/kvm-harness (scripts/test does)"]
fn virtio_rng_feeds_the_guest_hwrng() {
    let initrd = busybox_initrd().to_str().unwrap().to_owned();
    let script = "cat /sys/class/misc/hw_random/rng_current; \
                  /bin/busybox dd if=/dev/hwrng bs=64 count=1 2>/dev/null | /bin/busybox od -An -tx1 | /bin/busybox tr -d ' \\n'; echo";
    let out = shim(&[
        "--initrd",
        &initrd,
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        script,
    ]);
    let text = stdout(&out);
    assert!(
        text.contains("virtio_rng"),
        "virtio-rng is not the guest's hwrng"
    );
    let hex = text
        .lines()
        .find(|l| l.len() == 128 && l.chars().all(|c| c.is_ascii_hexdigit()))
        .expect("64 bytes read from /dev/hwrng");
    assert_ne!(hex, "0".repeat(128));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
#[ignore = "boots a real guest: run inside scripts/kvm-harness (scripts/test does)"]
fn bzimage_boots_too() {
    let bz = common::guest_kernel().with_file_name("bzImage");
    let initrd = busybox_initrd().to_str().unwrap().to_owned();
    let out = shim_with(
        &bz,
        &[
            "--initrd",
            &initrd,
            "--",
            "/bin/busybox",
            "sh",
            "-c",
            "exit 3",
        ],
    );
    assert!(stdout(&out).contains(READY_LINE));
    assert_eq!(out.status.code(), Some(3));
}

#[test]
#[ignore = "boots a real guest: run inside scripts/kvm-harness (scripts/test does)"]
fn console_can_go_to_a_file() {
    let log = std::env::temp_dir().join(format!("a3s-e2e-console-{}.log", std::process::id()));
    let out = shim(&["--console", log.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(READY_LINE));
    assert!(!stdout(&out).contains(READY_LINE));
}
