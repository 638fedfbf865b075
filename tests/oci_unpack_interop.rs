//! Our layer unpacker against a reference implementation: an image built with `umoci`
//! (three layers: a busybox root, a change that deletes a file, and a hand-made layer
//! with an opaque directory) is unpacked by `umoci unpack` and by `unpack_layer`, and
//! the two trees must agree on paths, types, modes, owners, contents, symlink targets,
//! mtimes and hard-link groups.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use a3s_box::oci::unpack::{unpack_layer, UnpackOptions};

const TAG: &str = "t";

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("a3s-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn umoci(args: &[&str]) {
    run(Command::new("umoci").args(args));
}

fn require_umoci() {
    let found = Command::new("umoci").arg("--version").output().is_ok();
    assert!(found, "umoci is missing: run scripts/install-deps");
    assert!(
        Path::new("/bin/busybox").is_file(),
        "/bin/busybox is missing: run scripts/install-deps"
    );
}

fn write(path: PathBuf, data: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, data).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Layer 1: static busybox with applet symlinks, a hard link, files to delete later,
/// a directory a later layer makes opaque, set-id and private modes.
fn populate_base(rootfs: &Path) {
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "ls", "cat"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    fs::hard_link(rootfs.join("bin/busybox"), rootfs.join("bin/bb2")).unwrap();
    std::os::unix::fs::symlink("/bin/busybox", rootfs.join("bin/abs")).unwrap();
    write(rootfs.join("etc/gone"), "to be deleted\n", 0o644);
    write(rootfs.join("etc/keep"), "v1\n", 0o600);
    write(rootfs.join("usr/bin/su"), "not really su\n", 0o4755);
    write(rootfs.join("opaque/a"), "lower\n", 0o644);
    write(rootfs.join("opaque/sub/b"), "lower\n", 0o644);
    write(rootfs.join("opaque/kept"), "lower version\n", 0o644);
    fs::create_dir_all(rootfs.join("var/empty")).unwrap();
    fs::set_permissions(rootfs.join("var/empty"), fs::Permissions::from_mode(0o700)).unwrap();
}

/// Layer 2, as `umoci repack` writes it: a deletion (a whiteout) and changes.
fn change_base(rootfs: &Path) {
    fs::remove_file(rootfs.join("etc/gone")).unwrap();
    write(rootfs.join("etc/keep"), "v2\n", 0o640);
    write(rootfs.join("etc/new"), "new\n", 0o644);
    fs::remove_file(rootfs.join("bin/cat")).unwrap();
}

/// Layer 3, written by hand because umoci never emits opaque markers: some of the
/// directory's new entries come before the marker, some after.
fn opaque_layer() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, mode: u32, data: &[u8], link: Option<&str>| {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_mtime(1_600_000_000);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(data.len() as u64);
        if let Some(link) = link {
            header.set_link_name(link).unwrap();
        }
        builder.append_data(&mut header, path, data).unwrap();
    };
    add("opaque/", tar::EntryType::Directory, 0o751, b"", None);
    add(
        "opaque/early",
        tar::EntryType::Regular,
        0o644,
        b"early\n",
        None,
    );
    add(
        "opaque/kept",
        tar::EntryType::Regular,
        0o600,
        b"upper version\n",
        None,
    );
    add(
        "opaque/.wh..wh..opq",
        tar::EntryType::Regular,
        0o644,
        b"",
        None,
    );
    add(
        "opaque/late",
        tar::EntryType::Regular,
        0o644,
        b"late\n",
        None,
    );
    add("bin/.wh.ls", tar::EntryType::Regular, 0o644, b"", None);
    add(
        "bin/bb3",
        tar::EntryType::Link,
        0o755,
        b"",
        Some("bin/busybox"),
    );
    add(
        "etc/abs2",
        tar::EntryType::Symlink,
        0o777,
        b"",
        Some("/etc/keep"),
    );
    builder.into_inner().unwrap()
}

/// The layers of `layout:TAG`, lowest first, as (media type, blob path).
fn layers(layout: &Path) -> Vec<(String, PathBuf)> {
    let blob = |digest: &str| {
        let (algorithm, hex) = digest.split_once(':').unwrap();
        layout.join("blobs").join(algorithm).join(hex)
    };
    let json = |path: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    };
    let index = json(layout.join("index.json"));
    let manifest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == TAG)
        .expect("the tag is in index.json");
    let manifest = json(blob(manifest["digest"].as_str().unwrap()));
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| {
            let media_type = layer["mediaType"].as_str().unwrap().to_owned();
            (media_type, blob(layer["digest"].as_str().unwrap()))
        })
        .collect()
}

