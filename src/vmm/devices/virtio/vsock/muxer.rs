//! The device's shared state: every connection, the host clients still
//! owing their CONNECT line, and the queues. Both the vCPU thread (TX kicks,
//! RX refills) and the worker thread (socket readiness, timers) drive it,
//! one at a time behind a mutex; nothing here blocks.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::connection::{ConnKey, Connection, Next, State, Verdict};
use super::packet::{
    self, op, read_tx_chain, GuestPacket, Header, Op, Refusal, RxBuffer, HEADER_LEN, HOST_CID,
    MAX_PAYLOAD, TYPE_STREAM,
};
use crate::vmm::devices::virtio::{GuestMemory, Interrupt, WarnOnce};

/// Epoll token of the listening socket.
pub const TOKEN_LISTENER: u64 = 0;
/// Epoll token of the EventFd that wakes the worker.
pub const TOKEN_WAKE: u64 = 1;
const FIRST_SOCKET_TOKEN: u64 = 2;

/// First port handed to host-initiated streams; lower ones are left to
/// services the guest might connect to.
pub const FIRST_LOCAL_PORT: u32 = 1024;
/// Most connections at once: enough for hundreds of streams, and a bound on
/// what a guest (or host clients) can make us hold.
pub const MAX_CONNECTIONS: usize = 4096;
/// Most host clients still sending their CONNECT line.
const MAX_PENDING_CLIENTS: usize = 1024;
/// Longest CONNECT line, newline included ("CONNECT 4294967294\n" is 19).
const MAX_CONNECT_LINE: usize = 32;
/// Most RSTs waiting for RX buffers: a guest that sends garbage faster than
/// it reads loses the excess, not host memory.
const MAX_QUEUED_CONTROL: usize = 1024;

/// How long each step of a stream's life may take.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// A host client has this long to send its CONNECT line.
    pub connect_line: Duration,
    /// The guest has this long to answer a host-initiated REQUEST.
    pub connect: Duration,
    /// After a full SHUTDOWN either way, the other side has this long to
    /// finish before we reset the stream.
    pub linger: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_line: Duration::from_secs(5),
            connect: Duration::from_secs(5),
            linger: Duration::from_secs(2),
        }
    }
}

/// What a device keeps across activations and hands each muxer.
#[derive(Clone, Debug)]
pub struct Settings {
    pub guest_cid: u64,
    /// The device's socket; guest connections to port P go to `<uds_path>_P`.
    pub uds_path: PathBuf,
    pub timeouts: Timeouts,
    /// Complaints about the guest and about host sockets, printed once each.
    pub guest_error: Arc<WarnOnce>,
    pub host_error: Arc<WarnOnce>,
}

/// A host client that has not yet said which guest port it wants.
struct PendingClient {
    stream: UnixStream,
    line: Vec<u8>,
    deadline: Instant,
}

/// The three queues, once the driver has set them up.
pub struct Queues {
    pub rx: Queue,
    pub tx: Queue,
    /// Held so the driver's buffers stay ours; we send no events (they are
    /// for live migration, which a box does not do).
    pub _event: Queue,
}

pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    mem: GuestMemory,
    queues: Queues,
    interrupt: Arc<dyn Interrupt>,
    epoll: Arc<Epoll>,
    timeouts: Timeouts,
    conns: HashMap<ConnKey, Connection>,
    /// Socket tokens of established and connecting streams.
    tokens: HashMap<u64, ConnKey>,
    pending: HashMap<u64, PendingClient>,
    next_token: u64,
    /// Connections per host port, so new local ports skip the busy ones.
    host_ports: HashMap<u32, usize>,
    next_local_port: u32,
    /// Connections that may have something for the guest, served in turn.
    ready: VecDeque<ConnKey>,
    /// RSTs for streams that are already gone.
    control: VecDeque<Header>,
    tx_scratch: Vec<u8>,
    rx_scratch: Vec<u8>,
    /// A deadline was set from the vCPU side: the worker must recompute its timeout.
    wake_worker: bool,
    guest_error: Arc<WarnOnce>,
    host_error: Arc<WarnOnce>,
}

