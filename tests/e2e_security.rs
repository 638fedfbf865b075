//! End to end: the security options (capabilities, --privileged, --read-only,
//! no-new-privileges, --init, users and groups, sysctls) in real boxes of
//! the Debian test image (scripts/build-test-image), and the refusals that
//! leave no box. Ignored in a plain `cargo test`; `scripts/test` runs it
//! inside `scripts/kvm-harness`.

mod common;
mod common_debian;
mod common_registry;

use std::process::Output;
use std::sync::OnceLock;

use common_debian::{Loaded, IMAGE};
use common_registry::{stderr, stdout};

fn env() -> &'static Loaded {
    static ENV: OnceLock<Loaded> = OnceLock::new();
    ENV.get_or_init(|| Loaded::new("e2e-security-home"))
}

fn a3s(args: &[&str]) -> Output {
    env().a3s(args)
}

fn ok(args: &[&str]) -> String {
    env().ok(args)
}

/// `run --rm` of `sh -c script` with `flags`; its whole output, which must
/// come with exit code 0.
fn run_sh(flags: &[&str], script: &str) -> String {
    let mut args = vec!["run", "--rm", "-m", "256m"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[IMAGE, "sh", "-c", script]);
    let out = a3s(&args);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{args:?}: {text}");
    text
}

/// The value of `field` in `/proc/self/status` lines printed by `grep`.
fn status_field(text: &str, field: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {text:?}"))
        .trim()
        .to_string()
}

/// Forks a child that forks a grandchild and exits at once: the grandchild
/// is orphaned to the box's PID 1 and ends a moment later. Prints how many
/// zombies the box then has, and the command line of its PID 1.
const ORPHAN: &str = r#"
import os, time
pid = os.fork()
if pid == 0:
    if os.fork() == 0:
        time.sleep(0.3)
        os._exit(0)
    os._exit(0)
os.waitpid(pid, 0)
time.sleep(2)
zombies = 0
for p in os.listdir('/proc'):
    if p.isdigit():
        try:
            stat = open('/proc/%s/stat' % p).read()
        except OSError:
            continue
        if stat.rsplit(')', 1)[1].split()[0] == 'Z':
            zombies += 1
