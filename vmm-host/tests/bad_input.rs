//! Bad input: each case gets one line on stderr naming the value and the fix, and status 2.

mod common;
use common::{assert_one_line_error, repo_root, vmm};

#[test]
fn missing_kernel() {
    let run = vmm(&["run", "--kernel", "/nonexistent/kernel.elf"]);
    assert_one_line_error(
        &run,
        "kernel `/nonexistent/kernel.elf` does not exist: pass --kernel",
    );
}

#[test]
fn kernel_of_no_known_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kernel.bin");
    std::fs::write(&path, b"MZ\x90\x00 this is not an ELF").unwrap();
    let run = vmm(&["run", "--kernel", path.to_str().unwrap()]);
    assert_one_line_error(
        &run,
        "is neither an ELF with a PVH entry note, a Multiboot kernel, a Linux bzImage nor a disk image (it starts with 4d 5a 90 00)",
    );
    let forced = vmm(&["run", "--boot", "pvh", "--kernel", path.to_str().unwrap()]);
    assert_one_line_error(&forced, "is not an ELF file (it starts with 4d 5a 90 00)");
}

/// A raw Multiboot image loaded by its address fields; `checksum_delta` spoils the checksum.
fn multiboot_image(load_addr: u32, checksum_delta: u32) -> Vec<u8> {
    let (magic, flags) = (0x1bad_b002u32, 0x1_0000u32);
    let checksum = 0u32
        .wrapping_sub(magic)
        .wrapping_sub(flags)
        .wrapping_add(checksum_delta);
    [
        magic, flags, checksum, load_addr, load_addr, 0, 0, load_addr,
    ]
    .iter()
    .flat_map(|w| w.to_le_bytes())
    .chain([0xf4; 16])
    .collect()
}

#[test]
fn multiboot_kernels_that_cannot_be_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mb.bin");
    let path_str = path.to_str().unwrap();
    std::fs::write(&path, multiboot_image(0x10_0000, 1)).unwrap();
    assert_one_line_error(
        &vmm(&["run", "--kernel", path_str]),
        "the Multiboot header at file offset 0x0 is invalid: bad checksum 0xe4514fff",
    );
    std::fs::write(&path, multiboot_image(0x7ff_0000, 0)).unwrap();
    assert_one_line_error(
        &vmm(&["run", "--mem", "64M", "--kernel", path_str]),
        "segment [0x7ff0000, 0x7ff0030) lies outside guest RAM (64 MiB of RAM at [0x0, 0x4000000))",
    );
    std::fs::write(&path, multiboot_image(0x10_0000, 0)).unwrap();
    assert_one_line_error(
        &vmm(&[
            "run",
            "--kernel",
            path_str,
            "--module",
            "/nonexistent/initrd,x",
        ]),
        "--module: cannot read `/nonexistent/initrd`",
    );
    assert_one_line_error(
        &vmm(&["run", "--module", ",x"]),
        "`,x` names no file: write --module FILE[,CMDLINE]",
    );
}

#[test]
fn elf_without_pvh_entry() {
    // Any x86-64 Linux program is an ELF without a PVH note; the test binary itself is one.
    let me = std::env::current_exe().unwrap();
    let run = vmm(&["run", "--kernel", me.to_str().unwrap()]);
    assert_one_line_error(
        &run,
        "has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY in a PT_NOTE segment)",
    );
}

#[test]
fn memory_sizes_the_boot_layout_or_host_cannot_hold() {
    assert_one_line_error(
        &vmm(&["run", "--mem", "16M"]),
        "memory size 16 MiB is too small: the boot layout needs at least 32 MiB",
    );
    assert_one_line_error(
        &vmm(&["run", "--mem", "64T"]),
        "memory size 64 TiB is more than this host's",
    );
    assert_one_line_error(
        &vmm(&["run", "--mem", "lots"]),
        "memory size `lots` is not a size",
    );
}

#[test]
fn no_kvm_device() {
    let run = vmm(&["--kvm-device", "/nonexistent/kvm", "run"]);
    assert_one_line_error(
        &run,
        "`/nonexistent/kvm` does not exist: this machine has no KVM",
    );
}

