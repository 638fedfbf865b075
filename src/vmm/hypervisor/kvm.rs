//! KVM on Linux.

use kvm_bindings::{
    kvm_fpu, kvm_msr_entry, kvm_pit_config, kvm_regs, kvm_run, kvm_segment,
    kvm_userspace_memory_region, CpuId, Msrs, KVM_INTERNAL_ERROR_EMULATION, KVM_MAX_CPUID_ENTRIES,
    KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VcpuExit as KvmExit, VcpuFd, VmFd};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{HypervisorError, Result, Segment, Vcpu, VcpuExit, Vm, X86BootState};

/// Where KVM may put the three pages of its real-mode TSS and identity map: just
/// below the 4 GiB boundary, in the MMIO gap, away from RAM and devices.
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;
const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_IA32_MISC_ENABLE_FAST_STRING: u64 = 1;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// Local APIC register offsets of the two local interrupt pins and the delivery
/// modes Linux expects on them: the legacy PIC on LINT0, NMI on LINT1.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_MODE_NMI: u32 = 0x4;

/// An open `/dev/kvm`.
pub struct KvmHypervisor {
    kvm: Kvm,
}

impl KvmHypervisor {
    pub fn open() -> Result<Self> {
        let kvm = Kvm::new().map_err(|e| match e.errno() {
            libc::ENOENT | libc::ENODEV | libc::ENXIO => HypervisorError::NoDevice,
            libc::EACCES | libc::EPERM => HypervisorError::NoPermission,
            _ => HypervisorError::Open(e.into()),
        })?;
        let version = kvm.get_api_version();
        if version != 12 {
            return Err(HypervisorError::ApiVersion(version));
        }
        for (cap, name) in [
            (Cap::Irqchip, "in-kernel irqchip"),
            (Cap::Ioeventfd, "ioeventfd"),
            (Cap::Irqfd, "irqfd"),
            (Cap::UserMemory, "user memory"),
            (Cap::SetTssAddr, "TSS address"),
            (Cap::Pit2, "PIT"),
            (Cap::ExtCpuid, "CPUID"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(HypervisorError::MissingCapability(name));
            }
        }
        Ok(KvmHypervisor { kvm })
    }

    /// Creates a VM with an in-kernel irqchip (PIC + IOAPIC + LAPICs) and PIT.
    pub fn create_vm(&self) -> Result<KvmVm> {
        let mut vm = self.create_vm_bare()?;
        vm.fd
            .create_irq_chip()
            .map_err(|e| HypervisorError::ioctl("KVM_CREATE_IRQCHIP", e))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.fd
            .create_pit2(pit)
            .map_err(|e| HypervisorError::ioctl("KVM_CREATE_PIT2", e))?;
        vm.irqchip = true;
        Ok(vm)
    }

    /// Creates a VM without interrupt controllers or timers, in which `hlt` returns
    /// to the VMM: enough for hand-assembled test guests.
    pub fn create_vm_bare(&self) -> Result<KvmVm> {
        let fd = self
            .kvm
            .create_vm()
            .map_err(|e| HypervisorError::ioctl("KVM_CREATE_VM", e))?;
        fd.set_tss_address(KVM_TSS_ADDRESS)
            .map_err(|e| HypervisorError::ioctl("KVM_SET_TSS_ADDR", e))?;
        fd.set_identity_map_address(KVM_IDENTITY_MAP_ADDRESS)
            .map_err(|e| HypervisorError::ioctl("KVM_SET_IDENTITY_MAP_ADDR", e))?;
        let cpuid = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| HypervisorError::ioctl("KVM_GET_SUPPORTED_CPUID", e))?;
        Ok(KvmVm {
            fd,
            cpuid,
            irqchip: false,
            tsc_deadline: self.kvm.check_extension(Cap::TscDeadlineTimer),
        })
    }
}

pub struct KvmVm {
    fd: VmFd,
    cpuid: CpuId,
    irqchip: bool,
    /// The in-kernel LAPIC can emulate the TSC-deadline timer. KVM leaves that bit out
    /// of its supported CPUID; offering it spares the guest calibrating the LAPIC
    /// timer, which is slow and unreliable when the host is itself virtual.
    tsc_deadline: bool,
}

impl Vm for KvmVm {
    type Vcpu = KvmVcpu;

