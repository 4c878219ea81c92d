//! The core's ELF layout. Guest RAM is stored once, region by region, in segments of our own
//! type ([`PT_VMM_RAM`], p_paddr its physical start) that gdb skips; each range the page
//! tables map is a PT_LOAD (p_vaddr virtual, p_paddr physical) whose file range points into
//! that copy, so gdb reads virtual addresses without RAM being written twice. Memory that no
//! page maps is still in the core (page tables often are), but never at a virtual address it
//! does not have: a null pointer reads as "cannot access memory" in gdb, as in the guest.
//!
//! Written with `object`'s ELF writer; read back with `object`'s parser.

use super::CoreError;
use crate::addr::Gpa;
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader as _};
use object::write::StreamingBuffer;
use object::write::elf::{FileHeader as WriteHeader, ProgramHeader, Writer};
use std::io::Write;

/// Our segment type for guest RAM: PT_LOOS + "VMM".
pub const PT_VMM_RAM: u32 = elf::PT_LOOS + 0x56_4d4d;
/// RAM data starts on a page boundary.
const PAGE: u64 = 4096;
/// The most program headers an ELF header can count.
pub const MAX_SEGMENTS: usize = 0xff00;

/// A virtual range mapped to contiguous physical memory inside one RAM region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub virt: u64,
    pub phys: Gpa,
    pub size: u64,
    pub writable: bool,
    pub executable: bool,
}

/// Where a physical range's bytes are in the file, given where RAM data starts.
fn file_offset(ram: &[(Gpa, u64)], data_start: u64, phys: Gpa, size: u64) -> Option<u64> {
    let mut offset = data_start;
    for &(start, len) in ram {
        let inside = phys.raw().checked_sub(start.raw())?;
        if phys >= start && inside.checked_add(size)? <= len {
            return Some(offset + inside);
        }
        offset += len;
    }
    None
}

/// A program header with everything but its type, flags and ranges zero.
fn header(
    p_type: u32,
    p_flags: u32,
    p_offset: u64,
    (vaddr, paddr, size): (u64, u64, u64),
) -> ProgramHeader {
    ProgramHeader {
        p_type: elf::ProgramType(p_type),
        p_flags: elf::ProgramFlags(p_flags),
        p_offset,
        p_vaddr: vaddr,
        p_paddr: paddr,
        p_filesz: size,
        p_memsz: if p_type == elf::PT_NOTE.0 { 0 } else { size },
        p_align: if p_type == elf::PT_NOTE.0 { 4 } else { PAGE },
    }
}

/// The notes, the RAM regions stored from `data_start` on, then a PT_LOAD per mapping whose
/// frames are in RAM (at most [`MAX_SEGMENTS`] in all).
fn program_headers(
    notes: (u64, u64),
    data_start: u64,
    ram: &[(Gpa, u64)],
    mappings: &[Mapping],
) -> Vec<ProgramHeader> {
    let mut headers = vec![header(elf::PT_NOTE.0, 0, notes.0, (0, 0, notes.1))];
    let mut offset = data_start;
    let rwx = elf::PF_R.0 | elf::PF_W.0 | elf::PF_X.0;
    for &(start, len) in ram {
        headers.push(header(PT_VMM_RAM, rwx, offset, (0, start.raw(), len)));
        offset += len;
    }
    for m in mappings {
        if headers.len() >= MAX_SEGMENTS {
            break;
        }
        let Some(at) = file_offset(ram, data_start, m.phys, m.size) else {
            continue;
        };
        let mut flags = elf::PF_R.0;
        if m.writable {
            flags |= elf::PF_W.0;
        }
        if m.executable {
            flags |= elf::PF_X.0;
        }
        headers.push(header(
            elf::PT_LOAD.0,
            flags,
            at,
            (m.virt, m.phys.raw(), m.size),
        ));
    }
    headers
}

