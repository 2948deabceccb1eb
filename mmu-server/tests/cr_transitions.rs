//! One test per row of the control-register transitions of MMU_REFERENCE.md section 2
//! (`kvm_post_set_cr0`, `kvm_post_set_cr4`, `kvm_set_cr3`, `kvm_set_efer`), through the
//! server, with RootReuse on and off: which roots are freed, which stay cached, and
//! which flush bits come back.

mod support;

use ipc::*;
use support::*;

const VM: Badge = 3;
const LONG: (u64, u64, u64) = (PE | PG | WP, CR4_PAE, EFER_LME | EFER_LMA | EFER_NX);

#[derive(Debug)]
struct Row {
    flush: u32,
    /// The current root is the same page as before.
    same_root: bool,
    roots_freed: u64,
    roots_allocated: u64,
    /// Previous roots still cached after the write.
    prev_cached: usize,
}

/// Sets up a VM in state (cr0, cr4, efer) with CR3 0x1000 current and (under shadow
/// paging) 0x2000 and 0x3000 cached, then performs one register write.
fn run(tdp: bool, reuse: bool, state: (u64, u64, u64), reg: CrRegister, value: u64) -> Row {
    let m = Machine::new(4 << 20, 64);
    let mode = if tdp { MmuMode::Tdp } else { MmuMode::Shadow };
    m.vm(VM, mode, reuse);
    let (cr0, cr4, efer) = state;
    m.regs(VM, cr0, 0x3000, cr4, efer);
    m.cr(VM, CrRegister::Cr3, 0x2000);
    let before_root = m.cr(VM, CrRegister::Cr3, 0x1000).root_hpa;
    let before = m.stats(VM);
    let r = m.cr(VM, reg, value);
    let after = m.stats(VM);
    let prev_cached = m
        .server
        .borrow()
        .vm(VM)
        .unwrap()
        .roots
        .prev
        .iter()
        .filter(|r| r.page.is_some())
        .count();
    Row {
        flush: r.flush,
        same_root: r.root_hpa == before_root,
        roots_freed: after.roots_freed - before.roots_freed,
        roots_allocated: after.roots_allocated - before.roots_allocated,
        prev_cached,
    }
}

// ---- CR0 ----

#[test]
fn cr0_wp_only_with_paging_off_does_nothing() {
    for tdp in [false, true] {
        for reuse in [false, true] {
            let r = run(tdp, reuse, (PE, 0, 0), CrRegister::Cr0, PE | WP);
            assert_eq!(
                (r.flush, r.same_root, r.roots_freed),
                (0, true, 0),
                "tdp={tdp} reuse={reuse}"
            );
        }
    }
}

#[test]
fn cr0_wp_only_under_tdp_reinitialises_without_unload_when_reuse_is_on() {
    let on = run(true, true, LONG, CrRegister::Cr0, PE | PG);
    assert_eq!(
        (on.flush, on.same_root, on.roots_freed, on.roots_allocated),
        (0, true, 0, 0)
    );
    let off = run(true, false, LONG, CrRegister::Cr0, PE | PG);
    assert_eq!(off.flush, flush::CURRENT, "the reload flushes");
    assert_eq!(
        (off.roots_freed, off.roots_allocated),
        (1, 1),
        "unloaded and rebuilt"
    );
}

#[test]
fn cr0_wp_only_under_shadow_switches_roles() {
    let on = run(false, true, LONG, CrRegister::Cr0, PE | PG);
    assert_eq!(on.flush, flush::CURRENT);
    assert!(!on.same_root);
    assert_eq!((on.roots_freed, on.roots_allocated), (0, 1));
    assert_eq!(on.prev_cached, 3, "the old roots stay cached");
    let off = run(false, false, LONG, CrRegister::Cr0, PE | PG);
    assert_eq!(off.flush, flush::CURRENT);
    assert_eq!(
        (off.roots_freed, off.roots_allocated, off.prev_cached),
        (3, 1, 0)
    );
}

