//! System instructions executed without exits: SWAPGS, RDTSC(P), PKRU, INVPCID,
//! STAC/CLAC under SMAP, 32-bit PAE paging with PDPTE loads, IRETD to CPL 3.

mod support;

use iced_x86::code_asm::*;
use support::*;
use vcpu::{cr4, msr, ExitReason, Gpr, SegReg};

fn run64(
    f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>,
    setup: impl FnOnce(&mut Machine),
) -> Machine {
    let mut m = Machine::new();
    m.code64(CODE, f);
    m.long_mode(CODE);
    m.cpu.controls.exception_bitmap = u32::MAX;
    setup(&mut m);
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Hlt, "{exit:?}");
    m
}

fn add_cr4(m: &mut Machine, bits: u64) {
    let (c0, c3, c4, e) = (m.cpu.cr0(), m.cpu.cr3(), m.cpu.cr4(), m.cpu.efer());
    m.cpu.set_control_registers(c0, c3, c4 | bits, e);
}

#[test]
fn swapgs_exchanges_gs_base_with_kernel_gs_base() {
    let m = run64(
        |a| {
            a.swapgs()?;
            a.mov(rax, qword_ptr(0).gs())?;
            a.hlt()
        },
        |m| {
            m.cpu.write_msr(msr::IA32_GS_BASE, 0x1000).unwrap();
            m.cpu.write_msr(msr::IA32_KERNEL_GS_BASE, 0x3_0000).unwrap();
            m.write_u64(0x3_0000, 0xfeed);
        },
    );
    assert_eq!(m.cpu.gpr(Gpr::Rax), 0xfeed);
    assert_eq!(m.cpu.read_msr(msr::IA32_KERNEL_GS_BASE), Ok(0x1000));
}

#[test]
fn rdtsc_counts_retired_instructions_plus_the_offset() {
    let m = run64(
        |a| {
            a.rdtsc()?;
            a.mov(rbx, rax)?;
            a.nop()?;
            a.nop()?;
            a.rdtscp()?;
            a.hlt()
        },
        |m| {
            m.cpu.controls.tsc_offset = 1000;
            m.cpu.write_msr(msr::IA32_TSC_AUX, 7).unwrap();
        },
    );
    assert_eq!(m.cpu.gpr(Gpr::Rbx), 1000);
    assert_eq!(m.cpu.gpr(Gpr::Rax), 1004);
    assert_eq!(m.cpu.gpr(Gpr::Rcx), 7);
}

#[test]
fn rdtsc_exiting_and_disabled_rdtscp() {
    let mut m = Machine::new();
    m.code64(CODE, |a| {
        a.rdtsc()?;
        a.rdtscp()
    });
    m.long_mode(CODE);
    m.cpu.controls.rdtsc_exiting = true;
    m.cpu.controls.enable_rdtscp = false;
    m.cpu.controls.exception_bitmap = 1 << 6;
    let exit = m.run();
    assert_eq!((exit.reason, exit.instruction_len), (ExitReason::Rdtsc, 2));
    m.cpu.advance_rip(2);
    let exit = m.run();
    assert_eq!(
        (exit.reason, exit.interruption_info & 0xff),
        (ExitReason::ExceptionOrNmi, 6)
    );
}

#[test]
fn pkru_needs_cr4_pke_and_restricts_user_pages() {
    // With PKE, key 0 write-disabled for... PKRU only applies to user pages; our
    // identity map is user (U = 1), so a supervisor write still succeeds but a user
    // write would fault. Here: WRPKRU/RDPKRU round trip.
    let m = run64(
        |a| {
            a.xor(ecx, ecx)?;
            a.xor(edx, edx)?;
            a.mov(eax, 0x5555_5554u32)?;
            a.wrpkru()?;
            a.xor(eax, eax)?;
            a.rdpkru()?;
            a.hlt()
        },
        |m| add_cr4(m, cr4::PKE),
    );
    assert_eq!(m.cpu.gpr(Gpr::Rax), 0x5555_5554);
    assert_eq!(m.cpu.pkru(), 0x5555_5554);
    // Without CR4.PKE: #UD.
    let mut m = Machine::new();
    m.code64(CODE, |a| a.rdpkru());
    m.long_mode(CODE);
    m.cpu.controls.exception_bitmap = 1 << 6;
    assert_eq!(m.run().interruption_info & 0xff, 6);
}

