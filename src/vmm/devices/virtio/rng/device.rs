//! The entropy device's control plane: identity, features, activation.

use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestAddress;

use super::QUEUE_SIZE;
use crate::vmm::devices::virtio::{ActivateError, GuestMemory, Interrupt, VirtioDevice, WarnOnce};

/// Device ID of the entropy device (virtio 1.2 §5).
pub const VIRTIO_ID_ENTROPY: u32 = 4;

/// Most bytes one request gets, to bound the work a single chain can cause.
pub(super) const MAX_REQUEST_BYTES: u32 = 64 * 1024;

const QUEUE_SIZES: [u16; 1] = [QUEUE_SIZE];

/// virtio-rng: hands the guest bytes from the host's `getrandom(2)`.
#[derive(Default)]
pub struct Rng {
    pub(super) active: Option<ActiveQueue>,
    /// Complaints about what the guest put in the queue; survives resets so a
    /// driver looping through them cannot flood the log.
    pub(super) guest_error: WarnOnce,
}

/// The request queue once the driver has set it up.
pub(super) struct ActiveQueue {
    pub(super) mem: GuestMemory,
    pub(super) queue: Queue,
    pub(super) interrupt: Arc<dyn Interrupt>,
    /// Host entropy for one request, `MAX_REQUEST_BYTES` long.
    pub(super) entropy: Box<[u8]>,
    /// The writable buffers of the chain being served, in order.
    pub(super) segments: Vec<(GuestAddress, usize)>,
}

impl Rng {
    pub fn new() -> Self {
        Self::default()
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_ENTROPY
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        // The entropy device has no configuration space.
        data.fill(0);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(
        &mut self,
        mem: GuestMemory,
        queues: Vec<Queue>,
        interrupt: Arc<dyn Interrupt>,
    ) -> Result<(), ActivateError> {
        let got = queues.len();
        let Ok::<[Queue; 1], _>([queue]) = queues.try_into() else {
            return Err(ActivateError::QueueCount { want: 1, got });
        };
        self.active = Some(ActiveQueue {
            mem,
            queue,
            interrupt,
            entropy: vec![0; MAX_REQUEST_BYTES as usize].into_boxed_slice(),
            segments: Vec::new(),
        });
        // A kick that came before DRIVER_OK was dropped by the transport.
        self.process_queue();
        Ok(())
    }

    fn queue_notify(&mut self, index: u16) {
        if index == 0 {
            self.process_queue();
        }
    }

    fn reset(&mut self) {
        self.active = None;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use virtio_queue::mock::MockSplitQueue;

    use super::*;
    use crate::vmm::devices::virtio::mmio::MmioTransport;
    use crate::vmm::devices::virtio::rng::test_support::*;
    use crate::vmm::devices::virtio::IrqTrigger;

    #[test]
    fn identifies_as_an_entropy_device_offering_only_version_1() {
        let rng = Rng::new();
        assert_eq!(rng.device_type(), 4);
        assert_eq!(rng.device_features(), 1 << 32);
        assert_eq!(rng.queue_max_sizes(), [256]);
    }

    #[test]
    fn config_space_reads_as_zero() {
        let mut rng = Rng::new();
        let mut data = [0xff; 4];
        rng.write_config(0, &[1, 2, 3, 4]);
        rng.read_config(0, &mut data);
        assert_eq!(data, [0; 4]);
    }

    #[test]
    fn activation_needs_exactly_one_queue() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
        for count in [0, 2] {
            let queues = (0..count).map(|_| vq.create_queue().unwrap()).collect();
            let mut rng = Rng::new();
            let err = rng
                .activate(mem.clone(), queues, Arc::new(CountingInterrupt::default()))
                .unwrap_err();
            assert!(
                matches!(err, ActivateError::QueueCount { want: 1, got } if got == count),
                "{err:?}"
            );
        }
    }

    #[test]
    fn notify_before_activation_does_nothing() {
        let mut rng = Rng::new();
        rng.queue_notify(0);
        assert!(rng.active.is_none());
    }

    #[test]
    fn buffers_queued_before_activation_are_served_on_activation() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
        vq.add_desc_chains(&[writable(0x1_0000, 16)], 0).unwrap();

        let (_rng, interrupt) = activate(&mem, &vq);

        assert_eq!(used(&vq), vec![(0, 16)]);
        assert_eq!(interrupt.used(), 1);
    }

