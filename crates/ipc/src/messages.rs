//! Every message between vmm-server and mmu-server.
//!
//! Each struct is `#[repr(C)]` with explicit reserved fields so that it has no padding
//! (zerocopy checks that). Reserved fields must be zero: `validate` rejects anything
//! else so that they can be given a meaning later without ambiguity.

use crate::wire::{read_exact, split_header, Label, Request};
use crate::Error;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

macro_rules! wire_struct {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
        #[repr(C)]
        pub struct $name { $($(#[$fm])* pub $field: $ty),* }
    };
}

fn zero(v: u32) -> Result<(), Error> {
    if v == 0 {
        Ok(())
    } else {
        Err(Error::InvalidArgument)
    }
}

// ---------------------------------------------------------------------------------
// Enumerated field values
// ---------------------------------------------------------------------------------

/// How the VM's guest-physical memory is translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MmuMode {
    /// Two-dimensional paging (EPT): our tables map gpa -> hpa, the guest's own tables
    /// are walked by the CPU.
    Tdp = 0,
    /// Shadow paging: our tables map gva -> hpa, shadowing the guest's tables.
    Shadow = 1,
}

impl TryFrom<u32> for MmuMode {
    type Error = Error;
    fn try_from(v: u32) -> Result<Self, Error> {
        match v {
            0 => Ok(MmuMode::Tdp),
            1 => Ok(MmuMode::Shadow),
            _ => Err(Error::InvalidArgument),
        }
    }
}

/// Kinds of guest-physical memory slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum SlotKind {
    Ram = 0,
    /// Readable and executable, never writable: a write is an MMIO exit.
    ReadOnly = 1,
    /// A hole: every access is reported back as MMIO for the vmm-server to emulate.
    Mmio = 2,
}

impl TryFrom<u32> for SlotKind {
    type Error = Error;
    fn try_from(v: u32) -> Result<Self, Error> {
        match v {
            0 => Ok(SlotKind::Ram),
            1 => Ok(SlotKind::ReadOnly),
            2 => Ok(SlotKind::Mmio),
            _ => Err(Error::InvalidArgument),
        }
    }
}

/// Which register a [`CrWrite`] sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum CrRegister {
    Cr0 = 0,
    Cr3 = 3,
    Cr4 = 4,
    /// IA32_EFER (MSR 0xC000_0080).
    Efer = 0xC000_0080,
}

impl TryFrom<u32> for CrRegister {
    type Error = Error;
    fn try_from(v: u32) -> Result<Self, Error> {
        match v {
            0 => Ok(CrRegister::Cr0),
            3 => Ok(CrRegister::Cr3),
            4 => Ok(CrRegister::Cr4),
            0xC000_0080 => Ok(CrRegister::Efer),
            _ => Err(Error::InvalidArgument),
        }
    }
}

/// What the vmm-server must do after a fault request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum FaultOutcome {
    /// A mapping was installed (or already existed): resume the guest.
    Fixed = 0,
    /// Nothing to install but the access may now succeed (a shadow page was
    /// unprotected, or the root went obsolete): resume the guest without emulation.
    Retry = 1,
    /// Emulate the faulting instruction (a write to a write-tracked guest page table).
    Emulate = 2,
    /// The access hit an MMIO hole at `gpa`: emulate the device access.
    Mmio = 3,
    /// The guest's own tables do not allow the access: inject #PF with `error_code`.
    InjectPageFault = 4,
}

impl TryFrom<u32> for FaultOutcome {
    type Error = Error;
    fn try_from(v: u32) -> Result<Self, Error> {
        match v {
            0 => Ok(FaultOutcome::Fixed),
            1 => Ok(FaultOutcome::Retry),
            2 => Ok(FaultOutcome::Emulate),
            3 => Ok(FaultOutcome::Mmio),
            4 => Ok(FaultOutcome::InjectPageFault),
            _ => Err(Error::InvalidArgument),
        }
    }
}

