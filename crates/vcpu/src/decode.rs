//! Instruction fetch and the decode cache.
//!
//! Decoded instructions are cached by (RIP, host-physical address, code size). An
//! entry is valid while the generation of its code page is unchanged: every guest
//! write to a page that holds cached code bumps that page's generation (SDM 11.6:
//! self-modifying code takes effect for the next instruction fetched). Generations are
//! kept per hpa page modulo a fixed table size; aliasing only causes extra decodes.
//! Instructions that cross a page boundary are decoded every time.

extern crate alloc;
use alloc::boxed::Box;
use core::ptr::NonNull;

use iced_x86::{Decoder, DecoderError, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use physmem::PhysMap;

use crate::paging::AccessKind;
use crate::regs::{is_canonical, RegSlot, SegReg, REG_SLOTS};
use crate::vcpu::{cr4, Step, Stop, Vcpu};

const ENTRIES: usize = 4096;
const GEN_PAGES: usize = 4096;

/// A decoded instruction plus what the engine needs that iced does not store.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Decoded {
    pub ins: Instruction,
    pub mnemonic: Mnemonic,
    /// Address size in bytes (2, 4, 8): the code size toggled by a 0x67 prefix.
    pub addr_size: u8,
    /// Operand size in bytes of operand 0 (or of operand 1 when operand 0 has none).
    pub size: u8,
    /// Operands 0 and 1, pre-classified so the hot handlers need no iced lookups.
    pub kind: [OpClass; 2],
    pub slot: [RegSlot; 2],
    /// The immediate of operand 1 (or 0), sign-extended as iced reports it.
    pub imm: u64,
    /// The memory operand, pre-resolved: base and index GPR numbers (`NO_REG` for
    /// none, and for RIP-relative forms, whose displacement iced already made
    /// absolute), the index scale and the segment.
    pub mem_base: u8,
    pub mem_index: u8,
    pub mem_scale: u8,
    pub mem_seg: SegReg,
    pub disp: u64,
}

/// No base/index register.
pub(crate) const NO_REG: u8 = 0xff;

/// What an operand is, for the fast paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpClass {
    /// A general-purpose register (`slot` says which part).
    Gpr,
    Mem,
    Imm,
    /// Anything else (segment/control registers, branch targets, string operands):
    /// handlers use iced's accessors.
    Other,
}

impl Decoded {
    fn new(ins: Instruction, addr_size: u8) -> Decoded {
        let mut kind = [OpClass::Other; 2];
        let mut slot = [REG_SLOTS[0]; 2];
        let mut imm = 0;
        let mut sizes = [0u8; 2];
        for i in 0..ins.op_count().min(2) {
            match ins.op_kind(i) {
                OpKind::Register => {
                    let s = REG_SLOTS[ins.op_register(i) as usize];
                    if s.size != 0 {
                        kind[i as usize] = OpClass::Gpr;
                        slot[i as usize] = s;
                        sizes[i as usize] = s.size;
                    }
                }
                OpKind::Memory => {
                    kind[i as usize] = OpClass::Mem;
                    sizes[i as usize] = ins.memory_size().size() as u8;
                }
                OpKind::Immediate8
                | OpKind::Immediate16
                | OpKind::Immediate32
                | OpKind::Immediate64
                | OpKind::Immediate8to16
                | OpKind::Immediate8to32
                | OpKind::Immediate8to64
                | OpKind::Immediate32to64 => {
                    kind[i as usize] = OpClass::Imm;
                    imm = ins.immediate(i);
                }
                _ => {}
            }
        }
        let gpr_of = |r: Register| {
            let s = REG_SLOTS[r as usize];
            if s.size == 0 {
                NO_REG
            } else {
                s.idx
            }
        };
        Decoded {
            ins,
            mnemonic: ins.mnemonic(),
            addr_size,
            size: if sizes[0] != 0 { sizes[0] } else { sizes[1] },
            kind,
            slot,
            imm,
            mem_base: gpr_of(ins.memory_base()),
            mem_index: gpr_of(ins.memory_index()),
            mem_scale: ins.memory_index_scale().trailing_zeros() as u8,
            mem_seg: crate::exec::seg_of(ins.memory_segment()),
            disp: ins.memory_displacement64(),
        }
    }
}

#[derive(Clone, Copy)]
struct Entry {
    rip: u64,
    hpa: u64,
    gen: u32,
    bitness: u32,
    d: Decoded,
}

pub(crate) struct DecodeCache {
    /// `ENTRIES` cached instructions plus one scratch slot (for instructions that are
    /// not cached). A raw allocation: the engine executes an instruction by reference
    /// from here while it mutates the rest of the vCPU, and nothing writes an entry
    /// between fetch and the end of execution.
    entries: NonNull<Entry>,
    page_gen: [u32; GEN_PAGES],
    /// Pages (hpa >> 12, modulo GEN_PAGES) that hold cached code.
    code_pages: [u64; GEN_PAGES / 64],
}

