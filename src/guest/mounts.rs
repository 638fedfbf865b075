//! The filesystems guest init mounts: its own kernel filesystems before
//! anything else runs and, for a box with a root filesystem, that root and
//! the kernel filesystems inside it.

use super::sys::{Mount, Sys};
use crate::boxfs::{resolve_in_scope, DirTree, Tree};
use crate::proto::{GuestMount, GuestMountKind, RootSource};
use std::io;
use std::path::{Path, PathBuf};

const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// In order: a mount point may live on an earlier entry (`/dev/pts` on `/dev`).
pub const MOUNTS: &[Mount<'static>] = &[
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    Mount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: libc::MS_NOSUID,
        data: "mode=0755",
    },
    // A private instance; Docker's options (gid 5 is "tty" by convention).
    Mount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: "newinstance,ptmxmode=0666,mode=0620,gid=5",
    },
    Mount {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=1777",
    },
    Mount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=1777",
    },
    Mount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=0755",
    },
];

/// Where init mounts the box's root filesystem.
pub const NEWROOT: &str = "/newroot";

/// The kernel filesystems inside the box's root, mounted by init before the
/// main process starts, in order. `/proc` is not among them: a proc mount
/// shows the PID namespace of whoever mounts it, so the main process mounts
/// its own (see `spawn.rs`); init only makes sure the directory exists.
/// `/dev` is devtmpfs, so its `ptmx` allocates from the `/dev/pts` beside it.
pub const ROOT_MOUNTS: &[Mount<'static>] = &[
    Mount {
        source: "sysfs",
        target: "/newroot/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC | libc::MS_RDONLY,
        data: "",
    },
    Mount {
        source: "devtmpfs",
        target: "/newroot/dev",
        fstype: "devtmpfs",
        flags: libc::MS_NOSUID,
        data: "mode=0755",
    },
    Mount {
        source: "devpts",
        target: "/newroot/dev/pts",
        fstype: "devpts",
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: "newinstance,ptmxmode=0666,mode=0620,gid=5",
    },
    Mount {
        source: "shm",
        target: "/newroot/dev/shm",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=1777",
    },
    Mount {
        source: "tmpfs",
        target: "/newroot/tmp",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=1777",
    },
    Mount {
        source: "tmpfs",
        target: "/newroot/run",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=0755",
    },
];

/// Links every Linux userland expects in `/dev` (as Docker makes them).
pub const DEV_LINKS: &[(&str, &str)] = &[
    ("/proc/self/fd", "/newroot/dev/fd"),
    ("/proc/self/fd/0", "/newroot/dev/stdin"),
    ("/proc/self/fd/1", "/newroot/dev/stdout"),
    ("/proc/self/fd/2", "/newroot/dev/stderr"),
];

const MOUNT_TABLE: &str = "/proc/self/mounts";

/// A mount that failed; init carries on without it (the workload may not
/// need it, and a box that runs beats one that stops at boot).
#[derive(Debug)]
pub struct MountFailure {
    /// The mount that failed.
    pub mount: Mount<'static>,
    /// Why.
    pub error: io::Error,
}

/// Mounts [`MOUNTS`], creating mount points as needed and skipping any target
/// that is already a mount point (as when the kernel mounted devtmpfs itself).
/// Returns what failed.
pub fn mount_all(sys: &mut impl Sys) -> Vec<MountFailure> {
    mount_list(sys, MOUNTS)
}

/// Where init mounts an image's tree, the lower layer of an overlay root.
pub const LOWER: &str = "/layers/image";
/// Where init mounts the box's own layer share (`upper/` and `work/`).
pub const LAYER: &str = "/layers/box";
/// A layer of init's own between the image and the box's layer, as Docker's
/// "init" layer: empty files for what is laid over the root at start
/// (`/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`), so that they exist
/// to be mounted over without being written to the box's layer.
pub const INIT_LAYER: &str = "/layers/init";
/// The files of [`INIT_LAYER`].
pub const INIT_FILES: [&str; 3] = ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"];

