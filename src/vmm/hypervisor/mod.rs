//! The hypervisor behind one interface: KVM on Linux (`kvm.rs`), Hypervisor.framework
//! on macOS (`hvf.rs`). Nothing outside this folder names the platform's API.

#[cfg(target_os = "macos")]
mod hvf;
#[cfg(target_os = "linux")]
mod kvm;

#[cfg(target_os = "linux")]
pub use kvm::{KvmHypervisor as PlatformHypervisor, KvmVcpu as PlatformVcpu, KvmVm as PlatformVm};

/// The platform's hypervisor as users know it (`a3s-box info`).
#[cfg(target_os = "linux")]
pub const NAME: &str = "KVM";

use vmm_sys_util::eventfd::EventFd;

/// Failures of the hypervisor layer. The messages say what the user can do.
#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    #[error(
        "no usable KVM: /dev/kvm is missing — run on a host with hardware virtualisation \
         (and the kvm module loaded), or use scripts/kvm-harness for tests"
    )]
    NoDevice,
    #[error(
        "no permission to open /dev/kvm — run as root or add this user to the group that owns /dev/kvm"
    )]
    NoPermission,
    #[error("/dev/kvm could not be opened")]
    Open(#[source] std::io::Error),
    #[error("KVM API version {0} is not supported (12 is required)")]
    ApiVersion(i32),
    #[error("the hypervisor lacks a required capability: {0}")]
    MissingCapability(&'static str),
    #[error("{op} failed")]
    Ioctl {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl HypervisorError {
    pub(crate) fn ioctl(op: &'static str, source: impl Into<std::io::Error>) -> Self {
        HypervisorError::Ioctl {
            op,
            source: source.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, HypervisorError>;

/// A code or data segment as the vCPU's hidden segment registers hold it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    pub type_: u8,
    pub present: bool,
    pub dpl: u8,
    pub db: bool,
    pub s: bool,
    pub l: bool,
    pub g: bool,
}

/// The register state in which an x86_64 vCPU enters the kernel.
#[derive(Clone, Copy, Debug, Default)]
pub struct X86BootState {
    pub rip: u64,
    pub rsp: u64,
    /// The zero page (`boot_params`) for the 64-bit Linux boot protocol.
    pub rsi: u64,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub gdt_base: u64,
    pub gdt_limit: u16,
    pub idt_base: u64,
    pub idt_limit: u16,
    pub code: Segment,
    pub data: Segment,
    pub tss: Segment,
}

/// Why a vCPU stopped running guest code. Borrowed data must be handled (and, for
/// reads, filled in) before the vCPU runs again.
#[derive(Debug)]
pub enum VcpuExit<'a> {
    IoIn(u16, &'a mut [u8]),
    IoOut(u16, &'a [u8]),
    MmioRead(u64, &'a mut [u8]),
    MmioWrite(u64, &'a [u8]),
    /// The guest halted with interrupts off, or the hypervisor asked us to stop it.
    Hlt,
    /// Triple fault or a reset request the hypervisor handled as a shutdown.
    Shutdown,
    /// The hypervisor could not emulate an instruction of the guest: this happens on
    /// hosts (often nested VMs) whose KVM cannot run a real guest kernel.
    EmulationFailure {
        instruction: Vec<u8>,
    },
    /// The hypervisor refused to enter the guest (bad state or unsupported host).
    FailEntry(u64),
    /// `run` was interrupted by a signal; the caller decides whether to run again.
    Interrupted,
    /// Any other exit, described.
    Other(String),
}

/// A virtual machine: memory slots, interrupt lines, vCPUs.
pub trait Vm: Send + Sync {
    type Vcpu: Vcpu;

    /// Maps `size` bytes of host memory at `host_addr` into the guest at `guest_addr`.
    ///
    /// # Safety
    /// The host range must stay mapped and valid for as long as the VM exists.
    unsafe fn add_memory(
        &self,
        slot: u32,
        guest_addr: u64,
        size: u64,
        host_addr: u64,
    ) -> Result<()>;

    /// Returns an event that raises interrupt line `gsi` when written.
    fn irq_line(&self, gsi: u32) -> Result<EventFd>;

    /// Returns an event the hypervisor signals, without a vCPU exit to the
    /// VMM, whenever the guest writes the 32-bit `value` to MMIO `addr` (a
    /// virtio queue notification).
    fn mmio_notifier(&self, addr: u64, value: u32) -> Result<EventFd>;

    /// Creates vCPU `index` of `count`; its CPUID describes that topology.
    fn create_vcpu(&self, index: u8, count: u8) -> Result<Self::Vcpu>;
}

/// One virtual CPU; `run` blocks in the guest until an exit needs the VMM.
pub trait Vcpu: Send {
    /// Puts the vCPU in 64-bit mode at the kernel's entry.
    fn set_boot_state(&self, state: &X86BootState) -> Result<()>;
    /// Runs the guest until the next exit the VMM must handle.
    fn run(&mut self) -> Result<VcpuExit<'_>>;
    /// The vCPU's main registers, in one line, for reports of a guest that
    /// stopped unexpectedly.
    fn describe(&self) -> String;
}
