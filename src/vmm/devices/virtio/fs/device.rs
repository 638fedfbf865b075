//! The file system device's control plane: identity, configuration space,
//! options, activation of the worker that serves the queues.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::passthrough::{self, PassthroughFs};
use virtio_queue::Queue;

use super::event_handler::Worker;
use super::guard::GuardedFs;
use super::{NUM_REQUEST_QUEUES, QUEUE_SIZE, TAG_LEN, VIRTIO_ID_FS};
use crate::vmm::devices::virtio::{
    read_config_bytes, ActivateError, GuestMemory, Interrupt, VirtioDevice, WarnOnce,
};

/// Number of queues: the high-priority queue, then the request queues.
const NUM_QUEUES: usize = 1 + NUM_REQUEST_QUEUES as usize;

const QUEUE_SIZES: [u16; NUM_QUEUES] = [QUEUE_SIZE; NUM_QUEUES];

/// Length of the configuration space: `tag` then `num_request_queues`.
const CONFIG_LEN: usize = TAG_LEN + 4;

/// How long the guest may cache what it learnt about the share.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CachePolicy {
    /// Nothing: every access asks the host. For a directory the host changes
    /// while the guest runs.
    Never,
    /// Close-to-open: file data is revalidated on open, names and attributes
    /// are kept for a second.
    #[default]
    Auto,
    /// Everything, for a day: only for a directory the guest alone changes,
    /// such as a box's root file system.
    Always,
}

/// How a directory is shared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsOptions {
    /// Every request that would change the share gets EROFS.
    pub read_only: bool,
    pub cache: CachePolicy,
    /// The share holds an overlay's upper and work directories: the guest's
    /// overlayfs may create whiteouts (0:0 character devices) and keep its
    /// `trusted.overlay.*` (and files' `user.*` and capability) attributes.
    pub overlay_upper: bool,
}

/// Why a directory could not be shared.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("the virtio-fs tag {tag:?} must be 1 to 36 bytes with no NUL")]
    Tag { tag: String },
    #[error("cannot share {}: it must be an existing directory", path.display())]
    SharedDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot share {}: it is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("cannot share {}: its path is not UTF-8", path.display())]
    NotUtf8 { path: PathBuf },
}

/// virtio-fs: serves one host directory to the guest under a tag.
pub struct Fs {
    config: [u8; CONFIG_LEN],
    /// How each session's passthrough is set up; the root is canonical.
    passthrough: passthrough::Config,
    read_only: bool,
    overlay_upper: bool,
    worker: Option<Worker>,
    /// Complaints about the guest's requests; survives resets so a driver
    /// looping through them cannot flood the log.
    guest_error: Arc<WarnOnce>,
}

impl Fs {
    /// A device that shares `shared_dir` (which must exist and stay a
    /// directory) under `tag`, the name the guest mounts.
    pub fn new(tag: &str, shared_dir: &Path, options: FsOptions) -> Result<Self, FsError> {
        let tag_bytes = tag.as_bytes();
        if tag_bytes.is_empty() || tag_bytes.len() > TAG_LEN || tag_bytes.contains(&0) {
            return Err(FsError::Tag { tag: tag.into() });
        }
        let root = shared_dir
            .canonicalize()
            .map_err(|source| FsError::SharedDir {
                path: shared_dir.into(),
                source,
            })?;
        if !root.is_dir() {
            return Err(FsError::NotADirectory {
                path: shared_dir.into(),
            });
        }
        let Some(root_dir) = root.to_str() else {
            return Err(FsError::NotUtf8 { path: root });
        };

        let mut config = [0; CONFIG_LEN];
        config[..tag_bytes.len()].copy_from_slice(tag_bytes);
        config[TAG_LEN..].copy_from_slice(&u32::from(NUM_REQUEST_QUEUES).to_le_bytes());

        Ok(Self {
            config,
            passthrough: passthrough_config(root_dir, options),
            read_only: options.read_only,
            overlay_upper: options.overlay_upper,
            worker: None,
            guest_error: Arc::new(WarnOnce::default()),
        })
    }

