//! The data word of `CNode_Mint`/`CNode_Mutate` and of a TCB's CSpace root
//! (`seL4_CapData_t`, libsel4 `types_64.bf`), and the x86 I/O-port range word
//! (`io_port_capdata`, the kernel's x86_64 `structures.bf`). Only the low 32 bits count.

use crate::Word;

/// Badges are 28 bits wide in seL4 5.0.0.
pub const BADGE_BITS: u32 = 28;
/// A guard has at most 18 bits.
pub const GUARD_BITS_MAX: u32 = 18;

/// A badge for `CNode_Mint` of an endpoint or notification capability: tag bit 31 = 0,
/// badge in bits 27..0. Returns None for a badge that does not fit (the kernel would
/// silently keep only its low bits, which could alias another client's badge).
pub const fn badge(badge: Word) -> Option<Word> {
    if badge >> BADGE_BITS != 0 {
        return None;
    }
    Some(badge)
}

/// A guard for a CNode capability (tag bit 31 = 1, guard bits 25..8, guard size
/// 7..2): the CNode then resolves `guard_size` more bits of a CPtr, which must equal
/// `guard`. Returns None if the guard does not fit.
pub const fn guard(guard: Word, guard_size: u32) -> Option<Word> {
    // The size field has 6 bits; the guard 18, and it must fit in `guard_size` bits.
    if guard_size > 63 || guard >> GUARD_BITS_MAX != 0 || guard >> guard_size != 0 {
        return None;
    }
    Some(1 << 31 | guard << 8 | (guard_size as Word) << 2)
}

/// The data word that narrows an I/O-port capability to ports `first..=last` when
/// minted (seL4 5.0.0 has no IOPortControl: the root task's global I/O-port cap is
/// narrowed with `CNode_Mint`). Bits 31..16 first port, 15..0 last port.
pub const fn io_port_range(first: u16, last: u16) -> Word {
    (first as Word) << 16 | last as Word
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn badges_keep_tag_zero_and_reject_overflow() {
        assert_eq!(badge(0x0fff_ffff), Some(0x0fff_ffff));
        assert_eq!(badge(0x1000_0000), None);
    }

    #[test]
    fn guard_layout() {
        assert_eq!(guard(0, 48), Some(1 << 31 | 48 << 2));
        assert_eq!(guard(0b101, 3), Some(1 << 31 | 0b101 << 8 | 3 << 2));
        assert_eq!(guard(0b1000, 3), None, "guard wider than its size");
        assert_eq!(guard(1 << 18, 20), None, "guard wider than 18 bits");
    }

    #[test]
    fn io_port_range_layout() {
        assert_eq!(io_port_range(0xf4, 0xf7), 0x00f4_00f7);
    }
}
