//! Image references (`alpine`, `ghcr.io/org/app:1.2@sha256:…`) parsed and normalised
//! the way the Docker CLI does, so a name means the same image here as under `docker pull`.
//!
//! Grammar (distribution reference):
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] path-component [ "/" path-component ]*
//! domain     := host [ ":" port ]          host: domain-name | "[" IPv6 "]"
//! path-comp  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest     := algorithm ":" hex
//! ```
//!
//! The first `/`-separated component is a registry only if it contains `.` or `:`, is
//! `localhost`, or has uppercase letters (repositories never do); otherwise the name
//! lives on Docker Hub, where single-component names get the `library/` namespace.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Docker Hub's canonical name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's registry API.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// The tag assumed when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";

const LEGACY_DOCKER_HUB: &str = "index.docker.io";
const OFFICIAL_NAMESPACE: &str = "library/";
/// Longest `registry/repository`, as the distribution reference grammar allows.
const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("image reference is empty")]
    Empty,
    #[error("invalid reference {0:?}: repository name must be lowercase")]
    Uppercase(String),
    #[error("invalid reference {0:?}: repository name must not be more than 255 characters")]
    NameTooLong(String),
    #[error("invalid reference {input:?}: bad repository name component {component:?}")]
    BadComponent { input: String, component: String },
    #[error("invalid reference {input:?}: bad registry {registry:?}")]
    BadRegistry { input: String, registry: String },
    #[error("invalid reference {input:?}: bad tag {tag:?}")]
    BadTag { input: String, tag: String },
    #[error("invalid reference {input:?}: bad digest {digest:?}")]
    BadDigest { input: String, digest: String },
    #[error("invalid reference {input:?}: unsupported digest algorithm {algorithm:?}")]
    UnsupportedDigest { input: String, algorithm: String },
    #[error("invalid reference {0:?}: cannot specify 64-byte hexadecimal strings")]
    HexIdentifier(String),
}

/// A fully normalised image reference.
///
/// `tag` is `latest` when the input named neither tag nor digest; a reference with only
/// a digest keeps `tag: None`, one with both keeps both (the digest wins when pulling).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host, with port if any: `docker.io`, `localhost:5000`, `[::1]:5000`.
    pub registry: String,
    /// Repository path within the registry: `library/alpine`.
    pub repository: String,
    pub tag: Option<String>,
    /// `algorithm:hex`, e.g. `sha256:…`.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `input` as the Docker CLI would, filling in the registry and tag defaults.
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        // Docker refuses these so that an image ID is never mistaken for a name.
        if is_hex_identifier(input) {
            return Err(ReferenceError::HexIdentifier(input.to_owned()));
        }

        // Neither name nor tag may contain `@`, so the first one starts the digest.
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => (rest, Some(parse_digest(input, digest)?)),
            None => (input, None),
        };
        // A tag follows the last `/`, so a registry port (`host:5000/x`) is not a tag.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                if !is_valid_tag(tag) {
                    return Err(ReferenceError::BadTag {
                        input: input.to_owned(),
                        tag: tag.to_owned(),
                    });
                }
                (&rest[..last_slash + i], Some(tag.to_owned()))
            }
            None => (rest, None),
        };

        let (registry, repository) = split_registry(name);
        if repository.to_lowercase() != repository {
            return Err(ReferenceError::Uppercase(input.to_owned()));
        }
        if let Some(registry) = registry.filter(|r| !is_valid_registry(r)) {
            return Err(ReferenceError::BadRegistry {
                input: input.to_owned(),
                registry: registry.to_owned(),
            });
        }
        for component in repository.split('/') {
            if !is_valid_component(component) {
                return Err(ReferenceError::BadComponent {
                    input: input.to_owned(),
                    component: component.to_owned(),
                });
            }
        }

        let registry = match registry {
            None | Some(DOCKER_HUB) | Some(LEGACY_DOCKER_HUB) => DOCKER_HUB.to_owned(),
            Some(other) => other.to_owned(),
        };
        // Only Docker Hub puts official images under `library/`.
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("{OFFICIAL_NAMESPACE}{repository}")
        } else {
            repository.to_owned()
        };
        if registry.len() + 1 + repository.len() > NAME_MAX {
            return Err(ReferenceError::NameTooLong(input.to_owned()));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (tag, _) => tag,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host (and port) to send registry API requests to.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API_HOST
        } else {
            &self.registry
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The name as `docker images` shows it: Docker Hub and `library/` left out.
    ///
    /// Unlike Docker, Hub repositories whose first component would read as a registry
    /// (`docker.io/localhost/x`, `docker.io/a.b/c`) keep the `docker.io/` prefix, so the
    /// short form always parses back to the same repository.
    pub fn familiar(&self) -> String {
        if self.registry != DOCKER_HUB {
            return self.name();
        }
        match self.repository.strip_prefix(OFFICIAL_NAMESPACE) {
            // An official name that reads as an image ID keeps `library/`.
            Some(official) if !official.contains('/') && !is_hex_identifier(official) => {
                official.to_owned()
            }
            _ if split_registry(&self.repository).0.is_some() => self.name(),
            _ => self.repository.clone(),
        }
    }

    /// What to ask the registry's manifest endpoint for: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }

    /// The same repository with `tag`; a digest, if any, is kept as Docker does.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        if !is_valid_tag(tag) {
            return Err(ReferenceError::BadTag {
                input: self.to_string(),
                tag: tag.to_owned(),
            });
        }
        Ok(Reference {
            tag: Some(tag.to_owned()),
            ..self.clone()
        })
    }

    /// Whether the registry is this host (localhost, 127.0.0.0/8, ::1), where plain HTTP
    /// is the default because nobody has a certificate for it.
    pub fn is_loopback_registry(&self) -> bool {
        let host = registry_host(&self.registry);
        if host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            return v6.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback());
        }
        host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// Splits off the registry when the first component looks like one (see module docs).
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// The registry without its port: `host`, `1.2.3.4` or `[::1]`.
fn registry_host(registry: &str) -> &str {
    if registry.starts_with('[') {
        return match registry.find(']') {
            Some(end) => &registry[..=end],
            None => registry,
        };
    }
    registry.split(':').next().unwrap_or(registry)
}

