//! System instructions: control/debug/segment register moves with the VT-x
//! guest/host-mask rules (SDM 26.1.3, 26.3), descriptor tables, TLB maintenance,
//! MSRs, I/O, HLT, CLI/STI and the small CPL-0 instructions.

use iced_x86::{Mnemonic, OpKind, Register};
use physmem::PhysMap;

use super::{seg_of, Flow};
use crate::decode::Decoded;
use crate::exit::{qualification as q, ExitReason, VmExit};
use crate::paging::Fault;
use crate::regs::{access, rflags, size_mask, SegReg, Segment, REG_SLOTS};
use crate::vcpu::{cr0, cr4, efer, interruptibility, vector, Step, Stop, Vcpu};

/// CR0 bits software can set (others are reserved: #GP).
const CR0_WRITABLE: u64 = cr0::PE
    | cr0::MP
    | cr0::EM
    | cr0::TS
    | cr0::ET
    | cr0::NE
    | cr0::WP
    | cr0::AM
    | cr0::NW
    | cr0::CD
    | cr0::PG;

impl Vcpu {
    fn gpr_number(r: Register) -> u8 {
        REG_SLOTS[r as usize].idx
    }

    /// The value of a GPR operand of MOV CR/DR: 64 bits in 64-bit mode, else 32.
    fn cr_operand(&self, r: Register) -> u64 {
        let v = self.gpr[Self::gpr_number(r) as usize];
        if self.bitness == 64 {
            v
        } else {
            v & 0xffff_ffff
        }
    }

    pub(crate) fn mov_to_cr_dr(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        self.require_cpl0()?;
        let dst = d.ins.op_register(0);
        let src = d.ins.op_register(1);
        let value = self.cr_operand(src);
        let gpr = Self::gpr_number(src);
        if dst.is_dr() {
            let n = dst as u8 - Register::DR0 as u8;
            if self.controls.mov_dr_exiting {
                return Err(self
                    .instruction_exit(ExitReason::DrAccess, (n as u64 & 7) | ((gpr as u64) << 8)));
            }
            let slot = self.dr_slot(n)?;
            if slot == 5 && value & 0xff != 0 {
                // Enabling a hardware breakpoint: not modelled, and silently never
                // firing would be a wrong result.
                return Err(self.unimplemented(mem, d));
            }
            self.dr[slot] = value;
            return Ok(Flow::Next);
        }
        let n = dst as u8 - Register::CR0 as u8;
        let c = &self.controls;
        match n {
            0 => {
                // SDM 26.1.3: exits if a host-owned bit would differ from the shadow.
                if (value ^ c.cr0_read_shadow) & c.cr0_guest_host_mask != 0 {
                    return Err(self
                        .instruction_exit(ExitReason::CrAccess, q::cr_mov(0, q::CR_MOV_TO, gpr)));
                }
                // Host-owned bits of the real CR0 are left as they are (SDM 26.3).
                let m = c.cr0_guest_host_mask;
                let v = (value & !m) | (self.cr0 & m);
                self.mov_to_cr0(mem, v)?;
            }
            2 => self.cr2 = value,
            3 => {
                if c.cr3_load_exiting {
                    return Err(self
                        .instruction_exit(ExitReason::CrAccess, q::cr_mov(3, q::CR_MOV_TO, gpr)));
                }
                self.mov_to_cr3(mem, value)?;
            }
            4 => {
                if (value ^ c.cr4_read_shadow) & c.cr4_guest_host_mask != 0 {
                    return Err(self
                        .instruction_exit(ExitReason::CrAccess, q::cr_mov(4, q::CR_MOV_TO, gpr)));
                }
                let m = c.cr4_guest_host_mask;
                let v = (value & !m) | (self.cr4 & m);
                self.mov_to_cr4(mem, v)?;
            }
            8 => {
                if c.cr8_load_exiting {
                    return Err(self
                        .instruction_exit(ExitReason::CrAccess, q::cr_mov(8, q::CR_MOV_TO, gpr)));
                }
                if value & !0xf != 0 {
                    return Err(Stop::gp0());
                }
                self.cr8 = value;
            }
            _ => return Err(Stop::ud()),
        }
        Ok(Flow::Next)
    }

