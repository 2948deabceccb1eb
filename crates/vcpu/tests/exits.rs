//! Instruction exits (I/O, HLT, CPUID, VMCALL, MSRs, INVLPG), the budget, the
//! unimplemented-instruction exit, interrupt windows, EPT violations, and the decode
//! cache seeing guest code writes.

mod support;

use iced_x86::code_asm::*;
use iced_x86::Mnemonic;
use support::*;
use vcpu::{ExitReason, Gpr};

#[test]
fn io_exits_describe_port_size_and_direction() {
    let mut m = machine(|a| {
        a.mov(eax, 0x31)?;
        a.out(0xf4, eax)?;
        a.mov(dx, 0x3f8)?;
        a.in_(al, dx)?;
        a.hlt()
    });
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::IoInstruction);
    // size 4 (3), OUT (0), not string, not REP, immediate (bit 6), port 0xf4.
    assert_eq!(exit.qualification, 3 | (1 << 6) | (0xf4 << 16));
    assert_eq!(exit.rip, CODE + 5);
    assert_eq!(exit.instruction_len, 2);
    m.cpu.advance_rip(exit.instruction_len);
    let exit = m.run();
    assert_eq!(exit.qualification, (1 << 3) | (0x3f8 << 16), "IN AL, DX");
    m.cpu.set_gpr(Gpr::Rax, 0x5a);
    m.cpu.advance_rip(exit.instruction_len);
    assert_eq!(m.run().reason, ExitReason::Hlt);
    assert_eq!(m.cpu.gpr(Gpr::Rax), 0x5a);
}

#[test]
fn io_bitmap_lets_unlisted_ports_through() {
    let mut m = machine(|a| {
        a.mov(dx, 0x80)?;
        a.in_(eax, dx)?;
        a.out(dx, al)?;
        a.mov(dx, 0x3f8)?;
        a.out(dx, al)?;
        a.hlt()
    });
    let mut bm = Box::new([0u8; 8192]);
    bm[0x3f8 / 8] |= 1 << (0x3f8 % 8);
    m.cpu.controls.io_bitmap = Some(bm);
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::IoInstruction);
    assert_eq!(exit.qualification >> 16, 0x3f8);
    assert_eq!(
        m.cpu.gpr(Gpr::Rax),
        0xffff_ffff,
        "no device at 0x80 reads all ones"
    );
}

#[test]
fn rep_outsb_exit_has_string_rep_and_the_linear_address() {
    let mut m = machine(|a| {
        a.mov(rsi, 0x3_0000u64)?;
        a.mov(ecx, 5)?;
        a.mov(dx, 0x3f8)?;
        a.rep().outsb()?;
        a.hlt()
    });
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::IoInstruction);
    assert_eq!(exit.qualification, (1 << 4) | (1 << 5) | (0x3f8 << 16));
    assert_eq!(exit.guest_linear, Some(0x3_0000));
    assert_eq!((exit.instruction_info >> 7) & 7, 2, "64-bit address size");
    assert_eq!((exit.instruction_info >> 15) & 7, 3, "DS");
}

#[test]
fn cpuid_vmcall_rdmsr_exit_and_hlt_without_exiting_halts() {
    let mut m = machine(|a| {
        a.cpuid()?;
        a.vmcall()?;
        a.mov(ecx, 0xc000_0080u32)?;
        a.rdmsr()?;
        a.hlt()?;
        a.nop()
    });
    for (reason, len) in [(ExitReason::Cpuid, 2), (ExitReason::Vmcall, 3)] {
        let exit = m.run();
        assert_eq!((exit.reason, exit.instruction_len), (reason, len));
        m.cpu.advance_rip(exit.instruction_len);
    }
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Rdmsr);
    m.cpu.advance_rip(exit.instruction_len);
    m.cpu.controls.hlt_exiting = false;
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Halted);
    assert!(m.cpu.is_halted());
    assert_eq!(m.cpu.rip(), CODE + 2 + 3 + 5 + 2 + 1, "HLT completed");
    assert_eq!(
        m.run().reason,
        ExitReason::Halted,
        "stays halted without an event"
    );
}

