//! NX huge pages: the iTLB-multihit mitigation (MMU_REFERENCE.md section 5).
//!
//! Some Intel CPUs take a machine check when the instruction TLB holds two translations
//! of different sizes for one address (erratum "iTLB multihit"). A guest cannot cause
//! that if no huge mapping we build is executable: while the mitigation applies to a
//! VM (the system mode is on and the VM did not disable it), every huge SPTE (2M/1G,
//! EPT and shadow) lacks execute permission, and an instruction fetch from a range
//! that would be mapped huge is served from 4K mappings instead:
//! - TDP splits the huge SPTE **eagerly**: a child table of 4K leaves with the huge
//!   page's rights, execute given back where the table's role allows it;
//! - shadow paging zaps the huge SPTE and faults 4K pages in **lazily**.
//!
//! The child table is marked `nx_disallowed`; a later non-fetch fault that meets it at
//! the level where it would map huge goes one level down instead
//! (`disallowed_hugepage_adjust`), so reads do not flap the range back to huge. When
//! the range could have been huge (the fault's `req_level` reaches the table's parent
//! level) the table goes on the VM's list of *possible NX huge pages*, a FIFO threaded
//! through the frame metadata (fixed capacity: one link per frame).
//! `nx_lpage_splits` is the list's length.
//!
//! **Recovery**: each period (a tick from outside: the host runtime's timer thread
//! sends `NxRecoveryTick` from the system controller's badge; on seL4 the timer PD
//! signals the mmu-server's notification and the PD calls
//! [`crate::MmuServer::recovery_tick`]) zaps ceil(splits / ratio) of the oldest listed
//! tables, so that their ranges can be mapped huge again. The tick arrives while the
//! VM's vCPU may be running on the tables, so a recovered table is only unlinked
//! (and unhashed) at once; its frame goes back to the pool at the VM's next request,
//! when the vCPU is stopped at an exit, and the flush it needs is carried by the next
//! reply that has a `flush` field (`SyncMmu` asks for it explicitly).

use crate::mmu::{Mmu, MAX_VMS};
use crate::pool::FrameId;
use crate::role::{ACC_EXEC_MASK, ACC_WRITE_MASK};
use crate::spte::{self, Format};
use crate::vm::Vm;
use ipc::{flush, mapping_flags, Error, Mapping, NxMode};

/// Default recovery ratio (KVM's `nx_huge_pages_recovery_ratio`).
pub const DEFAULT_RATIO: u32 = 60;
/// Default period when none is set and the ratio is 0 (recovery is off then anyway).
const FALLBACK_PERIOD_MS: u64 = 60_000;

/// The system-wide setting (KVM's `nx_huge_pages` parameter and its recovery knobs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NxPolicy {
    mode: NxMode,
    /// `never` was set: the mitigation can never be turned on again.
    hard_disabled: bool,
    ratio: u32,
    /// 0: derived from the ratio.
    period_ms: u64,
    /// Pages recovered since start-up, over all VMs.
    pub recovered_total: u64,
}

impl Default for NxPolicy {
    fn default() -> Self {
        NxPolicy {
            mode: NxMode::Auto,
            hard_disabled: false,
            ratio: DEFAULT_RATIO,
            period_ms: 0,
            recovered_total: 0,
        }
    }
}

impl NxPolicy {
    pub const fn mode(&self) -> NxMode {
        self.mode
    }

    /// Whether the system mode turns the mitigation on (auto = on: capvisor assumes
    /// the erratum).
    pub const fn enabled(&self) -> bool {
        self.mode.enabled()
    }

    pub const fn ratio(&self) -> u32 {
        self.ratio
    }

    /// The recovery period: as set, or 3,600,000 / min(ratio, 3600) ms (60 s with the
    /// default ratio), as KVM derives it.
    pub fn period_ms(&self) -> u64 {
        if self.period_ms != 0 {
            self.period_ms
        } else if self.ratio != 0 {
            3_600_000 / u64::from(self.ratio.min(3600))
        } else {
            FALLBACK_PERIOD_MS
        }
    }

    /// Whether a tick recovers anything (KVM: the parameter is on and the ratio is not 0).
    pub const fn recovery_enabled(&self) -> bool {
        self.enabled() && self.ratio != 0
    }

    /// Sets the mode (KVM's `set_nx_huge_pages`): once `never` is set every change is
    /// `PermissionDenied`; `never` itself needs that no VM exists (`InvalidState`, KVM's
    /// EBUSY). Returns whether the mitigation's state changed (the VMs must be zapped).
    pub fn set_mode(&mut self, mode: NxMode, vms_exist: bool) -> Result<bool, Error> {
        if self.hard_disabled {
            return Err(Error::PermissionDenied);
        }
        if mode == NxMode::Never {
            if vms_exist {
                return Err(Error::InvalidState);
            }
            self.hard_disabled = true;
        }
        let changed = self.enabled() != mode.enabled();
        self.mode = mode;
        Ok(changed)
    }

