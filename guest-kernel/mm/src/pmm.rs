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
        bits.fill(u64::MAX);
        Ok(Self {
            base,
            frames,
            bits,
            free: 0,
            placement,
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

    fn is_used(&self, frame: usize) -> bool {
        self.bits[frame / BITS] & (1 << (frame % BITS)) != 0
    }

    fn set(&mut self, frame: usize, used: bool) {
        let was = self.is_used(frame);
        if used {
            self.bits[frame / BITS] |= 1 << (frame % BITS);
        } else {
            self.bits[frame / BITS] &= !(1 << (frame % BITS));
        }
        match (was, used) {
            (true, false) => self.free += 1,
            (false, true) => self.free -= 1,
            _ => {}
        }
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
        for frame in self.frames_within(start, end) {
            self.set(frame, false);
        }
    }

    /// Take every frame touching `[start, end)` out of use (kernel image, tables, stack).
    pub fn reserve(&mut self, start: u64, end: u64) {
        let start = start & !(FRAME_SIZE - 1);
        let end = end.saturating_add(FRAME_SIZE - 1) & !(FRAME_SIZE - 1);
        for frame in self.frames_within(start, end) {
            self.set(frame, true);
        }
    }

    /// `count` contiguous free frames from the placement's end; their physical address.
    pub fn alloc(&mut self, count: usize) -> Option<u64> {
        if count == 0 || count > self.free {
            return None;
        }
        let first = match self.placement {
            Placement::Low => (0..=self.frames - count).find(|&f| self.run_is_free(f, count))?,
            Placement::High => (0..=self.frames - count)
                .rev()
                .find(|&f| self.run_is_free(f, count))?,
        };
        for frame in first..first + count {
            self.set(frame, true);
        }
        Some(self.base + first as u64 * FRAME_SIZE)
    }

    fn run_is_free(&self, first: usize, count: usize) -> bool {
        (first..first + count).all(|f| !self.is_used(f))
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
        for frame in first..last {
            self.set(frame, false);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
