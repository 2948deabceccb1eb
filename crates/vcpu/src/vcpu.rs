//! The vCPU: architectural state, the VMCS-like controls, the run loop, and the
//! accessors the VMM uses to handle exits.

extern crate alloc;
use alloc::boxed::Box;

use physmem::PhysMap;

use crate::controls::VmControls;
use crate::decode::DecodeCache;
use crate::exit::{ExitReason, VmExit};
use crate::memory::FastTlb;
use crate::paging::{Mmu, PagingContext};
use crate::regs::{access, rflags, DescriptorTable, Gpr, SegReg, Segment};

/// CR0 bits (SDM 2.5).
pub mod cr0 {
    pub const PE: u64 = 1 << 0;
    pub const MP: u64 = 1 << 1;
    pub const EM: u64 = 1 << 2;
    pub const TS: u64 = 1 << 3;
    pub const ET: u64 = 1 << 4;
    pub const NE: u64 = 1 << 5;
    pub const WP: u64 = 1 << 16;
    pub const AM: u64 = 1 << 18;
    pub const NW: u64 = 1 << 29;
    pub const CD: u64 = 1 << 30;
    pub const PG: u64 = 1 << 31;
}

/// CR4 bits (SDM 2.5).
pub mod cr4 {
    pub const VME: u64 = 1 << 0;
    pub const PVI: u64 = 1 << 1;
    pub const TSD: u64 = 1 << 2;
    pub const DE: u64 = 1 << 3;
    pub const PSE: u64 = 1 << 4;
    pub const PAE: u64 = 1 << 5;
    pub const MCE: u64 = 1 << 6;
    pub const PGE: u64 = 1 << 7;
    pub const PCE: u64 = 1 << 8;
    pub const OSFXSR: u64 = 1 << 9;
    pub const OSXMMEXCPT: u64 = 1 << 10;
    pub const UMIP: u64 = 1 << 11;
    pub const LA57: u64 = 1 << 12;
    pub const VMXE: u64 = 1 << 13;
    pub const FSGSBASE: u64 = 1 << 16;
    pub const PCIDE: u64 = 1 << 17;
    pub const OSXSAVE: u64 = 1 << 18;
    pub const SMEP: u64 = 1 << 20;
    pub const SMAP: u64 = 1 << 21;
    pub const PKE: u64 = 1 << 22;
    /// Bits this model lets software set; the rest are reserved (#GP).
    pub const SUPPORTED: u64 = VME
        | PVI
        | TSD
        | DE
        | PSE
        | PAE
        | MCE
        | PGE
        | PCE
        | OSFXSR
        | OSXMMEXCPT
        | UMIP
        | VMXE
        | FSGSBASE
        | PCIDE
        | OSXSAVE
        | SMEP
        | SMAP
        | PKE;
}

/// IA32_EFER bits (SDM 2.2.1).
pub mod efer {
    pub const SCE: u64 = 1 << 0;
    pub const LME: u64 = 1 << 8;
    pub const LMA: u64 = 1 << 10;
    pub const NXE: u64 = 1 << 11;
}

/// Model-specific registers this model keeps (beyond EFER and the segment bases).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrState {
    pub kernel_gs_base: u64,
    pub pat: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub tsc_aux: u64,
    pub apic_base: u64,
}

impl Default for MsrState {
    fn default() -> Self {
        MsrState {
            kernel_gs_base: 0,
            // Power-up PAT (SDM 13.12.4).
            pat: 0x0007_0406_0007_0406,
            star: 0,
            lstar: 0,
            cstar: 0,
            sfmask: 0,
            sysenter_cs: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
            tsc_aux: 0,
            // xAPIC at the default base, enabled, bootstrap processor (SDM 11.4.4).
            apic_base: 0xfee0_0000 | (1 << 11) | (1 << 8),
        }
    }
}

/// Counters (the stats key of `instructions` is "instructions").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Instructions the vCPU executed to completion (instructions emulated by the VMM
    /// after an exit are the VMM's to count).
    pub instructions: u64,
    pub decode_cache_misses: u64,
    pub exits: u64,
}

