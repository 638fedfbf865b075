//! The host↔guest contract, shared by the VMM (host side) and the guest init.
//!
//! Both sides compile this one module, so the two ends can never drift apart.
//! Today the contract is three things:
//!
//! - **Workload argv** travels on the kernel command line after a standalone
//!   `--` token ([`encode_argv`], [`append_argv`] on the host; [`decode_argv`]
//!   in the guest, which reads `/proc/cmdline`).
//! - **Readiness**: the guest prints [`READY_LINE`] on its console just before
//!   it starts the workload.
//! - **Exit status**: the guest writes the main process's exit code to the I/O
//!   port [`EXIT_STATUS_PORT`]; the VMM ends the VM on that write.
//!
//! Later this grows into the vsock framing (control, exec, PTY, attestation).

mod cmdline;

pub use cmdline::{append_argv, decode_argv, encode_argv, MAX_ARGS, MAX_CMDLINE};

/// x86 I/O port through which the guest reports the workload's exit status.
///
/// Guest PID 1 does one 32-bit `out` (`outl`) of the status to this port; the
/// VMM treats that write as "the box has finished" and ends the VM.
/// 0xf4 is free on PC hardware and is QEMU's `isa-debug-exit` default, so the same
/// guest also ends a QEMU run that has that device (and is ignored by one that has
/// not); it stays clear of QEMU's fw_cfg ports 0x510-0x51b.
///
/// Encoding of the 32-bit value, as a shell reports it:
/// - `0..=255`: the main process exited with that code;
/// - `128 + signo`: the main process was killed by signal `signo`
///   (SIGKILL → 137, SIGTERM → 143);
/// - `125`, `126`, `127`: Docker's codes for "the runtime itself failed",
///   "the command cannot be invoked" and "the command was not found".
///
/// Values above 255 are never written; see [`decode_exit_status`].
pub const EXIT_STATUS_PORT: u16 = 0x00f4;

/// Line the guest init prints on its console when it is about to start the
/// workload (the host can time the boot by it).
pub const READY_LINE: &str = "a3s-box: guest ready";

/// Host side of [`EXIT_STATUS_PORT`]: the exit code carried by a value the
/// guest wrote, or `None` for a value outside the encoding (a buggy or hostile
/// guest), which the host should report as its own failure.
pub fn decode_exit_status(value: u32) -> Option<u8> {
    u8::try_from(value).ok()
}

/// Why a workload cannot be carried to the guest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// An argument holds a character the kernel command line cannot carry.
    #[error(
        "argument {index} of the command contains {what}, which cannot be passed on the \
         kernel command line — put it in a script or an environment variable instead"
    )]
    UnencodableArg {
        /// Position of the argument in argv (0 is the program).
        index: usize,
        /// The offending character, described for people.
        what: &'static str,
    },
    /// The command line would not fit in the kernel's buffer.
    #[error(
        "the kernel command line would be {len} bytes, more than the kernel's limit of {max} \
         — shorten the command or move its arguments into a script"
    )]
    CmdlineTooLong {
        /// Length the command line would have, in bytes.
        len: usize,
        /// The most the kernel accepts, in bytes.
        max: usize,
    },
    /// More arguments than the kernel hands to init; one more panics the guest.
    #[error(
        "the command has {count} arguments, more than the {max} the guest kernel can pass \
         — move the arguments into a script"
    )]
    TooManyArgs {
        /// Number of arguments in argv (program included).
        count: usize,
        /// The most that is accepted.
        max: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_accepts_shell_codes_and_rejects_the_rest() {
        assert_eq!(decode_exit_status(0), Some(0));
        assert_eq!(decode_exit_status(137), Some(137));
        assert_eq!(decode_exit_status(255), Some(255));
        assert_eq!(decode_exit_status(256), None);
        assert_eq!(decode_exit_status(u32::MAX), None);
    }

    #[test]
    fn errors_say_what_to_do() {
        let e = ProtoError::UnencodableArg {
            index: 2,
            what: "a double quote",
        };
        assert!(e.to_string().contains("argument 2"));
        assert!(e.to_string().contains("script"));
    }
}
