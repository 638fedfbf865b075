//! One stream between a guest port and a host Unix socket: its state, its
//! credit accounting both ways (virtio 1.2 §5.10.6.3) and its half-closes.
//!
//! Never blocks: the socket is nonblocking, and whatever the host side cannot
//! take yet waits in a buffer bounded by the credit the guest was given.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::EventSet;

use super::packet::{
    op, Header, HOST_CID, SHUTDOWN_BOTH, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};

/// Buffer space we advertise to the guest per connection: the most guest
/// bytes we ever hold for a host socket that is slow to read.
pub const BUF_ALLOC: u32 = 256 * 1024;

/// Once the guest believes less than this is free, we tell it what we have
/// forwarded since, so a fast stream never stalls on a full credit window.
const CREDIT_UPDATE_THRESHOLD: u32 = BUF_ALLOC / 2;

/// A connection is named by its two ports (the CIDs are fixed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub host_port: u32,
    pub guest_port: u32,
}

impl ConnKey {
    /// The connection a guest packet belongs to.
    pub fn of_guest_packet(hdr: &Header) -> ConnKey {
        ConnKey {
            host_port: hdr.dst_port,
            guest_port: hdr.src_port,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: our REQUEST is queued or sent, the guest has not answered.
    Connecting,
    Established,
}

/// What the owner must do with a connection after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    Keep,
    /// Close the host socket and send the guest an RST.
    Reset,
    /// Close the host socket; the guest already knows (it sent RST) or
    /// never heard of the connection.
    Forget,
}

/// What a connection wants to put in the next RX buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// This header, followed by that many bytes of the scratch buffer.
    Send(Header, usize),
    /// Nothing for now.
    Idle,
    /// The host socket failed: reset the connection.
    Reset,
}

pub struct Connection {
    pub key: ConnKey,
    /// The socket's epoll token.
    pub token: u64,
    stream: UnixStream,
    guest_cid: u64,
    pub state: State,
    /// When the connection is reset unless it has moved on: the guest's
    /// RESPONSE, or the end of a close.
    pub deadline: Option<Instant>,
    /// `deadline` was set since the owner last looked.
    pub deadline_changed: bool,
    linger: Duration,
    /// Queued in the owner's ready list.
    pub in_ready: bool,

    send_request: bool,
    send_response: bool,
    send_credit_update: bool,
    send_shutdown: bool,

    // Host to guest.
    /// Bytes the client sent along with its CONNECT line.
    rx_prefix: Vec<u8>,
    rx_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    host_readable: bool,
    host_eof: bool,

    // Guest to host.
    tx_buf: VecDeque<u8>,
    /// Leading bytes of `tx_buf` that are ours (the OK line), not the guest's.
    tx_uncounted: usize,
    recv_cnt: Wrapping<u32>,
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    host_writable: bool,
    /// The host peer closed its socket (epoll reported HUP or ERR).
    host_hup: bool,
    host_write_shut: bool,

    /// SHUTDOWN flags the guest sent, accumulated.
    guest_shut: u32,
    /// SHUTDOWN flags we decided to send, accumulated.
    our_shut: u32,
}

impl Connection {
    /// A host client asked for guest port `key.guest_port`; the REQUEST
    /// goes out with the next RX buffer.
    pub fn host_initiated(
        key: ConnKey,
        token: u64,
        stream: UnixStream,
        guest_cid: u64,
        rx_prefix: Vec<u8>,
        connect_timeout: Duration,
        linger: Duration,
    ) -> Connection {
        let mut c = Connection::new(key, token, stream, guest_cid, linger);
        c.state = State::Connecting;
        c.send_request = true;
        c.rx_prefix = rx_prefix;
        c.set_deadline(connect_timeout);
        c
    }

