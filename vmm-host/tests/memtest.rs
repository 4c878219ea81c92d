//! Another kernel nobody here wrote: Debian's memtest86+ (6.x), fetched with `apt-get
//! download`. Its `memtest86+x64.bin` is a bzImage with a 64-bit entry (`xloadflags` bit 0)
//! and nothing of Linux inside: it takes the host's long-mode entry, loads its own GDT and
//! page tables (identity-mapping 4 GiB), and initialises the FPU, where this project's nested
//! KVM, which emulates ring-0 code, cannot emulate `fwait`.

mod common;
use std::path::Path;

fn nested_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

#[test]
fn memtest86plus_takes_the_64_bit_entry_and_builds_its_own_page_tables() {
    let test = "memtest86plus_takes_the_64_bit_entry_and_builds_its_own_page_tables";
    let Some(()) = common::kvm_or_skip(test) else {
        return;
    };
    let Some(image) = common::debian::boot_file(test, "memtest86+", "memtest86+x64.bin") else {
        return;
    };
    let run = common::vmm(&["run", "--kernel", image.to_str().unwrap(), "--timeout", "5"]);
    let out = &run.stdout;
    assert!(out.contains("mode   64-bit long mode, CPL 0"), "{out}");
    let cr3 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("cr3    "))
        .unwrap_or_else(|| panic!("no cr3 line:\n{out}"));
    assert_ne!(
        cr3, "0x0000000000001000",
        "memtest switched from the host's entry tables to its own"
    );
    assert!(
        out.contains("  identity 0x0-0x100000000 (4 GiB)"),
        "its tables identity-map 4 GiB:\n{out}"
    );
    if nested_pvm() {
        assert_eq!(run.status, 82, "{out}");
        assert!(
            out.contains(
                "  hint   this KVM could not emulate `fwait`; no CPUID feature guards it, so a kernel cannot be steered past it"
            ),
            "{out}"
        );
    } else {
        assert_eq!(
            run.status, 84,
            "still testing memory when the watchdog fired:\n{out}"
        );
    }
}
