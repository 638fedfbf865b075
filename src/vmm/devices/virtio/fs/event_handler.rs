//! The file system device's data plane: one worker thread per activated device
//! takes FUSE requests off the queues, has the server answer them and returns
//! each chain with the length of its reply.

use std::io;
use std::mem::size_of;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};

use fuse_backend_rs::abi::fuse_abi::{InHeader, Opcode, OutHeader};
use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::transport::{Reader, VirtioFsWriter};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_CLOEXEC};

use super::guard::GuardedFs;
use crate::vmm::devices::virtio::{GuestMemory, Interrupt, WarnOnce};

/// What the device and its worker share.
struct Shared {
    /// Written on every queue notification (and to stop); the worker blocks
    /// reading it.
    wake: EventFd,
    stop: AtomicBool,
}

/// The thread serving an activated device's queues.
pub(super) struct Worker {
    shared: Arc<Shared>,
    thread: JoinHandle<()>,
}

impl Worker {
    /// Starts serving `queues` (the high-priority queue first). Returns once
    /// the thread is ready, or with why it could not be.
    pub(super) fn start(
        tag: &str,
        mem: GuestMemory,
        queues: Vec<Queue>,
        server: Server<GuardedFs>,
        interrupt: Arc<dyn Interrupt>,
        guest_error: Arc<WarnOnce>,
    ) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            wake: EventFd::new(EFD_CLOEXEC)?,
            stop: AtomicBool::new(false),
        });
        let mut handler = Handler {
            tag: tag.into(),
            mem,
            queues,
            server,
            interrupt,
            guest_error,
        };
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let thread_shared = shared.clone();
        let thread = thread::Builder::new()
            .name(format!("fs-{tag}"))
            .spawn(move || {
                let ready = private_fs_context();
                let ok = ready.is_ok();
                // The receiver waits for this message; it cannot be gone.
                let _ = ready_tx.send(ready);
                if ok {
                    handler.run(&thread_shared);
                }
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self { shared, thread }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(io::Error::other(
                    "the virtio-fs worker ended before it started",
                ))
            }
        }
    }

    /// Wakes the worker to look at its queues.
    pub(super) fn kick(&self) {
        // A blocking eventfd write fails only when the counter would overflow,
        // and then the worker has a wake-up pending anyway.
        let _ = self.shared.wake.write(1);
    }

    /// Stops the worker once the request it is serving (if any) is answered.
    pub(super) fn stop(self) {
        self.shared.stop.store(true, Ordering::Release);
        self.kick();
        // A panic in the worker has already been reported on stderr.
        let _ = self.thread.join();
    }
}

/// Gives the calling thread its own umask (and cwd), then sets the umask to
/// 0: the guest has applied its own umask to the modes it sends, and the
/// passthrough's `umask(0)` must not reach the rest of the process, whose
/// files would then be created world-writable.
fn private_fs_context() -> io::Result<()> {
    // SAFETY: unshare takes no pointers; CLONE_FS only gives this thread a
    // copy of the cwd, root and umask it shared with the process.
    if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: umask takes no pointers and cannot fail; after the unshare above
    // it changes this thread's umask only.
    unsafe { libc::umask(0) };
    Ok(())
}

/// The activated queues and the FUSE session behind them.
struct Handler {
    tag: String,
    mem: GuestMemory,
    queues: Vec<Queue>,
    server: Server<GuardedFs>,
    interrupt: Arc<dyn Interrupt>,
    guest_error: Arc<WarnOnce>,
}

