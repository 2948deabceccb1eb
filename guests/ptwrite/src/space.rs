//! ptwrite's address space: the kernel identity map, user text and stack, and the
//! regions whose mappings the checks edit.

use rt::cpu::{self, CR0_WP};
use rt::multiboot::BootInfo;
use rt::paging::{
    self, image, FrameAlloc, PageTables, PagingError, PAGE_2M, PAGE_4K, USER, WRITABLE,
};
use rt::trap::Fault;
use rt::user::{self, UserExit, UserRegs, USER_RFLAGS};

/// Identity-mapped for the kernel.
pub const IDENTITY_END: u64 = 32 << 20;
const POOL_START: u64 = 4 << 20;
const POOL_END: u64 = 16 << 20;
/// A 2 MiB-aligned physical region outside the pool, for the large-page check.
pub const HUGE_FRAME: u64 = 16 << 20;

/// The page the single-page checks edit (PML4 0, PDPT 1).
pub const TEST_VA: u64 = 0x4000_0000;
/// Start of the 64-page region (its own page table).
pub const MANY_VA: u64 = 0x4020_0000;
/// A 2 MiB-aligned address for the large-page check.
pub const HUGE_VA: u64 = 0x4040_0000;
/// User text and stack (PML4 1).
pub const USER_TEXT: u64 = 0x80_0000_0000;
pub const USER_STACK: u64 = USER_TEXT + 0x10_0000;

/// A distinct tag per frame, stored in word 0 (and its complement in word 511).
pub fn tag(frame: u64) -> u64 {
    0x5054_0000_0000_0000 | frame
}

/// Fills `frame` with its tag pattern.
pub fn stamp(frame: u64) {
    let p = frame as usize as *mut u64;
    // SAFETY: frames come from the identity-mapped pool or the reserved huge region.
    unsafe {
        p.write_volatile(tag(frame));
        p.add(511).write_volatile(!tag(frame));
    }
}

/// Reads word `i` of `frame` through the identity map.
pub fn frame_word(frame: u64, i: usize) -> u64 {
    // SAFETY: as for `stamp`.
    unsafe { (frame as usize as *const u64).add(i).read_volatile() }
}

/// Why building the address space failed (printed with `Debug` on the FAIL line).
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)]
pub enum SpaceError {
    NotEnoughMemory,
    Paging(PagingError),
    UserMode(user::UserModeError),
}

impl From<user::UserModeError> for SpaceError {
    fn from(e: user::UserModeError) -> SpaceError {
        SpaceError::UserMode(e)
    }
}

impl From<PagingError> for SpaceError {
    fn from(e: PagingError) -> SpaceError {
        SpaceError::Paging(e)
    }
}

pub struct Space {
    pub tables: PageTables,
    pub alloc: FrameAlloc,
}

core::arch::global_asm!(
    r#"
    .section .user_text, "ax"
    /* rdi = address: syscall(1) with rsi = the u64 read there. */
    .global pt_user_read
pt_user_read:
    mov rsi, [rdi]
    mov eax, 1
    syscall
    ud2
    /* rdi = address, rsi = value: store, then syscall(1). */
    .global pt_user_write
pt_user_write:
    mov [rdi], rsi
    mov eax, 1
    syscall
    ud2
"#
);

extern "C" {
    fn pt_user_read();
    fn pt_user_write();
}

/// What a user access did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserAccess {
    Completed {
        value: u64,
    },
    Faulted(Fault),
    /// The user code ended some other way (a bug in this guest).
    Strange,
}

impl Space {
    /// Builds the tables and switches to them, with CR0.WP = 1.
    pub fn enter() -> Result<Space, SpaceError> {
        let info = BootInfo::read();
        if info.ram_end().is_none_or(|end| end < IDENTITY_END) {
            return Err(SpaceError::NotEnoughMemory);
        }
        let mut alloc = FrameAlloc::new(POOL_START, POOL_END);
        let mut tables = PageTables::new(&mut alloc)?;
        tables.map_range_4k(&mut alloc, 0, 0, PAGE_2M, WRITABLE)?;
        let mut pa = PAGE_2M;
        while pa < IDENTITY_END {
            tables.map_2m(&mut alloc, pa, pa, WRITABLE | paging::nx())?;
            pa += PAGE_2M;
        }
        let user_text_len = image::user_text_end() - image::user_text_start();
        tables.map_range_4k(
            &mut alloc,
            USER_TEXT,
            image::user_text_start(),
            user_text_len,
            USER,
        )?;
        let stack = alloc.alloc()?;
        tables.map_4k(
            &mut alloc,
            USER_STACK,
            stack,
            USER | WRITABLE | paging::nx(),
        )?;
        // The test regions' tables exist up front and are user-accessible at every
        // non-leaf level, so each check's leaf entry alone decides.
        tables.table_for(&mut alloc, TEST_VA, 1, true)?;
        tables.table_for(&mut alloc, MANY_VA, 1, true)?;
        tables.table_for(&mut alloc, HUGE_VA, 2, true)?;
        // SAFETY: the new tables identity-map all the kernel uses.
        unsafe {
            cpu::write_cr3(tables.root());
            cpu::write_cr0(cpu::read_cr0() | CR0_WP);
        }
        user::init()?;
        Ok(Space { tables, alloc })
    }

    /// A fresh stamped frame.
    pub fn frame(&mut self) -> Result<u64, PagingError> {
        let f = self.alloc.alloc()?;
        stamp(f);
        Ok(f)
    }

    /// Writes the leaf entry for `va` and INVLPGs it.
    pub fn set_pte(&mut self, va: u64, value: u64) -> Result<(), PagingError> {
        self.tables.set_leaf_entry(va, value)
    }

    pub fn pte(&self, va: u64) -> Result<u64, PagingError> {
        self.tables.leaf_entry(va)
    }

    fn run_user(&mut self, entry: unsafe extern "C" fn(), rdi: u64, rsi: u64) -> UserAccess {
        let mut regs = UserRegs {
            rip: USER_TEXT + (entry as *const () as u64 - image::user_text_start()),
            rsp: USER_STACK + PAGE_4K,
            rflags: USER_RFLAGS,
            rdi,
            rsi,
            ..UserRegs::default()
        };
        // SAFETY: the user text and stack are mapped at the addresses used.
        match unsafe { user::run(&mut regs) } {
            UserExit::Syscall if regs.rax == 1 => UserAccess::Completed { value: regs.rsi },
            UserExit::Syscall => UserAccess::Strange,
            UserExit::Fault(f) => UserAccess::Faulted(f),
        }
    }

    /// Reads a u64 at `va` from user mode.
    pub fn user_read(&mut self, va: u64) -> UserAccess {
        self.run_user(pt_user_read, va, 0)
    }

    /// Writes a u64 at `va` from user mode.
    pub fn user_write(&mut self, va: u64, value: u64) -> UserAccess {
        match self.run_user(pt_user_write, va, value) {
            UserAccess::Completed { .. } => UserAccess::Completed { value },
            other => other,
        }
    }
}
