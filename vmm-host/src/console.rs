//! Where the guest's serial console goes (the UART itself is `devices::com1`): to the terminal,
//! optionally to a log file, and into a capture that scenarios check. All three stop at the
//! serial limit (`--serial-limit`): a guest that floods its console cannot fill the host's
//! memory, disk or terminal. Past the limit, bytes are counted and the outputs get a note.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Serial output kept when neither `--serial-limit` nor the scenario says otherwise.
pub const DEFAULT_LIMIT: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot create the serial log `{path}`: {error}: choose a writable path for --serial-log", path = .0.display(), error = .1)]
    CreateLog(PathBuf, io::Error),
}

/// Where the UART's transmitted bytes go.
#[derive(Debug)]
pub struct ConsoleSink {
    echo: bool,
    log: Option<BufWriter<File>>,
    log_failed: bool,
    captured: Vec<u8>,
    limit: u64,
    dropped: u64,
}

impl ConsoleSink {
    /// A sink that keeps at most `limit` bytes (carriage returns aside) in each output.
    pub fn new(echo: bool, log: Option<&Path>, limit: u64) -> Result<Self, ConsoleError> {
        let log = log
            .map(|p| {
                File::create(p)
                    .map(BufWriter::new)
                    .map_err(|e| ConsoleError::CreateLog(p.into(), e))
            })
            .transpose()?;
        Ok(Self {
            echo,
            log,
            log_failed: false,
            captured: Vec::new(),
            limit,
            dropped: 0,
        })
    }

    /// Everything captured so far (up to the limit).
    pub fn captured(&self) -> &[u8] {
        &self.captured
    }

    /// Bytes the guest sent after the limit was reached: counted, not kept anywhere.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// True when writing the log file failed at some point (the run carries on without it).
    pub fn log_failed(&self) -> bool {
        self.log_failed
    }
}

impl Write for ConsoleSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Guests end lines with "\r\n" for real terminals; the host's outputs are files and
        // pipes, where the carriage return is noise. The UART hands over one byte per VM exit,
        // so this path stays free of allocations.
        for piece in buf.split(|&b| b == b'\r').filter(|p| !p.is_empty()) {
            self.emit(piece);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.echo {
            let _ = io::stdout().flush();
        }
        if let Some(log) = &mut self.log
            && log.flush().is_err()
        {
            self.log_failed = true;
        }
        Ok(())
    }
}

impl ConsoleSink {
    fn emit(&mut self, text: &[u8]) {
        if self.dropped > 0 {
            self.dropped += text.len() as u64;
            return;
        }
        let room = self.limit.saturating_sub(self.captured.len() as u64);
        let kept = text.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        self.output(&text[..kept]);
        self.captured.extend_from_slice(&text[..kept]);
        if kept < text.len() {
            self.dropped = (text.len() - kept) as u64;
            let note = format!(
                "\n[vmm-host] the guest's serial output reached the {} limit (--serial-limit); the rest is counted, not kept\n",
                crate::layout::human(self.limit)
            );
            self.output(note.as_bytes());
        }
    }

    fn output(&mut self, text: &[u8]) {
        if self.echo {
            // A closed stdout must not stop the guest: the capture and log still matter.
            let _ = crate::live::output(text);
        }
        if let Some(log) = &mut self.log
            && log.write_all(text).is_err()
        {
            self.log_failed = true;
            self.log = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_without_carriage_returns_and_logs() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        let mut sink = ConsoleSink::new(false, Some(&log), DEFAULT_LIMIT).unwrap();
        for b in b"hi\r\nthere\r\n" {
            sink.write_all(std::slice::from_ref(b)).unwrap();
        }
        sink.flush().unwrap();
        assert_eq!(sink.captured(), b"hi\nthere\n");
        assert_eq!(std::fs::read(&log).unwrap(), b"hi\nthere\n");
    }

    #[test]
    fn capture_and_log_stop_at_the_limit_with_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        let mut sink = ConsoleSink::new(false, Some(&log), 10 << 10).unwrap();
        let chunk = vec![b'x'; 4 << 10];
        for _ in 0..3 {
            sink.write_all(&chunk).unwrap();
        }
        sink.write_all(b"\r\nlate\r\n").unwrap();
        sink.flush().unwrap();
        assert_eq!(sink.captured(), vec![b'x'; 10 << 10]);
        assert_eq!(sink.dropped(), (2 << 10) + 6);
        let logged = std::fs::read_to_string(&log).unwrap();
        let (kept, note) = logged.split_at(10 << 10);
        assert_eq!(kept, "x".repeat(10 << 10));
        assert_eq!(
            note,
            "\n[vmm-host] the guest's serial output reached the 10 KiB limit (--serial-limit); the rest is counted, not kept\n"
        );
    }

    #[test]
    fn a_zero_limit_keeps_nothing() {
        let mut sink = ConsoleSink::new(false, None, 0).unwrap();
        sink.write_all(b"hello\r\n").unwrap();
        assert!(sink.captured().is_empty());
        assert_eq!(sink.dropped(), 6);
    }

    #[test]
    fn unwritable_log_is_a_clear_error() {
        let err = ConsoleSink::new(
            false,
            Some(Path::new("/nonexistent-dir/serial.log")),
            DEFAULT_LIMIT,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot create the serial log `/nonexistent-dir/serial.log`")
        );
    }
}