    unsafe fn add_memory(
        &self,
        slot: u32,
        guest_addr: u64,
        size: u64,
        host_addr: u64,
    ) -> Result<()> {
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: guest_addr,
            memory_size: size,
            userspace_addr: host_addr,
        };
        // SAFETY: the caller guarantees the host range stays mapped for the VM's life.
        unsafe { self.fd.set_user_memory_region(region) }
            .map_err(|e| HypervisorError::ioctl("KVM_SET_USER_MEMORY_REGION", e))
    }

    fn irq_line(&self, gsi: u32) -> Result<EventFd> {
        let evt = EventFd::new(EFD_NONBLOCK).map_err(|e| HypervisorError::ioctl("eventfd", e))?;
        self.fd
            .register_irqfd(&evt, gsi)
            .map_err(|e| HypervisorError::ioctl("KVM_IRQFD", e))?;
        Ok(evt)
    }

    fn mmio_notifier(&self, addr: u64, value: u32) -> Result<EventFd> {
        let evt = EventFd::new(EFD_NONBLOCK).map_err(|e| HypervisorError::ioctl("eventfd", e))?;
        // A u32 datamatch: KVM matches 4-byte writes of exactly `value`.
        self.fd
            .register_ioevent(&evt, &IoEventAddress::Mmio(addr), value)
            .map_err(|e| HypervisorError::ioctl("KVM_IOEVENTFD", e))?;
        Ok(evt)
    }

    fn create_vcpu(&self, index: u8, count: u8) -> Result<KvmVcpu> {
        let fd = self
            .fd
            .create_vcpu(u64::from(index))
            .map_err(|e| HypervisorError::ioctl("KVM_CREATE_VCPU", e))?;
        let mut cpuid = self.cpuid.clone();
        fix_cpuid(
            cpuid.as_mut_slice(),
            index,
            count,
            self.irqchip && self.tsc_deadline,
        );
        fd.set_cpuid2(&cpuid)
            .map_err(|e| HypervisorError::ioctl("KVM_SET_CPUID2", e))?;
        if self.irqchip {
            set_lint(&fd)?;
        }
        Ok(KvmVcpu { fd })
    }
}

/// Adjusts the host's supported CPUID to describe vCPU `index` of `count`: APIC IDs,
/// logical processor counts and the hypervisor bit. Everything else passes through.
fn fix_cpuid(
    entries: &mut [kvm_bindings::kvm_cpuid_entry2],
    index: u8,
    count: u8,
    tsc_deadline: bool,
) {
    let apic_id = u32::from(index);
    let count = u32::from(count);
    for e in entries.iter_mut() {
        match e.function {
            0x1 => {
                // EBX: [31:24] initial APIC ID, [23:16] logical processors, [15:8] CLFLUSH size / 8.
                e.ebx = (apic_id << 24) | (count << 16) | (8 << 8);
                // ECX bit 31: running under a hypervisor; bit 24: TSC-deadline timer.
                e.ecx |= 1 << 31;
                if tsc_deadline {
                    e.ecx |= 1 << 24;
                }
                // EDX bit 28 (HTT): the logical processor count in EBX is valid.
                if count > 1 {
                    e.edx |= 1 << 28;
                } else {
                    e.edx &= !(1 << 28);
                }
            }
            // Extended topology: the x2APIC ID of this logical processor.
            0xb | 0x1f => e.edx = apic_id,
            // AMD: number of physical cores minus one.
            0x8000_0008 => e.ecx = (e.ecx & !0xff) | (count.saturating_sub(1) & 0xff),
            _ => {}
        }
    }
}

/// The instruction KVM failed to emulate, from the `emulation_failure` layout of
/// `kvm_run.internal`: data[0] holds flags (bit 0: instruction bytes are valid), then
/// one byte of length and up to 15 instruction bytes.
fn emulation_failure_bytes(ndata: u32, data: &[u64]) -> Vec<u8> {
    const INSTRUCTION_BYTES_VALID: u64 = 1;
    if ndata < 2 || data.len() < 3 || data[0] & INSTRUCTION_BYTES_VALID == 0 {
        return Vec::new();
    }
    let bytes: Vec<u8> = data[1..3].iter().flat_map(|w| w.to_le_bytes()).collect();
    let len = usize::from(bytes[0]).min(15);
    bytes[1..=len].to_vec()
}

