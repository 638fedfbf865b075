//! The image commands: `pull`, `images`, `rmi`, `tag`, `image-inspect`,
//! `image-prune`, `login`, `logout`, and `image-unpack` (ours, not Docker's).
//! Flags and output follow Docker's.

use std::io::{BufRead, IsTerminal, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use argh::{EarlyExit, FromArgs, SubCommand};

use crate::oci::auth;
use crate::oci::manifest::Platform;
use crate::oci::reference::Reference;
use crate::oci::registry::{self, Client};
use crate::oci::store::{self, ImageRecord, ImageStore, PullOptions, Removed};
use crate::oci::unpack::{unpack_layer, UnpackOptions};
use crate::oci::OciError;

/// Accepts `--flag=value` (as Docker does) by splitting it before argh sees it.
pub struct Eq<T>(pub T);

fn split_equals(args: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut ended = false;
    for a in args {
        if *a == "--" {
            ended = true;
        }
        match a.split_once('=') {
            Some((k, v)) if !ended && k.starts_with("--") && k.len() > 2 => {
                out.push(k.to_string());
                out.push(v.to_string());
            }
            _ => out.push(a.to_string()),
        }
    }
    out
}

impl<T: SubCommand> FromArgs for Eq<T> {
    fn from_args(command_name: &[&str], args: &[&str]) -> std::result::Result<Self, EarlyExit> {
        let split = split_equals(args);
        let refs: Vec<&str> = split.iter().map(String::as_str).collect();
        T::from_args(command_name, &refs).map(Eq)
    }

    fn redact_arg_values(
        command_name: &[&str],
        args: &[&str],
    ) -> std::result::Result<Vec<String>, EarlyExit> {
        T::redact_arg_values(command_name, args)
    }
}

impl<T: SubCommand> SubCommand for Eq<T> {
    const COMMAND: &'static argh::CommandInfo = T::COMMAND;
}

fn parse_bool(s: &str) -> std::result::Result<bool, String> {
    match s {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("expected true or false, got {s:?}")),
    }
}

fn parse_ref(s: &str) -> Result<Reference> {
    Reference::parse(s).map_err(|e| OciError::Reference(s.to_string(), e).into())
}

fn open_store() -> Result<ImageStore> {
    Ok(ImageStore::open(&crate::paths::state_dir())?)
}

/// Download an image from a registry.
#[derive(FromArgs)]
#[argh(subcommand, name = "pull")]
pub struct PullArgs {
    /// suppress verbose output
    #[argh(switch, short = 'q')]
    quiet: bool,
    /// platform to pull, os/arch[/variant] (default: this host's)
    #[argh(option)]
    platform: Option<String>,
    /// verify the registry's TLS certificate (default true)
    #[argh(option, default = "true", from_str_fn(parse_bool))]
    tls_verify: bool,
    /// image reference, e.g. alpine:3.20 or localhost:5000/app@sha256:…
    #[argh(positional)]
    image: String,
}

pub fn pull(a: Eq<PullArgs>) -> Result<i32> {
    let a = a.0;
    let r = parse_ref(&a.image)?;
    let platform = a.platform.as_deref().map(Platform::parse).transpose()?;
    let st = open_store()?;
    let explicit = a.image.contains('@') || {
        let last = a.image.rsplit('/').next().unwrap_or("");
        last.contains(':')
    };
    if !a.quiet {
        if !explicit {
            println!("Using default tag: latest");
        }
        let what = r.tag.clone().or(r.digest.clone()).unwrap_or_default();
        let repo = if r.registry == "docker.io" {
            r.repository.clone()
        } else {
            r.name()
        };
        println!("{what}: Pulling from {repo}");
    }
    let out = st.pull(
        &r,
        &PullOptions {
            platform,
            insecure: !a.tls_verify,
            progress: !a.quiet,
        },
    )?;
    if !a.quiet {
        println!("Digest: {}", out.digest);
        let shown = store::display_name(&out.reference);
        if out.up_to_date {
            println!("Status: Image is up to date for {shown}");
        } else {
            println!("Status: Downloaded newer image for {shown}");
        }
    }
    println!("{}", out.reference);
    Ok(0)
}

