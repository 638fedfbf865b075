//! One running virtual machine: memory, devices, vCPU threads, and how it ends.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use vm_memory::{Address, GuestMemory as _, GuestMemoryRegion};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::boot::x86_64::{self as boot, BootConfig, BootError};
use super::devices::serial::{SerialDevice, COM1_BASE, COM1_IRQ, COM1_LEN};
use super::devices::virtio::mmio::{MmioTransport, MMIO_WINDOW, QUEUE_NOTIFY_OFFSET};
use super::devices::virtio::rng::Rng;
use super::devices::virtio::VirtioDevice;
use super::devices::IrqLine;
use super::hypervisor::{
    HypervisorError, PlatformHypervisor, PlatformVm, Vcpu, VcpuExit, Vm as _, X86BootState,
};
use super::memory::{self, GuestMemory, MemoryError};
use crate::proto::{decode_exit_status, EXIT_STATUS_PORT};

/// Kernel arguments every box gets: console on COM1, `reboot=k` so a reboot reaches
/// the VMM as an i8042 reset, an immediate reboot on panic, and quiet boots (every
/// console byte is a VM exit).
pub const BASE_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 quiet 8250.nr_uarts=1";

/// Where virtio-mmio windows start (inside the MMIO gap) and the first IRQ they use.
const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
const VIRTIO_FIRST_IRQ: u32 = 5;
/// The i8042 command port; 0xfe on it is the "pulse reset line" command that Linux
/// uses for `reboot=k`.
const I8042_COMMAND_PORT: u16 = 0x64;
const I8042_DATA_PORT: u16 = 0x60;
const I8042_RESET: u8 = 0xfe;

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error(transparent)]
    Hypervisor(#[from] HypervisorError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error("{0} vCPUs requested: between 1 and {MAX_VCPUS} are supported")]
    CpuCount(u32),
    #[error(
        "this host's KVM cannot run the guest: it failed to emulate an instruction ({0}) \
         — this happens inside VMs without full nested virtualisation; run on a host with \
         hardware virtualisation, or use scripts/kvm-harness for tests"
    )]
    EmulationFailure(String),
    #[error("the hypervisor refused to enter the guest (hardware reason {0:#x})")]
    FailEntry(u64),
    #[error("vCPU stopped unexpectedly: {0}")]
    UnexpectedExit(String),
    #[error("vCPU thread could not be started")]
    Thread(#[source] std::io::Error),
    #[error("could not set up the virtio queue notifications")]
    Notifier(#[source] std::io::Error),
}

/// What to run.
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<Vec<u8>>,
    /// The kernel command line without the device announcements the VMM adds.
    pub cmdline: String,
    /// Arguments for the guest's init, passed after `--` on the command line.
    pub init_args: Option<String>,
    pub cpus: u32,
    pub memory: u64,
    pub console: Box<dyn Write + Send>,
    /// virtio devices besides the entropy device every VM gets.
    pub devices: Vec<Box<dyn VirtioDevice>>,
}

/// How the VM ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmExit {
    /// Guest init reported the main process's exit status.
    Status(u8),
    /// The guest reset or shut down without reporting a status (reboot, panic).
    Reset,
}

/// Events vCPU threads send to the thread that owns the VM.
enum VmEvent {
    Exit(VmExit),
    Failed(VmmError),
}

/// Port and memory-mapped I/O dispatch, shared by the vCPU threads.
struct Bus {
    serial: Mutex<SerialDevice>,
    virtio: Vec<(u64, Mutex<MmioTransport>)>,
}

impl Bus {
    fn io_in(&self, port: u16, data: &mut [u8]) {
        match port {
            p if (COM1_BASE..COM1_BASE + COM1_LEN).contains(&p) && data.len() == 1 => {
                data[0] = self.serial.lock().unwrap().read((p - COM1_BASE) as u8);
            }
            // No keyboard controller: status "nothing to read, ready for commands".
            I8042_COMMAND_PORT | I8042_DATA_PORT => data.fill(0),
            _ => data.fill(0xff),
        }
    }

