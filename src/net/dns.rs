//! The embedded DNS resolver of user networks.
//!
//! Boxes on a user (bridge) network use the network's gateway as their
//! nameserver, as Docker's containers use 127.0.0.11: a box's name and its
//! aliases resolve to its address on the network, every other name goes to
//! the host's own resolvers. Each box's shim serves it, bound with
//! `SO_REUSEPORT` on the gateway's port 53 (UDP and TCP), so several shims
//! of one network share the address; they read the same records, so any of
//! them answers alike, and the network keeps its resolver while any box runs.
//!
//! The queries come from inside a VM and are treated as hostile: anything
//! that does not parse is dropped or answered FORMERR, never trusted.
//! Messages are read and written with `simple-dns`; only the fixed 12-byte
//! header is looked at directly, to judge a query before parsing it and to
//! check an upstream's reply without parsing it (it is relayed unchanged).

use std::io::{self, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener, TcpStream, UdpSocket,
};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::net::{sockopt, AddressFamily, SocketFlags, SocketType};
use simple_dns::rdata::{RData, A, OPT};
use simple_dns::{Packet, PacketFlag, SimpleDnsError, CLASS, QCLASS, QTYPE, TYPE};

/// Who is on the network.
pub trait Names: Send + Sync {
    /// `lookup` gets the query name lower-cased, without the trailing dot.
    /// `Some(addrs)` (maybe empty) if the name belongs to the network: it is
    /// answered here and never forwarded; `None`: not ours, forward upstream.
    /// The addresses are answered in the order given (shuffle them here for
    /// Docker's round robin over an alias shared by several boxes).
    fn lookup(&self, name: &str) -> Option<Vec<Ipv4Addr>>;

    /// The resolvers the box at `client` forwards to, when it has its own
    /// (`--dns` on a user network, as Docker's embedded resolver takes
    /// them); `None`: the resolver's own upstreams.
    fn upstreams_for(&self, _client: IpAddr) -> Option<Vec<SocketAddr>> {
        None
    }
}

/// What to do with one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Send this message back to the client.
    Answer(Vec<u8>),
    /// Not a name of the network: ask the upstream resolvers.
    Forward,
    /// Garbage, or not a query at all: say nothing.
    Drop,
}

/// Time to live of the answers for the network's names (as Docker's).
pub const TTL: u32 = 600;
/// How long each upstream resolver is given to answer a forwarded query.
/// Below the 5 s a box's libc waits before it asks again, so a client sees
/// our SERVFAIL rather than its own timeout when one upstream is silent.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);
/// Forwarded UDP queries in flight at once; past this the query gets SERVFAIL.
const MAX_FORWARDS: usize = 64;
/// TCP connections served at once; more are closed as they come.
const MAX_TCP: usize = 16;
/// A TCP client that sends nothing for this long is hung up on.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// The most nameservers a host's libc uses (glibc's and musl's MAXNS).
const MAX_UPSTREAMS: usize = 3;
/// The largest UDP answer we send to a client that announces more (EDNS).
const EDNS_PAYLOAD: u16 = 4096;
/// A UDP answer's size limit without EDNS (RFC 1035).
const UDP_PAYLOAD: usize = 512;

/// The header bits this resolver reads or writes (RFC 1035 4.1.1).
const QR: u16 = 0x8000;
const OPCODE: u16 = 0x7800;
const RD: u16 = 0x0100;
const RA: u16 = 0x0080;
const RCODE: u16 = 0x000f;
const FORMERR: u16 = 1;
const SERVFAIL: u16 = 2;
const NOTIMP: u16 = 4;
const REFUSED: u16 = 5;
const HEADER_LEN: usize = 12;

/// The fixed part of a message, read without trusting the rest.
struct Header {
    id: u16,
    flags: u16,
    qdcount: u16,
}

impl Header {
    fn read(msg: &[u8]) -> Option<Header> {
        let word = |i: usize| u16::from_be_bytes([msg[i], msg[i + 1]]);
        (msg.len() >= HEADER_LEN).then(|| Header {
            id: word(0),
            flags: word(2),
            qdcount: word(4),
        })
    }

    /// A header-only answer with `rcode`, for a query whose body is not
    /// worth echoing.
    fn error(&self, rcode: u16) -> Vec<u8> {
        let flags = QR | (self.flags & (OPCODE | RD)) | RA | rcode;
        let mut out = vec![0; HEADER_LEN];
        out[..2].copy_from_slice(&self.id.to_be_bytes());
        out[2..4].copy_from_slice(&flags.to_be_bytes());
        out
    }
}

/// The query itself turned into an answer with `rcode`: the question is
/// echoed byte for byte, which stub resolvers (glibc) require before they
/// accept an answer, even a failure.
fn failure(query: &[u8], rcode: u16) -> Vec<u8> {
    let mut out = query.to_vec();
    if let Some(h) = Header::read(query) {
        let flags = QR | (h.flags & (OPCODE | RD)) | RA | rcode;
        out[2..4].copy_from_slice(&flags.to_be_bytes());
    }
    out
}

/// What to do with one UDP query datagram: answer it from `names`, forward
/// it, or drop it. Answers fit in 512 bytes, or in the client's EDNS size;
/// what does not fit is cut with TC set, so the client asks again over TCP.
pub fn reply(query: &[u8], names: &dyn Names) -> Reply {
    respond(query, names, false)
}

