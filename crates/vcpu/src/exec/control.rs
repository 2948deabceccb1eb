//! Control transfer: Jcc/JMP/CALL/RET/LOOP (near and far), software interrupts
//! (INT n, INT3, INTO, INT1), IRET, SYSCALL/SYSRET.

use iced_x86::{Code, Mnemonic, OpKind};
use physmem::PhysMap;

use super::Flow;
use crate::decode::Decoded;
use crate::event::Event;
use crate::exit::event_type;
use crate::regs::{access, is_canonical, rflags, size_mask, SegReg, Segment};
use crate::vcpu::{cr4, efer, vector, Step, Stop, Vcpu};

impl Vcpu {
    /// Checks a branch target against the canonical form (64-bit mode) or the CS
    /// limit, and sets RIP (SDM Vol. 2A JMP: #GP(0) at the branch).
    #[inline(always)]
    pub(crate) fn branch_to(&mut self, target: u64) -> Step<Flow> {
        if self.bitness == 64 {
            if !is_canonical(target, self.cr4 & cr4::LA57 != 0) {
                return Err(Stop::gp0());
            }
        } else if target > self.seg[SegReg::Cs as usize].limit as u64 {
            return Err(Stop::gp0());
        }
        self.rip = target;
        Ok(Flow::Jumped)
    }

    #[inline(always)]
    pub(crate) fn jcc(&mut self, d: &Decoded) -> Step<Flow> {
        if self.cond(d.ins.condition_code()) {
            self.branch_to(d.ins.near_branch_target())
        } else {
            Ok(Flow::Next)
        }
    }

    /// The target of a near indirect branch (register or memory), zero-extended from
    /// the operand size.
    fn indirect_target(&mut self, mem: &PhysMap, d: &Decoded) -> Step<u64> {
        let size = self.op_size(d, 0);
        self.src(mem, d, 0, size)
    }

    /// Reads a far pointer m16:16 / m16:32 / m16:64 (offset first, then selector).
    fn far_pointer(&mut self, mem: &PhysMap, d: &Decoded) -> Step<(u16, u64)> {
        let total = d.ins.memory_size().size() as u8;
        let off_size = total - 2;
        let lin = self.mem_linear(d, total, false)?;
        let off = self.read_linear(mem, lin, off_size)?;
        let sel = self.read_linear(mem, lin.wrapping_add(off_size as u64), 2)? as u16;
        Ok((sel, off))
    }

