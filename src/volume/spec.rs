//! What a box mounts, and the flags that say so, read by Docker's rules:
//! `-v`/`--volume` (`[SOURCE:]TARGET[:MODE]`), `--mount` (`key=value,…`),
//! `--tmpfs` (`TARGET[:OPTIONS]`) and `--volumes-from` (`BOX[:ro|rw]`).
//! Everything is checked here, before anything is made.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use super::VolumeError;

type Result<T> = std::result::Result<T, VolumeError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Volume,
    Bind,
    Tmpfs,
}

impl MountKind {
    pub fn name(self) -> &'static str {
        match self {
            MountKind::Volume => "volume",
            MountKind::Bind => "bind",
            MountKind::Tmpfs => "tmpfs",
        }
    }
}

/// A tmpfs's options; Docker's defaults are `noexec,nosuid,nodev`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tmpfs {
    /// Bytes; `None` leaves the kernel's default (half the box's memory).
    pub size: Option<u64>,
    /// Permission bits of its root; `None`: 1777.
    pub mode: Option<u32>,
    pub exec: bool,
    pub suid: bool,
    pub dev: bool,
}

impl Tmpfs {
    /// The tmpfs mount data (`size=…,mode=…`).
    pub fn data(&self) -> String {
        let mut out = Vec::new();
        if let Some(s) = self.size {
            out.push(format!("size={s}"));
        }
        out.push(format!("mode={:o}", self.mode.unwrap_or(0o1777)));
        out.join(",")
    }
}

/// One mount of a box, as its record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountKind,
    /// The volume's name, the host directory, or empty (tmpfs).
    pub source: String,
    /// Where it is in the box: absolute and clean.
    pub target: String,
    pub read_only: bool,
    /// The mode as `-v` gave it (Docker's `Mode`).
    #[serde(default)]
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<Tmpfs>,
    /// A volume made for this box (anonymous): `rm -v` removes it.
    #[serde(default)]
    pub anonymous: bool,
}

impl Mount {
    /// Whether it is a virtio-fs share (a volume or a bind), not a guest tmpfs.
    pub fn is_share(&self) -> bool {
        self.kind != MountKind::Tmpfs
    }
}

/// A mount a flag asked for, before its volume exists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub kind: Option<MountKind>,
    /// A volume's name or a host directory; `None`: an anonymous volume.
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
    pub mode: String,
    /// Do not fill an empty volume from the image (`nocopy`, `volume-nocopy`).
    pub nocopy: bool,
    /// A missing bind source is made (`-v`; `--mount` refuses it).
    pub create_source: bool,
    /// For a volume this mount makes: `volume-label`, `volume-opt`.
    pub volume_labels: BTreeMap<String, String>,
    pub volume_options: BTreeMap<String, String>,
    pub tmpfs: Option<Tmpfs>,
}

impl Request {
    pub fn kind(&self) -> MountKind {
        self.kind.unwrap_or(MountKind::Volume)
    }
}

fn mount_config(kind: MountKind, why: impl Into<String>) -> VolumeError {
    VolumeError::MountConfig {
        kind: kind.name().into(),
        why: why.into(),
    }
}

/// `path` made clean (`.` and repeated `/` gone, `..` applied), as Go's `path.Clean`.
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => parts.push(n.to_str().unwrap_or_default()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    format!("/{}", parts.join("/"))
}

/// A mount's target, checked (absolute, not `/`) and cleaned.
fn check_target(kind: MountKind, target: &str) -> Result<String> {
    if target.is_empty() {
        return Err(mount_config(kind, "field Target must not be empty"));
    }
    if !target.starts_with('/') {
        return Err(mount_config(
            kind,
            format!("invalid mount path: '{target}' mount path must be absolute"),
        ));
    }
    let clean = clean(target);
    if clean == "/" {
        return Err(mount_config(
            kind,
            "invalid specification: destination can't be '/'",
        ));
    }
    Ok(clean)
}