impl Muxer {
    pub fn new(
        settings: Settings,
        mem: GuestMemory,
        queues: Queues,
        interrupt: Arc<dyn Interrupt>,
        epoll: Arc<Epoll>,
    ) -> Muxer {
        let Settings {
            guest_cid,
            uds_path,
            timeouts,
            guest_error,
            host_error,
        } = settings;
        Muxer {
            guest_cid,
            uds_path,
            mem,
            queues,
            interrupt,
            epoll,
            timeouts,
            conns: HashMap::new(),
            tokens: HashMap::new(),
            pending: HashMap::new(),
            next_token: FIRST_SOCKET_TOKEN,
            host_ports: HashMap::new(),
            next_local_port: FIRST_LOCAL_PORT,
            ready: VecDeque::new(),
            control: VecDeque::new(),
            tx_scratch: Vec::with_capacity(HEADER_LEN + MAX_PAYLOAD as usize),
            rx_scratch: vec![0; MAX_PAYLOAD as usize],
            wake_worker: false,
            guest_error,
            host_error,
        }
    }

    fn warn_guest(&self, what: &dyn std::error::Error) {
        self.guest_error
            .warn_error(format_args!("virtio-vsock"), what);
    }

    fn warn_host(&self, what: std::fmt::Arguments<'_>) {
        self.host_error.warn(format_args!("virtio-vsock"), what);
    }

    /// Whether the vCPU side must wake the worker (and forget it asked).
    pub fn take_wake_request(&mut self) -> bool {
        std::mem::take(&mut self.wake_worker)
    }

    // ---- guest side -------------------------------------------------------

    /// Handles every packet the guest made available on the TX queue, then
    /// sends what it caused. Runs on the vCPU thread that kicked the queue.
    pub fn process_tx(&mut self) {
        let mut used = false;
        let mut bytes = std::mem::take(&mut self.tx_scratch);
        while let Some(chain) = self.queues.tx.pop_descriptor_chain(&self.mem) {
            let head = chain.head_index();
            let read = read_tx_chain(&self.mem, chain, &mut bytes);
            if let Err(source) = self.queues.tx.add_used(&self.mem, head, 0) {
                self.warn_guest(&source);
            }
            used = true;
            match read {
                Ok(()) => self.handle_guest_packet(&bytes),
                Err(e) => self.warn_guest(&e),
            }
        }
        self.tx_scratch = bytes;
        let rx_used = self.fill_rx();
        self.notify_guest(used, rx_used);
    }

    /// One interrupt for whatever either queue returned.
    fn notify_guest(&mut self, tx_used: bool, rx_used: bool) {
        // Both are asked: with EVENT_IDX the question updates the queue's state.
        let tx = tx_used && self.queues.tx.needs_notification(&self.mem).unwrap_or(true);
        let rx = rx_used && self.queues.rx.needs_notification(&self.mem).unwrap_or(true);
        if tx || rx {
            self.interrupt.signal_used_queue();
        }
    }

    /// Acts on one packet from the guest: `bytes` is its header and payload.
    pub fn handle_guest_packet(&mut self, bytes: &[u8]) {
        let pkt = match packet::parse_guest_packet(bytes, self.guest_cid) {
            Ok(pkt) => pkt,
            Err(e) => {
                self.warn_guest(&e);
                if let Refusal::Rst(hdr) = e.refusal(bytes) {
                    // The stream it names (if any) has lost bytes: end it.
                    let key = ConnKey::of_guest_packet(&hdr);
                    if self.conns.contains_key(&key) {
                        self.reset(key);
                    } else {
                        self.queue_control(self.rst_reply(&hdr));
                    }
                }
                return;
            }
        };
        let key = ConnKey::of_guest_packet(&pkt.hdr);
        if pkt.op == Op::Request {
            self.guest_connect(key, &pkt.hdr);
            return;
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            if pkt.op != Op::Rst {
                self.queue_control(self.rst_reply(&pkt.hdr));
            }
            return;
        };
        conn.update_peer_credit(&pkt.hdr);
        let GuestPacket { op, payload, .. } = pkt;
        let verdict = match op {
            Op::Request => unreachable!("handled above"),
            Op::Response => conn.on_response(),
            Op::Rst => Verdict::Forget,
            Op::Shutdown(flags) => conn.on_shutdown(flags),
            Op::Rw => conn.on_rw(payload),
            Op::CreditUpdate => Verdict::Keep,
            Op::CreditRequest => {
                conn.on_credit_request();
                Verdict::Keep
            }
        };
        self.apply(key, verdict);
    }

