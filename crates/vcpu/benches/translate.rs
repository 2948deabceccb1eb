//! `Mmu::translate` on its hit path (TLB) and its miss path (a full walk), with and
//! without EPT, 4-level guest paging.

use criterion::{black_box, criterion_group, criterion_main, Criterion};

#[path = "../tests/common_paging/fixture.rs"]
mod fixture;

use fixture::*;
use vcpu::paging::Mmu;

const L: u64 = 0x7f12_3456_7000;
const FRAME: u64 = 0x8000_0000;

fn setup(ept: bool) -> (Fixture, vcpu::paging::PagingContext) {
    let mut f = Fixture::new(ept);
    let root = f.new_root();
    f.map4k(root, L, FRAME, P | RW | US | A | D);
    if ept {
        f.ept_map(FRAME, FRAME, 7);
    }
    let ctx = f.ctx(root);
    (f, ctx)
}

fn bench(c: &mut Criterion) {
    for (name, ept) in [("shadow", false), ("ept", true)] {
        let (f, ctx) = setup(ept);
        let mut mmu = Mmu::new();
        mmu.translate(&f.map, &ctx, L, READ).unwrap();
        c.bench_function(&format!("translate/hit/{name}"), |b| {
            b.iter(|| {
                mmu.translate(&f.map, black_box(&ctx), black_box(L + 8), READ)
                    .unwrap()
            })
        });
        c.bench_function(&format!("translate/miss/{name}"), |b| {
            b.iter(|| {
                mmu.invlpg(&ctx, L);
                mmu.translate(&f.map, black_box(&ctx), black_box(L + 8), READ)
                    .unwrap()
            })
        });
        c.bench_function(&format!("invlpg_only/{name}"), |b| {
            b.iter(|| mmu.invlpg(black_box(&ctx), black_box(L)))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
