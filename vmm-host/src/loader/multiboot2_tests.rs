//! Multiboot 2 images built byte by byte: the boot information read back with the parser the
//! guest uses, and every header the host cannot honour refused in one line.

use super::test_support::{bundled, elf, guest_memory, modules, ram};
use super::*;
use abi::multiboot2::{self as mb2, header_tag, info_tag};
use vm_memory::Bytes;

/// A header tag: type, flags, size, body, padded to 8.
fn tag(kind: u16, flags: u16, body: &[u32]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend(kind.to_le_bytes());
    t.extend(flags.to_le_bytes());
    t.extend(u32::try_from(8 + 4 * body.len()).unwrap().to_le_bytes());
    for w in body {
        t.extend(w.to_le_bytes());
    }
    t.resize(t.len().next_multiple_of(8), 0);
    t
}

/// A Multiboot 2 header with `tags` (the end tag added) and a checksum spoiled by `delta`.
fn header(arch: u32, tags: &[Vec<u8>], delta: u32) -> Vec<u8> {
    let body: Vec<u8> = tags
        .iter()
        .flatten()
        .copied()
        .chain(tag(header_tag::END, 0, &[]))
        .collect();
    let length = u32::try_from(16 + body.len()).unwrap();
    let checksum = 0u32
        .wrapping_sub(mb2::HEADER_MAGIC)
        .wrapping_sub(arch)
        .wrapping_sub(length)
        .wrapping_add(delta);
    let mut h: Vec<u8> = [mb2::HEADER_MAGIC, arch, length, checksum]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    h.extend(body);
    h
}

/// A raw image: 16 bytes of `hlt`, then the header at offset 16 with address and entry tags
/// (load at 0x100000, bss to 0x103000, entry 0x100000) and `more` tags.
fn raw_image(more: &[Vec<u8>]) -> Vec<u8> {
    let mut tags = vec![
        tag(
            header_tag::ADDRESS,
            0,
            &[0x10_0010, 0x10_0000, 0, 0x10_3000],
        ),
        tag(header_tag::ENTRY_ADDRESS, 0, &[0x10_0000]),
    ];
    tags.extend_from_slice(more);
    let mut image = vec![0xf4u8; 16];
    image.extend(header(0, &tags, 0));
    image
}

fn inspect(data: &[u8]) -> Result<KernelImage, LoadError> {
    KernelImage::inspect_bytes(Path::new("k2.bin"), data.to_vec(), &ram(), None)
}

#[test]
fn the_boot_information_carries_what_the_guest_reads() {
    let request = tag(
        header_tag::INFORMATION_REQUEST,
        0,
        &[info_tag::MEMORY_MAP, info_tag::CMDLINE],
    );
    let console = tag(header_tag::CONSOLE_FLAGS, 0, &[0b11]);
    let kernel = inspect(&raw_image(&[request, console])).unwrap();
    assert_eq!(kernel.protocol, BootProtocol::Multiboot2);
    assert_eq!(
        kernel.segments,
        [(Gpa::new(0x10_0000), Gpa::new(0x10_3000))]
    );
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd");
    std::fs::write(&initrd, [9u8; 100]).unwrap();
    let module: ModuleArg = format!("{},quiet", initrd.display()).parse().unwrap();
    let ram = ram();
    let mem = guest_memory(&ram);
    let entry = kernel
        .boot(&mem, &ram, "test=2", &modules(&[module]))
        .unwrap();
    assert_eq!((entry.rip, entry.eax), (Gpa::new(0x10_0000), 0x36d7_6289));
    let mut mbi = vec![0u8; 0x4000];
    mem.read_slice(&mut mbi, entry.ebx.guest_address()).unwrap();
    let found: Vec<mb2::Tag<'_>> = mb2::tags(&mbi).collect();
    let kinds: Vec<u32> = found.iter().map(|t| t.kind).collect();
    assert_eq!(
        kinds,
        [
            info_tag::CMDLINE,
            info_tag::LOADER_NAME,
            info_tag::MODULE,
            info_tag::BASIC_MEMINFO,
            info_tag::MEMORY_MAP,
            info_tag::FRAMEBUFFER
        ]
    );
    assert_eq!(mb2::tag_string(found[0].body, 0), b"k2.bin test=2");
    assert_eq!(
        mb2::tag_string(found[1].body, 0),
        multiboot_info::LOADER_NAME.as_bytes()
    );
    let word =
        |body: &[u8], i: usize| u32::from_le_bytes(body[4 * i..4 * i + 4].try_into().unwrap());
    assert_eq!(
        (word(found[2].body, 0), word(found[2].body, 1)),
        (0x10_3000, 0x10_3064)
    );
    assert_eq!(
        mb2::tag_string(found[2].body, 8),
        format!("{} quiet", initrd.display()).as_bytes()
    );
    assert_eq!(
        (word(found[3].body, 0), word(found[3].body, 1)),
        (640, 63 * 1024)
    );
    let map: Vec<_> = mb2::mmap_entries(found[4].body).collect();
    assert_eq!(map, ram.memory_map());
    assert_eq!(found[5].body[..8], 0xb_8000u64.to_le_bytes());
    assert_eq!(found[5].body[21], 2, "EGA text");
}