#[test]
fn smap_blocks_supervisor_reads_of_user_pages_unless_ac() {
    let mut m = Machine::new();
    m.write_u64(0x3_0000, 42);
    m.code64(CODE, |a| {
        a.stac()?;
        a.mov(rax, qword_ptr(0x3_0000))?;
        a.clac()?;
        a.mov(rbx, qword_ptr(0x3_0000))?;
        a.hlt()
    });
    m.long_mode(CODE);
    add_cr4(&mut m, cr4::SMAP);
    m.cpu.controls.exception_bitmap = 1 << 14;
    let exit = m.run();
    assert_eq!(m.cpu.gpr(Gpr::Rax), 42, "EFLAGS.AC = 1 allows the access");
    assert_eq!(exit.reason, ExitReason::ExceptionOrNmi);
    assert_eq!(exit.interruption_info & 0xff, 14);
    assert_eq!(exit.interruption_error_code, 1, "present, read, supervisor");
    let before_load = asm(64, CODE, |a| {
        a.stac()?;
        a.mov(rax, qword_ptr(0x3_0000))?;
        a.clac()
    });
    assert_eq!(
        exit.rip,
        CODE + before_load.len() as u64,
        "the second load faults"
    );
}

#[test]
fn invpcid_individual_address_drops_one_stale_translation() {
    let mut m = Machine::new();
    const PT: u64 = 0x8000;
    const VA: u64 = 0x4000_0000;
    m.write_u64(PDPT + 8, 0x9000 | 7);
    m.write_u64(0x9000, PT | 7);
    m.write_u64(PT, 0x5_0000 | 7);
    m.write_u64(0x5_0000, 0xaaaa);
    m.write_u64(0x6_0000, 0xbbbb);
    // INVPCID descriptor: PCID 0, address VA.
    m.write_u64(0x3_0000, 0);
    m.write_u64(0x3_0008, VA);
    m.code64(CODE, |a| {
        a.mov(rsi, VA)?;
        a.mov(rax, qword_ptr(rsi))?;
        a.mov(qword_ptr(PT), 0x6_0000 | 7)?;
        a.mov(rbx, qword_ptr(rsi))?;
        a.xor(ecx, ecx)?; // type 0: individual address
        a.invpcid(rcx, xmmword_ptr(0x3_0000))?;
        a.mov(rdx, qword_ptr(rsi))?;
        a.hlt()
    });
    m.long_mode(CODE);
    m.cpu.controls.exception_bitmap = u32::MAX;
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Hlt, "{exit:?}");
    assert_eq!(m.cpu.gpr(Gpr::Rbx), 0xaaaa, "stale before INVPCID");
    assert_eq!(m.cpu.gpr(Gpr::Rdx), 0xbbbb);
}

#[test]
fn invpcid_exits_with_instruction_information_when_invlpg_exiting() {
    let mut m = Machine::new();
    m.code64(CODE, |a| a.invpcid(r9, xmmword_ptr(rbx + rsi * 4 + 0x40)));
    m.long_mode(CODE);
    m.cpu.controls.invlpg_exiting = true;
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Invpcid);
    assert_eq!(exit.qualification, 0x40, "the displacement");
    let info = exit.instruction_info;
    assert_eq!(info & 3, 2, "scale 4");
    assert_eq!((info >> 7) & 7, 2, "64-bit addressing");
    assert_eq!((info >> 15) & 7, 3, "DS");
    assert_eq!((info >> 18) & 0xf, 6, "index RSI");
    assert_eq!((info >> 23) & 0xf, 3, "base RBX");
    assert_eq!(info >> 28, 9, "type register R9");
    assert_eq!(info & (1 << 22 | 1 << 27), 0);
}

#[test]
fn pae_paging_in_32bit_mode_loads_pdptes_on_cr3_writes() {
    let mut m = Machine::new();
    // PAE tables: PDPT at 0x7000 (32-byte aligned), one PD with 2 MiB identity pages.
    const PAE_PDPT: u64 = 0x7000;
    const PAE_PD: u64 = 0xa000;
    m.write_u64(PAE_PDPT, PAE_PD | 1);
    for i in 0..512u64 {
        m.write_u64(PAE_PD + 8 * i, (i << 21) | 0x83);
    }
    // Map linear 0x4000_0000 (PDPTE 1) to 0x5_0000 via a second PD.
    m.write_u64(PAE_PDPT + 8, 0xb000 | 1);
    m.write_u64(0xb000, 0xc000 | 3);
    m.write_u64(0xc000, 0x5_0000 | 3);
    m.write_u64(0x5_0000, 0x1234_5678);
    m.code32(CODE, |a| {
        a.mov(eax, cr4)?;
        a.or(eax, 1 << 5)?;
        a.mov(cr4, eax)?;
        a.mov(eax, PAE_PDPT as u32)?;
        a.mov(cr3, eax)?;
        a.mov(eax, cr0)?;
        a.or(eax, 0x8000_0000u32)?;
        a.mov(cr0, eax)?;
        a.mov(ebx, dword_ptr(0x4000_0000))?;
        a.hlt()
    });
    m.cpu.reset_multiboot(CODE as u32, 0);
    m.cpu.controls.exception_bitmap = u32::MAX;
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Hlt, "{exit:?}");
    assert_eq!(m.cpu.gpr(Gpr::Rbx), 0x1234_5678);
    assert_eq!(m.cpu.pdptes()[1], 0xb000 | 1);
    // A PDPTE with reserved bits set makes the CR3 load #GP(0) (SDM 4.4.1).
    m.write_u64(PAE_PDPT + 16, 0x6 | 1);
    m.code32(CODE + 0x100, |a| {
        a.mov(eax, PAE_PDPT as u32)?;
        a.mov(cr3, eax)?;
        a.hlt()
    });
    m.cpu.set_rip(CODE + 0x100);
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::ExceptionOrNmi, "{exit:?}");
    assert_eq!(
        (exit.interruption_info & 0xff, exit.interruption_error_code),
        (13, 0)
    );
}

