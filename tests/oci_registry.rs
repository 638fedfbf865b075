//! The image commands against a real registry (`docker-registry` 2.8) on loopback:
//! plain HTTP, TLS with basic auth, tampered and interrupted transfers, indexes.

mod common_registry;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use a3s_box::oci::reference::Reference;
use a3s_box::oci::store::ImageStore;
use common_registry::*;

fn image_ids(home: &Path) -> Vec<String> {
    ok(a3s(home, &["images", "-q"]))
        .lines()
        .map(str::to_string)
        .collect()
}

fn inspect(home: &Path, image: &str) -> serde_json::Value {
    let out = ok(a3s(home, &["image-inspect", image]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

fn blobs(home: &Path) -> Vec<String> {
    std::fs::read_dir(home.join("images/blobs/sha256"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn pull_over_plain_http_lists_inspects_and_unpacks_the_image() {
    let imgs = images();
    let reg = Registry::start();
    let name = reg.push(&imgs.src("busybox"), "test/busybox:1");
    let home = TempDir::new("home");

    let out = ok(a3s(home.path(), &["pull", &name]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("1: Pulling from {}/test/busybox", reg.host())
    );
    assert!(
        lines.iter().any(|l| l.starts_with("Digest: sha256:")),
        "{out}"
    );
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {name}")),
        "{out}"
    );
    assert_eq!(*lines.last().unwrap(), name);

    let again = ok(a3s(home.path(), &["pull", &name]));
    assert!(
        again.contains(&format!("Status: Image is up to date for {name}")),
        "{again}"
    );
    assert_eq!(ok(a3s(home.path(), &["pull", "-q", &name])).trim(), name);

    let table = ok(a3s(home.path(), &["images"]));
    let mut rows = table.lines();
    let head = rows.next().unwrap();
    for col in ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(head.contains(col), "{head}");
    }
    let row: Vec<&str> = rows.next().unwrap().split_whitespace().collect();
    assert_eq!(row[0], format!("{}/test/busybox", reg.host()));
    assert_eq!(row[1], "1");
    assert_eq!(row[2].len(), 12);
    let formatted = ok(a3s(
        home.path(),
        &["images", "--format", "{{.Repository}}:{{.Tag}}"],
    ));
    assert_eq!(formatted.trim(), name);

    let info = inspect(home.path(), &name);
    let id = info["Id"].as_str().unwrap().to_string();
    assert!(
        id.starts_with("sha256:") && id[7..].starts_with(row[2]),
        "{info}"
    );
    assert_eq!(info["RepoTags"][0], name);
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Os"], "linux");
    assert_eq!(info["Config"]["Cmd"][0], "/bin/sh");
    assert_eq!(info["Config"]["WorkingDir"], "/srv");
    assert_eq!(info["Config"]["User"], "1000");
    assert!(info["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "GREETING=hello"));
    assert_eq!(info["RootFS"]["Type"], "layers");
    assert_eq!(info["RootFS"]["Layers"].as_array().unwrap().len(), 2);
    assert_eq!(inspect(home.path(), &id[7..19])["Id"], id);

    // The run side's entry point: the unpacked root, layers applied in order.
    let store = ImageStore::open(home.path()).unwrap();
    let prepared = store
        .ensure_rootfs(&Reference::parse(&name).unwrap(), false, false)
        .unwrap();
    assert_eq!(prepared.id, id);
    assert_eq!(prepared.config.cmd, ["/bin/sh"]);
    assert_eq!(prepared.config.working_dir, "/srv");
    let root = &prepared.rootfs;
    assert!(root.starts_with(home.path().join("images/rootfs")));
    assert!(root.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert!(
        !root.join("etc/old").exists(),
        "the whiteout did not delete etc/old"
    );
    let a = std::fs::metadata(root.join("etc/greeting")).unwrap();
    let b = std::fs::metadata(root.join("etc/greeting-hardlink")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard link was not kept");
    assert_eq!(
        std::fs::read_link(root.join("etc/greeting-symlink")).unwrap(),
        Path::new("greeting")
    );
    // Prepared once, then reused.
    let again = store
        .ensure_rootfs(&Reference::parse(&name).unwrap(), false, false)
        .unwrap();
    assert_eq!(again.rootfs, prepared.rootfs);
}

#[test]
fn ensure_rootfs_pulls_a_missing_image_or_says_how_to_get_it() {
    let imgs = images();
    let reg = Registry::start();
    let name = reg.push(&imgs.src("busybox"), "lazy:1");
    let home = TempDir::new("home");
    std::env::set_var("A3S_BOX_HOME", home.path());
    let store = ImageStore::open(home.path()).unwrap();
    let r = Reference::parse(&name).unwrap();
    let err = store
        .ensure_rootfs(&r, false, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("a3s-box pull"), "{err}");
    let p = store.ensure_rootfs(&r, true, false).unwrap();
    assert!(p.rootfs.join("bin/busybox").is_file());
    assert_eq!(image_ids(home.path()).len(), 1);
}

#[test]
fn tag_then_rmi_untags_first_and_deletes_with_the_last_name() {
    let imgs = images();
    let reg = Registry::start();
    let name = reg.push(&imgs.src("busybox"), "app:1");
    let home = TempDir::new("home");
    ok(a3s(home.path(), &["pull", "-q", &name]));
    ok(a3s(home.path(), &["tag", &name, "mine:v2"]));
    let names = ok(a3s(
        home.path(),
        &["images", "--format", "{{.Repository}}:{{.Tag}}"],
    ));
    assert!(names.lines().any(|l| l == "mine:v2"), "{names}");
    assert_eq!(image_ids(home.path()).len(), 1);

    let out = ok(a3s(home.path(), &["rmi", "mine:v2"]));
    assert_eq!(out.trim(), "Untagged: mine:v2");
    let out = ok(a3s(home.path(), &["rmi", &name]));
    assert!(out.contains(&format!("Untagged: {name}")), "{out}");
    assert!(
        out.lines().last().unwrap().starts_with("Deleted: sha256:"),
        "{out}"
    );
    assert!(image_ids(home.path()).is_empty());
    assert!(
        blobs(home.path()).is_empty(),
        "blobs left: {:?}",
        blobs(home.path())
    );

    let o = a3s(home.path(), &["rmi", "nothing:here"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("no such image"), "{}", stderr(&o));
}

#[test]
fn rmi_refuses_an_image_a_box_uses_unless_forced_and_prune_keeps_it() {
    let imgs = images();
    let reg = Registry::start();
    let used = reg.push(&imgs.src("busybox"), "used:1");
    let unused = reg.push(&imgs.src("tiny-arm64"), "unused:1");
    let home = TempDir::new("home");
    ok(a3s(home.path(), &["pull", "-q", &used]));
    ok(a3s(
        home.path(),
        &["pull", "-q", "--platform", "linux/arm64", &unused],
    ));
    let id = inspect(home.path(), &used)["Id"]
        .as_str()
        .unwrap()
        .to_string();

    let boxes = a3s_box::runtime::Store::open(home.path()).unwrap();
    let mut cfg: a3s_box::runtime::BoxConfig = serde_json::from_value(serde_json::json!({
        "id": "", "name": "web", "rootfs": "/", "image": id, "argv": ["sh"], "env": [],
        "workdir": "/", "user": null, "hostname": "web", "tty": false, "stdin": false,
        "cpus": 1, "memory": 1, "kernel": "/k", "auto_remove": false, "created": 0
    }))
    .unwrap();
    boxes.create(&mut cfg).unwrap();

    let o = a3s(home.path(), &["rmi", &used]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("in use by box web"), "{}", stderr(&o));

    let out = ok(a3s(home.path(), &["image-prune", "-a", "-f"]));
    assert!(out.contains("Total reclaimed space:"), "{out}");
    let left = image_ids(home.path());
    assert_eq!(
        left,
        [id[7..19].to_string()],
        "prune -a removed the box's image or kept the other"
    );

    ok(a3s(home.path(), &["rmi", "-f", &used]));
    assert!(image_ids(home.path()).is_empty());
}

#[test]
fn image_prune_without_all_removes_only_dangling_images() {
    let imgs = images();
    let reg = Registry::start();
    let name = reg.push(&imgs.src("busybox"), "app:1");
    let home = TempDir::new("home");
    ok(a3s(home.path(), &["pull", "-q", &name]));
    // Re-point the tag at another image: the first becomes dangling.
    reg.push(&imgs.src("tiny-arm64"), "app:1");
    ok(a3s(
        home.path(),
        &["pull", "-q", "--platform", "linux/arm64", &name],
    ));
    let dangling = ok(a3s(
        home.path(),
        &["images", "-q", "--filter", "dangling=true"],
    ));
    assert_eq!(dangling.lines().count(), 1, "{dangling}");
    assert_eq!(image_ids(home.path()).len(), 2);

    let out = ok(a3s(home.path(), &["image-prune", "-f"]));
    assert!(
        out.contains(&format!("deleted: sha256:{}", dangling.trim())),
        "{out}"
    );
    assert_eq!(image_ids(home.path()).len(), 1);
}

#[test]
fn pull_with_platform_selects_the_matching_manifest_from_an_index() {
    let imgs = images();
    let reg = Registry::start();
    let name = reg.push(&imgs.src("multi"), "multi:1");
    let home = TempDir::new("home");
    ok(a3s(
        home.path(),
        &["pull", "-q", "--platform", "linux/arm64", &name],
    ));
    let info = inspect(home.path(), &name);
    assert_eq!(info["Architecture"], "arm64");
    assert_eq!(info["Config"]["Cmd"][0], "/bin/true");

    let home2 = TempDir::new("home");
    ok(a3s(
        home2.path(),
        &["pull", "-q", "--platform=linux/amd64", &name],
    ));
    assert_eq!(inspect(home2.path(), &name)["Architecture"], "amd64");

    let o = a3s(home2.path(), &["pull", "--platform", "linux/s390x", &name]);
    assert_eq!(o.status.code(), Some(125));
    let err = stderr(&o);
    assert!(
        err.contains("no manifest for platform linux/s390x"),
        "{err}"
    );
    assert!(err.contains("linux/arm64"), "{err}");
}

#[test]
fn pull_over_tls_with_basic_auth_needs_a_login_and_rejects_a_wrong_password() {
    let imgs = images();
    let certs = TempDir::new("tls");
    let tls = make_tls(certs.path(), "reg");
    let reg = Registry::start_with(Some(&tls), Some(("alice", "s3cret")));
    let name = reg.push(&imgs.src("busybox"), "private:1");
    let home = TempDir::new("home");
    let ca_dir = home.path().join("certs.d").join(reg.host());
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::copy(&tls.ca, ca_dir.join("ca.crt")).unwrap();

    let o = a3s(home.path(), &["pull", &name]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("authentication to"), "{}", stderr(&o));

    let o = a3s(
        home.path(),
        &["login", "-u", "alice", "-p", "wrong", &reg.host()],
    );
    assert_eq!(o.status.code(), Some(125));
    let err = stderr(&o);
    assert!(
        err.contains("authentication to") && err.contains("refused"),
        "{err}"
    );
    assert!(!home.path().join("auth/config.json").exists());

    let out = ok(a3s_env(
        home.path(),
        &["login", "-u", "alice", "--password-stdin", &reg.host()],
        &[],
        Some("s3cret\n"),
    ));
    assert!(out.contains("Login Succeeded"), "{out}");
    let cfg = home.path().join("auth/config.json");
    assert_eq!(
        std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    assert_eq!(v["auths"][reg.host()]["auth"], "YWxpY2U6czNjcmV0");

    ok(a3s(home.path(), &["pull", "-q", &name]));
    assert_eq!(image_ids(home.path()).len(), 1);

    let out = ok(a3s(home.path(), &["logout", &reg.host()]));
    assert!(out.contains("Removing login credentials"), "{out}");
}

#[test]
fn pull_over_tls_with_an_untrusted_certificate_fails_with_a_tls_error() {
    let imgs = images();
    let certs = TempDir::new("tls");
    let tls = make_tls(certs.path(), "reg");
    let other = make_tls(certs.path(), "other");
    let reg = Registry::start_with(Some(&tls), None);
    let name = reg.push(&imgs.src("tiny-arm64"), "x:1");
    let home = TempDir::new("home");
    let ca_dir = home.path().join("certs.d").join(reg.host());
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::copy(&other.ca, ca_dir.join("ca.crt")).unwrap();
    let o = a3s(home.path(), &["pull", "--platform", "linux/arm64", &name]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("TLS with registry"), "{}", stderr(&o));
    // Told not to verify, it pulls.
    ok(a3s(
        home.path(),
        &[
            "pull",
            "-q",
            "--tls-verify=false",
            "--platform",
            "linux/arm64",
            &name,
        ],
    ));
}

#[test]
fn tampered_blob_fails_with_a_digest_error_and_stores_nothing() {
    let imgs = images();
    let reg = Registry::start();
    reg.push(&imgs.src("busybox"), "bad:1");
    // Flip one byte of the largest blob (the busybox layer), keeping its size.
    let blobs_dir = reg.dir.path().join("data/docker/registry/v2/blobs/sha256");
    let mut biggest = (0, std::path::PathBuf::new());
    for pre in std::fs::read_dir(&blobs_dir).unwrap() {
        for b in std::fs::read_dir(pre.unwrap().path()).unwrap() {
            let data = b.unwrap().path().join("data");
            let len = std::fs::metadata(&data).unwrap().len();
            if len > biggest.0 {
                biggest = (len, data);
            }
        }
    }
    let mut bytes = std::fs::read(&biggest.1).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&biggest.1, &bytes).unwrap();

    let home = TempDir::new("home");
    let o = a3s(home.path(), &["pull", &format!("{}/bad:1", reg.host())]);
    assert_eq!(o.status.code(), Some(125));
    let err = stderr(&o);
    assert!(err.contains("does not match its digest"), "{err}");
    assert!(image_ids(home.path()).is_empty());
    let tampered = biggest
        .1
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        !blobs(home.path()).contains(&tampered),
        "the tampered blob was stored"
    );
    let tmp: Vec<_> = std::fs::read_dir(home.path().join("images/tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "partial download of bad content kept");
}

#[test]
fn a_write_error_mid_pull_leaves_no_image_and_the_next_pull_succeeds() {
    use std::os::unix::process::CommandExt;
    use std::process::Command;
    let imgs = images();
    let reg = Registry::start();
    let name = reg.push(&imgs.src("busybox"), "wfail:1");
    let home = TempDir::new("home");
    // A file size limit of 64 KiB makes writing the busybox layer (about 1 MB) fail
    // part way, as a full disk would.
    let mut cmd = Command::new(BIN);
    cmd.args(["pull", &name]).env("A3S_BOX_HOME", home.path());
    // SAFETY: between fork and exec the closure only calls the async-signal-safe
    // signal and setrlimit with plain arguments and a stack struct.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 64 << 10,
                rlim_max: 64 << 10,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("too large"),
        "the error does not say what failed: {}",
        stderr(&o)
    );
    assert!(
        image_ids(home.path()).is_empty(),
        "a broken image is listed"
    );
    let o = a3s(home.path(), &["pull", &name]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(image_ids(home.path()).len(), 1);
    let o = a3s(home.path(), &["image-inspect", &name]);
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn registry_killed_mid_pull_retries_then_fails_and_a_later_pull_resumes() {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    let work = TempDir::new("big");
    let size = 24 << 20;
    let layer = big_image(work.path(), size);
    let mut reg = Registry::start();
    reg.push(
        &format!("oci:{}:big", work.path().join("big-layout").display()),
        "big:1",
    );
    // Pull through a relay slowed to 8 MB/s so the registry can die mid-blob.
    let proxy = SlowProxy::start(reg.port, 8 << 20);
    let home = TempDir::new("home");
    let name = format!("127.0.0.1:{}/big:1", proxy.port);

    let mut child = std::process::Command::new(BIN)
        .args(["pull", &name])
        .env("A3S_BOX_HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let partial = home.path().join(format!("images/tmp/{layer}.partial"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) < 2 << 20 {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("the download never started: {}{}", stdout(&o), stderr(&o));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    reg.kill();
    let killed = Instant::now();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains("cannot reach registry") && err.contains("attempts"),
        "{err}"
    );
    assert!(
        killed.elapsed() >= Duration::from_millis(500),
        "no backoff between retries"
    );
    assert!(
        image_ids(home.path()).is_empty(),
        "a partial image is listed"
    );
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(kept > 0 && kept < 24 << 20);

    reg.restart();
    let before = proxy.relayed.load(Ordering::SeqCst);
    ok(a3s(home.path(), &["pull", "-q", &name]));
    let second = proxy.relayed.load(Ordering::SeqCst) - before;
    assert!(
        second < size as u64 - kept + (1 << 20),
        "the second pull fetched {second} bytes though {kept} were kept: no resume"
    );
    assert_eq!(image_ids(home.path()).len(), 1);
    assert!(blobs(home.path()).contains(&layer));
    assert!(!partial.exists());
}

#[test]
fn lru_eviction_keeps_the_cache_under_its_limit_but_never_evicts_a_used_image() {
    let imgs = images();
    let reg = Registry::start();
    let a = reg.push(&imgs.src("busybox"), "a:1");
    let b = reg.push(&imgs.src("tiny-arm64"), "b:1");
    let home = TempDir::new("home");
    ok(a3s(home.path(), &["pull", "-q", &a]));
    // A limit below one image: pulling b evicts a (older, unused), not b itself.
    ok(a3s_env(
        home.path(),
        &["pull", "-q", "--platform", "linux/arm64", &b],
        &[("A3S_IMAGE_CACHE_SIZE", "1k")],
        None,
    ));
    let names = ok(a3s(
        home.path(),
        &["images", "--format", "{{.Repository}}:{{.Tag}}"],
    ));
    assert_eq!(names.trim(), b, "{names}");

    let o = a3s_env(
        home.path(),
        &["pull", &a],
        &[("A3S_IMAGE_CACHE_SIZE", "lots")],
        None,
    );
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("invalid size"), "{}", stderr(&o));
}

#[test]
fn bad_input_fails_with_125_and_a_clear_message() {
    let home = TempDir::new("home");
    let o = a3s(home.path(), &["pull", "Not/Valid"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("invalid"), "{}", stderr(&o));
    let o = a3s(home.path(), &["pull", "--platform", "linux", "x"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("os/arch"), "{}", stderr(&o));
    let o = a3s(home.path(), &["image-inspect", "ghost"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("no such image: ghost"),
        "{}",
        stderr(&o)
    );
}

fn skopeo_inspect(reference: &str) -> serde_json::Value {
    let out = run(std::process::Command::new(need("skopeo")).args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn pushed_images_are_readable_by_skopeo_and_reuse_blobs_the_registry_has() {
    let imgs = images();
    let reg = Registry::start();
    let src = reg.push(&imgs.src("busybox"), "src/busybox:1");
    let home = TempDir::new("home");
    ok(a3s(home.path(), &["pull", "-q", &src]));
    let id = inspect(home.path(), &src)["Id"]
        .as_str()
        .unwrap()
        .to_string();

    // Same registry, other repository: the layers are mounted, not uploaded.
    let dst = format!("{}/dst/copy:2", reg.host());
    ok(a3s(home.path(), &["tag", &src, &dst]));
    let out = ok(a3s(home.path(), &["push", &dst]));
    assert!(
        out.starts_with(&format!(
            "The push refers to repository [{}/dst/copy]",
            reg.host()
        )),
        "{out}"
    );
    assert!(out.contains("Mounted from src/busybox"), "{out}");
    assert!(
        out.lines()
            .last()
            .unwrap()
            .starts_with("2: digest: sha256:"),
        "{out}"
    );
    let again = ok(a3s(home.path(), &["push", &dst]));
    assert!(again.contains("Layer already exists"), "{again}");
    let seen = skopeo_inspect(&dst);
    assert_eq!(seen["Layers"].as_array().unwrap().len(), 2);
    assert_eq!(seen["Architecture"], "amd64");

    // Another registry: every blob is uploaded; a fresh pull gives the same image.
    let reg2 = Registry::start();
    let far = format!("{}/far/away:3", reg2.host());
    ok(a3s(home.path(), &["tag", &src, &far]));
    let out = ok(a3s(home.path(), &["push", &far]));
    assert_eq!(out.matches(": Pushed").count(), 3, "{out}");
    let copy = TempDir::new("copy");
    run(std::process::Command::new(need("skopeo")).args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{far}"),
        &format!("oci:{}:x", copy.path().display()),
    ]));
    let home2 = TempDir::new("home");
    ok(a3s(home2.path(), &["pull", "-q", &far]));
    assert_eq!(inspect(home2.path(), &far)["Id"], id);
}

#[test]
fn large_blobs_are_pushed_in_chunks() {
    let work = TempDir::new("big");
    let layer = big_image(work.path(), 20 << 20);
    let reg = Registry::start();
    reg.push(
        &format!("oci:{}:big", work.path().join("big-layout").display()),
        "big:1",
    );
    let home = TempDir::new("home");
    ok(a3s(
        home.path(),
        &["pull", "-q", &format!("{}/big:1", reg.host())],
    ));
    let reg2 = Registry::start();
    let dst = format!("{}/big:1", reg2.host());
    ok(a3s(
        home.path(),
        &["tag", &format!("{}/big:1", reg.host()), &dst],
    ));
    ok(a3s(home.path(), &["push", &dst]));
    let seen = skopeo_inspect(&dst);
    assert_eq!(seen["Layers"][0], format!("sha256:{layer}"));
}

#[test]
fn saved_archives_load_back_and_other_tools_read_them() {
    let imgs = images();
    let reg = Registry::start();
    let name = reg.push(&imgs.src("busybox"), "keep:1");
    let home = TempDir::new("home");
    ok(a3s(home.path(), &["pull", "-q", &name]));
    let id = inspect(home.path(), &name)["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let work = TempDir::new("archives");

    for format in ["docker-archive", "oci-archive"] {
        let file = work.path().join(format!("{format}.tar"));
        let f = file.to_str().unwrap();
        ok(a3s(
            home.path(),
            &["save", "-o", f, "--format", format, &name],
        ));
        // skopeo reads what we wrote.
        let seen =
            run(std::process::Command::new(need("skopeo"))
                .args(["inspect", &format!("{format}:{f}")]));
        let seen: serde_json::Value = serde_json::from_slice(&seen.stdout).unwrap();
        assert_eq!(seen["Layers"].as_array().unwrap().len(), 2, "{format}");

        let other = TempDir::new("home");
        let out = ok(a3s(other.path(), &["load", "-i", f]));
        assert_eq!(out.trim(), format!("Loaded image: {name}"), "{format}");
        assert_eq!(inspect(other.path(), &name)["Id"], id, "{format}");
        let store = ImageStore::open(other.path()).unwrap();
        let p = store
            .ensure_rootfs(&Reference::parse(&name).unwrap(), false, false)
            .unwrap();
        assert!(p.rootfs.join("bin/busybox").is_file(), "{format}");
        assert!(!p.rootfs.join("etc/old").exists(), "{format}");
    }

    // What skopeo writes, we load.
    let from_skopeo = work.path().join("skopeo.tar");
    run(std::process::Command::new(need("skopeo")).args([
        "copy",
        "--quiet",
        &imgs.src("busybox"),
        &format!("docker-archive:{}:made/by-skopeo:1", from_skopeo.display()),
    ]));
    let other = TempDir::new("home");
    let out = ok(a3s(
        other.path(),
        &["load", "-i", from_skopeo.to_str().unwrap()],
    ));
    assert!(out.contains("Loaded image: made/by-skopeo:1"), "{out}");
    assert_eq!(inspect(other.path(), "made/by-skopeo:1")["Id"], id);
}

#[test]
fn docker_schema2_and_zstd_images_pull_and_unpack() {
    let imgs = images();
    let reg = Registry::start();
    let name = reg.push_with(&imgs.src("busybox"), "v2s2:1", &["--format", "v2s2"]);
    let home = TempDir::new("home");
    let store = ImageStore::open(home.path()).unwrap();
    ok(a3s(home.path(), &["pull", "-q", &name]));
    let rec = store.resolve(&name).unwrap();
    assert_eq!(
        rec.manifest_media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let p = store
        .ensure_rootfs(&Reference::parse(&name).unwrap(), false, false)
        .unwrap();
    assert!(p.rootfs.join("bin/busybox").is_file());
    assert!(!p.rootfs.join("etc/old").exists());
    assert_eq!(p.config.env, ["GREETING=hello"]);
    let digests = ok(a3s(home.path(), &["images", "--digests"]));
    assert!(
        digests.lines().next().unwrap().contains("DIGEST"),
        "{digests}"
    );
    assert_eq!(digests.matches("sha256:").count(), 1, "{digests}");

    // A zstd layer (compressed with the zstd tool).
    let work = TempDir::new("zstd");
    let mut tar = tar::Builder::new(Vec::new());
    let data = b"compressed with zstd\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    tar.append_data(&mut h, "etc/zstd.txt", &data[..]).unwrap();
    let diff = tar.into_inner().unwrap();
    let plain = work.path().join("layer.tar");
    std::fs::write(&plain, &diff).unwrap();
    run(std::process::Command::new(need("zstd"))
        .arg("-q")
        .arg(&plain));
    let layer = std::fs::read(work.path().join("layer.tar.zst")).unwrap();
    let src = one_layer_image(
        work.path(),
        "z",
        &layer,
        &diff,
        "application/vnd.oci.image.layer.v1.tar+zstd",
    );
    let name = reg.push(&src, "zstd:1");
    ok(a3s(home.path(), &["pull", "-q", &name]));
    let p = store
        .ensure_rootfs(&Reference::parse(&name).unwrap(), false, false)
        .unwrap();
    assert_eq!(
        std::fs::read(p.rootfs.join("etc/zstd.txt")).unwrap(),
        data.to_vec()
    );
}

#[test]
fn concurrent_pulls_of_one_image_serialise_and_store_it_once() {
    let imgs = images();
    let reg = Registry::start();
    let name = reg.push(&imgs.src("busybox"), "same:1");
    let home = TempDir::new("home");
    let children: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(BIN)
                .args(["pull", "-q", &name])
                .env("A3S_BOX_HOME", home.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        ok(c.wait_with_output().unwrap());
    }
    assert_eq!(image_ids(home.path()).len(), 1);
    let names = ok(a3s(
        home.path(),
        &["images", "--format", "{{.Repository}}:{{.Tag}}"],
    ));
    assert_eq!(names.trim(), name);
    // Config, manifest and two layers.
    assert_eq!(blobs(home.path()).len(), 4, "{:?}", blobs(home.path()));
}
