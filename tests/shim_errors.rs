//! Failures that need no working KVM: they must say what to do and exit 125.

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

#[test]
fn run_refuses_impossible_settings_before_any_box_exists() {
    let home = std::env::temp_dir().join(format!("a3s-run-refuses-{}", std::process::id()));
    let root = home.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--memory", "1k"], "too small"),
        (&["--cpus", "0"], "0 vCPUs"),
        (&["--cpus", "300"], "300 vCPUs"),
        (&["-w", "relative/dir"], "absolute path"),
    ];
    for (flags, says) in cases {
        let out = Command::new(BIN)
            .arg("run")
            .args(flags)
            .arg("--rootfs")
            .arg(&root)
            .arg("true")
            .env("A3S_BOX_HOME", &home)
            .env("A3S_BOX_KERNEL", "/nonexistent/vmlinux")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{flags:?}: {err}");
        assert!(err.contains(says), "{flags:?}: {err}");
    }
    let boxes = std::fs::read_dir(home.join("boxes")).map_or(0, |d| d.count());
    assert_eq!(boxes, 0, "a refused run left a box behind");
    std::fs::remove_dir_all(&home).unwrap();
}