// SAFETY: the cache owns its entry allocation exclusively, like a Box.
unsafe impl Send for DecodeCache {}
unsafe impl Sync for DecodeCache {}

impl Drop for DecodeCache {
    fn drop(&mut self) {
        // SAFETY: allocated in new_boxed as a boxed slice of ENTRIES + 1 entries.
        unsafe {
            drop(Box::from_raw(core::ptr::slice_from_raw_parts_mut(
                self.entries.as_ptr(),
                ENTRIES + 1,
            )));
        }
    }
}

impl DecodeCache {
    pub(crate) fn new_boxed() -> Box<DecodeCache> {
        let empty = Entry {
            rip: u64::MAX,
            hpa: u64::MAX,
            gen: 0,
            bitness: 0,
            d: Decoded::new(Instruction::default(), 0),
        };
        let entries: Box<[Entry]> = alloc::vec![empty; ENTRIES + 1].into_boxed_slice();
        // SAFETY: Box::into_raw never returns null; freed in Drop.
        let entries = unsafe { NonNull::new_unchecked(Box::into_raw(entries) as *mut Entry) };
        Box::new(DecodeCache {
            entries,
            page_gen: [0; GEN_PAGES],
            code_pages: [0; GEN_PAGES / 64],
        })
    }

    #[inline(always)]
    fn entry(&self, i: usize) -> *mut Entry {
        debug_assert!(i <= ENTRIES);
        // SAFETY: i <= ENTRIES, inside the allocation.
        unsafe { self.entries.as_ptr().add(i) }
    }

    pub(crate) fn clear(&mut self) {
        for i in 0..ENTRIES {
            // SAFETY: in bounds; no reference to an entry is live outside `step`.
            unsafe { (*self.entry(i)).rip = u64::MAX };
        }
    }

    /// A guest write hit `hpa`: invalidate cached code of that page.
    #[inline(always)]
    pub(crate) fn note_write(&mut self, hpa: u64) {
        let p = (hpa >> 12) as usize & (GEN_PAGES - 1);
        let bit = 1u64 << (p & 63);
        if self.code_pages[p >> 6] & bit != 0 {
            self.code_pages[p >> 6] &= !bit;
            self.page_gen[p] = self.page_gen[p].wrapping_add(1);
        }
    }

    /// The VMM wrote guest memory in `[hpa, hpa + len)` behind the vCPU's back.
    pub(crate) fn note_write_range(&mut self, hpa: u64, len: u64) {
        let end = hpa.saturating_add(len);
        let mut p = hpa & !0xfff;
        while p < end {
            self.note_write(p);
            match p.checked_add(0x1000) {
                Some(n) => p = n,
                None => break,
            }
        }
    }

    #[inline(always)]
    fn index(rip: u64) -> usize {
        ((rip ^ (rip >> 12)) as usize) & (ENTRIES - 1)
    }
}

/// Address size from the prefixes (SDM 2.2.1, 3.6).
fn address_size(bytes: &[u8], bitness: u32) -> u8 {
    let mut has67 = false;
    for &b in bytes {
        match b {
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0xf0 | 0xf2 | 0xf3 => {}
            0x67 => has67 = true,
            0x40..=0x4f if bitness == 64 => {}
            _ => break,
        }
    }
    match (bitness, has67) {
        (64, false) => 8,
        (64, true) | (32, false) | (16, true) => 4,
        _ => 2,
    }
}

impl Vcpu {
    /// The linear address of the current RIP, with the CS limit / canonical checks.
    #[inline(always)]
    pub(crate) fn fetch_linear(&self, ip: u64) -> Step<u64> {
        if self.bitness == 64 {
            if !is_canonical(ip, self.cr4 & cr4::LA57 != 0) {
                return Err(Stop::gp0());
            }
            Ok(ip)
        } else {
            let cs = &self.seg[SegReg::Cs as usize];
            if ip > cs.limit as u64 {
                return Err(Stop::gp0());
            }
            Ok(cs.base.wrapping_add(ip) & 0xffff_ffff)
        }
    }

