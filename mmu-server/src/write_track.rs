//! Write tracking and unprotect (MMU_REFERENCE.md section 6).
//!
//! A guest page table that we shadow must not change behind our back: its gfn is
//! write-tracked, i.e. never mapped writable, so a guest write to it faults. Then
//! either we *unprotect* it (zap every shadow of that table, so the gfn becomes plain
//! data again and the write can simply be retried) or the vmm-server *emulates* the
//! write and tells us (`EmulatedWrite`), and we zap the shadow entries it made stale.

use crate::mmu::Mmu;
use crate::tdp::Fault;
use crate::vm::Vm;
use ipc::{EmulatedWrite, Error, FaultOutcome};

/// How much retrying a write-protect fault allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFaultKind {
    /// A TDP fault; `guest_page_walk` is KVM's `is_write_to_guest_page_table` (the
    /// write was the CPU's own, to a guest paging structure, during a guest walk).
    Direct { guest_page_walk: bool },
    /// A shadow fault. `own_translation`: the written gfn is one of the guest tables
    /// that translate the faulting address itself (KVM's `EMULTYPE_WRITE_PF_TO_SP`):
    /// unprotecting it would unmap the very address and fault again, so emulate.
    /// `event_pending`: an event is being delivered, which the emulator cannot
    /// complete, so retrying is the only way forward.
    Indirect {
        own_translation: bool,
        event_pending: bool,
    },
}

impl Vm {
    /// Whether `gfn` is a shadowed guest page table of this VM.
    pub fn gfn_tracked(&self, mmu: &Mmu, gfn: u64) -> bool {
        mmu.vms[self.index as usize % crate::mmu::MAX_VMS].indirect_pages != 0
            && mmu.sps.is_tracked(self.index, gfn)
    }

    /// Whether any gfn of `[first, first + pages)` is write-tracked (a huge page cannot
    /// map it: it could not be write-protected in part).
    pub fn range_tracked(&self, mmu: &Mmu, first: u64, pages: u64) -> bool {
        if mmu.vms[self.index as usize % crate::mmu::MAX_VMS].indirect_pages == 0 {
            return false;
        }
        // Only the pool's frames can hold pages (the metadata array is sized for the
        // largest pool).
        let frames = mmu.pool.total_frames() as crate::pool::FrameId;
        (0..frames).any(|id| {
            let sp = mmu.sps.get(id);
            sp.in_use
                && sp.vm == self.index
                && sp.hashed
                && sp.has_gptes()
                && sp.gfn.wrapping_sub(first) < pages
        })
    }

    /// `kvm_mmu_write_protect_fault`: a write hit a write-tracked gfn.
    ///
    /// 1. The same (rip, address) as the last unprotect-and-retry: the retry did not
    ///    help (typically the write unmaps the instruction's own code, which then
    ///    faults the table back in and protects it again): emulate.
    /// 2. Otherwise forget the last retry.
    /// 3. Retry only where retrying is allowed and unprotecting zapped at least one
    ///    shadow page; resuming without having unprotected anything would fault again
    ///    forever (seed 5). Everything else is emulated.
    pub fn write_protect_fault(
        &mut self,
        mmu: &mut Mmu,
        rip: u64,
        addr: u64,
        gfn: u64,
        kind: WriteFaultKind,
        fl: &mut u32,
    ) -> Result<Fault, Error> {
        mmu.stats(self.index).write_protect_faults += 1;
        if self.last_retry == Some((rip, addr)) {
            mmu.stats(self.index).emulations += 1;
            return Ok(Fault::of(FaultOutcome::Emulate));
        }
        self.last_retry = None;
        let may_retry = match kind {
            WriteFaultKind::Direct { guest_page_walk } => guest_page_walk,
            WriteFaultKind::Indirect {
                own_translation,
                event_pending,
            } => event_pending || !own_translation,
        };
        if may_retry && self.unprotect_gfn_and_retry(mmu, rip, addr, gfn, false, fl)? {
            mmu.stats(self.index).unprotect_retries += 1;
            return Ok(Fault::of(FaultOutcome::Retry));
        }
        mmu.stats(self.index).emulations += 1;
        Ok(Fault::of(FaultOutcome::Emulate))
    }

    /// `__kvm_mmu_unprotect_gfn_and_retry`: zap every shadow page of the guest table at
    /// `gfn`; remember (rip, addr) if anything was zapped (or `always`). Returns whether
    /// anything was zapped. A zapped current root is replaced at once, and the new root
    /// goes back in the reply.
    pub fn unprotect_gfn_and_retry(
        &mut self,
        mmu: &mut Mmu,
        rip: u64,
        addr: u64,
        gfn: u64,
        always: bool,
        fl: &mut u32,
    ) -> Result<bool, Error> {
        if mmu.vms[self.index as usize % crate::mmu::MAX_VMS].indirect_pages == 0 {
            return Ok(false);
        }
        let zapped = mmu.zap_gfn(self.index, gfn);
        if zapped > 0 || always {
            self.last_retry = Some((rip, addr));
        }
        if zapped > 0 {
            // Zapped tables may be reachable from any cached root, under any PCID.
            *fl |= ipc::flush::GUEST;
            self.free_obsolete_roots(mmu);
            self.load_root(mmu, fl)?;
        }
        Ok(zapped > 0)
    }

