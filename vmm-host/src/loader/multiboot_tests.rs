//! Multiboot 1 images built byte by byte: what lands where, what the kernel is told, and
//! every malformed header refused in one line.

use super::*;
use abi::multiboot::{self as mb, Info, header_flags, info_flags};
use object::elf;
use vm_memory::Bytes;

use super::test_support::{bundled, guest_memory, modules, ram};

/// A Multiboot header with `flags`, a correct checksum and the words after it.
fn header(flags: u32, extra: &[u32]) -> Vec<u8> {
    let checksum = 0u32.wrapping_sub(mb::HEADER_MAGIC).wrapping_sub(flags);
    [mb::HEADER_MAGIC, flags, checksum]
        .iter()
        .chain(extra)
        .flat_map(|w| w.to_le_bytes())
        .collect()
}

/// A raw image loaded by its address fields: 16 bytes of code, then the header at offset 16,
/// describing load at 0x100000, `bss_end`, entry at 0x100000.
fn kludge_image(bss_end: u32) -> Vec<u8> {
    let mut image = vec![0xf4u8; 16];
    image.extend(header(
        header_flags::ADDRESS | header_flags::PAGE_ALIGN | header_flags::MEMORY_INFO,
        &[0x10_0010, 0x10_0000, 0, bss_end, 0x10_0000],
    ));
    image.extend([0x90; 20]);
    image
}

