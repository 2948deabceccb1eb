//! The spec in the capDL textual syntax (`arch x86_64`, `objects { }`, `caps { }`,
//! `irq maps { }`), as the capDL tool reads it.
//!
//! Runs of array elements are printed compactly and still exactly: consecutive
//! objects `pool[0]`, `pool[1]`, ... of one kind become `pool[8] = frame (2M)`, and
//! consecutive slots holding consecutive elements with the same parameters become one
//! range mapping `0x100: pool[0..7] (RW)`. Everything is printed in table order, so
//! the text is a pure function of the spec.

use crate::cdl::{Cap, Kind, Object, ObjectKind, Spec};
use crate::size::format_size;
use capdl_spec::{rights, tcb_slot, vm_flags, NxMode, PdKind};
use std::fmt::Write;

fn nx_mode_word(m: NxMode) -> &'static str {
    match m {
        NxMode::Auto => "auto",
        NxMode::On => "on",
        NxMode::Off => "off",
        NxMode::Force => "force",
        NxMode::Never => "never",
    }
}

fn object_type(o: &Object) -> String {
    match &o.kind {
        ObjectKind::Endpoint => "ep".into(),
        ObjectKind::Notification => "notification".into(),
        ObjectKind::Tcb(t) => format!(
            "tcb (addr: {:#x}, sp: {:#x}, prio: {}, max_prio: {}, affinity: {}, elf: {}, fault_ep: {})",
            t.ipc_buffer_vaddr, t.sp, t.prio, t.max_prio, t.affinity, t.elf, t.fault_ep
        ),
        ObjectKind::CNode { size_bits } => format!("cnode ({size_bits} bits)"),
        ObjectKind::Untyped { size_bits } => format!("ut ({size_bits} bits)"),
        ObjectKind::Pml4 => "pml4".into(),
        ObjectKind::Pdpt => "pdpt".into(),
        ObjectKind::Pd => "pd".into(),
        ObjectKind::Pt => "pt".into(),
        ObjectKind::Frame { size_bits, paddr } => {
            let size = if *size_bits == 21 { "2M".to_string() } else { format!("{}k", 1u64 << (size_bits - 10)) };
            match paddr {
                Some(p) => format!("frame ({size}, paddr: {p:#x})"),
                None => format!("frame ({size})"),
            }
        }
        ObjectKind::IoPorts(r) => format!("io_ports (ports: [{:#x}..{:#x}])", r.first, r.last),
        ObjectKind::Irq { .. } => "irq".into(),
    }
}

fn rights_word(r: u8) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (rights::READ, 'R'),
        (rights::WRITE, 'W'),
        (rights::GRANT, 'G'),
    ] {
        if r & bit != 0 {
            s.push(c);
        }
    }
    s
}

fn cap_params(spec: &Spec, c: &Cap) -> String {
    let target = spec.object(c.target).map(|o| o.kind.kind());
    let mut params = Vec::new();
    match target {
        Some(Kind::Endpoint | Kind::Notification | Kind::Frame) => {
            if c.rights != 0 {
                params.push(rights_word(c.rights));
            }
            if c.badge != 0 {
                params.push(format!("badge: {:#x}", c.badge));
            }
            if c.uncached {
                params.push("uncached".into());
            }
        }
        Some(Kind::CNode) => {
            params.push(format!("guard: {}", c.guard));
            params.push(format!("guard_size: {}", c.guard_size));
        }
        _ => {}
    }
    if params.is_empty() {
        String::new()
    } else {
        format!(" ({})", params.join(", "))
    }
}

fn slot_name(holder: &Object, slot: u64) -> String {
    match holder.kind.kind() {
        Kind::Tcb => match slot {
            tcb_slot::CSPACE => "cspace".into(),
            tcb_slot::VSPACE => "vspace".into(),
            tcb_slot::IPC_BUFFER => "ipc_buffer_slot".into(),
            _ => slot.to_string(),
        },
        Kind::CNode | Kind::Irq => slot.to_string(),
        _ => format!("{slot:#x}"),
    }
}

/// Can `next` extend a run ending in `prev` (consecutive slot, next element of the
/// same array, same parameters)?
fn continues(spec: &Spec, prev: &Cap, next: &Cap) -> bool {
    let (Some(a), Some(b)) = (spec.object(prev.target), spec.object(next.target)) else {
        return false;
    };
    next.slot == prev.slot + 1
        && a.name == b.name
        && matches!((a.index, b.index), (Some(i), Some(j)) if j == i + 1)
        && (prev.rights, prev.badge, prev.uncached, prev.guard_size)
            == (next.rights, next.badge, next.uncached, next.guard_size)
}

fn print_objects(spec: &Spec, out: &mut String) {
    // Children of an untyped are printed inside it.
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spec.objects.len()];
    for (j, o) in spec.objects.iter().enumerate() {
        if let Some(v) = o.untyped.and_then(|ut| children.get_mut(ut as usize)) {
            v.push(j);
        }
    }
    let mut i = 0;
    let mut section = 0;
    while i < spec.objects.len() {
        while section < spec.sections.len() && spec.sections[section].first_object as usize <= i {
            if section > 0 {
                out.push('\n');
            }
            let _ = writeln!(out, "  -- {}", spec.sections[section].title);
            section += 1;
        }
        let o = &spec.objects[i];
        if o.untyped.is_some() {
            i += 1;
            continue;
        }
        let run = array_run(spec, i);
        print_decl(spec, i, run, "  ", out);
        if matches!(o.kind, ObjectKind::Untyped { .. }) {
            let _ = writeln!(out, " {{");
            let mut j = 0;
            let kids = &children[i];
            while j < kids.len() {
                let run = array_run(spec, kids[j]);
                print_decl(spec, kids[j], run, "    ", out);
                let _ = writeln!(out);
                // A run is contiguous in the table, so it is contiguous among the kids.
                j += run;
            }
            let _ = writeln!(out, "  }}");
        } else {
            let _ = writeln!(out);
        }
        i += run;
    }
}

