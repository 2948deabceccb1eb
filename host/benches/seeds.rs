//! The seeds end to end (MMU_REFERENCE.md section 7): kernexec, a KERNEXEC-style guest
//! that clears and sets CR0.WP around every write to read-only kernel data, booted on
//! the host runtime exactly as `capvisor run` boots it, in the matrix of the seed mails:
//!
//! | variant | seed it measures |
//! |---|---|
//! | TDP, CR0.WP guest-owned, RootReuse on / off | 3 (no exit at all for a WP toggle) |
//! | TDP, CR0.WP intercepted, RootReuse on / off | 1 (a WP toggle keeps the TDP roots) |
//! | shadow, RootReuse on / off | 1 and 2 under shadow paging (WP is in the root role) |
//!
//! The variants are interleaved, one run of each per round with the starting variant
//! rotated every round, so that the machine's load drifts over all of them alike; the
//! report gives per variant the median wall time, the median CPU time of the vCPU
//! thread (the vmm-server's thread, which also waits for the mmu-server's replies) and
//! of the whole process (both servers, the timer),
//! the exits and roots allocated, and the on/off ratios of medians taken in this one run.
//!
//! `cargo bench -p capvisor --bench seeds` after `make guests`; `make bench` runs it
//! (`cargo test --benches` runs each variant once on a short run instead).
//! Environment: `SEEDS_ROUNDS` (default 5; 3 with `BENCH_QUICK`), `SEEDS_APPEND` (the
//! guest's command line, default `iters=20000 ws=64`), `SEEDS_GUEST` (default
//! `build/guests/kernexec.elf`).

use capvisor::runtime::{self, CapturingHost, RunConfig};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use vmm_server::{Cr0WpPolicy, VmConfig, VmOutcome};

#[derive(Clone, Copy, PartialEq)]
struct Variant {
    mode: ipc::MmuMode,
    cr0_wp: Cr0WpPolicy,
    root_reuse: bool,
}

impl Variant {
    fn name(&self) -> String {
        let mmu = match self.mode {
            ipc::MmuMode::Tdp => "tdp",
            ipc::MmuMode::Shadow => "shadow",
        };
        let wp = match self.cr0_wp {
            Cr0WpPolicy::GuestOwned => "wp-guest-owned",
            Cr0WpPolicy::Intercept => "wp-intercept",
        };
        let reuse = if self.root_reuse { "on" } else { "off" };
        format!("{mmu:6} {wp:14} reuse={reuse:3}")
    }

    fn config(&self) -> VmConfig {
        let mut vm = VmConfig::new(self.mode);
        vm.cr0_wp = self.cr0_wp;
        vm.root_reuse = self.root_reuse;
        vm
    }
}

const VARIANTS: [Variant; 6] = {
    const fn v(mode: ipc::MmuMode, cr0_wp: Cr0WpPolicy, root_reuse: bool) -> Variant {
        Variant {
            mode,
            cr0_wp,
            root_reuse,
        }
    }
    use ipc::MmuMode::{Shadow, Tdp};
    use Cr0WpPolicy::{GuestOwned, Intercept};
    [
        v(Tdp, GuestOwned, true),
        v(Tdp, GuestOwned, false),
        v(Tdp, Intercept, true),
        v(Tdp, Intercept, false),
        v(Shadow, Intercept, true),
        v(Shadow, Intercept, false),
    ]
};

/// One run's figures.
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    /// CPU time of the calling thread (the vmm-server and its vCPU); `None` where the
    /// kernel does not report it.
    vcpu_cpu: Option<Duration>,
    /// CPU time of the whole process: the vCPU thread, the mmu-server thread, the
    /// recovery timer.
    process_cpu: Duration,
    exits: u64,
    cr_exits: u64,
    roots_allocated: u64,
    instructions: u64,
}

