//! A box's security options, applied by the process on its way into the box
//! (`spawn.rs`), as runc applies an OCI spec's:
//!
//! - **The main process only**, right after it entered the box's root (with
//!   all of init's capabilities still): the sysctls, written in its own IPC
//!   namespace; unless privileged, `/proc/sys`, `/proc/sysrq-trigger`,
//!   `/proc/irq`, `/proc/bus` and `/proc/fs` read-only and Docker's masked
//!   paths covered (the box's `/sys` is already read-only), or, privileged,
//!   `/sys` made writable; with `--read-only`, the root remounted read-only
//!   once the working directory exists.
//! - **Every process**: the bounding set cut to the box's capabilities before
//!   it changes user (which needs CAP_SETPCAP), then after the change its
//!   permitted and effective sets set to them for root and emptied for
//!   anyone else, the inheritable and ambient sets emptied (as Docker does:
//!   a non-root user gets capabilities only from file capabilities within
//!   the bounding set), and `PR_SET_NO_NEW_PRIVS` when asked.
//!
//! Everything is built before the clone: the child allocates nothing.

use std::ffi::{CStr, CString};

use super::spawn::SpawnFailure;
use super::sys::{Errno, LinuxSys, NsSys};
use crate::proto::SecuritySetup;

/// What Docker makes read-only in `/proc` for a box that is not privileged.
const READ_ONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// What Docker hides in `/proc` and `/sys`: files under `/dev/null`,
/// directories under an empty read-only tmpfs.
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// The capability and privilege calls a new process makes.
pub trait CapSys {
    /// `prctl(PR_CAPBSET_DROP, cap)`.
    fn drop_bounding(&mut self, cap: u32) -> Result<(), Errno>;
    /// `capset` of the calling thread.
    fn set_caps(&mut self, effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno>;
    /// `prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)`.
    fn clear_ambient(&mut self) -> Result<(), Errno>;
    /// `prctl(PR_SET_NO_NEW_PRIVS, 1)`.
    fn set_no_new_privs(&mut self) -> Result<(), Errno>;
    /// Writes `value` to the file `path` in one write (a sysctl).
    fn write_file(&mut self, path: &CStr, value: &[u8]) -> Result<(), Errno>;
}

fn errno(e: rustix::io::Errno) -> Errno {
    e.raw_os_error()
}

fn caps(bits: u64) -> rustix::thread::CapabilitySet {
    rustix::thread::CapabilitySet::from_bits_retain(bits)
}

// rustix's Linux backend makes these system calls directly: nothing is
// allocated and no lock is taken, as a freshly cloned child requires.
impl CapSys for LinuxSys {
    fn drop_bounding(&mut self, cap: u32) -> Result<(), Errno> {
        rustix::thread::remove_capability_from_bounding_set(caps(1 << cap)).map_err(errno)
    }

    fn set_caps(&mut self, effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno> {
        rustix::thread::set_capabilities(
            None,
            rustix::thread::CapabilitySets {
                effective: caps(effective),
                permitted: caps(permitted),
                inheritable: caps(inheritable),
            },
        )
        .map_err(errno)
    }

    fn clear_ambient(&mut self) -> Result<(), Errno> {
        match rustix::thread::clear_ambient_capability_set() {
            // A kernel without ambient capabilities has none to clear.
            Err(rustix::io::Errno::INVAL) => Ok(()),
            r => r.map_err(errno),
        }
    }

    fn set_no_new_privs(&mut self) -> Result<(), Errno> {
        rustix::thread::set_no_new_privs(true).map_err(errno)
    }

    fn write_file(&mut self, path: &CStr, value: &[u8]) -> Result<(), Errno> {
        use rustix::fs::{Mode, OFlags};
        let fd = rustix::fs::open(path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(errno)?;
        rustix::io::write(&fd, value).map(drop).map_err(errno)
    }
}

/// What the main process sets up in the box, as C strings.
#[derive(Debug, Default)]
pub struct BoxPlan {
    /// (`/proc/sys/...` path, value).
    sysctls: Vec<(CString, CString)>,
    /// Paths bound read-only onto themselves.
    read_only: Vec<CString>,
    /// Paths covered.
    masked: Vec<CString>,
    /// Privileged: `/sys` remounted writable.
    sys_writable: bool,
    /// `--read-only`: `/` remounted read-only.
    root_read_only: bool,
}

/// What every process of the box applies, as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessPlan {
    /// The box's capabilities, limited to those this kernel has.
    pub caps: u64,
    /// Highest capability number this kernel has.
    pub last_cap: u32,
    pub no_new_privs: bool,
}

fn cstring(s: &str, what: &str) -> Result<CString, SpawnFailure> {
    CString::new(s).map_err(|_| SpawnFailure::runtime(format!("{what} contains a NUL byte")))
}

/// The kernel's highest capability number (`/proc/sys/kernel/cap_last_cap`).
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

impl ProcessPlan {
    /// The box's rules for a process on a kernel whose last capability is `last_cap`.
    pub fn new(sec: &SecuritySetup, last_cap: u32) -> Self {
        let known = if last_cap >= 63 {
            u64::MAX
        } else {
            (1u64 << (last_cap + 1)) - 1
        };
        ProcessPlan {
            caps: sec.caps & known,
            last_cap: last_cap.min(63),
            no_new_privs: sec.no_new_privs,
        }
    }
}

impl BoxPlan {
    /// The main process's setup for `sec`.
    pub fn new(sec: &SecuritySetup) -> Result<Self, SpawnFailure> {
        let mut plan = BoxPlan {
            sys_writable: sec.privileged,
            root_read_only: sec.read_only_root,
            ..BoxPlan::default()
        };
        for (key, value) in &sec.sysctls {
            // The host checked the key; a stray one still cannot leave /proc/sys.
            if key
                .split('.')
                .any(|p| p.is_empty() || p == ".." || p.contains('/'))
            {
                return Err(SpawnFailure::runtime(format!(
                    "sysctl '{key}' is not allowed"
                )));
            }
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            plan.sysctls
                .push((cstring(&path, "a sysctl")?, cstring(value, "a sysctl")?));
        }
        if !sec.privileged {
            for p in READ_ONLY_PATHS {
                plan.read_only.push(cstring(p, "a path")?);
            }
            for p in MASKED_PATHS {
                plan.masked.push(cstring(p, "a path")?);
            }
        }
        Ok(plan)
    }

