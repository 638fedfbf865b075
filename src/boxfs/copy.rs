//! The client's side of `docker cp`: which directory an archive goes into and
//! under what name, from what the source and the destination are (Docker's
//! `CopyInfoSourcePath`, `CopyInfoDestinationPath`, `PrepareArchiveCopy`).
//!
//! - `SRC` a file: `DEST` an existing directory receives it under its own
//!   name; an existing file is overwritten; a missing `DEST` is created (its
//!   parent must exist), unless `DEST` ends in `/`, which says it must be a
//!   directory.
//! - `SRC` a directory: copied as `DEST/SRC` into an existing directory, as
//!   `DEST` when missing; `SRC/.` copies its contents instead.
//! - `-L` follows a symbolic link `SRC`; `-` is a tar stream on standard input
//!   (extracted into a directory `DEST`) or output (the archive as it is).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::archive::{self, ExtractOptions, Owners};
use super::{absolute, base_name, specifies_current_dir, BoxfsError, DirTree, Files, Result};

/// Symbolic links followed at most in a destination path (Docker's limit).
const MAX_DEST_LINKS: usize = 10;

/// What one side of a copy is (Docker's `CopyInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyInfo {
    pub path: String,
    pub exists: bool,
    pub is_dir: bool,
    /// The name the archive's top entry takes, when a followed link gave
    /// the source another one.
    pub rebase_name: Option<String>,
}

fn has_trailing_separator(path: &str) -> bool {
    path.ends_with('/')
}

/// Whether `path` says it is a directory: a trailing `/` or `/.`.
fn asserts_directory(path: &str) -> bool {
    has_trailing_separator(path) || specifies_current_dir(path)
}

/// `path`'s directory and last element, a trailing `/.` kept as the element
/// `.` (Docker's `SplitPathDirEntry`); `/` alone is the contents of the root.
pub fn split_path_dir_entry(path: &str) -> (String, String) {
    let abs = absolute(path);
    let current = abs.ends_with("/.");
    let body = abs.strip_suffix("/.").unwrap_or(&abs).trim_end_matches('/');
    if current || body.is_empty() {
        let dir = if body.is_empty() { "/" } else { body };
        return (dir.to_string(), ".".into());
    }
    let cut = body.rfind('/').unwrap_or(0);
    let dir = if cut == 0 { "/" } else { &body[..cut] };
    (dir.to_string(), body[cut + 1..].to_string())
}

/// Docker's `GetRebaseName`: `resolved` with `path`'s trailing `/.` or `/`,
/// and the name the archive must use when the link's target has another.
pub fn rebase_name(path: &str, resolved: &str) -> (String, Option<String>) {
    let mut resolved = resolved.to_string();
    if specifies_current_dir(path) && !specifies_current_dir(&resolved) {
        resolved.push_str("/.");
    }
    if has_trailing_separator(path) && !has_trailing_separator(&resolved) {
        resolved.push('/');
    }
    let rebase = (base_name(path) != base_name(&resolved)).then(|| base_name(path));
    (resolved, rebase)
}

/// Docker's `PrepareArchiveCopy`: the directory to extract into, and the
/// name the archive's top entry must take there (`None`: its own).
pub fn prepare_archive_copy(src: &CopyInfo, dst: &CopyInfo) -> Result<(String, Option<String>)> {
    let (dst_dir, dst_base) = split_path_dir_entry(&dst.path);
    if dst.exists && dst.is_dir {
        return Ok((dst.path.clone(), None));
    }
    if dst.exists && src.is_dir {
        return Err(BoxfsError::CannotCopyDir(dst.path.clone()));
    }
    if !dst.exists && !src.is_dir && asserts_directory(&dst.path) {
        return Err(BoxfsError::NoSuchDirectory(dst.path.clone()));
    }
    Ok((dst_dir, Some(dst_base)))
}

/// The top entry's name in an archive of `src`, and what it must become.
fn renaming(src: &CopyInfo, new_base: Option<String>) -> Option<(String, String)> {
    let (_, old) = split_path_dir_entry(&src.path);
    let new = new_base
        .or_else(|| src.rebase_name.clone())
        .unwrap_or_else(|| old.clone());
    (new != old).then_some((old, new))
}

