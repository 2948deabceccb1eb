//! CR0/CR3/CR4/EFER validation (the #GP(0) rules of SDM Vol. 2B MOV CR and Vol. 3A
//! 2.5 / 9.8.5), the hardware view of the paging registers under shadow paging and
//! TDP, and the CPUID model's consistency with what CR4 accepts.

use vmm_server::cpu_model;
use vmm_server::cr::{self, cr0, cr4, efer, CrFault, GuestCrs};
use vmm_server::hw;

fn prot32() -> GuestCrs {
    GuestCrs {
        cr0: cr0::PE | cr0::ET,
        cr3: 0,
        cr4: 0,
        efer: 0,
    }
}

fn long64() -> GuestCrs {
    GuestCrs {
        cr0: cr0::PE | cr0::ET | cr0::PG | cr0::WP,
        cr3: 0x1000,
        cr4: cr4::PAE,
        efer: efer::LME | efer::LMA | efer::NXE,
    }
}

fn is_gp<T: core::fmt::Debug>(r: Result<T, CrFault>) -> bool {
    matches!(r, Err(CrFault::GeneralProtection(_)))
}

#[test]
fn cr0_illegal_combinations_are_gp() {
    let g = prot32();
    assert!(
        is_gp(cr::write_cr0(&g, cr0::PE | cr0::NW, false)),
        "NW without CD"
    );
    assert!(is_gp(cr::write_cr0(&g, cr0::PG, false)), "PG without PE");
    assert!(
        is_gp(cr::write_cr0(&g, (1 << 32) | cr0::PE, false)),
        "bits 63:32"
    );
    // Enabling paging with LME but without PAE.
    let lme = GuestCrs {
        efer: efer::LME,
        ..g
    };
    assert!(is_gp(cr::write_cr0(&lme, cr0::PE | cr0::PG, false)));
    // Clearing PG in 64-bit mode.
    assert!(is_gp(cr::write_cr0(&long64(), cr0::PE, true)));
    // Real mode is not modelled: a clear stop, not a #GP.
    assert!(matches!(
        cr::write_cr0(&g, 0, false),
        Err(CrFault::Unsupported(_))
    ));
}

#[test]
fn cr0_pg_with_lme_activates_ia32e_mode_and_clearing_it_leaves() {
    let g = GuestCrs {
        cr4: cr4::PAE,
        efer: efer::LME,
        ..prot32()
    };
    let w = cr::write_cr0(&g, cr0::PE | cr0::PG, false).unwrap();
    assert_eq!(w.efer & efer::LMA, efer::LMA);
    assert_eq!(w.cr0 & cr0::ET, cr0::ET, "ET is hardwired");
    // From compatibility mode (CS.L = 0) paging may be turned off: LMA follows.
    let off = cr::write_cr0(&long64(), cr0::PE, false).unwrap();
    assert_eq!(off.efer & efer::LMA, 0);
    // WP toggles in 64-bit mode are fine and leave EFER alone.
    let l = long64();
    let w = cr::write_cr0(&l, l.cr0 & !cr0::WP, true).unwrap();
    assert_eq!((w.cr0 & cr0::WP, w.efer), (0, l.efer));
}

#[test]
fn cr4_rules() {
    let allowed = cpu_model::allowed_cr4();
    let l = long64();
    assert!(
        is_gp(cr::write_cr4(&l, 0, allowed)),
        "clearing PAE in IA-32e mode"
    );
    assert!(
        is_gp(cr::write_cr4(&l, cr4::PAE | cr4::SMAP, allowed)),
        "SMAP is not in the model"
    );
    assert!(
        is_gp(cr::write_cr4(&l, cr4::PAE | (1 << 13), allowed)),
        "VMXE: no nested VMX"
    );
    // PCIDE needs IA-32e mode and CR3[11:0] = 0.
    assert!(is_gp(cr::write_cr4(&prot32(), cr4::PCIDE, allowed)));
    let with_pcid = GuestCrs { cr3: 0x1005, ..l };
    assert!(is_gp(cr::write_cr4(
        &with_pcid,
        cr4::PAE | cr4::PCIDE,
        allowed
    )));
    assert_eq!(
        cr::write_cr4(&l, cr4::PAE | cr4::PCIDE | cr4::PGE | cr4::SMEP, allowed),
        Ok(cr4::PAE | cr4::PCIDE | cr4::PGE | cr4::SMEP)
    );
}

#[test]
fn cr3_rules() {
    let l = long64();
    assert!(
        is_gp(cr::write_cr3(&l, 1 << 45, cpu_model::MAXPHYADDR)),
        "above MAXPHYADDR"
    );
    assert!(
        is_gp(cr::write_cr3(&l, 1 << 63, cpu_model::MAXPHYADDR)),
        "bit 63 without PCIDE"
    );
    let p = GuestCrs {
        cr4: l.cr4 | cr4::PCIDE,
        ..l
    };
    assert_eq!(
        cr::write_cr3(&p, (1 << 63) | 0x2003, 40),
        Ok((0x2003, true)),
        "NOFLUSH"
    );
    assert_eq!(
        cr::write_cr3(&prot32(), 0xdead_0000_1000, 40),
        Ok((0x1000, false)),
        "32-bit"
    );
}

