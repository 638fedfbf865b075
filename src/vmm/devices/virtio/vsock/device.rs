//! The vsock device's control plane: identity, features, config space, and
//! starting and stopping the worker thread that serves the host sockets.

use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use virtio_queue::Queue;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::muxer::{self, Muxer, Queues, Settings, Timeouts, TOKEN_LISTENER, TOKEN_WAKE};
use super::{event_handler, QUEUE_SIZE};
use crate::vmm::devices::virtio::{
    read_config_bytes, ActivateError, GuestMemory, Interrupt, VirtioDevice,
};

/// Device ID of the socket device (virtio 1.2 §5.10).
pub const VIRTIO_ID_VSOCK: u32 = 19;
/// The guest's CID unless told otherwise.
pub const DEFAULT_GUEST_CID: u64 = 3;

/// rx, tx, event.
const QUEUE_SIZES: [u16; 3] = [QUEUE_SIZE; 3];

/// Longest suffix a guest connection adds to the socket path: `_4294967294`.
const PORT_SUFFIX_MAX: usize = 11;
/// `sizeof(sockaddr_un.sun_path)` on Linux, terminating NUL included.
const SUN_PATH_LEN: usize = 108;

/// Why the device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("guest CID {0} is reserved — use a CID from 3 to 4294967294")]
    InvalidCid(u64),
    #[error(
        "socket path {} is too long for a Unix socket with a _<port> suffix — \
         use a state directory with a shorter path",
        .0.display()
    )]
    PathTooLong(PathBuf),
    #[error("could not listen on {}", .path.display())]
    Listen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// virtio-vsock in userspace: guest streams meet host Unix sockets.
///
/// Host clients connect to `uds_path` and write `CONNECT <port>\n`; guest
/// connections to host port P go to the Unix socket `<uds_path>_<P>`.
pub struct Vsock {
    /// CID, socket path, timeouts and the once-only complaint flags, which
    /// survive resets so a looping driver cannot flood the log.
    settings: Settings,
    listener: UnixListener,
    active: Option<Active>,
}

/// What an activated device shares with its worker thread.
pub(super) struct Shared {
    pub(super) muxer: Mutex<Muxer>,
    /// Wakes the worker: to stop, or to recompute its timeout.
    pub(super) wake: EventFd,
    pub(super) stop: AtomicBool,
}

impl Shared {
    pub(super) fn muxer(&self) -> MutexGuard<'_, Muxer> {
        // A panic elsewhere leaves the state as usable as it was: keep serving.
        self.muxer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(super) struct Active {
    pub(super) shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
}

impl Vsock {
    /// Creates the device and starts listening on `uds_path` (a stale socket
    /// file nobody listens on is replaced). The guest gets `guest_cid`.
    pub fn new(guest_cid: u64, uds_path: PathBuf) -> Result<Vsock, VsockError> {
        Self::with_timeouts(guest_cid, uds_path, Timeouts::default())
    }

    pub(super) fn with_timeouts(
        guest_cid: u64,
        uds_path: PathBuf,
        timeouts: Timeouts,
    ) -> Result<Vsock, VsockError> {
        // 0-2 are the hypervisor, local and host; u32::MAX is VMADDR_CID_ANY;
        // the upper 32 bits are reserved (virtio 1.2 §5.10.4).
        if !(3..u64::from(u32::MAX)).contains(&guest_cid) {
            return Err(VsockError::InvalidCid(guest_cid));
        }
        if uds_path.as_os_str().len() + PORT_SUFFIX_MAX >= SUN_PATH_LEN {
            return Err(VsockError::PathTooLong(uds_path));
        }
        let listener = bind_listener(&uds_path).map_err(|source| VsockError::Listen {
            path: uds_path.clone(),
            source,
        })?;
        Ok(Vsock {
            settings: Settings {
                guest_cid,
                uds_path,
                timeouts,
                guest_error: Arc::default(),
                host_error: Arc::default(),
            },
            listener,
            active: None,
        })
    }

    pub fn guest_cid(&self) -> u64 {
        self.settings.guest_cid
    }

    pub fn uds_path(&self) -> &Path {
        &self.settings.uds_path
    }

    pub(super) fn active(&self) -> Option<&Active> {
        self.active.as_ref()
    }

