//! `a3s-box logs`: a box's output as its log driver recorded it, flags as Docker's.

use std::io::{self, BufWriter, Write};
use std::time::SystemTime;

use anyhow::bail;
use argh::FromArgs;

use super::image::Eq;
use crate::runtime::logs::{self, LogError, ReadOptions, Record};
use crate::runtime::{Status, Store};

/// Fetch the logs of a box.
#[derive(FromArgs)]
#[argh(subcommand, name = "logs")]
pub struct LogsArgs {
    /// follow log output
    #[argh(switch, short = 'f')]
    follow: bool,
    /// number of lines to show from the end of the logs (default "all")
    #[argh(option, default = "String::from(\"all\")")]
    tail: String,
    /// show logs since a time (2013-01-02T13:23:37Z, a Unix timestamp) or for a
    /// duration before now (42m)
    #[argh(option)]
    since: Option<String>,
    /// show logs before a time (2013-01-02T13:23:37Z, a Unix timestamp) or a
    /// duration before now (42m)
    #[argh(option)]
    until: Option<String>,
    /// show timestamps
    #[argh(switch, short = 't')]
    timestamps: bool,
    /// show extra details provided to logs
    #[argh(switch)]
    details: bool,
    /// the box (name or ID)
    #[argh(positional, arg_name = "box")]
    r#box: String,
}

/// `--tail`: a count, or `all` (a negative count is all too, as in Docker).
fn parse_tail(s: &str) -> anyhow::Result<Option<usize>> {
    if s == "all" {
        return Ok(None);
    }
    match s.parse::<i64>() {
        Ok(n) => Ok(usize::try_from(n).ok()),
        Err(_) => bail!("invalid --tail {s:?}: use a number of lines or \"all\""),
    }
}

fn parse_time(s: Option<&str>, now: SystemTime) -> anyhow::Result<Option<SystemTime>> {
    match s.filter(|s| !s.is_empty()) {
        Some(s) => Ok(Some(logs::parse_time(s, now)?)),
        None => Ok(None),
    }
}

/// Writes records to stdout or stderr by their stream, prefixed as the flags ask.
struct Printer<W: Write, E: Write> {
    out: W,
    err: E,
    timestamps: bool,
    details: bool,
    /// Flush every record: a follower shows each line as it comes.
    eager: bool,
}

impl<W: Write, E: Write> Printer<W, E> {
    fn print(&mut self, r: &Record) -> io::Result<()> {
        let mut line = Vec::with_capacity(r.log.len() + 32);
        if self.timestamps {
            line.extend_from_slice(logs::rfc3339(r.time).as_bytes());
            line.push(b' ');
        }
        // Docker puts a record's attributes (labels, env) and a space here; ours
        // have none.
        if self.details {
            line.push(b' ');
        }
        line.extend_from_slice(r.log.as_bytes());
        if r.stream == "stderr" {
            // What went to stdout before this record is shown before it.
            self.out.flush()?;
            self.err.write_all(&line)?;
        } else {
            self.out.write_all(&line)?;
        }
        if self.eager {
            self.out.flush()?;
        }
        Ok(())
    }
}

pub fn logs(Eq(a): Eq<LogsArgs>) -> anyhow::Result<i32> {
    let now = SystemTime::now();
    let opts = ReadOptions {
        tail: parse_tail(&a.tail)?,
        since: parse_time(a.since.as_deref(), now)?,
        until: parse_time(a.until.as_deref(), now)?,
    };
    let store = Store::open(&crate::paths::state_dir())?;
    let id = store.resolve(&a.r#box)?;
    let dir = store.box_dir(&id);
    let mut printer = Printer {
        out: BufWriter::new(io::stdout().lock()),
        err: io::stderr().lock(),
        timestamps: a.timestamps,
        details: a.details,
        eager: a.follow,
    };
    let mut print = |r: &Record| printer.print(r);
    let read = if a.follow {
        let running = || {
            store
                .live_state(&id)
                .is_ok_and(|s| s.status != Status::Exited && crate::runtime::store::shim_alive(&s))
        };
        logs::follow_logs(&dir, &opts, &running, &mut print)
    } else {
        logs::read_logs(&dir, &opts, &mut print)
    };
    let flushed = printer.out.flush();
    match read {
        // The reader went away (`| head`): nothing is wrong.
        Err(LogError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(0),
        r => r?,
    }
    match flushed {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(0),
        r => Ok(r.map(|()| 0)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn record(stream: &str, log: &str) -> Record {
        Record {
            stream: stream.into(),
            log: log.into(),
            time: UNIX_EPOCH + Duration::new(1_700_000_000, 5),
        }
    }

    fn printed(timestamps: bool, details: bool, records: &[Record]) -> (String, String) {
        let mut p = Printer {
            out: Vec::new(),
            err: Vec::new(),
            timestamps,
            details,
            eager: false,
        };
        for r in records {
            p.print(r).unwrap();
        }
        (
            String::from_utf8(p.out).unwrap(),
            String::from_utf8(p.err).unwrap(),
        )
    }

    #[test]
    fn records_go_to_their_own_stream_unchanged() {
        let (out, err) = printed(
            false,
            false,
            &[
                record("stdout", "a\n"),
                record("stderr", "b\n"),
                record("stdout", "par"),
                record("stdout", "tial\n"),
            ],
        );
        assert_eq!(out, "a\npartial\n");
        assert_eq!(err, "b\n");
    }

    #[test]
    fn timestamps_and_details_prefix_each_record_as_docker_does() {
        let (out, _) = printed(true, false, &[record("stdout", "a\n")]);
        assert_eq!(out, "2023-11-14T22:13:20.000000005Z a\n");
        let (out, _) = printed(true, true, &[record("stdout", "a\n")]);
        assert_eq!(out, "2023-11-14T22:13:20.000000005Z  a\n");
        let (_, err) = printed(false, true, &[record("stderr", "a\n")]);
        assert_eq!(err, " a\n");
    }

    #[test]
    fn tail_is_a_count_or_all() {
        assert_eq!(parse_tail("all").unwrap(), None);
        assert_eq!(parse_tail("10").unwrap(), Some(10));
        assert_eq!(parse_tail("0").unwrap(), Some(0));
        assert_eq!(parse_tail("-1").unwrap(), None);
        assert!(parse_tail("ten").is_err());
    }

    #[test]
    fn flags_parse_with_or_without_equals() {
        let a: Eq<LogsArgs> = crate::cli::parse(
            "a3s-box logs",
            &["-f", "--tail=5", "--since", "10m", "-t", "web"],
        )
        .unwrap_or_else(|_| panic!("flags should parse"));
        let a = a.0;
        assert!(a.follow && a.timestamps && !a.details);
        assert_eq!(a.tail, "5");
        assert_eq!(a.since.as_deref(), Some("10m"));
        assert_eq!(a.r#box, "web");
    }
}
