//! NX huge pages (MMU_REFERENCE.md section 5, issue 5): the table of the section step
//! by step under TDP and shadow paging, with the mitigation on and disabled through
//! the `NxHugePageControl` capability; every error of that capability in order; the
//! system mode (`never`, zap on change); recovery; and data integrity across splits
//! and recoveries.
//!
//! Accesses are performed the way the vmm-server's vCPU performs them: the software
//! vCPU's page walker walks our tables as the hardware; each EPT violation or #PF it
//! takes is sent to the server as the exit the vmm-server would send, and the access
//! is retried until it succeeds.

mod support;

use ipc::*;
use support::*;
use vcpu::paging::{Access, AccessKind, Fault, Mmu as Walker, PagingContext};

const VM: Badge = 1;
/// The same VM, called through its `NxHugePageControl` capability.
const VM_CAP: Badge = VM | badge::NX_HUGE_PAGE_CONTROL;
const CONTROL: Badge = badge::SYSTEM_CONTROL;

/// hp1..hp3: guest-physical (and, under shadow paging, virtual) 64, 66 and 68 MiB, as
/// in the hugeexec guest.
const HP: [u64; 3] = [0x400_0000, 0x420_0000, 0x440_0000];
const RAM: u64 = 72 << 20;
/// Where the shadow-paging guest keeps its page tables.
const PML4: u64 = 0x1000;

/// Offsets inside a huge page that the steps touch (head, a middle page, the tail).
const OFFSETS: [u64; 4] = [0x0, 0x8_0008, 0x10_0010, 0x1F_F000];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Paging {
    Tdp,
    Shadow,
}

struct Guest {
    m: Box<Machine>,
    paging: Paging,
    root: RootReply,
}

impl Guest {
    /// A VM with guest RAM at gpa 0 (2-MiB-aligned host backing); under shadow paging
    /// the guest maps hp1..hp3 with 2 MiB pages (PS, accessed and dirty, supervisor,
    /// executable), the rest of its tables below 64 KiB. `disable` invokes the
    /// capability before the vCPU exists.
    fn new(paging: Paging, disable: bool) -> Guest {
        let m = Machine::new(RAM, 64);
        let mode = match paging {
            Paging::Tdp => MmuMode::Tdp,
            Paging::Shadow => MmuMode::Shadow,
        };
        m.vm(VM, mode, true);
        if disable {
            m.call(
                VM_CAP,
                &DisableNxHugePages {
                    flags: 0,
                    reserved: 0,
                    arg: 0,
                },
            )
            .unwrap();
        }
        m.call(VM, &VcpuCreated {}).unwrap();
        let pdpt = PML4 + 0x1000;
        let pd = PML4 + 0x2000;
        m.write64(PML4, pdpt | P | RW | A);
        m.write64(pdpt, pd | P | RW | A);
        for hp in HP {
            m.write64(pd + 8 * (hp >> 21), hp | P | RW | A | D | PS);
        }
        // Each 8-byte word at the offsets of each huge page holds its own gpa: a word
        // read through a wrong host frame shows.
        for hp in HP {
            for off in OFFSETS {
                m.write64(hp + (off & !7), 0xC0DE_0000_0000_0000 | (hp + (off & !7)));
            }
        }
        let root = m.long_mode(VM, PML4);
        Guest { m, paging, root }
    }

    /// The vCPU's walk of our tables for one access.
    fn walk(&self, addr: u64, kind: AccessKind) -> Result<u64, Fault> {
        let access = Access {
            kind,
            implicit_supervisor: false,
        };
        let mut walker = Walker::new();
        match self.paging {
            Paging::Tdp => {
                let ctx = PagingContext {
                    eptp: Some(self.root.root_hpa | (3 << 3) | 6),
                    ..Default::default()
                };
                walker.translate_gpa(self.m.phys(), &ctx, addr, access)
            }
            Paging::Shadow => {
                let ctx = PagingContext {
                    cr0: PE | PG | WP,
                    cr3: self.root.root_hpa,
                    cr4: CR4_PAE,
                    efer: EFER_NX | EFER_LME | EFER_LMA,
                    vpid: 1,
                    ..Default::default()
                };
                walker.translate(self.m.phys(), &ctx, addr, access)
            }
        }
    }

