//! The `--stats-json` document: `instructions`, `exits`, `exits_by_reason`,
//! `ipc_calls`, `mmu` (the mmu-server's statistics under `ipc::STAT_NAMES`), and the
//! same counters at every guest checkpoint, with `mappings`: how the MMU maps each
//! `--watch` address there (`addr`, `level` 0/1/2/3, `exec`, `write`,
//! `nx_disallowed`, `nx_split`).

use serde_json::{json, Map, Value};
use vmm_server::stats::{VmStats, WatchedMapping};
use vmm_server::VmOutcome;

use crate::runtime::RunResult;

/// The counters of one snapshot as a JSON object.
pub fn stats_json(s: &VmStats) -> Value {
    let mut by_reason = Map::new();
    for (name, count) in s.exits.iter() {
        by_reason.insert(name.to_string(), json!(count));
    }
    let mut mmu = Map::new();
    for (name, value) in s.mmu.entries() {
        mmu.insert(name.to_string(), json!(value));
    }
    json!({
        "instructions": s.instructions,
        "exits": s.exits.total(),
        "exits_by_reason": by_reason,
        "ipc_calls": s.ipc_calls,
        "mmu": mmu,
    })
}

/// One watched address's mapping.
pub fn mapping_json(w: &WatchedMapping) -> Value {
    use ipc::mapping_flags as f;
    let m = &w.mapping;
    json!({
        "addr": format!("{:#x}", w.addr),
        "level": m.level,
        "exec": m.flags & f::EXEC != 0,
        "write": m.flags & f::WRITE != 0,
        "nx_disallowed": m.flags & f::NX_DISALLOWED != 0,
        "nx_split": m.flags & f::NX_SPLIT != 0,
    })
}

/// The whole document for a run.
pub fn run_json(r: &RunResult, mmu_mode: &str, cr0_wp: &str, root_reuse: bool) -> Value {
    let mut doc = stats_json(&r.stats);
    let obj = doc.as_object_mut().expect("stats_json builds an object");
    obj.insert("mmu_mode".into(), json!(mmu_mode));
    obj.insert("cr0_wp".into(), json!(cr0_wp));
    obj.insert("root_reuse".into(), json!(root_reuse));
    match r.outcome {
        VmOutcome::Exited { status } => {
            obj.insert("status".into(), json!(status));
            obj.insert("failure".into(), Value::Null);
        }
        VmOutcome::Failed(f) => {
            obj.insert("status".into(), Value::Null);
            obj.insert("failure".into(), json!(f.to_string()));
        }
    }
    let checkpoints: Vec<Value> = r
        .checkpoints
        .iter()
        .map(|c| {
            let mut v = stats_json(&c.stats);
            if let Some(o) = v.as_object_mut() {
                o.insert("step".into(), json!(c.step));
                let mappings: Vec<Value> = c.mappings.iter().map(mapping_json).collect();
                o.insert("mappings".into(), Value::Array(mappings));
            }
            v
        })
        .collect();
    obj.insert("checkpoints".into(), Value::Array(checkpoints));
    doc
}
