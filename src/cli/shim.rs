//! `a3s-box-shim`: the per-box VMM process. It boots the guest kernel with our
//! initramfs (or the one given), and exits with the workload's exit status.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use argh::FromArgs;

use super::EXIT_FAILURE;
use crate::vmm::memory::parse_size;
use crate::vmm::vm::{self, VmConfig, VmExit, BASE_CMDLINE};

/// Boot a MicroVM and run CMD in it as the guest's workload.
#[derive(FromArgs)]
struct ShimArgs {
    /// guest kernel (ELF vmlinux or bzImage); default: $A3S_BOX_KERNEL, else the
    /// kernel built by scripts/build-kernel
    #[argh(option)]
    kernel: Option<PathBuf>,
    /// initramfs to use instead of the built-in one (this binary as /init)
    #[argh(option)]
    initrd: Option<PathBuf>,
    /// number of vCPUs (default 1)
    #[argh(option, default = "1")]
    cpus: u32,
    /// guest memory, e.g. 128m, 1g (default 128m)
    #[argh(option, default = "String::from(\"128m\")")]
    memory: String,
    /// write the guest console to this file instead of stdout
    #[argh(option)]
    console: Option<PathBuf>,
    /// extra kernel command-line arguments
    #[argh(option)]
    cmdline: Option<String>,
    /// run the box recorded under this ID (the mode `a3s-box run` starts)
    #[argh(option, long = "box")]
    box_id: Option<String>,
    /// with --box: this start is a restart by the box's policy, which waited
    /// this many milliseconds before it
    #[argh(option, default = "0")]
    restart_delay_ms: u64,
    /// with --box: start the main process only once a client attached
    #[argh(switch)]
    wait_attach: bool,
    /// with --box: write one byte to this inherited file descriptor once the box
    /// has started (or, with --wait-attach, can be attached to), then close it
    #[argh(option)]
    ready_fd: Option<i32>,
    /// the workload and its arguments
    #[argh(positional, greedy)]
    command: Vec<String>,
}

/// This binary as the guest's `/init`, plus `extra` files.
pub fn own_initramfs(extra: &[(String, Vec<u8>, u32)]) -> anyhow::Result<Vec<u8>> {
    crate::initramfs::of_this_binary(extra).context("cannot build the initramfs")
}

fn build_config(a: ShimArgs) -> anyhow::Result<VmConfig> {
    let memory = parse_size(&a.memory)
        .with_context(|| format!("--memory {}: expected a size such as 128m or 1g", a.memory))?;
    let initrd = match &a.initrd {
        Some(p) => {
            std::fs::read(p).with_context(|| format!("cannot read initrd {}", p.display()))?
        }
        None => own_initramfs(&[])?,
    };
    let mut cmdline = BASE_CMDLINE.to_string();
    if let Some(extra) = &a.cmdline {
        cmdline.push(' ');
        cmdline.push_str(extra);
    }
    let init_args = if a.command.is_empty() {
        None
    } else {
        Some(
            crate::proto::encode_argv(&a.command)
                .context("cannot pass the command to the guest")?,
        )
    };
    let console: Box<dyn Write + Send> = match &a.console {
        Some(p) => Box::new(
            std::fs::File::create(p)
                .with_context(|| format!("cannot create console file {}", p.display()))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    Ok(VmConfig {
        kernel: crate::paths::kernel(a.kernel.as_deref()),
        initrd: Some(initrd),
        cmdline,
        init_args,
        cpus: a.cpus,
        memory,
        console,
        devices: Vec::new(),
    })
}

pub fn main(name: &str, args: &[&str]) -> i32 {
    let a: ShimArgs = match super::parse(name, args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if let Some(id) = &a.box_id {
        return match crate::runtime::Store::open(&crate::paths::state_dir()) {
            Ok(store) => {
                if let Some(fd) = a.ready_fd {
                    crate::runtime::shim::take_ready_fd(fd);
                }
                crate::runtime::shim::serve(&store, id, a.wait_attach, a.restart_delay_ms)
            }
            Err(e) => {
                eprintln!("{name}: {e}");
                EXIT_FAILURE
            }
        };
    }
    let outcome = build_config(a).and_then(|cfg| vm::run(cfg).map_err(anyhow::Error::from));
    match outcome {
        Ok(VmExit::Status(code)) => i32::from(code),
        Ok(VmExit::Reset) => {
            eprintln!(
                "{name}: the guest stopped without reporting an exit status \
                 (kernel panic or reboot); see the console output"
            );
            EXIT_FAILURE
        }
        Err(e) => {
            eprintln!("{name}: {e:#}");
            EXIT_FAILURE
        }
    }
}