/// INVPCID types (SDM Vol. 2A, INVPCID): 0 individual address, 1 single context,
/// 2 all contexts including globals, 3 all contexts except globals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum InvpcidKind {
    IndividualAddress = 0,
    SingleContext = 1,
    AllIncludingGlobal = 2,
    AllExceptGlobal = 3,
}

impl TryFrom<u32> for InvpcidKind {
    type Error = Error;
    fn try_from(v: u32) -> Result<Self, Error> {
        match v {
            0 => Ok(InvpcidKind::IndividualAddress),
            1 => Ok(InvpcidKind::SingleContext),
            2 => Ok(InvpcidKind::AllIncludingGlobal),
            3 => Ok(InvpcidKind::AllExceptGlobal),
            _ => Err(Error::InvalidArgument),
        }
    }
}

/// The system-wide NX-huge-page mitigation mode (KVM's `nx_huge_pages` parameter,
/// MMU_REFERENCE.md section 5). Auto, On and Force turn it on (capvisor assumes the
/// iTLB-multihit erratum: auto = on); Off turns it off; Never turns it off for good and
/// is only accepted while no VM exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum NxMode {
    Auto = 0,
    On = 1,
    Off = 2,
    Force = 3,
    Never = 4,
}

impl NxMode {
    /// Whether the mode turns the mitigation on.
    pub const fn enabled(self) -> bool {
        matches!(self, NxMode::Auto | NxMode::On | NxMode::Force)
    }
}

impl TryFrom<u32> for NxMode {
    type Error = Error;
    fn try_from(v: u32) -> Result<Self, Error> {
        match v {
            0 => Ok(NxMode::Auto),
            1 => Ok(NxMode::On),
            2 => Ok(NxMode::Off),
            3 => Ok(NxMode::Force),
            4 => Ok(NxMode::Never),
            _ => Err(Error::InvalidArgument),
        }
    }
}

/// Bits of [`Mapping::flags`].
pub mod mapping_flags {
    /// The leaf is executable.
    pub const EXEC: u32 = 1 << 0;
    /// The leaf is writable.
    pub const WRITE: u32 = 1 << 1;
    /// The leaf lies in a table that replaced a huge page for an instruction fetch
    /// (`nx_huge_page_disallowed`).
    pub const NX_DISALLOWED: u32 = 1 << 2;
    /// That table is on the VM's list of possible NX huge pages (counted by
    /// `nx_lpage_splits`, zapped by recovery).
    pub const NX_SPLIT: u32 = 1 << 3;
}

/// Bits of [`RootReply::flush`]: the TLB invalidations the vmm-server must perform
/// (with INVVPID/INVEPT on hardware, on the software vCPU's TLB otherwise) before the
/// guest runs again.
pub mod flush {
    /// Flush the current context: the active VPID and PCID (and EPTP).
    pub const CURRENT: u32 = 1 << 0;
    /// Flush everything the guest may have cached: every PCID, globals included.
    pub const GUEST: u32 = 1 << 1;
    /// Flush the single linear address of the request (INVLPG / INVPCID type 0).
    pub const ADDRESS: u32 = 1 << 2;
    /// Every bit defined so far.
    pub const ALL: u32 = CURRENT | GUEST | ADDRESS;
}

/// Bits of the `flags` fields of requests that carry live vCPU state.
pub mod vcpu_flags {
    /// EFLAGS.AC is set (SMAP does not apply to explicit supervisor accesses).
    pub const EFLAGS_AC: u32 = 1 << 0;
    /// The access is implicit (a descriptor-table or other system access); SMAP always
    /// applies.
    pub const IMPLICIT: u32 = 1 << 1;
    /// `live_cr0_wp` below is meaningful (CR0.WP is guest-owned and the vmm-server read
    /// it from the guest for this request).
    pub const LIVE_CR0_WP_VALID: u32 = 1 << 2;
    /// The live value of CR0.WP (only with `LIVE_CR0_WP_VALID`).
    pub const LIVE_CR0_WP: u32 = 1 << 3;
    /// An event is waiting to be re-injected (the fault happened during delivery).
    pub const EVENT_PENDING: u32 = 1 << 4;
    /// Every bit defined so far.
    pub const ALL: u32 = EFLAGS_AC | IMPLICIT | LIVE_CR0_WP_VALID | LIVE_CR0_WP | EVENT_PENDING;
}

