//! End to end: named, anonymous and bind volumes and tmpfs in real boxes of
//! the Debian test image (scripts/build-test-image). Ignored in a plain
//! `cargo test`; `scripts/test` runs it inside `scripts/kvm-harness`.

mod common;
mod common_debian;
mod common_registry;

use std::path::Path;
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common_debian::{Loaded, IMAGE};
use common_registry::{stderr, stdout};

fn env() -> &'static Loaded {
    static ENV: OnceLock<Loaded> = OnceLock::new();
    ENV.get_or_init(|| Loaded::new("e2e-volume-home"))
}

fn a3s(args: &[&str]) -> Output {
    env().a3s(args)
}

fn ok(args: &[&str]) -> String {
    env().ok(args)
}

fn home() -> &'static Path {
    env().home.path()
}

/// Names `volume ls -q` lists.
fn volumes() -> Vec<String> {
    ok(&["volume", "ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// Runs `sh -c script` in box `b` until its output contains `want`.
fn exec_until(b: &str, script: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = a3s(&["exec", b, "sh", "-c", script]);
        let text = format!("{}{}", stdout(&out), stderr(&out));
        if text.contains(want) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{b}: {script:?} never printed {want:?} (last: {text:?})"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A detached box of the image that sleeps, with `flags`.
fn sleeper(name: &str, flags: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--name", name, "-m", "256m"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[IMAGE, "sleep", "1000"]);
    ok(&args).trim().to_string()
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn a_named_volume_carries_data_between_boxes_and_stays_while_in_use() {
    // The first box makes the volume by naming it, writes and goes.
    ok(&[
        "run",
        "--rm",
        "-v",
        "shared:/data",
        IMAGE,
        "sh",
        "-c",
        "echo from-the-first > /data/note",
    ]);
    assert!(volumes().contains(&"shared".to_string()));
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&["volume", "inspect", "shared"])).unwrap();
    assert_eq!(shown[0]["Name"], "shared");
    assert_eq!(shown[0]["Driver"], "local");
    assert_eq!(shown[0]["Scope"], "local");
    let mountpoint = shown[0]["Mountpoint"].as_str().unwrap().to_string();
    assert_eq!(
        std::fs::read_to_string(Path::new(&mountpoint).join("note")).unwrap(),
        "from-the-first\n"
    );

    // A second box reads it; two running boxes see each other's writes.
    // SYS_ADMIN, so that the box itself may try to remount the volume.
    let reader = sleeper(
        "reader",
        &["-v", "shared:/data:ro", "--cap-add", "SYS_ADMIN"],
    );
    assert_eq!(reader.len(), 64, "{reader}");
    sleeper(
        "writer",
        &["--mount", "type=volume,source=shared,target=/data"],
    );
    assert_eq!(
        ok(&["exec", "reader", "cat", "/data/note"]),
        "from-the-first\n"
    );
    ok(&["exec", "writer", "sh", "-c", "echo live > /data/live"]);
    exec_until("reader", "cat /data/live", "live");

    // :ro: a write fails, and still fails after the box remounts the
    // volume read-write itself: the host's share refuses it.
    let out = a3s(&["exec", "reader", "sh", "-c", "echo x > /data/x"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    // perl-base is Essential in Debian: its syscall() makes the mount call
    // (x86_64's number 165) with MS_REMOUNT and no MS_RDONLY.
    let remount = r#"
        my ($source, $target) = ("none", "/data");
        my $r = syscall(165, $source, $target, 0, 32, 0);
        print $r == 0 ? "remounted read-write\n" : "remount failed: $!\n";
        if (open(my $f, ">", "/data/x")) { print "written\n" } else { print "write failed: $!\n" }
    "#;
    let said = ok(&["exec", "reader", "perl", "-e", remount]);
    assert!(said.contains("remounted read-write"), "{said}");
    assert!(
        said.contains("write failed: Read-only file system"),
        "{said}"
    );
    assert!(!Path::new(&mountpoint).join("x").exists());

    // inspect shows the mount as Docker does.
    let shown: serde_json::Value = serde_json::from_str(&ok(&["inspect", "reader"])).unwrap();
    let m = &shown[0]["Mounts"][0];
    assert_eq!(m["Type"], "volume");
    assert_eq!(m["Name"], "shared");
    assert_eq!(m["Destination"], "/data");
    assert_eq!(m["Source"], mountpoint.as_str());
    assert_eq!(m["RW"], false);
    assert_eq!(m["Driver"], "local");

    // In use: not removed, not pruned; an unused one is pruned with -a.
    let out = a3s(&["volume", "rm", "shared"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("a3s-box: remove shared: volume is in use - [") && err.contains(&reader),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    ok(&["volume", "create", "spare"]);
    let pruned = ok(&["volume", "prune", "-f", "-a"]);
    assert!(
        pruned.contains("spare") && !pruned.contains("shared"),
        "{pruned}"
    );
    let left = volumes();
    assert!(left.contains(&"shared".to_string()) && !left.contains(&"spare".to_string()));
    assert_eq!(
        ok(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            "dangling=false",
            "--filter",
            "name=sha"
        ]),
        "shared\n"
    );

    // Stopped boxes still hold it, as Docker's do; removed, they let go.
    ok(&["stop", "-t", "1", "reader", "writer"]);
    assert_eq!(a3s(&["volume", "rm", "shared"]).status.code(), Some(1));
    ok(&["rm", "reader", "writer"]);
    assert_eq!(ok(&["volume", "rm", "shared"]), "shared\n");
    assert!(!Path::new(&mountpoint).exists());
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn a_bind_mount_follows_the_host_and_cannot_be_escaped() {
    let base = home().join("bind-test");
    let src = base.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(base.join("secret")).unwrap();
    std::fs::write(base.join("secret/secret.txt"), "host-secret").unwrap();
    std::fs::write(src.join("file"), "in-the-bind\n").unwrap();
    std::os::unix::fs::symlink("../secret/secret.txt", src.join("up")).unwrap();
    std::os::unix::fs::symlink(base.join("secret/secret.txt"), src.join("abs")).unwrap();
    std::os::unix::fs::symlink("../secret", src.join("updir")).unwrap();
    let made = base.join("made-by-v");
    let spec = format!("{}:/mnt", src.display());
    let made_spec = format!("{}:/made", made.display());
    sleeper("binder", &["-v", &spec, "-v", &made_spec]);
    assert!(made.is_dir(), "-v makes a missing bind source");
    assert_eq!(ok(&["exec", "binder", "cat", "/mnt/file"]), "in-the-bind\n");

    // A change on the host while the box runs is seen in it.
    std::fs::write(src.join("new"), "added-on-the-host\n").unwrap();
    exec_until("binder", "cat /mnt/new", "added-on-the-host");
    std::fs::write(src.join("file"), "changed-on-the-host\n").unwrap();
    exec_until("binder", "cat /mnt/file", "changed-on-the-host");
    // And the box's writes reach the host.
    ok(&[
        "exec",
        "binder",
        "sh",
        "-c",
        "echo from-the-box > /made/out",
    ]);
    assert_eq!(
        std::fs::read_to_string(made.join("out")).unwrap(),
        "from-the-box\n"
    );

    // Nothing outside the source is reachable: `..` is the box's root and
    // links resolve in the box.
    let reads = [
        "cat /mnt/up",
        "cat /mnt/abs",
        "cat /mnt/updir/secret.txt",
        "cat /mnt/../secret/secret.txt",
        "cd /mnt && cd .. && cat secret/secret.txt",
    ];
    for t in reads {
        let out = a3s(&["exec", "binder", "sh", "-c", t]);
        assert_ne!(out.status.code(), Some(0), "{t}");
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(!text.contains("host-secret"), "{t}: {text}");
    }
    let listings = [
        "ls -a /mnt/..",
        "ls /mnt/updir/",
        "python3 -c 'import os; fd=os.open(\"/mnt\", os.O_RDONLY); print(os.listdir(os.open(\"..\", os.O_RDONLY, dir_fd=fd)))'",
    ];
    for t in listings {
        let out = a3s(&["exec", "binder", "sh", "-c", t]);
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            !text.contains("made-by-v") && !text.contains("secret"),
            "{t}: {text}"
        );
    }
    let root = ok(&["exec", "binder", "ls", "/mnt/.."]);
    assert!(root.contains("etc") && root.contains("usr"), "{root}");
    // A link the box makes in the bind is a link on the host, not a way out.
    ok(&[
        "exec",
        "binder",
        "ln",
        "-s",
        "/etc/hostname",
        "/mnt/boxlink",
    ]);
    assert_eq!(
        std::fs::read_link(src.join("boxlink")).unwrap(),
        Path::new("/etc/hostname")
    );
    let shown: serde_json::Value = serde_json::from_str(&ok(&["inspect", "binder"])).unwrap();
    let mounts = shown[0]["Mounts"].as_array().unwrap();
    let m = mounts.iter().find(|m| m["Destination"] == "/mnt").unwrap();
    assert_eq!(m["Type"], "bind");
    assert_eq!(m["Source"], src.to_str().unwrap());
    assert_eq!(m["RW"], true);
    assert_eq!(m["Propagation"], "rprivate");
    ok(&["rm", "-f", "binder"]);
    assert!(src.join("file").exists(), "rm leaves a bind source alone");
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn tmpfs_mounts_are_empty_and_have_their_size_and_mode() {
    let said = ok(&[
        "run",
        "--rm",
        "--tmpfs",
        "/scratch:size=16m",
        "--mount",
        "type=tmpfs,destination=/private,tmpfs-size=8m,tmpfs-mode=700",
        IMAGE,
        "sh",
        "-c",
        "ls -A /scratch | wc -l; df -k /scratch | tail -n 1; stat -c %a /scratch; \
         df -k /private | tail -n 1; stat -c %a /private; \
         grep ' /scratch ' /proc/mounts",
    ]);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines[0].trim(), "0", "{said}");
    let blocks = |line: &str| line.split_whitespace().nth(1).unwrap().to_string();
    assert!(lines[1].starts_with("tmpfs"), "{said}");
    assert_eq!(blocks(lines[1]), "16384", "{said}");
    assert_eq!(lines[2], "1777", "{said}");
    assert_eq!(blocks(lines[3]), "8192", "{said}");
    assert_eq!(lines[4], "700", "{said}");
    // Docker's defaults for a tmpfs.
    let opts = lines[5].split_whitespace().nth(3).unwrap();
    for o in ["nosuid", "nodev", "noexec"] {
        assert!(opts.split(',').any(|x| x == o), "{said}");
    }
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn image_volumes_are_seeded_anonymous_volumes_and_rm_v_removes_them() {
    let image = "localhost/a3s-test/with-volume:1";
    ok(&["create", "--name", "volbase", IMAGE, "true"]);
    ok(&["commit", "-c", "VOLUME /var/www/html", "volbase", image]);
    ok(&["rm", "volbase"]);
    let before = volumes();

    // The image's VOLUME is an anonymous volume with the image's files, and
    // an empty named volume over an image directory gets its files too.
    let said = ok(&[
        "run",
        "--name",
        "seeded",
        "-v",
        "nginx-conf:/etc/nginx",
        image,
        "sh",
        "-c",
        "ls /var/www/html; test -f /etc/nginx/nginx.conf && echo conf-seeded; \
         echo added > /var/www/html/added",
    ]);
    assert!(said.contains("index.nginx-debian.html"), "{said}");
    assert!(said.contains("conf-seeded"), "{said}");
    let shown: serde_json::Value = serde_json::from_str(&ok(&["inspect", "seeded"])).unwrap();
    let mounts = shown[0]["Mounts"].as_array().unwrap().clone();
    let anon = mounts
        .iter()
        .find(|m| m["Destination"] == "/var/www/html")
        .unwrap_or_else(|| panic!("{mounts:?}"));
    assert_eq!(anon["Type"], "volume");
    let anon_name = anon["Name"].as_str().unwrap().to_string();
    assert_eq!(anon_name.len(), 64, "{anon_name}");
    let data = Path::new(anon["Source"].as_str().unwrap()).to_path_buf();
    assert!(data.join("index.nginx-debian.html").is_file());
    assert_eq!(
        std::fs::read_to_string(data.join("added")).unwrap(),
        "added\n"
    );
    let anon_listed = ok(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        "label=com.docker.volume.anonymous",
    ]);
    assert!(anon_listed.contains(&anon_name), "{anon_listed}");
    assert!(!anon_listed.contains("nginx-conf"), "{anon_listed}");

    // A second box of the image gets a volume of its own, seeded afresh.
    ok(&["run", "--name", "seeded2", image, "true"]);
    let shown: serde_json::Value = serde_json::from_str(&ok(&["inspect", "seeded2"])).unwrap();
    let anon2 = shown[0]["Mounts"][0]["Name"].as_str().unwrap().to_string();
    assert_ne!(anon2, anon_name);
    let data2 = Path::new(shown[0]["Mounts"][0]["Source"].as_str().unwrap()).to_path_buf();
    assert!(data2.join("index.nginx-debian.html").is_file());
    assert!(!data2.join("added").exists());

    // run --rm takes its anonymous volume with the box, as Docker's does.
    let with_both = volumes();
    ok(&["run", "--rm", image, "true"]);
    assert_eq!(volumes(), with_both);

    // rm -v takes the box's anonymous volume; plain rm keeps it, and named ones stay.
    ok(&["rm", "-v", "seeded2"]);
    assert!(!volumes().contains(&anon2));
    assert!(!data2.exists());
    ok(&["rm", "seeded"]);
    let left = volumes();
    assert!(left.contains(&anon_name) && left.contains(&"nginx-conf".to_string()));
    // system-prune --volumes takes unused anonymous volumes only.
    let pruned = ok(&["system-prune", "-f", "--volumes"]);
    assert!(pruned.contains(&anon_name), "{pruned}");
    let left = volumes();
    assert!(!left.contains(&anon_name));
    assert!(left.contains(&"nginx-conf".to_string()));
    ok(&["volume", "rm", "nginx-conf"]);
    assert_eq!(volumes(), before);
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn bad_mount_flags_fail_with_125_and_make_nothing() {
    let boxes = ok(&["ps", "-a", "-q"]);
    let vols = volumes();
    let cases: &[(&[&str], &str)] = &[
        (&["-v", "relative/dir"], "mount path must be absolute"),
        (&["-v", "/a3s-src:/x:rw,ro"], "invalid mode: rw,ro"),
        (&["-v", "made1:/x:bogus"], "invalid mode: bogus"),
        (&["-v", "made1:relative"], "mount path must be absolute"),
        (&["--mount", "type=nfs,target=/x"], "mount type unknown"),
        (
            &["--mount", "type=bind,source=/tmp,target=/x,colour=red"],
            "unexpected key 'colour' in 'colour=red'",
        ),
        (
            &["--mount", "type=bind,source=/a3s-no-such-dir,target=/x"],
            "bind source path does not exist: /a3s-no-such-dir",
        ),
        (
            &["--mount", "type=volume,source=made1,target="],
            "target is required",
        ),
        (
            &["-v", "made1:/dup", "-v", "made2:/dup/"],
            "Duplicate mount point: /dup",
        ),
        (&["--tmpfs", "/t:size=lots"], "invalid size: lots"),
        (&["--volumes-from", "no-such-box-a3s"], "no such box"),
    ];
    for (flags, want) in cases {
        for verb in ["run", "create"] {
            let mut args = vec![verb, "--name", "never-made"];
            args.extend_from_slice(flags);
            args.extend_from_slice(&[IMAGE, "true"]);
            let out = a3s(&args);
            assert_eq!(out.status.code(), Some(125), "{args:?}");
            let err = stderr(&out);
            assert!(err.contains(want), "{args:?}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        }
    }
    assert_eq!(ok(&["ps", "-a", "-q"]), boxes, "no box was made");
    assert_eq!(volumes(), vols, "no volume was made");
    assert!(!Path::new("/a3s-src").exists());
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn volumes_from_shares_another_boxs_volumes() {
    ok(&["volume", "create", "--label", "team=web", "from-data"]);
    let listed = ok(&[
        "volume",
        "ls",
        "--filter",
        "label=team=web",
        "--format",
        "{{.Name}} {{.Driver}} {{.Labels}}",
    ]);
    assert_eq!(listed, "from-data local team=web\n");
    ok(&[
        "create",
        "--name",
        "owner",
        "-v",
        "from-data:/data",
        IMAGE,
        "true",
    ]);
    let said = ok(&[
        "run",
        "--rm",
        "--volumes-from",
        "owner:ro",
        IMAGE,
        "sh",
        "-c",
        "{ echo hi > /data/x; } 2>&1; test -d /data && echo has-data",
    ]);
    assert!(said.contains("has-data"), "{said}");
    assert!(said.contains("Read-only file system"), "{said}");
    ok(&["rm", "owner"]);
    ok(&["volume", "rm", "from-data"]);
}