    /// Fetches and decodes the instruction at RIP.
    #[inline(always)]
    /// The pointer stays valid, and its target unchanged, until the next `fetch`.
    pub(crate) fn fetch(&mut self, mem: &PhysMap) -> Step<*const Decoded> {
        let rip = self.rip;
        let hpa = if self.bitness == 64 && rip & !0xfff == self.tlb.code_page {
            // Same code page as the last fetch: already canonical and translated.
            self.tlb.code_hpa | (rip & 0xfff)
        } else {
            let lin = self.fetch_linear(rip)?;
            let (hpa, _) = self.host_addr(mem, lin, AccessKind::Fetch)?;
            if self.bitness == 64 {
                self.tlb.code_page = rip & !0xfff;
                self.tlb.code_hpa = hpa & !0xfff;
            }
            hpa
        };
        // SAFETY: in bounds; entries are only written by decode_miss and clear.
        let e = unsafe { &*self.dcache.entry(DecodeCache::index(rip)) };
        if e.rip == rip
            && e.hpa == hpa
            && e.bitness == self.bitness
            && e.gen == self.dcache.page_gen[(hpa >> 12) as usize & (GEN_PAGES - 1)]
        {
            return Ok(&e.d);
        }
        let lin = self.fetch_linear(rip)?;
        let (hpa, host) = self.host_addr(mem, lin, AccessKind::Fetch)?;
        self.decode_miss(mem, rip, lin, hpa, host)
    }

    /// Reads up to 15 instruction bytes at `lin` (fetching from the next page only if
    /// the instruction needs it).
    #[inline(never)]
    fn decode_miss(
        &mut self,
        mem: &PhysMap,
        rip: u64,
        lin: u64,
        hpa: u64,
        host: usize,
    ) -> Step<*const Decoded> {
        self.stats.decode_cache_misses += 1;
        let avail = (0x1000 - (lin & 0xfff)).min(15) as usize;
        let mut buf = [0u8; 15];
        for (i, b) in buf.iter_mut().take(avail).enumerate() {
            // SAFETY: within the page translated by `fetch`.
            *b = unsafe { ((host + i) as *const u8).read_volatile() };
        }
        let mut n = avail;
        let mut decoder = Decoder::with_ip(self.bitness, &buf[..n], rip, DecoderOptions::NONE);
        let mut ins = decoder.decode();
        if ins.is_invalid() && decoder.last_error() == DecoderError::NoMoreBytes && n < 15 {
            // The instruction continues on the next page: fetch it (this may fault
            // with CR2 = the first byte of that page).
            let next = if self.bitness == 64 {
                lin.wrapping_add(avail as u64)
            } else {
                lin.wrapping_add(avail as u64) & 0xffff_ffff
            };
            let (_, host2) = self.host_addr(mem, next, AccessKind::Fetch)?;
            for (i, b) in buf.iter_mut().skip(avail).enumerate() {
                // SAFETY: within the next page, just translated.
                *b = unsafe { ((host2 + i) as *const u8).read_volatile() };
            }
            n = 15;
            decoder = Decoder::with_ip(self.bitness, &buf[..n], rip, DecoderOptions::NONE);
            ins = decoder.decode();
        }
        if ins.is_invalid() {
            // Longer than 15 bytes is #GP (SDM 2.3.11); anything else iced rejects is #UD.
            return Err(if decoder.last_error() == DecoderError::NoMoreBytes {
                Stop::gp0()
            } else {
                Stop::ud()
            });
        }
        let d = Decoded::new(ins, address_size(&buf[..n], self.bitness));
        if ins.len() <= avail {
            let p = (hpa >> 12) as usize & (GEN_PAGES - 1);
            let dc = &mut self.dcache;
            dc.code_pages[p >> 6] |= 1 << (p & 63);
            let slot = dc.entry(DecodeCache::index(rip));
            // SAFETY: in bounds; no reference into the entries is live during fetch.
            unsafe {
                *slot = Entry {
                    rip,
                    hpa,
                    gen: dc.page_gen[p],
                    bitness: self.bitness,
                    d,
                };
                return Ok(&(*slot).d);
            }
        }
        let slot = self.dcache.entry(ENTRIES);
        // SAFETY: the scratch slot, same discipline.
        unsafe {
            (*slot).d = d;
            (*slot).rip = u64::MAX;
            Ok(&(*slot).d)
        }
    }

    /// The raw bytes of the current instruction (for the unimplemented-instruction
    /// exit). Best effort: unreadable bytes read as 0.
    pub(crate) fn current_bytes(&mut self, mem: &PhysMap, len: usize) -> [u8; 15] {
        let mut out = [0u8; 15];
        for (i, b) in out.iter_mut().take(len.min(15)).enumerate() {
            let ip = self.wrap_ip(self.rip.wrapping_add(i as u64));
            if let Ok(lin) = self.fetch_linear(ip) {
                if let Ok((_, p)) = self.host_addr(mem, lin, AccessKind::Fetch) {
                    // SAFETY: within a translated page.
                    *b = unsafe { (p as *const u8).read_volatile() };
                }
            }
        }
        out
    }

    /// The VMM wrote guest memory `[hpa, hpa + len)`: forget code decoded from it.
    pub fn note_guest_write(&mut self, hpa: u64, len: u64) {
        self.dcache.note_write_range(hpa, len);
    }
}
