//! Architectural register state: general-purpose registers, RFLAGS bits, segment
//! registers with their hidden (descriptor-cache) parts, descriptor-table registers.

/// A general-purpose register, numbered as in the instruction encoding (and as in the
/// VT-x exit qualifications, SDM 28.2.1 Table 28-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Gpr {
    Rax = 0,
    Rcx = 1,
    Rdx = 2,
    Rbx = 3,
    Rsp = 4,
    Rbp = 5,
    Rsi = 6,
    Rdi = 7,
    R8 = 8,
    R9 = 9,
    R10 = 10,
    R11 = 11,
    R12 = 12,
    R13 = 13,
    R14 = 14,
    R15 = 15,
}

impl Gpr {
    pub const ALL: [Gpr; 16] = [
        Gpr::Rax,
        Gpr::Rcx,
        Gpr::Rdx,
        Gpr::Rbx,
        Gpr::Rsp,
        Gpr::Rbp,
        Gpr::Rsi,
        Gpr::Rdi,
        Gpr::R8,
        Gpr::R9,
        Gpr::R10,
        Gpr::R11,
        Gpr::R12,
        Gpr::R13,
        Gpr::R14,
        Gpr::R15,
    ];

    /// The register with encoding number `n` (0..=15).
    pub fn from_number(n: u8) -> Option<Gpr> {
        Gpr::ALL.get(n as usize).copied()
    }
}

/// RFLAGS bits (SDM Vol. 1 3.4.3).
pub mod rflags {
    pub const CF: u64 = 1 << 0;
    pub const FIXED1: u64 = 1 << 1;
    pub const PF: u64 = 1 << 2;
    pub const AF: u64 = 1 << 4;
    pub const ZF: u64 = 1 << 6;
    pub const SF: u64 = 1 << 7;
    pub const TF: u64 = 1 << 8;
    pub const IF: u64 = 1 << 9;
    pub const DF: u64 = 1 << 10;
    pub const OF: u64 = 1 << 11;
    pub const IOPL: u64 = 3 << 12;
    pub const NT: u64 = 1 << 14;
    pub const RF: u64 = 1 << 16;
    pub const VM: u64 = 1 << 17;
    pub const AC: u64 = 1 << 18;
    pub const VIF: u64 = 1 << 19;
    pub const VIP: u64 = 1 << 20;
    pub const ID: u64 = 1 << 21;
    /// The six status flags every arithmetic instruction writes.
    pub const STATUS: u64 = CF | PF | AF | ZF | SF | OF;
    /// Bits software can ever set (everything else reads as 0, bit 1 as 1).
    pub const WRITABLE: u64 = STATUS | TF | IF | DF | IOPL | NT | RF | VM | AC | VIF | VIP | ID;
}

/// A segment register, in the encoding order of the instruction set and the VMCS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SegReg {
    Es = 0,
    Cs = 1,
    Ss = 2,
    Ds = 3,
    Fs = 4,
    Gs = 5,
}

impl SegReg {
    pub const ALL: [SegReg; 6] = [
        SegReg::Es,
        SegReg::Cs,
        SegReg::Ss,
        SegReg::Ds,
        SegReg::Fs,
        SegReg::Gs,
    ];

    /// The segment register iced names (`Register::ES` ... `Register::GS`); DS for
    /// anything else, the default segment of a memory operand without an override.
    #[inline(always)]
    pub fn from_iced(r: iced_x86::Register) -> SegReg {
        use iced_x86::Register;
        match r {
            Register::ES => SegReg::Es,
            Register::CS => SegReg::Cs,
            Register::SS => SegReg::Ss,
            Register::FS => SegReg::Fs,
            Register::GS => SegReg::Gs,
            _ => SegReg::Ds,
        }
    }
}

/// Segment access rights in the VMCS format (SDM 24.4.1 Table 24-2): type 3:0, S 4,
/// DPL 6:5, P 7, AVL 12, L 13, D/B 14, G 15, unusable 16.
pub mod access {
    pub const TYPE_MASK: u32 = 0xf;
    /// Type bit 0 of a code/data segment: accessed.
    pub const ACCESSED: u32 = 1 << 0;
    /// Type bit 1: writable (data) / readable (code).
    pub const RW: u32 = 1 << 1;
    /// Type bit 2: expand-down (data) / conforming (code).
    pub const DC: u32 = 1 << 2;
    /// Type bit 3: code.
    pub const CODE: u32 = 1 << 3;
    /// Descriptor type: 1 = code/data, 0 = system.
    pub const S: u32 = 1 << 4;
    pub const DPL_SHIFT: u32 = 5;
    pub const DPL: u32 = 3 << 5;
    pub const P: u32 = 1 << 7;
    pub const AVL: u32 = 1 << 12;
    pub const L: u32 = 1 << 13;
    pub const DB: u32 = 1 << 14;
    pub const G: u32 = 1 << 15;
    pub const UNUSABLE: u32 = 1 << 16;
}

