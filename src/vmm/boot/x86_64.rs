//! x86_64 direct boot: the 64-bit Linux boot protocol, no firmware.
//!
//! The kernel (ELF `vmlinux`, entered at its ELF entry, or `bzImage`, entered at its
//! 64-bit entry 0x200 past the protected-mode code) starts in long mode with an
//! identity map of the first GiB, a flat GDT and `rsi` pointing at the zero page
//! (Documentation/arch/x86/boot.rst, "64-bit Boot Protocol").

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory as _, GuestMemoryRegion};

use super::mptable;
use crate::vmm::hypervisor::{Segment, X86BootState};
use crate::vmm::memory::{GuestMemory, MMIO_GAP_START};

/// Guest-physical addresses of everything the VMM writes before the kernel runs.
pub mod layout {
    pub const GDT_START: u64 = 0x500;
    pub const IDT_START: u64 = 0x520;
    pub const ZERO_PAGE_START: u64 = 0x7000;
    pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
    pub const PML4_START: u64 = 0x9000;
    pub const PDPTE_START: u64 = 0xa000;
    pub const PDE_START: u64 = 0xb000;
    pub const CMDLINE_START: u64 = 0x20000;
    /// Linux's x86 COMMAND_LINE_SIZE, terminating NUL included.
    pub const CMDLINE_MAX_SIZE: usize = 2048;
    /// Start of the EBDA, where Linux looks for the MP floating pointer.
    pub const MPTABLE_START: u64 = 0x9fc00;
    /// Start of the memory above the legacy hole, where the kernel is loaded.
    pub const HIMEM_START: u64 = 0x10_0000;
    pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
    pub const LAPIC_ADDR: u64 = 0xfee0_0000;
}
use layout::*;

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x100_0000;
/// Highest address an initramfs may end at when the kernel does not say (boot.rst).
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Flat descriptors: null, 64-bit code, data, TSS (the TSS is never used).
const GDT: [u64; 4] = [
    0,
    0x00af_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x008f_8b00_0000_ffff,
];

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("kernel {0} not found — build one with scripts/build-kernel, or pass --kernel PATH")]
    KernelMissing(PathBuf),
    #[error("kernel {path} could not be read")]
    KernelRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a kernel: expected an ELF vmlinux or a bzImage")]
    NotAKernel(PathBuf),
    #[error("kernel {path} could not be loaded")]
    KernelLoad {
        path: PathBuf,
        #[source]
        source: linux_loader::loader::Error,
    },
    #[error("kernel command line is {0} bytes; the limit is {max}", max = CMDLINE_MAX_SIZE - 1)]
    CmdlineTooLong(usize),
    #[error("initramfs of {0} bytes does not fit in guest memory below the kernel's limit")]
    InitrdTooLarge(usize),
    #[error("the MP table could not be written")]
    MpTable(#[from] mptable::MpTableError),
    #[error("boot structures could not be written to guest memory")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// What to boot.
pub struct BootConfig<'a> {
    pub kernel: &'a Path,
    pub initrd: Option<&'a [u8]>,
    pub cmdline: &'a str,
    pub cpus: u8,
}

enum KernelKind {
    Elf,
    BzImage,
}

