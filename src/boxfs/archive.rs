//! Tar archives of a tree's entries, and their extraction into a tree, as
//! Docker's `cp` makes and applies them: modes, owners, times, symbolic and
//! hard links kept; an existing directory takes an archived directory's
//! attributes, and a directory is never replaced by a file or the other way
//! round.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::{resolve_in_scope, BoxfsError, Kind, Meta, Result, SetMeta, Time, Tree};

/// Who owns what an archive puts into a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    /// The owners recorded in the archive (`cp -a`).
    Archive,
    /// This user and group (root, for `cp` into a box).
    Fixed(u32, u32),
    /// Whoever creates the files (`cp` to the host).
    Unchanged,
}

/// How to extract.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    pub owners: Owners,
    /// Renames the archive's top entry (its first path component) `.0` to
    /// `.1`; `.` as `.0` stands for every entry of a directory's contents.
    pub rename: Option<(String, String)>,
}

/// Writes tar entries for what a tree holds, hard links found by inode.
pub struct Writer<'a, W: Write> {
    tree: &'a dyn Tree,
    tar: tar::Builder<W>,
    links: HashMap<(u64, u64), PathBuf>,
    /// Stay on this device: directories of other file systems mounted
    /// inside are archived empty.
    device: Option<u64>,
}

/// Reads exactly `left` bytes: the file's own, then zeros if it shrank while
/// being read, so the archive always holds the size its header promised.
struct Exactly<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exactly<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let mut n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            buf[..want].fill(0);
            n = want;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn io_at<'a>(what: &'static str, rel: &'a Path) -> impl FnOnce(io::Error) -> BoxfsError + 'a {
    move |source| BoxfsError::Io {
        what,
        path: format!("/{}", rel.display()),
        source,
    }
}

impl<'a, W: Write> Writer<'a, W> {
    pub fn new(tree: &'a dyn Tree, out: W) -> Self {
        let mut tar = tar::Builder::new(out);
        tar.follow_symlinks(false);
        Writer {
            tree,
            tar,
            links: HashMap::new(),
            device: None,
        }
    }

    /// A header for `meta`, without its type, size or name.
    pub fn header(meta: &Meta) -> Header {
        let mut h = Header::new_gnu();
        h.set_mode(meta.perm);
        h.set_uid(u64::from(meta.uid));
        h.set_gid(u64::from(meta.gid));
        h.set_mtime(u64::try_from(meta.mtime.secs).unwrap_or(0));
        h.set_size(0);
        h
    }

    /// Appends an entry with header `h` (type, mode and owner set) and `data`.
    pub fn append(&mut self, h: &mut Header, name: &Path, data: impl Read) -> io::Result<()> {
        self.tar.append_data(h, name, data)
    }

    /// PAX records for the next entry.
    pub fn pax<'k, 'v>(
        &mut self,
        records: impl IntoIterator<Item = (&'k str, &'v [u8])>,
    ) -> io::Result<()> {
        self.tar.append_pax_extensions(records)
    }

