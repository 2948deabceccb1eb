//! Boots the real seL4 kernel with the system root task (`make sel4-system`), which
//! instantiates a capDL test spec (root-task/specs/) and starts its PDs: the UART and
//! timer driver PDs (drivers/) and the test PDs (root-task/test-pds/) in the servers'
//! places. Checks, from the serial output and the isa-debug-exit status:
//! - the whole system: every PD prints through the UART PD's console endpoint, the
//!   timer PD's PIT interrupts become recovery ticks on the mmu-server's notification,
//!   the client's badged call reaches the PD in the mmu-server's place with its VM id,
//!   and the client ends QEMU through the debug-exit ports its VM was granted;
//! - the supervisor: a PD that faults is reported with the fault and its registers;
//! - a spec that needs more memory than the machine has is a message, not a hang;
//! - the mmu-server PD answers two clients over seL4 IPC, each confined to its badge;
//! - the supervisor restarts a faulting mmu-server (and the VM goes on) or driver;
//! - the timer PD runs on the HPET as well as on the PIT.

use capvisor_tests::{artefact, assert_in_order, run_qemu, run_qemu_until, QemuRun};
use std::time::Duration;

/// Boot to exit takes about a second; allow for a loaded machine.
const TIMEOUT: Duration = Duration::from_secs(60);
/// test_client writes 0x2a to isa-debug-exit: QEMU exits with (0x2a << 1) | 1.
const PASS_STATUS: i32 = 0x2a << 1 | 1;
/// The system root task writes 0x11 when the spec cannot be instantiated.
const INSTANTIATION_FAILED: i32 = 0x11 << 1 | 1;

fn qemu_args(spec: &str) -> (std::path::PathBuf, String) {
    let kernel = artefact("kernel/kernel32.elf", "kernel");
    let root_task = artefact(&format!("system-{spec}.elf"), "sel4-system");
    (
        kernel,
        root_task.to_str().expect("a UTF-8 build path").to_string(),
    )
}

fn boot(spec: &str) -> QemuRun {
    let (kernel, root_task) = qemu_args(spec);
    run_qemu(
        &kernel,
        &["-cpu", "max", "-m", "512", "-initrd", &root_task],
        TIMEOUT,
    )
}

/// Boots the any-cpu build of `spec` on the any-cpu kernel with QEMU's default CPU
/// model (no FSGSBASE, no 1 GiB pages; object-type numbers differ from qemu-tcg).
fn boot_any_cpu(spec: &str) -> QemuRun {
    let kernel = artefact("kernel-any-cpu/kernel32.elf", "kernel");
    let root_task = artefact(&format!("system-{spec}-any-cpu.elf"), "sel4-system");
    let root_task = root_task.to_str().expect("a UTF-8 build path");
    run_qemu(&kernel, &["-m", "512", "-initrd", root_task], TIMEOUT)
}

#[test]
fn drivers_and_test_pds_run_from_the_spec_and_the_client_exits_qemu() {
    check_system_test(&boot("system-test"), "qemu-tcg");
}

#[test]
fn drivers_and_test_pds_run_on_the_any_cpu_kernel_with_the_default_cpu_model() {
    check_system_test(&boot_any_cpu("system-test"), "any-cpu");
}

