//! File requests on the exec port (`PathStat`, `ArchiveGet`, `ArchivePut`):
//! Docker's archive API on the box's root, which init sees merged at
//! [`NEWROOT`]. Every path resolves inside it (`boxfs`, with `openat2`
//! `RESOLVE_IN_ROOT`), so no request reaches a file outside the box's root.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::mpsc;

use super::mounts::NEWROOT;
use super::session::{Connection, Outbox, LINGER};
use crate::boxfs::archive::Owners;
use crate::boxfs::{DirTree, Files, Local};
use crate::proto::{DataReader, Message, MAX_DATA};

/// The tar stream to the host, one `Stdout` frame per write.
struct ToHost(Outbox);

impl Write for ToHost {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(MAX_DATA);
        if self.0.send(&Message::Stdout(data[..n].to_vec())) {
            Ok(n)
        } else {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether `msg` is a file request.
pub fn is_request(msg: &Message) -> bool {
    matches!(
        msg,
        Message::PathStat { .. } | Message::ArchiveGet { .. } | Message::ArchivePut { .. }
    )
}

/// Answers file request `msg` on `conn`, whose `reader` carries what the
/// host sends after it, then waits a moment for the host to close first, so
/// that it has read every frame.
pub fn serve<C: Connection>(msg: Message, conn: &C, mut reader: C, outbox: &Outbox) {
    serve_in(Path::new(NEWROOT), msg, &mut reader, outbox);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let drain = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
        drop(done_tx);
    });
    let _ = done_rx.recv_timeout(LINGER);
    conn.shutdown();
    let _ = drain.join();
}

fn serve_in(root: &Path, msg: Message, input: impl Read, outbox: &Outbox) {
    let error = |e: &dyn std::error::Error| {
        // The causes too: the host prints this one line.
        let mut message = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            message.push_str(&format!(": {c}"));
            cause = c.source();
        }
        outbox.send(&Message::Error { message })
    };
    let text = |m: String| -> Box<dyn std::error::Error> { m.into() };
    let tree = match DirTree::open(root) {
        Ok(t) => t,
        Err(e) => {
            error(&*text(format!("cannot open the box's root: {e}")));
            return;
        }
    };
    // The host names the box in its own messages.
    let files = Local {
        tree: &tree,
        place: "box".into(),
        one_fs: true,
    };
    match msg {
        Message::PathStat { path } => match files.stat(&path) {
            Ok(info) => {
                outbox.send(&Message::PathInfo(info));
            }
            Err(e) => {
                error(&e);
            }
        },
        Message::ArchiveGet { path } => {
            let sent = files.get(&path, &mut |info, tar| {
                outbox.send(&Message::PathInfo(info.clone()));
                let mut w = io::BufWriter::with_capacity(MAX_DATA, ToHost(outbox.clone()));
                io::copy(tar, &mut w)
                    .and_then(|_| w.flush())
                    .map_err(crate::boxfs::BoxfsError::io("cannot send", &path))
            });
            match sent {
                Ok(()) => outbox.send(&Message::Exit { code: 0 }),
                Err(e) => error(&e) && outbox.send(&Message::Exit { code: 1 }),
            };
        }
        Message::ArchivePut { dir, owner } => {
            let owners = owner.map_or(Owners::Archive, |(u, g)| Owners::Fixed(u, g));
            let mut tar = DataReader::new(input);
            match files.put(&dir, &mut tar, owners) {
                Ok(()) => outbox.send(&Message::Ok),
                Err(e) => error(&e),
            };
        }
        other => {
            error(&*text(format!("{} is not a file request", other.name())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::read_message;
    use crate::testing::TempDir;
    use std::os::unix::net::UnixStream;

    fn ask(root: &Path, msg: Message, send: &[Message]) -> Vec<Message> {
        let (host, guest) = UnixStream::pair().unwrap();
        let mut to_guest = host.try_clone().unwrap();
        for m in send {
            crate::proto::write_message(&mut to_guest, m).unwrap();
        }
        let outbox = Outbox::new(guest.try_clone().unwrap());
        serve_in(root, msg, guest, &outbox);
        drop(outbox);
        host.shutdown(std::net::Shutdown::Write).unwrap();
        let mut r = host;
        let mut got = Vec::new();
        r.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        while let Ok(Some(m)) = read_message(&mut r) {
            got.push(m);
        }
        got
    }

    #[test]
    fn a_stat_through_a_link_to_the_root_stays_in_the_box() {
        let d = TempDir::new("guest-files");
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), "box\n").unwrap();
        std::os::unix::fs::symlink("/", d.path().join("up")).unwrap();
        let got = ask(
            d.path(),
            Message::PathStat {
                path: "/up/../../etc/passwd".into(),
            },
            &[],
        );
        let [Message::PathInfo(info)] = got.as_slice() else {
            panic!("{got:?}")
        };
        assert_eq!((info.name.as_str(), info.size), ("passwd", 4));
        let got = ask(
            d.path(),
            Message::PathStat {
                path: "/nope".into(),
            },
            &[],
        );
        assert_eq!(
            got,
            [Message::Error {
                message: "Could not find the file /nope in box".into()
            }]
        );
    }

    #[test]
    fn an_archive_goes_out_and_comes_back_in() {
        let d = TempDir::new("guest-files-tar");
        std::fs::create_dir(d.path().join("srv")).unwrap();
        std::fs::write(d.path().join("srv/f"), "data\n").unwrap();
        let got = ask(
            d.path(),
            Message::ArchiveGet {
                path: "/srv".into(),
            },
            &[],
        );
        assert!(matches!(got.first(), Some(Message::PathInfo(_))), "{got:?}");
        assert_eq!(got.last(), Some(&Message::Exit { code: 0 }));
        let tar: Vec<u8> = got
            .iter()
            .filter_map(|m| match m {
                Message::Stdout(d) => Some(d.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        std::fs::create_dir(d.path().join("back")).unwrap();
        let got = ask(
            d.path(),
            Message::ArchivePut {
                dir: "/back".into(),
                owner: Some((0, 0)),
            },
            &[Message::Stdin(tar), Message::StdinClose],
        );
        assert_eq!(got, [Message::Ok]);
        assert_eq!(
            std::fs::read(d.path().join("back/srv/f")).unwrap(),
            b"data\n"
        );
    }
}
