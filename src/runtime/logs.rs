//! The json-file log driver, as Docker's: every line a box's main process writes is
//! one JSON record (`{"log":…,"stream":…,"time":…}`) in `boxes/<id>/log.json`,
//! rotated by size into `log.json.1` … `log.json.<max-file - 1>`; and the reader
//! behind `a3s-box logs`, which follows a growing file across rotations.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::store::write_json_atomic;
use super::RuntimeError;

/// The current log file in a box's directory; rotated ones append `.1`, `.2`, ….
pub const LOG_FILE: &str = "log.json";
/// How the box was asked to log; absent means the default json-file driver.
pub const LOG_CONFIG_FILE: &str = "log-config.json";
/// How often a follower looks for new records.
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("unknown log driver '{0}': the drivers are json-file and none")]
    UnknownDriver(String),
    #[error("unknown log opt '{0}' for json-file log driver")]
    UnknownOpt(String),
    #[error("invalid logging opts for driver none")]
    OptsForNone,
    #[error("invalid log opt '{0}': use key=value, such as max-size=10m")]
    BadOpt(String),
    #[error("invalid max-size '{0}': use a number with an optional unit k, m or g, such as 10m")]
    BadSize(String),
    #[error("max-size must be a positive number")]
    SizeNotPositive,
    #[error("invalid max-file '{0}': use a whole number, at least 1")]
    BadMaxFile(String),
    #[error("max-file cannot be used without max-size")]
    MaxFileWithoutSize,
    #[error("invalid time '{0}': use RFC 3339 (2006-01-02T15:04:05Z), a Unix timestamp or a duration such as 10m")]
    BadTime(String),
    #[error("configured logging driver does not support reading")]
    NotReadable,
    #[error("log configuration {path} is unreadable")]
    CorruptConfig {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Store(#[from] RuntimeError),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The consumer of the records failed (a closed pipe, a full disk).
    #[error("cannot write the logs out")]
    Output(#[source] io::Error),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LogError + 'a {
    move |source| LogError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogDriver {
    #[default]
    JsonFile,
    None,
}

/// A box's `--log-driver` and `--log-opt`s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    #[serde(default)]
    pub driver: LogDriver,
    /// Rotate once `log.json` would grow past this many bytes; `None`: never.
    #[serde(default)]
    pub max_size: Option<u64>,
    /// How many files to keep, `log.json` included.
    #[serde(default = "one")]
    pub max_file: u32,
}

fn one() -> u32 {
    1
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            driver: LogDriver::JsonFile,
            max_size: None,
            max_file: 1,
        }
    }
}

/// The log configuration of `--log-driver DRIVER` and its `--log-opt key=value`s,
/// checked as Docker checks them.
pub fn parse_log_opts(driver: &str, opts: &[String]) -> Result<LogConfig, LogError> {
    match driver {
        "json-file" | "" => {}
        "none" if opts.is_empty() => {
            return Ok(LogConfig {
                driver: LogDriver::None,
                ..LogConfig::default()
            })
        }
        "none" => return Err(LogError::OptsForNone),
        other => return Err(LogError::UnknownDriver(other.to_string())),
    }
    let mut cfg = LogConfig::default();
    let mut max_file = None;
    for opt in opts {
        let (key, value) = opt
            .split_once('=')
            .ok_or_else(|| LogError::BadOpt(opt.clone()))?;
        match key {
            "max-size" => {
                let size = parse_size(value).ok_or_else(|| LogError::BadSize(value.into()))?;
                if size == 0 {
                    return Err(LogError::SizeNotPositive);
                }
                cfg.max_size = Some(size);
            }
            "max-file" => {
                let n: u32 = value
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| LogError::BadMaxFile(value.into()))?;
                max_file = Some(n);
            }
            _ => return Err(LogError::UnknownOpt(key.to_string())),
        }
    }
    if let Some(n) = max_file {
        if cfg.max_size.is_none() {
            return Err(LogError::MaxFileWithoutSize);
        }
        cfg.max_file = n;
    }
    Ok(cfg)
}

