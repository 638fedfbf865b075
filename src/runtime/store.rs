//! The box records under `<state>/boxes/<id>/`: `config.json` (how it was asked to
//! run) and `state.json` (how it is doing). Writes are atomic (temporary file, fsync,
//! rename) and changes that must see every box (names) hold an exclusive `flock`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};

use super::{BoxConfig, BoxState, RuntimeError};

type Result<T> = std::result::Result<T, RuntimeError>;

pub const CONFIG_FILE: &str = "config.json";
pub const STATE_FILE: &str = "state.json";
/// Links from box names to IDs, in the boxes directory.
const NAMES_DIR: &str = ".names";
/// Exit code recorded for a box whose shim died (as Docker reports a lost shim).
pub const EXIT_SHIM_DIED: i32 = 255;

#[derive(Clone)]
pub struct Store {
    root: PathBuf,
    boxes: PathBuf,
    sockets: PathBuf,
}

/// An exclusive lock over all box records; released when dropped.
pub struct Lock(#[allow(dead_code)] File);

/// Writes `value` as JSON to `path` so that a reader sees the old or the new file,
/// never a part of one, even if this process dies half-way.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let data = serde_json::to_vec_pretty(value).expect("box records always serialise");
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| RuntimeError::io("cannot write", path, e))
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let data = std::fs::read(path).map_err(|e| RuntimeError::io("cannot read", path, e))?;
    serde_json::from_slice(&data).map_err(|source| RuntimeError::Corrupt {
        path: path.to_owned(),
        source,
    })
}

/// Whether the shim `st` names is still the process that runs the box: it
/// exists and, when its start time was recorded, started then.
pub fn shim_alive(st: &BoxState) -> bool {
    let Some(pid) = st.pid else {
        return false;
    };
    match (st.pid_start, super::record::process_start(pid)) {
        (Some(recorded), Some(now)) => recorded == now,
        (None, Some(_)) => true,
        (_, None) => false,
    }
}

