//! Manifests, indexes and image configs in the OCI and Docker schema 2 formats, and
//! picking one platform's manifest out of an index.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::{OciError, Result};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// What we ask registries for, best first.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    None,
    Gzip,
    Zstd,
}

/// The compression a layer media type announces, or `None` if it is not a layer
/// type we can apply.
pub fn layer_compression(media_type: &str) -> Option<LayerCompression> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Some(LayerCompression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
            Some(LayerCompression::Gzip)
        }
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
            Some(LayerCompression::Zstd)
        }
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// `os/arch[/variant]`, as `--platform` takes it.
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &&str| !p.is_empty();
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                architecture: normalise_arch(arch),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform {
                os: os.to_string(),
                architecture: normalise_arch(arch),
                variant: Some(v.to_string()),
            }),
            _ => Err(OciError::InvalidPlatform(s.to_string())),
        }
    }

    /// The platform this binary runs on.
    pub fn host() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: normalise_arch(std::env::consts::ARCH),
            variant: None,
        }
    }

    fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == normalise_arch(&other.architecture)
            && (self.variant.is_none() || self.variant == other.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn normalise_arch(a: &str) -> String {
    match a {
        "x86_64" | "x86-64" => "amd64".into(),
        "aarch64" => "arm64".into(),
        other => other.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// One image: its config and layers (OCI image manifest or Docker schema 2).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// Several images, one per platform (OCI index or Docker manifest list).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone)]
pub enum Manifest {
    Image(ImageManifest),
    Index(Index),
}

impl Manifest {
    /// Parses a manifest body. `content_type` is what the registry said; when it is
    /// missing or generic, the body's own `mediaType` (or its shape) decides.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Manifest> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
            schema_version: Option<u32>,
        }
        let malformed = |source| OciError::Malformed {
            what: "manifest".into(),
            source,
        };
        let probe: Probe = serde_json::from_slice(body).map_err(malformed)?;
        let declared = content_type
            .map(|c| c.split(';').next().unwrap_or("").trim())
            .filter(|c| !c.is_empty() && *c != "application/json" && *c != "text/plain")
            .map(str::to_string)
            .or(probe.media_type);
        let kind = match declared.as_deref() {
            Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
            Some(OCI_INDEX | DOCKER_LIST) => true,
            Some(other) if other.contains("v1+prettyjws") || other.ends_with("v1+json") => {
                return Err(OciError::UnsupportedMediaType(format!(
                    "{other} (Docker schema 1 manifests are no longer supported; re-push the image)"
                )))
            }
            Some(other) => return Err(OciError::UnsupportedMediaType(other.to_string())),
            None if probe.schema_version == Some(2) => probe.manifests.is_some(),
            None => {
                return Err(OciError::UnsupportedMediaType(
                    "manifest without mediaType or schemaVersion 2".into(),
                ))
            }
        };
        if kind {
            Ok(Manifest::Index(
                serde_json::from_slice(body).map_err(malformed)?,
            ))
        } else {
            Ok(Manifest::Image(
                serde_json::from_slice(body).map_err(malformed)?,
            ))
        }
    }
}

impl Index {
    /// The manifest for `want`, as Docker chooses: exact match (variant if asked).
    pub fn select(&self, want: &Platform) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| {
            d.platform.as_ref().is_some_and(|p| want.matches(p))
                && matches!(d.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST | "")
        })
    }

    pub fn platforms(&self) -> String {
        let v: Vec<String> = self
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
            .collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }
}

/// The image config blob: what the run side needs, and what inspect shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub config: ImageConfig,
    pub rootfs: RootFs,
}

/// How a box from this image runs unless told otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    #[serde(default, deserialize_with = "null_as_default")]
    pub entrypoint: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub cmd: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub env: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub working_dir: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub user: String,
    /// The image's HEALTHCHECK, as Docker stores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<ImageHealthcheck>,
    /// EXPOSE: `80/tcp` → `{}`, as Docker stores it.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
    /// VOLUME: `/data` → `{}`, as Docker stores it; each becomes an
    /// anonymous volume of a box.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub volumes: BTreeMap<String, serde_json::Value>,
}

