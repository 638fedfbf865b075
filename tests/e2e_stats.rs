//! End to end: `stats`, `top`, `pause` and `unpause` on real boxes, with the
//! numbers and the freezing done by the guest (the box's cgroup). Ignored in a
//! plain `cargo test`; `scripts/test` runs it inside `scripts/kvm-harness`.

mod common;
mod common_registry;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common_registry::{stderr, stdout, BoxEnv};

fn env() -> &'static BoxEnv {
    static ENV: OnceLock<BoxEnv> = OnceLock::new();
    ENV.get_or_init(|| BoxEnv::start("stats", common::guest_kernel()))
}

fn image() -> String {
    env().image()
}

fn home() -> &'static Path {
    env().home.path()
}

fn a3s(args: &[&str]) -> Output {
    let e = env();
    common::a3s_in(e.home.path(), &e.kernel, args, None)
}

/// `a3s-box args`, which must succeed; returns its stdout.
fn ok(args: &[&str]) -> String {
    let out = a3s(args);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

/// `a3s-box args`, which must fail with 1 saying `says`.
fn fails(args: &[&str], says: &str) {
    let out = a3s(args);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
    assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
}

fn inspect(b: &str, template: &str) -> String {
    ok(&["inspect", "--format", template, b])
        .trim_end()
        .to_string()
}

/// Polls `inspect` until the box's status is `want`.
fn wait_status(b: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = inspect(b, "{{.State.Status}}");
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "box {b} stayed {now}, never {want}\n{}",
            common::box_logs(home(), 30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts a detached box `name` of the busybox image running `sh -c script`.
fn run_sh(name: &str, memory: &str, script: &str) {
    let img = image();
    ok(&[
        "run",
        "-d",
        "--name",
        name,
        "--memory",
        memory,
        &img,
        "/bin/busybox",
        "sh",
        "-c",
        script,
    ]);
    wait_status(name, "running");
}

/// `stats --no-stream` of `boxes` as (name, CPU %, MEM USAGE / LIMIT, PIDS).
fn stats_rows(boxes: &[&str]) -> Vec<(String, f64, String, u64)> {
    let mut args = vec![
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}}|{{.CPUPerc}}|{{.MemUsage}}|{{.PIDs}}",
    ];
    args.extend_from_slice(boxes);
    ok(&args)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            assert_eq!(f.len(), 4, "{l}");
            let cpu = f[1]
                .trim_end_matches('%')
                .parse()
                .unwrap_or_else(|_| panic!("{l}"));
            (
                f[0].to_string(),
                cpu,
                f[2].to_string(),
                f[3].parse().unwrap_or_else(|_| panic!("{l}")),
            )
        })
        .collect()
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn stats_and_top_report_the_boxs_own_use_and_processes() {
    run_sh("idle", "256m", "exec /bin/busybox sleep 1000");
    run_sh("spin", "128m", "while :; do :; done");

    let rows = stats_rows(&["idle", "spin"]);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (name, _, mem, pids) = &rows[0];
    assert_eq!(name, "idle");
    assert!(*pids >= 1, "{rows:?}");
    assert!(mem.ends_with(" / 256MiB"), "the limit is --memory: {mem}");
    let (name, cpu, mem, _) = &rows[1];
    assert_eq!(name, "spin");
    assert!(*cpu > 10.0, "a busy loop uses the CPU: {rows:?}");
    assert!(mem.ends_with(" / 128MiB"), "{mem}");

    // Docker's default table.
    let table = ok(&["stats", "--no-stream", "idle"]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for col in [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "NET I/O",
        "BLOCK I/O",
        "PIDS",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let id = inspect("idle", "{{.Id}}");
    assert!(lines.next().unwrap().starts_with(&id[..12]), "{table}");

    // Without --no-stream it keeps refreshing until stopped.
    let mut child = Command::new(common::bin())
        .args(["stats", "--format", "{{.Name}} {{.PIDs}}", "idle"])
        .env("A3S_BOX_HOME", home())
        .env("A3S_BOX_KERNEL", &env().kernel)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(8));
    child.kill().unwrap();
    let streamed = child.wait_with_output().unwrap();
    let streamed = stdout(&streamed);
    assert!(
        streamed.lines().filter(|l| l.starts_with("idle ")).count() >= 2,
        "{streamed:?}"
    );

    // top: ps -ef's columns by default; the box's own pids.
    let top = ok(&["top", "idle"]);
    let mut lines = top.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    );
    let sleep = lines
        .find(|l| l.contains("sleep 1000"))
        .unwrap_or_else(|| panic!("no sleep in {top}"));
    let f: Vec<&str> = sleep.split_whitespace().collect();
    // The image runs as uid 1000, which its root has no name for.
    assert_eq!(f[0], "1000", "{sleep}");
    assert_eq!((f[1], f[2]), ("1", "0"), "{sleep}");
    let picked = ok(&["top", "idle", "-o", "pid,comm"]);
    assert!(picked.starts_with("PID "), "{picked}");
    assert!(
        picked
            .lines()
            .any(|l| l.split_whitespace().eq(["1", "busybox"])),
        "{picked}"
    );
    assert!(ok(&["top", "idle", "aux"]).starts_with("USER "));
    fails(&["top", "idle", "-L"], "unsupported ps option");

    ok(&["rm", "-f", "idle", "spin"]);
}

