//! The UART driver PD (see the library).
#![no_std]
#![no_main]

sel4_pd::declare_main!(main);

fn main(params: &'static sel4_pd::BootParams) -> ! {
    uart_pd::run(params, None)
}
