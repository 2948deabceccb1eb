//! Segment-register loads from the GDT/LDT (SDM 3.4.3, 5.5-5.6; Vol. 2A MOV, POP,
//! LDS/LES/LFS/LGS/LSS).

use physmem::PhysMap;

use crate::regs::{access, SegReg, Segment};
use crate::vcpu::{vector, Step, Stop, Vcpu};

impl Vcpu {
    /// Reads the descriptor `sel` names: the low 8 bytes and the upper 8 bytes (for
    /// 16-byte system descriptors in IA-32e mode). #GP(selector) past the table limit.
    pub(crate) fn read_descriptor(&mut self, mem: &PhysMap, sel: u16) -> Step<(u64, u64)> {
        let (base, limit) = if sel & 4 != 0 {
            if !self.ldtr.usable() {
                return Err(Stop::gp(sel as u32 & 0xfffc));
            }
            (self.ldtr.base, self.ldtr.limit as u64)
        } else {
            (self.gdtr.base, self.gdtr.limit as u64)
        };
        let off = (sel & !7) as u64;
        if off + 7 > limit {
            return Err(Stop::gp(sel as u32 & 0xfffc));
        }
        let low = self.read_linear_implicit(mem, base.wrapping_add(off), 8)?;
        let high = if off + 15 <= limit && self.long_mode_active() && low & (1 << 44) == 0 {
            self.read_linear_implicit(mem, base.wrapping_add(off + 8), 8)?
        } else {
            0
        };
        Ok((low, high))
    }

    /// Sets the accessed bit of a code/data descriptor as the CPU does on a load.
    fn mark_accessed(&mut self, mem: &PhysMap, sel: u16, low: u64) -> Step {
        if low & (1 << 40) != 0 {
            return Ok(());
        }
        let base = if sel & 4 != 0 {
            self.ldtr.base
        } else {
            self.gdtr.base
        };
        let lin = base.wrapping_add((sel & !7) as u64 + 5);
        let b = self.read_linear_implicit(mem, lin, 1)?;
        self.write_linear_implicit(mem, lin, 1, b | 1)
    }

    /// Loads a data-segment register or SS with protected-mode checks (MOV Sreg,
    /// POP Sreg, LxS).
    pub(crate) fn load_segment(&mut self, mem: &PhysMap, seg: SegReg, sel: u16) -> Step {
        let cpl = self.cpl();
        let rpl = (sel & 3) as u8;
        let code = sel as u32 & 0xfffc;
        if seg == SegReg::Cs {
            return Err(Stop::ud());
        }
        if sel & !3 == 0 {
            if seg == SegReg::Ss {
                // A null SS is legal only in 64-bit mode at CPL < 3, with RPL = CPL.
                if self.bitness == 64 && cpl != 3 && rpl == cpl {
                    self.seg[SegReg::Ss as usize] = Segment {
                        selector: sel,
                        access: access::UNUSABLE | ((cpl as u32) << access::DPL_SHIFT),
                        ..Segment::UNUSABLE
                    };
                    return Ok(());
                }
                return Err(Stop::gp0());
            }
            let keep_base = if self.bitness == 64 {
                self.seg[seg as usize].base
            } else {
                0
            };
            self.seg[seg as usize] = Segment {
                selector: sel,
                base: keep_base,
                ..Segment::UNUSABLE
            };
            return Ok(());
        }
        let (low, _) = self.read_descriptor(mem, sel)?;
        let s = Segment::from_descriptor(sel, low, None);
        let is_code = s.access & access::CODE != 0;
        if s.access & access::S == 0 {
            return Err(Stop::gp(code));
        }
        if seg == SegReg::Ss {
            if rpl != cpl || s.dpl() != cpl || is_code || s.access & access::RW == 0 {
                return Err(Stop::gp(code));
            }
            if s.access & access::P == 0 {
                return Err(Stop::ss(code));
            }
        } else {
            if is_code && s.access & access::RW == 0 {
                return Err(Stop::gp(code));
            }
            let conforming = is_code && s.access & access::DC != 0;
            if !conforming && (rpl > s.dpl() || cpl > s.dpl()) {
                return Err(Stop::gp(code));
            }
            if s.access & access::P == 0 {
                return Err(Stop::fault(vector::NP, Some(code)));
            }
        }
        self.mark_accessed(mem, sel, low)?;
        self.seg[seg as usize] = Segment {
            access: s.access | access::ACCESSED,
            ..s
        };
        if seg == SegReg::Ss {
            self.update_bitness();
        }
        Ok(())
    }
}
