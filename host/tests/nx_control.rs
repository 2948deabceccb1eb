//! The host runtime's side of the NX-huge-page issue: the system-wide mode and the
//! recovery settings reach the mmu-server through the system controller's channel, a
//! timer thread delivers recovery ticks, and `--disable-nx-huge-pages` is an invocation
//! of the `NxHugePageControl` capability, which only a VM granted it holds (its own
//! badged mailbox). Runs `hugeexec` (needs `make guests`); the exact page counts of
//! MMU_REFERENCE.md section 5 are the NX tests' business, here only the plumbing.

use capvisor::ipc::{Error, MmuMode};
use capvisor::runtime::{self, CapturingHost, NxHugePages, RunConfig, RunResult};
use capvisor::vmm_server::{VmConfig, VmOutcome};
use std::path::PathBuf;

fn hugeexec(mode: MmuMode, nx: NxHugePages, grant: bool, disable: bool) -> RunResult {
    let image = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../build/guests/hugeexec.elf");
    let bytes = std::fs::read(&image).expect("build/guests/hugeexec.elf: run `make guests`");
    let mut vm = VmConfig::new(mode);
    vm.disable_nx_huge_pages = disable;
    vm.max_instructions = Some(100_000_000);
    let cfg = RunConfig {
        nx_huge_pages: nx,
        grant_nx_huge_page_control: grant,
        nx_recovery_ratio: Some(1),
        nx_recovery_period_ms: Some(50),
        ..RunConfig::new(bytes, image.to_string_lossy().into_owned(), vm)
    };
    let r = runtime::run(&cfg, &mut CapturingHost::default()).expect("hugeexec starts");
    assert_eq!(
        r.outcome,
        VmOutcome::Exited { status: 1 },
        "hugeexec passes whatever the policy"
    );
    r
}

fn splits_after_executing(r: &RunResult) -> u64 {
    // Step 4: hp1 and hp3 have been executed.
    r.checkpoints[3].stats.mmu.nx_lpage_splits
}

#[test]
fn without_the_capability_disabling_is_refused_and_the_vm_goes_on() {
    for mode in [MmuMode::Tdp, MmuMode::Shadow] {
        let r = hugeexec(mode, NxHugePages::On, false, true);
        assert_eq!(
            r.nx_disable.map(|x| x.map_err(|e| e.error)),
            Some(Err(Error::PermissionDenied))
        );
        assert!(
            splits_after_executing(&r) >= 1,
            "{mode:?}: the mitigation still applies"
        );
    }
}

#[test]
fn with_the_capability_the_mitigation_is_off_for_this_vm() {
    for mode in [MmuMode::Tdp, MmuMode::Shadow] {
        let r = hugeexec(mode, NxHugePages::On, true, true);
        assert_eq!(r.nx_disable.map(|x| x.map_err(|e| e.error)), Some(Ok(())));
        assert_eq!(splits_after_executing(&r), 0, "{mode:?}");
        assert_eq!(r.stats.mmu.nx_recovered, 0, "{mode:?}: nothing to recover");
        // Holding the capability without using it changes nothing.
        let kept = hugeexec(mode, NxHugePages::On, true, false);
        assert_eq!(kept.nx_disable, None);
        assert!(splits_after_executing(&kept) >= 1, "{mode:?}");
    }
}

#[test]
fn the_system_mode_reaches_the_mmu_server() {
    for mode in [MmuMode::Tdp, MmuMode::Shadow] {
        assert_eq!(
            splits_after_executing(&hugeexec(mode, NxHugePages::Off, false, false)),
            0
        );
        assert_eq!(
            splits_after_executing(&hugeexec(mode, NxHugePages::Never, false, false)),
            0
        );
        assert!(splits_after_executing(&hugeexec(mode, NxHugePages::Force, false, false)) >= 1);
    }
}

#[test]
fn the_recovery_timer_ticks() {
    for mode in [MmuMode::Tdp, MmuMode::Shadow] {
        // Ratio 1 every 50 ms, and hugeexec waits 500 ms after its executions.
        let r = hugeexec(mode, NxHugePages::On, false, false);
        assert!(r.stats.mmu.nx_recovered >= 1, "{mode:?}: {:?}", r.stats.mmu);
    }
}

/// Every error of the capability invocation, in the order the issue fixes, through the
/// host runtime: flags, then the capability, then the argument, then the vCPU.
#[test]
fn the_capability_invocation_checks_in_order() {
    use capvisor::ipc::DisableNxHugePages;
    let req = |flags, arg| DisableNxHugePages {
        flags,
        reserved: 0,
        arg,
    };
    let image = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../build/guests/hello.elf");
    let bytes = std::fs::read(&image).expect("build/guests/hello.elf: run `make guests`");
    for granted in [false, true] {
        let cfg = RunConfig {
            grant_nx_huge_page_control: granted,
            nx_control_after_vcpu: vec![req(1, 0), req(0, 0), req(0, 1), req(1, 1)],
            ..RunConfig::new(bytes.clone(), "hello.elf", VmConfig::new(MmuMode::Tdp))
        };
        let r = runtime::run(&cfg, &mut CapturingHost::default()).expect("hello starts");
        assert_eq!(r.outcome, VmOutcome::Exited { status: 1 }, "the VM goes on");
        let want = if granted {
            // Flags first; then, holding the capability: the argument, then the vCPU.
            vec![
                Err(Error::InvalidArgument),
                Err(Error::InvalidArgument),
                Err(Error::InvalidArgument),
                Err(Error::InvalidArgument),
            ]
        } else {
            vec![
                Err(Error::InvalidArgument),
                Err(Error::PermissionDenied),
                Err(Error::PermissionDenied),
                Err(Error::InvalidArgument),
            ]
        };
        assert_eq!(r.nx_control_after_vcpu, want, "granted: {granted}");
    }
}
