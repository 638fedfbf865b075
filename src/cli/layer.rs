//! `diff`, `export`, `cp` and `commit`: a box's files, as Docker's.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use argh::FromArgs;

use crate::boxfs::archive::Owners;
use crate::boxfs::copy;
use crate::oci::commit::{CommitRequest, RunConfig};
use crate::oci::digest::Digest;
use crate::oci::reference::Reference;
use crate::oci::store::{self, ImageStore};
use crate::runtime::files::with_box_files;
use crate::runtime::layer::LayerTree;
use crate::runtime::{BoxConfig, Store};

/// Inspect changes to files on a box's file system.
#[derive(FromArgs)]
#[argh(subcommand, name = "diff")]
pub struct DiffArgs {
    /// the box
    #[argh(positional)]
    name: String,
}

/// Export a box's file system as a tar archive.
#[derive(FromArgs)]
#[argh(subcommand, name = "export")]
pub struct ExportArgs {
    /// write to this file instead of standard output
    #[argh(option, short = 'o')]
    output: Option<String>,
    /// the box
    #[argh(positional)]
    name: String,
}

/// Copy files and directories between a box and the local file system:
/// `cp BOX:SRC DEST`, `cp SRC BOX:DEST`; `-` is a tar stream on stdin/stdout.
#[derive(FromArgs)]
#[argh(subcommand, name = "cp")]
pub struct CpArgs {
    /// archive mode: keep the source's owners (copying into a box)
    #[argh(switch, short = 'a')]
    archive: bool,
    /// always follow a symbolic link in SRC
    #[argh(switch, short = 'L')]
    follow_link: bool,
    /// source, then destination
    #[argh(positional, greedy)]
    paths: Vec<String>,
}

/// Create a new image from a box's changes.
#[derive(FromArgs)]
#[argh(subcommand, name = "commit")]
pub struct CommitArgs {
    /// commit message
    #[argh(option, short = 'm')]
    message: Option<String>,
    /// author (e.g. "Jane Doe <jane@example.com>")
    #[argh(option, short = 'a')]
    author: Option<String>,
    /// apply a Dockerfile instruction to the image (CMD, ENTRYPOINT, ENV, EXPOSE,
    /// LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR; repeatable)
    #[argh(option, short = 'c')]
    change: Vec<String>,
    /// the box, then the new image's name
    #[argh(positional)]
    name: String,
    #[argh(positional)]
    image: Option<String>,
}

fn open_box(name: &str) -> Result<(Store, BoxConfig)> {
    let store = Store::open(&crate::paths::state_dir())?;
    let id = store.resolve(name)?;
    let cfg = store.config(&id)?;
    Ok((store, cfg))
}

pub fn diff(a: DiffArgs) -> Result<i32> {
    let (_, cfg) = open_box(&a.name)?;
    let mut out = std::io::stdout().lock();
    for c in crate::runtime::layer::changes(&cfg)? {
        writeln!(out, "{} {}", c.kind.letter(), c.path)?;
    }
    Ok(0)
}

