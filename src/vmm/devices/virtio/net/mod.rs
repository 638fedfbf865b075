//! virtio-net, the network device (virtio 1.2 §5.1), entirely in userspace:
//! guest Ethernet frames go to and come from a stream socket that speaks the
//! protocol of QEMU's `-netdev stream` and passt — each frame preceded by its
//! length as a 4-byte big-endian integer, with no virtio header on the wire.
//!
//! Features offered: VERSION_1, MAC, STATUS, MRG_RXBUF and CSUM. With CSUM
//! the guest may hand us frames whose transport checksum is only partial
//! (NEEDS_CSUM); the device completes it in software, since the backend wants
//! whole frames. No TSO/UFO (HOST_TSO4/6, HOST_UFO and their GUEST_ twins):
//! the stream backend cannot take a segment larger than one frame, so the
//! guest must segment. No GUEST_CSUM: frames reach the guest as they came,
//! checksums included. No MQ, no EVENT_IDX, no control queue.
//!
//! `queue_notify` runs on the vCPU thread and only writes an `EventFd`; one
//! worker thread per activated device runs an epoll loop over the backend
//! socket and the queue kicks, and never blocks on the socket.

mod device;
mod event_handler;
#[doc(hidden)]
pub mod fuzzing;
#[cfg(test)]
mod test_support;

pub use device::{
    Net, VIRTIO_ID_NET, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};

/// Size of each of the two queues (receiveq 0, transmitq 1).
pub const QUEUE_SIZE: u16 = 256;
