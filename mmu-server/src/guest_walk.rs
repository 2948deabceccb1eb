//! The software walk of the guest's own page tables (KVM's `FNAME(walk_addr)`).
//!
//! Shadow faults need the guest translation of the faulting address, and the instruction
//! emulator asks for gva -> gpa translations (`GvaToGpa`). Both must see exactly what the
//! hardware would: the same faults with the same error codes, and the same accessed and
//! dirty bits written into the guest's tables. The rules are those of the Intel SDM
//! Vol. 3A chapter 4; where a rule is subtle the section is cited next to the code.
//!
//! Choices, each documented where it is made:
//! - Guest MAXPHYADDR is [`GUEST_MAXPHYADDR`] (40), the project's fixed guest CPU model.
//! - [`walk`] reads PAE PDPTEs from guest memory at walk time; [`walk_with_pdptes`]
//!   takes the values loaded at the last CR3 load, as the processor uses them (SDM
//!   4.4.1). Either way a reserved bit in the PDPTE used is reported as a reserved-bit
//!   page fault (hardware would have raised #GP at the load instead).
//! - The I/D error-code bit follows SDM 4.7: set for a fetch when SMEP is on, or when
//!   execute-disable is in effect, which needs EFER.NXE *and* PAE-format entries
//!   (32-bit paging has no XD bit, SDM 4.3). QEMU TCG reports it the same way.
//! - Accessed and dirty bits are written only when the walk succeeds and the access is
//!   allowed, as KVM does, with compare-and-exchange; the whole walk is redone if an
//!   entry changed under us. A processor sets A in each entry as it uses it (SDM 4.8),
//!   so after a fault it may already have marked the upper levels (QEMU TCG does). A
//!   guest could only notice by reading upper-level A bits after a fault it took.

use crate::permission::{gpte_access, pfec, Permissions};
use crate::role::{CpuRole, ACC_ALL, ACC_EXEC_MASK, ACC_USER_MASK, ACC_WRITE_MASK};

/// MAXPHYADDR of the guest CPU model (QEMU TCG's default phys-bits): entry bits 51:40
/// (62:40 for PAE) are reserved.
pub const GUEST_MAXPHYADDR: u8 = 40;

/// How often a walk is redone because an entry changed between its read and the update
/// of its accessed/dirty bits. A single walker makes progress on every pass (each pass
/// sets at least one bit that stays set, and a walk sets at most six), so this bound is
/// only reached when another agent keeps rewriting the tables.
pub const MAX_WALK_ATTEMPTS: usize = 10;

/// Access to guest-physical memory, for reading and A/D-updating guest page tables.
pub trait GuestMemory {
    /// Read a `size`-byte (4 or 8) little-endian entry at `gpa`. `None` if `gpa` is not
    /// guest RAM.
    fn read_gpte(&self, gpa: u64, size: u8) -> Option<u64>;
    /// Atomically replace the entry at `gpa` with `new` if it still holds `old`.
    /// `Some(true)` if replaced, `Some(false)` if the entry differed, `None` if not RAM.
    fn cmpxchg_gpte(&self, gpa: u64, size: u8, old: u64, new: u64) -> Option<bool>;
}

/// One translation request.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct WalkRequest {
    /// The guest's CR3.
    pub cr3: u64,
    /// The linear address to translate (only bits 31:0 count outside long mode).
    pub gva: u64,
    /// The access: [`pfec::W`], [`pfec::U`] (a user-mode access: CPL 3 and not
    /// implicit), [`pfec::FETCH`], and [`pfec::IMPLICIT`] for an implicit supervisor
    /// access. Other bits are ignored.
    pub pfec: u64,
    /// EFLAGS.AC of the vCPU (exempts explicit supervisor accesses from SMAP).
    pub rflags_ac: bool,
    /// The vCPU's PKRU (used only with protection keys in effect).
    pub pkru: u32,
    /// The guest CPU has 1-GByte pages (CPUID.80000001H:EDX.Page1GB); without them a
    /// PDPTE with PS=1 has a reserved bit set (SDM 4.5.4).
    pub gbpages: bool,
}

