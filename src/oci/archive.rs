//! `save` and `load`: images as Docker archives (`manifest.json`, config and
//! uncompressed layer tars, as `docker save` writes) or OCI archives (a tarred OCI
//! image layout).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use super::digest::{Digest, HashingWriter};
use super::manifest::{self, Descriptor, LayerCompression, Manifest, Platform};
use super::reference::Reference;
use super::store::{self, ImageRecord, ImageStore};
use super::{OciError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Docker,
    Oci,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format> {
        match s {
            "docker-archive" | "docker" => Ok(Format::Docker),
            "oci-archive" | "oci" => Ok(Format::Oci),
            _ => Err(OciError::Usage(format!(
                "unknown archive format {s:?}: use docker-archive or oci-archive"
            ))),
        }
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> OciError + 'a {
    move |e| OciError::io(what, path, e)
}

fn append_file<W: Write>(tar: &mut tar::Builder<W>, name: &str, path: &Path) -> Result<()> {
    let mut f = File::open(path).map_err(io_err("cannot open", path))?;
    let len = f.metadata().map_err(io_err("cannot stat", path))?.len();
    let mut h = tar::Header::new_ustar();
    h.set_size(len);
    h.set_mode(0o644);
    h.set_mtime(0);
    tar.append_data(&mut h, name, &mut f)
        .map_err(io_err("cannot write into the archive from", path))
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    data: &[u8],
    out: &Path,
) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    tar.append_data(&mut h, name, data)
        .map_err(io_err("cannot write", out))
}

/// The uncompressed layer of `desc` as a file in the store's scratch directory.
fn decompressed(st: &ImageStore, desc: &Descriptor, diff_id: &Digest) -> Result<PathBuf> {
    let src = st.blob_path(&desc.digest);
    let f = BufReader::new(File::open(&src).map_err(io_err("cannot open", &src))?);
    let mut reader: Box<dyn Read> = match manifest::layer_compression(&desc.media_type) {
        Some(LayerCompression::None) => Box::new(f),
        Some(LayerCompression::Gzip) => Box::new(flate2::read::GzDecoder::new(f)),
        Some(LayerCompression::Zstd) => Box::new(
            ruzstd::decoding::StreamingDecoder::new(f)
                .map_err(|e| OciError::io("cannot decompress", &src, std::io::Error::other(e)))?,
        ),
        None => return Err(OciError::UnsupportedMediaType(desc.media_type.clone())),
    };
    let out = st
        .tmp_dir()
        .join(format!("save-{}-{}", diff_id.hex(), std::process::id()));
    let file = File::create(&out).map_err(io_err("cannot create", &out))?;
    let mut w = HashingWriter {
        inner: BufWriter::new(file),
        hasher: Default::default(),
    };
    std::io::copy(&mut reader, &mut w).map_err(io_err("cannot decompress", &src))?;
    w.flush().map_err(io_err("cannot write", &out))?;
    super::digest::verify(
        &format!("uncompressed layer {}", desc.digest),
        diff_id,
        &w.hasher.finish(),
    )?;
    Ok(out)
}

/// Writes the images `names` to `out`.
pub fn save(st: &ImageStore, names: &[String], format: Format, out: &Path) -> Result<()> {
    let recs: Vec<(String, ImageRecord)> = names
        .iter()
        .map(|n| st.resolve(n).map(|r| (n.clone(), r)))
        .collect::<Result<_>>()?;
    let tmp = out.with_file_name(format!(
        ".{}.tmp{}",
        out.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("archive"),
        std::process::id()
    ));
    let file = File::create(&tmp).map_err(io_err("cannot create", &tmp))?;
    let mut tar = tar::Builder::new(BufWriter::new(file));
    let result = match format {
        Format::Docker => save_docker(st, &recs, &mut tar, out),
        Format::Oci => save_oci(st, &recs, &mut tar, out),
    };
    let finish = result.and_then(|()| {
        let w = tar.into_inner().map_err(io_err("cannot write", &tmp))?;
        let f = w
            .into_inner()
            .map_err(|e| OciError::io("cannot write", &tmp, e.into_error()))?;
        f.sync_all().map_err(io_err("cannot sync", &tmp))?;
        std::fs::rename(&tmp, out).map_err(io_err("cannot write", out))
    });
    if finish.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    finish
}

/// The tags to record for `name`: the record's own tags when named by ID.
fn tags_for(name: &str, rec: &ImageRecord) -> Vec<String> {
    match Reference::parse(name) {
        Ok(r) if rec.repo_tags.contains(&store::full_name(&r)) => vec![store::full_name(&r)],
        _ => rec.repo_tags.clone(),
    }
}