impl Stats {
    /// Looks a counter up by its stats key.
    pub fn get(&self, key: &str) -> Option<u64> {
        match key {
            "instructions" => Some(self.instructions),
            "decode_cache_misses" => Some(self.decode_cache_misses),
            "exits" => Some(self.exits),
            _ => None,
        }
    }
}

/// Guest interruptibility state bits (SDM 24.4.2 Table 24-3).
pub mod interruptibility {
    pub const STI: u32 = 1 << 0;
    pub const MOV_SS: u32 = 1 << 1;
}

/// Bits of `Vcpu::post_step`.
pub(crate) mod post_step {
    /// EFLAGS.TF was set when the instruction started: #DB trap after it.
    pub const SINGLE_STEP: u8 = 1 << 0;
    /// The instruction (a long REP string operation) stopped mid-way to let the run
    /// loop check its budget; RIP still points at it.
    pub const PARTIAL: u8 = 1 << 1;
}

/// Why the engine stopped executing an instruction. Kept to 8 bytes so that every
/// handler's `Result` travels in registers; a #PF's linear address goes to
/// `Vcpu::pf_linear` and an exit's description to `Vcpu::exit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// An architectural exception, to deliver (or exit on through the bitmap).
    Exception(Raised),
    /// A VM exit, described in `Vcpu::exit`.
    Exit,
}

/// A raised exception: vector and optional error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Raised {
    pub vector: u8,
    pub has_code: bool,
    pub code: u32,
}

impl Raised {
    pub(crate) fn error_code(&self) -> Option<u32> {
        self.has_code.then_some(self.code)
    }
}

/// An architectural exception raised by an instruction or by event delivery (also
/// what the VMM gets from the architectural helpers such as [`Vcpu::write_cr0`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    pub vector: u8,
    pub error_code: Option<u32>,
    /// For #PF: the faulting linear address (CR2 on delivery, qualification on exit).
    pub cr2: u64,
}

/// Why a MOV to CR0/CR3/CR4 did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrWriteError {
    /// The write raises this exception (#GP(0) for an illegal value, #PF for a PAE
    /// PDPTE load without EPT).
    Exception(Exception),
    /// Loading the PAE PDPTEs through EPT met an EPT violation or misconfiguration, or
    /// an unbacked host-physical address: the VM exit it causes.
    Exit(VmExit),
}

/// Exception vectors (SDM Table 6-1).
pub mod vector {
    pub const DE: u8 = 0;
    pub const DB: u8 = 1;
    pub const BP: u8 = 3;
    pub const OF: u8 = 4;
    pub const UD: u8 = 6;
    pub const NM: u8 = 7;
    pub const DF: u8 = 8;
    pub const TS: u8 = 10;
    pub const NP: u8 = 11;
    pub const SS: u8 = 12;
    pub const GP: u8 = 13;
    pub const PF: u8 = 14;
    pub const AC: u8 = 17;
}

impl Stop {
    pub(crate) fn fault(vector: u8, error_code: Option<u32>) -> Stop {
        Stop::Exception(Raised {
            vector,
            has_code: error_code.is_some(),
            code: error_code.unwrap_or(0),
        })
    }
    pub(crate) fn gp(code: u32) -> Stop {
        Stop::fault(vector::GP, Some(code))
    }
    pub(crate) fn gp0() -> Stop {
        Stop::gp(0)
    }
    /// The #DB of a single-step trap (no error code).
    pub(crate) fn debug_trap() -> Raised {
        Raised {
            vector: vector::DB,
            has_code: false,
            code: 0,
        }
    }
    pub(crate) fn ud() -> Stop {
        Stop::fault(vector::UD, None)
    }
    pub(crate) fn ss(code: u32) -> Stop {
        Stop::fault(vector::SS, Some(code))
    }
}

pub(crate) type Step<T = ()> = Result<T, Stop>;

