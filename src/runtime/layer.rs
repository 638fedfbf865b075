//! A box's layer read (and, while the box is stopped, written) on the host:
//! the merged view of its overlay (the layer's `upper/` over the image's
//! tree, whiteouts and opaque directories honoured), what changed (Docker's
//! `diff`), and the layer as an OCI layer tar for `commit`.
//!
//! The guest caches its root (virtio-fs, cache=always), so nothing here may
//! write into `upper/` while the box runs: callers check first.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::boxfs::archive::Writer;
use crate::boxfs::{lstat_opt, BoxfsError, DirTree, Kind, Meta, SetMeta, Tree};
use crate::oci::unpack::{OPAQUE_WHITEOUT, WHITEOUT_PREFIX};

use super::BoxConfig;

/// overlayfs's mark of a directory made anew over a lower one.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Directories the guest's init makes in a root that lacks them, to mount
/// its file systems on (`/proc`, `/sys`, `/dev`, `/run`, `/tmp`). Made empty
/// where the image has none, they are the runtime's, not the box's changes,
/// as Docker's init layer is not part of a container's.
const MOUNT_POINTS: [&str; 5] = ["dev", "proc", "run", "sys", "tmp"];

/// Why a layer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("box {0} has no layer of its own: its root is the directory it was made with (--rootfs), which holds everything it wrote")]
    NoLayer(String),
    #[error("cannot open {what} {path}")]
    Open {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Files(#[from] BoxfsError),
}

/// What `diff` reports for one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Modified,
    Added,
    Deleted,
}

impl ChangeKind {
    /// Docker's letter: `C`, `A`, `D`.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Modified => 'C',
            ChangeKind::Added => 'A',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One changed path, absolute in the box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    pub path: String,
}

/// Which layer an entry of the merged view comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    Upper,
    Lower,
}

/// An entry of the merged view.
#[derive(Debug, Clone)]
struct Found {
    layer: Layer,
    meta: Meta,
    /// For a directory: whether the upper layer has it, and whether the lower
    /// one shows through it (no opaque mark, a directory there too).
    upper_dir: bool,
    lower_dir: bool,
}

/// The merged view of an overlay: `upper` over `lower`.
pub struct LayerTree {
    pub upper: DirTree,
    pub lower: DirTree,
}

fn enoent() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

impl LayerTree {
    pub fn open(upper: &Path, lower: &Path) -> Result<LayerTree, LayerError> {
        let open = |what, path: &Path| {
            DirTree::open(path).map_err(|source| LayerError::Open {
                what,
                path: path.to_owned(),
                source,
            })
        };
        Ok(LayerTree {
            upper: open("the box's layer", upper)?,
            lower: open("the image's tree", lower)?,
        })
    }

    /// The layer of box `cfg`.
    pub fn of(cfg: &BoxConfig) -> Result<LayerTree, LayerError> {
        let layer = cfg
            .layer
            .as_ref()
            .ok_or_else(|| LayerError::NoLayer(cfg.name.clone()))?;
        Self::open(&Path::new(layer).join("upper"), Path::new(&cfg.rootfs))
    }

    fn opaque(&self, rel: &Path) -> io::Result<bool> {
        Ok(self.upper.xattr(rel, OPAQUE_XATTR)?.as_deref() == Some(b"y"))
    }