/// CPU time the calling thread has used (`/proc/thread-self/schedstat`, first field,
/// nanoseconds).
fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// CPU time (user + system) the process has used, every thread's, ended ones too.
fn process_cpu_time() -> Duration {
    // SAFETY: getrusage writes the struct it is given and nothing else.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn run_once(image: &[u8], append: &str, v: &Variant) -> Result<Sample, String> {
    let mut cfg = RunConfig::new(image.to_vec(), "kernexec.elf", v.config());
    cfg.append = append.to_string();
    let mut host = CapturingHost::default();
    let cpu0 = thread_cpu_time();
    let process0 = process_cpu_time();
    let start = Instant::now();
    let result = runtime::run(&cfg, &mut host).map_err(|e| e.to_string())?;
    let wall = start.elapsed();
    let vcpu_cpu = thread_cpu_time()
        .zip(cpu0)
        .map(|(b, a)| b.saturating_sub(a));
    let process_cpu = process_cpu_time().saturating_sub(process0);
    match result.outcome {
        // isa-debug-exit value 0: kernexec passed.
        VmOutcome::Exited { status: 1 } => {}
        other => {
            return Err(format!(
                "{}: kernexec did not pass ({other:?}); serial:\n{}",
                v.name(),
                String::from_utf8_lossy(&host.serial)
            ))
        }
    }
    let s = &result.stats;
    Ok(Sample {
        wall,
        vcpu_cpu,
        process_cpu,
        exits: s.exits.total(),
        cr_exits: s.exits.get("cr_access"),
        roots_allocated: s.mmu.roots_allocated,
        instructions: s.instructions,
    })
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`) this is a smoke
    // test: every variant once, on a short run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let guest = std::env::var_os("SEEDS_GUEST")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../build/guests/kernexec.elf")
        });
    let image = match std::fs::read(&guest) {
        Ok(i) => i,
        Err(e) => {
            println!(
                "seeds: skipped: cannot read {} ({e}); `make guests` builds it",
                guest.display()
            );
            return;
        }
    };
    let (append, rounds) = if smoke {
        ("iters=100 ws=4".to_string(), 1)
    } else {
        let append = std::env::var("SEEDS_APPEND").unwrap_or_else(|_| "iters=20000 ws=64".into());
        let quick = std::env::var_os("BENCH_QUICK").is_some();
        let rounds: usize = std::env::var("SEEDS_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .filter(|&r| r > 0)
            .unwrap_or(if quick { 3 } else { 5 });
        (append, rounds)
    };

    println!(
        "seeds: kernexec `{append}`, {} variants x {rounds} rounds, interleaved",
        VARIANTS.len()
    );
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); VARIANTS.len()];
    for round in 0..rounds {
        for k in 0..VARIANTS.len() {
            let i = (round + k) % VARIANTS.len();
            match run_once(&image, &append, &VARIANTS[i]) {
                Ok(s) => samples[i].push(s),
                Err(e) => {
                    eprintln!("seeds: {e}");
                    std::process::exit(1);
                }
            }
        }
    }

    let wall: Vec<Duration> = samples
        .iter()
        .map(|s| median(s.iter().map(|x| x.wall).collect()))
        .collect();
    let process: Vec<Duration> = samples
        .iter()
        .map(|s| median(s.iter().map(|x| x.process_cpu).collect()))
        .collect();
    let cpu: Vec<Option<Duration>> = samples
        .iter()
        .map(|s| {
            let v: Option<Vec<Duration>> = s.iter().map(|x| x.vcpu_cpu).collect();
            v.map(median)
        })
        .collect();
    println!();
    println!(
        "{:34} {:>9} {:>9} {:>9} {:>8} {:>8} {:>7} {:>11}",
        "variant", "wall ms", "vcpu ms", "proc ms", "exits", "CR exits", "roots", "guest insns"
    );
    for (i, v) in VARIANTS.iter().enumerate() {
        // Counts are the same in every run of a variant but for timer-driven events;
        // the last run's are shown.
        let last = samples[i].last().copied();
        let Some(last) = last else { continue };
        println!(
            "{:34} {:>9.1} {:>9} {:>9.1} {:>8} {:>8} {:>7} {:>11}",
            v.name(),
            ms(wall[i]),
            cpu[i].map_or("-".into(), |c| format!("{:.1}", ms(c))),
            ms(process[i]),
            last.exits,
            last.cr_exits,
            last.roots_allocated,
            last.instructions
        );
    }

    println!();
    println!(
        "{:60} {:>5} {:>5} {:>5}",
        "ratios of medians, this run", "wall", "vcpu", "proc"
    );
    let ratio = |a: usize, b: usize, what: &str| {
        let w = wall[a].as_secs_f64() / wall[b].as_secs_f64();
        let c = match (cpu[a], cpu[b]) {
            (Some(x), Some(y)) => format!("{:.2}", x.as_secs_f64() / y.as_secs_f64()),
            _ => "-".into(),
        };
        let p = process[a].as_secs_f64() / process[b].as_secs_f64().max(1e-9);
        println!("  {what:58} {w:5.2} {c:>5} {p:5.2}");
    };
    ratio(1, 0, "TDP, WP guest-owned: reuse off / on");
    ratio(3, 2, "TDP, WP intercepted: reuse off / on (seed 1)");
    ratio(5, 4, "shadow: reuse off / on");
    ratio(2, 0, "TDP, reuse on: WP intercepted / guest-owned (seed 3)");
    ratio(3, 0, "TDP: legacy (intercept, reuse off) / both seeds");
    ratio(4, 0, "shadow / TDP (both with the seeds)");
}
