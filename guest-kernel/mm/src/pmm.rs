//! BoxKernel's physical memory manager (seed 000, section 2): a bitmap with one bit per 4 KiB
//! frame, starting at 1 MiB, handing out *physical* addresses.
//!
//! Frames start out used; the kernel frees the usable ranges of the memory map and then
//! reserves what it occupies (image, boot tables, stack). [`Placement::High`] hands out the
//! highest frames first, so a scenario can force frames above the identity map at once.

use core::fmt;

pub const FRAME_SIZE: u64 = 4096;
const BITS: usize = u64::BITS as usize;

/// Which end of physical memory allocations come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Low,
    High,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PmmError {
    /// The bitmap storage holds fewer frames than asked for.
    BitmapTooSmall { frames: usize, capacity: usize },
    /// The base is not frame-aligned.
    Unaligned(u64),
    /// A freed range is not inside the managed range.
    OutOfRange { addr: u64, count: usize },
    /// A freed frame was already free.
    DoubleFree(u64),
}

impl fmt::Display for PmmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BitmapTooSmall { frames, capacity } => {
                write!(f, "bitmap holds {capacity} frames, {frames} needed")
            }
            Self::Unaligned(a) => write!(f, "base {a:#x} is not 4 KiB aligned"),
            Self::OutOfRange { addr, count } => {
                write!(
                    f,
                    "{count} frames at {addr:#x} are outside the managed memory"
                )
            }
            Self::DoubleFree(a) => write!(f, "frame {a:#x} freed twice"),
        }
    }
}

/// A bitmap frame allocator; a set bit is a used frame.
#[derive(Debug)]
pub struct FrameBitmap<'a> {
    base: u64,
    frames: usize,
    bits: &'a mut [u64],
    free: usize,
    placement: Placement,
    /// Every frame below this one is used: where a low search starts.
    low_hint: usize,
    /// Every frame from this one up is used: where a high search starts.
    high_hint: usize,
}

