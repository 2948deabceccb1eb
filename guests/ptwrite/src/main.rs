//! ptwrite: edits its own page tables while running and checks every result.
//!
//! Map, remap to another frame, RW -> RO -> RW, unmap, U/S changes checked from user
//! mode, a page-table swap under a live PDE, many PTE writes to one table (flooding
//! under shadow paging) and a 2 MiB page replaced by a 4 KiB table. Each change is
//! followed by INVLPG, as the SDM requires before relying on it (vol. 3 4.10.4). Under
//! capvisor's shadow paging every PTE write is a write to a write-tracked guest page
//! table, so this exercises write tracking, unprotect and emulation; the checks make a
//! stale shadow entry visible as a wrong read or a missing fault.
#![no_std]
#![no_main]

mod checks;
mod space;

use rt::exit::{EXIT_FAILURE, EXIT_SUCCESS};
use rt::println;

rt::entry!(main);

fn main() -> u32 {
    match checks::run_all() {
        Ok(()) => {
            println!("ptwrite: PASS");
            EXIT_SUCCESS
        }
        Err(f) => {
            println!("ptwrite: FAIL: {}: {}", f.step, f.problem);
            EXIT_FAILURE
        }
    }
}
