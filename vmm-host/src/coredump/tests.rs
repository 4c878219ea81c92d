use super::*;
use crate::paging::CpuPaging;
use crate::tap::{ControlRegisters, ExceptionRecord, Frame};
use kvm_bindings::kvm_segment;

/// 2 MiB of RAM: a 4-level identity map of its first 2 MiB (PML4 at 0x1000), except page 0,
/// and the same frames mapped again at 0xffff_8000_0000_0000 (a higher half).
fn machine() -> (GuestMemoryMmap, Vec<(Gpa, u64)>, kvm_regs, kvm_sregs) {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
    let put = |at: u64, value: u64| mem.write_obj(value, GuestAddress(at)).unwrap();
    put(0x1000, 0x2003);
    put(0x1000 + 256 * 8, 0x2003);
    put(0x2000, 0x3003);
    put(0x3000, 0x4003);
    for page in 1..512u64 {
        put(0x4000 + page * 8, page << 12 | 0x63);
    }
    mem.write_slice(b"hello from RAM", GuestAddress(0x5000))
        .unwrap();
    let regs = kvm_regs {
        rip: 0x6000,
        rsp: 0x7ff0,
        rax: 0x1234,
        rflags: 0x2,
        ..Default::default()
    };
    let mut sregs = kvm_sregs {
        cr0: 0x8000_0011,
        cr3: 0x1000,
        cr4: 0x20,
        efer: 0xd00,
        ..Default::default()
    };
    sregs.cs = kvm_segment {
        selector: 8,
        l: 1,
        present: 1,
        s: 1,
        type_: 0xb,
        ..Default::default()
    };
    (mem, vec![(Gpa::new(0), 2 << 20)], regs, sregs)
}

fn record() -> ExceptionRecord {
    ExceptionRecord {
        seq: 7,
        vector: 14,
        shared_handler: false,
        handler: Gva::new(0x9000),
        frame: Some(Frame {
            at: Gva::new(0x7fc8),
            error: Some(2),
            rip: Gva::new(0x6000),
            cs: 8,
            rflags: 0x2,
            rsp: Gva::new(0x7ff0),
            ss: 0x10,
            real_mode: false,
        }),
        frame_error: None,
        control: ControlRegisters {
            cr0: 0x8000_0011,
            cr2: 0x10,
            cr3: 0x1000,
            cr4: 0x20,
            efer: 0xd00,
        },
        regs: kvm_regs {
            rip: 0x6000,
            rax: 0x10,
            ..Default::default()
        },
        segments: crate::registers::SegmentBases::default(),
        depth: 1,
        outer: vec![],
    }
}

fn note(ram: &[(Gpa, u64)]) -> VmmNote {
    VmmNote {
        version: VmmNote::VERSION,
        taken: "at the run's end (--core)".into(),
        ending: Some("the guest exited with code 4".into()),
        ending_kind: Some("exit".into()),
        kernel: "kernel.elf".into(),
        symbols: None,
        efer: 0xd00,
        cr8: 0,
        apic_base: 0xfee0_0900,
        paging: CpuPaging::with_phys_bits(46),
        ram: ram.iter().map(|&(s, n)| (s.raw(), n)).collect(),
        exceptions: 1,
        summary: "#PF".into(),
        active: vec![RecordNote::from(&record())],
    }
}

/// Write the core of `mem` (RAM `ram`) with the machine's registers into `dir`.
fn write_core(dir: &Path, mem: &GuestMemoryMmap, ram: &[(Gpa, u64)]) -> PathBuf {
    let (_, _, regs, sregs) = machine();
    let view = GuestView::new(mem, None);
    let mode = PagingMode::of_vcpu(
        CpuPaging::with_phys_bits(46),
        sregs.cr0,
        sregs.cr4,
        sregs.efer,
    );
    let mappings = mappings(&view, mode, Cr3::new(sregs.cr3), ram);
    let note = note(ram);
    let path = dir.join("core");
    let contents = Contents {
        regs: &regs,
        sregs: &sregs,
        ram,
        mappings: &mappings,
        note: &note,
        signal: 11,
    };
    write_file(&path, &contents, &view).unwrap();
    path
}

