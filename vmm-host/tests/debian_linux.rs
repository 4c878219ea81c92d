//! A kernel nobody here wrote: Debian's cloud kernel, fetched with `apt-get download` into
//! `target/debian/` (never committed), booted from the bzImage Debian ships through the
//! Linux boot protocol, with QEMU TCG as the oracle.
//!
//! Its decompressor is the first code to read what the host wrote. Entered at its 64-bit entry
//! in long mode on the host's identity tables, it finds the command line through
//! `boot_params.hdr.cmd_line_ptr`, its early serial console through `earlyprintk=`, and the VGA
//! text screen through `boot_params.screen_info`, then maps its output buffer page by page
//! from its own #PF handler. Decompressing 50 MiB takes 1–2 minutes on this project's nested
//! KVM, where ring-0 code is emulated, so the test stops after a few seconds, when the
//! decompressor has said that it read `nokaslr`. The kernel inside it, unpacked with `lz4`,
//! boots as a vmlinux at the 64-bit entry and prints what it read from `boot_params`.

mod common;
use std::path::PathBuf;
use std::process::Command;

const CMDLINE: &str = "console=ttyS0 earlyprintk=ttyS0 nokaslr";
/// What Linux's decompressor prints when it finds `nokaslr` on the command line.
const DECOMPRESSOR_SAW_NOKASLR: &str = "KASLR disabled: 'nokaslr' on cmdline.";

/// Debian's current cloud bzImage.
fn debian_bzimage(test: &str) -> Option<PathBuf> {
    common::debian::boot_file(test, "linux-image-cloud-amd64", "vmlinuz-")
}

#[test]
fn debians_bzimage_reads_our_boot_params_and_reaches_long_mode() {
    let test = "debians_bzimage_reads_our_boot_params_and_reaches_long_mode";
    let Some(()) = common::kvm_or_skip(test) else {
        return;
    };
    let Some(bzimage) = debian_bzimage(test) else {
        return;
    };
    let run = common::vmm(&[
        "run",
        "--kernel",
        bzimage.to_str().unwrap(),
        "--cmdline",
        CMDLINE,
        "--timeout",
        "8",
    ]);
    let out = &run.stdout;
    assert_eq!(
        run.status, 84,
        "stopped by the watchdog mid-decompression:\n{out}"
    );
    let serial_line = out
        .lines()
        .position(|l| l == DECOMPRESSOR_SAW_NOKASLR)
        .unwrap_or_else(|| panic!("the decompressor's serial line is missing:\n{out}"));
    let ended = out.find("== run ended").unwrap();
    assert!(
        out[..ended].lines().count() > serial_line,
        "the line came from the guest's serial port, before the report"
    );
    let screen = &out[out.find("-- screen when the run ended").expect("a screen")..];
    assert!(
        screen.contains(&format!("|{DECOMPRESSOR_SAW_NOKASLR}")),
        "screen_info made the decompressor draw on the VGA text screen:\n{screen}"
    );
    assert!(
        out.contains("mode   64-bit long mode, CPL 0"),
        "still in long mode, where the 64-bit entry put it:\n{out}"
    );
    // With nokaslr the kernel decompresses at its LOAD_PHYSICAL_ADDR, 16 MiB, which the
    // decompressor maps on demand: the tap sees that fault through the decompressor's IDT.
    assert!(
        out.lines()
            .any(|l| l.starts_with("[1] vector 14 (#PF page fault)")
                && l.contains("write, kernel, not-present")
                && l.ends_with("cr2 0x1000000")),
        "the decompressor's first fault, mapping its output at 16 MiB:\n{out}"
    );
}

