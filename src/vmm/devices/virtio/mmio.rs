//! The virtio-mmio transport, version 2 ("modern") only (virtio 1.2 §4.2.2).
//!
//! The guest drives a device through a 0x1000-byte window: 32-bit control
//! registers below 0x100, the device's configuration space from 0x100 on. This
//! type keeps the register state, walks the device-status state machine and,
//! on DRIVER_OK, hands the device the queues the driver set up. Everything the
//! guest writes is untrusted: a bad access is ignored, never a panic.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;

use super::{
    ActivateError, GuestMemory, Interrupt, IrqTrigger, VirtioDevice, WarnOnce, VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
};

/// Size of one device's MMIO window.
pub const MMIO_WINDOW: u64 = 0x1000;

/// "virt" in little endian.
const MAGIC_VALUE: u32 = 0x7472_6976;
const VERSION: u32 = 2;
/// "A3SB".
const VENDOR_ID: u32 = 0x4133_5342;

/// Offset of the QueueNotify register in a device's window: the driver
/// writes a queue's index there to notify it.
pub const QUEUE_NOTIFY_OFFSET: u64 = reg::QUEUE_NOTIFY;

/// Register offsets (virtio 1.2 table 4.1).
mod reg {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const SHM_SEL: u64 = 0x0ac;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// Device status bits (virtio 1.2 §2.1).
mod status {
    pub const ACKNOWLEDGE: u32 = 0x01;
    pub const DRIVER: u32 = 0x02;
    pub const DRIVER_OK: u32 = 0x04;
    pub const FEATURES_OK: u32 = 0x08;
    pub const NEEDS_RESET: u32 = 0x40;
    pub const FAILED: u32 = 0x80;

    /// The states a driver walks through, one bit more each step (§3.1.1).
    pub const STEPS: [u32; 5] = [
        0,
        ACKNOWLEDGE,
        ACKNOWLEDGE | DRIVER,
        ACKNOWLEDGE | DRIVER | FEATURES_OK,
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    ];
}

/// InterruptStatus bit: a used buffer was added to a queue.
const INT_USED_BUFFER: u32 = 0x1;
/// InterruptStatus bit: the configuration space changed.
const INT_CONFIG_CHANGE: u32 = 0x2;

/// Why DRIVER_OK could not start the device.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    #[error("the device offers queue {index} with an invalid maximum size {max}")]
    QueueMaxSize { index: usize, max: u16 },
    #[error("queue {index} is ready but its size {size} is not a power of two up to {max}")]
    QueueSize { index: usize, size: u32, max: u16 },
    #[error("queue {index} has a misaligned ring address")]
    QueueAlignment { index: usize },
    #[error("queue {index} does not fit in guest memory")]
    QueueOutsideMemory { index: usize },
    #[error("queue {index} is ready but an earlier queue is not")]
    QueueGap { index: usize },
    #[error("the device did not activate")]
    Activate(#[source] ActivateError),
}

/// The interrupt state shared by the transport (which reads and acknowledges
/// it) and the activated device (which raises it).
struct InterruptState {
    status: AtomicU32,
    config_generation: AtomicU32,
    irq: Arc<dyn IrqTrigger>,
    device_type: u32,
    trigger_failed: WarnOnce,
}

impl InterruptState {
    fn raise(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        if let Err(e) = self.irq.trigger() {
            self.trigger_failed.warn(
                format_args!("virtio-mmio device type {}", self.device_type),
                format_args!("could not raise the interrupt: {e}"),
            );
        }
    }
}

impl Interrupt for InterruptState {
    fn signal_used_queue(&self) {
        self.raise(INT_USED_BUFFER);
    }

    fn signal_config_change(&self) {
        // The driver rereads the config space until the generation is stable.
        self.config_generation.fetch_add(1, Ordering::SeqCst);
        self.raise(INT_CONFIG_CHANGE);
    }
}

/// What the driver wrote for one queue; turned into a `Queue` at DRIVER_OK.
#[derive(Clone, Copy, Debug, Default)]
struct QueueRegs {
    size: u32,
    ready: bool,
    desc: u64,
    driver: u64,
    device: u64,
}

impl QueueRegs {
    fn build(
        &self,
        index: usize,
        max: u16,
        event_idx: bool,
        mem: &GuestMemory,
    ) -> Result<Queue, MmioError> {
        let mut queue = Queue::new(max).map_err(|_| MmioError::QueueMaxSize { index, max })?;
        let bad_size = || MmioError::QueueSize {
            index,
            size: self.size,
            max,
        };
        let size = u16::try_from(self.size).map_err(|_| bad_size())?;
        queue.try_set_size(size).map_err(|_| bad_size())?;
        let misaligned = |_| MmioError::QueueAlignment { index };
        queue
            .try_set_desc_table_address(GuestAddress(self.desc))
            .map_err(misaligned)?;
        queue
            .try_set_avail_ring_address(GuestAddress(self.driver))
            .map_err(misaligned)?;
        queue
            .try_set_used_ring_address(GuestAddress(self.device))
            .map_err(misaligned)?;
        queue.set_event_idx(event_idx);
        queue.set_ready(true);
        if !queue.is_valid(mem) {
            return Err(MmioError::QueueOutsideMemory { index });
        }
        Ok(queue)
    }
}

/// One virtio device behind a virtio-mmio register window.
pub struct MmioTransport {
    mem: GuestMemory,
    device: Box<dyn VirtioDevice>,
    interrupt: Arc<InterruptState>,
    queues: Vec<QueueRegs>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    /// The driver set a bit in a feature bank above 63, which we never offer.
    driver_features_unknown: bool,
    queue_sel: u32,
    activated: bool,
    bad_access: WarnOnce,
    setup_failed: WarnOnce,
}

impl MmioTransport {
    pub fn new(mem: GuestMemory, device: Box<dyn VirtioDevice>, irq: Arc<dyn IrqTrigger>) -> Self {
        let queues = vec![QueueRegs::default(); device.queue_max_sizes().len()];
        let interrupt = Arc::new(InterruptState {
            status: AtomicU32::new(0),
            config_generation: AtomicU32::new(0),
            irq,
            device_type: device.device_type(),
            trigger_failed: WarnOnce::default(),
        });
        MmioTransport {
            mem,
            device,
            interrupt,
            queues,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            driver_features_unknown: false,
            queue_sel: 0,
            activated: false,
            bad_access: WarnOnce::default(),
            setup_failed: WarnOnce::default(),
        }
    }

