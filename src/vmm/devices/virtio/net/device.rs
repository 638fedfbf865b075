//! The network device's control plane: identity, features, config space, and
//! starting and stopping the worker thread that moves frames.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use virtio_queue::Queue;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::backend::Backend;
use super::event_handler::{
    self, DataPath, RX_QUEUE, TOKEN_RX_KICK, TOKEN_STOP, TOKEN_TX_KICK, TX_QUEUE,
};
use super::QUEUE_SIZE;
use crate::vmm::devices::virtio::{
    read_config_bytes, ActivateError, GuestMemory, Interrupt, VirtioDevice, WarnOnce,
    VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
};

/// Device ID of the network device (virtio 1.2 §5.1).
pub const VIRTIO_ID_NET: u32 = 1;
/// Feature bit: the guest may send frames with a partial checksum.
pub const VIRTIO_NET_F_CSUM: u32 = 0;
/// Feature bit: the guest takes frames with a partial checksum.
pub const VIRTIO_NET_F_GUEST_CSUM: u32 = 1;
/// Feature bits: the guest takes TCP segmentation offload over IPv4 / IPv6,
/// and with ECN.
pub const VIRTIO_NET_F_GUEST_TSO4: u32 = 7;
pub const VIRTIO_NET_F_GUEST_TSO6: u32 = 8;
pub const VIRTIO_NET_F_GUEST_ECN: u32 = 9;
/// Feature bits: the guest may send TCP segmentation offload over IPv4 /
/// IPv6, and with ECN.
pub const VIRTIO_NET_F_HOST_TSO4: u32 = 11;
pub const VIRTIO_NET_F_HOST_TSO6: u32 = 12;
pub const VIRTIO_NET_F_HOST_ECN: u32 = 13;
/// Feature bit: the config space holds the device's MAC address.
pub const VIRTIO_NET_F_MAC: u32 = 5;
/// Feature bit: one received frame may span several receive buffers.
pub const VIRTIO_NET_F_MRG_RXBUF: u32 = 15;
/// Feature bit: the config space holds the link status.
pub const VIRTIO_NET_F_STATUS: u32 = 16;
/// Link status bit in the config space's `status` field.
pub const VIRTIO_NET_S_LINK_UP: u16 = 1;

/// rx, tx.
const QUEUE_SIZES: [u16; 2] = [QUEUE_SIZE; 2];

/// What the stream backend allows: it carries whole frames without a header.
/// EVENT_IDX lets both sides skip the kicks and interrupts the other has not
/// asked for: a busy queue then costs a VM exit per batch, not per frame.
const STREAM_FEATURES: u64 = 1 << VIRTIO_F_VERSION_1
    | 1 << VIRTIO_RING_F_EVENT_IDX
    | 1 << VIRTIO_NET_F_MAC
    | 1 << VIRTIO_NET_F_STATUS
    | 1 << VIRTIO_NET_F_MRG_RXBUF
    | 1 << VIRTIO_NET_F_CSUM;

/// What the tap allows: its header carries checksum and TCP segmentation
/// offloads both ways. No UFO (the kernel no longer segments UDP for a
/// tap) and no USO.
const TAP_FEATURES: u64 = STREAM_FEATURES
    | 1 << VIRTIO_NET_F_GUEST_CSUM
    | 1 << VIRTIO_NET_F_GUEST_TSO4
    | 1 << VIRTIO_NET_F_GUEST_TSO6
    | 1 << VIRTIO_NET_F_GUEST_ECN
    | 1 << VIRTIO_NET_F_HOST_TSO4
    | 1 << VIRTIO_NET_F_HOST_TSO6
    | 1 << VIRTIO_NET_F_HOST_ECN;

/// The features the device offers over a tap, or over the stream.
pub(super) const fn offered_features(tap: bool) -> u64 {
    if tap {
        TAP_FEATURES
    } else {
        STREAM_FEATURES
    }
}