/// A software Intel x86-64 CPU in VMX non-root operation.
pub struct Vcpu {
    pub(crate) gpr: [u64; 16],
    pub(crate) rip: u64,
    pub(crate) rflags: u64,
    pub(crate) seg: [Segment; 6],
    pub(crate) ldtr: Segment,
    pub(crate) tr: Segment,
    pub(crate) gdtr: DescriptorTable,
    pub(crate) idtr: DescriptorTable,
    pub(crate) cr0: u64,
    pub(crate) cr2: u64,
    pub(crate) cr3: u64,
    pub(crate) cr4: u64,
    pub(crate) cr8: u64,
    pub(crate) efer: u64,
    pub(crate) pdptes: [u64; 4],
    pub(crate) msr: MsrState,
    pub(crate) pkru: u32,
    pub(crate) xcr0: u64,
    /// DR0-DR3, DR6, DR7 (stored, no breakpoints are implemented).
    pub(crate) dr: [u64; 6],
    pub(crate) interruptibility: u32,
    pub(crate) halted: bool,
    /// 16, 32 or 64: the current code size (CS.D / CS.L with EFER.LMA).
    pub(crate) bitness: u32,
    /// The controls; the VMM edits them between runs.
    pub controls: VmControls,
    pub(crate) mmu: Mmu,
    pub(crate) tlb: Box<FastTlb>,
    pub(crate) dcache: Box<DecodeCache>,
    /// The exit being built when an instruction returns `Stop::Exit`.
    pub(crate) exit: VmExit,
    /// Length of the instruction being executed (for instruction-caused exits).
    pub(crate) cur_len: u8,
    /// The linear address of the last #PF raised (CR2 on delivery).
    pub(crate) pf_linear: u64,
    /// A single-step #DB is due after the instruction that just retired.
    /// Work after the instruction that just ran (`post_step` bits).
    pub(crate) post_step: u8,
    /// (enable EPT, EPTP, VPID) of the last VM entry.
    pub(crate) entry_tag: (bool, u64, u16),
    pub(crate) stats: Stats,
}

impl Default for Vcpu {
    fn default() -> Self {
        Self::new()
    }
}

impl Vcpu {
    /// A vCPU in the state after INIT (SDM 10.1.1 Table 10-1), except that it is not
    /// in real mode: use [`Vcpu::reset_multiboot`] or set the state yourself. This is
    /// the only allocation: the decode cache and the translation fast path.
    pub fn new() -> Vcpu {
        let mut v = Vcpu {
            gpr: [0; 16],
            rip: 0xfff0,
            rflags: rflags::FIXED1,
            seg: [Segment::UNUSABLE; 6],
            ldtr: Segment::UNUSABLE,
            tr: Segment {
                selector: 0,
                base: 0,
                limit: 0xffff,
                access: access::P | 0xb,
            },
            gdtr: DescriptorTable {
                base: 0,
                limit: 0xffff,
            },
            idtr: DescriptorTable {
                base: 0,
                limit: 0xffff,
            },
            cr0: cr0::ET | cr0::CD | cr0::NW,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            cr8: 0,
            efer: 0,
            pdptes: [0; 4],
            msr: MsrState::default(),
            pkru: 0,
            xcr0: 1,
            dr: [0, 0, 0, 0, 0xffff_0ff0, 0x400],
            interruptibility: 0,
            halted: false,
            bitness: 16,
            controls: VmControls::default(),
            mmu: Mmu::new(),
            tlb: FastTlb::new_boxed(),
            dcache: DecodeCache::new_boxed(),
            exit: VmExit::new(ExitReason::Unimplemented, 0),
            cur_len: 0,
            pf_linear: 0,
            post_step: 0,
            entry_tag: (false, 0, 0),
            stats: Stats::default(),
        };
        v.update_bitness();
        v
    }

    /// The multiboot v1 entry state (Multiboot spec 3.2; capvisor guest ABI): 32-bit
    /// protected mode, flat 4 GiB CS/DS/ES/FS/GS/SS, paging off, interrupts off,
    /// EAX = 0x2BADB002, EBX = the multiboot information address.
    pub fn reset_multiboot(&mut self, entry: u32, mbi: u32) {
        self.gpr = [0; 16];
        self.gpr[Gpr::Rax as usize] = 0x2bad_b002;
        self.gpr[Gpr::Rbx as usize] = mbi as u64;
        self.rip = entry as u64;
        self.rflags = rflags::FIXED1;
        for s in SegReg::ALL {
            self.seg[s as usize] = Segment::flat(
                if s == SegReg::Cs { 0x08 } else { 0x10 },
                s == SegReg::Cs,
                0,
                false,
            );
        }
        self.cr0 = cr0::PE | cr0::ET;
        self.cr3 = 0;
        self.cr4 = 0;
        self.efer = 0;
        self.interruptibility = 0;
        self.halted = false;
        self.update_bitness();
        self.paging_changed();
    }

