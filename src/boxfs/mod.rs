//! A box's files seen from outside it, as Docker's `cp` sees a container's.
//!
//! A [`Tree`] is a root directory that is only ever read and written through
//! file descriptors that cannot leave it: [`DirTree`] (a plain directory,
//! opened with `openat2` `RESOLVE_IN_ROOT`: a box's `--rootfs`, the merged
//! root in the guest, the host's `/`) and the host's view of a stopped box's
//! overlay (`runtime::layer`). Paths a user gives are resolved in a tree by
//! [`resolve_path`]: `..` stops at `/`, and symbolic links resolve against the
//! tree's root, as Docker's `FollowSymlinkInScope` does.
//!
//! [`Files`] is what Docker's daemon offers for a container's files: stat a
//! path, archive it, extract an archive into a directory. [`Local`] does it on
//! a tree; a running box does it in its guest, over vsock. `copy` holds the
//! client's side of `docker cp` (trailing `/` and `/.`, `-L`, `-`).

pub mod archive;
pub mod copy;
mod dir;

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

pub use crate::proto::PathInfo;
pub use dir::{lstat_opt, DirTree};

/// Longest chain of symbolic links followed in one path (Docker's limit).
const MAX_LINKS: usize = 255;

/// Why a copy failed, in Docker's words where Docker has them.
#[derive(Debug, thiserror::Error)]
pub enum BoxfsError {
    #[error("Could not find the file {path} in {place}")]
    NotFound { path: String, place: String },
    #[error("extraction point {path} in {place} is not a directory")]
    NotADirectory { path: String, place: String },
    #[error("no such directory: {0}")]
    NoSuchDirectory(String),
    #[error("cannot copy directory {0} onto a file")]
    CannotCopyDir(String),
    #[error("cannot overwrite directory {0} with non-directory")]
    DirWithNonDir(String),
    #[error("cannot overwrite non-directory {0} with directory")]
    NonDirWithDir(String),
    #[error("destination {0} must be a directory")]
    MustBeDirectory(String),
    #[error("destination {0} must be a directory or a regular file")]
    BadDestination(String),
    #[error("invalid archive: {0} would be written outside the destination")]
    Breakout(String),
    #[error("{0}")]
    Remote(String),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

impl BoxfsError {
    pub(crate) fn io(what: &'static str, path: impl AsRef<Path>) -> impl FnOnce(io::Error) -> Self {
        let path = path.as_ref().display().to_string();
        move |source| BoxfsError::Io { what, path, source }
    }
}

pub type Result<T> = std::result::Result<T, BoxfsError>;

/// The type of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
    Socket,
}

/// A point in time, as the file system keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Time {
    pub secs: i64,
    pub nanos: u32,
}

/// What `lstat` says about an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    /// Permission bits with set-user-ID, set-group-ID and sticky.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: Time,
    pub atime: Time,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub rdev: u64,
}

impl Meta {
    // The stat fields' integer types differ between targets.
    #[allow(
        clippy::unnecessary_cast,
        clippy::cast_sign_loss,
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap
    )]
    pub fn from_stat(st: &rustix::fs::Stat) -> Meta {
        let mode = st.st_mode as u32;
        let kind = match mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFCHR => Kind::Char,
            libc::S_IFBLK => Kind::Block,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            _ => Kind::File,
        };
        Meta {
            kind,
            perm: mode & 0o7777,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            size: st.st_size as u64,
            mtime: Time {
                secs: st.st_mtime as i64,
                nanos: st.st_mtime_nsec as u32,
            },
            atime: Time {
                secs: st.st_atime as i64,
                nanos: st.st_atime_nsec as u32,
            },
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            nlink: st.st_nlink as u64,
            rdev: st.st_rdev as u64,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }

    /// overlayfs's mark of a deleted name: a character device 0:0.
    pub fn is_whiteout(&self) -> bool {
        self.kind == Kind::Char && self.rdev == 0
    }

    /// `st_mode`: the type bits and the permission bits.
    pub fn mode(&self) -> u32 {
        let t = match self.kind {
            Kind::File => libc::S_IFREG,
            Kind::Dir => libc::S_IFDIR,
            Kind::Symlink => libc::S_IFLNK,
            Kind::Char => libc::S_IFCHR,
            Kind::Block => libc::S_IFBLK,
            Kind::Fifo => libc::S_IFIFO,
            Kind::Socket => libc::S_IFSOCK,
        };
        t | self.perm
    }
}

