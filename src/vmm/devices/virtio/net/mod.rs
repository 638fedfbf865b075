//! virtio-net, the network device (virtio 1.2 §5.1), entirely in userspace,
//! over one of two backends:
//!
//! - **Stream** (`Net::new`, user-mode networking): a stream socket that
//!   speaks the protocol of QEMU's `-netdev stream` and passt — each frame
//!   preceded by its length as a 4-byte big-endian integer, with no virtio
//!   header on the wire. Features: VERSION_1, EVENT_IDX, MAC, STATUS,
//!   MRG_RXBUF and CSUM. With CSUM the guest may hand us frames whose transport checksum
//!   is only partial (NEEDS_CSUM); the device completes it in software,
//!   since the backend wants whole frames. No TSO: the stream cannot take a
//!   segment larger than one frame, so the guest must segment. No
//!   GUEST_CSUM: frames reach the guest as they came, checksums included.
//! - **Tap** (`Net::with_tap`, bridge networks): a Linux tap opened by
//!   [`open_tap`] with IFF_VNET_HDR, so every frame carries the 12-byte
//!   `virtio_net_hdr_mrg_rxbuf` both ways. Features: those of the stream plus
//!   GUEST_CSUM, GUEST_TSO4/6, GUEST_ECN, HOST_TSO4/6 and HOST_ECN. The
//!   guest's headers go to the tap as they are (after checks), the tap's
//!   reach the guest with num_buffers set, and on activation TUNSETOFFLOAD
//!   limits what the kernel sends to what the guest acked. No UFO or USO.
//!
//! Neither offers MQ or the control queue. The device asks for transmit
//! kicks only once it has drained the queue, and for receive kicks only
//! while a frame waits for buffers (EVENT_IDX, or the NO_NOTIFY flag when the
//! driver did not take it); interrupts follow the driver's `used_event`.
//!
//! `queue_notify` runs on the vCPU thread and only writes an `EventFd`; one
//! worker thread per activated device runs an epoll loop over the backend
//! and the queue kicks, and never blocks on the backend.

mod backend;
mod device;
mod event_handler;
#[doc(hidden)]
pub mod fuzzing;
mod header;
mod tap;
#[cfg(test)]
mod test_support;

pub use device::{
    Net, VIRTIO_ID_NET, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN,
    VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
pub use tap::open_tap;

/// Size of each of the two queues (receiveq 0, transmitq 1).
pub const QUEUE_SIZE: u16 = 256;