    // ----- register accessors for the VMM -----

    pub fn gpr(&self, r: Gpr) -> u64 {
        self.gpr[r as usize]
    }
    pub fn set_gpr(&mut self, r: Gpr, value: u64) {
        self.gpr[r as usize] = value;
    }
    pub fn rip(&self) -> u64 {
        self.rip
    }
    pub fn set_rip(&mut self, rip: u64) {
        self.rip = rip;
    }
    /// Completes an instruction the VMM emulated after an exit: RIP += `len` (wrapped
    /// to the code size) and the STI/MOV-SS blocking of that instruction ends.
    pub fn advance_rip(&mut self, len: u8) {
        self.rip = self.wrap_ip(self.rip.wrapping_add(len as u64));
        self.interruptibility = 0;
    }
    pub fn rflags(&self) -> u64 {
        self.rflags
    }
    pub fn set_rflags(&mut self, value: u64) {
        let before = self.rflags;
        self.rflags = (value & rflags::WRITABLE) | rflags::FIXED1;
        if (before ^ self.rflags) & rflags::AC != 0 {
            self.tlb.clear();
        }
    }
    pub fn segment(&self, s: SegReg) -> Segment {
        self.seg[s as usize]
    }
    /// Loads a segment register's visible and hidden parts directly (as a VMM writes
    /// the VMCS guest-state area).
    pub fn set_segment(&mut self, s: SegReg, value: Segment) {
        self.seg[s as usize] = value;
        if matches!(s, SegReg::Cs | SegReg::Ss) {
            self.update_bitness();
            self.tlb.clear();
        }
    }
    pub fn gdtr(&self) -> DescriptorTable {
        self.gdtr
    }
    pub fn set_gdtr(&mut self, t: DescriptorTable) {
        self.gdtr = t;
    }
    pub fn idtr(&self) -> DescriptorTable {
        self.idtr
    }
    pub fn set_idtr(&mut self, t: DescriptorTable) {
        self.idtr = t;
    }
    pub fn tr(&self) -> Segment {
        self.tr
    }
    pub fn set_tr(&mut self, s: Segment) {
        self.tr = s;
    }
    pub fn ldtr(&self) -> Segment {
        self.ldtr
    }
    pub fn set_ldtr(&mut self, s: Segment) {
        self.ldtr = s;
    }
    /// The real CR0 (GUEST_CR0 of the VMCS), not the guest's shadowed view.
    pub fn cr0(&self) -> u64 {
        self.cr0
    }
    /// CR0 as the guest reads it (MOV from CR0 through the mask and read shadow).
    pub fn guest_visible_cr0(&self) -> u64 {
        self.controls.shadowed_cr0(self.cr0)
    }
    pub fn cr2(&self) -> u64 {
        self.cr2
    }
    pub fn set_cr2(&mut self, v: u64) {
        self.cr2 = v;
    }
    pub fn cr3(&self) -> u64 {
        self.cr3
    }
    pub fn cr4(&self) -> u64 {
        self.cr4
    }
    pub fn guest_visible_cr4(&self) -> u64 {
        self.controls.shadowed_cr4(self.cr4)
    }
    pub fn cr8(&self) -> u64 {
        self.cr8
    }
    pub fn set_cr8(&mut self, v: u64) {
        self.cr8 = v & 0xf;
    }
    pub fn efer(&self) -> u64 {
        self.efer
    }
    /// Writes GUEST_CR0 / GUEST_CR3 / GUEST_CR4 / GUEST_EFER directly, as a VMCS write:
    /// no architectural checks and no TLB invalidation (hardware flushes nothing on a
    /// VMWRITE; the VMM uses INVVPID/INVEPT). The decode/translation fast paths are
    /// dropped and the code size recomputed.
    pub fn set_control_registers(&mut self, cr0: u64, cr3: u64, cr4: u64, efer: u64) {
        self.cr0 = cr0;
        self.cr3 = cr3;
        self.cr4 = cr4;
        self.efer = efer;
        self.update_bitness();
        self.tlb.clear();
    }
    pub fn pdptes(&self) -> [u64; 4] {
        self.pdptes
    }
    pub fn set_pdptes(&mut self, p: [u64; 4]) {
        self.pdptes = p;
        self.tlb.clear();
    }
    pub fn msrs(&self) -> &MsrState {
        &self.msr
    }
    pub fn pkru(&self) -> u32 {
        self.pkru
    }
    /// Guest interruptibility state (VMCS format, [`interruptibility`]).
    pub fn interruptibility(&self) -> u32 {
        self.interruptibility
    }
    pub fn set_interruptibility(&mut self, v: u32) {
        self.interruptibility = v & 3;
    }
    /// Whether the vCPU sits in the HLT activity state.
    pub fn is_halted(&self) -> bool {
        self.halted
    }
    pub fn set_halted(&mut self, h: bool) {
        self.halted = h;
    }
    /// Current privilege level (SS.DPL, as VT-x defines it, SDM 24.4.1).
    #[inline(always)]
    pub fn cpl(&self) -> u8 {
        ((self.seg[SegReg::Ss as usize].access >> access::DPL_SHIFT) & 3) as u8
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    /// The paging unit (for tests, diagnostics and PDPTE loads). Whatever the caller
    /// does to it (an invalidation included), the engine's translation fast path is
    /// dropped so that it never outlives a TLB entry.
    pub fn mmu(&mut self) -> &mut Mmu {
        self.tlb.clear();
        &mut self.mmu
    }

    // ----- TLB maintenance the VMM performs (INVEPT / INVVPID) -----

    /// INVEPT (SDM 30.3): `kind` 1 single-context, 2 all-context.
    pub fn invept(&mut self, kind: u32, eptp: u64) -> Result<(), crate::paging::InvalidationError> {
        self.tlb.clear();
        self.mmu.invept(kind, eptp)
    }
    /// INVVPID (SDM 30.3): `kind` 0 individual address, 1 single context, 2 all
    /// contexts, 3 single context retaining globals.
    pub fn invvpid(
        &mut self,
        kind: u32,
        vpid: u16,
        linear: u64,
    ) -> Result<(), crate::paging::InvalidationError> {
        self.tlb.clear();
        self.mmu.invvpid(kind, vpid, linear)
    }
    /// Drops every cached translation.
    pub fn flush_tlb(&mut self) {
        self.mmu.flush_all();
        self.tlb.clear();
    }
    /// Forgets decoded instructions: the VMM must call this after writing guest code
    /// (loading an image) behind the vCPU's back.
    pub fn flush_decode_cache(&mut self) {
        self.dcache.clear();
    }

    // ----- internal helpers -----

    /// The paging state of the current moment, with the real control registers.
    #[inline]
    pub(crate) fn paging_ctx(&self) -> PagingContext {
        PagingContext {
            cr0: self.cr0,
            cr3: self.cr3,
            cr4: self.cr4,
            efer: self.efer,
            pdptes: self.pdptes,
            cpl: self.cpl(),
            rflags_ac: self.rflags & rflags::AC != 0,
            pkru: self.pkru,
            eptp: if self.controls.enable_ept {
                Some(self.controls.eptp)
            } else {
                None
            },
            vpid: if self.controls.enable_vpid {
                self.controls.vpid
            } else {
                0
            },
        }
    }

    /// The CPL changed (RFLAGS may have too: SYSCALL, SYSRET, IRET). The fast path
    /// switches banks by itself; only EFLAGS.AC (SMAP) and the code-page shortcut
    /// need attention.
    #[inline]
    pub(crate) fn cpl_changed(&mut self, rflags_before: u64) {
        if (rflags_before ^ self.rflags) & rflags::AC != 0 {
            self.tlb.clear();
        }
        self.tlb.code_page = u64::MAX;
    }

    /// Something the translation fast path depends on changed (CRs, EFER, CPL, AC,
    /// PKRU): drop it. The Mmu's own TLB keeps what the architecture lets it keep.
    #[inline]
    pub(crate) fn paging_changed(&mut self) {
        self.tlb.clear();
    }

    pub(crate) fn long_mode_active(&self) -> bool {
        self.efer & efer::LMA != 0
    }

    pub(crate) fn update_bitness(&mut self) {
        let cs = &self.seg[SegReg::Cs as usize];
        self.bitness = if self.long_mode_active() && cs.access & access::L != 0 {
            64
        } else if cs.access & access::DB != 0 {
            32
        } else {
            16
        };
    }

    /// Wraps an instruction pointer to the code size.
    #[inline(always)]
    pub(crate) fn wrap_ip(&self, ip: u64) -> u64 {
        match self.bitness {
            64 => ip,
            32 => ip & 0xffff_ffff,
            _ => ip & 0xffff,
        }
    }

    /// Turns an architectural exception of a helper into a `Stop`.
    /// MOV to CR0 with its architectural checks and effects (SDM Vol. 2B MOV CR,
    /// 9.8.5 for IA-32e activation), for a VMM completing a CR-access exit.
    pub fn write_cr0(&mut self, mem: &PhysMap, value: u64) -> Result<(), CrWriteError> {
        self.mov_to_cr0(mem, value)
            .map_err(|s| self.cr_write_error(s))
    }

    /// MOV to CR3 (SDM Vol. 2B MOV CR, 4.10.4.1), for a VMM completing a CR-access exit.
    pub fn write_cr3(&mut self, mem: &PhysMap, value: u64) -> Result<(), CrWriteError> {
        self.mov_to_cr3(mem, value)
            .map_err(|s| self.cr_write_error(s))
    }

    /// MOV to CR4 (SDM Vol. 2B MOV CR), for a VMM completing a CR-access exit.
    pub fn write_cr4(&mut self, mem: &PhysMap, value: u64) -> Result<(), CrWriteError> {
        self.mov_to_cr4(mem, value)
            .map_err(|s| self.cr_write_error(s))
    }

    fn cr_write_error(&self, stop: Stop) -> CrWriteError {
        match stop {
            Stop::Exception(r) => CrWriteError::Exception(Exception {
                vector: r.vector,
                error_code: r.error_code(),
                cr2: if r.vector == vector::PF {
                    self.pf_linear
                } else {
                    0
                },
            }),
            Stop::Exit => CrWriteError::Exit(self.exit),
        }
    }

    /// Prepares `self.exit` for an instruction-caused exit at the current RIP.
    pub(crate) fn instruction_exit(&mut self, reason: ExitReason, qualification: u64) -> Stop {
        self.exit = VmExit::new(reason, self.rip)
            .with_qualification(qualification)
            .with_len(self.cur_len as usize);
        Stop::Exit
    }

    /// Runs the guest until a VM exit.
    pub fn run(&mut self, mem: &PhysMap) -> VmExit {
        self.vm_transition();
        let exit = self.run_inner(mem);
        self.vm_transition();
        self.stats.exits += 1;
        exit
    }

    /// VM entry and VM exit: without "enable VPID" the vCPU runs with VPID 0, and
    /// both transitions invalidate VPID 0's linear and combined mappings (SDM
    /// 28.4.3.3). With a VPID nothing is invalidated.
    fn vm_transition(&mut self) {
        let vpid = if self.controls.enable_vpid {
            self.controls.vpid
        } else {
            0
        };
        if vpid == 0 {
            self.mmu.on_vm_entry_or_exit(0);
            self.tlb.clear();
        }
        // The fast path is not tagged like the TLB is (by VPID and EP4TA): a VMM
        // that switched EPTP or VPID between runs gets it dropped, so only the Mmu's
        // tagged entries can survive.
        let tag = (self.controls.enable_ept, self.controls.eptp, vpid);
        if tag != self.entry_tag {
            self.entry_tag = tag;
            self.tlb.clear();
        }
    }

    fn run_inner(&mut self, mem: &PhysMap) -> VmExit {
        if self.cr0 & cr0::PE == 0 {
            // Real mode is not modelled (the guest ABI enters in protected mode).
            return VmExit::new(ExitReason::InvalidGuestState, self.rip);
        }
        // VM entry: inject the pending event (SDM 27.6).
        let inj = self.controls.injection;
        if inj.info & crate::exit::interruption::VALID != 0 {
            self.controls.injection.info = 0;
            self.halted = false;
            if let Err(exit) = self.inject_event(mem, inj) {
                return exit;
            }
        }
        if self.halted {
            return VmExit::new(ExitReason::Halted, self.rip);
        }
        let mut budget = self.controls.budget.unwrap_or(u64::MAX);
        let result = loop {
            if budget == 0 {
                break VmExit::new(ExitReason::PreemptionTimer, self.rip);
            }
            if self.controls.interrupt_window_exiting
                && self.rflags & rflags::IF != 0
                && self.interruptibility == 0
            {
                break VmExit::new(ExitReason::InterruptWindow, self.rip);
            }
            match self.step(mem) {
                Ok(()) => {
                    budget -= 1;
                    self.stats.instructions += 1;
                    if self.post_step != 0 {
                        let p = core::mem::take(&mut self.post_step);
                        if p & post_step::PARTIAL != 0 {
                            // A REP string instruction yielded mid-way: it has not
                            // retired yet (and single-steps only when it completes).
                            self.stats.instructions -= 1;
                            continue;
                        }
                        if p & post_step::SINGLE_STEP != 0 {
                            if let Err(exit) = self.raise(mem, Stop::debug_trap()) {
                                break exit;
                            }
                        }
                    }
                }
                Err(Stop::Exit) => break self.exit,
                Err(Stop::Exception(e)) => {
                    if let Err(exit) = self.raise(mem, e) {
                        break exit;
                    }
                }
            }
        };
        if self.controls.budget.is_some() {
            self.controls.budget = Some(budget);
        }
        result
    }
}

/// Why a VMM-initiated guest memory access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestAccessError {
    /// The access would raise this exception in the guest (e.g. #PF with CR2 in
    /// `cr2`); the VMM typically injects it.
    Exception(Exception),
    /// The access hit an EPT violation/misconfiguration or an unbacked address.
    Exit(VmExit),
}

