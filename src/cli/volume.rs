//! `volume create/ls/inspect/rm/prune`: volumes of the `local` driver, with
//! Docker's flags, output, messages and exit codes.

use std::collections::BTreeMap;

use anyhow::bail;
use argh::FromArgs;
use serde_json::{json, Value};

use crate::runtime::{BoxConfig, Store};
use crate::volume::filter::Filters;
use crate::volume::{self, Volume, VolumeError, Volumes};

/// manage volumes
#[derive(FromArgs)]
#[argh(subcommand, name = "volume")]
pub struct VolumeArgs {
    #[argh(subcommand)]
    command: VolumeCommand,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum VolumeCommand {
    Create(CreateArgs),
    Ls(LsArgs),
    Inspect(InspectArgs),
    Rm(RmArgs),
    Prune(PruneArgs),
}

/// create a volume
#[derive(FromArgs)]
#[argh(subcommand, name = "create")]
struct CreateArgs {
    /// driver: local (the only one)
    #[argh(option, short = 'd', default = "String::from(\"local\")")]
    driver: String,
    /// a label KEY=VALUE (repeatable)
    #[argh(option)]
    label: Vec<String>,
    /// a driver option KEY=VALUE (repeatable): type=none,o=bind,device=DIR
    #[argh(option, short = 'o')]
    opt: Vec<String>,
    /// the volume's name (default: a random one)
    #[argh(positional)]
    name: Option<String>,
}

/// list volumes
#[derive(FromArgs)]
#[argh(subcommand, name = "ls")]
struct LsArgs {
    /// only the names
    #[argh(switch, short = 'q')]
    quiet: bool,
    /// filter: dangling=true|false, label=KEY[=VALUE], name=SUBSTRING, driver=local
    #[argh(option, short = 'f')]
    filter: Vec<String>,
    /// a Go template for each volume, table TEMPLATE, or json
    #[argh(option)]
    format: Option<String>,
}

/// show volumes in detail
#[derive(FromArgs)]
#[argh(subcommand, name = "inspect")]
struct InspectArgs {
    /// a Go template for each volume
    #[argh(option, short = 'f')]
    format: Option<String>,
    /// volumes
    #[argh(positional, greedy)]
    volumes: Vec<String>,
}

/// remove volumes
#[derive(FromArgs)]
#[argh(subcommand, name = "rm")]
struct RmArgs {
    /// no error for volumes that do not exist
    #[argh(switch, short = 'f')]
    force: bool,
    /// volumes
    #[argh(positional, greedy)]
    volumes: Vec<String>,
}

/// remove volumes no box uses (anonymous ones unless -a)
#[derive(FromArgs)]
#[argh(subcommand, name = "prune")]
struct PruneArgs {
    /// named volumes too
    #[argh(switch, short = 'a')]
    all: bool,
    /// do not ask
    #[argh(switch, short = 'f')]
    force: bool,
    /// filter: label=KEY[=VALUE], label!=KEY[=VALUE]
    #[argh(option)]
    filter: Vec<String>,
}

/// Splits grouped switches after `volume ls|rm|prune` (`-af`, `-qf` is not
/// one: `-f` of `ls` takes a value).
pub fn expand_args(args: &[&str]) -> Vec<String> {
    let switches = match args.get(1).copied() {
        Some("prune") => "af",
        Some("rm") => "f",
        _ => "",
    };
    args.iter()
        .map(|a| a.to_string())
        .flat_map(|a| {
            let grouped = !switches.is_empty()
                && a.len() > 2
                && a.starts_with('-')
                && !a.starts_with("--")
                && a[1..].chars().all(|c| switches.contains(c));
            if grouped {
                a[1..].chars().map(|c| format!("-{c}")).collect()
            } else {
                vec![a]
            }
        })
        .collect()
}

fn open() -> anyhow::Result<(Store, Volumes)> {
    let state = crate::paths::state_dir();
    Ok((Store::open(&state)?, Volumes::open(&state)?))
}

fn configs(store: &Store) -> anyhow::Result<Vec<BoxConfig>> {
    Ok(store.list()?.into_iter().map(|(c, _)| c).collect())
}

pub fn main(a: VolumeArgs) -> anyhow::Result<i32> {
    match a.command {
        VolumeCommand::Create(a) => create(a),
        VolumeCommand::Ls(a) => ls(a),
        VolumeCommand::Inspect(a) => inspect(a),
        VolumeCommand::Rm(a) => rm(a),
        VolumeCommand::Prune(a) => prune(a),
    }
}

fn key_values(flags: &[String]) -> BTreeMap<String, String> {
    flags
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn create(a: CreateArgs) -> anyhow::Result<i32> {
    if a.driver != "local" {
        bail!(
            "create {}: error looking up volume plugin {}: plugin {:?} not found",
            a.name.as_deref().unwrap_or_default(),
            a.driver,
            a.driver
        );
    }
    let (_, vols) = open()?;
    let lock = vols.lock()?;
    let (v, _) = vols.create(
        &lock,
        a.name.as_deref(),
        key_values(&a.label),
        key_values(&a.opt),
    )?;
    println!("{}", v.name);
    Ok(0)
}

/// One volume as `ls` templates see it (Docker's field names).
fn ls_item(vols: &Volumes, v: &Volume) -> Value {
    let labels: Vec<String> = v.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    json!({
        "Name": v.name,
        "Driver": "local",
        "Scope": "local",
        "Mountpoint": vols.mountpoint(&v.name),
        "Labels": labels.join(","),
        "Links": "N/A",
        "Size": "N/A",
        "CreatedAt": volume::created_at(v),
    })
}

const LS_HEADERS: &[(&str, &str)] = &[
    ("Name", "VOLUME NAME"),
    ("Driver", "DRIVER"),
    ("Scope", "SCOPE"),
    ("Mountpoint", "MOUNTPOINT"),
    ("Labels", "LABELS"),
    ("Links", "LINKS"),
    ("Size", "SIZE"),
    ("CreatedAt", "CREATED"),
];

fn ls(a: LsArgs) -> anyhow::Result<i32> {
    let filters = Filters::parse_ls(&a.filter)?;
    let format = match (a.quiet, a.format.as_deref()) {
        (true, _) => None,
        (false, f) => Some(super::template::parse_format_or(
            f.unwrap_or(""),
            "{{.Driver}}\t{{.Name}}",
        )?),
    };
    let (store, vols) = open()?;
    let boxes = configs(&store)?;
    let listed: Vec<Volume> = vols
        .list()?
        .into_iter()
        .filter(|v| filters.matches(v, !volume::users(&v.name, &boxes).is_empty()))
        .collect();
    match format {
        None => {
            for v in &listed {
                println!("{}", v.name);
            }
        }
        Some(f) => {
            let items: Vec<Value> = listed.iter().map(|v| ls_item(&vols, v)).collect();
            print!("{}", f.render(&items, LS_HEADERS)?);
        }
    }
    Ok(0)
}

fn inspect(a: InspectArgs) -> anyhow::Result<i32> {
    if a.volumes.is_empty() {
        bail!("volume inspect needs at least one volume");
    }
    let template = a
        .format
        .as_deref()
        .map(super::template::Template::parse)
        .transpose()?;
    let (_, vols) = open()?;
    let mut out = Vec::new();
    let mut failed = false;
    for name in &a.volumes {
        match vols.get(name) {
            Ok(v) => out.push(volume::inspect_volume(&vols, &v)),
            Err(e) => {
                eprintln!("a3s-box: {e}");
                failed = true;
            }
        }
    }
    super::boxes::print_inspected(&out, template.as_ref())?;
    Ok(i32::from(failed))
}

fn rm(a: RmArgs) -> anyhow::Result<i32> {
    if a.volumes.is_empty() {
        bail!("volume rm needs at least one volume");
    }
    let (store, vols) = open()?;
    let mut failed = false;
    for name in &a.volumes {
        // The boxes are read under the lock: none is made meanwhile with this volume.
        let lock = vols.lock()?;
        let boxes = configs(&store)?;
        match vols.remove(&lock, name, &boxes) {
            Ok(()) => println!("{name}"),
            Err(VolumeError::NoSuch(_)) if a.force => println!("{name}"),
            Err(e) => {
                eprintln!("a3s-box: {e}");
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

/// Asks before a prune, as Docker does; refuses to guess without a terminal.
fn confirm(all: bool) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        bail!("volume prune asks before it removes anything, and stdin is not a terminal: use -f");
    }
    if all {
        println!("WARNING! This will remove all local volumes not used by at least one box.");
    } else {
        println!("WARNING! This will remove anonymous local volumes not used by at least one box.");
    }
    print!("Are you sure you want to continue? [y/N] ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "Yes"))
}

/// Removes the unused volumes `all` and `filters` select; returns their
/// names and the bytes freed (also for `system prune --volumes`).
pub(crate) fn prune_unused(
    store: &Store,
    all: bool,
    filters: &Filters,
) -> anyhow::Result<(Vec<String>, u64)> {
    let vols = Volumes::open(store.root())?;
    let boxes = configs(store)?;
    let removed = volume::prune(&vols, &boxes, |v| {
        (all || v.is_anonymous()) && filters.matches(v, false)
    })?;
    let freed = removed.iter().map(|(_, n)| n).sum();
    Ok((removed.into_iter().map(|(n, _)| n).collect(), freed))
}

fn prune(a: PruneArgs) -> anyhow::Result<i32> {
    let filters = Filters::parse_prune(&a.filter)?;
    if !a.force && !confirm(a.all)? {
        return Ok(0);
    }
    let (store, _) = open()?;
    let (names, freed) = prune_unused(&store, a.all, &filters)?;
    if !names.is_empty() {
        println!("Deleted Volumes:");
        for n in &names {
            println!("{n}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", super::image::human_size(freed));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouped_prune_switches_are_split() {
        assert_eq!(
            expand_args(&["volume", "prune", "-af"]),
            ["volume", "prune", "-a", "-f"]
        );
        assert_eq!(
            expand_args(&["volume", "ls", "-qf"]),
            ["volume", "ls", "-qf"]
        );
    }

    #[test]
    fn ls_items_carry_dockers_fields() {
        let t = crate::testing::TempDir::new("cli-vol-ls");
        let vols = Volumes::open(t.path()).unwrap();
        let v = Volume {
            name: "data".into(),
            created: 0,
            labels: BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]),
            options: BTreeMap::new(),
        };
        let item = ls_item(&vols, &v);
        assert_eq!(item["Labels"], "a=1,b=2");
        assert_eq!(item["Driver"], "local");
        assert_eq!(item["CreatedAt"], "1970-01-01T00:00:00Z");
        let f = super::super::template::parse_format_or("", "{{.Driver}}\t{{.Name}}").unwrap();
        assert_eq!(
            f.render(&[item], LS_HEADERS).unwrap(),
            "DRIVER    VOLUME NAME\nlocal     data\n"
        );
    }
}
