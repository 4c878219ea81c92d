//! Builds guest-kernel for x86_64-unknown-none whenever vmm-host builds, and hands its path to
//! the host as `GUEST_KERNEL_ELF`, with two images made from it: `GUEST_KERNEL_BZIMAGE` (the
//! Linux boot protocol) and `GUEST_KERNEL_DISK`, a raw disk image that boots through the
//! kernel's own boot sector under a BIOS (`abi::disk_image`); and `GUEST_KERNEL32`, the crate's
//! 32-bit Multiboot test kernel (`src/bin/kernel32.rs`).
//!
//! The nested cargo runs in a target directory of its own, with the outer build's RUSTFLAGS and
//! CARGO_* variables removed: they describe the host build (clippy wrappers, host flags,
//! jobserver), not the kernel's.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, exit};

/// The disk image's layout, config block and command line, shared with guest-kernel's loader
/// and the tests. Included by path (its code has no `crate::` paths): that spares vmm-host a
/// build-dependency on abi for a few constants and `set_cmdline`.
#[allow(dead_code)] // the build script needs only part of it
#[path = "../guest-kernel/abi/src/disk_image.rs"]
mod disk_image;
use disk_image::{SECTOR_SIZE, config};

const GUEST_TARGET: &str = "x86_64-unknown-none";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let guest_dir = manifest_dir.join("../guest-kernel");
    for input in [
        "src",
        "abi/src",
        "abi/Cargo.toml",
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "linker.ld",
        "bootsector.ld",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", guest_dir.join(input).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir.join("../target"))
        .join("guest-kernel");

    ensure_guest_target();

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&guest_dir)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            GUEST_TARGET,
            "--target-dir",
        ])
        .arg(&target_dir);
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        let keep = matches!(key.as_ref(), "CARGO_HOME")
            || key.starts_with("CARGO_NET_")
            || key.starts_with("CARGO_HTTP_")
            || key.starts_with("CARGO_REGISTRIES_");
        let host_only = key.starts_with("CARGO_")
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTDOC")
            || matches!(
                key.as_ref(),
                "RUSTFLAGS" | "TARGET" | "HOST" | "OUT_DIR" | "PROFILE"
            )
            || matches!(
                key.as_ref(),
                "OPT_LEVEL" | "DEBUG" | "NUM_JOBS" | "MAKEFLAGS" | "MFLAGS"
            );
        if host_only && !keep {
            build.env_remove(key.as_ref());
        }
    }
    let output = build
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run cargo: {e}")));
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        fail("building guest-kernel failed (its cargo output is above)");
    }

    let elf = target_dir.join(GUEST_TARGET).join("release/guest-kernel");
    if !elf.is_file() {
        fail(&format!(
            "guest-kernel built but {} is missing",
            elf.display()
        ));
    }
    println!("cargo:rustc-env=GUEST_KERNEL_ELF={}", elf.display());
    let bzimage = elf.with_file_name("guest-kernel.bzImage");
    write_bzimage(&elf, &bzimage);
    println!("cargo:rustc-env=GUEST_KERNEL_BZIMAGE={}", bzimage.display());
    let disk = elf.with_file_name("guest-kernel.img");
    write_disk_image(&elf, &elf.with_file_name("bootsector"), &disk);
    println!("cargo:rustc-env=GUEST_KERNEL_DISK={}", disk.display());
    let kernel32 = elf.with_file_name("kernel32");
    if !kernel32.is_file() {
        fail(&format!(
            "guest-kernel built but {} is missing",
            kernel32.display()
        ));
    }
    println!("cargo:rustc-env=GUEST_KERNEL32={}", kernel32.display());
}

/// Where the protected-mode kernel of a bzImage is loaded, and guest-kernel is linked.
const LOAD: u64 = 0x10_0000;

