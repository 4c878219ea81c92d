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