    /// Performs an access as the vCPU would, sending each fault to the server, and
    /// returns the host address it reached. Returns how many faults it took too.
    fn access(&mut self, addr: u64, kind: AccessKind) -> (u64, u32) {
        for faults in 0..8 {
            let reply = match self.walk(addr, kind) {
                Ok(hpa) => return (hpa, faults),
                Err(Fault::EptViolation {
                    gpa, qualification, ..
                }) => self.m.call(
                    VM,
                    &TdpFault {
                        gpa,
                        gla: 0,
                        qualification,
                        rip: addr,
                    },
                ),
                Err(Fault::PageFault { error_code, linear }) => self.m.call(
                    VM,
                    &ShadowFault {
                        gva: linear,
                        rip: addr,
                        error_code,
                        flags: 0,
                        pkru: 0,
                        reserved: 0,
                    },
                ),
                Err(f) => panic!("{addr:#x}: the tables are broken: {f:?}"),
            };
            let reply = reply.unwrap();
            let outcome = reply.outcome().unwrap();
            assert!(
                matches!(outcome, FaultOutcome::Fixed | FaultOutcome::Retry),
                "{addr:#x} {kind:?}: {outcome:?}"
            );
            self.root.root_hpa = reply.root_hpa;
            self.root.root_level = reply.root_level;
        }
        panic!("{addr:#x} {kind:?}: still faulting after 8 faults");
    }

    /// Reads the words at every offset of huge page `hp` (0-based) through our tables
    /// and checks each reaches its own host frame and holds its own gpa.
    fn read(&mut self, hp: usize) {
        for off in OFFSETS {
            let gpa = HP[hp] + off;
            let (hpa, _) = self.access(gpa, AccessKind::Read);
            assert_eq!(hpa, RAM_HPA + gpa, "host frame of {gpa:#x}");
            let word = self.m.phys().read_u64(hpa & !7).unwrap();
            assert_eq!(
                word,
                0xC0DE_0000_0000_0000 | (gpa & !7),
                "bytes at {gpa:#x}"
            );
        }
    }

    /// Fetches from the head and the tail of huge page `hp` (as hugeexec calls code
    /// there).
    fn execute(&mut self, hp: usize) {
        for off in [0x0, 0x1F_F000] {
            let gpa = HP[hp] + off;
            let (hpa, _) = self.access(gpa, AccessKind::Fetch);
            assert_eq!(hpa, RAM_HPA + gpa, "host frame of the fetch at {gpa:#x}");
        }
    }

    /// (`pages_2m`, `nx_lpage_splits`), as the query message reads them.
    fn counts(&self) -> (u64, u64) {
        let s = self.m.stats(VM);
        (s.pages_2m, s.nx_lpage_splits)
    }

    fn mapping(&self, addr: u64) -> Mapping {
        self.m.call(VM, &GetMapping { addr }).unwrap()
    }

    /// "Wait 5 x period": five recovery ticks from the timer (ratio 1).
    fn wait_for_recovery(&self) -> u64 {
        (0..5)
            .map(|_| self.m.call(CONTROL, &NxRecoveryTick {}).unwrap().recovered)
            .sum()
    }
}

/// MMU_REFERENCE.md section 5's table: (`pages_2m`, `nx_lpage_splits`) after each step,
/// with the mitigation on and with it disabled through the capability.
const TABLE_ON: [(u64, u64); 7] = [(1, 0), (2, 0), (1, 1), (1, 2), (1, 2), (1, 0), (2, 0)];
const TABLE_DISABLED: [(u64, u64); 7] = [(1, 0), (2, 0), (2, 0), (3, 0), (3, 0), (3, 0), (3, 0)];

