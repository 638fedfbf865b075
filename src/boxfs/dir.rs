//! [`DirTree`]: a plain directory as a [`Tree`]. Every path is opened from the
//! root's descriptor with `openat2(RESOLVE_IN_ROOT)`, so even a symbolic link
//! swapped in while we work resolves inside the root, and the last component
//! is never followed (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags, CWD,
};

use super::{Kind, Meta, SetMeta, Time, Tree};

/// A directory whose entries are reached only through its descriptor.
pub struct DirTree {
    root: OwnedFd,
}

fn mode(perm: u32) -> Mode {
    Mode::from_raw_mode(perm & 0o7777)
}

fn timespec(t: Time) -> Timespec {
    Timespec {
        tv_sec: t.secs,
        tv_nsec: i64::from(t.nanos),
    }
}

fn not_found_is_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl DirTree {
    /// The tree rooted at directory `path`.
    pub fn open(path: &Path) -> io::Result<DirTree> {
        let root = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(DirTree { root })
    }

    /// Opens `rel` from the root, confined to it, not following its last
    /// component.
    fn open_rel(&self, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        let path: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        Ok(rustix::fs::openat2(
            &self.root,
            path,
            flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )?)
    }

    /// The directory holding `rel`, and `rel`'s name in it.
    fn parent(&self, rel: &Path) -> io::Result<(OwnedFd, OsString)> {
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?
            .to_owned();
        let dir = self.open_rel(
            rel.parent().unwrap_or(Path::new("")),
            OFlags::PATH | OFlags::DIRECTORY,
        )?;
        Ok((dir, name))
    }

    /// Removes the non-directory at `rel`, if any.
    pub fn remove(&self, rel: &Path) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        remove_non_dir(&dir, &name)
    }

    /// Whether directory `rel` carries extended attribute `name`, and its value.
    pub fn xattr(&self, rel: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
        let fd = self.open_rel(rel, OFlags::RDONLY | OFlags::NONBLOCK)?;
        let mut buf = vec![0u8; 256];
        match rustix::fs::fgetxattr(&fd, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                Ok(Some(buf))
            }
            Err(e) if e == rustix::io::Errno::NODATA || e == rustix::io::Errno::NOTSUP => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every extended attribute of regular file or directory `rel`.
    pub fn xattrs(&self, rel: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let fd = self.open_rel(rel, OFlags::RDONLY | OFlags::NONBLOCK)?;
        let mut names = vec![0u8; 4096];
        let n = match rustix::fs::flistxattr(&fd, &mut names[..]) {
            Ok(n) => n,
            Err(e) if e == rustix::io::Errno::NOTSUP => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let mut value = vec![0u8; 64 * 1024];
            let name_os = OsStr::from_bytes(name);
            if let Ok(len) = rustix::fs::fgetxattr(&fd, name_os, &mut value[..]) {
                value.truncate(len);
                out.push((name.to_vec(), value));
            }
        }
        Ok(out)
    }

    /// Sets extended attribute `name` on directory `rel`.
    pub fn set_xattr(&self, rel: &Path, name: &str, value: &[u8]) -> io::Result<()> {
        let fd = self.open_rel(rel, OFlags::RDONLY | OFlags::DIRECTORY)?;
        Ok(rustix::fs::fsetxattr(
            &fd,
            name,
            value,
            XattrFlags::empty(),
        )?)
    }
}

