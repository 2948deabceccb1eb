//! Engine tests: execution in 64-bit mode, exits, the budget, the decode cache.

mod support;

use iced_x86::code_asm::*;
use support::*;
use vcpu::{ExitReason, Gpr};

#[test]
fn compute_loop_runs_to_hlt_exit() {
    let mut m = Machine::new();
    let len = m.code64(CODE, |a| {
        let mut top = a.create_label();
        a.mov(rcx, 1000u64)?;
        a.xor(eax, eax)?;
        a.set_label(&mut top)?;
        a.add(rax, rcx)?;
        a.dec(rcx)?;
        a.jnz(top)?;
        a.hlt()?;
        Ok(())
    });
    m.long_mode(CODE);
    let exit = m.run();
    assert_eq!(exit.reason, ExitReason::Hlt, "{exit:?}");
    assert_eq!(exit.rip, CODE + len as u64 - 1);
    assert_eq!(exit.instruction_len, 1);
    assert_eq!(m.cpu.gpr(Gpr::Rax), 500500);
    assert_eq!(m.cpu.gpr(Gpr::Rcx), 0);
    // mov + xor + 1000 * 3 (the HLT exits, it is not retired by the vCPU).
    assert_eq!(m.cpu.stats().get("instructions"), Some(3002));
}