/// Mounts the box's root at [`NEWROOT`]: the virtio-fs share itself, or an
/// overlay of an image's tree (read-only) under the box's own layer, so that
/// the box's writes land in its layer and the image stays as it is.
pub fn mount_root(sys: &mut impl Sys, root: &RootSource) -> io::Result<()> {
    let (lower, upper) = match root {
        RootSource::Virtiofs { tag } => return mount_one(sys, &virtiofs(tag, NEWROOT, 0)),
        RootSource::Overlay { lower, upper } => (lower, upper),
    };
    match sys.mkdir("/layers", 0o700) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    mount_one(sys, &virtiofs(lower, LOWER, libc::MS_RDONLY))?;
    mount_one(sys, &virtiofs(upper, LAYER, 0))?;
    sys.mkdir(INIT_LAYER, 0o755)?;
    sys.mkdir(&format!("{INIT_LAYER}/etc"), 0o755)?;
    for f in INIT_FILES {
        sys.create_file(&format!("{INIT_LAYER}{f}"), 0o644)?;
    }
    // Inode numbers stay the upper's or the lower's own (xino=off): both
    // layers come over FUSE, whose inode numbers use all 64 bits.
    let data = format!(
        "lowerdir={INIT_LAYER}:{LOWER},upperdir={LAYER}/upper,workdir={LAYER}/work,xino=off"
    );
    mount_one(
        sys,
        &Mount {
            source: "overlay",
            target: NEWROOT,
            fstype: "overlay",
            flags: 0,
            data: &data,
        },
    )
}

fn virtiofs<'a>(tag: &'a str, target: &'a str, flags: libc::c_ulong) -> Mount<'a> {
    Mount {
        source: tag,
        target,
        fstype: "virtiofs",
        flags,
        data: "",
    }
}

/// Prepares the mounted root for the main process: [`ROOT_MOUNTS`], the
/// `/proc` directory, and [`DEV_LINKS`]. Returns the mounts that failed.
pub fn prepare_root(sys: &mut impl Sys) -> Vec<MountFailure> {
    let failures = mount_list(sys, ROOT_MOUNTS);
    match sys.mkdir("/newroot/proc", 0o555) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => sys.eprint(&format!(
            "a3s-box init: warning: could not create /newroot/proc: {e}"
        )),
        _ => {}
    }
    for (target, link) in DEV_LINKS {
        // An image or an earlier box may have made them already.
        let _ = sys.symlink(target, link);
    }
    failures
}

fn mount_list(sys: &mut impl Sys, list: &'static [Mount<'static>]) -> Vec<MountFailure> {
    let mut failures = Vec::new();
    // Mounting over an existing mount would silently stack a second one, so
    // look first; the table lives in /proc, hence proc comes first.
    let mut mounted = sys.read_to_string(MOUNT_TABLE).ok();
    for mount in list {
        if mounted
            .as_deref()
            .is_some_and(|table| is_mount_point(table, mount.target))
        {
            continue;
        }
        match mount_one(sys, mount) {
            Ok(()) if mounted.is_none() => mounted = sys.read_to_string(MOUNT_TABLE).ok(),
            Ok(()) => {}
            Err(error) => failures.push(MountFailure {
                mount: *mount,
                error,
            }),
        }
    }
    failures
}

fn mount_one(sys: &mut impl Sys, mount: &Mount<'_>) -> io::Result<()> {
    match sys.mkdir(mount.target, 0o755) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    sys.mount(mount)
}