/// Docker's modes for `-v`: at most one each of `rw`/`ro`, `z`/`Z`, a
/// propagation, `nocopy` and a consistency.
fn valid_mode(mode: &str) -> bool {
    if mode.is_empty() {
        return true;
    }
    let mut counts = [0u8; 5];
    for o in mode.split(',') {
        let class = match o {
            "rw" | "ro" => 0,
            "z" | "Z" => 1,
            "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" => 2,
            "nocopy" => 3,
            "consistent" | "cached" | "delegated" => 4,
            _ => return false,
        };
        counts[class] += 1;
    }
    counts.iter().all(|&n| n <= 1)
}

/// Only a private propagation is possible: what a box mounts stays in its VM.
fn check_propagation(p: &str) -> Result<()> {
    match p {
        "private" | "rprivate" => Ok(()),
        _ => Err(VolumeError::MountConfig {
            kind: "bind".into(),
            why: format!(
                "bind propagation {p} is not supported: mounts never propagate between \
                 a box's VM and the host"
            ),
        }),
    }
}

/// `-v SPEC`: `TARGET` (an anonymous volume), `SOURCE:TARGET` or
/// `SOURCE:TARGET:MODE`; an absolute SOURCE is a host directory (made when
/// missing), any other a volume's name.
pub fn parse_volume(raw: &str) -> Result<Request> {
    let parts: Vec<&str> = raw.splitn(4, ':').collect();
    if parts[0].is_empty() {
        return Err(VolumeError::Spec(raw.into()));
    }
    let (source, target, mode) = match parts.as_slice() {
        [target] => (None, *target, ""),
        [_, mode] if valid_mode(mode) => return Err(VolumeError::Spec(raw.into())),
        [source, target] => (Some(*source), *target, ""),
        [source, target, mode] => (Some(*source), *target, *mode),
        _ => return Err(VolumeError::Spec(raw.into())),
    };
    if !valid_mode(mode) {
        return Err(VolumeError::Mode(mode.into()));
    }
    let opts: Vec<&str> = mode.split(',').filter(|o| !o.is_empty()).collect();
    let kind = match source {
        Some(s) if s.starts_with('/') => MountKind::Bind,
        _ => MountKind::Volume,
    };
    let nocopy = opts.contains(&"nocopy");
    if kind == MountKind::Bind && nocopy {
        return Err(VolumeError::Mode(mode.into()));
    }
    if let Some(p) = opts.iter().find(|o| {
        matches!(
            **o,
            "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate"
        )
    }) {
        check_propagation(p)?;
    }
    let target = check_target(kind, target)?;
    let source = match source {
        Some(s) if kind == MountKind::Bind => Some(clean(s)),
        Some(s) if !super::valid_name(s) => return Err(VolumeError::InvalidName(s.into())),
        s => s.map(str::to_string),
    };
    Ok(Request {
        kind: Some(kind),
        source,
        target,
        read_only: opts.contains(&"ro"),
        mode: mode.into(),
        nocopy,
        create_source: kind == MountKind::Bind,
        ..Request::default()
    })
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// `KEY=VALUE` (or `KEY`, an empty value) into `map`.
fn set_on(map: &mut BTreeMap<String, String>, kv: &str) {
    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
    map.insert(k.to_string(), v.to_string());
}

/// `--mount SPEC`: Docker's comma-separated keys.
pub fn parse_mount(raw: &str) -> Result<Request> {
    let flag = |why: String| VolumeError::MountFlag {
        spec: raw.into(),
        why,
    };
    let mut r = Request::default();
    let mut tmpfs: Option<Tmpfs> = None;
    let mut volume_fields = false;
    for field in raw.split(',') {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (field.to_ascii_lowercase(), None),
        };
        let bool_of = |key: &str, v: Option<&str>| match v {
            None => Ok(true),
            Some(v) => parse_bool(v).ok_or_else(|| flag(format!("invalid value for {key}: {v}"))),
        };
        let Some(v) = value else {
            match key.as_str() {
                "readonly" | "ro" => r.read_only = true,
                "volume-nocopy" => {
                    r.nocopy = true;
                    volume_fields = true;
                }
                "bind-nonrecursive" => {
                    return Err(flag("bind-nonrecursive is not supported".into()))
                }
                _ => {
                    return Err(flag(format!(
                        "invalid field '{field}' must be a key=value pair"
                    )))
                }
            }
            continue;
        };
        match key.as_str() {
            "type" => {
                r.kind = Some(match v.to_ascii_lowercase().as_str() {
                    "volume" => MountKind::Volume,
                    "bind" => MountKind::Bind,
                    "tmpfs" => MountKind::Tmpfs,
                    other => {
                        return Err(VolumeError::MountConfig {
                            kind: other.into(),
                            why: "mount type unknown".into(),
                        })
                    }
                })
            }
            "source" | "src" => r.source = Some(v.to_string()).filter(|s| !s.is_empty()),
            "target" | "dst" | "destination" => r.target = v.to_string(),
            "readonly" | "ro" => r.read_only = bool_of(&key, Some(v))?,
            "consistency" => match v {
                "default" | "consistent" | "cached" | "delegated" => {}
                _ => return Err(flag(format!("invalid value for {key}: {v}"))),
            },
            "bind-propagation" => check_propagation(v)?,
            "bind-nonrecursive" => {
                if bool_of(&key, Some(v))? {
                    return Err(flag("bind-nonrecursive is not supported".into()));
                }
            }
            "volume-nocopy" => {
                r.nocopy = bool_of(&key, Some(v))?;
                volume_fields = true;
            }
            "volume-label" => {
                set_on(&mut r.volume_labels, v);
                volume_fields = true;
            }
            "volume-driver" => {
                if v != "local" {
                    return Err(flag(format!(
                        "volume driver {v} is not available: the only one is local"
                    )));
                }
                volume_fields = true;
            }
            "volume-opt" => {
                set_on(&mut r.volume_options, v);
                volume_fields = true;
            }
            "tmpfs-size" => {
                let size = crate::vmm::memory::parse_size(v)
                    .ok_or_else(|| flag(format!("invalid value for {key}: {v}")))?;
                tmpfs.get_or_insert_with(Tmpfs::default).size = Some(size);
            }
            "tmpfs-mode" => {
                let mode = u32::from_str_radix(v, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| flag(format!("invalid value for {key}: {v}")))?;
                tmpfs.get_or_insert_with(Tmpfs::default).mode = Some(mode);
            }
            _ => return Err(flag(format!("unexpected key '{key}' in '{field}'"))),
        }
    }
    if r.target.is_empty() {
        return Err(flag("target is required".into()));
    }
    let kind = r.kind();
    r.target = check_target(kind, &r.target)?;
    if kind != MountKind::Tmpfs && tmpfs.is_some() {
        return Err(mount_config(
            kind,
            "field TmpfsOptions must not be specified",
        ));
    }
    if kind != MountKind::Volume && volume_fields {
        return Err(mount_config(
            kind,
            "field VolumeOptions must not be specified",
        ));
    }
    match kind {
        MountKind::Bind => {
            let Some(src) = &r.source else {
                return Err(mount_config(kind, "field Source must not be empty"));
            };
            if !src.starts_with('/') {
                return Err(mount_config(
                    kind,
                    format!("invalid mount path: '{src}' mount path must be absolute"),
                ));
            }
            r.source = Some(clean(src));
        }
        MountKind::Volume => {
            if let Some(s) = &r.source {
                if !super::valid_name(s) {
                    return Err(VolumeError::InvalidName(s.clone()));
                }
            }
        }
        MountKind::Tmpfs => {
            if r.source.is_some() {
                return Err(mount_config(kind, "field Source must not be specified"));
            }
            r.tmpfs = Some(tmpfs.unwrap_or_default());
        }
    }
    Ok(r)
}

