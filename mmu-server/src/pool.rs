//! The frame pool: every table of every VM lives in one of these 4-KiB frames, given
//! to the server at start-up. Allocation is a pop from a fixed-capacity free stack;
//! the metadata of a frame lives at the same index in [`crate::shadow_page::SpTable`].

use physmem::{PhysMap, PAGE_SIZE};

/// Most frames one server manages (16 MiB of tables). The metadata arrays are sized by
/// it, so the server never allocates after start-up.
pub const MAX_FRAMES: usize = 4096;

/// Index of a frame in the pool (also the index of its shadow-page metadata).
pub type FrameId = u16;

/// Why a pool could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolError {
    /// The base is not page aligned, the pool is empty or larger than [`MAX_FRAMES`].
    BadRange,
    /// The physical map does not back the whole range writably.
    NotMapped,
}

pub struct FramePool {
    base: u64,
    nframes: usize,
    free: heapless::Vec<FrameId, MAX_FRAMES>,
}

impl FramePool {
    /// A pool of `nframes` frames from host-physical `base`, which `phys` must map
    /// writably.
    pub fn new(phys: &PhysMap, base: u64, nframes: usize) -> Result<Self, PoolError> {
        if !base.is_multiple_of(PAGE_SIZE) || nframes == 0 || nframes > MAX_FRAMES {
            return Err(PoolError::BadRange);
        }
        let len = nframes as u64 * PAGE_SIZE;
        if base.checked_add(len).is_none() || phys.local(base, len, true).is_none() {
            return Err(PoolError::NotMapped);
        }
        let mut free = heapless::Vec::new();
        // Pushed in reverse so that frames are handed out in address order.
        for i in (0..nframes).rev() {
            // Cannot fail: nframes <= MAX_FRAMES.
            let _ = free.push(i as FrameId);
        }
        Ok(FramePool {
            base,
            nframes,
            free,
        })
    }

    /// Takes a zeroed frame, or `None` when the pool is empty.
    pub fn alloc(&mut self, phys: &PhysMap) -> Option<FrameId> {
        let id = self.free.pop()?;
        // The range was checked writable at start-up.
        phys.zero_page(self.hpa(id))?;
        Some(id)
    }

    /// Takes a zeroed frame that lies entirely below host-physical `limit`, or `None`.
    pub fn alloc_below(&mut self, phys: &PhysMap, limit: u64) -> Option<FrameId> {
        let i = self
            .free
            .iter()
            .position(|&id| self.hpa(id) + PAGE_SIZE <= limit)?;
        let id = self.free.swap_remove(i);
        phys.zero_page(self.hpa(id))?;
        Some(id)
    }

    /// Whether a free frame lies entirely below `limit`.
    pub fn has_free_below(&self, limit: u64) -> bool {
        self.free
            .iter()
            .any(|&id| self.hpa(id) + PAGE_SIZE <= limit)
    }

    /// Gives a frame back.
    pub fn free(&mut self, id: FrameId) {
        if (id as usize) < self.nframes && !self.free.contains(&id) {
            let _ = self.free.push(id);
        }
    }

    pub fn free_frames(&self) -> usize {
        self.free.len()
    }

    pub fn total_frames(&self) -> usize {
        self.nframes
    }

    /// The host-physical address of a frame.
    #[inline]
    pub fn hpa(&self, id: FrameId) -> u64 {
        self.base + id as u64 * PAGE_SIZE
    }

    /// The frame at `hpa`, if the pool holds it.
    #[inline]
    pub fn frame_of(&self, hpa: u64) -> Option<FrameId> {
        let off = hpa.checked_sub(self.base)?;
        let id = off / PAGE_SIZE;
        (id < self.nframes as u64).then_some(id as FrameId)
    }

    /// Whether `[hpa, hpa + len)` intersects the pool (guest memory must never).
    pub fn overlaps(&self, hpa: u64, len: u64) -> bool {
        let end = self.base + self.nframes as u64 * PAGE_SIZE;
        hpa < end && self.base < hpa.saturating_add(len)
    }
}
