//! The box's cgroup (v2). Every process of the box is cloned straight into
//! it (`clone3` with `CLONE_INTO_CGROUP`, see `spawn.rs`), so init can say
//! what the box uses (`Stats`) and freeze it (`Pause`) without counting
//! itself: init stays in the root group.
//!
//! The box's memory is the VM's, so the group sets no limits; it only
//! counts, with the controllers the kernel offers among cpu, memory, pids
//! and io enabled for it.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::sys::Mount;

/// Where init mounts the cgroup2 hierarchy.
pub const CGROUP_MOUNT: &str = "/sys/fs/cgroup";

/// The box's group, under [`CGROUP_MOUNT`].
pub const BOX_GROUP: &str = "box";

/// The cgroup2 mount.
pub const MOUNT: Mount<'static> = Mount {
    source: "cgroup2",
    target: CGROUP_MOUNT,
    fstype: "cgroup2",
    flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
    data: "",
};

/// Controllers to enable for the box's group, when the kernel has them.
const CONTROLLERS: [&str; 4] = ["cpu", "memory", "pids", "io"];

/// How long a freeze or thaw may take before it counts as failed.
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// The box's group.
#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
    /// The group's directory, for `CLONE_INTO_CGROUP`.
    fd: OwnedFd,
    /// Set from the moment a freeze is asked for until a thaw has taken
    /// effect: no process may start in the box meanwhile.
    paused: AtomicBool,
    /// One freeze or thaw at a time.
    freezing: Mutex<()>,
}

impl Cgroup {
    /// Makes the group `name` under the hierarchy mounted at `root`, after
    /// enabling for its children every controller of [`CONTROLLERS`] that
    /// `root/cgroup.controllers` lists. A group that exists is reused.
    pub fn create(root: &Path, name: &str) -> io::Result<Cgroup> {
        let available = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        for c in to_enable(&available) {
            // One at a time: one the kernel refuses must not stop the rest.
            let _ = write_existing(&root.join("cgroup.subtree_control"), &format!("+{c}"));
        }
        let dir = root.join(name);
        match fs::create_dir(&dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let fd = File::options()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&dir)?
            .into();
        Ok(Cgroup {
            dir,
            fd,
            paused: AtomicBool::new(false),
            freezing: Mutex::new(()),
        })
    }

    /// The group's directory, open, for `CLONE_INTO_CGROUP`.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads one of the group's files.
    pub fn read(&self, file: &str) -> io::Result<String> {
        fs::read_to_string(self.dir.join(file))
    }

    /// Whether the box is paused, or being paused.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Pids (as init sees them) of the group's processes, in order.
    pub fn procs(&self) -> io::Result<Vec<i32>> {
        let mut pids: Vec<i32> = self
            .read("cgroup.procs")?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        pids.sort_unstable();
        Ok(pids)
    }

    /// Freezes (`frozen`) or thaws the group and waits, at most `timeout`,
    /// until `cgroup.events` says it took effect. A freeze that does not
    /// take effect in time is undone.
    pub fn set_frozen(&self, frozen: bool, timeout: Duration) -> io::Result<()> {
        let _one = self.freezing.lock().unwrap_or_else(|e| e.into_inner());
        if frozen {
            self.paused.store(true, Ordering::SeqCst);
        }
        let result = write_existing(
            &self.dir.join("cgroup.freeze"),
            if frozen { "1" } else { "0" },
        )
        .and_then(|()| self.wait_frozen(frozen, timeout));
        match (&result, frozen) {
            (Ok(()), false) => self.paused.store(false, Ordering::SeqCst),
            (Err(_), true) => {
                let _ = write_existing(&self.dir.join("cgroup.freeze"), "0");
                self.paused.store(false, Ordering::SeqCst);
            }
            _ => {}
        }
        result
    }