/// Programs LINT0 as ExtINT and LINT1 as NMI, as a BIOS would.
fn set_lint(fd: &VcpuFd) -> Result<()> {
    let mut lapic = fd
        .get_lapic()
        .map_err(|e| HypervisorError::ioctl("KVM_GET_LAPIC", e))?;
    for (reg, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[reg + i] as u8);
        let value = u32::from_le_bytes(bytes);
        let value = (value & !0x700) | (mode << 8);
        for (i, b) in value.to_le_bytes().iter().enumerate() {
            lapic.regs[reg + i] = *b as libc::c_char;
        }
    }
    fd.set_lapic(&lapic)
        .map_err(|e| HypervisorError::ioctl("KVM_SET_LAPIC", e))
}

fn kvm_segment_of(s: &Segment) -> kvm_segment {
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: u8::from(s.present),
        dpl: s.dpl,
        db: u8::from(s.db),
        s: u8::from(s.s),
        l: u8::from(s.l),
        g: u8::from(s.g),
        avl: 0,
        unusable: u8::from(!s.present),
        padding: 0,
    }
}

pub struct KvmVcpu {
    fd: VcpuFd,
}

impl Vcpu for KvmVcpu {
    fn describe(&self) -> String {
        match (self.fd.get_regs(), self.fd.get_sregs()) {
            (Ok(r), Ok(s)) => format!(
                "rip={:#x} rsp={:#x} rflags={:#x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} \
                 efer={:#x} idt={:#x}/{:#x} cs={:#x}",
                r.rip,
                r.rsp,
                r.rflags,
                s.cr0,
                s.cr2,
                s.cr3,
                s.cr4,
                s.efer,
                s.idt.base,
                s.idt.limit,
                s.cs.selector
            ),
            (Err(e), _) | (_, Err(e)) => format!("registers unavailable: {e}"),
        }
    }