    /// The guest's REQUEST reached a host listener; the RESPONSE goes out
    /// with the next RX buffer.
    pub fn guest_initiated(
        key: ConnKey,
        token: u64,
        stream: UnixStream,
        guest_cid: u64,
        request: &Header,
        linger: Duration,
    ) -> Connection {
        let mut c = Connection::new(key, token, stream, guest_cid, linger);
        c.send_response = true;
        c.update_peer_credit(request);
        c
    }

    fn new(
        key: ConnKey,
        token: u64,
        stream: UnixStream,
        guest_cid: u64,
        linger: Duration,
    ) -> Connection {
        Connection {
            key,
            token,
            stream,
            guest_cid,
            state: State::Established,
            deadline: None,
            deadline_changed: false,
            linger,
            in_ready: false,
            send_request: false,
            send_response: false,
            send_credit_update: false,
            send_shutdown: false,
            rx_prefix: Vec::new(),
            rx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            // Edge-triggered epoll reports only changes: assume both until told otherwise.
            host_readable: true,
            host_eof: false,
            tx_buf: VecDeque::new(),
            tx_uncounted: 0,
            recv_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            host_writable: true,
            host_hup: false,
            host_write_shut: false,
            guest_shut: 0,
            our_shut: 0,
        }
    }

    fn set_deadline(&mut self, after: Duration) {
        self.deadline = Some(Instant::now() + after);
        self.deadline_changed = true;
    }

    /// A header from us to the guest, carrying our current credit.
    pub fn header(&mut self, op: u16, flags: u32) -> Header {
        self.last_fwd_cnt_sent = self.fwd_cnt;
        // Any packet tells the guest our credit: no separate update needed.
        self.send_credit_update = false;
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.key.host_port,
            dst_port: self.key.guest_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// Every guest packet restates the guest's buffer space.
    pub fn update_peer_credit(&mut self, hdr: &Header) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
    }