    /// The tag the guest mounts.
    pub fn tag(&self) -> &str {
        let end = self.config[..TAG_LEN]
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(TAG_LEN);
        // `new` copied it from a `&str`.
        std::str::from_utf8(&self.config[..end]).unwrap_or_default()
    }

    /// A fresh FUSE session: no inodes or open files from an earlier one.
    fn new_server(&self) -> io::Result<Server<GuardedFs>> {
        let inner = PassthroughFs::new(self.passthrough.clone())?;
        // A name's absence is kept only where the guest alone changes the
        // share: elsewhere the host could create a name the guest goes on
        // believing is absent.
        let negative_timeout = (self.passthrough.cache_policy == passthrough::CachePolicy::Always)
            .then_some(self.passthrough.entry_timeout);
        Ok(Server::new(GuardedFs::new(
            inner,
            self.read_only,
            self.overlay_upper,
            negative_timeout,
        )))
    }

    fn stop_worker(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop();
        }
    }
}

impl std::fmt::Debug for Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fs")
            .field("tag", &self.tag())
            .field("shared_dir", &self.passthrough.root_dir)
            .field("read_only", &self.read_only)
            .field("active", &self.worker.is_some())
            .finish()
    }
}

/// The passthrough settings for `options`; the rest are chosen for a guest we
/// do not trust.
fn passthrough_config(root_dir: &str, options: FsOptions) -> passthrough::Config {
    // The timeouts are virtiofsd's for the same policies.
    let (policy, timeout) = match options.cache {
        CachePolicy::Never => (passthrough::CachePolicy::Never, Duration::ZERO),
        CachePolicy::Auto => (passthrough::CachePolicy::Auto, Duration::from_secs(1)),
        CachePolicy::Always => (
            passthrough::CachePolicy::Always,
            Duration::from_secs(24 * 60 * 60),
        ),
    };
    passthrough::Config {
        root_dir: root_dir.into(),
        cache_policy: policy,
        entry_timeout: timeout,
        attr_timeout: timeout,
        // The passthrough validates names itself only when it imports its
        // own root; keep it so, on top of our check.
        do_import: true,
        // Inodes stay O_PATH descriptors: file handles need
        // CAP_DAC_READ_SEARCH and would let a handle name any inode on the
        // host file system.
        inode_file_handles: false,
        writeback: false,
        // Extended attributes only where overlayfs needs them: each one is a
        // request per file the guest writes (the kernel asks for
        // security.capability before every write), which other shares skip.
        xattr: options.overlay_upper,
        ..passthrough::Config::default()
    }
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // The configuration space is read-only for the driver (§5.11.4).
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        queues: Vec<Queue>,
        interrupt: Arc<dyn Interrupt>,
    ) -> Result<(), ActivateError> {
        if queues.len() != NUM_QUEUES {
            return Err(ActivateError::QueueCount {
                want: NUM_QUEUES,
                got: queues.len(),
            });
        }
        self.stop_worker();
        let server = self.new_server().map_err(ActivateError::Io)?;
        let worker = Worker::start(
            self.tag(),
            mem,
            queues,
            server,
            interrupt,
            self.guest_error.clone(),
        )
        .map_err(ActivateError::Io)?;
        self.worker = Some(worker);
        Ok(())
    }

    fn queue_notify(&mut self, index: u16) {
        if usize::from(index) < NUM_QUEUES {
            if let Some(worker) = &self.worker {
                worker.kick();
            }
        }
    }

    fn reset(&mut self) {
        // Waits for the request in progress: the rings are the driver's again
        // once this returns.
        self.stop_worker();
    }
}

