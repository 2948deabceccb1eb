//! CR-access exits with CR0/CR4 guest/host masks and read shadows (SDM 26.1.3, 26.3),
//! CLTS and LMSW rules, CR3/CR8 load and store exiting.

mod support;

use iced_x86::code_asm::*;
use support::*;
use vcpu::{cr0, cr4, ExitReason, Gpr};

/// Qualification of MOV to/from CRn (Table 28-3).
fn mov_cr(cr: u64, from: bool, gpr: u64) -> u64 {
    cr | ((from as u64) << 4) | (gpr << 8)
}

#[test]
fn reads_see_owned_bits_real_and_host_bits_from_the_shadow() {
    let mut m = machine(|a| {
        a.mov(rax, cr0)?;
        a.mov(rbx, cr4)?;
        a.hlt()
    });
    let real_cr0 = m.cpu.cr0();
    // The host owns CD and NW and shows the guest CD = 1 (it thinks caching is off).
    m.cpu.controls.cr0_guest_host_mask = cr0::CD | cr0::NW;
    m.cpu.controls.cr0_read_shadow = cr0::CD;
    // The host owns VMXE and hides it.
    m.cpu.controls.cr4_guest_host_mask = cr4::VMXE;
    m.cpu.controls.cr4_read_shadow = 0;
    let real_cr4 = m.cpu.cr4() | cr4::VMXE;
    let (cr0v, cr3v, efer) = (m.cpu.cr0(), m.cpu.cr3(), m.cpu.efer());
    m.cpu.set_control_registers(cr0v, cr3v, real_cr4, efer);
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Hlt);
    assert_eq!(
        m.cpu.gpr(Gpr::Rax),
        (real_cr0 & !(cr0::CD | cr0::NW)) | cr0::CD
    );
    assert_eq!(m.cpu.gpr(Gpr::Rbx), real_cr4 & !cr4::VMXE);
}

#[test]
fn writes_of_guest_owned_bits_do_not_exit_host_owned_changes_do() {
    let mut m = machine(|a| {
        a.mov(rax, cr0)?;
        a.or(rax, 1 << 3)?; // TS: guest-owned
        a.mov(cr0, rax)?;
        a.and(rax, !(1u32 << 16) as i32)?; // clear WP: host-owned, shadow has WP = 1
        a.mov(cr0, rax)?;
        a.hlt()
    });
    m.cpu.controls.cr0_guest_host_mask = cr0::WP | cr0::PG | cr0::PE;
    m.cpu.controls.cr0_read_shadow = cr0::WP | cr0::PG | cr0::PE;
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::CrAccess, "{exit:?}");
    assert_eq!(
        exit.qualification,
        mov_cr(0, false, 0),
        "MOV to CR0 from RAX"
    );
    assert_eq!(exit.instruction_len, 3);
    assert_ne!(
        m.cpu.cr0() & cr0::TS,
        0,
        "the owned TS write went straight to CR0"
    );
    assert_ne!(
        m.cpu.cr0() & cr0::WP,
        0,
        "the exiting write changed nothing"
    );
    // The VMM emulates the write: update the shadow and the real register.
    let v = m.cpu.gpr(Gpr::Rax);
    m.cpu.controls.cr0_read_shadow = v & m.cpu.controls.cr0_guest_host_mask;
    m.cpu.write_cr0(&m.mem, v).unwrap();
    m.cpu.advance_rip(exit.instruction_len);
    assert_eq!(m.run().reason, ExitReason::Hlt);
    assert_eq!(m.cpu.cr0() & cr0::WP, 0);
}

#[test]
fn owned_bits_keep_their_real_value_on_a_non_exiting_write() {
    // Host owns NE with shadow NE = 0 while the real NE = 1: a guest write with NE = 0
    // matches the shadow, does not exit, and leaves the real NE set (SDM 26.3).
    let mut m = machine(|a| {
        a.mov(rax, cr0)?;
        a.and(rax, !(1u32 << 5) as i32)?;
        a.mov(cr0, rax)?;
        a.mov(rbx, cr0)?;
        a.hlt()
    });
    m.cpu.controls.cr0_guest_host_mask = cr0::NE;
    m.cpu.controls.cr0_read_shadow = 0;
    assert_eq!(m.run().reason, ExitReason::Hlt);
    assert_ne!(m.cpu.cr0() & cr0::NE, 0);
    assert_eq!(
        m.cpu.gpr(Gpr::Rbx) & cr0::NE,
        0,
        "the guest still reads the shadow"
    );
}

