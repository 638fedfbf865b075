//! This device's rules, between the FUSE server and the passthrough: names
//! that could leave a directory, device nodes and (when read-only) any change
//! are refused here, before the passthrough sees them.
//!
//! Every request the passthrough serves is forwarded by name below; a request
//! not listed falls to the trait's default, which refuses it (ENOSYS), so a
//! new operation is closed until someone opens it here.

use std::ffi::CStr;
use std::io;
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{
    stat64, statvfs64, CreateIn, FsOptions as FuseOptions, OpenOptions, SetattrValid,
};
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileSystem, GetxattrReply, ListxattrReply, ZeroCopyReader,
    ZeroCopyWriter,
};
use fuse_backend_rs::passthrough::PassthroughFs;

/// Most bytes of directory listing one READDIR gets; the passthrough buffers
/// this much on the host whatever the guest's buffer.
const MAX_READDIR_BYTES: u32 = 1 << 20;

/// The passthrough behind this device's rules.
pub(super) struct GuardedFs {
    inner: PassthroughFs,
    read_only: bool,
    /// The share is an overlay's upper layer (see `FsOptions::overlay_upper`).
    overlay_upper: bool,
    /// Whether we may create files as another user.
    as_root: bool,
    /// How long the guest may remember that a name does not exist; `None`
    /// to ask every time.
    negative_timeout: Option<Duration>,
}

impl GuardedFs {
    pub(super) fn new(
        inner: PassthroughFs,
        read_only: bool,
        overlay_upper: bool,
        negative_timeout: Option<Duration>,
    ) -> Self {
        // SAFETY: geteuid takes no arguments and cannot fail.
        let as_root = unsafe { libc::geteuid() } == 0;
        Self {
            inner,
            read_only,
            overlay_upper,
            as_root,
            negative_timeout,
        }
    }

    /// The context a file is created under. The passthrough switches to the
    /// caller's uid/gid to create it and back to root afterwards. Only root
    /// can do that: anyone else gets EPERM for a uid not its own and, for its
    /// own, loses the call's errno when switching back fails. Without root,
    /// the file is created as our own user, the only owner we can give it.
    fn creator(&self, ctx: &Context) -> Context {
        if self.as_root {
            *ctx
        } else {
            Context {
                uid: 0,
                gid: 0,
                ..*ctx
            }
        }
    }

    /// Refuses to set or remove an attribute other than those an overlay's
    /// upper layer needs: `trusted.overlay.*` (whiteouts of directories,
    /// redirects), and the `user.*` and `security.capability` attributes of
    /// files the box writes. Anything else (`security.selinux`, ACLs …) would
    /// change how the host itself treats a file.
    fn settable_xattr(&self, name: &CStr) -> io::Result<()> {
        let name = name.to_bytes();
        let allowed = name.starts_with(b"trusted.overlay.")
            || name.starts_with(b"user.")
            || name == b"security.capability";
        if self.overlay_upper && allowed {
            Ok(())
        } else {
            Err(errno(libc::EOPNOTSUPP))
        }
    }

    /// Refuses any change when the share is read-only.
    fn writable(&self) -> io::Result<()> {
        if self.read_only {
            Err(errno(libc::EROFS))
        } else {
            Ok(())
        }
    }
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// The answer to a LOOKUP of a name that does not exist, which the guest
/// keeps for `timeout` (FUSE: a zero node ID with a nonzero entry timeout).
fn negative_entry(timeout: Duration) -> Entry {
    Entry {
        inode: 0,
        generation: 0,
        // SAFETY: stat64 is plain old data; all zeroes is a valid value.
        attr: unsafe { std::mem::zeroed() },
        attr_flags: 0,
        attr_timeout: Duration::ZERO,
        entry_timeout: timeout,
    }
}

/// Accepts only a name that stays in its directory: not empty, not `.` or
/// `..`, no `/`. The Linux FUSE client never sends anything else (it walks
/// `.` and `..` itself), so only a hostile guest sees this error.
pub(super) fn check_name(name: &CStr) -> io::Result<()> {
    match name.to_bytes() {
        b"" | b"." | b".." => Err(errno(libc::EINVAL)),
        bytes if bytes.contains(&b'/') => Err(errno(libc::EINVAL)),
        _ => Ok(()),
    }
}

/// Whether `flags` (of an OPEN) would let the file be changed.
fn opens_for_writing(flags: u32) -> bool {
    let flags = flags as i32;
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0
}

impl FileSystem for GuardedFs {
    type Inode = u64;
    type Handle = u64;

