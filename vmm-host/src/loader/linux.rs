//! The Linux boot protocol (the kernel's Documentation/arch/x86/boot.rst) for a bzImage: its
//! protected-mode kernel copied to 1 MiB, `boot_params` (the "zero page") at 0x6000 holding
//! the file's setup header, the E820 map, the VGA text screen and the command line, an initrd
//! at the top of low RAM, and ESI at `boot_params` at the entry: the 64-bit entry (512 bytes
//! into the kernel, long mode on identity page tables) when the kernel has one
//! (`XLF_KERNEL_64`), else the 32-bit entry at `code32_start`.
//!
//! The real-mode setup code at the start of the file is not run: the host fills in what it
//! would have asked the BIOS for, as QEMU's and every VMM's direct Linux boot does.
//!
//! An uncompressed ELF `vmlinux` boots the same way at its 64-bit entry (`--boot linux`):
//! its segments at their physical addresses, a setup header the host writes as a bzImage's
//! would read ([`super::vmlinux`]).
//!
//! | at      | what                                         |
//! |---------|----------------------------------------------|
//! | 0x1000  | identity page tables of the 64-bit entry     |
//! | 0x6000  | `boot_params` (4 KiB)                        |
//! | 0x7000  | the GDT the protocol asks for (0x10, 0x18)   |
//! | 0x9000  | the kernel's command line                    |

use super::multiboot_info::{low32, write_bytes};
use super::{BootEntry, EntryGdt, EntryMode, LoadError};
use crate::addr::Gpa;
use crate::layout::RamLayout;
use abi::boot::{CMDLINE_MAX, MEMMAP_TABLE, START_INFO};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::{BzImage, KernelLoader};
use std::io::Cursor;
use std::path::Path;
use vm_memory::{ByteValued, Bytes, GuestMemoryMmap};

/// Where the setup header starts in the file and in `boot_params`.
const HEADER_AT: usize = 0x1f1;
/// "HdrS" at 0x202: the header is there (protocol 2.00 and later).
const HEADER_MAGIC: u32 = 0x5372_6448;
const HEADER_MAGIC_AT: usize = 0x202;
/// The byte after the jump at 0x200: the header's length past 0x202.
const HEADER_LENGTH_AT: usize = 0x201;
/// `loadflags` bit 0: the protected-mode kernel is loaded at 1 MiB (a bzImage, not a zImage).
const LOADED_HIGH: u8 = 1;
/// `type_of_loader` 0xff: a boot loader with no assigned ID.
const UNDEFINED_LOADER: u8 = 0xff;
/// The oldest protocol whose fields the host fills in: 2.02 has `cmd_line_ptr`.
const MIN_VERSION: u16 = 0x0202;
/// Protocol 2.10 added `pref_address` and `init_size`.
const VERSION_INIT_SIZE: u16 = 0x020a;
/// Protocol 2.06 added `cmdline_size`; older kernels read at most 255 bytes.
const VERSION_CMDLINE_SIZE: u16 = 0x0206;
const OLD_CMDLINE_MAX: u32 = 255;
/// The GDT Linux's 32-bit entry expects: flat code at 0x10 (__BOOT_CS), flat data at 0x18.
const GDT_AT: u64 = MEMMAP_TABLE;
const BOOT_CS: u16 = 0x10;
const BOOT_DS: u16 = 0x18;
const GDT: [u64; GDT_ENTRIES as usize] = [0, 0, 0x00cf_9a00_0000_ffff, 0x00cf_9200_0000_ffff];
/// The same with 64-bit code at 0x10, for the 64-bit entry.
const GDT_64: [u64; GDT_ENTRIES as usize] = [0, 0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff];
/// `xloadflags` bit 0 (protocol 2.12): the kernel has a 64-bit entry 0x200 bytes in.
const XLF_KERNEL_64: u16 = 1;
const VERSION_XLOADFLAGS: u16 = 0x020c;
const ENTRY_64_OFFSET: u64 = 0x200;
/// The 64-bit entry's page tables: a PML4, a PDPT and three page directories of 2 MiB pages
/// identity-map the 3 GiB below the PCI hole, all RAM below 4 GiB. Linux builds its own at
/// once; these only need to cover the kernel, its decompression room, `boot_params` and the
/// command line.
const PAGE_TABLES_AT: u64 = 0x1000;
const IDENTITY_GIB: usize = 3;
const GDT_ENTRIES: u16 = 4;
/// GDTR's limit: the table's size less one.
const GDT_LIMIT: u16 = GDT_ENTRIES * 8 - 1;
/// The VGA text screen, as the real-mode setup would have found it: mode 3, 80×25.
const VIDEO_MODE_TEXT: u8 = 3;
const PAGE: u64 = 4096;
/// Where a bzImage's protected-mode kernel goes (`code32_start`).
const KERNEL_LOAD: u64 = 0x10_0000;

