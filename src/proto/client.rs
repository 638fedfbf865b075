//! Host side of one process session: handshake, request, stdin, output, exit.
//!
//! Interactive front ends (a terminal attached to the session) drive the
//! frames themselves with [`write_message`] and [`read_message`]; this helper
//! covers the common "run this, feed it these bytes, stream its output" case.

use std::io::{self, Read, Write};

use super::frame::{client_handshake, read_message, write_message, FrameError, Message, MAX_DATA};

/// Which of the process's streams a chunk of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output (everything, on a terminal).
    Stdout,
    /// Standard error.
    Stderr,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// Pid of the process in the guest; `None` when it could not be started.
    pub pid: Option<i32>,
    /// Its exit code (see the `Exit` message).
    pub code: i32,
    /// The guest's `Error` messages, for the user's stderr.
    pub errors: Vec<String>,
}

/// Runs one session: handshake, `request` (an `Exec` or `RunMain`), then
/// `stdin` (if any) followed by `StdinClose`, while every chunk of output goes
/// to `output`; returns at `Exit`. The caller closes the connection after.
///
/// `reader` and `writer` are the two halves of one connection (for example a
/// `UnixStream` and its `try_clone`). Stdin is written from a second thread so
/// a process that answers before reading all its input cannot deadlock.
pub fn exec_client<R: Read, W: Write + Send>(
    mut reader: R,
    mut writer: W,
    request: &Message,
    stdin: Option<&[u8]>,
    mut output: impl FnMut(OutputStream, &[u8]) -> io::Result<()>,
) -> Result<ExecOutcome, FrameError> {
    client_handshake(&mut reader, &mut writer)?;
    write_message(&mut writer, request)?;
    std::thread::scope(|scope| {
        if let Some(data) = stdin {
            scope.spawn(move || {
                for chunk in data.chunks(MAX_DATA) {
                    if write_message(&mut writer, &Message::Stdin(chunk.to_vec())).is_err() {
                        return;
                    }
                }
                let _ = write_message(&mut writer, &Message::StdinClose);
            });
        }
        let mut outcome = ExecOutcome {
            pid: None,
            code: 0,
            errors: Vec::new(),
        };
        loop {
            match read_message(&mut reader)? {
                Some(Message::Started { pid }) => outcome.pid = Some(pid),
                Some(Message::Stdout(d)) => output(OutputStream::Stdout, &d)?,
                Some(Message::Stderr(d)) => output(OutputStream::Stderr, &d)?,
                Some(Message::Error { message }) => outcome.errors.push(message),
                Some(Message::Exit { code }) => {
                    outcome.code = code;
                    return Ok(outcome);
                }
                Some(other) => {
                    return Err(FrameError::Unexpected {
                        expected: "process output or Exit",
                        got: other.name(),
                    })
                }
                None => return Err(FrameError::Closed("the process's Exit")),
            }
        }
    })
}
