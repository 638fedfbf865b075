//! Applies OCI image layers (tar, optionally gzip- or zstd-compressed) to a root
//! directory, one layer per call, lowest layer first.
//!
//! A layer is untrusted input. Whatever it contains, nothing is written outside the
//! target: every parent directory of an entry is resolved one component at a time with
//! `lstat`, and a component that is a symlink is refused rather than followed, whether
//! it came from a lower layer or from earlier in the same layer. Symlink *entries* are
//! stored verbatim (absolute targets such as `/etc/x -> /etc/y` are normal in images);
//! they are only never written through. The target is assumed to be private to the
//! caller while unpacking: the checks are not meant to race a concurrent writer.
//!
//! Path rules: leading `/` and `.` components are dropped, so `/etc/passwd` and
//! `./etc/passwd` both land on `<target>/etc/passwd`, as Docker does; any `..`
//! component is refused (Docker would clean `a/../b`; no honest layer contains it).
//!
//! Whiteouts follow the OCI layer spec: `.wh.<name>` removes `<name>` from lower layers
//! and `.wh..wh..opq` empties its directory of everything lower layers put there.
//! Entries of the same layer survive both, wherever they appear in the tar.
//!
//! Known gaps: extended attributes are applied to regular files only (the tar crate
//! sets them; nothing else here may call `setxattr`), and device nodes and fifos need
//! a caller-supplied `mknod`, since creating them is privileged and not in `std`.

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File, FileTimes, OpenOptions, Permissions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tar::EntryType;

/// Marks a directory as opaque: lower layers' contents of it are hidden.
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// Prefix of a whiteout file: `.wh.name` deletes `name` from lower layers.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Default bound on one entry's size.
pub const DEFAULT_MAX_ENTRY_SIZE: u64 = 64 << 30;
/// Default bound on the size of one layer's uncompressed tar stream.
pub const DEFAULT_MAX_TOTAL: u64 = 256 << 30;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Mode bits a layer may set; the file type comes from the entry type.
const MODE_BITS: u32 = 0o7777;

/// Creates a device node or fifo: `mode` carries the file type (`S_IFCHR`, `S_IFBLK`,
/// `S_IFIFO`) and permission bits, `rdev` the device number (`libc::makedev`).
pub type MknodFn = fn(path: &Path, mode: u32, rdev: u64) -> io::Result<()>;

/// Why a layer could not be applied. Entry errors name the entry's path in the tar.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("cannot use {} as the unpack target", .path.display())]
    Target {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the layer stream")]
    Read(#[source] io::Error),
    #[error("layer entry {path:?} would escape the root: {reason}")]
    Escape { path: String, reason: String },
    #[error("layer entry {path:?} is invalid: {reason}")]
    Invalid { path: String, reason: String },
    #[error("layer entry {path:?} claims {size} bytes, more than the {limit}-byte limit")]
    EntryTooLarge { path: String, size: u64, limit: u64 },
    #[error("layer grows beyond the {limit}-byte limit at entry {path:?}")]
    TotalTooLarge { path: String, limit: u64 },
    #[error("cannot unpack layer entry {path:?}")]
    Entry {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Plain,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression a layer media type declares, if it is a layer media type.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::Plain),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Some(Compression::Zstd)
            }
            _ => None,
        }
    }
}

/// Decides how to decompress a layer from its first bytes, falling back to the media
/// type only when too few bytes arrived to tell. The bytes win over the media type, as
/// in containerd: registries and tools mislabel layers, the magic numbers do not lie.
pub fn detect(media_type: Option<&str>, head: &[u8]) -> Compression {
    if head.starts_with(&GZIP_MAGIC) {
        return Compression::Gzip;
    }
    // A zstd stream may open with a skippable frame (magic 0x184D2A5?, little-endian).
    let skippable = head.len() >= 4 && head[0] & 0xf0 == 0x50 && head[1..4] == [0x2a, 0x4d, 0x18];
    if head.starts_with(&ZSTD_MAGIC) || skippable {
        return Compression::Zstd;
    }
    if head.len() >= ZSTD_MAGIC.len() {
        return Compression::Plain;
    }
    media_type
        .and_then(Compression::from_media_type)
        .unwrap_or(Compression::Plain)
}

/// Limits and privileges for [`unpack_layer`].
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Largest size one entry may claim (stored or, for sparse files, apparent).
    pub max_entry_size: u64,
    /// Largest size of the layer's uncompressed tar stream (which bounds the sum of
    /// its entries' sizes), so a small compressed blob cannot expand without limit.
    pub max_total: u64,
    /// Give entries the uid/gid the layer records; only root may, so the default is
    /// whether this process runs as root.
    pub same_owner: bool,
    /// Apply `SCHILY.xattr.*` attributes to regular files; a file system that refuses
    /// them is tolerated and counted in [`UnpackStats::xattrs_skipped`].
    pub xattrs: bool,
    /// Creates device nodes and fifos; `None` skips them (counted in
    /// [`UnpackStats::special_skipped`]) because only a privileged caller can make them.
    pub mknod: Option<MknodFn>,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            max_entry_size: DEFAULT_MAX_ENTRY_SIZE,
            max_total: DEFAULT_MAX_TOTAL,
            same_owner: running_as_root(),
            xattrs: true,
            mknod: None,
        }
    }
}

/// What one layer contained.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Whiteout files and opaque markers applied.
    pub whiteouts: u64,
    pub special_created: u64,
    pub special_skipped: u64,
    pub xattrs_skipped: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
}

