//! The hand-written VMM: one process per box, owning its VM.

pub mod boot;
pub mod devices;
pub mod hypervisor;
pub mod memory;
pub mod vm;
