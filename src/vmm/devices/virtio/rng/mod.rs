//! virtio-rng, the entropy device (virtio 1.2 §5.4): every buffer the driver
//! offers on its one queue comes back filled from the host's `getrandom(2)`.

mod device;
mod event_handler;

pub use device::Rng;

/// Size of the request queue, the device's only queue.
pub const QUEUE_SIZE: u16 = 256;

/// Driver-side helpers shared by the device's tests.
#[cfg(test)]
mod test_support {
    use std::sync::Arc;

    use virtio_queue::desc::split::{Descriptor as SplitDescriptor, VirtqUsedElem};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    use super::Rng;
    use crate::vmm::devices::virtio::{GuestMemory, VirtioDevice};

    pub const VRING_DESC_F_NEXT: u16 = 1;
    pub const VRING_DESC_F_WRITE: u16 = 2;
    pub const MEM_SIZE: usize = 0x4_0000;

    pub use crate::vmm::devices::virtio::test_support::CountingInterrupt;

    pub fn memory() -> GuestMemory {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
    }

    pub fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
    }

    /// A single device-writable buffer (the mock links chains itself).
    pub fn writable(addr: u64, len: u32) -> RawDescriptor {
        desc(addr, len, VRING_DESC_F_WRITE, 0)
    }

    pub fn activate(
        mem: &GuestMemory,
        vq: &MockSplitQueue<'_, GuestMemory>,
    ) -> (Rng, Arc<CountingInterrupt>) {
        let mut rng = Rng::new();
        let interrupt = Arc::new(CountingInterrupt::default());
        rng.activate(
            mem.clone(),
            vec![vq.create_queue().unwrap()],
            interrupt.clone(),
        )
        .unwrap();
        (rng, interrupt)
    }

    /// The used ring as (head index, length) pairs.
    pub fn used(vq: &MockSplitQueue<'_, GuestMemory>) -> Vec<(u32, u32)> {
        let count = u16::from_le(vq.used().idx().load());
        (0..usize::from(count))
            .map(|i| {
                let elem: VirtqUsedElem = vq.used().ring().ref_at(i).unwrap().load();
                (elem.id(), elem.len())
            })
            .collect()
    }

    pub fn read(mem: &GuestMemory, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }
}
