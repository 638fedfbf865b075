//! Front door of the binary: picks the personality from `argv[0]` (or a hidden first
//! argument) and maps errors to Docker's exit codes.

mod attach;
mod boxes;
mod events;
mod exec;
mod image;
mod install;
mod layer;
mod logs;
mod network;
mod run;
mod session;
mod shim;
mod stats;
mod system;
pub mod template;
mod volume;

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
    /// `--init`'s reaper, PID 1 of a box's namespace (so before the pid check).
    Reaper,
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
        #[cfg(target_os = "linux")]
        crate::guest::reaper::REAPER_NAME => Personality::Reaper,
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
        #[cfg(target_os = "linux")]
        Personality::Reaper => crate::guest::reaper::main(&rest),
        #[cfg(not(target_os = "linux"))]
        Personality::Reaper => EXIT_FAILURE,
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
    Create(boxes::CreateArgs),
    Start(boxes::StartArgs),
    Restart(boxes::RestartArgs),
    Rm(boxes::RmArgs),
    Rename(boxes::RenameArgs),
    Port(boxes::PortArgs),
    Wait(boxes::WaitArgs),
    Monitor(boxes::MonitorArgs),
    Ps(image::Eq<boxes::PsArgs>),
    Inspect(image::Eq<boxes::InspectArgs>),
    Exec(exec::ExecArgs),
    Attach(attach::AttachArgs),
    Stop(attach::StopArgs),
    Kill(attach::KillArgs),
    Install(install::InstallArgs),
    Initramfs(install::InitramfsArgs),
    Version(system::VersionArgs),
    Info(system::InfoArgs),
    Events(events::EventsArgs),
    SystemPrune(system::PruneArgs),
    ContainerUpdate(system::UpdateArgs),
    Pull(image::Eq<image::PullArgs>),
    Images(image::ImagesArgs),
    Rmi(image::RmiArgs),
    Tag(image::TagArgs),
    ImageInspect(image::InspectArgs),
    ImagePrune(image::PruneArgs),
    ImageUnpack(image::UnpackArgs),
    Login(image::Eq<image::LoginArgs>),
    Logout(image::LogoutArgs),
    Push(image::Eq<image::PushArgs>),
    Save(image::Eq<image::SaveArgs>),
    Load(image::Eq<image::LoadArgs>),
    Logs(image::Eq<logs::LogsArgs>),
    Diff(layer::DiffArgs),
    Export(layer::ExportArgs),
    Cp(layer::CpArgs),
    Commit(layer::CommitArgs),
    Stats(image::Eq<stats::StatsArgs>),
    Top(stats::TopArgs),
    Pause(stats::PauseArgs),
    Unpause(stats::UnpauseArgs),
    Network(network::NetworkArgs),
    Volume(volume::VolumeArgs),
}

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

/// Splits Docker-style grouped switches (`-it`, `-dit`) into single ones, which argh
/// does not accept, up to the first positional argument: what follows that belongs
/// to the workload (`sh -ec …` must reach it untouched).
fn expand_grouped_switches(args: &[&str]) -> Vec<String> {
    let (switches, valued): (&str, &[&str]) = match args.first() {
        Some(&"run" | &"create") => (
            "dit",
            &[
                "--name",
                "-e",
                "--env",
                "--env-file",
                "-w",
                "--workdir",
                "-u",
                "--user",
                "--entrypoint",
                "--cpus",
                "-m",
                "--memory",
                "-h",
                "--hostname",
                "--rootfs",
                "--kernel",
                "-l",
                "--label",
                "--label-file",
                "--log-driver",
                "--log-opt",
                "--restart",
                "--health-cmd",
                "--health-interval",
                "--health-timeout",
                "--health-retries",
                "--health-start-period",
                "--network",
                "-p",
                "--dns",
                "--dns-search",
                "--add-host",
                "--ip",
                "--network-alias",
                "--mac-address",
                "-v",
                "--volume",
                "--mount",
                "--tmpfs",
                "--volumes-from",
            ],
        ),
        Some(&"cp") => return layer::cp_args(args),
        Some(&"start") => ("ai", &[]),
        Some(&"ps") => ("aqls", &["-n", "-f", "--filter", "--format"]),
        Some(&"rm") => ("fv", &[]),
        Some(&"system-prune") => ("af", &[]),
        Some(&"volume") => return volume::expand_args(args),
        Some(&"logs") => ("ft", &["--tail", "--since", "--until"]),
        Some(&"exec") => ("it", &["-u", "--user", "-e", "--env", "-w", "--workdir"]),
        _ => return args.iter().map(|a| a.to_string()).collect(),
    };
    let mut out = vec![args[0].to_string()];
    let mut i = 1;
    while i < args.len() {
        let a = args[i];
        if a == "--" || !a.starts_with('-') {
            out.extend(args[i..].iter().map(|a| a.to_string()));
            break;
        }
        if valued.contains(&a) {
            out.push(a.to_string());
            if let Some(v) = args.get(i + 1) {
                out.push(v.to_string());
            }
            i += 2;
            continue;
        }
        let grouped =
            !a.starts_with("--") && a.len() > 2 && a[1..].chars().all(|c| switches.contains(c));
        if grouped {
            out.extend(a[1..].chars().map(|c| format!("-{c}")));
        } else {
            out.push(a.to_string());
        }
        i += 1;
    }
    out
}