/// A segment register: the visible selector and the hidden descriptor cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub selector: u16,
    pub base: u64,
    /// Byte-granular limit (already scaled when G = 1).
    pub limit: u32,
    /// VMCS-format access rights ([`access`]).
    pub access: u32,
}

impl Segment {
    /// A null / unusable segment.
    pub const UNUSABLE: Segment = Segment {
        selector: 0,
        base: 0,
        limit: 0,
        access: access::UNUSABLE,
    };

    /// A flat 4 GiB segment of the given type and DPL (e.g. a multiboot boot stub's).
    pub const fn flat(selector: u16, code: bool, dpl: u8, long: bool) -> Segment {
        let ty = if code {
            access::CODE | access::RW | access::ACCESSED
        } else {
            access::RW | access::ACCESSED
        };
        let size = if long { access::L } else { access::DB };
        Segment {
            selector,
            base: 0,
            limit: 0xffff_ffff,
            access: ty
                | access::S
                | ((dpl as u32) << access::DPL_SHIFT)
                | access::P
                | size
                | access::G,
        }
    }

    #[inline]
    pub fn dpl(&self) -> u8 {
        ((self.access & access::DPL) >> access::DPL_SHIFT) as u8
    }

    #[inline]
    pub fn usable(&self) -> bool {
        self.access & access::UNUSABLE == 0
    }

    /// Builds the hidden part from an 8-byte legacy descriptor (SDM 3.4.5) and, for
    /// system descriptors in long mode, the upper 8 bytes (SDM 7.2.3).
    pub fn from_descriptor(selector: u16, low: u64, high: Option<u64>) -> Segment {
        let mut base = ((low >> 16) & 0xff_ffff) | (((low >> 56) & 0xff) << 24);
        if let Some(h) = high {
            base |= (h & 0xffff_ffff) << 32;
        }
        let raw_limit = ((low & 0xffff) | ((low >> 32) & 0xf_0000)) as u32;
        let access = ((low >> 40) & 0xf0ff) as u32;
        let limit = if access & access::G != 0 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        };
        Segment {
            selector,
            base,
            limit,
            access,
        }
    }
}

/// GDTR / IDTR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DescriptorTable {
    pub base: u64,
    pub limit: u16,
}

/// Where a register operand of an iced instruction lives: GPR index, width in bytes,
/// and whether it is one of AH/CH/DH/BH (bits 15:8).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RegSlot {
    pub idx: u8,
    pub size: u8,
    pub high8: bool,
}

/// iced `Register` discriminant -> GPR slot; `size == 0` for non-GPRs. The numbering
/// (AL=1..R15L=20, AX=21.., EAX=37.., RAX=53..68) is iced's stable enum order.
pub(crate) static REG_SLOTS: [RegSlot; 256] = build_reg_slots();

const fn build_reg_slots() -> [RegSlot; 256] {
    let mut t = [RegSlot {
        idx: 0,
        size: 0,
        high8: false,
    }; 256];
    let mut r = 1;
    while r <= 68 {
        let (idx, size, high8) = if r <= 20 {
            let n = r - 1;
            if n >= 4 && n < 8 {
                (n - 4, 1, true)
            } else if n >= 8 {
                (n - 4, 1, false)
            } else {
                (n, 1, false)
            }
        } else if r <= 36 {
            (r - 21, 2, false)
        } else if r <= 52 {
            (r - 37, 4, false)
        } else {
            (r - 53, 8, false)
        };
        t[r] = RegSlot {
            idx: idx as u8,
            size,
            high8,
        };
        r += 1;
    }
    t
}

/// Mask of the low `size` bytes.
#[inline(always)]
pub(crate) const fn size_mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size as u32 * 8)) - 1
    }
}

/// Sign bit of a `size`-byte value.
#[inline(always)]
pub(crate) const fn sign_bit(size: u8) -> u64 {
    1u64 << (size as u32 * 8 - 1)
}

/// Sign-extends the low `size` bytes of `v` to 64 bits.
#[inline(always)]
pub(crate) const fn sign_extend(v: u64, size: u8) -> u64 {
    let shift = 64 - size as u32 * 8;
    (((v << shift) as i64) >> shift) as u64
}

/// Whether a linear address is canonical with 48-bit linear addresses (4-level paging)
/// or 57-bit (5-level).
#[inline(always)]
pub(crate) const fn is_canonical(addr: u64, la57: bool) -> bool {
    let bits = if la57 { 57 } else { 48 };
    sign_extend_bits(addr, bits) == addr
}

#[inline(always)]
const fn sign_extend_bits(v: u64, bits: u32) -> u64 {
    let shift = 64 - bits;
    (((v << shift) as i64) >> shift) as u64
}
