//! The VMCS-like execution controls (SDM 24.6): which instructions and events exit,
//! the CR0/CR4 guest/host masks and read shadows, the exception bitmap, EPT and VPID,
//! event injection (SDM 24.8.3) and the VMX-preemption-timer analogue (an instruction
//! budget).

extern crate alloc;
use alloc::boxed::Box;

/// VM-entry event injection (SDM 24.8.3): delivered through the guest IDT at the
/// next `run()`, before any instruction, without consulting the exception bitmap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventInjection {
    /// VM-entry interruption-information format (`crate::exit::interruption`).
    pub info: u32,
    pub error_code: u32,
    /// Instruction length for software interrupts/exceptions (the pushed RIP is
    /// RIP + this).
    pub instruction_len: u8,
}

/// VMCS-like controls. `Default` exits on everything VT-x exits on unconditionally
/// plus HLT, I/O and all MSR accesses; CR0/CR4 are fully guest-owned.
#[derive(Clone, Debug)]
pub struct VmControls {
    // Primary processor-based controls (SDM 24.6.2 Table 24-6).
    pub interrupt_window_exiting: bool,
    pub hlt_exiting: bool,
    pub invlpg_exiting: bool,
    pub rdtsc_exiting: bool,
    pub cr3_load_exiting: bool,
    pub cr3_store_exiting: bool,
    pub cr8_load_exiting: bool,
    pub cr8_store_exiting: bool,
    pub mov_dr_exiting: bool,
    pub unconditional_io_exiting: bool,
    /// "Use I/O bitmaps": bitmap A+B as one 8 KiB bitmap, a set bit exits. Takes
    /// precedence over `unconditional_io_exiting` (SDM 26.1.3).
    pub io_bitmap: Option<Box<[u8; 8192]>>,
    /// "Use MSR bitmaps" (SDM 24.6.9 layout: read-low, read-high, write-low,
    /// write-high, 1 KiB each). `None`: every RDMSR/WRMSR exits.
    pub msr_bitmap: Option<Box<[u8; 4096]>>,
    pub pause_exiting: bool,
    // Secondary controls (Table 24-7).
    /// "Enable EPT" and the EPT pointer (SDM 24.6.11): every guest-physical access
    /// goes through the EPT walk of `eptp`.
    pub enable_ept: bool,
    pub eptp: u64,
    pub enable_rdtscp: bool,
    /// "Enable VPID": TLB entries are tagged with `vpid` and survive VM entry/exit;
    /// without it the vCPU runs as VPID 0 and every `run()` flushes VPID 0.
    pub enable_vpid: bool,
    pub vpid: u16,
    pub wbinvd_exiting: bool,
    /// Recorded for the VMM's bookkeeping only: the model runs paging-off protected
    /// mode either way and does not model real mode (entry with CR0.PE = 0 fails).
    pub unrestricted_guest: bool,
    pub enable_invpcid: bool,
    // CR0/CR4 (SDM 24.6.6): a set mask bit is host-owned.
    pub cr0_guest_host_mask: u64,
    pub cr0_read_shadow: u64,
    pub cr4_guest_host_mask: u64,
    pub cr4_read_shadow: u64,
    /// Exception bitmap (SDM 24.6.3): bit n set = exception n exits.
    pub exception_bitmap: u32,
    /// #PF filtering (SDM 25.2): a #PF exits iff bit 14 of the bitmap equals
    /// `(error_code & pfec_mask) == pfec_match`.
    pub pfec_mask: u32,
    pub pfec_match: u32,
    /// Pending VM-entry event injection (valid bit in `info`); cleared once delivered.
    pub injection: EventInjection,
    /// VMX-preemption-timer analogue: instructions left before a PREEMPTION_TIMER exit.
    /// Counts down while running and is saved back here (like "save VMX-preemption
    /// timer value"). `None`: no budget.
    pub budget: Option<u64>,
    /// Offset added to the retired-instruction count to form the guest TSC.
    pub tsc_offset: u64,
}

