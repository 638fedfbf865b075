//! `a3s-box stats`, `top`, `pause` and `unpause`, as Docker's. The numbers
//! come from inside the box: guest init reads the box's cgroup and `/proc`
//! and freezes the cgroup, asked over the guest's control port (the
//! `Stats`, `Top`, `Pause` and `Unpause` messages).

use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use argh::FromArgs;
use serde_json::{json, Value};

use super::template::parse_format_or;
use crate::proto::{
    expect_hello, hello_then, read_message, BoxStats, Message, ProcessInfo, PORT_CONTROL,
};
use crate::runtime::shim::connect_guest_sending;
use crate::runtime::store::shim_alive;
use crate::runtime::{BoxState, Status, Store};

/// How long the guest may take to answer one request (a freeze waits for
/// every process of the box).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Time between two samples, and between refreshes of a stream.
const INTERVAL: Duration = Duration::from_secs(1);

/// Display a live stream of boxes' resource usage.
#[derive(FromArgs)]
#[argh(subcommand, name = "stats")]
pub struct StatsArgs {
    /// show all boxes (default shows just running)
    #[argh(switch, short = 'a')]
    all: bool,
    /// disable streaming stats and only pull the first result
    #[argh(switch)]
    no_stream: bool,
    /// do not truncate output
    #[argh(switch)]
    no_trunc: bool,
    /// format output: 'table', 'table TEMPLATE', 'json', or a Go template
    #[argh(option)]
    format: Option<String>,
    /// boxes (names or IDs); default: every running box
    #[argh(positional)]
    boxes: Vec<String>,
}

/// Display the running processes of a box.
#[derive(FromArgs)]
#[argh(subcommand, name = "top")]
pub struct TopArgs {
    /// the box, then ps options: -ef (the default), aux, -o FIELD,…
    #[argh(positional, greedy)]
    args: Vec<String>,
}

/// Pause all processes within one or more boxes.
#[derive(FromArgs)]
#[argh(subcommand, name = "pause")]
pub struct PauseArgs {
    /// boxes (names or IDs)
    #[argh(positional)]
    boxes: Vec<String>,
}

/// Unpause all processes within one or more boxes.
#[derive(FromArgs)]
#[argh(subcommand, name = "unpause")]
pub struct UnpauseArgs {
    /// boxes (names or IDs)
    #[argh(positional)]
    boxes: Vec<String>,
}

fn open() -> anyhow::Result<Store> {
    Ok(Store::open(&crate::paths::state_dir())?)
}

/// Whether a box's VM is up with its main process started.
fn is_up(st: &BoxState) -> bool {
    matches!(st.status, Status::Running | Status::Paused) && shim_alive(st)
}

/// Sends `request` to the guest of box `id` on its control port and returns
/// the answer; a guest `Error` becomes this call's error.
fn ask_guest(store: &Store, id: &str, request: &Message) -> anyhow::Result<Message> {
    let first = hello_then(request)?;
    let mut conn = connect_guest_sending(&store.socket_dir(id), PORT_CONTROL, &first)
        .context("cannot reach the box's guest")?;
    conn.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    let (_, minor) = expect_hello(&mut conn)?;
    match read_message(&mut conn)? {
        Some(Message::Error { message }) if minor < 1 => bail!(
            "the box's guest is from an older a3s-box that cannot do this ({message}); restart \
             the box"
        ),
        Some(Message::Error { message }) => bail!("{message}"),
        Some(m) => Ok(m),
        None => bail!("the box's guest closed the connection without an answer"),
    }
}

// ---- stats -------------------------------------------------------------------

const STATS_ROW: &str =
    "{{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";
