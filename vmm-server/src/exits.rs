//! One handler per VM-exit reason (SDM Vol. 3C chapter 28 and Appendix C). Each either
//! completes the exiting instruction (advancing RIP), injects the exception the guest
//! must see, or stops the VM with a diagnostic.

use crate::cpu_model;
use crate::cr::{self, cr0, CrFault};
use crate::devices::IoEffect;
use crate::outcome::StopReason;
use crate::vm::{Handled, Next, Vm, VmHost};
use ipc::{CrRegister, FaultOutcome, MmuMode, Transport};
use vcpu::exit::{interruption, ExitReason, VmExit};
use vcpu::regs::Gpr;

pub(crate) fn handle<T: Transport>(
    vm: &mut Vm<T>,
    exit: &VmExit,
    host: &mut impl VmHost,
) -> Handled {
    use ExitReason::*;
    match exit.reason {
        CrAccess => cr_access(vm, exit),
        IoInstruction => io(vm, exit, host),
        EptViolation => ept_violation(vm, exit, host),
        ExceptionOrNmi => exception(vm, exit, host),
        Invlpg => invlpg(vm, exit),
        Invpcid => crate::emulate::invpcid(vm, exit),
        Cpuid => cpuid(vm, exit),
        Rdmsr => rdmsr(vm, exit),
        Wrmsr => wrmsr(vm, exit),
        // No interrupt source exists, so a halted vCPU would sleep forever.
        Hlt | Halted => Err(StopReason::Halted),
        // No hypercall interface is offered: VMCALL is #UD, as on a CPU without VMX
        // (what the guest sees under QEMU's TCG).
        Vmcall => {
            vm.inject_ud();
            Ok(Next::Resume)
        }
        TripleFault => Err(StopReason::TripleFault),
        PreemptionTimer => match vm.cfg.max_instructions {
            Some(limit) if vm.instructions() >= limit => {
                Err(StopReason::InstructionBudget { limit })
            }
            _ => Ok(Next::Resume),
        },
        Unimplemented => Err(StopReason::UnimplementedInstruction {
            mnemonic: exit
                .unimplemented
                .map_or(iced_x86::Mnemonic::INVALID, |u| u.mnemonic),
        }),
        BadHpa => Err(StopReason::BadHostPhysical {
            hpa: exit.guest_physical.unwrap_or(0),
        }),
        EptMisconfig => Err(StopReason::EptMisconfiguration {
            gpa: exit.guest_physical.unwrap_or(0),
        }),
        InvalidGuestState => Err(StopReason::Unsupported {
            what: "guest state the vCPU cannot enter (real mode is not modelled)",
        }),
        Wbinvd | Invd | Pause => {
            vm.cpu.advance_rip(exit.instruction_len);
            vm.emulated += 1;
            Ok(Next::Resume)
        }
        // XSETBV needs XSAVE, which the CPU model does not report.
        Xsetbv => {
            vm.inject_ud();
            Ok(Next::Resume)
        }
        ExternalInterrupt | InterruptWindow => Ok(Next::Resume),
        Rdtsc | Rdtscp | DrAccess => Err(StopReason::UnexpectedExit {
            reason: crate::stats::reason_name(exit.reason),
        }),
        // The VMX instructions (VMXON, VMCLEAR, ..., INVEPT, INVVPID, VMFUNC): the CPU
        // model offers no VMX (CPUID.1:ECX.VMX = 0, CR4.VMXE refused), so they are #UD
        // as on such a CPU.
        #[allow(unreachable_patterns)]
        _ if is_vmx_instruction(exit.reason) => {
            vm.inject_ud();
            Ok(Next::Resume)
        }
        #[allow(unreachable_patterns)]
        _ => Err(StopReason::UnexpectedExit {
            reason: crate::stats::reason_name(exit.reason),
        }),
    }
}

/// VMCLEAR, VMLAUNCH, VMPTRLD, VMPTRST, VMREAD, VMRESUME, VMWRITE, VMXOFF, VMXON
/// (basic exit reasons 19-27), INVEPT (50), INVVPID (53), VMFUNC (59): SDM Appendix C.
pub(crate) fn is_vmx_instruction(r: ExitReason) -> bool {
    matches!(r.number(), 19..=27 | 50 | 53 | 59)
}

fn gpr_operand(n: u64) -> Gpr {
    Gpr::from_number((n & 0xf) as u8).unwrap_or(Gpr::Rax)
}