#[test]
fn cr4_mask_exit_names_cr4_and_the_register() {
    let mut m = machine(|a| {
        a.mov(rcx, cr4)?;
        a.or(rcx, 1 << 7)?; // PGE, host-owned below
        a.mov(cr4, rcx)?;
        a.hlt()
    });
    m.cpu.controls.cr4_guest_host_mask = cr4::PGE;
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::CrAccess);
    assert_eq!(exit.qualification, mov_cr(4, false, 1));
    assert_eq!(m.cpu.cr4() & cr4::PGE, 0);
}

#[test]
fn clts_exits_only_when_ts_is_owned_and_set_in_the_shadow() {
    let prog = |a: &mut CodeAssembler| {
        a.clts()?;
        a.hlt()
    };
    // Owned, shadow TS = 1: exit with access type 2.
    let mut m = machine(prog);
    let c = m.cpu.cr0() | cr0::TS;
    let (cr3v, cr4v, efer) = (m.cpu.cr3(), m.cpu.cr4(), m.cpu.efer());
    m.cpu.set_control_registers(c, cr3v, cr4v, efer);
    m.cpu.controls.cr0_guest_host_mask = cr0::TS;
    m.cpu.controls.cr0_read_shadow = cr0::TS;
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::CrAccess);
    assert_eq!(exit.qualification, 2 << 4);
    // Owned, shadow TS = 0: no exit and CR0.TS untouched.
    let mut m = machine(prog);
    m.cpu.set_control_registers(c, cr3v, cr4v, efer);
    m.cpu.controls.cr0_guest_host_mask = cr0::TS;
    m.cpu.controls.cr0_read_shadow = 0;
    assert_eq!(m.run().reason, ExitReason::Hlt);
    assert_ne!(m.cpu.cr0() & cr0::TS, 0);
    // Guest-owned: cleared.
    let mut m = machine(prog);
    m.cpu.set_control_registers(c, cr3v, cr4v, efer);
    assert_eq!(m.run().reason, ExitReason::Hlt);
    assert_eq!(m.cpu.cr0() & cr0::TS, 0);
}

#[test]
fn lmsw_exits_with_its_source_data() {
    let mut m = machine(|a| {
        a.mov(edx, 0x000b)?; // PE | MP | TS
        a.lmsw(dx)?;
        a.hlt()
    });
    m.cpu.controls.cr0_guest_host_mask = cr0::MP;
    m.cpu.controls.cr0_read_shadow = 0;
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::CrAccess);
    // CR 0, access type 3 (LMSW), register operand, GPR 2 (RDX), source 0x000b.
    assert_eq!(exit.qualification, (3 << 4) | (2 << 8) | (0x000b << 16));
    // Without the mask the bits load directly (and PE, already set, stays).
    let mut m = machine(|a| {
        a.mov(edx, 0x000a)?; // MP | TS, PE = 0: LMSW cannot clear PE
        a.lmsw(dx)?;
        a.hlt()
    });
    assert_eq!(m.run().reason, ExitReason::Hlt);
    assert_eq!(m.cpu.cr0() & 0xf, 0xb);
}

#[test]
fn cr3_and_cr8_load_and_store_exiting() {
    let mut m = machine(|a| {
        a.mov(rsi, cr3)?;
        a.mov(cr3, rsi)?;
        a.mov(r9, cr8)?;
        a.hlt()
    });
    m.cpu.controls.cr3_store_exiting = true;
    m.cpu.controls.cr3_load_exiting = true;
    m.cpu.controls.cr8_store_exiting = true;
    let exit = m.run();
    assert_eq!(
        (exit.reason, exit.qualification),
        (ExitReason::CrAccess, mov_cr(3, true, 6))
    );
    m.cpu.set_gpr(Gpr::Rsi, m.cpu.cr3());
    m.cpu.advance_rip(exit.instruction_len);
    let exit = m.run();
    assert_eq!(
        (exit.reason, exit.qualification),
        (ExitReason::CrAccess, mov_cr(3, false, 6))
    );
    m.cpu.advance_rip(exit.instruction_len);
    let exit = m.run();
    assert_eq!(
        (exit.reason, exit.qualification),
        (ExitReason::CrAccess, mov_cr(8, true, 9))
    );
}

#[test]
fn cpl3_mov_to_cr_is_gp_before_any_exit() {
    let mut m = machine(|a| {
        a.mov(rax, cr0)?;
        a.hlt()
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
    m.cpu.controls.cr0_guest_host_mask = u64::MAX;
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::ExceptionOrNmi);
    assert_eq!(
        exit.interruption_info, 0x8000_0b0d,
        "#GP, hardware exception, error code valid"
    );
    assert_eq!(exit.interruption_error_code, 0);
}
