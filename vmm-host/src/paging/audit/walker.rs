//! The traversal: every table once per path, leaves folded into ranges and linear runs as they
//! come, so a million entries cost no allocation beyond the output.

use super::frames::{Bits, Ram};
use super::runs::{Aliasing, Run, choose_direct_map};
use super::{Audit, AuditOptions, Finding, FindingKind, MappedRange, TableFrame, TableFrames};
use crate::addr::{Gpa, Gva};
use crate::paging::{Cr3, Format, Level, PagingMode, PhysMemory, Pte};
use mm::paging::{ENTRIES, NO_EXECUTE, PRESENT};

/// The most entries a table holds: 1024 in 32-bit paging.
const MAX_ENTRIES: usize = 1024;

/// Rights as bits, so combining levels is one AND.
const W: u8 = 1;
const U: u8 = 2;
const X: u8 = 4;

/// Whether every entry of a page table maps the frame after its predecessor's with the same
/// flags (accessed and dirty aside): the identity and direct maps kernels build are made of
/// such tables, and the audit takes each as one stretch. No early exit, so it vectorises.
fn maps_consecutive_frames(entries: &[u64], frame_mask: u64) -> bool {
    const ACCESSED_DIRTY: u64 = 0x60;
    let Some(&first) = entries.first() else {
        return false;
    };
    // The last frame must not wrap past the address field.
    let last = (first & frame_mask).checked_add((entries.len() as u64 - 1) << 12);
    if last.is_none_or(|last| last & !frame_mask != 0) {
        return false;
    }
    let expected = first & !ACCESSED_DIRTY;
    let differences = (entries.iter().zip(0u64..)).fold(0, |d, (&e, i)| {
        d | ((e & !ACCESSED_DIRTY) ^ (expected + (i << 12)))
    });
    differences == 0
}

/// A stretch of leaves with equal rights, adjacent in virtual memory.
#[derive(Debug, Clone, Copy, Default)]
struct OpenRange {
    open: bool,
    start: u64,
    end: u64,
    rights: u8,
    phys_start: u64,
    phys_end: u64,
    contiguous: bool,
}

pub(super) struct Walker<'a, M: ?Sized> {
    mem: &'a M,
    mode: PagingMode,
    format: Format,
    opts: &'a AuditOptions,
    ram: Ram,
    nx: u64,
    cr3: Cr3,
    /// Where kernel space starts in this format: user pages above it are a finding.
    kernel_space: u64,
    /// The tables of the current walk, top first.
    path: [u64; 5],
    /// One entry buffer per depth, reused from table to table (8 KiB each: zeroing a fresh one
    /// per table cost a fifth of the audit).
    buffers: [Option<Box<[u64; MAX_ENTRIES]>>; 5],
    visited: u64,
    truncated: bool,
    range: OpenRange,
    run: Option<Run>,
    ranges: Vec<MappedRange>,
    ranges_omitted: u64,
    mapped_bytes: u64,
    identity: Vec<(Gva, u64)>,
    /// Upper-half runs large enough to be the direct map; decided once all are known.
    direct_candidates: Vec<Run>,
    recursive_slot: Option<usize>,
    tables: Vec<TableFrame>,
    findings: Vec<Finding>,
    counts: [u64; FindingKind::COUNT],
    /// Frames any mapping covers, identity and direct map included.
    mapped: Bits,
    aliasing: Aliasing,
}

impl<'a, M: PhysMemory + ?Sized> Walker<'a, M> {
    pub(super) fn new(
        mem: &'a M,
        mode: PagingMode,
        cr3: Cr3,
        ram: &[(Gpa, u64)],
        opts: &'a AuditOptions,
    ) -> Self {
        let ram = Ram::new(ram);
        let frames = ram.bytes() / 4096;
        let aliasing = Aliasing::new(&ram, opts.max_findings_per_kind);
        Self {
            mem,
            mode,
            format: mode.format,
            opts,
            ram,
            nx: if mode.nxe { NO_EXECUTE } else { 0 },
            cr3,
            kernel_space: mode.format.kernel_space(),
            path: [0; 5],
            buffers: Default::default(),
            visited: 0,
            truncated: false,
            range: OpenRange::default(),
            run: None,
            ranges: Vec::new(),
            ranges_omitted: 0,
            mapped_bytes: 0,
            identity: Vec::new(),
            direct_candidates: Vec::new(),
            recursive_slot: None,
            tables: Vec::new(),
            findings: Vec::new(),
            counts: [0; FindingKind::COUNT],
            mapped: Bits::new(frames),
            aliasing,
        }
    }