const STATS_HEADERS: &[(&str, &str)] = &[
    ("Container", "CONTAINER"),
    ("ID", "CONTAINER ID"),
    ("Name", "NAME"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("NetIO", "NET I/O"),
    ("BlockIO", "BLOCK I/O"),
    ("PIDs", "PIDS"),
];

/// A box to show: how the user named it, and its record.
struct Shown {
    given: String,
    id: String,
    name: String,
    /// `--memory`, in bytes.
    memory: u64,
}

/// One box's row, before formatting.
#[derive(Debug, Clone, PartialEq)]
enum Row {
    /// The box does not run: zeros, as Docker shows a stopped container.
    Down,
    /// It runs but did not answer.
    Unknown,
    /// Its use; `cpu` in percent of one CPU, `None` until two samples exist.
    Up { cpu: Option<f64>, stats: BoxStats },
}

/// Docker's CPU %: CPU time over elapsed time (the guest's clock), in
/// percent of one CPU.
fn cpu_percent(before: &BoxStats, after: &BoxStats) -> Option<f64> {
    let elapsed = after.time_usec.checked_sub(before.time_usec)?;
    if elapsed == 0 {
        return None;
    }
    let used = after.cpu_usec.saturating_sub(before.cpu_usec);
    Some(used as f64 / elapsed as f64 * 100.0)
}

/// Go's `%.<prec>g`: at most `prec` significant digits, trailing zeros
/// dropped, exponent form for very small or large values.
fn go_g(x: f64, prec: usize) -> String {
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if x == 0.0 {
        return "0".into();
    }
    let prec = prec.max(1);
    let sci = format!("{:.*e}", prec - 1, x);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let p = i32::try_from(prec).unwrap_or(i32::MAX);
    if exp < -4 || exp >= p {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.unsigned_abs())
    } else {
        let decimals = usize::try_from(p - 1 - exp).unwrap_or(0);
        trim(&format!("{x:.decimals$}"))
    }
}

fn scaled(bytes: u64, base: f64, units: &[&str], prec: usize) -> String {
    let mut size = bytes as f64;
    let mut i = 0;
    while size >= base && i < units.len() - 1 {
        size /= base;
        i += 1;
    }
    format!("{}{}", go_g(size, prec), units[i])
}

/// Docker's `units.BytesSize`: `7.188MiB`.
fn binary_size(bytes: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    scaled(bytes, 1024.0, UNITS, 4)
}

/// Docker's `units.HumanSizeWithPrecision(…, 3)`: `1.05kB`.
fn decimal_size(bytes: u64) -> String {
    const UNITS: &[&str] = &["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    scaled(bytes, 1000.0, UNITS, 3)
}

fn pair(a: Option<u64>, b: Option<u64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{} / {}", decimal_size(a), decimal_size(b)),
        _ => "--".into(),
    }
}

/// The row as Docker's stats formatter gives it to templates.
fn stats_item(box_: &Shown, row: &Row, trunc: bool) -> Value {
    let id = if trunc {
        &box_.id[..12.min(box_.id.len())]
    } else {
        box_.id.as_str()
    };
    let pct = |v: f64| format!("{v:.2}%");
    let (cpu, mem, mem_pct, net, block, pids) = match row {
        Row::Down => (
            pct(0.0),
            "0B / 0B".to_string(),
            pct(0.0),
            "0B / 0B".to_string(),
            "0B / 0B".to_string(),
            "0".to_string(),
        ),
        Row::Unknown => (
            "--".into(),
            "-- / --".into(),
            "--".into(),
            "--".into(),
            "--".into(),
            "--".into(),
        ),
        Row::Up { cpu, stats } => {
            // As Docker's CLI: page cache that could be dropped is not use.
            let used = if stats.inactive_file < stats.memory {
                stats.memory - stats.inactive_file
            } else {
                stats.memory
            };
            // The box's memory is its VM's: `--memory` is the limit.
            let limit = if box_.memory > 0 {
                box_.memory
            } else {
                stats.memory_total
            };
            let mem_pct = if limit > 0 {
                used as f64 / limit as f64 * 100.0
            } else {
                0.0
            };
            (
                cpu.map_or_else(|| "--".into(), pct),
                format!("{} / {}", binary_size(used), binary_size(limit)),
                pct(mem_pct),
                pair(stats.net_rx, stats.net_tx),
                pair(stats.block_read, stats.block_write),
                stats.pids.to_string(),
            )
        }
    };
    json!({
        "BlockIO": block,
        "CPUPerc": cpu,
        "Container": box_.given,
        "ID": id,
        "MemPerc": mem_pct,
        "MemUsage": mem,
        "Name": box_.name,
        "NetIO": net,
        "PIDs": pids,
    })
}

/// The boxes to show: those named, or every running one (every one, `all`).
fn boxes_to_show(store: &Store, named: &[String], all: bool) -> anyhow::Result<Vec<Shown>> {
    let mut out = Vec::new();
    let shown = |given: &str, id: &str| -> anyhow::Result<Shown> {
        let cfg = store.config(id)?;
        Ok(Shown {
            given: given.to_string(),
            id: id.to_string(),
            name: cfg.name,
            memory: cfg.memory,
        })
    };
    if named.is_empty() {
        let mut boxes = Vec::new();
        for id in store.ids()? {
            let (Ok(cfg), Ok(st)) = (store.config(&id), store.live_state(&id)) else {
                continue;
            };
            if all || is_up(&st) {
                boxes.push((cfg.created, id));
            }
        }
        // Newest first, as `ps` lists them.
        boxes.sort_by(|a, b| b.cmp(a));
        for (_, id) in boxes {
            if let Ok(s) = shown(&id[..12], &id) {
                out.push(s);
            }
        }
    } else {
        for b in named {
            let id = store.resolve(b)?;
            out.push(shown(b, &id)?);
        }
    }
    Ok(out)
}

