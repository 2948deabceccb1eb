//! Messages a PD sends to the supervisor on its fault endpoint besides faults.
//!
//! The kernel labels a fault message with its fault type (1..=6 on x86_64); a PD's own
//! message on the same capability uses a label far from those, so the supervisor tells
//! them apart, and the badge (PD index + 1) names the sender as for a fault.

/// "I have finished; do not run me again": MR0 = the PD's exit status (a vmm-server's
/// guest status, `(v << 1) | 1`, or its failure status). The PD sends it with
/// `seL4_Call` and is never answered: it stays blocked, and the supervisor logs it
/// once instead of reporting a fault.
pub const LABEL_PD_DONE: u64 = 0xd0e;
