//! Data movement: MOV and its extending forms, LEA, XCHG, CMOVcc/SETcc, the stack
//! (PUSH/POP/PUSHF/POPF/ENTER/LEAVE), and the string instructions with REP prefixes.

use iced_x86::{Mnemonic, OpKind, Register};
use physmem::PhysMap;

use super::{seg_of, Flow, Loc};
use crate::decode::{Decoded, OpClass};
use crate::flags::{alu, AluOp};
use crate::regs::{rflags, sign_extend, size_mask, SegReg};
use crate::vcpu::{Step, Vcpu};

impl Vcpu {
    #[inline(always)]
    pub(crate) fn mov(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let size = d.size;
        match (d.kind[0], d.kind[1]) {
            (OpClass::Gpr, OpClass::Gpr | OpClass::Imm | OpClass::Mem) => {
                let v = self.read_src(mem, d, 1, size)?;
                self.slot_set(d.slot[0], v);
            }
            (OpClass::Mem, OpClass::Gpr | OpClass::Imm) => {
                let v = self.read_src(mem, d, 1, size)?;
                let lin = self.mem_linear(d, size, true)?;
                self.write_linear(mem, lin, size, v)?;
            }
            _ => return self.mov_special(mem, d),
        }
        Ok(Flow::Next)
    }

    /// MOV with a control, debug or segment register.
    #[inline(never)]
    fn mov_special(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let ins = &d.ins;
        if ins.op0_kind() == OpKind::Register {
            let r0 = ins.op_register(0);
            if r0.is_cr() || r0.is_dr() {
                return self.mov_to_cr_dr(mem, d);
            }
            if r0.is_segment_register() {
                return self.mov_to_sreg(mem, d);
            }
        }
        if ins.op1_kind() == OpKind::Register {
            let r1 = ins.op_register(1);
            if r1.is_cr() || r1.is_dr() {
                return self.mov_from_cr_dr(d);
            }
            if r1.is_segment_register() {
                return self.mov_from_sreg(mem, d);
            }
        }
        Err(self.unimplemented(mem, d))
    }

    pub(crate) fn movzx(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let ssize = self.op_size(d, 1);
        let v = self.src(mem, d, 1, ssize)?;
        self.set_reg(d.ins.op_register(0), v);
        Ok(Flow::Next)
    }

    pub(crate) fn movsx(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let ssize = self.op_size(d, 1);
        let v = self.src(mem, d, 1, ssize)?;
        self.set_reg(d.ins.op_register(0), sign_extend(v, ssize));
        Ok(Flow::Next)
    }

    pub(crate) fn movbe(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let size = self.op_size(d, 0).max(self.op_size(d, 1));
        let v = self.src(mem, d, 1, size)?;
        let swapped = match size {
            2 => (v as u16).swap_bytes() as u64,
            4 => (v as u32).swap_bytes() as u64,
            _ => v.swap_bytes(),
        };
        let dst = self.loc(d, 0, size, true)?;
        self.put(mem, dst, size, swapped)?;
        Ok(Flow::Next)
    }

    pub(crate) fn lea(&mut self, d: &Decoded) -> Step<Flow> {
        let ea = self.ea(d);
        self.set_reg(d.ins.op_register(0), ea);
        Ok(Flow::Next)
    }

    pub(crate) fn xchg(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let size = self.op_size(d, 0).max(self.op_size(d, 1));
        let a = self.loc(d, 0, size, true)?;
        let b = self.loc(d, 1, size, true)?;
        let va = self.get(mem, a, size)?;
        let vb = self.get(mem, b, size)?;
        // Memory first: a fault must leave the register untouched.
        match (a, b) {
            (Loc::Mem(_), _) => {
                self.put(mem, a, size, vb)?;
                self.put(mem, b, size, va)?;
            }
            _ => {
                self.put(mem, b, size, va)?;
                self.put(mem, a, size, vb)?;
            }
        }
        Ok(Flow::Next)
    }

    pub(crate) fn cmov(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let size = self.op_size(d, 0);
        // The source is read (and may fault) whatever the condition.
        let v = self.src(mem, d, 1, size)?;
        let r = d.ins.op_register(0);
        if self.cond(d.ins.condition_code()) {
            self.set_reg(r, v);
        } else if size == 4 {
            // A 32-bit CMOV zero-extends even when the condition is false.
            let cur = self.reg(r);
            self.set_reg(r, cur);
        }
        Ok(Flow::Next)
    }

