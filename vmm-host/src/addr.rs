//! Guest address types.
//!
//! A guest-physical and a guest-virtual address are different types, and only a [`Gpa`] can
//! become a `vm_memory::GuestAddress`, the key to guest RAM. Turning a [`Gva`] into a [`Gpa`]
//! takes a page-table walk. The host cannot make the mistake the tool hunts in guests: using a
//! physical address where a virtual one belongs, or the reverse.

use std::fmt;
use vm_memory::GuestAddress;

/// A guest-physical address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Gpa(u64);

/// A guest-virtual address (linear address, after segmentation).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Gva(u64);

macro_rules! address_common {
    ($name:ident, $what:literal) => {
        impl $name {
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }

            pub const fn raw(self) -> u64 {
                self.0
            }

            pub const fn checked_add(self, offset: u64) -> Option<Self> {
                match self.0.checked_add(offset) {
                    Some(raw) => Some(Self(raw)),
                    None => None,
                }
            }

            /// Offset inside its 4 KiB page.
            pub const fn page_offset(self) -> u64 {
                self.0 & 0xfff
            }

            /// Bytes from here to the end of its 4 KiB page (1 to 4096).
            pub const fn to_page_end(self) -> usize {
                crate::narrow::to_usize(4096 - self.page_offset())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($what, "({:#x})"), self.0)
            }
        }
    };
}

address_common!(Gpa, "Gpa");
address_common!(Gva, "Gva");

impl Gpa {
    /// The key to guest RAM. Only physical addresses have one.
    pub const fn guest_address(self) -> GuestAddress {
        GuestAddress(self.0)
    }
}

impl Gva {
    /// True when bits 63..47 are all equal (4-level paging).
    pub const fn is_canonical(self) -> bool {
        let top = crate::narrow::signed(self.0) >> 47;
        top == 0 || top == -1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_addresses() {
        assert!(Gva::new(0x7fff_ffff_ffff).is_canonical());
        assert!(Gva::new(0xffff_8000_0000_0000).is_canonical());
        assert!(!Gva::new(0x8000_0000_0000).is_canonical());
        assert!(!Gva::new(0x8000_0000_0010_2003).is_canonical());
    }

    #[test]
    fn display_and_debug_say_which_space() {
        assert_eq!(Gpa::new(0x1000).to_string(), "0x1000");
        assert_eq!(format!("{:?}", Gva::new(0x1000)), "Gva(0x1000)");
        assert_eq!(format!("{:?}", Gpa::new(0x1000)), "Gpa(0x1000)");
    }

    #[test]
    fn checked_add_refuses_to_wrap() {
        assert_eq!(Gpa::new(u64::MAX).checked_add(1), None);
        assert_eq!(Gva::new(0x1000).checked_add(0x10), Some(Gva::new(0x1010)));
    }
}
