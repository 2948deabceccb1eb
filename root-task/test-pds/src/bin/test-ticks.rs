//! Test PD in the mmu-server's place: it holds the mmu-server's endpoint (receive) and
//! its bound notification, on which the timer PD sends recovery ticks. A client's call
//! `LABEL_WAIT_TICKS(n)` is answered after n more ticks, with the VM id read from the
//! caller's badge.
#![no_std]
#![no_main]

use capvisor_test_pds::LABEL_WAIT_TICKS;
use log::{info, warn};
use sel4::cap_type::{Endpoint, Notification};
use sel4::{Cap, MessageInfo};
use sel4_pd::badge::{decode_mmu_badge, MmuCaller};
use sel4_pd::{slot, BootParams};

const MMU_EP: Cap<Endpoint> = Cap::from_bits(slot::mmu::MMU_EP);
const MMU_NTFN: Cap<Notification> = Cap::from_bits(slot::mmu::MMU_NTFN);

sel4_pd::declare_main!(main);

fn main(params: &'static BootParams) -> ! {
    sel4_pd::logger::init(sel4_pd::logger::console_sink, log::LevelFilter::Info);
    info!(
        "test-ticks: PD {} in the mmu-server's place, {} VM(s)",
        params.pd_index.get(),
        params.vm_count.get()
    );
    loop {
        let (msg, badge) = MMU_EP.recv();
        match decode_mmu_badge(badge) {
            // A tick while nobody waits (the bound notification wakes the Recv).
            MmuCaller::Notification(bits) => info!("test-ticks: idle tick (badge {bits:#x})"),
            MmuCaller::Vm { vm_id, nx_control } => {
                if msg.label() != LABEL_WAIT_TICKS || msg.length() != 1 {
                    warn!(
                        "test-ticks: unexpected label {} from VM {vm_id}",
                        msg.label()
                    );
                    sel4::reply(MessageInfo::new(0xe, 0, 0, 0));
                    continue;
                }
                let n = sel4::get_mr(0).unwrap_or(0);
                info!("test-ticks: VM {vm_id} (nx control {nx_control}) waits for {n} ticks");
                for k in 1..=n {
                    let bits = MMU_NTFN.wait();
                    info!("test-ticks: recovery tick {k}/{n} (badge {bits:#x})");
                }
                sel4::set_mr(0, n);
                sel4::set_mr(1, vm_id as u64);
                sel4::reply(MessageInfo::new(0, 0, 0, 2));
            }
        }
    }
}
