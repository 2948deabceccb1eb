//! The statistics claims of the vmm-server issue, measured on `kernexec` (a
//! KERNEXEC-style kernel that toggles CR0.WP around every write to read-only kernel
//! data: exactly two CR0 writes per open/close-kernel pair):
//! - TDP with `--cr0-wp guest-owned`: WP toggles cause no CR-access exit at all;
//! - TDP with `--cr0-wp intercept`: two CR-access exits per toggle pair;
//! - with `--root-reuse off` (and intercept), a root is rebuilt for every toggle;
//!   with the default `on`, WP toggles find their roots in the cache.
//!
//! And the checkpoint records of `hugeexec` (port 0x80).
//!
//! Counting exits across two iteration counts isolates the toggles from boot-time CR
//! writes, whatever their number.

use capvisor::ipc::MmuMode;
use capvisor::runtime::RunResult;
use capvisor::vmm_server::{Cr0WpPolicy, VmConfig, VmOutcome};
use capvisor_tests::capvisor::{run, run_config};
use capvisor_tests::guests;

/// kernexec runs 3 processes; every system call is one open/close-kernel pair.
const PROCESSES: u64 = 3;

fn kernexec(iters: u64, wp: Cr0WpPolicy, root_reuse: bool) -> RunResult {
    kernexec_in(MmuMode::Tdp, iters, wp, root_reuse)
}

fn kernexec_in(mode: MmuMode, iters: u64, wp: Cr0WpPolicy, root_reuse: bool) -> RunResult {
    let image = guests::guest_image("kernexec");
    let mut vm = VmConfig::new(mode);
    vm.cr0_wp = wp;
    vm.root_reuse = root_reuse;
    vm.max_instructions = Some(500_000_000);
    let cfg = run_config(&image, &format!("iters={iters} ws=4"), vm);
    let (r, host) = run(&cfg);
    let serial = host.serial_text();
    assert_eq!(r.outcome, VmOutcome::Exited { status: 1 }, "{serial}");
    assert!(
        serial.contains(&format!("{} open/close-kernel pairs", PROCESSES * iters)),
        "{serial}"
    );
    r
}

fn cr_exits(r: &RunResult) -> u64 {
    r.stats.exits.get("cr_access")
}

const A: u64 = 20;
const B: u64 = 60;
const EXTRA_PAIRS: u64 = PROCESSES * (B - A);

#[test]
fn guest_owned_wp_toggles_cause_no_cr_access_exit() {
    let a = kernexec(A, Cr0WpPolicy::GuestOwned, true);
    let b = kernexec(B, Cr0WpPolicy::GuestOwned, true);
    assert_eq!(
        cr_exits(&a),
        cr_exits(&b),
        "more toggles, not one more CR exit"
    );
    // What remains are the few boot-time writes (CR4.PAE, CR0.PG, CR4.PCIDE...).
    assert!(cr_exits(&a) < 10, "{}", cr_exits(&a));
}

#[test]
fn intercepted_wp_costs_two_cr_access_exits_per_toggle_pair() {
    let a = kernexec(A, Cr0WpPolicy::Intercept, true);
    let b = kernexec(B, Cr0WpPolicy::Intercept, true);
    assert_eq!(cr_exits(&b) - cr_exits(&a), 2 * EXTRA_PAIRS);
    let owned = kernexec(A, Cr0WpPolicy::GuestOwned, true);
    assert!(cr_exits(&a) - cr_exits(&owned) >= 2 * PROCESSES * A);
}

#[test]
fn without_root_reuse_every_wp_toggle_rebuilds_a_root() {
    let off_a = kernexec(A, Cr0WpPolicy::Intercept, false);
    let off_b = kernexec(B, Cr0WpPolicy::Intercept, false);
    let roots = |r: &RunResult| r.stats.mmu.roots_allocated;
    // One root per toggle: two per pair.
    assert_eq!(roots(&off_b) - roots(&off_a), 2 * EXTRA_PAIRS);
    // With reuse, TDP roots survive WP toggles: the count does not grow with them.
    let on_a = kernexec(A, Cr0WpPolicy::Intercept, true);
    let on_b = kernexec(B, Cr0WpPolicy::Intercept, true);
    assert_eq!(roots(&on_a), roots(&on_b));
}

/// Beyond KVM (MMU_REFERENCE.md: capvisor keeps cached roots per role for shadow
/// paging too): under shadow paging every WP toggle still exits, but with root reuse
/// the root of the other WP value is found again (previous roots or the shadow-page
/// hash) instead of being built: no root is allocated for a toggle.
#[test]
fn shadow_wp_toggles_switch_to_cached_roots() {
    let a = kernexec_in(MmuMode::Shadow, A, Cr0WpPolicy::Intercept, true);
    let b = kernexec_in(MmuMode::Shadow, B, Cr0WpPolicy::Intercept, true);
    assert!(cr_exits(&b) - cr_exits(&a) >= 2 * EXTRA_PAIRS);
    assert_eq!(a.stats.mmu.roots_allocated, b.stats.mmu.roots_allocated);
    let off_a = kernexec_in(MmuMode::Shadow, A, Cr0WpPolicy::Intercept, false);
    let off_b = kernexec_in(MmuMode::Shadow, B, Cr0WpPolicy::Intercept, false);
    assert!(off_b.stats.mmu.roots_allocated - off_a.stats.mmu.roots_allocated >= 2 * EXTRA_PAIRS);
}

#[test]
fn hugeexec_checkpoints_record_the_mmu_statistics_at_each_step() {
    let image = guests::guest_image("hugeexec");
    for mode in [MmuMode::Tdp, MmuMode::Shadow] {
        let mut vm = VmConfig::new(mode);
        vm.max_instructions = Some(500_000_000);
        let (r, host) = run(&run_config(&image, "", vm));
        assert_eq!(r.outcome, VmOutcome::Exited { status: 1 }, "{mode:?}");
        let steps: Vec<u32> = r.checkpoints.iter().map(|c| c.step).collect();
        assert_eq!(steps, (1..=7).collect::<Vec<_>>(), "{mode:?}");
        // The wait hint reached the host (and the VM paused for it).
        assert!(
            host.waited_ms >= u64::from(guests::HUGEEXEC_WAIT_MS),
            "{mode:?}"
        );
        // Snapshots are taken in order: counters never go backwards.
        for w in r.checkpoints.windows(2) {
            assert!(w[0].stats.instructions < w[1].stats.instructions);
            assert!(w[0].stats.ipc_calls < w[1].stats.ipc_calls);
            assert!(w[0].stats.mmu.sptes_created <= w[1].stats.mmu.sptes_created);
        }
        assert!(r.stats.instructions > r.checkpoints[6].stats.instructions);
    }
}
