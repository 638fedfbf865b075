//! End to end: `a3s-box run/exec/stop/kill` on a busybox root directory, booting
//! real boxes. Ignored in a plain `cargo test`; `scripts/test` runs them inside
//! `scripts/kvm-harness`.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

struct Env {
    home: PathBuf,
    kernel: PathBuf,
    rootfs: PathBuf,
}

/// A state directory, the guest kernel, and a busybox root, made once per run.
fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let kernel = common::guest_kernel();
        let base = std::env::temp_dir().join(format!("a3s-e2e-run-{}", std::process::id()));
        let rootfs = base.join("root");
        for d in ["bin", "etc", "tmp", "root", "home/user"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
            }
        }
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(rootfs.join("etc/group"), "root:x:0:\nuser:x:1000:\n").unwrap();
        std::fs::write(rootfs.join("not-executable"), "#!/bin/sh\necho no\n").unwrap();
        // A file next to the share, which nothing inside a box may reach.
        std::fs::write(base.join("OUTSIDE_MARKER"), "outside\n").unwrap();
        Env {
            home: base.join("home"),
            kernel,
            rootfs,
        }
    })
}

fn a3s(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let e = env();
    common::a3s_in(&e.home, &e.kernel, args, stdin)
}

fn run(cmd: &[&str]) -> Output {
    let root = env().rootfs.to_str().unwrap().to_owned();
    let mut args = vec!["run", "--rm", "--rootfs", &root];
    args.extend_from_slice(cmd);
    a3s(&args, None)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn state_of(id: &str) -> serde_json::Value {
    let p = env().home.join("boxes").join(id).join("state.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// Box `id` is recorded as exited with `code`.
fn assert_exited(id: &str, code: i32) {
    let st = state_of(id);
    assert_eq!(st["status"], "exited");
    assert_eq!(st["exit_code"], code);
}

fn detached(name: &str, cmd: &[&str]) -> String {
    detached_with(&[], name, cmd)
}

/// `run -d` with extra `flags` before the root.
fn detached_with(flags: &[&str], name: &str, cmd: &[&str]) -> String {
    let root = env().rootfs.to_str().unwrap().to_owned();
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--rootfs", &root]);
    args.extend_from_slice(cmd);
    let out = a3s(&args, None);
    assert_eq!(out.status.code(), Some(0));
    stdout(&out).trim().to_string()
}

/// Waits until `test TEST PATH` succeeds in box `name` (a process in it has
/// got as far as writing PATH); panics with `what` after a minute.
fn wait_in_box(name: &str, test: &str, path: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while a3s(&["exec", name, "test", test, path], None).status.code() != Some(0) {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn run_rm_prints_hello_and_leaves_no_box_behind() {
    let out = run(&["echo", "hello"]);
    assert_eq!(stdout(&out), "hello\n");
    assert_eq!(out.status.code(), Some(0));
    let boxes = env().home.join("boxes");
    let left: Vec<_> = std::fs::read_dir(&boxes)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("config.json").exists())
        .filter(|e| {
            let c: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.path().join("config.json")).unwrap())
                    .unwrap();
            c["argv"] == serde_json::json!(["echo", "hello"])
        })
        .collect();
    assert!(left.is_empty(), "--rm left the box record behind");
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn exit_codes_follow_docker() {
    assert_eq!(run(&["sh", "-c", "exit 3"]).status.code(), Some(3));
    assert_eq!(run(&["/no/such/command"]).status.code(), Some(127));
    assert_eq!(run(&["/not-executable"]).status.code(), Some(126));
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn stdin_is_piped_with_i() {
    let root = env().rootfs.to_str().unwrap().to_owned();
    let out = a3s(
        &["run", "--rm", "-i", "--rootfs", &root, "cat"],
        Some(b"piped through\n"),
    );
    assert_eq!(stdout(&out), "piped through\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn env_workdir_user_and_hostname_apply() {
    let env_file = env().home.with_file_name("envfile");
    std::fs::write(&env_file, "# comment\nFROM_FILE=yes\n").unwrap();
    let root = env().rootfs.to_str().unwrap().to_owned();
    let out = a3s(
        &[
            "run",
            "--rm",
            "-e",
            "FOO=bar",
            "--env-file",
            env_file.to_str().unwrap(),
            "-w",
            "/tmp",
            "-u",
            "1000",
            "--hostname",
            "boxhost",
            "--rootfs",
            &root,
            "sh",
            "-c",
            "echo $FOO $FROM_FILE $(pwd) $(id -u) $(hostname)",
        ],
        None,
    );
    assert_eq!(stdout(&out), "bar yes /tmp 1000 boxhost\n");
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn exec_joins_the_running_box_files_and_pid_namespace() {
    let id = detached(
        "exec-target",
        &["sh", "-c", "echo made > /tmp/made-by-main; exec sleep 1000"],
    );
    assert_eq!(state_of(&id)["status"], "running");
    // `run -d` returns once the main process has started, not once it has written
    // its file: wait for the write to finish before reading it from another process.
    wait_in_box(
        "exec-target",
        "-s",
        "/tmp/made-by-main",
        "the main process never wrote its file",
    );
    let out = a3s(&["exec", "exec-target", "cat", "/tmp/made-by-main"], None);
    assert_eq!(stdout(&out), "made\n");
    // The main process is PID 1 of the box's PID namespace, and exec sees it.
    let out = a3s(&["exec", "exec-target", "cat", "/proc/1/cmdline"], None);
    assert_eq!(stdout(&out), "sleep\u{0}1000\u{0}");
    let out = a3s(
        &["exec", "exec-target", "sh", "-c", "echo err >&2; exit 4"],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(out.status.code(), Some(4));
    let out = a3s(&["exec", "-i", "exec-target", "cat"], Some(b"to exec\n"));
    assert_eq!(stdout(&out), "to exec\n");
    assert_eq!(a3s(&["kill", "exec-target"], None).status.code(), Some(0));
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn back_to_back_and_concurrent_execs_all_succeed() {
    detached("many-execs", &["sleep", "1000"]);
    for i in 0..100 {
        let out = a3s(&["exec", "many-execs", "echo", &i.to_string()], None);
        assert_eq!(stdout(&out), format!("{i}\n"), "exec #{i}");
    }
    let handles: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let out = a3s(
                    &[
                        "exec",
                        "many-execs",
                        "sh",
                        "-c",
                        &format!("sleep 1; echo c{i}"),
                    ],
                    None,
                );
                (i, stdout(&out), out.status.code())
            })
        })
        .collect();
    for h in handles {
        let (i, out, code) = h.join().unwrap();
        assert_eq!((out, code), (format!("c{i}\n"), Some(0)));
    }
    a3s(&["kill", "many-execs"], None);
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn attach_feeds_the_main_process_and_returns_its_exit_code() {
    let id = detached_with(
        &["-i"],
        "attached",
        &[
            "sh",
            "-c",
            "read line; echo got:$line; echo err:$line >&2; exit 7",
        ],
    );
    let out = a3s(&["attach", "attached"], Some(b"hello\n"));
    assert_eq!(stdout(&out), "got:hello\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err:hello\n");
    assert_eq!(out.status.code(), Some(7));
    assert_exited(&id, 7);
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn an_exec_whose_box_is_killed_says_the_box_stopped() {
    detached("killed-under-exec", &["sleep", "1000"]);
    let e = env();
    let mut exec = Command::new(common::bin());
    exec.args([
        "exec",
        "killed-under-exec",
        "sh",
        "-c",
        "touch /tmp/exec-runs; exec sleep 1000",
    ])
    .env("A3S_BOX_HOME", &e.home)
    .env("A3S_BOX_KERNEL", &e.kernel);
    let waiter = std::thread::spawn(move || {
        common::output_within(&mut exec, None, common::COMMAND_LIMIT, String::new)
    });
    // Once the exec's process runs, kill the box under it.
    wait_in_box(
        "killed-under-exec",
        "-e",
        "/tmp/exec-runs",
        "the exec's process never started",
    );
    assert_eq!(
        a3s(&["kill", "killed-under-exec"], None).status.code(),
        Some(0)
    );
    let out = waiter.join().unwrap();
    assert_eq!(out.status.code(), Some(137));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("box killed-under-exec stopped while the command ran"),
        "{err}"
    );
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn stop_delivers_sigterm_to_the_workload() {
    let id = detached(
        "trapper",
        &[
            "sh",
            "-c",
            "trap 'exit 42' TERM; touch /tmp/trap-set; while true; do sleep 0.1; done",
        ],
    );
    // A signal that arrives before the trap is set is ignored by a PID 1.
    wait_in_box(
        "trapper",
        "-e",
        "/tmp/trap-set",
        "the workload never set its trap",
    );
    let out = a3s(&["stop", "trapper"], None);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "trapper\n");
    assert_exited(&id, 42);
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn stop_ends_a_workload_that_ignores_sigterm_after_the_grace_period() {
    let id = detached("stubborn", &["sleep", "1000"]);
    let t = Instant::now();
    let out = a3s(&["stop", "-t", "2", "stubborn"], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "stop returned before the grace period"
    );
    assert_exited(&id, 137);
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn nothing_outside_the_shared_root_is_reachable() {
    let script = "cat /../OUTSIDE_MARKER; cat /proc/self/root/../OUTSIDE_MARKER; \
                  ln -s / /tmp/rootlink; cat /tmp/rootlink/../OUTSIDE_MARKER; \
                  ln -s ../../.. /tmp/up; cat /tmp/up/OUTSIDE_MARKER; \
                  cd /; cd ..; cd ..; cat OUTSIDE_MARKER; ls / | grep -c OUTSIDE; true";
    let out = run(&["sh", "-c", script]);
    assert!(
        !stdout(&out).contains("outside"),
        "a file outside the share was read"
    );
    assert_eq!(stdout(&out).trim(), "0");
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn a_root_that_does_not_exist_fails_with_125() {
    let out = a3s(&["run", "--rm", "--rootfs", "/no/such/root", "true"], None);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/root"));
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn exec_into_a_box_that_does_not_exist_fails_with_1() {
    let out = a3s(&["exec", "no-such-box", "true"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such box"));
}

/// A pseudo-terminal pair with the given size: (master, slave).
fn open_pty(rows: u16, cols: u16) -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (0, 0);
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two fds into the out-parameters; the name pointer may be
    // null, and the termios and winsize pointers point at valid values or are null.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    assert_eq!(r, 0, "openpty failed");
    // SAFETY: both fds were just opened by openpty and are owned by nobody else.
    unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::fs::File::from_raw_fd(slave),
        )
    }
}

fn set_pty_size(master: &std::fs::File, rows: u16, cols: u16) {
    use std::os::fd::AsRawFd;
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    assert_eq!(r, 0);
}

/// `a3s-box ARGS` on the slave side of a pseudo-terminal, driven from the
/// master as a person at a terminal would.
struct Terminal {
    master: std::fs::File,
    child: std::process::Child,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Terminal {
    fn start(args: &[&str], rows: u16, cols: u16) -> Terminal {
        use std::io::Read;
        let (master, slave) = open_pty(rows, cols);
        let e = env();
        let mut cmd = Command::new(common::bin());
        cmd.args(args)
            .env("A3S_BOX_HOME", &e.home)
            .env("A3S_BOX_KERNEL", &e.kernel)
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
        // As under a terminal emulator: the client leads a session whose
        // controlling terminal is the pty, so a resize sends it SIGWINCH.
        // SAFETY: setsid and ioctl are async-signal-safe and touch no memory
        // of the parent.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        {
            let seen = seen.clone();
            let mut reader = master.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = reader.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    seen.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
        Terminal {
            master,
            child,
            seen,
        }
    }

    /// Types `keys` (`\r` is Enter).
    fn type_keys(&mut self, keys: &[u8]) {
        self.master.write_all(keys).unwrap();
    }

    /// Waits until the screen shows `needle` after everything seen so far,
    /// then forgets what was seen.
    fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            {
                let mut seen = self.seen.lock().unwrap();
                let text = String::from_utf8_lossy(&seen).into_owned();
                if let Some(at) = text.find(needle) {
                    let keep = text.as_bytes()[at + needle.len()..].to_vec();
                    *seen = keep;
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{needle:?} never appeared; terminal showed:\n{text}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn resize(&self, rows: u16, cols: u16) {
        set_pty_size(&self.master, rows, cols);
        // The client hears SIGWINCH and sends the new size from one thread while
        // another forwards keys: give the size a head start on the next keys.
        std::thread::sleep(Duration::from_millis(800));
    }

    fn exit_code(mut self) -> Option<i32> {
        let deadline = Instant::now() + common::COMMAND_LIMIT;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("the terminal session never ended");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn exec_it_gives_a_real_terminal_that_follows_resizes() {
    detached("tty-box", &["sleep", "1000"]);
    let mut t = Terminal::start(&["exec", "-it", "tty-box", "sh"], 33, 101);
    t.type_keys(b"tty; stty size\r");
    t.wait_for("/dev/pts/");
    t.wait_for("33 101");
    t.resize(40, 120);
    t.type_keys(b"stty size\r");
    t.wait_for("40 120");
    t.type_keys(b"exit 5\r");
    assert_eq!(t.exit_code(), Some(5));
    a3s(&["kill", "tty-box"], None);
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn run_it_gives_an_interactive_shell_where_ctrl_c_reaches_the_workload() {
    let root = env().rootfs.to_str().unwrap().to_owned();
    let mut t = Terminal::start(&["run", "--rm", "-it", "--rootfs", &root, "sh"], 24, 80);
    t.type_keys(b"echo $((6 * 7)); stty size\r");
    t.wait_for("42");
    t.wait_for("24 80");
    // Ctrl-C goes to the box's foreground process, not to the client: the
    // sleep dies of SIGINT and the shell carries on.
    // The output (not the echoed keys) shows the shell is about to start
    // `sleep`; a second more lets it, on the slowest emulated CPU.
    t.type_keys(b"echo sleep-$((40 + 2)); sleep 1000\r");
    t.wait_for("sleep-42");
    std::thread::sleep(Duration::from_secs(1));
    t.type_keys(b"\x03");
    t.type_keys(b"echo after-sleep-$?\r");
    t.wait_for("after-sleep-130");
    t.resize(30, 90);
    t.type_keys(b"stty size\r");
    t.wait_for("30 90");
    t.type_keys(b"exit 3\r");
    assert_eq!(t.exit_code(), Some(3));
}