/// Control-register access (SDM 28.2.1 Table 28-3).
fn cr_access<T: Transport>(vm: &mut Vm<T>, exit: &VmExit) -> Handled {
    let q = exit.qualification;
    let cr_num = q & 0xf;
    let access = (q >> 4) & 3;
    let reg = gpr_operand(q >> 8);
    vm.sync_guest_cr0();
    let result = match (access, cr_num) {
        // MOV to CR.
        (0, _) => {
            let mut value = vm.cpu.gpr(reg);
            if !vm.mode_64() {
                value &= 0xffff_ffff;
            }
            match cr_num {
                0 => set_cr0(vm, value),
                3 => set_cr3(vm, value),
                4 => set_cr4(vm, value),
                8 => {
                    vm.cpu.set_cr8(value);
                    Ok(())
                }
                _ => Err(CrFault::Unsupported("MOV to an unknown control register")),
            }
        }
        // MOV from CR (CR3 under shadow paging: the guest's value, not the root).
        (1, 3) => {
            vm.cpu.set_gpr(reg, vm.guest.cr3);
            Ok(())
        }
        (1, 8) => {
            let v = vm.cpu.cr8();
            vm.cpu.set_gpr(reg, v);
            Ok(())
        }
        (1, _) => Err(CrFault::Unsupported(
            "MOV from an unexpected control register",
        )),
        // CLTS.
        (2, _) => set_cr0(vm, vm.guest.cr0 & !cr0::TS),
        // LMSW.
        _ => set_cr0(vm, cr::lmsw_value(vm.guest.cr0, (q >> 16) as u16)),
    };
    complete(vm, exit, result)
}

/// Completes an emulated CR or MSR write: past the instruction when it was legal,
/// #GP(0) injected when it was not (the instruction does not retire).
fn complete<T: Transport>(vm: &mut Vm<T>, exit: &VmExit, result: Result<(), CrFault>) -> Handled {
    match result {
        Ok(()) => {
            vm.cpu.advance_rip(exit.instruction_len);
            vm.emulated += 1;
            Ok(Next::Resume)
        }
        Err(CrFault::GeneralProtection(_)) => {
            vm.inject_gp0();
            Ok(Next::Resume)
        }
        Err(CrFault::Unsupported(what)) => Err(StopReason::Unsupported { what }),
    }
}

/// Sends one `CrWrite` and switches to the root of its reply.
fn cr_write<T: Transport>(vm: &mut Vm<T>, reg: CrRegister, value: u64) -> Result<(), CrFault> {
    vm.paging_dirty = true;
    let reply = vm
        .mmu
        .call(&ipc::CrWrite {
            value,
            reg: reg as u32,
            reserved: 0,
        })
        .map_err(|_| CrFault::Unsupported("the mmu-server refused a control-register write"))?;
    vm.apply_root(reply.root_hpa, reply.root_level, reply.flush, None)
        .map_err(|_| CrFault::Unsupported("the mmu-server returned no usable root"))
}

fn set_cr0<T: Transport>(vm: &mut Vm<T>, value: u64) -> Result<(), CrFault> {
    let w = cr::write_cr0(&vm.guest, value, vm.cs_long())?;
    let old = vm.guest;
    // Entering IA-32e mode: the MMU sees LMA before the PG that activates it; leaving:
    // after (SDM 9.8.5). Both orders keep every intermediate state legal.
    let lma_on = w.efer & cr::efer::LMA != 0 && old.efer & cr::efer::LMA == 0;
    if w.efer != old.efer && lma_on {
        vm.guest.efer = w.efer;
        cr_write(vm, CrRegister::Efer, w.efer)?;
    }
    vm.guest.cr0 = w.cr0;
    if (old.cr0 ^ w.cr0) & !cr0::TS != 0 {
        cr_write(vm, CrRegister::Cr0, w.cr0)?;
    } else {
        vm.program_paging()
            .map_err(|_| CrFault::Unsupported("cannot load the paging registers"))?;
    }
    if w.efer != old.efer && !lma_on {
        vm.guest.efer = w.efer;
        cr_write(vm, CrRegister::Efer, w.efer)?;
    }
    Ok(())
}

fn set_cr3<T: Transport>(vm: &mut Vm<T>, value: u64) -> Result<(), CrFault> {
    let (cr3, _noflush) = cr::write_cr3(&vm.guest, value, cpu_model::MAXPHYADDR)?;
    vm.guest.cr3 = cr3;
    // The mmu-server gets the value as the guest wrote it (bit 63 = NOFLUSH).
    let wire = if vm.guest.cr4 & cr::cr4::PCIDE != 0 {
        value
    } else {
        cr3
    };
    cr_write(vm, CrRegister::Cr3, wire)
}

