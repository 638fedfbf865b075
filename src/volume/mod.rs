//! Volumes: named and anonymous volumes of Docker's `local` driver, kept
//! under `<state>/volumes/<name>/` (`volume.json`, the record, and `_data`,
//! the directory a box sees), and what a box mounts: volumes, binds of host
//! directories and tmpfs (`spec`). Each volume or bind reaches the guest as
//! a virtio-fs share of its own; the guest mounts it inside the box's root.
//!
//! Every change to the volumes holds their `flock` (`volumes/.lock`), and so
//! does creating a box that names volumes, until its record is written: a
//! volume is in use exactly while a box record names it, so `rm` and `prune`
//! never remove one a box is about to use.

pub mod filter;
pub mod seed;
pub mod spec;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runtime::store::write_json_atomic;
use crate::runtime::{BoxConfig, RuntimeError};

pub use spec::{Mount, MountKind, Tmpfs};

/// Directory of the volumes, under the state directory.
const DIR: &str = "volumes";
const RECORD: &str = "volume.json";
/// The volume's own directory inside its directory (Docker's name for it).
const DATA: &str = "_data";
/// The label Docker gives the volumes it makes for a box (anonymous ones).
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(
        "create {0}: {0:?} includes invalid characters for a local volume name, only \
         \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host \
         directory, use absolute path"
    )]
    InvalidName(String),
    #[error("get {0}: no such volume")]
    NoSuch(String),
    #[error("remove {name}: volume is in use - [{boxes}]")]
    InUse { name: String, boxes: String },
    #[error("invalid option key: {0:?}")]
    OptionKey(String),
    #[error(
        "create {0}: these volume options are not supported: a local volume is a \
         directory of its own, or another host directory with type=none,o=bind,device=DIR"
    )]
    Options(String),
    #[error("invalid volume specification: '{0}'")]
    Spec(String),
    #[error("invalid mode: {0}")]
    Mode(String),
    #[error("invalid mount config for type \"{kind}\": {why}")]
    MountConfig { kind: String, why: String },
    #[error("invalid argument \"{spec}\" for \"--mount\" flag: {why}")]
    MountFlag { spec: String, why: String },
    #[error("invalid argument \"{spec}\" for \"--tmpfs\" flag: {why}")]
    TmpfsFlag { spec: String, why: String },
    #[error("{0}")]
    Filter(String),
    #[error("Duplicate mount point: {0}")]
    Duplicate(String),
    #[error("bind source {0} is not a directory: a box is given host directories only")]
    NotADirectory(String),
    #[error("too many volumes and binds: a box takes at most {MAX_SHARES}")]
    TooMany,
    #[error("cannot seed volume {name} from the image's {path}")]
    Seed {
        name: String,
        path: String,
        #[source]
        source: crate::boxfs::BoxfsError,
    },
    #[error("volume record {path} is unreadable")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, VolumeError>;

fn io_err(what: &'static str, path: &Path, source: std::io::Error) -> VolumeError {
    VolumeError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Shares a box can have beside its root: the VM has 19 interrupt lines for
/// virtio devices, of which the rng, vsock, network and up to two root
/// shares take five.
pub const MAX_SHARES: usize = 14;

/// One volume's record (`volume.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `--opt`, as given.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl Volume {
    /// Made by Docker's rules for a box, not by name.
    pub fn is_anonymous(&self) -> bool {
        self.labels.contains_key(ANONYMOUS_LABEL)
    }

    /// The host directory of a `type=none,o=bind,device=DIR` volume.
    pub fn device(&self) -> Option<&str> {
        self.options.get("device").map(String::as_str)
    }
}

/// The volumes of one state directory.
#[derive(Debug, Clone)]
pub struct Volumes {
    dir: PathBuf,
}

/// The volumes' lock; released when dropped.
pub struct VolumeLock(#[allow(dead_code)] File);

/// Docker's rule for local volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    name.len() >= 2 && crate::runtime::store::valid_name(name)
}

