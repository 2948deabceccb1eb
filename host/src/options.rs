//! The command line: `capvisor run [OPTIONS] GUEST`. Option names are fixed by the
//! issues (tests and docs use them).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "capvisor",
    version,
    about = "A hypervisor service hosted on seL4, run on the host runtime"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Boot a multiboot guest kernel in one VM (one mmu-server and one vmm-server,
    /// each on its own thread), stream its COM1 output to stdout, and exit with the
    /// guest's isa-debug-exit status.
    Run(RunArgs),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum MmuArg {
    /// Two-dimensional paging (EPT).
    Tdp,
    /// Shadow paging.
    Shadow,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Cr0WpArg {
    /// WP toggles do not exit (TDP only).
    GuestOwned,
    /// Every WP change exits to the vmm-server.
    Intercept,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum NxHugePagesArg {
    Auto,
    On,
    Off,
    Force,
    Never,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum GrantArg {
    /// The right to disable the NX-huge-page mitigation for this VM.
    NxHugePageControl,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The guest: a multiboot kernel (ELF32, or any image with multiboot load addresses).
    pub guest: PathBuf,
    /// How guest-physical memory is translated.
    #[arg(long, value_enum, default_value = "tdp")]
    pub mmu: MmuArg,
    /// Who owns CR0.WP (default: guest-owned under TDP; shadow paging always intercepts).
    #[arg(long = "cr0-wp", value_enum)]
    pub cr0_wp: Option<Cr0WpArg>,
    /// Keep MMU roots cached across role changes (off: every role change unloads every
    /// root, the legacy behaviour).
    #[arg(long = "root-reuse", value_enum, default_value = "on")]
    pub root_reuse: OnOff,
    /// Guest RAM, e.g. 128M, 1G, 65536K or a byte count.
    #[arg(long, default_value = "128M", value_parser = parse_size)]
    pub mem: u64,
    /// Write statistics as JSON to this file when the VM ends.
    #[arg(long = "stats-json")]
    pub stats_json: Option<PathBuf>,
    /// The multiboot command line (after the kernel's name, as QEMU's -append).
    #[arg(long, default_value = "")]
    pub append: String,
    /// The system-wide NX-huge-page mitigation mode.
    #[arg(long = "nx-huge-pages", value_enum, default_value = "auto")]
    pub nx_huge_pages: NxHugePagesArg,
    /// NX-huge-page recovery: each period zaps ceil(splits / ratio) split pages so
    /// they can be huge again; 0 disables recovery (default: the mmu-server's, 60).
    #[arg(long = "nx-recovery-ratio")]
    pub nx_recovery_ratio: Option<u32>,
    /// NX-huge-page recovery period in milliseconds (default, or 0: derived from the
    /// ratio, 60 s for ratio 60).
    #[arg(long = "nx-recovery-period-ms")]
    pub nx_recovery_period_ms: Option<u64>,
    /// Capabilities granted to the VM.
    #[arg(long, value_enum)]
    pub grant: Vec<GrantArg>,
    /// Make the VM ask (through the NxHugePageControl capability) to disable the
    /// NX-huge-page mitigation before its vCPU exists.
    #[arg(long = "disable-nx-huge-pages")]
    pub disable_nx_huge_pages: bool,
    /// The `flags` of the `--disable-nx-huge-pages` invocation (only 0 is valid: for
    /// testing the capability's checks).
    #[arg(
        long = "nx-control-flags",
        default_value_t = 0,
        requires = "disable_nx_huge_pages"
    )]
    pub nx_control_flags: u32,
    /// The argument of the `--disable-nx-huge-pages` invocation (only 0 is valid).
    #[arg(
        long = "nx-control-arg",
        default_value_t = 0,
        requires = "disable_nx_huge_pages"
    )]
    pub nx_control_arg: u64,
    /// Make the `--disable-nx-huge-pages` invocation once the vCPU exists instead of
    /// before (it is then refused: for testing the capability's checks).
    #[arg(long = "nx-control-after-vcpu", requires = "disable_nx_huge_pages")]
    pub nx_control_after_vcpu: bool,
    /// Record at every checkpoint how the MMU maps this address (a gpa under TDP, a
    /// linear address under shadow paging), in `--stats-json`; up to 4, hex or decimal.
    #[arg(long = "watch", value_parser = parse_addr)]
    pub watch: Vec<u64>,
    /// Stop the VM with a diagnostic after this many guest instructions.
    #[arg(long = "max-instructions")]
    pub max_instructions: Option<u64>,
    /// Print every VM exit (and the mmu-server's answer to faults) to stderr.
    #[arg(long = "trace-exits")]
    pub trace_exits: bool,
    /// With every traced exit, print the vCPU's registers (the hardware view).
    #[arg(long = "trace-state")]
    pub trace_state: bool,
    /// Size of the mmu-server's page-table frame pool.
    #[arg(long = "pool", default_value = "16M", value_parser = parse_size)]
    pub pool: u64,
}

/// Parses an address: `0x4000000` or `67108864`.
pub fn parse_addr(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => t.replace('_', "").parse(),
    };
    parsed.map_err(|_| format!("`{s}` is not an address (examples: 0x4000000, 4096)"))
}

/// Parses `128M`, `1G`, `64K`, `4096` (binary units, optional trailing `B`/`iB`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: 128M, 1G, 65536K)"))?;
    n.checked_mul(1 << shift)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("`{s}` is not a usable size"))
}
