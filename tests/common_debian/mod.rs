//! The Debian test image: built on the host by `scripts/build-test-image` (from
//! Debian's mirrors, which the KVM harness cannot reach) and named to the tests by
//! `A3S_TEST_DEBIAN_IMAGE`, as `scripts/test` does.
#![allow(dead_code)] // each suite uses its own subset

use std::path::PathBuf;

/// The name the archive loads as.
pub const IMAGE: &str = "localhost/a3s-test/debian:bookworm";

/// The image's oci-archive. Fails (never skips) when it is not there. The tests
/// read it where it is: over the harness's 9p share one file of this size takes
/// about half a second (it is trees of many small files that crawl there), less
/// than copying it into the VM first would.
pub fn debian_image_archive() -> PathBuf {
    let var = std::env::var_os("A3S_TEST_DEBIAN_IMAGE").filter(|v| !v.is_empty());
    let Some(path) = var.map(PathBuf::from) else {
        panic!(
            "A3S_TEST_DEBIAN_IMAGE is not set: build the image with scripts/build-test-image \
             and set the variable to the path it prints last (scripts/test does both)"
        );
    };
    assert!(
        path.is_file(),
        "A3S_TEST_DEBIAN_IMAGE is {}, which is not a file: run scripts/build-test-image \
         and set the variable to the path it prints last (inside scripts/kvm-harness, \
         /tmp is the VM's own: the host's is not there)",
        path.display()
    );
    path
}

/// A state directory on the VM's own /tmp with the image's archive loaded
/// into it, and the guest kernel: what a suite of Debian boxes runs against.
pub struct Loaded {
    pub home: crate::common_registry::TempDir,
    pub kernel: PathBuf,
}

impl Loaded {
    /// Loads the archive into a new state directory named after `tag`.
    pub fn new(tag: &str) -> Loaded {
        let kernel = crate::common::guest_kernel();
        let archive = debian_image_archive();
        let home = crate::common_registry::TempDir::new(tag);
        let out = crate::common::a3s_in(
            home.path(),
            &kernel,
            &["load", "-i", archive.to_str().unwrap()],
            None,
        );
        assert_eq!(out.status.code(), Some(0), "load failed");
        assert_eq!(
            crate::common_registry::stdout(&out),
            format!("Loaded image: {IMAGE}\n")
        );
        Loaded { home, kernel }
    }

    /// `a3s-box args` against this state directory.
    pub fn a3s(&self, args: &[&str]) -> std::process::Output {
        crate::common::a3s_in(self.home.path(), &self.kernel, args, None)
    }

    /// Starts an HTTP server of the host's on `bind_ip` that answers
    /// `from-the-host`, and runs a box (with `run_args`) that curls it by the
    /// name `url_host`.
    pub fn curl_host_server(
        &self,
        bind_ip: &str,
        url_host: &str,
        run_args: &[&str],
    ) -> std::process::Output {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind((bind_ip, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let _ =
                    conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 14\r\n\r\nfrom-the-host\n");
            }
        });
        let url = format!("http://{url_host}:{port}/");
        let mut args = vec!["run", "--rm"];
        args.extend(run_args);
        args.extend([IMAGE, "curl", "-fsS", "--max-time", "20", &url]);
        self.a3s(&args)
    }

    /// Polls until `addr` answers a GET of `path` with a page; the response.
    pub fn page_on(&self, addr: &str, path: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            match http_get(addr, path) {
                Ok(r) if r.starts_with("HTTP/1.1 200") => return r,
                r => assert!(
                    std::time::Instant::now() < deadline,
                    "{addr}{path} never answered with a page (last: {r:?})\n{}",
                    crate::common::box_logs(self.home.path(), 30)
                ),
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }

    /// `a3s-box args`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.a3s(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            crate::common_registry::stderr(&out)
        );
        crate::common_registry::stdout(&out)
    }
}

/// One HTTP GET of `path` from `addr`; the whole response.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}