    /// A guest read of `data.len()` bytes at `offset` within the window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        // Whatever we do not fill reads as zero rather than stale host bytes.
        data.fill(0);
        if offset >= reg::CONFIG {
            if self.config_access_fits(offset, data.len()) {
                self.device.read_config(offset - reg::CONFIG, data);
            } else {
                self.warn_bad_access("read", offset, data.len());
            }
            return;
        }
        let value = match <&mut [u8; 4]>::try_from(&mut *data) {
            Ok(bytes) if offset.is_multiple_of(4) => self.read_register(offset).map(|v| (bytes, v)),
            _ => None,
        };
        match value {
            Some((bytes, v)) => *bytes = v.to_le_bytes(),
            None => self.warn_bad_access("read", offset, data.len()),
        }
    }

    /// A guest write of `data` at `offset` within the window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            if self.config_access_fits(offset, data.len()) {
                self.device.write_config(offset - reg::CONFIG, data);
            } else {
                self.warn_bad_access("write", offset, data.len());
            }
            return;
        }
        let handled = match <[u8; 4]>::try_from(data) {
            Ok(bytes) if offset.is_multiple_of(4) => {
                self.write_register(offset, u32::from_le_bytes(bytes))
            }
            _ => false,
        };
        if !handled {
            self.warn_bad_access("write", offset, data.len());
        }
    }

    fn config_access_fits(&self, offset: u64, len: usize) -> bool {
        u64::try_from(len)
            .ok()
            .and_then(|len| offset.checked_add(len))
            .is_some_and(|end| end <= MMIO_WINDOW)
    }

    fn warn_bad_access(&self, kind: &str, offset: u64, len: usize) {
        self.bad_access.warn(
            format_args!("virtio-mmio device type {}", self.device.device_type()),
            format_args!("ignoring a {len}-byte {kind} at offset {offset:#x}"),
        );
    }

    fn selected_queue(&self) -> Option<usize> {
        usize::try_from(self.queue_sel)
            .ok()
            .filter(|&i| i < self.queues.len())
    }

    fn read_register(&self, offset: u64) -> Option<u32> {
        let value = match offset {
            reg::MAGIC_VALUE => MAGIC_VALUE,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => {
                let features = self.device.device_features();
                match self.device_features_sel {
                    0 => low_half(features),
                    1 => high_half(features),
                    _ => 0,
                }
            }
            reg::QUEUE_NUM_MAX => self
                .selected_queue()
                .and_then(|i| self.device.queue_max_sizes().get(i).copied())
                .map_or(0, u32::from),
            reg::QUEUE_READY => self
                .selected_queue()
                .map_or(0, |i| u32::from(self.queues[i].ready)),
            reg::INTERRUPT_STATUS => self.interrupt.status.load(Ordering::SeqCst),
            reg::STATUS => self.status,
            // No shared memory regions: a length of -1 says the region is absent.
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH | reg::SHM_BASE_LOW | reg::SHM_BASE_HIGH => {
                u32::MAX
            }
            reg::CONFIG_GENERATION => self.interrupt.config_generation.load(Ordering::SeqCst),
            _ => return None,
        };
        Some(value)
    }

    /// Returns false for an offset that is not a writable register.
    fn write_register(&mut self, offset: u64, value: u32) -> bool {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES => self.write_driver_features(value),
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM => self.update_queue(|q| q.size = value),
            reg::QUEUE_READY => self.update_queue(|q| q.ready = value == 1),
            reg::QUEUE_DESC_LOW => self.update_queue(|q| set_low_half(&mut q.desc, value)),
            reg::QUEUE_DESC_HIGH => self.update_queue(|q| set_high_half(&mut q.desc, value)),
            reg::QUEUE_DRIVER_LOW => self.update_queue(|q| set_low_half(&mut q.driver, value)),
            reg::QUEUE_DRIVER_HIGH => self.update_queue(|q| set_high_half(&mut q.driver, value)),
            reg::QUEUE_DEVICE_LOW => self.update_queue(|q| set_low_half(&mut q.device, value)),
            reg::QUEUE_DEVICE_HIGH => self.update_queue(|q| set_high_half(&mut q.device, value)),
            reg::QUEUE_NOTIFY => self.queue_notify(value),
            reg::INTERRUPT_ACK => {
                self.interrupt.status.fetch_and(!value, Ordering::SeqCst);
            }
            reg::STATUS => self.write_status(value),
            // There are no shared memory regions to select.
            reg::SHM_SEL => {}
            _ => return false,
        }
        true
    }

    fn write_driver_features(&mut self, value: u32) {
        // Features are fixed once FEATURES_OK is set (§2.2.1), until a reset.
        if self.status & (status::FEATURES_OK | status::FAILED) != 0 {
            return;
        }
        match self.driver_features_sel {
            0 => set_low_half(&mut self.driver_features, value),
            1 => set_high_half(&mut self.driver_features, value),
            _ => self.driver_features_unknown |= value != 0,
        }
    }

    /// Queue registers are the driver's to change only until DRIVER_OK (§4.2.3.2).
    fn update_queue(&mut self, update: impl FnOnce(&mut QueueRegs)) {
        if self.status & (status::DRIVER_OK | status::FAILED) != 0 {
            return;
        }
        if let Some(i) = self.selected_queue() {
            update(&mut self.queues[i]);
        }
    }

    /// The number of queues the device has.
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// The driver wrote `value` to QueueNotify: as a register write, or seen
    /// by the hypervisor instead of a vCPU exit (see [`QUEUE_NOTIFY_OFFSET`]).
    pub fn queue_notify(&mut self, value: u32) {
        if !self.activated {
            return;
        }
        if let Ok(index) = u16::try_from(value) {
            if usize::from(index) < self.queues.len() {
                self.device.queue_notify(index);
            }
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        if self.status & status::FAILED != 0 {
            // The driver gave up; only a reset brings the device back.
            return;
        }
        // Giving up is always allowed, whatever else the value says.
        if value & status::FAILED != 0 {
            self.status |= status::FAILED;
            return;
        }
        // NEEDS_RESET is the device's bit; the driver echoes it back when it
        // adds a bit of its own.
        let requested = value & !status::NEEDS_RESET;
        let current = self.status & !status::NEEDS_RESET;
        if requested & current != current {
            self.warn_bad_status(value);
            return;
        }
        let (Some(from), Some(to)) = (step_of(current), step_of(requested)) else {
            self.warn_bad_status(value);
            return;
        };
        // A driver may take several steps in one write; each is checked in turn.
        for pair in status::STEPS.windows(2).take(to).skip(from) {
            let bit = pair[1] & !pair[0];
            match bit {
                status::FEATURES_OK => {
                    if !self.accept_features() {
                        return;
                    }
                    self.status |= bit;
                }
                status::DRIVER_OK => {
                    self.status |= bit;
                    if let Err(e) = self.activate() {
                        self.setup_failed.warn_error(
                            format_args!("virtio-mmio device type {}", self.device.device_type()),
                            &e,
                        );
                        self.status |= status::NEEDS_RESET;
                        self.interrupt.signal_config_change();
                    }
                }
                _ => self.status |= bit,
            }
        }
    }

    fn warn_bad_status(&self, value: u32) {
        self.bad_access.warn(
            format_args!("virtio-mmio device type {}", self.device.device_type()),
            format_args!("ignoring status {value:#x} written over {:#x}", self.status),
        );
    }

    /// Negotiation succeeds if the driver took only offered features and
    /// VERSION_1 (we offer no legacy interface).
    fn accept_features(&mut self) -> bool {
        let offered = self.device.device_features();
        let wanted = self.driver_features;
        let version_1 = 1u64 << VIRTIO_F_VERSION_1;
        if self.driver_features_unknown || wanted & !offered != 0 || wanted & version_1 == 0 {
            self.setup_failed.warn(
                format_args!("virtio-mmio device type {}", self.device.device_type()),
                format_args!("refusing driver features {wanted:#x} (offered {offered:#x})"),
            );
            return false;
        }
        self.device.ack_features(wanted);
        true
    }

    fn activate(&mut self) -> Result<(), MmioError> {
        let queues = self.build_queues()?;
        let interrupt: Arc<dyn Interrupt> = self.interrupt.clone();
        self.device
            .activate(self.mem.clone(), queues, interrupt)
            .map_err(MmioError::Activate)?;
        self.activated = true;
        Ok(())
    }

    /// The device gets the queues the driver made ready, which must be the
    /// first ones: a driver that does not use a queue leaves out the last.
    fn build_queues(&self) -> Result<Vec<Queue>, MmioError> {
        let ready = self.queues.iter().take_while(|q| q.ready).count();
        if let Some(gap) = self.queues[ready..].iter().position(|q| q.ready) {
            return Err(MmioError::QueueGap { index: ready + gap });
        }
        let event_idx = self.driver_features & (1u64 << VIRTIO_RING_F_EVENT_IDX) != 0;
        self.queues[..ready]
            .iter()
            .zip(self.device.queue_max_sizes())
            .enumerate()
            .map(|(index, (regs, &max))| regs.build(index, max, event_idx, &self.mem))
            .collect()
    }

    /// Writing 0 to Status: device and transport return to their initial state.
    fn reset(&mut self) {
        self.device.reset();
        self.activated = false;
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.driver_features_unknown = false;
        self.queue_sel = 0;
        self.queues.fill(QueueRegs::default());
        self.interrupt.status.store(0, Ordering::SeqCst);
    }
}

