//! Zero-copy loading of an ELF `vmlinux`: each PT_LOAD segment is mapped privately
//! from the file over guest RAM instead of being read into it. Only the pages the
//! guest touches are ever brought in, and none is copied; a page the guest writes is
//! copied then (copy-on-write). On hosts that are themselves virtual, copying ten
//! megabytes of kernel is a large part of the time to boot.
//!
//! Segments whose file offset and guest address are not page-congruent fall back to
//! being read (the caller uses linux-loader for such images).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;

use vm_memory::{Address, GuestAddress, GuestMemory as _, GuestMemoryRegion};

use crate::vmm::memory::GuestMemory;

const PAGE: u64 = 4096;
const PT_LOAD: u32 = 1;
const EM_X86_64: u16 = 62;

#[derive(Debug, PartialEq, Eq)]
struct Segment {
    offset: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

/// The entry point and PT_LOAD segments of a little-endian ELF64 x86_64 image, or
/// None if it is not one this loader maps (the caller then reads it instead).
fn segments(file: &mut File) -> std::io::Result<Option<(u64, Vec<Segment>)>> {
    let mut eh = [0u8; 64];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut eh)?;
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    if eh[0..4] != *b"\x7fELF" || eh[4] != 2 || eh[5] != 1 || u16_at(&eh, 18) != EM_X86_64 {
        return Ok(None);
    }
    let entry = u64_at(&eh, 24);
    let phoff = u64_at(&eh, 32);
    let phentsize = u16_at(&eh, 54) as usize;
    let phnum = u16_at(&eh, 56) as usize;
    if phentsize < 56 || phnum == 0 || phnum > 64 {
        return Ok(None);
    }
    let mut ph = vec![0u8; phentsize * phnum];
    file.seek(SeekFrom::Start(phoff))?;
    file.read_exact(&mut ph)?;
    let mut segs = Vec::new();
    for p in ph.chunks_exact(phentsize) {
        if u32_at(p, 0) != PT_LOAD {
            continue;
        }
        let s = Segment {
            offset: u64_at(p, 8),
            paddr: u64_at(p, 24),
            filesz: u64_at(p, 32),
            memsz: u64_at(p, 40),
        };
        if s.offset % PAGE != s.paddr % PAGE || s.filesz > s.memsz {
            return Ok(None);
        }
        segs.push(s);
    }
    // Each segment must own its pages: mapping or zeroing one must not touch another.
    segs.sort_by_key(|s| s.paddr);
    for w in segs.windows(2) {
        let end_page = (w[0].paddr + w[0].memsz).div_ceil(PAGE);
        if end_page > w[1].paddr / PAGE {
            return Ok(None);
        }
    }
    Ok(Some((entry, segs)))
}

/// Host address of guest range `[gpa, gpa + len)`, if it lies in one region.
fn host_range(mem: &GuestMemory, gpa: u64, len: u64) -> Option<*mut u8> {
    let region = mem.find_region(GuestAddress(gpa))?;
    let off = gpa - region.start_addr().raw_value();
    if off.checked_add(len)? > region.len() {
        return None;
    }
    // SAFETY: `off` is within the region's mapping (checked above).
    Some(unsafe { region.as_ptr().add(off as usize) })
}

