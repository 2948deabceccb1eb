//! Behaviour of the data-movement, string, stack and control-flow instructions on
//! memory, and TLB semantics seen from guest code (a stale translation stays visible
//! until INVLPG / MOV CR3, as on hardware).

mod support;

use iced_x86::code_asm::*;
use support::*;
use vcpu::{ExitReason, Gpr};

const DATA: u64 = 0x30000;

fn run(f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>) -> Machine {
    let mut m = Machine::new();
    m.code64(CODE, f);
    m.long_mode(CODE);
    // Any exception is a test failure: make it exit, naming the vector.
    m.cpu.controls.exception_bitmap = u32::MAX;
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Hlt, "{exit:?}");
    m
}

#[test]
fn rep_movs_stos_and_repe_cmps() {
    let mut m = Machine::new();
    m.write(DATA, b"hello, world....");
    m.code64(CODE, |a| {
        a.cld()?;
        a.mov(rsi, DATA)?;
        a.mov(rdi, DATA + 0x100)?;
        a.mov(ecx, 16)?;
        a.rep().movsb()?;
        a.mov(rdi, DATA + 0x200)?;
        a.mov(rax, 0x0101_0101_0101_0101u64)?;
        a.mov(ecx, 4)?;
        a.rep().stosq()?;
        a.mov(rsi, DATA)?;
        a.mov(rdi, DATA + 0x100)?;
        a.mov(ecx, 16)?;
        a.repe().cmpsb()?;
        a.mov(r8, rcx)?;
        a.mov(rdi, DATA)?;
        a.mov(al, b'w' as i32)?;
        a.mov(ecx, 16)?;
        a.repne().scasb()?;
        a.mov(r9, rdi)?;
        a.hlt()
    });
    m.long_mode(CODE);
    assert_eq!(m.run().reason, ExitReason::Hlt);
    let mut b = [0u8; 16];
    m.mem.read(DATA + 0x100, &mut b).unwrap();
    assert_eq!(&b, b"hello, world....");
    assert_eq!(m.read_u64(DATA + 0x218), 0x0101_0101_0101_0101);
    assert_eq!(m.read_u64(DATA + 0x220), 0);
    assert_eq!(m.cpu.gpr(Gpr::R8), 0, "equal strings: REPE runs to the end");
    assert_eq!(m.cpu.gpr(Gpr::R9), DATA + 8, "one past the 'w'");
}

#[test]
fn std_string_ops_go_down() {
    let m = run(|a| {
        a.std()?;
        a.mov(rdi, DATA + 0x18)?;
        a.mov(eax, 0xaabbccddu32)?;
        a.mov(ecx, 3)?;
        a.rep().stosd()?;
        a.cld()?;
        a.hlt()
    });
    assert_eq!(m.read_u32(DATA + 0x18), 0xaabbccdd);
    assert_eq!(m.read_u32(DATA + 0x10), 0xaabbccdd);
    assert_eq!(m.read_u32(DATA + 0x0c), 0);
    assert_eq!(m.cpu.gpr(Gpr::Rdi), DATA + 0x0c);
}

#[test]
fn calls_stack_frames_and_locked_rmw() {
    let m = run(|a| {
        let mut func = a.create_label();
        let mut done = a.create_label();
        a.mov(rbx, DATA)?;
        a.mov(qword_ptr(rbx), 5)?;
        a.push(7)?;
        a.call(func)?;
        a.pop(rcx)?;
        a.jmp(done)?;
        a.set_label(&mut func)?;
        a.enter(16, 0)?;
        a.mov(rax, qword_ptr(rbp + 16))?; // the pushed 7
        a.mov(qword_ptr(rbp - 8), rax)?;
        a.mov(edx, 3)?;
        a.lock().xadd(qword_ptr(rbx), rdx)?; // [rbx] = 8, rdx = 5
        a.mov(eax, 8)?;
        a.mov(esi, 100)?;
        a.lock().cmpxchg(qword_ptr(rbx), rsi)?; // equal: [rbx] = 100
        a.lock().bts(qword_ptr(rbx), 70)?; // imm bit offset wraps to bit 6: 100 | 64 = 100
        a.mov(r8, qword_ptr(rbp - 8))?;
        a.leave()?;
        a.ret()?;
        a.set_label(&mut done)?;
        a.hlt()
    });
    assert_eq!(m.cpu.gpr(Gpr::Rcx), 7);
    assert_eq!(m.cpu.gpr(Gpr::Rdx), 5);
    assert_eq!(m.cpu.gpr(Gpr::R8), 7);
    assert_eq!(m.read_u64(DATA), 100);
    assert_eq!(m.cpu.gpr(Gpr::Rsp), STACK_TOP);
}

