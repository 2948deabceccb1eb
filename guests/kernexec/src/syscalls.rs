//! The processes, their system calls and the checks on what those calls wrote.

use crate::layout::{
    self, close_kernel, kdata_read, kdata_write, open_kernel, AddressSpaces, KDATA_WORDS,
};
use crate::{Failure, Options, PROCESSES};
use rt::paging::PAGE_4K;
use rt::user::{self, UserExit, UserRegs, USER_RFLAGS};

/// `work(i, v)`: v = pid << 32 | i, also stored by the process at data word i % 512.
/// Returns v + 1.
pub const SYS_WORK: u64 = 1;
/// `exit()`.
pub const SYS_EXIT: u64 = 2;
/// `bad_reply()`: the process saw a wrong result from `work`.
pub const SYS_BAD_REPLY: u64 = 3;

core::arch::global_asm!(
    r#"
    .section .user_text, "ax"
    /* rdi = pid, rsi = iterations. Kept in r12/r13/r14, which the kernel preserves. */
    .global kx_user_main
kx_user_main:
    mov r12, rdi
    mov r13, rsi
    xor r14d, r14d
    test r13, r13
    jz 2f
1:
    mov rax, r12
    shl rax, 32
    or rax, r14
    mov rcx, r14
    and ecx, 511
    mov rdx, {user_data}
    mov [rdx + rcx * 8], rax
    mov rsi, rax
    mov rdi, r14
    mov eax, {sys_work}
    syscall
    mov rdx, r12
    shl rdx, 32
    or rdx, r14
    inc rdx
    cmp rax, rdx
    jne 3f
    inc r14
    cmp r14, r13
    jb 1b
2:
    mov eax, {sys_exit}
    syscall
    ud2
3:
    mov eax, {sys_bad_reply}
    syscall
    ud2
"#,
    user_data = const layout::USER_DATA,
    sys_work = const SYS_WORK,
    sys_exit = const SYS_EXIT,
    sys_bad_reply = const SYS_BAD_REPLY,
);

extern "C" {
    fn kx_user_main();
}

