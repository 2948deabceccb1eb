//! Structural properties of built specs, asserted directly on the spec (not only
//! through `check`), plus proof that `check` catches each kind of broken spec.

use capdl::cdl::{Cap, Kind, ObjectKind, PdKind, Spec};
use capdl::check::{check, Violation};
use capdl::system::Capability;
use capdl::System;
use capdl_spec::{badge, slot};
use std::collections::BTreeSet;
use std::path::Path;

fn system_toml() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("system.toml")).unwrap()
}

fn golden_toml() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/small.toml"))
        .unwrap()
}

fn built(text: &str) -> (System, Spec) {
    let system = System::from_toml(text).unwrap();
    let spec = capdl::build(&system).unwrap();
    (system, spec)
}

fn vmm_cnode(spec: &Spec, vm: usize) -> u32 {
    spec.pds
        .iter()
        .find(|p| p.kind == PdKind::VmmServer && p.vm == Some(vm as u32))
        .unwrap()
        .cnode
}

fn mmu_ep(spec: &Spec) -> u32 {
    spec.find("mmu_ep").unwrap()
}

#[test]
fn shipped_and_golden_systems_pass_every_check() {
    for text in [system_toml(), golden_toml()] {
        let (_, spec) = built(&text);
        assert_eq!(check(&spec), vec![]);
    }
}

#[test]
fn every_cap_refers_to_a_declared_object() {
    let (_, spec) = built(&system_toml());
    for c in &spec.caps {
        assert!((c.holder as usize) < spec.objects.len(), "{c:?}");
        assert!((c.target as usize) < spec.objects.len(), "{c:?}");
    }
    for o in &spec.objects {
        if let Some(ut) = o.untyped {
            assert!(matches!(
                spec.objects[ut as usize].kind,
                ObjectKind::Untyped { .. }
            ));
        }
    }
}

#[test]
fn only_granted_vms_hold_nx_huge_page_control() {
    for text in [system_toml(), golden_toml()] {
        let (system, spec) = built(&text);
        let ep = mmu_ep(&spec);
        let mut granted_seen = 0;
        for (i, vm) in system.vms.iter().enumerate() {
            let cnode = vmm_cnode(&spec, i);
            let nx: Vec<&Cap> = spec
                .caps_of(cnode)
                .filter(|c| c.target == ep && c.badge & badge::NX_HUGE_PAGE_CONTROL != 0)
                .collect();
            if vm.has(Capability::NxHugePageControl) {
                assert_eq!(nx.len(), 1, "vm {}", vm.name);
                assert_eq!(nx[0].badge, badge::nx_huge_page_control(vm.id));
                assert_eq!(nx[0].slot, slot::vmm::NX_HUGE_PAGE_CONTROL);
                granted_seen += 1;
            } else {
                assert!(
                    nx.is_empty(),
                    "vm {} holds NxHugePageControl without the grant",
                    vm.name
                );
            }
        }
        assert!(
            granted_seen > 0,
            "the test systems grant the capability to some VM"
        );
        // Nothing outside the granted vmm-servers has a capability with that bit.
        let granted_cnodes: BTreeSet<u32> = system
            .vms
            .iter()
            .enumerate()
            .filter(|(_, v)| v.has(Capability::NxHugePageControl))
            .map(|(i, _)| vmm_cnode(&spec, i))
            .collect();
        for c in spec
            .caps
            .iter()
            .filter(|c| c.target == ep && c.badge & badge::NX_HUGE_PAGE_CONTROL != 0)
        {
            assert!(granted_cnodes.contains(&c.holder));
        }
    }
}

#[test]
fn each_vmm_server_has_a_unique_mmu_badge_naming_its_vm() {
    let (system, spec) = built(&system_toml());
    let ep = mmu_ep(&spec);
    let mut badges = BTreeSet::new();
    for (i, vm) in system.vms.iter().enumerate() {
        let cnode = vmm_cnode(&spec, i);
        let ordinary: Vec<&Cap> = spec
            .caps_of(cnode)
            .filter(|c| c.target == ep && c.badge & badge::NX_HUGE_PAGE_CONTROL == 0)
            .collect();
        assert_eq!(ordinary.len(), 1);
        let b = ordinary[0].badge;
        assert_eq!(b, badge::mmu_client(vm.id));
        assert_eq!(
            badge::decode_mmu_badge(b),
            badge::MmuCaller::Vm {
                vm_id: vm.id,
                nx_control: false
            }
        );
        assert!(badges.insert(b), "badge {b:#x} twice");
    }
}