/// Bits of [`CreateVm::flags`].
pub mod vm_flags {
    /// The hardware (vCPU) sets accessed/dirty bits in EPT entries.
    pub const EPT_AD: u32 = 1 << 0;
    pub const ALL: u32 = EPT_AD;
}

// ---------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------

wire_struct! {
    /// A reply that carries nothing but success.
    pub struct Empty {}
}

wire_struct! {
    /// The root to run on after a register change or invalidation, and the TLB
    /// flushes required first.
    pub struct RootReply {
        /// Host-physical address of the current root table (EPT PML4 for TDP, the
        /// shadow PML4 / PAE page-directory-pointer table for shadow paging), or 0 if
        /// no root is loaded (it is loaded on the next fault or reload).
        pub root_hpa: u64,
        /// Bits of [`flush`].
        pub flush: u32,
        /// Paging levels of the root (4 or 5 for TDP, 3 or 4 for shadow), 0 if none.
        pub root_level: u32,
    }
}

wire_struct! {
    /// The answer to a fault.
    pub struct FaultReply {
        /// A [`FaultOutcome`].
        pub outcome: u32,
        /// With `InjectPageFault`: the #PF error code to inject.
        pub error_code: u32,
        /// With `Mmio`: the guest-physical address of the access.
        pub gpa: u64,
        /// Bits of [`flush`] to perform before the guest runs again, whatever the
        /// outcome: handling the fault may have write-protected or zapped entries that
        /// the vCPU's TLB still caches (a guest page table became shadowed, the pool was
        /// reclaimed).
        pub flush: u32,
        /// Paging levels of `root_hpa` (as in [`RootReply`]).
        pub root_level: u32,
        /// The root to run on from now on. It differs from the one the fault happened
        /// on when the MMU had to replace it (the root shadowed a guest page table that
        /// was just unprotected, or it went obsolete); 0 if no root is loaded.
        pub root_hpa: u64,
    }
}

impl FaultReply {
    /// The outcome as an enum (a bad value is a protocol error, not a panic).
    pub fn outcome(&self) -> Result<FaultOutcome, Error> {
        FaultOutcome::try_from(self.outcome)
    }
}

wire_struct! {
    /// The result of a software walk of the guest's page tables.
    pub struct Translation {
        /// 0: translated to `gpa`; 1: page fault with `error_code`.
        pub faulted: u32,
        pub error_code: u32,
        pub gpa: u64,
    }
}

wire_struct! {
    /// The system-wide NX-huge-page state.
    pub struct NxHugePagesState {
        /// The [`NxMode`] last set.
        pub mode: u32,
        /// 1 when the mode turns the mitigation on.
        pub enabled: u32,
        /// Recovery ratio: each period zaps ceil(splits / ratio) pages; 0 disables it.
        pub ratio: u32,
        pub reserved: u32,
        /// The recovery period in milliseconds (derived from the ratio when it was set
        /// to 0, as KVM does); the timer that delivers ticks uses it.
        pub period_ms: u64,
        /// Pages recovered since start-up, over all VMs.
        pub recovered_total: u64,
    }
}

wire_struct! {
    /// What one recovery tick did.
    pub struct NxRecoveryReport {
        /// Split pages zapped by this tick, over all VMs.
        pub recovered: u64,
    }
}

