//! The event log behind `a3s-box events`: what happened to boxes, in Docker's
//! shape, one JSON line an event in `<state>/events.json`.
//!
//! Many processes write it at once (every CLI command, every box's shim), so an
//! event is appended in one `write` on an `O_APPEND` descriptor: the kernel puts
//! each line whole after every other. The log is bounded: once it grows past
//! [`MAX_SIZE`] the writer that noticed keeps its newest half. Appends hold a
//! shared `flock` on `events.lock` and trimming an exclusive one, so no append
//! lands in a file that trimming has just replaced; readers need no lock (a
//! [`Follower`] notices the replacement and carries on where it was).
//!
//! Who emits what:
//!
//! | action | from |
//! |---|---|
//! | `create` | `cli::run::create_box` |
//! | `start` | `lifecycle::start` (by hand, `restart`, the restart monitor) |
//! | `kill` (`signal`) | `lifecycle::kill`, `kill_now`; `lifecycle::stop` (signal 15) |
//! | `stop` | `lifecycle::stop`, once the box has ended |
//! | `destroy` | `lifecycle::remove` |
//! | `rename` (`oldName`) | `lifecycle::rename` |
//! | `update` | `container-update` |
//!
//! and what the box's shim (`runtime::shim`) must emit itself, since only it
//! sees these happen:
//!
//! - `die` with `exitCode` (the code it records) each time the main process
//!   ends, restarts by policy included;
//! - `restart` when its restart policy starts the main process again, then
//!   `start` once that process runs (Docker logs a start for every start);
//! - `destroy` when it removes a `--rm` box itself;
//! - `health_status: healthy` / `unhealthy` / `starting` when a health check
//!   changes the box's health;
//! - `pause` and `unpause`, from whatever freezes and thaws the workload.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{BoxConfig, Store};

/// The log, under the state directory.
pub const EVENTS_FILE: &str = "events.json";
/// Taken shared by appends, exclusive by trimming.
const LOCK_FILE: &str = "events.lock";
/// Past this size the log keeps its newest half.
pub const MAX_SIZE: u64 = 4 << 20;

/// One event, with Docker's field names (`docker events --format '{{json .}}'`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The action again (Docker's older field).
    #[serde(default)]
    pub status: String,
    /// The actor's ID again.
    #[serde(default)]
    pub id: String,
    /// The image the box came from.
    #[serde(default)]
    pub from: String,
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    #[serde(default = "local")]
    pub scope: String,
    /// Seconds since the Unix epoch.
    pub time: i64,
    /// The same instant in nanoseconds.
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes", default)]
    pub attributes: BTreeMap<String, String>,
}

fn local() -> String {
    "local".into()
}

/// The image as `ps` shows it: the name the user gave, else the short image ID,
/// else the root directory.
fn image_of(cfg: &BoxConfig) -> String {
    match (&cfg.image_name, &cfg.image) {
        (Some(n), _) => n.clone(),
        (None, Some(id)) => {
            let hex = id.trim_start_matches("sha256:");
            hex[..12.min(hex.len())].to_string()
        }
        (None, None) => cfg.rootfs.clone(),
    }
}

impl Event {
    /// A container event of box `cfg` at `at`: its labels, `image` and `name`
    /// as attributes (as Docker's, the last two win over labels), then `extra`.
    pub fn of_box(action: &str, cfg: &BoxConfig, extra: &[(&str, String)], at: SystemTime) -> Self {
        let image = image_of(cfg);
        let mut attributes = cfg.labels.clone();
        attributes.insert("image".into(), image.clone());
        attributes.insert("name".into(), cfg.name.clone());
        for (k, v) in extra {
            attributes.insert((*k).to_string(), v.clone());
        }
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        Event {
            status: action.to_string(),
            id: cfg.id.clone(),
            from: image,
            kind: "container".into(),
            action: action.to_string(),
            actor: Actor {
                id: cfg.id.clone(),
                attributes,
            },
            scope: local(),
            time: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            time_nano: i64::try_from(since.as_nanos()).unwrap_or(i64::MAX),
        }
    }

    /// When it happened.
    pub fn at(&self) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_nanos(u64::try_from(self.time_nano).unwrap_or(0))
    }
}

