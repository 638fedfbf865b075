//! Who a process runs as: Docker's `--user` resolved against the image's own
//! `/etc/passwd` and `/etc/group`, the way runc resolves it.

use std::path::Path;

/// Largest uid or gid accepted (runc's limit; `-1` means "unchanged" to the kernel).
const MAX_ID: u32 = i32::MAX.unsigned_abs();

/// The credentials a process gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (empty: none).
    pub groups: Vec<u32>,
    /// Home directory from `/etc/passwd`, for `HOME`; `/` when the user has no entry.
    pub home: String,
}

/// Why a `--user` value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// A name that is not in the image's `/etc/passwd`.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoSuchUser(String),
    /// A group name that is not in the image's `/etc/group`.
    #[error("unable to find group {0}: no matching entries in group file")]
    NoSuchGroup(String),
    /// A numeric id out of range.
    #[error("{0} is not a valid user or group id — ids run from 0 to 2147483647")]
    BadId(String),
}

struct Passwd<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct Group<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn parse_passwd(text: &str) -> impl Iterator<Item = Passwd<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || f[0].starts_with('#') {
            return None;
        }
        Some(Passwd {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

fn parse_group(text: &str) -> impl Iterator<Item = Group<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 || f[0].starts_with('#') {
            return None;
        }
        Some(Group {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f[3].split(',').filter(|m| !m.is_empty()).collect(),
        })
    })
}

fn numeric(s: &str) -> Option<Result<u32, UserError>> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        s.parse::<u32>()
            .ok()
            .filter(|&id| id <= MAX_ID)
            .ok_or_else(|| UserError::BadId(s.to_owned())),
    )
}

/// Resolves `spec` (`uid`, `uid:gid`, `name`, `name:group`; empty means root)
/// against the passwd and group files' contents.
///
/// As in runc: a numeric user need not exist (it then gets gid 0 and home
/// `/`); a name must. Supplementary groups are the groups that list the user
/// as a member, unless a group was given explicitly.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<Creds, UserError> {
    let (user, group_spec) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let entry = match numeric(user) {
        Some(uid) => {
            let uid = uid?;
            parse_passwd(passwd).find(|p| p.uid == uid)
        }
        None => Some(
            parse_passwd(passwd)
                .find(|p| p.name == user)
                .ok_or_else(|| UserError::NoSuchUser(user.to_owned()))?,
        ),
    };
    let mut creds = Creds {
        uid: match (&entry, numeric(user)) {
            (_, Some(uid)) => uid?,
            (Some(p), None) => p.uid,
            (None, None) => 0,
        },
        gid: entry.as_ref().map_or(0, |p| p.gid),
        groups: Vec::new(),
        home: entry
            .as_ref()
            .map_or_else(|| "/".to_owned(), |p| p.home.to_owned()),
    };
    match group_spec.filter(|g| !g.is_empty()) {
        Some(g) => {
            creds.gid = match numeric(g) {
                Some(gid) => gid?,
                None => {
                    parse_group(group)
                        .find(|e| e.name == g)
                        .ok_or_else(|| UserError::NoSuchGroup(g.to_owned()))?
                        .gid
                }
            };
        }
        None => {
            if let Some(name) = entry.as_ref().map(|p| p.name) {
                for e in parse_group(group) {
                    if e.members.contains(&name) && !creds.groups.contains(&e.gid) {
                        creds.groups.push(e.gid);
                    }
                }
            }
        }
    }
    Ok(creds)
}

/// Adds `--group-add`'s groups (numbers, or names in the group file's
/// contents) to `creds`' supplementary groups, as Docker does.
pub fn add_groups(creds: &mut Creds, extra: &[String], group: &str) -> Result<(), UserError> {
    for g in extra {
        let gid = match numeric(g) {
            Some(gid) => gid?,
            None => {
                parse_group(group)
                    .find(|e| e.name == g)
                    .ok_or_else(|| UserError::NoSuchGroup(g.clone()))?
                    .gid
            }
        };
        if !creds.groups.contains(&gid) {
            creds.groups.push(gid);
        }
    }
    Ok(())
}

/// [`add_groups`] with `<root>/etc/group`.
pub fn add_groups_in(creds: &mut Creds, extra: &[String], root: &Path) -> Result<(), UserError> {
    if extra.is_empty() {
        return Ok(());
    }
    add_groups(creds, extra, &FILES.read(&root.join("etc/group")))
}

/// [`resolve`] with the files under `root` (`<root>/etc/passwd`,
/// `<root>/etc/group`); a missing file counts as empty.
pub fn resolve_in(spec: &str, root: &Path) -> Result<Creds, UserError> {
    let etc = root.join("etc");
    resolve(
        spec,
        &FILES.read(&etc.join("passwd")),
        &FILES.read(&etc.join("group")),
    )
}

/// The account files last read, each with what `stat` said of it then. Every
/// exec resolves its user; over virtio-fs an open and close are two requests
/// to the host each, while a `stat` of an unchanged file is answered from the
/// guest's own cache.
static FILES: FileCache = FileCache(std::sync::Mutex::new(Vec::new()));

struct FileCache(std::sync::Mutex<Vec<(std::path::PathBuf, Stamp, String)>>);

/// What tells one version of a file from another.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// Paths remembered at most; a box has two.
const CACHED_FILES: usize = 8;

