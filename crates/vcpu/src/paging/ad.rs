//! Accessed/dirty-flag updates collected during one translation and committed only if
//! the whole access succeeds (the project's fixed choice, as KVM's software walker: a
//! faulting access sets no A/D flag). Each update is a compare-and-exchange against the
//! value the walk read, as the CPU's locked update (SDM 4.8): if another agent changed
//! the entry meanwhile, the translation is walked again.

use physmem::PhysMap;

/// Guest levels (5) x (EPT walk of each table, 5) + the final EPT walk (5) + the guest
/// entries themselves (5) = 35, rounded up.
const MAX_UPDATES: usize = 40;

#[derive(Clone, Copy, Debug)]
struct Update {
    hpa: u64,
    old: u64,
    new: u64,
    /// 8-byte entry (4-level, PAE, EPT) or 4-byte entry (32-bit paging).
    wide: bool,
}

/// The outcome of [`PendingAd::commit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    Done,
    /// An entry changed under the walk: walk again.
    Raced,
    /// The entry's memory is not backed or not writable: the VMM built a broken table.
    BadHpa(u64),
}

/// The A/D updates of one translation, not yet written.
#[derive(Default)]
pub struct PendingAd {
    updates: heapless::Vec<Update, MAX_UPDATES>,
}

impl PendingAd {
    pub fn new() -> Self {
        PendingAd {
            updates: heapless::Vec::new(),
        }
    }

    pub fn clear(&mut self) {
        self.updates.clear();
    }

    /// Asks for `bits` to be set in the entry at `hpa` whose value the walk read as `old`.
    /// Two requests for the same entry (a table reached twice) merge into one update.
    pub fn set_bits(&mut self, hpa: u64, old: u64, bits: u64, wide: bool) {
        if old & bits == bits {
            return;
        }
        if let Some(u) = self.updates.iter_mut().find(|u| u.hpa == hpa) {
            u.new |= bits;
            return;
        }
        // Cannot overflow: a translation touches at most MAX_UPDATES entries.
        let _ = self.updates.push(Update {
            hpa,
            old,
            new: old | bits,
            wide,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.updates.is_empty()
    }

    /// Writes every update with a compare-and-exchange.
    pub fn commit(&self, mem: &PhysMap) -> Commit {
        for u in &self.updates {
            let outcome = if u.wide {
                mem.cmpxchg_u64(u.hpa, u.old, u.new).map(|r| r.is_ok())
            } else {
                mem.cmpxchg_u32(u.hpa, u.old as u32, u.new as u32)
                    .map(|r| r.is_ok())
            };
            match outcome {
                None => return Commit::BadHpa(u.hpa),
                Some(false) => return Commit::Raced,
                Some(true) => {}
            }
        }
        Commit::Done
    }
}
