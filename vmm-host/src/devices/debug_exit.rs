//! The debug-exit port: the guest writes its exit code here to end the run (QEMU's
//! `isa-debug-exit` at the same port, so one kernel ends runs under both).

/// The port the guest writes its exit code to.
pub const PORT: u16 = abi::ports::DEBUG_EXIT;

/// What one write to the port means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitRequest {
    /// The guest's exit code: the low byte of the value written.
    pub code: u8,
    /// Said about a value wider than a byte, whose upper bytes are ignored.
    pub ignored: Option<String>,
}

/// A write of `access` (1, 2 or 4 bytes, little-endian) to the port.
pub fn write(access: &[u8]) -> ExitRequest {
    let value = super::little_endian(access);
    let code = access.first().copied().unwrap_or(0);
    let ignored = (value > 0xff).then(|| {
        format!(
            "out {value:#x} to the debug-exit port {PORT:#x}: only its low byte, {code}, is the exit code"
        )
    });
    ExitRequest { code, ignored }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_low_byte_is_the_code_and_wider_values_are_named() {
        assert_eq!(
            write(&[3]),
            ExitRequest {
                code: 3,
                ignored: None
            }
        );
        let wide = write(&[0x21, 0x01, 0, 0]);
        assert_eq!(wide.code, 0x21);
        assert_eq!(
            wide.ignored.as_deref(),
            Some("out 0x121 to the debug-exit port 0xf4: only its low byte, 33, is the exit code")
        );
    }
}
