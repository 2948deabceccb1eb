//! Status-flag computation (SDM Vol. 1 3.4.3.1, Vol. 2 per-instruction "Flags Affected").
//! Flags are computed eagerly: a branch-free handful of ALU operations per instruction.
//! Where the SDM leaves a flag undefined we follow what Intel cores are documented or
//! commonly observed to do when that is free (AF cleared by logic ops), otherwise we
//! leave it unchanged; the differential tests compare defined flags only.

use crate::regs::rflags::{AF, CF, OF, PF, SF, ZF};
use crate::regs::{sign_bit, size_mask};

/// PF for every low byte: set when the number of set bits is even.
static PARITY: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if (i as u8).count_ones().is_multiple_of(2) {
            PF as u8
        } else {
            0
        };
        i += 1;
    }
    t
};

/// SF, ZF and PF of a `size`-byte result (already masked).
#[inline(always)]
pub(crate) fn szp(res: u64, size: u8) -> u64 {
    let mut f = PARITY[(res & 0xff) as usize] as u64;
    if res == 0 {
        f |= ZF;
    }
    if res & sign_bit(size) != 0 {
        f |= SF;
    }
    f
}

#[inline(always)]
fn msb(v: u64, size: u8) -> u64 {
    (v >> (size as u32 * 8 - 1)) & 1
}

/// Flags of `a + b + carry_in` = `res` (masked to `size`).
#[inline(always)]
pub(crate) fn add(a: u64, b: u64, res: u64, size: u8) -> u64 {
    // Carry out of the top bit: set where both inputs have it, or either has it and
    // the result does not (the carry was absorbed).
    let carry = msb((a & b) | ((a | b) & !res), size);
    let overflow = msb((a ^ res) & (b ^ res), size);
    szp(res, size) | (carry * CF) | (overflow * OF) | ((a ^ b ^ res) & AF)
}

/// Flags of `a - b - borrow_in` = `res` (masked to `size`).
#[inline(always)]
pub(crate) fn sub(a: u64, b: u64, res: u64, size: u8) -> u64 {
    let borrow = msb((!a & b) | ((!a | b) & res), size);
    let overflow = msb((a ^ b) & (a ^ res), size);
    szp(res, size) | (borrow * CF) | (overflow * OF) | ((a ^ b ^ res) & AF)
}

/// Flags of AND/OR/XOR/TEST: CF = OF = 0; AF undefined (cleared, as Intel does).
#[inline(always)]
pub(crate) fn logic(res: u64, size: u8) -> u64 {
    szp(res, size)
}

/// The arithmetic operations sharing the ADD/SUB flag logic.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum AluOp {
    Add,
    Adc,
    Sub,
    Sbb,
    And,
    Or,
    Xor,
}

/// Computes `a op b` for a `size`-byte operation with the current CF, returning the
/// masked result and the six status flags.
#[inline(always)]
pub(crate) fn alu(op: AluOp, a: u64, b: u64, cf_in: bool, size: u8) -> (u64, u64) {
    let m = size_mask(size);
    let (a, b) = (a & m, b & m);
    match op {
        AluOp::Add => {
            let r = a.wrapping_add(b) & m;
            (r, add(a, b, r, size))
        }
        AluOp::Adc => {
            let r = a.wrapping_add(b).wrapping_add(cf_in as u64) & m;
            (r, add(a, b, r, size))
        }
        AluOp::Sub => {
            let r = a.wrapping_sub(b) & m;
            (r, sub(a, b, r, size))
        }
        AluOp::Sbb => {
            let r = a.wrapping_sub(b).wrapping_sub(cf_in as u64) & m;
            (r, sub(a, b, r, size))
        }
        AluOp::And => {
            let r = a & b;
            (r, logic(r, size))
        }
        AluOp::Or => {
            let r = a | b;
            (r, logic(r, size))
        }
        AluOp::Xor => {
            let r = a ^ b;
            (r, logic(r, size))
        }
    }
}

/// Shift and rotate operations (SDM Vol. 2B SAL/SAR/SHL/SHR, RCL/RCR/ROL/ROR).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ShiftOp {
    Rol,
    Ror,
    Rcl,
    Rcr,
    Shl,
    Shr,
    Sar,
}

