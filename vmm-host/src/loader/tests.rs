use super::pvh::{XEN_ELFNOTE_PHYS32_ENTRY, write_boot_data};
use super::*;
use abi::boot::MEMMAP_TABLE;
use abi::start_info::{MEMMAP_ENTRY_SIZE, MemmapEntry, START_INFO_SIZE, StartInfo};
use object::elf;
use vm_memory::Bytes;

use super::test_support::{elf, guest_memory, ram};

#[test]
fn the_guest_parser_reads_what_linux_loader_writes() {
    let ram = ram();
    let mem = guest_memory(&ram);
    write_boot_data(&mem, &ram, "test=hello log=quiet", Gpa::new(0x20_0000), &[]).unwrap();

    let mut info = [0u8; START_INFO_SIZE];
    mem.read_slice(&mut info, Gpa::new(START_INFO).guest_address())
        .unwrap();
    let info = StartInfo::parse(&info).unwrap();
    assert_eq!(info.cmdline_paddr, CMDLINE);
    assert_eq!(info.memmap_paddr, MEMMAP_TABLE);
    let map = ram.memory_map();
    assert_eq!(info.memmap_entries as usize, map.len());

    let mut table = vec![0u8; map.len() * MEMMAP_ENTRY_SIZE];
    mem.read_slice(&mut table, Gpa::new(MEMMAP_TABLE).guest_address())
        .unwrap();
    let parsed: Vec<MemmapEntry> = (0..map.len())
        .filter_map(|i| MemmapEntry::parse(&table, i))
        .collect();
    assert_eq!(parsed, map);

    let mut line = [0u8; 21];
    mem.read_slice(&mut line, Gpa::new(CMDLINE).guest_address())
        .unwrap();
    assert_eq!(&line, b"test=hello log=quiet\0");
}

#[test]
fn refuses_overlong_and_unprintable_command_lines() {
    let ram = ram();
    let mem = guest_memory(&ram);
    let long = "x".repeat(CMDLINE_MAX);
    assert!(matches!(
        write_boot_data(&mem, &ram, &long, Gpa::new(0x20_0000), &[]),
        Err(LoadError::CmdlineTooLong(4096))
    ));
    assert!(matches!(
        write_boot_data(&mem, &ram, "a\u{7}b", Gpa::new(0x20_0000), &[]),
        Err(LoadError::Cmdline(..))
    ));
}

fn pvh_note(entry: u64) -> Vec<u8> {
    let mut note = Vec::new();
    for word in [4u32, 8, XEN_ELFNOTE_PHYS32_ENTRY] {
        note.extend(word.to_le_bytes());
    }
    note.extend(b"Xen\0");
    note.extend(entry.to_le_bytes());
    note
}

fn inspect(data: &[u8]) -> Result<KernelImage, LoadError> {
    KernelImage::inspect_bytes(Path::new("k.elf"), data.to_vec(), &ram(), None)
}

#[test]
fn accepts_a_pvh_kernel() {
    let image = elf(
        elf::EM_X86_64,
        &[
            (elf::PT_LOAD, 0x10_0000, 0x2000, vec![0xf4; 16]),
            (elf::PT_NOTE, 0, 0, pvh_note(0x10_0000)),
        ],
    );
    let kernel = inspect(&image).unwrap();
    assert_eq!(kernel.entry, Gpa::new(0x10_0000));
    assert_eq!(
        kernel.segments,
        vec![(Gpa::new(0x10_0000), Gpa::new(0x10_2000))]
    );
}

#[test]
fn explains_each_bad_kernel() {
    let note = (elf::PT_NOTE, 0, 0, pvh_note(0x10_0000));
    let load = |paddr: u64, size: u64| (elf::PT_LOAD, paddr, size, vec![0u8; 4]);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            Vec::new(),
            "is neither an ELF with a PVH entry note, a Multiboot kernel, a Linux bzImage nor a disk image (it starts with nothing: it is empty)",
        ),
        (
            b"#!/bin/sh\n".to_vec(),
            "is neither an ELF with a PVH entry note, a Multiboot kernel, a Linux bzImage nor a disk image (it starts with 23 21 2f 62)",
        ),
        (
            {
                let mut e = elf(elf::EM_X86_64, &[]);
                e[4] = elf::ELFCLASS32.0;
                e
            },
            "is a 32-bit ELF",
        ),
        (
            elf(elf::EM_AARCH64, &[load(0x10_0000, 0x1000), note.clone()]),
            "machine 183, not x86",
        ),
        (
            elf(elf::EM_X86_64, &[load(0x10_0000, 0x1000)]),
            "has no PVH entry note",
        ),
        (
            elf(elf::EM_X86_64, std::slice::from_ref(&note)),
            "has no loadable (PT_LOAD) segment",
        ),
        (
            elf(elf::EM_X86_64, &[load(0x3fff_f000, 0x2000), note.clone()]),
            "segment [0x3ffff000, 0x40001000) lies outside guest RAM (64 MiB of RAM at [0x0, 0x4000000))",
        ),
        (
            elf(elf::EM_X86_64, &[load(0x8000, 0x1000), note.clone()]),
            "overlaps the host's boot data at [0x6000, 0xa000)",
        ),
        (
            elf(elf::EM_X86_64, &[load(0x20_0000, 0x1000), note.clone()]),
            "the entry point 0x100000 is not inside a loaded segment",
        ),
        (
            elf(elf::EM_X86_64, &[load(u64::MAX - 4, 0x1000), note]),
            "segment at 0xfffffffffffffffb wraps around",
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
}