/// List images.
#[derive(FromArgs)]
#[argh(subcommand, name = "images")]
pub struct ImagesArgs {
    /// show all images (no intermediate images are kept, so the same as without)
    #[argh(switch, short = 'a')]
    all: bool,
    /// only show image IDs
    #[argh(switch, short = 'q')]
    quiet: bool,
    /// show digests
    #[argh(switch)]
    digests: bool,
    /// filter: dangling=true|false, reference=PATTERN
    #[argh(option, short = 'f')]
    filter: Vec<String>,
    /// format with Go-template-like placeholders, e.g. '{{.Repository}}:{{.Tag}}'
    #[argh(option)]
    format: Option<String>,
    /// repository to list (same as --filter reference=…)
    #[argh(positional)]
    repository: Option<String>,
}

struct Row {
    repository: String,
    tag: String,
    digest: String,
    id: String,
    created: String,
    created_at: String,
    size: String,
    dangling: bool,
}

fn rows(images: &[ImageRecord]) -> Vec<Row> {
    let mut out = Vec::new();
    let now = crate::runtime::record::now();
    for img in images {
        let created_secs = img.created.as_deref().and_then(parse_rfc3339);
        let created = created_secs.map_or("N/A".to_string(), |t| ago(now, t));
        let created_at = img.created.clone().unwrap_or_default();
        let first_digest = |repo: &str| {
            img.repo_digests
                .iter()
                .find_map(|d| d.split_once('@').filter(|(r, _)| *r == repo))
                .map_or("<none>".to_string(), |(_, d)| d.to_string())
        };
        let base = |repository: String, tag: String, digest: String, dangling| Row {
            repository,
            tag,
            digest,
            id: img.id.short().to_string(),
            created: created.clone(),
            created_at: created_at.clone(),
            size: human_size(img.size()),
            dangling,
        };
        if img.repo_tags.is_empty() {
            let (repo, digest) = img
                .repo_digests
                .first()
                .and_then(|d| d.split_once('@'))
                .map_or(("<none>".to_string(), "<none>".to_string()), |(r, d)| {
                    (store::familiar_repo(r).to_string(), d.to_string())
                });
            out.push(base(repo, "<none>".into(), digest, true));
        }
        for t in &img.repo_tags {
            let (repo, tag) = store::split_tag(t);
            out.push(base(
                store::familiar_repo(repo).to_string(),
                tag.to_string(),
                first_digest(repo),
                false,
            ));
        }
    }
    out
}

/// Docker's `reference=` filter: a glob over `repository[:tag]` (`*` within a path
/// component).
fn reference_matches(pattern: &str, repo: &str, tag: &str) -> bool {
    let pattern_has_tag = pattern.rsplit('/').next().is_some_and(|l| l.contains(':'));
    if pattern_has_tag {
        glob(pattern, &format!("{repo}:{tag}"))
    } else {
        glob(pattern, repo)
    }
}

fn glob(p: &str, s: &str) -> bool {
    let (p, s) = (p.as_bytes(), s.as_bytes());
    fn go(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], s) || (!s.is_empty() && s[0] != b'/' && go(p, &s[1..])),
            (Some(b'?'), Some(c)) if *c != b'/' => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    go(p, s)
}