/// Applies one layer read from `reader` on top of `target`, an existing directory that
/// holds the layers below it. `media_type` is the layer descriptor's, if known.
pub fn unpack_layer(
    mut reader: impl Read,
    media_type: Option<&str>,
    target: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    let meta = fs::symlink_metadata(target).map_err(|source| UnpackError::Target {
        path: target.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(UnpackError::Target {
            path: target.to_owned(),
            source: io::Error::from_raw_os_error(libc::ENOTDIR),
        });
    }
    let mut head = [0u8; 4];
    let got = read_head(&mut reader, &mut head).map_err(UnpackError::Read)?;
    let stream = io::Cursor::new(head[..got].to_vec()).chain(reader);
    match detect(media_type, &head[..got]) {
        Compression::Plain => unpack_tar(stream, target, opts),
        Compression::Gzip => unpack_tar(flate2::read::MultiGzDecoder::new(stream), target, opts),
        Compression::Zstd => unpack_tar(ZstdFrames::new(BufReader::new(stream)), target, opts),
    }
}

/// Reads up to `head.len()` bytes, stopping early only at end of stream.
fn read_head(reader: &mut impl Read, head: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < head.len() {
        match reader.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn unpack_tar<R: Read>(
    reader: R,
    target: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    // Bounds the decompressed stream itself, not only what entries claim: the tar crate
    // reads PAX headers and GNU long names whole into memory, whatever size they claim.
    let tripped = Rc::new(Cell::new(false));
    let budget = Budget {
        inner: reader,
        left: opts.max_total,
        tripped: Rc::clone(&tripped),
    };
    let mut archive = tar::Archive::new(budget);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_preserve_ownerships(opts.same_owner);
    archive.set_unpack_xattrs(opts.xattrs);
    archive.set_mask(0);
    // Whatever was at a path has been removed before the tar crate writes there.
    archive.set_overwrite(false);

    let mut layer = Layer {
        root: target,
        opts,
        touched: HashSet::new(),
        dir_times: Vec::new(),
        stats: UnpackStats::default(),
        total: 0,
        current: None,
    };
    let result = (|| {
        for entry in archive.entries().map_err(UnpackError::Read)? {
            let mut entry = entry.map_err(UnpackError::Read)?;
            layer.apply(&mut entry)?;
        }
        layer.restore_dir_times();
        Ok(())
    })()
    .and_then(|()| {
        // Read to the end so a digest computed over the stream covers all of it and the
        // compressed trailer (gzip CRC, zstd checksum) gets checked.
        layer.current = None;
        io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(UnpackError::Read)
    });
    match result {
        Ok(_) => Ok(layer.stats),
        Err(_) if tripped.get() => Err(UnpackError::TotalTooLarge {
            path: layer
                .current
                .unwrap_or_else(|| "(between entries)".to_owned()),
            limit: opts.max_total,
        }),
        Err(e) => Err(e),
    }
}

/// Passes at most `left` bytes through, then fails and records that it did.
struct Budget<R> {
    inner: R,
    left: u64,
    tripped: Rc<Cell<bool>>,
}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 && !buf.is_empty() {
            // Exactly at the limit is fine; one byte more is not.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.tripped.set(true);
                    Err(io::Error::other("layer stream exceeds its size limit"))
                }
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// State of one layer being applied.
struct Layer<'a> {
    root: &'a Path,
    opts: &'a UnpackOptions,
    /// Paths (relative to the root) this layer created or holds entries under; whiteouts
    /// and opaque markers only remove what is not in here.
    touched: HashSet<PathBuf>,
    /// Directory mtimes, set last because creating children changes them.
    dir_times: Vec<(PathBuf, SystemTime)>,
    stats: UnpackStats,
    /// Sum of the sizes entries claimed so far.
    total: u64,
    /// The entry being applied, to name it if the stream runs over its budget.
    current: Option<String>,
}

impl Layer<'_> {
    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        self.stats.entries += 1;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        self.current = Some(shown.clone());
        let header = entry.header();
        let mut kind = header.entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        self.check_size(&shown, entry)?;

        let rel = normalize(&raw).map_err(|reason| escape(&shown, reason))?;
        // Pre-POSIX tars mark directories only by a trailing slash.
        if kind == EntryType::Regular && raw.ends_with(b"/") && header.as_ustar().is_none() {
            kind = EntryType::Directory;
        }
        let Some(name) = rel.file_name().map(OsStr::to_owned) else {
            return if kind.is_dir() {
                let root = self.root.to_owned();
                self.set_dir_metadata(&shown, entry, &root, PathBuf::new())
            } else {
                Err(invalid(&shown, "only a directory can replace the root"))
            };
        };
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_owned();

        let name_bytes = name.as_bytes();
        if name_bytes == OPAQUE_WHITEOUT.as_bytes() {
            self.stats.whiteouts += 1;
            return self.opaque(&shown, &parent_rel);
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            // `.wh..wh.*` other than the opaque marker is AUFS bookkeeping, not content.
            if hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                return Ok(());
            }
            self.stats.whiteouts += 1;
            return self.whiteout(&shown, &parent_rel, OsStr::from_bytes(hidden));
        }

        let parent = self.walk(&shown, &parent_rel, true)?.unwrap_or_default();
        self.mark_touched(&rel);
        let dst = parent.join(&name);

        match kind {
            EntryType::Directory => {
                // A directory over a directory merges with it; anything else goes.
                let is_dir = match fs::symlink_metadata(&dst) {
                    Ok(m) if m.is_dir() => true,
                    Ok(_) => {
                        remove_any(&dst).map_err(|e| io_err(&shown, e))?;
                        false
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                    Err(e) => return Err(io_err(&shown, e)),
                };
                if !is_dir {
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&dst)
                        .map_err(|e| io_err(&shown, e))?;
                }
                self.stats.dirs += 1;
                self.set_dir_metadata(&shown, entry, &dst, rel)
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.replace(&shown, &dst)?;
                self.write_file(&shown, entry, &dst)
            }
            EntryType::Symlink => {
                self.replace(&shown, &dst)?;
                entry.unpack(&dst).map_err(|e| io_err(&shown, e))?;
                self.stats.symlinks += 1;
                Ok(())
            }
            EntryType::Link => self.hard_link(&shown, entry, &rel, &dst),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.special(&shown, entry, kind, &dst)
            }
            other => Err(invalid(
                &shown,
                &format!("unsupported entry type {other:?}"),
            )),
        }
    }

    /// Bounds what an entry claims before any of its data is read or written.
    fn check_size<R: Read>(
        &mut self,
        shown: &str,
        entry: &tar::Entry<'_, R>,
    ) -> Result<(), UnpackError> {
        let mut size = entry.size();
        if let Some(gnu) = entry
            .header()
            .as_gnu()
            .filter(|_| entry.header().entry_type().is_gnu_sparse())
        {
            size = size.max(gnu.real_size().map_err(|e| io_err(shown, e))?);
        }
        if size > self.opts.max_entry_size {
            return Err(UnpackError::EntryTooLarge {
                path: shown.to_owned(),
                size,
                limit: self.opts.max_entry_size,
            });
        }
        self.total = self.total.saturating_add(size);
        if self.total > self.opts.max_total {
            return Err(UnpackError::TotalTooLarge {
                path: shown.to_owned(),
                limit: self.opts.max_total,
            });
        }
        Ok(())
    }

    /// Resolves `dir_rel` under the root one component at a time, refusing symlinks and
    /// non-directories. Missing directories are created when `create` (mode 0755, as
    /// Docker does for implied parents); otherwise a missing one yields `None`.
    fn walk(
        &mut self,
        shown: &str,
        dir_rel: &Path,
        create: bool,
    ) -> Result<Option<PathBuf>, UnpackError> {
        let mut abs = self.root.to_owned();
        let mut rel = PathBuf::new();
        for component in dir_rel.iter() {
            abs.push(component);
            rel.push(component);
            match fs::symlink_metadata(&abs) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(escape(
                        shown,
                        &format!("its parent {} is a symlink", rel.display()),
                    ));
                }
                Ok(_) => {
                    return Err(invalid(
                        shown,
                        &format!("its parent {} is not a directory", rel.display()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&abs)
                        .map_err(|e| io_err(shown, e))?;
                    // Independent of the umask.
                    open_dir(&abs)
                        .and_then(|d| d.set_permissions(Permissions::from_mode(0o755)))
                        .map_err(|e| io_err(shown, e))?;
                    self.touched.insert(rel.clone());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_err(shown, e)),
            }
        }
        Ok(Some(abs))
    }

    fn mark_touched(&mut self, rel: &Path) {
        let mut prefix = PathBuf::new();
        for component in rel.iter() {
            prefix.push(component);
            self.touched.insert(prefix.clone());
        }
    }

    /// Removes whatever is at `dst` so the entry starts afresh: a later layer may change
    /// an entry's type, and unlinking first keeps a write from reaching other hard links.
    fn replace(&self, shown: &str, dst: &Path) -> Result<(), UnpackError> {
        match remove_any(dst) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(shown, e)),
        }
    }

    fn write_file<R: Read>(
        &mut self,
        shown: &str,
        entry: &mut tar::Entry<'_, R>,
        dst: &Path,
    ) -> Result<(), UnpackError> {
        let size = entry.size();
        let mtime = entry.header().mtime().map_err(|e| io_err(shown, e))?;
        let has_xattrs = self.opts.xattrs && has_xattrs(entry);
        match entry.unpack(dst) {
            Ok(tar::Unpacked::File(file)) if mtime == 0 => {
                // The tar crate turns mtime 0 into 1; reproducible images use 0.
                let epoch = FileTimes::new()
                    .set_accessed(UNIX_EPOCH)
                    .set_modified(UNIX_EPOCH);
                file.set_times(epoch).map_err(|e| io_err(shown, e))?;
            }
            Ok(_) => {}
            // Extended attributes are set last; a file system (or an unprivileged
            // caller) that refuses them leaves a complete file behind.
            Err(e)
                if has_xattrs
                    && (e.kind() == io::ErrorKind::Unsupported
                        || (e.kind() == io::ErrorKind::PermissionDenied
                            && !self.opts.same_owner))
                    && fs::symlink_metadata(dst).is_ok_and(|m| m.is_file()) =>
            {
                self.stats.xattrs_skipped += 1;
            }
            Err(e) => return Err(io_err(shown, e)),
        }
        self.stats.files += 1;
        self.stats.bytes += size;
        Ok(())
    }

    fn set_dir_metadata<R: Read>(
        &mut self,
        shown: &str,
        entry: &tar::Entry<'_, R>,
        dst: &Path,
        rel: PathBuf,
    ) -> Result<(), UnpackError> {
        let header = entry.header();
        let mode = header.mode().map_err(|e| io_err(shown, e))?;
        let dir = open_dir(dst).map_err(|e| io_err(shown, e))?;
        if self.opts.same_owner {
            let (uid, gid) = owner(shown, header)?;
            std::os::unix::fs::fchown(&dir, Some(uid), Some(gid)).map_err(|e| io_err(shown, e))?;
        }
        // After chown, which clears set-id bits.
        dir.set_permissions(Permissions::from_mode(mode & MODE_BITS))
            .map_err(|e| io_err(shown, e))?;
        if let Some(mtime) = header.mtime().ok().and_then(unix_time) {
            self.dir_times.push((rel, mtime));
        }
        Ok(())
    }

    fn hard_link<R: Read>(
        &mut self,
        shown: &str,
        entry: &tar::Entry<'_, R>,
        rel: &Path,
        dst: &Path,
    ) -> Result<(), UnpackError> {
        let raw = entry
            .link_name_bytes()
            .ok_or_else(|| invalid(shown, "hard link without a target"))?;
        let target_rel = normalize(&raw)
            .map_err(|reason| escape(shown, &format!("hard link target {}", reason)))?;
        let Some(target_name) = target_rel.file_name() else {
            return Err(invalid(shown, "hard link to the root directory"));
        };
        if target_rel == rel {
            return Err(invalid(shown, "hard link to itself"));
        }
        let target_parent_rel = target_rel.parent().unwrap_or(Path::new(""));
        let missing = || {
            invalid(
                shown,
                &format!(
                    "hard link target {} is not unpacked yet",
                    target_rel.display()
                ),
            )
        };
        let target_parent = self
            .walk(shown, target_parent_rel, false)
            .map_err(|e| match e {
                UnpackError::Escape { path, reason } => UnpackError::Escape {
                    path,
                    reason: format!("hard link target: {reason}"),
                },
                other => other,
            })?
            .ok_or_else(missing)?;
        let source = target_parent.join(target_name);
        match fs::symlink_metadata(&source) {
            Ok(m) if m.is_dir() => return Err(invalid(shown, "hard link to a directory")),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
            Err(e) => return Err(io_err(shown, e)),
        }
        self.replace(shown, dst)?;
        // std links the target itself, never what a symlink target points to.
        fs::hard_link(&source, dst).map_err(|e| io_err(shown, e))?;
        self.stats.hardlinks += 1;
        Ok(())
    }

    fn special<R: Read>(
        &mut self,
        shown: &str,
        entry: &tar::Entry<'_, R>,
        kind: EntryType,
        dst: &Path,
    ) -> Result<(), UnpackError> {
        let Some(mknod) = self.opts.mknod else {
            self.stats.special_skipped += 1;
            return Ok(());
        };
        let header = entry.header();
        let mode = header.mode().map_err(|e| io_err(shown, e))? & MODE_BITS;
        let file_type = match kind {
            EntryType::Char => libc::S_IFCHR,
            EntryType::Block => libc::S_IFBLK,
            _ => libc::S_IFIFO,
        };
        let major = header
            .device_major()
            .map_err(|e| io_err(shown, e))?
            .unwrap_or(0);
        let minor = header
            .device_minor()
            .map_err(|e| io_err(shown, e))?
            .unwrap_or(0);
        self.replace(shown, dst)?;
        mknod(dst, file_type | mode, libc::makedev(major, minor)).map_err(|e| io_err(shown, e))?;
        if self.opts.same_owner {
            let (uid, gid) = owner(shown, header)?;
            std::os::unix::fs::lchown(dst, Some(uid), Some(gid)).map_err(|e| io_err(shown, e))?;
        }
        // dst was just made by mknod, so this chmod cannot land on a symlink's target.
        fs::set_permissions(dst, Permissions::from_mode(mode)).map_err(|e| io_err(shown, e))?;
        self.stats.special_created += 1;
        Ok(())
    }

    /// `.wh.<hidden>` in `parent_rel`: removes `hidden` unless this layer put it there,
    /// in which case only what lower layers left inside it goes.
    fn whiteout(
        &mut self,
        shown: &str,
        parent_rel: &Path,
        hidden: &OsStr,
    ) -> Result<(), UnpackError> {
        if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.as_bytes().contains(&b'/')
        {
            return Err(invalid(shown, "whiteout names no file"));
        }
        let Some(parent) = self.walk(shown, parent_rel, false)? else {
            return Ok(());
        };
        let victim = parent.join(hidden);
        let victim_rel = parent_rel.join(hidden);
        let result = if self.touched.contains(&victim_rel) {
            match fs::symlink_metadata(&victim) {
                Ok(m) if m.is_dir() => self.prune_lower(&victim_rel, &victim),
                _ => Ok(()),
            }
        } else {
            remove_any(&victim)
        };
        match result {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(shown, e)),
            _ => Ok(()),
        }
    }

    /// `.wh..wh..opq` in `dir_rel`: empties it of everything lower layers put there.
    fn opaque(&mut self, shown: &str, dir_rel: &Path) -> Result<(), UnpackError> {
        let Some(dir) = self.walk(shown, dir_rel, false)? else {
            return Ok(());
        };
        self.prune_lower(dir_rel, &dir)
            .map_err(|e| io_err(shown, e))
    }

    /// Removes the entries under `dir` that this layer did not create, recursing into
    /// directories this layer holds entries in.
    fn prune_lower(&self, rel: &Path, dir: &Path) -> io::Result<()> {
        for child in fs::read_dir(dir)? {
            let child = child?;
            let name = child.file_name();
            let child_rel = rel.join(&name);
            let child_abs = dir.join(&name);
            if !self.touched.contains(&child_rel) {
                remove_any(&child_abs)?;
            } else if child.file_type()?.is_dir() {
                self.prune_lower(&child_rel, &child_abs)?;
            }
        }
        Ok(())
    }

    /// Sets the directory mtimes recorded during the layer. A directory that a later
    /// entry replaced, or that now sits under a symlink, is skipped, never followed.
    fn restore_dir_times(&mut self) {
        for (rel, mtime) in std::mem::take(&mut self.dir_times) {
            let mut abs = self.root.to_owned();
            let real = rel.iter().all(|component| {
                abs.push(component);
                fs::symlink_metadata(&abs).is_ok_and(|m| m.is_dir())
            });
            if real {
                let times = FileTimes::new().set_accessed(mtime).set_modified(mtime);
                // Best effort: a wrong directory mtime does not make the root wrong.
                let _ = open_dir(&abs).and_then(|d| d.set_times(times));
            }
        }
    }
}