fn is_valid_registry(registry: &str) -> bool {
    let (host, port) = if registry.starts_with('[') {
        // The grammar only constrains the characters inside the brackets.
        let Some(end) = registry.find(']') else {
            return false;
        };
        let inner = &registry[1..end];
        if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match &registry[end + 1..] {
            "" => ("", None),
            rest => match rest.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    // Empty host here means the bracketed IPv6 form, already checked.
    registry.starts_with('[') || host.split('.').all(is_valid_domain_label)
}

fn is_valid_domain_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or any number of `-`.
fn is_valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let is_alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if is_alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !is_alnum(bytes[i]) {
            i += 1;
        }
        let separator = &bytes[start..i];
        let ok = matches!(separator, b"." | b"_" | b"__") || separator.iter().all(|&b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= TAG_MAX
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

/// 64 lowercase hex digits: what Docker takes for an image ID, never a name.
fn is_hex_identifier(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(is_lower_hex)
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// Checks `algorithm:hex`; only the algorithms OCI registers are accepted, as Docker does.
fn parse_digest(input: &str, digest: &str) -> Result<String, ReferenceError> {
    let bad = || ReferenceError::BadDigest {
        input: input.to_owned(),
        digest: digest.to_owned(),
    };
    let (algorithm, hex) = digest.split_once(':').ok_or_else(bad)?;
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.split(['+', '.', '_', '-']).all(|c| {
            c.starts_with(|ch: char| ch.is_ascii_alphabetic())
                && c.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    if !algorithm_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let hex_len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            return Err(ReferenceError::UnsupportedDigest {
                input: input.to_owned(),
                algorithm: algorithm.to_owned(),
            })
        }
    };
    if hex.len() != hex_len || !hex.bytes().all(is_lower_hex) {
        return Err(bad());
    }
    Ok(digest.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parse_normalizes_every_accepted_form() {
        let with_digest = format!("alpine@sha256:{HEX}");
        let tag_and_digest = format!("ghcr.io/org/app:1.2@sha256:{HEX}");
        let sha512 = format!("x/y@sha512:{}", "ab".repeat(64));
        let cases: Vec<(&str, String)> = vec![
            ("alpine", "docker.io/library/alpine:latest".into()),
            ("alpine:3.19", "docker.io/library/alpine:3.19".into()),
            ("user/app", "docker.io/user/app:latest".into()),
            ("docker.io/alpine", "docker.io/library/alpine:latest".into()),
            (
                "docker.io/library/alpine",
                "docker.io/library/alpine:latest".into(),
            ),
            (
                "index.docker.io/user/app:v1",
                "docker.io/user/app:v1".into(),
            ),
            ("host:5000/ns/name:tag", "host:5000/ns/name:tag".into()),
            ("localhost/name", "localhost/name:latest".into()),
            ("localhost:5000/x", "localhost:5000/x:latest".into()),
            ("quay.io/a/b/c", "quay.io/a/b/c:latest".into()),
            ("[::1]:5000/name:t", "[::1]:5000/name:t".into()),
            (
                "127.0.0.1:5000/a_b/c__d/e-f/g--h/i.j",
                "127.0.0.1:5000/a_b/c__d/e-f/g--h/i.j:latest".into(),
            ),
            ("Registry.Example/app", "Registry.Example/app:latest".into()),
            ("localhost:5000", "docker.io/library/localhost:5000".into()),
            (
                &with_digest,
                format!("docker.io/library/alpine@sha256:{HEX}"),
            ),
            (&tag_and_digest, format!("ghcr.io/org/app:1.2@sha256:{HEX}")),
            (&sha512, format!("docker.io/x/y@{}", &sha512[4..])),
            (
                "a:_Tag.With-Mixed_Case",
                "docker.io/library/a:_Tag.With-Mixed_Case".into(),
            ),
        ];
        for (input, want) in cases {
            let parsed = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(parsed.to_string(), want, "{input}");
            assert_eq!(
                Reference::parse(&want).unwrap(),
                parsed,
                "{want} is a fixed point"
            );
        }
    }

    #[test]
    fn parse_splits_into_fields() {
        let r = Reference::parse(&format!("host:5000/ns/name:tag@sha256:{HEX}")).unwrap();
        assert_eq!(r.registry, "host:5000");
        assert_eq!(r.repository, "ns/name");
        assert_eq!(r.tag.as_deref(), Some("tag"));
        assert_eq!(r.digest, Some(format!("sha256:{HEX}")));
        let r = Reference::parse(&format!("name@sha256:{HEX}")).unwrap();
        assert_eq!(r.tag, None, "a digest alone gets no default tag");
    }

    #[test]
    fn parse_rejects_malformed_references() {
        let long_name = format!("a/{}", "b".repeat(250));
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "empty"),
            ("UPPER".into(), "must be lowercase"),
            ("docker.io/User/app".into(), "must be lowercase"),
            ("a:b:c".into(), "bad tag"),
            ("name@sha256:short".into(), "bad digest"),
            (format!("name@sha256:{}", HEX.to_uppercase()), "bad digest"),
            (format!("name@md5:{HEX}"), "unsupported digest"),
            ("name@".into(), "bad digest"),
            (":tag".into(), "component"),
            ("name:".into(), "bad tag"),
            ("name/".into(), "component"),
            ("a//b".into(), "component"),
            ("/a".into(), "component"),
            (long_name, "255 characters"),
            (format!("a:{}", "t".repeat(129)), "bad tag"),
            ("a:-tag".into(), "bad tag"),
            ("has space".into(), "component"),
            ("a/b c:d".into(), "component"),
            ("a_/b".into(), "component"),
            ("a___b".into(), "component"),
            ("a-.b".into(), "component"),
            ("host:port/x".into(), "bad registry"),
            ("-host.io/x".into(), "bad registry"),
            ("[::1/x".into(), "bad registry"),
            ("[zz]:5000/x".into(), "bad registry"),
            (HEX.into(), "hexadecimal"),
        ];
        for (input, want) in cases {
            let err = Reference::parse(&input).expect_err(&input).to_string();
            assert!(err.contains(want), "{input:?}: {err:?} should say {want:?}");
            if !input.is_empty() && input.len() < 100 {
                assert!(
                    err.contains(&format!("{input:?}")),
                    "{err:?} names the input"
                );
            }
        }
    }

    #[test]
    fn tag_of_128_characters_is_the_longest_accepted() {
        let ok = format!("a:{}", "t".repeat(128));
        assert!(Reference::parse(&ok).is_ok());
    }

    #[test]
    fn name_of_255_characters_is_the_longest_accepted() {
        // "docker.io/" + "a/" + 243 = 255
        let ok = format!("a/{}", "b".repeat(243));
        assert!(Reference::parse(&ok).is_ok());
        let too_long = format!("a/{}", "b".repeat(244));
        assert!(matches!(
            Reference::parse(&too_long),
            Err(ReferenceError::NameTooLong(_))
        ));
    }

    #[test]
    fn api_host_of_docker_hub_is_registry_1() {
        assert_eq!(
            Reference::parse("alpine").unwrap().api_host(),
            "registry-1.docker.io"
        );
        assert_eq!(
            Reference::parse("index.docker.io/a/b").unwrap().api_host(),
            "registry-1.docker.io"
        );
        assert_eq!(
            Reference::parse("ghcr.io/a/b").unwrap().api_host(),
            "ghcr.io"
        );
        assert_eq!(
            Reference::parse("localhost:5000/b").unwrap().api_host(),
            "localhost:5000"
        );
    }

    #[test]
    fn an_official_name_that_reads_as_an_image_id_keeps_library_in_its_familiar_form() {
        // Found by fuzzing: Docker accepts `<64 hex>:tag` as a name, whose
        // short form alone would be refused as an image ID.
        let hex = format!("{}a", "0".repeat(63));
        let r = Reference::parse(&format!("{hex}:_")).unwrap();
        assert_eq!(r.familiar(), format!("library/{hex}"));
        assert_eq!(Reference::parse(&r.familiar()).unwrap().name(), r.name());
    }

    #[test]
    fn familiar_drops_docker_hub_and_library() {
        for (input, want) in [
            ("alpine:3", "alpine"),
            ("docker.io/library/alpine", "alpine"),
            ("user/app", "user/app"),
            ("library/a/b", "library/a/b"),
            ("localhost:5000/x", "localhost:5000/x"),
            ("ghcr.io/o/r:1", "ghcr.io/o/r"),
            ("docker.io/localhost/x", "docker.io/localhost/x"),
            ("docker.io/a.b/c", "docker.io/a.b/c"),
        ] {
            let reference = Reference::parse(input).unwrap();
            assert_eq!(reference.familiar(), want, "{input}");
            assert_eq!(Reference::parse(want).unwrap().name(), reference.name());
        }
    }

    #[test]
    fn with_tag_replaces_tag_and_keeps_digest() {
        let r = Reference::parse("alpine:3")
            .unwrap()
            .with_tag("edge")
            .unwrap();
        assert_eq!(r.to_string(), "docker.io/library/alpine:edge");
        let pinned = Reference::parse(&format!("alpine@sha256:{HEX}")).unwrap();
        assert_eq!(
            pinned.with_tag("v1").unwrap().to_string(),
            format!("docker.io/library/alpine:v1@sha256:{HEX}")
        );
        assert!(r.with_tag("bad tag").is_err());
    }

    #[test]
    fn manifest_reference_prefers_digest_over_tag() {
        let r = Reference::parse(&format!("a:1@sha256:{HEX}")).unwrap();
        assert_eq!(r.manifest_reference(), format!("sha256:{HEX}"));
        assert_eq!(Reference::parse("a:1").unwrap().manifest_reference(), "1");
    }

    #[test]
    fn loopback_registries_are_recognised() {
        for (input, loopback) in [
            ("localhost/a", true),
            ("localhost:5000/a", true),
            ("127.0.0.1:5000/a", true),
            ("127.1.2.3/a", true),
            ("[::1]:5000/a", true),
            ("[::1]/a", true),
            ("alpine", false),
            ("10.0.0.1:5000/a", false),
            ("[fe80::1]:5000/a", false),
            ("localhost.example.com/a", false),
        ] {
            let r = Reference::parse(input).unwrap();
            assert_eq!(r.is_loopback_registry(), loopback, "{input}");
        }
    }
}
