//! Multiboot 1 kernels: finding and checking the header, and planning where each byte of the
//! file goes — by the header's address fields (the "a.out kludge", flag 16) when it has them,
//! else by the ELF's program headers (ELF32 or ELF64, physical addresses).

use super::LoadError;
use crate::addr::Gpa;
use abi::multiboot::{HEADER_MAGIC, HEADER_SEARCH, header_flags};
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};
use std::ops::Range;
use std::path::Path;
use vm_memory::{Bytes, GuestMemoryMmap};

/// Header flags this host honours: page-aligned modules, memory information, a video mode
/// (it offers 80×25 EGA text).
const SUPPORTED_REQUIRED: u32 =
    header_flags::PAGE_ALIGN | header_flags::MEMORY_INFO | header_flags::VIDEO_MODE;
/// Multiboot loads below 4 GiB: every address in the header and the info is 32-bit.
const LIMIT_4G: u64 = 1 << 32;

/// A Multiboot (1 or 2) kernel, checked, with where its bytes go.
#[derive(Debug, Clone)]
pub(super) struct Image {
    data: Vec<u8>,
    chunks: Vec<Chunk>,
    pub entry: Gpa,
    /// The kernel asked for a video mode: it is told about the 80×25 text screen.
    pub wants_screen: bool,
}

/// File bytes copied to `at`, then `bss` zero bytes after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Chunk {
    at: Gpa,
    file: Range<usize>,
    bss: u64,
}

impl Chunk {
    fn end(&self) -> Gpa {
        Gpa::new(self.at.raw() + self.file.len() as u64 + self.bss)
    }
}

/// The header: where it is and its flags.
#[derive(Debug, Clone, Copy)]
struct Header {
    offset: usize,
    flags: u32,
}

pub(super) fn u32_at(data: &[u8], offset: usize) -> Option<u32> {
    let bytes = data.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// File offsets, 4-aligned in the first 8 KiB, that hold the header magic.
fn magic_offsets(data: &[u8]) -> impl Iterator<Item = usize> + '_ {
    (0..HEADER_SEARCH.min(data.len()))
        .step_by(4)
        .filter(|&at| u32_at(data, at) == Some(HEADER_MAGIC))
}

/// Whether `data` carries a Multiboot header magic where a loader looks for one.
pub(super) fn has_header(data: &[u8]) -> bool {
    magic_offsets(data).next().is_some()
}

/// The first header whose checksum holds; a magic with a bad checksum is an error only when
/// no good header follows it.
fn find_header(path: &Path, data: &[u8]) -> Result<Header, LoadError> {
    let mut bad = None;
    for offset in magic_offsets(data) {
        let (Some(flags), Some(checksum)) = (u32_at(data, offset + 4), u32_at(data, offset + 8))
        else {
            bad.get_or_insert((offset, "it is cut off by the end of the file".to_string()));
            continue;
        };
        if HEADER_MAGIC.wrapping_add(flags).wrapping_add(checksum) == 0 {
            return Ok(Header { offset, flags });
        }
        let want = 0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags);
        bad.get_or_insert((
            offset,
            format!(
                "bad checksum {checksum:#010x} (magic + flags + checksum must be 0; with flags {flags:#x} the checksum is {want:#010x})"
            ),
        ));
    }
    match bad {
        Some((offset, why)) => Err(LoadError::BadMultibootHeader(
            path.to_path_buf(),
            offset,
            why,
        )),
        None => Err(LoadError::NoMultibootHeader(path.to_path_buf())),
    }
}

