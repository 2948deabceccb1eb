//! Guests on seL4: boots the real kernel with system root tasks whose specs
//! (root-task/specs/, `make sel4-system`) run vmm-server PDs (root-task/vmm-server-pd):
//! each runs its guest on the software vCPU inside the PD, asks the mmu-server PD for
//! everything that touches guest paging over seL4 IPC, prints the guest's COM1 lines
//! through the UART driver PD as `[vm <name>] <line>`, and passes the guest's
//! isa-debug-exit value to QEMU. Checks, from the serial output and QEMU's status:
//! - the demo of `make run`, and hello, kernexec and ptwrite to completion under TDP
//!   and under shadow paging: exactly the lines and status of `tests/src/guests.rs`
//!   (the same data the QEMU conformance test uses);
//! - two VMs running concurrently on one mmu-server, each with its exact output; and
//!   isolation: a third vmm-server, with its own badge, cannot reach their MMU state
//!   (NoSuchVm while the server holds both);
//! - NxHugePageControl granted (the mitigation is off: no split) and denied
//!   (PermissionDenied, and the VM runs with the mitigation: one split);
//! - the mmu-server killed by an injected fault in the middle of a guest's run: the
//!   supervisor restarts it, the VM re-creates its MMU state and finishes with its
//!   normal output;
//! - a VM whose image is missing, and a guest the vmm-server must stop: a message or
//!   the diagnostic, and statuses of their own;
//! - a vmm-server PD that dies (its stack is too small): the supervisor ends the run.
//!
//! Each boot takes a second or two under TCG.

use capvisor_tests::guests::{self, GuestCase};
use capvisor_tests::{artefact, assert_in_order, run_qemu_until, QemuRun};
use std::time::Duration;

/// A boot with its VMs takes 1-3 s; allow for a loaded machine.
const TIMEOUT: Duration = Duration::from_secs(120);
/// The vmm-server PD writes 0x30 when it stopped its VM: QEMU exits with 97.
const VM_STOPPED: i32 = 0x30 << 1 | 1;
/// The supervisor writes 0x12 when no vmm-server can run and one died: QEMU exits
/// with 37.
const VMM_DIED: i32 = 0x12 << 1 | 1;

/// Boots `spec` and waits for QEMU to exit. A PD the supervisor leaves stopped (a
/// vmm-server that faulted, or a driver out of restarts) may leave QEMU running until
/// the timeout: that line ends the run at once, and the test fails with the serial
/// output.
fn boot(spec: &str) -> QemuRun {
    boot_with(spec, false)
}

/// [`boot`], optionally letting a PD be left stopped (a test that expects it).
fn boot_with(spec: &str, stopped_pd_expected: bool) -> QemuRun {
    let kernel = artefact("kernel/kernel32.elf", "kernel");
    let root_task = artefact(&format!("system-{spec}.elf"), "sel4-system");
    let root_task = root_task.to_str().expect("a UTF-8 build path");
    let run = run_qemu_until(
        &kernel,
        &["-cpu", "max", "-m", "512", "-initrd", root_task],
        TIMEOUT,
        |line| !stopped_pd_expected && line.contains("stays stopped"),
    );
    assert!(
        !run.stopped,
        "a PD was left stopped by the supervisor; serial:\n{}",
        run.serial
    );
    assert!(
        run.status.is_some(),
        "QEMU timed out; serial:\n{}",
        run.serial
    );
    run
}