    /// Handles an `out`; returns how the VM ends when the write ends it.
    fn io_out(&self, port: u16, data: &[u8]) -> Option<VmExit> {
        match port {
            p if (COM1_BASE..COM1_BASE + COM1_LEN).contains(&p) && data.len() == 1 => {
                self.serial
                    .lock()
                    .unwrap()
                    .write((p - COM1_BASE) as u8, data[0]);
                None
            }
            I8042_COMMAND_PORT if data == [I8042_RESET] => Some(VmExit::Reset),
            EXIT_STATUS_PORT if data.len() == 4 => {
                let value = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                // An out-of-range value is the guest's fault, not a workload's status.
                Some(VmExit::Status(decode_exit_status(value).unwrap_or(125)))
            }
            _ => None,
        }
    }

    fn mmio(&self, addr: u64) -> Option<(u64, &Mutex<MmioTransport>)> {
        self.virtio
            .iter()
            .find(|(base, _)| (*base..*base + MMIO_WINDOW).contains(&addr))
            .map(|(base, dev)| (addr - base, dev))
    }

    fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        match self.mmio(addr) {
            Some((off, dev)) => dev.lock().unwrap().read(off, data),
            None => data.fill(0xff),
        }
    }

    fn mmio_write(&self, addr: u64, data: &[u8]) {
        if let Some((off, dev)) = self.mmio(addr) {
            dev.lock().unwrap().write(off, data);
        }
    }
}

/// A queue notification the hypervisor catches: the guest wrote `queue` to
/// the QueueNotify register of virtio device `device`.
struct Kick {
    evt: EventFd,
    device: usize,
    queue: u32,
}

/// Hands each caught queue notification to its device, as the register
/// write would have. Runs for the life of the VM.
fn kick_loop(epoll: &Epoll, kicks: &[Kick], bus: &Bus) {
    let mut events = [EpollEvent::default(); 16];
    loop {
        let count = match epoll.wait(-1, &mut events) {
            Ok(count) => count,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("a3s-box: virtio queue notifications are no longer served: {e}");
                return;
            }
        };
        for event in &events[..count] {
            let Some(kick) = usize::try_from(event.data())
                .ok()
                .and_then(|i| kicks.get(i))
            else {
                continue;
            };
            // Clears the counter: any number of kicks asks for one pass.
            let _ = kick.evt.read();
            if let Some((_, transport)) = bus.virtio.get(kick.device) {
                transport.lock().unwrap().queue_notify(kick.queue);
            }
        }
    }
}

/// Runs one vCPU until the VM ends or the vCPU fails.
fn vcpu_loop(mut vcpu: impl Vcpu, bus: Arc<Bus>, events: mpsc::Sender<VmEvent>) {
    let outcome = loop {
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            Err(e) => break VmEvent::Failed(e.into()),
        };
        match exit {
            VcpuExit::IoIn(port, data) => bus.io_in(port, data),
            VcpuExit::IoOut(port, data) => {
                if let Some(exit) = bus.io_out(port, data) {
                    break VmEvent::Exit(exit);
                }
            }
            VcpuExit::MmioRead(addr, data) => bus.mmio_read(addr, data),
            VcpuExit::MmioWrite(addr, data) => bus.mmio_write(addr, data),
            VcpuExit::Interrupted => {}
            VcpuExit::Hlt => break VmEvent::Exit(VmExit::Reset),
            VcpuExit::Shutdown => {
                // A triple fault, most often: say where, for whoever reads the log.
                eprintln!(
                    "a3s-box: the guest shut down without reporting a status (triple fault?): {}",
                    vcpu.describe()
                );
                break VmEvent::Exit(VmExit::Reset);
            }
            VcpuExit::EmulationFailure { instruction } => {
                let what = if instruction.is_empty() {
                    "instruction bytes unavailable".to_string()
                } else {
                    let hex: Vec<String> = instruction.iter().map(|b| format!("{b:02x}")).collect();
                    format!("bytes {}", hex.join(" "))
                };
                break VmEvent::Failed(VmmError::EmulationFailure(what));
            }
            VcpuExit::FailEntry(reason) => break VmEvent::Failed(VmmError::FailEntry(reason)),
            VcpuExit::Other(what) => break VmEvent::Failed(VmmError::UnexpectedExit(what)),
        }
    };
    let _ = events.send(outcome);
}

