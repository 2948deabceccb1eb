//! The page-table edits and what each must do.

use crate::space::{
    frame_word, stamp, tag, Space, SpaceError, UserAccess, HUGE_FRAME, HUGE_VA, MANY_VA, TEST_VA,
};
use rt::cpu;
use rt::paging::{
    self, PagingError, ACCESSED, ADDR_MASK, DIRTY, HUGE, PAGE_2M, PAGE_4K, PRESENT, USER, WRITABLE,
};
use rt::println;
use rt::trap::{self, Fault, PF_PRESENT, PF_USER, PF_WRITE, VECTOR_PF};

/// A failed check: which step, and what went wrong.
pub struct Failure {
    pub step: &'static str,
    pub problem: Problem,
}

pub enum Problem {
    Space(SpaceError),
    Paging(PagingError),
    /// A read saw `got` where `want` was expected.
    Read {
        va: u64,
        want: u64,
        got: u64,
    },
    /// An access that must fault completed.
    NoFault {
        va: u64,
    },
    /// An access faulted when it must not, or with the wrong vector/error/CR2.
    Fault {
        va: u64,
        fault: Fault,
    },
    /// A page-table entry's accessed/dirty bits are wrong.
    AccessedDirty {
        va: u64,
        pte: u64,
    },
    /// The user-mode helper ended in an unexpected way.
    UserStrange,
}

impl core::fmt::Display for Problem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Problem::Space(e) => write!(f, "cannot build the address space: {e:?}"),
            Problem::Paging(e) => write!(f, "page-table edit failed: {e:?}"),
            Problem::Read { va, want, got } => {
                write!(f, "read at {va:#x}: want {want:#x}, got {got:#x}")
            }
            Problem::NoFault { va } => write!(f, "access at {va:#x} did not fault"),
            Problem::Fault { va, fault } => write!(f, "access at {va:#x}: unexpected {fault:?}"),
            Problem::AccessedDirty { va, pte } => {
                write!(f, "PTE for {va:#x} has wrong A/D bits: {pte:#x}")
            }
            Problem::UserStrange => write!(f, "the user helper ended unexpectedly"),
        }
    }
}

type Step<T = ()> = Result<T, Problem>;

impl From<PagingError> for Problem {
    fn from(e: PagingError) -> Problem {
        Problem::Paging(e)
    }
}

fn at(step: &'static str) -> impl FnOnce(Problem) -> Failure {
    move |problem| Failure { step, problem }
}

fn expect_read(va: u64, want: u64) -> Step {
    match trap::probe_read_u64(va) {
        Ok(got) if got == want => Ok(()),
        Ok(got) => Err(Problem::Read { va, want, got }),
        Err(fault) => Err(Problem::Fault { va, fault }),
    }
}

fn expect_write(va: u64, value: u64) -> Step {
    // SAFETY: every address written is a test page backed by a pool frame.
    unsafe { trap::probe_write_u64(va, value) }.map_err(|fault| Problem::Fault { va, fault })
}

/// A #PF at `va` with exactly `error`.
fn expect_pf(va: u64, error: u64, result: Result<(), Fault>) -> Step<u64> {
    match result {
        Ok(()) => Err(Problem::NoFault { va }),
        Err(f) if f.vector == VECTOR_PF && f.error == error && f.cr2 == va => Ok(f.error),
        Err(fault) => Err(Problem::Fault { va, fault }),
    }
}

fn read_fault(va: u64) -> Result<(), Fault> {
    trap::probe_read_u64(va).map(|_| ())
}

fn write_fault(va: u64) -> Result<(), Fault> {
    // SAFETY: as for `expect_write`; a completed write is reported as a failure.
    unsafe { trap::probe_write_u64(va, 0xdead) }
}

/// A user access that must fault with #PF `error` at `va`.
fn user_fault(va: u64, error: u64, access: UserAccess) -> Step<u64> {
    match access {
        UserAccess::Completed { .. } => Err(Problem::NoFault { va }),
        UserAccess::Faulted(f) => expect_pf(va, error, Err(f)),
        UserAccess::Strange => Err(Problem::UserStrange),
    }
}

