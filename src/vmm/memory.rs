//! Guest RAM: anonymous private mappings, split around the 32-bit MMIO gap.

use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Start of the hole below 4 GiB where devices (virtio-mmio, IOAPIC, LAPIC) live.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// First address above the hole.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;

pub type GuestMemory = GuestMemoryMmap<()>;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("guest memory of {0} bytes is too small (at least {min} MiB is needed)", min = MIN_SIZE >> 20)]
    TooSmall(u64),
    #[error("guest memory could not be mapped")]
    Map(#[source] vm_memory::mmap::FromRangesError),
}

/// The guest-physical ranges that hold `size` bytes of RAM.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, usize)> {
    if size <= MMIO_GAP_START {
        vec![(GuestAddress(0), size as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START as usize),
            (GuestAddress(MMIO_GAP_END), (size - MMIO_GAP_START) as usize),
        ]
    }
}

/// The least guest RAM a box boots with: the kernel and init need about this.
pub const MIN_SIZE: u64 = 16 << 20;

/// Refuses a RAM size no box can boot with.
pub fn check_size(size: u64) -> Result<(), MemoryError> {
    if size < MIN_SIZE {
        return Err(MemoryError::TooSmall(size));
    }
    Ok(())
}

/// Maps `size` bytes of guest RAM. Pages are touched only when the guest uses them.
pub fn create(size: u64) -> Result<GuestMemory, MemoryError> {
    check_size(size)?;
    GuestMemoryMmap::from_ranges(&ram_ranges(size)).map_err(MemoryError::Map)
}

/// Parses a size as Docker writes it: `512m`, `1g`, `134217728`, `64k`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_range_from_zero() {
        assert_eq!(ram_ranges(128 << 20), vec![(GuestAddress(0), 128 << 20)]);
    }

    #[test]
    fn large_guest_is_split_around_the_mmio_gap() {
        let r = ram_ranges(4 << 30);
        assert_eq!(r[0], (GuestAddress(0), MMIO_GAP_START as usize));
        assert_eq!(r[1].0, GuestAddress(MMIO_GAP_END));
        assert_eq!(r[0].1 + r[1].1, 4 << 30);
    }

    #[test]
    fn sizes_parse_like_docker() {
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("12x"), None);
        assert_eq!(parse_size("m"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn tiny_guest_is_refused() {
        assert!(matches!(create(1 << 20), Err(MemoryError::TooSmall(_))));
    }
}
