//! Running a guest on capvisor's host runtime in-process, as `capvisor run` does.

use capvisor::runtime::{self, CapturingHost, RunConfig, RunResult};
use capvisor::vmm_server::VmConfig;
use std::path::Path;

/// `capvisor run`'s defaults (128 MiB of RAM, a 16 MiB pool) for the image at `image`,
/// read now, with the command line `append` and the VM settings `vm`; the image's path
/// is the kernel's name on the multiboot command line, as QEMU's `-kernel` makes it.
pub fn run_config(image: &Path, append: &str, vm: VmConfig) -> RunConfig {
    let bytes = std::fs::read(image)
        .unwrap_or_else(|e| panic!("cannot read guest image {}: {e}", image.display()));
    RunConfig {
        append: append.to_string(),
        ..RunConfig::new(bytes, image.to_string_lossy().into_owned(), vm)
    }
}

/// Runs `cfg` to the end, capturing COM1; panics if the VM could not start.
pub fn run(cfg: &RunConfig) -> (RunResult, CapturingHost) {
    let mut host = CapturingHost::default();
    let result =
        runtime::run(cfg, &mut host).unwrap_or_else(|e| panic!("the VM did not start: {e}"));
    (result, host)
}
