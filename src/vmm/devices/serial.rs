//! The 8250 UART on COM1 (I/O ports 0x3f8-0x3ff, IRQ 4), from vm-superio. The
//! guest's console output goes to a file or to the shim's stdout.

use std::io::Write;

use vm_superio::Serial;
use vmm_sys_util::eventfd::EventFd;

use super::IrqLine;

pub const COM1_BASE: u16 = 0x3f8;
pub const COM1_LEN: u16 = 8;
pub const COM1_IRQ: u32 = 4;

/// A sink that writes every byte straight through, so nothing the guest printed is
/// lost if the VM ends abruptly.
pub struct ConsoleOut(pub Box<dyn Write + Send>);

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        self.0.flush()?;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

pub struct SerialDevice {
    uart: Serial<IrqLine, vm_superio::serial::NoEvents, ConsoleOut>,
}

impl SerialDevice {
    pub fn new(irq: EventFd, out: Box<dyn Write + Send>) -> Self {
        SerialDevice {
            uart: Serial::new(IrqLine(irq), ConsoleOut(out)),
        }
    }

    pub fn read(&mut self, offset: u8) -> u8 {
        self.uart.read(offset)
    }

    pub fn write(&mut self, offset: u8, value: u8) {
        // A console that can no longer be written must not stop the guest.
        let _ = self.uart.write(offset, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_written_to_thr_reach_the_console() {
        let out = Shared::default();
        let mut s = SerialDevice::new(EventFd::new(EFD_NONBLOCK).unwrap(), Box::new(out.clone()));
        for b in b"hi\n" {
            s.write(0, *b);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi\n");
    }

    #[test]
    fn line_status_reports_transmitter_empty() {
        let mut s = SerialDevice::new(
            EventFd::new(EFD_NONBLOCK).unwrap(),
            Box::new(std::io::sink()),
        );
        // LSR bit 5 (THR empty) and bit 6 (transmitter empty) let the driver write.
        assert_eq!(s.read(5) & 0x60, 0x60);
    }
}