/// One sample of every box in `boxes`, taken side by side: `None` for a box
/// that does not run, the error for one that did not answer.
fn sample(store: &Store, boxes: &[Shown]) -> Vec<Option<anyhow::Result<BoxStats>>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = boxes
            .iter()
            .map(|b| {
                scope.spawn(move || {
                    let st = store.live_state(&b.id).ok()?;
                    if !is_up(&st) {
                        return None;
                    }
                    Some(
                        ask_guest(store, &b.id, &Message::Stats).and_then(|m| match m {
                            Message::StatsReply(s) => Ok(s),
                            other => bail!("the guest answered {} to Stats", other.name()),
                        }),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(None))
            .collect()
    })
}

fn rows(
    before: &[Option<anyhow::Result<BoxStats>>],
    after: &[Option<anyhow::Result<BoxStats>>],
) -> Vec<Row> {
    after
        .iter()
        .enumerate()
        .map(|(i, now)| match now {
            None => Row::Down,
            Some(Err(_)) => Row::Unknown,
            Some(Ok(stats)) => {
                let cpu = match before.get(i) {
                    Some(Some(Ok(prev))) => cpu_percent(prev, stats),
                    _ => None,
                };
                Row::Up { cpu, stats: *stats }
            }
        })
        .collect()
}

pub fn stats(a: StatsArgs) -> anyhow::Result<i32> {
    let format = parse_format_or(a.format.as_deref().unwrap_or(""), STATS_ROW)?;
    let store = open()?;
    let trunc = !a.no_trunc;
    let render = |boxes: &[Shown], rows: &[Row]| -> anyhow::Result<String> {
        let items: Vec<Value> = boxes
            .iter()
            .zip(rows)
            .map(|(b, r)| stats_item(b, r, trunc))
            .collect();
        Ok(format.render(&items, STATS_HEADERS)?)
    };
    if a.no_stream {
        let boxes = boxes_to_show(&store, &a.boxes, a.all)?;
        let first = sample(&store, &boxes);
        std::thread::sleep(INTERVAL);
        let second = sample(&store, &boxes);
        for (b, s) in boxes.iter().zip(&second) {
            if let Some(Err(e)) = s {
                eprintln!("a3s-box: {}: {e:#}", b.given);
            }
        }
        print!("{}", render(&boxes, &rows(&first, &second))?);
        return Ok(0);
    }
    // A stream: refreshed every interval until interrupted; on a terminal
    // each refresh replaces the last, as Docker's does.
    let clear = std::io::stdout().is_terminal();
    let mut boxes = boxes_to_show(&store, &a.boxes, a.all)?;
    let mut prev = sample(&store, &boxes);
    loop {
        std::thread::sleep(INTERVAL);
        let now = sample(&store, &boxes);
        let out = render(&boxes, &rows(&prev, &now))?;
        let mut stdout = std::io::stdout().lock();
        if clear {
            write!(stdout, "\x1b[2J\x1b[H")?;
        }
        write!(stdout, "{out}")?;
        stdout.flush()?;
        drop(stdout);
        prev = now;
        if a.boxes.is_empty() {
            // Boxes come and go; keep the samples of those that stay.
            let next = boxes_to_show(&store, &[], a.all)?;
            let mut kept = Vec::new();
            for b in &next {
                let i = boxes.iter().position(|o| o.id == b.id);
                kept.push(i.and_then(|i| prev.get_mut(i).and_then(Option::take)));
            }
            boxes = next;
            prev = kept;
        }
    }
}

// ---- top ---------------------------------------------------------------------

/// A column `top` can show, as `ps` names and prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// User name (numeric when the box has no name for it).
    User,
    /// Numeric user id.
    Uid,
    Pid,
    Ppid,
    /// Integer CPU use over the process's life, in percent.
    C,
    /// Start time, `HH:MM` today, else `MonDD`, else the year.
    Start,
    Tty,
    /// CPU time as `[DD-]HH:MM:SS`.
    Time,
    /// CPU time as `M:SS` (BSD style).
    BsdTime,
    /// Command line (`[comm]` without one).
    Args,
    Comm,
    Pcpu,
    Pmem,
    Vsz,
    Rss,
    Stat,
    Etime,
}

