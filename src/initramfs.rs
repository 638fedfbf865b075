//! The guest's initramfs: an uncompressed "newc" cpio archive built in memory.
//!
//! Format (the kernel's `Documentation/driver-api/early-userspace/buffer-format.rst`):
//! each entry is a 110-byte ASCII header — magic `070701` and thirteen 8-digit
//! hex fields — then the NUL-terminated name, padded so header + name is a
//! multiple of 4 bytes, then the data, padded to a multiple of 4. The archive
//! ends with an entry named `TRAILER!!!`.
//!
//! The kernel unpacks entries in order and does not create missing parent
//! directories, so [`Cpio`] refuses an entry whose parent it has not seen.

use std::collections::BTreeMap;

/// `PATH_MAX`: the kernel skips entries whose name (with its NUL) is longer.
const PATH_MAX: usize = 4096;
const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Why an entry cannot go into the archive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitramfsError {
    /// The path is empty, escapes the root, holds a NUL or is too long.
    #[error("initramfs path {path:?} is not usable: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Permission bits outside 0o7777 (the file type comes from the method).
    #[error("initramfs entry {path:?}: mode {mode:#o} has bits beyond 0o7777")]
    InvalidMode {
        /// The normalised path.
        path: String,
        /// The mode as given.
        mode: u32,
    },
    /// The path was already added.
    #[error("initramfs entry {0:?} was added twice")]
    Duplicate(String),
    /// The parent directory has not been added (the kernel would drop the entry).
    #[error("initramfs entry {path:?} needs its parent directory {parent:?} added first")]
    MissingParent {
        /// The normalised path.
        path: String,
        /// Its parent.
        parent: String,
    },
    /// The parent exists but is not a directory.
    #[error("initramfs entry {path:?}: parent {parent:?} is not a directory")]
    ParentNotDirectory {
        /// The normalised path.
        path: String,
        /// Its parent.
        parent: String,
    },
    /// Contents too large for the format's 32-bit size field.
    #[error("initramfs entry {path:?} is {len} bytes; the format holds at most 4 GiB - 1")]
    TooLarge {
        /// The normalised path.
        path: String,
        /// Its size in bytes.
        len: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    Other,
}

/// An uncompressed newc cpio archive under construction.
///
/// Paths are relative to the guest's root; a leading `/`, `.` components and
/// repeated slashes are accepted and normalised away. Every entry has uid and
/// gid 0, mtime 0 and a unique inode number; directories have nlink 2, the
/// rest nlink 1 (so the kernel never takes two entries for hard links).
#[derive(Debug, Default)]
pub struct Cpio {
    buf: Vec<u8>,
    /// Last inode number handed out (0 is left to the trailer).
    last_ino: u32,
    entries: BTreeMap<String, Kind>,
}

impl Cpio {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the directory `path` with permission bits `mode`.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self, InitramfsError> {
        let name = self.admit(path, mode, Kind::Dir)?;
        self.entry(&name, S_IFDIR | mode, 2, (0, 0), &[]);
        Ok(self)
    }

    /// Adds `path` and any missing ancestors, all with permission bits `mode`;
    /// directories already in the archive are left as they are.
    pub fn dir_all(&mut self, path: &str, mode: u32) -> Result<&mut Self, InitramfsError> {
        let name = normalise(path)?;
        self.ancestors(&name, mode)?;
        if self.entries.get(&name) != Some(&Kind::Dir) {
            self.dir(&name, mode)?;
        }
        Ok(self)
    }

    /// Adds the missing ancestors of the normalised `name` with permission bits `mode`.
    fn ancestors(&mut self, name: &str, mode: u32) -> Result<(), InitramfsError> {
        for (end, _) in name.match_indices('/') {
            let parent = &name[..end];
            match self.entries.get(parent) {
                Some(Kind::Dir) => {}
                Some(Kind::Other) => {
                    return Err(InitramfsError::ParentNotDirectory {
                        path: name.to_owned(),
                        parent: parent.to_owned(),
                    })
                }
                None => {
                    self.dir(parent, mode)?;
                }
            }
        }
        Ok(())
    }

    /// Adds the regular file `path` with permission bits `mode`.
    pub fn file(
        &mut self,
        path: &str,
        mode: u32,
        contents: &[u8],
    ) -> Result<&mut Self, InitramfsError> {
        let name = self.admit(path, mode, Kind::Other)?;
        self.check_size(&name, contents.len())?;
        self.entry(&name, S_IFREG | mode, 1, (0, 0), contents);
        Ok(self)
    }

    /// Adds the symbolic link `path` pointing at `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self, InitramfsError> {
        if target.is_empty() || target.contains('\0') {
            return Err(InitramfsError::InvalidPath {
                path: target.to_owned(),
                reason: "a symlink target must be non-empty and free of NUL",
            });
        }
        let name = self.admit(path, 0o777, Kind::Other)?;
        self.check_size(&name, target.len())?;
        self.entry(&name, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
        Ok(self)
    }

    /// Adds the character device `path` (`major`, `minor`) with permission bits `mode`.
    pub fn char_dev(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<&mut Self, InitramfsError> {
        let name = self.admit(path, mode, Kind::Other)?;
        self.entry(&name, S_IFCHR | mode, 1, (major, minor), &[]);
        Ok(self)
    }

    /// Ends the archive with its trailer and returns the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.write_header(0, 0, 1, 0, (0, 0), TRAILER);
        self.buf
    }

    /// Validates `path` and `mode` and records the entry; returns the normalised name.
    fn admit(&mut self, path: &str, mode: u32, kind: Kind) -> Result<String, InitramfsError> {
        let name = normalise(path)?;
        if mode & !0o7777 != 0 {
            return Err(InitramfsError::InvalidMode { path: name, mode });
        }
        if self.entries.contains_key(&name) {
            return Err(InitramfsError::Duplicate(name));
        }
        if let Some((parent, _)) = name.rsplit_once('/') {
            match self.entries.get(parent) {
                Some(Kind::Dir) => {}
                Some(Kind::Other) => {
                    return Err(InitramfsError::ParentNotDirectory {
                        parent: parent.to_owned(),
                        path: name,
                    })
                }
                None => {
                    return Err(InitramfsError::MissingParent {
                        parent: parent.to_owned(),
                        path: name,
                    })
                }
            }
        }
        self.entries.insert(name.clone(), kind);
        Ok(name)
    }

    fn check_size(&self, name: &str, len: usize) -> Result<(), InitramfsError> {
        if u32::try_from(len).is_err() {
            return Err(InitramfsError::TooLarge {
                path: name.to_owned(),
                len,
            });
        }
        Ok(())
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        self.last_ino += 1;
        let size = u32::try_from(data.len()).expect("size checked by the caller");
        self.write_header(self.last_ino, mode, nlink, size, rdev, name);
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn write_header(
        &mut self,
        ino: u32,
        mode: u32,
        nlink: u32,
        size: u32,
        (rdev_major, rdev_minor): (u32, u32),
        name: &str,
    ) {
        // Names are bounded by PATH_MAX in `normalise`, so this cannot truncate.
        let namesize = u32::try_from(name.len() + 1).expect("name length checked");
        let start = self.buf.len();
        self.buf.extend_from_slice(MAGIC);
        let fields = [
            ino, mode, 0, // uid
            0, // gid
            nlink, 0, // mtime
            size, 0, // dev major
            0, // dev minor
            rdev_major, rdev_minor, namesize, 0, // check (unused by newc)
        ];
        for field in fields {
            self.buf
                .extend_from_slice(format!("{field:08X}").as_bytes());
        }
        debug_assert_eq!(self.buf.len() - start, HEADER_LEN);
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    /// Pads to 4 bytes; every entry starts 4-aligned, so this aligns both the
    /// end of header + name and the end of the data.
    fn pad(&mut self) {
        let rem = self.buf.len() % 4;
        if rem != 0 {
            self.buf.resize(self.buf.len() + 4 - rem, 0);
        }
    }
}

/// `a//b/./c/` and `/a/b/c` become `a/b/c`.
fn normalise(path: &str) -> Result<String, InitramfsError> {
    let invalid = |reason| InitramfsError::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    if path.contains('\0') {
        return Err(invalid("it contains a NUL byte"));
    }
    let mut parts = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err(invalid("it contains a `..` component")),
            c => parts.push(c),
        }
    }
    let name = parts.join("/");
    if name.is_empty() {
        return Err(invalid("it names the root itself"));
    }
    if name == TRAILER {
        return Err(invalid("it is the archive's end marker"));
    }
    if name.len() + 1 > PATH_MAX {
        return Err(invalid("it is longer than PATH_MAX"));
    }
    Ok(name)
}

/// This running binary as the guest's `/init`, plus `extra` files: the initramfs
/// every box boots from.
pub fn of_this_binary(extra: &[(String, Vec<u8>, u32)]) -> std::io::Result<Vec<u8>> {
    let exe = std::fs::read("/proc/self/exe")?;
    guest_initramfs(&exe, extra).map_err(std::io::Error::other)
}

/// The guest's whole initramfs: the skeleton init needs, this binary as
/// `/init` (and `/sbin/init`), and `extra` files as (guest path, contents,
/// permission bits), with their parent directories created (mode 0755).
///
/// The skeleton: directories `dev proc sys tmp run sbin bin`, `/dev/console`
/// (5,1; mode 0600 — the kernel opens it for init's stdio before devtmpfs is
/// mounted) and `/dev/null` (1,3; mode 0666).
pub fn guest_initramfs(
    init_binary: &[u8],
    extra: &[(String, Vec<u8>, u32)],
) -> Result<Vec<u8>, InitramfsError> {
    let mut cpio = Cpio::new();
    for dir in ["dev", "proc", "sys", "tmp", "run", "sbin", "bin"] {
        let mode = if dir == "tmp" { 0o1777 } else { 0o755 };
        cpio.dir(dir, mode)?;
    }
    cpio.char_dev("dev/console", 0o600, 5, 1)?
        .char_dev("dev/null", 0o666, 1, 3)?
        .file("init", 0o755, init_binary)?
        .symlink("sbin/init", "/init")?;
    for (path, contents, mode) in extra {
        let name = normalise(path)?;
        cpio.ancestors(&name, 0o755)?;
        cpio.file(&name, *mode, contents)?;
    }
    Ok(cpio.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    /// One parsed entry; parsing checks magic, alignment and padding bytes.
    #[derive(Debug)]
    struct Entry {
        name: String,
        ino: u32,
        mode: u32,
        uid: u32,
        gid: u32,
        nlink: u32,
        mtime: u32,
        rdev: (u32, u32),
        data: Vec<u8>,
    }

    fn parse(archive: &[u8]) -> Vec<Entry> {
        let hex = |b: &[u8]| u32::from_str_radix(std::str::from_utf8(b).unwrap(), 16).unwrap();
        let padded = |n: usize| n.div_ceil(4) * 4;
        let mut entries = Vec::new();
        let mut off = 0;
        loop {
            assert_eq!(off % 4, 0, "entry at {off} is not 4-aligned");
            let h = &archive[off..off + HEADER_LEN];
            assert_eq!(&h[..6], MAGIC, "bad magic at {off}");
            let f = |i: usize| hex(&h[6 + 8 * i..14 + 8 * i]);
            let namesize = usize::try_from(f(11)).unwrap();
            let size = usize::try_from(f(6)).unwrap();
            let name_start = off + HEADER_LEN;
            let name_bytes = &archive[name_start..name_start + namesize];
            assert_eq!(name_bytes.last(), Some(&0), "name not NUL-terminated");
            let name = std::str::from_utf8(&name_bytes[..namesize - 1])
                .unwrap()
                .to_owned();
            let data_start = off + padded(HEADER_LEN + namesize);
            assert!(
                archive[name_start + namesize..data_start]
                    .iter()
                    .all(|&b| b == 0),
                "name padding of {name} is not zero"
            );
            let data = archive[data_start..data_start + size].to_vec();
            let next = data_start + padded(size);
            assert!(
                archive[data_start + size..next].iter().all(|&b| b == 0),
                "data padding of {name} is not zero"
            );
            off = next;
            if name == TRAILER {
                assert_eq!(off, archive.len(), "bytes after the trailer");
                return entries;
            }
            entries.push(Entry {
                name,
                ino: f(0),
                mode: f(1),
                uid: f(2),
                gid: f(3),
                nlink: f(4),
                mtime: f(5),
                rdev: (f(9), f(10)),
                data,
            });
        }
    }

    fn find<'a>(entries: &'a [Entry], name: &str) -> &'a Entry {
        entries
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no entry {name}"))
    }

    fn extra(path: &str, contents: &[u8], mode: u32) -> (String, Vec<u8>, u32) {
        (path.to_owned(), contents.to_vec(), mode)
    }

    #[test]
    fn empty_archive_is_just_the_trailer() {
        let bytes = Cpio::new().finish();
        assert!(parse(&bytes).is_empty());
        assert_eq!(bytes.len(), 124, "110 + 11 (name) padded to 4");
    }

    #[test]
    fn headers_carry_modes_links_and_zero_owner_and_time() {
        let mut cpio = Cpio::new();
        cpio.dir("d", 0o750)
            .unwrap()
            .file("d/f", 0o640, b"abc")
            .unwrap()
            .symlink("d/l", "f")
            .unwrap()
            .char_dev("d/c", 0o600, 5, 1)
            .unwrap();
        let entries = parse(&cpio.finish());
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["d", "d/f", "d/l", "d/c"]);
        assert_eq!(find(&entries, "d").mode, 0o040_750);
        assert_eq!(find(&entries, "d").nlink, 2);
        assert_eq!(find(&entries, "d/f").mode, 0o100_640);
        assert_eq!(find(&entries, "d/f").nlink, 1);
        assert_eq!(find(&entries, "d/f").data, b"abc");
        assert_eq!(find(&entries, "d/l").mode, 0o120_777);
        assert_eq!(find(&entries, "d/l").data, b"f");
        assert_eq!(find(&entries, "d/c").mode, 0o020_600);
        assert_eq!(find(&entries, "d/c").rdev, (5, 1));
        assert!(find(&entries, "d/c").data.is_empty());
        for e in &entries {
            assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 0), "{}", e.name);
        }
    }

    #[test]
    fn inode_numbers_are_unique_and_nonzero() {
        let bytes = guest_initramfs(b"init", &[extra("etc/a", b"", 0o644)]).unwrap();
        let entries = parse(&bytes);
        let mut inos: Vec<u32> = entries.iter().map(|e| e.ino).collect();
        assert!(inos.iter().all(|&i| i != 0));
        inos.sort_unstable();
        inos.dedup();
        assert_eq!(inos.len(), entries.len());
    }

    #[test]
    fn every_name_and_data_length_mod_4_is_padded() {
        // Names of 1..=8 bytes and data of 0..=8 bytes hit every remainder.
        let mut cpio = Cpio::new();
        for n in 1..=8 {
            let name = "n".repeat(n);
            cpio.file(&name, 0o644, &vec![b'x'; n - 1]).unwrap();
        }
        cpio.file("odd-length-name", 0o644, b"12345").unwrap();
        let entries = parse(&cpio.finish());
        assert_eq!(entries.len(), 9);
        for n in 1..=8 {
            assert_eq!(find(&entries, &"n".repeat(n)).data, vec![b'x'; n - 1]);
        }
        assert_eq!(find(&entries, "odd-length-name").data, b"12345");
    }

    #[test]
    fn paths_are_normalised() {
        let mut cpio = Cpio::new();
        cpio.dir("/a/", 0o755)
            .unwrap()
            .file("./a//b", 0o644, b"")
            .unwrap();
        let names: Vec<String> = parse(&cpio.finish()).into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["a", "a/b"]);
    }

    #[test]
    fn bad_paths_and_modes_are_refused() {
        let mut cpio = Cpio::new();
        for bad in ["", "/", "a/../b", "a\0b", "TRAILER!!!"] {
            assert!(
                matches!(
                    cpio.file(bad, 0o644, b""),
                    Err(InitramfsError::InvalidPath { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            cpio.file(&"x".repeat(PATH_MAX), 0o644, b""),
            Err(InitramfsError::InvalidPath { .. })
        ));
        assert_eq!(
            cpio.file("f", 0o100_644, b"").map(|_| ()),
            Err(InitramfsError::InvalidMode {
                path: "f".into(),
                mode: 0o100_644
            })
        );
        assert!(matches!(
            cpio.symlink("l", ""),
            Err(InitramfsError::InvalidPath { .. })
        ));
    }

    #[test]
    fn duplicates_and_missing_or_bad_parents_are_refused() {
        let mut cpio = Cpio::new();
        cpio.file("f", 0o644, b"").unwrap();
        assert_eq!(
            cpio.dir("f", 0o755).unwrap_err(),
            InitramfsError::Duplicate("f".into())
        );
        assert_eq!(
            cpio.file("f/g", 0o644, b"").unwrap_err(),
            InitramfsError::ParentNotDirectory {
                path: "f/g".into(),
                parent: "f".into()
            }
        );
        assert_eq!(
            cpio.file("d/g", 0o644, b"").unwrap_err(),
            InitramfsError::MissingParent {
                path: "d/g".into(),
                parent: "d".into()
            }
        );
    }

    #[test]
    fn dir_all_creates_only_missing_ancestors() {
        let mut cpio = Cpio::new();
        cpio.dir("a", 0o700).unwrap();
        cpio.dir_all("a/b/c", 0o755).unwrap();
        cpio.dir_all("a/b", 0o755).unwrap();
        let entries = parse(&cpio.finish());
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "a/b", "a/b/c"]);
        assert_eq!(
            find(&entries, "a").mode,
            0o040_700,
            "existing dir untouched"
        );
    }

    #[test]
    fn guest_initramfs_has_the_skeleton_init_and_extras() {
        let bytes = guest_initramfs(
            b"\x7fELF-not-really",
            &[
                extra("/etc/a3s/box.json", b"{}", 0o600),
                extra("bin/busybox", b"bb", 0o755),
                extra("empty", b"", 0o644),
            ],
        )
        .unwrap();
        let entries = parse(&bytes);
        for dir in [
            "dev", "proc", "sys", "tmp", "run", "sbin", "bin", "etc", "etc/a3s",
        ] {
            assert_eq!(find(&entries, dir).mode & 0o170_000, S_IFDIR, "{dir}");
        }
        assert_eq!(find(&entries, "tmp").mode, 0o041_777);
        let console = find(&entries, "dev/console");
        assert_eq!((console.mode, console.rdev), (0o020_600, (5, 1)));
        let null = find(&entries, "dev/null");
        assert_eq!((null.mode, null.rdev), (0o020_666, (1, 3)));
        let init = find(&entries, "init");
        assert_eq!(
            (init.mode, init.data.as_slice()),
            (0o100_755, &b"\x7fELF-not-really"[..])
        );
        let link = find(&entries, "sbin/init");
        assert_eq!(
            (link.mode, link.data.as_slice()),
            (0o120_777, &b"/init"[..])
        );
        assert_eq!(find(&entries, "etc/a3s/box.json").mode, 0o100_600);
        assert_eq!(find(&entries, "etc/a3s/box.json").data, b"{}");
        assert_eq!(find(&entries, "bin/busybox").data, b"bb");
        assert!(find(&entries, "empty").data.is_empty());
        // Parents come before their children, as the kernel needs.
        let pos = |n: &str| entries.iter().position(|e| e.name == n).unwrap();
        assert!(pos("etc") < pos("etc/a3s") && pos("etc/a3s") < pos("etc/a3s/box.json"));
    }

    #[test]
    fn guest_initramfs_refuses_extras_that_clash_with_the_skeleton() {
        assert_eq!(
            guest_initramfs(b"", &[extra("/init", b"other", 0o755)]),
            Err(InitramfsError::Duplicate("init".into()))
        );
        assert!(matches!(
            guest_initramfs(b"", &[extra("init/x", b"", 0o644)]),
            Err(InitramfsError::ParentNotDirectory { .. })
        ));
    }

    // Cross-checks with GNU cpio, when it is installed.

    fn system_cpio() -> Option<&'static str> {
        let found = Command::new("cpio")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            eprintln!("skipping: no `cpio` on PATH");
        }
        found.then_some("cpio")
    }

    fn run_cpio(args: &[&str], dir: Option<&Path>, input: &[u8]) -> String {
        use std::io::Write;
        let mut cmd = Command::new(system_cpio().unwrap());
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "cpio {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let path = std::env::temp_dir()
                .join(format!("a3s-box-initramfs-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn system_cpio_lists_types_and_device_numbers() {
        if system_cpio().is_none() {
            return;
        }
        let bytes = guest_initramfs(b"binary", &[extra("etc/hostname", b"box\n", 0o644)]).unwrap();
        let listing = run_cpio(&["-t", "-v", "--quiet"], None, &bytes);
        let line = |name: &str| {
            listing
                .lines()
                .find(|l| l.ends_with(&format!(" {name}")) || l.contains(&format!(" {name} -> ")))
                .unwrap_or_else(|| panic!("{name} missing from:\n{listing}"))
                .to_owned()
        };
        assert!(line("dev/console").starts_with("crw-------"), "{listing}");
        assert!(line("dev/console").contains("5,"), "{listing}");
        assert!(line("dev/null").starts_with("crw-rw-rw-"), "{listing}");
        assert!(line("init").starts_with("-rwxr-xr-x"), "{listing}");
        assert!(line("sbin/init").starts_with("lrwxrwxrwx"), "{listing}");
        assert!(
            line("sbin/init").ends_with("sbin/init -> /init"),
            "{listing}"
        );
        assert!(line("tmp").starts_with("drwxrwxrwt"), "{listing}");
        assert!(line("etc/hostname").starts_with("-rw-r--r--"), "{listing}");
        assert_eq!(listing.lines().count(), 13, "{listing}");
    }

    #[test]
    fn system_cpio_extracts_the_same_tree() {
        if system_cpio().is_none() {
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let mut cpio = Cpio::new();
        cpio.dir("bin", 0o755)
            .unwrap()
            .file("bin/tool", 0o755, b"#!/bin/sh\necho hi\n")
            .unwrap()
            .file("empty", 0o600, b"")
            .unwrap()
            .file("odd name.txt", 0o644, b"123")
            .unwrap()
            .dir_all("deep/er/dir", 0o750)
            .unwrap()
            .file("deep/er/dir/x", 0o640, &[0u8, 1, 2, 255])
            .unwrap()
            .symlink("link", "bin/tool")
            .unwrap();
        let tmp = TempDir::new("extract");
        run_cpio(
            &[
                "-i",
                "--make-directories",
                "--no-absolute-filenames",
                "--quiet",
            ],
            Some(&tmp.0),
            &cpio.finish(),
        );
        let mode = |p: &str| {
            std::fs::symlink_metadata(tmp.0.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(
            std::fs::read(tmp.0.join("bin/tool")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(mode("bin/tool"), 0o755);
        assert_eq!(std::fs::read(tmp.0.join("empty")).unwrap(), b"");
        assert_eq!(mode("empty"), 0o600);
        assert_eq!(std::fs::read(tmp.0.join("odd name.txt")).unwrap(), b"123");
        assert_eq!(
            std::fs::read(tmp.0.join("deep/er/dir/x")).unwrap(),
            [0, 1, 2, 255]
        );
        assert_eq!(mode("deep/er/dir/x"), 0o640);
        assert_eq!(mode("deep/er/dir"), 0o750);
        assert_eq!(
            std::fs::read_link(tmp.0.join("link")).unwrap(),
            Path::new("bin/tool")
        );
    }
}
