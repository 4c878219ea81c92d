//! The whole-tree audit over an identity map of 4 KiB pages in each paging format: 4 GiB in
//! 4- and 5-level paging (1,048,576 PTEs in 2,048 tables, plus the tables above them), 3 GiB
//! in PAE and 32-bit paging (786,432 PTEs; a 32-bit CR3 and its entries must reach the
//! tables). Throughput is in entries read per second; `read_tables_only` is the floor, what
//! copying the 4-level tree's tables out of memory costs without looking at them.
//!
//! A page table of 512 consecutive frames with equal flags (what identity and direct maps
//! are made of) is taken whole; `scattered_4gib_4k_pages` is the same 4-level tree with the
//! frames of every page table swapped in pairs, so that every entry is looked at one by one.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use vmm_host::paging::{CpuPaging, Format, PagingMode, PhysMemory, audit, identity_tree};

const LONG_SIZE: u64 = 4 << 30;
const SIZE_32: u64 = 3 << 30;

fn bench_format(c: &mut Criterion, name: &str, format: Format, size: u64) {
    let (mem, cr3) = identity_tree(format, size);
    let mode = PagingMode::new(CpuPaging::with_phys_bits(48), 0).with_format(format);
    let ram = mem.ram();
    let once = audit(&mem, mode, cr3, &ram);
    assert_eq!(
        once.identity.first().map(|&(_, len)| len),
        Some(size),
        "the {format} tree is not what the benchmark says"
    );
    let mut group = c.benchmark_group("audit");
    group.throughput(Throughput::Elements(once.entries_visited));
    group.sample_size(20);
    group.bench_function(name, |b| {
        b.iter(|| audit(black_box(&mem), mode, cr3, black_box(&ram)))
    });
    group.finish();
}

/// The 4-level tree with each page table's frames swapped in pairs: no table is one stretch.
fn bench_scattered(c: &mut Criterion) {
    let (mut mem, cr3) = identity_tree(Format::FourLevel, LONG_SIZE);
    let page_tables = LONG_SIZE / (2 << 20);
    let first = mem.size() - page_tables * 4096;
    for table in (first..mem.size()).step_by(4096) {
        let entries = mem.page_mut(vmm_host::addr::Gpa::new(table));
        for pair in entries.chunks_exact_mut(2) {
            pair.swap(0, 1);
        }
    }
    let mode = PagingMode::new(CpuPaging::with_phys_bits(48), 0);
    let ram = mem.ram();
    let once = audit(&mem, mode, cr3, &ram);
    assert_eq!(once.mapped_bytes, LONG_SIZE, "{}", once.summary());
    assert!(
        once.identity.len() < 2,
        "the frames are out of line: {}",
        once.summary()
    );
    let mut group = c.benchmark_group("audit");
    group.throughput(Throughput::Elements(once.entries_visited));
    group.sample_size(20);
    group.bench_function("scattered_4gib_4k_pages", |b| {
        b.iter(|| audit(black_box(&mem), mode, cr3, black_box(&ram)))
    });
    group.finish();
}

fn bench_audit(c: &mut Criterion) {
    bench_format(c, "identity_4gib_4k_pages", Format::FourLevel, LONG_SIZE);
    bench_format(c, "identity_4gib_5_level", Format::FiveLevel, LONG_SIZE);
    bench_format(c, "identity_3gib_pae", Format::Pae, SIZE_32);
    let two_level = Format::TwoLevel { pse: true };
    bench_format(c, "identity_3gib_32_bit", two_level, SIZE_32);

    bench_scattered(c);

    // What the audit adds to reading the tables at all.
    let (mem, _) = identity_tree(Format::FourLevel, LONG_SIZE);
    let mut group = c.benchmark_group("audit");
    // Every table's 512 words, as the 4-level audit reads them.
    group.throughput(Throughput::Elements((mem.size() - LONG_SIZE) / 8));
    group.sample_size(20);
    group.bench_function("read_tables_only", |b| {
        b.iter(|| {
            let mut table = [0u64; 512];
            let mut sum = 0u64;
            for frame in (LONG_SIZE..mem.size()).step_by(4096) {
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
