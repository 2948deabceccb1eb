//! Integer arithmetic, logic, shifts and rotates, multiply/divide, bit operations,
//! and the atomic read-modify-write forms (XADD, CMPXCHG): SDM Vol. 2 per instruction.
//! LOCK needs nothing extra: a vCPU runs on one host thread and performs each
//! read-modify-write without interleaving guest code.

use physmem::PhysMap;

use super::{Flow, Loc};
use crate::decode::Decoded;
use crate::decode::OpClass;
use crate::flags::{self, alu, AluOp, ShiftOp};
use crate::regs::{rflags, sign_bit, sign_extend, size_mask};
use crate::vcpu::{vector, Step, Stop, Vcpu};
use iced_x86::{Mnemonic, OpKind};

impl Vcpu {
    /// Two-operand ALU op; `store == false` for CMP/TEST.
    #[inline(always)]
    pub(crate) fn alu2(
        &mut self,
        mem: &PhysMap,
        d: &Decoded,
        op: AluOp,
        store: bool,
    ) -> Step<Flow> {
        let size = d.size;
        let b = self.read_src(mem, d, 1, size)?;
        let keep = self.rflags & !rflags::STATUS;
        if !store {
            let a = match d.kind[0] {
                OpClass::Gpr => self.slot_get(d.slot[0]),
                _ => {
                    let lin = self.mem_linear(d, size, false)?;
                    self.read_linear(mem, lin, size)?
                }
            };
            let (_, f) = alu(op, a, b, self.cf(), size);
            self.rflags = keep | f;
            return Ok(Flow::Next);
        }
        let cf = self.cf();
        match d.kind[0] {
            OpClass::Gpr => {
                let a = self.slot_get(d.slot[0]);
                let (r, f) = alu(op, a, b, cf, size);
                self.slot_set(d.slot[0], r);
                self.rflags = keep | f;
            }
            OpClass::Mem => {
                let lin = self.mem_linear(d, size, true)?;
                let a = self.read_linear(mem, lin, size)?;
                let (r, f) = alu(op, a, b, cf, size);
                self.write_linear(mem, lin, size, r)?;
                self.rflags = keep | f;
            }
            _ => return Err(self.unimplemented(mem, d)),
        }
        Ok(Flow::Next)
    }

    /// INC/DEC: like ADD/SUB 1 but CF is preserved.
    #[inline(always)]
    pub(crate) fn inc_dec(&mut self, mem: &PhysMap, d: &Decoded, dec: bool) -> Step<Flow> {
        let size = d.size;
        let keep = self.rflags & !(rflags::STATUS & !rflags::CF);
        let op = if dec { AluOp::Sub } else { AluOp::Add };
        match d.kind[0] {
            OpClass::Gpr => {
                let a = self.slot_get(d.slot[0]);
                let (r, f) = alu(op, a, 1, false, size);
                self.slot_set(d.slot[0], r);
                self.rflags = keep | (f & !rflags::CF);
            }
            OpClass::Mem => {
                let lin = self.mem_linear(d, size, true)?;
                let a = self.read_linear(mem, lin, size)?;
                let (r, f) = alu(op, a, 1, false, size);
                self.write_linear(mem, lin, size, r)?;
                self.rflags = keep | (f & !rflags::CF);
            }
            _ => return Err(self.unimplemented(mem, d)),
        }
        Ok(Flow::Next)
    }

    /// NEG: 0 - dst; CF = (dst != 0).
    pub(crate) fn neg(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let size = d.size;
        let keep = self.rflags & !rflags::STATUS;
        self.rmw0(mem, d, size, |_, a| {
            let (r, f) = alu(AluOp::Sub, 0, a, false, size);
            (Some(r), keep | f)
        })
    }

    pub(crate) fn not(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let size = d.size;
        let fl = self.rflags;
        self.rmw0(mem, d, size, |_, a| (Some(!a & size_mask(size)), fl))
    }

