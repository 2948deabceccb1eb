//! Shared harness for the end-to-end tests: locating build outputs and running QEMU
//! with a timeout while capturing its serial output and isa-debug-exit status.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod capvisor;
pub mod guests;

/// The repository root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Where the Makefile puts built artefacts (`build/`), overridable with
/// `CAPVISOR_BUILD_DIR`.
pub fn build_dir() -> PathBuf {
    std::env::var_os("CAPVISOR_BUILD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("build"))
}

/// A required build artefact: panics with the make target to run if it is missing,
/// so a test never passes vacuously.
pub fn artefact(rel: &str, make_target: &str) -> PathBuf {
    let p = build_dir().join(rel);
    assert!(
        p.exists(),
        "{} is missing: run `make {make_target}` first (make test does)",
        p.display()
    );
    p
}

/// What a QEMU run produced.
#[derive(Debug)]
pub struct QemuRun {
    /// Everything the guest wrote to COM1.
    pub serial: String,
    /// QEMU's exit status: with isa-debug-exit, `(v << 1) | 1` for a guest write of v.
    /// `None` when the run was stopped (timeout or stop line) rather than exiting.
    pub status: Option<i32>,
    /// QEMU was killed after the timeout.
    pub timed_out: bool,
    /// QEMU was stopped because a line met the caller's stop condition.
    pub stopped: bool,
}

/// Boots `kernel` (a multiboot image) under `qemu-system-x86_64 -accel tcg` with COM1 on
/// stdio and isa-debug-exit at 0xf4, plus `extra` arguments (which may set `-m`), and
/// waits at most `timeout` for it to exit.
pub fn run_qemu(kernel: &Path, extra: &[&str], timeout: Duration) -> QemuRun {
    run_qemu_until(kernel, extra, timeout, |_| false)
}

/// [`run_qemu`], reading the serial output line by line and stopping QEMU as soon as
/// `stop` accepts a line: for runs that do not end by themselves (a PD left stopped,
/// a system that waits forever), so a test fails at once instead of at the timeout.
pub fn run_qemu_until(
    kernel: &Path,
    extra: &[&str],
    timeout: Duration,
    mut stop: impl FnMut(&str) -> bool,
) -> QemuRun {
    let mut cmd = Command::new("qemu-system-x86_64");
    // 256 MiB unless the caller sets the memory size itself.
    if !extra.contains(&"-m") {
        cmd.args(["-m", "256"]);
    }
    cmd.args([
        "-accel",
        "tcg",
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
    ])
    .args([
        "-serial",
        "stdio",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
    ])
    .arg("-kernel")
    .arg(kernel)
    .args(extra)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut child = cmd
        .spawn()
        .expect("qemu-system-x86_64 runs (make deps installs it)");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        // Bytes, not `lines()`: a guest may print anything, and invalid UTF-8 must
        // not end the reading.
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            if tx
                .send(String::from_utf8_lossy(&line).into_owned())
                .is_err()
            {
                break;
            }
            line.clear();
        }
    });
    let start = Instant::now();
    let mut serial = String::new();
    let mut stopped = false;
    while let Some(left) = timeout.checked_sub(start.elapsed()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                serial.push_str(&line);
                if stop(line.trim_end_matches('\n')) {
                    stopped = true;
                    break;
                }
            }
            // QEMU closed its stdout (it exited) or the time is up.
            Err(_) => break,
        }
    }
    let status = match child.try_wait() {
        Ok(Some(st)) => st.code(),
        _ if stopped || start.elapsed() >= timeout => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
        _ => child.wait().ok().and_then(|st| st.code()),
    };
    QemuRun {
        serial,
        status,
        timed_out: status.is_none() && !stopped,
        stopped,
    }
}

/// Asserts that `serial` contains each of `lines`, in this order.
pub fn assert_in_order(serial: &str, lines: &[&str]) {
    let mut rest = serial;
    for line in lines {
        match rest.find(line) {
            Some(at) => rest = &rest[at + line.len()..],
            None => panic!("missing (or out of order): {line:?}\n--- serial ---\n{serial}"),
        }
    }
}
