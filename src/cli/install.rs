//! `a3s-box install` (personality symlinks) and `a3s-box initramfs` (guest image).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::{bail, Context};
use argh::FromArgs;

/// Create the a3s-box-shim and a3s-box-cri links next to this binary (or in --dir).
#[derive(FromArgs)]
#[argh(subcommand, name = "install")]
pub struct InstallArgs {
    /// directory for the links (default: the directory holding this binary)
    #[argh(option)]
    dir: Option<PathBuf>,
}

pub fn install(a: InstallArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this binary's path")?;
    let dir = match a.dir {
        Some(d) => d,
        None => exe
            .parent()
            .context("this binary has no parent directory")?
            .to_owned(),
    };
    for name in ["a3s-box-shim", "a3s-box-cri"] {
        let link = dir.join(name);
        match std::fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(&link)
                .with_context(|| format!("cannot replace {}", link.display()))?,
            Ok(_) => bail!(
                "{} exists and is not a link; remove it first",
                link.display()
            ),
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&exe, &link)
            .with_context(|| format!("cannot create {}", link.display()))?;
        println!("{} -> {}", link.display(), exe.display());
    }
    Ok(())
}

/// Write a guest initramfs: this binary as /init, plus any --add files.
#[derive(FromArgs)]
#[argh(subcommand, name = "initramfs")]
pub struct InitramfsArgs {
    /// where to write the uncompressed cpio archive
    #[argh(option, short = 'o')]
    output: PathBuf,
    /// extra file as HOST_PATH:GUEST_PATH (repeatable), e.g. /bin/busybox:/bin/busybox
    #[argh(option)]
    add: Vec<String>,
}

pub fn initramfs(a: InitramfsArgs) -> anyhow::Result<()> {
    let mut extra = Vec::new();
    for spec in &a.add {
        let Some((host, guest)) = spec.split_once(':') else {
            bail!("--add {spec}: expected HOST_PATH:GUEST_PATH");
        };
        let data = std::fs::read(host).with_context(|| format!("cannot read {host}"))?;
        let mode = std::fs::metadata(host)?.permissions().mode() & 0o7777;
        extra.push((guest.trim_start_matches('/').to_string(), data, mode));
    }
    let image = super::shim::own_initramfs(&extra)?;
    let tmp = a.output.with_extension("tmp");
    std::fs::write(&tmp, &image).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &a.output)
        .with_context(|| format!("cannot write {}", a.output.display()))?;
    Ok(())
}
