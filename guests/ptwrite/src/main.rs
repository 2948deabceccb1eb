#![no_std]
#![no_main]
rt::entry!(main);
// Written next; fails loudly until then.
fn main() -> u32 {
    rt::println!("ptwrite: FAIL: not written yet");
    rt::exit::EXIT_FAILURE
}