fn check_system_test(run: &QemuRun, config: &str) {
    assert!(!run.timed_out, "QEMU timed out; serial:\n{}", run.serial);
    assert_in_order(
        &run.serial,
        &[
            "Booting all finished, dropped to user space",
            &format!("capvisor system: seL4 5.0.0 x86_64, kernel config {config}, spec "),
            "system-test.capdl.bin",
            "4 PDs, 1 VMs; 4 images embedded",
            "instantiated ",
            // PDs in the spec's order, each at its ELF's entry point.
            "started PD mmu_server (test_ticks) at 0x400000",
            "started PD uart (uart) at 0x400000",
            "started PD timer (timer) at 0x400000",
            "started PD vmm_demo (test_client) at 0x400000",
            "supervisor: waiting for faults",
        ],
    );
    // Every object and capability of the spec was made.
    let count = |prefix: &str| -> (u64, u64) {
        let line = run
            .serial
            .lines()
            .find(|l| l.contains(prefix))
            .expect(prefix);
        let w: Vec<&str> = line[line.find(prefix).unwrap() + prefix.len()..]
            .split_whitespace()
            .collect();
        (w[0].parse().expect("objects"), w[2].parse().expect("caps"))
    };
    let spec = count("spec: ");
    assert!(spec.0 > 100 && spec.1 > 100, "{spec:?}");
    assert_eq!(count("instantiated "), spec);
    // The PDs run concurrently: check each one's own sequence.
    assert_in_order(
        &run.serial,
        &["[INFO  uart_pd] 16550 at 0x3f8 ready, serving the console"],
    );
    assert_in_order(
        &run.serial,
        &["[INFO  timer] PIT channel 0 every 20000 us, recovery tick every 20 ms (1 interrupts)"],
    );
    assert_in_order(
        &run.serial,
        &[
            // Through the console endpoint: the UART PD prints the client's lines.
            "[INFO  test_client] test-client: hello from VM 7 through the UART PD",
            // The badge of the client's mmu capability carries its VM id (7, from the
            // spec), which the server decodes.
            "[INFO  test_ticks] test-ticks: VM 7 (nx control false) waits for 3 ticks",
            "[INFO  test_ticks] test-ticks: recovery tick 1/3 (badge 0x1)",
            "[INFO  test_ticks] test-ticks: recovery tick 2/3 (badge 0x1)",
            "[INFO  test_ticks] test-ticks: recovery tick 3/3 (badge 0x1)",
            "[INFO  test_client] test-client: reply label 0: waited 3 ticks, server saw VM 7",
            "[INFO  test_client] test-client: done, exiting QEMU",
        ],
    );
    assert!(run
        .serial
        .contains("[INFO  timer] first recovery tick sent to the mmu-server"));
    assert!(
        !run.serial.contains("faulted"),
        "no PD faulted:\n{}",
        run.serial
    );
    assert!(!run.serial.contains("panicked"), "{}", run.serial);
    assert_eq!(
        run.status,
        Some(PASS_STATUS),
        "exit status; serial:\n{}",
        run.serial
    );
}

#[test]
fn the_supervisor_reports_a_faulting_pd_with_its_registers() {
    let (kernel, root_task) = qemu_args("fault-test");
    let run = run_qemu_until(
        &kernel,
        &["-cpu", "max", "-m", "512", "-initrd", &root_task],
        TIMEOUT,
        |line| line.contains("supervisor: PD vmm_demo stays stopped"),
    );
    let (serial, seen) = (run.serial, run.stopped);
    assert!(seen, "the supervisor never finished its report:\n{serial}");
    assert_in_order(
        &serial,
        &[
            "[INFO  test_client] test-client: faulting on purpose at 0xdeadb000",
            // A write (error code bit 1) to the unmapped address, by the client's code.
            "supervisor: PD vmm_demo (test_client) faulted: VM fault at address 0xdeadb000 (write, error code 0x",
            "supervisor: vmm_demo registers: rip 0x4",
            "supervisor: vmm_demo registers: rsi ",
            "supervisor: vmm_demo registers: r12 ",
            "supervisor: PD vmm_demo stays stopped",
        ],
    );
    // The faulting instruction's address is in the client's image, and its stack
    // pointer in the stack the spec gave it (below 0x3000_0000).
    let regs = serial
        .lines()
        .find(|l| l.contains("vmm_demo registers: rip"))
        .expect("register line");
    let field = |name: &str| -> u64 {
        let w: Vec<&str> = regs.split_whitespace().collect();
        let i = w.iter().position(|x| *x == name).expect("field");
        u64::from_str_radix(w[i + 1].trim_start_matches("0x"), 16).expect("hex")
    };
    assert!((0x40_0000..0x42_0000).contains(&field("rip")), "{regs}");
    assert!((0x2fff_c000..0x3000_0000).contains(&field("rsp")), "{regs}");
    // The rest of the system keeps running: ticks still arrive.
    assert!(
        serial.contains("[INFO  uart_pd] 16550 at 0x3f8 ready"),
        "{serial}"
    );
}

#[test]
fn a_spec_larger_than_the_machine_is_a_clear_error() {
    let run = boot("too-big-test");
    assert!(
        !run.timed_out,
        "QEMU timed out (a hang); serial:\n{}",
        run.serial
    );
    assert_in_order(
        &run.serial,
        &[
            "capvisor system: cannot instantiate the spec: not enough untyped memory for vm_huge_ram_ut (2^30 bytes)",
        ],
    );
    assert_eq!(
        run.status,
        Some(INSTANTIATION_FAILED),
        "serial:\n{}",
        run.serial
    );
}

/// The mmu-server as a PD over real seL4 IPC: two vmm-server stand-ins (`test_vmm`)
/// call it with the `ipc` protocol through their badged capabilities.
#[test]
fn the_mmu_server_pd_serves_two_badged_clients_over_sel4_ipc() {
    check_mmu_test(&boot("mmu-test"));
}

#[test]
fn the_mmu_server_pd_runs_on_the_any_cpu_kernel_with_the_default_cpu_model() {
    check_mmu_test(&boot_any_cpu("mmu-test"));
}