/// A successful translation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct GuestWalk {
    /// The guest-physical address of `gva`.
    pub gpa: u64,
    /// Level of the leaf: 1 = 4K, 2 = 2M (4M with 32-bit paging), 3 = 1G. 0 with paging
    /// off (no guest tables).
    pub level: u8,
    /// Effective access (ACC bits): the AND of every level's R/W, U/S and !XD. Not
    /// reduced for a clean leaf: see `dirty`.
    pub pte_access: u8,
    /// The leaf's protection key (0 unless protection keys are in effect).
    pub pkey: u8,
    /// The leaf's dirty bit after the walk (set by this walk for a write). A shadow
    /// entry built for a clean leaf must not be writable, so that the first write
    /// faults and sets it.
    pub dirty: bool,
    /// The level the walk started at: 2 (32-bit), 3 (PAE), 4 or 5; 0 with paging off.
    /// Entries `[level - 1 .. levels]` of the arrays below are meaningful.
    pub levels: u8,
    /// Gfn of the table read at level `i + 1` (for PAE level 3: the gfn holding the PDPT).
    pub table_gfns: [u64; 5],
    /// Entry read at level `i + 1` (before this walk's A/D update).
    pub gptes: [u64; 5],
    /// Guest-physical address of the entry read at level `i + 1`.
    pub gpte_gpas: [u64; 5],
    /// Access granted by levels `levels ..= i + 1` (the AND down to and including that
    /// level): the `access` role of a shadow table below that entry.
    pub pt_access: [u8; 5],
}

/// Why a walk gave no translation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum WalkError {
    /// The guest gets a #PF with this error code (SDM 4.7).
    PageFault { error_code: u32 },
    /// A guest page table lies outside guest RAM (for example in an MMIO hole); the
    /// walk cannot be completed and the caller decides (KVM injects a not-present #PF).
    TableNotRam { gpa: u64 },
    /// The guest's tables kept changing under the walk; retry the whole operation later
    /// (resume the guest and let it fault again).
    Retry,
}

/// Accessed flag (bit 5) and dirty flag (bit 6), the same in every entry format.
const PT_ACCESSED: u64 = 1 << 5;
const PT_DIRTY: u64 = 1 << 6;
const PT_PRESENT: u64 = 1 << 0;
/// PS (bit 7): the entry maps a page instead of referencing a table.
const PT_PAGE_SIZE: u64 = 1 << 7;
const PT64_NX: u64 = 1 << 63;

/// Bits `lo..=hi` set.
const fn bits(lo: u32, hi: u32) -> u64 {
    (u64::MAX >> (63 - hi)) & (u64::MAX << lo)
}

/// Address bits of a 64-bit-format entry: (MAXPHYADDR-1):12.
const ADDR_MASK: u64 = bits(12, GUEST_MAXPHYADDR as u32 - 1);

/// The entry formats of the guest paging modes (SDM 4.1.1).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Format {
    /// 32-bit paging: 4-byte entries, two levels, optional 4-MByte pages (SDM 4.3).
    Bits32,
    /// PAE paging: 8-byte entries, four PDPTEs then two levels (SDM 4.4).
    Pae,
    /// 4-level or 5-level paging (SDM 4.5).
    Long,
}

/// Everything a walk needs to know about the guest's mode.
#[derive(Clone, Copy, Debug)]
struct Mode {
    format: Format,
    root_level: u8,
    /// Execute-disable is in effect: EFER.NXE with PAE-format entries (SDM 4.1.3).
    nx: bool,
    /// CR4.PSE: 32-bit paging PDEs may map 4-MByte pages (SDM 4.3).
    pse: bool,
    gbpages: bool,
    pke: bool,
    /// CR4.SMEP: also makes fetches report I/D (SDM 4.7).
    smep: bool,
}

impl Mode {
    /// The mode of a paging-enabled cpu role. Format and depth are derived from the
    /// mode bits (EFER.LMA, CR4.LA57, CR4.PAE) rather than from the role's level field,
    /// so that no role value, however inconsistent, can make the walk index past its
    /// five levels. For the roles [`crate::role::cpu_role`] makes, both agree.
    fn of(role: &CpuRole, gbpages: bool) -> Mode {
        // Long mode implies PAE-format entries (activating IA-32e mode needs CR4.PAE=1,
        // SDM Vol. 3A "Initializing IA-32e Mode").
        let (format, root_level) = if role.long_mode() {
            (Format::Long, if role.ext.cr4_la57() { 5 } else { 4 })
        } else if role.has_4_byte_gpte() {
            (Format::Bits32, 2)
        } else {
            (Format::Pae, 3)
        };
        Mode {
            format,
            root_level,
            nx: role.efer_nx() && format != Format::Bits32,
            pse: role.pse(),
            gbpages,
            pke: role.pke(),
            smep: role.smep(),
        }
    }