    /// The guest connects to host port `key.host_port`: we connect to the
    /// Unix socket `<uds_path>_<port>`, or answer RST.
    fn guest_connect(&mut self, key: ConnKey, request: &Header) {
        if self.conns.contains_key(&key) {
            // A second REQUEST for a live stream: neither can be trusted.
            self.reset(key);
            return;
        }
        if self.conns.len() >= MAX_CONNECTIONS {
            self.warn_host(format_args!(
                "refusing a guest connection: {MAX_CONNECTIONS} streams are open"
            ));
            self.queue_control(self.rst_reply(request));
            return;
        }
        let path = port_path(&self.uds_path, key.host_port);
        let stream = match connect_nonblocking(Path::new(&path)) {
            Ok(stream) => stream,
            // Nobody listens there (or its backlog is full): the guest sees a refusal.
            Err(_) => {
                self.queue_control(self.rst_reply(request));
                return;
            }
        };
        let token = self.next_token();
        if let Err(e) = self.register(&stream, token) {
            self.warn_host(format_args!("could not watch a host socket: {e}"));
            self.queue_control(self.rst_reply(request));
            return;
        }
        let conn = Connection::guest_initiated(
            key,
            token,
            stream,
            self.guest_cid,
            request,
            self.timeouts.linger,
        );
        self.insert(conn);
    }