#[test]
fn bit_string_with_register_offset_reaches_other_words() {
    let m = run(|a| {
        a.mov(rbx, DATA + 0x40)?;
        a.mov(rcx, -1i64 as u64)?; // bit -1: the top bit of the qword below
        a.bts(qword_ptr(rbx), rcx)?;
        a.mov(rcx, 130u64)?; // bit 2 of the qword at +16
        a.bts(qword_ptr(rbx), rcx)?;
        a.hlt()
    });
    assert_eq!(m.read_u64(DATA + 0x38), 1 << 63);
    assert_eq!(m.read_u64(DATA + 0x50), 4);
}

#[test]
fn cmpxchg16b_and_xchg_memory() {
    let mut m = Machine::new();
    m.write_u64(DATA, 1);
    m.write_u64(DATA + 8, 2);
    m.code64(CODE, |a| {
        a.mov(rdi, DATA)?;
        a.mov(eax, 1)?;
        a.mov(edx, 2)?;
        a.mov(ebx, 10)?;
        a.mov(ecx, 20)?;
        a.lock().cmpxchg16b(xmmword_ptr(rdi))?;
        a.setz(r10b)?;
        a.mov(r11, 99u64)?;
        a.xchg(qword_ptr(rdi), r11)?;
        a.hlt()
    });
    m.long_mode(CODE);
    assert_eq!(m.run().reason, ExitReason::Hlt);
    assert_eq!(m.cpu.gpr(Gpr::R10) & 0xff, 1);
    assert_eq!(m.read_u64(DATA), 99);
    assert_eq!(m.read_u64(DATA + 8), 20);
    assert_eq!(m.cpu.gpr(Gpr::R11), 10);
}

#[test]
fn unaligned_access_across_a_page_boundary() {
    let m = run(|a| {
        a.mov(rax, 0x1122_3344_5566_7788u64)?;
        a.mov(qword_ptr(DATA + 0xffd), rax)?;
        a.mov(rbx, qword_ptr(DATA + 0xffd))?;
        a.hlt()
    });
    assert_eq!(m.cpu.gpr(Gpr::Rbx), 0x1122_3344_5566_7788);
    assert_eq!(m.read_u64(DATA + 0x1000) & 0xff_ffff_ffff, 0x11_2233_4455);
}

#[test]
fn rip_relative_loads_and_indirect_jumps() {
    // The table at the end of the code holds the address of `target`; code jumps
    // through it and loads it RIP-relative.
    let mut m = Machine::new();
    let build = |target_addr: u64| {
        asm(64, CODE, |a| {
            let mut table = a.create_label();
            let mut target = a.create_label();
            a.lea(rax, ptr(table))?;
            a.jmp(qword_ptr(rax))?;
            a.int3()?;
            a.set_label(&mut target)?;
            a.mov(rbx, qword_ptr(table))?;
            a.hlt()?;
            a.set_label(&mut table)?;
            a.dq(&[target_addr])?;
            Ok(())
        })
    };
    let probe = build(0);
    // lea (7) + jmp [rax] (2) + int3 (1): target at +10.
    let code = build(CODE + 10);
    assert_eq!(probe.len(), code.len());
    m.write(CODE, &code);
    m.long_mode(CODE);
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Hlt, "{exit:?}");
    assert_eq!(m.cpu.gpr(Gpr::Rax), CODE + code.len() as u64 - 8);
    assert_eq!(m.cpu.gpr(Gpr::Rbx), CODE + 10);
}

#[test]
fn stale_translation_until_invlpg() {
    // Guest page 0x4000_0000 is mapped by a 4 KiB PTE the guest rewrites.
    let mut m = Machine::new();
    const PT: u64 = 0x8000;
    const PD1: u64 = 0x9000;
    const VA: u64 = 0x4000_0000;
    m.write_u64(PDPT + 8, PD1 | 7);
    m.write_u64(PD1, PT | 7);
    m.write_u64(PT, 0x5_0000 | 7);
    m.write_u64(0x5_0000, 0xaaaa);
    m.write_u64(0x6_0000, 0xbbbb);
    m.code64(CODE, |a| {
        a.mov(rsi, VA)?;
        a.mov(rax, qword_ptr(rsi))?; // fills the TLB: 0xaaaa
        a.mov(rdi, PT)?;
        a.mov(qword_ptr(rdi), 0x6_0000 | 7)?; // remap, no flush
        a.mov(rbx, qword_ptr(rsi))?; // stale: still 0xaaaa
        a.invlpg(ptr(rsi))?;
        a.mov(rcx, qword_ptr(rsi))?; // 0xbbbb
        a.mov(qword_ptr(rdi), 0x5_0000 | 7)?;
        a.mov(rdx, cr3)?;
        a.mov(cr3, rdx)?; // flushes non-global translations
        a.mov(r8, qword_ptr(rsi))?; // 0xaaaa again
        a.hlt()
    });
    m.long_mode(CODE);
    assert_eq!(m.run().reason, ExitReason::Hlt);
    assert_eq!(m.cpu.gpr(Gpr::Rax), 0xaaaa);
    assert_eq!(m.cpu.gpr(Gpr::Rbx), 0xaaaa, "stale until the flush");
    assert_eq!(m.cpu.gpr(Gpr::Rcx), 0xbbbb);
    assert_eq!(m.cpu.gpr(Gpr::R8), 0xaaaa);
}

