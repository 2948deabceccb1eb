//! Runtime for capvisor's seL4 protection domains (every thread the root task starts
//! from the capDL spec; the root task itself uses `sel4-root-task`).
//!
//! What a PD finds when its first instruction runs (the root task sets it up from the
//! spec, see `capdl_spec::layout` and `capdl_spec::slot`):
//! - rsp = the top of its stack (`layout::STACK_TOP`), rip = its ELF entry, rdi = how
//!   many times the supervisor restarted it ([`restarts`]);
//! - its IPC buffer mapped at `layout::IPC_BUFFER_VADDR`, and the kernel pointing GS at it;
//! - its capabilities in the slots of `capdl_spec::slot` of a single-level CNode whose
//!   guard makes a slot number a whole CPtr;
//! - its [`BootParams`] in the read-only frame at `layout::BOOT_PARAMS_VADDR`.
//!
//! This crate provides:
//! - the `_start` entry, which aligns the stack and calls the function named by
//!   [`declare_main!`] with the boot parameters ([`runtime`], bare metal only);
//! - [`console`]: the "print these bytes" protocol of the UART driver PD and its client;
//! - [`logger`]: a [`log`] logger over the console (or, for the UART PD itself, over
//!   its own device);
//! - [`heap`]: a fixed bump heap for PDs that link allocating code (the vmm-server);
//! - [`done`]: tells the supervisor this PD has finished, and never returns;
//! - a panic handler that prints through `seL4_DebugPutChar` and then *faults*
//!   (`ud2`), so the supervisor on the fault endpoint sees the PD die with its
//!   registers rather than a PD that silently spins.
#![no_std]

pub mod bytes;
pub mod console;
pub mod heap;
pub mod ipc_transport;
pub mod logger;
#[cfg(target_os = "none")]
mod runtime;

pub use capdl_spec::boot::BootParams;
pub use capdl_spec::slot;
pub use capdl_spec::{self, badge, layout, PdKind, TimerKind};

static RESTARTS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// How many times the supervisor restarted this PD (0 on its first start). A restarted
/// PD starts from a freshly loaded image, so this is all it knows of its past lives.
pub fn restarts() -> u64 {
    RESTARTS.load(core::sync::atomic::Ordering::Relaxed)
}

/// Names the PD's main function, `fn(&'static BootParams) -> !`.
#[macro_export]
macro_rules! declare_main {
    ($main:path) => {
        #[no_mangle]
        fn __sel4_pd_main(params: &'static $crate::BootParams) -> ! {
            let main: fn(&'static $crate::BootParams) -> ! = $main;
            main(params)
        }
    };
}

/// Tells the supervisor that this PD has finished with `status`
/// (`capdl_spec::supervisor::LABEL_PD_DONE`) and blocks forever: the supervisor never
/// answers, so the PD never runs again, and it is not reported as a fault.
#[cfg(target_arch = "x86_64")]
pub fn done(status: u64) -> ! {
    let ep: sel4::Cap<sel4::cap_type::Endpoint> = sel4::Cap::from_bits(slot::common::FAULT_EP);
    loop {
        sel4::set_mr(0, status);
        ep.call(sel4::MessageInfo::new(
            capdl_spec::supervisor::LABEL_PD_DONE,
            0,
            0,
            1,
        ));
    }
}

/// Stops this PD by faulting: the kernel sends a UserException (invalid opcode) to
/// the supervisor, which logs the PD and its registers.
#[cfg(target_arch = "x86_64")]
pub fn fault() -> ! {
    // SAFETY: ud2 raises #UD; the kernel turns it into a fault message and this thread
    // never runs again unless the supervisor restarts it.
    unsafe { core::arch::asm!("ud2", options(noreturn)) }
}