pub fn export(a: ExportArgs) -> Result<i32> {
    let (_, cfg) = open_box(&a.name)?;
    let tree = LayerTree::of(&cfg)?;
    match &a.output {
        None => {
            if std::io::stdout().is_terminal() {
                bail!("cowardly refusing to save to a terminal: use the -o flag or redirect");
            }
            let out = std::io::BufWriter::new(std::io::stdout().lock());
            crate::boxfs::archive::write(&tree, Path::new(""), "", false, out)?;
        }
        Some(path) => {
            // Written aside and renamed: a failed export leaves no half file.
            let path = Path::new(path);
            let tmp = path.with_file_name(format!(
                ".{}.tmp{}",
                path.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("export"),
                std::process::id()
            ));
            let file = std::fs::File::create(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            let written = crate::boxfs::archive::write(
                &tree,
                Path::new(""),
                "",
                false,
                std::io::BufWriter::new(&file),
            )
            .map_err(anyhow::Error::from)
            .and_then(|()| Ok(file.sync_all()?))
            .and_then(|()| Ok(std::fs::rename(&tmp, path)?));
            if written.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            written.with_context(|| format!("cannot export to {}", path.display()))?;
        }
    }
    Ok(0)
}

/// `cp`'s arguments for argh: `-aL` split, and `--` before the paths, so
/// that `-` (standard input or output) is taken as a path.
pub(super) fn cp_args(args: &[&str]) -> Vec<String> {
    let mut out = vec![args[0].to_string()];
    let mut rest = args[1..].iter();
    for a in rest.by_ref() {
        match *a {
            "--" => break,
            "-" => {
                out.extend(["--".to_string(), "-".to_string()]);
                break;
            }
            s if s.starts_with("--") => out.push(s.to_string()),
            s if s.starts_with('-') => out.extend(s[1..].chars().map(|c| format!("-{c}"))),
            s => {
                out.extend(["--".to_string(), s.to_string()]);
                break;
            }
        }
    }
    if !out.iter().any(|a| a == "--") {
        out.push("--".into());
    }
    out.extend(rest.map(|a| a.to_string()));
    out
}

/// Docker's `splitCpArg`: `BOX:PATH`, or a local path (absolute, starting
/// with `.`, or without a `:`).
fn split_cp_arg(arg: &str) -> (Option<&str>, &str) {
    if arg.starts_with('/') {
        return (None, arg);
    }
    match arg.split_once(':') {
        Some((b, p)) if !b.is_empty() && !b.starts_with('.') => (Some(b), p),
        _ => (None, arg),
    }
}

pub fn cp(a: CpArgs) -> Result<i32> {
    let [src, dst] = a.paths.as_slice() else {
        bail!("cp needs a source and a destination: cp BOX:SRC DEST or cp SRC BOX:DEST");
    };
    let store = Store::open(&crate::paths::state_dir())?;
    match (split_cp_arg(src), split_cp_arg(dst)) {
        ((Some(_), _), (Some(_), _)) => bail!("copying between boxes is not supported"),
        ((None, _), (None, _)) => {
            bail!("one of SRC and DEST must be a box path: BOX:PATH")
        }
        ((Some(name), path), (None, _)) => {
            let id = store.resolve(name)?;
            let mut out = std::io::stdout().lock();
            with_box_files(&store, &id, false, |files| {
                copy::copy_from_box(files, path, dst, a.follow_link, &mut out)
            })?;
        }
        ((None, _), (Some(name), path)) => {
            let id = store.resolve(name)?;
            let owners = if a.archive {
                Owners::Archive
            } else {
                Owners::Fixed(0, 0)
            };
            let mut input = std::io::stdin().lock();
            with_box_files(&store, &id, true, |files| {
                copy::copy_to_box(files, src, path, dst, a.follow_link, owners, &mut input)
            })?;
        }
    }
    Ok(0)
}

/// How a box of the committed image runs: as the box did (Docker commits the
/// container's configuration, not the image's).
fn run_config(images: &ImageStore, cfg: &BoxConfig) -> Result<RunConfig> {
    let id = cfg.image.as_deref().unwrap_or_default();
    let base = Digest::parse(id)
        .ok()
        .and_then(|d| images.config(&d).ok())
        .map(|c| c.config)
        .unwrap_or_default();
    let (entrypoint, cmd) = if !base.entrypoint.is_empty() && cfg.argv.starts_with(&base.entrypoint)
    {
        (
            base.entrypoint.clone(),
            cfg.argv[base.entrypoint.len()..].to_vec(),
        )
    } else {
        (Vec::new(), cfg.argv.clone())
    };
    let image_has_term = base.env.iter().any(|e| e.starts_with("TERM="));
    let env = cfg
        .env
        .iter()
        // `run -t` adds TERM for the box's terminal, not for the image.
        .filter(|(k, _)| !(cfg.tty && k == "TERM" && !image_has_term))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let working_dir = if cfg.workdir == "/" && base.working_dir.is_empty() {
        String::new()
    } else {
        cfg.workdir.clone()
    };
    Ok(RunConfig {
        entrypoint,
        cmd,
        env,
        working_dir,
        user: cfg.user.clone().unwrap_or_default(),
        labels: cfg.labels.clone(),
    })
}

pub fn commit(a: CommitArgs) -> Result<i32> {
    let (_, cfg) = open_box(&a.name)?;
    let tree = LayerTree::of(&cfg)?;
    let images = ImageStore::open(&crate::paths::state_dir())?;
    let tags = match &a.image {
        Some(name) => {
            let r = Reference::parse(name)?;
            if r.digest.is_some() {
                bail!("commit {name}: give a tag, not a digest");
            }
            vec![store::full_name(&r)]
        }
        None => Vec::new(),
    };
    let Some(base) = cfg.image.clone() else {
        bail!("box {} has no image to commit onto", cfg.name);
    };
    let req = CommitRequest {
        base,
        run: run_config(&images, &cfg)?,
        changes: a.change.clone(),
        message: a.message.clone(),
        author: a.author.clone(),
        created_by: cfg.argv.join(" "),
        container: cfg.id.clone(),
    };
    let id = crate::oci::commit::commit(
        &images,
        &req,
        &mut |w| tree.write_layer(w).map_err(std::io::Error::other),
        &tags,
    )?;
    println!("{id}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dash_is_a_cp_path_and_switches_may_be_grouped() {
        assert_eq!(
            cp_args(&["cp", "-aL", "-", "b:/x"]),
            ["cp", "-a", "-L", "--", "-", "b:/x"]
        );
        assert_eq!(cp_args(&["cp", "b:/x", "-"]), ["cp", "--", "b:/x", "-"]);
        assert_eq!(
            cp_args(&["cp", "--archive", "--", "-a", "b:/"]),
            ["cp", "--archive", "--", "-a", "b:/"]
        );
    }

    #[test]
    fn cp_arguments_split_as_dockers() {
        assert_eq!(split_cp_arg("web:/etc"), (Some("web"), "/etc"));
        assert_eq!(split_cp_arg("web:rel"), (Some("web"), "rel"));
        assert_eq!(split_cp_arg("/abs:x"), (None, "/abs:x"));
        assert_eq!(split_cp_arg("./f:x"), (None, "./f:x"));
        assert_eq!(split_cp_arg("plain"), (None, "plain"));
        assert_eq!(split_cp_arg("-"), (None, "-"));
    }
}