#[test]
fn qemu_tcg_prints_the_same_decompressor_line() {
    let test = "qemu_tcg_prints_the_same_decompressor_line";
    let Some(()) = common::program_or_skip(test, "qemu-system-x86_64", "qemu-system-x86") else {
        return;
    };
    let Some(bzimage) = debian_bzimage(test) else {
        return;
    };
    let out = Command::new("timeout")
        .args(["-s", "KILL", "8", "qemu-system-x86_64", "-accel", "tcg"])
        .args([
            "-m",
            "128M",
            "-display",
            "none",
            "-no-reboot",
            "-net",
            "none",
        ])
        .args(["-serial", "stdio", "-monitor", "none"])
        .arg("-kernel")
        .arg(&bzimage)
        .args(["-append", CMDLINE])
        .output()
        .expect("spawn qemu");
    let serial = String::from_utf8_lossy(&out.stdout);
    assert!(
        serial
            .lines()
            .any(|l| l.trim_end() == DECOMPRESSOR_SAW_NOKASLR),
        "QEMU's own loader gives the same command line to the same decompressor:\n{serial}"
    );
}

/// The uncompressed kernel inside Debian's bzImage (the payload its setup header points at,
/// LZ4 in Debian's builds), unpacked into `target/debian/` once; `None` after a skip.
fn debian_vmlinux(test: &str) -> Option<PathBuf> {
    let bzimage = debian_bzimage(test)?;
    let vmlinux = bzimage.with_file_name("vmlinux");
    if vmlinux.is_file() {
        return Some(vmlinux);
    }
    common::program_or_skip(test, "lz4", "lz4")?;
    let data = std::fs::read(&bzimage).expect("read the bzImage");
    let word = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
    let setup = (usize::from(data[0x1f1]).max(4) + 1) * 512;
    let (offset, length) = (word(0x248), word(0x24c));
    let payload = &data[setup + offset..setup + offset + length];
    if !payload.starts_with(&[0x02, 0x21, 0x4c, 0x18]) {
        let magic: Vec<String> = payload[..4].iter().map(|b| format!("{b:02x}")).collect();
        common::skip(
            test,
            &format!(
                "the bzImage's payload is not LZ4 (it starts {}): teach debian_vmlinux its compression",
                magic.join(" ")
            ),
        );
        return None;
    }
    // Linux appends the uncompressed size (4 bytes) to the LZ4 stream: not LZ4's own.
    let packed = bzimage.with_file_name("vmlinux.lz4");
    std::fs::write(&packed, &payload[..payload.len() - 4]).expect("write the payload");
    let status = Command::new("lz4")
        .args(["-d", "-f", "-q"])
        .arg(&packed)
        .arg(&vmlinux)
        .status()
        .expect("run lz4");
    assert!(status.success(), "lz4 could not unpack Debian's kernel");
    let _ = std::fs::remove_file(&packed);
    Some(vmlinux)
}

/// Debian's vmlinux (no decompressor) through the Linux boot protocol's 64-bit entry, with
/// the setup header the host writes for an ELF: Linux itself prints the command line and the
/// E820 map it read from our `boot_params`. It runs until this KVM cannot emulate an
/// instruction (or the watchdog), whichever comes first; the lines come long before.
#[test]
fn debians_vmlinux_prints_the_boot_params_it_read() {
    let test = "debians_vmlinux_prints_the_boot_params_it_read";
    let Some(()) = common::kvm_or_skip(test) else {
        return;
    };
    let Some(vmlinux) = debian_vmlinux(test) else {
        return;
    };
    let run = common::vmm(&[
        "run",
        "--boot",
        "linux",
        "--kernel",
        vmlinux.to_str().unwrap(),
        "--mem",
        "512M",
        "--cmdline",
        CMDLINE,
        // About 25 s to these lines here, 48 s to where this KVM's emulator stops it (`lock
        // cmpxchg16b`); a loaded machine takes longer, so the watchdog is generous.
        "--timeout",
        "120",
        "--no-tap",
    ]);
    let out = &run.stdout;
    for line in [
        "] Linux version 6.",
        &format!("] Command line: {CMDLINE}"),
        "] BIOS-provided physical RAM map:",
        "] BIOS-e820: [mem 0x0000000000100000-0x000000001fffffff] usable",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }
}
