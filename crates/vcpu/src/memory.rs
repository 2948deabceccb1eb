//! Guest memory accesses: segmentation (SDM 3.4, 5.3), then linear -> host through the
//! paging unit ([`crate::paging::Mmu::translate`]), split at page boundaries.
//!
//! The fast path caches, per access kind, the last host page of a few linear pages.
//! It is a strict subset of what the Mmu's TLB may hold, so it never shows a mapping
//! the TLB would not; it is dropped whenever the TLB is flushed or the paging context
//! (CRs, EFER, CPL, EFLAGS.AC, PKRU) changes, because permissions depend on them.

extern crate alloc;
use alloc::boxed::Box;
use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};

use physmem::PhysMap;

use crate::exit::{ExitReason, VmExit};
use crate::paging::{Access, AccessKind, Fault};
use crate::regs::{access, is_canonical, SegReg};
use crate::vcpu::{cr4, vector, Step, Stop, Vcpu};

const WAYS: usize = 64;
const INVALID: u64 = u64::MAX;

/// One direct-mapped set of cached page translations.
struct PageCache {
    /// Linear page number, or INVALID.
    tag: [u64; WAYS],
    /// Host address of the page.
    host: [usize; WAYS],
    /// Host-physical address of the page.
    hpa: [u64; WAYS],
}

impl PageCache {
    fn clear(&mut self) {
        self.tag = [INVALID; WAYS];
    }
}

/// The translation fast path of one privilege class.
struct Bank {
    read: PageCache,
    write: PageCache,
    fetch: PageCache,
}

/// Per-kind translation fast path, one bank for user (CPL 3) and one for supervisor
/// accesses: permissions depend on the privilege, so each bank holds only what was
/// checked at its own; a privilege change switches banks instead of dropping them
/// (a system call would otherwise refill every page).
pub(crate) struct FastTlb {
    banks: [Bank; 2],
    /// The 64-bit-mode code page fetched from last (linear page, or INVALID) and its
    /// hpa: consecutive instructions on one page skip the canonical check and the
    /// lookup above. Cleared with everything else and on a privilege change.
    pub(crate) code_page: u64,
    pub(crate) code_hpa: u64,
}

impl FastTlb {
    pub(crate) fn new_boxed() -> Box<FastTlb> {
        let empty = || PageCache {
            tag: [INVALID; WAYS],
            host: [0; WAYS],
            hpa: [0; WAYS],
        };
        let bank = || Bank {
            read: empty(),
            write: empty(),
            fetch: empty(),
        };
        Box::new(FastTlb {
            banks: [bank(), bank()],
            code_page: INVALID,
            code_hpa: 0,
        })
    }
    pub(crate) fn clear(&mut self) {
        for b in self.banks.iter_mut() {
            b.read.clear();
            b.write.clear();
            b.fetch.clear();
        }
        self.code_page = INVALID;
    }
    /// Drops every cached translation of one linear page, in every bank and kind:
    /// a page fault or EPT violation on it made the Mmu drop its TLB entries for the
    /// address (SDM 4.10.4.2), and this cache must never outlive those.
    pub(crate) fn drop_page(&mut self, linear: u64) {
        let page = linear >> 12;
        let i = (page as usize) & (WAYS - 1);
        for b in self.banks.iter_mut() {
            for c in [&mut b.read, &mut b.write, &mut b.fetch] {
                if c.tag[i] == page {
                    c.tag[i] = INVALID;
                }
            }
        }
        if self.code_page == page {
            self.code_page = INVALID;
        }
    }
    /// Drops the write translations only (CR0.WP changed: reads and fetches keep
    /// their rights).
    pub(crate) fn clear_writes(&mut self) {
        for b in self.banks.iter_mut() {
            b.write.clear();
        }
    }
    #[inline(always)]
    fn set(&mut self, kind: AccessKind, user: bool) -> &mut PageCache {
        let b = &mut self.banks[user as usize];
        match kind {
            AccessKind::Read => &mut b.read,
            AccessKind::Write => &mut b.write,
            AccessKind::Fetch => &mut b.fetch,
        }
    }
}

