//! Where A3S Box keeps its state, and where it finds the guest kernel.

use std::path::{Path, PathBuf};

/// `A3S_BOX_HOME`, else `/var/lib/a3s-box` for root, else `~/.local/share/a3s-box`.
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("A3S_BOX_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/a3s-box");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from);
    home.join(".local/share/a3s-box")
}

/// The guest kernel to boot: an explicit path, else `A3S_BOX_KERNEL`, else the one
/// `scripts/build-kernel` cached under the state directory.
pub fn kernel(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    if let Some(p) = std::env::var_os("A3S_BOX_KERNEL").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    state_dir().join("kernel/current/vmlinux")
}
