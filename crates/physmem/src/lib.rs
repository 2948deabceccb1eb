//! Host-physical memory, as one protection domain sees it.
//!
//! capvisor names memory by *host-physical address* (hpa): guest RAM, and the frames of
//! the mmu-server's page-table pool. Page-table entries hold hpas, exactly as EPT and
//! shadow page tables do on hardware. Each PD that touches such memory (the mmu-server
//! writing tables and reading guest page tables, the vmm-server's software vCPU walking
//! them as "hardware") maps the regions it may see into its own address space and
//! describes them with a [`PhysMap`]: hpa range -> local pointer.
//!
//! Two PDs may access the same region at the same time (the vCPU reading an SPTE while
//! the mmu-server zaps it for NX-huge-page recovery), exactly like a CPU walking a table
//! that another CPU writes. So every page-table-sized access goes through an atomic
//! (`u32`/`u64`, naturally aligned), and bulk copies are byte-wise volatile.
#![no_std]

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Size of the smallest page.
pub const PAGE_SIZE: u64 = 4096;

/// Most regions one map holds (guest RAM of a few VMs plus the frame pool).
pub const MAX_REGIONS: usize = 16;

/// One contiguous hpa range mapped at a local address.
#[derive(Clone, Copy, Debug)]
struct Region {
    hpa: u64,
    len: u64,
    base: NonNull<u8>,
    writable: bool,
}

/// Why a region could not be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The hpa or length is not page aligned, or the range wraps.
    Misaligned,
    /// The range overlaps a region already in the map.
    Overlap,
    /// The map already holds [`MAX_REGIONS`] regions.
    Full,
}

/// The hpa -> local-address map of one PD. Cheap to copy: it holds pointers, not memory.
#[derive(Clone, Debug, Default)]
pub struct PhysMap {
    regions: heapless::Vec<Region, MAX_REGIONS>,
}

// SAFETY: a PhysMap only hands out accesses through atomics or volatile copies, the
// same discipline hardware and other PDs use on this memory; the memory itself outlives
// the map by the contract of `add_region`.
unsafe impl Send for PhysMap {}
unsafe impl Sync for PhysMap {}

impl PhysMap {
    pub const fn new() -> Self {
        PhysMap {
            regions: heapless::Vec::new(),
        }
    }

    /// Makes `[hpa, hpa + len)` reachable through `base`.
    ///
    /// # Safety
    /// `base` must point to `len` bytes that stay valid (and, if `writable`, writable)
    /// for as long as this map or any clone of it is used, and that are accessed by
    /// everyone else only through atomics or volatile accesses.
    pub unsafe fn add_region(
        &mut self,
        hpa: u64,
        base: NonNull<u8>,
        len: u64,
        writable: bool,
    ) -> Result<(), MapError> {
        if !hpa.is_multiple_of(PAGE_SIZE)
            || !len.is_multiple_of(PAGE_SIZE)
            || len == 0
            || hpa.checked_add(len).is_none()
        {
            return Err(MapError::Misaligned);
        }
        if self
            .regions
            .iter()
            .any(|r| hpa < r.hpa + r.len && r.hpa < hpa + len)
        {
            return Err(MapError::Overlap);
        }
        self.regions
            .push(Region {
                hpa,
                len,
                base,
                writable,
            })
            .map_err(|_| MapError::Full)
    }

    /// The local address of `[hpa, hpa + len)` if it lies inside one region (and that
    /// region is writable, when `write` is asked for).
    #[inline]
    pub fn local(&self, hpa: u64, len: u64, write: bool) -> Option<NonNull<u8>> {
        for r in &self.regions {
            let off = hpa.wrapping_sub(r.hpa);
            if off < r.len && len <= r.len - off {
                if write && !r.writable {
                    return None;
                }
                // SAFETY: off + len <= r.len, inside the region given to add_region.
                return Some(unsafe { NonNull::new_unchecked(r.base.as_ptr().add(off as usize)) });
            }
        }
        None
    }

    /// Whether `hpa` is backed by any region.
    pub fn contains(&self, hpa: u64) -> bool {
        self.local(hpa, 1, false).is_some()
    }

    fn atomic_u64(&self, hpa: u64, write: bool) -> Option<&AtomicU64> {
        if !hpa.is_multiple_of(8) {
            return None;
        }
        let p = self.local(hpa, 8, write)?;
        // SAFETY: in bounds and 8-aligned (regions are page aligned); shared access to
        // this memory is atomic by the contract of add_region.
        Some(unsafe { AtomicU64::from_ptr(p.as_ptr().cast()) })
    }

    fn atomic_u32(&self, hpa: u64, write: bool) -> Option<&AtomicU32> {
        if !hpa.is_multiple_of(4) {
            return None;
        }
        let p = self.local(hpa, 4, write)?;
        // SAFETY: as in atomic_u64, with 4-byte alignment.
        Some(unsafe { AtomicU32::from_ptr(p.as_ptr().cast()) })
    }

    /// Reads an aligned u64 (a page-table entry). `None` if unbacked or misaligned.
    #[inline]
    pub fn read_u64(&self, hpa: u64) -> Option<u64> {
        Some(self.atomic_u64(hpa, false)?.load(Ordering::Acquire))
    }

    /// Writes an aligned u64. `None` if unbacked, read-only or misaligned.
    #[inline]
    pub fn write_u64(&self, hpa: u64, value: u64) -> Option<()> {
        self.atomic_u64(hpa, true)?.store(value, Ordering::Release);
        Some(())
    }

