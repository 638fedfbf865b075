//! OCI images: references as Docker resolves them, the registry client (distribution
//! spec v2), the content store under the state directory, and the confined layer
//! unpacker that turns an image into a box root.

pub mod archive;
pub mod auth;
pub mod commit;
pub mod digest;
pub mod manifest;
pub mod push;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;

use std::path::{Path, PathBuf};

/// Everything that can go wrong on the image side, in words that say what to do.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("invalid image reference {0:?}")]
    Reference(String, #[source] reference::ReferenceError),
    #[error("invalid digest {0:?}: expected sha256: followed by 64 hex digits")]
    InvalidDigest(String),
    #[error("content of {what} does not match its digest: expected {expected}, got {actual}; the registry served corrupt or tampered data, nothing was stored")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error(
        "size of {what} is {actual} bytes, but its descriptor says {expected}; nothing was stored"
    )]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("malformed {what}")]
    Malformed {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("image {reference} has no manifest for platform {platform}; available: {available}")]
    NoMatchingPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("invalid platform {0:?}: use os/arch[/variant], e.g. linux/amd64")]
    InvalidPlatform(String),
    #[error("authentication to {registry} failed: {detail}; check the user name and password, then run `a3s-box login {registry}`")]
    Unauthorized { registry: String, detail: String },
    #[error("access to {0} was denied: the repository does not exist or you may not pull it; check the name or run `a3s-box login`")]
    Denied(String),
    #[error("manifest unknown: {0} does not exist in the registry; check the name and tag")]
    ManifestUnknown(String),
    #[error("registry {registry} answered {status} for {url}: {body}")]
    Status {
        registry: String,
        status: u16,
        url: String,
        body: String,
    },
    #[error("cannot reach registry {registry} after {attempts} attempts; check that it is running and reachable")]
    Unreachable {
        registry: String,
        attempts: u32,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("TLS with registry {registry} failed; if it uses a private CA put it in {hint}, or pass --tls-verify=false")]
    Tls {
        registry: String,
        hint: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("cannot read certificate {0}")]
    BadCertificate(PathBuf),
    #[error("no such image: {0}")]
    NoSuchImage(String),
    #[error("image {image} is in use by box {by}; remove the box first or use -f")]
    InUse { image: String, by: String },
    #[error("{0:?} matches more than one image; give more of the ID")]
    Ambiguous(String),
    #[error(
        "invalid size {0:?}: use a number with an optional unit b, k, m, g or t (e.g. 500m, 20g)"
    )]
    InvalidSize(String),
    #[error("cannot unpack layer {layer}")]
    Unpack {
        layer: String,
        #[source]
        source: unpack::UnpackError,
    },
    #[error("not logged in to {0}")]
    NotLoggedIn(String),
    #[error("{0}")]
    Usage(String),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state directory is unreadable")]
    Runtime(#[source] crate::runtime::RuntimeError),
}

impl OciError {
    pub(crate) fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        OciError::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, OciError>;