/// Write the machine's core into `dir` and return its path.
fn written(dir: &Path) -> PathBuf {
    let (mem, ram, _, _) = machine();
    let path = write_core(dir, &mem, &ram);
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 2 << 20, "RAM and headers: {size}");
    path
}

#[test]
fn the_mappings_are_the_identity_map_and_its_higher_half_alias() {
    let (mem, ram, _, sregs) = machine();
    let view = GuestView::new(&mem, None);
    let mode = PagingMode::of_vcpu(
        CpuPaging::with_phys_bits(46),
        sregs.cr0,
        sregs.cr4,
        sregs.efer,
    );
    let found = mappings(&view, mode, Cr3::new(0x1000), &ram);
    let runs: Vec<(u64, u64, u64)> = found
        .iter()
        .map(|m| (m.virt, m.phys.raw(), m.size))
        .collect();
    assert_eq!(
        runs,
        vec![
            (0x1000, 0x1000, 0x1f_f000),
            (0xffff_8000_0000_1000, 0x1000, 0x1f_f000)
        ]
    );
    assert!(found.iter().all(|m| m.writable && m.executable));
}

#[test]
fn a_core_reads_back_as_it_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path());
    let core = read_file(&path).unwrap();
    let (mem, ram, regs, sregs) = machine();
    assert_eq!(core.regs, regs);
    assert_eq!(
        (core.sregs.cr0, core.sregs.cr3, core.sregs.efer),
        (sregs.cr0, sregs.cr3, 0xd00)
    );
    assert_eq!(core.sregs.cs.l, 1);
    assert_eq!(core.ram, ram);
    assert_eq!(core.note, note(&ram));
    let mut back = [0u8; 14];
    core.mem
        .read_slice(&mut back, GuestAddress(0x5000))
        .unwrap();
    assert_eq!(&back, b"hello from RAM");
    let mut original = vec![0u8; 2 << 20];
    mem.read_slice(&mut original, GuestAddress(0)).unwrap();
    let mut restored = vec![0u8; 2 << 20];
    core.mem.read_slice(&mut restored, GuestAddress(0)).unwrap();
    assert!(original == restored, "all of RAM");
    assert_eq!(
        core.loads,
        vec![
            (0x1000, 0x1000, 0x1f_f000),
            (0xffff_8000_0000_1000, 0x1000, 0x1f_f000)
        ]
    );
    assert_eq!(core.note.active[0].record().control.cr2, 0x10);
}

#[test]
fn inspect_explains_the_exception_again_from_the_core() {
    let dir = tempfile::tempdir().unwrap();
    let core = read_file(&written(dir.path())).unwrap();
    let text = inspect::report(&core, None);
    assert!(
        text.contains("  written     at the run's end (--core)"),
        "{text}"
    );
    assert!(
        text.contains("  run         the guest exited with code 4"),
        "{text}"
    );
    assert!(
        text.contains("2 MiB in 1 region; 2 virtual ranges mapped"),
        "{text}"
    );
    assert!(text.contains("[7] vector 14 (#PF page fault)"), "{text}");
    assert!(
        text.contains("null pointer dereference"),
        "the explanation, made again: {text}"
    );
    assert!(text.contains("== page-table audit"), "{text}");
}