/// Docker's human sizes (`units.FromHumanSize`): a decimal number, an optional
/// space, an optional unit k, m, g, t or p (powers of 1000), then optional `i`, `b`.
fn parse_size(s: &str) -> Option<u64> {
    let end = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(end);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return None;
    }
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let scale: u64 = match unit {
        "" => 1,
        "k" => 1_000,
        "m" => 1_000_000,
        "g" => 1_000_000_000,
        "t" => 1_000_000_000_000,
        "p" => 1_000_000_000_000_000,
        _ => return None,
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if frac.contains('.') {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let mut bytes = whole.checked_mul(scale)?;
    // The fraction is exact down to a byte: 1.5k is 1500.
    let mut place = scale;
    for d in frac.bytes() {
        place /= 10;
        bytes = bytes.checked_add(u64::from(d - b'0') * place)?;
    }
    Some(bytes)
}

/// Records how the box logs, for `a3s-box logs` to read later.
pub fn save_config(dir: &Path, cfg: &LogConfig) -> Result<(), LogError> {
    Ok(write_json_atomic(&dir.join(LOG_CONFIG_FILE), cfg)?)
}

/// How the box in `dir` logs; a box recorded without one uses the default.
pub fn load_config(dir: &Path) -> Result<LogConfig, LogError> {
    let path = dir.join(LOG_CONFIG_FILE);
    match std::fs::read(&path) {
        Ok(data) => {
            serde_json::from_slice(&data).map_err(|source| LogError::CorruptConfig { path, source })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(LogConfig::default()),
        Err(e) => Err(io_err("cannot read", &path)(e)),
    }
}

/// One line of the log as it is stored.
#[derive(Serialize)]
struct StoredLine<'a> {
    log: &'a str,
    stream: &'a str,
    time: &'a str,
}

#[derive(Deserialize)]
struct ReadLine {
    log: String,
    stream: String,
    time: String,
}

/// One record of a box's log: a line (with its `\n`) or the unfinished end of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `stdout` or `stderr`.
    pub stream: String,
    pub log: String,
    pub time: SystemTime,
}

impl Record {
    fn parse(line: &[u8]) -> Option<Record> {
        let l: ReadLine = serde_json::from_slice(line).ok()?;
        Some(Record {
            time: parse_rfc3339(&l.time)?,
            stream: l.stream,
            log: l.log,
        })
    }
}

/// Writes a box's output as json-file records, rotating by size.
pub struct LogWriter {
    dir: PathBuf,
    cfg: LogConfig,
    /// `None` with the `none` driver.
    file: Option<File>,
    size: u64,
    /// Per stream, the start of a UTF-8 character the last chunk cut in two.
    held: Vec<(String, Vec<u8>)>,
}

fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

fn rotated(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{LOG_FILE}.{n}"))
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// How many bytes at the end of `b` begin a UTF-8 character that is not complete.
fn incomplete_utf8_tail(b: &[u8]) -> usize {
    for p in (b.len().saturating_sub(3)..b.len()).rev() {
        if b[p] & 0xc0 != 0x80 {
            return match std::str::from_utf8(&b[p..]) {
                Err(e) if e.error_len().is_none() => b.len() - p,
                _ => 0,
            };
        }
    }
    0
}

impl LogWriter {
    /// Opens (appending to) `dir/log.json`, or nothing for the `none` driver.
    pub fn open(dir: &Path, cfg: &LogConfig) -> io::Result<LogWriter> {
        let (file, size) = match cfg.driver {
            LogDriver::None => (None, 0),
            LogDriver::JsonFile => {
                let f = open_log(&dir.join(LOG_FILE))?;
                let size = f.metadata()?.len();
                (Some(f), size)
            }
        };
        Ok(LogWriter {
            dir: dir.to_owned(),
            cfg: cfg.clone(),
            file,
            size,
            held: Vec::new(),
        })
    }

    /// Appends one chunk of `stream`'s output: one record per line, and one for a
    /// line the chunk leaves unfinished.
    pub fn write(&mut self, stream: &str, data: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            return Ok(());
        }
        let mut bytes = match self.held.iter().position(|(s, _)| s == stream) {
            Some(i) => self.held.swap_remove(i).1,
            None => Vec::new(),
        };
        bytes.extend_from_slice(data);
        // Keep a character cut at the chunk's end for the next chunk, so that its
        // bytes are not replaced by two U+FFFD halves.
        let keep = incomplete_utf8_tail(&bytes);
        let body_len = bytes.len() - keep;
        self.write_lines(stream, &bytes[..body_len])?;
        if keep > 0 {
            self.held
                .push((stream.to_string(), bytes[body_len..].to_vec()));
        }
        Ok(())
    }

    /// Writes out what `write` held back of a cut character.
    pub fn flush(&mut self) -> io::Result<()> {
        for (stream, bytes) in std::mem::take(&mut self.held) {
            self.write_lines(&stream, &bytes)?;
        }
        Ok(())
    }

    fn write_lines(&mut self, stream: &str, data: &[u8]) -> io::Result<()> {
        let time = rfc3339(SystemTime::now());
        let mut buf = Vec::new();
        for line in data.split_inclusive(|&b| b == b'\n') {
            let mut rec = serde_json::to_vec(&StoredLine {
                log: &String::from_utf8_lossy(line),
                stream,
                time: &time,
            })
            .expect("a log record always serialises");
            rec.push(b'\n');
            let at = self.size + buf.len() as u64;
            if self
                .cfg
                .max_size
                .is_some_and(|max| at > 0 && at + rec.len() as u64 > max)
            {
                self.append(&buf)?;
                buf.clear();
                self.rotate()?;
            }
            buf.extend_from_slice(&rec);
        }
        self.append(&buf)
    }

    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        if let Some(f) = self.file.as_mut() {
            f.write_all(buf)?;
            self.size += buf.len() as u64;
        }
        Ok(())
    }

    /// `log.json.N-1` → `log.json.N` … `log.json` → `log.json.1`, then a new
    /// `log.json`; with one file, the old one is simply dropped.
    fn rotate(&mut self) -> io::Result<()> {
        let current = self.dir.join(LOG_FILE);
        self.file = None;
        if self.cfg.max_file < 2 {
            ignore_missing(std::fs::remove_file(&current))?;
        } else {
            // Renaming onto the oldest name drops the file that had it.
            for n in (1..self.cfg.max_file - 1).rev() {
                ignore_missing(std::fs::rename(
                    rotated(&self.dir, n),
                    rotated(&self.dir, n + 1),
                ))?;
            }
            std::fs::rename(&current, rotated(&self.dir, 1))?;
        }
        self.file = Some(open_log(&current)?);
        self.size = 0;
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// What `read_logs` and `follow_logs` give out.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Only the last this many records (of those in the time window).
    pub tail: Option<usize>,
    /// Only records written at or after this time.
    pub since: Option<SystemTime>,
    /// Only records written at or before this time.
    pub until: Option<SystemTime>,
}

