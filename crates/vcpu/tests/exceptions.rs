//! Exception delivery through the IDT (64-bit and 32-bit), error codes, CR2, stack
//! switches, #DF on a failed delivery, triple fault, the exception bitmap with
//! IDT-vectoring information, and VM-entry event injection.

mod support;

use iced_x86::code_asm::*;
use support::*;
use vcpu::{EventInjection, ExitReason, Gpr, SegReg, Segment};

/// A handler that records RSP in R15 and halts.
fn handler(m: &mut Machine, at: u64) {
    m.code64(at, |a| {
        a.mov(r15, rsp)?;
        a.hlt()
    });
}

#[test]
fn divide_error_is_delivered_with_the_faulting_rip() {
    let mut m = Machine::new();
    m.code64(CODE, |a| {
        a.xor(ebx, ebx)?;
        a.div(rbx)?;
        a.hlt()
    });
    handler(&mut m, HANDLERS);
    m.set_gate64(0, HANDLERS, 0, 0);
    m.long_mode(CODE);
    m.cpu.set_rflags(0x202 | 0x1);
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Hlt, "{exit:?}");
    assert_eq!(exit.rip, HANDLERS + 3);
    let frame = m.cpu.gpr(Gpr::R15);
    assert_eq!(
        frame,
        STACK_TOP - 40,
        "no error code: RIP, CS, RFLAGS, RSP, SS"
    );
    assert_eq!(m.read_u64(frame), CODE + 2, "faulting DIV");
    assert_eq!(m.read_u64(frame + 8), KCODE64 as u64);
    assert_eq!(m.read_u64(frame + 16), 0x246, "flags after the XOR");
    assert_eq!(m.read_u64(frame + 24), STACK_TOP);
    assert_eq!(m.read_u64(frame + 32), KDATA as u64);
    assert_eq!(m.cpu.rflags() & 0x200, 0, "interrupt gate clears IF");
}

#[test]
fn page_fault_sets_cr2_and_the_error_code() {
    let mut m = Machine::new();
    // Unmap 2 MiB at 0x0c80_0000 (PD entry 100).
    m.write_u64(PD + 8 * 100, 0);
    m.code64(CODE, |a| {
        a.mov(rax, 0x0c80_1234u64)?;
        a.mov(qword_ptr(rax), rbx)?;
        a.hlt()
    });
    handler(&mut m, HANDLERS);
    m.set_gate64(14, HANDLERS, 0, 0);
    m.long_mode(CODE);
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Hlt, "{exit:?}");
    assert_eq!(m.cpu.cr2(), 0x0c80_1234);
    let frame = m.cpu.gpr(Gpr::R15);
    assert_eq!(
        m.read_u64(frame),
        0x2,
        "write to a non-present page, supervisor"
    );
    assert_eq!(m.read_u64(frame + 8), CODE + 10);
}

#[test]
fn user_mode_privileged_instruction_switches_to_rsp0() {
    let mut m = Machine::new();
    m.code64(CODE, |a| {
        a.nop()?;
        a.hlt()
    });
    handler(&mut m, HANDLERS);
    m.set_gate64(13, HANDLERS, 0, 0);
    m.long_mode(CODE);
    m.cpu
        .set_segment(SegReg::Cs, Segment::flat(UCODE64 | 3, true, 3, true));
    m.cpu
        .set_segment(SegReg::Ss, Segment::flat(UDATA | 3, false, 3, false));
    m.cpu.set_gpr(Gpr::Rsp, USER_STACK_TOP - 8);
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Hlt, "{exit:?}");
    assert_eq!(exit.rip, HANDLERS + 3, "the handler's HLT, at CPL 0");
    assert_eq!(m.cpu.cpl(), 0);
    let frame = m.cpu.gpr(Gpr::R15);
    assert_eq!(
        frame,
        STACK_TOP - 48,
        "RSP0 from the TSS, error code pushed"
    );
    assert_eq!(m.read_u64(frame), 0, "#GP(0)");
    assert_eq!(m.read_u64(frame + 8), CODE + 1);
    assert_eq!(m.read_u64(frame + 16), (UCODE64 | 3) as u64);
    assert_eq!(m.read_u64(frame + 32), USER_STACK_TOP - 8);
    assert_eq!(m.read_u64(frame + 40), (UDATA | 3) as u64);
    assert_eq!(
        m.cpu.segment(SegReg::Ss).selector,
        0,
        "null SS at the new CPL"
    );
}

