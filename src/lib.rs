//! A3S Box: every workload in its own MicroVM with its own kernel.
//!
//! One static binary, four personalities chosen by `argv[0]`: the CLI, the per-box
//! VMM (`shim`), the CRI server and the guest's PID 1. See ARCHITECTURE.md.

pub mod boxfs;
pub mod cli;
pub mod guest;
pub mod initramfs;
pub mod net;
pub mod oci;
pub mod paths;
pub mod proto;
pub mod runtime;
#[cfg(test)]
pub(crate) mod testing;
pub mod vmm;
pub mod volume;