    pub(crate) fn setcc(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let v = self.cond(d.ins.condition_code()) as u64;
        let dst = self.loc(d, 0, 1, true)?;
        self.put(mem, dst, 1, v)?;
        Ok(Flow::Next)
    }

    pub(crate) fn nop(&mut self, d: &Decoded) -> Step<Flow> {
        if d.mnemonic == Mnemonic::Pause && self.controls.pause_exiting {
            return Err(self.instruction_exit(crate::exit::ExitReason::Pause, 0));
        }
        Ok(Flow::Next)
    }

    /// Bytes moved by a push/pop of this instruction (from iced's stack info).
    #[inline(always)]
    fn stack_op_size(&self, d: &Decoded) -> u8 {
        d.ins.stack_pointer_increment().unsigned_abs() as u8
    }

    pub(crate) fn push_op(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let size = self.stack_op_size(d);
        let v = match d.ins.op0_kind() {
            OpKind::Register => {
                let r = d.ins.op_register(0);
                if r.is_segment_register() {
                    self.seg[seg_of(r) as usize].selector as u64
                } else {
                    self.reg(r)
                }
            }
            OpKind::Memory => {
                let lin = self.mem_linear(d, size, false)?;
                self.read_linear(mem, lin, size)?
            }
            _ => d.ins.immediate(0),
        };
        self.push(mem, size, v)?;
        Ok(Flow::Next)
    }

    pub(crate) fn pop_op(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let size = self.stack_op_size(d);
        let v = self.peek(mem, 0, size)?;
        match d.ins.op0_kind() {
            OpKind::Register => {
                let r = d.ins.op_register(0);
                if r.is_segment_register() {
                    self.load_segment(mem, seg_of(r), v as u16)?;
                    let sp = self.sp_plus(size as i64);
                    self.set_sp(sp);
                    if r == Register::SS {
                        self.interruptibility |= crate::vcpu::interruptibility::MOV_SS;
                    }
                    return Ok(Flow::Next);
                }
                let sp = self.sp_plus(size as i64);
                self.set_sp(sp);
                // POP rSP loads the popped value, not the incremented pointer.
                self.set_reg(r, v);
            }
            _ => {
                // POP m: the address is computed with the incremented rSP (SDM Vol. 2B POP).
                let old = self.gpr[4];
                let sp = self.sp_plus(size as i64);
                self.set_sp(sp);
                let r = self
                    .mem_linear(d, size, true)
                    .and_then(|lin| self.write_linear(mem, lin, size, v));
                if let Err(e) = r {
                    self.gpr[4] = old;
                    return Err(e);
                }
            }
        }
        Ok(Flow::Next)
    }

    /// PUSHF: RF and VM read as 0 (SDM Vol. 2B PUSHF).
    pub(crate) fn pushf(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let size = self.stack_op_size(d);
        let v = self.rflags & !(rflags::RF | rflags::VM);
        self.push(mem, size, v)?;
        Ok(Flow::Next)
    }

    /// POPF: which bits change depends on CPL and IOPL (SDM Vol. 2B POPF).
    pub(crate) fn popf(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let size = self.stack_op_size(d);
        let v = self.pop(mem, size)?;
        self.load_rflags(v, size);
        Ok(Flow::Next)
    }

    /// Loads RFLAGS from POPF/IRET-style sources in protected mode.
    pub(crate) fn load_rflags(&mut self, v: u64, size: u8) {
        let cpl = self.cpl() as u64;
        let iopl = (self.rflags & rflags::IOPL) >> 12;
        let mut mask = rflags::STATUS | rflags::TF | rflags::DF | rflags::NT;
        if size >= 4 {
            mask |= rflags::AC | rflags::ID;
        }
        if cpl == 0 {
            mask |= rflags::IOPL;
        }
        if cpl <= iopl {
            mask |= rflags::IF;
        }
        let before = self.rflags;
        self.rflags = (self.rflags & !mask) | (v & mask) | rflags::FIXED1;
        if (before ^ self.rflags) & rflags::AC != 0 {
            self.paging_changed();
        }
    }

