//! Hand-assembled guests on this machine's own KVM. They need no kernel, so they run
//! even where /dev/kvm cannot boot Linux; where there is no /dev/kvm they skip.

use a3s_box::proto::EXIT_STATUS_PORT;
use a3s_box::vmm::boot::x86_64::{segment_from_gdt, write_page_tables};
use a3s_box::vmm::hypervisor::{
    PlatformHypervisor, PlatformVcpu, Segment, Vcpu, VcpuExit, Vm, X86BootState,
};
use a3s_box::vmm::memory::{self, GuestMemory};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory as _, GuestMemoryRegion};

const CODE: u64 = 0x1000;

/// The VM and its memory, or None (with a message) when this machine has no KVM.
fn machine() -> Option<(PlatformHypervisor, GuestMemory)> {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("skipped: no /dev/kvm on this machine");
        return None;
    }
    let hv = PlatformHypervisor::open().expect("open /dev/kvm");
    Some((hv, memory::create(16 << 20).unwrap()))
}

fn vcpu_with(
    hv: &PlatformHypervisor,
    mem: &GuestMemory,
    code: &[u8],
    at: u64,
    state: X86BootState,
) -> (PlatformVcpu, impl Sized) {
    let vm = hv.create_vm_bare().unwrap();
    mem.write_slice(code, GuestAddress(at)).unwrap();
    for (slot, r) in mem.iter().enumerate() {
        // SAFETY: `mem` outlives the VM in every test (the VM is returned alongside
        // the vCPU and dropped with it, before `mem`).
        unsafe {
            vm.add_memory(
                slot as u32,
                r.start_addr().raw_value(),
                r.len(),
                r.as_ptr() as u64,
            )
            .unwrap();
        }
    }
    let vcpu = vm.create_vcpu(0, 1).unwrap();
    vcpu.set_boot_state(&state).unwrap();
    (vcpu, vm)
}

fn real_mode_at(ip: u64) -> X86BootState {
    let seg = |type_| Segment {
        base: 0,
        limit: 0xffff,
        selector: 0,
        type_,
        present: true,
        s: true,
        ..Default::default()
    };
    X86BootState {
        rip: ip,
        rsp: 0x8000,
        cr0: 0x10,
        gdt_limit: 0xffff,
        idt_limit: 0x3ff,
        code: seg(0xb),
        data: seg(0x3),
        tss: Segment {
            limit: 0xffff,
            type_: 0xb,
            present: true,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Runs until `hlt`, collecting everything written to I/O ports.
fn run_to_halt(vcpu: &mut PlatformVcpu) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    for _ in 0..1000 {
        match vcpu.run().unwrap() {
            VcpuExit::IoOut(port, data) => out.push((port, data.to_vec())),
            VcpuExit::Hlt => return out,
            other => panic!("unexpected exit {other:?}"),
        }
    }
    panic!("guest did not halt");
}

fn serial_text(out: &[(u16, Vec<u8>)]) -> String {
    out.iter()
        .filter(|(p, _)| *p == 0x3f8)
        .flat_map(|(_, d)| d.iter().map(|b| *b as char))
        .collect()
}

#[test]
fn real_mode_guest_writes_to_the_uart_and_halts() {
    let Some((hv, mem)) = machine() else { return };
    let code = [
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'H', 0xee, // mov al, 'H'; out dx, al
        0xb0, b'i', 0xee, // mov al, 'i'; out dx, al
        0xb0, b'\n', 0xee, // mov al, '\n'; out dx, al
        0xf4, // hlt
    ];
    let (mut vcpu, _vm) = vcpu_with(&hv, &mem, &code, CODE, real_mode_at(CODE));
    assert_eq!(serial_text(&run_to_halt(&mut vcpu)), "Hi\n");
}

#[test]
fn guest_reports_an_exit_status_on_the_status_port() {
    let Some((hv, mem)) = machine() else { return };
    let [lo, hi] = EXIT_STATUS_PORT.to_le_bytes();
    let code = [
        0xba, lo, hi, // mov dx, EXIT_STATUS_PORT
        0x66, 0xb8, 7, 0, 0, 0, // mov eax, 7
        0x66, 0xef, // out dx, eax
        0xf4, // hlt
    ];
    let (mut vcpu, _vm) = vcpu_with(&hv, &mem, &code, CODE, real_mode_at(CODE));
    let out = run_to_halt(&mut vcpu);
    assert_eq!(out, vec![(EXIT_STATUS_PORT, vec![7, 0, 0, 0])]);
}

#[test]
fn long_mode_guest_uses_64bit_registers() {
    let Some((hv, mem)) = machine() else { return };
    write_page_tables(&mem).unwrap();
    // The same flat GDT the kernel boot uses.
    let gdt: [u64; 4] = [
        0,
        0x00af_9b00_0000_ffff,
        0x00cf_9300_0000_ffff,
        0x008f_8b00_0000_ffff,
    ];
    let bytes: Vec<u8> = gdt.iter().flat_map(|e| e.to_le_bytes()).collect();
    mem.write_slice(&bytes, GuestAddress(0x500)).unwrap();
    let code = [
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0x48, 0xb8, 0, 0, 0, 0, 5, 0, 0, 0, // mov rax, 0x5_0000_0000
        0x48, 0xc1, 0xe8, 0x20, // shr rax, 32
        0x04, b'0', // add al, '0'
        0xee, // out dx, al
        0xb0, b'\n', 0xee, // mov al, '\n'; out dx, al
        0xf4, // hlt
    ];
    let state = X86BootState {
        rip: 0x10_0000,
        rsp: 0x8ff0,
        cr0: 0x8000_0011,
        cr3: 0x9000,
        cr4: 0x20,
        efer: 0x500,
        gdt_base: 0x500,
        gdt_limit: 31,
        idt_base: 0x520,
        idt_limit: 7,
        code: segment_from_gdt(gdt[1], 1),
        data: segment_from_gdt(gdt[2], 2),
        tss: segment_from_gdt(gdt[3], 3),
        ..Default::default()
    };
    let (mut vcpu, _vm) = vcpu_with(&hv, &mem, &code, 0x10_0000, state);
    assert_eq!(serial_text(&run_to_halt(&mut vcpu)), "5\n");
}