/// How many objects from `start` form one array declaration.
fn array_run(spec: &Spec, start: usize) -> usize {
    let first = &spec.objects[start];
    if first.index != Some(0) {
        return 1;
    }
    let mut n = 1;
    while let Some(o) = spec.objects.get(start + n) {
        if o.name == first.name
            && o.index == Some(n as u32)
            && o.kind == first.kind
            && o.untyped == first.untyped
        {
            n += 1;
        } else {
            break;
        }
    }
    n
}

fn print_decl(spec: &Spec, i: usize, run: usize, indent: &str, out: &mut String) {
    let o = &spec.objects[i];
    let _ = match o.index {
        Some(_) if run > 1 || o.index == Some(0) => {
            write!(out, "{indent}{}[{run}] = {}", o.name, object_type(o))
        }
        _ => write!(out, "{indent}{} = {}", o.reference(), object_type(o)),
    };
}

fn print_caps(spec: &Spec, out: &mut String) {
    // Holders in object order; each holder's capabilities in slot order.
    let mut by_holder: Vec<Vec<&Cap>> = vec![Vec::new(); spec.objects.len()];
    for c in &spec.caps {
        if let Some(v) = by_holder.get_mut(c.holder as usize) {
            v.push(c);
        }
    }
    for (holder, mut caps) in spec.objects.iter().zip(by_holder) {
        if caps.is_empty() {
            continue;
        }
        caps.sort_by_key(|c| c.slot);
        let _ = writeln!(out, "  {} {{", holder.reference());
        let mut k = 0;
        while k < caps.len() {
            let mut end = k;
            while end + 1 < caps.len() && continues(spec, caps[end], caps[end + 1]) {
                end += 1;
            }
            let c = caps[k];
            let target = match spec.object(c.target) {
                Some(t) if end > k => {
                    let last = spec
                        .object(caps[end].target)
                        .and_then(|o| o.index)
                        .unwrap_or(0);
                    format!("{}[{}..{}]", t.name, t.index.unwrap_or(0), last)
                }
                Some(t) => t.reference(),
                None => format!("undeclared_{}", c.target),
            };
            let comment =
                if holder.kind.kind() == Kind::Tcb && c.slot == tcb_slot::BOUND_NOTIFICATION {
                    "  -- bound notification"
                } else {
                    ""
                };
            let _ = writeln!(
                out,
                "    {}: {target}{}{comment}",
                slot_name(holder, c.slot),
                cap_params(spec, c)
            );
            k = end + 1;
        }
        let _ = writeln!(out, "  }}");
    }
}

fn print_header(spec: &Spec, out: &mut String) {
    let _ = writeln!(
        out,
        "-- capvisor system, generated by `capdl print` from a system.toml. Do not edit."
    );
    let _ = writeln!(
        out,
        "-- nx_huge_pages: mode {}, recovery ratio {}, period {} ms; page-table pool {}",
        nx_mode_word(spec.nx.mode),
        spec.nx.recovery_ratio,
        spec.nx.recovery_period_ms,
        format_size(spec.frame_pool)
    );
    for (i, pd) in spec.pds.iter().enumerate() {
        let what = match pd.kind {
            PdKind::MmuServer => "mmu-server",
            PdKind::VmmServer => "vmm-server",
            PdKind::UartDriver => "16550 UART driver",
            PdKind::TimerDriver => "timer driver",
        };
        let _ = writeln!(
            out,
            "-- pd {i} {}: {what} (fault and console badge {:#x})",
            pd.name,
            i + 1
        );
    }
    for vm in &spec.vms {
        let mut caps = Vec::new();
        if vm.flags & vm_flags::NX_HUGE_PAGE_CONTROL != 0 {
            caps.push("NxHugePageControl");
        }
        // Only when asked, so that specs without the request print as before.
        let disable_nx = if vm.flags & vm_flags::DISABLE_NX_HUGE_PAGES != 0 {
            ", disable_nx_huge_pages"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "-- vm {} id {}: {} RAM, mmu {}, cr0_wp {}, root_reuse {}, debug_exit {}, caps [{}]{disable_nx}, image \"{}\", cmdline \"{}\"",
            vm.name,
            vm.id,
            format_size(vm.memory),
            if vm.mmu == 0 { "tdp" } else { "shadow" },
            if vm.flags & vm_flags::CR0_WP_GUEST_OWNED != 0 { "guest-owned" } else { "trapped" },
            vm.flags & vm_flags::ROOT_REUSE != 0,
            vm.flags & vm_flags::DEBUG_EXIT != 0,
            caps.join(", "),
            vm.image,
            vm.cmdline
        );
    }
}

/// The whole spec as capDL text.
pub fn to_capdl(spec: &Spec) -> String {
    let mut out = String::new();
    print_header(spec, &mut out);
    out.push_str("\narch x86_64\n\nobjects {\n");
    print_objects(spec, &mut out);
    out.push_str("}\n\ncaps {\n");
    print_caps(spec, &mut out);
    out.push_str("}\n");
    let mut irqs: Vec<_> = spec
        .objects
        .iter()
        .filter_map(|o| match o.kind {
            ObjectKind::Irq { irq } => Some((irq, o.reference())),
            _ => None,
        })
        .collect();
    irqs.sort();
    if !irqs.is_empty() {
        out.push_str("\nirq maps {\n");
        for (irq, name) in irqs {
            let _ = writeln!(out, "  {irq}: {name}");
        }
        out.push_str("}\n");
    }
    out
}