/// A user access that must complete; the value read (or written).
fn user_ok(va: u64, access: UserAccess) -> Step<u64> {
    match access {
        UserAccess::Completed { value } => Ok(value),
        UserAccess::Faulted(fault) => Err(Problem::Fault { va, fault }),
        UserAccess::Strange => Err(Problem::UserStrange),
    }
}

pub fn run_all() -> Result<(), Failure> {
    let mut s = Space::enter().map_err(|e| Failure {
        step: "setup",
        problem: Problem::Space(e),
    })?;
    let nx = paging::nx();
    let a = s.frame().map_err(|e| at("setup")(e.into()))?;
    let b = s.frame().map_err(|e| at("setup")(e.into()))?;
    let c = s.frame().map_err(|e| at("setup")(e.into()))?;

    map(&mut s, a, nx).map_err(at("map"))?;
    println!("ptwrite: map: the new frame is visible, A set on read, D set on write");
    remap(&mut s, a, b, nx).map_err(at("remap"))?;
    println!("ptwrite: remap: the other frame is visible after INVLPG");
    let e = write_protect(&mut s, b, nx).map_err(at("read-only"))?;
    println!("ptwrite: read-only: a write faults with #PF error {e:#x}, reads still work");
    write_enable(&mut s, b, nx).map_err(at("read-write"))?;
    println!("ptwrite: read-write again: a write lands");
    let (er, ew) = unmap(&mut s).map_err(at("unmap"))?;
    println!("ptwrite: unmap: a read faults with #PF error {er:#x}, a write with {ew:#x}");
    user_supervisor(&mut s, c, nx).map_err(at("user/supervisor"))?;
    table_swap(&mut s, a, b, nx).map_err(at("table swap"))?;
    println!("ptwrite: table swap: a new page table under a live PDE is used after INVLPG");
    let n = many(&mut s, nx).map_err(at("many mappings"))?;
    println!("ptwrite: {n} mappings in one table: mapped, rotated and unmapped");
    split_huge(&mut s, b, nx).map_err(at("2M page"))?;
    println!("ptwrite: 2M page: replaced by a 4K table with one page remapped");
    Ok(())
}

/// Map A read-write: reads see A; the walk sets A, a write sets D; the write lands in A.
fn map(s: &mut Space, a: u64, nx: u64) -> Step {
    s.set_pte(TEST_VA, a | PRESENT | WRITABLE | nx)?;
    expect_read(TEST_VA, tag(a))?;
    let pte = s.pte(TEST_VA)?;
    if pte & ACCESSED == 0 || pte & DIRTY != 0 {
        return Err(Problem::AccessedDirty { va: TEST_VA, pte });
    }
    expect_write(TEST_VA + 8, 0x1111)?;
    let pte = s.pte(TEST_VA)?;
    if pte & DIRTY == 0 {
        return Err(Problem::AccessedDirty { va: TEST_VA, pte });
    }
    let got = frame_word(a, 1);
    if got != 0x1111 {
        return Err(Problem::Read {
            va: a + 8,
            want: 0x1111,
            got,
        });
    }
    Ok(())
}

/// Point the PTE at B: reads see B, and A keeps what was written through the old PTE.
fn remap(s: &mut Space, a: u64, b: u64, nx: u64) -> Step {
    s.set_pte(TEST_VA, b | PRESENT | WRITABLE | nx)?;
    expect_read(TEST_VA, tag(b))?;
    expect_read(TEST_VA + 8 * 511, !tag(b))?;
    let got = frame_word(a, 1);
    if got != 0x1111 {
        return Err(Problem::Read {
            va: a + 8,
            want: 0x1111,
            got,
        });
    }
    Ok(())
}

/// Clear W: a supervisor write faults (CR0.WP = 1) and changes nothing; reads work.
fn write_protect(s: &mut Space, b: u64, nx: u64) -> Step<u64> {
    s.set_pte(TEST_VA, b | PRESENT | nx)?;
    let e = expect_pf(TEST_VA, PF_PRESENT | PF_WRITE, write_fault(TEST_VA))?;
    expect_read(TEST_VA, tag(b))?;
    Ok(e)
}