    fn start(
        &mut self,
        mem: GuestMemory,
        queues: Queues,
        interrupt: Arc<dyn Interrupt>,
    ) -> io::Result<()> {
        let epoll = Arc::new(Epoll::new()?);
        let wake = EventFd::new(EFD_NONBLOCK)?;
        epoll.ctl(
            ControlOperation::Add,
            std::os::fd::AsRawFd::as_raw_fd(&wake),
            EpollEvent::new(EventSet::IN, TOKEN_WAKE),
        )?;
        // The device keeps its listener across resets; each worker watches a copy.
        let listener = self.listener.try_clone()?;
        epoll.ctl(
            ControlOperation::Add,
            std::os::fd::AsRawFd::as_raw_fd(&listener),
            EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, TOKEN_LISTENER),
        )?;
        let muxer = Muxer::new(self.settings.clone(), mem, queues, interrupt, epoll.clone());
        let shared = Arc::new(Shared {
            muxer: Mutex::new(muxer),
            wake,
            stop: AtomicBool::new(false),
        });
        // Packets queued before DRIVER_OK: the transport dropped their kicks.
        shared.muxer().process_tx();
        let worker = {
            let shared = shared.clone();
            let host_error = self.settings.host_error.clone();
            std::thread::Builder::new()
                .name("vsock".into())
                .spawn(move || event_handler::run_worker(&shared, &listener, &epoll, &host_error))?
        };
        self.active = Some(Active {
            shared,
            worker: Some(worker),
        });
        Ok(())
    }

    /// Stops the worker and closes every stream.
    fn stop(&mut self) {
        let Some(mut active) = self.active.take() else {
            return;
        };
        active.shared.stop.store(true, Ordering::SeqCst);
        if let Err(e) = active.shared.wake.write(1) {
            self.settings.host_error.warn(
                format_args!("virtio-vsock"),
                format_args!("could not wake the worker to stop it: {e}"),
            );
        }
        if let Some(worker) = active.worker.take() {
            // It only ever waits in epoll, which the write above ends.
            let _ = worker.join();
        }
    }
}