/// Zeroes `[base+from, base+to)` of anonymous guest RAM: whole pages are dropped
/// (they read back as zero without being touched), partial ones are written.
fn zero(base: *mut u8, from: u64, to: u64) -> std::io::Result<()> {
    let first_whole = from.div_ceil(PAGE) * PAGE;
    let last_whole = to / PAGE * PAGE;
    if last_whole > first_whole {
        // SAFETY: the whole pages lie inside one private anonymous mapping of guest
        // RAM (the caller checked the range); MADV_DONTNEED on such pages only makes
        // them read as zero again.
        let r = unsafe {
            libc::madvise(
                base.add(first_whole as usize).cast(),
                (last_whole - first_whole) as usize,
                libc::MADV_DONTNEED,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both partial ranges lie inside the same checked range.
        unsafe {
            std::ptr::write_bytes(base.add(from as usize), 0, (first_whole - from) as usize);
            std::ptr::write_bytes(base.add(last_whole as usize), 0, (to - last_whole) as usize);
        }
    } else {
        // SAFETY: the range lies inside guest RAM (checked by the caller).
        unsafe { std::ptr::write_bytes(base.add(from as usize), 0, (to - from) as usize) };
    }
    Ok(())
}

/// Maps the kernel's segments over guest RAM. Returns the entry point and the end of
/// the highest segment, or None when the image must be read instead.
pub fn map_kernel(mem: &GuestMemory, file: &mut File) -> std::io::Result<Option<(u64, u64)>> {
    let Some((entry, segs)) = segments(file)? else {
        return Ok(None);
    };
    // Check every segment fits before changing any mapping.
    for s in &segs {
        if host_range(mem, s.paddr & !(PAGE - 1), s.memsz + s.paddr % PAGE).is_none() {
            return Ok(None);
        }
    }
    let mut end = 0;
    for s in &segs {
        let page_off = s.paddr % PAGE;
        let map_len = (s.filesz + page_off).div_ceil(PAGE) * PAGE;
        let gpa = s.paddr - page_off;
        let host = host_range(mem, gpa, map_len).ok_or(std::io::ErrorKind::InvalidInput)?;
        if s.filesz > 0 {
            // SAFETY: `host..host+map_len` lies inside guest RAM mapped by `mem` (checked
            // above), so MAP_FIXED replaces only pages of that mapping, which nothing
            // else references yet; the new private mapping keeps the same protection
            // and stays valid for as long as the file mapping exists (the VM's life).
            let p = unsafe {
                libc::mmap(
                    host.cast(),
                    map_len as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_FIXED,
                    file.as_raw_fd(),
                    (s.offset - page_off) as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
        }
        // Past the file contents everything up to memsz must read as zero (ELF's
        // rule for bss), and so must the rest of the last mapped page.
        let tail_start = page_off + s.filesz;
        if s.filesz > 0 && map_len > tail_start {
            // SAFETY: the range is inside the private mapping just made.
            unsafe {
                std::ptr::write_bytes(
                    host.add(tail_start as usize),
                    0,
                    (map_len - tail_start) as usize,
                )
            };
        }
        let bss_start = if s.filesz > 0 { map_len } else { page_off };
        let bss_end = page_off + s.memsz;
        if bss_end > bss_start {
            zero(
                host_range(mem, gpa, bss_end).ok_or(std::io::ErrorKind::InvalidInput)?,
                bss_start,
                bss_end,
            )?;
        }
        end = end.max(s.paddr + s.memsz);
    }
    Ok(Some((entry, end)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    fn elf_with(offset: u64, paddr: u64, data: &[u8], memsz: u64) -> Vec<u8> {
        let mut f = vec![0u8; offset as usize + data.len()];
        f[0..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        f[24..32].copy_from_slice(&paddr.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = &mut f[64..120];
        ph[0..4].copy_from_slice(&PT_LOAD.to_le_bytes());
        ph[8..16].copy_from_slice(&offset.to_le_bytes());
        ph[24..32].copy_from_slice(&paddr.to_le_bytes());
        ph[32..40].copy_from_slice(&(data.len() as u64).to_le_bytes());
        ph[40..48].copy_from_slice(&memsz.to_le_bytes());
        f[offset as usize..].copy_from_slice(data);
        f
    }

    fn file_of(bytes: &[u8]) -> File {
        let path =
            std::env::temp_dir().join(format!("a3s-elfmap-{}-{}", std::process::id(), bytes.len()));
        std::fs::write(&path, bytes).unwrap();
        let f = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    #[test]
    fn segment_is_visible_in_guest_memory_and_bss_is_zero() {
        let mem = crate::vmm::memory::create(32 << 20).unwrap();
        // Dirty guest memory where bss will be, to see that it is cleared.
        mem.write_slice(&[0xffu8; 8192], GuestAddress(0x100_0000 + 4096))
            .unwrap();
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mut f = file_of(&elf_with(0x1000, 0x100_0000, &data, 12000));
        let (entry, end) = map_kernel(&mem, &mut f).unwrap().unwrap();
        assert_eq!(entry, 0x100_0000);
        assert_eq!(end, 0x100_0000 + 12000);
        let mut back = vec![0u8; 5000];
        mem.read_slice(&mut back, GuestAddress(0x100_0000)).unwrap();
        assert_eq!(back, data);
        let mut bss = vec![1u8; 12000 - 5000];
        mem.read_slice(&mut bss, GuestAddress(0x100_0000 + 5000))
            .unwrap();
        assert!(bss.iter().all(|b| *b == 0), "bss must read as zero");
    }

    #[test]
    fn writes_to_the_guest_copy_do_not_reach_the_file() {
        let mem = crate::vmm::memory::create(32 << 20).unwrap();
        let bytes = elf_with(0x1000, 0x100_0000, b"original", 8);
        let path = std::env::temp_dir().join(format!("a3s-elfmap-cow-{}", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let mut f = File::open(&path).unwrap();
        map_kernel(&mem, &mut f).unwrap().unwrap();
        mem.write_slice(b"CHANGED!", GuestAddress(0x100_0000))
            .unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(&on_disk[0x1000..0x1008], b"original");
    }

    #[test]
    fn misaligned_segment_is_left_to_the_reading_loader() {
        let mem = crate::vmm::memory::create(32 << 20).unwrap();
        let mut f = file_of(&elf_with(0x1008, 0x100_0000, b"x", 1));
        assert!(map_kernel(&mem, &mut f).unwrap().is_none());
    }

    #[test]
    fn segment_beyond_guest_memory_is_left_to_the_reading_loader() {
        let mem = crate::vmm::memory::create(16 << 20).unwrap();
        let mut f = file_of(&elf_with(0x1000, 0x2000_0000, b"x", 1));
        assert!(map_kernel(&mem, &mut f).unwrap().is_none());
    }
}