#[test]
fn cr0_pg_clear_flushes_the_guest_and_unloads() {
    for tdp in [false, true] {
        let on = run(tdp, true, LONG, CrRegister::Cr0, PE | WP);
        assert_eq!(on.flush & flush::GUEST, flush::GUEST, "tdp={tdp}");
        assert_eq!(on.prev_cached, 0, "unloaded (tdp={tdp})");
        assert_eq!(on.roots_freed, 0, "roots stay findable by role (tdp={tdp})");
        let off = run(tdp, false, LONG, CrRegister::Cr0, PE | WP);
        assert_eq!(off.flush, flush::GUEST | flush::CURRENT, "tdp={tdp}");
        assert_eq!(off.prev_cached, 0);
        assert_eq!(off.roots_freed, if tdp { 1 } else { 3 });
    }
    // Under TDP the direct root is found again by role.
    assert!(run(true, true, LONG, CrRegister::Cr0, PE | WP).same_root);
}

#[test]
fn cr0_pg_set_resets_without_guest_flush() {
    let state = (PE | WP, CR4_PAE, EFER_LME | EFER_NX);
    for reuse in [false, true] {
        let r = run(false, reuse, state, CrRegister::Cr0, PE | WP | PG);
        assert_eq!(r.flush, flush::CURRENT, "a new root for the new mode");
        assert_eq!(r.roots_allocated, 1);
        assert_eq!(r.roots_freed, if reuse { 0 } else { 1 });
        let t = run(true, reuse, state, CrRegister::Cr0, PE | WP | PG);
        assert_eq!(t.flush & flush::GUEST, 0);
        assert_eq!(
            t.roots_allocated,
            if reuse { 0 } else { 1 },
            "TDP roots do not depend on PG"
        );
    }
}

// ---- CR4 ----

#[test]
fn cr4_role_bit_under_tdp_only_reinitialises_with_reuse() {
    let on = run(true, true, LONG, CrRegister::Cr4, CR4_PAE | CR4_SMEP);
    assert_eq!(
        (on.flush, on.same_root, on.roots_freed),
        (flush::CURRENT, true, 0),
        "SMEP 0->1 flushes"
    );
    let off = run(true, false, LONG, CrRegister::Cr4, CR4_PAE | CR4_SMEP);
    assert_eq!(
        (off.flush, off.roots_freed, off.roots_allocated),
        (flush::CURRENT, 1, 1)
    );
    // SMAP and PKE: no architectural flush; legacy still unloads.
    let on = run(
        true,
        true,
        LONG,
        CrRegister::Cr4,
        CR4_PAE | CR4_SMAP | CR4_PKE,
    );
    assert_eq!((on.flush, on.same_root), (0, true));
    let off = run(
        true,
        false,
        LONG,
        CrRegister::Cr4,
        CR4_PAE | CR4_SMAP | CR4_PKE,
    );
    assert_eq!((off.flush, off.roots_freed), (flush::CURRENT, 1));
}

#[test]
fn cr4_role_bit_outside_the_shadow_root_role_keeps_the_root_with_reuse() {
    // With WP=1, SMAP is in the cpu role (ext) but not the shadow page role.
    let on = run(false, true, LONG, CrRegister::Cr4, CR4_PAE | CR4_SMAP);
    assert_eq!((on.flush, on.same_root, on.prev_cached), (0, true, 2));
    let off = run(false, false, LONG, CrRegister::Cr4, CR4_PAE | CR4_SMAP);
    assert_eq!(
        (off.flush, off.roots_freed, off.prev_cached),
        (flush::CURRENT, 3, 0)
    );
    // With WP=0, SMEP is in the page role (smep_andnot_wp): a root switch.
    let nowp = (PE | PG, CR4_PAE, LONG.2);
    let on = run(false, true, nowp, CrRegister::Cr4, CR4_PAE | CR4_SMEP);
    assert_eq!(
        (on.flush, on.same_root, on.prev_cached),
        (flush::CURRENT, false, 3)
    );
}

#[test]
fn cr4_pcide_set_unloads_shadow_roots() {
    for reuse in [false, true] {
        let r = run(false, reuse, LONG, CrRegister::Cr4, CR4_PAE | CR4_PCIDE);
        assert_eq!(r.prev_cached, 0, "no stale root for a later NOFLUSH load");
        assert_eq!(r.flush, flush::CURRENT, "the reload flushes");
        assert_eq!(
            r.roots_allocated,
            if reuse { 0 } else { 1 },
            "found again by role with reuse"
        );
        let t = run(true, reuse, LONG, CrRegister::Cr4, CR4_PAE | CR4_PCIDE);
        assert_eq!((t.flush, t.same_root, t.roots_freed), (0, true, 0));
    }
}