/// Turns a tar path into a path relative to the root: `/` and `.` components dropped,
/// `..` refused.
fn normalize(raw: &[u8]) -> Result<PathBuf, &'static str> {
    let mut rel = PathBuf::new();
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err("its path has a `..` component"),
            name => rel.push(OsStr::from_bytes(name)),
        }
    }
    Ok(rel)
}

fn has_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> bool {
    match entry.pax_extensions() {
        Ok(Some(extensions)) => extensions
            .filter_map(Result::ok)
            .any(|ext| ext.key_bytes().starts_with(b"SCHILY.xattr.")),
        _ => false,
    }
}

fn owner(shown: &str, header: &tar::Header) -> Result<(u32, u32), UnpackError> {
    let uid = header.uid().map_err(|e| io_err(shown, e))?;
    let gid = header.gid().map_err(|e| io_err(shown, e))?;
    match (u32::try_from(uid), u32::try_from(gid)) {
        (Ok(uid), Ok(gid)) => Ok((uid, gid)),
        _ => Err(invalid(
            shown,
            &format!("owner {uid}:{gid} is out of range"),
        )),
    }
}

fn unix_time(secs: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Opens a directory for metadata changes without following a symlink in its place.
fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Removes a file, symlink (not its target) or directory tree.
fn remove_any(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path)?.is_dir() {
        // Does not follow symlinks inside the tree.
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

fn escape(shown: &str, reason: &str) -> UnpackError {
    UnpackError::Escape {
        path: shown.to_owned(),
        reason: reason.to_owned(),
    }
}

fn invalid(shown: &str, reason: &str) -> UnpackError {
    UnpackError::Invalid {
        path: shown.to_owned(),
        reason: reason.to_owned(),
    }
}

fn io_err(shown: &str, source: io::Error) -> UnpackError {
    UnpackError::Entry {
        path: shown.to_owned(),
        source,
    }
}

/// Whether the effective uid is 0, read from procfs so no syscall wrapper is needed.
fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1))
                .map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// Decodes a stream of zstd frames, skipping skippable ones. The decoder in `ruzstd`