#[test]
fn ist_stack_is_used_when_the_gate_names_one() {
    let mut m = Machine::new();
    m.code64(CODE, |a| a.int3());
    handler(&mut m, HANDLERS);
    m.set_gate64(3, HANDLERS, 0, 1);
    m.long_mode(CODE);
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Hlt);
    let frame = m.cpu.gpr(Gpr::R15);
    assert_eq!(frame, IST1_TOP - 40);
    assert_eq!(m.read_u64(frame), CODE + 1, "INT3 is a trap: RIP after it");
}

#[test]
fn fault_while_delivering_a_page_fault_is_a_double_fault() {
    let mut m = Machine::new();
    m.write_u64(PD + 8 * 100, 0);
    m.code64(CODE, |a| {
        a.mov(rax, 0x0c80_0000u64)?;
        a.mov(rbx, qword_ptr(rax))?;
        a.hlt()
    });
    handler(&mut m, HANDLERS);
    // #PF gate present bit clear -> #NP during delivery -> #DF.
    m.set_gate64(14, HANDLERS, 0, 0);
    let lo = m.read_u64(IDT + 16 * 14);
    m.write_u64(IDT + 16 * 14, lo & !(1 << 47));
    m.set_gate64(8, HANDLERS, 0, 1);
    m.long_mode(CODE);
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Hlt, "{exit:?}");
    let frame = m.cpu.gpr(Gpr::R15);
    assert_eq!(frame, IST1_TOP - 48);
    assert_eq!(m.read_u64(frame), 0, "#DF error code is 0");
    assert_eq!(
        m.read_u64(frame + 8),
        CODE + 10,
        "RIP of the instruction that faulted first"
    );
}

#[test]
fn fault_while_delivering_a_double_fault_is_a_triple_fault_exit() {
    let mut m = Machine::new();
    m.write_u64(PD + 8 * 100, 0);
    m.code64(CODE, |a| {
        a.mov(rax, 0x0c80_0000u64)?;
        a.mov(rbx, qword_ptr(rax))?;
        a.hlt()
    });
    // No gates at all: #PF -> #GP (not present is #NP) -> #DF -> #NP -> shutdown.
    m.long_mode(CODE);
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::TripleFault, "{exit:?}");
    assert_eq!(exit.rip, CODE + 10);
}

#[test]
fn benign_fault_during_delivery_is_handled_serially() {
    // INT3 through a not-present gate gives #NP, delivered normally (INT3 is benign).
    let mut m = Machine::new();
    m.code64(CODE, |a| a.int3());
    handler(&mut m, HANDLERS);
    m.set_gate64(11, HANDLERS, 0, 0);
    m.set_gate64(3, HANDLERS + 0x100, 0, 0);
    let lo = m.read_u64(IDT + 16 * 3);
    m.write_u64(IDT + 16 * 3, lo & !(1 << 47));
    m.long_mode(CODE);
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Hlt, "{exit:?}");
    let frame = m.cpu.gpr(Gpr::R15);
    assert_eq!(
        m.read_u64(frame),
        3 * 8 + 2,
        "#NP error code names IDT entry 3, EXT clear for INT3"
    );
    assert_eq!(m.read_u64(frame + 8), CODE, "RIP of the INT3");
}

#[test]
fn exception_bitmap_exit_reports_pf_without_touching_cr2() {
    let mut m = Machine::new();
    m.write_u64(PD + 8 * 100, 0);
    m.code64(CODE, |a| {
        a.mov(rax, 0x0c80_0040u64)?;
        a.mov(rbx, qword_ptr(rax))?;
        a.hlt()
    });
    m.long_mode(CODE);
    m.cpu.controls.exception_bitmap = 1 << 14;
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::ExceptionOrNmi);
    assert_eq!(exit.interruption_info, 0x8000_0b0e);
    assert_eq!(exit.interruption_error_code, 0);
    assert_eq!(exit.qualification, 0x0c80_0040);
    assert_eq!(exit.rip, CODE + 10);
    assert_eq!(m.cpu.cr2(), 0);
    // PFEC mask/match: bit 14 set and the match failing means no exit (SDM 25.2).
    m.cpu.controls.pfec_mask = 1;
    m.cpu.controls.pfec_match = 1;
    handler(&mut m, HANDLERS);
    m.set_gate64(14, HANDLERS, 0, 0);
    assert_eq!(m.run().reason, ExitReason::Hlt);
    assert_eq!(m.cpu.cr2(), 0x0c80_0040);
}