#[test]
fn page_table_pool_is_writable_only_by_the_mmu_server() {
    let (_, spec) = built(&system_toml());
    let mmu_vspace_tables = tables_of(
        &spec,
        spec.pds
            .iter()
            .find(|p| p.kind == PdKind::MmuServer)
            .unwrap()
            .vspace,
    );
    let mut pool_mappings = 0;
    for c in &spec.caps {
        let target = &spec.objects[c.target as usize];
        if target.name != "pool" {
            continue;
        }
        pool_mappings += 1;
        let writable = c.rights & capdl_spec::rights::WRITE != 0;
        assert_eq!(writable, mmu_vspace_tables.contains(&c.holder), "{c:?}");
    }
    // 16M pool in 2M frames: mmu-server plus two vmm-servers map all 8.
    assert_eq!(pool_mappings, 8 * 3);
}

/// Every paging structure reachable from `root`.
fn tables_of(spec: &Spec, root: u32) -> BTreeSet<u32> {
    let mut seen = BTreeSet::from([root]);
    let mut todo = vec![root];
    while let Some(t) = todo.pop() {
        for c in spec.caps_of(t) {
            let k = spec.objects[c.target as usize].kind.kind();
            if matches!(k, Kind::Pdpt | Kind::Pd | Kind::Pt) && seen.insert(c.target) {
                todo.push(c.target);
            }
        }
    }
    seen
}

#[test]
fn guest_ram_is_mapped_into_its_vmm_server_and_the_mmu_server_only() {
    let (system, spec) = built(&system_toml());
    let mmu = tables_of(
        &spec,
        spec.pds
            .iter()
            .find(|p| p.kind == PdKind::MmuServer)
            .unwrap()
            .vspace,
    );
    for (i, vm) in system.vms.iter().enumerate() {
        let pd = spec.pds.iter().find(|p| p.vm == Some(i as u32)).unwrap();
        let own = tables_of(&spec, pd.vspace);
        let name = format!("vm_{}_ram", vm.name);
        let holders: Vec<u32> = spec
            .caps
            .iter()
            .filter(|c| spec.objects[c.target as usize].name.starts_with(&name))
            .map(|c| c.holder)
            .collect();
        assert!(!holders.is_empty());
        for h in holders {
            assert!(
                own.contains(&h) || mmu.contains(&h),
                "vm {} RAM mapped elsewhere",
                vm.name
            );
        }
    }
}

// --- check catches each kind of breakage -------------------------------------------

#[test]
fn check_catches_an_nx_capability_minted_without_the_grant() {
    let (system, mut spec) = built(&system_toml());
    let i = system
        .vms
        .iter()
        .position(|v| !v.has(Capability::NxHugePageControl))
        .unwrap();
    let cnode = vmm_cnode(&spec, i);
    let ep = mmu_ep(&spec);
    spec.caps.push(Cap {
        holder: cnode,
        slot: slot::vmm::NX_HUGE_PAGE_CONTROL,
        target: ep,
        rights: capdl_spec::rights::WRITE | capdl_spec::rights::GRANT,
        badge: badge::nx_huge_page_control(system.vms[i].id),
        guard: 0,
        guard_size: 0,
        uncached: false,
    });
    assert!(check(&spec)
        .iter()
        .any(|v| matches!(v, Violation::NxCapNotGranted { .. })));
}

#[test]
fn check_catches_a_granted_vm_without_its_capability() {
    let (system, mut spec) = built(&system_toml());
    let i = system
        .vms
        .iter()
        .position(|v| v.has(Capability::NxHugePageControl))
        .unwrap();
    let cnode = vmm_cnode(&spec, i);
    spec.caps
        .retain(|c| !(c.holder == cnode && c.slot == slot::vmm::NX_HUGE_PAGE_CONTROL));
    assert!(check(&spec)
        .iter()
        .any(|v| matches!(v, Violation::NxCapMissing { .. })));
}