    pub(super) fn run(mut self) -> Audit {
        if let Some(&top) = self.format.levels().first() {
            let table = self.format.top_table(self.cr3.raw()).raw();
            self.table(top, table, 0, W | U | X, None);
        }
        self.finish()
    }

    fn report(&mut self, finding: Finding) {
        let kind = finding
            .kind()
            .expect("only per-occurrence findings are reported here");
        let count = &mut self.counts[kind as usize];
        *count += 1;
        if *count <= self.opts.max_findings_per_kind as u64 {
            self.findings.push(finding);
        }
    }

    fn entry_rights(&self, raw: u64) -> u8 {
        // RW is bit 1 and US bit 2: shifted down they are W and U.
        ((raw >> 1) & 3) as u8 | if raw & self.nx == 0 { X } else { 0 }
    }

    /// The rights an entry of `level` grants: a PAE PDPTE has none of its own (its R/W and
    /// U/S bits are reserved), so it grants all.
    fn rights_at(&self, level: Level, raw: u64) -> u8 {
        if self.format == Format::Pae && level == Level::Pdpt {
            W | U | X
        } else {
            self.entry_rights(raw)
        }
    }

    /// The entries of the table of `level` at `frame` into `out`, zero-extended; how many
    /// there are, or `None` where the table is not all guest RAM.
    fn read_entries(
        &self,
        level: Level,
        frame: u64,
        out: &mut [u64; MAX_ENTRIES],
    ) -> Option<usize> {
        let count = self.format.entries(level);
        if !self.ram.contains(frame) {
            return None;
        }
        let head = out.first_chunk_mut::<ENTRIES>()?;
        // PAE's PDPTEs: the ones the CPU loaded, where KVM says what they are.
        if let (Format::Pae, Level::Pdpt, Some(loaded)) =
            (self.format, level, self.mode.loaded_pdptes)
        {
            head[..4].copy_from_slice(&loaded);
            return Some(4);
        }
        match (self.format, count) {
            (Format::TwoLevel { .. }, _) => {
                let mut words = [0u64; ENTRIES];
                if !self.mem.read_table(Gpa::new(frame), &mut words) {
                    return None;
                }
                for (pair, word) in out.chunks_exact_mut(2).zip(words) {
                    pair[0] = word & 0xffff_ffff;
                    pair[1] = word >> 32;
                }
            }
            (_, ENTRIES) => {
                if !self.mem.read_table(Gpa::new(frame), head) {
                    return None;
                }
            }
            _ => {
                for (i, slot) in head.iter_mut().take(count).enumerate() {
                    *slot = self.mem.read_u64(Gpa::new(frame + i as u64 * 8))?;
                }
            }
        }
        Some(count)
    }

    /// Sign-extend an address built from indices, as the format's canonical form wants.
    fn canonical(&self, va: u64) -> u64 {
        match self.format {
            Format::FourLevel => mm::paging::canonical(va),
            Format::FiveLevel => ((va << 7).cast_signed() >> 7).cast_unsigned(),
            _ => va,
        }
    }

    /// Visit the table of `level` at `frame`, which translates from `base` with `rights`
    /// granted above it; `from` is the entry that points here.
    fn table(&mut self, level: Level, frame: u64, base: u64, rights: u8, from: Option<Gpa>) {
        let count = self.format.entries(level) as u64;
        if self.visited + count > self.opts.max_entries {
            self.truncated = true;
            return;
        }
        let depth = (self.format.levels().iter())
            .position(|&l| l == level)
            .unwrap_or(0);
        let mut entries = self.buffers[depth]
            .take()
            .unwrap_or_else(|| Box::new([0; MAX_ENTRIES]));
        self.entries_of(level, frame, (base, rights), from, &mut entries);
        self.buffers[depth] = Some(entries);
    }

