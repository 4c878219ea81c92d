//! Boot sectors nobody would ship, on the host's BIOS: each is a few hand-assembled real-mode
//! instructions at 0x7C00 that make one call and write the answer to the debug-exit port
//! (0xf4), so the exit status is what the BIOS returned.

mod common;
use common::{kvm_or_skip, vmm};

/// `out 0xf4, al; hlt`: the run ends with AL as its status.
const EXIT_WITH_AL: [u8; 3] = [0xe6, 0xf4, 0xf4];
/// `mov al, ah`
const AL_FROM_AH: [u8; 2] = [0x88, 0xe0];

/// A disk image of `sectors` sectors whose boot sector is `code` at 0x7C00 and `data` at
/// 0x7C40.
fn image(code: &[u8], data: &[u8], sectors: usize) -> tempfile::NamedTempFile {
    let mut disk = vec![0u8; 512 * sectors];
    disk[..code.len()].copy_from_slice(code);
    disk[0x40..0x40 + data.len()].copy_from_slice(data);
    disk[510..512].copy_from_slice(&[0x55, 0xaa]);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), disk).unwrap();
    file
}

/// The report has `line` (or this part of one).
fn assert_says(run: &common::Run, line: &str) {
    assert!(run.stdout.contains(line), "no {line:?} in:\n{}", run.stdout);
}

fn boot(image: &tempfile::NamedTempFile, extra: &[&str]) -> common::Run {
    let mut args = vec!["run", "--quiet", "--disk", image.path().to_str().unwrap()];
    args.extend_from_slice(extra);
    vmm(&args)
}

#[test]
fn a_read_past_the_image_fails_with_carry_and_status_4() {
    if kvm_or_skip("a_read_past_the_image_fails_with_carry_and_status_4").is_none() {
        return;
    }
    // mov ah, 42h; mov dl, 80h; mov si, 7C40h; int 13h; jnc ok; mov al, ah; out; ok: mov al, 0EEh; out
    let mut code = vec![0xb4, 0x42, 0xb2, 0x80, 0xbe, 0x40, 0x7c, 0xcd, 0x13];
    code.extend([0x73, 0x05]);
    code.extend(AL_FROM_AH);
    code.extend(EXIT_WITH_AL);
    code.extend([0xb0, 0xee]);
    code.extend(EXIT_WITH_AL);
    // The packet: one sector of LBA 5 to 0000:8000 — the image has one sector.
    let packet = [16, 0, 1, 0, 0, 0x80, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0];
    let run = boot(&image(&code, &packet, 1), &[]);
    assert_eq!(run.status, 4, "AH=04h, sector not found: {}", run.stdout);
    assert_says(&run, "  BIOS   1 calls served: int 13h ×1 (AH 42h ×1)");
}

#[test]
fn a_blocking_keyboard_read_ends_the_run_naming_its_caller() {
    if kvm_or_skip("a_blocking_keyboard_read_ends_the_run_naming_its_caller").is_none() {
        return;
    }
    // mov ah, 0; int 16h
    let run = boot(&image(&[0xb4, 0x00, 0xcd, 0x16], &[], 1), &[]);
    assert_eq!(run.status, 89, "{}", run.stdout);
    assert_says(
        &run,
        "== run ended: the guest waits for a key (int 16h, called from 0000:7c04), and vmm-host has no keyboard",
    );
}

#[test]
fn an_unsupported_call_returns_carry_and_is_noted() {
    if kvm_or_skip("an_unsupported_call_returns_carry_and_is_noted").is_none() {
        return;
    }
    // mov ah, 0C0h; int 15h; mov al, ah; out
    let mut code = vec![0xb4, 0xc0, 0xcd, 0x15];
    code.extend(AL_FROM_AH);
    code.extend(EXIT_WITH_AL);
    let run = boot(&image(&code, &[], 1), &[]);
    assert_eq!(run.status, 0x86, "function not supported: {}", run.stdout);
    assert_says(
        &run,
        "  note   1 BIOS calls are not supported here (first: int 15h AH=c0h AL=00h); each returned CF set",
    );
}