    /// Shifts and rotates by 1, CL or an immediate.
    #[inline(always)]
    pub(crate) fn shift(&mut self, mem: &PhysMap, d: &Decoded, op: ShiftOp) -> Step<Flow> {
        let size = d.size;
        let count = self.read_src(mem, d, 1, 1)?;
        let fl = self.rflags;
        self.rmw0(mem, d, size, |_, a| {
            match flags::shift(op, a, count, size, fl) {
                Some((r, f)) => (Some(r), f),
                // A zero count still writes a 32-bit register (zero-extending it); the
                // write of a memory operand is harmless.
                None => (Some(a), fl),
            }
        })
    }

    pub(crate) fn shxd(&mut self, mem: &PhysMap, d: &Decoded, left: bool) -> Step<Flow> {
        let size = self.op_size(d, 0);
        let dst = self.loc(d, 0, size, true)?;
        let src = self.src(mem, d, 1, size)?;
        let count = self.src(mem, d, 2, 1)?;
        let a = self.get(mem, dst, size)?;
        match flags::double_shift(left, a, src, count, size, self.rflags) {
            Some((r, f)) => {
                self.put(mem, dst, size, r)?;
                self.rflags = f;
            }
            // A zero count still writes a 32-bit register (zero-extending it).
            None => {
                if let (Loc::Reg(r), 4) = (dst, size) {
                    self.set_reg(r, a);
                }
            }
        }
        Ok(Flow::Next)
    }

    /// Writes the double-width product/accumulator pair: AX for bytes, else rDX:rAX.
    fn write_acc_pair(&mut self, size: u8, lo: u64, hi: u64) {
        if size == 1 {
            self.set_gpr_sized(0, 2, (lo & 0xff) | ((hi & 0xff) << 8));
        } else {
            self.set_gpr_sized(0, size, lo);
            self.set_gpr_sized(2, size, hi);
        }
    }

    /// MUL: unsigned rDX:rAX = rAX * src; CF = OF = (high half != 0).
    pub(crate) fn mul(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let size = self.op_size(d, 0);
        let b = self.src(mem, d, 0, size)? as u128;
        let a = (self.gpr[0] & size_mask(size)) as u128;
        let p = a * b;
        let bits = size as u32 * 8;
        let lo = (p as u64) & size_mask(size);
        let hi = ((p >> bits) as u64) & size_mask(size);
        self.write_acc_pair(size, lo, hi);
        let c = if hi != 0 { rflags::CF | rflags::OF } else { 0 };
        // SF/ZF/AF/PF are undefined; Intel computes SF/ZF/PF from the low half.
        self.set_status(c | flags::szp(lo, size));
        Ok(Flow::Next)
    }

    /// IMUL in its one-, two- and three-operand forms; CF = OF = the product does not
    /// fit the destination.
    pub(crate) fn imul(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let size = self.op_size(d, 0);
        let bits = size as u32 * 8;
        match d.ins.op_count() {
            1 => {
                let b = sign_extend(self.src(mem, d, 0, size)?, size) as i64 as i128;
                let a = sign_extend(self.gpr[0] & size_mask(size), size) as i64 as i128;
                let p = a * b;
                let lo = (p as u64) & size_mask(size);
                let hi = ((p >> bits) as u64) & size_mask(size);
                self.write_acc_pair(size, lo, hi);
                let fits = sign_extend(lo, size) as i64 as i128 == p;
                let c = if fits { 0 } else { rflags::CF | rflags::OF };
                self.set_status(c | flags::szp(lo, size));
            }
            n => {
                let (a, b) = if n == 2 {
                    (self.slot_get(d.slot[0]), self.read_src(mem, d, 1, size)?)
                } else {
                    (self.read_src(mem, d, 1, size)?, d.ins.immediate(2))
                };
                let p = sign_extend(a & size_mask(size), size) as i64 as i128
                    * sign_extend(b & size_mask(size), size) as i64 as i128;
                let lo = (p as u64) & size_mask(size);
                let fits = sign_extend(lo, size) as i64 as i128 == p;
                self.slot_set(d.slot[0], lo);
                let c = if fits { 0 } else { rflags::CF | rflags::OF };
                self.set_status(c | flags::szp(lo, size));
            }
        }
        Ok(Flow::Next)
    }

