//! bzImages built byte by byte: what lands in guest RAM and in `boot_params`, the entry state
//! the Linux boot protocol asks for, and every image or initrd the host cannot boot refused in
//! one line.

use super::test_support::{guest_memory, ram};
use super::*;
use linux_loader::loader::bootparam::boot_params;
use vm_memory::Bytes;

/// The protected-mode kernel's bytes in the test image.
const KERNEL: &[u8] = b"\xfa\xf4 the compressed kernel would be here";

/// A bzImage with one setup sector, protocol `version`, `init_size` and `loadflags`.
fn bzimage_with(version: u16, init_size: u32, loadflags: u8) -> Vec<u8> {
    let mut image = vec![0u8; 1024];
    image[0x1f1] = 1; // setup_sects
    image[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
    image[0x200] = 0xeb;
    image[0x201] = 0x6a; // the header runs to 0x26c
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&version.to_le_bytes());
    image[0x211] = loadflags;
    let put = |image: &mut Vec<u8>, at: usize, bytes: &[u8]| {
        image[at..at + bytes.len()].copy_from_slice(bytes);
    };
    put(&mut image, 0x214, &0x10_0000u32.to_le_bytes()); // code32_start
    put(&mut image, 0x22c, &0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
    put(&mut image, 0x230, &0x20_0000u32.to_le_bytes()); // kernel_alignment
    image[0x234] = 1; // relocatable
    put(&mut image, 0x238, &2047u32.to_le_bytes()); // cmdline_size
    put(&mut image, 0x258, &0x100_0000u64.to_le_bytes()); // pref_address
    put(&mut image, 0x260, &init_size.to_le_bytes());
    image.extend_from_slice(KERNEL);
    image
}

fn bzimage() -> Vec<u8> {
    bzimage_with(0x020f, 0x20_0000, 1)
}

fn inspect(data: Vec<u8>) -> Result<KernelImage, LoadError> {
    KernelImage::inspect_bytes(Path::new("bzImage"), data, &ram(), None)
}

fn boot(
    data: Vec<u8>,
    cmdline: &str,
    files: &BootFiles,
) -> Result<(BootEntry, GuestMemoryMmap), LoadError> {
    let kernel = inspect(data)?;
    let mem = guest_memory(&ram());
    let entry = kernel.boot(&mem, &ram(), cmdline, files)?;
    Ok((entry, mem))
}

fn initrd(path: &Path) -> BootFiles {
    BootFiles {
        modules: Vec::new(),
        initrd: Some(path.to_path_buf()),
    }
}

fn params(mem: &GuestMemoryMmap) -> boot_params {
    mem.read_obj(Gpa::new(0x6000).guest_address()).unwrap()
}

#[test]
fn a_bzimage_is_recognised_and_planned_where_it_will_decompress() {
    let kernel = inspect(bzimage()).unwrap();
    assert_eq!(kernel.protocol, BootProtocol::Linux);
    assert_eq!(kernel.entry, Gpa::new(0x10_0000));
    let end = 0x10_0000 + KERNEL.len() as u64;
    assert_eq!(
        kernel.segments,
        vec![
            (Gpa::new(0x10_0000), Gpa::new(end)),
            // Relocatable, loaded at 1 MiB: it moves to pref_address and needs init_size.
            (Gpa::new(0x100_0000), Gpa::new(0x120_0000)),
        ]
    );
}

#[test]
fn a_kernel_that_is_not_relocatable_runs_at_its_preferred_address() {
    let mut image = bzimage();
    image[0x234] = 0;
    image[0x258..0x260].copy_from_slice(&0x40_0000u64.to_le_bytes());
    let kernel = inspect(image).unwrap();
    assert_eq!(
        kernel.segments[1],
        (Gpa::new(0x40_0000), Gpa::new(0x60_0000))
    );
}

#[test]
fn before_protocol_2_10_only_the_image_is_counted() {
    let kernel = inspect(bzimage_with(0x0208, 0x7fff_0000, 1)).unwrap();
    assert_eq!(kernel.segments.len(), 2);
    assert_eq!(kernel.segments[0], kernel.segments[1]);
}

#[test]
fn the_kernel_boot_params_and_gdt_are_where_the_protocol_says() {
    let (entry, mem) = boot(bzimage(), "console=ttyS0 nokaslr", &BootFiles::default()).unwrap();
    let mut loaded = vec![0u8; KERNEL.len()];
    mem.read_slice(&mut loaded, Gpa::new(0x10_0000).guest_address())
        .unwrap();
    assert_eq!(loaded, KERNEL, "the file past the setup sectors, at 1 MiB");

    let p = params(&mem);
    assert_eq!({ p.hdr.header }, 0x5372_6448, "the setup header is copied");
    assert_eq!({ p.hdr.version }, 0x020f);
    assert_eq!(p.hdr.type_of_loader, 0xff);
    assert_eq!({ p.hdr.cmd_line_ptr }, 0x9000);
    let mut line = [0u8; 22];
    mem.read_slice(&mut line, Gpa::new(0x9000).guest_address())
        .unwrap();
    assert_eq!(&line, b"console=ttyS0 nokaslr\0");
    assert_eq!(({ p.hdr.ramdisk_image }, { p.hdr.ramdisk_size }), (0, 0));

    let map = ram().memory_map();
    assert_eq!(usize::from(p.e820_entries), map.len());
    for (entry, want) in p.e820_table.iter().zip(&map) {
        assert_eq!(
            ({ entry.addr }, { entry.size }, { entry.r#type }),
            (want.addr, want.size, want.kind)
        );
    }
    let s = p.screen_info;
    assert_eq!(
        (s.orig_video_mode, s.orig_video_cols, s.orig_video_lines),
        (3, 80, 25)
    );
    assert_eq!(s.orig_video_isVGA, 1);

    assert_eq!(
        entry.rip,
        Gpa::new(0x10_0000),
        "no XLF_KERNEL_64: the 32-bit entry"
    );
    assert_eq!(entry.mode, EntryMode::Protected);
    assert_eq!((entry.esi, entry.eax, entry.ebx), (0x6000, 0, Gpa::new(0)));
    let gdt = entry.gdt.unwrap();
    assert_eq!((gdt.code, gdt.data, gdt.limit), (0x10, 0x18, 31));
    let mut table = [0u8; 32];
    mem.read_slice(&mut table, gdt.base.guest_address())
        .unwrap();
    let descriptor =
        |sel: u16| u64::from_le_bytes(table[usize::from(sel)..][..8].try_into().unwrap());
    assert_eq!(descriptor(0x10), 0x00cf_9a00_0000_ffff, "flat 32-bit code");
    assert_eq!(descriptor(0x18), 0x00cf_9200_0000_ffff, "flat data");
}

#[test]
fn a_kernel_with_a_64_bit_entry_is_entered_in_long_mode_on_identity_tables() {
    let mut image = bzimage();
    image[0x236] = 1; // xloadflags: XLF_KERNEL_64
    image.resize(1024 + 0x400, 0x90);
    let (entry, mem) = boot(image, "", &BootFiles::default()).unwrap();
    assert_eq!(entry.rip, Gpa::new(0x10_0200), "512 bytes into the kernel");
    assert_eq!(
        entry.mode,
        EntryMode::Long {
            page_tables: Gpa::new(0x1000)
        }
    );
    assert_eq!(entry.esi, 0x6000);
    let entry_at = |table: u64, index: u64| -> u64 {
        mem.read_obj(Gpa::new(table + index * 8).guest_address())
            .unwrap()
    };
    assert_eq!(entry_at(0x1000, 0), 0x2003, "PML4[0] -> the PDPT");
    assert_eq!(
        entry_at(0x2000, 2),
        0x5003,
        "PDPT[2] -> the third GiB's directory"
    );
    assert_eq!(entry_at(0x2000, 3), 0, "nothing past 3 GiB");
    assert_eq!(entry_at(0x5000, 1), 0x8020_0083, "2 MiB pages, identity");
    let mut code = [0u8; 8];
    mem.read_slice(&mut code, gdt_descriptor(&entry, 0x10))
        .unwrap();
    assert_eq!(
        u64::from_le_bytes(code),
        0x00af_9a00_0000_ffff,
        "64-bit code"
    );
}

/// Where `selector`'s descriptor is in the GDT the entry loads.
fn gdt_descriptor(entry: &BootEntry, selector: u64) -> vm_memory::GuestAddress {
    Gpa::new(entry.gdt.unwrap().base.raw() + selector).guest_address()
}

#[test]
fn the_initrd_goes_to_the_top_of_ram_on_a_page() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("initrd.img");
    std::fs::write(&file, vec![0x5a; 5000]).unwrap();
    let (_, mem) = boot(bzimage(), "", &initrd(&file)).unwrap();
    let p = params(&mem);
    let start = u64::from(p.hdr.ramdisk_image);
    assert_eq!({ p.hdr.ramdisk_size }, 5000);
    assert_eq!(start, ((64 << 20) - 5000) / 4096 * 4096);
    let mut bytes = vec![0u8; 5000];
    mem.read_slice(&mut bytes, Gpa::new(start).guest_address())
        .unwrap();
    assert!(bytes.iter().all(|&b| b == 0x5a));
}

#[test]
fn bzimages_and_initrds_the_host_cannot_boot_are_refused_in_one_line() {
    let mut short = bzimage();
    short.truncate(1024);
    let mut wrong_start = bzimage();
    wrong_start[0x214..0x218].copy_from_slice(&0x20_0000u32.to_le_bytes());
    let cases = [
        (bzimage_with(0x020f, 0x20_0000, 0), "zImage"),
        (
            bzimage_with(0x0201, 0x20_0000, 1),
            "2.01 is older than 2.02",
        ),
        (short, "leave no kernel"),
        (wrong_start, "code32_start is 0x200000"),
        (bzimage_with(0x020f, 0x7000_0000, 1), "outside guest RAM"),
    ];
    for (image, want) in cases {
        let error = inspect(image).unwrap_err().to_string();
        assert!(error.contains(want), "{error}");
        assert!(!error.contains('\n'), "{error}");
    }

    let long = "x".repeat(2048);
    let error = boot(bzimage(), &long, &BootFiles::default())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("2048 bytes; this kernel reads at most 2047"),
        "{error}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("initrd");
    std::fs::write(&file, [1u8; 16]).unwrap();
    let module = BootFiles {
        modules: vec![ModuleArg {
            path: file.clone(),
            cmdline: String::new(),
        }],
        initrd: None,
    };
    let error = boot(bzimage(), "", &module).unwrap_err().to_string();
    assert_eq!(
        error,
        "a bzImage takes no --module: pass its initrd with --initrd"
    );
    let error = boot(bzimage(), "", &initrd(Path::new("/nonexistent/initrd")))
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("--initrd: cannot read `/nonexistent/initrd`"),
        "{error}"
    );
    std::fs::write(&file, vec![0u8; 60 << 20]).unwrap();
    let error = boot(bzimage(), "", &initrd(&file)).unwrap_err().to_string();
    assert!(
        error.contains("does not fit between the kernel's end 0x1200000 and 0x4000000"),
        "{error}"
    );
}

/// An ELF vmlinux of two segments from 16 MiB whose entry is `entry`.
fn vmlinux(entry: u64) -> Vec<u8> {
    let mut image = super::test_support::elf(
        object::elf::EM_X86_64,
        &[
            (object::elf::PT_LOAD, 0x100_0000, 0x2000, vec![0xf4; 0x1000]),
            (object::elf::PT_LOAD, 0x100_2000, 0x1000, b"data".to_vec()),
        ],
    );
    image[24..32].copy_from_slice(&entry.to_le_bytes());
    image
}

fn boot_vmlinux(data: Vec<u8>) -> Result<(BootEntry, GuestMemoryMmap), LoadError> {
    let kernel = KernelImage::inspect_bytes(
        Path::new("vmlinux"),
        data,
        &ram(),
        Some(BootProtocol::Linux),
    )?;
    let mem = guest_memory(&ram());
    let entry = kernel.boot(&mem, &ram(), "console=ttyS0", &BootFiles::default())?;
    Ok((entry, mem))
}

/// `--boot linux` with an ELF: its segments at their physical addresses, its entry in long
/// mode, and a setup header of the host's in `boot_params`, as a bzImage's would read.
#[test]
fn a_vmlinux_is_entered_at_its_elf_entry_in_long_mode_with_a_header_of_the_hosts() {
    let (entry, mem) = boot_vmlinux(vmlinux(0x100_0010)).unwrap();
    assert_eq!(entry.rip, Gpa::new(0x100_0010));
    assert_eq!(
        entry.mode,
        EntryMode::Long {
            page_tables: Gpa::new(0x1000)
        }
    );
    assert_eq!(entry.esi, 0x6000);
    let mut loaded = [0u8; 4];
    mem.read_slice(&mut loaded, Gpa::new(0x100_2000).guest_address())
        .unwrap();
    assert_eq!(
        &loaded, b"data",
        "the second segment at its physical address"
    );
    let hdr = params(&mem).hdr;
    assert_eq!(
        ({ hdr.boot_flag }, { hdr.header }, { hdr.version }),
        (0xaa55, 0x5372_6448, 0x020f)
    );
    assert_eq!(({ hdr.loadflags }, { hdr.xloadflags }), (1, 1));
    assert_eq!({ hdr.type_of_loader }, 0xff);
    assert_eq!({ hdr.cmd_line_ptr }, 0x9000);
    assert!(params(&mem).e820_entries >= 3);
}

#[test]
fn a_vmlinux_the_host_cannot_boot_is_refused_in_one_line() {
    let outside = boot_vmlinux(vmlinux(0x200_0000)).unwrap_err().to_string();
    assert!(
        outside.contains("the entry point 0x2000000 is not inside a loaded segment"),
        "{outside}"
    );
    let mut elf32 = vmlinux(0x100_0010);
    elf32[4] = object::elf::ELFCLASS32.0;
    let message = boot_vmlinux(elf32).unwrap_err().to_string();
    assert!(message.contains("is a 32-bit ELF"), "{message}");
    let arm = super::test_support::elf(
        object::elf::EM_AARCH64,
        &[(object::elf::PT_LOAD, 0x100_0000, 0x1000, vec![0; 16])],
    );
    let message = boot_vmlinux(arm).unwrap_err().to_string();
    assert!(message.contains("not x86"), "{message}");
}
