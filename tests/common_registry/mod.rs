//! A real registry (Debian's `docker-registry`) per test, and test images built
//! locally with umoci from the host's static busybox, pushed with skopeo.
#![allow(dead_code)] // each test uses its own subset

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_a3s-box");

/// Fails (never skips) when a tool the tests need is missing.
pub fn need(tool: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!("{tool} is missing: run scripts/install-deps");
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("a3s-oci-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A port nothing listens on, never the same one twice in this process (parallel
/// tests would otherwise race for it).
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// TLS material for a registry: a CA and a server certificate for 127.0.0.1.
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn make_tls(dir: &Path, name: &str) -> Tls {
    let openssl = need("openssl");
    let p = |f: &str| dir.join(format!("{name}-{f}"));
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(Command::new(&openssl)
        .args(["req", "-x509"])
        .args(ec)
        .arg("-keyout")
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.crt"))
        .args(["-days", "2", "-subj", "/CN=a3s test CA"]));
    run(Command::new(&openssl)
        .arg("req")
        .args(ec)
        .arg("-keyout")
        .arg(p("srv.key"))
        .arg("-out")
        .arg(p("srv.csr"))
        .args(["-subj", "/CN=127.0.0.1"]));
    std::fs::write(
        p("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new(&openssl)
        .args(["x509", "-req", "-in"])
        .arg(p("srv.csr"))
        .arg("-CA")
        .arg(p("ca.crt"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-CAcreateserial")
        .arg("-out")
        .arg(p("srv.crt"))
        .args(["-days", "2", "-extfile"])
        .arg(p("ext")));
    Tls {
        ca: p("ca.crt"),
        cert: p("srv.crt"),
        key: p("srv.key"),
    }
}

/// One `docker-registry serve` on a free port, killed when dropped.
pub struct Registry {
    pub port: u16,
    pub dir: TempDir,
    config: PathBuf,
    child: Option<Child>,
    pub tls: bool,
    pub creds: Option<(String, String)>,
}

impl Registry {
    pub fn start() -> Registry {
        Self::start_with(None, None)
    }

    pub fn start_with(tls: Option<&Tls>, creds: Option<(&str, &str)>) -> Registry {
        need("docker-registry");
        let dir = TempDir::new("registry");
        let port = free_port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some(t) = tls {
            cfg.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                t.cert.display(),
                t.key.display()
            ));
        }
        if let Some((u, p)) = creds {
            let out = run(Command::new(need("htpasswd")).args(["-Bbn", u, p]));
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, out.stdout).unwrap();
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: a3s-test\n    path: {}\n",
                file.display()
            ));
        }
        let config = dir.path().join("config.yml");
        std::fs::write(&config, cfg).unwrap();
        let mut r = Registry {
            port,
            dir,
            config,
            child: None,
            tls: tls.is_some(),
            creds: creds.map(|(u, p)| (u.to_string(), p.to_string())),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let alive = matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)));
            let conn = TcpStream::connect(("127.0.0.1", self.port))
                .ok()
                .filter(|_| alive);
            if let Some(mut s) = conn {
                if self.tls {
                    return;
                }
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
                let mut buf = [0u8; 12];
                if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") {
                    return;
                }
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "docker-registry exited with {st}: {}",
                    std::fs::read_to_string(self.dir.path().join("registry.log"))
                        .unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Kills the registry (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Copies `src` (a skopeo source such as `oci:DIR:tag`) to `repo:tag` here;
    /// returns the image's full reference (`host:port/repo:tag`).
    pub fn push(&self, src: &str, dest: &str) -> String {
        self.push_with(src, dest, &["--all", "--preserve-digests"])
    }

    /// Like [`Self::push`], with other skopeo flags (manifest format, compression).
    pub fn push_with(&self, src: &str, dest: &str, flags: &[&str]) -> String {
        let mut cmd = Command::new(need("skopeo"));
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"])
            .args(flags);
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        let reference = format!("{}/{dest}", self.host());
        cmd.arg(src).arg(format!("docker://{reference}"));
        run(&mut cmd);
        reference
    }

    /// Where the registry keeps blob `hex`.
    pub fn blob_file(&self, hex: &str) -> PathBuf {
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An OCI layout with the test images, built once per test run:
/// - `busybox`: amd64; layer 1 busybox + files, layer 2 deletes a file (whiteout)
///   and adds a hard link and a symlink; Cmd, Env and WorkingDir set.
/// - `tiny-arm64`: arm64, one small hand-made uncompressed layer.
/// - `multi`: an index of the two (amd64 + arm64).
pub struct Images {
    pub dir: PathBuf,
}

impl Images {
    pub fn src(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.dir.display())
    }
}

pub fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(build_images)
}