/// A checked bzImage or vmlinux.
#[derive(Debug, Clone)]
pub(super) struct Image {
    header: setup_header,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    BzImage {
        data: Vec<u8>,
        /// Bytes of the protected-mode kernel (the file past its setup sectors).
        kernel_len: u64,
        /// Where the kernel decompresses itself, and how much room that takes (`init_size`).
        decompress: (Gpa, u64),
    },
    Vmlinux(super::vmlinux::Vmlinux),
}

/// Whether `data` carries a Linux setup header ("HdrS" at 0x202).
pub(super) fn has_header(data: &[u8]) -> bool {
    u32_at(data, HEADER_MAGIC_AT) == Some(HEADER_MAGIC)
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Read the setup header and check that the host can boot this kernel.
pub(super) fn inspect(path: &Path, data: Vec<u8>) -> Result<Image, LoadError> {
    let bad = |why: String| LoadError::BadBzImage(path.to_path_buf(), why);
    if !has_header(&data) {
        return Err(bad(
            "no Linux setup header (\"HdrS\" at 0x202): build a bzImage (make bzImage)".into(),
        ));
    }
    let header = read_header(&data);
    let version = { header.version };
    if version < MIN_VERSION {
        return Err(bad(format!(
            "boot protocol {} is older than 2.02, the oldest the host fills in",
            protocol_version(version)
        )));
    }
    if header.loadflags & LOADED_HIGH == 0 {
        return Err(bad(
            "it is a zImage (loaded at 0x10000): only a bzImage, loaded at 1 MiB, boots here"
                .into(),
        ));
    }
    let setup_len = setup_sectors(&header) * 512;
    let kernel_len = (data.len() as u64)
        .checked_sub(setup_len)
        .filter(|&n| n > 0);
    let Some(kernel_len) = kernel_len else {
        return Err(bad(format!(
            "its {} setup sectors ({setup_len} bytes) leave no kernel in its {} bytes",
            setup_sectors(&header),
            data.len()
        )));
    };
    if { header.code32_start } != low32(KERNEL_LOAD) {
        return Err(bad(format!(
            "code32_start is {:#x}: the host loads a bzImage at {KERNEL_LOAD:#x} only",
            { header.code32_start }
        )));
    }
    let decompress = decompression_area(&header, kernel_len);
    Ok(Image {
        header,
        kind: Kind::BzImage {
            data,
            kernel_len,
            decompress,
        },
    })
}

/// An ELF vmlinux, booted at its 64-bit entry with the setup header the host writes for it.
pub(super) fn inspect_vmlinux(path: &Path, data: &[u8]) -> Result<Image, LoadError> {
    let vmlinux = super::vmlinux::inspect(path, data)?;
    Ok(Image {
        header: vmlinux_header(),
        kind: Kind::Vmlinux(vmlinux),
    })
}

/// The boot sector's signature, which Linux checks in the header (`boot_flag`).
const BOOT_FLAG: u16 = 0xaa55;
/// Boot protocol 2.15, the version the host's fields follow.
const VMLINUX_VERSION: u16 = 0x020f;
/// Linux's default CONFIG_PHYSICAL_ALIGN.
const KERNEL_ALIGNMENT: u32 = 0x20_0000;
/// Where an initrd may go at most (protocol 2.03 and later).
const INITRD_ADDR_MAX: u32 = 0x7fff_ffff;

/// The setup header a bzImage of this kernel would carry, as far as Linux reads it at its
/// 64-bit entry: the signatures, the protocol version, loaded high, the 64-bit entry, and the
/// limits of the command line and the initrd.
fn vmlinux_header() -> setup_header {
    setup_header {
        boot_flag: BOOT_FLAG,
        header: HEADER_MAGIC,
        version: VMLINUX_VERSION,
        loadflags: LOADED_HIGH,
        kernel_alignment: KERNEL_ALIGNMENT,
        initrd_addr_max: INITRD_ADDR_MAX,
        cmdline_size: u32::try_from(CMDLINE_MAX - 1).unwrap_or(u32::MAX),
        xloadflags: XLF_KERNEL_64,
        ..Default::default()
    }
}

/// The setup header's bytes from the file: as many as it says it has, the rest zero.
fn read_header(data: &[u8]) -> setup_header {
    let mut header = setup_header::default();
    let declared = HEADER_MAGIC_AT + usize::from(data[HEADER_LENGTH_AT]) + 2 - HEADER_AT;
    let len = declared
        .min(std::mem::size_of::<setup_header>())
        .min(data.len() - HEADER_AT);
    header.as_mut_slice()[..len].copy_from_slice(&data[HEADER_AT..HEADER_AT + len]);
    header
}

/// "2.15" for 0x020f.
fn protocol_version(version: u16) -> String {
    format!("{}.{:02}", version >> 8, version & 0xff)
}

/// The setup code's 512-byte sectors, the boot sector included (0 means 4, as in 1.x kernels).
fn setup_sectors(header: &setup_header) -> u64 {
    match header.setup_sects {
        0 => 5,
        n => u64::from(n) + 1,
    }
}

/// Where the kernel will decompress itself, and the bytes that takes. A relocatable kernel
/// loaded at 1 MiB moves up to `pref_address` (its LOAD_PHYSICAL_ADDR, 16 MiB by default) or
/// its alignment, whichever is higher; one that is not relocatable runs at `pref_address`.
/// Either needs `init_size` bytes there. Before protocol 2.10 neither field exists: the host
/// counts the loaded image alone.
fn decompression_area(header: &setup_header, kernel_len: u64) -> (Gpa, u64) {
    if { header.version } < VERSION_INIT_SIZE || header.pref_address == 0 {
        return (Gpa::new(KERNEL_LOAD), kernel_len);
    }
    let at = if header.relocatable_kernel != 0 {
        let align = u64::from(header.kernel_alignment).max(1);
        KERNEL_LOAD.next_multiple_of(align).max(header.pref_address)
    } else {
        header.pref_address
    };
    (Gpa::new(at), u64::from(header.init_size).max(kernel_len))
}

impl Image {
    /// The 64-bit entry when the kernel has one, else the 32-bit entry.
    pub(super) fn entry(&self) -> Gpa {
        match &self.kind {
            Kind::Vmlinux(vmlinux) => vmlinux.entry,
            Kind::BzImage { .. } if self.has_64_bit_entry() => {
                Gpa::new(KERNEL_LOAD + ENTRY_64_OFFSET)
            }
            Kind::BzImage { .. } => Gpa::new(KERNEL_LOAD),
        }
    }

    fn has_64_bit_entry(&self) -> bool {
        match &self.kind {
            Kind::Vmlinux(_) => true,
            Kind::BzImage { kernel_len, .. } => {
                self.header.version >= VERSION_XLOADFLAGS
                    && self.header.xloadflags & XLF_KERNEL_64 != 0
                    && *kernel_len > ENTRY_64_OFFSET
            }
        }
    }

    /// The loaded kernel, and the area it decompresses into (a vmlinux: its segments).
    pub(super) fn segments(&self) -> Vec<(Gpa, Gpa)> {
        match &self.kind {
            Kind::Vmlinux(vmlinux) => vmlinux.segments.clone(),
            Kind::BzImage {
                kernel_len,
                decompress: (at, len),
                ..
            } => vec![
                (Gpa::new(KERNEL_LOAD), Gpa::new(KERNEL_LOAD + kernel_len)),
                (*at, Gpa::new(at.raw().saturating_add(*len))),
            ],
        }
    }

    /// Copy the kernel's bytes into guest RAM.
    fn load(&self, path: &Path, mem: &GuestMemoryMmap) -> Result<(), LoadError> {
        let loaded = match &self.kind {
            Kind::BzImage { data, .. } => {
                BzImage::load(mem, None, &mut Cursor::new(data), None).map(|_| ())
            }
            Kind::Vmlinux(vmlinux) => {
                linux_loader::loader::Elf::load(mem, None, &mut Cursor::new(&vmlinux.data), None)
                    .map(|_| ())
            }
        };
        loaded.map_err(|e| LoadError::Load(path.to_path_buf(), e.to_string()))
    }

    /// Copy the kernel and the initrd, write `boot_params`, the GDT and the command line.
    pub(super) fn boot(
        &self,
        path: &Path,
        mem: &GuestMemoryMmap,
        ram: &RamLayout,
        cmdline: &str,
        initrd: Option<&Path>,
    ) -> Result<BootEntry, LoadError> {
        let mut params = boot_params {
            hdr: self.header,
            ..Default::default()
        };
        self.load(path, mem)?;
        params.hdr.type_of_loader = UNDEFINED_LOADER;
        params.hdr.cmd_line_ptr = low32(self.write_cmdline(mem, cmdline)?.raw());
        if let Some((start, len)) = self.place_initrd(mem, ram, initrd)? {
            params.hdr.ramdisk_image = low32(start.raw());
            params.hdr.ramdisk_size = low32(len);
        }
        set_memory_map(&mut params, ram)?;
        set_text_screen(&mut params);
        mem.write_obj(params, Gpa::new(START_INFO).guest_address())
            .map_err(|e| LoadError::BootData(format!("boot_params at {START_INFO:#x}: {e}")))?;
        let (descriptors, mode) = if self.has_64_bit_entry() {
            write_identity_tables(mem)?;
            let page_tables = Gpa::new(PAGE_TABLES_AT);
            (GDT_64, EntryMode::Long { page_tables })
        } else {
            (GDT, EntryMode::Protected)
        };
        let gdt: Vec<u8> = descriptors.iter().flat_map(|d| d.to_le_bytes()).collect();
        write_bytes(mem, Gpa::new(GDT_AT), &gdt)?;
        Ok(BootEntry {
            rip: self.entry(),
            eax: 0,
            ebx: Gpa::new(0),
            esi: low32(START_INFO),
            gdt: Some(EntryGdt {
                base: Gpa::new(GDT_AT),
                limit: GDT_LIMIT,
                code: BOOT_CS,
                data: BOOT_DS,
            }),
            mode,
        })
    }

    /// The command line, refused when it is longer than the kernel reads.
    fn write_cmdline(&self, mem: &GuestMemoryMmap, cmdline: &str) -> Result<Gpa, LoadError> {
        let max = if { self.header.version } >= VERSION_CMDLINE_SIZE {
            self.header.cmdline_size
        } else {
            OLD_CMDLINE_MAX
        };
        let max = usize::try_from(max)
            .unwrap_or(usize::MAX)
            .min(CMDLINE_MAX - 1);
        if cmdline.trim().len() > max {
            return Err(LoadError::BootData(format!(
                "the command line is {} bytes; this kernel reads at most {max}",
                cmdline.trim().len()
            )));
        }
        super::write_cmdline(mem, cmdline)
    }

    /// `--initrd FILE`, at the top of RAM below 4 GiB and `initrd_addr_max`, on a page
    /// boundary, as boot loaders place it. Its (start, length).
    fn place_initrd(
        &self,
        mem: &GuestMemoryMmap,
        ram: &RamLayout,
        initrd: Option<&Path>,
    ) -> Result<Option<(Gpa, u64)>, LoadError> {
        let Some(initrd) = initrd else {
            return Ok(None);
        };
        let bytes = std::fs::read(initrd)
            .map_err(|e| LoadError::Initrd(format!("cannot read `{}`: {e}", initrd.display())))?;
        let len = bytes.len() as u64;
        let (low_base, low_size) = ram.regions()[0];
        let top = (low_base.raw() + low_size).min(u64::from(self.header.initrd_addr_max) + 1);
        let floor = self
            .segments()
            .iter()
            .map(|&(_, end)| end.raw())
            .max()
            .unwrap_or(KERNEL_LOAD);
        let start = top.checked_sub(len).map(|s| s / PAGE * PAGE);
        let Some(start) = start.filter(|&s| s >= floor) else {
            return Err(LoadError::Initrd(format!(
                "`{}` ({len} bytes) does not fit between the kernel's end {floor:#x} and {top:#x}: raise --mem",
                initrd.display()
            )));
        };
        write_bytes(mem, Gpa::new(start), &bytes)?;
        Ok(Some((Gpa::new(start), len)))
    }
}

/// PML4[0] → PDPT, PDPT[0..3] → one page directory per GiB, each of 512 2 MiB pages.
fn write_identity_tables(mem: &GuestMemoryMmap) -> Result<(), LoadError> {
    const PRESENT_WRITABLE: u64 = 0x3;
    const LARGE: u64 = 0x80;
    let pdpt = PAGE_TABLES_AT + PAGE;
    let directories = pdpt + PAGE;
    let mut pml4 = vec![0u64; 512];
    pml4[0] = pdpt | PRESENT_WRITABLE;
    let mut pdpt_entries = vec![0u64; 512];
    for (gib, entry) in pdpt_entries.iter_mut().take(IDENTITY_GIB).enumerate() {
        *entry = (directories + gib as u64 * PAGE) | PRESENT_WRITABLE;
    }
    let leaves = (0..IDENTITY_GIB as u64 * 512).map(|n| (n << 21) | LARGE | PRESENT_WRITABLE);
    let tables: Vec<u64> = pml4.into_iter().chain(pdpt_entries).chain(leaves).collect();
    let bytes: Vec<u8> = tables.iter().flat_map(|e| e.to_le_bytes()).collect();
    write_bytes(mem, Gpa::new(PAGE_TABLES_AT), &bytes)
}

/// The E820 map, in `boot_params` (at most 128 entries fit there).
fn set_memory_map(params: &mut boot_params, ram: &RamLayout) -> Result<(), LoadError> {
    let map = ram.memory_map();
    let count = u8::try_from(map.len()).ok();
    let Some(count) = count.filter(|&n| usize::from(n) <= params.e820_table.len()) else {
        return Err(LoadError::BootData(format!(
            "{} memory-map entries do not fit in boot_params' {}",
            map.len(),
            params.e820_table.len()
        )));
    };
    for (slot, entry) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind,
        };
    }
    params.e820_entries = count;
    Ok(())
}

/// The VGA text screen the host emulates, so that `console=tty0` draws on it.
fn set_text_screen(params: &mut boot_params) {
    let screen = &mut params.screen_info;
    screen.orig_video_mode = VIDEO_MODE_TEXT;
    screen.orig_video_cols = 80;
    screen.orig_video_lines = 25;
    screen.orig_video_isVGA = 1;
    screen.orig_video_points = 16;
}