/// `Healthcheck` of an image config: `Test` is `["NONE"]`, `["CMD", args…]` or
/// `["CMD-SHELL", command]`; durations are nanoseconds, 0 for the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageHealthcheck {
    #[serde(default, deserialize_with = "null_as_default")]
    pub test: Vec<String>,
    #[serde(default)]
    pub interval: u64,
    #[serde(default)]
    pub timeout: u64,
    #[serde(default)]
    pub start_period: u64,
    #[serde(default)]
    pub retries: u32,
}

fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

impl ConfigFile {
    pub fn parse(body: &[u8]) -> Result<ConfigFile> {
        serde_json::from_slice(body).map_err(|source| OciError::Malformed {
            what: "image config".into(),
            source,
        })
    }
}

/// The chain ID of a layer stack (OCI image spec): names an unpacked root by its
/// content, so two images sharing base layers share the unpacked prefix's name.
pub fn chain_id(diff_ids: &[Digest]) -> Option<Digest> {
    let mut it = diff_ids.iter();
    let mut chain = it.next()?.clone();
    for d in it {
        chain = Digest::of(format!("{chain} {d}").as_bytes());
    }
    Some(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn index_json(media: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media}","manifests":[
              {{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":1,
                "platform":{{"architecture":"amd64","os":"linux"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":2,
                "platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#
        )
    }

    #[test]
    fn oci_and_docker_indexes_parse_by_content_type_or_body() {
        for media in [OCI_INDEX, DOCKER_LIST] {
            let body = index_json(media);
            assert!(matches!(
                Manifest::parse(Some(media), body.as_bytes()).unwrap(),
                Manifest::Index(_)
            ));
            assert!(matches!(
                Manifest::parse(Some("application/json"), body.as_bytes()).unwrap(),
                Manifest::Index(_)
            ));
        }
    }

    #[test]
    fn image_manifests_parse_and_schema1_is_refused_with_advice() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
               "config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{D}","size":3}},
               "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{D}","size":4}}]}}"#
        );
        let Manifest::Image(m) = Manifest::parse(None, body.as_bytes()).unwrap() else {
            panic!("not an image manifest")
        };
        assert_eq!(m.layers[0].size, 4);
        let err = Manifest::parse(
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
            b"{}",
        )
        .unwrap_err();
        assert!(err.to_string().contains("schema 1"), "{err}");
    }

    #[test]
    fn layer_media_types_give_their_compression() {
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(LayerCompression::Zstd)
        );
        assert_eq!(
            layer_compression("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(LayerCompression::Gzip)
        );
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.v1.tar"),
            Some(LayerCompression::None)
        );
        assert_eq!(layer_compression("application/x-foo"), None);
    }

    #[test]
    fn platform_selection_matches_os_arch_and_optional_variant() {
        let Manifest::Index(ix) =
            Manifest::parse(Some(OCI_INDEX), index_json(OCI_INDEX).as_bytes()).unwrap()
        else {
            panic!()
        };
        let arm = ix.select(&Platform::parse("linux/arm64").unwrap()).unwrap();
        assert_eq!(arm.size, 2);
        let amd = ix
            .select(&Platform::parse("linux/x86_64").unwrap())
            .unwrap();
        assert_eq!(amd.size, 1);
        assert!(ix
            .select(&Platform::parse("linux/s390x").unwrap())
            .is_none());
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//").is_err());
    }

    #[test]
    fn config_with_null_fields_reads_as_empty() {
        let c = ConfigFile::parse(
            br#"{"architecture":"amd64","os":"linux","config":{"Cmd":null,"Env":["A=1"],"WorkingDir":"/w"},
                "rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        assert!(c.config.cmd.is_empty());
        assert_eq!(c.config.env, ["A=1"]);
        assert_eq!(c.config.working_dir, "/w");
    }

    #[test]
    fn chain_id_of_one_layer_is_its_diff_id() {
        let d = Digest::parse(D).unwrap();
        assert_eq!(chain_id(std::slice::from_ref(&d)).unwrap(), d);
        assert_ne!(chain_id(&[d.clone(), d.clone()]).unwrap(), d);
        assert!(chain_id(&[]).is_none());
    }
}