/// Computes a shift/rotate of the `size`-byte `a` by `count` (not yet masked).
/// Returns `None` when the masked count is 0 (no result write, flags untouched),
/// otherwise the result and the new flags word (`flags` with the affected bits replaced).
#[inline]
pub(crate) fn shift(op: ShiftOp, a: u64, count: u64, size: u8, flags: u64) -> Option<(u64, u64)> {
    let bits = size as u32 * 8;
    let count = (count & if size == 8 { 0x3f } else { 0x1f }) as u32;
    if count == 0 {
        return None;
    }
    let m = size_mask(size);
    let a = a & m;
    let cf_in = flags & CF != 0;
    let keep_rot = flags & !(CF | OF);
    match op {
        ShiftOp::Shl => {
            // count may exceed the width for 8/16-bit operands: everything shifted out.
            let wide = (a as u128) << count;
            let res = (wide as u64) & m;
            let cf = ((wide >> bits) & 1) as u64;
            let of = msb(res, size) ^ cf;
            let f = (flags & !crate::regs::rflags::STATUS) | szp(res, size) | (cf * CF) | (of * OF);
            Some((res, f))
        }
        ShiftOp::Shr => {
            let res = if count >= bits { 0 } else { a >> count };
            let cf = if count > bits {
                0
            } else {
                (a >> (count - 1)) & 1
            };
            let of = msb(a, size);
            let f = (flags & !crate::regs::rflags::STATUS) | szp(res, size) | (cf * CF) | (of * OF);
            Some((res, f))
        }
        ShiftOp::Sar => {
            let sa = crate::regs::sign_extend(a, size) as i64;
            let c = count.min(63);
            let res = ((sa >> c) as u64) & m;
            let cf = ((sa >> (c - 1).min(63)) & 1) as u64;
            let f = (flags & !crate::regs::rflags::STATUS) | szp(res, size) | (cf * CF);
            Some((res, f))
        }
        ShiftOp::Rol => {
            let c = count % bits;
            let res = if c == 0 {
                a
            } else {
                ((a << c) | (a >> (bits - c))) & m
            };
            let cf = res & 1;
            let of = msb(res, size) ^ cf;
            Some((res, keep_rot | (cf * CF) | (of * OF)))
        }
        ShiftOp::Ror => {
            let c = count % bits;
            let res = if c == 0 {
                a
            } else {
                ((a >> c) | (a << (bits - c))) & m
            };
            let cf = msb(res, size);
            let of = msb(res, size) ^ msb(res << 1, size);
            Some((res, keep_rot | (cf * CF) | (of * OF)))
        }
        ShiftOp::Rcl | ShiftOp::Rcr => {
            // Rotate through a (bits + 1)-bit value whose top bit is CF.
            let width = bits + 1;
            let c = if size <= 2 { count % width } else { count };
            if c == 0 {
                return Some((a, flags));
            }
            let v = (a as u128) | ((cf_in as u128) << bits);
            let wm = (1u128 << width) - 1;
            let rot = if op == ShiftOp::Rcl {
                ((v << c) | (v >> (width - c))) & wm
            } else {
                ((v >> c) | (v << (width - c))) & wm
            };
            let res = (rot as u64) & m;
            let cf = ((rot >> bits) & 1) as u64;
            let of = if op == ShiftOp::Rcl {
                msb(res, size) ^ cf
            } else {
                msb(res, size) ^ msb(res << 1, size)
            };
            Some((res, keep_rot | (cf * CF) | (of * OF)))
        }
    }
}

/// SHLD / SHRD (SDM Vol. 2B): shifts `dst` by `count`, filling from `src`.
/// `None` when the masked count is 0.
#[inline]
pub(crate) fn double_shift(
    left: bool,
    dst: u64,
    src: u64,
    count: u64,
    size: u8,
    flags: u64,
) -> Option<(u64, u64)> {
    let bits = size as u32 * 8;
    let count = (count & if size == 8 { 0x3f } else { 0x1f }) as u32;
    if count == 0 {
        return None;
    }
    let m = size_mask(size);
    let (d, s) = ((dst & m) as u128, (src & m) as u128);
    // For 16-bit operands a count above 16 is architecturally undefined; shifting the
    // 48-bit concatenation dst:src:dst reproduces what Intel hardware produces.
    let (res, cf) = if bits == 64 {
        // Counts are at most 63: the two-part value is enough.
        if left {
            let cat = (d << 64) | s;
            (
                ((cat << count) >> 64) as u64,
                ((cat >> (128 - count)) & 1) as u64,
            )
        } else {
            let cat = (s << 64) | d;
            ((cat >> count) as u64, ((cat >> (count - 1)) & 1) as u64)
        }
    } else {
        // dst:src:dst covers the 16-bit counts above 16 (architecturally undefined)
        // the way a wide shifter does; for counts up to the width it equals the
        // two-part value.
        let cat = (d << (2 * bits)) | (s << bits) | d;
        if left {
            let shifted = cat << count;
            (
                ((shifted >> (2 * bits)) as u64) & m,
                ((shifted >> (3 * bits)) & 1) as u64,
            )
        } else {
            (
                ((cat >> count) as u64) & m,
                ((cat >> (count - 1)) & 1) as u64,
            )
        }
    };
    let of = msb(res ^ (dst & m), size);
    let f = (flags & !crate::regs::rflags::STATUS) | szp(res, size) | (cf * CF) | (of * OF);
    Some((res, f))
}
