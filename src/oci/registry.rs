//! The registry client (distribution spec v2): scheme and TLS choice, anonymous,
//! basic and bearer-token auth, retries with backoff, manifests, and blobs verified
//! against their digest while they stream to disk, resumed where a previous attempt
//! stopped.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use ureq::http::{self, HeaderMap, Method, Response};
use ureq::Body;

use super::auth::{self, Challenge};
use super::digest::{Digest, Hasher};
use super::manifest::{self, Descriptor, Manifest};
use super::{OciError, Result};

/// Attempts for one request before giving up on 5xx answers and broken connections.
const ATTEMPTS: u32 = 4;
/// First pause between attempts; doubled after each.
const BACKOFF: Duration = Duration::from_millis(250);

/// How to reach one registry.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--tls-verify=false`: accept any certificate, and fall back to plain HTTP.
    pub insecure: bool,
    /// Ask for push rights too (bearer scope `pull,push`).
    pub push: bool,
    /// Use these instead of the stored credentials (`login` checks them this way).
    pub credentials: Option<(String, String)>,
}

/// A connection to one repository on one registry.
pub struct Client {
    agent: ureq::Agent,
    /// `host[:port]` as in the reference.
    registry: String,
    base: String,
    repository: String,
    creds: Option<(String, String)>,
    push: bool,
    /// The `Authorization` value that last worked (or the challenge gave).
    authorization: Mutex<Option<String>>,
}

/// A fetched manifest: the parsed form, the exact bytes (whose digest names it), and
/// its media type.
pub struct FetchedManifest {
    pub manifest: Manifest,
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub media_type: String,
}

fn is_loopback(host_port: &str) -> bool {
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Docker's per-registry CA directory: `<state>/certs.d/<host:port>/`.
fn certs_dir(registry: &str) -> PathBuf {
    crate::paths::state_dir().join("certs.d").join(registry)
}

fn load_ca(registry: &str) -> Result<Option<Vec<ureq::tls::Certificate<'static>>>> {
    let dir = certs_dir(registry);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(None);
    };
    let mut certs = Vec::new();
    for entry in rd.filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("crt") {
            continue;
        }
        let pem = std::fs::read(&path).map_err(|e| OciError::io("cannot read", &path, e))?;
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                Ok(_) => {}
                Err(_) => return Err(OciError::BadCertificate(path)),
            }
        }
    }
    Ok((!certs.is_empty()).then_some(certs))
}

fn agent(tls: ureq::tls::TlsConfig) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls)
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("a3s-box/", env!("CARGO_PKG_VERSION")))
        .build();
    ureq::Agent::new_with_config(config)
}

fn classify(registry: &str, e: ureq::Error) -> std::result::Result<OciError, ureq::Error> {
    match e {
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_) => Ok(OciError::Tls {
            registry: registry.to_string(),
            hint: certs_dir(registry).join("ca.crt").display().to_string(),
            source: Box::new(e),
        }),
        ureq::Error::Io(ref io) if io.to_string().contains("certificate") => Ok(OciError::Tls {
            registry: registry.to_string(),
            hint: certs_dir(registry).join("ca.crt").display().to_string(),
            source: Box::new(e),
        }),
        other => Err(other),
    }
}