print('zombies:', zombies)
print('pid1:', open('/proc/1/cmdline').read().replace('\0', ' ').strip())
print('me:', os.getpid())
"#;

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn a_default_box_has_dockers_capabilities_and_no_more() {
    let text = run_sh(
        &[],
        "grep -E '^(Cap|NoNewPrivs)' /proc/self/status; \
         touch /f && chown nobody /f && echo chown-ok; \
         ip link set lo mtu 1000 2>&1 || echo mtu-refused; \
         echo 1 > /proc/sys/net/ipv4/ip_forward 2>&1 || echo procsys-refused; \
         id",
    );
    assert_eq!(status_field(&text, "CapEff"), "00000000a80425fb", "{text}");
    assert_eq!(status_field(&text, "CapPrm"), "00000000a80425fb", "{text}");
    assert_eq!(status_field(&text, "CapBnd"), "00000000a80425fb", "{text}");
    assert_eq!(status_field(&text, "CapInh"), "0000000000000000", "{text}");
    assert_eq!(status_field(&text, "CapAmb"), "0000000000000000", "{text}");
    assert_eq!(status_field(&text, "NoNewPrivs"), "0", "{text}");
    assert!(text.contains("chown-ok"), "{text}");
    assert!(text.contains("Operation not permitted"), "{text}");
    assert!(text.contains("mtu-refused"), "{text}");
    assert!(text.contains("procsys-refused"), "{text}");
    assert!(text.contains("uid=0(root) gid=0(root)"), "{text}");
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn cap_drop_all_takes_chown_away() {
    let text = run_sh(
        &["--cap-drop", "ALL"],
        "grep -E '^Cap(Eff|Bnd)' /proc/self/status; \
         touch /f; chown nobody /f 2>&1 || echo chown-refused",
    );
    assert_eq!(status_field(&text, "CapEff"), "0000000000000000", "{text}");
    assert_eq!(status_field(&text, "CapBnd"), "0000000000000000", "{text}");
    assert!(text.contains("Operation not permitted"), "{text}");
    assert!(text.contains("chown-refused"), "{text}");
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn cap_add_net_admin_lets_the_box_change_its_links() {
    let text = run_sh(
        &["--cap-add", "net_admin"],
        "grep '^CapEff' /proc/self/status; ip link set lo mtu 1000 && ip link show lo",
    );
    assert_eq!(status_field(&text, "CapEff"), "00000000a80435fb", "{text}");
    assert!(text.contains("mtu 1000"), "{text}");
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn a_privileged_box_has_every_capability_and_a_writable_proc_sys() {
    let text = run_sh(
        &["--privileged"],
        "grep '^CapEff' /proc/self/status; \
         echo 1 > /proc/sys/net/ipv4/ip_forward && cat /proc/sys/net/ipv4/ip_forward; \
         grep ' /sys ' /proc/self/mounts",
    );
    assert_eq!(status_field(&text, "CapEff"), "000001ffffffffff", "{text}");
    assert!(text.lines().any(|l| l.trim() == "1"), "{text}");
    assert!(text.contains("sysfs /sys sysfs rw"), "{text}");
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn a_read_only_box_writes_only_to_its_tmpfs() {
    let text = run_sh(
        &["--read-only", "--tmpfs", "/tmp"],
        "touch /x 2>&1 || echo root-refused; \
         touch /run/x 2>&1 || echo run-refused; \
         touch /tmp/y && echo tmp-ok; \
         echo data > /dev/shm/z && echo shm-ok",
    );
    assert!(
        text.contains("touch: cannot touch '/x': Read-only file system"),
        "{text}"
    );
    assert!(text.contains("root-refused"), "{text}");
    assert!(text.contains("run-refused"), "{text}");
    assert!(text.contains("tmp-ok"), "{text}");
    assert!(text.contains("shm-ok"), "{text}");
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn user_groups_no_new_privileges_and_sysctls_show_inside() {
    let text = run_sh(
        &[
            "--user",
            "nobody",
            "--group-add",
            "audio",
            "--group-add",
            "4242",
            "--security-opt",
            "no-new-privileges",
            "--sysctl",
            "net.ipv4.ip_forward=1",
        ],
        "id; grep -E '^(NoNewPrivs|CapEff|CapBnd)' /proc/self/status; \
         cat /proc/sys/net/ipv4/ip_forward",
    );
    assert!(
        text.contains("uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup),29(audio),4242"),
        "{text}"
    );
    assert_eq!(status_field(&text, "NoNewPrivs"), "1", "{text}");
    // Not root: the bounding set only; nothing held.
    assert_eq!(status_field(&text, "CapEff"), "0000000000000000", "{text}");
    assert_eq!(status_field(&text, "CapBnd"), "00000000a80425fb", "{text}");
    assert!(text.lines().any(|l| l.trim() == "1"), "{text}");
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn init_reaps_orphans_that_a_plain_pid_1_leaves_as_zombies() {
    let plain = run_py(&[]);
    assert!(plain.contains("zombies: 1"), "{plain}");
    assert!(plain.contains("me: 1"), "{plain}");
    let reaped = run_py(&["--init"]);
    assert!(reaped.contains("zombies: 0"), "{reaped}");
    assert!(reaped.contains("pid1: a3s-box-init -- python3"), "{reaped}");
    assert!(reaped.contains("me: 2"), "{reaped}");
}

/// `run --rm … python3 -c ORPHAN`; its output.
fn run_py(flags: &[&str]) -> String {
    let mut args = vec!["run", "--rm", "-m", "256m"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[IMAGE, "python3", "-c", ORPHAN]);
    let out = a3s(&args);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{args:?}: {text}");
    text
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn bad_security_flags_exit_125_with_one_line_and_leave_no_box() {
    for (flags, want) in [
        (
            &["--cap-add", "BOGUS"][..],
            r#"invalid CapAdd: unknown capability: "CAP_BOGUS""#,
        ),
        (
            &["--sysctl", "kernel.hostname=x"][..],
            "sysctl 'kernel.hostname=x' is not allowed",
        ),
        (
            &["--security-opt", "bogus"][..],
            r#"invalid --security-opt 1: "bogus""#,
        ),
        (
            &["--security-opt", "seccomp=/etc/profile.json"][..],
            "takes no seccomp profile",
        ),
        (
            &["--device", "/dev/sda"][..],
            "host devices cannot be passed",
        ),
    ] {
        let mut args = vec!["run", "--name", "refused"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[IMAGE, "true"]);
        let out = a3s(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(125), "{flags:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{flags:?}: {err:?}");
        assert!(err.contains(want), "{flags:?}: {err:?}");
        assert_eq!(ok(&["ps", "-a", "-q"]), "", "{flags:?} left a box");
    }
}

#[test]
#[ignore = "boots real boxes: run inside scripts/kvm-harness (scripts/test does)"]
fn inspect_shows_the_options_under_dockers_names() {
    let id = ok(&[
        "create",
        "--cap-add",
        "sys_time",
        "--cap-drop",
        "CAP_MKNOD",
        "--read-only",
        "--init",
        "--security-opt",
        "no-new-privileges:true",
        "--group-add",
        "audio",
        "--sysctl",
        "net.core.somaxconn=512",
        IMAGE,
        "true",
    ]);
    let id = id.trim();
    let host = ok(&["inspect", "--format", "{{json .HostConfig}}", id]);
    let host: serde_json::Value = serde_json::from_str(&host).unwrap();
    assert_eq!(host["CapAdd"], serde_json::json!(["CAP_SYS_TIME"]));
    assert_eq!(host["CapDrop"], serde_json::json!(["CAP_MKNOD"]));
    assert_eq!(host["Privileged"], false);
    assert_eq!(host["ReadonlyRootfs"], true);
    assert_eq!(host["Init"], true);
    assert_eq!(
        host["SecurityOpt"],
        serde_json::json!(["no-new-privileges:true"])
    );
    assert_eq!(host["GroupAdd"], serde_json::json!(["audio"]));
    assert_eq!(host["Sysctls"]["net.core.somaxconn"], "512");
    ok(&["rm", id]);
}