/// What to change on an entry; `None` leaves it.
#[derive(Debug, Clone, Default)]
pub struct SetMeta {
    pub perm: Option<u32>,
    pub owner: Option<(u32, u32)>,
    /// Access and modification times.
    pub times: Option<(Time, Time)>,
}

/// A root directory whose entries are named by paths relative to it, made of
/// normal components only (the empty path is the root) and with no symbolic
/// link before the last component: what [`resolve_in_scope`] returns. No
/// method follows a symbolic link in the last component.
pub trait Tree: Sync {
    fn lstat(&self, rel: &Path) -> io::Result<Meta>;
    fn read_link(&self, rel: &Path) -> io::Result<PathBuf>;
    /// The names in directory `rel`, sorted, without `.` and `..`.
    fn read_dir(&self, rel: &Path) -> io::Result<Vec<OsString>>;
    /// Opens regular file `rel` for reading.
    fn open_file(&self, rel: &Path) -> io::Result<File>;
    /// Makes directory `rel`; an existing directory is kept.
    fn make_dir(&self, rel: &Path, perm: u32) -> io::Result<()>;
    /// Creates regular file `rel`, replacing a non-directory there.
    fn create_file(&self, rel: &Path, perm: u32) -> io::Result<File>;
    /// Makes `rel` a symbolic link to `target`, replacing a non-directory.
    fn symlink(&self, rel: &Path, target: &Path) -> io::Result<()>;
    /// Makes `rel` a hard link to `existing`, replacing a non-directory.
    fn hard_link(&self, rel: &Path, existing: &Path) -> io::Result<()>;
    /// Makes a device or fifo at `rel`, replacing a non-directory.
    fn mknod(&self, rel: &Path, kind: Kind, perm: u32, rdev: u64) -> io::Result<()>;
    fn set_meta(&self, rel: &Path, set: &SetMeta) -> io::Result<()>;
}

/// `path`'s components after lexical cleaning against `/`: `.` dropped, `..`
/// taking one away (none above the root).
fn clean(path: &Path) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_owned()),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// `path` (taken as absolute in the tree) with every symbolic link in it
/// followed inside the tree, as Docker's `FollowSymlinkInScope`: the path is
/// cleaned first, `..` never climbs above the root, an absolute link target
/// starts again from the tree's root, and components that do not exist are
/// kept as they are. The result names no symbolic link.
pub fn resolve_in_scope(tree: &dyn Tree, path: &Path) -> io::Result<PathBuf> {
    let mut rest: Vec<OsString> = clean(path);
    rest.reverse();
    let mut done = PathBuf::new();
    let mut links = 0;
    while let Some(p) = rest.pop() {
        if p == ".." {
            done.pop();
            continue;
        }
        if p.is_empty() || p == "." {
            continue;
        }
        let candidate = done.join(&p);
        let meta = match tree.lstat(&candidate) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                done = candidate;
                continue;
            }
            Err(e) => return Err(e),
        };
        if meta.kind != Kind::Symlink {
            done = candidate;
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        let target = tree.read_link(&candidate)?;
        if target.is_absolute() {
            done = PathBuf::new();
        }
        // The target's components, `..` included, are walked from here.
        let mut parts: Vec<OsString> = target
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_owned()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect();
        parts.reverse();
        rest.extend(parts);
    }
    Ok(done)
}

