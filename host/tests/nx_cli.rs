//! `--disable-nx-huge-pages` as a user runs it: every refusal of the `NxHugePageControl`
//! invocation reaches stderr as a message saying why, and the VM goes on (hugeexec
//! still passes, with the mitigation). `--watch` puts per-checkpoint mappings in
//! `--stats-json`. Needs `make guests`.

use std::path::PathBuf;
use std::process::Command;

fn hugeexec() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../build/guests/hugeexec.elf");
    assert!(
        p.exists(),
        "{} is missing: run `make guests` first",
        p.display()
    );
    p.to_string_lossy().into_owned()
}

/// Runs `capvisor run hugeexec <args>` and returns (status, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let image = hugeexec();
    let out = Command::new(env!("CARGO_BIN_EXE_capvisor"))
        .arg("run")
        .args(args)
        .arg(&image)
        .output()
        .expect("capvisor runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The VM went on: hugeexec passed (debug-exit 0 is status 1).
fn passed(r: &(i32, String, String)) {
    assert_eq!(r.0, 1, "stdout: {}\nstderr: {}", r.1, r.2);
    assert!(r.1.contains("hugeexec: PASS"), "{}", r.1);
}

const REFUSED: &str = "capvisor: cannot disable NX huge pages: ";
const GOES_ON: &str = "; the VM runs with the mitigation";

#[test]
fn not_granted_is_refused_with_a_message() {
    for mmu in ["tdp", "shadow"] {
        let r = run(&["--mmu", mmu, "--disable-nx-huge-pages"]);
        passed(&r);
        assert!(
            r.2.contains(&format!(
                "{REFUSED}the VM does not hold the NxHugePageControl capability (grant it \
                 with --grant nx-huge-page-control){GOES_ON}"
            )),
            "{mmu}: {}",
            r.2
        );
    }
}

#[test]
fn after_the_vcpu_exists_is_refused_with_a_message() {
    let r = run(&[
        "--grant",
        "nx-huge-page-control",
        "--disable-nx-huge-pages",
        "--nx-control-after-vcpu",
    ]);
    passed(&r);
    assert!(
        r.2.contains(&format!(
            "{REFUSED}the VM's vCPU already exists (the capability must be invoked before \
             it is created){GOES_ON}"
        )),
        "{}",
        r.2
    );
}

#[test]
fn non_zero_flags_or_argument_are_refused_with_a_message() {
    // Flags come first, whether the capability is held or not.
    for grant in [true, false] {
        let mut args = vec!["--disable-nx-huge-pages", "--nx-control-flags", "4"];
        if grant {
            args.extend(["--grant", "nx-huge-page-control"]);
        }
        let r = run(&args);
        passed(&r);
        assert!(
            r.2.contains(&format!(
                "{REFUSED}non-zero flags (0x4) are invalid{GOES_ON}"
            )),
            "granted {grant}: {}",
            r.2
        );
    }
    // The argument only once the capability is held (MMU_REFERENCE's order).
    let r = run(&[
        "--grant",
        "nx-huge-page-control",
        "--disable-nx-huge-pages",
        "--nx-control-arg",
        "1",
    ]);
    passed(&r);
    assert!(
        r.2.contains(&format!(
            "{REFUSED}a non-zero argument (0x1) is invalid{GOES_ON}"
        )),
        "{}",
        r.2
    );
    let r = run(&["--disable-nx-huge-pages", "--nx-control-arg", "1"]);
    assert!(
        r.2.contains("does not hold the NxHugePageControl capability"),
        "{}",
        r.2
    );
}

#[test]
fn granted_and_asked_disables_it_and_says_so() {
    let dir = std::env::temp_dir().join(format!("capvisor-nx-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("stats.json");
    let r = run(&[
        "--grant",
        "nx-huge-page-control",
        "--disable-nx-huge-pages",
        "--watch",
        "0x4000000",
        "--stats-json",
        json.to_str().unwrap(),
    ]);
    passed(&r);
    assert!(
        r.2.contains("capvisor: NX huge pages disabled for this VM"),
        "{}",
        r.2
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    // Step 3 executed hp1: without the mitigation it is still one executable 2M page.
    let m = &doc["checkpoints"][2]["mappings"][0];
    assert_eq!(m["addr"], "0x4000000");
    assert_eq!(m["level"], 2);
    assert_eq!(m["exec"], true);
    assert_eq!(m["nx_split"], false);
    let r = run(&[
        "--grant",
        "nx-huge-page-control",
        "--disable-nx-huge-pages",
        "--nx-huge-pages",
        "off",
    ]);
    passed(&r);
    assert!(
        r.2.contains("no effect: the system mode is already off"),
        "{}",
        r.2
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn watch_takes_at_most_four_addresses() {
    let r = run(&[
        "--watch", "1", "--watch", "2", "--watch", "3", "--watch", "4", "--watch", "5",
    ]);
    assert_eq!(r.0, 3, "{}", r.2);
    assert!(r.2.contains("at most 4 --watch addresses"), "{}", r.2);
    let r = run(&["--watch", "0xfoo"]);
    assert_eq!(r.0, 2, "a usage error: {}", r.2);
}