impl Vcpu {
    fn access_error(&self, s: Stop) -> GuestAccessError {
        match s {
            Stop::Exception(r) => GuestAccessError::Exception(Exception {
                vector: r.vector,
                error_code: r.error_code(),
                cr2: if r.vector == vector::PF {
                    self.pf_linear
                } else {
                    0
                },
            }),
            Stop::Exit => GuestAccessError::Exit(self.exit),
        }
    }

    /// Reads guest-linear memory exactly as the guest would at its current CPL (the
    /// translation, permission checks, A/D updates and TLB fills included). For a
    /// VMM emulating an instruction that exited, such as string I/O.
    pub fn read_guest_linear(
        &mut self,
        mem: &PhysMap,
        linear: u64,
        buf: &mut [u8],
    ) -> Result<(), GuestAccessError> {
        for (i, b) in buf.iter_mut().enumerate() {
            match self.read_linear(mem, linear.wrapping_add(i as u64), 1) {
                Ok(v) => *b = v as u8,
                Err(s) => return Err(self.access_error(s)),
            }
        }
        Ok(())
    }

    /// Writes guest-linear memory as the guest would (see [`Vcpu::read_guest_linear`]).
    pub fn write_guest_linear(
        &mut self,
        mem: &PhysMap,
        linear: u64,
        buf: &[u8],
    ) -> Result<(), GuestAccessError> {
        for (i, b) in buf.iter().enumerate() {
            if let Err(s) = self.write_linear(mem, linear.wrapping_add(i as u64), 1, *b as u64) {
                return Err(self.access_error(s));
            }
        }
        Ok(())
    }

    /// Queues a hardware exception for delivery at the next `run()` (VM-entry event
    /// injection, SDM 24.8.3).
    pub fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        use crate::exit::{event_type, interruption};
        self.controls.injection = crate::controls::EventInjection {
            info: interruption::info(vector, event_type::HARDWARE_EXCEPTION, error_code.is_some()),
            error_code: error_code.unwrap_or(0),
            instruction_len: 0,
        };
    }

    /// Queues an external interrupt. The VMM checks RFLAGS.IF and
    /// [`Vcpu::interruptibility`] first (or uses interrupt-window exiting), as with
    /// VT-x, which injects regardless.
    pub fn inject_interrupt(&mut self, vector: u8) {
        use crate::exit::{event_type, interruption};
        self.controls.injection = crate::controls::EventInjection {
            info: interruption::info(vector, event_type::EXTERNAL_INTERRUPT, false),
            error_code: 0,
            instruction_len: 0,
        };
    }
}