    /// DIV / IDIV: #DE on a zero divisor or a quotient that does not fit (SDM Vol. 2A
    /// DIV). Flags are undefined; they are left unchanged.
    pub(crate) fn div(&mut self, mem: &PhysMap, d: &Decoded, signed: bool) -> Step<Flow> {
        let size = self.op_size(d, 0);
        let bits = size as u32 * 8;
        let m = size_mask(size);
        let divisor = self.src(mem, d, 0, size)? & m;
        if divisor == 0 {
            return Err(Stop::fault(vector::DE, None));
        }
        let (lo, hi) = if size == 1 {
            (self.gpr[0] & 0xff, (self.gpr[0] >> 8) & 0xff)
        } else {
            (self.gpr[0] & m, self.gpr[2] & m)
        };
        let dividend = ((hi as u128) << bits) | lo as u128;
        let (q, r) = if signed {
            // Sign-extend the 2*bits-wide dividend.
            let sh = 128 - 2 * bits;
            let n = ((dividend << sh) as i128) >> sh;
            let dv = sign_extend(divisor, size) as i64 as i128;
            // i128::MIN / -1 (a 64-bit IDIV of 2^127 by -1) overflows i128 itself:
            // it is a quotient overflow, #DE.
            let (Some(q), Some(r)) = (n.checked_div(dv), n.checked_rem(dv)) else {
                return Err(Stop::fault(vector::DE, None));
            };
            let min = -(1i128 << (bits - 1));
            let max = (1i128 << (bits - 1)) - 1;
            if q < min || q > max {
                return Err(Stop::fault(vector::DE, None));
            }
            ((q as u64) & m, (r as u64) & m)
        } else {
            let q = dividend / divisor as u128;
            if q > m as u128 {
                return Err(Stop::fault(vector::DE, None));
            }
            (q as u64, (dividend % divisor as u128) as u64)
        };
        if size == 1 {
            self.set_gpr_sized(0, 2, q | (r << 8));
        } else {
            self.set_gpr_sized(0, size, q);
            self.set_gpr_sized(2, size, r);
        }
        Ok(Flow::Next)
    }

    /// BT/BTS/BTR/BTC (`kind` 0..3). A register bit offset with a memory operand
    /// addresses a bit string: the offset is signed and may leave the operand
    /// (SDM Vol. 2A BT).
    pub(crate) fn bit_test(&mut self, mem: &PhysMap, d: &Decoded, kind: u8) -> Step<Flow> {
        let size = self.op_size(d, 0);
        let bits = size as u64 * 8;
        let offset_is_reg = d.ins.op1_kind() == OpKind::Register;
        let raw = if offset_is_reg {
            self.reg(d.ins.op_register(1))
        } else {
            d.ins.immediate(1)
        };
        let (dst, bit) = if d.ins.op0_kind() == OpKind::Memory && offset_is_reg {
            let off = sign_extend(raw, size) as i64;
            let byte_off = (off >> (bits.trailing_zeros())) * size as i64;
            let ea = self.ea(d).wrapping_add(byte_off as u64) & size_mask(d.addr_size);
            let lin =
                self.seg_linear(super::seg_of(d.ins.memory_segment()), ea, size, kind != 0)?;
            (Loc::Mem(lin), (off as u64) & (bits - 1))
        } else {
            (self.loc(d, 0, size, kind != 0)?, raw & (bits - 1))
        };
        let v = self.get(mem, dst, size)?;
        let set = (v >> bit) & 1;
        let nv = match kind {
            1 => v | (1 << bit),
            2 => v & !(1 << bit),
            3 => v ^ (1 << bit),
            _ => v,
        };
        if kind != 0 {
            self.put(mem, dst, size, nv)?;
        }
        self.rflags = (self.rflags & !rflags::CF) | (set * rflags::CF);
        Ok(Flow::Next)
    }