#[test]
fn empty_segments_and_other_xen_notes_are_ignored_and_a_missing_file_is_named() {
    let mut other_note = pvh_note(0x10_0000);
    other_note[8..12].copy_from_slice(&17u32.to_le_bytes()); // XEN_ELFNOTE_... not 18
    let image = elf(
        elf::EM_X86_64,
        &[
            (elf::PT_LOAD, 0x10_0000, 0x2000, vec![0xf4; 16]),
            // Nothing to load: where it claims to be does not matter.
            (elf::PT_LOAD, 0x3fff_ffff_0000, 0, Vec::new()),
            (elf::PT_NOTE, 0, 0, pvh_note(0x10_0000)),
        ],
    );
    assert_eq!(inspect(&image).unwrap().segments.len(), 1);
    let only_other = elf(
        elf::EM_X86_64,
        &[
            (elf::PT_LOAD, 0x10_0000, 0x2000, vec![0xf4; 16]),
            (elf::PT_NOTE, 0, 0, other_note),
        ],
    );
    assert!(matches!(
        inspect(&only_other),
        Err(LoadError::NoPvhEntry(..))
    ));
    assert!(matches!(
        KernelImage::inspect(Path::new("/nonexistent/k.elf"), &ram(), None),
        Err(LoadError::Missing(..))
    ));
}

#[test]
fn segments_may_touch_the_boot_data_and_the_end_of_ram_but_not_cross_them() {
    let note = (elf::PT_NOTE, 0, 0, pvh_note(0x10_0000));
    let kernel = (elf::PT_LOAD, 0x10_0000, 0x1000, vec![0xf4; 4]);
    let load = |paddr: u64, size: u64| (elf::PT_LOAD, paddr, size, vec![0u8; 4]);
    for edge in [
        load(0x5000, 0x1000),     // ends where the boot data starts
        load(0xa000, 0x1000),     // starts where it ends
        load(0x3ff_f000, 0x1000), // ends at the end of the 64 MiB of RAM
    ] {
        let image = elf(elf::EM_X86_64, &[kernel.clone(), edge, note.clone()]);
        assert!(inspect(&image).is_ok(), "{:?}", inspect(&image).err());
    }
    // The entry is the first byte of its segment, never the byte past its end.
    let at_end = elf(
        elf::EM_X86_64,
        &[kernel.clone(), (elf::PT_NOTE, 0, 0, pvh_note(0x10_1000))],
    );
    assert!(matches!(
        inspect(&at_end),
        Err(LoadError::EntryOutsideImage(..))
    ));
}

#[test]
fn a_segment_crossing_the_end_of_ram_is_refused_and_a_good_one_is_loaded_where_it_says() {
    let note = (elf::PT_NOTE, 0, 0, pvh_note(0x10_0000));
    let crossing = elf(
        elf::EM_X86_64,
        &[(elf::PT_LOAD, 0x3ff_f000, 0x2000, vec![0; 4]), note.clone()],
    );
    let message = inspect(&crossing).unwrap_err().to_string();
    assert!(message.contains("lies outside guest RAM"), "{message}");

    let image = elf(
        elf::EM_X86_64,
        &[
            (elf::PT_LOAD, 0x10_0000, 0x1000, vec![0xf4, 0xeb, 0xfe]),
            note,
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.elf");
    std::fs::write(&path, &image).unwrap();
    let ram = ram();
    let kernel = KernelImage::inspect(&path, &ram, None).unwrap();
    let mem = guest_memory(&ram);
    kernel.boot(&mem, &ram, "", &BootFiles::default()).unwrap();
    let mut bytes = [0u8; 3];
    mem.read_slice(&mut bytes, Gpa::new(0x10_0000).guest_address())
        .unwrap();
    assert_eq!(bytes, [0xf4, 0xeb, 0xfe]);
    // The note said one entry, linux-loader another: refused, not booted at random.
    let mut other = kernel;
    other.entry = Gpa::new(0x10_0004);
    assert!(matches!(
        other.boot(&mem, &ram, "", &BootFiles::default()),
        Err(LoadError::Malformed(..))
    ));
}

#[test]
fn truncated_headers_are_malformed_not_a_panic() {
    let image = elf(
        elf::EM_X86_64,
        &[(elf::PT_LOAD, 0x10_0000, 0x1000, vec![0; 4])],
    );
    for len in 5..image.len() {
        let _ = inspect(&image[..len]);
    }
    assert!(matches!(
        inspect(&image[..70]),
        Err(LoadError::Malformed(..))
    ));
}