fn run_table(paging: Paging, disable: bool) {
    let mut g = Guest::new(paging, disable);
    g.m.call(
        CONTROL,
        &SetNxRecovery {
            ratio: 1,
            reserved: 0,
            period_ms: 100,
        },
    )
    .unwrap();
    let want = if disable { TABLE_DISABLED } else { TABLE_ON };
    let mut got = Vec::new();
    // 1 read hp1, 2 read hp2, 3 execute hp1, 4 execute hp3, 5 read hp1.
    g.read(0);
    got.push(g.counts());
    g.read(1);
    got.push(g.counts());
    g.execute(0);
    got.push(g.counts());
    if !disable {
        // The split range is mapped 4K, executable, and listed for recovery.
        let m = g.mapping(HP[0]);
        assert_eq!(m.level, 1);
        assert_eq!(
            m.flags & (mapping_flags::EXEC | mapping_flags::NX_SPLIT),
            mapping_flags::EXEC | mapping_flags::NX_SPLIT
        );
        // hp2 stays huge, and not executable.
        let m = g.mapping(HP[1]);
        assert_eq!((m.level, m.flags & mapping_flags::EXEC), (2, 0));
    } else {
        let m = g.mapping(HP[0]);
        assert_eq!(
            (m.level, m.flags & mapping_flags::EXEC),
            (2, mapping_flags::EXEC)
        );
    }
    g.execute(2);
    got.push(g.counts());
    g.read(0);
    got.push(g.counts());
    if !disable {
        assert_eq!(
            g.mapping(HP[0] + 0x8_0000).level,
            1,
            "no flapping back to 2M"
        );
    }
    // 6 wait for recovery.
    let recovered = g.wait_for_recovery();
    got.push(g.counts());
    assert_eq!(recovered, if disable { 0 } else { 2 });
    assert_eq!(g.m.stats(VM).nx_recovered, recovered);
    // 7 read hp3.
    g.read(2);
    got.push(g.counts());
    assert_eq!(
        got, want,
        "{paging:?}, disabled through the capability: {disable}"
    );
    // Every byte still reaches its own frame after the splits and the recovery, and
    // the code pages still run.
    for hp in 0..3 {
        g.read(hp);
        g.execute(hp);
    }
}

#[test]
fn section_5_table_tdp_mitigation_on() {
    run_table(Paging::Tdp, false);
}

#[test]
fn section_5_table_tdp_disabled_through_the_capability() {
    run_table(Paging::Tdp, true);
}

#[test]
fn section_5_table_shadow_mitigation_on() {
    run_table(Paging::Shadow, false);
}

#[test]
fn section_5_table_shadow_disabled_through_the_capability() {
    run_table(Paging::Shadow, true);
}

/// TDP splits eagerly: the fetch installs all 512 pieces at once, so the later reads of
/// step 5 take no fault. Shadow paging splits lazily: each 4K page faults in.
#[test]
fn tdp_splits_eagerly_shadow_lazily() {
    for (paging, faults_after_split) in [(Paging::Tdp, 0), (Paging::Shadow, 1)] {
        let mut g = Guest::new(paging, false);
        g.read(0);
        g.execute(0);
        let (_, faults) = g.access(HP[0] + 0x12_3000, AccessKind::Read);
        assert_eq!(faults, faults_after_split, "{paging:?}");
        let (_, faults) = g.access(HP[0] + 0x13_3000, AccessKind::Fetch);
        assert_eq!(faults, faults_after_split, "{paging:?}");
        // Writes too stay inside the split table.
        let (_, faults) = g.access(HP[0] + 0x14_3000, AccessKind::Write);
        assert!(faults <= 1, "{paging:?}");
        assert_eq!(g.counts(), (0, 1), "{paging:?}");
    }
}

#[test]
fn capability_errors_come_in_mmu_reference_order() {
    let m = Machine::new(8 << 20, 16);
    m.vm(VM, MmuMode::Tdp, true);
    let req = |flags, reserved, arg| DisableNxHugePages {
        flags,
        reserved,
        arg,
    };
    // 1. flags -> InvalidArgument, whoever asks.
    assert_eq!(m.call(VM, &req(1, 0, 0)), Err(Error::InvalidArgument));
    assert_eq!(m.call(VM, &req(0, 1, 0)), Err(Error::InvalidArgument));
    assert_eq!(m.call(VM_CAP, &req(2, 0, 5)), Err(Error::InvalidArgument));
    // 2. no capability -> PermissionDenied, even with a bad argument.
    assert_eq!(m.call(VM, &req(0, 0, 0)), Err(Error::PermissionDenied));
    assert_eq!(m.call(VM, &req(0, 0, 1)), Err(Error::PermissionDenied));
    // 3. argument -> InvalidArgument.
    assert_eq!(m.call(VM_CAP, &req(0, 0, 1)), Err(Error::InvalidArgument));
    // 4. the vCPU exists -> InvalidArgument.
    m.call(VM, &VcpuCreated {}).unwrap();
    assert_eq!(m.call(VM_CAP, &req(0, 0, 0)), Err(Error::InvalidArgument));
    assert_eq!(m.call(VM, &req(0, 0, 0)), Err(Error::PermissionDenied));
    assert!(!m.server.borrow().vm(VM).unwrap().nx_disabled);
    // A badge with the capability bit names the same VM for everything else.
    assert_eq!(m.call(VM_CAP, &GetStats {}), m.call(VM, &GetStats {}));
    // The capability of a VM that does not exist names nothing.
    assert_eq!(
        m.call(7 | badge::NX_HUGE_PAGE_CONTROL, &req(0, 0, 0)),
        Err(Error::NoSuchVm)
    );
}