fn cli_main(args: &[&str]) -> i32 {
    let expanded = expand_grouped_switches(args);
    let args: Vec<&str> = expanded.iter().map(String::as_str).collect();
    let cli: Cli = match parse("a3s-box", &args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Docker's commands that manage existing boxes fail with 1; those that
    // make one (run, create), and a3s-box's own failures elsewhere, with 125.
    // (A command run by `exec` that cannot start is 126 or 127, from the guest.)
    let failure = match cli.command {
        Command::Exec(_)
        | Command::Attach(_)
        | Command::Logs(_)
        | Command::Start(_)
        | Command::Restart(_)
        | Command::Rm(_)
        | Command::Rename(_)
        | Command::Port(_)
        | Command::Wait(_)
        | Command::Ps(_)
        | Command::Inspect(_)
        | Command::Stop(_)
        | Command::Kill(_)
        | Command::Diff(_)
        | Command::Export(_)
        | Command::Cp(_)
        | Command::Commit(_)
        | Command::Stats(_)
        | Command::Top(_)
        | Command::Pause(_)
        | Command::Unpause(_)
        | Command::Events(_)
        | Command::SystemPrune(_)
        | Command::ContainerUpdate(_)
        | Command::Network(_)
        | Command::Volume(_) => 1,
        _ => EXIT_FAILURE,
    };
    let result = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Create(a) => boxes::create(a),
        Command::Start(a) => boxes::start(a),
        Command::Restart(a) => boxes::restart(a),
        Command::Rm(a) => boxes::rm(a),
        Command::Rename(a) => boxes::rename(a),
        Command::Port(a) => boxes::port(a),
        Command::Wait(a) => boxes::wait(a),
        Command::Monitor(a) => boxes::monitor(a),
        Command::Ps(a) => boxes::ps(a.0),
        Command::Inspect(a) => boxes::inspect(a.0),
        Command::Exec(a) => exec::exec(a),
        Command::Attach(a) => attach::attach(a),
        Command::Stop(a) => attach::stop(a),
        Command::Kill(a) => attach::kill(a),
        Command::Install(a) => install::install(a).map(|()| 0),
        Command::Initramfs(a) => install::initramfs(a).map(|()| 0),
        Command::Pull(a) => image::pull(a),
        Command::Images(a) => image::images(a),
        Command::Rmi(a) => image::rmi(a),
        Command::Tag(a) => image::tag(a),
        Command::ImageInspect(a) => image::inspect(a),
        Command::ImagePrune(a) => image::prune(a),
        Command::ImageUnpack(a) => image::unpack(a),
        Command::Login(a) => image::login(a),
        Command::Logout(a) => image::logout(a),
        Command::Push(a) => image::push(a),
        Command::Save(a) => image::save(a),
        Command::Load(a) => image::load(a),
        Command::Logs(a) => logs::logs(a),
        Command::Diff(a) => layer::diff(a),
        Command::Network(a) => network::main(a),
        Command::Volume(a) => volume::main(a),
        Command::Export(a) => layer::export(a),
        Command::Cp(a) => layer::cp(a),
        Command::Commit(a) => layer::commit(a),
        Command::Stats(a) => stats::stats(a.0),
        Command::Top(a) => stats::top(a),
        Command::Pause(a) => stats::pause(a),
        Command::Unpause(a) => stats::unpause(a),
        Command::Version(a) => system::version(a),
        Command::Info(a) => system::info(a),
        Command::Events(a) => events::events(a),
        Command::SystemPrune(a) => system::prune(a),
        Command::ContainerUpdate(a) => system::update(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("a3s-box: {e:#}");
            failure
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
        // --init's reaper is PID 1 of the box's namespace, yet not init.
        assert_eq!(personality("a3s-box-init", 1), Personality::Reaper);
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

    fn expand(args: &[&str]) -> Vec<String> {
        expand_grouped_switches(args)
    }

    #[test]
    fn grouped_switches_are_split_before_the_command_only() {
        assert_eq!(
            expand(&["run", "-it", "--rootfs", "/r", "sh", "-ec", "true"]),
            ["run", "-i", "-t", "--rootfs", "/r", "sh", "-ec", "true"]
        );
        assert_eq!(
            expand(&["run", "-dit", "--name", "-it", "x"]),
            ["run", "-d", "-i", "-t", "--name", "-it", "x"]
        );
        assert_eq!(
            expand(&["exec", "-it", "box", "ls", "-it"]),
            ["exec", "-i", "-t", "box", "ls", "-it"]
        );
        // Unknown letters are left for argh to refuse.
        assert_eq!(expand(&["run", "-ix", "r"]), ["run", "-ix", "r"]);
        assert_eq!(expand(&["stop", "-it"]), ["stop", "-it"]);
    }

    #[test]
    fn unknown_subcommand_fails_with_125() {
        assert_eq!(
            dispatch(vec!["a3s-box".into(), "frobnicate".into()]),
            EXIT_FAILURE
        );
    }
}
