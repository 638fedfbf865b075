//! virtio-fs (virtio 1.2 §5.11): serves one host directory to the guest, which
//! mounts it with `mount -t virtiofs <tag> <dir>`.
//!
//! The requests are FUSE messages. `fuse-backend-rs` decodes them
//! (`api::server::Server`) and serves them from the host directory
//! (`passthrough::PassthroughFs`); `guard.rs` sits between the two and holds
//! this device's own rules. Several devices, each with its own tag and
//! directory, can serve one guest.
//!
//! # Threads
//!
//! Each activated device has one worker thread. A queue notification only
//! wakes it through an `EventFd`, so the vCPU goes back to the guest at once
//! instead of waiting for host disk I/O (a `fsync` can take milliseconds, and
//! with one vCPU the whole guest would stall meanwhile). The same `EventFd`
//! can later be handed to KVM as an ioeventfd, so that a kick does not even
//! leave the kernel. The worker also keeps two per-thread side effects of the
//! passthrough off the vCPU threads and the rest of the process: it runs on a
//! private `fs_struct` (`unshare(CLONE_FS)`), so the passthrough's `umask(0)`
//! applies to it alone, and the credential switches the passthrough makes to
//! create files as the guest's uid/gid are per-thread system calls.
//!
//! # What the guest can reach
//!
//! The guest is untrusted. It must never reach a host path outside the shared
//! directory, whatever it sends. What holds that:
//!
//! * The passthrough names every inode by an `O_PATH` file descriptor, never
//!   by a path. The share's root is opened (at FUSE INIT) from the canonical
//!   path `Fs::new` made of the host's, and is the only root inode; a FORGET
//!   of it is ignored.
//! * Every other inode comes from an `openat(parent_fd, name, O_PATH |
//!   O_NOFOLLOW)` of one name relative to an inode the guest already holds (a
//!   LOOKUP, READDIRPLUS, CREATE, MKDIR, MKNOD, SYMLINK or LINK). This layer
//!   refuses (EINVAL) every name that is empty, `.`, `..` or contains `/`
//!   before the passthrough sees it. The passthrough itself refuses `/` in a
//!   LOOKUP but lets `..` through (it maps `..` of the root to the root and
//!   serves `..` of any other directory); we do not, so the guest can only walk
//!   down, one name at a time, from the root.
//! * No symlink is ever followed: with `O_NOFOLLOW` and a single name, a
//!   symlink opens as itself. A symlink such as `escape -> /etc` or
//!   `up -> ../..` is served as a link (READLINK returns its target, for the
//!   guest kernel to resolve within the guest's own mount); a LOOKUP below it
//!   fails with ENOTDIR, and OPEN of it fails, since the passthrough opens
//!   for I/O only regular files and directories (by reopening the `O_PATH`
//!   descriptor through `/proc/self/fd`, which names the same inode).
//! * No race swaps a path under us: a directory renamed away and replaced by a
//!   symlink after the guest looked it up is still the same directory to the
//!   guest's inode, because the descriptor, not the path, is what we hold.
//! * The guest cannot create block or character device nodes in the share
//!   (EPERM); FIFOs and sockets it may. The passthrough never opens a special
//!   file for I/O, but a host process that later opened such a node could.
//! * With `FsOptions::read_only`, every request that would change the share
//!   gets EROFS, including OPEN for writing or with `O_TRUNC` and ACCESS for
//!   `W_OK`.
//! * Malformed requests are answered with an error (or, when not even their
//!   header can be read, returned unused); the device never panics on guest
//!   input. A READDIR buffer is capped at 1 MiB of host memory.
//!
//! What it does not cover: the host's own view of the share. A host process
//! (including another part of this program) that modifies the share while the
//! guest runs, mounts something inside it, or moves a directory the guest holds
//! out of it, changes what the guest sees. Symlinks the guest creates are real
//! host symlinks: host code that walks the share must not follow them. Files
//! are created with the guest's uid/gid when the VMM runs as root (so a guest
//! root can create set-uid root files in the share), and as the VMM's own user,
//! whoever asks, otherwise.

mod device;
mod event_handler;
mod guard;

pub use device::{CachePolicy, Fs, FsError, FsOptions};