/// Wrap the kernel's loadable bytes in a bzImage (Linux boot protocol 2.15), as a Linux build
/// does with its compressed kernel: one boot sector and one setup sector holding the setup
/// header, then the image as it lies in memory from 1 MiB. It has no real-mode setup code (a
/// real-mode loader halts at the header's jump target), so it boots where the loader enters
/// the 32-bit entry itself: `vmm-host --boot linux`.
fn write_bzimage(elf: &Path, out: &Path) {
    let (image, mem_end) = flat_image(&read_file(elf));
    let mut file = vec![0u8; 1024];
    let note = b"guest-kernel as a bzImage: boot it with vmm-host --boot linux\r\n";
    file[..note.len()].copy_from_slice(note);
    let mut put = |at: usize, bytes: &[u8]| file[at..at + bytes.len()].copy_from_slice(bytes);
    put(0x1f1, &[1]); // setup_sects
    put(0x1f4, &((image.len() as u32).div_ceil(16)).to_le_bytes()); // syssize
    put(0x1fe, &[0x55, 0xaa]); // boot_flag
    put(0x200, &[0xeb, 0x6a]); // jump past the header, to 0x26c
    put(0x202, b"HdrS");
    put(0x206, &0x020fu16.to_le_bytes()); // protocol 2.15
    put(0x211, &[1]); // loadflags: LOADED_HIGH
    put(0x214, &(LOAD as u32).to_le_bytes()); // code32_start
    put(0x22c, &0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
    put(0x230, &0x1000u32.to_le_bytes()); // kernel_alignment
    put(0x238, &4095u32.to_le_bytes()); // cmdline_size
    put(0x258, &LOAD.to_le_bytes()); // pref_address: not relocatable, runs where linked
    let init_size = (mem_end - LOAD).next_multiple_of(4096);
    put(0x260, &(init_size as u32).to_le_bytes());
    put(0x26c, &[0xfa, 0xf4, 0xeb, 0xfd]); // cli; hlt; jmp back to the hlt
    file.extend(image);
    std::fs::write(out, file)
        .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", out.display())));
}

/// The PT_LOAD segments' file bytes laid out from [`LOAD`], and the end of the last
/// segment in memory (bss included).
fn flat_image(elf: &[u8]) -> (Vec<u8>, u64) {
    let mut image = Vec::new();
    let mut mem_end = LOAD;
    for segment in load_segments(elf, "guest-kernel") {
        let paddr = segment.paddr;
        if paddr < LOAD {
            fail(&format!(
                "guest-kernel has a segment at {paddr:#x}, below {LOAD:#x}"
            ));
        }
        let at = (paddr - LOAD) as usize;
        let filesz = segment.bytes.len();
        if image.len() < at + filesz {
            image.resize(at + filesz, 0);
        }
        image[at..at + filesz].copy_from_slice(segment.bytes);
        mem_end = mem_end.max(paddr + segment.memsz);
    }
    (image, mem_end)
}

/// Write guest-kernel's raw disk image (`abi::disk_image` documents its layout, the config
/// block and where the command line lives): the loader's stage1 and stage2 from the
/// `bootsector` ELF, the config block filled in for this kernel with
/// [`disk_image::DEFAULT_CMDLINE`], then the kernel's bytes as they lie in memory from 1 MiB,
/// zero-padded to whole sectors.
fn write_disk_image(kernel: &Path, bootsector: &Path, out: &Path) {
    let kernel_elf = read_file(kernel);
    let (image, _) = flat_image(&kernel_elf);
    let mut disk = loader_sectors(&read_file(bootsector));
    for (offset, value) in kernel_config(&kernel_elf, image.len()) {
        let at = disk_image::CONFIG_IMAGE_OFFSET + offset;
        disk[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }
    disk_image::set_cmdline(&mut disk, disk_image::DEFAULT_CMDLINE).unwrap_or_else(|e| {
        fail(&format!(
            "cannot write the disk image's command line: {e:?}"
        ))
    });
    disk.extend(image);
    disk.resize(disk.len().next_multiple_of(SECTOR_SIZE), 0);
    std::fs::write(out, disk)
        .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", out.display())));
}

/// The image's first sectors: stage1 (the PT_LOAD segment at 0x7C00, one sector ending in
/// 0x55 0xAA) and stage2 (the one at 0x8000), zero-padded to its sectors. The loader's config
/// block, command line and name must sit where `abi::disk_image` says.
fn loader_sectors(elf: &[u8]) -> Vec<u8> {
    let stage2_size = disk_image::STAGE2_SECTORS as usize * SECTOR_SIZE;
    let stage1 = segment_at(elf, disk_image::STAGE1_ADDR);
    let stage2 = segment_at(elf, disk_image::STAGE2_ADDR);
    if stage1.len() != SECTOR_SIZE || stage1[SECTOR_SIZE - 2..] != [0x55, 0xaa] {
        fail("the loader's stage1 is not one sector ending in the boot signature 0x55 0xAA");
    }
    if stage2.len() > stage2_size {
        fail(&format!(
            "the loader's stage2 is {} bytes, more than its {stage2_size}",
            stage2.len()
        ));
    }
    let config = u64::from(disk_image::STAGE2_ADDR) + disk_image::CONFIG_OFFSET as u64;
    for (symbol, expected) in [
        ("stage2_config", config),
        ("stage2_cmdline", config + config::CMDLINE as u64),
    ] {
        if elf_symbol(elf, symbol) != Some(expected) {
            fail(&format!(
                "the loader's {symbol} is not at {expected:#x}, where abi::disk_image puts it"
            ));
        }
    }
    let name = [disk_image::LOADER_NAME.as_bytes(), b"\0"].concat();
    if !stage2.windows(name.len()).any(|w| w == name) {
        fail("the loader's stage2 does not name itself abi::disk_image::LOADER_NAME");
    }
    let mut sectors = [stage1, stage2].concat();
    sectors.resize(SECTOR_SIZE + stage2_size, 0);
    sectors
}

/// The config block's fields for this kernel: where its sectors are and where they go, where
/// its file bytes and its bss end, and its Multiboot entry.
fn kernel_config(elf: &[u8], image_len: usize) -> [(usize, u32); 6] {
    let symbol = |name: &str| {
        let value = elf_symbol(elf, name)
            .unwrap_or_else(|| fail(&format!("guest-kernel has no symbol {name}")));
        u32::try_from(value)
            .unwrap_or_else(|_| fail(&format!("guest-kernel's {name} is above 4 GiB")))
    };
    let load_end = symbol("__load_end");
    if u64::from(load_end) != LOAD + image_len as u64 {
        fail(&format!(
            "guest-kernel's __load_end ({load_end:#x}) is not where its file bytes end ({:#x})",
            LOAD + image_len as u64
        ));
    }
    let sectors = image_len.div_ceil(SECTOR_SIZE) as u32;
    [
        (config::KERNEL_LBA, disk_image::KERNEL_LBA),
        (config::KERNEL_SECTORS, sectors),
        (config::LOAD_ADDR, LOAD as u32),
        (config::LOAD_END_ADDR, load_end),
        (config::BSS_END_ADDR, symbol("__bss_end")),
        (config::ENTRY_ADDR, symbol("multiboot_start32")),
    ]
}

fn read_file(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", path.display())))
}

fn u16_at(elf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(elf[at..at + 2].try_into().unwrap())
}

fn u32_at(elf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(elf[at..at + 4].try_into().unwrap())
}

fn u64_at(elf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(elf[at..at + 8].try_into().unwrap())
}

/// One PT_LOAD segment: its physical address, its file bytes and its size in memory.
struct Segment<'a> {
    paddr: u64,
    bytes: &'a [u8],
    memsz: u64,
}

/// The PT_LOAD segments of the ELF64 file `elf` (`what` names it in errors).
fn load_segments<'a>(elf: &'a [u8], what: &str) -> Vec<Segment<'a>> {
    if elf.get(..5) != Some(b"\x7fELF\x02".as_slice()) {
        fail(&format!("{what} is not an ELF64 file"));
    }
    let (phoff, phentsize, phnum) = (
        u64_at(elf, 0x20) as usize,
        usize::from(u16_at(elf, 0x36)),
        usize::from(u16_at(elf, 0x38)),
    );
    (0..phnum)
        .map(|i| phoff + i * phentsize)
        .filter(|&ph| u32_at(elf, ph) == 1) // PT_LOAD
        .map(|ph| {
            let (offset, filesz) = (u64_at(elf, ph + 8) as usize, u64_at(elf, ph + 0x20) as usize);
            Segment {
                paddr: u64_at(elf, ph + 0x18),
                bytes: &elf[offset..offset + filesz],
                memsz: u64_at(elf, ph + 0x28),
            }
        })
        .collect()
}

