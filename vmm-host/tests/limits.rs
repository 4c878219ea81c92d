//! What the host keeps of a guest that floods it: the serial limit bounds the capture, the
//! log and the terminal alike, and the report counts every byte it did not keep.

mod common;
use common::{kvm_or_skip, vmm};

const FLOOD_LINE: &str = "flood 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTU\n";
const NOTE: &str = "[vmm-host] the guest's serial output reached the 8 KiB limit (--serial-limit); the rest is counted, not kept\n";

fn decimal_before(text: &str, suffix: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.contains(suffix))
        .unwrap_or_else(|| panic!("no {suffix:?} in:\n{text}"));
    let before = line.split(suffix).next().unwrap_or_default();
    let digits: String = before
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().expect(suffix)
}

fn flood(limit: &str, log: &std::path::Path) -> common::Run {
    let log = log.to_str().unwrap();
    let run = vmm(&[
        "run",
        "--cmdline",
        "test=serial-flood",
        "--serial-limit",
        limit,
        "--serial-log",
        log,
        "--timeout",
        "60",
    ]);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    run
}

#[test]
fn a_serial_flood_is_cut_at_the_limit_and_every_byte_past_it_counted() {
    if kvm_or_skip("serial flood").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.log");
    flood("1G", &whole);
    let whole = std::fs::read_to_string(&whole).unwrap();
    // 32 KiB by `out`, then 128 KiB by `rep outsb`: every byte of both arrives.
    assert_eq!(whole.matches(FLOOD_LINE).count(), (32 + 128) * 1024 / 64);
    assert!(
        whole.contains("\n[hostile] flood done\n"),
        "the line after the flood arrives"
    );

    let cut = dir.path().join("cut.log");
    let run = flood("8K", &cut);
    let cut = std::fs::read_to_string(&cut).unwrap();
    assert_eq!(cut.len(), 8192 + 1 + NOTE.len());
    assert_eq!(&cut[..8192], &whole[..8192]);
    assert!(cut.ends_with(&format!("\n{NOTE}")), "{:?}", &cut[8000..]);
    // The terminal got the same 8 KiB and the same note; the report counts the rest.
    assert!(run.stdout.starts_with(&cut), "stdout differs from the log");
    let dropped = decimal_before(&run.stdout, " bytes of serial output past the 8 KiB limit");
    assert_eq!(dropped, whole.len() as u64 - 8192);
}

#[test]
fn a_bad_serial_limit_is_refused_in_one_line() {
    let run = vmm(&["run", "--serial-limit", "lots"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--serial-limit"), "{}", run.stderr);
    assert!(run.stderr.contains("lots"), "{}", run.stderr);
}