#[test]
fn iretd_to_ring3_and_int_back_in_protected_mode() {
    let mut m = Machine::new();
    // 32-bit TSS at TSS: ESP0 at +4, SS0 at +8.
    m.write(TSS + 4, &0x9000u32.to_le_bytes());
    m.write(TSS + 8, &(KDATA as u32).to_le_bytes());
    // A 32-bit available TSS descriptor at GDT+0x48.
    m.write_u64(
        GDT + 0x48,
        0x67 | ((TSS & 0xff_ffff) << 16) | (0x89u64 << 40),
    );
    // IDT gate 0x80: 32-bit interrupt gate, DPL 3.
    let gate =
        (HANDLERS & 0xffff) | ((KCODE32 as u64) << 16) | (0xeeu64 << 40) | ((HANDLERS >> 16) << 48);
    m.write_u64(IDT + 0x80 * 8, gate);
    m.code32(CODE, |a| {
        a.mov(ax, 0x48)?;
        a.ltr(ax)?;
        a.push((UDATA | 3) as u32)?; // SS
        a.push(0x7000)?; // ESP
        a.push(0x202)?; // EFLAGS
        a.push((UCODE32 | 3) as u32)?; // CS
        a.push((CODE + 0x80) as u32)?; // EIP
        a.iretd()
    });
    m.code32(CODE + 0x80, |a| {
        a.mov(esi, 0x77)?;
        a.int(0x80)
    });
    m.code32(HANDLERS, |a| {
        a.mov(edi, esp)?;
        a.hlt()
    });
    m.protected_mode32(0x4f);
    m.cpu.set_idtr(vcpu::DescriptorTable {
        base: IDT,
        limit: 0x7ff,
    });
    m.cpu.set_gpr(Gpr::Rsp, 0x8000);
    m.cpu.controls.exception_bitmap = u32::MAX;
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Hlt, "{exit:?}");
    assert_eq!(m.cpu.gpr(Gpr::Rsi), 0x77, "ran at CPL 3");
    let frame = m.cpu.gpr(Gpr::Rdi);
    assert_eq!(
        frame,
        0x9000 - 20,
        "ESP0 from the TSS; EIP, CS, EFLAGS, ESP, SS"
    );
    assert_eq!(m.read_u32(frame), (CODE + 0x80 + 7) as u32);
    assert_eq!(m.read_u32(frame + 4), (UCODE32 | 3) as u32);
    assert_eq!(m.read_u32(frame + 12), 0x7000);
    assert_eq!(m.read_u32(frame + 16), (UDATA | 3) as u32);
    assert_eq!(m.cpu.segment(SegReg::Ss).selector, KDATA);
    assert_eq!(m.cpu.tr().selector, 0x48);
    assert_ne!(
        m.read_u64(GDT + 0x48) & (2 << 40),
        0,
        "LTR marked the TSS busy"
    );
}

