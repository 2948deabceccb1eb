//! system.toml as written: every key optional, unknown keys rejected. Values that need
//! a field-naming error (sizes, modes, ranges) stay strings or wide integers here and
//! are checked in `system`.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSystem {
    pub nx_huge_pages: Option<RawNx>,
    pub mmu_server: Option<RawMmuServer>,
    pub vmm_server: Option<RawPd>,
    pub drivers: Option<RawDrivers>,
    #[serde(default)]
    pub vm: Vec<RawVm>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNx {
    pub mode: Option<String>,
    pub recovery_ratio: Option<i64>,
    pub recovery_period_ms: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPd {
    pub elf: Option<String>,
    pub image_size: Option<String>,
    pub stack_size: Option<String>,
    pub priority: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMmuServer {
    pub frame_pool: Option<String>,
    pub elf: Option<String>,
    pub image_size: Option<String>,
    pub stack_size: Option<String>,
    pub priority: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDrivers {
    pub uart: Option<RawDevice>,
    pub timer: Option<RawDevice>,
}

/// A driver: its device and its PD.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevice {
    pub kind: Option<String>,
    /// `[first, last]`, inclusive.
    pub ports: Option<Vec<i64>>,
    pub irq: Option<i64>,
    pub paddr: Option<i64>,
    pub elf: Option<String>,
    pub image_size: Option<String>,
    pub stack_size: Option<String>,
    pub priority: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVm {
    pub name: Option<String>,
    pub id: Option<i64>,
    pub memory: Option<String>,
    pub mmu: Option<String>,
    pub image: Option<String>,
    pub cmdline: Option<String>,
    pub cr0_wp: Option<String>,
    pub root_reuse: Option<bool>,
    #[serde(default)]
    pub caps: Vec<String>,
    pub debug_exit: Option<bool>,
    pub disable_nx_huge_pages: Option<bool>,
    pub priority: Option<i64>,
}