fn save_docker<W: Write>(
    st: &ImageStore,
    recs: &[(String, ImageRecord)],
    tar: &mut tar::Builder<W>,
    out: &Path,
) -> Result<()> {
    let mut manifest = Vec::new();
    let mut written = std::collections::BTreeSet::new();
    for (name, rec) in recs {
        let config_name = format!("blobs/sha256/{}", rec.id.hex());
        if written.insert(rec.id.clone()) {
            append_file(tar, &config_name, &st.blob_path(&rec.id))?;
        }
        let mut layers = Vec::new();
        for (desc, diff) in rec.layers.iter().zip(&rec.diff_ids) {
            let layer_name = format!("blobs/sha256/{}", diff.hex());
            if written.insert(diff.clone()) {
                let plain = decompressed(st, desc, diff)?;
                let r = append_file(tar, &layer_name, &plain);
                let _ = std::fs::remove_file(&plain);
                r?;
            }
            layers.push(layer_name);
        }
        let tags: Vec<String> = tags_for(name, rec)
            .iter()
            .map(|t| store::display_name(t))
            .collect();
        manifest.push(serde_json::json!({
            "Config": config_name, "RepoTags": tags, "Layers": layers,
        }));
    }
    let data = serde_json::to_vec(&manifest).expect("JSON values serialise");
    append_bytes(tar, "manifest.json", &data, out)
}

fn save_oci<W: Write>(
    st: &ImageStore,
    recs: &[(String, ImageRecord)],
    tar: &mut tar::Builder<W>,
    out: &Path,
) -> Result<()> {
    append_bytes(tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, out)?;
    let mut written = std::collections::BTreeSet::new();
    let mut entries = Vec::new();
    for (name, rec) in recs {
        let blobs = std::iter::once(&rec.manifest)
            .chain(std::iter::once(&rec.id))
            .chain(rec.layers.iter().map(|l| &l.digest));
        for d in blobs {
            if written.insert(d.clone()) {
                append_file(tar, &format!("blobs/sha256/{}", d.hex()), &st.blob_path(d))?;
            }
        }
        let size = std::fs::metadata(st.blob_path(&rec.manifest)).map_or(0, |m| m.len());
        let tags = tags_for(name, rec);
        let mut one = |ann: serde_json::Value| {
            entries.push(serde_json::json!({
                "mediaType": rec.manifest_media_type, "digest": rec.manifest, "size": size,
                "annotations": ann,
            }));
        };
        if tags.is_empty() {
            one(serde_json::json!({}));
        }
        for t in tags {
            let tag = store::split_tag(&t).1.to_string();
            one(serde_json::json!({
                "io.containerd.image.name": t,
                "org.opencontainers.image.ref.name": tag,
            }));
        }
    }
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": manifest::OCI_INDEX, "manifests": entries,
    });
    let data = serde_json::to_vec(&index).expect("JSON values serialise");
    append_bytes(tar, "index.json", &data, out)
}

/// Reads an archive into the store; returns the names (or IDs) loaded.
pub fn load(st: &ImageStore, input: &mut dyn Read) -> Result<Vec<String>> {
    let dir = st.tmp_dir().join(format!("load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
    let r = load_in(st, input, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn safe_rel(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

fn bad_archive(what: &str) -> OciError {
    OciError::Usage(format!("not an image archive: {what}"))
}

fn load_in(st: &ImageStore, input: &mut dyn Read, dir: &Path) -> Result<Vec<String>> {
    let mut ar = tar::Archive::new(input);
    let entries = ar
        .entries()
        .map_err(io_err("cannot read archive into", dir))?;
    for e in entries {
        let mut e = e.map_err(io_err("cannot read archive into", dir))?;
        if !e.header().entry_type().is_file() {
            continue;
        }
        let path = e.path().map_err(io_err("cannot read archive into", dir))?;
        let Some(rel) = safe_rel(&path) else { continue };
        let dest = dir.join(rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("cannot create", parent))?;
        }
        let mut f = File::create(&dest).map_err(io_err("cannot create", &dest))?;
        std::io::copy(&mut e, &mut f).map_err(io_err("cannot write", &dest))?;
    }
    if dir.join("manifest.json").is_file() {
        load_docker(st, dir)
    } else if dir.join("index.json").is_file() {
        load_oci(st, dir)
    } else {
        Err(bad_archive("it has neither manifest.json nor index.json"))
    }
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let rel = safe_rel(Path::new(name)).ok_or_else(|| bad_archive("a path leaves the archive"))?;
    let p = dir.join(rel);
    std::fs::read(&p).map_err(io_err("cannot read", &p))
}

/// Stores an archive file as a blob; it must hash to `want` when given.
fn store_file(
    st: &ImageStore,
    dir: &Path,
    name: &str,
    want: Option<&Digest>,
) -> Result<(Digest, u64)> {
    let rel = safe_rel(Path::new(name)).ok_or_else(|| bad_archive("a path leaves the archive"))?;
    let src = dir.join(rel);
    let size = std::fs::metadata(&src)
        .map_err(io_err("cannot read", &src))?
        .len();
    let d = st.put_blob_file(&src)?;
    if let Some(w) = want {
        super::digest::verify(&format!("archive member {name}"), w, &d)?;
    }
    Ok((d, size))
}

fn normalise_tag(t: &str) -> Option<String> {
    Reference::parse(t).ok().map(|r| store::full_name(&r))
}

fn load_docker(st: &ImageStore, dir: &Path) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Option<Vec<String>>,
        layers: Vec<String>,
    }
    let list: Vec<Entry> =
        serde_json::from_slice(&read(dir, "manifest.json")?).map_err(|source| {
            OciError::Malformed {
                what: "manifest.json of the archive".into(),
                source,
            }
        })?;
    let mut loaded = Vec::new();
    for e in list {
        let (config_d, config_size) = store_file(st, dir, &e.config, None)?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let (d, size) = store_file(st, dir, l, None)?;
            // Layers may be stored compressed or not; the media type says which.
            let head = st.read_blob_head(&d)?;
            let media = if head.starts_with(&[0x1f, 0x8b]) {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                "application/vnd.oci.image.layer.v1.tar+zstd"
            } else {
                "application/vnd.docker.image.rootfs.diff.tar"
            };
            layers.push(serde_json::json!({"mediaType": media, "digest": d, "size": size}));
        }
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest::DOCKER_MANIFEST,
            "config": {"mediaType": manifest::DOCKER_CONFIG, "digest": config_d, "size": config_size},
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&m).expect("JSON values serialise");
        let tags: Vec<String> = e
            .repo_tags
            .unwrap_or_default()
            .iter()
            .filter_map(|t| normalise_tag(t))
            .collect();
        let id = st.add_image(&bytes, &tags)?;
        if tags.is_empty() {
            loaded.push(id.to_string());
        }
        loaded.extend(tags.iter().map(|t| store::display_name(t)));
    }
    Ok(loaded)
}