#[test]
fn exit_during_delivery_carries_idt_vectoring_information() {
    // #DE through a gate of an invalid type: #GP(0*8+2+1) exits via the bitmap while
    // #DE was being delivered.
    let mut m = Machine::new();
    m.code64(CODE, |a| {
        a.xor(ecx, ecx)?;
        a.div(ecx)
    });
    m.write_u64(IDT, (0x8cu64 << 40) | ((KCODE64 as u64) << 16));
    m.long_mode(CODE);
    m.cpu.controls.exception_bitmap = 1 << 13;
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::ExceptionOrNmi);
    assert_eq!(exit.interruption_info & 0xff, 13);
    assert_eq!(exit.interruption_error_code, 3);
    assert_eq!(
        exit.idt_vectoring_info, 0x8000_0300,
        "#DE, hardware exception, no error code"
    );
}

#[test]
fn injected_events_are_delivered_before_the_first_instruction() {
    let mut m = Machine::new();
    m.code64(CODE, |a| a.hlt());
    handler(&mut m, HANDLERS);
    m.set_gate64(0x30, HANDLERS, 0, 0);
    m.set_gate64(13, HANDLERS + 0x100, 0, 0);
    handler(&mut m, HANDLERS + 0x100);
    m.long_mode(CODE);
    m.cpu.set_rflags(0x202);
    // External interrupt 0x30.
    m.cpu.controls.injection = EventInjection {
        info: 0x8000_0030,
        error_code: 0,
        instruction_len: 0,
    };
    let exit = m.run();
    assert_eq!(exit.rip, HANDLERS + 3);
    let frame = m.cpu.gpr(Gpr::R15);
    assert_eq!(
        m.read_u64(frame),
        CODE,
        "RIP of the interrupted instruction"
    );
    assert_eq!(m.read_u64(frame + 16), 0x202);
    assert_eq!(
        m.cpu.controls.injection.info, 0,
        "the valid bit is consumed"
    );
    // A #GP with error code 0x1234.
    m.long_mode(CODE);
    m.cpu.controls.injection = EventInjection {
        info: 0x8000_0b0d,
        error_code: 0x1234,
        instruction_len: 0,
    };
    let exit = m.run();
    assert_eq!(exit.rip, HANDLERS + 0x103);
    let frame = m.cpu.gpr(Gpr::R15);
    assert_eq!(m.read_u64(frame), 0x1234);
}

#[test]
fn int_n_from_user_mode_needs_gate_dpl_3() {
    let mut m = Machine::new();
    m.code64(CODE, |a| a.int(0x80));
    handler(&mut m, HANDLERS);
    m.set_gate64(0x80, HANDLERS, 0, 0); // DPL 0
    m.set_gate64(13, HANDLERS + 0x100, 0, 0);
    handler(&mut m, HANDLERS + 0x100);
    m.long_mode(CODE);
    m.cpu
        .set_segment(SegReg::Cs, Segment::flat(UCODE64 | 3, true, 3, true));
    m.cpu
        .set_segment(SegReg::Ss, Segment::flat(UDATA | 3, false, 3, false));
    m.cpu.set_gpr(Gpr::Rsp, USER_STACK_TOP);
    let exit = m.run();
    assert_eq!(exit.rip, HANDLERS + 0x103, "#GP handler");
    let frame = m.cpu.gpr(Gpr::R15);
    assert_eq!(m.read_u64(frame), 0x80 * 8 + 2);
    // With DPL 3 the INT reaches its handler, with RIP after the INT.
    m.set_gate64(0x80, HANDLERS, 3, 0);
    m.long_mode(CODE);
    m.cpu
        .set_segment(SegReg::Cs, Segment::flat(UCODE64 | 3, true, 3, true));
    m.cpu
        .set_segment(SegReg::Ss, Segment::flat(UDATA | 3, false, 3, false));
    m.cpu.set_gpr(Gpr::Rsp, USER_STACK_TOP);
    let exit = m.run();
    assert_eq!(exit.rip, HANDLERS + 3);
    let frame = m.cpu.gpr(Gpr::R15);
    assert_eq!(m.read_u64(frame), CODE + 2);
}