/// A path a user named inside a tree, resolved as Docker's `ResolvePath`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Where it is: its parent resolved in the tree, then its last component
    /// as it is (a trailing `/` or `/.` resolves that too).
    pub rel: PathBuf,
    /// The path made absolute and cleaned, a trailing `/` or `/.` kept.
    pub abs: String,
}

/// Bytes of the file at `path`, or of every file under it, links not
/// followed; what cannot be read counts as nothing.
pub fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| dir_size(&e.path()))
                .sum::<u64>()
        })
        .unwrap_or(0)
}

/// `path` made absolute and cleaned, keeping a trailing `/` or `/.` (Docker's
/// `PreserveTrailingDotOrSeparator`).
pub fn absolute(path: &str) -> String {
    let parts = clean(Path::new(path));
    let mut abs = String::from("/");
    abs.push_str(
        &parts
            .iter()
            .map(|p| p.to_string_lossy())
            .collect::<Vec<_>>()
            .join("/"),
    );
    if specifies_current_dir(path) && !specifies_current_dir(&abs) {
        if !abs.ends_with('/') {
            abs.push('/');
        }
        abs.push('.');
    } else if path.ends_with('/') && !abs.ends_with('/') {
        abs.push('/');
    }
    abs
}

/// Whether `path` ends in `/.` (or is `.`): "the contents of this directory".
pub fn specifies_current_dir(path: &str) -> bool {
    path == "." || path.ends_with("/.")
}

/// The last element of `path`, as Go's `filepath.Base`: trailing slashes
/// dropped, `/` for the root.
pub fn base_name(path: &str) -> String {
    let t = path.trim_end_matches('/');
    if t.is_empty() {
        return if path.is_empty() {
            ".".into()
        } else {
            "/".into()
        };
    }
    t.rsplit('/').next().unwrap_or(t).to_string()
}

/// Resolves `path` in `tree`: its directory part fully, its last component
/// only when it is empty or `.` (a trailing `/` or `/.`).
pub fn resolve_path(tree: &dyn Tree, path: &str) -> io::Result<Resolved> {
    let abs = absolute(path);
    let cut = abs.rfind('/').map_or(0, |i| i + 1);
    let (dir, base) = abs.split_at(cut);
    let dir_rel = resolve_in_scope(tree, Path::new(dir))?;
    let rel = if base.is_empty() || base == "." {
        dir_rel
    } else {
        dir_rel.join(base)
    };
    Ok(Resolved { rel, abs })
}

/// What Docker's daemon does with a container's files, on one box.
pub trait Files {
    /// The entry at `path` (not following a last symbolic link; its target,
    /// resolved in the box, is in `link_target`).
    fn stat(&self, path: &str) -> Result<PathInfo>;
    /// Archives `path` (entries named from its last component; `.` for the
    /// contents of a directory) and hands the stream to `consume`.
    fn get(
        &self,
        path: &str,
        consume: &mut dyn FnMut(&PathInfo, &mut dyn Read) -> Result<()>,
    ) -> Result<()>;
    /// Extracts the archive `input` into the existing directory `dir`.
    fn put(&self, dir: &str, input: &mut dyn Read, owners: archive::Owners) -> Result<()>;
}

/// [`Files`] on a tree this process reads and writes itself.
pub struct Local<'a> {
    pub tree: &'a dyn Tree,
    /// Where the tree is, for messages: `box web`.
    pub place: String,
    /// Archives leave out file systems mounted inside the tree (the guest's
    /// `/proc`, `/sys`, `/dev` under a running box's root).
    pub one_fs: bool,
}