/// Loads `size` bytes (1, 2, 4, 8) at host address `p`. Aligned accesses are atomic:
/// other PDs (the mmu-server) may update the same words, e.g. A/D bits.
#[inline(always)]
pub(crate) unsafe fn load(p: *const u8, size: u8) -> u64 {
    let aligned = (p as usize) & (size as usize - 1) == 0;
    match size {
        1 => (*(p as *const core::sync::atomic::AtomicU8)).load(Ordering::Relaxed) as u64,
        2 if aligned => (*(p as *const AtomicU16)).load(Ordering::Relaxed) as u64,
        4 if aligned => (*(p as *const AtomicU32)).load(Ordering::Relaxed) as u64,
        8 if aligned => (*(p as *const AtomicU64)).load(Ordering::Relaxed),
        2 => (p as *const u16).read_unaligned() as u64,
        4 => (p as *const u32).read_unaligned() as u64,
        _ => (p as *const u64).read_unaligned(),
    }
}

#[inline(always)]
pub(crate) unsafe fn store(p: *mut u8, size: u8, v: u64) {
    let aligned = (p as usize) & (size as usize - 1) == 0;
    match size {
        1 => (*(p as *const core::sync::atomic::AtomicU8)).store(v as u8, Ordering::Relaxed),
        2 if aligned => (*(p as *const AtomicU16)).store(v as u16, Ordering::Relaxed),
        4 if aligned => (*(p as *const AtomicU32)).store(v as u32, Ordering::Relaxed),
        8 if aligned => (*(p as *const AtomicU64)).store(v, Ordering::Relaxed),
        2 => (p as *mut u16).write_unaligned(v as u16),
        4 => (p as *mut u32).write_unaligned(v as u32),
        _ => (p as *mut u64).write_unaligned(v),
    }
}

impl Vcpu {
    /// Turns a Mmu fault into the exception or exit it is.
    pub(crate) fn fault_stop(&mut self, f: Fault) -> Stop {
        match f {
            Fault::PageFault { error_code, linear } => {
                self.pf_linear = linear;
                Stop::fault(vector::PF, Some(error_code))
            }
            Fault::EptViolation {
                gpa,
                linear,
                qualification,
            } => {
                let mut e = VmExit::new(ExitReason::EptViolation, self.rip)
                    .with_qualification(qualification);
                e.guest_physical = Some(gpa);
                e.guest_linear = linear;
                self.exit = e;
                Stop::Exit
            }
            Fault::EptMisconfig { gpa } => {
                let mut e = VmExit::new(ExitReason::EptMisconfig, self.rip);
                e.guest_physical = Some(gpa);
                self.exit = e;
                Stop::Exit
            }
            Fault::BadHpa { hpa } => self.bad_hpa(hpa),
            // Only load_pdptes reports this; MOV to CRn turns it into #GP(0).
            Fault::PdpteReserved { .. } => Stop::gp0(),
        }
    }

    pub(crate) fn bad_hpa(&mut self, hpa: u64) -> Stop {
        let mut e = VmExit::new(ExitReason::BadHpa, self.rip);
        e.guest_physical = Some(hpa);
        self.exit = e;
        Stop::Exit
    }

    /// Translates the page of `linear` for `kind`; returns (hpa of page, host page).
    /// `implicit`: a supervisor-mode system-structure access (SDM 4.6).
    #[inline(never)]
    pub(crate) fn translate_slow(
        &mut self,
        mem: &PhysMap,
        linear: u64,
        kind: AccessKind,
        implicit: bool,
    ) -> Step<(u64, usize)> {
        let ctx = self.paging_ctx();
        let hpa = match self.mmu.translate(
            mem,
            &ctx,
            linear,
            Access {
                kind,
                implicit_supervisor: implicit,
            },
        ) {
            Ok(h) => h & !0xfff,
            Err(f) => {
                self.tlb.drop_page(linear);
                return Err(self.fault_stop(f));
            }
        };
        let Some(host) = mem.local(hpa, 4096, kind == AccessKind::Write) else {
            return Err(self.bad_hpa(hpa));
        };
        let host = host.as_ptr() as usize;
        if !implicit {
            let user = self.cpl() == 3;
            let set = self.tlb.set(kind, user);
            let i = ((linear >> 12) as usize) & (WAYS - 1);
            set.tag[i] = linear >> 12;
            set.host[i] = host;
            set.hpa[i] = hpa;
        }
        Ok((hpa, host))
    }

