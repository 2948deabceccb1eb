//! Shared test helpers.

use proptest::prelude::*;

/// A random valid system.toml: 1..=5 VMs with random sizes, modes, ids and grants.
pub fn arb_system() -> impl Strategy<Value = String> {
    let vm = (
        1u64..=3000,                     // memory in 4K pages (up to ~12M)
        any::<bool>(),                   // shadow?
        any::<bool>(),                   // NxHugePageControl?
        proptest::option::of(1u16..=40), // explicit id
        any::<bool>(),                   // debug_exit
    );
    (
        proptest::collection::vec(vm, 1..=5),
        1u64..=600,
        any::<bool>(),
    )
        .prop_map(|(vms, pool_pages, hpet)| {
            let mut s = format!("[mmu_server]\nframe_pool = \"{}K\"\n", pool_pages * 4);
            if hpet {
                s.push_str("[drivers.timer]\nkind = \"hpet\"\n");
            }
            let mut ids = Vec::new();
            for (i, (pages, shadow, nx, id, exit)) in vms.into_iter().enumerate() {
                s.push_str(&format!(
                    "[[vm]]\nname = \"vm{i}\"\nimage = \"g\"\nmemory = \"{}K\"\n",
                    pages * 4
                ));
                if shadow {
                    s.push_str("mmu = \"shadow\"\n");
                }
                if nx {
                    s.push_str("caps = [\"NxHugePageControl\"]\n");
                }
                if let Some(id) = id.filter(|id| !ids.contains(id)) {
                    ids.push(id);
                    s.push_str(&format!("id = {id}\n"));
                }
                if exit {
                    s.push_str("debug_exit = true\n");
                }
            }
            s
        })
}