    fn entry_size(&self) -> u8 {
        if self.format == Format::Bits32 {
            4
        } else {
            8
        }
    }

    /// The linear address as the mode sees it: 32 bits outside IA-32e mode (SDM 4.1).
    fn linear(&self, gva: u64) -> u64 {
        if self.format == Format::Long {
            gva
        } else {
            gva & 0xFFFF_FFFF
        }
    }

    /// Index of the entry for `gva` in the table at `level`.
    fn index(&self, gva: u64, level: u8) -> u64 {
        match self.format {
            // SDM 4.3: bits 31:22 select the PDE, 21:12 the PTE.
            Format::Bits32 => (gva >> (12 + 10 * (level as u32 - 1))) & 0x3FF,
            // SDM 4.4.2 and 4.5: nine bits per level above bit 12 (the PDPTE index of
            // PAE paging, bits 31:30, is taken separately).
            Format::Pae | Format::Long => (gva >> (12 + 9 * (level as u32 - 1))) & 0x1FF,
        }
    }

    /// Whether `gpte` (present) at `level` maps a page rather than a table.
    fn is_leaf(&self, gpte: u64, level: u8) -> bool {
        match level {
            1 => true,
            // SDM 4.3: with CR4.PSE=0, PS of a 32-bit PDE is ignored.
            2 => gpte & PT_PAGE_SIZE != 0 && (self.format != Format::Bits32 || self.pse),
            // SDM 4.5.4: a PDPTE with PS=1 maps a 1-GByte page (if the CPU has them; if
            // not, PS is a reserved bit and the walk never gets here).
            3 => gpte & PT_PAGE_SIZE != 0,
            _ => false,
        }
    }

    /// Reserved bits of a present entry at `level` (not the PAE PDPTE level).
    fn reserved_bits(&self, gpte: u64, level: u8) -> u64 {
        let leaf = self.is_leaf(gpte, level);
        match self.format {
            // SDM 4.3, Table 4-4: in a 4-MByte PDE, bits 20:13 are PA 39:32 (all usable
            // with MAXPHYADDR 40) and bit 21 is reserved. Other 32-bit entries have no
            // reserved bits.
            Format::Bits32 => {
                if level == 2 && leaf {
                    gpte & bits(21, 21)
                } else {
                    0
                }
            }
            Format::Pae | Format::Long => {
                // SDM Tables 4-9 to 4-11 (PAE: bits 62:M reserved) and 4-14 to 4-20
                // (4/5-level: bits 51:M reserved, 62:52 ignored or protection key).
                let high = if self.format == Format::Pae {
                    bits(GUEST_MAXPHYADDR as u32, 62)
                } else {
                    bits(GUEST_MAXPHYADDR as u32, 51)
                };
                // Bit 63 is XD with EFER.NXE=1 and reserved otherwise (same tables).
                let xd = if self.nx { 0 } else { PT64_NX };
                let by_level = match level {
                    // PML5E, PML4E: PS must be 0 (SDM Tables 4-14, 4-15).
                    4 | 5 => PT_PAGE_SIZE,
                    // No 1-GByte pages: PS is reserved (SDM 4.5.4).
                    3 if leaf && !self.gbpages => PT_PAGE_SIZE,
                    // 1-GByte page: bits 29:13 reserved (Table 4-16).
                    3 if leaf => bits(13, 29),
                    // 2-MByte page: bits 20:13 reserved (Tables 4-9, 4-18).
                    2 if leaf => bits(13, 20),
                    _ => 0,
                };
                gpte & (high | xd | by_level)
            }
        }
    }

    /// Guest-physical address of the next table referenced by a non-leaf entry.
    fn table_address(&self, gpte: u64) -> u64 {
        match self.format {
            Format::Bits32 => gpte & 0xFFFF_F000,
            Format::Pae | Format::Long => gpte & ADDR_MASK,
        }
    }

