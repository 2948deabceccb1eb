//! Untyped memory and CNode slots of the root task.
//!
//! The kernel places each object made by `Untyped_Retype` at the untyped's free index
//! rounded up to the object's size (seL4 manual, "Kernel memory allocation"), so the
//! allocator keeps the same watermark per untyped and knows whether an object fits
//! before it asks.

use alloc::vec::Vec;
use sel4::cap_type::Untyped;
use sel4::{init_thread, BootInfo, Cap, CapType, ObjectBlueprint};

/// One untyped capability and how much of it is used.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    pub cap: Cap<Untyped>,
    pub size_bits: usize,
    pub used: u64,
}

impl Region {
    pub fn new(cap: Cap<Untyped>, size_bits: usize) -> Region {
        Region {
            cap,
            size_bits,
            used: 0,
        }
    }

    /// Reserves room for an object of 2^bits bytes; false if it does not fit.
    pub fn reserve(&mut self, bits: usize) -> bool {
        if bits > self.size_bits {
            return false;
        }
        let size = 1u64 << bits;
        let start = self.used.next_multiple_of(size);
        match start.checked_add(size) {
            Some(end) if end <= 1u64 << self.size_bits => {
                self.used = end;
                true
            }
            _ => false,
        }
    }
}

/// The boot info's RAM untypeds.
pub struct Pool {
    regions: Vec<Region>,
    pub bytes_used: u64,
}

impl Pool {
    pub fn from_bootinfo(bi: &BootInfo) -> Pool {
        let start = { bi.untyped.start };
        let mut regions: Vec<Region> = bi
            .untypeds()
            .iter()
            .enumerate()
            .filter(|(_, u)| u.is_device == 0)
            .map(|(i, u)| Region::new(Cap::from_bits(start + i as u64), u.size_bits as usize))
            .collect();
        // Smallest first: an object goes to the smallest untyped it fits in, which
        // keeps the large ones whole for large objects.
        regions.sort_by_key(|r| r.size_bits);
        Pool {
            regions,
            bytes_used: 0,
        }
    }

    /// An untyped with room for 2^bits bytes, reserved.
    pub fn take(&mut self, bits: usize) -> Option<Cap<Untyped>> {
        for r in self.regions.iter_mut() {
            if r.reserve(bits) {
                self.bytes_used += 1 << bits;
                return Some(r.cap);
            }
        }
        None
    }
}

/// A region of device memory (MMIO) not yet used: an untyped capability at a known
/// physical address.
#[derive(Clone, Copy, Debug)]
pub struct DeviceRegion {
    pub cap: Cap<Untyped>,
    pub paddr: u64,
    pub size_bits: usize,
}

/// The boot info's device untypeds, and the spare halves left by splitting them.
pub struct Devices {
    regions: Vec<DeviceRegion>,
}

impl Devices {
    pub fn from_bootinfo(bi: &BootInfo) -> Devices {
        let start = { bi.untyped.start };
        let regions = bi
            .untypeds()
            .iter()
            .enumerate()
            .filter(|(_, u)| u.is_device != 0)
            .map(|(i, u)| DeviceRegion {
                cap: Cap::from_bits(start + i as u64),
                paddr: u.paddr,
                size_bits: u.size_bits as usize,
            })
            .collect();
        Devices { regions }
    }

    /// Removes and returns the unused region that covers `paddr`.
    pub fn take_containing(&mut self, paddr: u64) -> Option<DeviceRegion> {
        let at = self.regions.iter().position(|r| {
            paddr >= r.paddr
                && paddr - r.paddr < 1u64.checked_shl(r.size_bits as u32).unwrap_or(u64::MAX)
        })?;
        Some(self.regions.swap_remove(at))
    }

    /// Makes `r` available again.
    pub fn give(&mut self, r: DeviceRegion) {
        self.regions.push(r);
    }
}

/// Free slots of the root CNode, in order.
pub struct Slots {
    next: u64,
    end: u64,
}

impl Slots {
    pub fn new(bi: &BootInfo) -> Slots {
        let empty = bi.empty;
        Slots {
            next: empty.start,
            end: empty.end,
        }
    }
    pub fn free(&self) -> u64 {
        self.end - self.next
    }
    /// `n` consecutive slots; None if there are not enough.
    pub fn take(&mut self, n: u64) -> Option<u64> {
        if self.free() < n {
            return None;
        }
        self.next += n;
        Some(self.next - n)
    }
}

/// Retypes one object of `bp` from `ut` into root slot `slot`.
pub fn retype<T: CapType>(
    ut: Cap<Untyped>,
    bp: ObjectBlueprint,
    slot: u64,
) -> sel4::Result<Cap<T>> {
    let root = init_thread::slot(init_thread::CNODE.bits());
    ut.untyped_retype(bp, &root, slot as usize, 1)?;
    Ok(Cap::from_bits(slot))
}
