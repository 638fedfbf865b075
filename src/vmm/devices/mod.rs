//! Emulated devices: the 8250 UART and the virtio devices.

pub mod serial;
pub mod virtio;

use vmm_sys_util::eventfd::EventFd;

/// An interrupt line wired to the guest through an irqfd: writing the event raises it.
pub struct IrqLine(pub EventFd);

impl vm_superio::Trigger for IrqLine {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

impl virtio::IrqTrigger for IrqLine {
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}
