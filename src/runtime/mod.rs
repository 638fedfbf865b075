//! Boxes on this host: their records under the state directory, names and IDs, and
//! the lifecycle the CLI (and later the CRI server) drive through the shim.

pub mod events;
pub mod files;
pub mod health;
pub mod layer;
pub mod lifecycle;
pub mod logs;
pub mod record;
pub mod rootfs;
pub mod security;
pub mod shim;
pub mod store;

pub use record::{BoxConfig, BoxState, Status};
pub use store::Store;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no such box: {0}")]
    NoSuchBox(String),
    #[error("box name {0:?} is already in use by {1}; remove that box or choose another name")]
    NameInUse(String, String),
    #[error("invalid box name {0:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit")]
    InvalidName(String),
    #[error("box {0} is running: stop it first, or remove it with -f")]
    Running(String),
    #[error("box {0} is not running")]
    NotRunning(String),
    #[error("the box could not start ({0})")]
    StartFailed(String),
    #[error("the box's VMM refused: {0}")]
    Shim(String),
    #[error("{0:?} matches more than one box; give more of the ID")]
    Ambiguous(String),
    #[error("box record {path} is unreadable")]
    Corrupt {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    pub(crate) fn io(what: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        RuntimeError::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }
}
