//! faults: guests that end badly on purpose, for the VMM's error paths.
//!
//! `mode=triple`: loads an empty IDT and executes UD2: #UD cannot be delivered, nor the
//! #DF that follows, so the CPU shuts down (triple fault, SDM vol. 3 6.15 "Interrupt 8").
//! `mode=sse`: executes XORPS, an SSE instruction. With CR4.OSFXSR = 0 a real CPU raises
//! #UD (reported by the runtime as an unexpected exception); capvisor's software CPU has
//! no SSE and must stop with an "unimplemented instruction" diagnostic instead.
//! `mode=ud`: executes UD2 with the runtime's IDT: reported as an unexpected #UD.
//! Without a mode it fails, saying so.
#![no_std]
#![no_main]

use rt::exit::EXIT_FAILURE;
use rt::multiboot::BootInfo;
use rt::println;

rt::entry!(main);

fn main() -> u32 {
    let info = BootInfo::read();
    match info.option("mode") {
        Some(b"triple") => {
            println!("faults: triple fault next");
            #[repr(C, packed)]
            struct Pointer {
                limit: u16,
                base: u64,
            }
            let empty = Pointer { limit: 0, base: 0 };
            // SAFETY: ends the VM on purpose; nothing runs after the UD2.
            unsafe { core::arch::asm!("lidt [{}]", "ud2", in(reg) &empty, options(noreturn)) }
        }
        Some(b"sse") => {
            println!("faults: executing an SSE instruction");
            // SAFETY: XORPS xmm0, xmm0 (0F 57 C0) written as bytes: the target has no
            // SSE, so the assembler would refuse the mnemonic. It faults or stops the VM.
            unsafe { core::arch::asm!(".byte 0x0f, 0x57, 0xc0", options(nomem, nostack)) };
            println!("faults: FAIL: the SSE instruction completed");
            EXIT_FAILURE
        }
        Some(b"ud") => {
            println!("faults: executing UD2");
            // SAFETY: raises #UD, which the runtime reports and ends the VM.
            unsafe { core::arch::asm!("ud2", options(noreturn)) }
        }
        _ => {
            println!("faults: FAIL: no mode=triple|sse|ud on the command line");
            EXIT_FAILURE
        }
    }
}
