//! `a3s-box events`: the event log (`runtime::events`) as Docker prints it —
//! past events in the `--since`/`--until` window, then, without `--until`, new
//! ones as they happen, until interrupted.

use std::io::Write;
use std::time::{Duration, SystemTime};

use anyhow::bail;
use argh::FromArgs;
use serde_json::Value;

use super::template::{parse_format, Format, Template};
use crate::runtime::events::{Event, Follower};
use crate::runtime::logs::{parse_time, rfc3339};

/// How often a follower looks for new events.
const POLL: Duration = Duration::from_millis(100);

/// Show what happens to boxes: past events in a window, then new ones.
#[derive(FromArgs)]
#[argh(subcommand, name = "events")]
pub struct EventsArgs {
    /// show events since this time (RFC 3339, Unix seconds, or a duration such as 10m)
    #[argh(option)]
    since: Option<String>,
    /// stop at this time (the same forms); without it, follow until interrupted
    #[argh(option)]
    until: Option<String>,
    /// filter: container=, event=, type=, label=KEY[=VALUE], image= (repeatable)
    #[argh(option, short = 'f')]
    filter: Vec<String>,
    /// json, or a Go template over each event
    #[argh(option)]
    format: Option<String>,
}

/// One `--filter KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    Container(String),
    Event(String),
    Type(String),
    Label(String, Option<String>),
    Image(String),
}

/// The object types Docker's events name.
const TYPES: [&str; 11] = [
    "builder",
    "config",
    "container",
    "daemon",
    "image",
    "network",
    "node",
    "plugin",
    "secret",
    "service",
    "volume",
];

pub fn parse_filter(f: &str) -> anyhow::Result<Filter> {
    let Some((k, v)) = f.split_once('=') else {
        bail!("bad format of filter (expected name=value): {f}");
    };
    Ok(match k {
        "container" => Filter::Container(v.into()),
        "event" => Filter::Event(v.into()),
        "type" if TYPES.contains(&v) => Filter::Type(v.into()),
        "type" => bail!(
            "invalid filter 'type={v}': expected one of {}",
            TYPES.join(", ")
        ),
        "label" => match v.split_once('=') {
            Some((lk, lv)) => Filter::Label(lk.into(), Some(lv.into())),
            None => Filter::Label(v.into(), None),
        },
        "image" => Filter::Image(v.into()),
        _ => bail!("invalid filter '{k}'"),
    })
}

/// `busybox` names `busybox:latest` too.
fn image_matches(want: &str, have: &str) -> bool {
    let untagged = |s: &str| s.strip_suffix(":latest").unwrap_or(s).to_string();
    want == have || untagged(want) == untagged(have)
}

impl Filter {
    fn key(&self) -> std::mem::Discriminant<Filter> {
        std::mem::discriminant(self)
    }

    fn passes(&self, e: &Event) -> bool {
        let attr = |k: &str| e.actor.attributes.get(k).map(String::as_str);
        match self {
            Filter::Container(c) => {
                attr("name") == Some(c.as_str()) || (!c.is_empty() && e.actor.id.starts_with(c))
            }
            // `health_status` names every `health_status: …`, as in Docker.
            Filter::Event(a) => {
                e.action == *a || e.action.split_once(':').is_some_and(|(head, _)| head == a)
            }
            Filter::Type(t) => e.kind == *t,
            Filter::Label(k, v) => {
                attr(k).is_some_and(|have| v.as_deref().is_none_or(|v| v == have))
            }
            Filter::Image(i) => {
                attr("image").is_some_and(|have| image_matches(i, have))
                    || image_matches(i, &e.from)
            }
        }
    }
}

/// Whether `e` passes every filter; filters with the same key are alternatives,
/// as in Docker.
pub fn passes(filters: &[Filter], e: &Event) -> bool {
    let mut keys: Vec<_> = filters.iter().map(Filter::key).collect();
    keys.dedup();
    keys.iter().all(|k| {
        filters
            .iter()
            .filter(|f| f.key() == *k)
            .any(|f| f.passes(e))
    })
}

