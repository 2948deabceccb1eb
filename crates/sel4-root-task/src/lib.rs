//! Runtime for the seL4 root task (the first user thread, which the kernel starts from
//! the first multiboot module):
//! - the `_start` entry: the kernel gives no stack, so it switches to our own
//!   ([`STACK_SIZE`]) and calls the function named by [`declare_main!`] with the boot
//!   info (rdi at entry; the kernel has set the GS base to the IPC buffer);
//! - a panic handler that prints through the kernel console, runs the hook set with
//!   [`set_panic_hook`] (e.g. ending QEMU with a failure status), then halts;
//! - [`bootinfo`] and a [`log`] logger over `seL4_DebugPutChar` ([`logger`]).
//!
//! The entry and panic handler exist only on bare metal (`target_os = "none"`), so the
//! crate also builds, and tests, on the host.
#![no_std]

pub mod logger;
#[cfg(target_os = "none")]
mod runtime;

pub use sel4_sys::BootInfo;

use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Size of the root task's initial stack.
pub const STACK_SIZE: usize = 128 * 1024;

static BOOTINFO: AtomicPtr<BootInfo> = AtomicPtr::new(core::ptr::null_mut());
static PANIC_HOOK: AtomicUsize = AtomicUsize::new(0);

/// The boot info, once the entry has recorded it (None before, and on the host).
pub fn bootinfo() -> Option<&'static BootInfo> {
    let p = BOOTINFO.load(Ordering::Acquire);
    // SAFETY: the only non-null value ever stored is the kernel's boot-info pointer,
    // which stays mapped and unchanged for the root task's lifetime.
    unsafe { p.as_ref() }
}

/// Runs `hook` after a panic message is printed (it may end the machine; if it
/// returns, the root task halts the kernel).
pub fn set_panic_hook(hook: fn()) {
    PANIC_HOOK.store(hook as usize, Ordering::Release);
}

#[cfg_attr(not(target_os = "none"), allow(dead_code))]
fn panic_hook() -> Option<fn()> {
    match PANIC_HOOK.load(Ordering::Acquire) {
        0 => None,
        // SAFETY: only `set_panic_hook` stores a non-zero value, and it stores a `fn()`.
        p => Some(unsafe { core::mem::transmute::<usize, fn()>(p) }),
    }
}

/// Names the root task's main function, `fn(&'static BootInfo) -> !`, which the entry
/// calls on the root task's own stack.
#[macro_export]
macro_rules! declare_main {
    ($main:path) => {
        #[no_mangle]
        fn __sel4_root_task_main(bootinfo: &'static $crate::BootInfo) -> ! {
            let main: fn(&'static $crate::BootInfo) -> ! = $main;
            main(bootinfo)
        }
    };
}

/// One line summarizing the boot info: untyped caps and memory, free slots.
pub fn summarize(bi: &BootInfo, out: &mut impl core::fmt::Write) -> core::fmt::Result {
    let (mut ram, mut device) = (0u128, 0u128);
    for u in bi.untypeds() {
        let bytes = 1u128 << u.size_bits.min(127);
        if u.is_device != 0 {
            device += bytes;
        } else {
            ram += bytes;
        }
    }
    let (empty, untyped) = (bi.empty, bi.untyped);
    write!(
        out,
        "node {}/{}, {} untyped caps ({} KiB RAM, {} MiB device), {} free slots [{:#x}..{:#x}), CNode 2^{} slots",
        { bi.node_id },
        { bi.num_nodes },
        untyped.len(),
        ram / 1024,
        device >> 20,
        empty.len(),
        { empty.start },
        { empty.end },
        { bi.init_thread_cnode_size_bits },
    )
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use sel4_sys::{SlotRegion, UntypedDesc};
    use std::string::String;

    #[test]
    fn summary_counts_ram_and_device_untypeds() {
        // SAFETY: BootInfo is plain integers; all-zero is valid.
        let mut bi: BootInfo = unsafe { core::mem::zeroed() };
        bi.num_nodes = 1;
        bi.init_thread_cnode_size_bits = 16;
        bi.empty = SlotRegion {
            start: 0x100,
            end: 0x10000,
        };
        bi.untyped = SlotRegion {
            start: 0x20,
            end: 0x23,
        };
        bi.untyped_list[0] = UntypedDesc {
            paddr: 0,
            padding1: 0,
            padding2: 0,
            size_bits: 12,
            is_device: 0,
        };
        bi.untyped_list[1] = UntypedDesc {
            paddr: 0,
            padding1: 0,
            padding2: 0,
            size_bits: 20,
            is_device: 0,
        };
        bi.untyped_list[2] = UntypedDesc {
            paddr: 0,
            padding1: 0,
            padding2: 0,
            size_bits: 21,
            is_device: 1,
        };
        let mut s = String::new();
        summarize(&bi, &mut s).unwrap();
        assert_eq!(s, "node 0/1, 3 untyped caps (1028 KiB RAM, 2 MiB device), 65280 free slots [0x100..0x10000), CNode 2^16 slots");
    }

    #[test]
    fn no_bootinfo_before_entry() {
        assert!(bootinfo().is_none());
        assert!(panic_hook().is_none());
    }
}
