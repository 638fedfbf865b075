//! The content store under `<state>/images/`: blobs by digest
//! (`blobs/sha256/<hex>`, shared layers kept once), `index.json` (image records and
//! the tags that name them, written atomically), and unpacked roots
//! (`rootfs/<chain-id hex>/`, built in a temporary directory and renamed when
//! complete). Every change holds an exclusive `flock` on `images/.lock`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::manifest::{self, ConfigFile, Descriptor, ImageManifest, Manifest, Platform};
use super::reference::Reference;
use super::registry::{self, Client};
use super::{OciError, Result};

pub use super::manifest::ImageConfig;

/// Parallel layer downloads.
const PARALLEL: usize = 3;
/// Cache size when `A3S_IMAGE_CACHE_SIZE` is unset.
pub const DEFAULT_CACHE_SIZE: u64 = 10 << 30;

/// An image ready to boot: its unpacked root and how to run it.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    /// The config digest, `sha256:…` (the image ID).
    pub id: String,
    /// The full reference it was found by.
    pub reference: String,
    /// The unpacked root, shared by every box of this image: treat it as read-only.
    pub rootfs: PathBuf,
    pub config: ImageConfig,
}

/// What the store knows about one image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: Digest,
    pub manifest: Digest,
    pub manifest_media_type: String,
    /// The index or manifest list it was chosen from, if any.
    #[serde(default)]
    pub index: Option<Digest>,
    /// Full `registry/repository:tag` names.
    #[serde(default)]
    pub repo_tags: Vec<String>,
    /// Full `registry/repository@sha256:…` names.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    pub layers: Vec<Descriptor>,
    pub diff_ids: Vec<Digest>,
    pub config_size: u64,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    pub pulled: u64,
    pub last_used: u64,
}

impl ImageRecord {
    /// A record for manifest `im` (stored as `manifest`) with no names yet.
    fn new(
        im: &ImageManifest,
        config: &ConfigFile,
        manifest: Digest,
        manifest_media_type: String,
        now: u64,
    ) -> ImageRecord {
        ImageRecord {
            id: im.config.digest.clone(),
            manifest,
            manifest_media_type,
            index: None,
            repo_tags: vec![],
            repo_digests: vec![],
            layers: im.layers.clone(),
            diff_ids: config.rootfs.diff_ids.clone(),
            config_size: im.config.size,
            created: config.created.clone(),
            architecture: config.architecture.clone(),
            os: config.os.clone(),
            pulled: now,
            last_used: now,
        }
    }

    /// Bytes of content: config, manifest and compressed layers.
    pub fn size(&self) -> u64 {
        self.config_size + self.layers.iter().map(|l| l.size).sum::<u64>()
    }

    pub fn chain_id(&self) -> Option<Digest> {
        manifest::chain_id(&self.diff_ids)
    }