/// Disabling affects the caller's VM only; the mitigation still applies to others.
#[test]
fn the_capability_disables_for_one_vm_only() {
    let m = Machine::new(8 << 20, 64);
    const OTHER: Badge = 2;
    m.vm(VM, MmuMode::Tdp, true);
    m.vm(OTHER, MmuMode::Tdp, true);
    m.call(
        VM_CAP,
        &DisableNxHugePages {
            flags: 0,
            reserved: 0,
            arg: 0,
        },
    )
    .unwrap();
    for b in [VM, OTHER] {
        m.regs(b, PE, 0, 0, 0);
        let r = m.tdp_fault(b, 0x40_0000, Q_FETCH);
        assert_eq!(outcome(&r), FaultOutcome::Fixed);
    }
    assert_eq!((m.stats(VM).pages_2m, m.stats(VM).nx_lpage_splits), (1, 0));
    assert_eq!(
        (m.stats(OTHER).pages_2m, m.stats(OTHER).nx_lpage_splits),
        (0, 1)
    );
    // With the mode off, the capability is accepted and changes nothing visible.
    let m = Machine::new(8 << 20, 64);
    m.nx_mode(NxMode::Off).unwrap();
    m.vm(VM, MmuMode::Tdp, true);
    assert_eq!(
        m.call(
            VM_CAP,
            &DisableNxHugePages {
                flags: 0,
                reserved: 0,
                arg: 0
            }
        ),
        Ok(Empty {})
    );
}

#[test]
fn never_only_without_vms_and_then_final() {
    let m = Machine::new(8 << 20, 16);
    m.vm(VM, MmuMode::Tdp, true);
    assert_eq!(m.nx_mode(NxMode::Never), Err(Error::InvalidState));
    let state = m.call(CONTROL, &GetNxHugePages {}).unwrap();
    assert_eq!((state.mode, state.enabled), (NxMode::Auto as u32, 1));
    m.call(VM, &DestroyVm {}).unwrap();
    m.nx_mode(NxMode::Never).unwrap();
    for mode in [
        NxMode::On,
        NxMode::Auto,
        NxMode::Force,
        NxMode::Off,
        NxMode::Never,
    ] {
        assert_eq!(m.nx_mode(mode), Err(Error::PermissionDenied), "{mode:?}");
    }
    let state = m.call(CONTROL, &GetNxHugePages {}).unwrap();
    assert_eq!((state.mode, state.enabled), (NxMode::Never as u32, 0));
    // A VM made now gets executable huge pages and no recovery.
    m.vm(VM, MmuMode::Tdp, true);
    m.regs(VM, PE, 0, 0, 0);
    m.tdp_fault(VM, 0x40_0000, Q_FETCH);
    assert_eq!((m.stats(VM).pages_2m, m.stats(VM).nx_lpage_splits), (1, 0));
    assert_eq!(m.call(CONTROL, &NxRecoveryTick {}).unwrap().recovered, 0);
}

#[test]
fn control_requests_need_the_control_badge() {
    let m = Machine::new(8 << 20, 16);
    m.vm(VM, MmuMode::Tdp, true);
    let set = SetNxHugePages {
        mode: NxMode::Off as u32,
        reserved: 0,
    };
    for b in [VM, VM_CAP, 99] {
        assert_eq!(m.call(b, &set), Err(Error::PermissionDenied));
        assert_eq!(m.call(b, &GetNxHugePages {}), Err(Error::PermissionDenied));
        assert_eq!(m.call(b, &NxRecoveryTick {}), Err(Error::PermissionDenied));
        assert_eq!(
            m.call(
                b,
                &SetNxRecovery {
                    ratio: 0,
                    reserved: 0,
                    period_ms: 0
                }
            ),
            Err(Error::PermissionDenied)
        );
    }
    // The controller is no VM.
    assert_eq!(m.call(CONTROL, &GetStats {}), Err(Error::PermissionDenied));
    assert_eq!(
        m.call(
            CONTROL,
            &CreateVm {
                mmu_mode: 0,
                root_reuse: 1,
                flags: 0,
                reserved: 0
            }
        ),
        Err(Error::PermissionDenied)
    );
    let state = m.call(CONTROL, &GetNxHugePages {}).unwrap();
    assert_eq!(
        (state.mode, state.ratio, state.period_ms),
        (NxMode::Auto as u32, 60, 60_000),
        "KVM's defaults"
    );
}