impl Local<'_> {
    fn not_found(&self, path: &str) -> BoxfsError {
        BoxfsError::NotFound {
            path: path.to_string(),
            place: self.place.clone(),
        }
    }

    /// Resolves `path` and stats what is there.
    fn locate(&self, path: &str) -> Result<(Resolved, Meta)> {
        let r = resolve_path(self.tree, path).map_err(|e| self.lookup_error(path, e))?;
        let m = self
            .tree
            .lstat(&r.rel)
            .map_err(|e| self.lookup_error(path, e))?;
        Ok((r, m))
    }

    fn lookup_error(&self, path: &str, e: io::Error) -> BoxfsError {
        match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR) => self.not_found(path),
            _ => BoxfsError::Io {
                what: "cannot look up",
                path: path.to_string(),
                source: e,
            },
        }
    }

    fn info(&self, r: &Resolved, m: &Meta) -> Result<PathInfo> {
        let link_target = if m.kind == Kind::Symlink {
            let full = resolve_in_scope(self.tree, Path::new(&r.abs))
                .map_err(|e| self.lookup_error(&r.abs, e))?;
            format!("/{}", full.display())
        } else {
            String::new()
        };
        Ok(PathInfo {
            name: base_name(&r.abs),
            size: m.size,
            mode: m.mode(),
            mtime: m.mtime.secs,
            link_target,
        })
    }
}

impl Files for Local<'_> {
    fn stat(&self, path: &str) -> Result<PathInfo> {
        let (r, m) = self.locate(path)?;
        self.info(&r, &m)
    }

    fn get(
        &self,
        path: &str,
        consume: &mut dyn FnMut(&PathInfo, &mut dyn Read) -> Result<()>,
    ) -> Result<()> {
        let (r, m) = self.locate(path)?;
        let info = self.info(&r, &m)?;
        // The root's entries are named from `.`, as `/.` would name them.
        let top = match info.name.as_str() {
            "/" => ".".to_string(),
            n => n.to_string(),
        };
        pipe_through(
            |w| archive::write(self.tree, &r.rel, &top, self.one_fs, w),
            |rd| consume(&info, rd),
        )
    }

    fn put(&self, dir: &str, input: &mut dyn Read, owners: archive::Owners) -> Result<()> {
        // The whole path is followed: a link to a directory is that directory.
        let rel = resolve_in_scope(self.tree, Path::new(&absolute(dir)))
            .map_err(|e| self.lookup_error(dir, e))?;
        let m = self
            .tree
            .lstat(&rel)
            .map_err(|e| self.lookup_error(dir, e))?;
        if !m.is_dir() {
            return Err(BoxfsError::NotADirectory {
                path: dir.to_string(),
                place: self.place.clone(),
            });
        }
        archive::extract(
            self.tree,
            &rel,
            input,
            &archive::ExtractOptions {
                owners,
                rename: None,
            },
        )
    }
}

/// Runs `produce` on a thread writing into a pipe and `consume` here reading
/// from it. When both fail, the producer's error is the cause unless it only
/// saw the consumer go away.
pub fn pipe_through(
    produce: impl FnOnce(&mut dyn io::Write) -> Result<()> + Send,
    consume: impl FnOnce(&mut dyn Read) -> Result<()>,
) -> Result<()> {
    let (mut r, mut w) =
        io::pipe().map_err(BoxfsError::io("cannot make a pipe for", "the archive"))?;
    std::thread::scope(|s| {
        let producer = s.spawn(move || {
            let res = produce(&mut w);
            drop(w);
            res
        });
        let consumed = consume(&mut r);
        // Whatever is left unread would block the producer: let it fail.
        drop(r);
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(BoxfsError::Remote("the archive writer panicked".into())));
        match (produced, consumed) {
            (Ok(()), c) => c,
            (Err(p), Ok(())) => Err(p),
            (Err(p), Err(c)) => {
                if is_broken_pipe(&p) {
                    Err(c)
                } else {
                    Err(p)
                }
            }
        }
    })
}

