//! The entropy device's data plane: fill each buffer the driver offers.

use std::io;
use std::ops::Deref;

use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory as _};

use super::device::{ActiveQueue, Rng, MAX_REQUEST_BYTES};
use crate::vmm::devices::virtio::GuestMemory;

/// Why a request got no bytes.
#[derive(Debug, thiserror::Error)]
enum RngError {
    #[error("descriptor chain {head} has a buffer the device may not write")]
    ReadOnlyBuffer { head: u16 },
    #[error("descriptor chain {head} has a buffer outside guest memory")]
    BufferOutsideMemory { head: u16 },
    #[error("the host entropy source failed")]
    Entropy(#[source] io::Error),
    #[error("could not write to guest memory")]
    GuestMemory(#[source] vm_memory::GuestMemoryError),
    #[error("could not return descriptor chain {head} to the used ring")]
    UsedRing {
        head: u16,
        #[source]
        source: virtio_queue::Error,
    },
}

impl Rng {
    /// Serves every chain the driver made available, then interrupts once.
    pub(super) fn process_queue(&mut self) {
        let Rng {
            active,
            guest_error,
        } = self;
        let Some(ActiveQueue {
            mem,
            queue,
            interrupt,
            entropy,
            segments,
        }) = active.as_mut()
        else {
            return;
        };
        let warn = |e: RngError| {
            guest_error.warn_error(format_args!("virtio-rng"), &e);
        };

        let mut used_any = false;
        while let Some(chain) = queue.pop_descriptor_chain(&*mem) {
            let head = chain.head_index();
            // A malformed chain goes back empty: the driver must not stall on it.
            let len = fill_chain(mem, chain, entropy, segments).unwrap_or_else(|e| {
                warn(e);
                0
            });
            match queue.add_used(&*mem, head, len) {
                Ok(()) => used_any = true,
                Err(source) => warn(RngError::UsedRing { head, source }),
            }
        }
        // Without EVENT_IDX this is always true; it keeps us right if it is offered.
        if used_any && queue.needs_notification(&*mem).unwrap_or(true) {
            interrupt.signal_used_queue();
        }
    }
}

/// Fills the chain's writable buffers, in order, with up to
/// `MAX_REQUEST_BYTES` of host entropy; returns the number of bytes written.
/// The whole chain is checked before anything is written, so a malformed one
/// leaves guest memory untouched.
fn fill_chain<M>(
    mem: &GuestMemory,
    chain: DescriptorChain<M>,
    entropy: &mut [u8],
    segments: &mut Vec<(GuestAddress, usize)>,
) -> Result<u32, RngError>
where
    M: Deref,
    M::Target: vm_memory::GuestMemory,
{
    let head = chain.head_index();
    segments.clear();
    let mut total: u32 = 0;
    for desc in chain {
        if !desc.is_write_only() {
            return Err(RngError::ReadOnlyBuffer { head });
        }
        let len = desc.len().min(MAX_REQUEST_BYTES - total);
        if len == 0 {
            continue;
        }
        let Ok(len_bytes) = usize::try_from(len) else {
            return Err(RngError::BufferOutsideMemory { head });
        };
        if !mem.check_range(desc.addr(), len_bytes) {
            return Err(RngError::BufferOutsideMemory { head });
        }
        segments.push((desc.addr(), len_bytes));
        total += len;
    }

    let mut offset = 0;
    for &(addr, len) in segments.iter() {
        let bytes = &mut entropy[offset..offset + len];
        fill_from_host(bytes).map_err(RngError::Entropy)?;
        mem.write_slice(bytes, addr)
            .map_err(RngError::GuestMemory)?;
        offset += len;
    }
    Ok(total)
}

/// Fills `buf` from `getrandom(2)`, retrying interrupted and short reads.
fn fill_from_host(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is `rest.len()` initialised bytes we borrow mutably
        // for the whole call; getrandom writes at most that many bytes into it
        // and keeps no pointer once it returns.
        let ret = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        match usize::try_from(ret) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "getrandom returned no bytes",
                ))
            }
            Ok(n) => filled += n.min(rest.len()),
            Err(_) => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use virtio_queue::mock::MockSplitQueue;

    use super::*;
    use crate::vmm::devices::virtio::rng::test_support::*;
    use crate::vmm::devices::virtio::rng::QUEUE_SIZE;
    use crate::vmm::devices::virtio::VirtioDevice;

    #[test]
    fn chain_of_two_writable_buffers_is_filled_with_host_entropy() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
        let (mut rng, interrupt) = activate(&mem, &vq);
        vq.add_desc_chains(
            &[
                desc(0x1_0000, 32, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1),
                writable(0x1_1000, 32),
            ],
            0,
        )
        .unwrap();

        rng.queue_notify(0);

        assert_eq!(used(&vq), vec![(0, 64)]);
        assert_eq!(interrupt.used(), 1);
        assert_eq!(interrupt.config(), 0);
        let mut bytes = read(&mem, 0x1_0000, 32);
        bytes.extend(read(&mem, 0x1_1000, 32));
        assert!(bytes.iter().any(|&b| b != 0));
        // The byte after each buffer stays untouched.
        assert_eq!(read(&mem, 0x1_0020, 1), [0]);
        assert_eq!(read(&mem, 0x1_1020, 1), [0]);
    }

    #[test]
    fn every_available_chain_is_served_with_one_interrupt() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
        let (mut rng, interrupt) = activate(&mem, &vq);
        vq.add_desc_chains(
            &[
                writable(0x1_0000, 16),
                writable(0x1_1000, 8),
                writable(0x1_2000, 4),
            ],
            0,
        )
        .unwrap();

        rng.queue_notify(0);

        assert_eq!(used(&vq), vec![(0, 16), (1, 8), (2, 4)]);
        assert_eq!(interrupt.used(), 1);
    }

    #[test]
    fn read_only_chain_is_used_with_length_zero() {
        let mem = memory();
        mem.write_slice(&[0xaa; 16], GuestAddress(0x1_0000))
            .unwrap();
        let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
        let (mut rng, interrupt) = activate(&mem, &vq);
        vq.add_desc_chains(&[desc(0x1_0000, 16, 0, 0)], 0).unwrap();

        rng.queue_notify(0);

        assert_eq!(used(&vq), vec![(0, 0)]);
        assert_eq!(interrupt.used(), 1);
        assert_eq!(read(&mem, 0x1_0000, 16), [0xaa; 16]);
    }

    #[test]
    fn chain_with_a_read_only_buffer_after_a_writable_one_writes_nothing() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
        let (mut rng, _interrupt) = activate(&mem, &vq);
        vq.add_desc_chains(
            &[
                desc(0x1_0000, 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1),
                desc(0x1_1000, 16, 0, 0),
            ],
            0,
        )
        .unwrap();

        rng.queue_notify(0);

        assert_eq!(used(&vq), vec![(0, 0)]);
        assert_eq!(read(&mem, 0x1_0000, 16), [0; 16]);
    }

    #[test]
    fn buffer_outside_guest_memory_is_used_with_length_zero() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
        let (mut rng, interrupt) = activate(&mem, &vq);
        let end = u64::try_from(MEM_SIZE).unwrap();
        vq.add_desc_chains(
            &[
                writable(end + 0x1000, 64),
                writable(end - 8, 16),
                writable(u64::MAX - 4, 16),
            ],
            0,
        )
        .unwrap();

        rng.queue_notify(0);

        assert_eq!(used(&vq), vec![(0, 0), (1, 0), (2, 0)]);
        assert_eq!(interrupt.used(), 1);
        assert_eq!(read(&mem, end - 8, 8), [0; 8]);
    }

    #[test]
    fn large_buffer_gets_at_most_the_request_cap() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
        let (mut rng, _interrupt) = activate(&mem, &vq);
        vq.add_desc_chains(
            &[
                desc(
                    0x1_0000,
                    0x1_0000,
                    VRING_DESC_F_WRITE | VRING_DESC_F_NEXT,
                    1,
                ),
                writable(0x2_0000, 0x1_0000),
            ],
            0,
        )
        .unwrap();

        rng.queue_notify(0);

        assert_eq!(used(&vq), vec![(0, MAX_REQUEST_BYTES)]);
        assert_eq!(read(&mem, 0x2_0000, 0x1_0000), vec![0; 0x1_0000]);
    }

    #[test]
    fn head_index_beyond_the_queue_does_not_panic() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
        let (mut rng, interrupt) = activate(&mem, &vq);
        vq.avail()
            .ring()
            .ref_at(0)
            .unwrap()
            .store(u16::to_le(QUEUE_SIZE + 7));
        vq.avail().idx().store(u16::to_le(1));

        rng.queue_notify(0);

        assert!(used(&vq).is_empty());
        assert_eq!(interrupt.used(), 0);
    }

    #[test]
    fn avail_index_running_ahead_of_the_queue_does_not_panic() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
        let (mut rng, interrupt) = activate(&mem, &vq);
        vq.avail().idx().store(u16::to_le(QUEUE_SIZE + 1));

        rng.queue_notify(0);

        assert!(used(&vq).is_empty());
        assert_eq!(interrupt.used(), 0);
    }

    #[test]
    fn notify_with_nothing_available_does_not_interrupt() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
        let (mut rng, interrupt) = activate(&mem, &vq);

        rng.queue_notify(0);

        assert_eq!(interrupt.used(), 0);
    }

    #[test]
    fn notify_for_another_queue_is_ignored() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
        let (mut rng, interrupt) = activate(&mem, &vq);
        vq.add_desc_chains(&[writable(0x1_0000, 16)], 0).unwrap();

        rng.queue_notify(1);

        assert!(used(&vq).is_empty());
        assert_eq!(interrupt.used(), 0);
    }

    #[test]
    fn fill_from_host_fills_buffers_larger_than_one_read() {
        let mut buf = vec![0u8; 1 << 20];
        fill_from_host(&mut buf).unwrap();
        // A megabyte of host entropy has no 4 KiB run of zeroes.
        assert!(buf.chunks(4096).all(|c| c.iter().any(|&b| b != 0)));
    }
}