/// Changing whether the mitigation is on zaps every VM: the old root goes obsolete,
/// the next fault retries on a fresh root, and the pending flush reaches the vCPU.
#[test]
fn a_mode_change_zaps_every_vm() {
    for paging in [Paging::Tdp, Paging::Shadow] {
        let mut g = Guest::new(paging, false);
        g.read(0);
        g.execute(0);
        assert_eq!(g.counts(), (0, 1));
        let pages = g.m.stats(VM).shadow_pages;
        // auto -> on: the mitigation stays on, nothing is zapped.
        g.m.nx_mode(NxMode::On).unwrap();
        assert_eq!(g.m.stats(VM).shadow_pages, pages);
        g.m.nx_mode(NxMode::Off).unwrap();
        let s = g.m.stats(VM);
        assert_eq!((s.pages_2m, s.nx_lpage_splits), (0, 0), "{paging:?}");
        assert!(s.shadow_pages < pages, "{paging:?}: tables zapped");
        // The vmm-server learns of it at its next request with a flush field.
        let sync = g.m.call(VM, &SyncMmu {}).unwrap();
        assert_eq!(sync.flush & flush::GUEST, flush::GUEST, "{paging:?}");
        g.root = sync;
        assert_eq!(g.m.call(VM, &SyncMmu {}).unwrap().flush, 0);
        // Without the mitigation the fetch maps 2M, executable.
        g.execute(0);
        assert_eq!(g.counts(), (1, 0), "{paging:?}");
        g.m.nx_mode(NxMode::Force).unwrap();
        g.read(0);
        g.execute(0);
        assert_eq!(g.counts(), (0, 1), "{paging:?}");
    }
}

/// A fault on the root the vCPU ran on before a mode change is retried on a fresh
/// root, named in the reply (as `is_page_fault_stale`).
#[test]
fn a_fault_on_a_root_obsoleted_by_a_mode_change_retries() {
    let m = Machine::new(8 << 20, 16);
    m.vm(VM, MmuMode::Tdp, true);
    let root = m.regs(VM, PE, 0, 0, 0);
    m.nx_mode(NxMode::Off).unwrap();
    let r = m.tdp_fault(VM, 0x40_0000, Q_READ);
    assert_eq!(outcome(&r), FaultOutcome::Retry);
    assert_eq!(r.flush & flush::GUEST, flush::GUEST);
    assert_ne!(r.root_hpa, 0);
    let _ = root;
    assert_eq!(
        outcome(&m.tdp_fault(VM, 0x40_0000, Q_READ)),
        FaultOutcome::Fixed
    );
}

/// Each tick zaps ceil(splits / ratio) of the oldest split pages; ratio 0 none.
#[test]
fn recovery_takes_the_oldest_first_by_ratio() {
    let m = Machine::new(16 << 20, 64);
    m.vm(VM, MmuMode::Tdp, true);
    m.regs(VM, PE, 0, 0, 0);
    let ranges = [0x40_0000u64, 0x80_0000, 0x60_0000, 0xA0_0000];
    for gpa in ranges {
        m.tdp_fault(VM, gpa, Q_FETCH);
    }
    assert_eq!(m.stats(VM).nx_lpage_splits, 4);
    let listed =
        |gpa| m.call(VM, &GetMapping { addr: gpa }).unwrap().flags & mapping_flags::NX_SPLIT != 0;
    // Ratio 0: recovery is off.
    m.call(
        CONTROL,
        &SetNxRecovery {
            ratio: 0,
            reserved: 0,
            period_ms: 0,
        },
    )
    .unwrap();
    assert_eq!(m.call(CONTROL, &NxRecoveryTick {}).unwrap().recovered, 0);
    // Ratio 3: ceil(4 / 3) = 2, the two oldest.
    m.call(
        CONTROL,
        &SetNxRecovery {
            ratio: 3,
            reserved: 0,
            period_ms: 0,
        },
    )
    .unwrap();
    assert_eq!(m.call(CONTROL, &NxRecoveryTick {}).unwrap().recovered, 2);
    let s = m.stats(VM);
    assert_eq!((s.nx_lpage_splits, s.nx_recovered), (2, 2));
    assert_eq!(
        m.call(VM, &GetMapping { addr: ranges[0] }).unwrap().level,
        0
    );
    assert_eq!(
        m.call(VM, &GetMapping { addr: ranges[1] }).unwrap().level,
        0
    );
    assert!(listed(ranges[2]) && listed(ranges[3]));
    // Then ceil(2 / 3) = 1: the older of the two left.
    assert_eq!(m.call(CONTROL, &NxRecoveryTick {}).unwrap().recovered, 1);
    assert!(!listed(ranges[2]) && listed(ranges[3]));
    let state = m.call(CONTROL, &GetNxHugePages {}).unwrap();
    assert_eq!((state.recovered_total, state.period_ms), (3, 1_200_000));
    // The recovered tables went back to the pool at the VM's next request, and a read
    // now maps the range huge again.
    let free_before = m.server.borrow().free_frames();
    m.tdp_fault(VM, ranges[0] + 0x5000, Q_READ);
    assert_eq!(
        m.call(VM, &GetMapping { addr: ranges[0] }).unwrap().level,
        2
    );
    assert_eq!(m.server.borrow().free_frames(), free_before);
    // A tick's flush reaches the vCPU once.
    m.call(CONTROL, &NxRecoveryTick {}).unwrap();
    assert_eq!(
        m.call(VM, &SyncMmu {}).unwrap().flush & flush::GUEST,
        flush::GUEST
    );
    assert_eq!(m.call(VM, &SyncMmu {}).unwrap().flush, 0);
}