/// Mounts the box's volumes, binds and tmpfs in its root at `root`, in the
/// host's order (a mount inside another after it). Each target is resolved
/// inside the root, links followed there as Docker does, and its missing
/// directories are made; nothing of the box runs yet to change the tree
/// meanwhile. A read-only mount is read-only here too, though the host's
/// share refuses every change to it anyway.
pub fn mount_volumes(sys: &mut impl Sys, root: &Path, mounts: &[GuestMount]) -> Result<(), String> {
    if mounts.is_empty() {
        return Ok(());
    }
    let tree = DirTree::open(root).map_err(|e| format!("cannot open the box's root: {e}"))?;
    for m in mounts {
        let at = mount_point(&tree, &m.target)
            .map_err(|e| format!("cannot make the mount point {}: {e}", m.target))?;
        let target = root.join(at);
        let target = target
            .to_str()
            .ok_or_else(|| format!("mount point {} is not UTF-8", m.target))?;
        let (source, fstype, mut flags, data) = match &m.kind {
            GuestMountKind::Share { tag } => (tag.as_str(), "virtiofs", 0, ""),
            GuestMountKind::Tmpfs {
                data,
                exec,
                suid,
                dev,
            } => {
                let mut flags = 0;
                for (allowed, flag) in [
                    (exec, libc::MS_NOEXEC),
                    (suid, libc::MS_NOSUID),
                    (dev, libc::MS_NODEV),
                ] {
                    if !allowed {
                        flags |= flag;
                    }
                }
                ("tmpfs", "tmpfs", flags, data.as_str())
            }
        };
        if m.read_only {
            flags |= libc::MS_RDONLY;
        }
        sys.mount(&Mount {
            source,
            target,
            fstype,
            flags,
            data,
        })
        .map_err(|e| format!("cannot mount {source} at {}: {e}", m.target))?;
    }
    Ok(())
}

