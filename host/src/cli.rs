//! `capvisor run`: options -> [`RunConfig`], run, print, exit status.
//!
//! Exit statuses: the guest's isa-debug-exit status `(v << 1) | 1` (always odd, and
//! truncated to 8 bits by the OS exactly as QEMU's is); 3 if the VM could not start
//! (bad image, bad options); 4 if the vmm-server stopped the VM with a diagnostic.
//! (2 is clap's usage error.)

use crate::options::{Cr0WpArg, GrantArg, MmuArg, NxHugePagesArg, OnOff, RunArgs};
use crate::report;
use crate::runtime::{self, NxHugePages, RunConfig};
use std::io::{BufWriter, Write};
use vmm_server::devices::SerialSink;
use vmm_server::{Cr0WpPolicy, VmConfig, VmHost, VmOutcome};

pub const EXIT_START_FAILED: i32 = 3;
pub const EXIT_VM_FAILED: i32 = 4;

/// Turns the parsed options into a run configuration (reads the guest image).
pub fn config(args: &RunArgs) -> Result<RunConfig, String> {
    let image = std::fs::read(&args.guest)
        .map_err(|e| format!("cannot read guest {}: {e}", args.guest.display()))?;
    let mode = match args.mmu {
        MmuArg::Tdp => ipc::MmuMode::Tdp,
        MmuArg::Shadow => ipc::MmuMode::Shadow,
    };
    let mut vm = VmConfig::new(mode);
    if let Some(wp) = args.cr0_wp {
        vm.cr0_wp = match wp {
            Cr0WpArg::GuestOwned => Cr0WpPolicy::GuestOwned,
            Cr0WpArg::Intercept => Cr0WpPolicy::Intercept,
        };
    }
    vm.root_reuse = args.root_reuse == OnOff::On;
    vm.max_instructions = args.max_instructions;
    vm.disable_nx_huge_pages = args.disable_nx_huge_pages && !args.nx_control_after_vcpu;
    vm.nx_disable_flags = args.nx_control_flags;
    vm.nx_disable_arg = args.nx_control_arg;
    if args.watch.len() > vm.watch.len() {
        return Err(format!(
            "at most {} --watch addresses (got {})",
            vm.watch.len(),
            args.watch.len()
        ));
    }
    for (slot, addr) in vm.watch.iter_mut().zip(&args.watch) {
        *slot = Some(*addr);
    }
    vm.validate().map_err(|e| e.to_string())?;
    // `--nx-control-after-vcpu`: the same invocation, once the vCPU exists.
    let nx_control_after_vcpu = if args.disable_nx_huge_pages && args.nx_control_after_vcpu {
        vec![nx_control_request(args)]
    } else {
        Vec::new()
    };
    Ok(RunConfig {
        image,
        kernel_name: args.guest.to_string_lossy().into_owned(),
        append: args.append.clone(),
        vm,
        mem: args.mem,
        pool: args.pool,
        nx_huge_pages: match args.nx_huge_pages {
            NxHugePagesArg::Auto => NxHugePages::Auto,
            NxHugePagesArg::On => NxHugePages::On,
            NxHugePagesArg::Off => NxHugePages::Off,
            NxHugePagesArg::Force => NxHugePages::Force,
            NxHugePagesArg::Never => NxHugePages::Never,
        },
        grant_nx_huge_page_control: args.grant.contains(&GrantArg::NxHugePageControl),
        nx_recovery_ratio: args.nx_recovery_ratio,
        nx_recovery_period_ms: args.nx_recovery_period_ms,
        nx_control_after_vcpu,
    })
}

/// The `NxHugePageControl` invocation `--disable-nx-huge-pages` makes.
fn nx_control_request(args: &RunArgs) -> ipc::DisableNxHugePages {
    ipc::DisableNxHugePages {
        flags: args.nx_control_flags,
        reserved: 0,
        arg: args.nx_control_arg,
    }
}

/// Why the mmu-server refused an `NxHugePageControl` invocation, in words, following
/// the order it checks in (MMU_REFERENCE.md section 5): flags, the capability, the
/// argument, the vCPU.
pub fn nx_control_refusal(
    error: ipc::Error,
    request: &ipc::DisableNxHugePages,
    after_vcpu: bool,
) -> String {
    match error {
        ipc::Error::InvalidArgument if request.flags != 0 || request.reserved != 0 => {
            format!("non-zero flags ({:#x}) are invalid", request.flags)
        }
        ipc::Error::PermissionDenied => "the VM does not hold the NxHugePageControl \
                                         capability (grant it with --grant nx-huge-page-control)"
            .to_string(),
        ipc::Error::InvalidArgument if request.arg != 0 => {
            format!("a non-zero argument ({:#x}) is invalid", request.arg)
        }
        ipc::Error::InvalidArgument if after_vcpu => "the VM's vCPU already exists (the \
                                                      capability must be invoked before it \
                                                      is created)"
            .to_string(),
        e => e.to_string(),
    }
}