    fn init(&self, capable: FuseOptions) -> io::Result<FuseOptions> {
        // There is no DAX window to map files into.
        let want = self.inner.init(capable)? - FuseOptions::PERFILE_DAX;
        // The passthrough asks for neither, which leaves the kernel's writes
        // at 8 KiB a request: with them a write carries up to 1 MiB (256
        // pages, within the request queue's 1024 descriptors), and a
        // sequential write takes 128 times fewer round trips to the VMM.
        Ok(want | (capable & (FuseOptions::BIG_WRITES | FuseOptions::MAX_PAGES)))
    }

    fn destroy(&self) {
        self.inner.destroy()
    }

    fn lookup(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        check_name(name)?;
        match self.inner.lookup(ctx, parent, name) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => match self.negative_timeout {
                // Inode 0 is FUSE's "no such name, and remember that": a PATH
                // search or a failed open costs no second request.
                Some(timeout) => Ok(negative_entry(timeout)),
                None => Err(e),
            },
            other => other,
        }
    }

    fn forget(&self, ctx: &Context, inode: u64, count: u64) {
        self.inner.forget(ctx, inode, count)
    }

    fn batch_forget(&self, ctx: &Context, requests: Vec<(u64, u64)>) {
        self.inner.batch_forget(ctx, requests)
    }

    fn getattr(
        &self,
        ctx: &Context,
        inode: u64,
        handle: Option<u64>,
    ) -> io::Result<(stat64, Duration)> {
        self.inner.getattr(ctx, inode, handle)
    }

    fn setattr(
        &self,
        ctx: &Context,
        inode: u64,
        attr: stat64,
        handle: Option<u64>,
        valid: SetattrValid,
    ) -> io::Result<(stat64, Duration)> {
        self.writable()?;
        self.inner.setattr(ctx, inode, attr, handle, valid)
    }

    fn readlink(&self, ctx: &Context, inode: u64) -> io::Result<Vec<u8>> {
        self.inner.readlink(ctx, inode)
    }

    fn symlink(
        &self,
        ctx: &Context,
        linkname: &CStr,
        parent: u64,
        name: &CStr,
    ) -> io::Result<Entry> {
        self.writable()?;
        check_name(name)?;
        // The target is only stored, never resolved by us: any string will do.
        self.inner
            .symlink(&self.creator(ctx), linkname, parent, name)
    }

    fn mknod(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        rdev: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        self.writable()?;
        check_name(name)?;
        // overlayfs marks a deleted name with a 0:0 character device, which
        // no driver stands behind; every other device node is refused.
        let whiteout = self.overlay_upper && mode & libc::S_IFMT == libc::S_IFCHR && rdev == 0;
        if matches!(mode & libc::S_IFMT, libc::S_IFBLK | libc::S_IFCHR) && !whiteout {
            return Err(errno(libc::EPERM));
        }
        self.inner
            .mknod(&self.creator(ctx), parent, name, mode, rdev, umask)
    }

    fn mkdir(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        self.writable()?;
        check_name(name)?;
        self.inner
            .mkdir(&self.creator(ctx), parent, name, mode, umask)
    }

    fn unlink(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        self.writable()?;
        check_name(name)?;
        self.inner.unlink(ctx, parent, name)
    }