fn load_oci(st: &ImageStore, dir: &Path) -> Result<Vec<String>> {
    let index_bytes = read(dir, "index.json")?;
    let Manifest::Index(index) = Manifest::parse(Some(manifest::OCI_INDEX), &index_bytes)? else {
        return Err(bad_archive("index.json is not an index"));
    };
    let blob = |d: &Digest| format!("blobs/sha256/{}", d.hex());
    let mut loaded = Vec::new();
    for entry in &index.manifests {
        let ann = entry.annotations.clone().unwrap_or_default();
        let mut desc = entry.clone();
        let mut bytes = read(dir, &blob(&desc.digest))?;
        super::digest::verify("archive manifest", &desc.digest, &Digest::of(&bytes))?;
        if let Manifest::Index(inner) = Manifest::parse(Some(&desc.media_type), &bytes)? {
            let host = Platform::host();
            desc = inner
                .select(&host)
                .cloned()
                .ok_or_else(|| OciError::NoMatchingPlatform {
                    reference: "the archive".into(),
                    platform: host.to_string(),
                    available: inner.platforms(),
                })?;
            bytes = read(dir, &blob(&desc.digest))?;
            super::digest::verify("archive manifest", &desc.digest, &Digest::of(&bytes))?;
        }
        let Manifest::Image(im) = Manifest::parse(Some(&desc.media_type), &bytes)? else {
            return Err(bad_archive("nested index"));
        };
        for d in std::iter::once(&im.config).chain(im.layers.iter()) {
            if !st.has_blob(&d.digest) {
                store_file(st, dir, &blob(&d.digest), Some(&d.digest))?;
            }
        }
        let tag = ann
            .get("io.containerd.image.name")
            .and_then(|n| normalise_tag(n))
            .or_else(|| {
                ann.get("org.opencontainers.image.ref.name")
                    .filter(|n| n.contains('/') || n.contains(':'))
                    .and_then(|n| normalise_tag(n))
            });
        let tags: Vec<String> = tag.into_iter().collect();
        let id = st.add_image(&bytes, &tags)?;
        if tags.is_empty() {
            loaded.push(id.to_string());
        }
        loaded.extend(tags.iter().map(|t| store::display_name(t)));
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_may_not_leave_the_archive() {
        assert_eq!(
            safe_rel(Path::new("./blobs/sha256/x")),
            Some(PathBuf::from("blobs/sha256/x"))
        );
        assert_eq!(safe_rel(Path::new("../etc/passwd")), None);
        assert_eq!(safe_rel(Path::new("/etc/passwd")), None);
        assert_eq!(safe_rel(Path::new(".")), None);
    }

    #[test]
    fn formats_parse_by_skopeo_and_docker_names() {
        assert_eq!(Format::parse("docker-archive").unwrap(), Format::Docker);
        assert_eq!(Format::parse("oci-archive").unwrap(), Format::Oci);
        assert!(Format::parse("zip").is_err());
    }
}