pub fn images(a: ImagesArgs) -> Result<i32> {
    let _ = a.all;
    let st = open_store()?;
    let mut list = rows(&st.images()?);
    let mut filters = a.filter.clone();
    if let Some(r) = &a.repository {
        filters.push(format!("reference={r}"));
    }
    for f in &filters {
        let (k, v) = f
            .split_once('=')
            .with_context(|| format!("bad filter {f:?}: use key=value"))?;
        match k {
            "dangling" => {
                let want = parse_bool(v).map_err(|e| anyhow::anyhow!("bad filter {f:?}: {e}"))?;
                list.retain(|r| r.dangling == want);
            }
            "reference" => {
                list.retain(|r| !r.dangling && reference_matches(v, &r.repository, &r.tag))
            }
            _ => bail!("unsupported filter {k:?}: use dangling or reference"),
        }
    }
    if a.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for r in &list {
            if seen.insert(r.id.clone()) {
                println!("{}", r.id);
            }
        }
        return Ok(0);
    }
    if let Some(fmt) = &a.format {
        let (table, fmt) = match fmt.strip_prefix("table") {
            Some(rest) => (true, rest.trim_start()),
            None => (false, fmt.as_str()),
        };
        let fill = |r: &Row| {
            fmt.replace("{{.Repository}}", &r.repository)
                .replace("{{.Tag}}", &r.tag)
                .replace("{{.ID}}", &r.id)
                .replace("{{.Digest}}", &r.digest)
                .replace("{{.CreatedSince}}", &r.created)
                .replace("{{.CreatedAt}}", &r.created_at)
                .replace("{{.Size}}", &r.size)
                .replace("\\t", "\t")
        };
        if table {
            let header = Row {
                repository: "REPOSITORY".into(),
                tag: "TAG".into(),
                digest: "DIGEST".into(),
                id: "IMAGE ID".into(),
                created: "CREATED".into(),
                created_at: "CREATED AT".into(),
                size: "SIZE".into(),
                dangling: false,
            };
            println!("{}", fill(&header));
        }
        for r in &list {
            println!("{}", fill(r));
        }
        return Ok(0);
    }
    let mut table: Vec<Vec<String>> = vec![];
    let mut head = vec!["REPOSITORY", "TAG"];
    if a.digests {
        head.push("DIGEST");
    }
    head.extend(["IMAGE ID", "CREATED", "SIZE"]);
    table.push(head.iter().map(|s| s.to_string()).collect());
    for r in &list {
        let mut row = vec![r.repository.clone(), r.tag.clone()];
        if a.digests {
            row.push(r.digest.clone());
        }
        row.extend([r.id.clone(), r.created.clone(), r.size.clone()]);
        table.push(row);
    }
    print_table(&table);
    Ok(0)
}

fn print_table(table: &[Vec<String>]) {
    let cols = table.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in table {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == cols {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[c]));
            }
        }
        println!("{}", line.trim_end());
    }
}

/// Sizes as Docker prints them: decimal units, about four significant digits.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{}", UNITS[u])
}

