//! Conformance of the test guests under `qemu-system-x86_64 -kernel`: every case of
//! `capvisor_tests::guests` must print exactly its lines and exit with its status, on
//! QEMU's default CPU (qemu64: no PCID, no 1 GiB pages) and on `-cpu max`. These are
//! the reference runs `capvisor run` is compared with.

use capvisor_tests::guests::{self, GuestCase, GUESTS, IMAGES};
use capvisor_tests::run_qemu;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

/// The CPU models every case runs on: QEMU's default and the one with every feature.
const CPUS: [Option<&str>; 2] = [None, Some("max")];

fn run_case(case: &GuestCase) {
    let image = case.image();
    for cpu in CPUS {
        let mut args = case.qemu_args();
        if let Some(model) = cpu {
            args.extend(["-cpu".to_string(), model.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = run_qemu(&image, &args, TIMEOUT);
        let cpu_name = cpu.unwrap_or("default");
        assert!(
            !run.timed_out,
            "{} on cpu {cpu_name} timed out; serial so far:\n{}",
            case.name, run.serial
        );
        if let Err(diff) = case.check_serial(&run.serial) {
            panic!("on cpu {cpu_name}: {diff}");
        }
        assert_eq!(
            run.status,
            Some(case.exit_status()),
            "{} on cpu {cpu_name}: wrong exit status; serial:\n{}",
            case.name,
            run.serial
        );
    }
}

#[test]
fn hello_prints_and_exits_0() {
    run_case(&guests::case("hello"));
}

#[test]
fn kernexec_default_options_pass() {
    run_case(&guests::case("kernexec"));
}

#[test]
fn kernexec_takes_iterations_and_working_set_from_the_command_line() {
    run_case(&guests::case("kernexec-iters-ws"));
}

#[test]
fn kernexec_notices_a_kdata_write_that_did_not_land() {
    let case = guests::case("kernexec-corrupt");
    assert_ne!(case.exit_value, 0);
    assert!(case
        .lines
        .last()
        .is_some_and(|l| l.starts_with("kernexec: FAIL")));
    run_case(&case);
}

#[test]
fn kernexec_refuses_a_malformed_option() {
    run_case(&guests::case("kernexec-bad-option"));
}

#[test]
fn ptwrite_page_table_edits_take_effect() {
    run_case(&guests::case("ptwrite"));
}

#[test]
fn hugeexec_reads_and_executes_huge_pages() {
    run_case(&guests::case("hugeexec"));
}

#[test]
fn every_guest_has_a_passing_case() {
    let cases = guests::cases();
    for g in GUESTS {
        assert!(
            cases.iter().any(|c| c.guest == g
                && c.exit_value == 0
                && c.lines.last() == Some(&format!("{g}: PASS"))),
            "no passing case for {g}"
        );
    }
}

/// What a multiboot loader (QEMU's, and capvisor's vmm-server) requires of the image:
/// ELF32, and the header (magic, flags, checksum) 4-byte aligned in the first 8 KiB,
/// asking for page alignment and memory info but not the a.out kludge.
#[test]
fn images_are_elf32_with_a_multiboot_header() {
    for g in IMAGES {
        let bytes = std::fs::read(guests::guest_image(g)).expect("read guest image");
        assert_eq!(&bytes[..4], b"\x7fELF", "{g}: not ELF");
        assert_eq!(bytes[4], 1, "{g}: not ELFCLASS32");
        let word =
            |off: usize| u32::from_le_bytes(bytes[off..off + 4].try_into().expect("4 bytes"));
        let header = (0..8192.min(bytes.len()) - 12)
            .step_by(4)
            .find(|&off| word(off) == 0x1BAD_B002)
            .unwrap_or_else(|| panic!("{g}: no multiboot header in the first 8 KiB"));
        let flags = word(header + 4);
        assert_eq!(flags, 0x3, "{g}: multiboot flags");
        assert_eq!(
            word(header)
                .wrapping_add(flags)
                .wrapping_add(word(header + 8)),
            0,
            "{g}: checksum"
        );
    }
}

/// The expected kernexec checksums really depend on the options (so a guest that
/// ignored its command line could not match both cases).
#[test]
fn kernexec_expectations_depend_on_the_options() {
    assert_ne!(
        guests::kernexec_kdata_checksum(100),
        guests::kernexec_kdata_checksum(500)
    );
    assert_ne!(
        guests::kernexec_ws_checksum(100, 16),
        guests::kernexec_ws_checksum(100, 40)
    );
}

/// The `faults` guest ends as a real CPU would: a triple fault shuts QEMU down, SSE
/// without CR4.OSFXSR and UD2 raise #UD, which the runtime reports with its RIP.
#[test]
fn faults_guest_ends_as_a_real_cpu_would() {
    for case in guests::fault_cases() {
        let run = run_qemu(&case.image(), &["-append", case.cmdline], TIMEOUT);
        assert!(
            !run.timed_out,
            "{} timed out; serial so far:\n{}",
            case.name, run.serial
        );
        let got: Vec<&str> = run.serial.lines().collect();
        let n = case.lines.len();
        assert_eq!(
            got[..n.min(got.len())],
            case.lines[..],
            "{}: serial:\n{}",
            case.name,
            run.serial
        );
        match case.qemu_trap_line_prefix {
            Some(prefix) => {
                assert_eq!(got.len(), n + 1, "{}: serial:\n{}", case.name, run.serial);
                assert!(
                    got[n].starts_with(prefix),
                    "{}: serial:\n{}",
                    case.name,
                    run.serial
                );
            }
            None => assert_eq!(got.len(), n, "{}: serial:\n{}", case.name, run.serial),
        }
        assert_eq!(
            run.status,
            Some(case.qemu_status),
            "{}: serial:\n{}",
            case.name,
            run.serial
        );
    }
}

/// capvisor's software CPU has no SSE, x87 or AVX and none of the optional instructions
/// below: the guests' code (disassembled as 64-bit) must not use them. Only `faults`
/// carries one XORPS, on purpose.
#[test]
fn guest_code_has_no_sse_x87_avx_or_optional_instructions() {
    let stray = |line: &str| {
        let Some(insn) = line.split('\t').nth(2) else {
            return false;
        };
        let mnemonic = insn.split_whitespace().next().unwrap_or("");
        let registers = [
            "xmm", "ymm", "zmm", "st(", "mm0", "mm1", "mm2", "mm3", "mm4", "mm5", "mm6", "mm7",
        ];
        let optional = [
            "fxsave", "fxrstor", "xsave", "xrstor", "rdrand", "rdseed", "ldmxcsr", "stmxcsr",
            "rdpid",
        ];
        registers.iter().any(|r| insn.contains(r))
            || optional.iter().any(|o| mnemonic.starts_with(o))
            || (mnemonic.starts_with('f') && mnemonic != "fs")
            || (mnemonic.starts_with('v') && mnemonic.len() > 4)
    };
    for g in IMAGES {
        let out = std::process::Command::new("objdump")
            .args(["-d", "-M", "intel", "-m", "i386:x86-64"])
            .arg(guests::guest_image(g))
            .output()
            .expect("objdump runs (make deps installs binutils)");
        assert!(out.status.success(), "objdump failed on {g}");
        let text = String::from_utf8_lossy(&out.stdout);
        let found: Vec<&str> = text.lines().filter(|l| stray(l)).collect();
        let allowed: &[&str] = if g == "faults" {
            &["xorps  xmm0,xmm0"]
        } else {
            &[]
        };
        let unexpected: Vec<&&str> = found
            .iter()
            .filter(|l| !allowed.iter().any(|a| l.ends_with(a)))
            .collect();
        assert!(
            unexpected.is_empty(),
            "{g} uses instructions capvisor's CPU lacks:\n{unexpected:#?}"
        );
        assert_eq!(found.len(), allowed.len(), "{g}: {found:#?}");
    }
}
