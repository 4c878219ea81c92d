//! The whole-tree audit over a 4 GiB identity map of 4 KiB pages: 1,048,576 PTEs in 2,048
//! tables (plus a PML4, a PDPT and four PDs). Throughput is in entries read per second.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use vmm_host::paging::{PagingMode, PhysMemory, audit, identity_tree_4k};

const SIZE: u64 = 4 << 30;

fn bench_audit(c: &mut Criterion) {
    let (mem, cr3) = identity_tree_4k(SIZE);
    let mode = PagingMode::new(vmm_host::paging::CpuPaging::with_phys_bits(48), 0);
    let ram = mem.ram();
    let entries = audit(&mem, mode, cr3, &ram).entries_visited;
    assert!(entries > 1 << 20, "the tree is not what the benchmark says");

    let mut group = c.benchmark_group("audit");
    group.throughput(Throughput::Elements(entries));
    group.sample_size(30);
    group.bench_function("identity_4gib_4k_pages", |b| {
        b.iter(|| audit(black_box(&mem), mode, cr3, black_box(&ram)))
    });
    // What the audit adds to reading the tables at all.
    group.bench_function("read_tables_only", |b| {
        b.iter(|| {
            let mut table = [0u64; 512];
            let mut sum = 0u64;
            for frame in (SIZE..mem.size()).step_by(4096) {
                mem.read_table(vmm_host::addr::Gpa::new(frame), &mut table);
                sum = sum.wrapping_add(table[black_box(7)]);
            }
            sum
        })
    });
    group.finish();
}

criterion_group!(benches, bench_audit);
criterion_main!(benches);