wire_struct! {
    /// How the current root maps one address (for tests and diagnostics).
    pub struct Mapping {
        /// Level of the leaf (1 = 4K, 2 = 2M, 3 = 1G); 0 when nothing maps it.
        pub level: u32,
        /// Bits of [`mapping_flags`].
        pub flags: u32,
        /// The host-physical address the address maps to (0 when unmapped).
        pub hpa: u64,
    }
}

/// The statistics names, in the order of the fields of [`Stats`]. Fixed: other tools
/// print them.
pub const STAT_NAMES: [&str; 15] = [
    "roots_allocated",
    "roots_freed",
    "root_cache_hits",
    "root_cache_misses",
    "page_faults_fixed",
    "sptes_created",
    "shadow_pages",
    "pages_2m",
    "pages_1g",
    "nx_lpage_splits",
    "nx_recovered",
    "write_protect_faults",
    "unprotect_retries",
    "emulations",
    "tlb_flushes",
];

wire_struct! {
    /// Per-VM MMU statistics. Counters only grow, except `shadow_pages`, `pages_2m`,
    /// `pages_1g` and `nx_lpage_splits`, which count what exists now.
    pub struct Stats {
        pub roots_allocated: u64,
        pub roots_freed: u64,
        pub root_cache_hits: u64,
        pub root_cache_misses: u64,
        pub page_faults_fixed: u64,
        pub sptes_created: u64,
        pub shadow_pages: u64,
        pub pages_2m: u64,
        pub pages_1g: u64,
        pub nx_lpage_splits: u64,
        pub nx_recovered: u64,
        pub write_protect_faults: u64,
        pub unprotect_retries: u64,
        pub emulations: u64,
        pub tlb_flushes: u64,
    }
}

impl Stats {
    /// `(name, value)` pairs in [`STAT_NAMES`] order.
    pub fn entries(&self) -> [(&'static str, u64); 15] {
        let v = [
            self.roots_allocated,
            self.roots_freed,
            self.root_cache_hits,
            self.root_cache_misses,
            self.page_faults_fixed,
            self.sptes_created,
            self.shadow_pages,
            self.pages_2m,
            self.pages_1g,
            self.nx_lpage_splits,
            self.nx_recovered,
            self.write_protect_faults,
            self.unprotect_retries,
            self.emulations,
            self.tlb_flushes,
        ];
        let mut out = [("", 0u64); 15];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = (STAT_NAMES[i], v[i]);
        }
        out
    }
}

// ---------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------

wire_struct! {
    /// Creates the MMU state of the caller's VM (named by the badge).
    pub struct CreateVm {
        /// An [`MmuMode`].
        pub mmu_mode: u32,
        /// 1: the `RootReuse` policy is on (default); 0: legacy, every role change
        /// unloads every root.
        pub root_reuse: u32,
        /// Bits of [`vm_flags`].
        pub flags: u32,
        pub reserved: u32,
    }
}

impl Request for CreateVm {
    const LABEL: Label = Label::CreateVm;
    type Reply = Empty;
    fn validate(&self) -> Result<(), Error> {
        MmuMode::try_from(self.mmu_mode)?;
        if self.root_reuse > 1 || self.flags & !vm_flags::ALL != 0 {
            return Err(Error::InvalidArgument);
        }
        zero(self.reserved)
    }
}

wire_struct! {
    /// Adds a guest-physical memory slot.
    pub struct AddMemSlot {
        pub base_gfn: u64,
        pub npages: u64,
        /// Host-physical address backing the first page (RAM and read-only slots);
        /// page aligned; 0 for MMIO holes.
        pub host_base: u64,
        /// A [`SlotKind`].
        pub kind: u32,
        pub reserved: u32,
    }
}

impl Request for AddMemSlot {
    const LABEL: Label = Label::AddMemSlot;
    type Reply = Empty;
    fn validate(&self) -> Result<(), Error> {
        let kind = SlotKind::try_from(self.kind)?;
        if self.npages == 0 || self.host_base & 0xfff != 0 {
            return Err(Error::InvalidArgument);
        }
        if kind == SlotKind::Mmio && self.host_base != 0 {
            return Err(Error::InvalidArgument);
        }
        zero(self.reserved)
    }
}