    /// Compare-and-exchange of an aligned u64, as the CPU does for accessed/dirty bits:
    /// `Ok(old)` if it held `current`, `Err(actual)` otherwise.
    #[inline]
    pub fn cmpxchg_u64(&self, hpa: u64, current: u64, new: u64) -> Option<Result<u64, u64>> {
        Some(self.atomic_u64(hpa, true)?.compare_exchange(
            current,
            new,
            Ordering::AcqRel,
            Ordering::Acquire,
        ))
    }

    /// Reads an aligned u32 (a 2-level 32-bit page-table entry).
    #[inline]
    pub fn read_u32(&self, hpa: u64) -> Option<u32> {
        Some(self.atomic_u32(hpa, false)?.load(Ordering::Acquire))
    }

    /// Writes an aligned u32.
    #[inline]
    pub fn write_u32(&self, hpa: u64, value: u32) -> Option<()> {
        self.atomic_u32(hpa, true)?.store(value, Ordering::Release);
        Some(())
    }

    /// Compare-and-exchange of an aligned u32.
    #[inline]
    pub fn cmpxchg_u32(&self, hpa: u64, current: u32, new: u32) -> Option<Result<u32, u32>> {
        Some(self.atomic_u32(hpa, true)?.compare_exchange(
            current,
            new,
            Ordering::AcqRel,
            Ordering::Acquire,
        ))
    }

    /// Copies `buf.len()` bytes from `hpa` (which must not cross a region end).
    pub fn read(&self, hpa: u64, buf: &mut [u8]) -> Option<()> {
        let p = self.local(hpa, buf.len() as u64, false)?;
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: in bounds by `local`; volatile because others may write concurrently.
            *b = unsafe { p.as_ptr().add(i).read_volatile() };
        }
        Some(())
    }

    /// Copies `buf` to `hpa` (which must not cross a region end, and be writable).
    pub fn write(&self, hpa: u64, buf: &[u8]) -> Option<()> {
        let p = self.local(hpa, buf.len() as u64, true)?;
        for (i, b) in buf.iter().enumerate() {
            // SAFETY: in bounds and writable by `local`.
            unsafe { p.as_ptr().add(i).write_volatile(*b) };
        }
        Some(())
    }

    /// Fills the page at `hpa` with zeroes.
    pub fn zero_page(&self, hpa: u64) -> Option<()> {
        let base = hpa & !(PAGE_SIZE - 1);
        for i in 0..PAGE_SIZE / 8 {
            self.write_u64(base + i * 8, 0)?;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;

    fn map_of(buf: &mut [u64], hpa: u64, writable: bool) -> PhysMap {
        let mut m = PhysMap::new();
        let len = (buf.len() * 8) as u64;
        unsafe {
            m.add_region(
                hpa,
                NonNull::new(buf.as_mut_ptr().cast()).unwrap(),
                len,
                writable,
            )
            .unwrap()
        };
        m
    }

    #[test]
    fn read_write_and_bounds() {
        let mut ram = vec![0u64; 1024]; // two pages
        let m = map_of(&mut ram, 0x10_0000, true);
        assert_eq!(m.write_u64(0x10_0008, 0xdead_beef), Some(()));
        assert_eq!(m.read_u64(0x10_0008), Some(0xdead_beef));
        assert_eq!(m.read_u32(0x10_0008), Some(0xdead_beef));
        assert_eq!(m.read_u64(0x10_0004), None, "misaligned");
        assert_eq!(m.read_u64(0x10_2000), None, "past the end");
        assert_eq!(m.read_u64(0x0f_fff8), None, "before the start");
        assert_eq!(m.cmpxchg_u64(0x10_0008, 1, 2), Some(Err(0xdead_beef)));
        assert_eq!(
            m.cmpxchg_u64(0x10_0008, 0xdead_beef, 2),
            Some(Ok(0xdead_beef))
        );
        let mut b = [0u8; 4];
        assert_eq!(m.read(0x10_0ffe, &mut b), Some(()));
        assert_eq!(m.read(0x10_1ffe, &mut b), None, "crosses the region end");
        m.write(0x10_1000, &[1, 2, 3]).unwrap();
        assert_eq!(m.read_u32(0x10_1000), Some(0x0003_0201));
        m.zero_page(0x10_1234).unwrap();
        assert_eq!(m.read_u32(0x10_1000), Some(0));
    }

    #[test]
    fn read_only_regions_and_overlaps() {
        let mut rom = vec![0u64; 512];
        let mut m = map_of(&mut rom, 0x2000, false);
        assert_eq!(m.write_u64(0x2000, 1), None);
        assert_eq!(m.read_u64(0x2000), Some(0));
        let mut other = vec![0u64; 512];
        let p = NonNull::new(other.as_mut_ptr().cast()).unwrap();
        assert_eq!(
            unsafe { m.add_region(0x2000, p, 4096, true) },
            Err(MapError::Overlap)
        );
        assert_eq!(
            unsafe { m.add_region(0x2001, p, 4096, true) },
            Err(MapError::Misaligned)
        );
        assert_eq!(unsafe { m.add_region(0x3000, p, 4096, true) }, Ok(()));
        assert!(m.contains(0x3fff) && !m.contains(0x4000));
    }
}
