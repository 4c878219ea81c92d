//! QEMU TCG, the oracle: how the tests start it, and its `-d int` log, the record of every
//! delivery.

use std::process::Command;

/// `qemu-system-x86_64` under TCG with `mem` of RAM, no display, network or reboot, at most two
/// minutes; callers add the console, the monitor and what to boot.
pub fn qemu_tcg(mem: &str) -> Command {
    let mut command = Command::new("timeout");
    command
        .args([
            "120",
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-display",
            "none",
        ])
        .args(["-no-reboot", "-net", "none", "-m", mem]);
    command
}

/// One exception as QEMU's `-d int` log shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logged {
    pub vector: u8,
    pub error: u64,
    pub cr2: u64,
    pub rip: u64,
    /// Whether its handler was reached: false when delivering it raised another exception
    /// (the log's next `check_exception old: 0xVECTOR …`).
    pub delivered: bool,
}

/// The exceptions of a `-d int` log: lines like
/// `   12: v=0e e=0002 i=0 cpl=0 IP=0008:… pc=… SP=0010:… CR2=ffff800000080aa0`.
pub fn exceptions_in(log: &str) -> Vec<Logged> {
    let field = |line: &str, key: &str| -> Option<u64> {
        let value = line.split_whitespace().find_map(|w| w.strip_prefix(key))?;
        u64::from_str_radix(value, 16).ok()
    };
    let mut logged: Vec<Logged> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.strip_prefix("check_exception old: 0x") {
            // An exception raised while the last one was being delivered.
            let old = rest.split_whitespace().next().unwrap_or("");
            let old = u64::from_str_radix(old, 16).ok();
            if let Some(last) = logged.last_mut()
                && old == Some(u64::from(last.vector))
            {
                last.delivered = false;
            }
            continue;
        }
        if !line.contains(": v=") {
            continue;
        }
        let parsed = (|| {
            Some(Logged {
                vector: u8::try_from(field(line, "v=")?).ok()?,
                error: field(line, "e=")?,
                cr2: field(line, "CR2=").unwrap_or(0),
                rip: field(line, "pc=")?,
                delivered: true,
            })
        })();
        logged.extend(parsed);
    }
    logged
}