wire_struct! {
    /// Removes the guest-physical memory slot that starts at `base_gfn` (a device BAR
    /// moved, memory was unplugged). Every table of the VM is zapped and every root
    /// becomes obsolete (KVM's "fast zap" on memslot deletion); the reply names the new
    /// root.
    pub struct RemoveMemSlot {
        pub base_gfn: u64,
    }
}

impl Request for RemoveMemSlot {
    const LABEL: Label = Label::RemoveMemSlot;
    type Reply = RootReply;
}

wire_struct! {
    /// Sets all paging control registers at once (vCPU reset, SREGS-style restore):
    /// a full MMU context reset.
    pub struct SetGuestRegs {
        pub cr0: u64,
        pub cr3: u64,
        pub cr4: u64,
        pub efer: u64,
    }
}

impl Request for SetGuestRegs {
    const LABEL: Label = Label::SetGuestRegs;
    type Reply = RootReply;
}

wire_struct! {
    /// "The guest's CR0/CR3/CR4/EFER is now `value`" after a validated guest write
    /// (for CR3 with CR4.PCIDE=1, bit 63 is the NOFLUSH hint as the guest wrote it).
    pub struct CrWrite {
        pub value: u64,
        /// A [`CrRegister`].
        pub reg: u32,
        pub reserved: u32,
    }
}

impl Request for CrWrite {
    const LABEL: Label = Label::CrWrite;
    type Reply = RootReply;
    fn validate(&self) -> Result<(), Error> {
        CrRegister::try_from(self.reg)?;
        zero(self.reserved)
    }
}

wire_struct! {
    /// An EPT violation.
    pub struct TdpFault {
        pub gpa: u64,
        /// Guest-linear address (meaningful when qualification bit 7 is set).
        pub gla: u64,
        /// The VT-x exit qualification for EPT violations (SDM Vol. 3C 28.2.1,
        /// Table 28-7): bit 0 read, 1 write, 2 fetch, 3-5 the EPT entry's R/W/X,
        /// 7 linear address valid, 8 the access was to the final translation.
        pub qualification: u64,
        pub rip: u64,
    }
}

impl Request for TdpFault {
    const LABEL: Label = Label::TdpFault;
    type Reply = FaultReply;
}

wire_struct! {
    /// A #PF intercepted under shadow paging.
    pub struct ShadowFault {
        pub gva: u64,
        pub rip: u64,
        /// The hardware #PF error code (P, W, U, RSVD, I/D, PK).
        pub error_code: u32,
        /// Bits of [`vcpu_flags`].
        pub flags: u32,
        /// The guest's PKRU.
        pub pkru: u32,
        pub reserved: u32,
    }
}

impl Request for ShadowFault {
    const LABEL: Label = Label::ShadowFault;
    type Reply = FaultReply;
    fn validate(&self) -> Result<(), Error> {
        if self.flags & !vcpu_flags::ALL != 0 {
            return Err(Error::InvalidArgument);
        }
        zero(self.reserved)
    }
}

wire_struct! {
    /// INVLPG executed by the guest (intercepted under shadow paging).
    pub struct Invlpg {
        pub gva: u64,
    }
}

impl Request for Invlpg {
    const LABEL: Label = Label::Invlpg;
    type Reply = RootReply;
}

wire_struct! {
    /// INVPCID executed by the guest.
    pub struct Invpcid {
        pub gva: u64,
        pub pcid: u32,
        /// An [`InvpcidKind`].
        pub kind: u32,
    }
}

impl Request for Invpcid {
    const LABEL: Label = Label::Invpcid;
    type Reply = RootReply;
    fn validate(&self) -> Result<(), Error> {
        InvpcidKind::try_from(self.kind)?;
        if self.pcid > 0xfff {
            return Err(Error::InvalidArgument);
        }
        Ok(())
    }
}