#[test]
fn iretq_returns_to_user_mode_and_syscall_comes_back() {
    let mut m = Machine::new();
    const USER: u64 = CODE + 0x1000;
    m.code64(CODE, |a| {
        // Build an IRET frame to USER at CPL 3.
        a.push((UDATA | 3) as i32)?;
        a.push(USER_STACK_TOP as i32)?;
        a.push(0x202)?;
        a.push((UCODE64 | 3) as i32)?;
        a.push(USER as i32)?;
        a.iretq()
    });
    m.code64(USER, |a| {
        a.mov(eax, 42)?;
        a.syscall()
    });
    m.code64(HANDLERS, |a| {
        a.mov(r15, rcx)?;
        a.hlt()
    });
    m.long_mode(CODE);
    m.cpu
        .write_msr(
            vcpu::msr::IA32_STAR,
            ((UCODE32 as u64) << 48) | ((KCODE64 as u64) << 32),
        )
        .unwrap();
    m.cpu.write_msr(vcpu::msr::IA32_LSTAR, HANDLERS).unwrap();
    m.cpu.write_msr(vcpu::msr::IA32_FMASK, 0x200).unwrap();
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Hlt, "{exit:?}");
    assert_eq!(m.cpu.gpr(Gpr::R15), USER + 7, "RCX = RIP after SYSCALL");
    assert_eq!(m.cpu.gpr(Gpr::R11), 0x202, "R11 = RFLAGS at SYSCALL");
    assert_eq!(m.cpu.gpr(Gpr::Rax), 42);
    assert_eq!(m.cpu.cpl(), 0);
    assert_eq!(m.cpu.rflags() & 0x200, 0, "SFMASK cleared IF");
    assert_eq!(
        m.cpu.gpr(Gpr::Rsp),
        USER_STACK_TOP,
        "SYSCALL does not switch stacks"
    );
}

#[test]
fn protected_mode_32bit_idt_delivery() {
    let mut m = Machine::new();
    // 32-bit interrupt gate for #UD at HANDLERS.
    let gate =
        (HANDLERS & 0xffff) | ((KCODE32 as u64) << 16) | (0x8eu64 << 40) | ((HANDLERS >> 16) << 48);
    m.write_u64(IDT, 0);
    m.write_u64(IDT + 6 * 8, gate);
    m.code32(CODE, |a| {
        a.mov(esp, 0x8000)?;
        a.ud2()
    });
    m.code32(HANDLERS, |a| {
        a.mov(edi, esp)?;
        a.hlt()
    });
    m.protected_mode32(0x47);
    m.cpu.set_idtr(vcpu::DescriptorTable {
        base: IDT,
        limit: 0x7ff,
    });
    m.cpu.set_rflags(0x202);
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Hlt, "{exit:?}");
    let frame = m.cpu.gpr(Gpr::Rdi);
    assert_eq!(frame, 0x8000 - 12, "EIP, CS, EFLAGS");
    assert_eq!(m.read_u32(frame) as u64, CODE + 5);
    assert_eq!(m.read_u32(frame + 4), KCODE32 as u32);
    assert_eq!(m.read_u32(frame + 8), 0x202);
}