    /// Host address of `linear` for a `kind` access that stays within its page.
    #[inline(always)]
    pub(crate) fn host_addr(
        &mut self,
        mem: &PhysMap,
        linear: u64,
        kind: AccessKind,
    ) -> Step<(u64, usize)> {
        let user = self.cpl() == 3;
        let set = self.tlb.set(kind, user);
        let i = ((linear >> 12) as usize) & (WAYS - 1);
        if set.tag[i] == linear >> 12 {
            let off = (linear & 0xfff) as usize;
            return Ok((set.hpa[i] | off as u64, set.host[i] + off));
        }
        let (hpa, host) = self.translate_slow(mem, linear, kind, false)?;
        let off = (linear & 0xfff) as usize;
        Ok((hpa | off as u64, host + off))
    }

    /// Reads `size` (1..=8) bytes at a linear address.
    #[inline(always)]
    pub(crate) fn read_linear(&mut self, mem: &PhysMap, linear: u64, size: u8) -> Step<u64> {
        if (linear & 0xfff) + size as u64 <= 0x1000 {
            let (_, p) = self.host_addr(mem, linear, AccessKind::Read)?;
            // SAFETY: p..p+size lies in a page `mem` maps (checked by translate_slow).
            return Ok(unsafe { load(p as *const u8, size) });
        }
        self.read_split(mem, linear, size, false)
    }

    /// Reads `size` bytes at a linear address as an implicit supervisor access
    /// (descriptor tables, IDT, TSS).
    pub(crate) fn read_linear_implicit(
        &mut self,
        mem: &PhysMap,
        linear: u64,
        size: u8,
    ) -> Step<u64> {
        self.read_split(mem, linear, size, true)
    }

    #[inline(never)]
    fn read_split(&mut self, mem: &PhysMap, linear: u64, size: u8, implicit: bool) -> Step<u64> {
        // Translate both pages before reading (an access faults as a whole).
        let first = 0x1000 - (linear & 0xfff);
        let (_, p0) = self.translate_slow(mem, linear, AccessKind::Read, implicit)?;
        let p1 = if first < size as u64 {
            Some(
                self.translate_slow(mem, linear.wrapping_add(first), AccessKind::Read, implicit)?
                    .1,
            )
        } else {
            None
        };
        let mut v = 0u64;
        for i in 0..size as u64 {
            let (base, off) = if i < first {
                (p0, (linear & 0xfff) + i)
            } else {
                (p1.unwrap_or(p0), i - first)
            };
            // SAFETY: inside a translated, mapped page.
            let b = unsafe { load((base + off as usize) as *const u8, 1) };
            v |= b << (8 * i);
        }
        Ok(v)
    }

    /// Writes `size` (1..=8) bytes at a linear address.
    #[inline(always)]
    pub(crate) fn write_linear(&mut self, mem: &PhysMap, linear: u64, size: u8, v: u64) -> Step {
        if (linear & 0xfff) + size as u64 <= 0x1000 {
            let (hpa, p) = self.host_addr(mem, linear, AccessKind::Write)?;
            self.dcache.note_write(hpa);
            // SAFETY: as in read_linear, and the region is writable.
            unsafe { store(p as *mut u8, size, v) };
            return Ok(());
        }
        self.write_split(mem, linear, size, v, false)
    }

    pub(crate) fn write_linear_implicit(
        &mut self,
        mem: &PhysMap,
        linear: u64,
        size: u8,
        v: u64,
    ) -> Step {
        self.write_split(mem, linear, size, v, true)
    }