    fn wait_frozen(&self, want: bool, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if events_frozen(&self.read("cgroup.events")?) == Some(want) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let what = if want { "freeze" } else { "thaw" };
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the box's processes did not {what} within {} s",
                        timeout.as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Which of [`CONTROLLERS`] a `cgroup.controllers` line offers.
fn to_enable(available: &str) -> Vec<&'static str> {
    CONTROLLERS
        .into_iter()
        .filter(|c| available.split_whitespace().any(|a| a == *c))
        .collect()
}

/// Writes `value` to a file that must exist (a cgroup interface file).
fn write_existing(path: &Path, value: &str) -> io::Result<()> {
    use std::io::Write;
    File::options()
        .write(true)
        .truncate(true)
        .open(path)?
        .write_all(value.as_bytes())
}

/// The value of `key` in a flat keyed file (`cpu.stat`, `memory.stat`,
/// `cgroup.events`: one `key value` per line).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// What `cgroup.events` says of `frozen`.
pub fn events_frozen(text: &str) -> Option<bool> {
    keyed(text, "frozen").map(|v| v == 1)
}

/// Bytes read and written over every device of an `io.stat`
/// (`8:0 rbytes=1 wbytes=2 rios=…` per line).
pub fn io_bytes(text: &str) -> (u64, u64) {
    let mut read = 0u64;
    let mut written = 0u64;
    for field in text.split_whitespace() {
        let Some((k, v)) = field.split_once('=') else {
            continue;
        };
        let v: u64 = v.parse().unwrap_or(0);
        match k {
            "rbytes" => read = read.saturating_add(v),
            "wbytes" => written = written.saturating_add(v),
            _ => {}
        }
    }
    (read, written)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "a3s-cgroup-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A directory shaped like a cgroup2 root offering `controllers`.
    fn fake_root(tag: &str, controllers: &str) -> TempDir {
        let t = TempDir::new(tag);
        fs::write(t.0.join("cgroup.controllers"), controllers).unwrap();
        fs::write(t.0.join("cgroup.subtree_control"), "").unwrap();
        t
    }

    #[test]
    fn creating_the_group_enables_the_offered_controllers_and_makes_its_directory() {
        let root = fake_root("create", "cpuset cpu io memory hugetlb pids rdma misc\n");
        let cg = Cgroup::create(&root.0, BOX_GROUP).unwrap();
        assert!(root.0.join(BOX_GROUP).is_dir());
        // A plain file keeps only the last write; the kernel's accumulates.
        assert_eq!(
            fs::read_to_string(root.0.join("cgroup.subtree_control")).unwrap(),
            "+io"
        );
        assert_eq!(
            to_enable("cpuset cpu io memory hugetlb pids rdma misc"),
            ["cpu", "memory", "pids", "io"]
        );
        assert!(cg.fd() > 2);
        assert!(!cg.paused());
        // Made again (init restarted nothing, but a group may exist): reused.
        Cgroup::create(&root.0, BOX_GROUP).unwrap();
    }

    #[test]
    fn controllers_the_kernel_lacks_are_not_asked_for() {
        assert_eq!(to_enable("cpu pids\n"), ["cpu", "pids"]);
        assert!(to_enable("").is_empty());
        let root = fake_root("lacking", "cpu pids\n");
        Cgroup::create(&root.0, BOX_GROUP).unwrap();
        assert_eq!(
            fs::read_to_string(root.0.join("cgroup.subtree_control")).unwrap(),
            "+pids"
        );
    }

    #[test]
    fn procs_are_read_and_sorted() {
        let root = fake_root("procs", "");
        let cg = Cgroup::create(&root.0, BOX_GROUP).unwrap();
        fs::write(root.0.join("box/cgroup.procs"), "57\n12\n\n40\n").unwrap();
        assert_eq!(cg.procs().unwrap(), [12, 40, 57]);
    }

    #[test]
    fn a_freeze_waits_for_the_events_file_to_say_frozen() {
        let root = fake_root("freeze", "");
        let cg = Cgroup::create(&root.0, BOX_GROUP).unwrap();
        let dir = root.0.join(BOX_GROUP);
        fs::write(dir.join("cgroup.freeze"), "0").unwrap();
        fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        let events = dir.join("cgroup.events");
        let kernel = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            fs::write(events, "populated 1\nfrozen 1\n").unwrap();
        });
        cg.set_frozen(true, Duration::from_secs(10)).unwrap();
        kernel.join().unwrap();
        assert_eq!(fs::read_to_string(dir.join("cgroup.freeze")).unwrap(), "1");
        assert!(cg.paused());

        fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        cg.set_frozen(false, Duration::from_secs(1)).unwrap();
        assert_eq!(fs::read_to_string(dir.join("cgroup.freeze")).unwrap(), "0");
        assert!(!cg.paused());
    }

    #[test]
    fn a_freeze_that_does_not_take_effect_times_out_and_is_undone() {
        let root = fake_root("stuck", "");
        let cg = Cgroup::create(&root.0, BOX_GROUP).unwrap();
        let dir = root.0.join(BOX_GROUP);
        fs::write(dir.join("cgroup.freeze"), "0").unwrap();
        fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        let err = cg.set_frozen(true, Duration::from_millis(30)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("did not freeze"), "{err}");
        assert_eq!(fs::read_to_string(dir.join("cgroup.freeze")).unwrap(), "0");
        assert!(!cg.paused());
    }

    #[test]
    fn a_group_without_a_freezer_file_cannot_be_frozen() {
        let root = fake_root("nofreezer", "");
        let cg = Cgroup::create(&root.0, BOX_GROUP).unwrap();
        assert!(cg.set_frozen(true, Duration::from_millis(10)).is_err());
        assert!(!cg.paused());
    }

    #[test]
    fn keyed_files_are_read_by_key() {
        let cpu = "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n";
        assert_eq!(keyed(cpu, "usage_usec"), Some(1_234_567));
        assert_eq!(keyed(cpu, "system_usec"), Some(234_567));
        assert_eq!(keyed(cpu, "usage"), None);
        let mem = "anon 4096\nfile 8192\nactive_file 0\ninactive_file 8192\n";
        assert_eq!(keyed(mem, "inactive_file"), Some(8192));
        assert_eq!(keyed(mem, "file"), Some(8192));
        assert_eq!(events_frozen("populated 1\nfrozen 1\n"), Some(true));
        assert_eq!(events_frozen("populated 0\nfrozen 0\n"), Some(false));
        assert_eq!(events_frozen("populated 1\n"), None);
    }

    #[test]
    fn io_stat_sums_every_device() {
        let text = "254:0 rbytes=4096 wbytes=512 rios=1 wios=1 dbytes=0 dios=0\n\
                    8:16 rbytes=1000 wbytes=0 rios=2 wios=0 dbytes=0 dios=0\n";
        assert_eq!(io_bytes(text), (5096, 512));
        assert_eq!(io_bytes(""), (0, 0));
    }
}
