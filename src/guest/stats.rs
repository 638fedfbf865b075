//! The control port's `Stats`, `Top`, `Pause` and `Unpause`: what the box
//! uses and runs, read by init from the box's cgroup and from its own
//! `/proc` (which sees every process of the VM), and the cgroup's freezer.
//!
//! The parsers take the files' text, so they are tested on samples; only
//! [`answer`] touches the real `/proc`.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use super::cgroup::{self, Cgroup, FREEZE_TIMEOUT};
use super::supervisor::Supervisor;
use crate::proto::{BoxStats, Message, ProcessInfo, MAX_FRAME};

/// Most bytes of command line sent per process (`ps` cuts long ones too).
const MAX_ARGS_BYTES: usize = 4096;

/// Bytes of a `TopReply` kept free of processes, for its header and slack.
const TOP_RESERVE: usize = 4096;

/// Answers one of `Stats`, `Top`, `Pause`, `Unpause`: the reply, or an
/// `Error` that says why there is none.
pub fn answer(sup: &Supervisor, request: &Message) -> Message {
    let error = |message: String| Message::Error { message };
    let Some(cg) = sup.cgroup() else {
        return error(
            "the box has no cgroup (see its console log for why), so it cannot report its \
             use, list its processes or be paused"
                .into(),
        );
    };
    let proc = Path::new("/proc");
    let (what, result) = match request {
        Message::Stats => (
            "read the box's stats",
            stats(cg, proc).map(Message::StatsReply),
        ),
        Message::Top => ("list the box's processes", top(cg, proc, sup.main_pid())),
        Message::Pause => (
            "pause the box",
            cg.set_frozen(true, FREEZE_TIMEOUT).map(|()| Message::Ok),
        ),
        Message::Unpause => (
            "unpause the box",
            cg.set_frozen(false, FREEZE_TIMEOUT).map(|()| Message::Ok),
        ),
        other => return error(format!("{} is not a stats request", other.name())),
    };
    result.unwrap_or_else(|e| error(format!("cannot {what}: {e}")))
}

fn stats(cg: &Cgroup, proc: &Path) -> io::Result<BoxStats> {
    let required = |file: &str, key: Option<&str>| -> io::Result<u64> {
        let text = cg.read(file)?;
        let value = match key {
            Some(k) => cgroup::keyed(&text, k),
            None => text.trim().parse().ok(),
        };
        value.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the cgroup's {file} holds no {}", key.unwrap_or("number")),
            )
        })
    };
    let read = |name: &str| std::fs::read_to_string(proc.join(name));
    let (net_rx, net_tx) = match read("net/dev") {
        Ok(text) => {
            let (rx, tx) = net_bytes(&text);
            (Some(rx), Some(tx))
        }
        Err(_) => (None, None),
    };
    let (block_read, block_write) = match cg.read("io.stat") {
        Ok(text) => {
            let (r, w) = cgroup::io_bytes(&text);
            (Some(r), Some(w))
        }
        Err(_) => (None, None),
    };
    Ok(BoxStats {
        time_usec: clock_usec(libc::CLOCK_MONOTONIC),
        cpu_usec: required("cpu.stat", Some("usage_usec"))?,
        memory: required("memory.current", None)?,
        inactive_file: cg
            .read("memory.stat")
            .ok()
            .and_then(|t| cgroup::keyed(&t, "inactive_file"))
            .unwrap_or(0),
        memory_total: read("meminfo")
            .ok()
            .and_then(|t| mem_total(&t))
            .unwrap_or(0),
        pids: required("pids.current", None)?,
        net_rx,
        net_tx,
        block_read,
        block_write,
    })
}

fn top(cg: &Cgroup, proc: &Path, main_pid: Option<i32>) -> io::Result<Message> {
    let pids = cg.procs()?;
    // Names as the box knows them: its own /etc/passwd, seen through the
    // main process's root.
    let passwd = main_pid
        .and_then(|pid| std::fs::read_to_string(proc.join(format!("{pid}/root/etc/passwd"))).ok())
        .unwrap_or_default();
    let clock = Clock {
        uptime_ms: clock_usec(libc::CLOCK_BOOTTIME) / 1000,
        // SAFETY: sysconf takes a plain integer and has no other effect.
        hz: u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100),
        // SAFETY: as above.
        page: u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096),
    };
    let mem_total = std::fs::read_to_string(proc.join("meminfo"))
        .ok()
        .and_then(|t| mem_total(&t))
        .unwrap_or(0);
    Ok(Message::TopReply {
        mem_total,
        processes: processes(proc, &pids, &passwd, &clock),
    })
}