impl Handler {
    fn run(&mut self, shared: &Shared) {
        loop {
            // The first pass serves what the driver queued before DRIVER_OK.
            for index in 0..self.queues.len() {
                self.process_queue(index);
            }
            loop {
                match shared.wake.read() {
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        eprintln!("a3s-box: virtio-fs {}: the worker stops: {e}", self.tag);
                        return;
                    }
                }
            }
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
        }
    }

    /// Serves every chain on queue `index`, interrupting after each reply.
    /// The driver is asked not to notify while we are at it.
    fn process_queue(&mut self, index: usize) {
        let Handler {
            tag,
            mem,
            queues,
            server,
            interrupt,
            guest_error,
        } = self;
        let queue = &mut queues[index];
        let warn = |what: std::fmt::Arguments<'_>| {
            guest_error.warn(format_args!("virtio-fs {tag} queue {index}"), what);
        };
        loop {
            if let Err(e) = queue.disable_notification(&*mem) {
                warn(format_args!("could not update the used ring flags: {e}"));
            }
            let mut served = false;
            while let Some(chain) = queue.pop_descriptor_chain(&*mem) {
                served = true;
                let head = chain.head_index();
                let len = serve(server, mem, chain, &warn);
                if let Err(e) = queue.add_used(&*mem, head, len) {
                    warn(format_args!("could not return chain {head}: {e}"));
                    continue;
                }
                // Without EVENT_IDX this is always true; it keeps us right if
                // it is offered.
                if queue.needs_notification(&*mem).unwrap_or(true) {
                    interrupt.signal_used_queue();
                }
            }
            match queue.enable_notification(&*mem) {
                // More came while notifications were off.
                Ok(true) if served => {}
                // Nothing more, or a ring we cannot pop from: wait for a kick.
                Ok(_) => break,
                Err(e) => {
                    warn(format_args!("could not update the used ring flags: {e}"));
                    break;
                }
            }
        }
    }
}

/// Requests the kernel sends without waiting for a reply.
fn expects_reply(opcode: u32) -> bool {
    ![
        Opcode::Forget as u32,
        Opcode::BatchForget as u32,
        Opcode::Interrupt as u32,
    ]
    .contains(&opcode)
}

