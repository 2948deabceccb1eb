//! An independent reference walker of x86 guest page tables, written rule by rule from
//! the Intel SDM Vol. 3A chapter 4 (4.3 32-bit paging, 4.4 PAE paging, 4.5 4- and
//! 5-level paging, 4.6 access rights, 4.7 page-fault error codes, 4.8 A/D flags).
//!
//! It shares nothing with `mmu_server::guest_walk` / `permission`: no bitmap, no role;
//! it reads the registers and checks each SDM condition in prose order. It is a pure
//! function: it reads memory through a closure and reports which entries the processor
//! would mark accessed/dirty; the caller applies those writes.
//!
//! Use: `reference_walk(&|gpa, size| read_le(gpa, size), regs, gva, access)`, then on
//! `RefOutcome::Ok(t)` call `t.apply_accessed_dirty(..)` on your copy of guest memory.
//! A fault or `NotRam` writes nothing.
//!
//! Model choices it shares with the project's guest CPU (they are facts of that CPU, not
//! of the code under test): MAXPHYADDR is a parameter; PAE PDPTEs are read from memory
//! at walk time (no PDPTE registers), so their reserved bits give a reserved-bit #PF.

#![allow(dead_code)]

/// The registers that control paging.
#[derive(Clone, Copy, Debug)]
pub struct RefRegs {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    /// CPUID.80000008H:EAX[7:0].
    pub maxphyaddr: u8,
    /// CPUID.80000001H:EDX.Page1GB.
    pub gbpages: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefKind {
    Read,
    Write,
    Fetch,
}

/// One access, described the way SDM 4.6 describes accesses.
#[derive(Clone, Copy, Debug)]
pub struct RefAccess {
    pub kind: RefKind,
    /// Current privilege level.
    pub cpl: u8,
    /// An implicit supervisor-mode access (GDT/IDT/TSS reads and the like): supervisor
    /// mode whatever the CPL (SDM 4.6).
    pub implicit: bool,
    /// EFLAGS.AC.
    pub ac: bool,
    /// The PKRU register.
    pub pkru: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefTranslation {
    pub gpa: u64,
    /// 1 = 4 KiB, 2 = 2 MiB or 4 MiB, 3 = 1 GiB; 0 with paging disabled.
    pub level: u8,
    /// R/W = 1 in every entry.
    pub writable: bool,
    /// U/S = 1 in every entry (a user-mode address).
    pub user: bool,
    /// No entry has XD = 1 (always true where XD does not exist).
    pub executable: bool,
    /// Protection key of the page (0 unless IA32_EFER.LMA = CR4.PKE = 1).
    pub pkey: u8,
    /// Size of the paging-structure entries (4 or 8).
    pub entry_size: u8,
    /// Addresses of the entries whose accessed flag (bit 5) the processor sets.
    pub accessed_set: Vec<u64>,
    /// Address of the entry whose dirty flag (bit 6) the processor sets, for a write.
    pub dirty_set: Option<u64>,
}

impl RefTranslation {
    /// Perform the accessed/dirty writes the processor makes for this translation:
    /// `set_bits(gpa, entry_size, bits)` must OR `bits` into the entry at `gpa`.
    pub fn apply_accessed_dirty(&self, mut set_bits: impl FnMut(u64, u8, u64)) {
        for gpa in &self.accessed_set {
            set_bits(*gpa, self.entry_size, 1 << 5);
        }
        if let Some(gpa) = self.dirty_set {
            set_bits(gpa, self.entry_size, 1 << 6);
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefOutcome {
    Ok(RefTranslation),
    Fault {
        error_code: u32,
    },
    /// A paging-structure entry would have to be read from outside RAM.
    NotRam {
        gpa: u64,
    },
}

fn bit(value: u64, n: u32) -> bool {
    (value >> n) & 1 == 1
}

/// Is any bit in `lo..=hi` set? (Empty when lo > hi.)
fn any_bits(value: u64, lo: u32, hi: u32) -> bool {
    (lo..=hi).any(|n| bit(value, n))
}

/// Bits `lo..=hi` of `value`, shifted down.
fn bits_of(value: u64, lo: u32, hi: u32) -> u64 {
    let width = hi - lo + 1;
    (value >> lo)
        & if width == 64 {
            u64::MAX
        } else {
            (1 << width) - 1
        }
}

/// One paging-structure entry used in the translation.
struct Used {
    gpa: u64,
    entry: u64,
    /// A PAE PDPTE: no accessed flag and no access rights (SDM Table 4-8).
    pae_pdpte: bool,
}

enum Step {
    /// Not present (SDM 4.7: P=0).
    NotPresent,
    /// A reserved bit is set (P=1, RSVD=1).
    Reserved,
    NotRam(u64),
}

/// The translation a successful walk produced, before access rights.
struct Walked {
    gpa: u64,
    level: u8,
    entry_size: u8,
    used: Vec<Used>,
    pkey: u8,
}

pub fn reference_walk(
    mem: &impl Fn(u64, u8) -> Option<u64>,
    regs: RefRegs,
    gva: u64,
    access: RefAccess,
) -> RefOutcome {
    let paging = bit(regs.cr0, 31);
    if !paging {
        return RefOutcome::Ok(RefTranslation {
            gpa: gva,
            level: 0,
            writable: true,
            user: true,
            executable: true,
            pkey: 0,
            entry_size: 0,
            accessed_set: Vec::new(),
            dirty_set: None,
        });
    }
    let pae = bit(regs.cr4, 5);
    let lma = bit(regs.efer, 10);
    let nxe = bit(regs.efer, 11);
    let pse = bit(regs.cr4, 4);
    let la57 = bit(regs.cr4, 12);
    let smep = bit(regs.cr4, 20);
    let smap = bit(regs.cr4, 21);
    let pke = bit(regs.cr4, 22);
    let wp = bit(regs.cr0, 16);

    // SDM 4.6: a user-mode access is one at CPL 3 that is not an implicit supervisor
    // access.
    let user_mode = access.cpl == 3 && !access.implicit;
    let is_write = access.kind == RefKind::Write;
    let is_fetch = access.kind == RefKind::Fetch;

    // SDM 4.7 error code bits other than P, RSVD and PK.
    let mut access_bits = 0u32;
    if is_write {
        access_bits |= 1 << 1;
    }
    if user_mode {
        access_bits |= 1 << 2;
    }
    // I/D: a fetch, and either CR4.SMEP = 1, or CR4.PAE = 1 and IA32_EFER.NXE = 1.
    if is_fetch && (smep || (pae && nxe)) {
        access_bits |= 1 << 4;
    }

    let walked = if !pae {
        walk_32bit(mem, regs, gva, pse)
    } else if !lma {
        walk_pae(mem, regs, gva, nxe)
    } else {
        walk_long(mem, regs, gva, nxe, la57, pke)
    };
    let walked = match walked {
        Ok(w) => w,
        Err(Step::NotPresent) => {
            return RefOutcome::Fault {
                error_code: access_bits,
            }
        }
        Err(Step::Reserved) => {
            return RefOutcome::Fault {
                error_code: access_bits | 1 | (1 << 3),
            }
        }
        Err(Step::NotRam(gpa)) => return RefOutcome::NotRam { gpa },
    };

    // Rights of the translation (SDM 4.6.1): R/W and U/S must be 1 in every entry; XD
    // (if execute-disable is in effect) must be 0 in every entry.
    let xd_exists = pae && nxe;
    let rights = || walked.used.iter().filter(|u| !u.pae_pdpte);
    let writable = rights().all(|u| bit(u.entry, 1));
    let user = rights().all(|u| bit(u.entry, 2));
    let executable = !xd_exists || walked.used.iter().all(|u| !bit(u.entry, 63));

    let allowed = if user_mode {
        // User-mode accesses (SDM 4.6.1, "User-mode access").
        if !user {
            false
        } else {
            match access.kind {
                RefKind::Read => true,
                RefKind::Write => writable,
                RefKind::Fetch => executable,
            }
        }
    } else {
        // Supervisor-mode accesses (SDM 4.6.1, "Supervisor-mode access").
        match access.kind {
            RefKind::Fetch => {
                if user {
                    // Fetches from user-mode addresses: never with SMEP.
                    !smep && executable
                } else {
                    executable
                }
            }
            RefKind::Read | RefKind::Write => {
                // SMAP: data accesses to user-mode addresses are allowed only if
                // CR4.SMAP = 0, or the access is explicit with EFLAGS.AC = 1.
                let smap_ok = !user || !smap || (!access.implicit && access.ac);
                if !smap_ok {
                    false
                } else if access.kind == RefKind::Read {
                    true
                } else {
                    // Writes: with CR0.WP = 0 any address; with WP = 1 only R/W = 1.
                    !wp || writable
                }
            }
        }
    };

    // Protection keys (SDM 4.6.2): IA32_EFER.LMA = CR4.PKE = 1, a data access, to a
    // user-mode address.
    let mut key_fault = false;
    if lma && pke && user && !is_fetch {
        let key = walked.pkey as u32;
        let ad = bit(access.pkru as u64, 2 * key);
        let wd = bit(access.pkru as u64, 2 * key + 1);
        if ad {
            key_fault = true;
        }
        if is_write && wd && (user_mode || wp) {
            key_fault = true;
        }
    }

    if !allowed || key_fault {
        let mut error_code = access_bits | 1;
        if key_fault {
            error_code |= 1 << 5;
        }
        return RefOutcome::Fault { error_code };
    }

    // SDM 4.8: accessed flag in every entry used (that has one), dirty flag in the
    // entry that maps the page, on a write.
    let accessed_set = walked
        .used
        .iter()
        .filter(|u| !u.pae_pdpte)
        .map(|u| u.gpa)
        .collect();
    let dirty_set = if is_write {
        walked.used.last().map(|u| u.gpa)
    } else {
        None
    };
    RefOutcome::Ok(RefTranslation {
        gpa: walked.gpa,
        level: walked.level,
        writable,
        user,
        executable,
        pkey: walked.pkey,
        entry_size: walked.entry_size,
        accessed_set,
        dirty_set,
    })
}

// ----------------------------------------------------------------------------------
// 32-bit paging (SDM 4.3)
// ----------------------------------------------------------------------------------

fn walk_32bit(
    mem: &impl Fn(u64, u8) -> Option<u64>,
    regs: RefRegs,
    gva: u64,
    pse: bool,
) -> Result<Walked, Step> {
    let lin = gva & 0xFFFF_FFFF;
    // M for PSE-36: min(MAXPHYADDR, 40).
    let m = (regs.maxphyaddr as u32).min(40);
    let mut used = Vec::new();

    // "A 4-KByte naturally aligned page directory is located at the physical address
    // specified in bits 31:12 of CR3. A PDE is selected using ... bits 31:2 from CR3
    // [31:12] and bits 31:22 of the linear address."
    let pde_addr = (regs.cr3 & 0xFFFF_F000) | (bits_of(lin, 22, 31) << 2);
    let pde = mem(pde_addr, 4).ok_or(Step::NotRam(pde_addr))?;
    used.push(Used {
        gpa: pde_addr,
        entry: pde,
        pae_pdpte: false,
    });
    if !bit(pde, 0) {
        return Err(Step::NotPresent);
    }
    if pse && bit(pde, 7) {
        // Table 4-4: 4-MByte page. Bits 21:(M-19) reserved; bits (M-20):13 are bits
        // (M-1):32 of the address; bits 31:22 are bits 31:22.
        if any_bits(pde, m - 19, 21) {
            return Err(Step::Reserved);
        }
        let high = bits_of(pde, 13, m - 20);
        let gpa = (high << 32) | (bits_of(pde, 22, 31) << 22) | bits_of(lin, 0, 21);
        return Ok(Walked {
            gpa,
            level: 2,
            entry_size: 4,
            used,
            pkey: 0,
        });
    }
    // Table 4-5 / 4-6: page table at bits 31:12 (no reserved bits in these entries).
    let pte_addr = (pde & 0xFFFF_F000) | (bits_of(lin, 12, 21) << 2);
    let pte = mem(pte_addr, 4).ok_or(Step::NotRam(pte_addr))?;
    used.push(Used {
        gpa: pte_addr,
        entry: pte,
        pae_pdpte: false,
    });
    if !bit(pte, 0) {
        return Err(Step::NotPresent);
    }
    let gpa = (pte & 0xFFFF_F000) | bits_of(lin, 0, 11);
    Ok(Walked {
        gpa,
        level: 1,
        entry_size: 4,
        used,
        pkey: 0,
    })
}

// ----------------------------------------------------------------------------------
// PAE paging (SDM 4.4)
// ----------------------------------------------------------------------------------

fn walk_pae(
    mem: &impl Fn(u64, u8) -> Option<u64>,
    regs: RefRegs,
    gva: u64,
    nxe: bool,
) -> Result<Walked, Step> {
    let lin = gva & 0xFFFF_FFFF;
    let m = regs.maxphyaddr as u32;
    let mut used = Vec::new();

    // 4.4.1: the PDPT is at CR3 bits 31:5; linear bits 31:30 select one of 4 PDPTEs.
    let pdpte_addr = (regs.cr3 & 0xFFFF_FFE0) + 8 * bits_of(lin, 30, 31);
    let pdpte = mem(pdpte_addr, 8).ok_or(Step::NotRam(pdpte_addr))?;
    used.push(Used {
        gpa: pdpte_addr,
        entry: pdpte,
        pae_pdpte: true,
    });
    if !bit(pdpte, 0) {
        return Err(Step::NotPresent);
    }
    // Table 4-8: reserved 2:1, 8:5, 63:M.
    if any_bits(pdpte, 1, 2) || any_bits(pdpte, 5, 8) || any_bits(pdpte, m, 63) {
        return Err(Step::Reserved);
    }
    let pd = pdpte & address_bits(m, 12);

    let pde_addr = pd | (bits_of(lin, 21, 29) << 3);
    let pde = mem(pde_addr, 8).ok_or(Step::NotRam(pde_addr))?;
    used.push(Used {
        gpa: pde_addr,
        entry: pde,
        pae_pdpte: false,
    });
    if !bit(pde, 0) {
        return Err(Step::NotPresent);
    }
    // Tables 4-9 and 4-10: bits 62:M reserved; bit 63 reserved unless NXE.
    if any_bits(pde, m, 62) || (!nxe && bit(pde, 63)) {
        return Err(Step::Reserved);
    }
    if bit(pde, 7) {
        // 2-MByte page: bits 20:13 reserved; address (M-1):21.
        if any_bits(pde, 13, 20) {
            return Err(Step::Reserved);
        }
        let gpa = (pde & address_bits(m, 21)) | bits_of(lin, 0, 20);
        return Ok(Walked {
            gpa,
            level: 2,
            entry_size: 8,
            used,
            pkey: 0,
        });
    }
    let pt = pde & address_bits(m, 12);
    let pte_addr = pt | (bits_of(lin, 12, 20) << 3);
    let pte = mem(pte_addr, 8).ok_or(Step::NotRam(pte_addr))?;
    used.push(Used {
        gpa: pte_addr,
        entry: pte,
        pae_pdpte: false,
    });
    if !bit(pte, 0) {
        return Err(Step::NotPresent);
    }
    // Table 4-11.
    if any_bits(pte, m, 62) || (!nxe && bit(pte, 63)) {
        return Err(Step::Reserved);
    }
    let gpa = (pte & address_bits(m, 12)) | bits_of(lin, 0, 11);
    Ok(Walked {
        gpa,
        level: 1,
        entry_size: 8,
        used,
        pkey: 0,
    })
}

/// Mask of address bits (M-1):low.
fn address_bits(m: u32, low: u32) -> u64 {
    ((1u64 << m) - 1) & !((1u64 << low) - 1)
}

// ----------------------------------------------------------------------------------
// 4-level and 5-level paging (SDM 4.5)
// ----------------------------------------------------------------------------------

fn walk_long(
    mem: &impl Fn(u64, u8) -> Option<u64>,
    regs: RefRegs,
    gva: u64,
    nxe: bool,
    la57: bool,
    pke: bool,
) -> Result<Walked, Step> {
    let m = regs.maxphyaddr as u32;
    let mut used = Vec::new();
    // Common reserved bits of every entry (Tables 4-14 .. 4-20): 51:M, and XD (bit 63)
    // when IA32_EFER.NXE = 0.
    let common_reserved = |e: u64| any_bits(e, m, 51) || (!nxe && bit(e, 63));

    // 4.5.2: the top table is at CR3 bits (M-1):12.
    let mut table = regs.cr3 & address_bits(m, 12);

    // The levels as the SDM names them, with the linear-address bits that index them.
    // (name, low bit of index)
    let mut levels: Vec<(&str, u32)> = Vec::new();
    if la57 {
        levels.push(("PML5E", 48));
    }
    levels.extend([("PML4E", 39), ("PDPTE", 30), ("PDE", 21), ("PTE", 12)]);

    for (name, low) in levels {
        let addr = table | (bits_of(gva, low, low + 8) << 3);
        let e = mem(addr, 8).ok_or(Step::NotRam(addr))?;
        used.push(Used {
            gpa: addr,
            entry: e,
            pae_pdpte: false,
        });
        if !bit(e, 0) {
            return Err(Step::NotPresent);
        }
        if common_reserved(e) {
            return Err(Step::Reserved);
        }
        let pkey = if pke { bits_of(e, 59, 62) as u8 } else { 0 };
        match name {
            // PML5E / PML4E: bit 7 (PS) is reserved (Tables 4-14, 4-15).
            "PML5E" | "PML4E" => {
                if bit(e, 7) {
                    return Err(Step::Reserved);
                }
            }
            "PDPTE" => {
                if bit(e, 7) {
                    // 1-GByte page (Table 4-16), only if the processor supports them;
                    // otherwise PS is reserved (4.5.4).
                    if !regs.gbpages || any_bits(e, 13, 29) {
                        return Err(Step::Reserved);
                    }
                    let gpa = (e & address_bits(m, 30)) | bits_of(gva, 0, 29);
                    return Ok(Walked {
                        gpa,
                        level: 3,
                        entry_size: 8,
                        used,
                        pkey,
                    });
                }
            }
            "PDE" => {
                if bit(e, 7) {
                    // 2-MByte page (Table 4-18): bits 20:13 reserved.
                    if any_bits(e, 13, 20) {
                        return Err(Step::Reserved);
                    }
                    let gpa = (e & address_bits(m, 21)) | bits_of(gva, 0, 20);
                    return Ok(Walked {
                        gpa,
                        level: 2,
                        entry_size: 8,
                        used,
                        pkey,
                    });
                }
            }
            _ => {
                // PTE (Table 4-20): bit 7 is PAT, no extra reserved bits.
                let gpa = (e & address_bits(m, 12)) | bits_of(gva, 0, 11);
                return Ok(Walked {
                    gpa,
                    level: 1,
                    entry_size: 8,
                    used,
                    pkey,
                });
            }
        }
        table = e & address_bits(m, 12);
    }
    // The PTE arm always returns.
    unreachable!("a 4/5-level walk always ends at a PTE or a large page")
}
