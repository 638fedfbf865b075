//! The vsock device's data plane: queue kicks on the vCPU thread, and the
//! worker thread's epoll loop over the host sockets.

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::Ordering;
use std::time::Instant;

use vmm_sys_util::epoll::{Epoll, EpollEvent};

use super::device::{Shared, Vsock};
use super::muxer::{TOKEN_LISTENER, TOKEN_WAKE};
use crate::vmm::devices::virtio::WarnOnce;

/// Queue indexes (virtio 1.2 §5.10.2); the event queue is 2.
pub const RX_QUEUE: u16 = 0;
pub const TX_QUEUE: u16 = 1;

/// Socket events handled per epoll wait.
const EVENT_BATCH: usize = 64;

impl Vsock {
    /// A kick from the driver, on the vCPU thread. Everything it does is
    /// nonblocking; the lock is held only while packets are moved.
    pub(super) fn notify(&self, index: u16) {
        let Some(active) = self.active() else {
            return;
        };
        let wake = {
            let mut muxer = active.shared.muxer();
            match index {
                // New RX buffers: deliver what waited for them.
                RX_QUEUE => muxer.pump_rx(),
                TX_QUEUE => muxer.process_tx(),
                // Event buffers are only held: we never send events.
                _ => {}
            }
            muxer.take_wake_request()
        };
        if wake {
            // A new deadline: the worker must shorten its wait. If this fails
            // the deadline fires late, at the worker's next event.
            let _ = active.shared.wake.write(1);
        }
    }
}

/// The worker: waits for socket readiness or the next deadline, then moves
/// data between host sockets and the guest. Returns when told to stop.
pub(super) fn run_worker(
    shared: &Shared,
    listener: &UnixListener,
    epoll: &Epoll,
    host_error: &WarnOnce,
) {
    let mut events = [EpollEvent::default(); EVENT_BATCH];
    let mut accepted = Vec::new();
    loop {
        let timeout = shared.muxer().next_timeout_ms(Instant::now());
        let count = match epoll.wait(timeout, &mut events) {
            Ok(count) => count,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => {
                host_error.warn(
                    format_args!("virtio-vsock"),
                    format_args!("the event loop failed, host sockets are no longer served: {e}"),
                );
                return;
            }
        };
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let ready = &events[..count];
        for event in ready {
            match event.data() {
                TOKEN_LISTENER => accept_all(listener, &mut accepted, host_error),
                TOKEN_WAKE => {
                    // Only clears the counter; the loop itself is the response.
                    let _ = shared.wake.read();
                }
                _ => {}
            }
        }
        let mut muxer = shared.muxer();
        for stream in accepted.drain(..) {
            muxer.add_host_client(stream);
        }
        for event in ready {
            let token = event.data();
            if token != TOKEN_LISTENER && token != TOKEN_WAKE {
                muxer.handle_socket_event(token, event.event_set());
            }
        }
        muxer.expire(Instant::now());
        muxer.pump_rx();
    }
}