    fn blobs(&self) -> impl Iterator<Item = &Digest> {
        [&self.id, &self.manifest]
            .into_iter()
            .chain(self.index.iter())
            .chain(self.layers.iter().map(|l| &l.digest))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IndexFile {
    #[serde(default)]
    images: BTreeMap<Digest, ImageRecord>,
    /// Unpacked roots by chain-ID hex: their size on disk.
    #[serde(default)]
    rootfs: BTreeMap<String, u64>,
}

pub struct ImageStore {
    root: PathBuf,
    state: PathBuf,
}

/// The exclusive store lock; released when dropped.
pub struct Lock(#[allow(dead_code)] File);

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    pub platform: Option<Platform>,
    pub insecure: bool,
    /// Draw progress bars (only on a terminal).
    pub progress: bool,
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullOutcome {
    pub id: Digest,
    /// The full reference pulled.
    pub reference: String,
    /// The digest the registry names the image by (index or manifest).
    pub digest: Digest,
    /// Nothing new was downloaded or tagged.
    pub up_to_date: bool,
}

/// One removal step, as `rmi` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    Untagged(String),
    Deleted(Digest),
}

fn now() -> u64 {
    crate::runtime::record::now()
}

/// `registry/repository` and the tag a reference names (`latest` when it names
/// neither tag nor digest).
pub fn names(r: &Reference) -> (String, Option<String>) {
    let repo = format!("{}/{}", r.registry, r.repository);
    let tag = r
        .tag
        .clone()
        .or_else(|| r.digest.is_none().then(|| "latest".to_string()));
    (repo, tag)
}

/// The full reference as a string: `repo:tag`, `repo@digest` or both.
pub fn full_name(r: &Reference) -> String {
    let (repo, tag) = names(r);
    let mut s = repo;
    if let Some(t) = tag {
        s.push(':');
        s.push_str(&t);
    }
    if let Some(d) = &r.digest {
        s.push('@');
        s.push_str(d);
    }
    s
}

/// The short repository name `docker images` shows.
pub fn familiar_repo(repo: &str) -> &str {
    repo.strip_prefix("docker.io/library/")
        .or_else(|| repo.strip_prefix("docker.io/"))
        .unwrap_or(repo)
}

/// Splits `registry/repo:tag` into `(registry/repo, tag)`.
pub fn split_tag(name: &str) -> (&str, &str) {
    let slash = name.rfind('/').unwrap_or(0);
    match name[slash..].rfind(':') {
        Some(i) => (&name[..slash + i], &name[slash + i + 1..]),
        None => (name, ""),
    }
}

/// `500m`, `20g`, `1t`, `4096` (bytes): powers of 1024.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').filter(|r| !r.is_empty()).unwrap_or(&t);
    let (num, shift) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 10),
        Some('m') => (&t[..t.len() - 1], 20),
        Some('g') => (&t[..t.len() - 1], 30),
        Some('t') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| OciError::InvalidSize(s.to_string()))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| OciError::InvalidSize(s.to_string()))
}

/// The cache limit from `A3S_IMAGE_CACHE_SIZE`, else the default.
pub fn cache_limit() -> Result<u64> {
    match std::env::var("A3S_IMAGE_CACHE_SIZE") {
        Ok(v) if !v.trim().is_empty() => parse_size(&v),
        _ => Ok(DEFAULT_CACHE_SIZE),
    }
}

/// A candidate for eviction.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: Digest,
    pub last_used: u64,
    pub in_use: bool,
}

/// The least recently used image that may go: not in use and not protected.
pub fn next_victim(cands: &[Candidate], protect: &[Digest]) -> Option<Digest> {
    cands
        .iter()
        .filter(|c| !c.in_use && !protect.contains(&c.id))
        .min_by_key(|c| (c.last_used, c.id.clone()))
        .map(|c| c.id.clone())
}

/// Removes a tree even where unpacked directories lack write permission.
fn remove_tree(path: &Path) {
    if std::fs::remove_dir_all(path).is_ok() || !path.exists() {
        return;
    }
    fn chmod_all(p: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::symlink_metadata(p) {
            if m.is_dir() {
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
                if let Ok(rd) = std::fs::read_dir(p) {
                    for e in rd.filter_map(|e| e.ok()) {
                        chmod_all(&e.path());
                    }
                }
            }
        }
    }
    chmod_all(path);
    let _ = std::fs::remove_dir_all(path);
}

impl ImageStore {
    /// The store under state directory `state`, created if missing.
    pub fn open(state: &Path) -> Result<ImageStore> {
        let root = state.join("images");
        for d in ["blobs/sha256", "tmp", "rootfs"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(|e| OciError::io("cannot create", &p, e))?;
        }
        Ok(ImageStore {
            root,
            state: state.to_owned(),
        })
    }