impl Client {
    /// Connects to `registry` (as written in a reference) for `repository`: finds the
    /// scheme that answers `GET /v2/` and remembers it.
    pub fn connect(registry: &str, repository: &str, opts: &Options) -> Result<Client> {
        let api_host = if registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        };
        let ca = load_ca(registry)?;
        let insecure = opts.insecure || auth::insecure_registries().iter().any(|r| r == registry);
        let relaxed = insecure || (is_loopback(registry) && ca.is_none());
        let tls = match (&ca, relaxed) {
            (_, true) if opts.insecure || ca.is_none() => ureq::tls::TlsConfig::builder()
                .disable_verification(true)
                .build(),
            (Some(certs), _) => ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(certs))
                .build(),
            (None, _) => ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                .build(),
        };
        // Loopback and insecure registries are tried over plain HTTP first (most
        // local registries are), then HTTPS; everything else is HTTPS only.
        let schemes: &[&str] = match (relaxed, ca.is_some()) {
            (true, false) => &["http", "https"],
            _ => &["https"],
        };
        let mut client = Client {
            agent: agent(tls),
            registry: registry.to_string(),
            base: String::new(),
            repository: repository.to_string(),
            creds: match &opts.credentials {
                Some(c) => Some(c.clone()),
                None => auth::lookup(registry)?,
            },
            push: opts.push,
            authorization: Mutex::new(None),
        };
        let mut last = None;
        for scheme in schemes {
            client.base = format!("{scheme}://{api_host}");
            let url = format!("{}/v2/", client.base);
            match client.raw(Method::GET, &url, &[], None) {
                // 400 is what a TLS server says to plain HTTP.
                Ok(r) if r.status() != 400 => return Ok(client),
                Ok(r) => {
                    last = Some(client.status_error(&url, r));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one scheme is tried"))
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// One request with retries on broken connections and 5xx answers, no auth.
    fn raw(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response<Body>> {
        let mut pause = BACKOFF;
        let mut attempt = 1;
        loop {
            let mut req = http::Request::builder().method(method.clone()).uri(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(a) = self.authorization.lock().expect("not poisoned").as_deref() {
                if !headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                {
                    req = req.header("Authorization", a);
                }
            }
            let result = match body {
                Some(b) => self.agent.run(req.body(b).expect("valid request")),
                None => self.agent.run(req.body(()).expect("valid request")),
            };
            let err = match result {
                Ok(r) if r.status().is_server_error() && attempt < ATTEMPTS => None,
                Ok(r) => return Ok(r),
                Err(e) => match classify(&self.registry, e) {
                    Ok(fatal) => return Err(fatal),
                    Err(e) => Some(e),
                },
            };
            if attempt >= ATTEMPTS {
                return Err(OciError::Unreachable {
                    registry: self.registry.clone(),
                    attempts: attempt,
                    source: Box::new(err.expect("only errors end here")),
                });
            }
            std::thread::sleep(pause);
            pause *= 2;
            attempt += 1;
        }
    }

    /// A request that answers auth challenges: on 401 it gets a token (or uses
    /// basic credentials) and tries once more.
    pub fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response<Body>> {
        let resp = self.raw(method.clone(), url, headers, body)?;
        if resp.status() != 401 {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse);
        self.authenticate(challenge)?;
        let resp = self.raw(method, url, headers, body)?;
        if resp.status() == 401 {
            return Err(self.unauthorized(if self.creds.is_some() {
                "the registry refused the credentials"
            } else {
                "the registry requires credentials"
            }));
        }
        Ok(resp)
    }

    fn unauthorized(&self, detail: &str) -> OciError {
        OciError::Unauthorized {
            registry: self.registry.clone(),
            detail: detail.to_string(),
        }
    }

    fn basic(&self) -> Option<String> {
        self.creds.as_ref().map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        })
    }

    fn authenticate(&self, challenge: Option<Challenge>) -> Result<()> {
        let Some(ch) = challenge else {
            return Err(self.unauthorized("it answered 401 without a WWW-Authenticate challenge"));
        };
        let value = match ch.scheme.as_str() {
            "basic" => match self.basic() {
                Some(b) => b,
                None => return Err(self.unauthorized("the registry requires credentials")),
            },
            "bearer" => self.token(&ch)?,
            other => {
                return Err(self.unauthorized(&format!("unsupported auth scheme {other:?}")));
            }
        };
        *self.authorization.lock().expect("not poisoned") = Some(value);
        Ok(())
    }

    fn token(&self, ch: &Challenge) -> Result<String> {
        let realm = ch
            .params
            .get("realm")
            .ok_or_else(|| self.unauthorized("its bearer challenge names no token realm"))?;
        let actions = if self.push { "pull,push" } else { "pull" };
        let mut params = Vec::new();
        if !self.repository.is_empty() {
            let scope = format!("repository:{}:{actions}", self.repository);
            params.push(format!("scope={}", query_escape(&scope)));
        }
        if let Some(s) = ch.params.get("service") {
            params.push(format!("service={}", query_escape(s)));
        }
        let sep = if realm.contains('?') { '&' } else { '?' };
        let url = if params.is_empty() {
            realm.clone()
        } else {
            format!("{realm}{sep}{}", params.join("&"))
        };
        let basic = self.basic();
        let mut headers = vec![];
        if let Some(b) = &basic {
            headers.push(("Authorization", b.as_str()));
        }
        let mut req = http::Request::builder().method(Method::GET).uri(&url);
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        let mut resp = self
            .agent
            .run(req.body(()).expect("valid request"))
            .map_err(|e| match classify(&self.registry, e) {
                Ok(fatal) => fatal,
                Err(e) => OciError::Unreachable {
                    registry: realm.clone(),
                    attempts: 1,
                    source: Box::new(e),
                },
            })?;
        if resp.status() == 401 || resp.status() == 403 {
            return Err(self.unauthorized("the token service refused the credentials"));
        }
        if !resp.status().is_success() {
            return Err(self.status_error(&url, resp));
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body = resp
            .body_mut()
            .read_to_vec()
            .map_err(|e| OciError::Unreachable {
                registry: realm.clone(),
                attempts: 1,
                source: Box::new(e),
            })?;
        let t: Token = serde_json::from_slice(&body).map_err(|source| OciError::Malformed {
            what: "token response".into(),
            source,
        })?;
        let token = t
            .token
            .or(t.access_token)
            .ok_or_else(|| self.unauthorized("the token service returned no token"))?;
        Ok(format!("Bearer {token}"))
    }

    /// The error for an unexpected answer, with the registry's own words.
    pub fn status_error(&self, url: &str, mut resp: Response<Body>) -> OciError {
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(4096)
            .read_to_string()
            .unwrap_or_default();
        let code = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_string));
        match (status, code.as_deref()) {
            (401, _) => self.unauthorized("the registry refused the request"),
            (403, _) | (_, Some("DENIED")) => OciError::Denied(self.repository.clone()),
            (404, Some("MANIFEST_UNKNOWN" | "NAME_UNKNOWN")) => {
                OciError::ManifestUnknown(format!("{}/{}", self.registry, self.repository))
            }
            _ => OciError::Status {
                registry: self.registry.clone(),
                status,
                url: url.to_string(),
                body: body.trim().chars().take(300).collect(),
            },
        }
    }

    pub fn url(&self, kind: &str, reference: &str) -> String {
        format!("{}/v2/{}/{kind}/{reference}", self.base, self.repository)
    }

    /// The manifest named by a tag or digest; when a digest names it, the bytes must
    /// hash to it.
    pub fn manifest(&self, reference: &str) -> Result<FetchedManifest> {
        let url = self.url("manifests", reference);
        let mut resp = self.request(Method::GET, &url, &[("Accept", manifest::ACCEPT)], None)?;
        if resp.status() == 404 {
            return Err(OciError::ManifestUnknown(format!(
                "{}/{}:{reference}",
                self.registry, self.repository
            )));
        }
        if !resp.status().is_success() {
            return Err(self.status_error(&url, resp));
        }
        let media_type = header(resp.headers(), "content-type").unwrap_or_default();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(4 << 20)
            .read_to_vec()
            .map_err(|e| self.transfer_error(e))?;
        let digest = Digest::of(&bytes);
        if let Ok(expected) = Digest::parse(reference) {
            super::digest::verify(&format!("manifest {reference}"), &expected, &digest)?;
        }
        let manifest = Manifest::parse(Some(&media_type), &bytes)?;
        let media_type = match &manifest {
            Manifest::Image(m) => m.media_type.clone(),
            Manifest::Index(i) => i.media_type.clone(),
        }
        .unwrap_or(media_type);
        Ok(FetchedManifest {
            manifest,
            bytes,
            digest,
            media_type,
        })
    }

    fn transfer_error(&self, e: ureq::Error) -> OciError {
        match classify(&self.registry, e) {
            Ok(fatal) => fatal,
            Err(e) => OciError::Unreachable {
                registry: self.registry.clone(),
                attempts: ATTEMPTS,
                source: Box::new(e),
            },
        }
    }

    /// Downloads blob `desc` into `partial`, resuming from what is already there,
    /// verifying size and digest as the bytes arrive; `progress` gets the byte count
    /// so far. On a digest or size mismatch `partial` is removed. On success `partial`
    /// holds exactly the blob.
    pub fn fetch_blob(
        &self,
        desc: &Descriptor,
        partial: &Path,
        progress: &dyn Fn(u64),
    ) -> Result<()> {
        let what = format!("blob {}", desc.digest);
        let url = self.url("blobs", desc.digest.as_str());
        let mut pause = BACKOFF;
        let mut attempt = 1;
        loop {
            match self.fetch_blob_once(desc, &url, partial, progress) {
                Ok(hasher) => {
                    let len = hasher.len();
                    if len != desc.size {
                        let _ = std::fs::remove_file(partial);
                        return Err(OciError::SizeMismatch {
                            what,
                            expected: desc.size,
                            actual: len,
                        });
                    }
                    let got = hasher.finish();
                    if let Err(e) = super::digest::verify(&what, &desc.digest, &got) {
                        let _ = std::fs::remove_file(partial);
                        return Err(e);
                    }
                    return Ok(());
                }
                Err(Fetch::Fatal(e)) => return Err(e),
                Err(Fetch::Retry(e)) if attempt >= ATTEMPTS => {
                    return Err(OciError::Unreachable {
                        registry: self.registry.clone(),
                        attempts: attempt,
                        source: Box::new(e),
                    })
                }
                Err(Fetch::Retry(_)) => {
                    std::thread::sleep(pause);
                    pause *= 2;
                    attempt += 1;
                }
            }
        }
    }

    fn fetch_blob_once(
        &self,
        desc: &Descriptor,
        url: &str,
        partial: &Path,
        progress: &dyn Fn(u64),
    ) -> std::result::Result<Hasher, Fetch> {
        let io = |what, e| Fetch::Fatal(OciError::io(what, partial, e));
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(partial)
            .map_err(|e| io("cannot open", e))?;
        let mut have = file.metadata().map_err(|e| io("cannot stat", e))?.len();
        if have > desc.size {
            file.set_len(0).map_err(|e| io("cannot truncate", e))?;
            have = 0;
        }
        let mut hasher = Hasher::default();
        if have > 0 {
            file.seek(SeekFrom::Start(0))
                .map_err(|e| io("cannot read", e))?;
            let mut buf = vec![0u8; 1 << 16];
            let mut r = (&mut file).take(have);
            loop {
                let n = r.read(&mut buf).map_err(|e| io("cannot read", e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
        }
        if have == desc.size {
            return Ok(hasher);
        }
        let range = format!("bytes={have}-");
        let headers: Vec<(&str, &str)> = if have > 0 {
            vec![("Range", range.as_str())]
        } else {
            vec![]
        };
        let resp = self
            .request(Method::GET, url, &headers, None)
            .map_err(|e| match e {
                OciError::Unreachable { source, .. } => Fetch::Retry(*source),
                e => Fetch::Fatal(e),
            })?;
        match resp.status().as_u16() {
            206 => {}
            200 if have > 0 => {
                // The registry ignored the range: start over.
                file.set_len(0).map_err(|e| io("cannot truncate", e))?;
                hasher = Hasher::default();
                have = 0;
            }
            200 => {}
            404 => {
                return Err(Fetch::Fatal(OciError::Status {
                    registry: self.registry.clone(),
                    status: 404,
                    url: url.to_string(),
                    body: "blob unknown to the registry".into(),
                }))
            }
            _ => return Err(Fetch::Fatal(self.status_error(url, resp))),
        }
        progress(have);
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 17];
        let mut got = have;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = file.sync_data();
                    return Err(Fetch::Retry(ureq::Error::Io(e)));
                }
            };
            if got + n as u64 > desc.size {
                // More than announced: the content is not what the descriptor names.
                let _ = std::fs::remove_file(partial);
                return Err(Fetch::Fatal(OciError::SizeMismatch {
                    what: format!("blob {}", desc.digest),
                    expected: desc.size,
                    actual: got + n as u64,
                }));
            }
            file.write_all(&buf[..n])
                .map_err(|e| io("cannot write", e))?;
            hasher.update(&buf[..n]);
            got += n as u64;
            progress(got);
        }
        file.sync_all().map_err(|e| io("cannot sync", e))?;
        if got < desc.size {
            return Err(Fetch::Retry(ureq::Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the connection closed before the whole blob arrived",
            ))));
        }
        Ok(hasher)
    }

    /// Whether the registry already has blob `digest` in this repository.
    pub fn has_blob(&self, digest: &Digest) -> Result<bool> {
        let url = self.url("blobs", digest.as_str());
        let resp = self.request(Method::HEAD, &url, &[], None)?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.status_error(&url, resp)),
        }
    }

    /// Checks that the credentials are accepted: `GET /v2/` with auth.
    pub fn check_login(&self) -> Result<()> {
        let url = format!("{}/v2/", self.base);
        let resp = self.request(Method::GET, &url, &[], None)?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.status_error(&url, resp))
        }
    }
}