fn step_of(state: u32) -> Option<usize> {
    status::STEPS.iter().position(|&s| s == state)
}

fn low_half(v: u64) -> u32 {
    // Truncation is the point: the low 32 bits.
    (v & 0xffff_ffff) as u32
}

fn high_half(v: u64) -> u32 {
    low_half(v >> 32)
}

fn set_low_half(v: &mut u64, low: u32) {
    *v = (*v & !0xffff_ffff) | u64::from(low);
}

fn set_high_half(v: &mut u64, high: u32) {
    *v = (*v & 0xffff_ffff) | (u64::from(high) << 32);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestMemoryMmap;

    use super::*;

    const VERSION_1: u64 = 1 << VIRTIO_F_VERSION_1;
    /// An extra feature the test device offers, in the low bank.
    const EXTRA_LOW: u64 = 1 << 5;
    const TEST_DEVICE_TYPE: u32 = 42;
    const MEM_SIZE: usize = 0x10000;

    #[derive(Default)]
    struct Record {
        acked_features: Option<u64>,
        activations: Vec<Vec<QueueSnapshot>>,
        notified: Vec<u16>,
        resets: usize,
        config_writes: Vec<(u64, Vec<u8>)>,
        interrupt: Option<Arc<dyn Interrupt>>,
    }

    #[derive(Debug, PartialEq)]
    struct QueueSnapshot {
        size: u16,
        desc: u64,
        avail: u64,
        used: u64,
        event_idx: bool,
    }

    /// A device that records what the transport asks of it.
    struct RecordingDevice {
        max_sizes: Vec<u16>,
        features: u64,
        record: Arc<Mutex<Record>>,
    }

    impl VirtioDevice for RecordingDevice {
        fn device_type(&self) -> u32 {
            TEST_DEVICE_TYPE
        }

        fn queue_max_sizes(&self) -> &[u16] {
            &self.max_sizes
        }

        fn device_features(&self) -> u64 {
            self.features
        }

        fn ack_features(&mut self, features: u64) {
            self.record.lock().unwrap().acked_features = Some(features);
        }

        fn read_config(&self, offset: u64, data: &mut [u8]) {
            // Byte i of the config space reads as 0xc0 + i.
            for (i, b) in data.iter_mut().enumerate() {
                *b = 0xc0 + u8::try_from(offset).unwrap() + u8::try_from(i).unwrap();
            }
        }

        fn write_config(&mut self, offset: u64, data: &[u8]) {
            let mut record = self.record.lock().unwrap();
            record.config_writes.push((offset, data.to_vec()));
        }

        fn activate(
            &mut self,
            _mem: GuestMemory,
            queues: Vec<Queue>,
            interrupt: Arc<dyn Interrupt>,
        ) -> Result<(), ActivateError> {
            if queues.len() != self.max_sizes.len() {
                return Err(ActivateError::QueueCount {
                    want: self.max_sizes.len(),
                    got: queues.len(),
                });
            }
            let mut record = self.record.lock().unwrap();
            record.activations.push(
                queues
                    .iter()
                    .map(|q| QueueSnapshot {
                        size: q.size(),
                        desc: q.desc_table(),
                        avail: q.avail_ring(),
                        used: q.used_ring(),
                        event_idx: q.event_idx_enabled(),
                    })
                    .collect(),
            );
            record.interrupt = Some(interrupt);
            Ok(())
        }

        fn queue_notify(&mut self, index: u16) {
            self.record.lock().unwrap().notified.push(index);
        }

        fn reset(&mut self) {
            let mut record = self.record.lock().unwrap();
            record.resets += 1;
            record.interrupt = None;
        }
    }

    #[derive(Default)]
    struct CountingIrq(AtomicUsize);

    impl IrqTrigger for CountingIrq {
        fn trigger(&self) -> std::io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    struct Harness {
        mem: GuestMemory,
        transport: MmioTransport,
        record: Arc<Mutex<Record>>,
        irq: Arc<CountingIrq>,
    }

    impl Harness {
        fn new(max_sizes: &[u16]) -> Self {
            Self::with_features(max_sizes, VERSION_1 | EXTRA_LOW)
        }

        fn with_features(max_sizes: &[u16], features: u64) -> Self {
            let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
            let record = Arc::new(Mutex::new(Record::default()));
            let irq = Arc::new(CountingIrq::default());
            let device = RecordingDevice {
                max_sizes: max_sizes.to_vec(),
                features,
                record: record.clone(),
            };
            let transport = MmioTransport::new(mem.clone(), Box::new(device), irq.clone());
            Harness {
                mem,
                transport,
                record,
                irq,
            }
        }

        fn read(&mut self, offset: u64) -> u32 {
            let mut data = [0xffu8; 4];
            self.transport.read(offset, &mut data);
            u32::from_le_bytes(data)
        }

        fn write(&mut self, offset: u64, value: u32) {
            self.transport.write(offset, &value.to_le_bytes());
        }

        fn status(&mut self) -> u32 {
            self.read(reg::STATUS)
        }

        fn add_status(&mut self, bit: u32) {
            let s = self.status();
            self.write(reg::STATUS, s | bit);
        }

        /// ACKNOWLEDGE, DRIVER, the driver's features, FEATURES_OK.
        fn negotiate(&mut self, features: u64) {
            self.add_status(status::ACKNOWLEDGE);
            self.add_status(status::DRIVER);
            self.write(reg::DRIVER_FEATURES_SEL, 0);
            self.write(reg::DRIVER_FEATURES, low_half(features));
            self.write(reg::DRIVER_FEATURES_SEL, 1);
            self.write(reg::DRIVER_FEATURES, high_half(features));
            self.add_status(status::FEATURES_OK);
        }

        fn set_queue(&mut self, index: u32, size: u32, desc: u64, driver: u64, device: u64) {
            self.write(reg::QUEUE_SEL, index);
            self.write(reg::QUEUE_NUM, size);
            self.write(reg::QUEUE_DESC_LOW, low_half(desc));
            self.write(reg::QUEUE_DESC_HIGH, high_half(desc));
            self.write(reg::QUEUE_DRIVER_LOW, low_half(driver));
            self.write(reg::QUEUE_DRIVER_HIGH, high_half(driver));
            self.write(reg::QUEUE_DEVICE_LOW, low_half(device));
            self.write(reg::QUEUE_DEVICE_HIGH, high_half(device));
        }

        /// Places queue `index` of `size` entries at `start` and marks it ready.
        fn set_mock_queue(&mut self, index: u32, start: u64, size: u16) -> QueueSnapshot {
            let mem = self.mem.clone();
            let vq = MockSplitQueue::create(&mem, GuestAddress(start), size);
            let snapshot = QueueSnapshot {
                size,
                desc: vq.desc_table_addr().0,
                avail: vq.avail_addr().0,
                used: vq.used_addr().0,
                event_idx: false,
            };
            self.set_queue(
                index,
                u32::from(size),
                snapshot.desc,
                snapshot.avail,
                snapshot.used,
            );
            self.write(reg::QUEUE_READY, 1);
            snapshot
        }

        fn activations(&self) -> usize {
            self.record.lock().unwrap().activations.len()
        }

        fn irqs(&self) -> usize {
            self.irq.0.load(Ordering::SeqCst)
        }
    }

    const READY: u32 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;

    #[test]
    fn identification_registers_describe_a_v2_device() {
        let mut h = Harness::new(&[16]);
        assert_eq!(h.read(reg::MAGIC_VALUE), 0x7472_6976);
        assert_eq!(h.read(reg::VERSION), 2);
        assert_eq!(h.read(reg::DEVICE_ID), TEST_DEVICE_TYPE);
        assert_eq!(h.read(reg::VENDOR_ID), VENDOR_ID);
    }

    #[test]
    fn device_features_are_read_through_both_selector_halves() {
        let mut h = Harness::new(&[16]);
        h.write(reg::DEVICE_FEATURES_SEL, 0);
        assert_eq!(h.read(reg::DEVICE_FEATURES), low_half(EXTRA_LOW));
        h.write(reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(h.read(reg::DEVICE_FEATURES), 1); // VERSION_1 is bit 32
        h.write(reg::DEVICE_FEATURES_SEL, 2);
        assert_eq!(h.read(reg::DEVICE_FEATURES), 0);
    }

    #[test]
    fn driver_features_from_both_halves_are_acked_on_features_ok() {
        let mut h = Harness::new(&[16]);
        h.negotiate(VERSION_1 | EXTRA_LOW);
        assert_eq!(h.status(), READY);
        assert_eq!(
            h.record.lock().unwrap().acked_features,
            Some(VERSION_1 | EXTRA_LOW)
        );
    }

    #[test]
    fn features_ok_refused_without_version_1() {
        let mut h = Harness::new(&[16]);
        h.negotiate(EXTRA_LOW);
        assert_eq!(h.status(), status::ACKNOWLEDGE | status::DRIVER);
        assert_eq!(h.record.lock().unwrap().acked_features, None);
    }

    #[test]
    fn features_ok_refused_for_an_unoffered_feature() {
        for extra in [1u64 << 6, 1 << 40] {
            let mut h = Harness::new(&[16]);
            h.negotiate(VERSION_1 | extra);
            assert_eq!(h.status(), status::ACKNOWLEDGE | status::DRIVER);
            assert_eq!(h.record.lock().unwrap().acked_features, None);
        }
    }

    #[test]
    fn features_ok_refused_for_a_feature_above_bit_63() {
        let mut h = Harness::new(&[16]);
        h.add_status(status::ACKNOWLEDGE);
        h.add_status(status::DRIVER);
        h.write(reg::DRIVER_FEATURES_SEL, 2);
        h.write(reg::DRIVER_FEATURES, 1);
        h.write(reg::DRIVER_FEATURES_SEL, 1);
        h.write(reg::DRIVER_FEATURES, 1);
        h.add_status(status::FEATURES_OK);
        assert_eq!(h.status(), status::ACKNOWLEDGE | status::DRIVER);
    }

    #[test]
    fn driver_features_are_frozen_after_features_ok() {
        let mut h = Harness::new(&[16]);
        h.negotiate(VERSION_1);
        h.write(reg::DRIVER_FEATURES_SEL, 0);
        h.write(reg::DRIVER_FEATURES, u32::MAX);
        let q = h.set_mock_queue(0, 0, 16);
        h.add_status(status::DRIVER_OK);
        assert_eq!(h.record.lock().unwrap().acked_features, Some(VERSION_1));
        assert_eq!(h.record.lock().unwrap().activations, vec![vec![q]]);
    }

    #[test]
    fn full_init_sequence_activates_the_device_with_the_driver_queues() {
        let mut h = Harness::new(&[16, 8]);
        h.negotiate(VERSION_1);
        h.write(reg::QUEUE_SEL, 0);
        assert_eq!(h.read(reg::QUEUE_NUM_MAX), 16);
        assert_eq!(h.read(reg::QUEUE_READY), 0);
        let q0 = h.set_mock_queue(0, 0, 16);
        assert_eq!(h.read(reg::QUEUE_READY), 1);
        h.write(reg::QUEUE_SEL, 1);
        assert_eq!(h.read(reg::QUEUE_NUM_MAX), 8);
        let q1 = h.set_mock_queue(1, 0x4000, 4);
        h.add_status(status::DRIVER_OK);

        assert_eq!(h.status(), READY | status::DRIVER_OK);
        assert_eq!(h.record.lock().unwrap().activations, vec![vec![q0, q1]]);
        assert_eq!(h.irqs(), 0);
    }

    #[test]
    fn event_idx_reaches_the_queues_when_negotiated() {
        let event_idx = 1u64 << VIRTIO_RING_F_EVENT_IDX;
        let mut h = Harness::with_features(&[16], VERSION_1 | event_idx);
        h.negotiate(VERSION_1 | event_idx);
        h.set_mock_queue(0, 0, 16);
        h.add_status(status::DRIVER_OK);
        assert!(h.record.lock().unwrap().activations[0][0].event_idx);
    }

    #[test]
    fn queue_num_max_is_zero_for_a_queue_the_device_lacks() {
        let mut h = Harness::new(&[16]);
        h.write(reg::QUEUE_SEL, 1);
        assert_eq!(h.read(reg::QUEUE_NUM_MAX), 0);
        assert_eq!(h.read(reg::QUEUE_READY), 0);
    }

    /// Brings `h` to DRIVER_OK with queue 0 as given and checks that the
    /// device was not started: DRIVER_OK stays (the driver wrote it), the
    /// device adds NEEDS_RESET and raises a config change (§2.1.2).
    fn assert_driver_ok_needs_reset(h: &mut Harness) {
        h.add_status(status::DRIVER_OK);
        assert_eq!(h.activations(), 0);
        assert_eq!(h.status(), READY | status::DRIVER_OK | status::NEEDS_RESET);
        assert_eq!(h.read(reg::INTERRUPT_STATUS), INT_CONFIG_CHANGE);
        assert_eq!(h.irqs(), 1);
        // The queue never reached the device, so its kick goes nowhere.
        h.write(reg::QUEUE_NOTIFY, 0);
        assert!(h.record.lock().unwrap().notified.is_empty());
    }

    #[test]
    fn driver_ok_with_a_non_power_of_two_queue_size_needs_reset() {
        let mut h = Harness::new(&[16]);
        h.negotiate(VERSION_1);
        let q = h.set_mock_queue(0, 0, 16);
        h.set_queue(0, 12, q.desc, q.avail, q.used);
        assert_driver_ok_needs_reset(&mut h);
    }

    #[test]
    fn driver_ok_with_a_zero_queue_size_needs_reset() {
        let mut h = Harness::new(&[16]);
        h.negotiate(VERSION_1);
        let q = h.set_mock_queue(0, 0, 16);
        h.set_queue(0, 0, q.desc, q.avail, q.used);
        assert_driver_ok_needs_reset(&mut h);
    }

    #[test]
    fn driver_ok_with_a_queue_larger_than_its_maximum_needs_reset() {
        let mut h = Harness::new(&[16]);
        h.negotiate(VERSION_1);
        let q = h.set_mock_queue(0, 0, 16);
        h.set_queue(0, 32, q.desc, q.avail, q.used);
        assert_driver_ok_needs_reset(&mut h);
    }

    #[test]
    fn driver_ok_with_a_required_queue_not_ready_needs_reset() {
        let mut h = Harness::new(&[16]);
        h.negotiate(VERSION_1);
        h.set_mock_queue(0, 0, 16);
        h.write(reg::QUEUE_READY, 0);
        assert_driver_ok_needs_reset(&mut h);
    }

    #[test]
    fn driver_ok_with_a_ready_queue_after_an_unready_one_needs_reset() {
        let mut h = Harness::new(&[16, 16]);
        h.negotiate(VERSION_1);
        h.set_mock_queue(1, 0x4000, 16);
        assert_driver_ok_needs_reset(&mut h);
    }

    #[test]
    fn driver_ok_with_a_queue_outside_guest_memory_needs_reset() {
        let mut h = Harness::new(&[16]);
        h.negotiate(VERSION_1);
        let q = h.set_mock_queue(0, 0, 16);
        let outside = u64::try_from(MEM_SIZE).unwrap() + 0x1000;
        h.set_queue(0, 16, q.desc, q.avail, outside);
        assert_driver_ok_needs_reset(&mut h);
    }

    #[test]
    fn driver_ok_with_a_misaligned_ring_needs_reset() {
        let mut h = Harness::new(&[16]);
        h.negotiate(VERSION_1);
        let q = h.set_mock_queue(0, 0, 16);
        h.set_queue(0, 16, q.desc + 8, q.avail, q.used);
        assert_driver_ok_needs_reset(&mut h);
    }

    #[test]
    fn driver_ok_before_features_ok_is_ignored() {
        let mut h = Harness::new(&[16]);
        h.add_status(status::ACKNOWLEDGE);
        h.add_status(status::DRIVER);
        h.set_mock_queue(0, 0, 16);
        h.add_status(status::DRIVER_OK);
        assert_eq!(h.status(), status::ACKNOWLEDGE | status::DRIVER);
        assert_eq!(h.activations(), 0);
    }

    #[test]
    fn status_bits_out_of_order_are_ignored() {
        let mut h = Harness::new(&[16]);
        h.write(reg::STATUS, status::DRIVER);
        assert_eq!(h.status(), 0);
        h.write(reg::STATUS, 0x10);
        assert_eq!(h.status(), 0);
        h.write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        assert_eq!(h.status(), status::ACKNOWLEDGE | status::DRIVER);
        // Clearing a bit needs a reset.
        h.write(reg::STATUS, status::ACKNOWLEDGE);
        assert_eq!(h.status(), status::ACKNOWLEDGE | status::DRIVER);
    }

    #[test]
    fn failed_status_sticks_until_reset() {
        let mut h = Harness::new(&[16]);
        h.negotiate(VERSION_1);
        h.add_status(status::FAILED);
        assert_eq!(h.status(), READY | status::FAILED);
        h.set_mock_queue(0, 0, 16);
        h.add_status(status::DRIVER_OK);
        assert_eq!(h.status(), READY | status::FAILED);
        assert_eq!(h.activations(), 0);
        h.write(reg::STATUS, 0);
        assert_eq!(h.status(), 0);
    }

    #[test]
    fn transport_can_be_shared_by_vcpu_threads_behind_a_mutex() {
        fn assert_sync<T: Sync>() {}
        assert_sync::<Mutex<MmioTransport>>();
    }

    #[test]
    fn failed_written_alone_is_accepted() {
        let mut h = Harness::new(&[16]);
        h.negotiate(VERSION_1);
        h.write(reg::STATUS, status::FAILED);
        assert_eq!(h.status(), READY | status::FAILED);
    }

    #[test]
    fn queue_notify_before_activation_is_ignored() {
        let mut h = Harness::new(&[16]);
        h.write(reg::QUEUE_NOTIFY, 0);
        h.negotiate(VERSION_1);
        h.set_mock_queue(0, 0, 16);
        h.write(reg::QUEUE_NOTIFY, 0);
        assert!(h.record.lock().unwrap().notified.is_empty());
    }

    #[test]
    fn queue_notify_after_activation_reaches_the_device_for_valid_indexes() {
        let mut h = Harness::new(&[16]);
        h.negotiate(VERSION_1);
        h.set_mock_queue(0, 0, 16);
        h.add_status(status::DRIVER_OK);
        h.write(reg::QUEUE_NOTIFY, 0);
        h.write(reg::QUEUE_NOTIFY, 1);
        h.write(reg::QUEUE_NOTIFY, 0x1_0000);
        assert_eq!(h.record.lock().unwrap().notified, vec![0]);
    }

    #[test]
    fn queue_registers_are_frozen_after_driver_ok() {
        let mut h = Harness::new(&[16]);
        h.negotiate(VERSION_1);
        h.set_mock_queue(0, 0, 16);
        h.add_status(status::DRIVER_OK);
        h.write(reg::QUEUE_READY, 0);
        assert_eq!(h.read(reg::QUEUE_READY), 1);
    }

    #[test]
    fn used_queue_signal_sets_interrupt_status_and_triggers() {
        let mut h = Harness::new(&[16]);
        h.negotiate(VERSION_1);
        h.set_mock_queue(0, 0, 16);
        h.add_status(status::DRIVER_OK);
        let interrupt = h.record.lock().unwrap().interrupt.clone().unwrap();

        interrupt.signal_used_queue();
        assert_eq!(h.read(reg::INTERRUPT_STATUS), INT_USED_BUFFER);
        assert_eq!(h.irqs(), 1);

        interrupt.signal_config_change();
        assert_eq!(
            h.read(reg::INTERRUPT_STATUS),
            INT_USED_BUFFER | INT_CONFIG_CHANGE
        );
        assert_eq!(h.irqs(), 2);
    }

    #[test]
    fn interrupt_ack_clears_only_the_acknowledged_bits() {
        let mut h = Harness::new(&[16]);
        h.negotiate(VERSION_1);
        h.set_mock_queue(0, 0, 16);
        h.add_status(status::DRIVER_OK);
        let interrupt = h.record.lock().unwrap().interrupt.clone().unwrap();
        interrupt.signal_used_queue();
        interrupt.signal_config_change();

        h.write(reg::INTERRUPT_ACK, INT_USED_BUFFER);
        assert_eq!(h.read(reg::INTERRUPT_STATUS), INT_CONFIG_CHANGE);
        h.write(reg::INTERRUPT_ACK, INT_CONFIG_CHANGE);
        assert_eq!(h.read(reg::INTERRUPT_STATUS), 0);
    }

    #[test]
    fn config_change_bumps_the_config_generation() {
        let mut h = Harness::new(&[16]);
        h.negotiate(VERSION_1);
        h.set_mock_queue(0, 0, 16);
        h.add_status(status::DRIVER_OK);
        let before = h.read(reg::CONFIG_GENERATION);
        let interrupt = h.record.lock().unwrap().interrupt.clone().unwrap();
        interrupt.signal_config_change();
        assert_ne!(h.read(reg::CONFIG_GENERATION), before);
    }

    #[test]
    fn writing_status_zero_resets_device_and_registers() {
        let mut h = Harness::new(&[16]);
        h.negotiate(VERSION_1);
        h.set_mock_queue(0, 0, 16);
        h.write(reg::DEVICE_FEATURES_SEL, 1);
        h.add_status(status::DRIVER_OK);
        let interrupt = h.record.lock().unwrap().interrupt.clone().unwrap();
        interrupt.signal_used_queue();

        h.write(reg::STATUS, 0);

        assert_eq!(h.record.lock().unwrap().resets, 1);
        assert_eq!(h.status(), 0);
        assert_eq!(h.read(reg::INTERRUPT_STATUS), 0);
        assert_eq!(h.read(reg::QUEUE_READY), 0);
        assert_eq!(h.read(reg::DEVICE_FEATURES), low_half(EXTRA_LOW));
        assert_eq!(h.transport.queue_sel, 0);
        assert_eq!(h.transport.driver_features, 0);
        assert_eq!(h.transport.queues[0].size, 0);
        assert_eq!(h.transport.queues[0].desc, 0);
        // Reset stops the device: kicks are ignored until it is set up again.
        h.write(reg::QUEUE_NOTIFY, 0);
        assert!(h.record.lock().unwrap().notified.is_empty());

        // And it can be brought up again.
        h.negotiate(VERSION_1);
        h.set_mock_queue(0, 0, 16);
        h.add_status(status::DRIVER_OK);
        assert_eq!(h.activations(), 2);
    }

    #[test]
    fn reset_after_needs_reset_allows_a_clean_start() {
        let mut h = Harness::new(&[16]);
        h.negotiate(VERSION_1);
        h.add_status(status::DRIVER_OK);
        assert_ne!(h.status() & status::NEEDS_RESET, 0);
        // The driver echoing NEEDS_RESET back while adding FAILED is fine.
        h.add_status(status::FAILED);
        assert_ne!(h.status() & status::FAILED, 0);
        h.write(reg::STATUS, 0);
        assert_eq!(h.status(), 0);
        h.negotiate(VERSION_1);
        h.set_mock_queue(0, 0, 16);
        h.add_status(status::DRIVER_OK);
        assert_eq!(h.status(), READY | status::DRIVER_OK);
        assert_eq!(h.activations(), 1);
    }

    #[test]
    fn config_space_accesses_go_to_the_device_at_any_width() {
        let mut h = Harness::new(&[16]);
        let mut one = [0u8; 1];
        h.transport.read(0x103, &mut one);
        assert_eq!(one, [0xc3]);
        let mut eight = [0u8; 8];
        h.transport.read(0x100, &mut eight);
        assert_eq!(eight, [0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7]);

        h.transport.write(0x102, &[1, 2]);
        assert_eq!(
            h.record.lock().unwrap().config_writes,
            vec![(2, vec![1, 2])]
        );
    }

    #[test]
    fn config_space_accesses_past_the_window_are_ignored() {
        let mut h = Harness::new(&[16]);
        let mut data = [0xffu8; 8];
        h.transport.read(MMIO_WINDOW - 4, &mut data);
        assert_eq!(data, [0; 8]);
        h.transport.read(u64::MAX, &mut data);
        assert_eq!(data, [0; 8]);
        h.transport.write(MMIO_WINDOW, &[1]);
        h.transport.write(u64::MAX - 1, &[1, 2, 3, 4]);
        assert!(h.record.lock().unwrap().config_writes.is_empty());
    }

    #[test]
    fn misaligned_or_wrongly_sized_register_accesses_are_ignored() {
        let mut h = Harness::new(&[16]);

        let mut two = [0xffu8; 2];
        h.transport.read(reg::MAGIC_VALUE, &mut two);
        assert_eq!(two, [0, 0]);
        let mut four = [0xffu8; 4];
        h.transport.read(reg::MAGIC_VALUE + 2, &mut four);
        assert_eq!(four, [0; 4]);
        let mut eight = [0xffu8; 8];
        h.transport.read(reg::MAGIC_VALUE, &mut eight);
        assert_eq!(eight, [0; 8]);
        h.transport.read(reg::MAGIC_VALUE, &mut []);

        h.transport.write(reg::STATUS, &[1]);
        h.transport.write(reg::STATUS + 1, &1u32.to_le_bytes());
        h.transport
            .write(reg::STATUS, &u64::from(status::ACKNOWLEDGE).to_le_bytes());
        h.transport.write(reg::STATUS, &[]);
        assert_eq!(h.status(), 0);
    }

    #[test]
    fn unknown_and_wrong_direction_registers_are_ignored() {
        let mut h = Harness::new(&[16]);
        // Unknown offsets read as zero.
        assert_eq!(h.read(0x0c0), 0);
        assert_eq!(h.read(0x0f8), 0);
        // Write-only registers read as zero.
        assert_eq!(h.read(reg::QUEUE_NOTIFY), 0);
        assert_eq!(h.read(reg::QUEUE_NUM), 0);
        // Writes to read-only registers change nothing.
        h.write(reg::MAGIC_VALUE, 0);
        h.write(reg::INTERRUPT_STATUS, 3);
        h.write(0x0c0, 1);
        assert_eq!(h.read(reg::MAGIC_VALUE), 0x7472_6976);
        assert_eq!(h.read(reg::INTERRUPT_STATUS), 0);
    }

    #[test]
    fn shared_memory_regions_read_as_absent() {
        let mut h = Harness::new(&[16]);
        h.write(reg::SHM_SEL, 0);
        assert_eq!(h.read(reg::SHM_LEN_LOW), u32::MAX);
        assert_eq!(h.read(reg::SHM_LEN_HIGH), u32::MAX);
    }
}