fn set_cr4<T: Transport>(vm: &mut Vm<T>, value: u64) -> Result<(), CrFault> {
    let cr4 = cr::write_cr4(&vm.guest, value, cpu_model::allowed_cr4())?;
    vm.guest.cr4 = cr4;
    cr_write(vm, CrRegister::Cr4, cr4)
}

/// I/O instruction (SDM 28.2.1 Table 28-5).
fn io<T: Transport>(vm: &mut Vm<T>, exit: &VmExit, host: &mut impl VmHost) -> Handled {
    let q = exit.qualification;
    let size = ((q & 7) + 1) as u8;
    let input = q & (1 << 3) != 0;
    let string = q & (1 << 4) != 0;
    let port = (q >> 16) as u16;
    if string {
        let effect = crate::emulate::string_io(vm, exit, port, size, input, host)?;
        return io_effect(vm, effect, host);
    }
    let rax = vm.cpu.gpr(Gpr::Rax);
    let mut effect = IoEffect::None;
    if input {
        let v = vm.io.read(port, size) as u64;
        let merged = match size {
            1 => (rax & !0xff) | v,
            2 => (rax & !0xffff) | v,
            // A 32-bit register write zero-extends.
            _ => v,
        };
        vm.cpu.set_gpr(Gpr::Rax, merged);
    } else {
        effect = vm.io.write(port, size, rax as u32, host);
    }
    vm.cpu.advance_rip(exit.instruction_len);
    vm.emulated += 1;
    io_effect(vm, effect, host)
}

/// What an OUT asked of the VMM beyond the device.
fn io_effect<T: Transport>(vm: &mut Vm<T>, effect: IoEffect, host: &mut impl VmHost) -> Handled {
    match effect {
        IoEffect::None => {}
        IoEffect::Exit { status } => return Ok(Next::Exit(status)),
        IoEffect::Checkpoint { step } => vm.record_checkpoint(step, host),
        IoEffect::WaitHint { ms } => {
            host.wait(ms);
            // While the guest sat, work outside its requests (NX-huge-page recovery, a
            // mode change) may have zapped what its TLB holds or its root: pick up the
            // root and the flushes left pending.
            let reply = vm.mmu.call(&ipc::SyncMmu {}).map_err(StopReason::from)?;
            vm.apply_root(reply.root_hpa, reply.root_level, reply.flush, None)?;
        }
    }
    Ok(Next::Resume)
}

/// Resolves a fault reply: resume, inject, emulate.
fn fault_outcome<T: Transport>(
    vm: &mut Vm<T>,
    exit: &VmExit,
    reply: &ipc::FaultReply,
    linear: u64,
    host: &mut impl VmHost,
) -> Handled {
    host.trace_fault(reply);
    let outcome = reply.outcome().map_err(|error| StopReason::Mmu {
        request: ipc::Label::TdpFault,
        error,
    })?;
    vm.apply_root(reply.root_hpa, reply.root_level, reply.flush, Some(linear))?;
    match outcome {
        FaultOutcome::Fixed | FaultOutcome::Retry => {
            vm.reinject(exit);
            Ok(Next::Resume)
        }
        FaultOutcome::InjectPageFault => {
            vm.inject_page_fault(exit, linear, reply.error_code)?;
            Ok(Next::Resume)
        }
        // A fault met while delivering an event was not made by the instruction at
        // RIP: emulating that instruction would be wrong. (The mmu-server unprotects
        // and answers Retry when it can, MMU_REFERENCE.md section 6.)
        FaultOutcome::Emulate if exit.idt_vectoring_info & interruption::VALID != 0 => {
            Err(StopReason::CannotEmulate {
                what: "the faulting write was made by event delivery, not by an instruction",
                mnemonic: iced_x86::Mnemonic::INVALID,
            })
        }
        FaultOutcome::Emulate => crate::emulate::emulate_faulting_write(vm, exit),
        FaultOutcome::Mmio => Err(StopReason::UnbackedAccess { gpa: reply.gpa }),
    }
}

/// EPT violation (SDM 28.2.1 Table 28-7).
fn ept_violation<T: Transport>(vm: &mut Vm<T>, exit: &VmExit, host: &mut impl VmHost) -> Handled {
    let gpa = exit.guest_physical.unwrap_or(0);
    let gla = exit.guest_linear.unwrap_or(0);
    let reply = vm
        .mmu
        .call(&ipc::TdpFault {
            gpa,
            gla,
            qualification: exit.qualification,
            rip: exit.rip,
        })
        .map_err(StopReason::from)?;
    fault_outcome(vm, exit, &reply, gla, host)
}