/// Write a core: `notes` (already encoded), then every RAM region's bytes as `read` gives them,
/// with a PT_LOAD for each of `mappings`. Mappings outside RAM are left out.
pub fn write(
    out: impl Write,
    notes: &[u8],
    ram: &[(Gpa, u64)],
    mappings: &[Mapping],
    read: &dyn Fn(Gpa, &mut [u8]) -> bool,
) -> Result<(), CoreError> {
    let mut buffer = StreamingBuffer::new(out);
    let mut writer = Writer::new(object::Endianness::Little, true, &mut buffer);
    writer.reserve_file_header();
    // The headers' file offsets depend on how many there are: count them with a dummy layout.
    let count = program_headers((0, 0), 0, ram, mappings).len();
    writer.reserve_program_headers(u32::try_from(count).unwrap_or(u32::MAX));
    let notes_at = writer.reserve(notes.len() as u64, 4);
    let data_start = writer.reserved_len().next_multiple_of(PAGE);
    writer.reserve_until(data_start);
    for &(_, len) in ram {
        writer.reserve(len, 1);
    }
    writer
        .write_file_header(&WriteHeader {
            os_abi: elf::ELFOSABI_NONE,
            abi_version: 0,
            e_type: elf::ET_CORE,
            e_machine: elf::EM_X86_64,
            e_entry: 0,
            e_flags: elf::FileFlags(0),
        })
        .map_err(|e| CoreError::Layout(e.to_string()))?;
    writer.write_align_program_headers();
    let notes_range = (notes_at, notes.len() as u64);
    for header in program_headers(notes_range, data_start, ram, mappings) {
        writer.write_program_header(&header);
    }
    writer.write_align(4);
    writer.write(notes);
    writer.pad_until(data_start);
    write_ram(&mut writer, ram, read);
    buffer.result().map_err(CoreError::Write)
}

/// Every RAM region's bytes, a MiB at a time; what cannot be read is written as zeros.
fn write_ram(writer: &mut Writer, ram: &[(Gpa, u64)], read: &dyn Fn(Gpa, &mut [u8]) -> bool) {
    let mut chunk = vec![0u8; 1 << 20];
    for &(start, len) in ram {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(chunk.len() as u64);
            let piece = &mut chunk[..crate::narrow::to_usize(n)];
            if !read(Gpa::new(start.raw() + done), piece) {
                piece.fill(0);
            }
            writer.write(piece);
            done += n;
        }
    }
}

/// What a core file holds, parsed.
#[derive(Debug)]
pub struct Parsed<'a> {
    /// Guest RAM regions and their bytes.
    pub ram: Vec<(Gpa, &'a [u8])>,
    /// (name, type, descriptor) of every note.
    pub notes: Vec<(String, u32, &'a [u8])>,
    /// The PT_LOAD ranges: (virtual start, physical start, size).
    pub loads: Vec<(u64, u64, u64)>,
}

/// Parse `data` as one of our cores. Errors say what is wrong in one line.
pub fn parse(data: &[u8]) -> Result<Parsed<'_>, String> {
    let bad = |what: String| what;
    let header = elf::FileHeader64::<object::Endianness>::parse(data)
        .map_err(|e| bad(format!("not a 64-bit ELF file ({e})")))?;
    let endian = header
        .endian()
        .map_err(|e| bad(format!("its byte order is unknown ({e})")))?;
    if header.e_type(endian) != elf::ET_CORE {
        return Err(bad(format!(
            "an ELF file of type {}, not a core (type 4)",
            header.e_type(endian).0
        )));
    }
    let phdrs = header
        .program_headers(endian, data)
        .map_err(|e| bad(format!("its program headers cannot be read ({e})")))?;
    let mut parsed = Parsed {
        ram: Vec::new(),
        notes: Vec::new(),
        loads: Vec::new(),
    };
    for phdr in phdrs {
        let kind = phdr.p_type(endian);
        if kind == elf::PT_NOTE {
            let notes = phdr
                .notes(endian, data)
                .map_err(|e| bad(format!("a note segment is damaged ({e})")))?;
            let Some(mut notes) = notes else { continue };
            while let Some(note) = notes
                .next()
                .map_err(|e| bad(format!("a note is damaged ({e})")))?
            {
                let name = String::from_utf8_lossy(note.name()).into_owned();
                parsed
                    .notes
                    .push((name, note.n_type(endian).0, note.desc()));
            }
        } else if kind.0 == PT_VMM_RAM {
            let bytes = phdr.data(endian, data).map_err(|_| {
                bad(format!(
                    "its RAM at {:#x} runs past the end of the file",
                    phdr.p_paddr(endian)
                ))
            })?;
            parsed.ram.push((Gpa::new(phdr.p_paddr(endian)), bytes));
        } else if kind == elf::PT_LOAD {
            let (virt, phys, size) = (
                phdr.p_vaddr(endian),
                phdr.p_paddr(endian),
                phdr.p_memsz(endian),
            );
            parsed.loads.push((virt, phys, size));
        }
    }
    Ok(parsed)
}