/// The guest's uptimes the box's loop wrote to `/tmp/ticks`.
fn ticks(b: &str) -> Vec<f64> {
    ok(&[
        "exec",
        b,
        "/bin/busybox",
        "sh",
        "-c",
        "cat /tmp/ticks 2>/dev/null; true",
    ])
    .lines()
    .map(|l| l.parse().unwrap_or_else(|_| panic!("{l:?}")))
    .collect()
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn pause_freezes_the_box_and_unpause_resumes_it() {
    // Once a second the loop notes the guest's uptime: a gap in the notes is
    // time in which the loop did not run.
    run_sh(
        "frozen",
        "256m",
        "while :; do read up rest < /proc/uptime; echo $up >> /tmp/ticks; /bin/busybox sleep 1; done",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while ticks("frozen").len() < 2 {
        assert!(Instant::now() < deadline, "the loop never ran");
        std::thread::sleep(Duration::from_millis(500));
    }

    assert_eq!(ok(&["pause", "frozen"]), "frozen\n");
    assert_eq!(inspect("frozen", "{{.State.Status}}"), "paused");
    let ps = ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(
        ps.lines()
            .any(|l| l.starts_with("frozen Up ") && l.ends_with("(Paused)")),
        "{ps}"
    );
    let refused = a3s(&["exec", "frozen", "/bin/busybox", "true"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("cannot exec in a paused box"),
        "{}",
        stderr(&refused)
    );
    fails(&["pause", "frozen"], "box frozen is already paused");
    // Paused, the box still reports its use.
    let rows = stats_rows(&["frozen"]);
    assert!(rows[0].3 >= 1, "{rows:?}");
    std::thread::sleep(Duration::from_secs(8));

    assert_eq!(ok(&["unpause", "frozen"]), "frozen\n");
    assert_eq!(inspect("frozen", "{{.State.Status}}"), "running");
    fails(&["unpause", "frozen"], "box frozen is not paused");
    std::thread::sleep(Duration::from_secs(3));
    let t = ticks("frozen");
    let (at, gap) = t
        .windows(2)
        .enumerate()
        .map(|(i, w)| (i, w[1] - w[0]))
        .fold(
            (0, 0.0),
            |best, cur| if cur.1 > best.1 { cur } else { best },
        );
    assert!(
        gap >= 6.0,
        "the loop went on while paused (largest gap {gap:.1} s): {t:?}"
    );
    assert!(
        t.len() >= at + 3,
        "the loop did not resume after unpause: {t:?}"
    );

    // A box that does not run can be neither paused nor unpaused.
    let img = image();
    ok(&["create", "--name", "idle2", &img, "/bin/busybox", "true"]);
    fails(&["pause", "idle2"], "box idle2 is not running");
    fails(&["unpause", "idle2"], "box idle2 is not paused");
    fails(&["pause", "nosuchbox"], "no such box");
    ok(&["rm", "-f", "frozen", "idle2"]);
}