    pub fn lock(&self) -> Result<Lock> {
        let path = self.root.join(".lock");
        let f = File::create(&path).map_err(|e| OciError::io("cannot open", &path, e))?;
        f.lock()
            .map_err(|e| OciError::io("cannot lock", &path, e))?;
        Ok(Lock(f))
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn read_index(&self) -> Result<IndexFile> {
        let path = self.index_path();
        match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data).map_err(|source| OciError::Malformed {
                what: format!("image index {}", path.display()),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(IndexFile::default()),
            Err(e) => Err(OciError::io("cannot read", &path, e)),
        }
    }

    fn write_index(&self, ix: &IndexFile) -> Result<()> {
        crate::runtime::store::write_json_atomic(&self.index_path(), ix).map_err(OciError::Runtime)
    }

    /// Every image, newest first.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let mut v: Vec<ImageRecord> = self.read_index()?.images.into_values().collect();
        v.sort_by(|a, b| b.pulled.cmp(&a.pulled).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    /// Writes `data` as blob `d` (after checking it hashes to `d`).
    pub fn put_blob(&self, d: &Digest, data: &[u8]) -> Result<()> {
        super::digest::verify(&format!("blob {d}"), d, &Digest::of(data))?;
        if self.has_blob(d) {
            return Ok(());
        }
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{}.{}", d.hex(), std::process::id()));
        std::fs::write(&tmp, data).map_err(|e| OciError::io("cannot write", &tmp, e))?;
        self.commit_blob(&tmp, d)
    }

    fn commit_blob(&self, tmp: &Path, d: &Digest) -> Result<()> {
        let dest = self.blob_path(d);
        std::fs::rename(tmp, &dest).map_err(|e| OciError::io("cannot store", &dest, e))
    }

    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        std::fs::read(&p).map_err(|e| OciError::io("cannot read", &p, e))
    }

    /// IDs of images that a box record names (by ID or by a tag).
    pub fn in_use(&self) -> Result<BTreeMap<Digest, String>> {
        let boxes = crate::runtime::Store::open(&self.state).map_err(OciError::Runtime)?;
        let ix = self.read_index()?;
        let mut used = BTreeMap::new();
        for id in boxes.ids().map_err(OciError::Runtime)? {
            let Ok(cfg) = boxes.config(&id) else { continue };
            let Some(image) = cfg.image else { continue };
            for rec in ix.images.values() {
                if rec.id.as_str() == image || rec.repo_tags.contains(&image) {
                    used.insert(rec.id.clone(), cfg.name.clone());
                }
            }
        }
        Ok(used)
    }

    /// Names of the unpacked roots under `rootfs/` that a box's root stands on.
    /// An image removed with `rmi -f` loses its record, but its tree stays for
    /// as long as a box of it does.
    fn roots_in_use(&self) -> Result<BTreeSet<String>> {
        let boxes = crate::runtime::Store::open(&self.state).map_err(OciError::Runtime)?;
        let rootfs = self.root.join("rootfs");
        let mut used = BTreeSet::new();
        for id in boxes.ids().map_err(OciError::Runtime)? {
            let Ok(cfg) = boxes.config(&id) else { continue };
            let path = Path::new(&cfg.rootfs);
            if path.parent() == Some(rootfs.as_path()) {
                if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                    used.insert(name.to_string());
                }
            }
        }
        Ok(used)
    }

    /// Finds the image a user names: a reference, a full ID or an ID prefix.
    pub fn resolve(&self, name: &str) -> Result<ImageRecord> {
        let ix = self.read_index()?;
        resolve_in(&ix, name).cloned()
    }

    /// Pulls `r` from its registry.
    pub fn pull(&self, r: &Reference, opts: &PullOptions) -> Result<PullOutcome> {
        // A bad limit is reported before anything is downloaded.
        cache_limit()?;
        let lock = self.lock()?;
        let out = self.pull_locked(r, opts)?;
        self.evict_locked(&lock, std::slice::from_ref(&out.id))?;
        Ok(out)
    }