    fn dr_slot(&self, n: u8) -> Step<usize> {
        match n {
            0..=3 => Ok(n as usize),
            4 | 5 if self.cr4 & cr4::DE != 0 => Err(Stop::ud()),
            4 | 6 => Ok(4),
            5 | 7 => Ok(5),
            _ => Err(Stop::ud()),
        }
    }

    pub(crate) fn mov_from_cr_dr(&mut self, d: &Decoded) -> Step<Flow> {
        self.require_cpl0()?;
        let dst = d.ins.op_register(0);
        let src = d.ins.op_register(1);
        let gpr = Self::gpr_number(dst);
        let v = if src.is_dr() {
            let n = src as u8 - Register::DR0 as u8;
            if self.controls.mov_dr_exiting {
                return Err(self.instruction_exit(
                    ExitReason::DrAccess,
                    (n as u64 & 7) | (1 << 4) | ((gpr as u64) << 8),
                ));
            }
            self.dr[self.dr_slot(n)?]
        } else {
            match src as u8 - Register::CR0 as u8 {
                0 => self.controls.shadowed_cr0(self.cr0),
                2 => self.cr2,
                3 => {
                    if self.controls.cr3_store_exiting {
                        return Err(self.instruction_exit(
                            ExitReason::CrAccess,
                            q::cr_mov(3, q::CR_MOV_FROM, gpr),
                        ));
                    }
                    self.cr3
                }
                4 => self.controls.shadowed_cr4(self.cr4),
                8 => {
                    if self.controls.cr8_store_exiting {
                        return Err(self.instruction_exit(
                            ExitReason::CrAccess,
                            q::cr_mov(8, q::CR_MOV_FROM, gpr),
                        ));
                    }
                    self.cr8
                }
                _ => return Err(Stop::ud()),
            }
        };
        self.set_reg(dst, v);
        Ok(Flow::Next)
    }

    /// Loads the PDPTEs when PAE paging is (or stays) active (SDM 4.4.1). With EPT the
    /// loads are guest-physical accesses through EPT, so an EPT violation or
    /// misconfiguration here is a VM exit at the MOV to CR (SDM 28.2.1), not a #GP.
    fn reload_pdptes(&mut self, mem: &PhysMap) -> Result<(), Stop> {
        let ctx = self.paging_ctx();
        match self.mmu.load_pdptes(mem, &ctx) {
            Ok(p) => {
                self.pdptes = p;
                Ok(())
            }
            Err(Fault::PdpteReserved { .. }) => Err(Stop::gp0()),
            Err(f) => Err(self.fault_stop(f)),
        }
    }

    fn pae_paging(&self) -> bool {
        self.cr0 & cr0::PG != 0 && self.cr4 & cr4::PAE != 0 && self.efer & efer::LMA == 0
    }

    /// MOV to CR0 with its architectural checks and effects (SDM Vol. 2B MOV CR,
    /// 9.8.5 for IA-32e activation). The VMM may call it to complete a CR-access exit.
    pub(crate) fn mov_to_cr0(&mut self, mem: &PhysMap, value: u64) -> Result<(), Stop> {
        let gp = Stop::gp0();
        let value = value | cr0::ET;
        let old = self.cr0;
        if value & !CR0_WRITABLE != 0
            || (value & cr0::NW != 0 && value & cr0::CD == 0)
            || (value & cr0::PG != 0 && value & cr0::PE == 0)
        {
            return Err(gp);
        }
        let enabling = old & cr0::PG == 0 && value & cr0::PG != 0;
        let disabling = old & cr0::PG != 0 && value & cr0::PG == 0;
        if enabling && self.efer & efer::LME != 0 && self.cr4 & cr4::PAE == 0 {
            return Err(gp);
        }
        if disabling && (self.bitness == 64 || self.cr4 & cr4::PCIDE != 0) {
            return Err(gp);
        }
        let before = self.paging_ctx();
        let old_efer = self.efer;
        self.cr0 = value;
        if enabling && self.efer & efer::LME != 0 {
            self.efer |= efer::LMA;
        }
        if disabling {
            self.efer &= !efer::LMA;
        }
        if self.pae_paging() && (old ^ value) & (cr0::PG | cr0::CD | cr0::NW) != 0 {
            if let Err(e) = self.reload_pdptes(mem) {
                self.cr0 = old;
                self.efer = old_efer;
                return Err(e);
            }
        }
        let after = self.paging_ctx();
        self.mmu.on_cr0_cr4_write(&before, &after);
        self.update_bitness();
        // Only PE/PG (the paging mode), LMA and the PDPTEs change translations; WP
        // only the rights of writes; TS/MP/EM/NE/CD/NW/AM none the engine caches.
        if (old ^ value) & (cr0::PG | cr0::PE) != 0
            || self.efer != old_efer
            || after.pdptes != before.pdptes
        {
            self.paging_changed();
        } else if (old ^ value) & cr0::WP != 0 {
            self.tlb.clear_writes();
        }
        Ok(())
    }

