//! The vmm-server's instruction emulator on real guest code: `fixtures/ptemu.S` (a
//! 32-bit kernel that edits its own 2-level page table with MOV, XCHG, LOCK CMPXCHG,
//! BTR/OR and REP STOSD and checks every result through the remapped page).
//! Under shadow paging its page table is write-tracked, so each of those writes is a
//! #PF the mmu-server answers with Emulate; under TDP they run natively. Both must
//! print what QEMU printed (`fixtures/ptemu.qemu.txt`) and exit with its status.

use capvisor::ipc::MmuMode;
use capvisor::runtime::{self, CapturingHost, RunConfig, RunResult};
use capvisor::vmm_server::{VmConfig, VmOutcome};

const IMAGE: &[u8] = include_bytes!("fixtures/ptemu.elf");
const QEMU_OUTPUT: &str = include_str!("fixtures/ptemu.qemu.txt");

fn run(mode: MmuMode) -> (RunResult, String) {
    let mut vm = VmConfig::new(mode);
    vm.max_instructions = Some(10_000_000);
    let cfg = RunConfig {
        append: String::new(),
        mem: 64 << 20,
        pool: 4 << 20,
        ..RunConfig::new(IMAGE.to_vec(), "ptemu.elf", vm)
    };
    let mut host = CapturingHost::default();
    let r = runtime::run(&cfg, &mut host).expect("ptemu starts");
    (r, String::from_utf8(host.serial).unwrap())
}

#[test]
fn page_table_writes_are_emulated_under_shadow_paging() {
    let (r, serial) = run(MmuMode::Shadow);
    assert_eq!(serial, QEMU_OUTPUT);
    assert_eq!(r.outcome, VmOutcome::Exited { status: 1 });
    // Every PTE write of the five steps went through the emulator: at least the MOVs,
    // XCHG, two CMPXCHGs, BTR, OR and sixteen STOSD elements.
    assert!(r.stats.mmu.emulations >= 23, "{:?}", r.stats.mmu);
    assert!(r.stats.mmu.write_protect_faults >= r.stats.mmu.emulations);
    assert!(r.stats.exits.get("invlpg") >= 6);
}

#[test]
fn the_same_writes_run_natively_under_tdp() {
    let (r, serial) = run(MmuMode::Tdp);
    assert_eq!(serial, QEMU_OUTPUT);
    assert_eq!(r.outcome, VmOutcome::Exited { status: 1 });
    assert_eq!(r.stats.mmu.emulations, 0);
    assert_eq!(r.stats.exits.get("exception_nmi"), 0);
}
