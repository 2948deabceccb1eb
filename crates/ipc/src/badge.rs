//! What the bits of a caller's [`crate::Badge`] mean to the mmu-server.
//!
//! The transport supplies the badge (on seL4 the endpoint badge the root task minted,
//! on the host the one the runtime fixed for a mailbox); the server trusts nothing else.
//!
//! - A VM is named by its badge with [`NX_HUGE_PAGE_CONTROL`] masked off
//!   ([`vm_of`]): a VM's ordinary capability and its `NxHugePageControl` capability
//!   name the same VM.
//! - [`NX_HUGE_PAGE_CONTROL`] set means the call came through the VM's
//!   `NxHugePageControl` capability: the caller holds the right to disable the
//!   NX-huge-page mitigation for its VM (`DisableNxHugePages`). The bit is the one
//!   `capdl_spec::badge::NX_HUGE_PAGE_CONTROL` mints on seL4 (1 << 26; the mmu-server's
//!   tests check that the two agree).
//! - [`SYSTEM_CONTROL`] set means the system controller (the host runtime, or on seL4
//!   whoever the spec gives a capability with that badge): it may change system-wide
//!   MMU policy (`SetNxHugePages`, `SetNxRecovery`) and deliver recovery ticks
//!   (`NxRecoveryTick`). Such a badge names no VM. On seL4 the timer's recovery tick is
//!   a notification, not a call: the mmu-server PD calls
//!   `MmuServer::recovery_tick()` directly for it.

use crate::Badge;

/// Set on a VM's `NxHugePageControl` capability.
pub const NX_HUGE_PAGE_CONTROL: Badge = 1 << 26;

/// Set on the system controller's capability (never on a VM's).
pub const SYSTEM_CONTROL: Badge = 1 << 25;

/// The VM a badge names (the `NxHugePageControl` bit masked off).
pub const fn vm_of(badge: Badge) -> Badge {
    badge & !NX_HUGE_PAGE_CONTROL
}

/// Whether the call came through an `NxHugePageControl` capability.
pub const fn holds_nx_huge_page_control(badge: Badge) -> bool {
    badge & NX_HUGE_PAGE_CONTROL != 0
}

/// Whether the caller is the system controller.
pub const fn is_system_control(badge: Badge) -> bool {
    badge & SYSTEM_CONTROL != 0
}
