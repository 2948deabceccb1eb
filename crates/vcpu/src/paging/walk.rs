//! The guest's page walk (SDM Vol. 3A 4.3 32-bit, 4.4 PAE, 4.5 4-/5-level paging),
//! with every paging-structure access and the final guest-physical address translated
//! by EPT when it is on (SDM Vol. 3C 29.3.1), or taken as host-physical when it is off
//! (shadow paging: CR3 then holds the shadow root in hpa space).
//!
//! Order of checks, fixed for the model and its reference tests:
//! 1. each level: EPT translation of the entry's address (violation/misconfig), then
//!    not-present, then reserved bits (#PF);
//! 2. the access rights of the leaf (#PF, SDM 4.6);
//! 3. with EPT and EPT A/D off, the EPT write permission of every guest entry whose
//!    A/D flag must be set (violation on a paging-structure access);
//! 4. the EPT translation of the final guest-physical address;
//! 5. all A/D flags (guest and EPT) are written, only now that nothing failed.

use super::ad::PendingAd;
use super::bits::*;
use super::ept::{self, EptAccess};
use super::rights::{self, Rights};
use super::{Access, AccessKind, Fault, PagingContext};

/// The paging mode the CPU runs with (SDM 4.1.1, Table 4-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// CR0.PG = 0: linear = (guest-)physical.
    Off,
    /// 32-bit paging: 4-byte entries, 4K and (CR4.PSE) 4M pages.
    Bits32,
    /// PAE paging: 4 PDPTE registers, 8-byte PDEs and PTEs, 4K and 2M pages.
    Pae,
    /// 4-level paging (EFER.LMA = 1).
    Level4,
    /// 5-level paging (EFER.LMA = 1, CR4.LA57 = 1).
    Level5,
}

impl Mode {
    #[inline]
    pub fn of(ctx: &PagingContext) -> Mode {
        if ctx.cr0 & CR0_PG == 0 {
            Mode::Off
        } else if ctx.efer & EFER_LMA != 0 {
            if ctx.cr4 & CR4_LA57 != 0 {
                Mode::Level5
            } else {
                Mode::Level4
            }
        } else if ctx.cr4 & CR4_PAE != 0 {
            Mode::Pae
        } else {
            Mode::Bits32
        }
    }
}

/// A completed translation of one linear address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// Host-physical address of the accessed byte.
    pub hpa: u64,
    /// Guest-physical address of the accessed byte (= hpa without EPT).
    pub gpa: u64,
    /// Combined guest rights (all-permissive with paging off).
    pub rights: Rights,
    /// The leaf has G = 1 and CR4.PGE = 1.
    pub global: bool,
    /// The guest leaf's D flag is (now) set and the EPT leaf needs no D update: a
    /// later write through a cached copy needs no walk.
    pub dirty: bool,
    /// log2 of the guest page size (12 with paging off).
    pub page_shift: u8,
    /// EPT R/W/X of the final address (7 without EPT).
    pub ept_rights: u8,
}

/// One guest paging-structure entry the walk used.
#[derive(Clone, Copy, Debug, Default)]
struct UsedEntry {
    gpa: u64,
    hpa: u64,
    value: u64,
    wide: bool,
}

#[derive(Clone, Copy)]
enum Format {
    Bits32,
    Pae,
    Long,
}

/// Translates a guest paging-structure entry's guest-physical address.
#[inline]
fn entry_hpa(
    mem: &physmem::PhysMap,
    ctx: &PagingContext,
    entry_gpa: u64,
    linear: u64,
    pending: &mut PendingAd,
) -> Result<u64, Fault> {
    match ctx.eptp {
        None => Ok(entry_gpa),
        Some(eptp) => ept::walk(
            mem,
            eptp,
            entry_gpa,
            EptAccess::PagingStructure {
                write: eptp & EPTP_AD != 0,
            },
            Some(linear),
            pending,
        )
        .map(|t| t.hpa),
    }
}

/// Reserved bits of a present entry (SDM 4.3 Table 4-4..4-10, 4.4.2, 4.5.4), with
/// MAXPHYADDR = 40.
#[inline]
fn reserved_bits(format: Format, level: u32, leaf: bool, nxe: bool) -> u64 {
    let xd = if nxe { 0 } else { PTE_XD };
    match format {
        // PSE-36: a 4M PDE holds physical bits 39:32 in bits 20:13; bit 21 is reserved
        // (bits 21:(MAXPHYADDR-19)).
        Format::Bits32 => {
            if leaf && level == 2 {
                1 << 21
            } else {
                0
            }
        }
        Format::Pae => {
            let above = 0x7fff_ff00_0000_0000 & !ADDR_MASK; // bits 62:MAXPHYADDR
            let large = if leaf && level == 2 { 0x1f_e000 } else { 0 };
            above | xd | large
        }
        Format::Long => {
            let above = 0x000f_ffff_ffff_f000 & !ADDR_MASK; // bits 51:MAXPHYADDR
            let by_level = match (level, leaf) {
                (4 | 5, _) => PTE_PS,
                (3, true) => 0x3fff_e000,
                (2, true) => 0x1f_e000,
                _ => 0,
            };
            above | xd | by_level
        }
    }
}

