//! End to end: a box's files as Docker's `diff`, `cp`, `export` and `commit`
//! show them, on stopped and running boxes, and copies that try to leave the
//! box. Ignored in a plain `cargo test`; `scripts/test` runs it inside
//! `scripts/kvm-harness`.

mod common;
mod common_registry;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common_registry::{stderr, stdout, BoxEnv, TempDir};

fn env() -> &'static BoxEnv {
    static ENV: OnceLock<BoxEnv> = OnceLock::new();
    ENV.get_or_init(|| BoxEnv::start("layer", common::guest_kernel()))
}

fn image() -> String {
    env().image()
}

fn home() -> &'static Path {
    env().home.path()
}

fn a3s_with(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let e = env();
    common::a3s_in(e.home.path(), &e.kernel, args, stdin)
}

fn a3s(args: &[&str]) -> Output {
    a3s_with(args, None)
}

fn ok(args: &[&str]) -> String {
    let out = a3s(args);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

/// `a3s-box args` must fail with 1 and say `words` on one line.
fn fails(args: &[&str], words: &str) {
    let out = a3s(args);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(words), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
}

/// The box's shell command `script` through `exec`.
fn sh(b: &str, script: &str) -> String {
    ok(&["exec", b, "/bin/busybox", "sh", "-c", script])
}

/// What every box of these tests does before it sleeps.
const CHANGES: &str = "echo changed > /etc/greeting; echo new > /etc/added; \
     rm -f /etc/greeting-symlink; mkdir -p /opt/app/sub; echo run > /opt/app/run; \
     chmod 750 /opt/app/run; echo x > /opt/app/sub/x; touch /opt/app/ready";

/// Starts box `name` running [`CHANGES`], and waits until they are made.
fn changed_box(name: &str) {
    let script = format!("{CHANGES}; exec /bin/busybox sleep 1000");
    ok(&[
        "run",
        "-d",
        "--name",
        name,
        "-u",
        "0",
        &image(),
        "/bin/busybox",
        "sh",
        "-c",
        &script,
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = a3s(&["exec", name, "/bin/busybox", "test", "-e", "/opt/app/ready"]);
        if out.status.code() == Some(0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "box {name} never made its changes\n{}",
            common::box_logs(home(), 30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn tar_names(data: &[u8]) -> Vec<String> {
    let mut ar = tar::Archive::new(data);
    ar.entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .map(|n| n.trim_end_matches('/').to_string())
        .collect()
}

const EXPECTED_DIFF: &str = "C /etc\nA /etc/added\nC /etc/greeting\nD /etc/greeting-symlink\n\
     A /opt\nA /opt/app\nA /opt/app/ready\nA /opt/app/run\nA /opt/app/sub\nA /opt/app/sub/x\n";

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn diff_lists_what_a_box_added_changed_and_deleted() {
    changed_box("differ");
    assert_eq!(ok(&["diff", "differ"]), EXPECTED_DIFF);
    ok(&["stop", "-t", "1", "differ"]);
    assert_eq!(
        ok(&["diff", "differ"]),
        EXPECTED_DIFF,
        "the same once stopped"
    );
    ok(&["rm", "differ"]);
}

/// Copies out of and into box `b`, running or not, with `host` for the
/// host's side; `tag` keeps the names of the two rounds apart.
fn copies_both_ways(b: &str, host: &Path, tag: &str) {
    let h = |n: &str| host.join(format!("{tag}-{n}"));
    let hs = |n: &str| h(n).to_str().unwrap().to_string();
    // Out: a file (mode kept) and a directory (by name, then by contents).
    ok(&["cp", &format!("{b}:/opt/app/run"), &hs("run")]);
    assert_eq!(std::fs::read_to_string(h("run")).unwrap(), "run\n");
    assert_eq!(mode(&h("run")), 0o750);
    ok(&["cp", &format!("{b}:/opt/app"), &hs("app")]);
    assert_eq!(
        std::fs::read_to_string(h("app").join("sub/x")).unwrap(),
        "x\n"
    );
    std::fs::create_dir(h("into")).unwrap();
    ok(&["cp", &format!("{b}:/opt/app/."), &hs("into")]);
    assert!(h("into").join("run").exists());
    // A file of the image, never changed by the box.
    ok(&[
        "cp",
        &format!("{b}:/etc/greeting-hardlink"),
        &hs("image-file"),
    ]);
    assert_eq!(
        std::fs::read_to_string(h("image-file")).unwrap(),
        "hello from layer 1\n"
    );
    // A tar stream on standard output.
    let out = a3s(&["cp", &format!("{b}:/opt/app"), "-"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let names = tar_names(&out.stdout);
    assert!(names.contains(&"app/sub/x".to_string()), "{names:?}");

    // In: a file keeps its mode and becomes root's; -a keeps its owner.
    let f = h("f");
    std::fs::write(&f, "from the host\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o741)).unwrap();
    std::os::unix::fs::lchown(&f, Some(1234), Some(1234)).unwrap();
    let inside = format!("/srv/{tag}-f");
    ok(&["cp", &hs("f"), &format!("{b}:/srv/")]);
    ok(&["cp", "-a", &hs("f"), &format!("{b}:/srv/{tag}-owned")]);
    // Into a directory only the image has: it comes up, the rest stays.
    ok(&["cp", &hs("f"), &format!("{b}:/etc/{tag}-new")]);
    // A directory, and a tar stream on standard input.
    let d = h("dir");
    std::fs::create_dir_all(d.join("deep")).unwrap();
    std::fs::write(d.join("deep/file"), "deep\n").unwrap();
    ok(&["cp", &hs("dir"), &format!("{b}:/srv/")]);
    let mut tar = tar::Builder::new(Vec::new());
    tar.append_dir_all(format!("{tag}-streamed"), &d).unwrap();
    let data = tar.into_inner().unwrap();
    let out = a3s_with(&["cp", "-", &format!("{b}:/srv")], Some(&data));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Read back through the same command, so a stopped box is checked too.
    let back = |p: &str, n: &str| {
        ok(&["cp", &format!("{b}:{p}"), &hs(n)]);
        h(n)
    };
    let got = back(&inside, "back");
    assert_eq!(std::fs::read_to_string(&got).unwrap(), "from the host\n");
    assert_eq!(mode(&got), 0o741);
    let m = std::fs::metadata(h("back")).unwrap();
    assert_eq!(m.uid(), 0, "copied out, the file is the copier's");
    let listing = back("/srv", "srv-listing");
    assert!(listing.join(format!("{tag}-dir/deep/file")).exists());
    assert!(listing.join(format!("{tag}-streamed/deep/file")).exists());
    let etc = back("/etc", "etc-listing");
    assert!(etc.join(format!("{tag}-new")).exists());
    assert!(etc.join("passwd").exists() || etc.join("greeting-hardlink").exists());

    // Out of the box's root: `..` stops at `/`, links resolve in the box.
    for (i, p) in [
        "/etc/../../etc/greeting-hardlink",
        "../../../etc/greeting-hardlink",
        "/srv/up/etc/greeting-hardlink",
        "/srv/dots/etc/greeting-hardlink",
    ]
    .into_iter()
    .enumerate()
    {
        let got = back(p, &format!("escape-{i}"));
        assert_eq!(
            std::fs::read_to_string(&got).unwrap(),
            "hello from layer 1\n",
            "{p}"
        );
    }
    let escaped = format!("{tag}-escaped-{}", std::process::id());
    ok(&["cp", &hs("f"), &format!("{b}:/srv/dots/{escaped}")]);
    ok(&["cp", &hs("f"), &format!("{b}:/srv/up/")]);
    assert!(
        !Path::new("/").join(&escaped).exists(),
        "a copy into a box wrote on the host"
    );
    let landed = back(&format!("/{escaped}"), "escaped-back");
    assert_eq!(std::fs::read_to_string(landed).unwrap(), "from the host\n");
    back(&format!("/{tag}-f"), "up-back");

    // A missing directory: Docker's message, exit 1, nothing written.
    fails(
        &["cp", &hs("f"), &format!("{b}:/no/such/dir/")],
        "no such directory",
    );
    fails(
        &["cp", &hs("f"), &format!("{b}:/no/such/file")],
        &format!("Could not find the file /no/such in box {b}"),
    );
    fails(
        &["cp", &format!("{b}:/nope"), &hs("nope")],
        &format!("Could not find the file /nope in box {b}"),
    );
    assert!(!h("nope").exists());
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn cp_copies_both_ways_on_running_and_stopped_boxes_and_stays_inside() {
    changed_box("copier");
    sh("copier", "ln -s / /srv/up; ln -s ../../../.. /srv/dots");
    let host = TempDir::new("e2e-layer-cp");
    copies_both_ways("copier", host.path(), "running");
    // What the guest wrote is the box's: root-owned, mode as copied.
    assert_eq!(
        sh(
            "copier",
            "stat -c '%a %u' /srv/running-f /srv/running-owned"
        ),
        "741 0\n741 1234\n"
    );
    ok(&["stop", "-t", "1", "copier"]);
    copies_both_ways("copier", host.path(), "stopped");
    // Started again, the box sees what was copied in while it was stopped,
    // and the image's files beside it.
    ok(&["start", "copier"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while a3s(&["exec", "copier", "/bin/busybox", "true"])
        .status
        .code()
        != Some(0)
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            common::box_logs(home(), 30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        sh(
            "copier",
            "cat /srv/stopped-f /srv/stopped-dir/deep/file; stat -c '%a %u' /srv/stopped-f /srv/stopped-owned; cat /etc/greeting-hardlink; ls /etc/stopped-new"
        ),
        "from the host\ndeep\n741 0\n741 1234\nhello from layer 1\n/etc/stopped-new\n"
    );
    ok(&["rm", "-f", "copier"]);
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn export_writes_the_merged_tree() {
    changed_box("exporter");
    ok(&["stop", "-t", "1", "exporter"]);
    let dir = TempDir::new("e2e-layer-export");
    let file = dir.path().join("box.tar");
    ok(&["export", "-o", file.to_str().unwrap(), "exporter"]);
    let data = std::fs::read(&file).unwrap();
    let names = tar_names(&data);
    for want in [
        "bin/busybox",
        "bin/sh",
        "etc/greeting",
        "etc/greeting-hardlink",
        "etc/added",
        "opt/app/sub/x",
        "srv",
    ] {
        assert!(names.contains(&want.to_string()), "{want}: {names:?}");
    }
    for gone in ["etc/greeting-symlink", "etc/old"] {
        assert!(!names.contains(&gone.to_string()), "{gone}: {names:?}");
    }
    let mut ar = tar::Archive::new(data.as_slice());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        match name.as_str() {
            "bin/sh" => {
                assert_eq!(e.header().entry_type(), tar::EntryType::Symlink);
                assert_eq!(&*e.link_name_bytes().unwrap(), b"busybox");
            }
            "opt/app/run" => assert_eq!(e.header().mode().unwrap(), 0o750),
            "etc/greeting" => {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                assert_eq!(s, "changed\n");
            }
            _ => {}
        }
    }
    // To standard output, the same archive.
    let out = a3s(&["export", "exporter"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(tar_names(&out.stdout), names);
    ok(&["rm", "exporter"]);
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn commit_makes_an_image_that_runs_and_pushes() {
    changed_box("committer");
    let target = format!("{}/tests/committed:1", env().registry.host());
    let id = ok(&[
        "commit",
        "-m",
        "add files",
        "-a",
        "Tester <t@example.com>",
        "-c",
        r#"CMD ["/bin/busybox", "cat", "/etc/added", "/etc/greeting"]"#,
        "-c",
        "ENV COMMITTED=yes",
        "committer",
        &target,
    ]);
    let id = id.trim();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    ok(&["rm", "-f", "committer"]);
    assert_eq!(ok(&["run", "--rm", &target]), "new\nchanged\n");
    let env_and_files = ok(&[
        "run",
        "--rm",
        "-u",
        "0",
        &target,
        "/bin/busybox",
        "sh",
        "-c",
        "echo $COMMITTED; ls /etc; cat /opt/app/sub/x",
    ]);
    assert!(env_and_files.starts_with("yes\n"), "{env_and_files}");
    assert!(
        !env_and_files.contains("greeting-symlink"),
        "{env_and_files}"
    );
    assert!(env_and_files.contains("added"), "{env_and_files}");
    // The config holds the history entry and the author.
    let config = std::fs::read_to_string(
        home()
            .join("images/blobs/sha256")
            .join(id.trim_start_matches("sha256:")),
    )
    .unwrap();
    assert!(config.contains(r#""comment":"add files""#), "{config}");
    assert!(config.contains("Tester <t@example.com>"), "{config}");
    let pushed = a3s(&["push", &target]);
    assert_eq!(pushed.status.code(), Some(0), "{}", stderr(&pushed));
    assert!(
        stdout(&pushed).contains("digest: sha256:"),
        "{}",
        stdout(&pushed)
    );
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn unknown_boxes_and_boxes_without_a_layer_fail_with_one_line() {
    fails(&["diff", "no-such-box"], "no such box: no-such-box");
    fails(
        &["export", "-o", "/dev/null", "no-such-box"],
        "no such box: no-such-box",
    );
    fails(
        &["cp", "no-such-box:/etc", "/tmp"],
        "no such box: no-such-box",
    );
    fails(&["commit", "no-such-box"], "no such box: no-such-box");
    let root = TempDir::new("e2e-layer-rootfs");
    std::fs::create_dir(root.path().join("etc")).unwrap();
    ok(&[
        "create",
        "--name",
        "plain",
        "--rootfs",
        root.path().to_str().unwrap(),
        "/bin/true",
    ]);
    for cmd in [
        &["diff", "plain"][..],
        &["export", "-o", "/dev/null", "plain"],
        &["commit", "plain"],
    ] {
        fails(cmd, "has no layer of its own");
    }
    // cp works on such a box: its directory is its root.
    let host = TempDir::new("e2e-layer-plain");
    let f = host.path().join("f");
    std::fs::write(&f, "p\n").unwrap();
    ok(&["cp", f.to_str().unwrap(), "plain:/etc/"]);
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/f")).unwrap(),
        "p\n"
    );
    ok(&["rm", "plain"]);
}
