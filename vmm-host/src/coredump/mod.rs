//! Post-mortem cores: an ELF core of the guest, as QEMU's `dump-guest-memory -p` writes one,
//! that gdb opens with the kernel (`gdb KERNEL CORE`: registers, memory by virtual address,
//! backtrace) and `vmm-host inspect CORE` analyses with no KVM: the walker, the audit and the
//! explanation of the exceptions being handled, run on the core's memory.
//!
//! - `elf`: the layout (RAM once, PT_LOADs pointing into it).
//! - `note`: NT_PRSTATUS, QEMU's CPU state, and our JSON note.
//! - `inspect`: the offline report.

mod elf;
pub mod inspect;
mod note;

pub use elf::{MAX_SEGMENTS, Mapping, PT_VMM_RAM};
pub use note::{RecordNote, VmmNote};

use crate::addr::{Gpa, Gva};
use crate::paging::{AuditOptions, Cr3, PagingMode, WalkEnd, audit_with, walk};
use crate::virt::GuestView;
use kvm_bindings::{kvm_regs, kvm_sregs};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("cannot create the core `{path}`: {error}: choose a writable path for --core", path = .path.display())]
    Create { path: PathBuf, error: io::Error },
    #[error("writing the core failed: {0} (is the disk full?)")]
    Write(io::Error),
    #[error("laying out the core failed: {0}")]
    Layout(String),
    #[error("cannot read the core `{path}`: {error}", path = .path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("`{path}` is not a vmm-host core: {what}", path = .path.display())]
    Malformed { path: PathBuf, what: String },
}

/// Everything a core holds besides RAM's bytes.
#[derive(Debug)]
pub struct Contents<'a> {
    pub regs: &'a kvm_regs,
    pub sregs: &'a kvm_sregs,
    pub ram: &'a [(Gpa, u64)],
    pub mappings: &'a [Mapping],
    pub note: &'a VmmNote,
    /// The signal gdb reports the "process" died of.
    pub signal: u16,
}

/// Write a core to `path`, RAM read through `view` (the tap's trap bytes hidden). Returns its
/// size in bytes.
pub fn write_file(path: &Path, contents: &Contents, view: &GuestView) -> Result<u64, CoreError> {
    let json = serde_json::to_vec(contents.note).map_err(|e| CoreError::Layout(e.to_string()))?;
    let mut notes = note::encode(
        note::CORE,
        note::NT_PRSTATUS,
        &note::prstatus(contents.regs, contents.sregs, contents.signal),
    );
    notes.extend(note::encode(
        note::QEMU,
        note::NT_QEMU_CPU,
        &note::qemu_cpu_state(contents.regs, contents.sregs),
    ));
    notes.extend(note::encode(note::VMMHOST, note::NT_VMMHOST, &json));
    let file = std::fs::File::create(path).map_err(|error| CoreError::Create {
        path: path.into(),
        error,
    })?;
    let read = |gpa: Gpa, buf: &mut [u8]| view.read(gpa, buf);
    elf::write(
        BufWriter::new(file),
        &notes,
        contents.ram,
        contents.mappings,
        &read,
    )?;
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(CoreError::Write)
}

/// The ranges `mode` and `cr3` map, as contiguous runs of virtual and physical memory inside
/// one RAM region each: the audit's ranges, walked page by page where their frames scatter.
pub fn mappings(view: &GuestView, mode: PagingMode, cr3: Cr3, ram: &[(Gpa, u64)]) -> Vec<Mapping> {
    if !mode.enabled() {
        return ram
            .iter()
            .map(|&(start, size)| Mapping {
                virt: start.raw(),
                phys: start,
                size,
                writable: true,
                executable: true,
            })
            .collect();
    }
    let audit = audit_with(view, mode, cr3, ram, &AuditOptions::default());
    let mut out: Vec<Mapping> = Vec::new();
    for range in &audit.ranges {
        let mut page = range.start.raw();
        let end = range.start.raw().saturating_add(range.size);
        while page < end && out.len() < MAX_SEGMENTS {
            let w = walk(view, mode, cr3, Gva::new(page));
            let WalkEnd::Mapped(m) = w.end else {
                page = page.saturating_add(4096);
                continue;
            };
            // The rest of this page (a large page from its offset on), clipped to the range
            // and to the RAM region its frame is in (a page of MMIO or past RAM is left out).
            let rest = (m.page_size - (page & (m.page_size - 1))).min(end - page);
            let Some(room) = room_in_ram(ram, m.gpa) else {
                page = page.saturating_add(rest);
                continue;
            };
            let size = rest.min(room);
            let next = Mapping {
                virt: page,
                phys: m.gpa,
                size,
                writable: m.writable,
                executable: m.executable,
            };
            match out.last_mut() {
                Some(last) if continues(last, &next, ram) => last.size += size,
                _ => out.push(next),
            }
            page = page.saturating_add(size);
        }
    }
    out
}