/// An ELF32 (i386) with one PT_LOAD of `code` at `vaddr` → `paddr` (memsz `memsz`), entry
/// `entry`, and a Multiboot header with `flags` at the start of the code.
fn elf32(vaddr: u32, paddr: u32, memsz: u32, entry: u32, flags: u32) -> Vec<u8> {
    let mut code = header(flags, &[]);
    code.extend([0xf4; 20]);
    let (ph_off, code_off) = (52u32, 52u32 + 32);
    let mut out = vec![0u8; code_off as usize];
    out[..4].copy_from_slice(elf::ELFMAG.as_slice());
    out[4] = elf::ELFCLASS32.0;
    out[5] = elf::ELFDATA2LSB.0;
    out[6] = 1;
    out[16..18].copy_from_slice(&elf::ET_EXEC.0.to_le_bytes());
    out[18..20].copy_from_slice(&elf::EM_386.0.to_le_bytes());
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[24..28].copy_from_slice(&entry.to_le_bytes());
    out[28..32].copy_from_slice(&ph_off.to_le_bytes());
    out[40..42].copy_from_slice(&52u16.to_le_bytes());
    out[42..44].copy_from_slice(&32u16.to_le_bytes());
    out[44..46].copy_from_slice(&1u16.to_le_bytes());
    let ph = ph_off as usize;
    let words = [
        elf::PT_LOAD.0,
        code_off,
        vaddr,
        paddr,
        code.len() as u32,
        memsz,
        5,
        0x1000,
    ];
    for (i, w) in words.iter().enumerate() {
        out[ph + 4 * i..ph + 4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    out.extend(code);
    out
}

fn inspect(data: &[u8]) -> Result<KernelImage, LoadError> {
    KernelImage::inspect_bytes(Path::new("k.bin"), data.to_vec(), &ram(), None)
}

fn info_of(mem: &GuestMemoryMmap, entry: BootEntry) -> Info {
    let mut bytes = [0u8; mb::INFO_SIZE];
    mem.read_slice(&mut bytes, entry.ebx.guest_address())
        .unwrap();
    Info::parse(&bytes).unwrap()
}

fn c_string(mem: &GuestMemoryMmap, at: u32) -> String {
    let mut bytes = [0u8; 256];
    mem.read_slice(&mut bytes, Gpa::new(u64::from(at)).guest_address())
        .unwrap();
    let len = bytes.iter().position(|&b| b == 0).unwrap();
    String::from_utf8(bytes[..len].to_vec()).unwrap()
}

#[test]
fn an_elf32_kernel_is_loaded_at_its_physical_addresses_and_told_everything() {
    let image = elf32(
        0x10_0000,
        0x10_0000,
        0x3000,
        0x10_000c,
        header_flags::MEMORY_INFO,
    );
    let kernel = inspect(&image).unwrap();
    assert_eq!(kernel.protocol, BootProtocol::Multiboot);
    assert_eq!(kernel.entry, Gpa::new(0x10_000c));
    assert_eq!(
        kernel.segments,
        [(Gpa::new(0x10_0000), Gpa::new(0x10_3000))]
    );

    let ram = ram();
    let mem = guest_memory(&ram);
    mem.write_slice(&[0xaa; 0x3000], Gpa::new(0x10_0000).guest_address())
        .unwrap();
    let entry = kernel
        .boot(&mem, &ram, " test=1 ", &BootFiles::default())
        .unwrap();
    assert_eq!((entry.rip, entry.eax), (Gpa::new(0x10_000c), 0x2bad_b002));
    let mut loaded = [0u8; 0x3000];
    mem.read_slice(&mut loaded, Gpa::new(0x10_0000).guest_address())
        .unwrap();
    assert_eq!(&loaded[..12], &header(header_flags::MEMORY_INFO, &[])[..]);
    assert!(loaded[12..32].iter().all(|&b| b == 0xf4), "the code");
    assert!(loaded[32..].iter().all(|&b| b == 0), "the bss is zeroed");

    let info = info_of(&mem, entry);
    let want = info_flags::MEMORY
        | info_flags::CMDLINE
        | info_flags::MEMORY_MAP
        | info_flags::LOADER_NAME
        | info_flags::MODULES;
    assert_eq!(info.flags, want, "no framebuffer unless asked for");
    assert_eq!((info.mem_lower, info.mem_upper), (640, 63 * 1024));
    assert_eq!(c_string(&mem, info.cmdline_paddr), "k.bin test=1");
    assert_eq!(
        c_string(&mem, info.boot_loader_name_paddr),
        multiboot_info::LOADER_NAME
    );
    assert_eq!(info.mods_count, 0);
    let mut map = vec![0u8; info.mmap_length as usize];
    mem.read_slice(
        &mut map,
        Gpa::new(u64::from(info.mmap_addr)).guest_address(),
    )
    .unwrap();
    let entries: Vec<_> = mb::mmap_entries(&map).collect();
    assert_eq!(entries, ram.memory_map());
}

#[test]
fn the_address_fields_load_raw_bytes_and_clear_the_bss() {
    let image = kludge_image(0x10_2000);
    let kernel = inspect(&image).unwrap();
    assert_eq!(kernel.entry, Gpa::new(0x10_0000));
    assert_eq!(
        kernel.segments,
        [(Gpa::new(0x10_0000), Gpa::new(0x10_2000))]
    );
    let ram = ram();
    let mem = guest_memory(&ram);
    mem.write_slice(&[0xaa; 0x2000], Gpa::new(0x10_0000).guest_address())
        .unwrap();
    kernel.boot(&mem, &ram, "", &BootFiles::default()).unwrap();
    let mut loaded = vec![0u8; 0x2000];
    mem.read_slice(&mut loaded, Gpa::new(0x10_0000).guest_address())
        .unwrap();
    assert_eq!(
        &loaded[..image.len()],
        &image[..],
        "the whole file, from load_addr"
    );
    assert!(loaded[image.len()..].iter().all(|&b| b == 0), "bss");
    // The header may sit later in the file than in memory: file offset 16 is header_addr.
    let mut late = vec![0u8; 32];
    late.extend(kludge_image(0));
    let kernel = inspect(&late).unwrap();
    assert_eq!(
        kernel.segments,
        [(
            Gpa::new(0x10_0000),
            Gpa::new(0x10_0000 + late.len() as u64 - 32)
        )]
    );
}

#[test]
fn a_higher_half_entry_is_translated_to_its_physical_address() {
    let image = elf32(0xc010_0000, 0x10_0000, 0x1000, 0xc010_0010, 0);
    assert_eq!(inspect(&image).unwrap().entry, Gpa::new(0x10_0010));
}

#[test]
fn a_pvh_note_wins_unless_multiboot_is_forced() {
    let image = elf32(0x10_0000, 0x10_0000, 0x1000, 0x10_0000, 0);
    let forced = |p| KernelImage::inspect_bytes(Path::new("k"), image.clone(), &ram(), Some(p));
    assert_eq!(
        forced(BootProtocol::Multiboot).unwrap().protocol,
        BootProtocol::Multiboot
    );
    let message = forced(BootProtocol::Pvh).unwrap_err().to_string();
    assert!(message.contains("is a 32-bit ELF"), "{message}");

    assert_eq!(bundled(None).0.protocol, BootProtocol::Pvh);
    let (multiboot, _) = bundled(Some(BootProtocol::Multiboot));
    assert_eq!(multiboot.protocol, BootProtocol::Multiboot);
}

#[test]
fn modules_land_on_pages_above_the_kernel_with_their_command_lines() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("initrd");
    std::fs::write(&first, vec![7u8; 5000]).unwrap();
    let second = dir.path().join("font");
    std::fs::write(&second, b"PSF").unwrap();
    let modules: Vec<ModuleArg> = [
        format!("{},root=/dev/ram0", first.display()),
        second.display().to_string(),
    ]
    .iter()
    .map(|m| m.parse().unwrap())
    .collect();
    let kernel = inspect(&kludge_image(0x10_2800)).unwrap();
    let ram = ram();
    let mem = guest_memory(&ram);
    let info = info_of(
        &mem,
        kernel
            .boot(&mem, &ram, "", &super::test_support::modules(&modules))
            .unwrap(),
    );
    assert_eq!(info.mods_count, 2);
    let mut list = [0u8; 2 * mb::MODULE_SIZE];
    mem.read_slice(
        &mut list,
        Gpa::new(u64::from(info.mods_addr)).guest_address(),
    )
    .unwrap();
    let word = |i: usize| u32::from_le_bytes(list[4 * i..4 * i + 4].try_into().unwrap());
    assert_eq!((word(0), word(1)), (0x10_3000, 0x10_3000 + 5000));
    assert_eq!((word(4), word(5)), (0x10_5000, 0x10_5003));
    assert_eq!(
        c_string(&mem, word(2)),
        format!("{} root=/dev/ram0", first.display())
    );
    assert_eq!(c_string(&mem, word(6)), second.display().to_string());
    let mut psf = [0u8; 3];
    mem.read_slice(&mut psf, Gpa::new(0x10_5000).guest_address())
        .unwrap();
    assert_eq!(&psf, b"PSF");
}

#[test]
fn a_kernel_asking_for_a_video_mode_is_given_the_text_screen() {
    let mut image = vec![0xf4u8; 16];
    let flags = header_flags::ADDRESS | header_flags::VIDEO_MODE;
    image.extend(header(
        flags,
        &[0x10_0010, 0x10_0000, 0, 0, 0x10_0000, 1, 80, 25, 0],
    ));
    let kernel = inspect(&image).unwrap();
    let ram = ram();
    let mem = guest_memory(&ram);
    let entry = kernel.boot(&mem, &ram, "", &BootFiles::default()).unwrap();
    let mut bytes = [0u8; mb::INFO_SIZE];
    mem.read_slice(&mut bytes, entry.ebx.guest_address())
        .unwrap();
    assert_ne!(
        Info::parse(&bytes).unwrap().flags & info_flags::FRAMEBUFFER,
        0
    );
    let at = mb::offset::FRAMEBUFFER_ADDR;
    assert_eq!(
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()),
        0xb_8000
    );
    let width = mb::offset::FRAMEBUFFER_WIDTH;
    assert_eq!(bytes[width], 80);
    assert_eq!(
        bytes[mb::offset::FRAMEBUFFER_TYPE],
        mb::FRAMEBUFFER_EGA_TEXT
    );
}