/// `ps -o` names, with `ps`'s headers.
const FIELDS: &[(&str, Field, &str)] = &[
    ("pid", Field::Pid, "PID"),
    ("ppid", Field::Ppid, "PPID"),
    ("user", Field::User, "USER"),
    ("uid", Field::Uid, "UID"),
    ("comm", Field::Comm, "COMMAND"),
    ("args", Field::Args, "COMMAND"),
    ("command", Field::Args, "COMMAND"),
    ("cmd", Field::Args, "CMD"),
    ("time", Field::Time, "TIME"),
    ("cputime", Field::Time, "TIME"),
    ("etime", Field::Etime, "ELAPSED"),
    ("stat", Field::Stat, "STAT"),
    ("tty", Field::Tty, "TT"),
    ("rss", Field::Rss, "RSS"),
    ("vsz", Field::Vsz, "VSZ"),
    ("%cpu", Field::Pcpu, "%CPU"),
    ("pcpu", Field::Pcpu, "%CPU"),
    ("%mem", Field::Pmem, "%MEM"),
    ("pmem", Field::Pmem, "%MEM"),
    ("stime", Field::Start, "STIME"),
    ("start", Field::Start, "START"),
    ("c", Field::C, "C"),
];

const PS_EF: &[(Field, &str)] = &[
    (Field::User, "UID"),
    (Field::Pid, "PID"),
    (Field::Ppid, "PPID"),
    (Field::C, "C"),
    (Field::Start, "STIME"),
    (Field::Tty, "TTY"),
    (Field::Time, "TIME"),
    (Field::Args, "CMD"),
];

const PS_E: &[(Field, &str)] = &[
    (Field::Pid, "PID"),
    (Field::Tty, "TTY"),
    (Field::Time, "TIME"),
    (Field::Comm, "CMD"),
];

const PS_AUX: &[(Field, &str)] = &[
    (Field::User, "USER"),
    (Field::Pid, "PID"),
    (Field::Pcpu, "%CPU"),
    (Field::Pmem, "%MEM"),
    (Field::Vsz, "VSZ"),
    (Field::Rss, "RSS"),
    (Field::Tty, "TTY"),
    (Field::Stat, "STAT"),
    (Field::Start, "START"),
    (Field::BsdTime, "TIME"),
    (Field::Args, "COMMAND"),
];

fn unsupported(what: &str) -> anyhow::Error {
    let names: Vec<&str> = FIELDS.iter().map(|f| f.0).collect();
    anyhow::anyhow!(
        "unsupported ps option {what:?}: top accepts -e, -A, -f, -ef (the default), aux (a, u, \
         x) and -o / o / --format FIELD[=HEADER],… with fields {}",
        names.join(", ")
    )
}

/// Reads `ps` options into columns and their headers.
fn parse_ps(opts: &[String]) -> anyhow::Result<Vec<(Field, String)>> {
    let owned = |cols: &[(Field, &str)]| cols.iter().map(|(f, h)| (*f, h.to_string())).collect();
    if opts.is_empty() {
        return Ok(owned(PS_EF));
    }
    let mut chosen: Vec<(Field, String)> = Vec::new();
    let (mut full, mut bsd_user) = (false, false);
    let mut add_list = |list: &str| -> anyhow::Result<()> {
        for item in list.split([',', ' ']).filter(|s| !s.is_empty()) {
            let (name, header) = match item.split_once('=') {
                Some((n, h)) => (n, Some(h)),
                None => (item, None),
            };
            let (_, field, default) = FIELDS
                .iter()
                .find(|f| f.0 == name)
                .ok_or_else(|| unsupported(item))?;
            chosen.push((*field, header.unwrap_or(default).to_string()));
        }
        Ok(())
    };
    let mut i = 0;
    while i < opts.len() {
        let o = opts[i].as_str();
        if matches!(o, "-o" | "o" | "--format") {
            let list = opts.get(i + 1).ok_or_else(|| unsupported(o))?;
            add_list(list)?;
            i += 2;
            continue;
        }
        if let Some(list) = o.strip_prefix("--format=") {
            add_list(list)?;
        } else if let Some(rest) = o.strip_prefix('-') {
            match rest.strip_prefix('o') {
                Some(list) if !list.is_empty() => add_list(list)?,
                _ => {
                    for c in rest.chars() {
                        match c {
                            'e' | 'A' => {}
                            'f' => full = true,
                            _ => return Err(unsupported(o)),
                        }
                    }
                }
            }
        } else {
            for c in o.chars() {
                match c {
                    'a' | 'x' => {}
                    'u' => bsd_user = true,
                    _ => return Err(unsupported(o)),
                }
            }
        }
        i += 1;
    }
    Ok(if !chosen.is_empty() {
        chosen
    } else if bsd_user {
        owned(PS_AUX)
    } else if full {
        owned(PS_EF)
    } else {
        owned(PS_E)
    })
}

