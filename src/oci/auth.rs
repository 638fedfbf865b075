//! Registry credentials and settings: the Docker-compatible credentials file
//! (`auths.<registry>.auth` = base64 `user:password`) and `WWW-Authenticate`
//! challenges.
//!
//! Credentials live in `$DOCKER_CONFIG/config.json` when `DOCKER_CONFIG` is set (so
//! a shared Docker login works), else in `<state>/auth/config.json`; the file is
//! written atomically with mode 0600.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::{OciError, Result};

/// Where credentials are kept.
pub fn credentials_path() -> PathBuf {
    match std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("config.json"),
        None => crate::paths::state_dir().join("auth/config.json"),
    }
}

/// The key credentials are stored under: Docker keeps Docker Hub's under its v1 URL.
pub fn credentials_key(registry: &str) -> String {
    if registry == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    }
}

fn read_object(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    match std::fs::read(path) {
        Ok(data) if data.iter().all(u8::is_ascii_whitespace) => Ok(Default::default()),
        Ok(data) => serde_json::from_slice(&data).map_err(|source| OciError::Malformed {
            what: format!("credentials file {}", path.display()),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(OciError::io("cannot read", path, e)),
    }
}

/// The user name and password stored for `registry`, if any.
pub fn lookup(registry: &str) -> Result<Option<(String, String)>> {
    let path = credentials_path();
    let obj = read_object(&path)?;
    let Some(auths) = obj.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let key = credentials_key(registry);
    let entry = auths
        .get(&key)
        .or_else(|| auths.get(&format!("https://{registry}")))
        .or_else(|| auths.get(registry));
    let Some(auth) = entry.and_then(|e| e.get("auth")).and_then(|a| a.as_str()) else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .ok()
        .and_then(|d| String::from_utf8(d).ok());
    Ok(decoded.and_then(|s| {
        s.split_once(':')
            .map(|(u, p)| (u.to_string(), p.to_string()))
    }))
}

/// Stores (or, with `None`, removes) the credentials for `registry`, keeping every
/// other key of the file as it was. Returns whether anything was removed.
pub fn store(registry: &str, creds: Option<(&str, &str)>) -> Result<bool> {
    let path = credentials_path();
    let mut obj = read_object(&path)?;
    let auths = obj
        .entry("auths")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    if !auths.is_object() {
        *auths = serde_json::Value::Object(Default::default());
    }
    let auths = auths.as_object_mut().expect("made an object above");
    let key = credentials_key(registry);
    let removed = match creds {
        Some((user, pass)) => {
            let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            auths.insert(key, serde_json::json!({ "auth": auth }));
            false
        }
        None => auths.remove(&key).is_some(),
    };
    write_private(&path, &serde_json::Value::Object(obj))?;
    Ok(removed)
}

/// Atomic write with mode 0600: the file holds passwords.
fn write_private(path: &Path, value: &serde_json::Value) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| OciError::io("cannot create", dir, e))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let data = serde_json::to_vec_pretty(value).expect("JSON values always serialise");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        OciError::io("cannot write", path, e)
    })
}

/// `insecure-registries` from `<state>/config.json`: registries reached over plain
/// HTTP or without certificate checks.
pub fn insecure_registries() -> Vec<String> {
    let path = crate::paths::state_dir().join("config.json");
    read_object(&path)
        .ok()
        .and_then(|o| o.get("insecure-registries").cloned())
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `bearer` or `basic`, lower case.
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    /// Parses `Scheme k="v", k2=v2`. Quoted values may contain commas and `\"`.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.is_empty() {
            return None;
        }
        let mut params = BTreeMap::new();
        let mut chars = rest.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
                chars.next();
            }
            let key: String = chars
                .by_ref()
                .take_while(|c| *c != '=')
                .collect::<String>()
                .trim()
                .to_ascii_lowercase();
            if key.is_empty() {
                break;
            }
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(c) = chars.peek().copied() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                value = value.trim().to_string();
            }
            params.insert(key, value);
        }
        Some(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_with_quoted_commas_parses() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["service"], "registry.example");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
    }

    #[test]
    fn basic_challenge_and_unquoted_values_parse() {
        let c = Challenge::parse(r#"Basic realm=x, charset="UTF-8""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "x");
        assert_eq!(c.params["charset"], "UTF-8");
        assert!(Challenge::parse("").is_none());
    }

    #[test]
    fn docker_hub_credentials_use_the_v1_key() {
        assert_eq!(credentials_key("docker.io"), "https://index.docker.io/v1/");
        assert_eq!(credentials_key("127.0.0.1:5000"), "127.0.0.1:5000");
    }
}