/// A clock's reading in µs (0 if it cannot be read).
fn clock_usec(clock: libc::clockid_t) -> u64 {
    // SAFETY: timespec is plain old data; all-zero is a valid value.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs * 1_000_000 + nanos / 1000
}

/// What turns `/proc/<pid>/stat`'s units into the protocol's.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Time since boot, in ms (the clock `starttime` counts on).
    pub uptime_ms: u64,
    /// Clock ticks per second.
    pub hz: u64,
    /// Bytes per page.
    pub page: u64,
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes received and sent over every interface of `/proc/net/dev` but `lo`.
pub fn net_bytes(dev: &str) -> (u64, u64) {
    let mut rx = 0u64;
    let mut tx = 0u64;
    for line in dev.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let c: Vec<u64> = counters
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        // Eight receive counters come first, bytes leading; then transmit.
        if c.len() >= 9 {
            rx = rx.saturating_add(c[0]);
            tx = tx.saturating_add(c[8]);
        }
    }
    (rx, tx)
}

/// The fields of `/proc/<pid>/stat` that `top` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Name of the executable (field 2, without its parentheses).
    pub comm: String,
    /// State letter.
    pub state: char,
    /// Parent, process group, session (as the reader's PID namespace sees them).
    pub ppid: i32,
    /// Process group.
    pub pgrp: i32,
    /// Session.
    pub session: i32,
    /// Controlling terminal's device number.
    pub tty_nr: u32,
    /// Foreground process group of that terminal.
    pub tpgid: i32,
    /// User and system time, in ticks.
    pub cpu_ticks: u64,
    /// Nice value.
    pub nice: i64,
    /// Threads.
    pub threads: u64,
    /// Start, in ticks after boot.
    pub start_ticks: u64,
    /// Virtual memory size, in bytes.
    pub vsize: u64,
    /// Resident pages.
    pub rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`. The command name may hold spaces and `)`, so
/// fields are counted after its last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let f: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let num = |i: usize| -> Option<u64> { f.get(i)?.parse().ok() };
    let int = |i: usize| -> Option<i64> { f.get(i)?.parse().ok() };
    let pid = |i: usize| -> Option<i32> { i32::try_from(int(i)?).ok() };
    Some(Stat {
        comm,
        state: f.first()?.chars().next()?,
        ppid: pid(1)?,
        pgrp: pid(2)?,
        session: pid(3)?,
        // The kernel prints the device number as a signed int.
        tty_nr: u32::try_from(int(4)?).unwrap_or(0),
        tpgid: pid(5)?,
        cpu_ticks: num(11)?.saturating_add(num(12)?),
        nice: int(16)?,
        threads: num(17)?,
        start_ticks: num(19)?,
        vsize: num(20)?,
        rss_pages: u64::try_from(int(21)?).unwrap_or(0),
    })
}

/// ps's STAT: the state, then `<` (high priority) or `N` (low), `s`
/// (session leader), `l` (threads), `+` (in the terminal's foreground group).
pub fn stat_column(st: &Stat, pid: i32) -> String {
    let mut s = String::from(st.state);
    if st.nice < 0 {
        s.push('<');
    } else if st.nice > 0 {
        s.push('N');
    }
    if st.session == pid {
        s.push('s');
    }
    if st.threads > 1 {
        s.push('l');
    }
    if st.tty_nr != 0 && st.tpgid == st.pgrp {
        s.push('+');
    }
    s
}

/// The real uid from `/proc/<pid>/status`.
pub fn status_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The pid in the box's PID namespace from `/proc/<pid>/status`: the second
/// `NSpid` entry (the first is init's view; a namespace the workload made
/// itself would add more).
pub fn status_box_pid(status: &str) -> Option<i32> {
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    let ids: Vec<i32> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    ids.get(1).or(ids.first()).copied()
}

/// A command line from `/proc/<pid>/cmdline` (NUL-separated), at most
/// [`MAX_ARGS_BYTES`] of it.
pub fn cmdline_args(bytes: &[u8]) -> Vec<String> {
    let mut args = Vec::new();
    let mut left = MAX_ARGS_BYTES;
    let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    if bytes.is_empty() {
        return args;
    }
    for arg in bytes.split(|&b| b == 0) {
        if left == 0 {
            break;
        }
        let mut arg = String::from_utf8_lossy(arg).into_owned();
        if arg.len() > left {
            let mut cut = left;
            while !arg.is_char_boundary(cut) {
                cut -= 1;
            }
            arg.truncate(cut);
        }
        left -= arg.len();
        args.push(arg);
    }
    args
}

/// The name of `uid` in a passwd file's text.
pub fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 3 && f[2].parse() == Ok(uid)).then(|| f[0].to_owned())
    })
}

/// The processes `pids` (init's numbering) under the proc filesystem `proc`,
/// numbered as the box sees them, in that order; processes that ended
/// meanwhile are left out, and so are those that would not fit in a frame.
pub fn processes(proc: &Path, pids: &[i32], passwd: &str, clock: &Clock) -> Vec<ProcessInfo> {
    let read = |pid: i32, file: &str| std::fs::read(proc.join(format!("{pid}/{file}")));
    let mut found: Vec<(i32, i32, ProcessInfo)> = Vec::new();
    for &pid in pids {
        let (Ok(stat), Ok(status)) = (read(pid, "stat"), read(pid, "status")) else {
            continue;
        };
        let status = String::from_utf8_lossy(&status);
        let Some(st) = parse_stat(&String::from_utf8_lossy(&stat)) else {
            continue;
        };
        let uid = status_uid(&status).unwrap_or(0);
        let started_ms = st.start_ticks.saturating_mul(1000) / clock.hz.max(1);
        let info = ProcessInfo {
            pid: status_box_pid(&status).unwrap_or(pid),
            ppid: 0,
            uid,
            user: user_name(passwd, uid).unwrap_or_default(),
            stat: stat_column(&st, pid),
            tty: st.tty_nr,
            cpu_ms: st.cpu_ticks.saturating_mul(1000) / clock.hz.max(1),
            age_ms: clock.uptime_ms.saturating_sub(started_ms),
            vsz: st.vsize,
            rss: st.rss_pages.saturating_mul(clock.page),
            args: cmdline_args(&read(pid, "cmdline").unwrap_or_default()),
            comm: st.comm,
        };
        found.push((pid, st.ppid, info));
    }
    let box_pid: HashMap<i32, i32> = found.iter().map(|(pid, _, p)| (*pid, p.pid)).collect();
    let mut out = Vec::new();
    let mut size = TOP_RESERVE;
    for (_, ppid, mut p) in found {
        p.ppid = box_pid.get(&ppid).copied().unwrap_or(0);
        size += 64 + p.user.len() + p.stat.len() + p.comm.len();
        size += p.args.iter().map(|a| 4 + a.len()).sum::<usize>();
        if size > MAX_FRAME {
            break;
        }
        out.push(p);
    }
    out.sort_by_key(|p| p.pid);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::PathBuf;

    const SLEEP_STAT: &str = "57 (sleep) S 43 57 43 34816 57 4194560 87 0 0 0 12 3 0 0 20 0 \
                              1 0 1500 1658880 45 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 \
                              0 17 0 0 0 0 0 0";

    #[test]
    fn stat_lines_parse_even_with_parentheses_in_the_name() {
        let st = parse_stat(SLEEP_STAT).unwrap();
        assert_eq!(st.comm, "sleep");
        assert_eq!(
            (st.state, st.ppid, st.pgrp, st.session, st.tty_nr, st.tpgid),
            ('S', 43, 57, 43, 34816, 57)
        );
        assert_eq!(st.cpu_ticks, 15);
        assert_eq!((st.nice, st.threads, st.start_ticks), (0, 1, 1500));
        assert_eq!((st.vsize, st.rss_pages), (1_658_880, 45));

        let odd = SLEEP_STAT.replace("(sleep)", "(a) b (c)");
        let st = parse_stat(&odd).unwrap();
        assert_eq!(st.comm, "a) b (c");
        assert_eq!(st.ppid, 43);
        assert!(parse_stat("57 (sleep) S 1").is_none());
        assert!(parse_stat("").is_none());
    }

    #[test]
    fn the_stat_column_reads_as_ps_prints_it() {
        let st = parse_stat(SLEEP_STAT).unwrap();
        // In the terminal's foreground group (tpgid == pgrp), not a leader.
        assert_eq!(stat_column(&st, 57), "S+");
        let leader = Stat {
            session: 43,
            threads: 4,
            nice: 5,
            tty_nr: 0,
            ..st.clone()
        };
        assert_eq!(stat_column(&leader, 43), "SNsl");
        let urgent = Stat { nice: -5, ..st };
        assert_eq!(stat_column(&urgent, 1), "S<+");
    }

    #[test]
    fn status_gives_the_real_uid_and_the_box_pid() {
        let status = "Name:\tsleep\nUid:\t1000\t1000\t1000\t1000\nNSpid:\t57\t3\n";
        assert_eq!(status_uid(status), Some(1000));
        assert_eq!(status_box_pid(status), Some(3));
        assert_eq!(status_box_pid("NSpid:\t9\n"), Some(9));
        assert_eq!(status_box_pid("NSpid:\t9\t4\t1\n"), Some(4));
        assert_eq!(status_uid("Name:\tx\n"), None);
    }

    #[test]
    fn command_lines_split_on_nul_and_are_capped() {
        assert_eq!(
            cmdline_args(b"/bin/sh\0-c\0sleep 100\0"),
            ["/bin/sh", "-c", "sleep 100"]
        );
        assert!(cmdline_args(b"").is_empty());
        assert_eq!(cmdline_args(b"a\0\0b\0"), ["a", "", "b"]);
        let long = vec![b'x'; MAX_ARGS_BYTES * 2];
        let args = cmdline_args(&long);
        assert_eq!(args.len(), 1);
        assert_eq!(args[0].len(), MAX_ARGS_BYTES);
        let mut utf8 = vec![b'y'; MAX_ARGS_BYTES - 1];
        utf8.extend("é".as_bytes());
        assert_eq!(cmdline_args(&utf8)[0].len(), MAX_ARGS_BYTES - 1);
    }

    #[test]
    fn meminfo_and_net_dev_give_bytes() {
        let meminfo = "MemTotal:         241640 kB\nMemFree:          200000 kB\n";
        assert_eq!(mem_total(meminfo), Some(241_640 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        let dev = "Inter-|   Receive                            |  Transmit\n \
                   face |bytes    packets errs drop fifo frame compressed multicast|bytes    \
                   packets errs drop fifo colls carrier compressed\n    \
                   lo:    5000      50    0    0    0     0          0         0     5000      \
                   50    0    0    0     0       0          0\n  \
                   eth0:    1200      10    0    0    0     0          0         0      800      \
                   8    0    0    0     0       0          0\n";
        assert_eq!(net_bytes(dev), (1200, 800));
        let only_lo = dev.lines().take(3).collect::<Vec<_>>().join("\n");
        assert_eq!(net_bytes(&only_lo), (0, 0));
    }

    #[test]
    fn user_names_come_from_the_boxs_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\n#c\nwww-data:x:33:33::/var/www:/bin/false\n";
        assert_eq!(user_name(passwd, 0).as_deref(), Some("root"));
        assert_eq!(user_name(passwd, 33).as_deref(), Some("www-data"));
        assert_eq!(user_name(passwd, 1000), None);
    }

    struct FakeProc(PathBuf);

    impl FakeProc {
        fn new() -> FakeProc {
            let dir = std::env::temp_dir().join(format!("a3s-fake-proc-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            FakeProc(dir)
        }

        fn add(&self, pid: i32, ppid: i32, box_pid: i32, uid: u32, cmdline: &[u8]) {
            let d = self.0.join(pid.to_string());
            fs::create_dir_all(&d).unwrap();
            let stat = SLEEP_STAT
                .replacen("57 (sleep) S 43", &format!("{pid} (sleep) S {ppid}"), 1)
                .replacen(" 43 34816", &format!(" {pid} 0"), 1);
            fs::write(d.join("stat"), stat).unwrap();
            fs::write(
                d.join("status"),
                format!(
                    "Name:\tsleep\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nNSpid:\t{pid}\t{box_pid}\n"
                ),
            )
            .unwrap();
            fs::write(d.join("cmdline"), cmdline).unwrap();
        }
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn processes_are_numbered_as_the_box_sees_them() {
        let proc = FakeProc::new();
        proc.add(40, 1, 1, 0, b"/bin/sh\0-c\0sleep 1000\0");
        proc.add(57, 40, 2, 33, b"sleep\x001000\0");
        // Listed by the cgroup but gone by the time it is read.
        let clock = Clock {
            uptime_ms: 20_000,
            hz: 100,
            page: 4096,
        };
        let passwd = "root:x:0:0::/root:/bin/sh\nwww:x:33:33::/:/bin/false\n";
        let got = processes(&proc.0, &[40, 57, 99], passwd, &clock);
        assert_eq!(got.len(), 2);
        let (sh, sleep) = (&got[0], &got[1]);
        assert_eq!((sh.pid, sh.ppid, sh.user.as_str()), (1, 0, "root"));
        assert_eq!((sleep.pid, sleep.ppid, sleep.uid), (2, 1, 33));
        assert_eq!(sleep.user, "www");
        assert_eq!(sleep.args, ["sleep", "1000"]);
        assert_eq!(sleep.comm, "sleep");
        assert_eq!(sleep.cpu_ms, 150);
        assert_eq!(sleep.age_ms, 20_000 - 15_000);
        assert_eq!(sleep.rss, 45 * 4096);
        assert_eq!(sleep.stat, "Ss");
    }
}