/// Accepts every pending client: the listener is edge-triggered.
fn accept_all(listener: &UnixListener, out: &mut Vec<UnixStream>, host_error: &WarnOnce) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => out.push(stream),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) => {}
            Err(e) => {
                // Out of descriptors, most likely: clients wait in the backlog
                // until the next one connects.
                host_error.warn(
                    format_args!("virtio-vsock"),
                    format_args!("could not accept a host client: {e}"),
                );
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::Shutdown;
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::time::{Duration, Instant};

    use vm_memory::{Bytes, GuestAddress};

    use crate::vmm::devices::virtio::vsock::connection::BUF_ALLOC;
    use crate::vmm::devices::virtio::vsock::muxer::port_path;
    use crate::vmm::devices::virtio::vsock::packet::{
        Header, HEADER_LEN, HOST_CID, SHUTDOWN_BOTH, SHUTDOWN_RCV, SHUTDOWN_SEND,
    };
    use crate::vmm::devices::virtio::vsock::test_support::*;
    use crate::vmm::devices::virtio::VirtioDevice;

    const QUIET: Duration = Duration::from_millis(100);

    /// A host client's stream to guest port `port`, accepted by the guest.
    fn open_host_stream(g: &mut Guest<'_>, port: u32) -> (UnixStream, u32) {
        let mut client = host_connect(&g.uds(), port);
        let (req, _) = g.recv_one();
        assert_eq!((req.op, req.dst_port), (REQUEST, port), "{req:?}");
        assert_eq!(req.buf_alloc, BUF_ALLOC);
        let local = req.src_port;
        g.send(&g.header(RESPONSE, port, local), &[]);
        assert_eq!(read_line(&mut client), format!("OK {local}\n"));
        (client, local)
    }

    /// The guest connects from `guest_port` to host port `port`, where the
    /// test listens; returns the host side of the stream.
    fn open_guest_stream(
        g: &mut Guest<'_>,
        listener: &UnixListener,
        guest_port: u32,
        port: u32,
    ) -> UnixStream {
        g.send(&g.header(REQUEST, guest_port, port), &[]);
        let (resp, _) = g.recv_one();
        assert_packet(&resp, RESPONSE, port, guest_port);
        let (server, _) = listener.accept().unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        server
    }

    fn listen_on_port(g: &Guest<'_>, port: u32) -> UnixListener {
        UnixListener::bind(port_path(&g.uds(), port)).unwrap()
    }

    /// Reads from the guest until `len` payload bytes of RW arrived on the
    /// stream, acknowledging them as a guest reader would.
    fn guest_read(g: &mut Guest<'_>, len: usize) -> Vec<u8> {
        let mut data = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while data.len() < len && Instant::now() < deadline {
            for (hdr, payload) in g.recv_n(1) {
                if hdr.op == RW {
                    data.extend(payload);
                } else {
                    // Something else ends the data: leave it for the caller.
                    g.push_back((hdr, payload));
                    return data;
                }
            }
        }
        data
    }

    fn expect_eof(s: &mut UnixStream) {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 16];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
                Err(e) => panic!("expected the end of the stream: {e}"),
            }
        }
    }

    #[test]
    fn guest_request_to_a_port_without_a_listener_gets_rst() {
        let mem = memory();
        let mut g = Guest::new(&mem, "norst");
        g.add_rx_buffers(4, RX_BUF_LEN);
        g.send(&g.header(REQUEST, 50_000, 4087), &[]);
        let (rst, _) = g.recv_one();
        assert_packet(&rst, RST, 4087, 50_000);
        assert!(g.interrupt.used() > 0);
    }

    #[test]
    fn guest_request_to_a_listening_port_is_connected_and_carries_data() {
        let mem = memory();
        let mut g = Guest::new(&mem, "gconn");
        g.add_rx_buffers(8, RX_BUF_LEN);
        let listener = listen_on_port(&g, 4087);
        let mut server = open_guest_stream(&mut g, &listener, 50_000, 4087);

        g.send(&g.header(RW, 50_000, 4087), b"ping");
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");

        server.write_all(b"pong!").unwrap();
        let (hdr, payload) = g.recv_one();
        assert_packet(&hdr, RW, 4087, 50_000);
        assert_eq!(payload, b"pong!");
    }

    #[test]
    fn host_connect_sends_request_and_relays_both_ways_after_response() {
        let mem = memory();
        let mut g = Guest::new(&mem, "hconn");
        g.add_rx_buffers(8, RX_BUF_LEN);
        let (mut client, local) = open_host_stream(&mut g, 5000);
        assert_eq!(local, 1024);

        client.write_all(b"hello guest").unwrap();
        let (hdr, payload) = g.recv_one();
        assert_packet(&hdr, RW, local, 5000);
        assert_eq!(payload, b"hello guest");

        g.send(&g.header(RW, 5000, local), b"hello host");
        let mut buf = [0u8; 10];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello host");
    }

    #[test]
    fn bytes_sent_right_after_the_connect_line_reach_the_guest_first() {
        let mem = memory();
        let mut g = Guest::new(&mem, "early");
        g.add_rx_buffers(8, RX_BUF_LEN);
        let mut client = UnixStream::connect(g.uds()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.write_all(b"CONNECT 77\nfirst bytes").unwrap();
        let (req, _) = g.recv_one();
        assert_eq!((req.op, req.dst_port), (REQUEST, 77));
        g.send(&g.header(RESPONSE, 77, req.src_port), &[]);
        assert_eq!(read_line(&mut client), format!("OK {}\n", req.src_port));
        assert_eq!(guest_read(&mut g, 11), b"first bytes");
    }

    #[test]
    fn local_ports_are_allocated_upwards_and_skip_ones_in_use() {
        let mem = memory();
        let mut g = Guest::new(&mem, "ports");
        g.add_rx_buffers(16, RX_BUF_LEN);
        // A guest stream to host port 1025 makes that port busy.
        let listener = listen_on_port(&g, 1025);
        let _server = open_guest_stream(&mut g, &listener, 9, 1025);
        let (_a, pa) = open_host_stream(&mut g, 10);
        let (_b, pb) = open_host_stream(&mut g, 10);
        let (_c, pc) = open_host_stream(&mut g, 11);
        assert_eq!((pa, pb, pc), (1024, 1026, 1027));
    }

    #[test]
    fn guest_rst_to_a_host_request_closes_the_client_without_a_word() {
        let mem = memory();
        let mut g = Guest::new(&mem, "refused");
        g.add_rx_buffers(8, RX_BUF_LEN);
        let mut client = host_connect(&g.uds(), 6000);
        let (req, _) = g.recv_one();
        g.send(&g.header(RST, 6000, req.src_port), &[]);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        // An RST is never answered.
        g.assert_quiet(QUIET);
    }

    #[test]
    fn malformed_connect_line_closes_the_client() {
        let mem = memory();
        let mut g = Guest::new(&mem, "badline");
        g.add_rx_buffers(8, RX_BUF_LEN);
        for line in [&b"CONNECT x\n"[..], b"HELLO 5\n", &[b'9'; 40]] {
            let mut client = UnixStream::connect(g.uds()).unwrap();
            client.write_all(line).unwrap();
            expect_eof(&mut client);
        }
        g.assert_quiet(QUIET);
    }

    #[test]
    fn client_silent_past_the_timeout_is_closed() {
        let mem = memory();
        let mut g = Guest::with_timeouts(&mem, "silent", quick_timeouts());
        g.add_rx_buffers(8, RX_BUF_LEN);
        let mut client = UnixStream::connect(g.uds()).unwrap();
        client.write_all(b"CONN").unwrap();
        let start = Instant::now();
        expect_eof(&mut client);
        assert!(start.elapsed() >= Duration::from_millis(250));
        g.assert_quiet(QUIET);
    }

    #[test]
    fn guest_that_never_answers_is_reset_and_the_client_closed() {
        let mem = memory();
        let mut g = Guest::with_timeouts(&mem, "noanswer", quick_timeouts());
        g.add_rx_buffers(8, RX_BUF_LEN);
        let mut client = host_connect(&g.uds(), 7000);
        let (req, _) = g.recv_one();
        expect_eof(&mut client);
        let (rst, _) = g.recv_one();
        assert_packet(&rst, RST, req.src_port, 7000);
    }

    #[test]
    fn host_data_never_exceeds_the_credit_the_guest_advertised() {
        let mem = memory();
        let mut g = Guest::new(&mem, "credit");
        g.buf_alloc = 1000;
        g.add_rx_buffers(32, RX_BUF_LEN);
        let (mut client, local) = open_host_stream(&mut g, 5000);
        client.write_all(&[0xab; 5000]).unwrap();

        let first = guest_read(&mut g, 1000);
        assert_eq!(first.len(), 1000);
        // buf_alloc - (rx_cnt - fwd_cnt) = 1000 - (1000 - 0) = 0: nothing more.
        g.assert_quiet(QUIET);

        // The guest app read 400 bytes: exactly 400 more may come.
        g.fwd_cnt = 400;
        g.send(&g.header(CREDIT_UPDATE, 5000, local), &[]);
        assert_eq!(guest_read(&mut g, 400).len(), 400);
        g.assert_quiet(QUIET);

        // Everything read: the rest flows in 1000-byte windows.
        let mut total = 1400;
        while total < 5000 {
            g.fwd_cnt = u32::try_from(total).unwrap();
            g.send(&g.header(CREDIT_UPDATE, 5000, local), &[]);
            let got = guest_read(&mut g, (5000 - total).min(1000));
            assert!(got.len() <= 1000);
            total += got.len();
        }
        assert_eq!(total, 5000);
    }

    #[test]
    fn host_data_larger_than_one_buffer_is_split_across_buffers() {
        let mem = memory();
        let mut g = Guest::new(&mem, "split");
        g.buf_alloc = 1 << 20;
        g.add_rx_buffers(32, RX_BUF_LEN);
        let (mut client, _) = open_host_stream(&mut g, 5000);
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&data).unwrap();
        assert_eq!(guest_read(&mut g, data.len()), data);
    }

    #[test]
    fn credit_request_is_answered_with_our_credit() {
        let mem = memory();
        let mut g = Guest::new(&mem, "creditreq");
        g.add_rx_buffers(8, RX_BUF_LEN);
        let (_client, local) = open_host_stream(&mut g, 5000);
        g.send(&g.header(CREDIT_REQUEST, 5000, local), &[]);
        let (hdr, _) = g.recv_one();
        assert_packet(&hdr, CREDIT_UPDATE, local, 5000);
        assert_eq!((hdr.buf_alloc, hdr.fwd_cnt), (BUF_ALLOC, 0));
    }

    #[test]
    fn slow_host_reader_gets_credit_updates_as_it_drains() {
        let mem = memory();
        let mut g = Guest::new(&mem, "slowhost");
        g.add_rx_buffers(8, RX_BUF_LEN);
        let (mut client, local) = open_host_stream(&mut g, 5000);
        // The guest fills the credit we gave it, 64 KiB at a time.
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..4 {
            g.send(&g.header(RW, 5000, local), &chunk);
        }
        let mut updates = Vec::new();
        let mut read = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while read < 4 * chunk.len() {
            read += client.read(&mut buf).unwrap();
            updates.extend(g.recv().into_iter().map(|(h, _)| h));
        }
        std::thread::sleep(QUIET);
        updates.extend(g.recv().into_iter().map(|(h, _)| h));
        let last = updates
            .iter()
            .rfind(|h| h.op == CREDIT_UPDATE)
            .expect("a credit update");
        assert!(last.fwd_cnt >= 128 * 1024, "{last:?}");
    }

    #[test]
    fn guest_ignoring_our_credit_is_reset() {
        let mem = memory();
        let mut g = Guest::new(&mem, "overrun");
        g.add_rx_buffers(8, RX_BUF_LEN);
        let (mut client, local) = open_host_stream(&mut g, 5000);
        // Nobody reads on the host: the socket buffer fills, then ours.
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0;
        let rst = loop {
            g.send(&g.header(RW, 5000, local), &chunk);
            sent += chunk.len();
            if let Some((h, _)) = g.recv().into_iter().find(|(h, _)| h.op == RST) {
                break h;
            }
            assert!(sent < 16 << 20, "never reset");
        };
        assert_packet(&rst, RST, local, 5000);
        expect_eof(&mut client);
    }

    #[test]
    fn host_half_close_becomes_shutdown_send_and_the_guest_can_still_answer() {
        let mem = memory();
        let mut g = Guest::new(&mem, "halfclose");
        g.add_rx_buffers(8, RX_BUF_LEN);
        let (mut client, local) = open_host_stream(&mut g, 5000);
        client.write_all(b"request").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(guest_read(&mut g, 7), b"request");
        let (shut, _) = g.recv_one();
        assert_packet(&shut, SHUTDOWN, local, 5000);
        assert_eq!(shut.flags, SHUTDOWN_SEND);

        g.send(&g.header(RW, 5000, local), b"response");
        let mut shut = g.header(SHUTDOWN, 5000, local);
        shut.flags = SHUTDOWN_BOTH;
        g.send(&shut, &[]);
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"response");
        let (rst, _) = g.recv_one();
        assert_packet(&rst, RST, local, 5000);
    }

    #[test]
    fn host_close_sends_shutdown_both_then_rst_once_the_guest_acknowledges() {
        let mem = memory();
        let mut g = Guest::new(&mem, "hostclose");
        g.add_rx_buffers(8, RX_BUF_LEN);
        let (client, local) = open_host_stream(&mut g, 5000);
        drop(client);
        let (shut, _) = g.recv_one();
        assert_packet(&shut, SHUTDOWN, local, 5000);
        assert_eq!(shut.flags, SHUTDOWN_BOTH);
        let mut ack = g.header(SHUTDOWN, 5000, local);
        ack.flags = SHUTDOWN_BOTH;
        g.send(&ack, &[]);
        let (rst, _) = g.recv_one();
        assert_packet(&rst, RST, local, 5000);
        // The stream is gone: more data is refused.
        g.send(&g.header(RW, 5000, local), b"late");
        let (rst, _) = g.recv_one();
        assert_packet(&rst, RST, local, 5000);
    }

    #[test]
    fn host_close_is_reset_after_the_linger_time_if_the_guest_is_silent() {
        let mem = memory();
        let mut g = Guest::with_timeouts(&mem, "linger", quick_timeouts());
        g.add_rx_buffers(8, RX_BUF_LEN);
        let (client, local) = open_host_stream(&mut g, 5000);
        drop(client);
        let (shut, _) = g.recv_one();
        assert_eq!((shut.op, shut.flags), (SHUTDOWN, SHUTDOWN_BOTH));
        let start = Instant::now();
        let (rst, _) = g.recv_one();
        assert_packet(&rst, RST, local, 5000);
        assert!(start.elapsed() >= Duration::from_millis(200));
    }

    #[test]
    fn guest_rst_after_host_close_ends_the_stream_quietly() {
        let mem = memory();
        let mut g = Guest::new(&mem, "rstack");
        g.add_rx_buffers(8, RX_BUF_LEN);
        let (client, local) = open_host_stream(&mut g, 5000);
        drop(client);
        let (shut, _) = g.recv_one();
        assert_eq!(shut.op, SHUTDOWN);
        g.send(&g.header(RST, 5000, local), &[]);
        g.assert_quiet(QUIET);
    }

    #[test]
    fn guest_shutdown_of_its_sending_side_ends_the_host_read_side() {
        let mem = memory();
        let mut g = Guest::new(&mem, "gshut");
        g.add_rx_buffers(8, RX_BUF_LEN);
        let (mut client, local) = open_host_stream(&mut g, 5000);
        g.send(&g.header(RW, 5000, local), b"bye");
        let mut shut = g.header(SHUTDOWN, 5000, local);
        shut.flags = SHUTDOWN_SEND;
        g.send(&shut, &[]);
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"bye");
        // The host can still talk.
        client.write_all(b"still here").unwrap();
        assert_eq!(guest_read(&mut g, 10), b"still here");
    }

    #[test]
    fn guest_shutdown_of_its_receiving_side_stops_host_data() {
        let mem = memory();
        let mut g = Guest::new(&mem, "grcv");
        g.add_rx_buffers(8, RX_BUF_LEN);
        let (mut client, local) = open_host_stream(&mut g, 5000);
        let mut shut = g.header(SHUTDOWN, 5000, local);
        shut.flags = SHUTDOWN_RCV;
        g.send(&shut, &[]);
        client.write_all(b"unwanted").unwrap();
        g.assert_quiet(QUIET);
    }

    #[test]
    fn guest_rst_closes_the_host_socket() {
        let mem = memory();
        let mut g = Guest::new(&mem, "grst");
        g.add_rx_buffers(8, RX_BUF_LEN);
        let listener = listen_on_port(&g, 4088);
        let mut server = open_guest_stream(&mut g, &listener, 40_000, 4088);
        g.send(&g.header(RST, 40_000, 4088), &[]);
        expect_eof(&mut server);
        g.assert_quiet(QUIET);
    }

    #[test]
    fn packets_for_unknown_streams_get_rst_but_rst_gets_nothing() {
        let mem = memory();
        let mut g = Guest::new(&mem, "unknown");
        g.add_rx_buffers(8, RX_BUF_LEN);
        for op in [RESPONSE, SHUTDOWN, RW, CREDIT_UPDATE, CREDIT_REQUEST] {
            g.send(&g.header(op, 1, 2), b"x");
            let (rst, _) = g.recv_one();
            assert_packet(&rst, RST, 2, 1);
        }
        g.send(&g.header(RST, 1, 2), &[]);
        g.assert_quiet(QUIET);
    }

    #[test]
    fn malformed_guest_packets_are_dropped_or_reset_without_panic() {
        let mem = memory();
        let mut g = Guest::new(&mem, "malformed");
        g.add_rx_buffers(8, RX_BUF_LEN);
        let listener = listen_on_port(&g, 4089);
        let mut server = open_guest_stream(&mut g, &listener, 41_000, 4089);

        // Shorter than a header: dropped.
        let at = g.tx_area();
        g.send_raw(&[desc(at, 20, 0, 0)]);
        // Device-writable buffer on the TX queue: dropped.
        let at = g.tx_area();
        mem.write_slice(&g.header(RW, 41_000, 4089).to_bytes(), GuestAddress(at))
            .unwrap();
        g.send_raw(&[desc(at, HEADER_LEN as u32, VRING_DESC_F_WRITE, 0)]);
        // Outside guest memory: dropped.
        g.send_raw(&[desc(MEM_SIZE as u64 + 0x1000, 64, 0, 0)]);
        // Wrong source CID: dropped.
        let mut spoofed = g.header(RW, 41_000, 4089);
        spoofed.src_cid = 7;
        g.send(&spoofed, b"spoof");
        // Wrong destination CID: dropped.
        let mut elsewhere = g.header(RW, 41_000, 4089);
        elsewhere.dst_cid = 9;
        g.send(&elsewhere, b"elsewhere");
        g.assert_quiet(QUIET);
        assert_eq!(g.tx_used(), 6, "every chain goes back to the driver");

        // Length field beyond the chain: the stream is reset.
        let mut liar = g.header(RW, 41_000, 4089);
        liar.len = 1000;
        let at = g.tx_area();
        mem.write_slice(&liar.to_bytes(), GuestAddress(at)).unwrap();
        g.send_raw(&[desc(at, HEADER_LEN as u32 + 10, 0, 0)]);
        let (rst, _) = g.recv_one();
        assert_packet(&rst, RST, 4089, 41_000);
        expect_eof(&mut server);

        // Unknown type and op: RST.
        let mut dgram = g.header(REQUEST, 41_001, 4089);
        dgram.type_ = 2;
        g.send(&dgram, &[]);
        assert_packet(&g.recv_one().0, RST, 4089, 41_001);
        g.send(&g.header(99, 41_002, 4089), &[]);
        assert_packet(&g.recv_one().0, RST, 4089, 41_002);
        // A header with len beyond 64 KiB: RST.
        let mut huge = g.header(RW, 41_003, 4089);
        huge.len = u32::MAX;
        let at = g.tx_area();
        mem.write_slice(&huge.to_bytes(), GuestAddress(at)).unwrap();
        g.send_raw(&[desc(at, HEADER_LEN as u32, 0, 0)]);
        assert_packet(&g.recv_one().0, RST, 4089, 41_003);
    }

    #[test]
    fn unusable_rx_buffers_are_returned_empty_and_skipped() {
        let mem = memory();
        let mut g = Guest::new(&mem, "badrx");
        // A read-only buffer, then one too small for a header, then a good one.
        g.add_rx_chain(200, &[desc(0x1f0_0000, 4096, 0, 0)]);
        g.add_rx_chain(201, &[desc(0x1f1_0000, 20, VRING_DESC_F_WRITE, 0)]);
        g.send(&g.header(REQUEST, 50_000, 4087), &[]);
        g.add_rx_buffers(1, RX_BUF_LEN);
        let got = g.recv_n(3);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].0, Header::default());
        assert_eq!(got[1].0, Header::default());
        assert_packet(&got[2].0, RST, 4087, 50_000);
    }

    #[test]
    fn rx_chain_split_like_linux_6_1_gets_header_and_payload() {
        let mem = memory();
        let mut g = Guest::new(&mem, "splitrx");
        g.add_rx_chain(
            100,
            &[
                desc(
                    0x1e0_0000,
                    HEADER_LEN as u32,
                    VRING_DESC_F_WRITE | VRING_DESC_F_NEXT,
                    101,
                ),
                desc(0x1e1_0000, 4096, VRING_DESC_F_WRITE, 0),
            ],
        );
        g.send(&g.header(REQUEST, 50_000, 4087), &[]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while g.rx_used() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut raw = [0u8; HEADER_LEN];
        mem.read_slice(&mut raw, GuestAddress(0x1e0_0000)).unwrap();
        let hdr = Header::from_bytes(&raw);
        assert_packet(&hdr, RST, 4087, 50_000);
        assert_eq!(hdr.src_cid, HOST_CID);
    }

    #[test]
    fn host_data_waits_for_rx_buffers() {
        let mem = memory();
        let mut g = Guest::new(&mem, "norxbuf");
        g.add_rx_buffers(1, RX_BUF_LEN);
        let mut client = host_connect(&g.uds(), 5000);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while got.is_empty() && Instant::now() < deadline {
            got = g.recv();
        }
        // The REQUEST took the only buffer; the guest does not give it back yet.
        let req = got[0].0;
        assert_eq!(req.op, REQUEST);
        g.send(&g.header(RESPONSE, 5000, req.src_port), &[]);
        assert_eq!(read_line(&mut client), format!("OK {}\n", req.src_port));
        client.write_all(b"waiting").unwrap();
        g.assert_quiet(QUIET);
        g.add_rx_buffers(1, RX_BUF_LEN);
        assert_eq!(guest_read(&mut g, 7), b"waiting");
    }

    #[test]
    fn hundred_concurrent_streams_each_carry_their_own_data() {
        let mem = memory();
        let mut g = Guest::new(&mem, "hundred");
        g.add_rx_buffers(128, RX_BUF_LEN);
        let mut clients = Vec::new();
        for i in 0..100u32 {
            clients.push(host_connect(&g.uds(), 10_000 + i));
        }
        let requests = g.recv_n(100);
        let ops: Vec<_> = requests
            .iter()
            .map(|(h, _)| (h.op, h.src_port, h.dst_port))
            .collect();
        assert_eq!(requests.len(), 100, "{ops:?}");
        let mut local_of = std::collections::HashMap::new();
        for (req, _) in &requests {
            assert_eq!(req.op, REQUEST);
            assert!(local_of.insert(req.dst_port, req.src_port).is_none());
            g.send(&g.header(RESPONSE, req.dst_port, req.src_port), &[]);
        }
        for (i, client) in clients.iter_mut().enumerate() {
            let port = 10_000 + u32::try_from(i).unwrap();
            assert_eq!(read_line(client), format!("OK {}\n", local_of[&port]));
            client
                .write_all(format!("from host {i}").as_bytes())
                .unwrap();
        }
        let mut seen = std::collections::HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.len() < 100 && Instant::now() < deadline {
            for (hdr, payload) in g.recv_n(1) {
                assert_eq!(hdr.op, RW);
                seen.entry(hdr.dst_port)
                    .or_insert_with(Vec::new)
                    .extend(payload);
            }
        }
        assert_eq!(seen.len(), 100);
        for (port, data) in &seen {
            let i = port - 10_000;
            assert_eq!(data, format!("from host {i}").as_bytes());
            g.send(
                &g.header(RW, *port, local_of[port]),
                format!("from guest {i}").as_bytes(),
            );
        }
        for (i, client) in clients.iter_mut().enumerate() {
            let want = format!("from guest {i}");
            let mut buf = vec![0u8; want.len()];
            client.read_exact(&mut buf).unwrap();
            assert_eq!(buf, want.as_bytes());
        }
    }

    #[test]
    fn hundred_guest_streams_to_one_host_listener() {
        let mem = memory();
        let mut g = Guest::new(&mem, "hundredg");
        g.add_rx_buffers(128, RX_BUF_LEN);
        let listener = listen_on_port(&g, 4090);
        let mut servers = Vec::new();
        for i in 0..100u32 {
            servers.push(open_guest_stream(&mut g, &listener, 30_000 + i, 4090));
        }
        for i in 0..100u32 {
            g.send(&g.header(RW, 30_000 + i, 4090), &i.to_le_bytes());
        }
        for (i, server) in servers.iter_mut().enumerate() {
            let mut buf = [0u8; 4];
            server.read_exact(&mut buf).unwrap();
            assert_eq!(u32::from_le_bytes(buf), u32::try_from(i).unwrap());
        }
    }

    #[test]
    fn reset_closes_every_stream_and_activation_starts_afresh() {
        let mem = memory();
        let mut g = Guest::new(&mem, "reset");
        g.add_rx_buffers(8, RX_BUF_LEN);
        let (mut client, _) = open_host_stream(&mut g, 5000);
        g.vsock.reset();
        expect_eof(&mut client);
        // The socket is still there for the next boot of the driver.
        assert!(UnixStream::connect(g.uds()).is_ok());
    }
}