impl ReadOptions {
    fn admits(&self, r: &Record) -> bool {
        self.since.is_none_or(|s| r.time >= s) && self.until.is_none_or(|u| r.time <= u)
    }
}

type Ino = (u64, u64);

fn ino(m: &std::fs::Metadata) -> Ino {
    (m.dev(), m.ino())
}

/// One open log file and the unfinished line read from its end so far.
struct Source {
    reader: BufReader<File>,
    ino: Ino,
    path: PathBuf,
    pending: Vec<u8>,
}

impl Source {
    fn open(path: PathBuf) -> io::Result<Source> {
        let f = File::open(&path)?;
        let ino = ino(&f.metadata()?);
        Ok(Source {
            reader: BufReader::new(f),
            ino,
            path,
            pending: Vec::new(),
        })
    }

    /// Hands every complete line now in the file to `emit`; an unfinished last line
    /// waits for the rest (a writer half-way through it).
    fn drain(
        &mut self,
        emit: &mut dyn FnMut(Record) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        loop {
            let n = self
                .reader
                .read_until(b'\n', &mut self.pending)
                .map_err(io_err("cannot read", &self.path))?;
            if n == 0 {
                return Ok(());
            }
            if self.pending.last() == Some(&b'\n') {
                // A line that is no record (a writer that died half-way, then
                // appended after it) cannot be shown; the records around it can.
                if let Some(r) = Record::parse(&self.pending) {
                    emit(r)?;
                }
                self.pending.clear();
            }
        }
    }
}

/// The log files of `dir` at one moment, oldest first, and the current one (absent
/// before the first output). A rotation while they are opened starts over.
fn open_set(dir: &Path) -> Result<(Vec<Source>, Option<Source>), LogError> {
    'again: loop {
        let current = match Source::open(dir.join(LOG_FILE)) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("cannot open", &dir.join(LOG_FILE))(e)),
        };
        let mut numbers: Vec<u32> = std::fs::read_dir(dir)
            .map_err(io_err("cannot list", dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_prefix(LOG_FILE)?
                    .strip_prefix('.')?
                    .parse()
                    .ok()
            })
            .filter(|n| *n > 0)
            .collect();
        numbers.sort_unstable_by(|a, b| b.cmp(a));
        let mut older = Vec::with_capacity(numbers.len());
        for n in numbers {
            let path = rotated(dir, n);
            match Source::open(path.clone()) {
                // A writer rotating under us: the names no longer hold the files
                // they held when `current` was opened.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue 'again,
                Err(e) => return Err(io_err("cannot open", &path)(e)),
                Ok(s) if current.as_ref().is_some_and(|c| c.ino == s.ino) => continue 'again,
                Ok(s) => older.push(s),
            }
        }
        return Ok((older, current));
    }
}

fn check_readable(dir: &Path) -> Result<(), LogError> {
    match load_config(dir)?.driver {
        LogDriver::JsonFile => Ok(()),
        LogDriver::None => Err(LogError::NotReadable),
    }
}

/// Reads every file once, handing `out` the records `opts` selects; returns the
/// current file (positioned at its end) and the newest file read.
fn read_existing(
    dir: &Path,
    opts: &ReadOptions,
    out: &mut dyn FnMut(&Record) -> io::Result<()>,
) -> Result<(Option<Source>, Option<Ino>), LogError> {
    let (older, mut current) = open_set(dir)?;
    let mut last = None;
    let mut ring = VecDeque::new();
    let mut emit = |r: Record| -> Result<(), LogError> {
        if !opts.admits(&r) {
            return Ok(());
        }
        match opts.tail {
            None => out(&r).map_err(LogError::Output),
            Some(n) => {
                if ring.len() == n {
                    ring.pop_front();
                }
                if n > 0 {
                    ring.push_back(r);
                }
                Ok(())
            }
        }
    };
    for mut s in older {
        s.drain(&mut emit)?;
        last = Some(s.ino);
    }
    if let Some(c) = current.as_mut() {
        c.drain(&mut emit)?;
        last = Some(c.ino);
    }
    for r in &ring {
        out(r).map_err(LogError::Output)?;
    }
    Ok((current, last))
}

