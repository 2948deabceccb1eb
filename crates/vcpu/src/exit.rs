//! VM exits, shaped like VT-x's: a basic exit reason (SDM Vol. 3D Appendix C), an exit
//! qualification (SDM 28.2.1), guest-linear / guest-physical addresses, the instruction
//! length, VM-exit interruption information and IDT-vectoring information (SDM 25.9.2,
//! 25.9.3). Two reasons are not architectural: an instruction this model does not
//! implement, and a host-physical address no region backs.

use iced_x86::Mnemonic;

/// The basic exit reason. Discriminants are the SDM Appendix C numbers; the
/// non-architectural reasons use numbers above 0x1000.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ExitReason {
    ExceptionOrNmi = 0,
    ExternalInterrupt = 1,
    TripleFault = 2,
    InterruptWindow = 7,
    Cpuid = 10,
    Hlt = 12,
    Invd = 13,
    Invlpg = 14,
    Rdtsc = 16,
    Vmcall = 18,
    Vmclear = 19,
    Vmlaunch = 20,
    Vmptrld = 21,
    Vmptrst = 22,
    Vmread = 23,
    Vmresume = 24,
    Vmwrite = 25,
    Vmxoff = 26,
    Vmxon = 27,
    CrAccess = 28,
    DrAccess = 29,
    IoInstruction = 30,
    Rdmsr = 31,
    Wrmsr = 32,
    InvalidGuestState = 33,
    Pause = 40,
    EptViolation = 48,
    EptMisconfig = 49,
    Invept = 50,
    Rdtscp = 51,
    PreemptionTimer = 52,
    Invvpid = 53,
    Wbinvd = 54,
    Xsetbv = 55,
    Invpcid = 58,
    Vmfunc = 59,
    /// Not architectural: the instruction at `rip` is not implemented by this model.
    /// Nothing was executed; the guest state is as before the instruction.
    Unimplemented = 0x1001,
    /// Not architectural: a page-table entry or final translation names a host-physical
    /// address no region of the `PhysMap` backs (`guest_physical` holds the hpa). The
    /// VMM built a broken table.
    BadHpa = 0x1002,
    /// Not architectural: the guest executed HLT without "HLT exiting" and there is no
    /// event to wake it; the vCPU sits in the HLT activity state.
    Halted = 0x1003,
}

impl ExitReason {
    /// The basic exit reason number as VT-x reports it (bits 15:0 of the exit reason).
    pub fn number(self) -> u32 {
        self as u32
    }
}

/// Event types of interruption-information fields (SDM 25.8.3 Table 25-17).
pub mod event_type {
    pub const EXTERNAL_INTERRUPT: u32 = 0;
    pub const NMI: u32 = 2;
    pub const HARDWARE_EXCEPTION: u32 = 3;
    pub const SOFTWARE_INTERRUPT: u32 = 4;
    pub const PRIVILEGED_SOFTWARE_EXCEPTION: u32 = 5;
    pub const SOFTWARE_EXCEPTION: u32 = 6;
}

/// Bits of the interruption-information fields.
pub mod interruption {
    pub const VECTOR_MASK: u32 = 0xff;
    pub const TYPE_SHIFT: u32 = 8;
    pub const ERROR_CODE_VALID: u32 = 1 << 11;
    pub const VALID: u32 = 1 << 31;

    /// Packs a vector, an event type and whether an error code is delivered.
    pub const fn info(vector: u8, ty: u32, has_error_code: bool) -> u32 {
        VALID
            | (vector as u32)
            | (ty << TYPE_SHIFT)
            | if has_error_code { ERROR_CODE_VALID } else { 0 }
    }
}

/// The raw bytes and iced mnemonic of an instruction the model does not implement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnimplementedInsn {
    pub bytes: [u8; 15],
    pub len: u8,
    pub mnemonic: Mnemonic,
}

