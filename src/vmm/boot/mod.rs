//! Putting a kernel, its command line and its initramfs into guest memory, and the
//! vCPU state in which it starts.

mod elf_map;
pub mod mptable;
pub mod x86_64;
