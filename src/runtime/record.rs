//! What is stored about a box: its configuration (written once by the CLI) and its
//! state (written by the shim as the box runs and ends).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How a box was asked to run. Written once, when the box is created.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BoxConfig {
    pub id: String,
    pub name: String,
    /// Root directory served to the guest over virtio-fs: the user's own
    /// directory, or an image's unpacked tree, shared read-only by every box
    /// of that image under the box's own `layer`.
    pub rootfs: String,
    /// The box's writable layer (its `upper/` and `work/` directories) over
    /// `rootfs`, when the root is an image's.
    #[serde(default)]
    pub layer: Option<String>,
    /// The image the root came from (its ID), when it came from one.
    #[serde(default)]
    pub image: Option<String>,
    /// The image as the user named it (`busybox`, `reg:5000/app:1`).
    #[serde(default)]
    pub image_name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What happens when the main process ends (`--restart`).
    #[serde(default)]
    pub restart: RestartPolicy,
    /// The command that tells whether the box is healthy, if any.
    #[serde(default)]
    pub health: Option<HealthCheck>,
    /// Entrypoint followed by the command.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: String,
    pub user: Option<String>,
    pub hostname: String,
    pub tty: bool,
    pub stdin: bool,
    pub cpus: u32,
    pub memory: u64,
    pub kernel: String,
    pub auto_remove: bool,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// How the box reaches the network. Records from before boxes had one
    /// read as `none`.
    #[serde(default)]
    pub network: NetworkConfig,
    /// Volumes, binds and tmpfs, in the order the guest mounts them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<crate::volume::Mount>,
    /// Capabilities, read-only root, init, groups, sysctls. Records from
    /// before boxes had them read as Docker's defaults.
    #[serde(default)]
    pub security: crate::runtime::security::SecurityConfig,
}

/// `--network`, `-p`, `--dns`, `--dns-search`, `--add-host`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkConfig {
    pub mode: NetworkMode,
    /// Published ports, one entry a port, host ports already chosen.
    #[serde(default)]
    pub ports: Vec<crate::net::ports::PortMapping>,
    /// Name servers the box uses instead of the network's own.
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub dns_search: Vec<String>,
    /// `--add-host` entries: (name, address).
    #[serde(default)]
    pub extra_hosts: Vec<(String, String)>,
    /// The box's place on a bridge network, with `--network NAME`.
    #[serde(default)]
    pub attachment: Option<Attachment>,
    /// `--mac-address`; otherwise one made from the box's ID.
    #[serde(default)]
    pub mac_address: Option<String>,
}

/// A box's address on a bridge network: held in the box's record, so an
/// address is taken exactly while a record holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The network's ID.
    pub network: String,
    /// The network's name (networks are never renamed).
    pub name: String,
    pub ip: std::net::Ipv4Addr,
    pub prefix: u8,
    pub gateway: std::net::Ipv4Addr,
    /// `--network-alias`: more names the box answers to on the network.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The network resolves its boxes' names (every one but the default).
    #[serde(default)]
    pub discovery: bool,
}

/// Which network a box is on.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Only loopback.
    #[default]
    None,
    /// User-mode networking through a passt process of the box's own.
    Passt,
    /// A tap on a bridge network's bridge (the network is in `attachment`).
    Bridge,
}

impl NetworkMode {
    pub fn name(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Passt => "passt",
            NetworkMode::Bridge => "bridge",
        }
    }
}

/// A health check: `argv` runs in the box every `interval_ms`; it fails when
/// it exits non-zero or outlives `timeout_ms`; `retries` failures in a row make
/// the box unhealthy, except those within `start_period_ms` of its start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub argv: Vec<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub start_period_ms: u64,
    pub retries: u32,
}

/// How a box's health checks have gone (Docker's `State.Health`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    pub failing_streak: u32,
    /// The last few checks, oldest first.
    pub log: Vec<HealthResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResult {
    /// Milliseconds since the Unix epoch.
    pub start_ms: u64,
    pub end_ms: u64,
    pub exit_code: i32,
    pub output: String,
}

/// How many results `Health::log` keeps, as Docker.
pub const HEALTH_LOG_LEN: usize = 5;

