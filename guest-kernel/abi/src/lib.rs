//! The contract between `vmm-host` and `guest-kernel`.
//!
//! Everything both sides must agree on lives here, so that a change to a port number or to the
//! boot layout is one edit that both sides see. The crate is `no_std` and free of `unsafe`, so
//! the host can unit-test every parser the guest uses.
#![no_std]

pub mod boot;
pub mod cmdline;
pub mod disk_image;
pub mod exception;
pub mod exit;
pub mod linux;
pub mod multiboot;
pub mod multiboot2;
pub mod ports;
pub mod start_info;
pub mod trace;