    /// [`Self::table`] with the table's entries read into `entries`.
    fn entries_of(
        &mut self,
        level: Level,
        frame: u64,
        (base, rights): (u64, u8),
        from: Option<Gpa>,
        entries: &mut [u64; MAX_ENTRIES],
    ) {
        let Some(count) = self.read_entries(level, frame, entries) else {
            self.report(Finding::TableOutsideRam {
                level,
                table: Gpa::new(frame),
                entry: from,
                va: Gva::new(base),
            });
            return;
        };
        self.visited += count as u64;
        self.tables.push(TableFrame {
            frame: Gpa::new(frame & !0xfff),
            level,
            first_va: Gva::new(base),
        });
        let depth = (self.format.levels().iter())
            .position(|&l| l == level)
            .unwrap_or(0);
        self.path[depth] = frame;
        let Some(next) = self.format.next(level) else {
            return self.leaves(&entries[..count], frame, base, rights);
        };
        for (i, &raw) in entries[..count].iter().enumerate() {
            if raw & PRESENT != 0 {
                self.entry(level, next, (frame, i, depth), raw, (base, rights));
                if self.truncated {
                    return;
                }
            }
        }
    }

    /// One present entry `raw` at `slot` = (table, index, depth) of a table of `level` whose
    /// children are of `next`; `within` = (the table's first address, rights above it).
    fn entry(
        &mut self,
        level: Level,
        next: Level,
        (frame, i, depth): (u64, usize, usize),
        raw: u64,
        (base, rights): (u64, u8),
    ) {
        let span = self.format.span(level);
        let va = self.canonical(base.wrapping_add(i as u64 * span));
        let entry = Pte::new(raw);
        let at = Gpa::new(frame + i as u64 * self.format.entry_size());
        let bits = entry.reserved_bits(level, self.mode);
        if bits != 0 {
            return self.report(Finding::ReservedBits {
                level,
                entry: at,
                va: Gva::new(va),
                bits,
            });
        }
        let rights = rights & self.rights_at(level, raw);
        let child = self.format.frame(level, raw).raw();
        if self.format.maps_page(level, raw) {
            return self.leaf(va, child, span, rights);
        }
        if !self.path[..=depth].contains(&child) {
            return self.table(next, child, va, rights, Some(at));
        }
        if depth == 0 && self.recursive_slot.is_none() {
            self.recursive_slot = Some(i);
        } else {
            self.report(Finding::TableLoop {
                level,
                entry: at,
                va: Gva::new(va),
                table: Gpa::new(child),
            });
        }
    }

    /// The hot loop: a page table's entries, each a 4 KiB page.
    fn leaves(&mut self, entries: &[u64], frame: u64, base: u64, rights: u8) {
        // A PTE's reserved bits do not depend on its other bits: one mask for the table.
        let reserved = Pte::new(u64::MAX).reserved_bits(Level::Pt, self.mode);
        let frame_mask = self.format.frame(Level::Pt, u64::MAX).raw();
        // Frames rise from the first to the last entry: no reserved address bit in between.
        if let (Some(&first), Some(&last)) = (entries.first(), entries.last())
            && maps_consecutive_frames(entries, frame_mask)
            && first & PRESENT != 0
            && (first | last) & reserved == 0
        {
            // The whole table is one stretch: as its leaves one by one would give.
            let size = entries.len() as u64 * 4096;
            return self.leaf(
                base,
                first & frame_mask,
                size,
                rights & self.entry_rights(first),
            );
        }
        let entry_size = self.format.entry_size();
        for (i, &raw) in entries.iter().enumerate() {
            if raw & PRESENT == 0 {
                continue;
            }
            let va = base + i as u64 * 4096;
            let bits = raw & reserved;
            if bits != 0 {
                self.report(Finding::ReservedBits {
                    level: Level::Pt,
                    entry: Gpa::new(frame + i as u64 * entry_size),
                    va: Gva::new(va),
                    bits,
                });
                continue;
            }
            self.leaf(va, raw & frame_mask, 4096, rights & self.entry_rights(raw));
        }
    }

    #[inline(always)]
    fn leaf(&mut self, va: u64, pa: u64, size: u64, rights: u8) {
        let r = &mut self.range;
        if r.open && va == r.end && rights == r.rights {
            r.end = va.wrapping_add(size);
            r.contiguous &= pa == r.phys_end;
            r.phys_end = pa + size;
        } else {
            self.close_range();
            self.range = OpenRange {
                open: true,
                start: va,
                end: va.wrapping_add(size),
                rights,
                phys_start: pa,
                phys_end: pa + size,
                contiguous: true,
            };
        }
        match &mut self.run {
            Some(run) if va == run.va.wrapping_add(run.len) && pa == run.pa + run.len => {
                run.len += size;
            }
            _ => {
                self.close_run();
                self.run = Some(Run { va, pa, len: size });
            }
        }
    }