    /// MOV to CR3 (SDM Vol. 2B MOV CR, 4.10.4.1): bit 63 is NOFLUSH with CR4.PCIDE.
    pub(crate) fn mov_to_cr3(&mut self, mem: &PhysMap, value: u64) -> Result<(), Stop> {
        let gp = Stop::gp0();
        let pcide = self.cr4 & cr4::PCIDE != 0;
        let stored = if pcide { value & !(1 << 63) } else { value };
        let stored = if self.long_mode_active() {
            stored
        } else {
            stored & 0xffff_ffff
        };
        // Bits MAXPHYADDR and up are reserved (bit 63 is NOFLUSH only with PCIDE).
        if self.long_mode_active() && stored >> crate::paging::bits::MAXPHYADDR != 0 {
            return Err(gp);
        }
        let before = self.paging_ctx();
        let old = self.cr3;
        self.cr3 = stored;
        if self.pae_paging() {
            if let Err(e) = self.reload_pdptes(mem) {
                self.cr3 = old;
                return Err(e);
            }
        }
        self.mmu
            .on_cr3_write(&before, if pcide { value } else { stored });
        self.paging_changed();
        Ok(())
    }

    /// MOV to CR4 (SDM Vol. 2B MOV CR).
    pub(crate) fn mov_to_cr4(&mut self, mem: &PhysMap, value: u64) -> Result<(), Stop> {
        let gp = Stop::gp0();
        let old = self.cr4;
        let lma = self.long_mode_active();
        if value & !cr4::SUPPORTED != 0
            || (lma && value & cr4::PAE == 0)
            || (lma && (value ^ old) & cr4::LA57 != 0)
            || (old & cr4::PCIDE == 0 && value & cr4::PCIDE != 0 && (!lma || self.cr3 & 0xfff != 0))
        {
            return Err(gp);
        }
        let before = self.paging_ctx();
        self.cr4 = value;
        if self.pae_paging() && (old ^ value) & (cr4::PAE | cr4::PGE | cr4::PSE | cr4::SMEP) != 0 {
            if let Err(e) = self.reload_pdptes(mem) {
                self.cr4 = old;
                return Err(e);
            }
        }
        let after = self.paging_ctx();
        self.mmu.on_cr0_cr4_write(&before, &after);
        // Bits that change how (or whether) a linear address translates.
        const PAGING: u64 = cr4::PSE
            | cr4::PAE
            | cr4::PGE
            | cr4::PCIDE
            | cr4::SMEP
            | cr4::SMAP
            | cr4::PKE
            | cr4::LA57;
        if (old ^ value) & PAGING != 0 || after.pdptes != before.pdptes {
            self.paging_changed();
        }
        Ok(())
    }

    /// CLTS (SDM 26.1.3, 26.3): exits when TS is host-owned and set in the shadow;
    /// leaves a host-owned TS alone otherwise.
    pub(crate) fn clts(&mut self) -> Step<Flow> {
        self.require_cpl0()?;
        let c = &self.controls;
        if c.cr0_guest_host_mask & cr0::TS != 0 {
            if c.cr0_read_shadow & cr0::TS != 0 {
                return Err(self.instruction_exit(ExitReason::CrAccess, q::clts()));
            }
            return Ok(Flow::Next);
        }
        self.cr0 &= !cr0::TS;
        Ok(Flow::Next)
    }

