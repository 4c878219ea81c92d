//! Linear runs (VA − PA constant) after the walk has folded them: which one is the direct
//! map, and which physical frames two runs share.

use super::frames::{Bits, Ram, mark_counting_repeats};
use super::{Alias, DirectMap, Finding};
use crate::addr::{Gpa, Gva};

/// How many runs outside the identity and direct maps are remembered, to name the first
/// mapping of an aliased frame. Beyond it, aliases are still counted.
const LOG: usize = 1 << 16;

/// Leaves adjacent in both virtual and physical memory.
#[derive(Debug, Clone, Copy)]
pub(super) struct Run {
    pub(super) va: u64,
    pub(super) pa: u64,
    pub(super) len: u64,
}

impl Run {
    /// The virtual address of `frame`, which the run covers.
    fn va_of(&self, frame: u64) -> Gva {
        Gva::new(self.va.wrapping_add(frame - self.pa))
    }
}

/// RAM frames mapped outside the maps that alias by design, and those mapped so twice.
#[derive(Debug)]
pub(super) struct Aliasing {
    seen: Bits,
    repeated: Bits,
    log: Vec<Run>,
    examples: Vec<Alias>,
    max_examples: usize,
}

impl Aliasing {
    pub(super) fn new(ram: &Ram, max_examples: usize) -> Self {
        let frames = ram.bytes() / 4096;
        Self {
            seen: Bits::new(frames),
            repeated: Bits::new(frames),
            log: Vec::new(),
            examples: Vec::new(),
            max_examples,
        }
    }

    /// Mark the RAM frames of `run`, noting the first frame of each stretch that was already
    /// marked.
    pub(super) fn add(&mut self, ram: &Ram, run: Run) {
        let mut again = Vec::new();
        let (seen, repeated) = (&mut self.seen, &mut self.repeated);
        ram.split(
            run.pa,
            run.len,
            |_, bit, n| again.extend(mark_counting_repeats(seen, repeated, bit, n)),
            |_, _| {},
        );
        for bit in again {
            if self.examples.len() >= self.max_examples {
                break;
            }
            let frame = ram.frame_of(bit);
            let first = self
                .log
                .iter()
                .find(|r| (r.pa..r.pa + r.len).contains(&frame))
                .map(|r| r.va_of(frame));
            self.examples.push(Alias {
                frame: Gpa::new(frame),
                first,
                second: run.va_of(frame),
            });
        }
        if self.log.len() < LOG {
            self.log.push(run);
        }
    }

    pub(super) fn finding(self) -> Option<Finding> {
        let frames = self.repeated.count();
        (frames > 0).then_some(Finding::Aliased {
            frames,
            examples: self.examples,
        })
    }
}

/// Of `candidates` (upper-half runs), the one over the most RAM, if that is at least
/// `threshold`; the others are ordinary mappings and go to `aliasing`.
pub(super) fn choose_direct_map(
    ram: &Ram,
    candidates: &[Run],
    threshold: u64,
    aliasing: &mut Aliasing,
) -> Option<DirectMap> {
    let in_ram = |run: &Run| {
        let mut bytes = 0;
        ram.split(run.pa, run.len, |_, _, n| bytes += n * 4096, |_, _| {});
        bytes
    };
    let best = candidates
        .iter()
        .enumerate()
        .map(|(i, run)| (in_ram(run), i))
        .filter(|&(bytes, _)| bytes >= threshold && bytes > 0)
        // Largest wins; among equals, the first found.
        .max_by_key(|&(bytes, i)| (bytes, std::cmp::Reverse(i)))
        .map(|(_, i)| i);
    for (i, run) in candidates.iter().enumerate() {
        if Some(i) != best {
            aliasing.add(ram, *run);
        }
    }
    best.map(|i| DirectMap {
        base: Gva::new(candidates[i].va),
        phys_start: Gpa::new(candidates[i].pa),
        size: candidates[i].len,
    })
}