/// `--tmpfs TARGET[:OPTIONS]`: options as mount(8) takes them for tmpfs.
pub fn parse_tmpfs(raw: &str) -> Result<Request> {
    let flag = |why: String| VolumeError::TmpfsFlag {
        spec: raw.into(),
        why,
    };
    let (target, options) = raw.split_once(':').unwrap_or((raw, ""));
    let target = check_target(MountKind::Tmpfs, target)?;
    let mut t = Tmpfs::default();
    let mut read_only = false;
    for o in options.split(',').filter(|o| !o.is_empty()) {
        match o.split_once('=') {
            Some(("size", v)) => {
                t.size = Some(
                    crate::vmm::memory::parse_size(v)
                        .ok_or_else(|| flag(format!("invalid size: {v}")))?,
                )
            }
            Some(("mode", v)) => {
                t.mode = Some(
                    u32::from_str_radix(v, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| flag(format!("invalid mode: {v}")))?,
                )
            }
            Some(_) => return Err(flag(format!("unknown tmpfs option '{o}'"))),
            None => match o {
                "ro" => read_only = true,
                "rw" => read_only = false,
                "exec" => t.exec = true,
                "noexec" => t.exec = false,
                "suid" => t.suid = true,
                "nosuid" => t.suid = false,
                "dev" => t.dev = true,
                "nodev" => t.dev = false,
                _ => return Err(flag(format!("unknown tmpfs option '{o}'"))),
            },
        }
    }
    Ok(Request {
        kind: Some(MountKind::Tmpfs),
        target,
        read_only,
        tmpfs: Some(t),
        ..Request::default()
    })
}