/// Docker's line: `2026-12-07T10:00:00.000000000Z container start <id> (image=…, name=…)`.
pub fn default_line(e: &Event) -> String {
    let mut line = format!("{} {} {} {}", rfc3339(e.at()), e.kind, e.action, e.actor.id);
    if !e.actor.attributes.is_empty() {
        let attrs: Vec<String> = e
            .actor
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        line.push_str(&format!(" ({})", attrs.join(", ")));
    }
    line
}

/// What templates see: the event's JSON fields, and the Go field names
/// Docker's templates use for the lower-case ones (`.Status`, `.ID`, `.Time` …).
fn template_value(e: &Event) -> Value {
    let mut v = serde_json::to_value(e).expect("events serialise");
    if let Value::Object(m) = &mut v {
        for (go, json) in [
            ("Status", "status"),
            ("ID", "id"),
            ("From", "from"),
            ("Scope", "scope"),
            ("Time", "time"),
            ("TimeNano", "timeNano"),
        ] {
            let value = m[json].clone();
            m.insert(go.into(), value);
        }
    }
    v
}

/// How each event is printed.
pub enum Output {
    Line,
    Json,
    Template(Template),
}

pub fn parse_output(format: Option<&str>) -> anyhow::Result<Output> {
    let Some(f) = format else {
        return Ok(Output::Line);
    };
    // `{{json .}}` prints the event as the log holds it, as Docker's does.
    let squeezed: String = f.chars().filter(|c| !c.is_whitespace()).collect();
    if squeezed == "{{json.}}" {
        return Ok(Output::Json);
    }
    Ok(match parse_format(f)? {
        Format::Json => Output::Json,
        Format::Template(t) => Output::Template(t),
        Format::Table(_) => bail!("events prints no table: use json or a template"),
    })
}

impl Output {
    pub fn render(&self, e: &Event) -> anyhow::Result<String> {
        Ok(match self {
            Output::Line => default_line(e),
            Output::Json => serde_json::to_string(e).expect("events serialise"),
            Output::Template(t) => t.render(&template_value(e))?,
        })
    }
}

fn nanos(t: SystemTime) -> i128 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

