//! End to end: `a3s-box run IMAGE` pulls from a real registry (Debian's
//! `docker-registry` on loopback) and boots the image's root. Ignored in a plain
//! `cargo test`; `scripts/test` runs it inside `scripts/kvm-harness`.

mod common;
mod common_registry;

use std::process::Output;
use std::sync::OnceLock;

use common_registry::{stdout, BoxEnv};

fn env() -> &'static BoxEnv {
    static ENV: OnceLock<BoxEnv> = OnceLock::new();
    ENV.get_or_init(|| BoxEnv::start("image", common::guest_kernel()))
}

fn image() -> String {
    env().image()
}

fn a3s(args: &[&str]) -> Output {
    let e = env();
    common::a3s_in(e.home.path(), &e.kernel, args, None)
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn run_pulls_the_image_and_applies_its_env_workdir_and_user() {
    let img = image();
    let out = a3s(&[
        "run",
        "--rm",
        &img,
        "/bin/busybox",
        "sh",
        "-c",
        "echo $GREETING $(pwd) $(/bin/busybox id -u); /bin/busybox cat /etc/greeting-symlink; \
         test -e /etc/old || echo whiteout-applied",
    ]);
    assert_eq!(
        stdout(&out),
        "hello /srv 1000\nhello from layer 1\nwhiteout-applied\n"
    );
    assert_eq!(out.status.code(), Some(0));
    // The pull left the image in the store, where `images` lists it.
    let listed = a3s(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(
        stdout(&listed).contains(&img),
        "the image pulled by run is not listed"
    );
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn flags_override_the_image_defaults() {
    let out = a3s(&[
        "run",
        "--rm",
        "-e",
        "GREETING=overridden",
        "-w",
        "/tmp",
        "-u",
        "0",
        &image(),
        "/bin/busybox",
        "sh",
        "-c",
        "echo $GREETING $(pwd) $(/bin/busybox id -u)",
    ]);
    assert_eq!(stdout(&out), "overridden /tmp 0\n");
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn a_box_writes_to_its_own_layer_never_to_the_image() {
    let img = image();
    let out = a3s(&[
        "run",
        "--rm",
        "-u",
        "0",
        &img,
        "/bin/busybox",
        "sh",
        "-c",
        "echo changed > /etc/greeting; /bin/busybox cat /etc/greeting",
    ]);
    assert_eq!(stdout(&out), "changed\n");
    let out = a3s(&["run", "--rm", &img, "/bin/busybox", "cat", "/etc/greeting"]);
    assert_eq!(stdout(&out), "hello from layer 1\n");
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn a_box_root_is_the_shared_image_tree_under_a_layer_of_its_own() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let img = image();
    let out = a3s(&[
        "run",
        "-u",
        "0",
        "--name",
        "layered",
        &img,
        "/bin/busybox",
        "sh",
        "-c",
        "echo new > /etc/added; rm /etc/greeting; mkdir -p /srv/made; echo x > /srv/made/f; \
         /bin/busybox ls /etc",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("added"));
    assert!(!stdout(&out).contains("greeting\n"));
    // What the box wrote is in its layer, in overlayfs's format …
    let home = env().home.path();
    let boxes: Vec<_> = std::fs::read_dir(home.join("boxes"))
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("config.json"))
                .is_ok_and(|c| c.contains("\"layered\""))
        })
        .collect();
    assert_eq!(boxes.len(), 1);
    let upper = boxes[0].path().join("layer/upper");
    assert_eq!(
        std::fs::read_to_string(upper.join("etc/added")).unwrap(),
        "new\n"
    );
    assert_eq!(
        std::fs::read_to_string(upper.join("srv/made/f")).unwrap(),
        "x\n"
    );
    let whiteout = std::fs::symlink_metadata(upper.join("etc/greeting")).unwrap();
    assert!(
        whiteout.file_type().is_char_device() && whiteout.rdev() == 0,
        "a deleted image file is a whiteout in the layer"
    );
    // … and nothing else: the image's files were not copied.
    let copied: Vec<_> = std::fs::read_dir(upper.join("bin"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        copied.is_empty(),
        "image files copied into the layer: {copied:?}"
    );
    // Another box of the image sees the image as it was.
    let out = a3s(&["run", "--rm", &img, "/bin/busybox", "cat", "/etc/greeting"]);
    assert_eq!(stdout(&out), "hello from layer 1\n");
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn a_server_in_the_box_answers_on_loopback() {
    let out = a3s(&[
        "run",
        "--rm",
        "-u",
        "0",
        &image(),
        "/bin/busybox",
        "sh",
        "-c",
        "/bin/busybox httpd -p 127.0.0.1:8080 -h /etc && \
         /bin/busybox wget -q -O - http://127.0.0.1:8080/greeting",
    ]);
    assert_eq!(stdout(&out), "hello from layer 1\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn an_image_that_is_in_no_registry_fails_with_125() {
    let missing = format!("{}/tests/absent:1", env().registry.host());
    let out = a3s(&["run", "--rm", &missing, "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tests/absent"),
        "the error does not name the image"
    );
}