/// `--volumes-from BOX[:ro|rw]`: the box and, when given, whether its mounts
/// are read-only here.
pub fn parse_volumes_from(raw: &str) -> Result<(String, Option<bool>)> {
    match raw.split_once(':') {
        None if !raw.is_empty() => Ok((raw.to_string(), None)),
        Some((b, "ro")) if !b.is_empty() => Ok((b.to_string(), Some(true))),
        Some((b, "rw")) if !b.is_empty() => Ok((b.to_string(), Some(false))),
        Some((b, m)) if !b.is_empty() => Err(VolumeError::Mode(m.into())),
        _ => Err(VolumeError::Spec(raw.into())),
    }
}

/// A mount of the box being made: a new one, or one it takes over from
/// another box (`--volumes-from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    New(Request),
    Inherited(Mount),
}

impl Planned {
    fn target(&self) -> &str {
        match self {
            Planned::New(r) => &r.target,
            Planned::Inherited(m) => &m.target,
        }
    }

    pub fn is_share(&self) -> bool {
        match self {
            Planned::New(r) => r.kind() != MountKind::Tmpfs,
            Planned::Inherited(m) => m.is_share(),
        }
    }
}

/// All of a box's mounts, as Docker puts them together: the flags' own
/// (no two on one target), then those of `--volumes-from` boxes and the
/// image's VOLUMEs, each only where nothing before it is mounted. Checks
/// every bind source; makes nothing.
pub fn plan(
    requests: Vec<Request>,
    from: Vec<(Vec<Mount>, Option<bool>)>,
    image_volumes: &[String],
) -> Result<Vec<Planned>> {
    let mut out: Vec<Planned> = Vec::new();
    for r in requests {
        if out.iter().any(|p| p.target() == r.target) {
            return Err(VolumeError::Duplicate(r.target));
        }
        if r.kind() == MountKind::Bind {
            let src = r.source.as_deref().unwrap_or_default();
            match std::fs::metadata(src) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(VolumeError::NotADirectory(src.into())),
                Err(_) if r.create_source => {}
                Err(_) => {
                    return Err(mount_config(
                        MountKind::Bind,
                        format!("bind source path does not exist: {src}"),
                    ))
                }
            }
        }
        out.push(Planned::New(r));
    }
    for (mounts, read_only) in from {
        for mut m in mounts.into_iter().filter(Mount::is_share) {
            if out.iter().any(|p| p.target() == m.target) {
                continue;
            }
            if let Some(ro) = read_only {
                m.read_only = ro;
            }
            m.anonymous = false;
            out.push(Planned::Inherited(m));
        }
    }
    for v in image_volumes {
        let Ok(target) = check_target(MountKind::Volume, v) else {
            continue;
        };
        if out.iter().any(|p| p.target() == target) {
            continue;
        }
        out.push(Planned::New(Request {
            kind: Some(MountKind::Volume),
            target,
            ..Request::default()
        }));
    }
    if out.iter().filter(|p| p.is_share()).count() > super::MAX_SHARES {
        return Err(VolumeError::TooMany);
    }
    Ok(out)
}