/// Hands `out` the records of the box log in `dir`, oldest first, as `opts` selects.
pub fn read_logs(
    dir: &Path,
    opts: &ReadOptions,
    out: &mut dyn FnMut(&Record) -> io::Result<()>,
) -> Result<(), LogError> {
    check_readable(dir)?;
    read_existing(dir, opts, out).map(drop)
}

/// As `read_logs`, then hands `out` each record appended after, across rotations,
/// until `still_running()` is false and nothing is left to read, or a record is
/// later than `opts.until`.
pub fn follow_logs(
    dir: &Path,
    opts: &ReadOptions,
    still_running: &dyn Fn() -> bool,
    out: &mut dyn FnMut(&Record) -> io::Result<()>,
) -> Result<(), LogError> {
    check_readable(dir)?;
    let (mut current, mut last) = read_existing(dir, opts, out)?;
    let past_until = std::cell::Cell::new(false);
    let mut emit = |r: Record| -> Result<(), LogError> {
        if opts.until.is_some_and(|u| r.time > u) {
            past_until.set(true);
        } else if opts.admits(&r) {
            out(&r).map_err(LogError::Output)?;
        }
        Ok(())
    };
    loop {
        // Asked before reading, so that all the box wrote before it ended is read.
        let running = still_running();
        loop {
            if let Some(c) = current.as_mut() {
                c.drain(&mut emit)?;
            }
            let on_disk = std::fs::metadata(dir.join(LOG_FILE)).ok().map(|m| ino(&m));
            match (on_disk, &current) {
                (None, _) => break,
                (Some(i), Some(c)) if i == c.ino => break,
                _ => {}
            }
            // A new log.json: the writer rotated. What it wrote to the old file
            // before renaming it comes first; then any file rotated past since.
            if let Some(c) = current.as_mut() {
                c.drain(&mut emit)?;
                last = Some(c.ino);
            }
            let (older, newest) = open_set(dir)?;
            let seen = older.iter().position(|s| Some(s.ino) == last);
            for mut s in older.into_iter().skip(seen.map_or(0, |i| i + 1)) {
                s.drain(&mut emit)?;
                last = Some(s.ino);
            }
            // Dropped only now: while it is open its inode number cannot be reused.
            current = newest;
        }
        let until_passed = opts.until.is_some_and(|u| SystemTime::now() > u);
        if past_until.get() || until_passed || !running {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

/// Splits a time into seconds since the epoch (rounded down) and nanoseconds.
fn to_unix(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let secs = -(d.as_secs() as i64);
            match d.subsec_nanos() {
                0 => (secs, 0),
                n => (secs - 1, 1_000_000_000 - n),
            }
        }
    }
}

fn from_unix(secs: i64, nanos: u32) -> Option<SystemTime> {
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))?
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))?
    };
    t.checked_add(Duration::from_nanos(u64::from(nanos)))
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `t` as RFC 3339 in UTC with nanoseconds (Docker's log and `--timestamps` format).
pub fn rfc3339(t: SystemTime) -> String {
    let (secs, nanos) = to_unix(t);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
    )
}