    pub fn set_recovery(&mut self, ratio: u32, period_ms: u64) {
        self.ratio = ratio;
        self.period_ms = period_ms;
    }

    /// How many of `splits` listed pages one tick zaps: ceil(splits / ratio).
    pub fn to_zap(&self, splits: u64) -> u64 {
        if !self.recovery_enabled() {
            return 0;
        }
        splits.div_ceil(u64::from(self.ratio))
    }
}

/// What a fault needs to know to account the tables it links (KVM's
/// `huge_page_disallowed` and `req_level`).
#[derive(Clone, Copy, Debug, Default)]
pub struct NxFault {
    /// The mitigation applies to the VM (`is_nx_huge_page_enabled`).
    pub mitigation: bool,
    /// The fault is an instruction fetch under the mitigation
    /// (`huge_page_disallowed`): it maps 4K, and every table it links is marked.
    pub disallowed: bool,
    /// The level the memory map would allow, ignoring the fetch.
    pub req_level: u8,
}

impl Mmu {
    /// A table linked at `parent_level` by a fault whose huge page was disallowed:
    /// mark it, and list it when the range could have been huge there
    /// (`account_nx_huge_page`).
    pub fn account_nx(&mut self, id: FrameId, parent_level: u8, nx: NxFault) {
        if !nx.disallowed {
            return;
        }
        self.sps.get_mut(id).nx_disallowed = true;
        if nx.req_level >= parent_level {
            self.track_nx(id);
        }
    }

    /// Appends a page to its VM's list of possible NX huge pages.
    pub fn track_nx(&mut self, id: FrameId) {
        let sp = *self.sps.get(id);
        if !sp.in_use || sp.nx_tracked {
            return;
        }
        let c = &mut self.vms[sp.vm as usize % MAX_VMS];
        let tail = c.nx_tail;
        c.nx_tail = Some(id);
        if c.nx_head.is_none() {
            c.nx_head = Some(id);
        }
        c.stats.nx_lpage_splits += 1;
        let p = self.sps.get_mut(id);
        p.nx_tracked = true;
        p.nx_prev = tail;
        p.nx_next = None;
        if let Some(t) = tail {
            self.sps.get_mut(t).nx_next = Some(id);
        }
    }

    /// Takes a page off its VM's list (zapped, or recovered).
    pub fn untrack_nx(&mut self, id: FrameId) {
        let sp = *self.sps.get(id);
        if !sp.nx_tracked {
            return;
        }
        let c = &mut self.vms[sp.vm as usize % MAX_VMS];
        if c.nx_head == Some(id) {
            c.nx_head = sp.nx_next;
        }
        if c.nx_tail == Some(id) {
            c.nx_tail = sp.nx_prev;
        }
        c.stats.nx_lpage_splits = c.stats.nx_lpage_splits.saturating_sub(1);
        if let Some(p) = sp.nx_prev {
            self.sps.get_mut(p).nx_next = sp.nx_next;
        }
        if let Some(n) = sp.nx_next {
            self.sps.get_mut(n).nx_prev = sp.nx_prev;
        }
        let p = self.sps.get_mut(id);
        p.nx_tracked = false;
        p.nx_prev = None;
        p.nx_next = None;
    }

    /// One recovery run for `vm`: zaps up to `count` of its oldest listed pages.
    /// Each is unlinked from its parents and the hash at once (nothing reaches it any
    /// more, so the range faults in huge again) but kept as a *zombie* until the VM's
    /// next request ([`Mmu::free_zombies`]), since the vCPU may be walking it now.
    pub fn recover_nx(&mut self, vm: u8, count: u64) -> u64 {
        let mut done = 0;
        while done < count {
            let Some(id) = self.vms[vm as usize % MAX_VMS].nx_head else {
                break;
            };
            self.untrack_nx(id);
            self.unlink_parents(id);
            self.sps.unhash(id);
            let p = self.sps.get_mut(id);
            p.parent_count = 0;
            p.parent_overflow = false;
            p.zombie = true;
            let c = &mut self.vms[vm as usize % MAX_VMS];
            c.zombies = true;
            c.pending_flush |= flush::GUEST;
            c.stats.nx_recovered += 1;
            done += 1;
        }
        done
    }

    /// Frees the tables recovery left for `vm` (called at each of its requests: its
    /// vCPU is stopped then).
    pub fn free_zombies(&mut self, vm: u8) {
        let c = &mut self.vms[vm as usize % MAX_VMS];
        if !c.zombies {
            return;
        }
        c.zombies = false;
        let n = self.pool.total_frames();
        for id in 0..n as FrameId {
            let sp = self.sps.get(id);
            if sp.in_use && sp.vm == vm && sp.zombie {
                self.zap_page(id);
            }
        }
    }