wire_struct! {
    /// The vmm-server emulated a guest write of `len` bytes at `gpa` (already done in
    /// guest memory); the new bytes are the low `len` bytes of `data` (little endian).
    pub struct EmulatedWrite {
        pub gpa: u64,
        pub data: u64,
        pub len: u32,
        pub reserved: u32,
    }
}

impl Request for EmulatedWrite {
    const LABEL: Label = Label::EmulatedWrite;
    /// Zapping the shadow entries a write made stale may free tables the vCPU has
    /// cached, or the current root itself: the reply says what to flush and what to run
    /// on.
    type Reply = RootReply;
    fn validate(&self) -> Result<(), Error> {
        if !matches!(self.len, 1 | 2 | 4 | 8) {
            return Err(Error::InvalidArgument);
        }
        zero(self.reserved)
    }
}

wire_struct! {
    /// Walk the guest's page tables in software (for the instruction emulator).
    pub struct GvaToGpa {
        pub gva: u64,
        /// The access as #PF error-code bits (W, U, I/D).
        pub access: u32,
        /// Bits of [`vcpu_flags`].
        pub flags: u32,
        pub pkru: u32,
        pub reserved: u32,
    }
}

impl Request for GvaToGpa {
    const LABEL: Label = Label::GvaToGpa;
    type Reply = Translation;
    fn validate(&self) -> Result<(), Error> {
        // Only W (bit 1), U (bit 2) and I/D (bit 4) describe an access.
        if self.access & !0b1_0110 != 0 || self.flags & !vcpu_flags::ALL != 0 {
            return Err(Error::InvalidArgument);
        }
        zero(self.reserved)
    }
}

wire_struct! {
    pub struct GetStats {}
}

impl Request for GetStats {
    const LABEL: Label = Label::GetStats;
    type Reply = Stats;
}

wire_struct! {
    /// The VM's first vCPU now exists (after this, per-VM policy is frozen).
    pub struct VcpuCreated {}
}

impl Request for VcpuCreated {
    const LABEL: Label = Label::VcpuCreated;
    type Reply = Empty;
}

wire_struct! {
    /// An invocation of the `NxHugePageControl` capability: turn the NX-huge-page
    /// mitigation off for the caller's VM. `flags` (and `reserved`) and `arg` must be 0.
    /// The server checks, in this order (MMU_REFERENCE.md section 5, KVM's
    /// `KVM_CAP_VM_DISABLE_NX_HUGE_PAGES`): non-zero `flags` -> `InvalidArgument`; the
    /// caller does not hold the capability -> `PermissionDenied`; non-zero `arg` ->
    /// `InvalidArgument`; the VM's vCPU exists (`VcpuCreated` was sent) ->
    /// `InvalidArgument`; otherwise the mitigation is off for this VM only (it has no
    /// effect while the system mode is off).
    pub struct DisableNxHugePages {
        pub flags: u32,
        pub reserved: u32,
        pub arg: u64,
    }
}

impl Request for DisableNxHugePages {
    const LABEL: Label = Label::DisableNxHugePages;
    type Reply = Empty;
    // The checks are ordered by the server (flags, permission, arg, vCPU state), so
    // validation here accepts every value.
}

wire_struct! {
    /// Frees all MMU state of the caller's VM.
    pub struct DestroyVm {}
}

impl Request for DestroyVm {
    const LABEL: Label = Label::DestroyVm;
    type Reply = Empty;
}

wire_struct! {
    /// System controller only: sets the system-wide NX-huge-page mode. Changing whether
    /// the mitigation is on zaps every VM's tables (a new generation; roots are rebuilt
    /// on demand). `Never` is refused with `InvalidState` while a VM exists; once it is
    /// set, every later change is `PermissionDenied`.
    pub struct SetNxHugePages {
        /// An [`NxMode`].
        pub mode: u32,
        pub reserved: u32,
    }
}