#[test]
fn each_bad_multiboot_kernel_is_refused_in_one_line() {
    let with_fields = |fields: [u32; 5]| {
        let mut image = vec![0u8; 16];
        image.extend(header(header_flags::ADDRESS, &fields));
        image
    };
    let mut bad_checksum = kludge_image(0);
    bad_checksum[24] ^= 1;
    let mut cut = vec![0u8; 8];
    cut.extend(mb::HEADER_MAGIC.to_le_bytes());
    cut.extend(0u32.to_le_bytes());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            bad_checksum,
            "at file offset 0x10 is invalid: bad checksum 0xe4514ffa (magic + flags + checksum must be 0; with flags 0x10003 the checksum is 0xe4514ffb)",
        ),
        (cut, "is invalid: it is cut off by the end of the file"),
        (
            header(1 << 5, &[]),
            "requires features this host does not provide (flag bits 0x20",
        ),
        (
            with_fields([0x3fff_f010, 0x3fff_f000, 0, 0x4000_1000, 0x3fff_f000]),
            "segment [0x3ffff000, 0x40001000) lies outside guest RAM",
        ),
        (
            with_fields([0x10_0000, 0x10_0010, 0, 0, 0x10_0000]),
            "header_addr 0x100000 lies below load_addr 0x100010",
        ),
        (
            with_fields([0x10_0100, 0x10_0000, 0, 0, 0x10_0000]),
            "header_addr - load_addr is 0x100, but the header is only 0x10 bytes into the file",
        ),
        (
            with_fields([0x10_0010, 0x10_0000, 0x10_1000, 0, 0x10_0000]),
            "load_end_addr 0x101000 asks for 0x1000 bytes from file offset 0x0, but the file has 0x30",
        ),
        (
            with_fields([0x10_0010, 0x10_0000, 0x10_0000, 0, 0x10_0000]),
            "load_end_addr 0x100000 is not above load_addr 0x100000",
        ),
        (
            with_fields([0x10_0010, 0x10_0000, 0, 0x10_0020, 0x10_0000]),
            "bss_end_addr 0x100020 lies below the end of the loaded bytes 0x100030",
        ),
        (
            with_fields([0x10_0010, 0x10_0000, 0, 0, 0x20_0000]),
            "the entry point 0x200000 is not inside a loaded segment",
        ),
        (
            with_fields([0xffff_f010, 0xffff_f000, 0, 0xffff_ffff, 0xffff_f000]),
            "lies outside guest RAM",
        ),
        (
            with_fields([0x6010, 0x6000, 0, 0, 0x6000]),
            "overlaps the host's boot data at [0x6000, 0xa000)",
        ),
        (
            header(0, &[]),
            "has no address fields (flag 16), so it must be an ELF, and it is not one",
        ),
        (
            elf32(0x10_0000, 0x10_0000, 0x10, 0x10_0000, 0),
            "do not fit in the file's",
        ),
    ];
    for (image, expected) in cases {
        let message = inspect(&image).unwrap_err().to_string();
        assert!(
            message.contains(expected),
            "{message:?} should contain {expected:?}"
        );
        assert!(!message.contains('\n'), "one line: {message:?}");
    }
    let forced = KernelImage::inspect_bytes(
        Path::new("k"),
        b"plain text".to_vec(),
        &ram(),
        Some(BootProtocol::Multiboot),
    );
    assert!(matches!(forced, Err(LoadError::NoMultibootHeader(..))));
}