/// The kernel command line the VMM passes: the caller's, one
/// `virtio_mmio.device=` announcement per device, then init's arguments after `--`
/// (the kernel hands everything after it to init, not to its own parser).
fn full_cmdline(base: &str, devices: &[(u64, u32)], init_args: Option<&str>) -> String {
    let mut s = base.trim().to_string();
    for (addr, irq) in devices {
        s.push_str(&format!(" virtio_mmio.device=4K@{addr:#x}:{irq}"));
    }
    if let Some(args) = init_args {
        s.push_str(" -- ");
        s.push_str(args);
    }
    s
}

/// A VM whose vCPUs are running.
pub struct RunningVm {
    events: mpsc::Receiver<VmEvent>,
    mem: GuestMemory,
    vm: PlatformVm,
}

impl RunningVm {
    /// Blocks until the VM ends. The vCPU threads are not stopped: the process is
    /// expected to exit soon after, which ends the VM.
    pub fn wait(self) -> Result<VmExit, VmmError> {
        let outcome = match self.events.recv() {
            Ok(VmEvent::Exit(exit)) => Ok(exit),
            Ok(VmEvent::Failed(e)) => Err(e),
            Err(_) => Err(VmmError::UnexpectedExit("all vCPUs stopped".into())),
        };
        if std::env::var_os("A3S_BOX_STATS").is_some() {
            report_memory(&self.mem);
        }
        // vCPU threads may still be inside the guest: its memory and the VM must
        // stay valid until the process exits.
        std::mem::forget(self.vm);
        std::mem::forget(self.mem);
        outcome
    }
}

/// Boots the VM and blocks until it ends.
pub fn run(cfg: VmConfig) -> Result<VmExit, VmmError> {
    start(cfg)?.wait()
}

/// The most vCPUs a VM gets (the MP table's limit).
pub const MAX_VCPUS: u32 = super::boot::mptable::MAX_CPUS as u32;

/// The vCPU count `n`, if a VM can have that many.
pub fn check_cpus(n: u32) -> Result<u8, VmmError> {
    u8::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_VCPUS).contains(&u32::from(*n)))
        .ok_or(VmmError::CpuCount(n))
}