/// Device ID of the file system device (virtio 1.2 §5).
pub const VIRTIO_ID_FS: u32 = 26;

/// Request queues besides the high-priority one.
pub const NUM_REQUEST_QUEUES: u16 = 1;

/// Size of every queue.
pub const QUEUE_SIZE: u16 = 1024;

/// Length of the `tag` field of the configuration space.
pub const TAG_LEN: usize = 36;

/// Driver-side helpers shared by the device's tests: a guest that puts real
/// FUSE requests on mock queues and reads the replies.
#[cfg(test)]
mod test_support {
    use std::ffi::CString;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use fuse_backend_rs::abi::fuse_abi::{
        AttrOut, CreateIn, EntryOut, GetattrIn, InHeader, InitIn, InitOut, MkdirIn, MknodIn,
        OpenIn, OpenOut, OutHeader, ReadIn, ReleaseIn, SetattrIn, WriteIn, WriteOut,
    };
    use fuse_backend_rs::abi::fuse_abi::{Dirent, Opcode};
    use virtio_queue::desc::split::{Descriptor as SplitDescriptor, VirtqUsedElem};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};

    use super::{Fs, FsOptions, QUEUE_SIZE};
    use crate::vmm::devices::virtio::{GuestMemory, VirtioDevice};

    pub const VRING_DESC_F_NEXT: u16 = 1;
    pub const VRING_DESC_F_WRITE: u16 = 2;
    pub const MEM_SIZE: usize = 0x40_0000;
    /// Where the high-priority and the request queue live.
    const HIPRIO_ADDR: u64 = 0;
    const REQUEST_ADDR: u64 = 0x1_0000;
    /// Where each request is written and its reply is read.
    pub const IN_ADDR: u64 = 0x10_0000;
    pub const OUT_ADDR: u64 = 0x20_0000;
    pub const OUT_LEN: u32 = 0x2_0000;
    /// `FUSE_KERNEL_VERSION` and the minor version of a 6.1 guest kernel.
    const FUSE_MAJOR: u32 = 7;
    const FUSE_MINOR: u32 = 38;

    pub use crate::vmm::devices::virtio::test_support::CountingInterrupt;

    pub fn memory() -> GuestMemory {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
    }

    pub fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
    }

    pub fn read_mem(mem: &GuestMemory, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }

    pub fn cstr(s: &str) -> Vec<u8> {
        CString::new(s).unwrap().into_bytes_with_nul()
    }

    /// Which queue a request goes to.
    #[derive(Clone, Copy)]
    pub enum Q {
        Hiprio,
        Request,
    }

    /// A reply: the header's error (0 or a negative errno) and what follows it.
    #[derive(Debug)]
    pub struct Reply {
        pub error: i32,
        pub body: Vec<u8>,
    }

    impl Reply {
        /// The reply's payload as a `T`, or the errno it carries.
        pub fn ok<T: ByteValued>(&self) -> Result<T, i32> {
            if self.error != 0 {
                return Err(-self.error);
            }
            Ok(T::from_slice(&self.body[..std::mem::size_of::<T>()])
                .copied()
                .unwrap())
        }

        pub fn errno(&self) -> i32 {
            -self.error
        }
    }

    /// A guest with a virtio-fs driver of its own making.
    pub struct Guest<'m> {
        pub mem: &'m GuestMemory,
        hiprio: MockSplitQueue<'m, GuestMemory>,
        requests: MockSplitQueue<'m, GuestMemory>,
        pub fs: Fs,
        pub interrupt: Arc<CountingInterrupt>,
        next_desc: [u16; 2],
        next_unique: u64,
    }

    impl<'m> Guest<'m> {
        /// Activates a device sharing `dir` (not yet FUSE-initialised).
        pub fn new(mem: &'m GuestMemory, dir: &Path, options: FsOptions) -> Self {
            Self::with_device(mem, Fs::new("share", dir, options).unwrap())
        }

        pub fn with_device(mem: &'m GuestMemory, mut fs: Fs) -> Self {
            let hiprio = MockSplitQueue::create(mem, GuestAddress(HIPRIO_ADDR), QUEUE_SIZE);
            let requests = MockSplitQueue::create(mem, GuestAddress(REQUEST_ADDR), QUEUE_SIZE);
            let interrupt = Arc::new(CountingInterrupt::default());
            fs.activate(
                mem.clone(),
                vec![
                    hiprio.create_queue().unwrap(),
                    requests.create_queue().unwrap(),
                ],
                interrupt.clone(),
            )
            .unwrap();
            Guest {
                mem,
                hiprio,
                requests,
                fs,
                interrupt,
                next_desc: [0; 2],
                next_unique: 1,
            }
        }

        /// Activates a device sharing `dir` and sends INIT.
        pub fn mounted(mem: &'m GuestMemory, dir: &Path, options: FsOptions) -> Self {
            let mut guest = Self::new(mem, dir, options);
            let out: InitOut = guest.init().ok().unwrap();
            assert_eq!(out.major, FUSE_MAJOR);
            guest
        }

        fn queue(&self, q: Q) -> &MockSplitQueue<'m, GuestMemory> {
            match q {
                Q::Hiprio => &self.hiprio,
                Q::Request => &self.requests,
            }
        }

        /// The used ring of `q` as (head index, length) pairs.
        pub fn used(&self, q: Q) -> Vec<(u32, u32)> {
            let vq = self.queue(q);
            let count = u16::from_le(vq.used().idx().load());
            (0..usize::from(count))
                .map(|i| {
                    let elem: VirtqUsedElem = vq.used().ring().ref_at(i).unwrap().load();
                    (elem.id(), elem.len())
                })
                .collect()
        }

        /// Makes `descs` (each chained to the next) available on `q`,
        /// notifies, and waits for the device to use the chain; returns the
        /// length the device reported.
        pub fn submit(&mut self, q: Q, descs: &[(u64, u32, bool)]) -> u32 {
            let slot = match q {
                Q::Hiprio => 0,
                Q::Request => 1,
            };
            let first = self.next_desc[slot];
            let count = u16::try_from(descs.len()).unwrap();
            let chain: Vec<RawDescriptor> = descs
                .iter()
                .zip(first..)
                .map(|(&(addr, len, writable), i)| {
                    let mut flags = if writable { VRING_DESC_F_WRITE } else { 0 };
                    if i + 1 < first + count {
                        flags |= VRING_DESC_F_NEXT;
                    }
                    desc(addr, len, flags, i + 1)
                })
                .collect();
            self.next_desc[slot] += count;
            let before = self.used(q).len();
            self.queue(q).add_desc_chains(&chain, first).unwrap();
            self.fs.queue_notify(u16::try_from(slot).unwrap());
            let (head, len) = self.wait_used(q, before + 1);
            assert_eq!(head, u32::from(first));
            len
        }

        /// Waits until `q`'s used ring holds `count` entries; returns the last.
        pub fn wait_used(&self, q: Q, count: usize) -> (u32, u32) {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let used = self.used(q);
                if used.len() >= count {
                    return used[count - 1];
                }
                assert!(Instant::now() < deadline, "the device did not answer");
                std::thread::sleep(Duration::from_millis(1));
            }
        }

        /// Sends `request` as it is on the high-priority queue, which has no
        /// room for replies; returns the used length.
        pub fn hiprio(&mut self, request: &[u8]) -> u32 {
            self.mem
                .write_slice(request, GuestAddress(IN_ADDR))
                .unwrap();
            let len = u32::try_from(request.len()).unwrap();
            self.submit(Q::Hiprio, &[(IN_ADDR, len, false)])
        }

        /// Sends `request` as it is (one readable buffer) with a writable
        /// buffer of `reply_len`; returns the used length and what it covers.
        pub fn raw(&mut self, request: &[u8], reply_len: u32) -> (u32, Vec<u8>) {
            self.mem
                .write_slice(request, GuestAddress(IN_ADDR))
                .unwrap();
            self.mem
                .write_slice(&vec![0; reply_len as usize], GuestAddress(OUT_ADDR))
                .unwrap();
            let mut descs = vec![(IN_ADDR, u32::try_from(request.len()).unwrap(), false)];
            if reply_len > 0 {
                descs.push((OUT_ADDR, reply_len, true));
            }
            let len = self.submit(Q::Request, &descs);
            (len, read_mem(self.mem, OUT_ADDR, len as usize))
        }

        /// A request header for `opcode` on `nodeid` followed by `body`.
        pub fn message(&mut self, opcode: Opcode, nodeid: u64, body: &[u8]) -> (u64, Vec<u8>) {
            let unique = self.next_unique;
            self.next_unique += 1;
            let header = InHeader {
                len: u32::try_from(std::mem::size_of::<InHeader>() + body.len()).unwrap(),
                opcode: opcode as u32,
                unique,
                nodeid,
                // SAFETY: geteuid and getegid only return this process's ids.
                uid: unsafe { libc::geteuid() },
                // SAFETY: as above.
                gid: unsafe { libc::getegid() },
                pid: 1,
                padding: 0,
            };
            let mut request = header.as_slice().to_vec();
            request.extend_from_slice(body);
            (unique, request)
        }

        /// Sends one FUSE request and parses its reply.
        pub fn call(&mut self, opcode: Opcode, nodeid: u64, body: &[u8]) -> Reply {
            let (unique, request) = self.message(opcode, nodeid, body);
            let (len, reply) = self.raw(&request, OUT_LEN);
            parse_reply(unique, len, &reply)
        }

        pub fn init(&mut self) -> Reply {
            let init = InitIn {
                major: FUSE_MAJOR,
                minor: FUSE_MINOR,
                max_readahead: 0x2_0000,
                flags: 0,
            };
            self.call(Opcode::Init, 0, init.as_slice())
        }

        pub fn lookup(&mut self, parent: u64, name: &str) -> Result<EntryOut, i32> {
            self.call(Opcode::Lookup, parent, &cstr(name)).ok()
        }

        /// LOOKUP with the name's bytes as given (NUL added).
        pub fn lookup_bytes(&mut self, parent: u64, name: &[u8]) -> Result<EntryOut, i32> {
            let mut body = name.to_vec();
            body.push(0);
            self.call(Opcode::Lookup, parent, &body).ok()
        }

        pub fn getattr(&mut self, inode: u64) -> Result<AttrOut, i32> {
            self.call(Opcode::Getattr, inode, GetattrIn::default().as_slice())
                .ok()
        }

        pub fn setattr(&mut self, inode: u64, attr: SetattrIn) -> Result<AttrOut, i32> {
            self.call(Opcode::Setattr, inode, attr.as_slice()).ok()
        }

        pub fn readlink(&mut self, inode: u64) -> Result<Vec<u8>, i32> {
            let reply = self.call(Opcode::Readlink, inode, &[]);
            match reply.error {
                0 => Ok(reply.body),
                e => Err(-e),
            }
        }

        pub fn open(&mut self, inode: u64, flags: i32) -> Result<u64, i32> {
            let open = OpenIn {
                flags: flags as u32,
                fuse_flags: 0,
            };
            let out: OpenOut = self.call(Opcode::Open, inode, open.as_slice()).ok()?;
            Ok(out.fh)
        }

        pub fn opendir(&mut self, inode: u64) -> Result<u64, i32> {
            let open = OpenIn {
                flags: libc::O_RDONLY as u32,
                fuse_flags: 0,
            };
            let out: OpenOut = self.call(Opcode::Opendir, inode, open.as_slice()).ok()?;
            Ok(out.fh)
        }

        pub fn release(&mut self, inode: u64, fh: u64) -> Result<(), i32> {
            let release = ReleaseIn {
                fh,
                ..Default::default()
            };
            match self.call(Opcode::Release, inode, release.as_slice()).error {
                0 => Ok(()),
                e => Err(-e),
            }
        }

        pub fn read(
            &mut self,
            inode: u64,
            fh: u64,
            offset: u64,
            size: u32,
        ) -> Result<Vec<u8>, i32> {
            let read = ReadIn {
                fh,
                offset,
                size,
                ..Default::default()
            };
            let reply = self.call(Opcode::Read, inode, read.as_slice());
            match reply.error {
                0 => Ok(reply.body),
                e => Err(-e),
            }
        }

        pub fn write(&mut self, inode: u64, fh: u64, offset: u64, data: &[u8]) -> Result<u32, i32> {
            let write = WriteIn {
                fh,
                offset,
                size: u32::try_from(data.len()).unwrap(),
                ..Default::default()
            };
            let mut body = write.as_slice().to_vec();
            body.extend_from_slice(data);
            let out: WriteOut = self.call(Opcode::Write, inode, &body).ok()?;
            Ok(out.size)
        }

        /// READDIR: the names in the first `size` bytes of the listing.
        pub fn readdir(&mut self, inode: u64, fh: u64, size: u32) -> Result<Vec<String>, i32> {
            let read = ReadIn {
                fh,
                size,
                ..Default::default()
            };
            let reply = self.call(Opcode::Readdir, inode, read.as_slice());
            if reply.error != 0 {
                return Err(-reply.error);
            }
            let mut names = Vec::new();
            let mut rest = &reply.body[..];
            let header = std::mem::size_of::<Dirent>();
            while rest.len() >= header {
                let dirent = Dirent::from_slice(&rest[..header]).copied().unwrap();
                let namelen = dirent.namelen as usize;
                names.push(String::from_utf8(rest[header..header + namelen].to_vec()).unwrap());
                let record = (header + namelen + 7) & !7;
                rest = &rest[record.min(rest.len())..];
            }
            Ok(names)
        }

        pub fn mkdir(&mut self, parent: u64, name: &str, mode: u32) -> Result<EntryOut, i32> {
            let mkdir = MkdirIn { mode, umask: 0 };
            let mut body = mkdir.as_slice().to_vec();
            body.extend(cstr(name));
            self.call(Opcode::Mkdir, parent, &body).ok()
        }

        pub fn mknod(
            &mut self,
            parent: u64,
            name: &str,
            mode: u32,
            rdev: u32,
        ) -> Result<EntryOut, i32> {
            let mknod = MknodIn {
                mode,
                rdev,
                umask: 0,
                padding: 0,
            };
            let mut body = mknod.as_slice().to_vec();
            body.extend(cstr(name));
            self.call(Opcode::Mknod, parent, &body).ok()
        }

        /// CREATE: the new entry and its open handle.
        pub fn create(
            &mut self,
            parent: u64,
            name: &str,
            mode: u32,
        ) -> Result<(EntryOut, u64), i32> {
            let create = CreateIn {
                flags: (libc::O_RDWR | libc::O_CREAT) as u32,
                mode,
                umask: 0,
                fuse_flags: 0,
            };
            let mut body = create.as_slice().to_vec();
            body.extend(cstr(name));
            let reply = self.call(Opcode::Create, parent, &body);
            let entry: EntryOut = reply.ok()?;
            let size = std::mem::size_of::<EntryOut>();
            let open =
                OpenOut::from_slice(&reply.body[size..size + std::mem::size_of::<OpenOut>()])
                    .copied()
                    .unwrap();
            Ok((entry, open.fh))
        }

        pub fn symlink(&mut self, parent: u64, name: &str, target: &str) -> Result<EntryOut, i32> {
            let mut body = cstr(name);
            body.extend(cstr(target));
            self.call(Opcode::Symlink, parent, &body).ok()
        }

        /// A request with no payload beyond the name (UNLINK, RMDIR).
        pub fn named(&mut self, opcode: Opcode, parent: u64, name: &str) -> i32 {
            self.call(opcode, parent, &cstr(name)).errno()
        }

        /// RENAME within one directory.
        pub fn rename(&mut self, dir: u64, from: &str, to: &str) -> i32 {
            let mut body = dir.to_le_bytes().to_vec();
            body.extend(cstr(from));
            body.extend(cstr(to));
            self.call(Opcode::Rename, dir, &body).errno()
        }
    }

    /// Checks a reply's header against the request and splits it off.
    pub fn parse_reply(unique: u64, used_len: u32, reply: &[u8]) -> Reply {
        let size = std::mem::size_of::<OutHeader>();
        assert!(
            reply.len() >= size,
            "no reply header: used length {used_len}"
        );
        let header = OutHeader::from_slice(&reply[..size]).copied().unwrap();
        assert_eq!(header.unique, unique);
        assert_eq!(header.len, used_len, "header length and used length differ");
        Reply {
            error: header.error,
            body: reply[size..].to_vec(),
        }
    }
}