/// An exception that exits through the exception bitmap: #PF under shadow paging.
fn exception<T: Transport>(vm: &mut Vm<T>, exit: &VmExit, host: &mut impl VmHost) -> Handled {
    let vector = (exit.interruption_info & interruption::VECTOR_MASK) as u8;
    if vector != 14 || vm.cfg.mmu_mode != MmuMode::Shadow {
        return Err(StopReason::UnexpectedExit {
            reason: "exception_nmi (not a #PF under shadow paging)",
        });
    }
    // For #PF exits the exit qualification is the faulting linear address (SDM
    // 28.2.1); CR2 is not written until the #PF is delivered.
    let gva = exit.qualification;
    let mut flags = vm.request_flags(false);
    if exit.idt_vectoring_info & interruption::VALID != 0 {
        flags |= ipc::vcpu_flags::EVENT_PENDING;
    }
    let reply = vm
        .mmu
        .call(&ipc::ShadowFault {
            gva,
            rip: exit.rip,
            error_code: exit.interruption_error_code,
            flags,
            pkru: vm.cpu.pkru(),
            reserved: 0,
        })
        .map_err(StopReason::from)?;
    fault_outcome(vm, exit, &reply, gva, host)
}

/// INVLPG under shadow paging. The guest asked for this address to be invalidated:
/// the VMM flushes it whatever else the reply asks for (as KVM's flush_tlb_gva).
fn invlpg<T: Transport>(vm: &mut Vm<T>, exit: &VmExit) -> Handled {
    let gva = exit.qualification;
    let reply = vm
        .mmu
        .call(&ipc::Invlpg { gva })
        .map_err(StopReason::from)?;
    vm.apply_root(
        reply.root_hpa,
        reply.root_level,
        reply.flush | ipc::flush::ADDRESS,
        Some(gva),
    )?;
    vm.cpu.advance_rip(exit.instruction_len);
    vm.emulated += 1;
    Ok(Next::Resume)
}

fn cpuid<T: Transport>(vm: &mut Vm<T>, exit: &VmExit) -> Handled {
    let leaf = vm.cpu.gpr(Gpr::Rax) as u32;
    let subleaf = vm.cpu.gpr(Gpr::Rcx) as u32;
    let [a, b, c, d] = cpu_model::cpuid(leaf, subleaf);
    vm.cpu.set_gpr(Gpr::Rax, a as u64);
    vm.cpu.set_gpr(Gpr::Rbx, b as u64);
    vm.cpu.set_gpr(Gpr::Rcx, c as u64);
    vm.cpu.set_gpr(Gpr::Rdx, d as u64);
    vm.cpu.advance_rip(exit.instruction_len);
    vm.emulated += 1;
    Ok(Next::Resume)
}

/// RDMSR of an MSR the bitmap does not pass through.
fn rdmsr<T: Transport>(vm: &mut Vm<T>, exit: &VmExit) -> Handled {
    let msr = vm.cpu.gpr(Gpr::Rcx) as u32;
    let value = match msr {
        cpu_model::MSR_EFER => Some(vm.guest.efer),
        cpu_model::MSR_APIC_BASE => Some(vm.cpu.msrs().apic_base),
        _ => None,
    };
    match value {
        Some(v) => {
            vm.cpu.set_gpr(Gpr::Rax, v & 0xffff_ffff);
            vm.cpu.set_gpr(Gpr::Rdx, v >> 32);
            vm.cpu.advance_rip(exit.instruction_len);
            vm.emulated += 1;
        }
        // An MSR the CPU model does not have: #GP(0), as hardware does.
        None => vm.inject_gp0(),
    }
    Ok(Next::Resume)
}

fn wrmsr<T: Transport>(vm: &mut Vm<T>, exit: &VmExit) -> Handled {
    let msr = vm.cpu.gpr(Gpr::Rcx) as u32;
    let value = (vm.cpu.gpr(Gpr::Rdx) << 32) | (vm.cpu.gpr(Gpr::Rax) & 0xffff_ffff);
    vm.sync_guest_cr0();
    let result = match msr {
        cpu_model::MSR_EFER => cr::write_efer(&vm.guest, value).and_then(|efer| {
            vm.guest.efer = efer;
            cr_write(vm, CrRegister::Efer, efer)
        }),
        // The xAPIC is not modelled: the base is fixed; writing it is ignored.
        cpu_model::MSR_APIC_BASE => Ok(()),
        _ => Err(CrFault::GeneralProtection("unknown MSR")),
    };
    complete(vm, exit, result)
}