/// A recovered table is unlinked at the tick but its frame is only freed at the VM's
/// next request: the vCPU may still be walking it when the tick arrives.
#[test]
fn recovered_tables_are_freed_at_the_next_request() {
    let m = Machine::new(8 << 20, 16);
    m.vm(VM, MmuMode::Tdp, true);
    m.regs(VM, PE, 0, 0, 0);
    m.tdp_fault(VM, 0x40_0000, Q_FETCH);
    let free = m.server.borrow().free_frames();
    m.call(
        CONTROL,
        &SetNxRecovery {
            ratio: 1,
            reserved: 0,
            period_ms: 100,
        },
    )
    .unwrap();
    assert_eq!(m.call(CONTROL, &NxRecoveryTick {}).unwrap().recovered, 1);
    assert_eq!(
        m.server.borrow().free_frames(),
        free,
        "kept until the VM stops"
    );
    m.stats(VM);
    assert_eq!(m.server.borrow().free_frames(), free + 1);
}

/// The capability bit of seL4's badge scheme is the one the server reads.
#[test]
fn badge_bit_matches_the_sel4_badge_scheme() {
    assert_eq!(
        badge::NX_HUGE_PAGE_CONTROL,
        capdl_spec::badge::NX_HUGE_PAGE_CONTROL
    );
    assert_eq!(
        badge::vm_of(capdl_spec::badge::nx_huge_page_control(3)),
        capdl_spec::badge::mmu_client(3)
    );
    assert_eq!(badge::SYSTEM_CONTROL & capdl_spec::badge::MMU_CALL, 0);
    assert_eq!(badge::SYSTEM_CONTROL & capdl_spec::badge::VM_ID_MASK, 0);
}

/// A guest 1 GiB page under shadow paging: a 1G shadow leaf for data; a fetch zaps it
/// and lists both tables it links on the way down (each level could have been huge),
/// as the TDP walk does; a later read in another 2 MiB of the GiB maps 2M, not 1G.
#[test]
fn shadow_1g_guest_page_splits_level_by_level() {
    let m = Machine::new(2 << 30, 64);
    m.vm(VM, MmuMode::Shadow, true);
    m.call(VM, &VcpuCreated {}).unwrap();
    // Tables in the second GiB; the guest's 1G page maps gva 1 GiB -> gpa 0.
    let pml4 = 0x4000_0000u64;
    let pdpt = pml4 + 0x1000;
    m.write64(pml4, pdpt | P | RW | A);
    m.write64(pdpt + 8, P | RW | A | D | PS);
    m.write64(0x1234_5008, 0x5EED);
    let root = m.long_mode(VM, pml4);
    let mut g = Guest {
        m,
        paging: Paging::Shadow,
        root,
    };
    let (hpa, _) = g.access(0x5234_5008, AccessKind::Read);
    assert_eq!(hpa, RAM_HPA + 0x1234_5008);
    assert_eq!(g.m.phys().read_u64(hpa).unwrap(), 0x5EED);
    let s = g.m.stats(VM);
    assert_eq!((s.pages_1g, s.pages_2m, s.nx_lpage_splits), (1, 0, 0));
    assert_eq!(g.mapping(0x5234_5008).flags & mapping_flags::EXEC, 0);
    let (hpa, _) = g.access(0x5234_5000, AccessKind::Fetch);
    assert_eq!(hpa, RAM_HPA + 0x1234_5000);
    let s = g.m.stats(VM);
    assert_eq!((s.pages_1g, s.pages_2m, s.nx_lpage_splits), (0, 0, 2));
    let (hpa, _) = g.access(0x5800_0000, AccessKind::Read);
    assert_eq!(hpa, RAM_HPA + 0x1800_0000);
    let s = g.m.stats(VM);
    assert_eq!((s.pages_1g, s.pages_2m, s.nx_lpage_splits), (0, 1, 2));
}

