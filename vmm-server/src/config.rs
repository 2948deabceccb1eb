//! Per-VM settings, fixed before the vCPU exists.

pub use ipc::MmuMode;

/// Who owns CR0.WP (MMU_REFERENCE.md section 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cr0WpPolicy {
    /// WP is a guest-owned bit (CR0 guest/host mask clear): WP toggles never exit, and
    /// the mmu-server learns the live value with the next request that needs it. Only
    /// possible with TDP: under shadow paging the MMU builds SPTEs from WP.
    GuestOwned,
    /// WP is host-owned: every change exits and is forwarded as a `CrWrite`.
    Intercept,
}

/// Why a configuration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `cr0_wp = guest-owned` with shadow paging.
    GuestOwnedWpNeedsTdp,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfigError::GuestOwnedWpNeedsTdp => write!(
                f,
                "CR0.WP cannot be guest-owned under shadow paging (the shadow MMU builds its \
                 entries from WP, so every WP change must exit); use --cr0-wp intercept or --mmu tdp"
            ),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmConfig {
    pub mmu_mode: MmuMode,
    pub cr0_wp: Cr0WpPolicy,
    /// The mmu-server's RootReuse policy (on by default; off = the legacy behaviour
    /// where every role change unloads every root).
    pub root_reuse: bool,
    /// Stop the VM after this many guest instructions (`None`: no limit).
    pub max_instructions: Option<u64>,
    /// Ask the mmu-server, through the NxHugePageControl capability, to disable the
    /// NX-huge-page mitigation for this VM before the vCPU exists.
    pub disable_nx_huge_pages: bool,
    /// The `flags` and `arg` of that invocation (0 and 0 are the only valid values;
    /// others exercise the capability's error checks).
    pub nx_disable_flags: u32,
    pub nx_disable_arg: u64,
    /// Addresses whose mapping the vmm-server asks the mmu-server about (`GetMapping`:
    /// a gpa under TDP, a linear address under shadow paging) at every checkpoint, so
    /// that a test can count the huge and split mappings of exactly the pages it
    /// cares about.
    pub watch: [Option<u64>; MAX_WATCHED],
}

/// Most addresses [`VmConfig::watch`] holds.
pub const MAX_WATCHED: usize = 4;

impl VmConfig {
    /// The defaults of `capvisor run`: TDP with guest-owned WP, shadow with intercept.
    pub fn new(mmu_mode: MmuMode) -> VmConfig {
        VmConfig {
            mmu_mode,
            cr0_wp: match mmu_mode {
                MmuMode::Tdp => Cr0WpPolicy::GuestOwned,
                MmuMode::Shadow => Cr0WpPolicy::Intercept,
            },
            root_reuse: true,
            max_instructions: None,
            disable_nx_huge_pages: false,
            nx_disable_flags: 0,
            nx_disable_arg: 0,
            watch: [None; MAX_WATCHED],
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.mmu_mode == MmuMode::Shadow && self.cr0_wp == Cr0WpPolicy::GuestOwned {
            return Err(ConfigError::GuestOwnedWpNeedsTdp);
        }
        Ok(())
    }

    pub fn wp_guest_owned(&self) -> bool {
        self.cr0_wp == Cr0WpPolicy::GuestOwned
    }
}
