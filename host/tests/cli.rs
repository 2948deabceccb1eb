//! The `capvisor` binary as a user runs it: output on stdout, the guest's status as
//! the process status, diagnostics on stderr, `--stats-json`. Needs `make guests`.

use std::path::PathBuf;
use std::process::Command;

fn guest(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../build/guests")
        .join(format!("{name}.elf"));
    assert!(
        p.exists(),
        "{} is missing: run `make guests` first",
        p.display()
    );
    p
}

fn capvisor(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_capvisor"))
        .args(args)
        .output()
        .expect("capvisor runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn run_prints_the_guest_output_and_exits_with_its_status() {
    let dir = std::env::temp_dir().join(format!("capvisor-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("stats.json");
    let hello = guest("hello");
    let (status, stdout, stderr) = capvisor(&[
        "run",
        "--mmu",
        "shadow",
        "--mem",
        "64M",
        "--stats-json",
        json.to_str().unwrap(),
        hello.to_str().unwrap(),
    ]);
    assert_eq!(status, 1, "stderr: {stderr}");
    assert_eq!(stdout, "hello from capvisor guest\nhello: PASS\n");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for key in ["instructions", "exits", "ipc_calls"] {
        assert!(doc[key].as_u64().unwrap() > 0, "{key}: {doc}");
    }
    let by_reason = doc["exits_by_reason"].as_object().unwrap();
    assert_eq!(
        by_reason.values().map(|v| v.as_u64().unwrap()).sum::<u64>(),
        doc["exits"].as_u64().unwrap()
    );
    assert!(by_reason["io_instruction"].as_u64().unwrap() > 0);
    for name in capvisor::ipc::STAT_NAMES {
        assert!(doc["mmu"][name].is_u64(), "mmu.{name} missing: {doc}");
    }
    assert!(doc["mmu"]["page_faults_fixed"].as_u64().unwrap() > 0);
    assert_eq!(doc["status"], 1);
    assert_eq!(doc["mmu_mode"], "shadow");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn options_that_cannot_work_are_refused_before_the_vm_starts() {
    let hello = guest("hello");
    let (status, stdout, stderr) = capvisor(&[
        "run",
        "--mmu",
        "shadow",
        "--cr0-wp",
        "guest-owned",
        hello.to_str().unwrap(),
    ]);
    assert_eq!(status, 3);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("CR0.WP cannot be guest-owned under shadow paging"),
        "{stderr}"
    );

    let (status, _, stderr) = capvisor(&["run", "--mmu", "nested", hello.to_str().unwrap()]);
    assert_eq!(status, 2, "clap usage error");
    assert!(stderr.contains("--mmu"), "{stderr}");

    let (status, _, stderr) = capvisor(&["run", "--mem", "lots", hello.to_str().unwrap()]);
    assert_eq!(status, 2);
    assert!(stderr.contains("not a size"), "{stderr}");

    let (status, _, stderr) = capvisor(&["run", "--pool", "64M", hello.to_str().unwrap()]);
    assert_eq!(status, 3);
    assert!(stderr.contains("cannot build the frame pool"), "{stderr}");

    let (status, _, stderr) = capvisor(&["run", "--mem", "1M", hello.to_str().unwrap()]);
    assert_eq!(status, 3);
    assert!(
        stderr.contains("guest RAM size 0x100000 is not supported"),
        "{stderr}"
    );
}

#[test]
fn bad_guests_end_with_a_diagnostic_and_a_failure_status() {
    // Not a multiboot kernel.
    let this = std::env::current_exe().unwrap();
    let (status, _, stderr) = capvisor(&["run", this.to_str().unwrap()]);
    assert_eq!(status, 3);
    assert!(stderr.contains("cannot load the guest"), "{stderr}");

    // A guest that triple-faults.
    let faults = guest("faults");
    let (status, stdout, stderr) =
        capvisor(&["run", "--append", "mode=triple", faults.to_str().unwrap()]);
    assert_eq!(status, 4);
    assert_eq!(stdout, "faults: triple fault next\n");
    assert!(
        stderr.contains("VM stopped: triple fault at RIP 0x"),
        "{stderr}"
    );

    // A guest stuck in a loop is stopped by the instruction budget.
    let kernexec = guest("kernexec");
    let (status, _, stderr) = capvisor(&[
        "run",
        "--max-instructions",
        "10000",
        kernexec.to_str().unwrap(),
    ]);
    assert_eq!(status, 4);
    assert!(
        stderr.contains("instruction budget of 10000 instructions exhausted"),
        "{stderr}"
    );
}

/// A frame pool too small for one instruction's working set makes the MMU evict what
/// the next fault needs: the VM must stop with a diagnostic, not livelock.
#[test]
fn a_thrashing_mmu_stops_the_vm_instead_of_hanging() {
    let kernexec = guest("kernexec");
    for pool in ["4K", "16K"] {
        let (status, _, stderr) = capvisor(&[
            "run",
            "--mmu",
            "shadow",
            "--pool",
            pool,
            kernexec.to_str().unwrap(),
        ]);
        assert_eq!(status, 4, "pool {pool}: {stderr}");
        assert!(
            stderr.contains("VM stopped: no progress") || stderr.contains("out of memory"),
            "pool {pool}: {stderr}"
        );
    }
}