/// Walks the guest paging structures (or the shadow root) for `linear` and translates
/// the result through EPT. A/D updates go to `pending` (written by the caller).
pub fn translate(
    mem: &physmem::PhysMap,
    ctx: &PagingContext,
    linear: u64,
    access: Access,
    pending: &mut PendingAd,
) -> Result<Translation, Fault> {
    let mode = Mode::of(ctx);
    if mode == Mode::Off {
        return translate_final(mem, ctx, linear, linear, access, pending).map(|(hpa, ept)| {
            Translation {
                hpa,
                gpa: linear,
                rights: Rights::ALL,
                global: false,
                dirty: ept.1,
                page_shift: 12,
                ept_rights: ept.0,
            }
        });
    }
    let nxe = ctx.efer & EFER_NXE != 0;
    let not_present = || Fault::PageFault {
        error_code: rights::access_error_bits(ctx, access),
        linear,
    };
    let reserved = || Fault::PageFault {
        error_code: PFEC_P | PFEC_RSVD | rights::access_error_bits(ctx, access),
        linear,
    };

    let (format, mut level, mut table) = match mode {
        Mode::Bits32 => (Format::Bits32, 2, ctx.cr3 & 0xffff_f000),
        Mode::Pae => {
            // SDM 4.4.1: the PDPTEs come from the registers loaded with CR3, not memory.
            let pdpte = ctx.pdptes[((linear >> 30) & 3) as usize];
            if pdpte & PTE_P == 0 {
                return Err(not_present());
            }
            (Format::Pae, 2, pdpte & ADDR_MASK)
        }
        Mode::Level5 => (Format::Long, 5, ctx.cr3 & ADDR_MASK),
        _ => (Format::Long, 4, ctx.cr3 & ADDR_MASK),
    };

    let mut used = [UsedEntry::default(); 5];
    let mut n_used = 0;
    let mut rights = Rights::ALL;
    let (leaf, page_shift) = loop {
        let (index_shift, index_mask, size) = match format {
            Format::Bits32 => (12 + 10 * (level - 1), 0x3ff, 4),
            _ => (12 + 9 * (level - 1), 0x1ff, 8),
        };
        let entry_gpa = table + ((linear >> index_shift) & index_mask) * size;
        let hpa = entry_hpa(mem, ctx, entry_gpa, linear, pending)?;
        let value = if size == 4 {
            mem.read_u32(hpa).map(u64::from)
        } else {
            mem.read_u64(hpa)
        }
        .ok_or(Fault::BadHpa { hpa })?;
        if value & PTE_P == 0 {
            return Err(not_present());
        }
        let leaf = level == 1
            || match format {
                Format::Bits32 => value & PTE_PS != 0 && ctx.cr4 & CR4_PSE != 0,
                Format::Pae => value & PTE_PS != 0,
                Format::Long => (level == 2 || level == 3) && value & PTE_PS != 0,
            };
        if value & reserved_bits(format, level, leaf, nxe) != 0 {
            return Err(reserved());
        }
        rights.user &= value & PTE_US != 0;
        rights.writable &= value & PTE_RW != 0;
        rights.execute_disable |= nxe && value & PTE_XD != 0;
        used[n_used] = UsedEntry {
            gpa: entry_gpa,
            hpa,
            value,
            wide: size == 8,
        };
        n_used += 1;
        if leaf {
            break (value, index_shift);
        }
        table = match format {
            Format::Bits32 => value & 0xffff_f000,
            _ => value & ADDR_MASK,
        };
        level -= 1;
    };

    let size_mask = (1u64 << page_shift) - 1;
    let frame = match format {
        Format::Bits32 if page_shift == 22 => (leaf & 0xffc0_0000) | (((leaf >> 13) & 0xff) << 32),
        Format::Bits32 => leaf & 0xffff_f000,
        _ => leaf & ADDR_MASK & !size_mask,
    };
    let gpa = frame | (linear & size_mask);
    if let Format::Long = format {
        rights.pkey = ((leaf >> PTE_PKEY_SHIFT) & 0xf) as u8;
    }
    if let Some(code) = rights::check(ctx, rights, access) {
        return Err(Fault::PageFault {
            error_code: code,
            linear,
        });
    }

    // SDM 4.8: A on every entry used, D on the leaf of a write.
    let write = access.kind == AccessKind::Write;
    for (i, e) in used[..n_used].iter().enumerate() {
        let mut bits = PTE_A;
        if write && i == n_used - 1 {
            bits |= PTE_D;
        }
        if e.value & bits == bits {
            continue;
        }
        if let Some(eptp) = ctx.eptp {
            if eptp & EPTP_AD == 0 {
                // The update is a write to guest memory: it needs EPT write permission
                // (with EPT A/D on, the walk already treated the access as a write).
                ept::walk(
                    mem,
                    eptp,
                    e.gpa,
                    EptAccess::PagingStructure { write: true },
                    Some(linear),
                    pending,
                )?;
            }
        }
        pending.set_bits(e.hpa, e.value, bits, e.wide);
    }

    let (hpa, (ept_rights, ept_dirty)) = translate_final(mem, ctx, gpa, linear, access, pending)?;
    Ok(Translation {
        hpa,
        gpa,
        rights,
        global: leaf & PTE_G != 0 && ctx.cr4 & CR4_PGE != 0,
        dirty: (write || leaf & PTE_D != 0) && ept_dirty,
        page_shift: page_shift as u8,
        ept_rights,
    })
}

/// The final guest-physical address through EPT (or as is): hpa, EPT rights, and
/// whether the EPT leaf is dirty.
#[inline]
fn translate_final(
    mem: &physmem::PhysMap,
    ctx: &PagingContext,
    gpa: u64,
    linear: u64,
    access: Access,
    pending: &mut PendingAd,
) -> Result<(u64, (u8, bool)), Fault> {
    match ctx.eptp {
        None => Ok((gpa, (EPT_RWX as u8, true))),
        Some(eptp) => {
            let t = ept::walk(
                mem,
                eptp,
                gpa,
                EptAccess::Data(access.kind),
                Some(linear),
                pending,
            )?;
            Ok((t.hpa, (t.rights, t.dirty)))
        }
    }
}
