//! A fingerprint of the exception sequence a run takes.
//!
//! The kernel folds every exception it handles into this digest and prints it; a test folds the
//! exceptions of QEMU's `-d int` log into the same digest. Equal digests mean the same
//! sequence (vector, error code, CR2 for page faults) under both, with no per-fault serial
//! line to slow the run down.

/// The vector `int 0x80` system calls use. Some nested KVMs deliver `int 0x80` from ring 3 as
/// #UD; the kernel then records the call under this vector, as the CPU would have.
pub const SYSCALL_VECTOR: u8 = 0x80;

/// FNV-1a over the 64-bit words (vector, error code, CR2 if the vector is #PF): a word at a
/// time, since every instruction of a fault handler counts under an emulating hypervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExceptionDigest {
    hash: u64,
    count: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const PAGE_FAULT: u8 = 14;

impl Default for ExceptionDigest {
    fn default() -> Self {
        Self::new()
    }
}

impl ExceptionDigest {
    pub const fn new() -> Self {
        Self {
            hash: FNV_OFFSET,
            count: 0,
        }
    }

    /// Fold one exception in; `error` is 0 for vectors without an error code, and `cr2` only
    /// counts for page faults (elsewhere it is a stale value).
    pub fn record(&mut self, vector: u8, error: u64, cr2: u64) {
        let cr2 = if vector == PAGE_FAULT { cr2 } else { 0 };
        for value in [u64::from(vector), error, cr2] {
            self.hash = (self.hash ^ value).wrapping_mul(FNV_PRIME);
        }
        self.count += 1;
    }

    pub const fn hash(&self) -> u64 {
        self.hash
    }

    pub const fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_error_and_page_fault_address_all_count() {
        let mut a = ExceptionDigest::new();
        a.record(14, 6, 0x716b_326c_8100);
        a.record(13, 0, 0);
        let mut b = ExceptionDigest::new();
        b.record(13, 0, 0);
        b.record(14, 6, 0x716b_326c_8100);
        assert_ne!(a, b);
        let mut c = ExceptionDigest::new();
        c.record(14, 6, 0x716b_326c_8200);
        c.record(13, 0, 0);
        assert_ne!(a.hash(), c.hash());
        assert_eq!(a.count(), 2);
    }

    #[test]
    fn a_stale_cr2_outside_page_faults_does_not_count() {
        let mut a = ExceptionDigest::new();
        a.record(13, 0, 0x1234);
        let mut b = ExceptionDigest::new();
        b.record(13, 0, 0);
        assert_eq!(a, b);
    }
}