/// Check a Multiboot kernel and plan its load.
pub(super) fn inspect(path: &Path, data: Vec<u8>) -> Result<Image, LoadError> {
    let header = find_header(path, &data)?;
    let bad = |why: String| LoadError::BadMultibootHeader(path.to_path_buf(), header.offset, why);
    let unknown = header.flags & header_flags::REQUIRED_MASK & !SUPPORTED_REQUIRED;
    if unknown != 0 {
        return Err(bad(format!(
            "it requires features this host does not provide (flag bits {unknown:#x}; known: page-aligned modules, memory information, video mode)"
        )));
    }
    let (chunks, entry) = if header.flags & header_flags::ADDRESS != 0 {
        let field = |index: usize| {
            u32_at(&data, header.offset + 12 + 4 * index)
                .ok_or_else(|| bad("its address fields are cut off by the end of the file".into()))
        };
        let fields = [field(0)?, field(1)?, field(2)?, field(3)?];
        let chunk = address_plan(&data, header.offset, fields).map_err(bad)?;
        (vec![chunk], Gpa::new(u64::from(field(4)?)))
    } else {
        elf_plan(path, &data)?
    };
    let wants_screen = header.flags & header_flags::VIDEO_MODE != 0;
    Image::new(data, chunks, entry, wants_screen).map_err(bad)
}

impl Image {
    /// A checked plan: nothing above 4 GiB, where Multiboot's 32-bit addresses cannot reach.
    pub(super) fn new(
        data: Vec<u8>,
        chunks: Vec<Chunk>,
        entry: Gpa,
        wants_screen: bool,
    ) -> Result<Self, String> {
        if let Some(high) = chunks.iter().find(|c| c.end().raw() > LIMIT_4G) {
            return Err(format!(
                "it loads [{}, {}), above 4 GiB where Multiboot cannot reach",
                high.at,
                high.end()
            ));
        }
        Ok(Self {
            data,
            chunks,
            entry,
            wants_screen,
        })
    }
}

/// Load by address fields (Multiboot 1's "a.out kludge", Multiboot 2's address tag):
/// `[header_addr, load_addr, load_end_addr, bss_end_addr]`, the header found at file offset
/// `header_offset`.
pub(super) fn address_plan(
    data: &[u8],
    header_offset: usize,
    [header_addr, load_addr, load_end, bss_end]: [u32; 4],
) -> Result<Chunk, String> {
    let Some(into_load) = header_addr.checked_sub(load_addr) else {
        return Err(format!(
            "header_addr {header_addr:#x} lies below load_addr {load_addr:#x}"
        ));
    };
    let Some(file_start) = header_offset.checked_sub(into_load as usize) else {
        return Err(format!(
            "header_addr - load_addr is {into_load:#x}, but the header is only {header_offset:#x} bytes into the file"
        ));
    };
    let file_end = if load_end == 0 {
        data.len()
    } else if load_end <= load_addr {
        return Err(format!(
            "load_end_addr {load_end:#x} is not above load_addr {load_addr:#x}"
        ));
    } else {
        let end = file_start + (load_end - load_addr) as usize;
        if end > data.len() {
            return Err(format!(
                "load_end_addr {load_end:#x} asks for {:#x} bytes from file offset {file_start:#x}, but the file has {:#x}",
                load_end - load_addr,
                data.len() - file_start
            ));
        }
        end
    };
    let loaded_end = u64::from(load_addr) + (file_end - file_start) as u64;
    let bss = match u64::from(bss_end) {
        0 => 0,
        end if end < loaded_end => {
            return Err(format!(
                "bss_end_addr {bss_end:#x} lies below the end of the loaded bytes {loaded_end:#x}"
            ));
        }
        end => end - loaded_end,
    };
    Ok(Chunk {
        at: Gpa::new(u64::from(load_addr)),
        file: file_start..file_end,
        bss,
    })
}

/// Load by the ELF's program headers: ELF32 for i386 or ELF64 for x86-64.
pub(super) fn elf_plan(path: &Path, data: &[u8]) -> Result<(Vec<Chunk>, Gpa), LoadError> {
    if !data.starts_with(elf::ELFMAG.as_slice()) {
        return Err(LoadError::Malformed(
            path.to_path_buf(),
            "its Multiboot header has no address fields (flag 16), so it must be an ELF, and it is not one".into(),
        ));
    }
    match data.get(4).copied() {
        Some(class) if class == elf::ELFCLASS32.0 => {
            elf_chunks::<elf::FileHeader32<object::Endianness>>(path, data, elf::EM_386)
        }
        _ => elf_chunks::<elf::FileHeader64<object::Endianness>>(path, data, elf::EM_X86_64),
    }
}

