//! A box's files from the host, for `cp`: a stopped box's root is read and
//! written here (its layer's merged view, or its `--rootfs` directory); a
//! running box's guest does the work itself, over the exec port, because the
//! guest caches its root and the host must not change it under the guest.

use std::io::{self, BufReader, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::layer::{LayerError, LayerTree};
use super::shim::connect_guest_sending;
use super::store::shim_alive;
use super::{RuntimeError, Status, Store};
use crate::boxfs::archive::Owners;
use crate::boxfs::{BoxfsError, DirTree, Files, Local, PathInfo};
use crate::proto::{
    expect_hello, hello_then, read_message, write_message, DataReader, DataWriter, Message,
    PORT_EXEC,
};

/// Why a box's files could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Files(#[from] BoxfsError),
}

/// The prefix of the guest's message for a missing path.
const NOT_FOUND: &str = "Could not find the file ";

/// [`Files`] done by a running box's guest.
pub struct Remote {
    socket_dir: PathBuf,
    /// The box, for messages: `box web`.
    place: String,
}

impl Remote {
    fn request(&self, msg: &Message) -> Result<UnixStream, BoxfsError> {
        let unreachable =
            |e: String| BoxfsError::Remote(format!("cannot reach {}: {e}", self.place));
        let first = hello_then(msg).map_err(|e| unreachable(e.to_string()))?;
        let mut s = connect_guest_sending(&self.socket_dir, PORT_EXEC, &first)
            .map_err(|e| unreachable(e.to_string()))?;
        expect_hello(&mut s).map_err(|e| unreachable(e.to_string()))?;
        Ok(s)
    }

    /// The guest's `Error` as this side's error: a missing path is
    /// [`BoxfsError::NotFound`], named in this box.
    fn refused(&self, message: String) -> BoxfsError {
        if let Some(rest) = message.strip_prefix(NOT_FOUND) {
            if let Some(path) = rest.strip_suffix(" in box") {
                return BoxfsError::NotFound {
                    path: path.to_string(),
                    place: self.place.clone(),
                };
            }
        }
        BoxfsError::Remote(message)
    }

    fn reply(&self, r: &mut impl Read) -> Result<Message, BoxfsError> {
        match read_message(r) {
            Ok(Some(Message::Error { message })) => Err(self.refused(message)),
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(BoxfsError::Remote(format!(
                "{} closed the connection without an answer",
                self.place
            ))),
            Err(e) => Err(BoxfsError::Remote(format!("{}: {e}", self.place))),
        }
    }

    fn unexpected(&self, m: &Message) -> BoxfsError {
        BoxfsError::Remote(format!(
            "{} answered with a {} message",
            self.place,
            m.name()
        ))
    }
}

impl Files for Remote {
    fn stat(&self, path: &str) -> Result<PathInfo, BoxfsError> {
        let mut s = self.request(&Message::PathStat { path: path.into() })?;
        match self.reply(&mut s)? {
            Message::PathInfo(info) => Ok(info),
            m => Err(self.unexpected(&m)),
        }
    }

    fn get(
        &self,
        path: &str,
        consume: &mut dyn FnMut(&PathInfo, &mut dyn Read) -> Result<(), BoxfsError>,
    ) -> Result<(), BoxfsError> {
        let s = self.request(&Message::ArchiveGet { path: path.into() })?;
        let mut r = BufReader::with_capacity(crate::proto::MAX_DATA, s);
        let info = match self.reply(&mut r)? {
            Message::PathInfo(info) => info,
            m => return Err(self.unexpected(&m)),
        };
        let mut data = DataReader::new(r);
        consume(&info, &mut data)?;
        // Whatever the consumer left (tar padding) up to the stream's end.
        io::copy(&mut data, &mut io::sink())
            .map(|_| ())
            .map_err(|e| BoxfsError::Remote(format!("{}: {e}", self.place)))
    }

    fn put(&self, dir: &str, input: &mut dyn Read, owners: Owners) -> Result<(), BoxfsError> {
        let owner = match owners {
            Owners::Fixed(u, g) => Some((u, g)),
            Owners::Archive | Owners::Unchanged => None,
        };
        let s = self.request(&Message::ArchivePut {
            dir: dir.into(),
            owner,
        })?;
        let mut replies = s
            .try_clone()
            .map_err(BoxfsError::io("cannot use the connection to", &self.place))?;
        let mut w = DataWriter::new(s, true);
        let sent = io::copy(input, &mut w)
            .and_then(|_| w.finish())
            .and_then(|mut s| {
                write_message(&mut s, &Message::StdinClose).map_err(io::Error::other)
            });
        // The guest answers once it is done, or as soon as it failed (then
        // the sending above may have failed too: its answer says why).
        match self.reply(&mut replies) {
            Ok(Message::Ok) => Ok(()),
            Ok(m) => Err(self.unexpected(&m)),
            Err(e) => match sent {
                Err(send) if matches!(e, BoxfsError::Remote(_)) => Err(BoxfsError::Io {
                    what: "cannot send the archive to",
                    path: self.place.clone(),
                    source: send,
                }),
                _ => Err(e),
            },
        }
    }
}

/// Runs `f` on the files of box `id`, for writing when `write`. A running box's
/// guest does the work; a stopped box's root is used here, under the store's
/// lock when writing, so that the box cannot start meanwhile.
pub fn with_box_files<T>(
    store: &Store,
    id: &str,
    write: bool,
    f: impl FnOnce(&dyn Files) -> Result<T, BoxfsError>,
) -> Result<T, FilesError> {
    let cfg = store.config(id)?;
    let place = format!("box {}", cfg.name);
    let lock = if write { Some(store.lock()?) } else { None };
    let st = if write {
        store.settle_locked(id)?
    } else {
        store.live_state(id)?
    };
    if st.status != Status::Exited && shim_alive(&st) {
        drop(lock);
        let remote = Remote {
            socket_dir: store.socket_dir(id),
            place,
        };
        return Ok(f(&remote)?);
    }
    let result = match &cfg.layer {
        Some(_) => {
            let tree = LayerTree::of(&cfg)?;
            f(&Local {
                tree: &tree,
                place,
                one_fs: false,
            })
        }
        None => {
            let tree = DirTree::open(Path::new(&cfg.rootfs))
                .map_err(BoxfsError::io("cannot open the root of", &place))?;
            f(&Local {
                tree: &tree,
                place,
                one_fs: false,
            })
        }
    };
    drop(lock);
    Ok(result?)
}