#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    /// File content or symlink target.
    content: Vec<u8>,
    /// Directory mtimes are left out: both tools set them, but creating the
    /// metadata files umoci keeps next to the root may touch the root's.
    mtime: Option<i64>,
}

fn snapshot(root: &Path) -> (BTreeMap<PathBuf, Node>, BTreeSet<Vec<PathBuf>>) {
    let mut nodes = BTreeMap::new();
    let mut inodes: HashMap<u64, Vec<PathBuf>> = HashMap::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for child in fs::read_dir(&dir).unwrap() {
            let path = child.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_owned();
            let file_type = meta.file_type();
            let (kind, content) = if file_type.is_symlink() {
                (
                    "symlink",
                    fs::read_link(&path).unwrap().into_os_string().into_vec(),
                )
            } else if file_type.is_file() {
                inodes.entry(meta.ino()).or_default().push(rel.clone());
                ("file", fs::read(&path).unwrap())
            } else if file_type.is_dir() {
                pending.push(path.clone());
                ("dir", Vec::new())
            } else {
                ("other", Vec::new())
            };
            let mode = if file_type.is_symlink() {
                0
            } else {
                meta.mode() & 0o7777
            };
            let mtime = (!file_type.is_dir()).then(|| meta.mtime());
            let node = Node {
                kind,
                mode,
                uid: meta.uid(),
                gid: meta.gid(),
                content,
                mtime,
            };
            nodes.insert(rel, node);
        }
    }
    let groups = inodes
        .into_values()
        .filter(|names| names.len() > 1)
        .map(|mut names| {
            names.sort();
            names
        })
        .collect();
    (nodes, groups)
}

#[test]
fn unpacked_layers_match_umoci_unpack() {
    require_umoci();
    let scratch = Scratch::new("umoci-interop");
    let layout = scratch.0.join("layout");
    let bundle = scratch.0.join("bundle");
    let image = format!("{}:{TAG}", layout.display());
    let layout_arg = layout.to_str().unwrap();
    let bundle_arg = bundle.to_str().unwrap();

    umoci(&["init", "--layout", layout_arg]);
    umoci(&["new", "--image", &image]);
    umoci(&["unpack", "--image", &image, bundle_arg]);
    populate_base(&bundle.join("rootfs"));
    umoci(&["repack", "--refresh-bundle", "--image", &image, bundle_arg]);
    change_base(&bundle.join("rootfs"));
    umoci(&["repack", "--refresh-bundle", "--image", &image, bundle_arg]);
    let extra = scratch.0.join("opaque.tar");
    fs::write(&extra, opaque_layer()).unwrap();
    umoci(&[
        "raw",
        "add-layer",
        "--image",
        &image,
        extra.to_str().unwrap(),
    ]);

    let theirs = scratch.0.join("theirs");
    umoci(&["unpack", "--image", &image, theirs.to_str().unwrap()]);

    let ours = scratch.0.join("ours");
    fs::create_dir(&ours).unwrap();
    let layers = layers(&layout);
    assert_eq!(layers.len(), 3, "base, change and opaque layers");
    for (media_type, blob) in &layers {
        let file = fs::File::open(blob).unwrap();
        unpack_layer(file, Some(media_type), &ours, &UnpackOptions::default())
            .unwrap_or_else(|e| panic!("layer {}: {e:?}", blob.display()));
    }

    let (our_nodes, our_links) = snapshot(&ours);
    let (their_nodes, their_links) = snapshot(&theirs.join("rootfs"));
    let our_paths: Vec<_> = our_nodes.keys().collect();
    let their_paths: Vec<_> = their_nodes.keys().collect();
    assert_eq!(our_paths, their_paths, "same paths");
    for (path, node) in &our_nodes {
        assert_eq!(node, &their_nodes[path], "{}", path.display());
    }
    assert_eq!(our_links, their_links, "same hard-link groups");

    // The scenario really exercised what it claims to.
    assert!(!ours.join("etc/gone").exists() && !ours.join("bin/ls").exists());
    let opaque: Vec<_> = fs::read_dir(ours.join("opaque"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(opaque, ["early", "kept", "late"]);
    assert!(our_links
        .iter()
        .any(|group| group.len() == 3 && group.contains(&PathBuf::from("bin/bb3"))));
}