#[test]
fn fpu_and_sse_instructions_fault_as_cr0_and_cr4_say() {
    use vcpu::{cr0, cr4};
    let run = |cr0_extra: u64,
               cr4_extra: u64,
               f: fn(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>| {
        let mut m = Machine::new();
        m.code64(CODE, f);
        m.long_mode(CODE);
        let (c0, c3, c4, e) = (m.cpu.cr0(), m.cpu.cr3(), m.cpu.cr4(), m.cpu.efer());
        m.cpu
            .set_control_registers(c0 | cr0_extra, c3, c4 | cr4_extra, e);
        m.cpu.controls.exception_bitmap = u32::MAX;
        let exit = m.run();
        (exit.reason, exit.interruption_info & 0xff)
    };
    let sse: fn(&mut CodeAssembler) -> Result<(), iced_x86::IcedError> = |a| a.addps(xmm0, xmm1);
    let x87: fn(&mut CodeAssembler) -> Result<(), iced_x86::IcedError> = |a| a.fld1();
    let ex = ExitReason::ExceptionOrNmi;
    assert_eq!(run(cr0::TS, cr4::OSFXSR, sse), (ex, 7), "lazy FPU: #NM");
    assert_eq!(
        run(cr0::EM, cr4::OSFXSR, sse),
        (ex, 6),
        "SSE with CR0.EM: #UD"
    );
    assert_eq!(run(0, 0, sse), (ex, 6), "SSE without CR4.OSFXSR: #UD");
    assert_eq!(run(cr0::EM, 0, x87), (ex, 7), "x87 with CR0.EM: #NM");
    assert_eq!(run(0, cr4::OSFXSR, sse).0, ExitReason::Unimplemented);
    let wait: fn(&mut CodeAssembler) -> Result<(), iced_x86::IcedError> = |a| a.wait();
    assert_eq!(
        run(cr0::TS | cr0::MP, 0, wait),
        (ex, 7),
        "WAIT with MP and TS: #NM"
    );
}

#[test]
fn sysenter_and_sysexit_round_trip_in_protected_mode() {
    let mut m = Machine::new();
    // SYSENTER_CS = 0x40 (kernel code 32); SS = 0x48 must follow it: put a data
    // descriptor there, and user code/data at 0x50/0x58 for SYSEXIT.
    m.write_u64(GDT + 0x48, desc(0x92, 0xc));
    m.write_u64(GDT + 0x50, desc(0xfa, 0xc));
    m.write_u64(GDT + 0x58, desc(0xf2, 0xc));
    m.code32(CODE, |a| {
        a.mov(ecx, 0x7000)?;
        a.mov(edx, (CODE + 0x80) as u32)?;
        a.sysexit()
    });
    m.code32(CODE + 0x80, |a| {
        a.mov(ebx, 7)?;
        a.sysenter()
    });
    m.code32(HANDLERS, |a| {
        a.mov(esi, esp)?;
        a.hlt()
    });
    m.protected_mode32(0x5f);
    m.cpu
        .write_msr(vcpu::msr::IA32_SYSENTER_CS, KCODE32 as u64)
        .unwrap();
    m.cpu
        .write_msr(vcpu::msr::IA32_SYSENTER_EIP, HANDLERS)
        .unwrap();
    m.cpu
        .write_msr(vcpu::msr::IA32_SYSENTER_ESP, 0x9000)
        .unwrap();
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Hlt, "{exit:?}");
    assert_eq!(m.cpu.gpr(Gpr::Rbx), 7, "user code ran");
    assert_eq!(m.cpu.gpr(Gpr::Rsi), 0x9000);
    assert_eq!(m.cpu.segment(SegReg::Ss).selector, 0x48);
}

#[test]
fn pushad_popad_in_32bit_code() {
    let mut m = Machine::new();
    m.code32(CODE, |a| {
        a.mov(esp, 0x8000)?;
        a.mov(eax, 1)?;
        a.mov(ecx, 2)?;
        a.mov(edi, 8)?;
        a.pushad()?;
        a.xor(eax, eax)?;
        a.xor(edi, edi)?;
        a.popad()?;
        a.hlt()
    });
    m.cpu.reset_multiboot(CODE as u32, 0);
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Hlt, "{exit:?}");
    assert_eq!(m.cpu.gpr(Gpr::Rax), 1);
    assert_eq!(m.cpu.gpr(Gpr::Rcx), 2);
    assert_eq!(m.cpu.gpr(Gpr::Rdi), 8);
    assert_eq!(m.cpu.gpr(Gpr::Rsp), 0x8000);
    assert_eq!(
        m.read_u32(0x8000 - 20),
        0x8000,
        "the saved ESP is the original"
    );
}

#[test]
fn reinjection_after_an_exit_during_delivery_completes() {
    // The IDT lives in a page the guest tables do not map yet (a shadow-paging VMM
    // would fault it in): delivering an injected #PF exits with IDT-vectoring
    // information; once mapped, re-injecting the vectoring event delivers it.
    let mut m = Machine::new();
    const PT: u64 = 0x8000;
    const IDT_VA: u64 = 0x4000_0000;
    m.write_u64(PDPT + 8, 0x9000 | 7);
    m.write_u64(0x9000, PT | 7);
    m.code64(CODE, |a| a.hlt());
    handler(&mut m, HANDLERS);
    m.set_gate64(14, HANDLERS, 0, 0);
    m.long_mode(CODE);
    m.cpu.set_idtr(vcpu::DescriptorTable {
        base: IDT_VA,
        limit: 0xfff,
    });
    m.cpu.controls.exception_bitmap = 1 << 14;
    m.cpu.set_cr2(0x1234);
    m.cpu.inject_exception(14, Some(3));
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::ExceptionOrNmi, "{exit:?}");
    assert_eq!(exit.qualification, IDT_VA + 14 * 16);
    assert_eq!(exit.idt_vectoring_info, 0x8000_0b0e);
    assert_eq!(exit.idt_vectoring_error_code, 3);
    // Map the IDT page (it holds the real IDT) and re-inject.
    m.write_u64(PT, IDT | 3);
    m.cpu
        .inject_exception(14, Some(exit.idt_vectoring_error_code));
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Hlt, "{exit:?}");
    let frame = m.cpu.gpr(Gpr::R15);
    assert_eq!(m.read_u64(frame), 3);
    assert_eq!(m.cpu.cr2(), 0x1234, "CR2 is the VMM's for an injected #PF");
}