impl Health {
    /// Adds one check's result; `counts` is false within the start period,
    /// where failures do not count (a success still makes the box healthy).
    pub fn record(&mut self, result: HealthResult, retries: u32, counts: bool) {
        if result.exit_code == 0 {
            self.status = "healthy".into();
            self.failing_streak = 0;
        } else if counts {
            self.failing_streak += 1;
            if self.failing_streak >= retries.max(1) {
                self.status = "unhealthy".into();
            }
        }
        self.log.push(result);
        if self.log.len() > HEALTH_LOG_LEN {
            self.log.remove(0);
        }
    }
}

/// Docker's restart policies.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", tag = "name")]
pub enum RestartPolicy {
    #[default]
    No,
    /// Restart after a non-zero exit, at most `max_retries` times (0: no limit).
    OnFailure {
        #[serde(default)]
        max_retries: u32,
    },
    Always,
    UnlessStopped,
}

impl RestartPolicy {
    /// Reads `--restart`: `no`, `on-failure[:N]`, `always`, `unless-stopped`.
    pub fn parse(s: &str) -> Result<RestartPolicy, String> {
        let bad = || {
            format!(
                "invalid restart policy {s:?}: use no, on-failure[:max-retries], always or \
                 unless-stopped"
            )
        };
        Ok(match s.split_once(':') {
            None => match s {
                "no" | "" => RestartPolicy::No,
                "on-failure" => RestartPolicy::OnFailure { max_retries: 0 },
                "always" => RestartPolicy::Always,
                "unless-stopped" => RestartPolicy::UnlessStopped,
                _ => return Err(bad()),
            },
            Some(("on-failure", n)) => RestartPolicy::OnFailure {
                max_retries: n.parse().map_err(|_| {
                    format!("invalid restart policy {s:?}: maximum retry count must be a number")
                })?,
            },
            Some(_) => return Err(format!("{}: only on-failure takes a count", bad())),
        })
    }

    /// Docker's name (`HostConfig.RestartPolicy.Name`).
    pub fn name(&self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure { .. } => "on-failure",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
        }
    }

    /// Whether a main process that ended with `code` starts again, after
    /// `restarts` restarts by this policy.
    pub fn restarts(&self, code: i32, restarts: u32) -> bool {
        match *self {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure { max_retries } => {
                code != 0 && (max_retries == 0 || restarts < max_retries)
            }
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        }
    }

    pub fn max_retries(&self) -> u32 {
        match self {
            RestartPolicy::OnFailure { max_retries } => *max_retries,
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    /// Running, with the workload's processes frozen (`pause`).
    Paused,
    /// The main process ended and the restart policy starts it again soon.
    Restarting,
    Exited,
}

impl Status {
    /// Whether the box's VM is up (its workload running or frozen).
    pub fn has_vm(self) -> bool {
        matches!(self, Status::Running | Status::Paused)
    }
}

/// Where a box is in its life. Written atomically by the shim (and by the CLI when it
/// finds a shim gone without a word).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BoxState {
    pub status: Status,
    /// The shim's process ID while it runs.
    pub pid: Option<u32>,
    /// When that process started (clock ticks after boot, as in
    /// `/proc/<pid>/stat`): a pid the kernel gave to another process since is
    /// not this box's shim.
    #[serde(default)]
    pub pid_start: Option<u64>,
    /// How often the restart policy started the box again since it was last
    /// started by hand.
    #[serde(default)]
    pub restart_count: u32,
    /// The box was last ended by `stop` or `kill`, which no restart policy
    /// undoes (and `unless-stopped` keeps it down when the monitor starts).
    #[serde(default)]
    pub stopped_by_user: bool,
    /// Health checks while the box runs, when it has one.
    #[serde(default)]
    pub health: Option<Health>,
    pub started: Option<u64>,
    pub finished: Option<u64>,
    pub exit_code: Option<i32>,
    /// Why the box ended abnormally, in words.
    pub error: Option<String>,
}

impl BoxState {
    pub fn created() -> Self {
        BoxState {
            status: Status::Created,
            pid: None,
            pid_start: None,
            restart_count: 0,
            stopped_by_user: false,
            health: None,
            started: None,
            finished: None,
            exit_code: None,
            error: None,
        }
    }
}

/// When process `pid` started, in clock ticks after boot (field 22 of
/// `/proc/<pid>/stat`); `None` when there is no such process, or it has
/// ended and only waits to be reaped (a parent that never reaps, such as a
/// container's shell as PID 1, would otherwise keep a dead box running).
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    start_of_live(&stat)
}

