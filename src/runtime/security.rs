//! A box's security options, read from Docker's flags (`--cap-add`,
//! `--cap-drop`, `--privileged`, `--read-only`, `--security-opt`, `--init`,
//! `--group-add`, `--sysctl`, `--device`) by Docker's rules, and what the
//! guest is told to apply.
//!
//! The box's VM is its isolation boundary: its kernel is its own. What
//! Docker uses to keep a container from its host's kernel (seccomp and
//! AppArmor profiles, SELinux labels, the device cgroup) has no host kernel
//! to protect here, so those options are accepted only when they ask for
//! nothing, and refused when they ask for a profile.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::proto::{SecuritySetup, DEFAULT_CAPS};

/// Capability names by number, as `<linux/capability.h>` has them (Linux 6.1).
pub const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Every capability the guest kernel knows.
pub const ALL_CAPS: u64 = (1 << CAPABILITIES.len()) - 1;

/// Sysctls Docker lets a container set beyond its prefixes: the IPC
/// namespace's.
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Devices every box already has: its `/dev` is the guest kernel's own
/// devtmpfs, so whatever that kernel provides is there.
const GUEST_DEVICES: &[&str] = &["/dev/fuse", "/dev/net/tun"];

/// Why a security flag cannot be used; each message is Docker's where Docker
/// has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityError {
    /// `--cap-add` or `--cap-drop` names no capability.
    #[error("invalid {flag}: unknown capability: {name:?}")]
    UnknownCapability { flag: &'static str, name: String },
    /// `--security-opt` without `=` or `:`.
    #[error("invalid --security-opt 1: {0:?}")]
    SecurityOptFormat(String),
    /// `--security-opt` with a key Docker does not know, or a bad value.
    #[error("invalid --security-opt 2: {0:?}")]
    SecurityOptValue(String),
    /// A profile for a mechanism that guards a host kernel the box does not share.
    #[error(
        "--security-opt {0}: a box is a virtual machine with its own kernel, so it \
         takes no {1} profile — use {2}=unconfined or leave the option out"
    )]
    Profile(String, &'static str, &'static str),
    /// `--sysctl` outside the namespaced ones Docker allows.
    #[error("sysctl '{0}' is not allowed")]
    SysctlNotAllowed(String),
    /// `--device` of a host device.
    #[error(
        "--device {0}: a box is a virtual machine, and host devices cannot be \
         passed into it (its /dev has the guest kernel's devices, such as /dev/fuse \
         and /dev/net/tun)"
    )]
    HostDevice(String),
    /// `--group-add` that is empty.
    #[error("invalid --group-add {0:?}: expected a group name or number")]
    Group(String),
}

/// The security options recorded for a box; field names follow Docker's
/// HostConfig.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SecurityConfig {
    /// `--cap-add`, normalised (`CAP_` prefix, upper case; `ALL`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// `--cap-drop`, normalised.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    #[serde(default)]
    pub privileged: bool,
    /// `--read-only`.
    #[serde(default)]
    pub read_only: bool,
    /// `--security-opt`, as given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    /// From `--security-opt no-new-privileges`.
    #[serde(default)]
    pub no_new_privileges: bool,
    /// `--init`.
    #[serde(default)]
    pub init: bool,
    /// `--group-add`, as given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    /// `--sysctl`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// `--device` entries the box already has.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
}

/// The flags as `run` and `create` take them.
#[derive(Debug, Default)]
pub struct SecurityFlags<'a> {
    pub cap_add: &'a [String],
    pub cap_drop: &'a [String],
    pub privileged: bool,
    pub read_only: bool,
    pub security_opt: &'a [String],
    pub init: bool,
    pub group_add: &'a [String],
    pub sysctl: &'a [String],
    pub device: &'a [String],
}

/// A capability name as Docker normalises it: upper case, `CAP_` in front,
/// `ALL` as itself.
fn normalise(flag: &'static str, name: &str) -> Result<String, SecurityError> {
    let upper = name.to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if CAPABILITIES.contains(&bare) {
        Ok(format!("CAP_{bare}"))
    } else {
        Err(SecurityError::UnknownCapability {
            flag,
            name: format!("CAP_{bare}"),
        })
    }
}

/// The bit of a normalised capability name (not `ALL`).
fn bit(name: &str) -> u64 {
    let bare = name.strip_prefix("CAP_").unwrap_or(name);
    CAPABILITIES
        .iter()
        .position(|c| *c == bare)
        .map_or(0, |n| 1 << n)
}