    /// LMSW (SDM 26.1.3, 26.3): loads CR0[3:0], never clears PE.
    pub(crate) fn lmsw(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        self.require_cpl0()?;
        let is_mem = d.ins.op0_kind() == OpKind::Memory;
        let (src, lin) = if is_mem {
            let lin = self.mem_linear(d, 2, false)?;
            (self.read_linear(mem, lin, 2)?, Some(lin))
        } else {
            (self.reg(d.ins.op_register(0)), None)
        };
        let c = &self.controls;
        let (mask, shadow) = (c.cr0_guest_host_mask, c.cr0_read_shadow);
        let pe_exit = mask & cr0::PE != 0 && shadow & cr0::PE == 0 && src & cr0::PE != 0;
        let other_exit = (mask & 0xe) & (src ^ shadow) != 0;
        if pe_exit || other_exit {
            let qual = q::lmsw(src as u16, is_mem)
                | if is_mem {
                    0
                } else {
                    (Self::gpr_number(d.ins.op_register(0)) as u64) << 8
                };
            let stop = self.instruction_exit(ExitReason::CrAccess, qual);
            self.exit.guest_linear = lin;
            return Err(stop);
        }
        let owned = !mask & 0xf;
        let mut v = (self.cr0 & !owned) | (src & owned);
        v |= self.cr0 & cr0::PE;
        self.mov_to_cr0(mem, v)?;
        Ok(Flow::Next)
    }

    pub(crate) fn smsw(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        if self.cr4 & cr4::UMIP != 0 && self.cpl() > 0 {
            return Err(Stop::gp0());
        }
        let v = self.controls.shadowed_cr0(self.cr0);
        if d.ins.op0_kind() == OpKind::Memory {
            let lin = self.mem_linear(d, 2, true)?;
            self.write_linear(mem, lin, 2, v & 0xffff)?;
        } else {
            self.set_reg(d.ins.op_register(0), v);
        }
        Ok(Flow::Next)
    }

    /// LGDT / LIDT: limit (2 bytes) then base (8 bytes in 64-bit mode, else 4; 24 bits
    /// with a 16-bit operand size).
    pub(crate) fn load_dtr(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        self.require_cpl0()?;
        let lin = self.mem_linear(d, 6, false)?;
        let limit = self.read_linear(mem, lin, 2)? as u16;
        let base = if self.bitness == 64 {
            self.read_linear(mem, lin.wrapping_add(2), 8)?
        } else {
            let b = self.read_linear(mem, lin.wrapping_add(2), 4)?;
            if matches!(
                d.ins.code(),
                iced_x86::Code::Lgdt_m1632_16 | iced_x86::Code::Lidt_m1632_16
            ) {
                b & 0xff_ffff
            } else {
                b
            }
        };
        let t = crate::regs::DescriptorTable { base, limit };
        if d.mnemonic == Mnemonic::Lgdt {
            self.gdtr = t;
        } else {
            self.idtr = t;
        }
        Ok(Flow::Next)
    }

    pub(crate) fn store_dtr(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        if self.cr4 & cr4::UMIP != 0 && self.cpl() > 0 {
            return Err(Stop::gp0());
        }
        let t = if d.mnemonic == Mnemonic::Sgdt {
            self.gdtr
        } else {
            self.idtr
        };
        let base_size = if self.bitness == 64 { 8 } else { 4 };
        let lin = self.mem_linear(d, 2 + base_size, true)?;
        self.probe_write(mem, lin, 2 + base_size as u64, false)?;
        self.write_linear(mem, lin, 2, t.limit as u64)?;
        self.write_linear(mem, lin.wrapping_add(2), base_size, t.base)?;
        Ok(Flow::Next)
    }

    /// LTR / LLDT (SDM Vol. 2A): a GDT system descriptor of the right type; LTR marks
    /// the TSS busy.
    pub(crate) fn load_system_segment(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        self.require_cpl0()?;
        let sel = self.src(mem, d, 0, 2)? as u16;
        let ltr = d.mnemonic == Mnemonic::Ltr;
        let code = sel as u32 & 0xfffc;
        if sel & !3 == 0 {
            if ltr {
                return Err(Stop::gp0());
            }
            self.ldtr = Segment {
                selector: sel,
                ..Segment::UNUSABLE
            };
            return Ok(Flow::Next);
        }
        if sel & 4 != 0 {
            return Err(Stop::gp(code));
        }
        let (low, high) = self.read_descriptor(mem, sel)?;
        let s = Segment::from_descriptor(
            sel,
            low,
            if self.long_mode_active() {
                Some(high)
            } else {
                None
            },
        );
        let ty = s.access & access::TYPE_MASK;
        let ok = s.access & access::S == 0
            && if ltr {
                ty == 9 || (!self.long_mode_active() && ty == 1)
            } else {
                ty == 2
            };
        if !ok {
            return Err(Stop::gp(code));
        }
        if s.access & access::P == 0 {
            return Err(Stop::fault(vector::NP, Some(code)));
        }
        if ltr {
            let lin = self.gdtr.base.wrapping_add((sel & !7) as u64 + 5);
            let b = self.read_linear_implicit(mem, lin, 1)?;
            self.write_linear_implicit(mem, lin, 1, b | 2)?;
            self.tr = Segment {
                access: s.access | 2,
                ..s
            };
        } else {
            self.ldtr = s;
        }
        Ok(Flow::Next)
    }

