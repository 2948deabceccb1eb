//! The UART driver PD with an injected fault, for test specs: it dies on the third
//! console request of its first life (see the library).
#![no_std]
#![no_main]

sel4_pd::declare_main!(main);

fn main(params: &'static sel4_pd::BootParams) -> ! {
    uart_pd::run(params, Some(3))
}