    fn rmdir(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        self.writable()?;
        check_name(name)?;
        self.inner.rmdir(ctx, parent, name)
    }

    fn rename(
        &self,
        ctx: &Context,
        olddir: u64,
        oldname: &CStr,
        newdir: u64,
        newname: &CStr,
        flags: u32,
    ) -> io::Result<()> {
        self.writable()?;
        check_name(oldname)?;
        check_name(newname)?;
        self.inner
            .rename(ctx, olddir, oldname, newdir, newname, flags)
    }

    fn link(&self, ctx: &Context, inode: u64, newparent: u64, newname: &CStr) -> io::Result<Entry> {
        self.writable()?;
        check_name(newname)?;
        self.inner.link(ctx, inode, newparent, newname)
    }

    fn open(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        if opens_for_writing(flags) {
            self.writable()?;
        }
        self.inner.open(ctx, inode, flags, fuse_flags)
    }

    fn create(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        args: CreateIn,
    ) -> io::Result<(Entry, Option<u64>, OpenOptions, Option<u32>)> {
        self.writable()?;
        check_name(name)?;
        self.inner.create(&self.creator(ctx), parent, name, args)
    }

    fn read(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        lock_owner: Option<u64>,
        flags: u32,
    ) -> io::Result<usize> {
        self.inner
            .read(ctx, inode, handle, w, size, offset, lock_owner, flags)
    }

    fn write(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        offset: u64,
        lock_owner: Option<u64>,
        delayed_write: bool,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<usize> {
        self.writable()?;
        self.inner.write(
            ctx,
            inode,
            handle,
            r,
            size,
            offset,
            lock_owner,
            delayed_write,
            flags,
            fuse_flags,
        )
    }

    fn flush(&self, ctx: &Context, inode: u64, handle: u64, lock_owner: u64) -> io::Result<()> {
        self.inner.flush(ctx, inode, handle, lock_owner)
    }

    fn fsync(&self, ctx: &Context, inode: u64, datasync: bool, handle: u64) -> io::Result<()> {
        self.inner.fsync(ctx, inode, datasync, handle)
    }

    fn fallocate(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        mode: u32,
        offset: u64,
        length: u64,
    ) -> io::Result<()> {
        self.writable()?;
        self.inner
            .fallocate(ctx, inode, handle, mode, offset, length)
    }

    fn release(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
        handle: u64,
        flush: bool,
        flock_release: bool,
        lock_owner: Option<u64>,
    ) -> io::Result<()> {
        self.inner
            .release(ctx, inode, flags, handle, flush, flock_release, lock_owner)
    }

    fn statfs(&self, ctx: &Context, inode: u64) -> io::Result<statvfs64> {
        self.inner.statfs(ctx, inode)
    }

    fn setxattr(
        &self,
        ctx: &Context,
        inode: u64,
        name: &CStr,
        value: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        self.writable()?;
        self.settable_xattr(name)?;
        self.inner.setxattr(ctx, inode, name, value, flags)
    }

    fn getxattr(
        &self,
        ctx: &Context,
        inode: u64,
        name: &CStr,
        size: u32,
    ) -> io::Result<GetxattrReply> {
        self.inner.getxattr(ctx, inode, name, size)
    }

    fn listxattr(&self, ctx: &Context, inode: u64, size: u32) -> io::Result<ListxattrReply> {
        self.inner.listxattr(ctx, inode, size)
    }

    fn removexattr(&self, ctx: &Context, inode: u64, name: &CStr) -> io::Result<()> {
        self.writable()?;
        self.settable_xattr(name)?;
        self.inner.removexattr(ctx, inode, name)
    }

    fn opendir(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions)> {
        self.inner.opendir(ctx, inode, flags)
    }

    fn readdir(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        let size = size.min(MAX_READDIR_BYTES);
        self.inner
            .readdir(ctx, inode, handle, size, offset, add_entry)
    }

    fn readdirplus(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        let size = size.min(MAX_READDIR_BYTES);
        self.inner
            .readdirplus(ctx, inode, handle, size, offset, add_entry)
    }

    fn fsyncdir(&self, ctx: &Context, inode: u64, datasync: bool, handle: u64) -> io::Result<()> {
        self.inner.fsyncdir(ctx, inode, datasync, handle)
    }

    fn releasedir(&self, ctx: &Context, inode: u64, flags: u32, handle: u64) -> io::Result<()> {
        self.inner.releasedir(ctx, inode, flags, handle)
    }

    fn access(&self, ctx: &Context, inode: u64, mask: u32) -> io::Result<()> {
        if mask & libc::W_OK as u32 != 0 {
            self.writable()?;
        }
        self.inner.access(ctx, inode, mask)
    }

    fn lseek(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        offset: u64,
        whence: u32,
    ) -> io::Result<u64> {
        self.inner.lseek(ctx, inode, handle, offset, whence)
    }

    // Not forwarded: SETUPMAPPING / REMOVEMAPPING (there is no DAX window) and
    // what the passthrough does not implement (locks, ioctl, bmap, poll).
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &[u8]) -> std::ffi::CString {
        std::ffi::CString::new(s).unwrap()
    }