    pub(crate) fn store_system_selector(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        if self.cr4 & cr4::UMIP != 0 && self.cpl() > 0 {
            return Err(Stop::gp0());
        }
        let v = if d.mnemonic == Mnemonic::Str {
            self.tr.selector
        } else {
            self.ldtr.selector
        } as u64;
        if d.ins.op0_kind() == OpKind::Memory {
            let lin = self.mem_linear(d, 2, true)?;
            self.write_linear(mem, lin, 2, v)?;
        } else {
            self.set_reg(d.ins.op_register(0), v);
        }
        Ok(Flow::Next)
    }

    /// The linear address of a memory operand without canonical/limit faults (INVLPG
    /// ignores non-canonical addresses, SDM Vol. 2A INVLPG).
    fn raw_linear(&self, d: &Decoded) -> u64 {
        let seg = seg_of(d.ins.memory_segment());
        let ea = self.ea(d);
        if self.bitness == 64 {
            match seg {
                SegReg::Fs | SegReg::Gs => self.seg[seg as usize].base.wrapping_add(ea),
                _ => ea,
            }
        } else {
            self.seg[seg as usize].base.wrapping_add(ea) & 0xffff_ffff
        }
    }

    pub(crate) fn invlpg(&mut self, d: &Decoded) -> Step<Flow> {
        self.require_cpl0()?;
        let lin = self.raw_linear(d);
        if self.controls.invlpg_exiting {
            return Err(self.instruction_exit(ExitReason::Invlpg, lin));
        }
        if self.bitness != 64 || crate::regs::is_canonical(lin, self.cr4 & cr4::LA57 != 0) {
            let ctx = self.paging_ctx();
            self.mmu.invlpg(&ctx, lin);
        }
        self.paging_changed();
        Ok(Flow::Next)
    }

    /// VM-exit instruction information for a memory operand (SDM 28.2.5, the
    /// INVEPT/INVPCID/INVVPID format), with `reg2` in bits 31:28.
    fn mem_instruction_info(&self, d: &Decoded, reg2: u8) -> u32 {
        let ins = &d.ins;
        let scale = match ins.memory_index_scale() {
            2 => 1,
            4 => 2,
            8 => 3,
            _ => 0,
        };
        let asz = match d.addr_size {
            2 => 0,
            4 => 1,
            _ => 2,
        };
        let seg = seg_of(ins.memory_segment()) as u32;
        let idx = ins.memory_index();
        let base = ins.memory_base();
        let mut info = scale | (asz << 7) | (seg << 15) | ((reg2 as u32 & 0xf) << 28);
        if idx == Register::None {
            info |= 1 << 22;
        } else {
            info |= (REG_SLOTS[idx as usize].idx as u32) << 18;
        }
        if base == Register::None || base == Register::RIP || base == Register::EIP {
            info |= 1 << 27;
        } else {
            info |= (REG_SLOTS[base as usize].idx as u32) << 23;
        }
        info
    }

    /// INVPCID (SDM Vol. 2A; 26.1.3: exits with "INVLPG exiting").
    pub(crate) fn invpcid(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        if !self.controls.enable_invpcid {
            return Err(Stop::ud());
        }
        self.require_cpl0()?;
        let type_reg = d.ins.op_register(0);
        if self.controls.invlpg_exiting {
            let info = self.mem_instruction_info(d, Self::gpr_number(type_reg));
            let stop = self.instruction_exit(ExitReason::Invpcid, d.ins.memory_displacement64());
            self.exit.instruction_info = info;
            return Err(stop);
        }
        let kind = self.reg(type_reg);
        let lin = self.mem_linear(d, 16, false)?;
        let lo = self.read_linear(mem, lin, 8)?;
        let hi = self.read_linear(mem, lin.wrapping_add(8), 8)?;
        if kind > 3 || lo >> 12 != 0 {
            return Err(Stop::gp0());
        }
        let ctx = self.paging_ctx();
        self.mmu
            .invpcid(&ctx, kind as u32, (lo & 0xfff) as u16, hi)
            .map_err(|_| Stop::gp0())?;
        self.paging_changed();
        Ok(Flow::Next)
    }

