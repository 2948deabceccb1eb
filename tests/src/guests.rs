//! The test guests' expected behaviour, as data: which guest, which command line, the
//! exact serial lines and the isa-debug-exit value. The QEMU conformance test runs
//! every case; the capvisor end-to-end tests can run the same cases under
//! `capvisor run` and compare.
//!
//! Lines that depend on a computation (kernexec's checksums) are derived here from the
//! guest's documented formulas, independently of the guest's code.

use crate::artefact;
use std::path::PathBuf;

/// One guest run and what it must print.
#[derive(Clone, Debug)]
pub struct GuestCase {
    /// A name for test output, e.g. "kernexec-corrupt".
    pub name: &'static str,
    /// The guest image: `build/guests/<guest>.elf`.
    pub guest: &'static str,
    /// Multiboot command line options (QEMU: `-append`); empty for none.
    pub cmdline: String,
    /// Exactly the lines the guest writes to COM1.
    pub lines: Vec<String>,
    /// The value the guest writes to isa-debug-exit (0 = success).
    pub exit_value: u32,
}

impl GuestCase {
    /// The status QEMU (and `capvisor run`) exits with: `(v << 1) | 1`.
    pub fn exit_status(&self) -> i32 {
        ((self.exit_value << 1) | 1) as i32
    }

    /// The built image (panics with the make target when missing).
    pub fn image(&self) -> PathBuf {
        guest_image(self.guest)
    }

    /// QEMU arguments that pass the command line.
    pub fn qemu_args(&self) -> Vec<String> {
        if self.cmdline.is_empty() {
            Vec::new()
        } else {
            vec!["-append".to_string(), self.cmdline.clone()]
        }
    }

    /// Compares `serial` with the expected lines exactly; the error shows both.
    pub fn check_serial(&self, serial: &str) -> Result<(), String> {
        let got: Vec<&str> = serial.lines().map(|l| l.trim_end_matches('\r')).collect();
        let want: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        if got == want {
            Ok(())
        } else {
            Err(format!(
                "{}: serial output differs\n--- expected\n{}\n--- got\n{}",
                self.name,
                want.join("\n"),
                got.join("\n")
            ))
        }
    }
}

/// The conformance guests: each must behave identically under QEMU and capvisor.
pub const GUESTS: [&str; 4] = ["hello", "kernexec", "ptwrite", "hugeexec"];

/// Every image `make guests` builds: the conformance guests and `faults`.
pub const IMAGES: [&str; 5] = ["hello", "kernexec", "ptwrite", "hugeexec", "faults"];

/// `build/guests/<guest>.elf`.
pub fn guest_image(guest: &str) -> PathBuf {
    artefact(&format!("guests/{guest}.elf"), "guests")
}