/// What the device goes by of the `features` a driver acked: those offered
/// whose dependencies (virtio 1.2 §5.1.3.1) were acked too.
pub(super) fn negotiate(offered: u64, features: u64) -> u64 {
    let mut acked = features & offered;
    let bit = |b: u32| 1u64 << b;
    for (feature, needs) in [
        (VIRTIO_NET_F_GUEST_TSO4, bit(VIRTIO_NET_F_GUEST_CSUM)),
        (VIRTIO_NET_F_GUEST_TSO6, bit(VIRTIO_NET_F_GUEST_CSUM)),
        (VIRTIO_NET_F_HOST_TSO4, bit(VIRTIO_NET_F_CSUM)),
        (VIRTIO_NET_F_HOST_TSO6, bit(VIRTIO_NET_F_CSUM)),
        // ECN needs either TSO; checked after the TSO bits settled.
        (
            VIRTIO_NET_F_GUEST_ECN,
            bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO6),
        ),
        (
            VIRTIO_NET_F_HOST_ECN,
            bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_HOST_TSO6),
        ),
    ] {
        if acked & needs == 0 {
            acked &= !bit(feature);
        }
    }
    acked
}

/// What the device shares with its worker thread, across resets.
#[derive(Debug)]
pub(super) struct Shared {
    /// The config space's `status` field.
    pub(super) status: AtomicU16,
    /// The backend hung up, failed or broke the protocol; it is not served.
    pub(super) gone: AtomicBool,
    /// Complaints about what the guest put in the queues; once only, so a
    /// looping driver cannot flood the log.
    pub(super) guest_error: WarnOnce,
    /// Complaints about the backend or the host.
    pub(super) host_error: WarnOnce,
    /// Frames the tap refused or sent malformed, each dropped alone.
    pub(super) dropped: WarnOnce,
    /// Turns of the worker's loop, to tell waiting from spinning.
    pub(super) wakeups: AtomicU64,
}

impl Shared {
    pub(super) fn new() -> Shared {
        Shared {
            status: AtomicU16::new(VIRTIO_NET_S_LINK_UP),
            gone: AtomicBool::new(false),
            guest_error: WarnOnce::default(),
            host_error: WarnOnce::default(),
            dropped: WarnOnce::default(),
            wakeups: AtomicU64::new(0),
        }
    }
}

/// The wake-ups of one worker: queue kicks and the request to stop.
pub(super) struct Kicks {
    pub(super) rx: EventFd,
    pub(super) tx: EventFd,
    pub(super) stop: EventFd,
}

struct Active {
    kicks: Arc<Kicks>,
    /// Hands the backend (with any half-sent or half-read frame) back on stop.
    worker: JoinHandle<Backend>,
}

/// virtio-net in userspace over one of two backends:
///
/// - a length-prefixed stream (passt, QEMU's `-netdev stream`), from
///   [`Net::new`]: offers VERSION_1, MAC, STATUS, MRG_RXBUF and CSUM. The
///   stream carries whole frames of at most 65535 + 14 bytes and no header,
///   so the device completes partial checksums and the guest must segment.
/// - a tap device with a virtio-net header (see [`super::open_tap`]), from
///   [`Net::with_tap`]: offers the same plus GUEST_CSUM, GUEST_TSO4/6,
///   GUEST_ECN, HOST_TSO4/6 and HOST_ECN. Headers pass through both ways;
///   on activation the tap is told (TUNSETOFFLOAD) to send the guest only
///   the offloads it acked.
pub struct Net {
    mac: [u8; 6],
    /// The backend is a tap (or stands in for one), not the stream.
    tap: bool,
    acked_features: u64,
    shared: Arc<Shared>,
    /// The backend while no worker holds it; `None` once it was lost.
    backend: Option<Backend>,
    active: Option<Active>,
}

impl Net {
    /// Creates the device over `backend`, a connected stream socket, with
    /// the MAC address `mac` for the guest.
    pub fn new(backend: UnixStream, mac: [u8; 6]) -> Net {
        Net::over(Backend::stream(backend), mac)
    }

    /// Creates the device over `tap`, a tap opened with a 12-byte virtio-net
    /// header (as [`super::open_tap`] does), with the MAC address `mac` for
    /// the guest. The tap should be up and on its bridge before the guest
    /// sends: frames written to a tap that is down are dropped.
    pub fn with_tap(tap: File, mac: [u8; 6]) -> Net {
        Net::over(Backend::tap(tap, true), mac)
    }