    pub(crate) fn wbinvd(&mut self, d: &Decoded) -> Step<Flow> {
        self.require_cpl0()?;
        if d.mnemonic == Mnemonic::Invd {
            // INVD always exits in VMX non-root operation (SDM 26.1.2).
            return Err(self.instruction_exit(ExitReason::Invd, 0));
        }
        if self.controls.wbinvd_exiting {
            return Err(self.instruction_exit(ExitReason::Wbinvd, 0));
        }
        Ok(Flow::Next)
    }

    pub(crate) fn rdmsr(&mut self) -> Step<Flow> {
        self.require_cpl0()?;
        let msr = self.gpr[1] as u32;
        if self.controls.msr_exits(msr, false) {
            return Err(self.instruction_exit(ExitReason::Rdmsr, 0));
        }
        let v = self.read_msr(msr).map_err(|_| Stop::gp0())?;
        self.gpr[0] = v & 0xffff_ffff;
        self.gpr[2] = v >> 32;
        Ok(Flow::Next)
    }

    pub(crate) fn wrmsr(&mut self, _mem: &PhysMap) -> Step<Flow> {
        self.require_cpl0()?;
        let msr = self.gpr[1] as u32;
        if self.controls.msr_exits(msr, true) {
            return Err(self.instruction_exit(ExitReason::Wrmsr, 0));
        }
        let v = (self.gpr[0] & 0xffff_ffff) | (self.gpr[2] << 32);
        self.write_msr(msr, v).map_err(|_| Stop::gp0())?;
        Ok(Flow::Next)
    }

    pub(crate) fn rdtsc(&mut self, p: bool) -> Step<Flow> {
        if p && !self.controls.enable_rdtscp {
            return Err(Stop::ud());
        }
        if self.cr4 & cr4::TSD != 0 && self.cpl() > 0 {
            return Err(Stop::gp0());
        }
        if self.controls.rdtsc_exiting {
            return Err(self.instruction_exit(
                if p {
                    ExitReason::Rdtscp
                } else {
                    ExitReason::Rdtsc
                },
                0,
            ));
        }
        let t = self.tsc();
        self.gpr[0] = t & 0xffff_ffff;
        self.gpr[2] = t >> 32;
        if p {
            self.gpr[1] = self.msr.tsc_aux & 0xffff_ffff;
        }
        Ok(Flow::Next)
    }

    pub(crate) fn rdpid(&mut self, d: &Decoded) -> Step<Flow> {
        if !self.controls.enable_rdtscp {
            return Err(Stop::ud());
        }
        self.set_reg(d.ins.op_register(0), self.msr.tsc_aux);
        Ok(Flow::Next)
    }

    pub(crate) fn rdpkru(&mut self) -> Step<Flow> {
        if self.cr4 & cr4::PKE == 0 {
            return Err(Stop::ud());
        }
        if self.gpr[1] as u32 != 0 {
            return Err(Stop::gp0());
        }
        self.gpr[0] = self.pkru as u64;
        self.gpr[2] = 0;
        Ok(Flow::Next)
    }

    pub(crate) fn wrpkru(&mut self) -> Step<Flow> {
        if self.cr4 & cr4::PKE == 0 {
            return Err(Stop::ud());
        }
        if self.gpr[1] as u32 != 0 || self.gpr[2] as u32 != 0 {
            return Err(Stop::gp0());
        }
        self.pkru = self.gpr[0] as u32;
        self.paging_changed();
        Ok(Flow::Next)
    }

    pub(crate) fn xgetbv(&mut self) -> Step<Flow> {
        if self.cr4 & cr4::OSXSAVE == 0 {
            return Err(Stop::ud());
        }
        if self.gpr[1] as u32 != 0 {
            return Err(Stop::gp0());
        }
        self.gpr[0] = self.xcr0 & 0xffff_ffff;
        self.gpr[2] = self.xcr0 >> 32;
        Ok(Flow::Next)
    }