    pub(crate) fn jmp(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        match d.ins.op0_kind() {
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                self.branch_to(d.ins.near_branch_target())
            }
            OpKind::FarBranch16 | OpKind::FarBranch32 => {
                let off = if d.ins.op0_kind() == OpKind::FarBranch16 {
                    d.ins.far_branch16() as u64
                } else {
                    d.ins.far_branch32() as u64
                };
                self.far_jump(mem, d, d.ins.far_branch_selector(), off)
            }
            OpKind::Memory if is_far_memory(d) => {
                let (sel, off) = self.far_pointer(mem, d)?;
                self.far_jump(mem, d, sel, off)
            }
            _ => {
                let t = self.indirect_target(mem, d)?;
                self.branch_to(t)
            }
        }
    }

    /// Loads CS for a far JMP/CALL to a code segment at the same privilege (SDM
    /// 5.8.1). Call gates and task switches are an unimplemented exit.
    fn far_code_segment(&mut self, mem: &PhysMap, d: &Decoded, sel: u16) -> Step<Segment> {
        if sel & !3 == 0 {
            return Err(Stop::gp0());
        }
        let (low, _) = self.read_descriptor(mem, sel)?;
        let seg = Segment::from_descriptor(sel, low, None);
        if seg.access & access::S == 0 {
            // Call gate, task gate or TSS: not modelled.
            return Err(self.unimplemented(mem, d));
        }
        let cpl = self.cpl();
        if seg.access & access::CODE == 0 {
            return Err(Stop::gp(sel as u32 & 0xfffc));
        }
        let conforming = seg.access & access::DC != 0;
        if (conforming && seg.dpl() > cpl)
            || (!conforming && ((sel & 3) as u8 > cpl || seg.dpl() != cpl))
        {
            return Err(Stop::gp(sel as u32 & 0xfffc));
        }
        if seg.access & access::P == 0 {
            return Err(Stop::fault(vector::NP, Some(sel as u32 & 0xfffc)));
        }
        Ok(Segment {
            selector: (sel & !3) | cpl as u16,
            ..seg
        })
    }

    fn commit_far(&mut self, cs: Segment, off: u64) -> Step<Flow> {
        let old = self.seg[SegReg::Cs as usize];
        self.seg[SegReg::Cs as usize] = cs;
        self.update_bitness();
        let r = self.branch_to(if self.bitness == 64 {
            off
        } else {
            off & 0xffff_ffff
        });
        if r.is_err() {
            self.seg[SegReg::Cs as usize] = old;
            self.update_bitness();
        }
        r
    }

    fn far_jump(&mut self, mem: &PhysMap, d: &Decoded, sel: u16, off: u64) -> Step<Flow> {
        let cs = self.far_code_segment(mem, d, sel)?;
        self.commit_far(cs, off)
    }

    pub(crate) fn call(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let ret = self.wrap_ip(d.ins.next_ip());
        let size = d.ins.stack_pointer_increment().unsigned_abs() as u8;
        match d.ins.op0_kind() {
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                let t = d.ins.near_branch_target();
                self.call_near(mem, size, ret, t)
            }
            OpKind::FarBranch16 | OpKind::FarBranch32 => {
                let off = if d.ins.op0_kind() == OpKind::FarBranch16 {
                    d.ins.far_branch16() as u64
                } else {
                    d.ins.far_branch32() as u64
                };
                self.far_call(mem, d, d.ins.far_branch_selector(), off, size / 2)
            }
            OpKind::Memory if is_far_memory(d) => {
                let (sel, off) = self.far_pointer(mem, d)?;
                self.far_call(mem, d, sel, off, size / 2)
            }
            _ => {
                let t = self.indirect_target(mem, d)?;
                self.call_near(mem, size, ret, t)
            }
        }
    }

    #[inline(always)]
    fn call_near(&mut self, mem: &PhysMap, size: u8, ret: u64, target: u64) -> Step<Flow> {
        // Check the target first: a bad target faults with nothing pushed.
        if self.bitness == 64 && !is_canonical(target, self.cr4 & cr4::LA57 != 0) {
            return Err(Stop::gp0());
        }
        self.push(mem, size, ret)?;
        let r = self.branch_to(target);
        if r.is_err() {
            let sp = self.sp_plus(size as i64);
            self.set_sp(sp);
        }
        r
    }

    fn far_call(&mut self, mem: &PhysMap, d: &Decoded, sel: u16, off: u64, size: u8) -> Step<Flow> {
        let cs = self.far_code_segment(mem, d, sel)?;
        let ret = self.wrap_ip(d.ins.next_ip());
        let old_cs = self.seg[SegReg::Cs as usize].selector as u64;
        let sp0 = self.gpr[4];
        let top = self.sp_plus(-(2 * size as i64));
        let lin = self.seg_linear(SegReg::Ss, top, 2 * size, true)?;
        self.probe_write(mem, lin, 2 * size as u64, false)?;
        self.push(mem, size, old_cs)?;
        self.push(mem, size, ret)?;
        let r = self.commit_far(cs, off);
        if r.is_err() {
            self.gpr[4] = sp0;
        }
        r
    }

    pub(crate) fn ret(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let size = match d.ins.code() {
            Code::Retnw | Code::Retnw_imm16 => 2,
            Code::Retnd | Code::Retnd_imm16 => 4,
            _ => 8,
        };
        let t = self.peek(mem, 0, size)?;
        let extra = if d.ins.op_count() == 1 {
            d.ins.immediate(0) & 0xffff
        } else {
            0
        };
        let target = if size == 8 { t } else { t & size_mask(size) };
        self.branch_to(target)?;
        let sp = self.sp_plus(size as i64 + extra as i64);
        self.set_sp(sp);
        Ok(Flow::Jumped)
    }

    /// RETF to the same or an outer privilege level (SDM Vol. 2B RET).
    pub(crate) fn retf(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let size: u8 = match d.ins.code() {
            Code::Retfw | Code::Retfw_imm16 => 2,
            Code::Retfd | Code::Retfd_imm16 => 4,
            _ => 8,
        };
        let extra = if d.ins.op_count() == 1 {
            d.ins.immediate(0) & 0xffff
        } else {
            0
        };
        let off = self.peek(mem, 0, size)?;
        let sel = self.peek(mem, size as i64, size)? as u16;
        let cpl = self.cpl();
        if sel & !3 == 0 || ((sel & 3) as u8) < cpl {
            return Err(Stop::gp(sel as u32 & 0xfffc));
        }
        let (low, _) = self.read_descriptor(mem, sel)?;
        let cs = Segment::from_descriptor(sel, low, None);
        self.check_return_cs(&cs, sel)?;
        let rpl = (sel & 3) as u8;
        if rpl == cpl {
            let old = self.seg[SegReg::Cs as usize];
            self.seg[SegReg::Cs as usize] = cs;
            self.update_bitness();
            if let Err(e) = self.branch_to(off) {
                self.seg[SegReg::Cs as usize] = old;
                self.update_bitness();
                return Err(e);
            }
            let sp = self.sp_plus(2 * size as i64 + extra as i64);
            self.set_sp(sp);
            return Ok(Flow::Jumped);
        }
        let new_sp = self.peek(mem, 2 * size as i64 + extra as i64, size)?;
        let ss_sel = self.peek(mem, 3 * size as i64 + extra as i64, size)? as u16;
        let ss = self.return_ss(mem, ss_sel, rpl, &cs)?;
        self.finish_outer_return(cs, ss, off, new_sp, size)
    }

    /// The checks on a CS popped by RETF/IRET (SDM Vol. 2B IRET, RET).
    fn check_return_cs(&self, cs: &Segment, sel: u16) -> Step {
        let rpl = (sel & 3) as u8;
        if cs.access & access::S == 0 || cs.access & access::CODE == 0 {
            return Err(Stop::gp(sel as u32 & 0xfffc));
        }
        let conforming = cs.access & access::DC != 0;
        if (conforming && cs.dpl() > rpl) || (!conforming && cs.dpl() != rpl) {
            return Err(Stop::gp(sel as u32 & 0xfffc));
        }
        if cs.access & access::P == 0 {
            return Err(Stop::fault(vector::NP, Some(sel as u32 & 0xfffc)));
        }
        Ok(())
    }

    /// The SS popped when returning to privilege `rpl`.
    fn return_ss(&mut self, mem: &PhysMap, sel: u16, rpl: u8, cs: &Segment) -> Step<Segment> {
        if sel & !3 == 0 {
            // A null SS is allowed returning to 64-bit code at CPL < 3 (SDM Vol. 2A IRET).
            if self.long_mode_active() && cs.access & access::L != 0 && rpl != 3 {
                return Ok(Segment {
                    selector: sel,
                    ..Segment::UNUSABLE
                });
            }
            return Err(Stop::gp0());
        }
        let (low, _) = self.read_descriptor(mem, sel)?;
        let ss = Segment::from_descriptor(sel, low, None);
        if (sel & 3) as u8 != rpl
            || ss.dpl() != rpl
            || ss.access & access::S == 0
            || ss.access & access::CODE != 0
            || ss.access & access::RW == 0
        {
            return Err(Stop::gp(sel as u32 & 0xfffc));
        }
        if ss.access & access::P == 0 {
            return Err(Stop::ss(sel as u32 & 0xfffc));
        }
        Ok(ss)
    }

    /// Commits a return that loads CS, SS, RIP and RSP (RETF/IRET to an outer level,
    /// or any IRET in 64-bit mode), then nulls data segments the new CPL may not use.
    fn finish_outer_return(
        &mut self,
        cs: Segment,
        ss: Segment,
        rip: u64,
        rsp: u64,
        _size: u8,
    ) -> Step<Flow> {
        let old_cs = self.seg[SegReg::Cs as usize];
        let old_cpl = self.cpl();
        self.seg[SegReg::Cs as usize] = cs;
        self.update_bitness();
        if let Err(e) = self.branch_to(rip) {
            self.seg[SegReg::Cs as usize] = old_cs;
            self.update_bitness();
            return Err(e);
        }
        self.seg[SegReg::Ss as usize] = Segment {
            access: (ss.access & !access::DPL) | ((cs.selector as u32 & 3) << access::DPL_SHIFT),
            ..ss
        };
        // RSP is loaded whole in 64-bit mode, else per SS.B.
        if self.bitness == 64 {
            self.gpr[4] = rsp;
        } else {
            self.set_sp(rsp);
        }
        let new_cpl = self.cpl();
        if new_cpl != old_cpl {
            for s in [SegReg::Es, SegReg::Ds, SegReg::Fs, SegReg::Gs] {
                let seg = &mut self.seg[s as usize];
                let conforming_code =
                    seg.access & access::CODE != 0 && seg.access & access::DC != 0;
                if seg.usable() && !conforming_code && seg.dpl() < new_cpl {
                    // SDM Vol. 2A IRET: the selector is nulled (in 64-bit mode the
                    // base of FS/GS is kept).
                    seg.selector = 0;
                    seg.access |= access::UNUSABLE;
                }
            }
            // RFLAGS (and so AC) was loaded by the caller, which handled it.
            self.cpl_changed(self.rflags);
        }
        Ok(Flow::Jumped)
    }

    pub(crate) fn loop_op(&mut self, d: &Decoded) -> Step<Flow> {
        let am = size_mask(d.addr_size);
        let taken = match d.mnemonic {
            Mnemonic::Jcxz | Mnemonic::Jecxz | Mnemonic::Jrcxz => self.gpr[1] & am == 0,
            m => {
                let cx = self.gpr[1].wrapping_sub(1) & am;
                self.set_gpr_sized(1, d.addr_size, cx);
                let zf = self.rflags & rflags::ZF != 0;
                cx != 0
                    && match m {
                        Mnemonic::Loope => zf,
                        Mnemonic::Loopne => !zf,
                        _ => true,
                    }
            }
        };
        if taken {
            self.branch_to(d.ins.near_branch_target())
        } else {
            Ok(Flow::Next)
        }
    }

    /// INT n, INT3, INTO, INT1: delivered through the IDT with RIP = the next
    /// instruction (SDM 6.12; VT-x event types 4, 6, 5).
    pub(crate) fn soft_int(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let next = self.wrap_ip(d.ins.next_ip());
        let (vec, ty) = match d.mnemonic {
            Mnemonic::Int => (d.ins.immediate(0) as u8, event_type::SOFTWARE_INTERRUPT),
            Mnemonic::Int3 => (vector::BP, event_type::SOFTWARE_EXCEPTION),
            Mnemonic::Int1 => (vector::DB, event_type::PRIVILEGED_SOFTWARE_EXCEPTION),
            _ => {
                if self.bitness == 64 {
                    return Err(Stop::ud());
                }
                if self.rflags & rflags::OF == 0 {
                    return Ok(Flow::Next);
                }
                (vector::OF, event_type::SOFTWARE_EXCEPTION)
            }
        };
        let ev = Event {
            vector: vec,
            ty,
            error_code: None,
            cr2: None,
            return_rip: next,
            instruction_len: d.ins.len() as u8,
        };
        match self.deliver(mem, ev, true) {
            Ok(()) => Ok(Flow::Jumped),
            Err(exit) => {
                self.exit = exit;
                Err(Stop::Exit)
            }
        }
    }

    /// IRET (SDM Vol. 2A IRET): protected-mode return to the same or an outer level;
    /// in IA-32e mode SS:RSP are always popped. Task returns (NT = 1) and returns to
    /// virtual-8086 mode are an unimplemented exit.
    pub(crate) fn iret(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let size: u8 = match d.mnemonic {
            Mnemonic::Iretq => 8,
            Mnemonic::Iretd => 4,
            _ => 2,
        };
        if self.rflags & rflags::NT != 0 {
            // A nested-task return: #GP(0) in IA-32e mode, a task switch otherwise
            // (not modelled).
            if self.long_mode_active() {
                return Err(Stop::gp0());
            }
            return Err(self.unimplemented(mem, d));
        }
        let ip = self.peek(mem, 0, size)?;
        let sel = self.peek(mem, size as i64, size)? as u16;
        let fl = self.peek(mem, 2 * size as i64, size)?;
        if fl & rflags::VM != 0 && self.cpl() == 0 && !self.long_mode_active() {
            return Err(self.unimplemented(mem, d));
        }
        let cpl = self.cpl();
        if sel & !3 == 0 {
            return Err(Stop::gp0());
        }
        if ((sel & 3) as u8) < cpl {
            return Err(Stop::gp(sel as u32 & 0xfffc));
        }
        let (low, _) = self.read_descriptor(mem, sel)?;
        let cs = Segment::from_descriptor(sel, low, None);
        self.check_return_cs(&cs, sel)?;
        let rpl = (sel & 3) as u8;
        let old_flags = self.rflags;
        if self.long_mode_active() || rpl != cpl {
            let sp = self.peek(mem, 3 * size as i64, size)?;
            let ss_sel = self.peek(mem, 4 * size as i64, size)? as u16;
            let ss = self.return_ss(mem, ss_sel, rpl, &cs)?;
            self.load_rflags_iret(fl, size, cpl);
            if let Err(e) = self.finish_outer_return(cs, ss, ip, sp, size) {
                self.rflags = old_flags;
                return Err(e);
            }
        } else {
            let old_cs = self.seg[SegReg::Cs as usize];
            self.seg[SegReg::Cs as usize] = cs;
            self.update_bitness();
            if let Err(e) = self.branch_to(ip & size_mask(size)) {
                self.seg[SegReg::Cs as usize] = old_cs;
                self.update_bitness();
                return Err(e);
            }
            self.load_rflags_iret(fl, size, cpl);
            let sp = self.sp_plus(3 * size as i64);
            self.set_sp(sp);
        }
        Ok(Flow::Jumped)
    }

    /// RFLAGS from an IRET frame, with the privilege rules of the *old* CPL.
    fn load_rflags_iret(&mut self, v: u64, size: u8, cpl: u8) {
        let iopl = (self.rflags & rflags::IOPL) >> 12;
        let mut mask = rflags::STATUS | rflags::TF | rflags::DF | rflags::NT | rflags::RF;
        if size >= 4 {
            mask |= rflags::AC | rflags::ID;
            if cpl == 0 {
                mask |= rflags::VIF | rflags::VIP;
            }
        }
        if cpl == 0 {
            mask |= rflags::IOPL;
        }
        if cpl as u64 <= iopl {
            mask |= rflags::IF;
        }
        let before = self.rflags;
        self.rflags = (self.rflags & !mask) | (v & mask) | rflags::FIXED1;
        if (before ^ self.rflags) & rflags::AC != 0 {
            self.paging_changed();
        }
    }

    /// SYSCALL (SDM Vol. 2B): 64-bit mode only on Intel, EFER.SCE required.
    pub(crate) fn syscall(&mut self) -> Step<Flow> {
        if self.bitness != 64 || self.efer & efer::SCE == 0 {
            return Err(Stop::ud());
        }
        let before = self.rflags;
        let next = self.rip.wrapping_add(self.cur_len as u64);
        self.gpr[1] = next;
        self.gpr[11] = self.rflags & !rflags::RF;
        let sel = ((self.msr.star >> 32) & 0xfffc) as u16;
        self.seg[SegReg::Cs as usize] = Segment::flat(sel, true, 0, true);
        self.seg[SegReg::Ss as usize] = Segment::flat(sel + 8, false, 0, false);
        self.rflags = (self.rflags & !(self.msr.sfmask | rflags::RF)) | rflags::FIXED1;
        self.rip = self.msr.lstar;
        self.update_bitness();
        self.cpl_changed(before);
        Ok(Flow::Jumped)
    }

    /// SYSRET (SDM Vol. 2B): back to CPL 3, 64-bit (REX.W) or compatibility mode.
    pub(crate) fn sysret(&mut self, d: &Decoded) -> Step<Flow> {
        if self.bitness != 64 || self.efer & efer::SCE == 0 {
            return Err(Stop::ud());
        }
        self.require_cpl0()?;
        let base = ((self.msr.star >> 48) & 0xffff) as u16;
        let to64 = d.mnemonic == Mnemonic::Sysretq;
        let target = if to64 {
            self.gpr[1]
        } else {
            self.gpr[1] & 0xffff_ffff
        };
        if to64 && !is_canonical(target, self.cr4 & cr4::LA57 != 0) {
            return Err(Stop::gp0());
        }
        let cs_sel = if to64 { base.wrapping_add(16) } else { base } | 3;
        let mut cs = Segment::flat(cs_sel, true, 3, to64);
        if !to64 {
            cs.access |= access::DB;
        }
        self.seg[SegReg::Cs as usize] = cs;
        self.seg[SegReg::Ss as usize] = Segment::flat(base.wrapping_add(8) | 3, false, 3, false);
        let before = self.rflags;
        self.rflags = (self.gpr[11] & 0x3c_7fd7) | rflags::FIXED1;
        self.rip = target;
        self.update_bitness();
        self.cpl_changed(before);
        Ok(Flow::Jumped)
    }
}

