//! Reads at guest-virtual addresses, through the host's own page-table walker.
//!
//! The only way from a [`Gva`] to guest bytes: walk, then read the [`Gpa`] the walk found.

use crate::addr::{Gpa, Gva};
use crate::paging::{self, Cr3, PagingMode, PhysMemory, Walk, WalkEnd};
use vm_memory::{Bytes, GuestMemoryMmap};

/// Bytes the host itself put into guest RAM (the tap's trap bytes), which the guest must
/// never be seen to have.
pub trait HostBytes: std::fmt::Debug {
    /// Put the guest's own bytes back into `buf`, which was read from `start`.
    fn hide(&self, start: Gpa, buf: &mut [u8]);
}

/// Guest RAM as the guest believes it is: trap bytes hidden.
#[derive(Debug, Clone, Copy)]
pub struct GuestView<'a> {
    pub ram: &'a GuestMemoryMmap,
    pub patches: Option<&'a dyn HostBytes>,
}

impl<'a> GuestView<'a> {
    pub fn new(ram: &'a GuestMemoryMmap, patches: Option<&'a dyn HostBytes>) -> Self {
        Self { ram, patches }
    }

    /// Fill `buf` from `gpa`; false when any byte is outside guest RAM.
    pub fn read(&self, gpa: Gpa, buf: &mut [u8]) -> bool {
        if self.ram.read_slice(buf, gpa.guest_address()).is_err() {
            return false;
        }
        if let Some(patches) = self.patches {
            patches.hide(gpa, buf);
        }
        true
    }
}

impl PhysMemory for GuestView<'_> {
    fn read_u64(&self, gpa: Gpa) -> Option<u64> {
        let mut raw = [0u8; 8];
        self.read(gpa, &mut raw).then(|| u64::from_le_bytes(raw))
    }

    fn read_table(&self, table: Gpa, out: &mut [u64; 512]) -> bool {
        let mut raw = [0u8; 4096];
        if !self.read(table, &mut raw) {
            return false;
        }
        for (entry, bytes) in out.iter_mut().zip(raw.chunks_exact(8)) {
            *entry = u64::from_le_bytes(bytes.try_into().unwrap_or_default());
        }
        true
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum VirtError {
    #[error("{gva} is not mapped: {why}")]
    NotMapped { gva: Gva, why: String },
    #[error("{gva} maps to physical {gpa}, which is not guest RAM")]
    NotRam { gva: Gva, gpa: Gpa },
}

/// Why a walk found no page, in a few words.
pub fn walk_failure(walk: &Walk) -> String {
    match walk.end {
        WalkEnd::Mapped(_) => "mapped".into(),
        WalkEnd::NonCanonical => "not canonical".into(),
        WalkEnd::NotPresent { level } => format!("{level} entry not present"),
        WalkEnd::ReservedBits { level, bits } => {
            format!("{level} entry has reserved bits {bits:#x}")
        }
        WalkEnd::TableOutsideRam { level, table } => {
            format!("{level} table at {table} is outside RAM")
        }
    }
}

/// An address space: the tables under one CR3, read as the CPU would in `mode`.
#[derive(Debug, Clone, Copy)]
pub struct AddressSpace<'a> {
    pub view: GuestView<'a>,
    pub mode: PagingMode,
    pub cr3: Cr3,
}

impl<'a> AddressSpace<'a> {
    pub fn walk(&self, gva: Gva) -> Walk {
        paging::walk(&self.view, self.mode, self.cr3, gva)
    }

    pub fn translate(&self, gva: Gva) -> Result<Gpa, VirtError> {
        let walk = self.walk(gva);
        walk.translation().ok_or_else(|| VirtError::NotMapped {
            gva,
            why: walk_failure(&walk),
        })
    }

    /// Fill `buf` from `gva`, page by page; returns where the first byte lives.
    pub fn read(&self, gva: Gva, buf: &mut [u8]) -> Result<Gpa, VirtError> {
        let mut first = None;
        let mut done = 0;
        while done < buf.len() {
            let here = Gva::new(gva.raw().wrapping_add(done as u64));
            let gpa = self.translate(here)?;
            first.get_or_insert(gpa);
            let len = here.to_page_end().min(buf.len() - done);
            if !self.view.read(gpa, &mut buf[done..done + len]) {
                return Err(VirtError::NotRam { gva: here, gpa });
            }
            done += len;
        }
        Ok(first.unwrap_or_default())
    }

    /// `N` little-endian qwords from `gva` (an exception frame, a descriptor pair).
    pub fn read_u64s<const N: usize>(&self, gva: Gva) -> Result<[u64; N], VirtError> {
        // One read, one walk per page, however many words.
        let mut raw = vec![0u8; 8 * N];
        self.read(gva, &mut raw)?;
        let mut words = [0u64; N];
        for (word, bytes) in words.iter_mut().zip(raw.chunks_exact(8)) {
            *word = u64::from_le_bytes(bytes.try_into().unwrap_or_default());
        }
        Ok(words)
    }

    pub fn read_u64(&self, gva: Gva) -> Result<u64, VirtError> {
        let mut raw = [0u8; 8];
        self.read(gva, &mut raw)?;
        Ok(u64::from_le_bytes(raw))
    }

    /// As many bytes from `gva` as are readable, up to `buf.len()`: an instruction at the end
    /// of a mapping still decodes.
    pub fn read_prefix(&self, gva: Gva, buf: &mut [u8]) -> Result<(Gpa, usize), VirtError> {
        let mut len = buf.len();
        loop {
            match self.read(gva, &mut buf[..len]) {
                Ok(at) => return Ok((at, len)),
                Err(e) if len <= 1 => return Err(e),
                Err(_) => len -= 1,
            }
        }
    }
}