    #[cold]
    fn close_range(&mut self) {
        let r = std::mem::take(&mut self.range);
        if !r.open {
            return;
        }
        let (start, size) = (Gva::new(r.start), r.end.wrapping_sub(r.start));
        self.mapped_bytes = self.mapped_bytes.saturating_add(size);
        // 32-bit paging has no NX bit: every writable page is executable, and no kernel can
        // do anything about it.
        let has_nx = !matches!(self.format, Format::TwoLevel { .. });
        if has_nx && r.rights & (W | U | X) == W | X {
            self.report(Finding::WritableExecutable { start, size });
        }
        if r.rights & U != 0 && r.start >= self.kernel_space {
            self.report(Finding::UserInKernelSpace { start, size });
        }
        if self.ranges.len() < self.opts.max_ranges {
            self.ranges.push(MappedRange {
                start,
                size,
                writable: r.rights & W != 0,
                user: r.rights & U != 0,
                executable: r.rights & X != 0,
                phys: r.contiguous.then_some(Gpa::new(r.phys_start)),
            });
        } else {
            self.ranges_omitted += 1;
        }
    }

    #[cold]
    fn close_run(&mut self) {
        let Some(run) = self.run.take() else {
            return;
        };
        let (mapped, findings, counts) = (&mut self.mapped, &mut self.findings, &mut self.counts);
        let limit = self.opts.max_findings_per_kind as u64;
        self.ram.split(
            run.pa,
            run.len,
            |_, bit, n| mapped.set_range(bit, n),
            |pa, len| {
                let count = &mut counts[FindingKind::PageOutsideRam as usize];
                *count += 1;
                if *count <= limit {
                    findings.push(Finding::PageOutsideRam {
                        va: Gva::new(run.va.wrapping_add(pa - run.pa)),
                        frame: Gpa::new(pa),
                        size: len,
                    });
                }
            },
        );
        if run.va == run.pa {
            // Consecutive identity runs would have been one run: no coalescing left to do.
            if self.identity.len() < self.opts.max_ranges {
                self.identity.push((Gva::new(run.va), run.len));
            }
        } else if run.va >= self.kernel_space && run.len >= self.direct_map_threshold() {
            self.direct_candidates.push(run);
        } else {
            self.aliasing.add(&self.ram, run);
        }
    }

    fn direct_map_threshold(&self) -> u64 {
        self.opts.direct_map_min.min(self.ram.bytes() / 2)
    }

    fn finish(mut self) -> Audit {
        self.close_range();
        self.close_run();
        let direct_map = choose_direct_map(
            &self.ram,
            &self.direct_candidates,
            self.direct_map_threshold(),
            &mut self.aliasing,
        );
        let mut tables = std::mem::take(&mut self.tables);
        // Stable: among copies of a frame the first visited stays, with its first address.
        tables.sort_by_key(|t| t.frame);
        tables.dedup_by_key(|t| t.frame);

        let mut findings = Vec::new();
        if self.truncated {
            findings.push(Finding::Truncated {
                entries: self.visited,
            });
        }
        // Runs close after the entries that follow them: put their findings back in place.
        self.findings.sort_by_key(Finding::address);
        findings.append(&mut self.findings);
        // A recursive slot maps every table; a truncated walk has not seen every mapping.
        if self.recursive_slot.is_none() && !self.truncated {
            let unreached: Vec<&TableFrame> = tables
                .iter()
                .filter(|t| {
                    self.ram
                        .bit(t.frame.raw())
                        .is_none_or(|b| !self.mapped.get(b))
                })
                .collect();
            if !unreached.is_empty() {
                findings.push(Finding::UnreachedTables {
                    count: unreached.len() as u64,
                    examples: unreached
                        .iter()
                        .take(self.opts.max_findings_per_kind)
                        .map(|t| (t.level, t.frame))
                        .collect(),
                });
            }
        }
        findings.extend(self.aliasing.finding());
        let limit = self.opts.max_findings_per_kind as u64;
        for kind in FindingKind::ALL {
            let count = self.counts[kind as usize];
            if count > limit {
                findings.push(Finding::Omitted {
                    kind,
                    count: count - limit,
                });
            }
        }
        Audit {
            cr3: self.cr3,
            format: self.format,
            entries_visited: self.visited,
            ranges: self.ranges,
            ranges_omitted: self.ranges_omitted,
            mapped_bytes: self.mapped_bytes,
            identity: self.identity,
            direct_map,
            recursive_slot: self.recursive_slot,
            table_frames: TableFrames(tables),
            findings,
        }
    }
}