fn respond(query: &[u8], names: &dyn Names, tcp: bool) -> Reply {
    let Some(header) = Header::read(query) else {
        return Reply::Drop;
    };
    // Never answer an answer: two resolvers could echo each other forever.
    if header.flags & QR != 0 {
        return Reply::Drop;
    }
    // NOTIFY, UPDATE and the like are well-formed but not for us (RFC 1035's
    // "Not Implemented"), rather than malformed.
    if header.flags & OPCODE != 0 {
        return Reply::Answer(header.error(NOTIMP));
    }
    if header.qdcount != 1 {
        return Reply::Answer(header.error(FORMERR));
    }
    let packet = match Packet::parse(query) {
        Ok(p) => p,
        // A type or class the parser does not know is well-formed DNS all
        // the same; the upstream resolvers know more types than we do.
        Err(
            SimpleDnsError::InvalidQType(_)
            | SimpleDnsError::InvalidQClass(_)
            | SimpleDnsError::InvalidClass(_),
        ) => return Reply::Forward,
        Err(_) => return Reply::Answer(header.error(FORMERR)),
    };
    let Some(question) = packet.questions.first() else {
        return Reply::Answer(header.error(FORMERR));
    };
    let Some(addrs) = network_name(&question.qname).and_then(|n| names.lookup(&n)) else {
        return Reply::Forward;
    };

    let mut out = Packet::new_reply(header.id);
    out.set_flags(PacketFlag::AUTHORITATIVE_ANSWER | PacketFlag::RECURSION_AVAILABLE);
    if header.flags & RD != 0 {
        out.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    out.questions.push(question.clone());
    // Only A has an answer; AAAA and the rest are empty NOERROR (never
    // NXDOMAIN, which would deny the name's A too), so clients go on to A.
    let wants_a = matches!(question.qtype, QTYPE::TYPE(TYPE::A) | QTYPE::ANY)
        && matches!(question.qclass, QCLASS::CLASS(CLASS::IN) | QCLASS::ANY);
    if wants_a {
        for ip in addrs {
            out.answers.push(simple_dns::ResourceRecord::new(
                question.qname.clone(),
                CLASS::IN,
                TTL,
                RData::A(A {
                    address: u32::from(ip),
                }),
            ));
        }
    }
    let limit = match packet.opt() {
        _ if tcp => usize::from(u16::MAX),
        Some(opt) => usize::from(opt.udp_packet_size.clamp(512, EDNS_PAYLOAD)),
        None => UDP_PAYLOAD,
    };
    // RFC 6891: a query with OPT gets an answer with OPT.
    if packet.opt().is_some() {
        *out.opt_mut() = Some(OPT {
            opt_codes: Vec::new(),
            udp_packet_size: EDNS_PAYLOAD,
            version: 0,
        });
    }
    match build(&mut out, limit) {
        Some(bytes) => Reply::Answer(bytes),
        None => Reply::Answer(header.error(SERVFAIL)),
    }
}

/// The message in at most `limit` bytes: answers that do not fit are left
/// out, and TC says so.
fn build(out: &mut Packet<'_>, limit: usize) -> Option<Vec<u8>> {
    let mut bytes = out.build_bytes_vec_compressed().ok()?;
    if bytes.len() > limit {
        out.set_flags(PacketFlag::TRUNCATION);
        // An A record whose name points at the question's is 16 bytes.
        let excess = (bytes.len() - limit).div_ceil(16);
        out.answers
            .truncate(out.answers.len().saturating_sub(excess));
        bytes = out.build_bytes_vec_compressed().ok()?;
        while bytes.len() > limit && out.answers.pop().is_some() {
            bytes = out.build_bytes_vec_compressed().ok()?;
        }
    }
    Some(bytes)
}

/// The name as `Names` gets it: lower-case labels joined by dots. A name
/// with a label no box name or alias can have (empty, or a byte other than
/// a letter, digit, `-` or `_`: a dot inside a label, say) is never ours.
fn network_name(name: &simple_dns::Name<'_>) -> Option<String> {
    let mut s = String::new();
    for label in name.as_bytes() {
        let fits = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
        if label.is_empty() || !label.iter().all(fits) {
            return None;
        }
        if !s.is_empty() {
            s.push('.');
        }
        s.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
    }
    (!s.is_empty()).then_some(s)
}

/// The upstream servers in resolv.conf text: its `nameserver` lines, IPv4
/// and IPv6, on port 53, in order, without repeats, at most the three a
/// libc would use. An IPv6 address with a numeric zone (`fe80::1%2`) keeps
/// it; one with an interface name is skipped (this function reads text
/// only). Empty when there is none: forwarded queries then get SERVFAIL.
pub fn upstreams(resolv_conf: &str) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for line in resolv_conf.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next().and_then(nameserver) else {
            continue;
        };
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    out.truncate(MAX_UPSTREAMS);
    out
}

fn nameserver(word: &str) -> Option<SocketAddr> {
    if let Ok(ip) = word.parse::<Ipv4Addr>() {
        return Some(SocketAddr::from((ip, 53)));
    }
    let (ip, zone) = match word.split_once('%') {
        Some((ip, zone)) => (ip, zone.parse::<u32>().ok()?),
        None => (word, 0),
    };
    let ip = ip.parse::<Ipv6Addr>().ok()?;
    Some(SocketAddr::V6(SocketAddrV6::new(ip, 53, 0, zone)))
}

