//! Test PD in a vmm-server's place: prints through the UART PD, asks the PD in the
//! mmu-server's place to wait for recovery ticks (over the badged mmu endpoint), then
//! ends QEMU through the isa-debug-exit ports the spec grants its VM. With the command
//! line "fault" it writes to an unmapped address instead, for the supervisor to report.
#![no_std]
#![no_main]

use capvisor_test_pds::{CMDLINE_FAULT, EXIT_PASS, FAULT_ADDR, LABEL_WAIT_TICKS};
use log::{error, info};
use sel4::cap_type::{Endpoint, IoPort};
use sel4::{Cap, MessageInfo};
use sel4_pd::{slot, BootParams};

const MMU_EP: Cap<Endpoint> = Cap::from_bits(slot::vmm::MMU_EP);
const EXIT_PORTS: Cap<IoPort> = Cap::from_bits(slot::vmm::DEBUG_EXIT_PORTS);
const TICKS: u64 = 3;

sel4_pd::declare_main!(main);

fn main(params: &'static BootParams) -> ! {
    sel4_pd::logger::init(sel4_pd::logger::console_sink, log::LevelFilter::Info);
    let id = params.own_vm().map(|v| v.id.get()).unwrap_or(0);
    info!("test-client: hello from VM {id} through the UART PD");
    if params.cmdline() == CMDLINE_FAULT {
        info!("test-client: faulting on purpose at {FAULT_ADDR:#x}");
        // SAFETY: deliberately invalid: nothing is mapped at FAULT_ADDR, so this store
        // faults and the kernel reports it to the supervisor.
        unsafe { (FAULT_ADDR as *mut u64).write_volatile(0x0bad) };
        error!("test-client: the store to {FAULT_ADDR:#x} did not fault");
        sel4_pd::fault();
    }
    // "ticks=N" on the command line asks for N ticks instead of TICKS.
    let ticks = params
        .cmdline()
        .strip_prefix("ticks=")
        .and_then(|n| n.parse().ok())
        .unwrap_or(TICKS);
    sel4::set_mr(0, ticks);
    let reply = MMU_EP.call(MessageInfo::new(LABEL_WAIT_TICKS, 0, 0, 1));
    let (waited, seen_id) = (sel4::get_mr(0).unwrap_or(0), sel4::get_mr(1).unwrap_or(0));
    info!(
        "test-client: reply label {}: waited {waited} ticks, server saw VM {seen_id}",
        reply.label()
    );
    if reply.label() != 0 || waited != ticks || seen_id != id as u64 {
        error!("test-client: wrong reply");
        sel4_pd::fault();
    }
    info!("test-client: done, exiting QEMU");
    if let Err(e) = EXIT_PORTS.ioport_out32(0xf4, EXIT_PASS) {
        error!("test-client: isa-debug-exit: {e}");
    }
    sel4_pd::fault()
}