    /// Guest-physical address that the leaf `gpte` at `level` maps `gva` to.
    fn leaf_address(&self, gpte: u64, level: u8, gva: u64) -> u64 {
        match (self.format, level) {
            // SDM 4.3, Table 4-4: PA 31:22 from bits 31:22, PA 39:32 from bits 20:13.
            (Format::Bits32, 2) => {
                let low = gpte & 0xFFC0_0000;
                let high = ((gpte >> 13) & 0xFF) << 32;
                high | low | (gva & 0x3F_FFFF)
            }
            (Format::Bits32, _) => (gpte & 0xFFFF_F000) | (gva & 0xFFF),
            _ => {
                let page_mask = (1u64 << (12 + 9 * (level as u32 - 1))) - 1;
                (gpte & ADDR_MASK & !page_mask) | (gva & page_mask)
            }
        }
    }

    /// ACC bits that one present entry grants.
    fn entry_access(&self, gpte: u64) -> u8 {
        match self.format {
            // 32-bit paging has no XD bit: everything present is executable (SDM 4.6.1).
            Format::Bits32 => {
                let mut access = ACC_EXEC_MASK;
                if gpte & 2 != 0 {
                    access |= ACC_WRITE_MASK;
                }
                if gpte & 4 != 0 {
                    access |= ACC_USER_MASK;
                }
                access
            }
            Format::Pae | Format::Long => gpte_access(gpte, self.nx),
        }
    }
}

/// PAE PDPTE reserved bits (SDM 4.4.1, Table 4-8): 63:M, 8:5 and 2:1.
const PAE_PDPTE_RESERVED: u64 = bits(GUEST_MAXPHYADDR as u32, 63) | bits(5, 8) | bits(1, 2);

/// Translate `req.gva` through the guest's page tables as the processor would for the
/// access `req.pfec`, and set the accessed/dirty bits the processor would set.
///
/// `perms` must be [`Permissions::for_role`] of `role`. PAE PDPTEs are read from guest
/// memory; see [`walk_with_pdptes`] to use the ones loaded at the last CR3 load.
pub fn walk(
    mem: &impl GuestMemory,
    role: &CpuRole,
    perms: &Permissions,
    req: &WalkRequest,
) -> Result<GuestWalk, WalkError> {
    walk_inner(mem, role, perms, req, None)
}

/// [`walk`] with PAE paging's four PDPTEs taken from `pdptes`, the values loaded from
/// CR3 at the last MOV to CR3/CR0/CR4 (SDM 4.4.1: the processor uses these registers,
/// not memory, until the next load). Ignored outside PAE paging.
pub fn walk_with_pdptes(
    mem: &impl GuestMemory,
    role: &CpuRole,
    perms: &Permissions,
    req: &WalkRequest,
    pdptes: &[u64; 4],
) -> Result<GuestWalk, WalkError> {
    walk_inner(mem, role, perms, req, Some(pdptes))
}

fn walk_inner(
    mem: &impl GuestMemory,
    role: &CpuRole,
    perms: &Permissions,
    req: &WalkRequest,
    pdptes: Option<&[u64; 4]>,
) -> Result<GuestWalk, WalkError> {
    if !role.paging_enabled() {
        // Paging off: linear is physical, nothing to check or update (SDM 4.1.1).
        return Ok(GuestWalk {
            gpa: req.gva,
            pte_access: ACC_ALL,
            dirty: true,
            ..GuestWalk::default()
        });
    }
    let mode = Mode::of(role, req.gbpages);
    for _ in 0..MAX_WALK_ATTEMPTS {
        match walk_once(mem, &mode, perms, req, pdptes)? {
            Some(done) => return Ok(done),
            None => continue,
        }
    }
    Err(WalkError::Retry)
}

/// The error code of a fault on this access: `outcome` (0, P, P|RSVD, P|PK) plus the
/// access bits W, U and, per SDM 4.7, I/D only with SMEP or execute-disable in effect.
fn error_code(mode: &Mode, req: &WalkRequest, outcome: u64) -> WalkError {
    let mut code = outcome | (req.pfec & (pfec::W | pfec::U));
    if req.pfec & pfec::FETCH != 0 && (mode.nx || mode.smep) {
        code |= pfec::FETCH;
    }
    WalkError::PageFault {
        error_code: code as u32,
    }
}