impl FileCache {
    /// The file's text, from the cache while its stamp is unchanged; a
    /// missing or unreadable file reads as empty.
    fn read(&self, path: &Path) -> String {
        let Some(stamp) = Stamp::of(path) else {
            return String::new();
        };
        let mut files = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, s, text)) = files.iter().find(|(p, _, _)| p == path) {
            if *s == stamp {
                return text.clone();
            }
        }
        let text = std::fs::read_to_string(path).unwrap_or_default();
        // Kept only if the file did not change while it was read.
        if Stamp::of(path) == Some(stamp) {
            files.retain(|(p, _, _)| p != path);
            if files.len() >= CACHED_FILES {
                files.remove(0);
            }
            files.push((path.to_path_buf(), stamp, text.clone()));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
# a comment:x:5:5::/:
broken line
app:x:1000:1000:App:/home/app:/bin/sh
dup:x:1000:2000::/dup:/bin/sh
";
    const GROUP: &str = "\
root:x:0:
wheel:x:10:root,app
app:x:1000:
audio:x:29:app
staff:x:50:
";

    fn creds(uid: u32, gid: u32, groups: &[u32], home: &str) -> Creds {
        Creds {
            uid,
            gid,
            groups: groups.to_vec(),
            home: home.into(),
        }
    }

    #[test]
    fn account_files_are_reread_once_they_change() {
        let dir = std::env::temp_dir().join(format!("a3s-user-cache-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(
            dir.join("etc/passwd"),
            "app:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        assert_eq!(resolve_in("app", &dir).unwrap().home, "/home/app");
        assert_eq!(resolve_in("app", &dir).unwrap().home, "/home/app");
        // Replaced (a new inode), as adduser and friends do.
        std::fs::write(dir.join("etc/new"), "app:x:1000:1000::/srv/app:/bin/sh\n").unwrap();
        std::fs::rename(dir.join("etc/new"), dir.join("etc/passwd")).unwrap();
        assert_eq!(resolve_in("app", &dir).unwrap().home, "/srv/app");
        // Rewritten in place with a different length.
        std::fs::write(dir.join("etc/passwd"), "app:x:1000:1000::/a:/bin/sh\n").unwrap();
        assert_eq!(resolve_in("app", &dir).unwrap().home, "/a");
        std::fs::remove_file(dir.join("etc/passwd")).unwrap();
        assert_eq!(
            resolve_in("app", &dir).unwrap_err(),
            UserError::NoSuchUser("app".into())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn empty_means_root_with_roots_groups() {
        assert_eq!(
            resolve("", PASSWD, GROUP).unwrap(),
            creds(0, 0, &[10], "/root")
        );
    }

    #[test]
    fn a_name_takes_uid_gid_home_and_member_groups_from_the_image() {
        assert_eq!(
            resolve("app", PASSWD, GROUP).unwrap(),
            creds(1000, 1000, &[10, 29], "/home/app")
        );
    }

    #[test]
    fn a_numeric_user_in_passwd_gets_its_entry_and_groups() {
        assert_eq!(
            resolve("1000", PASSWD, GROUP).unwrap(),
            creds(1000, 1000, &[10, 29], "/home/app")
        );
    }

    #[test]
    fn a_numeric_user_not_in_passwd_gets_gid_0_and_home_slash() {
        assert_eq!(
            resolve("4242", PASSWD, GROUP).unwrap(),
            creds(4242, 0, &[], "/")
        );
        assert_eq!(resolve("4242", "", "").unwrap(), creds(4242, 0, &[], "/"));
    }

    #[test]
    fn an_explicit_group_replaces_the_primary_and_drops_supplementary_groups() {
        assert_eq!(
            resolve("app:staff", PASSWD, GROUP).unwrap(),
            creds(1000, 50, &[], "/home/app")
        );
        assert_eq!(
            resolve("1000:1000", PASSWD, GROUP).unwrap(),
            creds(1000, 1000, &[], "/home/app")
        );
        assert_eq!(
            resolve("4242:7", PASSWD, GROUP).unwrap(),
            creds(4242, 7, &[], "/")
        );
    }

    #[test]
    fn unknown_names_are_errors_like_dockers() {
        assert_eq!(
            resolve("nobody", PASSWD, GROUP).unwrap_err().to_string(),
            "unable to find user nobody: no matching entries in passwd file"
        );
        assert_eq!(
            resolve("app:nogroup", PASSWD, GROUP),
            Err(UserError::NoSuchGroup("nogroup".into()))
        );
    }

    #[test]
    fn ids_out_of_range_are_errors() {
        assert!(matches!(
            resolve("2147483648", PASSWD, GROUP),
            Err(UserError::BadId(_))
        ));
        assert!(matches!(
            resolve("0:99999999999", PASSWD, GROUP),
            Err(UserError::BadId(_))
        ));
        assert_eq!(resolve("2147483647", "", "").unwrap().uid, 2_147_483_647);
    }

    #[test]
    fn group_add_appends_names_and_numbers_once() {
        let mut c = resolve("app", PASSWD, GROUP).unwrap();
        add_groups(
            &mut c,
            &["staff".into(), "4242".into(), "audio".into()],
            GROUP,
        )
        .unwrap();
        assert_eq!(c.groups, [10, 29, 50, 4242]);
        let mut c = resolve("app:staff", PASSWD, GROUP).unwrap();
        add_groups(&mut c, &["wheel".into()], GROUP).unwrap();
        assert_eq!((c.gid, c.groups.as_slice()), (50, &[10][..]));
        assert_eq!(
            add_groups(&mut c, &["nogroup".into()], GROUP)
                .unwrap_err()
                .to_string(),
            "unable to find group nogroup: no matching entries in group file"
        );
        assert!(matches!(
            add_groups(&mut c, &["99999999999".into()], GROUP),
            Err(UserError::BadId(_))
        ));
    }

    #[test]
    fn missing_files_count_as_empty() {
        let dir = std::env::temp_dir().join(format!("a3s-user-test-{}", std::process::id()));
        assert_eq!(resolve_in("0", &dir).unwrap(), creds(0, 0, &[], "/"));
        assert!(resolve_in("app", &dir).is_err());
    }
}