/// The file bytes of the loader's PT_LOAD segment at `paddr`.
fn segment_at(elf: &[u8], paddr: u32) -> &[u8] {
    load_segments(elf, "the bootsector loader")
        .into_iter()
        .find(|s| s.paddr == u64::from(paddr))
        .map(|s| s.bytes)
        .unwrap_or_else(|| fail(&format!("the loader has no segment at {paddr:#x}")))
}

/// The value of the first symbol called `name` in the ELF64 file's symbol table (SHT_SYMTAB).
fn elf_symbol(elf: &[u8], name: &str) -> Option<u64> {
    let (shoff, shentsize, shnum) = (
        u64_at(elf, 0x28) as usize,
        usize::from(u16_at(elf, 0x3a)),
        usize::from(u16_at(elf, 0x3c)),
    );
    let section = |i: usize| shoff + i * shentsize;
    let symtab = (0..shnum)
        .map(section)
        .find(|&sh| u32_at(elf, sh + 4) == 2)?;
    let strings = u64_at(elf, section(u32_at(elf, symtab + 0x28) as usize) + 0x18) as usize;
    let (offset, size) = (
        u64_at(elf, symtab + 0x18) as usize,
        u64_at(elf, symtab + 0x20) as usize,
    );
    let entsize = (u64_at(elf, symtab + 0x38) as usize).max(24);
    (offset..offset + size).step_by(entsize).find_map(|sym| {
        let at = strings + u32_at(elf, sym) as usize;
        let found = elf.get(at..at + name.len() + 1)?;
        (found[..name.len()] == *name.as_bytes() && found[name.len()] == 0)
            .then(|| u64_at(elf, sym + 8))
    })
}

/// The kernel needs the x86_64-unknown-none standard library; install it through rustup if it
/// is missing, or stop with the one command that does.
fn ensure_guest_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", GUEST_TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if libdir.as_deref().is_some_and(has_core) {
        return;
    }
    println!(
        "cargo:warning=the {GUEST_TARGET} standard library is missing: running `rustup target add {GUEST_TARGET}`"
    );
    let added = Command::new("rustup")
        .args(["target", "add", GUEST_TARGET])
        .status();
    if !matches!(added, Ok(s) if s.success()) {
        fail(&format!(
            "the {GUEST_TARGET} standard library is missing and rustup could not add it; run: rustup target add {GUEST_TARGET}"
        ));
    }
}

fn has_core(libdir: &Path) -> bool {
    std::fs::read_dir(libdir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
    })
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    exit(1)
}