/// The options a local volume takes: none, or a bind of another host directory.
fn check_options(name: &str, options: &BTreeMap<String, String>) -> Result<()> {
    if let Some(k) = options
        .keys()
        .find(|k| !matches!(k.as_str(), "type" | "device" | "o"))
    {
        return Err(VolumeError::OptionKey(k.clone()));
    }
    if options.is_empty() {
        return Ok(());
    }
    let get = |k: &str| options.get(k).map(String::as_str);
    match (get("type"), get("o"), get("device")) {
        (Some("none"), Some("bind"), Some(dev)) if dev.starts_with('/') => {
            if !Path::new(dev).is_dir() {
                return Err(VolumeError::NotADirectory(dev.to_string()));
            }
            Ok(())
        }
        _ => Err(VolumeError::Options(name.to_string())),
    }
}

impl Volumes {
    /// The volumes under state directory `state`, the directory made if missing.
    pub fn open(state: &Path) -> Result<Volumes> {
        let dir = state.join(DIR);
        std::fs::create_dir_all(&dir).map_err(|e| io_err("cannot create", &dir, e))?;
        Ok(Volumes { dir })
    }

    pub fn lock(&self) -> Result<VolumeLock> {
        let path = self.dir.join(".lock");
        let f = File::create(&path).map_err(|e| io_err("cannot open", &path, e))?;
        f.lock().map_err(|e| io_err("cannot lock", &path, e))?;
        Ok(VolumeLock(f))
    }

    fn record(&self, name: &str) -> PathBuf {
        self.dir.join(name).join(RECORD)
    }

    /// The directory a box sees of volume `name` (Docker's `Mountpoint`).
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        self.dir.join(name).join(DATA)
    }

    /// The host directory a box's share of `v` serves.
    pub fn share_dir(&self, v: &Volume) -> PathBuf {
        match v.device() {
            Some(dev) => PathBuf::from(dev),
            None => self.mountpoint(&v.name),
        }
    }

    /// Volume `name`, when it exists.
    pub fn get(&self, name: &str) -> Result<Volume> {
        let path = self.record(name);
        if !valid_name(name) {
            return Err(VolumeError::NoSuch(name.to_string()));
        }
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(VolumeError::NoSuch(name.to_string()))
            }
            Err(e) => return Err(io_err("cannot read", &path, e)),
        };
        serde_json::from_slice(&data).map_err(|source| VolumeError::Corrupt { path, source })
    }

    /// Every volume, by name. One whose record is half made is not listed.
    pub fn list(&self) -> Result<Vec<Volume>> {
        let rd = std::fs::read_dir(&self.dir).map_err(|e| io_err("cannot list", &self.dir, e))?;
        let mut out: Vec<Volume> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .filter_map(|n| self.get(&n).ok())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Makes volume `name` (a random 64-hex name when `None`), or returns the
    /// one of that name, as Docker's `volume create` does; `true` when made.
    pub fn create(
        &self,
        _lock: &VolumeLock,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
        options: BTreeMap<String, String>,
    ) -> Result<(Volume, bool)> {
        let name = match name {
            Some(n) => n.to_string(),
            None => crate::runtime::store::new_id(),
        };
        if !valid_name(&name) {
            return Err(VolumeError::InvalidName(name));
        }
        match self.get(&name) {
            Ok(v) => return Ok((v, false)),
            Err(VolumeError::NoSuch(_)) => {}
            Err(e) => return Err(e),
        }
        check_options(&name, &options)?;
        let vol = Volume {
            name: name.clone(),
            created: crate::runtime::record::now(),
            labels,
            options,
        };
        let data = self.mountpoint(&name);
        std::fs::create_dir_all(&data).map_err(|e| io_err("cannot create", &data, e))?;
        // A volume's root is as Docker makes it: 0755, owned by root.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755));
        // The record last: a volume is listed only once its directory exists.
        write_json_atomic(&self.record(&name), &vol).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(self.dir.join(&name));
        })?;
        Ok((vol, true))
    }

    /// Removes volume `name` and its data, unless a box in `boxes` uses it.
    pub fn remove(&self, _lock: &VolumeLock, name: &str, boxes: &[BoxConfig]) -> Result<()> {
        let vol = self.get(name)?;
        let users = users(&vol.name, boxes);
        if !users.is_empty() {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                boxes: users.join(", "),
            });
        }
        let dir = self.dir.join(&vol.name);
        // The record first, so a half-removed volume is never listed.
        let record = self.record(&vol.name);
        std::fs::remove_file(&record).map_err(|e| io_err("cannot remove", &record, e))?;
        std::fs::remove_dir_all(&dir).map_err(|e| io_err("cannot remove", &dir, e))
    }

    /// Bytes of a volume's data, links not followed.
    pub fn size(&self, v: &Volume) -> u64 {
        crate::boxfs::dir_size(&self.share_dir(v))
    }
}