/// The capability set Docker's rules give: privileged is everything; `ALL`
/// added is everything but the drops; `ALL` dropped is only the adds;
/// otherwise the defaults less the drops plus the adds.
pub fn capability_set(add: &[String], drop: &[String], privileged: bool) -> u64 {
    let set = |names: &[String]| names.iter().fold(0, |acc, n| acc | bit(n));
    let all = |names: &[String]| names.iter().any(|n| n == "ALL");
    if privileged {
        ALL_CAPS
    } else if all(add) {
        ALL_CAPS & !set(drop)
    } else if all(drop) {
        set(add)
    } else {
        (DEFAULT_CAPS & !set(drop)) | set(add)
    }
}

/// One `--security-opt`: sets `no_new_privileges` or accepts an option that
/// asks for no confinement.
fn security_opt(opt: &str, cfg: &mut SecurityConfig) -> Result<(), SecurityError> {
    if opt == "no-new-privileges" {
        cfg.no_new_privileges = true;
        return Ok(());
    }
    if opt == "disable" {
        return Ok(());
    }
    let split = if opt.contains('=') {
        opt.split_once('=')
    } else {
        opt.split_once(':')
    };
    let Some((key, value)) = split else {
        return Err(SecurityError::SecurityOptFormat(opt.to_owned()));
    };
    let bad = || SecurityError::SecurityOptValue(opt.to_owned());
    match key {
        "no-new-privileges" => {
            cfg.no_new_privileges = parse_bool(value).ok_or_else(bad)?;
        }
        "seccomp" if value == "unconfined" => {}
        "seccomp" => return Err(SecurityError::Profile(opt.into(), "seccomp", "seccomp")),
        "apparmor" if value == "unconfined" => {}
        "apparmor" => return Err(SecurityError::Profile(opt.into(), "AppArmor", "apparmor")),
        "label" if value == "disable" => {}
        "label" => return Err(SecurityError::Profile(opt.into(), "SELinux", "label")),
        _ => return Err(bad()),
    }
    Ok(())
}

