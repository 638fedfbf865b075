//! Intel MultiProcessor Specification 1.4 table: how a kernel booted without ACPI
//! learns the CPUs, the IOAPIC and how ISA interrupts are wired.

use vm_memory::{Bytes, GuestAddress};

use super::x86_64::layout::{IOAPIC_ADDR, LAPIC_ADDR};
use crate::vmm::memory::GuestMemory;

/// Interrupt pins of the IOAPIC (KVM's in-kernel IOAPIC has 24).
pub const IOAPIC_PINS: u8 = 24;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const SPEC_REV_1_4: u8 = 4;
const ISA_BUS: u8 = 0;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;

/// The most CPUs the table describes: APIC IDs are 8 bits, the IOAPIC takes
/// the ID after the last CPU's, and 255 is the broadcast ID.
pub const MAX_CPUS: u8 = 254;

#[derive(Debug, thiserror::Error)]
pub enum MpTableError {
    #[error("{0} vCPUs do not fit in the MP table (at most {MAX_CPUS})")]
    TooManyCpus(u8),
    #[error("the MP table does not fit in guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, b| acc.wrapping_add(*b))
        .wrapping_neg()
}

/// Builds the floating pointer structure followed by the configuration table, for a
/// table placed at guest address `at`.
pub fn build(at: u64, cpus: u8) -> Result<Vec<u8>, MpTableError> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(MpTableError::TooManyCpus(cpus));
    }
    let ioapic_id = cpus; // the first APIC ID after the CPUs'
    let mut entries: Vec<[u8; 20]> = Vec::new();
    let mut small: Vec<[u8; 8]> = Vec::new();
    for id in 0..cpus {
        let mut e = [0u8; 20];
        e[0] = ENTRY_PROCESSOR;
        e[1] = id;
        e[2] = APIC_VERSION;
        e[3] = CPU_ENABLED | if id == 0 { CPU_BOOTSTRAP } else { 0 };
        // CPU signature (family 6) and feature flags (FPU + APIC), informational only.
        e[4..8].copy_from_slice(&0x600u32.to_le_bytes());
        e[8..12].copy_from_slice(&0x201u32.to_le_bytes());
        entries.push(e);
    }
    small.push([ENTRY_BUS, ISA_BUS, b'I', b'S', b'A', b' ', b' ', b' ']);
    let mut ioapic = [ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1, 0, 0, 0, 0];
    ioapic[4..8].copy_from_slice(&(IOAPIC_ADDR as u32).to_le_bytes());
    small.push(ioapic);
    for pin in 0..IOAPIC_PINS {
        // ISA IRQ n arrives on IOAPIC pin n, with the bus's default polarity and trigger.
        small.push([
            ENTRY_IO_INTERRUPT,
            INT_TYPE_INT,
            0,
            0,
            ISA_BUS,
            pin,
            ioapic_id,
            pin,
        ]);
    }
    // The 8259 PIC on every CPU's LINT0, NMI on LINT1 (0xff: all local APICs).
    small.push([
        ENTRY_LOCAL_INTERRUPT,
        INT_TYPE_EXTINT,
        0,
        0,
        ISA_BUS,
        0,
        0xff,
        0,
    ]);
    small.push([
        ENTRY_LOCAL_INTERRUPT,
        INT_TYPE_NMI,
        0,
        0,
        ISA_BUS,
        0,
        0xff,
        1,
    ]);

    let header_len = 44usize;
    let table_len = header_len + entries.len() * 20 + small.len() * 8;
    let mut table = vec![0u8; header_len];
    table[0..4].copy_from_slice(b"PCMP");
    table[4..6].copy_from_slice(&(table_len as u16).to_le_bytes());
    table[6] = SPEC_REV_1_4;
    table[8..16].copy_from_slice(b"A3S BOX ");
    table[16..28].copy_from_slice(b"MICROVM     ");
    let count = (entries.len() + small.len()) as u16;
    table[34..36].copy_from_slice(&count.to_le_bytes());
    table[36..40].copy_from_slice(&(LAPIC_ADDR as u32).to_le_bytes());
    for e in &entries {
        table.extend_from_slice(e);
    }
    for e in &small {
        table.extend_from_slice(e);
    }
    table[7] = checksum(&table);

    let mut fp = [0u8; 16];
    fp[0..4].copy_from_slice(b"_MP_");
    fp[4..8].copy_from_slice(&((at + 16) as u32).to_le_bytes());
    fp[8] = 1; // length in 16-byte paragraphs
    fp[9] = SPEC_REV_1_4;
    fp[10] = checksum(&fp);

    let mut out = fp.to_vec();
    out.extend_from_slice(&table);
    Ok(out)
}

/// Writes the MP table for `cpus` vCPUs at guest address `at`.
pub fn write(mem: &GuestMemory, at: u64, cpus: u8) -> Result<usize, MpTableError> {
    let bytes = build(at, cpus)?;
    mem.write_slice(&bytes, GuestAddress(at))
        .map_err(MpTableError::Write)?;
    Ok(bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    #[test]
    fn floating_pointer_and_table_checksum_to_zero() {
        let t = build(0x9fc00, 4).unwrap();
        assert_eq!(&t[0..4], b"_MP_");
        assert_eq!(sum(&t[0..16]), 0);
        let len = u16::from_le_bytes([t[20], t[21]]) as usize;
        assert_eq!(&t[16..20], b"PCMP");
        assert_eq!(t.len(), 16 + len);
        assert_eq!(sum(&t[16..]), 0);
        assert_eq!(u32::from_le_bytes(t[4..8].try_into().unwrap()), 0x9fc10);
    }

    #[test]
    fn one_processor_entry_per_cpu_and_only_cpu0_is_bootstrap() {
        let t = build(0x9fc00, 3).unwrap();
        let procs: Vec<&[u8]> = (0..3).map(|i| &t[60 + i * 20..80 + i * 20]).collect();
        for (i, p) in procs.iter().enumerate() {
            assert_eq!(p[0], ENTRY_PROCESSOR);
            assert_eq!(p[1], i as u8, "APIC ID");
            assert_eq!(p[3] & CPU_ENABLED, CPU_ENABLED);
            assert_eq!(p[3] & CPU_BOOTSTRAP != 0, i == 0);
        }
        let count = u16::from_le_bytes([t[16 + 34], t[16 + 35]]) as usize;
        // 3 CPUs, bus, IOAPIC, 24 IO interrupts, 2 local interrupts.
        assert_eq!(count, 3 + 1 + 1 + 24 + 2);
        // The IOAPIC entry follows the bus entry and takes the next APIC ID.
        let ioapic = &t[60 + 60 + 8..60 + 60 + 16];
        assert_eq!(ioapic[0], ENTRY_IOAPIC);
        assert_eq!(ioapic[1], 3);
    }

    #[test]
    fn cpu_count_out_of_range_is_refused() {
        assert!(build(0, 0).is_err());
        assert!(build(0, 255).is_err());
    }
}