#[test]
fn module_mistakes_are_named() {
    assert!("".parse::<ModuleArg>().is_err());
    assert!(",x".parse::<ModuleArg>().is_err());
    assert_eq!(
        "a,b,c".parse::<ModuleArg>().unwrap(),
        ModuleArg {
            path: "a".into(),
            cmdline: "b,c".into()
        }
    );
    let ram = ram();
    let mem = guest_memory(&ram);
    let missing = [ModuleArg {
        path: "/nonexistent/initrd".into(),
        cmdline: String::new(),
    }];
    let kernel = inspect(&kludge_image(0)).unwrap();
    let message = kernel
        .boot(&mem, &ram, "", &modules(&missing))
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with("--module: cannot read `/nonexistent/initrd`"),
        "{message}"
    );

    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    std::fs::write(&big, vec![0u8; 64 << 20]).unwrap();
    let too_big = [ModuleArg {
        path: big.clone(),
        cmdline: String::new(),
    }];
    let message = kernel
        .boot(&mem, &ram, "", &modules(&too_big))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("does not fit in guest RAM at 0x101000"),
        "{message}"
    );

    let initrd = BootFiles {
        initrd: Some(big),
        ..Default::default()
    };
    let message = kernel
        .boot(&mem, &ram, "", &initrd)
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        "Multiboot has no initrd: pass the file as --module FILE[,CMDLINE]"
    );
}