impl Request for SetNxHugePages {
    const LABEL: Label = Label::SetNxHugePages;
    type Reply = Empty;
    fn validate(&self) -> Result<(), Error> {
        NxMode::try_from(self.mode)?;
        zero(self.reserved)
    }
}

wire_struct! {
    /// System controller only: sets the recovery ratio and period (KVM's
    /// `nx_huge_pages_recovery_ratio` / `_period_ms`). Ratio 0 disables recovery;
    /// period 0 derives it from the ratio (3,600,000 / min(ratio, 3600) ms).
    pub struct SetNxRecovery {
        pub ratio: u32,
        pub reserved: u32,
        pub period_ms: u64,
    }
}

impl Request for SetNxRecovery {
    const LABEL: Label = Label::SetNxRecovery;
    type Reply = Empty;
    fn validate(&self) -> Result<(), Error> {
        zero(self.reserved)
    }
}

wire_struct! {
    /// System controller only: the system-wide NX-huge-page state.
    pub struct GetNxHugePages {}
}

impl Request for GetNxHugePages {
    const LABEL: Label = Label::GetNxHugePages;
    type Reply = NxHugePagesState;
}

wire_struct! {
    /// System controller only: one recovery period has passed (the host runtime's timer
    /// thread sends it; on seL4 the timer's notification reaches
    /// `MmuServer::recovery_tick` directly).
    pub struct NxRecoveryTick {}
}

impl Request for NxRecoveryTick {
    const LABEL: Label = Label::NxRecoveryTick;
    type Reply = NxRecoveryReport;
}

wire_struct! {
    /// The caller's root and the flushes work done outside its requests (recovery, a
    /// mode change) left pending. A vmm-server sends it when it has let the guest sit
    /// (a wait hint), since nothing else would tell its vCPU to drop translations.
    pub struct SyncMmu {}
}

impl Request for SyncMmu {
    const LABEL: Label = Label::SyncMmu;
    type Reply = RootReply;
}

wire_struct! {
    /// How the caller's current root maps `addr` (a gpa under TDP, a gva under shadow
    /// paging).
    pub struct GetMapping {
        pub addr: u64,
    }
}

impl Request for GetMapping {
    const LABEL: Label = Label::GetMapping;
    type Reply = Mapping;
}

// ---------------------------------------------------------------------------------
// Server-side decoding
// ---------------------------------------------------------------------------------

macro_rules! mmu_requests {
    ($($variant:ident),* $(,)?) => {
        /// Any request the mmu-server accepts, decoded and validated.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum MmuRequest {
            $($variant($variant)),*
        }

        impl MmuRequest {
            /// Decodes and validates one request. Never panics.
            pub fn decode(bytes: &[u8]) -> Result<MmuRequest, Error> {
                let (label, body) = split_header(bytes)?;
                $(
                    if label == <$variant as Request>::LABEL.code() {
                        let msg: $variant = read_exact(body)?;
                        msg.validate()?;
                        return Ok(MmuRequest::$variant(msg));
                    }
                )*
                Err(Error::UnknownLabel)
            }

            /// The label of this request.
            pub fn label(&self) -> Label {
                match self {
                    $(MmuRequest::$variant(_) => <$variant as Request>::LABEL),*
                }
            }
        }
    };
}

mmu_requests!(
    CreateVm,
    AddMemSlot,
    SetGuestRegs,
    CrWrite,
    TdpFault,
    ShadowFault,
    Invlpg,
    Invpcid,
    EmulatedWrite,
    GvaToGpa,
    GetStats,
    VcpuCreated,
    DisableNxHugePages,
    DestroyVm,
    RemoveMemSlot,
    SetNxHugePages,
    SetNxRecovery,
    GetNxHugePages,
    NxRecoveryTick,
    SyncMmu,
    GetMapping,
);