/// A 32-bit guest's 4 MiB page (PSE) under a PAE shadow root: each 2 MiB half is a 2M
/// shadow leaf, not executable; a fetch splits only its half.
#[test]
fn shadow_4m_guest_page_maps_two_2m_leaves() {
    let m = Machine::new(16 << 20, 64);
    m.vm(VM, MmuMode::Shadow, true);
    let pd = 0x1000u64;
    m.write32(pd + 4 * 2, (0x40_0000 | P | RW | A | D | PS) as u32);
    let root = m.regs(VM, PE | PG | WP, pd, CR4_PSE, 0);
    assert_eq!(root.root_level, 3);
    let g = Guest {
        m,
        paging: Paging::Shadow,
        root,
    };
    for gva in [0x80_1000u64, 0xA0_2000] {
        let r = g.m.shadow_fault(VM, gva, 0, 0);
        assert_eq!(outcome(&r), FaultOutcome::Fixed);
        let leaf = g.m.shadow_walk(r.root_hpa, 3, gva).unwrap();
        assert_eq!(
            (leaf.level, leaf.hpa, leaf.x),
            (2, RAM_HPA + gva - 0x40_0000, false)
        );
    }
    assert_eq!(g.counts(), (2, 0));
    let r = g.m.shadow_fault(VM, 0xA0_2000, EC_P | EC_F, 0);
    assert_eq!(outcome(&r), FaultOutcome::Fixed);
    let leaf = g.m.shadow_walk(r.root_hpa, 3, 0xA0_2000).unwrap();
    assert_eq!(
        (leaf.level, leaf.hpa, leaf.x),
        (1, RAM_HPA + 0x60_2000, true)
    );
    assert_eq!(g.counts(), (1, 1));
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Read(usize, u64),
    Write(usize, u64),
    Fetch(usize, u64),
    Tick,
    /// Turn the mitigation off or back on (every VM is zapped).
    Toggle,
    Sync,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    let page = (0usize..3, 0u64..512).prop_map(|(hp, p)| (hp, p * 4096 + 8));
    prop_oneof![
        3 => page.clone().prop_map(|(h, o)| Op::Read(h, o)),
        2 => page.clone().prop_map(|(h, o)| Op::Write(h, o)),
        3 => page.prop_map(|(h, o)| Op::Fetch(h, o)),
        1 => Just(Op::Tick),
        1 => Just(Op::Toggle),
        1 => Just(Op::Sync),
    ]
}