    /// Whether the root is remounted read-only.
    pub fn root_read_only(&self) -> bool {
        self.root_read_only
    }
}

/// The sysctl that failed, by its index in the plan, with the errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxFailure {
    Sysctl(usize, Errno),
    Mount(Errno),
}

/// The main process's setup, in the box's root with init's capabilities.
pub fn apply_box(sys: &mut (impl NsSys + CapSys), plan: &BoxPlan) -> Result<(), BoxFailure> {
    for (i, (path, value)) in plan.sysctls.iter().enumerate() {
        sys.write_file(path, value.as_bytes())
            .map_err(|e| BoxFailure::Sysctl(i, e))?;
    }
    if plan.sys_writable {
        sys.mount_raw(
            None,
            c"/sys",
            None,
            libc::MS_REMOUNT | libc::MS_BIND | NOSUID_NODEV_NOEXEC,
        )
        .map_err(BoxFailure::Mount)?;
    }
    for path in &plan.read_only {
        match sys.mount_raw(Some(path), path, None, libc::MS_BIND | libc::MS_REC) {
            Err(libc::ENOENT) => continue,
            r => r.map_err(BoxFailure::Mount)?,
        }
        sys.mount_raw(
            None,
            path,
            None,
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | NOSUID_NODEV_NOEXEC,
        )
        .map_err(BoxFailure::Mount)?;
    }
    for path in &plan.masked {
        match sys.mount_raw(Some(c"/dev/null"), path, None, libc::MS_BIND) {
            Ok(()) | Err(libc::ENOENT) => {}
            Err(libc::ENOTDIR) => sys
                .mount_raw(Some(c"tmpfs"), path, Some(c"tmpfs"), libc::MS_RDONLY)
                .map_err(BoxFailure::Mount)?,
            Err(e) => return Err(BoxFailure::Mount(e)),
        }
    }
    Ok(())
}

/// `--read-only`: the box's root, but not what is mounted in it.
pub fn make_root_read_only(sys: &mut impl NsSys) -> Result<(), Errno> {
    sys.mount_raw(
        None,
        c"/",
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
    )
}

/// Before the user changes: the bounding set cut to the box's capabilities.
pub fn limit_bounding(sys: &mut impl CapSys, plan: &ProcessPlan) -> Result<(), Errno> {
    for cap in 0..=plan.last_cap {
        if plan.caps & (1 << cap) == 0 {
            sys.drop_bounding(cap)?;
        }
    }
    Ok(())
}

/// After the user changed to `uid`: the sets `execve` starts from.
pub fn settle_caps(sys: &mut impl CapSys, plan: &ProcessPlan, uid: u32) -> Result<(), Errno> {
    let held = if uid == 0 { plan.caps } else { 0 };
    sys.set_caps(held, held, 0)?;
    sys.clear_ambient()?;
    if plan.no_new_privs {
        sys.set_no_new_privs()?;
    }
    Ok(())
}

/// What init does to the root before the box's own mounts go on it: with
/// `--read-only`, init's default `/tmp` and `/run` (tmpfs of its own, which
/// Docker's read-only boxes do not have) become read-only unless a mount of
/// the box's replaces them.
pub fn prepare_root(
    sys: &mut impl NsSys,
    root: &str,
    sec: &SecuritySetup,
    targets: &[&str],
) -> Result<(), String> {
    if !sec.read_only_root {
        return Ok(());
    }
    for dir in ["/tmp", "/run"] {
        if targets.iter().any(|t| t.trim_end_matches('/') == dir) {
            continue;
        }
        let path = cstring(&format!("{}{dir}", root.trim_end_matches('/')), "a path")
            .map_err(|f| f.message)?;
        sys.mount_raw(
            None,
            &path,
            None,
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        )
        .map_err(|e| {
            format!(
                "cannot make {dir} read-only: {}",
                std::io::Error::from_raw_os_error(e)
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::RawFd;

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Op {
        Mount(Option<String>, String, Option<String>, libc::c_ulong),
        Bound(u32),
        Caps(u64, u64, u64),
        Ambient,
        NoNewPrivs,
        Write(String, String),
    }

    /// Records every call; writes to, covers and remounts of listed paths fail.
    #[derive(Default)]
    struct Rec {
        ops: Vec<Op>,
        fail: Vec<(&'static str, Errno)>,
    }

    impl Rec {
        fn check(&self, path: &str) -> Result<(), Errno> {
            match self.fail.iter().find(|(p, _)| *p == path) {
                Some((_, e)) => Err(*e),
                None => Ok(()),
            }
        }
    }

    fn s(c: &CStr) -> String {
        c.to_string_lossy().into_owned()
    }

    impl NsSys for Rec {
        fn mount_raw(
            &mut self,
            source: Option<&CStr>,
            target: &CStr,
            fstype: Option<&CStr>,
            flags: libc::c_ulong,
        ) -> Result<(), Errno> {
            // Only covering and remounting fail here: binds onto themselves
            // and tmpfs always work.
            if source.is_none_or(|c| c == c"/dev/null") {
                self.check(&s(target))?;
            }
            self.ops
                .push(Op::Mount(source.map(s), s(target), fstype.map(s), flags));
            Ok(())
        }
        fn umount(&mut self, _: &CStr, _: libc::c_int) -> Result<(), Errno> {
            Ok(())
        }
        fn sethostname(&mut self, _: &CStr) -> Result<(), Errno> {
            Ok(())
        }
        fn chdir(&mut self, _: &CStr) -> Result<(), Errno> {
            Ok(())
        }
        fn chroot(&mut self, _: &CStr) -> Result<(), Errno> {
            Ok(())
        }
        fn setns(&mut self, _: RawFd, _: libc::c_int) -> Result<(), Errno> {
            Ok(())
        }
    }

    impl CapSys for Rec {
        fn drop_bounding(&mut self, cap: u32) -> Result<(), Errno> {
            self.ops.push(Op::Bound(cap));
            Ok(())
        }
        fn set_caps(&mut self, e: u64, p: u64, i: u64) -> Result<(), Errno> {
            self.ops.push(Op::Caps(e, p, i));
            Ok(())
        }
        fn clear_ambient(&mut self) -> Result<(), Errno> {
            self.ops.push(Op::Ambient);
            Ok(())
        }
        fn set_no_new_privs(&mut self) -> Result<(), Errno> {
            self.ops.push(Op::NoNewPrivs);
            Ok(())
        }
        fn write_file(&mut self, path: &CStr, value: &[u8]) -> Result<(), Errno> {
            self.check(&s(path))?;
            self.ops.push(Op::Write(
                s(path),
                String::from_utf8_lossy(value).into_owned(),
            ));
            Ok(())
        }
    }

    fn sec() -> SecuritySetup {
        SecuritySetup::default()
    }

    #[test]
    fn the_bounding_set_loses_exactly_what_the_box_lacks() {
        let mut sys = Rec::default();
        let plan = ProcessPlan::new(&sec(), 40);
        limit_bounding(&mut sys, &plan).unwrap();
        let dropped: Vec<u32> = sys
            .ops
            .iter()
            .map(|o| match o {
                Op::Bound(c) => *c,
                other => panic!("{other:?}"),
            })
            .collect();
        let kept: Vec<u32> = (0..=40).filter(|c| !dropped.contains(c)).collect();
        assert_eq!(kept, [0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31]);
    }

    #[test]
    fn caps_the_kernel_lacks_are_neither_dropped_nor_kept() {
        let all = SecuritySetup {
            caps: u64::MAX,
            ..sec()
        };
        let plan = ProcessPlan::new(&all, 37);
        assert_eq!(plan.caps, (1 << 38) - 1);
        let mut sys = Rec::default();
        limit_bounding(&mut sys, &plan).unwrap();
        assert!(sys.ops.is_empty());
    }

    #[test]
    fn root_keeps_the_set_and_others_start_empty_with_no_ambient() {
        let plan = ProcessPlan::new(
            &SecuritySetup {
                no_new_privs: true,
                ..sec()
            },
            40,
        );
        let mut sys = Rec::default();
        settle_caps(&mut sys, &plan, 0).unwrap();
        assert_eq!(
            sys.ops,
            [
                Op::Caps(0xa804_25fb, 0xa804_25fb, 0),
                Op::Ambient,
                Op::NoNewPrivs
            ]
        );
        let mut sys = Rec::default();
        settle_caps(&mut sys, &ProcessPlan::new(&sec(), 40), 65534).unwrap();
        assert_eq!(sys.ops, [Op::Caps(0, 0, 0), Op::Ambient]);
    }

    #[test]
    fn a_box_writes_its_sysctls_then_guards_proc() {
        let s = SecuritySetup {
            sysctls: vec![("net.ipv4.ip_forward".into(), "1".into())],
            ..sec()
        };
        let mut sys = Rec {
            fail: vec![
                ("/proc/asound", libc::ENOENT),
                ("/proc/scsi", libc::ENOTDIR),
            ],
            ..Rec::default()
        };
        apply_box(&mut sys, &BoxPlan::new(&s).unwrap()).unwrap();
        assert_eq!(
            sys.ops[0],
            Op::Write("/proc/sys/net/ipv4/ip_forward".into(), "1".into())
        );
        let ro = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | NOSUID_NODEV_NOEXEC;
        assert!(sys.ops.contains(&Op::Mount(
            Some("/proc/sys".into()),
            "/proc/sys".into(),
            None,
            libc::MS_BIND | libc::MS_REC
        )));
        assert!(sys
            .ops
            .contains(&Op::Mount(None, "/proc/sys".into(), None, ro)));
        assert!(sys.ops.contains(&Op::Mount(
            Some("/dev/null".into()),
            "/proc/kcore".into(),
            None,
            libc::MS_BIND
        )));
        // A directory gets an empty read-only tmpfs; a missing path nothing.
        assert!(sys.ops.contains(&Op::Mount(
            Some("tmpfs".into()),
            "/proc/scsi".into(),
            Some("tmpfs".into()),
            libc::MS_RDONLY
        )));
        assert!(!sys
            .ops
            .iter()
            .any(|o| matches!(o, Op::Mount(_, t, _, _) if t == "/proc/asound")));
        assert!(!sys
            .ops
            .iter()
            .any(|o| matches!(o, Op::Mount(_, t, _, _) if t == "/sys")));
    }

    #[test]
    fn a_privileged_box_gets_a_writable_sys_and_an_unguarded_proc() {
        let s = SecuritySetup {
            privileged: true,
            ..sec()
        };
        let mut sys = Rec::default();
        apply_box(&mut sys, &BoxPlan::new(&s).unwrap()).unwrap();
        assert_eq!(
            sys.ops,
            [Op::Mount(
                None,
                "/sys".into(),
                None,
                libc::MS_REMOUNT | libc::MS_BIND | NOSUID_NODEV_NOEXEC
            )]
        );
    }

    #[test]
    fn a_sysctl_the_kernel_refuses_stops_the_box() {
        let s = SecuritySetup {
            sysctls: vec![("net.nope".into(), "1".into())],
            ..sec()
        };
        let mut sys = Rec {
            fail: vec![("/proc/sys/net/nope", libc::ENOENT)],
            ..Rec::default()
        };
        assert_eq!(
            apply_box(&mut sys, &BoxPlan::new(&s).unwrap()),
            Err(BoxFailure::Sysctl(0, libc::ENOENT))
        );
        let bad = SecuritySetup {
            sysctls: vec![("net...x".into(), "1".into())],
            ..sec()
        };
        assert!(BoxPlan::new(&bad).is_err());
    }

    #[test]
    fn a_read_only_box_keeps_its_own_tmpfs_writable() {
        let s = SecuritySetup {
            read_only_root: true,
            ..sec()
        };
        let mut sys = Rec::default();
        prepare_root(&mut sys, "/newroot", &s, &["/tmp/"]).unwrap();
        assert_eq!(
            sys.ops,
            [Op::Mount(
                None,
                "/newroot/run".into(),
                None,
                libc::MS_REMOUNT
                    | libc::MS_BIND
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV
            )]
        );
        let mut sys = Rec::default();
        prepare_root(&mut sys, "/newroot", &sec(), &[]).unwrap();
        assert!(sys.ops.is_empty());
        make_root_read_only(&mut sys).unwrap();
        assert_eq!(
            sys.ops,
            [Op::Mount(
                None,
                "/".into(),
                None,
                libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY
            )]
        );
    }
}