impl Vcpu {
    /// SYSENTER (SDM Vol. 2B): CPL 0 flat segments from IA32_SYSENTER_CS, RSP/RIP
    /// from the SYSENTER MSRs; 64-bit code when IA-32e mode is active.
    pub(crate) fn sysenter(&mut self) -> Step<Flow> {
        let cs_sel = (self.msr.sysenter_cs & 0xfffc) as u16;
        if cs_sel == 0 {
            return Err(Stop::gp0());
        }
        let long = self.long_mode_active();
        self.rflags &= !(rflags::VM | rflags::IF | rflags::RF);
        self.seg[SegReg::Cs as usize] = Segment::flat(cs_sel, true, 0, long);
        self.seg[SegReg::Ss as usize] = Segment::flat(cs_sel + 8, false, 0, false);
        self.update_bitness();
        self.cpl_changed(self.rflags);
        self.rip = if long {
            self.msr.sysenter_eip
        } else {
            self.msr.sysenter_eip & 0xffff_ffff
        };
        self.gpr[4] = if long {
            self.msr.sysenter_esp
        } else {
            self.msr.sysenter_esp & 0xffff_ffff
        };
        Ok(Flow::Jumped)
    }

    /// SYSEXIT (SDM Vol. 2B): back to CPL 3 at RDX/RCX (REX.W: 64-bit code).
    pub(crate) fn sysexit(&mut self, d: &Decoded) -> Step<Flow> {
        let base = (self.msr.sysenter_cs & 0xfffc) as u16;
        if base == 0 || self.cr0 & crate::vcpu::cr0::PE == 0 {
            return Err(Stop::gp0());
        }
        self.require_cpl0()?;
        let to64 = d.mnemonic == Mnemonic::Sysexitq;
        if to64 && (!is_canonical(self.gpr[2], false) || !is_canonical(self.gpr[1], false)) {
            return Err(Stop::gp0());
        }
        let (cs_sel, ss_sel) = if to64 {
            (base + 32, base + 40)
        } else {
            (base + 16, base + 24)
        };
        let mut cs = Segment::flat(cs_sel | 3, true, 3, to64);
        if !to64 {
            cs.access |= access::DB;
        }
        self.seg[SegReg::Cs as usize] = cs;
        self.seg[SegReg::Ss as usize] = Segment::flat(ss_sel | 3, false, 3, false);
        let mask = if to64 { u64::MAX } else { 0xffff_ffff };
        self.rip = self.gpr[2] & mask;
        self.gpr[4] = self.gpr[1] & mask;
        self.update_bitness();
        self.cpl_changed(self.rflags);
        Ok(Flow::Jumped)
    }
}

/// Whether a JMP/CALL memory operand is a far pointer (m16:16/32/64).
fn is_far_memory(d: &Decoded) -> bool {
    matches!(
        d.ins.code(),
        Code::Jmp_m1616
            | Code::Jmp_m1632
            | Code::Jmp_m1664
            | Code::Call_m1616
            | Code::Call_m1632
            | Code::Call_m1664
    )
}