    pub(crate) fn stac_clac(&mut self, d: &Decoded) -> Step<Flow> {
        if self.cpl() > 0 {
            return Err(Stop::ud());
        }
        if d.mnemonic == Mnemonic::Stac {
            self.rflags |= rflags::AC;
        } else {
            self.rflags &= !rflags::AC;
        }
        self.paging_changed();
        Ok(Flow::Next)
    }

    pub(crate) fn swapgs(&mut self) -> Step<Flow> {
        if self.bitness != 64 {
            return Err(Stop::ud());
        }
        self.require_cpl0()?;
        let gs = &mut self.seg[SegReg::Gs as usize].base;
        core::mem::swap(gs, &mut self.msr.kernel_gs_base);
        Ok(Flow::Next)
    }

    pub(crate) fn hlt(&mut self) -> Step<Flow> {
        self.require_cpl0()?;
        if self.controls.hlt_exiting {
            return Err(self.instruction_exit(ExitReason::Hlt, 0));
        }
        // HLT activity state: the instruction completes; the vCPU waits for an event
        // the VMM injects.
        self.rip = self.wrap_ip(self.rip.wrapping_add(self.cur_len as u64));
        self.halted = true;
        self.stats.instructions += 1;
        self.exit = VmExit::new(ExitReason::Halted, self.rip);
        Err(Stop::Exit)
    }

    pub(crate) fn cli_sti(&mut self, set: bool) -> Step<Flow> {
        if !self.iopl_ok() {
            return Err(Stop::gp0());
        }
        if set {
            if self.rflags & rflags::IF == 0 {
                // STI blocks interrupts until after the next instruction (SDM 6.8.3).
                self.interruptibility |= interruptibility::STI;
            }
            self.rflags |= rflags::IF;
        } else {
            self.rflags &= !rflags::IF;
        }
        Ok(Flow::Next)
    }

    /// Protected-mode I/O permission (SDM 19.5): CPL <= IOPL, or every bit of the
    /// accessed ports clear in the TSS I/O permission bitmap (its offset at TSS+0x66,
    /// bytes past the TSS limit count as set). #GP(0) otherwise.
    fn check_io_permission(&mut self, mem: &PhysMap, port: u16, size: u8) -> Step {
        if self.iopl_ok() {
            return Ok(());
        }
        let tr = self.tr;
        let ty = tr.access & access::TYPE_MASK;
        // Only a 32/64-bit TSS (type 9 or busy 11) has a bitmap.
        if !tr.usable() || (ty != 9 && ty != 11) || tr.limit < 0x67 {
            return Err(Stop::gp0());
        }
        let map = self.read_linear_implicit(mem, tr.base.wrapping_add(0x66), 2)?;
        let first = map + (port as u64 >> 3);
        if first + 1 > tr.limit as u64 {
            return Err(Stop::gp0());
        }
        let bits = self.read_linear_implicit(mem, tr.base.wrapping_add(first), 2)?;
        let mask = ((1u64 << size) - 1) << (port & 7);
        if bits & mask != 0 {
            return Err(Stop::gp0());
        }
        Ok(())
    }

    /// The I/O port and width of IN/OUT.
    fn io_operands(d: &Decoded) -> (bool, Register, Option<u16>) {
        let input = d.mnemonic == Mnemonic::In;
        let (data_op, port_op) = if input { (0, 1) } else { (1, 0) };
        let data = d.ins.op_register(data_op);
        let port = match d.ins.op_kind(port_op) {
            OpKind::Immediate8 => Some(d.ins.immediate8() as u16),
            _ => None,
        };
        (input, data, port)
    }

    /// IN / OUT: the I/O permission check, then an I/O exit, or an absent device
    /// (reads all ones).
    pub(crate) fn in_out(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let (input, data, imm_port) = Self::io_operands(d);
        let size = REG_SLOTS[data as usize].size;
        let port = imm_port.unwrap_or(self.gpr[2] as u16);
        self.check_io_permission(mem, port, size)?;
        if self.controls.io_exits(port, size) {
            let qual = q::io(size, input, false, false, imm_port.is_some(), port);
            return Err(self.instruction_exit(ExitReason::IoInstruction, qual));
        }
        if input {
            self.set_reg(data, size_mask(size));
        }
        Ok(Flow::Next)
    }