/// The lines VM `vm` printed on COM1 (the vmm-server PD prefixes each one). The
/// kernel's own printing (the root task logs through it) shares the port with the UART
/// PD, so a line may start with a stray carriage return.
fn guest_lines(serial: &str, vm: &str) -> String {
    let prefix = format!("[vm {vm}] ");
    serial
        .lines()
        .filter_map(|l| l.trim_start_matches('\r').strip_prefix(&prefix))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// VM `vm` printed exactly the case's lines and its guest exited with the case's
/// status, which its PD reported to the supervisor.
fn check_vm(run: &QemuRun, vm: &str, case: &GuestCase) {
    if let Err(diff) = case.check_serial(&guest_lines(&run.serial, vm)) {
        panic!("VM {vm}: {diff}\n--- serial ---\n{}", run.serial);
    }
    let status = case.exit_status();
    assert_in_order(
        &run.serial,
        &[&format!(
            "[INFO  vmm_server_pd] vmm-server {vm}: guest exited with status {status} (isa-debug-exit value {})",
            case.exit_value
        )],
    );
}

fn no_faults(run: &QemuRun) {
    assert!(
        !run.serial.contains("faulted"),
        "no PD faulted:\n{}",
        run.serial
    );
    assert!(!run.serial.contains("panicked"), "{}", run.serial);
}

/// The last line of VM `vm`'s statistics.
fn vm_stats(run: &QemuRun, vm: &str) -> String {
    let prefix = format!("[INFO  vmm_server_pd] vmm-server {vm}: ");
    run.serial
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .find(|l| l.contains(" instructions, "))
        .unwrap_or_else(|| panic!("no statistics of VM {vm}:\n{}", run.serial))
        .to_string()
}

#[test]
fn the_demo_system_runs_kernexec_on_sel4_and_exits_qemu_with_the_guest_status() {
    let run = boot("demo");
    no_faults(&run);
    assert_in_order(
        &run.serial,
        &[
            "started PD mmu_server (mmu_server) at 0x400000",
            "started PD vmm_demo (vmm_server) at 0x400000",
            "[INFO  vmm_server_pd] vmm-server demo: kernexec loaded",
            "64 MiB of RAM, TDP paging",
        ],
    );
    let case = guests::case("kernexec");
    check_vm(&run, "demo", &case);
    // As under QEMU itself: (0 << 1) | 1.
    assert_eq!(run.status, Some(case.exit_status()), "{}", run.serial);
    assert_eq!(run.status, Some(1));
}

/// hello, kernexec and ptwrite one after another (per-VM priorities), each to its end.
fn three_guests(spec: &str, paging: &str) {
    let run = boot(spec);
    no_faults(&run);
    let cases = [
        guests::case("hello"),
        guests::case("kernexec"),
        guests::case("ptwrite"),
    ];
    for case in &cases {
        assert_in_order(
            &run.serial,
            &[
                &format!("vmm-server {}: {} loaded", case.guest, case.guest),
                &format!("{paging} paging"),
            ],
        );
        check_vm(&run, case.guest, case);
    }
    // The first two PDs told the supervisor they finished, in order; the last one
    // ended QEMU with its guest's status.
    assert_in_order(
        &run.serial,
        &[
            "supervisor: PD vmm_hello finished (status 1)",
            "supervisor: PD vmm_kernexec finished (status 1)",
            "vmm-server ptwrite: guest exited with status 1",
        ],
    );
    assert_eq!(run.status, Some(cases[2].exit_status()), "{}", run.serial);
}

#[test]
fn hello_kernexec_and_ptwrite_run_to_completion_under_tdp_on_sel4() {
    three_guests("vm-tdp", "TDP");
}

#[test]
fn hello_kernexec_and_ptwrite_run_to_completion_under_shadow_paging_on_sel4() {
    three_guests("vm-shadow", "shadow");
}

#[test]
fn two_vms_run_concurrently_and_a_third_cannot_reach_their_mmu_state_with_its_badge() {
    let run = boot("isolation");
    no_faults(&run);
    let kernexec = guests::case("kernexec");
    // Two VMs at one priority share the CPU and the mmu-server; each one's output is
    // exactly its guest's.
    check_vm(&run, "first", &kernexec);
    check_vm(&run, "second", &kernexec);
    check_vm(&run, "third", &guests::case("hello"));
    for vm in ["first", "second"] {
        assert_in_order(
            &run.serial,
            &[
                &format!("supervisor: PD vmm_{vm} finished (status 1)"),
                // Both VMs exist in the mmu-server (a VM is never destroyed)...
                "vmm-server third: VM 3 before CreateVm: GetStats with its badge: NoSuchVm",
                // ...and the third vmm-server's badge names neither.
                "vmm-server third: hello loaded",
            ],
        );
    }
    assert_eq!(run.status, Some(1), "{}", run.serial);
}

#[test]
fn nx_huge_page_control_is_granted_to_one_vm_and_denied_to_the_other_on_sel4() {
    let run = boot("nx");
    no_faults(&run);
    let kernexec = guests::case("kernexec");
    check_vm(&run, "granted", &kernexec);
    check_vm(&run, "denied", &kernexec);
    assert_in_order(
        &run.serial,
        &[
            "vmm-server granted: NX huge pages disabled for this VM through its NxHugePageControl capability",
            "vmm-server denied: NxHugePageControl refused (permission denied",
            "this VM does not hold the capability; the VM runs with the mitigation",
        ],
    );
    // The effect: kernexec runs from its image's 2 MiB page. With the mitigation off
    // that page stays huge; with it on the first fetch splits it (MMU_REFERENCE
    // section 5).
    let granted = vm_stats(&run, "granted");
    let denied = vm_stats(&run, "denied");
    assert!(
        granted.ends_with("mmu: pages_2m 2, nx_lpage_splits 0"),
        "{granted}"
    );
    assert!(
        denied.ends_with("mmu: pages_2m 1, nx_lpage_splits 1"),
        "{denied}"
    );
    assert_eq!(run.status, Some(1), "{}", run.serial);
}

#[test]
fn the_vm_finishes_when_the_mmu_server_is_killed_and_restarted_under_it() {
    let run = boot("kill");
    assert_in_order(
        &run.serial,
        &[
            "vmm-server survivor: kernexec loaded",
            // The guest is running: it has printed its first lines...
            "[vm survivor] kernexec: kernel text is read-only",
            // ...when the mmu-server dies serving one of its requests.
            "mmu-server: injected fault on request 400 (label 0x",
            "supervisor: PD mmu_server (mmu_server_faulty_late) faulted",
            "supervisor: restarted PD mmu_server (restart 1 of at most 3)",
            "mmu-server: restarted (1), answering the interrupted call",
            "[vm survivor] kernexec: PASS",
            "vmm-server survivor: guest exited with status 1",
        ],
    );
    assert!(
        vm_stats(&run, "survivor").contains("MMU state re-created 1 time(s)"),
        "{}",
        run.serial
    );
    // Nothing but the mmu-server died.
    assert_eq!(run.serial.matches("faulted").count(), 1, "{}", run.serial);
    let kernexec = guests::case("kernexec");
    check_vm(&run, "survivor", &kernexec);
    assert_eq!(run.status, Some(kernexec.exit_status()), "{}", run.serial);
}

#[test]
fn a_vm_that_cannot_start_or_that_the_vmm_server_stops_is_a_diagnostic_and_a_status() {
    let run = boot("vm-failure");
    no_faults(&run);
    assert_in_order(
        &run.serial,
        &[
            "[ERROR vmm_server_pd] vmm-server missing: no guest image \"nosuch\" in this PD (it carries hello, kernexec, ptwrite, faults)",
            "supervisor: PD vmm_missing finished (status 99)",
            "[vm faulty] faults: triple fault next",
            "[ERROR vmm_server_pd] vmm-server faulty: VM stopped: triple fault at RIP 0x",
            ", instruction bytes: 0f 0b",
        ],
    );
    assert_eq!(run.status, Some(VM_STOPPED), "{}", run.serial);
}

#[test]
fn when_the_only_vmm_server_dies_the_supervisor_ends_the_run() {
    let run = boot_with("vmm-dies", true);
    assert_in_order(
        &run.serial,
        &[
            "started PD vmm_tiny (vmm_server) at 0x400000",
            // Its 16 KiB stack overflows into the guard page below it.
            "supervisor: PD vmm_tiny (vmm_server) faulted: VM fault at address 0x2ff",
            "supervisor: PD vmm_tiny stays stopped",
            "supervisor: no VM can run any more and a vmm-server died: ending QEMU",
        ],
    );
    assert!(!run.serial.contains("[vm tiny]"), "{}", run.serial);
    assert_eq!(run.status, Some(VMM_DIED), "{}", run.serial);
}
