//! The filesystems guest init mounts before anything else runs.

use super::sys::{Mount, Sys};
use std::io;

const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// In order: a mount point may live on an earlier entry (`/dev/pts` on `/dev`).
pub const MOUNTS: &[Mount] = &[
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

const MOUNT_TABLE: &str = "/proc/self/mounts";

/// A mount that failed; init carries on without it (the workload may not
/// need it, and a box that runs beats one that stops at boot).
#[derive(Debug)]
pub struct MountFailure {
    /// The mount that failed.
    pub mount: Mount,
    /// Why.
    pub error: io::Error,
}

/// Mounts [`MOUNTS`], creating mount points as needed and skipping any target
/// that is already a mount point (as when the kernel mounted devtmpfs itself).
/// Returns what failed.
pub fn mount_all(sys: &mut impl Sys) -> Vec<MountFailure> {
    let mut failures = Vec::new();
    // Mounting over an existing mount would silently stack a second one, so
    // look first; the table lives in /proc, hence proc comes first.
    let mut mounted = sys.read_to_string(MOUNT_TABLE).ok();
    for mount in MOUNTS {
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

fn mount_one(sys: &mut impl Sys, mount: &Mount) -> io::Result<()> {
    match sys.mkdir(mount.target, 0o755) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    sys.mount(mount)
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

    #[test]
    fn mount_point_detection_reads_the_second_field() {
        let table = "proc /proc proc rw 0 0\ndevtmpfs /dev devtmpfs rw 0 0\n";
        assert!(is_mount_point(table, "/dev"));
        assert!(!is_mount_point(table, "/dev/pts"));
        assert!(!is_mount_point(table, "proc"));
    }
}