#[test]
fn cr4_pcide_clear_flushes_the_guest() {
    let state = (LONG.0, CR4_PAE | CR4_PCIDE, LONG.2);
    // (With PCIDs on, each CR3 load of the setup freed the cached roots of PCID 0, so
    // only the current root is loaded here.)
    let on = run(false, true, state, CrRegister::Cr4, CR4_PAE);
    assert_eq!(
        on.flush,
        flush::GUEST | flush::CURRENT,
        "shadow + reuse: unloaded, reloaded"
    );
    assert_eq!(
        (on.same_root, on.roots_freed),
        (true, 0),
        "found again by role"
    );
    let off = run(false, false, state, CrRegister::Cr4, CR4_PAE);
    assert_eq!(
        (off.flush, off.same_root, off.roots_freed),
        (flush::GUEST, true, 0),
        "KVM only flushes"
    );
    let tdp = run(true, true, state, CrRegister::Cr4, CR4_PAE);
    assert_eq!((tdp.flush, tdp.same_root), (flush::GUEST, true));
}

#[test]
fn cr4_pge_toggle_flushes_the_guest_only() {
    for tdp in [false, true] {
        for reuse in [false, true] {
            let r = run(tdp, reuse, LONG, CrRegister::Cr4, CR4_PAE | CR4_PGE);
            assert_eq!(
                (r.flush, r.same_root, r.roots_freed),
                (flush::GUEST, true, 0)
            );
        }
    }
}

#[test]
fn cr4_pae_toggle_flushes_current_and_resets() {
    let state = (PE | PG | WP, 0, 0);
    for reuse in [false, true] {
        let r = run(false, reuse, state, CrRegister::Cr4, CR4_PAE);
        assert_eq!(r.flush, flush::CURRENT);
        assert_eq!(r.roots_allocated, 1, "2-level and PAE roots differ in role");
        let t = run(true, reuse, state, CrRegister::Cr4, CR4_PAE);
        assert_eq!(t.flush, flush::CURRENT);
        assert_eq!(t.roots_allocated, if reuse { 0 } else { 1 });
    }
}

// ---- CR3 and EFER ----

#[test]
fn cr3_same_value_only_flushes() {
    let r = run(false, true, LONG, CrRegister::Cr3, 0x1000);
    assert_eq!(
        (r.flush, r.same_root, r.prev_cached),
        (flush::CURRENT, true, 2)
    );
    let t = run(true, true, LONG, CrRegister::Cr3, 0x1000);
    assert_eq!(
        (t.flush, t.same_root),
        (flush::GUEST, true),
        "TDP: the guest's TLB"
    );
}

#[test]
fn cr3_new_value_under_tdp_keeps_the_direct_root() {
    for reuse in [false, true] {
        let t = run(true, reuse, LONG, CrRegister::Cr3, 0x5000);
        assert_eq!(
            (t.flush, t.same_root, t.roots_allocated),
            (flush::GUEST, true, 0)
        );
    }
}

#[test]
fn efer_nx_is_a_role_bit() {
    let on = run(true, true, LONG, CrRegister::Efer, EFER_LME);
    assert_eq!((on.flush, on.same_root, on.roots_freed), (0, true, 0));
    let off = run(true, false, LONG, CrRegister::Efer, EFER_LME);
    assert_eq!((off.flush, off.roots_freed), (flush::CURRENT, 1));
    // Shadow: NX is forced on in the root role, so the root is kept with reuse.
    let sh = run(false, true, LONG, CrRegister::Efer, EFER_LME);
    assert_eq!((sh.flush, sh.same_root), (0, true));
    // LMA cannot be written.
    let m = Machine::new(4 << 20, 16);
    m.vm(VM, MmuMode::Tdp, true);
    m.regs(VM, LONG.0, 0x1000, LONG.1, LONG.2);
    m.cr(VM, CrRegister::Efer, EFER_NX);
    assert_eq!(
        m.server.borrow().vm(VM).unwrap().regs.efer,
        EFER_NX | EFER_LMA
    );
}
