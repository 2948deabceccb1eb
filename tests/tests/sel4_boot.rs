//! Boots the real seL4 5.0.0 kernel (built by `make kernel` from the pinned sources)
//! with our root task (`make root-task`) under QEMU TCG, and checks from the serial
//! output and the isa-debug-exit status that the kernel booted, the root task ran its
//! real invocations, exchanged messages with its child thread, saw the kernel refuse
//! what it must refuse, and ended QEMU itself through its I/O-port capability.
//!
//! Two kernel configurations: `qemu-tcg` on `-cpu max`, and `any-cpu` on QEMU's default
//! CPU model (no FSGSBASE, no 1 GiB pages). Each has its own root task build, because
//! object-type numbers depend on the configuration.

use capvisor_tests::{artefact, assert_in_order, run_qemu, QemuRun};
use std::time::Duration;

/// Boot to exit takes about half a second; allow for a loaded machine.
const TIMEOUT: Duration = Duration::from_secs(60);
/// The root task writes 0x10 to isa-debug-exit on success: QEMU exits with 0x10 << 1 | 1.
const SUCCESS_STATUS: i32 = 0x10 << 1 | 1;

fn boot(kernel_dir: &str, root_task: &str, cpu: Option<&str>) -> QemuRun {
    let kernel = artefact(&format!("{kernel_dir}/kernel32.elf"), "kernel");
    let root_task = artefact(root_task, "root-task");
    let root_task = root_task.to_str().expect("a UTF-8 build path");
    let mut args = vec!["-m", "512", "-initrd", root_task];
    if let Some(model) = cpu {
        args.extend(["-cpu", model]);
    }
    run_qemu(&kernel, &args, TIMEOUT)
}

/// The untyped-cap count and free-slot count of the root task's boot-info line
/// ("... 98 untyped caps (...), 65375 free slots ...").
fn boot_info_counts(serial: &str) -> (u64, u64) {
    let line = serial
        .lines()
        .find(|l| l.contains("boot info: "))
        .unwrap_or_else(|| panic!("no boot info line\n{serial}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let before = |w: &str| -> u64 {
        let i = words
            .iter()
            .position(|x| *x == w)
            .unwrap_or_else(|| panic!("no {w:?} in {line:?}"));
        words[i - 1]
            .parse()
            .unwrap_or_else(|_| panic!("no number before {w:?} in {line:?}"))
    };
    (before("untyped"), before("free"))
}

fn check_run(run: &QemuRun, config: &str) {
    assert!(!run.timed_out, "QEMU timed out; serial:\n{}", run.serial);
    assert_in_order(
        &run.serial,
        &[
            // The kernel's own boot log.
            "Detected 1 boot module(s):",
            "ELF-loading userland images from boot modules:",
            "Booting all finished, dropped to user space",
            // The root task.
            &format!("capvisor root task: seL4 5.0.0 x86_64, kernel config {config}"),
            "boot info: node 0/1,",
            "retype into an occupied slot: refused with seL4_DeleteFirst",
            "CNode copy, move, delete and mint done",
            "map a frame without page tables: refused with seL4_FailedLookup",
            "wrote and read back 0x5eedcafe",
            "child thread started",
            // The IPC round trip with the child thread (badge 0x61 is the one the root
            // task minted into the child's endpoint cap).
            "child: running on its own stack, calling the root task",
            "root: request label 1 from badge 0x61: 6 * 7",
            "child: reply label 0 length 1: 6 * 7 = 42",
            "root: report label 2 from badge 0x61: child received 42",
            "root: IPC round trip ok, child signalled 0x4",
            // TCB_ReadRegisters: the child's stack pointer lies in its own stack.
            "child stopped at rip",
            "move the revoked badged endpoint: refused with seL4_FailedLookup",
            "assigned an ASID",
            // Out8/In8 on COM1 through a cap narrowed to its ports.
            "root: hello through the COM1 I/O-port cap",
            // IRQControl_GetIOAPIC + IRQHandler_SetNotification: a real interrupt.
            "root: COM1 interrupt delivered to its notification (word 0x10)",
            "read COM1 through the exit-port cap: refused with seL4_IllegalOperation",
            "capvisor root task: all checks passed",
        ],
    );
    let (untypeds, free_slots) = boot_info_counts(&run.serial);
    assert!(untypeds > 0, "the kernel gave the root task untyped memory");
    assert!(
        free_slots > 1000,
        "the root CNode (2^16 slots) is mostly free, got {free_slots}"
    );
    assert!(!run.serial.contains("panicked"), "{}", run.serial);
    assert_eq!(
        run.status,
        Some(SUCCESS_STATUS),
        "exit status; serial:\n{}",
        run.serial
    );
}

#[test]
fn root_task_runs_invocations_and_ipc_on_the_qemu_tcg_kernel() {
    let run = boot("kernel", "root-task.elf", Some("max"));
    check_run(&run, "qemu-tcg");
}

#[test]
fn root_task_runs_on_the_any_cpu_kernel_with_the_default_cpu_model() {
    let run = boot("kernel-any-cpu", "root-task-any-cpu.elf", None);
    check_run(&run, "any-cpu");
}