fn is_broken_pipe(e: &BoxfsError) -> bool {
    matches!(e, BoxfsError::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
}

/// A relative path from raw bytes.
pub(crate) fn rel_path(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TempDir;
    use std::os::unix::fs::symlink;

    fn tree() -> (TempDir, DirTree) {
        let d = TempDir::new("boxfs-resolve");
        let root = d.path();
        std::fs::create_dir_all(root.join("etc/sub")).unwrap();
        std::fs::write(root.join("etc/passwd"), "box\n").unwrap();
        symlink("/", root.join("etc/to-root")).unwrap();
        symlink("../../..", root.join("etc/sub/up")).unwrap();
        symlink("/etc/passwd", root.join("abs-passwd")).unwrap();
        symlink("sub", root.join("etc/rel-sub")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        let t = DirTree::open(root).unwrap();
        (d, t)
    }

    fn resolved(t: &DirTree, p: &str) -> String {
        resolve_in_scope(t, Path::new(p))
            .unwrap()
            .display()
            .to_string()
    }

    #[test]
    fn dot_dot_never_climbs_above_the_root() {
        let (_d, t) = tree();
        assert_eq!(resolved(&t, "/etc/../../etc/passwd"), "etc/passwd");
        assert_eq!(resolved(&t, "../../../../etc/passwd"), "etc/passwd");
        assert_eq!(resolved(&t, "/.."), "");
    }

    #[test]
    fn links_to_the_root_or_above_it_resolve_inside_the_tree() {
        let (_d, t) = tree();
        assert_eq!(resolved(&t, "/etc/to-root/etc/passwd"), "etc/passwd");
        assert_eq!(resolved(&t, "/etc/sub/up/etc/passwd"), "etc/passwd");
        // The path is cleaned before any link is followed, as Docker does.
        assert_eq!(resolved(&t, "/etc/sub/up/../../x"), "etc/x");
        assert_eq!(resolved(&t, "/etc/sub/up/x"), "x");
        assert_eq!(resolved(&t, "/abs-passwd"), "etc/passwd");
        assert_eq!(resolved(&t, "/etc/rel-sub/new"), "etc/sub/new");
    }

    #[test]
    fn a_link_loop_is_an_error_and_missing_parts_are_kept() {
        let (_d, t) = tree();
        assert!(resolve_in_scope(&t, Path::new("/loop1")).is_err());
        assert_eq!(resolved(&t, "/no/such/file"), "no/such/file");
    }

    #[test]
    fn resolve_path_keeps_the_last_link_unless_a_slash_follows() {
        let (_d, t) = tree();
        let r = resolve_path(&t, "/etc/to-root").unwrap();
        assert_eq!(r.rel, Path::new("etc/to-root"));
        let r = resolve_path(&t, "etc/rel-sub/").unwrap();
        assert_eq!(
            (r.rel.as_path(), r.abs.as_str()),
            (Path::new("etc/sub"), "/etc/rel-sub/")
        );
        let r = resolve_path(&t, "/etc/rel-sub/.").unwrap();
        assert_eq!(
            (r.rel.as_path(), r.abs.as_str()),
            (Path::new("etc/sub"), "/etc/rel-sub/.")
        );
    }

    #[test]
    fn paths_are_made_absolute_as_docker_does() {
        assert_eq!(absolute("etc/../x/"), "/x/");
        assert_eq!(absolute("/a/b/."), "/a/b/.");
        assert_eq!(absolute("."), "/.");
        assert_eq!(absolute("/"), "/");
        assert_eq!(absolute(""), "/");
        assert_eq!(base_name("/a/b/"), "b");
        assert_eq!(base_name("/a/."), ".");
        assert_eq!(base_name("/"), "/");
    }

    #[test]
    fn a_local_stat_names_the_resolved_link_target_and_missing_files() {
        let (_d, t) = tree();
        let files = Local {
            tree: &t,
            place: "box b".into(),
            one_fs: false,
        };
        let st = files.stat("/etc/sub/up").unwrap();
        assert_eq!(st.link_target, "/");
        assert_eq!(st.mode & libc::S_IFMT, libc::S_IFLNK);
        let st = files.stat("/abs-passwd").unwrap();
        assert_eq!(st.link_target, "/etc/passwd");
        let e = files.stat("/etc/nope").unwrap_err().to_string();
        assert_eq!(e, "Could not find the file /etc/nope in box b");
    }
}