/// Records that `action` happened to box `cfg`, with `extra` attributes
/// (`exitCode` for `die`, `signal` for `kill`). Never fails the caller: an
/// event that cannot be written is reported on stderr and dropped.
pub fn emit(state_dir: &Path, action: &str, cfg: &BoxConfig, extra: &[(&str, String)]) {
    let event = Event::of_box(action, cfg, extra, SystemTime::now());
    if let Err(e) = append(state_dir, &event) {
        eprintln!(
            "a3s-box: warning: the {action} event of box {} was not recorded: {e}",
            &cfg.id[..12.min(cfg.id.len())]
        );
    }
}

/// [`emit`] for box `id` of `store`, whose record is read here; a box whose
/// record cannot be read gets no event.
pub fn emit_box(store: &Store, action: &str, id: &str, extra: &[(&str, String)]) {
    if let Ok(cfg) = store.config(id) {
        emit(store.root(), action, &cfg, extra);
    }
}

/// Appends `event` to the log under `state_dir`, trimming the log when it has
/// grown past [`MAX_SIZE`].
pub fn append(state_dir: &Path, event: &Event) -> io::Result<()> {
    append_bounded(state_dir, event, MAX_SIZE)
}

fn open_lock(state_dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o644)
        .open(state_dir.join(LOCK_FILE))
}

fn append_bounded(state_dir: &Path, event: &Event, limit: u64) -> io::Result<()> {
    let mut line = serde_json::to_vec(event).map_err(io::Error::other)?;
    line.push(b'\n');
    std::fs::create_dir_all(state_dir)?;
    let size = {
        let lock = open_lock(state_dir)?;
        lock.lock_shared()?;
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .open(state_dir.join(EVENTS_FILE))?;
        // One write: O_APPEND places it whole, after every other writer's.
        let n = f.write(&line)?;
        if n != line.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("only {n} of {} bytes were written", line.len()),
            ));
        }
        f.metadata()?.len()
    };
    if size > limit {
        trim(state_dir, limit)?;
    }
    Ok(())
}

