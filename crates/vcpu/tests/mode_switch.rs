//! A hand-assembled multiboot-style 32-bit stub that enters long mode: LGDT, CR4.PAE,
//! CR3, EFER.LME through WRMSR (handled by the test as the VMM), CR0.PG, and a far
//! jump to a 64-bit code segment.

mod support;

use iced_x86::code_asm::*;
use support::*;
use vcpu::{efer, msr, ExitReason, Gpr, SegReg};

const GDT_PTR: u64 = 0x7000;
const LONG_ENTRY: u64 = 0x11000;

fn build_stub(m: &mut Machine) {
    // GDTR image: limit, 32-bit base.
    m.write(GDT_PTR, &0x47u16.to_le_bytes());
    m.write(GDT_PTR + 2, &(GDT as u32).to_le_bytes());
    let mut code = asm(32, CODE, |a| {
        a.lgdt(ptr(GDT_PTR as u32))?;
        a.mov(eax, cr4)?;
        a.or(eax, 1 << 5)?; // PAE
        a.mov(cr4, eax)?;
        a.mov(eax, PML4 as u32)?;
        a.mov(cr3, eax)?;
        a.mov(ecx, 0xc000_0080u32)?; // EFER
        a.rdmsr()?;
        a.or(eax, 1 << 8)?; // LME
        a.wrmsr()?;
        a.mov(eax, cr0)?;
        a.or(eax, 0x8000_0000u32)?; // PG
        a.mov(cr0, eax)?;
        Ok(())
    });
    // jmp far 0x08:LONG_ENTRY (EA ptr16:32).
    code.push(0xea);
    code.extend_from_slice(&(LONG_ENTRY as u32).to_le_bytes());
    code.extend_from_slice(&KCODE64.to_le_bytes());
    m.write(CODE, &code);
    m.code64(LONG_ENTRY, |a| {
        a.mov(rax, 0x1122_3344_5566_7788u64)?; // 10 bytes
        a.hlt()?;
        Ok(())
    });
}

/// Runs the guest, completing RDMSR/WRMSR exits the way a VMM does.
fn run_handling_msrs(m: &mut Machine) -> vcpu::VmExit {
    loop {
        let exit = m.run();
        match exit.reason {
            ExitReason::Rdmsr => {
                let v = m.cpu.read_msr(m.cpu.gpr(Gpr::Rcx) as u32).unwrap();
                m.cpu.set_gpr(Gpr::Rax, v & 0xffff_ffff);
                m.cpu.set_gpr(Gpr::Rdx, v >> 32);
                m.cpu.advance_rip(exit.instruction_len);
            }
            ExitReason::Wrmsr => {
                let v = (m.cpu.gpr(Gpr::Rax) & 0xffff_ffff) | (m.cpu.gpr(Gpr::Rdx) << 32);
                m.cpu.write_msr(m.cpu.gpr(Gpr::Rcx) as u32, v).unwrap();
                m.cpu.advance_rip(exit.instruction_len);
            }
            _ => return exit,
        }
    }
}

#[test]
fn boot_stub_enters_long_mode_with_msr_exits() {
    let mut m = Machine::new();
    build_stub(&mut m);
    m.cpu.reset_multiboot(CODE as u32, 0x9000);
    assert_eq!(m.cpu.gpr(Gpr::Rax), 0x2bad_b002);
    let exit = run_handling_msrs(&mut m);
    assert_eq!(exit.reason, ExitReason::Hlt, "{exit:?}");
    assert_eq!(exit.rip, LONG_ENTRY + 10);
    assert_ne!(
        m.cpu.efer() & efer::LMA,
        0,
        "CR0.PG with EFER.LME activates IA-32e mode"
    );
    assert_eq!(m.cpu.segment(SegReg::Cs).selector, KCODE64);
    // A 64-bit immediate load only works in 64-bit mode.
    assert_eq!(m.cpu.gpr(Gpr::Rax), 0x1122_3344_5566_7788);
    assert_eq!(m.cpu.gdtr().base, GDT);
}

#[test]
fn boot_stub_with_efer_passed_through_the_msr_bitmap() {
    let mut m = Machine::new();
    build_stub(&mut m);
    m.cpu.reset_multiboot(CODE as u32, 0x9000);
    m.cpu.controls.set_msr_exiting(msr::IA32_EFER, false, false);
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Hlt, "{exit:?}");
    assert_eq!(m.cpu.gpr(Gpr::Rax), 0x1122_3344_5566_7788);
}

#[test]
fn long_mode_needs_pae_before_paging() {
    // Setting CR0.PG with EFER.LME and CR4.PAE = 0 is #GP(0) (SDM 9.8.5).
    let mut m = Machine::new();
    m.code32(CODE, |a| {
        a.mov(eax, cr0)?;
        a.or(eax, 0x8000_0000u32)?;
        a.mov(cr0, eax)?;
        a.hlt()?;
        Ok(())
    });
    m.cpu.reset_multiboot(CODE as u32, 0);
    m.cpu.write_msr(msr::IA32_EFER, efer::LME).unwrap();
    m.cpu.controls.exception_bitmap = 1 << 13;
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::ExceptionOrNmi, "{exit:?}");
    assert_eq!(exit.interruption_info & 0xff, 13);
    assert_eq!(exit.interruption_error_code, 0);
    assert_eq!(m.cpu.efer() & efer::LMA, 0);
}