/// One pass: `Ok(None)` when an A/D update lost a race and the walk must be redone.
fn walk_once(
    mem: &impl GuestMemory,
    mode: &Mode,
    perms: &Permissions,
    req: &WalkRequest,
    pdptes: Option<&[u64; 4]>,
) -> Result<Option<GuestWalk>, WalkError> {
    let fault = |outcome: u64| Err(error_code(mode, req, outcome));
    let gva = mode.linear(req.gva);
    let size = mode.entry_size();
    let mut w = GuestWalk {
        levels: mode.root_level,
        ..GuestWalk::default()
    };
    let mut access = ACC_ALL;
    let mut level = mode.root_level;

    let mut table = match mode.format {
        // SDM 4.3: the page directory is at CR3 bits 31:12.
        Format::Bits32 => req.cr3 & 0xFFFF_F000,
        // SDM 4.5.2: the PML4/PML5 table is at CR3 bits (M-1):12.
        Format::Long => req.cr3 & ADDR_MASK,
        // SDM 4.4.1: the four PDPTEs are at CR3 bits 31:5, selected by gva bits 31:30.
        Format::Pae => {
            let pdpt = req.cr3 & 0xFFFF_FFE0;
            let index = (gva >> 30) & 3;
            let gpa = pdpt + 8 * index;
            let pdpte = match pdptes {
                Some(loaded) => loaded[index as usize],
                None => mem
                    .read_gpte(gpa, 8)
                    .ok_or(WalkError::TableNotRam { gpa })?,
            };
            w.table_gfns[2] = pdpt >> 12;
            w.gptes[2] = pdpte;
            w.gpte_gpas[2] = gpa;
            w.pt_access[2] = ACC_ALL;
            if pdpte & PT_PRESENT == 0 {
                return fault(0);
            }
            if pdpte & PAE_PDPTE_RESERVED != 0 {
                return fault(pfec::P | pfec::RSVD);
            }
            // PAE PDPTEs carry no access rights and no accessed bit (Table 4-8).
            level = 2;
            pdpte & ADDR_MASK
        }
    };

    // Walk down to the leaf (SDM 4.3, 4.4.2, 4.5.4): at each level the entry must be
    // present, then free of reserved bits; rights accumulate as an AND.
    let leaf = loop {
        let gpa = table + size as u64 * mode.index(gva, level);
        let gpte = mem
            .read_gpte(gpa, size)
            .ok_or(WalkError::TableNotRam { gpa })?;
        let slot = level as usize - 1;
        w.table_gfns[slot] = table >> 12;
        w.gptes[slot] = gpte;
        w.gpte_gpas[slot] = gpa;
        if gpte & PT_PRESENT == 0 {
            return fault(0);
        }
        if mode.reserved_bits(gpte, level) != 0 {
            return fault(pfec::P | pfec::RSVD);
        }
        access &= mode.entry_access(gpte);
        w.pt_access[slot] = access;
        if mode.is_leaf(gpte, level) {
            break gpte;
        }
        table = mode.table_address(gpte);
        level -= 1;
    };

    w.level = level;
    w.gpa = mode.leaf_address(leaf, level, gva);
    w.pte_access = access;
    // SDM 4.6.2: the leaf's bits 62:59 are its protection key (4/5-level paging only).
    w.pkey = if mode.pke {
        ((leaf >> 59) & 0xF) as u8
    } else {
        0
    };

    // Permissions are judged on the complete translation (SDM 4.6): a not-present or
    // reserved entry anywhere takes precedence, which the loop above already ensured.
    let outcome = perms.permission_fault(access, w.pkey, req.pfec, req.rflags_ac, req.pkru);
    if outcome != 0 {
        return fault(outcome as u64);
    }

    // SDM 4.8: set A in every entry used (PAE PDPTEs have none), and D in the leaf on a
    // write. Top-down, as the processor walks. A lost compare-and-exchange means the
    // guest changed its tables since we read them: walk again.
    let write = req.pfec & pfec::W != 0;
    let top = if mode.format == Format::Pae {
        2
    } else {
        mode.root_level
    };
    for l in (level..=top).rev() {
        let slot = l as usize - 1;
        let old = w.gptes[slot];
        let mut new = old | PT_ACCESSED;
        if l == level && write {
            new |= PT_DIRTY;
        }
        if new != old {
            let gpa = w.gpte_gpas[slot];
            match mem.cmpxchg_gpte(gpa, size, old, new) {
                Some(true) => {}
                Some(false) => return Ok(None),
                None => return Err(WalkError::TableNotRam { gpa }),
            }
        }
    }
    w.dirty = write || leaf & PT_DIRTY != 0;
    Ok(Some(w))
}