    /// LEAVE: rSP = rBP; pop rBP.
    pub(crate) fn leave(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let size = match d.ins.code() {
            iced_x86::Code::Leavew => 2,
            iced_x86::Code::Leaved => 4,
            _ => 8,
        };
        let ssz = self.stack_addr_size();
        let bp = self.gpr[5] & size_mask(ssz);
        let lin = self.seg_linear(SegReg::Ss, bp, size, false)?;
        let v = self.read_linear(mem, lin, size)?;
        self.set_sp(bp.wrapping_add(size as u64) & size_mask(ssz));
        self.set_gpr_sized(5, size, v);
        Ok(Flow::Next)
    }

    /// ENTER with nesting level 0 or 1 (deeper levels are an unimplemented exit).
    pub(crate) fn enter(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let alloc = d.ins.immediate(0) & 0xffff;
        let level = d.ins.immediate(1) & 0x1f;
        if level > 1 {
            return Err(self.unimplemented(mem, d));
        }
        let size = match d.ins.code() {
            iced_x86::Code::Enterw_imm16_imm8 => 2,
            iced_x86::Code::Enterd_imm16_imm8 => 4,
            _ => 8,
        };
        let old = self.gpr[4];
        let bp = self.gpr[5];
        let r = (|| {
            self.push(mem, size, bp)?;
            let frame = self.sp_plus(0);
            if level == 1 {
                self.push(mem, size, frame)?;
            }
            let sp = self.sp_plus(-(alloc as i64));
            self.seg_linear(SegReg::Ss, sp, 1, true)?;
            Ok((frame, sp))
        })();
        match r {
            Ok((frame, sp)) => {
                self.set_gpr_sized(5, size, frame);
                self.set_sp(sp);
                Ok(Flow::Next)
            }
            Err(e) => {
                self.gpr[4] = old;
                Err(e)
            }
        }
    }

    pub(crate) fn xlat(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let base = self.gpr[3] & size_mask(d.addr_size);
        let ea = base.wrapping_add(self.gpr[0] & 0xff) & size_mask(d.addr_size);
        let seg = seg_of(d.ins.memory_segment());
        let v = self.read_seg(mem, seg, ea, 1)?;
        self.set_gpr_sized(0, 1, v);
        Ok(Flow::Next)
    }

