//! A box's own root directory, made from an image's unpacked tree.
//!
//! The image store keeps one unpacked tree per image, shared by every box of that
//! image, so a box never writes to it: it gets a copy in its own directory, which its
//! writes change and `rm` deletes. Files, directories, symbolic links and hard links
//! keep their modes, owners and modification times; fifos, sockets and device nodes
//! are not copied (the unpacker only creates those for privileged callers).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// What [`copy_tree`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    pub files: u64,
    pub bytes: u64,
    /// Special files (fifos, sockets, devices) left out.
    pub skipped: u64,
}

/// Copies the tree at `src` to `dst`, which must not exist yet. On error, what was
/// copied so far is removed again.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<CopyStats> {
    let mut stats = CopyStats::default();
    let mut links = HashMap::new();
    // Made here, so that only a directory this call created is removed on error.
    fs::create_dir(dst).map_err(|e| with_path(e, dst))?;
    let result = copy_dir(src, dst, &mut links, &mut stats);
    if result.is_err() {
        let _ = fs::remove_dir_all(dst);
    }
    result.map(|()| stats)
}

fn with_path(e: io::Error, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

fn copy_dir(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), std::path::PathBuf>,
    stats: &mut CopyStats,
) -> io::Result<()> {
    let meta = fs::symlink_metadata(src).map_err(|e| with_path(e, src))?;
    for entry in fs::read_dir(src).map_err(|e| with_path(e, src))? {
        let entry = entry.map_err(|e| with_path(e, src))?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let m = fs::symlink_metadata(&from).map_err(|e| with_path(e, &from))?;
        let ft = m.file_type();
        if ft.is_dir() {
            fs::create_dir(&to).map_err(|e| with_path(e, &to))?;
            copy_dir(&from, &to, links, stats)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(|e| with_path(e, &from))?;
            std::os::unix::fs::symlink(&target, &to).map_err(|e| with_path(e, &to))?;
            own(&to, &m)?;
        } else if ft.is_file() {
            if m.nlink() > 1 {
                if let Some(first) = links.get(&(m.dev(), m.ino())) {
                    fs::hard_link(first, &to).map_err(|e| with_path(e, &to))?;
                    continue;
                }
                links.insert((m.dev(), m.ino()), to.clone());
            }
            stats.bytes += fs::copy(&from, &to).map_err(|e| with_path(e, &from))?;
            stats.files += 1;
            own(&to, &m)?;
            // After chown, which clears set-user-ID and set-group-ID bits.
            fs::set_permissions(&to, fs::Permissions::from_mode(m.mode() & 0o7777))
                .map_err(|e| with_path(e, &to))?;
            let f = fs::File::options().write(true).open(&to)?;
            f.set_modified(m.modified()?)
                .map_err(|e| with_path(e, &to))?;
        } else {
            stats.skipped += 1;
        }
    }
    own(dst, &meta)?;
    fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(|e| with_path(e, dst))
}

/// Gives `path` the owner in `like` when we may (as root); others keep their own.
fn own(path: &Path, like: &fs::Metadata) -> io::Result<()> {
    match std::os::unix::fs::lchown(path, Some(like.uid()), Some(like.gid())) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        r => r.map_err(|e| with_path(e, path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("a3s-rootfs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn copy_keeps_modes_symlinks_and_hard_links() {
        let d = scratch("keep");
        let src = d.join("src");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::write(src.join("bin/busybox"), b"binary").unwrap();
        fs::set_permissions(src.join("bin/busybox"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::hard_link(src.join("bin/busybox"), src.join("bin/sh")).unwrap();
        std::os::unix::fs::symlink("busybox", src.join("bin/ls")).unwrap();
        std::os::unix::fs::symlink("/etc/missing", src.join("dangling")).unwrap();
        fs::create_dir(src.join("tmp")).unwrap();
        fs::set_permissions(src.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();

        let dst = d.join("dst");
        let stats = copy_tree(&src, &dst).unwrap();
        assert_eq!(stats.files, 1, "the hard link is linked, not copied again");
        assert_eq!(fs::read(dst.join("bin/sh")).unwrap(), b"binary");
        let (a, b) = (
            fs::metadata(dst.join("bin/busybox")).unwrap(),
            fs::metadata(dst.join("bin/sh")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino());
        assert_eq!(a.mode() & 0o7777, 0o4755);
        assert_eq!(
            fs::read_link(dst.join("bin/ls")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            fs::read_link(dst.join("dangling")).unwrap(),
            Path::new("/etc/missing")
        );
        assert_eq!(
            fs::metadata(dst.join("tmp")).unwrap().mode() & 0o7777,
            0o1777
        );
        // The copy is independent of the source.
        fs::write(dst.join("bin/busybox"), b"changed").unwrap();
        assert_eq!(fs::read(src.join("bin/busybox")).unwrap(), b"binary");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failed_copy_leaves_nothing_behind() {
        let d = scratch("fail");
        let dst = d.join("dst");
        assert!(copy_tree(&d.join("no-such-source"), &dst).is_err());
        assert!(!dst.exists());
        fs::create_dir(&dst).unwrap();
        fs::write(dst.join("kept"), b"").unwrap();
        let err = copy_tree(&d, &dst).unwrap_err();
        assert!(err.to_string().contains("dst"), "{err}");
        assert!(
            dst.join("kept").exists(),
            "an existing target is not touched"
        );
        fs::remove_dir_all(&d).unwrap();
    }
}