/// Seconds since the epoch of an RFC 3339 time (`2024-05-01T12:00:00.5Z`, `+02:00`).
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" | "" => 0,
        r if r.len() == 6 && (r.starts_with('+') || r.starts_with('-')) => {
            let sign = if r.starts_with('-') { -1 } else { 1 };
            let oh: i64 = r[1..3].parse().ok()?;
            let om: i64 = r[4..6].parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    // Days from the civil date (proleptic Gregorian).
    let (y, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let t = days * 86_400 + h * 3600 + mi * 60 + se - offset;
    u64::try_from(t).ok()
}

/// `3 hours ago`, as Docker says it.
pub fn ago(now: u64, then: u64) -> String {
    let d = now.saturating_sub(then);
    let (n, unit) = match d {
        0..=59 => return "Less than a minute ago".into(),
        60..=3599 => (d / 60, "minute"),
        3600..=86_399 => (d / 3600, "hour"),
        86_400..=1_209_599 => (d / 86_400, "day"),
        1_209_600..=5_183_999 => (d / 604_800, "week"),
        5_184_000..=63_071_999 => (d / 2_592_000, "month"),
        _ => (d / 31_536_000, "year"),
    };
    if n == 1 {
        let article = if unit == "hour" { "An" } else { "A" };
        format!("{article} {unit} ago")
    } else {
        format!("{n} {unit}s ago")
    }
}

/// Remove one or more images.
#[derive(FromArgs)]
#[argh(subcommand, name = "rmi")]
pub struct RmiArgs {
    /// remove even if a box uses the image or several tags name it
    #[argh(switch, short = 'f')]
    force: bool,
    /// images (name, ID or ID prefix)
    #[argh(positional, greedy)]
    images: Vec<String>,
}

pub fn rmi(a: RmiArgs) -> Result<i32> {
    if a.images.is_empty() {
        bail!("rmi needs at least one image");
    }
    let st = open_store()?;
    let mut failed = None;
    for name in &a.images {
        match st.remove(name, a.force) {
            Ok(steps) => {
                for s in steps {
                    match s {
                        Removed::Untagged(n) => println!("Untagged: {n}"),
                        Removed::Deleted(d) => println!("Deleted: {d}"),
                    }
                }
            }
            Err(e) => {
                eprintln!("a3s-box: {e}");
                failed = Some(e);
            }
        }
    }
    match failed {
        Some(e) if a.images.len() == 1 => Err(e.into()),
        Some(_) => bail!("some images could not be removed"),
        None => Ok(0),
    }
}

/// Create a tag TARGET that refers to SOURCE.
#[derive(FromArgs)]
#[argh(subcommand, name = "tag")]
pub struct TagArgs {
    /// source image (name, ID or ID prefix)
    #[argh(positional)]
    source: String,
    /// new name
    #[argh(positional)]
    target: String,
}

pub fn tag(a: TagArgs) -> Result<i32> {
    let target = parse_ref(&a.target)?;
    open_store()?.tag(&a.source, &target)?;
    Ok(0)
}

/// Display detailed information on one or more images.
#[derive(FromArgs)]
#[argh(subcommand, name = "image-inspect")]
pub struct InspectArgs {
    /// images (name, ID or ID prefix)
    #[argh(positional, greedy)]
    images: Vec<String>,
}

/// One image as `image-inspect` and `inspect` show it (Docker's field names).
pub fn image_json(name: &str) -> Result<serde_json::Value> {
    let st = open_store()?;
    let rec = st.resolve(name)?;
    let cfg = st.config(&rec.id)?;
    let c = &cfg.config;
    Ok(serde_json::json!({
        "Id": rec.id.to_string(),
        "RepoTags": rec.repo_tags.iter().map(|t| store::display_name(t)).collect::<Vec<_>>(),
        "RepoDigests": rec.repo_digests.iter().map(|t| store::display_name(t)).collect::<Vec<_>>(),
        "Created": cfg.created.clone().unwrap_or_default(),
        "Size": rec.size(),
        "Architecture": cfg.architecture,
        "Os": cfg.os,
        "Variant": cfg.variant,
        "Config": {
            "Env": c.env, "Cmd": c.cmd, "Entrypoint": c.entrypoint,
            "WorkingDir": c.working_dir, "User": c.user,
        },
        "RootFS": {
            "Type": if cfg.rootfs.kind.is_empty() { "layers".to_string() } else { cfg.rootfs.kind.clone() },
            "Layers": cfg.rootfs.diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        },
        "Metadata": { "LastTagTime": rec.pulled },
    }))
}

pub fn inspect(a: InspectArgs) -> Result<i32> {
    if a.images.is_empty() {
        bail!("image-inspect needs at least one image");
    }
    let mut out = Vec::new();
    let mut missing = None;
    for name in &a.images {
        match image_json(name) {
            Ok(v) => out.push(v),
            Err(e) => missing = Some(e),
        }
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&out).expect("JSON values serialise")
    );
    match missing {
        Some(e) => Err(e),
        None => Ok(0),
    }
}

/// Remove unused images.
#[derive(FromArgs)]
#[argh(subcommand, name = "image-prune")]
pub struct PruneArgs {
    /// remove all images no box uses, not only dangling ones
    #[argh(switch, short = 'a')]
    all: bool,
    /// do not prompt for confirmation
    #[argh(switch, short = 'f')]
    force: bool,
}