    /// MOVS/STOS/LODS/CMPS/SCAS with REP/REPE/REPNE (SDM Vol. 2B REP). Each iteration
    /// commits before the next, so a fault leaves rCX/rSI/rDI at the faulting
    /// element and RIP at the instruction, ready to resume.
    pub(crate) fn string_op(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let ins = &d.ins;
        // iced shares mnemonics between string MOVSD/CMPSD and the SSE forms.
        let kinds_ok = (0..ins.op_count()).all(|i| {
            matches!(
                ins.op_kind(i),
                OpKind::MemorySegSI
                    | OpKind::MemorySegESI
                    | OpKind::MemorySegRSI
                    | OpKind::MemoryESDI
                    | OpKind::MemoryESEDI
                    | OpKind::MemoryESRDI
                    | OpKind::Register
            )
        });
        if !kinds_ok {
            return Err(self.unimplemented(mem, d));
        }
        let size = match d.mnemonic {
            Mnemonic::Movsb
            | Mnemonic::Stosb
            | Mnemonic::Lodsb
            | Mnemonic::Cmpsb
            | Mnemonic::Scasb => 1u8,
            Mnemonic::Movsw
            | Mnemonic::Stosw
            | Mnemonic::Lodsw
            | Mnemonic::Cmpsw
            | Mnemonic::Scasw => 2,
            Mnemonic::Movsd
            | Mnemonic::Stosd
            | Mnemonic::Lodsd
            | Mnemonic::Cmpsd
            | Mnemonic::Scasd => 4,
            _ => 8,
        };
        let am = size_mask(d.addr_size);
        let rep = ins.has_rep_prefix() || ins.has_repne_prefix();
        let compare = matches!(
            d.mnemonic,
            Mnemonic::Cmpsb
                | Mnemonic::Cmpsw
                | Mnemonic::Cmpsd
                | Mnemonic::Cmpsq
                | Mnemonic::Scasb
                | Mnemonic::Scasw
                | Mnemonic::Scasd
                | Mnemonic::Scasq
        );
        let src_seg = seg_of(ins.memory_segment());
        let step = if self.rflags & rflags::DF != 0 {
            (size as u64).wrapping_neg()
        } else {
            size as u64
        };
        let mut budget = 4096u32;
        let bulk = rep
            && self.rflags & rflags::DF == 0
            && matches!(
                d.mnemonic,
                Mnemonic::Movsb
                    | Mnemonic::Movsw
                    | Mnemonic::Movsd
                    | Mnemonic::Movsq
                    | Mnemonic::Stosb
                    | Mnemonic::Stosw
                    | Mnemonic::Stosd
                    | Mnemonic::Stosq
            );
        loop {
            if rep && self.gpr[1] & am == 0 {
                return Ok(Flow::Next);
            }
            if bulk && self.rep_chunk(mem, d, size, src_seg)? {
                budget = budget.saturating_sub(64);
                if budget == 0 {
                    self.post_step |= crate::vcpu::post_step::PARTIAL;
                    return Ok(Flow::Jumped);
                }
                continue;
            }
            let si = self.gpr[6] & am;
            let di = self.gpr[7] & am;
            let mut flags = None;
            match d.mnemonic {
                Mnemonic::Movsb | Mnemonic::Movsw | Mnemonic::Movsd | Mnemonic::Movsq => {
                    let v = self.read_seg(mem, src_seg, si, size)?;
                    self.write_seg(mem, SegReg::Es, di, size, v)?;
                    self.set_gpr_sized(6, d.addr_size, si.wrapping_add(step));
                    self.set_gpr_sized(7, d.addr_size, di.wrapping_add(step));
                }
                Mnemonic::Stosb | Mnemonic::Stosw | Mnemonic::Stosd | Mnemonic::Stosq => {
                    self.write_seg(mem, SegReg::Es, di, size, self.gpr[0])?;
                    self.set_gpr_sized(7, d.addr_size, di.wrapping_add(step));
                }
                Mnemonic::Lodsb | Mnemonic::Lodsw | Mnemonic::Lodsd | Mnemonic::Lodsq => {
                    let v = self.read_seg(mem, src_seg, si, size)?;
                    self.set_gpr_sized(0, size, v);
                    self.set_gpr_sized(6, d.addr_size, si.wrapping_add(step));
                }
                Mnemonic::Cmpsb | Mnemonic::Cmpsw | Mnemonic::Cmpsd | Mnemonic::Cmpsq => {
                    let a = self.read_seg(mem, src_seg, si, size)?;
                    let b = self.read_seg(mem, SegReg::Es, di, size)?;
                    flags = Some(alu(AluOp::Sub, a, b, false, size).1);
                    self.set_gpr_sized(6, d.addr_size, si.wrapping_add(step));
                    self.set_gpr_sized(7, d.addr_size, di.wrapping_add(step));
                }
                _ => {
                    let b = self.read_seg(mem, SegReg::Es, di, size)?;
                    flags = Some(alu(AluOp::Sub, self.gpr[0], b, false, size).1);
                    self.set_gpr_sized(7, d.addr_size, di.wrapping_add(step));
                }
            }
            if let Some(f) = flags {
                self.set_status(f);
            }
            if !rep {
                return Ok(Flow::Next);
            }
            let cx = (self.gpr[1] & am).wrapping_sub(1) & am;
            self.set_gpr_sized(1, d.addr_size, cx);
            if compare {
                let zf = self.rflags & rflags::ZF != 0;
                if (ins.has_repe_prefix() && !zf) || (ins.has_repne_prefix() && zf) {
                    return Ok(Flow::Next);
                }
            }
            if cx == 0 {
                return Ok(Flow::Next);
            }
            budget -= 1;
            if budget == 0 {
                // Long REP strings yield to the run loop (an interruptible instruction,
                // SDM Vol. 2B REP): RIP stays, the next step resumes the iteration.
                self.post_step |= crate::vcpu::post_step::PARTIAL;
                return Ok(Flow::Jumped);
            }
        }
    }