/// Binds UDP and TCP on `addr` with `SO_REUSEADDR` and `SO_REUSEPORT`, so
/// every shim of the network can bind the same gateway address. With port
/// 0, TCP takes the port UDP was given.
pub fn bind(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let open = |ty: SocketType, addr: SocketAddr| -> io::Result<OwnedFd> {
        // Close-on-exec: the shim starts other programs.
        let fd = rustix::net::socket_with(family, ty, SocketFlags::CLOEXEC, None)?;
        sockopt::set_socket_reuseaddr(&fd, true)?;
        sockopt::set_socket_reuseport(&fd, true)?;
        rustix::net::bind(&fd, &addr)?;
        Ok(fd)
    };
    let udp = UdpSocket::from(open(SocketType::DGRAM, addr)?);
    let tcp = open(SocketType::STREAM, udp.local_addr()?)?;
    rustix::net::listen(&tcp, 128)?;
    Ok((udp, TcpListener::from(tcp)))
}

/// The resolver's threads. Dropping it leaves them serving; they end when
/// their sockets fail, when the process ends, or on [`Server::stop`].
pub struct Server {
    udp_thread: JoinHandle<io::Result<()>>,
    tcp_thread: JoinHandle<io::Result<()>>,
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Waits until both sockets have failed; the UDP side's error first.
    pub fn wait(self) -> io::Result<()> {
        let udp = join(self.udp_thread);
        let tcp = join(self.tcp_thread);
        udp.and(tcp)
    }

    /// Stops serving and waits for the UDP and TCP threads. Queries being
    /// forwarded still get their answer (within the forward timeout), and
    /// open TCP connections end when their client goes quiet.
    pub fn stop(self) -> io::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        // Shutting down the read side wakes a blocked recv (it returns 0)
        // and a blocked accept (it fails) on Linux. An unconnected UDP
        // socket reports ENOTCONN but is shut down all the same.
        let _ = rustix::net::shutdown(&*self.udp, rustix::net::Shutdown::Read);
        let _ = rustix::net::shutdown(&self.tcp, rustix::net::Shutdown::Read);
        let udp = join(self.udp_thread);
        let tcp = join(self.tcp_thread);
        udp.and(tcp)
    }
}

fn join(thread: JoinHandle<io::Result<()>>) -> io::Result<()> {
    thread
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("a DNS thread panicked")))
}

/// Where forwarded queries go.
struct Upstream {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    /// The resolver's own address, never asked.
    own: SocketAddr,
}

impl Upstream {
    /// Where a query of `client`'s goes.
    fn pick(&self, names: &dyn Names, client: IpAddr) -> Vec<SocketAddr> {
        match names.upstreams_for(client) {
            Some(own) => own.into_iter().filter(|a| *a != self.own).collect(),
            None => self.servers.clone(),
        }
    }
}

/// Serves on `udp` and `tcp` (from [`bind`]) until the sockets fail: one
/// thread receives UDP, one accepts TCP, and each TCP connection and each
/// forwarded UDP query gets a short-lived thread of its own. Names not in
/// `names` go to `upstream` in order, each given `timeout`
/// ([`FORWARD_TIMEOUT`] outside tests); the resolver's own address is left
/// out of `upstream`, so it never asks itself.
pub fn serve(
    udp: UdpSocket,
    tcp: TcpListener,
    names: Arc<dyn Names>,
    upstream: Vec<SocketAddr>,
    timeout: Duration,
) -> io::Result<Server> {
    let own = udp.local_addr()?;
    let servers = upstream.into_iter().filter(|a| *a != own).collect();
    let upstream = Arc::new(Upstream {
        servers,
        timeout,
        own,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let udp = Arc::new(udp);
    let tcp_handle = tcp.try_clone()?;
    let udp_thread = {
        let (udp, names, upstream, stop) =
            (udp.clone(), names.clone(), upstream.clone(), stop.clone());
        std::thread::Builder::new()
            .name("dns-udp".into())
            .spawn(move || serve_udp(udp, names, upstream, stop))?
    };
    let tcp_thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("dns-tcp".into())
            .spawn(move || serve_tcp(tcp, names, upstream, stop))?
    };
    Ok(Server {
        udp_thread,
        tcp_thread,
        udp,
        tcp: tcp_handle,
        stop,
    })
}

/// Errors after which a socket still works.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    ) || matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Decrements a counter when dropped, however its thread ends.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// Takes one of `max` slots, if one is free.
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn serve_udp(
    sock: Arc<UdpSocket>,
    names: Arc<dyn Names>,
    upstream: Arc<Upstream>,
    stop: Arc<AtomicBool>,
) -> io::Result<()> {
    // A forwarded query gets a thread of its own, with a socket of its own
    // connected to the upstream on a fresh random port: the kernel matches
    // the reply to it (no shared table of pending IDs, no rewriting of the
    // client's ID, and a spoofer must guess the port too), and a silent
    // upstream holds up that query alone, never the names answered here.
    // The cap bounds the threads a box can make us hold.
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        // Not std's recv_from: on a socket whose read side was shut down it
        // gets no address back, which std takes for a broken kernel and
        // panics over.
        let got = rustix::net::recvfrom(&*sock, &mut buf[..], rustix::net::RecvFlags::empty());
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let (n, client) = match got {
            Ok((n, _, Some(from))) => match SocketAddr::try_from(from) {
                Ok(client) => (n, client),
                Err(_) => continue,
            },
            Ok((_, _, None)) => continue,
            Err(e) if transient(&e.into()) => continue,
            Err(e) => return Err(e.into()),
        };
        let query = &buf[..n];
        let reply = reply(query, &*names);
        let servers = match reply {
            Reply::Forward => upstream.pick(&*names, client.ip()),
            _ => Vec::new(),
        };
        let answer = match reply {
            Reply::Answer(answer) => answer,
            Reply::Drop => continue,
            Reply::Forward if servers.is_empty() => failure(query, SERVFAIL),
            Reply::Forward => match Slot::take(&in_flight, MAX_FORWARDS) {
                None => failure(query, SERVFAIL),
                Some(slot) => {
                    let (sock, upstream, owned) = (sock.clone(), upstream.clone(), query.to_vec());
                    let spawned = std::thread::Builder::new()
                        .name("dns-forward".into())
                        .spawn(move || {
                            let _slot = slot;
                            let answer = forward_udp(&owned, &servers, upstream.timeout)
                                .unwrap_or_else(|| failure(&owned, SERVFAIL));
                            let _ = sock.send_to(&answer, client);
                        });
                    match spawned {
                        Ok(_) => continue,
                        Err(_) => failure(query, SERVFAIL),
                    }
                }
            },
        };
        // A client gone away is no reason to stop serving the others.
        let _ = sock.send_to(&answer, client);
    }
}