    fn pull_locked(&self, r: &Reference, opts: &PullOptions) -> Result<PullOutcome> {
        let (repo, tag) = names(r);
        let client = Client::connect(
            &r.registry,
            &r.repository,
            &registry::Options {
                insecure: opts.insecure,
                ..Default::default()
            },
        )?;
        let want = r.digest.clone().or(tag.clone()).expect("names gives one");
        let top = client.manifest(&want)?;
        let platform = opts.platform.clone().unwrap_or_else(Platform::host);
        let (index, chosen) = match &top.manifest {
            Manifest::Image(_) => (None, top),
            Manifest::Index(ix) => {
                let desc = ix
                    .select(&platform)
                    .ok_or_else(|| OciError::NoMatchingPlatform {
                        reference: full_name(r),
                        platform: platform.to_string(),
                        available: ix.platforms(),
                    })?;
                let m = client.manifest(desc.digest.as_str())?;
                (Some(top), m)
            }
        };
        let Manifest::Image(im) = &chosen.manifest else {
            return Err(OciError::UnsupportedMediaType(
                "an index inside an index".into(),
            ));
        };
        for l in &im.layers {
            if manifest::layer_compression(&l.media_type).is_none() {
                return Err(OciError::UnsupportedMediaType(l.media_type.clone()));
            }
        }
        let repo_digest = index.as_ref().map_or(&chosen.digest, |i| &i.digest).clone();
        let mut ix = self.read_index()?;
        let fresh = !ix.images.contains_key(&im.config.digest);

        // The config first: it is small and says which layers make the root.
        let config_bytes = if self.has_blob(&im.config.digest) {
            self.read_blob(&im.config.digest)?
        } else {
            self.fetch(&client, &im.config, &|_| {})?;
            self.read_blob(&im.config.digest)?
        };
        let config = ConfigFile::parse(&config_bytes)?;
        if config.rootfs.diff_ids.len() != im.layers.len() {
            return Err(OciError::UnsupportedMediaType(format!(
                "image config lists {} layers but the manifest {}",
                config.rootfs.diff_ids.len(),
                im.layers.len()
            )));
        }
        self.fetch_layers(&client, im, opts.progress)?;
        self.put_blob(&chosen.digest, &chosen.bytes)?;
        if let Some(i) = &index {
            self.put_blob(&i.digest, &i.bytes)?;
        }

        let full_tag = tag.as_ref().map(|t| format!("{repo}:{t}"));
        let digest_name = format!("{repo}@{repo_digest}");
        let mut up_to_date = !fresh;
        if let Some(t) = &full_tag {
            let had = ix
                .images
                .get(&im.config.digest)
                .is_some_and(|rec| rec.repo_tags.contains(t));
            up_to_date &= had;
            for rec in ix.images.values_mut() {
                rec.repo_tags.retain(|x| x != t);
            }
        }
        let t = now();
        let rec = ix
            .images
            .entry(im.config.digest.clone())
            .or_insert_with(|| {
                let mut rec = ImageRecord::new(
                    im,
                    &config,
                    chosen.digest.clone(),
                    chosen.media_type.clone(),
                    t,
                );
                rec.index = index.as_ref().map(|i| i.digest.clone());
                rec
            });
        if let Some(ft) = full_tag {
            rec.repo_tags.push(ft);
        }
        if !rec.repo_digests.contains(&digest_name) {
            rec.repo_digests.push(digest_name);
        }
        rec.last_used = t;
        if !up_to_date {
            rec.pulled = t;
        }
        self.write_index(&ix)?;
        Ok(PullOutcome {
            id: im.config.digest.clone(),
            reference: full_name(r),
            digest: repo_digest,
            up_to_date,
        })
    }

    /// Downloads one blob into the store: to `tmp/<hex>.partial` (kept between
    /// attempts so a later pull resumes), renamed into place once verified.
    fn fetch(&self, client: &Client, d: &Descriptor, progress: &dyn Fn(u64)) -> Result<()> {
        let partial = self
            .root
            .join("tmp")
            .join(format!("{}.partial", d.digest.hex()));
        client.fetch_blob(d, &partial, progress)?;
        self.commit_blob(&partial, &d.digest)
    }