/// A host path made absolute against the working directory, cleaned, its
/// trailing `/` or `/.` kept.
pub fn host_absolute(path: &str) -> Result<String> {
    if path.starts_with('/') {
        return Ok(absolute(path));
    }
    let cwd =
        std::env::current_dir().map_err(BoxfsError::io("cannot find", "the working directory"))?;
    Ok(absolute(&format!("{}/{path}", cwd.display())))
}

fn lexical_rel(abs: &str) -> PathBuf {
    super::clean(Path::new(abs)).into_iter().collect()
}

/// Docker's `CopyInfoSourcePath` on the host: the parent's links resolved,
/// the last component's too with `follow`.
pub fn host_source(path: &str, follow: bool) -> Result<CopyInfo> {
    let path = host_absolute(path)?;
    let missing = |p: &str| BoxfsError::io("cannot copy", p.to_string());
    let (resolved, rebase) = if follow {
        let real = std::fs::canonicalize(&path).map_err(missing(&path))?;
        rebase_name(&path, &real.to_string_lossy())
    } else {
        let cut = path.rfind('/').map_or(0, |i| i + 1);
        let (dir, base) = path.split_at(cut);
        let real_dir = std::fs::canonicalize(dir).map_err(missing(&path))?;
        let resolved = format!(
            "{}/{base}",
            real_dir.to_string_lossy().trim_end_matches('/')
        );
        let rebase = (has_trailing_separator(&path) && base_name(&path) != base_name(&resolved))
            .then(|| base_name(&path));
        (resolved, rebase)
    };
    let meta = std::fs::symlink_metadata(&resolved).map_err(missing(&path))?;
    Ok(CopyInfo {
        path: resolved,
        exists: true,
        is_dir: meta.is_dir(),
        rebase_name: rebase,
    })
}

