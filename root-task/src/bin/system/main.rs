//! capvisor's system root task: instantiates the capDL spec embedded at build time
//! (the binary spec written by `capdl binary`, and the ELF image of every PD it names;
//! see build.rs), starts the protection domains, then serves as their supervisor on
//! the fault endpoint.
//!
//! A spec that cannot be instantiated (too little untyped memory, an object this root
//! task cannot build, a missing or oversized image) is reported with the object at
//! fault, and QEMU is ended through isa-debug-exit with a failure status.
#![no_std]
#![no_main]

extern crate alloc;

mod error;
mod heap;
mod instantiate;
mod supervisor;
mod untyped;

mod system {
    include!(concat!(env!("OUT_DIR"), "/system.rs"));
}

use error::Error;
use log::{error, info};
use sel4_root_task::BootInfo;

#[global_allocator]
static ALLOCATOR: heap::Bump = heap::Bump;

/// Written to isa-debug-exit when the spec cannot be instantiated: QEMU exits with
/// status (0x11 << 1) | 1 = 35.
const EXIT_FAILURE: u32 = 0x11;

sel4_root_task::declare_main!(main);

fn main(bi: &'static BootInfo) -> ! {
    sel4_root_task::logger::init(log::LevelFilter::Info);
    sel4_root_task::set_panic_hook(fail_exit);
    sel4::debug_println!(
        "capvisor system: seL4 5.0.0 x86_64, kernel config {}, spec {}",
        sel4_sys::KERNEL_CONFIG,
        system::SPEC_PATH
    );
    match start(bi) {
        Ok(running) => supervisor::run(running),
        Err(e) => {
            error!("capvisor system: cannot instantiate the spec: {e}");
            fail_exit();
            loop {
                sel4::debug::debug_halt();
            }
        }
    }
}

fn start(bi: &'static BootInfo) -> Result<instantiate::Running, Error> {
    if system::SPEC.is_empty() {
        return Err(Error::NoSpec);
    }
    let spec = capdl_spec::SpecView::parse(system::SPEC).map_err(Error::BadSpec)?;
    info!(
        "spec: {} objects, {} capabilities, {} PDs, {} VMs; {} images embedded",
        spec.objects().len(),
        spec.caps().len(),
        spec.pds().len(),
        spec.vms().len(),
        system::IMAGES.len()
    );
    let running = instantiate::instantiate(spec, system::IMAGES, bi)?;
    info!(
        "instantiated {} objects, {} capabilities, {} frame mappings, {} KiB of untyped memory used (heap {} KiB)",
        running.objects,
        running.caps,
        running.mappings,
        running.bytes / 1024,
        heap::used() / 1024
    );
    for pd in &running.pds {
        pd.tcb.tcb_resume().map_err(|err| Error::Kernel {
            step: "TCB_Resume",
            object: error::ObjName {
                name: pd.name,
                index: None,
            },
            err,
        })?;
        info!("started PD {} ({}) at {:#x}", pd.name, pd.elf, pd.entry);
    }
    info!("supervisor: waiting for faults");
    Ok(running)
}

fn fail_exit() {
    if let Err(e) = sel4::init_thread::IO_PORT.ioport_out32(0xf4, EXIT_FAILURE) {
        sel4::debug_println!("cannot write the isa-debug-exit port: {e}");
    }
}