    /// Bytes we may still send: buf_alloc - (rx_cnt - fwd_cnt). A guest that
    /// claims to have forwarded more than it got gets nothing.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn can_send_data(&self) -> bool {
        self.state == State::Established
            && (self.host_readable || !self.rx_prefix.is_empty())
            && !self.host_eof
            && self.guest_shut & SHUTDOWN_RCV == 0
            && self.our_shut & SHUTDOWN_SEND == 0
            && self.peer_credit() > 0
    }

    /// Our REQUEST has not reached the guest yet.
    pub fn request_pending(&self) -> bool {
        self.send_request
    }

    /// Whether `next_rx` may have something to send.
    pub fn has_rx_work(&self) -> bool {
        self.send_request
            || self.send_response
            || self.send_credit_update
            || self.send_shutdown
            || self.can_send_data()
    }

    /// Picks the next packet for the guest, reading host data into
    /// `scratch` when it may: at most `room` bytes, never beyond the credit.
    pub fn next_rx(&mut self, room: usize, scratch: &mut [u8]) -> Next {
        if self.send_request {
            self.send_request = false;
            return Next::Send(self.header(op::REQUEST, 0), 0);
        }
        if self.send_response {
            self.send_response = false;
            return Next::Send(self.header(op::RESPONSE, 0), 0);
        }
        if self.can_send_data() {
            let credit = usize::try_from(self.peer_credit()).unwrap_or(usize::MAX);
            let want = room.min(credit).min(scratch.len());
            if want > 0 {
                match self.read_host(&mut scratch[..want]) {
                    Ok(0) => self.host_closed_sending(),
                    Ok(n) => {
                        // n <= want <= credit, which is a u32.
                        self.rx_cnt += Wrapping(u32::try_from(n).unwrap_or(u32::MAX));
                        return Next::Send(self.header(op::RW, 0), n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.host_readable = false,
                    Err(_) => return Next::Reset,
                }
            }
        }
        if self.send_credit_update {
            return Next::Send(self.header(op::CREDIT_UPDATE, 0), 0);
        }
        if self.send_shutdown {
            self.send_shutdown = false;
            if self.our_shut == SHUTDOWN_BOTH {
                // Now the guest acknowledges with RST, or we reset it after `linger`.
                self.set_deadline(self.linger);
            }
            return Next::Send(self.header(op::SHUTDOWN, self.our_shut), 0);
        }
        Next::Idle
    }

    fn read_host(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.rx_prefix.is_empty() {
            let n = buf.len().min(self.rx_prefix.len());
            buf[..n].copy_from_slice(&self.rx_prefix[..n]);
            self.rx_prefix.drain(..n);
            return Ok(n);
        }
        loop {
            match self.stream.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    /// The host side read to its end: the guest gets SHUTDOWN(SEND), or both
    /// flags when the host socket is gone altogether.
    fn host_closed_sending(&mut self) {
        self.host_eof = true;
        self.host_readable = false;
        self.shut_our_side(if self.host_hup {
            SHUTDOWN_BOTH
        } else {
            SHUTDOWN_SEND
        });
    }

    fn shut_our_side(&mut self, flags: u32) {
        if self.our_shut | flags != self.our_shut {
            self.our_shut |= flags;
            self.send_shutdown = true;
        }
    }

    /// The guest answered our REQUEST: the client learns its port.
    pub fn on_response(&mut self) -> Verdict {
        if self.state != State::Connecting {
            return Verdict::Reset;
        }
        self.state = State::Established;
        self.deadline = None;
        let line = format!("OK {}\n", self.key.host_port);
        self.tx_uncounted = line.len();
        self.tx_buf.extend(line.as_bytes());
        self.flush()
    }

    /// Guest data for the host socket.
    pub fn on_rw(&mut self, payload: &[u8]) -> Verdict {
        if self.state != State::Established || self.guest_shut & SHUTDOWN_SEND != 0 {
            return Verdict::Reset;
        }
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        self.recv_cnt += Wrapping(len);
        if self.host_hup || self.host_write_shut {
            // Nobody will read it; count it as delivered so credit stays honest.
            self.fwd_cnt += Wrapping(len);
            self.check_credit();
            return Verdict::Keep;
        }
        let held = self.tx_buf.len() - self.tx_uncounted;
        if held + payload.len() > BUF_ALLOC as usize {
            // The guest ignored the credit we gave it.
            return Verdict::Reset;
        }
        let mut rest = payload;
        if self.tx_buf.is_empty() {
            match write_host(&mut self.stream, &mut self.host_writable, rest) {
                Ok(n) => {
                    self.count_forwarded(n);
                    rest = &rest[n..];
                }
                // The client closed or shut its reading side: nothing more can reach it.
                Err(_) => return Verdict::Reset,
            }
        }
        self.tx_buf.extend(rest);
        self.check_credit();
        Verdict::Keep
    }

    pub fn on_shutdown(&mut self, flags: u32) -> Verdict {
        self.guest_shut |= flags;
        if self.tx_buf.is_empty() {
            self.shut_host_write_if_done();
        }
        self.settle()
    }

    pub fn on_credit_request(&mut self) {
        self.send_credit_update = true;
    }

    /// Readiness reported by epoll for the host socket.
    pub fn on_host_event(&mut self, events: EventSet) -> Verdict {
        let gone = events.intersects(EventSet::HANG_UP | EventSet::ERROR);
        if events.intersects(EventSet::IN | EventSet::READ_HANG_UP) || gone {
            // Reading finds the data, the end or the error.
            self.host_readable = true;
        }
        if gone {
            if self.state == State::Connecting {
                // The client gave up before the guest answered.
                return if self.send_request {
                    Verdict::Forget
                } else {
                    Verdict::Reset
                };
            }
            self.mark_host_gone();
        }
        if events.contains(EventSet::OUT) {
            self.host_writable = true;
            if self.flush() != Verdict::Keep {
                return Verdict::Reset;
            }
        }
        self.settle()
    }

    fn mark_host_gone(&mut self) {
        self.host_hup = true;
        let discarded = self.tx_buf.len() - self.tx_uncounted;
        self.tx_buf.clear();
        self.tx_uncounted = 0;
        self.count_forwarded(discarded);
    }

    /// Writes buffered guest data to the host socket until it would block.
    pub fn flush(&mut self) -> Verdict {
        while self.host_writable && !self.tx_buf.is_empty() {
            let (front, _) = self.tx_buf.as_slices();
            match write_host(&mut self.stream, &mut self.host_writable, front) {
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    self.count_forwarded(n);
                }
                Err(_) => return Verdict::Reset,
            }
        }
        if self.tx_buf.is_empty() {
            self.shut_host_write_if_done();
        }
        self.check_credit();
        Verdict::Keep
    }

    /// `n` bytes left `tx_buf` (written or discarded); the guest's share of
    /// them moves `fwd_cnt`.
    fn count_forwarded(&mut self, n: usize) {
        let ours = n.min(self.tx_uncounted);
        self.tx_uncounted -= ours;
        let theirs = u32::try_from(n - ours).unwrap_or(u32::MAX);
        self.fwd_cnt += Wrapping(theirs);
    }

    fn check_credit(&mut self) {
        let unacked = (self.recv_cnt - self.last_fwd_cnt_sent).0;
        let guest_view_free = BUF_ALLOC.saturating_sub(unacked);
        if guest_view_free < CREDIT_UPDATE_THRESHOLD && self.fwd_cnt != self.last_fwd_cnt_sent {
            self.send_credit_update = true;
        }
    }

    fn shut_host_write_if_done(&mut self) {
        if self.guest_shut & SHUTDOWN_SEND != 0 && !self.host_write_shut && !self.host_hup {
            self.host_write_shut = true;
            // The client sees the end of the stream; an error means it is gone anyway.
            let _ = self.stream.shutdown(Shutdown::Write);
        }
    }

    /// Decides whether a close has run its course.
    fn settle(&mut self) -> Verdict {
        // Unread host data still goes to the guest first, unless it won't take it.
        if self.host_hup && (self.host_eof || self.guest_shut & SHUTDOWN_RCV != 0) {
            self.shut_our_side(SHUTDOWN_BOTH);
        }
        if self.guest_shut == SHUTDOWN_BOTH {
            // The guest is done: answer with RST once its data reached the host.
            if self.tx_buf.is_empty() || self.host_hup {
                return Verdict::Reset;
            }
            if self.deadline.is_none() {
                self.set_deadline(self.linger);
            }
        }
        Verdict::Keep
    }

    #[cfg(test)]
    pub fn guest_bytes_held(&self) -> usize {
        self.tx_buf.len() - self.tx_uncounted
    }
}

/// Writes as much of `buf` as the host socket takes; only `WouldBlock`
/// clears `writable` (never a short write: edge-triggered epoll reports
/// writability again only after the socket was found full).
fn write_host(stream: &mut UnixStream, writable: &mut bool, buf: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while *writable && done < buf.len() {
        match stream.write(&buf[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => *writable = false,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST_CID: u64 = 3;
    const LINGER: Duration = Duration::from_secs(2);

    fn key() -> ConnKey {
        ConnKey {
            host_port: 4088,
            guest_port: 1234,
        }
    }

    fn guest_header(op: u16, buf_alloc: u32, fwd_cnt: u32) -> Header {
        Header {
            src_cid: GUEST_CID,
            dst_cid: HOST_CID,
            src_port: 1234,
            dst_port: 4088,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc,
            fwd_cnt,
        }
    }

    fn guest_initiated(buf_alloc: u32) -> (Connection, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        let req = guest_header(op::REQUEST, buf_alloc, 0);
        let mut c = Connection::guest_initiated(key(), 7, ours, GUEST_CID, &req, LINGER);
        let mut scratch = [0; 16];
        assert!(matches!(c.next_rx(4096, &mut scratch), Next::Send(h, 0) if h.op == op::RESPONSE));
        (c, theirs)
    }

    #[test]
    fn guest_initiated_connection_answers_with_a_response_first() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let req = guest_header(op::REQUEST, 1000, 0);
        let mut c = Connection::guest_initiated(key(), 7, ours, GUEST_CID, &req, LINGER);
        let mut scratch = [0; 16];
        let Next::Send(h, 0) = c.next_rx(4096, &mut scratch) else {
            panic!("no response");
        };
        assert_eq!(
            (h.op, h.src_cid, h.dst_cid, h.src_port, h.dst_port),
            (op::RESPONSE, 2, 3, 4088, 1234)
        );
        assert_eq!((h.buf_alloc, h.fwd_cnt, h.type_), (BUF_ALLOC, 0, 1));
    }

    #[test]
    fn host_data_never_exceeds_the_guest_credit() {
        let (mut c, mut theirs) = guest_initiated(100);
        theirs.write_all(&[7; 300]).unwrap();
        let mut scratch = vec![0; 4096];
        let Next::Send(h, n) = c.next_rx(4096, &mut scratch) else {
            panic!("no data");
        };
        assert_eq!((h.op, n), (op::RW, 100));
        assert_eq!(c.peer_credit(), 0);
        assert!(!c.has_rx_work());
        assert_eq!(c.next_rx(4096, &mut scratch), Next::Idle);

        // The guest consumed 60 bytes: 60 more may go.
        c.update_peer_credit(&guest_header(op::CREDIT_UPDATE, 100, 60));
        assert!(c.has_rx_work());
        let Next::Send(_, n) = c.next_rx(4096, &mut scratch) else {
            panic!("no data");
        };
        assert_eq!(n, 60);
    }

    #[test]
    fn guest_claiming_more_forwarded_than_sent_gets_no_credit() {
        let (mut c, _theirs) = guest_initiated(100);
        c.update_peer_credit(&guest_header(op::CREDIT_UPDATE, 100, 50));
        assert_eq!(c.peer_credit(), 0);
    }

    #[test]
    fn guest_data_beyond_our_credit_resets_the_connection() {
        let (mut c, _theirs) = guest_initiated(100);
        // Nobody reads the host side: the socket buffer fills, then ours.
        let chunk = vec![1u8; 64 * 1024];
        let mut sent = 0;
        let verdict = loop {
            let v = c.on_rw(&chunk);
            if v != Verdict::Keep {
                break v;
            }
            sent += chunk.len();
            assert!(c.guest_bytes_held() <= BUF_ALLOC as usize);
            assert!(sent < 64 << 20, "never pushed back");
        };
        assert_eq!(verdict, Verdict::Reset);
    }

    #[test]
    fn credit_update_is_offered_once_the_guest_view_runs_low() {
        let (mut c, _theirs) = guest_initiated(100);
        let chunk = vec![1u8; 64 * 1024];
        assert_eq!(c.on_rw(&chunk), Verdict::Keep);
        assert!(!c.send_credit_update);
        assert_eq!(c.on_rw(&chunk), Verdict::Keep);
        assert_eq!(c.on_rw(&chunk), Verdict::Keep);
        // 192 KiB unacknowledged out of 256 KiB: the guest hears what we forwarded.
        assert!(c.send_credit_update);
        let mut scratch = [0; 16];
        // Nothing to read from the host, so no RW carries the credit first.
        c.host_readable = false;
        let Next::Send(h, 0) = c.next_rx(4096, &mut scratch) else {
            panic!("no update");
        };
        assert_eq!(h.op, op::CREDIT_UPDATE);
        assert_eq!(h.fwd_cnt, c.fwd_cnt.0);
        assert!(h.fwd_cnt > 0);
    }

    #[test]
    fn credit_request_is_answered() {
        let (mut c, _theirs) = guest_initiated(100);
        c.host_readable = false;
        c.on_credit_request();
        let mut scratch = [0; 16];
        assert!(
            matches!(c.next_rx(4096, &mut scratch), Next::Send(h, 0) if h.op == op::CREDIT_UPDATE)
        );
    }

    #[test]
    fn host_end_of_stream_becomes_shutdown_send() {
        let (mut c, theirs) = guest_initiated(100);
        theirs.shutdown(Shutdown::Write).unwrap();
        let mut scratch = [0; 16];
        let Next::Send(h, 0) = c.next_rx(4096, &mut scratch) else {
            panic!("no shutdown");
        };
        assert_eq!((h.op, h.flags), (op::SHUTDOWN, SHUTDOWN_SEND));
        assert_eq!(c.deadline, None);
    }

    #[test]
    fn host_close_becomes_shutdown_both_with_a_deadline() {
        let (mut c, theirs) = guest_initiated(100);
        drop(theirs);
        assert_eq!(
            c.on_host_event(EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP),
            Verdict::Keep
        );
        let mut scratch = [0; 16];
        let Next::Send(h, 0) = c.next_rx(4096, &mut scratch) else {
            panic!("no shutdown");
        };
        assert_eq!((h.op, h.flags), (op::SHUTDOWN, SHUTDOWN_BOTH));
        assert!(c.deadline.is_some());
        assert_eq!(c.next_rx(4096, &mut scratch), Next::Idle);
    }

    #[test]
    fn guest_shutdown_both_is_answered_with_reset_once_flushed() {
        let (mut c, mut theirs) = guest_initiated(100);
        assert_eq!(c.on_shutdown(SHUTDOWN_SEND), Verdict::Keep);
        let mut buf = [0; 8];
        // The client sees the end of the stream.
        assert_eq!(theirs.read(&mut buf).unwrap(), 0);
        assert_eq!(c.on_shutdown(SHUTDOWN_RCV), Verdict::Reset);
    }

    #[test]
    fn data_after_the_guest_shut_its_sending_side_resets() {
        let (mut c, _theirs) = guest_initiated(100);
        assert_eq!(c.on_shutdown(SHUTDOWN_SEND), Verdict::Keep);
        assert_eq!(c.on_rw(b"late"), Verdict::Reset);
    }

    #[test]
    fn response_to_an_established_connection_resets() {
        let (mut c, _theirs) = guest_initiated(100);
        assert_eq!(c.on_response(), Verdict::Reset);
    }

    #[test]
    fn host_initiated_connection_sends_request_then_ok_line() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let key = ConnKey {
            host_port: 1024,
            guest_port: 5000,
        };
        let mut c =
            Connection::host_initiated(key, 9, ours, GUEST_CID, b"early".to_vec(), LINGER, LINGER);
        let mut scratch = [0; 16];
        let Next::Send(h, 0) = c.next_rx(4096, &mut scratch) else {
            panic!("no request");
        };
        assert_eq!((h.op, h.src_port, h.dst_port), (op::REQUEST, 1024, 5000));
        // No data before the guest accepts.
        assert_eq!(c.next_rx(4096, &mut scratch), Next::Idle);
        assert!(c.deadline.is_some());

        assert_eq!(c.on_response(), Verdict::Keep);
        assert_eq!(c.deadline, None);
        let mut line = [0; 8];
        theirs.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"OK 1024\n");
        // The OK line is not guest data: fwd_cnt stays 0.
        assert_eq!(c.fwd_cnt.0, 0);

        c.update_peer_credit(&guest_header(op::RESPONSE, 4096, 0));
        let Next::Send(h, n) = c.next_rx(4096, &mut scratch) else {
            panic!("no early data");
        };
        assert_eq!((h.op, &scratch[..n]), (op::RW, &b"early"[..]));
    }
}