/// Docker's `CopyInfoDestinationPath` on the host: links in the last
/// component followed; a missing destination needs an existing parent.
pub fn host_destination(path: &str) -> Result<CopyInfo> {
    let mut path = host_absolute(path)?;
    let original = path.clone();
    let mut links = 0;
    loop {
        match std::fs::symlink_metadata(&path) {
            Ok(m) if !m.file_type().is_symlink() => {
                return Ok(CopyInfo {
                    path,
                    exists: true,
                    is_dir: m.is_dir(),
                    rebase_name: None,
                })
            }
            Ok(_) => {
                links += 1;
                if links > MAX_DEST_LINKS {
                    return Err(BoxfsError::Io {
                        what: "too many symbolic links in",
                        path: original,
                        source: io::Error::from_raw_os_error(libc::ELOOP),
                    });
                }
                let target =
                    std::fs::read_link(&path).map_err(BoxfsError::io("cannot read", &path))?;
                let target = target.to_string_lossy().into_owned();
                path = if target.starts_with('/') {
                    absolute(&target)
                } else {
                    absolute(&format!("{}/{target}", split_path_dir_entry(&path).0))
                };
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(BoxfsError::io("cannot copy to", &path)(e)),
        }
    }
    let (parent, _) = split_path_dir_entry(&path);
    match std::fs::metadata(&parent) {
        Ok(m) if m.is_dir() => Ok(CopyInfo {
            path,
            ..Default::default()
        }),
        Ok(_) => Err(BoxfsError::Io {
            what: "cannot copy into",
            path: parent,
            source: io::Error::from_raw_os_error(libc::ENOTDIR),
        }),
        Err(e) => Err(BoxfsError::io("cannot copy into", &parent)(e)),
    }
}

fn host_tree() -> Result<DirTree> {
    DirTree::open(Path::new("/")).map_err(BoxfsError::io("cannot open", "/"))
}

/// Extracts an archive of box path `src` (as described) at host path `dst`.
fn extract_on_host(input: &mut dyn Read, src: &CopyInfo, dst: &str) -> Result<()> {
    let dst = host_destination(dst)?;
    let (dir, new_base) = prepare_archive_copy(src, &dst)?;
    let real = std::fs::canonicalize(&dir).map_err(BoxfsError::io("cannot copy into", &dir))?;
    let rel = lexical_rel(&real.to_string_lossy());
    archive::extract(
        &host_tree()?,
        &rel,
        input,
        &ExtractOptions {
            owners: Owners::Unchanged,
            rename: renaming(src, new_base),
        },
    )
}

/// `cp BOX:src dst`: `dst` `-` writes the archive to `stdout`.
pub fn copy_from_box(
    files: &dyn Files,
    src: &str,
    dst: &str,
    follow: bool,
    stdout: &mut dyn Write,
) -> Result<()> {
    let mut src = absolute(src);
    let mut rebase = None;
    if follow {
        if let Ok(st) = files.stat(&src) {
            if st.mode & libc::S_IFMT == libc::S_IFLNK {
                let (target, r) = rebase_name(&src, &st.link_target);
                src = target;
                rebase = r;
            }
        }
    }
    files.get(&src, &mut |info, input| {
        if dst == "-" {
            io::copy(input, stdout).map_err(BoxfsError::io("cannot write", "standard output"))?;
            return stdout
                .flush()
                .map_err(BoxfsError::io("cannot write", "standard output"));
        }
        let info = CopyInfo {
            path: src.clone(),
            exists: true,
            is_dir: info.mode & libc::S_IFMT == libc::S_IFDIR,
            rebase_name: rebase.clone(),
        };
        extract_on_host(input, &info, dst)
    })
}

/// `cp src BOX:dst`: `src` `-` reads an archive from `stdin`. `place` names
/// the destination for messages (`web:/etc`).
pub fn copy_to_box(
    files: &dyn Files,
    src: &str,
    dst: &str,
    place: &str,
    follow: bool,
    owners: Owners,
    stdin: &mut dyn Read,
) -> Result<()> {
    let mut dst_info = CopyInfo {
        path: absolute(dst),
        ..Default::default()
    };
    let mut st = files.stat(&dst_info.path);
    if let Ok(s) = &st {
        if s.mode & libc::S_IFMT == libc::S_IFLNK {
            dst_info.path = s.link_target.clone();
            st = files.stat(&dst_info.path);
        }
    }
    match st {
        Ok(s) => {
            let t = s.mode & libc::S_IFMT;
            if t != libc::S_IFDIR && t != libc::S_IFREG {
                return Err(BoxfsError::BadDestination(format!("\"{place}\"")));
            }
            dst_info.exists = true;
            dst_info.is_dir = t == libc::S_IFDIR;
        }
        Err(BoxfsError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    if src == "-" {
        if !dst_info.is_dir {
            return Err(BoxfsError::MustBeDirectory(format!("\"{place}\"")));
        }
        return files.put(&dst_info.path, stdin, owners);
    }
    let src_info = host_source(src, follow)?;
    let (dir, new_base) = prepare_archive_copy(&src_info, &dst_info)?;
    let (_, own) = split_path_dir_entry(&src_info.path);
    let top = new_base
        .or_else(|| src_info.rebase_name.clone())
        .unwrap_or(own);
    let host = host_tree()?;
    let rel = lexical_rel(&src_info.path);
    super::pipe_through(
        |w| archive::write(&host, &rel, &top, false, w),
        |r| files.put(&dir, r, owners),
    )
}

#[cfg(test)]
mod tests {
    use super::super::{Local, Tree};
    use super::*;
    use crate::testing::TempDir;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    #[test]
    fn paths_split_as_dockers_split_path_dir_entry() {
        assert_eq!(split_path_dir_entry("/a/b"), ("/a".into(), "b".into()));
        assert_eq!(split_path_dir_entry("/a/b/"), ("/a".into(), "b".into()));
        assert_eq!(split_path_dir_entry("/a/b/."), ("/a/b".into(), ".".into()));
        assert_eq!(split_path_dir_entry("/a"), ("/".into(), "a".into()));
        assert_eq!(split_path_dir_entry("/"), ("/".into(), ".".into()));
    }

    fn info(path: &str, exists: bool, is_dir: bool) -> CopyInfo {
        CopyInfo {
            path: path.into(),
            exists,
            is_dir,
            rebase_name: None,
        }
    }

    #[test]
    fn the_archive_goes_where_dockers_rules_say() {
        let file = info("/src/f", true, true);
        let file = CopyInfo {
            is_dir: false,
            ..file
        };
        let dir = info("/src/d", true, true);
        // Into an existing directory, under the source's own name.
        assert_eq!(
            prepare_archive_copy(&file, &info("/dst", true, true)).unwrap(),
            ("/dst".into(), None)
        );
        // Over an existing file, or as a new name: renamed.
        assert_eq!(
            prepare_archive_copy(&file, &info("/dst/g", true, false)).unwrap(),
            ("/dst".into(), Some("g".into()))
        );
        assert_eq!(
            prepare_archive_copy(&dir, &info("/dst/new", false, false)).unwrap(),
            ("/dst".into(), Some("new".into()))
        );
        assert!(matches!(
            prepare_archive_copy(&dir, &info("/dst/g", true, false)),
            Err(BoxfsError::CannotCopyDir(_))
        ));
        assert!(matches!(
            prepare_archive_copy(&file, &info("/no/such/dir/", false, false)),
            Err(BoxfsError::NoSuchDirectory(_))
        ));
    }

    #[test]
    fn a_followed_link_keeps_the_name_asked_for() {
        assert_eq!(
            rebase_name("/a/link/", "/real/target"),
            ("/real/target/".into(), Some("link".into()))
        );
        assert_eq!(rebase_name("/a/link/.", "/t"), ("/t/.".into(), None));
        assert_eq!(rebase_name("/a/same", "/b/same"), ("/b/same".into(), None));
    }

    fn boxed() -> (TempDir, DirTree) {
        let d = TempDir::new("copy-box");
        let root = d.path();
        std::fs::create_dir_all(root.join("etc/conf.d")).unwrap();
        std::fs::write(root.join("etc/passwd"), "box passwd\n").unwrap();
        std::fs::write(root.join("etc/conf.d/a"), "a\n").unwrap();
        std::fs::set_permissions(
            root.join("etc/conf.d/a"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        symlink("/", root.join("etc/root-link")).unwrap();
        symlink("../../..", root.join("etc/conf.d/up")).unwrap();
        let t = DirTree::open(root).unwrap();
        (d, t)
    }

    #[test]
    fn copies_out_of_a_box_never_read_the_hosts_files() {
        let (_d, t) = boxed();
        let files = Local {
            tree: &t,
            place: "box b".into(),
            one_fs: false,
        };
        let out = TempDir::new("copy-out");
        for (i, src) in [
            "/etc/../../etc/passwd",
            "../../../etc/passwd",
            "/etc/root-link/etc/passwd",
            "/etc/conf.d/up/etc/passwd",
        ]
        .into_iter()
        .enumerate()
        {
            let dst = out.path().join(format!("p{i}"));
            copy_from_box(&files, src, dst.to_str().unwrap(), false, &mut Vec::new()).unwrap();
            assert_eq!(
                std::fs::read_to_string(&dst).unwrap(),
                "box passwd\n",
                "{src}"
            );
        }
        // -L on a link to `/` copies the box's root, named as asked.
        let dst = out.path().join("whole");
        copy_from_box(
            &files,
            "/etc/root-link",
            dst.to_str().unwrap(),
            true,
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dst.join("etc/passwd")).unwrap(),
            "box passwd\n"
        );
        // Without -L the link itself is copied.
        let dst = out.path().join("link");
        copy_from_box(
            &files,
            "/etc/root-link",
            dst.to_str().unwrap(),
            false,
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(std::fs::read_link(&dst).unwrap(), Path::new("/"));
    }

    #[test]
    fn directories_copy_by_name_or_by_contents() {
        let (_d, t) = boxed();
        let files = Local {
            tree: &t,
            place: "box b".into(),
            one_fs: false,
        };
        let out = TempDir::new("copy-dirs");
        let existing = out.path().join("existing");
        std::fs::create_dir(&existing).unwrap();
        let p = |p: &Path| p.to_str().unwrap().to_string();
        copy_from_box(&files, "/etc/conf.d", &p(&existing), false, &mut Vec::new()).unwrap();
        let a = existing.join("conf.d/a");
        assert_eq!(
            std::fs::metadata(&a).unwrap().permissions().mode() & 0o777,
            0o640
        );
        copy_from_box(
            &files,
            "/etc/conf.d/.",
            &p(&existing),
            false,
            &mut Vec::new(),
        )
        .unwrap();
        assert!(existing.join("a").exists());
        let fresh = out.path().join("fresh");
        copy_from_box(&files, "/etc/conf.d/", &p(&fresh), false, &mut Vec::new()).unwrap();
        assert!(fresh.join("a").exists());
        let e = copy_from_box(
            &files,
            "/etc/conf.d",
            &p(&existing.join("conf.d/a")),
            false,
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(matches!(e, BoxfsError::CannotCopyDir(_)), "{e}");
        let e = copy_from_box(&files, "/nope", &p(&fresh), false, &mut Vec::new()).unwrap_err();
        assert_eq!(e.to_string(), "Could not find the file /nope in box b");
    }

    #[test]
    fn copies_into_a_box_stay_inside_it_and_become_roots() {
        let (d, t) = boxed();
        let files = Local {
            tree: &t,
            place: "box b".into(),
            one_fs: false,
        };
        let src = TempDir::new("copy-in-src");
        let f = src.path().join("f");
        std::fs::write(&f, "new\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o751)).unwrap();
        std::os::unix::fs::lchown(&f, Some(1000), Some(1000)).unwrap();
        let fs = f.to_str().unwrap();
        // A link to `/` and one climbing out both land in the box's own root.
        copy_to_box(
            &files,
            fs,
            "/etc/root-link/",
            "b:/etc/root-link/",
            false,
            Owners::Fixed(0, 0),
            &mut io::empty(),
        )
        .unwrap();
        let landed = d.path().join("f");
        assert_eq!(std::fs::read_to_string(&landed).unwrap(), "new\n");
        let m = std::fs::metadata(&landed).unwrap();
        assert_eq!((m.permissions().mode() & 0o777, m.uid()), (0o751, 0));
        copy_to_box(
            &files,
            fs,
            "/etc/conf.d/up/tmp-f",
            "b:x",
            false,
            Owners::Archive,
            &mut io::empty(),
        )
        .unwrap();
        assert_eq!(
            std::fs::metadata(d.path().join("tmp-f")).unwrap().uid(),
            1000
        );
        copy_to_box(
            &files,
            fs,
            "../../../../etc/passwd",
            "b:x",
            false,
            Owners::Fixed(0, 0),
            &mut io::empty(),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("etc/passwd")).unwrap(),
            "new\n"
        );
        // A missing directory: nothing is written.
        let e = copy_to_box(
            &files,
            fs,
            "/no/such/dir/",
            "b:/no/such/dir/",
            false,
            Owners::Fixed(0, 0),
            &mut io::empty(),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "no such directory: /no/such/dir/");
        let e = copy_to_box(
            &files,
            fs,
            "/no/such/f",
            "b:/no/such/f",
            false,
            Owners::Fixed(0, 0),
            &mut io::empty(),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "Could not find the file /no/such in box b");
        assert!(t.lstat(Path::new("no")).is_err());
        // A directory, copied by name.
        copy_to_box(
            &files,
            src.path().to_str().unwrap(),
            "/etc/",
            "b:/etc/",
            false,
            Owners::Fixed(0, 0),
            &mut io::empty(),
        )
        .unwrap();
        let name = src.path().file_name().unwrap();
        assert!(d.path().join("etc").join(name).join("f").exists());
    }
}