/// Go's `strconv.ParseBool`, which Docker reads these values with.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// One `--sysctl KEY=VALUE`, refused unless it is in a namespace the box has
/// of its own (Docker's list).
fn sysctl(entry: &str) -> Result<(String, String), SecurityError> {
    let refuse = || SecurityError::SysctlNotAllowed(entry.to_owned());
    let (key, value) = entry.split_once('=').ok_or_else(refuse)?;
    let allowed = IPC_SYSCTLS.contains(&key)
        || ["net.", "fs.mqueue."]
            .iter()
            .any(|p| key.len() > p.len() && key.starts_with(p));
    // The key becomes a path under /proc/sys in the guest.
    let clean = key
        .split('.')
        .all(|part| !part.is_empty() && part != ".." && !part.contains('/'));
    if !allowed || !clean {
        return Err(refuse());
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// One `--device HOST[:BOX[:PERMS]]`: only a device the guest kernel makes
/// in every box, at its own path.
fn device(spec: &str) -> Result<String, SecurityError> {
    let mut parts = spec.splitn(3, ':');
    let host = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or(host);
    if GUEST_DEVICES.contains(&host) && target == host {
        Ok(host.to_owned())
    } else {
        Err(SecurityError::HostDevice(host.to_owned()))
    }
}

impl SecurityConfig {
    /// Reads the flags; nothing is made.
    pub fn from_flags(f: &SecurityFlags<'_>) -> Result<Self, SecurityError> {
        let mut cfg = SecurityConfig {
            privileged: f.privileged,
            read_only: f.read_only,
            init: f.init,
            security_opt: f.security_opt.to_vec(),
            ..SecurityConfig::default()
        };
        for c in f.cap_add {
            cfg.cap_add.push(normalise("CapAdd", c)?);
        }
        for c in f.cap_drop {
            cfg.cap_drop.push(normalise("CapDrop", c)?);
        }
        for o in f.security_opt {
            security_opt(o, &mut cfg)?;
        }
        for g in f.group_add {
            if g.is_empty() {
                return Err(SecurityError::Group(g.clone()));
            }
            cfg.group_add.push(g.clone());
        }
        for s in f.sysctl {
            let (k, v) = sysctl(s)?;
            cfg.sysctls.insert(k, v);
        }
        for d in f.device {
            cfg.devices.push(device(d)?);
        }
        Ok(cfg)
    }

    /// The box's capability set.
    pub fn caps(&self) -> u64 {
        capability_set(&self.cap_add, &self.cap_drop, self.privileged)
    }

    /// What the guest applies.
    pub fn guest(&self) -> SecuritySetup {
        SecuritySetup {
            caps: self.caps(),
            no_new_privs: self.no_new_privileges,
            read_only_root: self.read_only,
            privileged: self.privileged,
            init: self.init,
            group_add: self.group_add.clone(),
            sysctls: self
                .sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// Docker's HostConfig fields for `inspect`.
    pub fn inspect(&self) -> serde_json::Value {
        let list = |v: &[String]| {
            if v.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::json!(v)
            }
        };
        serde_json::json!({
            "CapAdd": list(&self.cap_add),
            "CapDrop": list(&self.cap_drop),
            "Privileged": self.privileged,
            "ReadonlyRootfs": self.read_only,
            "SecurityOpt": list(&self.security_opt),
            "Init": self.init,
            "GroupAdd": list(&self.group_add),
            "Sysctls": self.sysctls,
            "Devices": self.devices.iter().map(|d| serde_json::json!({
                "PathOnHost": d, "PathInContainer": d, "CgroupPermissions": "rwm",
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn parse(f: SecurityFlags<'_>) -> Result<SecurityConfig, SecurityError> {
        SecurityConfig::from_flags(&f)
    }

    #[test]
    fn the_default_set_is_dockers() {
        let names: Vec<&str> = (0..CAPABILITIES.len())
            .filter(|n| DEFAULT_CAPS & (1 << n) != 0)
            .map(|n| CAPABILITIES[n])
            .collect();
        let mut want = [
            "CHOWN",
            "DAC_OVERRIDE",
            "FSETID",
            "FOWNER",
            "MKNOD",
            "NET_RAW",
            "SETGID",
            "SETUID",
            "SETFCAP",
            "SETPCAP",
            "NET_BIND_SERVICE",
            "SYS_CHROOT",
            "KILL",
            "AUDIT_WRITE",
        ];
        want.sort_by_key(|n| CAPABILITIES.iter().position(|c| c == n));
        assert_eq!(names, want);
        assert_eq!(SecurityConfig::default().caps(), 0xa804_25fb);
        assert_eq!(ALL_CAPS, 0x1ff_ffff_ffff);
    }

    #[test]
    fn capability_names_take_or_leave_cap_and_any_case() {
        let add = v(&["net_admin", "CAP_SYS_TIME", "Cap_Bpf"]);
        let c = parse(SecurityFlags {
            cap_add: &add,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.cap_add, v(&["CAP_NET_ADMIN", "CAP_SYS_TIME", "CAP_BPF"]));
        assert_eq!(
            c.caps(),
            DEFAULT_CAPS | 1 << 12 | 1 << 25 | 1 << 39,
            "added to the defaults"
        );
    }

    #[test]
    fn unknown_capabilities_are_refused_with_dockers_words() {
        let add = v(&["BOGUS"]);
        let e = parse(SecurityFlags {
            cap_add: &add,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"invalid CapAdd: unknown capability: "CAP_BOGUS""#
        );
        let drop = v(&["cap_nope"]);
        let e = parse(SecurityFlags {
            cap_drop: &drop,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"invalid CapDrop: unknown capability: "CAP_NOPE""#
        );
    }

    #[test]
    fn all_follows_dockers_rules() {
        let all = v(&["ALL"]);
        let chown = v(&["CHOWN"]);
        assert_eq!(capability_set(&[], &all, false), 0);
        assert_eq!(capability_set(&v(&["CAP_CHOWN"]), &all, false), 1);
        assert_eq!(
            capability_set(&all, &v(&["CAP_CHOWN"]), false),
            ALL_CAPS & !1
        );
        assert_eq!(
            capability_set(&[], &v(&["CAP_CHOWN"]), false),
            DEFAULT_CAPS & !1
        );
        assert_eq!(capability_set(&[], &all, true), ALL_CAPS, "privileged wins");
        let c = parse(SecurityFlags {
            cap_drop: &v(&["all"]),
            cap_add: &chown,
            ..Default::default()
        })
        .unwrap();
        assert_eq!((c.cap_drop.as_slice(), c.caps()), (&v(&["ALL"])[..], 1));
    }

    #[test]
    fn security_opts_follow_docker() {
        let ok = |opts: &[&str]| {
            let o = v(opts);
            parse(SecurityFlags {
                security_opt: &o,
                ..Default::default()
            })
        };
        assert!(ok(&["no-new-privileges"]).unwrap().no_new_privileges);
        assert!(ok(&["no-new-privileges:true"]).unwrap().no_new_privileges);
        assert!(ok(&["no-new-privileges=1"]).unwrap().no_new_privileges);
        assert!(
            !ok(&["no-new-privileges", "no-new-privileges=false"])
                .unwrap()
                .no_new_privileges
        );
        let c = ok(&["seccomp=unconfined", "apparmor=unconfined", "label=disable"]).unwrap();
        assert_eq!(c.security_opt.len(), 3);
        assert_eq!(
            ok(&["bogus"]).unwrap_err().to_string(),
            r#"invalid --security-opt 1: "bogus""#
        );
        assert_eq!(
            ok(&["bogus=1"]).unwrap_err().to_string(),
            r#"invalid --security-opt 2: "bogus=1""#
        );
        assert_eq!(
            ok(&["no-new-privileges=maybe"]).unwrap_err(),
            SecurityError::SecurityOptValue("no-new-privileges=maybe".into())
        );
        assert!(matches!(
            ok(&["seccomp=/etc/profile.json"]),
            Err(SecurityError::Profile(_, "seccomp", _))
        ));
        assert!(matches!(
            ok(&["apparmor=docker-default"]),
            Err(SecurityError::Profile(..))
        ));
    }

    #[test]
    fn sysctls_are_the_namespaced_ones_docker_allows() {
        for good in [
            "net.ipv4.ip_forward=1",
            "net.core.somaxconn=1024",
            "kernel.shmmax=1000",
            "kernel.sem=250 32000 32 128",
            "fs.mqueue.msg_max=20",
        ] {
            assert!(sysctl(good).is_ok(), "{good}");
        }
        for bad in [
            "kernel.hostname=x",
            "vm.swappiness=1",
            "kernel.shmfoo=1",
            "net.=1",
            "net.ipv4..ip_forward=1",
            "net.ipv4/../../x=1",
            "net.ipv4.ip_forward",
        ] {
            assert!(sysctl(bad).is_err(), "{bad}");
        }
        assert_eq!(
            sysctl("kernel.hostname=x").unwrap_err().to_string(),
            "sysctl 'kernel.hostname=x' is not allowed"
        );
        assert_eq!(
            sysctl("kernel.sem=1 2 3 4").unwrap(),
            ("kernel.sem".into(), "1 2 3 4".into())
        );
    }

    #[test]
    fn devices_are_refused_but_those_the_guest_kernel_makes() {
        assert_eq!(device("/dev/fuse").unwrap(), "/dev/fuse");
        assert_eq!(
            device("/dev/net/tun:/dev/net/tun:rwm").unwrap(),
            "/dev/net/tun"
        );
        assert!(matches!(
            device("/dev/sda"),
            Err(SecurityError::HostDevice(_))
        ));
        assert!(device("/dev/fuse:/dev/other").is_err());
        assert!(device("/dev/kvm")
            .unwrap_err()
            .to_string()
            .contains("host devices cannot be passed"));
    }

    #[test]
    fn the_guest_gets_the_set_and_inspect_shows_dockers_fields() {
        let add = v(&["NET_ADMIN"]);
        let groups = v(&["audio", "4242"]);
        let sysctls = v(&["net.ipv4.ip_forward=1"]);
        let opts = v(&["no-new-privileges"]);
        let c = parse(SecurityFlags {
            cap_add: &add,
            read_only: true,
            init: true,
            group_add: &groups,
            sysctl: &sysctls,
            security_opt: &opts,
            ..Default::default()
        })
        .unwrap();
        let g = c.guest();
        assert_eq!(g.caps, DEFAULT_CAPS | 1 << 12);
        assert!(g.read_only_root && g.init && g.no_new_privs && !g.privileged);
        assert_eq!(g.sysctls, [("net.ipv4.ip_forward".into(), "1".into())]);
        let i = c.inspect();
        assert_eq!(i["CapAdd"], serde_json::json!(["CAP_NET_ADMIN"]));
        assert_eq!(i["CapDrop"], serde_json::Value::Null);
        assert_eq!(i["ReadonlyRootfs"], true);
        assert_eq!(i["Init"], true);
        assert_eq!(i["SecurityOpt"], serde_json::json!(["no-new-privileges"]));
        assert_eq!(i["GroupAdd"], serde_json::json!(["audio", "4242"]));
        assert_eq!(i["Sysctls"]["net.ipv4.ip_forward"], "1");
        // A record without the field reads as Docker's defaults.
        let old: SecurityConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(old.caps(), DEFAULT_CAPS);
    }
}
