//! QEMU as an independent oracle: the very ELF vmm-host boots must boot under QEMU's own PVH
//! loader (TCG, no KVM), print the same banner, and exit through isa-debug-exit.

mod common;
use std::process::Command;

fn qemu_or_skip(test: &str) -> Option<()> {
    let found = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!("SKIPPED {test}: qemu-system-x86_64 is not installed (.ci/run installs it)");
    }
    found.then_some(())
}

#[test]
fn qemu_tcg_boots_the_same_kernel() {
    let Some(()) = qemu_or_skip("qemu_tcg_boots_the_same_kernel") else {
        return;
    };
    let output = Command::new("timeout")
        .args([
            "60",
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-display",
            "none",
            "-no-reboot",
            "-net",
            "none",
        ])
        .args(["-m", "128M", "-serial", "stdio", "-monitor", "none"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .args([
            "-kernel",
            vmm_host::GUEST_KERNEL_ELF,
            "-append",
            "test=hello",
        ])
        .output()
        .expect("spawn qemu");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(abi::exit::qemu_status(abi::exit::SUCCESS)),
        "{stdout}"
    );
    assert!(
        stdout.contains("guest-kernel 0.1.0: PVH entry at 0x100000, long mode"),
        "{stdout}"
    );
    assert!(stdout.contains("command line: \"test=hello\""), "{stdout}");
    assert!(stdout.contains("memory map (E820 at 0x500):"), "{stdout}");
    assert!(stdout.contains("hello from guest-kernel"), "{stdout}");
}