    /// Appends the entry at `rel` (described by `meta`) under `name`. Sockets
    /// are left out, as Docker leaves them.
    pub fn entry(&mut self, rel: &Path, name: &Path, meta: &Meta) -> Result<()> {
        let mut h = Self::header(meta);
        let write = |e| BoxfsError::Io {
            what: "cannot archive",
            path: format!("/{}", rel.display()),
            source: e,
        };
        match meta.kind {
            Kind::Dir => {
                h.set_entry_type(EntryType::Directory);
                self.tar
                    .append_data(&mut h, name, io::empty())
                    .map_err(write)
            }
            Kind::File => {
                if meta.nlink > 1 {
                    let key = (meta.dev, meta.ino);
                    if let Some(first) = self.links.get(&key) {
                        h.set_entry_type(EntryType::Link);
                        let first = first.clone();
                        return self.tar.append_link(&mut h, name, first).map_err(write);
                    }
                    self.links.insert(key, name.to_owned());
                }
                let f = self
                    .tree
                    .open_file(rel)
                    .map_err(io_at("cannot read", rel))?;
                h.set_entry_type(EntryType::Regular);
                h.set_size(meta.size);
                let data = Exactly {
                    inner: f,
                    left: meta.size,
                };
                self.tar.append_data(&mut h, name, data).map_err(write)
            }
            Kind::Symlink => {
                let target = self
                    .tree
                    .read_link(rel)
                    .map_err(io_at("cannot read", rel))?;
                h.set_entry_type(EntryType::Symlink);
                self.tar.append_link(&mut h, name, target).map_err(write)
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                h.set_entry_type(match meta.kind {
                    Kind::Char => EntryType::Char,
                    Kind::Block => EntryType::Block,
                    _ => EntryType::Fifo,
                });
                h.set_device_major(rustix::fs::major(meta.rdev))
                    .and_then(|()| h.set_device_minor(rustix::fs::minor(meta.rdev)))
                    .map_err(write)?;
                self.tar
                    .append_data(&mut h, name, io::empty())
                    .map_err(write)
            }
            Kind::Socket => Ok(()),
        }
    }

    /// Appends `rel` as `name` and, for a directory, everything under it in
    /// name order.
    pub fn tree_at(&mut self, rel: &Path, name: &Path) -> Result<()> {
        let meta = self.tree.lstat(rel).map_err(io_at("cannot stat", rel))?;
        if !name.as_os_str().is_empty() {
            self.entry(rel, name, &meta)?;
        }
        if self.device.is_some_and(|d| d != meta.dev) {
            return Ok(());
        }
        if meta.is_dir() {
            let names = self.tree.read_dir(rel).map_err(io_at("cannot list", rel))?;
            for n in names {
                self.tree_at(&rel.join(&n), &name.join(&n))?;
            }
        }
        Ok(())
    }

    /// Ends the archive.
    pub fn finish(self) -> Result<W> {
        self.tar
            .into_inner()
            .map_err(BoxfsError::io("cannot finish", "the archive"))
    }
}

/// Archives `rel` of `tree` into `out`, its entries named from `top` (an
/// empty `top`: the entries of directory `rel` without it, as `export`
/// writes a root). With `one_fs`, file systems mounted below `rel` are left
/// out (their mount points archived empty).
pub fn write(tree: &dyn Tree, rel: &Path, top: &str, one_fs: bool, out: impl Write) -> Result<()> {
    let mut w = Writer::new(tree, out);
    if one_fs {
        w.device = Some(tree.lstat(rel).map_err(io_at("cannot stat", rel))?.dev);
    }
    w.tree_at(rel, Path::new(top))?;
    w.finish()?
        .flush()
        .map_err(BoxfsError::io("cannot write", "the archive"))
}

/// An archive name's path components after the rename; `..` that would
/// leave the destination is refused.
fn entry_parts(raw: &[u8], rename: Option<&(String, String)>) -> Result<Vec<OsString>> {
    let shown = String::from_utf8_lossy(raw).into_owned();
    let mut parts: Vec<OsString> = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() {
                    return Err(BoxfsError::Breakout(shown));
                }
            }
            n => parts.push(std::ffi::OsStr::from_bytes(n).to_owned()),
        }
    }
    match rename {
        Some((old, new)) if old == "." => parts.insert(0, new.into()),
        Some((old, new)) if parts.first().is_some_and(|p| p == old.as_str()) => {
            parts[0] = new.into();
        }
        _ => {}
    }
    Ok(parts)
}

/// Where archive entry `parts` goes under directory `dir`: its parent
/// resolved in the tree (links in it followed inside the tree, as an
/// extraction chrooted into the box would), then its own name.
fn place(tree: &dyn Tree, dir: &Path, parts: &[OsString]) -> Result<PathBuf> {
    let Some((name, parents)) = parts.split_last() else {
        return Ok(dir.to_owned());
    };
    let mut parent = PathBuf::from("/");
    parent.push(dir);
    for p in parents {
        parent.push(p);
    }
    let rel = resolve_in_scope(tree, &parent).map_err(io_at("cannot look up", &parent))?;
    Ok(rel.join(name))
}

