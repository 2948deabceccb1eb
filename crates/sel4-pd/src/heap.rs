//! A fixed heap for PDs that link code which allocates (the software vCPU boxes its
//! decode cache, translation cache and MSR bitmap when it is created). A PD declares
//!
//! ```ignore
//! #[global_allocator]
//! static HEAP: sel4_pd::heap::BumpHeap<{ 4 << 20 }> = sel4_pd::heap::BumpHeap::new();
//! ```
//!
//! and its heap is that many bytes of .bss, which the root task zero-fills with the
//! rest of the image region, so the heap's size is fixed when the image is built.
//! Allocation bumps a cursor and `dealloc` frees nothing: the PDs allocate only while
//! they start (the vCPU's `new`) and keep everything for their lifetime. An exhausted
//! heap returns null, which Rust turns into an allocation-error abort (a fault the
//! supervisor reports).

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

/// `N` bytes of heap, page aligned.
#[repr(C, align(4096))]
pub struct BumpHeap<const N: usize> {
    bytes: UnsafeCell<[u8; N]>,
    next: AtomicUsize,
}

// SAFETY: the bytes are handed out in disjoint ranges through an atomic cursor.
unsafe impl<const N: usize> Sync for BumpHeap<N> {}

impl<const N: usize> BumpHeap<N> {
    pub const fn new() -> Self {
        BumpHeap {
            bytes: UnsafeCell::new([0; N]),
            next: AtomicUsize::new(0),
        }
    }

    /// Bytes handed out so far.
    pub fn used(&self) -> usize {
        self.next.load(Ordering::Relaxed)
    }

    /// The heap's size.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// The offset of a `layout` allocation and the cursor after it, if it fits when
    /// the cursor is at `cur` and the heap starts at address `base`.
    fn place(base: usize, cur: usize, layout: Layout) -> Option<(usize, usize)> {
        let start = base
            .checked_add(cur)?
            .checked_next_multiple_of(layout.align())?
            - base;
        let end = start.checked_add(layout.size())?;
        (end <= N).then_some((start, end))
    }
}

impl<const N: usize> Default for BumpHeap<N> {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every allocation is a fresh range of `bytes`, aligned as asked, that no
// other allocation overlaps (the cursor only moves forward); null when it does not fit.
unsafe impl<const N: usize> GlobalAlloc for BumpHeap<N> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = self.bytes.get() as usize;
        let mut cur = self.next.load(Ordering::Relaxed);
        loop {
            let Some((start, end)) = Self::place(base, cur, layout) else {
                return core::ptr::null_mut();
            };
            match self
                .next
                .compare_exchange(cur, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return (base + start) as *mut u8,
                Err(now) => cur = now,
            }
        }
    }

    unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_aligned_disjoint_and_bounded() {
        let heap: BumpHeap<8192> = BumpHeap::new();
        let a = Layout::from_size_align(10, 1).unwrap();
        let b = Layout::from_size_align(64, 64).unwrap();
        // SAFETY: the test only compares the addresses.
        let (pa, pb) = unsafe { (heap.alloc(a), heap.alloc(b)) };
        assert!(!pa.is_null() && !pb.is_null());
        assert_eq!(pb as usize % 64, 0);
        assert!(pb as usize >= pa as usize + 10);
        assert!(heap.used() <= 64 + 64 + 10);
        let big = Layout::from_size_align(8192, 8).unwrap();
        // SAFETY: as above.
        assert!(unsafe { heap.alloc(big) }.is_null(), "more than is left");
        let rest = Layout::from_size_align(8192 - heap.used(), 1).unwrap();
        // SAFETY: as above.
        assert!(
            !unsafe { heap.alloc(rest) }.is_null(),
            "exactly what is left"
        );
        assert_eq!(heap.used(), heap.capacity());
    }
}