    /// An RST answering a guest packet that has no stream.
    fn rst_reply(&self, to: &Header) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: to.dst_port,
            dst_port: to.src_port,
            len: 0,
            type_: TYPE_STREAM,
            op: op::RST,
            flags: 0,
            buf_alloc: 0,
            fwd_cnt: 0,
        }
    }

    fn queue_control(&mut self, hdr: Header) {
        if self.control.len() < MAX_QUEUED_CONTROL {
            self.control.push_back(hdr);
        }
    }

    /// Fills RX buffers with whatever is waiting and interrupts the guest
    /// if it got any.
    pub fn pump_rx(&mut self) {
        let used = self.fill_rx();
        self.notify_guest(false, used);
    }

    /// Fills RX buffers with whatever is waiting: RSTs first, then each
    /// ready stream in turn, one packet at a time, so hundreds of streams
    /// share the queue fairly. Returns whether any buffer was used.
    fn fill_rx(&mut self) -> bool {
        let mut used = false;
        let mut idle = Vec::new();
        let mut scratch = std::mem::take(&mut self.rx_scratch);
        'buffers: while !self.control.is_empty() || !self.ready.is_empty() {
            let Some(chain) = self.queues.rx.pop_descriptor_chain(&self.mem) else {
                break;
            };
            let head = chain.head_index();
            let buf = match RxBuffer::from_chain(&self.mem, chain) {
                Ok(buf) => buf,
                Err(e) => {
                    self.warn_guest(&e);
                    // Unusable: give it back empty so the driver does not stall on it.
                    self.add_rx_used(head, 0);
                    used = true;
                    continue;
                }
            };
            loop {
                if let Some(hdr) = self.control.pop_front() {
                    let len = buf.write(&self.mem, &hdr, &[]).unwrap_or_else(|e| {
                        self.warn_guest(&e);
                        0
                    });
                    self.add_rx_used(head, len);
                    used = true;
                    continue 'buffers;
                }
                let Some(key) = self.ready.pop_front() else {
                    // Nothing after all: the buffer stays with the queue.
                    self.queues.rx.go_to_previous_position();
                    break 'buffers;
                };
                let Some(conn) = self.conns.get_mut(&key) else {
                    continue;
                };
                conn.in_ready = false;
                match conn.next_rx(buf.payload_room(), &mut scratch) {
                    Next::Send(hdr, n) => {
                        let written = buf.write(&self.mem, &hdr, &scratch[..n]);
                        let len = match written {
                            Ok(len) => len,
                            Err(e) => {
                                self.warn_guest(&e);
                                // The stream lost bytes on the way: end it.
                                self.reset(key);
                                0
                            }
                        };
                        self.add_rx_used(head, len);
                        used = true;
                        // Back of the line if it has more: streams take turns.
                        self.apply(key, Verdict::Keep);
                        continue 'buffers;
                    }
                    // Revisited after this pass: one that still cannot use a
                    // buffer this size must not spin on it.
                    Next::Idle => idle.push(key),
                    Next::Reset => self.reset(key),
                }
            }
        }
        self.rx_scratch = scratch;
        for key in idle {
            self.apply(key, Verdict::Keep);
        }
        used
    }

    fn add_rx_used(&mut self, head: u16, len: u32) {
        if let Err(e) = self.queues.rx.add_used(&self.mem, head, len) {
            self.warn_guest(&e);
        }
    }

    // ---- host side ---------------------------------------------------------

    /// A client connected to the device's socket; it owes us a CONNECT line.
    pub fn add_host_client(&mut self, stream: UnixStream) {
        if self.pending.len() >= MAX_PENDING_CLIENTS {
            self.warn_host(format_args!(
                "dropping a client: {MAX_PENDING_CLIENTS} have not sent CONNECT yet"
            ));
            return;
        }
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let token = self.next_token();
        if let Err(e) = self.register(&stream, token) {
            self.warn_host(format_args!("could not watch a host socket: {e}"));
            return;
        }
        let deadline = Instant::now() + self.timeouts.connect_line;
        self.wake_worker = true;
        self.pending.insert(
            token,
            PendingClient {
                stream,
                line: Vec::new(),
                deadline,
            },
        );
        // The line may have arrived with the connection.
        self.read_connect_line(token);
    }

    /// Epoll reported `events` for socket `token`.
    pub fn handle_socket_event(&mut self, token: u64, events: EventSet) {
        if self.pending.contains_key(&token) {
            self.read_connect_line(token);
            return;
        }
        let Some(&key) = self.tokens.get(&token) else {
            // Closed earlier in this batch of events.
            return;
        };
        if let Some(conn) = self.conns.get_mut(&key) {
            let verdict = conn.on_host_event(events);
            self.apply(key, verdict);
        }
    }

    fn read_connect_line(&mut self, token: u64) {
        let Some(client) = self.pending.get_mut(&token) else {
            return;
        };
        let mut buf = [0u8; MAX_CONNECT_LINE];
        let newline = loop {
            if let Some(i) = client.line.iter().position(|&b| b == b'\n') {
                break i;
            }
            if client.line.len() >= MAX_CONNECT_LINE {
                // No newline where a CONNECT line must have one.
                self.pending.remove(&token);
                return;
            }
            match client.stream.read(&mut buf) {
                Ok(0) => {
                    self.pending.remove(&token);
                    return;
                }
                Ok(n) => client.line.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.pending.remove(&token);
                    return;
                }
            }
        };
        let Some(client) = self.pending.remove(&token) else {
            return;
        };
        let Some(guest_port) = parse_connect_line(&client.line[..newline]) else {
            return;
        };
        // Bytes the client sent right after its line are the stream's first.
        let early = client.line[newline + 1..].to_vec();
        if self.conns.len() >= MAX_CONNECTIONS {
            self.warn_host(format_args!(
                "refusing a host client: {MAX_CONNECTIONS} streams are open"
            ));
            return;
        }
        let Some(host_port) = self.allocate_local_port() else {
            return;
        };
        let key = ConnKey {
            host_port,
            guest_port,
        };
        let conn = Connection::host_initiated(
            key,
            token,
            client.stream,
            self.guest_cid,
            early,
            self.timeouts.connect,
            self.timeouts.linger,
        );
        self.insert(conn);
    }

    /// The next free host port for a host-initiated stream, from 1024 up,
    /// wrapping, skipping ports any stream uses.
    fn allocate_local_port(&mut self) -> Option<u32> {
        // At most one try per port in use, plus one.
        for _ in 0..=self.host_ports.len() {
            let port = self.next_local_port;
            // u32::MAX is VMADDR_PORT_ANY.
            self.next_local_port = if port >= u32::MAX - 1 {
                FIRST_LOCAL_PORT
            } else {
                port + 1
            };
            if !self.host_ports.contains_key(&port) {
                return Some(port);
            }
        }
        None
    }

    // ---- timers --------------------------------------------------------------

    /// Milliseconds until the next deadline, or -1 for none (epoll's "forever").
    pub fn next_timeout_ms(&mut self, now: Instant) -> i32 {
        self.wake_worker = false;
        let next = self
            .conns
            .values()
            .filter_map(|c| c.deadline)
            .chain(self.pending.values().map(|p| p.deadline))
            .min();
        match next {
            None => -1,
            Some(at) => {
                let wait = at.saturating_duration_since(now);
                // Round up so we never wake just before the deadline.
                let ms = wait.as_millis() + u128::from(wait.subsec_nanos() % 1_000_000 != 0);
                i32::try_from(ms).unwrap_or(i32::MAX)
            }
        }
    }

    /// Ends whatever ran out of time: clients that never sent CONNECT,
    /// guests that never answered, closes that never finished.
    pub fn expire(&mut self, now: Instant) {
        self.pending.retain(|_, p| p.deadline > now);
        let late: Vec<ConnKey> = self
            .conns
            .values()
            .filter(|c| c.deadline.is_some_and(|d| d <= now))
            .map(|c| c.key)
            .collect();
        for key in late {
            self.reset(key);
        }
    }

    // ---- bookkeeping -------------------------------------------------------

    fn next_token(&mut self) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        token
    }

    /// Watches a socket edge-triggered: we read and write until `WouldBlock`
    /// and remember readiness ourselves, so no event repeats while a stream
    /// waits for credit or RX buffers.
    fn register(&self, stream: &UnixStream, token: u64) -> io::Result<()> {
        let events =
            EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED;
        self.epoll.ctl(
            ControlOperation::Add,
            stream.as_raw_fd(),
            EpollEvent::new(events, token),
        )
    }

    fn insert(&mut self, conn: Connection) {
        let key = conn.key;
        *self.host_ports.entry(key.host_port).or_default() += 1;
        self.tokens.insert(conn.token, key);
        self.conns.insert(key, conn);
        self.apply(key, Verdict::Keep);
    }

    /// Carries out a connection's verdict; a kept one joins the ready list
    /// if it has something for the guest.
    fn apply(&mut self, key: ConnKey, verdict: Verdict) {
        match verdict {
            Verdict::Keep => {
                let Some(conn) = self.conns.get_mut(&key) else {
                    return;
                };
                if std::mem::take(&mut conn.deadline_changed) {
                    self.wake_worker = true;
                }
                if !conn.in_ready && conn.has_rx_work() {
                    conn.in_ready = true;
                    self.ready.push_back(key);
                }
            }
            Verdict::Reset => self.reset(key),
            Verdict::Forget => {
                self.remove(key);
            }
        }
    }

    /// Closes the host socket and tells the guest with an RST.
    fn reset(&mut self, key: ConnKey) {
        if let Some(mut conn) = self.remove(key) {
            // If our REQUEST never left, the guest has nothing to reset.
            if !(conn.state == State::Connecting && conn.request_pending()) {
                let rst = conn.header(op::RST, 0);
                self.queue_control(rst);
            }
        }
    }

    fn remove(&mut self, key: ConnKey) -> Option<Connection> {
        let conn = self.conns.remove(&key)?;
        self.tokens.remove(&conn.token);
        if let Some(count) = self.host_ports.get_mut(&key.host_port) {
            *count -= 1;
            if *count == 0 {
                self.host_ports.remove(&key.host_port);
            }
        }
        // Dropping the stream closes it, which also takes it out of epoll.
        Some(conn)
    }
}