fn umoci(args: &[&str]) {
    run(Command::new(need("umoci")).args(args));
}

/// `umoci unpack`, rootless only when we are not root: its rootless mode juggles
/// permissions to create links, which an overlay over 9p (the KVM harness's /tmp)
/// refuses now and then.
fn umoci_unpack(image: &str, bundle: &Path) {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let mut args = vec!["unpack"];
    if !root {
        args.push("--rootless");
    }
    args.extend(["--image", image, bundle.to_str().unwrap()]);
    umoci(&args);
}

fn build_images() -> Images {
    need("umoci");
    need("skopeo");
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "/bin/busybox is missing: run scripts/install-deps (busybox-static)"
    );
    // The shared images live as long as the test process; clear those of runs gone.
    if let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) {
        for e in rd.filter_map(|e| e.ok()) {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = n.strip_prefix("a3s-oci-images-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let base = std::env::temp_dir().join(format!("a3s-oci-images-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let layout = base.join("layout");
    let l = layout.to_str().unwrap().to_string();
    let img = |t: &str| format!("{l}:{t}");
    umoci(&["init", "--layout", &l]);
    umoci(&["new", "--image", &img("busybox")]);
    umoci(&[
        "config",
        "--image",
        &img("busybox"),
        "--os",
        "linux",
        "--architecture",
        "amd64",
    ]);

    let b1 = base.join("b1");
    umoci_unpack(&img("busybox"), &b1);
    let root = b1.join("rootfs");
    for d in ["bin", "etc", "srv", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    std::fs::write(root.join("etc/greeting"), "hello from layer 1\n").unwrap();
    std::fs::write(root.join("etc/old"), "deleted by layer 2\n").unwrap();
    umoci(&["repack", "--image", &img("busybox"), b1.to_str().unwrap()]);

    let b2 = base.join("b2");
    umoci_unpack(&img("busybox"), &b2);
    let root = b2.join("rootfs");
    std::fs::remove_file(root.join("etc/old")).unwrap();
    std::fs::hard_link(
        root.join("etc/greeting"),
        root.join("etc/greeting-hardlink"),
    )
    .unwrap();
    std::os::unix::fs::symlink("greeting", root.join("etc/greeting-symlink")).unwrap();
    umoci(&["repack", "--image", &img("busybox"), b2.to_str().unwrap()]);
    umoci(&[
        "config",
        "--image",
        &img("busybox"),
        "--config.cmd",
        "/bin/sh",
        "--config.env",
        "GREETING=hello",
        "--config.workingdir",
        "/srv",
        "--config.user",
        "1000",
    ]);

    // The arm64 image is made by hand: one uncompressed layer.
    let (arm_b, arm_d, _) = one_file_image(
        &layout,
        "arm64",
        serde_json::json!({"Cmd": ["/bin/true"]}),
        "etc/arch",
        b"arm64 image\n",
    );

    let index_path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let amd = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "busybox")
        .unwrap()
        .clone();
    let multi = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": amd["mediaType"], "digest": amd["digest"], "size": amd["size"],
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": format!("sha256:{arm_d}"), "size": arm_b.len(),
             "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    });
    let multi_b = serde_json::to_vec(&multi).unwrap();
    let multi_d = put_blob(&layout, &multi_b);
    let list = index["manifests"].as_array_mut().unwrap();
    list.push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{arm_d}"), "size": arm_b.len(),
        "annotations": {"org.opencontainers.image.ref.name": "tiny-arm64"},
    }));
    list.push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": format!("sha256:{multi_d}"), "size": multi_b.len(),
        "annotations": {"org.opencontainers.image.ref.name": "multi"},
    }));
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    Images { dir: layout }
}

/// Writes into the OCI layout `layout` a one-layer image for `arch` whose
/// uncompressed layer holds one regular file; `config` is its config's
/// `config` object. Returns the manifest's bytes and hex digest, and the
/// layer's hex digest.
fn one_file_image(
    layout: &Path,
    arch: &str,
    config: serde_json::Value,
    path: &str,
    data: &[u8],
) -> (Vec<u8>, String, String) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    // The unpacker parses these; left blank they are not numbers.
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, path, data).unwrap();
    let layer = tar.into_inner().unwrap();
    let layer_d = put_blob(layout, &layer);
    let config = serde_json::json!({
        "architecture": arch, "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_d}")]},
    });
    let config_b = serde_json::to_vec(&config).unwrap();
    let config_d = put_blob(layout, &config_b);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{config_d}"), "size": config_b.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{layer_d}"), "size": layer.len()}],
    });
    let manifest_b = serde_json::to_vec(&manifest).unwrap();
    let manifest_d = put_blob(layout, &manifest_b);
    (manifest_b, manifest_d, layer_d)
}

