//! The exception history: every exception in brief, bounded. A guest in a fault loop takes
//! millions of exceptions, so the history keeps the first ones (how the trouble started) and
//! a ring of the latest (where it is now), and counts those dropped between them.

use crate::addr::Gva;
use std::collections::VecDeque;

/// One exception in brief: what QEMU's `-d int` prints for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Brief {
    pub seq: u64,
    pub vector: u8,
    pub error: Option<u64>,
    pub cr2: u64,
    pub rip: Gva,
    pub cpl: Option<u8>,
    pub depth: usize,
}

/// Exceptions kept from the start of the run.
pub const FIRST_KEPT: usize = 1 << 16;
/// Exceptions kept from the end of the run, in a ring.
pub const LAST_KEPT: usize = (1 << 20) - FIRST_KEPT;

#[derive(Debug, Clone)]
pub struct History {
    first: Vec<Brief>,
    last: VecDeque<Brief>,
    first_limit: usize,
    last_limit: usize,
    dropped: u64,
}

impl Default for History {
    fn default() -> Self {
        Self::with_limits(FIRST_KEPT, LAST_KEPT)
    }
}

impl History {
    pub fn with_limits(first_limit: usize, last_limit: usize) -> Self {
        Self {
            first: Vec::new(),
            last: VecDeque::new(),
            first_limit,
            last_limit,
            dropped: 0,
        }
    }

    pub fn push(&mut self, brief: Brief) {
        if self.first.len() < self.first_limit {
            self.first.push(brief);
            return;
        }
        if self.last_limit == 0 {
            self.dropped += 1;
            return;
        }
        if self.last.len() == self.last_limit {
            self.last.pop_front();
            self.dropped += 1;
        }
        self.last.push_back(brief);
    }

    /// The exceptions kept, oldest first (with a gap after the first ones when `dropped`).
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Brief> + Clone {
        self.first.iter().chain(self.last.iter())
    }

    pub fn len(&self) -> usize {
        self.first.len() + self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Exceptions dropped between the first kept and the last kept.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// One line on what was dropped, when something was.
    pub fn gap(&self) -> Option<String> {
        let after = self.first.last()?;
        let before = self.last.front()?;
        (self.dropped > 0).then(|| {
            format!(
                "the history keeps the first {} and the last {} exceptions: {} between #{} and #{} were counted, not kept",
                self.first.len(),
                self.last.len(),
                self.dropped,
                after.seq,
                before.seq
            )
        })
    }
}

impl FromIterator<Brief> for History {
    fn from_iter<I: IntoIterator<Item = Brief>>(items: I) -> Self {
        let mut history = Self::default();
        for brief in items {
            history.push(brief);
        }
        history
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Gva;

    fn brief(seq: u64) -> Brief {
        Brief {
            seq,
            vector: 14,
            error: Some(2),
            cr2: 0,
            rip: Gva::new(0),
            cpl: Some(0),
            depth: 1,
        }
    }

    #[test]
    fn keeps_the_first_and_the_latest_and_counts_the_gap() {
        let mut history = History::with_limits(3, 4);
        for seq in 1..=20 {
            history.push(brief(seq));
        }
        let kept: Vec<u64> = history.iter().map(|b| b.seq).collect();
        assert_eq!(kept, [1, 2, 3, 17, 18, 19, 20]);
        assert_eq!(history.dropped(), 13);
        assert_eq!(
            history.gap().unwrap(),
            "the history keeps the first 3 and the last 4 exceptions: 13 between #3 and #17 were counted, not kept"
        );
    }

    #[test]
    fn a_short_run_keeps_everything() {
        let history: History = (1..=5).map(brief).collect();
        assert_eq!(history.len(), 5);
        assert_eq!(history.dropped(), 0);
        assert!(history.gap().is_none());
    }

    #[test]
    fn a_ring_of_zero_only_counts() {
        let mut history = History::with_limits(1, 0);
        for seq in 1..=3 {
            history.push(brief(seq));
        }
        assert_eq!(history.len(), 1);
        assert_eq!(history.dropped(), 2);
    }
}