/// Parses `CONNECT <port>` (the newline already stripped): the word, one or
/// more spaces, a decimal port; a trailing `\r` is tolerated.
pub fn parse_connect_line(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.split_ascii_whitespace();
    let (Some("CONNECT"), Some(port), None) = (words.next(), words.next(), words.next()) else {
        return None;
    };
    // `u32::from_str` would also take a leading '+'.
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u32 = port.parse().ok()?;
    // u32::MAX is VMADDR_PORT_ANY, never a real port.
    (port != u32::MAX).then_some(port)
}

/// `<uds_path>_<port>`: where a guest connection to host port `port` goes.
pub fn port_path(uds_path: &Path, port: u32) -> OsString {
    let mut path = uds_path.as_os_str().to_owned();
    path.push(format!("_{port}"));
    path
}

/// Connects a nonblocking Unix stream socket to `path`. `std` can only
/// connect blocking, which waits when the listener's backlog is full; a
/// vCPU thread must never wait on a host process.
pub fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    // SAFETY: socket(2) takes no pointers; we check the result before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket we just created and own alone; OwnedFd closes it once.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };

    // SAFETY: sockaddr_un is plain old data, valid when all zero.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::sa_family_t::try_from(libc::AF_UNIX)
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let bytes = path.as_os_str().as_bytes();
    // Leave room for the terminating NUL; an embedded NUL would name another path.
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = libc::c_char::from_ne_bytes([src]);
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    let len =
        libc::socklen_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        // SAFETY: `addr` is an initialised sockaddr_un that outlives the call
        // and `len` covers its family and the NUL-terminated path within it;
        // connect(2) only reads it.
        let ret = unsafe {
            libc::connect(
                socket.as_raw_fd(),
                std::ptr::addr_of!(addr).cast::<libc::sockaddr>(),
                len,
            )
        };
        if ret == 0 {
            return Ok(UnixStream::from(socket));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            // Unix sockets connect at once or fail: EAGAIN means a full backlog.
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_line_parses_a_decimal_port() {
        assert_eq!(parse_connect_line(b"CONNECT 4088"), Some(4088));
        assert_eq!(parse_connect_line(b"CONNECT 0"), Some(0));
        assert_eq!(parse_connect_line(b"CONNECT  52\r"), Some(52));
        assert_eq!(
            parse_connect_line(b"CONNECT 4294967294"),
            Some(u32::MAX - 1)
        );
    }

    #[test]
    fn malformed_connect_lines_are_refused() {
        for line in [
            &b""[..],
            b"CONNECT",
            b"CONNECT ",
            b"connect 5",
            b"CONNECT +5",
            b"CONNECT -5",
            b"CONNECT 5 6",
            b"CONNECT 0x10",
            b"CONNECT 4294967295",
            b"CONNECT 99999999999",
            b"CONNECTX 5",
            b"CONNECT \xff",
        ] {
            assert_eq!(parse_connect_line(line), None, "{line:?}");
        }
    }

    #[test]
    fn port_path_appends_the_port() {
        assert_eq!(
            port_path(Path::new("/run/box/vsock.sock"), 4087),
            OsString::from("/run/box/vsock.sock_4087")
        );
    }

    #[test]
    fn connecting_to_a_missing_socket_fails_at_once() {
        let err = connect_nonblocking(Path::new("/nonexistent/a3s-vsock-test.sock")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let long = "x".repeat(200);
        let err = connect_nonblocking(Path::new(&long)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