    #[test]
    fn names_that_leave_the_directory_are_refused() {
        for bad in [
            &b""[..],
            b".",
            b"..",
            b"/",
            b"a/b",
            b"../etc",
            b"/etc",
            b"a/",
        ] {
            let err = check_name(&name(bad)).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{bad:?}");
        }
    }

    #[test]
    fn ordinary_names_are_accepted() {
        for good in [
            &b"a"[..],
            b"...",
            b".hidden",
            b"..a",
            b"a..",
            b"\xff\xfe",
            b" ",
        ] {
            check_name(&name(good)).unwrap();
        }
    }

    #[test]
    fn files_are_created_as_the_caller_only_by_root() {
        let inner = || PassthroughFs::new(Default::default()).unwrap();
        let ctx = Context {
            uid: 1000,
            gid: 100,
            pid: 7,
        };
        let mut fs = GuardedFs::new(inner(), false, false, None);
        fs.as_root = true;
        let as_root = fs.creator(&ctx);
        assert_eq!((as_root.uid, as_root.gid, as_root.pid), (1000, 100, 7));
        fs.as_root = false;
        let unprivileged = fs.creator(&ctx);
        assert_eq!(
            (unprivileged.uid, unprivileged.gid, unprivileged.pid),
            (0, 0, 7)
        );
    }

    #[test]
    fn writes_of_up_to_a_mebibyte_are_asked_for_where_the_kernel_offers_them() {
        let dir = std::env::temp_dir();
        let cfg = fuse_backend_rs::passthrough::Config {
            root_dir: dir.to_string_lossy().into_owned(),
            do_import: true,
            ..Default::default()
        };
        let fs = GuardedFs::new(PassthroughFs::new(cfg).unwrap(), false, false, None);
        let big = FuseOptions::BIG_WRITES | FuseOptions::MAX_PAGES;
        let want = fs.init(big | FuseOptions::PERFILE_DAX).unwrap();
        assert!(want.contains(big), "{want:?}");
        assert!(!want.contains(FuseOptions::PERFILE_DAX));
        // Never more than the kernel offered.
        let want = fs.init(FuseOptions::empty()).unwrap();
        assert!(!want.intersects(big), "{want:?}");
    }

    #[test]
    fn open_flags_that_allow_changes_are_writes() {
        assert!(!opens_for_writing(libc::O_RDONLY as u32));
        assert!(!opens_for_writing(
            (libc::O_RDONLY | libc::O_DIRECTORY) as u32
        ));
        assert!(opens_for_writing(libc::O_WRONLY as u32));
        assert!(opens_for_writing(libc::O_RDWR as u32));
        assert!(opens_for_writing((libc::O_RDONLY | libc::O_TRUNC) as u32));
    }
}
