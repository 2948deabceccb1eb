//! What the badges on capvisor's endpoint and notification capabilities mean.
//!
//! seL4 5.0 on x86_64 stores an endpoint badge in 28 bits (`seL4_BadgeBits`,
//! `capEPBadge` in `structures_64.bf`), so the whole scheme fits in bits 0..=27.
//!
//! **The mmu-server endpoint.** Every capability to it is badged
//! [`MMU_CALL`]` | vm_id`: the kernel hands the badge to the mmu-server with each call,
//! and the mmu-server trusts nothing else to know which VM is calling. The
//! `NxHugePageControl` capability is a *second* badged capability to the *same*
//! endpoint, in a distinct badge space: [`nx_huge_page_control`]`(vm_id)` also sets
//! [`NX_HUGE_PAGE_CONTROL`]. The root task mints it only for the VMs the system spec
//! grants it to, so a vmm-server without the grant holds no capability whose badge has
//! that bit, and the mmu-server answers its `DisableNxHugePages` request with a
//! permission error. One endpoint (rather than a separate one) keeps the mmu-server a
//! single `seL4_ReplyRecv` loop.
//!
//! **The mmu-server notification** is bound to the mmu-server's TCB, so its signals
//! arrive through the same `seL4_Recv` as the calls. A signal delivers the
//! notification word as the badge; none of its bits is [`MMU_CALL`], which is how the
//! mmu-server tells a timer tick from a call.

/// Number of badge bits an endpoint capability holds on seL4 5.0 x86_64.
pub const BADGE_BITS: u32 = 28;

/// Set on every capability to the mmu-server endpoint (never in a notification word).
pub const MMU_CALL: u64 = 1 << 27;

/// Set only on the `NxHugePageControl` capability of a VM granted it.
pub const NX_HUGE_PAGE_CONTROL: u64 = 1 << 26;

/// The VM id occupies the low bits of an mmu-server badge.
pub const VM_ID_MASK: u64 = 0xffff;

/// Largest VM id (ids start at 1: a zero badge would be an unbadged capability).
pub const MAX_VM_ID: u16 = 0xffff;

/// Notification word bit the timer driver signals for NX-huge-page recovery.
pub const RECOVERY_TICK: u64 = 1 << 0;

/// The badge of a vmm-server's ordinary capability to the mmu-server endpoint.
pub const fn mmu_client(vm_id: u16) -> u64 {
    MMU_CALL | vm_id as u64
}

/// The badge of a VM's `NxHugePageControl` capability.
pub const fn nx_huge_page_control(vm_id: u16) -> u64 {
    MMU_CALL | NX_HUGE_PAGE_CONTROL | vm_id as u64
}

/// What the mmu-server learns from the badge of one received message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmuCaller {
    /// A call from the vmm-server of `vm_id`; `nx_control` when it came through the
    /// `NxHugePageControl` capability.
    Vm { vm_id: u16, nx_control: bool },
    /// Signals on the bound notification (the word's bits, e.g. [`RECOVERY_TICK`]).
    Notification(u64),
}

/// Decodes a badge received by the mmu-server.
pub const fn decode_mmu_badge(badge: u64) -> MmuCaller {
    if badge & MMU_CALL != 0 {
        MmuCaller::Vm {
            vm_id: (badge & VM_ID_MASK) as u16,
            nx_control: badge & NX_HUGE_PAGE_CONTROL != 0,
        }
    } else {
        MmuCaller::Notification(badge)
    }
}

/// Badge of the fault-endpoint capability of the PD at `pd_index` in the spec's PD
/// table: the supervisor (root task) learns which PD faulted from it.
pub const fn fault(pd_index: u32) -> u64 {
    pd_index as u64 + 1
}

/// Badge of the console-endpoint capability of the PD at `pd_index`: the UART driver
/// learns which PD is printing from it.
pub const fn console(pd_index: u32) -> u64 {
    pd_index as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn badges_fit_in_the_kernel_badge_field() {
        let widest = nx_huge_page_control(MAX_VM_ID);
        assert_eq!(widest >> BADGE_BITS, 0);
    }

    #[test]
    fn mmu_badges_round_trip() {
        assert_eq!(
            decode_mmu_badge(mmu_client(7)),
            MmuCaller::Vm {
                vm_id: 7,
                nx_control: false
            }
        );
        assert_eq!(
            decode_mmu_badge(nx_huge_page_control(7)),
            MmuCaller::Vm {
                vm_id: 7,
                nx_control: true
            }
        );
        assert_eq!(
            decode_mmu_badge(RECOVERY_TICK),
            MmuCaller::Notification(RECOVERY_TICK)
        );
    }
}