/// A terminal's name from its device number, as `ps` prints it.
fn tty_name(dev: u32) -> String {
    let major = (dev >> 8) & 0xfff;
    let minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    match (major, minor) {
        (0, _) => "?".into(),
        (136..=143, m) => format!("pts/{}", m + (major - 136) * 256),
        (4, m) if m < 64 => format!("tty{m}"),
        (4, m) => format!("ttyS{}", m - 64),
        (5, 0) => "tty".into(),
        (5, 1) => "console".into(),
        (ma, mi) => format!("{ma}:{mi}"),
    }
}

/// `[DD-]HH:MM:SS`.
fn clock_time(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// `[[DD-]HH:]MM:SS`, as `etime`.
fn elapsed(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h) {
        (0, 0) => format!("{m:02}:{s:02}"),
        (0, _) => format!("{h:02}:{m:02}:{s:02}"),
        _ => format!("{d}-{h:02}:{m:02}:{s:02}"),
    }
}

/// `ps`'s start time (in UTC): `HH:MM` within a day, `MonDD` within the
/// year, else the year.
fn start_time(started: SystemTime, now: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // `YYYY-MM-DDTHH:MM:SS…`
    let s = crate::runtime::logs::rfc3339(started);
    let n = crate::runtime::logs::rfc3339(now);
    let recent = now
        .duration_since(started)
        .is_ok_and(|d| d < Duration::from_secs(86_400));
    if recent {
        s[11..16].to_string()
    } else if s[..4] == n[..4] {
        let month: usize = s[5..7].parse().unwrap_or(1);
        format!("{}{}", MONTHS[month.clamp(1, 12) - 1], &s[8..10])
    } else {
        s[..4].to_string()
    }
}

fn cell(p: &ProcessInfo, field: Field, mem_total: u64, now: SystemTime) -> String {
    let life_pct = || {
        if p.age_ms == 0 {
            0.0
        } else {
            p.cpu_ms as f64 / p.age_ms as f64 * 100.0
        }
    };
    let user = || {
        if p.user.is_empty() {
            p.uid.to_string()
        } else {
            p.user.clone()
        }
    };
    match field {
        Field::User => user(),
        Field::Uid => p.uid.to_string(),
        Field::Pid => p.pid.to_string(),
        Field::Ppid => p.ppid.to_string(),
        Field::C => format!("{}", (life_pct() as u64).min(99)),
        Field::Start => start_time(
            now.checked_sub(Duration::from_millis(p.age_ms))
                .unwrap_or(UNIX_EPOCH),
            now,
        ),
        Field::Tty => tty_name(p.tty),
        Field::Time => clock_time(p.cpu_ms / 1000),
        Field::BsdTime => {
            let secs = p.cpu_ms / 1000;
            format!("{}:{:02}", secs / 60, secs % 60)
        }
        Field::Args if p.args.is_empty() => format!("[{}]", p.comm),
        Field::Args => p.args.join(" "),
        Field::Comm => p.comm.clone(),
        Field::Pcpu => format!("{:.1}", life_pct()),
        Field::Pmem => {
            let pct = if mem_total > 0 {
                p.rss as f64 / mem_total as f64 * 100.0
            } else {
                0.0
            };
            format!("{pct:.1}")
        }
        Field::Vsz => (p.vsz / 1024).to_string(),
        Field::Rss => (p.rss / 1024).to_string(),
        Field::Stat => p.stat.clone(),
        Field::Etime => elapsed(p.age_ms / 1000),
    }
}

/// Aligns cells as Docker's `top` does (tabwriter: at least 20 wide, 3 of
/// padding); the last cell of a row is not padded.
fn align(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, c) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            let w = (c.chars().count() + 3).max(20);
            match widths.get_mut(i) {
                Some(cur) => *cur = (*cur).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            out.push_str(c);
            if i + 1 < row.len() {
                out.push_str(&" ".repeat(widths[i] - c.chars().count()));
            }
        }
        out.push('\n');
    }
    out
}