/// Adds `data` as a blob of an OCI layout; returns its hex digest.
pub fn put_blob(layout: &Path, data: &[u8]) -> String {
    let hex = sha256_hex(data);
    std::fs::write(layout.join("blobs/sha256").join(&hex), data).unwrap();
    hex
}

/// A one-layer image with an uncompressed layer of `size` random bytes, as its own
/// OCI layout (tag `big`).
pub fn big_image(dir: &Path, size: usize) -> String {
    let layout = dir.join("big-layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let mut data = vec![0u8; size];
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    f.read_exact(&mut data).unwrap();
    let (m_b, m_d, layer_d) =
        one_file_image(&layout, "amd64", serde_json::json!({}), "big.bin", &data);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{m_d}"), "size": m_b.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "big"}}],
    });
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    layer_d
}

/// `a3s-box ARGS` with `A3S_BOX_HOME=home`.
pub fn a3s(home: &Path, args: &[&str]) -> Output {
    a3s_env(home, args, &[], None)
}

pub fn a3s_env(home: &Path, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("A3S_BOX_HOME", home)
        .env_remove("DOCKER_CONFIG")
        .env_remove("A3S_IMAGE_CACHE_SIZE")
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run a3s-box");
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "a3s-box failed ({}):\n{}\n{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// A TCP relay to a local port that slows the download direction to `rate` bytes a
/// second, so a test can act in the middle of a transfer. Counts bytes relayed.
pub struct SlowProxy {
    pub port: u16,
    pub relayed: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SlowProxy {
    pub fn start(upstream: u16, rate: u64) -> SlowProxy {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let relayed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = relayed.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue; // dropping the client closes it, as a dead server would
                };
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_in, &mut s_out);
                    let _ = s_out.shutdown(std::net::Shutdown::Write);
                });
                let counter = counter.clone();
                let (mut s_in, mut c_out) = (server, client);
                std::thread::spawn(move || {
                    let chunk = 16 * 1024;
                    let pause = Duration::from_secs_f64(chunk as f64 / rate as f64);
                    let mut buf = vec![0u8; chunk];
                    loop {
                        match s_in.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if c_out.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                                counter.fetch_add(n as u64, Ordering::SeqCst);
                                std::thread::sleep(pause);
                            }
                        }
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        SlowProxy { port, relayed }
    }
}

/// An OCI layout at `dir/<tag>-layout` holding one image (tag `tag`) of one layer:
/// `layer` is the blob as stored, `diff` the uncompressed tar it decompresses to.
pub fn one_layer_image(
    dir: &Path,
    tag: &str,
    layer: &[u8],
    diff: &[u8],
    media_type: &str,
) -> String {
    let layout = dir.join(format!("{tag}-layout"));
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let layer_d = put_blob(&layout, layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/x"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(diff))]},
    });
    let config_b = serde_json::to_vec(&config).unwrap();
    let config_d = put_blob(&layout, &config_b);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{config_d}"), "size": config_b.len()},
        "layers": [{"mediaType": media_type, "digest": format!("sha256:{layer_d}"), "size": layer.len()}],
    });
    let m_b = serde_json::to_vec(&manifest).unwrap();
    let m_d = put_blob(&layout, &m_b);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{m_d}"), "size": m_b.len(),
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    });
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    format!("oci:{}:{tag}", layout.display())
}

/// What the end-to-end suites that boot the busybox image share: a state
/// directory (on the harness VM's own /tmp), the guest kernel, and a registry
/// on loopback that holds the image as `tests/busybox:1`.
pub struct BoxEnv {
    pub home: TempDir,
    pub kernel: PathBuf,
    /// Keeps the registry running for the whole test binary.
    pub registry: Registry,
}

impl BoxEnv {
    pub fn start(suite: &str, kernel: PathBuf) -> BoxEnv {
        let registry = Registry::start();
        registry.push(&images().src("busybox"), "tests/busybox:1");
        BoxEnv {
            home: TempDir::new(&format!("e2e-{suite}-home")),
            kernel,
            registry,
        }
    }

    /// The busybox image's reference in the registry.
    pub fn image(&self) -> String {
        format!("{}/tests/busybox:1", self.registry.host())
    }
}
