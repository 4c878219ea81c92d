//! An uncompressed Linux kernel, the ELF `vmlinux` a kernel build leaves at its top, booted
//! through the Linux boot protocol's 64-bit entry as Firecracker and cloud hypervisors boot
//! it: the PT_LOAD segments at their physical addresses, `e_entry` (Linux links it as the
//! physical `startup_64`), and `boot_params` with a setup header written by the host, since a
//! vmlinux has none ([`super::linux`] writes it). `--boot linux` picks this path for an ELF; a vmlinux with a PVH note
//! boots through PVH by default.

use super::LoadError;
use crate::addr::Gpa;
use std::path::Path;

/// A checked vmlinux: its bytes, segments and entry.
#[derive(Debug, Clone)]
pub(super) struct Vmlinux {
    pub data: Vec<u8>,
    pub segments: Vec<(Gpa, Gpa)>,
    pub entry: Gpa,
}

/// Check that `data` is an x86-64 ELF whose entry lies in a loaded segment (the caller checks
/// the segments against RAM).
pub(super) fn inspect(path: &Path, data: &[u8]) -> Result<Vmlinux, LoadError> {
    let layout = super::pvh::layout(path, data)?;
    if layout.segments.is_empty() {
        return Err(LoadError::NoSegments(path.to_path_buf()));
    }
    Ok(Vmlinux {
        data: data.to_vec(),
        segments: layout.segments,
        entry: layout.e_entry,
    })
}