fn top_table(
    cols: &[(Field, String)],
    processes: &[ProcessInfo],
    mem_total: u64,
    now: SystemTime,
) -> String {
    let mut rows = vec![cols.iter().map(|(_, h)| h.clone()).collect::<Vec<_>>()];
    for p in processes {
        rows.push(
            cols.iter()
                .map(|(f, _)| cell(p, *f, mem_total, now))
                .collect(),
        );
    }
    align(&rows)
}

pub fn top(a: TopArgs) -> anyhow::Result<i32> {
    let Some((name, opts)) = a.args.split_first() else {
        bail!("top needs a box: a3s-box top BOX [ps OPTIONS]");
    };
    let cols = parse_ps(opts)?;
    let store = open()?;
    let id = store.resolve(name)?;
    if !is_up(&store.live_state(&id)?) {
        bail!("box {name} is not running");
    }
    match ask_guest(&store, &id, &Message::Top)? {
        Message::TopReply {
            mem_total,
            processes,
        } => {
            print!(
                "{}",
                top_table(&cols, &processes, mem_total, SystemTime::now())
            );
            Ok(0)
        }
        other => bail!("the guest answered {} to Top", other.name()),
    }
}

// ---- pause, unpause ------------------------------------------------------------

/// Freezes (`pause`) or thaws box `id`, which the user called `name`, and
/// records it as paused or running again.
fn set_paused(store: &Store, id: &str, name: &str, pause: bool) -> anyhow::Result<()> {
    let st = store.live_state(id)?;
    match (pause, st.status) {
        (true, Status::Paused) => bail!("box {name} is already paused"),
        (true, Status::Running) | (false, Status::Paused) if shim_alive(&st) => {}
        (true, _) => bail!("box {name} is not running"),
        (false, _) => bail!("box {name} is not paused"),
    }
    let request = if pause {
        Message::Pause
    } else {
        Message::Unpause
    };
    match ask_guest(store, id, &request)? {
        Message::Ok => {}
        other => bail!("the guest answered {} to {}", other.name(), request.name()),
    }
    let _lock = store.lock()?;
    let mut st = store.state(id)?;
    // The box may have ended meanwhile; its end stays recorded.
    if matches!(st.status, Status::Running | Status::Paused) && shim_alive(&st) {
        st.status = if pause {
            Status::Paused
        } else {
            Status::Running
        };
        store.write_state(id, &st)?;
    }
    let action = if pause { "pause" } else { "unpause" };
    crate::runtime::events::emit_box(store, action, id, &[]);
    Ok(())
}