fn lines(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The QEMU exit value of a guest whose check failed (rt's `EXIT_FAILURE`).
pub const EXIT_FAILURE: u32 = 1;

/// All cases: every guest's success path and the failure paths that must be reachable.
pub fn cases() -> Vec<GuestCase> {
    vec![
        hello(),
        kernexec("kernexec", "", 100, 16),
        kernexec("kernexec-iters-ws", "iters=500 ws=40", 500, 40),
        kernexec_corrupt(),
        kernexec_bad_option(),
        ptwrite(),
        hugeexec(),
    ]
}

/// The case named `name`.
pub fn case(name: &str) -> GuestCase {
    cases()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no guest case named {name}"))
}

pub fn hello() -> GuestCase {
    GuestCase {
        name: "hello",
        guest: "hello",
        cmdline: String::new(),
        lines: lines(&["hello from capvisor guest", "hello: PASS"]),
        exit_value: 0,
    }
}

const KERNEXEC_PROCESSES: u64 = 3;
const KDATA_WORDS: u64 = 512;

/// kernexec's `fold`: `(acc rotl 5 ^ word) * 0x100000001b3`.
fn fold(acc: u64, word: u64) -> u64 {
    (acc.rotate_left(5) ^ word).wrapping_mul(0x0000_0100_0000_01B3)
}

/// `.kro` after `iters` calls per process: word k starts at k * 0x0101010101010101;
/// process p's call i adds `(p + 1) * 0x9E3779B97F4A7C15 ^ i * 0xC2B2AE3D27D4EB4F` to
/// word `(7p + 13i) % 512`.
pub fn kernexec_kdata_checksum(iters: u64) -> u64 {
    let mut kdata: Vec<u64> = (0..KDATA_WORDS)
        .map(|k| k.wrapping_mul(0x0101_0101_0101_0101))
        .collect();
    for p in 0..KERNEXEC_PROCESSES {
        for i in 0..iters {
            let slot = ((p * 7 + i * 13) % KDATA_WORDS) as usize;
            let delta =
                (p + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
            kdata[slot] = kdata[slot].wrapping_add(delta);
        }
    }
    kdata.iter().fold(0, |acc, &w| fold(acc, w))
}

/// Working set page j, word p holds sum over i < iters of (i + j), folded page by page.
pub fn kernexec_ws_checksum(iters: u64, ws: u64) -> u64 {
    let mut acc = 0;
    for j in 0..ws {
        let word = (0..iters).fold(0u64, |s, i| s.wrapping_add(i + j));
        for _ in 0..KERNEXEC_PROCESSES {
            acc = fold(acc, word);
        }
    }
    acc
}

const KERNEXEC_RO_LINES: [&str; 2] = [
    "kernexec: kernel text is read-only: #PF error 0x3",
    "kernexec: kdata is read-only while CR0.WP=1: #PF error 0x3",
];

/// kernexec with `iters` calls per process and a working set of `ws` pages.
pub fn kernexec(name: &'static str, cmdline: &str, iters: u64, ws: u64) -> GuestCase {
    let mut l = lines(&KERNEXEC_RO_LINES);
    l.push(format!(
        "kernexec: {KERNEXEC_PROCESSES} processes x {iters} system calls, working set {ws} pages"
    ));
    l.push(format!(
        "kernexec: every kdata write landed, {} open/close-kernel pairs",
        KERNEXEC_PROCESSES * iters
    ));
    l.push(format!(
        "kernexec: kdata checksum {:#018x}",
        kernexec_kdata_checksum(iters)
    ));
    l.push(format!(
        "kernexec: working set checksum {:#018x}",
        kernexec_ws_checksum(iters, ws)
    ));
    l.push("kernexec: PASS".to_string());
    GuestCase {
        name,
        guest: "kernexec",
        cmdline: cmdline.to_string(),
        lines: l,
        exit_value: 0,
    }
}

/// `corrupt=1`: the first call writes `.kro` without opening the kernel; the write
/// faults, does not land, and the guest must notice.
pub fn kernexec_corrupt() -> GuestCase {
    let mut l = lines(&KERNEXEC_RO_LINES);
    l.push(
        "kernexec: FAIL: kdata write by process 0 at iteration 0 did not land (slot 0)".to_string(),
    );
    GuestCase {
        name: "kernexec-corrupt",
        guest: "kernexec",
        cmdline: "corrupt=1".to_string(),
        lines: l,
        exit_value: EXIT_FAILURE,
    }
}

/// A malformed option is refused before anything runs.
pub fn kernexec_bad_option() -> GuestCase {
    GuestCase {
        name: "kernexec-bad-option",
        guest: "kernexec",
        cmdline: "iters=many".to_string(),
        lines: lines(&["kernexec: FAIL: bad command line: iters must be 1..=1000000"]),
        exit_value: EXIT_FAILURE,
    }
}

pub fn ptwrite() -> GuestCase {
    GuestCase {
        name: "ptwrite",
        guest: "ptwrite",
        cmdline: String::new(),
        lines: lines(&[
            "ptwrite: map: the new frame is visible, A set on read, D set on write",
            "ptwrite: remap: the other frame is visible after INVLPG",
            "ptwrite: read-only: a write faults with #PF error 0x3, reads still work",
            "ptwrite: read-write again: a write lands",
            "ptwrite: unmap: a read faults with #PF error 0x0, a write with 0x2",
            "ptwrite: user/supervisor: a user read of a supervisor page faults with #PF error 0x5",
            "ptwrite: user/supervisor: a user read of a user page sees the frame",
            "ptwrite: user/supervisor: a user write of a read-only user page faults with #PF error 0x7",
            "ptwrite: user/supervisor: a user write of a writable user page lands",
            "ptwrite: table swap: a new page table under a live PDE is used after INVLPG",
            "ptwrite: 64 mappings in one table: mapped, rotated and unmapped",
            "ptwrite: 2M page: replaced by a 4K table with one page remapped",
            "ptwrite: PASS",
        ]),
        exit_value: 0,
    }
}

/// hugeexec's huge pages hp1..hp3 (guest-physical = virtual), for the NX-huge-page
/// tests; checkpoints 1..=7 follow the steps of MMU_REFERENCE.md section 5.
pub const HUGEEXEC_HP_GPAS: [u64; 3] = [0x400_0000, 0x420_0000, 0x440_0000];
/// The wait hint hugeexec gives before checkpoint 6, in milliseconds.
pub const HUGEEXEC_WAIT_MS: u32 = 2000;

pub fn hugeexec() -> GuestCase {
    GuestCase {
        name: "hugeexec",
        guest: "hugeexec",
        cmdline: String::new(),
        lines: lines(&[
            "hugeexec: hp1, hp2, hp3 mapped with 2M pages at 0x4000000, 0x4200000, 0x4400000",
            "hugeexec: step 1: read hp1: ok",
            "hugeexec: step 2: read hp2: ok",
            "hugeexec: step 3: execute hp1: ok",
            "hugeexec: step 4: execute hp3: ok",
            "hugeexec: step 5: read hp1: ok",
            "hugeexec: step 6: wait: ok",
            "hugeexec: step 7: read hp3: ok",
            "hugeexec: PASS",
        ]),
        exit_value: 0,
    }
}

/// A `faults` run: a guest that ends badly on purpose. Under QEMU it ends as a real CPU
/// would; under capvisor the VM must stop with a clear diagnostic instead (a triple
/// fault, or an instruction the software CPU does not implement), so only the lines
/// before the end are common to both.
#[derive(Clone, Debug)]
pub struct FaultCase {
    pub name: &'static str,
    pub cmdline: &'static str,
    /// What the guest prints before it ends.
    pub lines: Vec<String>,
    /// Under QEMU: the start of the line the runtime prints after these, if any.
    pub qemu_trap_line_prefix: Option<&'static str>,
    /// Under QEMU (`-no-reboot`): the exit status.
    pub qemu_status: i32,
}

impl FaultCase {
    pub fn image(&self) -> PathBuf {
        guest_image("faults")
    }
}

/// The rt runtime's report of an unexpected #UD.
pub const UNEXPECTED_UD_PREFIX: &str = "rt: unexpected exception vector=6 (#UD) rip=";

pub fn fault_cases() -> Vec<FaultCase> {
    vec![
        FaultCase {
            name: "faults-triple",
            cmdline: "mode=triple",
            lines: lines(&["faults: triple fault next"]),
            qemu_trap_line_prefix: None,
            // -no-reboot turns the shutdown into a normal QEMU exit.
            qemu_status: 0,
        },
        FaultCase {
            name: "faults-sse",
            cmdline: "mode=sse",
            lines: lines(&["faults: executing an SSE instruction"]),
            qemu_trap_line_prefix: Some(UNEXPECTED_UD_PREFIX),
            qemu_status: 5,
        },
        FaultCase {
            name: "faults-ud",
            cmdline: "mode=ud",
            lines: lines(&["faults: executing UD2"]),
            qemu_trap_line_prefix: Some(UNEXPECTED_UD_PREFIX),
            qemu_status: 5,
        },
    ]
}