#[test]
fn check_catches_a_badge_collision() {
    let (_, mut spec) = built(&system_toml());
    let (a, b) = (vmm_cnode(&spec, 0), vmm_cnode(&spec, 1));
    let ep = mmu_ep(&spec);
    let badge_a = spec
        .caps
        .iter()
        .find(|c| c.holder == a && c.target == ep)
        .unwrap()
        .badge;
    for c in spec
        .caps
        .iter_mut()
        .filter(|c| c.holder == b && c.slot == slot::vmm::MMU_EP)
    {
        c.badge = badge_a;
    }
    let v = check(&spec);
    assert!(
        v.iter()
            .any(|v| matches!(v, Violation::DuplicateVmBadge { .. })),
        "{v:?}"
    );
    assert!(
        v.iter()
            .any(|v| matches!(v, Violation::MmuBadgeMismatch { .. })),
        "{v:?}"
    );
}

#[test]
fn check_catches_dangling_and_misplaced_caps() {
    let (_, mut spec) = built(&system_toml());
    let n = spec.objects.len() as u32;
    spec.caps[0].target = n + 5;
    assert!(check(&spec)
        .iter()
        .any(|v| matches!(v, Violation::DanglingCap { cap: 0 })));

    let (_, mut spec) = built(&system_toml());
    // A frame in a PML4 entry is not an x86-64 mapping.
    let pml4 = spec.pds[0].vspace;
    let frame = spec.pds[0].boot_params;
    spec.caps.push(Cap {
        holder: pml4,
        slot: 0x1ff,
        target: frame,
        rights: 1,
        badge: 0,
        guard: 0,
        guard_size: 0,
        uncached: false,
    });
    assert!(check(&spec)
        .iter()
        .any(|v| matches!(v, Violation::BadSlot { .. })));

    let (_, mut spec) = built(&system_toml());
    let dup = spec.caps[0].clone();
    spec.caps.push(dup);
    assert!(check(&spec)
        .iter()
        .any(|v| matches!(v, Violation::DuplicateSlot { .. })));
}

#[test]
fn check_catches_an_overfull_untyped_and_a_wide_badge() {
    let (_, mut spec) = built(&system_toml());
    let ut = spec.find("pool_ut").unwrap();
    if let ObjectKind::Untyped { size_bits } = &mut spec.objects[ut as usize].kind {
        *size_bits -= 1;
    }
    assert!(check(&spec)
        .iter()
        .any(|v| matches!(v, Violation::UntypedOverflow { .. })));

    let (_, mut spec) = built(&system_toml());
    let c = spec.caps.iter_mut().find(|c| c.badge != 0).unwrap();
    c.badge = 1 << 28;
    assert!(check(&spec)
        .iter()
        .any(|v| matches!(v, Violation::BadgeTooWide { .. })));
}

#[test]
fn at_most_as_many_vms_as_the_mmu_server_physmap_holds() {
    // Checked at compile time; the test names the rule.
    // The mmu-server maps the pool and each VM's RAM as PhysMap regions.
    const { assert!(capdl_spec::layout::MAX_VMS < physmem::MAX_REGIONS) };
}

#[test]
fn a_vm_priority_sets_its_vmm_server_tcb_and_the_nx_request_is_a_vm_flag() {
    let text = r#"
[vmm_server]
priority = 100
[[vm]]
name = "first"
image = "hello"
priority = 103
caps = ["NxHugePageControl"]
disable_nx_huge_pages = true
[[vm]]
name = "second"
image = "hello"
"#;
    let (_, spec) = built(text);
    assert_eq!(check(&spec), vec![]);
    let prio = |name: &str| match &spec.objects[spec.find(name).unwrap() as usize].kind {
        ObjectKind::Tcb(t) => (t.prio, t.max_prio),
        other => panic!("{name} is {other:?}"),
    };
    assert_eq!(prio("vmm_first_tcb"), (103, 103));
    assert_eq!(prio("vmm_second_tcb"), (100, 100));
    let flags: Vec<u8> = spec.vms.iter().map(|v| v.flags).collect();
    assert_ne!(flags[0] & capdl_spec::vm_flags::DISABLE_NX_HUGE_PAGES, 0);
    assert_eq!(flags[1] & capdl_spec::vm_flags::DISABLE_NX_HUGE_PAGES, 0);
    // Out of range names the field.
    let bad = text.replace("priority = 103", "priority = 255");
    let err = System::from_toml(&bad).unwrap_err().to_string();
    assert!(
        err.starts_with("vm[0].priority: 255 is out of range"),
        "{err}"
    );
}