    /// Like `with_tap` over a socket of one frame per message standing in
    /// for the tap, which takes no TUNSETOFFLOAD.
    #[cfg(test)]
    pub(super) fn with_tap_stand_in(socket: File, mac: [u8; 6]) -> Net {
        Net::over(Backend::tap(socket, false), mac)
    }

    fn over(backend: Backend, mac: [u8; 6]) -> Net {
        Net {
            mac,
            tap: backend.is_tap(),
            acked_features: 0,
            shared: Arc::new(Shared::new()),
            backend: Some(backend),
            active: None,
        }
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The backend hung up, failed, or sent something that is not a frame:
    /// frames no longer flow, and the link shows as down.
    pub fn backend_gone(&self) -> bool {
        self.shared.gone.load(Ordering::SeqCst)
    }

    /// Turns the worker's loop has taken since the device was created.
    #[cfg(test)]
    pub(super) fn worker_wakeups(&self) -> u64 {
        self.shared.wakeups.load(Ordering::Relaxed)
    }

    fn start(
        &mut self,
        mem: GuestMemory,
        rx: Queue,
        tx: Queue,
        interrupt: Arc<dyn Interrupt>,
    ) -> io::Result<()> {
        let Some(backend) = self.backend.take() else {
            // Lost for good: serve the queues anyway so the guest does not stall.
            self.shared.gone.store(true, Ordering::SeqCst);
            let placeholder = Backend::placeholder(self.tap)?;
            return self.start_with(mem, rx, tx, interrupt, placeholder);
        };
        self.start_with(mem, rx, tx, interrupt, backend)
    }

    fn start_with(
        &mut self,
        mem: GuestMemory,
        rx: Queue,
        tx: Queue,
        interrupt: Arc<dyn Interrupt>,
        backend: Backend,
    ) -> io::Result<()> {
        let started = (|| {
            backend.prepare(self.acked_features)?;
            let kicks = Arc::new(Kicks {
                rx: EventFd::new(EFD_NONBLOCK)?,
                tx: EventFd::new(EFD_NONBLOCK)?,
                stop: EventFd::new(EFD_NONBLOCK)?,
            });
            let epoll = Epoll::new()?;
            for (fd, token) in [
                (kicks.rx.as_raw_fd(), TOKEN_RX_KICK),
                (kicks.tx.as_raw_fd(), TOKEN_TX_KICK),
                (kicks.stop.as_raw_fd(), TOKEN_STOP),
            ] {
                epoll.ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, token),
                )?;
            }
            Ok((kicks, epoll))
        })();
        let (kicks, epoll) = match started {
            Ok(parts) => parts,
            Err(e) => {
                self.backend = Some(backend);
                return Err(e);
            }
        };
        let data_path = DataPath::new(
            mem,
            rx,
            tx,
            interrupt,
            backend,
            self.acked_features,
            self.shared.clone(),
        );
        let worker = {
            let kicks = kicks.clone();
            std::thread::Builder::new()
                .name("virtio-net".into())
                .spawn(move || event_handler::run_worker(data_path, &kicks, &epoll))?
        };
        self.active = Some(Active { kicks, worker });
        Ok(())
    }

    /// Stops the worker and takes the backend back from it.
    fn stop(&mut self) {
        let Some(active) = self.active.take() else {
            return;
        };
        if let Err(e) = active.kicks.stop.write(1) {
            self.shared.host_error.warn(
                format_args!("virtio-net"),
                format_args!("could not wake the worker to stop it: {e}"),
            );
        }
        // It only ever waits in epoll, which the write above ends.
        match active.worker.join() {
            Ok(backend) => self.backend = Some(backend),
            Err(_) => {
                self.shared.gone.store(true, Ordering::SeqCst);
                self.shared.host_error.warn(
                    format_args!("virtio-net"),
                    format_args!("the worker panicked, the backend is lost"),
                );
            }
        }
    }
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("mac", &self.mac)
            .field("tap", &self.tap)
            .field("acked_features", &self.acked_features)
            .field("backend_gone", &self.backend_gone())
            .field("active", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop();
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn device_features(&self) -> u64 {
        offered_features(self.tap)
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = negotiate(offered_features(self.tap), features);
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_net_config { u8 mac[6]; le16 status; ... }: the
        // fields after status belong to features we do not offer.
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&self.mac);
        let status = self.shared.status.load(Ordering::SeqCst);
        config[6..].copy_from_slice(&status.to_le_bytes());
        read_config_bytes(&config, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // Without VIRTIO_NET_F_CTRL_MAC_ADDR the driver may not change the MAC.
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        queues: Vec<Queue>,
        interrupt: Arc<dyn Interrupt>,
    ) -> Result<(), ActivateError> {
        let got = queues.len();
        let Ok::<[Queue; 2], _>([rx, tx]) = queues.try_into() else {
            return Err(ActivateError::QueueCount { want: 2, got });
        };
        self.stop();
        self.start(mem, rx, tx, interrupt)
            .map_err(ActivateError::Io)
    }

    fn queue_notify(&mut self, index: u16) {
        let Some(active) = self.active.as_ref() else {
            return;
        };
        let kick = match index {
            RX_QUEUE => &active.kicks.rx,
            TX_QUEUE => &active.kicks.tx,
            _ => return,
        };
        // Fails only if the counter would overflow, when a wake-up is pending anyway.
        let _ = kick.write(1);
    }

    fn reset(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use virtio_queue::QueueT;

    use super::*;
    use crate::vmm::devices::virtio::mmio::MmioTransport;
    use crate::vmm::devices::virtio::net::test_support::*;
    use crate::vmm::devices::virtio::IrqTrigger;

    fn device() -> (Net, UnixStream) {
        let (ours, peer) = UnixStream::pair().unwrap();
        (Net::new(ours, MAC), peer)
    }

    #[test]
    fn identifies_as_a_network_device_with_two_queues() {
        let (net, _peer) = device();
        assert_eq!(net.device_type(), 1);
        assert_eq!(net.queue_max_sizes(), [256, 256]);
        assert_eq!(net.mac(), MAC);
        assert!(!net.backend_gone());
    }

    #[test]
    fn offers_version_1_event_idx_mac_status_mrg_rxbuf_and_csum_only() {
        let (net, _peer) = device();
        assert_eq!(
            net.device_features(),
            1 << 32 | 1 << 29 | 1 << 5 | 1 << 16 | 1 << 15 | 1 << 0
        );
        // No GUEST_CSUM (1), no TSO/UFO (7-14), no CTRL_VQ (17), no MQ (22).
        for bit in [1, 7, 10, 11, 14, 17, 22] {
            assert_eq!(net.device_features() & 1 << bit, 0, "bit {bit}");
        }
    }

    fn tap_device() -> (Net, UnixStream) {
        let (ours, peer) = crate::vmm::devices::virtio::net::fuzzing::packet_pair().unwrap();
        (
            Net::with_tap_stand_in(File::from(ours), MAC),
            UnixStream::from(peer),
        )
    }

    #[test]
    fn over_a_tap_offers_checksum_and_tcp_segmentation_offloads_both_ways() {
        let (net, _peer) = tap_device();
        let offloads = 1 << 1 | 1 << 7 | 1 << 8 | 1 << 9 | 1 << 11 | 1 << 12 | 1 << 13;
        assert_eq!(net.device_features(), STREAM_FEATURES | offloads);
        // No UFO (10, 14), no USO (54-56), no MQ.
        for bit in [10, 14, 22, 54, 55, 56] {
            assert_eq!(net.device_features() & 1 << bit, 0, "bit {bit}");
        }
        assert_eq!(negotiate(TAP_FEATURES, TAP_FEATURES), TAP_FEATURES);
    }

    #[test]
    fn offloads_whose_dependencies_were_not_acked_are_not_used() {
        let (mut net, _peer) = tap_device();
        // TSO and ECN without the checksum offloads they need (§5.1.3.1).
        let without_csum = TAP_FEATURES & !(1 << VIRTIO_NET_F_CSUM | 1 << VIRTIO_NET_F_GUEST_CSUM);
        net.ack_features(without_csum);
        assert_eq!(
            net.acked_features,
            STREAM_FEATURES & !(1 << VIRTIO_NET_F_CSUM)
        );
        // ECN without either TSO.
        net.ack_features(
            1 << VIRTIO_NET_F_GUEST_CSUM
                | 1 << VIRTIO_NET_F_GUEST_ECN
                | 1 << VIRTIO_NET_F_CSUM
                | 1 << VIRTIO_NET_F_HOST_TSO6
                | 1 << VIRTIO_NET_F_HOST_ECN,
        );
        assert_eq!(
            net.acked_features,
            1 << VIRTIO_NET_F_GUEST_CSUM
                | 1 << VIRTIO_NET_F_CSUM
                | 1 << VIRTIO_NET_F_HOST_TSO6
                | 1 << VIRTIO_NET_F_HOST_ECN
        );
    }

    #[test]
    fn the_stream_takes_no_offload_the_tap_offers() {
        let (mut net, _peer) = device();
        net.ack_features(TAP_FEATURES);
        assert_eq!(net.acked_features, STREAM_FEATURES);
    }

    #[test]
    fn acknowledged_features_are_limited_to_the_offered_ones() {
        let (mut net, _peer) = device();
        net.ack_features(u64::MAX);
        assert_eq!(net.acked_features, STREAM_FEATURES);
    }

    #[test]
    fn config_space_holds_the_mac_and_link_up_status() {
        let (mut net, _peer) = device();
        let mut all = [0xff; 8];
        net.read_config(0, &mut all);
        assert_eq!(all, [0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 1, 0]);
        let mut status = [0xff; 2];
        net.read_config(6, &mut status);
        assert_eq!(u16::from_le_bytes(status), VIRTIO_NET_S_LINK_UP);
        let mut past = [0xff; 4];
        net.read_config(8, &mut past);
        assert_eq!(past, [0; 4]);
        net.read_config(u64::MAX, &mut past);
        assert_eq!(past, [0; 4]);
        // The driver cannot change the MAC.
        net.write_config(0, &[9; 6]);
        net.read_config(0, &mut all);
        assert_eq!(&all[..6], &MAC);
    }

    #[test]
    fn activation_needs_both_queues() {
        let (mut net, _peer) = device();
        let mem = memory();
        for count in [0, 1, 3] {
            let queues = (0..count).map(|_| Queue::new(16).unwrap()).collect();
            let err = net
                .activate(mem.clone(), queues, Arc::new(CountingInterrupt::default()))
                .unwrap_err();
            assert!(
                matches!(err, ActivateError::QueueCount { want: 2, got } if got == count),
                "{err:?}"
            );
        }
    }

    #[test]
    fn notify_before_activation_does_nothing() {
        let (mut net, _peer) = device();
        net.queue_notify(0);
        net.queue_notify(1);
        net.queue_notify(7);
        net.reset();
        assert!(net.active.is_none());
        assert!(net.backend.is_some());
    }

    #[test]
    fn reset_stops_the_worker_and_a_new_activation_uses_the_same_backend() {
        let mem = memory();
        let mut g = Guest::new(&mem, 0);
        g.send(&PLAIN_HDR, &frame(60), 1);
        assert_eq!(g.peer_frame(), frame(60));

        g.reactivate(0);
        g.send(&PLAIN_HDR, &frame(70), 1);
        assert_eq!(g.peer_frame(), frame(70));
        assert_eq!(g.tx_used(1), vec![(0, 0)]);
    }

    struct NoIrq;

    impl IrqTrigger for NoIrq {
        fn trigger(&self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_transport_shows_the_device_id_features_and_mac() {
        let (net, _peer) = device();
        let mut t = MmioTransport::new(memory(), Box::new(net), Arc::new(NoIrq));
        let mut read_u32 = |offset: u64| {
            let mut data = [0u8; 4];
            t.read(offset, &mut data);
            u32::from_le_bytes(data)
        };
        assert_eq!(read_u32(0x008), 1);
        // DeviceFeatures with DeviceFeaturesSel 0: MAC, MRG_RXBUF, STATUS,
        // EVENT_IDX, CSUM.
        assert_eq!(read_u32(0x010), 1 << 5 | 1 << 15 | 1 << 16 | 1 << 29 | 1);
        let mut mac = [0u8; 6];
        t.read(0x100, &mut mac);
        assert_eq!(mac, MAC);
    }
}