/// Every PT_LOAD at its physical address; the entry translated from virtual to physical when
/// it falls in a segment's virtual range (a higher-half kernel linked with AT()).
fn elf_chunks<H: FileHeader<Endian = object::Endianness>>(
    path: &Path,
    data: &[u8],
    machine: elf::Machine,
) -> Result<(Vec<Chunk>, Gpa), LoadError> {
    let malformed = |why: String| LoadError::Malformed(path.to_path_buf(), why);
    let header = H::parse(data).map_err(|e| malformed(e.to_string()))?;
    let endian = header.endian().map_err(|e| malformed(e.to_string()))?;
    if header.e_machine(endian) != machine {
        return Err(LoadError::NotX86(
            path.to_path_buf(),
            header.e_machine(endian).0,
        ));
    }
    let mut chunks = Vec::new();
    let mut entry = header.e_entry(endian).into();
    let e_entry = entry;
    for phdr in header
        .program_headers(endian, data)
        .map_err(|e| malformed(e.to_string()))?
    {
        let memsz: u64 = phdr.p_memsz(endian).into();
        if phdr.p_type(endian) != elf::PT_LOAD || memsz == 0 {
            continue;
        }
        let (offset, filesz): (u64, u64) =
            (phdr.p_offset(endian).into(), phdr.p_filesz(endian).into());
        let (paddr, vaddr): (u64, u64) = (phdr.p_paddr(endian).into(), phdr.p_vaddr(endian).into());
        let file = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(filesz).ok())
            .and_then(|(o, n)| Some(o..o.checked_add(n)?))
            .filter(|r| r.end <= data.len() && filesz <= memsz)
            .ok_or_else(|| {
                malformed(format!(
                    "segment at {paddr:#x}: {filesz:#x} file bytes from offset {offset:#x} (memsz {memsz:#x}) do not fit in the file's {:#x} bytes",
                    data.len()
                ))
            })?;
        if paddr.checked_add(memsz).is_none() {
            return Err(malformed(format!("segment at {paddr:#x} wraps around")));
        }
        if (vaddr..vaddr.saturating_add(memsz)).contains(&e_entry) {
            entry = paddr + (e_entry - vaddr);
        }
        chunks.push(Chunk {
            at: Gpa::new(paddr),
            file,
            bss: memsz - filesz,
        });
    }
    Ok((chunks, Gpa::new(entry)))
}

impl Image {
    /// Physical [start, end) of each chunk, bss included.
    pub fn segments(&self) -> Vec<(Gpa, Gpa)> {
        self.chunks.iter().map(|c| (c.at, c.end())).collect()
    }

    /// The first byte past everything loaded: modules go above it.
    pub fn end(&self) -> Gpa {
        self.chunks
            .iter()
            .map(Chunk::end)
            .max()
            .unwrap_or(Gpa::new(0))
    }

    /// Copy every chunk into guest RAM and zero its bss.
    pub fn load(&self, path: &Path, mem: &GuestMemoryMmap) -> Result<(), LoadError> {
        let failed =
            |e: vm_memory::GuestMemoryError| LoadError::Load(path.to_path_buf(), e.to_string());
        for chunk in &self.chunks {
            mem.write_slice(&self.data[chunk.file.clone()], chunk.at.guest_address())
                .map_err(failed)?;
            let bss_at = Gpa::new(chunk.at.raw() + chunk.file.len() as u64);
            let zeros = vec![0u8; crate::narrow::to_usize(chunk.bss)];
            mem.write_slice(&zeros, bss_at.guest_address())
                .map_err(failed)?;
        }
        Ok(())
    }
}
