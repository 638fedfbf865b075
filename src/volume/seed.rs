//! Filling a new volume from the image, as Docker does: when a volume that
//! is empty is mounted where the box's image has a directory, the
//! directory's content (owners, modes, times, links) is copied into it
//! first. The image's tree is read through `boxfs`, so a symbolic link in it
//! resolves inside the image, never to the host.

use std::path::Path;

use crate::boxfs::archive::{self, ExtractOptions, Owners};
use crate::boxfs::{pipe_through, resolve_in_scope, BoxfsError, DirTree, Tree};

/// Copies what directory `path` of the tree at `root` holds into the empty
/// directory `data`; `false` when there was nothing to copy (no such
/// directory in the tree, or `data` is not empty).
pub fn seed(root: &Path, path: &str, data: &Path) -> Result<bool, BoxfsError> {
    let empty = std::fs::read_dir(data)
        .map_err(BoxfsError::io("cannot read", data))?
        .next()
        .is_none();
    if !empty {
        return Ok(false);
    }
    let src = DirTree::open(root).map_err(BoxfsError::io("cannot open", root))?;
    let rel =
        resolve_in_scope(&src, Path::new(path)).map_err(BoxfsError::io("cannot look up", path))?;
    let top = match src.lstat(&rel) {
        Ok(m) if m.is_dir() => m,
        _ => return Ok(false),
    };
    let dst = DirTree::open(data).map_err(BoxfsError::io("cannot open", data))?;
    // Owners are the image's when we may set them (root), else ours.
    let owners = if rustix::process::geteuid().is_root() {
        Owners::Archive
    } else {
        Owners::Unchanged
    };
    pipe_through(
        |w| archive::write(&src, &rel, "", false, w),
        |r| {
            archive::extract(
                &dst,
                Path::new(""),
                r,
                &ExtractOptions {
                    owners,
                    rename: None,
                },
            )
        },
    )?;
    // The volume's root takes the directory's own mode and owners.
    use std::os::unix::fs::PermissionsExt;
    if owners == Owners::Archive {
        std::os::unix::fs::chown(data, Some(top.uid), Some(top.gid))
            .map_err(BoxfsError::io("cannot set the owner of", data))?;
    }
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(top.perm))
        .map_err(BoxfsError::io("cannot set the mode of", data))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TempDir;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn an_empty_volume_gets_the_images_directory_and_a_full_one_is_left() {
        let t = TempDir::new("vol-seed");
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("srv/www/sub")).unwrap();
        std::fs::write(root.join("srv/www/index.html"), "hello").unwrap();
        std::fs::write(root.join("srv/www/sub/x"), "x").unwrap();
        std::fs::set_permissions(root.join("srv/www"), std::fs::Permissions::from_mode(0o750))
            .unwrap();
        symlink("index.html", root.join("srv/www/link")).unwrap();
        let data = t.path().join("data");
        std::fs::create_dir(&data).unwrap();
        assert!(seed(&root, "/srv/www", &data).unwrap());
        assert_eq!(
            std::fs::read_to_string(data.join("index.html")).unwrap(),
            "hello"
        );
        assert_eq!(std::fs::read_to_string(data.join("sub/x")).unwrap(), "x");
        assert_eq!(
            std::fs::read_link(data.join("link")).unwrap(),
            Path::new("index.html")
        );
        let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o750, "the volume's root takes the directory's mode");
        std::fs::write(root.join("srv/www/index.html"), "changed").unwrap();
        assert!(
            !seed(&root, "/srv/www", &data).unwrap(),
            "not empty: left as it is"
        );
        assert_eq!(
            std::fs::read_to_string(data.join("index.html")).unwrap(),
            "hello"
        );
    }

    #[test]
    fn nothing_is_copied_from_a_missing_path_or_through_a_link_out_of_the_image() {
        let t = TempDir::new("vol-seed-link");
        let root = t.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), "host").unwrap();
        // An absolute link resolves in the image, where that path is missing.
        symlink(&outside, root.join("escape")).unwrap();
        symlink("../../outside", root.join("up")).unwrap();
        let data = t.path().join("data");
        std::fs::create_dir(&data).unwrap();
        assert!(!seed(&root, "/missing", &data).unwrap());
        assert!(!seed(&root, "/escape", &data).unwrap());
        assert!(!seed(&root, "/up", &data).unwrap());
        assert!(std::fs::read_dir(&data).unwrap().next().is_none());
    }
}
