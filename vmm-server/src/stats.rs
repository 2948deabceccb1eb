//! What the vmm-server counts: exits by reason, emulated instructions, ipc calls, and
//! the snapshots taken at guest checkpoints (port 0x80).

use vcpu::exit::ExitReason;

/// The stable names of exit reasons in statistics (`exits_by_reason` keys).
pub fn reason_name(r: ExitReason) -> &'static str {
    use ExitReason::*;
    match r {
        ExceptionOrNmi => "exception_nmi",
        ExternalInterrupt => "external_interrupt",
        TripleFault => "triple_fault",
        InterruptWindow => "interrupt_window",
        Cpuid => "cpuid",
        Hlt => "hlt",
        Invlpg => "invlpg",
        Rdtsc => "rdtsc",
        Vmcall => "vmcall",
        CrAccess => "cr_access",
        DrAccess => "dr_access",
        IoInstruction => "io_instruction",
        Rdmsr => "rdmsr",
        Wrmsr => "wrmsr",
        InvalidGuestState => "invalid_guest_state",
        Pause => "pause",
        EptViolation => "ept_violation",
        EptMisconfig => "ept_misconfig",
        Rdtscp => "rdtscp",
        PreemptionTimer => "preemption_timer",
        Wbinvd => "wbinvd",
        Invd => "invd",
        Xsetbv => "xsetbv",
        Invpcid => "invpcid",
        Unimplemented => "unimplemented",
        BadHpa => "bad_hpa",
        Halted => "halted",
        // VMX instructions (VMCLEAR ... VMFUNC, INVEPT, INVVPID): no nested VMX.
        #[allow(unreachable_patterns)]
        r if crate::exits::is_vmx_instruction(r) => "vmx_instruction",
        #[allow(unreachable_patterns)]
        _ => "other",
    }
}

/// Most distinct exit reasons one VM records.
pub const MAX_REASONS: usize = 32;

/// Exit counters.
#[derive(Clone, Debug, Default)]
pub struct ExitCounts {
    by_reason: heapless::Vec<(&'static str, u64), MAX_REASONS>,
    total: u64,
}

impl ExitCounts {
    pub fn record(&mut self, r: ExitReason) {
        self.total += 1;
        let name = reason_name(r);
        if let Some(slot) = self.by_reason.iter_mut().find(|(n, _)| *n == name) {
            slot.1 += 1;
        } else {
            // MAX_REASONS exceeds the number of reasons, so this cannot fail.
            let _ = self.by_reason.push((name, 1));
        }
    }
    pub fn total(&self) -> u64 {
        self.total
    }
    pub fn get(&self, name: &str) -> u64 {
        self.by_reason
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, c)| *c)
    }
    /// `(reason, count)` pairs, in first-seen order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.by_reason.iter().copied()
    }
}

/// A snapshot of the VM's counters.
#[derive(Clone, Debug, Default)]
pub struct VmStats {
    /// Guest instructions retired by the vCPU plus those the vmm-server emulated.
    pub instructions: u64,
    pub exits: ExitCounts,
    pub ipc_calls: u64,
    /// The mmu-server's counters for this VM (`ipc::STAT_NAMES`).
    pub mmu: ipc::Stats,
}

/// The state at one guest checkpoint (`out 0x80, eax` with the step number).
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub step: u32,
    pub stats: VmStats,
    /// How the MMU maps each address of [`crate::VmConfig::watch`], asked just before
    /// `stats` was read (so a recovery tick between the two shows in
    /// `stats.mmu.nx_recovered`).
    pub mappings: heapless::Vec<WatchedMapping, { crate::config::MAX_WATCHED }>,
}

/// One watched address and its mapping at a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchedMapping {
    pub addr: u64,
    pub mapping: ipc::Mapping,
}

/// Most checkpoints one VM records (later ones are counted but not kept).
pub const MAX_CHECKPOINTS: usize = 64;