/// A run of ASCII digits as a number; `None` unless all of `s` is digits.
fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Up to nine fractional digits as nanoseconds; more are cut, as Go does.
fn fraction_nanos(frac: &str) -> Option<u32> {
    if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nine: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    nine.parse().ok()
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    if !s.is_ascii() || s.len() < 20 {
        return None;
    }
    let b = s.as_bytes();
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = digits(&s[0..4])?;
    let month = digits(&s[5..7])?;
    let day = digits(&s[8..10])?;
    let (hour, min, sec) = (
        digits(&s[11..13])?,
        digits(&s[14..16])?,
        digits(&s[17..19])?,
    );
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month)
        || day < 1
        || day > month_days[month as usize - 1]
        || hour > 23
        || min > 59
        || sec > 59
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos = 0;
    if let Some(r) = rest.strip_prefix('.') {
        let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
        nanos = fraction_nanos(&r[..end])?;
        rest = &r[end..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = (digits(&rest[1..3])?, digits(&rest[4..6])?);
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec - offset;
    from_unix(secs, nanos)
}

/// Go's `time.ParseDuration`: `[-+]` then one or more `<number><unit>`, units ns,
/// us (µs), ms, s, m, h. Returns whether it is negative, and its length.
pub fn parse_go_duration(s: &str) -> Option<(bool, Duration)> {
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some((negative, Duration::ZERO));
    }
    if rest.is_empty() {
        return None;
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(num_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
            return None;
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        nanos = nanos.checked_add(whole.checked_mul(scale)?)?;
        let mut place = scale;
        for d in frac.bytes() {
            place /= 10;
            nanos += u128::from(d - b'0') * place;
        }
        rest = after;
    }
    Some((negative, Duration::from_nanos(u64::try_from(nanos).ok()?)))
}

/// A `--since`/`--until` value as Docker reads it: a duration before `now` (`10m`,
/// `1h30m`), an RFC 3339 time, or a Unix timestamp with an optional fraction.
pub fn parse_time(s: &str, now: SystemTime) -> Result<SystemTime, LogError> {
    let bad = || LogError::BadTime(s.to_string());
    // "0" is the Unix epoch, not a zero duration (as in Docker).
    if s != "0" {
        if let Some((negative, d)) = parse_go_duration(s) {
            let t = if negative {
                now.checked_add(d)
            } else {
                now.checked_sub(d)
            };
            return t.ok_or_else(bad);
        }
    }
    if s.contains('-') || s.contains(':') {
        return parse_rfc3339(s).ok_or_else(bad);
    }
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs = digits(secs).ok_or_else(bad)?;
    let nanos = if frac.is_empty() && !s.ends_with('.') {
        0
    } else {
        fraction_nanos(frac)
            .filter(|_| frac.len() <= 9)
            .ok_or_else(bad)?
    };
    from_unix(secs, nanos).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use crate::testing::TempDir;

    fn sized(max_size: u64, max_file: u32) -> LogConfig {
        LogConfig {
            max_size: Some(max_size),
            max_file,
            ..LogConfig::default()
        }
    }

    fn read_all(dir: &Path, opts: &ReadOptions) -> Vec<Record> {
        let mut got = Vec::new();
        read_logs(dir, opts, &mut |r| {
            got.push(r.clone());
            Ok(())
        })
        .unwrap();
        got
    }

    fn texts(records: &[Record]) -> Vec<String> {
        records.iter().map(|r| r.log.clone()).collect()
    }

    fn log_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(LOG_FILE))
            .collect();
        names.sort();
        names
    }

    /// The size of one stored record of `log` (all records of a test share a length).
    fn record_len(log: &str) -> u64 {
        let t = rfc3339(SystemTime::now());
        serde_json::to_vec(&StoredLine {
            log,
            stream: "stdout",
            time: &t,
        })
        .unwrap()
        .len() as u64
            + 1
    }

    #[test]
    fn lines_are_written_as_docker_json_file_records_and_read_back() {
        let d = TempDir::new("roundtrip");
        let mut w = LogWriter::open(&d.0, &LogConfig::default()).unwrap();
        w.write("stdout", b"one\ntwo\npart").unwrap();
        w.write("stderr", b"oops\n").unwrap();
        drop(w);
        let text = std::fs::read_to_string(d.0.join(LOG_FILE)).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["log"], "one\n");
        assert_eq!(first["stream"], "stdout");
        assert!(first["time"].as_str().unwrap().ends_with('Z'));
        assert!(text.starts_with(r#"{"log":"one\n","stream":"stdout","time":""#));
        let got = read_all(&d.0, &ReadOptions::default());
        assert_eq!(texts(&got), ["one\n", "two\n", "part", "oops\n"]);
        assert_eq!(got[3].stream, "stderr");
    }

    #[test]
    fn a_character_cut_between_chunks_is_kept_whole() {
        let d = TempDir::new("utf8");
        let mut w = LogWriter::open(&d.0, &LogConfig::default()).unwrap();
        let s = "é\n".as_bytes();
        w.write("stdout", &s[..1]).unwrap();
        w.write("stdout", &s[1..]).unwrap();
        w.write("stderr", &[0xe2, 0x82]).unwrap();
        drop(w);
        let got = read_all(&d.0, &ReadOptions::default());
        assert_eq!(got[0].log, "é\n");
        // An unfinished character left at the end is written when the writer ends.
        assert_eq!(got[1].log, "\u{fffd}");
    }

    #[test]
    fn none_driver_writes_nothing_and_cannot_be_read() {
        let d = TempDir::new("none");
        let cfg = parse_log_opts("none", &[]).unwrap();
        save_config(&d.0, &cfg).unwrap();
        let mut w = LogWriter::open(&d.0, &cfg).unwrap();
        w.write("stdout", b"hello\n").unwrap();
        drop(w);
        assert!(log_files(&d.0).is_empty());
        let err = read_logs(&d.0, &ReadOptions::default(), &mut |_| Ok(())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "configured logging driver does not support reading"
        );
    }

    #[test]
    fn config_round_trips_and_defaults_when_absent() {
        let d = TempDir::new("config");
        assert_eq!(load_config(&d.0).unwrap(), LogConfig::default());
        let cfg = sized(10_000_000, 3);
        save_config(&d.0, &cfg).unwrap();
        assert_eq!(load_config(&d.0).unwrap(), cfg);
        let text = std::fs::read_to_string(d.0.join(LOG_CONFIG_FILE)).unwrap();
        assert!(text.contains(r#""driver": "json-file""#), "{text}");
    }

    #[test]
    fn rotation_keeps_at_most_max_file_files() {
        let d = TempDir::new("rotate");
        let len = record_len("line 0\n");
        // Two records fit in a file; a third starts a new one.
        let mut w = LogWriter::open(&d.0, &sized(2 * len, 3)).unwrap();
        for i in 0..9 {
            w.write("stdout", format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(w);
        assert_eq!(log_files(&d.0), ["log.json", "log.json.1", "log.json.2"]);
        for name in log_files(&d.0) {
            assert!(std::fs::metadata(d.0.join(name)).unwrap().len() <= 2 * len);
        }
        let got = read_all(&d.0, &ReadOptions::default());
        assert_eq!(
            texts(&got),
            ["line 4\n", "line 5\n", "line 6\n", "line 7\n", "line 8\n"]
        );
    }

    #[test]
    fn one_file_rotation_starts_the_log_afresh() {
        let d = TempDir::new("rotate1");
        let len = record_len("line 0\n");
        let mut w = LogWriter::open(&d.0, &sized(2 * len, 1)).unwrap();
        for i in 0..5 {
            w.write("stdout", format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(w);
        assert_eq!(log_files(&d.0), ["log.json"]);
        assert_eq!(
            texts(&read_all(&d.0, &ReadOptions::default())),
            ["line 4\n"]
        );
    }

    #[test]
    fn a_reopened_writer_counts_what_the_file_already_holds() {
        let d = TempDir::new("reopen");
        let len = record_len("line 0\n");
        let cfg = sized(2 * len, 2);
        LogWriter::open(&d.0, &cfg)
            .unwrap()
            .write("stdout", b"line 0\nline 1\n")
            .unwrap();
        LogWriter::open(&d.0, &cfg)
            .unwrap()
            .write("stdout", b"line 2\n")
            .unwrap();
        assert_eq!(log_files(&d.0), ["log.json", "log.json.1"]);
    }

    #[test]
    fn tail_counts_records_across_rotated_files() {
        let d = TempDir::new("tail");
        let len = record_len("line 0\n");
        let mut w = LogWriter::open(&d.0, &sized(2 * len, 5)).unwrap();
        for i in 0..7 {
            w.write("stdout", format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(w);
        let tail = |n| {
            texts(&read_all(
                &d.0,
                &ReadOptions {
                    tail: Some(n),
                    ..ReadOptions::default()
                },
            ))
        };
        assert_eq!(tail(3), ["line 4\n", "line 5\n", "line 6\n"]);
        assert_eq!(tail(0), Vec::<String>::new());
        assert_eq!(tail(100).len(), 7);
    }

    fn write_records(dir: &Path, name: &str, records: &[(&str, &str)]) {
        let mut f = std::fs::File::create(dir.join(name)).unwrap();
        for (log, time) in records {
            let line = serde_json::to_string(&StoredLine {
                log,
                stream: "stdout",
                time,
            })
            .unwrap();
            writeln!(f, "{line}").unwrap();
        }
    }

    #[test]
    fn since_and_until_bound_the_records_inclusively() {
        let d = TempDir::new("window");
        write_records(
            &d.0,
            LOG_FILE,
            &[
                ("a\n", "2024-01-01T00:00:00.000000000Z"),
                ("b\n", "2024-01-01T00:01:00.000000000Z"),
                ("c\n", "2024-01-01T00:02:00.000000000Z"),
                ("d\n", "2024-01-01T00:03:00.000000000Z"),
            ],
        );
        let now = SystemTime::now();
        let at = |s: &str| Some(parse_time(s, now).unwrap());
        let got = read_all(
            &d.0,
            &ReadOptions {
                since: at("2024-01-01T00:01:00Z"),
                until: at("2024-01-01T00:02:00Z"),
                tail: None,
            },
        );
        assert_eq!(texts(&got), ["b\n", "c\n"]);
        // The tail is taken of the records in the window.
        let got = read_all(
            &d.0,
            &ReadOptions {
                until: at("2024-01-01T00:02:00Z"),
                tail: Some(1),
                since: None,
            },
        );
        assert_eq!(texts(&got), ["c\n"]);
    }

    #[test]
    fn a_torn_last_line_and_a_garbled_one_are_not_shown() {
        let d = TempDir::new("torn");
        write_records(&d.0, LOG_FILE, &[("a\n", "2024-01-01T00:00:00Z")]);
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.0.join(LOG_FILE))
            .unwrap();
        f.write_all(b"{\"log\":\"garbled\n").unwrap();
        f.write_all(
            b"{\"log\":\"b\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-01T00:00:01Z\"}\n",
        )
        .unwrap();
        f.write_all(b"{\"log\":\"half").unwrap();
        assert_eq!(
            texts(&read_all(&d.0, &ReadOptions::default())),
            ["a\n", "b\n"]
        );
    }

    #[test]
    fn a_box_without_output_has_an_empty_log() {
        let d = TempDir::new("empty");
        assert!(read_all(&d.0, &ReadOptions::default()).is_empty());
    }

    #[test]
    fn follow_picks_up_appended_lines_a_torn_line_and_a_rotation() {
        let d = TempDir::new("follow");
        let len = record_len("line 00\n");
        let cfg = sized(2 * len, 3);
        let mut w = LogWriter::open(&d.0, &cfg).unwrap();
        w.write("stdout", b"line 00\n").unwrap();
        let running = Arc::new(AtomicBool::new(true));
        let dir = d.0.clone();
        let r = running.clone();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            follow_logs(
                &dir,
                &ReadOptions::default(),
                &|| r.load(Ordering::SeqCst),
                &mut |rec| {
                    got.push(rec.log.clone());
                    Ok(())
                },
            )
            .unwrap();
            got
        });
        std::thread::sleep(Duration::from_millis(150));
        // Half a record, as a writer half-way through one leaves it.
        let mut raw = OpenOptions::new()
            .append(true)
            .open(d.0.join(LOG_FILE))
            .unwrap();
        let line = serde_json::to_vec(&StoredLine {
            log: "line 01\n",
            stream: "stdout",
            time: &rfc3339(SystemTime::now()),
        })
        .unwrap();
        raw.write_all(&line[..10]).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        raw.write_all(&line[10..]).unwrap();
        raw.write_all(b"\n").unwrap();
        drop(raw);
        w.size += len;
        std::thread::sleep(Duration::from_millis(150));
        // Five more records: rotations to log.json.1 and log.json.2, some of them
        // faster than the reader polls.
        for i in 2..7 {
            w.write("stdout", format!("line {i:02}\n").as_bytes())
                .unwrap();
            if i == 3 {
                std::thread::sleep(Duration::from_millis(150));
            }
        }
        std::thread::sleep(Duration::from_millis(150));
        running.store(false, Ordering::SeqCst);
        let got = reader.join().unwrap();
        let want: Vec<String> = (0..7).map(|i| format!("line {i:02}\n")).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn follow_keeps_every_record_through_rapid_rotations() {
        let d = TempDir::new("follow-race");
        let len = record_len("line 000\n");
        // 20 records a file and room for all of them: nothing is dropped, so the
        // follower must see every record once, in order, however rotations fall.
        let cfg = sized(20 * len, 60);
        let running = Arc::new(AtomicBool::new(true));
        let (dir, r) = (d.0.clone(), running.clone());
        let writer = std::thread::spawn(move || {
            let mut w = LogWriter::open(&dir, &cfg).unwrap();
            for i in 0..900 {
                w.write("stdout", format!("line {i:03}\n").as_bytes())
                    .unwrap();
                // About a rotation every 4 ms: several between two polls.
                std::thread::sleep(Duration::from_micros(200));
            }
            r.store(false, Ordering::SeqCst);
        });
        let mut got = Vec::new();
        follow_logs(
            &d.0,
            &ReadOptions::default(),
            &|| running.load(Ordering::SeqCst),
            &mut |rec| {
                got.push(rec.log.clone());
                Ok(())
            },
        )
        .unwrap();
        writer.join().unwrap();
        let want: Vec<String> = (0..900).map(|i| format!("line {i:03}\n")).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn follow_reads_what_was_written_before_the_box_ended_then_returns() {
        let d = TempDir::new("follow-end");
        let calls = Cell::new(0);
        let mut got = Vec::new();
        let dir = d.0.clone();
        follow_logs(
            &d.0,
            &ReadOptions::default(),
            &|| {
                calls.set(calls.get() + 1);
                // The box writes its last line, then ends, between two polls.
                if calls.get() == 2 {
                    let mut w = LogWriter::open(&dir, &LogConfig::default()).unwrap();
                    w.write("stdout", b"last\n").unwrap();
                }
                calls.get() < 2
            },
            &mut |r| {
                got.push(r.log.clone());
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(got, ["last\n"]);
    }

    #[test]
    fn follow_stops_at_until() {
        let d = TempDir::new("follow-until");
        write_records(
            &d.0,
            LOG_FILE,
            &[
                ("a\n", "2024-01-01T00:00:00Z"),
                ("b\n", "2024-01-01T00:05:00Z"),
            ],
        );
        let mut got = Vec::new();
        let until = parse_time("2024-01-01T00:01:00Z", SystemTime::now()).unwrap();
        follow_logs(
            &d.0,
            &ReadOptions {
                until: Some(until),
                ..ReadOptions::default()
            },
            &|| true,
            &mut |r| {
                got.push(r.log.clone());
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(got, ["a\n"]);
    }

    #[test]
    fn log_opts_parse_as_docker_reads_them() {
        let opts = |o: &[&str]| o.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_log_opts("json-file", &[]).unwrap(),
            LogConfig::default()
        );
        assert_eq!(
            parse_log_opts("json-file", &opts(&["max-size=10m", "max-file=3"])).unwrap(),
            sized(10_000_000, 3)
        );
        let size = |s: &str| {
            parse_log_opts("json-file", &opts(&[&format!("max-size={s}")]))
                .unwrap()
                .max_size
                .unwrap()
        };
        assert_eq!(size("512"), 512);
        assert_eq!(size("1k"), 1_000);
        assert_eq!(size("1.5k"), 1_500);
        assert_eq!(size("2MB"), 2_000_000);
        assert_eq!(size("1g"), 1_000_000_000);
        assert_eq!(size("3 kib"), 3_000);
        assert_eq!(parse_log_opts("none", &[]).unwrap().driver, LogDriver::None);
    }

    #[test]
    fn bad_log_opts_are_refused_with_docker_s_messages() {
        let err = |driver: &str, o: &[&str]| {
            let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
            parse_log_opts(driver, &o).unwrap_err().to_string()
        };
        assert_eq!(
            err("json-file", &["max-file=3"]),
            "max-file cannot be used without max-size"
        );
        assert_eq!(
            err("json-file", &["compress=true"]),
            "unknown log opt 'compress' for json-file log driver"
        );
        assert_eq!(
            err("syslog", &[]),
            "unknown log driver 'syslog': the drivers are json-file and none"
        );
        assert_eq!(
            err("none", &["max-size=1m"]),
            "invalid logging opts for driver none"
        );
        assert_eq!(
            err("json-file", &["max-size=0"]),
            "max-size must be a positive number"
        );
        assert!(err("json-file", &["max-size=10x"]).starts_with("invalid max-size '10x'"));
        assert!(err("json-file", &["max-size=.5m"]).starts_with("invalid max-size"));
        assert!(err("json-file", &["max-size=1m", "max-file=0"]).starts_with("invalid max-file"));
        assert!(err("json-file", &["max-size"]).starts_with("invalid log opt 'max-size'"));
    }

    #[test]
    fn rfc3339_formats_utc_with_nanoseconds() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 42);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.000000042Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let before = UNIX_EPOCH - Duration::from_millis(1);
        assert_eq!(rfc3339(before), "1969-12-31T23:59:59.999000000Z");
        let now = SystemTime::now();
        assert_eq!(parse_time(&rfc3339(now), now).unwrap(), now);
    }

    #[test]
    fn times_parse_as_rfc3339_unix_timestamps_and_durations() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let p = |s: &str| parse_time(s, now).unwrap();
        let at = |secs: u64, nanos: u32| UNIX_EPOCH + Duration::new(secs, nanos);
        assert_eq!(p("2023-11-14T22:13:20Z"), at(1_700_000_000, 0));
        assert_eq!(p("2023-11-14T22:13:20.5Z"), at(1_700_000_000, 500_000_000));
        assert_eq!(p("2023-11-14T23:13:20+01:00"), at(1_700_000_000, 0));
        assert_eq!(
            p("2023-11-14T21:13:20.000000001-01:00"),
            at(1_700_000_000, 1)
        );
        assert_eq!(p("1700000000"), at(1_700_000_000, 0));
        assert_eq!(p("1700000000.25"), at(1_700_000_000, 250_000_000));
        assert_eq!(p("0"), UNIX_EPOCH);
        assert_eq!(p("42s"), at(1_700_000_000 - 42, 0));
        assert_eq!(p("10m"), at(1_700_000_000 - 600, 0));
        assert_eq!(p("1h30m"), at(1_700_000_000 - 5400, 0));
        assert_eq!(p("1.5h"), at(1_700_000_000 - 5400, 0));
        assert_eq!(p("500ms"), at(1_699_999_999, 500_000_000));
        assert_eq!(p("-1m"), at(1_700_000_060, 0));
    }

    #[test]
    fn malformed_times_are_refused() {
        let now = SystemTime::now();
        for bad in [
            "",
            "yesterday",
            "10x",
            "2023-13-01T00:00:00Z",
            "2023-02-30T00:00:00Z",
            "2023-11-14T22:13:20",
            "2023-11-14 22:13:20Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20+0100",
            "17000.",
            "1.2.3",
            "1h-5m",
        ] {
            let e = parse_time(bad, now).unwrap_err();
            assert!(e.to_string().starts_with("invalid time"), "{bad}: {e}");
        }
    }
}