    /// Finds `rel` in the merged view; `None` when it is not there.
    fn locate(&self, rel: &Path) -> io::Result<Option<Found>> {
        let root = self.upper.lstat(Path::new(""))?;
        let mut found = Found {
            layer: Layer::Upper,
            meta: root,
            upper_dir: true,
            lower_dir: true,
        };
        let mut prefix = PathBuf::new();
        for c in rel.components() {
            if !found.meta.is_dir() {
                return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
            }
            prefix.push(c);
            let up = if found.upper_dir {
                lstat_opt(&self.upper, &prefix)?
            } else {
                None
            };
            let lo = match &up {
                Some(u) if !u.is_dir() => None,
                _ if found.lower_dir => lstat_opt(&self.lower, &prefix)?,
                _ => None,
            };
            found = match (up, lo) {
                (Some(u), _) if u.is_whiteout() => return Ok(None),
                (Some(u), lo) => {
                    let lower_dir =
                        u.is_dir() && lo.is_some_and(|l| l.is_dir()) && !self.opaque(&prefix)?;
                    Found {
                        layer: Layer::Upper,
                        upper_dir: u.is_dir(),
                        meta: u,
                        lower_dir,
                    }
                }
                (None, Some(l)) => Found {
                    layer: Layer::Lower,
                    upper_dir: false,
                    lower_dir: l.is_dir(),
                    meta: l,
                },
                (None, None) => return Ok(None),
            };
        }
        Ok(Some(found))
    }

    fn found(&self, rel: &Path) -> io::Result<Found> {
        self.locate(rel)?.ok_or_else(enoent)
    }

    fn layer(&self, l: Layer) -> &DirTree {
        match l {
            Layer::Upper => &self.upper,
            Layer::Lower => &self.lower,
        }
    }

    /// Makes sure every directory of `rel` (itself included) is in the upper
    /// layer, made with the lower one's mode, owner and times.
    fn copy_up_dirs(&self, rel: &Path) -> io::Result<()> {
        let mut prefix = PathBuf::new();
        for c in rel.components() {
            prefix.push(c);
            let f = self.found(&prefix)?;
            if !f.meta.is_dir() {
                return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
            }
            if f.layer == Layer::Lower {
                self.upper.make_dir(&prefix, f.meta.perm)?;
                self.copy_meta(&prefix, &f.meta)?;
            }
        }
        Ok(())
    }

    fn copy_meta(&self, rel: &Path, m: &Meta) -> io::Result<()> {
        self.upper.set_meta(
            rel,
            &SetMeta {
                owner: Some((m.uid, m.gid)),
                perm: (m.kind != Kind::Symlink).then_some(m.perm),
                times: Some((m.atime, m.mtime)),
            },
        )
    }

    /// Brings a non-directory that is only in the lower layer up, whole.
    fn copy_up(&self, rel: &Path, f: &Found) -> io::Result<()> {
        if f.layer == Layer::Upper {
            return Ok(());
        }
        if f.meta.is_dir() {
            return self.copy_up_dirs(rel);
        }
        self.copy_up_dirs(rel.parent().unwrap_or(Path::new("")))?;
        match f.meta.kind {
            Kind::File => {
                let mut from = self.lower.open_file(rel)?;
                let mut to = self.upper.create_file(rel, f.meta.perm)?;
                io::copy(&mut from, &mut to)?;
            }
            Kind::Symlink => self.upper.symlink(rel, &self.lower.read_link(rel)?)?,
            k => self.upper.mknod(rel, k, f.meta.perm, f.meta.rdev)?,
        }
        self.copy_meta(rel, &f.meta)
    }

    /// Makes the parent of `rel` an upper directory, for a new entry there.
    fn prepare(&self, rel: &Path) -> io::Result<()> {
        self.copy_up_dirs(rel.parent().unwrap_or(Path::new("")))
    }
}

impl Tree for LayerTree {
    fn lstat(&self, rel: &Path) -> io::Result<Meta> {
        Ok(self.found(rel)?.meta)
    }

    fn read_link(&self, rel: &Path) -> io::Result<PathBuf> {
        let f = self.found(rel)?;
        self.layer(f.layer).read_link(rel)
    }

