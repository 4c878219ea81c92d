//! Guest RAM as the audit needs it: "is this frame RAM?" and one bit per RAM frame.
//!
//! Bitmaps rather than a sorted list of mapped frames because they cost the same on a garbage
//! tree as on a real one: a tree whose every leaf maps the same frame fills a list with
//! millions of copies but sets one bit. A 4 GiB guest needs 128 KiB per bitmap.

use crate::addr::Gpa;
use crate::narrow::to_usize;

const FRAME: u64 = 4096;

#[derive(Debug, Clone, Copy)]
struct Region {
    start: u64,
    end: u64,
    /// The bit of `start`'s frame; regions are numbered one after the other.
    first_bit: u64,
}

/// Guest RAM regions, page-aligned, sorted and merged.
#[derive(Debug)]
pub(super) struct Ram {
    regions: Vec<Region>,
    frames: u64,
}

impl Ram {
    pub(super) fn new(ram: &[(Gpa, u64)]) -> Self {
        let mut spans: Vec<(u64, u64)> = ram
            .iter()
            .filter(|(_, size)| *size > 0)
            .map(|&(start, size)| {
                let end = start.raw().saturating_add(size);
                // A partial frame at either end is still RAM the guest can put a table in.
                (
                    start.raw() & !(FRAME - 1),
                    end.saturating_add(FRAME - 1) & !(FRAME - 1),
                )
            })
            .collect();
        spans.sort_unstable();
        let mut regions: Vec<Region> = Vec::with_capacity(spans.len());
        let mut frames = 0;
        for (start, end) in spans {
            match regions.last_mut() {
                Some(last) if start <= last.end => {
                    if end > last.end {
                        frames += (end - last.end) / FRAME;
                        last.end = end;
                    }
                }
                _ => {
                    regions.push(Region {
                        start,
                        end,
                        first_bit: frames,
                    });
                    frames += (end - start) / FRAME;
                }
            }
        }
        Self { regions, frames }
    }

    pub(super) fn bytes(&self) -> u64 {
        self.frames * FRAME
    }

    fn region_of(&self, pa: u64) -> Option<&Region> {
        let i = self.regions.partition_point(|r| r.end <= pa);
        self.regions.get(i).filter(|r| r.start <= pa)
    }

    pub(super) fn contains(&self, pa: u64) -> bool {
        self.region_of(pa).is_some()
    }

    /// The bit of the frame holding `pa`, if it is RAM.
    pub(super) fn bit(&self, pa: u64) -> Option<u64> {
        self.region_of(pa)
            .map(|r| r.first_bit + (pa - r.start) / FRAME)
    }

    /// Split the page-aligned `[start, start + len)` into its RAM parts, as
    /// `inside(physical start, first bit, frames)`, and the rest, as `outside(start, len)`,
    /// in address order.
    pub(super) fn split(
        &self,
        start: u64,
        len: u64,
        mut inside: impl FnMut(u64, u64, u64),
        mut outside: impl FnMut(u64, u64),
    ) {
        let end = start.saturating_add(len);
        let mut cursor = start;
        let first = self.regions.partition_point(|r| r.end <= start);
        for r in &self.regions[first..] {
            if r.start >= end {
                break;
            }
            if r.start > cursor {
                outside(cursor, r.start - cursor);
                cursor = r.start;
            }
            let stop = end.min(r.end);
            inside(
                cursor,
                r.first_bit + (cursor - r.start) / FRAME,
                (stop - cursor) / FRAME,
            );
            cursor = stop;
        }
        if cursor < end {
            outside(cursor, end - cursor);
        }
    }

    /// The physical address of the frame behind `bit`.
    pub(super) fn frame_of(&self, bit: u64) -> u64 {
        let i = self.regions.partition_point(|r| r.first_bit <= bit) - 1;
        let r = &self.regions[i];
        r.start + (bit - r.first_bit) * FRAME
    }
}

/// One bit per RAM frame.
#[derive(Debug)]
pub(super) struct Bits(Vec<u64>);

/// The words and masks covering bits `[start, start + n)`.
fn words(start: u64, n: u64) -> impl Iterator<Item = (usize, u64)> {
    let end = start + n;
    (start / 64..end.div_ceil(64)).map(move |w| {
        let lo = (w * 64).max(start);
        let hi = (w * 64 + 64).min(end);
        let mask = if hi - lo == 64 {
            u64::MAX
        } else {
            ((1u64 << (hi - lo)) - 1) << (lo - w * 64)
        };
        (to_usize(w), mask)
    })
}

impl Bits {
    pub(super) fn new(bits: u64) -> Self {
        Self(vec![0; to_usize(bits.div_ceil(64))])
    }

    pub(super) fn get(&self, bit: u64) -> bool {
        self.0[to_usize(bit / 64)] & (1 << (bit % 64)) != 0
    }

    pub(super) fn set_range(&mut self, start: u64, n: u64) {
        for (w, mask) in words(start, n) {
            self.0[w] |= mask;
        }
    }

    pub(super) fn count(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

/// Mark `[start, start + n)` in `seen`, and in `repeated` the bits `seen` already had. Returns
/// the first bit that became repeated by this call, if any.
pub(super) fn mark_counting_repeats(
    seen: &mut Bits,
    repeated: &mut Bits,
    start: u64,
    n: u64,
) -> Option<u64> {
    let mut first = None;
    for (w, mask) in words(start, n) {
        let again = seen.0[w] & mask;
        let new = again & !repeated.0[w];
        if first.is_none() && new != 0 {
            first = Some(w as u64 * 64 + u64::from(new.trailing_zeros()));
        }
        repeated.0[w] |= again;
        seen.0[w] |= mask;
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_merge_and_split_into_ram_and_holes() {
        let ram = Ram::new(&[
            (Gpa::new(0x10_0000), 0x10_0000),
            (Gpa::new(0), 0xa_0000),
            (Gpa::new(0x18_0000), 0x10_0000),
            (Gpa::new(0x100_0000), 0),
        ]);
        assert_eq!(ram.bytes(), 0xa_0000 + 0x18_0000);
        assert!(ram.contains(0x9_f000) && !ram.contains(0xa_0000) && !ram.contains(0x28_0000));
        assert_eq!(ram.bit(0x10_0000), Some(0xa0));
        assert_eq!(ram.frame_of(0xa0), 0x10_0000);
        let (mut inside, mut outside) = (Vec::new(), Vec::new());
        ram.split(
            0x9_e000,
            0x20_0000,
            |pa, bit, n| inside.push((pa, bit, n)),
            |pa, len| outside.push((pa, len)),
        );
        assert_eq!(inside, [(0x9_e000, 0x9e, 2), (0x10_0000, 0xa0, 0x180)]);
        assert_eq!(outside, [(0xa_0000, 0x6_0000), (0x28_0000, 0x1_e000)]);
    }

    #[test]
    fn repeats_are_counted_once_per_frame() {
        let (mut seen, mut repeated) = (Bits::new(300), Bits::new(300));
        assert_eq!(
            mark_counting_repeats(&mut seen, &mut repeated, 10, 100),
            None
        );
        assert_eq!(
            mark_counting_repeats(&mut seen, &mut repeated, 100, 100),
            Some(100)
        );
        assert_eq!(
            mark_counting_repeats(&mut seen, &mut repeated, 105, 1),
            None
        );
        assert_eq!(repeated.count(), 10);
        assert_eq!(seen.count(), 190);
        assert!(seen.get(199) && !seen.get(200));
    }
}
