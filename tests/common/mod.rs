//! Helpers shared by the end-to-end suites.
#![allow(dead_code)] // each suite uses its own subset

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long any one command of an end-to-end test may take before the test fails.
/// Boxes boot in a few seconds even in the nested harness; a command still running
/// after this long is hung, and the test says so (with what it printed) instead of
/// holding the whole suite until the harness's own timeout.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(180);

/// Runs `cmd` to completion like `Command::output`, feeding it `stdin` if given,
/// but kills it and panics once `limit` has passed. The panic message holds what the
/// command printed so far and whatever `diagnose` adds (logs of the box, say).
pub fn output_within(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    limit: Duration,
    diagnose: impl FnOnce() -> String,
) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn the command under test");
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let out_rx = reader(child.stdout.take().unwrap());
    let err_rx = reader(child.stderr.take().unwrap());
    let deadline = Instant::now() + limit;
    let status: Option<ExitStatus> = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // A process the command left behind (a detached shim) may hold the pipes open;
    // take what arrived instead of waiting for it.
    let collect = |rx: mpsc::Receiver<Vec<u8>>| {
        rx.recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| b"<output still held open by another process>".to_vec())
    };
    let stdout = collect(out_rx);
    let stderr = collect(err_rx);
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{cmd:?} was still running after {limit:?} and was killed\n--- stdout\n{}\n--- stderr\n{}\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr),
            diagnose()
        ),
    }
}

fn reader(mut r: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// The last `lines` lines of every `*.log` file under each box directory of `home`.
pub fn box_logs(home: &Path, lines: usize) -> String {
    let mut text = String::new();
    let Ok(boxes) = std::fs::read_dir(home.join("boxes")) else {
        return text;
    };
    for b in boxes.flatten() {
        let Ok(files) = std::fs::read_dir(b.path()) else {
            continue;
        };
        for f in files.flatten() {
            let p = f.path();
            if p.extension().is_some_and(|e| e == "log") {
                let body = std::fs::read_to_string(&p).unwrap_or_default();
                let all: Vec<&str> = body.lines().collect();
                let tail = &all[all.len().saturating_sub(lines)..];
                text.push_str(&format!("--- {}\n{}\n", p.display(), tail.join("\n")));
            }
        }
    }
    text
}

/// The guest kernel the boxes boot, which must have been built already.
pub fn guest_kernel() -> std::path::PathBuf {
    let k = a3s_box::paths::kernel(None);
    assert!(
        k.exists(),
        "no guest kernel at {} — run scripts/build-kernel first",
        k.display()
    );
    k
}

/// The `a3s-box` binary under test: `$A3S_BOX_BIN` when set (`scripts/test` points
/// it at the release build, which is what users run and which boots far faster as
/// a guest's `/init` than a debug build), else the one cargo built for this test.
pub fn bin() -> std::path::PathBuf {
    std::env::var_os("A3S_BOX_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_a3s-box").into())
}

/// Runs `a3s-box args` against the state directory `home` and guest `kernel`,
/// bounded by [`COMMAND_LIMIT`] (a hang fails with the boxes' logs), and echoes
/// what it printed into the test's output.
pub fn a3s_in(home: &Path, kernel: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env("A3S_BOX_HOME", home)
        .env("A3S_BOX_KERNEL", kernel);
    let out = output_within(&mut cmd, stdin, COMMAND_LIMIT, || box_logs(home, 40));
    eprintln!(
        "a3s-box {args:?} -> {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