    fn set_boot_state(&self, st: &X86BootState) -> Result<()> {
        let mut sregs = self
            .fd
            .get_sregs()
            .map_err(|e| HypervisorError::ioctl("KVM_GET_SREGS", e))?;
        let code = kvm_segment_of(&st.code);
        let data = kvm_segment_of(&st.data);
        sregs.cs = code;
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.tr = kvm_segment_of(&st.tss);
        sregs.gdt.base = st.gdt_base;
        sregs.gdt.limit = st.gdt_limit;
        sregs.idt.base = st.idt_base;
        sregs.idt.limit = st.idt_limit;
        sregs.cr0 = st.cr0;
        sregs.cr3 = st.cr3;
        sregs.cr4 = st.cr4;
        sregs.efer = st.efer;
        self.fd
            .set_sregs(&sregs)
            .map_err(|e| HypervisorError::ioctl("KVM_SET_SREGS", e))?;

        let regs = kvm_regs {
            rflags: 0x2,
            rip: st.rip,
            rsp: st.rsp,
            rbp: st.rsp,
            rsi: st.rsi,
            ..Default::default()
        };
        self.fd
            .set_regs(&regs)
            .map_err(|e| HypervisorError::ioctl("KVM_SET_REGS", e))?;

        let fpu = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        self.fd
            .set_fpu(&fpu)
            .map_err(|e| HypervisorError::ioctl("KVM_SET_FPU", e))?;

        let entries: Vec<kvm_msr_entry> = [
            (MSR_IA32_SYSENTER_CS, 0),
            (MSR_IA32_SYSENTER_ESP, 0),
            (MSR_IA32_SYSENTER_EIP, 0),
            (MSR_STAR, 0),
            (MSR_CSTAR, 0),
            (MSR_KERNEL_GS_BASE, 0),
            (MSR_SYSCALL_MASK, 0),
            (MSR_LSTAR, 0),
            (MSR_IA32_TSC, 0),
            (MSR_IA32_MISC_ENABLE, MSR_IA32_MISC_ENABLE_FAST_STRING),
            // MTRRs enabled, default memory type write-back.
            (MSR_MTRR_DEF_TYPE, (1 << 11) | 6),
        ]
        .into_iter()
        .map(|(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
        let msrs = Msrs::from_entries(&entries)
            .map_err(|_| HypervisorError::MissingCapability("MSR list"))?;
        let set = self
            .fd
            .set_msrs(&msrs)
            .map_err(|e| HypervisorError::ioctl("KVM_SET_MSRS", e))?;
        if set != entries.len() {
            let failed = entries.get(set).map_or(0, |e| e.index);
            return Err(HypervisorError::ioctl(
                "KVM_SET_MSRS",
                std::io::Error::other(format!("MSR {failed:#x} was refused")),
            ));
        }
        Ok(())
    }

    fn run(&mut self) -> Result<VcpuExit<'_>> {
        // Taken before `run` borrows the vCPU: the kvm_run page is mapped for as long
        // as the vCPU fd lives, so the pointer stays valid for this call.
        let run_page: *const kvm_run = self.fd.get_kvm_run();
        let internal_error = match self.fd.run() {
            Ok(KvmExit::IoIn(port, data)) => return Ok(VcpuExit::IoIn(port, data)),
            Ok(KvmExit::IoOut(port, data)) => return Ok(VcpuExit::IoOut(port, data)),
            Ok(KvmExit::MmioRead(addr, data)) => return Ok(VcpuExit::MmioRead(addr, data)),
            Ok(KvmExit::MmioWrite(addr, data)) => return Ok(VcpuExit::MmioWrite(addr, data)),
            Ok(KvmExit::Hlt) => return Ok(VcpuExit::Hlt),
            Ok(KvmExit::Shutdown) | Ok(KvmExit::SystemEvent(..)) => return Ok(VcpuExit::Shutdown),
            Ok(KvmExit::FailEntry(reason, _cpu)) => return Ok(VcpuExit::FailEntry(reason)),
            Ok(KvmExit::Intr) => return Ok(VcpuExit::Interrupted),
            Ok(KvmExit::InternalError) => true,
            Ok(other) => return Ok(VcpuExit::Other(format!("{other:?}"))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                return Ok(VcpuExit::Interrupted)
            }
            Err(e) => return Err(HypervisorError::ioctl("KVM_RUN", e)),
        };
        debug_assert!(internal_error);
        // SAFETY: `run_page` points at this vCPU's mapped kvm_run page (see above) and
        // no other reference to it is alive now that `run`'s result is consumed. The
        // exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the active field.
        let (suberror, ndata, data) = unsafe {
            let internal = &(*run_page).__bindgen_anon_1.internal;
            (internal.suberror, internal.ndata, internal.data)
        };
        if suberror == KVM_INTERNAL_ERROR_EMULATION {
            return Ok(VcpuExit::EmulationFailure {
                instruction: emulation_failure_bytes(ndata, &data),
            });
        }
        Ok(VcpuExit::Other(format!(
            "KVM internal error, suberror {suberror}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    #[test]
    fn cpuid_describes_this_vcpu_in_the_topology() {
        let mut e = vec![leaf(1, 0), leaf(0xb, 0), leaf(0xb, 1), leaf(0x8000_0008, 0)];
        e[3].ecx = 0xabcd_ef00;
        fix_cpuid(&mut e, 3, 4, false);
        assert_eq!(e[0].ebx >> 24, 3, "initial APIC ID");
        assert_eq!((e[0].ebx >> 16) & 0xff, 4, "logical processor count");
        assert_ne!(e[0].ecx & (1 << 31), 0, "hypervisor bit");
        assert_ne!(e[0].edx & (1 << 28), 0, "HTT with more than one CPU");
        assert_eq!(e[0].ecx & (1 << 24), 0, "no TSC deadline unless offered");
        assert_eq!((e[1].edx, e[2].edx), (3, 3), "x2APIC ID on every subleaf");
        assert_eq!(
            e[3].ecx, 0xabcd_ef03,
            "AMD core count minus one, other bits kept"
        );
    }

    #[test]
    fn emulation_failure_shows_the_instruction_bytes() {
        // flags = valid, length 3, bytes 0f c7 0e (cmpxchg16b [rsi]).
        let data = [
            1u64,
            u64::from_le_bytes([3, 0x0f, 0xc7, 0x0e, 0, 0, 0, 0]),
            0,
        ];
        assert_eq!(emulation_failure_bytes(3, &data), vec![0x0f, 0xc7, 0x0e]);
        assert!(emulation_failure_bytes(3, &[0, data[1], 0]).is_empty());
        assert!(emulation_failure_bytes(1, &data).is_empty());
    }

    #[test]
    fn single_cpu_has_no_htt_and_tsc_deadline_when_offered() {
        let mut e = vec![leaf(1, 0)];
        e[0].edx = 1 << 28;
        fix_cpuid(&mut e, 0, 1, true);
        assert_eq!(e[0].edx & (1 << 28), 0);
        assert_ne!(e[0].ecx & (1 << 24), 0);
    }
}