#[test]
fn a_supervisor_translation_is_not_reused_at_cpl3() {
    // The kernel reads a supervisor-only page, SYSRETs to user mode, and the user
    // reads the same page: #PF (present, user), whatever the kernel cached.
    let mut m = Machine::new();
    const PT: u64 = 0x8000;
    const VA: u64 = 0x4000_0000;
    m.write_u64(PDPT + 8, 0x9000 | 7);
    m.write_u64(0x9000, PT | 7);
    m.write_u64(PT, 0x5_0000 | 3); // P | RW, supervisor
    const USER: u64 = CODE + 0x1000;
    m.code64(CODE, |a| {
        a.mov(rax, qword_ptr(VA))?;
        a.mov(rcx, USER)?;
        a.mov(r11d, 0x2)?;
        a.sysretq()
    });
    m.code64(USER, |a| {
        a.mov(rbx, qword_ptr(VA))?;
        a.hlt()
    });
    m.long_mode(CODE);
    m.cpu
        .write_msr(
            msr::IA32_STAR,
            ((UCODE32 as u64) << 48) | ((KCODE64 as u64) << 32),
        )
        .unwrap();
    m.cpu.controls.exception_bitmap = 1 << 14;
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::ExceptionOrNmi, "{exit:?}");
    assert_eq!(exit.interruption_error_code, 0x5, "present, read, user");
    assert_eq!(exit.qualification, VA);
    assert_eq!(exit.rip, USER);
}

#[test]
fn setting_cr0_wp_revokes_cached_supervisor_writes_to_read_only_pages() {
    let mut m = Machine::new();
    const PT: u64 = 0x8000;
    const VA: u64 = 0x4000_0000;
    m.write_u64(PDPT + 8, 0x9000 | 7);
    m.write_u64(0x9000, PT | 7);
    m.write_u64(PT, 0x5_0000 | 1); // present, read-only
    m.code64(CODE, |a| {
        a.mov(qword_ptr(VA), 1)?; // WP = 0: allowed for the supervisor
        a.mov(rax, cr0)?;
        a.or(eax, 1 << 16)?;
        a.mov(cr0, rax)?;
        a.mov(qword_ptr(VA), 2)?; // WP = 1: #PF
        a.hlt()
    });
    m.long_mode(CODE);
    let (c0, c3, c4, e) = (m.cpu.cr0(), m.cpu.cr3(), m.cpu.cr4(), m.cpu.efer());
    m.cpu.set_control_registers(c0 & !vcpu::cr0::WP, c3, c4, e);
    m.cpu.controls.exception_bitmap = 1 << 14;
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::ExceptionOrNmi, "{exit:?}");
    assert_eq!(
        exit.interruption_error_code, 0x3,
        "present, write, supervisor"
    );
    assert_eq!(m.read_u64(0x5_0000), 1);
}

#[test]
fn pae_pdpte_load_through_ept_exits_with_an_ept_violation_not_a_gp() {
    // SDM 28.2.1: with EPT, loading the PDPTEs (here at MOV CR0 setting PG with
    // CR4.PAE=1) reads guest-physical memory through EPT; if EPT does not map the
    // PDPT, that is an EPT violation at the MOV, which the VMM fixes before it
    // re-executes the instruction.
    let mut m = Machine::new();
    const EPT: u64 = 0x70_0000;
    const PDPT: u64 = 0x60_0000; // in the 6..8 MiB EPT region, left unmapped at first
    const PD: u64 = 0x9000;
    m.write_u64(EPT, (EPT + 0x1000) | 7);
    m.write_u64(EPT + 0x1000, (EPT + 0x2000) | 7);
    for i in 0..3u64 {
        m.write_u64(EPT + 0x2000 + 8 * i, (i << 21) | (6 << 3) | (1 << 7) | 7);
    }
    m.write_u64(PDPT, PD | 1);
    for i in 0..512u64 {
        m.write_u64(PD + 8 * i, (i << 21) | 0x83);
    }
    m.code32(CODE, |a| {
        a.mov(eax, cr4)?;
        a.or(eax, 1 << 5)?;
        a.mov(cr4, eax)?;
        a.mov(eax, PDPT as u32)?;
        a.mov(cr3, eax)?;
        a.mov(eax, cr0)?;
        a.or(eax, 0x8000_0000u32)?;
        a.mov(cr0, eax)?;
        a.hlt()
    });
    m.cpu.reset_multiboot(CODE as u32, 0);
    m.cpu.controls.exception_bitmap = u32::MAX;
    m.cpu.controls.enable_ept = true;
    m.cpu.controls.unrestricted_guest = true;
    m.cpu.controls.eptp = EPT | (3 << 3) | 6;
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::EptViolation, "{exit:?}");
    assert_eq!(exit.guest_physical, Some(PDPT));
    assert_eq!(m.cpu.cr0() & 0x8000_0000, 0, "the MOV did not complete");
    let mov_cr0 = exit.rip;
    // The VMM maps the region; the MOV re-executes and paging comes on.
    m.write_u64(EPT + 0x2000 + 8 * 3, (3 << 21) | (6 << 3) | (1 << 7) | 7);
    m.cpu.invept(2, 0).unwrap();
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Hlt, "{exit:?}");
    assert!(exit.rip > mov_cr0);
    assert_eq!(m.cpu.pdptes()[0], PD | 1);
}