/// handles one frame; layers written in chunks (zstd:chunked) hold many.
struct ZstdFrames<R> {
    source: R,
    decoder: ruzstd::decoding::FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdFrames<R> {
    fn new(source: R) -> Self {
        ZstdFrames {
            source,
            decoder: ruzstd::decoding::FrameDecoder::new(),
            in_frame: false,
        }
    }

    /// Starts the next data frame; false at the end of the stream.
    fn next_frame(&mut self) -> io::Result<bool> {
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        loop {
            if self.source.fill_buf()?.is_empty() {
                return Ok(false);
            }
            match self.decoder.reset(&mut self.source) {
                Ok(()) => return Ok(true),
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let skipped = io::copy(
                        &mut (&mut self.source).take(u64::from(length)),
                        &mut io::sink(),
                    )?;
                    if skipped != u64::from(length) {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "truncated zstd skippable frame",
                        ));
                    }
                }
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if !self.next_frame()? {
                    return Ok(0);
                }
                self.in_frame = true;
            }
            while self.decoder.can_collect() < buf.len() && !self.decoder.is_finished() {
                let wanted = buf.len() - self.decoder.can_collect();
                self.decoder
                    .decode_blocks(
                        &mut self.source,
                        ruzstd::decoding::BlockDecodingStrategy::UptoBytes(wanted),
                    )
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
            let n = self.decoder.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            // The frame is done and drained; its checksum covers everything read from it.
            if let (Some(stored), Some(computed)) = (
                self.decoder.get_checksum_from_data(),
                self.decoder.get_calculated_checksum(),
            ) {
                if stored != computed {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "zstd frame checksum mismatch",
                    ));
                }
            }
            self.in_frame = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    const MTIME: u64 = 1_700_000_000;

    /// A directory under the system temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("a3s-unpack-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            Scratch(path)
        }

        /// A fresh empty subdirectory.
        fn dir(&self, name: &str) -> PathBuf {
            let dir = self.0.join(name);
            fs::create_dir(&dir).unwrap();
            dir
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// One tar entry, written with raw header fields so the tests can also build
    /// entries the tar crate's Builder refuses (`..`, absolute paths).
    struct E {
        kind: EntryType,
        name: &'static str,
        link: &'static str,
        mode: u32,
        data: Vec<u8>,
        size: Option<u64>,
        dev: (u32, u32),
    }

    fn e(kind: EntryType, name: &'static str) -> E {
        let mode = if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        };
        E {
            kind,
            name,
            link: "",
            mode,
            data: Vec::new(),
            size: None,
            dev: (0, 0),
        }
    }
    fn dir(name: &'static str) -> E {
        e(EntryType::Directory, name)
    }
    fn file(name: &'static str, data: &str) -> E {
        E {
            data: data.as_bytes().to_vec(),
            ..e(EntryType::Regular, name)
        }
    }
    fn symlink(name: &'static str, target: &'static str) -> E {
        E {
            link: target,
            mode: 0o777,
            ..e(EntryType::Symlink, name)
        }
    }
    fn hardlink(name: &'static str, target: &'static str) -> E {
        E {
            link: target,
            ..e(EntryType::Link, name)
        }
    }

    fn tar(entries: Vec<E>) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for entry in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(entry.kind);
            header.set_mode(entry.mode);
            header.set_mtime(MTIME);
            header.set_uid(0);
            header.set_gid(0);
            header.set_size(entry.size.unwrap_or(entry.data.len() as u64));
            if matches!(entry.kind, EntryType::Char | EntryType::Block) {
                header.set_device_major(entry.dev.0).unwrap();
                header.set_device_minor(entry.dev.1).unwrap();
            }
            let old = header.as_old_mut();
            old.name[..entry.name.len()].copy_from_slice(entry.name.as_bytes());
            old.linkname[..entry.link.len()].copy_from_slice(entry.link.as_bytes());
            header.set_cksum();
            builder.append(&header, entry.data.as_slice()).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn apply(target: &Path, entries: Vec<E>) -> Result<UnpackStats, UnpackError> {
        unpack_layer(
            tar(entries).as_slice(),
            None,
            target,
            &UnpackOptions::default(),
        )
    }

    fn read(path: PathBuf) -> String {
        fs::read_to_string(path).unwrap()
    }

    fn exists(path: PathBuf) -> bool {
        fs::symlink_metadata(path).is_ok()
    }

    /// Path → (type and permission bits, content or link target), for comparing trees.
    fn tree(root: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (u32, Vec<u8>)>) {
            for child in fs::read_dir(dir).unwrap() {
                let path = child.unwrap().path();
                let meta = fs::symlink_metadata(&path).unwrap();
                let content = if meta.file_type().is_symlink() {
                    fs::read_link(&path).unwrap().into_os_string().into_vec()
                } else if meta.is_file() {
                    fs::read(&path).unwrap()
                } else {
                    Vec::new()
                };
                out.insert(
                    path.strip_prefix(root).unwrap().to_owned(),
                    (meta.mode(), content),
                );
                if meta.is_dir() {
                    walk(root, &path, out);
                }
            }
        }
        use std::os::unix::ffi::OsStringExt;
        let mut out = BTreeMap::new();
        walk(root, root, &mut out);
        out
    }

    fn escape_path(err: UnpackError) -> String {
        match err {
            UnpackError::Escape { path, .. } => path,
            other => panic!("expected an escape error, got {other:?}"),
        }
    }

    #[test]
    fn regular_files_dirs_and_modes_are_unpacked() {
        let s = Scratch::new();
        let root = s.dir("root");
        let stats = apply(
            &root,
            vec![
                dir("etc/"),
                file("etc/hostname", "box\n"),
                E {
                    mode: 0o4755,
                    ..file("bin/su", "su")
                },
                E {
                    mode: 0o700,
                    ..dir("private/")
                },
            ],
        )
        .unwrap();
        assert_eq!(read(root.join("etc/hostname")), "box\n");
        let su = fs::symlink_metadata(root.join("bin/su")).unwrap();
        assert_eq!(su.mode() & 0o7777, 0o4755, "set-id bits are kept");
        assert_eq!(su.mtime(), MTIME as i64);
        let private = fs::symlink_metadata(root.join("private")).unwrap();
        assert_eq!(private.mode() & 0o7777, 0o700);
        assert_eq!(
            private.mtime(),
            MTIME as i64,
            "directory mtimes are set after their children"
        );
        let implied = fs::symlink_metadata(root.join("bin")).unwrap();
        assert_eq!(implied.mode() & 0o7777, 0o755, "implied parents are 0755");
        assert_eq!((stats.files, stats.dirs, stats.bytes), (2, 2, 6));
    }

    #[test]
    fn whiteout_deletes_lower_file_and_directory() {
        let s = Scratch::new();
        let root = s.dir("root");
        apply(
            &root,
            vec![
                file("a/keep", "k"),
                file("a/gone", "g"),
                file("d/sub/x", "x"),
            ],
        )
        .unwrap();
        let stats = apply(&root, vec![file("a/.wh.gone", ""), file(".wh.d", "")]).unwrap();
        assert!(!exists(root.join("a/gone")));
        assert!(!exists(root.join("d")));
        assert!(
            !exists(root.join("a/.wh.gone")),
            "the whiteout itself is not created"
        );
        assert!(exists(root.join("a/keep")));
        assert_eq!(stats.whiteouts, 2);
    }

    #[test]
    fn whiteout_spares_the_same_layers_entry_but_not_lower_contents() {
        let s = Scratch::new();
        let root = s.dir("root");
        apply(&root, vec![file("d/old", "old")]).unwrap();
        // A non-conforming order: the layer's own `d` comes before the whiteout of `d`.
        apply(
            &root,
            vec![dir("d/"), file("d/new", "new"), file(".wh.d", "")],
        )
        .unwrap();
        assert!(!exists(root.join("d/old")));
        assert_eq!(read(root.join("d/new")), "new");
    }

    #[test]
    fn opaque_directory_hides_lower_entries_and_keeps_its_own_layer() {
        let s = Scratch::new();
        let root = s.dir("root");
        apply(
            &root,
            vec![
                file("d/lower", "l"),
                file("d/sub/lower", "l"),
                file("d/replaced", "lower"),
                file("other", "o"),
            ],
        )
        .unwrap();
        apply(
            &root,
            vec![
                dir("d/"),
                file("d/before", "b"),
                file("d/replaced", "upper"),
                file("d/sub/before", "b"),
                file("d/.wh..wh..opq", ""),
                file("d/after", "a"),
            ],
        )
        .unwrap();
        let names: Vec<_> = tree(&root.join("d")).into_keys().collect();
        let want: Vec<PathBuf> = ["after", "before", "replaced", "sub", "sub/before"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(names, want);
        assert_eq!(read(root.join("d/replaced")), "upper");
        assert!(
            exists(root.join("other")),
            "only the opaque directory is emptied"
        );
    }

    #[test]
    fn hard_link_shares_the_targets_inode() {
        let s = Scratch::new();
        let root = s.dir("root");
        apply(&root, vec![file("lower", "data")]).unwrap();
        let stats = apply(
            &root,
            vec![
                file("bin/tool", "t"),
                hardlink("bin/alias", "bin/tool"),
                hardlink("/again", "/lower"),
            ],
        )
        .unwrap();
        let tool = fs::metadata(root.join("bin/tool")).unwrap();
        let alias = fs::metadata(root.join("bin/alias")).unwrap();
        assert_eq!(tool.ino(), alias.ino());
        assert_eq!(
            fs::metadata(root.join("again")).unwrap().ino(),
            fs::metadata(root.join("lower")).unwrap().ino()
        );
        assert_eq!(stats.hardlinks, 2);
    }

    #[test]
    fn replacing_a_hard_linked_file_leaves_its_other_names_alone() {
        let s = Scratch::new();
        let root = s.dir("root");
        apply(&root, vec![file("a", "old"), hardlink("b", "a")]).unwrap();
        apply(&root, vec![file("a", "new")]).unwrap();
        assert_eq!(read(root.join("a")), "new");
        assert_eq!(read(root.join("b")), "old");
    }

    #[test]
    fn symlink_is_stored_verbatim() {
        let s = Scratch::new();
        let root = s.dir("root");
        apply(
            &root,
            vec![
                symlink("etc/os-release", "/usr/lib/os-release"),
                symlink("up", "../../../x"),
            ],
        )
        .unwrap();
        assert_eq!(
            fs::read_link(root.join("etc/os-release")).unwrap(),
            Path::new("/usr/lib/os-release")
        );
        assert_eq!(
            fs::read_link(root.join("up")).unwrap(),
            Path::new("../../../x")
        );
    }

    #[test]
    fn later_layer_changes_an_entrys_type() {
        let s = Scratch::new();
        let root = s.dir("root");
        apply(
            &root,
            vec![file("x/inner", "i"), file("y", "file"), file("z", "file")],
        )
        .unwrap();
        apply(
            &root,
            vec![file("x", "now a file"), dir("y/"), symlink("z", "y")],
        )
        .unwrap();
        assert_eq!(read(root.join("x")), "now a file");
        assert!(fs::symlink_metadata(root.join("y")).unwrap().is_dir());
        assert!(fs::symlink_metadata(root.join("z"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn tar_slip_parent_dir_entry_is_rejected_naming_it() {
        let s = Scratch::new();
        let root = s.dir("root");
        let err = apply(&root, vec![file("../../etc/passwd", "root::0:0")]).unwrap_err();
        assert!(err.to_string().contains("../../etc/passwd"), "{err}");
        assert_eq!(escape_path(err), "../../etc/passwd");
        let err = apply(&root, vec![file("a/../../b", "x")]).unwrap_err();
        assert_eq!(escape_path(err), "a/../../b");
        assert!(!exists(s.0.join("b")));
    }

    #[test]
    fn absolute_path_lands_inside_the_target() {
        let s = Scratch::new();
        let root = s.dir("root");
        apply(
            &root,
            vec![
                file("/etc/passwd", "root"),
                file("./etc/group", "g"),
                dir("./"),
            ],
        )
        .unwrap();
        assert_eq!(read(root.join("etc/passwd")), "root");
        assert_eq!(read(root.join("etc/group")), "g");
    }

    #[test]
    fn entry_under_a_symlink_from_a_lower_layer_is_rejected() {
        let s = Scratch::new();
        let root = s.dir("root");
        let outside = s.dir("outside");
        apply(
            &root,
            vec![
                symlink("link", "/"),
                symlink("out", outside.to_str().unwrap().to_owned().leak()),
            ],
        )
        .unwrap();
        for name in [
            "link/x",
            "out/x",
            "out/deep/x",
            "out/.wh.victim",
            "out/.wh..wh..opq",
        ] {
            fs::write(outside.join("victim"), "v").unwrap();
            let err = apply(&root, vec![file(name, "pwned")]).unwrap_err();
            assert_eq!(escape_path(err), name);
            assert!(!exists(outside.join("x")) && !exists(outside.join("deep")));
            assert!(
                exists(outside.join("victim")),
                "{name} deleted through the symlink"
            );
        }
    }

    #[test]
    fn entry_under_a_symlink_from_the_same_layer_is_rejected() {
        let s = Scratch::new();
        let root = s.dir("root");
        let outside = s.dir("outside");
        let target: &'static str = outside.to_str().unwrap().to_owned().leak();
        let err = apply(
            &root,
            vec![
                dir("d/"),
                symlink("d/link", target),
                file("d/link/x", "pwned"),
            ],
        )
        .unwrap_err();
        assert!(err.to_string().contains("d/link/x"), "{err}");
        assert!(!exists(outside.join("x")));
    }

    #[test]
    fn directory_replaced_by_a_symlink_does_not_get_its_mtime_through_it() {
        let s = Scratch::new();
        let root = s.dir("root");
        let outside = s.dir("outside");
        let before = fs::metadata(&outside).unwrap().mtime();
        let target: &'static str = outside.to_str().unwrap().to_owned().leak();
        apply(&root, vec![dir("d/"), symlink("d", target)]).unwrap();
        assert_eq!(fs::metadata(&outside).unwrap().mtime(), before);
    }

    #[test]
    fn hard_link_escaping_the_root_is_rejected() {
        let s = Scratch::new();
        let root = s.dir("root");
        let outside = s.dir("outside");
        fs::write(outside.join("secret"), "s").unwrap();
        let err = apply(&root, vec![hardlink("x", "../outside/secret")]).unwrap_err();
        assert_eq!(escape_path(err), "x");
        let target: &'static str = outside.to_str().unwrap().to_owned().leak();
        let err = apply(
            &root,
            vec![symlink("out", target), hardlink("y", "out/secret")],
        )
        .unwrap_err();
        assert_eq!(escape_path(err), "y");
        assert!(!exists(root.join("x")) && !exists(root.join("y")));
    }

    #[test]
    fn hard_link_to_a_missing_target_is_rejected() {
        let s = Scratch::new();
        let root = s.dir("root");
        let err = apply(&root, vec![hardlink("x", "nowhere")]).unwrap_err();
        assert!(
            matches!(&err, UnpackError::Invalid { path, .. } if path == "x"),
            "{err:?}"
        );
    }

    #[test]
    fn absurd_entry_size_is_rejected_before_writing() {
        let s = Scratch::new();
        let root = s.dir("root");
        let huge = E {
            size: Some(1 << 50),
            ..file("huge", "")
        };
        let err = apply(&root, vec![huge]).unwrap_err();
        assert!(
            matches!(&err, UnpackError::EntryTooLarge { path, .. } if path == "huge"),
            "{err:?}"
        );
        assert!(!exists(root.join("huge")));
    }

    #[test]
    fn layer_beyond_the_total_limit_is_rejected() {
        let s = Scratch::new();
        let root = s.dir("root");
        // Two 512-byte headers and two 512-byte data blocks, then the end marker.
        let layer = tar(vec![file("a", "123456"), file("b", "123456")]);
        let opts = UnpackOptions {
            max_total: 1600,
            ..UnpackOptions::default()
        };
        let err = unpack_layer(layer.as_slice(), None, &root, &opts).unwrap_err();
        assert!(
            matches!(&err, UnpackError::TotalTooLarge { path, .. } if path == "b"),
            "{err:?}"
        );
        let opts = UnpackOptions {
            max_total: 2100,
            ..UnpackOptions::default()
        };
        let err = unpack_layer(layer.as_slice(), None, &s.dir("end"), &opts).unwrap_err();
        assert!(matches!(&err, UnpackError::TotalTooLarge { .. }), "{err:?}");
        let exact = UnpackOptions {
            max_total: layer.len() as u64,
            ..UnpackOptions::default()
        };
        unpack_layer(layer.as_slice(), None, &s.dir("exact"), &exact).unwrap();
    }

    #[test]
    fn oversized_pax_header_is_rejected_without_buffering_it() {
        let s = Scratch::new();
        let root = s.dir("root");
        // A PAX header claiming 64 MiB: the tar crate would read it all into memory.
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(EntryType::XHeader);
        header.set_path("pax").unwrap();
        header.set_size(64 << 20);
        header.set_cksum();
        let mut layer = header.as_bytes().to_vec();
        layer.resize(512 + (64 << 20), 0);
        let opts = UnpackOptions {
            max_total: 1 << 20,
            ..UnpackOptions::default()
        };
        let err = unpack_layer(layer.as_slice(), None, &root, &opts).unwrap_err();
        assert!(matches!(err, UnpackError::TotalTooLarge { .. }), "{err:?}");
    }

    #[test]
    fn plain_gzip_and_zstd_unpack_the_same_tree() {
        let plain = include_bytes!("../../tests/data/layer.tar").as_slice();
        // Two zstd frames behind a skippable frame, as chunked zstd layers are written.
        let zstd = include_bytes!("../../tests/data/layer.tar.zst").as_slice();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(plain).unwrap();
        let gzip = gz.finish().unwrap();

        let s = Scratch::new();
        let mut trees = Vec::new();
        for (name, bytes, media_type) in [
            ("plain", plain, "application/vnd.oci.image.layer.v1.tar"),
            (
                "gzip",
                gzip.as_slice(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            ),
            ("zstd", zstd, "application/vnd.oci.image.layer.v1.tar+zstd"),
        ] {
            let root = s.dir(name);
            unpack_layer(bytes, Some(media_type), &root, &UnpackOptions::default()).unwrap();
            trees.push(tree(&root));
        }
        assert_eq!(trees[0], trees[1]);
        assert_eq!(trees[0], trees[2]);
        let t = &trees[0];
        assert_eq!(t[Path::new("etc/hostname")].1, b"box\n");
        assert_eq!(t[Path::new("bin/sh")].1, b"tool");
        assert_eq!(t[Path::new("bin/su")].0 & 0o7777, 0o4755);
        assert_eq!(t.len(), 8);
    }

    #[test]
    fn corrupt_compressed_stream_is_an_error() {
        let s = Scratch::new();
        let zstd = include_bytes!("../../tests/data/layer.tar.zst");
        let mut bad = zstd.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff; // the second frame's checksum
        let err =
            unpack_layer(bad.as_slice(), None, &s.dir("z"), &UnpackOptions::default()).unwrap_err();
        assert!(
            matches!(err, UnpackError::Read(_) | UnpackError::Entry { .. }),
            "{err:?}"
        );

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar(vec![file("a", "x")])).unwrap();
        let mut gzip = gz.finish().unwrap();
        gzip.truncate(gzip.len() - 4);
        assert!(unpack_layer(
            gzip.as_slice(),
            None,
            &s.dir("g"),
            &UnpackOptions::default()
        )
        .is_err());
    }

    #[test]
    fn detect_trusts_magic_bytes_over_the_media_type() {
        let gzip_type = Some("application/vnd.oci.image.layer.v1.tar+gzip");
        assert_eq!(detect(None, &[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(detect(None, &[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(detect(None, &[0x50, 0x2a, 0x4d, 0x18]), Compression::Zstd);
        assert_eq!(detect(gzip_type, b"etc/"), Compression::Plain);
        assert_eq!(detect(gzip_type, b""), Compression::Gzip);
        assert_eq!(
            detect(
                Some("application/vnd.docker.image.rootfs.diff.tar.gzip"),
                b""
            ),
            Compression::Gzip
        );
        assert_eq!(
            detect(Some("application/vnd.oci.image.layer.v1.tar+zstd"), b"\x28"),
            Compression::Zstd
        );
        assert_eq!(detect(None, b""), Compression::Plain);
    }

    #[test]
    fn device_nodes_are_skipped_without_mknod() {
        let s = Scratch::new();
        let root = s.dir("root");
        let null = E {
            dev: (1, 3),
            ..e(EntryType::Char, "dev/null")
        };
        let stats = apply(&root, vec![null, e(EntryType::Fifo, "run/fifo")]).unwrap();
        assert_eq!(stats.special_skipped, 2);
        assert!(!exists(root.join("dev/null")) && !exists(root.join("run/fifo")));
    }

    static MADE: Mutex<Vec<(PathBuf, u32, u64)>> = Mutex::new(Vec::new());

    /// Records the call and leaves a plain file so the unpacker's chmod has a target.
    fn recording_mknod(path: &Path, mode: u32, rdev: u64) -> io::Result<()> {
        MADE.lock().unwrap().push((path.to_owned(), mode, rdev));
        fs::write(path, "")
    }

    #[test]
    fn device_nodes_go_to_the_callers_mknod() {
        let s = Scratch::new();
        let root = s.dir("root");
        let opts = UnpackOptions {
            mknod: Some(recording_mknod),
            ..UnpackOptions::default()
        };
        let null = E {
            dev: (1, 3),
            mode: 0o666,
            ..e(EntryType::Char, "dev/null")
        };
        let stats = unpack_layer(tar(vec![null]).as_slice(), None, &root, &opts).unwrap();
        assert_eq!(stats.special_created, 1);
        let made = MADE.lock().unwrap();
        assert_eq!(
            made.as_slice(),
            &[(
                root.join("dev/null"),
                libc::S_IFCHR | 0o666,
                libc::makedev(1, 3)
            )]
        );
    }

    #[test]
    fn ownership_is_applied_when_running_as_root() {
        let s = Scratch::new();
        let root = s.dir("root");
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(EntryType::Regular);
        header.set_path("owned").unwrap();
        header.set_uid(1234);
        header.set_gid(5678);
        header.set_mode(0o640);
        header.set_size(0);
        header.set_cksum();
        let mut builder = tar::Builder::new(Vec::new());
        builder.append(&header, io::empty()).unwrap();
        let layer = builder.into_inner().unwrap();
        let opts = UnpackOptions::default();
        unpack_layer(layer.as_slice(), None, &root, &opts).unwrap();
        let meta = fs::metadata(root.join("owned")).unwrap();
        // Only root may give files away; elsewhere the files stay ours.
        if opts.same_owner {
            assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
        } else {
            assert_ne!(meta.uid(), 1234);
        }
    }

    #[test]
    fn target_that_is_not_a_directory_is_refused() {
        let s = Scratch::new();
        let not_dir = s.0.join("file");
        fs::write(&not_dir, "").unwrap();
        let err = unpack_layer(
            tar(vec![]).as_slice(),
            None,
            &not_dir,
            &UnpackOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, UnpackError::Target { .. }));
    }

    #[test]
    fn non_directory_entry_for_the_root_is_rejected() {
        let s = Scratch::new();
        let root = s.dir("root");
        let err = apply(&root, vec![symlink("/", "x")]).unwrap_err();
        assert!(matches!(err, UnpackError::Invalid { .. }), "{err:?}");
    }
}