fn check_mmu_test(run: &QemuRun) {
    assert!(!run.timed_out, "QEMU timed out; serial:\n{}", run.serial);
    assert_in_order(
        &run.serial,
        &[
            "started PD mmu_server (mmu_server) at 0x400000",
            "started PD vmm_a (test_vmm)",
            "started PD vmm_b (test_vmm)",
        ],
    );
    assert_in_order(
        &run.serial,
        &[
            // The pool (2M = 512 frames) and both VMs' RAM, from the boot parameters.
            "[INFO  mmu_server_pd] mmu-server: pool of 512 frames at hpa 0x",
            ", 2 VM(s) mapped, serving",
        ],
    );
    assert_in_order(
        &run.serial,
        &[
            "[INFO  test_vmm] test-vmm 3: created VM with 4096 KiB of RAM at hpa 0x",
            // The EPT the mmu-server PD wrote into the pool, read by the client through
            // its own read-only mapping of the pool, maps the page to the client's RAM.
            "[INFO  test_vmm] test-vmm 3: the EPT in the shared pool maps gpa 0x5000 to hpa 0x",
            " = RAM + 0x5000",
            "[INFO  test_vmm] test-vmm 3: stats: roots allocated 1, page faults fixed 1, sptes created 1",
            // Granted NxHugePageControl: bad flags, then a bad argument, are invalid;
            // a valid invocation succeeds; after the vCPU exists it is invalid again.
            "[INFO  test_vmm] test-vmm 3: DisableNxHugePages with flags 1: Err(InvalidArgument)",
            "[INFO  test_vmm] test-vmm 3: DisableNxHugePages with argument 1: Err(InvalidArgument)",
            "[INFO  test_vmm] test-vmm 3: DisableNxHugePages through the granted capability: Ok(",
            "[INFO  test_vmm] test-vmm 3: DisableNxHugePages after the vCPU exists: Err(InvalidArgument)",
        ],
    );
    assert_in_order(
        &run.serial,
        &[
            // VM 4 asks only after VM 3 exists, and its badge names no VM: isolation.
            "[INFO  test_vmm] test-vmm 3: created VM",
            "[INFO  test_vmm] test-vmm 4: GetStats before CreateVm: Err(NoSuchVm)",
            "[INFO  test_vmm] test-vmm 4: DisableNxHugePages of its own VM without the capability: Err(PermissionDenied)",
            "[INFO  test_vmm] test-vmm 4: own VM created, stats: roots allocated 0, page faults fixed 0",
            "[INFO  test_vmm] test-vmm 4: done, exiting QEMU",
        ],
    );
    assert!(!run.serial.contains("FAILED"), "{}", run.serial);
    assert!(!run.serial.contains("faulted"), "{}", run.serial);
    assert_eq!(
        run.status,
        Some(PASS_STATUS),
        "exit status; serial:\n{}",
        run.serial
    );
}

/// A fault injected into the mmu-server (a test-only build of it, named by the test
/// spec) kills it in the middle of a call; the supervisor restarts it and the VM goes
/// on: the interrupted call gets an error instead of blocking forever, and the
/// vmm-server stand-in re-creates its MMU state, which maps the same guest RAM.
#[test]
fn the_supervisor_restarts_the_mmu_server_and_the_vm_goes_on() {
    let run = boot("restart-test");
    assert!(!run.timed_out, "QEMU timed out; serial:\n{}", run.serial);
    assert_in_order(
        &run.serial,
        &[
            "started PD mmu_server (mmu_server_faulty)",
            "[ERROR mmu_server_pd] mmu-server: injected fault on TdpFault from VM 5",
            // ud2: user exception 6 (#UD).
            "supervisor: PD mmu_server (mmu_server_faulty) faulted: user exception 6",
            "supervisor: mmu_server registers: rip 0x4",
            "supervisor: restarted PD mmu_server (restart 1 of at most 3)",
            "[INFO  mmu_server_pd] mmu-server: pool of 512 frames",
            "[INFO  mmu_server_pd] mmu-server: restarted (1), answering the interrupted call",
            "[INFO  test_vmm] test-vmm 5: TdpFault: Err(Transport): the mmu-server died serving it",
            "[INFO  test_vmm] test-vmm 5: GetStats after the restart: Err(NoSuchVm)",
            "[INFO  test_vmm] test-vmm 5: re-created its MMU state; the new EPT maps gpa 0x5000 to RAM + 0x5000",
            "[INFO  test_vmm] test-vmm 5: guest RAM marker after the restart: 0x5eed0f7e57",
            "[INFO  test_vmm] test-vmm 5: done, exiting QEMU",
        ],
    );
    // Injected once: the restarted server does not die again.
    assert_eq!(
        run.serial.matches("injected fault").count(),
        1,
        "{}",
        run.serial
    );
    assert!(!run.serial.contains("FAILED"), "{}", run.serial);
    assert_eq!(
        run.status,
        Some(PASS_STATUS),
        "exit status; serial:\n{}",
        run.serial
    );
}

