//! How a VM ends: the guest's isa-debug-exit status, or a diagnostic naming why the
//! vmm-server stopped it (never a crashed server).

use core::fmt;

/// Why the vmm-server stopped a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The guest triple-faulted (an exception while delivering a double fault).
    TripleFault,
    /// The vCPU does not implement this instruction.
    UnimplementedInstruction { mnemonic: iced_x86::Mnemonic },
    /// The guest halted with no device that could ever wake it.
    Halted,
    /// The instruction budget (`--max-instructions`) ran out.
    InstructionBudget { limit: u64 },
    /// An access to guest-physical memory no slot backs (no MMIO device is there).
    UnbackedAccess { gpa: u64 },
    /// The vmm-server cannot emulate this instruction where it has to (a write to a
    /// write-protected guest page table, string I/O...).
    CannotEmulate {
        what: &'static str,
        mnemonic: iced_x86::Mnemonic,
    },
    /// The guest did something capvisor does not model (real mode...).
    Unsupported { what: &'static str },
    /// A page-table entry names host-physical memory nothing backs (an MMU bug).
    BadHostPhysical { hpa: u64 },
    /// An EPT misconfiguration (an MMU bug).
    EptMisconfiguration { gpa: u64 },
    /// The mmu-server refused a request.
    Mmu {
        request: ipc::Label,
        error: ipc::Error,
    },
    /// An exit this vmm-server does not expect with its controls.
    UnexpectedExit { reason: &'static str },
    /// The MMU kept faulting without the guest advancing by an instruction or a
    /// string element.
    NoProgress { faults: u32 },
}

/// The diagnostic of a stopped VM: what, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: StopReason,
    pub rip: u64,
    /// The instruction bytes at RIP as far as they could be read (`len` of them).
    pub bytes: [u8; 15],
    pub len: u8,
}

impl From<crate::mmu_client::MmuCallError> for StopReason {
    fn from(e: crate::mmu_client::MmuCallError) -> StopReason {
        StopReason::Mmu {
            request: e.request,
            error: e.error,
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StopReason::TripleFault => write!(f, "triple fault"),
            StopReason::UnimplementedInstruction { mnemonic } => {
                write!(f, "unimplemented instruction ({mnemonic:?})")
            }
            StopReason::Halted => write!(
                f,
                "guest halted (HLT) and no interrupt source exists to wake it"
            ),
            StopReason::InstructionBudget { limit } => {
                write!(f, "instruction budget of {limit} instructions exhausted")
            }
            StopReason::UnbackedAccess { gpa } => write!(
                f,
                "access to guest-physical address {gpa:#x}, outside guest RAM and every device"
            ),
            StopReason::CannotEmulate { what, mnemonic } => {
                write!(f, "cannot emulate {mnemonic:?}: {what}")
            }
            StopReason::Unsupported { what } => write!(f, "unsupported: {what}"),
            StopReason::BadHostPhysical { hpa } => write!(
                f,
                "MMU error: a page-table entry names host-physical address {hpa:#x} that nothing backs"
            ),
            StopReason::EptMisconfiguration { gpa } => {
                write!(f, "MMU error: EPT misconfiguration at guest-physical {gpa:#x}")
            }
            StopReason::Mmu { request, error } => {
                write!(f, "mmu-server refused {request:?}: {error}")
            }
            StopReason::UnexpectedExit { reason } => write!(f, "unexpected VM exit {reason}"),
            StopReason::NoProgress { faults } => write!(
                f,
                "no progress: {faults} MMU faults in a row without the guest advancing (is \
                 the mmu-server's frame pool too small for the guest's working set?)"
            ),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VM stopped: {} at RIP {:#x}", self.reason, self.rip)?;
        if self.len > 0 {
            write!(f, ", instruction bytes:")?;
            for b in &self.bytes[..self.len as usize] {
                write!(f, " {b:02x}")?;
            }
        } else {
            write!(f, " (instruction bytes unreadable)")?;
        }
        Ok(())
    }
}

/// How a VM ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmOutcome {
    /// The guest wrote `v` to isa-debug-exit: status `(v << 1) | 1`.
    Exited { status: u32 },
    /// The vmm-server stopped the VM.
    Failed(Failure),
}