impl std::fmt::Debug for Vsock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vsock")
            .field("guest_cid", &self.settings.guest_cid)
            .field("uds_path", &self.settings.uds_path)
            .field("active", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

/// Binds the device's socket. A socket file left by a process that is gone
/// (connecting to it is refused) is replaced; a live one is not touched.
fn bind_listener(path: &Path) -> io::Result<UnixListener> {
    let listener = match UnixListener::bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && is_stale_socket(path) => {
            fs::remove_file(path)?;
            UnixListener::bind(path)?
        }
        other => other?,
    };
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn is_stale_socket(path: &Path) -> bool {
    let is_socket = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    is_socket
        && muxer::connect_nonblocking(path)
            .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
}

impl Drop for Vsock {
    fn drop(&mut self) {
        self.stop();
        // Our socket file; a stale one would only be replaced next time.
        let _ = fs::remove_file(&self.settings.uds_path);
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_vsock_config { le64 guest_cid; }
        read_config_bytes(&self.settings.guest_cid.to_le_bytes(), offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // The config space is read-only for the driver.
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        queues: Vec<Queue>,
        interrupt: Arc<dyn Interrupt>,
    ) -> Result<(), ActivateError> {
        let got = queues.len();
        let Ok::<[Queue; 3], _>([rx, tx, event]) = queues.try_into() else {
            return Err(ActivateError::QueueCount { want: 3, got });
        };
        self.stop();
        self.start(
            mem,
            Queues {
                rx,
                tx,
                _event: event,
            },
            interrupt,
        )
        .map_err(ActivateError::Io)
    }

    fn queue_notify(&mut self, index: u16) {
        self.notify(index);
    }

    fn reset(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use virtio_queue::QueueT;

    use super::*;
    use crate::vmm::devices::virtio::vsock::test_support::{memory, CountingInterrupt, TempDir};

    fn device(dir: &TempDir) -> Vsock {
        Vsock::new(DEFAULT_GUEST_CID, dir.path().join("v.sock")).unwrap()
    }

    #[test]
    fn identifies_as_a_socket_device_offering_only_version_1() {
        let dir = TempDir::new("ident");
        let vsock = device(&dir);
        assert_eq!(vsock.device_type(), 19);
        assert_eq!(vsock.device_features(), 1 << 32);
        assert_eq!(vsock.queue_max_sizes(), [256, 256, 256]);
    }

    #[test]
    fn config_space_holds_the_guest_cid_in_little_endian() {
        let dir = TempDir::new("config");
        let mut vsock = Vsock::new(0x0102_0304, dir.path().join("v.sock")).unwrap();
        let mut all = [0xff; 8];
        vsock.read_config(0, &mut all);
        assert_eq!(all, [4, 3, 2, 1, 0, 0, 0, 0]);
        let mut low = [0xff; 4];
        vsock.read_config(0, &mut low);
        assert_eq!(low, [4, 3, 2, 1]);
        let mut byte = [0xff; 1];
        vsock.read_config(1, &mut byte);
        assert_eq!(byte, [3]);
        let mut past = [0xff; 4];
        vsock.read_config(6, &mut past);
        assert_eq!(past, [0, 0, 0, 0]);
        vsock.read_config(u64::MAX, &mut past);
        assert_eq!(past, [0; 4]);
        // The driver cannot change it.
        vsock.write_config(0, &[9; 8]);
        vsock.read_config(0, &mut all);
        assert_eq!(all, [4, 3, 2, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn reserved_cids_are_refused() {
        let dir = TempDir::new("cids");
        for cid in [0, 1, 2, u64::from(u32::MAX), 1 << 32] {
            let err = Vsock::new(cid, dir.path().join("v.sock")).unwrap_err();
            assert!(
                matches!(err, VsockError::InvalidCid(c) if c == cid),
                "{err}"
            );
        }
        assert!(Vsock::new(u64::from(u32::MAX) - 1, dir.path().join("v.sock")).is_ok());
    }

    #[test]
    fn socket_path_too_long_for_a_port_suffix_is_refused() {
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(92)));
        let err = Vsock::new(3, long).unwrap_err();
        assert!(matches!(err, VsockError::PathTooLong(_)), "{err}");
        assert!(err.to_string().contains("shorter path"));
    }

    #[test]
    fn stale_socket_file_is_replaced_but_a_live_one_is_not() {
        let dir = TempDir::new("stale");
        let path = dir.path().join("v.sock");
        // A listener that went away leaves its file behind.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let first = Vsock::new(3, path.clone()).unwrap();

        let err = Vsock::new(3, path.clone()).unwrap_err();
        assert!(matches!(err, VsockError::Listen { .. }), "{err}");
        assert!(
            UnixStream::connect(&path).is_ok(),
            "the live socket survives"
        );
        drop(first);
        assert!(!path.exists(), "the device removes its socket");
    }

    #[test]
    fn a_regular_file_in_the_way_is_not_removed() {
        let dir = TempDir::new("file");
        let path = dir.path().join("v.sock");
        fs::write(&path, b"not a socket").unwrap();
        assert!(matches!(
            Vsock::new(3, path.clone()),
            Err(VsockError::Listen { .. })
        ));
        assert_eq!(fs::read(&path).unwrap(), b"not a socket");
    }

    #[test]
    fn activation_needs_all_three_queues() {
        let dir = TempDir::new("queues");
        let mut vsock = device(&dir);
        let mem = memory();
        for count in [0, 2, 4] {
            let queues = (0..count).map(|_| Queue::new(16).unwrap()).collect();
            let err = vsock
                .activate(mem.clone(), queues, Arc::new(CountingInterrupt::default()))
                .unwrap_err();
            assert!(
                matches!(err, ActivateError::QueueCount { want: 3, got } if got == count),
                "{err:?}"
            );
        }
    }

    struct NoIrq;

    impl crate::vmm::devices::virtio::IrqTrigger for NoIrq {
        fn trigger(&self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_transport_shows_the_device_id_and_the_guest_cid() {
        use crate::vmm::devices::virtio::mmio::MmioTransport;

        let dir = TempDir::new("mmio");
        let vsock = Vsock::new(42, dir.path().join("v.sock")).unwrap();
        let mut t = MmioTransport::new(memory(), Box::new(vsock), Arc::new(NoIrq));
        let mut id = [0u8; 4];
        t.read(0x008, &mut id);
        assert_eq!(u32::from_le_bytes(id), 19);
        let mut cid = [0u8; 8];
        t.read(0x100, &mut cid);
        assert_eq!(u64::from_le_bytes(cid), 42);
    }

    #[test]
    fn notify_before_activation_does_nothing() {
        let dir = TempDir::new("early");
        let mut vsock = device(&dir);
        vsock.queue_notify(0);
        vsock.queue_notify(1);
        vsock.queue_notify(2);
        vsock.reset();
        assert!(vsock.active().is_none());
    }
}
