//! Hypervisor.framework on macOS: not built yet. The backend will implement the same
//! `Vm` / `Vcpu` traits as `kvm.rs` (hv_vm_create, hv_vm_map, hv_vcpu_create/run);
//! until then opening it says so, so nothing pretends to run a guest.

use super::{HypervisorError, Result};

pub struct HvfHypervisor;

impl HvfHypervisor {
    pub fn open() -> Result<Self> {
        Err(HypervisorError::MissingCapability(
            "Hypervisor.framework support (not yet implemented in this version)",
        ))
    }
}