    #[inline(never)]
    fn write_split(
        &mut self,
        mem: &PhysMap,
        linear: u64,
        size: u8,
        v: u64,
        implicit: bool,
    ) -> Step {
        let first = 0x1000 - (linear & 0xfff);
        let (h0, p0) = self.translate_slow(mem, linear, AccessKind::Write, implicit)?;
        let second = if first < size as u64 {
            Some(self.translate_slow(
                mem,
                linear.wrapping_add(first),
                AccessKind::Write,
                implicit,
            )?)
        } else {
            None
        };
        self.dcache.note_write(h0);
        if let Some((h1, _)) = second {
            self.dcache.note_write(h1);
        }
        for i in 0..size as u64 {
            let (base, off) = if i < first {
                (p0, (linear & 0xfff) + i)
            } else {
                (second.map(|s| s.1).unwrap_or(p0), i - first)
            };
            // SAFETY: inside a translated, mapped, writable page.
            unsafe { store((base + off as usize) as *mut u8, 1, v >> (8 * i)) };
        }
        Ok(())
    }

    /// Checks that a write of `size` bytes at `linear` would succeed (both pages), so
    /// that multi-part writes (far calls, event frames) fault before changing anything.
    pub(crate) fn probe_write(
        &mut self,
        mem: &PhysMap,
        linear: u64,
        size: u64,
        implicit: bool,
    ) -> Step {
        self.translate_slow(mem, linear, AccessKind::Write, implicit)?;
        let last = linear.wrapping_add(size - 1);
        if (last ^ linear) & !0xfff != 0 {
            self.translate_slow(mem, last & !0xfff, AccessKind::Write, implicit)?;
        }
        Ok(())
    }

    /// Segmentation: the linear address of `seg:offset` for a `size`-byte access
    /// (SDM 3.4, 5.3 limit checks; 64-bit mode: FS/GS bases only and a canonical
    /// check, SDM 3.4.2.1).
    #[inline(always)]
    pub(crate) fn seg_linear(&self, seg: SegReg, offset: u64, size: u8, write: bool) -> Step<u64> {
        let s = &self.seg[seg as usize];
        if self.bitness == 64 {
            let lin = match seg {
                SegReg::Fs | SegReg::Gs => s.base.wrapping_add(offset),
                _ => offset,
            };
            if !is_canonical(lin, self.cr4 & cr4::LA57 != 0) {
                return Err(if seg == SegReg::Ss {
                    Stop::ss(0)
                } else {
                    Stop::gp0()
                });
            }
            return Ok(lin);
        }
        self.seg_linear_legacy(seg, offset, size, write)
    }

    fn seg_linear_legacy(&self, seg: SegReg, offset: u64, size: u8, write: bool) -> Step<u64> {
        let s = &self.seg[seg as usize];
        let fail = || {
            if seg == SegReg::Ss {
                Stop::ss(0)
            } else {
                Stop::gp0()
            }
        };
        if !s.usable() {
            return Err(fail());
        }
        let ty = s.access & access::TYPE_MASK;
        let code = ty & access::CODE != 0;
        if write && (code || ty & access::RW == 0) {
            return Err(fail());
        }
        // A data read through an execute-only code segment (CS included) is #GP.
        if !write && code && ty & access::RW == 0 {
            return Err(fail());
        }
        let last = offset.wrapping_add(size as u64 - 1);
        if !code && ty & access::DC != 0 {
            // Expand-down: valid offsets are (limit, top].
            let top = if s.access & access::DB != 0 {
                0xffff_ffff
            } else {
                0xffff
            };
            if offset <= s.limit as u64 || last > top {
                return Err(fail());
            }
        } else if last > s.limit as u64 || last < offset {
            return Err(fail());
        }
        Ok(s.base.wrapping_add(offset) & 0xffff_ffff)
    }

    /// Reads through a segment.
    #[inline(always)]
    pub(crate) fn read_seg(
        &mut self,
        mem: &PhysMap,
        seg: SegReg,
        offset: u64,
        size: u8,
    ) -> Step<u64> {
        let lin = self.seg_linear(seg, offset, size, false)?;
        self.read_linear(mem, lin, size)
    }

    #[inline(always)]
    pub(crate) fn write_seg(
        &mut self,
        mem: &PhysMap,
        seg: SegReg,
        offset: u64,
        size: u8,
        v: u64,
    ) -> Step {
        let lin = self.seg_linear(seg, offset, size, true)?;
        self.write_linear(mem, lin, size, v)
    }
}
