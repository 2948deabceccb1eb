//! The vmm-server PD (see the library).
#![no_std]
#![no_main]

/// The software vCPU allocates its decode cache, translation cache and MSR bitmap when
/// it is created (about 420 KiB); nothing is allocated after start-up.
#[global_allocator]
static HEAP: sel4_pd::heap::BumpHeap<{ 1 << 20 }> = sel4_pd::heap::BumpHeap::new();

sel4_pd::declare_main!(main);

fn main(params: &'static sel4_pd::BootParams) -> ! {
    vmm_server_pd::run(params, &HEAP)
}
