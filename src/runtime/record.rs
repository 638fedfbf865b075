//! What is stored about a box: its configuration (written once by the CLI) and its
//! state (written by the shim as the box runs and ends).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How a box was asked to run. Written once, when the box is created.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BoxConfig {
    pub id: String,
    pub name: String,
    /// Root directory served to the guest over virtio-fs: the user's own
    /// directory, or an image's unpacked tree, shared read-only by every box
    /// of that image under the box's own `layer`.
    pub rootfs: String,
    /// The box's writable layer (its `upper/` and `work/` directories) over
    /// `rootfs`, when the root is an image's.
    #[serde(default)]
    pub layer: Option<String>,
    /// The image the root came from (its ID), when it came from one.
    #[serde(default)]
    pub image: Option<String>,
    /// The image as the user named it (`busybox`, `reg:5000/app:1`).
    #[serde(default)]
    pub image_name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Entrypoint followed by the command.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: String,
    pub user: Option<String>,
    pub hostname: String,
    pub tty: bool,
    pub stdin: bool,
    pub cpus: u32,
    pub memory: u64,
    pub kernel: String,
    pub auto_remove: bool,
    /// Seconds since the Unix epoch.
    pub created: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Exited,
}

/// Where a box is in its life. Written atomically by the shim (and by the CLI when it
/// finds a shim gone without a word).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BoxState {
    pub status: Status,
    /// The shim's process ID while it runs.
    pub pid: Option<u32>,
    pub started: Option<u64>,
    pub finished: Option<u64>,
    pub exit_code: Option<i32>,
    /// Why the box ended abnormally, in words.
    pub error: Option<String>,
}

impl BoxState {
    pub fn created() -> Self {
        BoxState {
            status: Status::Created,
            pid: None,
            started: None,
            finished: None,
            exit_code: None,
            error: None,
        }
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