/// Unlinks `name` in `dir` unless it is missing; a directory stays (EISDIR).
fn remove_non_dir(dir: &impl AsFd, name: &OsStr) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::NOENT => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl Tree for DirTree {
    fn lstat(&self, rel: &Path) -> io::Result<Meta> {
        if rel.as_os_str().is_empty() {
            return Ok(Meta::from_stat(&rustix::fs::fstat(&self.root)?));
        }
        let (dir, name) = self.parent(rel)?;
        Ok(Meta::from_stat(&rustix::fs::statat(
            &dir,
            &name,
            AtFlags::SYMLINK_NOFOLLOW,
        )?))
    }

    fn read_link(&self, rel: &Path) -> io::Result<PathBuf> {
        let (dir, name) = self.parent(rel)?;
        let target = rustix::fs::readlinkat(&dir, &name, Vec::new())?;
        Ok(PathBuf::from(OsStr::from_bytes(target.as_bytes())))
    }

    fn read_dir(&self, rel: &Path) -> io::Result<Vec<OsString>> {
        let fd = self.open_rel(rel, OFlags::RDONLY | OFlags::DIRECTORY)?;
        let mut names = Vec::new();
        for entry in Dir::read_from(&fd)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn open_file(&self, rel: &Path) -> io::Result<File> {
        // Non-blocking, so a fifo swapped in never blocks the open.
        let fd = self.open_rel(rel, OFlags::RDONLY | OFlags::NONBLOCK)?;
        let f = File::from(fd);
        if !f.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        Ok(f)
    }

    fn make_dir(&self, rel: &Path, perm: u32) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        match rustix::fs::mkdirat(&dir, &name, mode(perm)) {
            Ok(()) => Ok(()),
            Err(e) if e == rustix::io::Errno::EXIST => {
                let st = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW)?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    Ok(())
                } else {
                    Err(e.into())
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    fn create_file(&self, rel: &Path, perm: u32) -> io::Result<File> {
        let (dir, name) = self.parent(rel)?;
        remove_non_dir(&dir, &name)?;
        let fd = rustix::fs::openat(
            &dir,
            &name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            mode(perm),
        )?;
        Ok(File::from(fd))
    }

    fn symlink(&self, rel: &Path, target: &Path) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        remove_non_dir(&dir, &name)?;
        Ok(rustix::fs::symlinkat(target, &dir, &name)?)
    }

    fn hard_link(&self, rel: &Path, existing: &Path) -> io::Result<()> {
        let (from_dir, from_name) = self.parent(existing)?;
        let (dir, name) = self.parent(rel)?;
        if existing == rel {
            return Ok(());
        }
        remove_non_dir(&dir, &name)?;
        Ok(rustix::fs::linkat(
            &from_dir,
            &from_name,
            &dir,
            &name,
            AtFlags::empty(),
        )?)
    }

    fn mknod(&self, rel: &Path, kind: Kind, perm: u32, rdev: u64) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        remove_non_dir(&dir, &name)?;
        let t = match kind {
            Kind::Char => FileType::CharacterDevice,
            Kind::Block => FileType::BlockDevice,
            Kind::Fifo => FileType::Fifo,
            _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
        };
        Ok(rustix::fs::mknodat(&dir, &name, t, mode(perm), rdev)?)
    }

    fn set_meta(&self, rel: &Path, set: &SetMeta) -> io::Result<()> {
        let (dir, name) = if rel.as_os_str().is_empty() {
            (
                self.open_rel(rel, OFlags::PATH | OFlags::DIRECTORY)?,
                OsString::new(),
            )
        } else {
            self.parent(rel)?
        };
        let flags = if name.is_empty() {
            AtFlags::EMPTY_PATH
        } else {
            AtFlags::SYMLINK_NOFOLLOW
        };
        // The owner first: changing it clears set-user-ID bits.
        if let Some((uid, gid)) = set.owner {
            rustix::fs::chownat(
                &dir,
                &name,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
                flags,
            )?;
        }
        if let Some(perm) = set.perm {
            // chmod through the entry's own descriptor: a name swapped for a
            // symbolic link in between is never followed.
            let fd = if name.is_empty() {
                self.open_rel(rel, OFlags::PATH)?
            } else {
                rustix::fs::openat(
                    &dir,
                    &name,
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?
            };
            let st = rustix::fs::fstat(&fd)?;
            if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
                let via = format!("/proc/self/fd/{}", fd.as_raw_fd());
                rustix::fs::chmodat(CWD, via.as_str(), mode(perm), AtFlags::empty())?;
            }
        }
        if let Some((atime, mtime)) = set.times {
            let ts = Timestamps {
                last_access: timespec(atime),
                last_modification: timespec(mtime),
            };
            if name.is_empty() {
                let fd = self.open_rel(rel, OFlags::RDONLY | OFlags::DIRECTORY)?;
                rustix::fs::futimens(&fd, &ts)?;
            } else {
                rustix::fs::utimensat(&dir, &name, &ts, AtFlags::SYMLINK_NOFOLLOW)?;
            }
        }
        Ok(())
    }
}

/// `lstat` that says `None` for a missing entry.
pub fn lstat_opt(tree: &dyn Tree, rel: &Path) -> io::Result<Option<Meta>> {
    not_found_is_none(tree.lstat(rel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TempDir;
    use std::io::Write;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    #[test]
    fn writes_through_a_link_to_the_host_root_stay_inside() {
        let d = TempDir::new("dirtree-escape");
        let root = d.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        symlink("/", root.join("up")).unwrap();
        symlink("../../../../../../tmp", root.join("dots")).unwrap();
        let t = DirTree::open(&root).unwrap();
        // A link as the last component of a parent is refused, never followed.
        assert!(t.create_file(Path::new("up/escaped"), 0o644).is_err());
        assert!(!Path::new("/escaped").exists());
        // Links inside a parent resolve in the root: `up` is the tree's root,
        // and `dots` climbs no higher than it.
        std::fs::create_dir(root.join("x")).unwrap();
        let mut f = t
            .create_file(Path::new("up/x/escaped"), 0o644)
            .expect("created inside the root");
        f.write_all(b"x").unwrap();
        assert!(root.join("x/escaped").exists());
        std::fs::create_dir(root.join("tmp")).unwrap();
        let made = format!("made-{}", std::process::id());
        t.make_dir(&Path::new("dots").join(&made).join("sub"), 0o755)
            .unwrap_err();
        t.make_dir(&Path::new("dots/../tmp").join(&made), 0o755)
            .unwrap();
        assert!(root.join("tmp").join(&made).is_dir());
        assert!(!Path::new("/tmp").join(&made).exists());
        // The last component is never followed.
        assert!(t.open_file(Path::new("up")).is_err());
    }

    #[test]
    fn set_meta_applies_owner_mode_and_times_without_following_links() {
        let d = TempDir::new("dirtree-meta");
        let t = DirTree::open(d.path()).unwrap();
        drop(t.create_file(Path::new("f"), 0o600).unwrap());
        t.set_meta(
            Path::new("f"),
            &SetMeta {
                perm: Some(0o4755),
                owner: Some((1234, 4321)),
                times: Some((Time { secs: 5, nanos: 0 }, Time { secs: 7, nanos: 0 })),
            },
        )
        .unwrap();
        let m = std::fs::metadata(d.path().join("f")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o4755);
        assert_eq!((m.uid(), m.gid(), m.mtime()), (1234, 4321, 7));
        symlink("f", d.path().join("l")).unwrap();
        t.set_meta(
            Path::new("l"),
            &SetMeta {
                perm: Some(0o600),
                ..Default::default()
            },
        )
        .unwrap();
        let m = std::fs::metadata(d.path().join("f")).unwrap();
        assert_eq!(
            m.permissions().mode() & 0o7777,
            0o4755,
            "the link's target is untouched"
        );
        assert_eq!(
            t.read_dir(Path::new("")).unwrap(),
            [OsString::from("f"), OsString::from("l")]
        );
    }
}