/// Keeps the newest half of a log grown past `limit`, cut at a line.
fn trim(state_dir: &Path, limit: u64) -> io::Result<()> {
    let lock = open_lock(state_dir)?;
    lock.lock()?;
    let path = state_dir.join(EVENTS_FILE);
    let data = std::fs::read(&path)?;
    // Another writer may have trimmed it while this one waited for the lock.
    if data.len() as u64 <= limit {
        return Ok(());
    }
    let half = data.len() / 2;
    let start = data[half..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(data.len(), |i| half + i + 1);
    let tmp = state_dir.join("events.json.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&data[start..])?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)
}

/// Every event in the log under `state_dir`, oldest first.
pub fn read_all(state_dir: &Path) -> io::Result<Vec<Event>> {
    Follower::from_start(state_dir).poll()
}

/// Reads the log as it grows, across trims; each [`Follower::poll`] returns the
/// events appended since the last.
pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    /// Device and inode of `file`: a different one at `path` means trimmed.
    ident: (u64, u64),
    /// The bytes after the last newline read: a line still being written.
    partial: Vec<u8>,
    /// The last whole line read, to find the place again in a trimmed log.
    last_line: Option<Vec<u8>>,
    /// Start at the end of the log as it is when first opened.
    from_end: bool,
}

impl Follower {
    /// A follower that reads the whole log, then what is appended.
    pub fn from_start(state_dir: &Path) -> Follower {
        Follower {
            path: state_dir.join(EVENTS_FILE),
            file: None,
            ident: (0, 0),
            partial: Vec::new(),
            last_line: None,
            from_end: false,
        }
    }

    /// A follower that reads only what is appended from now on.
    pub fn from_end(state_dir: &Path) -> Follower {
        let mut f = Follower::from_start(state_dir);
        f.from_end = true;
        // Opened now, so that what comes next is what "now" means.
        let _ = f.open();
        f
    }

    /// Opens the log if it exists; `Ok(false)` when it does not (yet).
    fn open(&mut self) -> io::Result<bool> {
        // A log made after the follower started holds only new events.
        let skip_existing = std::mem::take(&mut self.from_end);
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        self.ident = (meta.dev(), meta.ino());
        if skip_existing && meta.len() > 0 {
            // A line being written at the end is not whole yet: skip it too.
            file.seek(SeekFrom::Start(meta.len() - 1))?;
            let mut last = [0u8; 1];
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                self.partial = b"\0".to_vec();
            }
        }
        self.file = Some(file);
        Ok(true)
    }

    /// Reads `file` to its end into whole lines.
    fn drain(&mut self, lines: &mut Vec<Vec<u8>>) -> io::Result<()> {
        let Some(f) = self.file.as_mut() else {
            return Ok(());
        };
        let mut buf = std::mem::take(&mut self.partial);
        f.read_to_end(&mut buf)?;
        let mut start = 0;
        while let Some(i) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + i];
            // A line skipped when the follower started mid-write.
            if !line.starts_with(b"\0") {
                lines.push(line.to_vec());
            }
            start += i + 1;
        }
        self.partial = buf[start..].to_vec();
        Ok(())
    }

    /// Events appended since the last call (or, the first time, all of them).
    pub fn poll(&mut self) -> io::Result<Vec<Event>> {
        let mut lines = Vec::new();
        if self.file.is_none() && !self.open()? {
            return Ok(Vec::new());
        }
        self.drain(&mut lines)?;
        let replaced = match std::fs::metadata(&self.path) {
            Ok(m) => (m.dev(), m.ino()) != self.ident,
            Err(_) => false,
        };
        if replaced {
            // Nothing is appended to the old file once it is replaced: what
            // arrived before that is its last.
            self.drain(&mut lines)?;
            if let Some(l) = lines.last() {
                self.last_line = Some(l.clone());
            }
            self.file = None;
            self.partial.clear();
            if self.open()? {
                let mut fresh = Vec::new();
                self.drain(&mut fresh)?;
                // The new file starts with the newest half of the old one:
                // skip what was already read.
                let skip = self
                    .last_line
                    .as_ref()
                    .and_then(|last| fresh.iter().position(|l| l == last))
                    .map_or(0, |i| i + 1);
                lines.extend(fresh.into_iter().skip(skip));
            }
        }
        if let Some(l) = lines.last() {
            self.last_line = Some(l.clone());
        }
        // A line that does not parse (cut short by a full disk) is skipped.
        Ok(lines
            .iter()
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::TempDir;

    /// A record as an older version wrote it: later fields take their defaults.
    fn cfg(name: &str) -> BoxConfig {
        serde_json::from_value(serde_json::json!({
            "id": format!("{:0>64}", name.len()), "name": name, "rootfs": "/roots/r",
            "image_name": "busybox", "labels": {"app": "web"}, "argv": ["true"], "env": [],
            "workdir": "/", "user": null, "hostname": "h", "tty": false, "stdin": false,
            "cpus": 1, "memory": 134217728, "kernel": "/vmlinux", "auto_remove": false,
            "created": 0,
        }))
        .unwrap()
    }

    #[test]
    fn an_event_has_dockers_shape() {
        let at = UNIX_EPOCH + std::time::Duration::from_nanos(1_765_101_600_123_456_789);
        let e = Event::of_box("die", &cfg("web"), &[("exitCode", "3".into())], at);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["Type"], "container");
        assert_eq!(v["Action"], "die");
        assert_eq!(v["status"], "die");
        assert_eq!(v["from"], "busybox");
        assert_eq!(v["id"], v["Actor"]["ID"]);
        assert_eq!(
            v["Actor"]["Attributes"],
            serde_json::json!({"app": "web", "image": "busybox", "name": "web", "exitCode": "3"})
        );
        assert_eq!(v["scope"], "local");
        assert_eq!(v["time"], 1_765_101_600);
        assert_eq!(v["timeNano"], 1_765_101_600_123_456_789_i64);
    }

    #[test]
    fn emitted_events_read_back_in_order() {
        let d = TempDir::new("order");
        emit(&d.0, "create", &cfg("a"), &[]);
        emit(&d.0, "start", &cfg("a"), &[]);
        let got: Vec<String> = read_all(&d.0)
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(got, ["create", "start"]);
    }

    #[test]
    fn concurrent_writers_never_interleave_lines() {
        let d = TempDir::new("concurrent");
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let dir = d.0.clone();
                std::thread::spawn(move || {
                    // Long attributes make each write many times a pipe's atomic size.
                    let mut c = cfg(&format!("writer{t}"));
                    c.labels.insert("pad".into(), "x".repeat(8192));
                    for i in 0..50 {
                        append(
                            &dir,
                            &Event::of_box("start", &c, &[("n", i.to_string())], SystemTime::now()),
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = std::fs::read_to_string(d.0.join(EVENTS_FILE)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 400);
        for l in &lines {
            serde_json::from_str::<Event>(l).expect("every line is one whole event");
        }
        for t in 0..8 {
            let name = format!("writer{t}");
            let ns: Vec<String> = read_all(&d.0)
                .unwrap()
                .into_iter()
                .filter(|e| e.actor.attributes["name"] == name)
                .map(|e| e.actor.attributes["n"].clone())
                .collect();
            let want: Vec<String> = (0..50).map(|i| i.to_string()).collect();
            assert_eq!(ns, want, "{name}'s events, in its order");
        }
    }

    #[test]
    fn a_log_past_its_limit_keeps_its_newest_half() {
        let d = TempDir::new("trim");
        let limit = 4096;
        for i in 0..200 {
            let e = Event::of_box(
                "start",
                &cfg("t"),
                &[("n", i.to_string())],
                SystemTime::now(),
            );
            append_bounded(&d.0, &e, limit).unwrap();
        }
        let size = std::fs::metadata(d.0.join(EVENTS_FILE)).unwrap().len();
        assert!(size <= limit, "{size} bytes");
        let ns: Vec<u32> = read_all(&d.0)
            .unwrap()
            .iter()
            .map(|e| e.actor.attributes["n"].parse().unwrap())
            .collect();
        assert!(ns.len() > 5, "{ns:?}");
        assert_eq!(*ns.last().unwrap(), 199, "the newest event is kept");
        assert!(
            ns.windows(2).all(|w| w[1] == w[0] + 1),
            "a contiguous run of the newest: {ns:?}"
        );
        // The file starts at a line: nothing half-cut is left at the front.
        let text = std::fs::read_to_string(d.0.join(EVENTS_FILE)).unwrap();
        assert!(text.starts_with('{') && text.ends_with('\n'));
    }

    #[test]
    fn a_follower_sees_new_events_and_carries_on_across_a_trim() {
        let d = TempDir::new("follow");
        let limit = 4096;
        let ev = |i: u32| {
            Event::of_box(
                "start",
                &cfg("f"),
                &[("n", i.to_string())],
                SystemTime::now(),
            )
        };
        append_bounded(&d.0, &ev(0), limit).unwrap();
        let mut tail = Follower::from_end(&d.0);
        let mut all = Follower::from_start(&d.0);
        assert!(
            tail.poll().unwrap().is_empty(),
            "what was there before is skipped"
        );
        let mut seen_tail = Vec::new();
        let mut seen_all = Vec::new();
        for i in 1..200 {
            append_bounded(&d.0, &ev(i), limit).unwrap();
            if i % 7 == 0 {
                seen_tail.extend(tail.poll().unwrap());
                seen_all.extend(all.poll().unwrap());
            }
        }
        seen_tail.extend(tail.poll().unwrap());
        seen_all.extend(all.poll().unwrap());
        let n = |v: &[Event]| -> Vec<u32> {
            v.iter()
                .map(|e| e.actor.attributes["n"].parse().unwrap())
                .collect()
        };
        assert_eq!(n(&seen_tail), (1..200).collect::<Vec<_>>());
        assert_eq!(n(&seen_all), (0..200).collect::<Vec<_>>());
    }

    #[test]
    fn a_follower_of_a_log_not_yet_made_waits_for_it() {
        let d = TempDir::new("absent");
        let mut f = Follower::from_end(&d.0);
        assert!(f.poll().unwrap().is_empty());
        emit(&d.0, "create", &cfg("late"), &[]);
        assert_eq!(f.poll().unwrap()[0].action, "create");
    }

    #[test]
    fn an_unwritable_log_is_a_warning_not_a_failure() {
        // A state directory that is a file: nothing can be created in it.
        let d = TempDir::new("unwritable");
        let file = d.0.join("not-a-dir");
        std::fs::write(&file, b"").unwrap();
        emit(&file, "create", &cfg("x"), &[]);
        assert!(append(
            &file,
            &Event::of_box("create", &cfg("x"), &[], SystemTime::now())
        )
        .is_err());
    }
}