#[test]
fn a_device_that_is_not_kvm() {
    let run = vmm(&["--kvm-device", "/dev/null", "run"]);
    assert_one_line_error(&run, "`/dev/null` is not a KVM device");
}

#[test]
fn unknown_scenario_lists_the_available_ones() {
    let run = vmm(&["scenario", "helo"]);
    assert_one_line_error(&run, "unknown scenario `helo`; available: ");
    assert!(run.stderr.contains("hello"), "{}", run.stderr);
}

#[test]
fn malformed_scenario_toml_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        "name = \"broken\"\ndescription = \"x\"\n[expect\nending = \"exit\"\n",
    )
    .unwrap();
    let run = vmm(&["scenario", path.to_str().unwrap()]);
    assert_one_line_error(&run, &format!("{}:3:", path.display()));
}

#[test]
fn bad_timeout_is_a_usage_error() {
    let run = vmm(&["run", "--timeout", "soon"]);
    assert_eq!(run.status, 2);
    assert!(
        run.stderr.contains("`soon` is not a number of seconds"),
        "{}",
        run.stderr
    );
}

#[test]
fn scenario_list_shows_descriptions() {
    let run = vmm(&["scenario", "--list"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run.stdout.contains("hello"), "{}", run.stdout);
    assert!(run.stdout.contains("boots through PVH"), "{}", run.stdout);
    assert!(repo_root().join("scenarios/hello.toml").is_file());
}

#[test]
fn a_report_file_that_cannot_be_created() {
    let run = vmm(&[
        "run",
        "--report",
        "/nonexistent-dir/report.jsonl",
        "--cmdline",
        "test=hello",
    ]);
    assert_one_line_error(
        &run,
        "cannot create the report file `/nonexistent-dir/report.jsonl`: No such file or directory (os error 2); check that its directory exists",
    );
}

#[test]
fn an_unknown_audit_mode_is_a_usage_error() {
    let run = vmm(&["run", "--audit", "sometimes"]);
    assert_one_line_error(&run, "invalid value 'sometimes' for '--audit <MODE>'");
}

/// A usage error names what is missing or wrong, on its one line.
#[test]
fn usage_errors_name_the_arguments_they_are_about() {
    for (args, expected) in [
        (
            &["scenario"][..],
            "error: the following required arguments were not provided: <NAME|PATH> (see --help)",
        ),
        (
            &["report", "x.jsonl"][..],
            "error: the following required arguments were not provided: --output <FILE.html> (see --help)",
        ),
        (
            &["run", "--gdb-wait"][..],
            "error: the following required arguments were not provided: --gdb <[ADDR:]PORT> (see --help)",
        ),
        (
            &["scenario", "--list", "--all"][..],
            "error: the argument '--list' cannot be used with '--all' (see --help)",
        ),
        (
            &["run", "--bogus"][..],
            "error: unexpected argument '--bogus' found (see --help)",
        ),
    ] {
        let run = vmm(args);
        assert_one_line_error(&run, "");
        assert_eq!(run.stderr.trim_end(), expected, "vmm-host {args:?}");
    }
}

#[test]
fn an_unwritable_serial_log() {
    // Checked after /dev/kvm opens.
    if common::kvm_or_skip("unwritable_serial_log").is_none() {
        return;
    }
    let run = vmm(&["run", "--serial-log", "/nonexistent/dir/serial.log"]);
    assert_one_line_error(
        &run,
        "cannot create the serial log `/nonexistent/dir/serial.log`: ",
    );
}

#[test]
fn gdb_addresses_that_are_not_addresses_and_gdb_without_the_tap() {
    let run = vmm(&["run", "--gdb", "localhost:x"]);
    assert_one_line_error(
        &run,
        "invalid value 'localhost:x' for '--gdb <[ADDR:]PORT>': `localhost:x` is not [ADDR:]PORT",
    );
    let run = vmm(&["run", "--gdb", "0", "--no-tap"]);
    assert_one_line_error(
        &run,
        "--gdb needs the tap for breakpoints and exception stops: drop --no-tap",
    );
}

#[test]
fn a_gdb_port_in_use() {
    if common::kvm_or_skip("gdb_port_in_use").is_none() {
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let run = vmm(&["run", "--gdb", &port]);
    assert_one_line_error(
        &run,
        &format!("cannot listen for gdb on 127.0.0.1:{port}: "),
    );
    assert!(
        run.stderr.contains("(is another debugger using the port?)"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_overlong_command_line() {
    if common::kvm_or_skip("overlong_command_line").is_none() {
        return;
    }
    let long = "x".repeat(5000);
    let run = vmm(&["run", "--cmdline", &long]);
    assert_one_line_error(&run, "the kernel command line is 5000 bytes; at most ");
}

#[test]
fn an_unwritable_junit_file_after_the_suite() {
    if common::kvm_or_skip("unwritable_junit").is_none() {
        return;
    }
    let run = vmm(&[
        "scenario",
        "--all",
        "--filter",
        "hello",
        "--junit",
        "/nonexistent/dir/j.xml",
    ]);
    let last = run.stderr.lines().last().unwrap_or_default();
    assert_eq!(run.status, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        last.starts_with("error: cannot write /nonexistent/dir/j.xml: "),
        "{}",
        run.stderr
    );
}

/// `vmm-host … | head` closes stdout early: the host goes on quietly, it does not panic.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let mut child = common::vmm_host()
        .args(["scenario", "--list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn a_bzimage_the_host_cannot_boot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zImage");
    let mut image = vec![0u8; 1024];
    image[0x1f1] = 1;
    image[0x201] = 0x6a;
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&0x0204u16.to_le_bytes());
    image.extend_from_slice(b"kernel");
    std::fs::write(&path, &image).unwrap();
    let run = vmm(&["run", "--kernel", path.to_str().unwrap()]);
    assert_one_line_error(&run, "is not a bzImage the host can boot: it is a zImage");
    // Neither a bzImage nor an ELF (which --boot linux takes as a vmlinux).
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a kernel\n".repeat(100)).unwrap();
    let not_linux = vmm(&["run", "--boot", "linux", "--kernel", text.to_str().unwrap()]);
    assert_one_line_error(&not_linux, "no Linux setup header (\"HdrS\" at 0x202)");
    let symbols = vmm(&["run", "--symbols", path.to_str().unwrap()]);
    assert_one_line_error(&symbols, "cannot read symbols from");
    let initrd = vmm(&[
        "run",
        "--boot",
        "linux",
        "--initrd",
        "/nonexistent/initrd.img",
    ]);
    assert_one_line_error(&initrd, "--initrd: cannot read `/nonexistent/initrd.img`");
    let multiboot = vmm(&["run", "--boot", "multiboot", "--initrd", "/etc/hostname"]);
    assert_one_line_error(
        &multiboot,
        "Multiboot has no initrd: pass the file as --module",
    );
}

#[test]
fn a_disk_image_the_host_cannot_boot() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_string()
    };
    let mut signed = vec![0u8; 1000];
    signed[510..512].copy_from_slice(&[0x55, 0xaa]);
    let ragged = file("ragged.img", &signed);
    assert_one_line_error(
        &vmm(&["run", "--kernel", &ragged]),
        "its size, 1000 bytes, is not a multiple of the 512-byte sector",
    );
    let unsigned = file("unsigned.img", &[0u8; 1024]);
    assert_one_line_error(
        &vmm(&["run", "--disk", &unsigned]),
        "its first sector ends in 00 00, not the boot signature 55 aa",
    );
    let empty = file("empty.img", &[]);
    assert_one_line_error(&vmm(&["run", "--disk", &empty]), "it is empty");
    let good = file("good.img", &signed[..512]);
    assert_one_line_error(
        &vmm(&["run", "--disk", &good, "--cmdline", "test=null"]),
        "a disk image's boot loader passes the kernel its own command line, modules and initrd: drop --cmdline",
    );
    let both = vmm(&["run", "--disk", &good, "--kernel", &good]);
    assert_eq!(
        both.status, 2,
        "--disk and --kernel conflict: {}",
        both.stderr
    );
}