    fn read_dir(&self, rel: &Path) -> io::Result<Vec<OsString>> {
        let f = self.found(rel)?;
        if !f.meta.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        let mut names = BTreeSet::new();
        let mut hidden = BTreeSet::new();
        if f.upper_dir {
            for n in self.upper.read_dir(rel)? {
                if self.upper.lstat(&rel.join(&n))?.is_whiteout() {
                    hidden.insert(n);
                } else {
                    names.insert(n);
                }
            }
        }
        if f.lower_dir {
            for n in self.lower.read_dir(rel)? {
                if !hidden.contains(&n) {
                    names.insert(n);
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    fn open_file(&self, rel: &Path) -> io::Result<File> {
        let f = self.found(rel)?;
        self.layer(f.layer).open_file(rel)
    }

    fn make_dir(&self, rel: &Path, perm: u32) -> io::Result<()> {
        match self.locate(rel)? {
            Some(f) if f.meta.is_dir() => return self.copy_up_dirs(rel),
            Some(_) => return Err(io::Error::from_raw_os_error(libc::EEXIST)),
            None => {}
        }
        self.prepare(rel)?;
        // A name deleted from the lower layer comes back as a new directory,
        // which must hide what the lower one had there.
        let parent = self.found(rel.parent().unwrap_or(Path::new("")))?;
        let hides_lower = parent.lower_dir && lstat_opt(&self.lower, rel)?.is_some();
        self.upper.remove(rel)?;
        self.upper.make_dir(rel, perm)?;
        if hides_lower {
            self.upper.set_xattr(rel, OPAQUE_XATTR, b"y")?;
        }
        Ok(())
    }

    fn create_file(&self, rel: &Path, perm: u32) -> io::Result<File> {
        self.prepare(rel)?;
        self.upper.create_file(rel, perm)
    }

    fn symlink(&self, rel: &Path, target: &Path) -> io::Result<()> {
        self.prepare(rel)?;
        self.upper.symlink(rel, target)
    }

    fn hard_link(&self, rel: &Path, existing: &Path) -> io::Result<()> {
        let f = self.found(existing)?;
        self.copy_up(existing, &f)?;
        self.prepare(rel)?;
        self.upper.hard_link(rel, existing)
    }

    fn mknod(&self, rel: &Path, kind: Kind, perm: u32, rdev: u64) -> io::Result<()> {
        self.prepare(rel)?;
        self.upper.mknod(rel, kind, perm, rdev)
    }

    fn set_meta(&self, rel: &Path, set: &SetMeta) -> io::Result<()> {
        let f = self.found(rel)?;
        self.copy_up(rel, &f)?;
        self.upper.set_meta(rel, set)
    }
}

/// Whether an upper directory only repeats the lower one's attributes.
fn same_dir(u: &Meta, l: &Meta) -> bool {
    u.perm == l.perm && u.uid == l.uid && u.gid == l.gid && u.mtime == l.mtime
}

fn absolute(rel: &Path) -> String {
    format!("/{}", rel.display())
}

/// Records `kind` for `rel` and `C` for each directory above it.
fn record(out: &mut BTreeMap<String, ChangeKind>, rel: &Path, kind: ChangeKind) {
    out.entry(absolute(rel)).or_insert(kind);
    let mut p = rel.parent();
    while let Some(dir) = p.filter(|d| !d.as_os_str().is_empty()) {
        out.entry(absolute(dir)).or_insert(ChangeKind::Modified);
        p = dir.parent();
    }
}

impl LayerTree {
    /// Whether upper entry `rel` is a mount point only init made.
    fn init_mount_point(&self, rel: &Path, upper: &Meta, lower: Option<&Meta>) -> io::Result<bool> {
        let top = rel.parent().is_some_and(|p| p.as_os_str().is_empty());
        let named = rel.to_str().is_some_and(|n| MOUNT_POINTS.contains(&n));
        Ok(top
            && named
            && upper.is_dir()
            && lower.is_none()
            && self.upper.read_dir(rel)?.is_empty())
    }

    /// What the box changed, sorted by path as Docker sorts it.
    pub fn changes(&self) -> io::Result<Vec<Change>> {
        let mut out = BTreeMap::new();
        self.walk_changes(Path::new(""), true, &mut out)?;
        Ok(out
            .into_iter()
            .map(|(path, kind)| Change { kind, path })
            .collect())
    }

    fn walk_changes(
        &self,
        rel: &Path,
        lower_shows: bool,
        out: &mut BTreeMap<String, ChangeKind>,
    ) -> io::Result<()> {
        let names = self.upper.read_dir(rel)?;
        for n in &names {
            let child = rel.join(n);
            let u = self.upper.lstat(&child)?;
            let l = if lower_shows {
                lstat_opt(&self.lower, &child)?
            } else {
                None
            };
            if u.is_whiteout() {
                if l.is_some() {
                    record(out, &child, ChangeKind::Deleted);
                }
                continue;
            }
            if self.init_mount_point(&child, &u, l.as_ref())? {
                continue;
            }
            let opaque = u.is_dir() && self.opaque(&child)?;
            match &l {
                None => record(out, &child, ChangeKind::Added),
                Some(l) if u.is_dir() && l.is_dir() && !opaque && same_dir(&u, l) => {}
                Some(_) => record(out, &child, ChangeKind::Modified),
            }
            if !u.is_dir() {
                continue;
            }
            let lower_dir = l.as_ref().is_some_and(|l| l.is_dir());
            if opaque && lower_dir {
                // Everything the lower directory held and this one lacks is gone.
                let mine: BTreeSet<OsString> = self.upper.read_dir(&child)?.into_iter().collect();
                for gone in self.lower.read_dir(&child)? {
                    if !mine.contains(&gone) {
                        record(out, &child.join(gone), ChangeKind::Deleted);
                    }
                }
            }
            self.walk_changes(&child, lower_dir && !opaque, out)?;
        }
        Ok(())
    }

    /// Writes the upper layer as an OCI layer tar: whiteouts become
    /// `.wh.<name>` files, opaque directories get `.wh..wh..opq`, and
    /// overlayfs's own attributes are left out.
    pub fn write_layer(&self, out: impl Write) -> Result<(), BoxfsError> {
        let mut w = Writer::new(&self.upper, out);
        self.layer_entries(&mut w, Path::new(""))?;
        w.finish()?
            .flush()
            .map_err(BoxfsError::io("cannot write", "the layer"))
    }

    fn layer_entries<W: Write>(&self, w: &mut Writer<'_, W>, rel: &Path) -> Result<(), BoxfsError> {
        let io_err = |what, p: &Path| BoxfsError::io(what, absolute(p));
        for n in self
            .upper
            .read_dir(rel)
            .map_err(io_err("cannot list", rel))?
        {
            let child = rel.join(&n);
            let m = self
                .upper
                .lstat(&child)
                .map_err(io_err("cannot stat", &child))?;
            let lower = lstat_opt(&self.lower, &child).map_err(io_err("cannot stat", &child))?;
            if self
                .init_mount_point(&child, &m, lower.as_ref())
                .map_err(io_err("cannot list", &child))?
            {
                continue;
            }
            if m.is_whiteout() {
                let mut name = OsString::from(WHITEOUT_PREFIX);
                name.push(&n);
                let mut h = Writer::<W>::header(&m);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o600);
                w.append(&mut h, &rel.join(name), io::empty())
                    .map_err(io_err("cannot archive", &child))?;
                continue;
            }
            if matches!(m.kind, Kind::File | Kind::Dir) {
                let attrs = self
                    .upper
                    .xattrs(&child)
                    .map_err(io_err("cannot read the attributes of", &child))?;
                let records: Vec<(String, Vec<u8>)> = attrs
                    .into_iter()
                    .filter(|(k, _)| !k.starts_with(b"trusted."))
                    .map(|(k, v)| (format!("SCHILY.xattr.{}", String::from_utf8_lossy(&k)), v))
                    .collect();
                if !records.is_empty() && m.kind == Kind::File {
                    w.pax(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                        .map_err(io_err("cannot archive", &child))?;
                }
            }
            w.entry(&child, &child, &m)?;
            if m.is_dir() {
                if self
                    .opaque(&child)
                    .map_err(io_err("cannot read the attributes of", &child))?
                {
                    let mut h = Writer::<W>::header(&m);
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(m.perm & 0o777);
                    w.append(&mut h, &child.join(OPAQUE_WHITEOUT), io::empty())
                        .map_err(io_err("cannot archive", &child))?;
                }
                self.layer_entries(w, &child)?;
            }
        }
        Ok(())
    }
}

/// What box `cfg` changed in its image's tree.
pub fn changes(cfg: &BoxConfig) -> Result<Vec<Change>, LayerError> {
    let tree = LayerTree::of(cfg)?;
    tree.changes().map_err(|e| {
        LayerError::Files(BoxfsError::Io {
            what: "cannot read the layer of box",
            path: cfg.name.clone(),
            source: e,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boxfs::archive::{extract, ExtractOptions, Owners};
    use crate::testing::TempDir;
    use std::os::unix::fs::{symlink, MetadataExt};

    fn whiteout(p: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .unwrap();
    }

    fn opaque(p: &Path) {
        rustix::fs::setxattr(p, OPAQUE_XATTR, b"y", rustix::fs::XattrFlags::empty()).unwrap();
    }

    /// An image tree and a box layer over it, as a box's overlay leaves them.
    fn overlay() -> (TempDir, LayerTree) {
        let d = TempDir::new("layer");
        let lower = d.path().join("lower");
        let upper = d.path().join("upper");
        for dir in ["etc/conf", "var/cache/x", "srv", "bin"] {
            std::fs::create_dir_all(lower.join(dir)).unwrap();
        }
        std::fs::write(lower.join("etc/passwd"), "image\n").unwrap();
        std::fs::write(lower.join("etc/group"), "g\n").unwrap();
        std::fs::write(lower.join("etc/conf/a"), "a\n").unwrap();
        std::fs::write(lower.join("var/cache/x/old"), "o\n").unwrap();
        std::fs::write(lower.join("var/cache/keep"), "k\n").unwrap();
        std::fs::write(lower.join("bin/tool"), "t\n").unwrap();
        // The upper layer: /etc copied up with the image's attributes.
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        let m = std::fs::metadata(lower.join("etc")).unwrap();
        std::fs::write(upper.join("etc/passwd"), "changed\n").unwrap();
        std::fs::write(upper.join("etc/new"), "n\n").unwrap();
        whiteout(&upper.join("etc/group"));
        whiteout(&upper.join("etc/never-was"));
        // /var/cache made anew: opaque, with one new file.
        std::fs::create_dir_all(upper.join("var/cache")).unwrap();
        opaque(&upper.join("var/cache"));
        std::fs::write(upper.join("var/cache/fresh"), "f\n").unwrap();
        // A whole new directory.
        std::fs::create_dir_all(upper.join("opt/app")).unwrap();
        std::fs::write(upper.join("opt/app/run"), "r\n").unwrap();
        symlink("run", upper.join("opt/app/link")).unwrap();
        // Mount points the guest's init made; /srv is the image's.
        std::fs::create_dir_all(upper.join("proc")).unwrap();
        std::fs::create_dir_all(upper.join("run")).unwrap();
        let times = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: m.atime(),
                tv_nsec: m.atime_nsec(),
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: m.mtime(),
                tv_nsec: m.mtime_nsec(),
            },
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            upper.join("etc"),
            &times,
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
        let t = LayerTree::open(&upper, &lower).unwrap();
        (d, t)
    }

    fn listed(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| format!("{} {}", c.kind.letter(), c.path))
            .collect()
    }

    #[test]
    fn changes_list_additions_changes_and_deletions_with_their_parents() {
        let (_d, t) = overlay();
        assert_eq!(
            listed(&t.changes().unwrap()),
            [
                "C /etc",
                "D /etc/group",
                "A /etc/new",
                "C /etc/passwd",
                "A /opt",
                "A /opt/app",
                "A /opt/app/link",
                "A /opt/app/run",
                "C /var",
                "C /var/cache",
                "A /var/cache/fresh",
                "D /var/cache/keep",
                "D /var/cache/x",
            ]
        );
    }

    #[test]
    fn the_merged_view_hides_whiteouts_and_what_opaque_directories_cover() {
        let (_d, t) = overlay();
        let names = |p: &str| -> Vec<String> {
            t.read_dir(Path::new(p))
                .unwrap()
                .into_iter()
                .map(|n| n.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names("etc"), ["conf", "new", "passwd"]);
        assert_eq!(names("var/cache"), ["fresh"]);
        assert_eq!(
            names(""),
            ["bin", "etc", "opt", "proc", "run", "srv", "var"]
        );
        assert!(t.lstat(Path::new("etc/group")).is_err());
        assert!(t.lstat(Path::new("var/cache/keep")).is_err());
        let mut s = String::new();
        use std::io::Read;
        t.open_file(Path::new("etc/passwd"))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "changed\n");
    }

    #[test]
    fn writing_a_stopped_box_copies_up_only_what_it_must() {
        let (d, t) = overlay();
        let upper = d.path().join("upper");
        // A file under a directory only the image has: the directory comes
        // up with the image's mode and owner, and nothing else with it.
        std::os::unix::fs::chown(d.path().join("lower/srv"), Some(7), Some(8)).unwrap();
        let mut f = t.create_file(Path::new("srv/added"), 0o640).unwrap();
        f.write_all(b"x").unwrap();
        let m = std::fs::metadata(upper.join("srv")).unwrap();
        assert_eq!((m.uid(), m.gid()), (7, 8));
        assert_eq!(std::fs::read_dir(upper.join("srv")).unwrap().count(), 1);
        // A directory where the image's was deleted hides the image's content.
        t.make_dir(Path::new("etc/group"), 0o755).unwrap();
        assert!(upper.join("etc/group").is_dir());
        // A new name where the image had a directory the box deleted.
        whiteout(&upper.join("bin"));
        t.make_dir(Path::new("bin"), 0o755).unwrap();
        assert!(t.opaque(Path::new("bin")).unwrap());
        assert!(t.read_dir(Path::new("bin")).unwrap().is_empty());
        // Through an archive: an existing image directory takes new attributes.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o700);
        h.set_size(0);
        b.append_data(&mut h, "conf", io::empty()).unwrap();
        let data = b.into_inner().unwrap();
        let opts = ExtractOptions {
            owners: Owners::Fixed(0, 0),
            rename: None,
        };
        extract(&t, Path::new("etc"), data.as_slice(), &opts).unwrap();
        assert_eq!(t.lstat(Path::new("etc/conf")).unwrap().perm, 0o700);
        assert!(
            t.lstat(Path::new("etc/conf/a")).is_ok(),
            "the image's file shows through"
        );
        assert!(!upper.join("etc/conf/a").exists(), "and was not copied");
    }

    #[test]
    fn the_commit_layer_uses_oci_whiteouts() {
        let (_d, t) = overlay();
        let mut data = Vec::new();
        t.write_layer(&mut data).unwrap();
        let mut ar = tar::Archive::new(data.as_slice());
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "etc",
                "etc/.wh.group",
                "etc/.wh.never-was",
                "etc/new",
                "etc/passwd",
                "opt",
                "opt/app",
                "opt/app/link",
                "opt/app/run",
                "var",
                "var/cache",
                "var/cache/.wh..wh..opq",
                "var/cache/fresh",
            ]
        );
    }
}