    /// PUSHA/PUSHAD (not in 64-bit mode): AX, CX, DX, BX, the original SP, BP, SI, DI.
    pub(crate) fn pusha(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        if self.bitness == 64 {
            return Err(crate::vcpu::Stop::ud());
        }
        let size: u8 = if d.mnemonic == Mnemonic::Pushad { 4 } else { 2 };
        let old = self.gpr[4];
        let top = self.sp_plus(-(8 * size as i64));
        let lin = self.seg_linear(SegReg::Ss, top, 8 * size, true)?;
        self.probe_write(mem, lin, 8 * size as u64, false)?;
        for i in 0..8 {
            let v = if i == 4 { old } else { self.gpr[i] };
            self.push(mem, size, v & size_mask(size))?;
        }
        Ok(Flow::Next)
    }

    /// POPA/POPAD: the saved SP is skipped.
    pub(crate) fn popa(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        if self.bitness == 64 {
            return Err(crate::vcpu::Stop::ud());
        }
        let size: u8 = if d.mnemonic == Mnemonic::Popad { 4 } else { 2 };
        let mut vals = [0u64; 8];
        for (k, v) in vals.iter_mut().enumerate() {
            *v = self.peek(mem, (k as i64) * size as i64, size)?;
        }
        for (k, v) in vals.iter().enumerate() {
            let reg = 7 - k;
            if reg != 4 {
                self.set_gpr_sized(reg, size, *v);
            }
        }
        let sp = self.sp_plus(8 * size as i64);
        self.set_sp(sp);
        Ok(Flow::Next)
    }

    /// REP MOVS / REP STOS (forward) over the part of the string that lies in one
    /// source and one destination page: both translated once, then element by element
    /// through host pointers (the architectural order, so overlapping copies behave as
    /// on hardware). `Ok(false)` when the slow path must take the next element (a page-
    /// straddling element, a segment that is not flat, fewer than two elements).
    fn rep_chunk(&mut self, mem: &PhysMap, d: &Decoded, size: u8, src_seg: SegReg) -> Step<bool> {
        use crate::memory::{load, store};
        use crate::paging::AccessKind;
        let movs = matches!(
            d.mnemonic,
            Mnemonic::Movsb | Mnemonic::Movsw | Mnemonic::Movsd | Mnemonic::Movsq
        );
        let am = size_mask(d.addr_size);
        let flat = |s: &crate::regs::Segment| {
            s.base == 0 && s.limit == 0xffff_ffff && s.access & crate::regs::access::DC == 0
        };
        if self.bitness != 64
            && (!flat(&self.seg[SegReg::Es as usize])
                || (movs && !flat(&self.seg[src_seg as usize])))
        {
            return Ok(false);
        }
        let count = self.gpr[1] & am;
        let di = self.gpr[7] & am;
        let si = self.gpr[6] & am;
        let sz = size as u64;
        // Elements before the end of a page or the wrap of the address size.
        let room = |off: u64, lin: u64| ((0x1000 - (lin & 0xfff)) / sz).min((am - off) / sz + 1);
        let dst_lin = self.seg_linear(SegReg::Es, di, size, true)?;
        let mut chunk = count.min(room(di, dst_lin)).min(512);
        let src_lin = if movs {
            let l = self.seg_linear(src_seg, si, size, false)?;
            chunk = chunk.min(room(si, l));
            Some(l)
        } else {
            None
        };
        if chunk < 2 {
            return Ok(false);
        }
        // Source first: the fault the first element would report.
        let src = match src_lin {
            Some(l) => Some(self.host_addr(mem, l, AccessKind::Read)?.1),
            None => None,
        };
        let (dst_hpa, dst) = self.host_addr(mem, dst_lin, AccessKind::Write)?;
        self.dcache.note_write(dst_hpa);
        let value = self.gpr[0];
        for i in 0..chunk as usize {
            let off = i * size as usize;
            // SAFETY: every element lies inside the translated source and destination
            // pages (chunk is bounded by the room left in both).
            unsafe {
                let v = match src {
                    Some(p) => load((p + off) as *const u8, size),
                    None => value,
                };
                store((dst + off) as *mut u8, size, v);
            }
        }
        let bytes = chunk * sz;
        self.set_gpr_sized(7, d.addr_size, di.wrapping_add(bytes) & am);
        if movs {
            self.set_gpr_sized(6, d.addr_size, si.wrapping_add(bytes) & am);
        }
        self.set_gpr_sized(1, d.addr_size, count - chunk);
        Ok(true)
    }
}