pub fn events(a: EventsArgs) -> anyhow::Result<i32> {
    let now = SystemTime::now();
    let since = a.since.as_deref().map(|s| parse_time(s, now)).transpose()?;
    let until = a.until.as_deref().map(|s| parse_time(s, now)).transpose()?;
    let filters = a
        .filter
        .iter()
        .map(|f| parse_filter(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let output = parse_output(a.format.as_deref())?;
    let state = crate::paths::state_dir();
    // A window reads the log from its start; a bare `events` only what comes.
    let mut log = if since.is_some() || until.is_some() {
        Follower::from_start(&state)
    } else {
        Follower::from_end(&state)
    };
    let (since, until) = (since.map(nanos), until.map(nanos));
    let mut out = std::io::stdout().lock();
    loop {
        // Read once more after `until` has passed: an event of the window
        // may be written a moment after its time.
        let last = until.is_some_and(|u| nanos(SystemTime::now()) > u);
        for e in log.poll()? {
            let t = i128::from(e.time_nano);
            if since.is_some_and(|s| t < s) || until.is_some_and(|u| t > u) {
                continue;
            }
            if !passes(&filters, &e) {
                continue;
            }
            // A reader that went away (`| head`) ends the command, not an error.
            if writeln!(out, "{}", output.render(&e)?).is_err() || out.flush().is_err() {
                return Ok(0);
            }
        }
        if last {
            return Ok(0);
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn event(action: &str, name: &str, labels: &[(&str, &str)]) -> Event {
        let cfg: crate::runtime::BoxConfig = serde_json::from_value(serde_json::json!({
            "id": name.repeat(64)[..64], "name": name, "rootfs": "/r",
            "image_name": "busybox", "labels": labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "argv": ["true"], "env": [], "workdir": "/", "user": null, "hostname": "h",
            "tty": false, "stdin": false, "cpus": 1, "memory": 134217728,
            "kernel": "/vmlinux", "auto_remove": false, "created": 0,
        }))
        .unwrap();
        let at = UNIX_EPOCH + Duration::from_nanos(1_796_637_600_000_000_123);
        Event::of_box(action, &cfg, &[], at)
    }

    fn filters(fs: &[&str]) -> Vec<Filter> {
        fs.iter().map(|f| parse_filter(f).unwrap()).collect()
    }

    #[test]
    fn the_default_line_is_dockers() {
        let e = event("start", "web", &[("app", "x")]);
        assert_eq!(
            default_line(&e),
            format!(
                "2026-12-07T10:00:00.000000123Z container start {} (app=x, image=busybox, name=web)",
                e.actor.id
            )
        );
    }

    #[test]
    fn json_and_templates_print_dockers_fields() {
        let e = event("die", "web", &[]);
        for f in ["json", "{{json .}}", "{{ json . }}"] {
            let line = parse_output(Some(f)).unwrap().render(&e).unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["Action"], "die", "{f}");
            assert_eq!(v["timeNano"], e.time_nano, "{f}");
            assert!(v.get("TimeNano").is_none(), "{f}: only the JSON names");
        }
        let t = parse_output(Some(
            "{{.Status}} {{.Actor.Attributes.name}} {{.Time}} {{.Type}}",
        ))
        .unwrap();
        assert_eq!(t.render(&e).unwrap(), "die web 1796637600 container");
        let t = parse_output(Some("{{.ID}}|{{.id}}")).unwrap();
        assert_eq!(t.render(&e).unwrap(), format!("{0}|{0}", e.id));
        assert!(parse_output(Some("table {{.ID}}")).is_err());
    }

    #[test]
    fn filters_of_one_key_are_alternatives_and_keys_all_apply() {
        let web = event("start", "web", &[("tier", "front")]);
        let db = event("die", "db", &[("tier", "back")]);
        let both = |fs: &[&str]| {
            let fs = filters(fs);
            (passes(&fs, &web), passes(&fs, &db))
        };
        assert_eq!(both(&[]), (true, true));
        assert_eq!(both(&["container=web"]), (true, false));
        assert_eq!(both(&["container=web", "container=db"]), (true, true));
        assert_eq!(both(&["container=webw"]), (true, false), "an ID prefix");
        assert_eq!(both(&["event=die"]), (false, true));
        assert_eq!(both(&["event=die", "container=web"]), (false, false));
        assert_eq!(both(&["label=tier"]), (true, true));
        assert_eq!(both(&["label=tier=back"]), (false, true));
        assert_eq!(both(&["type=container"]), (true, true));
        assert_eq!(both(&["type=image"]), (false, false));
        assert_eq!(both(&["image=busybox:latest"]), (true, true));
        assert_eq!(both(&["image=alpine"]), (false, false));
    }

    #[test]
    fn an_event_filter_names_health_status_with_or_without_its_value() {
        let e = event("health_status: healthy", "web", &[]);
        assert!(passes(&filters(&["event=health_status"]), &e));
        assert!(passes(&filters(&["event=health_status: healthy"]), &e));
        assert!(!passes(&filters(&["event=health"]), &e));
    }

    #[test]
    fn bad_filters_are_refused_in_one_line() {
        assert_eq!(
            parse_filter("colour=red").unwrap_err().to_string(),
            "invalid filter 'colour'"
        );
        assert!(parse_filter("type=spaceship")
            .unwrap_err()
            .to_string()
            .starts_with("invalid filter 'type=spaceship'"));
        assert!(parse_filter("nokey").is_err());
    }
}
