//! kernexec: a kernel in the style of grsecurity's KERNEXEC.
//!
//! Its own 4-level tables keep text read-only (W^X) and kernel data in `.kro`
//! read-only, with CR0.WP = 1 so that even the kernel cannot write them. Kernel code
//! that must change `.kro` opens the kernel (clears CR0.WP), writes, and closes it (sets
//! CR0.WP): exactly two CR0 writes per pair, which is what capvisor's CR0.WP handling is
//! measured on. Three user processes, each with its own CR3 (PCID + NOFLUSH when the CPU
//! has PCID), make `iters` system calls each; every call writes `.kro` inside an
//! open/close pair and touches a working set of `ws` kernel pages.
//!
//! Command line: `iters=N` (default 100), `ws=M` pages (default 16), `corrupt=1` makes
//! the first system call write `.kro` without opening the kernel, so the check that the
//! write landed fails (the failure path test).
#![no_std]
#![no_main]

mod layout;
mod syscalls;

use layout::AddressSpaces;
use rt::exit::{EXIT_FAILURE, EXIT_SUCCESS};
use rt::multiboot::BootInfo;
use rt::println;
use rt::trap::{self, Fault, PF_FETCH, PF_PRESENT, PF_WRITE, VECTOR_PF};
use syscalls::Kernel;

rt::entry!(main);

/// User processes.
pub const PROCESSES: usize = 3;

/// Options from the command line.
#[derive(Clone, Copy)]
pub struct Options {
    pub iters: u64,
    pub ws: u64,
    pub corrupt: bool,
}

fn options(info: &BootInfo) -> Result<Options, &'static str> {
    let iters = info
        .option_u64("iters", 100, 1, 1_000_000)
        .map_err(|_| "iters must be 1..=1000000")?;
    let ws = info
        .option_u64("ws", 16, 1, layout::WS_MAX_PAGES)
        .map_err(|_| "ws must be 1..=4096")?;
    let corrupt = info
        .option_u64("corrupt", 0, 0, 1)
        .map_err(|_| "corrupt must be 0 or 1")?
        == 1;
    Ok(Options { iters, ws, corrupt })
}

fn main() -> u32 {
    match run() {
        Ok(()) => {
            println!("kernexec: PASS");
            EXIT_SUCCESS
        }
        Err(why) => {
            println!("kernexec: FAIL: {}", why);
            EXIT_FAILURE
        }
    }
}

fn run() -> Result<(), Failure> {
    let info = BootInfo::read();
    let opts = options(&info).map_err(Failure::BadOption)?;
    let spaces = AddressSpaces::build(&info, opts.ws)?;
    spaces.enter_kernel();

    check_read_only("kernel text is read-only", layout::text_probe_addr())?;
    check_read_only("kdata is read-only while CR0.WP=1", layout::kdata_addr())?;
    check_data_not_executable()?;

    rt::user::init().map_err(Failure::UserMode)?;
    let mut kernel = Kernel::new(spaces, opts);
    kernel.run_processes()?;
    println!(
        "kernexec: {} processes x {} system calls, working set {} pages",
        PROCESSES, opts.iters, opts.ws
    );
    kernel.verify()?;
    println!(
        "kernexec: every kdata write landed, {} open/close-kernel pairs",
        kernel.toggle_pairs()
    );
    println!("kernexec: kdata checksum {:#018x}", kernel.kdata_checksum());
    println!(
        "kernexec: working set checksum {:#018x}",
        kernel.ws_checksum()
    );
    Ok(())
}

/// A write to `addr` must raise #PF with P|W (supervisor write to a read-only page
/// with CR0.WP = 1, SDM vol. 3 4.6.1), at `addr`, and change nothing.
fn check_read_only(what: &'static str, addr: u64) -> Result<(), Failure> {
    let before = trap::probe_read_u8(addr).map_err(Failure::UnexpectedFault)?;
    // SAFETY: if the write unexpectedly lands it rewrites the byte with its own value.
    let result = unsafe { trap::probe_write_u8(addr, before) };
    match result {
        Ok(()) => Err(Failure::WriteNotBlocked(what)),
        Err(f) if f.vector == VECTOR_PF && f.error == PF_PRESENT | PF_WRITE && f.cr2 == addr => {
            println!("kernexec: {}: #PF error {:#x}", what, f.error);
            Ok(())
        }
        Err(f) => Err(Failure::WrongFault(what, f)),
    }
}