fn kernel_kind(path: &Path, file: &mut File) -> Result<KernelKind, BootError> {
    let read_err = |source| BootError::KernelRead {
        path: path.to_owned(),
        source,
    };
    let mut head = [0u8; 0x206];
    let n = read_up_to(file, &mut head).map_err(read_err)?;
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    if n >= 4 && head[0..4] == *b"\x7fELF" {
        return Ok(KernelKind::Elf);
    }
    if n >= 0x206
        && u32::from_le_bytes([head[0x202], head[0x203], head[0x204], head[0x205]])
            == KERNEL_HDR_MAGIC
    {
        return Ok(KernelKind::BzImage);
    }
    Err(BootError::NotAKernel(path.to_owned()))
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Highest guest address of RAM below the MMIO gap, plus one.
fn low_ram_end(mem: &GuestMemory) -> u64 {
    mem.iter()
        .filter(|r| r.start_addr().raw_value() < MMIO_GAP_START)
        .map(|r| r.start_addr().raw_value() + r.len())
        .max()
        .unwrap_or(0)
}

/// The e820 map Linux gets: conventional memory up to the EBDA, the EBDA and BIOS
/// area reserved, then RAM from 1 MiB up, skipping the MMIO gap.
pub fn e820_map(mem: &GuestMemory) -> Vec<boot_e820_entry> {
    let mut map = vec![
        boot_e820_entry {
            addr: 0,
            size: MPTABLE_START,
            type_: E820_RAM,
        },
        boot_e820_entry {
            addr: MPTABLE_START,
            size: HIMEM_START - MPTABLE_START,
            type_: E820_RESERVED,
        },
    ];
    for r in mem.iter() {
        let start = r.start_addr().raw_value().max(HIMEM_START);
        let end = r.start_addr().raw_value() + r.len();
        if end > start {
            map.push(boot_e820_entry {
                addr: start,
                size: end - start,
                type_: E820_RAM,
            });
        }
    }
    map
}

/// Identity-maps the first GiB with 2 MiB pages.
pub fn write_page_tables(mem: &GuestMemory) -> Result<(), BootError> {
    mem.write_obj(PDPTE_START | 0x03, GuestAddress(PML4_START))?;
    mem.write_obj(PDE_START | 0x03, GuestAddress(PDPTE_START))?;
    let pde: Vec<u8> = (0..512u64)
        .flat_map(|i| ((i << 21) | 0x83).to_le_bytes())
        .collect();
    mem.write_slice(&pde, GuestAddress(PDE_START))?;
    Ok(())
}

/// The segment a GDT descriptor describes, as loaded with selector `index * 8`.
pub fn segment_from_gdt(entry: u64, index: u8) -> Segment {
    let base = ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24);
    let limit = (entry & 0xffff) | (((entry >> 48) & 0xf) << 16);
    let g = (entry >> 55) & 1 == 1;
    Segment {
        base,
        // With 4 KiB granularity the limit counts pages; the CPU holds it in bytes.
        limit: if g {
            ((limit << 12) | 0xfff) as u32
        } else {
            limit as u32
        },
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        s: (entry >> 44) & 1 == 1,
        dpl: ((entry >> 45) & 0x3) as u8,
        present: (entry >> 47) & 1 == 1,
        l: (entry >> 53) & 1 == 1,
        db: (entry >> 54) & 1 == 1,
        g,
    }
}

fn open_kernel(path: &Path) -> Result<(File, KernelKind), BootError> {
    let mut file = File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            BootError::KernelMissing(path.to_owned())
        } else {
            BootError::KernelRead {
                path: path.to_owned(),
                source: e,
            }
        }
    })?;
    let kind = kernel_kind(path, &mut file)?;
    Ok((file, kind))
}

/// Checks that `path` is a kernel this loader can boot, before any VM is made.
pub fn check_kernel(path: &Path) -> Result<(), BootError> {
    open_kernel(path).map(|_| ())
}

