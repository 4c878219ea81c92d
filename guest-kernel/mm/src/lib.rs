//! Memory-management logic of guest-kernel that needs no hardware: it runs in the kernel and
//! in host unit tests alike.
#![no_std]

pub mod paging;
pub mod pmm;
pub mod vma;
