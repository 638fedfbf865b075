//! virtio-vsock, the socket device (virtio 1.2 §5.10), entirely in userspace:
//! guest stream sockets meet host Unix sockets in the hybrid model.
//!
//! - **Host to guest.** A host client connects to the device's Unix socket
//!   and writes `CONNECT <port>\n`. The device sends the guest a REQUEST for
//!   that port from a local port it allocates (1024 up, skipping busy ones);
//!   when the guest answers RESPONSE the client reads `OK <local_port>\n`,
//!   and from then on the socket is the stream. If the guest answers RST
//!   (nobody listens), does not answer in time, or the line is malformed or
//!   late, the client's socket is closed without a word: EOF before `OK`
//!   means "not connected".
//! - **Guest to host.** A guest connection to CID 2 port P is connected to
//!   the Unix socket `<uds_path>_P`; if that is missing or refuses, the
//!   guest gets RST.
//!
//! Credit-based flow control holds both ways: the guest never gets more
//! than its buf_alloc allows, and it never may send us more than the 256 KiB
//! per stream we buffer for a slow host reader (a guest that does is reset).
//!
//! `queue_notify` runs on the vCPU thread and never blocks; one worker
//! thread per activated device runs an epoll loop over the host sockets.
//! Both work on the same `muxer::Muxer` behind a mutex.

mod connection;
mod device;
mod event_handler;
#[doc(hidden)]
pub mod fuzzing;
mod muxer;
pub mod packet;
#[cfg(test)]
mod test_support;

pub use device::{Vsock, VsockError, DEFAULT_GUEST_CID, VIRTIO_ID_VSOCK};

/// Size of each of the three queues.
pub const QUEUE_SIZE: u16 = 256;
