//! Front door of the binary: picks the personality from `argv[0]` (or a hidden first
//! argument) and maps errors to Docker's exit codes.

mod attach;
mod exec;
mod install;
mod run;
mod session;
mod shim;

use std::ffi::OsString;
use std::path::Path;

use argh::FromArgs;

/// Exit code when a3s-box itself fails (Docker's convention).
pub const EXIT_FAILURE: i32 = 125;

/// Which program this invocation is.
#[derive(Debug, PartialEq, Eq)]
enum Personality {
    Cli,
    Shim,
    Cri,
    Init,
}

fn personality(argv0: &str, pid: u32) -> Personality {
    let name = Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    match name {
        "a3s-box-shim" => Personality::Shim,
        "a3s-box-cri" => Personality::Cri,
        "init" => Personality::Init,
        _ if pid == 1 => Personality::Init,
        _ => Personality::Cli,
    }
}

/// Runs the personality `args` select and returns the process exit code.
pub fn dispatch(args: Vec<OsString>) -> i32 {
    let args: Vec<String> = match args.into_iter().map(OsString::into_string).collect() {
        Ok(a) => a,
        Err(bad) => {
            eprintln!("a3s-box: argument is not valid UTF-8: {bad:?}");
            return EXIT_FAILURE;
        }
    };
    let argv0 = args.first().cloned().unwrap_or_default();
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match personality(&argv0, std::process::id()) {
        Personality::Shim => shim::main("a3s-box-shim", &rest),
        Personality::Cri => cri_main(),
        Personality::Init => crate::guest::main(),
        // Hidden subcommands reach the other personalities without symlinks.
        Personality::Cli => match rest.first().copied() {
            Some("shim") => shim::main("a3s-box shim", &rest[1..]),
            Some("cri") => cri_main(),
            Some("init") => crate::guest::main(),
            _ => cli_main(&rest),
        },
    }
}

fn cri_main() -> i32 {
    eprintln!("a3s-box-cri: the CRI server is not yet available in this version");
    EXIT_FAILURE
}

/// A3S Box: run every workload in its own MicroVM.
#[derive(FromArgs)]
struct Cli {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Run(run::RunArgs),
    Exec(exec::ExecArgs),
    Attach(attach::AttachArgs),
    Stop(attach::StopArgs),
    Kill(attach::KillArgs),
    Install(install::InstallArgs),
    Initramfs(install::InitramfsArgs),
    Version(VersionArgs),
}

/// Print the version.
#[derive(FromArgs)]
#[argh(subcommand, name = "version")]
struct VersionArgs {}

/// Parses with argh, printing help or the parse error as argh does.
pub(crate) fn parse<T: FromArgs>(name: &str, args: &[&str]) -> Result<T, i32> {
    T::from_args(&[name], args).map_err(|early| match early.status {
        Ok(()) => {
            println!("{}", early.output);
            0
        }
        Err(()) => {
            eprintln!("{}", early.output);
            eprintln!("Run '{name} --help' for more information.");
            EXIT_FAILURE
        }
    })
}

fn cli_main(args: &[&str]) -> i32 {
    let cli: Cli = match parse("a3s-box", args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Exec(a) => exec::exec(a),
        Command::Attach(a) => attach::attach(a),
        Command::Stop(a) => attach::stop(a),
        Command::Kill(a) => attach::kill(a),
        Command::Install(a) => install::install(a).map(|()| 0),
        Command::Initramfs(a) => install::initramfs(a).map(|()| 0),
        Command::Version(_) => {
            println!("a3s-box {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("a3s-box: {e:#}");
            EXIT_FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personality_follows_the_program_name() {
        assert_eq!(personality("/usr/bin/a3s-box", 42), Personality::Cli);
        assert_eq!(personality("a3s-box-shim", 42), Personality::Shim);
        assert_eq!(
            personality("/usr/local/bin/a3s-box-cri", 42),
            Personality::Cri
        );
        assert_eq!(personality("/init", 1), Personality::Init);
        assert_eq!(personality("/sbin/init", 1), Personality::Init);
    }

    #[test]
    fn pid_1_is_always_guest_init() {
        assert_eq!(personality("/a3s-box", 1), Personality::Init);
    }

    #[test]
    fn cri_placeholder_fails_with_125() {
        assert_eq!(dispatch(vec!["a3s-box-cri".into()]), EXIT_FAILURE);
        assert_eq!(dispatch(vec!["a3s-box".into(), "cri".into()]), EXIT_FAILURE);
    }

    #[test]
    fn unknown_subcommand_fails_with_125() {
        assert_eq!(
            dispatch(vec!["a3s-box".into(), "frobnicate".into()]),
            EXIT_FAILURE
        );
    }
}