/// Set W again: the write lands in B.
fn write_enable(s: &mut Space, b: u64, nx: u64) -> Step {
    s.set_pte(TEST_VA, b | PRESENT | WRITABLE | nx)?;
    expect_write(TEST_VA + 16, 0x2222)?;
    let got = frame_word(b, 2);
    if got != 0x2222 {
        return Err(Problem::Read {
            va: b + 16,
            want: 0x2222,
            got,
        });
    }
    Ok(())
}

/// Clear the PTE: reads and writes fault as not-present.
fn unmap(s: &mut Space) -> Step<(u64, u64)> {
    s.set_pte(TEST_VA, 0)?;
    let er = expect_pf(TEST_VA, 0, read_fault(TEST_VA))?;
    let ew = expect_pf(TEST_VA, PF_WRITE, write_fault(TEST_VA))?;
    Ok((er, ew))
}

/// U/S and R/W seen from user mode.
fn user_supervisor(s: &mut Space, c: u64, nx: u64) -> Step {
    s.set_pte(TEST_VA, c | PRESENT | WRITABLE | nx)?;
    let e = user_fault(TEST_VA, PF_PRESENT | PF_USER, s.user_read(TEST_VA))?;
    println!(
        "ptwrite: user/supervisor: a user read of a supervisor page faults with #PF error {e:#x}"
    );

    s.set_pte(TEST_VA, c | PRESENT | USER | nx)?;
    let got = user_ok(TEST_VA, s.user_read(TEST_VA))?;
    if got != tag(c) {
        return Err(Problem::Read {
            va: TEST_VA,
            want: tag(c),
            got,
        });
    }
    println!("ptwrite: user/supervisor: a user read of a user page sees the frame");

    let e = user_fault(
        TEST_VA,
        PF_PRESENT | PF_WRITE | PF_USER,
        s.user_write(TEST_VA, 0x3333),
    )?;
    println!("ptwrite: user/supervisor: a user write of a read-only user page faults with #PF error {e:#x}");

    s.set_pte(TEST_VA, c | PRESENT | USER | WRITABLE | nx)?;
    user_ok(TEST_VA, s.user_write(TEST_VA, 0x3333))?;
    let got = frame_word(c, 0);
    if got != 0x3333 {
        return Err(Problem::Read {
            va: c,
            want: 0x3333,
            got,
        });
    }
    println!("ptwrite: user/supervisor: a user write of a writable user page lands");
    s.set_pte(TEST_VA, 0)?;
    Ok(())
}

/// Build a second page table for TEST_VA's 2 MiB region mapping A, swap it into the
/// PDE, INVLPG: reads see A; swap the old table back (which maps nothing there): faults.
fn table_swap(s: &mut Space, a: u64, b: u64, nx: u64) -> Step {
    s.set_pte(TEST_VA, b | PRESENT | WRITABLE | nx)?;
    expect_read(TEST_VA, tag(b))?;
    let (pde_slot, _) = pde_of(s, TEST_VA)?;
    let old_pde = read_u64(pde_slot);
    let new_pt = s.alloc.alloc()?;
    // SAFETY: `new_pt` is a fresh identity-mapped table.
    unsafe {
        paging::write_entry(
            new_pt,
            paging::index(TEST_VA, 1),
            a | PRESENT | WRITABLE | nx,
        )
    };
    write_u64(pde_slot, (old_pde & !ADDR_MASK) | new_pt);
    cpu::invlpg(TEST_VA);
    expect_read(TEST_VA, tag(a))?;
    write_u64(pde_slot, old_pde);
    cpu::invlpg(TEST_VA);
    expect_read(TEST_VA, tag(b))?;
    s.set_pte(TEST_VA, 0)?;
    expect_pf(TEST_VA, 0, read_fault(TEST_VA))?;
    Ok(())
}