/// How many bytes of RAM there are from `gpa` to the end of its region.
fn room_in_ram(ram: &[(Gpa, u64)], gpa: Gpa) -> Option<u64> {
    ram.iter()
        .find(|&&(start, size)| gpa >= start && gpa.raw() - start.raw() < size)
        .map(|&(start, size)| size - (gpa.raw() - start.raw()))
}

/// `next` follows `last` in virtual and physical memory, with the same rights, in one region.
fn continues(last: &Mapping, next: &Mapping, ram: &[(Gpa, u64)]) -> bool {
    let region = |gpa: Gpa| {
        ram.iter()
            .position(|&(s, n)| gpa >= s && gpa.raw() - s.raw() < n)
    };
    last.virt.checked_add(last.size) == Some(next.virt)
        && last.phys.raw().checked_add(last.size) == Some(next.phys.raw())
        && (last.writable, last.executable) == (next.writable, next.executable)
        && region(last.phys).is_some()
        && region(last.phys) == region(next.phys)
}

/// A core read back.
#[derive(Debug)]
pub struct Core {
    pub path: PathBuf,
    pub mem: GuestMemoryMmap,
    pub ram: Vec<(Gpa, u64)>,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub note: VmmNote,
    /// The PT_LOAD ranges: (virtual start, physical start, size).
    pub loads: Vec<(u64, u64, u64)>,
}

/// Read the core at `path`. Anything that is not a core of ours is a one-line error.
pub fn read_file(path: &Path) -> Result<Core, CoreError> {
    let data = std::fs::read(path).map_err(|error| CoreError::Read {
        path: path.into(),
        error,
    })?;
    read_bytes(path, &data)
}

/// [`read_file`] on bytes already read; `path` names them in errors.
pub fn read_bytes(path: &Path, data: &[u8]) -> Result<Core, CoreError> {
    let malformed = |what: String| CoreError::Malformed {
        path: path.into(),
        what,
    };
    let parsed = elf::parse(data).map_err(malformed)?;
    let find = |name: &str, kind: u32| {
        parsed
            .notes
            .iter()
            .find(|(n, k, _)| n == name && *k == kind)
            .map(|(_, _, desc)| *desc)
    };
    let regs = find(note::CORE, note::NT_PRSTATUS)
        .and_then(note::regs_of_prstatus)
        .ok_or_else(|| malformed("it has no NT_PRSTATUS note with the registers".into()))?;
    let mut sregs = find(note::QEMU, note::NT_QEMU_CPU)
        .and_then(note::sregs_of_qemu)
        .ok_or_else(|| malformed("it has no QEMU CPU-state note (version 1)".into()))?;
    let json = find(note::VMMHOST, note::NT_VMMHOST)
        .ok_or_else(|| malformed("it has no VMMHOST note: was it written by vmm-host?".into()))?;
    let note: VmmNote = serde_json::from_slice(json)
        .map_err(|e| malformed(format!("its VMMHOST note is damaged ({e})")))?;
    if note.version != VmmNote::VERSION {
        return Err(malformed(format!(
            "its VMMHOST note is version {}, this vmm-host reads version {}",
            note.version,
            VmmNote::VERSION
        )));
    }
    (sregs.efer, sregs.cr8, sregs.apic_base) = (note.efer, note.cr8, note.apic_base);
    let (mem, ram) = guest_ram(&parsed.ram).map_err(malformed)?;
    Ok(Core {
        path: path.into(),
        mem,
        ram,
        regs,
        sregs,
        note,
        loads: parsed.loads,
    })
}

/// Guest RAM rebuilt from the core's RAM segments.
fn guest_ram(regions: &[(Gpa, &[u8])]) -> Result<(GuestMemoryMmap, Vec<(Gpa, u64)>), String> {
    if regions.is_empty() {
        return Err("it holds no guest RAM".into());
    }
    let ranges: Vec<(GuestAddress, usize)> = regions
        .iter()
        .map(|(start, bytes)| (start.guest_address(), bytes.len()))
        .collect();
    let mem = GuestMemoryMmap::from_ranges(&ranges)
        .map_err(|e| format!("its RAM regions cannot be laid out ({e})"))?;
    for (start, bytes) in regions {
        mem.write_slice(bytes, start.guest_address())
            .map_err(|e| format!("its RAM at {start} cannot be restored ({e})"))?;
    }
    let ram = regions
        .iter()
        .map(|(start, bytes)| (*start, bytes.len() as u64))
        .collect();
    Ok((mem, ram))
}

#[cfg(test)]
mod tests;