/// Runs `f` on every named box and prints each name that succeeded, as
/// Docker does; 1 if any failed.
fn each_box(
    boxes: &[String],
    f: impl Fn(&Store, &str, &str) -> anyhow::Result<()>,
) -> anyhow::Result<i32> {
    if boxes.is_empty() {
        bail!("at least one box is needed");
    }
    let store = open()?;
    let mut failed = false;
    for b in boxes {
        match store
            .resolve(b)
            .map_err(anyhow::Error::from)
            .and_then(|id| f(&store, &id, b))
        {
            Ok(()) => println!("{b}"),
            Err(e) => {
                eprintln!("a3s-box: {e:#}");
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

pub fn pause(a: PauseArgs) -> anyhow::Result<i32> {
    each_box(&a.boxes, |store, id, name| {
        set_paused(store, id, name, true)
    })
}

pub fn unpause(a: UnpauseArgs) -> anyhow::Result<i32> {
    each_box(&a.boxes, |store, id, name| {
        set_paused(store, id, name, false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_as_gos_g_verb() {
        assert_eq!(go_g(7.1875, 4), "7.188");
        assert_eq!(go_g(1.5, 4), "1.5");
        assert_eq!(go_g(100.0, 4), "100");
        assert_eq!(go_g(0.0, 4), "0");
        assert_eq!(go_g(1023.9, 4), "1024");
        assert_eq!(go_g(999.7, 3), "1e+03");
        assert_eq!(go_g(1.049, 3), "1.05");
        assert_eq!(go_g(0.00001234, 3), "1.23e-05");
    }

    #[test]
    fn sizes_print_as_dockers() {
        assert_eq!(binary_size(0), "0B");
        assert_eq!(binary_size(1023), "1023B");
        assert_eq!(binary_size(1024), "1KiB");
        assert_eq!(binary_size(7_536_640), "7.188MiB");
        assert_eq!(binary_size(256 << 20), "256MiB");
        assert_eq!(binary_size(16_696_000_000), "15.55GiB");
        assert_eq!(decimal_size(0), "0B");
        assert_eq!(decimal_size(1050), "1.05kB");
        assert_eq!(decimal_size(8192), "8.19kB");
        assert_eq!(decimal_size(999), "999B");
        assert_eq!(decimal_size(2_500_000), "2.5MB");
    }

    #[test]
    fn cpu_percent_is_cpu_time_over_the_guests_elapsed_time() {
        let at = |t, cpu| BoxStats {
            time_usec: t,
            cpu_usec: cpu,
            ..BoxStats::default()
        };
        assert_eq!(
            cpu_percent(&at(1_000_000, 0), &at(2_000_000, 500_000)),
            Some(50.0)
        );
        assert_eq!(
            cpu_percent(&at(0, 0), &at(1_000_000, 2_000_000)),
            Some(200.0)
        );
        assert_eq!(cpu_percent(&at(5, 0), &at(5, 0)), None);
        assert_eq!(cpu_percent(&at(6, 0), &at(5, 0)), None);
    }

    fn shown() -> Shown {
        Shown {
            given: "web".into(),
            id: "0123456789abcdef".repeat(4),
            name: "web".into(),
            memory: 256 << 20,
        }
    }

    #[test]
    fn a_running_box_shows_its_use_against_its_memory_flag() {
        let stats = BoxStats {
            memory: 8 << 20,
            inactive_file: 1 << 20,
            memory_total: 230 << 20,
            pids: 3,
            net_rx: Some(1050),
            net_tx: Some(0),
            ..BoxStats::default()
        };
        let v = stats_item(
            &shown(),
            &Row::Up {
                cpu: Some(12.345),
                stats,
            },
            true,
        );
        assert_eq!(v["ID"], "0123456789ab");
        assert_eq!(v["Container"], "web");
        assert_eq!(v["CPUPerc"], "12.35%");
        assert_eq!(v["MemUsage"], "7MiB / 256MiB");
        assert_eq!(v["MemPerc"], "2.73%");
        assert_eq!(v["NetIO"], "1.05kB / 0B");
        assert_eq!(v["BlockIO"], "--", "no io controller: not invented");
        assert_eq!(v["PIDs"], "3");
        let full = stats_item(&shown(), &Row::Down, false);
        assert_eq!(full["ID"], shown().id.as_str());
        assert_eq!(full["MemUsage"], "0B / 0B");
        assert_eq!(full["CPUPerc"], "0.00%");
        assert_eq!(stats_item(&shown(), &Row::Unknown, true)["PIDs"], "--");
    }

    #[test]
    fn the_default_table_has_dockers_columns() {
        let f = parse_format_or("", STATS_ROW).unwrap();
        let item = stats_item(&shown(), &Row::Down, true);
        let out = f.render(&[item], STATS_HEADERS).unwrap();
        let header = out.lines().next().unwrap();
        let words: Vec<&str> = header
            .split("   ")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        assert_eq!(
            words,
            [
                "CONTAINER ID",
                "NAME",
                "CPU %",
                "MEM USAGE / LIMIT",
                "MEM %",
                "NET I/O",
                "BLOCK I/O",
                "PIDS"
            ]
        );
        assert!(out
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("0123456789ab   web "));
        let json = parse_format_or("json", STATS_ROW).unwrap();
        let line = json
            .render(&[stats_item(&shown(), &Row::Down, true)], STATS_HEADERS)
            .unwrap();
        let v: Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(v["Name"], "web");
        let t = parse_format_or("{{.Name}}: {{.PIDs}}", STATS_ROW).unwrap();
        assert_eq!(
            t.render(&[stats_item(&shown(), &Row::Down, true)], STATS_HEADERS)
                .unwrap(),
            "web: 0\n"
        );
    }

    #[test]
    fn samples_become_rows_with_cpu_from_the_previous_sample() {
        let s = |t, cpu| BoxStats {
            time_usec: t,
            cpu_usec: cpu,
            ..BoxStats::default()
        };
        let before = vec![Some(Ok(s(0, 0))), None, None];
        let after = vec![
            Some(Ok(s(1_000_000, 250_000))),
            Some(Ok(s(1_000_000, 0))),
            Some(Err(anyhow::anyhow!("gone"))),
        ];
        let got = rows(&before, &after);
        assert_eq!(
            got[0],
            Row::Up {
                cpu: Some(25.0),
                stats: s(1_000_000, 250_000)
            }
        );
        assert!(matches!(got[1], Row::Up { cpu: None, .. }));
        assert_eq!(got[2], Row::Unknown);
        assert_eq!(rows(&[], &[None]), [Row::Down]);
    }

    fn opts(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn headers(s: &str) -> Vec<String> {
        parse_ps(&opts(s))
            .unwrap()
            .into_iter()
            .map(|(_, h)| h)
            .collect()
    }

    #[test]
    fn ps_options_choose_columns_as_ps_does() {
        let ef = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"];
        assert_eq!(headers(""), ef);
        assert_eq!(headers("-ef"), ef);
        assert_eq!(headers("-e -f"), ef);
        assert_eq!(headers("-e"), ["PID", "TTY", "TIME", "CMD"]);
        let aux = [
            "USER", "PID", "%CPU", "%MEM", "VSZ", "RSS", "TTY", "STAT", "START", "TIME", "COMMAND",
        ];
        assert_eq!(headers("aux"), aux);
        assert_eq!(headers("-o pid,comm"), ["PID", "COMMAND"]);
        assert_eq!(headers("-opid,args"), ["PID", "COMMAND"]);
        assert_eq!(headers("-o pid -o user"), ["PID", "USER"]);
        assert_eq!(headers("o pid=N,%cpu"), ["N", "%CPU"]);
        assert_eq!(headers("--format=uid,etime"), ["UID", "ELAPSED"]);
        for bad in ["-L", "-o nosuch", "-o", "aZ", "--sort"] {
            let e = parse_ps(&opts(bad)).unwrap_err().to_string();
            assert!(e.contains("unsupported ps option"), "{bad}: {e}");
            assert!(e.contains("aux"), "{e}");
        }
    }

    fn sleeper() -> ProcessInfo {
        ProcessInfo {
            pid: 7,
            ppid: 1,
            uid: 33,
            user: String::new(),
            stat: "S".into(),
            tty: (136 << 8) | 2,
            cpu_ms: 61_500,
            age_ms: 123_000,
            vsz: 4 << 20,
            rss: 1 << 20,
            comm: "sleep".into(),
            args: vec!["sleep".into(), "1000".into()],
        }
    }

    #[test]
    fn process_cells_read_as_ps_prints_them() {
        let now = UNIX_EPOCH + Duration::from_secs(1_764_331_200); // 2025-11-28T12:00:00Z
        let p = sleeper();
        let c = |f| cell(&p, f, 1 << 30, now);
        assert_eq!(c(Field::User), "33", "no name: the number");
        assert_eq!(c(Field::Tty), "pts/2");
        assert_eq!(c(Field::Time), "00:01:01");
        assert_eq!(c(Field::BsdTime), "1:01");
        assert_eq!(c(Field::Etime), "02:03");
        assert_eq!(c(Field::Start), "11:57");
        assert_eq!(c(Field::C), "50");
        assert_eq!(c(Field::Pcpu), "50.0");
        assert_eq!(c(Field::Pmem), "0.1");
        assert_eq!(
            (c(Field::Vsz), c(Field::Rss)),
            ("4096".into(), "1024".into())
        );
        assert_eq!(c(Field::Args), "sleep 1000");
        let kernel = ProcessInfo {
            args: Vec::new(),
            tty: 0,
            ..sleeper()
        };
        assert_eq!(cell(&kernel, Field::Args, 0, now), "[sleep]");
        assert_eq!(cell(&kernel, Field::Tty, 0, now), "?");
        assert_eq!(cell(&kernel, Field::Pmem, 0, now), "0.0");
    }

    #[test]
    fn start_times_shorten_as_ps_does() {
        let now = UNIX_EPOCH + Duration::from_secs(1_764_331_200); // 2025-11-28T12:00:00Z
        let ago = |s| now - Duration::from_secs(s);
        assert_eq!(start_time(ago(60), now), "11:59");
        assert_eq!(start_time(ago(3 * 86_400), now), "Nov25");
        assert_eq!(start_time(ago(400 * 86_400), now), "2024");
        assert_eq!(elapsed(90_061), "1-01:01:01");
        assert_eq!(clock_time(90_061), "1-01:01:01");
        assert_eq!(tty_name((4 << 8) | 65), "ttyS1");
        assert_eq!(tty_name((5 << 8) | 1), "console");
    }

    #[test]
    fn top_tables_align_as_dockers() {
        let cols = parse_ps(&opts("-o pid,comm")).unwrap();
        let out = top_table(&cols, &[sleeper()], 0, UNIX_EPOCH);
        assert_eq!(
            out,
            format!("PID{}COMMAND\n7{}sleep\n", " ".repeat(17), " ".repeat(19))
        );
    }
}
