//! A byte stream carried in data frames: the tar stream of a file request
//! (`Stdout` frames from the guest, `Stdin` frames from the host).

use std::io::{self, Read, Write};

use super::frame::{read_message, write_message, Message, MAX_DATA};

/// Reads the payloads of `Stdout` or `Stdin` frames as one stream, which
/// ends at `StdinClose` or `Exit` 0; an `Error` frame is a read error
/// carrying the peer's message.
pub struct DataReader<R> {
    inner: R,
    chunk: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl<R: Read> DataReader<R> {
    pub fn new(inner: R) -> Self {
        DataReader {
            inner,
            chunk: Vec::new(),
            pos: 0,
            ended: false,
        }
    }

    /// The connection, for what follows the stream.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for DataReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            match read_message(&mut self.inner).map_err(io::Error::other)? {
                Some(Message::Stdout(d) | Message::Stdin(d)) => {
                    self.chunk = d;
                    self.pos = 0;
                }
                Some(Message::StdinClose | Message::Exit { code: 0 }) => self.ended = true,
                Some(Message::Error { message }) => return Err(io::Error::other(message)),
                Some(other) => {
                    return Err(io::Error::other(format!(
                        "unexpected {} message in a data stream",
                        other.name()
                    )))
                }
                None => return Err(io::ErrorKind::UnexpectedEof.into()),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Writes a stream as `Stdout` (guest) or `Stdin` (host) frames of up to
/// [`MAX_DATA`] bytes.
pub struct DataWriter<W: Write> {
    inner: W,
    stdin: bool,
    buf: Vec<u8>,
}

impl<W: Write> DataWriter<W> {
    /// `stdin`: send `Stdin` frames (host to guest), else `Stdout`.
    pub fn new(inner: W, stdin: bool) -> Self {
        DataWriter {
            inner,
            stdin,
            buf: Vec::with_capacity(MAX_DATA),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(MAX_DATA));
        let msg = if self.stdin {
            Message::Stdin(data)
        } else {
            Message::Stdout(data)
        };
        write_message(&mut self.inner, &msg).map_err(io::Error::other)
    }

    /// Sends what is buffered and gives the connection back.
    pub fn finish(mut self) -> io::Result<W> {
        self.send()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for DataWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(MAX_DATA - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == MAX_DATA {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()?;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_goes_through_frames_and_ends_at_exit_zero() {
        let data: Vec<u8> = (0..200_000u32)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        let mut w = DataWriter::new(Vec::new(), false);
        w.write_all(&data).unwrap();
        let mut wire = w.finish().unwrap();
        write_message(&mut wire, &Message::Exit { code: 0 }).unwrap();
        let mut got = Vec::new();
        DataReader::new(wire.as_slice())
            .read_to_end(&mut got)
            .unwrap();
        assert_eq!(got, data);
    }

    #[test]
    fn an_error_frame_is_a_read_error_with_its_message() {
        let mut wire = Message::Stdin(b"part".to_vec()).encode().unwrap();
        wire.extend(
            Message::Error {
                message: "disk full".into(),
            }
            .encode()
            .unwrap(),
        );
        let mut got = Vec::new();
        let e = DataReader::new(wire.as_slice())
            .read_to_end(&mut got)
            .unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        let cut = Message::Stdin(b"x".to_vec()).encode().unwrap();
        let e = DataReader::new(cut.as_slice())
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