impl Drop for Fs {
    fn drop(&mut self) {
        self.stop_worker();
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use fuse_backend_rs::abi::fuse_abi::Opcode;
    use virtio_queue::mock::MockSplitQueue;
    use vmm_sys_util::tempdir::TempDir;

    use super::*;
    use crate::vmm::devices::virtio::fs::test_support::*;

    fn share() -> TempDir {
        TempDir::new().unwrap()
    }

    fn config(fs: &Fs, offset: u64, len: usize) -> Vec<u8> {
        let mut data = vec![0xaa; len];
        fs.read_config(offset, &mut data);
        data
    }

    #[test]
    fn identifies_as_a_file_system_device_with_one_request_queue() {
        let dir = share();
        let fs = Fs::new("root", dir.as_path(), FsOptions::default()).unwrap();
        assert_eq!(fs.device_type(), 26);
        assert_eq!(fs.device_features(), 1 << 32);
        assert_eq!(fs.queue_max_sizes(), [1024, 1024]);
    }

    #[test]
    fn config_space_holds_the_tag_and_the_request_queue_count() {
        let dir = share();
        let fs = Fs::new("myfs", dir.as_path(), FsOptions::default()).unwrap();

        let space = config(&fs, 0, CONFIG_LEN);
        assert_eq!(&space[..4], b"myfs");
        assert!(space[4..TAG_LEN].iter().all(|&b| b == 0));
        assert_eq!(space[TAG_LEN..], 1u32.to_le_bytes());
        // The driver reads the count as one 32-bit access.
        assert_eq!(config(&fs, TAG_LEN as u64, 4), 1u32.to_le_bytes());
        assert_eq!(fs.tag(), "myfs");
    }

    #[test]
    fn config_reads_past_the_end_are_zero_and_writes_change_nothing() {
        let dir = share();
        let mut fs = Fs::new("myfs", dir.as_path(), FsOptions::default()).unwrap();
        assert_eq!(config(&fs, 38, 4), [0, 0, 0, 0]);
        assert_eq!(config(&fs, 40, 4), [0; 4]);
        assert_eq!(config(&fs, u64::MAX, 4), [0; 4]);
        fs.write_config(0, b"evil");
        assert_eq!(config(&fs, 0, 4), *b"myfs");
    }

    #[test]
    fn a_tag_of_36_bytes_fills_the_field_without_a_nul() {
        let dir = share();
        let tag = "t".repeat(TAG_LEN);
        let fs = Fs::new(&tag, dir.as_path(), FsOptions::default()).unwrap();
        assert_eq!(config(&fs, 0, TAG_LEN), tag.as_bytes());
        assert_eq!(fs.tag(), tag);
    }

    #[test]
    fn new_rejects_an_empty_long_or_nul_tag() {
        let dir = share();
        for tag in [String::new(), "t".repeat(TAG_LEN + 1), "a\0b".into()] {
            let err = Fs::new(&tag, dir.as_path(), FsOptions::default()).unwrap_err();
            assert!(matches!(err, FsError::Tag { .. }), "{err:?}");
        }
        // 36 bytes of UTF-8 are fewer than 36 characters.
        let err = Fs::new(&"é".repeat(19), dir.as_path(), FsOptions::default()).unwrap_err();
        assert!(matches!(err, FsError::Tag { .. }), "{err:?}");
    }

    #[test]
    fn new_rejects_a_missing_directory_and_a_file() {
        let dir = share();
        let missing = dir.as_path().join("missing");
        let err = Fs::new("t", &missing, FsOptions::default()).unwrap_err();
        assert!(matches!(err, FsError::SharedDir { .. }), "{err:?}");

        let file = dir.as_path().join("file");
        fs::write(&file, b"").unwrap();
        let err = Fs::new("t", &file, FsOptions::default()).unwrap_err();
        assert!(matches!(err, FsError::NotADirectory { .. }), "{err:?}");
    }

    #[test]
    fn a_symlink_to_the_share_shares_its_target() {
        let dir = share();
        let real = dir.as_path().join("real");
        fs::create_dir(&real).unwrap();
        fs::write(real.join("hello"), b"hi").unwrap();
        let link = dir.as_path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &link, FsOptions::default());
        assert!(guest.lookup(1, "hello").is_ok());
    }