#[test]
fn pvh_lists_the_initrd_first_then_the_modules_in_start_info() {
    let dir = tempfile::tempdir().unwrap();
    let (initrd, module) = (dir.path().join("initrd"), dir.path().join("m"));
    std::fs::write(&initrd, vec![0x11; 5000]).unwrap();
    std::fs::write(&module, b"module").unwrap();
    let (pvh, ram) = bundled(None);
    let mem = guest_memory(&ram);
    let files = BootFiles {
        modules: vec![ModuleArg {
            path: module,
            cmdline: "debug".into(),
        }],
        initrd: Some(initrd),
    };
    pvh.boot(&mem, &ram, "", &files).unwrap();
    let u32_at = |at: u64| -> u32 { mem.read_obj(Gpa::new(at).guest_address()).unwrap() };
    let u64_at = |at: u64| -> u64 { mem.read_obj(Gpa::new(at).guest_address()).unwrap() };
    assert_eq!(u32_at(0x600c), 2, "nr_modules");
    let list = u64_at(0x6010);
    assert_eq!(list, 0x6100, "modlist_paddr");
    let kernel_end = pvh
        .segments
        .iter()
        .map(|&(_, end)| end.raw())
        .max()
        .unwrap();
    let first = u64_at(list);
    assert_eq!(first, kernel_end.next_multiple_of(4096), "above the kernel");
    assert_eq!(
        (u64_at(list + 8), u64_at(list + 16)),
        (5000, 0),
        "no command line"
    );
    assert_eq!(
        u64_at(list + 32),
        first + 8192,
        "the next page after the initrd"
    );
    let cmdline = u64_at(list + 48);
    let mut text = [0u8; 6];
    mem.read_slice(&mut text, Gpa::new(cmdline).guest_address())
        .unwrap();
    assert_eq!(&text, b"debug\0");
}

/// guest-kernel's address fields must describe exactly what its program headers load: the
/// linker script keeps file offsets and addresses in step, and this fails when it does not.
#[test]
fn the_bundled_kernel_loads_the_same_bytes_through_either_protocol() {
    let load = |protocol| {
        let (kernel, ram) = bundled(Some(protocol));
        // Fresh RAM is zero, as in a new VM: linux-loader leaves a bss to that.
        let mem = guest_memory(&ram);
        kernel.boot(&mem, &ram, "", &BootFiles::default()).unwrap();
        let mut image = vec![0u8; 4 << 20];
        mem.read_slice(&mut image, Gpa::new(0x10_0000).guest_address())
            .unwrap();
        (kernel.segments, image)
    };
    let (pvh_segments, by_elf) = load(BootProtocol::Pvh);
    let (mb_segments, by_fields) = load(BootProtocol::Multiboot);
    let elf_end = pvh_segments.iter().map(|s| s.1).max().unwrap();
    assert_eq!(mb_segments, [(Gpa::new(0x10_0000), elf_end)]);
    // Between segments the ELF loader writes nothing and the address fields the file's padding.
    for (start, end) in pvh_segments {
        let range = (start.raw() - 0x10_0000) as usize..(end.raw() - 0x10_0000) as usize;
        let differ = range.clone().find(|&i| by_elf[i] != by_fields[i]);
        assert_eq!(differ, None, "segment {start}..{end}: first differing byte");
    }
}
