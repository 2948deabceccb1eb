//! Shared harness for the end-to-end tests: locating build outputs and running QEMU
//! with a timeout while capturing its serial output and isa-debug-exit status.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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
    pub status: Option<i32>,
    /// QEMU was killed after the timeout.
    pub timed_out: bool,
}

/// Boots `kernel` (a multiboot image) under `qemu-system-x86_64 -accel tcg` with COM1 on
/// stdio and isa-debug-exit at 0xf4, plus `extra` arguments (which may set `-m`), and
/// waits at most `timeout`.
pub fn run_qemu(kernel: &Path, extra: &[&str], timeout: Duration) -> QemuRun {
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
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("qemu-system-x86_64 runs (make deps installs it)");
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait on qemu") {
            break st.code();
        }
        if start.elapsed() > timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait().ok().and_then(|s| s.code());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let serial = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    QemuRun {
        serial,
        status,
        timed_out,
    }
}