#[test]
fn budget_is_a_preemption_timer() {
    let mut m = machine(|a| {
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        a.inc(rax)?;
        a.jmp(top)
    });
    m.cpu.controls.budget = Some(1001);
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::PreemptionTimer);
    assert_eq!(m.cpu.gpr(Gpr::Rax), 501);
    assert_eq!(m.cpu.controls.budget, Some(0));
    assert_eq!(exit.rip, CODE + 3, "stopped before the JMP");
    m.cpu.controls.budget = Some(2);
    m.run();
    assert_eq!(m.cpu.gpr(Gpr::Rax), 502);
    assert_eq!(m.cpu.stats().instructions, 1003);
}

#[test]
fn unimplemented_instruction_is_a_precise_exit() {
    let mut m = machine(|a| {
        a.inc(rax)?;
        a.addps(xmm0, xmm1)?;
        a.hlt()
    });
    // With SSE enabled (CR4.OSFXSR) the instruction does not fault: it is simply
    // outside the model.
    let (c0, c3, c4, e) = (m.cpu.cr0(), m.cpu.cr3(), m.cpu.cr4(), m.cpu.efer());
    m.cpu
        .set_control_registers(c0, c3, c4 | vcpu::cr4::OSFXSR, e);
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Unimplemented);
    assert_eq!(exit.rip, CODE + 3);
    let u = exit.unimplemented.expect("details");
    assert_eq!(u.mnemonic, Mnemonic::Addps);
    assert_eq!(&u.bytes[..u.len as usize], &[0x0f, 0x58, 0xc1]);
    assert_eq!(
        m.cpu.gpr(Gpr::Rax),
        1,
        "the instruction before ran, nothing after"
    );
    assert_eq!(m.cpu.rip(), CODE + 3);
}

#[test]
fn invlpg_exiting_reports_the_linear_address() {
    let mut m = machine(|a| {
        a.mov(rbx, 0x12_3456u64)?;
        a.invlpg(ptr(rbx + 0x10))?;
        a.hlt()
    });
    m.cpu.controls.invlpg_exiting = true;
    let exit = m.run();
    assert_eq!(
        (exit.reason, exit.qualification),
        (ExitReason::Invlpg, 0x12_3466)
    );
}

#[test]
fn interrupt_window_opens_after_the_sti_shadow() {
    let mut m = machine(|a| {
        a.sti()?;
        a.nop()?;
        a.nop()?;
        a.hlt()
    });
    m.cpu.controls.interrupt_window_exiting = true;
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::InterruptWindow);
    assert_eq!(
        exit.rip,
        CODE + 2,
        "not before the instruction after STI completes"
    );
}

#[test]
fn guest_writes_to_its_code_are_seen_by_the_next_fetch() {
    // The subroutine's `add rax, 1` is replaced by `add rax, 2` by the guest itself.
    let mut m = Machine::new();
    let patch_site = CODE + 0x100;
    let old = asm(64, patch_site, |a| {
        a.add(rax, 1)?;
        a.ret()
    });
    let new = asm(64, patch_site, |a| {
        a.add(rax, 2)?;
        a.ret()
    });
    assert_eq!(old.len(), new.len());
    let mut word = [0u8; 8];
    word[..new.len()].copy_from_slice(&new);
    m.write(patch_site, &old);
    m.code64(CODE, |a| {
        a.call(patch_site)?;
        a.mov(rbx, u64::from_le_bytes(word))?;
        a.mov(qword_ptr(patch_site), rbx)?;
        a.call(patch_site)?;
        a.hlt()
    });
    m.long_mode(CODE);
    assert_eq!(m.run().reason, ExitReason::Hlt);
    assert_eq!(m.cpu.gpr(Gpr::Rax), 3);
}