#[test]
fn the_timer_ticks_in_real_mode() {
    if kvm_or_skip("the_timer_ticks_in_real_mode").is_none() {
        return;
    }
    // mov bx, [046Ch]; spin: cmp [046Ch], bx; je spin; mov al, 2Ah; out
    let mut code = vec![0x8b, 0x1e, 0x6c, 0x04, 0x39, 0x1e, 0x6c, 0x04, 0x74, 0xfa];
    code.extend([0xb0, 0x2a]);
    code.extend(EXIT_WITH_AL);
    let run = boot(&image(&code, &[], 1), &["--timeout", "5"]);
    assert_eq!(
        run.status, 0x2a,
        "IRQ 0 advanced the tick count: {}",
        run.stdout
    );
    assert_says(&run, "  IRQs   1 injected: vector 0x08 ×1");
}

#[test]
fn a_real_mode_exception_with_no_handler_ends_the_run_where_it_was_raised() {
    if kvm_or_skip("a_real_mode_exception_with_no_handler").is_none() {
        return;
    }
    // ud2 at 0000:7C00: #UD through the IVT to vector 6's BIOS stub. A PC BIOS would return to
    // the ud2 for ever; the host ends the run there, naming the instruction.
    let run = boot(&image(&[0x0f, 0x0b], &[], 1), &["--timeout", "5"]);
    assert_eq!(run.status, 90, "{}", run.stdout);
    assert_says(
        &run,
        "== run ended: #UD invalid opcode in real mode at 0000:7c00 (`ud2`): the guest's IVT sends it to the BIOS, which has no handler for it",
    );
    // xor cx, cx; div cx at 0000:7C02: #DE, the divisor named.
    let run = boot(
        &image(&[0x31, 0xc9, 0xf7, 0xf1], &[], 1),
        &["--timeout", "5"],
    );
    assert_eq!(run.status, 90, "{}", run.stdout);
    assert_says(
        &run,
        "#DE divide error in real mode at 0000:7c02 (`div cx`)",
    );
}

/// A boot sector that installs its own #UD handler (07C0:0020, so CS base and IP differ from
/// the faulting code's), says "A" through the BIOS (an exit: the tap re-reads the IVT there),
/// then runs `ud2` at 0000:7C11. The BIOS is not involved: the tap catches the exception at
/// the guest's handler, reading real mode's 16-bit frame; the handler pops the IP the CPU
/// pushed and exits with its low byte.
#[test]
fn a_real_mode_exception_the_guest_handles_is_caught_at_its_handler() {
    if kvm_or_skip("a_real_mode_exception_the_guest_handles").is_none() {
        return;
    }
    // mov word [0x18], 0x0020; mov word [0x1a], 0x07c0; mov ax, 0x0e41; int 0x10; ud2
    let mut code = vec![
        0xc7, 0x06, 0x18, 0x00, 0x20, 0x00, 0xc7, 0x06, 0x1a, 0x00, 0xc0, 0x07, 0xb8, 0x41, 0x0e,
        0xcd, 0x10, 0x0f, 0x0b,
    ];
    code.resize(0x20, 0x90);
    // At 07C0:0020: pop ax; out 0xf4, al
    code.extend([0x58, 0xe6, 0xf4]);
    let run = vmm(&[
        "run",
        "--color",
        "never",
        "--disk",
        image(&code, &[], 1).path().to_str().unwrap(),
        "--timeout",
        "5",
    ]);
    assert_eq!(
        run.status, 0x11,
        "the handler saw IP 0x7c11:\n{}",
        run.stdout
    );
    assert_says(&run, "== exceptions: 1 captured by hlt traps at 1 handlers");
    assert_says(
        &run,
        "[1] vector 6 (#UD invalid opcode) at rip 0x7c11 (CPL 0)",
    );
    assert_says(&run, "  instruction  ud2   (0f 0b)");
    assert!(
        !run.stdout.contains("in real mode at"),
        "not the BIOS's: {}",
        run.stdout
    );
}