    fn fetch_layers(&self, client: &Client, im: &ImageManifest, progress: bool) -> Result<()> {
        let todo: Vec<&Descriptor> = {
            let mut seen = BTreeSet::new();
            im.layers
                .iter()
                .filter(|l| !self.has_blob(&l.digest) && seen.insert(l.digest.clone()))
                .collect()
        };
        if todo.is_empty() {
            return Ok(());
        }
        let bars = indicatif::MultiProgress::new();
        if !progress || !std::io::stderr().is_terminal() {
            bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let style = indicatif::ProgressStyle::with_template(
            "{prefix}: {bar:30} {bytes}/{total_bytes} {msg}",
        )
        .expect("template is valid");
        let next = AtomicUsize::new(0);
        let failure: Mutex<Option<OciError>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..PARALLEL.min(todo.len()) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(l) = todo.get(i) else { break };
                    if failure.lock().expect("not poisoned").is_some() {
                        break;
                    }
                    let bar = bars.add(indicatif::ProgressBar::new(l.size));
                    bar.set_style(style.clone());
                    bar.set_prefix(l.digest.short().to_string());
                    let result = self.fetch(client, l, &|n| bar.set_position(n));
                    match result {
                        Ok(()) => bar.finish_with_message("Pull complete"),
                        Err(e) => {
                            bar.abandon_with_message("failed");
                            failure.lock().expect("not poisoned").get_or_insert(e);
                        }
                    }
                });
            }
        });
        match failure.into_inner().expect("not poisoned") {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The unpacked root of the image `r` names, pulling it first if it is missing
    /// and `pull_if_missing`; the root is built once per layer chain and reused.
    pub fn ensure_rootfs(
        &self,
        r: &Reference,
        pull_if_missing: bool,
        progress: bool,
    ) -> Result<PreparedImage> {
        let lock = self.lock()?;
        let name = full_name(r);
        let ix = self.read_index()?;
        let found = lookup_reference(&ix, r).map(|rec| rec.id.clone());
        let id = match found {
            Some(id) => id,
            None if pull_if_missing => {
                let out = self.pull_locked(
                    r,
                    &PullOptions {
                        progress,
                        ..Default::default()
                    },
                )?;
                self.evict_locked(&lock, std::slice::from_ref(&out.id))?;
                out.id
            }
            None => {
                return Err(OciError::NoSuchImage(format!(
                    "{name}; run `a3s-box pull {name}` first"
                )))
            }
        };
        let mut ix = self.read_index()?;
        let rec = ix
            .images
            .get(&id)
            .cloned()
            .ok_or_else(|| OciError::NoSuchImage(name.clone()))?;
        let key = rec.chain_id().map_or_else(
            || format!("empty-{}", rec.id.hex()),
            |c| c.hex().to_string(),
        );
        let rootfs = self.root.join("rootfs").join(&key);
        if !rootfs.is_dir() {
            let size = self.unpack(&rec, &rootfs)?;
            ix.rootfs.insert(key, size);
        }
        let config = ConfigFile::parse(&self.read_blob(&rec.id)?)?.config;
        if let Some(r) = ix.images.get_mut(&id) {
            r.last_used = now();
        }
        self.write_index(&ix)?;
        drop(lock);
        Ok(PreparedImage {
            id: id.to_string(),
            reference: name,
            rootfs,
            config,
        })
    }

    /// Applies every layer in order into a temporary directory and renames it to
    /// `dest` once complete, so a crash never leaves a half tree under that name.
    fn unpack(&self, rec: &ImageRecord, dest: &Path) -> Result<u64> {
        let tmp = dest.with_file_name(format!(
            ".tmp-{}-{}",
            dest.file_name().and_then(|n| n.to_str()).unwrap_or("root"),
            std::process::id()
        ));
        remove_tree(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| OciError::io("cannot create", &tmp, e))?;
        for l in &rec.layers {
            let path = self.blob_path(&l.digest);
            let file = File::open(&path).map_err(|e| OciError::io("cannot open", &path, e))?;
            if let Err(e) = apply_layer(file, &l.media_type, &tmp) {
                remove_tree(&tmp);
                return Err(OciError::Unpack {
                    layer: l.digest.to_string(),
                    source: e,
                });
            }
        }
        std::fs::rename(&tmp, dest).map_err(|e| OciError::io("cannot rename into", dest, e))?;
        Ok(crate::boxfs::dir_size(dest))
    }

    /// Points `target` at the image `source` names.
    pub fn tag(&self, source: &str, target: &Reference) -> Result<()> {
        let _lock = self.lock()?;
        let mut ix = self.read_index()?;
        let id = resolve_in(&ix, source)?.id.clone();
        let (repo, tag) = names(target);
        let Some(tag) = tag else {
            return Err(OciError::Usage(format!(
                "cannot tag with a digest reference {}; give a tag",
                full_name(target)
            )));
        };
        let full = format!("{repo}:{tag}");
        for rec in ix.images.values_mut() {
            rec.repo_tags.retain(|t| *t != full);
        }
        let rec = ix.images.get_mut(&id).expect("resolved above");
        rec.repo_tags.push(full);
        self.write_index(&ix)
    }

    /// `rmi`: untags `name`; deletes the image once no tag names it (or at once when
    /// named by ID). An image a box uses is refused unless `force`.
    pub fn remove(&self, name: &str, force: bool) -> Result<Vec<Removed>> {
        let _lock = self.lock()?;
        let mut ix = self.read_index()?;
        let rec = resolve_in(&ix, name)?.clone();
        let by_tag = lookup_name(&ix, name).is_some();
        let mut out = Vec::new();
        let in_use = self.in_use()?;
        if !force {
            if let Some(by) = in_use.get(&rec.id) {
                return Err(OciError::InUse {
                    image: name.to_string(),
                    by: by.clone(),
                });
            }
        }
        if by_tag && rec.repo_tags.len() > 1 {
            let full = lookup_name(&ix, name).expect("found above").1;
            let r = ix.images.get_mut(&rec.id).expect("present");
            r.repo_tags.retain(|t| *t != full);
            out.push(Removed::Untagged(display_name(&full)));
            self.write_index(&ix)?;
            return Ok(out);
        }
        if !by_tag && rec.repo_tags.len() > 1 && !force {
            return Err(OciError::Usage(format!(
                "image {} is referenced by several tags ({}); remove them by name or use -f",
                rec.id.short(),
                rec.repo_tags.join(", ")
            )));
        }
        for t in &rec.repo_tags {
            out.push(Removed::Untagged(display_name(t)));
        }
        for d in &rec.repo_digests {
            out.push(Removed::Untagged(display_name(d)));
        }
        ix.images.remove(&rec.id);
        out.push(Removed::Deleted(rec.id.clone()));
        self.write_index(&ix)?;
        self.gc_locked(&mut ix)?;
        Ok(out)
    }

    /// Deletes blobs and unpacked roots that no image record needs, and leftover
    /// temporary files of finished or crashed pulls.
    fn gc_locked(&self, ix: &mut IndexFile) -> Result<u64> {
        let keep: BTreeSet<String> = ix
            .images
            .values()
            .flat_map(|r| r.blobs().map(|d| d.hex().to_string()).collect::<Vec<_>>())
            .collect();
        let mut chains: BTreeSet<String> = ix
            .images
            .values()
            .map(|r| {
                r.chain_id()
                    .map_or_else(|| format!("empty-{}", r.id.hex()), |c| c.hex().to_string())
            })
            .collect();
        chains.extend(self.roots_in_use()?);
        let mut freed = 0;
        let blobs = self.root.join("blobs/sha256");
        if let Ok(rd) = std::fs::read_dir(&blobs) {
            for e in rd.filter_map(|e| e.ok()) {
                let n = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(&n) {
                    freed += e.metadata().map_or(0, |m| m.len());
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let rootfs = self.root.join("rootfs");
        if let Ok(rd) = std::fs::read_dir(&rootfs) {
            for e in rd.filter_map(|e| e.ok()) {
                let n = e.file_name().to_string_lossy().into_owned();
                if !chains.contains(&n) {
                    freed += ix.rootfs.get(&n).copied().unwrap_or(0);
                    remove_tree(&e.path());
                }
            }
        }
        ix.rootfs.retain(|k, _| chains.contains(k));
        self.write_index(ix)?;
        Ok(freed)
    }

    /// Bytes the store holds: blobs plus unpacked roots.
    pub fn total_size(&self) -> Result<u64> {
        let ix = self.read_index()?;
        Ok(crate::boxfs::dir_size(&self.root.join("blobs")) + ix.rootfs.values().sum::<u64>())
    }

    /// Evicts least recently used images until the store fits the cache limit; never
    /// an image a box uses nor one in `protect`.
    fn evict_locked(&self, _lock: &Lock, protect: &[Digest]) -> Result<Vec<Digest>> {
        let limit = cache_limit()?;
        let in_use = self.in_use()?;
        let mut evicted = Vec::new();
        loop {
            if self.total_size()? <= limit {
                break;
            }
            let mut ix = self.read_index()?;
            let cands: Vec<Candidate> = ix
                .images
                .values()
                .map(|r| Candidate {
                    id: r.id.clone(),
                    last_used: r.last_used,
                    in_use: in_use.contains_key(&r.id),
                })
                .collect();
            let Some(victim) = next_victim(&cands, protect) else {
                break;
            };
            ix.images.remove(&victim);
            self.write_index(&ix)?;
            self.gc_locked(&mut ix)?;
            evicted.push(victim);
        }
        Ok(evicted)
    }

    /// `image-prune`: deletes dangling images (no tag), or with `all` every image no
    /// box uses. Returns the deleted IDs and bytes freed.
    pub fn prune(&self, all: bool) -> Result<(Vec<Digest>, u64)> {
        let _lock = self.lock()?;
        let in_use = self.in_use()?;
        let mut ix = self.read_index()?;
        let before = self.total_size()?;
        let victims: Vec<Digest> = ix
            .images
            .values()
            .filter(|r| !in_use.contains_key(&r.id) && (all || r.repo_tags.is_empty()))
            .map(|r| r.id.clone())
            .collect();
        for v in &victims {
            ix.images.remove(v);
        }
        self.write_index(&ix)?;
        self.gc_locked(&mut ix)?;
        // Leftover partial downloads are garbage once nothing is pulling.
        if let Ok(rd) = std::fs::read_dir(self.root.join("tmp")) {
            for e in rd.filter_map(|e| e.ok()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let after = self.total_size()?;
        Ok((victims, before.saturating_sub(after)))
    }

    /// The first bytes of blob `d` (to sniff its compression).
    pub fn read_blob_head(&self, d: &Digest) -> Result<Vec<u8>> {
        use std::io::Read;
        let p = self.blob_path(d);
        let mut f = File::open(&p).map_err(|e| OciError::io("cannot open", &p, e))?;
        let mut head = vec![0u8; 8];
        let n = f
            .read(&mut head)
            .map_err(|e| OciError::io("cannot read", &p, e))?;
        head.truncate(n);
        Ok(head)
    }

    /// A scratch directory inside the store (same file system as the blobs).
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Moves file `src` (in [`Self::tmp_dir`]) into the store under its digest.
    pub fn put_blob_file(&self, src: &Path) -> Result<Digest> {
        let mut f = File::open(src).map_err(|e| OciError::io("cannot open", src, e))?;
        let mut h = super::digest::HashingReader {
            inner: &mut f,
            hasher: Default::default(),
        };
        std::io::copy(&mut h, &mut std::io::sink())
            .map_err(|e| OciError::io("cannot read", src, e))?;
        let d = h.hasher.finish();
        if self.has_blob(&d) {
            let _ = std::fs::remove_file(src);
        } else {
            self.commit_blob(src, &d)?;
        }
        Ok(d)
    }

    /// Records an image whose manifest, config and layers are already stored, and
    /// points `tags` (full `registry/repo:tag` names) at it.
    pub fn add_image(&self, manifest_bytes: &[u8], tags: &[String]) -> Result<Digest> {
        let _lock = self.lock()?;
        let manifest_digest = Digest::of(manifest_bytes);
        self.put_blob(&manifest_digest, manifest_bytes)?;
        let Manifest::Image(im) = Manifest::parse(None, manifest_bytes)? else {
            return Err(OciError::UnsupportedMediaType(
                "an index where an image manifest belongs".into(),
            ));
        };
        for d in std::iter::once(&im.config).chain(im.layers.iter()) {
            if !self.has_blob(&d.digest) {
                return Err(OciError::NoSuchImage(format!(
                    "blob {} of the archive",
                    d.digest
                )));
            }
        }
        let config = ConfigFile::parse(&self.read_blob(&im.config.digest)?)?;
        let mut ix = self.read_index()?;
        for rec in ix.images.values_mut() {
            rec.repo_tags.retain(|t| !tags.contains(t));
        }
        let t = now();
        let rec = ix
            .images
            .entry(im.config.digest.clone())
            .or_insert_with(|| {
                let media_type = im
                    .media_type
                    .clone()
                    .unwrap_or_else(|| manifest::OCI_MANIFEST.to_string());
                ImageRecord::new(&im, &config, manifest_digest.clone(), media_type, t)
            });
        rec.repo_tags.extend(tags.iter().cloned());
        rec.last_used = t;
        let id = rec.id.clone();
        self.write_index(&ix)?;
        Ok(id)
    }

    /// The parsed config of image `id`.
    pub fn config(&self, id: &Digest) -> Result<ConfigFile> {
        ConfigFile::parse(&self.read_blob(id)?)
    }
}

/// `docker.io/library/alpine:3` → `alpine:3`, as Docker prints names.
pub fn display_name(full: &str) -> String {
    if let Some((repo, digest)) = full.split_once('@') {
        return format!("{}@{digest}", familiar_repo(repo));
    }
    let (repo, tag) = split_tag(full);
    if tag.is_empty() {
        familiar_repo(repo).to_string()
    } else {
        format!("{}:{tag}", familiar_repo(repo))
    }
}

fn lookup_reference<'a>(ix: &'a IndexFile, r: &Reference) -> Option<&'a ImageRecord> {
    let (repo, tag) = names(r);
    if let Some(d) = &r.digest {
        let name = format!("{repo}@{d}");
        return ix
            .images
            .values()
            .find(|rec| rec.repo_digests.contains(&name) || rec.manifest.as_str() == d.as_str());
    }
    let full = format!("{repo}:{}", tag.unwrap_or_default());
    ix.images.values().find(|rec| rec.repo_tags.contains(&full))
}

/// The image a name (reference) gives, with the full tag name it matched.
fn lookup_name<'a>(ix: &'a IndexFile, name: &str) -> Option<(&'a ImageRecord, String)> {
    let r = Reference::parse(name).ok()?;
    let rec = lookup_reference(ix, &r)?;
    Some((rec, full_name(&r)))
}

fn resolve_in<'a>(ix: &'a IndexFile, name: &str) -> Result<&'a ImageRecord> {
    if let Ok(d) = Digest::parse(name) {
        if let Some(rec) = ix.images.get(&d) {
            return Ok(rec);
        }
    }
    if let Some((rec, _)) = lookup_name(ix, name) {
        return Ok(rec);
    }
    let prefix = name.strip_prefix("sha256:").unwrap_or(name);
    if !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        let m: Vec<&ImageRecord> = ix
            .images
            .values()
            .filter(|r| r.id.hex().starts_with(prefix))
            .collect();
        match m.as_slice() {
            [one] => return Ok(one),
            [] => {}
            _ => return Err(OciError::Ambiguous(name.to_string())),
        }
    }
    Err(OciError::NoSuchImage(name.to_string()))
}