#[test]
fn segment_loads_and_far_return_in_protected_mode() {
    let mut m = Machine::new();
    m.code32(CODE, |a| {
        a.mov(ax, KDATA as u32)?;
        a.mov(ds, ax)?;
        a.mov(ss, ax)?;
        a.mov(esp, 0x8000)?;
        a.push(KCODE32 as u32)?;
        a.push((CODE + 0x40) as u32)?;
        a.retf()?;
        Ok(())
    });
    m.code32(CODE + 0x40, |a| {
        a.mov(bx, 0x4b)?; // an index past the GDT limit
        a.hlt()
    });
    m.protected_mode32(0x47);
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Hlt, "{exit:?}");
    assert_eq!(exit.rip, CODE + 0x44);
    assert_eq!(m.cpu.segment(vcpu::SegReg::Ss).selector, KDATA);
    assert_eq!(m.cpu.gpr(Gpr::Rsp), 0x8000);
    // The accessed bit of the data descriptor was set by the load.
    assert_ne!(m.read_u64(GDT + KDATA as u64) & (1 << 40), 0);
}

#[test]
fn lock_prefix_on_a_register_destination_is_ud() {
    let mut m = Machine::new();
    m.write(CODE, &[0xf0, 0x01, 0xd8]); // lock add eax, ebx
    m.long_mode(CODE);
    m.cpu.controls.exception_bitmap = 1 << 6;
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::ExceptionOrNmi, "{exit:?}");
    assert_eq!(exit.interruption_info & 0xff, 6);
}

#[test]
fn overlapping_rep_movsb_replicates_like_hardware() {
    let mut m = Machine::new();
    m.write(DATA, b"abcdefgh");
    m.code64(CODE, |a| {
        a.mov(rsi, DATA)?;
        a.mov(rdi, DATA + 1)?;
        a.mov(ecx, 7)?;
        a.rep().movsb()?;
        a.hlt()
    });
    m.long_mode(CODE);
    assert_eq!(m.run().reason, ExitReason::Hlt);
    let mut b = [0u8; 8];
    m.mem.read(DATA, &mut b).unwrap();
    assert_eq!(&b, b"aaaaaaaa", "each byte copies the one just written");
}

#[test]
fn long_rep_movsq_and_stosd_across_pages() {
    let mut m = Machine::new();
    for i in 0..3000u64 {
        m.write_u64(0x10_0000 + 8 * i, i * 0x0101_0101);
    }
    m.code64(CODE, |a| {
        a.mov(rsi, 0x10_0000u64)?;
        a.mov(rdi, 0x20_0003u64)?; // misaligned destination
        a.mov(ecx, 3000)?;
        a.rep().movsq()?;
        a.mov(rdi, 0x30_0ffeu64)?;
        a.mov(eax, 0xdead_beefu32)?;
        a.mov(ecx, 5000)?;
        a.rep().stosd()?;
        a.hlt()
    });
    m.long_mode(CODE);
    assert_eq!(m.run().reason, ExitReason::Hlt);
    let mut b = [0u8; 8];
    for i in [0u64, 1, 511, 512, 1999, 2999] {
        m.mem.read(0x20_0003 + 8 * i, &mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b), i * 0x0101_0101, "qword {i}");
    }
    for i in [0u64, 1, 4999] {
        m.mem.read(0x30_0ffe + 4 * i, &mut b[..4]).unwrap();
        assert_eq!(
            u32::from_le_bytes(b[..4].try_into().unwrap()),
            0xdead_beef,
            "dword {i}"
        );
    }
    assert_eq!(m.cpu.gpr(Gpr::Rdi), 0x30_0ffe + 4 * 5000);
    assert_eq!(m.cpu.gpr(Gpr::Rsi), 0x10_0000 + 8 * 3000);
    assert_eq!(m.cpu.gpr(Gpr::Rcx), 0);
}