/// Loads the kernel and initramfs, writes the zero page, command line, page tables,
/// GDT and MP table, and returns the state every vCPU starts in.
pub fn load(mem: &GuestMemory, cfg: &BootConfig) -> Result<X86BootState, BootError> {
    if cfg.cmdline.len() >= CMDLINE_MAX_SIZE {
        return Err(BootError::CmdlineTooLong(cfg.cmdline.len()));
    }
    let (mut file, kind) = open_kernel(cfg.kernel)?;
    let load_err = |source| BootError::KernelLoad {
        path: cfg.kernel.to_owned(),
        source,
    };
    let himem = Some(GuestAddress(HIMEM_START));
    let (entry, kernel_end, header) = match kind {
        KernelKind::Elf => {
            let mapped = super::elf_map::map_kernel(mem, &mut file).map_err(|source| {
                BootError::KernelRead {
                    path: cfg.kernel.to_owned(),
                    source,
                }
            })?;
            match mapped {
                Some((entry, end)) => (entry, end, None),
                None => {
                    let r = Elf::load(mem, None, &mut file, himem).map_err(load_err)?;
                    (r.kernel_load.raw_value(), r.kernel_end, None)
                }
            }
        }
        KernelKind::BzImage => {
            let r = BzImage::load(mem, None, &mut file, himem).map_err(load_err)?;
            (
                r.kernel_load.raw_value() + BZIMAGE_64BIT_ENTRY_OFFSET,
                r.kernel_end,
                r.setup_header,
            )
        }
    };

    let mut params = boot_params::default();
    if let Some(h) = header {
        params.hdr = h;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;

    let mut cmdline = cfg.cmdline.as_bytes().to_vec();
    cmdline.push(0);
    mem.write_slice(&cmdline, GuestAddress(CMDLINE_START))?;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cfg.cmdline.len() as u32;

    if let Some(initrd) = cfg.initrd {
        let limit = match params.hdr.initrd_addr_max {
            0 => DEFAULT_INITRD_ADDR_MAX,
            m => u64::from(m),
        };
        let top = low_ram_end(mem).min(limit + 1);
        let size = initrd.len() as u64;
        let start = top
            .checked_sub(size)
            .map(|a| a & !0xfff)
            .filter(|a| *a >= kernel_end)
            .ok_or(BootError::InitrdTooLarge(initrd.len()))?;
        mem.write_slice(initrd, GuestAddress(start))?;
        params.hdr.ramdisk_image = start as u32;
        params.hdr.ramdisk_size = size as u32;
    }

    let map = e820_map(mem);
    for (slot, e) in params.e820_table.iter_mut().zip(&map) {
        *slot = *e;
    }
    params.e820_entries = map.len() as u8;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))?;

    write_page_tables(mem)?;
    let gdt: Vec<u8> = GDT.iter().flat_map(|e| e.to_le_bytes()).collect();
    mem.write_slice(&gdt, GuestAddress(GDT_START))?;
    mem.write_obj(0u64, GuestAddress(IDT_START))?;
    mptable::write(mem, MPTABLE_START, cfg.cpus)?;

    Ok(X86BootState {
        rip: entry,
        rsp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_START,
        cr0: CR0_PE | CR0_ET | CR0_PG,
        cr3: PML4_START,
        cr4: CR4_PAE,
        efer: EFER_LME | EFER_LMA,
        gdt_base: GDT_START,
        gdt_limit: (GDT.len() * 8 - 1) as u16,
        idt_base: IDT_START,
        idt_limit: 7,
        code: segment_from_gdt(GDT[1], 1),
        data: segment_from_gdt(GDT[2], 2),
        tss: segment_from_gdt(GDT[3], 3),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::memory;

    fn mem() -> GuestMemory {
        memory::create(64 << 20).unwrap()
    }

    #[test]
    fn code_segment_is_64bit_present_and_flat() {
        let cs = segment_from_gdt(GDT[1], 1);
        assert_eq!(cs.selector, 8);
        assert!(cs.l && cs.present && cs.s && cs.g);
        assert!(!cs.db, "a 64-bit code segment must have D=0");
        assert_eq!(cs.type_, 0xb);
        assert_eq!(cs.limit, 0xffff_ffff);
        assert_eq!(cs.base, 0);
        let ds = segment_from_gdt(GDT[2], 2);
        assert_eq!(ds.selector, 16);
        assert!(ds.db && !ds.l);
        assert_eq!(ds.type_, 0x3);
    }

    #[test]
    fn page_tables_identity_map_the_first_gib_with_2mib_pages() {
        let m = mem();
        write_page_tables(&m).unwrap();
        let pml4: u64 = m.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPTE_START | 3);
        let pdpte: u64 = m.read_obj(GuestAddress(PDPTE_START)).unwrap();
        assert_eq!(pdpte, PDE_START | 3);
        for i in [0u64, 1, 255, 511] {
            let pde: u64 = m.read_obj(GuestAddress(PDE_START + i * 8)).unwrap();
            assert_eq!(pde, (i << 21) | 0x83, "entry {i}");
        }
    }

    #[test]
    fn e820_reserves_the_ebda_and_covers_all_ram_above_1mib() {
        let m = mem();
        let map = e820_map(&m);
        let m: Vec<(u64, u64, u32)> = map.iter().map(|e| (e.addr, e.size, e.type_)).collect();
        assert_eq!(m[0], (0, MPTABLE_START, E820_RAM));
        assert_eq!(
            m[1],
            (MPTABLE_START, HIMEM_START - MPTABLE_START, E820_RESERVED)
        );
        assert_eq!(m[2], (HIMEM_START, (64 << 20) - HIMEM_START, E820_RAM));
    }

    #[test]
    fn e820_skips_the_mmio_gap_for_large_guests() {
        let m = memory::create(4 << 30).unwrap();
        let map = e820_map(&m);
        let m: Vec<(u64, u64)> = map.iter().map(|e| (e.addr, e.size)).collect();
        assert_eq!(m.len(), 4);
        assert_eq!(m[2].0 + m[2].1, MMIO_GAP_START);
        assert_eq!(m[3].0, memory::MMIO_GAP_END);
    }

    fn write_file(bytes: &[u8]) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(bytes)
    }

    /// A tiny self-deleting temporary file for loader tests.
    mod tempfile_path {
        pub struct TempPath(pub std::path::PathBuf);
        impl TempPath {
            pub fn with(bytes: &[u8]) -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "a3s-boot-test-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::write(&p, bytes).unwrap();
                TempPath(p)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn missing_kernel_says_how_to_get_one() {
        let m = mem();
        let cfg = BootConfig {
            kernel: Path::new("/nonexistent/vmlinux"),
            initrd: None,
            cmdline: "console=ttyS0",
            cpus: 1,
        };
        let err = load(&m, &cfg).unwrap_err();
        assert!(matches!(err, BootError::KernelMissing(_)));
        assert!(err.to_string().contains("scripts/build-kernel"));
    }

    #[test]
    fn a_file_that_is_not_a_kernel_is_refused() {
        let m = mem();
        let f = write_file(b"#!/bin/sh\necho not a kernel\n");
        let cfg = BootConfig {
            kernel: &f.0,
            initrd: None,
            cmdline: "",
            cpus: 1,
        };
        assert!(matches!(load(&m, &cfg), Err(BootError::NotAKernel(_))));
    }

    /// A minimal ELF64 executable with one PT_LOAD segment at 16 MiB.
    fn tiny_elf() -> Vec<u8> {
        let mut f = vec![0u8; 0x1000 + 16];
        f[0..4].copy_from_slice(b"\x7fELF");
        f[4] = 2; // 64-bit
        f[5] = 1; // little endian
        f[6] = 1;
        f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86_64
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes()); // entry
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
        f[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
        f[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
        f[56..58].copy_from_slice(&1u16.to_le_bytes()); // phnum
        let ph = &mut f[64..120];
        ph[0..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        ph[8..16].copy_from_slice(&0x1000u64.to_le_bytes()); // offset
        ph[16..24].copy_from_slice(&0x100_0000u64.to_le_bytes()); // vaddr
        ph[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes()); // paddr
        ph[32..40].copy_from_slice(&16u64.to_le_bytes()); // filesz
        ph[40..48].copy_from_slice(&16u64.to_le_bytes()); // memsz
        f[0x1000..0x1010].copy_from_slice(b"KERNEL-PAYLOAD!!");
        f
    }

    #[test]
    fn elf_kernel_boots_at_its_entry_with_zero_page_cmdline_and_initrd() {
        let m = mem();
        let f = write_file(&tiny_elf());
        let initrd = vec![0xa5u8; 5000];
        let cfg = BootConfig {
            kernel: &f.0,
            initrd: Some(&initrd),
            cmdline: "console=ttyS0 quiet",
            cpus: 2,
        };
        let st = load(&m, &cfg).unwrap();
        assert_eq!(st.rip, 0x100_0000);
        assert_eq!(st.rsi, ZERO_PAGE_START);
        assert_eq!(st.cr3, PML4_START);
        assert_ne!(st.efer & EFER_LMA, 0);

        let mut payload = [0u8; 16];
        m.read_slice(&mut payload, GuestAddress(0x100_0000))
            .unwrap();
        assert_eq!(&payload, b"KERNEL-PAYLOAD!!");

        let p: boot_params = m.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ p.hdr.boot_flag }, KERNEL_BOOT_FLAG_MAGIC);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        let mut cl = vec![0u8; 20];
        m.read_slice(&mut cl, GuestAddress(CMDLINE_START)).unwrap();
        assert_eq!(&cl, b"console=ttyS0 quiet\0");

        let (start, size) = ({ p.hdr.ramdisk_image }, { p.hdr.ramdisk_size });
        assert_eq!(size, 5000);
        assert_eq!(start % 4096, 0);
        assert!(u64::from(start) + 5000 <= 64 << 20);
        let mut back = vec![0u8; 5000];
        m.read_slice(&mut back, GuestAddress(u64::from(start)))
            .unwrap();
        assert_eq!(back, initrd);
        assert_eq!(p.e820_entries, 3);

        let mut fp = [0u8; 4];
        m.read_slice(&mut fp, GuestAddress(MPTABLE_START)).unwrap();
        assert_eq!(&fp, b"_MP_");
    }

    #[test]
    fn overlong_cmdline_is_refused() {
        let m = mem();
        let f = write_file(&tiny_elf());
        let long = "x".repeat(CMDLINE_MAX_SIZE);
        let cfg = BootConfig {
            kernel: &f.0,
            initrd: None,
            cmdline: &long,
            cpus: 1,
        };
        assert!(matches!(load(&m, &cfg), Err(BootError::CmdlineTooLong(_))));
    }

    #[test]
    fn initrd_larger_than_memory_is_refused() {
        let m = mem();
        let f = write_file(&tiny_elf());
        let initrd = vec![0u8; 80 << 20];
        let cfg = BootConfig {
            kernel: &f.0,
            initrd: Some(&initrd),
            cmdline: "",
            cpus: 1,
        };
        assert!(matches!(load(&m, &cfg), Err(BootError::InitrdTooLarge(_))));
    }
}
