//! Shim failures that need no working KVM: they must say what to do and exit 125.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_a3s-box");

#[test]
fn missing_kernel_gives_a_clear_error_and_exit_125() {
    let out = Command::new(BIN)
        .args(["shim", "--kernel", "/nonexistent/vmlinux"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "stderr: {err}");
    assert!(err.contains("/nonexistent/vmlinux"), "stderr: {err}");
    assert!(err.contains("scripts/build-kernel"), "stderr: {err}");
}

#[test]
fn a_file_that_is_not_a_kernel_is_refused_with_exit_125() {
    let out = Command::new(BIN)
        .args(["shim", "--kernel", "/etc/hostname"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "stderr: {err}");
    assert!(err.contains("not a kernel"), "stderr: {err}");
}

#[test]
fn bad_memory_size_is_refused_with_exit_125() {
    let out = Command::new(BIN)
        .args(["shim", "--kernel", "/nonexistent", "--memory", "lots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--memory lots"));
}

#[test]
fn cri_personality_is_not_yet_available() {
    let out = Command::new(BIN).arg("cri").output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not yet available"));
}