#[test]
fn an_elf_without_an_address_tag_is_loaded_by_its_program_headers() {
    // An ELF64 whose only Multiboot 2 tag is the end tag, in its first segment.
    let mut code = header(0, &[], 0);
    code.extend([0xf4; 8]);
    let mut elf = elf(
        object::elf::EM_X86_64,
        &[(object::elf::PT_LOAD, 0x20_0000, 0x1000, code)],
    );
    elf[24..32].copy_from_slice(&0x20_0000u64.to_le_bytes()); // e_entry
    let kernel = inspect(&elf).unwrap();
    assert_eq!(kernel.protocol, BootProtocol::Multiboot2);
    assert_eq!(kernel.entry, Gpa::new(0x20_0000));
    assert_eq!(
        kernel.segments,
        [(Gpa::new(0x20_0000), Gpa::new(0x20_1000))]
    );
}

#[test]
fn each_header_the_host_cannot_honour_is_refused_in_one_line() {
    let with_header = |h: Vec<u8>| {
        let mut image = vec![0xf4u8; 16];
        image.extend(h);
        image
    };
    let addr = tag(header_tag::ADDRESS, 0, &[0x10_0010, 0x10_0000, 0, 0]);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            with_header(header(0, &[], 1)),
            "at file offset 0x10 is invalid: Multiboot 2 checksum",
        ),
        (
            with_header(header(4, &[], 0)),
            "architecture 4 is not 0 (i386 protected mode)",
        ),
        (
            raw_image(&[tag(header_tag::INFORMATION_REQUEST, 0, &[14])]),
            "it requires boot information tag 14, which this host does not provide",
        ),
        (
            raw_image(&[tag(7, 0, &[])]),
            "it requires header tag 7 (EFI boot services), which this host does not honour",
        ),
        (
            with_header(header(0, &[addr], 0)),
            "it has an address tag but no entry address tag",
        ),
        (
            {
                let mut h = header(0, &[], 0);
                h.truncate(20);
                with_header(h)
            },
            "header_length 0x18 does not fit",
        ),
        (
            {
                // The end tag replaced by a tag that claims to run past the header.
                let mut h = header(0, &[], 0);
                h[16..24].copy_from_slice(&[5, 0, 0, 0, 0x40, 0, 0, 0]);
                with_header(h)
            },
            "tag 5 at 0x20 has size 0x40, outside the header",
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
    // Optional tags the host does not know are passed over.
    let optional = raw_image(&[tag(7, header_tag::OPTIONAL, &[]), tag(99, 1, &[1, 2])]);
    assert!(inspect(&optional).is_ok());
}

#[test]
fn the_bundled_kernel_boots_through_its_multiboot2_header_too() {
    let (mb1, _) = bundled(Some(BootProtocol::Multiboot));
    let (mb2, _) = bundled(Some(BootProtocol::Multiboot2));
    assert_eq!((mb2.entry, &mb2.segments), (mb1.entry, &mb1.segments));
}