/// Answers the FUSE request in `chain`; returns the length of the reply
/// written to its device-writable part (0 when there is none).
fn serve(
    server: &Server<GuardedFs>,
    mem: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
    warn: &dyn Fn(std::fmt::Arguments<'_>),
) -> u32 {
    let head = chain.head_index();
    let reader = match Reader::from_descriptor_chain(mem, chain.clone()) {
        Ok(reader) => reader,
        Err(e) => {
            warn(format_args!("chain {head} has an unusable buffer: {e}"));
            return 0;
        }
    };
    let writer = match VirtioFsWriter::new(mem, chain) {
        Ok(writer) => writer,
        Err(e) => {
            warn(format_args!("chain {head} has an unusable buffer: {e}"));
            return 0;
        }
    };
    // Kept to answer ourselves when the server does not.
    let Ok(header) = reader.clone().read_obj::<InHeader>() else {
        warn(format_args!("chain {head} is too short for a FUSE header"));
        return 0;
    };
    let mut fallback = writer.clone();

    match server.handle_message(reader, writer.into(), None, None) {
        Ok(len) if len > 0 => u32::try_from(len).unwrap_or(u32::MAX),
        Ok(_) if !expects_reply(header.opcode) => 0,
        // DESTROY: the server answers but reports no length.
        Ok(_) => write_reply_header(&mut fallback, header.unique, 0),
        Err(e) if !expects_reply(header.opcode) => {
            warn(format_args!("malformed request: {e}"));
            0
        }
        Err(e) => {
            warn(format_args!("malformed request: {e}"));
            // Whatever the server may have begun to write is overwritten: the
            // guest kernel waits for an answer to this `unique`.
            let errno = match e {
                fuse_backend_rs::Error::EncodeMessage(_)
                | fuse_backend_rs::Error::FailedToWrite(_)
                | fuse_backend_rs::Error::FailedToSplitWriter(_)
                | fuse_backend_rs::Error::FailedToRemapID(_) => libc::EIO,
                _ => libc::EINVAL,
            };
            write_reply_header(&mut fallback, header.unique, -errno)
        }
    }
}

/// Writes a reply that is only a header; returns its length, or 0 when the
/// buffer cannot hold it.
fn write_reply_header(writer: &mut VirtioFsWriter<'_>, unique: u64, error: i32) -> u32 {
    const LEN: u32 = size_of::<OutHeader>() as u32;
    let header = OutHeader {
        len: LEN,
        error,
        unique,
    };
    match writer.write_obj(header) {
        Ok(()) => LEN,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    use std::path::Path;

    use fuse_backend_rs::abi::fuse_abi::{
        AccessIn, BatchForgetIn, ForgetIn, ForgetOne, FsOptions as FuseOptions, InitIn, InitIn2,
        InitOut, SetattrIn, SetattrValid,
    };
    use vm_memory::{ByteValued, Bytes};
    use vmm_sys_util::tempdir::TempDir;

    use super::*;
    use crate::vmm::devices::virtio::fs::test_support::*;
    use crate::vmm::devices::virtio::fs::FsOptions;

    const ROOT: u64 = 1;
    const READ_ONLY: FsOptions = FsOptions {
        read_only: true,
        cache: crate::vmm::devices::virtio::fs::CachePolicy::Auto,
        overlay_upper: false,
    };

    fn mode_type(mode: u32) -> u32 {
        mode & libc::S_IFMT
    }

    /// The process's umask, as the kernel reports it.
    fn process_umask() -> String {
        fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("Umask:"))
            .unwrap()
            .to_owned()
    }

    /// A share inside an outer directory, to see that nothing lands beside it.
    struct Share {
        outer: TempDir,
    }

    impl Share {
        fn new() -> Self {
            let outer = TempDir::new().unwrap();
            fs::create_dir(outer.as_path().join("share")).unwrap();
            Share { outer }
        }

        fn path(&self) -> std::path::PathBuf {
            self.outer.as_path().join("share")
        }

        /// Everything in the outer directory but the share itself.
        fn beside(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(self.outer.as_path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n != "share")
                .collect();
            names.sort();
            names
        }
    }

    fn write_host(dir: &Path, name: &str, data: &[u8]) {
        fs::write(dir.join(name), data).unwrap();
    }

    #[test]
    fn lookup_getattr_open_and_read_serve_the_host_file() {
        let share = Share::new();
        write_host(&share.path(), "hello", b"hello, guest");
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), FsOptions::default());

        let entry = guest.lookup(ROOT, "hello").unwrap();
        assert_eq!(mode_type(entry.attr.mode), libc::S_IFREG);
        assert_eq!(entry.attr.size, 12);
        let attr = guest.getattr(entry.nodeid).unwrap();
        assert_eq!(attr.attr.size, 12);
        assert_eq!(attr.attr.ino, entry.attr.ino);

        let fh = guest.open(entry.nodeid, libc::O_RDONLY).unwrap();
        assert_eq!(
            guest.read(entry.nodeid, fh, 0, 4096).unwrap(),
            b"hello, guest"
        );
        assert_eq!(guest.read(entry.nodeid, fh, 7, 5).unwrap(), b"guest");
        assert_eq!(guest.read(entry.nodeid, fh, 100, 5).unwrap(), b"");
        guest.release(entry.nodeid, fh).unwrap();
        assert_eq!(guest.lookup(ROOT, "missing").unwrap_err(), libc::ENOENT);
    }

    #[test]
    fn create_and_write_reach_the_host_file() {
        let share = Share::new();
        write_host(&share.path(), "old", b"0123456789");
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), FsOptions::default());

        let (entry, fh) = guest.create(ROOT, "new", 0o640).unwrap();
        assert_eq!(guest.write(entry.nodeid, fh, 0, b"data").unwrap(), 4);
        guest.release(entry.nodeid, fh).unwrap();
        let path = share.path().join("new");
        assert_eq!(fs::read(&path).unwrap(), b"data");
        // The guest's mode, not masked again by the host's umask.
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o640
        );

        let old = guest.lookup(ROOT, "old").unwrap().nodeid;
        let fh = guest.open(old, libc::O_RDWR).unwrap();
        assert_eq!(guest.write(old, fh, 2, b"ab").unwrap(), 2);
        assert_eq!(fs::read(share.path().join("old")).unwrap(), b"01ab456789");
    }

    #[test]
    fn mkdir_creates_a_host_directory_with_the_guest_mode() {
        let share = Share::new();
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), FsOptions::default());

        let dir = guest.mkdir(ROOT, "d", 0o777).unwrap();
        assert_eq!(mode_type(dir.attr.mode), libc::S_IFDIR);
        guest.mkdir(dir.nodeid, "inner", 0o1777).unwrap();
        let meta = fs::metadata(share.path().join("d")).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o777);
        let inner = fs::metadata(share.path().join("d/inner")).unwrap();
        assert_eq!(inner.permissions().mode() & 0o7777, 0o1777);
        assert_eq!(guest.mkdir(ROOT, "d", 0o755).unwrap_err(), libc::EEXIST);
    }

    #[test]
    fn serving_leaves_the_process_umask_alone() {
        let before = process_umask();
        let share = Share::new();
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), FsOptions::default());
        guest.mkdir(ROOT, "d", 0o777).unwrap();
        assert_eq!(process_umask(), before);
    }

    #[test]
    fn the_worker_umask_is_its_own() {
        let before = process_umask();
        let worker_umask = std::thread::spawn(|| {
            private_fs_context().unwrap();
            // SAFETY: umask takes no pointers; this thread has its own.
            unsafe { libc::umask(0o017) };
            fs::read_to_string("/proc/thread-self/status").unwrap()
        })
        .join()
        .unwrap();
        assert!(worker_umask.contains("Umask:\t0017"), "{worker_umask}");
        assert_eq!(process_umask(), before);
    }

    #[test]
    fn readdir_lists_the_host_directory() {
        let share = Share::new();
        write_host(&share.path(), "a", b"");
        write_host(&share.path(), "b", b"");
        fs::create_dir(share.path().join("c")).unwrap();
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), FsOptions::default());

        let fh = guest.opendir(ROOT).unwrap();
        let mut names = guest.readdir(ROOT, fh, 4096).unwrap();
        names.sort();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn unlink_rmdir_and_rename_change_the_host_directory() {
        let share = Share::new();
        write_host(&share.path(), "f", b"x");
        fs::create_dir(share.path().join("d")).unwrap();
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), FsOptions::default());

        assert_eq!(guest.rename(ROOT, "f", "g"), 0);
        assert_eq!(fs::read(share.path().join("g")).unwrap(), b"x");
        assert_eq!(guest.named(Opcode::Unlink, ROOT, "g"), 0);
        assert_eq!(guest.named(Opcode::Rmdir, ROOT, "d"), 0);
        assert_eq!(fs::read_dir(share.path()).unwrap().count(), 0);
    }

    #[test]
    fn symlink_creates_a_host_symlink_served_as_a_link() {
        let share = Share::new();
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), FsOptions::default());

        let link = guest.symlink(ROOT, "link", "/etc").unwrap();
        assert_eq!(mode_type(link.attr.mode), libc::S_IFLNK);
        assert_eq!(
            fs::read_link(share.path().join("link")).unwrap(),
            Path::new("/etc")
        );
        assert_eq!(guest.readlink(link.nodeid).unwrap(), b"/etc");
        // It is never walked: /etc/passwd is not found below it.
        assert_eq!(
            guest.lookup(link.nodeid, "passwd").unwrap_err(),
            libc::ENOTDIR
        );
    }

    #[test]
    fn a_missing_name_is_remembered_only_where_the_guest_alone_changes_the_share() {
        let share = Share::new();
        let mem = memory();
        let always = FsOptions {
            cache: crate::vmm::devices::virtio::fs::CachePolicy::Always,
            ..FsOptions::default()
        };
        let mut guest = Guest::mounted(&mem, &share.path(), always);
        let entry = guest.lookup(ROOT, "missing").unwrap();
        assert_eq!(entry.nodeid, 0, "a negative entry");
        assert_eq!(entry.entry_valid, 24 * 60 * 60);
        // Other errors stay errors.
        assert_eq!(guest.lookup(ROOT, "..").unwrap_err(), libc::EINVAL);
        // The device itself keeps nothing: a name made since is found.
        write_host(&share.path(), "missing", b"now here");
        assert_ne!(guest.lookup(ROOT, "missing").unwrap().nodeid, 0);

        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), FsOptions::default());
        assert_eq!(guest.lookup(ROOT, "absent").unwrap_err(), libc::ENOENT);
    }

    #[test]
    fn lookup_of_dot_and_dotdot_is_refused() {
        let share = Share::new();
        fs::create_dir(share.path().join("sub")).unwrap();
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), FsOptions::default());
        let sub = guest.lookup(ROOT, "sub").unwrap().nodeid;

        for parent in [ROOT, sub] {
            assert_eq!(guest.lookup(parent, "..").unwrap_err(), libc::EINVAL);
            assert_eq!(guest.lookup(parent, ".").unwrap_err(), libc::EINVAL);
        }
        assert_eq!(guest.lookup_bytes(ROOT, b"").unwrap_err(), libc::EINVAL);
    }

    #[test]
    fn names_with_a_slash_are_refused_everywhere() {
        let share = Share::new();
        fs::create_dir(share.path().join("sub")).unwrap();
        write_host(&share.path().join("sub"), "file", b"");
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), FsOptions::default());

        for name in ["sub/file", "../share", "/etc", "sub/"] {
            assert_eq!(
                guest.lookup(ROOT, name).unwrap_err(),
                libc::EINVAL,
                "{name}"
            );
        }
        assert_eq!(
            guest.mkdir(ROOT, "../made", 0o755).unwrap_err(),
            libc::EINVAL
        );
        assert_eq!(
            guest.create(ROOT, "../made", 0o644).unwrap_err(),
            libc::EINVAL
        );
        assert_eq!(
            guest.symlink(ROOT, "../made", "x").unwrap_err(),
            libc::EINVAL
        );
        assert_eq!(
            guest
                .mknod(ROOT, "../made", libc::S_IFIFO | 0o644, 0)
                .unwrap_err(),
            libc::EINVAL
        );
        assert_eq!(guest.rename(ROOT, "sub", "../made"), libc::EINVAL);
        assert_eq!(guest.rename(ROOT, "../share", "made"), libc::EINVAL);
        assert_eq!(guest.named(Opcode::Unlink, ROOT, "../share"), libc::EINVAL);
        assert_eq!(guest.named(Opcode::Rmdir, ROOT, ".."), libc::EINVAL);
        assert!(share.beside().is_empty(), "{:?}", share.beside());
        assert!(share.path().join("sub").is_dir());
    }

    #[test]
    fn a_symlink_to_etc_is_served_as_a_link_and_never_followed() {
        let share = Share::new();
        std::os::unix::fs::symlink("/etc", share.path().join("escape")).unwrap();
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), FsOptions::default());

        let escape = guest.lookup(ROOT, "escape").unwrap();
        assert_eq!(mode_type(escape.attr.mode), libc::S_IFLNK);
        assert_eq!(guest.readlink(escape.nodeid).unwrap(), b"/etc");
        assert_eq!(
            mode_type(guest.getattr(escape.nodeid).unwrap().attr.mode),
            libc::S_IFLNK
        );
        assert_eq!(
            guest.lookup(escape.nodeid, "passwd").unwrap_err(),
            libc::ENOTDIR
        );
        assert!(guest.open(escape.nodeid, libc::O_RDONLY).is_err());
        assert!(guest.opendir(escape.nodeid).is_err());
        assert!(guest.mkdir(escape.nodeid, "planted", 0o755).is_err());
        assert!(guest.create(escape.nodeid, "planted", 0o644).is_err());
        assert!(!Path::new("/etc/planted").exists());
    }

    #[test]
    fn a_symlink_to_dotdot_is_never_followed() {
        let share = Share::new();
        std::os::unix::fs::symlink("../..", share.path().join("up")).unwrap();
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), FsOptions::default());

        let up = guest.lookup(ROOT, "up").unwrap();
        assert_eq!(mode_type(up.attr.mode), libc::S_IFLNK);
        assert_eq!(guest.readlink(up.nodeid).unwrap(), b"../..");
        assert_eq!(guest.lookup(up.nodeid, "etc").unwrap_err(), libc::ENOTDIR);
        assert_eq!(guest.lookup(up.nodeid, "share").unwrap_err(), libc::ENOTDIR);

        // One the guest makes itself behaves the same.
        let root = guest.symlink(ROOT, "root", "/").unwrap();
        assert_eq!(guest.lookup(root.nodeid, "etc").unwrap_err(), libc::ENOTDIR);
        assert!(guest.open(root.nodeid, libc::O_RDONLY).is_err());
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_keeps_serving_the_original() {
        let share = Share::new();
        let dir = share.path().join("dir");
        fs::create_dir(&dir).unwrap();
        write_host(&dir, "inner", b"original");
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), FsOptions::default());
        let held = guest.lookup(ROOT, "dir").unwrap().nodeid;

        // Between the guest's lookup and its use, the path changes meaning.
        fs::rename(&dir, share.path().join("dir.old")).unwrap();
        std::os::unix::fs::symlink("/etc", &dir).unwrap();

        let inner = guest.lookup(held, "inner").unwrap().nodeid;
        let fh = guest.open(inner, libc::O_RDONLY).unwrap();
        assert_eq!(guest.read(inner, fh, 0, 64).unwrap(), b"original");
        assert_eq!(guest.lookup(held, "passwd").unwrap_err(), libc::ENOENT);
        let fh = guest.opendir(held).unwrap();
        assert_eq!(guest.readdir(held, fh, 4096).unwrap(), ["inner"]);

        // A fresh lookup sees the symlink, and does not follow it.
        let now = guest.lookup(ROOT, "dir").unwrap();
        assert_ne!(now.nodeid, held);
        assert_eq!(mode_type(now.attr.mode), libc::S_IFLNK);
        assert_eq!(
            guest.lookup(now.nodeid, "passwd").unwrap_err(),
            libc::ENOTDIR
        );
    }

    #[test]
    fn device_nodes_are_refused_but_fifos_are_made() {
        let share = Share::new();
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), FsOptions::default());

        let null = libc::makedev(1, 3) as u32;
        assert_eq!(
            guest
                .mknod(ROOT, "null", libc::S_IFCHR | 0o666, null)
                .unwrap_err(),
            libc::EPERM
        );
        assert_eq!(
            guest
                .mknod(ROOT, "disk", libc::S_IFBLK | 0o666, null)
                .unwrap_err(),
            libc::EPERM
        );
        let fifo = guest.mknod(ROOT, "fifo", libc::S_IFIFO | 0o644, 0).unwrap();
        assert_eq!(mode_type(fifo.attr.mode), libc::S_IFIFO);
        assert!(fs::symlink_metadata(share.path().join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        assert!(!share.path().join("null").exists());
        // A special file is never opened for I/O (it could block the worker).
        assert!(guest.open(fifo.nodeid, libc::O_RDONLY).is_err());
    }

    #[test]
    fn an_overlay_upper_share_takes_whiteouts_and_no_other_device() {
        let share = Share::new();
        let mem = memory();
        let upper = FsOptions {
            overlay_upper: true,
            ..FsOptions::default()
        };
        let mut guest = Guest::mounted(&mem, &share.path(), upper);
        let whiteout = guest.mknod(ROOT, "gone", libc::S_IFCHR, 0).unwrap();
        assert_eq!(mode_type(whiteout.attr.mode), libc::S_IFCHR);
        let m = fs::symlink_metadata(share.path().join("gone")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(std::os::unix::fs::MetadataExt::rdev(&m), 0);
        let null = libc::makedev(1, 3) as u32;
        assert_eq!(
            guest
                .mknod(ROOT, "null", libc::S_IFCHR | 0o666, null)
                .unwrap_err(),
            libc::EPERM
        );
        // Elsewhere even a whiteout is a device node, and refused.
        let plain = Share::new();
        let mut guest = Guest::mounted(&mem, &plain.path(), FsOptions::default());
        assert_eq!(
            guest.mknod(ROOT, "gone", libc::S_IFCHR, 0).unwrap_err(),
            libc::EPERM
        );
    }

    #[test]
    fn a_read_only_share_refuses_every_change() {
        let share = Share::new();
        write_host(&share.path(), "f", b"keep");
        fs::create_dir(share.path().join("d")).unwrap();
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), READ_ONLY);
        let f = guest.lookup(ROOT, "f").unwrap().nodeid;

        assert_eq!(guest.mkdir(ROOT, "new", 0o755).unwrap_err(), libc::EROFS);
        assert_eq!(guest.create(ROOT, "new", 0o644).unwrap_err(), libc::EROFS);
        assert_eq!(guest.symlink(ROOT, "new", "f").unwrap_err(), libc::EROFS);
        assert_eq!(
            guest
                .mknod(ROOT, "new", libc::S_IFIFO | 0o644, 0)
                .unwrap_err(),
            libc::EROFS
        );
        assert_eq!(guest.named(Opcode::Unlink, ROOT, "f"), libc::EROFS);
        assert_eq!(guest.named(Opcode::Rmdir, ROOT, "d"), libc::EROFS);
        assert_eq!(guest.rename(ROOT, "f", "g"), libc::EROFS);
        for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
            assert_eq!(guest.open(f, flags).unwrap_err(), libc::EROFS, "{flags:#x}");
        }
        let truncate = SetattrIn {
            valid: SetattrValid::SIZE.bits(),
            ..Default::default()
        };
        assert_eq!(guest.setattr(f, truncate).unwrap_err(), libc::EROFS);
        let access = AccessIn {
            mask: libc::W_OK as u32,
            padding: 0,
        };
        assert_eq!(
            guest.call(Opcode::Access, f, access.as_slice()).errno(),
            libc::EROFS
        );

        // Reading still works; a write through a read handle is refused too.
        let fh = guest.open(f, libc::O_RDONLY).unwrap();
        assert_eq!(guest.read(f, fh, 0, 64).unwrap(), b"keep");
        assert_eq!(guest.write(f, fh, 0, b"gone").unwrap_err(), libc::EROFS);
        assert_eq!(fs::read(share.path().join("f")).unwrap(), b"keep");
        let mut names: Vec<_> = fs::read_dir(share.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["d", "f"]);
    }

    #[test]
    fn a_header_length_beyond_the_buffer_gets_an_error_reply() {
        let share = Share::new();
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), FsOptions::default());

        let (unique, mut request) = guest.message(Opcode::Lookup, ROOT, &cstr("name"));
        request[..4].copy_from_slice(&4096u32.to_le_bytes());
        let (len, reply) = guest.raw(&request, OUT_LEN);
        assert_eq!(parse_reply(unique, len, &reply).errno(), libc::EINVAL);
    }

    #[test]
    fn a_header_length_above_the_limit_gets_enomem() {
        let share = Share::new();
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), FsOptions::default());

        let (unique, mut request) = guest.message(Opcode::Lookup, ROOT, &cstr("name"));
        request[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let (len, reply) = guest.raw(&request, OUT_LEN);
        assert_eq!(parse_reply(unique, len, &reply).errno(), libc::ENOMEM);
    }

    #[test]
    fn an_unknown_opcode_gets_enosys() {
        let share = Share::new();
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), FsOptions::default());

        let (unique, mut request) = guest.message(Opcode::Getattr, ROOT, &[0; 16]);
        request[4..8].copy_from_slice(&9999u32.to_le_bytes());
        let (len, reply) = guest.raw(&request, OUT_LEN);
        assert_eq!(parse_reply(unique, len, &reply).errno(), libc::ENOSYS);
    }

    #[test]
    fn truncated_requests_are_returned_without_a_reply() {
        let share = Share::new();
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), FsOptions::default());

        let (_, request) = guest.message(Opcode::Getattr, ROOT, &[0; 16]);
        // Shorter than the header.
        assert_eq!(guest.raw(&request[..20], OUT_LEN).0, 0);
        assert_eq!(guest.raw(&[], OUT_LEN).0, 0);
        // A header whose body is cut short.
        let (unique, request) = guest.message(Opcode::Getattr, ROOT, &[0; 16]);
        let (len, reply) = guest.raw(&request[..44], OUT_LEN);
        assert_eq!(parse_reply(unique, len, &reply).errno(), libc::EINVAL);
        // Still serving.
        assert!(guest.getattr(ROOT).is_ok());
    }

    #[test]
    fn a_name_without_its_nul_gets_einval() {
        let share = Share::new();
        write_host(&share.path(), "abc", b"");
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), FsOptions::default());

        let (unique, request) = guest.message(Opcode::Lookup, ROOT, b"abc");
        let (len, reply) = guest.raw(&request, OUT_LEN);
        assert_eq!(parse_reply(unique, len, &reply).errno(), libc::EINVAL);
    }

    #[test]
    fn a_reply_buffer_too_small_gets_eio_or_nothing() {
        let share = Share::new();
        write_host(&share.path(), "f", b"");
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), FsOptions::default());

        let (unique, request) = guest.message(Opcode::Lookup, ROOT, &cstr("f"));
        let (len, reply) = guest.raw(&request, 20);
        assert_eq!(parse_reply(unique, len, &reply).errno(), libc::EIO);

        let (_, request) = guest.message(Opcode::Lookup, ROOT, &cstr("f"));
        assert_eq!(guest.raw(&request, 8).0, 0);
        let (_, request) = guest.message(Opcode::Getattr, ROOT, &[0; 16]);
        assert_eq!(guest.raw(&request, 0).0, 0);
    }

    #[test]
    fn buffers_outside_guest_memory_are_returned_unused() {
        let share = Share::new();
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), FsOptions::default());
        let end = MEM_SIZE as u64;

        let (_, request) = guest.message(Opcode::Getattr, ROOT, &[0; 16]);
        mem.write_slice(&request, vm_memory::GuestAddress(IN_ADDR))
            .unwrap();
        let len = u32::try_from(request.len()).unwrap();
        assert_eq!(
            guest.submit(
                Q::Request,
                &[(end + 0x1000, len, false), (OUT_ADDR, 256, true)]
            ),
            0
        );
        assert_eq!(
            guest.submit(Q::Request, &[(IN_ADDR, len, false), (end - 8, 256, true)]),
            0
        );
        assert_eq!(
            guest.submit(
                Q::Request,
                &[(IN_ADDR, len, false), (u64::MAX - 4, 256, true)]
            ),
            0
        );
        assert!(guest.getattr(ROOT).is_ok());
    }

    #[test]
    fn an_unknown_inode_gets_ebadf() {
        let share = Share::new();
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), FsOptions::default());
        assert_eq!(guest.getattr(12345).unwrap_err(), libc::EBADF);
        assert_eq!(guest.lookup(12345, "x").unwrap_err(), libc::EBADF);
    }

    #[test]
    fn forgets_on_the_hiprio_queue_are_consumed_without_a_reply() {
        let share = Share::new();
        write_host(&share.path(), "f", b"");
        write_host(&share.path(), "g", b"");
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), FsOptions::default());
        let f = guest.lookup(ROOT, "f").unwrap().nodeid;
        let g = guest.lookup(ROOT, "g").unwrap().nodeid;

        let forget = ForgetIn { nlookup: 1 };
        let (_, request) = guest.message(Opcode::Forget, f, forget.as_slice());
        assert_eq!(guest.hiprio(&request), 0);
        assert_eq!(guest.getattr(f).unwrap_err(), libc::EBADF);

        let mut body = BatchForgetIn { count: 1, dummy: 0 }.as_slice().to_vec();
        body.extend_from_slice(
            ForgetOne {
                nodeid: g,
                nlookup: 1,
            }
            .as_slice(),
        );
        let (_, request) = guest.message(Opcode::BatchForget, 0, &body);
        assert_eq!(guest.hiprio(&request), 0);
        assert_eq!(guest.getattr(g).unwrap_err(), libc::EBADF);

        // The root is never forgotten.
        let (_, request) = guest.message(Opcode::Forget, ROOT, forget.as_slice());
        assert_eq!(guest.hiprio(&request), 0);
        assert!(guest.getattr(ROOT).is_ok());
        // Garbage there is dropped too.
        assert_eq!(guest.hiprio(&[0xff; 7]), 0);
    }

    #[test]
    fn init_offers_readdirplus_but_no_dax() {
        let share = Share::new();
        let mem = memory();
        let mut guest = Guest::new(&mem, &share.path(), FsOptions::default());
        let capable =
            FuseOptions::DO_READDIRPLUS | FuseOptions::INIT_EXT | FuseOptions::PERFILE_DAX;
        let init = InitIn {
            major: 7,
            minor: 38,
            max_readahead: 0x2_0000,
            flags: capable.bits() as u32,
        };
        let init2 = InitIn2 {
            flags2: (capable.bits() >> 32) as u32,
            unused: [0; 11],
        };
        let mut body = init.as_slice().to_vec();
        body.extend_from_slice(init2.as_slice());
        let out: InitOut = guest.call(Opcode::Init, 0, &body).ok().unwrap();
        assert_eq!(out.major, 7);
        let enabled =
            FuseOptions::from_bits_truncate(u64::from(out.flags) | (u64::from(out.flags2) << 32));
        assert!(enabled.contains(FuseOptions::DO_READDIRPLUS), "{enabled:?}");
        assert!(!enabled.contains(FuseOptions::PERFILE_DAX), "{enabled:?}");
    }

    #[test]
    fn destroy_is_answered_with_a_bare_header() {
        let share = Share::new();
        let mem = memory();
        let mut guest = Guest::mounted(&mem, &share.path(), FsOptions::default());
        let reply = guest.call(Opcode::Destroy, 0, &[]);
        assert_eq!(reply.error, 0);
        assert!(reply.body.is_empty());
    }
}
