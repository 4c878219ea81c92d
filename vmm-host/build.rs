//! Builds guest-kernel for x86_64-unknown-none whenever vmm-host builds, and hands its path to
//! the host as `GUEST_KERNEL_ELF`.
//!
//! The nested cargo runs in a target directory of its own, with the outer build's RUSTFLAGS and
//! CARGO_* variables removed: they describe the host build (clippy wrappers, host flags,
//! jobserver), not the kernel's.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, exit};

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
}

/// Where the protected-mode kernel of a bzImage is loaded, and guest-kernel is linked.
const LOAD: u64 = 0x10_0000;

/// Wrap the kernel's loadable bytes in a bzImage (Linux boot protocol 2.15), as a Linux build
/// does with its compressed kernel: one boot sector and one setup sector holding the setup
/// header, then the image as it lies in memory from 1 MiB. It has no real-mode setup code (a
/// real-mode loader halts at the header's jump target), so it boots where the loader enters
/// the 32-bit entry itself: `vmm-host --boot linux`.
fn write_bzimage(elf: &Path, out: &Path) {
    let data =
        std::fs::read(elf).unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", elf.display())));
    let (image, mem_end) = flat_image(&data);
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
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap());
    let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap());
    if elf.get(..5) != Some(b"\x7fELF\x02".as_slice()) {
        fail("guest-kernel is not an ELF64 file");
    }
    let (phoff, phentsize, phnum) = (
        u64_at(0x20) as usize,
        usize::from(u16_at(0x36)),
        usize::from(u16_at(0x38)),
    );
    let mut image = Vec::new();
    let mut mem_end = LOAD;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(ph) != 1 {
            continue; // not PT_LOAD
        }
        let (offset, paddr) = (u64_at(ph + 8) as usize, u64_at(ph + 0x18));
        let (filesz, memsz) = (u64_at(ph + 0x20) as usize, u64_at(ph + 0x28));
        if paddr < LOAD {
            fail(&format!(
                "guest-kernel has a segment at {paddr:#x}, below {LOAD:#x}"
            ));
        }
        let at = (paddr - LOAD) as usize;
        if image.len() < at + filesz {
            image.resize(at + filesz, 0);
        }
        image[at..at + filesz].copy_from_slice(&elf[offset..offset + filesz]);
        mem_end = mem_end.max(paddr + memsz);
    }
    (image, mem_end)
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