#[test]
fn page_fault_reading_the_gdt_during_delivery_is_a_page_fault() {
    // Found running the test guests under shadow paging: a not-yet-mapped GDT page
    // must give the VMM a #PF (with IDT-vectoring information), not a #GP.
    let mut m = Machine::new();
    const GDT_VA: u64 = 0x4000_0000;
    m.write_u64(PDPT + 8, 0x9000 | 7);
    m.write_u64(0x9000, 0x8000 | 7); // empty page table
    m.code64(CODE, |a| {
        a.xor(ecx, ecx)?;
        a.div(ecx)
    });
    handler(&mut m, HANDLERS);
    m.set_gate64(0, HANDLERS, 0, 0);
    m.long_mode(CODE);
    m.cpu.set_gdtr(vcpu::DescriptorTable {
        base: GDT_VA,
        limit: 0x47,
    });
    m.cpu.controls.exception_bitmap = 1 << 14;
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::ExceptionOrNmi, "{exit:?}");
    assert_eq!(exit.interruption_info & 0xff, 14);
    assert_eq!(exit.qualification, GDT_VA + KCODE64 as u64);
    assert_eq!(exit.idt_vectoring_info, 0x8000_0300);
}

#[test]
fn trap_flag_single_steps_with_a_debug_exception_after_the_instruction() {
    let mut m = Machine::new();
    m.code64(CODE, |a| {
        a.inc(rax)?;
        a.inc(rax)?;
        a.hlt()
    });
    handler(&mut m, HANDLERS);
    m.set_gate64(1, HANDLERS, 0, 0);
    m.long_mode(CODE);
    m.cpu.set_rflags(0x2 | 0x100);
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Hlt, "{exit:?}");
    assert_eq!(m.cpu.gpr(Gpr::Rax), 1, "one instruction, then the trap");
    let frame = m.cpu.gpr(Gpr::R15);
    assert_eq!(
        m.read_u64(frame),
        CODE + 3,
        "the trap reports the next instruction"
    );
    assert_eq!(
        m.read_u64(frame + 16) & 0x100,
        0x100,
        "TF saved in the frame"
    );
    assert_eq!(m.cpu.rflags() & 0x100, 0, "and cleared for the handler");
}

#[test]
fn enabling_a_hardware_breakpoint_is_an_unimplemented_exit() {
    let mut m = Machine::new();
    m.code64(CODE, |a| {
        a.mov(eax, 1)?;
        a.mov(dr7, rax)
    });
    m.long_mode(CODE);
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Unimplemented);
    assert_eq!(exit.rip, CODE + 5);
}

#[test]
fn vex_encoded_gpr_instructions_are_not_taken_for_avx() {
    // ANDN (BMI1) is VEX-encoded but works on GPRs: no #UD for CR4.OSXSAVE = 0; it
    // is outside the model, so it stops the VM naming it.
    let mut m = Machine::new();
    m.code64(CODE, |a| a.andn(eax, ebx, ecx));
    m.long_mode(CODE);
    m.cpu.controls.exception_bitmap = u32::MAX;
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Unimplemented, "{exit:?}");
    assert_eq!(
        exit.unimplemented.unwrap().mnemonic,
        iced_x86::Mnemonic::Andn
    );
    // VADDPS without CR4.OSXSAVE is #UD.
    let mut m = Machine::new();
    m.code64(CODE, |a| a.vaddps(ymm0, ymm1, ymm2));
    m.long_mode(CODE);
    m.cpu.controls.exception_bitmap = u32::MAX;
    let exit = m.run();
    assert_eq!(
        (exit.reason, exit.interruption_info & 0xff),
        (ExitReason::ExceptionOrNmi, 6)
    );
}