/// IDs of the boxes (running or not, as Docker counts them) that mount volume `name`.
pub fn users(name: &str, boxes: &[BoxConfig]) -> Vec<String> {
    boxes
        .iter()
        .filter(|b| {
            b.mounts
                .iter()
                .any(|m| m.kind == MountKind::Volume && m.source == name)
        })
        .map(|b| b.id.clone())
        .collect()
}

/// Removes the unused volumes `keep` accepts (`prune`: anonymous ones, or
/// all with `-a`); returns their names and the bytes they held.
pub fn prune(
    vols: &Volumes,
    boxes: &[BoxConfig],
    keep: impl Fn(&Volume) -> bool,
) -> Result<Vec<(String, u64)>> {
    let lock = vols.lock()?;
    let mut removed = Vec::new();
    for v in vols.list()? {
        if !keep(&v) || !users(&v.name, boxes).is_empty() {
            continue;
        }
        let size = vols.size(&v);
        vols.remove(&lock, &v.name, boxes)?;
        removed.push((v.name, size));
    }
    Ok(removed)
}

/// Removes the anonymous volumes box `cfg` made (`rm -v`, `run --rm`), unless
/// another box in `others` uses one (as through `--volumes-from`).
pub fn remove_anonymous(vols: &Volumes, cfg: &BoxConfig, others: &[BoxConfig]) -> Result<()> {
    let lock = vols.lock()?;
    for m in cfg.mounts.iter().filter(|m| m.anonymous) {
        match vols.remove(&lock, &m.source, others) {
            Ok(()) | Err(VolumeError::NoSuch(_) | VolumeError::InUse { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A box's mounts made real, and the volumes that had to be made for them.
#[derive(Debug)]
pub struct Prepared {
    pub mounts: Vec<Mount>,
    /// Names of the volumes made here, for [`undo`] when the box cannot be made.
    pub made: Vec<String>,
}

/// Makes what `planned` needs, under the volumes' lock: named volumes that
/// do not exist yet and anonymous ones (an empty one filled from the tree
/// at `root`, the box's image, unless `nocopy`), and `-v` bind sources that
/// are missing. On failure nothing made here is left.
pub fn prepare(
    vols: &Volumes,
    lock: &VolumeLock,
    planned: Vec<spec::Planned>,
    root: Option<&Path>,
) -> Result<Prepared> {
    let mut made = Vec::new();
    let mut mounts = Vec::new();
    for p in planned {
        match prepare_one(vols, lock, p, root, &mut made) {
            Ok(m) => mounts.push(m),
            Err(e) => {
                undo(vols, lock, &made);
                return Err(e);
            }
        }
    }
    spec::sort_for_mounting(&mut mounts);
    Ok(Prepared { mounts, made })
}

fn prepare_one(
    vols: &Volumes,
    lock: &VolumeLock,
    p: spec::Planned,
    root: Option<&Path>,
    made: &mut Vec<String>,
) -> Result<Mount> {
    let r = match p {
        spec::Planned::Inherited(m) => {
            if m.kind == MountKind::Volume {
                vols.get(&m.source)?;
            }
            return Ok(m);
        }
        spec::Planned::New(r) => r,
    };
    let kind = r.kind();
    match kind {
        MountKind::Volume => {
            let mut labels = r.volume_labels.clone();
            if r.source.is_none() {
                labels.insert(ANONYMOUS_LABEL.into(), String::new());
            }
            let (v, new) = vols.create(lock, r.source.as_deref(), labels, r.volume_options)?;
            if new {
                made.push(v.name.clone());
            }
            if let (Some(root), false, None) = (root, r.nocopy, v.device()) {
                seed::seed(root, &r.target, &vols.mountpoint(&v.name)).map_err(|source| {
                    VolumeError::Seed {
                        name: v.name.clone(),
                        path: r.target.clone(),
                        source,
                    }
                })?;
            }
            Ok(Mount {
                kind,
                source: v.name,
                target: r.target,
                read_only: r.read_only,
                mode: r.mode,
                tmpfs: None,
                anonymous: r.source.is_none(),
            })
        }
        MountKind::Bind => {
            let src = r.source.unwrap_or_default();
            if r.create_source && !Path::new(&src).exists() {
                std::fs::create_dir_all(&src)
                    .map_err(|e| io_err("cannot create the bind source", Path::new(&src), e))?;
            }
            Ok(Mount {
                kind,
                source: src,
                target: r.target,
                read_only: r.read_only,
                mode: r.mode,
                tmpfs: None,
                anonymous: false,
            })
        }
        MountKind::Tmpfs => Ok(Mount {
            kind,
            source: String::new(),
            target: r.target,
            read_only: r.read_only,
            mode: r.mode,
            tmpfs: Some(r.tmpfs.unwrap_or_default()),
            anonymous: false,
        }),
    }
}

/// Removes the volumes [`prepare`] made, for a box that was not made after all.
pub fn undo(vols: &Volumes, lock: &VolumeLock, made: &[String]) {
    for name in made {
        let _ = vols.remove(lock, name, &[]);
    }
}

/// Removes the anonymous volumes of box `cfg`, whose record is gone (`rm -v`).
pub fn remove_box_volumes(store: &crate::runtime::Store, cfg: &BoxConfig) -> Result<()> {
    if !cfg.mounts.iter().any(|m| m.anonymous) {
        return Ok(());
    }
    let vols = Volumes::open(store.root())?;
    let others: Vec<BoxConfig> = store.list()?.into_iter().map(|(c, _)| c).collect();
    remove_anonymous(&vols, cfg, &others)
}

/// A host directory served to a box as a virtio-fs device of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub tag: String,
    pub dir: PathBuf,
    /// The device refuses every change (EROFS), whatever the guest mounts.
    pub read_only: bool,
}

/// What a box's VMM serves for `mounts` and what its guest mounts, in order.
pub fn guest_mounts(
    vols: &Volumes,
    mounts: &[Mount],
) -> Result<(Vec<Share>, Vec<crate::proto::GuestMount>)> {
    use crate::proto::{GuestMount, GuestMountKind};
    let mut shares = Vec::new();
    let mut guest = Vec::new();
    for m in mounts {
        let kind = match m.kind {
            MountKind::Tmpfs => {
                let t = m.tmpfs.clone().unwrap_or_default();
                GuestMountKind::Tmpfs {
                    data: t.data(),
                    exec: t.exec,
                    suid: t.suid,
                    dev: t.dev,
                }
            }
            MountKind::Volume | MountKind::Bind => {
                let dir = match m.kind {
                    MountKind::Volume => vols.share_dir(&vols.get(&m.source)?),
                    _ => PathBuf::from(&m.source),
                };
                let tag = format!("vol{}", shares.len());
                shares.push(Share {
                    tag: tag.clone(),
                    dir,
                    read_only: m.read_only,
                });
                GuestMountKind::Share { tag }
            }
        };
        guest.push(GuestMount {
            target: m.target.clone(),
            read_only: m.read_only,
            kind,
        });
    }
    Ok((shares, guest))
}

/// A box's mount as Docker's `inspect` shows it under `Mounts`.
pub fn inspect_mount(vols: &Volumes, m: &Mount) -> serde_json::Value {
    use serde_json::json;
    match m.kind {
        MountKind::Volume => json!({
            "Type": "volume",
            "Name": m.source,
            "Source": vols.mountpoint(&m.source),
            "Destination": m.target,
            "Driver": "local",
            "Mode": m.mode,
            "RW": !m.read_only,
            "Propagation": "",
        }),
        MountKind::Bind => json!({
            "Type": "bind",
            "Source": m.source,
            "Destination": m.target,
            "Mode": m.mode,
            "RW": !m.read_only,
            "Propagation": "rprivate",
        }),
        MountKind::Tmpfs => json!({
            "Type": "tmpfs",
            "Source": "",
            "Destination": m.target,
            "Mode": m.mode,
            "RW": !m.read_only,
            "Propagation": "",
        }),
    }
}

/// When a volume was made, as Docker's `CreatedAt` (RFC 3339, seconds).
pub fn created_at(v: &Volume) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(v.created);
    crate::runtime::logs::rfc3339(t).replace(".000000000Z", "Z")
}

/// A volume as Docker's `volume inspect` shows it.
pub fn inspect_volume(vols: &Volumes, v: &Volume) -> serde_json::Value {
    // Go's nil maps: Docker shows a volume made without labels or options so.
    let map = |m: &BTreeMap<String, String>| {
        if m.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::json!(m)
        }
    };
    serde_json::json!({
        "CreatedAt": created_at(v),
        "Driver": "local",
        "Labels": map(&v.labels),
        "Mountpoint": vols.mountpoint(&v.name),
        "Name": v.name,
        "Options": map(&v.options),
        "Scope": "local",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TempDir;

    fn cfg_with(id: &str, mounts: Vec<Mount>) -> BoxConfig {
        let mut c: BoxConfig = serde_json::from_str(
            r#"{"id":"x","name":"n","rootfs":"/r","argv":["true"],"env":[],
            "workdir":"/","user":null,"hostname":"h","tty":false,"stdin":false,"cpus":1,
            "memory":1,"kernel":"/k","auto_remove":false,"created":0}"#,
        )
        .unwrap();
        c.id = id.into();
        c.mounts = mounts;
        c
    }

    fn vol_mount(name: &str, anonymous: bool) -> Mount {
        Mount {
            kind: MountKind::Volume,
            source: name.into(),
            target: "/data".into(),
            read_only: false,
            mode: String::new(),
            tmpfs: None,
            anonymous,
        }
    }

    #[test]
    fn prepare_makes_volumes_seeds_them_and_undoes_them_on_failure() {
        let t = TempDir::new("vol-prepare");
        let vols = Volumes::open(t.path()).unwrap();
        let root = t.path().join("image");
        std::fs::create_dir_all(root.join("srv/www")).unwrap();
        std::fs::write(root.join("srv/www/index.html"), "hi").unwrap();
        let bind = t.path().join("made-by-v");
        let requests = vec![
            spec::parse_volume("web:/srv/www").unwrap(),
            spec::parse_volume(&format!("{}:/b:ro", bind.display())).unwrap(),
            spec::parse_tmpfs("/t:size=1m").unwrap(),
        ];
        let planned = spec::plan(requests, vec![], &["/srv/www".into(), "/cache".into()]).unwrap();
        let lock = vols.lock().unwrap();
        let p = prepare(&vols, &lock, planned, Some(&root)).unwrap();
        assert_eq!(p.made.len(), 2, "web and the image's /cache");
        assert!(bind.is_dir(), "-v makes a missing bind source");
        assert_eq!(
            std::fs::read_to_string(vols.mountpoint("web").join("index.html")).unwrap(),
            "hi"
        );
        let cache = p.mounts.iter().find(|m| m.target == "/cache").unwrap();
        assert!(cache.anonymous);
        assert!(vols.get(&cache.source).unwrap().is_anonymous());
        // A later failure takes back the volumes it made, and only those.
        let planned = spec::plan(
            vec![
                spec::parse_volume("new1:/n").unwrap(),
                spec::parse_volume("web:/w").unwrap(),
            ],
            vec![(
                vec![Mount {
                    kind: MountKind::Volume,
                    source: "gone".into(),
                    target: "/g".into(),
                    read_only: false,
                    mode: String::new(),
                    tmpfs: None,
                    anonymous: false,
                }],
                None,
            )],
            &[],
        )
        .unwrap();
        assert!(matches!(
            prepare(&vols, &lock, planned, Some(&root)),
            Err(VolumeError::NoSuch(_))
        ));
        assert!(matches!(vols.get("new1"), Err(VolumeError::NoSuch(_))));
        assert!(vols.get("web").is_ok());
    }

    #[test]
    fn read_only_mounts_are_read_only_shares_and_tmpfs_takes_no_device() {
        let t = TempDir::new("vol-shares");
        let vols = Volumes::open(t.path()).unwrap();
        let lock = vols.lock().unwrap();
        let planned = spec::plan(
            vec![
                spec::parse_volume("data:/data:ro").unwrap(),
                spec::parse_tmpfs("/t:size=2m,exec").unwrap(),
                spec::parse_volume(&format!("{}:/host", t.path().display())).unwrap(),
            ],
            vec![],
            &[],
        )
        .unwrap();
        let p = prepare(&vols, &lock, planned, None).unwrap();
        let (shares, guest) = guest_mounts(&vols, &p.mounts).unwrap();
        assert_eq!(
            shares,
            vec![
                Share {
                    tag: "vol0".into(),
                    dir: vols.mountpoint("data"),
                    read_only: true
                },
                Share {
                    tag: "vol1".into(),
                    dir: t.path().to_owned(),
                    read_only: false
                },
            ]
        );
        assert_eq!(guest.len(), 3);
        assert!(guest[0].read_only);
        assert!(matches!(
            &guest[1].kind,
            crate::proto::GuestMountKind::Tmpfs { data, exec: true, .. } if data == "size=2097152,mode=1777"
        ));
        let shown = inspect_mount(&vols, &p.mounts[0]);
        assert_eq!(shown["Type"], "volume");
        assert_eq!(shown["Name"], "data");
        assert_eq!(shown["RW"], false);
        assert_eq!(shown["Driver"], "local");
        assert_eq!(
            inspect_mount(&vols, &p.mounts[2])["Propagation"],
            "rprivate"
        );
    }

    #[test]
    fn create_makes_record_and_directory_and_is_idempotent() {
        let t = TempDir::new("vol-create");
        let vols = Volumes::open(t.path()).unwrap();
        let lock = vols.lock().unwrap();
        let labels = BTreeMap::from([("a".to_string(), "b".to_string())]);
        let (v, made) = vols
            .create(&lock, Some("data"), labels, BTreeMap::new())
            .unwrap();
        assert!(made);
        assert!(vols.mountpoint("data").is_dir());
        assert_eq!(vols.get("data").unwrap(), v);
        let (again, made) = vols
            .create(&lock, Some("data"), BTreeMap::new(), BTreeMap::new())
            .unwrap();
        assert!(!made);
        assert_eq!(again.labels["a"], "b");
        let (anon, _) = vols
            .create(&lock, None, BTreeMap::new(), BTreeMap::new())
            .unwrap();
        assert_eq!(anon.name.len(), 64);
        assert!(anon.name.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            vols.list()
                .unwrap()
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .len(),
            2
        );
    }

    #[test]
    fn names_follow_dockers_rule() {
        let t = TempDir::new("vol-names");
        let vols = Volumes::open(t.path()).unwrap();
        let lock = vols.lock().unwrap();
        for bad in ["a", "x/y", "-x", ".x", "a b", "../up"] {
            let e = vols
                .create(&lock, Some(bad), BTreeMap::new(), BTreeMap::new())
                .unwrap_err();
            assert!(matches!(e, VolumeError::InvalidName(_)), "{bad}: {e}");
        }
        assert!(vols.list().unwrap().is_empty());
        assert!(matches!(vols.get("../boxes"), Err(VolumeError::NoSuch(_))));
    }

    #[test]
    fn options_are_refused_unless_they_bind_a_host_directory() {
        let t = TempDir::new("vol-opts");
        let vols = Volumes::open(t.path()).unwrap();
        let lock = vols.lock().unwrap();
        let opts = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let e = vols
            .create(&lock, Some("v1"), BTreeMap::new(), opts(&[("size", "1g")]))
            .unwrap_err();
        assert_eq!(e.to_string(), "invalid option key: \"size\"");
        let e = vols
            .create(
                &lock,
                Some("v1"),
                BTreeMap::new(),
                opts(&[("type", "tmpfs"), ("device", "tmpfs")]),
            )
            .unwrap_err();
        assert!(matches!(e, VolumeError::Options(_)), "{e}");
        let dev = t.path().join("dev");
        std::fs::create_dir(&dev).unwrap();
        let (v, _) = vols
            .create(
                &lock,
                Some("v1"),
                BTreeMap::new(),
                opts(&[
                    ("type", "none"),
                    ("o", "bind"),
                    ("device", dev.to_str().unwrap()),
                ]),
            )
            .unwrap();
        assert_eq!(vols.share_dir(&v), dev);
    }

    #[test]
    fn a_volume_any_box_names_is_not_removed() {
        let t = TempDir::new("vol-inuse");
        let vols = Volumes::open(t.path()).unwrap();
        let lock = vols.lock().unwrap();
        vols.create(&lock, Some("data"), BTreeMap::new(), BTreeMap::new())
            .unwrap();
        let boxes = vec![
            cfg_with("aaa", vec![vol_mount("data", false)]),
            cfg_with("bbb", vec![vol_mount("other", false)]),
            cfg_with("ccc", vec![vol_mount("data", false)]),
        ];
        let e = vols.remove(&lock, "data", &boxes).unwrap_err();
        assert_eq!(e.to_string(), "remove data: volume is in use - [aaa, ccc]");
        assert!(vols.get("data").is_ok());
        vols.remove(&lock, "data", &boxes[1..2]).unwrap();
        assert!(matches!(vols.get("data"), Err(VolumeError::NoSuch(_))));
        assert!(!t.path().join("volumes/data").exists());
        assert!(matches!(
            vols.remove(&lock, "data", &[]),
            Err(VolumeError::NoSuch(_))
        ));
    }

    #[test]
    fn prune_keeps_volumes_in_use_and_named_ones_unless_asked() {
        let t = TempDir::new("vol-prune");
        let vols = Volumes::open(t.path()).unwrap();
        let anon = BTreeMap::from([(ANONYMOUS_LABEL.to_string(), String::new())]);
        let (used, free) = {
            let lock = vols.lock().unwrap();
            vols.create(&lock, Some("named"), BTreeMap::new(), BTreeMap::new())
                .unwrap();
            let used = vols
                .create(&lock, None, anon.clone(), BTreeMap::new())
                .unwrap()
                .0;
            let free = vols.create(&lock, None, anon, BTreeMap::new()).unwrap().0;
            (used, free)
        };
        std::fs::write(vols.mountpoint(&free.name).join("f"), "12345").unwrap();
        let boxes = vec![cfg_with("aaa", vec![vol_mount(&used.name, true)])];
        let removed = prune(&vols, &boxes, Volume::is_anonymous).unwrap();
        assert_eq!(removed, vec![(free.name.clone(), 5)]);
        let left: Vec<String> = vols.list().unwrap().into_iter().map(|v| v.name).collect();
        assert!(left.contains(&used.name) && left.contains(&"named".to_string()));
        let removed = prune(&vols, &boxes, |_| true).unwrap();
        assert_eq!(removed, vec![("named".to_string(), 0)]);
        assert_eq!(vols.list().unwrap().len(), 1);
    }

    #[test]
    fn removing_a_boxs_anonymous_volumes_spares_named_and_shared_ones() {
        let t = TempDir::new("vol-rmv");
        let vols = Volumes::open(t.path()).unwrap();
        let anon = BTreeMap::from([(ANONYMOUS_LABEL.to_string(), String::new())]);
        let lock = vols.lock().unwrap();
        let a = vols
            .create(&lock, None, anon.clone(), BTreeMap::new())
            .unwrap()
            .0;
        let b = vols.create(&lock, None, anon, BTreeMap::new()).unwrap().0;
        vols.create(&lock, Some("named"), BTreeMap::new(), BTreeMap::new())
            .unwrap();
        drop(lock);
        let gone = cfg_with(
            "aaa",
            vec![
                vol_mount(&a.name, true),
                vol_mount(&b.name, true),
                vol_mount("named", false),
            ],
        );
        // Another box was given `b` through --volumes-from.
        let other = cfg_with("bbb", vec![vol_mount(&b.name, false)]);
        remove_anonymous(&vols, &gone, &[other]).unwrap();
        let left: Vec<String> = vols.list().unwrap().into_iter().map(|v| v.name).collect();
        assert!(!left.contains(&a.name));
        assert!(left.contains(&b.name));
        assert!(left.contains(&"named".to_string()));
    }
}
