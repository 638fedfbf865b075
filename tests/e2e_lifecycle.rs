//! End to end: managing boxes as Docker does (`create`, `start`, `ps`, `inspect`,
//! `stop`, `rm`, `rename`, `wait`) on an image's copy-on-write root, and what a
//! crash of the CLI or of a box's VMM leaves behind. Ignored in a plain `cargo
//! test`; `scripts/test` runs it inside `scripts/kvm-harness`.

mod common;
mod common_registry;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common_registry::{stderr, stdout, BoxEnv};

fn env() -> &'static BoxEnv {
    static ENV: OnceLock<BoxEnv> = OnceLock::new();
    ENV.get_or_init(|| BoxEnv::start("lifecycle", common::guest_kernel()))
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

fn inspect(b: &str, template: &str) -> String {
    ok(&["inspect", "--format", template, b])
        .trim_end()
        .to_string()
}

/// Polls `inspect` until the box's status is `want`.
fn wait_status(b: &str, want: &str) {
    wait_inspect(b, "{{.State.Status}}", |s| s == want, want);
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn a_created_box_starts_stops_keeps_its_layer_and_is_removed() {
    let img = image();
    let id = ok(&[
        "create",
        "--name",
        "life",
        "-l",
        "tier=web",
        "-u",
        "0",
        &img,
        "/bin/busybox",
        "sh",
        "-c",
        "echo run >> /var-log; /bin/busybox cat /var-log | /bin/busybox wc -l; exec /bin/busybox sleep 1000",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64);
    // Created: listed by ps -a only, and not started.
    assert!(!ok(&["ps", "-q"]).contains(&id[..12]));
    let listed = ok(&[
        "ps",
        "-a",
        "--filter",
        "name=life",
        "--format",
        "{{.ID}} {{.Status}} {{.Labels}}",
    ]);
    assert_eq!(listed, format!("{} Created tier=web\n", &id[..12]));
    assert_eq!(
        inspect("life", "{{.State.Status}} {{.State.Running}}"),
        "created false"
    );

    assert_eq!(ok(&["start", "life"]), "life\n");
    wait_status("life", "running");
    let row = ok(&["ps", "--format", "{{.Names}}\t{{.Status}}\t{{.Image}}"]);
    assert!(row.starts_with("life\tUp "), "{row}");
    assert!(row.trim_end().ends_with(&img), "{row}");
    // State.Pid is the box's VMM, a live host process.
    let pid: u32 = inspect("life", "{{.State.Pid}}").parse().unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(
        ok(&["exec", "life", "/bin/busybox", "cat", "/var-log"]),
        "run\n"
    );

    // A running box is not removed without -f, and loses nothing.
    let refused = a3s(&["rm", "life"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("is running"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(inspect("life", "{{.State.Status}}"), "running");

    assert_eq!(ok(&["stop", "-t", "1", "life"]), "life\n");
    assert_eq!(inspect("life", "{{.State.Status}}"), "exited");
    let status = ok(&[
        "ps",
        "-a",
        "--filter",
        "status=exited",
        "--format",
        "{{.Names}} {{.Status}}",
    ]);
    assert!(status.contains("life Exited (137)"), "{status}");
    // Nothing runs in a stopped box: Docker's exit code 1, a one-line error.
    let refused = a3s(&["exec", "life", "/bin/busybox", "true"]);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(stderr(&refused), "a3s-box: box life is not running\n");

    // Started again, the box still has what it wrote: its layer is its own.
    ok(&["start", "life"]);
    wait_status("life", "running");
    assert_eq!(
        ok(&["exec", "life", "/bin/busybox", "cat", "/var-log"]),
        "run\nrun\n"
    );
    // Started by hand: no restart by a policy.
    assert_eq!(inspect("life", "{{.RestartCount}}"), "0");

    ok(&["rename", "life", "life2"]);
    let missing = a3s(&["inspect", "life"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(ok(&["rm", "-f", "life2"]), "life2\n");
    assert!(!ok(&["ps", "-aq", "--no-trunc"]).contains(id));
    assert!(
        !home().join("boxes").join(id).exists(),
        "the box's directory is left"
    );
    assert_eq!(a3s(&["rm", "life2"]).status.code(), Some(1));
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn wait_prints_the_exit_code_and_an_in_use_image_is_kept() {
    let img = image();
    ok(&[
        "run",
        "-d",
        "--name",
        "waited",
        &img,
        "/bin/busybox",
        "sh",
        "-c",
        "sleep 1; exit 3",
    ]);
    assert_eq!(ok(&["wait", "waited"]), "3\n");
    assert_eq!(inspect("waited", "{{.State.ExitCode}}"), "3");
    let code = ok(&["ps", "-a", "--filter", "exited=3", "--format", "{{.Names}}"]);
    assert_eq!(code, "waited\n");
    // The stopped box still stands on the image.
    let rmi = a3s(&["rmi", &img]);
    assert_ne!(rmi.status.code(), Some(0));
    assert!(stderr(&rmi).contains("waited"), "{}", stderr(&rmi));
    ok(&["rm", "waited"]);
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn a_box_whose_vmm_was_killed_shows_exited_and_can_be_removed() {
    let img = image();
    ok(&[
        "run",
        "-d",
        "--name",
        "crashed",
        &img,
        "/bin/busybox",
        "sleep",
        "1000",
    ]);
    let pid: i32 = inspect("crashed", "{{.State.Pid}}").parse().unwrap();
    // SAFETY: kill takes plain integers.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}/stat")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z")
    {
        assert!(Instant::now() < deadline, "the VMM did not die");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        inspect("crashed", "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 255"
    );
    let row = ok(&[
        "ps",
        "-a",
        "--filter",
        "name=crashed",
        "--format",
        "{{.Status}}",
    ]);
    assert!(row.starts_with("Exited (255)"), "{row}");
    assert!(!ok(&["ps", "--format", "{{.Names}}"]).contains("crashed"));
    ok(&["rm", "crashed"]);
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn a_cli_killed_during_run_leaves_no_half_record() {
    let img = image();
    let e = env();
    for (i, after) in [5u64, 60, 400, 1500].into_iter().enumerate() {
        let name = format!("cut-{i}");
        let mut child = Command::new(common::bin())
            .args([
                "run",
                "-d",
                "--name",
                &name,
                &img,
                "/bin/busybox",
                "sleep",
                "1000",
            ])
            .env("A3S_BOX_HOME", e.home.path())
            .env("A3S_BOX_KERNEL", &e.kernel)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(after));
        let _ = child.kill();
        let _ = child.wait();
    }
    // Every box directory is a whole record that ps lists, and rm -f removes.
    let listed = ok(&["ps", "-a", "-q", "--no-trunc"]);
    for d in std::fs::read_dir(home().join("boxes")).unwrap().flatten() {
        let n = d.file_name().to_string_lossy().into_owned();
        if n.len() != 64 {
            continue;
        }
        assert!(
            d.path().join("config.json").exists() || !d.path().join("state.json").exists(),
            "{n}: a record without its config"
        );
        if d.path().join("config.json").exists() {
            assert!(listed.contains(&n), "{n} is not listed by ps -a");
        }
    }
    let cut = ok(&[
        "ps",
        "-a",
        "--filter",
        "name=cut-",
        "--format",
        "{{.Names}}",
    ]);
    for name in cut.lines() {
        assert_eq!(ok(&["rm", "-f", name]), format!("{name}\n"));
    }
    let left = ok(&["ps", "-a", "--filter", "name=cut-", "-q"]);
    assert_eq!(left, "", "boxes left after rm -f");
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn concurrent_creates_with_distinct_names_all_succeed_and_one_name_wins_once() {
    let img = image();
    // Pulled once, so the creates race on the box records alone.
    ok(&["pull", "-q", &img]);
    let e = env();
    let spawn = |name: String| {
        let (img, home, kernel) = (img.clone(), e.home.path().to_owned(), e.kernel.clone());
        std::thread::spawn(move || {
            let mut cmd = Command::new(common::bin());
            cmd.args(["create", "--name", &name, &img, "/bin/busybox", "true"])
                .env("A3S_BOX_HOME", home)
                .env("A3S_BOX_KERNEL", kernel);
            common::output_within(&mut cmd, None, common::COMMAND_LIMIT, String::new)
        })
    };
    let distinct: Vec<_> = (0..50).map(|i| spawn(format!("many-{i}"))).collect();
    for t in distinct {
        let out = t.join().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let names = ok(&[
        "ps",
        "-a",
        "--filter",
        "name=many-",
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(names.lines().count(), 50, "{names}");
    let same: Vec<_> = (0..8).map(|_| spawn("only-one".to_string())).collect();
    let outs: Vec<Output> = same.into_iter().map(|t| t.join().unwrap()).collect();
    let won = outs.iter().filter(|o| o.status.code() == Some(0)).count();
    assert_eq!(won, 1, "exactly one create of a name wins");
    for o in outs.iter().filter(|o| o.status.code() != Some(0)) {
        assert_eq!(o.status.code(), Some(125));
        assert!(stderr(o).contains("already in use"), "{}", stderr(o));
    }
    let mut all: Vec<String> = (0..50).map(|i| format!("many-{i}")).collect();
    all.push("only-one".into());
    let mut args = vec!["rm"];
    args.extend(all.iter().map(String::as_str));
    ok(&args);
}

/// Starts `names` at once, each a `run -d` of a tiny workload, and checks each
/// printed its box's ID.
fn run_detached_at_once(names: &[String], workload: &[&str], limit: Duration) {
    let img = image();
    let e = env();
    let threads: Vec<_> = names
        .iter()
        .map(|name| {
            let mut cmd = Command::new(common::bin());
            cmd.args(["run", "-d", "-m", "64m", "--name", name, &img])
                .args(workload)
                .env("A3S_BOX_HOME", e.home.path())
                .env("A3S_BOX_KERNEL", &e.kernel);
            std::thread::spawn(move || common::output_within(&mut cmd, None, limit, String::new))
        })
        .collect();
    for t in threads {
        let out = t.join().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out).trim().len(), 64, "{}", stdout(&out));
    }
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn several_boxes_run_at_once_and_ps_lists_them_all() {
    ok(&["pull", "-q", &image()]);
    // Fifty by default. Inside the emulated harness, as many concurrent nested
    // boots crash or hang the harness VM's own kernel (QEMU's emulation of
    // nested SVM), so scripts/test asks for fewer there.
    let n: usize = std::env::var("A3S_TEST_PARALLEL_BOXES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let names: Vec<String> = (0..n).map(|i| format!("par-{i}")).collect();
    // Many boots at once take the emulated harness minutes, not seconds.
    run_detached_at_once(&names, &["/bin/busybox", "true"], Duration::from_secs(900));
    let listed = ok(&[
        "ps",
        "-a",
        "--filter",
        "name=par-",
        "--format",
        "{{.Names}} {{.Status}}",
    ]);
    assert_eq!(listed.lines().count(), n, "{listed}");
    for name in &names {
        let status = inspect(name, "{{.State.Status}} {{.State.ExitCode}}");
        // Each ran its command: none is left created or failed.
        assert!(
            status == "exited 0" || status == "running 0",
            "{name}: {status}"
        );
    }
    let mut args = vec!["rm", "-f"];
    args.extend(names.iter().map(String::as_str));
    ok(&args);
    assert_eq!(ok(&["ps", "-a", "--filter", "name=par-", "-q"]), "");
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn logs_rotate_keep_at_most_max_file_files_and_follow_to_the_end() {
    let img = image();
    let id = ok(&[
        "run",
        "-d",
        "--name",
        "chatty",
        "--log-opt",
        "max-size=2k",
        "--log-opt",
        "max-file=2",
        &img,
        "/bin/busybox",
        "sh",
        "-c",
        // Output of two streams is ordered only by time: a pause keeps the last
        // stdout line before the stderr one.
        "i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); done; sleep 1; echo to-stderr >&2; sleep 2",
    ]);
    // -f returns once the box has ended, with everything it wrote at the end.
    let followed = a3s(&["logs", "-f", "chatty"]);
    assert_eq!(followed.status.code(), Some(0));
    assert!(
        stdout(&followed).ends_with("line-299\n"),
        "{}",
        stdout(&followed)
    );
    assert_eq!(stderr(&followed), "to-stderr\n");
    assert_eq!(ok(&["logs", "--tail", "1", "chatty"]), "");
    let tail = a3s(&["logs", "--tail", "2", "chatty"]);
    assert_eq!(stdout(&tail), "line-299\n");
    let stamped = ok(&["logs", "-t", "--tail", "3", "chatty"]);
    assert!(
        stamped.starts_with("20") && stamped.contains("Z line-298\n"),
        "{stamped}"
    );
    let dir = home().join("boxes").join(id.trim());
    let logs: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("log.json"))
        .collect();
    assert_eq!(logs.len(), 2, "{logs:?}");
    for f in &logs {
        let len = std::fs::metadata(dir.join(f)).unwrap().len();
        assert!(len <= 2000, "{f} has {len} bytes");
    }
    ok(&["rm", "chatty"]);

    ok(&[
        "run",
        "--name",
        "silent",
        "--log-driver",
        "none",
        &img,
        "/bin/busybox",
        "echo",
        "hi",
    ]);
    let refused = a3s(&["logs", "silent"]);
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        stderr(&refused).contains("does not support reading"),
        "{}",
        stderr(&refused)
    );
    ok(&["rm", "silent"]);
    let bad = a3s(&["run", "--log-opt", "max-file=2", &img, "true"]);
    assert_eq!(bad.status.code(), Some(125));
    assert!(stderr(&bad).contains("max-size"), "{}", stderr(&bad));
}

/// Polls until `check` holds for the box's `inspect` line `template`.
fn wait_inspect(b: &str, template: &str, check: impl Fn(&str) -> bool, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = inspect(b, template);
        if check(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "box {b}: {what} never happened (last: {now})\n{}",
            common::box_logs(home(), 30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn on_failure_restarts_at_most_n_times_and_always_survives_its_process_dying() {
    let img = image();
    ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:3",
        &img,
        "/bin/busybox",
        "sh",
        "-c",
        "echo try >> /tries; exit 3",
    ]);
    let end = wait_inspect(
        "flaky",
        "{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}}",
        |s| s.starts_with("exited"),
        "the last failure",
    );
    assert_eq!(end, "exited 3 3");
    // Each end and restart is an event, kept for `events --since`.
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let actions = ok(&[
        "events",
        "--since",
        "0",
        "--until",
        &until.to_string(),
        "--filter",
        "container=flaky",
        "--format",
        "{{.Action}}",
    ]);
    let count = |a: &str| actions.lines().filter(|l| *l == a).count();
    assert_eq!(
        (
            count("create"),
            count("start"),
            count("die"),
            count("restart")
        ),
        (1, 4, 4, 3),
        "{actions}"
    );
    assert_eq!(
        inspect(
            "flaky",
            "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}}"
        ),
        "on-failure 3"
    );
    ok(&["rm", "flaky"]);

    ok(&[
        "run",
        "-d",
        "--name",
        "phoenix",
        "--restart",
        "always",
        "-u",
        "0",
        &img,
        "/bin/busybox",
        "sh",
        "-c",
        "echo up >> /runs; /bin/busybox sleep 1000 & echo $! > /sleep.pid; wait",
    ]);
    wait_status("phoenix", "running");
    // The main process dies (the sleep it waits for is killed) and the policy
    // brings it back. The kill comes a second after the exec has returned:
    // the main process is PID 1 of the box's namespace, so its end kills
    // every exec still running, this one too if it had not ended first.
    let out = a3s(&[
        "exec",
        "phoenix",
        "/bin/busybox",
        "sh",
        "-c",
        "while [ ! -s /sleep.pid ]; do /bin/busybox sleep 0.1; done; \
         (/bin/busybox sleep 1; kill -9 $(/bin/busybox cat /sleep.pid)) </dev/null >/dev/null 2>&1 &",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    wait_inspect("phoenix", "{{.RestartCount}}", |s| s == "1", "the restart");
    wait_status("phoenix", "running");
    // The same box again, with its layer: the main process ran twice in it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = a3s(&["exec", "phoenix", "/bin/busybox", "cat", "/runs"]);
        if stdout(&out) == "up\nup\n" {
            break;
        }
        assert!(Instant::now() < deadline, "{}", stdout(&out));
        std::thread::sleep(Duration::from_millis(300));
    }
    // stop is never undone by the policy.
    assert_eq!(ok(&["stop", "-t", "1", "phoenix"]), "phoenix\n");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        inspect("phoenix", "{{.State.Status}} {{.RestartCount}}"),
        "exited 1"
    );
    ok(&["rm", "phoenix"]);
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn the_monitor_brings_back_always_boxes_after_their_vmm_dies_but_not_stopped_ones() {
    let img = image();
    ok(&[
        "run",
        "-d",
        "--name",
        "keeper",
        "--restart",
        "always",
        &img,
        "/bin/busybox",
        "sleep",
        "1000",
    ]);
    ok(&[
        "run",
        "-d",
        "--name",
        "resting",
        "--restart",
        "unless-stopped",
        &img,
        "/bin/busybox",
        "sleep",
        "1000",
    ]);
    ok(&["stop", "-t", "1", "resting"]);
    // As after a reboot: every process of the box is gone.
    let pid: i32 = inspect("keeper", "{{.State.Pid}}").parse().unwrap();
    // SAFETY: kill takes plain integers.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    wait_inspect(
        "keeper",
        "{{.State.Status}}",
        |s| s == "exited",
        "the VMM's death noticed",
    );
    let started = ok(&["monitor", "--once"]);
    assert_eq!(started, "started keeper\n");
    wait_status("keeper", "running");
    assert_eq!(inspect("resting", "{{.State.Status}}"), "exited");
    ok(&["rm", "-f", "keeper", "resting"]);
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn health_goes_healthy_then_unhealthy_when_the_check_starts_failing() {
    let img = image();
    ok(&[
        "run",
        "-d",
        "--name",
        "checked",
        "-u",
        "0",
        "--health-cmd",
        "test -e /ok && echo fine",
        "--health-interval",
        "1s",
        "--health-retries",
        "2",
        "--health-timeout",
        "20s",
        &img,
        "/bin/busybox",
        "sh",
        "-c",
        "touch /ok; exec /bin/busybox sleep 1000",
    ]);
    wait_inspect(
        "checked",
        "{{.State.Health.Status}}",
        |s| s == "healthy",
        "healthy",
    );
    let row = ok(&["ps", "--filter", "name=checked", "--format", "{{.Status}}"]);
    assert!(row.trim_end().ends_with("(healthy)"), "{row}");
    let log = inspect(
        "checked",
        "{{range .State.Health.Log}}{{.ExitCode}}:{{.Output}}{{end}}",
    );
    assert!(log.contains("0:fine"), "{log}");
    ok(&["exec", "checked", "/bin/busybox", "rm", "/ok"]);
    wait_inspect(
        "checked",
        "{{.State.Health.Status}}",
        |s| s == "unhealthy",
        "unhealthy",
    );
    let streak: u32 = inspect("checked", "{{.State.Health.FailingStreak}}")
        .parse()
        .unwrap();
    assert!(streak >= 2, "{streak}");
    let listed = ok(&[
        "ps",
        "--filter",
        "health=unhealthy",
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(listed, "checked\n");
    ok(&["rm", "-f", "checked"]);
    let bad = a3s(&[
        "run",
        "--no-healthcheck",
        "--health-cmd",
        "true",
        &img,
        "true",
    ]);
    assert_eq!(bad.status.code(), Some(125));
    let bad = a3s(&[
        "run",
        "--health-interval",
        "soon",
        "--health-cmd",
        "true",
        &img,
        "true",
    ]);
    assert_eq!(bad.status.code(), Some(125));
    assert!(
        stderr(&bad).contains("--health-interval"),
        "{}",
        stderr(&bad)
    );
}
