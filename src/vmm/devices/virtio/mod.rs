//! virtio devices on the virtio-mmio transport (virtio 1.2, "modern" only).
//!
//! The transport (`mmio.rs`) owns the register state machine and the queues'
//! configuration; a device (`rng/`, later `vsock/`, `fs/`, …) only sees activated
//! queues and is told when the guest kicks one.

pub mod fs;
pub mod mmio;
pub mod net;
pub mod rng;
pub mod vsock;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

/// Feature bit (a bit number, as in `virtio-bindings`): the device follows
/// virtio 1.x rather than the legacy interface.
pub const VIRTIO_F_VERSION_1: u32 = 32;
/// Feature bit: the `used_event` / `avail_event` notification suppression.
pub const VIRTIO_RING_F_EVENT_IDX: u32 = 29;

/// Guest memory as the devices see it.
pub type GuestMemory = GuestMemoryMmap<()>;

/// Copies the part of a device's configuration space `config` that a driver read
/// at `offset` covers into `data`; bytes past its end read as zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}

/// Raises the interrupt line of one virtio-mmio device.
pub trait IrqTrigger: Send + Sync {
    fn trigger(&self) -> std::io::Result<()>;
}

/// Reasons a device could not be activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("the driver set up {got} queues, the device needs {want}")]
    QueueCount { want: usize, got: usize },
    #[error("the device could not start")]
    Io(#[source] std::io::Error),
}

/// The interrupt a device raises through the transport: it sets the
/// InterruptStatus bit and then triggers the line.
pub trait Interrupt: Send + Sync {
    /// A used buffer was added to a queue.
    fn signal_used_queue(&self);
    /// The device's configuration space changed.
    fn signal_config_change(&self);
}

/// One virtio device, independent of the transport.
pub trait VirtioDevice: Send {
    /// Device ID from the virtio spec (4 = entropy, 19 = vsock, 26 = fs).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits the device offers (must include VIRTIO_F_VERSION_1).
    /// Default: VIRTIO_F_VERSION_1 alone, which is all our devices need so far.
    fn device_features(&self) -> u64 {
        1 << VIRTIO_F_VERSION_1
    }
    /// The features the driver accepted (a subset of `device_features`).
    /// Default: nothing to change, for devices that offer VERSION_1 alone.
    fn ack_features(&mut self, _features: u64) {}
    /// Reads the device-specific configuration space at `offset`.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space at `offset`.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Called once the driver sets DRIVER_OK: the queues are ready to use.
    fn activate(
        &mut self,
        mem: GuestMemory,
        queues: Vec<Queue>,
        interrupt: Arc<dyn Interrupt>,
    ) -> Result<(), ActivateError>;
    /// The driver notified queue `index`.
    fn queue_notify(&mut self, index: u16);
    /// The driver reset the device; it returns to its pre-activation state.
    fn reset(&mut self);
}

/// Prints a guest-caused complaint to stderr once: the guest is untrusted and
/// could otherwise flood the host log.
#[derive(Debug, Default)]
pub(crate) struct WarnOnce(AtomicBool);

impl WarnOnce {
    pub(crate) fn warn(&self, who: fmt::Arguments<'_>, what: fmt::Arguments<'_>) {
        if !self.0.swap(true, Ordering::Relaxed) {
            eprintln!("a3s-box: {who}: {what} (further such messages suppressed)");
        }
    }

    /// Like `warn`, spelling out the error's causes too.
    pub(crate) fn warn_error(&self, who: fmt::Arguments<'_>, err: &dyn std::error::Error) {
        let mut what = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            what.push_str(": ");
            what.push_str(&cause.to_string());
            source = cause.source();
        }
        self.warn(who, format_args!("{what}"));
    }
}

/// Test support shared by the devices' tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::Interrupt;

    /// Counts the device's interrupts.
    #[derive(Default)]
    pub struct CountingInterrupt {
        used: AtomicUsize,
        config: AtomicUsize,
    }

    impl Interrupt for CountingInterrupt {
        fn signal_used_queue(&self) {
            self.used.fetch_add(1, Ordering::SeqCst);
        }

        fn signal_config_change(&self) {
            self.config.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl CountingInterrupt {
        pub fn used(&self) -> usize {
            self.used.load(Ordering::SeqCst)
        }

        pub fn config(&self) -> usize {
            self.config.load(Ordering::SeqCst)
        }
    }
}
