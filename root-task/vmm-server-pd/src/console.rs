//! What the running VM gets from this PD: its COM1 output on the shared console (the
//! UART driver PD), one line per console request, prefixed with the VM's name so that
//! the lines of concurrent VMs stay apart; and the wait hint.

use sel4_pd::console::Console;
use vmm_server::devices::SerialSink;
use vmm_server::VmHost;

/// Longest guest line kept whole; a longer one is sent in pieces.
const LINE_MAX: usize = 200;

pub struct PdHost {
    console: Console,
    name: &'static str,
    line: heapless::Vec<u8, LINE_MAX>,
    tsc_mhz: u32,
}

impl PdHost {
    pub fn new(name: &'static str, tsc_mhz: u32) -> PdHost {
        PdHost {
            console: Console::standard(),
            name,
            line: heapless::Vec::new(),
            tsc_mhz,
        }
    }

    /// Sends the pending line (if any) to the console.
    pub fn flush(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let mut out: heapless::Vec<u8, { LINE_MAX + 40 }> = heapless::Vec::new();
        let _ = out.extend_from_slice(b"[vm ");
        let _ = out.extend_from_slice(&self.name.as_bytes()[..self.name.len().min(32)]);
        let _ = out.extend_from_slice(b"] ");
        let _ = out.extend_from_slice(&self.line);
        let _ = out.push(b'\n');
        // A refused request loses the line (the console driver was restarting); the
        // VM does not stop for its console.
        let _ = self.console.write(&out);
        self.line.clear();
    }
}

impl SerialSink for PdHost {
    fn put(&mut self, byte: u8) {
        match byte {
            b'\n' => self.flush(),
            b'\r' => {}
            b => {
                if self.line.push(b).is_err() {
                    self.flush();
                    let _ = self.line.push(b);
                }
            }
        }
    }
}

impl VmHost for PdHost {
    /// The guest asked to pause for `ms` milliseconds: this PD has no timer of its
    /// own, so it counts TSC ticks (the kernel's measured frequency, from the boot
    /// parameters), yielding the CPU to the other PDs meanwhile.
    fn wait(&mut self, ms: u32) {
        self.flush();
        if self.tsc_mhz == 0 {
            return;
        }
        let ticks = ms as u64 * 1000 * self.tsc_mhz as u64;
        // SAFETY: RDTSC only reads the time-stamp counter (CR4.TSD is clear for seL4
        // user threads).
        let start = unsafe { core::arch::x86_64::_rdtsc() };
        while unsafe { core::arch::x86_64::_rdtsc() }.wrapping_sub(start) < ticks {
            sel4_sys::syscalls::yield_now();
        }
    }
}