    /// INS / OUTS (with REP): exit with the string and REP bits, the guest-linear
    /// address of the first element and the address size/segment in the instruction
    /// information (SDM 28.2.5 Table 28-9); without an exit, an absent device.
    pub(crate) fn string_io(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let input = matches!(d.mnemonic, Mnemonic::Insb | Mnemonic::Insw | Mnemonic::Insd);
        let size: u8 = match d.mnemonic {
            Mnemonic::Insb | Mnemonic::Outsb => 1,
            Mnemonic::Insw | Mnemonic::Outsw => 2,
            _ => 4,
        };
        let port = self.gpr[2] as u16;
        self.check_io_permission(mem, port, size)?;
        let am = size_mask(d.addr_size);
        let rep = d.ins.has_rep_prefix();
        let seg = if input {
            SegReg::Es
        } else {
            seg_of(d.ins.memory_segment())
        };
        let off = if input {
            self.gpr[7] & am
        } else {
            self.gpr[6] & am
        };
        if self.controls.io_exits(port, size) {
            let lin = self.seg_linear(seg, off, size, input)?;
            let qual = q::io(size, input, true, rep, false, port);
            let stop = self.instruction_exit(ExitReason::IoInstruction, qual);
            self.exit.guest_linear = Some(lin);
            let asz = match d.addr_size {
                2 => 0,
                4 => 1,
                _ => 2,
            };
            self.exit.instruction_info = (asz << 7) | ((seg as u32) << 15);
            return Err(stop);
        }
        let step = if self.rflags & rflags::DF != 0 {
            (size as u64).wrapping_neg()
        } else {
            size as u64
        };
        loop {
            if rep && self.gpr[1] & am == 0 {
                return Ok(Flow::Next);
            }
            if input {
                let di = self.gpr[7] & am;
                self.write_seg(mem, SegReg::Es, di, size, size_mask(size))?;
                self.set_gpr_sized(7, d.addr_size, di.wrapping_add(step));
            } else {
                let si = self.gpr[6] & am;
                self.read_seg(mem, seg, si, size)?;
                self.set_gpr_sized(6, d.addr_size, si.wrapping_add(step));
            }
            if !rep {
                return Ok(Flow::Next);
            }
            let cx = (self.gpr[1] & am).wrapping_sub(1) & am;
            self.set_gpr_sized(1, d.addr_size, cx);
        }
    }

    pub(crate) fn mov_to_sreg(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let r = d.ins.op_register(0);
        let sel = self.src(mem, d, 1, 2)? as u16;
        if r == Register::CS {
            return Err(Stop::ud());
        }
        self.load_segment(mem, seg_of(r), sel)?;
        if r == Register::SS {
            self.interruptibility |= interruptibility::MOV_SS;
        }
        Ok(Flow::Next)
    }

    pub(crate) fn mov_from_sreg(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let sel = self.seg[seg_of(d.ins.op_register(1)) as usize].selector as u64;
        if d.ins.op0_kind() == OpKind::Memory {
            let lin = self.mem_linear(d, 2, true)?;
            self.write_linear(mem, lin, 2, sel)?;
        } else {
            let r = d.ins.op_register(0);
            // A 32/64-bit destination is zero-extended on current processors.
            let slot = REG_SLOTS[r as usize];
            self.set_gpr_sized(slot.idx as usize, slot.size, sel);
        }
        Ok(Flow::Next)
    }

    /// LSS / LFS / LGS / LDS / LES: offset then selector from memory.
    pub(crate) fn load_far_pointer(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let r = d.ins.op_register(0);
        let size = REG_SLOTS[r as usize].size;
        let lin = self.mem_linear(d, size + 2, false)?;
        let off = self.read_linear(mem, lin, size)?;
        let sel = self.read_linear(mem, lin.wrapping_add(size as u64), 2)? as u16;
        let seg = match d.mnemonic {
            Mnemonic::Lss => SegReg::Ss,
            Mnemonic::Lfs => SegReg::Fs,
            Mnemonic::Lgs => SegReg::Gs,
            Mnemonic::Lds => SegReg::Ds,
            _ => SegReg::Es,
        };
        self.load_segment(mem, seg, sel)?;
        self.set_reg(r, off);
        Ok(Flow::Next)
    }
}