    /// BSF / BSR: ZF = (src == 0) and the destination is then left unchanged.
    pub(crate) fn bit_scan(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let size = self.op_size(d, 0);
        let v = self.src(mem, d, 1, size)? & size_mask(size);
        if v == 0 {
            self.rflags |= rflags::ZF;
        } else {
            let r = if d.mnemonic == Mnemonic::Bsf {
                v.trailing_zeros() as u64
            } else {
                63 - v.leading_zeros() as u64
            };
            self.set_reg(d.ins.op_register(0), r);
            self.rflags &= !rflags::ZF;
        }
        Ok(Flow::Next)
    }

    /// TZCNT / LZCNT (CF = source is 0, ZF = result is 0) and POPCNT (ZF = source
    /// is 0, other flags cleared).
    pub(crate) fn bit_count(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let size = self.op_size(d, 0);
        let bits = size as u64 * 8;
        let v = self.src(mem, d, 1, size)? & size_mask(size);
        let (r, f) = match d.mnemonic {
            Mnemonic::Tzcnt => {
                let r = if v == 0 {
                    bits
                } else {
                    v.trailing_zeros() as u64
                };
                (
                    r,
                    ((v == 0) as u64 * rflags::CF) | ((r == 0) as u64 * rflags::ZF),
                )
            }
            Mnemonic::Lzcnt => {
                let r = if v == 0 {
                    bits
                } else {
                    v.leading_zeros() as u64 - (64 - bits)
                };
                (
                    r,
                    ((v == 0) as u64 * rflags::CF) | ((r == 0) as u64 * rflags::ZF),
                )
            }
            _ => (v.count_ones() as u64, (v == 0) as u64 * rflags::ZF),
        };
        self.set_reg(d.ins.op_register(0), r);
        let keep = if d.mnemonic == Mnemonic::Popcnt {
            !rflags::STATUS
        } else {
            !(rflags::CF | rflags::ZF)
        };
        self.rflags = (self.rflags & keep) | f;
        Ok(Flow::Next)
    }

    /// XADD: dst = dst + src, src = old dst.
    pub(crate) fn xadd(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let size = self.op_size(d, 0);
        let dst = self.loc(d, 0, size, true)?;
        let a = self.get(mem, dst, size)?;
        let b = self.reg(d.ins.op_register(1));
        let (r, f) = alu(AluOp::Add, a, b, false, size);
        self.put(mem, dst, size, r)?;
        self.set_reg(d.ins.op_register(1), a);
        if let Loc::Reg(rd) = dst {
            // xadd r, r: the destination gets the sum even when both name one register.
            self.set_reg(rd, r);
        }
        self.set_status(f);
        Ok(Flow::Next)
    }

    /// CMPXCHG: compares the accumulator with dst (flags of CMP acc, dst); equal: dst
    /// = src; else acc = dst. The destination is always written (SDM Vol. 2A).
    pub(crate) fn cmpxchg(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let size = self.op_size(d, 0);
        let dst = self.loc(d, 0, size, true)?;
        let cur = self.get(mem, dst, size)?;
        let acc = self.gpr[0] & size_mask(size);
        let (_, f) = alu(AluOp::Sub, acc, cur, false, size);
        if acc == cur {
            let src = self.reg(d.ins.op_register(1));
            self.put(mem, dst, size, src)?;
        } else {
            if let Loc::Mem(_) = dst {
                self.put(mem, dst, size, cur)?;
            }
            self.set_gpr_sized(0, size, cur);
        }
        self.set_status(f);
        Ok(Flow::Next)
    }