/// A RET in writable data: W^X says it must not run.
static mut DATA_RET: u8 = 0xC3;

/// With NX (EFER.NXE), fetching from data must raise #PF with P|I/D. Silent: whether
/// the CPU has NX is a feature flag, and the output must not depend on it.
fn check_data_not_executable() -> Result<(), Failure> {
    if rt::paging::nx() == 0 {
        return Ok(());
    }
    let addr = core::ptr::addr_of!(DATA_RET) as u64;
    // SAFETY: the target is a lone RET; if NX failed to stop it, it just returns.
    match unsafe { trap::probe_call(addr) } {
        Ok(()) => Err(Failure::WriteNotBlocked("a fetch from data")),
        Err(f) if f.vector == VECTOR_PF && f.error == PF_PRESENT | PF_FETCH && f.cr2 == addr => {
            Ok(())
        }
        Err(f) => Err(Failure::WrongFault("a fetch from data", f)),
    }
}

/// Why the guest failed; printed on the FAIL line.
pub enum Failure {
    BadOption(&'static str),
    Layout(layout::LayoutError),
    UserMode(rt::user::UserModeError),
    WriteNotBlocked(&'static str),
    WrongFault(&'static str, Fault),
    UnexpectedFault(Fault),
    UserFault {
        pid: usize,
        fault: Fault,
    },
    BadSyscall {
        pid: usize,
        nr: u64,
    },
    BadSyscallArgs {
        pid: usize,
        iteration: u64,
    },
    UserDataMismatch {
        pid: usize,
        iteration: u64,
    },
    KdataWriteLost {
        pid: usize,
        iteration: u64,
        slot: usize,
    },
    KdataMismatch {
        slot: usize,
    },
    WorkingSetMismatch {
        page: u64,
        pid: usize,
    },
    BadReply {
        pid: usize,
    },
    EarlyExit {
        pid: usize,
        iteration: u64,
    },
}

impl From<layout::LayoutError> for Failure {
    fn from(e: layout::LayoutError) -> Failure {
        Failure::Layout(e)
    }
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Failure::BadOption(why) => write!(f, "bad command line: {why}"),
            Failure::Layout(e) => write!(f, "cannot build the address spaces: {e:?}"),
            Failure::UserMode(e) => write!(f, "no user mode: {e:?}"),
            Failure::WriteNotBlocked(what) => write!(f, "an access was not blocked ({what})"),
            Failure::WrongFault(what, x) => write!(f, "wrong fault ({what}): {x:?}"),
            Failure::UnexpectedFault(x) => write!(f, "unexpected fault: {x:?}"),
            Failure::UserFault { pid, fault } => write!(f, "process {pid} faulted: {fault:?}"),
            Failure::BadSyscall { pid, nr } => {
                write!(f, "process {pid} made unknown system call {nr}")
            }
            Failure::BadSyscallArgs { pid, iteration } => {
                write!(
                    f,
                    "process {pid} passed wrong arguments at iteration {iteration}"
                )
            }
            Failure::UserDataMismatch { pid, iteration } => {
                write!(f, "process {pid}'s data page does not hold what it wrote at iteration {iteration}")
            }
            Failure::KdataWriteLost {
                pid,
                iteration,
                slot,
            } => {
                write!(f, "kdata write by process {pid} at iteration {iteration} did not land (slot {slot})")
            }
            Failure::KdataMismatch { slot } => {
                write!(f, "kdata slot {slot} differs from the kernel's record")
            }
            Failure::WorkingSetMismatch { page, pid } => {
                write!(f, "working set page {page} word {pid} holds a wrong sum")
            }
            Failure::BadReply { pid } => {
                write!(f, "process {pid} received a wrong system call result")
            }
            Failure::EarlyExit { pid, iteration } => {
                write!(f, "process {pid} exited after {iteration} calls")
            }
        }
    }
}
