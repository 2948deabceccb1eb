//! The mmu-server PD with an injected fault, for test specs: it dies on its first
//! `TdpFault` request, once (see the library).
#![no_std]
#![no_main]

use mmu_server_pd::InjectFault;

sel4_pd::declare_main!(main);

fn main(params: &'static sel4_pd::BootParams) -> ! {
    mmu_server_pd::run(
        params,
        Some(InjectFault {
            label: Some(ipc::Label::TdpFault),
            after: 0,
        }),
    )
}