/// One VM exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmExit {
    pub reason: ExitReason,
    /// Exit qualification in the format of SDM 28.2.1 for `reason` (0 where none).
    pub qualification: u64,
    /// Guest-linear address field (EPT violations with a linear address, string I/O,
    /// LMSW from memory, INVLPG-style exits).
    pub guest_linear: Option<u64>,
    /// Guest-physical address field (EPT violation / misconfiguration; the hpa for
    /// `BadHpa`).
    pub guest_physical: Option<u64>,
    /// RIP of the instruction (or the event delivery) that exited.
    pub rip: u64,
    /// VM-exit instruction length: valid for instruction-caused exits, 0 otherwise.
    pub instruction_len: u8,
    /// VM-exit instruction information (SDM 28.2.5) for INVPCID, string I/O, LGDT...
    pub instruction_info: u32,
    /// VM-exit interruption information (exception exits).
    pub interruption_info: u32,
    pub interruption_error_code: u32,
    /// IDT-vectoring information: the event whose delivery this exit interrupted.
    pub idt_vectoring_info: u32,
    pub idt_vectoring_error_code: u32,
    /// For `Unimplemented`: what was not executed.
    pub unimplemented: Option<UnimplementedInsn>,
}

impl VmExit {
    pub(crate) fn new(reason: ExitReason, rip: u64) -> VmExit {
        VmExit {
            reason,
            qualification: 0,
            guest_linear: None,
            guest_physical: None,
            rip,
            instruction_len: 0,
            instruction_info: 0,
            interruption_info: 0,
            interruption_error_code: 0,
            idt_vectoring_info: 0,
            idt_vectoring_error_code: 0,
            unimplemented: None,
        }
    }

    pub(crate) fn with_qualification(mut self, q: u64) -> VmExit {
        self.qualification = q;
        self
    }

    pub(crate) fn with_len(mut self, len: usize) -> VmExit {
        self.instruction_len = len as u8;
        self
    }
}

/// Exit-qualification encoders (SDM 28.2.1).
pub mod qualification {
    /// Control-register access types (Table 28-3 bits 5:4).
    pub const CR_MOV_TO: u64 = 0;
    pub const CR_MOV_FROM: u64 = 1;
    pub const CR_CLTS: u64 = 2;
    pub const CR_LMSW: u64 = 3;

    /// MOV to/from CRn with GPR `gpr` (Table 28-3).
    pub const fn cr_mov(cr: u8, access: u64, gpr: u8) -> u64 {
        (cr as u64 & 0xf) | (access << 4) | ((gpr as u64 & 0xf) << 8)
    }

    /// CLTS.
    pub const fn clts() -> u64 {
        CR_CLTS << 4
    }

    /// LMSW with its 16-bit source; `memory` when the operand was in memory.
    pub const fn lmsw(source: u16, memory: bool) -> u64 {
        (CR_LMSW << 4) | ((memory as u64) << 6) | ((source as u64) << 16)
    }

    /// I/O instruction (Table 28-5).
    pub const fn io(size: u8, input: bool, string: bool, rep: bool, imm: bool, port: u16) -> u64 {
        ((size as u64 - 1) & 7)
            | ((input as u64) << 3)
            | ((string as u64) << 4)
            | ((rep as u64) << 5)
            | ((imm as u64) << 6)
            | ((port as u64) << 16)
    }

    /// EPT-violation qualification bits (Table 28-7).
    pub const EPT_READ: u64 = 1 << 0;
    pub const EPT_WRITE: u64 = 1 << 1;
    pub const EPT_FETCH: u64 = 1 << 2;
    pub const EPT_LINEAR_VALID: u64 = 1 << 7;
    /// With bit 7: the access was the final translation (not a guest paging-structure
    /// access).
    pub const EPT_FINAL_TRANSLATION: u64 = 1 << 8;
    /// NMI unblocking due to IRET.
    pub const EPT_NMI_UNBLOCKING: u64 = 1 << 12;
}