/// `target` resolved in `tree` with every directory on the way made (0755).
fn mount_point(tree: &DirTree, target: &str) -> io::Result<PathBuf> {
    let rel = resolve_in_scope(tree, Path::new(target))?;
    let mut at = PathBuf::new();
    for c in rel.components() {
        at.push(c);
        match tree.lstat(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => tree.make_dir(&at, 0o755)?,
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

/// Whether `target` is a mount point in a `/proc/self/mounts` table.
fn is_mount_point(table: &str, target: &str) -> bool {
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(1))
        .any(|point| point == target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::testing::{Call, RecordingSys};

    fn mounted_targets(sys: &RecordingSys) -> Vec<&str> {
        sys.calls
            .iter()
            .filter_map(|c| match c {
                Call::Mount(m) => Some(m.target),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn mounts_everything_in_order_on_a_bare_initramfs() {
        let mut sys = RecordingSys::pid1();
        assert!(mount_all(&mut sys).is_empty());
        assert_eq!(
            mounted_targets(&sys),
            ["/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/tmp", "/run"]
        );
        let fstypes: Vec<&str> = sys
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Mount(m) => Some(m.fstype),
                _ => None,
            })
            .collect();
        assert_eq!(
            fstypes,
            ["proc", "sysfs", "devtmpfs", "devpts", "tmpfs", "tmpfs", "tmpfs"]
        );
    }

    #[test]
    fn creates_each_mount_point_before_mounting_on_it() {
        let mut sys = RecordingSys::pid1();
        mount_all(&mut sys);
        for m in MOUNTS {
            let mkdir = sys
                .calls
                .iter()
                .position(|c| matches!(c, Call::Mkdir(p, _) if p == m.target))
                .unwrap_or_else(|| panic!("no mkdir for {}", m.target));
            let mount = sys
                .calls
                .iter()
                .position(|c| matches!(c, Call::Mount(x) if x == m))
                .unwrap();
            assert!(mkdir < mount, "{}", m.target);
        }
    }

    #[test]
    fn devpts_is_a_private_instance_with_a_usable_ptmx() {
        let devpts = MOUNTS.iter().find(|m| m.fstype == "devpts").unwrap();
        assert!(devpts.data.contains("newinstance"));
        assert!(devpts.data.contains("ptmxmode=0666"));
    }

    #[test]
    fn existing_mount_points_are_not_errors() {
        let mut sys = RecordingSys::pid1();
        sys.existing_dirs = vec!["/proc".into(), "/dev".into(), "/tmp".into()];
        assert!(mount_all(&mut sys).is_empty());
        assert_eq!(mounted_targets(&sys).len(), MOUNTS.len());
    }

    #[test]
    fn skips_filesystems_that_are_already_mounted() {
        let mut sys = RecordingSys::pid1();
        sys.mounted = vec!["/proc".into(), "/dev".into()];
        assert!(mount_all(&mut sys).is_empty());
        assert_eq!(
            mounted_targets(&sys),
            ["/sys", "/dev/pts", "/dev/shm", "/tmp", "/run"]
        );
    }

    #[test]
    fn a_failed_mount_is_reported_and_the_rest_still_happen() {
        let mut sys = RecordingSys::pid1();
        sys.mount_errors = vec![("/dev/pts", libc::ENODEV)];
        let failures = mount_all(&mut sys);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].mount.target, "/dev/pts");
        assert_eq!(failures[0].error.raw_os_error(), Some(libc::ENODEV));
        assert_eq!(
            mounted_targets(&sys),
            ["/proc", "/sys", "/dev", "/dev/shm", "/tmp", "/run"]
        );
    }

    fn share(tag: &str) -> RootSource {
        RootSource::Virtiofs { tag: tag.into() }
    }

    #[test]
    fn the_root_is_mounted_from_the_virtiofs_tag() {
        let mut sys = RecordingSys::pid1();
        mount_root(&mut sys, &share("rootfs")).unwrap();
        assert_eq!(sys.calls[0], Call::Mkdir("/newroot".into(), 0o755));
        let Call::Mount(m) = &sys.calls[1] else {
            panic!("{:?}", sys.calls);
        };
        assert_eq!(
            (m.source, m.target, m.fstype, m.flags),
            ("rootfs", "/newroot", "virtiofs", 0)
        );
    }

    #[test]
    fn a_missing_root_share_is_an_error() {
        let mut sys = RecordingSys::pid1();
        sys.mount_errors = vec![("/newroot", libc::ENOENT)];
        assert!(mount_root(&mut sys, &share("rootfs")).is_err());
    }

    #[test]
    fn an_overlay_root_stacks_the_box_layer_on_the_read_only_image() {
        let mut sys = RecordingSys::pid1();
        let root = RootSource::Overlay {
            lower: "image".into(),
            upper: "layer".into(),
        };
        mount_root(&mut sys, &root).unwrap();
        let mounts: Vec<_> = sys
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Mount(m) => Some((m.source, m.target, m.fstype, m.flags)),
                _ => None,
            })
            .collect();
        assert_eq!(
            mounts,
            [
                ("image", LOWER, "virtiofs", libc::MS_RDONLY),
                ("layer", LAYER, "virtiofs", 0),
                ("overlay", NEWROOT, "overlay", 0),
            ]
        );
        let Some(Call::Mount(overlay)) = sys.calls.last() else {
            panic!("{:?}", sys.calls);
        };
        assert!(overlay.data.starts_with(
            "lowerdir=/layers/init:/layers/image,upperdir=/layers/box/upper,workdir=/layers/box/work"
        ));
    }

    #[test]
    fn an_overlay_root_whose_layer_share_is_missing_is_an_error() {
        let mut sys = RecordingSys::pid1();
        sys.mount_errors = vec![(LAYER, libc::ENOENT)];
        let root = RootSource::Overlay {
            lower: "image".into(),
            upper: "layer".into(),
        };
        assert!(mount_root(&mut sys, &root).is_err());
        assert!(!sys
            .calls
            .iter()
            .any(|c| matches!(c, Call::Mount(m) if m.target == NEWROOT)));
    }

    #[test]
    fn the_root_gets_kernel_filesystems_in_order_proc_dir_and_dev_links() {
        let mut sys = RecordingSys::pid1();
        sys.mounted = vec!["/proc".into(), "/newroot".into()];
        assert!(prepare_root(&mut sys).is_empty());
        assert_eq!(
            mounted_targets(&sys),
            [
                "/newroot/sys",
                "/newroot/dev",
                "/newroot/dev/pts",
                "/newroot/dev/shm",
                "/newroot/tmp",
                "/newroot/run"
            ]
        );
        assert!(sys
            .calls
            .contains(&Call::Mkdir("/newroot/proc".into(), 0o555)));
        let dev = sys
            .position(|c| matches!(c, Call::Mount(m) if m.target == "/newroot/dev"))
            .unwrap();
        let fd_link = sys
            .position(|c| *c == Call::Symlink("/proc/self/fd".into(), "/newroot/dev/fd".into()))
            .unwrap();
        assert!(dev < fd_link, "links go into the mounted /dev");
        assert!(
            !mounted_targets(&sys).contains(&"/newroot/proc"),
            "the main process mounts its own /proc"
        );
    }

    #[test]
    fn the_roots_devpts_is_a_private_instance_and_sysfs_is_read_only() {
        let devpts = ROOT_MOUNTS.iter().find(|m| m.fstype == "devpts").unwrap();
        assert!(devpts.data.contains("newinstance"));
        assert!(devpts.data.contains("ptmxmode=0666"));
        let sysfs = ROOT_MOUNTS.iter().find(|m| m.fstype == "sysfs").unwrap();
        assert_ne!(sysfs.flags & libc::MS_RDONLY, 0);
    }

    #[test]
    fn volumes_are_mounted_in_the_root_with_links_resolved_inside_it() {
        let t = crate::testing::TempDir::new("guest-volumes");
        let root = t.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("conf")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("up")).unwrap();
        std::fs::write(root.join("file"), "").unwrap();
        let mounts = vec![
            GuestMount {
                target: "/srv/data".into(),
                read_only: true,
                kind: GuestMountKind::Share { tag: "vol0".into() },
            },
            GuestMount {
                target: "/conf/app".into(),
                read_only: false,
                kind: GuestMountKind::Share { tag: "vol1".into() },
            },
            GuestMount {
                target: "/up/scratch".into(),
                read_only: false,
                kind: GuestMountKind::Tmpfs {
                    data: "size=1024,mode=1777".into(),
                    exec: true,
                    suid: false,
                    dev: false,
                },
            },
        ];
        let mut sys = RecordingSys::pid1();
        mount_volumes(&mut sys, root, &mounts).unwrap();
        let got: Vec<_> = sys
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Mount(m) => Some((m.source, m.target.to_string(), m.fstype, m.flags, m.data)),
                _ => None,
            })
            .collect();
        let at = |p: &str| root.join(p).to_str().unwrap().to_string();
        assert_eq!(
            got,
            [
                ("vol0", at("srv/data"), "virtiofs", libc::MS_RDONLY, ""),
                ("vol1", at("etc/app"), "virtiofs", 0, ""),
                (
                    "tmpfs",
                    at("scratch"),
                    "tmpfs",
                    libc::MS_NOSUID | libc::MS_NODEV,
                    "size=1024,mode=1777"
                ),
            ]
        );
        assert!(root.join("srv/data").is_dir() && root.join("etc/app").is_dir());
        assert!(
            root.join("scratch").is_dir(),
            "`..` stops at the box's root"
        );
        let on_file = [GuestMount {
            target: "/file/x".into(),
            read_only: false,
            kind: GuestMountKind::Share { tag: "vol2".into() },
        }];
        let e = mount_volumes(&mut sys, root, &on_file).unwrap_err();
        assert!(e.contains("/file/x"), "{e}");
    }

    #[test]
    fn mount_point_detection_reads_the_second_field() {
        let table = "proc /proc proc rw 0 0\ndevtmpfs /dev devtmpfs rw 0 0\n";
        assert!(is_mount_point(table, "/dev"));
        assert!(!is_mount_point(table, "/dev/pts"));
        assert!(!is_mount_point(table, "proc"));
    }
}
