//! End to end: a Debian image made of Debian's own packages (scripts/build-test-image),
//! loaded from its oci-archive, runs Debian's python3 and nginx in boxes. Ignored in
//! a plain `cargo test`; `scripts/test` runs it inside `scripts/kvm-harness`.

mod common;
mod common_debian;
mod common_registry;

use std::process::Output;
use std::sync::OnceLock;

use common_debian::{Loaded, IMAGE};
use common_registry::stdout;

fn env() -> &'static Loaded {
    static ENV: OnceLock<Loaded> = OnceLock::new();
    ENV.get_or_init(|| Loaded::new("e2e-debian-home"))
}

fn a3s(args: &[&str]) -> Output {
    env().a3s(args)
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn loaded_debian_image_runs_its_python3() {
    let out = a3s(&["run", "--rm", IMAGE, "python3", "-c", "print(6*7)"]);
    assert_eq!(stdout(&out), "42\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn loaded_debian_image_has_its_nginx_on_the_image_path() {
    let out = a3s(&["run", "--rm", IMAGE, "sh", "-c", "nginx -v 2>&1"]);
    assert!(
        stdout(&out).starts_with("nginx version: nginx/"),
        "nginx -v said {:?}",
        stdout(&out)
    );
    assert_eq!(out.status.code(), Some(0));
}

fn ok(args: &[&str]) -> String {
    env().ok(args)
}

/// Polls `curl` inside box `b` until nginx answers on loopback.
fn page_from(b: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let out = a3s(&["exec", b, "curl", "-fsS", "http://127.0.0.1/"]);
        if out.status.code() == Some(0) {
            return stdout(&out);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nginx in {b} never answered on 127.0.0.1\n{}",
            common::box_logs(env().home.path(), 30)
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn the_image_nginx_serves_on_loopback_and_its_box_stops_starts_and_goes() {
    // The image's own command (nginx -g 'daemon off;'), detached.
    ok(&["run", "-d", "--name", "web", "-m", "256m", IMAGE]);
    assert!(page_from("web").contains("Welcome to nginx"));
    let row = ok(&[
        "ps",
        "--filter",
        "name=web",
        "--format",
        "{{.Image}} {{.Command}} {{.Status}}",
    ]);
    assert!(
        row.starts_with(&format!("{IMAGE} \"nginx -g daemon off;\" Up ")),
        "{row}"
    );
    // A change in the box is in its layer, not in the image, and survives a stop.
    ok(&[
        "exec",
        "web",
        "sh",
        "-c",
        "echo hello-from-the-box > /var/www/html/hello.txt",
    ]);
    assert!(ok(&["diff", "web"]).contains("A /var/www/html/hello.txt"));
    ok(&["stop", "web"]);
    assert_eq!(
        ok(&["inspect", "--format", "{{.State.Status}}", "web"]),
        "exited\n"
    );
    ok(&["start", "web"]);
    page_from("web");
    assert_eq!(
        ok(&["exec", "web", "curl", "-fsS", "http://127.0.0.1/hello.txt"]),
        "hello-from-the-box\n"
    );
    let fresh = a3s(&[
        "run",
        "--rm",
        IMAGE,
        "test",
        "-e",
        "/var/www/html/hello.txt",
    ]);
    assert_eq!(fresh.status.code(), Some(1), "another box sees the change");
    assert_eq!(ok(&["rm", "-f", "web"]), "web\n");
    assert_eq!(ok(&["ps", "-a", "-q", "--filter", "name=web"]), "");
}