    /// CMPXCHG8B / CMPXCHG16B: compares rDX:rAX with m64/m128; equal: store rCX:rBX
    /// and ZF = 1; else load it into rDX:rAX and ZF = 0. CMPXCHG16B needs a 16-byte
    /// aligned operand (#GP(0)).
    pub(crate) fn cmpxchg_double(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        let half: u8 = if d.mnemonic == Mnemonic::Cmpxchg16b {
            8
        } else {
            4
        };
        let lin = self.mem_linear(d, half * 2, true)?;
        if half == 8 && lin & 15 != 0 {
            return Err(Stop::gp0());
        }
        let lo = self.read_linear(mem, lin, half)?;
        let hi = self.read_linear(mem, lin.wrapping_add(half as u64), half)?;
        let m = size_mask(half);
        let (ax, dx) = (self.gpr[0] & m, self.gpr[2] & m);
        if lo == ax && hi == dx {
            self.probe_write(mem, lin, half as u64 * 2, false)?;
            self.write_linear(mem, lin, half, self.gpr[3] & m)?;
            self.write_linear(mem, lin.wrapping_add(half as u64), half, self.gpr[1] & m)?;
            self.rflags |= rflags::ZF;
        } else {
            self.probe_write(mem, lin, half as u64 * 2, false)?;
            self.write_linear(mem, lin, half, lo)?;
            self.write_linear(mem, lin.wrapping_add(half as u64), half, hi)?;
            self.set_gpr_sized(0, half, lo);
            self.set_gpr_sized(2, half, hi);
            self.rflags &= !rflags::ZF;
        }
        Ok(Flow::Next)
    }

    pub(crate) fn bswap(&mut self, d: &Decoded) -> Step<Flow> {
        let r = d.ins.op_register(0);
        let size = crate::regs::REG_SLOTS[r as usize].size;
        let v = self.reg(r);
        // BSWAP of a 16-bit register is undefined; Intel and AMD produce 0.
        let out = match size {
            8 => v.swap_bytes(),
            4 => (v as u32).swap_bytes() as u64,
            _ => 0,
        };
        self.set_reg(r, out);
        Ok(Flow::Next)
    }

    /// CBW / CWDE / CDQE: sign-extend the low half of the accumulator.
    pub(crate) fn convert_acc(&mut self, d: &Decoded) -> Step<Flow> {
        let size = match d.mnemonic {
            Mnemonic::Cbw => 2,
            Mnemonic::Cwde => 4,
            _ => 8,
        };
        let v = sign_extend(self.gpr[0] & size_mask(size / 2), size / 2);
        self.set_gpr_sized(0, size, v);
        Ok(Flow::Next)
    }

    /// CWD / CDQ / CQO: rDX = sign of rAX.
    pub(crate) fn convert_dx(&mut self, d: &Decoded) -> Step<Flow> {
        let size = match d.mnemonic {
            Mnemonic::Cwd => 2,
            Mnemonic::Cdq => 4,
            _ => 8,
        };
        let neg = self.gpr[0] & sign_bit(size) != 0;
        self.set_gpr_sized(2, size, if neg { u64::MAX } else { 0 });
        Ok(Flow::Next)
    }

    pub(crate) fn flag_op(&mut self, bit: u64, value: Option<bool>) -> Step<Flow> {
        match value {
            Some(true) => self.rflags |= bit,
            Some(false) => self.rflags &= !bit,
            None => self.rflags ^= bit,
        }
        Ok(Flow::Next)
    }

    /// LAHF: AH = SF:ZF:0:AF:0:PF:1:CF.
    pub(crate) fn lahf(&mut self) -> Step<Flow> {
        let ah = (self.rflags & 0xd5) | 2;
        self.gpr[0] = (self.gpr[0] & !0xff00) | (ah << 8);
        Ok(Flow::Next)
    }

    pub(crate) fn sahf(&mut self) -> Step<Flow> {
        let ah = (self.gpr[0] >> 8) & 0xd5;
        self.rflags = (self.rflags & !0xd5) | ah;
        Ok(Flow::Next)
    }
}