/// Whether `answer` is the reply to `query`: same ID, and an answer.
fn answers(query: &[u8], answer: &[u8]) -> bool {
    matches!(
        (Header::read(query), Header::read(answer)),
        (Some(q), Some(a)) if q.id == a.id && a.flags & QR != 0
    )
}

/// Whether an upstream's answer says to try the next one (as Docker does
/// for SERVFAIL; REFUSED too, from a resolver that does not serve us).
fn try_next(answer: &[u8]) -> bool {
    Header::read(answer).is_some_and(|h| matches!(h.flags & RCODE, SERVFAIL | REFUSED))
}

/// Asks the upstreams in order over UDP; the first real answer, unchanged,
/// else the last failure an upstream sent, else `None`.
fn forward_udp(query: &[u8], servers: &[SocketAddr], timeout: Duration) -> Option<Vec<u8>> {
    forward(query, servers, timeout, ask_udp)
}

/// Asks `servers` in order with `ask`; the first real answer, unchanged,
/// else the last failure one sent, else `None`.
fn forward(
    query: &[u8],
    servers: &[SocketAddr],
    timeout: Duration,
    ask: fn(&[u8], SocketAddr, Duration) -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    let mut last = None;
    for server in servers {
        match ask(query, *server, timeout) {
            Some(answer) if try_next(&answer) => last = Some(answer),
            Some(answer) => return Some(answer),
            None => {}
        }
    }
    last
}

fn ask_udp(query: &[u8], server: SocketAddr, timeout: Duration) -> Option<Vec<u8>> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local).ok()?;
    sock.connect(server).ok()?;
    sock.send(query).ok()?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        match sock.recv(&mut buf) {
            Ok(n) if answers(query, &buf[..n]) => return Some(buf[..n].to_vec()),
            // A stray datagram: keep waiting for ours.
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Timed out, or refused (nothing listens there).
            Err(_) => return None,
        }
    }
}

fn serve_tcp(
    listener: TcpListener,
    names: Arc<dyn Names>,
    upstream: Arc<Upstream>,
    stop: Arc<AtomicBool>,
) -> io::Result<()> {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let got = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let (stream, client) = match got {
            Ok(got) => got,
            Err(e) if transient(&e) => {
                // Out of descriptors, say: give the connections time to end.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some(slot) = Slot::take(&open, MAX_TCP) else {
            continue;
        };
        let (names, upstream) = (names.clone(), upstream.clone());
        let _ = std::thread::Builder::new()
            .name("dns-conn".into())
            .spawn(move || {
                let _slot = slot;
                let servers = upstream.pick(&*names, client.ip());
                let _ = serve_connection(stream, &*names, &servers, upstream.timeout);
            });
    }
}

/// One TCP client: length-prefixed queries (RFC 1035 4.2.2), answered in
/// turn until it hangs up, sends garbage, or goes quiet for `TCP_IDLE`.
fn serve_connection(
    mut stream: TcpStream,
    names: &dyn Names,
    servers: &[SocketAddr],
    timeout: Duration,
) -> io::Result<()> {
    stream.set_read_timeout(Some(TCP_IDLE))?;
    stream.set_write_timeout(Some(TCP_IDLE))?;
    loop {
        let Some(query) = read_message(&mut stream)? else {
            return Ok(());
        };
        let answer = match respond(&query, names, true) {
            Reply::Answer(answer) => answer,
            Reply::Drop => return Ok(()),
            Reply::Forward => {
                forward_tcp(&query, servers, timeout).unwrap_or_else(|| failure(&query, SERVFAIL))
            }
        };
        write_message(&mut stream, &answer)?;
    }
}

/// One length-prefixed message; `None` at a clean end of the stream.
fn read_message(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut msg)?;
    Ok(Some(msg))
}

fn write_message(stream: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| io::Error::other("DNS message too long"))?;
    let mut out = Vec::with_capacity(2 + msg.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    stream.write_all(&out)
}

/// Asks the upstreams in order over TCP, as `forward_udp` does over UDP.
fn forward_tcp(query: &[u8], servers: &[SocketAddr], timeout: Duration) -> Option<Vec<u8>> {
    forward(query, servers, timeout, ask_tcp)
}

