//! Managing boxes and the host without a VM: `events`, `container-update`,
//! `system-prune`, `info` and `version` on boxes that are created, never started
//! (or marked as exited or running in their records).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_a3s-box");

/// A state directory of its own, with a root directory and a file `create`
/// takes for a kernel (it checks only the ELF magic; nothing boots).
struct Home(PathBuf);

impl Home {
    fn new(name: &str) -> Home {
        let d = std::env::temp_dir().join(format!("a3s-cli-manage-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("root")).unwrap();
        std::fs::write(d.join("vmlinux"), b"\x7fELF\x02\x01\x01").unwrap();
        Home(d)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("A3S_BOX_HOME", &self.0)
            .env("A3S_BOX_KERNEL", self.0.join("vmlinux"))
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// `a3s-box args`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Creates a box of the root directory; its ID.
    fn create(&self, name: &str) -> String {
        let root = self.0.join("root");
        self.ok(&[
            "create",
            "--name",
            name,
            "--rootfs",
            root.to_str().unwrap(),
            "true",
        ])
        .trim()
        .to_string()
    }

    /// Rewrites box `id`'s state record.
    fn set_state(&self, id: &str, state: serde_json::Value) {
        let path = self.0.join("boxes").join(id).join("state.json");
        std::fs::write(path, state.to_string()).unwrap();
    }

    fn exists(&self, id: &str) -> bool {
        self.0.join("boxes").join(id).join("config.json").exists()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// When this process started, as the store records a shim's start: a box whose
/// "shim" is this test process counts as running.
fn own_start() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

fn running_state() -> serde_json::Value {
    serde_json::json!({
        "status": "running", "pid": std::process::id(), "pid_start": own_start(),
        "started": 1, "finished": null, "exit_code": null, "error": null,
    })
}

fn exited_state(code: i32) -> serde_json::Value {
    serde_json::json!({
        "status": "exited", "pid": null, "started": 1, "finished": 2,
        "exit_code": code, "error": null,
    })
}

fn now_secs() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .saturating_add(1)
        .to_string()
}

#[test]
fn events_list_what_happened_to_boxes_with_their_names() {
    let h = Home::new("events");
    let id = h.create("first");
    h.ok(&["rename", "first", "second"]);
    h.ok(&["rm", "second"]);
    let out = h.ok(&["events", "--since", "0", "--until", &now_secs()]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for (line, (action, name)) in lines.iter().zip([
        ("create", "first"),
        ("rename", "second"),
        ("destroy", "second"),
    ]) {
        assert!(
            line.contains(&format!(" container {action} {id} (")),
            "{line}"
        );
        assert!(line.contains(&format!("name={name}")), "{line}");
    }
    assert!(lines[1].contains("oldName=/first"), "{}", lines[1]);
    // The first field is the time, as Docker prints it.
    assert!(lines[0].starts_with("20") && lines[0].split(' ').next().unwrap().ends_with('Z'));

    let json = h.ok(&[
        "events",
        "--since",
        "0",
        "--until",
        &now_secs(),
        "--filter",
        "event=destroy",
        "--format",
        "{{json .}}",
    ]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["Action"], "destroy");
    assert_eq!(v["Actor"]["ID"], id.as_str());
    assert_eq!(v["Actor"]["Attributes"]["name"], "second");

    let names = h.ok(&[
        "events",
        "--since",
        "0",
        "--until",
        &now_secs(),
        "--filter",
        "container=first",
        "--filter",
        "container=second",
        "--format",
        "{{.Action}}:{{.Actor.Attributes.name}}",
    ]);
    assert_eq!(names, "create:first\nrename:second\ndestroy:second\n");
}

#[test]
fn events_without_until_follow_new_ones() {
    let h = Home::new("follow");
    h.create("before");
    let mut child = h
        .cmd(&[
            "events",
            "--format",
            "{{.Action}} {{.Actor.Attributes.name}}",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // Events from before the follower started are not printed; give it a moment
    // to open the log, then make a new one.
    std::thread::sleep(Duration::from_millis(500));
    h.create("after");
    let line = rx.recv_timeout(Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(line.unwrap(), "create after");
}

#[test]
fn a_bad_event_filter_is_one_line_and_exit_1() {
    let h = Home::new("badfilter");
    let out = h.run(&[
        "events",
        "--since",
        "0",
        "--until",
        "0s",
        "--filter",
        "colour=red",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "a3s-box: invalid filter 'colour'\n");
}

#[test]
fn container_update_changes_the_restart_policy_and_resources() {
    let h = Home::new("update");
    h.create("web");
    assert_eq!(
        h.ok(&["container-update", "--restart", "always", "web"]),
        "web\n"
    );
    let policy = h.ok(&[
        "inspect",
        "--format",
        "{{.HostConfig.RestartPolicy.Name}}",
        "web",
    ]);
    assert_eq!(policy.trim(), "always");
    h.ok(&[
        "container-update",
        "--restart",
        "on-failure:3",
        "--cpus",
        "2",
        "-m",
        "1g",
        "web",
    ]);
    let got = h.ok(&[
        "inspect",
        "--format",
        "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}} {{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}",
        "web",
    ]);
    assert_eq!(got.trim(), "on-failure 3 2000000000 1073741824");

    // Refused as run refuses them, and the record is left as it was.
    for (flags, says) in [
        (&["--cpus", "0"][..], "0 vCPUs"),
        (&["--memory", "1k"][..], "too small"),
        (&["--restart", "sometimes"][..], "invalid restart policy"),
        (&[][..], "one or more flags"),
    ] {
        let mut args = vec!["container-update"];
        args.extend_from_slice(flags);
        args.push("web");
        let out = h.run(&args);
        assert_eq!(out.status.code(), Some(1), "{flags:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{flags:?}: {}",
            text(&out.stderr)
        );
    }
    assert!(
        h.run(&["container-update", "--cpus", "1", "nosuchbox"])
            .status
            .code()
            == Some(1)
    );
}

#[test]
fn container_update_of_a_running_box_says_when_the_change_applies() {
    let h = Home::new("update-running");
    let id = h.create("busy");
    h.set_state(&id, running_state());
    let out = h.run(&["container-update", "--memory", "768m", "busy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("next start"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let mem = h.ok(&["inspect", "--format", "{{.HostConfig.Memory}}", "busy"]);
    assert_eq!(mem.trim(), (768u64 << 20).to_string());
    // A restart policy alone changes nothing the running VM has: no warning.
    let out = h.run(&["container-update", "--restart", "unless-stopped", "busy"]);
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn system_prune_removes_stopped_boxes_only() {
    let h = Home::new("prune");
    let created = h.create("created");
    let exited = h.create("exited");
    h.set_state(&exited, exited_state(3));
    let running = h.create("running");
    h.set_state(&running, running_state());

    // No terminal and no -f: it refuses rather than wait for an answer.
    let out = h.run(&["system-prune"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("-f"), "{}", text(&out.stderr));
    assert!(h.exists(&created));

    let out = h.ok(&["system-prune", "-f"]);
    assert!(out.starts_with("Deleted Containers:\n"), "{out}");
    assert!(out.contains(&format!("\n{created}\n")), "{out}");
    assert!(out.contains(&format!("\n{exited}\n")), "{out}");
    assert!(!out.contains(&running), "{out}");
    assert!(out
        .trim_end()
        .lines()
        .last()
        .unwrap()
        .starts_with("Total reclaimed space: "));
    assert!(!h.exists(&created) && !h.exists(&exited));
    assert!(h.exists(&running));

    // --volumes takes anonymous volumes only: a named one stays.
    assert_eq!(h.ok(&["volume", "create", "kept"]), "kept\n");
    let out = h.run(&["system-prune", "-af", "--volumes"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "Total reclaimed space: 0B\n");
    assert_eq!(h.ok(&["volume", "ls", "-q"]), "kept\n");
}

#[test]
fn info_counts_boxes_and_names_the_state_directory() {
    let h = Home::new("info");
    h.create("one");
    let two = h.create("two");
    h.set_state(&two, running_state());
    let out = h.ok(&["info"]);
    for want in [
        " Containers: 2\n",
        "  Running: 1\n",
        "  Paused: 0\n",
        "  Stopped: 1\n",
        " Images: 0\n",
        " Storage Driver: overlay\n",
        " Logging Driver: json-file\n",
        " Cgroup Version: 2",
        " Kernel Version: ",
        " Architecture: ",
        " CPUs: ",
        " Total Memory: ",
        &format!(" A3S Box Root Dir: {}\n", h.0.display()),
    ] {
        assert!(out.contains(want), "{want:?} in\n{out}");
    }
    let v = h.ok(&[
        "info",
        "--format",
        "{{.Containers}} {{.ContainersRunning}} {{.Driver}}",
    ]);
    assert_eq!(v, "2 1 overlay\n");
    let json: serde_json::Value =
        serde_json::from_str(&h.ok(&["info", "--format", "json"])).unwrap();
    assert_eq!(json["DockerRootDir"], h.0.to_str().unwrap());
    assert!(json["Hypervisor"]["Available"].is_boolean());
    assert!(Path::new(json["GuestKernel"]["Path"].as_str().unwrap()).ends_with("vmlinux"));
}

#[test]
fn version_prints_the_version_first_and_takes_a_format() {
    let h = Home::new("version");
    let want = env!("CARGO_PKG_VERSION");
    let out = h.ok(&["version"]);
    assert_eq!(out.lines().next(), Some(format!("a3s-box {want}").as_str()));
    assert!(
        out.contains("\nClient:\n") && out.contains("\nServer: A3S Box\n"),
        "{out}"
    );
    assert_eq!(
        h.ok(&["version", "--format", "{{.Client.Version}}"]),
        format!("{want}\n")
    );
    let v: serde_json::Value =
        serde_json::from_str(&h.ok(&["version", "--format", "json"])).unwrap();
    assert_eq!(v["Server"]["Version"], want);
    assert!(v["Client"]["RustVersion"]
        .as_str()
        .unwrap()
        .starts_with("rustc "));
}