/// Boots the VM and returns once its vCPUs run.
pub fn start(cfg: VmConfig) -> Result<RunningVm, VmmError> {
    let cpus = check_cpus(cfg.cpus)?;
    boot::check_kernel(&cfg.kernel)?;
    let hv = PlatformHypervisor::open()?;
    let vm = hv.create_vm()?;
    let mem: GuestMemory = memory::create(cfg.memory)?;
    for (slot, region) in mem.iter().enumerate() {
        // SAFETY: `mem` owns these mappings; it moves into the RunningVm, whose
        // `wait` leaks it rather than unmap it under running vCPUs.
        unsafe {
            vm.add_memory(
                slot as u32,
                region.start_addr().raw_value(),
                region.len(),
                region.as_ptr() as u64,
            )?;
        }
    }

    let (tx, rx) = mpsc::channel();
    let serial = SerialDevice::new(vm.irq_line(COM1_IRQ)?, cfg.console);
    let mut devices: Vec<Box<dyn VirtioDevice>> = vec![Box::new(Rng::new())];
    devices.extend(cfg.devices);
    let mut virtio = Vec::new();
    let mut announce = Vec::new();
    for (i, dev) in devices.into_iter().enumerate() {
        let base = VIRTIO_MMIO_BASE + i as u64 * MMIO_WINDOW;
        let irq = VIRTIO_FIRST_IRQ + i as u32;
        let line = Arc::new(IrqLine(vm.irq_line(irq)?));
        virtio.push((base, Mutex::new(MmioTransport::new(mem.clone(), dev, line))));
        announce.push((base, irq));
    }
    let cmdline = full_cmdline(&cfg.cmdline, &announce, cfg.init_args.as_deref());

    let state: X86BootState = boot::load(
        &mem,
        &BootConfig {
            kernel: &cfg.kernel,
            initrd: cfg.initrd.as_deref(),
            cmdline: &cmdline,
            cpus,
        },
    )?;
    drop(cfg.initrd);

    // Queue notifications reach a thread of ours through the hypervisor, so
    // a kick costs the vCPU no exit to the VMM.
    let mut kicks = Vec::new();
    for (device, (base, transport)) in virtio.iter().enumerate() {
        let queues = transport.lock().unwrap().queue_count();
        for queue in 0..queues as u32 {
            let evt = vm.mmio_notifier(base + QUEUE_NOTIFY_OFFSET, queue)?;
            kicks.push(Kick { evt, device, queue });
        }
    }
    let bus = Arc::new(Bus {
        serial: Mutex::new(serial),
        virtio,
    });
    let epoll = Epoll::new().map_err(VmmError::Notifier)?;
    for (i, kick) in kicks.iter().enumerate() {
        epoll
            .ctl(
                ControlOperation::Add,
                kick.evt.as_raw_fd(),
                EpollEvent::new(EventSet::IN, i as u64),
            )
            .map_err(VmmError::Notifier)?;
    }
    {
        let bus = bus.clone();
        std::thread::Builder::new()
            .name("virtio-kick".into())
            .spawn(move || kick_loop(&epoll, &kicks, &bus))
            .map_err(VmmError::Thread)?;
    }
    for index in 0..cpus {
        let vcpu = vm.create_vcpu(index, cpus)?;
        vcpu.set_boot_state(&state)?;
        let (bus, events) = (bus.clone(), tx.clone());
        std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || vcpu_loop(vcpu, bus, events))
            .map_err(VmmError::Thread)?;
    }
    drop(tx);
    Ok(RunningVm {
        events: rx,
        mem,
        vm,
    })
}

/// Prints the shim's peak resident memory and how much of it is guest RAM the guest
/// touched, so the VMM's own overhead is their difference (used by benchmarks).
fn report_memory(mem: &GuestMemory) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    // Guest RAM may be several mappings (the kernel is mapped from its file over
    // part of it): count every mapping inside a region.
    let regions: Vec<(u64, u64)> = mem
        .iter()
        .map(|r| (r.as_ptr() as u64, r.as_ptr() as u64 + r.len()))
        .collect();
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut guest_kib = 0u64;
    let mut in_guest = false;
    for line in smaps.lines() {
        if let Some(rss) = line.strip_prefix("Rss:") {
            if in_guest {
                guest_kib += rss
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0);
            }
        } else if let Some((range, _)) = line.split_once(' ') {
            let bounds = range.split_once('-').and_then(|(a, b)| {
                Some((
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                ))
            });
            if let Some((start, end)) = bounds {
                in_guest = regions.iter().any(|(s, e)| start >= *s && end <= *e);
            }
        }
    }
    eprintln!("a3s-box-stats: peak_rss_kib={peak_kib} guest_rss_kib={guest_kib}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_announced_on_the_command_line() {
        let s = full_cmdline(
            "console=ttyS0 ",
            &[(0xd000_0000, 5), (0xd000_1000, 6)],
            None,
        );
        assert_eq!(
            s,
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6"
        );
    }

    #[test]
    fn device_announcements_come_before_init_arguments() {
        let s = full_cmdline("quiet", &[(0xd000_0000, 5)], Some("/bin/sh -c \"exit 3\""));
        assert_eq!(
            s,
            "quiet virtio_mmio.device=4K@0xd0000000:5 -- /bin/sh -c \"exit 3\""
        );
    }
}