/// Orders mounts so that each comes after any it lies inside (by depth, as
/// Docker sorts them), keeping the given order otherwise.
pub fn sort_for_mounting(mounts: &mut [Mount]) {
    mounts.sort_by_key(|m| m.target.matches('/').count());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(r: Result<Request>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn volume_flags_read_as_dockers() {
        let r = parse_volume("data:/srv/data").unwrap();
        assert_eq!(r.kind(), MountKind::Volume);
        assert_eq!(r.source.as_deref(), Some("data"));
        assert_eq!(r.target, "/srv/data");
        assert!(!r.read_only);
        let r = parse_volume("data:/srv/data/:ro").unwrap();
        assert!(r.read_only);
        assert_eq!(r.target, "/srv/data");
        assert_eq!(r.mode, "ro");
        let r = parse_volume("/cache").unwrap();
        assert_eq!((r.kind(), r.source.clone()), (MountKind::Volume, None));
        let r = parse_volume("/host/dir:/in/box:ro,z").unwrap();
        assert_eq!(r.kind(), MountKind::Bind);
        assert_eq!(r.source.as_deref(), Some("/host/dir"));
        assert!(r.read_only && r.create_source);
        let r = parse_volume("data:/d:nocopy,rw").unwrap();
        assert!(r.nocopy && !r.read_only);
    }

    #[test]
    fn bad_volume_flags_say_what_docker_says() {
        assert_eq!(err(parse_volume("/a:/b:rw,ro")), "invalid mode: rw,ro");
        assert_eq!(err(parse_volume("/a:/b:bogus")), "invalid mode: bogus");
        assert_eq!(err(parse_volume("/a:/b:nocopy")), "invalid mode: nocopy");
        assert_eq!(
            err(parse_volume("/data:rw")),
            "invalid volume specification: '/data:rw'"
        );
        assert_eq!(
            err(parse_volume("a:b:c:d")),
            "invalid volume specification: 'a:b:c:d'"
        );
        assert_eq!(
            err(parse_volume(":/x")),
            "invalid volume specification: ':/x'"
        );
        assert_eq!(
            err(parse_volume("data:relative")),
            "invalid mount config for type \"volume\": invalid mount path: 'relative' mount \
             path must be absolute"
        );
        assert_eq!(
            err(parse_volume("relative")),
            "invalid mount config for type \"volume\": invalid mount path: 'relative' mount \
             path must be absolute"
        );
        assert!(err(parse_volume("x/y:/d")).contains("includes invalid characters"));
        assert!(err(parse_volume("/a:/")).contains("destination can't be '/'"));
        assert!(err(parse_volume("/a:/b:shared")).contains("bind propagation shared"));
        assert!(parse_volume("/a:/b:rprivate").is_ok());
    }

    #[test]
    fn mount_flags_read_as_dockers() {
        let r = parse_mount("type=bind,src=/srv/x,dst=/x,readonly").unwrap();
        assert_eq!(r.kind(), MountKind::Bind);
        assert_eq!(
            (r.source.as_deref(), r.target.as_str(), r.read_only),
            (Some("/srv/x"), "/x", true)
        );
        assert!(!r.create_source);
        let r = parse_mount("source=data,target=/data,ro=false,volume-nocopy").unwrap();
        assert_eq!(r.kind(), MountKind::Volume);
        assert!(!r.read_only && r.nocopy);
        let r = parse_mount("type=volume,destination=/v,volume-label=a=b,volume-opt=type=none")
            .unwrap();
        assert_eq!(r.source, None);
        assert_eq!(r.volume_labels["a"], "b");
        assert_eq!(r.volume_options["type"], "none");
        let r = parse_mount("type=tmpfs,target=/t,tmpfs-size=64m,tmpfs-mode=1770").unwrap();
        let t = r.tmpfs.unwrap();
        assert_eq!((t.size, t.mode), (Some(64 << 20), Some(0o1770)));
        assert_eq!(t.data(), "size=67108864,mode=1770");
    }

    #[test]
    fn bad_mount_flags_say_what_docker_says() {
        assert_eq!(
            err(parse_mount("type=bind,source=/a,target=/b,foo=bar")),
            "invalid argument \"type=bind,source=/a,target=/b,foo=bar\" for \"--mount\" flag: \
             unexpected key 'foo' in 'foo=bar'"
        );
        assert_eq!(
            err(parse_mount("type=nfs,target=/b")),
            "invalid mount config for type \"nfs\": mount type unknown"
        );
        assert!(err(parse_mount("type=bind,source=/a")).ends_with("target is required"));
        assert!(err(parse_mount("type=bind,source=/a,target=")).ends_with("target is required"));
        assert_eq!(
            err(parse_mount("type=bind,target=/b")),
            "invalid mount config for type \"bind\": field Source must not be empty"
        );
        assert!(err(parse_mount("type=bind,src=rel,target=/b")).contains("must be absolute"));
        assert!(err(parse_mount("type=tmpfs,src=x,target=/b")).contains("Source must not be"));
        assert!(err(parse_mount("type=bind,src=/a,target=/b,tmpfs-size=1m"))
            .contains("field TmpfsOptions must not be specified"));
        assert!(err(parse_mount("type=bind,src=/a,target=/b,volume-nocopy"))
            .contains("field VolumeOptions must not be specified"));
        assert!(err(parse_mount("type=bind,src=/a,target=/b,ro=maybe"))
            .ends_with("invalid value for ro: maybe"));
        assert!(err(parse_mount(
            "type=bind,src=/a,target=/b,bind-propagation=rshared"
        ))
        .contains("bind propagation rshared is not supported"));
        assert!(err(parse_mount("type=tmpfs,target=/t,tmpfs-mode=99"))
            .ends_with("invalid value for tmpfs-mode: 99"));
        assert!(err(parse_mount("type=volume,target=rel")).contains("must be absolute"));
    }

    #[test]
    fn tmpfs_flags_take_size_mode_and_flags() {
        let r = parse_tmpfs("/run/x:size=16m,mode=700,exec").unwrap();
        assert_eq!(r.target, "/run/x");
        let t = r.tmpfs.unwrap();
        assert_eq!(
            (t.size, t.mode, t.exec, t.suid),
            (Some(16 << 20), Some(0o700), true, false)
        );
        let r = parse_tmpfs("/t").unwrap();
        assert_eq!(r.tmpfs.unwrap().data(), "mode=1777");
        assert!(err(parse_tmpfs("/t:size=lots")).contains("invalid size: lots"));
        assert!(err(parse_tmpfs("/t:uid=0")).contains("unknown tmpfs option 'uid=0'"));
        assert!(err(parse_tmpfs("t")).contains("must be absolute"));
    }

    #[test]
    fn volumes_from_takes_an_optional_ro_or_rw() {
        assert_eq!(parse_volumes_from("web").unwrap(), ("web".into(), None));
        assert_eq!(
            parse_volumes_from("web:ro").unwrap(),
            ("web".into(), Some(true))
        );
        assert_eq!(
            parse_volumes_from("web:rw").unwrap(),
            ("web".into(), Some(false))
        );
        assert_eq!(
            parse_volumes_from("web:z").unwrap_err().to_string(),
            "invalid mode: z"
        );
        assert!(parse_volumes_from(":ro").is_err());
    }

    fn mount(kind: MountKind, source: &str, target: &str) -> Mount {
        Mount {
            kind,
            source: source.into(),
            target: target.into(),
            read_only: false,
            mode: String::new(),
            tmpfs: None,
            anonymous: true,
        }
    }

    #[test]
    fn plan_refuses_two_mounts_on_one_target_and_lets_flags_override() {
        let a = parse_volume("one:/data").unwrap();
        let b = parse_tmpfs("/data/").unwrap();
        assert_eq!(
            plan(vec![a.clone(), b], vec![], &[])
                .unwrap_err()
                .to_string(),
            "Duplicate mount point: /data"
        );
        let from = vec![(
            vec![
                mount(MountKind::Volume, "theirs", "/data"),
                mount(MountKind::Volume, "shared", "/shared"),
                mount(MountKind::Tmpfs, "", "/scratch"),
            ],
            Some(true),
        )];
        let p = plan(
            vec![a],
            from,
            &["/shared".into(), "/var/lib/x".into(), "relative".into()],
        )
        .unwrap();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(matches!(&p[0], Planned::New(r) if r.source.as_deref() == Some("one")));
        let Planned::Inherited(m) = &p[1] else {
            panic!("{p:?}")
        };
        assert_eq!(m.source, "shared");
        assert!(m.read_only, ":ro applies to inherited mounts");
        assert!(!m.anonymous, "the other box's volume is not this one's own");
        assert!(matches!(&p[2], Planned::New(r) if r.source.is_none() && r.target == "/var/lib/x"));
    }

    #[test]
    fn plan_checks_bind_sources_as_dockers_flags_do() {
        let t = crate::testing::TempDir::new("vol-plan");
        let missing = t.path().join("missing");
        let v = parse_volume(&format!("{}:/x", missing.display())).unwrap();
        assert!(
            plan(vec![v], vec![], &[]).is_ok(),
            "-v makes a missing source"
        );
        let m = parse_mount(&format!("type=bind,src={},dst=/x", missing.display())).unwrap();
        assert_eq!(
            plan(vec![m], vec![], &[]).unwrap_err().to_string(),
            format!(
                "invalid mount config for type \"bind\": bind source path does not exist: {}",
                missing.display()
            )
        );
        let file = t.path().join("file");
        std::fs::write(&file, "").unwrap();
        let v = parse_volume(&format!("{}:/x", file.display())).unwrap();
        assert!(matches!(
            plan(vec![v], vec![], &[]),
            Err(VolumeError::NotADirectory(_))
        ));
    }

    #[test]
    fn plan_refuses_more_shares_than_the_vm_has_devices_for() {
        let many: Vec<Request> = (0..=super::super::MAX_SHARES)
            .map(|i| parse_volume(&format!("/d{i}")).unwrap())
            .collect();
        assert!(matches!(plan(many, vec![], &[]), Err(VolumeError::TooMany)));
        let tmpfs: Vec<Request> = (0..20)
            .map(|i| parse_tmpfs(&format!("/t{i}")).unwrap())
            .collect();
        assert!(plan(tmpfs, vec![], &[]).is_ok(), "tmpfs takes no device");
    }

    #[test]
    fn mounts_are_ordered_parents_first() {
        let mut m = vec![
            mount(MountKind::Volume, "a", "/a/b/c"),
            mount(MountKind::Volume, "b", "/a"),
            mount(MountKind::Volume, "c", "/z"),
            mount(MountKind::Volume, "d", "/a/b"),
        ];
        sort_for_mounting(&mut m);
        let order: Vec<&str> = m.iter().map(|m| m.target.as_str()).collect();
        assert_eq!(order, ["/a", "/z", "/a/b", "/a/b/c"]);
    }
}