/// What a 2 MiB range is, in the model of MMU_REFERENCE section 5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Range {
    Unmapped,
    Huge,
    /// Split for a fetch and listed as a possible NX huge page.
    Split,
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Any sequence of reads, writes, fetches, recovery ticks (ratio 1) and mode
    /// toggles, under TDP and shadow paging, follows the range model: a fetch under the
    /// mitigation splits (and lists) a range, nothing else turns a split range back to
    /// huge but recovery, which takes every listed range back; a mode change empties
    /// everything. `pages_2m`, `nx_lpage_splits` and `nx_recovered` follow the model,
    /// every access reaches its own host frame (checked by `access`), and no huge
    /// mapping is executable while the mitigation is on.
    #[test]
    fn splits_and_recovery_follow_the_range_model(
        shadow in proptest::prelude::any::<bool>(),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let paging = if shadow { Paging::Shadow } else { Paging::Tdp };
        let mut g = Guest::new(paging, false);
        g.m.call(CONTROL, &SetNxRecovery { ratio: 1, reserved: 0, period_ms: 0 }).unwrap();
        let mut on = true;
        let mut model = [Range::Unmapped; 3];
        let mut recovered = 0u64;
        for op in ops {
            match op {
                Op::Read(hp, off) | Op::Write(hp, off) | Op::Fetch(hp, off) => {
                    let (kind, fetch) = match op {
                        Op::Read(..) => (AccessKind::Read, false),
                        Op::Write(..) => (AccessKind::Write, false),
                        _ => (AccessKind::Fetch, true),
                    };
                    let gpa = HP[hp] + off;
                    let (hpa, _) = g.access(gpa, kind);
                    proptest::prop_assert_eq!(hpa, RAM_HPA + gpa);
                    model[hp] = match (model[hp], fetch && on) {
                        (_, true) | (Range::Split, false) => Range::Split,
                        _ => Range::Huge,
                    };
                    let m = g.mapping(gpa);
                    if on && m.level > 1 {
                        proptest::prop_assert_eq!(m.flags & mapping_flags::EXEC, 0, "executable huge page");
                    }
                    if fetch {
                        proptest::prop_assert_ne!(m.flags & mapping_flags::EXEC, 0);
                    }
                }
                Op::Tick => {
                    let n = g.m.call(CONTROL, &NxRecoveryTick {}).unwrap().recovered;
                    let split = model.iter().filter(|r| **r == Range::Split).count() as u64;
                    proptest::prop_assert_eq!(n, split);
                    recovered += n;
                    for r in model.iter_mut() {
                        if *r == Range::Split {
                            *r = Range::Unmapped;
                        }
                    }
                }
                Op::Toggle => {
                    on = !on;
                    g.m.nx_mode(if on { NxMode::On } else { NxMode::Off }).unwrap();
                    model = [Range::Unmapped; 3];
                }
                Op::Sync => {
                    g.root = g.m.call(VM, &SyncMmu {}).unwrap();
                }
            }
            let s = g.m.stats(VM);
            let huge = model.iter().filter(|r| **r == Range::Huge).count() as u64;
            let split = model.iter().filter(|r| **r == Range::Split).count() as u64;
            proptest::prop_assert_eq!(
                (s.pages_2m, s.nx_lpage_splits, s.nx_recovered),
                (huge, split, recovered),
                "after {:?}: {:?}", op, model
            );
        }
    }
}

/// At scale (what the benchmarks run): 48 huge ranges fetched under TDP are 48 splits,
/// which one tick at ratio 1 recovers; a long-mode guest mapping 48 2M pages gets 48
/// 2M shadow leaves (reads, so the mitigation does not split them).
#[test]
fn many_ranges_split_recover_and_map_huge() {
    const RANGES: u64 = 48;
    let range = |r: u64| (4 << 20) + r * (2 << 20);
    let ram = RANGES * (2 << 20) + (4 << 20);
    let m = Machine::new(ram, 256);
    m.vm(VM, MmuMode::Tdp, true);
    m.regs(VM, PE, 0, 0, 0);
    for r in 0..RANGES {
        m.tdp_fault(VM, range(r), Q_READ);
    }
    assert_eq!(m.stats(VM).pages_2m, RANGES);
    for r in 0..RANGES {
        m.tdp_fault(VM, range(r), Q_FETCH);
    }
    let s = m.stats(VM);
    assert_eq!((s.pages_2m, s.nx_lpage_splits), (0, RANGES));
    m.call(
        CONTROL,
        &SetNxRecovery {
            ratio: 1,
            reserved: 0,
            period_ms: 0,
        },
    )
    .unwrap();
    let recovered = m.call(CONTROL, &NxRecoveryTick {}).unwrap().recovered;
    assert_eq!(recovered, RANGES);
    let s = m.stats(VM);
    assert_eq!((s.nx_lpage_splits, s.nx_recovered), (0, RANGES));

    let m = Machine::new(ram, 256);
    m.vm(VM, MmuMode::Shadow, true);
    let (pml4, pdpt, pd) = (PML4, 0x2000u64, 0x3000u64);
    m.write64(pml4, pdpt | P | RW | A);
    m.write64(pdpt, pd | P | RW | A);
    for r in 0..RANGES {
        m.write64(pd + 8 * (range(r) >> 21), range(r) | P | RW | A | D | PS);
    }
    m.long_mode(VM, pml4);
    for r in 0..RANGES {
        assert_eq!(
            outcome(&m.shadow_fault(VM, range(r), 0, 0)),
            FaultOutcome::Fixed
        );
    }
    assert_eq!(m.stats(VM).pages_2m, RANGES);
}
