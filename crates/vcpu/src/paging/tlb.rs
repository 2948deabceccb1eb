//! The TLB: a fixed-size, 4-way set-associative array of cached translations (SDM Vol. 3A
//! 4.10.2, Vol. 3C 28.4). Each entry maps one 4K linear page (a larger guest page is
//! cached as 4K fragments, as SDM 4.10.2.3 allows) and remembers the guest page size so
//! that INVLPG of any address in a large page removes every fragment.
//!
//! Three kinds of mapping, as SDM 28.4.1 names them:
//! - *linear*: EPT off; tagged by VPID and PCID; linear -> hpa;
//! - *combined*: EPT on, CR0.PG = 1; tagged by VPID, PCID and EP4TA;
//! - *guest-physical*: EPT on, CR0.PG = 0 (linear = gpa); tagged by EP4TA only, and
//!   invalidated only by INVEPT (and EPT violations), never by INVVPID or guest
//!   instructions.
//!
//! Global entries (CR4.PGE with G = 1) match any PCID (SDM 4.10.2.4).
//! No paging-structure caches are modelled: a TLB miss always walks memory. That is
//! allowed (caching is optional), and it means every stale result the model can show
//! comes from a leaf translation that an architectural flush would have removed.

use super::rights::Rights;

/// Ways per set: the same page cached for a few PCIDs/VPIDs/EPTPs at once (a guest
/// switching address spaces with NOFLUSH) does not evict itself.
pub const TLB_WAYS: usize = 4;
/// Number of sets (a power of two), indexed by the low bits of the page number.
pub const TLB_SETS: usize = 128;
/// Number of TLB entries.
pub const TLB_ENTRIES: usize = TLB_WAYS * TLB_SETS;

/// Which translation an entry caches (SDM 28.4.1). `Invalid` marks a free slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingKind {
    Invalid,
    Linear,
    Combined,
    GuestPhysical,
}

/// The tags an access looks up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub kind: MappingKind,
    pub vpid: u16,
    pub pcid: u16,
    /// EPT root address (0 for linear mappings).
    pub ep4ta: u64,
}

/// One cached translation of a 4K page.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub kind: MappingKind,
    pub vpid: u16,
    pub pcid: u16,
    pub ep4ta: u64,
    /// Linear page number (guest-physical page number for guest-physical mappings).
    pub vpn: u64,
    pub hpa_frame: u64,
    pub gpa_frame: u64,
    pub rights: Rights,
    pub global: bool,
    /// A write may use this entry without setting any D flag.
    pub dirty: bool,
    pub ept_rights: u8,
    /// log2 of the guest page this fragment belongs to.
    pub page_shift: u8,
}

impl Entry {
    const EMPTY: Entry = Entry {
        kind: MappingKind::Invalid,
        vpid: 0,
        pcid: 0,
        ep4ta: 0,
        vpn: 0,
        hpa_frame: 0,
        gpa_frame: 0,
        rights: Rights::ALL,
        global: false,
        dirty: false,
        ept_rights: 0,
        page_shift: 12,
    };

    /// Whether this entry translates `address` (a linear address, or a gpa for a
    /// guest-physical mapping), anywhere in the guest page it came from.
    #[inline]
    pub fn covers(&self, address: u64) -> bool {
        let shift = u32::from(self.page_shift);
        ((self.vpn << 12) >> shift) == (address >> shift)
    }

    /// A linear or combined mapping (what guest instructions and INVVPID invalidate).
    #[inline]
    pub fn is_linear_or_combined(&self) -> bool {
        matches!(self.kind, MappingKind::Linear | MappingKind::Combined)
    }
}

/// The set-associative TLB.
pub struct Tlb {
    entries: [Entry; TLB_ENTRIES],
    /// Round-robin victim of each set.
    victim: [u8; TLB_SETS],
    /// Valid entries that are fragments of a page larger than 4K: while there are
    /// any, invalidating one address must scan the whole array.
    large: u32,
}

/// Marks `e` free, keeping the count of large-page fragments.
#[inline]
fn kill(e: &mut Entry, large: &mut u32) {
    if e.kind != MappingKind::Invalid && e.page_shift > 12 {
        *large -= 1;
    }
    e.kind = MappingKind::Invalid;
}

impl Tlb {
    pub const fn new() -> Tlb {
        Tlb {
            entries: [Entry::EMPTY; TLB_ENTRIES],
            victim: [0; TLB_SETS],
            large: 0,
        }
    }

    /// The first slot of the set page `vpn` lives in.
    #[inline]
    fn set_of(vpn: u64) -> usize {
        ((vpn as usize) & (TLB_SETS - 1)) * TLB_WAYS
    }

    #[inline]
    fn matches(e: &Entry, tag: &Tag, vpn: u64) -> bool {
        e.vpn == vpn
            && e.kind == tag.kind
            && e.ep4ta == tag.ep4ta
            && (tag.kind == MappingKind::GuestPhysical
                || (e.vpid == tag.vpid && (e.pcid == tag.pcid || e.global)))
    }