pub fn prune(a: PruneArgs) -> Result<i32> {
    if !a.force {
        if a.all {
            println!(
                "WARNING! This will remove all images without at least one box associated to them."
            );
        } else {
            println!("WARNING! This will remove all dangling images.");
        }
        print!("Are you sure you want to continue? [y/N] ");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            return Ok(0);
        }
    }
    let (deleted, freed) = open_store()?.prune(a.all)?;
    if !deleted.is_empty() {
        println!("Deleted Images:");
        for d in &deleted {
            println!("deleted: {d}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(freed));
    Ok(0)
}

/// Log in to a registry.
#[derive(FromArgs)]
#[argh(subcommand, name = "login")]
pub struct LoginArgs {
    /// user name
    #[argh(option, short = 'u')]
    username: Option<String>,
    /// password (prefer --password-stdin: this one shows in the process list)
    #[argh(option, short = 'p')]
    password: Option<String>,
    /// read the password from standard input
    #[argh(switch)]
    password_stdin: bool,
    /// verify the registry's TLS certificate (default true)
    #[argh(option, default = "true", from_str_fn(parse_bool))]
    tls_verify: bool,
    /// registry, e.g. localhost:5000 (default docker.io)
    #[argh(positional)]
    registry: Option<String>,
}

fn registry_name(s: Option<&str>) -> String {
    match s {
        None => "docker.io".into(),
        Some(s) => {
            let s = s
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            match s {
                "index.docker.io" | "registry-1.docker.io" | "index.docker.io/v1" => {
                    "docker.io".into()
                }
                s => s.to_string(),
            }
        }
    }
}

pub fn login(a: Eq<LoginArgs>) -> Result<i32> {
    let a = a.0;
    let registry = registry_name(a.registry.as_deref());
    let user = a
        .username
        .context("give a user name with -u (interactive prompts are not supported)")?;
    let password = match (a.password, a.password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin are mutually exclusive"),
        (Some(p), false) => p,
        (None, true) => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) if std::io::stdin().is_terminal() => {
            bail!("give the password with -p or --password-stdin")
        }
        (None, false) => bail!("give the password with -p or --password-stdin"),
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    let client = Client::connect(
        &registry,
        "",
        &registry::Options {
            insecure: !a.tls_verify,
            push: false,
            credentials: Some((user.clone(), password.clone())),
        },
    )?;
    client.check_login()?;
    auth::store(&registry, Some((&user, &password)))?;
    println!("Login Succeeded");
    Ok(0)
}

/// Log out from a registry.
#[derive(FromArgs)]
#[argh(subcommand, name = "logout")]
pub struct LogoutArgs {
    /// registry (default docker.io)
    #[argh(positional)]
    registry: Option<String>,
}

pub fn logout(a: LogoutArgs) -> Result<i32> {
    let registry = registry_name(a.registry.as_deref());
    if auth::store(&registry, None)? {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(0)
}

/// Upload an image to a registry.
#[derive(FromArgs)]
#[argh(subcommand, name = "push")]
pub struct PushArgs {
    /// suppress verbose output
    #[argh(switch, short = 'q')]
    quiet: bool,
    /// verify the registry's TLS certificate (default true)
    #[argh(option, default = "true", from_str_fn(parse_bool))]
    tls_verify: bool,
    /// image name, e.g. localhost:5000/app:1
    #[argh(positional)]
    image: String,
}

pub fn push(a: Eq<PushArgs>) -> Result<i32> {
    let a = a.0;
    let st = open_store()?;
    let r = parse_ref(&a.image)?;
    if !a.quiet {
        println!("The push refers to repository [{}]", r.name());
    }
    let out = crate::oci::push::push(&st, &a.image, !a.tls_verify)?;
    if !a.quiet {
        use crate::oci::push::BlobPush;
        for (d, how) in &out.blobs {
            match how {
                BlobPush::Exists => println!("{}: Layer already exists", d.short()),
                BlobPush::Mounted(from) => println!("{}: Mounted from {from}", d.short()),
                BlobPush::Pushed => println!("{}: Pushed", d.short()),
            }
        }
        println!("{}: digest: {} size: {}", out.tag, out.digest, out.size);
    } else {
        println!("{}:{}", out.repository, out.tag);
    }
    Ok(0)
}

/// Save images to a tar archive (standard output by default).
#[derive(FromArgs)]
#[argh(subcommand, name = "save")]
pub struct SaveArgs {
    /// write to this file instead of standard output
    #[argh(option, short = 'o')]
    output: Option<String>,
    /// docker-archive (default) or oci-archive
    #[argh(option, default = "String::from(\"docker-archive\")")]
    format: String,
    /// images (name, ID or ID prefix)
    #[argh(positional, greedy)]
    images: Vec<String>,
}

pub fn save(a: Eq<SaveArgs>) -> Result<i32> {
    use crate::oci::archive;
    let a = a.0;
    if a.images.is_empty() {
        bail!("save needs at least one image");
    }
    let format = archive::Format::parse(&a.format)?;
    let st = open_store()?;
    match &a.output {
        Some(path) => archive::save(&st, &a.images, format, std::path::Path::new(path))?,
        None => {
            if std::io::stdout().is_terminal() {
                bail!("refusing to write an archive to a terminal: use -o FILE or redirect");
            }
            let tmp = st
                .tmp_dir()
                .join(format!("save-{}.tar", std::process::id()));
            let r = archive::save(&st, &a.images, format, &tmp).map_err(anyhow::Error::from);
            let r = r.and_then(|()| {
                let mut f = std::fs::File::open(&tmp)?;
                std::io::copy(&mut f, &mut std::io::stdout().lock())?;
                Ok(())
            });
            let _ = std::fs::remove_file(&tmp);
            r?;
        }
    }
    Ok(0)
}

/// Load images from a tar archive (standard input by default).
#[derive(FromArgs)]
#[argh(subcommand, name = "load")]
pub struct LoadArgs {
    /// read from this file instead of standard input
    #[argh(option, short = 'i')]
    input: Option<String>,
    /// suppress the load output
    #[argh(switch, short = 'q')]
    quiet: bool,
}

pub fn load(a: Eq<LoadArgs>) -> Result<i32> {
    let a = a.0;
    let st = open_store()?;
    let loaded = match &a.input {
        Some(p) => {
            let mut f = std::fs::File::open(p).with_context(|| format!("cannot open {p}"))?;
            crate::oci::archive::load(&st, &mut f)?
        }
        None => {
            if std::io::stdin().is_terminal() {
                bail!("no archive on standard input: use -i FILE or redirect");
            }
            crate::oci::archive::load(&st, &mut std::io::stdin().lock())?
        }
    };
    if !a.quiet {
        for l in loaded {
            if l.starts_with("sha256:") {
                println!("Loaded image ID: {l}");
            } else {
                println!("Loaded image: {l}");
            }
        }
    }
    Ok(0)
}

/// Unpack a stored image's layers into a directory (it does not pull).
#[derive(FromArgs)]
#[argh(subcommand, name = "image-unpack")]
pub struct UnpackArgs {
    /// image (name, ID or ID prefix), already pulled or loaded
    #[argh(positional)]
    image: String,
    /// directory to fill: must not exist or be empty
    #[argh(positional)]
    dir: String,
}

pub fn unpack(a: UnpackArgs) -> Result<i32> {
    unpack_image(&open_store()?, &a.image, Path::new(&a.dir))?;
    Ok(0)
}

/// Applies the layers of the stored image `name`, lowest first, into `dir`.
fn unpack_image(st: &ImageStore, name: &str, dir: &Path) -> Result<()> {
    // Held throughout so a concurrent `rmi`, prune or eviction cannot delete a blob
    // between resolving the image and reading its layers.
    let _lock = st.lock()?;
    let rec = match st.resolve(name) {
        Ok(r) => r,
        Err(OciError::NoSuchImage(_)) => {
            return Err(
                OciError::NoSuchImage(format!("{name}; run `a3s-box pull {name}` first")).into(),
            )
        }
        Err(e) => return Err(e.into()),
    };
    // Layers go on top of whatever is there, so a non-empty directory would give a
    // tree that is not the image's; refuse it rather than merge into it.
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?,
        Err(e) => return Err(e).with_context(|| format!("cannot use {}", dir.display())),
        Ok(m) if !m.is_dir() => bail!("{} exists and is not a directory", dir.display()),
        Ok(_) => {
            let mut entries =
                std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
            if entries.next().is_some() {
                bail!(
                    "{} is not empty: give a new or empty directory",
                    dir.display()
                );
            }
        }
    }
    let opts = UnpackOptions::default();
    for l in &rec.layers {
        let path = st.blob_path(&l.digest);
        let file = std::fs::File::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // Large reads, as the store's own unpack uses: the blob is read front to back.
        let reader = std::io::BufReader::with_capacity(1 << 17, file);
        unpack_layer(reader, Some(&l.media_type), dir, &opts)
            .map_err(|source| OciError::Unpack {
                layer: l.digest.to_string(),
                source,
            })
            .with_context(|| {
                format!(
                    "unpacking {name} into {} failed part-way (remove it before retrying)",
                    dir.display()
                )
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_flags_are_split_until_double_dash() {
        assert_eq!(
            split_equals(&["--tls-verify=false", "-q", "x", "--", "--a=b"]),
            ["--tls-verify", "false", "-q", "x", "--", "--a=b"]
        );
    }

    #[test]
    fn rfc3339_times_parse_with_fractions_and_offsets() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2024-03-01T00:00:00.123456789Z"),
            Some(1_709_251_200)
        );
        assert_eq!(
            parse_rfc3339("2024-03-01T02:00:00+02:00"),
            Some(1_709_251_200)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn sizes_and_ages_read_like_docker() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(7_795_000), "7.795MB");
        assert_eq!(human_size(1_000_000_000), "1GB");
        assert_eq!(ago(100, 90), "Less than a minute ago");
        assert_eq!(ago(10_000, 10_000 - 3600), "An hour ago");
        assert_eq!(ago(1_000_000, 1_000_000 - 3 * 86_400), "3 days ago");
    }

    #[test]
    fn reference_filter_globs_within_components() {
        assert!(reference_matches("busy*", "busybox", "latest"));
        assert!(reference_matches("*:v1", "app", "v1"));
        assert!(!reference_matches("*", "127.0.0.1:5000/app", "v1"));
        assert!(reference_matches(
            "127.0.0.1:5000/*",
            "127.0.0.1:5000/app",
            "v1"
        ));
    }

    /// A gzip layer holding `files` (path, content); a `None` content is a whiteout.
    fn gz_layer(files: &[(&str, Option<&str>)]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (path, content) in files {
            let (path, data) = match content {
                Some(c) => (path.to_string(), c.as_bytes()),
                None => {
                    let (dir, base) = path.rsplit_once('/').unwrap_or(("", path));
                    let wh = format!("{dir}/{}{base}", crate::oci::unpack::WHITEOUT_PREFIX);
                    (wh.trim_start_matches('/').to_string(), &[][..])
                }
            };
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            // The unpacker parses these; left blank they are not numbers and it fails.
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn image_unpack_applies_layers_in_order_and_refuses_bad_targets() {
        use crate::oci::digest::Digest;
        let tmp = std::env::temp_dir().join(format!("a3s-image-unpack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let st = ImageStore::open(&tmp.join("state")).unwrap();
        let layers = [
            gz_layer(&[("etc/a", Some("one")), ("etc/b", Some("gone"))]),
            gz_layer(&[("etc/a", Some("two")), ("etc/b", None)]),
        ];
        let mut descs = Vec::new();
        for l in &layers {
            let d = Digest::of(l);
            st.put_blob(&d, l).unwrap();
            descs.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": d.to_string(), "size": l.len(),
            }));
        }
        // The diff IDs are not checked by unpacking; any two distinct digests do.
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [
                Digest::of(b"1").to_string(), Digest::of(b"2").to_string()]},
        }))
        .unwrap();
        let cd = Digest::of(&config);
        st.put_blob(&cd, &config).unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": cd.to_string(), "size": config.len()},
            "layers": descs,
        }))
        .unwrap();
        let name = "127.0.0.1:5000/t/img:1";
        st.add_image(&manifest, &[name.to_string()]).unwrap();

        let out = tmp.join("out/root");
        unpack_image(&st, name, &out)
            .map_err(|e| format!("{e:#}"))
            .unwrap();
        assert_eq!(std::fs::read_to_string(out.join("etc/a")).unwrap(), "two");
        assert!(!out.join("etc/b").exists());

        let err = format!("{:#}", unpack_image(&st, name, &out).unwrap_err());
        assert!(err.contains("not empty"), "{err}");
        let file = tmp.join("file");
        std::fs::write(&file, "x").unwrap();
        let err = format!("{:#}", unpack_image(&st, name, &file).unwrap_err());
        assert!(err.contains("not a directory"), "{err}");
        let err = format!(
            "{:#}",
            unpack_image(&st, "nope:1", &tmp.join("o2")).unwrap_err()
        );
        assert!(err.contains("a3s-box pull nope:1"), "{err}");
        assert!(!tmp.join("o2").exists());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