    #[test]
    fn reset_stops_serving_the_queue() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
        let (mut rng, interrupt) = activate(&mem, &vq);
        rng.reset();
        vq.add_desc_chains(&[writable(0x1_0000, 16)], 0).unwrap();

        rng.queue_notify(0);

        assert!(used(&vq).is_empty());
        assert_eq!(interrupt.used(), 0);
    }

    #[derive(Default)]
    struct CountingIrq(AtomicUsize);

    impl IrqTrigger for CountingIrq {
        fn trigger(&self) -> std::io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn serves_entropy_through_the_mmio_transport() {
        // Register offsets from virtio 1.2 table 4.1.
        const DRIVER_FEATURES: u64 = 0x020;
        const DRIVER_FEATURES_SEL: u64 = 0x024;
        const QUEUE_NUM: u64 = 0x038;
        const QUEUE_READY: u64 = 0x044;
        const QUEUE_NOTIFY: u64 = 0x050;
        const INTERRUPT_STATUS: u64 = 0x060;
        const STATUS: u64 = 0x070;
        const QUEUE_DESC_LOW: u64 = 0x080;
        const QUEUE_DRIVER_LOW: u64 = 0x090;
        const QUEUE_DEVICE_LOW: u64 = 0x0a0;
        const DEVICE_ID: u64 = 0x008;

        let mem = memory();
        let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
        let irq = Arc::new(CountingIrq::default());
        let mut t = MmioTransport::new(mem.clone(), Box::new(Rng::new()), irq.clone());
        let write_reg = |t: &mut MmioTransport, offset: u64, value: u32| {
            t.write(offset, &value.to_le_bytes());
        };
        let read_reg = |t: &mut MmioTransport, offset: u64| {
            let mut data = [0; 4];
            t.read(offset, &mut data);
            u32::from_le_bytes(data)
        };
        let addr = |a: GuestAddress| u32::try_from(a.0).unwrap();

        assert_eq!(read_reg(&mut t, DEVICE_ID), 4);
        write_reg(&mut t, STATUS, 0x1);
        write_reg(&mut t, STATUS, 0x3);
        write_reg(&mut t, DRIVER_FEATURES_SEL, 1);
        write_reg(&mut t, DRIVER_FEATURES, 1);
        write_reg(&mut t, STATUS, 0xb);
        assert_eq!(read_reg(&mut t, STATUS), 0xb);
        write_reg(&mut t, QUEUE_NUM, u32::from(QUEUE_SIZE));
        write_reg(&mut t, QUEUE_DESC_LOW, addr(vq.desc_table_addr()));
        write_reg(&mut t, QUEUE_DRIVER_LOW, addr(vq.avail_addr()));
        write_reg(&mut t, QUEUE_DEVICE_LOW, addr(vq.used_addr()));
        write_reg(&mut t, QUEUE_READY, 1);
        write_reg(&mut t, STATUS, 0xf);
        assert_eq!(read_reg(&mut t, STATUS), 0xf);

        vq.add_desc_chains(&[writable(0x1_0000, 64)], 0).unwrap();
        write_reg(&mut t, QUEUE_NOTIFY, 0);

        assert_eq!(used(&vq), vec![(0, 64)]);
        assert_eq!(read_reg(&mut t, INTERRUPT_STATUS), 1);
        assert_eq!(irq.0.load(Ordering::SeqCst), 1);
        assert!(read(&mem, 0x1_0000, 64).iter().any(|&b| b != 0));
    }
}
