//! CSpace layout: the slot of each capability in a PD's CNode.
//!
//! Every PD has one CNode of [`CNODE_SIZE_BITS`] slots, installed with a guard of
//! [`CNODE_GUARD_SIZE`] zero bits so that a plain slot number is a valid 64-bit CPtr.
//! Slot 0 stays empty (`seL4_CapNull`). A slot listed here and not given to a PD stays
//! empty too: a vmm-server whose VM is not granted `NxHugePageControl` has nothing in
//! [`vmm::NX_HUGE_PAGE_CONTROL`].

/// Radix of every PD's CNode.
pub const CNODE_SIZE_BITS: u8 = 6;

/// Guard size so that `guard + radix` covers a 64-bit CPtr (one-level CSpace).
pub const CNODE_GUARD_SIZE: u8 = 64 - CNODE_SIZE_BITS;

/// Slots every PD has.
pub mod common {
    /// Badged (send + grant, as seL4 requires of a fault handler) capability to the
    /// supervisor's fault endpoint; also the TCB's fault-endpoint CPtr.
    pub const FAULT_EP: u64 = 1;
    /// Badged capability to the console endpoint of the UART driver (the UART driver
    /// itself holds the receive capability here).
    pub const CONSOLE_EP: u64 = 2;
}

/// The mmu-server.
pub mod mmu {
    /// Receive capability to the mmu-server endpoint.
    pub const MMU_EP: u64 = 3;
    /// Receive capability to the mmu-server notification (also bound to its TCB).
    pub const MMU_NTFN: u64 = 4;
}

/// A vmm-server.
pub mod vmm {
    /// The VM's badged call capability to the mmu-server (badge::mmu_client).
    pub const MMU_EP: u64 = 3;
    /// The VM's `NxHugePageControl` capability (badge::nx_huge_page_control), present
    /// only when the system spec grants it.
    pub const NX_HUGE_PAGE_CONTROL: u64 = 4;
    /// I/O port capability for QEMU's isa-debug-exit (0xf4..=0xf7), present only when
    /// the VM has `debug_exit = true`.
    pub const DEBUG_EXIT_PORTS: u64 = 5;
}

/// The 16550 UART driver.
pub mod uart {
    /// The UART's I/O port range.
    pub const PORTS: u64 = 3;
    /// IRQ handler, when the spec gives the UART an IRQ.
    pub const IRQ: u64 = 4;
    /// Notification the IRQ is delivered to (receive right).
    pub const IRQ_NTFN: u64 = 5;
}

/// The timer driver (PIT or HPET).
pub mod timer {
    /// The PIT's I/O port range (absent for the HPET, which is a mapped device frame).
    pub const PORTS: u64 = 3;
    /// IRQ handler for the timer IRQ.
    pub const IRQ: u64 = 4;
    /// Notification the IRQ is delivered to (receive right).
    pub const IRQ_NTFN: u64 = 5;
    /// Send capability to the mmu-server notification, badge::RECOVERY_TICK.
    pub const MMU_NTFN: u64 = 6;
}