/// Tells the user what became of `--disable-nx-huge-pages`.
fn report_nx_control(args: &RunArgs, result: &runtime::RunResult) {
    if !args.disable_nx_huge_pages {
        return;
    }
    let request = nx_control_request(args);
    let answer = match (&result.nx_disable, result.nx_control_after_vcpu.first()) {
        (Some(r), _) => r.map_err(|e| e.error),
        (None, Some(r)) => *r,
        // The VM never got as far as the invocation (it could not start).
        (None, None) => return,
    };
    match answer {
        Ok(()) => match args.nx_huge_pages {
            NxHugePagesArg::Off | NxHugePagesArg::Never => eprintln!(
                "capvisor: NX huge pages disabled for this VM (no effect: the system mode is \
                 already off)"
            ),
            _ => eprintln!("capvisor: NX huge pages disabled for this VM"),
        },
        Err(e) => eprintln!(
            "capvisor: cannot disable NX huge pages: {}; the VM runs with the mitigation",
            nx_control_refusal(e, &request, args.nx_control_after_vcpu)
        ),
    }
}

/// Streams COM1 to stdout (flushed at every newline, so output interleaves sanely
/// with diagnostics) and sleeps on wait hints.
struct StdoutHost {
    out: BufWriter<std::io::Stdout>,
    trace: bool,
    trace_state: bool,
}

impl SerialSink for StdoutHost {
    fn put(&mut self, byte: u8) {
        let _ = self.out.write_all(&[byte]);
        if byte == b'\n' {
            let _ = self.out.flush();
        }
    }
}

impl VmHost for StdoutHost {
    fn wait(&mut self, ms: u32) {
        let _ = self.out.flush();
        std::thread::sleep(std::time::Duration::from_millis(ms as u64));
    }
    fn trace_fault(&mut self, r: &ipc::FaultReply) {
        if self.trace {
            eprintln!(
                "  fault reply: outcome {} error_code {:#x} gpa {:#x} flush {:#x} root {:#x}/{}",
                r.outcome, r.error_code, r.gpa, r.flush, r.root_hpa, r.root_level
            );
        }
    }
    fn trace_exit(
        &mut self,
        exit: &vcpu::exit::VmExit,
        cpu: &mut vcpu::Vcpu,
        _mem: &physmem::PhysMap,
    ) {
        if self.trace {
            eprintln!(
                "exit {:?} rip={:#x} qual={:#x} gla={:x?} gpa={:x?} len={} intr={:#x}/{:#x} idt={:#x}",
                exit.reason,
                exit.rip,
                exit.qualification,
                exit.guest_linear,
                exit.guest_physical,
                exit.instruction_len,
                exit.interruption_info,
                exit.interruption_error_code,
                exit.idt_vectoring_info
            );
        }
        if self.trace_state {
            use vcpu::regs::Gpr;
            eprintln!(
                "  rip={:#x} rsp={:#x} rax={:#x} rflags={:#x} cpl={} hw cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x} cr2={:#x}",
                cpu.rip(),
                cpu.gpr(Gpr::Rsp),
                cpu.gpr(Gpr::Rax),
                cpu.rflags(),
                cpu.cpl(),
                cpu.cr0(),
                cpu.cr3(),
                cpu.cr4(),
                cpu.efer(),
                cpu.cr2()
            );
        }
    }
}

/// Runs `capvisor run` and returns the process exit status.
pub fn run(args: &RunArgs) -> i32 {
    let cfg = match config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("capvisor: {e}");
            return EXIT_START_FAILED;
        }
    };
    let mut host = StdoutHost {
        out: BufWriter::new(std::io::stdout()),
        trace: args.trace_exits,
        trace_state: args.trace_state,
    };
    let result = runtime::run(&cfg, &mut host);
    let _ = host.out.flush();
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("capvisor: {e}");
            // An mmu-server that died under a running VM is a VM failure.
            return match e {
                runtime::RunError::MmuServerDied(_) => EXIT_VM_FAILED,
                _ => EXIT_START_FAILED,
            };
        }
    };
    report_nx_control(args, &result);
    if let Some(path) = &args.stats_json {
        let mmu = match args.mmu {
            MmuArg::Tdp => "tdp",
            MmuArg::Shadow => "shadow",
        };
        let wp = match cfg.vm.cr0_wp {
            Cr0WpPolicy::GuestOwned => "guest-owned",
            Cr0WpPolicy::Intercept => "intercept",
        };
        let doc = report::run_json(&result, mmu, wp, cfg.vm.root_reuse);
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("capvisor: cannot write {}: {e}", path.display());
        }
    }
    match result.outcome {
        VmOutcome::Exited { status } => status as i32,
        VmOutcome::Failed(f) => {
            eprintln!("capvisor: {f}");
            EXIT_VM_FAILED
        }
    }
}