    /// `kvm_mmu_track_write`: the vmm-server emulated a guest write of `len` bytes at
    /// `gpa`. For every shadow of the guest table there: a misaligned write, or the
    /// third write in a row to a non-leaf table the guest is not using for
    /// translation any more (flooding: it is being recycled as data), zaps the whole
    /// shadow page; otherwise only the entries shadowing the written guest entry are
    /// zapped (the next fault through them rebuilds them from the new value).
    pub fn emulated_write(
        &mut self,
        mmu: &mut Mmu,
        req: &EmulatedWrite,
        fl: &mut u32,
    ) -> Result<(), Error> {
        let len = req.len as u64;
        let end = req.gpa.checked_add(len - 1).ok_or(Error::BadAddress)?;
        let first = req.gpa >> 12;
        let last = end >> 12;
        // A write that crosses into the next page is misaligned for both pages.
        let crosses = first != last;
        self.track_write_gfn(mmu, first, req.gpa, len, crosses, fl);
        if crosses {
            self.track_write_gfn(mmu, last, req.gpa, len, true, fl);
        }
        // A zapped current root is replaced now, named in the reply.
        if !self.root_usable(mmu, &self.roots.current) {
            self.free_obsolete_roots(mmu);
            *fl |= ipc::flush::CURRENT;
        }
        self.load_root(mmu, fl)
    }

    fn track_write_gfn(
        &mut self,
        mmu: &mut Mmu,
        gfn: u64,
        gpa: u64,
        len: u64,
        crosses: bool,
        fl: &mut u32,
    ) {
        if mmu.vms[self.index as usize % crate::mmu::MAX_VMS].indirect_pages == 0 {
            return;
        }
        // Collect first: zapping changes the hash chain being walked.
        let mut pages: heapless::Vec<crate::pool::FrameId, 64> = heapless::Vec::new();
        for id in mmu.sps.ids_in_use() {
            let sp = mmu.sps.get(id);
            if sp.vm == self.index
                && sp.hashed
                && sp.gfn == gfn
                && sp.has_gptes()
                && pages.push(id).is_err()
            {
                break;
            }
        }
        for id in pages {
            let sp = *mmu.sps.get(id);
            if !sp.in_use || sp.role.invalid() {
                continue;
            }
            let misaligned = crosses || write_misaligned(sp.role.has_4_byte_gpte(), gpa, len);
            // detect_write_flooding: leaf tables are exempt (the guest rewrites PTEs
            // in place all the time); KVM counts from the last fault that used the page.
            let flooded = sp.role.level() > 1 && {
                let p = mmu.sps.get_mut(id);
                p.flood = p.flood.saturating_add(1);
                p.flood >= 3
            };
            if misaligned || flooded {
                mmu.zap_page(id);
                *fl |= ipc::flush::GUEST;
                continue;
            }
            let (start, count) = match written_sptes(
                sp.role.has_4_byte_gpte(),
                sp.role.level(),
                sp.role.quadrant(),
                gpa,
            ) {
                Some(r) => r,
                None => continue,
            };
            for i in start..start + count {
                if mmu.clear_entry(id, i) {
                    *fl |= ipc::flush::GUEST;
                }
            }
        }
    }
}

/// `detect_write_misaligned`: a write that does not cover exactly whole guest
/// entries. One aligned byte is allowed: guests clear status bits with a byte-sized
/// AND (Linux's `clear_bit`).
pub fn write_misaligned(four_byte_gpte: bool, gpa: u64, len: u64) -> bool {
    let offset = gpa & 0xFFF;
    let pte_size = if four_byte_gpte { 4 } else { 8 };
    if offset & (pte_size - 1) == 0 && len == 1 {
        return false;
    }
    let misaligned = (offset ^ (offset + len - 1)) & !(pte_size - 1) != 0;
    misaligned || len < 4
}

/// `get_written_sptes`: the shadow entries of a page (level, quadrant) that shadow the
/// guest entry written at `gpa`, as (first index, count); `None` when the written entry
/// belongs to another quadrant. With 4-byte guest entries, a guest PT (1024 entries)
/// is shadowed by two PAE tables and a guest PD by four, each 4-MByte PDE by two
/// 2-MByte shadow PDEs.
pub fn written_sptes(
    four_byte_gpte: bool,
    level: u8,
    quadrant: u8,
    gpa: u64,
) -> Option<(usize, usize)> {
    let offset = gpa & 0xFFF;
    if !four_byte_gpte {
        return Some(((offset / 8) as usize, 1));
    }
    let guest_index = offset / 4;
    let (q, first, count) = if level == 2 {
        (guest_index / 256, (guest_index % 256) * 2, 2)
    } else {
        (guest_index / 512, guest_index % 512, 1)
    };
    (q == quadrant as u64).then_some((first as usize, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misaligned_writes() {
        assert!(!write_misaligned(false, 0x1008, 8));
        assert!(!write_misaligned(false, 0x1008, 1), "aligned single byte");
        assert!(write_misaligned(false, 0x1009, 1));
        assert!(write_misaligned(false, 0x1004, 8), "straddles two entries");
        assert!(write_misaligned(false, 0x1008, 2), "partial entry");
        assert!(!write_misaligned(false, 0x1008, 4), "low half of one entry");
        assert!(!write_misaligned(true, 0x1004, 4));
        assert!(write_misaligned(true, 0x1004, 8), "two 4-byte entries");
    }

    #[test]
    fn written_entries_by_quadrant() {
        assert_eq!(written_sptes(false, 1, 0, 0x5010), Some((2, 1)));
        // 32-bit PT entry 600 lives in quadrant 1 at index 88.
        assert_eq!(written_sptes(true, 1, 1, 600 * 4), Some((88, 1)));
        assert_eq!(written_sptes(true, 1, 0, 600 * 4), None);
        // 32-bit PDE 300: quadrant 1, shadow PDEs 88 and 89.
        assert_eq!(written_sptes(true, 2, 1, 300 * 4), Some((88, 2)));
        assert_eq!(written_sptes(true, 2, 3, 300 * 4), None);
    }
}
