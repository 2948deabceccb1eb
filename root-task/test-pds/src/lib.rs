//! The protocol between the two test PDs, over the mmu-server's endpoint.
#![no_std]

/// Client -> ticks: "reply after MR0 more recovery ticks".
pub const LABEL_WAIT_TICKS: u64 = 0x71;
/// The reply: MR0 = ticks waited for, MR1 = the VM id the server read from the badge.
pub const REPLY_WORDS: u64 = 2;
/// What the client writes to isa-debug-exit when it saw its ticks: QEMU exits with
/// (0x2a << 1) | 1 = 85.
pub const EXIT_PASS: u32 = 0x2a;
/// The command line that makes the client fault on purpose.
pub const CMDLINE_FAULT: &str = "fault";
/// The address the client writes to when it faults on purpose (nothing is mapped there).
pub const FAULT_ADDR: u64 = 0xdead_b000;
