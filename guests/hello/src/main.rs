//! The smallest guest: a greeting on COM1, then isa-debug-exit with success.
#![no_std]
#![no_main]

rt::entry!(main);

fn main() -> u32 {
    rt::println!("hello from capvisor guest");
    rt::println!("hello: PASS");
    rt::exit::EXIT_SUCCESS
}