fn start_of_live(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold anything,
    // spaces and ')' included: count fields after its last ')'.
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    // Field 3, the state: Z (zombie) and X (dead) have ended.
    if matches!(rest.next()?, "Z" | "X" | "x") {
        return None;
    }
    rest.nth(18)?.parse().ok()
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_that_ended_has_no_start_even_before_it_is_reaped() {
        let stat = |state: &str| {
            format!("225 (a3s) box) {state} 1 225 225 0 -1 4228364 5210 2366 0 0 121 215 36 20 20 0 2 0 1649 0 0")
        };
        assert_eq!(start_of_live(&stat("S")), Some(1649));
        assert_eq!(start_of_live(&stat("R")), Some(1649));
        assert_eq!(start_of_live(&stat("Z")), None);
        assert_eq!(start_of_live(&stat("X")), None);
        assert_eq!(process_start(std::process::id()).map(|t| t > 0), Some(true));
    }

    #[test]
    fn restart_policies_parse_as_dockers() {
        assert_eq!(RestartPolicy::parse("no"), Ok(RestartPolicy::No));
        assert_eq!(RestartPolicy::parse("always"), Ok(RestartPolicy::Always));
        assert_eq!(
            RestartPolicy::parse("unless-stopped"),
            Ok(RestartPolicy::UnlessStopped)
        );
        assert_eq!(
            RestartPolicy::parse("on-failure:3"),
            Ok(RestartPolicy::OnFailure { max_retries: 3 })
        );
        assert_eq!(
            RestartPolicy::parse("on-failure"),
            Ok(RestartPolicy::OnFailure { max_retries: 0 })
        );
        for bad in ["sometimes", "on-failure:x", "always:3", "on-failure:-1"] {
            let e = RestartPolicy::parse(bad).unwrap_err();
            assert!(e.starts_with("invalid restart policy"), "{bad}: {e}");
        }
    }

    #[test]
    fn policies_decide_restarts_as_dockers() {
        let on_failure = RestartPolicy::OnFailure { max_retries: 3 };
        assert!(on_failure.restarts(1, 0));
        assert!(on_failure.restarts(1, 2));
        assert!(!on_failure.restarts(1, 3), "three retries, then no more");
        assert!(!on_failure.restarts(0, 0), "success is not a failure");
        assert!(RestartPolicy::OnFailure { max_retries: 0 }.restarts(2, 1000));
        assert!(RestartPolicy::Always.restarts(0, 1000));
        assert!(RestartPolicy::UnlessStopped.restarts(0, 7));
        assert!(!RestartPolicy::No.restarts(1, 0));
    }

    fn result(code: i32) -> HealthResult {
        HealthResult {
            start_ms: 0,
            end_ms: 1,
            exit_code: code,
            output: String::new(),
        }
    }

    #[test]
    fn health_turns_unhealthy_after_retries_failures_in_a_row_and_back() {
        let mut h = Health {
            status: "starting".into(),
            ..Health::default()
        };
        h.record(result(1), 2, false);
        assert_eq!((h.status.as_str(), h.failing_streak), ("starting", 0));
        h.record(result(1), 2, true);
        assert_eq!((h.status.as_str(), h.failing_streak), ("starting", 1));
        h.record(result(1), 2, true);
        assert_eq!((h.status.as_str(), h.failing_streak), ("unhealthy", 2));
        h.record(result(0), 2, true);
        assert_eq!((h.status.as_str(), h.failing_streak), ("healthy", 0));
        for _ in 0..10 {
            h.record(result(0), 2, true);
        }
        assert_eq!(h.log.len(), HEALTH_LOG_LEN);
    }

    #[test]
    fn a_record_without_the_newer_fields_still_reads() {
        let old = r#"{"id":"x","name":"n","rootfs":"/r","argv":["true"],"env":[],
            "workdir":"/","user":null,"hostname":"h","tty":false,"stdin":false,"cpus":1,
            "memory":1,"kernel":"/k","auto_remove":false,"created":0}"#;
        let cfg: BoxConfig = serde_json::from_str(old).unwrap();
        assert_eq!(cfg.restart, RestartPolicy::No);
        assert!(cfg.labels.is_empty() && cfg.layer.is_none());
        let st: BoxState = serde_json::from_str(
            r#"{"status":"exited","pid":null,"started":null,"finished":null,
                "exit_code":0,"error":null}"#,
        )
        .unwrap();
        assert_eq!(st.restart_count, 0);
    }
}