/// The timer PD on the HPET: its register page is a device frame at 0xfed00000 that
/// the root task carves out of device untyped memory, and timer 0 interrupts on the
/// legacy replacement route (ISA IRQ 0). The interrupts' spacing, measured on the
/// HPET's own counter, is the 20 ms programmed, not the 50 ms at which the kernel left
/// the PIT (which the legacy route disconnects).
#[test]
fn the_timer_pd_drives_the_hpet_from_a_device_frame() {
    let run = boot("hpet-test");
    assert!(!run.timed_out, "QEMU timed out; serial:\n{}", run.serial);
    assert_in_order(
        &run.serial,
        &[
            "started PD timer (timer)",
            "[INFO  timer] HPET timer 0 every 2000000 ticks (20000 us, Legacy route), recovery tick every 20 ms (1 interrupts)",
            "[INFO  timer] HPET: interrupts 1 to 10 came ",
        ],
    );
    let line = run
        .serial
        .lines()
        .find(|l| l.contains("HPET: interrupts 1 to 10 came "))
        .expect("measurement line");
    let us: u64 = line
        .split("came ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no interval in {line:?}"));
    // 20 ms programmed; the bound only has to tell it from the 50 ms PIT the kernel
    // leaves running, with room for a QEMU stalled by a loaded machine.
    assert!((10_000..=40_000).contains(&us), "interval {us} us: {line}");
    assert_in_order(
        &run.serial,
        &[
            "[INFO  test_ticks] test-ticks: VM 7 (nx control false) waits for 12 ticks",
            "[INFO  test_ticks] test-ticks: recovery tick 12/12 (badge 0x1)",
            "[INFO  test_client] test-client: reply label 0: waited 12 ticks, server saw VM 7",
        ],
    );
    assert!(!run.serial.contains("faulted"), "{}", run.serial);
    assert_eq!(
        run.status,
        Some(PASS_STATUS),
        "exit status; serial:\n{}",
        run.serial
    );
}

#[test]
fn a_device_frame_outside_device_memory_is_a_clear_error() {
    let run = boot("bad-device-test");
    assert!(
        !run.timed_out,
        "QEMU timed out (a hang); serial:\n{}",
        run.serial
    );
    assert_in_order(
        &run.serial,
        &["capvisor system: cannot instantiate the spec: timer_hpet: no free device memory at physical address 0x100000"],
    );
    assert!(!run.serial.contains("started PD"), "{}", run.serial);
    assert_eq!(
        run.status,
        Some(INSTANTIATION_FAILED),
        "serial:\n{}",
        run.serial
    );
}

/// A fault injected into the UART driver (a test-only build, dying on its third
/// console request): the supervisor restarts it, the caller whose request it died on
/// gets an error reply instead of blocking forever (its line is lost), and every PD
/// goes on printing through the restarted driver.
#[test]
fn the_supervisor_restarts_a_faulting_driver() {
    let run = boot("uart-restart-test");
    assert!(!run.timed_out, "QEMU timed out; serial:\n{}", run.serial);
    assert_in_order(
        &run.serial,
        &[
            "started PD uart (uart_faulty)",
            "[INFO  uart_pd] 16550 at 0x3f8 ready, serving the console",
            "[ERROR uart_pd] injected fault on console request 3",
            "supervisor: PD uart (uart_faulty) faulted: user exception 6",
            "supervisor: uart registers: rip 0x4",
            "supervisor: restarted PD uart (restart 1 of at most 3)",
            "[INFO  uart_pd] 16550 at 0x3f8 ready, serving the console",
            "[INFO  uart_pd] restarted (1), answering the interrupted call",
        ],
    );
    // Console lines of other PDs after the restart.
    let after = &run.serial[run.serial.find("restarted (1)").expect("restart line")..];
    assert_in_order(
        after,
        &[
            "[INFO  test_ticks] test-ticks: recovery tick 3/3 (badge 0x1)",
            "[INFO  test_client] test-client: reply label 0: waited 3 ticks, server saw VM 7",
            "[INFO  test_client] test-client: done, exiting QEMU",
        ],
    );
    assert_eq!(
        run.serial.matches("injected fault").count(),
        1,
        "{}",
        run.serial
    );
    assert_eq!(
        run.status,
        Some(PASS_STATUS),
        "exit status; serial:\n{}",
        run.serial
    );
}