    /// The slot holding a usable translation of page `vpn` for `tag`, if any.
    #[inline]
    pub fn lookup(&self, tag: &Tag, vpn: u64) -> Option<usize> {
        let first = Self::set_of(vpn);
        (first..first + TLB_WAYS).find(|&i| Self::matches(&self.entries[i], tag, vpn))
    }

    #[inline]
    pub fn entry(&self, slot: usize) -> &Entry {
        &self.entries[slot]
    }

    /// Caches `entry`, replacing a translation of the same page for the same context,
    /// else a free way, else the set's round-robin victim.
    #[inline]
    pub fn insert(&mut self, entry: Entry) {
        let first = Self::set_of(entry.vpn);
        let same_context = |e: &Entry| {
            e.kind == entry.kind
                && e.vpn == entry.vpn
                && e.ep4ta == entry.ep4ta
                && e.vpid == entry.vpid
                && e.pcid == entry.pcid
        };
        let slot = (first..first + TLB_WAYS)
            .find(|&i| same_context(&self.entries[i]))
            .or_else(|| {
                (first..first + TLB_WAYS).find(|&i| self.entries[i].kind == MappingKind::Invalid)
            })
            .unwrap_or_else(|| {
                let set = first / TLB_WAYS;
                let way = usize::from(self.victim[set]);
                self.victim[set] = ((way + 1) % TLB_WAYS) as u8;
                first + way
            });
        kill(&mut self.entries[slot], &mut self.large);
        if entry.page_shift > 12 {
            self.large += 1;
        }
        self.entries[slot] = entry;
    }

    #[inline]
    pub fn invalidate_slot(&mut self, slot: usize) {
        kill(&mut self.entries[slot], &mut self.large);
    }

    /// Invalidates every entry `doomed` selects.
    pub fn invalidate_where(&mut self, doomed: impl Fn(&Entry) -> bool) {
        for e in self.entries.iter_mut() {
            if e.kind != MappingKind::Invalid && doomed(e) {
                kill(e, &mut self.large);
            }
        }
    }

    /// Invalidates the entries that `doomed` selects among those translating `address`
    /// (all fragments of a large page). Only scans the whole array while a fragment
    /// of a large page is cached.
    pub fn invalidate_address(&mut self, address: u64, doomed: impl Fn(&Entry) -> bool) {
        if self.large > 0 {
            self.invalidate_where(|e| e.covers(address) && doomed(e));
        } else {
            let first = Self::set_of(address >> 12);
            for e in self.entries[first..first + TLB_WAYS].iter_mut() {
                if e.kind != MappingKind::Invalid && e.covers(address) && doomed(e) {
                    kill(e, &mut self.large);
                }
            }
        }
    }

    /// Empties the TLB.
    pub fn clear(&mut self) {
        for e in self.entries.iter_mut() {
            e.kind = MappingKind::Invalid;
        }
        self.large = 0;
    }

    /// Number of valid entries that are fragments of large pages.
    pub fn large_fragments(&self) -> u32 {
        self.large
    }

    /// Number of valid entries (for tests and diagnostics).
    pub fn occupancy(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.kind != MappingKind::Invalid)
            .count()
    }
}

impl Default for Tlb {
    fn default() -> Self {
        Tlb::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(vpn: u64, pcid: u16, page_shift: u8) -> Entry {
        Entry {
            kind: MappingKind::Linear,
            vpn,
            pcid,
            page_shift,
            hpa_frame: vpn << 12,
            ..Entry::EMPTY
        }
    }

    /// The large-fragment count that decides whether an INVLPG scans stays exact
    /// through inserts, replacements, evictions and every kind of invalidation.
    #[test]
    fn large_fragment_count_stays_exact() {
        let mut tlb = Tlb::new();
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let r = next();
            let vpn = (r >> 8) % 2048;
            match r % 6 {
                0..=2 => tlb.insert(entry(
                    vpn,
                    (r >> 40) as u16 % 3,
                    [12, 21, 30][(r >> 50) as usize % 3],
                )),
                3 => tlb.invalidate_address(vpn << 12, |_| true),
                4 => tlb.invalidate_where(|e| e.pcid == (r >> 40) as u16 % 3),
                _ => tlb.invalidate_slot((r >> 20) as usize % TLB_ENTRIES),
            }
            let counted = tlb
                .entries
                .iter()
                .filter(|e| e.kind != MappingKind::Invalid && e.page_shift > 12)
                .count() as u32;
            assert_eq!(tlb.large_fragments(), counted);
        }
        tlb.clear();
        assert_eq!((tlb.large_fragments(), tlb.occupancy()), (0, 0));
    }

    /// Without large pages an address is looked for in its own set only; with one,
    /// every fragment of the large page goes.
    #[test]
    fn invalidate_address_finds_all_fragments() {
        let mut tlb = Tlb::new();
        // Fragments of one 2M page at vpn 0x200..0x400, in many sets.
        for vpn in (0x200..0x400).step_by(7) {
            tlb.insert(entry(vpn, 0, 21));
        }
        tlb.insert(entry(0x1000, 0, 12));
        let before = tlb.occupancy();
        tlb.invalidate_address(0x3ff << 12, |_| true);
        assert_eq!(
            tlb.occupancy(),
            1,
            "only the 4K page outside it survives ({before})"
        );
        assert_eq!(tlb.large_fragments(), 0);
    }
}