#[test]
fn ept_violation_exit_names_the_guest_physical_address() {
    let mut m = Machine::new();
    // EPT identity map of the first 8 MiB (2 MiB leaves), except 4..6 MiB read-only.
    const EPT: u64 = 0x70_0000;
    m.write_u64(EPT, (EPT + 0x1000) | 7);
    m.write_u64(EPT + 0x1000, (EPT + 0x2000) | 7);
    for i in 0..4u64 {
        let perms = if i == 2 { 1 } else { 7 };
        m.write_u64(
            EPT + 0x2000 + 8 * i,
            (i << 21) | (6 << 3) | (1 << 7) | perms,
        );
    }
    m.code64(CODE, |a| {
        a.mov(rax, 0x40_0010u64)?;
        a.mov(rbx, qword_ptr(rax))?;
        a.mov(qword_ptr(rax), rbx)?;
        a.hlt()
    });
    m.long_mode(CODE);
    m.cpu.controls.enable_ept = true;
    m.cpu.controls.eptp = EPT | (3 << 3) | 6;
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::EptViolation, "{exit:?}");
    assert_eq!(exit.rip, CODE + 13, "the store, after the load succeeded");
    assert_eq!(exit.guest_physical, Some(0x40_0010));
    assert_eq!(exit.guest_linear, Some(0x40_0010));
    // Write access, the entry allowed read only, linear address valid, final translation.
    assert_eq!(exit.qualification & 0x2, 0x2);
    assert_eq!(exit.qualification & (1 << 7 | 1 << 8), 1 << 7 | 1 << 8);
}

#[test]
fn vmx_instructions_exit_unconditionally() {
    let mut m = machine(|a| {
        a.vmxoff()?;
        a.hlt()
    });
    let exit = m.run();
    assert_eq!(
        (exit.reason, exit.reason.number(), exit.instruction_len),
        (ExitReason::Vmxoff, 26, 3)
    );
}