#[test]
fn rep_stos_into_an_unmapped_page_stops_at_the_faulting_element() {
    let mut m = Machine::new();
    // Unmap 2..4 MiB.
    m.write_u64(PD + 8, 0);
    m.code64(CODE, |a| {
        a.mov(rdi, 0x1f_fff0u64)?;
        a.mov(eax, 0x11)?;
        a.mov(ecx, 100)?;
        a.rep().stosb()?;
        a.hlt()
    });
    m.long_mode(CODE);
    m.cpu.controls.exception_bitmap = 1 << 14;
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::ExceptionOrNmi, "{exit:?}");
    assert_eq!(exit.qualification, 0x20_0000);
    assert_eq!(
        m.cpu.gpr(Gpr::Rdi),
        0x20_0000,
        "16 bytes stored before the fault"
    );
    assert_eq!(m.cpu.gpr(Gpr::Rcx), 84);
    let prefix = asm(64, CODE, |a| {
        a.mov(rdi, 0x1f_fff0u64)?;
        a.mov(eax, 0x11)?;
        a.mov(ecx, 100)
    });
    assert_eq!(
        m.cpu.rip(),
        CODE + prefix.len() as u64,
        "RIP stays at the REP STOS"
    );
    assert_eq!(m.read_u64(0x1f_fff8), 0x1111_1111_1111_1111);
}

#[test]
fn a_long_rep_counts_as_one_instruction_and_yields_to_the_budget() {
    let mut m = Machine::new();
    m.code64(CODE, |a| {
        a.mov(rdi, 0x10_0000u64)?;
        a.mov(ecx, 300_000)?;
        a.xor(eax, eax)?;
        a.rep().stosb()?;
        a.hlt()
    });
    m.long_mode(CODE);
    assert_eq!(m.run().reason, ExitReason::Hlt);
    assert_eq!(m.cpu.stats().instructions, 4);
    assert_eq!(m.cpu.gpr(Gpr::Rdi), 0x10_0000 + 300_000);
    // With a small budget the REP is interrupted between iterations and resumes.
    m.long_mode(CODE);
    m.cpu.controls.budget = Some(4);
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::PreemptionTimer);
    let left = m.cpu.gpr(Gpr::Rcx);
    assert!(
        left > 0 && left < 300_000,
        "stopped inside the REP: rcx = {left}"
    );
    m.cpu.controls.budget = None;
    assert_eq!(m.run().reason, ExitReason::Hlt);
    assert_eq!(m.cpu.gpr(Gpr::Rcx), 0);
}

#[test]
fn a_page_fault_drops_the_cached_read_translation_of_its_page() {
    // SDM 4.10.4.2: a #PF invalidates the TLB entries for the faulting linear
    // address. A read translation cached before a faulting write to the same page
    // must therefore not survive the fault: the guest's #PF handler repoints the PDE
    // (without INVLPG) and skips the write; the next read walks again and sees the
    // new frame. All within one run, so no VM entry flushes anything.
    let mut m = Machine::new();
    const VA: u64 = 0x40_0000;
    m.write_u64(PD + 8 * 2, (2 << 21) | 0x85); // read-only 2 MiB page, frame 0x40_0000
    m.write_u64(0x40_0000, 0xaaaa);
    m.write_u64(0x60_0000, 0xbbbb);
    let write_at = CODE + 0x40;
    m.code64(CODE, |a| {
        a.mov(rax, qword_ptr(VA))?;
        a.jmp(write_at)
    });
    let write_len = m.code64(write_at, |a| a.mov(qword_ptr(VA), rax)) as u64;
    m.code64(write_at + write_len, |a| {
        a.mov(rbx, qword_ptr(VA))?;
        a.hlt()
    });
    m.code64(HANDLERS, |a| {
        a.add(rsp, 8)?; // the error code
        a.mov(rcx, (3u64 << 21) | 0x85)?;
        a.mov(qword_ptr(PD + 16), rcx)?;
        a.add(qword_ptr(rsp), write_len as i32)?;
        a.iretq()
    });
    m.set_gate64(14, HANDLERS, 0, 0);
    m.long_mode(CODE);
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Hlt, "{exit:?}");
    assert_eq!(m.cpu.gpr(Gpr::Rax), 0xaaaa);
    assert_eq!(m.cpu.gpr(Gpr::Rbx), 0xbbbb, "the fault flushed the page");
}