    /// The flushes work outside `vm`'s requests left for it; taken once.
    pub fn take_pending_flush(&mut self, vm: u8) -> u32 {
        core::mem::take(&mut self.vms[vm as usize % MAX_VMS].pending_flush)
    }

    /// A mode change: every page of `vm` becomes obsolete (a new generation). The
    /// change may arrive while the VM's vCPU runs on its tables, so nothing is freed
    /// now: every page is unhashed (never found again) and left as a zombie for the
    /// VM's next request, and the roots it may be running on are emptied so that its
    /// next access faults and retries on a fresh root (`is_page_fault_stale`); the
    /// pending flush drops what its TLB holds at the next reply.
    pub fn zap_vm_obsolete(&mut self, vm: u8) {
        let c = &mut self.vms[vm as usize % MAX_VMS];
        c.gen ^= 1;
        c.pending_flush |= flush::GUEST;
        c.zombies = true;
        let n = self.pool.total_frames();
        for id in 0..n as FrameId {
            let sp = *self.sps.get(id);
            if !sp.in_use || sp.vm != vm {
                continue;
            }
            self.sps.unhash(id);
            self.sps.get_mut(id).zombie = true;
            if sp.root_count > 0 {
                // Only references to tables live in a root: clearing them here just
                // makes the tables below unreachable (they are zombies too).
                for i in 0..spte::ENTRIES {
                    self.write_entry(id, i, 0);
                }
            }
        }
    }
}

impl Vm {
    /// How the current root maps `addr` (a gpa under TDP, a linear address under
    /// shadow paging): the `GetMapping` query, read as the hardware walks our tables.
    pub fn mapping(&self, mmu: &Mmu, addr: u64) -> Mapping {
        let none = Mapping::default();
        let Some(mut table) = self.roots.current.page else {
            return none;
        };
        let mut level = mmu.sps.get(table).role.level();
        while level >= 1 {
            let sp = *mmu.sps.get(table);
            let index = if sp.format == Format::PaeRoot {
                ((addr >> 30) & 3) as usize
            } else {
                spte::index(addr, level)
            };
            let e = mmu.read_entry(table, index);
            if !sp.format.is_present(e) {
                return none;
            }
            if sp.format.is_leaf(e, level) {
                let size = spte::level_size(level);
                let access = sp.format.leaf_access(e);
                let mut flags = 0;
                if access & ACC_EXEC_MASK != 0 {
                    flags |= mapping_flags::EXEC;
                }
                if access & ACC_WRITE_MASK != 0 {
                    flags |= mapping_flags::WRITE;
                }
                if sp.nx_disallowed {
                    flags |= mapping_flags::NX_DISALLOWED;
                }
                if sp.nx_tracked {
                    flags |= mapping_flags::NX_SPLIT;
                }
                return Mapping {
                    level: level as u32,
                    flags,
                    hpa: (sp.format.addr(e) & !(size - 1)) | (addr & (size - 1) & !0xFFF),
                };
            }
            let Some(child) = mmu.child_of(self.index, e) else {
                return none;
            };
            table = child;
            level -= 1;
        }
        none
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_is_final_and_needs_no_vm() {
        let mut p = NxPolicy::default();
        assert!(p.enabled());
        assert_eq!(p.set_mode(NxMode::On, true), Ok(false));
        assert_eq!(p.set_mode(NxMode::Off, true), Ok(true));
        assert_eq!(p.set_mode(NxMode::Force, true), Ok(true));
        assert_eq!(p.set_mode(NxMode::Never, true), Err(Error::InvalidState));
        assert_eq!(p.mode(), NxMode::Force);
        assert_eq!(p.set_mode(NxMode::Never, false), Ok(true));
        assert!(!p.enabled());
        for m in [NxMode::On, NxMode::Auto, NxMode::Off, NxMode::Never] {
            assert_eq!(p.set_mode(m, false), Err(Error::PermissionDenied));
        }
        assert_eq!(p.mode(), NxMode::Never);
    }

    #[test]
    fn recovery_zaps_a_ratio_rounded_up() {
        let mut p = NxPolicy::default();
        assert_eq!(p.period_ms(), 60_000);
        assert_eq!(p.to_zap(0), 0);
        assert_eq!(p.to_zap(1), 1);
        assert_eq!(p.to_zap(61), 2);
        p.set_recovery(1, 100);
        assert_eq!((p.to_zap(3), p.period_ms()), (3, 100));
        p.set_recovery(7200, 0);
        assert_eq!(p.period_ms(), 1000);
        p.set_recovery(0, 0);
        assert_eq!(p.to_zap(100), 0);
        p.set_recovery(1, 0);
        p.set_mode(NxMode::Off, false).unwrap();
        assert_eq!(p.to_zap(5), 0, "no recovery while the mode is off");
    }
}