#[test]
fn vmm_reads_guest_linear_memory_through_guest_paging() {
    let mut m = machine(|a| a.hlt());
    m.write(0x3_0000, b"abc");
    let mut buf = [0u8; 3];
    m.cpu.read_guest_linear(&m.mem, 0x3_0000, &mut buf).unwrap();
    assert_eq!(&buf, b"abc");
    // An unmapped address is the #PF the guest would take.
    m.write_u64(PD + 8 * 100, 0);
    let err = m
        .cpu
        .read_guest_linear(&m.mem, 0x0c80_0008, &mut buf)
        .unwrap_err();
    match err {
        vcpu::GuestAccessError::Exception(e) => {
            assert_eq!((e.vector, e.error_code, e.cr2), (14, Some(0), 0x0c80_0008));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_address_no_region_backs_is_a_bad_hpa_exit() {
    // The identity map covers 1 GiB but RAM is 8 MiB.
    let mut m = machine(|a| {
        a.mov(rax, 0x2000_0008u64)?;
        a.mov(rbx, qword_ptr(rax))?;
        a.hlt()
    });
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::BadHpa, "{exit:?}");
    assert_eq!(exit.guest_physical, Some(0x2000_0000));
    assert_eq!(exit.rip, CODE + 10);
}

#[test]
fn ept_misconfiguration_exit() {
    let mut m = Machine::new();
    const EPT: u64 = 0x70_0000;
    m.write_u64(EPT, (EPT + 0x1000) | 7);
    m.write_u64(EPT + 0x1000, (EPT + 0x2000) | 7);
    for i in 0..4u64 {
        // 4..6 MiB: write without read, a misconfiguration (SDM 29.3.3.1).
        let perms = if i == 2 { 2 } else { 7 };
        m.write_u64(
            EPT + 0x2000 + 8 * i,
            (i << 21) | (6 << 3) | (1 << 7) | perms,
        );
    }
    m.code64(CODE, |a| {
        a.mov(rax, 0x40_0000u64)?;
        a.mov(rbx, qword_ptr(rax))?;
        a.hlt()
    });
    m.long_mode(CODE);
    m.cpu.controls.enable_ept = true;
    m.cpu.controls.eptp = EPT | (3 << 3) | 6;
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::EptMisconfig, "{exit:?}");
    assert_eq!(exit.reason.number(), 49);
    assert_eq!(exit.guest_physical.map(|g| g & !0xfff), Some(0x40_0000));
}

#[test]
fn switching_eptp_between_runs_is_not_served_from_stale_translations() {
    // Two EPT hierarchies map guest-physical 4 MiB to different host frames; with a
    // VPID (no flush on entry), the second run must see the second EPTP's frame.
    let mut m = Machine::new();
    const EPT_A: u64 = 0x70_0000;
    const EPT_B: u64 = 0x74_0000;
    for (ept, data_frame) in [(EPT_A, 0x40_0000u64), (EPT_B, 0x60_0000u64)] {
        m.write_u64(ept, (ept + 0x1000) | 7);
        m.write_u64(ept + 0x1000, (ept + 0x2000) | 7);
        for i in 0..4u64 {
            let target = if i == 2 { data_frame } else { i << 21 };
            m.write_u64(ept + 0x2000 + 8 * i, target | (6 << 3) | (1 << 7) | 7);
        }
    }
    m.write_u64(0x40_0000, 0xaaaa);
    m.write_u64(0x60_0000, 0xbbbb);
    m.code64(CODE, |a| {
        a.mov(rax, qword_ptr(0x40_0000))?;
        a.hlt()
    });
    m.long_mode(CODE);
    m.cpu.controls.enable_ept = true;
    m.cpu.controls.enable_vpid = true;
    m.cpu.controls.vpid = 1;
    m.cpu.controls.eptp = EPT_A | (3 << 3) | 6;
    assert_eq!(m.run().reason, ExitReason::Hlt);
    assert_eq!(m.cpu.gpr(Gpr::Rax), 0xaaaa);
    m.cpu.set_rip(CODE);
    m.cpu.controls.eptp = EPT_B | (3 << 3) | 6;
    assert_eq!(m.run().reason, ExitReason::Hlt);
    assert_eq!(m.cpu.gpr(Gpr::Rax), 0xbbbb);
}

#[test]
fn user_mode_io_follows_the_tss_permission_bitmap() {
    let mut m = machine(|a| {
        a.mov(dx, 0x3f8)?;
        a.out(dx, al)?;
        a.out(0x80, al)?;
        a.hlt()
    });
    // TSS limit covers a bitmap at TSS+0x68 of 0x3f8/8 + 2 bytes, all ones except the
    // bit of port 0x3f8.
    let map_off = 0x68u64;
    let bytes = 0x3f8 / 8 + 2;
    let mut map = vec![0xffu8; bytes as usize];
    map[0x3f8 / 8] &= !(1 << (0x3f8 % 8));
    m.write(TSS + map_off, &map);
    m.write(TSS + 0x66, &(map_off as u16).to_le_bytes());
    m.cpu.set_tr(vcpu::Segment {
        selector: TSS_SEL,
        base: TSS,
        limit: (map_off + bytes - 1) as u32,
        access: 0x8b,
    });
    m.cpu.set_segment(
        vcpu::SegReg::Cs,
        vcpu::Segment::flat(UCODE64 | 3, true, 3, true),
    );
    m.cpu.set_segment(
        vcpu::SegReg::Ss,
        vcpu::Segment::flat(UDATA | 3, false, 3, false),
    );
    m.cpu.controls.exception_bitmap = 1 << 13;
    let exit = m.run();
    assert_eq!(
        exit.reason,
        ExitReason::IoInstruction,
        "port 0x3f8 is allowed: {exit:?}"
    );
    m.cpu.advance_rip(exit.instruction_len);
    let exit = m.run();
    assert_eq!(
        (exit.reason, exit.interruption_info & 0xff),
        (ExitReason::ExceptionOrNmi, 13),
        "port 0x80 is not"
    );
}
