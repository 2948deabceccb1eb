//! What the vmm-server emulates for a guest, seen from the guest: `fixtures/sysprobe.S`
//! probes VMCALL, CR0 through MOV/CLTS/LMSW, CR4, EFER and APIC-base reads and writes,
//! the I/O ports of COM1, isa-debug-exit and an unassigned port, and REP OUTSB / REP
//! INSB (emulated one element per exit), under TDP and
//! shadow paging (where the hardware CR0/CR4/EFER differ from the guest's view), and
//! must print exactly what it printed under QEMU (`fixtures/sysprobe.qemu.txt`).
//!
//! With `sdm` on its command line it also checks architectural #GP(0)s that QEMU's TCG
//! does not raise (it accepts CR0.NW without CD, ignores unknown MSRs, and spins on a
//! reserved CR4 bit): there capvisor follows the SDM (and KVM).

use capvisor::ipc::MmuMode;
use capvisor::runtime::{self, CapturingHost, RunConfig};
use capvisor::vmm_server::{VmConfig, VmOutcome};

const IMAGE: &[u8] = include_bytes!("fixtures/sysprobe.elf");
const QEMU_OUTPUT: &str = include_str!("fixtures/sysprobe.qemu.txt");

fn run(mode: MmuMode, append: &str) -> String {
    let mut vm = VmConfig::new(mode);
    vm.max_instructions = Some(10_000_000);
    let cfg = RunConfig {
        append: append.into(),
        mem: 32 << 20,
        pool: 2 << 20,
        ..RunConfig::new(IMAGE.to_vec(), "sysprobe.elf", vm)
    };
    let mut host = CapturingHost::default();
    let r = runtime::run(&cfg, &mut host).expect("sysprobe starts");
    assert_eq!(r.outcome, VmOutcome::Exited { status: 1 }, "{mode:?}");
    String::from_utf8(host.serial).unwrap()
}

#[test]
fn guest_visible_behaviour_matches_qemu_under_tdp_and_shadow() {
    for mode in [MmuMode::Tdp, MmuMode::Shadow] {
        assert_eq!(run(mode, ""), QEMU_OUTPUT, "{mode:?}");
    }
}

#[test]
fn illegal_control_register_and_msr_writes_raise_gp() {
    let gp = [
        "mov cr4 (reserved bit 15): vector 0000000d",
        "mov cr4 (VMXE): vector 0000000d",
        "mov cr0 (NW without CD): vector 0000000d",
        "wrmsr 0x12345678: vector 0000000d",
        "rdmsr 0x12345678: vector 0000000d",
    ];
    let mut want: Vec<&str> = QEMU_OUTPUT.lines().collect();
    let done = want.pop().unwrap();
    want.extend(gp);
    want.push(done);
    for mode in [MmuMode::Tdp, MmuMode::Shadow] {
        let got = run(mode, "sdm");
        assert_eq!(got.lines().collect::<Vec<_>>(), want, "{mode:?}");
    }
}

/// x87 instructions run under QEMU but are outside capvisor's CPU model: the VM stops
/// with a diagnostic naming the instruction, its address and its bytes, after the
/// output the guest produced so far.
#[test]
fn an_unimplemented_instruction_stops_the_vm_naming_it() {
    use capvisor::vmm_server::StopReason;
    for mode in [MmuMode::Tdp, MmuMode::Shadow] {
        let mut vm = VmConfig::new(mode);
        vm.max_instructions = Some(10_000_000);
        let cfg = RunConfig {
            append: "x87".into(),
            mem: 32 << 20,
            pool: 2 << 20,
            ..RunConfig::new(IMAGE.to_vec(), "sysprobe.elf", vm)
        };
        let mut host = CapturingHost::default();
        let r = runtime::run(&cfg, &mut host).expect("sysprobe starts");
        let serial = String::from_utf8(host.serial).unwrap();
        assert_eq!(
            serial,
            QEMU_OUTPUT.trim_end_matches("sysprobe: done\n"),
            "{mode:?}"
        );
        let VmOutcome::Failed(f) = r.outcome else {
            panic!("{mode:?}: expected a diagnostic, got {:?}", r.outcome);
        };
        assert_eq!(
            f.reason,
            StopReason::UnimplementedInstruction {
                mnemonic: capvisor::vmm_server::iced_x86::Mnemonic::Fninit
            }
        );
        let text = f.to_string();
        assert!(
            text.starts_with("VM stopped: unimplemented instruction (Fninit) at RIP 0x"),
            "{text}"
        );
        assert!(text.ends_with("instruction bytes: db e3"), "{text}");
    }
}