enum Fetch {
    Retry(ureq::Error),
    Fatal(OciError),
}

pub(crate) fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_recognised() {
        for r in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.3.4.5",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "docker.io",
            "10.0.0.1:5000",
            "ghcr.io",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }

    /// A small HTTP server: answers each request with `reply(port, head)`.
    fn serve(reply: impl Fn(u16, &str) -> String + Send + 'static) -> u16 {
        use std::io::{BufRead, BufReader};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let mut head = String::new();
                let mut r = BufReader::new(s.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line.to_ascii_lowercase());
                }
                let _ = s.write_all(reply(port, &head).as_bytes());
            }
        });
        port
    }

    fn answer(status: &str, extra: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn bearer_challenge_is_answered_with_a_token_from_the_realm() {
        let port = serve(|port, head| {
            let first = head.lines().next().unwrap_or("").to_string();
            let auth = head
                .lines()
                .find_map(|l| l.strip_prefix("authorization: "))
                .unwrap_or("")
                .trim()
                .to_string();
            if first.starts_with("get /token?") {
                assert!(
                    first.contains("scope=repository%3ateam%2fapp%3apull"),
                    "{first}"
                );
                assert!(first.contains("service=test"), "{first}");
                // The stored credentials go to the token service: bob:pw.
                if auth == "basic ym9ionb3" {
                    answer("200 OK", "", r#"{"token":"t0k"}"#)
                } else {
                    answer("401 Unauthorized", "", "")
                }
            } else if auth == "bearer t0k" {
                answer("200 OK", "", "{}")
            } else {
                let ch = format!(
                    "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"test\"\r\n"
                );
                answer("401 Unauthorized", &ch, "")
            }
        });
        let reg = format!("127.0.0.1:{port}");
        let opts = |pw: &str| Options {
            credentials: Some(("bob".into(), pw.into())),
            ..Default::default()
        };
        let c = Client::connect(&reg, "team/app", &opts("pw")).unwrap();
        c.check_login().unwrap();
        let c = Client::connect(&reg, "team/app", &opts("nope")).unwrap();
        let err = c.check_login().unwrap_err();
        assert!(matches!(err, OciError::Unauthorized { .. }), "{err}");
        assert!(err.to_string().contains("refused the credentials"), "{err}");
    }

    #[test]
    fn server_errors_are_retried_then_reported() {
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let h = hits.clone();
        let port = serve(move |_, head| {
            if head.starts_with("get /v2/ ") {
                return answer("200 OK", "", "{}");
            }
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            answer("503 Service Unavailable", "", "busy")
        });
        let c = Client::connect(&format!("127.0.0.1:{port}"), "a", &Options::default()).unwrap();
        let err = c.manifest("latest").err().unwrap();
        assert!(err.to_string().contains("503"), "{err}");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), ATTEMPTS);
    }

    #[test]
    fn token_scope_is_escaped() {
        assert_eq!(
            query_escape("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }
}