impl Default for VmControls {
    fn default() -> Self {
        VmControls {
            interrupt_window_exiting: false,
            hlt_exiting: true,
            invlpg_exiting: false,
            rdtsc_exiting: false,
            cr3_load_exiting: false,
            cr3_store_exiting: false,
            cr8_load_exiting: false,
            cr8_store_exiting: false,
            mov_dr_exiting: false,
            unconditional_io_exiting: true,
            io_bitmap: None,
            msr_bitmap: None,
            pause_exiting: false,
            enable_ept: false,
            eptp: 0,
            enable_rdtscp: true,
            enable_vpid: false,
            vpid: 0,
            wbinvd_exiting: false,
            unrestricted_guest: false,
            enable_invpcid: true,
            cr0_guest_host_mask: 0,
            cr0_read_shadow: 0,
            cr4_guest_host_mask: 0,
            cr4_read_shadow: 0,
            exception_bitmap: 0,
            pfec_mask: 0,
            pfec_match: 0,
            injection: EventInjection::default(),
            budget: None,
            tsc_offset: 0,
        }
    }
}

impl VmControls {
    /// Whether an access to `port` of `size` bytes exits (SDM 26.1.3: with I/O
    /// bitmaps, any bit of the accessed range, or a wrap past 0xffff, exits).
    pub fn io_exits(&self, port: u16, size: u8) -> bool {
        match &self.io_bitmap {
            Some(bm) => (0..size as u32).any(|i| {
                let p = port as u32 + i;
                p > 0xffff || bm[(p / 8) as usize] & (1 << (p % 8)) != 0
            }),
            None => self.unconditional_io_exiting,
        }
    }

    /// Whether RDMSR (`write == false`) or WRMSR of `msr` exits (SDM 26.1.3).
    pub fn msr_exits(&self, msr: u32, write: bool) -> bool {
        let Some(bm) = &self.msr_bitmap else {
            return true;
        };
        let (half, idx) = match msr {
            0..=0x1fff => (0, msr),
            0xc000_0000..=0xc000_1fff => (1024, msr - 0xc000_0000),
            _ => return true,
        };
        let base = half + if write { 2048 } else { 0 };
        bm[base + (idx / 8) as usize] & (1 << (idx % 8)) != 0
    }

    /// Sets or clears the exit bit of one MSR in the bitmap (creating a bitmap that
    /// exits on everything else first).
    pub fn set_msr_exiting(&mut self, msr: u32, read: bool, write: bool) {
        let bm = self
            .msr_bitmap
            .get_or_insert_with(|| Box::new([0xff; 4096]));
        let (half, idx) = match msr {
            0..=0x1fff => (0usize, msr),
            0xc000_0000..=0xc000_1fff => (1024, msr - 0xc000_0000),
            _ => return,
        };
        for (w, exit) in [(0usize, read), (2048usize, write)] {
            let byte = &mut bm[half + w + (idx / 8) as usize];
            if exit {
                *byte |= 1 << (idx % 8);
            } else {
                *byte &= !(1 << (idx % 8));
            }
        }
    }

    /// Whether exception `vector` with `error_code` exits (SDM 25.2).
    pub fn exception_exits(&self, vector: u8, error_code: u32) -> bool {
        let bit = self.exception_bitmap & (1 << (vector & 31)) != 0;
        if vector == 14 {
            bit == ((error_code & self.pfec_mask) == self.pfec_match)
        } else {
            bit
        }
    }

    /// The guest's view of CR0 (MOV from CR0, SMSW): owned bits from the real
    /// register, host-owned bits from the read shadow (SDM 26.3).
    pub fn shadowed_cr0(&self, real: u64) -> u64 {
        (real & !self.cr0_guest_host_mask) | (self.cr0_read_shadow & self.cr0_guest_host_mask)
    }

    pub fn shadowed_cr4(&self, real: u64) -> u64 {
        (real & !self.cr4_guest_host_mask) | (self.cr4_read_shadow & self.cr4_guest_host_mask)
    }
}
