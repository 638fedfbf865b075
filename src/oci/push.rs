//! Pushing a stored image: each blob is skipped when the registry has it, mounted
//! from another repository of the same registry when we know one that holds it,
//! else uploaded (one PUT when small, PATCH chunks when large); the manifest last.

use std::io::Read;

use ureq::http::Method;

use super::digest::Digest;
use super::manifest::Descriptor;
use super::reference::Reference;
use super::registry::{self, header, Client};
use super::store::{self, ImageStore};
use super::{OciError, Result};

/// Blobs above this go up in chunks of this size.
pub const CHUNK: u64 = 8 << 20;

/// What happened to one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobPush {
    Exists,
    Mounted(String),
    Pushed,
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct PushOutcome {
    pub repository: String,
    pub tag: String,
    pub digest: Digest,
    pub size: u64,
    pub blobs: Vec<(Digest, BlobPush)>,
}

/// Pushes the image stored under `name` to the registry that name points at.
pub fn push(store: &ImageStore, name: &str, insecure: bool) -> Result<PushOutcome> {
    let r = Reference::parse(name).map_err(|e| OciError::Reference(name.to_string(), e))?;
    let rec = store.resolve(name)?;
    let (repo, tag) = store::names(&r);
    let tag =
        tag.ok_or_else(|| OciError::Usage(format!("push {name}: give a tag, not a digest")))?;
    let client = Client::connect(
        &r.registry,
        &r.repository,
        &registry::Options {
            insecure,
            push: true,
            ..Default::default()
        },
    )?;
    // Repositories of the same registry that we pulled this image from: mount sources.
    let prefix = format!("{}/", r.registry);
    let sources: Vec<String> = rec
        .repo_digests
        .iter()
        .chain(rec.repo_tags.iter())
        .filter_map(|n| n.strip_prefix(&prefix))
        .map(|n| {
            let n = n.split('@').next().unwrap_or(n);
            store::split_tag(n).0.to_string()
        })
        .filter(|n| *n != r.repository)
        .collect();
    let config = Descriptor {
        media_type: String::new(),
        digest: rec.id.clone(),
        size: rec.config_size,
        platform: None,
        annotations: None,
    };
    let mut blobs = Vec::new();
    for d in rec.layers.iter().chain(std::iter::once(&config)) {
        let how = push_blob(store, &client, d, &sources)?;
        blobs.push((d.digest.clone(), how));
    }
    let bytes = store.read_blob(&rec.manifest)?;
    let url = client.url("manifests", &tag);
    let resp = client.request(
        Method::PUT,
        &url,
        &[("Content-Type", rec.manifest_media_type.as_str())],
        Some(&bytes),
    )?;
    if !resp.status().is_success() {
        return Err(client.status_error(&url, resp));
    }
    Ok(PushOutcome {
        repository: repo,
        tag,
        digest: rec.manifest.clone(),
        size: bytes.len() as u64,
        blobs,
    })
}

fn absolute(client_url: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    // Relative to the registry root: keep scheme and authority of a known URL.
    let rest = client_url.split_once("://").map_or("", |(_, r)| r);
    let scheme = client_url.split("://").next().unwrap_or("https");
    let authority = rest.split('/').next().unwrap_or("");
    format!("{scheme}://{authority}{location}")
}

fn with_query(url: &str, q: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{q}")
}

fn location(client: &Client, url: &str, resp: &ureq::http::Response<ureq::Body>) -> Result<String> {
    header(resp.headers(), "location")
        .map(|l| absolute(url, &l))
        .ok_or_else(|| OciError::Status {
            registry: client.registry().to_string(),
            status: resp.status().as_u16(),
            url: url.to_string(),
            body: "upload answer without a Location".into(),
        })
}

fn push_blob(
    store: &ImageStore,
    client: &Client,
    d: &Descriptor,
    sources: &[String],
) -> Result<BlobPush> {
    if client.has_blob(&d.digest)? {
        return Ok(BlobPush::Exists);
    }
    let uploads = client.url("blobs", "uploads/");
    let mut start = None;
    for from in sources {
        let url = with_query(&uploads, &format!("mount={}&from={from}", d.digest));
        let resp = client.request(Method::POST, &url, &[], Some(&[][..]))?;
        match resp.status().as_u16() {
            201 => return Ok(BlobPush::Mounted(from.clone())),
            202 => {
                start = Some(location(client, &url, &resp)?);
                break;
            }
            _ => {}
        }
    }
    let mut loc = match start {
        Some(l) => l,
        None => {
            let resp = client.request(Method::POST, &uploads, &[], Some(&[][..]))?;
            if resp.status() != 202 {
                return Err(client.status_error(&uploads, resp));
            }
            location(client, &uploads, &resp)?
        }
    };
    let path = store.blob_path(&d.digest);
    let mut file = std::fs::File::open(&path).map_err(|e| OciError::io("cannot open", &path, e))?;
    let size = file
        .metadata()
        .map_err(|e| OciError::io("cannot stat", &path, e))?
        .len();
    let octet = ("Content-Type", "application/octet-stream");
    if size <= CHUNK {
        let mut data = Vec::with_capacity(size as usize);
        file.read_to_end(&mut data)
            .map_err(|e| OciError::io("cannot read", &path, e))?;
        let url = with_query(&loc, &format!("digest={}", d.digest));
        let resp = client.request(Method::PUT, &url, &[octet], Some(&data))?;
        if resp.status() != 201 {
            return Err(client.status_error(&url, resp));
        }
        return Ok(BlobPush::Pushed);
    }
    let mut offset = 0u64;
    let mut buf = vec![0u8; CHUNK as usize];
    while offset < size {
        let n = (size - offset).min(CHUNK) as usize;
        file.read_exact(&mut buf[..n])
            .map_err(|e| OciError::io("cannot read", &path, e))?;
        let range = format!("{}-{}", offset, offset + n as u64 - 1);
        let resp = client.request(
            Method::PATCH,
            &loc,
            &[octet, ("Content-Range", range.as_str())],
            Some(&buf[..n]),
        )?;
        if resp.status() != 202 {
            return Err(client.status_error(&loc, resp));
        }
        loc = location(client, &loc, &resp)?;
        offset += n as u64;
    }
    let url = with_query(&loc, &format!("digest={}", d.digest));
    let resp = client.request(Method::PUT, &url, &[octet], Some(&[][..]))?;
    if resp.status() != 201 {
        return Err(client.status_error(&url, resp));
    }
    Ok(BlobPush::Pushed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_locations_resolve_against_the_registry() {
        assert_eq!(
            absolute(
                "http://127.0.0.1:5000/v2/a/blobs/uploads/",
                "/v2/a/blobs/uploads/x?_state=1"
            ),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/x?_state=1"
        );
        assert_eq!(absolute("http://h/v2/", "https://s3/x"), "https://s3/x");
        assert_eq!(
            with_query("http://h/u?_state=1", "digest=d"),
            "http://h/u?_state=1&digest=d"
        );
    }
}