#[test]
fn efer_rules() {
    let g = prot32();
    assert!(is_gp(cr::write_efer(&g, 1 << 12)), "reserved bit");
    assert_eq!(
        cr::write_efer(&g, efer::LME | efer::NXE | efer::SCE),
        Ok(efer::LME | efer::NXE | efer::SCE)
    );
    assert!(
        is_gp(cr::write_efer(&long64(), efer::NXE)),
        "LME change with paging on"
    );
    // LMA is read-only: a written LMA is ignored.
    assert_eq!(cr::write_efer(&g, efer::LMA), Ok(0));
    assert_eq!(
        cr::write_efer(&long64(), efer::LME | efer::NXE | efer::SCE),
        Ok(long64().efer | efer::SCE)
    );
}

#[test]
fn lmsw_loads_the_low_bits_but_cannot_clear_pe() {
    assert_eq!(
        cr::lmsw_value(cr0::PE | cr0::TS | cr0::PG, 0),
        cr0::PE | cr0::PG
    );
    assert_eq!(cr::lmsw_value(cr0::PG, 0xf), cr0::PG | 0xf);
}

#[test]
fn shadow_hardware_state_runs_on_the_root_with_paging_and_wp_forced() {
    // A 32-bit guest with paging off runs on a PAE identity root.
    let h = hw::shadow(&prot32(), 0x4000_3000, 3);
    assert_eq!(
        h.cr0 & (cr0::PG | cr0::WP | cr0::PE),
        cr0::PG | cr0::WP | cr0::PE
    );
    assert_eq!(h.cr3, 0x4000_3000);
    assert_eq!(h.cr4 & cr4::PAE, cr4::PAE);
    assert_eq!(h.efer & (efer::LME | efer::LMA), 0);
    assert_eq!(h.efer & efer::NXE, efer::NXE, "SPTEs use NX");
    // Paging off: SMEP must not make the user-accessible identity map unusable.
    let smep = GuestCrs {
        cr4: cr4::SMEP,
        ..prot32()
    };
    assert_eq!(hw::shadow(&smep, 0x4000_3000, 3).cr4 & cr4::SMEP, 0);
    // A long-mode guest with WP=0 and PCIDs: 4-level root, WP still 1, PCID kept.
    let g = GuestCrs {
        cr0: long64().cr0 & !cr0::WP,
        cr3: 0x5007,
        cr4: cr4::PAE | cr4::PCIDE,
        ..long64()
    };
    let h = hw::shadow(&g, 0x4000_8000, 4);
    assert_eq!(h.cr0 & cr0::WP, cr0::WP);
    assert_eq!(h.cr3, 0x4000_8007);
    assert_eq!(h.efer & efer::LMA, efer::LMA);
    // TDP: the guest's own registers; the EPTP names the root with a 4-level walk.
    assert_eq!(hw::tdp(&g).cr3, 0x5007);
    assert_eq!(hw::eptp(0x4000_1000, 4, false), 0x4000_1000 | (3 << 3) | 6);
}

#[test]
fn cpuid_model_is_consistent() {
    let [max, b, c, d] = cpu_model::cpuid(0, 0);
    assert_eq!(max, 7);
    let vendor: Vec<u8> = [b, d, c].iter().flat_map(|r| r.to_le_bytes()).collect();
    assert_eq!(&vendor, b"GenuineIntel");
    let [_, _, ecx1, edx1] = cpu_model::cpuid(1, 0);
    assert_ne!(ecx1 & cpu_model::ecx1::PCID, 0);
    assert_ne!(edx1 & cpu_model::edx1::PAE, 0);
    // No SSE/FXSR/x87 (bits 0, 24, 25, 26 of EDX; SSE3+ in ECX) is advertised.
    assert_eq!(edx1 & ((1 << 0) | (1 << 24) | (1 << 25) | (1 << 26)), 0);
    assert_eq!(ecx1 & !cpu_model::ecx1::PCID, 0);
    let [ext_max, ..] = cpu_model::cpuid(0x8000_0000, 0);
    assert_eq!(ext_max, 0x8000_0008);
    let [bits, ..] = cpu_model::cpuid(0x8000_0008, 0);
    assert_eq!(bits & 0xff, 40, "MAXPHYADDR");
    // Every CR4 feature bit the model accepts is advertised, and SMEP is.
    let [_, ebx7, ..] = cpu_model::cpuid(7, 0);
    assert_ne!(ebx7 & cpu_model::ebx7::SMEP, 0);
    assert_eq!(
        cpu_model::allowed_cr4() & (cr4::SMAP | cr4::PKE | cr4::LA57),
        0
    );
    // Leaves above the maximum repeat the highest basic leaf (Intel behaviour).
    assert_eq!(cpu_model::cpuid(0x40, 0), cpu_model::cpuid(7, 0));
}