fn ask_tcp(query: &[u8], server: SocketAddr, timeout: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&server, timeout).ok()?;
    let left = deadline.checked_duration_since(Instant::now())?;
    stream.set_write_timeout(Some(left)).ok()?;
    write_message(&mut stream, query).ok()?;
    // The answer may come in pieces; the deadline covers them all.
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        stream.set_read_timeout(Some(left)).ok()?;
        let answer = read_message(&mut stream).ok()??;
        if answers(query, &answer) {
            return Some(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

    struct Table(HashMap<String, Vec<Ipv4Addr>>);

    impl Names for Table {
        fn lookup(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
            self.0.get(name).cloned()
        }
    }

    fn table() -> Arc<dyn Names> {
        let ip = |d| Ipv4Addr::new(172, 18, 0, d);
        Arc::new(Table(HashMap::from([
            ("web".to_string(), vec![ip(2)]),
            ("db".to_string(), vec![ip(3)]),
            ("cache.mynet".to_string(), vec![ip(4)]),
            ("backend".to_string(), vec![ip(2), ip(3)]),
            ("leaving".to_string(), vec![]),
            (
                "many".to_string(),
                (0..200).map(|i| Ipv4Addr::new(172, 18, 1, i)).collect(),
            ),
        ])))
    }

    /// A query as a stub resolver sends it, built by hand so the tests do
    /// not only check the crate against itself.
    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; QDCOUNT 1
        for label in name.trim_end_matches('.').split('.') {
            q.push(label.len() as u8);
            q.extend(label.as_bytes());
        }
        q.push(0);
        q.extend(qtype.to_be_bytes());
        q.extend(1u16.to_be_bytes()); // IN
        q
    }

    /// The same with an EDNS OPT record announcing `size`.
    fn query_edns(id: u16, name: &str, qtype: u16, size: u16) -> Vec<u8> {
        let mut q = query(id, name, qtype);
        q[11] = 1; // ARCOUNT
        q.push(0); // root name
        q.extend(41u16.to_be_bytes());
        q.extend(size.to_be_bytes());
        q.extend([0, 0, 0, 0, 0, 0]); // TTL (flags), RDLENGTH 0
        q
    }

    fn answer_of(r: Reply) -> Vec<u8> {
        match r {
            Reply::Answer(a) => a,
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    fn rcode(msg: &[u8]) -> u16 {
        u16::from_be_bytes([msg[2], msg[3]]) & RCODE
    }

    fn addresses(msg: &[u8]) -> Vec<Ipv4Addr> {
        Packet::parse(msg)
            .unwrap()
            .answers
            .iter()
            .map(|rr| match &rr.rdata {
                RData::A(a) => Ipv4Addr::from(a.address),
                other => panic!("not an A record: {other:?}"),
            })
            .collect()
    }

    /// A resolver on a random port of 127.0.0.1.
    fn start(upstream: Vec<SocketAddr>, timeout: Duration) -> (SocketAddr, Server) {
        // TCP may find the port UDP was given taken; another one then.
        let (udp, tcp) = (0..20)
            .find_map(|_| bind((LOCALHOST, 0).into()).ok())
            .expect("bind the resolver");
        let addr = udp.local_addr().unwrap();
        (addr, serve(udp, tcp, table(), upstream, timeout).unwrap())
    }

    fn client() -> UdpSocket {
        let c = UdpSocket::bind((LOCALHOST, 0)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c
    }

    fn ask(server: SocketAddr, q: &[u8]) -> Vec<u8> {
        let c = client();
        c.send_to(q, server).unwrap();
        let mut buf = [0u8; 4096];
        let (n, from) = c.recv_from(&mut buf).expect("an answer");
        assert_eq!(from, server);
        buf[..n].to_vec()
    }

    fn ask_over_tcp(server: SocketAddr, q: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(server).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write_message(&mut s, q).unwrap();
        read_message(&mut s).unwrap().expect("an answer")
    }

    /// An upstream that answers every query with `answer(query)`, `count`
    /// times at most.
    fn fake_upstream(
        count: usize,
        answer: impl Fn(&[u8]) -> Vec<u8> + Send + 'static,
    ) -> SocketAddr {
        let sock = UdpSocket::bind((LOCALHOST, 0)).unwrap();
        let addr = sock.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            for _ in 0..count {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    return;
                };
                let _ = sock.send_to(&answer(&buf[..n]), from);
            }
        });
        addr
    }

    /// An upstream's answer: the query with QR, RA, one A record of
    /// 93.184.216.34, and TC set, to show it is relayed untouched.
    fn upstream_answer(q: &[u8]) -> Vec<u8> {
        let mut a = q.to_vec();
        a[2] |= 0x82; // QR, TC
        a[3] |= 0x80; // RA
        a[7] = 1; // ANCOUNT
        a.extend([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 93, 184, 216, 34]);
        a
    }

    #[test]
    fn a_box_name_is_answered_with_its_address_authoritatively() {
        let (server, srv) = start(vec![], FORWARD_TIMEOUT);
        let a = ask(server, &query(0x1234, "web", 1));
        let p = Packet::parse(&a).unwrap();
        assert_eq!(p.id(), 0x1234);
        assert!(p.has_flags(PacketFlag::RESPONSE | PacketFlag::AUTHORITATIVE_ANSWER));
        assert!(p.has_flags(PacketFlag::RECURSION_DESIRED | PacketFlag::RECURSION_AVAILABLE));
        assert_eq!(rcode(&a), 0);
        assert_eq!(p.questions.len(), 1);
        assert_eq!(p.questions[0].qname.to_string(), "web");
        assert_eq!(p.questions[0].qtype, QTYPE::TYPE(TYPE::A));
        assert_eq!(p.answers.len(), 1);
        assert_eq!(p.answers[0].ttl, TTL);
        assert_eq!(p.answers[0].name.to_string(), "web");
        assert_eq!(addresses(&a), [Ipv4Addr::new(172, 18, 0, 2)]);
        srv.stop().unwrap();
    }

    #[test]
    fn an_alias_answers_every_box_that_has_it() {
        let a = answer_of(reply(&query(7, "backend", 1), &*table()));
        assert_eq!(
            addresses(&a),
            [Ipv4Addr::new(172, 18, 0, 2), Ipv4Addr::new(172, 18, 0, 3)]
        );
    }

    #[test]
    fn names_are_looked_up_lower_case_without_the_trailing_dot_and_echoed_as_asked() {
        let a = answer_of(reply(&query(7, "Cache.MyNet.", 1), &*table()));
        assert_eq!(addresses(&a), [Ipv4Addr::new(172, 18, 0, 4)]);
        let p = Packet::parse(&a).unwrap();
        assert_eq!(p.questions[0].qname.to_string(), "Cache.MyNet");
    }

    #[test]
    fn aaaa_for_a_box_name_is_empty_noerror() {
        let (server, srv) = start(vec![], FORWARD_TIMEOUT);
        let a = ask(server, &query(9, "web", 28));
        let p = Packet::parse(&a).unwrap();
        assert_eq!(rcode(&a), 0);
        assert!(p.has_flags(PacketFlag::AUTHORITATIVE_ANSWER));
        assert_eq!(p.questions[0].qtype, QTYPE::TYPE(TYPE::AAAA));
        assert!(p.answers.is_empty());
        srv.stop().unwrap();
    }

    #[test]
    fn other_types_and_a_name_without_addresses_are_empty_noerror_never_forwarded() {
        for q in [
            query(1, "web", 15),
            query(2, "db", 16),
            query(3, "leaving", 1),
        ] {
            let a = answer_of(reply(&q, &*table()));
            assert_eq!(rcode(&a), 0);
            assert!(Packet::parse(&a).unwrap().answers.is_empty());
        }
    }

    #[test]
    fn an_edns_query_gets_an_opt_record_back() {
        let a = answer_of(reply(&query_edns(1, "web", 1, 1232), &*table()));
        let p = Packet::parse(&a).unwrap();
        assert_eq!(p.opt().map(|o| o.udp_packet_size), Some(EDNS_PAYLOAD));
        assert_eq!(addresses(&a).len(), 1);
    }

    #[test]
    fn names_not_of_the_network_are_forwarded() {
        for q in [
            query(1, "example.com", 1),
            query(2, "web.example.com", 1),
            query(3, "example.com", 28),
            // No box can be named with a dot inside a label.
            {
                let mut q = query(4, "xweb", 1);
                q[13] = b'.';
                q
            },
        ] {
            assert_eq!(reply(&q, &*table()), Reply::Forward, "{q:?}");
        }
        // The root has no labels at all.
        let mut root = query(5, "x", 2);
        root.drain(12..14);
        assert_eq!(reply(&root, &*table()), Reply::Forward);
    }

    #[test]
    fn a_type_the_parser_does_not_know_is_forwarded() {
        assert_eq!(reply(&query(1, "web", 0xfff0), &*table()), Reply::Forward);
    }

    #[test]
    fn an_unknown_name_is_forwarded_and_the_upstream_reply_relayed_unchanged() {
        let up = fake_upstream(1, upstream_answer);
        let (server, srv) = start(vec![up], FORWARD_TIMEOUT);
        let q = query(0xbeef, "example.com", 1);
        assert_eq!(ask(server, &q), upstream_answer(&q));
        srv.stop().unwrap();
    }

    /// A box of its own resolvers: every client's queries go to `0`.
    struct OwnResolvers(Vec<SocketAddr>);

    impl Names for OwnResolvers {
        fn lookup(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
            (name == "web").then(|| vec![Ipv4Addr::new(172, 18, 0, 2)])
        }

        fn upstreams_for(&self, client: IpAddr) -> Option<Vec<SocketAddr>> {
            client.is_loopback().then(|| self.0.clone())
        }
    }

    #[test]
    fn a_box_with_its_own_resolvers_is_forwarded_to_them_not_the_hosts() {
        // The host's upstream would refuse; the box's own answers.
        let hosts = fake_upstream(0, |q| failure(q, REFUSED));
        let boxes = fake_upstream(2, upstream_answer);
        let (udp, tcp) = (0..20)
            .find_map(|_| bind((LOCALHOST, 0).into()).ok())
            .expect("bind the resolver");
        let server = udp.local_addr().unwrap();
        let names = Arc::new(OwnResolvers(vec![boxes]));
        let srv = serve(udp, tcp, names, vec![hosts], FORWARD_TIMEOUT).unwrap();
        let q = query(9, "example.com", 1);
        assert_eq!(ask(server, &q), upstream_answer(&q));
        // The box's names are still answered here.
        let answer = ask(server, &query(10, "web", 1));
        assert_eq!(Packet::parse(&answer).unwrap().answers.len(), 1);
        srv.stop().unwrap();
    }

    #[test]
    fn an_upstream_that_fails_or_refuses_is_followed_by_the_next() {
        let failing = fake_upstream(1, |q| failure(q, SERVFAIL));
        // Nothing listens on a socket just closed: refused at once.
        let closed = UdpSocket::bind((LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap();
        let good = fake_upstream(1, upstream_answer);
        let (server, srv) = start(vec![failing, closed, good], FORWARD_TIMEOUT);
        let q = query(42, "example.org", 1);
        assert_eq!(ask(server, &q), upstream_answer(&q));
        srv.stop().unwrap();
    }

    #[test]
    fn an_upstream_failure_is_relayed_when_no_upstream_does_better() {
        let failing = fake_upstream(1, |q| failure(q, REFUSED));
        let (server, srv) = start(vec![failing], FORWARD_TIMEOUT);
        let q = query(43, "example.org", 1);
        assert_eq!(ask(server, &q), failure(&q, REFUSED));
        srv.stop().unwrap();
    }

    #[test]
    fn no_upstream_answering_gives_servfail_within_the_timeout() {
        // Bound, so nothing refuses, but it never answers.
        let silent = UdpSocket::bind((LOCALHOST, 0)).unwrap();
        let timeout = Duration::from_millis(200);
        let (server, srv) = start(vec![silent.local_addr().unwrap()], timeout);
        let q = query(77, "example.net", 1);
        let started = Instant::now();
        let a = ask(server, &q);
        let took = started.elapsed();
        assert!(took >= timeout && took < Duration::from_secs(3), "{took:?}");
        assert_eq!(rcode(&a), SERVFAIL);
        assert_eq!(Header::read(&a).unwrap().id, 77);
        assert_eq!(a[HEADER_LEN..], q[HEADER_LEN..], "the question is echoed");
        srv.stop().unwrap();
    }

    #[test]
    fn without_upstreams_an_unknown_name_gets_servfail() {
        let (server, srv) = start(vec![], FORWARD_TIMEOUT);
        let a = ask(server, &query(78, "example.net", 1));
        assert_eq!(rcode(&a), SERVFAIL);
        assert!(Header::read(&a).unwrap().flags & QR != 0);
        srv.stop().unwrap();
    }

    #[test]
    fn a_silent_upstream_does_not_hold_up_the_networks_names() {
        let silent = UdpSocket::bind((LOCALHOST, 0)).unwrap();
        let (server, srv) = start(vec![silent.local_addr().unwrap()], Duration::from_secs(3));
        let waiting = client();
        waiting
            .send_to(&query(1, "example.net", 1), server)
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        let a = ask(server, &query(2, "db", 1));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(addresses(&a), [Ipv4Addr::new(172, 18, 0, 3)]);
        srv.stop().unwrap();
    }

    #[test]
    fn a_tcp_query_is_answered() {
        let (server, srv) = start(vec![], FORWARD_TIMEOUT);
        let a = ask_over_tcp(server, &query(5, "web", 1));
        assert_eq!(addresses(&a), [Ipv4Addr::new(172, 18, 0, 2)]);
        srv.stop().unwrap();
    }

    #[test]
    fn a_tcp_connection_carries_several_queries() {
        let (server, srv) = start(vec![], FORWARD_TIMEOUT);
        let mut s = TcpStream::connect(server).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for (id, name) in [(1, "web"), (2, "db")] {
            write_message(&mut s, &query(id, name, 1)).unwrap();
            let a = read_message(&mut s).unwrap().unwrap();
            assert_eq!(Header::read(&a).unwrap().id, id);
        }
        srv.stop().unwrap();
    }

    #[test]
    fn an_unknown_name_over_tcp_is_forwarded_over_tcp() {
        let up = TcpListener::bind((LOCALHOST, 0)).unwrap();
        let up_addr = up.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = up.accept().unwrap();
            let q = read_message(&mut s).unwrap().unwrap();
            write_message(&mut s, &upstream_answer(&q)).unwrap();
        });
        let (server, srv) = start(vec![up_addr], FORWARD_TIMEOUT);
        let q = query(6, "example.com", 1);
        assert_eq!(ask_over_tcp(server, &q), upstream_answer(&q));
        srv.stop().unwrap();
    }

    #[test]
    fn a_big_udp_answer_is_truncated_with_tc_and_whole_over_tcp() {
        let (server, srv) = start(vec![], FORWARD_TIMEOUT);
        let udp = ask(server, &query(1, "many", 1));
        assert!(udp.len() <= UDP_PAYLOAD, "{}", udp.len());
        let p = Packet::parse(&udp).unwrap();
        assert!(p.has_flags(PacketFlag::TRUNCATION));
        assert!(!p.answers.is_empty() && p.answers.len() < 200);

        let edns = answer_of(reply(&query_edns(1, "many", 1, 1232), &*table()));
        assert!(edns.len() <= 1232 && edns.len() > UDP_PAYLOAD);
        assert!(Packet::parse(&edns)
            .unwrap()
            .has_flags(PacketFlag::TRUNCATION));

        let tcp = ask_over_tcp(server, &query(1, "many", 1));
        let p = Packet::parse(&tcp).unwrap();
        assert!(!p.has_flags(PacketFlag::TRUNCATION));
        assert_eq!(p.answers.len(), 200);
        srv.stop().unwrap();
    }

    #[test]
    fn garbage_is_dropped_or_answered_formerr_and_the_resolver_goes_on() {
        let names = table();
        let q = query(0x0a0b, "web", 1);
        // Too short for a header.
        assert_eq!(reply(&q[..11], &*names), Reply::Drop);
        assert_eq!(reply(&[], &*names), Reply::Drop);
        // An answer is never answered.
        let mut r = q.clone();
        r[2] |= 0x80;
        assert_eq!(reply(&r, &*names), Reply::Drop);
        // Not a QUERY (here NOTIFY).
        let mut notify = q.clone();
        notify[2] |= 4 << 3;
        let a = answer_of(reply(&notify, &*names));
        assert_eq!((a.len(), rcode(&a)), (HEADER_LEN, NOTIMP));
        // QDCOUNT 0 and 2.
        for qd in [0, 2] {
            let mut bad = q.clone();
            bad[5] = qd;
            let a = answer_of(reply(&bad, &*names));
            assert_eq!((rcode(&a), Header::read(&a).unwrap().id), (FORMERR, 0x0a0b));
        }
        // A truncated question, a label longer than 63, a pointer to itself.
        let mut long = q[..HEADER_LEN].to_vec();
        long.push(64);
        long.extend([b'a'; 64]);
        long.extend([0, 0, 1, 0, 1]);
        let mut looped = q[..HEADER_LEN].to_vec();
        looped.extend([0xc0, 0x0c, 0, 1, 0, 1]);
        for bad in [&q[..q.len() - 1], &long[..], &looped[..]] {
            assert_eq!(rcode(&answer_of(reply(bad, &*names))), FORMERR);
        }

        let (server, srv) = start(vec![], FORWARD_TIMEOUT);
        let c = client();
        for bad in [&[1u8, 2, 3][..], &r, &looped] {
            c.send_to(bad, server).unwrap();
        }
        let mut s = TcpStream::connect(server).unwrap();
        s.write_all(&[0, 3, 1, 2, 3]).unwrap();
        let a = ask(server, &q);
        assert_eq!(addresses(&a), [Ipv4Addr::new(172, 18, 0, 2)]);
        srv.stop().unwrap();
    }

    /// Every truncation and every single and double bit flip of a few
    /// queries, then random bytes behind a plausible header: nothing
    /// panics, and whatever is answered is an answer to the same ID.
    #[test]
    fn no_datagram_makes_the_resolver_panic() {
        let names = table();
        let check = |msg: &[u8]| {
            for tcp in [false, true] {
                if let Reply::Answer(a) = respond(msg, &*names, tcp) {
                    assert!(a.len() >= HEADER_LEN);
                    assert_eq!(a[..2], msg[..2]);
                    assert!(a[2] & 0x80 != 0);
                    if !tcp {
                        assert!(a.len() <= usize::from(EDNS_PAYLOAD));
                    }
                }
            }
        };
        let mut compressed = query(3, "web", 1);
        compressed[5] = 1;
        compressed[7] = 1; // ANCOUNT 1: a record whose name points back
        compressed.extend([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4]);
        let seeds = [
            query(1, "web", 1),
            query(2, "cache.mynet", 28),
            query_edns(4, "many", 1, 4096),
            compressed,
        ];
        for seed in &seeds {
            for end in 0..=seed.len() {
                check(&seed[..end]);
            }
            let bits = seed.len() * 8;
            for i in 0..bits {
                let mut m = seed.clone();
                m[i / 8] ^= 1 << (i % 8);
                check(&m);
                for j in i + 1..bits {
                    let mut m = m.clone();
                    m[j / 8] ^= 1 << (j % 8);
                    check(&m);
                }
            }
        }
        // xorshift64: reproducible without a dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..100_000 {
            let len = (next() % 96) as usize;
            let mut m: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if m.len() >= HEADER_LEN {
                m[2] &= 0x07; // a query, opcode QUERY
                m[3] = 0;
                m[4] = 0;
                m[5] = 1;
                // Small lengths and pointers, to reach the labels' paths.
                for b in &mut m[HEADER_LEN..] {
                    if *b & 0x30 == 0 {
                        *b &= 0xcf;
                        *b %= 8;
                    }
                }
            }
            check(&m);
        }
    }

    #[test]
    fn upstreams_are_the_nameserver_lines_on_port_53() {
        let conf = "# written by hand\n\
                    search lan\n\
                    nameserver 192.0.2.1\n\
                    nameserver   2001:db8::53   # office\n\
                    ;nameserver 192.0.2.9\n\
                    nameserver not-an-address\n\
                    nameserver fe80::1%eth0\n\
                    nameserver 192.0.2.1\n\
                    nameserver fe80::2%3\n\
                    nameserver 192.0.2.4\n\
                    options ndots:2\n";
        let got = upstreams(conf);
        assert_eq!(
            got,
            [
                "192.0.2.1:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::53]:53".parse().unwrap(),
                SocketAddr::V6(SocketAddrV6::new("fe80::2".parse().unwrap(), 53, 0, 3)),
            ]
        );
        assert!(upstreams("").is_empty());
        assert!(upstreams("search lan\n").is_empty());
    }

    #[test]
    fn two_resolvers_share_one_address_and_both_answer() {
        let (first, srv1) = start(vec![], FORWARD_TIMEOUT);
        let (udp, tcp) = bind(first).expect("a second bind of the same address");
        let srv2 = serve(udp, tcp, table(), vec![], FORWARD_TIMEOUT).unwrap();
        for id in 0..8 {
            let a = ask(first, &query(id, "web", 1));
            assert_eq!(Header::read(&a).unwrap().id, id);
        }
        srv1.stop().unwrap();
        // The other keeps the address served.
        let a = ask_over_tcp(first, &query(9, "db", 1));
        assert_eq!(addresses(&a), [Ipv4Addr::new(172, 18, 0, 3)]);
        srv2.stop().unwrap();
    }

    #[test]
    fn the_resolver_never_forwards_to_itself() {
        let (udp, tcp) = (0..20)
            .find_map(|_| bind((LOCALHOST, 0).into()).ok())
            .unwrap();
        let own = udp.local_addr().unwrap();
        let srv = serve(udp, tcp, table(), vec![own], FORWARD_TIMEOUT).unwrap();
        let a = ask(own, &query(1, "example.com", 1));
        assert_eq!(rcode(&a), SERVFAIL);
        srv.stop().unwrap();
    }

    #[test]
    fn stop_ends_the_udp_and_tcp_threads() {
        let (_, srv) = start(vec![], FORWARD_TIMEOUT);
        let started = Instant::now();
        srv.stop().unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