/// 64 PTEs in one table: map to 64 frames, rotate them by one, unmap them all.
fn many(s: &mut Space, nx: u64) -> Step<usize> {
    const N: usize = 64;
    let mut frames = [0u64; N];
    for f in frames.iter_mut() {
        *f = s.frame()?;
    }
    let va = |k: usize| MANY_VA + k as u64 * PAGE_4K;
    for (k, &f) in frames.iter().enumerate() {
        s.set_pte(va(k), f | PRESENT | WRITABLE | nx)?;
    }
    for (k, &f) in frames.iter().enumerate() {
        expect_read(va(k), tag(f))?;
    }
    for k in 0..N {
        s.set_pte(va(k), frames[(k + 1) % N] | PRESENT | WRITABLE | nx)?;
    }
    for k in 0..N {
        expect_read(va(k), tag(frames[(k + 1) % N]))?;
        expect_write(va(k) + 8, k as u64)?;
    }
    for k in 0..N {
        let got = frame_word(frames[(k + 1) % N], 1);
        if got != k as u64 {
            return Err(Problem::Read {
                va: frames[(k + 1) % N] + 8,
                want: k as u64,
                got,
            });
        }
    }
    for k in 0..N {
        s.set_pte(va(k), 0)?;
    }
    for k in 0..N {
        expect_pf(va(k), 0, read_fault(va(k)))?;
    }
    Ok(N)
}

/// Map a 2 MiB page, read its first and last 4 KiB; replace the PDE by a 4 KiB table
/// mapping the same frames except page 1, which goes to B; INVLPG the pages used.
fn split_huge(s: &mut Space, b: u64, nx: u64) -> Step {
    let last = PAGE_2M - PAGE_4K;
    for off in [0, PAGE_4K, last] {
        stamp(HUGE_FRAME + off);
    }
    let (pde_slot, _) = pde_of(s, HUGE_VA)?;
    write_u64(pde_slot, HUGE_FRAME | PRESENT | WRITABLE | HUGE | nx);
    cpu::invlpg(HUGE_VA);
    for off in [0, PAGE_4K, last] {
        expect_read(HUGE_VA + off, tag(HUGE_FRAME + off))?;
    }
    let pt = s.alloc.alloc()?;
    for i in 0..512u64 {
        let frame = if i == 1 { b } else { HUGE_FRAME + i * PAGE_4K };
        // SAFETY: `pt` is a fresh identity-mapped table.
        unsafe { paging::write_entry(pt, i as usize, frame | PRESENT | WRITABLE | nx) };
    }
    write_u64(pde_slot, pt | PRESENT | WRITABLE | USER);
    // A processor may hold 4 KiB pieces of a large page (SDM vol. 3 4.10.2.3): flush
    // every page that was touched, not only the first.
    for off in [0, PAGE_4K, last] {
        cpu::invlpg(HUGE_VA + off);
    }
    expect_read(HUGE_VA, tag(HUGE_FRAME))?;
    expect_read(HUGE_VA + PAGE_4K, tag(b))?;
    expect_read(HUGE_VA + last, tag(HUGE_FRAME + last))?;
    let pte = s.pte(HUGE_VA + PAGE_4K)?;
    if pte & ADDR_MASK != b {
        return Err(Problem::Read {
            va: HUGE_VA + PAGE_4K,
            want: b,
            got: pte & ADDR_MASK,
        });
    }
    Ok(())
}

/// The PDE slot (physical address) that translates `va`.
fn pde_of(s: &mut Space, va: u64) -> Step<(u64, u64)> {
    let pd = s.tables.table_for(&mut s.alloc, va, 2, true)?;
    Ok((pd + 8 * paging::index(va, 2) as u64, pd))
}

fn read_u64(addr: u64) -> u64 {
    // SAFETY: a page-table slot in identity-mapped memory.
    unsafe { (addr as usize as *const u64).read_volatile() }
}

fn write_u64(addr: u64, v: u64) {
    // SAFETY: as for `read_u64`; callers INVLPG after.
    unsafe { (addr as usize as *mut u64).write_volatile(v) }
}
