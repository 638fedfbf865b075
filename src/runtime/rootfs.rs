//! A box's root when it comes from an image: the image's unpacked tree, kept by
//! the image store and shared read-only by every box of that image, under the
//! box's own layer, which takes its writes. The guest stacks the two with
//! overlayfs, so starting a box copies nothing of the image, and `rm` deletes
//! only what the box wrote.
//!
//! The layer directory holds overlayfs's `upper/` (the box's changes, in
//! overlayfs's format: a deleted name is a 0:0 character device, a directory
//! made anew is marked `trusted.overlay.opaque`) and its `work/`.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Name of the layer directory in a box's directory.
pub const LAYER_DIR: &str = "layer";

/// Makes an empty layer in `box_dir` and returns its path.
pub fn create_layer(box_dir: &Path) -> io::Result<PathBuf> {
    let layer = box_dir.join(LAYER_DIR);
    let mut b = fs::DirBuilder::new();
    // The work directory is overlayfs's alone; the upper one becomes the
    // root's own directory, whose mode overlayfs takes from the image's.
    b.mode(0o700).create(&layer)?;
    b.mode(0o755).create(layer.join("upper"))?;
    b.mode(0o700).create(layer.join("work"))?;
    Ok(layer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_layer_is_an_empty_upper_and_work_directory() {
        let d = std::env::temp_dir().join(format!("a3s-layer-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        let layer = create_layer(&d).unwrap();
        assert_eq!(layer, d.join(LAYER_DIR));
        for (dir, mode) in [("upper", 0o755), ("work", 0o700)] {
            let m = fs::metadata(layer.join(dir)).unwrap();
            assert!(m.is_dir());
            assert_eq!(m.permissions().mode() & 0o7777, mode, "{dir}");
            assert_eq!(fs::read_dir(layer.join(dir)).unwrap().count(), 0);
        }
        assert!(
            create_layer(&d).is_err(),
            "an existing layer is never reused"
        );
        fs::remove_dir_all(&d).unwrap();
    }
}
