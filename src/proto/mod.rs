//! The host↔guest contract, shared by the VMM (host side) and the guest init.
//!
//! Both sides compile this one module, so the two ends can never drift apart.
//! The contract is:
//!
//! - **Kernel command line** (`cmdline.rs`): the workload's argv after a
//!   standalone `--` ([`encode_argv`], [`append_argv`] on the host;
//!   [`decode_argv`] in the guest, which reads `/proc/cmdline`), and the root
//!   filesystem before it ([`RootSource::param`] / [`decode_root`]:
//!   `a3s.root=virtiofs:<tag>` or `a3s.root=overlay:<lower>,<upper>`).
//! - **Readiness**: the guest prints [`READY_LINE`] on its console once it is
//!   ready to start workloads.
//! - **Exit status**: the guest writes the main process's exit code to the I/O
//!   port [`EXIT_STATUS_PORT`]; the VMM ends the VM on that write.
//! - **vsock framing** (`frame.rs`): the binary, length-prefixed, versioned
//!   messages on the control, exec and PTY ports, with [`exec_client`] as a
//!   ready host side for one process session.

#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod client;
mod cmdline;
mod frame;
mod stream;

pub use client::{exec_client, ExecOutcome, OutputStream};
pub use cmdline::{
    append_argv, decode_argv, decode_root, encode_argv, RootSource, MAX_ARGS, MAX_CMDLINE,
    MAX_FS_TAG, ROOT_PARAM,
};
pub use frame::{
    client_handshake, decode_frame, expect_hello, hello_then, our_hello, read_frame, read_message,
    seal_output_frame, server_handshake, write_frame, write_message, BoxSetup, BoxStats,
    ExecRequest, FrameError, GuestMount, GuestMountKind, MainStatus, Message, NetSetup,
    ProcessInfo, SecuritySetup, DATA_HEADER_LEN, DEFAULT_CAPS, LINGER_SECS, MAX_DATA, MAX_FRAME,
    PORT_CONTROL, PORT_EXEC, PORT_PTY, VERSION_MAJOR, VERSION_MINOR,
};

pub use frame::PathInfo;
pub use stream::{DataReader, DataWriter};

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

/// Line the guest init prints on its console when it is ready: about to
/// start the workload named on the command line, or (with a root
/// filesystem) listening on its vsock ports.
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
    /// The root filesystem parameter names no usable source.
    #[error(
        "`a3s.root={value}` is not a root filesystem the guest knows — expected \
         `virtiofs:<tag>` or `overlay:<lower>,<upper>`, tags of 1 to 36 printable characters \
         without `,`, the two layers' different"
    )]
    BadRoot {
        /// The parameter's value.
        value: String,
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