impl<'a> FrameBitmap<'a> {
    /// Manage `frames` frames from `base`, with every frame used until freed.
    pub fn new(
        bits: &'a mut [u64],
        base: u64,
        frames: usize,
        placement: Placement,
    ) -> Result<Self, PmmError> {
        if !base.is_multiple_of(FRAME_SIZE) {
            return Err(PmmError::Unaligned(base));
        }
        let capacity = bits.len().saturating_mul(BITS);
        if frames > capacity {
            return Err(PmmError::BitmapTooSmall { frames, capacity });
        }
        // Only the words the managed frames need: the storage may be sized for far more RAM.
        let bits = &mut bits[..frames.div_ceil(BITS)];
        bits.fill(u64::MAX);
        Ok(Self {
            base,
            frames,
            bits,
            free: 0,
            placement,
            low_hint: frames,
            high_hint: 0,
        })
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    /// First address past the managed range.
    pub fn end(&self) -> u64 {
        self.base + self.frames as u64 * FRAME_SIZE
    }

    pub fn free_frames(&self) -> usize {
        self.free
    }

    pub fn total_frames(&self) -> usize {
        self.frames
    }

    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// Change which end later allocations come from.
    pub fn set_placement(&mut self, placement: Placement) {
        self.placement = placement;
    }

    fn is_used(&self, frame: usize) -> bool {
        self.bits[frame / BITS] & (1 << (frame % BITS)) != 0
    }

    /// Frames wholly inside `[start, end)`, clipped to the managed range.
    fn frames_within(&self, start: u64, end: u64) -> core::ops::Range<usize> {
        let start = start.max(self.base).next_multiple_of(FRAME_SIZE);
        let end = end.min(self.end()) & !(FRAME_SIZE - 1);
        if end <= start {
            return 0..0;
        }
        ((start - self.base) / FRAME_SIZE) as usize..((end - self.base) / FRAME_SIZE) as usize
    }

    /// Make the whole frames inside `[start, end)` available (a usable memory-map range).
    pub fn add_usable(&mut self, start: u64, end: u64) {
        let frames = self.frames_within(start, end);
        self.set_range(frames, false);
    }

    /// Mark a run of frames, a whole word at a time where it can: the kernel builds the
    /// bitmap over gigabytes of RAM at boot, where a bit-by-bit loop is millions of steps.
    fn set_range(&mut self, frames: core::ops::Range<usize>, used: bool) {
        let mut frame = frames.start;
        while frame < frames.end {
            let word = frame / BITS;
            let first_bit = frame % BITS;
            let last_bit = (frames.end - word * BITS).min(BITS);
            let width = last_bit - first_bit;
            let mask = if width == BITS {
                u64::MAX
            } else {
                ((1u64 << width) - 1) << first_bit
            };
            let before = self.bits[word];
            let after = if used { before | mask } else { before & !mask };
            let used_before = (before & mask).count_ones() as usize;
            let used_after = (after & mask).count_ones() as usize;
            self.bits[word] = after;
            self.free = self.free + used_before - used_after;
            if !used && width > 0 {
                self.low_hint = self.low_hint.min(frame);
                self.high_hint = self.high_hint.max(word * BITS + last_bit);
            }
            frame = word * BITS + last_bit;
        }
    }

    /// Take every frame touching `[start, end)` out of use (kernel image, tables, stack).
    pub fn reserve(&mut self, start: u64, end: u64) {
        let start = start & !(FRAME_SIZE - 1);
        let end = end.saturating_add(FRAME_SIZE - 1) & !(FRAME_SIZE - 1);
        let frames = self.frames_within(start, end);
        self.set_range(frames, true);
    }

    /// `count` contiguous free frames from the placement's end; their physical address.
    pub fn alloc(&mut self, count: usize) -> Option<u64> {
        if count == 0 || count > self.free {
            return None;
        }
        let first = match self.placement {
            Placement::Low => self.find_low(count)?,
            Placement::High => self.find_high(count)?,
        };
        self.set_range(first..first + count, true);
        Some(self.base + first as u64 * FRAME_SIZE)
    }

    /// The lowest free frame at or above `from`, skipping whole used words.
    fn next_free(&self, mut from: usize) -> Option<usize> {
        while from < self.frames {
            let word = self.bits[from / BITS] | ((1u64 << (from % BITS)) - 1);
            if word == u64::MAX {
                from = (from / BITS + 1) * BITS;
                continue;
            }
            let frame = from / BITS * BITS + word.trailing_ones() as usize;
            return (frame < self.frames).then_some(frame);
        }
        None
    }

    /// The highest free frame below `below`, skipping whole used words.
    fn prev_free(&self, below: usize) -> Option<usize> {
        let mut end = below.min(self.frames);
        while end > 0 {
            let last = end - 1;
            let keep = (last % BITS) + 1;
            let mask = if keep == BITS { 0 } else { u64::MAX << keep };
            let word = self.bits[last / BITS] | mask;
            if word == u64::MAX {
                end = last / BITS * BITS;
                continue;
            }
            return Some(last / BITS * BITS + (BITS - 1 - word.leading_ones() as usize));
        }
        None
    }

    fn find_low(&mut self, count: usize) -> Option<usize> {
        let lowest_free = self.next_free(self.low_hint)?;
        self.low_hint = lowest_free;
        let mut candidate = lowest_free;
        loop {
            if candidate + count > self.frames {
                return None;
            }
            match (candidate..candidate + count).find(|&f| self.is_used(f)) {
                None => break,
                Some(used) => candidate = self.next_free(used + 1)?,
            }
        }
        if candidate == self.low_hint {
            self.low_hint = candidate + count;
        }
        Some(candidate)
    }

    fn find_high(&mut self, count: usize) -> Option<usize> {
        let highest_free = self.prev_free(self.high_hint)?;
        self.high_hint = highest_free + 1;
        let mut last = highest_free;
        loop {
            let first = (last + 1).checked_sub(count)?;
            match (first..=last).rev().find(|&f| self.is_used(f)) {
                None => {
                    if last + 1 == self.high_hint {
                        self.high_hint = first;
                    }
                    return Some(first);
                }
                Some(used) => last = self.prev_free(used)?,
            }
        }
    }

    /// Give back `count` frames at `addr`; refuses ranges it does not manage and double frees.
    pub fn free(&mut self, addr: u64, count: usize) -> Result<(), PmmError> {
        let out_of_range = PmmError::OutOfRange { addr, count };
        if addr < self.base || !addr.is_multiple_of(FRAME_SIZE) {
            return Err(out_of_range);
        }
        let first = ((addr - self.base) / FRAME_SIZE) as usize;
        let last = first
            .checked_add(count)
            .filter(|&l| l <= self.frames)
            .ok_or(out_of_range)?;
        if let Some(frame) = (first..last).find(|&f| !self.is_used(f)) {
            return Err(PmmError::DoubleFree(self.base + frame as u64 * FRAME_SIZE));
        }
        self.set_range(first..last, false);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;

    const MIB: u64 = 1 << 20;

    /// 1 MiB to 9 MiB usable, the first 64 KiB reserved like a kernel image.
    fn pmm(bits: &mut [u64], placement: Placement) -> FrameBitmap<'_> {
        let mut pmm = FrameBitmap::new(bits, MIB, 2048, placement).unwrap();
        pmm.add_usable(MIB, 9 * MIB);
        pmm.reserve(MIB, MIB + 0x1_0000);
        pmm
    }

    #[test]
    fn low_placement_hands_out_physical_addresses_from_the_bottom() {
        let mut bits = [0u64; 32];
        let mut pmm = pmm(&mut bits, Placement::Low);
        assert_eq!(pmm.free_frames(), 2048 - 16);
        assert_eq!(pmm.alloc(1), Some(MIB + 0x1_0000));
        assert_eq!(pmm.alloc(2), Some(MIB + 0x1_1000));
        assert_eq!(pmm.free_frames(), 2048 - 19);
    }

    #[test]
    fn high_placement_starts_at_the_top() {
        let mut bits = [0u64; 32];
        let mut pmm = pmm(&mut bits, Placement::High);
        assert_eq!(pmm.alloc(1), Some(9 * MIB - FRAME_SIZE));
        assert_eq!(pmm.alloc(2), Some(9 * MIB - 3 * FRAME_SIZE));
    }

    #[test]
    fn contiguous_runs_skip_holes() {
        let mut bits = [0u64; 32];
        let mut pmm = pmm(&mut bits, Placement::Low);
        pmm.reserve(MIB + 0x1_1000, MIB + 0x1_1001); // one used frame splits the start
        assert_eq!(pmm.alloc(2), Some(MIB + 0x1_2000));
        assert_eq!(pmm.alloc(1), Some(MIB + 0x1_0000));
    }

    #[test]
    fn free_makes_frames_reusable_and_refuses_mistakes() {
        let mut bits = [0u64; 32];
        let mut pmm = pmm(&mut bits, Placement::Low);
        let a = pmm.alloc(4).unwrap();
        assert_eq!(pmm.free(a, 4), Ok(()));
        assert_eq!(pmm.free(a, 1), Err(PmmError::DoubleFree(a)));
        assert_eq!(
            pmm.free(0x1000, 1),
            Err(PmmError::OutOfRange {
                addr: 0x1000,
                count: 1
            })
        );
        assert_eq!(
            pmm.free(a + 1, 1),
            Err(PmmError::OutOfRange {
                addr: a + 1,
                count: 1
            })
        );
        assert_eq!(
            pmm.free(a, usize::MAX),
            Err(PmmError::OutOfRange {
                addr: a,
                count: usize::MAX
            })
        );
        assert_eq!(pmm.alloc(4), Some(a));
    }

    #[test]
    fn exhaustion_returns_none() {
        let mut bits = [0u64; 32];
        let mut pmm = pmm(&mut bits, Placement::Low);
        let free = pmm.free_frames();
        assert_eq!(pmm.alloc(free + 1), None);
        assert_eq!(pmm.alloc(0), None);
        for _ in 0..free {
            assert!(pmm.alloc(1).is_some());
        }
        assert_eq!(pmm.alloc(1), None);
        assert_eq!(pmm.free_frames(), 0);
    }

    #[test]
    fn usable_ranges_are_clipped_to_whole_frames_inside_the_managed_range() {
        let mut bits = [0u64; 32];
        let mut pmm = FrameBitmap::new(&mut bits, MIB, 16, Placement::Low).unwrap();
        pmm.add_usable(0, MIB + 0x1800); // only the first whole frame counts
        assert_eq!(pmm.free_frames(), 1);
        pmm.add_usable(MIB + 0xf000, u64::MAX); // clipped at the end
        assert_eq!(pmm.free_frames(), 2);
    }

    #[test]
    fn construction_checks() {
        let mut bits = [0u64; 1];
        assert_eq!(
            FrameBitmap::new(&mut bits, MIB, 65, Placement::Low).unwrap_err(),
            PmmError::BitmapTooSmall {
                frames: 65,
                capacity: 64
            }
        );
        assert_eq!(
            FrameBitmap::new(&mut bits, MIB + 1, 1, Placement::Low).unwrap_err(),
            PmmError::Unaligned(MIB + 1)
        );
    }

    /// The word-skipping search with hints must choose exactly what a plain bit-by-bit scan
    /// would, whatever the history of allocations and frees.
    #[test]
    fn hinted_search_matches_a_plain_scan() {
        for placement in [Placement::Low, Placement::High] {
            let mut bits = [0u64; 8];
            let mut pmm = FrameBitmap::new(&mut bits, MIB, 500, placement).unwrap();
            pmm.add_usable(MIB, MIB + 500 * FRAME_SIZE);
            pmm.reserve(MIB + 70 * FRAME_SIZE, MIB + 130 * FRAME_SIZE);
            let mut model = [false; 500];
            for (f, used) in model.iter_mut().enumerate() {
                *used = (70..130).contains(&f);
            }
            let mut held: std::vec::Vec<(u64, usize)> = std::vec::Vec::new();
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            for _ in 0..4000 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                if seed.is_multiple_of(3) && !held.is_empty() {
                    let (addr, count) = held.swap_remove((seed as usize / 3) % held.len());
                    pmm.free(addr, count).unwrap();
                    let first = ((addr - MIB) / FRAME_SIZE) as usize;
                    model[first..first + count].fill(false);
                    continue;
                }
                let count = 1 + (seed >> 32) as usize % 4;
                let fits = |f: &usize| model[*f..*f + count].iter().all(|u| !u);
                let expected = match placement {
                    Placement::Low => (0..=500 - count).find(fits),
                    Placement::High => (0..=500 - count).rev().find(fits),
                };
                let got = pmm.alloc(count);
                assert_eq!(
                    got,
                    expected.map(|f| MIB + f as u64 * FRAME_SIZE),
                    "{placement:?}"
                );
                if let Some(f) = expected {
                    model[f..f + count].fill(true);
                    held.push((MIB + f as u64 * FRAME_SIZE, count));
                }
            }
        }
    }
}