/// The value process `pid` adds to its `.kro` slot at iteration `i`.
pub fn kdata_delta(pid: usize, i: u64) -> u64 {
    ((pid as u64) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
}

/// The `.kro` slot process `pid` writes at iteration `i`.
pub fn kdata_slot(pid: usize, i: u64) -> usize {
    ((pid as u64 * 7 + i * 13) % KDATA_WORDS as u64) as usize
}

/// Folds words into the printed checksums.
pub fn fold(acc: u64, word: u64) -> u64 {
    (acc.rotate_left(5) ^ word).wrapping_mul(0x0000_0100_0000_01B3)
}

struct Process {
    regs: UserRegs,
    next_iteration: u64,
    exited: bool,
}

/// The kernel's state across the run.
pub struct Kernel {
    spaces: AddressSpaces,
    opts: Options,
    processes: [Process; PROCESSES],
    /// What `.kro` should hold: the kernel's own record of every write.
    kdata_expected: [u64; KDATA_WORDS],
    toggle_pairs: u64,
}

enum Step {
    Continue,
    Exited,
}

impl Kernel {
    pub fn new(spaces: AddressSpaces, opts: Options) -> Kernel {
        let entry = layout::USER_TEXT
            + (kx_user_main as *const () as u64 - rt::paging::image::user_text_start());
        let process = |pid: usize| Process {
            regs: UserRegs {
                rip: entry,
                rsp: layout::USER_STACK + PAGE_4K,
                rflags: USER_RFLAGS,
                rdi: pid as u64,
                rsi: opts.iters,
                ..UserRegs::default()
            },
            next_iteration: 0,
            exited: false,
        };
        let mut kdata_expected = [0; KDATA_WORDS];
        for (slot, word) in kdata_expected.iter_mut().enumerate() {
            *word = kdata_read(slot);
        }
        Kernel {
            spaces,
            opts,
            processes: [process(0), process(1), process(2)],
            kdata_expected,
            toggle_pairs: 0,
        }
    }

    /// Runs the processes round-robin, one system call per turn, until all exit.
    pub fn run_processes(&mut self) -> Result<(), Failure> {
        let mut live = PROCESSES;
        let mut pid = 0;
        while live > 0 {
            if !self.processes[pid].exited {
                self.spaces.switch_to(pid);
                // SAFETY: the process's tables map its text, data and stack at the
                // addresses its registers use.
                let why = unsafe { user::run(&mut self.processes[pid].regs) };
                match why {
                    UserExit::Fault(fault) => return Err(Failure::UserFault { pid, fault }),
                    UserExit::Syscall => {
                        if let Step::Exited = self.syscall(pid)? {
                            self.processes[pid].exited = true;
                            live -= 1;
                        }
                    }
                }
            }
            pid = (pid + 1) % PROCESSES;
        }
        Ok(())
    }

    fn syscall(&mut self, pid: usize) -> Result<Step, Failure> {
        let regs = self.processes[pid].regs;
        let iteration = self.processes[pid].next_iteration;
        match regs.rax {
            SYS_WORK => {
                let i = regs.rdi;
                let v = ((pid as u64) << 32) | i;
                if i != iteration || regs.rsi != v {
                    return Err(Failure::BadSyscallArgs { pid, iteration });
                }
                // The process wrote v to its own data page: read it back through the
                // process's mapping (catches a wrong CR3 or a stale PCID translation).
                let seen = rt::trap::probe_read_u64(layout::USER_DATA + (i % 512) * 8)
                    .map_err(Failure::UnexpectedFault)?;
                if seen != v {
                    return Err(Failure::UserDataMismatch { pid, iteration });
                }
                self.write_kdata(pid, i)?;
                self.touch_working_set(pid, i);
                let p = &mut self.processes[pid];
                p.regs.rax = v + 1;
                p.next_iteration += 1;
                Ok(Step::Continue)
            }
            SYS_EXIT => {
                if iteration != self.opts.iters {
                    return Err(Failure::EarlyExit { pid, iteration });
                }
                Ok(Step::Exited)
            }
            SYS_BAD_REPLY => Err(Failure::BadReply { pid }),
            nr => Err(Failure::BadSyscall { pid, nr }),
        }
    }

    /// Adds this call's delta to its `.kro` slot inside an open/close-kernel pair and
    /// checks it landed.
    fn write_kdata(&mut self, pid: usize, i: u64) -> Result<(), Failure> {
        let slot = kdata_slot(pid, i);
        let new = self.kdata_expected[slot].wrapping_add(kdata_delta(pid, i));
        if self.opts.corrupt && pid == 0 && i == 0 {
            // Deliberately forget to open the kernel: with CR0.WP = 1 the write faults
            // and must not land, and the check below must notice.
            // SAFETY: a write to our own `.kro` word; it faults.
            let _ =
                unsafe { rt::trap::probe_write_u64(layout::kdata_addr() + 8 * slot as u64, new) };
        } else {
            open_kernel();
            kdata_write(slot, new);
            close_kernel();
            self.toggle_pairs += 1;
        }
        self.kdata_expected[slot] = new;
        if kdata_read(slot) != new {
            return Err(Failure::KdataWriteLost {
                pid,
                iteration: i,
                slot,
            });
        }
        Ok(())
    }

    /// Word `pid` of every working-set page j gains i + j.
    fn touch_working_set(&mut self, pid: usize, i: u64) {
        for j in 0..self.opts.ws {
            let word = (self.spaces.ws_base + j * PAGE_4K + pid as u64 * 8) as usize as *mut u64;
            // SAFETY: the working set lies in the kernel's identity-mapped frame pool.
            unsafe { word.write_volatile(word.read_volatile().wrapping_add(i + j)) };
        }
    }

    /// Compares `.kro` with the kernel's record and every working-set word with its
    /// closed-form sum.
    pub fn verify(&self) -> Result<(), Failure> {
        for (slot, &want) in self.kdata_expected.iter().enumerate() {
            if kdata_read(slot) != want {
                return Err(Failure::KdataMismatch { slot });
            }
        }
        let n = self.opts.iters;
        // Each process's last store, seen through the kernel's identity map of its
        // data frame: the processes had distinct frames behind the same address.
        for (pid, space) in self.spaces.processes.iter().enumerate() {
            let last = n - 1;
            let word = (space.data_frame + (last % 512) * 8) as usize as *const u64;
            // SAFETY: the data frame lies in the kernel's identity-mapped frame pool.
            if unsafe { word.read_volatile() } != ((pid as u64) << 32) | last {
                return Err(Failure::UserDataMismatch {
                    pid,
                    iteration: last,
                });
            }
        }
        for j in 0..self.opts.ws {
            let want = (n * (n - 1) / 2).wrapping_add(n.wrapping_mul(j));
            for pid in 0..PROCESSES {
                if self.ws_word(j, pid) != want {
                    return Err(Failure::WorkingSetMismatch { page: j, pid });
                }
            }
        }
        Ok(())
    }

    fn ws_word(&self, page: u64, pid: usize) -> u64 {
        let word = (self.spaces.ws_base + page * PAGE_4K + pid as u64 * 8) as usize as *const u64;
        // SAFETY: as in `touch_working_set`.
        unsafe { word.read_volatile() }
    }

    pub fn toggle_pairs(&self) -> u64 {
        self.toggle_pairs
    }

    /// `fold` over the `.kro` words in order.
    pub fn kdata_checksum(&self) -> u64 {
        (0..KDATA_WORDS).fold(0, |acc, slot| fold(acc, kdata_read(slot)))
    }

    /// `fold` over the working set, page by page, words 0..PROCESSES.
    pub fn ws_checksum(&self) -> u64 {
        let mut acc = 0;
        for j in 0..self.opts.ws {
            for pid in 0..PROCESSES {
                acc = fold(acc, self.ws_word(j, pid));
            }
        }
        acc
    }
}