/// Applies one layer onto `target` with the confined unpacker.
fn apply_layer(
    file: File,
    media_type: &str,
    target: &Path,
) -> std::result::Result<(), super::unpack::UnpackError> {
    let reader = std::io::BufReader::with_capacity(1 << 17, file);
    super::unpack::unpack_layer(
        reader,
        Some(media_type),
        target,
        &super::unpack::UnpackOptions::default(),
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_parse_in_binary_units() {
        assert_eq!(parse_size("500m").unwrap(), 500 << 20);
        assert_eq!(parse_size("20g").unwrap(), 20 << 30);
        assert_eq!(parse_size("1t").unwrap(), 1 << 40);
        assert_eq!(parse_size("1T").unwrap(), 1 << 40);
        assert_eq!(parse_size("10GB").unwrap(), 10 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        for bad in ["", "m", "12x", "-1g", "99999999999t"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    #[test]
    fn lru_picks_the_oldest_unused_unprotected_image() {
        let c = |n, last_used, in_use| Candidate {
            id: d(n),
            last_used,
            in_use,
        };
        let cands = [
            c(1, 10, true),
            c(2, 20, false),
            c(3, 5, false),
            c(4, 1, false),
        ];
        assert_eq!(next_victim(&cands, &[d(4)]), Some(d(3)));
        assert_eq!(next_victim(&cands, &[]), Some(d(4)));
        assert_eq!(next_victim(&[c(1, 1, true)], &[]), None);
    }

    #[test]
    fn names_split_and_display_as_docker_does() {
        assert_eq!(
            split_tag("127.0.0.1:5000/a/b:v1"),
            ("127.0.0.1:5000/a/b", "v1")
        );
        assert_eq!(split_tag("127.0.0.1:5000/a/b"), ("127.0.0.1:5000/a/b", ""));
        assert_eq!(display_name("docker.io/library/alpine:3"), "alpine:3");
        assert_eq!(display_name("docker.io/me/app:1"), "me/app:1");
        assert_eq!(display_name("127.0.0.1:5000/app:1"), "127.0.0.1:5000/app:1");
    }
}