/// A new random 64-hex-digit box ID.
pub fn new_id() -> String {
    let mut b = [0u8; 32];
    let mut filled = 0;
    while filled < b.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `b`.
        let n = unsafe { libc::getrandom(b[filled..].as_mut_ptr().cast(), b.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        }
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A readable name for a box nobody named, like Docker's `brave_turing`.
pub fn generate_name(id: &str) -> String {
    const ADJ: [&str; 16] = [
        "brave", "calm", "eager", "fond", "gentle", "happy", "jolly", "keen", "lucid", "merry",
        "nifty", "proud", "quiet", "sharp", "tender", "witty",
    ];
    const NOUN: [&str; 16] = [
        "babbage", "curie", "dijkstra", "euler", "fermat", "gauss", "hopper", "hypatia", "knuth",
        "lovelace", "noether", "pascal", "ritchie", "shannon", "turing", "wozniak",
    ];
    let n = u32::from_str_radix(&id[..8], 16).unwrap_or(0);
    format!(
        "{}_{}",
        ADJ[(n & 15) as usize],
        NOUN[((n >> 4) & 15) as usize]
    )
}

/// Docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl Store {
    /// The store under state directory `state`, created if missing.
    pub fn open(state: &Path) -> Result<Store> {
        let boxes = state.join("boxes");
        std::fs::create_dir_all(&boxes)
            .map_err(|e| RuntimeError::io("cannot create", &boxes, e))?;
        Ok(Store {
            root: state.to_owned(),
            boxes,
            sockets: state.join("s"),
        })
    }

    /// The state directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn box_dir(&self, id: &str) -> PathBuf {
        self.boxes.join(id)
    }

    /// Where a running box's sockets live. Unix socket paths are limited to 107
    /// bytes and the guest's ports add a `_<port>` suffix, so this is a short path
    /// (16 hex digits of the ID) rather than the box directory.
    pub fn socket_dir(&self, id: &str) -> PathBuf {
        self.sockets.join(&id[..16.min(id.len())])
    }

    pub fn lock(&self) -> Result<Lock> {
        let path = self.boxes.join(".lock");
        let f = File::create(&path).map_err(|e| RuntimeError::io("cannot open", &path, e))?;
        f.lock()
            .map_err(|e| RuntimeError::io("cannot lock", &path, e))?;
        Ok(Lock(f))
    }

    /// Records a new box; fills in its ID (and name, if empty). The name must be
    /// unused.
    pub fn create(&self, cfg: &mut BoxConfig) -> Result<PathBuf> {
        let _lock = self.lock()?;
        cfg.id = new_id();
        if cfg.name.is_empty() {
            cfg.name = generate_name(&cfg.id);
            while self
                .ids()?
                .iter()
                .any(|id| self.config(id).is_ok_and(|c| c.name == cfg.name))
            {
                cfg.name = format!("{}_{}", generate_name(&new_id()), &new_id()[..4]);
            }
        } else if !valid_name(&cfg.name) {
            return Err(RuntimeError::InvalidName(cfg.name.clone()));
        } else if let Some(other) = self
            .ids()?
            .into_iter()
            .find(|id| self.config(id).is_ok_and(|c| c.name == cfg.name))
        {
            return Err(RuntimeError::NameInUse(
                cfg.name.clone(),
                other[..12].to_string(),
            ));
        }
        let dir = self.box_dir(&cfg.id);
        std::fs::create_dir(&dir).map_err(|e| RuntimeError::io("cannot create", &dir, e))?;
        write_json_atomic(&dir.join(STATE_FILE), &BoxState::created())?;
        // The config goes last: a box without one is half-made and never listed.
        write_json_atomic(&dir.join(CONFIG_FILE), cfg)?;
        self.link_name(&cfg.name, &cfg.id);
        Ok(dir)
    }

    /// Every complete box record with its live state, read in one pass (a
    /// box removed or half-written meanwhile is left out).
    pub fn list(&self) -> Result<Vec<(BoxConfig, BoxState)>> {
        let rd = std::fs::read_dir(&self.boxes)
            .map_err(|e| RuntimeError::io("cannot list", &self.boxes, e))?;
        Ok(rd
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .filter_map(|id| Some((self.config(&id).ok()?, self.live_state(&id).ok()?)))
            .collect())
    }

    /// IDs of every complete box record.
    pub fn ids(&self) -> Result<Vec<String>> {
        let rd = std::fs::read_dir(&self.boxes)
            .map_err(|e| RuntimeError::io("cannot list", &self.boxes, e))?;
        let mut ids: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .filter(|n| self.boxes.join(n).join(CONFIG_FILE).exists())
            .collect();
        ids.sort();
        Ok(ids)
    }

    pub fn config(&self, id: &str) -> Result<BoxConfig> {
        read_json(&self.box_dir(id).join(CONFIG_FILE))
    }

    pub fn state(&self, id: &str) -> Result<BoxState> {
        read_json(&self.box_dir(id).join(STATE_FILE))
    }

    /// The box's state, corrected when its shim died without recording an end: a box
    /// is never reported running when nothing runs it.
    pub fn live_state(&self, id: &str) -> Result<BoxState> {
        let st = self.state(id)?;
        // Only a record that names a shim can be out of date.
        if st.pid.is_none() || shim_alive(&st) {
            return Ok(st);
        }
        let _lock = self.lock()?;
        self.settle_locked(id)
    }

    /// [`Store::live_state`] for a caller that holds the lock.
    pub fn settle_locked(&self, id: &str) -> Result<BoxState> {
        let mut st = self.state(id)?;
        let Some(pid) = st.pid.filter(|_| !shim_alive(&st)) else {
            return Ok(st);
        };
        st.status = super::Status::Exited;
        st.pid = None;
        st.pid_start = None;
        st.finished = Some(super::record::now());
        st.exit_code = Some(EXIT_SHIM_DIED);
        st.error = Some(format!(
            "the box's VMM (pid {pid}) ended without recording how the box ended"
        ));
        self.write_state(id, &st)?;
        // Nor could it take its published ports off the host.
        if let Ok(cfg) = self.config(id) {
            crate::net::bridge::forget_dead_box(&cfg);
        }
        Ok(st)
    }

    pub fn write_state(&self, id: &str, state: &BoxState) -> Result<()> {
        write_json_atomic(&self.box_dir(id).join(STATE_FILE), state)
    }

    /// The full ID of the box called `name_or_id`: an exact name, a full ID, or an
    /// unambiguous ID prefix, as Docker resolves them.
    pub fn resolve(&self, name_or_id: &str) -> Result<String> {
        // The common cases without reading every record: a full ID, or a name
        // whose link leads to a box that still has that name.
        if name_or_id.len() == 64 && self.box_dir(name_or_id).join(CONFIG_FILE).exists() {
            return Ok(name_or_id.to_string());
        }
        if let Some(id) = self.named(name_or_id) {
            return Ok(id);
        }
        let ids = self.ids()?;
        if let Some(id) = ids.iter().find(|id| *id == name_or_id) {
            return Ok(id.clone());
        }
        if let Some(id) = ids
            .iter()
            .find(|id| self.config(id).is_ok_and(|c| c.name == name_or_id))
        {
            return Ok(id.clone());
        }
        let matches: Vec<&String> = if name_or_id.is_empty() {
            Vec::new()
        } else {
            ids.iter().filter(|id| id.starts_with(name_or_id)).collect()
        };
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(RuntimeError::NoSuchBox(name_or_id.to_string())),
            _ => Err(RuntimeError::Ambiguous(name_or_id.to_string())),
        }
    }

    /// Where the link from `name` to its box's ID lives. Links are a lookup
    /// aid only: the records decide, and a missing or stale link just means a
    /// slower lookup.
    fn name_link(&self, name: &str) -> Option<PathBuf> {
        valid_name(name).then(|| self.boxes.join(NAMES_DIR).join(name))
    }

    /// The box whose name link `name` has, if that box still has that name.
    fn named(&self, name: &str) -> Option<String> {
        let id = std::fs::read_link(self.name_link(name)?).ok()?;
        let id = id.to_str()?.to_string();
        self.config(&id).is_ok_and(|c| c.name == name).then_some(id)
    }

    /// Points the name link of `name` at box `id` (under the lock).
    fn link_name(&self, name: &str, id: &str) {
        let Some(link) = self.name_link(name) else {
            return;
        };
        let _ = std::fs::create_dir_all(self.boxes.join(NAMES_DIR));
        let _ = std::fs::remove_file(&link);
        let _ = std::os::unix::fs::symlink(id, &link);
    }

    /// Removes the name link of `name` if it leads to box `id`.
    fn unlink_name(&self, name: &str, id: &str) {
        if let Some(link) = self.name_link(name) {
            if std::fs::read_link(&link).is_ok_and(|t| t == Path::new(id)) {
                let _ = std::fs::remove_file(link);
            }
        }
    }

    /// Renames box `id` to `name`, which must be valid and unused; returns
    /// the renamed record and the old name.
    pub fn rename(&self, id: &str, name: &str) -> Result<(BoxConfig, String)> {
        let _lock = self.lock()?;
        if !valid_name(name) {
            return Err(RuntimeError::InvalidName(name.into()));
        }
        if let Some(other) = self
            .ids()?
            .into_iter()
            .find(|o| self.config(o).is_ok_and(|c| c.name == name))
        {
            return Err(RuntimeError::NameInUse(
                name.into(),
                other[..12.min(other.len())].into(),
            ));
        }
        let mut cfg = self.config(id)?;
        let old = std::mem::replace(&mut cfg.name, name.into());
        write_json_atomic(&self.box_dir(id).join(CONFIG_FILE), &cfg)?;
        self.unlink_name(&old, id);
        self.link_name(name, id);
        Ok((cfg, old))
    }

    /// Deletes a box's record and everything in its directory.
    pub fn remove(&self, id: &str) -> Result<()> {
        let dir = self.box_dir(id);
        if let Ok(cfg) = self.config(id) {
            self.unlink_name(&cfg.name, id);
        }
        // Drop the config first so a half-removed box is never listed.
        let _ = std::fs::remove_file(dir.join(CONFIG_FILE));
        std::fs::remove_dir_all(&dir).map_err(|e| RuntimeError::io("cannot remove", &dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (Store, PathBuf) {
        let dir = std::env::temp_dir().join(format!("a3s-store-{}", new_id()));
        (Store::open(&dir).unwrap(), dir)
    }

    fn cfg(name: &str) -> BoxConfig {
        BoxConfig {
            id: String::new(),
            name: name.into(),
            rootfs: "/".into(),
            layer: None,
            image: None,
            image_name: None,
            labels: Default::default(),
            restart: Default::default(),
            health: None,
            argv: vec!["true".into()],
            env: vec![],
            workdir: "/".into(),
            user: None,
            hostname: "box".into(),
            tty: false,
            stdin: false,
            cpus: 1,
            memory: 128 << 20,
            kernel: "/vmlinux".into(),
            auto_remove: false,
            created: 0,
            network: Default::default(),
            mounts: Vec::new(),
            security: Default::default(),
        }
    }

    #[test]
    fn created_box_resolves_by_name_full_id_and_prefix() {
        let (s, dir) = temp_store();
        let mut c = cfg("web");
        s.create(&mut c).unwrap();
        assert_eq!(c.id.len(), 64);
        assert_eq!(s.resolve("web").unwrap(), c.id);
        assert_eq!(s.resolve(&c.id).unwrap(), c.id);
        assert_eq!(s.resolve(&c.id[..12]).unwrap(), c.id);
        assert!(matches!(s.resolve("nope"), Err(RuntimeError::NoSuchBox(_))));
        assert_eq!(s.state(&c.id).unwrap(), BoxState::created());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn names_resolve_through_links_that_follow_renames_and_removals() {
        let (s, dir) = temp_store();
        let mut c = cfg("first");
        s.create(&mut c).unwrap();
        assert_eq!(s.named("first"), Some(c.id.clone()));
        s.rename(&c.id, "second").unwrap();
        assert_eq!(s.named("first"), None);
        assert_eq!(s.resolve("second").unwrap(), c.id);
        assert!(matches!(
            s.resolve("first"),
            Err(RuntimeError::NoSuchBox(_))
        ));
        // A link gone stale (a crash, an older version) only slows the lookup.
        let _ = std::fs::remove_file(s.name_link("second").unwrap());
        assert_eq!(s.resolve("second").unwrap(), c.id);
        s.link_name("second", &"f".repeat(64));
        assert_eq!(s.resolve("second").unwrap(), c.id);
        s.remove(&c.id).unwrap();
        assert!(matches!(
            s.resolve("second"),
            Err(RuntimeError::NoSuchBox(_))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_name_in_use_is_refused_and_loses_nothing() {
        let (s, dir) = temp_store();
        let mut a = cfg("db");
        s.create(&mut a).unwrap();
        let mut b = cfg("db");
        assert!(matches!(s.create(&mut b), Err(RuntimeError::NameInUse(..))));
        assert_eq!(s.ids().unwrap(), vec![a.id.clone()]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn invalid_names_are_refused() {
        let (s, dir) = temp_store();
        for bad in ["-x", "a/b", "a b", "é"] {
            assert!(
                matches!(s.create(&mut cfg(bad)), Err(RuntimeError::InvalidName(_))),
                "{bad}"
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unnamed_boxes_get_distinct_generated_names() {
        let (s, dir) = temp_store();
        let mut names = std::collections::HashSet::new();
        for _ in 0..20 {
            let mut c = cfg("");
            s.create(&mut c).unwrap();
            assert!(valid_name(&c.name));
            assert!(names.insert(c.name.clone()), "duplicate {}", c.name);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn half_made_box_without_config_is_not_listed() {
        let (s, dir) = temp_store();
        std::fs::create_dir(s.box_dir(&"a".repeat(64))).unwrap();
        assert!(s.ids().unwrap().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_box_whose_shim_died_is_recorded_as_exited_with_the_reason() {
        let (s, dir) = temp_store();
        let mut c = cfg("orphan");
        s.create(&mut c).unwrap();
        // A process that has certainly ended: a child we already reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let mut st = BoxState::created();
        st.status = crate::runtime::Status::Running;
        st.pid = Some(pid);
        s.write_state(&c.id, &st).unwrap();
        let live = s.live_state(&c.id).unwrap();
        assert_eq!(live.status, crate::runtime::Status::Exited);
        assert_eq!(live.exit_code, Some(EXIT_SHIM_DIED));
        assert!(live.error.unwrap().contains(&pid.to_string()));
        // And it is written down, not only reported.
        assert_eq!(
            s.state(&c.id).unwrap().status,
            crate::runtime::Status::Exited
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_pid_reused_by_another_process_is_not_the_box_shim() {
        let (s, dir) = temp_store();
        let mut c = cfg("reused");
        s.create(&mut c).unwrap();
        let mut st = BoxState::created();
        st.status = crate::runtime::Status::Running;
        // This process exists, but it started at another time than recorded.
        st.pid = Some(std::process::id());
        st.pid_start = crate::runtime::record::process_start(std::process::id()).map(|t| t + 1);
        s.write_state(&c.id, &st).unwrap();
        let live = s.live_state(&c.id).unwrap();
        assert_eq!(live.status, crate::runtime::Status::Exited);
        assert_eq!(live.exit_code, Some(EXIT_SHIM_DIED));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_running_shim_keeps_its_box_running() {
        let (s, dir) = temp_store();
        let mut c = cfg("alive");
        s.create(&mut c).unwrap();
        let mut st = BoxState::created();
        st.status = crate::runtime::Status::Running;
        st.pid = Some(std::process::id());
        st.pid_start = crate::runtime::record::process_start(std::process::id());
        s.write_state(&c.id, &st).unwrap();
        assert_eq!(
            s.live_state(&c.id).unwrap().status,
            crate::runtime::Status::Running
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_corrupt_state_file_is_reported_not_panicked_on() {
        let (s, dir) = temp_store();
        let mut c = cfg("x");
        s.create(&mut c).unwrap();
        std::fs::write(s.box_dir(&c.id).join(STATE_FILE), b"{not json").unwrap();
        assert!(matches!(s.state(&c.id), Err(RuntimeError::Corrupt { .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
