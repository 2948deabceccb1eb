//! The mmu-server PD with an injected fault in the middle of a guest's run, for test
//! specs: it dies on the 400th request from the VMs, once (see the library). Under
//! shadow paging kernexec makes about 1000 requests, so the guest has printed its
//! first lines and has most of its work ahead.
#![no_std]
#![no_main]

use mmu_server_pd::InjectFault;

sel4_pd::declare_main!(main);

fn main(params: &'static sel4_pd::BootParams) -> ! {
    mmu_server_pd::run(
        params,
        Some(InjectFault {
            label: None,
            after: 399,
        }),
    )
}
