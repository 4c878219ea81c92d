//! What the CPU does with an exception raised while it delivers another: the Intel SDM's
//! double-fault conditions (vol. 3, table 6-5). Exceptions fall in three classes besides #DF
//! itself; the pair decides whether the second is delivered as it is, becomes a #DF, or shuts
//! the CPU down.

/// The class of an exception vector for the double-fault rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Benign,
    /// #DE, #TS, #NP, #SS, #GP.
    Contributory,
    PageFault,
    DoubleFault,
}

impl Class {
    pub fn of(vector: u8) -> Self {
        match vector {
            0 | 10 | 11 | 12 | 13 => Self::Contributory,
            14 => Self::PageFault,
            8 => Self::DoubleFault,
            _ => Self::Benign,
        }
    }
}

/// What the CPU does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Deliver the second exception; the first is dropped.
    Second,
    /// Deliver a #DF (error code 0).
    DoubleFault,
    /// Stop: a triple fault (KVM_EXIT_SHUTDOWN).
    Shutdown,
}

/// `second` was raised while delivering `first`.
pub fn combine(first: u8, second: u8) -> Next {
    use Class::{Benign, Contributory, DoubleFault, PageFault};
    match (Class::of(first), Class::of(second)) {
        (DoubleFault, Contributory | PageFault | DoubleFault) => Next::Shutdown,
        (Contributory, Contributory) | (PageFault, Contributory | PageFault) => Next::DoubleFault,
        (Benign | Contributory | PageFault | DoubleFault, _) => Next::Second,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdm_table() {
        // First benign: the second is delivered, whatever it is.
        assert_eq!(combine(6, 13), Next::Second);
        assert_eq!(combine(6, 14), Next::Second);
        // Contributory then contributory: #DF; then a page fault: delivered.
        assert_eq!(combine(13, 11), Next::DoubleFault);
        assert_eq!(combine(0, 11), Next::DoubleFault);
        assert_eq!(combine(13, 14), Next::Second);
        // A page fault then a page fault or a contributory one: #DF.
        assert_eq!(combine(14, 14), Next::DoubleFault);
        assert_eq!(combine(14, 13), Next::DoubleFault);
        assert_eq!(combine(14, 6), Next::Second);
        // During #DF: only a benign exception is delivered.
        assert_eq!(combine(8, 14), Next::Shutdown);
        assert_eq!(combine(8, 13), Next::Shutdown);
        assert_eq!(combine(8, 6), Next::Second);
    }
}
