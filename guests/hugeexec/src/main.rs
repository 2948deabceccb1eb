//! hugeexec: reads and executes 2 MiB pages, the workload of the NX-huge-page
//! mitigation (MMU_REFERENCE.md section 5).
//!
//! hp1, hp2, hp3 are guest-physical 64, 66 and 68 MiB, mapped at the same virtual
//! addresses by 2 MiB (PS) PDEs. Their first and last 4 KiB come from the ELF image
//! (see `contents`), so the guest never writes them and each page is first touched by
//! a measured step. Everything else the guest touches (image, stack, page tables)
//! lies below 2 MiB and is mapped with 4 KiB pages.
//!
//! Steps, each followed by a checkpoint (port 0x80) with its number: 1 read hp1,
//! 2 read hp2, 3 execute hp1, 4 execute hp3, 5 read hp1, 6 wait hint (port 0x81) then
//! checkpoint, 7 read hp3. After each step the bytes read and the values the code
//! returned are checked.
#![no_std]
#![no_main]

mod contents;

use contents::*;
use rt::cpu;
use rt::exit::{checkpoint, wait_hint, EXIT_FAILURE, EXIT_SUCCESS};
use rt::paging::{FrameAlloc, PageTables, PagingError, PAGE_2M, WRITABLE};
use rt::println;

rt::entry!(main);

/// Guest-physical (= virtual) address of huge page `hp` (1..=3).
const fn hp_base(hp: u8) -> u64 {
    (64 << 20) + (hp as u64 - 1) * PAGE_2M
}

/// How long step 6 asks capvisor to pause, so NX huge page recovery can run.
const WAIT_MS: u32 = 2000;

#[repr(C, align(4096))]
struct TablePool([u8; 8 * 4096]);
static mut TABLE_POOL: TablePool = TablePool([0; 8 * 4096]);

enum Failure {
    Paging(PagingError),
    Byte {
        hp: u8,
        off: usize,
        want: u8,
        got: u8,
    },
    Call {
        hp: u8,
        off: usize,
        want: u64,
        got: u64,
    },
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Failure::Paging(e) => write!(f, "cannot build the page tables: {e:?}"),
            Failure::Byte { hp, off, want, got } => {
                write!(f, "hp{hp} byte {off:#x}: want {want:#04x}, got {got:#04x}")
            }
            Failure::Call { hp, off, want, got } => {
                write!(
                    f,
                    "hp{hp} code at {off:#x} returned {got:#x}, want {want:#x}"
                )
            }
        }
    }
}

impl From<PagingError> for Failure {
    fn from(e: PagingError) -> Failure {
        Failure::Paging(e)
    }
}

fn main() -> u32 {
    match run() {
        Ok(()) => {
            println!("hugeexec: PASS");
            EXIT_SUCCESS
        }
        Err(f) => {
            println!("hugeexec: FAIL: {f}");
            EXIT_FAILURE
        }
    }
}

/// 4 KiB identity map of the first 2 MiB (kernel, executable) and the three huge
/// pages (executable: no NX), all page tables in the image's bss.
fn enter_tables() -> Result<(), Failure> {
    let pool = core::ptr::addr_of_mut!(TABLE_POOL) as u64;
    let mut alloc = FrameAlloc::new(pool, pool + core::mem::size_of::<TablePool>() as u64);
    let mut tables = PageTables::new(&mut alloc)?;
    tables.map_range_4k(&mut alloc, 0, 0, PAGE_2M, WRITABLE)?;
    for hp in 1..=3 {
        tables.map_2m(&mut alloc, hp_base(hp), hp_base(hp), WRITABLE)?;
    }
    // SAFETY: the new tables map the image, its stack and its tables as before.
    unsafe { cpu::write_cr3(tables.root()) };
    Ok(())
}

fn run() -> Result<(), Failure> {
    enter_tables()?;
    println!(
        "hugeexec: hp1, hp2, hp3 mapped with 2M pages at {:#x}, {:#x}, {:#x}",
        hp_base(1),
        hp_base(2),
        hp_base(3)
    );
    step(1, "read hp1", || read(1))?;
    step(2, "read hp2", || read(2))?;
    step(3, "execute hp1", || execute(1))?;
    step(4, "execute hp3", || execute(3))?;
    step(5, "read hp1", || read(1))?;
    wait_hint(WAIT_MS);
    step(6, "wait", || Ok(()))?;
    step(7, "read hp3", || read(3))?;
    Ok(())
}

fn step(n: u32, what: &str, f: impl FnOnce() -> Result<(), Failure>) -> Result<(), Failure> {
    f()?;
    checkpoint(n);
    println!("hugeexec: step {n}: {what}: ok");
    Ok(())
}

fn byte_at(hp: u8, off: usize) -> u8 {
    // SAFETY: inside huge page `hp`, mapped by `enter_tables`.
    unsafe { ((hp_base(hp) as usize + off) as *const u8).read_volatile() }
}

fn expect_byte(hp: u8, off: usize, want: u8) -> Result<(), Failure> {
    let got = byte_at(hp, off);
    if got == want {
        Ok(())
    } else {
        Err(Failure::Byte { hp, off, want, got })
    }
}

/// Offsets between head and tail that the image fills with zeros (one per 4 KiB page
/// would be 510 reads; a few spread across the page are enough to see a wrong frame).
const ZERO_PROBES: [usize; 4] = [0x1000, 0x80000, 0x100008, 0x1FEFF8];

/// Reads every loaded byte of `hp`'s head and tail, and a few of the zeros in between,
/// and compares them with the image.
fn read(hp: u8) -> Result<(), Failure> {
    let head = head(hp);
    let tail = tail(hp, TAIL_BASE);
    for (off, &want) in head.iter().enumerate() {
        expect_byte(hp, off, want)?;
    }
    for (off, &want) in tail.iter().enumerate() {
        expect_byte(hp, TAIL_BASE + off, want)?;
    }
    for off in ZERO_PROBES {
        expect_byte(hp, off, 0)?;
    }
    Ok(())
}

fn call(hp: u8, off: usize, arg: u64) -> u64 {
    // SAFETY: the code at this offset is one of the functions `contents` placed (or a
    // lone RET), follows the C ABI, and the page is mapped executable.
    unsafe {
        let f: extern "C" fn(u64) -> u64 =
            core::mem::transmute((hp_base(hp) as usize + off) as *const ());
        f(arg)
    }
}

fn expect_call(hp: u8, off: usize, arg: u64, want: u64) -> Result<(), Failure> {
    let got = call(hp, off, arg);
    if got == want {
        Ok(())
    } else {
        Err(Failure::Call { hp, off, want, got })
    }
}

/// Calls the functions at the start and at the end of `hp`, and a lone RET.
fn execute(hp: u8) -> Result<(), Failure> {
    expect_call(hp, HEAD_TAG_FN, 0, u64::from(head_tag(hp)))?;
    let arg = 0x1_0000_0000 + u64::from(hp);
    expect_call(hp, HEAD_ADD_FN, arg, arg + u64::from(add_delta(hp)))?;
    call(hp, HEAD_RET, 0);
    expect_call(hp, TAIL_BASE + TAIL_TAG_FN, 0, u64::from(tail_tag(hp)))?;
    Ok(())
}