fn time(secs: u64) -> Time {
    Time {
        secs: i64::try_from(secs).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

/// Makes every missing directory of `rel` (as Docker: mode 0755).
fn make_parents(tree: &dyn Tree, rel: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    let mut at = PathBuf::new();
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    for c in parent.components() {
        at.push(c);
        match tree.lstat(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(BoxfsError::Io {
                    what: "cannot extract into",
                    path: format!("/{}", at.display()),
                    source: io::Error::from_raw_os_error(libc::ENOTDIR),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tree.make_dir(&at, 0o755)
                    .map_err(io_at("cannot create", &at))?;
                if owner.is_some() {
                    let set = SetMeta {
                        owner,
                        perm: Some(0o755),
                        times: None,
                    };
                    tree.set_meta(&at, &set)
                        .map_err(io_at("cannot set the owner of", &at))?;
                }
            }
            Err(e) => return Err(io_at("cannot look up", &at)(e)),
        }
    }
    Ok(())
}

/// Extracts the tar stream `input` into directory `dir` of `tree`.
pub fn extract(tree: &dyn Tree, dir: &Path, input: impl Read, opts: &ExtractOptions) -> Result<()> {
    let bad = BoxfsError::io("cannot read", "the archive");
    let mut ar = tar::Archive::new(input);
    let mut dirs: Vec<(PathBuf, Time)> = Vec::new();
    for entry in ar.entries().map_err(bad)? {
        let mut entry = entry.map_err(BoxfsError::io("cannot read", "the archive"))?;
        let h = entry.header().clone();
        let kind = match h.entry_type() {
            EntryType::Regular | EntryType::Continuous => Kind::File,
            EntryType::Directory => Kind::Dir,
            EntryType::Symlink => Kind::Symlink,
            EntryType::Link => Kind::File,
            EntryType::Char => Kind::Char,
            EntryType::Block => Kind::Block,
            EntryType::Fifo => Kind::Fifo,
            // Global and per-file extension headers, and anything unknown.
            _ => continue,
        };
        let raw = entry.path_bytes().into_owned();
        let parts = entry_parts(&raw, opts.rename.as_ref())?;
        let rel = place(tree, dir, &parts)?;
        let shown = format!("/{}", rel.display());
        let owner = match opts.owners {
            Owners::Archive => Some((
                u32::try_from(h.uid().unwrap_or(0)).unwrap_or(0),
                u32::try_from(h.gid().unwrap_or(0)).unwrap_or(0),
            )),
            Owners::Fixed(u, g) => Some((u, g)),
            Owners::Unchanged => None,
        };
        // Directories the archive does not hold are made as Docker makes them.
        let parents_owner = match opts.owners {
            Owners::Archive => Some((0, 0)),
            Owners::Fixed(u, g) => Some((u, g)),
            Owners::Unchanged => None,
        };
        make_parents(tree, &rel, parents_owner)?;
        let existing = match tree.lstat(&rel) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_at("cannot look up", &rel)(e)),
        };
        match (&existing, kind) {
            (Some(m), Kind::Dir) if !m.is_dir() => return Err(BoxfsError::NonDirWithDir(shown)),
            (Some(m), k) if m.is_dir() && k != Kind::Dir => {
                return Err(BoxfsError::DirWithNonDir(shown))
            }
            _ => {}
        }
        let perm = h.mode().unwrap_or(0o644) & 0o7777;
        let mtime = time(h.mtime().unwrap_or(0));
        let create = |e| BoxfsError::Io {
            what: "cannot create",
            path: shown.clone(),
            source: e,
        };
        if h.entry_type() == EntryType::Link {
            let target_raw = entry
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default();
            let target_parts = entry_parts(&target_raw, opts.rename.as_ref())?;
            let target = place(tree, dir, &target_parts)?;
            tree.hard_link(&rel, &target).map_err(create)?;
            continue;
        }
        match kind {
            Kind::Dir => {
                tree.make_dir(&rel, perm).map_err(create)?;
                dirs.push((rel.clone(), mtime));
            }
            Kind::File => {
                let mut f = tree.create_file(&rel, perm).map_err(create)?;
                io::copy(&mut entry, &mut f).map_err(create)?;
            }
            Kind::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|l| super::rel_path(&l))
                    .unwrap_or_default();
                tree.symlink(&rel, &target).map_err(create)?;
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                tree.mknod(&rel, kind, perm, rustix::fs::makedev(major, minor))
                    .map_err(create)?;
            }
            Kind::Socket => continue,
        }
        let set = SetMeta {
            owner,
            perm: (kind != Kind::Symlink).then_some(perm),
            // A directory's time is set once everything in it is there.
            times: (kind != Kind::Dir).then_some((mtime, mtime)),
        };
        tree.set_meta(&rel, &set).map_err(|e| BoxfsError::Io {
            what: "cannot set the attributes of",
            path: shown.clone(),
            source: e,
        })?;
    }
    for (rel, mtime) in dirs.iter().rev() {
        let set = SetMeta {
            times: Some((*mtime, *mtime)),
            ..Default::default()
        };
        tree.set_meta(rel, &set)
            .map_err(io_at("cannot set the times of", rel))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::DirTree;
    use super::*;
    use crate::testing::TempDir;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    fn sample(root: &Path) {
        std::fs::create_dir_all(root.join("d/sub")).unwrap();
        std::fs::write(root.join("d/f"), "file\n").unwrap();
        // The owner first: chown clears the set-user-ID bit.
        std::os::unix::fs::lchown(root.join("d/f"), Some(1000), Some(1001)).unwrap();
        std::fs::set_permissions(root.join("d/f"), std::fs::Permissions::from_mode(0o4750))
            .unwrap();
        std::fs::hard_link(root.join("d/f"), root.join("d/sub/hard")).unwrap();
        symlink("../f", root.join("d/sub/link")).unwrap();
        std::fs::set_permissions(root.join("d/sub"), std::fs::Permissions::from_mode(0o701))
            .unwrap();
    }

    fn archive_of(tree: &DirTree, rel: &str, top: &str) -> Vec<u8> {
        let mut out = Vec::new();
        write(tree, Path::new(rel), top, false, &mut out).unwrap();
        out
    }

    fn names(data: &[u8]) -> Vec<String> {
        let mut ar = tar::Archive::new(data);
        ar.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                String::from_utf8_lossy(&e.path_bytes()).into_owned()
            })
            .collect()
    }

    #[test]
    fn a_directory_archives_under_its_name_with_links_kept() {
        let d = TempDir::new("archive-write");
        sample(d.path());
        let t = DirTree::open(d.path()).unwrap();
        let data = archive_of(&t, "d", "d");
        assert_eq!(
            names(&data),
            ["d", "d/f", "d/sub", "d/sub/hard", "d/sub/link"]
        );
        let mut ar = tar::Archive::new(data.as_slice());
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let p = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let h = e.header();
            match p.as_str() {
                "d/f" => {
                    assert_eq!(h.mode().unwrap(), 0o4750);
                    assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (1000, 1001));
                }
                "d/sub/hard" => {
                    assert_eq!(h.entry_type(), EntryType::Link);
                    assert_eq!(&*e.link_name_bytes().unwrap(), b"d/f");
                }
                "d/sub/link" => assert_eq!(&*e.link_name_bytes().unwrap(), b"../f"),
                _ => {}
            }
        }
    }

    #[test]
    fn extraction_keeps_modes_links_and_owners_when_asked() {
        let src = TempDir::new("archive-src");
        sample(src.path());
        let data = archive_of(&DirTree::open(src.path()).unwrap(), "d", "d");
        let dst = TempDir::new("archive-dst");
        let t = DirTree::open(dst.path()).unwrap();
        let opts = ExtractOptions {
            owners: Owners::Archive,
            rename: Some(("d".into(), "copy".into())),
        };
        extract(&t, Path::new(""), data.as_slice(), &opts).unwrap();
        let f = std::fs::metadata(dst.path().join("copy/f")).unwrap();
        assert_eq!(f.permissions().mode() & 0o7777, 0o4750);
        assert_eq!((f.uid(), f.gid()), (1000, 1001));
        let hard = std::fs::metadata(dst.path().join("copy/sub/hard")).unwrap();
        assert_eq!(hard.ino(), f.ino());
        assert_eq!(
            std::fs::read_link(dst.path().join("copy/sub/link")).unwrap(),
            Path::new("../f")
        );
        let sub = std::fs::metadata(dst.path().join("copy/sub")).unwrap();
        assert_eq!(sub.permissions().mode() & 0o7777, 0o701);

        // Fixed owners: everything becomes root's.
        let dst2 = TempDir::new("archive-dst2");
        let t2 = DirTree::open(dst2.path()).unwrap();
        let opts = ExtractOptions {
            owners: Owners::Fixed(0, 0),
            rename: None,
        };
        extract(&t2, Path::new(""), data.as_slice(), &opts).unwrap();
        let f = std::fs::metadata(dst2.path().join("d/f")).unwrap();
        assert_eq!((f.uid(), f.gid()), (0, 0));
    }

    #[test]
    fn the_contents_of_a_directory_rename_under_a_new_name() {
        let src = TempDir::new("archive-dot");
        sample(src.path());
        let data = archive_of(&DirTree::open(src.path()).unwrap(), "d", ".");
        let dst = TempDir::new("archive-dot-dst");
        let t = DirTree::open(dst.path()).unwrap();
        let opts = ExtractOptions {
            owners: Owners::Unchanged,
            rename: Some((".".into(), "new".into())),
        };
        extract(&t, Path::new(""), data.as_slice(), &opts).unwrap();
        assert_eq!(std::fs::read(dst.path().join("new/f")).unwrap(), b"file\n");
        assert!(dst.path().join("new/sub/link").symlink_metadata().is_ok());
    }

    #[test]
    fn entries_that_climb_out_or_swap_a_directory_for_a_file_are_refused() {
        let dst = TempDir::new("archive-bad");
        std::fs::create_dir(dst.path().join("inner")).unwrap();
        std::fs::create_dir(dst.path().join("inner/dir")).unwrap();
        let t = DirTree::open(dst.path()).unwrap();
        let opts = ExtractOptions {
            owners: Owners::Unchanged,
            rename: None,
        };
        let tar_of = |name: &[u8], kind: EntryType| {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(0);
            h.set_mode(0o644);
            // Written raw, as a hostile archive would be.
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_cksum();
            b.append(&h, io::empty()).unwrap();
            b.into_inner().unwrap()
        };
        let e = extract(
            &t,
            Path::new("inner"),
            tar_of(b"../../x", EntryType::Regular).as_slice(),
            &opts,
        )
        .unwrap_err();
        assert!(matches!(e, BoxfsError::Breakout(_)), "{e}");
        let e = extract(
            &t,
            Path::new("inner"),
            tar_of(b"dir", EntryType::Regular).as_slice(),
            &opts,
        )
        .unwrap_err();
        assert!(matches!(e, BoxfsError::DirWithNonDir(_)), "{e}");
        // `a/../b` stays inside: it is `b`.
        extract(
            &t,
            Path::new("inner"),
            tar_of(b"a/../b", EntryType::Regular).as_slice(),
            &opts,
        )
        .unwrap();
        assert!(dst.path().join("inner/b").exists());
    }
}