    #[test]
    fn activation_needs_the_hiprio_and_one_request_queue() {
        let dir = share();
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
        for count in [0, 1, 3] {
            let queues = (0..count).map(|_| vq.create_queue().unwrap()).collect();
            let mut fs = Fs::new("t", dir.as_path(), FsOptions::default()).unwrap();
            let err = fs
                .activate(mem.clone(), queues, Arc::new(CountingInterrupt::default()))
                .unwrap_err();
            assert!(
                matches!(err, ActivateError::QueueCount { want: 2, got } if got == count),
                "{err:?}"
            );
            assert!(fs.worker.is_none());
        }
    }

    #[test]
    fn notify_before_activation_does_nothing() {
        let dir = share();
        let mut fs = Fs::new("t", dir.as_path(), FsOptions::default()).unwrap();
        fs.queue_notify(0);
        fs.queue_notify(1);
        assert!(fs.worker.is_none());
    }

    #[test]
    fn reset_stops_serving_and_reactivation_starts_a_new_session() {
        let dir = share();
        fs::write(dir.as_path().join("f"), b"").unwrap();
        let mem = memory();
        let mut guest = Guest::mounted(&mem, dir.as_path(), FsOptions::default());
        let inode = guest.lookup(1, "f").unwrap().nodeid;

        guest.fs.reset();
        assert!(guest.fs.worker.is_none());

        // A new driver: new rings, a new session that knows no inode yet.
        let fs = std::mem::replace(
            &mut guest.fs,
            Fs::new("t", dir.as_path(), FsOptions::default()).unwrap(),
        );
        drop(guest);
        let mem = memory();
        let mut guest = Guest::with_device(&mem, fs);
        assert_eq!(guest.getattr(inode).unwrap_err(), libc::EBADF);
        guest
            .init()
            .ok::<fuse_backend_rs::abi::fuse_abi::InitOut>()
            .unwrap();
        assert!(guest.lookup(1, "f").is_ok());
    }

    #[test]
    fn two_devices_serve_their_own_directories() {
        let (a, b) = (share(), share());
        fs::write(a.as_path().join("only-in-a"), b"").unwrap();
        fs::write(b.as_path().join("only-in-b"), b"").unwrap();
        let (mem_a, mem_b) = (memory(), memory());
        let mut guest_a = Guest::with_device(
            &mem_a,
            Fs::new("a", a.as_path(), FsOptions::default()).unwrap(),
        );
        let mut guest_b = Guest::with_device(
            &mem_b,
            Fs::new("b", b.as_path(), FsOptions::default()).unwrap(),
        );
        guest_a.init();
        guest_b.init();

        assert!(guest_a.lookup(1, "only-in-a").is_ok());
        assert_eq!(guest_a.lookup(1, "only-in-b").unwrap_err(), libc::ENOENT);
        assert!(guest_b.lookup(1, "only-in-b").is_ok());
        assert_eq!(guest_b.lookup(1, "only-in-a").unwrap_err(), libc::ENOENT);
        assert_eq!(guest_a.fs.tag(), "a");
        assert_eq!(guest_b.fs.tag(), "b");
    }

    #[test]
    fn each_notify_is_answered_with_an_interrupt() {
        let dir = share();
        let mem = memory();
        let mut guest = Guest::mounted(&mem, dir.as_path(), FsOptions::default());
        let before = guest.interrupt.used();
        let reply = guest.call(Opcode::Getattr, 1, &[0; 16]);
        assert_eq!(reply.error, 0);
        // The used entry is written before the interrupt is raised.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while guest.interrupt.used() == before {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