/// A core cut, damaged or of another kind is one line saying what is wrong with it.
#[test]
fn damaged_cores_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(written(dir.path())).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "not a 64-bit ELF file"),
        (
            "text",
            b"not a core at all".to_vec(),
            "not a 64-bit ELF file",
        ),
        (
            "truncated",
            good[..good.len() / 2].to_vec(),
            "runs past the end of the file",
        ),
        (
            "headers only",
            good[..64].to_vec(),
            "program headers cannot be read",
        ),
        (
            "executable",
            {
                let mut d = good.clone();
                d[16] = 2;
                d
            },
            "not a core (type 4)",
        ),
        (
            "no JSON",
            {
                let mut d = good.clone();
                let at = find(&d, b"{\"version\"").unwrap();
                d[at] = b'x';
                d
            },
            "its VMMHOST note is damaged",
        ),
        (
            "no registers",
            {
                let mut d = good.clone();
                let at = find(&d, b"CORE\0").unwrap();
                d[at] = b'X';
                d
            },
            "no NT_PRSTATUS note",
        ),
    ];
    for (what, data, expected) in cases {
        let path = dir.path().join(what);
        std::fs::write(&path, &data).unwrap();
        let message = read_file(&path).unwrap_err().to_string();
        assert!(message.contains(expected), "{what}: {message}");
        assert!(
            message.contains(&path.display().to_string()),
            "{what}: {message}"
        );
        assert!(!message.contains('\n'), "{what}: {message:?}");
    }
    let missing = read_file(&dir.path().join("absent"))
        .unwrap_err()
        .to_string();
    assert!(missing.starts_with("cannot read the core"), "{missing}");
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A 16 KiB machine's core, 20 KiB in all: PML4 at 0x1000, one 2 MiB page at 0.
fn small_core() -> Vec<u8> {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x4000)]).unwrap();
    let put = |at: u64, value: u64| mem.write_obj(value, GuestAddress(at)).unwrap();
    put(0x1000, 0x2003);
    put(0x2000, 0x3003);
    put(0x3000, 0x83);
    let ram = vec![(Gpa::new(0), 0x4000)];
    let dir = tempfile::tempdir().unwrap();
    std::fs::read(write_core(dir.path(), &mem, &ram)).unwrap()
}

/// The fuzz target `core` starts from this core; it must stay one this vmm-host writes.
/// `VMM_FUZZ_SEED_UPDATE=1` rewrites it after a change to the format (review the diff).
#[test]
fn the_core_fuzz_seed_is_what_this_writer_writes() {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/core/small");
    let bytes = small_core();
    if std::env::var("VMM_FUZZ_SEED_UPDATE").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(seed.parent().unwrap()).unwrap();
        std::fs::write(&seed, &bytes).unwrap();
    }
    let committed = std::fs::read(&seed).expect("fuzz/seeds/core/small");
    assert!(
        committed == bytes,
        "the core format changed: VMM_FUZZ_SEED_UPDATE=1 rewrites the seed"
    );
    let core = read_bytes(&seed, &committed).unwrap();
    assert_eq!(
        core.loads,
        vec![(0, 0, 0x4000)],
        "the 2 MiB page, clipped to RAM"
    );
}

/// Two ranges side by side that differ only in rights stay two mappings, each ending where
/// its range ends.
#[test]
fn adjacent_ranges_with_other_rights_are_separate_mappings() {
    let (mem, ram, _, sregs) = machine();
    // Pages 256–511 read-only and not executable.
    for page in 256..512u64 {
        let entry = page << 12 | 0x61 | 1 << 63;
        mem.write_obj(entry, GuestAddress(0x4000 + page * 8))
            .unwrap();
    }
    let view = GuestView::new(&mem, None);
    let mode = PagingMode::of_vcpu(
        CpuPaging::with_phys_bits(46),
        sregs.cr0,
        sregs.cr4,
        sregs.efer,
    );
    let found = mappings(&view, mode, Cr3::new(0x1000), &ram);
    let low: Vec<(u64, u64, bool, bool)> = found
        .iter()
        .filter(|m| m.virt < 1 << 47)
        .map(|m| (m.virt, m.size, m.writable, m.executable))
        .collect();
    assert_eq!(
        low,
        vec![
            (0x1000, 0xff000, true, true),
            (0x10_0000, 0x10_0000, false, false)
        ]
    );
}
